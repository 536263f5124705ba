"""The outputs every sans-IO core returns: what to send, and what happened.

A core never sends anything itself; its driver (a trio actor or the simulator) drains
these and carries them out, which is what lets one core run under both drivers. What
happened is a typed event: each protocol declares its own in its `events` module as
frozen dataclasses deriving from `Event`, the way aioquic's `quic/events.py` does, and
drivers dispatch on the type (`match event: case RecordAccepted(): ...`), never on a
name, so the type checker sees every boundary between a core and its drivers.
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
    """Base of every protocol's events: something its driver, logs or observers act on."""


Effect = Send | Event
"""One output of `drain()`."""
