"""Mesh benchmark across real `ileices` processes on loopback: join, propagation, failure
detection, bytes per record, and the transports' 64 MiB throughput.

What each figure is, exactly:

- join: `ileices join TOKEN` spawned -> the inviter has the admission record durable
  (its `accepted_at`, wall clock), one joiner at a time. Reported with the same
  command's bare start-up (`ileices status` against a running node) as the baseline, and
  with the join exchange alone as the joining node logs it ("admitted ... in N ms").
- propagation: `note` records published one by one on a random node through its
  control socket; for each, the time from just before the publish request to the moment
  the last of the 10 nodes had it durable (each node's `accepted_at`, so there is no
  polling error; all processes share one clock). Baseline: the first other node to get it.
- detection: SIGKILL a member, then poll every other node's status until all of them
  mark it `dead`; default membership settings.
- bytes per record: transport payload bytes sent by all nodes while the notes spread,
  minus the idle (membership + anti-entropy) bytes of an equally long quiet window,
  divided by the notes; libp2p/QUIC framing overhead is not in the transport counters.
- bulk: `bench/transport_bench.py` (two processes, 64 MiB, hash-checked), run after the
  mesh is stopped so the two do not compete for the 2 cores.

Usage: .venv/bin/python bench/mesh_bench.py [--nodes 10] [--notes 40] [--kills 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the repository root, for tests.support

from tests.support.mesh_processes import CLI, NodeProcess, ProcessMesh, wait_until  # noqa: E402

ADMITTED_LOG = re.compile(r"admitted by \w+ in (\d+) ms")
TARGETS = {"join_s": 2.0, "propagation_p99_ms": 200.0, "detection_s": 5.0, "bulk_mb_s": 50.0}


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def cli_startup_baseline(node: NodeProcess, runs: int = 3) -> float:
    """Seconds for `ileices status` against a running node: the CLI's own start-up cost."""
    samples = []
    for _ in range(runs):
        started = time.monotonic()
        subprocess.run(
            [*CLI, "status", "--data-dir", str(node.data_dir), "--json"],
            cwd=REPO,
            capture_output=True,
            check=True,
        )
        samples.append(time.monotonic() - started)
    return statistics.median(samples)


def measure_joins(procs: ProcessMesh, founder: NodeProcess, joiners: list[NodeProcess]) -> dict[str, Any]:
    token = procs.invite(founder, "--uses", str(len(joiners)))
    wall, exchange = [], []
    for node in joiners:
        spawned = time.time()
        procs.join(node, token)
        procs.wait_running([node], timeout=60)
        lookup = {"op": "lookup", "author": founder.node_id, "kind": "admission", "key": node.node_id}
        record = procs.request(founder, lookup)["record"]
        wall.append(record["accepted_at"] - spawned)
        match = ADMITTED_LOG.search((node.data_dir / "logs" / "node.log").read_text())
        if match:
            exchange.append(int(match.group(1)) / 1000)
    return {
        "spawn_to_admitted_s": {"p50": statistics.median(wall), "max": max(wall)},
        "join_exchange_s": {"p50": statistics.median(exchange), "max": max(exchange)} if exchange else None,
    }


def total_bytes_out(procs: ProcessMesh, nodes: list[NodeProcess]) -> int:
    return sum(procs.status(n)["counters"]["transport"]["bytes_out"] for n in nodes)


def measure_propagation(procs: ProcessMesh, nodes: list[NodeProcess], notes: int) -> dict[str, Any]:
    rng = random.Random(1)
    idle_start_bytes, idle_started = total_bytes_out(procs, nodes), time.monotonic()
    time.sleep(5.0)
    idle_rate = (total_bytes_out(procs, nodes) - idle_start_bytes) / (time.monotonic() - idle_started)

    to_all: list[float] = []
    to_first: list[float] = []
    by_push: list[float] = []
    by_sync: list[float] = []
    busy_start_bytes, busy_started = total_bytes_out(procs, nodes), time.monotonic()
    for index in range(notes):
        author = rng.choice(nodes)
        key = f"bench-{index}"
        published_at = time.time()
        reply = procs.request(author, {"op": "note", "key": key, "value": "x" * 64})
        lookup = {"op": "lookup", "author": reply["author"], "kind": "note", "key": key}
        arrivals: dict[str, tuple[float, str]] = {}

        def everywhere(
            lookup: dict[str, Any] = lookup, arrivals: dict[str, tuple[float, str]] = arrivals
        ) -> bool:
            for node in nodes:
                if node.name in arrivals:
                    continue
                found = procs.request(node, lookup)["record"]
                if found is not None and found["accepted_at"] is not None:
                    arrivals[node.name] = (found["accepted_at"], found["via"])
            return len(arrivals) == len(nodes)

        wait_until(everywhere, 30, f"note {key} to reach every node", interval=0.02)
        others = [(at, via) for name, (at, via) in arrivals.items() if name != author.name]
        to_all.append((max(at for at, _ in others) - published_at) * 1000)
        to_first.append((min(at for at, _ in others) - published_at) * 1000)
        for at, via in others:
            (by_push if via == "push" else by_sync).append((at - published_at) * 1000)
        time.sleep(0.1)
    busy_seconds = time.monotonic() - busy_started
    busy_bytes = total_bytes_out(procs, nodes) - busy_start_bytes
    per_record = (busy_bytes - idle_rate * busy_seconds) / notes
    return {
        "notes": notes,
        "to_all_ms": {"p50": percentile(to_all, 0.5), "p99": percentile(to_all, 0.99), "max": max(to_all)},
        "to_first_peer_ms": {"p50": percentile(to_first, 0.5), "p99": percentile(to_first, 0.99)},
        "deliveries_by_push": len(by_push),
        "deliveries_by_anti_entropy": len(by_sync),
        "push_delivery_ms": {"p50": percentile(by_push, 0.5), "p99": percentile(by_push, 0.99)},
        "anti_entropy_delivery_ms": (
            {"p50": percentile(by_sync, 0.5), "p99": percentile(by_sync, 0.99)} if by_sync else None
        ),
        "bytes_per_record": per_record,
        "bytes_per_record_per_node": per_record / (len(nodes) - 1),
        "idle_bytes_per_s_all_nodes": idle_rate,
    }


def measure_detection(procs: ProcessMesh, nodes: list[NodeProcess], kills: int) -> dict[str, Any]:
    times = []
    for victim in nodes[-kills:]:
        observers = [n for n in nodes if n is not victim and n.running]
        procs.kill(victim)
        times.append(procs.wait_states(observers, victim, "dead", timeout=30))
    return {"kills": kills, "all_mark_dead_s": times}


def run_transport_bench() -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "transport_bench.py"), "--json", "--quic-mib", "16"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    parsed: dict[str, Any] = json.loads(result.stdout[result.stdout.index("{") :])
    return parsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--notes", type=int, default=40)
    parser.add_argument("--kills", type=int, default=2)
    parser.add_argument("--skip-transport", action="store_true", help="do not run transport_bench.py")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    results: dict[str, Any] = {"nodes": args.nodes}
    with tempfile.TemporaryDirectory(prefix="mesh-bench-") as root:
        procs = ProcessMesh(Path(root))
        nodes = [procs.node(f"n{i}") for i in range(args.nodes)]
        try:
            procs.init(nodes[0])
            procs.up(nodes[0])
            procs.wait_running(nodes[:1])
            results["cli_startup_baseline_s"] = cli_startup_baseline(nodes[0])
            results["join"] = measure_joins(procs, nodes[0], nodes[1:])
            procs.wait_converged(nodes, timeout=60)
            results["propagation"] = measure_propagation(procs, nodes, args.notes)
            results["detection"] = measure_detection(procs, nodes, args.kills)
        finally:
            procs.close()
    if not args.skip_transport:
        results["transport"] = run_transport_bench()
    report(results, args.json)


def report(results: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(results, indent=2))
        return
    join, propagation, detection = results["join"], results["propagation"], results["detection"]
    baseline = results["cli_startup_baseline_s"]
    print(f"mesh of {results['nodes']} processes on loopback")
    spawn = join["spawn_to_admitted_s"]
    print(
        f"join: spawn -> admitted p50 {spawn['p50']:.2f} s, max {spawn['max']:.2f} s "
        f"(target < {TARGETS['join_s']} s); CLI start-up baseline {baseline:.2f} s "
        f"({spawn['p50'] / baseline:.1f}x)"
    )
    if join["join_exchange_s"]:
        exchange = join["join_exchange_s"]
        print(
            f"      join exchange alone (connect + request + admission): "
            f"p50 {exchange['p50'] * 1000:.0f} ms, max {exchange['max'] * 1000:.0f} ms"
        )
    to_all, to_first = propagation["to_all_ms"], propagation["to_first_peer_ms"]
    print(
        f"propagation of {propagation['notes']} notes to all nodes: p50 {to_all['p50']:.0f} ms, "
        f"p99 {to_all['p99']:.0f} ms, max {to_all['max']:.0f} ms "
        f"(target p99 < {TARGETS['propagation_p99_ms']:.0f} ms);"
        f" first peer p50 {to_first['p50']:.0f} ms ({to_all['p50'] / max(to_first['p50'], 1e-9):.1f}x)"
    )
    push, repair = propagation["push_delivery_ms"], propagation["anti_entropy_delivery_ms"]
    print(
        f"      deliveries by push: {propagation['deliveries_by_push']} (p50 {push['p50']:.0f} ms, "
        f"p99 {push['p99']:.0f} ms); by anti-entropy: {propagation['deliveries_by_anti_entropy']}"
        + (f" (p50 {repair['p50']:.0f} ms, p99 {repair['p99']:.0f} ms)" if repair else "")
    )
    print(
        f"bytes on the wire per record: {propagation['bytes_per_record']:.0f} B for the whole mesh, "
        f"{propagation['bytes_per_record_per_node']:.0f} B per receiving node "
        f"(idle mesh: {propagation['idle_bytes_per_s_all_nodes']:.0f} B/s)"
    )
    print(
        "failure detection (SIGKILL -> dead everywhere): "
        + ", ".join(f"{t:.1f} s" for t in detection["all_mark_dead_s"])
        + f" (target < {TARGETS['detection_s']} s)"
    )
    if "transport" in results:
        print("transport_bench.py:")
        print(json.dumps(results["transport"], indent=2))


if __name__ == "__main__":
    main()
