"""Framing: whole frames through any number of short reads, and oversize refused early."""

from __future__ import annotations

import random

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from mesh.framing import (
    HEADER_SIZE,
    MAX_FRAME_BYTES,
    FrameTooLarge,
    FramingError,
    IncompleteFrame,
    encode_frame,
    read_frame,
)


class ChoppedReader:
    """Serves a byte string in random short pieces, like a QUIC stream does."""

    def __init__(self, data: bytes, rng: random.Random, max_piece: int) -> None:
        self.data = data
        self.position = 0
        self.rng = rng
        self.max_piece = max_piece
        self.reads = 0

    async def read(self, max_bytes: int) -> bytes:
        await trio.lowlevel.checkpoint()
        self.reads += 1
        take = min(max_bytes, self.rng.randint(1, self.max_piece), len(self.data) - self.position)
        piece = self.data[self.position : self.position + take]
        self.position += take
        return piece


def test_200_kb_frame_survives_thousands_of_short_reads() -> None:
    """Pitfall 9: libp2p's read_exactly gives up after 101 reads; ours must not."""
    payload = random.Random(1).randbytes(200_000)
    reader = ChoppedReader(encode_frame(payload), random.Random(2), max_piece=100)

    got = trio.run(read_frame, reader)

    assert got == payload
    assert reader.reads > 1000


def test_4_mib_frame_at_the_cap_is_intact() -> None:
    payload = random.Random(3).randbytes(MAX_FRAME_BYTES)
    reader = ChoppedReader(encode_frame(payload), random.Random(4), max_piece=70_000)

    assert trio.run(read_frame, reader) == payload


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=5000), min_size=1, max_size=12),
    seed=st.integers(min_value=0, max_value=2**32),
    max_piece=st.integers(min_value=1, max_value=9000),
)
def test_back_to_back_frames_cut_anywhere_come_out_intact(
    sizes: list[int], seed: int, max_piece: int
) -> None:
    rng = random.Random(seed)
    payloads = [rng.randbytes(size) for size in sizes]
    reader = ChoppedReader(b"".join(encode_frame(p) for p in payloads), rng, max_piece)

    async def read_all() -> list[bytes]:
        return [await read_frame(reader) for _ in payloads]

    assert trio.run(read_all) == payloads
    assert reader.position == len(reader.data)


def test_empty_frame_is_valid() -> None:
    reader = ChoppedReader(encode_frame(b""), random.Random(0), max_piece=10)
    assert trio.run(read_frame, reader) == b""


def test_oversize_frame_is_refused_on_send_before_anything_is_written() -> None:
    with pytest.raises(FrameTooLarge) as caught:
        encode_frame(b"x" * 101, max_bytes=100)
    assert caught.value.length == 101
    assert "exceeds the 100-byte cap" in str(caught.value)


def test_oversize_frame_is_refused_after_reading_only_its_header() -> None:
    """A hostile length must not make us read (or allocate) the body."""
    data = encode_frame(b"y" * 5000)
    reader = ChoppedReader(data, random.Random(0), max_piece=10_000)

    async def read_capped() -> bytes:
        return await read_frame(reader, max_bytes=4096)

    with pytest.raises(FrameTooLarge):
        trio.run(read_capped)
    assert reader.position == HEADER_SIZE


@pytest.mark.parametrize("cut", [0, 2, HEADER_SIZE, HEADER_SIZE + 500])
def test_stream_ending_mid_frame_is_a_clear_error(cut: int) -> None:
    data = encode_frame(b"z" * 1000)[:cut]
    reader = ChoppedReader(data, random.Random(0), max_piece=64)

    with pytest.raises(IncompleteFrame):
        trio.run(read_frame, reader)


def test_reader_returning_more_than_asked_is_refused() -> None:
    class Greedy:
        async def read(self, max_bytes: int) -> bytes:
            return b"\x00" * (max_bytes + 1)

    with pytest.raises(FramingError):
        trio.run(read_frame, Greedy())
