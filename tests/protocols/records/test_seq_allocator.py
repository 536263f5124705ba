"""The node's one sequence allocator: every record it signs gets its own seq, whoever signs it."""

from __future__ import annotations

import random

from protocols.election.core import ElectionCore
from protocols.election.events import PublishRecord
from protocols.records.record import sign_record
from protocols.records.seq_allocator import SeqAllocator
from protocols.records.store import Outcome, RecordStore
from tests.support.mesh_fixtures import make_mesh


def test_it_starts_past_the_store_and_jumps_past_own_records_learned_later() -> None:
    mesh = make_mesh(members=1)
    store = RecordStore(mesh.mesh_id)
    store.merge(mesh.membership_records())
    founder = mesh.founder
    held = store.highest_seq(founder.node_id)
    seqs = SeqAllocator(store, founder.node_id)
    assert [seqs(), seqs()] == [held + 1, held + 2]
    # A record of ours with a higher seq comes back from a peer (restored data directory).
    later = sign_record(founder, mesh.mesh_id, "note", "old", held + 10, b"x")
    assert store.add(later) is Outcome.ACCEPTED
    assert seqs() == held + 11


def test_election_records_and_notes_signed_in_between_never_share_a_seq() -> None:
    mesh = make_mesh(members=0)
    store = RecordStore(mesh.mesh_id)
    store.merge(mesh.membership_records())
    founder = mesh.founder
    seqs = SeqAllocator(store, founder.node_id)
    election = ElectionCore(founder, store, random.Random(1), next_seq=seqs)
    election.tick(0.0)  # the founder signs its term-1 hub record, not yet in the store
    hub_record = next(e.record for e in election.drain() if isinstance(e, PublishRecord))
    note = sign_record(founder, mesh.mesh_id, "note", "k", seqs(), b"v")  # signed before the hub record lands
    assert note.seq != hub_record.seq
    assert store.add(note) is Outcome.ACCEPTED
    assert store.add(hub_record) is Outcome.ACCEPTED
    assert store.counters[Outcome.EQUIVOCATION] == 0
