"""The storage checker (sans-IO): which artifacts are at risk, which need repair, whom to audit, what to free.

State arrives as records, not messages: artifact, placement and storage records (and
manifests, for the machine each node runs on), fed through `on_record` as the record
store accepts them, plus membership (`set_live_members`, `member_changed`). Every node
may keep a core; only the acting hub's (`set_acting`) checks and audits.

The check (acting hub only). An artifact's health is the number of its share indices
held, per the holders' own storage records, by at least one live node whose audit of
that share has not failed within `audit_penalty_s`. Below k it is lost (`ArtifactLost`,
once until it recovers); at or below `repair_threshold(k, n, repair_margin)` a repair is
due. Repairs go most at-risk first, ordered by `(healthy - k, healthy / n)`: the
fewest losses from death, then the least spare redundancy. At most
`max_concurrent_repairs` are in flight; one is released by `repair_finished` or after
`repair_timeout_s`, and a failed one is retried at the next check. A `RepairDue` names
every healthy `(index, holder)` as a source and rendezvous-hashed targets among live
accepting nodes that hold nothing of the artifact (`placement.choose_holders`).
Artifacts younger than `settle_s` (wall time since their `created_at`) are not judged:
right after an upload the holders' storage records are still spreading.

Why only records and audits: a storage record is the holder's own claim, signed but not
proven. A member that lists shares it does not hold makes the artifact look healthier
than it is, until an audit (one random held share every `audit_interval_s`) fails:
then that share stops counting, the holder's failure count (`failures`, for the market)
rises, and a repair follows at the next check. Nothing else in the records can hurt
an owner: only the owner's own slot can delete its artifact (another member's record
with the same key is another owner's entry, kept apart; shares are freed only when no
owner keeps the artifact alive), and a placement counts only when its author is the
owner or the hub of the term it names (`hub_of`).

Freeing (every node): once every owner's record of an artifact this node holds is a
tombstone or expired (on the wall clock handed in by `set_wall_clock`), the core emits
`FreeShares` once.

Cost. Per record: O(1) for artifact and placement records (bodies are decoded once per
process and shared, `records`), O(holdings) for a storage record on the acting hub (a
diff against the author's previous holdings, to maintain the index artifact -> index ->
holders), O(1) elsewhere. Holder -> artifacts is the storage records themselves, so a
death marks just that holder's artifacts for a check, at once. A check walks the
artifacts marked since the last one (records, deaths, audits, repairs) and, every
`full_check_interval_s`, all of them: O(n) each. An audit is O(1) expected. The
reverse index exists only while acting (built in O(all holdings) when the node starts
acting), so a thousand non-acting cores keep only their records. Queries are O(all
holdings) on a node that is not acting.

Determinism: all randomness comes from the `rng` handed in, every dict iterated is
insertion-ordered and no set is ever iterated.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from protocols.common.identity import NodeId
from protocols.common.wire import WireError
from protocols.records.manifest import MANIFEST, manifest_body
from protocols.records.record import Record
from protocols.storage.config import StorageConfig
from protocols.storage.events import (
    ArtifactLost,
    AuditDue,
    AuditFailed,
    FreeShares,
    RepairDue,
    StorageEvent,
)
from protocols.storage.placement import Candidate, address_group, choose_holders, repair_threshold
from protocols.storage.records import (
    ARTIFACT,
    PLACEMENT,
    STORAGE,
    ArtifactBody,
    PlacementBody,
    StorageBody,
    artifact_body,
    artifact_id_of,
    placement_body,
    storage_body,
)

AUDIT_ATTEMPTS = 8
"""Random picks an audit makes before giving up for this round (a dead holder, an unknown artifact)."""

B = TypeVar("B")

HolderIndex = dict[bytes, dict[int, tuple[NodeId, ...]]]
"""artifact id -> share index -> the nodes whose storage records list it."""


@dataclass(frozen=True, slots=True)
class ArtifactView:
    """One owner's artifact as this node sees it (status, CLI, `get`)."""

    artifact_id: bytes
    owner: NodeId
    name: str
    size: int
    k: int
    n: int
    healthy: int
    survives: int
    """Further holder losses it survives (`healthy - k`), or -1 when already lost."""
    holders: dict[int, tuple[NodeId, ...]]
    """Live holders per share index whose audit has not failed (indices without one are absent)."""
    deleted: bool
    expires_at: float
    placement_generation: int
    """Generation of the current placement (0: none known)."""
    expired: bool = False
    placement: tuple[bytes, ...] = ()
    """The current placement's holder per index (b"" for none); () when none is known."""
    body: ArtifactBody | None = None
    """The record body: share roots and sizes, chunking, timestamps."""


class _Slot(Generic[B]):
    """The newest record of one `(author, kind, key)` slot, linked to the next author's slot of the same key.

    Mutable and chained rather than a tuple per key: one object per record is all a
    core keeps beside the shared decoded body (a thousand simulated cores add up).
    """

    __slots__ = ("author", "body", "other", "seq")

    def __init__(self, author: NodeId, seq: int, body: B) -> None:
        self.author = author
        self.seq = seq
        self.body = body
        self.other: _Slot[B] | None = None


def _chain(head: _Slot[B] | None) -> Iterator[_Slot[B]]:
    while head is not None:
        yield head
        head = head.other


def _keep(table: dict[bytes, _Slot[B]], key: bytes, record: Record, body: B) -> str:
    """Put `record` in its slot of `table[key]`: "new" (first of the key), "other" (another author's
    first), "newer" (replaces an older seq) or "stale" (kept nothing)."""
    head = table.get(key)
    if head is None:
        table[key] = _Slot(record.author, record.seq, body)
        return "new"
    slot: _Slot[B] = head
    while True:
        if slot.author == record.author:
            if record.seq <= slot.seq:
                return "stale"
            slot.seq, slot.body = record.seq, body
            return "newer"
        if slot.other is None:
            slot.other = _Slot(record.author, record.seq, body)
            return "other"
        slot = slot.other


class _Offer:
    """One node's storage record (the newest seq of its slot)."""

    __slots__ = ("body", "seq")

    def __init__(self, seq: int, body: StorageBody) -> None:
        self.seq = seq
        self.body = body


_Entry = _Slot[ArtifactBody]
_Placement = _Slot[PlacementBody]


class StorageCore:
    """Sans-IO storage checker for one node: feed records, membership and time; drain events.

    Inputs: `on_record`, `set_live_members` / `member_changed`, `set_acting`,
    `set_wall_clock`, `set_local_holdings`, `repair_finished`, `audit_result`, `tick`.
    Outputs (`drain`): the events of `protocols.storage.events`. `receive` ignores
    everything: storage has no gossip of its own.
    """

    def __init__(
        self,
        self_id: NodeId,
        rng: random.Random,
        config: StorageConfig | None = None,
        *,
        hub_of: Callable[[int], NodeId | None] = lambda term: None,
    ) -> None:
        self.self_id = self_id
        self.rng = rng
        self.config = config or StorageConfig()
        self.hub_of = hub_of
        self.counters: Counter[str] = Counter()
        self._effects: list[StorageEvent] = []
        self._now = 0.0
        self._wall: float | None = None
        self._artifacts: dict[bytes, _Entry] = {}
        """artifact id -> the first owner's entry, chained to later owners' in the order first seen."""
        self._placements: dict[bytes, _Placement] = {}
        self._storage: dict[NodeId, _Offer] = {}
        self._groups: dict[NodeId, tuple[int, str]] = {}
        """node -> (manifest seq, address group)."""
        self._live: dict[NodeId, None] = {}
        self._holder_list: list[NodeId] = []
        self._holder_pos: dict[NodeId, int] = {}
        """Nodes whose storage record lists holdings (a list, for O(1) random audit picks)."""
        self._local: dict[bytes, None] = {}
        self._local_told = False
        """Once `set_local_holdings` was called, it (not our own storage record) says what we hold."""
        self._freed: set[bytes] = set()
        self._local_expiry: float | None = None
        self._local_expiry_stale = True
        self._acting = False
        self._term = 0
        self._index: HolderIndex | None = None
        self._dirty: dict[bytes, None] = {}
        self._next_check = 0.0
        self._next_full = 0.0
        self._next_audit = 0.0
        self._in_flight: dict[bytes, float] = {}
        self._lost: set[bytes] = set()
        self._penalties: dict[tuple[NodeId, bytes, int], float] = {}
        self._failures: Counter[NodeId] = Counter()

    # ----------------------------------------------------------------- SansIOCore

    def receive(self, now: float, sender: NodeId, message: Any) -> None:
        """Storage has no gossip of its own: its state arrives as records (`on_record`)."""
        self._now = now

    def drain(self) -> list[Any]:
        effects, self._effects = self._effects, []
        return effects

    def next_deadline(self) -> float | None:
        deadlines: list[float] = []
        if self._acting:
            deadlines += [self._next_check, self._next_audit]
            if self._in_flight:
                deadlines.append(min(self._in_flight.values()) + self.config.repair_timeout_s)
        expiry = self._local_expiry_wall()
        if expiry is not None and self._wall is not None:
            deadlines.append(self._now + max(0.0, expiry - self._wall))
        return min(deadlines) if deadlines else None

    def tick(self, now: float) -> None:
        self._now = now
        self._free_expired()
        if not self._acting:
            return
        for artifact_id, started in list(self._in_flight.items()):
            if now >= started + self.config.repair_timeout_s:
                del self._in_flight[artifact_id]
                self.counters["repair_timeouts"] += 1
                self._dirty[artifact_id] = None
        if now >= self._next_check:
            self._next_check = now + self.config.check_interval_s
            self._check(now)
        if now >= self._next_audit:
            self._next_audit = now + self.config.audit_interval_s
            self._audit()

    # ----------------------------------------------------------------- inputs

    def on_record(self, now: float, record: Record) -> None:
        """An accepted record: artifact, placement, storage and manifest kinds matter; malformed ones are
        counted, never raised."""
        self._now = now
        kind = record.kind
        if kind == ARTIFACT:
            self._on_artifact(record)
        elif kind == PLACEMENT:
            self._on_placement(record)
        elif kind == STORAGE:
            self._on_storage(record)
        elif kind == MANIFEST:
            self._on_manifest(record)

    def set_live_members(self, now: float, members: Iterable[NodeId]) -> None:
        """The live members as membership sees them now (a death or leave marks the dead node's artifacts)."""
        self._now = now
        live = dict.fromkeys(members)
        gone = [node for node in self._live if node not in live]
        came = [node for node in live if node not in self._live]
        self._live = live
        for node in gone:
            self._holder_news(now, node, died=True)
        for node in came:
            self._holder_news(now, node, died=False)

    def member_changed(self, now: float, node: NodeId, live: bool) -> None:
        """One member became live (`live`) or dead / left (not `live`)."""
        self._now = now
        if live and node not in self._live:
            self._live[node] = None
            self._holder_news(now, node, died=False)
        elif not live and node in self._live:
            del self._live[node]
            self._holder_news(now, node, died=True)

    def set_acting(self, now: float, acting: bool, term: int) -> None:
        """This node acts as hub of `term` (or stopped): only then does it check and audit."""
        self._now = now
        self._term = term
        if acting and not self._acting:
            self._index = self._build_index()
            self._dirty = {}
            self._next_check = now
            self._next_full = now
            self._next_audit = now + self.config.audit_interval_s
        elif not acting and self._acting:
            self._index = None
            self._dirty = {}
            self._in_flight = {}
        self._acting = acting

    def set_wall_clock(self, wall_now: float) -> None:
        """The wall time now (expiry and settling are judged on it; call it before `tick`)."""
        self._wall = wall_now

    def set_local_holdings(self, holdings: Iterable[tuple[bytes, int]]) -> None:
        """What this node's share store holds, `(artifact id, index)` pairs (at start and after changes)."""
        self._local_told = True
        self._set_local(dict.fromkeys(artifact_id for artifact_id, _index in holdings))

    def repair_finished(self, now: float, artifact_id: bytes, ok: bool) -> None:
        """The repair of `artifact_id` ended; a failed one is retried at the next check."""
        self._now = now
        if self._in_flight.pop(artifact_id, None) is None:
            return
        self.counters["repairs_done" if ok else "repairs_failed"] += 1
        if self._acting:
            # A slot is free: the next artifact waiting for one starts now, not at the next
            # check (repairs queued behind the concurrency limit would otherwise idle). A
            # repaired artifact is not among them: its new holders' storage records are still
            # on their way, and judged before they arrive it would be repaired twice (the full
            # check catches a repair that placed fewer shares than it should have).
            if not ok:
                self._dirty[artifact_id] = None
            self._next_check = min(self._next_check, now)

    def audit_result(self, now: float, holder: NodeId, artifact_id: bytes, index: int, ok: bool) -> None:
        """How an audit went. A failure stops the share counting for `audit_penalty_s` (or until an
        audit of it passes) and adds to the holder's failures."""
        self._now = now
        key = (holder, artifact_id, index)
        if ok:
            self.counters["audits_passed"] += 1
            if self._penalties.pop(key, None) is not None and self._acting:
                self._dirty[artifact_id] = None
            return
        self._failures[holder] += 1
        self._penalties[key] = now
        self.counters["audits_failed"] += 1
        self._effects.append(AuditFailed(holder, artifact_id, index, self._failures[holder]))
        if self._acting:
            self._dirty[artifact_id] = None

    def set_address_group(self, node: NodeId, group: str) -> None:
        """Name the machine `node` runs on (a driver without manifests; a newer manifest overrides it)."""
        seq = self._groups.get(node, (0, ""))[0]
        self._groups[node] = (seq, group)

    # ----------------------------------------------------------------- queries

    def artifact(self, artifact_id: bytes, owner: NodeId | None = None) -> ArtifactView | None:
        """`owner`'s entry of `artifact_id`; without `owner`, this node's own, else the one the checker
        follows (the first seen that is neither deleted nor expired), else the first seen."""
        entry = self._pick(artifact_id, owner)
        if entry is None:
            return None
        return self._view(artifact_id, entry, self._holders_of(artifact_id))

    def artifacts(self) -> list[ArtifactView]:
        """Every owner's entry of every artifact (tombstones included)."""
        index = self._index if self._index is not None else self._build_index()
        return [
            self._view(artifact_id, entry, index.get(artifact_id, {}))
            for artifact_id, head in self._artifacts.items()
            for entry in _chain(head)
        ]

    def placement(self, artifact_id: bytes, owner: NodeId | None = None) -> PlacementBody | None:
        """The current placement of the artifact (see `records`), or None when none is valid."""
        entry = self._pick(artifact_id, owner)
        if entry is None:
            return None
        current = self._current_placement(artifact_id, entry)
        return None if current is None else current.body

    def storage_nodes(self) -> dict[NodeId, Candidate]:
        """Live nodes (this one included) that offer storage and accept shares, with their free room."""
        nodes: dict[NodeId, Candidate] = {}
        for node, signed in self._storage.items():
            offer = signed.body
            if offer.offered_bytes > 0 and offer.accepting and self._is_live(node):
                free = max(0, offer.offered_bytes - offer.used_bytes)
                nodes[node] = Candidate(free, self._group(node))
        return nodes

    def storage_offer(self, node: NodeId) -> StorageBody | None:
        """`node`'s newest storage record body."""
        signed = self._storage.get(node)
        return None if signed is None else signed.body

    def place(
        self, artifact_id: bytes, n: int, share_size: int, exclude: Iterable[NodeId] = ()
    ) -> dict[int, NodeId]:
        """Holders for shares 0..n-1 of a new upload: HRW over `storage_nodes()` (see `choose_holders`)."""
        return choose_holders(
            artifact_id, range(n), self.storage_nodes(), exclude=set(exclude), share_size=share_size
        )

    def failures(self, holder: NodeId) -> int:
        """Audits `holder` failed so far (its storage reputation)."""
        return self._failures[holder]

    @property
    def acting(self) -> bool:
        return self._acting

    # ----------------------------------------------------------------- records

    def _on_artifact(self, record: Record) -> None:
        try:
            body = artifact_body(record)
        except WireError:
            self.counters["malformed_artifact"] += 1
            return
        artifact_id = artifact_id_of(record.key)
        outcome = _keep(self._artifacts, artifact_id, record, body)
        if outcome == "stale":
            self.counters["stale_records"] += 1
            return
        if outcome == "other":
            self.counters["second_owners"] += 1
        if self._acting:
            self._dirty[artifact_id] = None
        if artifact_id in self._local:
            self._local_expiry_stale = True
            if self._live_entry(artifact_id) is not None:
                self._freed.discard(artifact_id)
            else:
                self._maybe_free(artifact_id)

    def _on_placement(self, record: Record) -> None:
        try:
            body = placement_body(record)
        except WireError:
            self.counters["malformed_placement"] += 1
            return
        artifact_id = artifact_id_of(record.key)
        owners = [entry.author for entry in _chain(self._artifacts.get(artifact_id))]
        if owners and record.author not in owners:
            hub = self.hub_of(body.term) if body.term >= 1 else None
            if body.term == 0 or (hub is not None and hub != record.author):
                self.counters["placements_forged"] += 1
                return
        if _keep(self._placements, artifact_id, record, body) == "stale":
            self.counters["stale_records"] += 1

    def _on_storage(self, record: Record) -> None:
        try:
            body = storage_body(record)
        except WireError:
            self.counters["malformed_storage"] += 1
            return
        author = record.author
        previous = self._storage.get(author)
        if previous is not None and record.seq <= previous.seq:
            self.counters["stale_records"] += 1
            return
        self._storage[author] = _Offer(record.seq, body)
        if body.holdings and author not in self._holder_pos:
            self._holder_pos[author] = len(self._holder_list)
            self._holder_list.append(author)
        elif not body.holdings and author in self._holder_pos:
            self._drop_holder(author)
        if self._index is not None:
            old = dict.fromkeys(previous.body.holdings) if previous is not None else {}
            new = dict.fromkeys(body.holdings)
            for holding in old:
                if holding not in new:
                    self._unindex(author, holding.artifact_id, holding.index)
            for holding in new:
                if holding not in old:
                    self._indexed(self._index, author, holding.artifact_id, holding.index)
                    self._dirty[holding.artifact_id] = None
        if author == self.self_id and not self._local_told:
            self._set_local(dict.fromkeys(holding.artifact_id for holding in body.holdings))

    def _on_manifest(self, record: Record) -> None:
        try:
            manifest = manifest_body(record)
        except WireError:
            self.counters["malformed_manifest"] += 1
            return
        known = self._groups.get(record.author)
        if known is not None and record.seq <= known[0]:
            return
        if manifest.addresses:
            self._groups[record.author] = (record.seq, address_group(manifest.addresses[0]))

    def _drop_holder(self, node: NodeId) -> None:
        position = self._holder_pos.pop(node)
        last = self._holder_list.pop()
        if last != node:
            self._holder_list[position] = last
            self._holder_pos[last] = position

    @staticmethod
    def _indexed(index: HolderIndex, holder: NodeId, artifact_id: bytes, share: int) -> None:
        shares = index.setdefault(artifact_id, {})
        holders = shares.get(share, ())
        if holder not in holders:
            shares[share] = (*holders, holder)

    def _unindex(self, holder: NodeId, artifact_id: bytes, share: int) -> None:
        assert self._index is not None
        shares = self._index.get(artifact_id)
        if shares is None:
            return
        self._dirty[artifact_id] = None
        remaining = tuple(node for node in shares.get(share, ()) if node != holder)
        if remaining:
            shares[share] = remaining
        else:
            shares.pop(share, None)
            if not shares:
                del self._index[artifact_id]

    def _build_index(self) -> HolderIndex:
        index: HolderIndex = {}
        for node, signed in self._storage.items():
            for holding in signed.body.holdings:
                self._indexed(index, node, holding.artifact_id, holding.index)
        return index

    def _holders_of(self, artifact_id: bytes) -> dict[int, tuple[NodeId, ...]]:
        if self._index is not None:
            return self._index.get(artifact_id, {})
        index: HolderIndex = {}
        for node, signed in self._storage.items():
            for holding in signed.body.holdings:
                if holding.artifact_id == artifact_id:
                    self._indexed(index, node, artifact_id, holding.index)
        return index.get(artifact_id, {})

    # ----------------------------------------------------------------- judging

    def _is_live(self, node: NodeId) -> bool:
        return node == self.self_id or node in self._live

    def _group(self, node: NodeId) -> str:
        known = self._groups.get(node)
        return known[1] if known is not None else node.hex()

    def _expired(self, body: ArtifactBody) -> bool:
        return self._wall is not None and body.expires_at != 0.0 and self._wall >= body.expires_at

    def _alive(self, body: ArtifactBody) -> bool:
        return not body.deleted and not self._expired(body)

    def _live_entry(self, artifact_id: bytes) -> _Entry | None:
        """The entry the checker follows: the first seen that is neither deleted nor expired."""
        for entry in _chain(self._artifacts.get(artifact_id)):
            if self._alive(entry.body):
                return entry
        return None

    def _pick(self, artifact_id: bytes, owner: NodeId | None) -> _Entry | None:
        head = self._artifacts.get(artifact_id)
        if owner is not None:
            return next((entry for entry in _chain(head) if entry.author == owner), None)
        own = next((entry for entry in _chain(head) if entry.author == self.self_id), None)
        return own or self._live_entry(artifact_id) or head

    def _settling(self, body: ArtifactBody) -> bool:
        return self._wall is not None and self._wall < body.created_at + self.config.settle_s

    def _penalized(self, holder: NodeId, artifact_id: bytes, share: int, now: float) -> bool:
        failed = self._penalties.get((holder, artifact_id, share))
        if failed is None:
            return False
        if now - failed < self.config.audit_penalty_s:
            return True
        del self._penalties[(holder, artifact_id, share)]
        return False

    def _healthy_holders(
        self, artifact_id: bytes, n: int, holders: dict[int, tuple[NodeId, ...]], now: float
    ) -> dict[int, tuple[NodeId, ...]]:
        """Per share index below n: its live holders whose audit of it has not failed lately."""
        healthy: dict[int, tuple[NodeId, ...]] = {}
        for share in range(n):
            good = tuple(
                node
                for node in holders.get(share, ())
                if self._is_live(node) and not self._penalized(node, artifact_id, share, now)
            )
            if good:
                healthy[share] = good
        return healthy

    def _current_placement(self, artifact_id: bytes, entry: _Entry) -> _Placement | None:
        best: _Placement | None = None
        for signed in _chain(self._placements.get(artifact_id)):
            body = signed.body
            if len(body.holders) != entry.body.n:
                continue
            if signed.author != entry.author and not (
                body.term >= 1 and self.hub_of(body.term) == signed.author
            ):
                continue
            if best is None or (body.generation, body.term, signed.author) > (
                best.body.generation,
                best.body.term,
                best.author,
            ):
                best = signed
        return best

    def _view(
        self, artifact_id: bytes, entry: _Entry, holders: dict[int, tuple[NodeId, ...]]
    ) -> ArtifactView:
        body = entry.body
        healthy = self._healthy_holders(artifact_id, body.n, holders, self._now)
        count = len(healthy)
        placement = self._current_placement(artifact_id, entry)
        return ArtifactView(
            artifact_id=artifact_id,
            owner=entry.author,
            name=body.name,
            size=body.size,
            k=body.k,
            n=body.n,
            healthy=count,
            survives=count - body.k if count >= body.k else -1,
            holders=healthy,
            deleted=body.deleted,
            expires_at=body.expires_at,
            placement_generation=0 if placement is None else placement.body.generation,
            expired=self._expired(body),
            placement=() if placement is None else tuple(placement.body.holders),
            body=body,
        )

    # ----------------------------------------------------------------- the checker (acting hub)

    def _holder_news(self, now: float, node: NodeId, died: bool) -> None:
        """`node` died or came back: mark the artifacts it holds; a death gets a check at once."""
        if not self._acting:
            return
        signed = self._storage.get(node)
        if signed is None or not signed.body.holdings:
            return
        for holding in signed.body.holdings:
            self._dirty[holding.artifact_id] = None
        if died:
            self._next_check = min(self._next_check, now)

    def _check(self, now: float) -> None:
        assert self._index is not None
        if now >= self._next_full:
            self._next_full = now + self.config.full_check_interval_s
            batch: Iterable[bytes] = list(self._artifacts)
        else:
            batch = list(self._dirty)
        self._dirty = {}
        due: list[tuple[int, float, bytes, _Entry, dict[int, tuple[NodeId, ...]]]] = []
        for artifact_id in batch:
            entry = self._live_entry(artifact_id)
            if entry is None:
                self._lost.discard(artifact_id)
                continue
            if artifact_id in self._in_flight:
                continue
            body = entry.body
            if self._settling(body):
                self._dirty[artifact_id] = None
                continue
            healthy = self._healthy_holders(artifact_id, body.n, self._index.get(artifact_id, {}), now)
            count = len(healthy)
            if count < body.k:
                if artifact_id not in self._lost:
                    self._lost.add(artifact_id)
                    self.counters["artifacts_lost"] += 1
                    self._effects.append(ArtifactLost(artifact_id, count, body.k))
                continue
            self._lost.discard(artifact_id)
            if count <= repair_threshold(body.k, body.n, self.config.repair_margin):
                due.append((count - body.k, count / body.n, artifact_id, entry, healthy))
        due.sort(key=lambda item: (item[0], item[1], item[2]))
        for _spare, _ratio, artifact_id, entry, healthy in due:
            if len(self._in_flight) >= self.config.max_concurrent_repairs or not self._repair(
                now, artifact_id, entry, healthy
            ):
                self._dirty[artifact_id] = None

    def _repair(
        self, now: float, artifact_id: bytes, entry: _Entry, healthy: dict[int, tuple[NodeId, ...]]
    ) -> bool:
        """Emit a `RepairDue` for `artifact_id` (False when no node can take a missing share)."""
        assert self._index is not None
        body = entry.body
        missing = [share for share in range(body.n) if share not in healthy]
        exclude = {node for nodes in self._index.get(artifact_id, {}).values() for node in nodes}
        targets = choose_holders(
            artifact_id,
            missing,
            self.storage_nodes(),
            exclude=exclude,
            share_size=max(body.share_sizes[share] for share in missing),
        )
        if not targets:
            self.counters["repairs_without_target"] += 1
            return False
        placement = self._current_placement(artifact_id, entry)
        generation = (0 if placement is None else placement.body.generation) + 1
        self._effects.append(
            RepairDue(
                artifact_id=artifact_id,
                healthy=len(healthy),
                k=body.k,
                n=body.n,
                missing=tuple(missing),
                sources=tuple((share, node) for share, nodes in healthy.items() for node in nodes),
                targets=tuple(targets.items()),
                generation=generation,
                owner=entry.author,
            )
        )
        self._in_flight[artifact_id] = now
        self.counters["repairs_due"] += 1
        return True

    def _audit(self) -> None:
        """Ask for one audit: a random live holder (not this node), a random share it lists."""
        for _attempt in range(AUDIT_ATTEMPTS):
            if not self._holder_list:
                return
            holder = self._holder_list[self.rng.randrange(len(self._holder_list))]
            if holder == self.self_id or holder not in self._live:
                continue
            holdings = self._storage[holder].body.holdings
            holding = holdings[self.rng.randrange(len(holdings))]
            entry = self._live_entry(holding.artifact_id)
            if entry is None or holding.index >= entry.body.n:
                continue
            chunks = entry.body.chunk_count
            chunk = self.rng.randrange(chunks) if chunks > 0 else 0
            self.counters["audits_due"] += 1
            self._effects.append(AuditDue(holder, holding.artifact_id, holding.index, chunk))
            return

    # ----------------------------------------------------------------- freeing (every node)

    def _set_local(self, local: dict[bytes, None]) -> None:
        self._local = local
        self._local_expiry_stale = True
        self._freed = {artifact_id for artifact_id in local if artifact_id in self._freed}
        for artifact_id in local:
            self._maybe_free(artifact_id)

    def _maybe_free(self, artifact_id: bytes) -> None:
        """Emit `FreeShares` once for a held artifact no owner keeps alive (deleted or expired)."""
        if artifact_id in self._freed:
            return
        head = self._artifacts.get(artifact_id)
        if head is None or self._live_entry(artifact_id) is not None:
            return
        self._freed.add(artifact_id)
        self.counters["shares_freed"] += 1
        reason = "deleted" if any(entry.body.deleted for entry in _chain(head)) else "expired"
        self._effects.append(FreeShares(artifact_id, reason))

    def _local_expiry_wall(self) -> float | None:
        """The earliest wall time at which a held artifact expires (None: none will)."""
        if self._local_expiry_stale:
            self._local_expiry_stale = False
            soonest: float | None = None
            for artifact_id in self._local:
                if artifact_id in self._freed:
                    continue
                live = [
                    entry.body
                    for entry in _chain(self._artifacts.get(artifact_id))
                    if self._alive(entry.body)
                ]
                if not live or any(body.expires_at == 0.0 for body in live):
                    continue
                ends = max(body.expires_at for body in live)
                soonest = ends if soonest is None else min(soonest, ends)
            self._local_expiry = soonest
        return self._local_expiry

    def _free_expired(self) -> None:
        expiry = self._local_expiry_wall()
        if expiry is None or self._wall is None or self._wall < expiry:
            return
        for artifact_id in self._local:
            self._maybe_free(artifact_id)
        self._local_expiry_stale = True
