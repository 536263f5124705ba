"""A child process for the crash test: persists batches of records and reports each one durable.

Usage: python persistence_writer.py DATA_DIR. It prints `stored <seq>` only after the
transaction holding that record has committed; the parent SIGKILLs it at random moments.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mesh.data_dir import DataDir
from protocols.records.record import sign_record


def main() -> None:
    directory = DataDir(Path(sys.argv[1]))
    identity = directory.identity()
    database = directory.open_database()
    store = directory.load_store(database)
    seq = store.highest_seq(identity.node_id)
    while True:
        batch = []
        for _ in range(50):
            seq += 1
            batch.append(sign_record(identity, store.mesh_id, "note", f"k{seq % 97}", seq, b"x" * 100))
        result = store.merge(batch, verified=True)
        database.save(result)
        sys.stdout.write(f"stored {seq}\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
