"""What a simulation run is asked to do: CLI-style options and TOML scenario files, validated.

Everything a user can type is parsed here, once, into frozen dataclasses, so a typo in a
scenario file fails before the run starts with the key path that is wrong, instead of
half-way through a ten-minute simulation.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field, replace
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Any

from protocols.storage.config import StorageConfig
from protocols.storage.records import MAX_ARTIFACT_BYTES, MAX_SHARES
from simulations.network_model import NetworkConfig, Region


class ScenarioError(ValueError):
    """A scenario option or file that cannot be run; the message says which key and why."""


EVENT_ACTIONS = ("crash", "leave", "partition", "heal", "join", "publish", "forge", "kill")
KNOWN_ROLES = ("hub",)


@dataclass(frozen=True)
class ChurnConfig:
    """Poisson churn: departures and arrivals as a fraction of the live population per second."""

    rate_per_s: float
    crash_fraction: float = 0.5
    arrival_rate_per_s: float | None = None
    restart_after_s: float | None = 60.0
    restart_fraction: float = 0.5
    start_s: float = 0.0
    stop_s: float | None = None

    @property
    def arrivals_per_s(self) -> float:
        return self.rate_per_s if self.arrival_rate_per_s is None else self.arrival_rate_per_s


@dataclass(frozen=True)
class TimedEvent:
    """One scheduled action of a scenario file; which fields matter depends on `action`."""

    at_s: float
    action: str
    fraction: float | None = None
    count: int | None = None
    region: str | None = None
    over_s: float = 0.0
    until_s: float | None = None
    groups: tuple[tuple[str, ...], ...] | None = None
    split: tuple[float, ...] | None = None
    restart_after_s: float | None = None
    role: str | None = None


STORAGE_MODEL_KEYS = ("artifacts", "artifact_size", "k", "n", "repair", "bandwidth", "liars")
"""Keys of a `[storage]` table about the stored artifacts; any other key is a `StorageConfig` field."""
STORAGE_CORE_KEYS = tuple(f.name for f in dataclass_fields(StorageConfig) if f.name not in STORAGE_MODEL_KEYS)


@dataclass(frozen=True)
class StorageSettings:
    """Artifacts stored in the mesh (`simulations/storage_model.py`); none by default.

    `core` holds `StorageConfig` overrides (e.g. `max_concurrent_repairs`), checked when
    the world is built, as `[election]` is.
    """

    artifacts: int = 0
    artifact_bytes: int = 64 * 1024 * 1024
    k: int = 3
    n: int = 10
    repair: bool = True
    """False: the acting hub still checks and audits, but no repair is ever carried out (Tahoe's default)."""
    bandwidth_bytes_per_s: float | None = None
    """Per-node bulk bandwidth, each direction; None: the network's bandwidth, else 100 Mbit/s."""
    liars: float = 0.0
    """Fraction of nodes that list the shares they are given in their storage record but never keep them."""
    core: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.artifacts < 0:
            raise ScenarioError("storage.artifacts: must not be negative")
        if not 1 <= self.artifact_bytes <= MAX_ARTIFACT_BYTES:
            raise ScenarioError(f"storage.artifact_size: must be 1 byte to {MAX_ARTIFACT_BYTES} bytes")
        if not 1 <= self.k <= self.n <= MAX_SHARES:
            raise ScenarioError(f"storage: need 1 <= k <= n <= {MAX_SHARES}, got k={self.k}, n={self.n}")
        if not 0.0 <= self.liars <= 1.0:
            raise ScenarioError("storage.liars: must lie between 0% and 100%")
        if self.bandwidth_bytes_per_s is not None and not (
            math.isfinite(self.bandwidth_bytes_per_s) and self.bandwidth_bytes_per_s > 0
        ):
            raise ScenarioError("storage.bandwidth: must be a positive bandwidth")


@dataclass(frozen=True)
class Scenario:
    """A complete, validated description of one simulation run."""

    nodes: int = 100
    duration_s: float = 120.0
    seed: int = 1
    network: NetworkConfig = field(default_factory=NetworkConfig)
    churn: ChurnConfig | None = None
    publish_rate_per_s: float = 0.5
    forge_rate_per_s: float = 0.05
    settle_s: float | None = None
    check_interval_s: float = 60.0
    events: tuple[TimedEvent, ...] = ()
    membership: dict[str, Any] = field(default_factory=dict)
    dissemination: dict[str, Any] = field(default_factory=dict)
    election: dict[str, Any] = field(default_factory=dict)
    kill_hub_every_s: float | None = None
    """Crash the acting hub this often (until the mesh goes quiet); it restarts 30 s later."""
    storage: StorageSettings = field(default_factory=StorageSettings)

    def __post_init__(self) -> None:
        if self.nodes < 2:
            raise ScenarioError("nodes: need at least 2 nodes")
        if self.duration_s <= 0:
            raise ScenarioError("duration: must be positive")
        if self.kill_hub_every_s is not None and self.kill_hub_every_s <= 0:
            raise ScenarioError("kill_hub_every: must be a positive duration")
        for event in self.events:
            if event.at_s > self.duration_s:
                raise ScenarioError(
                    f"events: a {event.action!r} at {event.at_s:g}s is after the end of the run "
                    f"({self.duration_s:g}s)"
                )


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PER = {"s": 1.0, "sec": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0, "hour": 3600.0}
_BYTES = {"b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "kib": 1024, "mib": 1024**2, "gib": 1024**3}


def parse_duration(value: Any, where: str = "duration") -> float:
    """Seconds from `10m`, `1h30m`, `250ms`, `2.5s` or a plain number of seconds."""
    if isinstance(value, bool):
        raise ScenarioError(f"{where}: expected a duration like '10m', got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        if re.fullmatch(r"\d+(\.\d+)?", text):
            seconds = float(text)
        else:
            pos = 0
            seconds = 0.0
            for match in _DURATION_PART.finditer(text):
                if match.start() != pos:
                    break
                seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
                pos = match.end()
            if pos != len(text) or not text:
                raise ScenarioError(
                    f"{where}: cannot read {value!r} as a duration (use e.g. '10m', '90s', '250ms')"
                )
    else:
        raise ScenarioError(f"{where}: expected a duration like '10m', got {value!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ScenarioError(f"{where}: must be a finite, non-negative duration, got {value!r}")
    return seconds


def parse_fraction(value: Any, where: str) -> float:
    """A fraction in [0, 1] from `5%`, `0.05` or `5 %`."""
    if isinstance(value, bool):
        raise ScenarioError(f"{where}: expected a fraction like '5%' or 0.05, got {value!r}")
    if isinstance(value, str):
        text = value.strip().replace(" ", "")
        try:
            number = float(text[:-1]) / 100.0 if text.endswith("%") else float(text)
        except ValueError:
            raise ScenarioError(f"{where}: expected a fraction like '5%' or 0.05, got {value!r}") from None
    elif isinstance(value, int | float):
        number = float(value)
    else:
        raise ScenarioError(f"{where}: expected a fraction like '5%' or 0.05, got {value!r}")
    if not 0.0 <= number <= 1.0:
        raise ScenarioError(f"{where}: must lie between 0% and 100%, got {value!r}")
    return number


def parse_churn_rate(value: Any, where: str = "churn") -> float:
    """Fraction of the live population per second, from `5%/min`, `0.1%/s` or `0`."""
    if (isinstance(value, int | float) and not isinstance(value, bool) and value == 0) or (
        isinstance(value, str) and value.strip() in ("0", "0%", "none")
    ):
        return 0.0
    if not isinstance(value, str) or "/" not in value:
        raise ScenarioError(f"{where}: expected a rate like '5%/min', got {value!r}")
    amount, _, per = value.strip().replace(" ", "").partition("/")
    if per.lower() not in _PER:
        raise ScenarioError(f"{where}: unknown time unit {per!r} in {value!r} (use s, min or h)")
    return parse_fraction(amount, where) / _PER[per.lower()]


def parse_count_rate(value: Any, where: str) -> float:
    """Events per second, from `2/s`, `30/min` or a plain number (per second)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        rate = float(value)
    elif isinstance(value, str):
        amount, _, per = value.strip().replace(" ", "").partition("/")
        per = per.lower() or "s"
        if per not in _PER:
            raise ScenarioError(f"{where}: unknown time unit {per!r} in {value!r}")
        try:
            rate = float(amount) / _PER[per]
        except ValueError:
            raise ScenarioError(f"{where}: expected a rate like '2/s', got {value!r}") from None
    else:
        raise ScenarioError(f"{where}: expected a rate like '2/s', got {value!r}")
    if not math.isfinite(rate) or rate < 0:
        raise ScenarioError(f"{where}: must be a non-negative rate, got {value!r}")
    return rate


def parse_bandwidth(value: Any, where: str) -> float:
    """Bytes per second from `10MB/s`, `100KiB/s`, `8Mbit/s` or a plain number of bytes/s."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        rate = float(value)
    elif isinstance(value, str):
        match = re.fullmatch(r"(\d+(?:\.\d+)?)([a-z]*?)(bit)?(?:/s)?", value.strip().lower())
        if match is None or ((match.group(2) or "b") not in _BYTES and not match.group(3)):
            raise ScenarioError(f"{where}: expected a bandwidth like '10MB/s', got {value!r}")
        prefix = match.group(2) or ""
        if match.group(3):
            scale = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}.get(prefix)
            if scale is None:
                raise ScenarioError(f"{where}: unknown unit in {value!r}")
            rate = float(match.group(1)) * scale / 8.0
        else:
            rate = float(match.group(1)) * _BYTES[prefix or "b"]
    else:
        raise ScenarioError(f"{where}: expected a bandwidth like '10MB/s', got {value!r}")
    if not math.isfinite(rate) or rate <= 0:
        raise ScenarioError(f"{where}: must be a positive bandwidth, got {value!r}")
    return rate


def parse_bytes(value: Any, where: str) -> int:
    """Bytes from `64MiB`, `1.5GB`, `512KiB` or a plain number of bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = float(value)
    elif isinstance(value, str):
        match = re.fullmatch(r"(\d+(?:\.\d+)?)([a-z]*)", value.strip().lower().replace(" ", ""))
        if match is None or (match.group(2) or "b") not in _BYTES:
            raise ScenarioError(f"{where}: expected a size like '64MiB', got {value!r}")
        size = float(match.group(1)) * _BYTES[match.group(2) or "b"]
    else:
        raise ScenarioError(f"{where}: expected a size like '64MiB', got {value!r}")
    if not math.isfinite(size) or size < 1:
        raise ScenarioError(f"{where}: must be at least one byte, got {value!r}")
    return round(size)


def _positive_int(value: Any, where: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ScenarioError(f"{where}: expected a whole number >= {minimum}, got {value!r}")
    return value


def _table(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ScenarioError(f"{key}: expected a table ([{key}]), got {type(value).__name__}")
    return value


def _check_keys(table: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ScenarioError(
            f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})"
        )


def _parse_network(table: dict[str, Any], base: NetworkConfig) -> NetworkConfig:
    _check_keys(
        table,
        {
            "latency_median",
            "latency_sigma",
            "loss",
            "bandwidth",
            "regions",
            "inter_region",
            "inter_region_default",
        },
        "network",
    )
    changes: dict[str, Any] = {}
    if "latency_median" in table:
        changes["latency_median_s"] = parse_duration(table["latency_median"], "network.latency_median")
    if "latency_sigma" in table:
        sigma = table["latency_sigma"]
        if isinstance(sigma, bool) or not isinstance(sigma, int | float) or sigma < 0:
            raise ScenarioError(f"network.latency_sigma: expected a number >= 0, got {sigma!r}")
        changes["latency_sigma"] = float(sigma)
    if "loss" in table:
        changes["loss"] = parse_fraction(table["loss"], "network.loss")
    if "bandwidth" in table:
        changes["bandwidth_bytes_per_s"] = parse_bandwidth(table["bandwidth"], "network.bandwidth")
    if "regions" in table:
        regions = table["regions"]
        if not isinstance(regions, list) or not regions:
            raise ScenarioError("network.regions: expected a non-empty array of [[network.regions]]")
        parsed = []
        for index, region in enumerate(regions):
            where = f"network.regions[{index}]"
            if not isinstance(region, dict):
                raise ScenarioError(f"{where}: expected a table with name and weight")
            _check_keys(region, {"name", "weight"}, where)
            name = region.get("name")
            if not isinstance(name, str) or not name or "-" in name:
                raise ScenarioError(f"{where}.name: expected a name without '-', got {name!r}")
            weight = region.get("weight", 1.0)
            if isinstance(weight, bool) or not isinstance(weight, int | float) or weight <= 0:
                raise ScenarioError(f"{where}.weight: expected a positive number, got {weight!r}")
            parsed.append(Region(name, float(weight)))
        changes["regions"] = tuple(parsed)
    if "inter_region" in table:
        inter = table["inter_region"]
        if not isinstance(inter, dict):
            raise ScenarioError('network.inter_region: expected a table like { "eu-us" = "80ms" }')
        pairs: dict[tuple[str, str], float] = {}
        for key, value in inter.items():
            a, sep, b = key.partition("-")
            if not sep or not a or not b:
                raise ScenarioError(f"network.inter_region: key {key!r} must look like 'eu-us'")
            pairs[(a, b)] = parse_duration(value, f"network.inter_region.{key}")
        changes["inter_region_s"] = pairs
    if "inter_region_default" in table:
        changes["inter_region_default_s"] = parse_duration(
            table["inter_region_default"], "network.inter_region_default"
        )
    try:
        return replace(base, **changes)
    except ValueError as exc:
        raise ScenarioError(f"network: {exc}") from None


def _parse_churn(table: dict[str, Any]) -> ChurnConfig | None:
    _check_keys(
        table,
        {"rate", "crash_fraction", "arrival_rate", "restart_after", "restart_fraction", "start", "stop"},
        "churn",
    )
    if "rate" not in table:
        if table:
            raise ScenarioError('churn: a [churn] table needs a rate, e.g. rate = "5%/min"')
        return None
    rate = parse_churn_rate(table["rate"], "churn.rate")
    if rate == 0:
        return None
    restart = table.get("restart_after", "60s")
    return ChurnConfig(
        rate_per_s=rate,
        crash_fraction=parse_fraction(table.get("crash_fraction", 0.5), "churn.crash_fraction"),
        arrival_rate_per_s=(
            parse_churn_rate(table["arrival_rate"], "churn.arrival_rate") if "arrival_rate" in table else None
        ),
        restart_after_s=None if restart == "never" else parse_duration(restart, "churn.restart_after"),
        restart_fraction=parse_fraction(table.get("restart_fraction", 0.5), "churn.restart_fraction"),
        start_s=parse_duration(table.get("start", 0), "churn.start"),
        stop_s=parse_duration(table["stop"], "churn.stop") if "stop" in table else None,
    )


_EVENT_KEYS: dict[str, set[str]] = {
    "crash": {"fraction", "count", "region", "restart_after"},
    "leave": {"fraction", "count", "region"},
    "partition": {"groups", "split", "until"},
    "heal": set(),
    "join": {"count", "over", "region"},
    "publish": {"count", "over"},
    "forge": {"count", "over"},
    "kill": {"role", "restart_after"},
}


def _parse_event(index: int, raw: Any) -> TimedEvent:
    where = f"events[{index}]"
    if not isinstance(raw, dict):
        raise ScenarioError(f"{where}: expected a table ([[events]])")
    if "at" not in raw:
        raise ScenarioError(f"{where}: missing 'at' (when the event happens, e.g. at = \"2m\")")
    action = raw.get("action")
    if action not in EVENT_ACTIONS:
        raise ScenarioError(f"{where}.action: expected one of {', '.join(EVENT_ACTIONS)}, got {action!r}")
    _check_keys(raw, {"at", "action"} | _EVENT_KEYS[action], where)
    at = parse_duration(raw["at"], f"{where}.at")
    fields: dict[str, Any] = {"at_s": at, "action": action}
    if "fraction" in raw:
        fields["fraction"] = parse_fraction(raw["fraction"], f"{where}.fraction")
    if "count" in raw:
        fields["count"] = _positive_int(raw["count"], f"{where}.count")
    if "region" in raw:
        if not isinstance(raw["region"], str):
            raise ScenarioError(f"{where}.region: expected a region name")
        fields["region"] = raw["region"]
    if "over" in raw:
        fields["over_s"] = parse_duration(raw["over"], f"{where}.over")
    if "until" in raw:
        until = parse_duration(raw["until"], f"{where}.until")
        if until <= at:
            raise ScenarioError(f"{where}.until: must be later than at ({until:g}s <= {at:g}s)")
        fields["until_s"] = until
    if "restart_after" in raw:
        fields["restart_after_s"] = parse_duration(raw["restart_after"], f"{where}.restart_after")
    if action in ("crash", "leave") and ("fraction" in fields) == ("count" in fields):
        raise ScenarioError(f"{where}: a {action} needs exactly one of fraction or count")
    if action in ("join", "publish", "forge") and "count" not in fields:
        raise ScenarioError(f"{where}: a {action} needs a count")
    if action == "partition":
        if ("groups" in raw) == ("split" in raw):
            raise ScenarioError(
                f"{where}: a partition needs exactly one of groups (region names, e.g. "
                f'[["eu"], ["us"]]) or split (fractions, e.g. [0.5, 0.5])'
            )
        if "groups" in raw:
            groups = raw["groups"]
            if (
                not isinstance(groups, list)
                or len(groups) < 2
                or not all(isinstance(g, list) and g and all(isinstance(n, str) for n in g) for g in groups)
            ):
                raise ScenarioError(
                    f"{where}.groups: expected two or more lists of region names, got {groups!r}"
                )
            fields["groups"] = tuple(tuple(g) for g in groups)
        else:
            split = raw["split"]
            if not isinstance(split, list) or len(split) < 2:
                raise ScenarioError(f"{where}.split: expected two or more fractions, got {split!r}")
            parts = tuple(parse_fraction(p, f"{where}.split") for p in split)
            if any(p <= 0 for p in parts) or sum(parts) > 1.0 + 1e-9:
                raise ScenarioError(f"{where}.split: fractions must be positive and sum to at most 1")
            fields["split"] = parts
    if action == "kill":
        role = raw.get("role")
        if not isinstance(role, str):
            raise ScenarioError(f'{where}.role: a kill needs a role, e.g. role = "hub"')
        if role not in KNOWN_ROLES:
            raise ScenarioError(f"{where}.role: unknown role {role!r} (known: {', '.join(KNOWN_ROLES)})")
        fields["role"] = role
    return TimedEvent(**fields)


def _check_regions(scenario: Scenario) -> None:
    names = {r.name for r in scenario.network.regions}
    for index, event in enumerate(scenario.events):
        used = [event.region] if event.region else []
        for group in event.groups or ():
            used.extend(group)
        for name in used:
            if name not in names:
                raise ScenarioError(
                    f"events[{index}]: unknown region {name!r} (regions: {', '.join(sorted(names))})"
                )


def scenario_from_toml(text: str, base: Scenario | None = None) -> Scenario:
    """Parse a scenario file's text; `base` supplies defaults for what the file leaves out."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"not valid TOML: {exc}") from None
    return scenario_from_mapping(data, base)


def scenario_from_mapping(data: dict[str, Any], base: Scenario | None = None) -> Scenario:
    """Build a scenario from parsed TOML tables (also handy for tests)."""
    base = base or Scenario()
    _check_keys(
        data,
        {
            "run",
            "network",
            "churn",
            "workload",
            "events",
            "membership",
            "dissemination",
            "election",
            "storage",
        },
        "scenario",
    )
    run = _table(data, "run")
    _check_keys(run, {"nodes", "duration", "seed", "settle", "check_interval", "kill_hub_every"}, "run")
    workload = _table(data, "workload")
    _check_keys(workload, {"publish_rate", "forge_rate"}, "workload")
    events_raw = data.get("events", [])
    if not isinstance(events_raw, list):
        raise ScenarioError("events: expected an array of tables ([[events]])")
    membership = _table(data, "membership")
    dissemination = _table(data, "dissemination")
    election = _table(data, "election")
    seed = run.get("seed", base.seed)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ScenarioError(f"run.seed: expected a whole number, got {seed!r}")
    scenario = Scenario(
        nodes=_positive_int(run["nodes"], "run.nodes", 2) if "nodes" in run else base.nodes,
        duration_s=(
            parse_duration(run["duration"], "run.duration") if "duration" in run else base.duration_s
        ),
        seed=seed,
        network=_parse_network(_table(data, "network"), base.network),
        churn=_parse_churn(_table(data, "churn")) if "churn" in data else base.churn,
        publish_rate_per_s=(
            parse_count_rate(workload["publish_rate"], "workload.publish_rate")
            if "publish_rate" in workload
            else base.publish_rate_per_s
        ),
        forge_rate_per_s=(
            parse_count_rate(workload["forge_rate"], "workload.forge_rate")
            if "forge_rate" in workload
            else base.forge_rate_per_s
        ),
        settle_s=parse_duration(run["settle"], "run.settle") if "settle" in run else base.settle_s,
        check_interval_s=(
            parse_duration(run["check_interval"], "run.check_interval")
            if "check_interval" in run
            else base.check_interval_s
        ),
        events=tuple(sorted((_parse_event(i, e) for i, e in enumerate(events_raw)), key=lambda e: e.at_s)),
        membership=dict(membership) or dict(base.membership),
        dissemination=dict(dissemination) or dict(base.dissemination),
        election=dict(election) or dict(base.election),
        kill_hub_every_s=(
            _kill_every(run["kill_hub_every"], "run.kill_hub_every")
            if "kill_hub_every" in run
            else base.kill_hub_every_s
        ),
        storage=_parse_storage(_table(data, "storage"), base.storage) if "storage" in data else base.storage,
    )
    _check_regions(scenario)
    return scenario


def _parse_storage(table: dict[str, Any], base: StorageSettings) -> StorageSettings:
    """The `[storage]` table: the artifacts to store, and any `StorageConfig` field (checked by the world)."""
    _check_keys(table, set(STORAGE_MODEL_KEYS) | set(STORAGE_CORE_KEYS), "storage")
    changes: dict[str, Any] = {}
    if "artifacts" in table:
        changes["artifacts"] = _positive_int(table["artifacts"], "storage.artifacts", 0)
    if "artifact_size" in table:
        changes["artifact_bytes"] = parse_bytes(table["artifact_size"], "storage.artifact_size")
    for key in ("k", "n"):
        if key in table:
            changes[key] = _positive_int(table[key], f"storage.{key}")
    if "repair" in table:
        if not isinstance(table["repair"], bool):
            raise ScenarioError(f"storage.repair: expected true or false, got {table['repair']!r}")
        changes["repair"] = table["repair"]
    if "bandwidth" in table:
        changes["bandwidth_bytes_per_s"] = parse_bandwidth(table["bandwidth"], "storage.bandwidth")
    if "liars" in table:
        changes["liars"] = parse_fraction(table["liars"], "storage.liars")
    core = {key: value for key, value in table.items() if key in STORAGE_CORE_KEYS}
    if core:
        changes["core"] = core
    return replace(base, **changes)


def _kill_every(value: Any, where: str) -> float | None:
    """A period like `2m`; 0 (or "never") turns periodic hub kills off."""
    if isinstance(value, str) and value.strip().lower() in ("never", "off"):
        return None
    seconds = parse_duration(value, where)
    return seconds if seconds > 0 else None


def build_scenario(
    *,
    nodes: int | None = None,
    duration: str | float | None = None,
    churn: str | None = None,
    loss: str | float | None = None,
    seed: int | None = None,
    scenario_file: Path | None = None,
    kill_hub_every: str | float | None = None,
    artifacts: int | None = None,
    artifact_mb: float | None = None,
    k: int | None = None,
    n: int | None = None,
    repair: bool | None = None,
) -> Scenario:
    """CLI entry: a scenario file (if any) first, then the explicit options on top of it.

    `artifact_mb` is in MiB (2**20 bytes)."""
    if scenario_file is not None:
        try:
            text = Path(scenario_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise ScenarioError(f"cannot read scenario file {scenario_file}: {exc.strerror}") from None
        scenario = scenario_from_toml(text)
    else:
        scenario = Scenario()
    changes: dict[str, Any] = {}
    if nodes is not None:
        changes["nodes"] = _positive_int(nodes, "--nodes", 2)
    if duration is not None:
        changes["duration_s"] = parse_duration(duration, "--duration")
    if seed is not None:
        changes["seed"] = seed
    if kill_hub_every is not None:
        changes["kill_hub_every_s"] = _kill_every(kill_hub_every, "--kill-hub-every")
    if loss is not None:
        changes["network"] = replace(scenario.network, loss=parse_fraction(loss, "--loss"))
    if churn is not None:
        rate = parse_churn_rate(churn, "--churn")
        if rate == 0:
            changes["churn"] = None
        else:
            base_churn = scenario.churn or ChurnConfig(rate_per_s=rate)
            changes["churn"] = replace(base_churn, rate_per_s=rate)
    storage: dict[str, Any] = {}
    if artifacts is not None:
        storage["artifacts"] = _positive_int(artifacts, "--artifacts", 0)
    if artifact_mb is not None:
        if not math.isfinite(artifact_mb) or artifact_mb <= 0:
            raise ScenarioError(f"--artifact-mb: must be positive, got {artifact_mb!r}")
        storage["artifact_bytes"] = max(1, round(artifact_mb * 1024 * 1024))
    if k is not None:
        storage["k"] = _positive_int(k, "--k")
    if n is not None:
        storage["n"] = _positive_int(n, "--n")
    if repair is not None:
        storage["repair"] = repair
    if storage:
        changes["storage"] = replace(scenario.storage, **storage)
    try:
        return replace(scenario, **changes) if changes else scenario
    except ValueError as exc:
        raise ScenarioError(str(exc)) from None
