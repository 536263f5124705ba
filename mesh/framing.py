"""Length-prefixed, size-capped frames over any byte stream, with our own read loop.

py-libp2p's `read_exactly` and msgio readers give up after 101 short reads, so a
200 KB message over QUIC fails there (notes, pitfall 9). This module loops on
`read(n)` itself until a frame is complete, and refuses a frame whose announced
length exceeds the cap *before* reading its body, so an oversized or hostile frame
costs four bytes of reading, not megabytes of memory.
"""

from __future__ import annotations

import struct
from typing import Protocol

from protocols.common.wire import MAX_MESSAGE_BYTES

HEADER = struct.Struct(">I")
HEADER_SIZE = HEADER.size
MAX_FRAME_BYTES = MAX_MESSAGE_BYTES
"""Default payload cap: the wire format's own message cap (4 MiB)."""

MAX_READ_CHUNK = 256 * 1024
"""Largest single `read(n)` request; keeps one read from asking the stream for 4 MiB."""


class FramingError(Exception):
    """The byte stream did not carry a well-formed frame."""


class FrameTooLarge(FramingError):
    """A frame's length exceeds the cap (on send: nothing was written)."""

    def __init__(self, length: int, cap: int) -> None:
        super().__init__(f"frame of {length} bytes exceeds the {cap}-byte cap")
        self.length = length
        self.cap = cap


class IncompleteFrame(FramingError):
    """The stream ended in the middle of a frame (the peer closed or reset early)."""


class ByteReader(Protocol):
    """Anything with `read(n)` returning 1..n bytes, or b"" at end of stream."""

    async def read(self, max_bytes: int) -> bytes: ...


def encode_frame(payload: bytes, max_bytes: int = MAX_FRAME_BYTES) -> bytes:
    """Prefix `payload` with its length; refuse it if it exceeds `max_bytes`."""
    if len(payload) > max_bytes:
        raise FrameTooLarge(len(payload), max_bytes)
    return HEADER.pack(len(payload)) + payload


async def read_exact(reader: ByteReader, size: int) -> bytes:
    """Read exactly `size` bytes, however many short reads that takes."""
    if size == 0:
        return b""
    parts: list[bytes] = []
    remaining = size
    while remaining > 0:
        chunk = await reader.read(min(remaining, MAX_READ_CHUNK))
        if not chunk:
            got = size - remaining
            raise IncompleteFrame(f"stream ended after {got} of {size} bytes")
        if len(chunk) > remaining:
            raise FramingError(f"reader returned {len(chunk)} bytes when asked for {remaining}")
        parts.append(chunk)
        remaining -= len(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


async def read_frame_length(reader: ByteReader, max_bytes: int = MAX_FRAME_BYTES) -> int:
    """Read a frame header and return the body length, refusing oversize frames."""
    header = await read_exact(reader, HEADER_SIZE)
    (length,) = HEADER.unpack(header)
    if length > max_bytes:
        raise FrameTooLarge(length, max_bytes)
    return int(length)


async def read_frame(reader: ByteReader, max_bytes: int = MAX_FRAME_BYTES) -> bytes:
    """Read one whole frame's payload (b"" is a valid, empty frame)."""
    length = await read_frame_length(reader, max_bytes)
    return await read_exact(reader, length)
