"""The actor shell around a sans-IO protocol core: real messages and real time in, effects out.

Membership and dissemination (and later election, market, rounds) are plain cores in
`protocols/`; this one actor runs any of them on trio. It feeds inbound messages and
the core's timer (through `wake_at`/`on_timeout`, so no stray task keeps time), awaits
`on_events` for the events, then hands `Send` effects to a non-blocking `send` callback.

Awaiting `on_events` inside `handle` is deliberate: a caller that `call`s the actor with
an inbound message gets its reply only after the events were handled (for records:
persisted), which is what lets the transport acknowledge only what is durable.

Replies carry the answer (issue 13). An `Inbound` may come with a `ReplyBox`: the
transport task that received it waits (briefly) for the messages the core sends *back
to that sender* while handling it (a ping's ack, a lease request's grant), and returns
them in the transport reply of the request instead of each opening a request of its
own. Each answered request then costs two transport frames instead of four, and at
~1 ms of py-libp2p CPU a frame that is most of an idle node's cost. The box is filled
in `_flush`, after the events were awaited, so "persisted before it leaves" holds for
answers as for any send. A box whose waiter gave up (its short timeout passed, the
actor was slow) refuses the messages, and they go out through `send` as before: a slow
actor costs a frame, never a lost answer.
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


class ReplyBox:
    """Where the answers to one `Inbound` go while the transport task that received it waits.

    Filled at most once, by the actor (`offer`); the waiter takes them with `wait`. Once
    the waiter has given up (or taken them) the box is closed and `offer` refuses, so the
    actor sends the answers the ordinary way instead: nothing is lost to a timeout.
    """

    __slots__ = ("_done", "_messages", "_open")

    def __init__(self) -> None:
        self._done = trio.Event()
        self._messages: list[object] = []
        self._open = True

    def offer(self, messages: list[object]) -> bool:
        """Hand `messages` to the waiter; False if it is no longer waiting."""
        if not self._open:
            return False
        self._open = False
        self._messages = messages
        self._done.set()
        return True

    async def wait(self, timeout: float) -> list[object] | None:
        """The answers, or None if none came within `timeout` (the box is closed either way)."""
        try:
            with trio.move_on_after(timeout):
                await self._done.wait()
        finally:
            delivered = self._done.is_set()
            self._open = False
        return self._messages if delivered else None


@dataclass(frozen=True, slots=True)
class Inbound:
    """A decoded message from a peer, for the core.

    With `replies`, the messages the core sends back to `sender` while handling this one
    go into the box (for the transport reply of the request that carried it), not out
    through the actor's `send`.
    """

    sender: NodeId
    message: object
    replies: ReplyBox | None = None


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
            await self._flush(message)
            return None
        reply = message.action(self.core, now)
        await self._flush()
        return reply

    async def _flush(self, inbound: Inbound | None = None) -> None:
        """Carry out what the core drained: events, then sends. With an `inbound` that has a
        reply box, the sends back to its sender go into the box while its waiter waits."""
        # Events (persistence) before sends: a record leaves this node only once it is
        # durable here, so a crash can never make this node reuse a seq others have seen.
        effects = self.core.drain()
        events = [effect for effect in effects if isinstance(effect, Event)]
        if events:
            await self._on_events(events)
        if inbound is None or inbound.replies is None:
            for effect in effects:
                if isinstance(effect, Send):
                    self._send(effect.to, effect.message)
            return
        requester = inbound.sender
        answers: list[object] = []
        for effect in effects:
            if isinstance(effect, Send):
                if effect.to == requester:
                    answers.append(effect.message)
                else:
                    self._send(effect.to, effect.message)
        if not inbound.replies.offer(answers):
            for answer in answers:  # its waiter gave up: the ordinary way, as before
                self._send(requester, answer)
