"""The transport contract inside one process, for fast multi-node actor tests.

A `MemoryNetwork` is the hub; each node opens its own `MemoryTransport` on it. It
keeps the semantics that matter to the protocols above it, so a test that passes
here means something on libp2p too: handlers run in the *receiving* node's nursery
(a crashing handler never reaches the sender), a killed node's peers get
`RequestTimeout` after their timeout (as a killed QUIC peer does, notes pitfall 2),
non-admitted peers are refused and counted, oversized frames are rejected, and bulk
transfers are size- and hash-checked.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

from mesh.framing import MAX_FRAME_BYTES, FrameTooLarge
from mesh.transport import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_REQUEST_TIMEOUT,
    AdmissionCheck,
    AdmissionGate,
    Blake2bAccumulator,
    BulkHandler,
    BulkIncoming,
    BulkSource,
    FrameRejected,
    IntegrityError,
    NoHandler,
    PeerUnreachable,
    Refused,
    RemoteError,
    RequestHandler,
    RequestTimeout,
    TransportClosed,
    TransportCounters,
    TransportError,
    check_node_id,
    check_protocol_id,
    iter_bulk_source,
)
from protocols.common.identity import NodeId

log = logging.getLogger(__name__)

BULK_WINDOW_CHUNKS = 4
"""Chunks in flight per bulk transfer: the sender blocks when the reader lags."""


@dataclass(frozen=True)
class _Trailer:
    """End of a bulk transfer: what the sender says it sent."""

    size: int
    digest: bytes


class MemoryNetwork:
    """The shared hub: which nodes are up, and which were killed."""

    def __init__(self) -> None:
        self._nodes: dict[NodeId, MemoryTransport] = {}
        self._killed: set[NodeId] = set()

    @asynccontextmanager
    async def open(
        self, node_id: NodeId, *, max_frame_bytes: int = MAX_FRAME_BYTES
    ) -> AsyncIterator[MemoryTransport]:
        """Bring a node up on this network for the duration of the block."""
        check_node_id(node_id)
        if node_id in self._nodes:
            raise ValueError(f"node {node_id.hex()[:12]} is already up on this network")
        async with trio.open_nursery() as nursery:
            transport = MemoryTransport(self, node_id, nursery, max_frame_bytes)
            self._nodes[node_id] = transport
            self._killed.discard(node_id)
            try:
                yield transport
            finally:
                transport._closed = True
                if self._nodes.get(node_id) is transport:
                    del self._nodes[node_id]
                nursery.cancel_scope.cancel()

    def kill(self, node_id: NodeId) -> None:
        """Simulate SIGKILL: the node vanishes mid-flight; peers see timeouts."""
        transport = self._nodes.pop(node_id, None)
        self._killed.add(node_id)
        if transport is not None:
            transport._closed = True
            transport._nursery.cancel_scope.cancel()

    def is_up(self, node_id: NodeId) -> bool:
        return node_id in self._nodes

    def _lookup(self, peer: NodeId) -> MemoryTransport | None:
        return self._nodes.get(peer)

    def _was_killed(self, peer: NodeId) -> bool:
        return peer in self._killed


class MemoryTransport:
    """One node's endpoint on a `MemoryNetwork`; see `mesh.transport.Transport`."""

    def __init__(
        self, network: MemoryNetwork, node_id: NodeId, nursery: trio.Nursery, max_frame_bytes: int
    ) -> None:
        self._network = network
        self._node_id = node_id
        self._nursery = nursery
        self._closed = False
        self.max_frame_bytes = max_frame_bytes
        self.counters = TransportCounters()
        self._gate = AdmissionGate()
        self._handlers: dict[str, RequestHandler] = {}
        self._bulk_handlers: dict[str, BulkHandler] = {}
        self._connected: set[NodeId] = set()

    @property
    def node_id(self) -> NodeId:
        return self._node_id

    def listen_addrs(self) -> list[str]:
        return [f"/memory/{self._node_id.hex()}"]

    def set_handler(self, protocol: str, handler: RequestHandler) -> None:
        self._handlers[check_protocol_id(protocol)] = handler

    def set_bulk_handler(self, protocol: str, handler: BulkHandler) -> None:
        self._bulk_handlers[check_protocol_id(protocol)] = handler

    def set_admission_check(
        self, check: AdmissionCheck | None, open_protocols: Iterable[str] | None = None
    ) -> None:
        self._gate.set_check(check, open_protocols)

    def connected_peers(self) -> list[NodeId]:
        return [p for p in self._connected if self._network.is_up(p)]

    async def connect(self, peer: NodeId, addrs: list[str], timeout: float = DEFAULT_CONNECT_TIMEOUT) -> None:
        self._ensure_open()
        if self._network._lookup(check_node_id(peer)) is None:
            raise PeerUnreachable(f"no node {peer.hex()[:12]} on this memory network")
        self._connected.add(peer)

    async def disconnect(self, peer: NodeId) -> None:
        self._connected.discard(peer)

    def _ensure_open(self) -> None:
        if self._closed:
            raise TransportClosed("this memory transport is closed")

    async def _target(self, peer: NodeId) -> MemoryTransport:
        """The live peer, or wait forever (until the caller's timeout) if it was killed."""
        target = self._network._lookup(check_node_id(peer))
        if target is not None:
            return target
        if self._network._was_killed(peer):
            await trio.sleep_forever()
        raise PeerUnreachable(f"no node {peer.hex()[:12]} on this memory network")

    async def request(
        self, peer: NodeId, protocol: str, payload: bytes, timeout: float = DEFAULT_REQUEST_TIMEOUT
    ) -> bytes:
        self._ensure_open()
        check_protocol_id(protocol)
        if len(payload) > self.max_frame_bytes:
            raise FrameTooLarge(len(payload), self.max_frame_bytes)
        self.counters.frames_out += 1
        self.counters.bytes_out += len(payload)
        with trio.move_on_after(timeout):
            target = await self._target(peer)
            reply = await target._serve(self._node_id, protocol, payload)
            self.counters.frames_in += 1
            self.counters.bytes_in += len(reply)
            return reply
        raise RequestTimeout(f"no reply from {peer.hex()[:12]} on {protocol} within {timeout}s")

    async def _serve(self, sender: NodeId, protocol: str, payload: bytes) -> bytes:
        """Run our handler for one request in *our* nursery and hand back its outcome."""
        self.counters.frames_in += 1
        self.counters.bytes_in += len(payload)
        if len(payload) > self.max_frame_bytes:
            self.counters.oversize += 1
            raise FrameRejected(f"frame of {len(payload)} bytes exceeds the peer's cap")
        if not self._gate.allows(sender, protocol):
            self.counters.refused += 1
            raise Refused(f"not admitted: {protocol} refused")
        handler = self._handlers.get(protocol)
        if handler is None:
            self.counters.errors += 1
            raise NoHandler(f"peer does not speak {protocol}")
        send, receive = trio.open_memory_channel[tuple[bool, bytes | str]](1)

        async def run_handler() -> None:
            async with send:
                outcome = await self._call_handler(handler, sender, protocol, payload)
                with contextlib.suppress(trio.BrokenResourceError):  # sender gave up
                    await send.send(outcome)

        self._nursery.start_soon(run_handler)
        async with receive:
            try:
                ok, value = await receive.receive()
            except trio.EndOfChannel:  # we were killed while handling: sender times out
                await trio.sleep_forever()
                raise  # unreachable; keeps type checkers content
        if not ok:
            raise RemoteError(str(value))
        assert isinstance(value, bytes)
        return value

    async def _call_handler(
        self, handler: RequestHandler, sender: NodeId, protocol: str, payload: bytes
    ) -> tuple[bool, bytes | str]:
        try:
            reply = await handler(sender, payload)
        except Exception as exc:
            self.counters.errors += 1
            log.warning("handler for %s failed", protocol, exc_info=True)
            return False, f"{type(exc).__name__}: {exc}"
        if len(reply) > self.max_frame_bytes:
            self.counters.errors += 1
            return False, f"reply of {len(reply)} bytes exceeds the frame cap"
        self.counters.frames_out += 1
        self.counters.bytes_out += len(reply)
        return True, reply

    async def send_bulk(
        self, peer: NodeId, protocol: str, source: BulkSource, timeout: float = 120.0
    ) -> bytes:
        self._ensure_open()
        check_protocol_id(protocol)
        with trio.move_on_after(timeout):
            target = await self._target(peer)
            send, receive = trio.open_memory_channel[bytes | _Trailer](BULK_WINDOW_CHUNKS)
            reply_send, reply_receive = trio.open_memory_channel[tuple[bool, bytes | str]](1)
            target._start_bulk(self._node_id, protocol, receive, reply_send)
            accumulator = Blake2bAccumulator()
            async with send:
                try:
                    async for chunk in iter_bulk_source(source):
                        accumulator.update(chunk)
                        await send.send(chunk)
                    await send.send(_Trailer(accumulator.size, accumulator.digest()))
                except trio.BrokenResourceError:
                    pass  # the receiver stopped early; its reply says why
            async with reply_receive:
                try:
                    ok, value = await reply_receive.receive()
                except trio.EndOfChannel:  # receiver killed mid-transfer
                    await trio.sleep_forever()
            if not ok:
                raise _bulk_error(str(value))
            assert isinstance(value, bytes)
            self.counters.bulk_out += 1
            self.counters.bulk_bytes_out += accumulator.size
            return value
        raise RequestTimeout(f"bulk transfer to {peer.hex()[:12]} not acknowledged in {timeout}s")

    def _start_bulk(
        self,
        sender: NodeId,
        protocol: str,
        receive: trio.MemoryReceiveChannel[bytes | _Trailer],
        reply: trio.MemorySendChannel[tuple[bool, bytes | str]],
    ) -> None:
        async def run() -> None:
            async with receive, reply:
                outcome = await self._call_bulk_handler(sender, protocol, receive)
                with contextlib.suppress(trio.BrokenResourceError):  # sender gave up
                    await reply.send(outcome)

        self._nursery.start_soon(run)

    async def _call_bulk_handler(
        self, sender: NodeId, protocol: str, receive: trio.MemoryReceiveChannel[bytes | _Trailer]
    ) -> tuple[bool, bytes | str]:
        if not self._gate.allows(sender, protocol):
            self.counters.refused += 1
            return False, "refused: not admitted"
        handler = self._bulk_handlers.get(protocol)
        if handler is None:
            self.counters.errors += 1
            return False, f"no handler: peer does not speak {protocol}"
        try:
            answer = await handler(sender, BulkIncoming(self._verified_chunks(receive)))
        except IntegrityError as exc:
            self.counters.integrity_failures += 1
            return False, f"integrity: {exc}"
        except Exception as exc:
            self.counters.errors += 1
            log.warning("bulk handler for %s failed", protocol, exc_info=True)
            return False, f"{type(exc).__name__}: {exc}"
        self.counters.bulk_in += 1
        return True, answer

    async def _verified_chunks(
        self, receive: trio.MemoryReceiveChannel[bytes | _Trailer]
    ) -> AsyncIterator[bytes]:
        accumulator = Blake2bAccumulator()
        async for item in receive:
            if isinstance(item, _Trailer):
                if item.size != accumulator.size or item.digest != accumulator.digest():
                    raise IntegrityError("bulk data does not match the sender's size and hash")
                self.counters.bulk_bytes_in += accumulator.size
                return
            accumulator.update(item)
            yield item
        raise IntegrityError("bulk transfer ended without its trailer")


def _bulk_error(message: str) -> TransportError:
    """Map a receiver's bulk refusal message to the matching error type."""
    if message.startswith("refused"):
        return Refused(message)
    if message.startswith("no handler"):
        return NoHandler(message)
    if message.startswith("integrity"):
        return IntegrityError(message)
    return RemoteError(message)
