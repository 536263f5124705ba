"""The record kinds that decide who belongs to a mesh: genesis, admission, revocation.

The mesh id is the hash of the genesis body, so a genesis record cannot be swapped for
another one: whoever knows the mesh id can check the founder.
"""

from __future__ import annotations

from protocols.common.hashing import digest
from protocols.common.identity import NodeIdentity
from protocols.common.wire import WireStruct, decode, encode
from protocols.records.record import Key32, Record, sign_record

GENESIS = "genesis"
ADMISSION = "admission"
REVOCATION = "revocation"
ADMISSION_KINDS = frozenset({GENESIS, ADMISSION, REVOCATION})


class GenesisBody(WireStruct, frozen=True):
    """What founds a mesh; its hash is the mesh id."""

    name: str
    founder: Key32
    created_at: float
    nonce: bytes


class AdmissionBody(WireStruct, frozen=True):
    """A member vouches for a new member (on an invite, or as the hub)."""

    member: Key32
    invite_id: bytes = b""
    admitted_at: float = 0.0


RECENT_ADMISSION_S = 60.0
"""How long an admission record introduces its member to membership (`add_member`).

A node hears of a newcomer through its admission record, by push or anti-entropy, even if
the sponsor dies. A joining node, though, receives every admission since the mesh began:
the members among them that are still around are in its seed's membership table, and
adding the rest would bring every member that ever left back as alive, to be probed and
buried again. 60 s is membership's default reclaim time."""


def introduces_member(body: AdmissionBody, now: float) -> bool:
    """True while an admission is recent enough to introduce its member (`now` on the admission's clock)."""
    return now - body.admitted_at <= RECENT_ADMISSION_S


class RevocationBody(WireStruct, frozen=True):
    """A member is thrown out: its records above `last_valid_seq` are refused everywhere."""

    member: Key32
    last_valid_seq: int
    reason: str = ""


def mesh_id_of(body: GenesisBody) -> bytes:
    return digest(encode(body))


def make_genesis(identity: NodeIdentity, name: str, created_at: float, nonce: bytes) -> Record:
    """Found a new mesh: the genesis record, seq 1 of the founder."""
    body = GenesisBody(name, identity.node_id, created_at, nonce)
    return sign_record(identity, mesh_id_of(body), GENESIS, "", 1, encode(body))


def make_admission(
    identity: NodeIdentity,
    mesh: bytes,
    seq: int,
    member: bytes,
    invite_id: bytes = b"",
    admitted_at: float = 0.0,
) -> Record:
    body = AdmissionBody(member, invite_id, admitted_at)
    return sign_record(identity, mesh, ADMISSION, member.hex(), seq, encode(body))


def make_revocation(
    identity: NodeIdentity,
    mesh: bytes,
    seq: int,
    member: bytes,
    last_valid_seq: int,
    reason: str = "",
) -> Record:
    body = RevocationBody(member, last_valid_seq, reason)
    return sign_record(identity, mesh, REVOCATION, member.hex(), seq, encode(body))


def genesis_body(record: Record) -> GenesisBody:
    """Decode a genesis body (raises `WireError` when malformed)."""
    return decode(record.body, GenesisBody)


def admission_body(record: Record) -> AdmissionBody:
    return decode(record.body, AdmissionBody)


def revocation_body(record: Record) -> RevocationBody:
    return decode(record.body, RevocationBody)
