"""Finds, signals and meters the CPU time of one task's processes: its process group and descendants.

A task may fork; the volunteer's CPU limit and the kill switch must reach every process
it made. The process group (the task is a session leader) reaches everything that did
not call setsid; walking the parent links reaches those that did while their parent
lives. CPU time is metered per process so that a throttling loop can charge it.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterable

import psutil


def descendants(root_pid: int) -> list[psutil.Process]:
    """Live descendants of `root_pid` by parent links (empty when it is gone)."""
    try:
        return list(psutil.Process(root_pid).children(recursive=True))
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return []


def signal_tree(pgid: int, members: Iterable[psutil.Process], signum: int) -> None:
    """Send `signum` to the whole process group and to each known member (escapees included).

    `pgid` must be a task's unreaped leader: while it is unreaped its id cannot be reused,
    so the signal cannot reach a stranger. Members are psutil handles, which check a
    process's identity (start time) before signalling, for the same reason.
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)
    for process in members:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            process.send_signal(signum)


def kill_tree(pgid: int, members: Iterable[psutil.Process]) -> None:
    signal_tree(pgid, [*members, *descendants(pgid)], signal.SIGKILL)


def is_alive(process: psutil.Process) -> bool:
    """Running or stopped, not a zombie and not gone: what "the process still exists" means to a user."""
    try:
        return bool(process.is_running()) and process.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


class TreeCpuMeter:
    """Charges the CPU time a task's processes used since the last reading.

    Each process's own time counts while it lives. When a child exits, the kernel adds
    its total (own plus its reaped children's) to its parent's children-time; the part of
    that which was already charged while the child lived is kept in `_already_charged_pool`
    and not charged twice, so short-lived helpers are charged once and only once.
    """

    def __init__(self, root_pid: int) -> None:
        self.root_pid = root_pid
        self._processes: dict[int, psutil.Process] = {}
        self._last: dict[int, tuple[float, float]] = {}  # pid -> (own, reaped children)
        self._already_charged_pool = 0.0
        self.charged_seconds = 0.0

    @property
    def members(self) -> list[psutil.Process]:
        return list(self._processes.values())

    def rescan(self) -> None:
        """Pick up processes the task started since the last scan (costs one /proc walk)."""
        if self.root_pid not in self._processes:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                self._processes[self.root_pid] = psutil.Process(self.root_pid)
        for process in descendants(self.root_pid):
            self._processes.setdefault(process.pid, process)

    def sample(self) -> float:
        """Seconds of CPU used by the tree since the previous sample."""
        used = 0.0
        for pid, process in list(self._processes.items()):
            try:
                times = process.cpu_times()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                # Gone: its last reading was charged; the kernel will fold its total into
                # its parent's children-time, which must not be charged again.
                own, children = self._last.pop(pid, (0.0, 0.0))
                self._already_charged_pool += own + children
                del self._processes[pid]
                continue
            own = times.user + times.system
            children = times.children_user + times.children_system
            last_own, last_children = self._last.get(pid, (0.0, 0.0))
            used += max(0.0, own - last_own)
            children_delta = max(0.0, children - last_children)
            absorbed = min(children_delta, self._already_charged_pool)
            self._already_charged_pool -= absorbed
            used += children_delta - absorbed
            self._last[pid] = (own, children)
        self.charged_seconds += used
        return used
