"""Scenario options and files: what parses, and the clear errors for what does not."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulations.scenario import (
    ScenarioError,
    build_scenario,
    parse_bandwidth,
    parse_churn_rate,
    parse_duration,
    parse_fraction,
    scenario_from_toml,
)
from simulations.world import World

FULL = """
[run]
nodes = 200
duration = "5m"
seed = 7
settle = "70s"

[network]
latency_median = "40ms"
latency_sigma = 0.3
loss = "1%"
bandwidth = "10MB/s"
regions = [{ name = "eu", weight = 2 }, { name = "us", weight = 1 }]
inter_region = { "eu-us" = "80ms" }

[churn]
rate = "5%/min"
crash_fraction = 0.7
restart_after = "45s"
stop = "3m"

[workload]
publish_rate = "2/s"
forge_rate = "6/min"

[membership]
protocol_period = 1.0
probe_timeout = 0.5

[dissemination]
fanout = 4

[[events]]
at = "30s"
action = "crash"
fraction = "20%"
region = "eu"
restart_after = "60s"

[[events]]
at = "1m"
action = "partition"
groups = [["eu"], ["us"]]
until = "90s"

[[events]]
at = "100s"
action = "join"
count = 50
over = "10s"

[[events]]
at = "110s"
action = "publish"
count = 20
"""


def test_units() -> None:
    assert parse_duration("10m") == 600
    assert parse_duration("1h30m") == 5400
    assert parse_duration("250ms") == 0.25
    assert parse_duration(12) == 12
    assert parse_fraction("5%", "x") == pytest.approx(0.05)
    assert parse_churn_rate("5%/min") == pytest.approx(0.05 / 60)
    assert parse_bandwidth("10MB/s", "x") == 10e6
    assert parse_bandwidth("8Mbit/s", "x") == 1e6


def test_full_file_parses() -> None:
    scenario = scenario_from_toml(FULL)
    assert scenario.nodes == 200 and scenario.duration_s == 300 and scenario.seed == 7
    assert scenario.network.loss == pytest.approx(0.01)
    assert scenario.network.inter_region_s == {("eu", "us"): 0.08}
    assert scenario.churn is not None and scenario.churn.crash_fraction == 0.7
    assert [e.action for e in scenario.events] == ["crash", "partition", "join", "publish"]
    assert scenario.events[1].groups == (("eu",), ("us",))
    assert scenario.membership == {"protocol_period": 1.0, "probe_timeout": 0.5}


def test_cli_options_override_file(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(FULL)
    scenario = build_scenario(nodes=300, churn="2%/min", loss="0%", seed=9, scenario_file=path)
    assert scenario.nodes == 300 and scenario.seed == 9 and scenario.network.loss == 0
    assert scenario.churn is not None and scenario.churn.rate_per_s == pytest.approx(0.02 / 60)
    assert scenario.churn.crash_fraction == 0.7  # kept from the file


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[run]\nnodes = 'many'", "run.nodes: expected a whole number"),
        ("[run]\nduration = '10 parsecs'", "run.duration: cannot read"),
        ("[network]\nloss = '150%'", "network.loss: must lie between"),
        ("[runn]\nnodes = 3", "scenario: unknown key(s) runn"),
        ("[churn]\nrate = '5%/fortnight'", "churn.rate: unknown time unit"),
        ("[[events]]\nat = '1m'\naction = 'explode'", "events[0].action: expected one of"),
        ("[[events]]\naction = 'heal'", "events[0]: missing 'at'"),
        ("[[events]]\nat = '1m'\naction = 'crash'", "needs exactly one of fraction or count"),
        ("[[events]]\nat = '1m'\naction = 'crash'\nfraction = 0.1\nregion = 'mars'", "unknown region 'mars'"),
        ("[[events]]\nat = '1m'\naction = 'partition'\nsplit = [0.5]", "events[0].split"),
        ("[[events]]\nat = '1m'\naction = 'kill'\nrole = 'janitor'", "unknown role 'janitor'"),
        ("[[events]]\nat = '1m'\naction = 'join'\ncount = 5\ncolour = 'red'", "unknown key(s) colour"),
        ("[[events]]\nat = '9m'\naction = 'heal'", "after the end of the run"),
        ("this is = = not toml", "not valid TOML"),
    ],
)
def test_errors_name_the_key(text: str, message: str) -> None:
    with pytest.raises(ScenarioError, match=None) as info:
        scenario_from_toml(text)
    assert message in str(info.value)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="cannot read scenario file"):
        build_scenario(scenario_file=tmp_path / "absent.toml")


def test_kill_hub_event_and_periodic_kills_parse() -> None:
    scenario = scenario_from_toml(
        "[run]\nkill_hub_every = '90s'\n[[events]]\nat = '1m'\naction = 'kill'\nrole = 'hub'\n"
        "restart_after = '20s'"
    )
    assert scenario.kill_hub_every_s == 90.0
    assert scenario.events[0].role == "hub" and scenario.events[0].restart_after_s == 20.0
    assert build_scenario(kill_hub_every="2m").kill_hub_every_s == 120.0
    assert build_scenario(kill_hub_every="0").kill_hub_every_s is None
    with pytest.raises(ScenarioError, match="election: unknown setting"):
        World(scenario_from_toml("[election]\nlease = 3.0"))


def test_unknown_protocol_setting_is_refused() -> None:
    scenario = scenario_from_toml("[membership]\nprotocol_perod = 1.0")
    with pytest.raises(ScenarioError, match="membership: unknown setting"):
        World(scenario)


def test_unhealed_partition_and_no_settle_time_are_refused() -> None:
    never_healed = scenario_from_toml("[[events]]\nat = '10s'\naction = 'partition'\nsplit = [0.5, 0.5]")
    with pytest.raises(ScenarioError, match="never healed"):
        World(never_healed)
    too_late = scenario_from_toml(
        "[run]\nduration = '2m'\n[[events]]\nat = '115s'\naction = 'join'\ncount = 3"
    )
    with pytest.raises(ScenarioError, match="convergence is checked"):
        World(too_late)
