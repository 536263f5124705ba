"""The record store: merge rules, the prefix-only vector clock, admission, and the CRDT laws."""

from __future__ import annotations

import random

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.common.identity import NodeIdentity
from protocols.common.wire import WireError, decode, encode
from protocols.records.admission_records import make_admission, make_revocation
from protocols.records.record import Record, sign_record
from protocols.records.store import Outcome, RecordStore
from tests.support.mesh_fixtures import MeshFixture, make_mesh, random_records

MESH = make_mesh(members=3, seed=1)
POOL = MESH.membership_records() + random_records(MESH, 60, seed=2)


def fresh_store(mesh: MeshFixture = MESH) -> RecordStore:
    return RecordStore(mesh.mesh_id)


def store_of(records: list[Record]) -> RecordStore:
    """A replica of MESH that has seen the mesh's membership and then `records`.

    The lattice laws are about states of admitted records; the membership records are what
    make the others admissible, so every replica starts from them (arrival order of the
    membership records themselves is covered by the convergence test).
    """
    store = fresh_store()
    store.merge(MESH.membership_records())
    store.merge(records)
    return store


def contents(store: RecordStore) -> set[bytes]:
    return {encode(record) for record in store}


def sync(a: RecordStore, b: RecordStore) -> None:
    """One anti-entropy exchange in both directions."""
    b.apply_delta(a.delta_for(b.clock()))
    a.apply_delta(b.delta_for(a.clock()))


subsets = st.lists(st.sampled_from(POOL[len(MESH.membership_records()) :]), max_size=40)


@settings(max_examples=60, deadline=None)
@given(subsets, subsets)
def test_merge_is_commutative(xs: list[Record], ys: list[Record]) -> None:
    assert contents(store_of(xs + ys)) == contents(store_of(ys + xs))
    assert store_of(xs + ys).state_digest() == store_of(ys + xs).state_digest()


@settings(max_examples=60, deadline=None)
@given(subsets, subsets, subsets)
def test_merge_is_associative(xs: list[Record], ys: list[Record], zs: list[Record]) -> None:
    left = store_of(list(store_of(xs + ys)) + zs)
    right = store_of(xs + list(store_of(ys + zs)))
    assert contents(left) == contents(right)


@settings(max_examples=60, deadline=None)
@given(subsets)
def test_merge_is_idempotent(xs: list[Record]) -> None:
    once = store_of(xs)
    twice = store_of(xs)
    twice.merge(xs)
    assert contents(once) == contents(twice)
    assert once.clock() == twice.clock()


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=2, max_value=6), st.integers(min_value=0, max_value=2**32))
def test_replicas_converge_after_anti_entropy(replicas: int, seed: int) -> None:
    """Random subsets in random order, with duplicates and losses; then gossip makes all equal.

    The first replica plays the authors, who hold their own records; the others receive
    a random half of everything (refused when it arrives before the records admitting its
    author). Anti-entropy between random pairs then brings every replica to the same state.
    """
    rng = random.Random(seed)
    origin = store_of(POOL)
    stores = [origin] + [fresh_store() for _ in range(replicas - 1)]
    for record in rng.sample(POOL, len(POOL)):
        for store in stores[1:]:
            if rng.random() < 0.5:
                continue
            for _ in range(2 if rng.random() < 0.2 else 1):
                store.add(record)
    for _ in range(replicas * 4):
        a, b = rng.sample(stores, 2)
        sync(a, b)
    for store in stores:
        sync(origin, store)  # make sure everyone has met the origin at least once...
    for store in stores:
        sync(store, stores[1])  # ...and then gossiped onward
    for store in stores:
        assert contents(store) == contents(origin)
        assert store.clock() == origin.clock()
        assert store.state_digest() == origin.state_digest()
        assert store.summary() == origin.summary()  # however differently each got there


@settings(max_examples=40, deadline=None)
@given(subsets, subsets)
def test_the_bucket_summary_tells_exactly_which_authors_differ(xs: list[Record], ys: list[Record]) -> None:
    a, b = store_of(xs), store_of(ys)
    buckets = a.differing_buckets(b.summary())
    assert buckets is not None and (buckets == []) == (contents(a) == contents(b) and a.clock() == b.clock())
    # syncs restricted to the differing buckets converge as whole-clock syncs do: records in
    # one round, clock claims (which may wait on a gap the same round fills) by the second
    for _ in range(2):
        buckets = a.differing_buckets(b.summary()) or []
        b.apply_delta(a.delta_for(b.clock_of(buckets), buckets=buckets))
        a.apply_delta(b.delta_for(a.clock_of(buckets), buckets=buckets))
        assert contents(a) == contents(b)
    assert a.summary() == b.summary() and a.clock() == b.clock()


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(POOL[4:]), st.integers(min_value=0), st.integers(min_value=1, max_value=255))
def test_any_tampered_byte_is_rejected(record: Record, position: int, flip: int) -> None:
    store = store_of([])
    before = contents(store)
    data = bytearray(encode(record))
    data[position % len(data)] ^= flip
    try:
        tampered = decode(bytes(data), Record)
    except WireError:
        return
    assert store.add(tampered) is not Outcome.ACCEPTED
    assert contents(store) == before


def test_highest_seq_wins_per_slot() -> None:
    mesh = make_mesh(members=1, seed=5)
    member = mesh.members[0]
    old = mesh.next_record(member, "note", "k", b"old")
    new = mesh.next_record(member, "note", "k", b"new")
    store = RecordStore(mesh.mesh_id)
    store.merge([*mesh.membership_records(), new, old])
    assert store.get(member.node_id, "note", "k") == new
    assert store.counters[Outcome.STALE] == 1


def test_clock_claims_only_complete_prefixes() -> None:
    mesh = make_mesh(members=1, seed=6)
    member = mesh.members[0]
    r1, r2, r3 = (mesh.next_record(member, "note", f"k{i}") for i in range(3))
    store = RecordStore(mesh.mesh_id)
    store.merge(mesh.membership_records())
    store.add(r1)
    store.add(r3)  # eagerly pushed past a gap: held, but not claimed
    assert store.clock()[member.node_id] == 1
    assert len(store.delta_for({})) == 2  # founder + member; r3 not offered as claimed
    store.add(r2)  # gap filled: the claim extends through r3
    assert store.clock()[member.node_id] == 3


def test_delta_covers_superseded_gaps() -> None:
    """A record superseded at the sender never arrives; the delta's claim still covers its seq."""
    mesh = make_mesh(members=1, seed=7)
    member = mesh.members[0]
    first = mesh.next_record(member, "note", "k")
    _ = mesh.next_record(member, "note", "j")
    third = mesh.next_record(member, "note", "j")  # supersedes the second
    sender = RecordStore(mesh.mesh_id)
    sender.merge([*mesh.membership_records(), first, _, third])
    receiver = RecordStore(mesh.mesh_id)
    receiver.merge([*mesh.membership_records(), third])  # pushed eagerly: not claimable alone
    assert receiver.clock().get(member.node_id, 0) == 0
    receiver.apply_delta(sender.delta_for(receiver.clock()))
    assert receiver.clock() == sender.clock()
    assert contents(receiver) == contents(sender)


def test_delta_between_1000_author_stores_is_truncated_honestly() -> None:
    mesh = make_mesh(members=2, seed=8)
    records = random_records(mesh, 50, seed=9)
    sender = RecordStore(mesh.mesh_id)
    sender.merge(mesh.membership_records() + records)
    receiver = RecordStore(mesh.mesh_id)
    rounds = 0
    while receiver.clock() != sender.clock():
        receiver.apply_delta(sender.delta_for(receiver.clock(), max_records=7))
        rounds += 1
        assert rounds < 20
    assert contents(receiver) == contents(sender)


def test_equivocation_is_kept_as_evidence_and_resolved_the_same_everywhere() -> None:
    mesh = make_mesh(members=1, seed=10)
    member = mesh.members[0]
    a = sign_record(member, mesh.mesh_id, "note", "k", 1, b"a")
    b = sign_record(member, mesh.mesh_id, "note", "k", 1, b"b")
    one, two = RecordStore(mesh.mesh_id), RecordStore(mesh.mesh_id)
    one.merge([*mesh.membership_records(), a, b])
    two.merge([*mesh.membership_records(), b, a])
    assert contents(one) == contents(two)
    assert len(one.evidence) == len(two.evidence) == 1
    assert {encode(r) for r in one.evidence[0]} == {encode(a), encode(b)}


def test_records_from_non_members_and_other_meshes_are_refused_and_counted() -> None:
    store = store_of([])
    stranger = NodeIdentity.from_seed(bytes(32))
    assert store.add(sign_record(stranger, MESH.mesh_id, "note", "k", 1, b"")) is Outcome.NOT_ADMITTED
    other = make_mesh(members=0, seed=99)
    assert store.add(other.genesis) is Outcome.WRONG_MESH
    forged = msgspec.structs.replace(POOL[5], body=b"forged")
    assert store.add(forged) is Outcome.BAD_SIGNATURE
    assert store.counters[Outcome.NOT_ADMITTED] == 1
    assert store.counters[Outcome.BAD_SIGNATURE] == 1
    assert len(store) == len(MESH.membership_records())


def test_nothing_is_admitted_before_genesis_and_admissions_arrive_in_any_order() -> None:
    mesh = make_mesh(members=2, seed=11)
    # the second member is admitted by the first, not by the founder
    late = NodeIdentity.from_seed(b"\x07" * 32)
    chain = make_admission(mesh.members[0], mesh.mesh_id, 1, late.node_id)
    mesh.seqs[mesh.members[0].node_id] = 1
    note = sign_record(late, mesh.mesh_id, "note", "k", 1, b"hi")
    store = RecordStore(mesh.mesh_id)
    result = store.merge([note, chain, *reversed(mesh.membership_records())])
    assert store.get(late.node_id, "note", "k") == note
    assert result.outcomes[Outcome.ACCEPTED] == len(mesh.membership_records()) + 2


def test_revocation_refuses_later_records_and_purges_them() -> None:
    mesh = make_mesh(members=1, seed=12)
    member = mesh.members[0]
    kept = mesh.next_record(member, "note", "a")
    dropped = mesh.next_record(member, "note", "b")
    seq = mesh.seqs[mesh.founder.node_id] + 1
    revoke = make_revocation(mesh.founder, mesh.mesh_id, seq, member.node_id, last_valid_seq=kept.seq)
    store = RecordStore(mesh.mesh_id)
    store.merge([*mesh.membership_records(), kept, dropped])
    result = store.merge([revoke])
    assert result.purged == [dropped]
    assert store.get(member.node_id, "note", "a") == kept
    assert store.get(member.node_id, "note", "b") is None
    assert store.add(mesh.next_record(member, "note", "c")) is Outcome.NOT_ADMITTED
    assert not store.ledger.is_member(member.node_id)


def test_only_the_founder_may_revoke() -> None:
    mesh = make_mesh(members=2, seed=13)
    a, b = mesh.members
    revoke = make_revocation(a, mesh.mesh_id, 1, b.node_id, last_valid_seq=0)
    store = RecordStore(mesh.mesh_id)
    store.merge([*mesh.membership_records(), revoke])
    assert store.ledger.is_member(b.node_id)


@pytest.mark.parametrize("garbage", [b"", b"\xff" * 10, encode([1, 2, 3]), encode({"a": 1})])
def test_garbage_never_decodes_to_a_record(garbage: bytes) -> None:
    with pytest.raises(WireError):
        decode(garbage, Record)


def test_a_superseded_seq_still_counts_for_the_clock_whatever_the_order() -> None:
    """Found by hypothesis: seq 6 superseded by seq 22 before seq 5 arrived left the claim at 5,
    while seeing the same records again moved it to 6. Merging must be idempotent for clocks too."""
    mesh = make_mesh(members=0, seed=14)
    founder = mesh.founder
    first = mesh.next_record(founder, "note", "a")
    second = mesh.next_record(founder, "note", "b")
    third = mesh.next_record(founder, "note", "b")  # supersedes `second`
    for order in ([second, third, first], [third, second, first], [first, second, third]):
        store = RecordStore(mesh.mesh_id)
        store.merge(mesh.membership_records())
        store.merge(order)
        once = store.clock()
        store.merge(order)
        assert store.clock() == once == {founder.node_id: third.seq}


def test_a_replica_starts_identical_and_then_lives_its_own_life() -> None:
    mesh = make_mesh(members=2, seed=14)
    source = store_of(random_records(MESH, 20, seed=15))
    replica = fresh_store()
    replica.replicate(source)
    assert replica.state_digest() == source.state_digest()
    assert replica.clock() == source.clock() and replica.clock_total() == source.clock_total()
    assert replica.ledger.members() == source.ledger.members()
    assert contents(replica) == contents(source)
    # writes to either side stay on that side: every container was copied
    member = MESH.members[0]
    extra = sign_record(member, MESH.mesh_id, "note", "replica-only", 10_000, b"x")
    assert replica.add(extra) is Outcome.ACCEPTED
    assert source.get(member.node_id, "note", "replica-only") is None
    assert source.state_digest() != replica.state_digest()
    revoke = make_revocation(MESH.founder, MESH.mesh_id, 10_000, member.node_id, last_valid_seq=1)
    assert source.add(revoke) is Outcome.ACCEPTED
    assert replica.ledger.is_member(member.node_id)
    with pytest.raises(ValueError):
        replica.replicate(source)  # only an empty store may become a replica
    with pytest.raises(ValueError):
        RecordStore(mesh.mesh_id).replicate(source)  # of the same mesh
