"""Mailbox backpressure and the actor's send/try_send/call contract, on a mock clock."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing

from actors.actor import (
    Actor,
    ActorCrashed,
    ActorError,
    ActorNotRunning,
    ActorRef,
    CallTimeout,
    spawn,
)
from actors.mailbox import RECEIVES_PER_SCHEDULE_POINT, Mailbox, MailboxClosed

if TYPE_CHECKING:
    from trio._core._run import TaskStatus


def run(test: Callable[[], Awaitable[None]]) -> None:
    trio.run(test, clock=trio.testing.MockClock(autojump_threshold=0))


class Boom(Exception):
    pass


class Echo(Actor[object, object]):
    """Replies with the message; 'boom' crashes, 'stop' stops, 'nap' sleeps 10 s."""

    mailbox_capacity = 4

    def __init__(self) -> None:
        self.journal: list[object] = []
        self.gate = trio.Event()
        self.gate.set()

    async def on_start(self) -> None:
        self.journal.append("on_start")

    async def handle(self, message: object) -> object:
        await self.gate.wait()
        self.journal.append(message)
        if message == "boom":
            raise Boom("asked to crash")
        if message == "stop":
            self.stop()
        if message == "nap":
            await trio.sleep(10)
        return message

    async def on_stop(self) -> None:
        self.journal.append("on_stop")


# ----------------------------------------------------------------- mailbox


def test_mailbox_rejects_nonpositive_capacity() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Mailbox[int](0)


def test_try_send_drops_and_counts_when_full() -> None:
    async def main() -> None:
        box = Mailbox[int](2)
        assert box.try_send(1) and box.try_send(2)
        assert not box.try_send(3)
        assert not box.try_send(4)
        assert (box.accepted, box.dropped, len(box)) == (2, 2, 2)
        assert [await box.receive(), await box.receive()] == [1, 2]

    run(main)


def test_send_waits_while_full_then_fifo() -> None:
    async def main() -> None:
        box = Mailbox[str](1)
        await box.send("first")
        delivered: list[str] = []

        async def sender(item: str) -> None:
            await box.send(item)
            delivered.append(item)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender, "second")
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(sender, "third")
            await trio.testing.wait_all_tasks_blocked()
            assert delivered == []  # both blocked: backpressure, no growth
            assert len(box) == 1
            # The freed place is reserved for the oldest waiting sender: try_send
            # cannot jump the queue.
            assert await box.receive() == "first"
            assert not box.try_send("intruder")
            received = [await box.receive(), await box.receive()]
        assert received == ["second", "third"]
        assert box.high_water == 1
        assert box.dropped == 1

    run(main)


def test_many_senders_never_exceed_capacity() -> None:
    async def main() -> None:
        box = Mailbox[int](3)
        got: list[int] = []
        async with trio.open_nursery() as nursery:
            for sender_id in range(5):

                async def produce(base: int = sender_id * 100) -> None:
                    for i in range(50):
                        await box.send(base + i)

                nursery.start_soon(produce)
            for _ in range(250):
                got.append(await box.receive())
        assert box.high_water <= 3
        assert sorted(got) == sorted(s * 100 + i for s in range(5) for i in range(50))
        for s in range(5):  # per-sender order is kept
            mine = [x for x in got if x // 100 == s]
            assert mine == sorted(mine)

    run(main)


def test_close_wakes_receiver_and_senders() -> None:
    async def main() -> None:
        box = Mailbox[int](1)
        box.try_send(1)
        outcomes: list[str] = []

        async def blocked_sender() -> None:
            try:
                await box.send(2)
            except MailboxClosed:
                outcomes.append("sender closed")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(blocked_sender)
            await trio.testing.wait_all_tasks_blocked()
            box.close()
        assert outcomes == ["sender closed"]
        with pytest.raises(MailboxClosed):
            await box.receive()
        assert box.drain() == [1]
        assert not box.try_send(3)

        empty = Mailbox[int](1)

        async def blocked_receiver() -> None:
            with pytest.raises(MailboxClosed):
                await empty.receive()
            outcomes.append("receiver closed")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(blocked_receiver)
            await trio.testing.wait_all_tasks_blocked()
            empty.close()
        assert outcomes[-1] == "receiver closed"

    run(main)


def test_busy_receiver_still_yields_to_others() -> None:
    async def main() -> None:
        box = Mailbox[int](10 * RECEIVES_PER_SCHEDULE_POINT)
        for i in range(10 * RECEIVES_PER_SCHEDULE_POINT):
            box.try_send(i)
        progressed_at: list[int] = []
        received = 0

        async def other() -> None:
            progressed_at.append(received)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(other)
            for _ in range(10 * RECEIVES_PER_SCHEDULE_POINT):
                await box.receive()
                received += 1
        # trio runs each scheduling batch in random order, so the other task gets its
        # turn at the first or second schedule point, long before the backlog is done.
        assert progressed_at and progressed_at[0] < 2 * RECEIVES_PER_SCHEDULE_POINT

    run(main)


# ----------------------------------------------------------------- actor


def test_call_replies_and_lifecycle_order() -> None:
    async def main() -> None:
        echo = Echo()
        async with trio.open_nursery() as nursery:
            ref = await spawn(nursery, echo, "echo")
            assert ref.running and ref.name == "echo"
            assert await ref.call("ping", timeout=1) == "ping"
            await ref.send("note")
            assert await ref.call({"k": 1}, timeout=1) == {"k": 1}
            assert await ref.call("stop", timeout=1) == "stop"
        assert echo.journal == ["on_start", "ping", "note", {"k": 1}, "stop", "on_stop"]
        assert not ref.running
        assert "not running" in repr(ref)

    run(main)


def test_actor_backpressure_and_try_send_drops() -> None:
    async def main() -> None:
        echo = Echo()
        echo.gate = trio.Event()  # handle blocks until opened
        async with trio.open_nursery() as nursery:
            ref = await spawn(nursery, echo)
            sent: list[int] = []
            await ref.send(0)  # taken by the actor, which then blocks in handle
            await trio.testing.wait_all_tasks_blocked()
            for i in range(1, 5):  # fills the 4 places
                await ref.send(i)
            assert ref.queued == 4
            assert not ref.try_send(99)
            assert ref.dropped == 1

            async def late_sender() -> None:
                await ref.send(5)
                sent.append(5)

            nursery.start_soon(late_sender)
            await trio.testing.wait_all_tasks_blocked()
            assert sent == []  # waiting for room
            echo.gate.set()
            assert await ref.call("sync", timeout=5) == "sync"
            assert sent == [5]
            echo.stop()
        assert echo.journal[1:7] == [0, 1, 2, 3, 4, 5]
        assert 99 not in echo.journal

    run(main)


def test_call_timeout_is_clear_and_actor_survives() -> None:
    async def main() -> None:
        echo = Echo()
        async with trio.open_nursery() as nursery:
            ref = await spawn(nursery, echo)
            started = trio.current_time()
            with pytest.raises(CallTimeout, match="no reply within 2"):
                await ref.call("nap", timeout=2)
            assert trio.current_time() - started == pytest.approx(2)
            # A CallTimeout is also a TimeoutError and an ActorError.
            with pytest.raises(TimeoutError):
                await ref.call("nap", timeout=1)
            # The actor still works; the late replies went nowhere.
            assert await ref.call("after", timeout=30) == "after"
            echo.stop()

    run(main)


def test_timeout_also_covers_waiting_for_room() -> None:
    async def main() -> None:
        echo = Echo()
        echo.gate = trio.Event()
        async with trio.open_nursery() as nursery:
            ref = await spawn(nursery, echo)
            await ref.send(0)
            await trio.testing.wait_all_tasks_blocked()
            for i in range(4):
                await ref.send(i)
            with pytest.raises(CallTimeout):
                await ref.call("never queued", timeout=0.5)
            echo.gate.set()
            echo.stop()
        assert "never queued" not in echo.journal

    run(main)


def test_crash_during_call_raises_at_caller_and_fails_queued_calls() -> None:
    async def main() -> None:
        echo = Echo()
        echo.gate = trio.Event()
        errors: list[BaseException] = []

        async def queued_call(ref: ActorRef[object, object]) -> None:
            try:
                await ref.call("queued", timeout=60)
            except ActorError as error:
                errors.append(error)

        with pytest.RaisesGroup(Boom):
            async with trio.open_nursery() as nursery:
                ref = await spawn(nursery, echo)

                async def crashing_call() -> None:
                    try:
                        await ref.call("boom", timeout=60)
                    except ActorCrashed as error:
                        errors.append(error)

                nursery.start_soon(crashing_call)
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(queued_call, ref)
                await ref.send("queued send")
                await trio.testing.wait_all_tasks_blocked()
                echo.gate.set()
        assert len(errors) == 2
        assert all(isinstance(e, ActorCrashed) for e in errors)
        assert isinstance(errors[0].__cause__, Boom)
        assert trio.current_time() < 60  # nobody waited for the timeout
        assert ref.discarded == 1  # the queued send was never handled
        assert echo.journal[-1] == "on_stop"  # on_stop still ran after the crash
        with pytest.raises(ActorNotRunning):
            await ref.call("after", timeout=1)
        with pytest.raises(ActorNotRunning):
            await ref.send("after")
        assert not ref.try_send("after")

    run(main)


def test_crash_in_on_start_fails_spawn() -> None:
    class BadStart(Actor[None, None]):
        async def on_start(self) -> None:
            raise Boom("no start")

    async def main() -> None:
        with pytest.RaisesGroup(Boom):
            async with trio.open_nursery() as nursery:
                await spawn(nursery, BadStart())

    run(main)


def test_stop_fails_queued_calls_with_not_running() -> None:
    async def main() -> None:
        echo = Echo()
        echo.gate = trio.Event()
        errors: list[BaseException] = []
        async with trio.open_nursery() as nursery:
            ref = await spawn(nursery, echo)
            await ref.send("first")
            await trio.testing.wait_all_tasks_blocked()

            async def caller() -> None:
                try:
                    await ref.call("late", timeout=60)
                except ActorNotRunning as error:
                    errors.append(error)

            nursery.start_soon(caller)
            await trio.testing.wait_all_tasks_blocked()
            echo.stop()
            echo.gate.set()
        assert len(errors) == 1 and "stopped" in str(errors[0])
        assert echo.journal == ["on_start", "first", "on_stop"]

    run(main)


def test_cancelled_caller_does_not_break_actor() -> None:
    async def main() -> None:
        echo = Echo()
        async with trio.open_nursery() as nursery:
            ref = await spawn(nursery, echo)
            with trio.move_on_after(1):
                await ref.call("nap", timeout=100)
            assert await ref.call("still here", timeout=100) == "still here"
            echo.stop()

    run(main)


def test_killed_actor_fails_the_pending_call() -> None:
    async def main() -> None:
        echo = Echo()
        errors: list[BaseException] = []
        async with trio.open_nursery() as outer:
            actor_scope = trio.CancelScope()

            async def host(*, task_status: TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
                with actor_scope:
                    async with trio.open_nursery() as inner:
                        task_status.started(await spawn(inner, echo))

            ref: ActorRef[object, object] = await outer.start(host)

            async def caller() -> None:
                try:
                    await ref.call("nap", timeout=100)
                except ActorNotRunning as error:
                    errors.append(error)

            outer.start_soon(caller)
            await trio.testing.wait_all_tasks_blocked()
            actor_scope.cancel()
        assert len(errors) == 1 and "killed" in str(errors[0])
        assert "on_stop" not in echo.journal  # a kill skips the graceful hook

    run(main)


def test_base_actor_without_handle_crashes_clearly() -> None:
    async def main() -> None:
        with pytest.RaisesGroup(NotImplementedError):
            async with trio.open_nursery() as nursery:
                ref = await spawn(nursery, Actor[int, int]())
                with pytest.raises(ActorCrashed):
                    await ref.call(1, timeout=1)

    run(main)


def test_ref_of_unstarted_actor() -> None:
    with pytest.raises(ActorNotRunning):
        _ = Echo().ref
    Echo().stop()  # harmless before start



def test_wake_at_runs_on_timeout_between_messages() -> None:
    """An actor's timer fires when no message arrives, and messages still get through."""

    class Ticker(Actor[str, int]):
        def __init__(self) -> None:
            self.ticks = 0
            self.next = 0.01

        def wake_at(self) -> float | None:
            return self.next

        async def on_timeout(self) -> None:
            self.ticks += 1
            self.next = trio.current_time() + 0.01

        async def handle(self, message: str) -> int:
            return self.ticks

    async def test() -> None:
        async with trio.open_nursery() as nursery:
            ticker = Ticker()
            ref = await spawn(nursery, ticker)
            await trio.sleep(0.105)
            assert await ref.call("ticks?", timeout=1.0) == 10
            ticker.stop()

    run(test)


def test_messages_queued_before_an_overdue_timeout_are_handled_first() -> None:
    """A starved actor reads what already arrived (a probe's ack) before its overdue timer
    fires, but messages that arrive after that cannot hold the timer off."""

    class Prober(Actor[str, None]):
        mailbox_capacity = 64

        def __init__(self) -> None:
            self.log: list[str] = []
            self.deadline: float | None = 1.0

        def wake_at(self) -> float | None:
            return self.deadline

        async def on_timeout(self) -> None:
            self.log.append("timeout")
            self.deadline = None

        async def handle(self, message: str) -> None:
            self.log.append(message)
            if message == "work":
                await trio.sleep(2.0)  # busy past the deadline (1.0)
            elif message == "ack-2":
                ref.try_send("later")  # arrives after the timeout came due and was deferred

    ref: ActorRef[str, None]

    async def test() -> None:
        nonlocal ref
        async with trio.open_nursery() as nursery:
            prober = Prober()
            ref = await spawn(nursery, prober)
            assert ref.try_send("work")
            await trio.sleep(0.5)
            assert ref.try_send("ack-1")
            assert ref.try_send("ack-2")
            await trio.sleep(3.0)
            assert prober.log == ["work", "ack-1", "ack-2", "timeout", "later"]
            prober.stop()

    run(test)
