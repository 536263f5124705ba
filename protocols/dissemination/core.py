"""Record dissemination: eager push of new records plus periodic push-pull anti-entropy.

Push spreads a new record in O(log n) rounds with high probability but can miss nodes
(loss, churn); anti-entropy with one random peer per interval repairs whatever push
missed, so every live node converges. A steady-state anti-entropy round costs two small
messages, because it opens with a hash of the record set rather than the whole clock;
when the sets differ, the hello's per-bucket summary narrows the exchange to the clock
entries of the authors whose buckets differ (a 32nd of the clock, typically).

Nothing a peer says about its own state moves ours: a hello or a request only decides
what we send, and a delta's clock claims are adopted only as far as the store can check
them (`RecordStore.apply_delta`); each refused claim is counted as `dropped_claim_<why>`.
"""

from __future__ import annotations

import random
from collections import Counter

from protocols.common.effects import Send
from protocols.common.identity import NodeId
from protocols.dissemination.config import DisseminationConfig
from protocols.dissemination.events import ClockAdvanced, DisseminationEvent, RecordAccepted, RecordsPurged
from protocols.dissemination.messages import Push, SyncDelta, SyncHello, SyncRequest
from protocols.records.record import Record
from protocols.records.store import MergeResult, RecordStore

Effect = Send | DisseminationEvent


class DisseminationCore:
    """Sans-IO dissemination for one node: feed it messages and time, drain sends and events.

        A driver calls `tick(now)` once when it starts the core (that schedules the first
        anti-entropy round), then whenever `next_deadline()` passes.

    Events (`protocols.dissemination.events`): `RecordAccepted` for the driver to persist
    and observe, `RecordsPurged` when a revocation removed records, and `ClockAdvanced`
    when the store's clock claims moved, to persist them too.
    """

    def __init__(
        self,
        self_id: NodeId,
        store: RecordStore,
        rng: random.Random,
        config: DisseminationConfig | None = None,
    ) -> None:
        self.self_id = self_id
        self.store = store
        self.config = config or DisseminationConfig()
        self._rng = rng
        self._peers: list[NodeId] = []
        self._effects: list[Effect] = []
        self._next_sync: float | None = None
        self.counters: Counter[str] = Counter()

    # ---- driver interface ------------------------------------------------------------------

    def set_peers(self, peers: list[NodeId]) -> None:
        """The live members to gossip with (from membership); self is ignored."""
        # A C-level copy, not a filtering pass: meshes of thousands refresh this often.
        # Self, if present, is skipped where peers are picked.
        self._peers = list(peers)

    def publish(self, now: float, record: Record) -> bool:
        """Add a record authored here and push it; False when the store refused it."""
        result = self.store.merge([record], verified=True)
        self._report(result, "local", None)
        if not result.accepted:
            return False
        if len(self._peers) < self.config.direct_push_below:
            self._push_to_all(result.accepted)
        else:
            self._push(result.accepted, exclude=None)
        self._schedule(now)
        return True

    def receive(self, now: float, sender: NodeId, message: object) -> None:
        self._schedule(now)
        match message:
            case Push():
                self._on_push(sender, message)
            case SyncHello():
                self._on_sync_hello(sender, message)
            case SyncRequest():
                self._on_sync_request(sender, message)
            case SyncDelta():
                self._on_sync_delta(sender, message)
            case _:
                self.counters["dropped_unknown_message"] += 1

    def _on_push(self, sender: NodeId, message: Push) -> None:
        records = message.records
        if all(self.store.holds(record) for record in records):
            # the common case: push gossip delivers each record about `fanout` times
            self.counters["records_duplicate"] += len(records)
            return
        result = self.store.merge(records)
        self._report(result, "push", sender)
        straight_from_author = all(record.author == sender for record in result.accepted)
        direct = straight_from_author and len(self._peers) < self.config.direct_push_below
        if result.accepted and not direct:
            self._push(result.accepted, exclude=sender)

    def _on_sync_hello(self, sender: NodeId, message: SyncHello) -> None:
        self.counters["sync_hello_in"] += 1
        store = self.store
        if message.state != store.state_digest() or message.clock_total != store.clock_total():
            buckets = store.differing_buckets(message.summary) or None
            if buckets is None:
                self._send(sender, SyncRequest(store.clock()))
            else:
                self._send(sender, SyncRequest(store.clock_of(buckets), buckets))

    def _on_sync_request(self, sender: NodeId, message: SyncRequest) -> None:
        store = self.store
        buckets = message.buckets
        entries = store.delta_for(message.clock, self.config.max_delta_records, buckets)
        clock = store.clock() if buckets is None else store.clock_of(buckets)
        self._send(sender, SyncDelta(entries, clock, buckets))

    def _on_sync_delta(self, sender: NodeId, message: SyncDelta) -> None:
        result = self.store.apply_delta(message.entries)
        self._report(result, "sync", sender)
        if message.clock is not None:
            entries = self.store.delta_for(message.clock, self.config.max_delta_records, message.buckets)
            if entries:
                self._send(sender, SyncDelta(entries, None))

    def tick(self, now: float) -> None:
        self._schedule(now)
        assert self._next_sync is not None
        if now < self._next_sync:
            return
        self._next_sync = now + self._jittered_interval()
        if self._peers:
            peer = self._rng.choice(self._peers)
            if peer == self.self_id:
                return
            self.counters["sync_rounds"] += 1
            store = self.store
            self._send(peer, SyncHello(store.state_digest(), store.clock_total(), store.summary()))

    def next_deadline(self) -> float | None:
        return self._next_sync

    def drain(self) -> list[Effect]:
        effects, self._effects = self._effects, []
        return effects

    # ---- internals -------------------------------------------------------------------------

    def _schedule(self, now: float) -> None:
        if self._next_sync is None:
            self._next_sync = now + self._rng.uniform(0.0, self.config.anti_entropy_interval)

    def _jittered_interval(self) -> float:
        return self.config.interval_for(len(self._peers) + 1) * self._rng.uniform(0.9, 1.1)

    def _push(self, records: list[Record], exclude: NodeId | None) -> None:
        # Sample two extra and drop the excluded peer and self: O(fanout), not O(peers), per push.
        peers = self._peers
        sample = self._rng.sample(peers, min(self.config.fanout + 2, len(peers)))
        targets = [peer for peer in sample if peer != exclude and peer != self.self_id][: self.config.fanout]
        if not targets:
            return
        message = Push(records)
        for peer in targets:
            self._send(peer, message)

    def _push_to_all(self, records: list[Record]) -> None:
        message = Push(records)
        for peer in self._peers:
            if peer != self.self_id:
                self._send(peer, message)

    def _send(self, peer: NodeId, message: object) -> None:
        self.counters["messages_out"] += 1
        self._effects.append(Send(peer, message))

    def _report(self, result: MergeResult, via: str, sender: NodeId | None) -> None:
        for record in result.accepted:
            self._effects.append(RecordAccepted(record, via, sender))
        if result.purged:
            self._effects.append(RecordsPurged(result.purged))
        if result.clock_changes:
            self._effects.append(ClockAdvanced(result.clock_changes))
        for outcome, count in result.outcomes.items():
            self.counters[f"records_{outcome.value}"] += count
        for refusal, count in result.refused_claims.items():
            self.counters[f"dropped_claim_{refusal.value}"] += count
