"""The shape every protocol core has, as aioquic's `QuicConnection`: typed inputs in, effects out.

A core never does IO and never reads a clock: `receive(now, sender, message)` feeds a
decoded message, `tick(now)` lets its timers fire, `next_deadline()` says when it next
wants a tick, and `drain()` hands over what it produced: `Send`s for the driver to
deliver and typed events (`protocols.common.effects`) for the driver to dispatch on.
The trio actor shell (`actors.protocol_actor`) and the simulator (`simulations.engine`)
drive the same cores through this one shape.
"""

from __future__ import annotations

from typing import Any, Protocol

from protocols.common.identity import NodeId


class SansIOCore(Protocol):
    """What a driver needs from a protocol core."""

    def receive(self, now: float, sender: NodeId, message: Any) -> None: ...
    def tick(self, now: float) -> None: ...
    def next_deadline(self) -> float | None: ...
    def drain(self) -> list[Any]: ...
