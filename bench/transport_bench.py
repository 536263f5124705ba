"""Transport benchmark: 64 MiB between two OS processes over QUIC frames and over the
TCP bulk path (hash-checked), request/reply latency, all against a raw trio TCP
socket on loopback measured in the same run.

Usage: .venv/bin/python bench/transport_bench.py [--mib 64] [--quic-mib 64] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mesh.libp2p_transport import Libp2pTransport
from mesh.transport import BulkIncoming
from protocols.common.hashing import digest
from protocols.common.identity import NodeId, NodeIdentity

MIB = 1024 * 1024
SINK = "/ileices/bench-sink/1"
ECHO = "/ileices/bench-echo/1"
BULK = "/ileices/bench-bulk/1"
FRAME_MIB = 2


async def serve() -> None:
    """The receiving process: libp2p handlers plus a raw TCP baseline server."""

    async def sink(peer: NodeId, payload: bytes) -> bytes:
        return digest(payload)

    async def echo(peer: NodeId, payload: bytes) -> bytes:
        return payload

    async def bulk(peer: NodeId, incoming: BulkIncoming) -> bytes:
        hasher = hashlib.blake2b(digest_size=32)
        async for chunk in incoming:
            hasher.update(chunk)
        return hasher.digest()

    async def raw_tcp(stream: trio.SocketStream) -> None:
        """Baseline: 8-byte length, then the bytes; reply with their hash. Or echo mode."""
        async with stream:
            while True:
                header = await _recv_exact(stream, 9)
                if not header:
                    return
                mode, size = header[0], int.from_bytes(header[1:], "big")
                if mode == 0:  # bulk
                    hasher = hashlib.blake2b(digest_size=32)
                    remaining = size
                    while remaining:
                        data = await stream.receive_some(min(remaining, MIB))
                        if not data:
                            return
                        hasher.update(data)
                        remaining -= len(data)
                    await stream.send_all(hasher.digest())
                else:  # echo
                    await stream.send_all(await _recv_exact(stream, size))

    async with Libp2pTransport.open(NodeIdentity.generate()) as transport, trio.open_nursery() as nursery:
        transport.set_handler(SINK, sink)
        transport.set_handler(ECHO, echo)
        transport.set_bulk_handler(BULK, bulk)
        listeners = await nursery.start(partial(trio.serve_tcp, raw_tcp, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        info = {"node_id": transport.node_id.hex(), "addrs": transport.listen_addrs(), "raw_port": port}
        print(json.dumps(info), flush=True)
        await trio.sleep_forever()


async def _recv_exact(stream: trio.SocketStream, size: int) -> bytes:
    parts, remaining = [], size
    while remaining:
        data = await stream.receive_some(remaining)
        if not data:
            return b""
        parts.append(data)
        remaining -= len(data)
    return b"".join(parts)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def measure(info: dict[str, object], mib: int, quic_mib: int, rounds: int) -> dict[str, float]:
    data = bytes(range(256)) * (mib * MIB // 256)
    expected = digest(data)
    results: dict[str, float] = {}

    # Baseline: raw trio TCP socket, same hash check.
    stream = await trio.open_tcp_stream("127.0.0.1", int(info["raw_port"]))  # type: ignore[call-overload]
    async with stream:
        start = time.perf_counter()
        await stream.send_all(b"\x00" + len(data).to_bytes(8, "big"))
        view = memoryview(data)
        for offset in range(0, len(data), MIB):
            await stream.send_all(view[offset : offset + MIB])
        assert await _recv_exact(stream, 32) == expected, "raw TCP integrity check failed"
        results["raw_tcp_mb_s"] = len(data) / MIB / (time.perf_counter() - start)
        raw_latencies = []
        payload = b"x" * 1024
        for _ in range(rounds):
            start = time.perf_counter()
            await stream.send_all(b"\x01" + len(payload).to_bytes(8, "big") + payload)
            await _recv_exact(stream, len(payload))
            raw_latencies.append(time.perf_counter() - start)
        results["raw_tcp_rtt_p50_ms"] = percentile(raw_latencies, 0.5) * 1000
        results["raw_tcp_rtt_p99_ms"] = percentile(raw_latencies, 0.99) * 1000

    peer = bytes.fromhex(str(info["node_id"]))
    async with Libp2pTransport.open(NodeIdentity.generate()) as transport:
        start = time.perf_counter()
        await transport.connect(peer, list(info["addrs"]))  # type: ignore[call-overload]
        results["quic_connect_ms"] = (time.perf_counter() - start) * 1000

        start = time.perf_counter()
        assert await transport.send_bulk(peer, BULK, data, timeout=300) == expected, "bulk integrity"
        results["bulk_tcp_mb_s"] = len(data) / MIB / (time.perf_counter() - start)

        quic_data = data[: quic_mib * MIB]
        start = time.perf_counter()
        for offset in range(0, len(quic_data), FRAME_MIB * MIB):
            frame = quic_data[offset : offset + FRAME_MIB * MIB]
            assert await transport.request(peer, SINK, frame, timeout=120) == digest(frame), "QUIC integrity"
        results["quic_frames_mb_s"] = len(quic_data) / MIB / (time.perf_counter() - start)

        latencies = []
        payload = b"x" * 1024
        for _ in range(rounds):
            start = time.perf_counter()
            assert await transport.request(peer, ECHO, payload, timeout=10) == payload
            latencies.append(time.perf_counter() - start)
        results["quic_request_p50_ms"] = percentile(latencies, 0.5) * 1000
        results["quic_request_p99_ms"] = percentile(latencies, 0.99) * 1000

    results["bulk_vs_raw_tcp"] = results["bulk_tcp_mb_s"] / results["raw_tcp_mb_s"]
    results["quic_vs_raw_tcp"] = results["quic_frames_mb_s"] / results["raw_tcp_mb_s"]
    results["bulk_vs_quic"] = results["bulk_tcp_mb_s"] / results["quic_frames_mb_s"]
    results["request_p50_vs_raw_rtt"] = results["quic_request_p50_ms"] / results["raw_tcp_rtt_p50_ms"]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mib", type=int, default=64, help="bulk and baseline transfer size")
    parser.add_argument("--quic-mib", type=int, default=64, help="transfer size over QUIC frames")
    parser.add_argument("--rounds", type=int, default=300, help="request/reply samples")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.serve:
        trio.run(serve)
        return
    server = subprocess.Popen([sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        info = json.loads(server.stdout.readline())
        results = trio.run(measure, info, args.mib, args.quic_mib, args.rounds)
    finally:
        server.kill()
        server.wait()
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(
        f"64 MiB-class transfers between two processes on loopback ({args.mib} MiB, QUIC {args.quic_mib} MiB)"
    )
    print(f"  raw trio TCP baseline : {results['raw_tcp_mb_s']:8.1f} MB/s")
    bulk, quic = results["bulk_tcp_mb_s"], results["quic_frames_mb_s"]
    print(f"  libp2p TCP bulk path  : {bulk:8.1f} MB/s  ({results['bulk_vs_raw_tcp']:.2f}x raw)")
    print(f"  libp2p QUIC frames    : {quic:8.1f} MB/s  ({results['quic_vs_raw_tcp']:.3f}x raw)")
    print(f"  bulk / QUIC           : {results['bulk_vs_quic']:8.1f}x")
    print(f"  QUIC connect          : {results['quic_connect_ms']:8.1f} ms")
    print(
        f"  1 KiB request/reply   : p50 {results['quic_request_p50_ms']:.2f} ms, "
        f"p99 {results['quic_request_p99_ms']:.2f} ms "
        f"(raw TCP round trip p50 {results['raw_tcp_rtt_p50_ms']:.3f} ms, "
        f"{results['request_p50_vs_raw_rtt']:.0f}x)"
    )


if __name__ == "__main__":
    main()
