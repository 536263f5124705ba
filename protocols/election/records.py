"""Record kinds and bodies of hub elections: hub (the elected value with its proof), vote, council, lease.

- `hub` (key = the term, zero-padded): the value chosen for term T (hub id, council,
  lease duration) with the ballot and, for T > 1, the proof: signed `vote` records of a
  majority of the council of term T-1 that accepted exactly this ballot and value. Any
  node checks it; its author is whoever assembled the proof, not necessarily the hub.
  Term 1 is the founder's, signed by the founder, with no proof.
- `vote` (key = the term): a council member's acceptor state for one term, re-signed on
  every change: the highest ballot it promised, and the ballot and value it accepted.
  One slot per voter per term, so a store keeps one current vote of each voter per term.
- `council`, `lease`: hub-issued (fenced by term, see `protocols/records/fencing.py`): the hub
  announces its council when it takes office and its lease as it renews it.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from protocols.common.hashing import digest
from protocols.common.identity import NodeIdentity
from protocols.common.wire import WireStruct, decode, encode
from protocols.records.fencing import COUNCIL, LEASE, Term
from protocols.records.record import Key32, Record, sign_record

HUB = "hub"
VOTE = "vote"
MAX_COUNCIL = 15
MAX_LEASE_S = 600.0

Council = Annotated[list[Key32], msgspec.Meta(min_length=1, max_length=MAX_COUNCIL)]
LeaseSeconds = Annotated[float, msgspec.Meta(gt=0.0, le=MAX_LEASE_S)]
BallotNumber = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]


class Ballot(WireStruct, frozen=True):
    """A round of one term's election; the proposer's id breaks ties, so ballots are totally ordered."""

    number: BallotNumber
    proposer: Key32

    @property
    def rank(self) -> tuple[int, bytes]:
        return (self.number, self.proposer)


class HubValue(WireStruct, frozen=True):
    """What an election decides for one term: who is hub, whom it answers to, how long a lease lasts."""

    hub: Key32
    council: Council
    lease_s: LeaseSeconds


class HubBody(WireStruct, frozen=True):
    """The decision of term `term`, and the votes that prove it (empty for the founder's term 1)."""

    term: Term
    value: HubValue
    ballot: Ballot
    proof: Annotated[list[Record], msgspec.Meta(max_length=MAX_COUNCIL)]


class VoteBody(WireStruct, frozen=True):
    """One council member's acceptor state for term `term` (Paxos: promised, accepted)."""

    term: Term
    promised: Ballot
    accepted: Ballot | None = None
    value: HubValue | None = None


class CouncilBody(WireStruct, frozen=True):
    """Hub-issued: the hub of `term` took office with this council."""

    term: Term
    hub: Key32
    members: Council


class LeaseBody(WireStruct, frozen=True):
    """Hub-issued: the hub of `term` held its lease for `remaining_s` more seconds when it signed this."""

    term: Term
    renewal: int
    remaining_s: float


def term_key(term: int) -> str:
    """Zero-padded, so keys sort by term."""
    return f"{term:020d}"


def value_digest(value: HubValue) -> bytes:
    return digest(encode(value))


def make_hub_record(identity: NodeIdentity, mesh: bytes, seq: int, body: HubBody) -> Record:
    return sign_record(identity, mesh, HUB, term_key(body.term), seq, encode(body))


def make_vote(identity: NodeIdentity, mesh: bytes, seq: int, body: VoteBody) -> Record:
    return sign_record(identity, mesh, VOTE, term_key(body.term), seq, encode(body))


def make_council(identity: NodeIdentity, mesh: bytes, seq: int, body: CouncilBody) -> Record:
    return sign_record(identity, mesh, COUNCIL, "", seq, encode(body))


def make_lease(identity: NodeIdentity, mesh: bytes, seq: int, body: LeaseBody) -> Record:
    return sign_record(identity, mesh, LEASE, "", seq, encode(body))


def hub_body(record: Record) -> HubBody:
    """Decode a hub body (raises `WireError` when malformed)."""
    return decode(record.body, HubBody)


def vote_body(record: Record) -> VoteBody:
    return decode(record.body, VoteBody)


def council_body(record: Record) -> CouncilBody:
    return decode(record.body, CouncilBody)


def lease_body(record: Record) -> LeaseBody:
    return decode(record.body, LeaseBody)


def majority(council_size: int) -> int:
    return council_size // 2 + 1
