"""Talking to a running node through its control socket (for `status`, `invite`, `revoke`, ...).

Every way the exchange can fail becomes a `ControlClientError` whose message is one line
a user can act on, because the commands print it as is. The case that matters most is a
node that stops (crash, kill, Ctrl-C) between receiving a request and finishing its
reply: the request may well have taken effect (a note is durable before it is
acknowledged), so the message says the outcome is unknown and how to find out, rather
than surfacing a JSON parser's complaint about an empty reply.

The errors derive from `ConnectionError` (an `OSError`) so that callers which already
treat "cannot talk to the node" as an `OSError` keep working.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from mesh.control_socket import socket_path, socket_path_problem

READ_ONLY_OPS = frozenset({"status", "lookup"})
"""Requests that change nothing, so a lost reply leaves nothing to check."""


class ControlClientError(ConnectionError):
    """Talking to the node on a data directory failed; the message says why and what to do."""


class NodeNotRunning(ControlClientError):
    """No node answers on this data directory's control socket."""


class ReplyLost(ControlClientError):
    """The node took the request but its reply never arrived whole (it stopped, or hung)."""


def control_request(data_dir: Path, request: dict[str, Any], timeout: float = 15.0) -> dict[str, Any]:
    """Send one request line to the node on `data_dir` and return its reply."""
    path = socket_path(data_dir)
    too_long = socket_path_problem(data_dir)
    if too_long is not None:
        raise ControlClientError(too_long)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(timeout)
    try:
        _connect(client, path, data_dir)
        data = _exchange(client, request, data_dir, timeout)
    finally:
        client.close()
    try:
        reply = json.loads(data)
    except ValueError:  # json.JSONDecodeError and UnicodeDecodeError alike
        raise ReplyLost(
            f"the node on {data_dir} sent a reply that is not JSON ({len(data)} bytes); "
            f"{_outcome(request, data_dir)}"
        ) from None
    if not isinstance(reply, dict):
        raise ReplyLost(
            f"the node on {data_dir} sent a reply that is not an object; {_outcome(request, data_dir)}"
        )
    return reply


def _connect(client: socket.socket, path: Path, data_dir: Path) -> None:
    try:
        client.connect(str(path))
    except (FileNotFoundError, ConnectionRefusedError):
        raise NodeNotRunning(
            f"no node is running on {data_dir} (start it with `ileices up --data-dir {data_dir}`)"
        ) from None
    except PermissionError:
        raise ControlClientError(
            f"not allowed to reach the node on {data_dir} through {path}: "
            "run the command as the user who runs the node"
        ) from None
    except TimeoutError:
        raise ControlClientError(
            f"the node on {data_dir} did not accept the connection in time; it may be overloaded or hung"
        ) from None
    except OSError as exc:
        raise ControlClientError(f"cannot reach the node on {data_dir} through {path}: {exc}") from None


def _exchange(client: socket.socket, request: dict[str, Any], data_dir: Path, timeout: float) -> bytes:
    """Send the request line and read the reply line, or say why there is none."""
    data = b""
    try:
        client.sendall(json.dumps(request).encode() + b"\n")
        while not data.endswith(b"\n"):
            chunk = client.recv(65536)
            if not chunk:
                break
            data += chunk
    except TimeoutError:
        raise ReplyLost(
            f"the node on {data_dir} did not answer within {timeout:g}s; {_outcome(request, data_dir)}"
        ) from None
    except OSError as exc:  # reset or broken pipe: the node went away mid-exchange
        raise ReplyLost(
            f"the node on {data_dir} closed the connection ({exc.strerror or exc}) before answering; "
            f"{_stopped_outcome(request, data_dir)}"
        ) from None
    if not data.endswith(b"\n"):
        where = "before answering" if not data else "while answering"
        raise ReplyLost(f"the node on {data_dir} stopped {where}; {_stopped_outcome(request, data_dir)}")
    return data


def _stopped_outcome(request: dict[str, Any], data_dir: Path) -> str:
    return _outcome(request, data_dir) + f" (if it is down, start it with `ileices up --data-dir {data_dir}`)"


def _outcome(request: dict[str, Any], data_dir: Path) -> str:
    op = request.get("op")
    if op in READ_ONLY_OPS:
        return "try again"
    return f"whether {op!r} took effect is unknown: check with `ileices status --data-dir {data_dir}`"
