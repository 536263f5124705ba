"""Turns a hardware probe and benchmark figures into the capability score and the R/B/Y profile.

The market ranks and matches machines by these two numbers, so they must be explainable:
every part is a saturating curve `x / (x + half)` against a documented reference value
`half` (the figure that scores 0.5), the score is a weighted sum minus named penalties,
and the formulas are written out in docs/capability.md.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from kernels.hardware_probe import HardwareProbe
from kernels.microbench import BenchmarkReport

PART_NAMES = ("gpu", "cpu", "ram", "storage", "network", "uptime")
GIB = 1024**3


def saturating(value: float | None, half: float) -> float:
    """0 at 0, 0.5 at `half`, approaching 1: no machine is capped, none goes negative."""
    if value is None or not math.isfinite(value) or value <= 0:
        return 0.0
    return value / (value + half)


@dataclass(frozen=True)
class ReferenceValues:
    """The figure that scores 0.5 for each measured quantity (a good 2024 consumer machine)."""

    cpu_gflops: float = 500.0  # float32 GEMM, all cores: a modern 8-core desktop
    gpu_memory_gib: float = 12.0  # enough VRAM for LoRA on a 7B model in 4-bit
    gpu_gflops: float = 20_000.0  # float32 GEMM on the GPU (an RTX 3070-class card)
    ram_gib: float = 16.0
    mem_bandwidth_gbs: float = 20.0
    storage_free_gib: float = 100.0
    disk_mbs: float = 500.0  # sequential, a SATA SSD
    link_mbps: float = 1000.0
    peer_rtt_ms: float = 50.0  # inverse: 50 ms scores 0.5, lower is better
    uptime_hours: float = 24.0
    small_op_latency_us: float = 20.0  # inverse: lower is better
    unknown_link_score: float = 0.5  # a link that is up but reports no speed (VMs, Wi-Fi)


@dataclass(frozen=True)
class Weights:
    """Weights of the parts in the score; they need not sum to 1 (the score is divided by the sum)."""

    gpu: float = 0.30
    cpu: float = 0.25
    ram: float = 0.15
    storage: float = 0.10
    network: float = 0.10
    uptime: float = 0.10

    def __post_init__(self) -> None:
        values = [getattr(self, name) for name in PART_NAMES]
        if any(not math.isfinite(v) or v < 0 for v in values) or sum(values) <= 0:
            raise ValueError("weights must be finite, non-negative and not all zero")

    def as_dict(self) -> dict[str, float]:
        return {name: float(getattr(self, name)) for name in PART_NAMES}


@dataclass(frozen=True)
class Penalties:
    """Subtracted from the score when the machine is a poor place for long work right now."""

    thermal_throttling: float = 0.15
    on_battery: float = 0.10
    low_disk: float = 0.20
    low_disk_used_percent: float = 90.0
    thermal_limit_c: float = 90.0  # also any sensor at or above its own "high" mark


@dataclass(frozen=True)
class CapabilityConfig:
    weights: Weights = field(default_factory=Weights)
    references: ReferenceValues = field(default_factory=ReferenceValues)
    penalties: Penalties = field(default_factory=Penalties)


@dataclass(frozen=True)
class CapabilityReport:
    score: float
    parts: dict[str, float]
    penalties: dict[str, float]  # name -> amount subtracted
    rby: dict[str, float]  # R, B, Y on the simplex
    network_basis: str  # what the network part was measured from

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _gpu_part(probe: HardwareProbe, bench: BenchmarkReport, refs: ReferenceValues) -> float:
    memory = sum(gpu.memory_total_bytes or 0 for gpu in probe.gpus) / GIB
    memory_score = saturating(memory, refs.gpu_memory_gib)
    if bench.torch_cuda_gflops is None:
        return memory_score
    compute_score = saturating(bench.torch_cuda_gflops.median, refs.gpu_gflops)
    return (memory_score + compute_score) / 2.0


def _network_part(
    probe: HardwareProbe, peer_rtt_ms: list[float] | None, refs: ReferenceValues
) -> tuple[float, str]:
    """Link speed of the fastest non-loopback interface; peer RTT joins in once peers exist."""
    links = [nic for nic in probe.network if nic.is_up and not nic.is_loopback]
    if not links:
        link_score, basis = 0.0, "no non-loopback interface is up"
    else:
        speeds = [nic.speed_mbps for nic in links if nic.speed_mbps]
        if speeds:
            link_score = saturating(float(max(speeds)), refs.link_mbps)
            basis = f"link speed {max(speeds)} Mbit/s"
        else:
            link_score = refs.unknown_link_score
            basis = "link up, speed not reported"
    if not peer_rtt_ms:
        return link_score, basis + " (no peer RTT yet)"
    median_rtt = sorted(peer_rtt_ms)[len(peer_rtt_ms) // 2]
    rtt_score = refs.peer_rtt_ms / (refs.peer_rtt_ms + max(median_rtt, 0.0))
    return (link_score + rtt_score) / 2.0, basis + f" and median peer RTT {median_rtt:.1f} ms"


def _storage_part(probe: HardwareProbe, bench: BenchmarkReport, refs: ReferenceValues) -> float:
    space = saturating(probe.disk.free_bytes / GIB, refs.storage_free_gib)
    disk = bench.disk
    if disk is None or disk.write_mbs is None or disk.read_mbs is None:
        return space
    speed = saturating(math.sqrt(disk.write_mbs.median * disk.read_mbs.median), refs.disk_mbs)
    return (space + speed) / 2.0


def compute_parts(
    probe: HardwareProbe,
    bench: BenchmarkReport,
    config: CapabilityConfig | None = None,
    *,
    peer_rtt_ms: list[float] | None = None,
    uptime_s: float | None = None,
    now: float | None = None,
) -> tuple[dict[str, float], str]:
    """Each part in 0..1, and a sentence saying what the network part rests on.

    `uptime_s` defaults to the time since boot; the node may pass its own observed
    availability instead once it keeps one.
    """
    refs = (config or CapabilityConfig()).references
    if uptime_s is None:
        uptime_s = (time.time() if now is None else now) - probe.boot_time
    cpu_gflops = bench.matmul_gflops.median
    if bench.torch_cpu_gflops is not None:
        cpu_gflops = max(cpu_gflops, bench.torch_cpu_gflops.median)
    network, basis = _network_part(probe, peer_rtt_ms, refs)
    parts = {
        "gpu": _gpu_part(probe, bench, refs),
        "cpu": saturating(cpu_gflops, refs.cpu_gflops),
        "ram": saturating(probe.memory.total_bytes / GIB, refs.ram_gib),
        "storage": _storage_part(probe, bench, refs),
        "network": network,
        "uptime": saturating(uptime_s / 3600.0, refs.uptime_hours),
    }
    return parts, basis


def compute_penalties(probe: HardwareProbe, penalties: Penalties) -> dict[str, float]:
    applied: dict[str, float] = {}
    hot = any(
        reading.current_c >= penalties.thermal_limit_c
        or (reading.high_c is not None and reading.current_c >= reading.high_c)
        for reading in probe.temperatures
    ) or any(
        gpu.temperature_c is not None and gpu.temperature_c >= penalties.thermal_limit_c
        for gpu in probe.gpus
    )
    if hot:
        applied["thermal_throttling"] = penalties.thermal_throttling
    if probe.battery is not None and probe.battery.plugged_in is False:
        applied["on_battery"] = penalties.on_battery
    if probe.disk.used_percent >= penalties.low_disk_used_percent:
        applied["low_disk"] = penalties.low_disk
    return applied


def compute_rby(
    parts: dict[str, float], bench: BenchmarkReport, refs: ReferenceValues
) -> dict[str, float]:
    """R (perception: IO, bandwidth), B (cognition: compute), Y (execution: serving, latency).

    Each raw strength is in 0..1; the profile is the raw strengths divided by their sum,
    so it says what this machine is relatively best at, independent of its absolute size.
    """
    disk = bench.disk
    disk_score = 0.0
    if disk is not None and disk.write_mbs is not None and disk.read_mbs is not None:
        disk_score = saturating(
            math.sqrt(disk.write_mbs.median * disk.read_mbs.median), refs.disk_mbs
        )
    memory_score = saturating(bench.mem_bandwidth_gbs.median, refs.mem_bandwidth_gbs)
    raw_r = (disk_score + memory_score + parts["network"]) / 3.0
    raw_b = 1.0 - (1.0 - parts["cpu"]) * (1.0 - parts["gpu"])  # strong if either is
    latency = bench.small_op_latency_us.median
    latency_score = refs.small_op_latency_us / (refs.small_op_latency_us + max(latency, 0.0))
    raw_y = (latency_score + parts["uptime"] + parts["ram"]) / 3.0
    total = raw_r + raw_b + raw_y
    if total <= 0:
        return {"R": 1 / 3, "B": 1 / 3, "Y": 1 / 3}
    r, b = raw_r / total, raw_b / total
    return {"R": r, "B": b, "Y": 1.0 - r - b}


def assess_capability(
    probe: HardwareProbe,
    bench: BenchmarkReport,
    config: CapabilityConfig | None = None,
    *,
    peer_rtt_ms: list[float] | None = None,
    uptime_s: float | None = None,
    now: float | None = None,
) -> CapabilityReport:
    """Score = sum(w_i * part_i) / sum(w_i) - penalties, clamped to 0..1; plus the R/B/Y profile."""
    settings = config or CapabilityConfig()
    parts, basis = compute_parts(
        probe, bench, settings, peer_rtt_ms=peer_rtt_ms, uptime_s=uptime_s, now=now
    )
    weights = settings.weights.as_dict()
    weighted = sum(weights[name] * parts[name] for name in PART_NAMES) / sum(weights.values())
    applied = compute_penalties(probe, settings.penalties)
    score = min(1.0, max(0.0, weighted - sum(applied.values())))
    return CapabilityReport(
        score=score,
        parts=parts,
        penalties=applied,
        rby=compute_rby(parts, bench, settings.references),
        network_basis=basis,
    )
