"""`ileices up`, `join`, `invite`, `status` and `revoke`: running a node and operating it."""

from __future__ import annotations

import json
import logging
import signal
import sys
import time
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import trio
import typer
from rich.console import Console
from rich.table import Table

from bootstrap.control_client import NodeNotRunning, control_request
from mesh.control_server import ControlError, serve_control
from mesh.data_dir import DataDir, DataDirError, prepare_joiner
from mesh.keyfile import KeyFileError
from mesh.node import DEFAULT_LISTEN, Node, NodeConfig, NodeError
from mesh.record_database import DatabaseError
from protocols.invite import Invite, InviteError, check_invite, decode_token
from simulations.scenario import ScenarioError, parse_duration

DataDirOption = Annotated[
    Path, typer.Option("--data-dir", help="The node's directory: key, database and logs live here.")
]
ListenOption = Annotated[
    list[str] | None,
    typer.Option("--listen", help=f"QUIC multiaddr to listen on (repeatable). Default {DEFAULT_LISTEN}."),
]
LogLevelOption = Annotated[str, typer.Option("--log-level", help="debug, info, warning or error.")]


def _fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _setup_logging(data_dir: Path, level: str) -> None:
    log_dir = DataDir(data_dir).log_dir
    log_dir.mkdir(parents=True, exist_ok=True)
    numeric = getattr(logging, level.upper(), None)
    if not isinstance(numeric, int):
        _fail(f"unknown log level {level!r}")
        return
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    file_handler = logging.FileHandler(log_dir / "node.log")
    file_handler.setFormatter(fmt)
    stderr_handler = logging.StreamHandler(sys.stderr)
    stderr_handler.setFormatter(fmt)
    root = logging.getLogger()
    root.handlers[:] = [file_handler, stderr_handler]
    root.setLevel(numeric)
    for noisy in ("libp2p", "aioquic", "quic", "multiaddr", "async_service", "root"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))


async def _stop_on_signals(node: Node) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            node.stop()
            return


async def _run_node(data_dir: Path, listen: list[str], join: Invite | None) -> None:
    node = Node(DataDir(data_dir), NodeConfig(listen=listen))
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(node.run, join=join))
        await nursery.start(serve_control, node)
        nursery.start_soon(_stop_on_signals, node)
        status = await node.status()
        typer.echo(
            f"node {status['node_id'][:16]} up in mesh {status['mesh_id'][:16]}, "
            f"listening on {' '.join(status['listen'])}",
            err=True,
        )
        await node.finished.wait()
        nursery.cancel_scope.cancel()


def _run(data_dir: Path, listen: list[str] | None, join: Invite | None) -> None:
    try:
        trio.run(_run_node, data_dir, listen or [DEFAULT_LISTEN], join)
    except* (NodeError, ControlError, DataDirError, KeyFileError, DatabaseError, InviteError) as group:
        _fail("; ".join(str(exc) for exc in _leaves(group)))


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


def up(data_dir: DataDirOption, listen: ListenOption = None, log_level: LogLevelOption = "info") -> None:
    """Run this node (the founder's, or a member's) until Ctrl-C, then leave gracefully."""
    if not DataDir(data_dir).is_initialised():
        _fail(f"{data_dir} holds no node; found a mesh with `ileices init` or join one with `ileices join`")
    _setup_logging(data_dir, log_level)
    _run(data_dir, listen, None)


def join(
    token: Annotated[str, typer.Argument(help="The invite token you were given (ileices1...).")],
    data_dir: DataDirOption,
    listen: ListenOption = None,
    log_level: LogLevelOption = "info",
) -> None:
    """Join a mesh with an invite token, then keep running as a node (like `up`)."""
    try:
        invite = decode_token(token)
        check_invite(invite, mesh=None, now=time.time())
        prepare_joiner(data_dir, invite.body.mesh)
    except (InviteError, DataDirError, KeyFileError, DatabaseError) as exc:
        _fail(str(exc))
        return
    _setup_logging(data_dir, log_level)
    _run(data_dir, listen, invite)


def _ask(data_dir: Path, request: dict[str, Any]) -> dict[str, Any]:
    try:
        reply = control_request(data_dir, request)
    except NodeNotRunning as exc:
        _fail(str(exc))
        raise
    except OSError as exc:
        _fail(f"cannot talk to the node on {data_dir}: {exc}")
        raise
    if not reply.get("ok"):
        _fail(str(reply.get("error", "the node refused")))
    return reply


def invite(
    data_dir: DataDirOption,
    ttl: Annotated[str, typer.Option("--ttl", help="How long the token is valid, e.g. 24h, 30m.")] = "24h",
    uses: Annotated[int, typer.Option("--uses", min=1, help="How many nodes may join with it.")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help='Print {"token": ...}.')] = False,
) -> None:
    """Issue an invite token from the running node on DATA_DIR (it admits whoever presents it)."""
    try:
        ttl_s = parse_duration(ttl, "--ttl")
    except ScenarioError as exc:
        _fail(str(exc))
        return
    reply = _ask(data_dir, {"op": "invite", "ttl_s": ttl_s, "uses": uses})
    if as_json:
        typer.echo(json.dumps({"token": reply["token"]}))
    else:
        typer.echo(reply["token"])
        typer.echo(f"valid for {ttl}, {uses} use(s); give it to: ileices join TOKEN --data-dir DIR", err=True)


def status(
    data_dir: DataDirOption,
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
) -> None:
    """Ask the running node on DATA_DIR for its members, records and clock."""
    document = _ask(data_dir, {"op": "status"})["status"]
    if as_json:
        typer.echo(json.dumps(document))
        return
    console = Console()
    console.print(f"node [cyan]{document['node_id'][:16]}[/cyan] in mesh {document['mesh_id'][:16]}")
    console.print(f"records: {document['records']}   state digest: {document['state_digest'][:16]}")
    table = Table("member", "state", "addresses")
    for member in document["members"]:
        colour = {"alive": "green", "suspect": "yellow", "dead": "red"}.get(member["state"], "white")
        table.add_row(
            member["node_id"][:16], f"[{colour}]{member['state']}[/{colour}]", " ".join(member["addrs"])
        )
    console.print(table)
    clock = ", ".join(f"{author[:8]}:{seq}" for author, seq in document["clock"].items())
    console.print(f"clock: {clock}")


def revoke(
    node: Annotated[str, typer.Argument(help="The member's node id (hex, as `status` shows it).")],
    data_dir: DataDirOption,
    reason: Annotated[str, typer.Option("--reason", help="Recorded with the revocation.")] = "",
) -> None:
    """Revoke a member: its new records are refused everywhere and its connections closed."""
    try:
        if len(bytes.fromhex(node)) != 32:
            raise ValueError
    except ValueError:
        _fail("NODE must be a 64-character hexadecimal node id")
    reply = _ask(data_dir, {"op": "revoke", "node": node, "reason": reason})
    typer.echo(f"revoked {node[:16]} (revocation record seq {reply['seq']})")
