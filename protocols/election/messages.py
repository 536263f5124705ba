"""Wire schemas of hub elections: the Paxos rounds of one term, and lease renewal.

Votes travel as the voter's signed `vote` record, so the proposer can put them into the
hub record as proof without asking again. Lease traffic is unsigned: the transport
authenticates the peer, and nobody but the hub relies on an acknowledgement.
"""

from __future__ import annotations

from typing import Annotated, Any, cast

import msgspec

from protocols.common.wire import WireStruct, decode
from protocols.election.records import MAX_COUNCIL, MAX_LEASE_S, Ballot, HubValue, LeaseSeconds
from protocols.records.fencing import Term
from protocols.records.record import Record

MAX_DECIDED_RECORDS = 16


class Prepare(WireStruct, frozen=True, tag="el-prepare"):
    """Phase 1: promise me `ballot` for `term`. `base` is my hub record of `term - 1`, to catch you up."""

    term: Term
    ballot: Ballot
    base: Record | None = None


class Promise(WireStruct, frozen=True, tag="el-promise"):
    """Phase 1 answer: the voter's signed vote record, which reports what it accepted before."""

    vote: Record


class Propose(WireStruct, frozen=True, tag="el-propose"):
    """Phase 2: accept `value` for `term` at `ballot`."""

    term: Term
    ballot: Ballot
    value: HubValue


class Accepted(WireStruct, frozen=True, tag="el-accepted"):
    """Phase 2 answer: the voter's signed vote record naming the accepted ballot and value.

    `lease_left_s`: how long the voter's promise to the previous hub still ran when it
    accepted (it accepts during that promise only once the hub has gone silent). The
    winner must not act before the longest of these has passed: see the election core.
    """

    vote: Record
    lease_left_s: Annotated[float, msgspec.Meta(ge=0.0, le=MAX_LEASE_S)] = 0.0


class Reject(WireStruct, frozen=True, tag="el-reject"):
    """Not now: a higher ballot was promised, or a live hub's lease still binds me for `lease_left_s`."""

    term: Term
    ballot: Ballot
    promised: Ballot | None = None
    lease_left_s: float = 0.0


class Decided(WireStruct, frozen=True, tag="el-decided"):
    """You are behind: the hub records of the terms you asked about, oldest first."""

    records: Annotated[list[Record], msgspec.Meta(max_length=MAX_DECIDED_RECORDS)]


class LeaseRequest(WireStruct, frozen=True, tag="el-lease"):
    """The hub of `term` asks its council to renew its lease for `lease_s`."""

    term: Term
    renewal: int
    lease_s: LeaseSeconds


class LeaseAck(WireStruct, frozen=True, tag="el-lease-ack"):
    """I will not help elect anyone for `term + 1` for `lease_s` from when I got the request."""

    term: Term
    renewal: int


ElectionMessage = Prepare | Promise | Propose | Accepted | Reject | Decided | LeaseRequest | LeaseAck
"""Every message the election protocol sends; decode with `decode_election`."""

__all__ = ["MAX_COUNCIL", "ElectionMessage", "decode_election"]

_MESSAGE_UNION: Any = ElectionMessage


def decode_election(data: bytes | bytearray | memoryview) -> ElectionMessage:
    """Decode one election message, raising `protocols.common.wire.WireError` for anything else."""
    return cast(ElectionMessage, decode(data, _MESSAGE_UNION))
