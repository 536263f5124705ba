"""Many request/reply exchanges over one long-lived QUIC stream per peer ("/ileices/mux/1").

Why: with py-libp2p every new stream pays a multistream-select negotiation and
py-libp2p's per-stream bookkeeping; measured here that is several ms of CPU on each
side per request (`bench/request_cpu_bench.py`, docs/benchmarks.md), which made an
idle 5-node mesh burn 14-17 % of a core per node on SWIM pings and anti-entropy
hellos alone. A stream negotiated once and kept open costs only its frames.

Wire format: every message is one `mesh.framing` frame (4-byte length prefix) whose
payload starts with a 5-byte head, request id (u32) and kind (u8):

- request (requester -> responder): kind `KIND_REQUEST`, then the protocol id's length
  (u8), the protocol id (ASCII) and the payload. At most `MUX_MAX_REQUEST_BYTES` of
  payload; larger requests use a stream of their own (the transport's old path), so
  a 4 MiB upload never holds a ping up behind it on the shared stream.
- reply (responder -> requester): zero or more `KIND_MORE` chunks, then one final
  chunk whose kind is the reply's status byte (`STATUS_OK`, `STATUS_REFUSED`, ...).
  Chunks are at most `MUX_CHUNK_BYTES`, and the write lock is taken per chunk, so a
  1 MiB reply interleaves with the small replies around it instead of delaying them
  by the ~0.3 s QUIC here needs to move it.

Requester (`MuxClient`): one per peer, opened lazily by the transport. `request`
takes the next id, registers a pending slot, writes its frame under the write lock
and waits; one reader task reads frames and completes slots by id, so any number of
requests (up to `MUX_MAX_IN_FLIGHT`; the transport sends the rest on streams of their
own) are in flight at once. A requester cancelled by its timeout only drops its
slot: the write is shielded (a half-written frame would desynchronise the stream for
everyone) and a late reply for a dropped id is read and discarded. Anything that
breaks the stream (reset, EOF, a malformed frame, a write that fails or stalls past
`write_timeout`) fails every pending slot at once with `TransportError` and resets
the stream; the transport then opens a fresh one for the next request.

Responder (`MuxServer`): one per inbound mux stream, a loop that reads frames and
never waits on anything else. Each request is screened at once (no handler,
not admitted, too large: answered without running anything; the admission gate is
asked per request, because a member can be revoked while its stream lives) and then
runs in its own task, so a slow handler never delays a ping on the same stream. At
most `MUX_MAX_HANDLERS` handlers run per stream; requests beyond that get
`STATUS_BUSY` (counted) instead of queueing. A frame whose length exceeds the cap but
not `MUX_MAX_REQUEST_BYTES` is skipped and answered `STATUS_OVERSIZE` (the stream
stays in sync); anything longer, or malformed, is a protocol violation and resets the
stream.

Cost per request: one frame each way, one pending slot and one responder task; no
stream, no negotiation, no close handshake. Measured: ~2 ms of CPU per side per
round trip against ~8 ms with a stream per request (docs/benchmarks.md); what is left
is py-libp2p's QUIC and trio's scheduling, not this module.

Slow readers (pitfall 5: py-libp2p drops data silently past a stream's receive
buffer): both readers wait on nothing but their stream, so bytes do not pile up
unread; a requester has at most `MUX_MAX_IN_FLIGHT` x `MUX_MAX_REQUEST_BYTES` (4 MiB)
of requests outstanding, about the responder's default buffer (one whole frame), and
replies are acknowledged by nothing but being read, which the reader does at once.
An idle mux stream is not killed by QUIC's stream read timeout because the transport
sets it out of reach (pitfall 4); a stream that dies anyway is reopened on demand.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Protocol

import trio

from mesh.framing import HEADER, HEADER_SIZE, read_exact, read_frame
from mesh.transport import TransportError

log = logging.getLogger(__name__)

MUX_PROTOCOL = "/ileices/mux/1"
MUX_MAX_REQUEST_BYTES = 64 * 1024
"""Largest request payload sent over the shared stream (~20 ms of QUIC here)."""
MUX_CHUNK_BYTES = 64 * 1024
"""Largest reply chunk; a reply is cut into chunks of this size."""
MUX_MAX_IN_FLIGHT = 64
"""Requests in flight per stream at the requester; more go on streams of their own."""
MUX_MAX_HANDLERS = 128
"""Handlers running per stream at the responder; more are answered `STATUS_BUSY`.

Twice the requester's in-flight bound: requests that timed out at the requester may
still be running here, and an honest requester should not meet "busy" because of them.
"""
MUX_READ_BYTES = 64 * 1024
"""How much a reader asks its stream for at a time (fewer, larger stream reads)."""

# Reply status bytes: the final chunk's kind. The first five are the transport's
# original statuses (one-stream-per-request replies carry the same values).
STATUS_OK = 0
STATUS_REFUSED = 1
STATUS_OVERSIZE = 2
STATUS_ERROR = 3
STATUS_INTEGRITY = 4
STATUS_NO_HANDLER = 5
STATUS_BUSY = 6
MAX_STATUS = STATUS_BUSY

KIND_REQUEST = 0x00
KIND_MORE = 0x80

_HEAD = struct.Struct(">IB")
HEAD_SIZE = _HEAD.size
_ID_SPACE = 1 << 32
REQUEST_OVERHEAD = HEAD_SIZE + 1 + 255
"""Bytes of a request frame besides the payload, at most (head, length, protocol id)."""


class MuxProtocolError(Exception):
    """The peer broke the mux wire format; the stream cannot be trusted any more."""


class MuxStream(Protocol):
    """What the mux needs of a stream (a libp2p `INetStream` is one)."""

    async def read(self, n: int | None = None) -> bytes: ...

    async def write(self, data: bytes) -> None: ...

    async def reset(self) -> None: ...


class BufferedReader:
    """`framing.ByteReader` over a stream, asking it for `MUX_READ_BYTES` at a time.

    A small frame then costs one stream read, not two (header, body); py-libp2p's
    `read` takes two trio locks per call. b"" at end of stream; errors pass through.
    """

    def __init__(self, stream: MuxStream, eof_errors: tuple[type[BaseException], ...]) -> None:
        self._stream = stream
        self._eof_errors = eof_errors
        self._buffer = b""
        self._offset = 0

    async def read(self, max_bytes: int) -> bytes:
        available = len(self._buffer) - self._offset
        if available == 0:
            try:
                self._buffer = await self._stream.read(max(max_bytes, MUX_READ_BYTES))
            except self._eof_errors:
                self._buffer = b""
            self._offset = 0
            available = len(self._buffer)
            if available == 0:
                return b""
        if self._offset == 0 and available <= max_bytes:
            data, self._buffer = self._buffer, b""
            return data
        end = self._offset + min(max_bytes, available)
        data = self._buffer[self._offset : end]
        self._offset = end
        return data


def encode_request(request_id: int, protocol: str, payload: bytes) -> bytes:
    """One request frame (length prefix included)."""
    name = protocol.encode("ascii")
    if len(name) > 255:
        raise ValueError("protocol id longer than 255 bytes")
    body_size = HEAD_SIZE + 1 + len(name) + len(payload)
    return b"".join(
        (HEADER.pack(body_size), _HEAD.pack(request_id, KIND_REQUEST), bytes([len(name)]), name, payload)
    )


def decode_request(body: bytes) -> tuple[int, str, bytes]:
    """(request id, protocol id, payload) of a request frame's payload."""
    if len(body) < HEAD_SIZE + 1:
        raise MuxProtocolError("request frame too short")
    request_id, kind = _HEAD.unpack_from(body)
    if kind != KIND_REQUEST:
        raise MuxProtocolError(f"unexpected frame kind {kind} from a requester")
    name_end = HEAD_SIZE + 1 + body[HEAD_SIZE]
    if len(body) < name_end:
        raise MuxProtocolError("request frame shorter than its protocol id")
    try:
        protocol = body[HEAD_SIZE + 1 : name_end].decode("ascii")
    except UnicodeDecodeError as exc:
        raise MuxProtocolError("protocol id is not ASCII") from exc
    return request_id, protocol, body[name_end:]


def encode_reply(request_id: int, status: int, body: bytes) -> list[bytes]:
    """The frames of one reply: `KIND_MORE` chunks, then the final chunk with the status."""
    view = memoryview(body)
    frames = []
    start = 0
    while len(view) - start > MUX_CHUNK_BYTES:
        chunk = view[start : start + MUX_CHUNK_BYTES]
        head = _HEAD.pack(request_id, KIND_MORE)
        frames.append(b"".join((HEADER.pack(HEAD_SIZE + len(chunk)), head, chunk)))
        start += MUX_CHUNK_BYTES
    last = view[start:]
    frames.append(b"".join((HEADER.pack(HEAD_SIZE + len(last)), _HEAD.pack(request_id, status), last)))
    return frames


async def _reset(stream: MuxStream) -> None:
    with trio.CancelScope(shield=True), trio.move_on_after(2):
        try:
            await stream.reset()
        except Exception:
            log.debug("mux stream reset failed", exc_info=True)


async def _write_shielded(stream: MuxStream, frame: bytes, timeout: float) -> bool:
    """Write a whole frame, immune to the caller's cancellation; False if it stalled.

    A frame cut off halfway would leave the shared stream out of sync for every other
    request on it, so a requester's timeout must not interrupt it; `timeout` bounds a
    peer that stops reading (then the stream is broken anyway).
    """
    with trio.CancelScope(shield=True), trio.move_on_after(timeout):
        await stream.write(frame)
        return True
    return False


# ---------------------------------------------------------------------- requester


@dataclass
class _Pending:
    done: trio.Event = field(default_factory=trio.Event)
    parts: list[bytes] = field(default_factory=list)
    size: int = 0
    reply: bytes = b""
    error: TransportError | None = None


class MuxClient:
    """The requester's end of one mux stream; see the module docstring."""

    def __init__(
        self,
        stream: MuxStream,
        *,
        max_reply_bytes: int,
        write_timeout: float,
        eof_errors: tuple[type[BaseException], ...],
        label: str,
    ) -> None:
        self.stream = stream
        self._max_reply_bytes = max_reply_bytes
        self._write_timeout = write_timeout
        self._eof_errors = eof_errors
        self._label = label
        self._pending: dict[int, _Pending] = {}
        self._next_id = 0
        self._write_lock = trio.Lock()
        self.broken: TransportError | None = None
        self.finished = trio.Event()
        """Set when the reader task has ended (the stream is reset by then)."""

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    async def request(self, protocol: str, payload: bytes) -> bytes:
        """Send one request, return the raw reply (status byte + body).

        Raises `TransportError` if the stream is or becomes broken; cancellation (the
        caller's timeout) only abandons this request.
        """
        if self.broken is not None:
            raise self.broken
        request_id = self._take_id()
        frame = encode_request(request_id, protocol, payload)
        pending = _Pending()
        self._pending[request_id] = pending
        try:
            async with self._write_lock:
                if self.broken is not None:
                    raise self.broken
                try:
                    written = await _write_shielded(self.stream, frame, self._write_timeout)
                except Exception as exc:  # libp2p/aioquic raise many types for a dead stream
                    await self.abort(f"write failed: {exc}")
                    raise TransportError(f"mux stream to {self._label} broke: write failed: {exc}") from exc
                if not written:
                    await self.abort("a write stalled")
                    raise TransportError(f"mux stream to {self._label} broke: a write stalled")
            await pending.done.wait()
        finally:
            self._pending.pop(request_id, None)
        if pending.error is not None:
            raise pending.error
        return pending.reply

    def _take_id(self) -> int:
        request_id = self._next_id
        while request_id in self._pending:  # only after 2**32 requests with one stuck
            request_id = (request_id + 1) % _ID_SPACE
        self._next_id = (request_id + 1) % _ID_SPACE
        return request_id

    async def run(self) -> None:
        """The reader task: complete pending requests by id until the stream breaks."""
        reader = BufferedReader(self.stream, self._eof_errors)
        reason = "ended"
        try:
            while True:
                body = await read_frame(reader, HEAD_SIZE + MUX_CHUNK_BYTES)
                if len(body) < HEAD_SIZE:
                    raise MuxProtocolError("reply frame too short")
                request_id, kind = _HEAD.unpack_from(body)
                if kind != KIND_MORE and kind > MAX_STATUS:
                    raise MuxProtocolError(f"unknown reply kind {kind}")
                pending = self._pending.get(request_id)
                if pending is None or pending.done.is_set():
                    continue  # its requester gave up (timeout): read and dropped
                chunk = body[HEAD_SIZE:]
                pending.size += len(chunk)
                if pending.size > self._max_reply_bytes:
                    cap = self._max_reply_bytes
                    pending.error = TransportError(f"reply from {self._label} exceeds {cap} bytes")
                    pending.done.set()
                    del self._pending[request_id]  # later chunks of it are dropped
                    continue
                pending.parts.append(chunk)
                if kind == KIND_MORE:
                    continue
                pending.parts.insert(0, bytes([kind]))
                pending.reply = b"".join(pending.parts)
                pending.parts = []
                pending.done.set()
        except trio.Cancelled:
            reason = "transport closed"
            raise
        except Exception as exc:  # reset, EOF, connection lost, malformed frame
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        finally:
            self._break(reason)
            await _reset(self.stream)
            self.finished.set()

    def _break(self, reason: str) -> None:
        if self.broken is None:
            self.broken = TransportError(f"mux stream to {self._label} broke: {reason}")
        for pending in self._pending.values():
            if not pending.done.is_set():
                pending.error = self.broken
                pending.done.set()

    async def abort(self, reason: str) -> None:
        """Break the stream now: fail what is pending and reset it (the reader then ends)."""
        self._break(reason)
        await _reset(self.stream)


# ---------------------------------------------------------------------- responder


class MuxService(Protocol):
    """What a `MuxServer` asks of the transport, for one peer's stream."""

    def screen(self, protocol: str) -> tuple[int, bytes] | None:
        """An immediate answer (no handler, not admitted), or None to serve it."""
        ...

    def serve(self, protocol: str, payload: bytes) -> Awaitable[tuple[int, bytes]]:
        """Run the handler: (status, body) to send back."""
        ...

    def note(self, event: str, size: int = 0) -> None:
        """Count an event: "oversize", "busy", "violation", "replied" (status OK, body size)."""
        ...


class MuxServer:
    """The responder's end of one mux stream; see the module docstring."""

    def __init__(
        self,
        stream: MuxStream,
        service: MuxService,
        nursery: trio.Nursery,
        *,
        max_request_bytes: int,
        frame_read_timeout: float,
        write_timeout: float,
        eof_errors: tuple[type[BaseException], ...],
        max_handlers: int | None = None,
    ) -> None:
        self.stream = stream
        self._service = service
        self._nursery = nursery
        self._max_request_bytes = max_request_bytes
        self._frame_read_timeout = frame_read_timeout
        self._write_timeout = write_timeout
        self._eof_errors = eof_errors
        self._max_handlers = MUX_MAX_HANDLERS if max_handlers is None else max_handlers
        self._write_lock = trio.Lock()
        self.active = 0
        self.broken = False

    async def run(self) -> None:
        """Read requests until the stream ends or breaks; handlers run in `nursery`."""
        reader = BufferedReader(self.stream, self._eof_errors)
        cap = REQUEST_OVERHEAD + self._max_request_bytes
        skip_cap = REQUEST_OVERHEAD + max(self._max_request_bytes, MUX_MAX_REQUEST_BYTES)
        try:
            while not self.broken:
                header = await reader.read(HEADER_SIZE)
                if not header:
                    return  # the requester's side ended between frames
                if len(header) < HEADER_SIZE:
                    header += await read_exact(reader, HEADER_SIZE - len(header))
                (length,) = HEADER.unpack(header)
                if length > skip_cap:
                    raise MuxProtocolError(f"frame of {length} bytes on a mux stream")
                with trio.fail_after(self._frame_read_timeout):
                    if length > cap:
                        await self._skip_oversize(reader, length)
                        continue
                    body = await read_exact(reader, length)
                self._dispatch(body)
        except MuxProtocolError as exc:
            self._service.note("violation")
            log.debug("mux protocol violation: %s", exc)
        except Exception as exc:  # reset, connection lost, truncated frame, read timeout
            log.debug("mux stream ended: %s", exc)
        finally:
            self.broken = True
            await _reset(self.stream)

    async def _skip_oversize(self, reader: BufferedReader, length: int) -> None:
        head = await read_exact(reader, HEAD_SIZE)
        remaining = length - HEAD_SIZE
        while remaining > 0:
            remaining -= len(await read_exact(reader, min(remaining, MUX_READ_BYTES)))
        request_id, _ = _HEAD.unpack(head)
        self._service.note("oversize")
        message = f"request frame of {length} bytes exceeds the {self._max_request_bytes}-byte cap"
        self._nursery.start_soon(self._reply, request_id, STATUS_OVERSIZE, message.encode())

    def _dispatch(self, body: bytes) -> None:
        request_id, protocol, payload = decode_request(body)
        answer = self._service.screen(protocol)
        if answer is not None:
            self._nursery.start_soon(self._reply, request_id, *answer)
            return
        if len(payload) > self._max_request_bytes:
            self._service.note("oversize")
            message = f"frame of {len(payload)} bytes exceeds the {self._max_request_bytes}-byte cap"
            self._nursery.start_soon(self._reply, request_id, STATUS_OVERSIZE, message.encode())
            return
        if self.active >= self._max_handlers:
            self._service.note("busy")
            self._nursery.start_soon(self._reply, request_id, STATUS_BUSY, b"too many requests in progress")
            return
        self.active += 1
        self._nursery.start_soon(self._handle, request_id, protocol, payload)

    async def _handle(self, request_id: int, protocol: str, payload: bytes) -> None:
        try:
            status, body = await self._service.serve(protocol, payload)
        except Exception as exc:  # the service answers errors itself; this is a last guard
            log.warning("mux service failed on %s", protocol, exc_info=True)
            status, body = STATUS_ERROR, f"{type(exc).__name__}: {exc}".encode()
        finally:
            self.active -= 1
        await self._reply(request_id, status, body)

    async def _reply(self, request_id: int, status: int, body: bytes) -> None:
        for frame in encode_reply(request_id, status, body):
            async with self._write_lock:
                if self.broken:
                    return  # the requester is gone; the reply has nowhere to go
                try:
                    written = await _write_shielded(self.stream, frame, self._write_timeout)
                except Exception as exc:
                    log.debug("mux reply not delivered: %s", exc)
                    written = False
                if not written:
                    self.broken = True
                    await _reset(self.stream)
                    return
        if status == STATUS_OK:
            self._service.note("replied", len(body))

