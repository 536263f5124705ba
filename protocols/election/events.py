"""What the election core reports: records to publish, hub changes, and this node's role."""

from __future__ import annotations

from dataclasses import dataclass

from protocols.common.effects import Event
from protocols.common.identity import NodeId
from protocols.records.events import RecordsPurged
from protocols.records.record import Record

__all__ = [
    "BecameHub",
    "ElectionEvent",
    "HubChanged",
    "PublishRecord",
    "RecordsPurged",
    "Standing",
    "SteppedDown",
]


@dataclass(frozen=True, slots=True)
class PublishRecord(Event):
    """A record the election signed (vote, hub, council, lease): store, persist and gossip it
    before the messages drained with it go out (a vote must never be sent undurable)."""

    record: Record


@dataclass(frozen=True, slots=True)
class HubChanged(Event):
    """This node's view of the hub changed: a new term was learned, or its lease first heard."""

    term: int
    hub: NodeId
    council: list[NodeId]
    lease_expires: float | None


@dataclass(frozen=True, slots=True)
class BecameHub(Event):
    """This node won `term` and holds its lease: the driver starts the hub role."""

    term: int
    council: list[NodeId]


@dataclass(frozen=True, slots=True)
class SteppedDown(Event):
    """This node stopped acting as hub of `term` (`reason`: lease lost, newer term, ...)."""

    term: int
    reason: str


@dataclass(frozen=True, slots=True)
class Standing(Event):
    """This node stands for hub of `term` with `ballot` (for logs)."""

    term: int
    ballot: int
    reconfigure: bool


ElectionEvent = PublishRecord | RecordsPurged | HubChanged | BecameHub | SteppedDown | Standing
