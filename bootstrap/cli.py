"""The `ileices` command: one typer app whose subcommands are the user's verbs.

`main` is also where failures are sorted. A person at a terminal who points a command
at a directory they cannot write, or whose node stops while answering, has made no
programming error: they get one line, `error: <cause> (<what to do>)`, and exit status
1. What counts as such an expected failure is listed once, in `EXPECTED_ERRORS` (and
`LAZY_EXPECTED_ERRORS` for classes of modules too heavy to import for every command).
An exception a library raised *from* an OSError (`raise ... from`, as libp2p wraps a busy
port in its own `QUICListenError`) counts as that OSError. Anything else is a bug and
keeps its traceback, so that it gets reported rather than papered over. A node's
failures arrive from trio as exception groups; a group is expected when every exception
in it is, and its messages are joined with "; ".
"""

from __future__ import annotations

import errno
import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from bootstrap.bench_command import run_bench
from bootstrap.demo_command import run_demo
from bootstrap.node_commands import invite, join, note, revoke, status, up
from bootstrap.options import DataDirOption
from bootstrap.simulate_command import simulate
from bootstrap.storage_commands import artifacts, get, put, rm
from bootstrap.volunteer_commands import pause, resume, run, stop_all, volunteer
from mesh.data_dir import DataDirError, found_mesh
from mesh.keyfile import KeyFileError
from mesh.record_database import DatabaseError
from protocols.join.invite import InviteError, InviteTermsError

EXPECTED_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # files, permissions, full disks, addresses in use, the control socket
    DataDirError,
    KeyFileError,
    DatabaseError,  # a corrupt or unreadable database (add its finer classes here)
    InviteError,
    InviteTermsError,
)
"""Failures caused by the environment or the user's input: one line, exit status 1."""
LAZY_EXPECTED_ERRORS: tuple[tuple[str, str], ...] = (
    ("mesh.node_parts", "NodeError"),
    ("mesh.control_server", "ControlError"),
)
"""(module, class) pairs also expected, looked up only if the module was imported: these
modules pull in libp2p, which most commands never load, and an exception of a class
whose module was never imported cannot have been raised."""

_OS_ERROR_HINTS = {
    errno.EACCES: "use a directory you own, or fix its permissions",
    errno.EPERM: "use a directory you own, or fix its permissions",
    errno.EROFS: "that file system is read-only: use a directory on a writable disk",
    errno.ENOTDIR: "part of that path is a file, not a directory: choose another path",
    errno.EEXIST: "a file is in the way: choose another path",
    errno.ENOENT: "check the path",
    errno.ENOSPC: "the disk is full: free some space",
    errno.EDQUOT: "your disk quota is used up: free some space",
    errno.ENAMETOOLONG: "choose a shorter path",
    errno.EMFILE: "too many open files: raise the limit (ulimit -n)",
    errno.EADDRINUSE: "another program listens there: choose another --listen port",
    errno.EADDRNOTAVAIL: "this machine has no such address: check --listen",
}

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
app.command()(put)
app.command()(get)
app.command()(artifacts)
app.command()(rm)


def main() -> None:
    """Run the command line; an expected failure becomes one `error:` line and exit status 1."""
    try:
        app()
    except Exception as exc:
        message = expected_error_message(exc)
        if message is None:
            raise
        one_line = " ".join(line.strip() for line in message.splitlines() if line.strip())
        typer.echo(f"error: {one_line}", err=True)
        raise SystemExit(1) from None


def expected_error_message(exc: BaseException) -> str | None:
    """One line for an expected failure (or a group of them); None for anything else (a bug)."""
    if isinstance(exc, BaseExceptionGroup):
        parts = [expected_error_message(inner) for inner in exc.exceptions]
        if not parts or any(part is None for part in parts):
            return None
        return "; ".join(dict.fromkeys(part for part in parts if part is not None))
    expected = EXPECTED_ERRORS + tuple(
        getattr(sys.modules[module], name) for module, name in LAZY_EXPECTED_ERRORS if module in sys.modules
    )
    if isinstance(exc, OSError):
        return describe_os_error(exc)
    if isinstance(exc, expected):
        return str(exc) or type(exc).__name__
    cause = _os_error_cause(exc)
    if cause is not None:  # a library's wrapper, e.g. libp2p's QUICListenError for a busy port
        hint = _hint(cause)
        return f"{exc}" + (f" ({hint})" if hint else "")
    return None


def _os_error_cause(exc: BaseException) -> OSError | None:
    """The OSError that `exc` was explicitly raised from (`raise ... from`), however deep."""
    seen: set[int] = set()
    cause = exc.__cause__
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, OSError):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__
    return None


def describe_os_error(exc: OSError) -> str:
    """`PATH: Reason (what to do)` for an operating-system error, without Python's `[Errno N]`."""
    if exc.strerror is None:
        return str(exc)
    paths = [str(path) for path in (exc.filename, exc.filename2) if path is not None]
    subject = f"{' -> '.join(paths)}: " if paths else ""
    hint = _hint(exc)
    return f"{subject}{exc.strerror}" + (f" ({hint})" if hint else "")


def _hint(exc: OSError) -> str | None:
    return _OS_ERROR_HINTS.get(exc.errno) if exc.errno is not None else None


if __name__ == "__main__":
    main()
