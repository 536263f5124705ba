"""One deterministic driver for sans-IO cores in tests: virtual time, a heap of deliveries, a seeded network.

A core is any object with `receive(now, sender, message)`, `tick(now)`, `next_deadline()`
and `drain()`. The harness runs nodes, each with one core per protocol (a `Send` drained
from a node's "election" core goes to the receiver's "election" core), with no event loop
and no threads: every random draw of the network comes from one `random.Random`.

Each step takes the earliest of, in this order on equal times:

1. an action scheduled with `schedule` (ties: the order they were scheduled);
2. a delivery, a message in flight (ties: the order they were sent);
3. a timer: a core's `next_deadline()`, read afresh from every running core at each
   step, so a deadline moved by a direct call into a core counts at once (ties: the
   order the nodes, then their cores, were added; a deadline already past fires now).

Every node has its own clock (`rate`, `offset`): cores only ever see local time
`offset + rate * now`, while the harness runs in real (virtual) time `now`.

The network. Each `Send` drained from a running node counts in `sent`, is lost with
probability `loss` (one draw per send, even at 0, so a seed always draws the same
numbers), dropped if a `drop_rules` predicate says so at send time, encoded with
`protocols.common.wire.encode` (unless `wire=False`: then the object itself travels) and
delayed by `latency`. On arrival it is dropped if the receiver is down, if sender and
receiver are in different `partition` groups at that moment, or if an `arrival_rules`
predicate says so; otherwise it is decoded with the receiving core's `message_type`
(or, with no type, handed as bytes to the core's own `receive_bytes`) and received, and
the receiving node is drained.

Draining a node ("flush") repeats until all its cores are quiet: everything drained that
is not a `Send` is an event, which the harness never looks into; it goes to the
handlers registered with `on(EventType, handler)` (matched on the event's type and its
bases) and then to `on_event(node, event)`. Handlers may call into cores. `trace`
records, in order, every output drained ("out") and every message received ("in").
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from protocols.common.effects import Send
from protocols.common.wire import decode, encode

NodeKey = Any
"""Whatever identifies a node (node ids are bytes); hashable."""
LinkRule = Callable[[float, NodeKey, NodeKey, Any], bool]
"""(time, sender, receiver, message object) -> True to drop the message."""
EventHandler = Callable[[NodeKey, Any], None]
Latency = float | tuple[float, float] | Callable[[random.Random, NodeKey, NodeKey], float]
"""Fixed seconds (no random draw), a `uniform(low, high)` draw, or a function of the link."""
Loss = float | Callable[[NodeKey, NodeKey], float]
"""A probability for every link, or a function of the link."""

MAIN = "main"
"""The protocol name of a node's core when it has only one."""


@dataclass(frozen=True, slots=True)
class Traced:
    """One line of the trace: `node` drained `item` ("out"), or received message `item` from `peer` ("in")."""

    at: float
    kind: str
    node: NodeKey
    protocol: str
    item: Any
    peer: NodeKey = None


@dataclass
class _Slot:
    protocol: str
    core: Any
    message_type: Any


@dataclass
class _Node:
    key: NodeKey
    rate: float = 1.0
    offset: float = 0.0
    slots: dict[str, _Slot] = field(default_factory=dict)

    def local(self, at: float) -> float:
        return self.offset + self.rate * at

    def real(self, local: float) -> float:
        return (local - self.offset) / self.rate


class SansIOHarness:
    """Nodes of sans-IO cores on a simulated network, run in virtual time (see the module docstring)."""

    def __init__(
        self,
        *,
        seed: int = 0,
        rng: random.Random | None = None,
        latency: Latency = 0.0,
        loss: Loss = 0.0,
        wire: bool = True,
        on_event: EventHandler | None = None,
        after_flush: Callable[[NodeKey], None] | None = None,
        after_step: Callable[[], None] | None = None,
        trace: bool = True,
    ) -> None:
        self.rng = rng if rng is not None else random.Random(seed)
        self.latency = latency
        self.loss = loss
        self.wire = wire
        self.on_event = on_event
        self.after_flush = after_flush
        """Called after each flush of a node, once it is quiet."""
        self.after_step = after_step
        """Called after each step that ran an action, delivered a message or fired a timer."""
        self.now = 0.0
        self.down: set[NodeKey] = set()
        self.groups: dict[NodeKey, int] = {}
        """Partition groups (absent: group 0); messages only arrive within a group."""
        self.drop_rules: list[LinkRule] = []
        self.arrival_rules: list[LinkRule] = []
        self.trace: list[Traced] | None = [] if trace else None
        self.sent = 0
        """Sends drained from running nodes (or injected with `send`), lost ones included."""
        self.lost = 0
        self.dropped = 0
        """Sends refused by a drop rule, plus messages dropped on arrival."""
        self.delivered = 0
        self.sent_bytes: list[int] = []
        """Encoded size of every message put in flight (with `wire`)."""
        self._nodes: dict[NodeKey, _Node] = {}
        self._handlers: dict[type, list[EventHandler]] = {}
        self._deliveries: list[tuple[float, int, NodeKey, NodeKey, str, Any, Any]] = []
        self._actions: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = 0

    # ---- building ----------------------------------------------------------------------------

    def add(
        self,
        node: NodeKey,
        core: Any,
        *,
        protocol: str = MAIN,
        message_type: Any = None,
        rate: float | None = None,
        offset: float | None = None,
    ) -> Any:
        """Give `node` (added on first use) `core` for `protocol`, replacing any core it had there.

        `message_type` is what arriving bytes are decoded as (`protocols.common.wire.decode`);
        without it, the core's own `receive_bytes(now, sender, data)` decodes them. `rate`
        and `offset` set the node's clock (a restarted process may get a new one).
        """
        if self.wire and message_type is None and not hasattr(core, "receive_bytes"):
            raise TypeError(f"{type(core).__name__} has no receive_bytes: give a message_type to decode with")
        entry = self._nodes.get(node)
        if entry is None:
            entry = self._nodes[node] = _Node(node)
        if rate is not None:
            entry.rate = rate
        if offset is not None:
            entry.offset = offset
        entry.slots[protocol] = _Slot(protocol, core, message_type)
        return core

    def on(self, event_type: type, handler: EventHandler) -> None:
        """Call `handler(node, event)` for every event that is an instance of `event_type`."""
        self._handlers.setdefault(event_type, []).append(handler)

    # ---- reading -----------------------------------------------------------------------------

    @property
    def nodes(self) -> list[NodeKey]:
        """Every node, in the order added."""
        return list(self._nodes)

    def core(self, node: NodeKey, protocol: str = MAIN) -> Any:
        return self._nodes[node].slots[protocol].core

    def cores(self, protocol: str = MAIN) -> dict[NodeKey, Any]:
        """Node -> its core for `protocol`, in the order the nodes were added."""
        return {
            key: entry.slots[protocol].core for key, entry in self._nodes.items() if protocol in entry.slots
        }

    def running(self) -> list[NodeKey]:
        """Nodes that are not down, in the order added."""
        return [key for key in self._nodes if key not in self.down]

    def local(self, node: NodeKey, at: float | None = None) -> float:
        """`node`'s local time at real time `at` (default: now)."""
        return self._nodes[node].local(self.now if at is None else at)

    def outputs(self, kind: str = "out") -> Iterator[Traced]:
        """The trace lines of one kind ("out" or "in")."""
        return (line for line in self.trace or () if line.kind == kind)

    # ---- breaking ----------------------------------------------------------------------------

    def crash(self, node: NodeKey) -> None:
        """`node` stops: no timers, messages to it are dropped on arrival, its sends are dropped."""
        self.down.add(node)

    def recover(self, node: NodeKey) -> None:
        """`node` runs again with the cores it has (its deadlines already past fire at once)."""
        self.down.discard(node)

    def partition(self, *groups: Iterable[NodeKey]) -> None:
        """Nodes only reach nodes of their own group from now on (unlisted nodes: one more group)."""
        self.groups = {node: index for index, members in enumerate(groups, start=1) for node in members}

    def heal(self) -> None:
        self.groups = {}

    def connected(self, a: NodeKey, b: NodeKey) -> bool:
        return self.groups.get(a, 0) == self.groups.get(b, 0)

    # ---- driving -----------------------------------------------------------------------------

    def schedule(self, delay: float, action: Callable[[], None]) -> None:
        """Run `action()` at `now + delay`, before deliveries and timers due at the same time."""
        self._seq += 1
        heapq.heappush(self._actions, (self.now + delay, self._seq, action))

    def act(self, node: NodeKey, action: Callable[[Any], object], protocol: str = MAIN) -> None:
        """Call into one core now (`action(core)`), then carry out what it produced."""
        action(self.core(node, protocol))
        self.flush(node)

    def tick(self, node: NodeKey, protocols: Iterable[str] | None = None) -> None:
        """Tick `node`'s cores (all, or those named) at its local time now, as a driver does when it
        starts, then flush."""
        entry = self._nodes[node]
        names = list(entry.slots) if protocols is None else list(protocols)
        for name in names:
            self._tick_core(entry, entry.slots[name])
        self.flush(node)

    def send(self, sender: NodeKey, to: NodeKey, message: Any, protocol: str = MAIN) -> None:
        """Put `message` on the network as if `sender`'s core had sent it now."""
        self._send(sender, protocol, to, message)

    def flush(self, node: NodeKey) -> None:
        """Drain `node` until every core of it is quiet: sends go out, events go to the handlers."""
        slots = self._nodes[node].slots.values()
        while True:
            drained = [(slot.protocol, effect) for slot in slots for effect in slot.core.drain()]
            if not drained:
                break
            for protocol, effect in drained:
                if self.trace is not None:
                    self.trace.append(Traced(self.now, "out", node, protocol, effect))
                if isinstance(effect, Send):
                    self._send(node, protocol, effect.to, effect.message)
                else:
                    self._event(node, effect)
        if self.after_flush is not None:
            self.after_flush(node)

    def run_until(self, end: float) -> None:
        """Run every action, delivery and timer due at or before `end`; then `now` is `end`."""
        while True:
            action_at = self._actions[0][0] if self._actions else math.inf
            delivery_at = self._deliveries[0][0] if self._deliveries else math.inf
            timer_at, timer = self._next_timer()
            at = min(action_at, delivery_at, timer_at)
            if at > end:
                break
            self.now = at
            if action_at == at:
                heapq.heappop(self._actions)[2]()
            elif delivery_at == at:
                if not self._deliver(heapq.heappop(self._deliveries)):
                    continue
            else:
                assert timer is not None
                entry, slot = timer
                self._tick_core(entry, slot)
                self.flush(entry.key)
            if self.after_step is not None:
                self.after_step()
        self.now = max(self.now, end)

    def run_for(self, duration: float) -> None:
        self.run_until(self.now + duration)

    def settle(self, max_steps: int = 1_000_000) -> None:
        """Run actions and deliveries until none is left, firing no timer (for zero-latency
        exchanges that must finish before anything else happens)."""
        for _ in range(max_steps):
            action_at = self._actions[0][0] if self._actions else math.inf
            delivery_at = self._deliveries[0][0] if self._deliveries else math.inf
            if action_at == delivery_at == math.inf:
                return
            self.now = max(self.now, min(action_at, delivery_at))
            if action_at <= delivery_at:
                heapq.heappop(self._actions)[2]()
            elif not self._deliver(heapq.heappop(self._deliveries)):
                continue
            if self.after_step is not None:
                self.after_step()
        raise AssertionError(f"the network was still busy after {max_steps} steps")

    # ---- inside ------------------------------------------------------------------------------

    def _next_timer(self) -> tuple[float, tuple[_Node, _Slot] | None]:
        best_at, best = math.inf, None
        for key, entry in self._nodes.items():
            if key in self.down:
                continue
            for slot in entry.slots.values():
                deadline = slot.core.next_deadline()
                if deadline is not None:
                    at = max(self.now, entry.real(deadline))
                    if at < best_at:
                        best_at, best = at, (entry, slot)
        return best_at, best

    def _tick_core(self, entry: _Node, slot: _Slot) -> None:
        local = entry.local(self.now)
        deadline = slot.core.next_deadline()
        # local(real(deadline)) may round to just below the deadline: never tick a core early
        slot.core.tick(max(local, deadline) if deadline is not None and deadline - local < 1e-6 else local)

    def _send(self, sender: NodeKey, protocol: str, to: NodeKey, message: Any) -> None:
        if sender in self.down:
            return
        self.sent += 1
        loss = self.loss if isinstance(self.loss, (int, float)) else self.loss(sender, to)
        if self.rng.random() < loss:
            self.lost += 1
            return
        if any(rule(self.now, sender, to, message) for rule in self.drop_rules):
            self.dropped += 1
            return
        payload = message
        if self.wire:
            payload = encode(message)
            self.sent_bytes.append(len(payload))
        latency = self.latency
        if isinstance(latency, tuple):
            delay = self.rng.uniform(*latency)
        elif isinstance(latency, (int, float)):
            delay = latency
        else:
            delay = latency(self.rng, sender, to)
        self._seq += 1
        heapq.heappush(
            self._deliveries, (self.now + delay, self._seq, sender, to, protocol, message, payload)
        )

    def _deliver(self, delivery: tuple[float, int, NodeKey, NodeKey, str, Any, Any]) -> bool:
        at, _, sender, to, protocol, message, payload = delivery
        if (
            to in self.down
            or not self.connected(sender, to)
            or any(rule(at, sender, to, message) for rule in self.arrival_rules)
        ):
            self.dropped += 1
            return False
        entry = self._nodes[to]
        slot = entry.slots[protocol]
        local = entry.local(self.now)
        if self.trace is not None:
            self.trace.append(Traced(self.now, "in", to, protocol, message, sender))
        self.delivered += 1
        if not self.wire:
            slot.core.receive(local, sender, payload)
        elif slot.message_type is None:
            slot.core.receive_bytes(local, sender, payload)
        else:
            slot.core.receive(local, sender, decode(payload, slot.message_type))
        self.flush(to)
        return True

    def _event(self, node: NodeKey, event: Any) -> None:
        for cls in type(event).__mro__:
            for handler in self._handlers.get(cls, ()):
                handler(node, event)
        if self.on_event is not None:
            self.on_event(node, event)
