"""Simulator benchmark: 1000 nodes, 10 virtual minutes, 5 %/min churn; optionally 5000 nodes.

Prints the figures docs/benchmarks.md quotes (speedup, peak RSS, invariants,
dissemination against the analytic bound, failure detection) and, as the in-run
baseline, the cost of one bare encode + decode of a typical probe message, so the
per-message cost of the whole simulator can be read against what the wire format alone
costs on the same machine in the same run.

    .venv/bin/python bench/simulation_bench.py                # 1000 nodes, 10 min
    .venv/bin/python bench/simulation_bench.py --nodes 5000 --duration 3m
    .venv/bin/python bench/simulation_bench.py --profile      # cProfile top 25
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from protocols.common.wire import encode
from protocols.membership.messages import MemberUpdate, Ping, WireState, decode_membership
from simulations.plots import write_plots
from simulations.run import run_simulation
from simulations.scenario import build_scenario

SPEEDUP_TARGET = 30.0
RSS_LIMIT_MB = 4096.0


def wire_baseline_us(rounds: int = 50_000) -> float:
    """Microseconds for one encode + decode of a ping with 4 piggybacked updates."""
    updates = tuple(MemberUpdate(bytes([i]) * 32, i, WireState.ALIVE) for i in range(4))
    message = Ping(7, updates)
    started = time.perf_counter()
    for _ in range(rounds):
        decode_membership(encode(message))
    return (time.perf_counter() - started) / rounds * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--duration", default="10m")
    parser.add_argument("--churn", default="5%/min")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="write report.json and plots here")
    parser.add_argument("--profile", action="store_true", help="run under cProfile and print the top 25")
    args = parser.parse_args()

    baseline = wire_baseline_us()
    scenario = build_scenario(nodes=args.nodes, duration=args.duration, churn=args.churn, seed=args.seed)
    if args.profile:
        profiler = cProfile.Profile()
        report = profiler.runcall(run_simulation, scenario, False)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    else:
        report = run_simulation(scenario, progress=sys.stderr.isatty())
    if args.out is not None:
        report.write(args.out)
        write_plots(report, args.out)
    data = report.to_json()
    messages = data["messages"]
    per_message_us = report.wall_seconds / messages["delivered"] * 1e6 if messages["delivered"] else 0.0
    summary = {
        "nodes": report.nodes,
        "virtual_seconds": data["virtual_seconds"],
        "wall_seconds": data["wall_seconds"],
        "setup_seconds": data["setup_seconds"],
        "speedup": data["speedup"],
        "speedup_incl_setup": round(report.virtual_seconds / (report.wall_seconds + report.setup_seconds), 2),
        "peak_rss_mb": data["peak_rss_mb"],
        "ok": data["ok"],
        "invariants": {name: entry["ok"] for name, entry in data["invariants"].items()},
        "dissemination": data["dissemination"],
        "failure_detection": data["failure_detection"],
        "convergence": data["convergence"],
        "messages_per_node_per_s": messages["per_node_per_s"],
        "bytes_per_node_per_s": messages["bytes_per_node_per_s"],
        "wall_us_per_delivered_message": round(per_message_us, 2),
        "baseline_wire_roundtrip_us": round(baseline, 3),
        "ratio_per_message_vs_wire_roundtrip": round(per_message_us / baseline, 1) if baseline else None,
        "churn": data["churn"],
        "traffic_by_type": messages["by_type"],
        "digest": data["digest"],
    }
    print(json.dumps(summary, indent=2))
    verdict_speed = "meets" if report.speedup >= SPEEDUP_TARGET else "MISSES"
    verdict_rss = "meets" if report.peak_rss_mb < RSS_LIMIT_MB else "MISSES"
    print(
        f"speedup {report.speedup:.1f}x ({verdict_speed} the {SPEEDUP_TARGET:g}x target); "
        f"peak RSS {report.peak_rss_mb:.0f} MiB ({verdict_rss} the {RSS_LIMIT_MB:g} MiB limit); "
        f"invariants {'all ok' if report.ok else 'VIOLATED'}"
    )
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
