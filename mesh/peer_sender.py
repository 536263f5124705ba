"""Fire-and-forget delivery of protocol-core messages to peers, with bounded concurrency.

Cores expect datagram-like sends (SWIM probes must never wait on a dead peer), while the
transport offers acknowledged requests. This bridges the two: each send runs as its own
task in a nursery the node owns, dials the peer at its manifest addresses when needed,
and counts what failed or was dropped because too many sends were already in flight.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

import trio

from mesh.transport import PeerUnreachable, RequestTimeout, Transport, TransportError
from protocols.common.identity import NodeId
from protocols.common.wire import encode

log = logging.getLogger(__name__)

AddressBook = Callable[[NodeId], list[str]]


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

    def send(self, peer: NodeId, protocol: str, message: object) -> None:
        if self._in_flight >= self._max_in_flight:
            self.counters["dropped_overload"] += 1
            return
        payload = encode(message)
        self._in_flight += 1
        self._nursery.start_soon(self._deliver, peer, protocol, payload)

    def forget(self, peer: NodeId) -> None:
        """Dial afresh next time (the peer restarted, or its addresses changed)."""
        self._dialled.discard(peer)

    async def _deliver(self, peer: NodeId, protocol: str, payload: bytes) -> None:
        try:
            if peer not in self._dialled:
                await self._dial(peer)
            await self._transport.request(peer, protocol, payload, timeout=self._timeout)
            self.counters["delivered"] += 1
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

    async def _dial(self, peer: NodeId) -> None:
        addresses = self._addresses(peer)
        if addresses:
            await self._transport.connect(peer, addresses)
            self._dialled.add(peer)
        # Without a manifest yet (a member that just joined), the transport may still know
        # the peer from its join request or an open connection: let the request try.
