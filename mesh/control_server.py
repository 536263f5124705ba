"""The running node's local control endpoint: a Unix socket in its data directory.

`ileices status`, `invite` and `revoke` talk to the node they are pointed at through
this socket; only the directory's owner can reach it (the directory is 0700), so no
further authentication is needed. One JSON request line, one JSON reply line.

Requests are checked here as well as in the CLI, because anything that can reach the
socket can send them: invite terms no token can carry (more uses than the wire schema
allows, a time to live that is already over) are refused with the reason instead of
producing a token every joiner would reject.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from actors.hardware_daemon import RunTask, SetLimits
from kernels.volunteer_limits import LimitsError, VolunteerLimits
from mesh.control_socket import MAX_REQUEST_BYTES, SOCKET_NAME, socket_path, socket_path_problem
from mesh.node import Node, NodeError
from protocols.join.invite import check_terms

if TYPE_CHECKING:
    from trio._core._run import TaskStatus

log = logging.getLogger(__name__)

__all__ = ["SOCKET_NAME", "ControlError", "serve_control", "socket_path"]


class ControlError(Exception):
    """The control endpoint cannot be set up (a node already runs there, or the path is too long)."""


def _claim_socket(path: Path) -> None:
    """Remove a stale socket left by a killed node; refuse if a live node answers on it."""
    if not path.exists():
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink()
        return
    finally:
        probe.close()
    raise ControlError(f"a node is already running on {path.parent} (its control socket answers)")


async def serve_control(node: Node, *, task_status: TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
    too_long = socket_path_problem(node.data_dir.path)
    if too_long is not None:
        raise ControlError(too_long)
    path = socket_path(node.data_dir.path)
    _claim_socket(path)
    listener = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    await listener.bind(str(path))
    os.chmod(path, 0o600)
    listener.listen(16)
    try:
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                connection, _ = await listener.accept()
                nursery.start_soon(_serve_one, node, trio.SocketStream(connection))
    finally:
        listener.close()
        path.unlink(missing_ok=True)


async def _serve_one(node: Node, stream: trio.SocketStream) -> None:
    # A client that goes away early (a probe from `_claim_socket`, a Ctrl-C'd `status`)
    # is normal: it must cost nothing but this connection, never the node.
    try:
        async with stream:
            await _answer(node, stream)
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        log.debug("control client went away: %s", exc)


async def _answer(node: Node, stream: trio.SocketStream) -> None:
    data = b""
    with trio.move_on_after(10):
        while not data.endswith(b"\n") and len(data) < MAX_REQUEST_BYTES:
            chunk = await stream.receive_some(4096)
            if not chunk:
                break
            data += chunk
    if not data:
        return
    try:
        request = json.loads(data)
        reply = await _dispatch(node, request)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, LimitsError, NodeError) as exc:
        reply = {"ok": False, "error": str(exc)}
    except Exception as exc:  # an operator command must never take the node down
        log.exception("control request failed")
        reply = {"ok": False, "error": f"internal error: {exc}"}
    await stream.send_all(json.dumps(reply).encode() + b"\n")


STORAGE_OPS = frozenset({"put", "get", "job", "artifacts", "rm", "storage"})


async def _storage(node: Node, op: str, request: dict[str, Any]) -> dict[str, Any]:
    """Artifacts: `put` and `get` start a job whose progress `job` reports (the CLI's bar)."""
    storage = node.storage
    if op == "put":
        source = Path(str(request["path"])).expanduser().resolve()
        k, n = request.get("k"), request.get("n")
        ttl = request.get("ttl_s")
        job = storage.start_job(
            "put",
            lambda job: storage.put(
                job,
                source,
                None if k is None else int(k),
                None if n is None else int(n),
                None if ttl is None else float(ttl),
            ),
        )
        return {"ok": True, "job": job.view()}
    if op == "get":
        artifact_id = _artifact_id(str(request["id"]))
        out = Path(str(request["out"])).expanduser().resolve()
        job = storage.start_job("get", lambda job: storage.get(job, artifact_id, out))
        return {"ok": True, "job": job.view()}
    if op == "job":
        return {"ok": True, "job": storage.job(str(request["id"])).view()}
    if op == "artifacts":
        return {"ok": True, "artifacts": await storage.artifacts()}
    if op == "rm":
        return {"ok": True, "removed": await storage.remove(_artifact_id(str(request["id"])))}
    return {"ok": True, "storage": await storage.status()}


def _artifact_id(text: str) -> bytes:
    try:
        value = bytes.fromhex(text.strip())
    except ValueError:
        raise NodeError(f"{text!r} is not an artifact id (64 hex digits)") from None
    if len(value) != 32:
        raise NodeError(f"{text!r} is not an artifact id (64 hex digits)")
    return value


async def _dispatch(node: Node, request: dict[str, Any]) -> dict[str, Any]:
    op = request["op"]
    if op == "status":
        return {"ok": True, "status": await node.api.status()}
    if op == "invite":
        ttl_s, uses = float(request["ttl_s"]), int(request["uses"])
        check_terms(ttl_s, uses)
        token = await node.api.make_invite(ttl_s, uses)
        return {"ok": True, "token": token}
    if op == "revoke":
        record = await node.api.revoke(bytes.fromhex(request["node"]), str(request.get("reason", "")))
        return {"ok": True, "seq": record.seq}
    if op in ("pause", "resume", "stop_all"):
        return {"ok": True, "volunteer": await node.api.hardware(op)}
    if op == "set_limits":
        limits = VolunteerLimits.from_dict(request["limits"])
        return {"ok": True, "volunteer": await node.api.hardware(SetLimits(limits))}
    if op == "run_task":
        argv = [str(part) for part in request["argv"]]
        return {"ok": True, "task": await node.api.hardware(RunTask(argv, str(request.get("name", "task"))))}
    if op == "note":
        record = await node.api.publish_note(str(request["key"]), str(request["value"]))
        return {"ok": True, "seq": record.seq, "author": record.author.hex()}
    if op == "lookup":
        found = node.api.lookup(bytes.fromhex(request["author"]), str(request["kind"]), str(request["key"]))
        return {"ok": True, "record": found}
    if op in STORAGE_OPS:
        return await _storage(node, op, request)
    if op == "stop":
        node.stop()
        return {"ok": True}
    raise ValueError(f"unknown operation {op!r}")
