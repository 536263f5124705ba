"""The task runner really enforces the volunteer's limits: CPU share, kill switch, hours, memory, pause."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import pytest

from kernels.task_runner import TaskRefused, TaskRunner
from kernels.volunteer_limits import VolunteerLimits, parse_cli_args, parse_hours

SPIN = [sys.executable, "-c", "while True: pass"]
MIB = 1024**2


class MutableClock:
    """A wall clock the test moves, so hour windows can be crossed without waiting."""

    def __init__(self, moment: datetime) -> None:
        self.moment = moment

    def __call__(self) -> datetime:
        return self.moment


RunnerFactory = Callable[..., TaskRunner]


@pytest.fixture
def runner_factory(tmp_path: Path) -> Iterator[RunnerFactory]:
    """Builds runners with their own work directory and closes them all after the test."""
    opened: list[TaskRunner] = []

    def build(limits: VolunteerLimits, **options: Any) -> TaskRunner:
        runner = TaskRunner(limits, tmp_path / f"work{len(opened)}", **options)
        opened.append(runner)
        return runner

    yield build
    for runner in opened:
        runner.close()


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def measure_share(pid: int, settle_s: float, window_s: float) -> float:
    """CPU used by `pid` over `window_s` wall seconds, in cores' worth."""
    process = psutil.Process(pid)
    time.sleep(settle_s)
    used_before, started = cpu_seconds(process), time.monotonic()
    time.sleep(window_s)
    return (cpu_seconds(process) - used_before) / (time.monotonic() - started)


def is_gone(process: psutil.Process) -> bool:
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _cpu_share_under_cpu_50(runner_factory: RunnerFactory, window_s: float) -> None:
    limits = parse_cli_args(["--cpu", "50"])
    with runner_factory(limits) as runner:
        handle = runner.start(SPIN, name="spin")
        share = measure_share(handle.pid, 0.3, window_s)
        assert psutil.Process(handle.pid).cpu_affinity() == [max(psutil.Process().cpu_affinity())]
        runner.stop_all()
    # --cpu 50 means half of one core's capacity (documented in docs/capability.md).
    assert 0.40 <= share <= 0.60, f"CPU share {share:.3f} cores outside 0.40-0.60"


def test_cpu_50_holds_a_busy_task_to_half_a_core(runner_factory: RunnerFactory) -> None:
    _cpu_share_under_cpu_50(runner_factory, window_s=3.0)


@pytest.mark.slow
def test_cpu_50_over_ten_seconds(runner_factory: RunnerFactory) -> None:
    _cpu_share_under_cpu_50(runner_factory, window_s=10.0)


def test_cpu_limit_is_total_over_all_tasks(runner_factory: RunnerFactory) -> None:
    with runner_factory(parse_cli_args(["--cpu", "50"])) as runner:
        first = runner.start(SPIN, name="a")
        second = runner.start(SPIN, name="b")
        processes = [psutil.Process(first.pid), psutil.Process(second.pid)]
        time.sleep(0.3)
        before, started = sum(map(cpu_seconds, processes)), time.monotonic()
        time.sleep(2.0)
        share = (sum(map(cpu_seconds, processes)) - before) / (time.monotonic() - started)
    assert 0.35 <= share <= 0.60


def test_stop_all_kills_every_process_of_every_task_within_a_second(
    runner_factory: RunnerFactory,
) -> None:
    tree = (
        "import subprocess, sys, time\n"
        "kids = [subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])"
        " for _ in range(2)]\n"
        "time.sleep(60)\n"
    )
    with runner_factory(parse_cli_args(["--cpu", "50"])) as runner:
        handles = [runner.start([sys.executable, "-c", tree], name=f"tree{i}") for i in range(2)]
        handles.append(runner.start(SPIN, name="spin"))
        deadline = time.monotonic() + 10
        processes: list[psutil.Process] = []
        while time.monotonic() < deadline:
            processes = [psutil.Process(h.pid) for h in handles]
            processes += [c for h in handles[:2] for c in psutil.Process(h.pid).children(True)]
            if len(processes) == 7:
                break
            time.sleep(0.05)
        assert len(processes) == 7, "the task trees did not start"
        runner.pause()  # stopped processes must die too
        started = time.monotonic()
        results = runner.stop_all()
        elapsed = time.monotonic() - started
        assert elapsed < 1.0
        assert all(is_gone(p) for p in processes), [p.pid for p in processes if not is_gone(p)]
        assert [r.reason for r in results] == ["stopped by the kill switch (stop_all)"] * 3
        assert runner.running() == []


def test_outside_allowed_hours_no_task_starts(runner_factory: RunnerFactory) -> None:
    clock = MutableClock(datetime(2026, 3, 14, 12, 0))
    limits = parse_cli_args(["--hours", "22-07"])
    with runner_factory(limits, clock=clock) as runner:
        with pytest.raises(TaskRefused, match="outside allowed hours 22-07"):
            runner.start(SPIN)
        assert runner.running() == []
        clock.moment = datetime(2026, 3, 14, 23, 0)
        handle = runner.start([sys.executable, "-c", "pass"])
        result = runner.wait(handle, timeout=10)
        assert result is not None and result.ok


def test_running_task_is_stopped_when_allowed_hours_end(runner_factory: RunnerFactory) -> None:
    clock = MutableClock(datetime(2026, 3, 14, 6, 59))
    with runner_factory(VolunteerLimits(hours=parse_hours("22-07")), clock=clock) as runner:
        handle = runner.start(SPIN)
        process = psutil.Process(handle.pid)
        clock.moment = datetime(2026, 3, 14, 7, 0)
        time.sleep(0.8)  # the hours check runs every 0.5 s
        assert process.status() == psutil.STATUS_STOPPED
        frozen = cpu_seconds(process)
        time.sleep(0.4)
        assert cpu_seconds(process) - frozen < 0.02
        assert any("outside allowed hours" in r for r in runner.snapshot()["pause_reasons"])
        clock.moment = datetime(2026, 3, 14, 22, 0)
        time.sleep(0.8)
        assert process.status() != psutil.STATUS_STOPPED


def test_pause_and_resume(runner_factory: RunnerFactory) -> None:
    with runner_factory(VolunteerLimits()) as runner:
        handle = runner.start(SPIN)
        process = psutil.Process(handle.pid)
        time.sleep(0.2)
        runner.pause()
        with pytest.raises(TaskRefused, match="paused by user"):
            runner.start(SPIN)
        frozen = cpu_seconds(process)
        time.sleep(0.4)
        assert cpu_seconds(process) - frozen < 0.02
        runner.resume()
        time.sleep(0.6)
        assert cpu_seconds(process) - frozen > 0.05


def test_memory_capped_task_that_over_allocates_dies_with_a_clear_reason(
    runner_factory: RunnerFactory,
) -> None:
    with runner_factory(VolunteerLimits(ram_bytes=256 * MIB)) as runner:
        hog = runner.start(
            [sys.executable, "-c", "x = bytearray(1024**3); print('survived')"], name="hog"
        )
        result = runner.wait(hog, timeout=20)
        assert result is not None and not result.ok
        assert result.reason.startswith("exceeded its memory cap of 256M")
        assert "survived" not in result.stdout_path.read_text()
        modest = runner.start([sys.executable, "-c", "x = bytearray(32 * 1024**2)"])
        modest_result = runner.wait(modest, timeout=20)
        assert modest_result is not None and modest_result.ok, modest_result


def test_memory_budget_is_shared_between_tasks(runner_factory: RunnerFactory) -> None:
    with runner_factory(VolunteerLimits(ram_bytes=256 * MIB)) as runner:
        runner.start([sys.executable, "-c", "import time; time.sleep(30)"], memory_bytes=200 * MIB)
        with pytest.raises(TaskRefused, match="memory budget"):
            runner.start([sys.executable, "-c", "pass"], memory_bytes=100 * MIB)


def test_guardrail_block_and_zero_cpu_refuse(runner_factory: RunnerFactory) -> None:
    with runner_factory(VolunteerLimits()) as runner:
        runner.block_new_work(["disk /data is 95.0% full"])
        with pytest.raises(TaskRefused, match=r"95\.0% full"):
            runner.start(SPIN)
        runner.block_new_work([])
        runner.update_limits(VolunteerLimits(cpu_percent=0))
        with pytest.raises(TaskRefused, match="CPU limit is 0"):
            runner.start(SPIN)


def test_gpu_zero_hides_gpus_and_limits_reach_the_task(runner_factory: RunnerFactory) -> None:
    script = (
        "import os\n"
        "print(repr(os.environ.get('CUDA_VISIBLE_DEVICES')), os.environ['ILEICES_CPU_PERCENT'])\n"
    )
    with runner_factory(parse_cli_args(["--gpu", "0", "--cpu", "50"])) as runner:
        handle = runner.start([sys.executable, "-c", script])
        result = runner.wait(handle, timeout=10)
    assert result is not None and result.ok
    assert result.stdout_path.read_text().split() == ["''", "50"]


def test_leftover_children_die_with_their_task(runner_factory: RunnerFactory, tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    script = (
        "import subprocess, sys\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
    )
    with runner_factory(VolunteerLimits()) as runner:
        handle = runner.start([sys.executable, "-c", script])
        assert runner.wait(handle, timeout=10) is not None
        child = psutil.Process(int(pid_file.read_text()))
        deadline = time.monotonic() + 2
        while not is_gone(child) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert is_gone(child), "a child outlived its task"


def test_unknown_program_reports_why(runner_factory: RunnerFactory) -> None:
    with runner_factory(VolunteerLimits()) as runner:
        handle = runner.start(["no-such-program-ileices"])
        result = runner.wait(handle, timeout=10)
    assert result is not None and not result.ok
    assert result.reason.startswith("could not start: cannot execute 'no-such-program-ileices'")


def test_closed_runner_refuses(tmp_path: Path) -> None:
    runner = TaskRunner(VolunteerLimits(), tmp_path)
    with pytest.raises(TaskRefused, match="not open"):
        runner.start(SPIN)
