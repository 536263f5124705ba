"""Storage in the simulator (issue 14): the acting hub's real storage core repairs artifacts under churn,
repair off loses them, runs repeat, the report carries a `storage` section, and options parse."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bootstrap.cli import app
from kernels.artifact_codec import encode_file
from simulations.run import run_simulation
from simulations.scenario import Scenario, ScenarioError, build_scenario, scenario_from_toml
from simulations.storage_model import share_bytes
from simulations.world import World

HEAVY_PERMANENT_CHURN = """
[run]
nodes = 30
duration = "3m"
seed = 2
[churn]
rate = "30%/min"
crash_fraction = 1.0
restart_fraction = 0.0
[storage]
artifacts = 40
artifact_size = "1MiB"
"""


def test_with_repair_nothing_is_lost_under_churn_with_restarts_and_repairs_happen() -> None:
    scenario = build_scenario(nodes=30, duration="3m", churn="10%/min", seed=5, artifacts=40, artifact_mb=1.0)
    report = run_simulation(scenario)
    assert report.ok, report.violations or report.stopped_early
    storage = report.storage
    assert storage is not None
    assert storage["artifacts"] == 40 and (storage["k"], storage["n"]) == (3, 10)
    assert storage["lost"] == 0 and storage["unavailable_at_end"] == 0
    assert storage["repairs_ok"] > 0 and storage["shares_rebuilt"] >= storage["repairs_ok"]
    assert storage["repair_bytes"] > 0 and storage["repair_bytes_per_node_per_hour"] > 0
    assert storage["min_healthy"] >= 3
    assert storage["core_counters"]["repairs_done"] == storage["repairs_ok"]
    assert sum(storage["healthy_at_end"].values()) == 40
    # every byte moved is a whole share: fetched from a source or pushed to a target
    assert storage["repair_bytes"] % storage["share_bytes"] == 0


def test_repair_off_loses_artifacts_that_repair_keeps_under_heavy_permanent_crashes() -> None:
    with_repair = run_simulation(scenario_from_toml(HEAVY_PERMANENT_CHURN))
    without = run_simulation(scenario_from_toml(HEAVY_PERMANENT_CHURN + "repair = false\n"))
    assert with_repair.ok and without.ok
    assert with_repair.storage is not None and without.storage is not None
    assert without.storage["lost"] > 0
    assert without.storage["lost"] > with_repair.storage["lost"]
    assert without.storage["repairs_started"] == 0 and without.storage["repair_bytes"] == 0
    assert without.storage["first_loss_s"] is not None
    assert without.storage["unavailable_at_end"] >= without.storage["lost"]
    # the hub still checks: it declares what it sees lost, and drops what it would have repaired
    assert without.storage["declared_lost"] > 0 and without.storage["repairs_dropped"] > 0
    assert with_repair.storage["repairs_ok"] > 0


def test_same_seed_same_storage_section_and_digest() -> None:
    scenario = build_scenario(nodes=30, duration="2m", churn="10%/min", seed=3, artifacts=40, artifact_mb=4.0)
    first = run_simulation(scenario)
    second = run_simulation(scenario)
    assert first.digest == second.digest
    assert first.to_json()["storage"] == second.to_json()["storage"]
    other = run_simulation(replace(scenario, seed=4))
    assert other.to_json()["storage"] != first.to_json()["storage"]


def test_no_artifacts_no_storage_section_and_no_storage_cores() -> None:
    report = run_simulation(build_scenario(nodes=20, duration="75s", churn="10%/min", seed=3))
    assert report.storage is None and report.to_json()["storage"] is None
    assert report.to_json()["scenario"]["storage"]["artifacts"] == 0


def test_lying_holders_fail_audits_and_their_shares_are_repaired() -> None:
    scenario = scenario_from_toml(
        """
        [run]
        nodes = 30
        duration = "3m"
        seed = 4
        [churn]
        rate = "0"
        [storage]
        artifacts = 40
        artifact_size = "1MiB"
        liars = "40%"
        audit_interval_s = 0.5
        """
    )
    report = run_simulation(scenario)
    assert report.ok
    storage = report.storage
    assert storage is not None and storage["liar_nodes"] > 0
    counters = storage["core_counters"]
    assert counters["audits_failed"] > 0 and storage["audits_not_ok"] == counters["audits_failed"]
    assert storage["repairs_ok"] > 0  # no churn at all: only the failed audits made repairs due
    assert storage["lost"] == 0


def test_storage_table_and_options_parse_and_bad_values_are_refused() -> None:
    scenario = scenario_from_toml(
        """
        [storage]
        artifacts = 2000
        artifact_size = "64MiB"
        k = 4
        n = 12
        repair = false
        bandwidth = "1Gbit/s"
        liars = "5%"
        max_concurrent_repairs = 4
        """
    )
    storage = scenario.storage
    assert (storage.artifacts, storage.artifact_bytes, storage.k, storage.n) == (2000, 64 * 2**20, 4, 12)
    assert storage.repair is False and storage.bandwidth_bytes_per_s == 125e6 and storage.liars == 0.05
    assert storage.core == {"max_concurrent_repairs": 4}
    assert World(replace(scenario, nodes=5)).storage_config.max_concurrent_repairs == 4
    built = build_scenario(artifacts=10, artifact_mb=0.5, k=2, n=5, repair=False)
    assert (built.storage.artifacts, built.storage.artifact_bytes) == (10, 2**19)
    assert (built.storage.k, built.storage.n, built.storage.repair) == (2, 5, False)
    assert Scenario().storage.artifacts == 0
    with pytest.raises(ScenarioError, match="storage: unknown key"):
        scenario_from_toml("[storage]\nartifact = 3")
    with pytest.raises(ScenarioError, match="need 1 <= k <= n"):
        scenario_from_toml("[storage]\nk = 5\nn = 4")
    with pytest.raises(ScenarioError, match=r"storage\.artifact_size"):
        scenario_from_toml('[storage]\nartifact_size = "lots"')
    with pytest.raises(ScenarioError, match=r"storage\.repair"):
        scenario_from_toml('[storage]\nrepair = "no"')
    with pytest.raises(ScenarioError, match=r"storage: .*max_concurrent_repairs"):
        World(scenario_from_toml("[storage]\nmax_concurrent_repairs = 0"))


def test_share_bytes_are_what_the_codec_writes_for_incompressible_content(tmp_path: Path) -> None:
    source = tmp_path / "artifact"
    chunk = 64 * 1024
    source.write_bytes(random.Random(1).randbytes(5 * chunk + 123))
    out = tmp_path / "shares"
    out.mkdir()
    layout = encode_file(source, out, 3, 5, chunk_bytes=chunk)
    sizes = {(out / f"{index}.share").stat().st_size for index in range(5)}
    assert sizes == {share_bytes(5 * chunk + 123, 3, chunk)} == set(layout.share_sizes)


def test_simulate_command_prints_the_storage_section() -> None:
    result = CliRunner().invoke(
        app,
        [
            "simulate",
            "--nodes",
            "20",
            "--duration",
            "75s",
            "--churn",
            "5%/min",
            "--artifacts",
            "20",
            "--artifact-mb",
            "1",
            "--no-repair",
            "--json",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["storage"]["artifacts"] == 20 and data["storage"]["repair"] is False
    assert data["scenario"]["storage"]["artifact_bytes"] == 2**20
