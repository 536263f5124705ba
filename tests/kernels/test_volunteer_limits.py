"""Volunteer limits: CLI parsing, validation errors, JSON round trip, and hour windows across midnight."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernels.volunteer_limits import (
    HoursWindow,
    LimitsError,
    VolunteerLimits,
    logical_cpu_count,
    parse_bytes,
    parse_cli_args,
    parse_hours,
)


def at(hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 3, 14, hour, minute)


def test_issue_example_parses() -> None:
    limits = parse_cli_args(["--cpu", "50", "--gpu", "0", "--ram", "4G", "--hours", "22-07"])
    assert limits.cpu_percent == 50
    assert limits.cpu_cores == 0.5
    assert limits.gpu_percent == 0
    assert limits.ram_bytes == 4 * 1024**3
    assert limits.hours == HoursWindow(22 * 60, 7 * 60)
    assert not limits.paused


def test_equals_form_and_partial_update_keep_base() -> None:
    base = parse_cli_args(["--cpu", "50", "--ram", "4G"])
    updated = parse_cli_args(["--cpu=25"], base)
    assert updated.cpu_percent == 25
    assert updated.ram_bytes == 4 * 1024**3


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--cpu", "abc"], "not a number"),
        (["--cpu", "-5"], "between 0 and"),
        (["--cpu", str(100 * logical_cpu_count() + 1)], "between 0 and"),
        (["--gpu", "101"], "between 0 and 100"),
        (["--ram", "4X"], "unknown unit"),
        (["--ram", "0"], "at least one byte"),
        (["--ram", "lots"], "not a number"),
        (["--hours", "25-07"], "must be 0-23"),
        (["--hours", "22"], "START-END"),
        (["--hours", "07-07"], "empty"),
        (["--hours", "22:75-07"], "below 60"),
        (["--cpu"], "needs a value"),
        (["--swap", "5"], "unknown option"),
        (["--disk", "5X"], "unknown unit"),
        (["--cpu", "5", "--cpu", "6"], "given twice"),
        (["--cpu", "nan"], "between 0 and"),
    ],
)
def test_bad_cli_values_give_clear_errors(argv: list[str], fragment: str) -> None:
    with pytest.raises(LimitsError, match=fragment):
        parse_cli_args(argv)


def test_cpu_above_one_core_allowed_up_to_all_cores() -> None:
    top = 100 * logical_cpu_count()
    assert parse_cli_args(["--cpu", str(top)]).cpu_cores == logical_cpu_count()
    assert parse_cli_args(["--cpu", "50%"]).cpu_percent == 50


def test_byte_units() -> None:
    assert parse_bytes("512M") == 512 * 1024**2
    assert parse_bytes("1.5GiB") == int(1.5 * 1024**3)
    assert parse_bytes("4096") == 4096
    assert parse_bytes("2 tb") == 2 * 1024**4


def test_wrapping_window_allows_night_only() -> None:
    limits = parse_cli_args(["--hours", "22-07"])
    assert limits.allows_work_at(at(22, 0))
    assert limits.allows_work_at(at(23, 59))
    assert limits.allows_work_at(at(0, 0))
    assert limits.allows_work_at(at(6, 59))
    assert not limits.allows_work_at(at(7, 0))
    assert not limits.allows_work_at(at(12, 0))
    assert not limits.allows_work_at(at(21, 59))
    assert "outside allowed hours 22-07" in (limits.why_not_at(at(12)) or "")


def test_plain_window_and_minutes() -> None:
    window = parse_hours("09:30-17:15")
    assert window is not None
    assert not window.contains(at(9, 29))
    assert window.contains(at(9, 30))
    assert window.contains(at(17, 14))
    assert not window.contains(at(17, 15))
    assert str(window) == "09:30-17:15"


def test_all_day_forms_mean_no_restriction() -> None:
    assert parse_hours("0-24") is None
    assert parse_hours("always") is None
    window = parse_hours("20-24")
    assert window is not None and window.contains(at(23, 59)) and not window.contains(at(0))


def test_aware_datetime_uses_its_own_wall_clock() -> None:
    limits = parse_cli_args(["--hours", "22-07"])
    moment = datetime(2026, 3, 14, 23, 0, tzinfo=UTC)
    assert limits.allows_work_at(moment)
    assert not limits.allows_work_at(moment.astimezone(timezone(timedelta(hours=-10))))


def test_paused_forbids_work_at_any_hour() -> None:
    limits = VolunteerLimits().with_paused(True)
    assert not limits.allows_work_at(at(12))
    assert limits.why_not_at(at(12)) == "volunteer paused work"


def test_json_round_trip() -> None:
    limits = parse_cli_args(["--cpu", "50", "--gpu", "0", "--ram", "4G", "--hours", "22-07"])
    assert VolunteerLimits.from_json(limits.to_json()) == limits
    assert VolunteerLimits.from_json(VolunteerLimits().to_json()) == VolunteerLimits()


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"version": 99}', "version"),
        ('{"version": 1, "cpu_percent": "50"}', "must be a number"),
        ('{"version": 1, "cpu_percent": true}', "must be a number"),
        ('{"version": 1, "ram_bytes": 1.5}', "integer"),
        ('{"version": 1, "hours": 22}', "string"),
        ('{"version": 1, "paused": "yes"}', "true or false"),
        ('{"version": 1, "bogus": 1}', "unknown limit fields"),
        ('{"version": 1, "cpu_percent": -1}', "between 0"),
    ],
)
def test_bad_json_gives_clear_errors(text: str, fragment: str) -> None:
    with pytest.raises(LimitsError, match=fragment):
        VolunteerLimits.from_json(text)


@given(
    cpu=st.floats(0, 100 * logical_cpu_count()),
    gpu=st.floats(0, 100),
    ram=st.none() | st.integers(1, 2**50),
    start=st.integers(0, 23 * 60 + 59),
    length=st.integers(1, 24 * 60 - 1),
    paused=st.booleans(),
)
def test_json_round_trip_property(
    cpu: float, gpu: float, ram: int | None, start: int, length: int, paused: bool
) -> None:
    hours = HoursWindow(start, (start + length) % (24 * 60) or 24 * 60)
    limits = VolunteerLimits(cpu, gpu, ram, None if hours.is_all_day else hours, paused)
    assert VolunteerLimits.from_json(limits.to_json()) == limits


@given(start=st.integers(0, 23), end=st.integers(0, 24), hour=st.integers(0, 23))
def test_window_membership_matches_definition(start: int, end: int, hour: int) -> None:
    if start == end % 24:
        return
    window = HoursWindow(start * 60, end * 60)
    expected = (start <= hour < end) if start < end else (hour >= start or hour < end)
    assert window.contains(at(hour)) == expected


def test_disk_limit_parses_offers_none_and_lifts() -> None:
    assert parse_cli_args(["--disk", "20G"]).disk_bytes == 20 * 1024**3
    assert parse_cli_args(["--disk", "0"]).disk_bytes == 0
    assert parse_cli_args(["--disk", "none"], VolunteerLimits(disk_bytes=5)).disk_bytes is None


def test_limits_stored_before_disk_existed_still_load() -> None:
    old = (
        '{"version": 1, "cpu_percent": 50, "gpu_percent": 100, "ram_bytes": null, "hours": null, '
        '"paused": false}'
    )
    assert VolunteerLimits.from_json(old).disk_bytes is None
    assert VolunteerLimits.from_json(VolunteerLimits(disk_bytes=7).to_json()).disk_bytes == 7
