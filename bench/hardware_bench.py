"""Checks the micro-benchmarks' stability: matmul GFLOPS CV over 5 runs, and ours vs a bare numpy loop.

The issue's targets (on an idle machine): CV under 10 %, and our numpy matmul figure at
least 80 % of what a bare `a @ b` loop measures in the same run. The load average is
printed before and after, because on a shared machine the first target is about the
neighbours as much as about the benchmark.

Run: .venv/bin/python bench/hardware_bench.py [--runs 5] [--dir DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from kernels.microbench import run_microbenchmarks

CV_TARGET = 0.10
RATIO_TARGET = 0.80


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=None, help="directory for the disk benchmark")
    parser.add_argument("--json", action="store_true")
    arguments = parser.parse_args()

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(dir=arguments.dir) as scratch:
        report = run_microbenchmarks(Path(scratch), runs=arguments.runs)
    load_after = os.getloadavg()

    matmul = report.matmul_gflops
    figures = {
        "runs": report.runs,
        "matmul_gflops_samples": matmul.samples,
        "matmul_gflops_median": matmul.median,
        "matmul_gflops_cv": matmul.cv,
        "bare_loop_gflops_samples": report.bare_loop_gflops.samples,
        "bare_loop_gflops_median": report.bare_loop_gflops.median,
        "matmul_vs_bare_ratio": report.matmul_vs_bare_ratio,
        "mem_bandwidth_gbs_median": report.mem_bandwidth_gbs.median,
        "mem_bandwidth_gbs_cv": report.mem_bandwidth_gbs.cv,
        "disk_write_mbs_median": report.disk.write_mbs.median
        if report.disk and report.disk.write_mbs
        else None,
        "disk_read_mbs_median": report.disk.read_mbs.median
        if report.disk and report.disk.read_mbs
        else None,
        "elapsed_s": report.elapsed_s,
        "load_average_before": load_before[0],
        "load_average_after": load_after[0],
        "cv_ok": matmul.cv < CV_TARGET,
        "ratio_ok": report.matmul_vs_bare_ratio >= RATIO_TARGET,
    }
    if arguments.json:
        print(json.dumps(figures, sort_keys=True))
    else:
        print(f"matmul GFLOP/s samples: {', '.join(f'{s:.1f}' for s in matmul.samples)}")
        print(f"matmul GFLOP/s median {matmul.median:.1f}, CV {matmul.cv:.1%} "
              f"(target < {CV_TARGET:.0%}: {'ok' if figures['cv_ok'] else 'MISSED'})")
        print(f"bare numpy loop GFLOP/s median {report.bare_loop_gflops.median:.1f}; "
              f"ratio ours/bare {report.matmul_vs_bare_ratio:.2f} "
              f"(target >= {RATIO_TARGET:.2f}: {'ok' if figures['ratio_ok'] else 'MISSED'})")
        print(f"memory bandwidth {report.mem_bandwidth_gbs.median:.1f} GB/s "
              f"(CV {report.mem_bandwidth_gbs.cv:.1%})")
        write, read = figures["disk_write_mbs_median"], figures["disk_read_mbs_median"]
        print(f"disk write {write or 0:.0f} MB/s, read {read or 0:.0f} MB/s")
        print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}; "
              f"elapsed {report.elapsed_s:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
