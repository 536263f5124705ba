"""The one source of sequence numbers for every record this node signs.

A node's records are numbered by one per-author counter. Several actors sign records
(dissemination for notes, manifests and admissions; the election for votes, hub,
council and lease records), and two records of one author with the same seq are
equivocation evidence against it, so they must never draw from separate counters.
"""

from __future__ import annotations

from protocols.common.identity import NodeId
from protocols.records.store import RecordStore


class SeqAllocator:
    """Hands out strictly increasing seqs for `author`, never below what its store already holds.

    Reading the store's highest seq on every call (not only at start) keeps it right when
    this node's own records come back from peers (a data directory restored from an
    older copy learns its later seqs by anti-entropy). Callers run on one trio thread,
    so a plain counter is enough.
    """

    def __init__(self, store: RecordStore, author: NodeId) -> None:
        self._store = store
        self._author = author
        self._last = store.highest_seq(author)

    def __call__(self) -> int:
        self._last = max(self._last, self._store.highest_seq(self._author)) + 1
        return self._last

    @property
    def last(self) -> int:
        """The newest seq handed out (or held in the store when none was handed out yet)."""
        return self._last
