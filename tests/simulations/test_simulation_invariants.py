"""The invariant checker catches faults planted in copies of the record store.

Each faulty store is a subclass of the real `RecordStore` with one deliberate bug; the
simulator is run with it and must stop with the matching violation. A checker that
cannot fail would pass these runs instead.
"""

from __future__ import annotations

from collections.abc import Iterable

from protocols.common.identity import NodeId
from protocols.records.record import Record, Verifier
from protocols.records.store import MergeResult, RecordStore
from simulations.run import run_simulation
from simulations.scenario import build_scenario
from simulations.workload import SIM_KIND

SCENARIO = build_scenario(nodes=30, duration="70s", churn="0", seed=5)


class DroppingMerge(RecordStore):
    """Bug: merging a batch that arrived from a peer silently drops its `sim` records."""

    def merge(self, records: Iterable[Record], *, verified: bool = False) -> MergeResult:
        batch = list(records)
        if not verified:
            batch = [r for r in batch if r.kind != SIM_KIND]
        return super().merge(batch, verified=verified)


class ForgetfulStore(RecordStore):
    """Bug: after accepting a peer's record it loses every record of that slot's author."""

    def merge(self, records: Iterable[Record], *, verified: bool = False) -> MergeResult:
        result = super().merge(records, verified=verified)
        for record in result.accepted:
            if record.kind == SIM_KIND and not verified:
                self._current.pop(record.slot, None)
        return result


class TrustingStore(RecordStore):
    """Bug: signatures are never checked."""

    def __init__(self, mesh_id: bytes, verify: Verifier) -> None:
        super().__init__(mesh_id, verify=lambda author, message, signature: True)


def _faulty(cls: type[RecordStore], victim_every: int = 2) -> object:
    """A store factory that gives every `victim_every`-th node the faulty store."""
    made: list[NodeId] = []

    def factory(mesh_id: bytes, verify: Verifier) -> RecordStore:
        made.append(mesh_id)
        store_cls = cls if len(made) % victim_every == 0 else RecordStore
        return store_cls(mesh_id, verify)

    return factory


def test_healthy_store_passes() -> None:
    report = run_simulation(SCENARIO)
    assert report.ok, report.violations


def test_merge_that_drops_records_breaks_convergence() -> None:
    report = run_simulation(SCENARIO, store_factory=_faulty(DroppingMerge))  # type: ignore[arg-type]
    assert not report.ok
    assert report.invariants["convergence"]["violations"] == 1
    violation = report.violations[0]
    assert violation["invariant"] == "convergence" and violation["nodes"]
    assert report.stopped_early is not None and "convergence violated" in report.stopped_early


def test_store_that_forgets_acknowledged_records_is_caught() -> None:
    report = run_simulation(SCENARIO, store_factory=_faulty(ForgetfulStore))  # type: ignore[arg-type]
    assert report.invariants["no_acknowledged_loss"]["violations"] == 1
    violation = report.violations[0]
    assert violation["invariant"] == "no_acknowledged_loss"
    assert violation["nodes"] and violation["records"] and violation["at_s"] < SCENARIO.duration_s


def test_store_that_skips_signature_checks_accepts_a_forgery_and_is_caught() -> None:
    scenario = build_scenario(nodes=30, duration="70s", churn="0", seed=5)
    report = run_simulation(scenario, store_factory=_faulty(TrustingStore))  # type: ignore[arg-type]
    assert report.invariants["no_forged_accepted"]["violations"] == 1
    assert report.violations[0]["invariant"] == "no_forged_accepted"
