"""The node's private key on disk: created owner-only (0600), refused when readable by others.

Like OpenSSH with `~/.ssh/id_*`, a key file that others can read is treated as
compromised-by-configuration: the node refuses to start and says how to fix it, rather
than silently continuing with a leaked key.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from protocols.common.identity import KEY_SIZE, NodeIdentity

HEADER = "ileices-ed25519-seed-v1"


class KeyFileError(Exception):
    """The key file is missing, malformed, or has permissions wider than 0600."""


def create_key_file(path: Path, identity: NodeIdentity) -> None:
    """Write `identity`'s seed to a new file that only the owner can read; never overwrite."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{path} already exists; refusing to overwrite a node key") from None
    with os.fdopen(fd, "w") as handle:
        handle.write(f"{HEADER}\n{identity.seed.hex()}\n")
        handle.flush()
        os.fsync(handle.fileno())


def load_key_file(path: Path) -> NodeIdentity:
    """Read a node key, refusing one whose permissions let anyone but the owner read it."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise KeyFileError(f"no node key at {path}; run `ileices init` or `ileices join` first") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"{path} has permissions {stat.S_IMODE(mode):04o}; a node key must be readable by its "
            f"owner only. Fix it with: chmod 600 {path}"
        )
    lines = path.read_text(encoding="ascii", errors="replace").split()
    if len(lines) != 2 or lines[0] != HEADER:
        raise KeyFileError(f"{path} is not an Ileices node key (expected a '{HEADER}' header)")
    try:
        seed = bytes.fromhex(lines[1])
    except ValueError:
        raise KeyFileError(f"{path} holds a malformed key (not hexadecimal)") from None
    if len(seed) != KEY_SIZE:
        raise KeyFileError(f"{path} holds a key of {len(seed)} bytes; expected {KEY_SIZE}")
    return NodeIdentity.from_seed(seed)
