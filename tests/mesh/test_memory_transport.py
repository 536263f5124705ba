"""The in-memory transport keeps the contract: replies, refusals, kills, caps, bulk."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import trio

from mesh.framing import FrameTooLarge
from mesh.memory_transport import MemoryNetwork, MemoryTransport
from mesh.transport import (
    JOIN_PROTOCOL,
    BulkIncoming,
    FrameRejected,
    NoHandler,
    PeerUnreachable,
    Refused,
    RemoteError,
    RequestTimeout,
    Transport,
    TransportClosed,
)
from protocols.common.hashing import digest
from protocols.common.identity import NodeId, NodeIdentity

ECHO = "/ileices/echo/1"
GOSSIP = "/ileices/gossip/1"
BLOB = "/ileices/blob/1"


def node(seed: int) -> NodeId:
    return NodeIdentity.from_seed(bytes([seed]) * 32).node_id


async def echo(peer: NodeId, payload: bytes) -> bytes:
    return peer + payload


def run(test: Callable[[MemoryNetwork, MemoryTransport, MemoryTransport], Awaitable[None]]) -> None:
    async def main() -> None:
        network = MemoryNetwork()
        async with network.open(node(1)) as a, network.open(node(2)) as b:
            b.set_handler(ECHO, echo)
            await test(network, a, b)

    trio.run(main)


def test_it_satisfies_the_transport_protocol() -> None:
    async def check(network: MemoryNetwork, a: MemoryTransport, b: MemoryTransport) -> None:
        assert isinstance(a, Transport)
        assert a.node_id == node(1)
        assert a.listen_addrs() == [f"/memory/{node(1).hex()}"]

    run(check)


def test_request_gets_the_reply_and_the_handler_sees_the_sender() -> None:
    async def check(network: MemoryNetwork, a: MemoryTransport, b: MemoryTransport) -> None:
        await a.connect(b.node_id, b.listen_addrs())
        assert await a.request(b.node_id, ECHO, b"hi", timeout=1) == node(1) + b"hi"
        assert a.counters.frames_out == 1 and b.counters.frames_in == 1
        assert b.counters.bytes_in == 2 and a.counters.bytes_in == 34
        assert a.connected_peers() == [b.node_id]

    run(check)


def test_concurrent_requests_are_served_concurrently() -> None:
    async def check(network: MemoryNetwork, a: MemoryTransport, b: MemoryTransport) -> None:
        async def slow(peer: NodeId, payload: bytes) -> bytes:
            await trio.sleep(0.2)
            return payload

        b.set_handler(GOSSIP, slow)
        replies: dict[int, bytes] = {}

        async def one(i: int) -> None:
            replies[i] = await a.request(b.node_id, GOSSIP, bytes([i]), timeout=2)

        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(one, i)
        assert trio.current_time() - start < 1.0
        assert replies == {i: bytes([i]) for i in range(20)}

    run(check)


def test_handler_failure_is_a_remote_error_and_the_node_keeps_serving() -> None:
    async def check(network: MemoryNetwork, a: MemoryTransport, b: MemoryTransport) -> None:
        async def broken(peer: NodeId, payload: bytes) -> bytes:
            raise KeyError("boom")

        b.set_handler(GOSSIP, broken)
        with pytest.raises(RemoteError, match="boom"):
            await a.request(b.node_id, GOSSIP, b"x", timeout=1)
        assert b.counters.errors == 1
        assert await a.request(b.node_id, ECHO, b"still", timeout=1) == node(1) + b"still"

    run(check)


def test_unknown_protocol_and_unknown_peer_are_clear_errors() -> None:
    async def check(network: MemoryNetwork, a: MemoryTransport, b: MemoryTransport) -> None:
        with pytest.raises(NoHandler):
            await a.request(b.node_id, GOSSIP, b"x", timeout=1)
        with pytest.raises(PeerUnreachable):
            await a.request(node(9), ECHO, b"x", timeout=1)
        with pytest.raises(PeerUnreachable):
            await a.connect(node(9), [])
        with pytest.raises(ValueError):
            await a.request(b.node_id, "/other/echo/1", b"x", timeout=1)

    run(check)


def test_non_admitted_peer_may_only_speak_the_join_protocol() -> None:
    async def check(network: MemoryNetwork, a: MemoryTransport, b: MemoryTransport) -> None:
        b.set_handler(JOIN_PROTOCOL, echo)
        b.set_admission_check(lambda peer: peer != a.node_id)

        with pytest.raises(Refused):
            await a.request(b.node_id, ECHO, b"let me in", timeout=1)
        assert await a.request(b.node_id, JOIN_PROTOCOL, b"join", timeout=1) == a.node_id + b"join"
        assert b.counters.refused == 1

        def broken_check(peer: NodeId) -> bool:
            raise RuntimeError("admission state not loaded")

        b.set_admission_check(broken_check)
        with pytest.raises(Refused):
            await a.request(b.node_id, ECHO, b"x", timeout=1)
        assert b.counters.refused == 2

        b.set_admission_check(lambda peer: True)
        assert await a.request(b.node_id, ECHO, b"ok", timeout=1) == a.node_id + b"ok"

    run(check)


def test_killed_peer_gives_a_timeout_not_a_hang() -> None:
    async def check(network: MemoryNetwork, a: MemoryTransport, b: MemoryTransport) -> None:
        network.kill(b.node_id)
        start = trio.current_time()
        with pytest.raises(RequestTimeout):
            await a.request(b.node_id, ECHO, b"anyone?", timeout=0.3)
        assert 0.3 <= trio.current_time() - start < 1.0
        with pytest.raises(TransportClosed):
            await b.request(a.node_id, ECHO, b"x", timeout=0.3)

    run(check)


def test_peer_killed_mid_request_gives_a_timeout() -> None:
    async def check(network: MemoryNetwork, a: MemoryTransport, b: MemoryTransport) -> None:
        entered = trio.Event()

        async def slow(peer: NodeId, payload: bytes) -> bytes:
            entered.set()
            await trio.sleep(10)
            return b"never"

        b.set_handler(GOSSIP, slow)
        async with trio.open_nursery() as nursery:

            async def killer() -> None:
                await entered.wait()
                network.kill(b.node_id)

            nursery.start_soon(killer)
            with pytest.raises(RequestTimeout):
                await a.request(b.node_id, GOSSIP, b"x", timeout=0.5)

    run(check)


def test_killed_node_can_come_back_with_the_same_id() -> None:
    async def main() -> None:
        network = MemoryNetwork()
        async with network.open(node(1)) as a:
            async with network.open(node(2)) as b:
                network.kill(b.node_id)
            with pytest.raises(RequestTimeout):
                await a.request(node(2), ECHO, b"x", timeout=0.1)
            async with network.open(node(2)) as b2:
                b2.set_handler(ECHO, echo)
                assert await a.request(node(2), ECHO, b"back", timeout=1) == node(1) + b"back"

    trio.run(main)


def test_oversize_frames_are_refused_and_counted() -> None:
    async def main() -> None:
        network = MemoryNetwork()
        async with network.open(node(1)) as a, network.open(node(2), max_frame_bytes=1000) as b:
            b.set_handler(ECHO, echo)
            with pytest.raises(FrameTooLarge):
                await a.request(b.node_id, ECHO, b"x" * (a.max_frame_bytes + 1), timeout=1)
            with pytest.raises(FrameRejected):
                await a.request(b.node_id, ECHO, b"x" * 1001, timeout=1)
            assert b.counters.oversize == 1
            assert await a.request(b.node_id, ECHO, b"x" * 900, timeout=1) == node(1) + b"x" * 900

    trio.run(main)


async def digest_sink(peer: NodeId, incoming: BulkIncoming) -> bytes:
    return digest(await incoming.read_all(1 << 30))


def test_bulk_transfer_of_bytes_and_of_an_async_stream_is_acknowledged_with_its_hash() -> None:
    async def check(network: MemoryNetwork, a: MemoryTransport, b: MemoryTransport) -> None:
        b.set_bulk_handler(BLOB, digest_sink)
        data = random.Random(5).randbytes(5 * 1024 * 1024 + 7)
        assert await a.send_bulk(b.node_id, BLOB, data) == digest(data)

        async def pieces() -> AsyncIterator[bytes]:
            for start in range(0, len(data), 300_000):
                yield data[start : start + 300_000]

        assert await a.send_bulk(b.node_id, BLOB, pieces()) == digest(data)
        assert await a.send_bulk(b.node_id, BLOB, [b"ab", b"", b"c"]) == digest(b"abc")
        assert b.counters.bulk_in == 3 and b.counters.bulk_bytes_in == 2 * len(data) + 3

    run(check)


def test_bulk_refusals_and_handler_errors_reach_the_sender() -> None:
    async def check(network: MemoryNetwork, a: MemoryTransport, b: MemoryTransport) -> None:
        with pytest.raises(NoHandler):
            await a.send_bulk(b.node_id, BLOB, b"x")

        async def picky(peer: NodeId, incoming: BulkIncoming) -> bytes:
            async for _chunk in incoming:
                raise ValueError("not this one")
            return b""

        b.set_bulk_handler(BLOB, picky)
        with pytest.raises(RemoteError, match="not this one"):
            await a.send_bulk(b.node_id, BLOB, bytes(8 * 1024 * 1024), timeout=5)

        b.set_admission_check(lambda peer: False)
        with pytest.raises(Refused):
            await a.send_bulk(b.node_id, BLOB, b"x")
        assert b.counters.refused == 1

    run(check)


def test_closed_transport_refuses_to_send() -> None:
    async def main() -> None:
        network = MemoryNetwork()
        async with network.open(node(1)) as a:
            pass
        with pytest.raises(TransportClosed):
            await a.request(node(2), ECHO, b"x", timeout=0.1)
        assert not network.is_up(node(1))

    trio.run(main)
