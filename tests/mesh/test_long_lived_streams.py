"""Requests over one long-lived mux stream per peer (`mesh.mux_stream`), on real libp2p hosts.

Each test states one guarantee of the design: concurrency on one stream, no
head-of-line blocking behind a slow handler or a big reply, prompt failure when the
stream or its connection dies and a fresh stream afterwards, the admission gate asked
per request, timeouts that only abandon their own request, the handler bound, frame
caps, malformed frames, and the fallback to one stream per request for a peer that
does not speak the mux. The log check of `test_libp2p_transport.py` applies here too.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator

import pytest
import trio
from libp2p.abc import INetStream
from libp2p.custom_types import TProtocol
from libp2p.network.stream.exceptions import StreamEOF, StreamReset

import mesh.mux_stream
from mesh.framing import HEADER
from mesh.libp2p_transport import Libp2pTransport, Libp2pTransportConfig
from mesh.mux_stream import MUX_MAX_REQUEST_BYTES, MUX_PROTOCOL, encode_request
from mesh.transport import FrameRejected, NoHandler, Refused, RequestTimeout, TransportError
from protocols.common.hashing import digest
from protocols.common.identity import NodeId, NodeIdentity
from tests.mesh.test_libp2p_transport import ECHO, PITFALL_SIGNATURES, echo, run_pair

SLOW = "/ileices/slow/1"
BLOB = "/ileices/blob/1"
MIB = 1024 * 1024


@pytest.fixture(autouse=True)
def no_pitfall_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.WARNING)
    yield
    seen = [r.getMessage() for r in caplog.records if any(s in r.getMessage() for s in PITFALL_SIGNATURES)]
    assert not seen, f"libp2p logged a pitfall: {seen[:3]}"


async def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.01)


def test_many_requests_in_flight_share_one_stream() -> None:
    async def check(a: Libp2pTransport, b: Libp2pTransport) -> None:
        async def slow_echo(peer: NodeId, payload: bytes) -> bytes:
            await trio.sleep(0.3)
            return payload

        b.set_handler(SLOW, slow_echo)
        replies: dict[int, bytes] = {}

        async def one(i: int) -> None:
            replies[i] = await a.request(b.node_id, SLOW, i.to_bytes(2, "big"), timeout=10)

        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            for i in range(40):
                nursery.start_soon(one, i)
        assert replies == {i: i.to_bytes(2, "big") for i in range(40)}
        assert trio.current_time() - start < 2.0  # in parallel: 40 x 0.3 s one by one is 12 s
        assert a.mux_streams_opened == 1
        assert len(b._mux_servers) == 1
        assert a.counters.frames_out == 40 and a.counters.frames_in == 40
        assert b.counters.frames_in == 40 and b.counters.frames_out == 40

    run_pair(check)


def test_a_slow_handler_does_not_delay_a_ping_on_the_same_stream() -> None:
    async def check(a: Libp2pTransport, b: Libp2pTransport) -> None:
        release = trio.Event()

        async def stuck(peer: NodeId, payload: bytes) -> bytes:
            await release.wait()
            return b"finally"

        b.set_handler(SLOW, stuck)
        assert await a.request(b.node_id, ECHO, b"warm", timeout=5) == b"warm"
        slow_reply: list[bytes] = []

        async def slow() -> None:
            slow_reply.append(await a.request(b.node_id, SLOW, b"?", timeout=10))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow)
            await trio.sleep(0.2)
            for _ in range(5):
                start = trio.current_time()
                assert await a.request(b.node_id, ECHO, b"ping", timeout=5) == b"ping"
                assert trio.current_time() - start < 0.5
            assert slow_reply == []
            release.set()
        assert slow_reply == [b"finally"]
        assert a.mux_streams_opened == 1

    run_pair(check)


def test_big_replies_interleave_with_small_ones_and_arrive_intact() -> None:
    """Replies are cut into 64 KiB chunks: 4 MiB of replies in flight at once on one
    stream, pings answered meanwhile, nothing lost to the receive buffer (pitfall 5)."""

    async def check(a: Libp2pTransport, b: Libp2pTransport) -> None:
        blobs = {i: random.Random(i).randbytes(MIB) for i in range(4)}

        async def blob(peer: NodeId, payload: bytes) -> bytes:
            return blobs[payload[0]]

        b.set_handler(BLOB, blob)
        got: dict[int, bytes] = {}
        ping_times: list[float] = []

        async def fetch(i: int) -> None:
            got[i] = await a.request(b.node_id, BLOB, bytes([i]), timeout=30)

        async with trio.open_nursery() as nursery:
            for i in blobs:
                nursery.start_soon(fetch, i)
            await trio.sleep(0.05)
            while len(got) < len(blobs):
                start = trio.current_time()
                assert await a.request(b.node_id, ECHO, b"ping", timeout=10) == b"ping"
                ping_times.append(trio.current_time() - start)
        assert got == blobs
        assert a.mux_streams_opened == 1
        assert ping_times and min(ping_times) < 0.5  # not one wait behind all 4 MiB

    run_pair(check)


def test_a_stream_reset_mid_request_fails_it_at_once_and_the_next_request_opens_a_new_one() -> None:
    async def check(a: Libp2pTransport, b: Libp2pTransport) -> None:
        entered = trio.Event()

        async def stuck(peer: NodeId, payload: bytes) -> bytes:
            entered.set()
            await trio.sleep_forever()
            raise AssertionError("unreachable")

        b.set_handler(SLOW, stuck)
        failures: list[tuple[BaseException, float]] = []

        async def doomed() -> None:
            start = trio.current_time()
            try:
                await a.request(b.node_id, SLOW, b"?", timeout=10)
            except TransportError as exc:
                failures.append((exc, trio.current_time() - start))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(doomed)
            nursery.start_soon(doomed)
            await entered.wait()
            (server,) = b._mux_servers
            killed_at = trio.current_time()
            await server.stream.reset()
        assert len(failures) == 2
        for exc, _ in failures:
            assert not isinstance(exc, RequestTimeout)
        assert trio.current_time() - killed_at < 1.0
        assert await a.request(b.node_id, ECHO, b"again", timeout=5) == b"again"
        assert a.mux_streams_opened == 2

    run_pair(check)


def test_a_dropped_connection_fails_in_flight_requests_at_once_and_the_next_one_redials() -> None:
    async def check(a: Libp2pTransport, b: Libp2pTransport) -> None:
        entered = trio.Event()

        async def stuck(peer: NodeId, payload: bytes) -> bytes:
            entered.set()
            await trio.sleep_forever()
            raise AssertionError("unreachable")

        b.set_handler(SLOW, stuck)
        failure: list[float] = []

        async def doomed() -> None:
            with pytest.raises(TransportError) as info:
                await a.request(b.node_id, SLOW, b"?", timeout=10)
            assert not isinstance(info.value, RequestTimeout)
            failure.append(trio.current_time())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(doomed)
            await entered.wait()
            dropped_at = trio.current_time()
            await b.disconnect(a.node_id)
        assert failure and failure[0] - dropped_at < 2.0
        assert await a.request(b.node_id, ECHO, b"redialled", timeout=5) == b"redialled"
        assert a.mux_streams_opened == 2

    run_pair(check)


def test_a_restarted_peer_is_reached_on_a_fresh_stream() -> None:
    async def main() -> None:
        b_identity = NodeIdentity.generate()
        async with Libp2pTransport.open(NodeIdentity.generate()) as a:
            async with Libp2pTransport.open(b_identity) as b:
                b.set_handler(ECHO, echo)
                addrs = b.listen_addrs()
                await a.connect(b.node_id, addrs)
                assert await a.request(b.node_id, ECHO, b"first life", timeout=5) == b"first life"
            quic_port = next(x for x in addrs if "quic" in x).split("/udp/")[1].split("/")[0]
            tcp_port = next(x for x in addrs if "/tcp/" in x).split("/tcp/")[1].split("/")[0]
            async with Libp2pTransport.open(
                b_identity,
                listen=[f"/ip4/127.0.0.1/udp/{quic_port}/quic-v1"],
                bulk_listen=[f"/ip4/127.0.0.1/tcp/{tcp_port}"],
            ) as b2:
                b2.set_handler(ECHO, echo)
                await wait_for(lambda: b_identity.node_id not in a._mux_clients)
                reply = await a.request(b_identity.node_id, ECHO, b"second life", timeout=5)
                assert reply == b"second life"
                assert a.mux_streams_opened == 2

    trio.run(main)


def test_admission_is_checked_per_request_on_a_live_stream() -> None:
    async def check(a: Libp2pTransport, b: Libp2pTransport) -> None:
        admitted = {a.node_id}
        b.set_admission_check(lambda peer: peer in admitted)
        assert await a.request(b.node_id, ECHO, b"member", timeout=5) == b"member"
        admitted.clear()  # revoked while the stream stays open
        with pytest.raises(Refused):
            await a.request(b.node_id, ECHO, b"revoked", timeout=5)
        assert b.counters.refused == 1
        assert b.counters.frames_in == 1  # the refused request was not handed on
        admitted.add(a.node_id)
        assert await a.request(b.node_id, ECHO, b"back", timeout=5) == b"back"
        assert a.mux_streams_opened == 1

    run_pair(check)


def test_a_timed_out_request_leaves_the_stream_and_the_other_requests_alone() -> None:
    async def check(a: Libp2pTransport, b: Libp2pTransport) -> None:
        async def late(peer: NodeId, payload: bytes) -> bytes:
            await trio.sleep(0.5)
            return b"late"

        b.set_handler(SLOW, late)
        others: list[bytes] = []

        async def other(i: int) -> None:
            await trio.sleep(0.1 * i)
            others.append(await a.request(b.node_id, ECHO, bytes([i]), timeout=5))

        async with trio.open_nursery() as nursery:
            for i in range(8):
                nursery.start_soon(other, i)
            with pytest.raises(RequestTimeout):
                await a.request(b.node_id, SLOW, b"?", timeout=0.1)
        assert sorted(others) == [bytes([i]) for i in range(8)]
        await trio.sleep(0.6)  # the late reply arrives for an abandoned id and is dropped
        for i in range(3):
            assert await a.request(b.node_id, ECHO, b"next %d" % i, timeout=5) == b"next %d" % i
        assert a.mux_streams_opened == 1

    run_pair(check)


def test_handlers_beyond_the_bound_are_refused_as_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mesh.mux_stream, "MUX_MAX_HANDLERS", 2)

    async def check(a: Libp2pTransport, b: Libp2pTransport) -> None:
        release = trio.Event()

        async def stuck(peer: NodeId, payload: bytes) -> bytes:
            await release.wait()
            return payload

        b.set_handler(SLOW, stuck)
        outcomes: list[str] = []

        async def one() -> None:
            try:
                await a.request(b.node_id, SLOW, b"x", timeout=5)
                outcomes.append("ok")
            except TransportError as exc:
                assert "busy" in str(exc)
                outcomes.append("busy")

        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(one)
            await wait_for(lambda: outcomes.count("busy") == 2)
            release.set()
        assert sorted(outcomes) == ["busy", "busy", "ok", "ok"]
        assert b.counters.errors == 2
        assert await a.request(b.node_id, ECHO, b"fine", timeout=5) == b"fine"

    run_pair(check)


def test_an_oversize_request_on_the_stream_is_refused_and_the_stream_stays_in_sync() -> None:
    async def check(a: Libp2pTransport, b: Libp2pTransport) -> None:
        with pytest.raises(FrameRejected, match="exceeds"):
            await a.request(b.node_id, ECHO, b"x" * 2000, timeout=5)
        assert b.counters.oversize == 1
        assert await a.request(b.node_id, ECHO, b"fits", timeout=5) == b"fits"
        assert a.mux_streams_opened == 1

    run_pair(check, b_config=Libp2pTransportConfig(max_frame_bytes=1024))


def test_requests_too_big_for_the_shared_stream_take_a_stream_of_their_own() -> None:
    async def check(a: Libp2pTransport, b: Libp2pTransport) -> None:
        async def hash_of(peer: NodeId, payload: bytes) -> bytes:
            return digest(payload)

        b.set_handler(BLOB, hash_of)
        big = random.Random(5).randbytes(MUX_MAX_REQUEST_BYTES + 1)
        assert await a.request(b.node_id, BLOB, big, timeout=10) == digest(big)
        assert a.mux_streams_opened == 0
        assert await a.request(b.node_id, BLOB, big[:100], timeout=10) == digest(big[:100])
        assert a.mux_streams_opened == 1

    run_pair(check)


def test_unknown_protocol_is_no_handler_over_the_stream() -> None:
    async def check(a: Libp2pTransport, b: Libp2pTransport) -> None:
        assert await a.request(b.node_id, ECHO, b"x", timeout=5) == b"x"
        with pytest.raises(NoHandler):
            await a.request(b.node_id, "/ileices/unknown/1", b"x", timeout=5)
        assert await a.request(b.node_id, ECHO, b"y", timeout=5) == b"y"
        assert a.mux_streams_opened == 1

    run_pair(check)


async def read_until_it_ends(stream: INetStream) -> None:
    """Read until the stream is reset or ends (within 5 s, else the test fails)."""
    with trio.fail_after(5):
        while True:
            try:
                await stream.read(100)
            except (StreamEOF, StreamReset):
                return


def test_a_malformed_frame_resets_only_that_stream() -> None:
    async def check(a: Libp2pTransport, b: Libp2pTransport) -> None:
        rogue = await a._mesh_host.new_stream(b.peer_id, [TProtocol(MUX_PROTOCOL)])
        await rogue.write(HEADER.pack(3) + b"\x00\x00\x00")  # shorter than a request head
        await read_until_it_ends(rogue)
        rogue2 = await a._mesh_host.new_stream(b.peer_id, [TProtocol(MUX_PROTOCOL)])
        await rogue2.write(HEADER.pack(10 * MIB))  # absurd length: a violation, not a skip
        await read_until_it_ends(rogue2)
        assert b.counters.errors == 2  # one protocol violation each
        assert await a.request(b.node_id, ECHO, b"unharmed", timeout=5) == b"unharmed"
        frame = encode_request(7, ECHO, b"raw")  # and the wire format is what the docs say
        rogue3 = await a._mesh_host.new_stream(b.peer_id, [TProtocol(MUX_PROTOCOL)])
        await rogue3.write(frame)
        reply = await rogue3.read(100)
        assert reply == HEADER.pack(8) + (7).to_bytes(4, "big") + b"\x00raw"
        await rogue3.reset()

    run_pair(check)


def test_a_peer_without_the_mux_is_served_one_stream_per_request() -> None:
    async def check(a: Libp2pTransport, b: Libp2pTransport) -> None:
        for i in range(3):
            assert await a.request(b.node_id, ECHO, bytes([i]), timeout=5) == bytes([i])
        assert a.mux_streams_opened == 0
        assert b.node_id in a._no_mux_until  # asked once, remembered
        with pytest.raises(NoHandler):
            await a.request(b.node_id, "/ileices/unknown/1", b"x", timeout=5)
        assert a.counters.frames_out == 3

    run_pair(check, b_config=Libp2pTransportConfig(long_lived_streams=False))


@pytest.mark.slow
def test_an_idle_stream_outlives_quics_30_s_read_timeout() -> None:
    """Pitfall 4: QUIC streams died after 30 s without incoming data."""

    async def check(a: Libp2pTransport, b: Libp2pTransport) -> None:
        assert await a.request(b.node_id, ECHO, b"before", timeout=5) == b"before"
        await trio.sleep(35)
        assert await a.request(b.node_id, ECHO, b"after", timeout=5) == b"after"
        assert a.mux_streams_opened == 1

    run_pair(check)
