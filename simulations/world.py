"""A simulated mesh: the founder, its members, churn, workload and scenario events on one engine.

The world is the simulator's `Population`: it knows what a crash, a leave, a join and a
restart mean for a node (the same steps a real node goes through: a member signs an
admission record, the newcomer joins through that member; a crashed node restarts
with its identity and persisted records), and it feeds the metrics and invariant
checker from what the cores emit. With artifacts in the scenario it also keeps the
storage model (`simulations/storage_model.py`): the shares on the nodes' disks, the
acting hub's storage core, repairs and audits.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import Any

from protocols.common.effects import Event
from protocols.common.identity import NodeId, NodeIdentity
from protocols.dissemination.config import DisseminationConfig
from protocols.dissemination.events import RecordAccepted
from protocols.election.config import ElectionConfig
from protocols.election.events import BecameHub, HubChanged, SteppedDown
from protocols.membership.config import MembershipConfig
from protocols.membership.events import MemberChanged
from protocols.records.admission_records import make_admission, make_genesis
from protocols.records.record import Record, Verifier, sign_record
from protocols.records.store import RecordStore
from protocols.storage.config import StorageConfig
from simulations.churn_model import ChurnModel
from simulations.engine import Engine
from simulations.hub_tracker import SAMPLE_S, HubTracker
from simulations.invariants import InvariantChecker, Violation
from simulations.metrics import DisseminationTracker, FailureDetectionTracker, PopulationTracker
from simulations.network_model import NetworkModel
from simulations.scenario import Scenario, ScenarioError, TimedEvent
from simulations.sim_node import DISSEMINATION, MEMBERSHIP, ElectionFactory, SimNode, push_payload
from simulations.storage_model import StorageModel
from simulations.verify_cache import CachedVerifier
from simulations.workload import Workload

StoreFactory = Callable[[bytes, Verifier], RecordStore]

# trace tags for non-message happenings
_T_CRASH, _T_LEAVE, _T_JOIN, _T_RESTART, _T_PUBLISH, _T_FORGE, _T_MEMBER = range(1, 8)
_STATE_CODE = {"alive": 0, "suspect": 1, "dead": 2, "left": 3}
SPOT_CHECK_RECORDS = 16
_BUILT_REPORT_EVERY = 50
"""Acknowledged records drawn for each periodic store check (the final check takes all)."""
HUB_RESTART_AFTER_S = 30.0
"""A hub crashed by `kill_hub_every` comes back this much later (a rebooted machine)."""
SIM_ELECTION_DEFAULTS: dict[str, Any] = {"lease_record_interval": 3600.0}
"""Lease records only tell observers (status) how long the lease has left, and each one is a
mesh-wide broadcast: the simulator publishes one per hub, not one per 30 s as a real node
does, so a quiet mesh really is quiet when convergence is checked ([election] overrides)."""


def _config(cls: Any, overrides: dict[str, Any], where: str) -> Any:
    allowed = {f.name for f in fields(cls)}
    unknown = sorted(set(overrides) - allowed)
    if unknown:
        raise ScenarioError(
            f"{where}: unknown setting(s) {', '.join(unknown)} (known: {', '.join(sorted(allowed))})"
        )
    try:
        return cls(**overrides)
    except (TypeError, ValueError) as exc:
        raise ScenarioError(f"{where}: {exc}") from None


class World:
    """Builds the initial mesh and runs churn, workload and timed events against it."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        store_factory: StoreFactory = RecordStore,
        election_factory: ElectionFactory | None = None,
    ) -> None:
        self.scenario = scenario
        self.membership_config: MembershipConfig = _config(
            MembershipConfig, scenario.membership, "membership"
        )
        self.dissemination_config: DisseminationConfig = _config(
            DisseminationConfig, scenario.dissemination, "dissemination"
        )
        self.election_config: ElectionConfig = _config(
            ElectionConfig, {**SIM_ELECTION_DEFAULTS, **scenario.election}, "election"
        )
        storage = scenario.storage
        self.storage_config: StorageConfig = _config(
            StorageConfig, {**storage.core, "k": storage.k, "n": storage.n}, "storage"
        )
        self._election_factory = election_factory
        master = random.Random(scenario.seed)
        self._identity_rng = random.Random(master.getrandbits(64))
        self._node_rng = random.Random(master.getrandbits(64))
        self._churn_rng = random.Random(master.getrandbits(64))
        self._workload_rng = random.Random(master.getrandbits(64))
        self._check_rng = random.Random(master.getrandbits(64))
        self.network = NetworkModel(scenario.network, random.Random(master.getrandbits(64)))
        storage_rng = random.Random(master.getrandbits(64))  # drawn last: the other streams stay as they were
        self.engine = Engine(self.network, shared=frozenset({DISSEMINATION}))
        self.engine.observers.append(self._observe)
        self.verifier = CachedVerifier()
        self._store_factory = store_factory
        self.live: dict[NodeId, SimNode] = {}
        self._persisted: dict[NodeId, tuple[NodeIdentity, int, RecordStore]] = {}
        self._index: dict[NodeId, int] = {}
        self._next_index = 1
        self._restarts: dict[NodeId, int] = {}
        self.dissemination = DisseminationTracker()
        self.detection = FailureDetectionTracker()
        self.population = PopulationTracker()
        self.checker = InvariantChecker(self.live_stores, self._violation, self._check_rng)
        self.hub = HubTracker(self._election_of, lambda node: self._index.get(node, 0), self.checker.violate)
        self.churn = ChurnModel(self, self._churn_rng)
        self.workload = Workload(self, self._workload_rng)
        self.storage: StorageModel | None = None
        """The artifacts' shares and the hub's storage core; None when the scenario stores none."""
        if storage.artifacts > 0:
            self.storage = StorageModel(self, storage, self.storage_config, storage_rng)
        self.bucket_live: list[float] = []
        founder = self._new_identity()
        self.genesis = make_genesis(founder, "simulation", 0.0, self._identity_rng.randbytes(16))
        self.mesh_id = self.genesis.mesh
        self.founder_id = founder.node_id
        self._founder = founder
        self.quiet_at, self.convergence_bound_s = self._plan()

    # ---- Population interface ------------------------------------------------------------------

    @property
    def now(self) -> float:
        return self.engine.now

    def live_nodes(self) -> Sequence[NodeId]:
        return list(self.live)

    def region_of(self, node: NodeId) -> str:
        return self.network.region_of(node)

    def schedule(self, at: float, action: Callable[[], None]) -> None:
        self.engine.schedule(at, action)

    def live_stores(self) -> list[tuple[NodeId, RecordStore]]:
        return [(node_id, node.store) for node_id, node in self.live.items()]

    def live_indices(self) -> set[int]:
        return {node.index for node in self.live.values()}

    # ---- building the initial mesh ---------------------------------------------------------

    def _new_identity(self) -> NodeIdentity:
        return NodeIdentity.from_seed(self._identity_rng.randbytes(32))

    def _new_store(self) -> RecordStore:
        return self._store_factory(self.mesh_id, self.verifier)

    def _make_node(self, identity: NodeIdentity, store: RecordStore) -> SimNode:
        node_id = identity.node_id
        index = self._index.get(node_id)
        if index is None:
            index = self._next_index
            self._next_index += 1
            self._index[node_id] = index
        rng = random.Random(self._node_rng.getrandbits(64))
        node = SimNode(
            identity,
            index,
            rng,
            store,
            self.membership_config,
            self.dissemination_config,
            self.election_config,
            self._election_factory,
            self.storage,
        )
        return node

    def bootstrap(self, on_built: Callable[[int], None] | None = None) -> None:
        """The mesh at t=0: the founder admitted every initial member; all know all.

        `on_built(count)` is told how many nodes are built so far, now and then: at 5000
        nodes this takes minutes, and a progress bar should say so.

        One store merges the genesis and every admission record for real and every
        node's store starts as a replica of it (`RecordStore.replicate`: the same
        records, copied containers), and every membership core learns the
        members through `add_member`, the out-of-band path a node uses for admitted
        members; the run then starts from a converged mesh, as a long-running one is.
        """
        scenario = self.scenario
        identities = [self._founder] + [self._new_identity() for _ in range(scenario.nodes - 1)]
        records = [self.genesis]
        for seq, identity in enumerate(identities[1:], start=2):
            records.append(
                make_admission(self._founder, self.mesh_id, seq, identity.node_id, admitted_at=0.0)
            )
        member_ids = [identity.node_id for identity in identities]
        template = RecordStore(self.mesh_id, self.verifier)
        template.merge(records)
        for identity in identities:
            store = self._new_store()
            store.replicate(template)
            node = self._make_node(identity, store)
            own = identity.node_id
            self.network.place(own)
            add_member = node.membership.add_member
            for other in member_ids:
                if other != own:
                    add_member(0.0, other)
            node.membership.drain()  # the initial "member alive" events describe the setup
            node.know_members()
            self.live[identity.node_id] = node
            self.detection.started(identity.node_id, 0.0, restart=False)
            if on_built is not None and len(self.live) % _BUILT_REPORT_EVERY == 0:
                on_built(len(self.live))
        for record in records:
            self.checker.acknowledged(record.signature, record, self.founder_id)
        self.checker.held_by_all([record.signature for record in records], member_ids)
        if self.storage is not None:
            self.storage.bootstrap()
        for node in self.live.values():
            self.engine.attach(node)
        self.population.sample(0.0, len(self.live))
        if on_built is not None:
            on_built(len(self.live))

    # ---- the plan: churn, workload, events, checks ------------------------------------------

    def _plan(self) -> tuple[float, float]:
        """When the mesh goes quiet (churn, events and publishing over) and the convergence bound."""
        scenario = self.scenario
        bound = convergence_bound_s(
            scenario.nodes, self.membership_config, self.dissemination_config, scenario
        )
        settle = scenario.settle_s if scenario.settle_s is not None else bound
        last_event = 0.0
        for event in scenario.events:
            end = event.at_s + event.over_s + (event.restart_after_s or 0.0)
            if event.action == "partition" and event.until_s is not None:
                end = max(end, event.until_s)
            last_event = max(last_event, end)
        quiet_at = max(last_event, scenario.duration_s - settle)
        if scenario.duration_s - quiet_at < bound - 1e-6:
            raise ScenarioError(
                f"the run ends {scenario.duration_s - quiet_at:.0f}s after the last churn or event, but "
                f"convergence is checked {bound:.0f}s after the mesh goes quiet: make the duration longer "
                f"or end events earlier"
            )
        for event in scenario.events:
            if (
                event.action == "partition"
                and event.until_s is None
                and not any(e.action == "heal" and e.at_s > event.at_s for e in scenario.events)
            ):
                raise ScenarioError(
                    f"a partition at {event.at_s:g}s is never healed (give it 'until' or add a heal event)"
                )
        return quiet_at, bound

    def start(self) -> None:
        scenario = self.scenario
        self.churn.restart_deadline = self.quiet_at
        if scenario.churn is not None:
            stop = (
                self.quiet_at if scenario.churn.stop_s is None else min(self.quiet_at, scenario.churn.stop_s)
            )
            self.churn.start(scenario.churn, stop)
        self.workload.start(scenario.publish_rate_per_s, scenario.forge_rate_per_s, self.quiet_at)
        for event in scenario.events:
            self.engine.schedule(event.at_s, functools.partial(self._apply_event, event))
        interval = scenario.check_interval_s
        t = interval
        while t < scenario.duration_s:
            self.engine.schedule(t, self._spot_check)
            t += interval
        self.engine.schedule(self.quiet_at, self._poll_convergence)
        self.engine.schedule(self.quiet_at + self.convergence_bound_s, self._final_convergence)
        t = 0.0
        while t < scenario.duration_s:
            self.engine.schedule(t, self._sample_bucket)
            t += self.engine.bucket_s
        every = scenario.kill_hub_every_s
        if every is not None:
            t = every
            while t < self.quiet_at:
                self.engine.schedule(t, functools.partial(self.kill_hub, HUB_RESTART_AFTER_S))
                t += every
        self.engine.schedule(SAMPLE_S, self._sample_hub)

    def _sample_hub(self) -> None:
        self.hub.sample(self.now, self)
        if self.now + SAMPLE_S < self.scenario.duration_s:
            self.engine.schedule(self.now + SAMPLE_S, self._sample_hub)

    def reaches_majority(self, now: float, node: NodeId) -> bool:
        """Whether `node` can reach at least half of the live nodes (only partitions cut it off)."""
        network = self.network
        if not network.partitioned(now):
            return True
        splits = [p for p in network.partitions if p.start <= now < p.end]
        reached = sum(1 for other in self.live if not any(p.blocks(now, node, other) for p in splits))
        return 2 * reached >= len(self.live)

    def kill_hub(self, restart_after_s: float | None) -> None:
        """Crash the node acting as hub now (a `kill role = "hub"` event); it may restart later."""
        current = self.hub.current_hub(self.now)
        if current is None:
            self.hub.kills_skipped += 1
            return
        node_id, _ = current
        self.hub.kills += 1
        restarts = restart_after_s is not None and self.now + restart_after_s < self.quiet_at
        self.crash(node_id, restarts, cause="killed")
        if restart_after_s is not None and restarts:
            self.engine.schedule(self.now + restart_after_s, functools.partial(self.restart, node_id))

    def _election_of(self, node_id: NodeId) -> Any:
        node = self.live.get(node_id)
        return None if node is None else node.election

    def _spot_check(self) -> None:
        if self.checker.check_stores(self.now, sample=SPOT_CHECK_RECORDS):
            self.hub.scan(self.now, self.live_stores())

    def _sample_bucket(self) -> None:
        self.bucket_live.append(float(len(self.live)))

    def _poll_convergence(self) -> None:
        if self.checker.converged_after_s is not None:
            return
        equal, _ = self.checker.digests_equal()
        if equal:
            self.checker.note_converged(self.now - self.quiet_at)
        elif self.now < self.quiet_at + self.convergence_bound_s:
            self.engine.schedule(self.now + 0.5, self._poll_convergence)

    def _final_convergence(self) -> None:
        if self.checker.check_convergence(self.now, self.quiet_at, self.convergence_bound_s):
            self._poll_convergence()
            self.checker.check_stores(self.now)

    def finish(self) -> None:
        """The exhaustive end-of-run store check (if the run was not already stopped); storage's books."""
        if self.engine.stop_reason is None and self.checker.check_stores(self.now):
            self.hub.scan(self.now, self.live_stores())
        if self.storage is not None:
            self.storage.finish()

    def _violation(self, violation: Violation) -> None:
        self.engine.stop(str(violation))

    def _apply_event(self, event: TimedEvent) -> None:
        action = event.action
        if action == "crash":
            self.churn.outage(
                fraction=event.fraction,
                count=event.count,
                region=event.region,
                restart_after_s=event.restart_after_s,
            )
        elif action == "leave":
            self.churn.mass_leave(fraction=event.fraction, count=event.count, region=event.region)
        elif action == "join":
            self.churn.flash_crowd(event.count or 0, event.over_s, event.region)
        elif action == "publish":
            self.workload.burst(event.count or 0, event.over_s, forged=False)
        elif action == "forge":
            self.workload.burst(event.count or 0, event.over_s, forged=True)
        elif action == "partition":
            self._partition(event)
        elif action == "heal":
            self.network.heal(self.now)
        elif action == "kill":
            self.kill_hub(event.restart_after_s)

    def _partition(self, event: TimedEvent) -> None:
        live = list(self.live)
        groups: list[frozenset[NodeId]] = []
        if event.groups is not None:
            for regions in event.groups:
                groups.append(frozenset(n for n in live if self.network.region_of(n) in regions))
        else:
            shuffled = self._churn_rng.sample(live, len(live))
            start = 0
            for share in event.split or ():
                size = math.floor(share * len(live) + 0.5)
                groups.append(frozenset(shuffled[start : start + size]))
                start += size
        self.network.partition(groups, self.now, event.until_s if event.until_s is not None else math.inf)

    # ---- node lifecycle ----------------------------------------------------------------------

    def crash(self, node_id: NodeId, restarts: bool = True, cause: str = "crashed") -> None:
        """Stop a node abruptly; only one that `restarts` keeps its store (its disk) for later."""
        self.hub.gone(self.now, node_id, cause)
        node = self.live.pop(node_id, None)
        if node is None:
            return
        self.engine.detach(node_id)
        self.network.forget(node_id)
        if restarts:
            self._persisted[node_id] = (node.identity, node.index, node.store)
        if self.storage is not None:
            self.storage.node_down(node, permanent=not restarts)
        self.detection.crashed(node_id, self.now)
        self.engine.trace(_T_CRASH, node.index)
        self.population.sample(self.now, len(self.live))

    def leave(self, node_id: NodeId) -> None:
        self.hub.gone(self.now, node_id, "left")
        node = self.live.pop(node_id, None)
        if node is None:
            return
        node.membership.leave(self.now)
        self.engine.flush(node, MEMBERSHIP)  # the "left" announcements go out before it stops
        self.engine.detach(node_id)
        self.network.forget(node_id)
        if self.storage is not None:
            self.storage.node_down(node, permanent=True)
        self.detection.left(node_id)
        self.checker.forget_node(node_id)
        self.engine.trace(_T_LEAVE, node.index)
        self.population.sample(self.now, len(self.live))

    def spawn(self, region: str | None = None) -> NodeId | None:
        """A new node joins: a random live member signs its admission and is its seed."""
        if not self.live:
            return None
        live = list(self.live.values())
        sponsor = live[self._churn_rng.randrange(len(live))]
        identity = self._new_identity()
        admission = make_admission(
            sponsor.identity, self.mesh_id, sponsor.next_seq(), identity.node_id, admitted_at=self.now
        )
        self.publish_from(sponsor, admission)
        node = self._make_node(identity, self._new_store())
        self.network.place(identity.node_id, region)
        self.live[identity.node_id] = node
        if self.storage is not None:
            self.storage.joined(node)
        node.membership.join(self.now, [sponsor.node_id])
        node.seed_peers([sponsor.node_id])
        self.detection.started(identity.node_id, self.now, restart=False)
        self.engine.trace(_T_JOIN, node.index, sponsor.index)
        self.engine.attach(node)
        self.population.sample(self.now, len(self.live))
        return identity.node_id

    def restart(self, node_id: NodeId) -> None:
        """A crashed node comes back: same identity and persisted store, fresh cores, rejoins."""
        persisted = self._persisted.pop(node_id, None)
        if persisted is None or node_id in self.live or not self.live:
            return
        identity, _, store = persisted
        live = list(self.live)
        seeds = self._churn_rng.sample(live, min(3, len(live)))
        node = self._make_node(identity, store)
        self.live[node_id] = node
        if self.storage is not None:
            self.storage.node_up(node)
        node.membership.join(self.now, seeds)
        node.seed_peers(seeds)
        self.detection.started(node_id, self.now, restart=True)
        self.engine.trace(_T_RESTART, node.index)
        self.engine.attach(node)
        self.population.sample(self.now, len(self.live))

    # ---- records -----------------------------------------------------------------------------

    def publish_from(self, node: SimNode, record: Record) -> bytes | None:
        """`node` authors `record`: its store must accept it (then it is acknowledged) and push it."""
        accepted = node.author(self.now, record)
        rid = record.signature
        self.engine.trace(_T_PUBLISH, node.index, record.seq)
        if not accepted:
            return None
        self.checker.acknowledged(rid, record, node.node_id)
        self.engine.flush(node, DISSEMINATION)
        return rid

    def publish_random(self, kind: str, key: str, body: bytes) -> None:
        live = list(self.live.values())
        if not live:
            return
        node = live[self._workload_rng.randrange(len(live))]
        record = sign_record(node.identity, self.mesh_id, kind, key, node.next_seq(), body)
        rid = self.publish_from(node, record)
        if rid is not None:
            self.dissemination.published(rid, self.now, self.live_indices())
            self.dissemination.accepted(rid, node.index, self.now)

    def inject_forged(self, record: Record) -> None:
        """Hand a forged record to a random live node as if an honest relay had forwarded it."""
        live = list(self.live.values())
        if len(live) < 2:
            return
        target, relay = self._workload_rng.sample(live, 2)
        self.checker.forged(record.signature, record)
        payload = push_payload(record)
        self.engine.trace(_T_FORGE, target.index)
        delay = self.network.arrival(self.now, relay.node_id, target.node_id, len(payload))
        if delay is not None:
            self.engine.inject(delay, relay.node_id, target.node_id, DISSEMINATION, payload)

    def forge_identity(self) -> NodeIdentity:
        """A key that is never admitted (drawn from its own stream, so it never collides)."""
        return NodeIdentity.from_seed(self._workload_rng.randbytes(32))

    def random_member_identity_id(self) -> NodeId | None:
        live = list(self.live)
        return live[self._workload_rng.randrange(len(live))] if live else None

    # ---- observing the cores -----------------------------------------------------------------

    def _observe(self, now: float, node_id: NodeId, event: Event) -> None:
        match event:
            case MemberChanged(node=member, state=state):
                self.detection.member_event(node_id, now, member, state)
                index = self._index.get(member, 0)
                self.engine.trace(_T_MEMBER, self._index.get(node_id, 0), index, _STATE_CODE.get(state, 9))
            case RecordAccepted(record=record):
                rid = record.signature
                self.checker.accepted(now, node_id, rid)
                index = self._index.get(node_id, 0)
                self.dissemination.accepted(rid, index, now)
                node = self.live.get(node_id)
                if node is not None:
                    self.hub.accepted(now, node_id, node.store, record)
            case BecameHub(term=term):
                self.hub.became_hub(now, node_id, term)
            case SteppedDown(term=term, reason=reason):
                self.hub.stepped_down(now, node_id, term, reason)
            case HubChanged():
                node = self.live.get(node_id)
                if node is not None:
                    self.hub.believed(now, node_id, node.election)


def convergence_bound_s(
    nodes: int, membership: MembershipConfig, dissemination: DisseminationConfig, scenario: Scenario
) -> float:
    """How long after the mesh goes quiet every live node must hold the same records.

    Push-pull anti-entropy with a uniformly random partner per round reaches all n nodes
    in log2(n) + ln(n) + O(1) rounds with high probability (Karp et al., 2000, bound the
    push-pull phase by log3(n) + O(log log n); we take the looser push-only figure). A
    round is one anti-entropy interval plus a round trip; we add three rounds of slack,
    and the time membership needs to declare the last crashed nodes dead (so partners
    are drawn from live nodes): the Lifeguard suspicion maximum plus two periods.
    """
    interval = dissemination.interval_for(nodes)
    latency = scenario.network.latency_median_s * math.exp(2.33 * scenario.network.latency_sigma)
    extra = max((v for v in scenario.network.inter_region_s.values()), default=0.0)
    extra = max(extra, scenario.network.inter_region_default_s)
    rounds = math.ceil(math.log2(max(nodes, 2))) + math.ceil(math.log(max(nodes, 2))) + 3
    _, suspicion_max, _ = membership.suspicion_bounds(nodes)
    period = membership.protocol_period * membership.time_scale(nodes)
    return rounds * (interval + 2 * (latency + extra)) + suspicion_max + 2 * period
