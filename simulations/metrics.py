"""What the run measures: dissemination latency and coverage, failure-detection time, population.

These trackers only observe (cores' events, churn actions); they never steer the run,
so measuring more can never change a run's trace or digest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from protocols.common.identity import NodeId

FALSE_POSITIVE_STALE_WINDOW_S = 60.0
"""A death rumour about a restarted node's *previous* life may still circulate this long."""


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in [0, 100]); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass
class _Published:
    at: float
    eligible: set[int]
    accepted: dict[int, float] = field(default_factory=dict)


class DisseminationTracker:
    """Times from publishing a record to its acceptance at each node that was live to see it."""

    def __init__(self) -> None:
        self._records: dict[bytes, _Published] = {}

    def published(self, record: bytes, at: float, live_indices: set[int]) -> None:
        self._records[record] = _Published(at, set(live_indices))

    def accepted(self, record: bytes, node_index: int, at: float) -> None:
        entry = self._records.get(record)
        if entry is not None and node_index in entry.eligible and node_index not in entry.accepted:
            entry.accepted[node_index] = at

    def summary(self, live_at_end: set[int], target_fraction: float = 0.99) -> dict[str, float | int | None]:
        """p50/p99 of per-node latency, coverage, and per-record time to reach 99 % of nodes.

        Only nodes live from publication to the end count: a node that crashed before a
        record reached it could not have received it, and one that joined later learns it
        by anti-entropy, which is measured by convergence instead.
        """
        latencies: list[float] = []
        reach_times: list[float] = []
        delivered = 0
        eligible_total = 0
        unreached = 0
        for entry in self._records.values():
            eligible = entry.eligible & live_at_end
            if not eligible:
                continue
            eligible_total += len(eligible)
            times = sorted(t - entry.at for node, t in entry.accepted.items() if node in eligible)
            delivered += len(times)
            latencies.extend(times)
            needed = max(1, math.ceil(target_fraction * len(eligible)))
            if len(times) >= needed:
                reach_times.append(times[needed - 1])
            else:
                unreached += 1
        return {
            "records": len(self._records),
            "p50_s": percentile(latencies, 50),
            "p99_s": percentile(latencies, 99),
            "coverage": (delivered / eligible_total) if eligible_total else None,
            "t99_median_s": percentile(reach_times, 50),
            "t99_p95_s": percentile(reach_times, 95),
            "records_below_99pct": unreached,
        }

    def latencies(self, live_at_end: set[int]) -> list[float]:
        values: list[float] = []
        for entry in self._records.values():
            eligible = entry.eligible & live_at_end
            values.extend(t - entry.at for node, t in entry.accepted.items() if node in eligible)
        return values


class FailureDetectionTracker:
    """Time from a crash until the first live node declares the crashed node dead; false alarms."""

    def __init__(self) -> None:
        self._crashed_at: dict[NodeId, float] = {}
        self._life_started: dict[NodeId, float] = {}
        self._restarted: set[NodeId] = set()
        self._departed: set[NodeId] = set()
        self.detection_times: list[float] = []
        self.suspect_times: list[float] = []
        self._suspected: set[NodeId] = set()
        self.undetected = 0
        self.false_positives = 0
        self.false_positive_pairs: list[tuple[float, NodeId, NodeId]] = []

    def started(self, node: NodeId, at: float, restart: bool) -> None:
        self._life_started[node] = at
        self._departed.discard(node)
        if restart:
            self._restarted.add(node)
            if node in self._crashed_at:
                self.undetected += 1
                del self._crashed_at[node]
            self._suspected.discard(node)

    def crashed(self, node: NodeId, at: float) -> None:
        self._crashed_at[node] = at
        self._departed.add(node)

    def left(self, node: NodeId) -> None:
        self._departed.add(node)

    def member_event(self, observer: NodeId, at: float, node: NodeId, state: str) -> None:
        crashed_at = self._crashed_at.get(node)
        if crashed_at is not None:
            if state == "suspect" and node not in self._suspected:
                self._suspected.add(node)
                self.suspect_times.append(at - crashed_at)
            elif state == "dead":
                self.detection_times.append(at - crashed_at)
                del self._crashed_at[node]
                self._suspected.discard(node)
            return
        if state != "dead" or node in self._departed or node == observer:
            return
        started = self._life_started.get(node)
        if started is None:
            return
        if node in self._restarted and at - started < FALSE_POSITIVE_STALE_WINDOW_S:
            return
        self.false_positives += 1
        if len(self.false_positive_pairs) < 20:
            self.false_positive_pairs.append((at, observer, node))

    def summary(self) -> dict[str, float | int | None]:
        return {
            "crashes_detected": len(self.detection_times),
            "crashes_undetected_before_restart_or_end": self.undetected + len(self._crashed_at),
            "p50_s": percentile(self.detection_times, 50),
            "p95_s": percentile(self.detection_times, 95),
            "suspect_p50_s": percentile(self.suspect_times, 50),
            "false_positives": self.false_positives,
        }


class PopulationTracker:
    """Live-node count over time, sampled at every change."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, int]] = []

    def sample(self, at: float, live: int) -> None:
        if self.samples and self.samples[-1][0] == at:
            self.samples[-1] = (at, live)
        else:
            self.samples.append((at, live))

    def live_at(self, at: float) -> int:
        count = 0
        for time, live in self.samples:
            if time > at:
                break
            count = live
        return count
