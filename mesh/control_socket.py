"""Where a node's control socket lives, in a module light enough for every CLI command to import.

The server (`mesh.control_server`) needs the whole node and therefore libp2p; `ileices
status` and `invite` only need the path. Keeping the path here lets those commands start
without importing libp2p (about 0.8 s of CPU on the 2-core machine), while server and
client can never disagree about it.

A Unix socket's path has a hard length limit (108 bytes on Linux, NUL included), so a
deeply nested data directory cannot hold one. `socket_path_problem` says so in words
before a node starts: otherwise `join` would be admitted and only then fail to bind,
with a bare "AF_UNIX path too long".
"""

from __future__ import annotations

import os
from pathlib import Path

SOCKET_NAME = "control.sock"
MAX_REQUEST_BYTES = 64 * 1024
MAX_SOCKET_PATH_BYTES = 107
"""Linux's `sun_path` holds 108 bytes, including the terminating NUL."""


def socket_path(data_dir: Path) -> Path:
    return data_dir / SOCKET_NAME


def socket_path_problem(data_dir: Path) -> str | None:
    """Why no control socket can be made in `data_dir` (its path is too long), or None."""
    length = len(os.fsencode(socket_path(data_dir)))
    if length <= MAX_SOCKET_PATH_BYTES:
        return None
    return (
        f"the data directory's path is too long for the node's control socket "
        f"({length} bytes for {SOCKET_NAME}, at most {MAX_SOCKET_PATH_BYTES}): "
        f"use a shorter --data-dir (or a symlink to it)"
    )
