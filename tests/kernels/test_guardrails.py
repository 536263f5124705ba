"""Guardrails: disk at 90 % refuses work and storage (on a real tmpfs), heat and low battery pause."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from kernels.guardrails import GuardrailConfig, evaluate_guardrails
from kernels.hardware_probe import Telemetry, sample_telemetry
from kernels.task_runner import TaskRefused, TaskRunner
from kernels.volunteer_limits import VolunteerLimits

CONFIG = GuardrailConfig(disk_full_percent=90, max_temperature_c=85, min_battery_percent=20)


def telemetry(**changes: object) -> Telemetry:
    values: dict[str, object] = {
        "disk_path": "/data",
        "disk_used_percent": 50.0,
        "disk_free_bytes": 10**10,
        "temperatures_c": {"coretemp/Package id 0": 60.0},
        "battery_percent": None,
        "battery_plugged_in": None,
    }
    values.update(changes)
    return Telemetry(**values)  # type: ignore[arg-type]


def test_healthy_machine_accepts_everything() -> None:
    verdict = evaluate_guardrails(telemetry(), CONFIG)
    assert verdict.ok and verdict.reasons == []


@pytest.mark.parametrize("used", [90.0, 97.5])
def test_disk_at_or_above_limit_refuses_work_and_storage(used: float) -> None:
    verdict = evaluate_guardrails(telemetry(disk_used_percent=used), CONFIG)
    assert not verdict.accept_new_work and not verdict.accept_storage
    assert not verdict.pause_work
    assert verdict.reasons == [
        f"disk /data is {used:.1f}% full (limit 90%): refusing new work and storage"
    ]


def test_disk_just_below_limit_is_fine() -> None:
    assert evaluate_guardrails(telemetry(disk_used_percent=89.9), CONFIG).ok


def test_hot_sensor_pauses_and_names_it() -> None:
    verdict = evaluate_guardrails(
        telemetry(temperatures_c={"coretemp/Core 0": 70.0, "gpu0": 91.0}), CONFIG
    )
    assert verdict.pause_work and not verdict.accept_new_work and verdict.accept_storage
    assert verdict.reasons == ["temperature above 85°C (gpu0 91°C): work paused"]


def test_low_battery_pauses_only_when_not_charging() -> None:
    low = evaluate_guardrails(telemetry(battery_percent=15.0, battery_plugged_in=False), CONFIG)
    assert low.pause_work
    assert low.reasons == ["battery at 15% and not charging (minimum 20%): work paused"]
    charging = evaluate_guardrails(telemetry(battery_percent=15.0, battery_plugged_in=True), CONFIG)
    assert charging.ok
    assert evaluate_guardrails(telemetry(battery_percent=50.0, battery_plugged_in=False), CONFIG).ok


def test_several_rules_give_several_reasons() -> None:
    verdict = evaluate_guardrails(
        telemetry(disk_used_percent=95.0, temperatures_c={"x": 99.0}, battery_percent=5.0), CONFIG
    )
    assert len(verdict.reasons) == 3 and verdict.pause_work and not verdict.accept_storage


def test_bad_config_is_refused() -> None:
    with pytest.raises(ValueError):
        GuardrailConfig(disk_full_percent=0)
    with pytest.raises(ValueError):
        GuardrailConfig(min_battery_percent=150)


def test_filling_a_real_filesystem_past_90_percent_refuses_then_freeing_lifts(
    small_tmpfs: Path, tmp_path: Path
) -> None:
    data_dir = small_tmpfs / "node"
    data_dir.mkdir()
    assert evaluate_guardrails(sample_telemetry(data_dir), CONFIG).ok

    filler = data_dir / "filler.bin"
    filler.write_bytes(os.urandom(int(3.8 * 1024 * 1024)))
    full = sample_telemetry(data_dir)
    verdict = evaluate_guardrails(full, CONFIG)
    assert full.disk_used_percent >= 90
    assert not verdict.accept_new_work and not verdict.accept_storage
    assert verdict.reasons and str(data_dir) in verdict.reasons[0]

    # The runner the daemon feeds the verdict to refuses new tasks, saying why.
    with TaskRunner(VolunteerLimits(), tmp_path / "runner") as runner:
        runner.block_new_work([] if verdict.accept_new_work else verdict.reasons)
        with pytest.raises(TaskRefused, match="full"):
            runner.start([sys.executable, "-c", "pass"])
        filler.unlink()
        freed = evaluate_guardrails(sample_telemetry(data_dir), CONFIG)
        assert freed.ok
        runner.block_new_work(freed.reasons)
        handle = runner.start([sys.executable, "-c", "pass"])
        result = runner.wait(handle, timeout=10)
        assert result is not None and result.ok
