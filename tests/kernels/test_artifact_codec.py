"""The artifact codec: round trips, any-k decoding, every tampering caught, rebuilt shares identical."""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from blake3 import blake3
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels.artifact_codec import (
    MAGIC,
    PREFIX_BYTES,
    ArtifactLayout,
    ChunkEncoder,
    ChunkEntry,
    NotEnoughShares,
    ShareCorrupt,
    ShareHeader,
    ShareVerifier,
    check_audit,
    decode_shares,
    encode_chunks,
    encode_file,
    encode_header,
    iter_share_bytes,
    read_block,
    read_header,
    regenerate_shares,
    reserved_header_len,
    share_size_of,
    verify_share_file,
)

CHUNK = 64 * 1024
K, N = 3, 5


def mixed_data(size: int, seed: int = 1) -> bytes:
    """Half random (stored raw), half text-like (compressed), so both chunk kinds occur."""
    rng = random.Random(seed)
    words = [b"mesh", b"share", b"node", b"hub", b"artifact", b"chunk", b"block", b"1234", b"\n"]
    text = bytearray()
    while len(text) < size:
        text += rng.choice(words) + b" "
    data = bytearray(text[:size])
    for start in range(0, size, 2 * CHUNK):
        piece = rng.randbytes(min(CHUNK, size - start))
        data[start : start + len(piece)] = piece
    return bytes(data)


def encode(tmp: Path, data: bytes, k: int = K, n: int = N, chunk: int = CHUNK) -> tuple[ArtifactLayout, Path]:
    source = tmp / "source"
    source.write_bytes(data)
    out = tmp / "shares"
    out.mkdir()
    return encode_file(source, out, k, n, chunk_bytes=chunk), out


def paths(out: Path, indices: object = None) -> dict[int, Path]:
    found = {int(p.name.split(".")[0]): p for p in out.glob("*.share")}
    return found if indices is None else {i: found[i] for i in indices}  # type: ignore[attr-defined]


def decode(tmp: Path, layout: ArtifactLayout, shares: dict[int, Path]) -> tuple[bytes, set[int]]:
    out = tmp / "decoded"
    bad = decode_shares(shares, out, artifact_id=layout.artifact_id, roots=layout.share_roots)
    return out.read_bytes(), bad


def block_offsets(path: Path) -> list[tuple[int, int]]:
    """(offset, size) of each block in a share file."""
    header, _ = read_header(path)
    offset = PREFIX_BYTES + reserved_header_len(len(header.chunks))
    found = []
    for entry in header.chunks:
        size = -(-entry.stored_size // header.k)
        found.append((offset, size))
        offset += size
    return found


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def encoded(tmp_path_factory: pytest.TempPathFactory) -> tuple[ArtifactLayout, Path, bytes]:
    tmp = tmp_path_factory.mktemp("encoded")
    data = mixed_data(3 * CHUNK + 1000)
    layout, out = encode(tmp, data)
    return layout, out, data


@pytest.fixture
def copy(encoded: tuple[ArtifactLayout, Path, bytes], tmp_path: Path) -> tuple[ArtifactLayout, Path, bytes]:
    layout, out, data = encoded
    target = tmp_path / "copy"
    shutil.copytree(out, target)
    return layout, target, data


@pytest.mark.parametrize("size", [0, 1, 2, CHUNK - 1, CHUNK, CHUNK + 1, 4 * CHUNK + 123])
@pytest.mark.parametrize("kind", ["random", "mixed"])
def test_round_trip(tmp_path: Path, size: int, kind: str) -> None:
    data = os.urandom(size) if kind == "random" else mixed_data(size)
    layout, out = encode(tmp_path, data)
    assert layout.artifact_id == blake3(data).digest()
    assert (layout.size, layout.k, layout.n, layout.chunk_count) == (size, K, N, -(-size // CHUNK))
    for index, path in paths(out).items():
        assert path.stat().st_size == layout.share_sizes[index]
        header = verify_share_file(path, layout.share_roots[index])
        assert (header.index, header.artifact_id, share_size_of(header)) == (
            index,
            layout.artifact_id,
            layout.share_sizes[index],
        )
    decoded, bad = decode(tmp_path, layout, paths(out))
    assert decoded == data and bad == set()


def test_compressible_chunks_are_stored_compressed_and_random_ones_raw(
    copy: tuple[ArtifactLayout, Path, bytes],
) -> None:
    _, out, _ = copy
    header, _ = read_header(out / "0.share")
    assert [entry.compressed for entry in header.chunks] == [False, True, False, True]
    assert all(entry.stored_size < entry.plain_size for entry in header.chunks if entry.compressed)


def test_progress_reports_source_bytes(tmp_path: Path) -> None:
    data = os.urandom(2 * CHUNK + 5)
    (tmp_path / "s").write_bytes(data)
    seen: list[int] = []
    encode_file(tmp_path / "s", tmp_path, 2, 3, chunk_bytes=CHUNK, progress=seen.append)
    assert seen == [CHUNK, 2 * CHUNK, 2 * CHUNK + 5]


def test_every_k_subset_decodes(copy: tuple[ArtifactLayout, Path, bytes], tmp_path: Path) -> None:
    layout, out, data = copy
    for subset in itertools.combinations(range(N), K):
        decoded, bad = decode(tmp_path, layout, paths(out, subset))
        assert decoded == data and bad == set(), subset


def test_fewer_than_k_shares_is_not_enough(copy: tuple[ArtifactLayout, Path, bytes], tmp_path: Path) -> None:
    layout, out, _ = copy
    with pytest.raises(NotEnoughShares):
        decode(tmp_path, layout, paths(out, [0, 4]))
    assert not (tmp_path / "decoded").exists()


def test_a_flipped_byte_in_any_block_is_caught_and_another_share_used(
    copy: tuple[ArtifactLayout, Path, bytes], tmp_path: Path
) -> None:
    layout, out, data = copy
    for index in range(N):
        for chunk, (offset, size) in enumerate(block_offsets(out / f"{index}.share")):
            for where in (offset, offset + size // 2, offset + size - 1):
                share = tmp_path / "bad.share"
                shutil.copy(out / f"{index}.share", share)
                flip(share, where)
                with pytest.raises(ShareCorrupt) as caught:
                    verify_share_file(share, layout.share_roots[index])
                assert caught.value.chunk == chunk
                shares = paths(out) | {index: share}
                decoded, bad = decode(tmp_path, layout, shares)
                assert decoded == data
                # decoding reads primary shares (index < k) first, so it reaches exactly those
                assert bad == ({index} if index < K else set())
                # with only k+1 shares, the bad one is read whenever fewer than k others precede it
                subset = {i: shares[i] for i in {index, *[i for i in range(N) if i != index][:K]}}
                decoded, bad = decode(tmp_path, layout, subset)
                assert decoded == data and bad <= {index}


def test_corrupt_blocks_on_too_many_shares_fail(
    copy: tuple[ArtifactLayout, Path, bytes], tmp_path: Path
) -> None:
    layout, out, _ = copy
    for index in (0, 1, 2):
        offset, _ = block_offsets(out / f"{index}.share")[1]
        flip(out / f"{index}.share", offset)
    with pytest.raises(NotEnoughShares) as caught:
        decode(tmp_path, layout, paths(out, [0, 1, 2, 3]))
    assert caught.value.chunk == 1
    assert not (tmp_path / "decoded").exists()


@pytest.mark.parametrize("where", ["magic", "header_len", "reserved_len", "header", "padding"])
def test_header_tampering_is_caught(
    copy: tuple[ArtifactLayout, Path, bytes], tmp_path: Path, where: str
) -> None:
    layout, out, data = copy
    share = out / "0.share"
    _, header_bytes = read_header(share)
    offset = {
        "magic": 0,
        "header_len": 8,
        "reserved_len": 12,
        "header": PREFIX_BYTES + len(header_bytes) // 2,
        "padding": PREFIX_BYTES + len(header_bytes) + 1,
    }[where]
    flip(share, offset)
    with pytest.raises(ShareCorrupt):
        verify_share_file(share, layout.share_roots[0])
    with pytest.raises(ShareCorrupt):
        list(iter_share_bytes(share, layout.share_roots[0]))
    decoded, bad = decode(tmp_path, layout, paths(out))
    assert decoded == data and bad == {0}


def test_a_share_of_another_artifact_or_index_is_refused(
    copy: tuple[ArtifactLayout, Path, bytes], tmp_path: Path
) -> None:
    layout, out, data = copy
    shutil.copy(out / "1.share", out / "0.share")  # right root for index 1, offered as index 0
    decoded, bad = decode(tmp_path, layout, paths(out))
    assert decoded == data and bad == {0}
    share = (out / "1.share").read_bytes()
    with pytest.raises(ShareCorrupt, match="index"):
        ShareVerifier(layout.share_roots[1], index=2).feed(share)
    with pytest.raises(ShareCorrupt, match="artifact"):
        ShareVerifier(layout.share_roots[1], artifact_id=bytes(32)).feed(share)


@pytest.mark.parametrize("cut", [1, 100, "header"])
def test_a_truncated_share_is_caught(
    copy: tuple[ArtifactLayout, Path, bytes], tmp_path: Path, cut: object
) -> None:
    layout, out, data = copy
    share = out / "2.share"
    content = share.read_bytes()
    keep = PREFIX_BYTES + 10 if cut == "header" else len(content) - int(cut)  # type: ignore[call-overload]
    share.write_bytes(content[:keep])
    with pytest.raises(ShareCorrupt):
        read_header(share)
    with pytest.raises(ShareCorrupt):
        verify_share_file(share, layout.share_roots[2])
    verifier = ShareVerifier(layout.share_roots[2])
    verifier.feed(content[:keep])
    with pytest.raises(ShareCorrupt, match="truncated"):
        verifier.finish()
    decoded, bad = decode(tmp_path, layout, paths(out))
    assert decoded == data and bad == {2}


def test_any_single_flipped_byte_anywhere_is_caught(copy: tuple[ArtifactLayout, Path, bytes]) -> None:
    layout, out, _ = copy
    content = (out / "3.share").read_bytes()
    rng = random.Random(3)
    for offset in [*range(0, 64), *rng.sample(range(len(content)), 300), len(content) - 1]:
        damaged = bytearray(content)
        damaged[offset] ^= 1 << rng.randrange(8)
        verifier = ShareVerifier(layout.share_roots[3], size=len(content))
        with pytest.raises(ShareCorrupt):
            verifier.feed(damaged)
            verifier.finish()


def test_regenerated_shares_are_byte_identical(
    copy: tuple[ArtifactLayout, Path, bytes], tmp_path: Path
) -> None:
    layout, out, _ = copy
    rebuilt_dir = tmp_path / "rebuilt"
    rebuilt_dir.mkdir()
    flip(out / "4.share", block_offsets(out / "4.share")[0][0])  # a corrupt source is skipped
    rebuilt = regenerate_shares(paths(out, [4, 2, 3, 1]), [0, 4], rebuilt_dir, roots=layout.share_roots)
    assert set(rebuilt) == {0, 4}
    assert rebuilt[0].read_bytes() == (out / "0.share").read_bytes()
    assert verify_share_file(rebuilt[4], layout.share_roots[4]).index == 4
    assert sorted(p.name for p in rebuilt_dir.iterdir()) == ["0.share", "4.share"]


def test_regenerating_from_too_few_good_shares_leaves_nothing(
    copy: tuple[ArtifactLayout, Path, bytes], tmp_path: Path
) -> None:
    layout, out, _ = copy
    flip(out / "2.share", block_offsets(out / "2.share")[2][0])
    with pytest.raises(NotEnoughShares):
        regenerate_shares(paths(out, [1, 2, 3]), [0], tmp_path, roots=layout.share_roots)
    assert not list(tmp_path.glob("0.share*"))


def test_the_verifier_accepts_odd_sized_pieces(copy: tuple[ArtifactLayout, Path, bytes]) -> None:
    layout, out, _ = copy
    content = (out / "1.share").read_bytes()
    for seed in range(5):
        rng = random.Random(seed)
        verifier = ShareVerifier(
            layout.share_roots[1], artifact_id=layout.artifact_id, index=1, size=len(content)
        )
        position = 0
        while position < len(content):
            step = rng.choice([1, 2, 7, 13, 255, 4097, 50_000])
            verifier.feed(content[position : position + step])
            position += step
        header = verifier.finish()
        assert header.index == 1 and verifier.header_bytes is not None
        assert blake3(verifier.header_bytes).digest() == layout.share_roots[1]


def test_the_verifier_fails_early_and_stays_failed(copy: tuple[ArtifactLayout, Path, bytes]) -> None:
    layout, out, _ = copy
    content = bytearray((out / "1.share").read_bytes())
    offset, size = block_offsets(out / "1.share")[0]
    content[offset] ^= 1
    verifier = ShareVerifier(layout.share_roots[1])
    verifier.feed(content[: offset + size - 1])  # the damaged block is not complete yet
    with pytest.raises(ShareCorrupt) as caught:
        verifier.feed(content[offset + size - 1 : offset + size])
    assert (caught.value.chunk, caught.value.index) == (0, None)
    with pytest.raises(ShareCorrupt):
        verifier.feed(b"")
    with pytest.raises(ShareCorrupt):
        verifier.finish()


def test_the_verifier_refuses_extra_bytes_and_a_wrong_announced_size(
    copy: tuple[ArtifactLayout, Path, bytes],
) -> None:
    layout, out, _ = copy
    content = (out / "0.share").read_bytes()
    with pytest.raises(ShareCorrupt, match="longer"):
        ShareVerifier(layout.share_roots[0]).feed(content + b"\0")
    with pytest.raises(ShareCorrupt, match="announced"):
        ShareVerifier(layout.share_roots[0], size=len(content) + 1).feed(content)
    with pytest.raises(ShareCorrupt, match="root"):
        ShareVerifier(layout.share_roots[1]).feed(content)


def test_iter_share_bytes_from_any_offset(copy: tuple[ArtifactLayout, Path, bytes]) -> None:
    layout, out, _ = copy
    share = out / "2.share"
    content = share.read_bytes()
    blocks = block_offsets(share)
    offsets = [
        0,
        5,
        PREFIX_BYTES,
        blocks[0][0] - 1,
        blocks[0][0],
        blocks[1][0] + 3,
        blocks[-1][0],
        len(content),
    ]
    for offset in offsets:
        for piece in (1000, 1 << 20):
            pieces = list(iter_share_bytes(share, layout.share_roots[2], offset, piece=piece))
            assert b"".join(pieces) == content[offset:]
            assert all(0 < len(p) <= piece for p in pieces)
    with pytest.raises(ValueError):
        list(iter_share_bytes(share, layout.share_roots[2], len(content) + 1))


def test_iter_share_bytes_checks_the_blocks_it_passes(copy: tuple[ArtifactLayout, Path, bytes]) -> None:
    layout, out, _ = copy
    share = out / "2.share"
    blocks = block_offsets(share)
    flip(share, blocks[1][0] + 2)
    # starting inside the damaged block still reads and checks it whole
    with pytest.raises(ShareCorrupt) as caught:
        list(iter_share_bytes(share, layout.share_roots[2], blocks[1][0] + 5))
    assert caught.value.chunk == 1
    # bytes before the damage come out; the damaged block never does
    got = b""
    with pytest.raises(ShareCorrupt):
        for piece in iter_share_bytes(share, layout.share_roots[2], piece=4096):
            got += piece
    assert len(got) == blocks[1][0]
    # a range after the damaged block does not pass over it
    assert list(iter_share_bytes(share, layout.share_roots[2], blocks[2][0]))


def test_read_block_and_check_audit(copy: tuple[ArtifactLayout, Path, bytes]) -> None:
    layout, out, _ = copy
    share = out / "3.share"
    root = layout.share_roots[3]
    for chunk in range(layout.chunk_count):
        header_bytes, block = read_block(share, root, chunk)
        assert check_audit(root, chunk, header_bytes, block)
        assert not check_audit(root, (chunk + 1) % layout.chunk_count, header_bytes, block)
        assert not check_audit(layout.share_roots[2], chunk, header_bytes, block)
        assert not check_audit(root, chunk, header_bytes, block[:-1] + bytes([block[-1] ^ 1]))
        assert not check_audit(root, chunk, header_bytes + b"\0", block)
    assert not check_audit(root, layout.chunk_count, header_bytes, block)
    assert not check_audit(root, -1, header_bytes, block)
    assert not check_audit(blake3(b"junk").digest(), 0, b"junk", block)
    with pytest.raises(ValueError):
        read_block(share, root, layout.chunk_count)
    flip(share, block_offsets(share)[1][0])
    with pytest.raises(ShareCorrupt):
        read_block(share, root, 1)
    assert read_block(share, root, 0)


def test_encode_chunks_matches_the_files(copy: tuple[ArtifactLayout, Path, bytes]) -> None:
    _, out, data = copy
    chunks = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]
    headers = [read_header(out / f"{i}.share")[0] for i in range(N)]
    for number, (entry, blocks) in enumerate(encode_chunks(chunks, K, N)):
        assert entry == headers[0].chunks[number]
        assert [blake3(b).digest() for b in blocks] == [h.block_hashes[number] for h in headers]
    with pytest.raises(ValueError):
        ChunkEncoder(K, N).encode(b"")


def test_the_header_reservation_is_an_upper_bound() -> None:
    for count in (0, 1, 7, 300):
        big = 2**63 - 1
        header = ShareHeader(
            b"\xff" * 32, 254, 255, 255, big, big,
            [ChunkEntry(big, big, False, b"\xff" * 32)] * count, [b"\xff" * 32] * count,
        )  # fmt: skip
        assert len(encode_header(header)) <= reserved_header_len(count)


def only_share_corrupt(action: Callable[[], object]) -> None:
    with contextlib.suppress(ShareCorrupt):
        action()


def forged_region(header_bytes: bytes, padding: int) -> bytes:
    return (
        struct.pack("<8sII", MAGIC, len(header_bytes), len(header_bytes) + padding)
        + header_bytes
        + bytes(padding)
    )


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(max_size=4000),
    forge=st.booleans(),
    padding=st.integers(0, 100),
    tail=st.binary(max_size=200),
    cuts=st.lists(st.integers(1, 500), max_size=10),
)
def test_fuzz_verifier_and_read_header_raise_only_share_corrupt(
    tmp_path_factory: pytest.TempPathFactory,
    data: bytes,
    forge: bool,
    padding: int,
    tail: bytes,
    cuts: list[int],
) -> None:
    # forged: a well-formed prefix around random header bytes, with the root that matches them,
    # so the header decoder and the consistency checks see the junk
    content = forged_region(data, padding) + tail if forge else data
    root = blake3(data).digest() if forge else blake3(content).digest()

    def feed() -> None:
        verifier = ShareVerifier(root)
        position = 0
        for cut in [*cuts, len(content)]:
            verifier.feed(content[position : position + cut])
            position += cut
        verifier.finish()

    only_share_corrupt(feed)
    path = tmp_path_factory.mktemp("fuzz") / "x.share"
    path.write_bytes(content)
    only_share_corrupt(lambda: read_header(path))
    only_share_corrupt(lambda: verify_share_file(path, root))
    only_share_corrupt(lambda: list(iter_share_bytes(path, root)))
    assert check_audit(root, 0, data, tail) in (True, False)


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32), flips=st.integers(1, 4))
def test_fuzz_random_damage_to_a_real_share_is_always_caught(
    encoded: tuple[ArtifactLayout, Path, bytes], seed: int, flips: int
) -> None:
    layout, out, _ = encoded
    content = bytearray((out / "0.share").read_bytes())
    rng = random.Random(seed)
    for _ in range(flips):
        content[rng.randrange(len(content))] ^= 1 << rng.randrange(8)
    if bytes(content) == (out / "0.share").read_bytes():
        return
    verifier = ShareVerifier(layout.share_roots[0])
    with pytest.raises(ShareCorrupt):
        verifier.feed(content)
        verifier.finish()


small_ints = st.integers(-2, 300)
hashes = st.binary(min_size=31, max_size=33)
headers = st.builds(
    ShareHeader,
    artifact_id=hashes,
    index=small_ints,
    k=small_ints,
    n=small_ints,
    size=st.integers(-1, 5000),
    chunk_bytes=st.integers(-1, 3000),
    chunks=st.lists(
        st.builds(
            ChunkEntry,
            plain_size=st.integers(-1, 3000),
            stored_size=st.integers(-1, 3000),
            compressed=st.booleans(),
            plain_hash=hashes,
        ),
        max_size=4,
    ),
    block_hashes=st.lists(hashes, max_size=4),
)


@settings(max_examples=300, deadline=None)
@given(header=headers, extra=st.integers(0, 40), tail=st.binary(max_size=3000), chunk=st.integers(-1, 4))
def test_fuzz_well_formed_but_inconsistent_headers_raise_only_share_corrupt(
    header: ShareHeader, extra: int, tail: bytes, chunk: int
) -> None:
    encoded = encode_header(header)
    count = len(header.chunks)
    padding = max(reserved_header_len(count) - len(encoded), 0) if extra % 2 else extra
    content = forged_region(encoded, padding) + tail
    verifier = ShareVerifier(blake3(encoded).digest())
    with contextlib.suppress(ShareCorrupt):
        verifier.feed(content)
        verifier.finish()
    assert check_audit(blake3(encoded).digest(), chunk, encoded, tail) in (True, False)


def test_incompressible_chunks_skip_zstd_and_text_is_compressed() -> None:
    from kernels.artifact_codec import ChunkEncoder

    encoder = ChunkEncoder(2, 3)
    random_chunk = os.urandom(1024 * 1024)
    text_chunk = b"the same line of text, over and over\n" * 30_000
    assert not encoder.encode(random_chunk).entry.compressed
    assert encoder.encode(text_chunk).entry.compressed
    small = b"tiny text " * 1000  # below the probe's threshold: zstd decides alone
    assert encoder.encode(small).entry.compressed


@pytest.mark.parametrize("kind", ["random", "mixed"])
def test_round_trip_with_chunks_the_probe_sees(tmp_path: Path, kind: str) -> None:
    size = 2 * 1024 * 1024 + 777  # chunks of 1 MiB are probed before zstd runs on them
    data = os.urandom(size) if kind == "random" else mixed_data(size)
    layout, out = encode(tmp_path, data, chunk=1024 * 1024)
    decoded, bad = decode(tmp_path, layout, paths(out, range(N - K, N)))  # parity shares too
    assert decoded == data and bad == set()
