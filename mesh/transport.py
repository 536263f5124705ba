"""The transport contract every node component talks to: bytes in, bytes out, per peer.

Components (gossip, membership, join) never see libp2p or in-memory details: they
send a request and get the peer's reply, or a `TransportError` that says why not.
A reply means the peer received *and processed* the request, so nothing is silently
lost: the QUIC pitfalls of early close and slow readers (notes 5, 6) surface as
errors at the sender instead of vanishing data. Payloads are opaque bytes; record
types and wire schemas live in `protocols/`, not here.

This module also holds the pieces both transports share so they behave alike: the
error types, the counters shown by `status`, the admission gate, and protocol ids.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Protocol, runtime_checkable

from protocols.common.hashing import DIGEST_SIZE
from protocols.common.identity import KEY_SIZE, NodeId

PROTOCOL_ID_PATTERN = re.compile(r"^/ileices/[a-z0-9][a-z0-9_-]*/[0-9]+(\.[0-9]+)*$")
JOIN_PROTOCOL = "/ileices/join/1"
"""The only protocol a peer that is not (yet) admitted may speak, by default."""

DEFAULT_REQUEST_TIMEOUT = 10.0
DEFAULT_CONNECT_TIMEOUT = 5.0
BULK_CHUNK_BYTES = 1024 * 1024
"""Chunk size the bulk path cuts `bytes` into; also the largest chunk it accepts."""


class TransportError(Exception):
    """A request or transfer did not complete; the peer may not have processed it."""


class RequestTimeout(TransportError):
    """No reply within the timeout: the peer is dead, unreachable, or too slow."""


class PeerUnreachable(TransportError):
    """No connection to the peer could be made (no address, dial refused, no route)."""


class Refused(TransportError):
    """The peer refused the request: we are not admitted and the protocol is not open."""


class NoHandler(TransportError):
    """The peer does not speak this protocol."""


class RemoteError(TransportError):
    """The peer's handler failed on our request (its error message is attached)."""


class IntegrityError(TransportError):
    """Bulk data arrived, but its size or hash is not what the sender declared."""


class FrameRejected(TransportError):
    """The peer refused our frame as larger than its cap (it reset the exchange)."""


class TransportClosed(TransportError):
    """This transport is closed (or its node was killed): nothing can be sent."""


def check_protocol_id(protocol: str) -> str:
    """Return `protocol` if it looks like `/ileices/<name>/<version>`, else raise."""
    if not PROTOCOL_ID_PATTERN.match(protocol):
        raise ValueError(f"protocol id {protocol!r} is not of the form /ileices/<name>/<version>")
    return protocol


def check_node_id(peer: NodeId) -> NodeId:
    """Return `peer` if it is a 32-byte Ed25519 public key, else raise."""
    if not isinstance(peer, bytes) or len(peer) != KEY_SIZE:
        raise ValueError(f"a node id is {KEY_SIZE} bytes")
    return peer


@dataclass
class TransportCounters:
    """What `status` shows about a transport; all monotonically increasing."""

    frames_in: int = 0
    frames_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    refused: int = 0
    oversize: int = 0
    errors: int = 0
    bulk_in: int = 0
    bulk_out: int = 0
    bulk_bytes_in: int = 0
    bulk_bytes_out: int = 0
    integrity_failures: int = 0

    def snapshot(self) -> dict[str, int]:
        return asdict(self)


AdmissionCheck = Callable[[NodeId], bool]


class AdmissionGate:
    """Decides, per inbound stream, whether a peer may speak a protocol.

    Until a check is installed every peer is admitted (a fresh node has no admission
    state yet); once installed, peers that fail it may speak only the open protocols.
    A check that raises is treated as "not admitted": the gate must never crash the
    stream handler nor let a peer in because of a bug.
    """

    def __init__(self) -> None:
        self._check: AdmissionCheck | None = None
        self.open_protocols: frozenset[str] = frozenset({JOIN_PROTOCOL})

    def set_check(self, check: AdmissionCheck | None, open_protocols: Iterable[str] | None) -> None:
        self._check = check
        if open_protocols is not None:
            self.open_protocols = frozenset(check_protocol_id(p) for p in open_protocols)

    def allows(self, peer: NodeId, protocol: str) -> bool:
        if self._check is None or protocol in self.open_protocols:
            return True
        try:
            return bool(self._check(peer))
        except Exception:  # a buggy check must refuse, never crash the receiver
            return False


RequestHandler = Callable[[NodeId, bytes], Awaitable[bytes]]
"""Serves one request: gets the peer and payload, returns the reply payload."""


class BulkIncoming:
    """An inbound bulk transfer: iterate its chunks; the hash is checked at the end.

    The transport feeds chunks as they arrive and closes with the sender's declared
    size and hash; iteration raises `IntegrityError` after the last chunk if they do
    not match, so a handler that writes chunks to disk and commits only after the
    loop finishes can never commit corrupt data.
    """

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self.received = 0

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks

    async def read_all(self, max_bytes: int) -> bytes:
        """Collect the whole transfer in memory, refusing more than `max_bytes`."""
        parts: list[bytes] = []
        total = 0
        async for chunk in self._chunks:
            total += len(chunk)
            if total > max_bytes:
                raise IntegrityError(f"bulk transfer exceeds {max_bytes} bytes")
            parts.append(chunk)
        return b"".join(parts)


BulkHandler = Callable[[NodeId, BulkIncoming], Awaitable[bytes]]
"""Consumes one bulk transfer and returns a short reply (the acknowledgement)."""

BulkSource = bytes | Iterable[bytes] | AsyncIterable[bytes]


async def iter_bulk_source(source: BulkSource) -> AsyncIterator[bytes]:
    """Yield a bulk source as chunks of at most `BULK_CHUNK_BYTES`, skipping empty ones."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        view = memoryview(source)
        for start in range(0, len(view), BULK_CHUNK_BYTES):
            yield bytes(view[start : start + BULK_CHUNK_BYTES])
        return
    if isinstance(source, AsyncIterable):
        async for piece in source:
            for start in range(0, len(piece), BULK_CHUNK_BYTES):
                yield bytes(piece[start : start + BULK_CHUNK_BYTES])
        return
    for piece in source:
        for start in range(0, len(piece), BULK_CHUNK_BYTES):
            yield bytes(piece[start : start + BULK_CHUNK_BYTES])


class Blake2bAccumulator:
    """Incremental BLAKE2b-256 (same hash as `protocols.common.hashing.digest`) with a byte count."""

    def __init__(self) -> None:
        self._hash = hashlib.blake2b(digest_size=DIGEST_SIZE)
        self.size = 0

    def update(self, chunk: bytes) -> None:
        self._hash.update(chunk)
        self.size += len(chunk)

    def digest(self) -> bytes:
        return self._hash.digest()


@runtime_checkable
class Transport(Protocol):
    """What a node component may ask of a transport (libp2p or in-memory)."""

    counters: TransportCounters

    @property
    def node_id(self) -> NodeId:
        """This node's 32-byte Ed25519 public key."""
        ...

    def listen_addrs(self) -> list[str]:
        """Addresses (multiaddr strings) other nodes can `connect` to."""
        ...

    async def request(
        self, peer: NodeId, protocol: str, payload: bytes, timeout: float = DEFAULT_REQUEST_TIMEOUT
    ) -> bytes:
        """Send `payload`, return the peer's reply; raise a `TransportError` otherwise."""
        ...

    def set_handler(self, protocol: str, handler: RequestHandler) -> None:
        """Serve `protocol` with `handler` (replacing any previous one)."""
        ...

    def set_bulk_handler(self, protocol: str, handler: BulkHandler) -> None:
        """Serve bulk transfers on `protocol` with `handler`."""
        ...

    async def send_bulk(
        self, peer: NodeId, protocol: str, source: BulkSource, timeout: float = 120.0
    ) -> bytes:
        """Stream `source` to the peer with a size + hash check; return its reply."""
        ...

    async def connect(self, peer: NodeId, addrs: list[str], timeout: float = DEFAULT_CONNECT_TIMEOUT) -> None:
        """Remember `addrs` for `peer` and connect now; raise `PeerUnreachable` if not."""
        ...

    async def disconnect(self, peer: NodeId) -> None:
        """Close connections to `peer` (it may reconnect; use the gate to keep it out)."""
        ...

    def set_admission_check(
        self, check: AdmissionCheck | None, open_protocols: Iterable[str] | None = None
    ) -> None:
        """Install the admission rule and the protocols open to everyone."""
        ...

    def connected_peers(self) -> list[NodeId]:
        """Peers with a live connection right now."""
        ...
