"""Real meshes of `ileices` node processes, driven through the CLI, for tests and benchmarks.

Every node is its own OS process in its own process group (so a SIGKILL takes the
whole node, and cleanup can never miss a child), started with the very commands a user
types: `init`, `up`, `invite --json`, `join`. Polling reads the node's control socket
directly, which returns the same document as `status --json` without paying ~1-2 s of
Python start-up per poll; `status_cli` runs the real command where that matters.

A `prefix` (e.g. `["ip", "netns", "exec", "ns1"]`) runs a node inside a network
namespace; the control socket is a file, so it is reachable from outside the namespace.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bootstrap.control_client import NodeNotRunning, control_request
from tests.support.cli import CLI
from tests.support.paths import REPO_ROOT

REPO = REPO_ROOT

LOOPBACK_QUIC = "/ip4/127.0.0.1/udp/0/quic-v1"


class MeshTimeout(AssertionError):
    """A condition on the running mesh did not become true before its deadline."""


@dataclass
class NodeProcess:
    """One node: its data directory and, while it runs, its process."""

    name: str
    data_dir: Path
    listen: str
    prefix: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    node_id: str = ""

    @property
    def output_path(self) -> Path:
        return self.data_dir.parent / f"{self.name}.out"

    def output(self) -> str:
        try:
            return self.output_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


def cli(
    *args: str, prefix: Sequence[str] = (), timeout: float = 60.0, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run one `ileices` command to completion; `check` raises with its output on failure."""
    result = subprocess.run(
        [*prefix, *CLI, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    if check and result.returncode != 0:
        raise AssertionError(f"ileices {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


def cli_many(
    commands: Sequence[Sequence[str]], timeout: float = 90.0
) -> list[subprocess.CompletedProcess[str]]:
    """Run several short `ileices` commands at once (each costs ~1-2 s of start-up CPU)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    running = [
        (
            list(command),
            subprocess.Popen(
                [*CLI, *command], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
            ),
        )
        for command in commands
    ]
    results = []
    for command, process in running:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
        results.append(subprocess.CompletedProcess(command, process.returncode, stdout, stderr))
    return results


class ProcessMesh:
    """Starts, queries, kills and always cleans up a set of node processes under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.nodes: dict[str, NodeProcess] = {}

    # ---- lifecycle ---------------------------------------------------------------------

    def node(self, name: str, listen: str = LOOPBACK_QUIC, prefix: Sequence[str] = ()) -> NodeProcess:
        node = NodeProcess(name, self.root / name, listen, list(prefix))
        self.nodes[name] = node
        return node

    def init(self, node: NodeProcess) -> None:
        founded = json.loads(cli("init", "--data-dir", str(node.data_dir), "--json").stdout)
        node.node_id = founded["node_id"]

    def start(self, node: NodeProcess, *command: str) -> None:
        """Spawn `ileices COMMAND... --data-dir D --listen L` as its own process group."""
        if node.running:
            raise AssertionError(f"{node.name} is already running")
        node.data_dir.parent.mkdir(parents=True, exist_ok=True)
        with node.output_path.open("ab") as out:
            node.process = subprocess.Popen(
                [*node.prefix, *CLI, *command, "--data-dir", str(node.data_dir), "--listen", node.listen],
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    def up(self, node: NodeProcess) -> None:
        self.start(node, "up")

    def join(self, node: NodeProcess, token: str) -> None:
        self.start(node, "join", token)

    def found(self, founder: NodeProcess, members: Sequence[NodeProcess]) -> None:
        """Found a mesh on `founder` and join `members` with one invite; returns once all answer."""
        self.init(founder)
        self.up(founder)
        self.wait_running([founder])
        token = self.invite(founder, "--uses", str(len(members)), "--ttl", "10m")
        for node in members:
            self.join(node, token)
        self.wait_running([founder, *members])

    def wait_running(self, nodes: Sequence[NodeProcess], timeout: float = 45.0) -> None:
        """Until each node answers on its control socket (for a joiner: it is admitted)."""

        def answered() -> bool:
            for node in nodes:
                if node.process is not None and node.process.poll() is not None:
                    raise AssertionError(
                        f"{node.name} exited with {node.process.returncode}:\n{node.output()[-3000:]}"
                    )
                document = self.try_status(node)
                if document is None:
                    return False
                node.node_id = document["node_id"]
            return True

        wait_until(answered, timeout, f"nodes {[n.name for n in nodes]} to start")

    def kill(self, node: NodeProcess, sig: int = signal.SIGKILL) -> None:
        if node.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(node.process.pid, sig)
        if sig == signal.SIGKILL:
            node.process.wait(timeout=10)

    def close(self) -> None:
        """Kill every node's whole process group; safe to call twice."""
        for node in self.nodes.values():
            if node.process is not None and node.process.poll() is None:
                self.kill(node, signal.SIGKILL)
            elif node.process is not None:
                # The leader is gone; make sure nothing it started lingers.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(node.process.pid, signal.SIGKILL)

    # ---- operating -------------------------------------------------------------------

    def invite(self, node: NodeProcess, *options: str) -> str:
        result = cli("invite", "--data-dir", str(node.data_dir), "--json", *options)
        token: str = json.loads(result.stdout)["token"]
        return token

    def status(self, node: NodeProcess) -> dict[str, Any]:
        reply = control_request(node.data_dir, {"op": "status"}, timeout=10.0)
        if not reply.get("ok"):
            raise AssertionError(f"status of {node.name} failed: {reply}")
        document: dict[str, Any] = reply["status"]
        return document

    def try_status(self, node: NodeProcess) -> dict[str, Any] | None:
        try:
            return self.status(node)
        except (NodeNotRunning, OSError, ValueError):
            return None

    def request(self, node: NodeProcess, request: dict[str, Any]) -> dict[str, Any]:
        reply = control_request(node.data_dir, request, timeout=10.0)
        if not reply.get("ok"):
            raise AssertionError(f"{request['op']} on {node.name} failed: {reply}")
        return reply

    def status_cli(self, nodes: Sequence[NodeProcess]) -> list[dict[str, Any]]:
        """`ileices status --json` for each node (run concurrently), parsed."""
        results = cli_many([["status", "--data-dir", str(n.data_dir), "--json"] for n in nodes])
        documents = []
        for node, result in zip(nodes, results, strict=True):
            if result.returncode != 0:
                raise AssertionError(f"status of {node.name} failed: {result.stderr}")
            documents.append(json.loads(result.stdout))
        return documents

    # ---- what the tests look for --------------------------------------------------------

    def states(self, observers: Sequence[NodeProcess], subject: NodeProcess) -> dict[str, str | None]:
        """How each observer sees `subject` (None: not in its member list, or no answer)."""
        seen: dict[str, str | None] = {}
        for observer in observers:
            document = self.try_status(observer)
            seen[observer.name] = None if document is None else member_state(document, subject.node_id)
        return seen

    def wait_states(
        self, observers: Sequence[NodeProcess], subject: NodeProcess, state: str, timeout: float
    ) -> float:
        """Until every observer holds `subject` in `state`; returns the seconds it took."""
        started = time.monotonic()
        last: dict[str, str | None] = {}

        def reached() -> bool:
            nonlocal last
            last = self.states(observers, subject)
            return all(value == state for value in last.values())

        wait_until(reached, timeout, lambda: f"{subject.name} to be {state} everywhere (last: {last})")
        return time.monotonic() - started

    def wait_converged(self, nodes: Sequence[NodeProcess], timeout: float) -> list[dict[str, Any]]:
        """Until all nodes hold the same records and clock and see each other alive."""
        documents: list[dict[str, Any]] = []

        def converged() -> bool:
            nonlocal documents
            documents = [d for d in (self.try_status(n) for n in nodes) if d is not None]
            return len(documents) == len(nodes) and same_state(documents) and all_alive(documents)

        wait_until(converged, timeout, lambda: "convergence: " + describe(documents))
        return documents


def member_state(document: dict[str, Any], node_id: str) -> str | None:
    for member in document["members"]:
        if member["node_id"] == node_id:
            return str(member["state"])
    return None


def same_state(documents: Sequence[dict[str, Any]]) -> bool:
    first = documents[0]
    return all(
        d["state_digest"] == first["state_digest"]
        and d["records"] == first["records"]
        and d["clock"] == first["clock"]
        for d in documents
    )


def all_alive(documents: Sequence[dict[str, Any]]) -> bool:
    ids = {d["node_id"] for d in documents}
    return all({m["node_id"] for m in d["members"] if m["state"] == "alive"} >= ids for d in documents)


def describe(documents: Sequence[dict[str, Any]]) -> str:
    return "; ".join(
        f"{d['node_id'][:8]}: {d['records']} records, digest {d['state_digest'][:8]}, "
        f"alive {sorted(m['node_id'][:6] for m in d['members'] if m['state'] == 'alive')}"
        for d in documents
    )


def wait_until(
    condition: Callable[[], bool],
    timeout: float,
    what: str | Callable[[], str],
    interval: float = 0.1,
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return
        if time.monotonic() > deadline:
            message = what() if callable(what) else what
            raise MeshTimeout(f"timed out after {timeout:.0f}s waiting for {message}")
        time.sleep(interval)
