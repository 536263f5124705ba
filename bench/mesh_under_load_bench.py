"""Five real `ileices` processes with and without busy processes that occupy 2x the cores
(issue 13): false deaths, hub availability, convergence, and what the load cost the nodes.

Both runs are the same scenario (`tests/support/load_run.py`): a founder and four joiners
on loopback, every node's status sampled once a second for `--seconds`, a note published
every `--note-every` seconds on the next node in turn. The loaded run starts `--busy`
pure-Python spin loops (default 2 x cores, nice 0 like the nodes) before the founder, so
joins and the first elections are loaded too. Definitions of every figure are in
`tests/support/load_run.py` (`LoadRunResult`).

    .venv/bin/python bench/mesh_under_load_bench.py                  # 300 s each, 2 x cores busy
    .venv/bin/python bench/mesh_under_load_bench.py --seconds 90 --json out.json
    .venv/bin/python bench/mesh_under_load_bench.py --only loaded --busy 8

The node directories (logs in `<name>/logs/node.log`) are kept under `--keep DIR`, else
removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the repository root, for tests.support

from tests.support.load_run import (  # noqa: E402
    LoadRunResult,
    leftover_busy_processes,
    run_under_load,
)

CONVERGENCE_BOUND_S = 30.0
"""The bound the five-process test gives convergence (tests/system/test_mesh_processes.py)."""


def _fmt(value: float | None, digits: int = 1, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:.{digits}f}{suffix}"


def _sum_counter(result: LoadRunResult, group: str, name: str) -> int:
    total = 0
    for node in result.nodes.values():
        counters: dict[str, int] = getattr(node, group)
        total += int(counters.get(name, 0))
    return total


def _max_counter(result: LoadRunResult, group: str, name: str) -> int:
    return max((int(getattr(node, group).get(name, 0)) for node in result.nodes.values()), default=0)


def rows(runs: dict[str, LoadRunResult]) -> list[tuple[str, list[str]]]:
    """(figure, one value per run) for the comparison table."""

    def each(render: Any) -> list[str]:
        return [render(result) for result in runs.values()]

    def hub(result: LoadRunResult) -> str:
        fraction = result.hub_acting_fraction
        text = _fmt(None if fraction is None else 100 * fraction, 2, " %")
        return f"{text} ({result.hub_acting_samples}/{result.hub_samples})"

    def gaps(result: LoadRunResult) -> str:
        if not result.hub_gaps:
            return "none"
        longest = max(length for _, length in result.hub_gaps)
        return f"{len(result.hub_gaps)}, longest {longest:.1f} s"

    def notes(result: LoadRunResult, field: str) -> str:
        values = [getattr(note, field) for note in result.notes]
        known = sorted(v for v in values if v is not None)
        if not known:
            return "n/a"
        median = known[len(known) // 2]
        missing = len(values) - len(known)
        return f"{median:.2f} / {known[-1]:.2f} s" + (f" ({missing} never)" if missing else "")

    def per_node(group: str, name: str) -> Any:
        return lambda r: f"{_sum_counter(r, group, name)} (max {_max_counter(r, group, name)})"

    def stepped_down(result: LoadRunResult) -> str:
        found: dict[str, int] = {}
        for node in result.nodes.values():
            for key, value in node.election_counters.items():
                if key.startswith("stepped_down_"):
                    found[key.removeprefix("stepped_down_")] = (
                        found.get(key.removeprefix("stepped_down_"), 0) + value
                    )
        return ", ".join(f"{k} {v}" for k, v in sorted(found.items())) or "0"

    def deaths(result: LoadRunResult, seen_in: str) -> str:
        found = [death for death in result.false_deaths if death.seen_in == seen_in]
        subjects = sorted({death.subject for death in found})
        return f"{len(found)}" + (f" (of {', '.join(subjects)})" if found else "")

    def log_states(result: LoadRunResult) -> str:
        def total(field: str) -> str:
            totals: dict[str, int] = {}
            for node in result.nodes.values():
                for state, count in getattr(node, field).items():
                    totals[state] = totals.get(state, 0) + count
            return ", ".join(f"{k} {v}" for k, v in sorted(totals.items())) or "none"

        return f"{total('log_states')} (setup: {total('log_states_setup')})"

    def membership(name: str) -> Any:
        def render(result: LoadRunResult) -> str:
            if not any(node.membership_counters for node in result.nodes.values()):
                return "not in status"
            return f"{_sum_counter(result, 'membership_counters', name)}"

        return render

    return [
        ("busy processes", each(lambda r: f"{r.busy} on {r.cpu_count} cores")),
        ("window / samples", each(lambda r: f"{r.duration_s:.0f} s / {r.samples}")),
        ("sample gap mean / max", each(lambda r: f"{r.mean_sample_gap_s:.2f} / {r.max_sample_gap_s:.2f} s")),
        ("status requests unanswered", each(lambda r: str(r.status_failures))),
        (
            "status answer max, per node",
            each(lambda r: ", ".join(f"{mx:.1f}" for _, mx in r.status_latency.values()) + " s"),
        ),
        ("status answers > 1 s", each(lambda r: str(len(r.slow_samples)))),
        (
            "load average at start / mean / max",
            each(lambda r: f"{r.loadavg_start:.1f} / {r.loadavg_mean:.1f} / {r.loadavg_max:.1f}"),
        ),
        ("machine CPU busy (100 = one core)", each(lambda r: f"{r.machine_busy_percent:.0f} %")),
        ("busy processes: core share each", each(lambda r: _fmt(r.busy_core_share, 2))),
        (
            "nodes' CPU, each (100 = one core)",
            each(lambda r: ", ".join(f"{n.cpu_percent:.0f}" for n in r.nodes.values()) + " %"),
        ),
        ("harness CPU (sampling, notes)", each(lambda r: f"{r.harness_cpu_s:.1f} s")),
        ("nodes exited", each(lambda r: ", ".join(r.exited) or "none")),
        ("setup (founder up -> all 5 answer)", each(lambda r: f"{r.setup_s:.1f} s")),
        ("false deaths: seen in status samples", each(lambda r: deaths(r, "status"))),
        ("false deaths: dead/left verdicts logged", each(lambda r: deaths(r, "log"))),
        ("suspect sightings", each(lambda r: str(r.suspect_sightings))),
        ("member lines in node logs, window (setup)", each(log_states)),
        ("hub acting, after first acting", each(hub)),
        (
            "hub acting, time-weighted",
            each(
                lambda r: _fmt(
                    None if r.hub_acting_time_fraction is None else 100 * r.hub_acting_time_fraction, 2, " %"
                )
            ),
        ),
        ("gaps with no acting hub", each(gaps)),
        ("samples with two acting", each(lambda r: str(r.double_acting_samples))),
        ("hub terms seen", each(lambda r: str(len(r.hub_terms)))),
        ("initial convergence (all answer -> agree)", each(lambda r: _fmt(r.initial_convergence_s, 1, " s"))),
        ("note -> durable on all, median / max", each(lambda r: notes(r, "reached_all_s"))),
        ("note -> all agree (1 s samples), median / max", each(lambda r: notes(r, "agreed_s"))),
        ("samples in which all agree", each(lambda r: f"{r.agreed_samples}/{r.samples}")),
        (
            "convergence max vs bound",
            each(lambda r: f"{_fmt(r.convergence_max_s, 1)} s vs {CONVERGENCE_BOUND_S:.0f} s"),
        ),
        ("loop_lag_reports, all nodes", each(per_node("node_counters", "loop_lag_reports"))),
        (
            "loop_lag_worst_ms, worst node",
            each(lambda r: str(_max_counter(r, "node_counters", "loop_lag_worst_ms"))),
        ),
        ("membership declared_dead", each(membership("declared_dead"))),
        ("membership late_timers", each(membership("late_timers"))),
        ("membership loop_lag", each(membership("loop_lag"))),
        ("membership probes_excused", each(membership("probes_excused"))),
        ("membership verdicts_postponed", each(membership("verdicts_postponed"))),
        ("election campaigns, all nodes", each(per_node("election_counters", "campaigns"))),
        ("election campaign_timeouts", each(per_node("election_counters", "campaign_timeouts"))),
        ("election campaigns_won", each(per_node("election_counters", "campaigns_won"))),
        ("election stepped_down_*", each(stepped_down)),
        (
            "mailbox drops, all nodes",
            each(lambda r: str(sum(sum(n.mailbox_dropped.values()) for n in r.nodes.values()))),
        ),
    ]


def print_table(runs: dict[str, LoadRunResult]) -> None:
    table = rows(runs)
    width = max(len(name) for name, _ in table)
    columns = [max(len(label), *(len(values[i]) for _, values in table)) for i, label in enumerate(runs)]
    print(
        f"{'figure':<{width}} | "
        + " | ".join(f"{label:<{w}}" for label, w in zip(runs, columns, strict=True))
    )
    print("-" * width + "-+-" + "-+-".join("-" * w for w in columns))
    for name, values in table:
        print(f"{name:<{width}} | " + " | ".join(f"{v:<{w}}" for v, w in zip(values, columns, strict=True)))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=300.0, help="measured window of each run")
    parser.add_argument(
        "--busy", type=int, default=2 * (os.cpu_count() or 1), help="busy processes (loaded run)"
    )
    parser.add_argument("--note-every", type=float, default=20.0, help="seconds between published notes")
    parser.add_argument("--only", choices=("both", "loaded", "unloaded"), default="both")
    parser.add_argument("--json", type=Path, help="also write every measurement to this file")
    parser.add_argument("--keep", type=Path, help="keep the node directories (and logs) under this directory")
    args = parser.parse_args()

    plan = [("unloaded", 0), ("loaded", args.busy)]
    if args.only != "both":
        plan = [(label, busy) for label, busy in plan if label == args.only]
    runs: dict[str, LoadRunResult] = {}
    with tempfile.TemporaryDirectory(prefix="ileices-load-") as scratch:
        base = args.keep or Path(scratch)
        for label, busy in plan:
            started = time.monotonic()
            print(f"{label}: {busy} busy processes, {args.seconds:.0f} s ...", flush=True)
            runs[label] = run_under_load(
                base / label, busy=busy, duration=args.seconds, note_every=args.note_every
            )
            print(f"{label}: done in {time.monotonic() - started:.0f} s", flush=True)
            print(runs[label].describe(), flush=True)
    leftovers = leftover_busy_processes()
    print()
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores")
    print_table(runs)
    document: dict[str, Any] = {label: result.summary() for label, result in runs.items()}
    document["leftover_busy_processes"] = leftovers
    text = json.dumps(document, indent=2, default=str)
    if args.json is not None:
        args.json.write_text(text)
    print()
    print(text)
    return 1 if leftovers else 0


if __name__ == "__main__":
    sys.exit(main())
