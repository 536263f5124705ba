"""Moving shares between two nodes' share stores (`mesh.share_transfer`) over the in-memory transport.

Bad input gets a one-line refusal and leaves nothing behind: a share whose bytes do not
match its signed root, a transfer cut short, an unknown artifact, a full store, a
malformed descriptor. A fetch resumes from what a cut transfer kept, and audits catch a
holder whose share rotted.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernels.artifact_codec import ArtifactLayout, encode_file
from mesh.memory_transport import MemoryNetwork, MemoryTransport
from mesh.share_store import ShareStore
from mesh.share_transfer import SHARES_PROTOCOL, STORAGE_PROTOCOL, ShareInfo, ShareTransfer, TransferFailed
from protocols.common.identity import NodeId
from protocols.common.wire import decode, encode
from protocols.storage.messages import AuditProof, SharePush, ShareReply, ShareRequest, decode_storage

A, B = bytes([1]) * 32, bytes([2]) * 32
CHUNK = 64 * 1024


class Side:
    """One node: its transport, share store and transfer endpoint."""

    def __init__(
        self, transport: MemoryTransport, root: Path, known: dict[tuple[bytes, int], ShareInfo]
    ) -> None:
        self.transport = transport
        self.store = ShareStore(root)
        self.known = known
        self.stored = 0
        self.transfer = ShareTransfer(
            self.store, self._request, self._send_bulk, self._expected, self._on_stored
        )
        self.transfer.expect_wait_s = 0.0
        self.requests: list[bytes] = []
        transport.set_handler(STORAGE_PROTOCOL, self._serve)
        transport.set_bulk_handler(SHARES_PROTOCOL, self.transfer.receive)

    async def _serve(self, peer: NodeId, payload: bytes) -> bytes:
        self.requests.append(payload)
        return await self.transfer.serve(peer, payload)

    async def _request(self, peer: NodeId, payload: bytes, timeout: float) -> bytes:
        return await self.transport.request(peer, STORAGE_PROTOCOL, payload, timeout=timeout)

    async def _send_bulk(self, peer: NodeId, source: AsyncIterator[bytes], timeout: float) -> bytes:
        return await self.transport.send_bulk(peer, SHARES_PROTOCOL, source, timeout=timeout)

    def _expected(self, artifact_id: bytes, index: int) -> ShareInfo | None:
        return self.known.get((artifact_id, index))

    def _on_stored(self) -> None:
        self.stored += 1


def encoded(
    tmp_path: Path, size: int = 300 * 1024
) -> tuple[ArtifactLayout, Path, dict[tuple[bytes, int], ShareInfo]]:
    source = tmp_path / "source.bin"
    source.write_bytes(os.urandom(size // 2) + b"text " * (size // 10))
    staging = tmp_path / "staging"
    staging.mkdir()
    layout = encode_file(source, staging, 2, 3, chunk_bytes=CHUNK)
    known = {
        (layout.artifact_id, i): ShareInfo(
            layout.artifact_id, i, layout.share_roots[i], layout.share_sizes[i]
        )
        for i in range(layout.n)
    }
    return layout, staging, known


def run(tmp_path: Path, test: Callable[[Side, Side, ArtifactLayout, Path], Awaitable[None]]) -> None:
    layout, staging, known = encoded(tmp_path)

    async def main() -> None:
        network = MemoryNetwork()
        async with network.open(A) as ta, network.open(B) as tb:
            await test(Side(ta, tmp_path / "a", known), Side(tb, tmp_path / "b", known), layout, staging)

    trio.run(main)


def leftovers(side: Side) -> list[Path]:
    """Files in the store besides held shares: partial receipts would show up here."""
    return sorted(p for p in side.store.incoming_dir.iterdir())


def test_a_pushed_share_is_stored_and_fetched_back_byte_for_byte(tmp_path: Path) -> None:
    async def check(a: Side, b: Side, layout: ArtifactLayout, staging: Path) -> None:
        info = a.known[(layout.artifact_id, 1)]
        await a.transfer.push(B, info, staging / "1.share")
        assert b.store.has(layout.artifact_id, 1) and b.stored == 1
        part = tmp_path / "fetch" / "1.share.part"
        part.parent.mkdir()
        fetched = await a.transfer.fetch(B, info, part)
        assert fetched.read_bytes() == (staging / "1.share").read_bytes()
        assert not part.exists()

    run(tmp_path, check)


def test_a_share_whose_bytes_do_not_match_its_root_is_refused_and_nothing_is_kept(tmp_path: Path) -> None:
    async def check(a: Side, b: Side, layout: ArtifactLayout, staging: Path) -> None:
        data = bytearray((staging / "0.share").read_bytes())
        data[-10] ^= 0xFF
        bad = tmp_path / "bad.share"
        bad.write_bytes(bytes(data))
        with pytest.raises(TransferFailed, match="failed its check"):
            await a.transfer.push(B, a.known[(layout.artifact_id, 0)], bad)
        assert not b.store.has(layout.artifact_id, 0)
        assert leftovers(b) == []

    run(tmp_path, check)


def test_a_transfer_cut_short_leaves_nothing_behind(tmp_path: Path) -> None:
    async def check(a: Side, b: Side, layout: ArtifactLayout, staging: Path) -> None:
        info = a.known[(layout.artifact_id, 2)]
        whole = (staging / "2.share").read_bytes()

        async def cut() -> AsyncIterator[bytes]:
            yield encode(SharePush(info.artifact_id, info.index, info.root, info.size, 0))
            yield whole[: len(whole) // 2]
            raise OSError("the sender's disk went away")

        with pytest.raises(OSError):
            await a.transport.send_bulk(B, SHARES_PROTOCOL, cut(), timeout=10)
        await trio.sleep(0.1)
        assert not b.store.has(layout.artifact_id, 2)
        assert leftovers(b) == []

    run(tmp_path, check)


def test_unknown_artifacts_full_stores_and_malformed_descriptors_get_one_line_refusals(
    tmp_path: Path,
) -> None:
    async def check(a: Side, b: Side, layout: ArtifactLayout, staging: Path) -> None:
        info = a.known[(layout.artifact_id, 0)]
        b.known.pop((layout.artifact_id, 0))
        with pytest.raises(TransferFailed, match="unknown artifact"):
            await a.transfer.push(B, info, staging / "0.share")
        b.known[(layout.artifact_id, 0)] = info
        b.store.limit_bytes = 0
        with pytest.raises(TransferFailed, match="offers no disk"):
            await a.transfer.push(B, info, staging / "0.share")
        reply = await a.transport.send_bulk(B, SHARES_PROTOCOL, [b"\xff not a descriptor"], timeout=10)
        answer = decode(reply, ShareReply)
        assert not answer.ok and "malformed" in answer.reason
        assert b.transfer.counters["malformed_push"] == 1
        assert leftovers(b) == [] and b.store.holdings() == []

    run(tmp_path, check)


def test_a_fetch_resumes_from_what_a_cut_transfer_kept_and_restarts_when_those_bytes_are_wrong(
    tmp_path: Path,
) -> None:
    async def check(a: Side, b: Side, layout: ArtifactLayout, staging: Path) -> None:
        info = a.known[(layout.artifact_id, 0)]
        await a.transfer.push(B, info, staging / "0.share")
        whole = (staging / "0.share").read_bytes()
        folder = tmp_path / "fetch"
        folder.mkdir()
        part = folder / "0.share.part"
        part.write_bytes(whole[:1000])
        fetched = await a.transfer.fetch(B, info, part)
        assert fetched.read_bytes() == whole
        asked = decode_storage(b.requests[-1])
        assert isinstance(asked, ShareRequest) and asked.offset == 1000
        fetched.unlink()
        part.write_bytes(b"\0" * 1000)  # kept bytes that are wrong: start over
        assert (await a.transfer.fetch(B, info, part)).read_bytes() == whole
        asked = decode_storage(b.requests[-1])
        assert isinstance(asked, ShareRequest) and asked.offset == 0

    run(tmp_path, check)


def test_an_audit_passes_for_a_true_holder_and_fails_once_its_share_rotted(tmp_path: Path) -> None:
    async def check(a: Side, b: Side, layout: ArtifactLayout, staging: Path) -> None:
        info = a.known[(layout.artifact_id, 1)]
        await a.transfer.push(B, info, staging / "1.share")
        assert await a.transfer.audit(B, info, 0)
        held = b.store.path_of(layout.artifact_id, 1)
        assert held is not None
        data = bytearray(held.read_bytes())
        data[-5] ^= 0x01  # the last chunk's block
        held.write_bytes(bytes(data))
        last = layout.chunk_count - 1
        assert not await a.transfer.audit(B, info, last)
        assert b.store.counters["corrupt_shares"] == 1 and not b.store.has(layout.artifact_id, 1)
        assert not await a.transfer.audit(B, info, 0)  # dropped: nothing to show any more

    run(tmp_path, check)


def test_a_peer_asking_for_a_share_not_held_gets_a_reason(tmp_path: Path) -> None:
    async def check(a: Side, b: Side, layout: ArtifactLayout, staging: Path) -> None:
        info = a.known[(layout.artifact_id, 2)]
        part = tmp_path / "2.share.part"
        with pytest.raises(TransferFailed, match="not held"):
            await a.transfer.fetch(B, info, part)

    run(tmp_path, check)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    first=st.binary(max_size=300),
    rest=st.lists(st.binary(max_size=200), max_size=3),
    request=st.binary(max_size=300),
)
def test_random_bytes_on_either_protocol_get_a_refusal_never_a_crash(
    tmp_path: Path, first: bytes, rest: list[bytes], request: bytes
) -> None:
    async def check(a: Side, b: Side, layout: ArtifactLayout, staging: Path) -> None:
        reply = await a.transport.send_bulk(
            B, SHARES_PROTOCOL, [first, *rest] if first else [b"x"], timeout=10
        )
        assert isinstance(decode_storage(reply), ShareReply)
        answer = decode_storage(await a.transport.request(B, STORAGE_PROTOCOL, request, timeout=10))
        assert isinstance(answer, ShareReply | AuditProof)
        assert leftovers(b) == []

    with tempfile.TemporaryDirectory() as folder:
        run(Path(folder), check)
