"""Files to store in a mesh, for tests and benchmarks: half random, half text, and their SHA-256."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

MIB = 1024 * 1024


def write_artifact_file(path: Path, size: int) -> str:
    """Write `size` bytes, alternating random and text-like MiBs (so zstd has work on half of them);
    returns their SHA-256 (hex)."""
    digest = hashlib.sha256()
    text = b"a line of text that compresses, as logs and datasets do\n" * (MIB // 56 + 1)
    with path.open("wb") as out:
        written = 0
        while written < size:
            piece = os.urandom(MIB) if (written // MIB) % 2 == 0 else text[:MIB]
            piece = piece[: size - written]
            out.write(piece)
            digest.update(piece)
            written += len(piece)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while piece := source.read(MIB):
            digest.update(piece)
    return digest.hexdigest()
