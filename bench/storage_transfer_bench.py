"""`put` and `get` between real node processes over loopback, against the bare bulk path in the same run.

Starts a mesh of `--nodes` `ileices` processes (default 4), puts a file of `--size-mb`
(half random, half text) from one node with `--k`/`--n`, then gets it back on another
node that holds no share of it, and checks the bytes. Times are taken on the node (the
job's start to its end, read through the control socket), so the CLI's start-up is not
counted. The baseline is the bulk path itself: one `send_bulk` of the same number of
bytes between two transports in this process, the ceiling a single share stream has.

The issue's target: put and get at least 50 MB/s of file bytes.

    python bench/storage_transfer_bench.py --size-mb 256
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import trio

from bootstrap.control_client import control_request
from mesh.libp2p_transport import Libp2pTransport
from mesh.transport import BulkIncoming
from protocols.common.identity import NodeId, NodeIdentity
from tests.support.artifact_files import sha256_of, write_artifact_file
from tests.support.mesh_processes import ProcessMesh, wait_until

MIB = 1024 * 1024


def run_job(mesh: ProcessMesh, node: Any, request: dict[str, Any]) -> tuple[dict[str, Any], float]:
    """Start a job on `node` and poll it to its end; returns (result, seconds on the node)."""
    job = mesh.request(node, request)["job"]
    started = time.monotonic()
    while job["state"] == "running":
        time.sleep(0.05)
        job = control_request(node.data_dir, {"op": "job", "id": job["id"]})["job"]
    elapsed = time.monotonic() - started
    if job["state"] != "done":
        raise SystemExit(f"{request['op']} failed: {job['error']}")
    return job["result"], elapsed


async def bulk_baseline(size: int) -> float:
    """MB/s of one bare bulk transfer of `size` bytes between two in-process transports."""
    piece = os.urandom(MIB)

    async def sink(peer: NodeId, incoming: BulkIncoming) -> bytes:
        async for _ in incoming:
            pass
        return b"ok"

    async with (
        Libp2pTransport.open(NodeIdentity.generate()) as a,
        Libp2pTransport.open(NodeIdentity.generate()) as b,
    ):
        b.set_bulk_handler("/ileices/bench/1", sink)
        await a.connect(b.node_id, b.listen_addrs())
        started = time.monotonic()
        await a.send_bulk(b.node_id, "/ileices/bench/1", (piece for _ in range(size // MIB)), timeout=600)
        return size / 1e6 / (time.monotonic() - started)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mb", type=int, default=256)
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--k", type=int, default=2)
    parser.add_argument("--n", type=int, default=3)
    args = parser.parse_args()
    size = args.size_mb * MIB
    with tempfile.TemporaryDirectory(prefix="ileices-storage-bench-") as folder:
        root = Path(folder)
        baseline = trio.run(bulk_baseline, size)
        source = root / "source.bin"
        expected = write_artifact_file(source, size)
        mesh = ProcessMesh(root / "mesh")
        nodes = [mesh.node(f"n{i}") for i in range(args.nodes)]
        try:
            mesh.found(nodes[0], nodes[1:])
            wait_until(
                lambda: all(mesh.status(node)["storage"]["nodes"] == len(nodes) for node in nodes),
                90,
                "every node to see the storage nodes",
            )
            owner = nodes[0]
            put, put_s = run_job(
                mesh, owner, {"op": "put", "path": str(source), "k": args.k, "n": args.n, "ttl_s": 3600.0}
            )
            artifact = put["artifact_id"]
            getter = next(
                (node for node in nodes[1:] if mesh.status(node)["storage"]["shares"] == 0), nodes[-1]
            )
            wait_until(
                lambda: any(
                    row["artifact_id"] == artifact
                    for row in mesh.request(getter, {"op": "artifacts"})["artifacts"]
                ),
                30,
                "the getter to know the artifact",
            )
            out = root / "back.bin"
            _, get_s = run_job(mesh, getter, {"op": "get", "id": artifact, "out": str(out)})
            same = sha256_of(out) == expected
        finally:
            mesh.close()
    mb = size / 1e6
    rows = [
        ("bare bulk path, one stream (baseline)", baseline),
        (f"put, k={put['k']} n={put['n']} ({put['placed']} holders)", mb / put_s),
        ("get, from k holders", mb / get_s),
    ]
    print(json.dumps({"size_mb": round(mb, 1), "nodes": args.nodes, "identical": same}))
    print(f"{'what':<44}{'MB/s':>8}{'ratio':>8}")
    for name, speed in rows:
        print(f"{name:<44}{speed:>8.1f}{speed / baseline:>8.2f}")
    print(f"target: put and get >= 50 MB/s; identical bytes back: {same}")


if __name__ == "__main__":
    main()
