"""The route table: which libp2p protocol carries which core's messages, and how they are delivered.

One entry per mesh protocol. The node serves every entry the same way: decode the
payload with the protocol's own decoder (malformed input is dropped and counted as
`malformed_<actor>`), then hand it to the actor that owns the core:

- `DATAGRAM`: `try_send`, never waiting. SWIM probes and election rounds tolerate loss
  (Lifeguard's timeouts and the election's retries absorb it), and a full mailbox means
  an overloaded node that must not queue more (counted as `<actor>_mailbox_full`).
- `CALL`: wait for the actor to handle it. Records are acknowledged to the sender only
  once they are durable here, so the stream's reply waits for the actor's.

The same entry gives the actor its outbound path (`sender_for`). Adding a protocol adds
one entry here; nothing else in `mesh/` changes. The join protocol is not in the table:
it is the only one strangers may speak, and the join service answers it itself.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from actors.protocol_actor import Inbound
from mesh.node_parts import DISSEMINATION, ELECTION, MEMBERSHIP, NodeParts
from protocols.common.identity import NodeId
from protocols.common.wire import WireError
from protocols.dissemination.messages import decode_dissemination
from protocols.election.messages import decode_election
from protocols.membership.messages import decode_membership


class Delivery(enum.Enum):
    DATAGRAM = "datagram"
    CALL = "call"


@dataclass(frozen=True)
class Route:
    protocol: str
    """The libp2p protocol id; its version is negotiated per stream (docs/mesh.md)."""
    decode: Callable[[bytes], object]
    actor: str
    """The node supervisor's child whose core handles these messages."""
    delivery: Delivery


MESH_ROUTES: tuple[Route, ...] = (
    Route("/ileices/membership/1", decode_membership, MEMBERSHIP, Delivery.DATAGRAM),
    Route("/ileices/records/1", decode_dissemination, DISSEMINATION, Delivery.CALL),
    Route("/ileices/election/1", decode_election, ELECTION, Delivery.DATAGRAM),
)

Handler = Callable[[NodeId, bytes], Awaitable[bytes]]


def route_of(actor: str) -> Route:
    for route in MESH_ROUTES:
        if route.actor == actor:
            return route
    raise KeyError(f"no route carries the messages of actor {actor!r}")


def serve(route: Route, parts: NodeParts) -> Handler:
    """The transport's handler for `route`: decode, deliver, reply empty."""
    malformed = f"malformed_{route.actor}"
    mailbox_full = f"{route.actor}_mailbox_full"

    async def handle(peer: NodeId, payload: bytes) -> bytes:
        try:
            message = route.decode(payload)
        except WireError:
            parts.counters[malformed] += 1
            return b""
        actor = parts.actor(route.actor)
        if route.delivery is Delivery.CALL:
            await actor.call(Inbound(peer, message), timeout=parts.call_timeout)
        elif not actor.try_send(Inbound(peer, message)):
            parts.counters[mailbox_full] += 1
        return b""

    return handle


def sender_for(
    actor: str, parts_sender: Callable[[NodeId, str, object], None]
) -> Callable[[NodeId, object], None]:
    """The outbound path of `actor`'s core: each `Send` goes out on the actor's route."""
    protocol = route_of(actor).protocol

    def send(peer: NodeId, message: object) -> None:
        parts_sender(peer, protocol, message)

    return send
