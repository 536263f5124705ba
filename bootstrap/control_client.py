"""Talking to a running node through its control socket (for `status`, `invite`, `revoke`)."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from mesh.control_socket import socket_path


class NodeNotRunning(Exception):
    """No node answers on this data directory's control socket."""


def control_request(data_dir: Path, request: dict[str, Any], timeout: float = 15.0) -> dict[str, Any]:
    path = socket_path(data_dir)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(timeout)
    try:
        try:
            client.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise NodeNotRunning(
                f"no node is running on {data_dir} (start it with `ileices up --data-dir {data_dir}`)"
            ) from None
        client.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = client.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        client.close()
    reply: dict[str, Any] = json.loads(data)
    return reply
