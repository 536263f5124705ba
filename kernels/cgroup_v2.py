"""Finds a cgroup v2 subtree this process may manage and uses it to cap, freeze and kill task groups.

Where the kernel's own controllers are available (cgroup v2 with `cpu` and `memory`
delegated to us), they enforce the volunteer's limits more exactly than signals and
rlimits can: `cpu.max` is a kernel token bucket, `memory.max` covers a whole process
tree, `cgroup.freeze` pauses it and `cgroup.kill` kills every process in it, including
ones that left the process group. Detection never raises: it returns None and the
reason, and the task runner falls back to signals and rlimits.

Layout: <our cgroup>/ileices-<pid>/ holds the aggregate limits; one leaf per task below.
This process is never moved, so detection fails (cleanly) where our own cgroup holds
processes and is not the root (the kernel's no-internal-processes rule).
"""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import dataclass
from pathlib import Path

REQUIRED_CONTROLLERS = ("cpu", "memory")
DEFAULT_PERIOD_US = 100_000


def _cgroup2_mount(mountinfo: Path) -> Path | None:
    try:
        lines = mountinfo.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        left, sep, right = line.partition(" - ")
        if sep and right.split()[:1] == ["cgroup2"]:
            return Path(left.split()[4])
    return None


def _own_cgroup(proc_cgroup: Path) -> str | None:
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("0::"):
            return line[3:]
    return None


@dataclass
class CgroupV2:
    """The group this runner owns; every method is a small file write the kernel acts on."""

    group: Path

    def set_cpu_cores(self, cores: float | None, period_us: int = DEFAULT_PERIOD_US) -> None:
        """Cap the whole group at `cores` cores' worth of CPU time (None lifts the cap)."""
        value = "max" if cores is None else str(max(1000, round(cores * period_us)))
        (self.group / "cpu.max").write_text(f"{value} {period_us}\n")

    def set_memory_bytes(self, limit: int | None, where: Path | None = None) -> None:
        target = where or self.group
        (target / "memory.max").write_text("max\n" if limit is None else f"{limit}\n")
        swap = target / "memory.swap.max"
        if limit is not None and swap.exists():  # a memory cap that may spill into swap is none
            swap.write_text("0\n")

    def create_task_group(self, name: str, memory_bytes: int | None) -> Path:
        leaf = self.group / name
        leaf.mkdir()
        if memory_bytes is not None:
            self.set_memory_bytes(memory_bytes, leaf)
        return leaf

    def freeze(self, frozen: bool) -> None:
        (self.group / "cgroup.freeze").write_text("1\n" if frozen else "0\n")

    @staticmethod
    def pids(leaf: Path) -> list[int]:
        try:
            return [int(line) for line in (leaf / "cgroup.procs").read_text().split()]
        except (OSError, ValueError):
            return []

    def kill(self, leaf: Path) -> None:
        """Kill every process in `leaf`: cgroup.kill where the kernel has it (5.14+), else each pid."""
        kill_file = leaf / "cgroup.kill"
        if kill_file.exists():
            with contextlib.suppress(OSError):
                kill_file.write_text("1\n")
                return
        for pid in self.pids(leaf):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    @staticmethod
    def oom_kills(leaf: Path) -> int:
        try:
            for line in (leaf / "memory.events").read_text().splitlines():
                name, _, value = line.partition(" ")
                if name == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            return 0
        return 0

    @staticmethod
    def cpu_seconds(leaf: Path) -> float | None:
        try:
            for line in (leaf / "cpu.stat").read_text().splitlines():
                name, _, value = line.partition(" ")
                if name == "usage_usec":
                    return int(value) / 1e6
        except (OSError, ValueError):
            return None
        return None

    @staticmethod
    def remove_task_group(leaf: Path) -> None:
        with contextlib.suppress(OSError):
            leaf.rmdir()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.group.rmdir()


def detect_cgroup_v2(
    *,
    mountinfo: Path = Path("/proc/self/mountinfo"),
    proc_cgroup: Path = Path("/proc/self/cgroup"),
    name: str | None = None,
) -> tuple[CgroupV2 | None, str]:
    """Create our group if cgroup v2 with cpu+memory is delegated to us; else None and why."""
    mount = _cgroup2_mount(mountinfo)
    if mount is None:
        return None, "no cgroup v2 filesystem is mounted"
    own = _own_cgroup(proc_cgroup)
    if own is None:
        return None, "this process is not in a cgroup v2 hierarchy"
    base = mount / own.lstrip("/")
    try:
        available = (base / "cgroup.controllers").read_text().split()
    except OSError as error:
        return None, f"cannot read {base}/cgroup.controllers: {error}"
    missing = [c for c in REQUIRED_CONTROLLERS if c not in available]
    if missing:
        return None, f"cgroup v2 at {base} lacks controllers: {', '.join(missing)}"
    enable = " ".join(f"+{c}" for c in REQUIRED_CONTROLLERS)
    try:
        enabled = (base / "cgroup.subtree_control").read_text().split()
        if any(c not in enabled for c in REQUIRED_CONTROLLERS):
            (base / "cgroup.subtree_control").write_text(enable + "\n")
        group = base / (name or f"ileices-{os.getpid()}")
        group.mkdir(exist_ok=True)
        (group / "cgroup.subtree_control").write_text(enable + "\n")
    except OSError as error:
        return None, f"cgroup v2 at {base} is not writable for us: {error}"
    return CgroupV2(group), f"cgroup v2 at {group}"
