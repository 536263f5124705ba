"""Hub safety sweep in the simulator: many seeds mixing partitions, message loss, churn and hub kills.

Each seed draws a small mesh (10-30 nodes), a loss rate (0-10 %), churn or none, a hub
kill period (20-45 s) and one random partition (half / half, 10-25 s), runs it through the
full simulator (real membership, dissemination and election cores, real encoding) and
keeps the invariants' verdicts. It must find zero terms with two hubs and zero
fenced-out records accepted (and no other invariant broken). Complements
`bench/election_safety_sweep.py`, which drives the election alone with clock drift.

    .venv/bin/python bench/hub_simulation_sweep.py              # 200 seeds
    .venv/bin/python bench/hub_simulation_sweep.py --seeds 5    # the CI-sized version
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


def sweep_scenario(seed: int) -> Scenario:
    """The seed's scenario: drawn from its own RNG, so seed N is always the same run."""
    rng = random.Random(seed)
    partition_at = rng.uniform(20.0, 60.0)
    data: dict[str, Any] = {
        "run": {
            "nodes": rng.randint(10, 30),
            "duration": 150,
            "seed": seed,
            "kill_hub_every": rng.uniform(20.0, 45.0),
            "check_interval": 20,
        },
        "network": {"loss": rng.choice([0.0, 0.02, 0.05, 0.10])},
        "workload": {"publish_rate": "0.5/s", "forge_rate": "3/min"},
        "events": [
            {
                "at": partition_at,
                "action": "partition",
                "split": [0.5, 0.5],
                "until": partition_at + rng.uniform(10.0, 25.0),
            }
        ],
    }
    if rng.random() < 0.5:
        data["churn"] = {"rate": "5%/min", "restart_after": "20s"}
    return scenario_from_mapping(data)


def run_sweep(seeds: range) -> dict[str, Any]:
    """Run every seed; returns the aggregate and the seeds that broke an invariant."""
    failed: list[dict[str, Any]] = []
    max_hubs = 0
    terms = 0
    kills = 0
    failovers: list[float] = []
    availability: list[float] = []
    fenced_checks = 0
    started = time.perf_counter()
    for seed in seeds:
        report = run_simulation(sweep_scenario(seed))
        hub = report.hub
        max_hubs = max(max_hubs, int(hub["max_hubs_per_term"]))
        terms += int(hub["terms"])
        kills += int(hub["kills"])
        fenced_checks += int(hub["fenced_checks"])
        for entry in hub["timeline"]:
            if entry["event"] == "failover":
                failovers.append(float(entry["after_s"]))
        if hub["availability"] is not None:
            availability.append(float(hub["availability"]))
        if not report.ok:
            failed.append({"seed": seed, "violations": report.violations, "stopped": report.stopped_early})
    return {
        "seeds": len(seeds),
        "wall_s": round(time.perf_counter() - started, 1),
        "failed_seeds": failed,
        "max_hubs_per_term": max_hubs,
        "terms": terms,
        "hub_kills": kills,
        "failovers": len(failovers),
        "failover_p50_s": percentile(failovers, 50),
        "failover_p95_s": percentile(failovers, 95),
        "failover_max_s": max(failovers, default=None),
        "availability_min": min(availability, default=None),
        "availability_median": percentile(availability, 50),
        "fenced_checks": fenced_checks,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--first-seed", type=int, default=1)
    args = parser.parse_args()
    result = run_sweep(range(args.first_seed, args.first_seed + args.seeds))
    print(json.dumps(result, indent=2))
    return 0 if not result["failed_seeds"] and result["max_hubs_per_term"] <= 1 else 1


if __name__ == "__main__":
    raise SystemExit(main())
