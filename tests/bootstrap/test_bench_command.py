"""`ileices bench --json` prints the documented keys; the table form prints without error."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bootstrap.bench_command import run_bench
from kernels.microbench import BenchConfig

TINY = BenchConfig(
    matmul_size=128, matmul_inner=2, matmul_min_seconds=0.0, bandwidth_mib=4,
    bandwidth_inner=1, latency_reps=10, disk_mib=2, include_torch=False,
)


def test_json_document_has_the_contract_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data_dir = tmp_path / "node"
    assert run_bench(data_dir, True, runs=2, config=TINY) == 0
    document = json.loads(capsys.readouterr().out)
    assert isinstance(document["score"], float)
    assert set(document["parts"]) == {"gpu", "cpu", "ram", "storage", "network", "uptime"}
    assert set(document["rby"]) == {"R", "B", "Y"}
    assert math.isclose(sum(document["rby"].values()), 1.0)
    benchmarks = document["benchmarks"]
    assert set(benchmarks["matmul_gflops"]) >= {"median", "cv"}
    for key in ("mem_bandwidth_gbs", "disk_write_mbs", "disk_read_mbs"):
        assert benchmarks[key] > 0
    assert isinstance(document["gpus"], list)
    assert data_dir.is_dir() and list(data_dir.iterdir()) == []


def test_table_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_bench(tmp_path, False, runs=1, config=TINY) == 0
    out = capsys.readouterr().out
    assert "Capability score" in out and "R/B/Y profile" in out


def test_unusable_data_dir_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert run_bench(blocker / "node", True, runs=1, config=TINY) == 1
    assert "cannot use data directory" in capsys.readouterr().err
