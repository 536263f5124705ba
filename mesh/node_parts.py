"""The running node's shared handles, and the few operations every part of the node uses on them.

`Node` builds one `NodeParts` when it starts and hands it to each service (routes, join
service, joining, hub role, operator API). A service reaches a protocol core only through
its actor's mailbox (`call_core`), never by reading the core, so every change to a core
is serialised with the messages that actor handles.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from actors.protocol_actor import Command
from actors.supervisor import Supervisor
from mesh.peer_sender import PeerSender
from mesh.record_persister import RecordPersister
from mesh.transport import Transport
from protocols.common.identity import NodeId, NodeIdentity
from protocols.common.wire import WireError
from protocols.join.invite import InviteError
from protocols.records.manifest import MANIFEST, manifest_body
from protocols.records.record import Record
from protocols.records.seq_allocator import SeqAllocator
from protocols.records.store import RecordStore

MEMBERSHIP = "membership"
DISSEMINATION = "dissemination"
ELECTION = "election"
HARDWARE = "hardware"
STORAGE = "storage"
"""The node supervisor's children (actor names)."""


class NodeError(Exception):
    """The node cannot do what was asked (join refused, not the founder, ...)."""


@dataclass(frozen=True)
class _Refusal:
    """An expected refusal raised inside an actor's command, carried out as a value."""

    error: NodeError | InviteError


@dataclass
class NodeParts:
    """What a running node is made of; built by `Node.run`, shared by its services."""

    identity: NodeIdentity
    store: RecordStore
    persister: RecordPersister
    transport: Transport
    sender: PeerSender
    supervisor: Supervisor
    seqs: SeqAllocator
    call_timeout: float
    counters: Counter[str] = field(default_factory=Counter)
    """Inbound input this node dropped (malformed, mailbox full) and role changes, for `status`."""

    @property
    def node_id(self) -> NodeId:
        return self.identity.node_id

    def actor(self, name: str) -> Any:
        """The stable ref of one of the node's actors (valid across its restarts)."""
        return self.supervisor.ref(name)

    def next_seq(self) -> int:
        """The next seq for a record this node signs: the one allocator everything shares."""
        return self.seqs()

    async def call_core(self, name: str, action: Callable[[Any, float], Any]) -> Any:
        """Run `action(core, now)` inside actor `name` and return its result.

        A `NodeError` or `InviteError` the action raises is a refusal, not a crash: it is
        carried out of the actor and raised here. Raised inside, it would crash and
        restart the actor, and a handful of bad join requests would exhaust the
        supervisor's restart intensity and take the whole node down.
        """

        def guarded(core: Any, now: float) -> Any:
            try:
                return action(core, now)
            except (NodeError, InviteError) as exc:
                return _Refusal(exc)

        result = await self.actor(name).call(Command(guarded), timeout=self.call_timeout)
        if isinstance(result, _Refusal):
            raise result.error
        return result

    async def publish(self, make: Callable[[int], Record]) -> Record:
        """Author a record (`make(seq) -> Record`), persist it, then gossip it; returns it."""

        def author(core: Any, now: float) -> Record:
            if not core.store.ledger.is_member(self.node_id):
                raise NodeError("this node is not a member of the mesh (never admitted, or revoked)")
            record = make(self.next_seq())
            if not core.publish(now, record):
                raise NodeError(f"this node's store refused its own {record.kind} record")
            return record

        record: Record = await self.call_core(DISSEMINATION, author)
        return record

    def addresses_of(self, node: NodeId) -> list[str]:
        """The addresses `node` last published in its manifest (empty if none is held)."""
        record = self.store.get(node, MANIFEST, "")
        if record is None:
            return []
        try:
            return list(manifest_body(record).addresses)
        except WireError:
            return []

    def public_addresses(self) -> list[str]:
        return self.transport.listen_addrs()[:8]
