"""A node's erasure-coded shares on disk: received atomically, served verified, refused when full.

Layout under the store's root (the node passes `DATA_DIR/shares`):

    <artifact id hex>/<index>.share    held shares, exactly the files `kernels.artifact_codec` writes
    .incoming/<hex>.<index>.<uuid>.tmp shares being received
    .quarantine/<hex>.<index>.<ns>.share  shares that failed a check when read (the newest few, for a look)

Receiving (`begin` -> `IncomingShare`): the bytes go to a temporary file while a
`ShareVerifier` checks them against the share's root as they arrive, so a corrupt or
foreign share fails at the first wrong block rather than after the whole transfer.
`commit` checks the length, fsyncs, renames atomically into place and fsyncs the
directory: a share is either wholly held and checked or not there at all. Every failure
(corrupt bytes, a disk that fills up — ENOSPC becomes `ShareRefused("disk full")` —, an
exception in the caller's `with` block) removes the temporary file.

Refusing: before a transfer starts, `refusal(size)` says in one line why not: over the
volunteer's `--disk` limit (counting shares being received), the disk would be at or over
`disk_full_percent` (90 %, the guardrail of `kernels.guardrails`), or no room at all.

Reading (`read`, `read_block`, `verify`) checks every block it passes against the root
from the signed record; a share that fails is moved to quarantine, dropped from the
holdings and counted (`counters["corrupt_shares"]`), and the error re-raised, so the
node stops advertising it and the hub's checker repairs the artifact.

Restart: the holdings are whatever the directory holds, found by one scan at open (O(shares),
reading only names and sizes); leftover temporary files are removed then. Holdings live in
memory as a dict, so `has`/`path_of` are O(1). Methods are thread-safe (the node calls them
from worker threads); file IO happens outside the lock.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from kernels.artifact_codec import (
    HASH_BYTES,
    MAX_SHARES,
    ShareCorrupt,
    ShareHeader,
    ShareVerifier,
    iter_share_bytes,
    read_block,
    share_file_name,
    verify_share_file,
)

INCOMING_DIR = ".incoming"
QUARANTINE_DIR = ".quarantine"
QUARANTINE_KEEP = 4  # corrupt files kept for inspection; older ones are deleted
_ARTIFACT_DIR_RE = re.compile(r"^[0-9a-f]{64}$")
_SHARE_FILE_RE = re.compile(r"^(0|[1-9][0-9]{0,2})\.share$")
_DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}

DiskUsage = Callable[[Path], tuple[int, int, int]]  # (total, used, free) like shutil.disk_usage


class ShareRefused(Exception):
    """This node will not take the share; the message is the one-line reason."""


def _size(value: int) -> str:
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= scale:
            return f"{value / scale:.1f} {unit}"
    return f"{value} B"


def _check_ids(artifact_id: bytes, index: int) -> None:
    if len(artifact_id) != HASH_BYTES:
        raise ValueError("an artifact id is 32 bytes")
    if not 0 <= index < MAX_SHARES:
        raise ValueError(f"share index {index} outside [0, {MAX_SHARES})")


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem can; the rename is atomic regardless
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class ShareStore:
    """The shares this node holds, under `root`; see the module docstring."""

    def __init__(
        self,
        root: Path,
        *,
        limit_bytes: int | None = None,
        disk_full_percent: float = 90.0,
        disk_usage: DiskUsage = shutil.disk_usage,
    ) -> None:
        if not 0 < disk_full_percent <= 100:
            raise ValueError("disk_full_percent must be in (0, 100]")
        self.root = root
        self.limit_bytes = limit_bytes  # the volunteer's --disk; None: no limit but the disk's
        self.disk_full_percent = disk_full_percent
        self._disk_usage = disk_usage
        self.counters: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._held: dict[tuple[bytes, int], int] = {}  # (artifact id, index) -> file size
        self._reserved = 0  # announced sizes of shares being received
        self.incoming_dir = root / INCOMING_DIR
        self.quarantine_dir = root / QUARANTINE_DIR
        self.incoming_dir.mkdir(parents=True, exist_ok=True)
        self._scan()

    def _scan(self) -> None:
        for leftover in self.incoming_dir.iterdir():
            with contextlib.suppress(OSError):
                leftover.unlink()
                self.counters["incoming_removed_at_open"] += 1
        for folder in self.root.iterdir():
            if not folder.is_dir() or not _ARTIFACT_DIR_RE.match(folder.name):
                continue
            artifact_id = bytes.fromhex(folder.name)
            for path in folder.iterdir():
                found = _SHARE_FILE_RE.match(path.name)
                if found is None or int(found.group(1)) >= MAX_SHARES or not path.is_file():
                    continue
                self._held[(artifact_id, int(found.group(1)))] = path.stat().st_size
            with contextlib.suppress(OSError):
                folder.rmdir()  # only succeeds when empty

    # ---- what is held -------------------------------------------------------------------------------

    def path_of(self, artifact_id: bytes, index: int) -> Path | None:
        """The held share's file, None when this node does not hold it."""
        return self._path(artifact_id, index) if self.has(artifact_id, index) else None

    def _path(self, artifact_id: bytes, index: int) -> Path:
        return self.root / artifact_id.hex() / share_file_name(index)

    def has(self, artifact_id: bytes, index: int) -> bool:
        with self._lock:
            return (artifact_id, index) in self._held

    def holdings(self) -> list[tuple[bytes, int]]:
        with self._lock:
            return sorted(self._held)

    def used_bytes(self) -> int:
        """Bytes of the shares held (not counting shares still being received)."""
        with self._lock:
            return sum(self._held.values())

    def capacity(self) -> int:
        """What this node can offer in all: held bytes plus room left, within the limit and the disk rule."""
        total, used, _ = self._disk_usage(self.root)
        room = max(0, int(total * self.disk_full_percent / 100) - used)
        offered = self.used_bytes() + room
        return offered if self.limit_bytes is None else min(offered, self.limit_bytes)

    # ---- receiving ----------------------------------------------------------------------------------

    def refusal(self, size: int) -> str | None:
        """Why a share of `size` bytes would be refused (one line), or None when it would be taken."""
        with self._lock:
            return self._refusal(size)

    def _refusal(self, size: int) -> str | None:
        if self.limit_bytes is not None:
            if self.limit_bytes <= 0:
                return "this volunteer offers no disk"
            committed = sum(self._held.values()) + self._reserved
            if committed + size > self.limit_bytes:
                return (
                    f"over this volunteer's disk limit ({_size(self.limit_bytes)}; "
                    f"{_size(committed)} in use, share of {_size(size)})"
                )
        total, used, free = self._disk_usage(self.root)
        if total > 0 and (used + self._reserved + size) * 100 >= self.disk_full_percent * total:
            return (
                f"disk {self.root} is {used * 100 / total:.1f}% full and would reach the "
                f"{self.disk_full_percent:g}% limit with this share: refusing storage"
            )
        if size + self._reserved > free:
            return "disk full"
        return None

    def begin(self, artifact_id: bytes, index: int, root: bytes, size: int) -> IncomingShare:
        """Start receiving a share of `size` bytes; `ShareRefused` (with the reason) when it is not wanted."""
        _check_ids(artifact_id, index)
        if len(root) != HASH_BYTES or size <= 0:
            raise ValueError("a share has a 32-byte root and a positive size")
        with self._lock:
            reason = self._refusal(size)
            if reason is not None:
                self.counters["refused"] += 1
                raise ShareRefused(reason)
            self._reserved += size
        tmp = self.incoming_dir / f"{artifact_id.hex()}.{index}.{uuid.uuid4().hex}.tmp"
        try:
            file = open(tmp, "xb")  # noqa: SIM115 - IncomingShare closes it
        except OSError as exc:
            self._release(size)
            if exc.errno in _DISK_FULL_ERRNOS:
                raise ShareRefused("disk full") from exc
            raise
        return IncomingShare(self, artifact_id, index, root, size, tmp, file)

    def _release(self, size: int) -> None:
        with self._lock:
            self._reserved -= size

    def _install(self, incoming: IncomingShare) -> Path:
        """Move a completed, checked temporary file into place (called by `IncomingShare.commit`)."""
        folder = self.root / incoming.artifact_id.hex()
        created = not folder.exists()
        folder.mkdir(exist_ok=True)
        final = folder / share_file_name(incoming.index)
        os.replace(incoming.tmp, final)
        _fsync_dir(folder)
        if created:
            _fsync_dir(self.root)
        with self._lock:
            self._held[(incoming.artifact_id, incoming.index)] = incoming.size
        self.counters["stored"] += 1
        return final

    # ---- reading ------------------------------------------------------------------------------------

    def _held_path(self, artifact_id: bytes, index: int) -> Path:
        path = self.path_of(artifact_id, index)
        if path is None:
            raise FileNotFoundError(f"share {index} of {artifact_id.hex()} is not held here")
        return path

    def read(self, artifact_id: bytes, index: int, root: bytes, offset: int = 0) -> Iterator[bytes]:
        """The share's bytes from `offset`, every block checked (`FileNotFoundError` at once when not held).

        On `ShareCorrupt` the share is quarantined and counted before the error reaches the caller.
        """
        path = self._held_path(artifact_id, index)
        return self._read(artifact_id, index, iter_share_bytes(path, root, offset))

    def _read(self, artifact_id: bytes, index: int, pieces: Iterator[bytes]) -> Iterator[bytes]:
        try:
            yield from pieces
        except ShareCorrupt:
            self.quarantine(artifact_id, index)
            raise

    def read_block(self, artifact_id: bytes, index: int, root: bytes, chunk: int) -> tuple[bytes, bytes]:
        """(header bytes, checked block of `chunk`): an audit answer; quarantines the share when it fails."""
        path = self._held_path(artifact_id, index)
        try:
            return read_block(path, root, chunk)
        except ShareCorrupt:
            self.quarantine(artifact_id, index)
            raise

    def verify(self, artifact_id: bytes, index: int, root: bytes) -> ShareHeader:
        """Check the whole held share (a scrub); quarantines it when it fails."""
        path = self._held_path(artifact_id, index)
        try:
            return verify_share_file(path, root)
        except ShareCorrupt:
            self.quarantine(artifact_id, index)
            raise

    def quarantine(self, artifact_id: bytes, index: int) -> None:
        """Drop a share that failed a check: moved aside (the newest few are kept), no longer held."""
        with self._lock:
            if self._held.pop((artifact_id, index), None) is None:
                return
        self.counters["corrupt_shares"] += 1
        path = self._path(artifact_id, index)
        try:
            self.quarantine_dir.mkdir(exist_ok=True)
            os.replace(path, self.quarantine_dir / f"{artifact_id.hex()}.{index}.{time.time_ns()}.share")
            kept = sorted(self.quarantine_dir.iterdir(), key=lambda p: p.stat().st_mtime_ns, reverse=True)
            for old in kept[QUARANTINE_KEEP:]:
                old.unlink()
        except OSError:
            with contextlib.suppress(OSError):
                path.unlink()
        self._remove_empty(artifact_id)

    # ---- deleting -----------------------------------------------------------------------------------

    def delete_share(self, artifact_id: bytes, index: int) -> int:
        """Delete one held share; the bytes freed (0 when it was not held)."""
        with self._lock:
            size = self._held.pop((artifact_id, index), None)
        if size is None:
            return 0
        with contextlib.suppress(FileNotFoundError):
            self._path(artifact_id, index).unlink()
        self._remove_empty(artifact_id)
        return size

    def delete_artifact(self, artifact_id: bytes) -> int:
        """Delete every share of the artifact held here; the bytes freed."""
        with self._lock:
            indices = [index for held, index in self._held if held == artifact_id]
        return sum(self.delete_share(artifact_id, index) for index in indices)

    def _remove_empty(self, artifact_id: bytes) -> None:
        with contextlib.suppress(OSError):
            (self.root / artifact_id.hex()).rmdir()


class IncomingShare:
    """A share being received: `write` its bytes in order, then `commit`; a context manager that aborts.

    Leaving the `with` block without `commit` (by an exception or not) aborts: nothing partial stays.
    """

    def __init__(
        self,
        store: ShareStore,
        artifact_id: bytes,
        index: int,
        root: bytes,
        size: int,
        tmp: Path,
        file: BinaryIO,
    ) -> None:
        self.artifact_id = artifact_id
        self.index = index
        self.size = size
        self.tmp = tmp
        self.path: Path | None = None  # the final path once committed
        self._store = store
        self._file = file
        self._verifier = ShareVerifier(root, artifact_id=artifact_id, index=index, size=size)
        self._open = True

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._open:
            raise ValueError("this incoming share is already committed or aborted")
        try:
            self._verifier.feed(data)
            self._file.write(data)
        except BaseException as exc:
            self.abort()
            if isinstance(exc, OSError) and exc.errno in _DISK_FULL_ERRNOS:
                raise ShareRefused("disk full") from exc
            raise

    def commit(self) -> Path:
        """Check the share is complete, make it durable and put it in place; its final path."""
        if not self._open:
            raise ValueError("this incoming share is already committed or aborted")
        try:
            self._verifier.finish()
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self.path = self._store._install(self)
        except BaseException as exc:
            self.abort()
            if isinstance(exc, OSError) and exc.errno in _DISK_FULL_ERRNOS:
                raise ShareRefused("disk full") from exc
            raise
        self._open = False
        self._store._release(self.size)
        return self.path

    def abort(self) -> None:
        """Forget the share: the temporary file is removed. Does nothing once committed or aborted."""
        if not self._open:
            return
        self._open = False
        with contextlib.suppress(OSError):
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()
        self._store._release(self.size)

    def __enter__(self) -> IncomingShare:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.abort()
