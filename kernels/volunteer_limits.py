"""The limits a volunteer puts on what Ileices may use: parsing, validation, JSON, hour windows.

Volunteers type these on the command line (`--cpu 50 --gpu 0 --ram 4G --hours 22-07 --disk 20G`) and
the node stores them, publishes them in its manifest and enforces them on every task, so
a typo must be a clear error and never a silently different limit.

CPU percent uses the `top` convention: 100 is one logical core's full capacity, so
`--cpu 50` is half of one core and `--cpu 150` one and a half cores; the ceiling is
`100 * logical_cpus`. The task runner enforces the total over all running tasks.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

LIMITS_FORMAT_VERSION = 1
MINUTES_PER_DAY = 24 * 60
MAX_CPU_PERCENT = 100.0 * 4096  # sanity bound for limits from any machine

_BYTE_UNITS: dict[str, int] = {
    "": 1,
    "B": 1,
    "K": 1024,
    "KB": 1024,
    "KIB": 1024,
    "M": 1024**2,
    "MB": 1024**2,
    "MIB": 1024**2,
    "G": 1024**3,
    "GB": 1024**3,
    "GIB": 1024**3,
    "T": 1024**4,
    "TB": 1024**4,
    "TIB": 1024**4,
}
# Binary units for "G"/"GB" too: volunteers read RAM sizes from tools (free, htop) that show GiB.
_BYTES_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")
_CLOCK_RE = re.compile(r"^(\d{1,2})(?::(\d{2}))?$")


class LimitsError(ValueError):
    """A volunteer limit that cannot be understood or is out of range; the message says which."""


def logical_cpu_count() -> int:
    """Logical CPUs this process may use: the ceiling for the CPU percent."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class HoursWindow:
    """Allowed local wall-clock hours `[start, end)`, in minutes after midnight; wraps midnight.

    `start == end` never occurs: an empty window would silently forbid all work, so the
    parser refuses it and asks for `0-24` (all day) instead.
    """

    start_minute: int
    end_minute: int

    def __post_init__(self) -> None:
        if not 0 <= self.start_minute < MINUTES_PER_DAY:
            raise LimitsError(f"hours window start {self.start_minute} min is outside 00:00-23:59")
        if not 0 <= self.end_minute <= MINUTES_PER_DAY:
            raise LimitsError(f"hours window end {self.end_minute} min is outside 00:00-24:00")
        if self.start_minute == self.end_minute % MINUTES_PER_DAY and not self.is_all_day:
            raise LimitsError("hours window is empty (start equals end); use 0-24 to allow the whole day")

    @property
    def is_all_day(self) -> bool:
        return self.start_minute == 0 and self.end_minute == MINUTES_PER_DAY

    def contains(self, moment: datetime) -> bool:
        """Whether the wall-clock time of `moment` (in its own timezone) lies in the window."""
        minute = moment.hour * 60 + moment.minute
        if self.start_minute < self.end_minute:
            return self.start_minute <= minute < self.end_minute
        # Wrapping window, e.g. 22-07: from start to midnight, then midnight to end.
        return minute >= self.start_minute or minute < self.end_minute

    def __str__(self) -> str:
        return f"{_format_clock(self.start_minute)}-{_format_clock(self.end_minute)}"


def _format_clock(minute: int) -> str:
    hours, minutes = divmod(minute, 60)
    return f"{hours:02d}" if minutes == 0 else f"{hours:02d}:{minutes:02d}"


def _parse_clock(text: str, *, is_end: bool) -> int:
    match = _CLOCK_RE.match(text.strip())
    if match is None:
        raise LimitsError(f"hour {text!r} is not HH or HH:MM")
    hours = int(match.group(1))
    minutes = int(match.group(2) or 0)
    if minutes >= 60:
        raise LimitsError(f"minutes in {text!r} must be below 60")
    if hours == 24 and minutes == 0 and is_end:
        return MINUTES_PER_DAY
    if hours >= 24:
        raise LimitsError(f"hour in {text!r} must be 0-23 (24 only as the end of 0-24)")
    return hours * 60 + minutes


def parse_hours(text: str) -> HoursWindow | None:
    """Parse `22-07`, `22:30-07:15`, `0-24` or `always`; `None` means no hour restriction."""
    cleaned = text.strip().lower()
    if cleaned in ("always", "any", "all"):
        return None
    parts = cleaned.split("-")
    if len(parts) != 2:
        raise LimitsError(f"hours {text!r} must look like START-END, e.g. 22-07 or 09:00-17:30")
    window = HoursWindow(_parse_clock(parts[0], is_end=False), _parse_clock(parts[1], is_end=True))
    return None if window.is_all_day else window


def parse_bytes(text: str) -> int:
    """Parse a size such as `4G`, `512M`, `1.5GiB` or `1073741824` (binary units)."""
    match = _BYTES_RE.match(text)
    if match is None:
        raise LimitsError(f"size {text!r} is not a number with an optional unit (K, M, G, T)")
    number, unit = match.group(1), match.group(2).upper()
    if unit not in _BYTE_UNITS:
        raise LimitsError(f"size {text!r} has unknown unit {match.group(2)!r}; use K, M, G or T")
    value = float(number) * _BYTE_UNITS[unit]
    if not math.isfinite(value) or value < 1:
        raise LimitsError(f"size {text!r} must be at least one byte")
    return int(value)


def format_bytes(count: int) -> str:
    for unit, size in (("T", 1024**4), ("G", 1024**3), ("M", 1024**2), ("K", 1024)):
        if count >= size and count % size == 0:
            return f"{count // size}{unit}"
    return str(count)


def parse_percent(text: str, *, what: str, maximum: float) -> float:
    """Parse a percent (`50`, `50%`, `12.5`) and check it lies in `0..maximum`."""
    cleaned = text.strip().removesuffix("%").strip()
    try:
        value = float(cleaned)
    except ValueError:
        raise LimitsError(f"{what} {text!r} is not a number") from None
    if not math.isfinite(value) or value < 0 or value > maximum:
        raise LimitsError(f"{what} {text!r} must be between 0 and {maximum:g}")
    return value


@dataclass(frozen=True)
class VolunteerLimits:
    """What this machine offers: CPU in top-style percent, GPU percent, RAM, hours, paused.

    `ram_bytes=None` means no cap beyond the machine; `hours=None` means any time.
    `gpu_percent` is enforced as all-or-nothing by the runner (0 hides every GPU from
    tasks); between 1 and 100 it is the share bidders may promise.
    """

    cpu_percent: float = 100.0
    gpu_percent: float = 100.0
    ram_bytes: int | None = None
    hours: HoursWindow | None = None
    paused: bool = False
    disk_bytes: int | None = None
    """Disk this machine offers for the mesh's artifact shares; None: up to the 90 % disk
    guardrail, 0: none (the node then holds no shares)."""

    def __post_init__(self) -> None:
        # The ceiling of this machine's cores is checked where a volunteer types the value
        # (`apply_cli_values`), not here: limits gossiped from a bigger machine must load.
        if not (math.isfinite(self.cpu_percent) and 0 <= self.cpu_percent <= MAX_CPU_PERCENT):
            raise LimitsError(f"cpu {self.cpu_percent:g}% must be between 0 and {MAX_CPU_PERCENT:g}")
        if not (math.isfinite(self.gpu_percent) and 0 <= self.gpu_percent <= 100):
            raise LimitsError(f"gpu {self.gpu_percent:g}% must be between 0 and 100")
        if self.ram_bytes is not None and self.ram_bytes < 1:
            raise LimitsError(f"ram {self.ram_bytes} bytes must be positive")
        if self.disk_bytes is not None and self.disk_bytes < 0:
            raise LimitsError(f"disk {self.disk_bytes} bytes must not be negative")

    @property
    def cpu_cores(self) -> float:
        """The CPU limit in cores' worth (cpu_percent / 100)."""
        return self.cpu_percent / 100.0

    def allows_work_at(self, moment: datetime) -> bool:
        """Whether tasks may run at `moment` (local wall-clock time): not paused and in hours."""
        if self.paused:
            return False
        return self.hours is None or self.hours.contains(moment)

    def why_not_at(self, moment: datetime) -> str | None:
        """The reason work is not allowed at `moment`, or None when it is."""
        if self.paused:
            return "volunteer paused work"
        if self.hours is not None and not self.hours.contains(moment):
            return f"outside allowed hours {self.hours} (now {moment:%H:%M})"
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": LIMITS_FORMAT_VERSION,
            "cpu_percent": self.cpu_percent,
            "gpu_percent": self.gpu_percent,
            "ram_bytes": self.ram_bytes,
            "hours": None if self.hours is None else str(self.hours),
            "paused": self.paused,
            "disk_bytes": self.disk_bytes,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VolunteerLimits:
        """Rebuild limits from `to_dict` output, rejecting unknown versions, keys and types."""
        if not isinstance(data, Mapping):
            raise LimitsError("limits must be a JSON object")
        if data.get("version") != LIMITS_FORMAT_VERSION:
            raise LimitsError(f"limits format version {data.get('version')!r} is not supported")
        known = {"version", "cpu_percent", "gpu_percent", "ram_bytes", "hours", "paused", "disk_bytes"}
        unknown = set(data) - known
        if unknown:
            raise LimitsError(f"unknown limit fields: {', '.join(sorted(unknown))}")
        cpu, gpu = data.get("cpu_percent", 100.0), data.get("gpu_percent", 100.0)
        ram, hours, paused = data.get("ram_bytes"), data.get("hours"), data.get("paused", False)
        for name, value in (("cpu_percent", cpu), ("gpu_percent", gpu)):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise LimitsError(f"{name} must be a number")
        if ram is not None and (isinstance(ram, bool) or not isinstance(ram, int)):
            raise LimitsError("ram_bytes must be an integer or null")
        disk = data.get("disk_bytes")  # absent in limits stored before storage existed
        if disk is not None and (isinstance(disk, bool) or not isinstance(disk, int)):
            raise LimitsError("disk_bytes must be an integer or null")
        if hours is not None and not isinstance(hours, str):
            raise LimitsError("hours must be a string like 22-07 or null")
        if not isinstance(paused, bool):
            raise LimitsError("paused must be true or false")
        return cls(
            cpu_percent=float(cpu),
            gpu_percent=float(gpu),
            ram_bytes=ram,
            hours=None if hours is None else parse_hours(hours),
            paused=paused,
            disk_bytes=disk,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> VolunteerLimits:
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise LimitsError(f"limits are not valid JSON: {error}") from None
        return cls.from_dict(data)

    def with_paused(self, paused: bool) -> VolunteerLimits:
        return replace(self, paused=paused)


_CLI_FLAGS = ("--cpu", "--gpu", "--ram", "--hours", "--disk")


def parse_cli_args(argv: Sequence[str], base: VolunteerLimits | None = None) -> VolunteerLimits:
    """Parse `--cpu 50 --gpu 0 --ram 4G --hours 22-07` (also `--cpu=50`) over `base`.

    Flags not given keep their value from `base` (the stored limits), so `ileices
    volunteer --cpu 30` changes only the CPU limit.
    """
    current = base or VolunteerLimits()
    values: dict[str, str] = {}
    index = 0
    while index < len(argv):
        token = argv[index]
        flag, sep, inline = token.partition("=")
        if flag not in _CLI_FLAGS:
            raise LimitsError(f"unknown option {token!r}; expected one of {', '.join(_CLI_FLAGS)}")
        if sep:
            value = inline
        else:
            if index + 1 >= len(argv):
                raise LimitsError(f"option {flag} needs a value")
            index += 1
            value = argv[index]
        if flag in values:
            raise LimitsError(f"option {flag} given twice")
        values[flag] = value
        index += 1
    return apply_cli_values(
        current,
        cpu=values.get("--cpu"),
        gpu=values.get("--gpu"),
        ram=values.get("--ram"),
        hours=values.get("--hours"),
        disk=values.get("--disk"),
    )


def apply_cli_values(
    base: VolunteerLimits,
    *,
    cpu: str | None = None,
    gpu: str | None = None,
    ram: str | None = None,
    hours: str | None = None,
    disk: str | None = None,
) -> VolunteerLimits:
    """Apply the string values of the CLI options (None = unchanged); for typer/argparse callers.

    `ram` and `disk` accept `none`/`unlimited` to lift the cap; `--disk 0` offers no storage.
    """
    updated = base
    if cpu is not None:
        ceiling = 100.0 * logical_cpu_count()
        what = f"cpu (100 per logical core, {logical_cpu_count()} cores here)"
        updated = replace(updated, cpu_percent=parse_percent(cpu, what=what, maximum=ceiling))
    if gpu is not None:
        updated = replace(updated, gpu_percent=parse_percent(gpu, what="gpu", maximum=100.0))
    if ram is not None:
        unlimited = ram.strip().lower() in ("none", "unlimited")
        updated = replace(updated, ram_bytes=None if unlimited else parse_bytes(ram))
    if hours is not None:
        updated = replace(updated, hours=parse_hours(hours))
    if disk is not None:
        text = disk.strip().lower()
        if text in ("none", "unlimited"):
            updated = replace(updated, disk_bytes=None)
        else:
            updated = replace(updated, disk_bytes=0 if text == "0" else parse_bytes(disk))
    return updated
