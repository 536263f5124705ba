"""The storage shard of real nodes in one process, on loopback (`mesh.storage_service`).

What a user sees go wrong gets one line and leaves nothing behind: an unknown id, a put
that no node can take, a `get` of an artifact whose share on this very node rotted (the
share is dropped, another is fetched, and the bytes still come back identical), and a
`rm` by someone who does not own the artifact.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from actors.hardware_daemon import HardwareDaemonConfig, save_limits
from kernels.volunteer_limits import VolunteerLimits
from mesh.data_dir import DataDir, found_mesh, prepare_joiner
from mesh.node import Node, NodeConfig
from mesh.storage_service import Job, StorageError
from protocols.common.wire import encode
from protocols.join.invite import decode_token
from protocols.storage.config import StorageConfig
from protocols.storage.messages import RepairDone, RepairRequest, ShareAt, ShareReply, decode_storage

LOOPBACK = "/ip4/127.0.0.1/udp/0/quic-v1"


def config() -> NodeConfig:
    return NodeConfig(
        listen=[LOOPBACK],
        hardware=HardwareDaemonConfig(benchmark_delay=None),
        storage=StorageConfig(settle_s=1.0, check_interval_s=1.0, full_check_interval_s=2.0),
    )


async def run_job(node: Node, kind: str, work: Callable[[Job], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    job = node.storage.start_job(kind, work)
    while job.state == "running":
        await trio.sleep(0.05)
    if job.state != "done":
        raise StorageError(str(job.error))
    return job.result


async def mesh_of(nursery: trio.Nursery, root: Path, size: int) -> list[Node]:
    found_mesh(root / "n0", "storage test")
    first = Node(DataDir(root / "n0"), config())
    await nursery.start(first.run)
    nodes = [first]
    for i in range(1, size):
        token = await first.api.make_invite(ttl_s=600, uses=1)
        invite = decode_token(token)
        prepare_joiner(root / f"n{i}", invite.body.mesh)
        node = Node(DataDir(root / f"n{i}"), config())
        await nursery.start(partial(node.run, join=invite))
        nodes.append(node)
    with trio.fail_after(30):
        while min([(await node.storage.status())["nodes"] for node in nodes]) < size:
            await trio.sleep(0.1)
    return nodes


def write(path: Path, size: int) -> str:
    data = os.urandom(size // 2) + b"compressible text " * (size // 36)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def test_bad_requests_get_one_line_and_leave_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        async with trio.open_nursery() as nursery:
            a, b = await mesh_of(nursery, tmp_path, 2)
            out = tmp_path / "out.bin"
            with pytest.raises(StorageError, match="unknown artifact"):
                await run_job(a, "get", lambda job: a.storage.get(job, b"\x07" * 32, out))
            assert not out.exists()
            source = tmp_path / "source.bin"
            write(source, 200_000)
            put = await run_job(a, "put", lambda job: a.storage.put(job, source, 1, 2, 3600.0))
            artifact = bytes.fromhex(put["artifact_id"])
            with pytest.raises(StorageError, match="only its owner"):
                await b.storage.remove(artifact)
            with pytest.raises(StorageError, match="not a readable file"):
                await run_job(a, "put", lambda job: a.storage.put(job, tmp_path / "missing", 1, 2, None))
            for node in (a, b):
                node.stop()

    trio.run(main)


def test_a_put_no_node_can_take_fails_in_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        async with trio.open_nursery() as nursery:
            a, b = await mesh_of(nursery, tmp_path, 2)
            for node in (a, b):  # both volunteers withdraw their disk
                save_limits(node.data_dir.path, VolunteerLimits(disk_bytes=0))
                node.storage.changed()
            with trio.fail_after(20):
                while (await a.storage.status())["nodes"] > 0:
                    await trio.sleep(0.1)
            source = tmp_path / "source.bin"
            write(source, 100_000)
            with pytest.raises(StorageError, match="no node accepts storage"):
                await run_job(a, "put", lambda job: a.storage.put(job, source, 1, 2, None))
            assert list((a.data_dir.path / "storage-work").iterdir()) == []
            assert a.storage.shares.holdings() == [] and b.storage.shares.holdings() == []
            assert await a.storage.artifacts() == []
            for node in (a, b):
                node.stop()

    trio.run(main)


def test_a_get_drops_its_own_rotten_share_and_still_returns_identical_bytes(tmp_path: Path) -> None:
    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nodes = await mesh_of(nursery, tmp_path, 3)
            owner = nodes[0]
            source = tmp_path / "source.bin"
            expected = write(source, 400_000)
            put = await run_job(owner, "put", lambda job: owner.storage.put(job, source, 2, 3, 3600.0))
            artifact = bytes.fromhex(put["artifact_id"])
            assert (put["k"], put["n"], put["placed"]) == (2, 3, 3)
            getter = nodes[1]
            ((_, index),) = getter.storage.shares.holdings()
            held = getter.storage.shares.path_of(artifact, index)
            assert held is not None
            data = bytearray(held.read_bytes())
            data[-3] ^= 0x40
            held.write_bytes(bytes(data))
            with trio.fail_after(30):
                while (await getter.storage.artifacts())[0]["healthy"] < 3:
                    await trio.sleep(0.1)
            out = tmp_path / "back.bin"
            await run_job(getter, "get", lambda job: getter.storage.get(job, artifact, out))
            assert hashlib.sha256(out.read_bytes()).hexdigest() == expected
            assert getter.storage.shares.counters["corrupt_shares"] == 1
            assert not getter.storage.shares.has(artifact, index)
            for node in nodes:
                node.stop()

    trio.run(main)


def test_only_the_hub_a_node_believes_in_can_hand_it_a_repair(tmp_path: Path) -> None:
    async def main() -> None:
        async with trio.open_nursery() as nursery:
            hub, member, other = await mesh_of(nursery, tmp_path, 3)
            source = tmp_path / "source.bin"
            write(source, 200_000)
            put = await run_job(hub, "put", lambda job: hub.storage.put(job, source, 1, 2, 3600.0))
            artifact = bytes.fromhex(put["artifact_id"])
            request = RepairRequest(artifact, hub.node_id, [], [ShareAt(0, member.node_id)])
            refused = decode_storage(await other.storage.transfer.serve(other.node_id, encode(request)))
            assert isinstance(refused, ShareReply) and "only the hub" in refused.reason
            # A request from the hub itself is carried out: the share lands where it says.
            done = decode_storage(await member.storage.transfer.serve(hub.node_id, encode(request)))
            assert isinstance(done, RepairDone) and done.placed == [ShareAt(0, member.node_id)]
            assert member.storage.shares.has(artifact, 0)
            for node in (hub, member, other):
                node.stop()

    trio.run(main)
