"""The real transport: py-libp2p hosts keyed by the node's Ed25519 identity.

Mesh protocols run over QUIC, as the design card says; bulk transfers run over
TCP (noise + yamux) on a second host with the same key, because QUIC here moves
~3 MB/s and TCP ~110 MB/s (notes, "Figures").

Requests (payloads up to `MUX_MAX_REQUEST_BYTES`) travel over one long-lived
"/ileices/mux/1" stream per peer, opened on first use and shared by every request to
that peer (`mesh.mux_stream` has the wire format and both ends). A new stream costs a
multistream-select negotiation and py-libp2p's per-stream bookkeeping: ~8 ms of CPU
per side per request here, against ~2 ms on the shared stream (docs/benchmarks.md,
"Per-request CPU"). The admission gate is asked per request, not per stream.

The old path stays for larger requests, for more than `MUX_MAX_IN_FLIGHT` at once,
for peers that do not speak the mux (remembered for `mux_retry_after`) and with
`long_lived_streams=False` (or `ILEICES_MUX=0`): one short-lived stream per exchange,
request frame -> reply frame (a status byte + payload) -> the requester closes, and
only then does the responder close. So nobody closes before the other side has what
it needs (pitfall 6), and a frame never exceeds the receive buffer, which is sized to
hold one whole frame (pitfall 5). QUIC's stream read timeout is set out of reach
(pitfall 4), because a mux stream may idle for as long as its peers have nothing to
say; our own deadlines bound every read that waits for something. The other
workarounds from `docs/libp2p-notes.md` / the shared notes are marked where they are
applied; what the mux taught us is in `docs/libp2p-streams.md`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import multiaddr
import trio
from libp2p import new_host
from libp2p.abc import IHost, INetStream
from libp2p.crypto.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from libp2p.crypto.keys import KeyPair, KeyType
from libp2p.custom_types import TProtocol
from libp2p.host.exceptions import StreamFailure
from libp2p.network.config import ConnectionConfig
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.protocol_muxer.exceptions import MultiselectClientError
from libp2p.security.noise.io import MAX_PLAINTEXT_LENGTH
from libp2p.stream_muxer.yamux import yamux as _yamux
from libp2p.transport.quic.config import QUICTransportConfig

from mesh.framing import (
    HEADER,
    HEADER_SIZE,
    MAX_FRAME_BYTES,
    FrameTooLarge,
    FramingError,
    encode_frame,
    read_frame,
)
from mesh.mux_stream import (
    MUX_MAX_IN_FLIGHT,
    MUX_MAX_REQUEST_BYTES,
    MUX_PROTOCOL,
    STATUS_BUSY,
    STATUS_ERROR,
    STATUS_INTEGRITY,
    STATUS_NO_HANDLER,
    STATUS_OK,
    STATUS_OVERSIZE,
    STATUS_REFUSED,
    MuxClient,
    MuxServer,
)
from mesh.transport import (
    BULK_CHUNK_BYTES,
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
from protocols.common.hashing import DIGEST_SIZE
from protocols.common.identity import NodeId, NodeIdentity

log = logging.getLogger(__name__)

# py-libp2p 0.8.1 cuts bulk data into 64 KiB yamux frames (64 KiB with the 12-byte header),
# one byte-range over a Noise message's 65519-byte plaintext cap: every frame went out as
# two Noise messages, the second of 17 bytes (two encryptions, two socket writes, two reads
# and decryptions). Frames that fit one Noise message carry bulk transfers 12-18 % faster
# (docs/libp2p-notes.md); receivers accept any frame size up to 64 KiB, so peers are unaffected.
_yamux.MAX_MESSAGE_SIZE = MAX_PLAINTEXT_LENGTH

__all__ = [
    "BULK_CHUNK",
    "BULK_END",
    "STATUS_BUSY",
    "STATUS_ERROR",
    "STATUS_INTEGRITY",
    "STATUS_NO_HANDLER",
    "STATUS_OK",
    "STATUS_OVERSIZE",
    "STATUS_REFUSED",
    "Libp2pTransport",
    "Libp2pTransportConfig",
    "keypair_from_identity",
    "node_id_from_peer_id",
    "peer_id_from_node_id",
]

# Bulk stream frames: kind byte + body.
BULK_CHUNK = 1
BULK_END = 2
_BULK_CHUNK_KIND = bytes([BULK_CHUNK])
_BULK_END = struct.Struct(f">{DIGEST_SIZE}sQ")

DEFAULT_QUIC_LISTEN = "/ip4/127.0.0.1/udp/0/quic-v1"
_NEVER = 365 * 24 * 3600.0
"""QUIC's per-read timeout (pitfall 4): out of reach, because a long-lived mux stream may
idle for as long as its peer pair has nothing to say; our own deadlines bound every read."""
_EOF = (StreamEOF,)
_MIN_RECEIVE_BUFFER = 1024 * 1024
"""libp2p requires the buffer to be at least its 512 KiB high watermark."""


def _connection_config() -> ConnectionConfig:
    """One connection per peer (pitfall 1) and an auto-connector with nothing to do
    (pitfall 3: it runs one round at start-up, before we can stop it)."""
    return ConnectionConfig(max_connections_per_peer=1, min_connections=0, low_watermark=0)


@dataclass(frozen=True)
class Libp2pTransportConfig:
    """Limits and timeouts; defaults fit a loopback or LAN mesh."""

    max_frame_bytes: int = MAX_FRAME_BYTES
    frame_read_timeout: float = 30.0
    """How long a responder waits for a whole request frame (4 MiB at ~3 MB/s: ~1.5 s)."""
    close_wait: float = 5.0
    """How long a responder waits for the requester's close (its acknowledgement)."""
    bulk_idle_timeout: float = 30.0
    """How long a bulk receiver waits for the next chunk."""
    write_timeout: float = 60.0
    """Bound on one shielded TCP write; exceeding it drops the connection (pitfall 8)."""
    quic_max_datagram_size: int = 1452
    """+15-20 % QUIC throughput over aioquic's 1200 on loopback/Ethernet (notes)."""
    quic_receive_buffer_bytes: int | None = None
    """Per-stream QUIC receive buffer; None = one whole frame plus slack (pitfall 5)."""
    long_lived_streams: bool = True
    """Carry requests over one long-lived mux stream per peer (`mesh.mux_stream`) and
    serve the mux protocol; False behaves as a peer from before it (one stream per
    request), which the benchmark and the fallback test use."""
    mux_open_timeout: float = 10.0
    """How long opening a peer's mux stream may take (a requester waits within its own timeout)."""
    mux_retry_after: float = 300.0
    """How long to use one stream per request with a peer that does not speak the mux."""


def keypair_from_identity(identity: NodeIdentity) -> KeyPair:
    """The libp2p key pair of a node: the very same Ed25519 key, not a derived one."""
    private = Ed25519PrivateKey.new(identity.seed)
    return KeyPair(private, private.get_public_key())


def peer_id_from_node_id(node_id: NodeId) -> ID:
    """The libp2p peer id of a node id (an identity multihash of the public key)."""
    return ID.from_pubkey(Ed25519PublicKey.from_bytes(check_node_id(node_id)))


def node_id_from_peer_id(peer_id: ID) -> NodeId:
    """The node id inside a libp2p peer id; `ValueError` if it is not an Ed25519 id."""
    try:
        public_key = peer_id.extract_public_key()
    except Exception as exc:  # malformed multihash / protobuf from a remote peer
        raise ValueError(f"cannot read a public key from peer id {peer_id}") from exc
    if public_key is None or public_key.get_type() != KeyType.Ed25519:
        raise ValueError(f"peer id {peer_id} is not an Ed25519 identity")
    return check_node_id(public_key.to_bytes())


class _Reader:
    """Adapts a libp2p stream to `framing.ByteReader`: b"" at EOF, errors pass through."""

    def __init__(self, stream: INetStream) -> None:
        self._stream = stream

    async def read(self, max_bytes: int) -> bytes:
        try:
            return await self._stream.read(max_bytes)
        except StreamEOF:
            return b""


def _not_supported(exc: StreamFailure) -> bool:
    """Whether a failed `new_stream` means "the peer does not speak this protocol"."""
    return isinstance(exc.__cause__, MultiselectClientError) and "not supported" in str(exc.__cause__)


def _has_live_connection(host: IHost, peer_id: ID) -> bool:
    """Whether the host holds an open connection to the peer (a closed one can linger)."""
    connections = host.get_network().connections.get(peer_id)
    return bool(connections) and any(
        not c.is_closed and not c.muxed_conn.is_closed for c in connections  # type: ignore[union-attr]
    )


def _is_multiaddr_of(addr: str, kind: str) -> bool:
    return f"/{kind}" in addr


class Libp2pTransport:
    """A node's libp2p endpoint; see `mesh.transport.Transport` for the contract."""

    def __init__(
        self,
        identity: NodeIdentity,
        mesh_host: IHost,
        bulk_host: IHost,
        config: Libp2pTransportConfig,
    ) -> None:
        self._identity = identity
        self._mesh_host = mesh_host
        self._bulk_host = bulk_host
        self._config = config
        self._closed = False
        self.counters = TransportCounters()
        self._gate = AdmissionGate()
        self._handlers: dict[str, RequestHandler] = {}
        self._bulk_handlers: dict[str, BulkHandler] = {}
        self._addrs: dict[NodeId, list[str]] = {}
        self._dial_locks: dict[tuple[int, NodeId], trio.Lock] = {}
        self._peer_ids: dict[ID, NodeId] = {}
        self._node_peer_ids: dict[NodeId, ID] = {}
        self._nursery: trio.Nursery | None = None
        self._mux_clients: dict[NodeId, MuxClient] = {}
        self._mux_opening: dict[NodeId, _MuxOpening] = {}
        self._no_mux_until: dict[NodeId, float] = {}
        self._mux_servers: set[MuxServer] = set()
        self.mux_streams_opened = 0
        """Outgoing mux streams opened so far (tests and benchmarks read it)."""

    # ---------------------------------------------------------------- lifecycle

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        identity: NodeIdentity,
        listen: Sequence[str] = (DEFAULT_QUIC_LISTEN,),
        bulk_listen: Sequence[str] | None = None,
        config: Libp2pTransportConfig | None = None,
    ) -> AsyncIterator[Libp2pTransport]:
        """Run the transport for the duration of the block, inside the caller's task tree.

        `listen` takes QUIC multiaddrs; `bulk_listen` TCP ones (default: TCP on the
        host of the first QUIC address, any port). Without a `config`, the environment
        variable `ILEICES_MUX=0` turns the long-lived streams off (benchmarks compare
        the two paths with it; it is also the escape hatch).
        """
        if config is None:
            # ILEICES_MUX=0: one stream per request, as before the mux (benchmarks, escape hatch).
            config = Libp2pTransportConfig(long_lived_streams=os.environ.get("ILEICES_MUX", "1") != "0")
        quic_listen = [multiaddr.Multiaddr(a) for a in listen]
        if bulk_listen is None:
            host_part = str(quic_listen[0]).split("/udp/")[0]
            bulk_listen = [f"{host_part}/tcp/0"]
        tcp_listen = [multiaddr.Multiaddr(a) for a in bulk_listen]
        key_pair = keypair_from_identity(identity)
        receive_buffer = config.quic_receive_buffer_bytes or (
            config.max_frame_bytes + HEADER_SIZE + 64 * 1024
        )
        quic_config = QUICTransportConfig(
            max_connections_per_peer=1,  # pitfall 1: otherwise connect() sleeps 250 ms
            max_datagram_size=config.quic_max_datagram_size,
            STREAM_READ_TIMEOUT=_NEVER,  # pitfall 4: our own deadlines bound every read
            MAX_STREAM_RECEIVE_BUFFER=max(receive_buffer, _MIN_RECEIVE_BUFFER),  # pitfall 5
        )
        mesh_host = new_host(
            key_pair=key_pair,
            listen_addrs=quic_listen,
            enable_quic=True,
            quic_transport_opt=quic_config,
            connection_config=_connection_config(),
        )
        bulk_host = new_host(
            key_pair=key_pair,
            listen_addrs=tcp_listen,
            connection_config=_connection_config(),
        )
        transport = cls(identity, mesh_host, bulk_host, config)
        async with mesh_host.run(quic_listen), bulk_host.run(tcp_listen):
            try:
                for host in (mesh_host, bulk_host):
                    # pitfall 3: no redialing of peers that left; we dial deliberately.
                    await host.get_network().auto_connector.stop()  # type: ignore[attr-defined]
                # Mux readers, stream openers and responder handlers live here, so no
                # requester's timeout can cancel work that other requests share.
                async with trio.open_nursery() as nursery:
                    transport._nursery = nursery
                    if config.long_lived_streams:
                        mesh_host.set_stream_handler(TProtocol(MUX_PROTOCOL), transport._serve_mux)
                    try:
                        yield transport
                    finally:
                        transport._closed = True
                        nursery.cancel_scope.cancel()
            finally:
                transport._closed = True
                with trio.CancelScope(shield=True), trio.move_on_after(10):
                    # pitfall 2: leaving run() alone leaves connections open.
                    for host in (mesh_host, bulk_host):
                        try:
                            await host.close()
                        except Exception:
                            log.debug("error closing a libp2p host", exc_info=True)

    # -------------------------------------------------------------- contract API

    @property
    def node_id(self) -> NodeId:
        return self._identity.node_id

    @property
    def peer_id(self) -> ID:
        return self._mesh_host.get_id()

    def listen_addrs(self) -> list[str]:
        return [str(a) for a in self._mesh_host.get_addrs()] + [str(a) for a in self._bulk_host.get_addrs()]

    def set_handler(self, protocol: str, handler: RequestHandler) -> None:
        check_protocol_id(protocol)
        self._handlers[protocol] = handler
        self._mesh_host.set_stream_handler(TProtocol(protocol), self._stream_handler(protocol))

    def set_bulk_handler(self, protocol: str, handler: BulkHandler) -> None:
        check_protocol_id(protocol)
        self._bulk_handlers[protocol] = handler
        self._bulk_host.set_stream_handler(TProtocol(protocol), self._bulk_stream_handler(protocol))

    def set_admission_check(
        self, check: AdmissionCheck | None, open_protocols: Iterable[str] | None = None
    ) -> None:
        self._gate.set_check(check, open_protocols)

    def connected_peers(self) -> list[NodeId]:
        peers: list[NodeId] = []
        for peer_id in self._mesh_host.get_connected_peers():
            with contextlib.suppress(ValueError):
                peers.append(self._node_id_of(peer_id))
        return peers

    async def connect(self, peer: NodeId, addrs: list[str], timeout: float = DEFAULT_CONNECT_TIMEOUT) -> None:
        self._ensure_open()
        check_node_id(peer)
        if addrs:
            self._addrs[peer] = list(addrs)
        # libp2p alone retries a dead QUIC address 4 x 10 s before giving up.
        with trio.move_on_after(timeout):
            await self._ensure_connected(self._mesh_host, peer, "quic")
            return
        raise PeerUnreachable(f"cannot connect to {peer.hex()[:12]} within {timeout}s")

    async def disconnect(self, peer: NodeId) -> None:
        peer_id = peer_id_from_node_id(peer)
        client = self._mux_clients.pop(peer, None)
        if client is not None:
            await client.abort("disconnected")
        for host in (self._mesh_host, self._bulk_host):
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                try:
                    await host.disconnect(peer_id)
                except Exception:
                    log.debug("error disconnecting %s", peer_id, exc_info=True)

    async def request(
        self, peer: NodeId, protocol: str, payload: bytes, timeout: float = DEFAULT_REQUEST_TIMEOUT
    ) -> bytes:
        self._ensure_open()
        check_protocol_id(protocol)
        if len(payload) > self._config.max_frame_bytes:
            raise FrameTooLarge(len(payload), self._config.max_frame_bytes)
        with trio.move_on_after(timeout):
            client = None
            if len(payload) <= MUX_MAX_REQUEST_BYTES:
                client = await self._mux_client(peer)
            if client is None or client.in_flight >= MUX_MAX_IN_FLIGHT:
                frame = encode_frame(payload, self._config.max_frame_bytes)
                return await self._exchange(peer, protocol, frame, len(payload))
            reply = await client.request(protocol, payload)
            self.counters.frames_out += 1
            self.counters.bytes_out += len(payload)
            return self._unwrap_reply(reply)
        raise RequestTimeout(f"no reply from {peer.hex()[:12]} on {protocol} within {timeout}s")

    async def send_bulk(
        self, peer: NodeId, protocol: str, source: BulkSource, timeout: float = 120.0
    ) -> bytes:
        self._ensure_open()
        check_protocol_id(protocol)
        with trio.move_on_after(timeout):
            return await self._send_bulk(peer, protocol, source)
        raise RequestTimeout(f"bulk transfer to {peer.hex()[:12]} not acknowledged in {timeout}s")

    # ---------------------------------------------------------------- requester

    def _ensure_open(self) -> None:
        if self._closed:
            raise TransportClosed("this libp2p transport is closed")

    def _node_id_of(self, peer_id: ID) -> NodeId:
        node_id = self._peer_ids.get(peer_id)
        if node_id is None:
            node_id = node_id_from_peer_id(peer_id)
            if len(self._peer_ids) > 100_000:
                self._peer_ids.clear()
            self._peer_ids[peer_id] = node_id
        return node_id

    def _peer_id_of(self, peer: NodeId) -> ID:
        peer_id = self._node_peer_ids.get(peer)
        if peer_id is None:
            peer_id = peer_id_from_node_id(peer)
            if len(self._node_peer_ids) > 100_000:
                self._node_peer_ids.clear()
            self._node_peer_ids[peer] = peer_id
        return peer_id

    async def _ensure_connected(self, host: IHost, peer: NodeId, kind: str) -> ID:
        peer_id = self._peer_id_of(peer)
        if _has_live_connection(host, peer_id):
            return peer_id
        lock = self._dial_locks.setdefault((id(host), peer), trio.Lock())
        async with lock:
            connections = host.get_network().connections.get(peer_id)
            if _has_live_connection(host, peer_id):
                return peer_id
            if connections:  # only closed ones, not yet swept away: do not reuse them
                with trio.CancelScope(shield=True), trio.move_on_after(2):
                    try:
                        await host.disconnect(peer_id)
                    except Exception:
                        log.debug("error dropping closed connections", exc_info=True)
            addrs = [multiaddr.Multiaddr(a) for a in self._addrs.get(peer, []) if _is_multiaddr_of(a, kind)]
            if not addrs:
                raise PeerUnreachable(f"no {kind} address known for {peer.hex()[:12]}")
            # A deliberate dial must not be refused by a failure cached from before
            # the peer restarted (pitfall 10's negative cache, 60 s).
            network: Any = host.get_network()
            network.unblock_peer(peer_id)
            try:
                await host.connect(PeerInfo(peer_id, addrs))
            except Exception as exc:
                self.counters.errors += 1
                raise PeerUnreachable(f"cannot connect to {peer.hex()[:12]}: {exc}") from exc
        return peer_id

    async def _open_stream(self, host: IHost, peer: NodeId, protocol: str, kind: str) -> INetStream:
        peer_id = await self._ensure_connected(host, peer, kind)
        try:
            return await host.new_stream(peer_id, [TProtocol(protocol)])
        except StreamFailure as exc:
            if _not_supported(exc):
                raise NoHandler(f"{peer.hex()[:12]} does not speak {protocol}") from exc
            self.counters.errors += 1
            raise TransportError(f"cannot open a {protocol} stream: {exc}") from exc
        except Exception as exc:
            self.counters.errors += 1
            raise TransportError(f"cannot open a {protocol} stream: {exc}") from exc

    async def _exchange(self, peer: NodeId, protocol: str, frame: bytes, payload_size: int) -> bytes:
        stream = await self._open_stream(self._mesh_host, peer, protocol, "quic")
        try:
            await stream.write(frame)  # QUIC: cancelling a write is harmless (tested)
            self.counters.frames_out += 1
            self.counters.bytes_out += payload_size
            reply = await read_frame(_Reader(stream), self._config.max_frame_bytes + 1)
        except TransportError:
            await _reset(stream)
            raise
        except Exception as exc:  # libp2p/aioquic raise many unrelated types for a dead stream
            await _reset(stream)
            self.counters.errors += 1
            raise TransportError(f"{protocol} exchange with {peer.hex()[:12]} failed: {exc}") from exc
        except BaseException:  # cancelled (our timeout): abort, never half-close
            await _reset(stream)
            raise
        await _close(stream)  # our close is the acknowledgement the responder waits for
        return self._unwrap_reply(reply)

    # ------------------------------------------------------------- mux requester

    async def _mux_client(self, peer: NodeId) -> MuxClient | None:
        """The peer's live mux stream, opened if needed; None: use a stream per request.

        Opening runs as its own task (`_open_mux`), so a requester whose timeout fires
        while the stream is being negotiated abandons only its wait, never a
        half-negotiated stream that other requests are about to share.
        """
        if not self._config.long_lived_streams:
            return None
        retry_at = self._no_mux_until.get(peer)
        if retry_at is not None:
            if trio.current_time() < retry_at:
                return None
            del self._no_mux_until[peer]
        peer_id = await self._ensure_connected(self._mesh_host, peer, "quic")
        client = self._mux_clients.get(peer)
        if client is not None:
            if client.broken is None and self._is_current(peer_id, client):
                return client
            if self._mux_clients.get(peer) is client:
                del self._mux_clients[peer]
            if client.broken is None:  # its connection was replaced (peer restarted)
                await client.abort("its connection is gone")
        opening = self._mux_opening.get(peer)
        if opening is None:
            self._ensure_open()  # the nursery takes no new tasks once closing
            opening = _MuxOpening()
            self._mux_opening[peer] = opening
            assert self._nursery is not None
            self._nursery.start_soon(self._open_mux, peer, peer_id, opening)
        await opening.done.wait()
        if opening.error is not None:
            raise opening.error
        return opening.client

    def _is_current(self, peer_id: ID, client: MuxClient) -> bool:
        """Whether the client's stream still rides one of the peer's live connections."""
        connection: Any = client.stream.muxed_conn  # type: ignore[attr-defined]
        if connection.is_closed:
            return False
        return any(c.muxed_conn is connection for c in self._mesh_host.get_network().get_connections(peer_id))

    async def _open_mux(self, peer: NodeId, peer_id: ID, opening: _MuxOpening) -> None:
        label = peer.hex()[:12]
        try:
            with trio.fail_after(self._config.mux_open_timeout):
                stream = await self._negotiate_mux(peer, peer_id)
        except Exception as exc:  # timeout, unreachable, connection lost during negotiation
            self.counters.errors += 1
            opening.error = TransportError(f"cannot open a mux stream to {label}: {exc}")
        else:
            if stream is None:
                log.info("%s does not speak %s: one stream per request for now", label, MUX_PROTOCOL)
                self._no_mux_until[peer] = trio.current_time() + self._config.mux_retry_after
            else:
                client = MuxClient(
                    stream,
                    max_reply_bytes=self._config.max_frame_bytes,
                    write_timeout=self._config.write_timeout,
                    eof_errors=_EOF,
                    label=label,
                )
                self.mux_streams_opened += 1
                self._mux_clients[peer] = client
                opening.client = client
                assert self._nursery is not None
                self._nursery.start_soon(self._run_mux_client, peer, client)
        finally:
            if self._mux_opening.get(peer) is opening:
                del self._mux_opening[peer]
            opening.done.set()

    async def _negotiate_mux(self, peer: NodeId, peer_id: ID) -> INetStream | None:
        """A negotiated mux stream to the peer; None if it does not speak the mux.

        A connection can look open after its peer dropped it (py-libp2p did not notice
        the peer's `disconnect` here: the next stream's negotiation fails on it). So a
        failed negotiation drops the connection and dials again, once.
        """
        for attempt in (1, 2):
            try:
                return await self._mesh_host.new_stream(peer_id, [TProtocol(MUX_PROTOCOL)])
            except StreamFailure as exc:
                if _not_supported(exc):
                    return None
                if attempt == 2:
                    raise
                log.debug("mux negotiation with %s failed (%s); redialling", peer.hex()[:12], exc)
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                try:
                    await self._mesh_host.disconnect(peer_id)
                except Exception:
                    log.debug("error dropping a broken connection", exc_info=True)
            peer_id = await self._ensure_connected(self._mesh_host, peer, "quic")
        raise AssertionError("unreachable")

    async def _run_mux_client(self, peer: NodeId, client: MuxClient) -> None:
        try:
            await client.run()
        finally:
            if self._mux_clients.get(peer) is client:
                del self._mux_clients[peer]
            if client.broken is not None and not self._closed:
                log.debug("%s", client.broken)

    # ------------------------------------------------------------- mux responder

    async def _serve_mux(self, stream: INetStream) -> None:
        """libp2p's handler for an inbound mux stream: serve it until it ends."""
        if self._nursery is None or self._closed:
            await _reset(stream)
            return
        try:
            peer: NodeId | None = self._node_id_of(stream.muxed_conn.peer_id)
        except ValueError:
            peer = None
        server = MuxServer(
            stream,
            _MuxService(self, peer),
            self._nursery,
            max_request_bytes=self._config.max_frame_bytes,
            frame_read_timeout=self._config.frame_read_timeout,
            write_timeout=self._config.write_timeout,
            eof_errors=_EOF,
        )
        self._mux_servers.add(server)
        try:
            await server.run()
        except Exception:  # never let one bad stream reach libp2p's task tree
            self.counters.errors += 1
            log.warning("serving a mux stream failed", exc_info=True)
        finally:
            self._mux_servers.discard(server)

    async def _run_handler(self, peer: NodeId, protocol: str, payload: bytes) -> tuple[int, bytes]:
        """Run `protocol`'s handler on an admitted request: (status, reply) to send."""
        self.counters.frames_in += 1
        self.counters.bytes_in += len(payload)
        handler = self._handlers.get(protocol)
        if handler is None:  # removed since it was screened
            return STATUS_NO_HANDLER, f"no handler for {protocol}".encode()
        try:
            reply = await handler(peer, payload)
        except Exception as exc:
            self.counters.errors += 1
            log.warning("handler for %s failed", protocol, exc_info=True)
            return STATUS_ERROR, f"{type(exc).__name__}: {exc}".encode()
        if len(reply) > self._config.max_frame_bytes:
            self.counters.errors += 1
            return STATUS_ERROR, b"reply exceeds the frame cap"
        return STATUS_OK, reply

    def _unwrap_reply(self, reply: bytes) -> bytes:
        if not reply:
            self.counters.errors += 1
            raise TransportError("empty reply frame")
        self.counters.frames_in += 1
        self.counters.bytes_in += len(reply) - 1
        status, body = reply[0], reply[1:]
        if status == STATUS_OK:
            return body
        message = body.decode("utf-8", "replace")
        if status == STATUS_REFUSED:
            raise Refused(message)
        if status == STATUS_OVERSIZE:
            raise FrameRejected(message)
        if status == STATUS_INTEGRITY:
            raise IntegrityError(message)
        if status == STATUS_NO_HANDLER:
            raise NoHandler(message)
        if status == STATUS_BUSY:
            raise TransportError(f"peer busy: {message}")
        raise RemoteError(message)

    async def _write(self, stream: INetStream, data: bytes, *, shield: bool) -> None:
        """Write `data`; on TCP shielded from cancellation so noise never desyncs (pitfall 8).

        The shield has its own deadline so a stalled peer cannot hang us; a write cut
        off by it leaves the secure channel mid-message, so the connection is dropped
        (the next transfer redials) rather than reused broken.
        """
        if not shield:
            await stream.write(data)
            return
        with trio.CancelScope(shield=True):
            with trio.move_on_after(self._config.write_timeout):
                await stream.write(data)
                return
            with trio.move_on_after(5):
                try:
                    await self._bulk_host.disconnect(stream.muxed_conn.peer_id)
                except Exception:
                    log.debug("error dropping a stalled connection", exc_info=True)
        raise TransportError("write stalled; connection dropped")

    async def _send_bulk(self, peer: NodeId, protocol: str, source: BulkSource) -> bytes:
        peer_id = await self._ensure_connected(self._bulk_host, peer, "tcp")
        accumulator = Blake2bAccumulator()
        try:
            stream = await self._open_stream(self._bulk_host, peer, protocol, "tcp")
            async for chunk in iter_bulk_source(source):
                accumulator.update(chunk)
                frame = b"".join((HEADER.pack(len(chunk) + 1), _BULK_CHUNK_KIND, chunk))  # one copy
                await self._write(stream, frame, shield=True)
            end = bytes([BULK_END]) + _BULK_END.pack(accumulator.digest(), accumulator.size)
            await self._write(stream, encode_frame(end), shield=True)
            reply = await read_frame(_Reader(stream), self._config.max_frame_bytes + 1)
        except TransportError:
            await self._drop_bulk_connection(peer_id)
            raise
        except Exception as exc:  # libp2p raises many unrelated types for a dead stream
            await self._drop_bulk_connection(peer_id)
            self.counters.errors += 1
            raise TransportError(f"bulk transfer to {peer.hex()[:12]} failed: {exc}") from exc
        except BaseException:  # cancelled anywhere, stream negotiation included
            await self._drop_bulk_connection(peer_id)
            raise
        await _close(stream)
        self.counters.bulk_out += 1
        self.counters.bulk_bytes_out += accumulator.size
        return self._unwrap_reply(reply)

    # ---------------------------------------------------------------- responder

    def _stream_handler(self, protocol: str) -> Callable[[INetStream], Awaitable[None]]:
        async def handle(stream: INetStream) -> None:
            try:
                await self._serve(stream, protocol)
            except Exception:  # never let one bad stream reach libp2p's task tree
                self.counters.errors += 1
                log.warning("serving %s failed", protocol, exc_info=True)
                await _reset(stream)

        return handle

    async def _serve(self, stream: INetStream, protocol: str) -> None:
        peer = self._admitted_peer(stream, protocol)
        if peer is None:
            await self._finish(stream, STATUS_REFUSED, b"not admitted: only open protocols allowed")
            return
        try:
            with trio.fail_after(self._config.frame_read_timeout):
                payload = await read_frame(_Reader(stream), self._config.max_frame_bytes)
        except FrameTooLarge as exc:
            self.counters.oversize += 1
            await self._finish(stream, STATUS_OVERSIZE, str(exc).encode())
            return
        except Exception as exc:  # truncated frame, reset, timeout: all "no request"
            self.counters.errors += 1
            log.debug("bad request on %s: %s", protocol, exc)
            await _reset(stream)
            return
        self.counters.frames_in += 1
        self.counters.bytes_in += len(payload)
        handler = self._handlers[protocol]
        try:
            reply = await handler(peer, payload)
        except Exception as exc:
            self.counters.errors += 1
            log.warning("handler for %s failed", protocol, exc_info=True)
            await self._finish(stream, STATUS_ERROR, f"{type(exc).__name__}: {exc}".encode())
            return
        if len(reply) > self._config.max_frame_bytes:
            self.counters.errors += 1
            await self._finish(stream, STATUS_ERROR, b"reply exceeds the frame cap")
            return
        await self._finish(stream, STATUS_OK, reply)
        self.counters.frames_out += 1
        self.counters.bytes_out += len(reply)

    def _admitted_peer(self, stream: INetStream, protocol: str) -> NodeId | None:
        """The stream's node id if it may speak `protocol`; None (counted) otherwise."""
        try:
            peer = self._node_id_of(stream.muxed_conn.peer_id)
        except ValueError:
            self.counters.refused += 1
            return None
        if not self._gate.allows(peer, protocol):
            self.counters.refused += 1
            return None
        return peer

    async def _finish(self, stream: INetStream, status: int, body: bytes, *, tcp: bool = False) -> None:
        """Send the reply, wait for the requester's close (its ack), then close our side.

        Closing first would risk losing the reply's last bytes (pitfall 6); the wait
        also drains whatever a refused or oversize sender is still pushing, so the
        close never races the peer's writes (pitfall 7).
        """
        frame = encode_frame(bytes([status]) + body, self._config.max_frame_bytes + 1)
        try:
            await self._write(stream, frame, shield=tcp)
            reader = _Reader(stream)
            with trio.move_on_after(self._config.close_wait) as waited:
                while await reader.read(64 * 1024):
                    pass
        except Exception as exc:  # the requester vanished: nothing more to do
            log.debug("reply not delivered: %s", exc)
            await (self._abort_bulk(stream) if tcp else _reset(stream))
            return
        if waited.cancelled_caught:
            await (self._abort_bulk(stream) if tcp else _reset(stream))
        else:
            await _close(stream)

    async def _abort_bulk(self, stream: INetStream) -> None:
        await self._drop_bulk_connection(stream.muxed_conn.peer_id)

    async def _drop_bulk_connection(self, peer_id: ID) -> None:
        """End a TCP bulk exchange that went wrong by dropping its whole connection.

        A cancelled read, write or stream negotiation on noise + yamux can leave the
        session mid-message (pitfall 8, measured here for negotiation and RST too),
        after which every stream on that connection fails. Dropping costs one ~4 ms
        redial on the next transfer; reusing a possibly broken session costs more.
        """
        with trio.CancelScope(shield=True), trio.move_on_after(self._config.close_wait):
            try:
                await self._bulk_host.disconnect(peer_id)
            except Exception:
                log.debug("error dropping a bulk connection", exc_info=True)

    def _bulk_stream_handler(self, protocol: str) -> Callable[[INetStream], Awaitable[None]]:
        async def handle(stream: INetStream) -> None:
            try:
                await self._serve_bulk(stream, protocol)
            except Exception:
                self.counters.errors += 1
                log.warning("serving bulk %s failed", protocol, exc_info=True)
                await self._abort_bulk(stream)

        return handle

    async def _serve_bulk(self, stream: INetStream, protocol: str) -> None:
        peer = self._admitted_peer(stream, protocol)
        if peer is None:
            await self._finish(stream, STATUS_REFUSED, b"not admitted: only open protocols allowed", tcp=True)
            return
        handler = self._bulk_handlers[protocol]
        try:
            answer = await handler(peer, BulkIncoming(self._bulk_chunks(stream)))
        except IntegrityError as exc:
            self.counters.integrity_failures += 1
            await self._finish(stream, STATUS_INTEGRITY, str(exc).encode(), tcp=True)
            return
        except FrameTooLarge as exc:
            self.counters.oversize += 1
            await self._finish(stream, STATUS_OVERSIZE, str(exc).encode(), tcp=True)
            return
        except (FramingError, trio.TooSlowError, TransportError) as exc:
            self.counters.errors += 1
            log.debug("bulk %s broken: %s", protocol, exc)
            await self._abort_bulk(stream)
            return
        except Exception as exc:
            self.counters.errors += 1
            log.warning("bulk handler for %s failed", protocol, exc_info=True)
            await self._finish(stream, STATUS_ERROR, f"{type(exc).__name__}: {exc}".encode(), tcp=True)
            return
        self.counters.bulk_in += 1
        await self._finish(stream, STATUS_OK, answer, tcp=True)

    async def _bulk_chunks(self, stream: INetStream) -> AsyncIterator[bytes]:
        reader = _Reader(stream)
        accumulator = Blake2bAccumulator()
        while True:
            try:
                with trio.fail_after(self._config.bulk_idle_timeout):
                    frame = await read_frame(reader, BULK_CHUNK_BYTES + 1)
            except (FramingError, trio.TooSlowError):
                raise
            except Exception as exc:  # reset / connection lost: the transfer is broken
                raise TransportError(f"bulk stream broken: {exc}") from exc
            if frame[:1] == bytes([BULK_CHUNK]):
                chunk = frame[1:]
                accumulator.update(chunk)
                yield chunk
            elif frame[:1] == bytes([BULK_END]) and len(frame) == 1 + _BULK_END.size:
                declared_digest, declared_size = _BULK_END.unpack(frame[1:])
                if declared_size != accumulator.size or declared_digest != accumulator.digest():
                    raise IntegrityError(
                        f"received {accumulator.size} bytes that do not match the declared "
                        f"{declared_size} bytes and hash"
                    )
                self.counters.bulk_bytes_in += accumulator.size
                return
            else:
                raise FramingError("malformed bulk frame")


@dataclass
class _MuxOpening:
    """A mux stream being opened: requesters wait on `done`, then read the outcome."""

    done: trio.Event = field(default_factory=trio.Event)
    client: MuxClient | None = None
    error: TransportError | None = None


class _MuxService:
    """The transport as one inbound mux stream's `MuxService`: gate, handlers, counters."""

    def __init__(self, transport: Libp2pTransport, peer: NodeId | None) -> None:
        self._transport = transport
        self._peer = peer

    def screen(self, protocol: str) -> tuple[int, bytes] | None:
        transport = self._transport
        if protocol not in transport._handlers:
            return STATUS_NO_HANDLER, f"no handler for {protocol}".encode()
        # Asked per request, not per stream: admission can change while a stream lives.
        if self._peer is None or not transport._gate.allows(self._peer, protocol):
            transport.counters.refused += 1
            return STATUS_REFUSED, b"not admitted: only open protocols allowed"
        return None

    def serve(self, protocol: str, payload: bytes) -> Awaitable[tuple[int, bytes]]:
        assert self._peer is not None  # screen() refuses a stream without a node id
        return self._transport._run_handler(self._peer, protocol, payload)

    def note(self, event: str, size: int = 0) -> None:
        counters = self._transport.counters
        if event == "replied":
            counters.frames_out += 1
            counters.bytes_out += size
        elif event == "oversize":
            counters.oversize += 1
        else:  # "busy", "violation"
            counters.errors += 1


async def _reset(stream: INetStream) -> None:
    """Abort a stream (never `close()` one the peer may still write to: pitfall 7)."""
    with trio.CancelScope(shield=True), trio.move_on_after(2):
        try:
            await stream.reset()
        except Exception:
            log.debug("stream reset failed", exc_info=True)


async def _close(stream: INetStream) -> None:
    with trio.CancelScope(shield=True), trio.move_on_after(2):
        try:
            await stream.close()
        except Exception:
            log.debug("stream close failed", exc_info=True)
