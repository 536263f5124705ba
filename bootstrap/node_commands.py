"""`ileices up`, `join`, `invite`, `status` and `revoke`: running a node and operating it.

What can be checked before a node starts is checked before it starts, with a one-line
reason, because afterwards the failure is worse: a `join` whose control socket cannot
be created has already been admitted (and used up an invite), and an `up` on a data
directory whose key is not a member of the mesh its records describe (another mesh's
key copied in, a join that never completed, a revoked node) would run with nobody
willing to talk to it and never say why. Failures that escape the commands (files that
cannot be written, a node's errors from inside trio) are turned into one line by
`bootstrap.cli.main`.
"""

from __future__ import annotations

import fcntl
import json
import signal
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TextIO

import trio
import typer
from rich.console import Console
from rich.table import Table

from bootstrap.log_setup import parse_log_level, setup_node_logging
from bootstrap.node_calls import ask, fail
from bootstrap.options import DataDirOption
from mesh.control_socket import socket_path_problem
from mesh.data_dir import DataDir, DataDirError, prepare_joiner
from mesh.keyfile import KeyFileError
from mesh.record_database import DatabaseError
from protocols.join.invite import (
    MAX_USES,
    Invite,
    InviteError,
    InviteTermsError,
    check_invite,
    check_terms,
    decode_token,
)
from simulations.scenario import ScenarioError, parse_duration

if TYPE_CHECKING:
    from mesh.node import Node

# `mesh.node` (and with it libp2p, ~0.8 s of imports) is imported only by the commands
# that run a node, so `status`, `invite` and a refused `join` answer quickly.

ListenOption = Annotated[
    list[str] | None,
    typer.Option(
        "--listen",
        help="QUIC multiaddr to listen on (repeatable). Default /ip4/127.0.0.1/udp/0/quic-v1.",
    ),
]
LOCK_FILE = "node.lock"
LogLevelOption = Annotated[str, typer.Option("--log-level", help="debug, info, warning or error.")]


def _setup_logging(data_dir: Path, level: str) -> None:
    numeric = parse_log_level(level)
    if numeric is None:
        fail(f"unknown log level {level!r}: use debug, info, warning or error")
        return
    setup_node_logging(DataDir(data_dir).log_dir / "node.log", numeric)


async def _stop_on_signals(node: Node) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            node.stop()
            return


async def _run_node(data_dir: Path, listen: list[str] | None, join: Invite | None) -> None:
    from mesh.control_server import serve_control
    from mesh.node import Node, NodeConfig

    node = Node(DataDir(data_dir), NodeConfig(listen=listen) if listen else NodeConfig())
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


def _lock_data_dir(data_dir: Path) -> TextIO:
    """Hold an exclusive lock on DATA_DIR/node.lock for as long as this process runs.

    Two nodes on one data directory would share a key and a database and sign different
    records with the same seq (an equivocation that gets the node revoked), so the
    second `up` must fail before it starts anything. The kernel drops the lock when the
    process dies, SIGKILL included, so a crash never leaves the directory locked.
    """
    handle = (data_dir / LOCK_FILE).open("a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        fail(f"a node is already running on {data_dir}")
    return handle


def _run(data_dir: Path, listen: list[str] | None, join: Invite | None, log_level: str) -> None:
    """Run the node in the foreground; its failures (exception groups) go to `cli.main`."""
    lock = _lock_data_dir(data_dir)
    try:
        _setup_logging(data_dir, log_level)
        trio.run(_run_node, data_dir, listen, join)
    finally:
        lock.close()


def up(data_dir: DataDirOption, listen: ListenOption = None, log_level: LogLevelOption = "info") -> None:
    """Run this node (the founder's, or a member's) until Ctrl-C, then leave gracefully.

    Refuses when DATA_DIR's key is not a member of the mesh its records describe.
    """
    if not DataDir(data_dir).is_initialised():
        fail(f"{data_dir} holds no node; found a mesh with `ileices init` or join one with `ileices join`")
    _check_before_start(data_dir, listen)
    _run(data_dir, listen, None, log_level)


def _check_before_start(data_dir: Path, listen: list[str] | None) -> None:
    """What would otherwise fail only once the node runs (for `join`: after being admitted)."""
    problem = socket_path_problem(data_dir)
    if problem is not None:
        fail(problem)
    import multiaddr  # light (~25 ms), unlike the libp2p that the node itself pulls in

    for address in listen or []:
        try:
            protocols = [protocol.name for protocol in multiaddr.Multiaddr(address).protocols()]
        except ValueError as exc:
            fail(f"--listen {address!r} is not a multiaddr ({exc}); e.g. /ip4/0.0.0.0/udp/4001/quic-v1")
            return
        if "udp" not in protocols or "quic-v1" not in protocols:
            fail(f"--listen {address!r} is not a QUIC address; e.g. /ip4/0.0.0.0/udp/4001/quic-v1")


def join(
    token: Annotated[str, typer.Argument(help="The invite token you were given (ileices1...).")],
    data_dir: DataDirOption,
    listen: ListenOption = None,
    log_level: LogLevelOption = "info",
) -> None:
    """Join a mesh with an invite token, then keep running as a node (like `up`)."""
    try:
        invite = decode_token(token)
        check_invite(invite, mesh=_mesh_of(data_dir), now=time.time())
        _check_before_start(data_dir, listen)
        prepare_joiner(data_dir, invite.body.mesh)
    except (InviteError, DataDirError, KeyFileError, DatabaseError) as exc:
        fail(str(exc))
        return
    _run(data_dir, listen, invite, log_level)


def _mesh_of(data_dir: Path) -> bytes | None:
    """The mesh a data directory already belongs to (None if it holds no node yet).

    Checked before anything else so that a token of another mesh is reported as the
    token's problem ("wrong mesh"), whatever else is wrong with it.
    """
    directory = DataDir(data_dir)
    if not directory.is_initialised():
        return None
    database = directory.open_database()
    try:
        return directory.mesh_id(database)
    finally:
        database.close()


def invite(
    data_dir: DataDirOption,
    ttl: Annotated[str, typer.Option("--ttl", help="How long the token is valid, e.g. 24h, 30m.")] = "24h",
    uses: Annotated[
        int, typer.Option("--uses", help=f"How many nodes may join with it (1 to {MAX_USES}).")
    ] = 1,
    as_json: Annotated[bool, typer.Option("--json", help='Print {"token": ...}.')] = False,
) -> None:
    """Issue an invite token from the running node on DATA_DIR (it admits whoever presents it)."""
    try:
        ttl_s = parse_duration(ttl, "--ttl")
        check_terms(ttl_s, uses)
    except (ScenarioError, InviteTermsError) as exc:
        fail(str(exc))
        return
    reply = ask(data_dir, {"op": "invite", "ttl_s": ttl_s, "uses": uses})
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
    document = ask(data_dir, {"op": "status"})["status"]
    if as_json:
        typer.echo(json.dumps(document))
        return
    console = Console()
    console.print(f"node [cyan]{document['node_id'][:16]}[/cyan] in mesh {document['mesh_id'][:16]}")
    console.print(f"data directory: {document.get('data_dir', data_dir)}")
    console.print(f"records: {document['records']}   state digest: {document['state_digest'][:16]}")
    console.print(_hub_line(document.get("hub")))
    console.print(_storage_line(document.get("storage")))
    table = Table("member", "state", "addresses")
    for member in document["members"]:
        colour = {"alive": "green", "suspect": "yellow", "dead": "red"}.get(member["state"], "white")
        table.add_row(
            member["node_id"][:16], f"[{colour}]{member['state']}[/{colour}]", " ".join(member["addrs"])
        )
    console.print(table)
    clock = ", ".join(f"{author[:8]}:{seq}" for author, seq in document["clock"].items())
    console.print(f"clock: {clock}")


def _hub_line(hub: dict[str, Any] | None) -> str:
    """One line on the elected hub: who, which term, its council, and how long its lease runs."""
    if hub is None:
        return "hub: none known yet"
    lease = hub["lease_expires_in_s"]
    if lease is None:
        lease_text = "lease: not heard"
    elif lease >= 0:
        lease_text = f"lease: {lease:.1f}s left"
    else:
        lease_text = f"lease: last heard one ran out {-lease:.1f}s ago"
    council = ", ".join(member[:8] for member in hub["council"])
    here = " [green](this node, acting)[/green]" if hub.get("acting_here") else ""
    who = f"hub: [cyan]{hub['node_id'][:16]}[/cyan]{here}   term {hub['term']}"
    return f"{who}   council: {council}   {lease_text}"


def _storage_line(storage: dict[str, Any] | None) -> str:
    """One line on this node's storage shard: what it holds, and why it refuses shares if it does."""
    if storage is None:
        return "storage: not running"
    held = f"{storage['shares']} share(s), {storage['used_bytes'] / 2**20:.1f} MiB"
    offered = storage["offered_bytes"]
    offer = "up to the disk guardrail" if offered is None else f"{offered / 2**30:.1f} GiB offered"
    if storage["accepting"]:
        state = "[green]accepting shares[/green]"
    else:
        state = f"[yellow]refusing shares: {storage['refusal']}[/yellow]"
    return f"storage: {held} ({offer}); {state}; {storage['nodes']} storage node(s) live"


def revoke(
    node: Annotated[str, typer.Argument(help="The member's node id (hex, as `status` shows it).")],
    data_dir: DataDirOption,
    reason: Annotated[str, typer.Option("--reason", help="Recorded with the revocation.")] = "",
) -> None:
    """Revoke a member: its new records are refused everywhere, it leaves every member list, its
    connections close and it cannot join again. Run it on the founder's node or on the acting hub's
    (while it holds its lease; `status` shows `acting_here`)."""
    try:
        if len(bytes.fromhex(node)) != 32:
            raise ValueError
    except ValueError:
        fail("NODE must be a 64-character hexadecimal node id")
    reply = ask(data_dir, {"op": "revoke", "node": node, "reason": reason})
    typer.echo(f"revoked {node[:16]} (revocation record seq {reply['seq']})")


def note(
    key: Annotated[str, typer.Argument(help="The note's name; publishing it again replaces it.")],
    value: Annotated[str, typer.Argument(help="The text (at most 4096 bytes).")],
    data_dir: DataDirOption,
) -> None:
    """Publish a signed note from the running node on DATA_DIR; every member receives it."""
    reply = ask(data_dir, {"op": "note", "key": key, "value": value})
    typer.echo(f"published note {key!r} (record seq {reply['seq']})")
