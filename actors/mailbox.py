"""A bounded single-consumer mailbox: the one queue between an actor and its senders.

Bounded so a slow actor pushes back on its senders (`send` waits for room) instead of
growing without limit; `try_send` is for senders that must never wait and would rather
lose the message, so every such loss is counted. Built on trio's low-level parking
rather than a memory channel so that enqueueing never hides a schedule point: `call`
relies on that to park for its reply without missing the wake-up (see `enqueue`).
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

import trio
from trio.lowlevel import (
    Abort,
    ParkingLot,
    Task,
    cancel_shielded_checkpoint,
    checkpoint_if_cancelled,
    current_task,
    reschedule,
    wait_task_rescheduled,
)

T = TypeVar("T")

# A receiver that always finds messages waiting never parks; this many receives in a
# row without parking earn one schedule point, so a busy actor cannot starve the rest.
RECEIVES_PER_SCHEDULE_POINT = 64


class MailboxClosed(Exception):
    """The mailbox's actor has stopped: nothing more will be received from it."""


class Mailbox(Generic[T]):
    """FIFO of at most `capacity` items, one receiver, any number of senders.

    Senders that find it full park in arrival order; each receive hands the freed
    place to the longest-waiting sender (a reservation), so a stream of `try_send`s
    cannot starve a waiting `send`.
    """

    __slots__ = (
        "_closed",
        "_items",
        "_receiver",
        "_reserved",
        "_senders",
        "_unparked_receives",
        "accepted",
        "capacity",
        "dropped",
        "high_water",
    )

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"mailbox capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self.accepted = 0
        self.dropped = 0
        self.high_water = 0
        self._items: deque[T] = deque()
        self._reserved = 0
        self._senders = ParkingLot()
        self._receiver: Task | None = None
        self._closed = False
        self._unparked_receives = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    def _append(self, item: T) -> None:
        items = self._items
        items.append(item)
        self.accepted += 1
        if len(items) > self.high_water:
            self.high_water = len(items)
        receiver = self._receiver
        if receiver is not None:
            self._receiver = None
            reschedule(receiver)

    def try_send(self, item: T) -> bool:
        """Enqueue without waiting; False (and one more `dropped`) when full or closed."""
        if self._closed or len(self._items) + self._reserved >= self.capacity:
            self.dropped += 1
            return False
        self._append(item)
        return True

    async def enqueue(self, item: T) -> None:
        """Wait for room, then enqueue, with no schedule point after the item is in.

        A caller that parks right after this (to await a reply) is therefore parked
        before the receiver can run and answer, so the answer cannot arrive early.
        Raises MailboxClosed if the mailbox is or becomes closed.
        """
        await checkpoint_if_cancelled()
        if self._closed:
            raise MailboxClosed
        if self._senders or len(self._items) + self._reserved >= self.capacity:
            await self._senders.park()
            if self._closed:
                raise MailboxClosed
            self._reserved -= 1
        self._append(item)

    async def send(self, item: T) -> None:
        """Enqueue, waiting while full (backpressure); a full trio checkpoint."""
        await self.enqueue(item)
        await cancel_shielded_checkpoint()

    async def receive(self) -> T:
        """Take the oldest item, parking while empty; MailboxClosed once closed."""
        await checkpoint_if_cancelled()
        while True:
            if self._closed:
                raise MailboxClosed
            items = self._items
            if items:
                item = items.popleft()
                if self._senders:
                    self._senders.unpark()
                    self._reserved += 1
                self._unparked_receives += 1
                if self._unparked_receives >= RECEIVES_PER_SCHEDULE_POINT:
                    self._unparked_receives = 0
                    await cancel_shielded_checkpoint()
                return item
            if self._receiver is not None:
                raise trio.BusyResourceError("a mailbox has exactly one receiver")
            self._receiver = current_task()
            self._unparked_receives = 0

            def abort(_: object) -> Abort:
                self._receiver = None
                return Abort.SUCCEEDED

            await wait_task_rescheduled(abort)

    def close(self) -> None:
        """Refuse all further sends and receives and wake everyone waiting.

        Items still queued stay until `drain`, so the owner can tell their senders.
        """
        if self._closed:
            return
        self._closed = True
        receiver = self._receiver
        if receiver is not None:
            self._receiver = None
            reschedule(receiver)
        self._senders.unpark_all()

    def drain(self) -> list[T]:
        """Remove and return everything still queued (used after `close`)."""
        left = list(self._items)
        self._items.clear()
        return left
