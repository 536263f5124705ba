"""The discrete-event loop: virtual time, a heap of pending events, and message routing.

One process runs every simulated node. Time only moves when the loop pops the next
event, so a quiet virtual minute costs nothing. Ties are broken by a sequence number
assigned at scheduling time, which makes the order of simultaneous events — and so the
whole run — a pure function of the seed and the scenario.

Messages are really encoded with `protocols.common.wire.encode` when sent and decoded with the
protocol's own decoder on arrival, so byte counts are the real ones and cores see
exactly what a real node would receive. On channels declared `shared`, identical bytes
decode to one shared message object: a record pushed to a thousand nodes arrives as the
same bytes a thousand times, and its decoded form is immutable (frozen structs, never
mutated by a core), so one decoding serves them all and every store holds the same
record object instead of a thousand equal copies.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import struct
from collections.abc import Callable
from typing import Any

from protocols.common.effects import Event, Send
from protocols.common.identity import NodeId
from protocols.common.wire import WireError, encode
from simulations.network_model import NetworkModel

_DELIVER = 0
_TICK = 1
_ACTION = 2

DECODE_CACHE_ENTRIES = 8192
"""Decoded messages remembered per engine; the cache is emptied when it reaches this size."""

_TRACE_MESSAGE = struct.Struct("<dIIIB")
_TRACE_EVENT = struct.Struct("<dI")

EventObserver = Callable[[float, NodeId, Event], None]


class Endpoint:
    """One running incarnation of a node as the engine sees it: its cores, one per channel.

    `decoders[i]` turns bytes that arrived on channel `i` into the message object core
    `i` expects. `before_use(i, now, ticking)` lets the node refresh core `i`'s inputs that it keeps
    lazily (e.g. the dissemination core's peer list, fed from membership) right before
    the core runs; `on_event` sees every `Event` the node's cores emit.
    """

    __slots__ = ("alive", "cores", "decoders", "index", "node_id", "tick_at", "tick_token")

    def __init__(
        self,
        node_id: NodeId,
        index: int,
        cores: list[Any],
        decoders: list[Callable[[bytes], Any]],
    ) -> None:
        self.node_id = node_id
        self.index = index
        self.cores = cores
        self.decoders = decoders
        self.alive = True
        self.tick_at: list[float | None] = [None] * len(cores)
        self.tick_token: list[int] = [0] * len(cores)

    def before_use(self, channel: int, now: float, ticking: bool) -> None:
        """Hook for nodes that feed one core from another; the default does nothing."""

    def on_event(self, now: float, channel: int, event: Event) -> int | None:
        """Hook for in-node wiring between cores; returns a channel whose core it fed.

        The engine flushes every channel so returned once the current outputs are carried
        out (in the order first returned).
        """
        return None


class Engine:
    """Runs endpoints' cores on virtual time, carrying their messages through a network model."""

    def __init__(
        self, network: NetworkModel, *, bucket_s: float = 10.0, shared: frozenset[int] = frozenset()
    ) -> None:
        self.network = network
        self.shared = shared
        """Channels whose decoded messages are immutable and may be shared between nodes."""
        self._decoded: dict[bytes, Any] = {}
        self.now = 0.0
        self._heap: list[tuple[float, int, int, Any, Any]] = []
        self._seq = itertools.count()
        self._token = itertools.count(1)
        self.endpoints: dict[NodeId, Endpoint] = {}
        self.observers: list[EventObserver] = []
        self._trace = hashlib.blake2b(digest_size=32)
        self._trace_buffer = bytearray()  # hashed in 64 KiB chunks: one update per message is slower
        self.messages_sent = 0
        self.bytes_sent = 0
        self.messages_delivered = 0
        self.malformed_dropped = 0
        self.bucket_s = bucket_s
        self.bucket_messages: list[int] = []
        self.bucket_bytes: list[int] = []
        self.events_processed = 0
        self.by_type: dict[str, list[int]] = {}
        """Message type name -> [messages sent, bytes sent]: where the traffic goes."""
        self.stop_reason: str | None = None

    # ---- scheduling --------------------------------------------------------------------------

    def schedule(self, at: float, action: Callable[[], None]) -> None:
        """Run `action()` at virtual time `at` (never earlier than now)."""
        heapq.heappush(self._heap, (max(at, self.now), next(self._seq), _ACTION, action, None))

    def stop(self, reason: str) -> None:
        """Stop the loop after the current event (an invariant violation, usually)."""
        self.stop_reason = reason

    def trace(self, tag: int, *values: int) -> None:
        """Fold a non-message happening (crash, join, publish...) into the run's trace digest."""
        buffer = self._trace_buffer
        buffer += _TRACE_EVENT.pack(self.now, tag)
        for value in values:
            buffer += value.to_bytes(8, "little", signed=True)

    def digest(self) -> str:
        self._trace.update(self._trace_buffer)
        self._trace_buffer.clear()
        return self._trace.hexdigest()

    # ---- endpoints ----------------------------------------------------------------------------

    def attach(self, endpoint: Endpoint) -> None:
        """Start driving `endpoint` (a new node or a restarted one): a first tick starts its timers."""
        self.endpoints[endpoint.node_id] = endpoint
        for channel, core in enumerate(endpoint.cores):
            endpoint.before_use(channel, self.now, True)
            core.tick(self.now)
            self.flush(endpoint, channel)

    def detach(self, node_id: NodeId) -> Endpoint | None:
        """Stop driving a node: its pending ticks and in-flight messages to it go nowhere."""
        endpoint = self.endpoints.pop(node_id, None)
        if endpoint is not None:
            endpoint.alive = False
        return endpoint

    def flush(self, endpoint: Endpoint, channel: int) -> None:
        """Carry out what core `channel` of `endpoint` produced, then re-arm its timer."""
        core = endpoint.cores[channel]
        outputs = core.drain()
        if outputs:
            now = self.now
            last_message: Any = None
            last_payload: bytes | None = None
            fed: list[int] = []
            for output in outputs:
                if type(output) is Send:
                    # a push hands one message object to several peers: encode it once
                    message = output.message
                    if message is not last_message or last_payload is None:
                        last_message = message
                        last_payload = self._encode(message)
                    if last_payload is not None:
                        self._send(endpoint, channel, output.to, last_payload)
                        tally = self.by_type.get(type(message).__name__)
                        if tally is None:
                            tally = self.by_type[type(message).__name__] = [0, 0]
                        tally[0] += 1
                        tally[1] += len(last_payload)
                else:
                    touched = endpoint.on_event(now, channel, output)
                    if touched is not None and touched not in fed:
                        fed.append(touched)
                    for observer in self.observers:
                        observer(now, endpoint.node_id, output)
            for channel_fed in fed:
                if endpoint.alive:
                    self.flush(endpoint, channel_fed)
        deadline = core.next_deadline()
        if deadline is not None:
            scheduled = endpoint.tick_at[channel]
            if scheduled is None or deadline < scheduled:
                token = next(self._token)
                endpoint.tick_at[channel] = deadline
                endpoint.tick_token[channel] = token
                if deadline < self.now:
                    deadline = self.now
                heapq.heappush(self._heap, (deadline, next(self._seq), _TICK, endpoint, (channel, token)))

    def _encode(self, message: Any) -> bytes | None:
        try:
            return encode(message)
        except WireError:
            self.malformed_dropped += 1
            return None

    def _send(self, endpoint: Endpoint, channel: int, to: NodeId, payload: bytes) -> None:
        size = len(payload)
        self.messages_sent += 1
        self.bytes_sent += size
        bucket = int(self.now / self.bucket_s)
        messages = self.bucket_messages
        if len(messages) <= bucket:
            while len(messages) <= bucket:
                messages.append(0)
                self.bucket_bytes.append(0)
        messages[bucket] += 1
        self.bucket_bytes[bucket] += size
        arrival = self.network.arrival(self.now, endpoint.node_id, to, size)
        if arrival is not None:
            heapq.heappush(
                self._heap,
                (
                    arrival,
                    next(self._seq),
                    _DELIVER,
                    to,
                    (channel, endpoint.node_id, payload, endpoint.index),
                ),
            )

    def inject(self, at: float, sender: NodeId, to: NodeId, channel: int, payload: bytes) -> None:
        """Deliver raw bytes to `to` at `at` as if `sender` had sent them (forgery tests)."""
        heapq.heappush(self._heap, (at, next(self._seq), _DELIVER, to, (channel, sender, payload, 0)))

    # ---- the loop ----------------------------------------------------------------------------

    def run_until(
        self, end: float, *, on_step: Callable[[], None] | None = None, step_every: int = 20000
    ) -> None:
        """Process every event up to virtual time `end` (or until `stop` is called)."""
        heap = self._heap
        pop = heapq.heappop
        endpoints = self.endpoints
        buffer = self._trace_buffer
        hasher = self._trace
        pack = _TRACE_MESSAGE.pack
        shared = self.shared
        decoded = self._decoded
        processed = 0
        while heap and heap[0][0] <= end and self.stop_reason is None:
            at, _, kind, target, data = pop(heap)
            self.now = at
            processed += 1
            if kind == _DELIVER:
                endpoint = endpoints.get(target)
                if endpoint is None:
                    continue
                channel, sender, payload, sender_index = data
                message = decoded.get(payload) if channel in shared else None
                if message is None:
                    try:
                        message = endpoint.decoders[channel](payload)
                    except WireError:
                        self.malformed_dropped += 1
                        continue
                    if channel in shared:
                        if len(decoded) >= DECODE_CACHE_ENTRIES:
                            decoded.clear()
                        decoded[payload] = message
                buffer += pack(at, sender_index, endpoint.index, len(payload), channel)
                if len(buffer) > 65536:
                    hasher.update(buffer)
                    buffer.clear()
                self.messages_delivered += 1
                endpoint.before_use(channel, at, False)
                endpoint.cores[channel].receive(at, sender, message)
                self.flush(endpoint, channel)
            elif kind == _TICK:
                endpoint = target
                channel, token = data
                if not endpoint.alive or endpoint.tick_token[channel] != token:
                    continue
                endpoint.tick_at[channel] = None
                endpoint.before_use(channel, at, True)
                endpoint.cores[channel].tick(at)
                self.flush(endpoint, channel)
            else:
                target()
            if on_step is not None and processed % step_every == 0:
                on_step()
        self.events_processed += processed
        if self.stop_reason is None and self.now < end:
            self.now = end
