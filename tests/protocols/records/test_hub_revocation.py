"""The acting hub revokes: the ledger's rules (`protocols.records.admission`) against a member
turned attacker, and convergence whatever the arrival order.

The hub chain is a stand-in here (`Chain`: term -> hub, grown by the test); the wiring
tests drive the same rules with the election's real hub chain.
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.common.identity import NodeId, NodeIdentity
from protocols.records.admission import Verdict
from protocols.records.admission_records import (
    CarriedRevocation,
    make_admission,
    make_handover,
    make_hub_revocation,
    make_revocation,
)
from protocols.records.record import Record, sign_record
from protocols.records.store import Outcome, RecordStore
from tests.support.mesh_fixtures import MeshFixture, make_mesh


class Chain:
    """A hub chain stand-in: the believed terms and their hubs, and the hub records it vouches for."""

    def __init__(self, hubs: dict[int, NodeId] | None = None) -> None:
        self.hubs = dict(hubs or {})
        self.vouched: set[bytes] = set()

    @property
    def latest_term(self) -> int:
        return max(self.hubs, default=0)

    def hub_of(self, term: int) -> NodeId | None:
        return self.hubs.get(term)

    def vouches(self, record: Record) -> bool:
        return record.kind == "hub" and record.signature in self.vouched


class Mesh:
    """Founder F and members A, B, C (F admitted them all); helpers that sign with each one's seqs."""

    def __init__(self, seed: int = 0) -> None:
        self.fixture: MeshFixture = make_mesh(members=3, seed=seed)
        self.f = self.fixture.founder
        self.a, self.b, self.c = self.fixture.members

    @property
    def mesh_id(self) -> bytes:
        return self.fixture.mesh_id

    def seq(self, who: NodeIdentity) -> int:
        seqs = self.fixture.seqs
        seqs[who.node_id] = seqs.get(who.node_id, 0) + 1
        return seqs[who.node_id]

    def note(self, who: NodeIdentity, key: str) -> Record:
        return self.fixture.next_record(who, "note", key)

    def revoke(self, hub: NodeIdentity, term: int, member: NodeIdentity, last: int = 0) -> Record:
        return make_hub_revocation(hub, self.mesh_id, self.seq(hub), term, member.node_id, last, "test")

    def handover(self, hub: NodeIdentity, term: int, *carried: tuple[NodeIdentity, int]) -> Record:
        entries = [CarriedRevocation(who.node_id, last, "carried") for who, last in carried]
        return make_handover(hub, self.mesh_id, self.seq(hub), term, entries)

    def store(self, chain: Chain, *records: Record) -> RecordStore:
        store = RecordStore(self.mesh_id)
        store.use_hub_terms(chain)
        store.merge([*self.fixture.membership_records(), *records])
        return store


def member(store: RecordStore, who: NodeIdentity) -> bool:
    return store.ledger.is_member(who.node_id)


def test_the_hub_of_a_term_revokes_and_the_members_new_records_are_refused_and_old_ones_purged() -> None:
    m = Mesh(1)
    chain = Chain({1: m.f.node_id, 2: m.a.node_id})
    kept = m.note(m.c, "kept")
    later = m.note(m.c, "later")
    store = m.store(chain, kept, later)
    result = store.merge([m.revoke(m.a, 2, m.c, last=kept.seq)])
    assert result.purged == [later]
    assert not member(store, m.c)
    assert store.get(m.c.node_id, "note", "kept") == kept
    assert store.add(m.note(m.c, "new")) is Outcome.NOT_ADMITTED
    assert store.ledger.verdicts[Verdict.COUNTED] == 1
    assert store.ledger.removed() == [m.c.node_id]
    refusal = store.ledger.refusal_for(m.c.node_id)
    assert refusal is not None
    assert f"node {m.c.node_id.hex()[:16]} was revoked from this mesh by the hub of term 2 (test)" in refusal
    assert store.ledger.refusal_for(m.b.node_id) is None


def test_a_member_that_never_was_hub_cannot_revoke() -> None:
    m = Mesh(2)
    chain = Chain({1: m.f.node_id, 2: m.a.node_id})
    store = m.store(chain, m.revoke(m.b, 2, m.c), m.revoke(m.b, 1, m.c))
    assert member(store, m.c)
    assert store.ledger.verdicts[Verdict.NOT_HUB] == 1  # one slot per (author, member): the newer counts
    assert store.ledger.removed() == []


def test_a_hub_claiming_a_term_it_did_not_hold_is_refused() -> None:
    m = Mesh(3)
    chain = Chain({1: m.f.node_id, 2: m.a.node_id, 3: m.b.node_id})
    store = m.store(chain, m.revoke(m.a, 3, m.c))
    assert member(store, m.c)
    assert store.ledger.verdicts == {Verdict.NOT_HUB: 1}


def test_a_forged_term_waits_unproven_and_never_counts_while_nobody_holds_it() -> None:
    m = Mesh(4)
    chain = Chain({1: m.f.node_id, 2: m.a.node_id})
    store = m.store(chain, m.revoke(m.a, 10**9, m.c))
    assert member(store, m.c)
    assert store.ledger.verdicts == {Verdict.UNPROVEN: 1}
    chain.hubs[3] = m.b.node_id
    assert store.recheck_revocations().purged == []
    assert member(store, m.c)


def test_a_revocation_that_arrives_before_the_hub_record_proving_it_counts_once_the_term_is_believed() -> (
    None
):
    m = Mesh(5)
    chain = Chain({1: m.f.node_id, 2: m.f.node_id})
    late = m.note(m.c, "late")
    store = m.store(chain, late)
    store.merge([m.revoke(m.a, 3, m.c, last=0)])
    assert member(store, m.c)
    assert store.ledger.verdicts == {Verdict.UNPROVEN: 1}
    chain.hubs[3] = m.a.node_id  # the hub record of term 3 arrives: A won it
    result = store.recheck_revocations()
    assert not member(store, m.c)
    assert late in result.purged
    assert store.ledger.verdicts == {Verdict.COUNTED: 1}


def test_a_deposed_hub_revoking_under_its_old_term_is_refused() -> None:
    m = Mesh(6)
    chain = Chain({1: m.f.node_id, 2: m.a.node_id, 3: m.b.node_id})
    store = m.store(chain, m.revoke(m.a, 2, m.c))
    assert member(store, m.c)
    assert store.ledger.verdicts == {Verdict.DEPOSED: 1}
    # The new hub's handover carries nothing of A's: A's term-2 acts are superseded for good.
    store.merge([m.handover(m.b, 3)])
    assert member(store, m.c)
    assert store.ledger.verdicts[Verdict.SUPERSEDED] == 1


def test_a_handover_carries_the_old_hubs_revocations_to_the_new_hub() -> None:
    m = Mesh(7)
    chain = Chain({1: m.f.node_id, 2: m.a.node_id})
    revocation = m.revoke(m.a, 2, m.c)
    store = m.store(chain, revocation)
    assert not member(store, m.c)
    # B wins term 3: A's revocation lapses until B carries it over...
    chain.hubs[3] = m.b.node_id
    store.recheck_revocations()
    assert member(store, m.c)
    carried = store.ledger.carry_over(2)
    assert [entry.member for entry in carried] == [m.c.node_id]
    assert store.ledger.handover_due(3, m.b.node_id) == carried
    # ...and then it counts through the handover, whatever A signs afterwards.
    store.merge([make_handover(m.b, m.mesh_id, m.seq(m.b), 3, carried), m.revoke(m.a, 2, m.b)])
    assert not member(store, m.c)
    assert member(store, m.b)
    assert store.ledger.verdicts["handover_counted"] == 1
    # The carried revocation still counts after further terms of other hubs (until a newer handover).
    chain.hubs[4] = m.f.node_id
    store.recheck_revocations()
    assert not member(store, m.c)


def test_a_hub_cannot_revoke_the_founder_itself_or_a_hub_since_the_newest_handover() -> None:
    m = Mesh(8)
    chain = Chain({1: m.f.node_id, 2: m.b.node_id, 3: m.a.node_id})
    store = m.store(
        chain, m.handover(m.b, 2), m.revoke(m.a, 3, m.f), m.revoke(m.a, 3, m.a), m.revoke(m.a, 3, m.b)
    )
    assert all(member(store, who) for who in (m.f, m.a, m.b))
    assert store.ledger.verdicts[Verdict.PROTECTED] == 3
    assert store.ledger.spares(m.b.node_id) and store.ledger.spares(m.f.node_id)
    assert not store.ledger.spares(m.c.node_id)
    # Once the newest handover is A's own, B (hub of term 2 only) may be revoked.
    store.merge([m.handover(m.a, 3)])
    assert not member(store, m.b)


def test_a_hub_revocation_does_not_cut_the_hub_by_cascade() -> None:
    m = Mesh(9)
    # C admits D; D becomes hub of term 2; hub D revokes C with a cut-off below D's admission.
    d = NodeIdentity.from_seed(b"d" * 32)
    admission = make_admission(m.c, m.mesh_id, m.seq(m.c), d.node_id)
    chain = Chain({1: m.f.node_id, 2: d.node_id})
    store = m.store(chain, admission, m.revoke(d, 2, m.c, last=0))
    assert not member(store, m.c)
    assert store.ledger.is_member(d.node_id)


def test_the_founders_revocation_counts_for_good_and_says_so() -> None:
    m = Mesh(10)
    store = m.store(Chain({1: m.f.node_id}))
    store.merge([make_revocation(m.f, m.mesh_id, m.seq(m.f), m.b.node_id, 0, "lost laptop")])
    assert not member(store, m.b)
    assert store.ledger.removed() == [m.b.node_id]
    refusal = store.ledger.refusal_for(m.b.node_id)
    assert refusal is not None and "by its founder (lost laptop)" in refusal


def test_a_malformed_key_is_refused_before_it_can_replace_anything() -> None:
    m = Mesh(11)
    chain = Chain({1: m.f.node_id, 2: m.a.node_id})
    good = m.revoke(m.a, 2, m.c)
    store = m.store(chain, good)
    forged = sign_record(m.a, m.mesh_id, "hub_revocation", m.c.node_id.hex(), m.seq(m.a), b"\x93")
    wrong_key = sign_record(m.a, m.mesh_id, "handover", "x", m.seq(m.a), m.handover(m.a, 2).body)
    assert store.add(forged) is Outcome.MALFORMED
    assert store.add(wrong_key) is Outcome.MALFORMED
    assert not member(store, m.c)


def test_the_election_of_a_revoked_member_is_admitted_and_ends_its_revocation() -> None:
    """A revocation that reached a node before the hub record electing its target must not hide
    that election there: the next term's hub record is admitted anyway (`exempts`)."""
    m = Mesh(12)
    chain = Chain({1: m.f.node_id, 2: m.a.node_id})
    store = m.store(chain, m.revoke(m.a, 2, m.c, last=0))
    assert not member(store, m.c)
    elected = sign_record(m.c, m.mesh_id, "hub", "3", m.seq(m.c), b"")
    other = m.note(m.c, "still out")
    assert store.add(other) is Outcome.NOT_ADMITTED
    chain.vouched.add(elected.signature)
    assert store.add(elected) is Outcome.ACCEPTED
    chain.hubs[3] = m.c.node_id  # the chain believes it: A is deposed, C is hub
    store.recheck_revocations()
    assert member(store, m.c)


def test_a_copy_keeps_the_verdicts_and_judges_again_with_its_own_chain() -> None:
    m = Mesh(13)
    chain = Chain({1: m.f.node_id, 2: m.a.node_id})
    store = m.store(chain, m.revoke(m.a, 2, m.c))
    replica = RecordStore(m.mesh_id)
    replica.replicate(store)
    assert not replica.ledger.is_member(m.c.node_id)
    replica.use_hub_terms(Chain({1: m.f.node_id, 2: m.a.node_id, 3: m.b.node_id}))
    assert replica.ledger.is_member(m.c.node_id)
    assert not store.ledger.is_member(m.c.node_id)


def test_without_a_hub_chain_the_hubs_revocations_wait() -> None:
    m = Mesh(14)
    store = RecordStore(m.mesh_id)
    store.merge([*m.fixture.membership_records(), m.revoke(m.a, 2, m.c)])
    assert member(store, m.c)
    assert store.ledger.verdicts == {Verdict.UNPROVEN: 1}
    store.use_hub_terms(Chain({1: m.f.node_id, 2: m.a.node_id}))
    assert not member(store, m.c)


# ---- convergence ------------------------------------------------------------------------------


def adversarial_history(m: Mesh) -> tuple[list[Record], list[dict[int, NodeId]]]:
    """Records of every attack above mixed with honest ones, and the chain as it grows (terms 1-4).

    F founds; A is hub of 2, B of 3 (A deposed), A again of 4. Honest: A revokes C in 2, B
    carries it over in 3; attacks: B (never hub of 2) claims term 2, A revokes under 2
    after being deposed, a forged term, revocations of the founder and the hub itself,
    and an early arrival (term 4, before its hub record).
    """
    d = NodeIdentity.from_seed(b"d" * 32)
    records = [
        make_admission(m.a, m.mesh_id, m.seq(m.a), d.node_id),
        m.note(m.c, "before"),
        m.revoke(m.a, 2, m.c, last=m.fixture.seqs[m.c.node_id]),
        m.note(m.c, "after"),
        m.revoke(m.b, 2, m.a),
        m.handover(m.b, 3, (m.c, 1)),
        m.revoke(m.a, 2, d),
        m.revoke(m.b, 3, m.f),
        m.revoke(m.b, 3, m.b),
        m.revoke(m.b, 77, m.c),
        m.revoke(m.a, 4, d, last=0),
        m.note(d, "d"),
    ]
    chain_steps = [{1: m.f.node_id}, {2: m.a.node_id}, {3: m.b.node_id}, {4: m.a.node_id}]
    return records, chain_steps


@settings(max_examples=60, deadline=None)
@given(order=st.randoms(use_true_random=False), reveal=st.lists(st.integers(0, 12), min_size=4, max_size=4))
def test_every_arrival_order_ends_in_the_same_ledger(order: random.Random, reveal: list[int]) -> None:
    m = Mesh(20)
    records, steps = adversarial_history(m)
    reference = m.store(Chain({t: h for step in steps for t, h in step.items()}), *records)

    shuffled = [*m.fixture.membership_records(), *records]
    order.shuffle(shuffled)
    chain = Chain()
    store = RecordStore(m.mesh_id)
    store.use_hub_terms(chain)
    # The chain grows in order (term t needs t - 1), at points of the shuffle the test picks.
    at = sorted(min(point, len(shuffled)) for point in reveal)
    grown = 0
    for index in range(len(shuffled) + 1):
        while grown < len(steps) and at[grown] <= index:
            chain.hubs.update(steps[grown])
            grown += 1
            store.recheck_revocations()
        if index < len(shuffled):
            store.merge([shuffled[index]])
    # Records refused while their author was out come back by anti-entropy: offer them again.
    store.merge(shuffled)

    assert store.ledger.cutoffs == reference.ledger.cutoffs
    assert store.state_digest() == reference.state_digest()
    assert store.ledger.removed() == reference.ledger.removed()
    assert store.ledger.verdicts == reference.ledger.verdicts
    # Only the honest revocations count: C's (carried by B) and D's (A's, as hub of term 4).
    d = NodeIdentity.from_seed(b"d" * 32).node_id
    assert reference.ledger.removed() == sorted([m.c.node_id, d])
    assert all(reference.ledger.is_member(who.node_id) for who in (m.f, m.a, m.b))
    assert reference.ledger.verdicts == {
        Verdict.COUNTED: 1,
        Verdict.NOT_HUB: 1,
        Verdict.DEPOSED: 2,
        Verdict.UNPROVEN: 1,
        Verdict.SUPERSEDED: 1,
        "handover_counted": 1,
    }


def test_a_handover_is_due_at_a_change_of_hub_or_when_there_is_something_to_carry() -> None:
    m = Mesh(15)
    chain = Chain({1: m.f.node_id, 2: m.f.node_id, 3: m.a.node_id})
    store = m.store(chain)
    assert store.ledger.handover_due(1, m.f.node_id) is None  # the founder's first term
    assert store.ledger.handover_due(2, m.f.node_id) is None  # the same hub, nothing to carry
    assert store.ledger.handover_due(3, m.a.node_id) == []  # a new hub: its predecessor stops being spared
    chain.hubs[4] = m.a.node_id
    store.merge([m.revoke(m.a, 3, m.c)])
    carried = store.ledger.handover_due(4, m.a.node_id)  # the same hub, something to carry
    assert carried is not None and [entry.member for entry in carried] == [m.c.node_id]
    # A member signing under terms it never held costs no recomputation, only a count.
    store.merge([m.revoke(m.b, 3, m.a), m.revoke(m.b, 50, m.f)])
    assert member(store, m.a) and member(store, m.f)
    assert store.ledger.verdicts[Verdict.NOT_HUB] == 1 and store.ledger.verdicts[Verdict.UNPROVEN] == 1
