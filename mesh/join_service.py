"""Answering join requests: check the invite, count its uses, sign the admission, reply with what a
joiner needs to start.

The join protocol is the only one a stranger may speak. A request is admitted when the
token verifies, is for this mesh and unexpired, its inviter is a member (a revoked
member's invites die with it), and either this node issued it, or this node is the
acting hub and the inviter is away (`mesh.hub_role`). Uses are counted over every
admission in the store that carries the invite id, inside the dissemination actor, so
two concurrent joins can never both take the last use.

The reply carries the admission chain and the manifests (addresses) only; the rest comes
by anti-entropy in bounded deltas, so a reply stays small however much state the mesh
holds. The inviter adds a hub checkpoint: the hub record of the newest term it believes,
signed for the joiner, so the joiner starts its hub chain there instead of verifying
every term since term 1 (`protocols.election.checkpoint`, which also says why only the
inviter's is trusted). The acting hub, admitting for an inviter that is away, adds none.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from actors.actor import ActorError, ActorRef
from mesh.hub_role import HubAdmit, HubRefusal
from mesh.node_parts import DISSEMINATION, ELECTION, MEMBERSHIP, NodeError, NodeParts
from mesh.transport import TransportError
from protocols.common.identity import NodeId
from protocols.common.wire import WireError, decode, encode
from protocols.election.checkpoint import encode_checkpoint, make_checkpoint
from protocols.join.invite import Invite, InviteError, InviteProblem, check_invite, check_uses
from protocols.join.messages import JoinReply, JoinRequest
from protocols.membership.events import MemberState
from protocols.records.admission_records import ADMISSION, ADMISSION_KINDS, admission_body, make_admission
from protocols.records.manifest import MANIFEST
from protocols.records.record import Record

log = logging.getLogger("mesh.node")

JOIN_STARTER_KINDS = ADMISSION_KINDS | {MANIFEST}
"""What a join reply carries: the admission chain (so the joiner can check it is admitted
and verify everyone else) and manifests (addresses)."""


class JoinService:
    def __init__(
        self,
        parts: NodeParts,
        hub_admissions: Callable[[], ActorRef[HubAdmit, Record | HubRefusal] | None],
        acting_term: Callable[[], Awaitable[int | None]],
    ) -> None:
        self._parts = parts
        self._hub_admissions = hub_admissions
        self._acting_term = acting_term

    async def serve(self, peer: NodeId, payload: bytes) -> bytes:
        """The transport's handler for the join protocol: one request, one reply."""
        parts = self._parts
        try:
            request = decode(payload, JoinRequest)
            record = await self._admit(peer, request)
        except (WireError, InviteError, NodeError) as exc:
            log.info("join from %s refused: %s", peer.hex()[:12], exc)
            return encode(JoinReply(False, str(exc)))
        except ActorError as exc:
            log.warning("join from %s failed inside this node: %s", peer.hex()[:12], exc)
            return encode(JoinReply(False, f"the inviter could not admit you just now ({exc}); try again"))
        if request.addresses:
            try:
                await parts.transport.connect(peer, list(request.addresses))
            except TransportError as exc:
                log.info("cannot dial new member %s back: %s", peer.hex()[:12], exc)
        await parts.call_core(MEMBERSHIP, lambda core, now: core.add_member(now, peer))
        starter = [r for r in parts.store if r.kind in JOIN_STARTER_KINDS]
        checkpoint = await self._checkpoint_for(peer) if request.invite.body.inviter == parts.node_id else b""
        return encode(JoinReply(True, "", [*starter, record], checkpoint))

    async def _checkpoint_for(self, joiner: NodeId) -> bytes:
        """The hub record of the newest term this node believes, signed for `joiner` (empty before term 1)."""
        parts = self._parts

        def newest(core: Any, now: float) -> Record | None:
            latest = core.chain.latest
            return None if latest is None else latest.record

        record: Record | None = await parts.call_core(ELECTION, newest)
        if record is None:
            return b""
        return encode_checkpoint(make_checkpoint(parts.identity, parts.store.mesh_id, joiner, record))

    async def _admit(self, peer: NodeId, request: JoinRequest) -> Record:
        parts = self._parts
        invite = request.invite
        check_invite(invite, mesh=parts.store.mesh_id, now=time.time())
        refusal = parts.store.ledger.refusal_for(peer)
        if refusal is not None:  # an invite cannot bring back a revoked node
            raise NodeError(refusal)
        self._check_inviter_standing(invite)
        if parts.store.ledger.is_member(peer):
            existing = [r for r in parts.store.of_kind(ADMISSION) if admission_body(r).member == peer]
            if existing:
                return existing[0]
        if invite.body.inviter == parts.node_id:
            return await self.publish_admission(peer, invite)
        # Someone else's invite: only the acting hub's admissions duty may take it, and
        # only while the inviter is away (see protocols/join/invite.py on what "uses" means then).
        admissions = self._hub_admissions()
        if admissions is None or await self._acting_term() is None:
            raise NodeError(
                "this node did not issue that invite and is not the acting hub; join through its inviter"
            )
        outcome = await admissions.call(HubAdmit(peer, invite), timeout=parts.call_timeout)
        if isinstance(outcome, HubRefusal):
            raise NodeError(f"this node did not issue that invite; as the hub it refuses: {outcome.reason}")
        return outcome

    def _check_inviter_standing(self, invite: Invite) -> None:
        """An invite admits only while its inviter is a member: a revoked member's tokens die
        with it, whether the inviter itself or the hub is asked (the token's signature
        alone cannot say so: only the ledger knows)."""
        inviter = invite.body.inviter
        ledger = self._parts.store.ledger
        if ledger.is_member(inviter):
            return
        if inviter in ledger.revoked():
            raise InviteError(
                InviteProblem.INVITER_NOT_MEMBER,
                f"inviter revoked: {inviter.hex()[:16]} was thrown out of the mesh, so its invites "
                "no longer admit anyone; ask a current member for a new invite",
            )
        raise InviteError(
            InviteProblem.INVITER_NOT_MEMBER,
            f"this node does not know {inviter.hex()[:16]} as a member (its admission may not "
            "have reached this node yet, or its inviter was revoked); try again later or ask "
            "another member for an invite",
        )

    async def publish_admission(self, peer: NodeId, invite: Invite) -> Record:
        """Count the invite's uses and sign the admission in one step inside the dissemination actor."""
        parts = self._parts

        def admit(core: Any, now: float) -> Record:
            # Every admission carrying the invite id counts, whoever signed it: the
            # inviter's and the hub's admissions draw on the same `uses`.
            used = sum(
                1
                for r in core.store.of_kind(ADMISSION)
                if admission_body(r).invite_id == invite.body.invite_id
            )
            check_uses(invite, used)
            record = make_admission(
                parts.identity, core.store.mesh_id, parts.next_seq(), peer, invite.body.invite_id, time.time()
            )
            if not core.publish(now, record):
                raise NodeError("the admission record was refused by this node's own store")
            return record

        record: Record = await parts.call_core(DISSEMINATION, admit)
        return record

    async def hub_publish_admission(self, peer: NodeId, invite: Invite) -> Record | HubRefusal:
        """The hub role's admissions duty signs through here (`HubContext.admit`)."""
        try:
            return await self.publish_admission(peer, invite)
        except (NodeError, InviteError) as exc:
            return HubRefusal(str(exc))

    async def inviter_away(self, inviter: NodeId) -> bool:
        """Whether membership holds the inviter dead or left (or forgot it): the hub may admit."""

        def state(core: Any, now: float) -> MemberState | None:
            return core.state_of(inviter)  # type: ignore[no-any-return]

        seen = await self._parts.call_core(MEMBERSHIP, state)
        # None: membership forgot it (reclaim time after a death or leave) or never heard
        # of it; either way it is not here to admit anyone itself.
        return seen is None or seen in (MemberState.DEAD, MemberState.LEFT)
