"""What the storage core reports: repairs and audits for the acting hub to run, losses, and shares to free."""

from __future__ import annotations

from dataclasses import dataclass

from protocols.common.effects import Event
from protocols.common.identity import NodeId


@dataclass(frozen=True, slots=True)
class RepairDue(Event):
    """Artifact `artifact_id` has `healthy` of its `n` shares (it needs `k`): rebuild the `missing` ones.

    `sources`: every `(index, holder)` still counted healthy (more than k, so a failed
    download has a fallback). `targets`: `(index, node)` where each rebuilt share goes,
    chosen by rendezvous hashing among live accepting nodes that hold nothing of it; it
    may cover fewer indices than `missing` when room is short. Once pushed, the hub
    publishes a placement of `generation` and reports `repair_finished`.
    """

    artifact_id: bytes
    healthy: int
    k: int
    n: int
    missing: tuple[int, ...]
    sources: tuple[tuple[int, NodeId], ...]
    targets: tuple[tuple[int, NodeId], ...]
    generation: int
    owner: NodeId = b""
    """The author of the artifact record this repair follows (its share roots are the ones to rebuild)."""


@dataclass(frozen=True, slots=True)
class AuditDue(Event):
    """Ask `holder` to prove it holds share `index` of `artifact_id` (the block of `chunk`)."""

    holder: NodeId
    artifact_id: bytes
    index: int
    chunk: int


@dataclass(frozen=True, slots=True)
class AuditFailed(Event):
    """`holder` failed an audit of share `index`; `failures`: its running count of failed audits."""

    holder: NodeId
    artifact_id: bytes
    index: int
    failures: int


@dataclass(frozen=True, slots=True)
class ArtifactLost(Event):
    """Fewer than `k` shares of `artifact_id` are held by live nodes (`healthy`): it cannot be rebuilt now."""

    artifact_id: bytes
    healthy: int
    k: int


@dataclass(frozen=True, slots=True)
class FreeShares(Event):
    """This node holds shares of an artifact that was deleted or expired (`reason`): delete them."""

    artifact_id: bytes
    reason: str


StorageEvent = RepairDue | AuditDue | AuditFailed | ArtifactLost | FreeShares
