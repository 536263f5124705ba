"""The outputs every sans-IO core returns: what to send, and what happened.

A core never sends anything itself; its driver (a trio actor or the simulator) drains
these and carries them out, which is what lets one core run under both drivers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from protocols.common.identity import NodeId


@dataclass(frozen=True, slots=True)
class Send:
    """Deliver `message` (a wire struct of the core's protocol) to peer `to`."""

    to: NodeId
    message: Any


@dataclass(frozen=True, slots=True)
class Event:
    """Something an observer (status, logs, simulator invariants) may want to know."""

    name: str
    data: dict[str, Any]
