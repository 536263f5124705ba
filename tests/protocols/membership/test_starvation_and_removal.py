"""A starved node accuses nobody (late timers, reported loop lag), and a removed member stays out."""

from __future__ import annotations

import random

from protocols.common.effects import Send
from protocols.common.hashing import digest
from protocols.membership.core import MembershipCore, MemberState
from protocols.membership.events import MemberRemoved
from protocols.membership.messages import Ack, MemberUpdate, Ping, PushPull, WireState

ME, PEER, OTHER = (digest(bytes([i])) for i in range(20, 23))


def pair() -> MembershipCore:
    """A core that knows one peer, tick'd up to its first probe; the ping is drained."""
    core = MembershipCore(ME, random.Random(1))
    core.add_member(0.0, PEER)
    due = core.next_deadline()
    assert due is not None
    core.tick(due)
    pings = [e for e in core.drain() if isinstance(e, Send) and isinstance(e.message, Ping)]
    assert [p.to for p in pings] == [PEER]
    return core


def run_on_time(core: MembershipCore, until: float) -> None:
    """Tick at every deadline exactly (a healthy process), up to `until`."""
    while (due := core.next_deadline()) is not None and due <= until:
        core.tick(due)
        core.drain()


def test_an_unanswered_probe_on_time_makes_a_suspect() -> None:
    core = pair()
    start = core.next_deadline()
    assert start is not None
    run_on_time(core, start + 1.0)
    assert core.state_of(PEER) == MemberState.SUSPECT
    assert core.counters["probes_excused"] == 0


def test_a_late_tick_excuses_the_probe_and_raises_local_health() -> None:
    core = pair()
    due = core.next_deadline()
    assert due is not None
    # The process was starved for a second: everything due fires at once, late.
    core.tick(due + 1.0)
    assert core.state_of(PEER) == MemberState.ALIVE
    assert core.counters["late_timers"] == 1
    assert core.counters["probes_excused"] == 1
    assert core.health >= 1
    # The excused target is probed again first thing, and an answer clears the way.
    pings = [e for e in core.drain() if isinstance(e, Send) and isinstance(e.message, Ping)]
    assert pings and pings[-1].to == PEER
    core.receive(due + 1.01, PEER, Ack(pings[-1].message.seq, ()))
    run_on_time(core, due + 20.0)  # peer silent again from here: now it is suspected, on time
    assert core.state_of(PEER) in (MemberState.SUSPECT, MemberState.DEAD)


def test_reported_loop_lag_excuses_the_probe_under_way() -> None:
    core = pair()
    now = core.next_deadline()
    assert now is not None
    core.note_local_lag(now - 0.01, 0.05)  # below the slack: nothing
    assert core.counters["loop_lag"] == 0
    core.note_local_lag(now - 0.01, 0.8)
    assert core.counters["loop_lag"] == 1 and core.health == 1
    for _ in range(
        2
    ):  # the indirect window, then the period's end: on time, but the probe overlapped our stall
        due = core.next_deadline()
        assert due is not None
        core.tick(due)
        core.drain()
    assert core.state_of(PEER) == MemberState.ALIVE
    assert core.counters["probes_excused"] == 1


def test_a_death_verdict_waits_once_for_a_recently_starved_node() -> None:
    core = MembershipCore(ME, random.Random(2))
    core.add_member(0.0, PEER)
    core.add_member(0.0, OTHER)
    # OTHER tells us PEER is suspect; we stay healthy and on time until just before the verdict.
    core.receive(0.0, OTHER, PushPull((MemberUpdate(PEER, 0, WireState.SUSPECT, OTHER),), False))
    assert core.state_of(PEER) == MemberState.SUSPECT
    verdict_at = None
    while (due := core.next_deadline()) is not None and due < 60.0:
        if core.state_of(PEER) == MemberState.DEAD:
            break
        core.tick(due)
        for effect in core.drain():  # OTHER answers our probes; PEER never does
            if isinstance(effect, Send) and effect.to == OTHER and isinstance(effect.message, Ping):
                core.receive(due, OTHER, Ack(effect.message.seq, ()))
        verdict_at = due
    healthy_verdict = verdict_at
    assert core.state_of(PEER) == MemberState.DEAD and healthy_verdict is not None

    starved = MembershipCore(ME, random.Random(2))
    starved.add_member(0.0, PEER)
    starved.add_member(0.0, OTHER)
    starved.receive(0.0, OTHER, PushPull((MemberUpdate(PEER, 0, WireState.SUSPECT, OTHER),), False))
    starved.note_local_lag(healthy_verdict - 0.5, 1.0)
    while (due := starved.next_deadline()) is not None and due <= healthy_verdict:
        starved.tick(due)
        for effect in starved.drain():
            if isinstance(effect, Send) and effect.to == OTHER and isinstance(effect.message, Ping):
                starved.receive(due, OTHER, Ack(effect.message.seq, ()))
    assert starved.state_of(PEER) == MemberState.SUSPECT  # the verdict was postponed
    assert starved.counters["verdicts_postponed"] == 1
    # A refutation that was queued behind our backlog now arrives in time.
    starved.receive(healthy_verdict + 0.1, PEER, Ping(9, (MemberUpdate(PEER, 1, WireState.ALIVE),)))
    assert starved.state_of(PEER) == MemberState.ALIVE


def test_a_removed_member_is_gone_and_nothing_brings_it_back() -> None:
    core = MembershipCore(ME, random.Random(3))
    core.add_member(0.0, PEER)
    core.add_member(0.0, OTHER)
    core.drain()
    assert core.remove_member(1.0, PEER) is True
    assert [e for e in core.drain() if isinstance(e, MemberRemoved)] == [MemberRemoved(PEER)]
    assert core.state_of(PEER) is None and PEER not in core.members()
    assert core.live_peers() == [OTHER]
    assert core.remove_member(1.0, PEER) is False
    # A friend gossips it alive, it pings us, an admission record is replayed: it stays out.
    core.receive(2.0, OTHER, Ping(1, (MemberUpdate(PEER, 7, WireState.ALIVE),)))
    core.receive(2.0, PEER, Ping(2, ()))
    assert core.add_member(2.0, PEER) is False
    assert core.state_of(PEER) is None
    assert core.counters["from_removed"] == 1
    # It is never probed again.
    for _ in range(40):
        due = core.next_deadline()
        assert due is not None
        core.tick(due)
        for effect in core.drain():
            assert not (isinstance(effect, Send) and effect.to == PEER)
            if isinstance(effect, Send) and effect.to == OTHER and isinstance(effect.message, Ping):
                core.receive(due, OTHER, Ack(effect.message.seq, ()))
    assert core.remove_member(3.0, ME) is False  # never ourselves
