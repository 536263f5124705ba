"""Run one scenario end to end: build the mesh, drive it with a progress bar, return the report.

This is the single entry point the CLI, the benchmark and the tests share, so a figure
in the docs and a test's assertion come from the very same code path.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable
from dataclasses import asdict

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from simulations.analytic import eager_push_t99_s, push_gossip_bound_s
from simulations.report import Report, Series, peak_rss_mb
from simulations.scenario import Scenario
from simulations.sim_node import ElectionFactory
from simulations.world import StoreFactory, World

_STEP_EVENTS = 20000


def run_simulation(
    scenario: Scenario,
    progress: bool = False,
    *,
    store_factory: StoreFactory | None = None,
    election_factory: ElectionFactory | None = None,
    console: Console | None = None,
) -> Report:
    """Simulate `scenario` and return its report; `progress` shows rich bars on stderr.

    Two bars: building the initial mesh (minutes at 5000 nodes), then the run itself with
    virtual time, live nodes, speed and the time left.
    """
    bar = _progress_bar(console) if progress else None
    with bar if bar is not None else contextlib.nullcontext():
        setup_started = time.perf_counter()
        if store_factory is None:
            world = World(scenario, election_factory=election_factory)
        else:
            world = World(scenario, store_factory=store_factory, election_factory=election_factory)
        world.bootstrap(on_built=None if bar is None else _setup_reporter(bar, scenario.nodes))
        world.start()
        # The initial mesh lives as long as the run: move it out of the collector's sight,
        # so full collections stop re-scanning a million objects that can never be freed.
        # Young collections are rare too: almost all garbage here is freed by reference
        # counting, and with the defaults collections took a sixth of a 1000-node run.
        gc.collect()
        gc.freeze()
        thresholds = gc.get_threshold()
        gc.set_threshold(100_000, 50, 1000)
        setup_seconds = time.perf_counter() - setup_started
        try:
            return _drive(world, scenario, bar, setup_seconds)
        finally:
            gc.set_threshold(*thresholds)
            gc.unfreeze()


def _progress_bar(console: Console | None) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}[/bold]"),
        BarColumn(),
        TextColumn("{task.fields[virtual]}"),
        TextColumn("live {task.fields[live]}"),
        TextColumn("{task.fields[speed]}"),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
        console=console or Console(stderr=True),
        transient=False,
    )


def _setup_reporter(bar: Progress, nodes: int) -> Callable[[int], None]:
    task = bar.add_task("build mesh", total=nodes, virtual=f"0/{nodes} nodes", live=0, speed="")

    def built(count: int) -> None:
        bar.update(task, completed=count, virtual=f"{count}/{nodes} nodes", live=count)

    return built


def _drive(world: World, scenario: Scenario, bar: Progress | None, setup_seconds: float) -> Report:
    engine = world.engine
    duration = scenario.duration_s
    started = time.perf_counter()
    if bar is not None:
        task = bar.add_task("simulate", total=duration, virtual="0s", live=len(world.live), speed="")

        def update() -> None:
            wall = time.perf_counter() - started
            speed = engine.now / wall if wall > 0 else 0.0
            bar.update(
                task,
                completed=engine.now,
                virtual=f"{engine.now:7.1f}s / {duration:g}s",
                live=len(world.live),
                speed=f"{speed:6.1f}x",
            )

        engine.run_until(duration, on_step=update, step_every=_STEP_EVENTS)
        update()
    else:
        engine.run_until(duration)
    world.finish()
    wall = time.perf_counter() - started
    return build_report(world, wall, setup_seconds)


def build_report(world: World, wall_seconds: float, setup_seconds: float) -> Report:
    scenario = world.scenario
    engine = world.engine
    live_at_end = world.live_indices()
    dissemination = world.dissemination.summary(live_at_end)
    bound = push_gossip_bound_s(len(world.live) or scenario.nodes, world.dissemination_config, scenario)
    dissemination["analytic_bound_s"] = bound
    dissemination["eager_push_estimate_s"] = eager_push_t99_s(
        len(world.live) or scenario.nodes, world.dissemination_config, scenario
    )
    t99 = dissemination.get("t99_median_s")
    dissemination["t99_over_bound"] = (t99 / bound) if isinstance(t99, float) and bound > 0 else None
    virtual = engine.now
    live_series = world.bucket_live
    node_seconds = sum(live_series) * engine.bucket_s if live_series else 0.0
    messages = {
        "sent": engine.messages_sent,
        "bytes": engine.bytes_sent,
        "delivered": engine.messages_delivered,
        "malformed_dropped": engine.malformed_dropped,
        "per_node_per_s": engine.messages_sent / node_seconds if node_seconds else None,
        "bytes_per_node_per_s": engine.bytes_sent / node_seconds if node_seconds else None,
        "events_processed": engine.events_processed,
        "verify_cache_hits": world.verifier.hits,
        "verify_cache_misses": world.verifier.misses,
        "by_type": {name: {"messages": n, "bytes": b} for name, (n, b) in sorted(engine.by_type.items())},
    }
    detection = world.detection.summary()
    p95 = detection.get("p95_s")
    hub = world.hub.summary(virtual, float(p95) if p95 is not None else None)
    series = Series(
        live_nodes=world.population.samples,
        bucket_s=engine.bucket_s,
        bucket_messages=engine.bucket_messages,
        bucket_bytes=engine.bucket_bytes,
        bucket_live=live_series,
        dissemination_latencies=world.dissemination.latencies(live_at_end),
        detection_times=world.detection.detection_times,
    )
    return Report(
        nodes=scenario.nodes,
        virtual_seconds=virtual,
        wall_seconds=wall_seconds,
        setup_seconds=setup_seconds,
        seed=scenario.seed,
        digest=engine.digest(),
        peak_rss_mb=peak_rss_mb(),
        invariants=world.checker.summary(),
        dissemination=dissemination,
        failure_detection=detection,
        hub=hub,
        messages=messages,
        churn={
            "crashes": world.churn.crashes,
            "leaves": world.churn.leaves,
            "joins": world.churn.joins,
            "restarts": world.churn.restarts,
            "published": world.workload.published,
            "forged": world.workload.forged,
        },
        network={
            "dropped_loss": world.network.dropped_loss,
            "dropped_partition": world.network.dropped_partition,
        },
        convergence={
            "quiet_at_s": world.quiet_at,
            "bound_s": world.convergence_bound_s,
            "converged_after_s": world.checker.converged_after_s,
        },
        live_nodes_end=len(world.live),
        violations=[v.to_json() for v in world.checker.violations],
        stopped_early=engine.stop_reason,
        scenario=_scenario_json(scenario),
        series=series,
        storage=None if world.storage is None else world.storage.summary(virtual, node_seconds),
    )


def _scenario_json(scenario: Scenario) -> dict[str, object]:
    data = asdict(scenario)
    network = data["network"]
    network["inter_region_s"] = {f"{a}-{b}": v for (a, b), v in scenario.network.inter_region_s.items()}
    return data
