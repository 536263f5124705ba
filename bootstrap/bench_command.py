"""`ileices bench [--json]`: probe the machine, run the micro-benchmarks, print score, parts and R/B/Y.

Volunteers run it to see what their machine is worth to the mesh; scripts and the
dashboard read the `--json` form, whose keys are a contract (see docs/capability.md).
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from kernels.capability import CapabilityConfig, CapabilityReport, assess_capability
from kernels.hardware_probe import HardwareProbe, probe_hardware
from kernels.microbench import BenchConfig, BenchmarkReport, Measurement, run_microbenchmarks

BENCH_RUNS = 5


def _median(measurement: Measurement | None) -> float | None:
    return None if measurement is None else measurement.median


def bench_json(probe: HardwareProbe, bench: BenchmarkReport, capability: CapabilityReport) -> dict[str, Any]:
    """The `--json` document: the keys the issue fixes, plus the detail behind them."""
    disk = bench.disk
    return {
        "score": capability.score,
        "parts": capability.parts,
        "penalties": capability.penalties,
        "rby": capability.rby,
        "network_basis": capability.network_basis,
        "benchmarks": {
            "runs": bench.runs,
            "matmul_gflops": {
                "median": bench.matmul_gflops.median,
                "cv": bench.matmul_gflops.cv,
                "samples": bench.matmul_gflops.samples,
            },
            "bare_loop_gflops": bench.bare_loop_gflops.median,
            "matmul_vs_bare_ratio": bench.matmul_vs_bare_ratio,
            "mem_bandwidth_gbs": bench.mem_bandwidth_gbs.median,
            "small_op_latency_us": bench.small_op_latency_us.median,
            "disk_write_mbs": None if disk is None else _median(disk.write_mbs),
            "disk_read_mbs": None if disk is None else _median(disk.read_mbs),
            "disk_read_cache_dropped": None if disk is None else disk.read_cache_dropped,
            "disk_skipped_reason": None if disk is None else disk.skipped_reason,
            "torch_cpu_gflops": _median(bench.torch_cpu_gflops),
            "torch_cuda_gflops": _median(bench.torch_cuda_gflops),
            "torch_note": bench.torch_note,
            "elapsed_s": bench.elapsed_s,
        },
        "gpus": [asdict(gpu) for gpu in probe.gpus],
        "gpu_absent_reason": probe.gpu_absent_reason,
        "cpu": {
            "model": probe.cpu.model,
            "cores_logical": probe.cpu.cores_logical,
            "cores_physical": probe.cpu.cores_physical,
            "flags": probe.cpu.flags,
        },
        "memory_total_bytes": probe.memory.total_bytes,
    }


def _format(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _print_tables(console: Console, document: dict[str, Any]) -> None:
    parts = Table(title=f"Capability score {document['score']:.3f}")
    parts.add_column("part")
    parts.add_column("score (0..1)", justify="right")
    for name, value in document["parts"].items():
        parts.add_row(name, f"{value:.3f}")
    for name, value in document["penalties"].items():
        parts.add_row(f"penalty: {name}", f"-{value:.3f}")
    console.print(parts)
    console.print(f"network part from: {document['network_basis']}")

    rby = document["rby"]
    console.print(
        f"R/B/Y profile: R (perception) {rby['R']:.3f}  B (cognition) {rby['B']:.3f}  "
        f"Y (execution) {rby['Y']:.3f}"
    )

    bench = document["benchmarks"]
    figures = Table(title=f"Micro-benchmarks ({bench['runs']} runs, medians)")
    figures.add_column("figure")
    figures.add_column("value", justify="right")
    matmul = bench["matmul_gflops"]
    figures.add_row("numpy matmul GFLOP/s (float32)", f"{matmul['median']:,.1f}  cv {matmul['cv']:.1%}")
    figures.add_row("bare numpy loop GFLOP/s", _format(bench["bare_loop_gflops"]))
    figures.add_row("memory copy bandwidth GB/s", _format(bench["mem_bandwidth_gbs"], 2))
    figures.add_row("small op latency µs", _format(bench["small_op_latency_us"], 2))
    figures.add_row("disk write MB/s (fsync)", _format(bench["disk_write_mbs"]))
    figures.add_row("disk read MB/s", _format(bench["disk_read_mbs"]))
    figures.add_row("torch CPU GFLOP/s", _format(bench["torch_cpu_gflops"]))
    figures.add_row("torch CUDA GFLOP/s", _format(bench["torch_cuda_gflops"]))
    console.print(figures)
    for note in (bench["disk_skipped_reason"], bench["torch_note"]):
        if note:
            console.print(f"note: {note}")

    if document["gpus"]:
        gpus = Table(title="GPUs")
        for column in ("index", "name", "memory GiB", "util %", "temp °C", "power W"):
            gpus.add_column(column)
        for gpu in document["gpus"]:
            memory = gpu["memory_total_bytes"]
            gpus.add_row(
                str(gpu["index"]),
                gpu["name"],
                _format(None if memory is None else memory / 1024**3),
                _format(gpu["utilisation_percent"], 0),
                _format(gpu["temperature_c"], 0),
                _format(gpu["power_w"]),
            )
        console.print(gpus)
    else:
        console.print(f"GPUs: none ({document['gpu_absent_reason']})")


def run_bench(
    data_dir: Path,
    as_json: bool,
    *,
    runs: int = BENCH_RUNS,
    config: BenchConfig | None = None,
    capability: CapabilityConfig | None = None,
) -> int:
    """Run the benchmarks against `data_dir`'s disk (created if missing); exit status 0 or 1."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        print(f"ileices bench: cannot use data directory {data_dir}: {error}", file=sys.stderr)
        return 1
    status = None if as_json else Console(stderr=True).status("probing and benchmarking…")
    if status is not None:
        status.start()
    try:
        probe = probe_hardware(data_dir)
        bench = run_microbenchmarks(data_dir, runs=runs, config=config)
    finally:
        if status is not None:
            status.stop()
    report = assess_capability(probe, bench, capability)
    document = bench_json(probe, bench, report)
    if as_json:
        print(json.dumps(document, sort_keys=True))
    else:
        _print_tables(Console(), document)
    return 0
