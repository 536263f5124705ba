"""PNG plots of a run (matplotlib, Agg backend: no display needed).

Four pictures answer the questions people ask first: did the population behave as the
scenario said, how fast do records spread, what does it cost on the wire, and how fast
are crashes noticed.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from simulations.report import Report


def write_plots(report: Report, out_dir: Path) -> list[Path]:
    """Write the four PNGs into `out_dir` and return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    series = report.series
    paths: list[Path] = []

    fig, ax = plt.subplots(figsize=(7, 3.5))
    if series.live_nodes:
        times = [t for t, _ in series.live_nodes] + [report.virtual_seconds]
        counts = [n for _, n in series.live_nodes] + [series.live_nodes[-1][1]]
        ax.step(times, counts, where="post")
    ax.set_xlabel("virtual time (s)")
    ax.set_ylabel("live nodes")
    ax.set_title(f"Live nodes (seed {report.seed})")
    ax.grid(alpha=0.3)
    paths.append(_save(fig, out_dir / "live_nodes.png"))

    fig, ax = plt.subplots(figsize=(7, 3.5))
    latencies = sorted(series.dissemination_latencies)
    if latencies:
        n = len(latencies)
        ax.plot(latencies, [(i + 1) / n for i in range(n)])
        bound = report.dissemination.get("analytic_bound_s")
        if isinstance(bound, float | int):
            ax.axvline(bound, color="red", linestyle="--", label=f"analytic bound {bound:.2f}s")
            ax.legend(loc="lower right")
    ax.set_xlabel("time from publish to acceptance at a node (s)")
    ax.set_ylabel("fraction of (record, node) pairs")
    ax.set_title("Dissemination latency CDF")
    ax.grid(alpha=0.3)
    paths.append(_save(fig, out_dir / "dissemination_cdf.png"))

    fig, ax1 = plt.subplots(figsize=(7, 3.5))
    width = series.bucket_s
    starts = [i * width for i in range(len(series.bucket_messages))]
    per_node_msgs = [
        m / width / live if live else 0.0
        for m, live in zip(series.bucket_messages, series.bucket_live, strict=False)
    ]
    per_node_bytes = [
        b / width / live if live else 0.0
        for b, live in zip(series.bucket_bytes, series.bucket_live, strict=False)
    ]
    ax1.plot(starts, per_node_msgs, color="tab:blue", label="messages/node/s")
    ax1.set_xlabel("virtual time (s)")
    ax1.set_ylabel("messages per node per second", color="tab:blue")
    ax2 = ax1.twinx()
    ax2.plot(starts, per_node_bytes, color="tab:orange", label="bytes/node/s")
    ax2.set_ylabel("bytes per node per second", color="tab:orange")
    ax1.set_title("Traffic per node")
    ax1.grid(alpha=0.3)
    paths.append(_save(fig, out_dir / "traffic.png"))

    fig, ax = plt.subplots(figsize=(7, 3.5))
    if series.detection_times:
        ax.hist(series.detection_times, bins=min(40, max(5, len(series.detection_times) // 3)))
    ax.set_xlabel("time from crash to first 'dead' verdict (s)")
    ax.set_ylabel("crashes")
    ax.set_title("Failure-detection time")
    ax.grid(alpha=0.3)
    paths.append(_save(fig, out_dir / "failure_detection.png"))
    return paths


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
