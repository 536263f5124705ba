"""A deterministic little mesh for election tests: store + dissemination + election cores per node.

No event loop: the nodes run on the shared sans-IO harness (tests/support/sans_io_harness.py),
two cores each ("gossip" and "election"), in virtual time. Each node has its own clock
rate and offset (the cores only ever see local time), messages cross a real
encode/decode, and the network can lose, delay, partition, kill and restart; a message
in flight is lost if its sender is dead or the two ends are cut apart when it arrives.
Membership is an oracle: after `detect_delay`, each node sees the nodes it can reach.
Events feed the other core of the node: a record the election signs is published by
gossip, a record gossip accepts goes to the election.

The cluster watches the safety properties as it runs, from outside the cores:
hubs believed per term (over every node's chain), nodes acting as hub at the same
instant, hub-issued records accepted by a store that already knew a newer term, and
hub-issued records published by a node that was not acting in that term.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from protocols.common.identity import NodeId, NodeIdentity
from protocols.dissemination.config import DisseminationConfig
from protocols.dissemination.core import DisseminationCore
from protocols.dissemination.events import RecordAccepted
from protocols.dissemination.messages import DisseminationMessage
from protocols.election.config import ElectionConfig
from protocols.election.core import ElectionCore
from protocols.election.events import BecameHub, PublishRecord, SteppedDown
from protocols.election.messages import ElectionMessage
from protocols.records.fencing import HUB_ISSUED_KINDS, issued_term
from protocols.records.record import Record
from protocols.records.store import Outcome, RecordStore
from tests.support.mesh_fixtures import MeshFixture, make_mesh
from tests.support.sans_io_harness import SansIOHarness

GOSSIP = "gossip"
ELECTION = "election"


@dataclass
class Node:
    identity: NodeIdentity
    store: RecordStore
    gossip: DisseminationCore
    election: ElectionCore
    rate: float
    offset: float

    def local(self, now: float) -> float:
        return self.offset + self.rate * now

    def real(self, local: float) -> float:
        return (local - self.offset) / self.rate


@dataclass
class Safety:
    """What the cluster saw; every count but the informative ones must stay 0 (or 1 for hubs)."""

    acting_overlaps: int = 0
    fenced_accepted: int = 0
    published_while_not_acting: int = 0
    hub_conflicts: int = 0
    became_hub: list[tuple[float, NodeId, int]] = field(default_factory=list)
    stepped_down: list[tuple[float, NodeId, int, str]] = field(default_factory=list)
    believed: dict[int, set[NodeId]] = field(default_factory=dict)

    @property
    def max_hubs_per_term(self) -> int:
        return max((len(hubs) for hubs in self.believed.values()), default=0)


class ElectionCluster:
    """`n` nodes (the first is the founder) running dissemination and election in virtual time."""

    def __init__(
        self,
        n: int = 5,
        seed: int = 0,
        config: ElectionConfig | None = None,
        loss: float = 0.0,
        latency: tuple[float, float] = (0.002, 0.02),
        drift: float = 0.0,
        detect_delay: float = 3.0,
        initial_views: bool = True,
    ) -> None:
        self.mesh: MeshFixture = make_mesh(members=n - 1, seed=seed)
        self.rng = random.Random(seed)
        """Draws the nodes' seeds and clocks and, through the harness, the network's loss and latency."""
        self.config = config or ElectionConfig()
        self.drift = drift
        self.detect_delay = detect_delay
        self.nodes: dict[NodeId, Node] = {}
        self.safety = Safety()
        self.net = SansIOHarness(
            rng=self.rng, loss=loss, latency=latency, after_flush=self._judge_batch, after_step=self._observe
        )
        self.net.arrival_rules.append(lambda at, sender, to, message: sender in self.net.down)
        self.net.on(PublishRecord, self._on_publish)
        self.net.on(RecordAccepted, self._on_accepted)
        self.net.on(BecameHub, self._on_became_hub)
        self.net.on(SteppedDown, self._on_stepped_down)
        self._accepted_hub_issued: list[Record] = []
        self.ids = [identity.node_id for identity in self.mesh.everyone]
        for identity in self.mesh.everyone:
            store = RecordStore(self.mesh.mesh_id)
            store.merge(self.mesh.membership_records())
            self._start(identity, store)
        if initial_views:
            self._update_views()
        else:
            self.schedule(detect_delay, self._update_views)
        for node_id in self.ids:
            self.net.tick(node_id)  # a driver ticks every core once when it starts

    # ---- building and breaking -----------------------------------------------------------

    def _start(self, identity: NodeIdentity, store: RecordStore) -> None:
        node_id = identity.node_id
        seed = self.rng.getrandbits(64)
        rate = 1.0 + self.rng.uniform(-self.drift, self.drift)
        offset = self.rng.uniform(0.0, 1000.0)
        gossip = DisseminationCore(node_id, store, random.Random(seed), DisseminationConfig(fanout=2))
        election = ElectionCore(identity, store, random.Random(seed + 1), self.config)
        self.nodes[node_id] = Node(identity, store, gossip, election, rate, offset)
        clock = {"rate": rate, "offset": offset}
        self.net.add(node_id, gossip, protocol=GOSSIP, message_type=DisseminationMessage, **clock)
        self.net.add(node_id, election, protocol=ELECTION, message_type=ElectionMessage)

    @property
    def founder(self) -> NodeId:
        return self.ids[0]

    @property
    def now(self) -> float:
        return self.net.now

    @property
    def dead(self) -> set[NodeId]:
        return self.net.down

    @property
    def sent(self) -> int:
        return self.net.sent

    def live(self) -> list[NodeId]:
        return [node for node in self.ids if node not in self.dead]

    def schedule(self, delay: float, action: Callable[[], None]) -> None:
        self.net.schedule(delay, action)

    def kill(self, node_id: NodeId) -> None:
        self.net.crash(node_id)
        self.schedule(self.detect_delay, self._update_views)

    def restart(self, node_id: NodeId) -> None:
        """Bring a killed node back with what it had persisted (everything its store held)."""
        old = self.nodes[node_id]
        store = RecordStore(self.mesh.mesh_id)
        store.restore(list(old.store), old.store.clock())
        self.net.recover(node_id)
        self._start(old.identity, store)
        self.net.tick(node_id)
        self.schedule(0.0, self._update_views)

    def partition(self, *groups: list[NodeId]) -> None:
        """Split the network: nodes only reach nodes of their own group (unlisted nodes: one more group)."""
        self.net.partition(*groups)
        self.schedule(self.detect_delay, self._update_views)

    def heal(self) -> None:
        self.partition()

    def _update_views(self) -> None:
        for node_id in self.live():
            view = [other for other in self.live() if self.net.connected(other, node_id)]
            node = self.nodes[node_id]
            node.gossip.set_peers(view)
            node.election.set_live_members(node.local(self.now), view)
            self.net.flush(node_id)

    # ---- running ---------------------------------------------------------------------------

    def run_until(self, end: float) -> None:
        self.net.run_until(end)

    def _on_publish(self, node_id: NodeId, event: PublishRecord) -> None:
        node = self.nodes[node_id]
        local = node.local(self.now)
        record = event.record
        if record.kind in HUB_ISSUED_KINDS and node.election.acting_term(local) != issued_term(record):
            self.safety.published_while_not_acting += 1
        node.gossip.publish(local, record)

    def _on_accepted(self, node_id: NodeId, event: RecordAccepted) -> None:
        node = self.nodes[node_id]
        if event.record.kind in HUB_ISSUED_KINDS:
            self._accepted_hub_issued.append(event.record)
        node.election.on_record(node.local(self.now), event.record)

    def _on_became_hub(self, node_id: NodeId, event: BecameHub) -> None:
        self.safety.became_hub.append((self.now, node_id, event.term))

    def _on_stepped_down(self, node_id: NodeId, event: SteppedDown) -> None:
        self.safety.stepped_down.append((self.now, node_id, event.term, event.reason))

    def _judge_batch(self, node_id: NodeId) -> None:
        """Once a node's drained batch is through: a record merged in the same batch as the hub
        record of a newer term is purged when that hub record is believed, a moment later."""
        node = self.nodes[node_id]
        for record in self._accepted_hub_issued:
            held = node.store.get(*record.slot) == record
            if held and issued_term(record) < node.election.latest_term:
                self.safety.fenced_accepted += 1
        self._accepted_hub_issued = []

    def _observe(self) -> None:
        acting = 0
        for node_id in self.live():
            node = self.nodes[node_id]
            if node.election.acting_term(node.local(self.now)) is not None:
                acting += 1
        if acting > 1:
            self.safety.acting_overlaps += 1

    # ---- reading ---------------------------------------------------------------------------

    def acting_hub(self) -> tuple[NodeId, int] | None:
        for node_id in self.live():
            node = self.nodes[node_id]
            term = node.election.acting_term(node.local(self.now))
            if term is not None:
                return node_id, term
        return None

    def views(self) -> dict[NodeId, tuple[int, NodeId | None]]:
        """Each live node's newest believed term and its hub."""
        out: dict[NodeId, tuple[int, NodeId | None]] = {}
        for node_id in self.live():
            view = self.nodes[node_id].election.hub_view()
            out[node_id] = (0, None) if view is None else (view.term, view.hub)
        return out

    def finish(self) -> Safety:
        """Fold every node's believed chain (dead ones too) and held records into the safety record."""
        for node in self.nodes.values():
            latest = node.election.latest_term
            for record in node.store:
                if record.kind in HUB_ISSUED_KINDS and issued_term(record) < latest:
                    self.safety.fenced_accepted += 1
            self.safety.hub_conflicts += len(node.election.chain.conflicts)
            for term, believed in node.election.chain.terms.items():
                self.safety.believed.setdefault(term, set()).add(believed.hub)
        return self.safety

    def fenced_refusals(self) -> int:
        return sum(node.store.counters[Outcome.FENCED] for node in self.nodes.values())
