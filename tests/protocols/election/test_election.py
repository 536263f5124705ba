"""Hub elections driven directly: founding, council, failover, duels, partitions, restarts, proofs, fences."""

from __future__ import annotations

import random

import msgspec

from protocols.common.effects import Send
from protocols.common.identity import NodeIdentity
from protocols.common.wire import encode
from protocols.election.config import ElectionConfig
from protocols.election.core import ElectionCore
from protocols.election.events import PublishRecord
from protocols.election.hub_chain import HubChain, verify_hub_record
from protocols.election.messages import Accepted, Prepare, Promise, Propose
from protocols.election.records import (
    Ballot,
    CouncilBody,
    HubBody,
    HubValue,
    LeaseBody,
    VoteBody,
    council_body,
    hub_body,
    make_council,
    make_hub_record,
    make_lease,
    make_vote,
)
from protocols.records.record import Record, sign_record
from protocols.records.store import Outcome, RecordStore
from tests.support.election_cluster import ElectionCluster
from tests.support.mesh_fixtures import make_mesh

CONFIG = ElectionConfig()
FAILOVER_BOUND = CONFIG.lease_s + CONFIG.election_jitter + 4 * CONFIG.round_timeout + 1.0
"""A killed hub's lease runs out within `lease_s`; then a stand-off, and a retry or two at worst."""


def everyone_agrees(cluster: ElectionCluster) -> tuple[int, bytes | None]:
    views = set(cluster.views().values())
    assert len(views) == 1, views
    return views.pop()


def settled_hub(cluster: ElectionCluster, within: float = 1.0) -> tuple[bytes, int] | None:
    """The acting hub, waiting out the round trip a hub spends between two of its own terms."""
    end = cluster.now + within
    while (acting := cluster.acting_hub()) is None and cluster.now < end:
        cluster.run_until(cluster.now + 0.02)
    return acting


def identity_of(cluster: ElectionCluster, node_id: bytes) -> NodeIdentity:
    return next(i for i in cluster.mesh.everyone if i.node_id == node_id)


def test_founder_is_hub_of_term_one_and_names_a_council() -> None:
    cluster = ElectionCluster(n=7, seed=1, initial_views=False)
    cluster.run_until(1.5)  # nobody has heard of anybody yet: the founder alone
    founder_core = cluster.nodes[cluster.founder].election
    view = founder_core.hub_view()
    assert view is not None and (view.term, view.hub) == (1, cluster.founder)
    assert founder_core.chain.terms[1].council == (cluster.founder,)  # it saw nobody else yet
    assert cluster.acting_hub() == (cluster.founder, 1)
    cluster.run_until(10.0)  # membership reports the others: the hub names a full council
    term, hub = everyone_agrees(cluster)
    assert hub == cluster.founder and term >= 2
    council = founder_core.chain.terms[term].council
    assert len(council) == CONFIG.council_size and council[0] == cluster.founder
    assert settled_hub(cluster) == (cluster.founder, term)
    announced = cluster.nodes[cluster.ids[-1]].store.get(cluster.founder, "council", "")
    assert announced is not None and council_body(announced).members == list(council)
    safety = cluster.finish()
    assert safety.max_hubs_per_term == 1 and safety.acting_overlaps == 0


def test_killed_hub_is_replaced_with_a_higher_term_within_the_bound() -> None:
    for seed in range(4):
        cluster = ElectionCluster(n=5, seed=seed, loss=0.05)
        cluster.run_until(4.0)
        old_hub, old_term = cluster.acting_hub() or (b"", 0)
        assert old_hub == cluster.founder
        killed_at = cluster.now
        cluster.kill(old_hub)
        cluster.run_until(killed_at + FAILOVER_BOUND)
        acting = settled_hub(cluster)
        assert acting is not None and acting[0] != old_hub and acting[1] > old_term, seed
        elected_at = min(t for t, node, term in cluster.safety.became_hub if term > old_term)
        assert elected_at - killed_at <= FAILOVER_BOUND
        assert elected_at - killed_at >= CONFIG.lease_s * (1 - CONFIG.drift_margin) - CONFIG.renew_interval
        cluster.run_until(cluster.now + 2.0)
        term, hub = everyone_agrees(cluster)
        assert hub == acting[0] and term >= acting[1]
        safety = cluster.finish()
        assert safety.max_hubs_per_term == 1 and safety.acting_overlaps == 0 and safety.hub_conflicts == 0


def test_simultaneous_candidates_elect_at_most_one_hub_per_term() -> None:
    """No stand-off jitter: after the hub dies every council member stands at once, again and again."""
    duel = ElectionConfig(election_jitter=0.001, round_timeout=0.05)
    for seed in range(6):
        cluster = ElectionCluster(n=7, seed=seed, config=duel, latency=(0.001, 0.04))
        cluster.run_until(3.0)
        cluster.kill(cluster.founder)
        survivors = [n for n in cluster.live() if n in cluster.nodes[n].election.chain.latest.council]  # type: ignore[union-attr]
        for node_id in survivors:  # force everyone to stand at the same instant the lease allows
            core = cluster.nodes[node_id].election
            core._stand_at = cluster.nodes[node_id].local(cluster.now + CONFIG.lease_s)
        cluster.run_until(30.0)
        safety = cluster.finish()
        assert safety.max_hubs_per_term == 1, seed
        assert safety.acting_overlaps == 0
        assert settled_hub(cluster) is not None, seed  # and someone did win eventually
        campaigns = sum(cluster.nodes[n].election.counters["campaigns"] for n in survivors)
        assert campaigns >= 2


def test_partitioned_hub_loses_its_lease_and_steps_down() -> None:
    cluster = ElectionCluster(n=5, seed=3)
    cluster.run_until(3.0)
    hub, term = cluster.acting_hub() or (b"", 0)
    cut_at = cluster.now
    cluster.partition([hub])
    cluster.run_until(cut_at + CONFIG.lease_s + 0.01)
    hub_core = cluster.nodes[hub].election
    assert hub_core.acting_term(cluster.nodes[hub].local(cluster.now)) is None
    assert (hub, term, "lease_lost") in {(n, t, r) for _, n, t, r in cluster.safety.stepped_down}
    cluster.run_until(cut_at + FAILOVER_BOUND)
    acting = settled_hub(cluster)
    assert acting is not None and acting[0] != hub and acting[1] > term
    assert hub_core.latest_term == term  # cut off, it has not heard of the new term...
    cluster.heal()
    cluster.run_until(cluster.now + 5.0)
    assert hub_core.latest_term >= acting[1]  # ...until the partition heals
    assert everyone_agrees(cluster)[1] == acting[0]
    safety = cluster.finish()
    assert safety.max_hubs_per_term == 1 and safety.acting_overlaps == 0
    assert safety.published_while_not_acting == 0 and safety.fenced_accepted == 0


def test_restarted_old_hub_sees_the_newer_term_and_does_not_act() -> None:
    cluster = ElectionCluster(n=5, seed=4)
    cluster.run_until(3.0)
    old_hub, old_term = cluster.acting_hub() or (b"", 0)
    cluster.kill(old_hub)
    cluster.run_until(3.0 + FAILOVER_BOUND)
    new_hub, new_term = settled_hub(cluster) or (b"", 0)
    assert new_hub != old_hub
    cluster.restart(old_hub)
    restarted = cluster.nodes[old_hub].election
    assert restarted.latest_term == old_term and restarted.hub_view().hub == old_hub  # type: ignore[union-attr]
    cluster.run_until(cluster.now + 5.0)
    assert restarted.latest_term >= new_term
    assert restarted.counters["messages_out"] > 0  # it did try to renew its old lease, and was refused
    assert all(node != old_hub for _, node, term in cluster.safety.became_hub if term > old_term)
    acting = settled_hub(cluster)
    assert acting is not None and acting[0] != old_hub
    safety = cluster.finish()
    assert safety.max_hubs_per_term == 1 and safety.acting_overlaps == 0 and safety.fenced_accepted == 0


# ---- proofs --------------------------------------------------------------------------------


def elected_chain() -> tuple[ElectionCluster, Record, Record, HubBody]:
    """A cluster that went through one failover: its term-1 record and an elected term-2 record."""
    cluster = ElectionCluster(n=5, seed=7)
    cluster.run_until(2.0)
    cluster.kill(cluster.founder)
    cluster.run_until(2.0 + FAILOVER_BOUND)
    chain = cluster.nodes[cluster.ids[1]].election.chain
    return cluster, chain.terms[1].record, chain.terms[2].record, hub_body(chain.terms[2].record)


def fresh_chain(cluster: ElectionCluster, term_one: Record) -> HubChain:
    store = RecordStore(cluster.mesh.mesh_id)
    store.merge(cluster.mesh.membership_records())
    chain = HubChain(store.mesh_id, store.ledger)
    assert chain.offer(term_one)
    return chain


def resigned(cluster: ElectionCluster, record: Record, body: HubBody) -> Record:
    author = identity_of(cluster, record.author)
    return make_hub_record(author, cluster.mesh.mesh_id, record.seq + 1000, body)


def test_elected_hub_record_verifies_and_out_of_order_records_wait() -> None:
    cluster, term_one, term_two, _ = elected_chain()
    store = cluster.nodes[cluster.ids[1]].store
    assert verify_hub_record(term_two, store)
    chain = HubChain(cluster.mesh.mesh_id, store.ledger)
    assert chain.offer(term_two) == []  # ahead of its predecessor: waits
    assert [t.term for t in chain.offer(term_one)] == [1, 2]


def test_forged_proofs_are_rejected() -> None:
    cluster, term_one, term_two, body = elected_chain()
    council = set(cluster.nodes[cluster.ids[1]].election.chain.terms[1].council)
    outsiders = [i for i in cluster.mesh.everyone if i.node_id not in council]
    members = [i for i in cluster.mesh.everyone if i.node_id in council]
    mesh_id = cluster.mesh.mesh_id

    def votes(by: list[NodeIdentity], value: HubValue, ballot: Ballot, seq: int = 500) -> list[Record]:
        return [make_vote(v, mesh_id, seq, VoteBody(2, ballot, ballot, value)) for v in by]

    proposer = body.ballot.proposer
    again = votes([identity_of(cluster, body.proof[0].author)], body.value, body.ballot)
    outsider_votes = votes(outsiders * 3, body.value, body.ballot)[:3]
    term_three = VoteBody(3, body.ballot, body.ballot, body.value)
    wrong_term = [make_vote(v, mesh_id, 600, term_three) for v in members[:3]]
    other_value = HubValue(outsiders[0].node_id if outsiders else members[1].node_id, body.value.council, 3.0)
    forged = {
        "too few votes": HubBody(2, body.value, body.ballot, body.proof[:1]),
        "value swapped under the votes": HubBody(2, other_value, body.ballot, body.proof),
        "ballot swapped under the votes": HubBody(2, body.value, Ballot(99, proposer), body.proof),
        "one voter counted twice": HubBody(2, body.value, body.ballot, [body.proof[0], *again]),
        "votes of non-council members": HubBody(2, body.value, body.ballot, outsider_votes),
        "wrong term in the votes": HubBody(2, body.value, body.ballot, wrong_term),
    }
    for reason, forged_body in forged.items():
        chain = fresh_chain(cluster, term_one)
        assert chain.offer(resigned(cluster, term_two, forged_body)) == [], reason
        assert chain.latest is not None and chain.latest.term == 1, reason
    tampered = msgspec.structs.replace(term_two, signature=bytes(64))
    assert fresh_chain(cluster, term_one).offer(tampered) == []
    # A term 1 not signed by the founder is not believed either.
    impostor = members[-1] if members[-1].node_id != cluster.founder else members[0]
    own = HubValue(impostor.node_id, [impostor.node_id], 3.0)
    fake_one = make_hub_record(impostor, mesh_id, 900, HubBody(1, own, Ballot(0, impostor.node_id), []))
    store = RecordStore(mesh_id)
    store.merge(cluster.mesh.membership_records())
    assert HubChain(mesh_id, store.ledger).offer(fake_one) == []
    # The genuine record still checks out against the same fresh chain.
    assert [t.term for t in fresh_chain(cluster, term_one).offer(term_two)] == [2]


def test_a_voter_never_accepts_two_values_in_one_ballot_and_a_second_vote_is_evidence() -> None:
    mesh = make_mesh(members=2, seed=11)
    store = RecordStore(mesh.mesh_id)
    store.merge(mesh.membership_records())
    ids = [i.node_id for i in mesh.everyone]
    founder = ElectionCore(mesh.founder, store, random.Random(1), CONFIG)
    founder.set_live_members(0.0, ids)
    founder.tick(0.0)
    published = [e.record for e in founder.drain() if isinstance(e, PublishRecord)]
    store.merge(published)
    voter_identity = mesh.members[0]
    voter_store = RecordStore(mesh.mesh_id)
    voter_store.merge([*mesh.membership_records(), *published])
    voter = ElectionCore(voter_identity, voter_store, random.Random(2), CONFIG)
    voter.tick(0.0)
    assert voter.latest_term == 1 and voter_identity.node_id in voter.chain.latest.council  # type: ignore[union-attr]
    proposer = mesh.members[1].node_id
    later = CONFIG.lease_s + 1.0  # past the voter's start-up quarantine
    ballot = Ballot(1, proposer)
    value_a = HubValue(proposer, ids, 3.0)
    value_b = HubValue(ids[0], ids, 3.0)
    voter.receive(later, proposer, Prepare(2, ballot, None))
    voter.receive(later, proposer, Propose(2, ballot, value_a))
    voter.receive(later, proposer, Propose(2, ballot, value_b))
    sent = [e.message for e in voter.drain() if isinstance(e, Send)]
    assert [type(m) for m in sent] == [Promise, Accepted]  # the second value got no vote
    assert voter.counters["propose_equivocation"] == 1
    voter.receive(later, proposer, Propose(2, ballot, value_a))  # a repeat is answered with the same vote
    (repeat,) = [e.message for e in voter.drain() if isinstance(e, Send)]
    assert repeat == sent[1]
    # A voter that did sign a second vote in the same slot and seq is caught by every store.
    first = make_vote(voter_identity, mesh.mesh_id, 50, VoteBody(2, ballot, ballot, value_a))
    second = make_vote(voter_identity, mesh.mesh_id, 50, VoteBody(2, ballot, ballot, value_b))
    assert {store.add(first), store.add(second)} == {Outcome.ACCEPTED, Outcome.EQUIVOCATION}
    assert store.evidence


# ---- fencing -------------------------------------------------------------------------------


def council_record(identity: NodeIdentity, mesh_id: bytes, seq: int, term: int) -> Record:
    return make_council(identity, mesh_id, seq, CouncilBody(term, identity.node_id, [identity.node_id]))


def test_store_fences_hub_records_from_older_terms() -> None:
    mesh = make_mesh(members=2, seed=12)
    hub = mesh.members[0]
    old = council_record(hub, mesh.mesh_id, 1, term=2)
    new = council_record(hub, mesh.mesh_id, 3, term=4)
    between = sign_record(hub, mesh.mesh_id, "note", "x", 2, b"")
    late = RecordStore(mesh.mesh_id)  # learned of term 4 before the old record arrived
    late.merge(mesh.membership_records())
    late.raise_fence(4)
    assert late.add(old) is Outcome.FENCED
    assert late.counters[Outcome.FENCED] == 1
    assert late.add(between) is Outcome.ACCEPTED and late.add(new) is Outcome.ACCEPTED
    assert late.clock()[hub.node_id] == 3  # the fenced record counts as superseded: no stuck claim
    old_lease = make_lease(hub, mesh.mesh_id, 4, LeaseBody(2, 7, 1.5))
    early = RecordStore(mesh.mesh_id)  # held term-2 records before it heard of term 4
    early.merge([*mesh.membership_records(), old, between, new, old_lease])
    assert early.get(hub.node_id, "lease", "") == old_lease
    assert early.raise_fence(4).purged == [old_lease]
    assert early.get(hub.node_id, "lease", "") is None
    assert early.add(old_lease) is Outcome.FENCED
    assert early.raise_fence(3).purged == []  # the fence never goes down
    assert early.fence_term == 4
    # Replicas that learned the same newest term converge, whatever they saw before.
    assert late.add(old_lease) is Outcome.FENCED
    late.apply_delta(early.delta_for(late.clock()))
    early.apply_delta(late.delta_for(early.clock()))
    assert late.state_digest() == early.state_digest()
    assert late.clock() == early.clock()


def test_malformed_hub_issued_bodies_are_refused() -> None:
    mesh = make_mesh(members=1, seed=13)
    store = RecordStore(mesh.mesh_id)
    store.merge(mesh.membership_records())
    bad = sign_record(mesh.members[0], mesh.mesh_id, "lease", "", 1, encode(["not a term"]))
    assert store.add(bad) is Outcome.MALFORMED


def test_stale_hub_cannot_get_its_records_past_a_store_that_knows_the_newer_term() -> None:
    cluster = ElectionCluster(n=5, seed=5)
    cluster.run_until(3.0)
    hub, term = cluster.acting_hub() or (b"", 0)
    cluster.partition([hub])
    cluster.run_until(3.0 + FAILOVER_BOUND)
    new_term = (settled_hub(cluster) or (b"", 0))[1]
    assert new_term > term
    stale = council_record(identity_of(cluster, hub), cluster.mesh.mesh_id, 10_000, term)
    for node_id in cluster.live():
        if node_id != hub:
            assert cluster.nodes[node_id].store.add(stale) is Outcome.FENCED
    assert cluster.finish().fenced_accepted == 0


def test_live_set_followed_change_by_change_decides_the_council() -> None:
    mesh = make_mesh(members=4, seed=21)
    store = RecordStore(mesh.mesh_id)
    store.merge(mesh.membership_records())
    ids = [i.node_id for i in mesh.everyone]
    founder = ElectionCore(mesh.founder, store, random.Random(3), CONFIG)
    gone = mesh.members[0].node_id
    founder.member_changed(0.0, gone, False)  # before a first full live set: ignored
    founder.set_live_members(0.0, ids)
    founder.member_changed(0.0, gone, False)
    founder.member_changed(0.0, mesh.members[1].node_id, True)  # already live: no change
    founder.tick(0.0)
    published = [e.record for e in founder.drain() if isinstance(e, PublishRecord)]
    store.merge(published)
    founder.on_record(0.0, published[0])
    view = founder.hub_view()
    assert view is not None and view.hub == mesh.founder.node_id
    assert gone not in view.council and mesh.members[1].node_id in view.council
