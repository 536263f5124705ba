"""The hardware daemon actor: guardrails refuse and lift work, limits persist, the mesh is told."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import trio

from actors.actor import spawn
from actors.hardware_daemon import HardwareDaemon, HardwareDaemonConfig, RunTask, SetLimits, load_limits
from kernels.volunteer_limits import VolunteerLimits

FAST = HardwareDaemonConfig(telemetry_interval=0.05, min_publish_interval=0.0, benchmark_delay=None)


def run_with_daemon(data_dir: Path, body: Any) -> list[dict[str, Any]]:
    published: list[dict[str, Any]] = []

    async def publish(details: dict[str, Any]) -> None:
        published.append(details)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            daemon = HardwareDaemon(data_dir, publish, FAST)
            ref = await spawn(nursery, daemon)
            try:
                await body(ref)
            finally:
                daemon.stop()

    trio.run(main)
    return published


def test_full_disk_refuses_work_and_freeing_space_lifts_it(small_tmpfs: Path) -> None:
    async def body(ref: Any) -> None:
        filler = small_tmpfs / "filler"
        filler.write_bytes(b"\0" * int(3.8 * 1024 * 1024))
        await trio.sleep(0.3)
        status = await ref.call("status", timeout=5)
        assert not status["accepting_work"] and not status["accepting_storage"]
        assert any("full" in reason for reason in status["reasons"])
        refused = await ref.call(RunTask([sys.executable, "-c", "pass"]), timeout=5)
        assert refused["started"] is False and refused["reasons"]
        filler.unlink()
        await trio.sleep(0.3)
        status = await ref.call("status", timeout=5)
        assert status["accepting_work"] and status["reasons"] == []
        started = await ref.call(RunTask([sys.executable, "-c", "import time; time.sleep(30)"]), timeout=5)
        assert started["started"] is True
        stopped = await ref.call("stop_all", timeout=5)
        assert stopped["stopped"] == 1

    published = run_with_daemon(small_tmpfs, body)
    assert any(details.get("accepting_work") is False for details in published)
    assert published[-1].get("accepting_work") is True


def test_pause_and_limits_persist_and_reach_the_manifest(tmp_path: Path) -> None:
    async def body(ref: Any) -> None:
        await ref.call(SetLimits(VolunteerLimits(cpu_percent=50.0)), timeout=5)
        status = await ref.call("pause", timeout=5)
        assert "limits" in status["paused"] and not status["accepting_work"]
        refused = await ref.call(RunTask([sys.executable, "-c", "pass"]), timeout=5)
        assert refused["started"] is False
        status = await ref.call("resume", timeout=5)
        assert status["paused"] == {}

    published = run_with_daemon(tmp_path, body)
    assert load_limits(tmp_path).cpu_percent == 50.0 and not load_limits(tmp_path).paused
    assert published[-1]["limits"]["cpu_percent"] == 50.0
    assert json.dumps(published[-1])  # manifest details are plain JSON
    assert published[0]["hardware"]["logical_cores"] >= 1


def test_the_micro_benchmark_runs_in_a_child_process_and_the_event_loop_keeps_going(tmp_path: Path) -> None:
    """The benchmark's pure-Python parts hold the GIL for seconds; in-process they starved the node.

    Its figures still come back (pickled from the child); the loop keeps ticking meanwhile.
    """
    from actors.hardware_daemon import _benchmark_in_child
    from kernels.microbench import BenchConfig

    config = BenchConfig(
        matmul_size=64,
        matmul_inner=1,
        matmul_min_seconds=0.0,
        bandwidth_mib=4,
        bandwidth_inner=1,
        latency_size=8,
        latency_reps=10,
        disk_mib=1,
        include_torch=False,
    )
    worst_lag = 0.0

    async def main() -> None:
        nonlocal worst_lag

        async def watch() -> None:
            nonlocal worst_lag
            while True:
                start = trio.current_time()
                await trio.sleep(0.01)
                worst_lag = max(worst_lag, trio.current_time() - start - 0.01)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            report = await trio.to_thread.run_sync(_benchmark_in_child, tmp_path, 1, config)
            assert report.matmul_gflops.median > 0
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert worst_lag < 0.5, f"the event loop stalled {worst_lag:.2f} s"
