"""Hub failover at scale: N simulated nodes, 5 %/min churn, the acting hub crashed every few minutes.

Prints the `hub` figures of issue 5 (terms, max hubs per term, failover p50/p95 against
the failure-detection p95, availability) with the run's speed, and checks them against
the targets: max_hubs_per_term == 1, failover_p95_s <= 2 x detection p95, availability
>= 99 %. Exit status 1 when a target or an invariant is missed.

    .venv/bin/python bench/hub_simulation_bench.py                      # 1000 nodes, 10 min
    .venv/bin/python bench/hub_simulation_bench.py --nodes 300 --duration 10m --kill-hub-every 3m
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from simulations.plots import write_plots
from simulations.run import run_simulation
from simulations.scenario import build_scenario

AVAILABILITY_TARGET = 0.99
FAILOVER_OVER_DETECTION_TARGET = 2.0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--duration", default="10m")
    parser.add_argument("--churn", default="5%/min")
    parser.add_argument("--kill-hub-every", default="3m")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="write report.json and plots here")
    args = parser.parse_args()

    scenario = build_scenario(
        nodes=args.nodes,
        duration=args.duration,
        churn=args.churn,
        seed=args.seed,
        kill_hub_every=args.kill_hub_every,
    )
    report = run_simulation(scenario, progress=sys.stderr.isatty())
    if args.out is not None:
        report.write(args.out)
        write_plots(report, args.out)
    hub = {key: value for key, value in report.to_json()["hub"].items() if key != "timeline"}
    detection_p95 = report.failure_detection.get("p95_s")
    failover_p95 = hub.get("failover_p95_s")
    availability = hub.get("availability")
    checks = {
        "invariants_ok": report.ok,
        "max_hubs_per_term_is_1": hub.get("max_hubs_per_term") == 1,
        "failover_p95_within_2x_detection_p95": (
            isinstance(failover_p95, float)
            and isinstance(detection_p95, float)
            and failover_p95 <= FAILOVER_OVER_DETECTION_TARGET * detection_p95
        ),
        "availability_at_least_99pct": (
            isinstance(availability, float) and availability >= AVAILABILITY_TARGET
        ),
    }
    summary = {
        "nodes": args.nodes,
        "virtual_s": report.virtual_seconds,
        "wall_s": round(report.wall_seconds, 1),
        "speedup": round(report.speedup, 3),
        "peak_rss_mb": report.peak_rss_mb,
        "churn": report.churn,
        "failure_detection_p95_s": detection_p95,
        "hub": hub,
        "stopped_early": report.stopped_early,
        "checks": checks,
    }
    print(json.dumps(summary, indent=2))
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
