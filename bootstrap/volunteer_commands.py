"""`ileices volunteer`, `pause`, `resume`, `stop-all` and `run`: what a volunteer offers and controls.

Limits belong to the machine, not to a running node: with no node running they are
stored for its next start, which is not an error. A node that refuses them (or stops
before confirming) is one, and says so on one line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from actors.hardware_daemon import load_limits, save_limits
from bootstrap.control_client import ControlClientError, NodeNotRunning, control_request
from bootstrap.node_calls import ask, fail
from bootstrap.options import DataDirOption
from kernels.volunteer_limits import LimitsError, VolunteerLimits, apply_cli_values
from mesh.data_dir import DataDir


def volunteer(
    data_dir: DataDirOption,
    cpu: Annotated[
        str | None, typer.Option("--cpu", help="CPU share: 100 = one core, 50 = half a core.")
    ] = None,
    gpu: Annotated[
        str | None, typer.Option("--gpu", help="GPU share in percent; 0 hides GPUs from tasks.")
    ] = None,
    ram: Annotated[
        str | None, typer.Option("--ram", help="Memory for tasks, e.g. 4G; 'none' lifts it.")
    ] = None,
    hours: Annotated[str | None, typer.Option("--hours", help="When work may run, e.g. 22-07.")] = None,
    disk: Annotated[
        str | None,
        typer.Option(
            "--disk", help="Disk for the mesh's artifact shares, e.g. 20G; 0 offers none; 'none' lifts it."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the limits as JSON.")] = False,
) -> None:
    """Set what this machine offers the mesh; with no options, show the current limits.

    Limits are stored in DATA_DIR and applied at once to a running node (running tasks
    included); options you leave out keep their stored value.
    """
    if not DataDir(data_dir).is_initialised():
        fail(f"{data_dir} holds no node; run `ileices init` or `ileices join` first")
    try:
        limits = apply_cli_values(load_limits(data_dir), cpu=cpu, gpu=gpu, ram=ram, hours=hours, disk=disk)
    except (LimitsError, ValueError) as exc:
        fail(str(exc))
        return
    changed = any(value is not None for value in (cpu, gpu, ram, hours, disk))
    if changed:
        typer.echo(f"limits {_apply_or_store(data_dir, limits)}", err=True)
    typer.echo(json.dumps(limits.to_dict()) if as_json else _describe(limits.to_dict()))


def _apply_or_store(data_dir: Path, limits: VolunteerLimits) -> str:
    """Hand the limits to the running node (which stores them), or store them for its next start.

    A node the limits were sent to but that stopped before confirming may or may not have
    stored them: they are stored here too (the same values) and the command fails, saying so.
    """
    try:
        reply = control_request(data_dir, {"op": "set_limits", "limits": limits.to_dict()})
    except NodeNotRunning:
        save_limits(data_dir, limits)
        return "stored; the node applies them when it starts"
    except ControlClientError as exc:
        save_limits(data_dir, limits)
        fail(f"{exc}; the limits are stored in {data_dir} for the node's next start")
        raise
    if not reply.get("ok"):
        fail(str(reply.get("error", "the node refused")))
    return "applied to the running node"


def _describe(limits: dict[str, Any]) -> str:
    return "  ".join(f"{key}={value}" for key, value in limits.items())


def pause(data_dir: DataDirOption) -> None:
    """Pause all work on the running node (tasks are suspended, none start) until `resume`."""
    ask(data_dir, {"op": "pause"})
    typer.echo("paused: tasks suspended, no new work accepted")


def resume(data_dir: DataDirOption) -> None:
    """Let the running node work again after `pause`."""
    ask(data_dir, {"op": "resume"})
    typer.echo("resumed")


def stop_all(data_dir: DataDirOption) -> None:
    """The kill switch: stop every running task on the node at once."""
    reply = ask(data_dir, {"op": "stop_all"})
    typer.echo(f"stopped {reply['volunteer']['stopped']} task(s)")


def run(
    command: Annotated[list[str], typer.Argument(help="The program and its arguments (after --).")],
    data_dir: DataDirOption,
    name: Annotated[str, typer.Option("--name", help="A label for the task.")] = "task",
) -> None:
    """Run a program on the node as a task, held to the volunteer limits (local work)."""
    reply = ask(data_dir, {"op": "run_task", "argv": command, "name": name})
    task = reply["task"]
    if not task["started"]:
        fail("refused: " + "; ".join(task["reasons"]))
    typer.echo(json.dumps({"task_id": task["task_id"], "pid": task["pid"]}))
