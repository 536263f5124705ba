"""A volunteer's controls on a running node, through the CLI: limits, run, stop-all, hours, pause."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import psutil
import pytest

from bootstrap.control_client import control_request
from tests.support.cli import CLI, node_running

BUSY = [sys.executable, "-c", "while True: pass"]


def ileices(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60)
    if check and done.returncode != 0:
        raise AssertionError(f"ileices {' '.join(args)} failed: {done.stderr}")
    return done


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Path]:
    data_dir = tmp_path / "node"
    ileices("init", "--data-dir", str(data_dir))
    with node_running(data_dir, timeout=30):
        yield data_dir


def test_cpu_limit_stop_all_and_hours(node: Path) -> None:
    d = str(node)
    ileices("volunteer", "--data-dir", d, "--cpu", "50")
    task = json.loads(ileices("run", "--data-dir", d, "--", *BUSY).stdout)
    process = psutil.Process(task["pid"])
    process.cpu_percent(None)
    time.sleep(4.0)
    share = process.cpu_percent(None) / 100.0
    assert 0.35 <= share <= 0.65, f"task used {share:.2f} cores under --cpu 50"

    started = time.monotonic()
    ileices("stop-all", "--data-dir", d)
    assert not psutil.pid_exists(task["pid"]) or process.status() == psutil.STATUS_ZOMBIE
    assert time.monotonic() - started < 5.0  # CLI round trip included; the runner itself takes ~15 ms

    now = datetime.now()
    closed = f"{(now + timedelta(hours=2)).hour:02d}-{(now + timedelta(hours=3)).hour:02d}"
    ileices("volunteer", "--data-dir", d, "--hours", closed)
    refused = ileices("run", "--data-dir", d, "--", *BUSY, check=False)
    assert refused.returncode != 0 and "refused" in refused.stderr

    status = json.loads(ileices("status", "--data-dir", d, "--json").stdout)
    assert status["volunteer"]["accepting_work"] is False
    assert status["volunteer"]["limits"]["cpu_percent"] == 50.0


def test_pause_and_resume(node: Path) -> None:
    d = str(node)
    ileices("pause", "--data-dir", d)
    status = control_request(node, {"op": "status"})["status"]
    assert status["volunteer"]["accepting_work"] is False and status["volunteer"]["paused"]
    assert ileices("run", "--data-dir", d, "--", sys.executable, "-c", "pass", check=False).returncode != 0
    ileices("resume", "--data-dir", d)
    status = control_request(node, {"op": "status"})["status"]
    assert status["volunteer"]["accepting_work"] is True


def test_volunteer_without_a_running_node_stores_limits(tmp_path: Path) -> None:
    d = str(tmp_path / "n")
    ileices("init", "--data-dir", d)
    done = ileices("volunteer", "--data-dir", d, "--cpu", "25", "--ram", "1G", "--json")
    assert json.loads(done.stdout)["cpu_percent"] == 25.0
    assert "stored" in done.stderr
    assert "error" not in done.stderr  # no node running is not a failure: they apply at its start
    bad = ileices("volunteer", "--data-dir", d, "--cpu", "-5", check=False)
    assert bad.returncode != 0 and "cpu" in bad.stderr
