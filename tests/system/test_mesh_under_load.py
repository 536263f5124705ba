"""Issue 13: five real `ileices` processes stay a healthy mesh while busy processes occupy
twice the machine's cores, compared with the same run unloaded.

Each run (tests/support/load_run.py) starts a founder and four joiners on loopback and
samples every node's status once a second for ILEICES_LOAD_SECONDS (default 300, the
issue's five minutes; set e.g. 60 while developing), publishing a note every 20 s. The
loaded run starts 2 x cores pure-Python spin loops at the nodes' priority before the
founder and kills them at the end (each is also bounded in time by itself).

What must hold under load (the issue's words):
- no live node is declared dead (nor `left`, nor dropped from a view);
- a hub acts at least 99 % of the time after the first election;
- every node converges to one view within the same bound as without load: the bound the
  five-process test gives convergence (30 s), for the unloaded and the loaded run alike.

Both runs take about 2 x (ILEICES_LOAD_SECONDS + 1 minute), hence `slow`:
    .venv/bin/pytest -m slow tests/system/test_mesh_under_load.py -s
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.support.load_run import SETUP_ALLOWANCE_S, LoadRunResult, leftover_busy_processes, run_under_load

LOAD_SECONDS = float(os.environ.get("ILEICES_LOAD_SECONDS", "300"))
CONVERGENCE_BOUND_S = 30.0
"""tests/system/test_mesh_processes.py's bound on five processes converging (wait_converged)."""
HUB_ACTING_FLOOR = 0.99
LOADED_MACHINE_SHARE = 0.9
"""The loaded run counts only if the machine's cores were at least this busy (the spin loops
really took the cores, rather than, say, failing to start)."""

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(int(2 * (LOAD_SECONDS + SETUP_ALLOWANCE_S + 120))),
]


@dataclass
class Runs:
    unloaded: LoadRunResult
    loaded: LoadRunResult


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    """The baseline first, then the loaded run, on the same machine minutes apart."""
    unloaded = run_under_load(tmp_path_factory.mktemp("unloaded"), busy=0, duration=LOAD_SECONDS)
    print(f"\nunloaded:\n{unloaded.describe()}")
    loaded = run_under_load(tmp_path_factory.mktemp("loaded"), duration=LOAD_SECONDS)
    print(f"\nloaded:\n{loaded.describe()}")
    yield Runs(unloaded, loaded)
    assert leftover_busy_processes() == [], "busy processes outlived the run"


def test_the_busy_processes_occupied_the_machine(runs: Runs) -> None:
    loaded = runs.loaded
    assert loaded.busy == 2 * loaded.cpu_count
    assert loaded.machine_busy_percent >= LOADED_MACHINE_SHARE * 100 * loaded.cpu_count, loaded.describe()
    assert leftover_busy_processes() == []


def test_no_live_node_is_declared_dead_under_load(runs: Runs) -> None:
    for result in (runs.loaded, runs.unloaded):
        assert result.exited == [], result.describe()
        assert result.false_deaths == [], result.describe()
        for name, node in result.nodes.items():
            # The nodes' own account agrees: no dead/left verdict logged during the window,
            # and membership's counter (where status carries it) stayed at zero.
            assert not {"dead", "left"} & set(node.log_states), (name, node.log_lines)
            assert node.membership_counters.get("declared_dead", 0) == 0, (name, node.membership_counters)


def test_a_hub_acts_99_percent_of_the_time_under_load(runs: Runs) -> None:
    loaded = runs.loaded
    assert loaded.first_acting_at_s is not None, loaded.describe()
    fraction = loaded.hub_acting_fraction
    assert fraction is not None and fraction >= HUB_ACTING_FLOOR, loaded.describe()


def test_convergence_under_load_stays_within_the_unloaded_bound(runs: Runs) -> None:
    for result in (runs.unloaded, runs.loaded):
        assert result.notes, "no note was published during the window"
        converged = result.convergence_max_s
        assert converged is not None and converged <= CONVERGENCE_BOUND_S, result.describe()
        reached = result.note_reached_all_max_s
        assert reached is not None and reached <= CONVERGENCE_BOUND_S, result.describe()
