"""Fire-and-forget delivery of protocol-core messages to peers, with bounded concurrency.

Cores expect datagram-like sends (SWIM probes must never wait on a dead peer), while the
transport offers acknowledged requests. This bridges the two: each send runs as its own
task in a nursery the node owns, dials the peer at its manifest addresses when needed,
and counts what failed or was dropped because too many sends were already in flight.

A reply is not always empty: on datagram routes the peer may answer in it (a ping's
ack, a lease grant; `mesh.routes`, "Replies carry the answer"), which saves the two
frames of a request of its own. A non-empty reply goes to `on_reply`, installed by the
node once its routes are assembled; a reply handler that fails is counted
(`reply_handler_failed`) and logged, never allowed to take the node's nursery down.

`fallbacks` maps a protocol id to the older id it replaces (`mesh.routes`, "Old peers").
A peer that answers `NoHandler` on the new id gets the same payload again on the old
one, and only the old one for `LEGACY_RETRY_AFTER` (then the new id is tried again, in
case the peer was upgraded): one extra frame pair per peer and protocol every 5 minutes.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

import trio

from mesh.transport import NoHandler, PeerUnreachable, RequestTimeout, Transport, TransportError
from protocols.common.identity import NodeId
from protocols.common.wire import encode

log = logging.getLogger(__name__)

AddressBook = Callable[[NodeId], list[str]]
ReplyHandler = Callable[[NodeId, str, bytes], None]
"""Takes (peer, protocol, reply body) of a request whose reply was not empty."""

LEGACY_RETRY_AFTER = 300.0
"""Seconds a peer that lacked a protocol id is reached on its fallback before trying again."""


class PeerSender:
    def __init__(
        self,
        transport: Transport,
        nursery: trio.Nursery,
        addresses: AddressBook,
        *,
        max_in_flight: int = 256,
        timeout: float = 5.0,
    ) -> None:
        self._transport = transport
        self._nursery = nursery
        self._addresses = addresses
        self._max_in_flight = max_in_flight
        self._timeout = timeout
        self._in_flight = 0
        self._dialled: set[NodeId] = set()
        self.counters: Counter[str] = Counter()
        self.on_reply: ReplyHandler | None = None
        """What to do with a non-empty reply (the answers it carries); None ignores them."""
        self.fallbacks: dict[str, str] = {}
        """Protocol id -> the older id to use with peers that do not speak it."""
        self._legacy_until: dict[tuple[NodeId, str], float] = {}

    def send(self, peer: NodeId, protocol: str, message: object) -> None:
        if self._in_flight >= self._max_in_flight:
            self.counters["dropped_overload"] += 1
            return
        payload = encode(message)
        self._in_flight += 1
        self._nursery.start_soon(self._deliver, peer, self._protocol_for(peer, protocol), payload)

    def _protocol_for(self, peer: NodeId, protocol: str) -> str:
        until = self._legacy_until.get((peer, protocol))
        if until is None:
            return protocol
        if trio.current_time() < until:
            return self.fallbacks[protocol]
        del self._legacy_until[(peer, protocol)]
        return protocol

    def forget(self, peer: NodeId) -> None:
        """Dial afresh next time (the peer restarted, or its addresses changed)."""
        self._dialled.discard(peer)
        if self._legacy_until:  # a restarted peer may speak the new ids now
            self._legacy_until = {key: t for key, t in self._legacy_until.items() if key[0] != peer}

    async def _deliver(self, peer: NodeId, protocol: str, payload: bytes) -> None:
        try:
            if peer not in self._dialled:
                await self._dial(peer)
            try:
                reply = await self._transport.request(peer, protocol, payload, timeout=self._timeout)
            except NoHandler:
                fallback = self.fallbacks.get(protocol)
                if fallback is None:
                    raise
                reply = await self._transport.request(peer, fallback, payload, timeout=self._timeout)
                # A peer from before `protocol` (not one still starting, which lacks both
                # ids): the old id, for a while (module docstring).
                self._legacy_until[(peer, protocol)] = trio.current_time() + LEGACY_RETRY_AFTER
                self.counters["fell_back_legacy"] += 1
                protocol = fallback
            self.counters["delivered"] += 1
            if reply and self.on_reply is not None:
                self._hand_on(self.on_reply, peer, protocol, reply)
        except PeerUnreachable:
            self._dialled.discard(peer)
            self.counters["unreachable"] += 1
        except RequestTimeout:
            # A peer killed and restarted elsewhere leaves a connection that looks open
            # (QUIC has no keepalive): drop it, so the next send dials the current manifest.
            self.counters["timed_out"] += 1
            if peer in self._dialled:
                self._dialled.discard(peer)
                with trio.move_on_after(2):
                    await self._transport.disconnect(peer)
        except TransportError as exc:
            self.counters["failed"] += 1
            log.debug("send to %s on %s failed: %s", peer.hex()[:12], protocol, exc)
        finally:
            self._in_flight -= 1

    def _hand_on(self, handler: ReplyHandler, peer: NodeId, protocol: str, reply: bytes) -> None:
        try:
            handler(peer, protocol, reply)
        except Exception:  # a bug in handling answers must not end every send of the node
            self.counters["reply_handler_failed"] += 1
            log.exception("handling the reply of %s on %s failed", peer.hex()[:12], protocol)

    async def _dial(self, peer: NodeId) -> None:
        addresses = self._addresses(peer)
        if addresses:
            await self._transport.connect(peer, addresses)
            self._dialled.add(peer)
        # Without a manifest yet (a member that just joined), the transport may still know
        # the peer from its join request or an open connection: let the request try.
