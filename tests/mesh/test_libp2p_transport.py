"""The libp2p transport on loopback: request/reply over QUIC, bulk over TCP, and one
test per applicable pitfall of py-libp2p 0.8.1 (the shared notes), each of which
fails if its workaround is removed. An autouse fixture also fails any test during
which libp2p logs a pitfall's signature (silent drops, writes after FIN, broken
noise sessions), because those pitfalls show up *only* in logs.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager

import pytest
import trio
from libp2p.crypto.secp256k1 import create_new_key_pair
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from multiaddr import Multiaddr

from mesh.framing import FrameTooLarge, encode_frame, read_frame
from mesh.libp2p_transport import (
    BULK_CHUNK,
    BULK_END,
    STATUS_INTEGRITY,
    Libp2pTransport,
    Libp2pTransportConfig,
    node_id_from_peer_id,
    peer_id_from_node_id,
)
from mesh.transport import (
    JOIN_PROTOCOL,
    BulkIncoming,
    FrameRejected,
    IntegrityError,
    NoHandler,
    PeerUnreachable,
    Refused,
    RemoteError,
    RequestTimeout,
    Transport,
    TransportError,
)
from protocols.common.hashing import digest
from protocols.common.identity import NodeId, NodeIdentity
from tests.support.paths import REPO_ROOT, SUPPORT_DIR

ECHO = "/ileices/echo/1"
HASH = "/ileices/hash/1"
BLOB = "/ileices/blob/1"
MIB = 1024 * 1024
PITFALL_SIGNATURES = (
    "receive buffer overflow",  # pitfall 5: QUIC dropped data silently
    "Cannot send data after FIN",  # pitfall 7
    "Failed authentication",  # pitfall 8: a cancelled TCP write broke noise
    "InvalidTag",
)


@pytest.fixture(autouse=True)
def no_pitfall_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.WARNING)
    yield
    seen = [r.getMessage() for r in caplog.records if any(s in r.getMessage() for s in PITFALL_SIGNATURES)]
    assert not seen, f"libp2p logged a pitfall: {seen[:3]}"


async def echo(peer: NodeId, payload: bytes) -> bytes:
    return payload


async def hash_of(peer: NodeId, payload: bytes) -> bytes:
    return digest(payload)


@asynccontextmanager
async def pair(
    b_config: Libp2pTransportConfig | None = None,
) -> AsyncIterator[tuple[Libp2pTransport, Libp2pTransport]]:
    async with (
        Libp2pTransport.open(NodeIdentity.generate()) as a,
        Libp2pTransport.open(NodeIdentity.generate(), config=b_config) as b,
    ):
        b.set_handler(ECHO, echo)
        b.set_handler(HASH, hash_of)
        await a.connect(b.node_id, b.listen_addrs())
        yield a, b


def run_pair(
    test: Callable[[Libp2pTransport, Libp2pTransport], Awaitable[None]],
    b_config: Libp2pTransportConfig | None = None,
) -> None:
    async def main() -> None:
        async with pair(b_config) as (a, b):
            await test(a, b)

    trio.run(main)


def test_node_id_and_peer_id_map_one_to_one() -> None:
    identities = [NodeIdentity.from_seed(bytes([i]) * 32) for i in range(20)]
    peer_ids = [peer_id_from_node_id(i.node_id) for i in identities]
    assert len(set(peer_ids)) == 20
    for identity, peer_id in zip(identities, peer_ids, strict=True):
        assert node_id_from_peer_id(peer_id) == identity.node_id
        assert node_id_from_peer_id(ID.from_base58(peer_id.to_base58())) == identity.node_id
    secp_peer = ID.from_pubkey(create_new_key_pair().public_key)
    with pytest.raises(ValueError, match="not an Ed25519"):
        node_id_from_peer_id(secp_peer)


def test_request_reply_over_quic_with_a_fast_connect() -> None:
    async def main() -> None:
        async with (
            Libp2pTransport.open(NodeIdentity.generate()) as a,
            Libp2pTransport.open(NodeIdentity.generate()) as b,
        ):
            assert isinstance(a, Transport)
            assert a.peer_id == peer_id_from_node_id(a.node_id)
            assert any("/quic-v1" in addr for addr in b.listen_addrs())
            assert any("/tcp/" in addr for addr in b.listen_addrs())

            async def who(peer: NodeId, payload: bytes) -> bytes:
                return peer + payload

            b.set_handler(ECHO, who)
            start = trio.current_time()
            await a.connect(b.node_id, b.listen_addrs())
            assert trio.current_time() - start < 0.2  # pitfall 1: not 250 ms per dial
            assert await a.request(b.node_id, ECHO, b"hello", timeout=5) == a.node_id + b"hello"
            assert b.node_id in a.connected_peers()
            assert a.counters.frames_out == 1 and a.counters.frames_in == 1
            assert b.counters.frames_in == 1 and b.counters.bytes_in == 5

    trio.run(main)


def test_200_kb_and_4_mib_messages_arrive_intact() -> None:
    """Pitfall 9: read_exactly gives up after 101 reads; a 200 KB QUIC message failed."""

    async def check(a: Libp2pTransport, b: Libp2pTransport) -> None:
        rng = random.Random(9)
        small = rng.randbytes(200_000)
        assert await a.request(b.node_id, ECHO, small, timeout=10) == small
        big = rng.randbytes(2 * MIB)  # 4 MiB each way: the slow test below
        assert await a.request(b.node_id, HASH, big, timeout=20) == digest(big)

    run_pair(check)


def test_replies_are_intact_although_the_responder_is_done_right_after_writing() -> None:
    """Pitfall 6: a QUIC writer that closes right after writing lost the tail of 1 MiB
    replies 5-9 times in 20; the requester's close is the responder's go-ahead."""

    async def check(a: Libp2pTransport, b: Libp2pTransport) -> None:
        replies = {i: random.Random(i).randbytes(MIB) for i in range(4)}

        async def big_reply(peer: NodeId, payload: bytes) -> bytes:
            return replies[payload[0]]

        b.set_handler(BLOB, big_reply)
        for i, expected in replies.items():
            assert await a.request(b.node_id, BLOB, bytes([i]), timeout=10) == expected

    run_pair(check)


def test_slow_handler_with_many_large_requests_in_flight_loses_nothing() -> None:
    """Pitfall 5 (slow reader, 2 MiB buffer, silent drop) and concurrency: 3 MiB in
    flight to a slow consumer; every request must be answered with its own hash."""

    async def check(a: Libp2pTransport, b: Libp2pTransport) -> None:
        async def slow_hash(peer: NodeId, payload: bytes) -> bytes:
            await trio.sleep(0.5)
            return digest(payload)

        b.set_handler(BLOB, slow_hash)
        payloads = [random.Random(100 + i).randbytes(MIB) for i in range(3)]
        replies: dict[int, bytes] = {}

        async def one(i: int) -> None:
            replies[i] = await a.request(b.node_id, BLOB, payloads[i], timeout=30)

        async with trio.open_nursery() as nursery:
            for i in range(len(payloads)):
                nursery.start_soon(one, i)
        assert replies == {i: digest(p) for i, p in enumerate(payloads)}

    run_pair(check)


def test_many_concurrent_requests_run_in_parallel() -> None:
    async def check(a: Libp2pTransport, b: Libp2pTransport) -> None:
        async def slow(peer: NodeId, payload: bytes) -> bytes:
            await trio.sleep(0.3)
            return payload

        b.set_handler(BLOB, slow)
        replies: dict[int, bytes] = {}

        async def one(i: int) -> None:
            replies[i] = await a.request(b.node_id, BLOB, i.to_bytes(2, "big"), timeout=10)

        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            for i in range(30):
                nursery.start_soon(one, i)
        assert replies == {i: i.to_bytes(2, "big") for i in range(30)}
        assert trio.current_time() - start < 3.0  # 30 x 0.3 s sequentially would be 9 s

    run_pair(check)


def test_non_admitted_peer_is_refused_and_counted_except_on_join() -> None:
    async def check(a: Libp2pTransport, b: Libp2pTransport) -> None:
        b.set_handler(JOIN_PROTOCOL, echo)
        b.set_bulk_handler(BLOB, digest_sink)
        b.set_admission_check(lambda peer: peer != a.node_id)

        with pytest.raises(Refused):
            await a.request(b.node_id, ECHO, b"gossip from a stranger", timeout=5)
        with pytest.raises(Refused):
            await a.send_bulk(b.node_id, BLOB, b"artifact from a stranger", timeout=5)
        assert await a.request(b.node_id, JOIN_PROTOCOL, b"join me", timeout=5) == b"join me"
        assert b.counters.refused == 2
        assert b.counters.frames_in == 1  # only the join request was read

        b.set_admission_check(lambda peer: True)
        assert await a.request(b.node_id, ECHO, b"admitted now", timeout=5) == b"admitted now"

    run_pair(check)


def test_oversize_frame_is_refused_counted_and_the_connection_survives() -> None:
    async def check(a: Libp2pTransport, b: Libp2pTransport) -> None:
        with pytest.raises(FrameRejected, match="exceeds"):
            await a.request(b.node_id, ECHO, b"x" * (100 * 1024), timeout=5)
        assert b.counters.oversize == 1
        with pytest.raises(FrameTooLarge):
            await a.request(b.node_id, ECHO, b"x" * (4 * MIB + 1), timeout=5)
        assert await a.request(b.node_id, ECHO, b"fits", timeout=5) == b"fits"

    run_pair(check, b_config=Libp2pTransportConfig(max_frame_bytes=64 * 1024))


def test_handler_error_and_unknown_protocol_are_clear_errors() -> None:
    async def check(a: Libp2pTransport, b: Libp2pTransport) -> None:
        async def broken(peer: NodeId, payload: bytes) -> bytes:
            raise KeyError("no such record")

        b.set_handler(BLOB, broken)
        with pytest.raises(RemoteError, match="no such record"):
            await a.request(b.node_id, BLOB, b"x", timeout=5)
        assert b.counters.errors == 1
        with pytest.raises(NoHandler):
            await a.request(b.node_id, "/ileices/unknown/1", b"x", timeout=5)
        assert await a.request(b.node_id, ECHO, b"still here", timeout=5) == b"still here"

    run_pair(check)


def test_closed_peer_gives_an_error_within_the_timeout_not_a_hang() -> None:
    """Pitfall 2: without host.close() the peer still looked connected after leaving."""

    async def main() -> None:
        async with Libp2pTransport.open(NodeIdentity.generate()) as a:
            async with Libp2pTransport.open(NodeIdentity.generate()) as b:
                b.set_handler(ECHO, echo)
                await a.connect(b.node_id, b.listen_addrs())
                assert await a.request(b.node_id, ECHO, b"x", timeout=5) == b"x"
            start = trio.current_time()
            with pytest.raises(TransportError):
                await a.request(b.node_id, ECHO, b"anyone?", timeout=2)
            assert trio.current_time() - start < 3
            with trio.move_on_after(2):
                while b.node_id in a.connected_peers():
                    await trio.sleep(0.05)
            assert b.node_id not in a.connected_peers()

    trio.run(main)


def test_restarted_peer_on_the_same_port_is_reachable_at_once() -> None:
    """Pitfall 3 and 10: the auto-connector is off, and a dial that failed while the
    peer was down must not block a deliberate connect for the 60 s negative cache."""

    async def main() -> None:
        b_identity = NodeIdentity.generate()
        async with Libp2pTransport.open(NodeIdentity.generate()) as a:
            network = a._mesh_host.get_network()
            assert network.auto_connector._started is False  # type: ignore[attr-defined]
            async with Libp2pTransport.open(b_identity) as b:
                addrs = b.listen_addrs()
            await a.disconnect(b_identity.node_id)
            start = trio.current_time()
            with pytest.raises(PeerUnreachable):
                await a.connect(b_identity.node_id, addrs, timeout=1)
            assert trio.current_time() - start < 1.5  # libp2p alone retries for 40 s
            network._negative_peer_cache.mark_failed(str(peer_id_from_node_id(b_identity.node_id)))  # type: ignore[attr-defined]
            quic_port = next(a for a in addrs if "quic" in a).split("/udp/")[1].split("/")[0]
            tcp_port = next(a for a in addrs if "/tcp/" in a).split("/tcp/")[1].split("/")[0]
            async with Libp2pTransport.open(
                b_identity,
                listen=[f"/ip4/127.0.0.1/udp/{quic_port}/quic-v1"],
                bulk_listen=[f"/ip4/127.0.0.1/tcp/{tcp_port}"],
            ) as b2:
                b2.set_handler(ECHO, echo)
                await a.connect(b_identity.node_id, addrs)
                assert await a.request(b_identity.node_id, ECHO, b"back", timeout=5) == b"back"

    trio.run(main)


def test_cancelling_a_quic_write_leaves_the_connection_usable() -> None:
    async def check(a: Libp2pTransport, b: Libp2pTransport) -> None:
        with pytest.raises(RequestTimeout):
            await a.request(b.node_id, HASH, bytes(4 * MIB), timeout=0.15)
        for i in range(5):
            assert await a.request(b.node_id, ECHO, bytes([i]) * 1000, timeout=5) == bytes([i]) * 1000

    run_pair(check)


async def digest_sink(peer: NodeId, incoming: BulkIncoming) -> bytes:
    return digest(await incoming.read_all(1 << 30))


def test_bulk_transfer_over_tcp_is_hash_checked_and_acknowledged() -> None:
    async def check(a: Libp2pTransport, b: Libp2pTransport) -> None:
        b.set_bulk_handler(BLOB, digest_sink)
        data = random.Random(77).randbytes(16 * MIB + 3)
        assert await a.send_bulk(b.node_id, BLOB, data, timeout=30) == digest(data)
        assert a.counters.bulk_bytes_out == len(data)
        assert b.counters.bulk_in == 1 and b.counters.bulk_bytes_in == len(data)
        assert await a.send_bulk(b.node_id, BLOB, [b"a", b"bc"], timeout=5) == digest(b"abc")

    run_pair(check)


@pytest.mark.parametrize(
    "timeouts",
    [(0.03, 0.15), pytest.param((0.03, 0.06, 0.1, 0.15, 0.2), marks=pytest.mark.slow)],
)
def test_cancelling_a_bulk_write_on_tcp_does_not_break_the_connection(timeouts: tuple[float, ...]) -> None:
    """Pitfall 8: a cancelled noise+yamux write broke the whole connection
    ("Failed authentication of message"); writes are shielded."""

    async def check(a: Libp2pTransport, b: Libp2pTransport) -> None:
        b.set_bulk_handler(BLOB, digest_sink)
        for timeout in timeouts:
            with pytest.raises(RequestTimeout):
                await a.send_bulk(b.node_id, BLOB, bytes(64 * MIB), timeout=timeout)
        data = random.Random(3).randbytes(4 * MIB)
        assert await a.send_bulk(b.node_id, BLOB, data, timeout=20) == digest(data)
        assert b.counters.bulk_in == 1

    run_pair(check)


def test_corrupted_bulk_data_is_refused_by_its_hash() -> None:
    """Speak the bulk wire format by hand with a wrong trailer: the receiver must
    say "integrity" and must not hand the handler a completed transfer."""

    async def check(a: Libp2pTransport, b: Libp2pTransport) -> None:
        committed: list[bytes] = []

        async def committing_sink(peer: NodeId, incoming: BulkIncoming) -> bytes:
            data = await incoming.read_all(1 << 20)
            committed.append(data)
            return b"stored"

        b.set_bulk_handler(BLOB, committing_sink)
        await a.connect(b.node_id, b.listen_addrs())
        tcp_addrs = [Multiaddr(x) for x in b.listen_addrs() if "/tcp/" in x]
        await a._bulk_host.connect(PeerInfo(b.peer_id, tcp_addrs))  # raw host: no send_bulk hashing
        stream = await a._bulk_host.new_stream(b.peer_id, [TProtocol(BLOB)])
        await stream.write(encode_frame(bytes([BULK_CHUNK]) + b"real data"))
        await stream.write(encode_frame(bytes([BULK_END]) + digest(b"other data") + (9).to_bytes(8, "big")))

        class Reader:
            async def read(self, n: int) -> bytes:
                return await stream.read(n)

        reply = await read_frame(Reader())
        await stream.close()
        assert reply[0] == STATUS_INTEGRITY
        assert committed == []
        assert b.counters.integrity_failures == 1

        b.set_bulk_handler(BLOB, digest_sink)
        assert await a.send_bulk(b.node_id, BLOB, b"real data", timeout=5) == digest(b"real data")

    run_pair(check)


def test_integrity_error_type_reaches_the_sender() -> None:
    async def check(a: Libp2pTransport, b: Libp2pTransport) -> None:
        async def strict(peer: NodeId, incoming: BulkIncoming) -> bytes:
            await incoming.read_all(1 << 20)
            raise IntegrityError("artifact hash is not the one announced")

        b.set_bulk_handler(BLOB, strict)
        with pytest.raises(IntegrityError, match="announced"):
            await a.send_bulk(b.node_id, BLOB, b"data", timeout=5)

    run_pair(check)


@pytest.mark.slow
def test_sigkilled_peer_process_gives_a_timeout_not_a_hang() -> None:
    """Pitfall 2: a killed QUIC peer looks connected (no keepalive, 600 s idle timeout)."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    peer = subprocess.Popen(
        [sys.executable, str(SUPPORT_DIR / "libp2p_peer_process.py")],
        stdout=subprocess.PIPE,
        env=env,
    )
    try:
        assert peer.stdout is not None
        info = json.loads(peer.stdout.readline())

        async def main() -> None:
            node_id = bytes.fromhex(info["node_id"])
            async with Libp2pTransport.open(NodeIdentity.generate()) as a:
                await a.connect(node_id, info["addrs"])
                assert await a.request(node_id, ECHO, b"alive?", timeout=5) == b"alive?"
                peer.send_signal(signal.SIGKILL)
                peer.wait()
                start = trio.current_time()
                with pytest.raises(TransportError):
                    await a.request(node_id, ECHO, b"alive?", timeout=2)
                assert trio.current_time() - start < 3

        trio.run(main)
    finally:
        peer.kill()
        peer.wait()


@pytest.mark.slow
def test_a_handler_slower_than_quics_30_s_read_timeout_still_gets_its_reply_through() -> None:
    """Pitfall 4: QUIC streams died after 30 s without incoming data."""

    async def check(a: Libp2pTransport, b: Libp2pTransport) -> None:
        async def ponder(peer: NodeId, payload: bytes) -> bytes:
            await trio.sleep(35)
            return b"considered"

        b.set_handler(BLOB, ponder)
        assert await a.request(b.node_id, BLOB, b"?", timeout=60) == b"considered"

    run_pair(check)


@pytest.mark.slow
def test_twenty_1_mib_replies_and_4_mib_messages_both_ways_are_intact() -> None:
    async def check(a: Libp2pTransport, b: Libp2pTransport) -> None:
        async def reply_of_size(peer: NodeId, payload: bytes) -> bytes:
            size = int.from_bytes(payload[:4], "big")
            return random.Random(payload[4]).randbytes(size)

        b.set_handler(BLOB, reply_of_size)
        for i in range(20):
            expected = random.Random(i).randbytes(MIB)
            assert (
                await a.request(b.node_id, BLOB, MIB.to_bytes(4, "big") + bytes([i]), timeout=20) == expected
            )
        expected = random.Random(7).randbytes(4 * MIB)
        assert (
            await a.request(b.node_id, BLOB, (4 * MIB).to_bytes(4, "big") + bytes([7]), timeout=30)
            == expected
        )
        big = random.Random(8).randbytes(4 * MIB)
        assert await a.request(b.node_id, HASH, big, timeout=30) == digest(big)

    run_pair(check)
