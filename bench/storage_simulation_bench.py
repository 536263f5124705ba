"""Storage under churn in the simulator (issue 14): the same run with repair on and with repair off.

The issue's scenario: 1000 nodes, 1 virtual hour, 5 %/min churn with restarts (the
simulator's default churn: half the departures are crashes, half of those restart after
60 s on average), 2000 artifacts of 64 MiB coded 3-of-10. It is run twice with the same
seed, once with repair and once without (Tahoe's default), and the two `storage`
sections are printed side by side: artifacts lost, repairs, repair traffic (per node per
hour, and on the busiest node), and time below the repair threshold. See
docs/simulation.md, "Storage", for the model.

Cost: the storage model adds nothing measurable to a run (200 nodes, 10 minutes: 35-36 s
with 400 artifacts, 37 s without); the 1000-node hour is the simulator's own cost, more
than half an hour per run on the 2-core machine (the runs grow slower as joiners' records
pile up), so run the pair in the background. Check it at a small size first:

    .venv/bin/python bench/storage_simulation_bench.py --nodes 200 --duration 10m --artifacts 400
    .venv/bin/python bench/storage_simulation_bench.py                      # the issue's run, both ways
    .venv/bin/python bench/storage_simulation_bench.py --artifact-mb 1 --core max_concurrent_repairs=8
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from simulations.report import Report
from simulations.run import run_simulation
from simulations.scenario import Scenario, build_scenario

ROWS = (
    "artifacts",
    "k",
    "n",
    "share_bytes",
    "stored_bytes",
    "repair_threshold",
    "lost",
    "first_loss_s",
    "unavailable_at_end",
    "min_healthy",
    "healthy_at_end",
    "below_threshold_fraction",
    "repair_due_fraction",
    "unavailable_fraction",
    "repairs_started",
    "repairs_ok",
    "repairs_failed",
    "repairs_abandoned",
    "repairs_dropped",
    "shares_rebuilt",
    "pushes_failed",
    "repair_p50_s",
    "repair_p95_s",
    "repair_bytes",
    "repair_bytes_per_hour",
    "repair_bytes_per_node_per_hour",
    "busiest_node_repair_bytes_per_s",
    "declared_lost",
    "audits",
    "audits_not_ok",
    "hub_cores_built",
)


def _core_overrides(pairs: list[str]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--core wants KEY=VALUE, got {pair!r}")
        number = float(value)
        overrides[key] = int(number) if number.is_integer() and "." not in value else number
    return overrides


def _run(scenario: Scenario, label: str) -> Report:
    print(f"[{time.strftime('%H:%M:%S')}] {label}: starting", flush=True)
    report = run_simulation(scenario, progress=sys.stderr.isatty())
    print(
        f"[{time.strftime('%H:%M:%S')}] {label}: wall {report.wall_seconds:.1f} s "
        f"(setup {report.setup_seconds:.1f} s, speedup {report.speedup:.2f}x), "
        f"peak RSS {report.peak_rss_mb:.0f} MiB, invariants {'ok' if report.ok else 'FAILED'}, "
        f"churn {report.churn}",
        flush=True,
    )
    return report


def _cell(value: Any) -> str:
    if isinstance(value, dict):
        return ",".join(f"{k}:{v}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--duration", default="1h")
    parser.add_argument("--churn", default="5%/min")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--artifacts", type=int, default=2000)
    parser.add_argument("--artifact-mb", type=float, default=64.0, help="artifact size in MiB")
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--only", choices=("on", "off"), help="run only the repair-on or repair-off run")
    parser.add_argument(
        "--core", action="append", default=[], help="a StorageConfig override, e.g. max_concurrent_repairs=8"
    )
    parser.add_argument("--out", type=Path, help="write both reports' JSON here")
    args = parser.parse_args()

    scenario = build_scenario(
        nodes=args.nodes,
        duration=args.duration,
        churn=args.churn,
        seed=args.seed,
        artifacts=args.artifacts,
        artifact_mb=args.artifact_mb,
        k=args.k,
        n=args.n,
    )
    core = _core_overrides(args.core)
    if core:
        scenario = replace(scenario, storage=replace(scenario.storage, core=core))
    print(
        f"{args.nodes} nodes, {args.duration}, churn {args.churn} ({scenario.churn}), seed {args.seed}, "
        f"{args.artifacts} artifacts of {args.artifact_mb:g} MiB, {args.k}-of-{args.n}, "
        f"core {core or 'defaults'}",
        flush=True,
    )
    runs: dict[str, Report] = {}
    for label, repair in (("repair on", True), ("repair off", False)):
        if args.only is not None and args.only != label.split()[-1]:
            continue
        runs[label] = _run(replace(scenario, storage=replace(scenario.storage, repair=repair)), label)
        gc.collect()
    labels = list(runs)
    sections = {label: runs[label].to_json()["storage"] or {} for label in labels}
    width = max(len(row) for row in ROWS) + 2
    print()
    column = max([24] + [len(_cell(section.get(row))) + 2 for section in sections.values() for row in ROWS])
    print("".ljust(width) + "".join(label.rjust(column) for label in labels))
    for row in ROWS:
        print(row.ljust(width) + "".join(_cell(sections[label].get(row)).rjust(column) for label in labels))
    for label in labels:
        report = runs[label]
        print(f"{label}: digest {report.digest[:16]}, core counters {sections[label].get('core_counters')}")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        for label in labels:
            path = args.out / f"storage_{label.replace(' ', '_')}.json"
            path.write_text(json.dumps(runs[label].to_json(), indent=2) + "\n", encoding="utf-8")
    return 0 if all(report.ok for report in runs.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
