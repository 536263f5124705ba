"""Artifacts as erasure-coded shares: the codec (files in, files out; no network, bounded memory).

An artifact is any file a member stores in the mesh. It is cut into chunks of
`CHUNK_BYTES` (3 MiB; the last may be shorter: 3 rather than 4 MiB so that an audit's
answer, one whole block and the header, fits one 4 MiB message even when k = 1) and each
chunk goes through one pipeline:

1. `plain_hash = BLAKE3(chunk)`;
2. zstd at level 3; if that is not smaller, the chunk is stored raw (`compressed=False`),
   and so is a chunk whose three 32 KiB samples do not shrink (a probe costing ~3 % of
   compressing it: random, media and encrypted data skip zstd's ~1 ms per MiB);
3. the stored bytes, zero-padded to a multiple of k, are Reed-Solomon coded k-of-n with
   zfec into n blocks of `ceil(stored / k)` bytes: any k blocks rebuild the chunk;
4. block i goes into share i, and share i's header records `BLAKE3(block)` for it.

Share file i is written in one pass, header first, with no copy of the artifact held:

    b"ILSHARE1" | u32 header_len | u32 reserved_len | header, zero-padded to reserved_len | blocks 0..C-1

`reserved_len` is an exact upper bound on the header's encoding computed from the chunk
count alone (known from the file size before encoding), so the encoder streams the blocks
after the reserved space and then seeks back to write the header. The header is a
canonical MessagePack struct (`ShareHeader`); the share's *root* is `BLAKE3(header)`. The
signed artifact record carries the n roots, so one 32-byte value authenticates a whole
share: the header by its hash, every block by the hash the header lists, the padding by
being all zeros, and the length by the header. Receivers verify incrementally
(`ShareVerifier`) as bytes arrive; readers verify every block they pass over; an auditor
checks one block against the root with the header alone (`check_audit`).

Artifact id = BLAKE3-256 of the plain content. BLAKE3 rather than SHA-256: it runs at
several GB/s on one core (hashlib's SHA-256 does 0.5-1 GB/s) and every byte here is
hashed about three times (chunk, whole artifact, blocks), so the hash must be far cheaper
than the coding it protects. Chunks are hashed separately so a decoder can tell *which*
chunk went wrong and so memory stays O(chunk).

Cost per chunk of L bytes: two BLAKE3 passes over L, one zstd pass over L, zfec producing
n-k parity blocks (about (n-k) * L multiply-adds in GF(256)) and BLAKE3 over the n blocks
(n/k * L). zfec dominates on incompressible data and zstd on text: on one core of the
2-core dev VM zfec 3-of-10 alone did 70-230 MB/s and zstd level 3 on text 90-300 MB/s (the
VM is shared and noisy); BLAKE3 (~3.5 GB/s) adds 10-30 % on top of bare zstd + zfec
(`bench/storage_codec_bench.py`). Memory: a few chunks (the read buffer, the stored bytes,
the n blocks), never the file: ~30 MiB above the interpreter's (measured with 4 MiB
chunks), for 64 MB and 2 GB files alike; the header is O(chunk count) (at most 88 bytes per chunk).

Decoding reads k blocks per chunk, primary blocks (index < k) first because zfec then
only copies; a block failing its hash marks its share bad and the next share is tried.
Each decoded chunk is checked against its `plain_hash` and the whole output against the
artifact id, so even a malicious encoder (consistent hashes, inconsistent codewords) is
caught. Rebuilding missing shares decodes the same way and re-encodes only the wanted
block numbers; zfec and zstd output are deterministic and the header encoding is
canonical, so a rebuilt share is byte-identical to the original and is checked against
its root before it is kept.

The `ShareHeader` / `ChunkEntry` structs use exactly the options of
`protocols.common.wire.WireStruct` (array-like, frozen, canonical) but derive from
`msgspec.Struct` directly: kernels sit below protocols and may not import them.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, NamedTuple

import msgspec
import zfec
import zstandard
from blake3 import blake3

CHUNK_BYTES = 3 * 1024 * 1024
MAX_CHUNK_BYTES = 64 * 1024 * 1024  # bound on what a (possibly hostile) header may make a reader hold
MAX_SHARES = 255  # n <= 255: the artifact record's bound (zfec itself allows 256)
MAGIC = b"ILSHARE1"
HASH_BYTES = 32
DEFAULT_LEVEL = 3
READ_PIECE = 1024 * 1024
PROBE_FROM = 512 * 1024
"""Chunks at least this long are probed before zstd runs on them whole (`ChunkEncoder`)."""
PROBE_BYTES = 32 * 1024
PROBE_GAIN = 0.97
"""Samples that do not shrink below this fraction mark the chunk incompressible."""

_PREFIX = struct.Struct("<8sII")
PREFIX_BYTES = _PREFIX.size  # 16
# Upper bounds on the MessagePack encoding of a ShareHeader: array header (1), artifact_id (bin8: 2+32),
# five ints (<= 9 each), two array headers (<= 5 each); per chunk: entry array header (1), two ints
# (<= 9 each), bool (1), plain_hash (2+32), and this share's block hash (2+32).
_HEADER_FIXED_BYTES = 1 + (2 + HASH_BYTES) + 5 * 9 + 2 * 5
_HEADER_PER_CHUNK_BYTES = (1 + 9 + 9 + 1 + 2 + HASH_BYTES) + (2 + HASH_BYTES)
MAX_HEADER_BYTES = 64 * 1024 * 1024  # ~760k chunks: ~2 TB at 3 MiB chunks

Bytes = bytes | bytearray | memoryview


class ShareCorrupt(Exception):
    """A share (or a set of shares) that fails verification; `index` and `chunk` say where, when known."""

    def __init__(self, message: str, *, index: int | None = None, chunk: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.index = index
        self.chunk = chunk


class NotEnoughShares(ShareCorrupt):
    """Fewer than k good shares remain for some chunk; `bad` lists the shares found bad so far."""

    def __init__(self, message: str, *, chunk: int | None = None, bad: Iterable[int] = ()) -> None:
        super().__init__(message, chunk=chunk)
        self.bad = frozenset(bad)


class _CodecStruct(msgspec.Struct, frozen=True, array_like=True, forbid_unknown_fields=True, gc=False):
    """The options of `protocols.common.wire.WireStruct` (see the module docstring for why not it)."""


class ChunkEntry(_CodecStruct, frozen=True):
    plain_size: int
    stored_size: int
    compressed: bool
    plain_hash: bytes


class ShareHeader(_CodecStruct, frozen=True):
    artifact_id: bytes
    index: int
    k: int
    n: int
    size: int  # plain total
    chunk_bytes: int
    chunks: list[ChunkEntry]
    block_hashes: list[bytes]  # this share's block hash for each chunk


_header_encoder = msgspec.msgpack.Encoder()
_header_decoder = msgspec.msgpack.Decoder(ShareHeader)


@dataclass(frozen=True)
class ArtifactLayout:
    """What the signed artifact record needs to know about an encoded artifact."""

    artifact_id: bytes
    size: int
    k: int
    n: int
    chunk_bytes: int
    chunk_count: int
    share_roots: tuple[bytes, ...]
    share_sizes: tuple[int, ...]


class EncodedChunk(NamedTuple):
    """One chunk through the pipeline. `blocks` may be views of the input buffer (raw chunks)."""

    entry: ChunkEntry
    blocks: list[Bytes]
    block_hashes: list[bytes]


def chunk_count(size: int, chunk_bytes: int) -> int:
    return -(-size // chunk_bytes)


def reserved_header_len(chunks: int) -> int:
    """The header space of a share of `chunks` chunks: an upper bound on any such header's encoding."""
    return _HEADER_FIXED_BYTES + _HEADER_PER_CHUNK_BYTES * chunks


def block_size(stored_size: int, k: int) -> int:
    return -(-stored_size // k)


def header_root(header_bytes: Bytes) -> bytes:
    return blake3(header_bytes).digest()


def encode_header(header: ShareHeader) -> bytes:
    """The canonical encoding of a header: the bytes the share root is the hash of."""
    return _header_encoder.encode(header)


def share_file_name(index: int) -> str:
    return f"{index}.share"


def _check_parameters(k: int, n: int) -> None:
    if not 1 <= n <= MAX_SHARES:
        raise ValueError(f"n must be in [1, {MAX_SHARES}], got {n}")
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, n={n}], got {k}")


class ChunkEncoder:
    """Steps 1-4 for one chunk at a time, reusing the zstd context and zfec tables across chunks."""

    def __init__(self, k: int, n: int, level: int = DEFAULT_LEVEL) -> None:
        _check_parameters(k, n)
        self.k = k
        self.n = n
        self._zstd = zstandard.ZstdCompressor(level=level)
        self._fec = zfec.Encoder(k, n)

    def _worth_compressing(self, chunk: Bytes) -> bool:
        """False when three samples of the chunk (start, middle, end) do not shrink: compressed
        media, archives and ciphertext, where compressing the whole chunk would cost ~1 ms per
        MiB for nothing. A chunk mixing both loses only its own compression."""
        if len(chunk) < PROBE_FROM:
            return True
        middle = len(chunk) // 2
        view = memoryview(chunk)
        sample = b"".join(
            (view[:PROBE_BYTES], view[middle : middle + PROBE_BYTES], view[len(chunk) - PROBE_BYTES :])
        )
        return len(self._zstd.compress(sample)) < PROBE_GAIN * len(sample)

    def encode(self, chunk: Bytes) -> EncodedChunk:
        plain_size = len(chunk)
        if plain_size == 0:
            raise ValueError("chunks are never empty")
        plain_hash = blake3(chunk).digest()
        packed = self._zstd.compress(chunk) if self._worth_compressing(chunk) else None
        compressed = packed is not None and len(packed) < plain_size
        stored: Bytes = packed if packed is not None and compressed else chunk
        stored_size = len(stored)
        size = block_size(stored_size, self.k)
        view = memoryview(stored)
        primary: list[Bytes] = [view[i * size : (i + 1) * size] for i in range(self.k)]
        if size * self.k != stored_size:  # only the short tail blocks are copied to pad them
            for i in range(stored_size // size, self.k):
                padded = bytearray(size)  # zeros; one copy of the tail
                padded[: len(primary[i])] = primary[i]
                primary[i] = padded
        blocks: list[Bytes] = self._fec.encode(tuple(primary))
        hashes = [blake3(block).digest() for block in blocks]
        return EncodedChunk(ChunkEntry(plain_size, stored_size, compressed, plain_hash), blocks, hashes)


def encode_chunks(
    chunks: Iterable[Bytes], k: int, n: int, level: int = DEFAULT_LEVEL
) -> Iterator[tuple[ChunkEntry, list[bytes]]]:
    """The in-memory pipeline, block hashes included (`encode_file` pays them): entry, blocks per chunk."""
    encoder = ChunkEncoder(k, n, level)
    for chunk in chunks:
        done = encoder.encode(chunk)
        yield done.entry, [bytes(block) for block in done.blocks]


def _read_exactly(f: BinaryIO, view: memoryview) -> int:
    got = 0
    while got < len(view):
        read = f.readinto(view[got:])  # type: ignore[attr-defined]
        if not read:
            break
        got += read
    return got


def _header_region(header: ShareHeader) -> tuple[bytes, bytes]:
    """(share root, region): the region is prefix, header and zero padding, the share's first bytes."""
    encoded = _header_encoder.encode(header)
    reserved = reserved_header_len(len(header.chunks))
    if len(encoded) > reserved:  # cannot happen: the bound is exact; kept as a guard
        raise AssertionError(f"header of {len(encoded)} bytes exceeds its reserved {reserved}")
    region = _PREFIX.pack(MAGIC, len(encoded), reserved) + encoded + bytes(reserved - len(encoded))
    return header_root(encoded), region


def _remove_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def encode_file(
    source: Path,
    out_dir: Path,
    k: int,
    n: int,
    *,
    chunk_bytes: int = CHUNK_BYTES,
    level: int = DEFAULT_LEVEL,
    progress: Callable[[int], None] | None = None,
) -> ArtifactLayout:
    """Encode `source` into `out_dir/{i}.share` for i in range(n); on error no output file is left."""
    _check_parameters(k, n)
    if not 1 <= chunk_bytes <= MAX_CHUNK_BYTES:
        raise ValueError(f"chunk_bytes must be in [1, {MAX_CHUNK_BYTES}]")
    encoder = ChunkEncoder(k, n, level)
    paths = [out_dir / share_file_name(i) for i in range(n)]
    outs: list[BinaryIO] = []
    try:
        with open(source, "rb") as src:
            size = os.fstat(src.fileno()).st_size
            count = chunk_count(size, chunk_bytes)
            data_start = PREFIX_BYTES + reserved_header_len(count)
            for path in paths:
                outs.append(open(path, "wb"))  # noqa: SIM115 - closed in the finally below
                outs[-1].seek(data_start)
            buffer = memoryview(bytearray(min(chunk_bytes, max(size, 1))))
            whole = blake3()
            entries: list[ChunkEntry] = []
            hashes: list[list[bytes]] = [[] for _ in range(n)]
            stored_total = 0
            done = 0
            for _ in range(count):
                want = min(chunk_bytes, size - done)
                chunk = buffer[:want]
                if _read_exactly(src, chunk) != want:
                    raise ValueError(f"{source} shrank while being encoded")
                whole.update(chunk)
                encoded = encoder.encode(chunk)
                for out, block, digest, share_hashes in zip(
                    outs, encoded.blocks, encoded.block_hashes, hashes, strict=True
                ):
                    out.write(block)
                    share_hashes.append(digest)
                entries.append(encoded.entry)
                stored_total += block_size(encoded.entry.stored_size, k)
                done += want
                if progress is not None:
                    progress(done)
            if src.read(1):
                raise ValueError(f"{source} grew while being encoded")
        artifact_id = whole.digest()
        roots: list[bytes] = []
        for index, out in enumerate(outs):
            header = ShareHeader(artifact_id, index, k, n, size, chunk_bytes, entries, hashes[index])
            root, region = _header_region(header)
            roots.append(root)
            out.seek(0)
            out.write(region)
        for out in outs:
            out.close()
    except BaseException:
        for out in outs:
            out.close()
        for path in paths:
            _remove_quietly(path)
        raise
    share_size = data_start + stored_total
    return ArtifactLayout(artifact_id, size, k, n, chunk_bytes, count, tuple(roots), (share_size,) * n)


def _parse_region(region: Bytes, header_len: int) -> tuple[ShareHeader, bytes]:
    """Decode and check the header of a complete header region (prefix + reserved space)."""
    header_bytes = bytes(region[PREFIX_BYTES : PREFIX_BYTES + header_len])
    padding = region[PREFIX_BYTES + header_len :]
    if bytes(padding).count(0) != len(padding):
        raise ShareCorrupt("nonzero bytes in the header padding")
    try:
        header = _header_decoder.decode(header_bytes)
    except (msgspec.MsgspecError, ValueError, TypeError, RecursionError, MemoryError) as exc:
        raise ShareCorrupt(f"malformed share header: {exc}") from None
    _check_header(header, reserved_len=len(region) - PREFIX_BYTES)
    return header, header_bytes


def _parse_prefix(prefix: Bytes) -> tuple[int, int]:
    magic, header_len, reserved_len = _PREFIX.unpack(prefix)
    if magic != MAGIC:
        raise ShareCorrupt("not a share file (bad magic)")
    if reserved_len > MAX_HEADER_BYTES:
        raise ShareCorrupt(f"header space of {reserved_len} bytes exceeds the {MAX_HEADER_BYTES}-byte cap")
    if not 0 < header_len <= reserved_len:
        raise ShareCorrupt(f"header length {header_len} outside its reserved space {reserved_len}")
    return header_len, reserved_len


def _check_header(header: ShareHeader, *, reserved_len: int | None) -> None:
    """Structural consistency (the root only proves who wrote the header, not that it makes sense)."""

    def bad(message: str) -> ShareCorrupt:
        return ShareCorrupt(f"inconsistent share header: {message}", index=header.index)

    if len(header.artifact_id) != HASH_BYTES:
        raise bad("artifact id is not 32 bytes")
    if not (1 <= header.n <= MAX_SHARES and 1 <= header.k <= header.n and 0 <= header.index < header.n):
        raise bad(f"index {header.index} / k {header.k} / n {header.n} out of range")
    if header.size < 0 or not 1 <= header.chunk_bytes <= MAX_CHUNK_BYTES:
        raise bad(f"size {header.size} / chunk_bytes {header.chunk_bytes} out of range")
    count = chunk_count(header.size, header.chunk_bytes)
    if len(header.chunks) != count or len(header.block_hashes) != count:
        raise bad(
            f"{len(header.chunks)} chunks and {len(header.block_hashes)} block hashes, expected {count}"
        )
    if reserved_len is not None and reserved_len != reserved_header_len(count):
        raise bad(f"reserved header space {reserved_len}, expected {reserved_header_len(count)}")
    left = header.size
    for number, (entry, digest) in enumerate(zip(header.chunks, header.block_hashes, strict=True)):
        expected = min(header.chunk_bytes, left)
        left -= expected
        if entry.plain_size != expected:
            raise bad(f"chunk {number} has plain size {entry.plain_size}, expected {expected}")
        if entry.compressed:
            if not 1 <= entry.stored_size < entry.plain_size:
                raise bad(f"compressed chunk {number} stores {entry.stored_size} of {entry.plain_size} bytes")
        elif entry.stored_size != entry.plain_size:
            raise bad(f"raw chunk {number} stores {entry.stored_size} of {entry.plain_size} bytes")
        if len(entry.plain_hash) != HASH_BYTES or len(digest) != HASH_BYTES:
            raise bad(f"chunk {number} has a hash that is not 32 bytes")


def _block_sizes(header: ShareHeader) -> list[int]:
    return [block_size(entry.stored_size, header.k) for entry in header.chunks]


def share_size_of(header: ShareHeader) -> int:
    """The whole share file's length as `header` describes it."""
    return PREFIX_BYTES + reserved_header_len(len(header.chunks)) + sum(_block_sizes(header))


class ShareVerifier:
    """Checks a share's bytes as they arrive, in order from offset 0, holding only the header.

    `feed` raises `ShareCorrupt` as soon as the header is complete and wrong (hash != root,
    another artifact or index, inconsistent, longer than `size`) or a block completes with the
    wrong hash, or more bytes arrive than the share has; `finish` raises unless exactly the whole
    share arrived. After a failure every call raises again. Cost: one BLAKE3 pass over the
    bytes; memory: the header region (O(chunk count)).
    """

    def __init__(
        self,
        root: bytes,
        *,
        artifact_id: bytes | None = None,
        index: int | None = None,
        size: int | None = None,
    ) -> None:
        self.root = root
        self.artifact_id = artifact_id
        self.index = index
        self.size = size  # the total the sender announced, when known: checked against the header
        self.header: ShareHeader | None = None
        self.header_bytes: bytes | None = None
        self.total_size: int | None = None
        self.received = 0
        self._pending = bytearray()
        self._region_len: int | None = None
        self._header_len = 0
        self._block_sizes: list[int] = []
        self._chunk = 0
        self._left = 0
        self._hasher = blake3()
        self._failure: ShareCorrupt | None = None

    def feed(self, data: Bytes) -> None:
        if self._failure is not None:
            raise self._failure
        try:
            self._feed(memoryview(data).cast("B"))
        except ShareCorrupt as exc:
            if exc.index is None:
                exc.index = self.index
            self._failure = exc
            raise

    def finish(self) -> ShareHeader:
        if self._failure is not None:
            raise self._failure
        if self.header is None or self.received != self.total_size:
            expected = "?" if self.total_size is None else str(self.total_size)
            self._failure = ShareCorrupt(
                f"share truncated: {self.received} of {expected} bytes", index=self.index, chunk=self._chunk
            )
            raise self._failure
        return self.header

    def _feed(self, data: memoryview) -> None:
        if self.header is None:
            data = self._feed_header(data)
            if self.header is None:
                return
        assert self.total_size is not None
        if self.received + len(data) > self.total_size:
            raise ShareCorrupt(f"share longer than its {self.total_size} bytes", chunk=self._chunk)
        self.received += len(data)
        while data:
            take = min(self._left, len(data))
            self._hasher.update(data[:take])
            data = data[take:]
            self._left -= take
            if self._left == 0:
                self._end_block()

    def _feed_header(self, data: memoryview) -> memoryview:
        want = PREFIX_BYTES if self._region_len is None else self._region_len
        take = min(want - len(self._pending), len(data))
        self._pending += data[:take]
        self.received += take
        data = data[take:]
        if len(self._pending) < want:
            return data
        if self._region_len is None:
            self._header_len, reserved = _parse_prefix(self._pending)
            self._region_len = PREFIX_BYTES + reserved
            if self.size is not None and self._region_len > self.size:
                raise ShareCorrupt(f"header space alone exceeds the announced {self.size} bytes")
            return self._feed_header(data)
        header_bytes = bytes(self._pending[PREFIX_BYTES : PREFIX_BYTES + self._header_len])
        if header_root(header_bytes) != self.root:
            raise ShareCorrupt("share header does not match its root")
        header, header_bytes = _parse_region(self._pending, self._header_len)
        if self.artifact_id is not None and header.artifact_id != self.artifact_id:
            raise ShareCorrupt("share belongs to another artifact")
        if self.index is not None and header.index != self.index:
            raise ShareCorrupt(f"share has index {header.index}, expected {self.index}")
        total = share_size_of(header)
        if self.size is not None and total != self.size:
            raise ShareCorrupt(f"share is {total} bytes per its header, {self.size} announced")
        self._pending = bytearray()
        self.header, self.header_bytes, self.total_size = header, header_bytes, total
        self._block_sizes = _block_sizes(header)
        self._chunk = 0
        self._left = self._block_sizes[0] if self._block_sizes else 0
        return data

    def _end_block(self) -> None:
        assert self.header is not None
        if self._hasher.digest() != self.header.block_hashes[self._chunk]:
            raise ShareCorrupt(f"block of chunk {self._chunk} fails its hash", chunk=self._chunk)
        self._hasher = blake3()
        self._chunk += 1
        self._left = self._block_sizes[self._chunk] if self._chunk < len(self._block_sizes) else 0


class _ShareFile:
    """An open share whose header region is verified; blocks are verified as they are read."""

    def __init__(
        self, path: Path, root: bytes | None, *, artifact_id: bytes | None = None, index: int | None = None
    ) -> None:
        self.file: BinaryIO = open(path, "rb")  # noqa: SIM115 - closed by close()
        try:
            prefix = self.file.read(PREFIX_BYTES)
            if len(prefix) != PREFIX_BYTES:
                raise ShareCorrupt("share truncated inside its prefix", index=index)
            header_len, reserved = _parse_prefix(prefix)
            rest = self.file.read(reserved)
            if len(rest) != reserved:
                raise ShareCorrupt("share truncated inside its header", index=index)
            self.region = prefix + rest
            if (
                root is not None
                and header_root(self.region[PREFIX_BYTES : PREFIX_BYTES + header_len]) != root
            ):
                raise ShareCorrupt("share header does not match its root", index=index)
            self.header, self.header_bytes = _parse_region(self.region, header_len)
            if artifact_id is not None and self.header.artifact_id != artifact_id:
                raise ShareCorrupt("share belongs to another artifact", index=index)
            if index is not None and self.header.index != index:
                raise ShareCorrupt(f"share has index {self.header.index}, expected {index}", index=index)
            self.sizes = _block_sizes(self.header)
            self.offsets: list[int] = []
            offset = len(self.region)
            for size in self.sizes:
                self.offsets.append(offset)
                offset += size
            self.total = offset
            actual = os.fstat(self.file.fileno()).st_size
            if actual != self.total:
                raise ShareCorrupt(
                    f"share is {actual} bytes, its header says {self.total}", index=self.header.index
                )
        except BaseException:
            self.file.close()
            raise

    def block(self, chunk: int) -> bytes:
        self.file.seek(self.offsets[chunk])
        data = self.file.read(self.sizes[chunk])
        if len(data) != self.sizes[chunk]:
            raise ShareCorrupt(f"share truncated at chunk {chunk}", index=self.header.index, chunk=chunk)
        if blake3(data).digest() != self.header.block_hashes[chunk]:
            raise ShareCorrupt(f"block of chunk {chunk} fails its hash", index=self.header.index, chunk=chunk)
        return data

    def close(self) -> None:
        self.file.close()


def read_header(path: Path) -> tuple[ShareHeader, bytes]:
    """The share's header and its encoded bytes (structure and file length checked, not the root)."""
    share = _ShareFile(path, None)
    share.close()
    return share.header, share.header_bytes


def verify_share_file(path: Path, root: bytes) -> ShareHeader:
    """Read the whole share through a `ShareVerifier`; its header when every byte is right."""
    verifier = ShareVerifier(root)
    buffer = memoryview(bytearray(READ_PIECE))
    with open(path, "rb") as f:
        while got := f.readinto(buffer):
            verifier.feed(buffer[:got])
    return verifier.finish()


def iter_share_bytes(path: Path, root: bytes, offset: int = 0, piece: int = READ_PIECE) -> Iterator[bytes]:
    """The share's bytes from `offset` in pieces of at most `piece`, each block verified before it is yielded.

    From an offset past 0 the header is still verified against the root and the block holding
    `offset` is read and checked whole, so every byte handed out is covered by a checked hash.
    Memory: the header region and one block.
    """
    if piece < 1:
        raise ValueError("piece must be at least 1")
    share = _ShareFile(path, root)
    try:
        if not 0 <= offset <= share.total:
            raise ValueError(f"offset {offset} outside the share's {share.total} bytes")
        region = share.region
        while offset < len(region):
            yield region[offset : offset + piece]
            offset += min(piece, len(region) - offset)
        first = max(bisect.bisect_right(share.offsets, offset) - 1, 0)
        for chunk in range(first, len(share.sizes)):
            block = share.block(chunk)
            start = offset - share.offsets[chunk]
            while start < len(block):
                yield block[start : start + piece]
                start += piece
            offset = share.offsets[chunk] + len(block)
    finally:
        share.close()


def read_block(path: Path, root: bytes, chunk: int) -> tuple[bytes, bytes]:
    """(header bytes, block of `chunk`), both verified: what a holder answers to an audit."""
    share = _ShareFile(path, root)
    try:
        if not 0 <= chunk < len(share.sizes):
            raise ValueError(f"chunk {chunk} outside the share's {len(share.sizes)} chunks")
        return share.header_bytes, share.block(chunk)
    finally:
        share.close()


def check_audit(root: bytes, chunk: int, header_bytes: bytes, block: bytes) -> bool:
    """The auditor's side: the header hashes to `root` and the block to the hash it lists for `chunk`."""
    if header_root(header_bytes) != root:
        return False
    try:
        header = _header_decoder.decode(header_bytes)
        _check_header(header, reserved_len=None)
    except (msgspec.MsgspecError, ShareCorrupt, ValueError, TypeError, RecursionError, MemoryError):
        return False
    if len(header_bytes) > reserved_header_len(len(header.chunks)) or not 0 <= chunk < len(header.chunks):
        return False
    if len(block) != block_size(header.chunks[chunk].stored_size, header.k):
        return False
    return blake3(block).digest() == header.block_hashes[chunk]


class _Sources:
    """The shares at hand: headers checked against the roots, blocks read as needed, bad ones set aside."""

    def __init__(self, shares: Mapping[int, Path], roots: Sequence[bytes], artifact_id: bytes | None) -> None:
        self.bad: set[int] = set()
        self.open: dict[int, _ShareFile] = {}
        reference: ShareHeader | None = None
        for index in sorted(shares):
            if not 0 <= index < len(roots):
                self.bad.add(index)
                continue
            try:
                share = _ShareFile(shares[index], roots[index], artifact_id=artifact_id, index=index)
            except (ShareCorrupt, OSError):
                self.bad.add(index)
                continue
            header = share.header
            if reference is None:
                reference = header
            elif (header.artifact_id, header.k, header.n, header.size, header.chunk_bytes, header.chunks) != (
                reference.artifact_id,
                reference.k,
                reference.n,
                reference.size,
                reference.chunk_bytes,
                reference.chunks,
            ):
                share.close()
                self.bad.add(index)
                continue
            self.open[index] = share
        if reference is None:
            raise NotEnoughShares("no share with a valid header", bad=self.bad)
        if len(roots) != reference.n:
            self.close()
            raise ValueError(f"{len(roots)} roots given for an artifact of n={reference.n} shares")
        self.header = reference
        self.k = reference.k
        self._decoder = zfec.Decoder(reference.k, reference.n)
        self._zstd = zstandard.ZstdDecompressor()
        self._need(chunk=None)

    def _need(self, *, chunk: int | None) -> None:
        if len(self.open) < self.k:
            self.close()
            where = "" if chunk is None else f" at chunk {chunk}"
            raise NotEnoughShares(
                f"only {len(self.open)} good shares{where}, {self.k} needed (bad: {sorted(self.bad)})",
                chunk=chunk,
                bad=self.bad,
            )

    def decode(self, chunk: int) -> tuple[list[bytes], Bytes]:
        """The k primary blocks and the plain bytes of `chunk`, checked against its plain hash."""
        blocks: list[bytes] = []
        numbers: list[int] = []
        for index in sorted(self.open):  # primary blocks (index < k) first: zfec then only copies
            try:
                blocks.append(self.open[index].block(chunk))
                numbers.append(index)
            except (ShareCorrupt, OSError):
                self.open.pop(index).close()
                self.bad.add(index)
                self._need(chunk=chunk)
            if len(blocks) == self.k:
                break
        primary: list[bytes] = self._decoder.decode(tuple(blocks), tuple(numbers))
        entry = self.header.chunks[chunk]
        stored = memoryview(b"".join(primary))[: entry.stored_size]
        plain: Bytes
        try:
            if entry.compressed:
                if zstandard.frame_content_size(stored) != entry.plain_size:
                    raise ShareCorrupt("compressed chunk declares another size", chunk=chunk)
                plain = self._zstd.decompress(stored, max_output_size=entry.plain_size)
            else:
                plain = stored  # a view: no copy
        except zstandard.ZstdError as exc:
            raise ShareCorrupt(f"chunk {chunk} does not decompress: {exc}", chunk=chunk) from None
        if len(plain) != entry.plain_size or blake3(plain).digest() != entry.plain_hash:
            raise ShareCorrupt(
                f"chunk {chunk} decodes to the wrong content: the shares are inconsistent", chunk=chunk
            )
        return primary, plain

    def close(self) -> None:
        for share in self.open.values():
            share.close()


def decode_shares(
    shares: Mapping[int, Path],
    out_path: Path,
    *,
    artifact_id: bytes,
    roots: Sequence[bytes],
    progress: Callable[[int], None] | None = None,
) -> set[int]:
    """Write the artifact's content to `out_path` from any k good shares per chunk; return the bad shares.

    Raises `NotEnoughShares` (a `ShareCorrupt`) when fewer than k good shares remain and
    `ShareCorrupt` when the decoded content is not the artifact; on any error `out_path` is removed.
    """
    sources = _Sources(shares, roots, artifact_id)
    try:
        whole = blake3()
        done = 0
        with open(out_path, "wb") as out:
            for chunk in range(len(sources.header.chunks)):
                _, plain = sources.decode(chunk)
                whole.update(plain)
                out.write(plain)
                done += len(plain)
                if progress is not None:
                    progress(done)
        if whole.digest() != artifact_id:
            raise ShareCorrupt("decoded content does not hash to the artifact id")
    except BaseException:
        _remove_quietly(out_path)
        raise
    finally:
        sources.close()
    return sources.bad


def regenerate_shares(
    shares: Mapping[int, Path], wanted: Iterable[int], out_dir: Path, *, roots: Sequence[bytes]
) -> dict[int, Path]:
    """Rebuild the `wanted` share files into `out_dir` from >= k good shares, each checked against its root.

    Every chunk is decoded and checked against its plain hash before its missing blocks are
    re-encoded, so a rebuilt share carries only content the artifact really has. On error no
    output file is left.
    """
    sources = _Sources(shares, roots, None)
    header = sources.header
    numbers = sorted(set(wanted))
    try:
        if any(not 0 <= number < header.n for number in numbers):
            raise ValueError(f"wanted shares {numbers} outside range({header.n})")
    except BaseException:
        sources.close()
        raise
    encoder = zfec.Encoder(header.k, header.n)
    parts = {number: out_dir / (share_file_name(number) + ".part") for number in numbers}
    outs: dict[int, BinaryIO] = {}
    try:
        data_start = PREFIX_BYTES + reserved_header_len(len(header.chunks))
        for number, path in parts.items():
            outs[number] = open(path, "wb")  # noqa: SIM115 - closed below
            outs[number].seek(data_start)
        hashes: dict[int, list[bytes]] = {number: [] for number in numbers}
        for chunk in range(len(header.chunks)):
            primary, _ = sources.decode(chunk)
            blocks = encoder.encode(tuple(primary), tuple(numbers)) if numbers else []
            for number, block in zip(numbers, blocks, strict=True):
                outs[number].write(block)
                hashes[number].append(blake3(block).digest())
        finals: dict[int, Path] = {}
        for number in numbers:
            rebuilt = ShareHeader(
                header.artifact_id, number, header.k, header.n, header.size, header.chunk_bytes,
                header.chunks, hashes[number],
            )  # fmt: skip
            root, region = _header_region(rebuilt)
            if root != roots[number]:
                raise ShareCorrupt("rebuilt share does not match its root", index=number)
            outs[number].seek(0)
            outs[number].write(region)
            outs[number].close()
            finals[number] = out_dir / share_file_name(number)
        for number in numbers:
            os.replace(parts[number], finals[number])
        return finals
    except BaseException:
        for out in outs.values():
            out.close()
        for path in parts.values():
            _remove_quietly(path)
        raise
    finally:
        sources.close()
