"""Artifact storage in the simulator: shares on nodes, the acting hub's real `StorageCore`, repairs and
audits as timed byte transfers, and the `storage` section of the report (issue 14).

What is real: the checker. The node acting as hub runs the real `protocols.storage.core.StorageCore`
on the storage channel of its `SimNode` (`StorageSlot`), fed through the real wiring
(`protocols.wiring`, rule 7): its own membership core's changes reach it as
`StorageLiveness` feeds, so a crashed holder counts as healthy until that hub's SWIM
declares it dead, as in a real mesh; `BecameHub` / `SteppedDown` give and take the core
(`StorageActing`). Its `RepairDue` and `AuditDue` events are carried out here, as
`mesh/storage_service.py` carries them out in a real node, and the results go back
through `repair_finished` and `audit_result`. The records it reads are real signed
records (`make_artifact`, `make_placement`, `make_storage`, with the nodes' own identities).

What is modelled, and why:

- **Records without gossip.** 2000 artifact records, their placements and a storage
  record per node, re-signed at every change, would be pushed through the simulated
  dissemination to a thousand nodes, and would dominate the run although only the acting
  hub acts on them. So the model keeps the canonical records and hands them to the
  acting hub's core alone: its own records at once, anyone else's `RECORD_DELAY_S` later
  (between the measured median and 99th-percentile push latency at 1000 nodes). A node
  that becomes hub gets a core built at that moment from every canonical record and
  its membership's live set: what gossip would have given the core it keeps in a real
  node, where non-acting cores only store records. Records never enter the simulated
  record stores, so signatures are never verified (no verify-cache traffic either).
- **Shares are bookkeeping, not bytes.** Which node holds which `(artifact, index)`, and
  each share's size in bytes as `kernels.artifact_codec` writes it for content zstd
  cannot shrink (`share_bytes`). Shares live on a node's disk: they survive a crash
  followed by a restart (the churn model restarts some crashed nodes) and are gone with
  a node that leaves or never comes back. Artifacts are uploaded before the run
  (`created_at` a day before t = 0, so none is still settling), placed by the real
  rendezvous hashing (`choose_holders`) over the initial members, with the owner's
  placement record. Every node offers `OFFERED_BYTES` and runs on its own machine (no
  manifests: each node is its own address group). A fraction `liars` of the nodes
  list the shares they are given but keep none.
- **A repair is a transfer by its worker**, as `mesh.storage_service` hands it out: the
  acting hub sends the repair to its first target (one latency), which fetches k shares
  (its own first, then the event's sources in order; a source that is down costs
  `CONNECT_TIMEOUT_S`, one that does not have its share a round trip, before the next
  is tried), rebuilds the missing ones and pushes each to its target. When that target
  is down the hub does the work itself. Bytes move over the worker's link at `bandwidth`
  per direction (default 100 Mbit/s, or the network's `bandwidth`), first come first
  served between the repairs it works on (`_Link`); a source's uplink and a target's
  downlink are assumed not to be the bottleneck (each moves one share at the same
  rate). A source that died during the download is replaced by another share if one
  is left. A pushed share counts once it has arrived at a target that is still
  running; the target's storage record is re-signed and reaches the hub as above. At
  the end the hub publishes a placement of the event's generation (if it still acts)
  and reports `repair_finished`: ok when at least one share was placed. A repair whose
  hub or worker crashes is abandoned (shares already pushed stay). Rebuilding costs no
  time (zfec runs at GB/s); repair traffic does not delay protocol messages (the
  network model's queues are separate).
- **Audits** are answered truthfully one round trip (plus the proof's bytes) later: ok when
  the holder runs and holds the share; a holder that is down fails after
  `AUDIT_TIMEOUT_S`, as `ShareTransfer.audit` times out.
- **Repair off** (`repair = false`, Tahoe's default): the hub checks and audits as usual,
  and every `RepairDue` is dropped.

What is measured (`summary`, the report's `storage` section), all from the true state, not
the hub's view: an artifact is **lost** when fewer than k of its share indices are held
by nodes that are running or will come back (crashed with a restart scheduled): nothing
can bring it back. **Healthy** is the number of share indices a running node holds; time
below the repair threshold, at or below it (repair due) and below k (unavailable) is
integrated exactly over the run, per artifact. Repair bytes are the bytes that arrived
(fetches and pushes that completed), per node per hour over the run's node-hours, and
per node (the busiest is a worker, or the hub when it repairs itself).

Cost: O(shares a node holds) per crash, restart or leave; per repair one signed storage
record per placed share and one placement; building a hub's core O(all records); the
initial placement is one `choose_holders` per artifact (10-20 ms at 1000 nodes: under a
minute of setup for 2000 artifacts). Memory: a few hundred bytes per share and a record per artifact and
per node. With no artifacts the model does not exist and the run is unchanged, digest
included.

Determinism: all choices come from the model's own generator (drawn from the scenario
seed after every other stream, so the others are unchanged), dicts are iterated in
insertion order and no set is iterated.
"""

from __future__ import annotations

import functools
import random
from collections import Counter
from typing import TYPE_CHECKING, Any

from kernels.artifact_codec import CHUNK_BYTES, PREFIX_BYTES, block_size, chunk_count, reserved_header_len
from protocols.common.effects import Event
from protocols.common.identity import NodeId, NodeIdentity
from protocols.records.record import Record
from protocols.storage.config import StorageConfig
from protocols.storage.core import StorageCore
from protocols.storage.events import ArtifactLost, AuditDue, AuditFailed, FreeShares, RepairDue
from protocols.storage.placement import Candidate, adapt_parameters, choose_holders, repair_threshold
from protocols.storage.records import (
    MAX_HOLDINGS,
    ArtifactBody,
    Holding,
    PlacementBody,
    StorageBody,
    make_artifact,
    make_placement,
    make_storage,
)
from protocols.wiring import ChainTerms
from simulations.metrics import percentile
from simulations.scenario import StorageSettings
from simulations.sim_node import SIM_WALL_EPOCH, STORAGE, SimNode

if TYPE_CHECKING:
    from simulations.world import World

DEFAULT_BANDWIDTH_BYTES_PER_S = 100e6 / 8
"""100 Mbit/s each way per node, when neither `[storage] bandwidth` nor `[network] bandwidth` is set."""
OFFERED_BYTES = 100 * 2**30
"""Disk every simulated node offers (100 GiB)."""
RECORD_DELAY_S = 1.0
"""How long another node's storage or placement record takes to reach the acting hub's core."""
AUDIT_TIMEOUT_S = 30.0
"""An audit of a holder that is down fails after this (`mesh.share_transfer.AUDIT_TIMEOUT`)."""
CONNECT_TIMEOUT_S = 5.0
"""A repair's fetch from a source that is down is given up after this."""
UPLOADED_BEFORE_S = 86_400.0
"""The artifacts were uploaded this long before the run starts (none is settling)."""
TRACE_REPAIR = 8
"""Trace tag of a finished repair (after the world's own tags 1-7)."""
TRACE_LOST = 9
"""Trace tag of an artifact becoming lost."""


def share_bytes(size: int, k: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    """Bytes of one share of a `size`-byte artifact coded with `k`, as `kernels.artifact_codec` writes it
    for content zstd cannot shrink (every chunk stored raw): prefix, reserved header, one block a chunk."""
    full, rest = divmod(size, chunk_bytes)
    blocks = full * block_size(chunk_bytes, k) + (block_size(rest, k) if rest else 0)
    return PREFIX_BYTES + reserved_header_len(chunk_count(size, chunk_bytes)) + blocks


class _Artifact:
    """One artifact: its record, its true holders per share index, and its health over time."""

    __slots__ = (
        "below_s",
        "due_s",
        "durable",
        "holders",
        "id",
        "k",
        "live",
        "live_holders",
        "lost_at",
        "n",
        "ordinal",
        "record",
        "since",
        "sizes",
        "threshold",
        "unavailable_s",
    )

    def __init__(self, ordinal: int, artifact_id: bytes, record: Record, k: int, n: int, size: int) -> None:
        self.ordinal = ordinal
        self.id = artifact_id
        self.record = record
        self.k = k
        self.n = n
        self.sizes = (size,) * n
        self.threshold = 0
        self.holders: list[dict[NodeId, None]] = [{} for _ in range(n)]
        """Per index: the nodes that really hold it, running or down with a restart coming."""
        self.live_holders = [0] * n
        """Per index: how many of those run now."""
        self.live = 0
        """Share indices a running node holds (the true health)."""
        self.durable = 0
        """Share indices a running node, or one that will come back, holds."""
        self.lost_at: float | None = None
        self.since = 0.0
        self.below_s = 0.0
        self.due_s = 0.0
        self.unavailable_s = 0.0


class _Holder:
    """One node as a storage holder: what its record lists, what it really keeps, its signed record."""

    __slots__ = ("claimed", "held", "identity", "liar", "record", "seq", "up", "used")

    def __init__(self, identity: NodeIdentity, liar: bool) -> None:
        self.identity = identity
        self.liar = liar
        self.claimed: dict[tuple[int, int], None] = {}
        """(artifact ordinal, index) its storage record lists."""
        self.held: dict[tuple[int, int], None] = {}
        """What it really keeps (nothing for a liar)."""
        self.used = 0
        self.seq = 0
        self.up = True
        self.record: Record | None = None


class _Link:
    """One node's bulk link, each direction first come first served: when it is free again."""

    __slots__ = ("down_free", "up_free")

    def __init__(self) -> None:
        self.down_free = 0.0
        self.up_free = 0.0


class _Repair:
    """One `RepairDue`: decided by the hub that received it, carried out by its worker."""

    __slots__ = (
        "artifact",
        "core",
        "event",
        "fetched",
        "hub",
        "pending",
        "placed",
        "started",
        "tried",
        "worker",
    )

    def __init__(self, hub: SimNode, core: StorageCore | None, artifact: _Artifact, event: RepairDue) -> None:
        self.hub = hub
        self.worker = hub.node_id
        """The node that moves the bytes: the first target, as `mesh.storage_service` hands it out
        (the hub itself when that target is down)."""
        self.core = core
        self.artifact = artifact
        self.event = event
        self.started = 0.0
        self.fetched: dict[int, None] = {}
        """Share indices fetched or being fetched."""
        self.tried: dict[tuple[int, NodeId], None] = {}
        self.pending = 0
        self.placed = 0


class StorageModel:
    """The world's storage: holdings, the acting hubs' cores, repairs and audits, and the measurements."""

    def __init__(
        self, world: World, settings: StorageSettings, config: StorageConfig, rng: random.Random
    ) -> None:
        self._world = world
        self.settings = settings
        self.config = config
        self._rng = rng
        network = world.scenario.network
        self.bandwidth = (
            settings.bandwidth_bytes_per_s or network.bandwidth_bytes_per_s or DEFAULT_BANDWIDTH_BYTES_PER_S
        )
        self._latency = network.latency_median_s
        self._rtt = 2 * network.latency_median_s
        self._artifacts: list[_Artifact] = []
        self._by_id: dict[bytes, _Artifact] = {}
        self._placements: dict[int, Record] = {}
        """Artifact ordinal -> its current placement record."""
        self._nodes: dict[NodeId, _Holder] = {}
        self._links: dict[NodeId, _Link] = {}
        self._hubs: dict[NodeId, SimNode] = {}
        """Nodes whose storage slot holds a core now (the acting hub; two during a handover)."""
        self._running: dict[tuple[NodeId, int], None] = {}
        self._placement_seq: Counter[NodeId] = Counter()
        self.k = settings.k
        self.n = settings.n
        self.share_size = 0
        self.proof_size = 0
        """Bytes of an audit's answer: the share's header and one block."""
        self.counters: Counter[str] = Counter()
        self.core_counters: Counter[str] = Counter()
        """The counters of every core that was retired (added to the live ones' at the end)."""
        self.node_bytes: Counter[NodeId] = Counter()
        """Repair bytes each node sent or received."""
        self.durations: list[float] = []
        self.min_healthy: int | None = None
        self.first_loss_at: float | None = None

    # ---- the initial upload -----------------------------------------------------------------

    def bootstrap(self) -> None:
        """Upload every artifact before the run: records, HRW placement over the initial members."""
        world = self._world
        now = world.now
        nodes = list(world.live.values())
        for node in nodes:
            self._nodes[node.node_id] = _Holder(node.identity, self._rng.random() < self.settings.liars)
        self.k, self.n = adapt_parameters(self.settings.k, self.settings.n, len(nodes))
        size = self.settings.artifact_bytes
        self.share_size = share_bytes(size, self.k)
        self.proof_size = reserved_header_len(chunk_count(size, CHUNK_BYTES)) + block_size(
            min(size, CHUNK_BYTES), self.k
        )
        created = SIM_WALL_EPOCH + now - UPLOADED_BEFORE_S
        candidates = {node.node_id: Candidate(OFFERED_BYTES, node.node_id.hex()) for node in nodes}
        for ordinal in range(self.settings.artifacts):
            artifact_id = self._rng.randbytes(32)
            owner = nodes[self._rng.randrange(len(nodes))]
            body = ArtifactBody(
                name=f"sim-{ordinal}",
                size=size,
                chunk_bytes=CHUNK_BYTES,
                chunk_count=chunk_count(size, CHUNK_BYTES),
                k=self.k,
                n=self.n,
                share_roots=[self._rng.randbytes(32) for _ in range(self.n)],
                share_sizes=[self.share_size] * self.n,
                created_at=created,
                expires_at=created + self.config.default_ttl_s,
            )
            record = make_artifact(owner.identity, world.mesh_id, 1, artifact_id, body)
            artifact = _Artifact(ordinal, artifact_id, record, self.k, self.n, self.share_size)
            artifact.threshold = repair_threshold(self.k, self.n, self.config.repair_margin)
            artifact.since = now
            self._artifacts.append(artifact)
            self._by_id[artifact_id] = artifact
            placed = choose_holders(
                artifact_id, range(self.n), candidates, exclude=set(), share_size=self.share_size
            )
            for index, holder_id in placed.items():
                self._take(artifact, index, holder_id, now)
                room = candidates[holder_id]
                candidates[holder_id] = Candidate(room.free_bytes - self.share_size, room.address_group)
            holders = [placed.get(index, b"") for index in range(self.n)]
            self._placements[ordinal] = self._placement(owner, artifact, 1, 0, holders)
        for node_id, holder in self._nodes.items():
            holder.record = self._storage_record(node_id, holder)
        self.min_healthy = min((artifact.live for artifact in self._artifacts), default=None)

    def _placement(
        self, author: SimNode, artifact: _Artifact, generation: int, term: int, holders: list[bytes]
    ) -> Record:
        self._placement_seq[author.node_id] += 1
        body = PlacementBody(generation=generation, term=term, holders=holders)
        return make_placement(
            author.identity, self._world.mesh_id, self._placement_seq[author.node_id], artifact.id, body
        )

    def _storage_record(self, node_id: NodeId, holder: _Holder) -> Record:
        holder.seq += 1
        body = StorageBody(
            offered_bytes=OFFERED_BYTES,
            used_bytes=holder.used,
            accepting=holder.used + self.share_size <= OFFERED_BYTES and len(holder.claimed) < MAX_HOLDINGS,
            refusal="",
            holdings=[Holding(self._artifacts[ordinal].id, index) for ordinal, index in holder.claimed],
        )
        return make_storage(holder.identity, self._world.mesh_id, holder.seq, body)

    # ---- shares: who really holds what ------------------------------------------------------

    def _take(self, artifact: _Artifact, index: int, node_id: NodeId, now: float) -> bool:
        """`node_id` (running) is given share `index`: it lists it, and keeps it unless it lies.
        False when it listed it already."""
        holder = self._nodes[node_id]
        key = (artifact.ordinal, index)
        if key in holder.claimed:
            return False
        holder.claimed[key] = None
        holder.used += artifact.sizes[index]
        if holder.liar:
            return True
        holder.held[key] = None
        holders = artifact.holders[index]
        holders[node_id] = None
        if len(holders) == 1:
            artifact.durable += 1
            if artifact.lost_at is not None and artifact.durable >= artifact.k:
                artifact.lost_at = None  # a repair that had fetched k shares before they died
                self.counters["recovered_after_loss"] += 1
        artifact.live_holders[index] += 1
        if artifact.live_holders[index] == 1:
            self._set_live(artifact, artifact.live + 1, now)
        return True

    def _set_live(self, artifact: _Artifact, live: int, now: float) -> None:
        elapsed = now - artifact.since
        if elapsed > 0:
            if artifact.live < artifact.k:
                artifact.unavailable_s += elapsed
            if artifact.live < artifact.threshold:
                artifact.below_s += elapsed
            if artifact.live <= artifact.threshold:
                artifact.due_s += elapsed
        artifact.since = now
        artifact.live = live
        if self.min_healthy is not None and live < self.min_healthy:
            self.min_healthy = live

    def node_down(self, node: SimNode, permanent: bool) -> None:
        """`node` stopped (crash or leave); `permanent`: it never comes back and its disk is gone."""
        now = self._world.now
        self._retire(node)
        holder = self._nodes.get(node.node_id)
        if holder is None or not holder.up:
            return
        holder.up = False
        for ordinal, index in holder.held:
            artifact = self._artifacts[ordinal]
            artifact.live_holders[index] -= 1
            if artifact.live_holders[index] == 0:
                self._set_live(artifact, artifact.live - 1, now)
            if permanent:
                holders = artifact.holders[index]
                del holders[node.node_id]
                if not holders:
                    artifact.durable -= 1
                    if artifact.durable < artifact.k and artifact.lost_at is None:
                        artifact.lost_at = now
                        if self.first_loss_at is None:
                            self.first_loss_at = now
                        self._world.engine.trace(TRACE_LOST, artifact.ordinal)
        if permanent:
            holder.held = {}

    def node_up(self, node: SimNode) -> None:
        """A crashed node restarted: its disk, and the shares on it, are back."""
        now = self._world.now
        holder = self._nodes.get(node.node_id)
        if holder is None or holder.up:
            return
        holder.up = True
        for ordinal, index in holder.held:
            artifact = self._artifacts[ordinal]
            artifact.live_holders[index] += 1
            if artifact.live_holders[index] == 1:
                self._set_live(artifact, artifact.live + 1, now)

    def joined(self, node: SimNode) -> None:
        """A new node: it offers room and holds nothing; its storage record goes out."""
        holder = _Holder(node.identity, self._rng.random() < self.settings.liars)
        self._nodes[node.node_id] = holder
        record = self._storage_record(node.node_id, holder)
        holder.record = record
        self._deliver(record, node.node_id)

    # ---- records reaching the acting hub ----------------------------------------------------

    def _deliver(self, record: Record, author: NodeId) -> None:
        """A record `author` signed: its own core has it at once, every other after `RECORD_DELAY_S`."""
        hub = self._hubs.get(author)
        if hub is not None and hub.storage.core is not None:
            hub.storage.core.on_record(self._world.now, record)
            self.kick(hub)
        arrive = functools.partial(self._arrive, record, author)
        self._world.schedule(self._world.now + RECORD_DELAY_S, arrive)

    def _arrive(self, record: Record, author: NodeId) -> None:
        now = self._world.now
        for node_id, hub in list(self._hubs.items()):
            core = hub.storage.core
            if node_id != author and core is not None:
                core.on_record(now, record)
                self.kick(hub)

    def _build_core(self, node: SimNode, now: float, term: int) -> StorageCore:
        """The core a node keeps in a real mesh, as gossip would have filled it, now acting."""
        core = StorageCore(
            node.node_id,
            random.Random(self._rng.getrandbits(64)),
            self.config,
            hub_of=ChainTerms(node.election.chain).hub_of,
        )
        core.set_wall_clock(SIM_WALL_EPOCH + now)
        for artifact in self._artifacts:
            core.on_record(now, artifact.record)
        for record in self._placements.values():
            core.on_record(now, record)
        for holder in self._nodes.values():
            if holder.record is not None:
                core.on_record(now, holder.record)
        core.set_live_members(now, node.membership.live_peers())
        core.set_acting(now, True, term)
        return core

    # ---- StorageHost ----------------------------------------------------------------------------

    def acting(self, node: SimNode, now: float, acting: bool, term: int) -> None:
        slot = node.storage
        if acting:
            if slot.core is None:
                slot.core = self._build_core(node, now, term)
                self._hubs[node.node_id] = node
                self.counters["hub_cores_built"] += 1
            else:
                slot.core.set_acting(now, True, term)
            self.kick(node)
        else:
            self._retire(node)

    def _retire(self, node: SimNode) -> None:
        core = node.storage.core
        if core is None:
            return
        node.storage.core = None
        self._hubs.pop(node.node_id, None)
        self.core_counters.update(core.counters)

    def kick(self, node: SimNode) -> None:
        slot = node.storage
        if slot.kick_pending:
            return
        slot.kick_pending = True
        self._world.schedule(self._world.now, functools.partial(self._flush, node))

    def _flush(self, node: SimNode) -> None:
        node.storage.kick_pending = False
        if node.alive and node.storage.core is not None:
            self._world.engine.flush(node, STORAGE)

    def on_storage_event(self, node: SimNode, now: float, event: Event) -> None:
        match event:
            case RepairDue():
                self._on_repair_due(node, now, event)
            case AuditDue():
                self._on_audit_due(node, now, event)
            case ArtifactLost():
                self.counters["declared_lost"] += 1
            case AuditFailed():
                self.counters["audit_failed_events"] += 1
            case FreeShares():
                self.counters["free_shares"] += 1

    # ---- repairs ----------------------------------------------------------------------------

    def _on_repair_due(self, hub: SimNode, now: float, event: RepairDue) -> None:
        if not self.settings.repair:
            self.counters["repairs_dropped"] += 1
            return
        artifact = self._by_id.get(event.artifact_id)
        if artifact is None:
            return
        key = (hub.node_id, artifact.ordinal)
        if key in self._running:  # the service runs one repair of an artifact at a time
            self.counters["repairs_already_running"] += 1
            return
        self._running[key] = None
        job = _Repair(hub, hub.storage.core, artifact, event)
        job.started = now
        self.counters["repairs_started"] += 1
        if event.targets and event.targets[0][1] in self._world.live:
            job.worker = event.targets[0][1]
        if job.worker != hub.node_id:  # the RepairRequest reaches the worker
            self.counters["repairs_delegated"] += 1
            self._world.schedule(
                now + self._latency, functools.partial(self._fetch, job, now + self._latency)
            )
            return
        self._fetch(job, now)

    def _hub_alive(self, job: _Repair) -> bool:
        return self._world.live.get(job.hub.node_id) is job.hub

    def _working(self, job: _Repair) -> bool:
        """The hub still acts for it and its worker still runs."""
        return self._hub_alive(job) and job.worker in self._world.live

    def _link(self, node_id: NodeId) -> _Link:
        link = self._links.get(node_id)
        if link is None:
            link = self._links[node_id] = _Link()
        return link

    def _fetch(self, job: _Repair, now: float) -> None:
        """Fetch shares until k are in hand: the worker's own first, then the event's sources in order."""
        artifact = job.artifact
        hub = job.worker
        live = self._world.live
        delay = 0.0
        remote: list[tuple[int, NodeId]] = []
        for own_only in (True, False):
            for index, holder in job.event.sources:
                if len(job.fetched) >= artifact.k:
                    break
                if (holder == hub) != own_only or index in job.fetched or (index, holder) in job.tried:
                    continue
                job.tried[(index, holder)] = None
                if holder in artifact.holders[index] and holder in live:
                    job.fetched[index] = None
                    if holder != hub:
                        remote.append((index, holder))
                elif holder not in live:
                    delay += CONNECT_TIMEOUT_S
                else:
                    delay += self._rtt  # it runs, but has no such share: a refusal
        if len(job.fetched) < artifact.k:
            self._world.schedule(now + delay, functools.partial(self._finish, job, False))
            return
        size = sum(artifact.sizes[index] for index, _ in remote)
        link = self._link(hub)
        start = max(now + delay + (self._rtt if remote else 0.0), link.down_free)
        done = start + size / self.bandwidth
        link.down_free = done
        self._world.schedule(done, functools.partial(self._fetched, job, remote))

    def _fetched(self, job: _Repair, remote: list[tuple[int, NodeId]]) -> None:
        now = self._world.now
        if not self._working(job):
            self._finish(job, False)
            return
        live = self._world.live
        hub = job.worker
        failed = False
        for index, holder in remote:
            if holder in live:
                self._count_bytes(holder, hub, job.artifact.sizes[index])
            else:
                del job.fetched[index]
                failed = True
        if failed:
            self._fetch(job, now)
            return
        self._push(job, now)

    def _push(self, job: _Repair, now: float) -> None:
        """Push each rebuilt share to its target, one after the other over the worker's uplink."""
        artifact = job.artifact
        hub = job.worker
        link = self._link(hub)
        job.pending = len(job.event.targets)
        if not job.pending:
            self._finish(job, False)
            return
        for index, target in job.event.targets:
            if target == hub:
                self._world.schedule(now, functools.partial(self._pushed, job, index, target))
                continue
            start = max(now, link.up_free)
            link.up_free = start + artifact.sizes[index] / self.bandwidth
            self._world.schedule(
                link.up_free + self._latency, functools.partial(self._pushed, job, index, target)
            )

    def _pushed(self, job: _Repair, index: int, target: NodeId) -> None:
        now = self._world.now
        job.pending -= 1
        if self._working(job):
            if target in self._world.live:
                artifact = job.artifact
                if target != job.worker:
                    self._count_bytes(job.worker, target, artifact.sizes[index])
                if self._take(artifact, index, target, now):
                    holder = self._nodes[target]
                    holder.record = self._storage_record(target, holder)
                    self._deliver(holder.record, target)
                job.placed += 1
                self.counters["shares_rebuilt"] += 1
            else:
                self.counters["pushes_failed"] += 1
        if job.pending == 0:
            self._finish(job, job.placed > 0)

    def _finish(self, job: _Repair, ok: bool) -> None:
        now = self._world.now
        artifact = job.artifact
        self._running.pop((job.hub.node_id, artifact.ordinal), None)
        self.durations.append(now - job.started)
        if not self._hub_alive(job):
            self.counters["repairs_abandoned"] += 1
            return
        hub = job.hub
        term = hub.election.acting_term(now)
        core = hub.storage.core
        if ok and term is not None and core is not None:
            view = core.artifact(artifact.id)
            holders = [b""] * artifact.n
            if view is not None:
                for index, nodes in view.holders.items():
                    holders[index] = nodes[0]
            for index, target in job.event.targets:
                holders[index] = target
            record = self._placement(hub, artifact, job.event.generation, term, holders)
            self._placements[artifact.ordinal] = record
            self._deliver(record, hub.node_id)
        else:
            ok = False
        self.counters["repairs_ok" if ok else "repairs_failed"] += 1
        self._world.engine.trace(TRACE_REPAIR, hub.index, artifact.ordinal, job.placed, int(ok))
        if core is not None:
            core.repair_finished(now, artifact.id, ok)
            self.kick(hub)

    def _count_bytes(self, sender: NodeId, receiver: NodeId, size: int) -> None:
        self.counters["repair_bytes"] += size
        self.node_bytes[sender] += size
        self.node_bytes[receiver] += size

    # ---- audits -----------------------------------------------------------------------------

    def _on_audit_due(self, hub: SimNode, now: float, event: AuditDue) -> None:
        artifact = self._by_id.get(event.artifact_id)
        holder = event.holder
        self.counters["audits"] += 1
        if holder in self._world.live:
            ok = artifact is not None and holder in artifact.holders[event.index]
            self.counters["audit_bytes"] += self.proof_size
            answered = now + self._rtt + self.proof_size / self.bandwidth
        else:
            ok = False
            answered = now + AUDIT_TIMEOUT_S
        self.counters["audits_ok" if ok else "audits_not_ok"] += 1
        self._world.schedule(
            answered, functools.partial(self._audit_answered, hub, hub.storage.core, event, ok)
        )

    def _audit_answered(self, hub: SimNode, core: StorageCore | None, event: AuditDue, ok: bool) -> None:
        if core is None or not hub.alive or hub.storage.core is not core:
            return
        core.audit_result(self._world.now, event.holder, event.artifact_id, event.index, ok)
        self.kick(hub)

    # ---- the report -------------------------------------------------------------------------

    def finish(self) -> None:
        """Close the books at the end of the run: health time up to now, the live cores' counters."""
        now = self._world.now
        for artifact in self._artifacts:
            self._set_live(artifact, artifact.live, now)
        for hub in list(self._hubs.values()):
            self._retire(hub)

    def summary(self, duration_s: float, node_seconds: float) -> dict[str, Any]:
        """The report's `storage` section (call `finish` first)."""
        artifacts = self._artifacts
        count = len(artifacts)
        artifact_seconds = count * duration_s
        node_hours = node_seconds / 3600.0
        repair_bytes = self.counters["repair_bytes"]
        busiest = self.node_bytes.most_common(1)
        healthy: Counter[int] = Counter(artifact.live for artifact in artifacts)
        counters = self.counters

        def share(value: float) -> float | None:
            return value / artifact_seconds if artifact_seconds > 0 else None

        below = sum(artifact.below_s for artifact in artifacts)
        due = sum(artifact.due_s for artifact in artifacts)
        unavailable = sum(artifact.unavailable_s for artifact in artifacts)
        return {
            "artifacts": count,
            "artifact_bytes": self.settings.artifact_bytes,
            "k": self.k,
            "n": self.n,
            "share_bytes": self.share_size,
            "stored_bytes": count * self.n * self.share_size,
            "repair": self.settings.repair,
            "repair_threshold": repair_threshold(self.k, self.n, self.config.repair_margin),
            "bandwidth_bytes_per_s": self.bandwidth,
            "liar_nodes": sum(1 for holder in self._nodes.values() if holder.liar),
            "lost": sum(1 for artifact in artifacts if artifact.lost_at is not None),
            "first_loss_s": self.first_loss_at,
            "unavailable_at_end": sum(1 for artifact in artifacts if artifact.live < artifact.k),
            "min_healthy": self.min_healthy,
            "healthy_at_end": {str(value): healthy[value] for value in sorted(healthy)},
            "below_threshold_artifact_s": below,
            "below_threshold_fraction": share(below),
            "repair_due_artifact_s": due,
            "repair_due_fraction": share(due),
            "unavailable_artifact_s": unavailable,
            "unavailable_fraction": share(unavailable),
            "repairs_started": counters["repairs_started"],
            "repairs_ok": counters["repairs_ok"],
            "repairs_failed": counters["repairs_failed"],
            "repairs_abandoned": counters["repairs_abandoned"],
            "repairs_dropped": counters["repairs_dropped"],
            "shares_rebuilt": counters["shares_rebuilt"],
            "pushes_failed": counters["pushes_failed"],
            "repair_p50_s": percentile(self.durations, 50),
            "repair_p95_s": percentile(self.durations, 95),
            "repair_bytes": repair_bytes,
            "repair_bytes_per_hour": repair_bytes / (duration_s / 3600.0) if duration_s > 0 else None,
            "repair_bytes_per_node_per_hour": repair_bytes / node_hours if node_hours > 0 else None,
            "busiest_node_repair_bytes": busiest[0][1] if busiest else 0,
            "busiest_node_repair_bytes_per_s": busiest[0][1] / duration_s if busiest and duration_s else 0.0,
            "declared_lost": counters["declared_lost"],
            "audits": counters["audits"],
            "audits_not_ok": counters["audits_not_ok"],
            "audit_bytes": counters["audit_bytes"],
            "hub_cores_built": counters["hub_cores_built"],
            "recovered_after_loss": counters["recovered_after_loss"],
            "core_counters": dict(sorted(self.core_counters.items())),
        }
