"""Revocation in the wiring (`protocols.wiring`): a counting revocation removes the member from
membership, a removed member leaves the peer list and the election's live set, a changed
hub chain rechecks the hub's revocations, a new hub carries them over; and the ledger reads
the election's real hub chain through `ChainTerms`. Last, the simulator end to end: the
founder's successor revokes a member and every node drops it.
"""

from __future__ import annotations

from protocols.common.identity import NodeId, NodeIdentity
from protocols.dissemination.events import RecordAccepted
from protocols.election.events import BecameHub, HubChanged
from protocols.election.hub_chain import HubChain
from protocols.election.records import Ballot, HubBody, HubValue, VoteBody, make_hub_record, make_vote
from protocols.membership.events import MemberChanged, MemberRemoved, MemberState
from protocols.records.admission import Verdict
from protocols.records.admission_records import make_hub_revocation
from protocols.records.record import Record
from protocols.records.store import Outcome, RecordStore
from protocols.wiring import (
    CarryRevocations,
    ChainTerms,
    CoreWiring,
    MemberLiveness,
    RecheckRevocations,
    RemoveMember,
    SetPeers,
    StorageActing,
)
from simulations.scenario import build_scenario
from simulations.sim_node import SimNode
from simulations.world import World
from tests.support.mesh_fixtures import MeshFixture, make_mesh

SELF = b"s" * 32
C = b"c" * 32
D = b"d" * 32


def wiring(revoked: list[NodeId], live: list[NodeId]) -> CoreWiring:
    return CoreWiring(SELF, lambda: list(live), election_has_live_set=True, revoked=lambda: list(revoked))


def test_a_counting_revocation_removes_its_member_once() -> None:
    revoked: list[NodeId] = []
    rules = wiring(revoked, [C, D])
    record = make_hub_revocation(NodeIdentity.from_seed(b"h" * 32), b"m" * 32, 5, 2, C, 0)
    assert RemoveMember(C) not in rules.on_event(0.0, RecordAccepted(record, "push", None), 0.0)
    revoked.append(C)
    feeds = rules.on_event(0.0, RecordAccepted(record, "push", None), 0.0)
    assert RemoveMember(C) in feeds
    assert RemoveMember(C) not in rules.on_event(0.0, RecordAccepted(record, "sync", None), 0.0)
    revoked.append(SELF)  # a node never removes itself (its own store says it is out: it stops)
    assert rules.removals() == ()


def test_a_removed_member_leaves_the_peers_and_the_live_set() -> None:
    live = [C, D]
    rules = wiring([], live)
    live.remove(C)  # membership no longer lists it
    feeds = rules.on_event(1.0, MemberRemoved(C), 1.0)
    assert MemberLiveness(C, False, False) in feeds
    assert SetPeers([D], False) in feeds
    assert rules.removals() == ()


def test_a_hub_change_rechecks_and_the_new_hub_carries_revocations_over() -> None:
    rules = wiring([], [C])
    assert rules.on_event(0.0, HubChanged(3, C, [C], None), 0.0)[-1] == RecheckRevocations()
    assert rules.on_event(0.0, BecameHub(3, [SELF]), 0.0) == (CarryRevocations(3), StorageActing(True, 3))
    # An alive member is not removed by anything here.
    assert not any(
        isinstance(f, RemoveMember) for f in rules.on_event(0.0, MemberChanged(C, MemberState.ALIVE, 1), 0.0)
    )


def elect(mesh: MeshFixture, term: int, winner: NodeIdentity, council: list[NodeIdentity]) -> Record:
    """The hub record of `term` > 1, proven by the votes of `council` (the previous term's)."""
    value = HubValue(winner.node_id, [member.node_id for member in council], 3.0)
    ballot = Ballot(1, winner.node_id)
    votes = [
        make_vote(voter, mesh.mesh_id, next_seq(mesh, voter), VoteBody(term, ballot, ballot, value))
        for voter in council
    ]
    body = HubBody(term, value, ballot, votes)
    return make_hub_record(winner, mesh.mesh_id, next_seq(mesh, winner), body)


def next_seq(mesh: MeshFixture, who: NodeIdentity) -> int:
    mesh.seqs[who.node_id] = mesh.seqs.get(who.node_id, 0) + 1
    return mesh.seqs[who.node_id]


def test_the_ledger_reads_the_real_hub_chain() -> None:
    mesh = make_mesh(members=3, seed=31)
    founder, a, b, c = mesh.founder, *mesh.members
    council = [founder, a, b]
    founding = HubValue(founder.node_id, [m.node_id for m in council], 3.0)
    term_one = make_hub_record(
        founder, mesh.mesh_id, next_seq(mesh, founder), HubBody(1, founding, Ballot(0, founder.node_id), [])
    )
    term_two = elect(mesh, 2, a, council)
    store = RecordStore(mesh.mesh_id)
    store.merge(mesh.membership_records())
    chain = HubChain(mesh.mesh_id, store.ledger)
    store.use_hub_terms(ChainTerms(chain))
    revocation = make_hub_revocation(a, mesh.mesh_id, next_seq(mesh, a), 2, c.node_id, 0, "test")
    # It arrives first: unproven until the chain believes term 2.
    assert store.add(revocation) is Outcome.ACCEPTED
    assert store.ledger.is_member(c.node_id)
    terms = ChainTerms(chain)
    assert terms.latest_term == 0 and not terms.vouches(term_one)
    chain.offer(term_one)
    assert terms.latest_term == 1 and terms.hub_of(1) == founder.node_id
    assert terms.vouches(term_two)  # the proof of the term after the newest
    alone = HubBody(2, HubValue(c.node_id, [c.node_id], 3.0), Ballot(1, c.node_id), [])
    forged = make_hub_record(c, mesh.mesh_id, next_seq(mesh, c), alone)  # no votes: no proof
    assert not terms.vouches(forged)
    chain.offer(term_two)
    assert terms.hub_of(2) == a.node_id and terms.vouches(term_two)
    store.recheck_revocations()
    assert not store.ledger.is_member(c.node_id)
    assert store.ledger.verdicts == {Verdict.COUNTED: 1}
    # B claims A's term: not the hub of it.
    claim = make_hub_revocation(b, mesh.mesh_id, next_seq(mesh, b), 2, founder.node_id, 0)
    store.add(claim)
    assert store.ledger.verdicts[Verdict.NOT_HUB] == 1


def test_a_new_sim_node_bars_the_members_its_store_says_were_revoked() -> None:
    scenario = build_scenario(nodes=6, duration="60s", seed=3)
    world = World(scenario)
    world.bootstrap()
    world.start()
    world.engine.run_until(10.0)
    # The founder's successor: kill the acting hub (the founder) and wait for the next one.
    founder = world.founder_id
    assert world.hub.current_hub(world.now) is not None
    world.kill_hub(None)
    successor: tuple[NodeId, int] | None = None
    for _ in range(60):
        world.engine.run_until(world.now + 0.5)
        successor = world.hub.current_hub(world.now)
        if successor is not None and successor[0] != founder:
            break
    assert successor is not None and successor[0] != founder, "no new hub within 30 s"
    hub_id, term = successor
    hub = world.live[hub_id]
    target = next(node for node in world.live if node != hub_id)
    record = make_hub_revocation(
        hub.identity, world.mesh_id, hub.next_seq(), term, target, hub.store.highest_seq(target), "sim"
    )
    assert world.publish_from(hub, record) is not None
    world.engine.run_until(world.now + 10.0)
    for node_id, node in world.live.items():
        assert not node.store.ledger.is_member(target), node_id.hex()[:8]
        if node_id != target:
            assert target not in node.membership.members(), node_id.hex()[:8]
            assert target not in node.membership.live_peers(), node_id.hex()[:8]
    # A restarted node, built on a store that holds the revocation, bars the target at once.
    other = next(node_id for node_id in world.live if node_id not in (hub_id, target))
    store = world.live[other].store
    again = SimNode(
        world.live[other].identity,
        99,
        world.live[other].rng,
        store,
        world.membership_config,
        world.dissemination_config,
        world.election_config,
    )
    again.membership.join(world.now, [hub_id])
    again.seed_peers([hub_id])
    assert not again.membership.add_member(world.now, target)  # barred: nothing brings it back
