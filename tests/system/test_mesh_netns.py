"""Node processes in network namespaces this test creates, linked in a star, optionally
impaired with 100 ms delay and 5 % loss on every node's link.

Why namespaces: loopback has no latency and no loss, so it cannot show that joining,
gossip, anti-entropy and SWIM hold up on a real network. Every node gets its own
namespace and its own address (10.231.0.x, inside namespaces the test creates). The
star's centre is either a bridge in a hub namespace of its own (veth pairs; the
impairment is `tc netem` on each node's `eth0`) or, where the kernel has no netem, a
user-space switch over TAP devices that applies the same delay and loss
(`tests/support/tap_netem.py`). Either way nothing is added to the host's network, and
deleting the namespaces at the end removes every link, bridge and qdisc with them.

Skips, saying why, where it cannot run: not root, no `ip`/`tc`, namespaces refused, or
(for the impaired test) neither netem nor TAP devices.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support.mesh_processes import NodeProcess, ProcessMesh, describe, same_state
from tests.support.tap_netem import ImpairedSwitch, tap_available

SUBNET = "10.231.0"
NODES = 4
DELAY_S = 0.100
LOSS = 0.05
NETEM = ("delay", "100ms", "loss", "5%")
ADMITTED_LOG = re.compile(r"admitted by \w+ in (\d+) ms")


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(command), capture_output=True, text=True, timeout=30)


def _why_namespaces_cannot_run() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root (run as root to include this test)"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"the `{tool}` command (iproute2) is not installed"
    probe = f"ilx{os.getpid()}probe"
    created = _run("ip", "netns", "add", probe)
    if created.returncode != 0:
        return f"cannot create a network namespace: {created.stderr.strip()}"
    _run("ip", "netns", "del", probe)
    return None


def _why_netem_cannot_run() -> str | None:
    probe = f"ilx{os.getpid()}netem"
    if _run("ip", "netns", "add", probe).returncode != 0:
        return "cannot create a network namespace"
    try:
        _run("ip", "-n", probe, "link", "set", "lo", "up")
        netem = ("tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms")
        added = _run("ip", "netns", "exec", probe, *netem)
        if added.returncode != 0:
            return f"tc netem is not available in this kernel ({added.stderr.strip()})"
        return None
    finally:
        _run("ip", "netns", "del", probe)


class Star:
    """One namespace per node around a centre: a bridge (kernel) or an impairing TAP switch.

    `impairment`: None (plain bridge), "netem" (bridge + netem on every node's egress)
    or "tap" (user-space switch with the same delay and loss).
    """

    def __init__(self, size: int, impairment: str | None) -> None:
        self.tag = f"ilx{os.getpid() % 100000}"
        self.hub = f"{self.tag}-hub"
        self.namespaces = [f"{self.tag}-n{i}" for i in range(size)]
        self.addresses = [f"{SUBNET}.{i + 1}" for i in range(size)]
        self.impairment = impairment
        self.switch: ImpairedSwitch | None = None
        self._created: list[str] = []

    def create(self) -> None:
        for namespace in self.namespaces:
            self._namespace(namespace)
        if self.impairment == "tap":
            self.switch = ImpairedSwitch(DELAY_S, LOSS)
            for namespace in self.namespaces:
                self.switch.add_port(namespace)
        else:
            self._namespace(self.hub)
            self._check("ip", "-n", self.hub, "link", "add", "br0", "type", "bridge")
            self._check("ip", "-n", self.hub, "link", "set", "br0", "up")
            for index, namespace in enumerate(self.namespaces):
                port = f"p{index}"
                veth = ("type", "veth", "peer", "name", port, "netns", self.hub)
                self._check("ip", "link", "add", "eth0", "netns", namespace, *veth)
                self._check("ip", "-n", self.hub, "link", "set", port, "master", "br0")
                self._check("ip", "-n", self.hub, "link", "set", port, "up")
        for namespace, address in zip(self.namespaces, self.addresses, strict=True):
            self._check("ip", "-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0")
            self._check("ip", "-n", namespace, "link", "set", "eth0", "up")
            self._check("ip", "-n", namespace, "link", "set", "lo", "up")
            if self.impairment == "netem":
                # Egress of every node's link: each direction of each path is impaired once.
                netem = ("tc", "qdisc", "add", "dev", "eth0", "root", "netem", *NETEM)
                self._check("ip", "netns", "exec", namespace, *netem)
        if self.switch is not None:
            self.switch.start()

    def destroy(self) -> None:
        """Deleting a namespace deletes its links, the bridge and the qdiscs with it."""
        if self.switch is not None:
            self.switch.close()
        for namespace in reversed(self._created):
            _run("ip", "netns", "del", namespace)
        self._created.clear()

    def prefix(self, index: int) -> list[str]:
        return ["ip", "netns", "exec", self.namespaces[index]]

    def qdiscs(self) -> list[str]:
        """Each node's link discipline as `tc` reports it."""
        return [
            _run("ip", "netns", "exec", namespace, "tc", "qdisc", "show", "dev", "eth0").stdout.strip()
            for namespace in self.namespaces
        ]

    def _namespace(self, name: str) -> None:
        self._check("ip", "netns", "add", name)
        self._created.append(name)

    @staticmethod
    def _check(*command: str) -> None:
        result = _run(*command)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)}: {result.stderr.strip()}")


@contextmanager
def star_network(size: int, impairment: str | None) -> Iterator[Star]:
    star = Star(size, impairment)
    try:
        star.create()
        yield star
    finally:
        star.destroy()


def _run_mesh_in(star: Star, root: Path, timeout: float) -> tuple[list[dict[str, Any]], float, list[int]]:
    """Found a mesh in namespace 0, join the others with one token, wait for convergence;
    then publish a note at the far end of the star and wait for convergence again.

    Returns the final status documents, seconds from the joins to convergence, and each
    joiner's join exchange in ms (from its log).
    """
    procs = ProcessMesh(root)
    nodes: list[NodeProcess] = [
        procs.node(f"n{i}", f"/ip4/{address}/udp/0/quic-v1", star.prefix(i))
        for i, address in enumerate(star.addresses)
    ]
    try:
        procs.init(nodes[0])
        procs.up(nodes[0])
        procs.wait_running(nodes[:1], timeout=60)
        token = procs.invite(nodes[0], "--uses", str(len(nodes) - 1))
        started = time.monotonic()
        for node in nodes[1:]:
            procs.join(node, token)
        procs.wait_running(nodes, timeout=90)
        procs.wait_converged(nodes, timeout=timeout)
        took = time.monotonic() - started
        note = procs.request(nodes[-1], {"op": "note", "key": "from-the-edge", "value": "hi"})
        documents = procs.wait_converged(nodes, timeout=timeout)
        lookup = {"op": "lookup", "author": note["author"], "kind": "note", "key": "from-the-edge"}
        assert all(procs.request(node, lookup)["record"] is not None for node in nodes)
        for document in documents:
            assert all(SUBNET in address for address in document["listen"]), document["listen"]
        exchanges = []
        for node in nodes[1:]:
            match = ADMITTED_LOG.search((node.data_dir / "logs" / "node.log").read_text())
            assert match, f"{node.name} logged no admission"
            exchanges.append(int(match.group(1)))
        return documents, took, exchanges
    finally:
        procs.close()


def test_nodes_in_their_own_namespaces_converge(tmp_path: Path) -> None:
    reason = _why_namespaces_cannot_run()
    if reason:
        pytest.skip(reason)
    with star_network(NODES, None) as star:
        documents, took, _ = _run_mesh_in(star, tmp_path, timeout=60)
        assert same_state(documents), describe(documents)
        print(f"{NODES} namespaced nodes converged {took:.1f}s after the joins started")


@pytest.mark.slow
def test_nodes_converge_under_100ms_delay_and_5_percent_loss(tmp_path: Path) -> None:
    reason = _why_namespaces_cannot_run()
    if reason:
        pytest.skip(reason)
    netem_problem = _why_netem_cannot_run()
    impairment = "netem" if netem_problem is None else "tap"
    if netem_problem is not None and (tap_problem := tap_available()) is not None:
        pytest.skip(f"{netem_problem}, and no TAP fallback: {tap_problem}")
    with star_network(NODES, impairment) as star:
        if impairment == "netem":
            for shown in star.qdiscs():
                assert "netem" in shown and "delay 100ms" in shown and "loss 5%" in shown, shown
        documents, took, exchanges = _run_mesh_in(star, tmp_path, timeout=120)
        assert same_state(documents), describe(documents)
        # A QUIC handshake alone needs a round trip (200 ms here): the delay was in effect.
        assert min(exchanges) >= 2 * DELAY_S * 1000, exchanges
        if star.switch is not None:
            assert star.switch.dropped > 0 and star.switch.forwarded > 0
            dropped = star.switch.dropped / (star.switch.dropped + star.switch.forwarded)
            how = f"user-space TAP switch ({netem_problem}); {dropped:.1%} of frames dropped"
        else:
            how = "tc netem"
        print(
            f"{NODES} nodes, 100 ms delay + 5 % loss per link via {how}: converged {took:.1f}s "
            f"after the joins started; join exchanges {exchanges} ms"
        )
