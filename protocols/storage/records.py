"""Record kinds and bodies of artifact storage: artifact (what it is), placement (who holds it), storage.

- `artifact` (key = the artifact id in hex, author = the owner): size, chunking, erasure
  parameters k-of-n and the root hash and byte size of each of the n shares, so any node
  can check a share it is handed against the owner's signature. A delete is a tombstone:
  the owner re-signs the same slot with a higher seq and `deleted=True`, so only the
  owner can delete (the record slot is `(author, kind, key)`: another member's record
  with the same key is another slot, and the core keeps it apart, keyed by owner).
- `placement` (key = the artifact id in hex): the node meant to hold each share. Signed
  by the owner at upload (`term` 0) and by the acting hub after a repair (its `term`).
  Not a hub-issued (fenced) kind on purpose: fenced kinds are purged at each new term,
  and a placement must outlive the hub that made it. The current placement is the
  highest `(generation, term, author)` among placements signed by the artifact's owner
  or by the hub of their own term (the core checks that, `StorageCore.placement`).
- `storage` (key = "", author = the node): how much it offers and holds, whether it
  accepts more, and the shares it holds. Re-published when holdings or acceptance change.

Everything a decoder accepts is bounded: k and n within 1..255, at most 16 TiB per
artifact, chunks of 1 B to 64 MiB, share sizes no larger than a share of that artifact
can be (a header plus one block of each chunk), finite timestamps, at most 4000
holdings per node (37 bytes each: about 150 KB, under the 256 KiB body cap). A body
outside these bounds, or inconsistent with itself or its record's key, is a `WireError`:
a malformed record that the core counts and ignores.

Decoded bodies are memoized on their bytes (a simulator feeds one record to a thousand
cores: they all share one decoded body, and its lists, instead of a thousand copies).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Annotated

import msgspec

from protocols.common.identity import NodeIdentity
from protocols.common.wire import WireError, WireStruct, decode, encode
from protocols.records.record import Key32, Record, sign_record

ARTIFACT = "artifact"
PLACEMENT = "placement"
STORAGE = "storage"

ARTIFACT_ID_BYTES = 32
MAX_SHARES = 255
"""Most shares of one artifact (zfec's limit, and one byte per share index)."""
MAX_NAME_CHARS = 255
MAX_REFUSAL_CHARS = 200
MAX_HOLDINGS = 4000
MAX_ARTIFACT_BYTES = 2**44
"""16 TiB: far beyond any artifact a volunteer mesh stores, far below anything that overflows."""
MAX_CHUNK_BYTES = 64 * 1024 * 1024
SHARE_FIXED_OVERHEAD = 64 * 1024
"""Bytes a share may hold beyond its blocks regardless of size: magic, lengths, the fixed header."""
SHARE_CHUNK_OVERHEAD = 1024
"""Bytes a share may hold per chunk beyond the block: the chunk's header entry and block hash
(about 80 bytes in the codec's header; the rest is slack for its reserved-length rounding)."""
MAX_COUNT = 2**62

Name = Annotated[str, msgspec.Meta(max_length=MAX_NAME_CHARS)]
ByteCount = Annotated[int, msgspec.Meta(ge=0, le=MAX_COUNT)]
ArtifactSize = Annotated[int, msgspec.Meta(ge=0, le=MAX_ARTIFACT_BYTES)]
ChunkBytes = Annotated[int, msgspec.Meta(ge=1, le=MAX_CHUNK_BYTES)]
ChunkCount = Annotated[int, msgspec.Meta(ge=0, le=MAX_ARTIFACT_BYTES)]
ShareCount = Annotated[int, msgspec.Meta(ge=1, le=MAX_SHARES)]
ShareIndex = Annotated[int, msgspec.Meta(ge=0, lt=MAX_SHARES)]
Timestamp = Annotated[float, msgspec.Meta(ge=0.0)]
Counter63 = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
HolderSlot = Annotated[bytes, msgspec.Meta(max_length=32)]
"""A node id, or b"" where a share has no holder."""


class ArtifactBody(WireStruct, frozen=True):
    """What an artifact is: `size` plain bytes in `chunk_count` chunks of `chunk_bytes`, coded k-of-n.

    `share_roots[i]` is the hash of share i's header (which lists its block hashes), and
    `share_sizes[i]` its byte length: together they let a holder check a share as it
    arrives. `expires_at` is wall time (0: never); `deleted` makes this a tombstone.
    """

    name: Name
    size: ArtifactSize
    chunk_bytes: ChunkBytes
    chunk_count: ChunkCount
    k: ShareCount
    n: ShareCount
    share_roots: Annotated[list[Key32], msgspec.Meta(max_length=MAX_SHARES)]
    share_sizes: Annotated[list[ByteCount], msgspec.Meta(max_length=MAX_SHARES)]
    created_at: Timestamp
    expires_at: Timestamp
    deleted: bool = False


class PlacementBody(WireStruct, frozen=True):
    """`holders[i]`: the node meant to hold share i (b"" when none); `term` 0 when the owner made it."""

    generation: Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]
    term: Counter63
    holders: Annotated[list[HolderSlot], msgspec.Meta(min_length=1, max_length=MAX_SHARES)]


class Holding(WireStruct, frozen=True):
    """Share `index` of artifact `artifact_id`, which the record's author says it holds."""

    artifact_id: Key32
    index: ShareIndex


class StorageBody(WireStruct, frozen=True):
    """A node's storage offer (`offered_bytes` 0: none) and what it holds."""

    offered_bytes: ByteCount
    used_bytes: ByteCount
    accepting: bool
    refusal: Annotated[str, msgspec.Meta(max_length=MAX_REFUSAL_CHARS)]
    """Why it refuses new shares ("" when accepting): over its disk limit, disk nearly full."""
    holdings: Annotated[list[Holding], msgspec.Meta(max_length=MAX_HOLDINGS)]


def artifact_key(artifact_id: bytes) -> str:
    """The record key of an artifact id (lower-case hex)."""
    if len(artifact_id) != ARTIFACT_ID_BYTES:
        raise ValueError(f"an artifact id is {ARTIFACT_ID_BYTES} bytes, got {len(artifact_id)}")
    return artifact_id.hex()


@lru_cache(maxsize=16384)
def artifact_id_of(key: str) -> bytes:
    """The artifact id a record key names (raises `WireError` unless it is 64 lower-case hex digits).

    Memoized: the cores of one process share one bytes object per artifact id."""
    if len(key) != 2 * ARTIFACT_ID_BYTES:
        raise WireError(f"an artifact key is {2 * ARTIFACT_ID_BYTES} hex digits, got {len(key)} characters")
    try:
        artifact_id = bytes.fromhex(key)
    except ValueError:
        raise WireError("an artifact key is hex") from None
    if artifact_id.hex() != key:
        raise WireError("an artifact key is lower-case hex without spaces")
    return artifact_id


def max_share_size(body: ArtifactBody) -> int:
    """The most bytes one share of `body` can have: the fixed overhead plus, per chunk, one block
    (a k-th of the chunk, rounded up: the codec stores a chunk raw when zstd does not shrink it)
    and that chunk's header entry."""
    block = -(-body.chunk_bytes // body.k)
    return SHARE_FIXED_OVERHEAD + body.chunk_count * (block + SHARE_CHUNK_OVERHEAD)


def check_artifact(body: ArtifactBody) -> None:
    """Raise `WireError` unless `body` is consistent with itself (the decoder checks the field bounds)."""
    if body.k > body.n:
        raise WireError(f"k={body.k} exceeds n={body.n}")
    if len(body.share_roots) != body.n or len(body.share_sizes) != body.n:
        raise WireError(f"{len(body.share_roots)} roots and {len(body.share_sizes)} sizes for n={body.n}")
    chunks = -(-body.size // body.chunk_bytes)
    if body.chunk_count != chunks and not (body.size == 0 and body.chunk_count == 1):
        raise WireError(f"{body.chunk_count} chunks for {body.size} bytes in chunks of {body.chunk_bytes}")
    if not (math.isfinite(body.created_at) and math.isfinite(body.expires_at)):
        raise WireError("timestamps must be finite")
    if body.expires_at != 0.0 and body.expires_at <= body.created_at:
        raise WireError("expires_at must be 0 (never) or after created_at")
    bound = max_share_size(body)
    if any(size > bound for size in body.share_sizes):
        raise WireError(f"a share size exceeds the {bound} bytes a share of this artifact can have")


def make_artifact(
    identity: NodeIdentity, mesh: bytes, seq: int, artifact_id: bytes, body: ArtifactBody
) -> Record:
    """Sign an artifact record (or its tombstone); raises `WireError` for a body peers would refuse."""
    check_artifact(body)
    return sign_record(identity, mesh, ARTIFACT, artifact_key(artifact_id), seq, encode(body))


def make_placement(
    identity: NodeIdentity, mesh: bytes, seq: int, artifact_id: bytes, body: PlacementBody
) -> Record:
    check_placement(body)
    return sign_record(identity, mesh, PLACEMENT, artifact_key(artifact_id), seq, encode(body))


def make_storage(identity: NodeIdentity, mesh: bytes, seq: int, body: StorageBody) -> Record:
    return sign_record(identity, mesh, STORAGE, "", seq, encode(body))


def check_placement(body: PlacementBody) -> None:
    if any(len(holder) not in (0, 32) for holder in body.holders):
        raise WireError("a placement holder is a 32-byte node id or b''")


def artifact_body(record: Record) -> ArtifactBody:
    """Decode and check an artifact record's body (raises `WireError` when malformed or inconsistent)."""
    if record.kind != ARTIFACT:
        raise WireError(f"not an artifact record: {record.kind!r}")
    return _artifact_body(record.key, record.body)


def placement_body(record: Record) -> PlacementBody:
    """Decode and check a placement record's body (raises `WireError` when malformed)."""
    if record.kind != PLACEMENT:
        raise WireError(f"not a placement record: {record.kind!r}")
    return _placement_body(record.key, record.body)


def storage_body(record: Record) -> StorageBody:
    """Decode a storage record's body (raises `WireError` when malformed or keyed)."""
    if record.kind != STORAGE:
        raise WireError(f"not a storage record: {record.kind!r}")
    if record.key != "":
        raise WireError("a storage record's key is empty")
    return _storage_body(record.body)


@lru_cache(maxsize=8192)
def _artifact_body(key: str, body: bytes) -> ArtifactBody:
    artifact_id_of(key)
    value = decode(body, ArtifactBody)
    check_artifact(value)
    return value


@lru_cache(maxsize=8192)
def _placement_body(key: str, body: bytes) -> PlacementBody:
    artifact_id_of(key)
    value = decode(body, PlacementBody)
    check_placement(value)
    return value


@lru_cache(maxsize=4096)
def _storage_body(body: bytes) -> StorageBody:
    return decode(body, StorageBody)
