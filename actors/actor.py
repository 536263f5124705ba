"""Actors on trio: a base class with lifecycle hooks, and the handle others talk to it by.

An actor owns a bounded mailbox and handles one message at a time, so its state needs no
locks. `ActorRef` is the only way in: `send` (wait for room), `try_send` (never wait, drop
and count when full) and `call` (request/reply with a deadline). A reply is handed
straight back to the parked caller task (trio's `reschedule`), not through a channel,
because that is the difference between one and several context switches per call.

A ref outlives the actor incarnations behind it: a supervisor restarts the actor with a
fresh mailbox and re-points the same ref, so holders of the ref never see a stale one.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, cast

import outcome
import trio
from trio.lowlevel import Abort, Task, current_task, reschedule, wait_task_rescheduled

from actors.mailbox import Mailbox, MailboxClosed

if TYPE_CHECKING:
    # trio re-exports TaskStatus without marking it, so mypy only finds it here. The
    # hooks below take TaskStatus[Any]: with TaskStatus[None], mypy 2.4 infers Never for
    # `await nursery.start(fn)` and rejects the call.
    from trio._core._run import TaskStatus

M = TypeVar("M")
R = TypeVar("R")

log = logging.getLogger(__name__)


class ActorError(Exception):
    """Base of every error `ActorRef` raises at a sender or caller."""


class ActorNotRunning(ActorError):
    """The actor is not running (not started yet, stopped, or between restarts)."""


class ActorCrashed(ActorError):
    """The actor crashed before replying to this call; `__cause__` is its exception."""


class CallTimeout(ActorError, TimeoutError):
    """No reply within the call's timeout. The request may still be handled later."""


class _ReplySlot(Generic[R]):
    """Where one call's reply lands: the caller task itself, parked until rescheduled.

    Whichever happens first wins: a reply, a failure, or the caller giving up (timeout
    or cancellation), after which late replies are ignored.
    """

    __slots__ = ("_open", "_task")

    def __init__(self) -> None:
        self._task: Task = current_task()
        self._open = True

    def deliver(self, reply: R) -> None:
        if self._open:
            self._open = False
            reschedule(self._task, outcome.Value(reply))

    def fail(self, error: BaseException) -> None:
        if self._open:
            self._open = False
            reschedule(self._task, outcome.Error(error))

    async def wait(self) -> R:
        def abort(_: object) -> Abort:
            self._open = False
            return Abort.SUCCEEDED

        return cast(R, await wait_task_rescheduled(abort))


_Envelope = tuple[Any, "_ReplySlot[Any] | None"]


class ActorRef(Generic[M, R]):
    """The address of an actor: stable across its restarts, cheap to copy around.

    Counters: `dropped` (try_send refused: full or not running) and `discarded`
    (accepted, but the incarnation ended before handling it).
    """

    __slots__ = ("_mailbox", "discarded", "dropped", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.dropped = 0
        self.discarded = 0
        self._mailbox: Mailbox[_Envelope] | None = None

    def __repr__(self) -> str:
        state = "running" if self._mailbox is not None else "not running"
        return f"<ActorRef {self.name!r} {state}>"

    @property
    def running(self) -> bool:
        return self._mailbox is not None

    @property
    def queued(self) -> int:
        """Messages waiting in the current incarnation's mailbox."""
        return 0 if self._mailbox is None else len(self._mailbox)

    async def send(self, message: M) -> None:
        """Deliver `message`, waiting while the mailbox is full (backpressure)."""
        mailbox = self._mailbox
        if mailbox is None:
            raise ActorNotRunning(f"actor {self.name!r} is not running")
        try:
            await mailbox.send((message, None))
        except MailboxClosed:
            raise ActorNotRunning(f"actor {self.name!r} stopped") from None

    def try_send(self, message: M) -> bool:
        """Deliver without waiting; False (counted in `dropped`) if full or not running."""
        mailbox = self._mailbox
        if mailbox is not None and mailbox.try_send((message, None)):
            return True
        self.dropped += 1
        return False

    async def call(self, message: M, timeout: float) -> R:
        """Send `message` and wait for the reply `handle` returns for it.

        The timeout covers waiting for mailbox room too. Raises CallTimeout,
        ActorCrashed (the actor crashed before replying) or ActorNotRunning.
        """
        mailbox = self._mailbox
        if mailbox is None:
            raise ActorNotRunning(f"actor {self.name!r} is not running")
        with trio.move_on_after(timeout):
            slot: _ReplySlot[R] = _ReplySlot()
            try:
                await mailbox.enqueue((message, slot))
            except MailboxClosed:
                raise ActorNotRunning(f"actor {self.name!r} stopped") from None
            return await slot.wait()
        raise CallTimeout(f"call to actor {self.name!r} got no reply within {timeout} s")

    def _attach(self, mailbox: Mailbox[_Envelope]) -> None:
        self._mailbox = mailbox

    def _detach(self, mailbox: Mailbox[_Envelope], crash: BaseException | None) -> None:
        """End an incarnation: refuse new messages and tell queued callers why."""
        if self._mailbox is mailbox:
            self._mailbox = None
        mailbox.close()
        for _message, slot in mailbox.drain():
            if slot is None:
                self.discarded += 1
            elif isinstance(crash, Exception):
                error = ActorCrashed(f"actor {self.name!r} crashed before handling the call")
                error.__cause__ = crash
                slot.fail(error)
            else:
                slot.fail(ActorNotRunning(f"actor {self.name!r} stopped before handling it"))


class Actor(Generic[M, R]):
    """Subclass and override the hooks; run with `spawn` or under a `Supervisor`.

    `handle` sees one message at a time; what it returns is the reply to `call` (and is
    discarded for `send`). An exception from any hook is a crash. Call `stop()` for a
    normal exit after the current message.
    """

    mailbox_capacity: ClassVar[int] = 1024

    _ref: ActorRef[M, R] | None = None
    _mailbox: Mailbox[_Envelope] | None = None
    _stop_requested: bool = False

    async def on_start(self) -> None:
        """Runs before the first message; a failure here is a crash at start."""

    async def handle(self, message: M) -> R:
        """Handle one message; the return value is the reply to `call`."""
        raise NotImplementedError(f"{type(self).__name__} does not handle messages")

    async def on_stop(self) -> None:
        """Runs after the last message on a normal stop and after a crash in `handle`."""

    def wake_at(self) -> float | None:
        """When (in `trio.current_time()` terms) `on_timeout` should run if no message comes.

        Like a gen_server timeout: an actor wrapping a protocol core returns the core's next
        deadline here, so timers live inside the actor's own loop instead of a stray task.
        """
        return None

    async def on_timeout(self) -> None:
        """Runs when `wake_at` passes with no message; a failure here is a crash."""

    @property
    def ref(self) -> ActorRef[M, R]:
        if self._ref is None:
            raise ActorNotRunning(f"{type(self).__name__} has not been started")
        return self._ref

    def stop(self) -> None:
        """Ask for a normal exit once the current message is done (idempotent)."""
        self._stop_requested = True
        if self._mailbox is not None:
            self._mailbox.close()


async def _serve(actor: Actor[Any, Any], mailbox: Mailbox[_Envelope]) -> None:
    handle = actor.handle
    receive = mailbox.receive
    # Messages that were already queued when a timeout came due go first: on a starved
    # machine the ack a probe waits for may sit here while its deadline passes, and
    # handling the timeout first would turn our own slowness into an accusation. Only
    # those already queued at that moment go first (`ahead`), so a steady stream of new
    # messages cannot postpone the timeout forever.
    ahead: int | None = None
    while not actor._stop_requested:
        wake_at = actor.wake_at()
        try:
            if wake_at is not None and wake_at <= trio.current_time():
                if ahead is None:
                    ahead = len(mailbox)
                if ahead > 0 and len(mailbox):
                    ahead -= 1
                    message, slot = await receive()
                else:
                    ahead = None
                    await trio.lowlevel.checkpoint()  # a schedule point, as receive() would be
                    await actor.on_timeout()
                    continue
            elif wake_at is None:
                ahead = None
                message, slot = await receive()
            else:
                ahead = None
                with trio.move_on_at(wake_at):
                    message, slot = await receive()
                    wake_at = None
                if wake_at is not None:
                    await actor.on_timeout()
                    continue
        except MailboxClosed:
            return
        if slot is None:
            await handle(message)
            continue
        try:
            reply = await handle(message)
        except Exception as crash:
            error = ActorCrashed(f"actor {actor.ref.name!r} crashed handling the call")
            error.__cause__ = crash
            slot.fail(error)
            raise
        except BaseException:
            slot.fail(ActorNotRunning(f"actor {actor.ref.name!r} was killed handling the call"))
            raise
        slot.deliver(reply)


async def run_actor(
    actor: Actor[M, R],
    ref: ActorRef[M, R],
    *,
    task_status: TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run one incarnation of `actor` behind `ref` until it stops or crashes.

    `task_status.started()` fires once `on_start` has returned, so a parent that uses
    `nursery.start` knows the actor is serving. Returns on a normal stop; raises the
    crash otherwise (the caller decides what a crash means: a supervisor restarts).
    """
    mailbox: Mailbox[_Envelope] = Mailbox(actor.mailbox_capacity)
    actor._ref = ref
    actor._mailbox = mailbox
    actor._stop_requested = False
    ref._attach(mailbox)
    try:
        await actor.on_start()
    except BaseException as failure:
        ref._detach(mailbox, failure)
        raise
    task_status.started()
    try:
        await _serve(actor, mailbox)
    except Exception as crash:
        ref._detach(mailbox, crash)
        try:
            await actor.on_stop()
        except Exception:
            log.exception("actor %r: on_stop failed while cleaning up after a crash", ref.name)
        raise
    except BaseException as killed:
        ref._detach(mailbox, killed)
        raise
    ref._detach(mailbox, None)
    await actor.on_stop()


async def spawn(nursery: trio.Nursery, actor: Actor[M, R], name: str | None = None) -> ActorRef[M, R]:
    """Start `actor` unsupervised in `nursery`; its crash propagates into the nursery."""
    ref: ActorRef[M, R] = ActorRef(name or type(actor).__name__)
    await nursery.start(run_actor, actor, ref)
    return ref
