"""Short, bounded micro-benchmarks of compute, memory and disk, repeated for median and spread.

The capability score and the R/B/Y profile rest on these figures, and the market
compares them across machines, so they must be repeatable: every figure is the best of
a few inner repetitions after a warm-up (interference from other processes only ever
slows a repetition down, so the fastest one is the machine's figure), and the outer
runs report median and coefficient of variation so instability is visible, not hidden.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

MIB = 1024 * 1024


@dataclass(frozen=True)
class Measurement:
    """One figure over the outer runs: every sample, its median, spread and best."""

    unit: str
    samples: list[float]
    median: float
    cv: float  # sample standard deviation / mean; 0 for a single sample
    best: float

    @classmethod
    def of(cls, samples: list[float], unit: str, *, higher_is_better: bool = True) -> Measurement:
        if not samples:
            raise ValueError("a measurement needs at least one sample")
        mean = statistics.fmean(samples)
        cv = statistics.stdev(samples) / mean if len(samples) > 1 and mean > 0 else 0.0
        best = max(samples) if higher_is_better else min(samples)
        return cls(unit, list(samples), statistics.median(samples), cv, best)


@dataclass(frozen=True)
class BenchConfig:
    """Sizes and repetitions; the defaults take about a second per run on a 2-core machine."""

    matmul_size: int = 1024  # float32 square matrices: 2 GFLOP per product
    matmul_inner: int = 5
    matmul_min_seconds: float = 0.2  # keep repeating (up to 10x inner) until this much time
    bandwidth_mib: int = 128  # per array; well beyond any last-level cache
    bandwidth_inner: int = 5
    latency_size: int = 64
    latency_reps: int = 200
    disk_mib: int = 64
    disk_block_kib: int = 1024
    include_torch: bool = True

    def __post_init__(self) -> None:
        for name in ("matmul_size", "matmul_inner", "bandwidth_mib", "bandwidth_inner",
                     "latency_size", "latency_reps", "disk_mib", "disk_block_kib"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if not 0 <= self.matmul_min_seconds <= 10:
            raise ValueError("matmul_min_seconds must be between 0 and 10")


@dataclass(frozen=True)
class DiskResult:
    write_mbs: Measurement | None
    read_mbs: Measurement | None
    bytes_per_run: int
    read_cache_dropped: bool  # False where posix_fadvise is missing: reads may hit page cache
    skipped_reason: str | None


@dataclass(frozen=True)
class BenchmarkReport:
    runs: int
    config: BenchConfig
    matmul_gflops: Measurement
    bare_loop_gflops: Measurement  # a plain `a @ b` loop timed as a whole, in the same runs
    mem_bandwidth_gbs: Measurement
    small_op_latency_us: Measurement
    disk: DiskResult | None
    torch_cpu_gflops: Measurement | None
    torch_cuda_gflops: Measurement | None
    torch_note: str | None
    elapsed_s: float

    @property
    def matmul_vs_bare_ratio(self) -> float:
        """Our matmul figure over the bare loop's (both medians): near 1 when we add no overhead."""
        return self.matmul_gflops.median / self.bare_loop_gflops.median

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["matmul_vs_bare_ratio"] = self.matmul_vs_bare_ratio
        return data


# ---------------------------------------------------------------- compute


def _square_matrices(size: int, seed: int = 0) -> tuple[npt.NDArray[np.float32], ...]:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    return a, b, np.empty((size, size), dtype=np.float32)


def _best_seconds(operation: Callable[[], object], inner: int, min_seconds: float = 0.0) -> float:
    """Fastest timed call after one untimed warm-up: at least `inner` calls, and more until
    `min_seconds` have passed (at most 10x `inner`), so that on a busy machine at least one
    call is likely to land in a quiet moment."""
    operation()
    best = float("inf")
    calls = 0
    loop_started = time.perf_counter()
    while calls < inner or (
        time.perf_counter() - loop_started < min_seconds and calls < 10 * inner
    ):
        started = time.perf_counter()
        operation()
        best = min(best, time.perf_counter() - started)
        calls += 1
    return best


def matmul_gflops_numpy(size: int, inner: int, min_seconds: float = 0.0) -> float:
    """float32 GEMM throughput of numpy's BLAS, writing into a preallocated output."""
    a, b, out = _square_matrices(size)
    seconds = _best_seconds(lambda: np.matmul(a, b, out=out), inner, min_seconds)
    return 2.0 * size**3 / seconds / 1e9


def bare_loop_gflops_numpy(size: int, repetitions: int) -> float:
    """The baseline: `a @ b` in a plain loop, timed as a whole, no warm-up, no best-of."""
    a, b, _ = _square_matrices(size)
    started = time.perf_counter()
    for _ in range(repetitions):
        a @ b
    return 2.0 * size**3 * repetitions / (time.perf_counter() - started) / 1e9


def small_op_latency_us(size: int, repetitions: int) -> float:
    """Median wall time of one tiny matmul: the floor of serving one small request."""
    a, b, out = _square_matrices(size)
    np.matmul(a, b, out=out)
    timings = []
    for _ in range(repetitions):
        started = time.perf_counter()
        np.matmul(a, b, out=out)
        timings.append(time.perf_counter() - started)
    return statistics.median(timings) * 1e6


def memory_bandwidth_gbs(mib: int, inner: int) -> float:
    """Copy bandwidth counted as STREAM does: bytes read plus bytes written per copy."""
    source = np.ones(mib * MIB // 8, dtype=np.float64)
    target = np.empty_like(source)
    seconds = _best_seconds(lambda: np.copyto(target, source), inner)
    return 2.0 * source.nbytes / seconds / 1e9


# ---------------------------------------------------------------- disk


def _drop_cached_pages(fd: int) -> bool:
    """Ask the kernel to forget the file's (clean, fsynced) pages so reads hit the device."""
    advise = getattr(os, "posix_fadvise", None)
    if advise is None:
        return False
    try:
        advise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except OSError:
        return False
    return True


def disk_sequential_mbs(directory: Path, total_bytes: int, block_bytes: int) -> tuple[float, float, bool]:
    """(write MB/s including fsync, read MB/s, whether the read bypassed the page cache).

    Writes incompressible bytes so compressing filesystems cannot flatter the figure; the
    file is removed whatever happens.
    """
    block = os.urandom(block_bytes)
    blocks = max(1, total_bytes // block_bytes)
    path = directory / f".ileices-diskbench-{uuid.uuid4().hex}"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            started = time.perf_counter()
            for _ in range(blocks):
                os.write(fd, block)
            os.fsync(fd)
            write_seconds = time.perf_counter() - started
            dropped = _drop_cached_pages(fd)
        finally:
            os.close(fd)
        buffer = bytearray(block_bytes)
        view = memoryview(buffer)
        fd = os.open(path, os.O_RDONLY)
        try:
            dropped = _drop_cached_pages(fd) and dropped
            started = time.perf_counter()
            while os.readv(fd, [view]) > 0:
                pass
            read_seconds = time.perf_counter() - started
        finally:
            os.close(fd)
    finally:
        path.unlink(missing_ok=True)
    written = blocks * block_bytes
    return written / write_seconds / 1e6, written / read_seconds / 1e6, dropped


def _disk_plan(directory: Path, config: BenchConfig) -> tuple[int, str | None]:
    """Bytes to write per run, shrunk to 5 % of free space; a reason when it cannot run."""
    if not directory.is_dir():
        return 0, f"{directory} is not a directory"
    if not os.access(directory, os.W_OK):
        return 0, f"{directory} is not writable"
    stats = os.statvfs(directory)
    free = stats.f_bavail * stats.f_frsize
    block = min(config.disk_block_kib * 1024, config.disk_mib * MIB)
    allowed = min(config.disk_mib * MIB, free // 20) // block * block
    if allowed < block:
        return 0, f"only {free // MIB} MiB free in {directory}: disk benchmark skipped"
    return allowed, None


# ---------------------------------------------------------------- torch (optional)


def _torch_module() -> Any | None:
    if importlib.util.find_spec("torch") is None:
        return None
    try:
        return importlib.import_module("torch")
    except Exception:  # a broken install: reported as unavailable
        return None


def matmul_gflops_torch(
    torch: Any, device: str, size: int, inner: int, min_seconds: float = 0.0
) -> float:
    """float32 GEMM throughput of torch on `device`, synchronising CUDA around each product."""
    generator = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device)
    b = torch.randn(size, size, generator=generator).to(device)
    out = torch.empty(size, size, device=device)

    def product() -> None:
        torch.matmul(a, b, out=out)
        if device == "cuda":
            torch.cuda.synchronize()

    seconds = _best_seconds(product, inner, min_seconds)
    return 2.0 * size**3 / seconds / 1e9


# ---------------------------------------------------------------- all together


def run_microbenchmarks(
    data_dir: Path | None, *, runs: int = 5, config: BenchConfig | None = None
) -> BenchmarkReport:
    """Run every benchmark `runs` times, interleaved so drift hits all figures alike.

    `data_dir=None` skips the disk benchmark (e.g. when no data directory exists yet).
    """
    if runs < 1:
        raise ValueError("runs must be at least 1")
    settings = config or BenchConfig()
    started = time.perf_counter()
    torch = _torch_module() if settings.include_torch else None
    torch_note = None
    if settings.include_torch and torch is None:
        torch_note = "torch not installed: torch matmul skipped"
    cuda = torch is not None and bool(torch.cuda.is_available())
    if torch is not None and not cuda:
        torch_note = "torch has no CUDA device: torch CUDA matmul skipped"

    disk_bytes, disk_reason = (0, "no data directory given") if data_dir is None else _disk_plan(
        data_dir, settings
    )
    samples: dict[str, list[float]] = {
        key: [] for key in ("mm", "bare", "bw", "lat", "dw", "dr", "tc", "tg")
    }
    cache_dropped = True
    for _ in range(runs):
        samples["mm"].append(
            matmul_gflops_numpy(
                settings.matmul_size, settings.matmul_inner, settings.matmul_min_seconds
            )
        )
        samples["bare"].append(bare_loop_gflops_numpy(settings.matmul_size, settings.matmul_inner))
        samples["bw"].append(memory_bandwidth_gbs(settings.bandwidth_mib, settings.bandwidth_inner))
        samples["lat"].append(small_op_latency_us(settings.latency_size, settings.latency_reps))
        if data_dir is not None and disk_reason is None:
            try:
                write, read, dropped = disk_sequential_mbs(
                    data_dir, disk_bytes, min(settings.disk_block_kib * 1024, disk_bytes)
                )
            except OSError as error:  # e.g. the disk filled up under us: report, do not crash
                disk_reason = f"disk benchmark failed: {error}"
            else:
                samples["dw"].append(write)
                samples["dr"].append(read)
                cache_dropped = cache_dropped and dropped
        if torch is not None:
            samples["tc"].append(
                matmul_gflops_torch(
                    torch, "cpu", settings.matmul_size, settings.matmul_inner,
                    settings.matmul_min_seconds,
                )
            )
            if cuda:
                samples["tg"].append(
                    matmul_gflops_torch(
                        torch, "cuda", settings.matmul_size, settings.matmul_inner,
                        settings.matmul_min_seconds,
                    )
                )

    disk = None
    if data_dir is not None:
        disk = DiskResult(
            write_mbs=Measurement.of(samples["dw"], "MB/s") if samples["dw"] else None,
            read_mbs=Measurement.of(samples["dr"], "MB/s") if samples["dr"] else None,
            bytes_per_run=disk_bytes,
            read_cache_dropped=cache_dropped and bool(samples["dr"]),
            skipped_reason=disk_reason,
        )
    return BenchmarkReport(
        runs=runs,
        config=settings,
        matmul_gflops=Measurement.of(samples["mm"], "GFLOP/s"),
        bare_loop_gflops=Measurement.of(samples["bare"], "GFLOP/s"),
        mem_bandwidth_gbs=Measurement.of(samples["bw"], "GB/s"),
        small_op_latency_us=Measurement.of(samples["lat"], "us", higher_is_better=False),
        disk=disk,
        torch_cpu_gflops=Measurement.of(samples["tc"], "GFLOP/s") if samples["tc"] else None,
        torch_cuda_gflops=Measurement.of(samples["tg"], "GFLOP/s") if samples["tg"] else None,
        torch_note=torch_note,
        elapsed_s=time.perf_counter() - started,
    )
