"""A member revoked by a hub that is not the founder (issue 13): real `ileices` processes.

Founder F and members A, B, C. F leaves (SIGTERM), so one of A, B, C is elected hub; that
hub revokes another member X with `ileices revoke`. Then, on every node still running:

- X's new records are refused: X, restarted from a copy of its data directory taken
  before the revocation (so its own store still calls it a member), publishes a note
  and pushes it; no other node takes it, and their transports count its refused streams;
- X is absent from every `status` (membership dropped it for good);
- X's rejoin with an old invite (one issued before the revocation, by the member that is
  neither X nor the hub) is refused with a reason naming the revocation.

The tests share one mesh and run in order; about 50 s on the shared 2-core VM.
"""

from __future__ import annotations

import shutil
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mesh.data_dir import DATABASE_FILE, KEY_FILE
from tests.support.mesh_processes import (
    LOOPBACK_QUIC,
    NodeProcess,
    ProcessMesh,
    cli,
    describe,
    member_state,
    wait_until,
)

REASON = "lost laptop"


class RevocationMesh:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs = ProcessMesh(root)
        self.f, self.a, self.b, self.c = (self.procs.node(name) for name in "fabc")
        self.tokens: dict[str, str] = {}
        """An invite from each member, issued before anything was revoked."""
        self.snapshots: dict[str, Path] = {}
        """Each member's data directory as it was before anything was revoked."""
        self.hub: NodeProcess | None = None
        self.revoked: NodeProcess | None = None
        self.bystander: NodeProcess | None = None

    @property
    def members(self) -> list[NodeProcess]:
        return [self.a, self.b, self.c]

    @property
    def remaining(self) -> list[NodeProcess]:
        """The nodes still running after the revocation: the hub and the bystander."""
        assert self.hub is not None and self.bystander is not None
        return [self.hub, self.bystander]

    def by_id(self, node_id: str) -> NodeProcess:
        return next(node for node in self.members if node.node_id == node_id)


def snapshot(node: NodeProcess, into: Path) -> None:
    """A copy of a running node's data directory: its key, and its database through SQLite's
    online backup (consistent while the node writes)."""
    into.mkdir(mode=0o700, parents=True)
    shutil.copy2(node.data_dir / KEY_FILE, into / KEY_FILE)
    source = sqlite3.connect(node.data_dir / DATABASE_FILE)
    target = sqlite3.connect(into / DATABASE_FILE)
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RevocationMesh]:
    built = RevocationMesh(tmp_path_factory.mktemp("hubrevocation"))
    try:
        procs = built.procs
        procs.found(built.f, built.members)
        everyone = [built.f, *built.members]
        procs.wait_converged(everyone, timeout=60)
        for node in built.members:
            built.tokens[node.name] = procs.invite(node, "--uses", "2", "--ttl", "10m")
            built.snapshots[node.name] = built.root / f"{node.name}-before"
            snapshot(node, built.snapshots[node.name])
        yield built
    finally:
        built.procs.close()


def hub_of(procs: ProcessMesh, node: NodeProcess) -> dict[str, Any] | None:
    document = procs.try_status(node)
    return None if document is None else document.get("hub")


def test_a_member_elected_after_the_founder_leaves_revokes_another(mesh: RevocationMesh) -> None:
    procs = mesh.procs
    procs.kill(mesh.f, signal.SIGTERM)
    seen: dict[str, Any] = {}

    def a_member_acts_as_hub() -> bool:
        for node in mesh.members:
            seen[node.name] = hub_of(procs, node)
        acting = [name for name, hub in seen.items() if hub is not None and hub["acting_here"]]
        ids = {hub["node_id"] for hub in seen.values() if hub is not None}
        return len(acting) == 1 and ids == {getattr(mesh, acting[0]).node_id} and mesh.f.node_id not in ids

    wait_until(a_member_acts_as_hub, 60, lambda: f"a member acting as hub, agreed by all: {seen}", 0.5)
    hub = next(node for node in mesh.members if seen[node.name]["acting_here"])
    others = [node for node in mesh.members if node is not hub]
    mesh.hub, mesh.revoked, mesh.bystander = hub, others[0], others[1]
    target = mesh.revoked

    # The founder is away: only the acting hub may revoke; the bystander is told so in one line.
    refused = cli("revoke", target.node_id, "--data-dir", str(mesh.bystander.data_dir), check=False)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr, refused.stderr
    assert "only the mesh's founder or the acting hub" in refused.stderr, refused.stderr

    # A lease can lapse for a moment under load: try again until the hub is acting when asked.
    outcome: dict[str, str] = {}

    def revoked_by_hub() -> bool:
        result = cli(
            "revoke", target.node_id, "--data-dir", str(hub.data_dir), "--reason", REASON, check=False
        )
        outcome["stderr"] = result.stderr
        return result.returncode == 0

    wait_until(revoked_by_hub, 30, lambda: f"`ileices revoke` on the hub to succeed: {outcome}", 1.0)


def test_the_revoked_member_is_absent_from_every_status(mesh: RevocationMesh) -> None:
    procs = mesh.procs
    target = mesh.revoked
    assert target is not None
    documents: list[dict[str, Any]] = []

    def gone_everywhere() -> bool:
        nonlocal documents
        documents = [procs.status(node) for node in mesh.remaining]
        return all(member_state(document, target.node_id) is None for document in documents)

    wait_until(
        gone_everywhere, 30, lambda: f"{target.name} gone from every status: {describe(documents)}", 0.5
    )
    for document in documents:
        # It counts directly or, once the hub moved on to a new term, through its handover.
        verdicts = document["counters"]["revocations"]
        assert verdicts.get("counted", 0) + verdicts.get("handover_counted", 0) >= 1, verdicts
    # The revoked node itself is told: it can no longer invite anyone.
    wait_until(
        lambda: cli("invite", "--data-dir", str(target.data_dir), check=False).returncode != 0,
        30,
        f"{target.name}'s `invite` to fail",
        interval=1.0,
    )
    # And it stays gone: the remaining nodes still agree on everything a while later.
    time.sleep(3.0)
    for node in mesh.remaining:
        assert member_state(procs.status(node), target.node_id) is None


def test_its_new_records_are_refused_on_every_node(mesh: RevocationMesh) -> None:
    procs = mesh.procs
    target = mesh.revoked
    assert target is not None
    procs.kill(target, signal.SIGTERM)
    assert target.process is not None
    target.process.wait(timeout=20)
    refused_before = {node.name: procs.status(node)["counters"]["transport"] for node in mesh.remaining}
    # The same key, with the store it had before the revocation: it still thinks it is a member.
    stale = procs.node(f"{target.name}-stale")
    stale.data_dir = mesh.snapshots[target.name]
    procs.up(stale)
    procs.wait_running([stale])
    published = cli("note", "--data-dir", str(stale.data_dir), "after", "revoked", check=False)
    assert published.returncode == 0, published.stderr  # its own stale store takes it
    time.sleep(5.0)  # pushes and anti-entropy rounds: every one of them refused
    for node in mesh.remaining:
        lookup = {"op": "lookup", "author": target.node_id, "kind": "note", "key": "after"}
        reply = procs.request(node, lookup)
        assert reply["record"] is None, f"{node.name} took the revoked member's new record"
        assert member_state(procs.status(node), target.node_id) is None
    refused_after = {node.name: procs.status(node)["counters"]["transport"] for node in mesh.remaining}
    more = [
        name for name in refused_after if refused_after[name]["refused"] > refused_before[name]["refused"]
    ]
    assert more, (refused_before, refused_after)
    procs.kill(stale, signal.SIGTERM)
    assert stale.process is not None
    stale.process.wait(timeout=20)


def test_its_rejoin_with_an_old_invite_is_refused_with_the_reason(mesh: RevocationMesh) -> None:
    target, bystander = mesh.revoked, mesh.bystander
    assert target is not None and bystander is not None
    result = cli(
        "join",
        mesh.tokens[bystander.name],
        "--data-dir",
        str(target.data_dir),
        "--listen",
        LOOPBACK_QUIC,
        check=False,
        timeout=90,
    )
    assert result.returncode != 0, f"the revoked node joined again:\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    assert f"node {target.node_id[:16]} was revoked from this mesh by the hub of term" in result.stderr
    assert REASON in result.stderr
