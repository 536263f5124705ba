"""The `ileices` command: one typer app whose subcommands are the user's verbs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from bootstrap.bench_command import run_bench
from bootstrap.demo_command import run_demo
from bootstrap.node_commands import invite, join, note, revoke, status, up
from bootstrap.simulate_command import simulate
from bootstrap.volunteer_commands import pause, resume, run, stop_all, volunteer
from mesh.data_dir import DataDirError, found_mesh
from mesh.keyfile import KeyFileError
from mesh.record_database import DatabaseError

app = typer.Typer(
    help=(
        "Ileices: pool your computers into one peer-to-peer mesh.\n\n"
        "Start with `ileices demo`, or found your own mesh with "
        "`ileices init --data-dir ~/.ileices`."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

DataDirOption = Annotated[
    Path, typer.Option("--data-dir", help="The node's directory: key, database and logs live here.")
]


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


@app.command()
def init(
    data_dir: DataDirOption,
    name: Annotated[str, typer.Option("--name", help="A name for the new mesh.")] = "my mesh",
    as_json: Annotated[bool, typer.Option("--json", help="Print {node_id, mesh_id} as JSON.")] = False,
) -> None:
    """Create this node's identity and found a new mesh (its genesis record).

    Refuses, changing nothing, if DATA_DIR already holds a node.
    """
    try:
        founded = found_mesh(data_dir, name)
    except (DataDirError, KeyFileError, DatabaseError, OSError) as exc:
        _fail(str(exc))
        return
    if as_json:
        typer.echo(json.dumps({"node_id": founded.node_id.hex(), "mesh_id": founded.mesh_id.hex()}))
    else:
        typer.echo(f"founded mesh {founded.name!r}")
        typer.echo(f"  mesh id: {founded.mesh_id.hex()}")
        typer.echo(f"  node id: {founded.node_id.hex()}")
        typer.echo(f"  data:    {data_dir}")


@app.command()
def bench(
    data_dir: Annotated[
        Path, typer.Option("--data-dir", help="Where the disk benchmark writes (bounded, cleaned up).")
    ] = Path("."),
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
) -> None:
    """Probe this machine and run short micro-benchmarks: capability score and R/B/Y profile."""
    raise typer.Exit(run_bench(data_dir, as_json))


@app.command()
def demo(
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Found the demo mesh here (default: a temp dir).")
    ] = None,
    nodes: Annotated[int, typer.Option("--nodes", help="Simulated nodes.")] = 200,
    duration: Annotated[str, typer.Option("--duration", help="Virtual time to simulate.")] = "2m",
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same run.")] = 1,
) -> None:
    """A one-minute tour: found a mesh here, then simulate a mesh under churn."""
    raise typer.Exit(run_demo(data_dir, nodes, duration, seed))


app.command(name="simulate")(simulate)
app.command()(up)
app.command()(join)
app.command()(invite)
app.command()(status)
app.command()(revoke)
app.command()(note)
app.command()(volunteer)
app.command()(pause)
app.command()(resume)
app.command(name="stop-all")(stop_all)
app.command()(run)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
