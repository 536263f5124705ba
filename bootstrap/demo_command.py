"""`ileices demo`: a real four-node mesh on this machine, then a simulated mesh under churn.

The first thing a new user runs (the README's first command). It founds a mesh, starts
four real nodes on loopback (libp2p over QUIC) that join with invite tokens and shows
them converge. Then the storage scene: the founder puts a file (2-of-3 erasure-coded
shares on three nodes), a holder leaves, another node gets the file back identical,
and the mesh repairs the lost share by itself. Last, the simulator drives the very
same cores for a few hundred nodes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    console.print("[bold]2.[/bold] starting a real mesh of four nodes on loopback (QUIC):")
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
        f"[bold]4.[/bold] simulating {nodes} nodes for {duration} of virtual time with churn, "
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
    from mesh.node import Node, NodeConfig
    from protocols.storage.config import StorageConfig

    # A fresh upload is left alone for `settle_s` (30 s) while its holders' records spread;
    # a demo on one machine spreads them in a second, and would otherwise wait idle.
    config = NodeConfig(storage=StorageConfig(settle_s=3.0, full_check_interval_s=5.0))
    founder = Node(DataDir(founder_dir), config)
    async with trio.open_nursery() as nursery:
        await nursery.start(founder.run)
        nodes = [founder]
        for name in ("friend-1", "friend-2", "friend-3"):
            token = await founder.api.make_invite(ttl_s=600, uses=1)
            console.print(f"   invite for {name}: {token[:40]}...")
            invite = decode_token(token)
            joiner_dir = founder_dir.parent / f"{founder_dir.name}-{name}"
            prepare_joiner(joiner_dir, invite.body.mesh)
            joiner = Node(DataDir(joiner_dir), config)
            await nursery.start(partial(joiner.run, join=invite))
            nodes.append(joiner)
        with trio.move_on_after(20):
            while not await _converged(nodes):
                await trio.sleep(0.2)
        await _show(nodes, console, "all four joined")
        leaver = await _storage_scene(nodes, founder_dir.parent, console)
        rest = [node for node in nodes if node is not leaver]
        await _show(rest, console, "a holder left (Ctrl-C); the others noticed")
        for node in rest:
            node.stop()


async def _storage_scene(nodes: list[Node], folder: Path, console: Console) -> Node:
    """Put a file, let a holder leave, get it back identical, watch the repair; returns who left."""
    founder = nodes[0]
    console.print("[bold]3.[/bold] storing a file in the mesh (`ileices put`): 2-of-3 erasure-coded shares")
    with trio.move_on_after(30):
        while (await founder.storage.status())["nodes"] < len(nodes):
            await trio.sleep(0.2)
    source = folder / "demo-artifact.bin"
    expected = await trio.to_thread.run_sync(_write_demo_file, source)
    put = await _run_job(founder, "put", lambda job: founder.storage.put(job, source, 2, 3, 3600.0))
    artifact = put["artifact_id"]
    console.print(
        f"   put {put['size'] // 1024} KiB: id [cyan]{artifact[:16]}[/cyan]..., {put['placed']} shares on "
        f"{put['placed']} nodes, survives {put['survives']} holder leaving"
    )
    holders = [node for node in nodes[1:] if node.storage.shares.holdings()]
    leaver = holders[0]
    getter = next(node for node in nodes[1:] if node is not leaver)
    leaver.stop()
    await leaver.finished.wait()
    left_at = trio.current_time()
    with trio.move_on_after(20):
        while not await _sees_left([getter], leaver.node_id):
            await trio.sleep(0.2)
    console.print(f"   holder {leaver.node_id.hex()[:8]} left, taking its share with it")
    back = folder / "demo-artifact.back"
    got = await _run_job(getter, "get", lambda job: getter.storage.get(job, bytes.fromhex(artifact), back))
    same = await trio.to_thread.run_sync(_sha256, back) == expected
    verdict = "[green]identical[/green]" if same else "[red]DIFFERENT[/red]"
    console.print(
        f"   `ileices get` on {getter.node_id.hex()[:8]}: {got['size'] // 1024} KiB back, {verdict}"
    )
    healthy = 0
    with trio.move_on_after(90):
        while healthy < 3:
            rows = await founder.storage.artifacts()
            healthy = next((row["healthy"] for row in rows if row["artifact_id"] == artifact), 0)
            await trio.sleep(0.5)
    if healthy >= 3:
        console.print(
            f"   repaired without a command: 3/3 shares healthy again "
            f"{trio.current_time() - left_at:.0f} s after the holder left (the hub rebuilt the lost share)"
        )
    else:
        console.print(f"   [yellow]repair not finished yet: {healthy}/3 healthy[/yellow]")
    return leaver


async def _run_job(node: Node, kind: str, work: Any) -> dict[str, Any]:
    job = node.storage.start_job(kind, work)
    while job.state == "running":
        await trio.sleep(0.1)
    if job.state != "done":
        from mesh.node import NodeError

        raise NodeError(f"{kind} failed: {job.error}")
    return job.result


def _write_demo_file(path: Path) -> str:
    """About 6 MiB, half random, half text: what zstd and the erasure code both work on."""
    text = b"ileices stores this line in a mesh of friends' computers\n" * 18_000
    data = os.urandom(3 * 1024 * 1024) + text[: 3 * 1024 * 1024]
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


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
