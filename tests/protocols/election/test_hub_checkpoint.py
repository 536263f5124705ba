"""Hub checkpoints: a joiner anchored at its inviter's newest term believes the latest hub without the
early terms; forged checkpoints are refused and counted; stale ones still converge; a restart
anchors again; out-of-order history no longer stalls a chain verified from term 1."""

from __future__ import annotations

import random

import msgspec
import pytest

from protocols.common.identity import NodeIdentity
from protocols.common.wire import WireError
from protocols.election.checkpoint import (
    Checkpoint,
    CheckpointOutcome,
    decode_checkpoint,
    encode_checkpoint,
    make_checkpoint,
)
from protocols.election.core import ElectionCore
from protocols.election.events import HubChanged
from protocols.election.hub_chain import HubChain
from protocols.election.records import (
    Ballot,
    HubBody,
    HubValue,
    VoteBody,
    hub_body,
    make_hub_record,
    make_vote,
)
from protocols.records.record import Record
from protocols.records.store import RecordStore
from tests.protocols.election.long_chain import LongChain, build_long_chain

TERMS = 200


@pytest.fixture(scope="module")
def long_chain() -> LongChain:
    return build_long_chain(TERMS)


def joiner_of(chain: LongChain) -> NodeIdentity:
    """The member outside the council (founder + first two members): it joins late."""
    return chain.mesh.members[-1]


def fresh_store(chain: LongChain, records: list[Record] | None = None) -> RecordStore:
    store = RecordStore(chain.mesh.mesh_id)
    store.merge(chain.mesh.membership_records() if records is None else records)
    return store


def joiner_chain(chain: LongChain, store: RecordStore | None = None) -> HubChain:
    store = store or fresh_store(chain)
    hubs = HubChain(store.mesh_id, store.ledger)
    hubs.load(store)
    return hubs


def checkpoint_at(chain: LongChain, term: int, signer: NodeIdentity | None = None) -> Checkpoint:
    signer = signer or chain.mesh.founder
    return make_checkpoint(signer, chain.mesh.mesh_id, joiner_of(chain).node_id, chain.hub(term))


def adopt(hubs: HubChain, chain: LongChain, checkpoint: Checkpoint) -> CheckpointOutcome:
    return hubs.adopt_checkpoint(
        checkpoint, trusted_signer=chain.mesh.founder.node_id, subject=joiner_of(chain).node_id
    )


def test_a_joiner_anchored_at_a_checkpoint_believes_the_latest_hub_without_early_terms(
    long_chain: LongChain,
) -> None:
    hubs = joiner_chain(long_chain)
    assert hubs.latest is None
    assert adopt(hubs, long_chain, checkpoint_at(long_chain, TERMS)) is CheckpointOutcome.ADOPTED
    assert hubs.anchor is not None
    assert [t.term for t in hubs.offer(hubs.anchor.record)] == [TERMS]
    assert hubs.latest is not None and hubs.latest.term == TERMS
    assert set(hubs.terms) == {TERMS}
    assert hubs.latest.council == tuple(hub_body(long_chain.hub(TERMS)).value.council)
    # The history arriving later (anti-entropy) is ignored, not verified, not held.
    for record in long_chain.hubs[:-1]:
        assert hubs.offer(record) == []
    assert hubs.counters["hub_record_before_anchor"] == TERMS - 1
    assert set(hubs.terms) == {TERMS} and hubs.counters["hub_record_rejected"] == 0


def test_a_stale_checkpoint_converges_to_the_latest_term(long_chain: LongChain) -> None:
    hubs = joiner_chain(long_chain)
    assert adopt(hubs, long_chain, checkpoint_at(long_chain, 150)) is CheckpointOutcome.ADOPTED
    later = long_chain.hubs[149:]  # terms 150..200, the anchor's own record among them
    random.Random(3).shuffle(later)
    for record in [*later, *long_chain.hubs[:149]]:
        hubs.offer(record)
    assert hubs.latest is not None and hubs.latest.term == TERMS
    assert min(hubs.terms) == 150 and len(hubs.terms) == TERMS - 149
    # Terms after the anchor were believed by the vote rule, not on the inviter's word.
    assert hubs.counters["hub_proof_bad_vote"] == 0 and hubs.counters["hub_record_rejected"] == 0


def test_a_checkpoint_behind_the_chain_is_stale_and_one_that_contradicts_it_is_refused(
    long_chain: LongChain,
) -> None:
    hubs = joiner_chain(long_chain, fresh_store(long_chain, long_chain.records()))
    assert hubs.latest is not None and hubs.latest.term == TERMS
    assert adopt(hubs, long_chain, checkpoint_at(long_chain, 150)) is CheckpointOutcome.STALE
    assert hubs.anchor is None
    # The founder (a member, and the inviter) vouches for a term 150 it made up.
    fabricated = fabricated_term(long_chain, 150, long_chain.mesh.founder)
    made_up = make_checkpoint(
        long_chain.mesh.founder, long_chain.mesh.mesh_id, joiner_of(long_chain).node_id, fabricated
    )
    assert adopt(hubs, long_chain, made_up) is CheckpointOutcome.CONFLICT
    assert hubs.latest.term == TERMS and hubs.terms[150].record == long_chain.hub(150)


def fabricated_term(chain: LongChain, term: int, forger: NodeIdentity) -> Record:
    """A term record a single member can make on its own: itself as hub and sole council, its own vote."""
    value = HubValue(forger.node_id, [forger.node_id], 3.0)
    ballot = Ballot(1, forger.node_id)
    vote = make_vote(forger, chain.mesh.mesh_id, 90_000 + term, VoteBody(term, ballot, ballot, value))
    return make_hub_record(forger, chain.mesh.mesh_id, 91_000 + term, HubBody(term, value, ballot, [vote]))


def forgeries(chain: LongChain) -> dict[str, tuple[Checkpoint, CheckpointOutcome]]:
    mesh = chain.mesh
    founder, joiner = mesh.founder, joiner_of(chain).node_id
    genuine = checkpoint_at(chain, TERMS)
    record = chain.hub(TERMS)
    body = hub_body(record)
    author = chain.identity(record.author)

    def resigned(proof: list[Record]) -> Record:
        return make_hub_record(
            author, mesh.mesh_id, record.seq, HubBody(body.term, body.value, body.ballot, proof)
        )

    voter = chain.identity(body.proof[0].author)
    other_value = HubValue(voter.node_id, body.value.council, body.value.lease_s + 1.0)
    wrong_value_vote = make_vote(
        voter, mesh.mesh_id, body.proof[0].seq, VoteBody(body.term, body.ballot, body.ballot, other_value)
    )
    bad_vote_signature = msgspec.structs.replace(body.proof[0], signature=bytes(64))
    stranger = NodeIdentity.from_seed(bytes(range(32)))
    other = build_long_chain(3, seed=9)
    return {
        "wrong signature": (
            msgspec.structs.replace(genuine, signature=bytes(64)),
            CheckpointOutcome.BAD_SIGNATURE,
        ),
        "different mesh": (
            make_checkpoint(founder, other.mesh.mesh_id, joiner, record),
            CheckpointOutcome.WRONG_MESH,
        ),
        "another mesh's hub record": (
            make_checkpoint(founder, mesh.mesh_id, joiner, other.hub(3)),
            CheckpointOutcome.BAD_HUB_RECORD,
        ),
        "a vote for another value": (
            make_checkpoint(founder, mesh.mesh_id, joiner, resigned([wrong_value_vote, *body.proof[1:]])),
            CheckpointOutcome.BAD_PROOF,
        ),
        "a vote with a bad signature": (
            make_checkpoint(founder, mesh.mesh_id, joiner, resigned([bad_vote_signature, *body.proof[1:]])),
            CheckpointOutcome.BAD_PROOF,
        ),
        "no votes at all": (
            make_checkpoint(founder, mesh.mesh_id, joiner, resigned([])),
            CheckpointOutcome.BAD_PROOF,
        ),
        "a tampered hub record": (
            make_checkpoint(
                founder, mesh.mesh_id, joiner, msgspec.structs.replace(record, signature=bytes(64))
            ),
            CheckpointOutcome.BAD_HUB_RECORD,
        ),
        "issued to another joiner": (
            make_checkpoint(founder, mesh.mesh_id, mesh.members[0].node_id, record),
            CheckpointOutcome.WRONG_SUBJECT,
        ),
        "signed by a member that is not the inviter": (
            checkpoint_at(chain, TERMS, signer=mesh.members[0]),
            CheckpointOutcome.NOT_INVITER,
        ),
    } | {
        # A stranger's invite would name the stranger: trusted as the inviter, it is still no member.
        "signed by a non-member": (
            checkpoint_at(chain, TERMS, signer=stranger),
            CheckpointOutcome.SIGNER_NOT_MEMBER,
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "wrong signature",
        "different mesh",
        "another mesh's hub record",
        "a vote for another value",
        "a vote with a bad signature",
        "no votes at all",
        "a tampered hub record",
        "issued to another joiner",
        "signed by a member that is not the inviter",
        "signed by a non-member",
    ],
)
def test_a_forged_checkpoint_is_refused_and_counted(long_chain: LongChain, case: str) -> None:
    checkpoint, expected = forgeries(long_chain)[case]
    hubs = joiner_chain(long_chain)
    trusted = checkpoint.body.signer if case == "signed by a non-member" else long_chain.mesh.founder.node_id
    outcome = hubs.adopt_checkpoint(checkpoint, trusted_signer=trusted, subject=joiner_of(long_chain).node_id)
    assert outcome is expected and outcome.refused
    assert hubs.counters[f"checkpoint_{expected}"] == 1
    assert hubs.anchor is None and hubs.latest is None
    # Offering the record it carried does not make it believed either.
    assert hubs.offer(checkpoint.body.hub_record) == []
    assert hubs.latest is None


def test_what_a_dishonest_inviter_can_and_cannot_do(long_chain: LongChain) -> None:
    """The inviter's word is trusted (the module docstring says why): a member that is the
    inviter can anchor its own joiner at a term it made up, and only that joiner: a chain
    that verifies the same record by the vote rule refuses it, and so does any chain the
    forger is not the inviter of."""
    forger = long_chain.mesh.members[0]
    fabricated = fabricated_term(long_chain, TERMS + 1000, forger)
    joiner = joiner_of(long_chain).node_id
    checkpoint = make_checkpoint(forger, long_chain.mesh.mesh_id, joiner, fabricated)
    victim = joiner_chain(long_chain)
    assert (
        victim.adopt_checkpoint(checkpoint, trusted_signer=forger.node_id, subject=joiner)
        is CheckpointOutcome.ADOPTED
    )
    others = joiner_chain(long_chain)
    assert adopt(others, long_chain, checkpoint) is CheckpointOutcome.NOT_INVITER
    verifier = joiner_chain(long_chain, fresh_store(long_chain, long_chain.records()))
    assert verifier.offer(fabricated) == [] and verifier.latest is not None and verifier.latest.term == TERMS


def test_a_checkpoint_survives_the_wire_and_garbage_does_not_decode(long_chain: LongChain) -> None:
    checkpoint = checkpoint_at(long_chain, TERMS)
    assert decode_checkpoint(encode_checkpoint(checkpoint)) == checkpoint
    with pytest.raises(WireError):
        decode_checkpoint(b"\x93garbage")


def test_a_restart_anchors_again_with_only_the_records_since_the_anchor(long_chain: LongChain) -> None:
    """What `mesh.joining` does after a restart: the election core loads its store (records
    since the anchor only), then the saved checkpoint is adopted again through `on_record`."""
    store = fresh_store(long_chain, long_chain.records(from_term=151))
    joiner = joiner_of(long_chain)
    core = ElectionCore(joiner, store, random.Random(1))
    assert core.latest_term == 0  # term 151 cannot be checked without term 150
    checkpoint = checkpoint_at(long_chain, 150)
    outcome = core.chain.adopt_checkpoint(
        checkpoint, trusted_signer=long_chain.mesh.founder.node_id, subject=joiner.node_id
    )
    assert outcome is CheckpointOutcome.ADOPTED
    core.on_record(1.0, checkpoint.body.hub_record)
    assert core.latest_term == TERMS
    assert store.fence_term == TERMS
    changes = [e for e in core.drain() if isinstance(e, HubChanged)]
    assert changes and changes[-1].term == TERMS
    # A chain constructed with the anchor (what an election-core hook would do) loads the same.
    assert core.chain.anchor is not None
    anchored = HubChain(store.mesh_id, store.ledger, anchor=core.chain.anchor)
    assert [t.term for t in anchored.load(store)] == list(range(150, TERMS + 1))


def test_history_arriving_author_by_author_does_not_stall_a_chain_verified_from_term_one() -> None:
    """Each term's hub record is signed by its winner, so anti-entropy brings them grouped by
    author: far more than `MAX_PENDING_TERMS` terms wait for a gap. They all wait (the store
    holds them) and are believed once the gap fills; before, the chain stalled for good."""
    chain = build_long_chain(450, seed=4)
    store = fresh_store(chain)
    hubs = joiner_chain(chain, store)
    for record in sorted(chain.hubs, key=lambda r: (r.author, r.seq)):
        store.merge([record])
        hubs.offer(record)
    assert hubs.latest is not None and hubs.latest.term == 450
    assert hubs.counters["hub_record_pending_overflow"] == 0
