"""A deterministic little mesh for election tests: store + dissemination + election cores per node.

No event loop: a heap of messages and scheduled actions in virtual time, like the Router
of tests/test_dissemination.py. Each node has its own clock rate and offset (the cores
only ever see local time), messages cross a real encode/decode, and the network can
lose, delay, partition, kill and restart. Membership is an oracle: after
`detect_delay`, each node sees the nodes it can reach.

The cluster watches the safety properties as it runs, from outside the cores:
hubs believed per term (over every node's chain), nodes acting as hub at the same
instant, hub-issued records accepted by a store that already knew a newer term, and
hub-issued records published by a node that was not acting in that term.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from protocols.common.effects import Event, Send
from protocols.common.identity import NodeId, NodeIdentity
from protocols.common.wire import decode, encode
from protocols.dissemination.config import DisseminationConfig
from protocols.dissemination.core import DisseminationCore
from protocols.dissemination.messages import DisseminationMessage
from protocols.election.config import ElectionConfig
from protocols.election.core import ElectionCore
from protocols.election.messages import ElectionMessage
from protocols.records.fencing import HUB_ISSUED_KINDS, issued_term
from protocols.records.record import Record
from protocols.records.store import Outcome, RecordStore
from tests.support.mesh_fixtures import MeshFixture, make_mesh


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
        self.config = config or ElectionConfig()
        self.loss = loss
        self.latency = latency
        self.drift = drift
        self.detect_delay = detect_delay
        self.now = 0.0
        self.nodes: dict[NodeId, Node] = {}
        self.dead: set[NodeId] = set()
        self.group: dict[NodeId, int] = {}
        self.safety = Safety()
        self.sent = 0
        self._queue: list[tuple[float, int, NodeId, NodeId, str, bytes]] = []
        self._actions: list[tuple[float, int, Callable[[], None]]] = []
        self._counter = 0
        self._accepted_hub_issued: list[Record] = []
        self.ids = [identity.node_id for identity in self.mesh.everyone]
        for identity in self.mesh.everyone:
            store = RecordStore(self.mesh.mesh_id)
            store.merge(self.mesh.membership_records())
            self._start(identity, store)
        for node_id in self.ids:
            self.group[node_id] = 0
        if initial_views:
            self._update_views()
        else:
            self.schedule(detect_delay, self._update_views)
        for node_id in self.ids:
            self._tick(node_id, gossip=True, election=True)

    # ---- building and breaking -----------------------------------------------------------

    def _start(self, identity: NodeIdentity, store: RecordStore) -> None:
        node_id = identity.node_id
        seed = self.rng.getrandbits(64)
        rate = 1.0 + self.rng.uniform(-self.drift, self.drift)
        offset = self.rng.uniform(0.0, 1000.0)
        gossip = DisseminationCore(node_id, store, random.Random(seed), DisseminationConfig(fanout=2))
        election = ElectionCore(identity, store, random.Random(seed + 1), self.config)
        self.nodes[node_id] = Node(identity, store, gossip, election, rate, offset)

    @property
    def founder(self) -> NodeId:
        return self.ids[0]

    def live(self) -> list[NodeId]:
        return [node for node in self.ids if node not in self.dead]

    def schedule(self, delay: float, action: Callable[[], None]) -> None:
        self._counter += 1
        heapq.heappush(self._actions, (self.now + delay, self._counter, action))

    def kill(self, node_id: NodeId) -> None:
        self.dead.add(node_id)
        self.schedule(self.detect_delay, self._update_views)

    def restart(self, node_id: NodeId) -> None:
        """Bring a killed node back with what it had persisted (everything its store held)."""
        old = self.nodes[node_id]
        store = RecordStore(self.mesh.mesh_id)
        store.restore(list(old.store), old.store.clock())
        self.dead.discard(node_id)
        self._start(old.identity, store)
        self._tick(node_id, gossip=True, election=True)
        self.schedule(0.0, self._update_views)

    def partition(self, *groups: list[NodeId]) -> None:
        """Split the network: nodes only reach nodes of their own group (unlisted nodes: group 0)."""
        for node_id in self.ids:
            self.group[node_id] = 0
        for index, members in enumerate(groups, start=1):
            for node_id in members:
                self.group[node_id] = index
        self.schedule(self.detect_delay, self._update_views)

    def heal(self) -> None:
        self.partition()

    def _update_views(self) -> None:
        for node_id in self.live():
            view = [other for other in self.live() if self.group[other] == self.group[node_id]]
            node = self.nodes[node_id]
            node.gossip.set_peers(view)
            node.election.set_live_members(node.local(self.now), view)
            self._flush(node_id)

    # ---- running ---------------------------------------------------------------------------

    def _flush(self, node_id: NodeId) -> None:
        node = self.nodes[node_id]
        local = node.local(self.now)
        self._accepted_hub_issued = []
        while True:
            effects = [*node.gossip.drain(), *node.election.drain()]
            if not effects:
                break
            for effect in effects:
                if isinstance(effect, Send):
                    proto = "e" if isinstance(effect.message, ElectionMessage) else "d"
                    self._send(node_id, effect.to, proto, encode(effect.message))
                elif isinstance(effect, Event):
                    self._on_event(node, local, effect)
        # Judged once the batch is through: a record merged in the same batch as the hub
        # record of a newer term is purged when that hub record is believed, a moment later.
        for record in self._accepted_hub_issued:
            held = node.store.get(*record.slot) == record
            if held and issued_term(record) < node.election.latest_term:
                self.safety.fenced_accepted += 1

    def _on_event(self, node: Node, local: float, event: Event) -> None:
        node_id = node.identity.node_id
        if event.name == "publish":
            record: Record = event.data["record"]
            if record.kind in HUB_ISSUED_KINDS and node.election.acting_term(local) != issued_term(record):
                self.safety.published_while_not_acting += 1
            node.gossip.publish(local, record)
        elif event.name == "accepted":
            record = event.data["record"]
            if record.kind in HUB_ISSUED_KINDS:
                self._accepted_hub_issued.append(record)
            node.election.on_record(local, record)
        elif event.name == "became_hub":
            self.safety.became_hub.append((self.now, node_id, event.data["term"]))
        elif event.name == "stepped_down":
            self.safety.stepped_down.append((self.now, node_id, event.data["term"], event.data["reason"]))

    def _send(self, sender: NodeId, to: NodeId, proto: str, wire: bytes) -> None:
        self.sent += 1
        if self.rng.random() < self.loss:
            return
        self._counter += 1
        at = self.now + self.rng.uniform(*self.latency)
        heapq.heappush(self._queue, (at, self._counter, sender, to, proto, wire))

    def _tick(self, node_id: NodeId, gossip: bool, election: bool) -> None:
        node = self.nodes[node_id]
        local = node.local(self.now)
        for due, core in ((gossip, node.gossip), (election, node.election)):
            if due:
                # local(real(deadline)) may round to just below the deadline: never tick early
                deadline = core.next_deadline()
                core.tick(max(local, deadline) if deadline is not None and deadline - local < 1e-6 else local)
        self._flush(node_id)

    def _next_timer(self) -> tuple[float, NodeId | None, str]:
        best: tuple[float, NodeId | None, str] = (float("inf"), None, "")
        for node_id in self.live():
            node = self.nodes[node_id]
            for which, core in (("gossip", node.gossip), ("election", node.election)):
                deadline = core.next_deadline()
                if deadline is not None:
                    at = max(self.now, node.real(deadline))
                    if at < best[0]:
                        best = (at, node_id, which)
        return best

    def run_until(self, end: float) -> None:
        while True:
            timer_at, timer_node, which = self._next_timer()
            message_at = self._queue[0][0] if self._queue else float("inf")
            action_at = self._actions[0][0] if self._actions else float("inf")
            at = min(timer_at, message_at, action_at)
            if at > end:
                self.now = end
                return
            self.now = at
            if action_at == at:
                heapq.heappop(self._actions)[2]()
            elif message_at == at:
                _, _, sender, to, proto, wire = heapq.heappop(self._queue)
                if to in self.dead or sender in self.dead or self.group[sender] != self.group[to]:
                    continue
                node = self.nodes[to]
                local = node.local(self.now)
                if proto == "e":
                    node.election.receive(local, sender, decode(wire, ElectionMessage))  # type: ignore[arg-type]
                else:
                    node.gossip.receive(local, sender, decode(wire, DisseminationMessage))  # type: ignore[arg-type]
                self._flush(to)
            else:
                assert timer_node is not None
                self._tick(timer_node, gossip=which == "gossip", election=which == "election")
            self._observe()

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
