"""`ileices put`, `get`, `artifacts` and `rm`: artifacts stored in the mesh, from the command line.

The running node does the work (`mesh.storage_service`); these commands ask it through
the control socket. `put` and `get` start a job on the node and follow its progress
with a progress bar (polled twice a second), so a Ctrl-C here stops watching, not the
transfer. Every command takes `--json` for scripts, which prints one JSON object and no
bar.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from bootstrap.node_calls import ask, fail
from bootstrap.options import DataDirOption

POLL_S = 0.5
_TTL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_TTL_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_ttl(text: str) -> float:
    """`30d`, `12h`, `90m`, `3600` (seconds) or `never` (0: never expires)."""
    if text.strip().lower() == "never":
        return 0.0
    match = _TTL.match(text.lower())
    if match is None:
        raise typer.BadParameter(f"{text!r} is not a time to live like 30d, 12h, 90m or never")
    seconds = float(match.group(1)) * _TTL_UNITS[match.group(2)]
    if seconds <= 0:
        raise typer.BadParameter("a time to live must be positive (or `never`)")
    return seconds


def _follow(data_dir: Path, job: dict[str, Any], as_json: bool, label: str) -> dict[str, Any]:
    """Poll the job until it ends; show a bar unless `as_json`. Returns its final view."""
    if as_json:
        while job["state"] == "running":
            time.sleep(POLL_S)
            job = ask(data_dir, {"op": "job", "id": job["id"]})["job"]
        return job
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=True) as progress:
        task = progress.add_task(label, total=job["total"] or None)
        while job["state"] == "running":
            progress.update(
                task,
                description=f"{label}: {job['phase']}",
                total=job["total"] or None,
                completed=job["done"],
            )
            time.sleep(POLL_S)
            job = ask(data_dir, {"op": "job", "id": job["id"]})["job"]
    return job


def _run_job(data_dir: Path, request: dict[str, Any], as_json: bool, label: str) -> dict[str, Any] | None:
    """Start a job on the node and follow it to its end; its result, or None once printed as JSON."""
    job = _follow(data_dir, ask(data_dir, request, timeout=60.0)["job"], as_json, label)
    if job["state"] != "done":
        fail(str(job["error"]))
    result: dict[str, Any] = job["result"]
    if as_json:
        typer.echo(json.dumps(result))
        return None
    return result


def put(
    data_dir: DataDirOption,
    file: Annotated[
        Path,
        typer.Argument(help="The file to store in the mesh.", exists=True, dir_okay=False, readable=True),
    ],
    k: Annotated[
        int | None, typer.Option("--k", min=1, max=255, help="Shares needed to rebuild (default 3).")
    ] = None,
    n: Annotated[int | None, typer.Option("--n", min=1, max=255, help="Shares made (default 10).")] = None,
    ttl: Annotated[str, typer.Option("--ttl", help="How long the mesh keeps it: 30d, 12h, never.")] = "30d",
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Store FILE in the mesh: compressed, erasure-coded into n shares on n nodes; prints its id.

    Any k of the n shares rebuild it, so it survives n - k holders leaving; the mesh
    repairs lost shares by itself. In a small mesh k and n shrink to fit it (the output
    says what the artifact can survive).
    """
    if k is not None and n is not None and k > n:
        fail(f"--k {k} is more than --n {n}: k of n shares rebuild the file, so k <= n")
    request = {"op": "put", "path": str(file.resolve()), "k": k, "n": n, "ttl_s": parse_ttl(ttl)}
    result = _run_job(data_dir, request, as_json, f"put {file.name}")
    if result is None:
        return
    typer.echo(result["artifact_id"])
    typer.echo(
        f"stored {_size(result['size'])} as {result['placed']} share(s), any {result['k']} rebuild "
        f"it: survives {result['survives']} holder(s) leaving",
        err=True,
    )


def get(
    data_dir: DataDirOption,
    artifact_id: Annotated[str, typer.Argument(metavar="ID", help="The artifact id `put` printed.")],
    out: Annotated[Path, typer.Option("-o", "--output", help="Where to write the file.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Fetch an artifact from the mesh into a file, checked against its id.

    The file appears only once it is whole and correct; a transfer cut short resumes
    from where it stopped when you run the command again.
    """
    request = {"op": "get", "id": artifact_id, "out": str(out.resolve())}
    result = _run_job(data_dir, request, as_json, f"get {artifact_id[:12]}")
    if result is None:
        return
    typer.echo(f"wrote {_size(result['size'])} to {result['path']}", err=True)


def artifacts(
    data_dir: DataDirOption,
    as_json: Annotated[bool, typer.Option("--json", help="Print the list as JSON.")] = False,
) -> None:
    """List the mesh's artifacts with their health: healthy shares of n, and what each survives."""
    rows = ask(data_dir, {"op": "artifacts"})["artifacts"]
    if as_json:
        typer.echo(json.dumps(rows))
        return
    if not rows:
        typer.echo("no artifacts (store one with `ileices put FILE`)")
        return
    typer.echo(f"{'id':<14}{'name':<24}{'size':>10}  {'health':<8}{'survives'}")
    for row in rows:
        survives = "LOST" if row["survives"] < 0 else f"{row['survives']} loss(es)"
        typer.echo(
            f"{row['artifact_id'][:12]:<14}{row['name'][:22]:<24}{_size(row['size']):>10}  "
            f"{row['healthy']}/{row['n']:<6}{survives}"
        )


def rm(
    data_dir: DataDirOption,
    artifact_id: Annotated[str, typer.Argument(metavar="ID", help="The artifact to delete (yours only).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Delete an artifact you own: every holder frees its shares when the tombstone reaches it."""
    removed = ask(data_dir, {"op": "rm", "id": artifact_id})["removed"]
    if as_json:
        typer.echo(json.dumps(removed))
        return
    typer.echo(("already deleted: " if removed["already"] else "deleted: ") + removed["artifact_id"])


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} B"
