"""Failover under repeated hub kills in the simulator: is the hub back fast, and there most of the time?

Issue 13's bar: with the hub killed every 30-60 s, loss up to 5 % and heavy-tailed
latency (log-normal, sigma 0.8), over at least 20 seeds,
- failover p95 (hub killed -> a new hub acts) at most 2x failure-detection p95;
- hub availability (a hub acts, sampled every second after the first election) >= 98 %;
- every invariant holds (one hub per term, fencing, convergence).

Each seed draws its kill period and loss from its own RNG, so seed N is always the same
run; the whole mesh runs the real membership, dissemination and election cores.

    .venv/bin/python bench/hub_kill_sweep.py                     # 20 seeds, 50 nodes, 5 min each
    .venv/bin/python bench/hub_kill_sweep.py --seeds 3 --nodes 20 --duration 180
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from simulations.metrics import percentile
from simulations.run import run_simulation
from simulations.scenario import Scenario, scenario_from_mapping


def kill_scenario(seed: int, nodes: int, duration: float, election: dict[str, Any] | None = None) -> Scenario:
    """The seed's scenario: kill period 30-60 s, loss 0-5 %, latency sigma 0.8."""
    rng = random.Random(seed)
    data: dict[str, Any] = {
        "run": {
            "nodes": nodes,
            "duration": duration,
            "seed": seed,
            "kill_hub_every": round(rng.uniform(30.0, 60.0), 1),
            "check_interval": 30,
        },
        "network": {"loss": round(rng.uniform(0.0, 0.05), 3), "latency_sigma": 0.8},
        "workload": {"publish_rate": "0.2/s"},
    }
    if election:
        data["election"] = election
    return scenario_from_mapping(data)


def run_sweep(
    seeds: range, nodes: int, duration: float, verbose: bool, election: dict[str, Any] | None = None
) -> dict[str, Any]:
    failovers: list[float] = []
    detections: list[float] = []
    availability: list[float] = []
    failed: list[dict[str, Any]] = []
    per_seed: list[dict[str, Any]] = []
    kills = unfinished = 0
    started = time.perf_counter()
    for seed in seeds:
        scenario = kill_scenario(seed, nodes, duration, election)
        report = run_simulation(scenario)
        hub = report.hub
        seed_failovers = [float(e["after_s"]) for e in hub["timeline"] if e["event"] == "failover"]
        failovers.extend(seed_failovers)
        detections.extend(report.series.detection_times)
        kills += int(hub["kills"])
        unfinished += int(hub["failovers_unfinished"])
        if hub["availability"] is not None:
            availability.append(float(hub["availability"]))
        if not report.ok:
            failed.append({"seed": seed, "violations": report.violations})
        row = {
            "seed": seed,
            "kill_every_s": scenario.kill_hub_every_s,
            "loss": scenario.network.loss,
            "failover_max_s": max(seed_failovers, default=None),
            "availability": hub["availability"],
            "ok": report.ok,
        }
        per_seed.append(row)
        if verbose:
            print(json.dumps(row), file=sys.stderr, flush=True)
    failover_p95 = percentile(failovers, 95)
    detection_p95 = percentile(detections, 95)
    return {
        "seeds": len(seeds),
        "nodes": nodes,
        "duration_s": duration,
        "wall_s": round(time.perf_counter() - started, 1),
        "hub_kills": kills,
        "failovers": len(failovers),
        "failovers_unfinished": unfinished,
        "failover_p50_s": percentile(failovers, 50),
        "failover_p95_s": failover_p95,
        "failover_max_s": max(failovers, default=None),
        "detection_p95_s": detection_p95,
        "failover_p95_over_detection_p95": (
            round(failover_p95 / detection_p95, 2) if failover_p95 and detection_p95 else None
        ),
        "availability_min": min(availability, default=None),
        "availability_mean": round(sum(availability) / len(availability), 4) if availability else None,
        "failed_seeds": failed,
        "per_seed": per_seed,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--duration", type=float, default=300.0, help="virtual seconds per seed")
    parser.add_argument("--quiet", action="store_true", help="no per-seed lines on stderr")
    parser.add_argument(
        "--election",
        default="",
        help='election knobs as JSON, e.g. \'{"lease_s": 1.5, "renew_interval": 0.5}\'',
    )
    args = parser.parse_args()
    election = json.loads(args.election) if args.election else None
    result = run_sweep(
        range(args.first_seed, args.first_seed + args.seeds),
        args.nodes,
        args.duration,
        not args.quiet,
        election,
    )
    print(json.dumps(result, indent=2))
    ratio = result["failover_p95_over_detection_p95"]
    good = (
        not result["failed_seeds"]
        and ratio is not None
        and ratio <= 2.0
        and (result["availability_min"] or 0) >= 0.98
    )
    return 0 if good else 1


if __name__ == "__main__":
    raise SystemExit(main())
