"""Wire schemas of the join protocol: the only one a not-yet-admitted peer may speak."""

from __future__ import annotations

from typing import Annotated

import msgspec

from protocols.common.wire import WireStruct
from protocols.join.invite import Invite
from protocols.records.record import Record


class JoinRequest(WireStruct, frozen=True):
    """A token holder asks the inviter to admit it, saying where it can be reached."""

    invite: Invite
    addresses: Annotated[list[Annotated[str, msgspec.Meta(max_length=256)]], msgspec.Meta(max_length=16)]


MAX_CHECKPOINT_BYTES = 64 * 1024


class JoinReply(WireStruct, frozen=True):
    """Admitted (with the records it needs to start: genesis, admissions, manifests), or why not.

    `checkpoint`: from the inviter only, an encoded `protocols.election.checkpoint.Checkpoint`
    (the newest hub term it believes, signed for this joiner), so the joiner need not verify
    the hub chain from term 1; empty when there is none. Opaque here: the join protocol
    carries it, the election defines and checks it.
    """

    admitted: bool
    problem: str = ""
    records: list[Record] = msgspec.field(default_factory=list)
    checkpoint: Annotated[bytes, msgspec.Meta(max_length=MAX_CHECKPOINT_BYTES)] = b""
