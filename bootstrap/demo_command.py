"""`ileices demo`: a real three-node mesh on this machine, then a simulated mesh under churn.

The first thing a new user runs (the README's first command). It founds a mesh, starts
three real nodes on loopback (libp2p over QUIC) that join with invite tokens, shows
them converge, stops one and shows the others notice; then runs the simulator, which
drives the very same membership and dissemination cores for a few hundred nodes.
"""

from __future__ import annotations

import logging
import tempfile
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import trio
from rich.console import Console
from rich.table import Table

from bootstrap.log_setup import setup_node_logging
from bootstrap.simulate_command import print_summary
from mesh.data_dir import DataDir, DataDirError, found_mesh, prepare_joiner
from protocols.join.invite import decode_token
from simulations.run import run_simulation
from simulations.scenario import ScenarioError, build_scenario

if TYPE_CHECKING:
    from mesh.node import Node


def run_demo(data_dir: Path | None, nodes: int, duration: str, seed: int) -> int:
    from mesh.node import NodeError  # libp2p is a heavy import: only for commands that run nodes

    console = Console(stderr=False)
    path = data_dir or Path(tempfile.mkdtemp(prefix="ileices-demo-"))
    directory = DataDir(path)
    if directory.is_initialised():
        database = directory.open_database()
        try:
            store = directory.load_store(database)
        finally:
            database.close()
        console.print(
            f"[bold]1.[/bold] using the node already in {path}: "
            f"{len(store)} records, mesh {store.mesh_id.hex()[:16]}"
        )
    else:
        try:
            founded = found_mesh(path, name="demo mesh")
        except DataDirError as exc:
            console.print(f"[red]error:[/red] {exc}")
            return 1
        console.print(f"[bold]1.[/bold] founded mesh [cyan]{founded.mesh_id.hex()[:16]}[/cyan] in {path}")
        console.print(f"   node id {founded.node_id.hex()}  (key in {directory.key_file}, mode 0600)")
    # The nodes' own lines and the libraries' go to the demo's log file, not the screen.
    log_file = directory.log_dir / "demo.log"
    setup_node_logging(log_file, logging.INFO, terminal=False)
    console.print("[bold]2.[/bold] starting a real mesh of three nodes on loopback (QUIC):")
    console.print(f"   (the nodes' logs: {log_file})")
    failure: list[BaseException] = []
    try:
        trio.run(_real_mesh, path, console)
    except* NodeError as group:
        failure.extend(group.exceptions)
    if failure:
        console.print(f"[red]error:[/red] {failure[0]}")
        return 1
    console.print(
        f"[bold]3.[/bold] simulating {nodes} nodes for {duration} of virtual time with churn, "
        "running the real membership and dissemination cores:"
    )
    try:
        scenario = build_scenario(nodes=nodes, duration=duration, churn="5%/min", loss="1%", seed=seed)
        # Some problems (a run too short to check convergence) show only once the world is planned.
        report = run_simulation(scenario, progress=True)
    except ScenarioError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2
    print_summary(report, console, None)
    ok = all(entry["ok"] for entry in report.invariants.values())
    console.print("[green]every invariant held[/green]" if ok else "[red]an invariant failed[/red]")
    console.print("Next: `ileices simulate --nodes 1000 --duration 10m --churn 5%/min --out report/`")
    return 0 if ok else 1


async def _real_mesh(founder_dir: Path, console: Console) -> None:
    from mesh.node import Node

    founder = Node(DataDir(founder_dir))
    async with trio.open_nursery() as nursery:
        await nursery.start(founder.run)
        nodes = [founder]
        for name in ("friend-1", "friend-2"):
            token = await founder.api.make_invite(ttl_s=600, uses=1)
            console.print(f"   invite for {name}: {token[:40]}...")
            invite = decode_token(token)
            joiner_dir = founder_dir.parent / f"{founder_dir.name}-{name}"
            prepare_joiner(joiner_dir, invite.body.mesh)
            joiner = Node(DataDir(joiner_dir))
            await nursery.start(partial(joiner.run, join=invite))
            nodes.append(joiner)
        with trio.move_on_after(20):
            while not await _converged(nodes):
                await trio.sleep(0.2)
        await _show(nodes, console, "all three joined")
        nodes[2].stop()
        await nodes[2].finished.wait()
        with trio.move_on_after(20):
            while not await _sees_left(nodes[:2], nodes[2].node_id):
                await trio.sleep(0.2)
        await _show(nodes[:2], console, "friend-2 left (Ctrl-C); the others noticed")
        for node in nodes[:2]:
            node.stop()


async def _converged(nodes: list[Node]) -> bool:
    statuses = [await node.status() for node in nodes]
    digests = {status["state_digest"] for status in statuses}
    alive = all(
        sum(member["state"] == "alive" for member in status["members"]) == len(nodes) for status in statuses
    )
    return len(digests) == 1 and alive


async def _sees_left(nodes: list[Node], gone: bytes) -> bool:
    for node in nodes:
        states = {m["node_id"]: m["state"] for m in (await node.status())["members"]}
        if states.get(gone.hex()) not in ("left", "dead"):
            return False
    return True


async def _show(nodes: list[Node], console: Console, title: str) -> None:
    table = Table("node", "members (state)", "records", "state digest", title=title)
    for node in nodes:
        status = await node.status()
        members = ", ".join(f"{m['node_id'][:6]} {m['state']}" for m in status["members"])
        table.add_row(status["node_id"][:8], members, str(status["records"]), status["state_digest"][:12])
    console.print(table)
