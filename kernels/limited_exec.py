"""Exec shim: applies a task's limits (memory, CPU affinity, cgroup, parent-death) to itself, then execs it.

The task runner spawns every task through this file with `posix_spawn` instead of a
`preexec_fn`, because code run between fork and exec in a multi-threaded parent (the
runner's supervisor thread, trio's worker threads) can deadlock; a fresh interpreter
that applies the limits to itself and then replaces itself with the task has no such
hazard. It imports only the standard library and runs with `python -I -S`.

Usage: python -I -S limited_exec.py [--data-bytes N] [--cpus 0,1] [--cgroup DIR]
                                    [--cwd DIR] [--parent-pid PID] -- COMMAND [ARGS...]
"""

from __future__ import annotations

import os
import signal
import sys

EXEC_FAILED_STATUS = 127
SHIM_MARKER = "ileices-limited-exec:"
_PR_SET_PDEATHSIG = 1


def _fail(message: str) -> None:
    sys.stderr.write(f"{SHIM_MARKER} {message}\n")
    sys.stderr.flush()
    os._exit(EXEC_FAILED_STATUS)


def _die_with_parent(parent_pid: int) -> None:
    """Linux: get SIGKILL when the runner's spawning thread dies, so no task outlives the node."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
        _fail(f"prctl(PR_SET_PDEATHSIG) failed: errno {ctypes.get_errno()}")
    if os.getppid() != parent_pid:  # the parent died before the prctl took effect
        os._exit(EXEC_FAILED_STATUS)


def _limit_memory(limit: int) -> None:
    import resource

    # Linux counts brk and private anonymous mmaps in RLIMIT_DATA (since 4.7), which is
    # what "memory" means for a task; elsewhere only RLIMIT_AS is enforced for mmap.
    kind = resource.RLIMIT_DATA if sys.platform.startswith("linux") else resource.RLIMIT_AS
    try:
        resource.setrlimit(kind, (limit, limit))
    except (ValueError, OSError) as error:
        _fail(f"cannot set memory limit {limit}: {error}")


def main(arguments: list[str]) -> None:
    options: dict[str, str] = {}
    index = 0
    while index < len(arguments) and arguments[index] != "--":
        flag = arguments[index]
        if flag not in ("--data-bytes", "--cpus", "--cgroup", "--cwd", "--parent-pid"):
            _fail(f"unknown option {flag!r}")
        if index + 1 >= len(arguments):
            _fail(f"option {flag} needs a value")
        options[flag] = arguments[index + 1]
        index += 2
    command = arguments[index + 1 :]
    if not command:
        _fail("no command given after --")
    if "--parent-pid" in options:
        _die_with_parent(int(options["--parent-pid"]))
    if "--cgroup" in options:
        try:
            with open(os.path.join(options["--cgroup"], "cgroup.procs"), "w") as procs:
                procs.write(str(os.getpid()))
        except OSError as error:
            _fail(f"cannot join cgroup {options['--cgroup']}: {error}")
    if "--cpus" in options:
        try:
            os.sched_setaffinity(0, {int(cpu) for cpu in options["--cpus"].split(",")})
        except (OSError, ValueError, AttributeError) as error:
            _fail(f"cannot set CPU affinity {options['--cpus']}: {error}")
    if "--data-bytes" in options:
        _limit_memory(int(options["--data-bytes"]))
    if "--cwd" in options:
        try:
            os.chdir(options["--cwd"])
        except OSError as error:
            _fail(f"cannot enter working directory {options['--cwd']}: {error}")
    try:
        os.execvp(command[0], command)
    except OSError as error:
        _fail(f"cannot execute {command[0]!r}: {error}")


if __name__ == "__main__":
    main(sys.argv[1:])
