"""Signed storage records for core tests: members, artifacts, placements and storage offers.

Every member signs with its own consecutive seqs (one counter per author, as in a real
mesh). Artifacts are 3000 bytes in three 1024-byte chunks with made-up share roots: the
core never reads shares, only what the records say about them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from protocols.common.hashing import digest
from protocols.common.identity import NodeId, NodeIdentity
from protocols.records.record import Record, sign_record
from protocols.storage.records import (
    ArtifactBody,
    Holding,
    PlacementBody,
    StorageBody,
    make_artifact,
    make_placement,
    make_storage,
)

MESH = digest(b"storage-test-mesh")
WALL = 1_000_000.0
"""Wall time the tests run at: artifacts created at 0 have long settled."""


def identity(name: str) -> NodeIdentity:
    return NodeIdentity.from_seed(digest(name.encode()))


def artifact_id(name: str) -> bytes:
    return digest(b"artifact:" + name.encode())


def body(
    k: int = 3,
    n: int = 10,
    *,
    name: str = "data.bin",
    created_at: float = 0.0,
    expires_at: float = 0.0,
    deleted: bool = False,
) -> ArtifactBody:
    return ArtifactBody(
        name=name,
        size=3000,
        chunk_bytes=1024,
        chunk_count=3,
        k=k,
        n=n,
        share_roots=[digest(bytes([i])) for i in range(n)],
        share_sizes=[1200] * n,
        created_at=created_at,
        expires_at=expires_at,
        deleted=deleted,
    )


class World:
    """`count` members (`ids[i]` signs as `people[i]`) and the records they sign."""

    def __init__(self, count: int = 20) -> None:
        self.people = [identity(f"node-{i}") for i in range(count)]
        self.ids = [person.node_id for person in self.people]
        self.seqs: Counter[NodeId] = Counter()

    def person(self, node: NodeId) -> NodeIdentity:
        return self.people[self.ids.index(node)]

    def seq(self, node: NodeId) -> int:
        self.seqs[node] += 1
        return self.seqs[node]

    def artifact(self, owner: NodeId, artifact: bytes, value: ArtifactBody) -> Record:
        return make_artifact(self.person(owner), MESH, self.seq(owner), artifact, value)

    def placement(
        self, author: NodeId, artifact: bytes, holders: Sequence[bytes], generation: int = 1, term: int = 0
    ) -> Record:
        value = PlacementBody(generation=generation, term=term, holders=list(holders))
        return make_placement(self.person(author), MESH, self.seq(author), artifact, value)

    def storage(
        self,
        node: NodeId,
        holdings: Iterable[tuple[bytes, int]] = (),
        *,
        offered: int = 10**9,
        used: int = 0,
        accepting: bool = True,
    ) -> Record:
        value = StorageBody(
            offered_bytes=offered,
            used_bytes=used,
            accepting=accepting,
            refusal="" if accepting else "full: over the disk limit",
            holdings=[Holding(a, i) for a, i in holdings],
        )
        return make_storage(self.person(node), MESH, self.seq(node), value)

    def raw(self, author: NodeId, kind: str, key: str, payload: bytes) -> Record:
        return sign_record(self.person(author), MESH, kind, key, self.seq(author), payload)
