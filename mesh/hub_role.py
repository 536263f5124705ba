"""The hub role's actor subtree: started on the node that wins an election, stopped when it loses it.

Everything the hub does lives under one supervisor the node starts on `became_hub`
and terminates on `stepped_down`, so losing the role stops every hub duty at once and
a crash in one duty never touches the node's own protocols. The first duty is
admitting joiners whose inviter is away. Each duty checks the lease again before it
acts: the subtree's lifetime follows the election's events, but only the lease
(`ElectionCore.acting_term`) says the hub may act right now.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from actors.actor import Actor, ActorRef
from actors.supervisor import ChildSpec, Strategy, Supervisor, SupervisorError
from protocols.common.identity import NodeId
from protocols.join.invite import Invite
from protocols.records.record import Record

log = logging.getLogger("mesh.node")

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

    `acting_term()` is the election's lease check (asked of the election actor);
    `inviter_away(node)` asks membership
    whether the node is dead or left; `admit(peer, invite)` counts the invite's uses over
    every admission in the store and publishes a new admission (atomically, inside the
    dissemination actor), or returns a `HubRefusal` saying why not (used up, ...).
    """

    acting_term: Callable[[], Awaitable[int | None]]
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
        if await self._context.acting_term() is None:
            return self._refuse("this node's hub lease has lapsed; try again in a few seconds")
        if not await self._context.inviter_away(inviter):
            return self._refuse("its inviter is alive; join through the inviter")
        # Checked again after the await: the lease may have run out meanwhile.
        if await self._context.acting_term() is None:
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


@dataclass(frozen=True)
class _RoleChange:
    """Start the hub role for `term`, or (term None) stop it for `reason`."""

    term: int | None
    reason: str


class HubRoleManager:
    """Starts and stops the hub role's subtree under the node's supervisor, in the order the
    election decided, from a task of its own (`run`).

    Never from inside the election actor's event handler: an election that wins (or still
    holds) the lease in its `on_start` reports `BecameHub` while the node's supervisor is
    starting its children under the supervisor's lock, and starting the hub child from
    there waited for that same lock forever (a lone founder's restart hung). OTP has the
    same rule: a child must not call its supervisor from its own init.
    """

    def __init__(self, context: HubContext, counters: Counter[str]) -> None:
        self._context = context
        self._counters = counters
        self._supervisor: Supervisor | None = None
        self._changes_in, self._changes_out = trio.open_memory_channel[_RoleChange](math.inf)

    def became_hub(self, term: int) -> None:
        self._changes_in.send_nowait(_RoleChange(term, ""))

    def stepped_down(self, reason: str) -> None:
        self._changes_in.send_nowait(_RoleChange(None, reason))

    def stop_if_running(self, reason: str) -> None:
        if self.running:
            self.stepped_down(reason)

    @property
    def running(self) -> bool:
        return self._child() is not None

    def admissions(self) -> ActorRef[HubAdmit, Record | HubRefusal] | None:
        """The admissions duty's ref while the role runs (None otherwise)."""
        hub = self._child()
        return hub.ref(ADMISSIONS_CHILD) if isinstance(hub, Supervisor) else None

    async def run(self, supervisor: Supervisor) -> None:
        """Apply role changes to `supervisor`'s children until cancelled."""
        self._supervisor = supervisor
        async for change in self._changes_out:
            if change.term is not None:
                await self._start(change.term)
            else:
                await self._stop(change.reason)

    def _child(self) -> object | None:
        if self._supervisor is None:
            return None
        try:
            return self._supervisor.child(HUB_CHILD)
        except KeyError:
            return None

    async def _start(self, term: int) -> None:
        supervisor = self._supervisor
        if supervisor is None or self._child() is not None:
            return
        context = self._context
        try:
            await supervisor.start_child(ChildSpec(HUB_CHILD, lambda: hub_supervisor(context), shutdown=None))
        except (SupervisorError, ValueError) as exc:
            log.warning("could not start the hub role for term %d: %s", term, exc)
            return
        self._counters["hub_role_started"] += 1
        log.info("this node is the hub of term %d: hub role started", term)

    async def _stop(self, reason: str) -> None:
        supervisor = self._supervisor
        if supervisor is None or self._child() is None:
            return
        try:
            await supervisor.terminate_child(HUB_CHILD)
        except (SupervisorError, KeyError, ValueError) as exc:
            log.warning("could not stop the hub role: %s", exc)
            return
        self._counters["hub_role_stopped"] += 1
        log.info("hub role stopped (%s)", reason)
