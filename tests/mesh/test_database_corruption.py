"""A damaged database never loads silently: it is refused with one line, or its bad records
are quarantined, counted and fetched again from peers; a record that does not verify is
never served.

The database runs in WAL mode. At a clean close SQLite checkpoints the log into the main
file and deletes `-wal`; a node killed by SIGKILL or a power cut leaves its newest
transactions in `-wal`, so both files are corrupted here.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import sqlite3
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bootstrap.cli import main
from mesh.data_dir import DATABASE_FILE, KEY_FILE, DataDir, DataDirError
from mesh.keyfile import create_key_file
from mesh.record_database import DatabaseError, RecordDatabase
from protocols.records.record import Record, verify_record
from protocols.records.store import Outcome, RecordStore
from tests.support.mesh_fixtures import MeshFixture, make_mesh

REFUSALS = (DatabaseError, DataDirError)
"""What a refused start may raise: the CLI prints either as one `error:` line."""


def note_body(i: int) -> bytes:
    return f"note body {i:05d}|".encode() * 3  # unique in the file, so a test can find it


@dataclass
class Built:
    directory: DataDir
    mesh: MeshFixture
    records: list[Record]
    store: RecordStore
    """A healthy replica holding the same records: the peer to compare with and refetch from."""


def build(
    path: Path, notes: int = 24, seed: int = 7, *, keep_open: bool = False
) -> tuple[Built, RecordDatabase]:
    """A data directory whose node is the founder, holding the membership and `notes` notes."""
    mesh = make_mesh(members=3, seed=seed)
    rng = random.Random(seed)
    records = mesh.membership_records()
    for i in range(notes):
        records.append(mesh.next_record(rng.choice(mesh.everyone), "note", f"n{i}", note_body(i)))
    path.mkdir(parents=True)
    database = RecordDatabase(path / DATABASE_FILE)
    database.set_meta("mesh_id", mesh.mesh_id)
    store = RecordStore(mesh.mesh_id)
    database.save(store.merge(records))
    if not keep_open:
        database.close()
    create_key_file(path / KEY_FILE, mesh.founder)
    return Built(DataDir(path), mesh, records, store), database


def flip_every(path: Path, needle: bytes, at: int = 3) -> int:
    """Change one byte of every copy of `needle` in the file (a freed page may hold an old copy)."""
    data = bytearray(path.read_bytes())
    count, start = 0, 0
    while (found := data.find(needle, start)) >= 0:
        data[found + at] ^= 0x20
        count += 1
        start = found + 1
    path.write_bytes(bytes(data))
    return count


def load(directory: DataDir) -> tuple[RecordStore, RecordDatabase]:
    database = directory.open_database()
    return directory.load_store(database), database


def assert_one_line_naming(exc: BaseException, path: Path) -> None:
    message = str(exc)
    assert "\n" not in message and str(path) in message, message


def refetch(damaged: RecordStore, database: RecordDatabase, healthy: RecordStore) -> None:
    """One anti-entropy exchange from a healthy peer, persisted as the node would."""
    database.save(damaged.apply_delta(healthy.delta_for(damaged.clock())))


def test_one_changed_byte_in_a_body_is_quarantined_counted_and_fetched_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    built, _ = build(tmp_path / "node")
    founder = built.mesh.founder.node_id
    victim = next(r for r in built.records if r.kind == "note" and r.author != founder)
    assert not Path(f"{built.directory.database_file}-wal").exists()  # all of it in the main file
    assert flip_every(built.directory.database_file, victim.body) >= 1

    store, database = load(built.directory)
    assert store.get(victim.author, victim.kind, victim.key) is None  # not served
    assert all(verify_record(record) for record in store)
    assert len(store) == len(built.store) - 1
    assert store.state_digest() != built.store.state_digest()
    assert store.clock().get(victim.author, 0) < victim.seq <= built.store.clock()[victim.author]
    assert store.counters[Outcome.BAD_SIGNATURE] == 1
    assert database.quarantined_count() == 1
    assert database.record_count() == len(store)  # the live table holds exactly what is served
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "quarantined 1 damaged record" in warnings[0].getMessage()
    report = built.directory.load_checked(database)
    assert report.quarantined == 0  # the repair was persisted: a second load finds nothing
    assert report.store.state_digest() == store.state_digest() and report.store.clock() == store.clock()

    refetch(store, database, built.store)
    assert store.state_digest() == built.store.state_digest()
    assert store.clock() == built.store.clock()
    database.close()
    reloaded, database = load(built.directory)
    assert reloaded.state_digest() == built.store.state_digest() and reloaded.clock() == built.store.clock()
    assert database.quarantined_count() == 1
    database.close()


def test_damaged_rows_that_do_not_decode_are_quarantined_not_raised(tmp_path: Path) -> None:
    built, _ = build(tmp_path / "node")
    notes = [r for r in built.records if r.kind == "note"]
    with sqlite3.connect(built.directory.database_file) as raw:  # what a flipped type byte does
        raw.execute("UPDATE records SET key = CAST(x'ff6e' AS TEXT) WHERE key = ?", (notes[0].key,))
        raw.execute("UPDATE records SET seq = 'seven' WHERE key = ?", (notes[1].key,))
        raw.execute("UPDATE records SET body = CAST(body AS TEXT) WHERE key = ?", (notes[2].key,))
    raw.close()
    store, database = load(built.directory)
    assert {(r.author, r.key) for r in store} == {(r.author, r.key) for r in built.records} - {
        (r.author, r.key) for r in notes[:3]
    }
    assert database.quarantined_count() == 3
    database.close()


def test_damaged_clock_rows_are_dropped_or_capped_never_raised(tmp_path: Path) -> None:
    built, _ = build(tmp_path / "node")
    first, second = (member.node_id for member in built.mesh.members[:2])
    with sqlite3.connect(built.directory.database_file) as raw:
        raw.execute("UPDATE clock SET seq = seq + 1000 WHERE author = ?", (first,))
        raw.execute("UPDATE clock SET seq = 'many' WHERE author = ?", (second,))
    raw.close()
    store, database = load(built.directory)
    assert store.clock()[first] == built.store.clock()[first]  # capped at the highest seq held
    assert all(seq <= built.store.clock()[author] for author, seq in store.clock().items())
    database.close()


def test_this_nodes_own_damaged_records_never_lower_its_seqs(tmp_path: Path) -> None:
    """The seq allocator hands out `highest_seq + 1`: were a damaged record of this node's own
    its newest, the node would sign a second, different record with that seq (an
    equivocation), so that start is refused; an older one is quarantined and fetched again."""
    built, _ = build(tmp_path / "newest", notes=40)
    own = built.mesh.founder.node_id
    mine = [r for r in built.records if r.author == own and r.kind == "note"]
    newest, older = mine[-1], mine[0]
    assert newest.seq == built.store.highest_seq(own)
    flip_every(built.directory.database_file, newest.body)
    with pytest.raises(REFUSALS) as refused:
        load(built.directory)
    assert_one_line_naming(refused.value, built.directory.database_file)
    assert "own records" in str(refused.value)

    built, _ = build(tmp_path / "older", notes=40)
    flip_every(built.directory.database_file, older.body)
    store, database = load(built.directory)
    assert store.get(own, older.kind, older.key) is None
    assert store.highest_seq(own) == newest.seq
    assert store.clock()[own] < older.seq
    refetch(store, database, built.store)
    assert store.get(own, older.kind, older.key) == older
    assert store.clock() == built.store.clock()
    database.close()


def test_a_damaged_genesis_record_refuses_the_start(tmp_path: Path) -> None:
    built, _ = build(tmp_path / "node")
    assert flip_every(built.directory.database_file, b"test mesh") >= 1
    with pytest.raises(REFUSALS) as refused:
        load(built.directory)
    assert_one_line_naming(refused.value, built.directory.database_file)
    assert "genesis" in str(refused.value)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        # Still parses, with another type: only the comparison with this build's schema sees it.
        (b"kind TEXT NOT NULL", b"kind TEXU NOT NULL"),
        (b"kind TEXT NOT NULL", b"kind TE\xeaT NOT NULL"),
        # No longer parses: SQLite's error quotes the damaged bytes, which are not UTF-8.
        (b"PRIMARY KEY (author, kind, key)", b"PRIMARY KEY (author, kind, k\xeay)"),
    ],
)
def test_a_damaged_table_definition_refuses_the_start(tmp_path: Path, old: bytes, new: bytes) -> None:
    built, _ = build(tmp_path / "node")
    path = built.directory.database_file
    data = path.read_bytes()
    assert data.count(old) == 1
    path.write_bytes(data.replace(old, new))
    with pytest.raises(REFUSALS) as refused:
        load(built.directory)
    assert_one_line_naming(refused.value, path)


@dataclass
class Trials:
    refused: int = 0
    quarantined: int = 0
    clean: int = 0


def corrupt_and_load(
    template: Path, trial_dir: Path, target: str, rng: random.Random, originals: set[Record]
) -> tuple[str, RecordStore | None, int]:
    """Copy the node in `template`, change one random byte of file `target`, load it.

    Returns ("refused" | "loaded" | "other exception: ...", store, rows quarantined).
    """
    shutil.copytree(template, trial_dir)
    victim = trial_dir / target
    data = bytearray(victim.read_bytes())
    offset = rng.randrange(len(data))
    data[offset] ^= rng.randrange(1, 256)
    victim.write_bytes(bytes(data))
    directory = DataDir(trial_dir)
    database = None
    try:
        database = directory.open_database()
        store = directory.load_store(database)
        quarantined = database.quarantined_count()
    except REFUSALS as exc:
        message = str(exc)
        if "\n" in message or str(directory.database_file) not in message:
            return f"refusal that is not one line naming the file: {message!r}", None, 0
        return "refused", None, 0
    except Exception as exc:
        return f"other exception at offset {offset}: {type(exc).__name__}: {exc}", None, 0
    finally:
        if database is not None:
            database.close()
    bad = [record for record in store if record not in originals or not verify_record(record)]
    if bad:
        return f"served {len(bad)} record(s) not as signed (offset {offset})", store, quarantined
    return "loaded", store, quarantined


def run_trials(
    template: Path, work: Path, targets: list[str], trials: int, seed: int, originals: set[Record]
) -> Iterator[tuple[str, str, RecordStore | None, int]]:
    """(file damaged, outcome, store, rows quarantined) for each trial."""
    rng = random.Random(seed)
    for trial in range(trials):
        target = rng.choice(targets)
        yield target, *corrupt_and_load(template, work / f"t{trial}", target, rng, originals)


def account(outcomes: Trials, store: RecordStore, quarantined: int, originals: set[Record]) -> str | None:
    """Count a loaded trial; a failure message if rows vanished without being counted."""
    if len(store) + quarantined != len(originals):
        return f"{len(originals) - len(store)} records missing, {quarantined} quarantined"
    if quarantined:
        outcomes.quarantined += 1
    else:
        outcomes.clean += 1
    return None


def check_main_file_trials(tmp_path: Path, notes: int, trials: int, seed: int) -> Trials:
    built, _ = build(tmp_path / "template", notes=notes)
    originals = set(built.records)
    outcomes = Trials()
    failures = []
    for _, outcome, store, quarantined in run_trials(
        built.directory.path, tmp_path / "trials", [DATABASE_FILE], trials, seed, originals
    ):
        if outcome == "refused":
            outcomes.refused += 1
        elif outcome == "loaded" and store is not None:
            # Nothing vanishes unnoticed: every row is either served or counted in quarantine.
            if (failure := account(outcomes, store, quarantined, originals)) is not None:
                failures.append(failure)
        else:
            failures.append(outcome)
    assert not failures, f"{len(failures)} of {trials} trials: {failures[:5]}"
    return outcomes


def test_random_corruption_of_the_file_is_refused_or_quarantined(tmp_path: Path) -> None:
    outcomes = check_main_file_trials(tmp_path, notes=24, trials=240, seed=11)
    # Seeded: each kind of outcome occurs, so the test exercises all three paths.
    assert outcomes.refused and outcomes.quarantined and outcomes.clean, outcomes


@pytest.mark.slow
def test_random_corruption_of_a_bigger_file(tmp_path: Path) -> None:
    outcomes = check_main_file_trials(tmp_path, notes=400, trials=600, seed=12)
    assert outcomes.refused and outcomes.quarantined and outcomes.clean, outcomes


def test_random_corruption_of_the_write_ahead_log_loses_only_unacknowledged_state(tmp_path: Path) -> None:
    """A node killed with transactions still in `-wal`, whose log is then damaged at random.

    SQLite checksums every log frame and ends the log at the first bad one, so the node
    comes back at an older, consistent state (what peers then send again), never with a
    damaged record. A guard: the old loader passed this too, bar the quarantine counter.
    """
    built, database = build(tmp_path / "live", notes=12, keep_open=True)
    checkpointed = set(built.records)
    with sqlite3.connect(built.directory.database_file) as other:
        other.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    other.close()
    later = []
    for batch in range(4):
        records = [
            built.mesh.next_record(
                built.mesh.members[i % 3], "note", f"w{batch}-{i}", note_body(100 + 10 * batch + i)
            )
            for i in range(5)
        ]
        database.save(built.store.merge(records))
        later += records
    template = tmp_path / "template"
    template.mkdir()
    wal = f"{DATABASE_FILE}-wal"
    for name in (DATABASE_FILE, wal, KEY_FILE):  # as a crash leaves them
        shutil.copy2(built.directory.path / name, template / name)
    database.close()
    assert (template / wal).stat().st_size > 0
    originals = checkpointed | set(later)
    failures, shortened = [], 0
    for _, outcome, store, _ in run_trials(template, tmp_path / "trials", [wal], 100, 13, originals):
        if outcome == "loaded" and store is not None:
            if not checkpointed <= set(store):
                failures.append("lost checkpointed records")
            shortened += len(store) < len(originals)
        elif outcome != "refused":
            failures.append(outcome)
    assert not failures, f"{len(failures)} trials: {failures[:5]}"
    assert shortened  # some trials did cut the log short


def open_read_only(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    """Make `path` read-only for this process.

    chmod is enough for an ordinary user. Root ignores file modes, so there the test opens
    the file the way SQLite does when it cannot write it (`mode=ro`): SQLite then answers
    every write with SQLITE_READONLY, exactly as for a read-only file.
    """
    os.chmod(path, 0o444)
    if os.access(path, os.W_OK):
        connect = sqlite3.connect

        def read_only(database: str | os.PathLike[str], *args: Any, **kwargs: Any) -> sqlite3.Connection:
            if str(database) == str(path):
                return connect(
                    f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
                )
            connection: sqlite3.Connection = connect(database, *args, **kwargs)
            return connection

        monkeypatch.setattr(sqlite3, "connect", read_only)  # the module mesh.record_database uses


def test_a_read_only_database_is_refused_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built, _ = build(tmp_path / "node")
    open_read_only(monkeypatch, built.directory.database_file)
    with pytest.raises(DatabaseError) as refused:
        built.directory.open_database()
    assert_one_line_naming(refused.value, built.directory.database_file)
    assert "writable" in str(refused.value)


@pytest.mark.timeout(60)  # were the database accepted, the node would run until stopped
@pytest.mark.parametrize("damage", ["read-only", "table definition not text"])
def test_up_on_an_unusable_database_prints_one_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    restore_logging: None,
    damage: str,
) -> None:
    built, _ = build(tmp_path / "node")
    path = built.directory.database_file
    if damage == "read-only":
        open_read_only(monkeypatch, path)
    else:
        damaged = b"PRIMARY KEY (author, kind, k\xeay)"
        path.write_bytes(path.read_bytes().replace(b"PRIMARY KEY (author, kind, key)", damaged))
    monkeypatch.setattr(
        sys, "argv", ["ileices", "up", "--data-dir", str(built.directory.path), "--log-level", "error"]
    )
    with pytest.raises(SystemExit) as exited:
        main()  # the real entry point, which turns expected failures into one line
    assert exited.value.code == 1
    output = capsys.readouterr()
    lines = (output.out + output.err).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(path) in lines[0], lines
