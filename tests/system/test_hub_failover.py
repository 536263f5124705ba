"""Five `ileices` node processes elect the founder as hub, survive a SIGKILL of the hub, and
keep the restarted old hub from acting; the hub admits for an inviter that is away.

Everything goes through real processes and the CLI (the ProcessMesh harness), as in
tests/system/test_mesh_processes.py. The tests share one mesh and run in order.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.mesh_processes import NodeProcess, ProcessMesh, member_state, wait_until

FAILOVER_FACTOR = 3.0
"""The issue's bound: a new hub is visible everywhere within 3x the failure-detection time."""
DETECTION_FLOOR_S = 5.0
"""The detection time the bound is taken over when the measured one is shorter (membership's
documented deadline); a fast detection must not make the bound stricter than the issue's."""


class HubMesh:
    def __init__(self, root: Path) -> None:
        self.procs = ProcessMesh(root)
        self.a, self.b, self.c, self.d, self.e = (self.procs.node(name) for name in "abcde")
        self.failover: dict[str, Any] = {}

    @property
    def all(self) -> list[NodeProcess]:
        return [self.a, self.b, self.c, self.d, self.e]

    def hub(self, node: NodeProcess) -> dict[str, Any] | None:
        document = self.procs.try_status(node)
        return None if document is None else document.get("hub")


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubMesh]:
    built = HubMesh(tmp_path_factory.mktemp("hubmesh"))
    try:
        procs = built.procs
        procs.found(built.a, [built.b, built.c, built.d, built.e])
        yield built
    finally:
        built.procs.close()


def test_the_founder_is_hub_with_a_full_council(mesh: HubMesh) -> None:
    founder = mesh.a.node_id
    seen: dict[str, Any] = {}

    def settled() -> bool:
        for node in mesh.all:
            seen[node.name] = mesh.hub(node)
        views = {None if h is None else (h["node_id"], h["term"], tuple(h["council"])) for h in seen.values()}
        if len(views) != 1:
            return False
        view = views.pop()
        # Right after each reconfiguration the hub is not acting for a round trip, until
        # the council acknowledges its first renewal in the new term.
        acting = [name for name, hub in seen.items() if hub is not None and hub["acting_here"]]
        return view is not None and view[0] == founder and len(view[2]) == 5 and acting == ["a"]

    wait_until(settled, 40, lambda: f"the founder as hub with a 5-member council everywhere: {seen}")
    # Council members hear every renewal (each second), so they know the lease is running.
    leases: dict[str, Any] = {}

    def leases_running() -> bool:
        for node in (mesh.b, mesh.c, mesh.d, mesh.e):
            leases[node.name] = (mesh.hub(node) or {}).get("lease_expires_in_s")
        return all(lease is not None and 0 < lease <= 3.0 for lease in leases.values())

    wait_until(leases_running, 5, lambda: f"council members to see the hub's lease running: {leases}")


def test_sigkill_of_the_hub_elects_a_higher_term_everywhere_in_time(mesh: HubMesh) -> None:
    survivors = [mesh.b, mesh.c, mesh.d, mesh.e]
    before = mesh.hub(mesh.b)
    assert before is not None and before["node_id"] == mesh.a.node_id
    old_term = int(before["term"])
    mesh.procs.kill(mesh.a)
    killed_at = time.monotonic()
    detected_at: float | None = None
    elected_at: float | None = None
    notes = 0
    last: dict[str, Any] = {}
    while time.monotonic() - killed_at < 30 and (detected_at is None or elected_at is None):
        documents = {n.name: mesh.procs.status(n) for n in survivors}
        now = time.monotonic()
        if detected_at is None and all(member_state(d, mesh.a.node_id) == "dead" for d in documents.values()):
            detected_at = now
        hubs = {name: d["hub"] for name, d in documents.items()}
        last = hubs
        if (
            elected_at is None
            and all(
                h is not None and h["term"] > old_term and h["node_id"] != mesh.a.node_id
                for h in hubs.values()
            )
            and len({h["node_id"] for h in hubs.values()}) == 1
        ):
            elected_at = now
        # Meanwhile every survivor keeps signing notes while council members sign votes and
        # the winner signs hub records: one seq allocator must keep them all distinct.
        survivor = survivors[notes % len(survivors)]
        mesh.procs.request(survivor, {"op": "note", "key": f"during-failover-{notes}", "value": "x"})
        notes += 1
        time.sleep(0.05)
    assert detected_at is not None, "the survivors never all marked the killed hub dead"
    assert elected_at is not None, f"no new hub visible everywhere within 30 s: {last}"
    detection = detected_at - killed_at
    failover = elected_at - killed_at
    mesh.failover = {"detection_s": detection, "failover_s": failover, "old_term": old_term}
    print(
        f"hub SIGKILL: detected dead everywhere in {detection:.1f}s, "
        f"new hub visible everywhere in {failover:.1f}s"
    )
    assert failover <= FAILOVER_FACTOR * max(detection, DETECTION_FLOOR_S)

    # The user-facing command agrees, on every survivor.
    shown = [d["hub"] for d in mesh.procs.status_cli(survivors)]
    assert len({h["node_id"] for h in shown}) == 1 and all(h["term"] > old_term for h in shown)
    new_hub = shown[0]["node_id"]
    assert new_hub in {n.node_id for n in survivors}
    mesh.failover["new_hub"] = new_hub

    def one_acting() -> bool:
        acting = [n for n in survivors if (mesh.hub(n) or {}).get("acting_here")]
        return [n.node_id for n in acting] == [mesh.hub(mesh.b)["node_id"]]  # type: ignore[index]

    wait_until(one_acting, 10, "exactly the new hub acting")
    for document in [mesh.procs.status(n) for n in survivors]:
        records = document["counters"]["records"]
        assert records.get("equivocation", 0) == 0, records
        assert document["counters"]["node"].get("election_record_refused", 0) == 0


def test_the_restarted_old_hub_sees_the_newer_term_and_does_not_act(mesh: HubMesh) -> None:
    if mesh.a.running or not mesh.failover:
        pytest.skip("needs the previous test's kill")
    mesh.procs.up(mesh.a)
    mesh.procs.wait_running([mesh.a])
    seen: dict[str, Any] = {}
    # Until it has caught up it still believes its own old term, but it cannot act in it:
    # acting needs a majority of its council to acknowledge a renewal, and they refuse.
    started = time.monotonic()
    while time.monotonic() - started < 20:
        hub = mesh.hub(mesh.a)
        assert hub is None or not hub["acting_here"], f"the restarted old hub acts: {hub}"
        if hub is not None and hub["node_id"] != mesh.a.node_id and hub["term"] > mesh.failover["old_term"]:
            seen = hub
            break
        time.sleep(0.1)
    assert seen, "the restarted old hub never learned the newer term"
    document = mesh.procs.status_cli([mesh.a])[0]
    assert document["hub"]["node_id"] != mesh.a.node_id
    assert document["hub"]["acting_here"] is False
    # ...and it stays that way while it rejoins (it is a council candidate again later).
    time.sleep(2)
    assert not mesh.hub(mesh.a)["acting_here"]  # type: ignore[index]


def test_the_hub_admits_with_the_invite_of_an_inviter_that_is_away(mesh: HubMesh) -> None:
    if not mesh.failover:
        pytest.skip("needs the failover")
    hub_id = mesh.hub(mesh.b)["node_id"]  # type: ignore[index]
    inviter = next(n for n in (mesh.c, mesh.d, mesh.e, mesh.b) if n.node_id != hub_id)
    hub_node = next(n for n in mesh.all if n.node_id == hub_id)
    token = mesh.procs.invite(inviter, "--uses", "1", "--ttl", "10m")
    mesh.procs.kill(inviter)
    mesh.procs.wait_states([hub_node], inviter, "dead", timeout=20)
    joiner = mesh.procs.node("f")
    mesh.procs.join(joiner, token)
    mesh.procs.wait_running([joiner], timeout=45)
    assert f"admitted by {hub_id[:12]}" in joiner.output()
    # The single use is spent for the hub too: a second joiner is refused. A hub whose lease
    # lapsed for a moment (elections under load, issue 13) answers "not the acting hub"
    # instead, as it must; the joiner then tries again, as a user would.
    for attempt in range(3):
        second = mesh.procs.node(f"g{attempt}")
        mesh.procs.start(second, "join", token)
        assert second.process is not None
        second.process.wait(timeout=60)
        assert second.process.returncode != 0
        if "not the acting hub" not in second.output():
            break
        wait_until(lambda: (mesh.hub(hub_node) or {}).get("acting_here") is True, 30, "an acting hub again")
    assert "used up" in second.output(), second.output()[-2000:]
    admissions = json.dumps(mesh.procs.status(hub_node)["clock"])
    assert joiner.node_id in admissions
