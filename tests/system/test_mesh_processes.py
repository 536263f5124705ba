"""Five `ileices` node processes on loopback: join with tokens, converge, detect a SIGKILL,
rejoin and catch up, keep an unadmitted peer out, and refuse every kind of bad token.

This is the user's story end to end with nothing in-process: every node is started with
the CLI, exactly as a person would type it. The tests share one mesh and run in order
(convergence, rogue, bad tokens, kill, restart), which keeps the whole file near 60 s on
the 2-core machine instead of paying for five start-ups per test.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from bootstrap.control_client import control_request
from mesh.data_dir import found_mesh
from protocols.join.invite import TOKEN_PREFIX, decode_token, encode_token
from tests.support.mesh_processes import (
    NodeProcess,
    ProcessMesh,
    cli_many,
    describe,
    member_state,
    same_state,
    wait_until,
)
from tests.support.paths import SUPPORT_DIR

ROGUE = SUPPORT_DIR / "rogue_peer.py"
DETECTION_DEADLINE = 15.0


class Mesh5:
    """The shared mesh: founder `a`, joiners `b` (single-use token) and `c`, `d`, `e`."""

    def __init__(self, root: Path) -> None:
        self.procs = ProcessMesh(root)
        self.a = self.procs.node("a")
        self.b, self.c, self.d, self.e = (self.procs.node(name) for name in "bcde")
        self.single_use = ""
        self.multi_use = ""

    @property
    def all(self) -> list[NodeProcess]:
        return [self.a, self.b, self.c, self.d, self.e]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh5]:
    built = Mesh5(tmp_path_factory.mktemp("mesh5"))
    try:
        procs = built.procs
        procs.init(built.a)
        procs.up(built.a)
        procs.wait_running([built.a])
        built.single_use = procs.invite(built.a, "--uses", "1")
        built.multi_use = procs.invite(built.a, "--uses", "3", "--ttl", "10m")
        procs.join(built.b, built.single_use)
        for node in (built.c, built.d, built.e):
            procs.join(node, built.multi_use)
        procs.wait_running(built.all)
        yield built
    finally:
        built.procs.close()


def test_five_processes_reach_identical_record_sets(mesh: Mesh5) -> None:
    mesh.procs.wait_converged(mesh.all, timeout=30)
    # The user-facing command agrees: identical records, digest and clock on all five.
    # Records keep coming (a manifest with fresh hardware details, say), so one snapshot
    # may catch a record in flight: poll until one agrees.
    documents: list[dict[str, Any]] = []

    def cli_agrees() -> bool:
        nonlocal documents
        documents = mesh.procs.status_cli(mesh.all)
        return same_state(documents)

    wait_until(cli_agrees, 15, lambda: describe(documents), interval=0.5)
    first = documents[0]
    assert first["records"] >= 1 + 4 + 5  # genesis, four admissions, five manifests
    assert len(first["clock"]) == 5
    for document in documents:
        assert document["mesh_id"] == first["mesh_id"]
        assert {m["node_id"] for m in document["members"] if m["state"] == "alive"} == {
            n.node_id for n in mesh.all
        }
        assert all(m["addrs"] for m in document["members"]), "every member's address is known"


def test_an_unadmitted_process_cannot_get_a_single_record_accepted(mesh: Mesh5) -> None:
    target = mesh.b
    before = mesh.procs.status(target)
    addrs = [a for a in before["listen"] if "/quic-v1" in a]
    result = subprocess.run(
        [sys.executable, str(ROGUE), before["mesh_id"], target.node_id, *addrs],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    outcomes = report["outcomes"]
    refused = [name for name, outcome in outcomes.items() if outcome == "refused"]
    assert set(refused) == {
        "push_records",
        "sync_hello",
        "sync_request",
        "sync_delta",
        "ping",
        "member_table",
    }, outcomes
    # An invite the rogue signed itself names a non-member as its inviter: refused for that.
    self_signed = outcomes["join_self_signed_invite"]
    assert self_signed.startswith("join refused: invite token inviter not a member"), outcomes
    assert "tampered" in outcomes["join_forged_invite"], outcomes
    after = mesh.procs.status(target)
    transport_before, transport_after = before["counters"]["transport"], after["counters"]["transport"]
    assert transport_after["refused"] - transport_before["refused"] >= len(refused)
    # Not a record count: members keep publishing meanwhile (a manifest with hardware
    # details arrives seconds after start). Every author the target holds is a member.
    assert set(after["clock"]) <= {node.node_id for node in mesh.all}
    assert report["rogue"] not in after["clock"]
    assert (
        mesh.procs.request(
            target, {"op": "lookup", "author": report["rogue"], "kind": "note", "key": "rogue"}
        )["record"]
        is None
    )
    assert report["rogue"] not in {m["node_id"] for m in after["members"]}
    # ...and nowhere else either.
    for node in mesh.all:
        document = mesh.procs.status(node)
        assert report["rogue"] not in document["clock"]
        assert report["rogue"] not in {m["node_id"] for m in document["members"]}


def _damaged(token: str) -> str:
    """Far more wrong characters than Reed-Solomon can repair."""
    body = list(token[len(TOKEN_PREFIX) :])
    for index in range(0, len(body), 3):
        body[index] = "a" if body[index] != "a" else "b"
    return TOKEN_PREFIX + "".join(body)


def _tampered(token: str) -> str:
    """A well-formed token (valid checksum) whose contents no longer match its signature."""
    invite = decode_token(token)
    more_uses = msgspec.structs.replace(invite.body, uses=1_000_000)
    return encode_token(msgspec.structs.replace(invite, body=more_uses))


def test_every_bad_token_gets_a_one_line_error_and_a_nonzero_exit(mesh: Mesh5, tmp_path: Path) -> None:
    expiring = mesh.procs.invite(mesh.a, "--ttl", "1s")
    other_mesh = tmp_path / "other-mesh"
    found_mesh(other_mesh, "another mesh")  # a node of a different mesh, already set up
    time.sleep(max(0.0, decode_token(expiring).body.expires_at - time.time() + 0.1))
    cases = {
        "expired": (expiring, tmp_path / "expired"),
        "tampered": (_tampered(mesh.multi_use), tmp_path / "tampered"),
        "wrong mesh": (mesh.multi_use, other_mesh),
        "used up": (mesh.single_use, tmp_path / "used-up"),
        "not a token": ("hello, please let me in", tmp_path / "not-a-token"),
        "damaged": (_damaged(mesh.multi_use), tmp_path / "damaged"),
    }
    results = cli_many(
        [
            ["join", token, "--data-dir", str(directory), "--listen", "/ip4/127.0.0.1/udp/0/quic-v1"]
            for token, directory in cases.values()
        ]
    )
    for (problem, (_, directory)), result in zip(cases.items(), results, strict=True):
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        expected = problem.split(" (")[0]
        assert result.returncode != 0, f"{problem}: exit 0\n{result.stderr}"
        assert len(errors) == 1, f"{problem}: {result.stderr}"
        assert f"invite token {expected}" in errors[0], f"{problem}: {errors[0]}"
        if problem != "used up":  # refused before any node was started or any file written
            assert result.stderr.strip() == errors[0], f"{problem}: more than one line\n{result.stderr}"
            if directory != other_mesh:
                assert not directory.exists()
    # The used-up token admitted exactly one node: b.
    admitted = mesh.procs.status(mesh.a)["clock"]
    assert len(admitted) == 5


def test_a_sigkilled_node_is_marked_dead_by_all_others(mesh: Mesh5) -> None:
    survivors = [mesh.a, mesh.b, mesh.c, mesh.d]
    mesh.procs.wait_states(survivors, mesh.e, "alive", timeout=20)
    mesh.procs.kill(mesh.e)
    took = mesh.procs.wait_states(survivors, mesh.e, "dead", timeout=DETECTION_DEADLINE)
    print(f"SIGKILL detected as dead by all four others in {took:.1f}s")


def test_the_killed_node_rejoins_with_up_and_catches_up(mesh: Mesh5) -> None:
    survivors = [mesh.a, mesh.b, mesh.c, mesh.d]
    if mesh.e.running:
        pytest.skip("needs the previous test's kill")
    # Something new while e is down: a note published by c, which e has never seen.
    note = mesh.procs.request(mesh.c, {"op": "note", "key": "while-e-was-down", "value": "hello"})
    mesh.procs.up(mesh.e)
    mesh.procs.wait_running([mesh.e])
    mesh.procs.wait_states(survivors, mesh.e, "alive", timeout=20)
    documents = mesh.procs.wait_converged(mesh.all, timeout=30)
    found = mesh.procs.request(
        mesh.e, {"op": "lookup", "author": note["author"], "kind": "note", "key": "while-e-was-down"}
    )["record"]
    assert found is not None and found["seq"] == note["seq"]
    assert all(member_state(d, mesh.e.node_id) == "alive" for d in documents)
    # it rejoined through the members it had saved as live, not every member ever admitted
    assert "restart: contacting 4 members live at the last look" in mesh.e.output()


def test_a_revoked_member_is_shut_out_everywhere(mesh: Mesh5) -> None:
    others = [mesh.a, mesh.b, mesh.c, mesh.e]
    if not mesh.e.running:
        pytest.skip("needs the restarted node")
    refused_before = {n.name: mesh.procs.status(n)["counters"]["transport"]["refused"] for n in others}
    revoke = ["revoke", mesh.d.node_id, "--data-dir", str(mesh.a.data_dir), "--reason", "test"]
    revoked = cli_many([revoke])[0]
    assert revoked.returncode == 0, revoked.stderr
    # Every other node drops it from its member table for good, and the probes and pushes it
    # goes on sending are refused at the gate (nobody contacts it any more, so only the
    # nodes it dials again see them).
    wait_until(
        lambda: all(state is None for state in mesh.procs.states(others, mesh.d).values()),
        DETECTION_DEADLINE,
        "d gone from every member list",
    )

    def refused_somewhere() -> bool:
        return any(
            mesh.procs.status(node)["counters"]["transport"]["refused"] > refused_before[node.name]
            for node in others
        )

    wait_until(refused_somewhere, DETECTION_DEADLINE, "d's streams refused by another node")
    # It learned of its own revocation and can no longer author anything.
    reply = control_request(mesh.d.data_dir, {"op": "note", "key": "after", "value": "x"})
    assert not reply["ok"] and "not a member" in reply["error"]
    # The revoked node sat on the council (all five do): the hub now elects itself into a
    # new term with a council of the four left, and every vote of that election is a record
    # that changes until a term is decided. On this 2-core machine under a test run's load
    # the candidates can duel for tens of seconds (issue 13's election livelock), so the
    # records settle later than gossip alone would take.
    mesh.procs.wait_converged(others, timeout=60)


def test_a_second_up_on_a_running_data_dir_is_refused_and_harms_nothing(mesh: Mesh5) -> None:
    # A client that connects to the control socket and leaves without asking anything
    # (what a second `up` used to do when probing it) must not take the node down.
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.connect(str(mesh.a.data_dir / "control.sock"))
    probe.close()
    second = cli_many([["up", "--data-dir", str(mesh.a.data_dir)]])[0]
    assert second.returncode != 0
    assert second.stderr.strip() == f"error: a node is already running on {mesh.a.data_dir}"
    assert mesh.a.running
    assert mesh.procs.status(mesh.a)["node_id"] == mesh.a.node_id
