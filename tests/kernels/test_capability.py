"""Capability score and R/B/Y profile: documented formulas, configurable weights, penalties, simplex."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest

from kernels.capability import (
    GIB,
    CapabilityConfig,
    ReferenceValues,
    Weights,
    assess_capability,
    saturating,
)
from kernels.hardware_probe import (
    BatteryInfo,
    CpuInfo,
    DiskInfo,
    GpuInfo,
    HardwareProbe,
    MemoryInfo,
    NetworkInterface,
    TemperatureReading,
    probe_hardware,
)
from kernels.microbench import BenchConfig, BenchmarkReport, DiskResult, Measurement, run_microbenchmarks

NOW = 1_800_000_000.0


def m(value: float, unit: str = "x") -> Measurement:
    return Measurement.of([value], unit)


def machine(**changes: object) -> HardwareProbe:
    probe = HardwareProbe(
        taken_at=NOW,
        hostname="test",
        os="Linux",
        boot_time=NOW - 24 * 3600,
        cpu=CpuInfo("cpu", "x86_64", 8, 16, 16, 3000.0, 4500.0, ["avx2", "fma"]),
        memory=MemoryInfo(16 * GIB, 12 * GIB, 0),
        disk=DiskInfo("/data", "/", "/dev/nvme0n1", "ext4", 1000 * GIB, 100 * GIB, 90.0 - 0.1, False),
        network=[
            NetworkInterface("lo", True, True, None, 65536, ["127.0.0.1"]),
            NetworkInterface("eth0", True, False, 1000, 1500, ["10.0.0.2"]),
        ],
        battery=None,
        temperatures=[],
        gpus=[],
        gpu_absent_reason="none",
        torch_cuda=None,
    )
    return replace(probe, **changes)  # type: ignore[arg-type]


def bench(**changes: object) -> BenchmarkReport:
    report = BenchmarkReport(
        runs=1,
        config=BenchConfig(),
        matmul_gflops=m(500.0),
        bare_loop_gflops=m(480.0),
        mem_bandwidth_gbs=m(20.0),
        small_op_latency_us=m(20.0),
        disk=DiskResult(m(500.0), m(500.0), 64 * 1024**2, True, None),
        torch_cpu_gflops=None,
        torch_cuda_gflops=None,
        torch_note=None,
        elapsed_s=1.0,
    )
    return replace(report, **changes)  # type: ignore[arg-type]


def test_saturating_curve() -> None:
    assert saturating(0, 10) == 0
    assert saturating(10, 10) == 0.5
    assert saturating(None, 10) == 0
    assert saturating(float("nan"), 10) == 0
    assert 0.99 < saturating(1e6, 10) < 1


def test_reference_machine_scores_half_on_every_measured_part() -> None:
    report = assess_capability(machine(), bench(), now=NOW)
    assert report.parts["cpu"] == pytest.approx(0.5)
    assert report.parts["ram"] == pytest.approx(0.5)
    assert report.parts["storage"] == pytest.approx(0.5)
    assert report.parts["network"] == pytest.approx(0.5)
    assert report.parts["uptime"] == pytest.approx(0.5)
    assert report.parts["gpu"] == 0.0
    # weights 0.3 gpu (0) + 0.7 of the rest at 0.5
    assert report.score == pytest.approx(0.35)
    assert report.penalties == {}


def test_gpu_counts_memory_and_cuda_compute() -> None:
    gpu = GpuInfo(0, "RTX", "nvml", None, 12 * GIB, 0, 0.0, 40.0, 30.0, 300.0)
    with_gpu = assess_capability(machine(gpus=[gpu]), bench(), now=NOW)
    assert with_gpu.parts["gpu"] == pytest.approx(0.5)
    faster = assess_capability(
        machine(gpus=[gpu]), bench(torch_cuda_gflops=m(60_000.0)), now=NOW
    )
    assert faster.parts["gpu"] == pytest.approx((0.5 + 0.75) / 2)
    assert faster.score > with_gpu.score > assess_capability(machine(), bench(), now=NOW).score


def test_weights_are_configurable() -> None:
    cpu_only = CapabilityConfig(weights=Weights(gpu=0, cpu=1, ram=0, storage=0, network=0, uptime=0))
    report = assess_capability(machine(), bench(matmul_gflops=m(1500.0)), cpu_only, now=NOW)
    assert report.score == pytest.approx(0.75)
    with pytest.raises(ValueError):
        Weights(gpu=0, cpu=0, ram=0, storage=0, network=0, uptime=0)
    with pytest.raises(ValueError):
        Weights(gpu=-1)


def test_penalties_subtract_and_say_why() -> None:
    base = assess_capability(machine(), bench(), now=NOW).score
    hot = TemperatureReading("coretemp", "Package", 95.0, 80.0, 100.0)
    penalised = assess_capability(
        machine(
            temperatures=[hot],
            battery=BatteryInfo(80.0, False, 3600),
            disk=replace(machine().disk, used_percent=95.0),
        ),
        bench(),
        now=NOW,
    )
    assert penalised.penalties == {"thermal_throttling": 0.15, "on_battery": 0.10, "low_disk": 0.20}
    assert penalised.score == pytest.approx(max(0.0, base - 0.45))


def test_network_part_without_links_and_with_peer_rtt() -> None:
    offline = machine(network=[NetworkInterface("lo", True, True, None, 65536, [])])
    assert assess_capability(offline, bench(), now=NOW).parts["network"] == 0.0
    unknown_speed = machine(network=[NetworkInterface("eth0", True, False, None, 1500, [])])
    report = assess_capability(unknown_speed, bench(), now=NOW)
    assert report.parts["network"] == ReferenceValues().unknown_link_score
    assert "speed not reported" in report.network_basis
    with_peers = assess_capability(machine(), bench(), peer_rtt_ms=[10.0, 50.0, 90.0], now=NOW)
    assert with_peers.parts["network"] == pytest.approx((0.5 + 0.5) / 2)
    assert "median peer RTT 50.0 ms" in with_peers.network_basis


def test_rby_is_on_the_simplex_and_follows_the_figures() -> None:
    balanced = assess_capability(machine(), bench(), now=NOW).rby
    assert set(balanced) == {"R", "B", "Y"}
    assert math.isclose(sum(balanced.values()), 1.0)
    assert all(0 <= v <= 1 for v in balanced.values())
    compute_heavy = assess_capability(machine(), bench(matmul_gflops=m(50_000.0)), now=NOW).rby
    assert compute_heavy["B"] > balanced["B"]
    io_heavy = assess_capability(
        machine(),
        bench(disk=DiskResult(m(5000.0), m(5000.0), 1, True, None), mem_bandwidth_gbs=m(200.0)),
        now=NOW,
    ).rby
    assert io_heavy["R"] > balanced["R"]
    slow_serving = assess_capability(machine(), bench(small_op_latency_us=m(2000.0)), now=NOW).rby
    assert slow_serving["Y"] < balanced["Y"]


def test_real_machine_end_to_end(tmp_path: Path) -> None:
    config = BenchConfig(
        matmul_size=128, matmul_inner=2, matmul_min_seconds=0.0, bandwidth_mib=4,
        bandwidth_inner=1, latency_reps=10, disk_mib=2, include_torch=False,
    )
    report = assess_capability(
        probe_hardware(tmp_path, include_torch=False),
        run_microbenchmarks(tmp_path, runs=1, config=config),
    )
    assert 0 <= report.score <= 1
    assert set(report.parts) == {"gpu", "cpu", "ram", "storage", "network", "uptime"}
    assert math.isclose(sum(report.rby.values()), 1.0)
