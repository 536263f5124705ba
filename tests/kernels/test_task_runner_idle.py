"""The task runner's supervisor thread sleeps while no task runs (issue 13: near-zero idle
cost) and still wakes at once for a start, a finished task and `close()`."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest

from kernels.task_runner import TaskRunner
from kernels.volunteer_limits import VolunteerLimits, parse_hours
from tests.kernels.test_task_runner import MutableClock


class CountedRunner(TaskRunner):
    """Counts the supervisor's passes (each one reaps once)."""

    passes = 0

    def _reap(self) -> None:
        if sys._getframe(1).f_code.co_name == "_supervise":
            self.passes += 1
        super()._reap()


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[CountedRunner]:
    counted = CountedRunner(VolunteerLimits(), tmp_path / "work")
    counted.open()
    try:
        yield counted
    finally:
        counted.close()


def passes_during(runner: CountedRunner, seconds: float) -> int:
    before = runner.passes
    time.sleep(seconds)
    return runner.passes - before


def test_no_task_no_wake_ups(runner: CountedRunner) -> None:
    time.sleep(0.1)  # the first pass, at open
    assert passes_during(runner, 1.0) == 0  # it polled every 0.25 s before


def test_a_start_wakes_it_and_it_sleeps_again_once_the_task_is_reaped(runner: CountedRunner) -> None:
    time.sleep(0.1)
    handle = runner.start([sys.executable, "-c", "import time; time.sleep(0.3)"], name="nap")
    result = runner.wait(handle, timeout=10)  # reaped by the supervisor, nobody else
    assert result is not None and result.ok
    assert runner.snapshot()["tasks"] == []
    time.sleep(0.1)
    assert passes_during(runner, 1.0) == 0


def test_a_short_task_registered_after_the_supervisor_went_to_sleep_is_still_reaped(
    runner: CountedRunner,
) -> None:
    """The spawn pass can end before `start` registers the task: `start` wakes it again."""
    for _ in range(5):
        handle = runner.start([sys.executable, "-c", "pass"], name="blink")
        result = runner.wait(handle, timeout=10)
        assert result is not None and result.ok


def test_close_wakes_a_sleeping_supervisor(tmp_path: Path) -> None:
    runner = TaskRunner(VolunteerLimits(), tmp_path / "work").open()
    time.sleep(0.3)
    thread = runner._thread
    assert thread is not None and thread.is_alive()
    started = time.monotonic()
    runner.close()
    assert time.monotonic() - started < 1.0
    assert not thread.is_alive()


def test_hours_are_reported_although_the_idle_supervisor_does_not_check_them(tmp_path: Path) -> None:
    clock = MutableClock(datetime(2026, 3, 14, 6, 59))
    clock_fn: Callable[[], datetime] = clock
    with TaskRunner(VolunteerLimits(hours=parse_hours("22-07")), tmp_path / "work", clock=clock_fn) as idle:
        assert not idle.snapshot()["paused"]
        clock.moment = datetime(2026, 3, 14, 7, 0)
        time.sleep(0.6)  # past the 0.5 s throttle of the hours check
        assert any("outside allowed hours" in r for r in idle.snapshot()["pause_reasons"])
        assert "limits" in idle.pause_reasons
        clock.moment = datetime(2026, 3, 14, 22, 0)
        time.sleep(0.6)
        assert idle.pause_reasons == {}
