"""The layout of a node's data directory, and founding a new mesh in one.

One directory holds everything a node is: its key, its database and its logs. Keeping
the layout in one place means `init`, `join`, `up` and `status` can never disagree
about where things live.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from mesh.database_check import LoadReport, load_verified_store
from mesh.keyfile import KeyFileError, create_key_file, load_key_file
from mesh.record_database import RECOVERY_ADVICE, DatabaseCorrupt, RecordDatabase
from protocols.common.identity import KEY_SIZE, NodeId, NodeIdentity
from protocols.records.admission_records import genesis_body, make_genesis
from protocols.records.store import RecordStore

KEY_FILE = "node.key"
DATABASE_FILE = "records.sqlite3"
LOG_DIR = "logs"


class DataDirError(Exception):
    """The data directory is missing, already initialised, or not usable."""


@dataclass(frozen=True)
class DataDir:
    path: Path

    @property
    def key_file(self) -> Path:
        return self.path / KEY_FILE

    @property
    def database_file(self) -> Path:
        return self.path / DATABASE_FILE

    @property
    def log_dir(self) -> Path:
        return self.path / LOG_DIR

    def is_initialised(self) -> bool:
        return self.key_file.exists() or self.database_file.exists()

    def identity(self) -> NodeIdentity:
        return load_key_file(self.key_file)

    def open_database(self) -> RecordDatabase:
        """The node's existing database; `DatabaseError` (one line) if it is unusable or read-only."""
        if not self.database_file.exists():
            raise DataDirError(f"{self.path} holds no node database; run `ileices init` first")
        return RecordDatabase(self.database_file, create=False)

    def mesh_id(self, database: RecordDatabase) -> bytes:
        value = database.get_meta("mesh_id")
        if value is None:
            raise DataDirError(
                f"{self.database_file} names no mesh; was `init` interrupted, or is the file damaged?"
            )
        if len(value) != KEY_SIZE:
            raise DatabaseCorrupt(f"{self.database_file} holds a damaged mesh id; {RECOVERY_ADVICE}")
        return value

    def load_store(self, database: RecordDatabase, own: NodeId | None = None) -> RecordStore:
        """The node's record store as it was when it last acknowledged anything, every record
        re-verified; damaged records are quarantined (see `mesh.database_check`)."""
        return self.load_checked(database, own).store

    def load_checked(self, database: RecordDatabase, own: NodeId | None = None) -> LoadReport:
        """`load_store` with its report: how many records were quarantined, and why.

        `own` defaults to the id in this directory's key file (None if it has none).
        """
        if own is None:
            try:
                own = self.identity().node_id
            except KeyFileError:
                own = None  # no usable key: this directory cannot sign, so no seq to protect
        return load_verified_store(database, self.mesh_id(database), own)

    def membership_problem(self, store: RecordStore) -> str | None:
        """Why this directory's key cannot run as a member of the mesh `store` describes, or None.

        `up` refuses rather than start a node that no member would talk to; the node checks
        it on the store it has just loaded (and verified), so nothing is read twice.
        """
        data_dir = self.path
        node_id = self.identity().node_id
        ledger = store.ledger
        if ledger.is_member(node_id):
            return None
        node, mesh = node_id.hex()[:16], store.mesh_id.hex()[:16]
        if ledger.genesis is None:
            return (
                f"{data_dir} never completed a join: it holds no records of mesh {mesh} yet, so node "
                f"{node} is not admitted; join with `ileices join TOKEN --data-dir {data_dir}` "
                "(this identity is kept)"
            )
        if node_id in ledger.revoked():
            return (
                f"node {node} was revoked from mesh {mesh}: no member accepts it any more; "
                "to take part again, ask a member for an invite and join with a new --data-dir"
            )
        return (
            f"the key {self.key_file} (node {node}) is not a member of mesh {mesh}, whose records "
            f"are in {data_dir}: the key belongs to another node or mesh, or its join never completed; "
            f"put back this directory's own key, or join with `ileices join TOKEN --data-dir {data_dir}`"
        )


@dataclass(frozen=True)
class FoundedMesh:
    node_id: bytes
    mesh_id: bytes
    name: str


def found_mesh(path: Path, name: str = "my mesh") -> FoundedMesh:
    """Create an identity and a new mesh (its genesis record) in an empty data directory.

    Refuses, changing nothing, when the directory already holds a node.
    """
    data_dir = DataDir(path)
    if data_dir.is_initialised():
        raise DataDirError(
            f"{path} already holds a node ({KEY_FILE} or {DATABASE_FILE} exists); "
            "refusing to overwrite it. Use another --data-dir."
        )
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    identity = NodeIdentity.generate()
    genesis = make_genesis(identity, name, time.time(), os.urandom(16))
    database = RecordDatabase(data_dir.database_file)
    try:
        database.set_meta("mesh_id", genesis.mesh)
        store = RecordStore(genesis.mesh)
        database.save(store.merge([genesis]))
    finally:
        database.close()
    create_key_file(data_dir.key_file, identity)
    return FoundedMesh(identity.node_id, genesis.mesh, genesis_body(genesis).name)


def prepare_joiner(path: Path, mesh_id: bytes) -> NodeIdentity:
    """Make `path` ready to join mesh `mesh_id`: a new identity and an empty database.

    A directory that already holds a node keeps its identity, if it belongs to the same mesh.
    """
    data_dir = DataDir(path)
    if data_dir.is_initialised():
        database = data_dir.open_database()
        try:
            existing = data_dir.mesh_id(database)
        finally:
            database.close()
        if existing != mesh_id:
            raise DataDirError(
                f"{path} holds a node of mesh {existing.hex()[:16]}, not {mesh_id.hex()[:16]}; "
                "use another --data-dir to join a different mesh"
            )
        return data_dir.identity()
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    identity = NodeIdentity.generate()
    database = RecordDatabase(data_dir.database_file)
    try:
        database.set_meta("mesh_id", mesh_id)
    finally:
        database.close()
    create_key_file(data_dir.key_file, identity)
    return identity
