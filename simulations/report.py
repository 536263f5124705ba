"""The result of a run as one JSON document (`report.json`), plus the time series the plots need.

The top-level keys are a contract: the CLI's `--json`, the benchmark and the docs read
them, so fields are only ever added, never renamed.
"""

from __future__ import annotations

import json
import resource
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (ru_maxrss is KiB on Linux)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    divisor = 1024 * 1024 if sys.platform == "darwin" else 1024
    return round(peak / divisor, 1)


@dataclass
class Series:
    """Time series for the plots; kept out of report.json to keep that file readable."""

    live_nodes: list[tuple[float, int]] = field(default_factory=list)
    bucket_s: float = 10.0
    bucket_messages: list[int] = field(default_factory=list)
    bucket_bytes: list[int] = field(default_factory=list)
    bucket_live: list[float] = field(default_factory=list)
    dissemination_latencies: list[float] = field(default_factory=list)
    detection_times: list[float] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "live_nodes": self.live_nodes,
            "bucket_s": self.bucket_s,
            "bucket_messages": self.bucket_messages,
            "bucket_bytes": self.bucket_bytes,
            "bucket_live": self.bucket_live,
            "dissemination_latencies": self.dissemination_latencies,
            "detection_times": self.detection_times,
        }


@dataclass
class Report:
    """Everything a run produced that a person or a tool will want to read."""

    nodes: int
    virtual_seconds: float
    wall_seconds: float
    setup_seconds: float
    seed: int
    digest: str
    peak_rss_mb: float
    invariants: dict[str, dict[str, Any]]
    dissemination: dict[str, Any]
    failure_detection: dict[str, Any]
    hub: dict[str, Any]
    messages: dict[str, Any]
    churn: dict[str, Any]
    network: dict[str, Any]
    convergence: dict[str, Any]
    live_nodes_end: int
    violations: list[dict[str, Any]]
    stopped_early: str | None
    scenario: dict[str, Any]
    series: Series = field(default_factory=Series)
    storage: dict[str, Any] | None = None
    """Artifacts, losses, repairs and their traffic (`simulations/storage_model.py`); None without any."""

    @property
    def speedup(self) -> float:
        return self.virtual_seconds / self.wall_seconds if self.wall_seconds > 0 else float("inf")

    @property
    def ok(self) -> bool:
        return self.stopped_early is None and all(entry["ok"] for entry in self.invariants.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "nodes": self.nodes,
            "virtual_seconds": round(self.virtual_seconds, 3),
            "wall_seconds": round(self.wall_seconds, 3),
            "setup_seconds": round(self.setup_seconds, 3),
            "speedup": round(self.speedup, 2),
            "seed": self.seed,
            "digest": self.digest,
            "peak_rss_mb": self.peak_rss_mb,
            "invariants": self.invariants,
            "dissemination": _rounded(self.dissemination),
            "failure_detection": _rounded(self.failure_detection),
            "hub": _rounded(self.hub),
            "convergence": _rounded(self.convergence),
            "messages": _rounded(self.messages),
            "churn": self.churn,
            "network": self.network,
            "live_nodes_end": self.live_nodes_end,
            "violations": self.violations,
            "stopped_early": self.stopped_early,
            "scenario": self.scenario,
            "storage": None if self.storage is None else _rounded(self.storage),
        }

    def write(self, out_dir: Path) -> Path:
        """Write report.json and series.json into `out_dir`; return the report's path."""
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "report.json"
        path.write_text(json.dumps(self.to_json(), indent=2, sort_keys=False) + "\n", encoding="utf-8")
        (out_dir / "series.json").write_text(json.dumps(self.series.to_json()) + "\n", encoding="utf-8")
        return path


def _rounded(values: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in values.items()}
