"""The hardware daemon: watches this machine, enforces the volunteer's limits, tells the mesh.

It owns the node's `TaskRunner` (every task process runs under the volunteer's limits),
samples telemetry on a timer and applies the guardrails (a full disk refuses new work
and storage; heat or a low battery pauses work), and hands a rate-limited summary of
capabilities, score, R/B/Y and limits to `publish` for the node's manifest. Probing runs
in a worker thread so the node's event loop never stalls on it; the micro-benchmarks run
in a child process at a lower priority, because their pure-Python parts would hold the
GIL for seconds and starve the node's own event loop (its probe acks among them: five
nodes benchmarking at once on one busy machine declared each other dead).
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import multiprocessing
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from actors.actor import Actor
from kernels.capability import CapabilityReport, assess_capability
from kernels.guardrails import GuardrailConfig, GuardrailVerdict, evaluate_guardrails
from kernels.hardware_probe import HardwareProbe, Telemetry, probe_hardware, sample_telemetry
from kernels.microbench import BenchConfig, BenchmarkReport, run_microbenchmarks
from kernels.task_runner import TaskRefused, TaskRunner
from kernels.volunteer_limits import VolunteerLimits

log = logging.getLogger(__name__)

LIMITS_FILE = "limits.json"
GUARDRAIL_PAUSE = "guardrail"


@dataclass(frozen=True)
class HardwareDaemonConfig:
    telemetry_interval: float = 5.0
    """Seconds between guardrail checks."""
    min_publish_interval: float = 60.0
    """Manifest updates are rate-limited to one per this many seconds."""
    benchmark_delay: float | None = 120.0
    """Run the micro-benchmarks this long (up to 1.5x, at random) after start.

    None: never (use `ileices bench`)."""
    benchmark_runs: int = 1
    guardrails: GuardrailConfig = field(default_factory=GuardrailConfig)


def load_limits(data_dir: Path) -> VolunteerLimits:
    path = data_dir / LIMITS_FILE
    if not path.exists():
        return VolunteerLimits()
    return VolunteerLimits.from_json(path.read_text())


def save_limits(data_dir: Path, limits: VolunteerLimits) -> None:
    path = data_dir / LIMITS_FILE
    temporary = path.with_suffix(".tmp")
    temporary.write_text(limits.to_json())
    temporary.replace(path)


@dataclass(frozen=True)
class SetLimits:
    limits: VolunteerLimits


@dataclass(frozen=True)
class RunTask:
    argv: list[str]
    name: str = "task"


HardwareMessage = str | SetLimits | RunTask
"""`"status"`, `"pause"`, `"resume"`, `"stop_all"`, or a dataclass above."""

Publish = Callable[[dict[str, Any]], Awaitable[None]]


class HardwareDaemon(Actor[HardwareMessage, Any]):
    def __init__(self, data_dir: Path, publish: Publish, config: HardwareDaemonConfig | None = None) -> None:
        self.data_dir = data_dir
        self.config = config or HardwareDaemonConfig()
        self._publish = publish
        self.runner = TaskRunner(load_limits(data_dir), data_dir / "work")
        self.probe: HardwareProbe | None = None
        self.bench: BenchmarkReport | None = None
        self.capability: CapabilityReport | None = None
        self.telemetry: Telemetry | None = None
        self.verdict: GuardrailVerdict | None = None
        self._started = 0.0
        self._next_check = 0.0
        self._benchmark_at: float | None = None
        self._last_published = -1e18
        self._dirty = True

    async def on_start(self) -> None:
        self.runner.open()
        self._started = trio.current_time()
        self.probe = await trio.to_thread.run_sync(probe_hardware, self.data_dir)
        if self.config.benchmark_delay is not None:
            # Spread over half the delay again: nodes started together (a demo, a test, a
            # rack switched on at once) must not all benchmark at the same moment.
            self._benchmark_at = self._started + self.config.benchmark_delay * random.uniform(1.0, 1.5)
        await self._check_guardrails()

    async def on_stop(self) -> None:
        await trio.to_thread.run_sync(self.runner.close)

    def wake_at(self) -> float | None:
        candidates = [self._next_check]
        if self._benchmark_at is not None:
            candidates.append(self._benchmark_at)
        return min(candidates)

    async def on_timeout(self) -> None:
        now = trio.current_time()
        if self._benchmark_at is not None and now >= self._benchmark_at:
            self._benchmark_at = None
            await self._benchmark()
        if now >= self._next_check:
            await self._check_guardrails()

    async def handle(self, message: HardwareMessage) -> Any:
        if message == "status":
            return self.status()
        if message == "pause":
            self._set_limits(self.runner.limits.with_paused(True))  # persisted: survives restarts
        elif message == "resume":
            self._set_limits(self.runner.limits.with_paused(False))
        elif message == "stop_all":
            stopped = await trio.to_thread.run_sync(self.runner.stop_all)
            return {"stopped": len(stopped)}
        elif isinstance(message, SetLimits):
            self._set_limits(message.limits)
        elif isinstance(message, RunTask):
            try:
                handle = self.runner.start(message.argv, name=message.name)
            except TaskRefused as refused:
                return {"started": False, "reasons": list(refused.reasons)}
            return {"started": True, "task_id": handle.task_id, "pid": handle.pid}
        else:
            raise ValueError(f"unknown hardware daemon message {message!r}")
        await self._maybe_publish()
        return self.status()

    def status(self) -> dict[str, Any]:
        """The `volunteer` part of `ileices status --json`."""
        verdict = self.verdict
        limits = self.runner.limits
        paused = self.runner.pause_reasons
        return {
            "limits": limits.to_dict(),
            "accepting_work": not self.runner.refusal_reasons() and not paused,
            "accepting_storage": bool(verdict is None or verdict.accept_storage),
            "reasons": list(verdict.reasons) if verdict else [],
            "paused": paused,
            "telemetry": None if self.telemetry is None else self.telemetry.__dict__,
            "capability": None if self.capability is None else self.capability.to_dict(),
            "runner": self.runner.snapshot(),
        }

    def _set_limits(self, limits: VolunteerLimits) -> None:
        save_limits(self.data_dir, limits)
        self.runner.update_limits(limits)
        self._dirty = True

    async def _check_guardrails(self) -> None:
        self._next_check = trio.current_time() + self.config.telemetry_interval
        try:
            telemetry = await trio.to_thread.run_sync(sample_telemetry, self.data_dir)
        except OSError as exc:
            log.warning("cannot sample telemetry: %s", exc)
            return
        verdict = evaluate_guardrails(telemetry, self.config.guardrails)
        changed = self.verdict is None or verdict.reasons != self.verdict.reasons
        self.telemetry, self.verdict = telemetry, verdict
        self.runner.block_new_work([] if verdict.accept_new_work else verdict.reasons)
        if verdict.pause_work:
            self.runner.pause(GUARDRAIL_PAUSE, "; ".join(verdict.reasons))
        else:
            self.runner.resume(GUARDRAIL_PAUSE)
        if changed:
            for reason in verdict.reasons:
                log.warning("guardrail: %s", reason)
            self._dirty = True
        await self._maybe_publish()

    async def _benchmark(self) -> None:
        config = BenchConfig(include_torch=False)
        try:
            self.bench = await trio.to_thread.run_sync(
                _benchmark_in_child, self.data_dir, self.config.benchmark_runs, config
            )
        except Exception as exc:  # a killed or failed child: no figures this time, the node goes on
            log.warning("the micro-benchmark failed: %s", exc)
            return
        self._assess()
        self._dirty = True
        await self._maybe_publish()

    def _assess(self) -> None:
        if self.probe is not None and self.bench is not None:
            uptime = trio.current_time() - self._started
            self.capability = assess_capability(self.probe, self.bench, uptime_s=uptime, now=time.time())

    async def _maybe_publish(self) -> None:
        now = trio.current_time()
        if not self._dirty or now - self._last_published < self.config.min_publish_interval:
            return
        self._dirty = False
        self._last_published = now
        await self._publish(self.manifest_details())

    def manifest_details(self) -> dict[str, Any]:
        """What the mesh learns about this machine: enough to match work, nothing private."""
        probe = self.probe
        details: dict[str, Any] = {"limits": self.runner.limits.to_dict()}
        if probe is not None:
            details["hardware"] = {
                "cpu": probe.cpu.model,
                "logical_cores": probe.cpu.cores_logical,
                "memory_bytes": probe.memory.total_bytes,
                "gpus": [gpu.name for gpu in probe.gpus],
            }
        if self.capability is not None:
            details["score"] = self.capability.score
            details["parts"] = self.capability.parts
            details["rby"] = self.capability.rby
        if self.verdict is not None:
            details["accepting_work"] = self.verdict.accept_new_work
        return json.loads(json.dumps(details, default=str))  # type: ignore[no-any-return]


BENCHMARK_NICE = 10
"""The benchmark child's niceness: it measures the best of several repetitions, so giving way
to the node (and to the volunteer's own programs) costs it little."""


def _lower_priority() -> None:
    os.nice(BENCHMARK_NICE)


def _benchmark_in_child(data_dir: Path, runs: int, config: BenchConfig) -> BenchmarkReport:
    """Run the micro-benchmarks in a fresh (spawned, not forked: the node has threads) process."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context, initializer=_lower_priority) as pool:
        return pool.submit(run_microbenchmarks, data_dir, runs=runs, config=config).result()
