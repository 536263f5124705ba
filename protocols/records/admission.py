"""Who is a member: the admission chain from genesis, with revocation cut-offs.

A node is admitted when a chain of admission records leads back to the founder named
in the genesis record, each signed by a member admitted (and not revoked) at that
record's seq. Revocation sets a member's `last_valid_seq`; its later records, and any
admission it signed after that seq, stop counting. Recomputing by breadth-first search
from the founder makes the outcome independent of arrival order, which is what keeps
replicas convergent.

Only the founder may revoke in this version; the elected hub takes that over later.
"""

from __future__ import annotations

from collections import deque

from protocols.common.identity import NodeId
from protocols.common.wire import WireError
from protocols.records.admission_records import (
    ADMISSION,
    GENESIS,
    REVOCATION,
    GenesisBody,
    admission_body,
    genesis_body,
    mesh_id_of,
    revocation_body,
)
from protocols.records.record import Record

UNLIMITED = 2**63 - 1


class AdmissionLedger:
    """The admitted set of one mesh, derived from its genesis, admission and revocation records."""

    def __init__(self, mesh_id: bytes) -> None:
        self.mesh_id = mesh_id
        self.genesis: GenesisBody | None = None
        # member -> highest seq of theirs that still counts (UNLIMITED unless revoked)
        self._cutoff: dict[NodeId, int] = {}
        self._admissions_by_author: dict[NodeId, list[tuple[int, NodeId]]] = {}
        self._revocations: dict[NodeId, int] = {}

    def copy(self) -> AdmissionLedger:
        """An independent ledger in the same state (a store snapshot copies its ledger)."""
        clone = AdmissionLedger(self.mesh_id)
        clone.genesis = self.genesis
        clone._cutoff = dict(self._cutoff)
        clone._admissions_by_author = {
            author: list(seqs) for author, seqs in self._admissions_by_author.items()
        }
        clone._revocations = dict(self._revocations)
        return clone

    @property
    def founder(self) -> NodeId | None:
        return self.genesis.founder if self.genesis is not None else None

    def allows(self, author: NodeId, seq: int) -> bool:
        """True when `author`'s record number `seq` comes from an admitted, unrevoked member."""
        return seq <= self._cutoff.get(author, 0)

    def is_member(self, node: NodeId) -> bool:
        return self._cutoff.get(node, 0) == UNLIMITED

    def members(self) -> list[NodeId]:
        """Currently admitted members that are not revoked."""
        return [node for node, cutoff in self._cutoff.items() if cutoff == UNLIMITED]

    def revoked(self) -> dict[NodeId, int]:
        return dict(self._revocations)

    def check_genesis(self, record: Record) -> bool:
        """True when `record` is the genesis record whose hash is this mesh's id."""
        if record.kind != GENESIS or record.seq != 1 or record.key != "":
            return False
        try:
            body = genesis_body(record)
        except WireError:
            return False
        return mesh_id_of(body) == self.mesh_id and body.founder == record.author

    def accept_genesis(self, record: Record) -> None:
        self.genesis = genesis_body(record)
        self._recompute()

    def accept_admission(self, record: Record) -> list[NodeId]:
        """Take in an admission already known to be by an admitted author; return newly admitted.

        Adding an admission only adds reachability, so a search from the new member alone
        gives the same result as recomputing from the founder, in time proportional to
        what it newly admits.
        """
        member = admission_body(record).member
        self._admissions_by_author.setdefault(record.author, []).append((record.seq, member))
        if member in self._cutoff or not self.allows(record.author, record.seq):
            return []
        self._cutoff[member] = self._revocations.get(member, UNLIMITED)
        admitted = [member]
        queue = deque([member])
        while queue:
            author = queue.popleft()
            limit = self._cutoff[author]
            for seq, next_member in self._admissions_by_author.get(author, ()):
                if seq <= limit and next_member not in self._cutoff:
                    self._cutoff[next_member] = self._revocations.get(next_member, UNLIMITED)
                    admitted.append(next_member)
                    queue.append(next_member)
        return admitted

    def valid_revocation(self, record: Record) -> bool:
        """Only the founder may revoke in this version (the hub takes over with elections)."""
        return record.kind == REVOCATION and record.author == self.founder

    def accept_revocation(self, record: Record) -> dict[NodeId, int]:
        """Apply a revocation; return members whose cut-off dropped, with the new cut-off (0 = out)."""
        body = revocation_body(record)
        previous = self._revocations.get(body.member, UNLIMITED)
        self._revocations[body.member] = min(previous, body.last_valid_seq)
        before = dict(self._cutoff)
        self._recompute()
        return {
            node: self._cutoff.get(node, 0) for node, old in before.items() if self._cutoff.get(node, 0) < old
        }

    def _recompute(self) -> None:
        cutoff: dict[NodeId, int] = {}
        if self.genesis is None:
            self._cutoff = cutoff
            return
        founder = self.genesis.founder
        cutoff[founder] = self._revocations.get(founder, UNLIMITED)
        queue = deque([founder])
        while queue:
            author = queue.popleft()
            limit = cutoff[author]
            for seq, member in self._admissions_by_author.get(author, ()):
                if seq <= limit and member not in cutoff:
                    cutoff[member] = self._revocations.get(member, UNLIMITED)
                    queue.append(member)
        self._replace_cutoffs(cutoff)

    def _replace_cutoffs(self, cutoff: dict[NodeId, int]) -> None:
        # Mutated in place, never rebound: the record store holds a reference for its hot path.
        self._cutoff.clear()
        self._cutoff.update(cutoff)

    @property
    def cutoffs(self) -> dict[NodeId, int]:
        """member -> highest seq of theirs that counts; read-only for callers."""
        return self._cutoff


def is_admission_kind(kind: str) -> bool:
    return kind in (GENESIS, ADMISSION, REVOCATION)


ADMISSION_ORDER = {GENESIS: 0, ADMISSION: 1, REVOCATION: 2}
"""Apply order inside a batch: a genesis before the admissions it roots, then revocations."""

__all__ = ["ADMISSION", "ADMISSION_ORDER", "UNLIMITED", "AdmissionLedger", "is_admission_kind"]
