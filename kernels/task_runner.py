"""Runs work in child processes held to the volunteer's limits: CPU, memory, hours, pause, kill switch.

A volunteer must be able to trust that Ileices uses only what they allowed, so limits
are enforced from outside the task, never by asking it to behave:

- CPU: `--cpu P` allows P/100 cores' worth in total over all tasks (`top` convention:
  `--cpu 50` is half of one core). Tasks are pinned to ceil(P/100) cores and, where
  that is more than allowed, a supervisor thread meters their CPU time and holds them
  to the limit with SIGSTOP/SIGCONT from a token bucket (capacity: one period's worth);
  where cgroup v2 with the cpu controller is delegated to us, the kernel's `cpu.max`
  does it instead.
- Memory: each task reserves bytes out of the RAM limit (the remaining budget by
  default) and its processes get that as RLIMIT_DATA (or cgroup `memory.max`).
- Hours and pause: no task starts while paused, outside the allowed hours or while a
  guardrail blocks new work; running tasks are stopped (SIGSTOP / cgroup freeze) while
  paused or outside the hours and continue afterwards.
- Kill switch: `stop_all()` SIGKILLs every task's process group and known descendants
  and waits until they are reaped (normally milliseconds; the bound is one second).

A task is its process group: when its main process ends, what it left behind is killed.
Thread-based, so a trio actor calls the quick methods directly and `wait` through
`trio.to_thread.run_sync`; the runner's one thread lives between `open()` and `close()`
(or the `with` block) and also spawns the tasks, so that they can die with it.

The thread costs nothing while no task runs: it then blocks on an event with no
timeout, woken by a start (once to spawn, once more when the task is registered), a
limits update or `close()`. While tasks run it wakes every `tick_s` to reap, meter and
throttle them and every 0.5 s to check the hours. The hours matter without tasks only
for what the runner reports and refuses, so `refusal_reasons`, `pause_reasons` and
`snapshot` check them themselves. (Before issue 13 it polled every 0.25 s forever, a
constant idle cost in every node.)
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import math
import os
import queue
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from kernels import limited_exec
from kernels.cgroup_v2 import CgroupV2, detect_cgroup_v2
from kernels.process_tree import TreeCpuMeter, is_alive, kill_tree, signal_tree
from kernels.volunteer_limits import VolunteerLimits, format_bytes

_MEMORY_ERROR_MARKERS = (
    "MemoryError",
    "Cannot allocate memory",
    "std::bad_alloc",
    "out of memory",
    "Unable to allocate",
)
_STDERR_TAIL_BYTES = 4096
_RESULTS_KEPT = 1024
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


class TaskRefused(Exception):
    """A task was not started; `reasons` says why (shown to the requester and in status)."""

    def __init__(self, reasons: Sequence[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = list(reasons)


@dataclass(frozen=True)
class TaskHandle:
    task_id: int
    name: str
    pid: int
    memory_bytes: int | None
    stdout_path: Path
    stderr_path: Path


@dataclass(frozen=True)
class TaskResult:
    task_id: int
    name: str
    pid: int
    ok: bool
    reason: str
    returncode: int | None  # None when killed by a signal
    signal_name: str | None
    wall_seconds: float
    cpu_seconds: float
    max_rss_bytes: int
    stderr_tail: str
    stdout_path: Path
    stderr_path: Path


@dataclass
class _Task:
    handle: TaskHandle
    started: float
    meter: TreeCpuMeter
    leaf: Path | None
    killed_by: str | None = None


@dataclass
class _SpawnRequest:
    argv: list[str]
    env: dict[str, str]
    stdout_path: Path
    stderr_path: Path
    future: concurrent.futures.Future[int] = field(default_factory=concurrent.futures.Future)


def choose_cores(cpu_cores: float, available: Sequence[int]) -> list[int]:
    """The ceil(limit) highest-numbered usable cores: the user's own work tends to land on core 0."""
    wanted = max(1, min(len(available), math.ceil(cpu_cores - 1e-9)))
    return sorted(available)[-wanted:]


class TaskRunner:
    """Starts, throttles, pauses and kills task processes under one set of volunteer limits."""

    def __init__(
        self,
        limits: VolunteerLimits,
        work_dir: Path,
        *,
        period_s: float = 0.1,
        tick_s: float = 0.02,
        clock: Callable[[], datetime] = datetime.now,
        use_cgroup: bool = True,
    ) -> None:
        self._limits = limits
        self._work_dir = work_dir
        self._period_s = period_s
        self._tick_s = tick_s
        self._clock = clock
        self._use_cgroup = use_cgroup
        self._lock = threading.RLock()
        self._finished = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._requests: queue.SimpleQueue[_SpawnRequest] = queue.SimpleQueue()
        self._tasks: dict[int, _Task] = {}
        self._results: dict[int, TaskResult] = {}
        self._next_id = 1
        self._pending_memory = 0  # reserved by starts that are spawning right now
        self._pause_reasons: dict[str, str] = {}
        self._blockers: list[str] = []
        self._stopped = False  # the signal state we last applied to every task
        self._tokens = 0.0
        self._last_sample = time.monotonic()
        self._next_rescan = 0.0
        self._next_hours_check = 0.0
        self._thread: threading.Thread | None = None
        self._closing = False
        self._cgroup: CgroupV2 | None = None
        self.enforcement_note = "not open"
        try:
            self._usable_cores = sorted(os.sched_getaffinity(0))
        except AttributeError:
            self._usable_cores = list(range(os.cpu_count() or 1))

    # ------------------------------------------------------------ lifecycle

    def open(self) -> TaskRunner:
        if self._thread is not None:
            raise RuntimeError("task runner is already open")
        (self._work_dir / "tasks").mkdir(parents=True, exist_ok=True)
        if self._use_cgroup:
            self._cgroup, note = detect_cgroup_v2()
            self.enforcement_note = (
                note if self._cgroup else f"signals and rlimits (cgroup v2 unusable: {note})"
            )
        else:
            self.enforcement_note = "signals and rlimits (cgroup v2 not requested)"
        self._apply_cgroup_limits()
        self._thread = threading.Thread(target=self._supervise, name="task-runner", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Kill every task and stop the supervisor thread; the runner cannot be reopened."""
        if self._thread is None:
            return
        self.stop_all()
        self._closing = True
        self._wake.set()
        self._thread.join(timeout=5)
        if self._cgroup is not None:
            self._cgroup.close()

    def __enter__(self) -> TaskRunner:
        return self.open()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def enforcement(self) -> str:
        return "cgroup-v2" if self._cgroup is not None else "signals"

    # ------------------------------------------------------------ limits, pause, blockers

    @property
    def limits(self) -> VolunteerLimits:
        return self._limits

    def update_limits(self, limits: VolunteerLimits) -> None:
        """New CPU and pause limits act at once on running tasks; memory caps on new tasks."""
        with self._lock:
            self._limits = limits
            cores = set(choose_cores(limits.cpu_cores, self._usable_cores))
            for task in self._tasks.values():
                for process in task.meter.members:
                    with contextlib.suppress(OSError):
                        os.sched_setaffinity(process.pid, cores)
            self._apply_cgroup_limits()
            self._check_hours(time.monotonic(), force=True)  # pause/resume act now, not next tick
        self._wake.set()

    def pause(self, reason: str = "user", message: str | None = None) -> None:
        """Stop every task until every pause reason is lifted (user, guardrail, ...)."""
        with self._lock:
            self._pause_reasons[reason] = message or f"paused by {reason}"
            self._apply_run_state()

    def resume(self, reason: str = "user") -> None:
        with self._lock:
            self._pause_reasons.pop(reason, None)
            self._apply_run_state()

    @property
    def pause_reasons(self) -> dict[str, str]:
        with self._lock:
            self._check_hours(time.monotonic())  # the idle supervisor does not
            return dict(self._pause_reasons)

    def block_new_work(self, reasons: Sequence[str]) -> None:
        """Guardrail hook: while `reasons` is non-empty no task starts; `[]` lifts the block."""
        with self._lock:
            self._blockers = list(reasons)

    def refusal_reasons(self, memory_bytes: int | None = None) -> list[str]:
        """Why a task asking for `memory_bytes` would be refused now (empty: it would start)."""
        with self._lock:
            self._check_hours(time.monotonic(), force=True)
            reasons = []
            if self._thread is None or self._closing:
                reasons.append("task runner is not open")
            why_not = self._limits.why_not_at(self._clock())
            if why_not:
                reasons.append(why_not)
            reasons.extend(self._pause_reasons.values())
            reasons.extend(self._blockers)
            if self._limits.cpu_percent <= 0:
                reasons.append("volunteer CPU limit is 0%")
            remaining = self._memory_remaining()
            if remaining is not None and (
                remaining <= 0 or (memory_bytes is not None and memory_bytes > remaining)
            ):
                asked = "the rest" if memory_bytes is None else format_bytes(memory_bytes)
                reasons.append(
                    f"memory budget: {format_bytes(max(0, remaining))} of "
                    f"{format_bytes(self._limits.ram_bytes or 0)} left, task asks {asked}"
                )
            return list(dict.fromkeys(reasons))  # the hours reason can arrive twice

    # ------------------------------------------------------------ tasks

    def start(
        self,
        argv: Sequence[str],
        *,
        name: str = "task",
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        memory_bytes: int | None = None,
    ) -> TaskHandle:
        """Start `argv` under the limits, or raise TaskRefused saying why it may not run now.

        `memory_bytes` is the task's reservation and cap; None takes the whole remaining
        RAM budget (no cap where the volunteer set no RAM limit).
        """
        if not argv:
            raise ValueError("argv must name a program")
        with self._lock:
            reasons = self.refusal_reasons(memory_bytes)
            if reasons:
                raise TaskRefused(reasons)
            task_id = self._next_id
            self._next_id += 1
            cap = memory_bytes if memory_bytes is not None else self._memory_remaining()
            self._pending_memory += cap or 0
            cores = choose_cores(self._limits.cpu_cores, self._usable_cores)
            leaf = None
            if self._cgroup is not None:
                leaf = self._cgroup.create_task_group(f"task-{task_id}", cap)
            stem = f"{task_id}-{_SAFE_NAME.sub('_', name)[:40]}"
            request = _SpawnRequest(
                argv=self._shim_argv(list(argv), cap, cores, leaf, cwd),
                env=self._task_env(env, len(cores)),
                stdout_path=self._work_dir / "tasks" / f"{stem}.out",
                stderr_path=self._work_dir / "tasks" / f"{stem}.err",
            )
        self._requests.put(request)
        self._wake.set()
        try:
            pid = request.future.result(timeout=10)
        except (OSError, concurrent.futures.TimeoutError) as error:
            with self._lock:
                self._pending_memory -= cap or 0
            if leaf is not None and self._cgroup is not None:
                self._cgroup.remove_task_group(leaf)
            raise TaskRefused([f"could not spawn {argv[0]!r}: {error}"]) from error
        handle = TaskHandle(task_id, name, pid, cap, request.stdout_path, request.stderr_path)
        with self._lock:
            self._pending_memory -= cap or 0
            meter = TreeCpuMeter(pid)
            meter.rescan()
            self._tasks[task_id] = _Task(handle, time.monotonic(), meter, leaf)
            if self._stopped:  # joins a stopped world: paused or out of CPU tokens
                signal_tree(pid, meter.members, signal.SIGSTOP)
        self._wake.set()  # the supervisor may have gone to sleep with no task to meter
        return handle

    def running(self) -> list[TaskHandle]:
        with self._lock:
            return [task.handle for task in self._tasks.values()]

    def result(self, task_id: int) -> TaskResult | None:
        with self._lock:
            return self._results.get(task_id)

    def wait(self, handle: TaskHandle, timeout: float | None = None) -> TaskResult | None:
        """Block until the task ends (None on timeout); from trio use `trio.to_thread.run_sync`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._finished:
            while handle.task_id not in self._results:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._finished.wait(timeout=remaining)
            return self._results[handle.task_id]

    def stop_all(self, timeout_s: float = 1.0) -> list[TaskResult]:
        """The kill switch: SIGKILL every task process and reap them; returns their results."""
        with self._lock:
            victims = list(self._tasks.values())
            for task in victims:
                task.killed_by = "stop_all"
                self._kill(task)
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                self._reap()
                pending = [t for t in victims if t.handle.task_id in self._tasks]
                leftovers = [p for t in victims for p in t.meter.members if is_alive(p)]
            if (not pending and not leftovers) or time.monotonic() >= deadline:
                break
            with self._lock:
                for task in victims:
                    self._kill(task)
            time.sleep(0.005)
        with self._lock:
            return [self._results[t.handle.task_id] for t in victims if t.handle.task_id in self._results]

    def snapshot(self) -> dict[str, Any]:
        """Live state for `status` and the dashboard (JSON-ready)."""
        with self._lock:
            now = time.monotonic()
            self._check_hours(now)  # the idle supervisor does not
            return {
                "enforcement": self.enforcement,
                "enforcement_note": self.enforcement_note,
                "limits": self._limits.to_dict(),
                "cores": choose_cores(self._limits.cpu_cores, self._usable_cores),
                "paused": bool(self._pause_reasons),
                "pause_reasons": list(self._pause_reasons.values()),
                "blocked_reasons": list(self._blockers),
                "tasks": [
                    {
                        "task_id": task.handle.task_id,
                        "name": task.handle.name,
                        "pid": task.handle.pid,
                        "running_s": now - task.started,
                        "cpu_s": task.meter.charged_seconds,
                        "memory_bytes": task.handle.memory_bytes,
                    }
                    for task in self._tasks.values()
                ],
            }

    # ------------------------------------------------------------ internals (lock held)

    def _memory_remaining(self) -> int | None:
        if self._limits.ram_bytes is None:
            return None
        reserved = self._pending_memory + sum(
            task.handle.memory_bytes or 0 for task in self._tasks.values()
        )
        return self._limits.ram_bytes - reserved

    def _shim_argv(
        self, argv: list[str], cap: int | None, cores: list[int], leaf: Path | None, cwd: Path | None
    ) -> list[str]:
        shim = [sys.executable, "-I", "-S", limited_exec.__file__]
        shim += ["--parent-pid", str(os.getpid()), "--cpus", ",".join(map(str, cores))]
        if cap is not None and leaf is None:
            shim += ["--data-bytes", str(cap)]
        if leaf is not None:
            shim += ["--cgroup", str(leaf)]
        if cwd is not None:
            shim += ["--cwd", str(cwd)]
        return [*shim, "--", *argv]

    def _task_env(self, env: Mapping[str, str] | None, cores: int) -> dict[str, str]:
        result = dict(os.environ if env is None else env)
        result["ILEICES_CPU_PERCENT"] = f"{self._limits.cpu_percent:g}"
        result["ILEICES_GPU_PERCENT"] = f"{self._limits.gpu_percent:g}"
        for threads in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            result.setdefault(threads, str(cores))  # as many BLAS threads as pinned cores
        if self._limits.gpu_percent <= 0:
            result["CUDA_VISIBLE_DEVICES"] = ""
            result["HIP_VISIBLE_DEVICES"] = ""
        return result

    def _apply_cgroup_limits(self) -> None:
        if self._cgroup is None:
            return
        try:
            self._cgroup.set_cpu_cores(self._limits.cpu_cores, round(self._period_s * 1e6))
            self._cgroup.set_memory_bytes(self._limits.ram_bytes)
        except OSError as error:  # a delegation revoked under us: fall back to signals
            self.enforcement_note = f"signals and rlimits (cgroup v2 write failed: {error})"
            self._cgroup = None

    def _kill(self, task: _Task) -> None:
        if self._cgroup is not None and task.leaf is not None:
            self._cgroup.kill(task.leaf)
        kill_tree(task.handle.pid, task.meter.members)

    def _apply_run_state(self) -> None:
        """SIGSTOP or SIGCONT every task so the applied state matches pause reasons and tokens."""
        paused = bool(self._pause_reasons)
        if self._cgroup is not None:
            if paused != self._stopped:
                with contextlib.suppress(OSError):
                    self._cgroup.freeze(paused)
                self._stopped = paused
            return
        stop = paused or self._tokens < 0 or (self._stopped and self._tokens < self._resume_at())
        if stop == self._stopped:
            return
        signum = signal.SIGSTOP if stop else signal.SIGCONT
        for task in self._tasks.values():
            signal_tree(task.handle.pid, task.meter.members, signum)
        self._stopped = stop

    def _throttled(self) -> bool:
        allowed = self._limits.cpu_cores
        return self._cgroup is None and allowed < len(
            choose_cores(allowed, self._usable_cores)
        )

    def _capacity(self) -> float:
        return self._limits.cpu_cores * self._period_s

    def _resume_at(self) -> float:
        return self._capacity() / 2

    def _meter_and_throttle(self, now: float) -> None:
        """Token bucket: credit accrues at the limit, CPU used is charged; stop when in debt."""
        elapsed = now - self._last_sample
        self._last_sample = now
        if now >= self._next_rescan:
            for task in self._tasks.values():
                task.meter.rescan()
            self._next_rescan = now + 0.25
        used = sum(task.meter.sample() for task in self._tasks.values())
        if not self._throttled():
            self._tokens = self._capacity()
        else:
            credit = self._limits.cpu_cores * elapsed - used
            self._tokens = min(self._capacity(), self._tokens + credit)
        self._apply_run_state()

    def _check_hours(self, now: float, *, force: bool = False) -> None:
        if now < self._next_hours_check and not force:
            return
        self._next_hours_check = now + 0.5
        why_not = self._limits.why_not_at(self._clock())
        if why_not:
            self._pause_reasons["limits"] = why_not
        else:
            self._pause_reasons.pop("limits", None)
        self._apply_run_state()

    def _reap(self) -> None:
        for task in list(self._tasks.values()):
            pid = task.handle.pid
            status: int | None = None
            usage: Any = None
            try:
                if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
                    continue
                task.meter.sample()
                # The unreaped leader holds its id, so the group signal reaches only the
                # task's own leftovers, which go with it.
                kill_tree(pid, task.meter.members)
                _, status, usage = os.wait4(pid, 0)
            except ChildProcessError:
                pass  # reaped by someone else: the exit status is lost
            result = self._result_of(task, status, usage)
            if self._cgroup is not None and task.leaf is not None:
                self._cgroup.remove_task_group(task.leaf)
            del self._tasks[task.handle.task_id]
            self._results[task.handle.task_id] = result
            while len(self._results) > _RESULTS_KEPT:  # a long-lived node must not grow forever
                del self._results[next(iter(self._results))]
            self._finished.notify_all()

    def _result_of(self, task: _Task, status: int | None, usage: Any) -> TaskResult:
        handle = task.handle
        tail = _read_tail(handle.stderr_path)
        returncode = -1000 if status is None else os.waitstatus_to_exitcode(status)
        signal_name = None
        if -1000 < returncode < 0:
            signal_name = signal.Signals(-returncode).name
        cpu = task.meter.charged_seconds
        max_rss = 0
        if usage is not None:
            cpu = max(cpu, usage.ru_utime + usage.ru_stime)
            max_rss = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
        ok = returncode == 0 and task.killed_by is None
        reason = self._reason(task, returncode, signal_name, tail)
        return TaskResult(
            task_id=handle.task_id,
            name=handle.name,
            pid=handle.pid,
            ok=ok,
            reason=reason,
            returncode=None if returncode < 0 else returncode,  # -1000: status unknown
            signal_name=signal_name,
            wall_seconds=time.monotonic() - task.started,
            cpu_seconds=cpu,
            max_rss_bytes=max_rss,
            stderr_tail=tail,
            stdout_path=handle.stdout_path,
            stderr_path=handle.stderr_path,
        )

    def _reason(self, task: _Task, returncode: int, signal_name: str | None, tail: str) -> str:
        if task.killed_by == "stop_all":
            return "stopped by the kill switch (stop_all)"
        if returncode == -1000:
            return "ended; its exit status was collected by another waiter"
        cap = task.handle.memory_bytes
        oom = (
            self._cgroup is not None
            and task.leaf is not None
            and self._cgroup.oom_kills(task.leaf) > 0
        )
        marker = next((m for m in _MEMORY_ERROR_MARKERS if m in tail), None)
        if returncode != 0 and cap is not None and (oom or marker):
            evidence = "killed by the kernel OOM killer" if oom else f"{marker} in its stderr"
            return f"exceeded its memory cap of {format_bytes(cap)} ({evidence})"
        if returncode == 0:
            return "completed"
        if returncode == limited_exec.EXEC_FAILED_STATUS and limited_exec.SHIM_MARKER in tail:
            line = next(ln for ln in tail.splitlines() if limited_exec.SHIM_MARKER in ln)
            return "could not start: " + line.split(limited_exec.SHIM_MARKER, 1)[1].strip()
        if signal_name is not None:
            return f"killed by {signal_name}"
        return f"exited with status {returncode}"

    # ------------------------------------------------------------ the supervisor thread

    def _spawn_pending(self) -> None:
        """Spawn from this long-lived thread: a task's parent-death signal follows its spawner."""
        while True:
            try:
                request = self._requests.get_nowait()
            except queue.Empty:
                return
            try:
                file_actions = [
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_OPEN, 1, str(request.stdout_path),
                     os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
                    (os.POSIX_SPAWN_OPEN, 2, str(request.stderr_path),
                     os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
                ]
                pid = os.posix_spawn(
                    request.argv[0],
                    request.argv,
                    request.env,
                    file_actions=file_actions,
                    setsid=True,
                    setsigdef=(signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM),
                )
            except OSError as error:
                request.future.set_exception(error)
            else:
                request.future.set_result(pid)

    def _supervise(self) -> None:
        """Meter, throttle and reap while tasks run; block, without a timeout, while none do.

        A start wakes this thread twice: to spawn (the request is queued) and once the
        task is registered (`start` sets the event after adding it to `_tasks`). The
        event is cleared before the work, so a wake-up that arrives meanwhile is kept,
        and `busy` is read under the lock `start` registers under: either this pass
        sees the new task, or the wake-up comes after the clear and the wait returns.
        """
        while not self._closing:
            self._wake.clear()  # before the work, so a wake-up during it is not lost
            self._spawn_pending()
            now = time.monotonic()
            with self._lock:
                self._reap()
                self._check_hours(now)
                self._meter_and_throttle(now)
                busy = bool(self._tasks)
            if busy:
                self._wake.wait(self._tick_s)
            else:
                self._wake.wait()
        self._spawn_pending()  # answer late requests; close() kills what they started


def _read_tail(path: Path) -> str:
    try:
        with open(path, "rb") as stream:
            stream.seek(0, os.SEEK_END)
            size = stream.tell()
            stream.seek(max(0, size - _STDERR_TAIL_BYTES))
            return stream.read().decode(errors="replace")
    except OSError:
        return ""
