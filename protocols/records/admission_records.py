"""The record kinds that decide who belongs to a mesh: genesis, admission, revocation, and the
hub's revocations with the handovers that carry them across hubs.

The mesh id is the hash of the genesis body, so a genesis record cannot be swapped for
another one: whoever knows the mesh id can check the founder.

- `revocation` (key = the member): the founder's; it counts for good.
- `hub_revocation` (key = the member): the acting hub's, naming the term it holds, so
  that any node can check the author was hub of that term (`protocols.records.admission`
  has the rules and why).
- `handover` (key = the term and seq): the revocations a new hub carries over from the
  terms before its own, so they outlive the hub that issued them. One slot per record
  (the seq is in the key): a hub can add handovers, never replace one.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from protocols.common.hashing import digest
from protocols.common.identity import NodeIdentity
from protocols.common.wire import WireError, WireStruct, decode, encode
from protocols.records.fencing import Term
from protocols.records.record import Key32, Record, sign_record

GENESIS = "genesis"
ADMISSION = "admission"
REVOCATION = "revocation"
HUB_REVOCATION = "hub_revocation"
HANDOVER = "handover"
ADMISSION_KINDS = frozenset({GENESIS, ADMISSION, REVOCATION, HUB_REVOCATION, HANDOVER})
"""Every kind the ledger reads: a join reply carries them all, and a store applies them first."""

LastValidSeq = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
MAX_CARRIED = 65536
"""Most revocations one handover carries (about 3 MB; far more members than a mesh has)."""


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


class HubRevocationBody(WireStruct, frozen=True):
    """The hub of `term` throws a member out: its records above `last_valid_seq` are refused.

    `term` comes first, as in every hub-issued body (`protocols.records.fencing`).
    """

    term: Term
    member: Key32
    last_valid_seq: LastValidSeq
    reason: str = ""


class CarriedRevocation(WireStruct, frozen=True):
    """One revocation a handover carries: who, from which seq on, and why."""

    member: Key32
    last_valid_seq: LastValidSeq
    reason: str = ""


class HandoverBody(WireStruct, frozen=True):
    """The hub of `term` carries over the hub revocations that counted up to the term before."""

    term: Term
    revoked: Annotated[list[CarriedRevocation], msgspec.Meta(max_length=MAX_CARRIED)]


def handover_key(term: int, seq: int) -> str:
    """A handover's key: its term (zero-padded, so keys sort by term) and its own seq."""
    return f"{term:020d}.{seq}"


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


def make_hub_revocation(
    identity: NodeIdentity,
    mesh: bytes,
    seq: int,
    term: int,
    member: bytes,
    last_valid_seq: int,
    reason: str = "",
) -> Record:
    """The acting hub of `term` revokes `member` (its operator checks the lease, every node the term)."""
    body = HubRevocationBody(term, member, last_valid_seq, reason)
    return sign_record(identity, mesh, HUB_REVOCATION, member.hex(), seq, encode(body))


def make_handover(
    identity: NodeIdentity, mesh: bytes, seq: int, term: int, revoked: list[CarriedRevocation]
) -> Record:
    """The hub of `term` carries `revoked` over from the terms before it."""
    body = HandoverBody(term, revoked)
    return sign_record(identity, mesh, HANDOVER, handover_key(term, seq), seq, encode(body))


def genesis_body(record: Record) -> GenesisBody:
    """Decode a genesis body (raises `WireError` when malformed)."""
    return decode(record.body, GenesisBody)


def admission_body(record: Record) -> AdmissionBody:
    return decode(record.body, AdmissionBody)


def revocation_body(record: Record) -> RevocationBody:
    return decode(record.body, RevocationBody)


def hub_revocation_body(record: Record) -> HubRevocationBody:
    """Decode a hub revocation, checking its key names its member (raises `WireError` otherwise)."""
    body = decode(record.body, HubRevocationBody)
    if record.key != body.member.hex():
        raise WireError("a hub revocation's key must be its member")
    return body


def handover_body(record: Record) -> HandoverBody:
    """Decode a handover, checking its key names its term and seq (raises `WireError` otherwise)."""
    body = decode(record.body, HandoverBody)
    if record.key != handover_key(body.term, record.seq):
        raise WireError("a handover's key must be its term and seq")
    return body
