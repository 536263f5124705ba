"""The replicated state of one mesh: an author-partitioned last-writer-wins map of signed records.

Merge rule: per `(author, kind, key)` the highest `seq` wins. That makes the store a
join-semilattice (merge is commutative, associative and idempotent), so replicas that
see the same records in any order, with duplicates, end identical.

The vector clock `{author: seq}` only claims complete prefixes: `clock[a] = s` means
every record of `a` with seq <= s is held here or superseded by a newer one held here.
An eagerly pushed record that leaves a gap is stored but not claimed until the gap is
filled, by the next record in order or by an anti-entropy delta that covers the range.

A delta's `since..upto` is the sender's word, and any admitted member may lie, so a
claim moves this store's clock only as far as this store can check it (`apply_delta`):
never past the highest seq of that author this store has itself verified a record of
(held, superseded or fenced: `_top_seq`), never from a malformed entry (`since > upto`,
a record of another author or at or below `since`), and only once every record it
carries in the range is held here or superseded. Refused claims are counted
(`claim_refusals`). Why it matters: honest peers send only what lies past a claim, so
one empty delta claiming seq 2^62 would silence that author here for good (and move
`highest_seq`, which seq allocation and revocation read). What stays on trust is that a
seq inside the range, below the highest one verified here, was superseded: no record
proves that, and honest deltas rely on it for gaps whose records were replaced before
this store saw them. So a lie there can still hide a record missing below one held here
(a lost push, then a later record that arrived); it cannot hide anything newer than what
this store has verified. The checks cost one pass over each entry's records.

Two different records with the same `(author, seq)` are an equivocation: both are kept
as evidence and the one with the smaller signature stays current, a rule every replica
applies the same way.

Revocation (`protocols.records.admission`): a revocation that counts cuts its member's
records above its last valid seq (purged, and refused from then on); the hub's
revocations are judged against the node's hub chain (`use_hub_terms`) and judged again
when it changes (`recheck_revocations`). A hub record the chain would believe next is
admitted even from a member the hub revoked (`AdmissionLedger.exempts`).

Fencing: hub-issued kinds (`protocols/records/fencing.py`) carry the issuing hub's term; once
the election core tells the store about term T (`raise_fence`), records of those kinds
from older terms are refused (`FENCED`) and any already held are purged. For the clock a
fenced record counts as superseded, like a stale one, so it never blocks a claim; and
since the fence only rises, replicas that learn the same newest term hold the same set.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Annotated

import msgspec

from protocols.common.hashing import digest
from protocols.common.identity import NodeId
from protocols.common.identity import verify as ed25519_verify
from protocols.common.wire import WireError, WireStruct
from protocols.records.admission import ADMISSION_ORDER, AdmissionLedger, HubTerms
from protocols.records.admission_records import (
    ADMISSION,
    ADMISSION_KINDS,
    GENESIS,
    HANDOVER,
    HUB_REVOCATION,
    REVOCATION,
)
from protocols.records.fencing import HUB_ISSUED_KINDS, issued_term
from protocols.records.record import Key32, Record, Verifier, verify_record

DEFAULT_MAX_DELTA_RECORDS = 4096
SUMMARY_BUCKETS = 32
"""Authors are split into this many buckets (by their key's first byte) for `summary()`."""
_MASK64 = (1 << 64) - 1


class Outcome(enum.StrEnum):
    """What `RecordStore.add` did with a record; everything but ACCEPTED is counted."""

    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    STALE = "stale"
    EQUIVOCATION = "equivocation"
    BAD_SIGNATURE = "bad_signature"
    NOT_ADMITTED = "not_admitted"
    WRONG_MESH = "wrong_mesh"
    MALFORMED = "malformed"
    FENCED = "fenced"


KNOWN = frozenset({Outcome.ACCEPTED, Outcome.DUPLICATE, Outcome.STALE, Outcome.EQUIVOCATION})
"""Outcomes after which the record's content is reflected in this store."""


class ClaimRefusal(enum.StrEnum):
    """Why `RecordStore.apply_delta` refused an entry's clock claim; each refusal is counted."""

    BAD_RANGE = "bad_range"
    """`since` below 0 or above `upto`: no honest delta says that."""
    FOREIGN_RECORD = "foreign_record"
    """The entry carries a record of another author."""
    RECORD_BELOW_SINCE = "record_below_since"
    """The entry carries a record at or below `since`, which the sender was told is claimed."""
    BEYOND_HELD = "beyond_held"
    """`upto` passes every seq of the author this store has verified a record of."""


ClockSeq = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
"""A clock entry on the wire: 0 (nothing claimed) up to the largest record seq."""


class AuthorDelta(WireStruct, frozen=True):
    """All of `author`'s current records with `since < seq <= upto`: brings a peer up to `upto`.

    Records past `upto` may ride along unclaimed (held past the sender's own claim).
    """

    author: Key32
    since: ClockSeq
    upto: ClockSeq
    records: list[Record]


@dataclass
class MergeResult:
    """What a batch merge changed: the newly accepted records (to persist and to forward)."""

    accepted: list[Record]
    outcomes: Counter[Outcome]
    clock_changes: dict[NodeId, int]
    purged: list[Record]
    refused_claims: Counter[ClaimRefusal] = field(default_factory=Counter)


def bucket_of(author: NodeId) -> int:
    """The summary bucket of an author: keys are uniformly random, so any byte will do."""
    return author[0] % SUMMARY_BUCKETS


def _summary_part(fingerprint: int, count: int, clock_total: int) -> bytes:
    """One bucket's eight summary bytes: its fingerprint mixed with its record count and claims."""
    mixed = fingerprint ^ (count * 0x9E3779B97F4A7C15) ^ (clock_total * 0xC2B2AE3D27D4EB4F)
    return (mixed & _MASK64).to_bytes(8, "big")


def _fingerprint(record: Record) -> int:
    # Signatures are pseudo-random 64-byte strings, so XOR of a 128-bit slice of each is a
    # cheap, incremental, order-independent set hash for comparing honest replicas.
    return int.from_bytes(record.signature[:16], "big")


class RecordStore:
    """Holds, merges and summarises the signed records of one mesh. Sans-IO: persistence is the caller's."""

    def __init__(self, mesh_id: bytes, verify: Verifier = ed25519_verify) -> None:
        self.mesh_id = mesh_id
        self.ledger = AdmissionLedger(mesh_id)
        self._cutoffs = self.ledger.cutoffs
        self._verify = verify
        self._current: dict[tuple[bytes, str, str], Record] = {}
        self._by_author: dict[NodeId, dict[int, Record]] = {}
        self._clock: dict[NodeId, int] = {}
        self._fingerprint = 0
        self._clock_total = 0
        self._covered: dict[NodeId, set[int]] = {}
        # per author, the highest seq this store has verified a record of (held now, or seen and
        # then superseded or fenced): bounds held seqs, so deltas can skip an author, and bounds
        # the clock claims a peer can make this store adopt
        self._top_seq: dict[NodeId, int] = {}
        # per summary bucket: XOR of fingerprints, current records, clock total, authors
        self._bucket_fp = [0] * SUMMARY_BUCKETS
        self._bucket_count = [0] * SUMMARY_BUCKETS
        self._bucket_clock = [0] * SUMMARY_BUCKETS
        self._bucket_authors: list[dict[NodeId, None]] = [{} for _ in range(SUMMARY_BUCKETS)]
        self._summary_parts = [_summary_part(0, 0, 0)] * SUMMARY_BUCKETS
        self._stale_buckets: set[int] = set()
        self._summary: bytes | None = None
        self.evidence: list[tuple[Record, Record]] = []
        self.counters: Counter[Outcome] = Counter()
        self.claim_refusals: Counter[ClaimRefusal] = Counter()
        """Delta entries whose clock claim `apply_delta` refused, by reason."""
        self.fence_term = 0
        """The newest hub term this store has been told of: hub-issued records below it are refused."""

    # ---- reading -------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._current)

    def __iter__(self) -> Iterator[Record]:
        return iter(self._current.values())

    def get(self, author: NodeId, kind: str, key: str) -> Record | None:
        return self._current.get((author, kind, key))

    def holds(self, record: Record) -> bool:
        """True when this exact record (same author, seq and signature) is held here.

        The cheap test before a merge: most eagerly pushed records arrive more than once,
        and a record held is a duplicate whatever else a full merge would check.
        """
        held = self._by_author.get(record.author)
        if held is None:
            return False
        same = held.get(record.seq)
        return same is not None and (same is record or same.signature == record.signature)

    def of_kind(self, kind: str) -> list[Record]:
        return [record for record in self._current.values() if record.kind == kind]

    def clock(self) -> dict[NodeId, int]:
        """The vector clock: per author, the complete prefix of its records held here."""
        return dict(self._clock)

    def clock_total(self) -> int:
        """Sum of the clock's claims: two replicas with equal records can still differ here."""
        return self._clock_total

    def highest_seq(self, author: NodeId) -> int:
        """The highest seq of `author` held here (may exceed its clock entry while gaps remain)."""
        seqs = self._by_author.get(author)
        return max(max(seqs), self._clock.get(author, 0)) if seqs else self._clock.get(author, 0)

    def state_digest(self) -> bytes:
        """A hash of the current record set: equal on two replicas iff they hold the same records."""
        return digest(self._fingerprint.to_bytes(16, "big") + len(self._current).to_bytes(8, "big"))

    def replicate(self, source: RecordStore) -> None:
        """Become an independent replica of `source` (this store must be empty), sharing its records.

        Cheaper than merging the same records again (no signature or admission work): a
        simulator starts thousands of nodes from one converged state this way. Records are
        immutable, so sharing them is safe; every container is copied.
        """
        if self._current or self.ledger.genesis is not None:
            raise ValueError("replicate() needs an empty store")
        if source.mesh_id != self.mesh_id:
            raise ValueError("replicate() needs a store of the same mesh")
        self.ledger = source.ledger.copy()
        self._cutoffs = self.ledger.cutoffs
        self._current = dict(source._current)
        self._by_author = {author: dict(held) for author, held in source._by_author.items()}
        self._clock = dict(source._clock)
        self._fingerprint = source._fingerprint
        self._clock_total = source._clock_total
        self._covered = {author: set(seqs) for author, seqs in source._covered.items()}
        self._top_seq = dict(source._top_seq)
        self._bucket_fp = list(source._bucket_fp)
        self._bucket_count = list(source._bucket_count)
        self._bucket_clock = list(source._bucket_clock)
        self._bucket_authors = [dict(authors) for authors in source._bucket_authors]
        self._summary_parts = list(source._summary_parts)
        self._stale_buckets = set(source._stale_buckets)
        self._summary = source._summary
        self.evidence = list(source.evidence)
        self.fence_term = source.fence_term

    def summary(self) -> bytes:
        """Eight bytes per author bucket, equal on two replicas iff that bucket's records and claims are.

        Sent with every anti-entropy hello: when two replicas differ (a record or two in
        flight, usually), the buckets that differ name the few authors whose clock
        entries need comparing, instead of the whole clock (one entry per author).
        """
        summary = self._summary
        if summary is None:
            parts = self._summary_parts
            for bucket in self._stale_buckets:
                parts[bucket] = _summary_part(
                    self._bucket_fp[bucket], self._bucket_count[bucket], self._bucket_clock[bucket]
                )
            self._stale_buckets.clear()
            summary = self._summary = b"".join(parts)
        return summary

    def differing_buckets(self, peer_summary: bytes) -> list[int] | None:
        """The buckets where a peer's `summary()` differs from ours; None if it is not a summary."""
        if len(peer_summary) != 8 * SUMMARY_BUCKETS:
            return None
        mine = self.summary()
        return [
            bucket
            for bucket in range(SUMMARY_BUCKETS)
            if mine[8 * bucket : 8 * bucket + 8] != peer_summary[8 * bucket : 8 * bucket + 8]
        ]

    def clock_of(self, buckets: Iterable[int]) -> dict[NodeId, int]:
        """The clock entries of the authors in `buckets` (what a bucketed sync exchanges)."""
        clock = self._clock
        return {
            author: clock[author]
            for bucket in buckets
            for author in self._bucket_authors[bucket]
            if author in clock
        }

    def restore(self, records: Iterable[Record], clock: Mapping[NodeId, int]) -> MergeResult:
        """Reload what this node persisted itself: records, and claims.

        Signatures are not checked here: only a caller that has verified the records may
        pass them (the node's loader, `mesh.database_check`, verifies everything through
        `merge` first and hands this only claims; a disk is not trusted). Admission rules
        still apply, and a claim
        is cut to the author's highest seq held, the bound `apply_delta` applies (a
        database written before claims were checked may hold one a peer planted).
        """
        result = self.merge(records, verified=True)
        top_seq = self._top_seq
        for author, seq in clock.items():
            seq = min(seq, top_seq.get(author, 0))
            if seq > self._clock.get(author, 0) and self.ledger.allows(author, seq):
                self._set_clock(author, seq, result)
        return result

    # ---- merging -------------------------------------------------------------------------

    def add(self, record: Record, *, verified: bool = False) -> Outcome:
        """Merge one record. `verified=True` skips the signature check for bytes already checked."""
        return self.merge([record], verified=verified).outcomes.most_common(1)[0][0]

    def merge(self, records: Iterable[Record], *, verified: bool = False) -> MergeResult:
        """Merge a batch in any order: admission records first, retried until no progress."""
        result = MergeResult([], Counter(), {}, [])
        batch = list(records)
        if any(record.kind in ADMISSION_KINDS for record in batch):
            batch.sort(key=lambda r: ADMISSION_ORDER.get(r.kind, 3))
        counts: dict[Outcome, int] = {}
        add_one = self._add_one
        while batch:
            waiting: list[Record] = []
            for record in batch:
                outcome = add_one(record, verified, result)
                if outcome is Outcome.NOT_ADMITTED:
                    waiting.append(record)
                else:
                    counts[outcome] = counts.get(outcome, 0) + 1
            if len(waiting) == len(batch):
                counts[Outcome.NOT_ADMITTED] = len(waiting)
                break
            batch = waiting
        result.outcomes.update(counts)
        for outcome, count in counts.items():
            if outcome is not Outcome.ACCEPTED:
                self.counters[outcome] += count
        return result

    def _add_one(self, record: Record, verified: bool, result: MergeResult) -> Outcome:
        # The hot path of the whole mesh: ordered so that the common case (a new record from
        # an admitted author) does a handful of dict operations and nothing else.
        if record.mesh != self.mesh_id:
            return Outcome.WRONG_MESH
        author, seq, kind = record.author, record.seq, record.kind
        if kind == GENESIS:
            if not self.ledger.check_genesis(record):
                return Outcome.NOT_ADMITTED if self.ledger.genesis is None else Outcome.MALFORMED
        elif seq > self._cutoffs.get(author, 0) and not self.ledger.exempts(record):
            return Outcome.NOT_ADMITTED
        if kind in HUB_ISSUED_KINDS and (fenced := self._fence(record, verified, result)) is not None:
            return fenced
        slot = (author, kind, record.key)
        current = self._current.get(slot)
        held = self._by_author.get(author)
        if held is None:
            held = self._by_author[author] = {}
            self._bucket_authors[bucket_of(author)][author] = None
        if current is not None and current.seq > seq:
            if not verified and not verify_record(record, self._verify):
                return Outcome.BAD_SIGNATURE
            self._advance_clock(author, seq, result)
            return Outcome.STALE
        same_seq = held.get(seq)
        if same_seq is not None and same_seq.signature == record.signature:
            return Outcome.DUPLICATE
        if not verified and not verify_record(record, self._verify):
            return Outcome.BAD_SIGNATURE
        if same_seq is not None:
            self.evidence.append((same_seq, record))
            if same_seq.signature <= record.signature:
                return Outcome.EQUIVOCATION
            self._remove(same_seq)
            result.purged.append(same_seq)
        if kind in ADMISSION_KINDS:
            try:
                self._apply_admission_effects(record, result)
            except WireError:
                return Outcome.MALFORMED
        if current is not None and current is not same_seq:
            self._remove(current)
            if current.seq > self._clock.get(author, 0):
                self._covered.setdefault(author, set()).add(current.seq)
        self._current[slot] = record
        held[seq] = record
        if seq > self._top_seq.get(author, 0):
            self._top_seq[author] = seq
        fingerprint = _fingerprint(record)
        self._fingerprint ^= fingerprint
        bucket = bucket_of(author)
        self._bucket_fp[bucket] ^= fingerprint
        self._bucket_count[bucket] += 1
        self._stale_buckets.add(bucket)
        self._summary = None
        result.accepted.append(record)
        if seq == self._clock.get(author, 0) + 1:
            self._claim_from(author, seq, held, result)
        return Outcome.ACCEPTED if same_seq is None else Outcome.EQUIVOCATION

    def _fence(self, record: Record, verified: bool, result: MergeResult) -> Outcome | None:
        """FENCED (or MALFORMED) for a hub-issued record from a term older than the fence; None to go on."""
        try:
            term = issued_term(record)
        except WireError:
            return Outcome.MALFORMED
        if term >= self.fence_term:
            return None
        if not verified and not verify_record(record, self._verify):
            return Outcome.BAD_SIGNATURE
        author, seq = record.author, record.seq
        if seq > self._top_seq.get(author, 0):
            self._top_seq[author] = seq  # seen and verified: a claim may cover it
        self._advance_clock(author, seq, result)
        return Outcome.FENCED

    def _is_fenced(self, record: Record) -> bool:
        if record.kind not in HUB_ISSUED_KINDS:
            return False
        try:
            return issued_term(record) < self.fence_term
        except WireError:
            return False

    def raise_fence(self, term: int) -> MergeResult:
        """Refuse hub-issued records of terms below `term` from now on, and purge those held.

        Called by the election core when it believes a hub record of `term`; the fence
        never goes down. The purged records are returned for the caller to delete from disk.
        """
        result = MergeResult([], Counter(), {}, [])
        if term <= self.fence_term:
            return result
        self.fence_term = term
        for record in [r for r in self._current.values() if self._is_fenced(r)]:
            self._remove(record)
            result.purged.append(record)
        return result

    def _apply_admission_effects(self, record: Record, result: MergeResult) -> None:
        if record.kind == GENESIS:
            self.ledger.accept_genesis(record)
        elif record.kind == ADMISSION:
            self.ledger.accept_admission(record)
        elif record.kind == REVOCATION and self.ledger.valid_revocation(record):
            self._purge_dropped(self.ledger.accept_revocation(record), result)
        elif record.kind == HUB_REVOCATION:
            self._purge_dropped(self.ledger.accept_hub_revocation(record), result)
        elif record.kind == HANDOVER:
            self._purge_dropped(self.ledger.accept_handover(record), result)

    def _purge_dropped(self, dropped: dict[NodeId, int], result: MergeResult) -> None:
        """Purge what the ledger's dropped cut-offs cut; the ledger then forgets the hub's records
        among them, as a replica that refused them never held them."""
        while dropped:
            start = len(result.purged)
            for member, cutoff in dropped.items():
                self._purge_above(member, cutoff, result)
            hubs = [r for r in result.purged[start:] if r.kind in (HUB_REVOCATION, HANDOVER)]
            dropped = self.ledger.forget(hubs) if hubs else {}

    def use_hub_terms(self, terms: HubTerms | None) -> MergeResult:
        """Judge the hub's revocations by `terms` (the node's hub chain) from now on.

        Returns what that purged, for the caller to delete from disk (a store loaded before
        its node's election existed held the hub's revocations without judging them).
        """
        result = MergeResult([], Counter(), {}, [])
        self._purge_dropped(self.ledger.use_hub_terms(terms), result)
        return result

    def recheck_revocations(self) -> MergeResult:
        """The hub chain changed: judge the hub's revocations again and purge what they now cut.

        Free when no hub revocation is held. The purged records and clock changes are the
        caller's to persist; a member whose revocation stopped counting comes back by
        anti-entropy (its clock entry here was cut with its records).
        """
        result = MergeResult([], Counter(), {}, [])
        self._purge_dropped(self.ledger.recheck(), result)
        return result

    def _remove(self, record: Record) -> None:
        slot = record.slot
        bucket = bucket_of(record.author)
        if self._current.get(slot) is record:
            del self._current[slot]
            self._bucket_count[bucket] -= 1
        seqs = self._by_author.get(record.author)
        if seqs is not None and seqs.get(record.seq) is record:
            del seqs[record.seq]
        fingerprint = _fingerprint(record)
        self._fingerprint ^= fingerprint
        self._bucket_fp[bucket] ^= fingerprint
        self._stale_buckets.add(bucket)
        self._summary = None

    def _purge_above(self, author: NodeId, cutoff: int, result: MergeResult) -> None:
        for seq, record in list(self._by_author.get(author, {}).items()):
            if seq > cutoff:
                self._remove(record)
                result.purged.append(record)
        self._covered.pop(author, None)
        if self._clock.get(author, 0) > cutoff:
            self._set_clock(author, cutoff, result)

    def _set_clock(self, author: NodeId, seq: int, result: MergeResult) -> None:
        self._account_claim(author, seq)
        if seq:
            self._clock[author] = seq
        else:
            self._clock.pop(author, None)
        result.clock_changes[author] = seq

    def _account_claim(self, author: NodeId, seq: int) -> None:
        """Carry a claim about to move to `seq` into the clock total and the author's summary bucket."""
        change = seq - self._clock.get(author, 0)
        self._clock_total += change
        bucket = bucket_of(author)
        self._bucket_clock[bucket] += change
        self._bucket_authors[bucket][author] = None
        self._stale_buckets.add(bucket)
        self._summary = None

    def _advance_clock(self, author: NodeId, seq: int, result: MergeResult) -> None:
        """A seen-and-superseded seq: extends the claim if next, else is remembered as covered."""
        claimed = self._clock.get(author, 0)
        if seq == claimed + 1:
            self._claim_from(author, seq, self._by_author.get(author, {}), result)
        elif seq > claimed:
            self._covered.setdefault(author, set()).add(seq)

    def _extend_clock(self, author: NodeId, result: MergeResult) -> None:
        claimed = self._clock.get(author, 0)
        held = self._by_author.get(author, {})
        if claimed + 1 in held or claimed + 1 in self._covered.get(author, ()):
            self._claim_from(author, claimed + 1, held, result)

    def _claim_from(self, author: NodeId, seq: int, held: dict[int, Record], result: MergeResult) -> None:
        # Seqs this store saw but no longer holds (superseded, fenced) still count as held:
        # otherwise the claim would depend on arrival order, and merging twice could move it.
        covered = self._covered.get(author)
        if covered:
            while seq + 1 in held or seq + 1 in covered:
                seq += 1
            covered.difference_update([c for c in covered if c <= seq])
        else:
            while seq + 1 in held:
                seq += 1
        self._account_claim(author, seq)
        self._clock[author] = seq
        result.clock_changes[author] = seq

    # ---- anti-entropy --------------------------------------------------------------------

    def delta_for(
        self,
        peer_clock: Mapping[NodeId, int],
        max_records: int = DEFAULT_MAX_DELTA_RECORDS,
        buckets: Iterable[int] | None = None,
    ) -> list[AuthorDelta]:
        """The records a peer with `peer_clock` lacks, with the claims it may adopt once merged.

        Records held past this store's own claim (after a gap) ride along unclaimed, so a
        replica that cannot yet claim them still helps its peers fill their gaps.
        Truncation keeps claims honest: an author's entry keeps its lowest seqs, and `upto`
        then claims only as far as what was sent. With `buckets`, only the authors of
        those summary buckets are looked at (and `peer_clock` need only cover them).
        """
        entries: list[AuthorDelta] = []
        budget = max_records
        top_seq = self._top_seq
        by_author = self._by_author
        authors: Iterable[NodeId] = (
            by_author if buckets is None else [a for b in buckets for a in self._bucket_authors[b]]
        )
        for author in authors:
            held = by_author.get(author)
            if held is None:
                continue
            if budget <= 0:
                break
            theirs = peer_clock.get(author, 0)
            if top_seq.get(author, 0) <= theirs:
                continue  # nothing of this author past what the peer claims: skip the scan
            mine = self._clock.get(author, 0)
            seqs = sorted(seq for seq in held if seq > theirs)
            if not seqs:
                continue
            upto = max(mine, theirs)
            if len(seqs) > budget:
                seqs = seqs[:budget]
                upto = min(upto, seqs[-1])
            budget -= len(seqs)
            entries.append(AuthorDelta(author, theirs, upto, [held[seq] for seq in seqs]))
        return entries

    def apply_delta(self, entries: Iterable[AuthorDelta], *, verified: bool = False) -> MergeResult:
        """Merge a peer's delta and adopt its clock claims where this store can back them.

        The records (each entry's own author's) merge like any others: they are signed. An
        entry's claim `upto` is only the sender's word, so it is adopted when the entry is
        well formed, continues this store's claim (`since <= claim < upto`), does not pass
        the highest seq of the author verified here, and every record it carries in the
        range is held here or superseded. A refused claim is counted (`claim_refusals`,
        and the result's `refused_claims`); the entry's records still merge and extend the
        claim over whatever they make contiguous. Cost: one more pass over each entry's
        records, next to the merge itself.
        """
        entries = list(entries)
        result = self.merge(
            (record for entry in entries for record in entry.records if record.author == entry.author),
            verified=verified,
        )
        refused = result.refused_claims
        top_seq = self._top_seq
        for entry in entries:
            author, since, upto = entry.author, entry.since, entry.upto
            refusal = self._malformed(entry)
            if refusal is not None:
                refused[refusal] += 1
                continue
            claimed = self._clock.get(author, 0)
            if since > claimed or upto <= claimed:
                continue  # nothing to adopt: crossed in flight, or does not meet our claim
            if not self.ledger.allows(author, upto):
                continue
            if upto > top_seq.get(author, 0):
                refused[ClaimRefusal.BEYOND_HELD] += 1
                continue
            complete = all(
                self._holds_or_supersedes(record) for record in entry.records if record.seq <= upto
            )
            if complete:
                self._set_clock(author, upto, result)
                self._extend_clock(author, result)
        if refused:
            self.claim_refusals.update(refused)
        return result

    @staticmethod
    def _malformed(entry: AuthorDelta) -> ClaimRefusal | None:
        """Why no honest `delta_for` could have built `entry`, or None when one could have."""
        author, since = entry.author, entry.since
        if since < 0 or entry.upto < since:
            return ClaimRefusal.BAD_RANGE
        for record in entry.records:
            if record.author != author:
                return ClaimRefusal.FOREIGN_RECORD
            if record.seq <= since:
                return ClaimRefusal.RECORD_BELOW_SINCE
        return None

    def _holds_or_supersedes(self, record: Record) -> bool:
        current = self._current.get(record.slot)
        if current is not None and (current.seq > record.seq or current.signature == record.signature):
            return True
        if self._is_fenced(record):
            return True
        # An equivocation this store resolved the other way still counts as seen.
        return record.seq in self._by_author.get(record.author, {})
