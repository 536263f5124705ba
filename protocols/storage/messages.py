"""Wire schemas of the storage service: fetching and pushing shares, and audits.

Share bytes do not travel inside these messages: a `ShareRequest` is answered, and a
`SharePush` is followed, by a bulk transfer of the share's bytes from `offset` (resuming
a broken transfer costs one request). The receiver checks every byte against the root
of the owner's signed artifact record as it arrives (`kernels.artifact_codec.ShareVerifier`),
so nothing here needs a signature: the transport authenticates the peer, the record
the content.

An audit asks a holder for one block of one share; the proof is the share's header
(whose hash is the root in the artifact record) and the block (whose hash the header
lists), so the auditor checks it without holding anything. A holder that cannot answer
replies `ShareReply(ok=False)`.

Repairs are delegated: the acting hub decides (its storage core), and a node it picks,
usually the first target, moves the bytes (`RepairRequest`, answered by `RepairDone`).
Every repair through the hub's own link would cap a mesh's repairs at what one machine
can move; spread over the targets, repair capacity grows with the mesh. The worker
checks that the request comes from the hub it believes in, and checks everything it
fetches against the owner's signed roots, so a request can waste its work at worst.

Every message is a tagged array; `decode_storage` refuses anything else with `WireError`.
"""

from __future__ import annotations

from typing import Annotated, Any, cast

import msgspec

from protocols.common.wire import MAX_MESSAGE_BYTES, WireStruct, decode
from protocols.records.record import Key32
from protocols.storage.records import MAX_REFUSAL_CHARS, MAX_SHARES, ShareIndex

Offset = Annotated[int, msgspec.Meta(ge=0, le=2**62)]
Chunk = Annotated[int, msgspec.Meta(ge=0, le=2**62)]
Blob = Annotated[bytes, msgspec.Meta(max_length=MAX_MESSAGE_BYTES)]


class ShareRequest(WireStruct, frozen=True, tag="st-req"):
    """Send me share `index` of `artifact_id` from byte `offset` (answered by a bulk transfer or a reply)."""

    artifact_id: Key32
    index: ShareIndex
    offset: Offset = 0


class SharePush(WireStruct, frozen=True, tag="st-push"):
    """The frame before a bulk transfer of share `index` (`size` bytes in all, root `root`) from `offset`."""

    artifact_id: Key32
    index: ShareIndex
    root: Key32
    size: Offset
    offset: Offset = 0


class ShareReply(WireStruct, frozen=True, tag="st-reply"):
    """The one-line answer to a request or a push: ok, or why not ("unknown artifact", "full: ...")."""

    ok: bool
    reason: Annotated[str, msgspec.Meta(max_length=MAX_REFUSAL_CHARS)] = ""


class AuditChallenge(WireStruct, frozen=True, tag="st-audit"):
    """Prove you hold share `index` of `artifact_id`: send its header and the block of `chunk`."""

    artifact_id: Key32
    index: ShareIndex
    chunk: Chunk


class AuditProof(WireStruct, frozen=True, tag="st-proof"):
    """The share's header bytes and the challenged block (checked with `artifact_codec.check_audit`)."""

    header: Blob
    block: Blob


class ShareAt(WireStruct, frozen=True):
    """Share `index` of an artifact, at (or for) node `node`."""

    index: ShareIndex
    node: Key32


ShareList = Annotated[list[ShareAt], msgspec.Meta(max_length=MAX_SHARES)]


class RepairRequest(WireStruct, frozen=True, tag="st-repair"):
    """The acting hub hands one repair to this node: fetch k shares from `sources`, rebuild the
    shares `targets` name, keep its own, push the others. Answered by `RepairDone` once done."""

    artifact_id: Key32
    owner: Key32
    sources: ShareList
    targets: ShareList


class RepairDone(WireStruct, frozen=True, tag="st-repaired"):
    """Which rebuilt shares are now stored where (an empty list: none could be placed)."""

    placed: ShareList


StorageMessage = (
    ShareRequest | SharePush | ShareReply | AuditChallenge | AuditProof | RepairRequest | RepairDone
)
"""Every message the storage service sends; decode with `decode_storage`."""

_MESSAGE_UNION: Any = StorageMessage


def decode_storage(data: bytes | bytearray | memoryview) -> StorageMessage:
    """Decode one storage message, raising `protocols.common.wire.WireError` for anything else."""
    return cast(StorageMessage, decode(data, _MESSAGE_UNION))
