"""Storage messages: every type round-trips through `decode_storage`; nothing else gets past it."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.common.hashing import digest
from protocols.common.wire import WireError, encode
from protocols.storage.messages import (
    AuditChallenge,
    AuditProof,
    RepairDone,
    RepairRequest,
    ShareAt,
    SharePush,
    ShareReply,
    ShareRequest,
    StorageMessage,
    decode_storage,
)

ID = digest(b"artifact")
TAGS = ["st-req", "st-push", "st-reply", "st-audit", "st-proof", "st-repair", "st-repaired"]
ROOT = digest(b"root")

MESSAGES: list[StorageMessage] = [
    ShareRequest(ID, 0, 0),
    ShareRequest(ID, 254, 2**40),
    SharePush(ID, 3, ROOT, 123_456, 1024),
    ShareReply(True, ""),
    ShareReply(False, "full: over the volunteer's disk limit"),
    AuditChallenge(ID, 7, 41),
    AuditProof(b"header" * 10, b"\x00" * 5000),
    RepairRequest(ID, ROOT, [ShareAt(0, ROOT), ShareAt(4, ID)], [ShareAt(7, ROOT)]),
    RepairDone([ShareAt(7, ROOT)]),
    RepairDone([]),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips(message: StorageMessage) -> None:
    assert decode_storage(encode(message)) == message


@pytest.mark.parametrize(
    "payload",
    [
        ["st-req", ID[:31], 0, 0],  # short artifact id
        ["st-req", ID, 255, 0],  # index beyond 255 shares
        ["st-req", ID, -1, 0],
        ["st-req", ID, 0, -5],  # negative offset
        ["st-push", ID, 0, ROOT, -1, 0],
        ["st-reply", "yes", ""],
        ["st-reply", False, "x" * 201],
        ["st-audit", ID, 0, -1],
        ["st-proof", b"h"],
        ["st-repair", ID, ROOT, [[0, ID[:5]]], []],  # short node id
        ["st-repair", ID, ROOT, [[300, ID]], []],  # index beyond 255 shares
        ["st-repaired", [[0, ID]] * 256],  # more shares than an artifact has
        ["el-prepare", 1],  # another protocol's tag
        ["st-nope", ID],
        [ID, 0, 0],  # no tag
        {"artifact_id": ID},
    ],
)
def test_malformed_messages_are_refused(payload: Any) -> None:
    with pytest.raises(WireError):
        decode_storage(encode(payload))


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=40)
    | st.sampled_from(TAGS),
    lambda inner: st.lists(inner, max_size=8),
    max_leaves=24,
)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300))
def test_random_bytes_raise_only_wire_errors(data: bytes) -> None:
    with contextlib.suppress(WireError):
        decode_storage(data)


@settings(max_examples=120, deadline=None)
@given(
    tag=st.sampled_from(
        ["st-req", "st-push", "st-reply", "st-audit", "st-proof", "st-repair", "st-repaired"]
    ),
    rest=st.lists(msgpack_values, max_size=6),
)
def test_tagged_random_values_raise_only_wire_errors(tag: str, rest: list[Any]) -> None:
    try:
        message = decode_storage(encode([tag, *rest]))
    except WireError:
        return
    assert decode_storage(encode(message)) == message
