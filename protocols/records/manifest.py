"""The node manifest record: how to reach a node and what it runs (its signed header).

Peers dial a member at the addresses in its newest manifest, so addresses spread with
the same gossip as every other record and are as trustworthy as the member's key.
Capabilities, benchmark scores, R/B/Y and limits join this record as the hardware
daemon publishes them.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from protocols.common.identity import NodeIdentity
from protocols.common.wire import WireStruct, decode, encode
from protocols.records.record import Record, sign_record

MANIFEST = "manifest"


class NodeManifest(WireStruct, frozen=True):
    addresses: Annotated[list[Annotated[str, msgspec.Meta(max_length=256)]], msgspec.Meta(max_length=16)]
    software_version: str
    started_at: float
    details: dict[str, Any] = msgspec.field(default_factory=dict)


def make_manifest(identity: NodeIdentity, mesh: bytes, seq: int, manifest: NodeManifest) -> Record:
    return sign_record(identity, mesh, MANIFEST, "", seq, encode(manifest))


def manifest_body(record: Record) -> NodeManifest:
    """Decode a manifest body (raises `WireError` when malformed)."""
    return decode(record.body, NodeManifest)
