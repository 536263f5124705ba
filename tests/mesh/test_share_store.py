"""The share store: atomic verified receipt, refusals (limit, 90 % disk, ENOSPC), restart, quarantine."""

from __future__ import annotations

import errno
import os
import random
from pathlib import Path
from typing import Any

import pytest

from kernels.artifact_codec import ArtifactLayout, ShareCorrupt, check_audit, encode_file
from mesh import share_store
from mesh.share_store import IncomingShare, ShareRefused, ShareStore

CHUNK = 64 * 1024
GIB = 1 << 30


class Artifact:
    """A small artifact encoded 2-of-3 into a folder: its layout and share files."""

    def __init__(self, folder: Path, size: int = 3 * CHUNK + 77, seed: int = 0) -> None:
        folder.mkdir(parents=True)
        source = folder / "source"
        source.write_bytes(random.Random(seed).randbytes(size))
        self.layout: ArtifactLayout = encode_file(source, folder, 2, 3, chunk_bytes=CHUNK)
        self.folder = folder

    @property
    def id(self) -> bytes:
        return self.layout.artifact_id

    def content(self, index: int) -> bytes:
        return (self.folder / f"{index}.share").read_bytes()

    def root(self, index: int) -> bytes:
        return self.layout.share_roots[index]

    def size(self, index: int) -> int:
        return self.layout.share_sizes[index]


@pytest.fixture
def artifact(tmp_path: Path) -> Artifact:
    return Artifact(tmp_path / "artifact")


def roomy(path: Path) -> tuple[int, int, int]:
    return 1000 * GIB, 100 * GIB, 900 * GIB


def new_store(tmp_path: Path, **options: Any) -> ShareStore:
    options.setdefault("disk_usage", roomy)
    return ShareStore(tmp_path / "data" / "shares", **options)


def put(store: ShareStore, artifact: Artifact, index: int, piece: int = 7777) -> Path:
    content = artifact.content(index)
    with store.begin(artifact.id, index, artifact.root(index), len(content)) as incoming:
        for start in range(0, len(content), piece):
            incoming.write(content[start : start + piece])
        return incoming.commit()


def leftovers(store: ShareStore) -> list[str]:
    return sorted(p.name for p in store.incoming_dir.iterdir())


def test_a_share_is_stored_and_read_back_verified(tmp_path: Path, artifact: Artifact) -> None:
    store = new_store(tmp_path)
    path = put(store, artifact, 1)
    assert path == store.root / artifact.id.hex() / "1.share" == store.path_of(artifact.id, 1)
    assert (
        store.has(artifact.id, 1) and not store.has(artifact.id, 0) and store.path_of(artifact.id, 0) is None
    )
    assert store.holdings() == [(artifact.id, 1)]
    assert store.used_bytes() == artifact.size(1)
    content = artifact.content(1)
    assert b"".join(store.read(artifact.id, 1, artifact.root(1))) == content
    assert b"".join(store.read(artifact.id, 1, artifact.root(1), 5000)) == content[5000:]
    header, block = store.read_block(artifact.id, 1, artifact.root(1), 2)
    assert check_audit(artifact.root(1), 2, header, block)
    assert store.verify(artifact.id, 1, artifact.root(1)).index == 1
    assert leftovers(store) == [] and store.counters["stored"] == 1


def test_reading_a_share_not_held_is_file_not_found(tmp_path: Path, artifact: Artifact) -> None:
    store = new_store(tmp_path)
    with pytest.raises(FileNotFoundError):
        store.read(artifact.id, 0, artifact.root(0))
    with pytest.raises(FileNotFoundError):
        store.read_block(artifact.id, 0, artifact.root(0), 0)


def test_refused_over_the_volunteer_limit_counting_shares_in_flight(
    tmp_path: Path, artifact: Artifact
) -> None:
    size = artifact.size(0)
    store = new_store(tmp_path, limit_bytes=2 * size + 10)
    put(store, artifact, 0)
    assert store.refusal(size) is None
    incoming = store.begin(artifact.id, 1, artifact.root(1), size)  # reserves its size
    reason = store.refusal(size)
    assert reason is not None and "disk limit" in reason and "\n" not in reason
    with pytest.raises(ShareRefused, match="disk limit"):
        store.begin(artifact.id, 2, artifact.root(2), size)
    incoming.abort()
    assert store.refusal(size) is None
    store.limit_bytes = 0
    assert store.refusal(1) == "this volunteer offers no disk"
    assert store.counters["refused"] == 1 and leftovers(store) == []


def test_refused_when_the_disk_would_reach_90_percent(tmp_path: Path, artifact: Artifact) -> None:
    usage = [1000 * GIB, 899 * GIB, 101 * GIB]
    store = new_store(tmp_path, disk_usage=lambda path: (usage[0], usage[1], usage[2]))
    assert store.refusal(artifact.size(0)) is None
    assert store.refusal(GIB - 1) is None
    reason = store.refusal(GIB)  # 900 of 1000 GiB: 90 %
    assert reason is not None and "90% limit" in reason and "89.9% full" in reason
    usage[1:] = [900 * GIB, 100 * GIB]
    assert store.refusal(0) is not None
    with pytest.raises(ShareRefused, match="90% limit"):
        store.begin(artifact.id, 0, artifact.root(0), artifact.size(0))
    assert not store.has(artifact.id, 0) and leftovers(store) == []
    custom = new_store(tmp_path / "other", disk_full_percent=95.0, disk_usage=lambda path: (100, 91, 9))
    assert custom.refusal(1) is None and custom.refusal(4) is not None


def test_refused_when_the_disk_has_no_room(tmp_path: Path, artifact: Artifact) -> None:
    store = new_store(
        tmp_path,
        disk_full_percent=100.0,
        disk_usage=lambda path: (10 * GIB, 5 * GIB, 100),  # the rest reserved for root
    )
    assert store.refusal(artifact.size(0)) == "disk full"


class FullDisk:
    """A file whose writes fail as on a full disk."""

    def __init__(self, real: Any) -> None:
        self.real = real

    def write(self, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def test_enospc_while_writing_is_a_refusal_and_leaves_nothing(tmp_path: Path, artifact: Artifact) -> None:
    store = new_store(tmp_path, limit_bytes=artifact.size(0) + 1)
    content = artifact.content(0)
    with store.begin(artifact.id, 0, artifact.root(0), len(content)) as incoming:
        incoming.write(content[:1000])
        incoming._file = FullDisk(incoming._file)  # type: ignore[assignment]
        with pytest.raises(ShareRefused, match="disk full"):
            incoming.write(content[1000:])
    assert leftovers(store) == [] and store.holdings() == []
    assert store.refusal(artifact.size(0)) is None  # the reservation was released


def test_enospc_at_commit_is_a_refusal_and_leaves_nothing(
    tmp_path: Path, artifact: Artifact, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = new_store(tmp_path)

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)  # the commit's fsync
    with pytest.raises(ShareRefused, match="disk full"):
        put(store, artifact, 0)
    assert leftovers(store) == [] and store.holdings() == []
    assert not (store.root / artifact.id.hex()).exists()


def test_a_really_full_disk_is_a_refusal(small_tmpfs: Path, tmp_path: Path) -> None:
    artifact = Artifact(tmp_path / "artifact", size=2 * CHUNK)
    store = ShareStore(small_tmpfs / "shares", disk_full_percent=100.0)
    incoming = store.begin(artifact.id, 0, artifact.root(0), artifact.size(0))
    # another program fills the disk meanwhile
    with open(small_tmpfs / "filler", "wb") as filler, pytest.raises(OSError):
        while True:
            filler.write(b"\0" * 65536)
            filler.flush()
    with pytest.raises(ShareRefused, match="disk full"), incoming:
        content = artifact.content(0)
        for start in range(0, len(content), 4096):
            incoming.write(content[start : start + 4096])
            os.fsync(incoming._file.fileno())
        incoming.commit()
    assert leftovers(store) == [] and store.holdings() == []


def test_corrupt_bytes_on_receipt_fail_early_and_leave_nothing(tmp_path: Path, artifact: Artifact) -> None:
    store = new_store(tmp_path)
    content = bytearray(artifact.content(2))
    content[len(content) // 3] ^= 0x40
    with pytest.raises(ShareCorrupt), store.begin(artifact.id, 2, artifact.root(2), len(content)) as incoming:
        incoming.write(content)
    assert leftovers(store) == [] and store.holdings() == []
    # a share offered under another index, or with a wrong announced size, is refused too
    for index, size in ((1, artifact.size(2)), (2, artifact.size(2) + 1)):
        with pytest.raises(ShareCorrupt), store.begin(artifact.id, index, artifact.root(2), size) as incoming:
            incoming.write(artifact.content(2))
            incoming.commit()
    assert leftovers(store) == [] and store.holdings() == []


def test_a_truncated_receipt_fails_at_commit(tmp_path: Path, artifact: Artifact) -> None:
    store = new_store(tmp_path)
    content = artifact.content(0)
    incoming = store.begin(artifact.id, 0, artifact.root(0), len(content))
    incoming.write(content[:-1])
    with pytest.raises(ShareCorrupt, match="truncated"):
        incoming.commit()
    assert leftovers(store) == [] and store.holdings() == []
    with pytest.raises(ValueError):
        incoming.write(b"x")


def test_leaving_the_block_without_commit_or_by_an_error_aborts(tmp_path: Path, artifact: Artifact) -> None:
    store = new_store(tmp_path)
    content = artifact.content(0)
    with store.begin(artifact.id, 0, artifact.root(0), len(content)) as incoming:
        incoming.write(content[:100])
    with pytest.raises(RuntimeError), store.begin(artifact.id, 0, artifact.root(0), len(content)) as incoming:
        incoming.write(content[:100])
        raise RuntimeError("the connection dropped")
    assert isinstance(incoming, IncomingShare) and incoming.path is None
    assert leftovers(store) == [] and store.holdings() == []
    assert store.refusal(0) is None


def test_a_restart_rescans_holdings_and_removes_leftover_tmp_files(
    tmp_path: Path, artifact: Artifact
) -> None:
    other = Artifact(tmp_path / "other", size=1000, seed=1)
    store = new_store(tmp_path)
    put(store, artifact, 0)
    put(store, artifact, 2)
    put(store, other, 1)
    half = store.begin(artifact.id, 1, artifact.root(1), artifact.size(1))
    half.write(artifact.content(1)[:5000])  # the node dies here
    (store.root / "notes.txt").write_text("not a share")
    (store.root / artifact.id.hex() / "junk.share").write_text("not a share either")
    (store.root / ("ab" * 32)).mkdir()  # an empty artifact folder from a crash
    assert len(leftovers(store)) == 1

    again = new_store(tmp_path)
    assert again.holdings() == store.holdings() == sorted([(artifact.id, 0), (artifact.id, 2), (other.id, 1)])
    assert again.used_bytes() == store.used_bytes()
    assert leftovers(again) == [] and again.counters["incoming_removed_at_open"] == 1
    assert not (again.root / ("ab" * 32)).exists()
    assert b"".join(again.read(other.id, 1, other.root(1))) == other.content(1)


@pytest.mark.parametrize("how", ["read", "read_from_offset", "read_block", "verify"])
def test_a_corrupt_share_is_quarantined_and_counted(tmp_path: Path, artifact: Artifact, how: str) -> None:
    store = new_store(tmp_path)
    path = put(store, artifact, 1)
    data = bytearray(path.read_bytes())
    data[-10] ^= 1  # in the last block
    path.write_bytes(bytes(data))
    root = artifact.root(1)
    with pytest.raises(ShareCorrupt):
        if how == "read":
            list(store.read(artifact.id, 1, root))
        elif how == "read_from_offset":
            list(store.read(artifact.id, 1, root, len(data) - 20))
        elif how == "read_block":
            store.read_block(artifact.id, 1, root, artifact.layout.chunk_count - 1)
        else:
            store.verify(artifact.id, 1, root)
    assert not store.has(artifact.id, 1) and store.used_bytes() == 0
    assert store.counters["corrupt_shares"] == 1
    assert not path.exists() and not path.parent.exists()
    assert [p.name.split(".")[:2] for p in store.quarantine_dir.iterdir()] == [[artifact.id.hex(), "1"]]
    assert new_store(tmp_path).holdings() == []  # quarantined shares are not holdings after a restart


def test_quarantine_keeps_only_the_newest_few(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    for seed in range(share_store.QUARANTINE_KEEP + 2):
        artifact = Artifact(tmp_path / f"a{seed}", size=500, seed=seed)
        put(store, artifact, 0)
        store.quarantine(artifact.id, 0)
    assert len(list(store.quarantine_dir.iterdir())) == share_store.QUARANTINE_KEEP
    assert store.counters["corrupt_shares"] == share_store.QUARANTINE_KEEP + 2 and store.holdings() == []


def test_delete_artifact_frees_its_bytes(tmp_path: Path, artifact: Artifact) -> None:
    other = Artifact(tmp_path / "other", size=1000, seed=1)
    store = new_store(tmp_path)
    for index in range(3):
        put(store, artifact, index)
    put(store, other, 0)
    before = store.used_bytes()
    assert store.delete_artifact(artifact.id) == sum(artifact.layout.share_sizes)
    assert store.used_bytes() == before - sum(artifact.layout.share_sizes) == other.size(0)
    assert store.holdings() == [(other.id, 0)] and not (store.root / artifact.id.hex()).exists()
    assert store.delete_artifact(artifact.id) == 0
    assert store.delete_share(other.id, 1) == 0
    assert store.delete_share(other.id, 0) == other.size(0) and store.used_bytes() == 0


def test_capacity_is_held_bytes_plus_room_within_the_limit(tmp_path: Path, artifact: Artifact) -> None:
    store = new_store(tmp_path, disk_usage=lambda path: (100 * GIB, 50 * GIB, 50 * GIB))
    put(store, artifact, 0)
    assert store.capacity() == artifact.size(0) + 40 * GIB
    store.limit_bytes = 5 * GIB
    assert store.capacity() == 5 * GIB


def test_bad_arguments_are_value_errors(tmp_path: Path, artifact: Artifact) -> None:
    store = new_store(tmp_path)
    with pytest.raises(ValueError):
        store.begin(b"short", 0, artifact.root(0), 10)
    with pytest.raises(ValueError):
        store.begin(artifact.id, 255, artifact.root(0), 10)
    with pytest.raises(ValueError):
        store.begin(artifact.id, 0, artifact.root(0), 0)
    with pytest.raises(ValueError):
        ShareStore(tmp_path / "x", disk_full_percent=0)
