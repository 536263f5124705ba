"""Pure decisions from telemetry: whether to accept new work and storage, and whether to pause.

The hardware daemon samples telemetry and acts on the verdict; keeping the decision a
pure function of its inputs makes every rule testable without filling a real disk or
heating a real CPU, and gives `status` the exact reasons to show the volunteer.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from kernels.hardware_probe import Telemetry


@dataclass(frozen=True)
class GuardrailConfig:
    """Thresholds; the defaults follow the issue (disk at 90 % stops new work and storage)."""

    disk_full_percent: float = 90.0
    max_temperature_c: float = 90.0
    min_battery_percent: float = 20.0

    def __post_init__(self) -> None:
        if not 0 < self.disk_full_percent <= 100:
            raise ValueError("disk_full_percent must be in (0, 100]")
        if not math.isfinite(self.max_temperature_c):
            raise ValueError("max_temperature_c must be finite")
        if not 0 <= self.min_battery_percent <= 100:
            raise ValueError("min_battery_percent must be in [0, 100]")


@dataclass(frozen=True)
class GuardrailVerdict:
    accept_new_work: bool
    accept_storage: bool
    pause_work: bool
    reasons: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.accept_new_work and self.accept_storage and not self.pause_work

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate_guardrails(telemetry: Telemetry, config: GuardrailConfig) -> GuardrailVerdict:
    """Apply every rule; each rule that fires adds one human-readable reason."""
    reasons: list[str] = []
    accept_new_work = accept_storage = True
    pause = False

    if telemetry.disk_used_percent >= config.disk_full_percent:
        accept_new_work = accept_storage = False
        reasons.append(
            f"disk {telemetry.disk_path} is {telemetry.disk_used_percent:.1f}% full "
            f"(limit {config.disk_full_percent:g}%): refusing new work and storage"
        )

    hot = sorted(
        (label, value)
        for label, value in telemetry.temperatures_c.items()
        if math.isfinite(value) and value > config.max_temperature_c
    )
    if hot:
        pause = True
        accept_new_work = False
        readings = ", ".join(f"{label} {value:.0f}°C" for label, value in hot)
        reasons.append(
            f"temperature above {config.max_temperature_c:g}°C ({readings}): work paused"
        )

    battery = telemetry.battery_percent
    if (
        battery is not None
        and telemetry.battery_plugged_in is not True
        and battery < config.min_battery_percent
    ):
        pause = True
        accept_new_work = False
        reasons.append(
            f"battery at {battery:.0f}% and not charging "
            f"(minimum {config.min_battery_percent:g}%): work paused"
        )

    return GuardrailVerdict(accept_new_work, accept_storage, pause, reasons)
