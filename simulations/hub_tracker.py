"""The hub seen from outside the election cores: who acts in which term, failovers, availability, safety.

The tracker watches the cores' `became_hub`, `stepped_down` and `hub` events, crashes,
and the stores, and checks two invariants from outside (a core that misreports is still
caught, because acting is re-read from `acting_term(now)` and fencing from the stores):

- `one_hub_per_term`: no term ever has two different nodes acting as its hub, no two
  nodes act as hub at the same instant (whatever their terms), and no term has two
  different decided values (hub, council, lease) among the hub records nodes believe
  (verified). Two records of one value are fine: a later Paxos ballot that finds the
  value already accepted re-proposes it, and its proposer signs a record of its own.
- `no_fenced_record_accepted`: no store holds a hub-issued record (council, lease) from a
  term older than its own fence, whether just accepted or found in a periodic scan.

Availability is sampled every `SAMPLE_S` of virtual time: a sample counts as available
when some live node's `acting_term(now)` is not None and that node can reach at least
half of the live nodes (only a partition makes it unreachable in the network model).
Sampling is an engine action that changes no state, so measuring never changes the trace.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from protocols.common.identity import NodeId
from protocols.common.wire import WireError
from protocols.election.core import ElectionCore
from protocols.records.fencing import HUB_ISSUED_KINDS, issued_term
from protocols.records.record import Record
from protocols.records.store import RecordStore
from simulations.metrics import percentile

SAMPLE_S = 0.1
"""Virtual seconds between availability samples."""
TIMELINE_LIMIT = 2000
"""Timeline entries kept for report.json (a long run with churn keeps the first ones)."""

Violate = Callable[[str, float, list[NodeId], list[bytes], str], None]


class Reachability(Protocol):
    def reaches_majority(self, now: float, node: NodeId) -> bool: ...


@dataclass
class _Kill:
    at: float
    node: NodeId
    term: int
    cause: str


@dataclass
class HubTracker:
    """Collects the hub timeline and judges the two hub invariants as the run goes."""

    core_of: Callable[[NodeId], ElectionCore | None]
    index_of: Callable[[NodeId], int]
    violate: Violate
    acting: dict[NodeId, int] = field(default_factory=dict)
    hubs_per_term: dict[int, set[NodeId]] = field(default_factory=dict)
    record_per_term: dict[int, tuple[object, bytes]] = field(default_factory=dict)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    failovers: list[float] = field(default_factory=list)
    kills: int = 0
    kills_skipped: int = 0
    fenced_checks: int = 0
    first_acting_at: float | None = None
    samples: int = 0
    available_samples: int = 0
    term_series: list[tuple[float, int]] = field(default_factory=list)
    _pending: list[_Kill] = field(default_factory=list)

    # ---- events ------------------------------------------------------------------------------

    def became_hub(self, now: float, node: NodeId, term: int) -> None:
        for other in self.acting:
            core = self.core_of(other)
            if other != node and core is not None and core.acting_term(now) is not None:
                self.violate(
                    "one_hub_per_term",
                    now,
                    [node, other],
                    [],
                    f"two nodes act as hub at once (terms {term} and {self.acting[other]})",
                )
                return
        hubs = self.hubs_per_term.setdefault(term, set())
        hubs.add(node)
        if len(hubs) > 1:
            self.violate("one_hub_per_term", now, sorted(hubs), [], f"two nodes acted as hub of term {term}")
            return
        self.acting[node] = term
        if self.first_acting_at is None:
            self.first_acting_at = now
        self._note(now, "acting", node, term)
        self.term_series.append((now, term))
        still: list[_Kill] = []
        for kill in self._pending:
            if node != kill.node and term > kill.term:
                self.failovers.append(now - kill.at)
                self._note(now, "failover", node, term, after_s=round(now - kill.at, 3))
            else:
                still.append(kill)
        self._pending = still

    def stepped_down(self, now: float, node: NodeId, term: int, reason: str) -> None:
        if self.acting.pop(node, None) is not None:
            self._note(now, "stepped_down", node, term, reason=reason)
            self.term_series.append((now, 0))

    def gone(self, now: float, node: NodeId, cause: str) -> None:
        """`node` crashed, was killed or left: if it was acting, a failover starts now."""
        term = self.acting.pop(node, None)
        if term is None:
            return
        core = self.core_of(node)
        if core is not None and core.acting_term(now) is None:
            return  # its lease had lapsed already: no hub was lost by this
        self._pending.append(_Kill(now, node, term, cause))
        self._note(now, cause, node, term)
        self.term_series.append((now, 0))

    def believed(self, now: float, node: NodeId, core: ElectionCore) -> None:
        """A `hub` event: `node` believes a (new) term; all believers must hold the same record."""
        latest = core.chain.latest
        if latest is None:
            return
        signature = latest.record.signature
        known_value, known_signature = self.record_per_term.setdefault(latest.term, (latest.value, signature))
        self.hubs_per_term.setdefault(latest.term, set()).add(latest.hub)
        if known_value != latest.value:
            self.violate(
                "one_hub_per_term",
                now,
                list(dict.fromkeys([node, latest.hub])),
                [known_signature, signature],
                f"two verified hub records with different values for term {latest.term}",
            )
        elif len(self.hubs_per_term[latest.term]) > 1:
            hubs = sorted(self.hubs_per_term[latest.term])
            self.violate("one_hub_per_term", now, hubs, [], f"two hubs believed for term {latest.term}")

    def accepted(self, now: float, node: NodeId, store: RecordStore, record: Record) -> None:
        """A store reported accepting `record`: a hub-issued one must not be older than its fence.

        Judged on what the store still holds: a record merged in the same batch as the hub
        record of a newer term is purged when that term is believed, before this runs.
        """
        if record.kind not in HUB_ISSUED_KINDS:
            return
        self.fenced_checks += 1
        if store.get(*record.slot) != record:
            return
        try:
            term = issued_term(record)
        except WireError:
            return
        if term < store.fence_term:
            self.violate(
                "no_fenced_record_accepted",
                now,
                [node, record.author],
                [record.signature],
                f"a {record.kind} record of term {term} was accepted by a store "
                f"fenced at term {store.fence_term}",
            )

    def scan(self, now: float, stores: Sequence[tuple[NodeId, RecordStore]]) -> bool:
        """Look through every live store for a held hub-issued record older than the store's fence."""
        for node, store in stores:
            fence = store.fence_term
            for record in store:
                if record.kind not in HUB_ISSUED_KINDS:
                    continue
                self.fenced_checks += 1
                try:
                    term = issued_term(record)
                except WireError:
                    continue
                if term < fence:
                    self.violate(
                        "no_fenced_record_accepted",
                        now,
                        [node, record.author],
                        [record.signature],
                        f"a store fenced at term {fence} holds a {record.kind} record of term {term}",
                    )
                    return False
        return True

    def sample(self, now: float, reach: Reachability) -> None:
        if self.first_acting_at is None:
            return
        self.samples += 1
        for node in self.acting:
            core = self.core_of(node)
            if core is not None and core.acting_term(now) is not None and reach.reaches_majority(now, node):
                self.available_samples += 1
                return

    # ---- reading -----------------------------------------------------------------------------

    def current_hub(self, now: float) -> tuple[NodeId, int] | None:
        """The live node acting as hub right now, if any."""
        for node in self.acting:
            core = self.core_of(node)
            term = None if core is None else core.acting_term(now)
            if term is not None:
                return node, term
        return None

    def summary(self, end: float, detection_p95_s: float | None) -> dict[str, Any]:
        p95 = percentile(self.failovers, 95)
        ratio = p95 / detection_p95_s if p95 is not None and detection_p95_s else None
        return {
            "terms": max(self.record_per_term, default=0),
            "terms_list": sorted(self.record_per_term),
            "max_hubs_per_term": max((len(h) for h in self.hubs_per_term.values()), default=0),
            "kills": self.kills,
            "kills_skipped_no_acting_hub": self.kills_skipped,
            "failovers": len(self.failovers),
            "failovers_unfinished": len(self._pending),
            "failover_p50_s": percentile(self.failovers, 50),
            "failover_p95_s": p95,
            "failover_max_s": max(self.failovers, default=None),
            "failover_p95_over_detection_p95": ratio,
            "availability": self.available_samples / self.samples if self.samples else None,
            "availability_window_s": end - (end if self.first_acting_at is None else self.first_acting_at),
            "fenced_checks": self.fenced_checks,
            "timeline": self.timeline,
        }

    def _note(self, now: float, what: str, node: NodeId, term: int, **extra: Any) -> None:
        if len(self.timeline) < TIMELINE_LIMIT:
            self.timeline.append(
                {"at_s": round(now, 4), "event": what, "node": self.index_of(node), "term": term, **extra}
            )
