"""SWIM membership core, driven directly by the shared deterministic harness (no event loop)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from protocols.common.effects import Send
from protocols.common.hashing import digest
from protocols.common.wire import encode
from protocols.membership.config import MembershipConfig
from protocols.membership.core import MembershipCore, MemberState
from protocols.membership.events import MemberChanged, MemberForgotten
from protocols.membership.messages import (
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
from tests.support.sans_io_harness import SansIOHarness


class Swim:
    """`count` membership cores on the sans-IO harness, and every member event they reported.

    The network has small random latency (0.5-3 ms), optional loss and the drops a test
    adds to `net.drop_rules`. Messages go through the real wire encoding (each core decodes
    its own bytes) unless `wire=False` (for bigger runs). Crashed nodes (`net.crash`)
    neither tick nor receive nor send.
    """

    def __init__(
        self,
        count: int,
        seed: int,
        config: MembershipConfig | None = None,
        loss: float = 0.0,
        wire: bool = True,
    ) -> None:
        self.config = config
        self.ids = [digest(f"node-{i}".encode()) for i in range(count)]
        self.net = SansIOHarness(
            seed=seed, latency=(0.0005, 0.003), loss=loss, wire=wire, on_event=self._record
        )
        for i, node in enumerate(self.ids):
            self.net.add(node, MembershipCore(node, random.Random(seed * 7919 + i), config))
        self.events: list[tuple[float, bytes, MemberChanged]] = []
        self.forgotten: list[tuple[float, bytes, bytes]] = []  # (when, observer, forgotten)

    def _record(self, observer: bytes, event: Any) -> None:
        if isinstance(event, MemberChanged):
            self.events.append((self.net.now, observer, event))
        else:
            assert isinstance(event, MemberForgotten), event
            self.forgotten.append((self.net.now, observer, event.node))

    @property
    def now(self) -> float:
        return self.net.now

    @property
    def cores(self) -> dict[bytes, MembershipCore]:
        return self.net.cores()

    @property
    def trace(self) -> list[tuple[float, int, str]]:
        """Everything the cores drained, in order: (when, node index, the effect's repr)."""
        return [(line.at, self.index(line.node), repr(line.item)) for line in self.net.outputs("out")]

    def index(self, node: bytes) -> int:
        return self.ids.index(node)

    def run_until(self, end: float) -> None:
        self.net.run_until(end)

    def act(self, node: bytes, action: Any) -> None:
        self.net.act(node, action)

    def restart(self, node: bytes, seed: int) -> MembershipCore:
        """A fresh process with the same identity: new core, incarnation 0, knows nobody."""
        self.net.recover(node)
        return self.net.add(node, MembershipCore(node, random.Random(seed), self.config))  # type: ignore[no-any-return]

    def join_all(self, spacing: float = 0.02) -> None:
        seed_node = self.ids[0]
        self.act(seed_node, lambda core: core.join(self.now, []))
        for i, node in enumerate(self.ids[1:], start=1):
            self.run_until(i * spacing)
            self.act(node, lambda core: core.join(self.now, [seed_node]))

    def view_of(self, target: bytes) -> dict[bytes, MemberState | None]:
        """What every running node other than `target` believes about it."""
        return {
            node: core.state_of(target)
            for node, core in self.cores.items()
            if node != target and node not in self.net.down
        }

    def first_event(self, observer: bytes, about: bytes, state: str) -> float | None:
        for at, node, event in self.events:
            if node == observer and event.node == about and event.state == state:
                return at
        return None

    def events_about(self, about: bytes, state: str) -> list[tuple[float, bytes]]:
        return [
            (at, node)
            for at, node, event in self.events
            if event.node == about and event.state == state and node != about
        ]


def converged(count: int, seed: int, **kwargs: Any) -> Swim:
    swim = Swim(count, seed, **kwargs)
    swim.join_all()
    swim.run_until(10.0)
    return swim


def test_nodes_join_and_all_see_each_other_alive() -> None:
    swim = converged(12, seed=1)
    everyone = set(swim.ids)
    for core in swim.cores.values():
        assert set(core.live_members()) == everyone
        assert {info.state for info in core.members().values()} == {MemberState.ALIVE}
        assert core.live_peer_count == 11
    # compact wire: a probe with a full piggyback stays far below one MTU
    assert max(swim.net.sent_bytes) < 1400
    assert not swim.events_about(swim.ids[3], "suspect")


def test_crashed_node_is_declared_dead_by_everyone_within_five_seconds() -> None:
    worst = 0.0
    for seed in range(1, 7):
        swim = converged(10, seed=seed)
        victim = swim.ids[seed]
        killed_at = swim.now
        swim.net.crash(victim)
        swim.run_until(killed_at + 8.0)
        assert set(swim.view_of(victim).values()) == {MemberState.DEAD}
        for observer in swim.cores:
            if observer == victim:
                continue
            dead_at = swim.first_event(observer, victim, "dead")
            assert dead_at is not None
            worst = max(worst, dead_at - killed_at)
        suspected = [at for at, _ in swim.events_about(victim, "suspect")]
        declared = [at for at, _ in swim.events_about(victim, "dead")]
        assert suspected and min(suspected) < min(declared)
    assert worst < 5.0, f"slowest detection {worst:.2f} s"


def test_dead_node_is_forgotten_after_reclaim_time() -> None:
    swim = converged(6, seed=3)
    victim = swim.ids[2]
    swim.net.crash(victim)
    swim.run_until(swim.now + 8.0)
    assert set(swim.view_of(victim).values()) == {MemberState.DEAD}
    declared = {observer: at for at, observer in swim.events_about(victim, "dead")}
    swim.run_until(swim.now + 60.0)
    assert set(swim.view_of(victim).values()) == {None}
    forgotten = {observer: at for at, observer, node in swim.forgotten if node == victim}
    assert forgotten.keys() == declared.keys() and len(forgotten) == 5
    for observer, at in forgotten.items():  # exactly reclaim_time after it was declared dead
        assert at == pytest.approx(declared[observer] + MembershipConfig().reclaim_time, abs=0.01)


def test_suspected_node_that_is_alive_refutes_and_stays_alive() -> None:
    swim = converged(8, seed=4)
    victim = swim.ids[5]
    start = swim.now

    def drop_victims_acks(at: float, sender: bytes, to: bytes, message: Any) -> bool:
        return sender == victim and isinstance(message, Ack) and start <= at < start + 1.5

    swim.net.drop_rules.append(drop_victims_acks)
    swim.run_until(start + 30.0)
    assert swim.events_about(victim, "suspect"), "dropping its acks never raised a suspicion"
    assert not swim.events_about(victim, "dead")
    assert set(swim.view_of(victim).values()) == {MemberState.ALIVE}
    refuting = swim.cores[victim]
    assert refuting.incarnation >= 1
    assert refuting.counters["refutations"] >= 1
    for core in swim.cores.values():
        if core.self_id != victim:
            assert core.members()[victim].incarnation == refuting.incarnation


def test_graceful_leave_is_seen_as_left_and_stops_probing() -> None:
    swim = converged(8, seed=5)
    leaver = swim.ids[6]
    left_at = swim.now
    swim.act(leaver, lambda core: core.leave(swim.now))
    swim.run_until(left_at + 2.0)
    assert set(swim.view_of(leaver).values()) == {MemberState.LEFT}
    assert not swim.events_about(leaver, "dead")
    assert not swim.events_about(leaver, "suspect")
    core = swim.cores[leaver]
    assert core.state_of(leaver) == MemberState.LEFT
    assert leaver not in core.live_members()
    pings_after = [
        entry
        for entry in swim.trace
        if entry[0] > left_at and entry[1] == swim.index(leaver) and "Ping(" in entry[2]
    ]
    assert not pings_after
    swim.run_until(left_at + 40.0)
    assert core.next_deadline() is None  # a left core goes quiet: no timers keep it awake
    # and the same core may come back later: it rejoins above its `left` incarnation
    swim.act(leaver, lambda core: core.join(swim.now, [swim.ids[0]]))
    swim.run_until(swim.now + 5.0)
    assert set(swim.view_of(leaver).values()) == {MemberState.ALIVE}
    assert core.incarnation == 2


def test_lossy_links_give_no_false_dead_over_a_long_run() -> None:
    swim = Swim(10, seed=6, loss=0.10)
    swim.join_all()
    swim.run_until(300.0)
    assert not [event for _, _, event in swim.events if event.state == "dead"]
    for core in swim.cores.values():
        assert len(core.live_members()) == 10
    suspicions = sum(1 for _, _, event in swim.events if event.state == "suspect")
    refutations = sum(core.counters["refutations"] for core in swim.cores.values())
    assert refutations >= 1 or suspicions == 0


def test_node_rejoining_after_being_declared_dead_comes_back_alive() -> None:
    swim = converged(8, seed=7)
    victim = swim.ids[4]
    swim.net.crash(victim)
    swim.run_until(swim.now + 8.0)
    assert set(swim.view_of(victim).values()) == {MemberState.DEAD}
    dead_incarnation = swim.cores[swim.ids[0]].members()[victim].incarnation
    swim.restart(victim, seed=99)
    swim.act(victim, lambda core: core.join(swim.now, [swim.ids[0]]))
    swim.run_until(swim.now + 5.0)
    assert set(swim.view_of(victim).values()) == {MemberState.ALIVE}
    returned = swim.cores[victim]
    assert returned.incarnation > dead_incarnation
    assert set(returned.live_members()) == set(swim.ids)


def test_healed_partition_reconnects_without_a_new_join() -> None:
    swim = converged(6, seed=8)
    isolated = swim.ids[1]
    cut_from = swim.now
    cut_until = cut_from + 15.0

    def partition(at: float, sender: bytes, to: bytes, message: Any) -> bool:
        return cut_from <= at < cut_until and isolated in (sender, to)

    swim.net.drop_rules.append(partition)
    swim.run_until(cut_until)
    assert set(swim.view_of(isolated).values()) == {MemberState.DEAD}
    # hearing nothing, the isolated node's own health multiplier slows its accusations
    assert swim.cores[isolated].health == MembershipConfig().max_health
    swim.run_until(cut_until + 30.0)
    assert set(swim.view_of(isolated).values()) == {MemberState.ALIVE}
    assert set(swim.cores[isolated].live_members()) == set(swim.ids)


def test_local_health_rises_when_a_node_hears_nothing_and_recovers() -> None:
    swim = converged(6, seed=9)
    deaf = swim.ids[2]
    start = swim.now

    def deafen(at: float, sender: bytes, to: bytes, message: Any) -> bool:
        return to == deaf and start <= at < start + 1.5

    swim.net.drop_rules.append(deafen)
    swim.run_until(start + 1.5)
    assert swim.cores[deaf].health >= 2
    swim.run_until(start + 30.0)
    assert swim.cores[deaf].health == 0
    assert not swim.events_about(deaf, "dead")


def test_malformed_and_unexpected_input_is_dropped_and_counted() -> None:
    me, peer, other = (digest(bytes([i])) for i in range(3))
    core = MembershipCore(me, random.Random(1))
    core.add_member(0.0, peer)
    core.drain()
    good = MemberUpdate(other, 0, WireState.ALIVE)
    cases: list[tuple[bytes, object]] = [
        (peer, "not a message"),
        (peer, None),
        (me, Ping(1, ())),  # from ourselves
        (b"short", Ping(1, ())),  # sender is not a node id
        (peer, Ping(-1, ())),  # sequence out of range
        (peer, Ping(1, "nope")),  # type: ignore[arg-type]
        (peer, PingReq(1, me, ())),  # asks us to probe ourselves
        (peer, PingReq(1, peer, ())),  # asks us to probe the requester
        (peer, PushPull((), "yes")),  # type: ignore[arg-type]
    ]
    for sender, message in cases:
        core.receive(1.0, sender, message)
    assert core.counters["dropped"] == len(cases)
    assert core.drain() == []
    for data in (b"", b"\xff\x00garbage", encode(Ping(1, ()))[:-1], encode([1, 2, 3])):
        core.receive_bytes(1.0, peer, data)
    assert core.counters["dropped"] == len(cases) + 4
    # bad entries inside an otherwise good message are skipped, the good ones applied
    bad_state = MemberUpdate(other, 0, 7)  # type: ignore[arg-type]
    short_node = MemberUpdate(b"x" * 5, 0, WireState.ALIVE)
    core.receive(1.0, peer, Ping(2, (bad_state, short_node, good)))
    assert core.counters["dropped"] == len(cases) + 6
    assert core.state_of(other) == MemberState.ALIVE
    assert set(core.members()) == {me, peer, other}  # nothing of the bad entries stuck
    replies = [e for e in core.drain() if isinstance(e, Send)]
    assert len(replies) == 1 and isinstance(replies[0].message, Ack)
    # an ack nobody waits for is counted as stale, not a crash
    core.receive(1.0, peer, Ack(12345, ()))
    assert core.counters["stale_replies"] == 1
    with pytest.raises(ValueError):
        core.add_member(1.0, b"too short")


def test_wire_round_trip_of_every_message() -> None:
    a, b = digest(b"a"), digest(b"b")
    messages = [
        Ping(1, (MemberUpdate(a, 3, WireState.SUSPECT, b),)),
        Ack(2**32 - 1, ()),
        PingReq(7, b, (MemberUpdate(b, 0, WireState.LEFT),)),
        Nack(8, ()),
        PushPull((MemberUpdate(a, 1, WireState.DEAD),), True),
    ]
    for message in messages:
        assert decode_membership(encode(message)) == message
    assert len(encode(MemberUpdate(a, 5, WireState.ALIVE))) <= 40


def test_same_seed_gives_the_same_trace_and_another_seed_does_not() -> None:
    def scenario(seed: int) -> list[tuple[float, int, str]]:
        swim = Swim(8, seed=seed, loss=0.05)
        swim.join_all()
        swim.run_until(6.0)
        swim.net.crash(swim.ids[3])
        swim.run_until(15.0)
        return swim.trace

    first = scenario(11)
    assert first == scenario(11)
    assert first != scenario(12)


def test_suspicion_timeout_formula() -> None:
    config = MembershipConfig()
    low, high, expected = config.suspicion_bounds(10)
    assert (low, high, expected) == (2.0, 12.0, 2)
    assert config.suspicion_bounds(3)[2] == 0  # too few members to wait for confirmations
    # above 32 members every timing stretches by log2(n) / 5: x1.99 at 1000
    assert config.time_scale(32) == 1.0
    assert config.time_scale(1000) == pytest.approx(1.993, abs=1e-3)
    assert config.suspicion_bounds(1000)[0] == pytest.approx(6.0 * config.time_scale(1000))
    assert MembershipConfig(scale_from=None).suspicion_bounds(1000)[0] == pytest.approx(6.0)
    assert config.retransmit_limit(10) == 8
    assert config.push_pull_period(1000) == 180.0
    with pytest.raises(ValueError):
        MembershipConfig(probe_timeout=1.0, protocol_period=0.5)


def test_a_hundred_nodes_converge_without_false_suspicion() -> None:
    swim = Swim(100, seed=13, wire=False)
    swim.join_all(spacing=0.01)
    swim.run_until(20.0)
    everyone = set(swim.ids)
    for core in swim.cores.values():
        assert set(core.live_members()) == everyone
    assert not [event for _, _, event in swim.events if event.state != "alive"]


def test_ping_req_about_a_member_known_dead_is_answered_at_once_with_its_tombstone() -> None:
    me, requester, gone = (digest(bytes([i])) for i in range(3))
    core = MembershipCore(me, random.Random(2))
    core.add_member(0.0, requester)
    core.receive(0.0, requester, PushPull((MemberUpdate(gone, 4, WireState.ALIVE),), False))
    core.receive(0.1, requester, PushPull((MemberUpdate(gone, 4, WireState.DEAD),), False))
    assert core.state_of(gone) == MemberState.DEAD
    core.drain()
    core.receive(0.2, requester, PingReq(9, gone, ()))
    sends = [e for e in core.drain() if isinstance(e, Send)]
    assert len(sends) == 1 and sends[0].to == requester
    nack = sends[0].message
    assert isinstance(nack, Nack) and nack.seq == 9
    assert nack.updates[0] == MemberUpdate(gone, 4, WireState.DEAD)


def test_broadcast_queue_sends_fewest_sent_first_and_retires_after_the_limit() -> None:
    a, b, c = (digest(bytes([i])) for i in range(3))
    queue = BroadcastQueue()
    queue.push(MemberUpdate(a, 0, WireState.ALIVE))
    queue.push(MemberUpdate(b, 0, WireState.ALIVE))
    assert [u.node for u in queue.take(1, limit=3)] == [b]  # newest first
    queue.push(MemberUpdate(c, 0, WireState.ALIVE))
    assert [u.node for u in queue.take(2, limit=3)] == [c, a]  # never sent before b's second
    queue.push(MemberUpdate(a, 1, WireState.SUSPECT))  # replaces a's pending update
    assert len(queue) == 3
    sent = [queue.take(16, limit=3) for _ in range(3)]
    assert sent[0][0] == MemberUpdate(a, 1, WireState.SUSPECT)
    assert len(queue) == 0
    counts = {node: sum(u.node == node for batch in sent for u in batch) for node in (a, b, c)}
    assert counts == {a: 3, b: 2, c: 2}  # b and c were already sent once before


def test_live_set_samples_distinct_live_members_and_reuses_stale_slots() -> None:
    nodes = [digest(bytes([i])) for i in range(40)]
    live = LiveSet()
    for node in nodes:
        live.add(node)
    for node in nodes[:30]:
        live.discard(node)
    live.add(nodes[0])  # back while its stale slot may still be there
    assert len(live) == 11
    rng = random.Random(3)
    expected = {nodes[0], *nodes[30:]}
    for _ in range(50):
        picked = live.sample(4, rng, exclude=nodes[35])
        assert len(picked) == len(set(picked)) == 4
        assert set(picked) <= expected - {nodes[35]}
    assert sorted(live.snapshot()) == sorted(expected)
    assert set(live.sample(20, rng)) == expected


def test_only_alive_introduces_a_member_bad_news_about_strangers_is_ignored() -> None:
    me, peer, stranger, known = (digest(bytes([i])) for i in range(10, 14))
    core = MembershipCore(me, random.Random(4))
    core.add_member(0.0, peer)
    core.add_member(0.0, known)
    suspicion = MemberUpdate(stranger, 3, WireState.SUSPECT, peer)
    core.receive(0.0, peer, Ping(1, (suspicion, MemberUpdate(known, 0, WireState.SUSPECT, peer))))
    assert core.state_of(stranger) is None  # a long-gone member stays gone
    assert core.state_of(known) == MemberState.SUSPECT  # a known one is suspected as before
    core.receive(0.1, peer, Ping(2, (MemberUpdate(stranger, 3, WireState.ALIVE),)))
    assert core.state_of(stranger) == MemberState.ALIVE
