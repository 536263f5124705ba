"""SWIM membership and failure detection, with Lifeguard's refinements, as a sans-IO core.

Why SWIM: every node does constant work per protocol period (one probe, about one ack
to answer) whatever the mesh size, and news about members rides piggybacked on that
traffic, so a 5,000-node simulation costs 5,000 x constant per period, not n².

How it runs (the shape of Das, Gupta & Motivala, "SWIM", 2002):

- Probing: every `protocol_period` a node pings the next member of its probe order, a
  shuffled list of live members walked round-robin and reshuffled once per round (so
  every member is probed by every node once per round: a bounded first-detection
  time, not just an expected one). No ack within `probe_timeout`: it asks
  `indirect_checks` random members to ping the target for it (`PingReq`). No ack by
  the end of the period: the target becomes `suspect`.
- Suspicion and refutation: a suspect member that hears it is suspected (incarnation
  `i`) gossips `alive` at incarnation `i + 1`, which overrides the suspicion
  everywhere. A suspicion nobody refutes before its timeout becomes `dead`.
- Precedence: an update overrides what a node holds when its incarnation is higher,
  or equal with a "worse" state: alive < suspect < dead < left. Only the member itself
  raises its incarnation, so only it can undo a suspicion, a death or a leave.
- Dissemination: every update a node learns goes into a queue and is piggybacked on
  up to `max_piggyback` slots of every message it sends, fewest-sent first, each at
  most `retransmit_mult * ceil(log10(n + 1))` times (SWIM's lambda log n).
- Leave: `leave()` raises the incarnation and gossips `left`, pushed at once to
  `leave_fanout` peers because the process is about to go away.
- Removal: `remove_member` drops a revoked member for good; unlike a death, no later
  gossip or message of its own brings it back.
- Forgetting: `dead` and `left` members are dropped `reclaim_time` after they got
  there. A node that returns (fresh start or healed partition) is told its own
  tombstone, either in the reply to its join or piggybacked on any message to it (see
  buddy system), and comes back with a higher incarnation.

Lifeguard (Dadgar et al., "Lifeguard: Local Health Awareness for More Accurate Failure
Detection", 2018), as HashiCorp memberlist does it:

- Local health multiplier (LHM), 0..`max_health`: +1 for a probe that failed with no
  nacks expected, +missed nacks for one that failed with indirect checks, +1 for every
  refutation of a suspicion about ourselves; -1 per successful probe. Both the probe
  timeout and the protocol period are multiplied by `LHM + 1`, so a node that is
  itself slow or overloaded probes more gently instead of accusing healthy peers.
- Starvation (ours, not memberlist's): missed nacks only show a slow node after the
  fact, and a CPU-starved process misses them rarely; what it does show is lateness.
  A `tick` that runs more than `late_timer_slack * (LHM + 1)` after its earliest
  deadline, or event-loop lag the driver reports (`note_local_lag`), raises the LHM by
  one, excuses the probe under way (the target is probed again at once instead of
  suspected: its ack may be sitting unread in our own queue), and postpones, once per
  suspicion, any death verdict that falls due within a period of it. A starved node
  thus accuses nobody; the healthy members still find the really dead.
- Nacks: an intermediary that gets no answer from the target says so (`Nack`), which
  tells the requester its own links work.
- Dynamic suspicion timeout: with `n` live members (self included),
  `min = suspicion_mult * max(1, log10(n)) * protocol_period`,
  `max = suspicion_max_mult * min`, `K = suspicion_mult - 2` expected independent
  confirmations (0 when `n - 2 < K`, then the timeout is `min` at once); after `C`
  confirmations the timeout, counted from the suspicion's start, is
  `max(min, max - (max - min) * log(C + 1) / log(K + 1))`. A node that is really down
  is suspected by many members independently, so its timeout shrinks to `min`; a
  single flaky observer cannot get a healthy node declared dead in less than `max`.
- Buddy system: every message to a member we hold as suspect (or dead, or left)
  carries that member's own state first, so it learns of the suspicion on the first
  message it gets from us and refutes in its reply.

Beyond memberlist: the suspecter probes its suspect again in the next period (the
buddy ping that lets a live node refute at once), and each member that hears of a
new suspicion does the same with probability `suspect_reprobe_fanout / n`, which
brings independent confirmations for a dead node within a period or two; a node that
hears a stale accusation (older incarnation) re-queues its current `alive`, so the
reply to the accuser carries it. Defaults and formulas: `protocols.membership.config`.

Cost: per node per period one ping and about one ack (~10 bytes to ~1.2 KB each with
piggyback), plus k PingReqs and their relays only after a missed ack. Work per message
is O(piggyback size), never O(n): the probe order is reshuffled once per round, the
gossip queue is bucketed by send count, random live peers come from an array
(`protocols.membership.tables`). Memory per known member is one dict entry and two
array slots; alive members need no per-member object (updates are shared, immutable).
O(n) by nature, and rare: `PushPull` full-state syncs (join, and one per node every
push-pull period) and `members()` snapshots.

Determinism: all randomness comes from the `rng` handed in; every dict iterated is
insertion-ordered and no set is ever iterated, so the same inputs give the same effects.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import Counter
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from protocols.common.effects import Send
from protocols.common.identity import NodeId
from protocols.common.wire import WireError
from protocols.membership.config import MembershipConfig
from protocols.membership.events import (
    MemberChanged,
    MemberForgotten,
    MemberRemoved,
    MembershipEvent,
    MemberState,
)
from protocols.membership.messages import (
    SEQ_MODULUS,
    Ack,
    MemberUpdate,
    Nack,
    Ping,
    PingReq,
    PushPull,
    WireState,
    decode_membership,
)
from protocols.membership.tables import BroadcastQueue, LiveSet

__all__ = ["MemberInfo", "MemberState", "MembershipConfig", "MembershipCore"]

NODE_ID_SIZE = 32

NACK_FRACTION = 0.8
"""An intermediary nacks after this fraction of `probe_timeout`, so that its nack reaches
the requester inside the requester's indirect window (`protocol_period - probe_timeout`,
which the defaults keep longer than `probe_timeout`); a later answer is still relayed."""

ALIVE = WireState.ALIVE
SUSPECT = WireState.SUSPECT
DEAD = WireState.DEAD
LEFT = WireState.LEFT


_PUBLIC_STATE = (MemberState.ALIVE, MemberState.SUSPECT, MemberState.DEAD, MemberState.LEFT)


@dataclass(frozen=True, slots=True)
class MemberInfo:
    """A snapshot of what this node believes about one member (itself included)."""

    node_id: NodeId
    state: MemberState
    incarnation: int
    since: float | None
    """When this node saw the member become suspect, dead or left; None while alive."""


class _Action(IntEnum):
    SUSPICION_TIMEOUT = 0
    RECLAIM = 1
    RELAY_TIMEOUT = 2
    RECONNECT = 3
    PUSH_PULL = 4
    JOIN_RETRY = 5


class _Timer:
    """A heap entry's payload; cancelling flags it and the heap drops it lazily."""

    __slots__ = ("action", "cancelled", "key")

    def __init__(self, action: _Action, key: Any) -> None:
        self.action = action
        self.key = key
        self.cancelled = False


class _Suspicion:
    """One running suspicion: its confirmations and the timeout bounds it started with."""

    __slots__ = (
        "confirmations",
        "expected",
        "high",
        "low",
        "originator",
        "postponed",
        "seen",
        "start",
        "timer",
    )

    def __init__(
        self, start: float, low: float, high: float, expected: int, originator: NodeId | None
    ) -> None:
        self.start = start
        self.originator = originator
        self.low = low
        self.high = high
        self.expected = expected
        self.confirmations = 0
        self.postponed = False
        self.seen: set[bytes] = set()  # membership tests only, never iterated
        self.timer: _Timer | None = None

    def timeout(self) -> float:
        if self.expected == 0:
            return self.low
        fraction = math.log(self.confirmations + 1) / math.log(self.expected + 1)
        return max(self.low, self.high - (self.high - self.low) * fraction)


class _Watch:
    """Bookkeeping for a member that is not alive; alive members need none (memory)."""

    __slots__ = ("reclaim", "since", "suspicion")

    def __init__(self, since: float) -> None:
        self.since = since
        self.suspicion: _Suspicion | None = None
        self.reclaim: _Timer | None = None


class _Relay:
    """A probe we run for someone else's `PingReq`."""

    __slots__ = ("nacked", "requester", "requester_seq", "target")

    def __init__(self, requester: NodeId, requester_seq: int, target: NodeId) -> None:
        self.requester = requester
        self.requester_seq = requester_seq
        self.target = target
        self.nacked = False


_INITIAL_UPDATES: dict[NodeId, MemberUpdate] = {}
_INITIAL_UPDATES_MAX = 1 << 16


def _initial_update(node: NodeId) -> MemberUpdate:
    """`alive` at incarnation 0, shared by every core in the process that adds `node`.

    Updates are immutable, so sharing one object is safe; it saves one object per
    (core, member) pair when a simulator adds thousands of members to thousands of cores.
    """
    update = _INITIAL_UPDATES.get(node)
    if update is None:
        if len(_INITIAL_UPDATES) >= _INITIAL_UPDATES_MAX:
            _INITIAL_UPDATES.clear()
        update = _INITIAL_UPDATES[node] = MemberUpdate(node, 0, ALIVE)
    return update


class MembershipCore:
    """One node's view of the mesh's members, kept by SWIM probing and gossip.

    Drive it with `receive`, `tick` (at `next_deadline()`), `join`, `leave` and
    `add_member`; carry out what `drain()` returns. `counters["dropped"]` counts malformed or
    unexpected input, which is ignored rather than raised.
    """

    def __init__(self, self_id: NodeId, rng: random.Random, config: MembershipConfig | None = None) -> None:
        _check_node_id(self_id)
        self.self_id: NodeId = self_id
        self.config = config if config is not None else MembershipConfig()
        self._rng = rng
        self.counters: Counter[str] = Counter()
        """What this core did and dropped (`sent`, `received`, `probes`, `dropped`, ...), for status."""
        self._incarnation = 0
        self._left = False
        self._left_at: float | None = None
        self._self_update = MemberUpdate(self_id, 0, ALIVE)
        self._members: dict[NodeId, MemberUpdate] = {}  # newest update applied per member
        self._watch: dict[NodeId, _Watch] = {}  # only members that are not alive
        self._live = LiveSet()  # alive + suspect, self excluded
        self._dead = LiveSet()  # dead (not left): reconnect candidates
        self._probe_order: list[NodeId] = []
        self._probe_index = 0
        self._urgent: list[NodeId] = []  # probed before the round-robin order (suspects)
        self._queue = BroadcastQueue()
        self._timers: list[tuple[float, int, _Timer]] = []
        self._timer_count = 0
        self._effects: list[Send | MembershipEvent] = []
        self._seq = 0
        self._relays: dict[int, _Relay] = {}
        self._health = 0
        self._starved_at = -math.inf  # when this node last found itself starved (late timers, loop lag)
        self._probe_excused = False  # the probe under way overlapped a starvation: no suspicion from it
        self._barred: set[NodeId] = set()  # removed (revoked) members; never iterated
        self._started = False
        self._next_probe_at: float | None = None
        self._indirect_at: float | None = None
        self._probe_target: NodeId | None = None
        self._probe_seq = -1
        self._probe_acked = False
        self._probe_helpers: list[NodeId] = []
        self._probe_nackers: list[NodeId] = []
        self._seeds: tuple[NodeId, ...] = ()
        self._join_retry: _Timer | None = None
        self._background = 0  # generation of the reconnect and push-pull timer chains
        self._limit_for = -1
        self._limit = 0

    # ----------------------------------------------------------------- public API

    @property
    def incarnation(self) -> int:
        return self._incarnation

    @property
    def health(self) -> int:
        """Lifeguard's local health multiplier: 0 is healthy; timeouts scale by it + 1."""
        return self._health

    @property
    def live_peer_count(self) -> int:
        """Alive or suspect members other than this node."""
        return len(self._live)

    def join(self, now: float, seeds: list[NodeId]) -> None:
        """Announce ourselves to `seeds` and fetch their member tables (retried until answered).

        Also how a core that left comes back: it rejoins with a higher incarnation.
        """
        for seed in seeds:
            _check_node_id(seed)
        if not self._started:
            self._start(now)
        if self._left:
            self._left = False
            self._left_at = None
            self._set_self(now, self._incarnation + 1, ALIVE)
            self._next_probe_at = now + self._rng.random() * self._period()
            self._start_background(now)
        self._seeds = tuple(seed for seed in dict.fromkeys(seeds) if seed != self.self_id)
        if self._join_retry is not None:
            self._join_retry.cancelled = True
            self._join_retry = None
        if self._seeds:
            self._sync_with_seeds()
            self._join_retry = self._schedule(now + self.config.join_retry_interval, _Action.JOIN_RETRY, None)

    def leave(self, now: float) -> None:
        """Leave gracefully: gossip `left` now; the driver should keep delivering briefly."""
        if self._left:
            return
        if not self._started:
            self._start(now)
        self._left = True
        self._left_at = now
        self._set_self(now, self._incarnation + 1, LEFT)
        announcement = PushPull((self._self_update,), False)
        for peer in self._live.sample(self.config.leave_fanout, self._rng):
            self._send(peer, announcement)
        self._next_probe_at = None
        self._indirect_at = None
        self._probe_target = None

    def add_member(self, now: float, node_id: NodeId) -> bool:
        """Add a member learned out of band (e.g. an admission record); False if already known.

        Not queued for gossip: whoever told us out of band tells the others too, and
        gossiping what every node already learned would cost n updates per admission.
        """
        _check_node_id(node_id)
        if not self._started:
            self._start(now)
        if node_id == self.self_id or node_id in self._members or node_id in self._barred:
            return False
        self._members[node_id] = _initial_update(node_id)
        self._add_live(node_id)
        self._emit_member(node_id, ALIVE, 0)
        return True

    def remove_member(self, now: float, node_id: NodeId) -> bool:
        """Drop `node_id` for good (its admission was revoked); False if it was already barred.

        Its entry, timers and gossip go, and no later news about it (an `alive` gossiped
        by a friend, its own pings) brings it back. Each node removes it on its own
        reading of the revocation record, so the removal itself is not gossiped.
        """
        _check_node_id(node_id)
        if not self._started:
            self._start(now)
        if node_id == self.self_id or node_id in self._barred:
            return False
        self._barred.add(node_id)
        update = self._members.pop(node_id, None)
        watch = self._watch.pop(node_id, None)
        if watch is not None:
            for timer in (watch.reclaim, None if watch.suspicion is None else watch.suspicion.timer):
                if timer is not None:
                    timer.cancelled = True
        self._live.discard(node_id)
        self._dead.discard(node_id)
        if self._probe_target == node_id:
            self._probe_target = None
            self._indirect_at = None
        self.counters["removed"] += 1
        if update is not None:
            self._effects.append(MemberRemoved(node_id))
        return True

    def note_local_lag(self, now: float, lag: float) -> None:
        """The driver saw its event loop run `lag` seconds late: evidence that we, not our peers, are slow."""
        if lag > self._late_slack():
            self._note_starved(now)
            self.counters["loop_lag"] += 1

    def receive(self, now: float, sender: NodeId, message: object) -> None:
        """Feed one message from `sender`; anything malformed or unexpected is counted and ignored."""
        if not self._started:
            self._start(now)
        if type(sender) is not bytes or len(sender) != NODE_ID_SIZE or sender == self.self_id:
            self.counters["dropped"] += 1
            return
        if sender in self._barred:
            self.counters["from_removed"] += 1
            return
        match message:
            case Ping():
                self.counters["received"] += 1
                self._on_ping(now, sender, message)
            case Ack():
                self.counters["received"] += 1
                self._on_ack(now, sender, message)
            case PingReq():
                self.counters["received"] += 1
                self._on_ping_req(now, sender, message)
            case Nack():
                self.counters["received"] += 1
                self._on_nack(now, sender, message)
            case PushPull():
                self.counters["received"] += 1
                self._on_push_pull(now, sender, message)
            case _:
                self.counters["dropped"] += 1

    def receive_bytes(self, now: float, sender: NodeId, data: bytes) -> None:
        """Decode and feed one wire message; undecodable input is counted in `dropped`."""
        try:
            message = decode_membership(data)
        except WireError:
            self.counters["dropped"] += 1
            return
        self.receive(now, sender, message)

    def tick(self, now: float) -> None:
        """Fire every timer due at or before `now`, in time order."""
        if not self._started:
            self._start(now)
        due = self.next_deadline()
        if due is not None and now - due > self._late_slack():
            self._note_starved(now)
            self.counters["late_timers"] += 1
        heap = self._timers
        inf = math.inf
        while True:
            while heap and heap[0][2].cancelled:
                heapq.heappop(heap)
            at_heap = heap[0][0] if heap else inf
            at_indirect = self._indirect_at if self._indirect_at is not None else inf
            at_probe = self._next_probe_at if self._next_probe_at is not None else inf
            if at_indirect <= now and at_indirect <= at_heap and at_indirect <= at_probe:
                self._indirect_at = None
                self._send_indirect_probes()
            elif at_heap <= now and at_heap <= at_probe:
                self._fire(now, heapq.heappop(heap)[2])
            elif at_probe <= now:
                self._probe(now, at_probe)
            else:
                return

    def next_deadline(self) -> float | None:
        """When `tick` next has something to do; None when nothing is scheduled."""
        heap = self._timers
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)
        best = self._next_probe_at
        if self._indirect_at is not None and (best is None or self._indirect_at < best):
            best = self._indirect_at
        if heap and (best is None or heap[0][0] < best):
            best = heap[0][0]
        return best

    def drain(self) -> list[Send | MembershipEvent]:
        """Everything to carry out since the last drain, in the order it arose."""
        effects = self._effects
        self._effects = []
        return effects

    def members(self) -> dict[NodeId, MemberInfo]:
        """A snapshot of every member this node knows (itself first); O(n), for status."""
        own = self._self_update
        snapshot = {
            self.self_id: MemberInfo(self.self_id, _PUBLIC_STATE[own.state], own.incarnation, self._left_at)
        }
        watch = self._watch
        for node, update in self._members.items():
            watched = watch.get(node)
            snapshot[node] = MemberInfo(
                node,
                _PUBLIC_STATE[update.state],
                update.incarnation,
                None if watched is None else watched.since,
            )
        return snapshot

    def live_members(self) -> list[NodeId]:
        """Alive and suspect members, this node included unless it left; O(n)."""
        live = [] if self._left else [self.self_id]
        live.extend(node for node, update in self._members.items() if update.state <= SUSPECT)
        return live

    def live_peers(self) -> list[NodeId]:
        """Alive and suspect members other than this node: an O(n) copy at C speed."""
        return self._live.snapshot()

    def state_of(self, node_id: NodeId) -> MemberState | None:
        """This node's belief about one member, or None if it does not know (or forgot) it."""
        if node_id == self.self_id:
            return _PUBLIC_STATE[self._self_update.state]
        update = self._members.get(node_id)
        return None if update is None else _PUBLIC_STATE[update.state]

    def sample_live_peers(self, count: int, rng: random.Random | None = None) -> list[NodeId]:
        """Up to `count` distinct random alive-or-suspect peers, in O(count)."""
        return self._live.sample(count, rng if rng is not None else self._rng)

    # ----------------------------------------------------------------- message handlers

    def _take_probe_message(self, now: float, message: Ping | Ack) -> bool:
        """The hot path's checks (one ping and one ack per node per period): a valid seq, and the
        piggyback merged (an empty one skipped); False, counted, for malformed input."""
        seq = message.seq
        if type(seq) is not int or not 0 <= seq < SEQ_MODULUS:
            self.counters["dropped"] += 1
            return False
        updates = message.updates
        return (type(updates) is tuple and not updates) or self._merge(now, updates)

    def _on_ping(self, now: float, sender: NodeId, message: Ping) -> None:
        if not self._take_probe_message(now, message):
            return
        self.counters["sent"] += 1
        self._effects.append(Send(sender, Ack(message.seq, self._piggyback(sender))))

    def _on_ack(self, now: float, sender: NodeId, message: Ack) -> None:
        if not self._take_probe_message(now, message):
            return
        seq = message.seq
        if (
            seq == self._probe_seq
            and self._probe_target is not None
            and (sender == self._probe_target or sender in self._probe_helpers)
        ):
            if not self._probe_acked:
                self._probe_acked = True
                self._indirect_at = None
                if self._health > 0:
                    self._health -= 1
            return
        relay = self._relays.get(seq)
        if relay is not None and sender == relay.target:
            del self._relays[seq]
            self._send(relay.requester, Ack(relay.requester_seq, self._piggyback(relay.requester)))
            return
        self.counters["stale_replies"] += 1

    def _on_ping_req(self, now: float, sender: NodeId, message: PingReq) -> None:
        target = message.target
        if not self._valid_seq(message.seq) or not self._merge(now, message.updates):
            return
        if (
            type(target) is not bytes
            or len(target) != NODE_ID_SIZE
            or target == self.self_id
            or target == sender
        ):
            self.counters["dropped"] += 1
            return
        about_target = self._members.get(target)
        if about_target is not None and about_target.state >= DEAD:
            # we know it is gone: say so at once, with the tombstone, instead of probing
            nack = Nack(message.seq, (about_target, *self._piggyback(sender)))
            self._send(sender, nack)
            return
        seq = self._next_seq()
        self._schedule(now + self._timeout() * NACK_FRACTION, _Action.RELAY_TIMEOUT, seq)
        self._relays[seq] = _Relay(sender, message.seq, target)
        self.counters["relays"] += 1
        self._send(target, Ping(seq, self._piggyback(target)))

    def _on_nack(self, now: float, sender: NodeId, message: Nack) -> None:
        if not self._valid_seq(message.seq) or not self._merge(now, message.updates):
            return
        if (
            message.seq == self._probe_seq
            and self._probe_target is not None
            and sender in self._probe_helpers
        ):
            if sender not in self._probe_nackers:
                self._probe_nackers.append(sender)
        else:
            self.counters["stale_replies"] += 1

    def _on_push_pull(self, now: float, sender: NodeId, message: PushPull) -> None:
        if type(message.reply) is not bool:
            self.counters["dropped"] += 1
            return
        if not self._merge(now, message.updates):
            return
        if message.reply:
            self._send(sender, PushPull(self._full_state(), False))

    def _valid_seq(self, seq: object) -> bool:
        if type(seq) is int and 0 <= seq < SEQ_MODULUS:
            return True
        self.counters["dropped"] += 1
        return False

    # ----------------------------------------------------------------- state updates

    def _merge(self, now: float, updates: object) -> bool:
        """Apply piggybacked updates; False (and counted) if the list itself is malformed."""
        if type(updates) is not tuple and type(updates) is not list:
            self.counters["dropped"] += 1
            return False
        members = self._members
        for update in updates:
            if type(update) is MemberUpdate and type(update.node) is bytes:
                current = members.get(update.node)
                if current is not None and (
                    current is update
                    or (
                        current.incarnation == update.incarnation
                        and current.state == update.state
                        and current.state != SUSPECT  # a suspicion may be a confirmation
                    )
                ):
                    continue  # news we hold already: most of what gossip brings
                if (
                    len(update.node) == NODE_ID_SIZE
                    and type(update.state) is WireState
                    and type(update.incarnation) is int
                    and update.incarnation >= 0
                    and (
                        update.origin is None
                        or (type(update.origin) is bytes and len(update.origin) == NODE_ID_SIZE)
                    )
                ):
                    self._apply(now, update)
                    continue
            self.counters["dropped"] += 1
        return True

    def _apply(self, now: float, update: MemberUpdate) -> None:
        """SWIM's override rule: higher incarnation wins, then alive < suspect < dead < left."""
        node = update.node
        if node == self.self_id:
            self._apply_about_self(now, update)
            return
        if node in self._barred:
            return
        current = self._members.get(node)
        if current is None:
            if update.state != ALIVE:
                # Bad news about someone we never knew (or already forgot), as memberlist
                # ignores it: only `alive` introduces a member. Accepting a suspicion here
                # would bring a long-dead member back into every table, to be probed,
                # suspected and declared dead all over again, mesh-wide.
                return
            self._members[node] = update
            self._queue.push(update)
            self._enter_state(now, node, update, None)
            return
        if update.incarnation < current.incarnation:
            return
        if update.incarnation == current.incarnation:
            if update.state < current.state:
                return
            if update.state == current.state:
                if update.state == SUSPECT:
                    self._confirm(node, update)
                return
        self._members[node] = update
        self._queue.push(update)
        if update.state != current.state or update.state == SUSPECT:
            self._enter_state(now, node, update, current.state)

    def _apply_about_self(self, now: float, update: MemberUpdate) -> None:
        """Refute any suspicion, death or leave we hear of while running (or an older life)."""
        if self._left:
            return
        if update.incarnation < self._incarnation:
            if update.state != ALIVE:
                # an accuser that missed our refutation (its retransmits are spent): queue it
                # again, so the reply to the message that carried the accusation tells it
                self._queue.push(self._self_update)
            return
        if update.state == ALIVE:
            if update.incarnation == self._incarnation:
                return
        elif update.state == SUSPECT:
            self._raise_health(1)
        self.counters["refutations"] += 1
        self._set_self(now, update.incarnation + 1, ALIVE)

    def _set_self(self, now: float, incarnation: int, state: WireState) -> None:
        previous = self._self_update.state
        self._incarnation = incarnation
        self._self_update = MemberUpdate(self.self_id, incarnation, state)
        self._queue.push(self._self_update)
        if state != previous:
            self._emit_member(self.self_id, state, incarnation)

    def _enter_state(
        self, now: float, node: NodeId, update: MemberUpdate, previous: WireState | None
    ) -> None:
        """Move a member's bookkeeping (live set, timers) from `previous` to its new state."""
        state = update.state
        watch = self._watch.get(node)
        if watch is not None:
            if watch.suspicion is not None:
                if watch.suspicion.timer is not None:
                    watch.suspicion.timer.cancelled = True
                watch.suspicion = None
            if watch.reclaim is not None:
                watch.reclaim.cancelled = True
                watch.reclaim = None
        if previous == DEAD:
            self._dead.discard(node)
        was_live = previous is not None and previous <= SUSPECT
        if state == ALIVE:
            if watch is not None:
                del self._watch[node]
        elif watch is None:
            watch = self._watch[node] = _Watch(now)
        if state <= SUSPECT:
            if not was_live:
                self._add_live(node)
            if state == SUSPECT and watch is not None:
                self._start_suspicion(now, node, update, watch)
        else:
            if was_live:
                self._live.discard(node)
            if state == DEAD:
                self._dead.add(node)
            if watch is not None:
                watch.reclaim = self._schedule(now + self.config.reclaim_time, _Action.RECLAIM, node)
        if state != previous:
            if watch is not None:
                watch.since = now
            self._emit_member(node, state, update.incarnation)

    def _start_suspicion(self, now: float, node: NodeId, update: MemberUpdate, watch: _Watch) -> None:
        low, high, expected = self.config.suspicion_bounds(len(self._live) + 1)
        origin = update.origin
        suspicion = _Suspicion(now, low, high, expected, origin)
        if origin is not None:
            suspicion.seen.add(origin)  # the first suspecter is not a confirmation
            fanout = self.config.suspect_reprobe_fanout
            peers = len(self._live)
            if origin != self.self_id and fanout and (fanout >= peers or self._rng.random() * peers < fanout):
                self._urgent.append(node)
        suspicion.timer = self._schedule(now + suspicion.timeout(), _Action.SUSPICION_TIMEOUT, node)
        watch.suspicion = suspicion

    def _confirm(self, node: NodeId, update: MemberUpdate) -> None:
        """An independent suspecter: shorten the timeout (Lifeguard) and pass the news on."""
        watch = self._watch.get(node)
        suspicion = None if watch is None else watch.suspicion
        origin = update.origin
        if (
            suspicion is None
            or origin is None
            or suspicion.confirmations >= suspicion.expected
            or origin in suspicion.seen
        ):
            return
        suspicion.seen.add(origin)
        suspicion.confirmations += 1
        if suspicion.timer is not None:
            suspicion.timer.cancelled = True
        suspicion.timer = self._schedule(
            suspicion.start + suspicion.timeout(), _Action.SUSPICION_TIMEOUT, node
        )
        if origin == self.self_id:
            # our own probe failed too: tell the first suspecter directly, who can then
            # declare the death at the short timeout and gossip it, and a few others
            # through our queue; third parties do not re-gossip confirmations, which
            # would cost a whole dissemination (n * retransmit limit messages) each
            self._queue.push(update)
            originator = suspicion.originator
            if originator is not None and originator != self.self_id:
                self._send(originator, PushPull((update,), False))

    def _full_state(self) -> tuple[MemberUpdate, ...]:
        return (self._self_update, *self._members.values())

    # ----------------------------------------------------------------- probing

    def _probe(self, now: float, scheduled_at: float) -> None:
        """Conclude the probe of the period that ends now and start the next one."""
        if self._probe_target is not None:
            self._conclude_probe(now)
        period = self._period() * (self._health + 1)
        following = scheduled_at + period
        self._next_probe_at = following if following > now else now + period
        target = self._next_probe_target()
        if target is None:
            return
        seq = self._next_seq()
        self._probe_target = target
        self._probe_seq = seq
        self._probe_acked = False
        self._probe_helpers = []
        self._probe_nackers = []
        self._probe_excused = False
        self._indirect_at = now + self._timeout() * (self._health + 1)
        self.counters["probes"] += 1
        self._send(target, Ping(seq, self._piggyback(target)))

    def _conclude_probe(self, now: float) -> None:
        target = self._probe_target
        self._probe_target = None
        self._indirect_at = None
        if self._probe_acked or target is None:
            return
        current = self._members.get(target)
        if current is None or current.state >= DEAD:
            return  # it left or was declared dead meanwhile: no one to blame, us included
        if self._probe_excused:
            # We were starved while it ran: the ack may be sitting unread in our own
            # queue. Probe it again first thing instead of accusing it.
            self.counters["probes_excused"] += 1
            self._urgent.append(target)
            return
        expected_nacks = len(self._probe_helpers)
        if expected_nacks:
            self._raise_health(max(0, expected_nacks - len(self._probe_nackers)))
        else:
            self._raise_health(1)
        self.counters["probe_failures"] += 1
        if current.state == ALIVE:
            self._urgent.append(target)  # probe it again next period: the buddy ping
        self._apply(now, MemberUpdate(target, current.incarnation, SUSPECT, self.self_id))

    def _send_indirect_probes(self) -> None:
        target = self._probe_target
        if target is None or self._probe_acked:
            return
        helpers = self._live.sample(self.config.indirect_checks, self._rng, exclude=target)
        self._probe_helpers = helpers
        for helper in helpers:
            self.counters["indirect_probes"] += 1
            self._send(helper, PingReq(self._probe_seq, target, self._piggyback(helper)))

    def _next_probe_target(self) -> NodeId | None:
        """Randomized round-robin: walk a shuffled snapshot of the live set, reshuffle per round."""
        members = self._members
        urgent = self._urgent
        while urgent:
            node = urgent.pop()
            update = members.get(node)
            if update is not None and update.state <= SUSPECT:
                return node
        for _ in range(2):
            order = self._probe_order
            while self._probe_index < len(order):
                node = order[self._probe_index]
                self._probe_index += 1
                update = members.get(node)
                if update is not None and update.state <= SUSPECT:
                    return node
            if not self._live:
                return None
            self._probe_order = self._live.snapshot()
            self._rng.shuffle(self._probe_order)
            self._probe_index = 0
        return None

    def _raise_health(self, delta: int) -> None:
        self._health = min(self.config.max_health, self._health + delta)

    def _late_slack(self) -> float:
        return self.config.late_timer_slack * (self._health + 1)

    def _note_starved(self, now: float) -> None:
        """We ran late: slow down (Lifeguard) and do not let the probe under way accuse anyone."""
        self._starved_at = now
        self._raise_health(1)
        if self._probe_target is not None and not self._probe_acked:
            self._probe_excused = True

    def _postpone_verdict(self, now: float, node: NodeId) -> bool:
        """Give a suspect one more protocol period (scaled by local health) when we were
        starved lately, so that a refutation queued behind our own backlog is read before
        we declare a death.

        Once per suspicion: a node that stays starved still reaches verdicts, later.
        """
        watch = self._watch.get(node)
        suspicion = None if watch is None else watch.suspicion
        if suspicion is None or suspicion.postponed:
            return False
        if now - self._starved_at > self._period() * (self._health + 1):
            return False
        suspicion.postponed = True
        self.counters["verdicts_postponed"] += 1
        suspicion.timer = self._schedule(
            now + self._period() * (self._health + 1), _Action.SUSPICION_TIMEOUT, node
        )
        return True

    # ----------------------------------------------------------------- timers

    def _start(self, now: float) -> None:
        """First contact with time: pick a random probe phase and start background timers."""
        self._started = True
        self._next_probe_at = now + self._rng.random() * self._period()
        self._start_background(now)

    def _start_background(self, now: float) -> None:
        """Reconnect and push-pull timers, at random phases; they stop once we leave."""
        config = self.config
        self._background += 1  # chains of an earlier life (before a leave) die out
        if config.reconnect_interval is not None:
            jitter = 0.5 + self._rng.random()
            at = now + config.reconnect_interval * jitter
            self._schedule(at, _Action.RECONNECT, self._background)
        if config.push_pull_interval is not None:
            jitter = 0.5 + self._rng.random()
            at = now + config.push_pull_interval * jitter
            self._schedule(at, _Action.PUSH_PULL, self._background)

    def _schedule(self, at: float, action: _Action, key: Any) -> _Timer:
        timer = _Timer(action, key)
        self._timer_count += 1
        heapq.heappush(self._timers, (at, self._timer_count, timer))
        return timer

    def _fire(self, now: float, timer: _Timer) -> None:
        action = timer.action
        if action == _Action.SUSPICION_TIMEOUT:
            current = self._members.get(timer.key)
            if current is not None and current.state == SUSPECT:
                if self._postpone_verdict(now, timer.key):
                    return
                self.counters["declared_dead"] += 1
                self._apply(now, MemberUpdate(timer.key, current.incarnation, DEAD))
        elif action == _Action.RECLAIM:
            self._forget(timer)
        elif action == _Action.RELAY_TIMEOUT:
            self._relay_timeout(now, timer.key)
        elif action == _Action.RECONNECT:
            if timer.key == self._background and not self._left:
                self._reconnect(now)
        elif action == _Action.PUSH_PULL:
            if timer.key == self._background and not self._left:
                self._push_pull(now)
        elif action == _Action.JOIN_RETRY:
            self._join_retry = None
            if not self._left and not self._live and self._seeds:  # nobody answered yet
                self._sync_with_seeds()
                self._join_retry = self._schedule(
                    now + self.config.join_retry_interval, _Action.JOIN_RETRY, None
                )

    def _forget(self, timer: _Timer) -> None:
        node = timer.key
        watch = self._watch.get(node)
        if watch is None or watch.reclaim is not timer:
            return
        del self._watch[node]
        if self._members.pop(node).state == DEAD:
            self._dead.discard(node)
        self._effects.append(MemberForgotten(node))

    def _relay_timeout(self, now: float, seq: int) -> None:
        """Nack the requester in time for its window; keep relaying a late answer a while."""
        relay = self._relays.get(seq)
        if relay is None:
            return
        if relay.nacked:
            del self._relays[seq]
            return
        relay.nacked = True
        linger = self._period() - self._timeout() * NACK_FRACTION
        self._schedule(now + linger, _Action.RELAY_TIMEOUT, seq)
        self._send(relay.requester, Nack(relay.requester_seq, self._piggyback(relay.requester)))

    def _reconnect(self, now: float) -> None:
        """Ping one random dead member: if it is back (a healed partition), its reply refutes."""
        interval = self.config.reconnect_interval
        if interval is None:
            return
        self._schedule(now + interval, _Action.RECONNECT, self._background)
        for node in self._dead.sample(1, self._rng):
            self._send(node, Ping(self._next_seq(), self._piggyback(node)))

    def _push_pull(self, now: float) -> None:
        """Every jittered base interval, sync with probability base / scaled period.

        That gives the mesh-size-scaled mean interval without remembering when we last
        synced, and no burst of O(n) syncs when a big simulated mesh starts at once.
        """
        base = self.config.push_pull_interval
        period = self.config.push_pull_period(len(self._live) + 1)
        if base is None or period is None:
            return
        at = now + base * (0.5 + self._rng.random())
        self._schedule(at, _Action.PUSH_PULL, self._background)
        if self._rng.random() * period >= base:
            return
        for peer in self._live.sample(1, self._rng):
            self._send(peer, PushPull(self._full_state(), True))

    def _sync_with_seeds(self) -> None:
        state = self._full_state()
        for seed in self._seeds:
            self._send(seed, PushPull(state, True))

    # ----------------------------------------------------------------- bookkeeping

    def _period(self) -> float:
        """The protocol period for the current mesh size (stretched above `scale_from`)."""
        return self.config.protocol_period * self.config.time_scale(len(self._live) + 1)

    def _timeout(self) -> float:
        """The direct-probe timeout for the current mesh size."""
        return self.config.probe_timeout * self.config.time_scale(len(self._live) + 1)

    def _piggyback(self, to: NodeId) -> tuple[MemberUpdate, ...]:
        """Updates for one outgoing message; the recipient's own bad news first (buddy system)."""
        about_recipient = self._members.get(to)
        if about_recipient is not None:
            if about_recipient.state == ALIVE:
                about_recipient = None
            elif about_recipient.state >= DEAD:
                # most likely nobody is listening: don't spend retransmissions on it
                return (about_recipient,)
        if not self._queue.pending:
            return () if about_recipient is None else (about_recipient,)
        live_count = len(self._live) + 1
        if live_count != self._limit_for:
            self._limit_for = live_count
            self._limit = self.config.retransmit_limit(live_count)
        updates = self._queue.take(self.config.max_piggyback, self._limit)
        if about_recipient is not None:
            if about_recipient in updates:
                updates.remove(about_recipient)
            updates.insert(0, about_recipient)
        return tuple(updates)

    def _add_live(self, node: NodeId) -> None:
        """A newcomer is probed this round, at a random place among those still to come."""
        self._live.add(node)
        order = self._probe_order
        if self._probe_index < len(order):  # else the next round's shuffle has it
            order.insert(self._rng.randint(self._probe_index, len(order)), node)

    def _send(self, to: NodeId, message: Any) -> None:
        self.counters["sent"] += 1
        self._effects.append(Send(to, message))

    def _emit_member(self, node: NodeId, state: WireState, incarnation: int) -> None:
        self._effects.append(MemberChanged(node, _PUBLIC_STATE[state], incarnation))

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) % SEQ_MODULUS
        return self._seq


def _check_node_id(node_id: object) -> None:
    if type(node_id) is not bytes or len(node_id) != NODE_ID_SIZE:
        raise ValueError(f"a node id is {NODE_ID_SIZE} bytes, got {node_id!r:.80}")
