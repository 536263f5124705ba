"""The actor shell around a sans-IO protocol core: real messages and real time in, effects out.

Membership and dissemination (and later election, market, rounds) are plain cores in
`protocols/`; this one actor runs any of them on trio. It feeds inbound messages and
the core's timer (through `wake_at`/`on_timeout`, so no stray task keeps time), awaits
`on_events` for the events, then hands `Send` effects to a non-blocking `send` callback.

Awaiting `on_events` inside `handle` is deliberate: a caller that `call`s the actor with
an inbound message gets its reply only after the events were handled (for records:
persisted), which is what lets the transport acknowledge only what is durable.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio

from actors.actor import Actor
from protocols.common.effects import Event, Send
from protocols.common.identity import NodeId
from protocols.common.sans_io import SansIOCore


@dataclass(frozen=True, slots=True)
class Inbound:
    """A decoded message from a peer, for the core."""

    sender: NodeId
    message: object


@dataclass(frozen=True, slots=True)
class Command:
    """Run `action(core, now)` inside the actor (so it is serialised with everything else)."""

    action: Callable[[Any, float], object]


SendCallback = Callable[[NodeId, object], None]
EventsCallback = Callable[[list[Event]], Awaitable[None]]


async def _ignore_events(events: list[Event]) -> None:
    return None


class ProtocolActor(Actor[Inbound | Command, object]):
    """Drives one sans-IO core. `now` is `trio.current_time()` (monotonic seconds)."""

    def __init__(
        self,
        core: SansIOCore,
        send: SendCallback,
        on_events: EventsCallback = _ignore_events,
    ) -> None:
        self.core = core
        self._send = send
        self._on_events = on_events

    async def on_start(self) -> None:
        self.core.tick(trio.current_time())
        await self._flush()

    def wake_at(self) -> float | None:
        return self.core.next_deadline()

    async def on_timeout(self) -> None:
        self.core.tick(trio.current_time())
        await self._flush()

    async def handle(self, message: Inbound | Command) -> object:
        now = trio.current_time()
        if isinstance(message, Inbound):
            self.core.receive(now, message.sender, message.message)
            reply: object = None
        else:
            reply = message.action(self.core, now)
        await self._flush()
        return reply

    async def _flush(self) -> None:
        # Events (persistence) before sends: a record leaves this node only once it is
        # durable here, so a crash can never make this node reuse a seq others have seen.
        effects = self.core.drain()
        events = [effect for effect in effects if isinstance(effect, Event)]
        if events:
            await self._on_events(events)
        for effect in effects:
            if isinstance(effect, Send):
                self._send(effect.to, effect.message)
