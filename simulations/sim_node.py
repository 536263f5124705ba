"""One simulated node: identity, seeded RNG, record store and the real protocol cores, wired
the way a real node's actor shell wires them.

Channel 0 is membership (SWIM), channel 1 is dissemination (push + anti-entropy), channel 2
is the hub election; each channel decodes with the protocol's own decoder. Membership
changes feed the dissemination core's peer list and the election's live set; every
record the store accepts is fed to the election, and the records the election signs are
published through dissemination, with one seq allocator for both, as in `mesh.node`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, cast

from protocols.common.effects import Event
from protocols.common.identity import NodeId, NodeIdentity
from protocols.common.wire import WireError, decode, encode
from protocols.dissemination.config import DisseminationConfig
from protocols.dissemination.core import DisseminationCore
from protocols.dissemination.messages import DisseminationMessage, Push
from protocols.election.config import ElectionConfig
from protocols.election.core import ElectionCore
from protocols.election.messages import ElectionMessage
from protocols.election.records import HUB
from protocols.membership.config import MembershipConfig
from protocols.membership.core import MembershipCore
from protocols.membership.messages import decode_membership
from protocols.records.admission_records import ADMISSION, admission_body, introduces_member
from protocols.records.fencing import LEASE
from protocols.records.record import Record
from protocols.records.seq_allocator import SeqAllocator
from protocols.records.store import RecordStore
from simulations.engine import Endpoint

MEMBERSHIP = 0
DISSEMINATION = 1
ELECTION = 2

_DISSEMINATION_UNION: Any = DisseminationMessage
_ELECTION_UNION: Any = ElectionMessage
_LIVE_STATES = frozenset({"alive", "suspect"})
_ELECTION_KINDS = frozenset({HUB, LEASE})
ElectionFactory = Callable[
    [NodeIdentity, RecordStore, random.Random, ElectionConfig, Callable[[], int]], ElectionCore
]
"""Builds a node's election core (tests plant faulty cores through it)."""
PEER_REFRESH_S = 5.0
"""Longest the dissemination peer list lags behind membership (see `before_use`)."""


def decode_dissemination(data: bytes) -> DisseminationMessage:
    """Decode one dissemination message (raises `WireError` for anything else)."""
    return cast(DisseminationMessage, decode(data, _DISSEMINATION_UNION))


def decode_election(data: bytes) -> object:
    """Decode one election message (raises `WireError` for anything else)."""
    return cast(object, decode(data, _ELECTION_UNION))


def push_payload(record: Record) -> bytes:
    """The bytes of an eager push carrying `record`, as a relay would send it."""
    return encode(Push([record]))


class SimNode(Endpoint):
    """A node incarnation the engine drives. A restart builds a new `SimNode` on the same store."""

    __slots__ = (
        "dissemination",
        "election",
        "election_dirty",
        "identity",
        "in_council",
        "membership",
        "peer_count",
        "peers_dirty",
        "peers_refreshed_at",
        "rng",
        "seqs",
        "store",
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
        self.peers_dirty = True
        self.peer_count = 0
        self.peers_refreshed_at = -PEER_REFRESH_S
        factory = election_factory or ElectionCore
        self.election = factory(
            identity, store, random.Random(rng.getrandbits(64)), election_config, self.seqs
        )
        self.in_council = self._sits_on_council()  # a restarted node may, from its persisted chain
        self.election_dirty = True
        """True until the election core got its first full live set; then it follows changes one by one."""
        super().__init__(
            identity.node_id,
            index,
            [self.membership, self.dissemination, self.election],
            [decode_membership, decode_dissemination, decode_election],
        )

    def before_use(self, channel: int, now: float, ticking: bool) -> None:
        """Refresh the peer list when membership changed, at most once per anti-entropy tick.

        `set_peers` copies the whole list (O(n)); under 5 %/min churn in a 1000-node mesh
        every node sees the live set change about once a second, so the shell batches
        changes and refreshes at an anti-entropy tick at most every `PEER_REFRESH_S`, and
        at once while it has no peers at all. A stale entry costs at most a push or a sync
        round sent to a node that just died, which the next round repairs.
        """
        if (
            channel == DISSEMINATION
            and self.peers_dirty
            and ((ticking and now >= self.peers_refreshed_at + PEER_REFRESH_S) or not self.peer_count)
        ):
            self.refresh_peers(now)

    def refresh_peers(self, now: float) -> None:
        """Hand the dissemination core the live members (the gossip actor does this on change)."""
        self.peers_dirty = False
        self.peers_refreshed_at = now
        peers = self.membership.live_peers()
        self.peer_count = len(peers)
        self.dissemination.set_peers(peers)
        if self.election_dirty:
            self.election_dirty = False
            self.election.set_live_members(now, peers)

    def seed_peers(self, peers: list[NodeId]) -> None:
        """A joining node gossips with its seeds until membership has told it more."""
        self.peer_count = len(peers)
        self.dissemination.set_peers(peers)

    def know_members(self) -> None:
        """Initial mesh: hand the members `add_member` just told membership to the other cores."""
        self.election_dirty = True
        self.refresh_peers(0.0)

    def on_event(self, now: float, channel: int, event: Event) -> int | None:
        """Wire the cores together as the node's shell (`mesh.node`) does.

        - A recently admitted member is introduced to membership (`add_member`) by its
          admission record, by push or by anti-entropy, so everyone probes a newcomer
          even if its sponsor dies (`introduces_member`: older admissions are history).
        - Membership's live set (alive and suspect: suspects stay gossip partners) is
          handed to dissemination and the election; member events mark it changed.
        - Every accepted record goes to the election (`on_record`) once it is in the
          store; the records the election signs are published through dissemination.

        The election core gets its first full live set with the first peer refresh and
        then each change as it happens (`member_changed`, O(1)), which keeps a
        1000-node mesh from copying a 1000-member set into 1000 election cores on every
        death; only council members and the hub act on it (they pick councils and notice
        a dead council member), so only theirs is flushed at once.
        """
        if channel == DISSEMINATION:
            if event.name == "accepted":
                record = event.data["record"]
                self.election.on_record(now, record)
                if record.kind == ADMISSION:
                    try:
                        body = admission_body(record)
                    except WireError:
                        return None
                    member = body.member
                    if (
                        introduces_member(body, now)
                        and member != self.node_id
                        and self.membership.add_member(now, member)
                    ):
                        return MEMBERSHIP
                    return None
                # only hub and lease records make the election act; others leave it idle
                return ELECTION if record.kind in _ELECTION_KINDS else None
            return None
        if channel == ELECTION:
            return self._on_election_event(now, event)
        if event.name != "member":
            return None
        data = event.data
        node = data["node"]
        if node == self.node_id:
            return None
        # Membership's own live set is the one truth; an alive <-> suspect flap costs one
        # idempotent `member_changed` and at most an early peer refresh, no shadow set.
        self.peers_dirty = True
        if not self.election_dirty:
            self.election.member_changed(now, node, data["state"] in _LIVE_STATES)
            return ELECTION if self.in_council else None
        return None

    def _on_election_event(self, now: float, event: Event) -> int | None:
        name = event.name
        if name == "publish":
            self.author(now, event.data["record"])
            return DISSEMINATION
        if name == "hub":
            in_council = self._sits_on_council()
            if in_council and not self.in_council and self.election_dirty:
                self.election.set_live_members(now, self.membership.live_peers())
                self.election_dirty = False
                self.in_council = True
                return ELECTION
            self.in_council = in_council
        return None

    def _sits_on_council(self) -> bool:
        view = self.election.hub_view()
        own = self.identity.node_id
        return view is not None and (own in view.council or view.hub == own)

    def next_seq(self) -> int:
        """The seq for this node's next own record: the one allocator the election shares."""
        return self.seqs()

    def author(self, now: float, record: Record) -> bool:
        """Add a record this node authored to its own store and push it (the publish path)."""
        if self.peers_dirty:
            self.refresh_peers(now)
        return self.dissemination.publish(now, record)
