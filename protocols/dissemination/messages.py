"""Wire schemas of record dissemination: eager pushes and push-pull anti-entropy."""

from __future__ import annotations

from typing import Annotated, Any, cast

import msgspec

from protocols.common.wire import WireStruct, decode
from protocols.records.record import Key32, Record
from protocols.records.store import SUMMARY_BUCKETS, AuthorDelta, ClockSeq

Digest32 = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
Clock = dict[Key32, ClockSeq]
"""A vector clock (or the part of one for some buckets) on the wire: `{author: seq}`."""


class Push(WireStruct, frozen=True, tag="push"):
    """New records, forwarded once by each node that accepts them first."""

    records: list[Record]


Summary = Annotated[bytes, msgspec.Meta(max_length=8 * SUMMARY_BUCKETS)]
Buckets = Annotated[
    list[Annotated[int, msgspec.Meta(ge=0, lt=SUMMARY_BUCKETS)]], msgspec.Meta(max_length=SUMMARY_BUCKETS)
]


class SyncHello(WireStruct, frozen=True, tag="sync-hello"):
    """Opens anti-entropy with a summary of the sender's state: equal summaries end it cheaply.

    `clock_total` catches replicas with equal records but unequal clock claims (records
    that arrived by push past a gap), which would otherwise never get claimed.
    `summary` (`RecordStore.summary`) tells the receiver which author buckets differ, so
    the sync that follows exchanges only those authors' clock entries.
    """

    state: Digest32
    clock_total: int
    summary: Summary = b""


class SyncRequest(WireStruct, frozen=True, tag="sync-request"):
    """The states differ: here is my clock; send me what I lack, and yours so I can do the same.

    With `buckets`, `clock` covers only the authors of those summary buckets and so does
    the exchange; None means the whole clock (a peer that sent no summary).
    """

    clock: Clock
    buckets: Buckets | None = None


class SyncDelta(WireStruct, frozen=True, tag="sync-delta"):
    """What the peer lacks; `clock` is set when the sender wants a delta back (for `buckets`)."""

    entries: list[AuthorDelta]
    clock: Clock | None = None
    buckets: Buckets | None = None


DisseminationMessage = Push | SyncHello | SyncRequest | SyncDelta
"""Every message the dissemination protocol sends; decode with `decode_dissemination`."""

_MESSAGE_UNION: Any = DisseminationMessage


def decode_dissemination(data: bytes | bytearray | memoryview) -> DisseminationMessage:
    """Decode one dissemination message, raising `protocols.common.wire.WireError` for anything else."""
    return cast(DisseminationMessage, decode(data, _MESSAGE_UNION))
