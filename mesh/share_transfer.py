"""Moving shares between nodes over the bulk path: push, resumable fetch, and audits.

Two protocols carry storage traffic:

- `/ileices/shares/1` (bulk, TCP): one share, streamed. The first chunk is a
  `SharePush` descriptor (artifact, share index, root, size, offset); the rest are the
  share file's bytes from `offset`, at most `BULK_CHUNK_BYTES` each, never the whole
  share in memory. The receiver checks every byte as it arrives (`ShareVerifier`: the
  header against the root in the owner's signed record, each block against the header)
  and commits only a whole, correct share: a wrong byte or a cut transfer leaves nothing
  behind. A push is either a share to *store* (put and repair) or the answer to one of
  this node's own fetches, which it waits for by (peer, artifact, index).
- `/ileices/storage/1` (requests): a `ShareRequest` asks a holder to push a share back
  from an offset, and is answered once that push ended, with a one-line `ShareReply`;
  an `AuditChallenge` asks for one block of a share and its header, answered by an
  `AuditProof` the auditor checks against the signed root (`check_audit`); a
  `RepairRequest` hands this node a repair (`on_repair`), answered by `RepairDone`.

A fetch is resumable: the bytes received so far stay in `<index>.part`; the next fetch
of that share re-checks them from disk, then asks the holder for the rest only.

Why push-back rather than reading a reply stream: the bulk path is one-way with a short
reply (its size and hash are checked end to end), and the holder already knows how to
read and verify its own share; the requester keeps the request open while it arrives.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import trio

from kernels.artifact_codec import ShareCorrupt, ShareVerifier, check_audit
from mesh.share_store import ShareRefused, ShareStore
from mesh.transport import BULK_CHUNK_BYTES, BulkIncoming, IntegrityError, TransportError
from protocols.common.identity import NodeId
from protocols.common.wire import MAX_MESSAGE_BYTES, WireError, decode, encode
from protocols.storage.messages import (
    AuditChallenge,
    AuditProof,
    RepairRequest,
    SharePush,
    ShareReply,
    ShareRequest,
    decode_storage,
)
from protocols.storage.records import MAX_REFUSAL_CHARS

log = logging.getLogger(__name__)

SHARES_PROTOCOL = "/ileices/shares/1"
STORAGE_PROTOCOL = "/ileices/storage/1"
TRANSFER_TIMEOUT = 900.0
"""Longest one share transfer may take (a 2 GB artifact's share over a slow link)."""
AUDIT_TIMEOUT = 30.0
DESCRIPTOR_MAX = 4096
PROOF_FRAMING = 64
"""Bytes a proof's MessagePack framing adds to its header and block, at most."""
PROOF_TOO_LARGE = "proof too large for one message"
EXPECT_WAIT_S = 5.0
"""How long a pushed share waits for its artifact record, which the owner published just before."""


class TransferFailed(Exception):
    """A share could not be moved; the message is one line for logs and users."""


@dataclass(frozen=True)
class ShareInfo:
    """What the owner's signed record says about one share: where to check it from."""

    artifact_id: bytes
    index: int
    root: bytes
    size: int


Requester = Callable[[NodeId, bytes, float], Awaitable[bytes]]
"""Send one request payload to a peer (dialling it if needed) and return its reply."""
BulkSender = Callable[[NodeId, AsyncIterator[bytes], float], Awaitable[bytes]]
"""Stream a source to a peer's `/ileices/shares/1` handler and return its reply."""


@dataclass
class _Fetch:
    """One of this node's own fetches, waiting for the holder's push."""

    info: ShareInfo
    part: Path
    verifier: ShareVerifier
    received: int
    done: trio.Event = field(default_factory=trio.Event)
    error: str | None = None


class ShareTransfer:
    """This node's end of both storage protocols.

    `expected(artifact_id, index)` returns a share's signed facts when this node knows the
    artifact (None: refuse the push); `on_stored` is told when this node's holdings changed.
    """

    def __init__(
        self,
        store: ShareStore,
        request: Requester,
        send_bulk: BulkSender,
        expected: Callable[[bytes, int], ShareInfo | None],
        on_stored: Callable[[], None],
    ) -> None:
        self._store = store
        self._request = request
        self._send_bulk = send_bulk
        self._expected = expected
        self._on_stored = on_stored
        self._fetches: dict[tuple[NodeId, bytes, int], _Fetch] = {}
        self.counters: dict[str, int] = {}
        self.expect_wait_s = EXPECT_WAIT_S
        self.on_repair: Callable[[NodeId, RepairRequest], Awaitable[bytes]] | None = None
        """Carries out a repair the acting hub hands this node (`mesh.storage_service`)."""

    def _count(self, name: str, by: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + by

    # ---- sending ------------------------------------------------------------------------------------

    async def push(self, peer: NodeId, info: ShareInfo, path: Path) -> None:
        """Stream the share file at `path` to `peer` for it to store; raises `TransferFailed`."""
        descriptor = encode(SharePush(info.artifact_id, info.index, info.root, info.size, 0))
        try:
            reply = await self._send_bulk(peer, _file_source(descriptor, path, 0), TRANSFER_TIMEOUT)
        except TransportError as exc:
            raise TransferFailed(f"pushing share {info.index} to {peer.hex()[:12]} failed: {exc}") from exc
        answer = _reply(reply)
        if not answer.ok:
            raise TransferFailed(f"{peer.hex()[:12]} refused share {info.index}: {answer.reason}")
        self._count("shares_pushed")
        self._count("share_bytes_out", info.size)

    async def fetch(self, peer: NodeId, info: ShareInfo, part: Path) -> Path:
        """Fetch a share from `peer` into `part` (resuming what it holds); returns the finished file.

        The finished file is `part` without its `.part` suffix, checked whole. Raises
        `TransferFailed` (the bytes kept stay for a resume unless they proved wrong).
        """
        final = part.with_suffix("")
        if final.exists():
            return final
        key = (peer, info.artifact_id, info.index)
        if key in self._fetches:
            raise TransferFailed(f"share {info.index} is already being fetched from {peer.hex()[:12]}")
        verifier = ShareVerifier(info.root, artifact_id=info.artifact_id, index=info.index)
        received = await trio.to_thread.run_sync(_refeed, part, verifier)
        if received is None:  # the kept bytes were wrong: start over
            part.unlink(missing_ok=True)
            verifier = ShareVerifier(info.root, artifact_id=info.artifact_id, index=info.index)
            received = 0
        fetch = _Fetch(info, part, verifier, received)
        self._fetches[key] = fetch
        try:
            if received < info.size:
                payload = encode(ShareRequest(info.artifact_id, info.index, received))
                try:
                    reply = await self._request(peer, payload, TRANSFER_TIMEOUT)
                except TransportError as exc:
                    raise TransferFailed(
                        f"fetching share {info.index} from {peer.hex()[:12]}: {exc}"
                    ) from exc
                answer = _reply(reply)
                if not answer.ok:
                    raise TransferFailed(f"{peer.hex()[:12]} cannot send share {info.index}: {answer.reason}")
                with trio.move_on_after(5):  # the reply follows the push's end; allow a moment
                    await fetch.done.wait()
                if fetch.error is not None:
                    raise TransferFailed(fetch.error)
            try:
                fetch.verifier.finish()
            except ShareCorrupt as exc:
                part.unlink(missing_ok=True)
                raise TransferFailed(f"share {info.index} from {peer.hex()[:12]} is wrong: {exc}") from exc
            part.rename(final)
            self._count("shares_fetched")
            return final
        finally:
            del self._fetches[key]

    # ---- receiving ------------------------------------------------------------------------------------

    async def receive(self, peer: NodeId, incoming: BulkIncoming) -> bytes:
        """The bulk handler: a share to store, or the answer to one of our fetches."""
        chunks = incoming.__aiter__()
        try:
            first = await chunks.__anext__()
        except StopAsyncIteration:
            return _refuse("empty transfer")
        try:
            push = decode(first, SharePush, max_bytes=DESCRIPTOR_MAX)
        except WireError as exc:
            self._count("malformed_push")
            return _refuse(f"malformed share descriptor: {exc}")
        fetch = self._fetches.get((peer, push.artifact_id, push.index))
        if fetch is not None:
            return await self._receive_fetched(fetch, push, chunks)
        return await self._receive_to_store(peer, push, chunks)

    async def _receive_fetched(self, fetch: _Fetch, push: SharePush, chunks: AsyncIterator[bytes]) -> bytes:
        if push.offset != fetch.received or push.root != fetch.info.root:
            fetch.error = "the holder sent another range or share than asked"
            fetch.done.set()
            return _refuse(fetch.error)
        try:
            with fetch.part.open("ab") as out:
                async for chunk in chunks:
                    fetch.verifier.feed(chunk)
                    out.write(chunk)
                    fetch.received += len(chunk)
        except ShareCorrupt as exc:
            fetch.part.unlink(missing_ok=True)
            fetch.error = f"share {push.index} failed its check: {exc}"
            self._count("corrupt_received")
        except (IntegrityError, TransportError) as exc:
            fetch.error = f"share {push.index} transfer cut: {exc}"  # the bytes kept resume it
            fetch.done.set()
            raise
        fetch.done.set()
        return _refuse(fetch.error) if fetch.error is not None else encode(ShareReply(True, ""))

    async def _receive_to_store(self, peer: NodeId, push: SharePush, chunks: AsyncIterator[bytes]) -> bytes:
        info = await self._wait_expected(push.artifact_id, push.index)
        if info is None:
            self._count("refused_unknown")
            return _refuse("unknown artifact (no signed record for it here)")
        if push.root != info.root or push.size != info.size or push.offset != 0:
            self._count("refused_mismatch")
            return _refuse("share does not match the artifact's signed record")
        if self._store.has(push.artifact_id, push.index):
            async for _ in chunks:  # already held: drain and acknowledge
                pass
            return encode(ShareReply(True, "already held"))
        try:
            with self._store.begin(push.artifact_id, push.index, push.root, push.size) as incoming:
                async for chunk in chunks:
                    incoming.write(chunk)
                incoming.commit()
        except ShareRefused as exc:
            self._count("refused_full")
            return _refuse(str(exc))
        except ShareCorrupt as exc:
            self._count("corrupt_received")
            return _refuse(f"share failed its check: {exc}")
        self._count("shares_stored")
        log.info("stored share %d of %s from %s", push.index, push.artifact_id.hex()[:12], peer.hex()[:12])
        self._on_stored()
        return encode(ShareReply(True, ""))

    async def _wait_expected(self, artifact_id: bytes, index: int) -> ShareInfo | None:
        """The signed facts for a pushed share; the owner's record may still be on its way."""
        deadline = trio.current_time() + self.expect_wait_s
        while True:
            info = self._expected(artifact_id, index)
            if info is not None or trio.current_time() >= deadline:
                return info
            await trio.sleep(0.25)

    # ---- serving requests ---------------------------------------------------------------------------

    async def serve(self, peer: NodeId, payload: bytes) -> bytes:
        """The request handler of `/ileices/storage/1`."""
        try:
            message = decode_storage(payload)
        except WireError as exc:
            self._count("malformed_request")
            return _refuse(f"malformed request: {exc}")
        match message:
            case ShareRequest():
                return await self._serve_share(peer, message)
            case AuditChallenge():
                return await self._serve_audit(message)
            case RepairRequest():
                if self.on_repair is None:
                    return _refuse("this node does not take repairs")
                return await self.on_repair(peer, message)
        self._count("malformed_request")
        return _refuse("not a request")

    async def _serve_share(self, peer: NodeId, request: ShareRequest) -> bytes:
        info = self._expected(request.artifact_id, request.index)
        if info is None or not self._store.has(request.artifact_id, request.index):
            return _refuse("share not held here")
        if request.offset > info.size:
            return _refuse("offset past the end of the share")
        descriptor = encode(SharePush(info.artifact_id, info.index, info.root, info.size, request.offset))
        reader = self._store.read(info.artifact_id, info.index, info.root, request.offset)
        try:
            reply = await self._send_bulk(peer, _iterator_source(descriptor, reader), TRANSFER_TIMEOUT)
        except ShareCorrupt as exc:
            self._count("corrupt_on_read")
            self._on_stored()  # the store dropped it: holdings changed
            return _refuse(f"share failed its check here and was dropped: {exc}")
        except TransportError as exc:
            return _refuse(f"sending failed: {exc}")
        answer = _reply(reply)
        if answer.ok:
            self._count("shares_served")
        return encode(answer)

    async def _serve_audit(self, challenge: AuditChallenge) -> bytes:
        info = self._expected(challenge.artifact_id, challenge.index)
        if info is None or not self._store.has(challenge.artifact_id, challenge.index):
            return _refuse("share not held here")
        try:
            header, block = await trio.to_thread.run_sync(
                self._store.read_block, challenge.artifact_id, challenge.index, info.root, challenge.chunk
            )
        except ShareCorrupt as exc:
            self._count("corrupt_on_read")
            self._on_stored()
            return _refuse(f"share failed its check here and was dropped: {exc}")
        except (IndexError, ValueError) as exc:
            return _refuse(f"bad challenge: {exc}")
        if len(header) + len(block) + PROOF_FRAMING > MAX_MESSAGE_BYTES:
            # Over ~100 GB (a header of tens of thousands of chunks) the proof no longer fits
            # one message: say so, and the auditor counts the audit as not made.
            return _refuse(PROOF_TOO_LARGE)
        self._count("audits_answered")
        return encode(AuditProof(header, block))

    # ---- auditing -------------------------------------------------------------------------------------

    async def audit(self, holder: NodeId, info: ShareInfo, chunk: int) -> bool | None:
        """Challenge `holder` for block `chunk` of a share; True when its proof checks out,
        None when the proof cannot fit one message (an artifact of over ~100 GB).

        No answer, a refusal and a wrong proof all fail: a holder membership calls alive
        that cannot show the block does not have it, as far as the mesh can tell.
        """
        payload = encode(AuditChallenge(info.artifact_id, info.index, chunk))
        try:
            reply = await self._request(holder, payload, AUDIT_TIMEOUT)
            proof = decode_storage(reply)
        except (TransportError, WireError):
            return False
        if isinstance(proof, ShareReply) and proof.reason == PROOF_TOO_LARGE:
            return None
        if not isinstance(proof, AuditProof):
            return False
        return check_audit(info.root, chunk, proof.header, proof.block)


def _refuse(reason: str) -> bytes:
    """A refusal's reply: one line, cut to what the wire allows."""
    line = " ".join(reason.split())
    if len(line) > MAX_REFUSAL_CHARS:
        line = line[: MAX_REFUSAL_CHARS - 3] + "..."
    return encode(ShareReply(False, line))


def _reply(data: bytes) -> ShareReply:
    try:
        message = decode_storage(data)
    except WireError as exc:
        return ShareReply(False, f"malformed reply: {exc}")
    if isinstance(message, ShareReply):
        return message
    return ShareReply(False, "unexpected reply")


def _refeed(part: Path, verifier: ShareVerifier) -> int | None:
    """Feed what a previous fetch kept to a fresh verifier; None when those bytes are wrong."""
    if not part.exists():
        return 0
    received = 0
    try:
        with part.open("rb") as kept:
            while piece := kept.read(BULK_CHUNK_BYTES):
                verifier.feed(piece)
                received += len(piece)
    except ShareCorrupt:
        return None
    return received


async def _file_source(descriptor: bytes, path: Path, offset: int) -> AsyncIterator[bytes]:
    """The descriptor, then the file's bytes from `offset` (read off the event loop)."""
    yield descriptor
    with path.open("rb") as source:
        source.seek(offset)
        while piece := await trio.to_thread.run_sync(source.read, BULK_CHUNK_BYTES):
            yield piece


async def _iterator_source(descriptor: bytes, reader: Iterator[bytes]) -> AsyncIterator[bytes]:
    """The descriptor, then a checked share reader's pieces (each read off the event loop)."""
    yield descriptor
    while True:
        piece = await trio.to_thread.run_sync(next, reader, None)
        if piece is None:
            return
        yield piece
