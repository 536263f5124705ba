"""Persistence: owner-only keys, `init` refusing twice, and nothing acknowledged lost to SIGKILL."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bootstrap.cli import app
from mesh.data_dir import DataDir, DataDirError, found_mesh
from mesh.database_check import load_verified_store
from mesh.keyfile import KeyFileError, create_key_file, load_key_file
from mesh.record_database import RecordDatabase
from protocols.common.identity import NodeIdentity
from protocols.records.store import RecordStore
from tests.support.mesh_fixtures import make_mesh, random_records
from tests.support.paths import REPO_ROOT, SUPPORT_DIR

WRITER = SUPPORT_DIR / "persistence_writer.py"


def test_key_file_is_owner_only_and_wider_permissions_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    identity = NodeIdentity.generate()
    create_key_file(path, identity)
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_key_file(path).node_id == identity.node_id
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_key_file(path)
    with pytest.raises(KeyFileError, match="refusing to overwrite"):
        create_key_file(path, NodeIdentity.generate())


def test_malformed_key_file_gets_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    path.write_text("not a key\n")
    os.chmod(path, 0o600)
    with pytest.raises(KeyFileError, match="not an Ileices node key"):
        load_key_file(path)


def test_init_prints_ids_and_refuses_a_second_time_changing_nothing(tmp_path: Path) -> None:
    runner = CliRunner()
    first = runner.invoke(app, ["init", "--data-dir", str(tmp_path / "n"), "--json"])
    assert first.exit_code == 0, first.output
    ids = json.loads(first.stdout)
    assert len(bytes.fromhex(ids["node_id"])) == 32 and len(bytes.fromhex(ids["mesh_id"])) == 32
    before = {p.name: p.read_bytes() for p in (tmp_path / "n").iterdir()}
    second = runner.invoke(app, ["init", "--data-dir", str(tmp_path / "n")])
    assert second.exit_code == 1
    assert "already holds a node" in second.output
    assert {p.name: p.read_bytes() for p in (tmp_path / "n").iterdir()} == before
    directory = DataDir(tmp_path / "n")
    database = directory.open_database()
    store = directory.load_store(database)
    assert store.mesh_id.hex() == ids["mesh_id"]
    assert store.ledger.founder == bytes.fromhex(ids["node_id"])


def test_records_clock_and_evidence_survive_reopening(tmp_path: Path) -> None:
    mesh = make_mesh(members=3, seed=21)
    records = mesh.membership_records() + random_records(mesh, 80, seed=22)
    store = RecordStore(mesh.mesh_id)
    database = RecordDatabase(tmp_path / "db.sqlite3")
    for i in range(0, len(records), 10):
        database.save(store.merge(records[i : i + 10]))
    database.close()
    reopened = RecordDatabase(tmp_path / "db.sqlite3")
    assert reopened.integrity_check() == "ok"
    report = load_verified_store(reopened, mesh.mesh_id)
    restored = report.store
    assert report.quarantined == 0 and reopened.quarantined_count() == 0
    assert restored.state_digest() == store.state_digest()
    assert restored.clock() == store.clock()


def test_sigkill_mid_stream_loses_nothing_acknowledged(tmp_path: Path) -> None:
    path = tmp_path / "node"
    founded = found_mesh(path)
    rng = random.Random(5)
    acknowledged = 1
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), *sys.path])}
    for _ in range(12):
        writer = subprocess.Popen(
            [sys.executable, str(WRITER), str(path)], stdout=subprocess.PIPE, text=True, env=env
        )
        assert writer.stdout is not None
        deadline = time.monotonic() + rng.uniform(0.05, 0.4)
        first = writer.stdout.readline()  # wait until it is writing, then kill at a random moment
        assert first.startswith("stored"), first
        acknowledged = max(acknowledged, int(first.split()[1]))
        while time.monotonic() < deadline:
            line = writer.stdout.readline()
            if line.startswith("stored"):
                acknowledged = max(acknowledged, int(line.split()[1]))
        os.kill(writer.pid, signal.SIGKILL)
        for line in writer.stdout:  # acknowledgements already in the pipe count too
            if line.startswith("stored"):
                acknowledged = max(acknowledged, int(line.split()[1]))
        writer.wait()
        directory = DataDir(path)
        database = directory.open_database()
        assert database.integrity_check() == "ok"
        report = directory.load_checked(database)
        database.close()
        assert report.quarantined == 0  # a crash leaves nothing to quarantine
        store = report.store
        assert store.clock()[founded.node_id] >= acknowledged
        for seq in range(max(2, acknowledged - 96), acknowledged + 1):
            record = store.get(founded.node_id, "note", f"k{seq % 97}")
            assert record is not None and record.seq >= seq
    assert acknowledged > 100


def test_a_directory_that_already_holds_a_node_is_refused(tmp_path: Path) -> None:
    found_mesh(tmp_path)
    with pytest.raises(DataDirError):
        found_mesh(tmp_path)
