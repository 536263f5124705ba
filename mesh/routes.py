"""The route table: which libp2p protocol carries which core's messages, and how they are delivered.

One entry per mesh protocol. The node serves every entry the same way: decode the
payload with the protocol's own decoder (malformed input is dropped and counted as
`malformed_<actor>`), then hand it to the actor that owns the core:

- `DATAGRAM`: `try_send`, never waiting for room. SWIM probes and election rounds
  tolerate loss (Lifeguard's timeouts and the election's retries absorb it), and a full
  mailbox means an overloaded node that must not queue more (counted as
  `<actor>_mailbox_full`, answered with an empty reply).
- `CALL`: wait for the actor to handle it. Records are acknowledged to the sender only
  once they are durable here, so the stream's reply waits for the actor's.

**Replies carry the answer** (issue 13). Most datagrams are answered at once: a ping by
its ack, a lease request by its grant. Sent as requests of their own, each answer cost
two more transport frames (its request and its empty reply), ~1 ms of py-libp2p CPU
each, and those frames were most of an idle node's CPU. So a datagram's `Inbound`
carries a `ReplyBox`; the core's sends back to the requester while handling it come
back in the box, and go out in the transport reply (`pack_answers`): two frames per
question and answer instead of four. The requester's `PeerSender` hands a non-empty
reply to `receive_answers`, which delivers each answer to its own actor as if the peer
had sent it as a request (`try_send`; `<actor>_mailbox_full` when full). The transport
task waits for the box at most `ANSWER_WAIT` (1 s; past it, counted as
`<actor>_answer_timeout`, the reply is empty and the actor sends the answers the old
way), so a slow actor still cannot hold transport tasks for long, and nothing is lost.
Answers past `ANSWERS_MAX_BYTES` in one reply also go the old way.

The reply body is a MessagePack array of encoded messages, or empty for none.
Malformed bodies or answers are dropped and counted (`malformed_answer_<actor>`), never
raised. Answers carried: `<actor>_answers_out` here, `<actor>_answers_in` at the
requester. CALL routes (records) keep empty replies; at idle their anti-entropy hellos
between equal replicas have no answer to carry.

Old peers. A node from before this ignores reply bodies, so an ack carried to it would
be lost and it would declare us dead: carrying answers is an incompatible change, and
ships under the next protocol id (docs/mesh.md, "Protocol versions"). A datagram route
is served under its new id (`/2`, answers in replies) and its `legacy` id (`/1`, empty
replies, answers as requests of their own, as before). Sends go out on the new id; a
peer that does not speak it answers `NoHandler`, and `PeerSender` resends on the legacy
id and keeps using it for that peer for `LEGACY_RETRY_AFTER` (`fell_back_legacy`). An
old responder's empty replies mean "no answer here" to a new requester.

The same entry gives the actor its outbound path (`sender_for`). Adding a protocol adds
one entry here; nothing else in `mesh/` changes. The join protocol is not in the table:
it is the only one strangers may speak, and the join service answers it itself.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from actors.protocol_actor import Inbound, ReplyBox
from mesh.node_parts import DISSEMINATION, ELECTION, MEMBERSHIP, NodeParts
from protocols.common.identity import NodeId
from protocols.common.wire import WireError, decode, encode
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
    legacy: str | None = None
    """The route's previous id, still served with empty replies, and used to reach peers
    that do not speak `protocol` yet."""


MESH_ROUTES: tuple[Route, ...] = (
    Route("/ileices/membership/2", decode_membership, MEMBERSHIP, Delivery.DATAGRAM, "/ileices/membership/1"),
    Route("/ileices/records/1", decode_dissemination, DISSEMINATION, Delivery.CALL),
    Route("/ileices/election/2", decode_election, ELECTION, Delivery.DATAGRAM, "/ileices/election/1"),
)

Handler = Callable[[NodeId, bytes], Awaitable[bytes]]
AnswerHandler = Callable[[NodeId, str, bytes], None]
"""What a requester does with a datagram request's reply: (peer, protocol, reply body)."""

ANSWER_WAIT = 1.0
"""How long a transport task waits for its actor's answers before replying empty."""
ANSWERS_MAX_BYTES = 60 * 1024
"""Answers carried in one reply, at most (one mux chunk); the rest go as requests."""


def route_of(actor: str) -> Route:
    for route in MESH_ROUTES:
        if route.actor == actor:
            return route
    raise KeyError(f"no route carries the messages of actor {actor!r}")


def pack_answers(payloads: list[bytes]) -> bytes:
    """A reply body carrying `payloads` (encoded messages); empty for none."""
    return encode(payloads) if payloads else b""


def unpack_answers(body: bytes) -> list[bytes]:
    """The encoded messages a reply body carries; `WireError` if it is not such a body."""
    return decode(body, list[bytes]) if body else []


def route_handlers(parts: NodeParts) -> dict[str, Handler]:
    """Every protocol id the node serves for its routes (legacy ids included), with its handler."""
    handlers: dict[str, Handler] = {}
    for route in MESH_ROUTES:
        handlers[route.protocol] = serve(route, parts)
        if route.legacy is not None:
            handlers[route.legacy] = serve(route, parts, answers=False)
    return handlers


def attach_answers(parts: NodeParts) -> None:
    """Make the node's sender hand the answers in replies to `receive_answers`, and fall
    back to a route's legacy id for peers that do not speak its current one."""
    parts.sender.on_reply = receive_answers(parts)
    for route in MESH_ROUTES:
        if route.legacy is not None:
            parts.sender.fallbacks[route.protocol] = route.legacy


def serve(
    route: Route, parts: NodeParts, *, answers: bool = True, answer_wait: float = ANSWER_WAIT
) -> Handler:
    """The transport's handler for `route`: decode, deliver, reply (with the answers, for
    datagrams unless `answers` is False: the legacy id, whose requesters ignore replies)."""
    malformed = f"malformed_{route.actor}"
    mailbox_full = f"{route.actor}_mailbox_full"
    answer_timeout = f"{route.actor}_answer_timeout"
    answers_out = f"{route.actor}_answers_out"

    async def handle(peer: NodeId, payload: bytes) -> bytes:
        try:
            message = route.decode(payload)
        except WireError:
            parts.counters[malformed] += 1
            return b""
        actor = parts.actor(route.actor)
        if route.delivery is Delivery.CALL:
            await actor.call(Inbound(peer, message), timeout=parts.call_timeout)
            return b""
        if not answers:
            if not actor.try_send(Inbound(peer, message)):
                parts.counters[mailbox_full] += 1
            return b""
        box = ReplyBox()
        if not actor.try_send(Inbound(peer, message, box)):
            parts.counters[mailbox_full] += 1
            return b""
        carried = await box.wait(answer_wait)
        if carried is None:
            parts.counters[answer_timeout] += 1  # the actor sends them as requests instead
            return b""
        payloads: list[bytes] = []
        size = 0
        for answer in carried:
            encoded = encode(answer)
            if size + len(encoded) > ANSWERS_MAX_BYTES:
                parts.sender.send(peer, route.protocol, answer)
                continue
            payloads.append(encoded)
            size += len(encoded)
        parts.counters[answers_out] += len(payloads)
        return pack_answers(payloads)

    return handle


def receive_answers(parts: NodeParts) -> AnswerHandler:
    """The requester's side: deliver the answers in a datagram route's reply to its actor.

    Each answer reaches the actor as an `Inbound` from the peer that answered, exactly as
    if it had come as a request (without a reply box: an answer is never answered in
    the same reply, so no exchange can ping-pong). Never raises: a malformed body or
    answer is dropped and counted, a full mailbox drops and counts, as for a request.
    """
    routes = {route.protocol: route for route in MESH_ROUTES if route.delivery is Delivery.DATAGRAM}

    def deliver(peer: NodeId, protocol: str, body: bytes) -> None:
        route = routes.get(protocol)
        if route is None or not body:
            return
        malformed = f"malformed_answer_{route.actor}"
        try:
            payloads = unpack_answers(body)
        except WireError:
            parts.counters[malformed] += 1
            return
        actor = parts.actor(route.actor)
        for payload in payloads:
            try:
                message = route.decode(payload)
            except WireError:
                parts.counters[malformed] += 1
                continue
            if actor.try_send(Inbound(peer, message)):
                parts.counters[f"{route.actor}_answers_in"] += 1
            else:
                parts.counters[f"{route.actor}_mailbox_full"] += 1

    return deliver


def sender_for(
    actor: str, parts_sender: Callable[[NodeId, str, object], None]
) -> Callable[[NodeId, object], None]:
    """The outbound path of `actor`'s core: each `Send` goes out on the actor's route."""
    protocol = route_of(actor).protocol

    def send(peer: NodeId, message: object) -> None:
        parts_sender(peer, protocol, message)

    return send
