"""Deterministic meshes of signed records for tests: a founder, members, and their records."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from protocols.common.identity import NodeIdentity
from protocols.records.admission_records import make_admission, make_genesis
from protocols.records.record import Record, sign_record


@dataclass
class MeshFixture:
    """A founder and members with consecutive seqs, so tests can mint valid records quickly."""

    founder: NodeIdentity
    members: list[NodeIdentity]
    genesis: Record
    admissions: list[Record]
    seqs: dict[bytes, int] = field(default_factory=dict)

    @property
    def mesh_id(self) -> bytes:
        return self.genesis.mesh

    @property
    def everyone(self) -> list[NodeIdentity]:
        return [self.founder, *self.members]

    def next_record(self, author: NodeIdentity, kind: str, key: str, body: bytes = b"") -> Record:
        seq = self.seqs.get(author.node_id, 0) + 1
        self.seqs[author.node_id] = seq
        return sign_record(author, self.mesh_id, kind, key, seq, body)

    def membership_records(self) -> list[Record]:
        return [self.genesis, *self.admissions]


def make_mesh(members: int = 3, seed: int = 0) -> MeshFixture:
    rng = random.Random(seed)
    founder = NodeIdentity.from_seed(rng.randbytes(32))
    others = [NodeIdentity.from_seed(rng.randbytes(32)) for _ in range(members)]
    genesis = make_genesis(founder, "test mesh", 1_700_000_000.0, rng.randbytes(16))
    mesh = MeshFixture(founder, others, genesis, [], {founder.node_id: 1})
    for member in others:
        seq = mesh.seqs[founder.node_id] + 1
        mesh.seqs[founder.node_id] = seq
        mesh.admissions.append(make_admission(founder, mesh.mesh_id, seq, member.node_id))
    return mesh


def random_records(mesh: MeshFixture, count: int, seed: int = 0, keys: int = 4) -> list[Record]:
    """Records spread over authors and a few keys, so later ones supersede earlier ones."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        author = rng.choice(mesh.everyone)
        out.append(mesh.next_record(author, "note", f"k{rng.randrange(keys)}", i.to_bytes(4, "big")))
    return out
