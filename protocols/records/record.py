"""Signed records: the one unit of replicated state, and how they are signed and checked.

A record is `(mesh, author, kind, key, seq, body, signature)`. The signature covers the
canonical encoding of every other field under a domain tag, so a record cannot be
replayed into another mesh or reinterpreted as another kind.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import msgspec

from protocols.common.hashing import digest
from protocols.common.identity import KEY_SIZE, SIGNATURE_SIZE, NodeId, NodeIdentity
from protocols.common.identity import verify as ed25519_verify
from protocols.common.wire import WireStruct, encode

SIGNING_DOMAIN = "ileices/record/v1"
MAX_BODY_BYTES = 256 * 1024
MAX_KIND_CHARS = 32
MAX_KEY_CHARS = 256

Key32 = Annotated[bytes, msgspec.Meta(min_length=KEY_SIZE, max_length=KEY_SIZE)]
Signature = Annotated[bytes, msgspec.Meta(min_length=SIGNATURE_SIZE, max_length=SIGNATURE_SIZE)]
Kind = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_KIND_CHARS, pattern=r"^[a-z][a-z0-9_\-]*$")]
RecordKey = Annotated[str, msgspec.Meta(max_length=MAX_KEY_CHARS)]
Seq = Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]
Body = Annotated[bytes, msgspec.Meta(max_length=MAX_BODY_BYTES)]

Verifier = Callable[[NodeId, bytes, bytes], bool]
"""`verify(author, message, signature) -> bool`; a simulation may pass a caching one."""


class Record(WireStruct, frozen=True):
    """One signed fact. `seq` is the author's own counter, shared across its kinds and keys."""

    mesh: Key32
    author: Key32
    kind: Kind
    key: RecordKey
    seq: Seq
    body: Body
    signature: Signature

    @property
    def slot(self) -> tuple[bytes, str, str]:
        """The `(author, kind, key)` slot this record competes for (highest seq wins)."""
        return (self.author, self.kind, self.key)


def signed_bytes(mesh: bytes, author: bytes, kind: str, key: str, seq: int, body: bytes) -> bytes:
    """The exact bytes a record's signature covers."""
    return encode((SIGNING_DOMAIN, mesh, author, kind, key, seq, body))


def sign_record(identity: NodeIdentity, mesh: bytes, kind: str, key: str, seq: int, body: bytes) -> Record:
    """Create and sign a record authored by `identity`."""
    author = identity.node_id
    signature = identity.sign(signed_bytes(mesh, author, kind, key, seq, body))
    return Record(mesh, author, kind, key, seq, body, signature)


def verify_record(record: Record, verify: Verifier = ed25519_verify) -> bool:
    """True when the record's signature is its author's over its content."""
    message = signed_bytes(record.mesh, record.author, record.kind, record.key, record.seq, record.body)
    return verify(record.author, message, record.signature)


def record_id(record: Record) -> bytes:
    """Content hash of the whole record, signature included: its identity in logs and evidence."""
    return digest(encode(record))
