"""Storage record bodies: round trips, and refusal of malformed, absurd or inconsistent ones."""

from __future__ import annotations

import contextlib
import math
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.common.wire import WireError, encode
from protocols.records.record import Record
from protocols.storage.records import (
    ARTIFACT,
    MAX_ARTIFACT_BYTES,
    MAX_HOLDINGS,
    PLACEMENT,
    STORAGE,
    ArtifactBody,
    Holding,
    PlacementBody,
    StorageBody,
    artifact_body,
    artifact_id_of,
    artifact_key,
    make_artifact,
    max_share_size,
    placement_body,
    storage_body,
)
from tests.protocols.storage.world import MESH, World, artifact_id, body

WORLD = World(2)
OWNER = WORLD.ids[0]
ID = artifact_id("a")


def unsigned(kind: str, key: str, payload: bytes) -> Record:
    """A record the decoders read (they do not check signatures; the store did)."""
    return Record(MESH, OWNER, kind, key, 1, payload, bytes(64))


def artifact_record(value: Any, key: str | None = None) -> Record:
    return unsigned(ARTIFACT, ID.hex() if key is None else key, encode(value))


def test_records_round_trip() -> None:
    value = body(3, 10, expires_at=100.0)
    record = WORLD.artifact(OWNER, ID, value)
    assert (record.kind, record.key, record.author) == (ARTIFACT, ID.hex(), OWNER)
    assert artifact_body(record) == value
    assert artifact_id_of(record.key) == ID == bytes.fromhex(artifact_key(ID))
    tombstone = WORLD.artifact(OWNER, ID, msgspec.structs.replace(value, deleted=True))
    assert tombstone.seq > record.seq and artifact_body(tombstone).deleted

    placement = WORLD.placement(OWNER, ID, [OWNER, b"", WORLD.ids[1]], generation=2, term=0)
    assert placement.kind == PLACEMENT
    assert placement_body(placement) == PlacementBody(2, 0, [OWNER, b"", WORLD.ids[1]])

    storage = WORLD.storage(OWNER, [(ID, 0), (ID, 9)], offered=5000, used=2400)
    assert (storage.kind, storage.key) == (STORAGE, "")
    assert storage_body(storage) == StorageBody(5000, 2400, True, "", [Holding(ID, 0), Holding(ID, 9)])


def test_an_empty_artifact_may_have_no_chunk_or_one() -> None:
    for chunks in (0, 1):
        value = msgspec.structs.replace(body(), size=0, chunk_count=chunks)
        assert artifact_body(artifact_record(value)).chunk_count == chunks
    with pytest.raises(WireError):
        artifact_body(artifact_record(msgspec.structs.replace(body(), size=0, chunk_count=2)))


INCONSISTENT: dict[str, dict[str, Any]] = {
    "k above n": {"k": 11},
    "k zero": {"k": 0},
    "n zero": {"n": 0, "k": 0, "share_roots": [], "share_sizes": []},
    "n above 255": {"n": 256, "share_roots": [bytes(32)] * 256, "share_sizes": [1] * 256},
    "roots not n": {"share_roots": [bytes(32)] * 9},
    "sizes not n": {"share_sizes": [1] * 11},
    "short root": {"share_roots": [bytes(31)] * 10},
    "chunk count": {"chunk_count": 2},
    "chunk bytes zero": {"chunk_bytes": 0},
    "huge chunk": {"chunk_bytes": 2**40, "chunk_count": 1},
    "huge artifact": {"size": MAX_ARTIFACT_BYTES + 1, "chunk_count": MAX_ARTIFACT_BYTES // 1024 + 1},
    "negative size": {"size": -1},
    "share bigger than a share can be": {"share_sizes": [10**9] * 10},
    "negative share size": {"share_sizes": [-1] * 10},
    "long name": {"name": "x" * 256},
    "expiry before creation": {"created_at": 50.0, "expires_at": 40.0},
    "expiry at creation": {"created_at": 50.0, "expires_at": 50.0},
    "negative creation": {"created_at": -1.0},
    "nan creation": {"created_at": math.nan},
    "infinite expiry": {"expires_at": math.inf},
}


@pytest.mark.parametrize("case", sorted(INCONSISTENT))
def test_malformed_or_inconsistent_artifact_bodies_are_refused(case: str) -> None:
    fields = {f: getattr(body(), f) for f in ArtifactBody.__struct_fields__}
    fields.update(INCONSISTENT[case])
    payload = encode(list(fields.values()))  # bypass the constructor: peers send whatever they like
    with pytest.raises(WireError):
        artifact_body(unsigned(ARTIFACT, ID.hex(), payload))


@pytest.mark.parametrize(
    "key", ["", "ab", ID.hex().upper(), ID.hex()[:-1] + "g", " " + ID.hex()[1:], ID.hex() + "00"]
)
def test_an_artifact_key_must_be_the_lower_case_hex_id(key: str) -> None:
    with pytest.raises(WireError):
        artifact_body(artifact_record(body(), key))
    with pytest.raises(WireError):
        placement_body(unsigned(PLACEMENT, key, encode(PlacementBody(1, 0, [OWNER]))))


def test_decoders_check_the_kind_and_the_storage_key() -> None:
    with pytest.raises(WireError):
        artifact_body(unsigned(PLACEMENT, ID.hex(), encode(body())))
    with pytest.raises(WireError):
        placement_body(unsigned(ARTIFACT, ID.hex(), encode(PlacementBody(1, 0, [OWNER]))))
    good = encode(StorageBody(1, 0, True, "", []))
    assert storage_body(unsigned(STORAGE, "", good)).offered_bytes == 1
    with pytest.raises(WireError):
        storage_body(unsigned(STORAGE, "x", good))
    with pytest.raises(WireError):
        storage_body(unsigned(ARTIFACT, "", good))


@pytest.mark.parametrize(
    "payload",
    [
        [0, 0, [OWNER]],  # generation 0
        [1, -1, [OWNER]],  # negative term
        [1, 0, []],  # no shares
        [1, 0, [b"short"]],  # neither a node id nor b""
        [1, 0, [OWNER] * 256],
    ],
)
def test_malformed_placements_are_refused(payload: list[Any]) -> None:
    with pytest.raises(WireError):
        placement_body(unsigned(PLACEMENT, ID.hex(), encode(payload)))


@pytest.mark.parametrize(
    "payload",
    [
        [-1, 0, True, "", []],
        [0, -1, True, "", []],
        [0, 0, True, "x" * 201, []],
        [0, 0, True, "", [[ID, 255]]],
        [0, 0, True, "", [[ID[:31], 0]]],
        [0, 0, True, "", [[ID, 0]] * (MAX_HOLDINGS + 1)],
        [0, 0, "yes", "", []],
    ],
)
def test_malformed_storage_bodies_are_refused(payload: list[Any]) -> None:
    with pytest.raises(WireError):
        storage_body(unsigned(STORAGE, "", encode(payload)))


def test_the_largest_holdings_list_fits_a_record_body() -> None:
    value = StorageBody(10**12, 10**12, False, "x" * 200, [Holding(ID, 254)] * MAX_HOLDINGS)
    record = WORLD.raw(OWNER, STORAGE, "", encode(value))
    assert len(storage_body(record).holdings) == MAX_HOLDINGS


def test_make_artifact_refuses_what_peers_would_refuse() -> None:
    with pytest.raises(WireError):
        make_artifact(WORLD.people[0], MESH, 1, ID, msgspec.structs.replace(body(), chunk_count=7))
    with pytest.raises(ValueError):
        make_artifact(WORLD.people[0], MESH, 1, ID[:16], body())


def test_share_size_bound_allows_a_real_share() -> None:
    """A share is a header plus one block per chunk of at most ceil(chunk / k) bytes."""
    value = msgspec.structs.replace(body(), size=4 * 2**20 * 5, chunk_bytes=4 * 2**20, chunk_count=5)
    real = 16 + 4096 + 5 * -(-(4 * 2**20) // 3)
    assert real <= max_share_size(value) < 2 * real


def test_decoded_bodies_are_shared_between_decodes() -> None:
    record = WORLD.storage(OWNER, [(ID, 1)])
    copy = Record(*(getattr(record, f) for f in Record.__struct_fields__))
    assert storage_body(copy) is storage_body(record)


# -- fuzz: random bytes, and random msgpack values, never raise anything but WireError

msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=40)
    | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=12) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=40,
)


def decode_all(payload: bytes, key: str) -> None:
    for kind, decoder in ((ARTIFACT, artifact_body), (PLACEMENT, placement_body), (STORAGE, storage_body)):
        with contextlib.suppress(WireError):
            decoder(unsigned(kind, key, payload))


@settings(max_examples=300, deadline=None)
@given(payload=st.binary(max_size=600))
def test_body_decoders_on_random_bytes_raise_only_wire_errors(payload: bytes) -> None:
    decode_all(payload, ID.hex())
    decode_all(payload, "")


@settings(max_examples=150, deadline=None)
@given(value=msgpack_values)
def test_body_decoders_on_random_msgpack_raise_only_wire_errors(value: Any) -> None:
    decode_all(encode(value), ID.hex())


@settings(max_examples=200, deadline=None)
@given(
    fields=st.lists(
        st.integers(min_value=-2, max_value=300)
        | st.floats()
        | st.just(ID)
        | st.lists(st.just(ID), max_size=12),
        min_size=10,
        max_size=11,
    )
)
def test_artifact_decoder_on_near_miss_bodies_raises_only_wire_errors(fields: list[Any]) -> None:
    decode_all(encode(fields), ID.hex())
