"""Describes this machine's hardware (CPU, memory, disk, network, power, GPUs) as JSON-ready data.

The market matches work to hardware and the guardrails watch disk, heat and battery, so
the probe must work on any volunteer machine: whatever the OS or drivers do not expose
(no NVIDIA driver, no sensors, no battery, no torch) is reported as absent, with a
reason where one is known, and never raises.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import psutil

# CPU features that change which kernels run fast: SIMD widths, FMA, bf16/int8 dot
# products and AMX on x86; NEON/ASIMD, SVE and dot products on ARM.
INTERESTING_CPU_FLAGS: frozenset[str] = frozenset(
    {
        "sse4_2",
        "avx",
        "avx2",
        "fma",
        "f16c",
        "avx512f",
        "avx512bw",
        "avx512vl",
        "avx512_vnni",
        "avx512_bf16",
        "avx512_fp16",
        "amx_tile",
        "amx_bf16",
        "amx_int8",
        "neon",
        "asimd",
        "asimddp",
        "sve",
        "sve2",
        "bf16",
        "i8mm",
    }
)


@dataclass(frozen=True)
class CpuInfo:
    model: str
    architecture: str
    cores_physical: int | None
    cores_logical: int
    usable_cores: int
    frequency_current_mhz: float | None
    frequency_max_mhz: float | None
    flags: list[str]


@dataclass(frozen=True)
class MemoryInfo:
    total_bytes: int
    available_bytes: int
    swap_total_bytes: int


@dataclass(frozen=True)
class DiskInfo:
    path: str
    mountpoint: str | None
    device: str | None
    filesystem: str | None
    total_bytes: int
    free_bytes: int
    used_percent: float
    rotational: bool | None


@dataclass(frozen=True)
class NetworkInterface:
    name: str
    is_up: bool
    is_loopback: bool
    speed_mbps: int | None
    mtu: int | None
    addresses: list[str]


@dataclass(frozen=True)
class BatteryInfo:
    percent: float
    plugged_in: bool | None
    seconds_left: int | None


@dataclass(frozen=True)
class TemperatureReading:
    sensor: str
    label: str
    current_c: float
    high_c: float | None
    critical_c: float | None


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    source: str  # "nvml" or "torch"
    uuid: str | None
    memory_total_bytes: int | None
    memory_used_bytes: int | None
    utilisation_percent: float | None
    temperature_c: float | None
    power_w: float | None
    power_limit_w: float | None


@dataclass(frozen=True)
class TorchCudaInfo:
    torch_version: str | None
    cuda_available: bool
    cuda_version: str | None
    device_count: int
    devices: list[str]
    reason: str | None


@dataclass(frozen=True)
class HardwareProbe:
    """One snapshot of the machine, ready for the manifest record and `status`."""

    taken_at: float
    hostname: str
    os: str
    boot_time: float
    cpu: CpuInfo
    memory: MemoryInfo
    disk: DiskInfo
    network: list[NetworkInterface]
    battery: BatteryInfo | None
    temperatures: list[TemperatureReading]
    gpus: list[GpuInfo]
    gpu_absent_reason: str | None
    torch_cuda: TorchCudaInfo | None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


@dataclass(frozen=True)
class Telemetry:
    """The cheap, frequently sampled readings the guardrails decide on."""

    disk_path: str
    disk_used_percent: float
    disk_free_bytes: int
    temperatures_c: dict[str, float]
    battery_percent: float | None
    battery_plugged_in: bool | None


# ---------------------------------------------------------------- CPU


def _read_cpuinfo() -> dict[str, str]:
    """The first processor block of /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())
    return fields


def _cpu_flags(cpuinfo: dict[str, str], architecture: str) -> list[str]:
    raw = cpuinfo.get("flags") or cpuinfo.get("features") or ""
    present = set(raw.split())
    # aarch64 always has Advanced SIMD; the kernel calls it "asimd", people call it NEON.
    if "asimd" in present or architecture in ("aarch64", "arm64"):
        present.add("neon")
    return sorted(present & INTERESTING_CPU_FLAGS)


def probe_cpu() -> CpuInfo:
    cpuinfo = _read_cpuinfo()
    architecture = platform.machine()
    model = (
        cpuinfo.get("model name")
        or cpuinfo.get("hardware")
        or cpuinfo.get("cpu model")
        or platform.processor()
        or architecture
    )
    try:
        frequency = psutil.cpu_freq()
    except (OSError, NotImplementedError, RuntimeError):
        frequency = None
    current = frequency.current if frequency and frequency.current > 0 else None
    maximum = frequency.max if frequency and frequency.max > 0 else None
    if current is None and cpuinfo.get("cpu mhz"):
        try:
            current = float(cpuinfo["cpu mhz"])
        except ValueError:
            current = None
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    return CpuInfo(
        model=model,
        architecture=architecture,
        cores_physical=psutil.cpu_count(logical=False),
        cores_logical=psutil.cpu_count(logical=True) or usable,
        usable_cores=usable,
        frequency_current_mhz=current,
        frequency_max_mhz=maximum,
        flags=_cpu_flags(cpuinfo, architecture),
    )


# ---------------------------------------------------------------- memory and disk


def probe_memory() -> MemoryInfo:
    virtual = psutil.virtual_memory()
    return MemoryInfo(
        total_bytes=int(virtual.total),
        available_bytes=int(virtual.available),
        swap_total_bytes=int(psutil.swap_memory().total),
    )


def _mount_of(path: Path) -> tuple[str | None, str | None, str | None]:
    """(mountpoint, device, fstype) of the filesystem holding `path`: the longest mount prefix."""
    resolved = str(path.resolve())
    best: tuple[str | None, str | None, str | None] = (None, None, None)
    best_length = -1
    try:
        partitions = psutil.disk_partitions(all=True)
    except OSError:
        return best
    for partition in partitions:
        mountpoint = partition.mountpoint
        prefix = mountpoint.rstrip("/") + "/"
        inside = resolved == mountpoint or resolved.startswith(prefix) or mountpoint == "/"
        if inside and len(mountpoint) > best_length:
            best = (mountpoint, partition.device, partition.fstype)
            best_length = len(mountpoint)
    return best


def _rotational(device: str | None) -> bool | None:
    """Whether /sys says the block device spins; None where it cannot tell (tmpfs, overlay)."""
    if not device or not device.startswith("/dev/"):
        return None
    name = Path(os.path.realpath(device)).name
    block = Path("/sys/class/block") / name
    if not block.exists():
        return None
    candidates = [block / "queue" / "rotational", block.resolve().parent / "queue" / "rotational"]
    for candidate in candidates:  # a partition's queue lives on its parent disk
        try:
            return candidate.read_text().strip() == "1"
        except OSError:
            continue
    return None


def _existing_ancestor(path: Path) -> Path:
    current = path.absolute()
    while not current.exists() and current != current.parent:
        current = current.parent
    return current


def probe_disk(data_dir: Path) -> DiskInfo:
    """Free and total space of the filesystem that holds `data_dir` (or its nearest parent)."""
    target = _existing_ancestor(data_dir)
    usage = psutil.disk_usage(str(target))
    mountpoint, device, fstype = _mount_of(target)
    return DiskInfo(
        path=str(target),
        mountpoint=mountpoint,
        device=device,
        filesystem=fstype,
        total_bytes=int(usage.total),
        free_bytes=int(usage.free),
        used_percent=float(usage.percent),
        rotational=_rotational(device),
    )


# ---------------------------------------------------------------- network and power


def probe_network() -> list[NetworkInterface]:
    try:
        stats = psutil.net_if_stats()
        addresses = psutil.net_if_addrs()
    except OSError:
        return []
    interfaces = []
    for name in sorted(set(stats) | set(addresses)):
        stat = stats.get(name)
        addrs = [
            entry.address
            for entry in addresses.get(name, [])
            if getattr(entry.family, "name", "") in ("AF_INET", "AF_INET6")
        ]
        flags = getattr(stat, "flags", "") if stat else ""
        interfaces.append(
            NetworkInterface(
                name=name,
                is_up=bool(stat and stat.isup),
                is_loopback="loopback" in flags or name == "lo" or name.startswith("lo0"),
                speed_mbps=stat.speed if stat and stat.speed > 0 else None,
                mtu=stat.mtu if stat and stat.mtu > 0 else None,
                addresses=addrs,
            )
        )
    return interfaces


def probe_battery() -> BatteryInfo | None:
    sensor = getattr(psutil, "sensors_battery", None)
    if sensor is None:
        return None
    try:
        battery = sensor()
    except (OSError, RuntimeError, NotImplementedError):
        return None
    if battery is None:
        return None
    seconds = battery.secsleft if isinstance(battery.secsleft, int) and battery.secsleft >= 0 else None
    return BatteryInfo(
        percent=float(battery.percent), plugged_in=battery.power_plugged, seconds_left=seconds
    )


def probe_temperatures() -> list[TemperatureReading]:
    sensor = getattr(psutil, "sensors_temperatures", None)
    if sensor is None:
        return []
    try:
        groups = sensor()
    except (OSError, RuntimeError, NotImplementedError):
        return []
    readings = []
    for name, entries in sorted(groups.items()):
        for position, entry in enumerate(entries):
            if entry.current is None or entry.current <= -273:
                continue
            readings.append(
                TemperatureReading(
                    sensor=name,
                    label=entry.label or str(position),
                    current_c=float(entry.current),
                    high_c=float(entry.high) if entry.high else None,
                    critical_c=float(entry.critical) if entry.critical else None,
                )
            )
    return readings


# ---------------------------------------------------------------- GPUs


def _nvml_call(function: Any, *args: Any) -> Any:
    """One optional NVML query: many consumer GPUs lack power or utilisation counters."""
    try:
        return function(*args)
    except Exception:  # pynvml raises NVMLError subclasses per unsupported field
        return None


def _decode(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def probe_nvidia_gpus() -> tuple[list[GpuInfo], str | None]:
    """NVIDIA GPUs via NVML; `([], reason)` when the library, the driver or a GPU is absent."""
    try:
        pynvml: ModuleType = importlib.import_module("pynvml")
    except ImportError:
        return [], "pynvml (package nvidia-ml-py) is not installed"
    try:
        pynvml.nvmlInit()
    except Exception as error:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
        return [], f"NVML unavailable: {error}"
    gpus: list[GpuInfo] = []
    try:
        count = int(pynvml.nvmlDeviceGetCount())
        for index in range(count):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = _nvml_call(pynvml.nvmlDeviceGetMemoryInfo, handle)
            utilisation = _nvml_call(pynvml.nvmlDeviceGetUtilizationRates, handle)
            temperature = _nvml_call(
                pynvml.nvmlDeviceGetTemperature, handle, pynvml.NVML_TEMPERATURE_GPU
            )
            power_mw = _nvml_call(pynvml.nvmlDeviceGetPowerUsage, handle)
            limit_mw = _nvml_call(pynvml.nvmlDeviceGetEnforcedPowerLimit, handle)
            uuid = _nvml_call(pynvml.nvmlDeviceGetUUID, handle)
            gpus.append(
                GpuInfo(
                    index=index,
                    name=_decode(pynvml.nvmlDeviceGetName(handle)),
                    source="nvml",
                    uuid=None if uuid is None else _decode(uuid),
                    memory_total_bytes=None if memory is None else int(memory.total),
                    memory_used_bytes=None if memory is None else int(memory.used),
                    utilisation_percent=None if utilisation is None else float(utilisation.gpu),
                    temperature_c=None if temperature is None else float(temperature),
                    power_w=None if power_mw is None else power_mw / 1000.0,
                    power_limit_w=None if limit_mw is None else limit_mw / 1000.0,
                )
            )
    except Exception as error:  # a driver that fails mid-enumeration
        return gpus, f"NVML enumeration failed: {error}"
    finally:
        _nvml_call(pynvml.nvmlShutdown)
    return gpus, None if gpus else "NVML found no NVIDIA GPU"


def probe_torch_cuda() -> TorchCudaInfo | None:
    """What torch.cuda sees; None when torch is not installed (it is never imported then)."""
    if importlib.util.find_spec("torch") is None:
        return None
    try:
        torch: Any = importlib.import_module("torch")
    except Exception as error:  # a broken torch install must not break the probe
        return TorchCudaInfo(None, False, None, 0, [], f"torch failed to import: {error}")
    try:
        available = bool(torch.cuda.is_available())
        count = int(torch.cuda.device_count()) if available else 0
        names = [str(torch.cuda.get_device_name(i)) for i in range(count)]
    except Exception as error:
        return TorchCudaInfo(str(torch.__version__), False, None, 0, [], f"torch.cuda: {error}")
    reason = None if available else "torch reports no CUDA device"
    return TorchCudaInfo(
        torch_version=str(torch.__version__),
        cuda_available=available,
        cuda_version=getattr(torch.version, "cuda", None),
        device_count=count,
        devices=names,
        reason=reason,
    )


def _gpus_from_torch(info: TorchCudaInfo | None) -> list[GpuInfo]:
    """GPUs torch sees when NVML does not (e.g. a container without libnvidia-ml)."""
    if info is None or not info.cuda_available:
        return []
    torch: Any = importlib.import_module("torch")
    gpus = []
    for index in range(info.device_count):
        properties = torch.cuda.get_device_properties(index)
        gpus.append(
            GpuInfo(
                index=index,
                name=str(properties.name),
                source="torch",
                uuid=None,
                memory_total_bytes=int(properties.total_memory),
                memory_used_bytes=None,
                utilisation_percent=None,
                temperature_c=None,
                power_w=None,
                power_limit_w=None,
            )
        )
    return gpus


# ---------------------------------------------------------------- whole machine


def probe_hardware(data_dir: Path, *, include_torch: bool = True) -> HardwareProbe:
    """Probe everything; `include_torch=False` skips importing torch (seconds, on a cold start)."""
    notes: list[str] = []
    gpus, gpu_reason = probe_nvidia_gpus()
    torch_info = probe_torch_cuda() if include_torch else None
    if not gpus:
        torch_gpus = _gpus_from_torch(torch_info)
        if torch_gpus:
            notes.append(f"GPUs seen by torch only ({gpu_reason})")
            gpus, gpu_reason = torch_gpus, None
    if torch_info is None and include_torch:
        notes.append("torch not installed: torch benchmarks and torch.cuda skipped")
    return HardwareProbe(
        taken_at=time.time(),
        hostname=platform.node(),
        os=f"{platform.system()} {platform.release()}",
        boot_time=float(psutil.boot_time()),
        cpu=probe_cpu(),
        memory=probe_memory(),
        disk=probe_disk(data_dir),
        network=probe_network(),
        battery=probe_battery(),
        temperatures=probe_temperatures(),
        gpus=gpus,
        gpu_absent_reason=gpu_reason,
        torch_cuda=torch_info,
        notes=notes,
    )


def sample_telemetry(data_dir: Path, extra_temperatures_c: dict[str, float] | None = None) -> Telemetry:
    """The guardrails' inputs, cheap enough to sample every few seconds (no GPU, no torch).

    `extra_temperatures_c` lets the caller add readings it holds (e.g. GPU temperatures
    from its last NVML probe) under its own labels.
    """
    disk = probe_disk(data_dir)
    temperatures = {
        f"{reading.sensor}/{reading.label}": reading.current_c for reading in probe_temperatures()
    }
    temperatures.update(extra_temperatures_c or {})
    battery = probe_battery()
    return Telemetry(
        disk_path=disk.path,
        disk_used_percent=disk.used_percent,
        disk_free_bytes=disk.free_bytes,
        temperatures_c=temperatures,
        battery_percent=None if battery is None else battery.percent,
        battery_plugged_in=None if battery is None else battery.plugged_in,
    )
