"""What the membership core reports: a member's state changed, it was forgotten, or it was removed."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from protocols.common.effects import Event
from protocols.common.identity import NodeId


class MemberState(StrEnum):
    """A member's state as the rest of the system (status, simulator, events) names it."""

    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"
    LEFT = "left"


LIVE_STATES = frozenset({MemberState.ALIVE, MemberState.SUSPECT})
"""States in which a member is still a gossip partner (a suspect may refute)."""


@dataclass(frozen=True, slots=True)
class MemberChanged(Event):
    """This node now believes `node` is in `state` (at `incarnation`)."""

    node: NodeId
    state: MemberState
    incarnation: int


@dataclass(frozen=True, slots=True)
class MemberForgotten(Event):
    """`node` was dead or left for `reclaim_time` and is dropped from the table.

    It has no state: a driver that reads one from it is wrong (reading `state` from every
    event crashed the node's membership actor a minute after any departure).
    """

    node: NodeId


@dataclass(frozen=True, slots=True)
class MemberRemoved(Event):
    """`node` was removed on the driver's word (its admission was revoked) and is barred for good.

    Unlike a death, nothing the member or its friends gossip brings it back: SWIM state
    is about liveness, and a revoked member's liveness no longer matters to anyone.
    """

    node: NodeId


MembershipEvent = MemberChanged | MemberForgotten | MemberRemoved
