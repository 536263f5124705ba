"""The elected hub in the simulator: failover under hub kills, its report, and planted faults caught."""

from __future__ import annotations

import importlib.util
import math
from typing import Any

import pytest

import protocols.election.core
import protocols.election.hub_chain
from protocols.records.record import Record, Verifier
from protocols.records.store import MergeResult, Outcome, RecordStore
from simulations.run import build_report, run_simulation
from simulations.scenario import build_scenario, scenario_from_toml
from simulations.world import World
from tests.support.paths import REPO_ROOT


def test_hub_killed_every_minute_fails_over_with_one_hub_per_term() -> None:
    scenario = build_scenario(
        nodes=40, duration="3m", churn="5%/min", loss="1%", seed=5, kill_hub_every="60s"
    )
    report = run_simulation(scenario)
    assert report.ok, report.violations or report.stopped_early
    hub = report.to_json()["hub"]
    assert hub["max_hubs_per_term"] == 1
    assert hub["kills"] == 2 and hub["kills_skipped_no_acting_hub"] == 0
    assert hub["failovers"] == 2 and hub["failovers_unfinished"] == 0
    assert hub["terms"] >= 3
    detection_p95 = report.failure_detection["p95_s"]
    assert 0 < hub["failover_p95_s"] <= 2 * detection_p95
    assert 0.9 < hub["availability"] < 1.0
    events = {entry["event"] for entry in hub["timeline"]}
    assert {"acting", "killed", "failover"} <= events
    again = run_simulation(scenario)
    assert again.digest == report.digest
    assert again.to_json()["hub"] == hub


def test_kill_event_in_a_scenario_file_kills_the_acting_hub_and_it_restarts() -> None:
    scenario = scenario_from_toml(
        """
        [run]
        nodes = 30
        duration = "100s"
        seed = 2
        [[events]]
        at = "20s"
        action = "kill"
        role = "hub"
        restart_after = "10s"
        """
    )
    report = run_simulation(scenario)
    assert report.ok, report.violations or report.stopped_early
    timeline = report.hub["timeline"]
    killed = [entry for entry in timeline if entry["event"] == "killed"]
    assert len(killed) == 1 and killed[0]["at_s"] == 20.0 and killed[0]["term"] >= 1
    assert report.churn["restarts"] == 0  # the kill's restart is the world's, not churn's
    # the restarted old hub never acts again in an old term
    assert all(entry["term"] > killed[0]["term"] for entry in timeline if entry["at_s"] > 20.0)


class FencelessStore(RecordStore):
    """A planted fault: a store that ignores the fence (keeps and accepts records of older terms)."""

    def _fence(self, record: Record, verified: bool, result: MergeResult) -> Outcome | None:
        return None

    def _is_fenced(self, record: Record) -> bool:
        return False


def _fenceless(mesh_id: bytes, verify: Verifier) -> RecordStore:
    return FencelessStore(mesh_id, verify)


def test_store_without_fencing_is_caught() -> None:
    scenario = build_scenario(nodes=20, duration="2m", seed=3, kill_hub_every="30s")
    report = run_simulation(scenario, store_factory=_fenceless)
    assert not report.ok
    assert report.invariants["no_fenced_record_accepted"]["violations"] == 1
    assert report.stopped_early is not None and "no_fenced_record_accepted" in report.stopped_early
    assert "term" in report.stopped_early


def _split_council_and_kill_hub(world: World) -> None:
    """Crash the hub and cut the network so its council is split 2 / 2 (no majority anywhere)."""
    current = world.hub.current_hub(world.now)
    assert current is not None
    hub_id, _ = current
    view = world.live[hub_id].election.hub_view()
    assert view is not None and len(view.council) == 5
    others = [member for member in view.council if member != hub_id]
    rest = [node for node in world.live if node not in view.council]
    side_a = frozenset([*others[:2], *rest[: len(rest) // 2]])
    side_b = frozenset([*others[2:], *rest[len(rest) // 2 :]])
    world.crash(hub_id, cause="killed")
    world.network.partition([side_a, side_b], world.now, world.now + 15.0)


def _world(seed: int) -> World:
    scenario = build_scenario(nodes=30, duration="2m", seed=seed)
    world = World(scenario)
    world.bootstrap()
    world.start()
    world.engine.run_until(20.0)
    assert world.engine.stop_reason is None
    return world


def test_partitioned_council_elects_no_second_hub() -> None:
    world = _world(seed=8)
    _split_council_and_kill_hub(world)
    world.engine.run_until(60.0)
    assert world.engine.stop_reason is None
    hub = build_report(world, 1.0, 0.0).hub
    assert hub["max_hubs_per_term"] == 1
    assert hub["failovers"] == 1  # elected once the partition healed
    assert hub["failover_p50_s"] > 15.0


def test_election_with_a_broken_majority_rule_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    world = _world(seed=8)
    # Planted fault: one vote is a majority, so each side of the split council elects a hub.
    monkeypatch.setattr(protocols.election.core, "majority", lambda size: 1)
    monkeypatch.setattr(protocols.election.hub_chain, "majority", lambda size: 1)
    _split_council_and_kill_hub(world)
    world.engine.run_until(60.0)
    reason = world.engine.stop_reason
    assert reason is not None and "one_hub_per_term" in reason, reason
    assert world.checker.counts["one_hub_per_term"] == 1
    assert math.isfinite(world.now) and world.now < 30.0


def test_short_safety_sweep_finds_no_second_hub_and_no_fenced_record() -> None:
    """The CI-sized run of bench/hub_simulation_sweep.py (the bench runs 200 seeds)."""
    sweep = _load_sweep()
    result = sweep.run_sweep(range(1, 4))
    assert result["failed_seeds"] == []
    assert result["max_hubs_per_term"] == 1
    assert result["hub_kills"] > 0 and result["failovers"] > 0


def _load_sweep() -> Any:
    path = REPO_ROOT / "bench" / "hub_simulation_sweep.py"
    spec = importlib.util.spec_from_file_location("hub_simulation_sweep", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
