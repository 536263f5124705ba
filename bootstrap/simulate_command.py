"""`ileices simulate`: run N simulated nodes on virtual time and report what happened.

The lead registers `simulate` as a typer command; everything it does (parse options,
run, write report.json and plots, print a summary or the JSON) lives here so the CLI
module only wires it up.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from simulations.report import Report
from simulations.run import run_simulation
from simulations.scenario import ScenarioError, build_scenario


def simulate(
    nodes: Annotated[
        int | None, typer.Option("--nodes", help="Simulated nodes at t=0 (default 100).")
    ] = None,
    duration: Annotated[
        str | None, typer.Option("--duration", help="Virtual duration, e.g. 10m, 90s (default 2m).")
    ] = None,
    churn: Annotated[
        str | None, typer.Option("--churn", help="Departure (and arrival) rate, e.g. 5%/min; 0 for none.")
    ] = None,
    loss: Annotated[str | None, typer.Option("--loss", help="Message loss, e.g. 1%.")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed: same seed, same run (default 1).")] = None,
    kill_hub_every: Annotated[
        str | None,
        typer.Option(
            "--kill-hub-every", help="Crash the acting hub this often, e.g. 3m (it restarts 30s later)."
        ),
    ] = None,
    artifacts: Annotated[
        int | None, typer.Option("--artifacts", help="Artifacts stored in the mesh, k-of-n (default 0).")
    ] = None,
    artifact_mb: Annotated[
        float | None, typer.Option("--artifact-mb", help="Size of each artifact in MiB (default 64).")
    ] = None,
    k: Annotated[
        int | None, typer.Option("--k", help="Shares needed to rebuild an artifact (default 3).")
    ] = None,
    n: Annotated[int | None, typer.Option("--n", help="Shares stored per artifact (default 10).")] = None,
    repair: Annotated[
        bool | None,
        typer.Option("--repair/--no-repair", help="Repair artifacts as holders go (default: repair)."),
    ] = None,
    scenario: Annotated[
        Path | None, typer.Option("--scenario", help="TOML scenario file (see docs/simulation.md).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Directory for report.json, series.json and PNG plots.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON on stdout.")] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
) -> None:
    """Simulate a mesh of many nodes running the real protocol cores under churn."""
    try:
        parsed = build_scenario(
            nodes=nodes,
            duration=duration,
            churn=churn,
            loss=loss,
            seed=seed,
            scenario_file=scenario,
            kill_hub_every=kill_hub_every,
            artifacts=artifacts,
            artifact_mb=artifact_mb,
            k=k,
            n=n,
            repair=repair,
        )
        report = run_simulation(parsed, progress=progress and sys.stderr.isatty())
    except ScenarioError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    if out is not None:
        report.write(out)
        from simulations.plots import write_plots  # matplotlib costs ~1 s to import: only when plotting

        write_plots(report, out)
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2))
    else:
        print_summary(report, Console(), out)
    if not report.ok:
        raise typer.Exit(code=1)


def print_summary(report: Report, console: Console, out: Path | None) -> None:
    table = Table(title=f"simulation: {report.nodes} nodes, seed {report.seed}", show_header=False)
    table.add_column("what")
    table.add_column("value")
    table.add_row(
        "virtual / wall",
        f"{report.virtual_seconds:.0f}s / {report.wall_seconds:.1f}s "
        f"(speedup {report.speedup:.1f}x, setup {report.setup_seconds:.1f}s)",
    )
    table.add_row("peak memory", f"{report.peak_rss_mb:.0f} MiB")
    for name, entry in report.invariants.items():
        verdict = "[green]ok[/green]" if entry["ok"] else f"[red]FAILED ({entry['violations']})[/red]"
        table.add_row(f"invariant {name}", verdict)
    d = report.dissemination
    table.add_row(
        "dissemination",
        f"p50 {_s(d.get('p50_s'))}, p99 {_s(d.get('p99_s'))}, coverage {_pct(d.get('coverage'))}, "
        f"99% of nodes in {_s(d.get('t99_median_s'))} (bound {_s(d.get('analytic_bound_s'))})",
    )
    f = report.failure_detection
    table.add_row(
        "failure detection",
        f"p50 {_s(f.get('p50_s'))}, p95 {_s(f.get('p95_s'))}, false positives {f.get('false_positives')}",
    )
    h = report.hub
    table.add_row(
        "hub",
        f"{h.get('terms')} terms, max hubs per term {h.get('max_hubs_per_term')}, "
        f"{h.get('kills')} kills, failover p50 {_s(h.get('failover_p50_s'))} "
        f"p95 {_s(h.get('failover_p95_s'))}, "
        f"availability {_pct(h.get('availability'))}",
    )
    storage = report.storage
    if storage is not None:
        table.add_row(
            "storage",
            f"{storage['artifacts']} artifacts ({storage['k']}-of-{storage['n']}), "
            f"lost {storage['lost']}, unavailable at end {storage['unavailable_at_end']}, "
            f"min healthy {storage['min_healthy']}, "
            f"below repair threshold {_pct(storage['below_threshold_fraction'])} of artifact-time",
        )
        table.add_row(
            "repairs",
            f"{storage['repairs_ok']} done, {storage['repairs_failed']} failed"
            + ("" if storage["repair"] else " (repair off)")
            + f", {_bytes(storage['repair_bytes'])} moved, "
            f"{_bytes(storage['repair_bytes_per_node_per_hour'])} per node per hour, "
            f"busiest node {_bytes(storage['busiest_node_repair_bytes_per_s'])}/s",
        )
    table.add_row("digest", report.digest[:16])
    if report.stopped_early:
        table.add_row("[red]stopped[/red]", report.stopped_early)
    if out is not None:
        table.add_row("written to", str(out))
    console.print(table)


def _s(value: object) -> str:
    return f"{value:.2f}s" if isinstance(value, float | int) else "-"


def _bytes(value: object) -> str:
    if not isinstance(value, float | int):
        return "-"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= scale:
            return f"{value / scale:.1f} {unit}"
    return f"{value:.0f} B"


def _pct(value: object) -> str:
    return f"{100 * value:.2f}%" if isinstance(value, float | int) else "-"
