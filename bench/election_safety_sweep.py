"""Election safety sweep: many seeds of partitions, message loss, clock drift and hub kills; count violations.

Run: .venv/bin/python bench/election_safety_sweep.py [--seeds 200] [--duration 60] [--json]

Each seed builds a small mesh (5, 7 or 9 nodes) in the in-test cluster of
tests/support/election_cluster.py (store + dissemination + election cores per node, virtual
time, real encode/decode, per-node clock rates off by up to 1 %), then every few seconds
does one of: kill the acting hub (restarting it later), cut the hub off with a minority,
split the mesh at random, kill a random node. Loss is 0, 5 or 20 % per seed.
It reports what must be zero (terms with two hubs, instants with two nodes acting,
fenced-out hub records accepted, hub records published while not acting) and the
failover times: from the hub's kill or isolation to another node acting as hub.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for tests.support

from protocols.common.identity import NodeId
from tests.support.election_cluster import ElectionCluster


@dataclass
class TrialResult:
    seed: int
    nodes: int
    loss: float
    max_hubs_per_term: int
    acting_overlaps: int
    fenced_accepted: int
    published_while_not_acting: int
    hub_conflicts: int
    fenced_refused: int
    terms: int
    failovers: list[float] = field(default_factory=list)
    unrecovered: int = 0


def run_trial(seed: int, duration: float = 60.0) -> TrialResult:
    rng = random.Random(seed)
    nodes = rng.choice([5, 7, 9])
    loss = rng.choice([0.0, 0.05, 0.2])
    cluster = ElectionCluster(
        n=nodes, seed=seed, loss=loss, latency=(0.002, rng.choice([0.02, 0.1, 0.3])), drift=0.01
    )
    failovers: list[float] = []
    unrecovered = 0
    pending: tuple[float, NodeId, int] | None = None  # (since, old hub, its term)
    restarts: list[tuple[float, NodeId]] = []
    heal_at: float | None = None
    next_fault = rng.uniform(4.0, 8.0)
    step = 0.05
    while cluster.now < duration:
        cluster.run_until(cluster.now + step)
        now = cluster.now
        acting = cluster.acting_hub()
        if pending is not None and acting is not None and acting[0] != pending[1] and acting[1] > pending[2]:
            failovers.append(now - pending[0])
            pending = None
        for at, node in [r for r in restarts if r[0] <= now]:
            restarts.remove((at, node))
            cluster.restart(node)
        if heal_at is not None and now >= heal_at:
            cluster.heal()
            heal_at = None
        if now < next_fault or now > duration - 15.0:
            continue
        next_fault = now + rng.uniform(8.0, 15.0)
        if pending is not None:
            unrecovered += 1  # the last fault did not see a failover before this one: counted, not timed
            pending = None
        live = cluster.live()
        fault = rng.choice(["kill_hub", "kill_hub", "isolate_hub", "split", "kill_other"])
        if fault in ("kill_hub", "isolate_hub") and acting is not None:
            hub, term = acting
            pending = (now, hub, term)
            if fault == "kill_hub":
                cluster.kill(hub)
                restarts.append((now + rng.uniform(2.0, 12.0), hub))
            else:
                minority = rng.sample([n for n in live if n != hub], rng.randrange(0, (len(live) - 1) // 2))
                cluster.partition([hub, *minority])
                heal_at = now + rng.uniform(5.0, 12.0)
        elif fault == "split":
            cut = rng.sample(live, rng.randrange(1, len(live)))
            cluster.partition(cut)
            heal_at = now + rng.uniform(2.0, 10.0)
        elif fault == "kill_other" and len(live) > 3:
            victim = rng.choice([n for n in live if acting is None or n != acting[0]])
            cluster.kill(victim)
            restarts.append((now + rng.uniform(2.0, 12.0), victim))
    if pending is not None:
        unrecovered += 1
    safety = cluster.finish()
    return TrialResult(
        seed=seed,
        nodes=nodes,
        loss=loss,
        max_hubs_per_term=safety.max_hubs_per_term,
        acting_overlaps=safety.acting_overlaps,
        fenced_accepted=safety.fenced_accepted,
        published_while_not_acting=safety.published_while_not_acting,
        hub_conflicts=safety.hub_conflicts,
        fenced_refused=cluster.fenced_refusals(),
        terms=max(safety.believed, default=0),
        failovers=failovers,
        unrecovered=unrecovered,
    )


def violations(trial: TrialResult) -> int:
    """Everything that must never happen, counted together (0 for a passing seed)."""
    return (
        (trial.max_hubs_per_term > 1)
        + trial.acting_overlaps
        + trial.fenced_accepted
        + trial.published_while_not_acting
        + trial.hub_conflicts
    )


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run_sweep(seeds: int, duration: float = 60.0, first_seed: int = 0) -> dict[str, object]:
    started = time.perf_counter()
    trials = [run_trial(seed, duration) for seed in range(first_seed, first_seed + seeds)]
    failovers = [f for t in trials for f in t.failovers]
    return {
        "seeds": seeds,
        "duration_s": duration,
        "max_hubs_per_term": max(t.max_hubs_per_term for t in trials),
        "terms_with_two_hubs": sum(t.max_hubs_per_term > 1 for t in trials),
        "acting_overlaps": sum(t.acting_overlaps for t in trials),
        "fenced_out_records_accepted": sum(t.fenced_accepted for t in trials),
        "published_while_not_acting": sum(t.published_while_not_acting for t in trials),
        "hub_conflicts": sum(t.hub_conflicts for t in trials),
        "fenced_records_refused": sum(t.fenced_refused for t in trials),
        "terms_total": sum(t.terms for t in trials),
        "failovers": len(failovers),
        "failover_unrecovered": sum(t.unrecovered for t in trials),
        "failover_median_s": statistics.median(failovers) if failovers else float("nan"),
        "failover_p95_s": percentile(failovers, 0.95),
        "failover_max_s": max(failovers, default=float("nan")),
        "wall_s": time.perf_counter() - started,
        "failing_seeds": [t.seed for t in trials if violations(t)],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--duration", type=float, default=60.0, help="virtual seconds per seed")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report = run_sweep(args.seeds, args.duration, args.first_seed)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for key, value in report.items():
            print(f"{key:32} {value:.3f}" if isinstance(value, float) else f"{key:32} {value}")
    return 0 if not report["failing_seeds"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
