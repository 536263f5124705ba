"""Idle cost of a node: CPU per node of an idle 5-node mesh against a lone node, same run.

Starts, as real `ileices` processes on loopback with their own data directories, one
lone node (`init` + `up`) and a mesh (`init` + `up` of a founder, `invite --uses`,
`join` of the others), waits until the mesh has converged (same records everywhere,
everyone alive), lets it settle, then samples every process's CPU time (user + system
of the node process and its children, psutil) over one window of `--seconds` during
which nobody publishes anything. The lone node is measured in the same window, so both
see the same machine load. Per node it prints % of one core (and its kernel share),
the transport frames it sent and received per second in the window (its counters:
every request and every reply is one frame, so a node that sends r requests and
answers a requests per second shows r + a frames each way), and the ratio to the lone
node; the target of issue 13 is <= 1 % of a core per mesh node.

`--per-request` starts every node with `ILEICES_MUX=0` (one QUIC stream per request,
the transport's old path), for a before/after comparison. `--profile DIR` runs every
node under cProfile, switched on for the window only (SIGUSR1 / SIGUSR2 to a small
wrapper around the CLI), writes `DIR/<node>.prof` and prints the costliest functions
of one mesh node; only the trio thread is profiled, the per-thread CPU split printed
alongside says whether that is where the time goes.

Usage: .venv/bin/python bench/idle_cost_bench.py [--nodes 5] [--seconds 60] [--settle 10]
       [--per-request] [--profile DIR] [--json]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import runpy
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the repository root, for tests.support

from tests.support.mesh_processes import NodeProcess, ProcessMesh  # noqa: E402

TARGET_PERCENT = 1.0


def profiled_main(out: str, argv: list[str]) -> None:
    """Run `python -m bootstrap.cli ...` (argv as given) in this process under cProfile,
    enabled by SIGUSR1 and dumped to `out` by SIGUSR2."""
    profile = cProfile.Profile()

    def start(signum: int, frame: FrameType | None) -> None:
        profile.enable()

    def stop(signum: int, frame: FrameType | None) -> None:
        profile.disable()
        profile.dump_stats(out)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    module = argv.index("-m")
    sys.argv = [argv[module + 1], *argv[module + 2 :]]
    runpy.run_module(argv[module + 1], run_name="__main__", alter_sys=True)


def process_cpu(pid: int) -> tuple[float, float, dict[int, float]]:
    """(user and system CPU seconds of the process with its reaped and live children,
    per-thread CPU seconds of the process itself)."""
    process = psutil.Process(pid)
    times = process.cpu_times()
    user = times.user + times.children_user
    system = times.system + times.children_system
    for child in process.children(recursive=True):
        try:
            child_times = child.cpu_times()
        except psutil.NoSuchProcess:
            continue
        user += child_times.user
        system += child_times.system
    threads = {t.id: t.user_time + t.system_time for t in process.threads()}
    return user, system, threads


def transport_counts(procs: ProcessMesh, node: NodeProcess) -> tuple[int, int]:
    counters = procs.status(node)["counters"]["transport"]
    return int(counters["frames_out"]), int(counters["frames_in"])


def start_mesh(procs: ProcessMesh, nodes: list[NodeProcess]) -> None:
    founder, joiners = nodes[0], nodes[1:]
    procs.init(founder)
    procs.up(founder)
    procs.wait_running([founder])
    if joiners:
        token = procs.invite(founder, "--uses", str(len(joiners)))
        for node in joiners:  # one at a time: joins contend for the 2 cores otherwise
            procs.join(node, token)
            procs.wait_running([node], timeout=90)
    procs.wait_converged(nodes, timeout=120)


def measure(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    prefix: list[str] = []
    profile_dir = Path(args.profile).resolve() if args.profile else None
    if args.per_request:
        prefix = ["env", "ILEICES_MUX=0"]
    procs = ProcessMesh(root)

    def node(name: str) -> NodeProcess:
        node_prefix = list(prefix)
        if profile_dir is not None:
            profile_dir.mkdir(parents=True, exist_ok=True)
            out = str(profile_dir / f"{name}.prof")
            node_prefix += [sys.executable, str(Path(__file__).resolve()), "--profiled", out, "--"]
        return procs.node(name, prefix=node_prefix)

    lone = node("lone")
    mesh = [node(f"n{i}") for i in range(args.nodes)]
    results: dict[str, Any] = {"seconds": args.seconds, "per_request": args.per_request, "nodes": {}}
    try:
        procs.init(lone)
        procs.up(lone)
        procs.wait_running([lone])
        start_mesh(procs, mesh)
        time.sleep(args.settle)
        everyone = [lone, *mesh]
        pids = {n.name: n.process.pid for n in everyone if n.process is not None}
        if profile_dir is not None:
            for pid in pids.values():
                os.kill(pid, signal.SIGUSR1)
        before = {name: process_cpu(pid) for name, pid in pids.items()}
        counts_before = {n.name: transport_counts(procs, n) for n in everyone}
        started = time.monotonic()
        time.sleep(args.seconds)
        elapsed = time.monotonic() - started
        after = {name: process_cpu(pid) for name, pid in pids.items()}
        counts_after = {n.name: transport_counts(procs, n) for n in everyone}
        if profile_dir is not None:
            for pid in pids.values():
                os.kill(pid, signal.SIGUSR2)
            time.sleep(2)
        converged = procs.wait_converged(mesh, timeout=5)
        results["mesh_records"] = converged[0]["records"]
        for name in pids:
            user = after[name][0] - before[name][0]
            system = after[name][1] - before[name][1]
            threads_before, threads_after = before[name][2], after[name][2]
            per_thread = sorted(
                (threads_after[t] - threads_before.get(t, 0.0) for t in threads_after), reverse=True
            )
            sent = counts_after[name][0] - counts_before[name][0]
            answered = counts_after[name][1] - counts_before[name][1]  # frames in
            results["nodes"][name] = {
                "cpu_percent": (user + system) / elapsed * 100,
                "system_percent": system / elapsed * 100,
                "thread_cpu_percent": [round(t / elapsed * 100, 3) for t in per_thread if t > 0],
                "frames_out_per_s": sent / elapsed,
                "frames_in_per_s": answered / elapsed,
                "cpu_ms_per_frame": (user + system) * 1000 / (sent + answered) if sent + answered else None,
            }
    finally:
        if profile_dir is not None:  # SIGTERM: a clean exit, as a user's Ctrl-C
            for n in [lone, *mesh]:
                procs.kill(n, signal.SIGTERM)
            time.sleep(3)
        procs.close()
    lone_percent = results["nodes"]["lone"]["cpu_percent"]
    mesh_percents = [results["nodes"][n.name]["cpu_percent"] for n in mesh]
    results["lone_percent"] = lone_percent
    results["mesh_mean_percent"] = sum(mesh_percents) / len(mesh_percents)
    results["mesh_max_percent"] = max(mesh_percents)
    results["mesh_to_lone_ratio"] = results["mesh_mean_percent"] / max(lone_percent, 1e-9)
    results["target_met"] = results["mesh_max_percent"] <= TARGET_PERCENT
    return results


def report(results: dict[str, Any], args: argparse.Namespace) -> None:
    if args.json:
        print(json.dumps(results, indent=2))
        return
    path = "one stream per request (ILEICES_MUX=0)" if results["per_request"] else "long-lived mux streams"
    print(f"idle CPU over {results['seconds']:.0f} s, {path}; % of one core (user + system)")
    for name, node in results["nodes"].items():
        threads = ", ".join(f"{t:.2f}" for t in node["thread_cpu_percent"][:4])
        per_frame = node["cpu_ms_per_frame"]
        per_frame_text = "-" if per_frame is None else f"{per_frame:.2f}"
        print(
            f"  {name:5s} {node['cpu_percent']:6.2f} % (kernel {node['system_percent']:.2f})  "
            f"frames out {node['frames_out_per_s']:5.1f}/s, in {node['frames_in_per_s']:5.1f}/s, "
            f"{per_frame_text} ms CPU per frame  (busiest threads: {threads})"
        )
    print(
        f"  mesh node mean {results['mesh_mean_percent']:.2f} %, max {results['mesh_max_percent']:.2f} %; "
        f"lone node {results['lone_percent']:.2f} %; mesh / lone {results['mesh_to_lone_ratio']:.1f}x; "
        f"target <= {TARGET_PERCENT:g} % per node: {'met' if results['target_met'] else 'NOT met'}"
    )
    if args.profile:
        stats_path = Path(args.profile) / "n1.prof"
        if stats_path.exists():
            print(f"\ncProfile of n1 during the window (trio thread), by own time: {stats_path}")
            pstats.Stats(str(stats_path)).sort_stats("tottime").print_stats(25)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--profiled":
        profiled_main(sys.argv[2], sys.argv[sys.argv.index("--") + 1 :])
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the idle window")
    parser.add_argument("--settle", type=float, default=10.0, help="wait after convergence before measuring")
    parser.add_argument("--per-request", action="store_true", help="nodes use one stream per request")
    parser.add_argument("--profile", metavar="DIR", help="cProfile every node during the window")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="idle-bench-") as root:
        results = measure(args, Path(root))
    report(results, args)


if __name__ == "__main__":
    main()
