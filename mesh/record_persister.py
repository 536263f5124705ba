"""The one owner of the node's database while it runs: every write and read goes through its lock.

SQLite calls block, so each runs in a worker thread (`trio.to_thread`); the lock keeps
them one at a time on the single connection, in the order the node asked. Records are
acknowledged (over the wire and to local callers) only after `save_records` returned,
which is what "nothing acknowledged is lost" rests on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import trio

from mesh.record_database import RecordDatabase
from protocols.common.identity import NodeId
from protocols.records.record import Record
from protocols.records.store import MergeResult


class RecordPersister:
    def __init__(self, database: RecordDatabase) -> None:
        self._database: RecordDatabase | None = database
        self._lock = trio.Lock()

    async def save_records(
        self, accepted: Sequence[Record], purged: Sequence[Record], clock: Mapping[NodeId, int]
    ) -> None:
        """Durably add `accepted`, delete `purged` and store clock claims, in one transaction."""
        async with self._lock:
            database = self._open()
            await trio.to_thread.run_sync(database.save_records, list(accepted), list(purged), dict(clock))

    async def save(self, result: MergeResult) -> None:
        """Durably apply a whole merge result (a join reply's records)."""
        async with self._lock:
            database = self._open()
            await trio.to_thread.run_sync(database.save, result)

    async def set_meta(self, name: str, value: bytes) -> None:
        async with self._lock:
            database = self._open()
            await trio.to_thread.run_sync(database.set_meta, name, value)

    async def get_meta(self, name: str) -> bytes | None:
        async with self._lock:
            database = self._open()
            return await trio.to_thread.run_sync(database.get_meta, name)

    def close(self) -> None:
        """Close the database; later calls raise instead of touching a closed connection."""
        if self._database is not None:
            self._database.close()
            self._database = None

    def _open(self) -> RecordDatabase:
        if self._database is None:
            raise trio.ClosedResourceError("the node's database is closed")
        return self._database
