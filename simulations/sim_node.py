"""One simulated node: identity, seeded RNG, record store and the real protocol cores, wired
by the same rules as the real node (`protocols.wiring`).

Channel 0 is membership (SWIM), channel 1 is dissemination (push + anti-entropy), channel 2
is the hub election; each channel decodes with the protocol's own decoder. The election
and dissemination share one seq allocator, as in `mesh.node`.

Channel 3 is storage: no messages travel on it (storage has no gossip of its own); its
core is the node's `StorageCore` while the node acts as hub and nothing otherwise (a
`StorageSlot`), so a thousand nodes that never act cost nothing. Who builds that core,
and what its events become, is the world's storage model (`StorageHost`,
`simulations/storage_model.py`); without one (no artifacts) the storage feeds are
ignored and a run is exactly what it was before storage existed.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, Protocol

from protocols.common.effects import Event
from protocols.common.identity import NodeId, NodeIdentity
from protocols.common.wire import WireError, encode
from protocols.dissemination.config import DisseminationConfig
from protocols.dissemination.core import DisseminationCore
from protocols.dissemination.messages import Push, decode_dissemination
from protocols.election.config import ElectionConfig
from protocols.election.core import ElectionCore
from protocols.election.messages import decode_election
from protocols.membership.config import MembershipConfig
from protocols.membership.core import MembershipCore
from protocols.membership.messages import decode_membership
from protocols.records.admission_records import make_handover
from protocols.records.record import Record
from protocols.records.seq_allocator import SeqAllocator
from protocols.records.store import RecordStore
from protocols.storage.core import StorageCore
from protocols.wiring import (
    CarryRevocations,
    ChainTerms,
    CoreWiring,
    ElectionLiveSet,
    Feed,
    IntroduceMember,
    MemberLiveness,
    PublishOwn,
    RecheckRevocations,
    RecordToElection,
    RecordToStorage,
    RemoveMember,
    SetPeers,
    StorageActing,
    StorageLiveness,
    WiringConfig,
)
from simulations.engine import Endpoint

MEMBERSHIP = 0
DISSEMINATION = 1
ELECTION = 2
STORAGE = 3
SIM_WALL_EPOCH = 1_700_000_000.0
"""The wall clock at virtual time 0 (`wall = SIM_WALL_EPOCH + now`): storage records carry wall
times (an artifact's `created_at`, its expiry), which must be positive and plausible."""

ElectionFactory = Callable[
    [NodeIdentity, RecordStore, random.Random, ElectionConfig, Callable[[], int]], ElectionCore
]
"""Builds a node's election core (tests plant faulty cores through it)."""
PEER_REFRESH_S = 5.0
"""Longest the dissemination peer list lags behind membership (`protocols.wiring`'s lazy refresh)."""


def push_payload(record: Record) -> bytes:
    """The bytes of an eager push carrying `record`, as a relay would send it."""
    return encode(Push([record]))


def _no_storage_messages(payload: bytes) -> Any:
    raise WireError("storage has no messages of its own")


class StorageSlot:
    """The storage channel's core as the engine sees it: the node's `StorageCore`, or nothing.

    Only the acting hub's core checks and audits, so only an acting hub gets one (the
    storage model builds it from the records at `BecameHub`); with none, the slot has no
    deadline and no output. The slot hands the core the wall clock before each tick.
    """

    __slots__ = ("core", "kick_pending")

    def __init__(self) -> None:
        self.core: StorageCore | None = None
        self.kick_pending = False
        """A flush of this channel is scheduled (`StorageHost.kick`), so another is not."""

    def receive(self, now: float, sender: NodeId, message: Any) -> None:
        """Storage has no messages: nothing ever arrives on its channel."""

    def tick(self, now: float) -> None:
        core = self.core
        if core is not None:
            core.set_wall_clock(SIM_WALL_EPOCH + now)
            core.tick(now)

    def drain(self) -> list[Any]:
        core = self.core
        return core.drain() if core is not None else []

    def next_deadline(self) -> float | None:
        core = self.core
        return core.next_deadline() if core is not None else None


class StorageHost(Protocol):
    """What a node's storage feeds and events need from the world (`simulations/storage_model.py`)."""

    def acting(self, node: SimNode, now: float, acting: bool, term: int) -> None:
        """`node` started (or stopped) acting as hub of `term`: give it a storage core (or take it)."""
        ...

    def kick(self, node: SimNode) -> None:
        """`node`'s storage core was fed: drain it and re-arm its timer soon (at this instant)."""
        ...

    def on_storage_event(self, node: SimNode, now: float, event: Event) -> None:
        """A `RepairDue`, `AuditDue`, `AuditFailed`, `ArtifactLost` or `FreeShares` of `node`'s core."""
        ...


class SimNode(Endpoint):
    """A node incarnation the engine drives. A restart builds a new `SimNode` on the same store.

    The rules connecting its cores are `protocols.wiring.CoreWiring`, the same the real
    node follows; this class only carries out the feeds they return, calling the cores
    directly and telling the engine which core to drain now.
    """

    __slots__ = (
        "dissemination",
        "election",
        "identity",
        "membership",
        "rng",
        "seqs",
        "storage",
        "storage_host",
        "store",
        "wiring",
    )

    def __init__(
        self,
        identity: NodeIdentity,
        index: int,
        rng: random.Random,
        store: RecordStore,
        membership_config: MembershipConfig,
        dissemination_config: DisseminationConfig,
        election_config: ElectionConfig,
        election_factory: ElectionFactory | None = None,
        storage_host: StorageHost | None = None,
    ) -> None:
        self.identity = identity
        self.rng = rng
        self.store = store
        self.seqs = SeqAllocator(store, identity.node_id)
        self.membership = MembershipCore(
            identity.node_id, random.Random(rng.getrandbits(64)), membership_config
        )
        self.dissemination = DisseminationCore(
            identity.node_id, store, random.Random(rng.getrandbits(64)), dissemination_config
        )
        factory = election_factory or ElectionCore
        self.election = factory(
            identity, store, random.Random(rng.getrandbits(64)), election_config, self.seqs
        )
        self.wiring = CoreWiring(
            identity.node_id,
            self.membership.live_peers,
            WiringConfig(peer_refresh_s=PEER_REFRESH_S),
            # a restarted node may sit on the council, from its persisted chain
            in_council=self._sits_on_council(),
            sits_on_council=self._sits_on_council,
            revoked=lambda: store.ledger.removed(),
        )
        # The ledger judges the hub's revocations by this node's chain (a restarted node's
        # store held them unjudged since its election core went away).
        store.use_hub_terms(ChainTerms(self.election.chain))
        self.storage = StorageSlot()
        self.storage_host = storage_host
        super().__init__(
            identity.node_id,
            index,
            [self.membership, self.dissemination, self.election, self.storage],
            [decode_membership, decode_dissemination, decode_election, _no_storage_messages],
        )

    def before_use(self, channel: int, now: float, ticking: bool) -> None:
        """Refresh the dissemination peer list when it is due (see `protocols.wiring`)."""
        if channel == DISSEMINATION and self.wiring.peers_dirty:
            self._apply(now, self.wiring.before_dissemination(now, ticking))

    def seed_peers(self, peers: list[NodeId]) -> None:
        """A joining node gossips with its seeds until membership has told it more; a restarted
        one bars the members its store says were revoked (after `membership.join`)."""
        self._apply(0.0, (*self.wiring.seed_peers(peers), *self.wiring.removals()))

    def know_members(self) -> None:
        """Initial mesh: hand the members `add_member` just told membership to the other cores."""
        self.wiring.forget_live_set()
        self._apply(0.0, self.wiring.refresh_peers(0.0))

    def on_event(self, now: float, channel: int, event: Event) -> int | None:
        """Carry out what `protocols.wiring` says `event` feeds; returns a core to drain now.

        The storage core's events feed no other core (the wiring has no rule for them):
        they are work for the node's storage service, which the storage model plays."""
        if channel == STORAGE:
            if self.storage_host is not None:
                self.storage_host.on_storage_event(self, now, event)
            return None
        feeds = self.wiring.on_event(now, event, now)
        return self._apply(now, feeds) if feeds else None

    def _apply(self, now: float, feeds: tuple[Feed, ...]) -> int | None:
        """Call the cores the feeds name; the last core that must be drained at once, if any.

        (The engine drains every channel an event returns; the wiring yields at most one
        urgent feed per event. The storage core is drained through `StorageHost.kick`
        instead, an engine action at the same instant: a hub's membership change feeds
        both its election, urgently, and its storage core.)
        """
        drain: int | None = None
        for feed in feeds:
            match feed:
                case RecordToElection(record=record, urgent=urgent):
                    self.election.on_record(now, record)
                    if urgent:
                        drain = ELECTION
                case IntroduceMember(member=member):
                    if self.membership.add_member(now, member):
                        drain = MEMBERSHIP
                case MemberLiveness(member=member, live=live, urgent=urgent):
                    self.election.member_changed(now, member, live)
                    if urgent:
                        drain = ELECTION
                case SetPeers(peers=peers, election=with_election):
                    self.dissemination.set_peers(peers)
                    if with_election:
                        self.election.set_live_members(now, peers)
                case ElectionLiveSet(peers=peers):
                    self.election.set_live_members(now, peers)
                    drain = ELECTION
                case PublishOwn(record=record):
                    self.dissemination.publish(now, record)
                    drain = DISSEMINATION
                case RemoveMember(member=member):
                    if self.membership.remove_member(now, member) and drain is None:
                        drain = MEMBERSHIP
                case RecheckRevocations():
                    self.store.recheck_revocations()
                    removing = self._apply(now, self.wiring.removals())
                    if removing is not None:
                        drain = removing
                case CarryRevocations(term=term):
                    carried = self.store.ledger.handover_due(term, self.identity.node_id)
                    if carried is not None:
                        record = make_handover(self.identity, self.store.mesh_id, self.seqs(), term, carried)
                        self._apply(now, self.wiring.before_publish(now))
                        self.dissemination.publish(now, record)
                        drain = DISSEMINATION
                case StorageLiveness(member=member, live=live):
                    core = self.storage.core
                    if core is not None and self.storage_host is not None:
                        core.member_changed(now, member, live)
                        self.storage_host.kick(self)
                case StorageActing(acting=acting, term=term):
                    if self.storage_host is not None:
                        self.storage_host.acting(self, now, acting, term)
                case RecordToStorage(record=record):
                    # Storage records never travel through the simulated dissemination (the
                    # storage model hands them to the acting hub's core), but one that did
                    # would reach the core here, as in a real node.
                    core = self.storage.core
                    if core is not None and self.storage_host is not None:
                        core.on_record(now, record)
                        self.storage_host.kick(self)
        return drain

    def _sits_on_council(self) -> bool:
        view = self.election.hub_view()
        own = self.identity.node_id
        return view is not None and (own in view.council or view.hub == own)

    def next_seq(self) -> int:
        """The seq for this node's next own record: the one allocator the election shares."""
        return self.seqs()

    def author(self, now: float, record: Record) -> bool:
        """Add a record this node authored to its own store and push it (the publish path)."""
        self._apply(now, self.wiring.before_publish(now))
        return self.dissemination.publish(now, record)
