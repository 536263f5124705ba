"""A long hub chain with real signatures, and members' data directories holding it, for checkpoint
tests and the long-chain join benchmark.

Term 1 is the founder's; every later term is won by the next council member in turn (so
hub records have several authors, as after real failovers), proven by the signed votes
of a majority of the council of the term before, the winner's first. Every node signs
with its own consecutive seqs, so the records merge into a store like a real mesh's.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mesh.data_dir import DATABASE_FILE, KEY_FILE
from mesh.keyfile import create_key_file
from mesh.record_database import RecordDatabase
from protocols.common.identity import NodeId, NodeIdentity
from protocols.election.records import (
    Ballot,
    HubBody,
    HubValue,
    VoteBody,
    hub_body,
    majority,
    make_hub_record,
    make_vote,
)
from protocols.records.record import Record
from protocols.records.store import RecordStore
from tests.support.mesh_fixtures import MeshFixture, make_mesh

LEASE_S = 3.0


@dataclass
class LongChain:
    mesh: MeshFixture
    hubs: list[Record] = field(default_factory=list)
    """The hub record of term t at index t - 1."""
    votes: list[Record] = field(default_factory=list)

    @property
    def terms(self) -> int:
        return len(self.hubs)

    def hub(self, term: int) -> Record:
        return self.hubs[term - 1]

    def identity(self, node: NodeId) -> NodeIdentity:
        return next(i for i in self.mesh.everyone if i.node_id == node)

    def records(self, from_term: int = 1) -> list[Record]:
        """Membership records, then the hub and vote records of terms `from_term` and later."""
        later = [r for r in [*self.votes, *self.hubs] if int(r.key) >= from_term]
        return [*self.mesh.membership_records(), *later]

    def next_seq(self, identity: NodeIdentity) -> int:
        seq = self.mesh.seqs.get(identity.node_id, 0) + 1
        self.mesh.seqs[identity.node_id] = seq
        return seq

    def extend(self, value: HubValue) -> Record:
        """Elect `value` into the next term with the votes of a majority of the newest council."""
        body_term = self.terms + 1
        if body_term == 1:
            founder = self.mesh.founder
            body = HubBody(1, value, Ballot(0, founder.node_id), [])
            record = make_hub_record(founder, self.mesh.mesh_id, self.next_seq(founder), body)
            self.hubs.append(record)
            return record
        council = hub_body(self.hubs[-1]).value.council
        winner = self.identity(value.hub)
        ballot = Ballot(1, winner.node_id)
        voters = sorted(council, key=lambda node: node != winner.node_id)[: majority(len(council))]
        proof = []
        for voter in voters:
            identity = self.identity(voter)
            vote = make_vote(
                identity,
                self.mesh.mesh_id,
                self.next_seq(identity),
                VoteBody(body_term, ballot, ballot, value),
            )
            proof.append(vote)
        self.votes.extend(proof)
        body = HubBody(body_term, value, ballot, proof)
        record = make_hub_record(winner, self.mesh.mesh_id, self.next_seq(winner), body)
        self.hubs.append(record)
        return record


def build_long_chain(terms: int, members: int = 4, council_size: int = 3, seed: int = 0) -> LongChain:
    """`terms` terms over a mesh of the founder and `members` others; the council is the founder
    and the first `council_size - 1` members, each winning a term in turn (term t: member
    (t - 1) mod council size, the founder first)."""
    chain = LongChain(make_mesh(members, seed))
    council = [identity.node_id for identity in chain.mesh.everyone[:council_size]]
    for term in range(1, terms + 1):
        chain.extend(HubValue(council[(term - 1) % len(council)], council, LEASE_S))
    return chain


def write_data_dir(
    chain: LongChain, path: Path, identity: NodeIdentity | None = None, extra: Sequence[Record] = ()
) -> None:
    """The data directory (key and database, holding the whole chain and `extra`) of `identity`
    (default: the founder), as a long life in the mesh would have left it; `ileices up` runs it."""
    path.mkdir(parents=True)
    os.chmod(path, 0o700)
    create_key_file(path / KEY_FILE, identity or chain.mesh.founder)
    database = RecordDatabase(path / DATABASE_FILE)
    try:
        database.set_meta("mesh_id", chain.mesh.mesh_id)
        database.save(RecordStore(chain.mesh.mesh_id).merge([*chain.records(), *extra]))
    finally:
        database.close()
