"""How one core's events feed another inside a node: written once, driven by the real node and the
simulator alike.

A node runs three cores (membership, dissemination, election) that know nothing of each
other. These are the rules that connect them, and no other module holds a rule of its
own:

1. **A record accepted** (`RecordAccepted`) goes to the election (`on_record`): hub and
   lease records are what it acts on, so only those make it act at once (`urgent`). A
   recent admission (`introduces_member`) also introduces its member to membership, so
   everyone probes a newcomer even if its sponsor died; an older admission is history.
2. **A member changed** (`MemberChanged`): dissemination's peer list (alive and suspect
   members: suspects stay gossip partners) is refreshed, at once or lazily (below), and
   the election hears the change one member at a time (`member_changed`, O(1)) once it
   has had a full live set. Only council members and the hub act on it (they pick
   councils and notice a dead council member), so only theirs is urgent.
3. **A record the election signed** (`PublishRecord`) is published through
   dissemination, after the peer list is brought up to date.
4. **A hub changed** (`HubChanged`): a node that finds itself newly on the council and
   whose election never had a full live set gets one now; and the hub's revocations
   are judged again against the changed chain (`RecheckRevocations`).
5. **A revocation counts**: when a revocation, a handover or a changed chain cuts a
   member out of the ledger (`AdmissionLedger.removed`), membership drops it for good
   (`RemoveMember`); when membership reports it gone (`MemberRemoved`), dissemination's
   peers and the election's live set lose it, as for a death.
6. **This node became hub** (`BecameHub`): it carries the hub revocations that counted
   before its term over into a handover (`CarryRevocations`), so they outlive the hub
   that issued them (`protocols.records.admission` has the rules and why).
7. **Storage** follows records, liveness and the hub role: artifact, placement and
   storage records go to the storage core (`RecordToStorage`) and not to the election,
   which never acts on them, and manifests to both (storage spreads shares over
   machines by their addresses); every membership change reaches it (`StorageLiveness`: a
   death or leave is where repair starts); and the acting hub runs its checker and
   audits (`StorageActing`, on `BecameHub` and `SteppedDown`).

Who was hub of which term is the election's hub chain; the ledger (records layer, below
the election) reads it through `ChainTerms`, the `HubTerms` interface it defines,
attached by each driver when it builds its election core. The chain is read
synchronously and never written: it is the one piece of a core's state another reads,
as the chain itself reads the ledger.

The rules return *feeds*: typed instructions for one core (frozen dataclasses below). A
driver carries them out in order: the simulator calls the cores directly, the real node
sends each to the actor that owns the core. `urgent` says whether the target core must
be drained now; a driver may always drain sooner (the actors do, after every command).

The cost: the peer list is a copy of the live set, O(n). Under 5 %/min churn a
1000-node mesh changes its live set about once a second on every node, so a node may
refresh it lazily: at a dissemination tick at most every `peer_refresh_s`, at once while
it has no peers, and before it publishes. A stale entry costs at most a push or a sync
round sent to a node that just died, which the next round repairs. A small mesh (the
real node's default) refreshes at once (`peer_refresh_s = 0`).

`live_peers` is how the wiring reads the live set: the simulator passes membership's own
(`MembershipCore.live_peers`, a C-speed copy, no shadow table per node); the real node,
whose membership runs in another actor, passes the live set it keeps from `MemberChanged`
events. Likewise `sits_on_council`: the simulator reads the election core's current view
(when several hub changes drain at once, an event may be older than the core); without
it the rule reads the event's own council, all the real node learns of the view.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from protocols.common.effects import Event
from protocols.common.identity import NodeId
from protocols.common.wire import WireError
from protocols.dissemination.events import RecordAccepted
from protocols.election.events import BecameHub, HubChanged, PublishRecord, SteppedDown
from protocols.election.hub_chain import HubChain
from protocols.election.records import HUB, hub_body
from protocols.membership.events import LIVE_STATES, MemberChanged, MemberRemoved
from protocols.records.admission_records import (
    ADMISSION,
    ADMISSION_KINDS,
    admission_body,
    introduces_member,
)
from protocols.records.fencing import LEASE
from protocols.records.manifest import MANIFEST
from protocols.records.record import Record
from protocols.storage.records import ARTIFACT, PLACEMENT, STORAGE

ELECTION_KINDS = frozenset({HUB, LEASE})
"""Record kinds the election acts on; every other accepted record leaves it idle."""
STORAGE_KINDS = frozenset({ARTIFACT, PLACEMENT, STORAGE})
"""Record kinds the storage core acts on (and only it)."""


# ---- feeds: what a rule asks of one core ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Feed:
    """An instruction for one core, produced by a rule."""


@dataclass(frozen=True, slots=True)
class RecordToElection(Feed):
    """`ElectionCore.on_record(now, record)`; urgent for hub and lease records."""

    record: Record
    urgent: bool


@dataclass(frozen=True, slots=True)
class IntroduceMember(Feed):
    """`MembershipCore.add_member(now, member)`; drain membership if it was new."""

    member: NodeId


@dataclass(frozen=True, slots=True)
class MemberLiveness(Feed):
    """`ElectionCore.member_changed(now, member, live)`."""

    member: NodeId
    live: bool
    urgent: bool


@dataclass(frozen=True, slots=True)
class SetPeers(Feed):
    """`DisseminationCore.set_peers(peers)`; with `election`, also `set_live_members(now, peers)`."""

    peers: list[NodeId]
    election: bool


@dataclass(frozen=True, slots=True)
class ElectionLiveSet(Feed):
    """`ElectionCore.set_live_members(now, peers)`: the full live set, urgent."""

    peers: list[NodeId]


@dataclass(frozen=True, slots=True)
class PublishOwn(Feed):
    """`DisseminationCore.publish(now, record)`: a record this node signed, pushed at once."""

    record: Record


@dataclass(frozen=True, slots=True)
class RemoveMember(Feed):
    """`MembershipCore.remove_member(now, member)`: a revocation counts; drain membership.

    The real node also closes its connections to the member."""

    member: NodeId


@dataclass(frozen=True, slots=True)
class RecheckRevocations(Feed):
    """`RecordStore.recheck_revocations()` (the hub chain changed), then the feeds of
    `CoreWiring.removals()`. The real node persists what it purged."""


@dataclass(frozen=True, slots=True)
class CarryRevocations(Feed):
    """This node became hub of `term`: if `AdmissionLedger.handover_due(term, self)` says so,
    sign a handover (`make_handover`) and publish it through dissemination."""

    term: int


@dataclass(frozen=True, slots=True)
class RecordToStorage(Feed):
    """`StorageCore.on_record(now, record)`: an artifact, placement or storage record."""

    record: Record


@dataclass(frozen=True, slots=True)
class StorageLiveness(Feed):
    """`StorageCore.member_changed(now, member, live)`: a death or leave may start a repair."""

    member: NodeId
    live: bool


@dataclass(frozen=True, slots=True)
class StorageActing(Feed):
    """`StorageCore.set_acting(now, acting, term)`: only the acting hub checks and audits."""

    acting: bool
    term: int


NO_FEEDS: tuple[Feed, ...] = ()


class ChainTerms:
    """The `HubTerms` a ledger reads (`protocols.records.admission`), from an election's hub chain.

    `vouches` checks a hub record as the chain would: one it believes, or the proof of
    the term after its newest. Only records of members a hub revoked are asked about.
    """

    __slots__ = ("_chain",)

    def __init__(self, chain: HubChain) -> None:
        self._chain = chain

    @property
    def latest_term(self) -> int:
        latest = self._chain.latest
        return 0 if latest is None else latest.term

    def hub_of(self, term: int) -> NodeId | None:
        believed = self._chain.terms.get(term)
        return None if believed is None else believed.hub

    def vouches(self, record: Record) -> bool:
        if record.kind != HUB:
            return False
        try:
            body = hub_body(record)
        except WireError:
            return False
        chain = self._chain
        believed = chain.terms.get(body.term)
        if believed is not None:
            return believed.value == body.value
        latest = chain.latest
        return latest is not None and body.term == latest.term + 1 and chain.check(record, body)


@dataclass(frozen=True)
class WiringConfig:
    peer_refresh_s: float = 0.0
    """Longest the dissemination peer list may lag behind membership; 0 refreshes at once."""


class CoreWiring:
    """The rules above for one node; holds only what the lazy refresh and council tracking need."""

    __slots__ = (
        "_live_peers",
        "_removed",
        "_revoked",
        "_sits_on_council",
        "config",
        "election_has_live_set",
        "in_council",
        "peer_count",
        "peers_dirty",
        "peers_refreshed_at",
        "self_id",
    )

    def __init__(
        self,
        self_id: NodeId,
        live_peers: Callable[[], list[NodeId]],
        config: WiringConfig | None = None,
        *,
        election_has_live_set: bool = False,
        in_council: bool = False,
        sits_on_council: Callable[[], bool] | None = None,
        revoked: Callable[[], Iterable[NodeId]] | None = None,
    ) -> None:
        self.self_id = self_id
        self._live_peers = live_peers
        self._sits_on_council = sits_on_council
        self._revoked = revoked
        """Who a counting revocation names (`AdmissionLedger.removed`); None: no removals."""
        self._removed: set[NodeId] = set()
        self.config = config or WiringConfig()
        self.peers_dirty = True
        self.peer_count = 0
        self.peers_refreshed_at = -self.config.peer_refresh_s
        self.election_has_live_set = election_has_live_set
        """False until the election core got its first full live set; then it follows changes."""
        self.in_council = in_council

    # ---- events in, feeds out ----------------------------------------------------------------

    def on_event(self, now: float, event: Event, wall_now: float) -> tuple[Feed, ...]:
        """The feeds `event` (from any of the node's cores) calls for.

        `now` is the cores' clock; `wall_now` the wall clock an admission's age is read on
        (the same virtual clock in the simulator).
        """
        match event:
            case RecordAccepted(record=record):
                return self._on_record_accepted(record, wall_now)
            case MemberChanged():
                return self._on_member_changed(now, event)
            case PublishRecord(record=record):
                return (*self.before_publish(now), PublishOwn(record))
            case HubChanged():
                return (*self._on_hub_changed(event), RecheckRevocations())
            case MemberRemoved(node=node):
                return (*self._on_member_removed(now, node), StorageLiveness(node, False))
            case BecameHub(term=term):
                return (CarryRevocations(term), StorageActing(True, term))
            case SteppedDown():
                return (StorageActing(False, 0),)
        return NO_FEEDS

    def removals(self) -> tuple[Feed, ...]:
        """`RemoveMember` for each member a counting revocation names that membership still has
        (each once). Drivers call it after a recheck and when a node starts."""
        if self._revoked is None:
            return NO_FEEDS
        fresh = [node for node in self._revoked() if node not in self._removed and node != self.self_id]
        self._removed.update(fresh)
        return tuple(RemoveMember(node) for node in fresh)

    def _on_record_accepted(self, record: Record, wall_now: float) -> tuple[Feed, ...]:
        if record.kind in STORAGE_KINDS:
            return (RecordToStorage(record),)
        if record.kind == MANIFEST:  # the election keeps addresses; storage, which machine a node is
            return (RecordToElection(record, False), RecordToStorage(record))
        to_election = RecordToElection(record, record.kind in ELECTION_KINDS)
        if record.kind in ADMISSION_KINDS and record.kind != ADMISSION:
            return (to_election, *self.removals())
        if record.kind != ADMISSION:
            return (to_election,)
        try:
            body = admission_body(record)
        except WireError:
            return (to_election,)
        member = body.member
        if introduces_member(body, wall_now) and member != self.self_id:
            return (to_election, IntroduceMember(member))
        return (to_election,)

    def _on_member_changed(self, now: float, event: MemberChanged) -> tuple[Feed, ...]:
        node = event.node
        if node == self.self_id:
            return NO_FEEDS
        storage = StorageLiveness(node, event.state in LIVE_STATES)
        # Membership's own live set is the one truth; an alive <-> suspect flap costs one
        # idempotent `member_changed` and at most an early peer refresh, no shadow set.
        self.peers_dirty = True
        feeds: tuple[Feed, ...] = NO_FEEDS
        if self.election_has_live_set:
            feeds = (MemberLiveness(node, event.state in LIVE_STATES, self.in_council),)
        if self.config.peer_refresh_s <= 0:
            feeds = (*feeds, *self.refresh_peers(now))
        return (*feeds, storage)

    def _on_member_removed(self, now: float, node: NodeId) -> tuple[Feed, ...]:
        """Membership dropped a revoked member: it leaves the peer list and the live set, as a death."""
        self._removed.add(node)
        if node == self.self_id:
            return NO_FEEDS
        self.peers_dirty = True
        feeds: tuple[Feed, ...] = NO_FEEDS
        if self.election_has_live_set:
            feeds = (MemberLiveness(node, False, self.in_council),)
        if self.config.peer_refresh_s <= 0:
            feeds = (*feeds, *self.refresh_peers(now))
        return feeds

    def _on_hub_changed(self, event: HubChanged) -> tuple[Feed, ...]:
        if self._sits_on_council is not None:
            in_council = self._sits_on_council()
        else:
            in_council = self.self_id in event.council or event.hub == self.self_id
        if in_council and not self.in_council and not self.election_has_live_set:
            self.election_has_live_set = True
            self.in_council = True
            return (ElectionLiveSet(self._live_peers()),)
        self.in_council = in_council
        return NO_FEEDS

    # ---- the lazy peer refresh ------------------------------------------------------------------

    def before_dissemination(self, now: float, ticking: bool) -> tuple[Feed, ...]:
        """Call before the dissemination core runs: refreshes its peers when they are due."""
        if self.peers_dirty and (
            (ticking and now >= self.peers_refreshed_at + self.config.peer_refresh_s) or not self.peer_count
        ):
            return self.refresh_peers(now)
        return NO_FEEDS

    def before_publish(self, now: float) -> tuple[Feed, ...]:
        """A record this node signs goes to an up-to-date peer list."""
        return self.refresh_peers(now) if self.peers_dirty else NO_FEEDS

    def refresh_peers(self, now: float) -> tuple[Feed, ...]:
        """Hand dissemination the live members (and the election its first full set)."""
        self.peers_dirty = False
        self.peers_refreshed_at = now
        peers = self._live_peers()
        self.peer_count = len(peers)
        with_election = not self.election_has_live_set
        self.election_has_live_set = True
        return (SetPeers(peers, with_election),)

    def seed_peers(self, peers: list[NodeId]) -> tuple[Feed, ...]:
        """A joining node gossips with its seeds until membership has told it more."""
        self.peer_count = len(peers)
        return (SetPeers(peers, False),)

    def forget_live_set(self) -> None:
        """The election core was replaced (a restart): it needs a full live set again."""
        self.election_has_live_set = False
