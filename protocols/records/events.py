"""Events about the record store that more than one protocol reports."""

from __future__ import annotations

from dataclasses import dataclass

from protocols.common.effects import Event
from protocols.records.record import Record


@dataclass(frozen=True, slots=True)
class RecordsPurged(Event):
    """Records the store dropped (a revocation's cut-off, or a fence raised by a newer term):
    a driver deletes them from disk too."""

    records: list[Record]
