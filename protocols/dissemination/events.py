"""What the dissemination core reports to its driver: records accepted and clock claims moved."""

from __future__ import annotations

from dataclasses import dataclass

from protocols.common.effects import Event
from protocols.common.identity import NodeId
from protocols.records.events import RecordsPurged
from protocols.records.record import Record

__all__ = ["ClockAdvanced", "DisseminationEvent", "RecordAccepted", "RecordsPurged"]


@dataclass(frozen=True, slots=True)
class RecordAccepted(Event):
    """A record entered the store (the driver persists it before anything is acknowledged).

    `via` is how it came: `local` (published here), `push` or `sync` (anti-entropy);
    `sender` is the peer it came from (None when local).
    """

    record: Record
    via: str
    sender: NodeId | None


@dataclass(frozen=True, slots=True)
class ClockAdvanced(Event):
    """Clock claims that moved (author -> seq), persisted with the records they cover."""

    changes: dict[NodeId, int]


DisseminationEvent = RecordAccepted | RecordsPurged | ClockAdvanced
