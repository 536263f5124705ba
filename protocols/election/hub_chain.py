"""Which hub records a node believes: the chain of terms from term 1 or an anchor, each proven by the last.

Term 1 is the genesis founder's, signed by the founder. The hub record of term T > 1 is
believed only when it carries signed votes of a majority of the council of term T-1,
all accepting the same ballot and value for term T. Checking term T needs the believed
record of term T-1, so records that arrive ahead of their predecessor wait here until
the gap fills.

Where the chain starts. A node that has only the genesis verifies from term 1. A joiner
whose inviter gave it a checkpoint (`protocols.election.checkpoint`) starts from that
*anchor* instead: `adopt` sets it, the anchor's record is believed when it is offered
(through `offer`, or `load`, so the chain's owner learns of the term the way it learns
of any other), and records of earlier terms are history the chain ignores
(`hub_record_before_anchor`). An anchor never moves the chain back: one at or below the
newest believed term is stale, and refused if it contradicts a believed term.

Waiting records. Records from messages (`Decided`, a prepare's base) wait for at most
`MAX_PENDING_TERMS` future terms. Records the chain's store holds (every record the
store accepted reaches the chain through `offer`) always wait: they cost a reference,
and each is offered once. Before, they were dropped with the others past that bound, so
a late joiner whose anti-entropy brought the history author by author (a hub record's
author is the term's winner, so terms arrive interleaved) stalled for good once more
than `MAX_PENDING_TERMS` terms were ahead of a gap.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from protocols.common.identity import NodeId
from protocols.common.identity import verify as ed25519_verify
from protocols.common.wire import WireError
from protocols.election.checkpoint import Checkpoint, CheckpointOutcome, HubAnchor, check_checkpoint
from protocols.election.records import HUB, VOTE, HubBody, HubValue, hub_body, majority, vote_body
from protocols.records.admission import AdmissionLedger
from protocols.records.record import Record, Verifier, verify_record
from protocols.records.store import RecordStore

MAX_PENDING_TERMS = 256


@dataclass(frozen=True, slots=True)
class HubTerm:
    """One believed term: its hub, its council (the electorate of term + 1) and the record proving it."""

    term: int
    hub: NodeId
    council: tuple[NodeId, ...]
    lease_s: float
    value: HubValue
    record: Record


class HubChain:
    """The verified terms of one mesh, oldest first; offers that do not check out are dropped and counted."""

    def __init__(
        self,
        mesh_id: bytes,
        ledger: AdmissionLedger,
        verify: Verifier = ed25519_verify,
        anchor: HubAnchor | None = None,
    ) -> None:
        self.mesh_id = mesh_id
        self._ledger = ledger
        self._verify = verify
        self.terms: dict[int, HubTerm] = {}
        self.latest: HubTerm | None = None
        self.anchor: HubAnchor | None = None
        """The checked checkpoint this chain starts from (None: from term 1)."""
        self._pending: dict[int, list[Record]] = {}
        self._store: RecordStore | None = None
        """The store `load` read: records it holds may wait here without bound (see `_wait`)."""
        self.counters: Counter[str] = Counter()
        self.conflicts: list[tuple[Record, Record]] = []
        """Two believed records of one term with different values: a safety violation, kept as evidence."""
        if anchor is not None:
            self.adopt(anchor)

    # ---- anchors -----------------------------------------------------------------------------

    def adopt_checkpoint(
        self, checkpoint: Checkpoint, *, trusted_signer: NodeId, subject: NodeId
    ) -> CheckpointOutcome:
        """Check `checkpoint` (see `protocols.election.checkpoint`) and anchor at it if it holds.

        On `ADOPTED`, offer `self.anchor.record` to make its term believed.
        """
        checked = check_checkpoint(
            checkpoint,
            mesh_id=self.mesh_id,
            ledger=self._ledger,
            trusted_signer=trusted_signer,
            subject=subject,
            verify=self._verify,
        )
        if isinstance(checked, CheckpointOutcome):
            self.counters[f"checkpoint_{checked}"] += 1
            return checked
        return self.adopt(checked)

    def adopt(self, anchor: HubAnchor) -> CheckpointOutcome:
        """Start from `anchor` (already checked) unless this chain believes its term or later."""
        if self.latest is not None and self.latest.term >= anchor.term:
            known = self.terms.get(anchor.term)
            outcome = (
                CheckpointOutcome.CONFLICT
                if known is not None and known.value != anchor.body.value
                else CheckpointOutcome.STALE
            )
        elif self.anchor is not None and self.anchor.term >= anchor.term:
            outcome = CheckpointOutcome.STALE
        else:
            self.anchor = anchor
            for early in [term for term in self._pending if term < anchor.term]:
                del self._pending[early]
            outcome = CheckpointOutcome.ADOPTED
        self.counters[f"checkpoint_{outcome}"] += 1
        return outcome

    def _next_term(self) -> int:
        """The term this chain can believe next: the one after the newest, or the anchor's."""
        anchor = self.anchor
        if anchor is not None and (self.latest is None or self.latest.term < anchor.term):
            return anchor.term
        return 1 if self.latest is None else self.latest.term + 1

    # ---- offers ------------------------------------------------------------------------------

    def offer(self, record: Record) -> list[HubTerm]:
        """Take in a hub record; return the terms that became believed because of it, oldest first."""
        if record.kind != HUB or record.mesh != self.mesh_id:
            self.counters["hub_record_foreign"] += 1
            return []
        try:
            body = hub_body(record)
        except WireError:
            self.counters["hub_record_malformed"] += 1
            return []
        if body.term in self.terms:
            self._check_duplicate(record, body)
            return []
        next_term = self._next_term()
        if body.term > next_term:
            self._wait(body.term, record)
            return []
        if body.term < next_term:  # below the anchor: terms this chain starts after
            self.counters["hub_record_before_anchor"] += 1
            return []
        believed = self._believe(record, body)
        if believed is None:
            return []
        return [believed, *self._believe_waiting()]

    def load(self, store: RecordStore) -> list[HubTerm]:
        """Offer every hub record held in `store`, oldest term first (the anchor's record before them);
        the chain remembers `store` (see `_wait`)."""
        self._store = store
        added: list[HubTerm] = []
        if self.anchor is not None and self.anchor.term not in self.terms:
            added.extend(self.offer(self.anchor.record))
        for record in sorted(store.of_kind(HUB), key=lambda r: r.key):
            added.extend(self.offer(record))
        return added

    def _wait(self, term: int, record: Record) -> None:
        """Keep a record of a future term until the gap before it fills.

        Records the store holds cost only a reference here, so they always wait; others
        (from messages) wait while fewer than `MAX_PENDING_TERMS` terms do.
        """
        pending = self._pending
        if term in pending:
            pending[term].append(record)
        elif len(pending) < MAX_PENDING_TERMS or (self._store is not None and self._store.holds(record)):
            pending[term] = [record]
        else:
            self.counters["hub_record_pending_overflow"] += 1

    def _believe_waiting(self) -> list[HubTerm]:
        """Believe the waiting records that follow the newest term, as far as they reach."""
        added: list[HubTerm] = []
        while self.latest is not None and (waiting := self._pending.pop(self.latest.term + 1, None)):
            progressed = None
            for candidate in waiting:
                try:
                    candidate_body = hub_body(candidate)
                except WireError:  # pragma: no cover - pending records were decoded once already
                    continue
                if progressed is None:
                    progressed = self._believe(candidate, candidate_body)
                else:
                    self._check_duplicate(candidate, candidate_body)
            if progressed is None:
                break
            added.append(progressed)
        return added

    # ---- checking ----------------------------------------------------------------------------

    def check(self, record: Record, body: HubBody) -> bool:
        """True when `record` proves `body` from the believed term before it (or is the founder
        term 1, or this chain's anchor)."""
        anchor = self.anchor
        if anchor is not None and body.term == anchor.term:
            return record == anchor.record
        if not verify_record(record, self._verify):
            return False
        if body.term == 1:
            founder = self._ledger.founder
            return (
                founder is not None
                and record.author == founder
                and body.value.hub == founder
                and not body.proof
                and len(set(body.value.council)) == len(body.value.council)
            )
        previous = self.terms.get(body.term - 1)
        if previous is None or len(set(body.value.council)) != len(body.value.council):
            return False
        if body.ballot.number < 1:
            return False
        electorate = set(previous.council)
        voters: set[NodeId] = set()
        for vote in body.proof:
            if not self._valid_vote(vote, body, electorate) or vote.author in voters:
                self.counters["hub_proof_bad_vote"] += 1
                return False
            voters.add(vote.author)
        return len(voters) >= majority(len(previous.council))

    def _valid_vote(self, vote: Record, body: HubBody, electorate: set[NodeId]) -> bool:
        if vote.kind != VOTE or vote.mesh != self.mesh_id or vote.author not in electorate:
            return False
        try:
            cast = vote_body(vote)
        except WireError:
            return False
        return (
            cast.term == body.term
            and cast.accepted == body.ballot
            and cast.value == body.value
            and verify_record(vote, self._verify)
        )

    def _believe(self, record: Record, body: HubBody) -> HubTerm | None:
        if not self.check(record, body):
            self.counters["hub_record_rejected"] += 1
            return None
        believed = HubTerm(
            body.term, body.value.hub, tuple(body.value.council), body.value.lease_s, body.value, record
        )
        self.terms[body.term] = believed
        self.latest = believed
        self.counters["hub_terms_believed"] += 1
        for stale in [term for term in self._pending if term <= body.term]:
            del self._pending[stale]
        return believed

    def _check_duplicate(self, record: Record, body: HubBody) -> None:
        """A second record for a believed term: fine if it decides the same value, evidence if not."""
        known = self.terms[body.term]
        if known.record.signature == record.signature or body.value == known.value:
            return
        proven = self.check(record, body)
        if proven:
            self.counters["hub_conflicts"] += 1
            self.conflicts.append((known.record, record))


def verify_hub_record(record: Record, store: RecordStore) -> bool:
    """True when `record` is a hub record proven by the chain of hub records held in `store`.

    Stateless and O(terms): a node keeps a `HubChain` instead; this is for one-off checks.
    """
    try:
        body = hub_body(record)
    except WireError:
        return False
    if record.kind != HUB or record.mesh != store.mesh_id:
        return False
    chain = HubChain(store.mesh_id, store.ledger)
    for held in sorted(store.of_kind(HUB), key=lambda r: r.key):
        try:
            if hub_body(held).term >= body.term:
                continue
        except WireError:
            continue
        chain.offer(held)
    if body.term > 1 and (chain.latest is None or chain.latest.term != body.term - 1):
        return False
    return chain.check(record, body)
