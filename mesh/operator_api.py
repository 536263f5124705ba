"""What an operator can ask of a running node (the control socket's commands): status, invites,
revocations, notes, record lookups, the volunteer controls and the storage shard's state.

Every answer is built from the store (shared, read-only here) and from the actors'
mailboxes (`NodeParts.call_core`), never from reading a core directly.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from actors.actor import ActorError
from mesh.node_parts import DISSEMINATION, ELECTION, HARDWARE, MEMBERSHIP, NodeError, NodeParts
from protocols.common.identity import NodeId
from protocols.election.core import HubView
from protocols.join.invite import HubContact, create_invite, encode_token
from protocols.membership.events import MemberState
from protocols.records.admission_records import make_hub_revocation, make_revocation
from protocols.records.record import MAX_KEY_CHARS, Record, sign_record

NOTE = "note"
"""Record kind of an operator's note: a small signed key/value any member may publish."""
MAX_NOTE_BYTES = 4096
ACCEPTANCE_LOG_SIZE = 4096
VOLUNTEER_STATUS_WAIT_S = 2.0
"""`status` waits this long for the hardware daemon, which is busy while it benchmarks the machine."""
"""How many recent (author, kind, key) acceptance times `lookup` remembers."""


class AcceptanceLog:
    """When recent records became durable here, and how they came (`local`, `push`, `sync`)."""

    def __init__(self, size: int = ACCEPTANCE_LOG_SIZE) -> None:
        self._size = size
        self._seen: OrderedDict[tuple[bytes, str, str], tuple[int, float, str]] = OrderedDict()

    def remember(self, record: Record, at: float, via: str) -> None:
        slot = record.slot
        self._seen[slot] = (record.seq, at, via)
        self._seen.move_to_end(slot)
        if len(self._seen) > self._size:
            self._seen.popitem(last=False)

    def get(self, record: Record) -> tuple[float, str] | None:
        seen = self._seen.get(record.slot)
        return None if seen is None or seen[0] != record.seq else (seen[1], seen[2])


class OperatorApi:
    def __init__(
        self,
        parts: NodeParts,
        acceptances: AcceptanceLog,
        data_dir: Path,
        quarantined: dict[str, int],
        storage_status: Callable[[], Awaitable[dict[str, Any]]] | None = None,
    ) -> None:
        self._parts = parts
        self._storage_status = storage_status
        self._acceptances = acceptances
        self._data_dir = data_dir
        self._quarantined = quarantined

    async def hardware(self, message: object) -> Any:
        """Ask the hardware daemon (status, pause, resume, stop_all, SetLimits, RunTask)."""
        return await self._parts.actor(HARDWARE).call(message, timeout=self._parts.call_timeout)

    async def _volunteer_status(self) -> dict[str, Any]:
        """The hardware daemon's status, or a note that it is busy (measuring the machine)."""
        try:
            status: dict[str, Any] = await self._parts.actor(HARDWARE).call(
                "status", timeout=VOLUNTEER_STATUS_WAIT_S
            )
        except ActorError as exc:
            return {
                "unavailable": f"the hardware daemon did not answer ({type(exc).__name__}); "
                "it may be measuring this machine"
            }
        return status

    async def hub(self) -> tuple[HubView | None, int | None, dict[str, int]]:
        """The hub this node believes in, the term it acts in itself (if any), election counters."""

        def read(core: Any, now: float) -> tuple[HubView | None, int | None, dict[str, int]]:
            return core.hub_view(), core.acting_term(now), dict(core.counters)

        view: tuple[HubView | None, int | None, dict[str, int]] = await self._parts.call_core(ELECTION, read)
        return view

    async def acting_term(self) -> int | None:
        """The term this node may act as hub in right now (its lease), or None."""
        return (await self.hub())[1]

    async def make_invite(self, ttl_s: float, uses: int) -> str:
        """A token naming this node and, as a second door while it is away, the current hub."""
        parts = self._parts
        ledger = parts.store.ledger
        if not ledger.is_member(parts.node_id):
            if parts.node_id in ledger.revoked():
                raise NodeError("this node was revoked from the mesh: its invites would admit no one")
            raise NodeError("this node is not (yet) a member of the mesh, so it cannot invite anyone")
        hubs: list[HubContact] = []
        view, _, _ = await self.hub()
        if view is not None and view.hub != parts.node_id:
            addresses = parts.addresses_of(view.hub)
            if addresses:
                hubs.append(HubContact(view.hub, addresses[:8]))
        invite = create_invite(
            parts.identity,
            parts.store.mesh_id,
            os.urandom(16),
            time.time() + ttl_s,
            uses,
            parts.public_addresses(),
            hubs,
        )
        return encode_token(invite)

    async def hub_status(self) -> dict[str, Any] | None:
        """The hub this node believes in, for `status` (None before the founder's first hub record)."""
        view, acting, counters = await self.hub()
        if view is None:
            return None
        now = trio.current_time()  # the election's clock
        lease = None if view.lease_expires is None else round(view.lease_expires - now, 3)
        return {
            "node_id": view.hub.hex(),
            "term": view.term,
            "council": [member.hex() for member in view.council],
            "lease_expires_in_s": lease,
            "acting_here": acting is not None,
            "counters": counters,
        }

    async def revoke(self, member: NodeId, reason: str = "") -> Record:
        """Revoke `member`: the founder's revocation counts for good; the acting hub's names the term
        whose lease it holds, and every node checks that term against its hub chain
        (`protocols.records.admission`). Anyone else is refused with one line saying who may.

        The member's last valid seq is the highest of its records this node holds: what it
        published before now still counts, nothing after.
        """
        parts = self._parts
        store = parts.store
        ledger = store.ledger
        founder = ledger.founder
        name = member.hex()[:16]
        if member == parts.node_id:
            raise NodeError("a node cannot revoke itself")
        if member == founder:
            raise NodeError("the mesh's founder cannot be revoked")
        if not ledger.is_member(member):
            problem = "was revoked already" if member in ledger.revoked() else "is not a member"
            raise NodeError(f"{name} {problem}")
        last = store.highest_seq(member)
        if founder == parts.node_id:
            return await parts.publish(
                lambda seq: make_revocation(parts.identity, store.mesh_id, seq, member, last, reason)
            )
        view, term, _ = await self.hub()
        if term is None:
            hub = (
                "no hub is known yet"
                if view is None
                else f"the hub is {view.hub.hex()[:16]} (term {view.term})"
            )
            raise NodeError(
                "only the mesh's founder or the acting hub (while it holds its lease) may revoke "
                f"members; this node is neither: {hub}"
            )
        if ledger.spares(member):
            raise NodeError(
                f"{name} has been hub since the last handover, so the hub cannot revoke it; the founder can"
            )
        record = await parts.publish(
            lambda seq: make_hub_revocation(parts.identity, store.mesh_id, seq, term, member, last, reason)
        )
        if ledger.is_member(member):
            # The lease ran out, or a newer term arrived, between the check and the signing.
            raise NodeError(
                f"the revocation of {name} (term {term}) was published but does not count here: "
                "this node is no longer the acting hub; try again on the acting hub"
            )
        return record

    async def publish_note(self, key: str, value: str) -> Record:
        """Publish (or replace) this node's note `key`: a small signed fact every member gets."""
        body = value.encode()
        if not key or len(key) > MAX_KEY_CHARS:
            raise NodeError(f"a note key is 1 to {MAX_KEY_CHARS} characters")
        if len(body) > MAX_NOTE_BYTES:
            raise NodeError(f"a note is at most {MAX_NOTE_BYTES} bytes")
        parts = self._parts
        mesh = parts.store.mesh_id
        return await parts.publish(lambda seq: sign_record(parts.identity, mesh, NOTE, key, seq, body))

    def lookup(self, author: NodeId, kind: str, key: str) -> dict[str, Any] | None:
        """The current record in a slot and, if it arrived recently, when it became durable here
        and how it came (`local`, `push` or `sync`, i.e. anti-entropy).

        `accepted_at` (wall clock) is what lets a benchmark on one machine measure how long
        a record took to reach every node without polling error.
        """
        record = self._parts.store.get(author, kind, key)
        if record is None:
            return None
        seen = self._acceptances.get(record)
        return {
            "seq": record.seq,
            "body_bytes": len(record.body),
            "accepted_at": None if seen is None else seen[0],
            "via": None if seen is None else seen[1],
        }

    async def status(self) -> dict[str, Any]:
        parts = self._parts
        infos: dict[NodeId, Any]
        membership_counters: dict[str, int]
        infos, membership_counters = await parts.call_core(
            MEMBERSHIP, lambda core, now: (core.members(), {**core.counters, "health": core.health})
        )
        rows = [
            {
                "node_id": parts.node_id.hex(),
                "state": MemberState.ALIVE.value,
                "addrs": parts.public_addresses(),
            }
        ]
        for node, info in infos.items():
            if node == parts.node_id:
                continue
            rows.append(
                {"node_id": node.hex(), "state": str(info.state.value), "addrs": parts.addresses_of(node)}
            )
        store = parts.store
        return {
            "node_id": parts.node_id.hex(),
            "mesh_id": store.mesh_id.hex(),
            "data_dir": str(self._data_dir),
            "founder": (store.ledger.founder or b"").hex(),
            "members": rows,
            "records": len(store),
            "clock": {author.hex(): seq for author, seq in store.clock().items()},
            "state_digest": store.state_digest().hex(),
            "hub": await self.hub_status(),
            "volunteer": await self._volunteer_status(),
            "storage": None if self._storage_status is None else await self._storage_status(),
            "listen": parts.public_addresses(),
            "counters": {
                "records": {k.value: v for k, v in store.counters.items()},
                "revocations": dict(store.ledger.verdicts),
                "refused_clock_claims": {k.value: v for k, v in store.claim_refusals.items()},
                "quarantined_at_load": self._quarantined,
                "membership": membership_counters,
                "transport": parts.transport.counters.snapshot(),
                "sender": dict(parts.sender.counters),
                "node": dict(parts.counters),
                "mailbox_dropped": {
                    name: parts.actor(name).dropped for name in (MEMBERSHIP, DISSEMINATION, ELECTION)
                },
            },
        }
