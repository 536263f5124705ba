"""The hardware probe describes this machine as JSON; absent hardware is reported absent, never an error."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from kernels import hardware_probe
from kernels.hardware_probe import (
    HardwareProbe,
    probe_disk,
    probe_hardware,
    probe_nvidia_gpus,
    sample_telemetry,
)


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> HardwareProbe:
    return probe_hardware(tmp_path_factory.mktemp("data"))


def test_probe_serialises_to_json(probe: HardwareProbe) -> None:
    document = json.loads(probe.to_json())
    assert set(document) >= {"cpu", "memory", "disk", "network", "battery", "temperatures", "gpus"}
    assert isinstance(document["gpus"], list)


def test_cpu_and_memory_are_plausible(probe: HardwareProbe) -> None:
    assert probe.cpu.cores_logical >= probe.cpu.usable_cores >= 1
    assert probe.cpu.model
    assert set(probe.cpu.flags) <= hardware_probe.INTERESTING_CPU_FLAGS
    assert probe.memory.total_bytes >= probe.memory.available_bytes > 0


def test_avx_flags_match_proc_cpuinfo(probe: HardwareProbe) -> None:
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("no /proc/cpuinfo on this OS")
    flags_line = next(
        (line for line in cpuinfo.read_text().splitlines() if line.startswith(("flags", "Features"))),
        "",
    )
    present = set(flags_line.partition(":")[2].split())
    for flag in ("avx2", "avx512f", "fma"):
        assert (flag in probe.cpu.flags) == (flag in present)


def test_arm_features_report_neon() -> None:
    flags = hardware_probe._cpu_flags({"features": "fp asimd evtstrm aes sve"}, "aarch64")
    assert flags == ["asimd", "neon", "sve"]


def test_gpus_absent_here_come_with_a_reason(probe: HardwareProbe) -> None:
    if probe.gpus:
        gpu = probe.gpus[0]
        assert gpu.name and gpu.source in ("nvml", "torch")
        assert probe.gpu_absent_reason is None
    else:
        assert probe.gpu_absent_reason


def test_missing_pynvml_is_reported_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` fail
    gpus, reason = probe_nvidia_gpus()
    assert gpus == [] and reason == "pynvml (package nvidia-ml-py) is not installed"


def test_installed_pynvml_without_driver_reports_reason() -> None:
    pytest.importorskip("pynvml")
    gpus, reason = probe_nvidia_gpus()
    if not gpus:
        assert reason and ("NVML" in reason)


def test_disk_of_a_directory_that_does_not_exist_yet(tmp_path: Path) -> None:
    disk = probe_disk(tmp_path / "not" / "yet")
    assert disk.path == str(tmp_path)
    assert disk.total_bytes >= disk.free_bytes >= 0
    assert 0 <= disk.used_percent <= 100
    assert disk.mountpoint is not None


def test_telemetry_is_cheap_and_merges_extra_readings(tmp_path: Path) -> None:
    telemetry = sample_telemetry(tmp_path, {"gpu0": 55.0})
    assert telemetry.temperatures_c["gpu0"] == 55.0
    assert 0 <= telemetry.disk_used_percent <= 100


def test_probe_without_torch_import(tmp_path: Path) -> None:
    result = probe_hardware(tmp_path, include_torch=False)
    assert result.torch_cuda is None
