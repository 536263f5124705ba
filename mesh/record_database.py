"""Durable storage of a node's records, clock claims and evidence in SQLite (WAL mode).

What a node acknowledges must survive SIGKILL and power loss, so every batch is one
transaction with `synchronous=FULL`; batching is what makes that fast (one fsync for
thousands of records) rather than relaxing durability.

Nothing read back is trusted. A disk, a backup tool or a person can change any byte of
the file, so this module only ever hands out what it could decode, and opening,
checking, reading and repairing fail with one exception type and a one-line message
(`DatabaseError`, which the CLI prints as `error: ...`), never a raw `sqlite3`,
`TypeError` or `UnicodeDecodeError`:

- Opening checks that the file is a database whose tables are exactly the ones this
  build creates (compared with `sqlite_master` of a reference built in memory, so a
  damaged `CREATE` text that still parses is caught too), that its schema version is
  known, and that it can be written: a read-only file is refused at once, naming the
  file, instead of failing later on the first save of a running node.
- `check_structure` runs SQLite's `PRAGMA integrity_check` (every page, b-tree
  structure and index contents; about 7 ms per 10k records, see `mesh/database_check.py`).
- `read_rows` decodes every row defensively: each column must have the storage type
  this module wrote, text must be UTF-8, and the values must pass the same wire
  constraints as a record from the network (`protocols.common.wire.decode`). Rows that do not
  are returned separately, raw, for quarantine. Signatures are not checked here: that
  is the record store's job, on the same path as records from the network
  (`mesh.database_check` does it for every load).
- `quarantine` moves refused rows to the `quarantine` table (kept for inspection, never
  served) and rewrites the live records and clock claims in one transaction.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from protocols.common.identity import KEY_SIZE, NodeId
from protocols.common.wire import WireError, decode, encode
from protocols.records.record import Record
from protocols.records.store import MergeResult

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
# Added after schema version 1 shipped; created on open when missing, which older builds ignore.
_QUARANTINE_SCHEMA = """
CREATE TABLE IF NOT EXISTS quarantine (
    author, kind, key, seq, mesh, body, signature, reason TEXT NOT NULL, at REAL NOT NULL
);
"""
_RECORD_COLUMNS = ("author", "kind", "key", "seq", "mesh", "body", "signature")
_RECORD_TYPES = (b"blob", b"text", b"text", b"integer", b"blob", b"blob", b"blob")  # typeof(), as read
_SELECT_RECORDS = (
    f"SELECT {', '.join(_RECORD_COLUMNS)}, {', '.join(f'typeof({c})' for c in _RECORD_COLUMNS)} FROM records"
)
_MAX_SEQ = 2**63 - 1

RECOVERY_ADVICE = (
    "restore the data directory from a backup, or move it aside and join the mesh again "
    "with a new invite (`ileices join TOKEN --data-dir NEW_DIR`)"
)


class DatabaseError(Exception):
    """The database cannot be opened or written, is corrupt, or is of an unknown schema version.

    The message is always one line that names the file and says what to do.
    """


class DatabaseCorrupt(DatabaseError):
    """The database's file or structure is damaged beyond what quarantining records can repair."""


def one_line(text: object) -> str:
    return " ".join(str(text).split())


SQLITE_FAILURES = (sqlite3.Error, UnicodeDecodeError)
"""What a call into `sqlite3` raises for a bad file. Python decodes SQLite's error messages
as UTF-8, and a message that quotes damaged bytes (a table name in `sqlite_master`)
arrives as `UnicodeDecodeError` instead of the `sqlite3.DatabaseError` it reports."""


def describe_sqlite_error(path: Path, exc: Exception, doing: str) -> DatabaseError:
    """The one-line `DatabaseError` for an `SQLITE_FAILURES` error met while `doing` something."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    detail = (
        "SQLite's error message quotes bytes that are not text"
        if isinstance(exc, UnicodeDecodeError)
        else one_line(exc)
    )
    if name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_AUTH")):
        return DatabaseError(
            f"cannot write {path} ({detail}): a node must be able to write its database and create "
            f"files next to it; make the file and its directory writable by this user "
            f"(e.g. chmod u+w {path} {path.parent}) or run the node as their owner"
        )
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return DatabaseError(
            f"{path} is locked by another process ({detail}); is another node running on it?"
        )
    if name.startswith("SQLITE_FULL"):
        return DatabaseError(f"cannot write {path}: the disk is full ({detail}); free some space and retry")
    if name.startswith("SQLITE_IOERR"):
        return DatabaseError(f"I/O error {doing} {path} ({detail}); check the disk, then retry")
    return DatabaseCorrupt(f"{path} is damaged ({detail}, while {doing} it); {RECOVERY_ADVICE}")


def _reference_schema() -> dict[str, tuple[str, str, str | None]]:
    """`sqlite_master` as this build creates it: name -> (type, table, sql)."""
    reference = sqlite3.connect(":memory:")
    try:
        reference.executescript(_SCHEMA + _QUARANTINE_SCHEMA)
        return {
            name: (kind, table, sql)
            for kind, name, table, sql in reference.execute(
                "SELECT type, name, tbl_name, sql FROM sqlite_master"
            )
        }
    finally:
        reference.close()


_REFERENCE = _reference_schema()


@dataclass(frozen=True)
class RefusedRow:
    """A stored row that is not loaded: its raw column values (as stored) and why."""

    values: tuple[object, ...]
    reason: str

    @property
    def stated_author(self) -> NodeId | None:
        """The author the row names, when that column at least has the shape of a node id."""
        author = self.values[0]
        return author if isinstance(author, bytes) and len(author) == KEY_SIZE else None

    @property
    def stated_seq(self) -> int | None:
        seq = self.values[3]
        return seq if isinstance(seq, int) and 1 <= seq <= _MAX_SEQ else None

    @staticmethod
    def of(record: Record, reason: str) -> RefusedRow:
        return RefusedRow(
            (record.author, record.kind, record.key, record.seq, record.mesh, record.body, record.signature),
            reason,
        )


@dataclass
class StoredRows:
    """What `read_rows` found: decodable records (signatures not yet checked) and the rest."""

    records: list[Record] = field(default_factory=list)
    undecodable: list[RefusedRow] = field(default_factory=list)
    clock: dict[NodeId, int] = field(default_factory=dict)
    bad_clock_rows: int = 0

    @property
    def row_count(self) -> int:
        return len(self.records) + len(self.undecodable)


def _decode_record(values: tuple[object, ...], types: tuple[object, ...]) -> Record:
    """A stored row as a `Record`, by the wire's own rules; `WireError` when it is not one."""
    for column, stored, expected in zip(_RECORD_COLUMNS, types, _RECORD_TYPES, strict=True):
        if stored != expected:
            shown = stored.decode("ascii", "replace") if isinstance(stored, bytes) else stored
            raise WireError(f"{column} stored as {shown}, not {expected.decode()}")
    author, kind, key, seq, mesh, body, signature = values
    if not isinstance(kind, bytes) or not isinstance(key, bytes):  # text_factory=bytes while reading
        raise WireError("kind or key is not text")
    try:
        text_kind, text_key = kind.decode("utf-8"), key.decode("utf-8")
    except UnicodeDecodeError:
        raise WireError("kind or key is not UTF-8") from None
    return decode(encode((mesh, author, text_kind, text_key, seq, body, signature)), Record)


class RecordDatabase:
    """One node's SQLite database. Not thread-safe: one owner (the persistence actor) uses it.

    `create=False` opens an existing node database and refuses a missing file or table
    (a data directory's `open_database`); `create=True` also makes a new one.
    """

    def __init__(self, path: Path, *, synchronous: str = "FULL", create: bool = True) -> None:
        self.path = path
        if not create and not path.is_file():
            raise DatabaseError(f"{path} does not exist or is not a file")
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except SQLITE_FAILURES as exc:
            raise describe_sqlite_error(path, exc, "opening") from None
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous}")
            self._check_schema(create)
            # A write that changes nothing: fails now, naming the file, if the file or its
            # directory is read-only (instead of on the first save of a running node).
            self._db.execute("UPDATE meta SET value=value WHERE 0")
            row = self._db.execute("SELECT value FROM meta WHERE name='schema'").fetchone()
            if row is None:
                self._db.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
            elif row[0] != SCHEMA_VERSION:
                raise DatabaseError(
                    f"{path} has schema version {one_line(row[0])[:40]}; this build reads {SCHEMA_VERSION}"
                )
        except SQLITE_FAILURES as exc:
            self._db.close()
            raise describe_sqlite_error(path, exc, "opening") from None
        except DatabaseError:
            self._db.close()
            raise

    def _check_schema(self, create: bool) -> None:
        self._db.text_factory = bytes  # a damaged name or CREATE text need not be UTF-8
        try:
            found = {
                bytes(name).decode("utf-8", "replace"): (
                    bytes(kind).decode("utf-8", "replace"),
                    bytes(table).decode("utf-8", "replace"),
                    None if sql is None else bytes(sql).decode("utf-8", "replace"),
                )
                for kind, name, table, sql in self._db.execute(
                    "SELECT type, name, tbl_name, sql FROM sqlite_master"
                )
            }
        finally:
            self._db.text_factory = str
        missing = [name for name in _REFERENCE if name not in found]
        if missing and not create and not set(missing) <= {"quarantine"}:
            raise DatabaseCorrupt(
                f"{self.path} lacks the table(s) {', '.join(sorted(missing))} of a node database; "
                f"{RECOVERY_ADVICE}"
            )
        damaged = [name for name, entry in _REFERENCE.items() if name in found and found[name] != entry]
        if damaged:
            raise DatabaseCorrupt(
                f"{self.path} has damaged or foreign definitions of {', '.join(sorted(damaged))}; "
                f"{RECOVERY_ADVICE}"
            )
        if missing:
            self._db.executescript(_SCHEMA + _QUARANTINE_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def integrity_check(self) -> str:
        """SQLite's own full check (pages, indexes, constraints): 'ok' or the problems it found."""
        rows = self._db.execute("PRAGMA integrity_check").fetchall()
        return "\n".join(str(row[0]) for row in rows)

    def check_structure(self) -> None:
        """Refuse (`DatabaseCorrupt`) a file in which SQLite's `integrity_check` finds damage.

        It walks every page (b-tree structure, free list, record headers, NOT NULL) and
        compares index contents with their tables. `quick_check` skips only the latter,
        which this schema barely has (one small index), so it saves about a fifth of a
        few milliseconds per 10k records; the full check is worth that.
        """
        try:
            self._db.text_factory = bytes
            try:
                found = self._db.execute("PRAGMA integrity_check").fetchall()
            finally:
                self._db.text_factory = str
        except SQLITE_FAILURES as exc:
            raise describe_sqlite_error(self.path, exc, "checking") from None
        problems = [bytes(row[0]).decode("utf-8", "replace") for row in found]
        if problems != ["ok"]:
            more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
            raise DatabaseCorrupt(
                f"{self.path} is damaged (SQLite integrity_check: {one_line(problems[0])[:200]}{more}); "
                f"{RECOVERY_ADVICE}"
            )

    def set_meta(self, name: str, value: bytes) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (name, value))

    def get_meta(self, name: str) -> bytes | None:
        """The value stored under `name`; None when there is none, or it is not the blob written."""
        try:
            row = self._db.execute(
                "SELECT value FROM meta WHERE name=? AND typeof(value)='blob'", (name,)
            ).fetchone()
        except SQLITE_FAILURES as exc:
            raise describe_sqlite_error(self.path, exc, "reading") from None
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

    def read_rows(self) -> StoredRows:
        """Every stored record and clock claim that decodes; the rows that do not, raw.

        The records' signatures are NOT checked here: never put them in a store without
        `mesh.database_check.load_verified_store` (or a `RecordStore.merge` that verifies).
        """
        rows = StoredRows()
        db = self._db
        db.text_factory = bytes  # text that is not UTF-8 is a damaged row, not an exception
        try:
            for row in db.execute(_SELECT_RECORDS):
                values, types = tuple(row[:7]), tuple(row[7:])
                try:
                    rows.records.append(_decode_record(values, types))
                except WireError as exc:
                    rows.undecodable.append(RefusedRow(values, f"undecodable: {one_line(exc)[:160]}"))
            for author, seq in db.execute("SELECT author, seq FROM clock"):
                if (
                    isinstance(author, bytes)
                    and len(author) == KEY_SIZE
                    and isinstance(seq, int)
                    and 0 < seq <= _MAX_SEQ
                ):
                    rows.clock[author] = seq
                else:
                    rows.bad_clock_rows += 1
        except SQLITE_FAILURES as exc:
            raise describe_sqlite_error(self.path, exc, "reading") from None
        finally:
            db.text_factory = str
        return rows

    def quarantine(
        self, kept: Iterable[Record], refused: Iterable[RefusedRow], clock: Mapping[NodeId, int]
    ) -> None:
        """Atomically: move `refused` rows to the quarantine table, make `kept` the live records
        and `clock` the claims. The live table is rewritten from `kept` (not deleted from by
        key), so a row whose key columns are damaged goes too."""
        db = self._db
        refused = list(refused)
        try:
            db.execute("BEGIN IMMEDIATE")
        except SQLITE_FAILURES as exc:
            raise describe_sqlite_error(self.path, exc, "repairing") from None
        try:
            try:
                if refused:
                    now = time.time()
                    db.executemany(
                        "INSERT INTO quarantine VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [(*row.values, row.reason, now) for row in refused],
                    )
                    db.execute("DELETE FROM records")
                    db.executemany(
                        "INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?)",
                        [(r.author, r.kind, r.key, r.seq, r.mesh, r.body, r.signature) for r in kept],
                    )
                db.execute("DELETE FROM clock")
                db.executemany("INSERT INTO clock VALUES (?, ?)", [(a, s) for a, s in clock.items() if s])
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        except SQLITE_FAILURES as exc:
            raise describe_sqlite_error(self.path, exc, "repairing") from None

    def quarantined_count(self) -> int:
        """How many damaged rows this database has set aside, over its whole life."""
        return int(self._db.execute("SELECT count(*) FROM quarantine").fetchone()[0])

    def record_count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM records").fetchone()[0])
