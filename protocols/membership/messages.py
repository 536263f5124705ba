"""Wire schemas of the SWIM membership protocol: probes, acks and piggybacked updates.

Every message carries a few `MemberUpdate`s piggybacked on it (infection-style
dissemination rides on the probe traffic that flows anyway), so the schemas are kept
small: array-encoded structs, one-byte member states, a short tag per message type.
A piggybacked update costs about 38 bytes (71 with a suspecter); a ping carrying the
default 32 of them about 1.2 KB, an empty one about 10 bytes.

`gc=False`: these structs hold only bytes, ints and tuples of each other, so they can
never be part of a reference cycle; keeping them out of the cyclic garbage collector
matters when a simulator holds millions of them.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Annotated, Any, cast

import msgspec

from protocols.common.wire import WireStruct, decode

NodeIdBytes = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
"""A node id on the wire: exactly 32 bytes (an Ed25519 public key)."""

SEQ_MODULUS = 2**32
"""Probe sequence numbers wrap here, so they always fit a 5-byte msgpack integer."""

Seq = Annotated[int, msgspec.Meta(ge=0, lt=SEQ_MODULUS)]
Incarnation = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]

MAX_PIGGYBACK_ON_WIRE = 256
"""Most updates a probe message may carry; a larger list is refused at decode time."""


class WireState(IntEnum):
    """A member's state as one byte; the numeric order is the override precedence at equal incarnation."""

    ALIVE = 0
    SUSPECT = 1
    DEAD = 2
    LEFT = 3


class MemberUpdate(WireStruct, frozen=True, gc=False):
    """What one node believes about one member: its incarnation and state.

    `origin` names the suspecter on `SUSPECT` updates, so that independent suspicions
    can be counted as confirmations (Lifeguard's dynamic suspicion timeout); it is
    `None` (one byte) on every other update.
    """

    node: NodeIdBytes
    incarnation: Incarnation
    state: WireState
    origin: NodeIdBytes | None = None


Piggyback = Annotated[tuple[MemberUpdate, ...], msgspec.Meta(max_length=MAX_PIGGYBACK_ON_WIRE)]


class Ping(WireStruct, frozen=True, gc=False, tag="ping"):
    """A direct probe: the receiver answers with an `Ack` of the same `seq`."""

    seq: Seq
    updates: Piggyback


class Ack(WireStruct, frozen=True, gc=False, tag="ack"):
    """Answer to a `Ping`, or an intermediary relaying a target's answer to a `PingReq`."""

    seq: Seq
    updates: Piggyback


class PingReq(WireStruct, frozen=True, gc=False, tag="preq"):
    """Ask the receiver to probe `target` for us and relay the answer as `Ack(seq)`."""

    seq: Seq
    target: NodeIdBytes
    updates: Piggyback


class Nack(WireStruct, frozen=True, gc=False, tag="nack"):
    """An intermediary's "the target did not answer me in time" (Lifeguard).

    Hearing nacks tells the requester that its own links work; missing nacks count
    against its local health.
    """

    seq: Seq
    updates: Piggyback


class PushPull(WireStruct, frozen=True, gc=False, tag="sync"):
    """A full-state exchange (join, periodic anti-entropy, graceful leave push).

    `updates` is the sender's whole member table (or, for a leave, just its `LEFT`);
    with `reply` set the receiver answers with its own table. Its size is bounded only
    by the wire's message cap: about 100,000 members.
    """

    updates: tuple[MemberUpdate, ...]
    reply: bool


MembershipMessage = Ping | Ack | PingReq | Nack | PushPull
"""Every message the membership protocol sends; decode with `decode_membership`."""

_MESSAGE_UNION: Any = MembershipMessage


def decode_membership(data: bytes | bytearray | memoryview) -> MembershipMessage:
    """Decode one membership message, raising `protocols.common.wire.WireError` for anything else."""
    return cast(MembershipMessage, decode(data, _MESSAGE_UNION))
