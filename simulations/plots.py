"""PNG plots of a run (matplotlib, Agg backend: no display needed).

Five pictures answer the questions people ask first: did the population behave as the
scenario said, how fast do records spread, what does it cost on the wire, how fast
are crashes noticed, and which hub term was acting when.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from simulations.report import Report


def write_plots(report: Report, out_dir: Path) -> list[Path]:
    """Write the five PNGs into `out_dir` and return their paths."""
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
    per_node_msgs = [
        m / width / live if live else 0.0
        for m, live in zip(series.bucket_messages, series.bucket_live, strict=False)
    ]
    per_node_bytes = [
        b / width / live if live else 0.0
        for b, live in zip(series.bucket_bytes, series.bucket_live, strict=False)
    ]
    # a message sent at exactly the end opens one more bucket than the live samples cover
    starts = [i * width for i in range(len(per_node_msgs))]
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

    fig, ax = plt.subplots(figsize=(7, 3.5))
    times, terms = hub_term_steps(report.hub.get("timeline", []), report.virtual_seconds)
    if times:
        ax.step(times, terms, where="post")
    ax.set_xlabel("virtual time (s)")
    ax.set_ylabel("acting hub's term (0: none)")
    ax.set_title("Hub term over time")
    ax.grid(alpha=0.3)
    paths.append(_save(fig, out_dir / "hub_term.png"))
    return paths


def hub_term_steps(timeline: list[dict[str, object]], end: float) -> tuple[list[float], list[int]]:
    """The acting term as a step function of time, from the hub timeline (0 while no node acts)."""
    times: list[float] = [0.0]
    terms: list[int] = [0]
    for entry in timeline:
        at = entry.get("at_s")
        term = entry.get("term")
        if not isinstance(at, float | int) or not isinstance(term, int):
            continue
        acting = entry.get("event") == "acting"
        if entry.get("event") == "failover":
            continue
        times.append(float(at))
        terms.append(term if acting else 0)
    times.append(end)
    terms.append(terms[-1])
    return times, terms


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
