"""`ileices demo`: found a mesh on this machine, then watch a simulated mesh of its size run.

The first thing a new user runs (the README's first command): it shows, in under a
minute, the real pieces that exist today — identity and genesis on disk, and the same
membership and dissemination cores a node runs, driven by the simulator under churn.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from rich.console import Console

from bootstrap.simulate_command import print_summary
from mesh.data_dir import DataDir, DataDirError, found_mesh
from simulations.run import run_simulation
from simulations.scenario import build_scenario


def run_demo(data_dir: Path | None, nodes: int, duration: str, seed: int) -> int:
    console = Console(stderr=False)
    path = data_dir or Path(tempfile.mkdtemp(prefix="ileices-demo-"))
    directory = DataDir(path)
    if directory.is_initialised():
        database = directory.open_database()
        try:
            store = directory.load_store(database)
        finally:
            database.close()
        console.print(f"[bold]1.[/bold] using the node already in {path}: "
                      f"{len(store)} records, mesh {store.mesh_id.hex()[:16]}")
    else:
        try:
            founded = found_mesh(path, name="demo mesh")
        except DataDirError as exc:
            console.print(f"[red]error:[/red] {exc}")
            return 1
        console.print(f"[bold]1.[/bold] founded mesh [cyan]{founded.mesh_id.hex()[:16]}[/cyan] in {path}")
        console.print(f"   node id {founded.node_id.hex()}  (key in {directory.key_file}, mode 0600)")
    console.print(
        f"[bold]2.[/bold] simulating {nodes} nodes for {duration} of virtual time with churn, "
        "running the real membership and dissemination cores:"
    )
    scenario = build_scenario(nodes=nodes, duration=duration, churn="5%/min", loss="1%", seed=seed)
    report = run_simulation(scenario, progress=True)
    print_summary(report, console, None)
    ok = all(entry["ok"] for entry in report.invariants.values())
    console.print("[green]every invariant held[/green]" if ok else "[red]an invariant failed[/red]")
    console.print("Next: `ileices simulate --nodes 1000 --duration 10m --churn 5%/min --out report/`")
    return 0 if ok else 1
