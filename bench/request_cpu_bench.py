"""CPU time per request/reply round trip: one stream per request vs one long-lived mux stream.

Two OS processes on loopback. The responder serves an echo protocol with the mux on
(as every node now does). The requester measures, in the same run and alternating,
two transports of its own:

- `per-request`: `Libp2pTransportConfig(long_lived_streams=False)`, the transport's
  old path (and still its fallback): a new QUIC stream and a multistream-select
  negotiation per request, then the close handshake.
- `long-lived`: the default, every request a frame on the peer's one mux stream.

For each, after a warm-up, three batches are timed: `--requests` back to back,
the same number in groups of `--concurrency` at once, and a fifth as many `spaced`
`--gap` seconds apart (50 ms), the shape of an idle mesh's traffic: there every
QUIC packet is acknowledged by an ACK-only packet of its own (aioquic acknowledges
after 1 ms), while back-to-back requests carry each other's ACKs. CPU is the process
time of *both* processes (requester: `time.process_time`, responder: psutil's user +
system of its pid) over the batch, divided by the requests; wall time per request is
reported too (for `spaced`, minus the gaps). Process time is the process's own CPU,
so other load on the machine inflates the wall figures but hardly the CPU ones.

Usage: .venv/bin/python bench/request_cpu_bench.py [--requests 500] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mesh.libp2p_transport import Libp2pTransport, Libp2pTransportConfig
from protocols.common.identity import NodeId, NodeIdentity

ECHO = "/ileices/bench-echo/1"
MODES = {
    "per-request": Libp2pTransportConfig(long_lived_streams=False),
    "long-lived": Libp2pTransportConfig(),
}


async def serve() -> None:
    async def echo(peer: NodeId, payload: bytes) -> bytes:
        return payload

    async with Libp2pTransport.open(NodeIdentity.generate()) as transport:
        transport.set_handler(ECHO, echo)
        print(json.dumps({"node_id": transport.node_id.hex(), "addrs": transport.listen_addrs()}), flush=True)
        await trio.sleep_forever()


def cpu_of(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


async def measure_mode(
    mode: str,
    peer: NodeId,
    addrs: list[str],
    server: psutil.Process,
    requests: int,
    payload_size: int,
    concurrency: int,
    gap: float,
) -> dict[str, float]:
    payload = b"p" * payload_size
    results: dict[str, float] = {}
    async with Libp2pTransport.open(NodeIdentity.generate(), config=MODES[mode]) as transport:
        await transport.connect(peer, addrs)
        for _ in range(50):  # warm-up: the connection, the mux stream, code paths
            assert await transport.request(peer, ECHO, payload, timeout=10) == payload

        async def sequential() -> None:
            for _ in range(requests):
                assert await transport.request(peer, ECHO, payload, timeout=10) == payload

        async def concurrent() -> None:
            async def one() -> None:
                assert await transport.request(peer, ECHO, payload, timeout=30) == payload

            for _ in range(requests // concurrency):
                async with trio.open_nursery() as nursery:
                    for _ in range(concurrency):
                        nursery.start_soon(one)

        async def spaced() -> None:
            for _ in range(max(1, requests // 5)):
                await trio.sleep(gap)
                assert await transport.request(peer, ECHO, payload, timeout=10) == payload

        for name, run, count in (
            ("sequential", sequential, requests),
            ("concurrent", concurrent, requests // concurrency * concurrency),
            ("spaced", spaced, max(1, requests // 5)),
        ):
            client_cpu, server_cpu, wall = time.process_time(), cpu_of(server), time.perf_counter()
            await run()
            wall = time.perf_counter() - wall - (count * gap if name == "spaced" else 0.0)
            client_cpu = time.process_time() - client_cpu
            server_cpu = cpu_of(server) - server_cpu
            results[f"{name}_cpu_ms"] = (client_cpu + server_cpu) / count * 1000
            results[f"{name}_requester_cpu_ms"] = client_cpu / count * 1000
            results[f"{name}_responder_cpu_ms"] = server_cpu / count * 1000
            results[f"{name}_wall_ms"] = wall / count * 1000
        results["mux_streams_opened"] = transport.mux_streams_opened
    return results


async def measure(
    info: dict[str, Any],
    server: psutil.Process,
    requests: int,
    rounds: int,
    payload_size: int,
    concurrency: int,
    gap: float,
) -> dict[str, Any]:
    peer = bytes.fromhex(str(info["node_id"]))
    samples: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    for _ in range(rounds):
        for mode in MODES:  # alternate, so drifting load hits both alike
            addrs = list(info["addrs"])
            samples[mode].append(
                await measure_mode(mode, peer, addrs, server, requests, payload_size, concurrency, gap)
            )
    results: dict[str, Any] = {}
    for mode, runs in samples.items():
        results[mode] = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    for name in ("sequential", "concurrent", "spaced"):
        key = f"{name}_cpu_ms"
        results[f"{name}_cpu_ratio"] = results["per-request"][key] / results["long-lived"][key]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--requests", type=int, default=500, help="requests per batch")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per mode (median)")
    parser.add_argument("--payload", type=int, default=100, help="request payload bytes")
    parser.add_argument("--concurrency", type=int, default=10, help="requests in flight at once")
    parser.add_argument("--gap", type=float, default=0.05, help="seconds between spaced requests")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.serve:
        trio.run(serve)
        return
    server = subprocess.Popen([sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        info = json.loads(server.stdout.readline())
        process = psutil.Process(server.pid)
        results = trio.run(
            measure, info, process, args.requests, args.rounds, args.payload, args.concurrency, args.gap
        )
    finally:
        server.kill()
        server.wait()
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(
        f"CPU per {args.payload}-byte request/reply, both processes together "
        f"(median of {args.rounds} rounds x {args.requests} requests)"
    )
    for mode in MODES:
        r = results[mode]
        requester, responder = r["sequential_requester_cpu_ms"], r["sequential_responder_cpu_ms"]
        print(
            f"  {mode:12s} sequential {r['sequential_cpu_ms']:6.2f} ms CPU "
            f"(requester {requester:.2f}, responder {responder:.2f}), "
            f"{r['sequential_wall_ms']:.2f} ms wall; {args.concurrency} at once "
            f"{r['concurrent_cpu_ms']:6.2f} ms CPU, {r['concurrent_wall_ms']:.2f} ms wall; "
            f"spaced {r['spaced_cpu_ms']:6.2f} ms CPU, {r['spaced_wall_ms']:.2f} ms wall"
        )
    print(
        f"  per-request / long-lived CPU: sequential {results['sequential_cpu_ratio']:.1f}x, "
        f"concurrent {results['concurrent_cpu_ratio']:.1f}x, spaced {results['spaced_cpu_ratio']:.1f}x"
    )


if __name__ == "__main__":
    main()
