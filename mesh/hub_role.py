"""The hub role's actor subtree: started on the node that wins an election, stopped when it loses it.

Everything the hub does lives under one supervisor the node starts on `became_hub`
and terminates on `stepped_down`, so losing the role stops every hub duty at once and
a crash in one duty never touches the node's own protocols. The first duty is
admitting joiners whose inviter is away. Each duty checks the lease again before it
acts: the subtree's lifetime follows the election's events, but only the lease
(`ElectionCore.acting_term`) says the hub may act right now.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from actors.actor import Actor
from actors.supervisor import ChildSpec, Strategy, Supervisor
from protocols.common.identity import NodeId
from protocols.join.invite import Invite
from protocols.records.record import Record

HUB_CHILD = "hub"
ADMISSIONS_CHILD = "admissions"


@dataclass(frozen=True, slots=True)
class HubAdmit:
    """A joiner (`peer`) presents an invite whose inviter is not this node."""

    peer: NodeId
    invite: Invite


@dataclass(frozen=True, slots=True)
class HubRefusal:
    """Why the hub did not admit; a value, not an exception, so a refusal never crashes the duty."""

    reason: str


@dataclass(frozen=True, slots=True)
class HubContext:
    """What the hub's duties need from the node, as callbacks (the node owns the state).

    `acting_term()` is the election's lease check; `inviter_away(node)` asks membership
    whether the node is dead or left; `admit(peer, invite)` counts the invite's uses over
    every admission in the store and publishes a new admission (atomically, inside the
    dissemination actor), or returns a `HubRefusal` saying why not (used up, ...).
    """

    acting_term: Callable[[], int | None]
    inviter_away: Callable[[NodeId], Awaitable[bool]]
    admit: Callable[[NodeId, Invite], Awaitable[Record | HubRefusal]]


class HubAdmissions(Actor[HubAdmit, "Record | HubRefusal"]):
    """Admits with an absent member's invite, one joiner at a time, while this node holds the lease.

    One at a time (the actor's mailbox) and counted inside the dissemination actor, so
    this hub never over-admits; see protocols/join/invite.py for what the count guarantees
    across the inviter and the hub.
    """

    def __init__(self, context: HubContext) -> None:
        self._context = context
        self.admitted = 0
        self.refused = 0

    async def handle(self, message: HubAdmit) -> Record | HubRefusal:
        inviter = message.invite.body.inviter
        if self._context.acting_term() is None:
            return self._refuse("this node's hub lease has lapsed; try again in a few seconds")
        if not await self._context.inviter_away(inviter):
            return self._refuse("its inviter is alive; join through the inviter")
        # Checked again after the await: the lease may have run out meanwhile.
        if self._context.acting_term() is None:
            return self._refuse("this node's hub lease has lapsed; try again in a few seconds")
        outcome = await self._context.admit(message.peer, message.invite)
        if isinstance(outcome, HubRefusal):
            self.refused += 1
        else:
            self.admitted += 1
        return outcome

    def _refuse(self, reason: str) -> HubRefusal:
        self.refused += 1
        return HubRefusal(reason)


def hub_supervisor(context: HubContext) -> Supervisor:
    """The hub's subtree; more duties (market, rounds, repair, settlement) join it as children."""
    return Supervisor(
        [ChildSpec(ADMISSIONS_CHILD, lambda: HubAdmissions(context))],
        strategy=Strategy.ONE_FOR_ONE,
        intensity=5,
        period=30.0,
        name=HUB_CHILD,
    )
