"""Safety and liveness properties checked while the simulation runs; a violation stops it.

- `no_forged_accepted`: no store accepts a record with a bad signature or from an author
  that was never admitted (the simulator injects such records on purpose).
- `no_acknowledged_loss`: a record its author's store acknowledged is never dropped by a
  live node that held it (a newer record in the same slot supersedes it, which is fine).
- `convergence`: once churn, partitions and publishing have stopped, every live node's
  `state_digest()` is equal within the stated bound.
- `one_hub_per_term` and `no_fenced_record_accepted`: judged by `hub_tracker.HubTracker`,
  reported through `violate` here so every violation stops the run the same way.

The checker reads the stores directly, not the cores' own reports, so a core that
misreports (says "accepted" but drops, or accepts silently) is still caught.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from protocols.common.hashing import short_hex
from protocols.common.identity import NodeId
from protocols.records.record import Record
from protocols.records.store import RecordStore

INVARIANTS = (
    "no_forged_accepted",
    "no_acknowledged_loss",
    "convergence",
    "one_hub_per_term",
    "no_fenced_record_accepted",
)


@dataclass
class Violation:
    """One broken invariant, with enough context to find it in the trace."""

    invariant: str
    at: float
    nodes: list[str]
    records: list[str]
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {
            "invariant": self.invariant,
            "at_s": round(self.at, 6),
            "nodes": self.nodes,
            "records": self.records,
            "detail": self.detail,
        }

    def __str__(self) -> str:
        return (
            f"{self.invariant} violated at t={self.at:.3f}s: {self.detail} "
            f"(nodes {', '.join(self.nodes) or '-'}; records {', '.join(self.records) or '-'})"
        )


@dataclass
class _Acknowledged:
    record: Record
    holders: bytearray = field(default_factory=bytearray)
    """A bitmap over node numbers: n bits per record, where a set of ids cost ~30 bytes
    per holder (about 1 GiB of sets in a 5000-node run)."""


def _mark(bits: bytearray, number: int) -> None:
    byte = number >> 3
    if byte >= len(bits):
        bits.extend(bytes(byte + 1 - len(bits)))
    bits[byte] |= 1 << (number & 7)


def _unmark(bits: bytearray, number: int) -> None:
    byte = number >> 3
    if byte < len(bits):
        bits[byte] &= 0xFF ^ (1 << (number & 7))


def _numbers(bits: bytearray) -> Iterator[int]:
    for byte_index, byte in enumerate(bits):
        if byte:
            for bit in range(8):
                if byte >> bit & 1:
                    yield byte_index * 8 + bit


LiveStores = Callable[[], Sequence[tuple[NodeId, RecordStore]]]


def _holds(store: RecordStore, record: Record) -> bool:
    current = store.get(record.author, record.kind, record.key)
    return current is not None and (current.seq > record.seq or current.signature == record.signature)


class InvariantChecker:
    """Collects evidence from the run and checks the invariants against the live stores."""

    def __init__(
        self, live_stores: LiveStores, on_violation: Callable[[Violation], None], rng: random.Random
    ) -> None:
        self._live_stores = live_stores
        self._on_violation = on_violation
        self._rng = rng
        self.violations: list[Violation] = []
        self.counts = dict.fromkeys(INVARIANTS, 0)
        self._forged: dict[bytes, Record] = {}
        self._acknowledged: dict[bytes, _Acknowledged] = {}
        self._numbers: dict[NodeId, int] = {}  # node -> its bit in the holder bitmaps
        self._ids: list[NodeId] = []
        self.convergence_checked = False
        self.converged_after_s: float | None = None
        self.forged_injected = 0
        self.checks_run = 0

    # ---- evidence ----------------------------------------------------------------------------

    def forged(self, record_id: bytes, record: Record) -> None:
        """A record the simulator forged and injected: it must never be accepted anywhere."""
        self._forged[record_id] = record
        self.forged_injected += 1

    def acknowledged(self, record_id: bytes, record: Record, author: NodeId) -> None:
        """The author's store accepted its own new record: from now on it must not be lost."""
        entry = self._acknowledged[record_id] = _Acknowledged(record)
        _mark(entry.holders, self._number_of(author))

    def accepted(self, now: float, node: NodeId, record_id: bytes) -> None:
        """A core reported accepting a record: refuse forgeries at once, note new holders."""
        if record_id in self._forged:
            self._violate(
                "no_forged_accepted",
                now,
                [node],
                [record_id],
                "a forged or non-member record was reported accepted",
            )
            return
        entry = self._acknowledged.get(record_id)
        if entry is not None:
            _mark(entry.holders, self._number_of(node))

    def held_by_all(self, record_ids: list[bytes], nodes: list[NodeId]) -> None:
        """The initial mesh: every node holds these records (one bitmap, copied)."""
        everyone = bytearray()
        for node in nodes:
            _mark(everyone, self._number_of(node))
        for record_id in record_ids:
            entry = self._acknowledged.get(record_id)
            if entry is not None:
                entry.holders = bytearray(everyone)

    def forget_node(self, node: NodeId) -> None:
        """A node left for good: it no longer counts as a holder."""
        number = self._numbers.get(node)
        if number is not None:
            for entry in self._acknowledged.values():
                _unmark(entry.holders, number)

    def _number_of(self, node: NodeId) -> int:
        number = self._numbers.get(node)
        if number is None:
            number = self._numbers[node] = len(self._ids)
            self._ids.append(node)
        return number

    # ---- checks ------------------------------------------------------------------------------

    def check_stores(self, now: float, *, sample: int | None = None) -> bool:
        """Scan live stores for forged records and for acknowledged records a holder lost.

        With `sample`, only that many acknowledged records (drawn at random) are checked:
        the periodic check is a spot check, the final one (sample=None) is exhaustive.
        """
        self.checks_run += 1
        stores = dict(self._live_stores())
        for record_id, record in self._forged.items():
            for node, store in stores.items():
                current = store.get(record.author, record.kind, record.key)
                if current is not None and current.signature == record.signature:
                    self._violate(
                        "no_forged_accepted",
                        now,
                        [node],
                        [record_id],
                        "a forged or non-member record is held in a store",
                    )
                    return False
        entries = list(self._acknowledged.items())
        if sample is not None and sample < len(entries):
            entries = self._rng.sample(entries, sample)
        for record_id, entry in entries:
            for number in _numbers(entry.holders):
                holder = self._ids[number]
                held_by = stores.get(holder)
                if held_by is not None and not _holds(held_by, entry.record):
                    self._violate(
                        "no_acknowledged_loss",
                        now,
                        [holder],
                        [record_id],
                        "a live node that held an acknowledged record no longer holds it "
                        "(nor a newer record in its slot)",
                    )
                    return False
        return True

    def digests_equal(self) -> tuple[bool, dict[bytes, list[NodeId]]]:
        groups: dict[bytes, list[NodeId]] = {}
        for node, store in self._live_stores():
            groups.setdefault(store.state_digest(), []).append(node)
        return len(groups) <= 1, groups

    def note_converged(self, after_s: float) -> None:
        if self.converged_after_s is None:
            self.converged_after_s = after_s

    def check_convergence(self, now: float, quiet_since: float, bound_s: float) -> bool:
        """The bound has passed since the mesh went quiet: every live node must agree."""
        self.convergence_checked = True
        equal, groups = self.digests_equal()
        if equal:
            return True
        ordered = sorted(groups.values(), key=len, reverse=True)
        minority = [node for group in ordered[1:] for node in group]
        sizes = ", ".join(str(len(group)) for group in ordered)
        self._violate(
            "convergence",
            now,
            minority[:10],
            [],
            f"{len(groups)} distinct record sets among live nodes (group sizes {sizes}) "
            f"{now - quiet_since:.1f}s after the mesh went quiet; bound {bound_s:.1f}s",
        )
        return False

    def violate(
        self, invariant: str, now: float, nodes: list[NodeId], records: list[bytes], detail: str
    ) -> None:
        """Record a violation another checker found (the hub invariants) and stop the run."""
        self._violate(invariant, now, nodes, records, detail)

    def _violate(
        self, invariant: str, now: float, nodes: list[NodeId], records: list[bytes], detail: str
    ) -> None:
        violation = Violation(
            invariant, now, [short_hex(n) for n in nodes], [short_hex(r) for r in records], detail
        )
        self.violations.append(violation)
        self.counts[invariant] += 1
        self._on_violation(violation)

    def summary(self) -> dict[str, dict[str, Any]]:
        result: dict[str, dict[str, Any]] = {}
        for name in INVARIANTS:
            entry: dict[str, Any] = {"ok": self.counts[name] == 0, "violations": self.counts[name]}
            if name == "convergence":
                entry["checked"] = self.convergence_checked
                entry["converged_after_s"] = self.converged_after_s
                if not self.convergence_checked:
                    entry["ok"] = False  # a run that never reached the check proves nothing
            if name == "no_forged_accepted":
                entry["injected"] = self.forged_injected
            if name == "no_acknowledged_loss":
                entry["acknowledged_records"] = len(self._acknowledged)
            result[name] = entry
        return result
