"""Fencing vocabulary: which record kinds the hub issues, and how to read the term each one carries.

Every hub-issued body is a wire struct whose first field is the issuing hub's `term`, so
the record store can fence a kind it knows nothing else about by decoding that one
field. A kind the hub issues later (market awards, settlements) joins by adding its name
to `HUB_ISSUED_KINDS` and putting `term` first in its body.

Hub-issued state is per term: once a store has seen term T, records of terms below T are
refused, even ones issued legitimately before T began, so a new hub re-issues whatever
must carry over. That is the price of the rule that no stale hub can ever write again.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from protocols.common.wire import decode
from protocols.records.record import Record

COUNCIL = "council"
LEASE = "lease"
HUB_ISSUED_KINDS: frozenset[str] = frozenset({COUNCIL, LEASE})

Term = Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]


class _TermPrefix(msgspec.Struct, frozen=True, array_like=True):
    """The first field of any hub-issued body; trailing fields are ignored (not forbidden)."""

    term: Term


def issued_term(record: Record) -> int:
    """The term a hub-issued record was issued in (raises `WireError` when the body is malformed)."""
    return decode(record.body, _TermPrefix).term
