"""OTP-style supervisors on trio: restart crashed children by strategy, within limits.

Semantics follow Erlang/OTP's `supervisor` behaviour:

- Children start in list order and are shut down in reverse order; each shutdown waits
  up to the child's `shutdown` seconds for a graceful stop (`on_stop`), then cancels it.
- Strategies: `one_for_one` restarts only the child that exited; `rest_for_one` also
  restarts the children started after it; `one_for_all` restarts every child. Siblings
  are shut down in reverse order before the group is started again in order.
- Restart types: `permanent` is always restarted, `transient` only after a crash,
  `temporary` never (and is dropped, also when a sibling's restart shuts it down).
- Restart intensity: more than `intensity` restarts within `period` seconds make the
  supervisor shut all its children down and fail with `RestartIntensityExceeded`; its
  parent sees that as a crash of one child and applies its own strategy (escalation).

Where this differs from OTP, on purpose:

- A child whose `on_start` crashes counts as a crash, also when the supervisor itself is
  starting (OTP fails the whole supervisor start at once); a failing child still
  escalates once the intensity is exceeded, but a transient start failure is retried.
- `terminate_child` also deletes the child spec (OTP's terminate + delete_child).
- Group restarts skip children that are meant to be down (a transient child that exited
  normally); OTP would start those again.

The intensity clock defaults to `trio.current_time`, so `trio.testing.MockClock` makes
restart-intensity tests deterministic. Crashes are logged with their traceback on the
`actors.supervisor` logger and counted per child (`which_children`).
"""

from __future__ import annotations

import enum
import logging
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

import trio

from actors.actor import Actor, ActorRef, run_actor

if TYPE_CHECKING:
    # trio re-exports TaskStatus without marking it, so mypy only finds it here.
    from trio._core._run import TaskStatus

log = logging.getLogger(__name__)


class Strategy(enum.StrEnum):
    ONE_FOR_ONE = "one_for_one"
    REST_FOR_ONE = "rest_for_one"
    ONE_FOR_ALL = "one_for_all"


class Restart(enum.StrEnum):
    PERMANENT = "permanent"
    TRANSIENT = "transient"
    TEMPORARY = "temporary"


class SupervisorError(Exception):
    """Base of the supervisor's own errors."""


class RestartIntensityExceeded(SupervisorError):
    """Too many restarts in too short a time: the supervisor gave up and stopped."""


class ChildStartError(SupervisorError):
    """`start_child` could not start the child; `__cause__` says why."""


class SupervisorNotRunning(SupervisorError):
    """The supervisor is not (or no longer) running, so it cannot take the request."""


Child: TypeAlias = "Actor[Any, Any] | Supervisor"


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """How to start one child. `start` builds a fresh instance for every (re)start.

    `shutdown` is how many seconds a graceful stop may take before the child is
    cancelled; None waits as long as it takes (OTP's infinity, meant for supervisors).
    """

    id: str
    start: Callable[[], Child]
    restart: Restart = Restart.PERMANENT
    shutdown: float | None = 5.0

    def __post_init__(self) -> None:
        if not self.id:
            raise ValueError("a child spec needs a non-empty id")
        if self.shutdown is not None and not self.shutdown >= 0:
            raise ValueError(f"child {self.id!r}: shutdown must be >= 0 or None")


@dataclass(frozen=True, slots=True)
class ChildStatus:
    """One child, as `which_children` reports it."""

    id: str
    kind: Literal["worker", "supervisor", "unknown"]
    restart: Restart
    running: bool
    starts: int
    restarts: int
    crashes: int
    shutdown_errors: int
    kills: int
    last_error: str | None


class _Incarnation:
    """One run of a child: the instance, its cancel scope, and how it ended."""

    __slots__ = ("done", "error", "killed", "proc", "scope", "started", "stopping")

    def __init__(self, proc: Child) -> None:
        self.proc = proc
        self.scope = trio.CancelScope()
        self.done = trio.Event()
        self.started = False
        self.stopping = False
        self.killed = False
        self.error: Exception | None = None

    def request_stop(self) -> None:
        if isinstance(self.proc, Supervisor):
            self.proc.request_stop()
        else:
            self.proc.stop()


class _ChildSlot:
    """A child spec plus what the supervisor knows about it across incarnations."""

    __slots__ = (
        "crashes",
        "current",
        "kills",
        "kind",
        "last_error",
        "ref",
        "shutdown_errors",
        "spec",
        "starts",
        "wanted",
    )

    def __init__(self, spec: ChildSpec) -> None:
        self.spec = spec
        self.ref: ActorRef[Any, Any] = ActorRef(spec.id)
        self.current: _Incarnation | None = None
        self.kind: Literal["worker", "supervisor", "unknown"] = "unknown"
        self.wanted = False
        self.starts = 0
        self.crashes = 0
        self.shutdown_errors = 0
        self.kills = 0
        self.last_error: str | None = None

    def status(self) -> ChildStatus:
        return ChildStatus(
            id=self.spec.id,
            kind=self.kind,
            restart=self.spec.restart,
            running=(self.current is not None and self.current.started and not self.current.done.is_set()),
            starts=self.starts,
            restarts=max(0, self.starts - 1),
            crashes=self.crashes,
            shutdown_errors=self.shutdown_errors,
            kills=self.kills,
            last_error=self.last_error,
        )


class _StartReport:
    """Forwards `started()` to the real task status and remembers that it happened."""

    __slots__ = ("_status", "called")

    def __init__(self, status: TaskStatus[Exception | None]) -> None:
        self._status = status
        self.called = False

    def started(self, value: None = None) -> None:
        self.called = True
        self._status.started(None)


class _Escalate(Exception):
    """Internal: the restart intensity was exceeded while handling an exit."""


_STOP = object()


class Supervisor:
    """Starts, watches and restarts its children; itself a child of another supervisor.

    Run it with `await sup.run()` (or `nursery.start(sup.run)`), stop it gracefully
    with `request_stop()` / `await sup.shutdown()`. `run` returns after a requested stop
    and raises RestartIntensityExceeded when it gave up.
    """

    def __init__(
        self,
        children: Sequence[ChildSpec] = (),
        *,
        strategy: Strategy = Strategy.ONE_FOR_ONE,
        intensity: int = 1,
        period: float = 5.0,
        name: str = "supervisor",
        clock: Callable[[], float] | None = None,
    ) -> None:
        if intensity < 0:
            raise ValueError(f"intensity must be >= 0, got {intensity}")
        if not period > 0:
            raise ValueError(f"period must be > 0, got {period}")
        ids = [spec.id for spec in children]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate child ids in {ids}")
        self.name = name
        self.strategy = Strategy(strategy)
        self.intensity = intensity
        self.period = period
        self._clock = clock or trio.current_time
        self._children: list[_ChildSlot] = [_ChildSlot(spec) for spec in children]
        self._restart_times: deque[float] = deque()
        self.total_restarts = 0
        # At most one exit per incarnation plus one stop request can be queued, so
        # this never grows beyond the number of children (+1) in practice.
        self._events_in, self._events_out = trio.open_memory_channel[object](math.inf)
        self._lock = trio.Lock()
        self._nursery: trio.Nursery | None = None
        self._running = False
        self._finished = trio.Event()

    def __repr__(self) -> str:
        return f"<Supervisor {self.name!r} {self.strategy} {len(self._children)} children>"

    # ----------------------------------------------------------------- queries

    @property
    def running(self) -> bool:
        return self._running

    def which_children(self) -> list[ChildStatus]:
        """Every child in start order, with its counters."""
        return [slot.status() for slot in self._children]

    def restart_count(self, child_id: str) -> int:
        return self._slot(child_id).status().restarts

    def ref(self, child_id: str) -> ActorRef[Any, Any]:
        """The stable ref of a worker child (valid across its restarts)."""
        return self._slot(child_id).ref

    def child(self, child_id: str) -> Child | None:
        """The child's current instance (e.g. a nested Supervisor), None while down."""
        current = self._slot(child_id).current
        return None if current is None else current.proc

    def _slot(self, child_id: str) -> _ChildSlot:
        for slot in self._children:
            if slot.spec.id == child_id:
                return slot
        raise KeyError(f"supervisor {self.name!r} has no child {child_id!r}")

    # ----------------------------------------------------------------- lifecycle

    async def run(self, *, task_status: TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the children in order, then supervise them until stopped or failed."""
        if self._nursery is not None:
            raise SupervisorError(f"supervisor {self.name!r} can only run once")
        failure: RestartIntensityExceeded | None = None
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._running = True
                failure = await self._supervise(task_status)
        finally:
            self._running = False
            self._finished.set()
        if failure is not None:
            raise failure

    def request_stop(self) -> None:
        """Ask for an orderly shutdown (children stopped in reverse order)."""
        self._events_in.send_nowait(_STOP)

    async def shutdown(self) -> None:
        """Request an orderly shutdown and wait until `run` has finished."""
        self.request_stop()
        await self._finished.wait()

    async def start_child(self, spec: ChildSpec) -> None:
        """Add `spec` as the last child and start it (OTP start_child).

        If it crashes in `on_start`, ChildStartError is raised and the spec is not kept.
        """
        async with self._lock:
            if not self._running:
                raise SupervisorNotRunning(f"supervisor {self.name!r} is not running")
            if any(slot.spec.id == spec.id for slot in self._children):
                raise ValueError(f"supervisor {self.name!r} already has child {spec.id!r}")
            slot = _ChildSlot(spec)
            self._children.append(slot)
            error = await self._start(slot)
            if error is not None:
                self._children.remove(slot)
                self._log_crash(slot, error, "start")
                raise ChildStartError(f"child {spec.id!r} failed to start") from error
            slot.wanted = True

    async def terminate_child(self, child_id: str) -> None:
        """Shut the child down (its shutdown timeout applies) and forget its spec."""
        async with self._lock:
            if not self._running:
                raise SupervisorNotRunning(f"supervisor {self.name!r} is not running")
            slot = self._slot(child_id)
            slot.wanted = False
            await self._terminate(slot)
            self._children.remove(slot)

    # ----------------------------------------------------------------- internals

    async def _supervise(self, task_status: TaskStatus[Any]) -> RestartIntensityExceeded | None:
        try:
            async with self._lock:
                await self._start_initial()
        except _Escalate as escalate:
            return await self._give_up(escalate)
        task_status.started()
        while True:
            event = await self._events_out.receive()
            if event is _STOP:
                async with self._lock:
                    self._running = False
                    await self._terminate_all()
                return None
            assert isinstance(event, _Incarnation)
            try:
                async with self._lock:
                    await self._on_exit(event)
            except _Escalate as escalate:
                return await self._give_up(escalate)

    async def _give_up(self, escalate: _Escalate) -> RestartIntensityExceeded:
        log.error(
            "supervisor %r: %s; shutting down all children and escalating",
            self.name,
            escalate,
        )
        async with self._lock:
            self._running = False
            await self._terminate_all()
        return RestartIntensityExceeded(f"supervisor {self.name!r}: {escalate}")

    async def _start_initial(self) -> None:
        for slot in list(self._children):
            if slot not in self._children or slot.current is not None:
                continue  # dropped or already started by a group restart meanwhile
            slot.wanted = True
            error = await self._start(slot)
            if error is not None:
                self._note_exit(slot, error, "start")
                await self._after_exit(slot, error)

    async def _start(self, slot: _ChildSlot) -> Exception | None:
        """Start one incarnation; returns the exception if it failed to start."""
        assert self._nursery is not None
        try:
            proc = slot.spec.start()
        except Exception as factory_error:
            return factory_error
        inc = _Incarnation(proc)
        slot.current = inc
        slot.kind = "supervisor" if isinstance(proc, Supervisor) else "worker"
        error: Exception | None = await self._nursery.start(self._child_task, slot, inc)
        if error is not None:
            slot.current = None
            return error
        inc.started = True
        slot.starts += 1
        return None

    async def _child_task(
        self,
        slot: _ChildSlot,
        inc: _Incarnation,
        *,
        task_status: TaskStatus[Exception | None],
    ) -> None:
        """Runs one incarnation and reports how it ended; never lets a crash escape."""
        report = _StartReport(task_status)
        with inc.scope:
            try:
                if isinstance(inc.proc, Supervisor):
                    await inc.proc.run(task_status=report)
                else:
                    await run_actor(inc.proc, slot.ref, task_status=report)
            except Exception as error:
                inc.error = error
        inc.killed = inc.scope.cancelled_caught
        inc.done.set()
        if not report.called:
            task_status.started(inc.error or RuntimeError("cancelled while starting"))
        elif not inc.stopping:
            self._events_in.send_nowait(inc)

    async def _on_exit(self, inc: _Incarnation) -> None:
        slot = next((s for s in self._children if s.current is inc), None)
        if slot is None or inc.stopping:
            return  # a stale report about an incarnation we already dealt with
        slot.current = None
        self._note_exit(slot, inc.error, "run")
        await self._after_exit(slot, inc.error)

    def _note_exit(self, slot: _ChildSlot, error: Exception | None, phase: str) -> None:
        if error is None:
            log.info("supervisor %r: child %r exited normally", self.name, slot.spec.id)
            return
        slot.crashes += 1
        self._log_crash(slot, error, phase)

    def _log_crash(self, slot: _ChildSlot, error: Exception, phase: str) -> None:
        slot.last_error = f"{type(error).__name__}: {error}"
        where = "while starting" if phase == "start" else "while running"
        log.error(
            "supervisor %r: child %r (%s) crashed %s",
            self.name,
            slot.spec.id,
            slot.spec.restart,
            where,
            exc_info=(type(error), error, error.__traceback__),
        )

    def _wants_restart(self, slot: _ChildSlot, error: Exception | None) -> bool:
        restart = slot.spec.restart
        return restart is Restart.PERMANENT or (restart is Restart.TRANSIENT and error is not None)

    async def _after_exit(self, slot: _ChildSlot, error: Exception | None) -> None:
        if not self._wants_restart(slot, error):
            slot.wanted = False
            if slot.spec.restart is Restart.TEMPORARY:
                self._children.remove(slot)
            return
        await self._restart(slot)

    def _count_restart(self) -> None:
        now = self._clock()
        times = self._restart_times
        times.append(now)
        while times and now - times[0] >= self.period:
            times.popleft()
        if len(times) > self.intensity:
            raise _Escalate(
                f"restart intensity exceeded ({len(times)} restarts within "
                f"{self.period} s, at most {self.intensity} allowed)"
            )
        self.total_restarts += 1

    def _restart_group(self, failed: _ChildSlot) -> list[_ChildSlot]:
        if self.strategy is Strategy.ONE_FOR_ONE:
            return [failed]
        if self.strategy is Strategy.REST_FOR_ONE:
            at = self._children.index(failed)
            return [failed] + [s for s in self._children[at + 1 :] if s.wanted]
        return [s for s in self._children if s.wanted or s is failed]

    async def _restart(self, failed: _ChildSlot) -> None:
        """Restart `failed` and its strategy group; a start failure restarts again."""
        pending: _ChildSlot | None = failed
        while pending is not None:
            self._count_restart()
            group = self._restart_group(pending)
            for slot in reversed(group):
                if slot is not pending:
                    await self._terminate(slot)
            for slot in group:
                if slot is not pending and slot.spec.restart is Restart.TEMPORARY:
                    slot.wanted = False
                    self._children.remove(slot)
            pending = None
            for slot in group:
                if slot not in self._children or slot.current is not None:
                    continue
                slot.wanted = True
                error = await self._start(slot)
                if error is not None:
                    self._note_exit(slot, error, "start")
                    if self._wants_restart(slot, error):
                        pending = slot
                        break
                    slot.wanted = False
                    if slot.spec.restart is Restart.TEMPORARY:
                        self._children.remove(slot)

    async def _terminate(self, slot: _ChildSlot) -> None:
        """Graceful stop within the child's shutdown time, then cancellation."""
        inc = slot.current
        if inc is None:
            return
        if inc.done.is_set():
            # It exited on its own before we got to it; its queued report is now stale.
            inc.stopping = True
            slot.current = None
            self._note_exit(slot, inc.error, "run")
            return
        inc.stopping = True
        inc.request_stop()
        timeout = slot.spec.shutdown
        with trio.move_on_after(math.inf if timeout is None else timeout):
            await inc.done.wait()
        if not inc.done.is_set():
            log.warning(
                "supervisor %r: child %r did not stop within %s s; cancelling it",
                self.name,
                slot.spec.id,
                timeout,
            )
            inc.scope.cancel()
            await inc.done.wait()
        if inc.killed:
            slot.kills += 1
        if inc.error is not None:
            slot.shutdown_errors += 1
            slot.last_error = f"{type(inc.error).__name__}: {inc.error}"
            log.error(
                "supervisor %r: child %r failed while shutting down",
                self.name,
                slot.spec.id,
                exc_info=(type(inc.error), inc.error, inc.error.__traceback__),
            )
        slot.current = None

    async def _terminate_all(self) -> None:
        for slot in reversed(list(self._children)):
            await self._terminate(slot)
