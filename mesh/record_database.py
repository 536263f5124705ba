"""Durable storage of a node's records, clock claims and evidence in SQLite (WAL mode).

What a node acknowledges must survive SIGKILL and power loss, so every batch is one
transaction with `synchronous=FULL`; batching is what makes that fast (one fsync for
thousands of records) rather than relaxing durability.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path

from protocols.identity import NodeId
from protocols.record_store import MergeResult
from protocols.records import Record
from protocols.wire import encode

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    author BLOB NOT NULL, kind TEXT NOT NULL, key TEXT NOT NULL, seq INTEGER NOT NULL,
    mesh BLOB NOT NULL, body BLOB NOT NULL, signature BLOB NOT NULL,
    PRIMARY KEY (author, kind, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS clock (author BLOB PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS evidence (first BLOB NOT NULL, second BLOB NOT NULL);
"""


class DatabaseError(Exception):
    """The database cannot be opened, is corrupt, or is of an unknown schema version."""


class RecordDatabase:
    """One node's SQLite database. Not thread-safe: one owner (the persistence actor) uses it."""

    def __init__(self, path: Path, *, synchronous: str = "FULL") -> None:
        self.path = path
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous}")
            self._db.executescript(_SCHEMA)
            row = self._db.execute("SELECT value FROM meta WHERE name='schema'").fetchone()
            if row is None:
                self._db.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
            elif row[0] != SCHEMA_VERSION:
                raise DatabaseError(f"{path} has schema version {row[0]}; this build reads {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            raise DatabaseError(f"cannot open {path}: {exc}") from None

    def close(self) -> None:
        self._db.close()

    def integrity_check(self) -> str:
        """SQLite's own page-level check: 'ok' or the problems it found."""
        rows = self._db.execute("PRAGMA integrity_check").fetchall()
        return "\n".join(str(row[0]) for row in rows)

    def set_meta(self, name: str, value: bytes) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (name, value))

    def get_meta(self, name: str) -> bytes | None:
        row = self._db.execute("SELECT value FROM meta WHERE name=?", (name,)).fetchone()
        return None if row is None else bytes(row[0])

    def save(self, result: MergeResult, evidence: Iterable[tuple[Record, Record]] = ()) -> None:
        """Persist what one merge changed, atomically; returns once it is durable."""
        self.save_records(result.accepted, result.purged, result.clock_changes, evidence)

    def save_records(
        self,
        accepted: Iterable[Record],
        purged: Iterable[Record] = (),
        clock_changes: dict[NodeId, int] | None = None,
        evidence: Iterable[tuple[Record, Record]] = (),
    ) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(
                "DELETE FROM records WHERE author=? AND kind=? AND key=? AND seq=?",
                [(r.author, r.kind, r.key, r.seq) for r in purged],
            )
            db.executemany(
                "INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (author, kind, key) DO UPDATE SET seq=excluded.seq, mesh=excluded.mesh, "
                "body=excluded.body, signature=excluded.signature WHERE excluded.seq >= records.seq",
                [(r.author, r.kind, r.key, r.seq, r.mesh, r.body, r.signature) for r in accepted],
            )
            if clock_changes:
                db.executemany(
                    "INSERT OR REPLACE INTO clock VALUES (?, ?)",
                    [(a, s) for a, s in clock_changes.items() if s],
                )
                db.executemany(
                    "DELETE FROM clock WHERE author=?", [(a,) for a, s in clock_changes.items() if not s]
                )
            db.executemany(
                "INSERT INTO evidence VALUES (?, ?)",
                [(encode(a), encode(b)) for a, b in evidence],
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def load(self) -> tuple[list[Record], dict[NodeId, int]]:
        """Everything persisted: the records and the clock claims, to `RecordStore.restore`."""
        records = [
            Record(bytes(mesh), bytes(author), kind, key, seq, bytes(body), bytes(sig))
            for author, kind, key, seq, mesh, body, sig in self._db.execute(
                "SELECT author, kind, key, seq, mesh, body, signature FROM records"
            )
        ]
        clock = {bytes(a): s for a, s in self._db.execute("SELECT author, seq FROM clock")}
        return records, clock

    def record_count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM records").fetchone()[0])
