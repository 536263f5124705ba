"""Where a node's control socket lives, in a module light enough for every CLI command to import.

The server (`mesh.control_server`) needs the whole node and therefore libp2p; `ileices
status` and `invite` only need the path. Keeping the path here lets those commands start
without importing libp2p (about 0.8 s of CPU on the 2-core machine), while server and
client can never disagree about it.
"""

from __future__ import annotations

from pathlib import Path

SOCKET_NAME = "control.sock"
MAX_REQUEST_BYTES = 64 * 1024


def socket_path(data_dir: Path) -> Path:
    return data_dir / SOCKET_NAME
