"""How this node gets into the mesh and stays findable: joining with an invite, meeting the members
it last saw live after a restart, keeping that live view saved, publishing its manifest,
and leaving gracefully.

A joiner anchors its hub chain at the checkpoint its inviter put in the join reply (the
newest term the inviter believes, signed for this joiner; `protocols.election.checkpoint`
has the checks and why only the inviter's word counts), and keeps the checkpoint in its
database (`HUB_CHECKPOINT_META`): after a restart it anchors there again, so its chain
needs only the records since that term, whatever its store holds of older ones.

A restarted node contacts the members it last saw live and joins membership through a
few of them (as Serf keeps a snapshot), instead of probing every member ever admitted;
if none answers within `RESTART_ANSWER_WAIT_S`, it contacts every admitted member, as a
first start does (`mesh.live_view`).
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable
from typing import Any

import trio

from mesh.live_view import (
    LIVE_VIEW_META,
    LIVE_VIEW_SAVE_S,
    RESTART_ANSWER_WAIT_S,
    encode_live_view,
    restart_contacts,
)
from mesh.node_parts import ELECTION, MEMBERSHIP, NodeError, NodeParts
from mesh.transport import JOIN_PROTOCOL, PeerUnreachable, RequestTimeout, TransportError
from protocols.common.identity import NodeId
from protocols.common.wire import WireError, decode, encode
from protocols.election.checkpoint import CheckpointOutcome, decode_checkpoint
from protocols.join.invite import Invite, check_invite
from protocols.join.messages import JoinReply, JoinRequest
from protocols.membership.core import MembershipCore
from protocols.records.manifest import NodeManifest, make_manifest

log = logging.getLogger("mesh.node")

HUB_CHECKPOINT_META = "hub_checkpoint"
"""The database meta entry holding the checkpoint this node's hub chain is anchored at."""


class Joining:
    trust_checkpoint = True
    """Anchor the hub chain at the inviter's checkpoint. False ignores it and verifies the
    chain from term 1, as a joiner admitted by the hub does (the join benchmark's baseline)."""

    def __init__(
        self,
        parts: NodeParts,
        live_peers: Callable[[], list[NodeId]],
        software_version: str,
        started_at: float,
        leave_grace: float,
    ) -> None:
        self._parts = parts
        self._live_peers = live_peers
        self._software_version = software_version
        self._started_at = started_at
        self._leave_grace = leave_grace
        self.manifest_details: dict[str, Any] = {}

    # ---- joining with an invite ------------------------------------------------------------------

    async def join(self, invite: Invite) -> None:
        """Ask the inviter to admit this node; when it cannot be reached, the hub the invite names."""
        parts = self._parts
        check_invite(invite, mesh=parts.store.mesh_id, now=time.time())
        doors = [(invite.body.inviter, list(invite.body.addresses))]
        doors += [(hub.node, list(hub.addresses)) for hub in invite.hubs if hub.node != invite.body.inviter]
        started = time.monotonic()
        unreachable: list[str] = []
        for index, (door, addresses) in enumerate(doors):
            who = "the inviter" if index == 0 else "the hub"
            try:
                await parts.transport.connect(door, addresses)
                request = JoinRequest(invite, parts.public_addresses())
                reply = decode(await parts.transport.request(door, JOIN_PROTOCOL, encode(request)), JoinReply)
            except (PeerUnreachable, RequestTimeout) as exc:
                unreachable.append(f"{who} at {', '.join(addresses)}: {exc}")
                continue
            except (TransportError, WireError) as exc:
                unreachable.append(f"{who} could not answer the join request: {exc}")
                continue
            if not reply.admitted:
                raise NodeError(f"{who} refused: {reply.problem}")
            await self._take_join_reply(door, invite, reply, started)
            return
        if len(unreachable) == 1 and unreachable[0].startswith("the inviter at"):
            raise NodeError(f"cannot reach {unreachable[0]}")
        raise NodeError("cannot reach " + "; nor ".join(unreachable))

    async def _take_join_reply(
        self, admitter: NodeId, invite: Invite, reply: JoinReply, started: float
    ) -> None:
        parts = self._parts
        result = parts.store.merge(reply.records)
        await parts.persister.save(result)
        if not parts.store.ledger.is_member(parts.node_id):
            raise NodeError("the admitting node answered, but its records do not admit this node")
        log.info(
            "admitted by %s in %.0f ms (%d records)",
            admitter.hex()[:12],
            (time.monotonic() - started) * 1000,
            len(reply.records),
        )
        # Before membership starts: anti-entropy then finds a chain that needs only the
        # terms after the checkpoint.
        if (
            reply.checkpoint
            and self.trust_checkpoint
            and await self._anchor(reply.checkpoint, invite.body.inviter) is CheckpointOutcome.ADOPTED
        ):
            await parts.persister.set_meta(HUB_CHECKPOINT_META, reply.checkpoint)
        await parts.call_core(MEMBERSHIP, lambda core, now: core.join(now, [admitter]))

    async def restore_checkpoint(self) -> None:
        """After a restart, anchor the hub chain again at the checkpoint saved when this node joined."""
        parts = self._parts
        saved = await parts.persister.get_meta(HUB_CHECKPOINT_META)
        if saved is None:
            return
        try:
            signer = decode_checkpoint(saved).body.signer
        except WireError:
            signer = parts.node_id  # refused below as malformed, and counted
        await self._anchor(saved, signer)

    async def _anchor(self, data: bytes, trusted_signer: NodeId) -> CheckpointOutcome:
        """Check a checkpoint in the election's chain and, if it holds, believe its term there.

        The election core learns the term through `on_record`, the path every hub record
        takes, so it raises the fence, reports the hub and takes up its duties as for any
        new term.
        """
        parts = self._parts

        def adopt(core: Any, now: float) -> CheckpointOutcome:
            try:
                checkpoint = decode_checkpoint(data)
            except WireError:
                core.chain.counters[f"checkpoint_{CheckpointOutcome.MALFORMED}"] += 1
                return CheckpointOutcome.MALFORMED
            outcome: CheckpointOutcome = core.chain.adopt_checkpoint(
                checkpoint, trusted_signer=trusted_signer, subject=parts.node_id
            )
            if outcome is CheckpointOutcome.ADOPTED:
                core.on_record(now, checkpoint.body.hub_record)
            return outcome

        outcome: CheckpointOutcome = await parts.call_core(ELECTION, adopt)
        parts.counters[f"hub_checkpoint_{outcome}"] += 1
        if outcome.refused:
            log.warning("hub checkpoint from %s refused: %s", trusted_signer.hex()[:12], outcome.value)
        else:
            log.info("hub checkpoint from %s: %s", trusted_signer.hex()[:12], outcome.value)
        return outcome

    # ---- meeting the members after a start -----------------------------------------------------

    async def meet_known_members(self, restarting: bool) -> bool:
        """Tell membership whom to probe: every admitted member on a first start; after a
        restart only those live when this node last looked, and join through a few of them.

        True when that left some admitted members out (see `widen_if_unanswered`). A restart
        first anchors the hub chain at the saved checkpoint (`restore_checkpoint`).
        """
        parts = self._parts
        if restarting:
            await self.restore_checkpoint()
        everyone = [m for m in parts.store.ledger.members() if m != parts.node_id]
        members = everyone
        seeds: list[NodeId] = []
        if restarting:
            saved = await parts.persister.get_meta(LIVE_VIEW_META)
            members, seeds = restart_contacts(members, saved, random.Random())
            if saved is not None:
                log.info("restart: contacting %d members live at the last look", len(members))

        def add_all(core: MembershipCore, now: float) -> None:
            for member in members:
                core.add_member(now, member)
            if seeds:
                core.join(now, seeds)

        await parts.call_core(MEMBERSHIP, add_all)
        return len(members) < len(everyone)

    async def widen_if_unanswered(self) -> None:
        """A restart contacted only the members it last saw live: if none of them answered,
        contact every admitted member, as a first start does."""
        await trio.sleep(RESTART_ANSWER_WAIT_S)
        answered = await self._parts.call_core(MEMBERSHIP, lambda core, now: core.counters["received"] > 0)
        if answered:
            return
        log.info("restart: no member answered in %.0f s; contacting every member", RESTART_ANSWER_WAIT_S)
        await self.meet_known_members(restarting=False)

    async def keep_live_view(self) -> None:
        """Save the live set with the records (`mesh.live_view`) when it changed, at most every
        few seconds: a 1000-node mesh under churn changes it every second, and each save is
        an fsync. A crash loses at most the last few seconds of changes to a hint."""
        saved: bytes | None = None
        while True:
            await trio.sleep(LIVE_VIEW_SAVE_S)
            view = encode_live_view(self._live_peers())
            if view == saved:
                continue
            try:
                await self._parts.persister.set_meta(LIVE_VIEW_META, view)
            except trio.ClosedResourceError:
                return
            saved = view

    # ---- the manifest ----------------------------------------------------------------------------

    async def publish_manifest(self) -> None:
        """Publish this node's manifest: its addresses, software version and hardware details."""
        parts = self._parts
        if not parts.store.ledger.is_member(parts.node_id):
            return
        details = {"pid": os.getpid(), **self.manifest_details}
        manifest = NodeManifest(parts.public_addresses(), self._software_version, self._started_at, details)
        await parts.publish(lambda seq: make_manifest(parts.identity, parts.store.mesh_id, seq, manifest))

    async def publish_hardware_details(self, details: dict[str, Any]) -> None:
        """The hardware daemon's probe results go into the manifest."""
        self.manifest_details = details
        if self._parts.store.ledger.is_member(self._parts.node_id):
            await self.publish_manifest()

    # ---- leaving ----------------------------------------------------------------------------------

    async def leave(self) -> None:
        """Announce a graceful leave and give it a moment to spread."""
        with trio.move_on_after(self._leave_grace + 1):
            await self._parts.call_core(MEMBERSHIP, lambda core, now: core.leave(now))
            await trio.sleep(self._leave_grace)
