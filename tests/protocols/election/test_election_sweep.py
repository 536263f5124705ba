"""The short version of bench/election_safety_sweep.py that CI runs: a few seeds, zero violations."""

from __future__ import annotations

import sys

from tests.support.paths import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "bench"))

from election_safety_sweep import run_sweep


def test_short_safety_sweep_finds_no_violation_and_fails_over() -> None:
    report = run_sweep(seeds=8, duration=40.0)
    assert report["max_hubs_per_term"] == 1
    assert report["acting_overlaps"] == 0
    assert report["fenced_out_records_accepted"] == 0
    assert report["published_while_not_acting"] == 0
    assert report["hub_conflicts"] == 0
    assert report["failing_seeds"] == []
    assert isinstance(report["failovers"], int) and report["failovers"] >= 4
    assert isinstance(report["failover_max_s"], float) and report["failover_max_s"] < 15.0
