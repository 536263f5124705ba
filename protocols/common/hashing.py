"""BLAKE2b-256, the one content hash of the mesh (record ids, mesh ids, artifacts).

BLAKE2b is in the standard library, runs ~1 GB/s here and needs no native wheel;
BLAKE3 would be faster on big artifacts but adds a dependency for no measured need yet.
"""

from __future__ import annotations

import hashlib

DIGEST_SIZE = 32


def digest(data: bytes) -> bytes:
    """Return the 32-byte BLAKE2b-256 hash of `data`."""
    return hashlib.blake2b(data, digest_size=DIGEST_SIZE).digest()


def short_hex(value: bytes, length: int = 12) -> str:
    """A short, human-readable prefix of an id, for logs and tables (never for lookups)."""
    return value.hex()[:length]
