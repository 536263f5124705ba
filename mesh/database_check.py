"""Loading a node's record store from its database without trusting a byte of the file.

The state digest fingerprints signatures and trusts that a held record's signature
matches its body. That holds only if every path into the store verifies, so restoring
from disk takes the network's path: a damaged database is either refused with one clear
line or repaired by quarantine, and a record that does not verify is never served.

Algorithm (`load_verified_store`):

1. `PRAGMA integrity_check` (`RecordDatabase.check_structure`): page-level damage
   (b-tree structure, free list, record headers, index contents) refuses the start with
   `DatabaseCorrupt`. With pages damaged, SQLite cannot say which rows are missing, so
   nothing is repaired.
2. Every row is decoded defensively (`RecordDatabase.read_rows`): storage types, UTF-8
   and the wire constraints of `Record`. Rows that fail are refused.
3. The decoded records go through `RecordStore.merge` with `verified=False`, the path a
   record from a peer takes: signature, mesh, admission chain, one record per slot. A
   record the store does not hold afterwards is refused (the counts by outcome land in
   `store.counters`, which `status` shows).
4. Without the genesis record nothing can be checked: a database with rows but no valid
   genesis (damaged, or a damaged mesh id) refuses the start.
5. Clock claims are recomputed so that anti-entropy fetches the refused records again:
   a claim `{author: seq}` says "I hold everything of `author` up to `seq`", and a peer
   sends only what is above the claim. An author with a refused row loses its stored
   claim (the store then claims only the complete prefix it holds), which makes every
   peer resend that author's current records above it; the duplicates among them cost
   a dictionary lookup each. The row's author and seq columns may themselves be the
   damaged bytes, which is why the whole claim goes and not just the claim above the
   stated seq; a refused row whose author is no admitted member is unattributable, and
   then every stored claim goes (one full resync). `RecordStore.restore` caps every
   other claim at the highest seq held for its author, so a damaged clock row can only
   lower a claim; one that does not decode is dropped and counted.
6. This node's own records need one more check: its seq allocator starts above
   `store.highest_seq(own)`, and signing a seq it already used is an equivocation. When
   a refused row is (or may be) its own, the load goes on only if a held record of its
   own keeps `highest_seq` at or above its old claim and every refused seq; otherwise
   (its newest record or its admission damaged) the start is refused. A claim cannot
   hold the floor up by itself: the store caps claims at the highest seq it holds.
7. Refused rows move to the `quarantine` table, and the live records and claims are
   rewritten to match the store, in one transaction (`RecordDatabase.quarantine`), so a
   restart does not meet them again. One warning is logged; `LoadReport.quarantined`
   and `RecordDatabase.quarantined_count()` count them.

Cost, measured on this project's shared 2-core test machine with 10 000 records of
300-byte bodies (a 5 MB file): opening (schema comparison, write probe) 0.4 ms;
`integrity_check` 6.3 ms (`quick_check` 5.6 ms: this schema has one small index, so the
full check costs almost nothing more); decoding 80-140 ms; signature verification
through `merge` 0.77 s, about 13 000 records/s (a PyNaCl Ed25519 verify takes 80-100 µs
here). The whole load takes 0.85 s, against 0.1 s when signatures were trusted. It
grows linearly, ~8 s per 100 000 records, and is paid once per start.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field

from mesh.record_database import RECOVERY_ADVICE, DatabaseCorrupt, RecordDatabase, RefusedRow
from protocols.common.identity import NodeId
from protocols.common.identity import verify as ed25519_verify
from protocols.records.record import Record, Verifier, verify_record
from protocols.records.store import RecordStore

log = logging.getLogger(__name__)


@dataclass
class LoadReport:
    """A store loaded from disk, and what loading it had to set aside."""

    store: RecordStore
    quarantined: int = 0
    """Rows moved to the quarantine table by this load (damaged or refused records)."""
    reasons: Counter[str] = field(default_factory=Counter)
    bad_clock_rows: int = 0
    lowered_claims: int = 0
    """Authors whose stored clock claim was dropped or lowered, so that peers resend."""
    seconds: float = 0.0


def load_verified_store(
    database: RecordDatabase,
    mesh_id: bytes,
    own: NodeId | None = None,
    verify: Verifier = ed25519_verify,
) -> LoadReport:
    """The store held in `database`, every record re-verified; damaged rows quarantined.

    `own` is this node's id (its newest seq must survive, see the module docstring).
    Raises `DatabaseError` (`DatabaseCorrupt` for damage) with a one-line message; never
    a raw `sqlite3` or decoding error.
    """
    started = time.perf_counter()
    path = database.path
    database.check_structure()
    rows = database.read_rows()
    store = RecordStore(mesh_id, verify)
    store.merge(rows.records)  # verified=False: exactly what a record from a peer goes through
    if rows.row_count and store.ledger.genesis is None:
        raise DatabaseCorrupt(
            f"{path}: the mesh's genesis record is missing or damaged (or the mesh id stored with it), "
            f"so none of its {rows.row_count} records can be checked; {RECOVERY_ADVICE}"
        )
    refused = list(rows.undecodable)
    refused += [
        RefusedRow.of(record, _reason(store, record, verify))
        for record in rows.records
        if store.get(record.author, record.kind, record.key) is not record
    ]
    claims, own_floor = _claims(rows.clock, store, refused, own)
    store.restore((), claims)
    if own is not None and store.highest_seq(own) < own_floor:
        raise DatabaseCorrupt(
            f"{path}: this node's own records up to seq {own_floor} did not load (damaged, or its "
            "admission is), and starting could sign a seq it already used, which peers treat as "
            f"equivocation; {RECOVERY_ADVICE}"
        )
    clock = store.clock()
    report = LoadReport(
        store,
        quarantined=len(refused),
        reasons=Counter(row.reason.split(":")[0] for row in refused),
        bad_clock_rows=rows.bad_clock_rows,
        lowered_claims=sum(1 for author, claim in rows.clock.items() if clock.get(author, 0) < claim),
    )
    if refused or clock != rows.clock:
        database.quarantine(list(store), refused, clock)
    if refused or rows.bad_clock_rows:
        why = ", ".join(f"{reason}: {count}" for reason, count in sorted(report.reasons.items()))
        log.warning(
            "%s: quarantined %d damaged record(s) (%s) and %d damaged clock row(s); they are not "
            "served, are kept in its quarantine table, and the claims of %d author(s) were lowered so that "
            "peers send their records again",
            path,
            len(refused),
            why or "none",
            rows.bad_clock_rows,
            report.lowered_claims,
        )
    report.seconds = time.perf_counter() - started
    log.debug("loaded %d records from %s in %.3f s", len(store), path, report.seconds)
    return report


def _reason(store: RecordStore, record: Record, verify: Verifier) -> str:
    """Why the store did not take a decodable record (for the quarantine table and the log)."""
    if not verify_record(record, verify):
        return "bad signature"
    if not store.ledger.allows(record.author, record.seq):
        return "not admitted"
    return "superseded: another row holds its slot"


def _claims(
    stored: dict[NodeId, int], store: RecordStore, refused: list[RefusedRow], own: NodeId | None
) -> tuple[dict[NodeId, int], int]:
    """The clock claims to restore, and the floor this node's own seqs must stay at or above
    (0 when none of the refused rows can be its own).

    Called with the records merged and no stored claim applied yet.
    """
    stated: dict[NodeId, int] = {}
    unattributed = False
    for row in refused:
        author = row.stated_author
        if author is None or author not in store.ledger.cutoffs:
            unattributed = True
        if author is not None:
            stated[author] = max(stated.get(author, 0), row.stated_seq or 0)
    # Kept claims need no capping here: `restore` cuts each to the highest seq held.
    claims = {author: claim for author, claim in stored.items() if not unattributed and author not in stated}
    floor = 0
    if own is not None and (unattributed or own in stated):
        floor = max(stored.get(own, 0), stated.get(own, 0))
    return claims, floor
