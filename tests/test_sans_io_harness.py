"""The shared sans-IO harness (tests/support/sans_io_harness.py) itself: order, network, clocks, events."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import pytest

from protocols.common.effects import Event, Send
from tests.support.sans_io_harness import SansIOHarness


@dataclass(frozen=True, slots=True)
class Woke(Event):
    at: float


@dataclass(frozen=True, slots=True)
class Heard(Event):
    message: str


class Toy:
    """Answers "ping" with "pong", reports every message it hears and every timer that fires."""

    def __init__(self) -> None:
        self.wake: float | None = None
        self.heard: list[tuple[float, Any, str]] = []
        self.ticks: list[float] = []
        self.out: list[Any] = []

    def receive(self, now: float, sender: Any, message: str) -> None:
        self.heard.append((now, sender, message))
        self.out.append(Heard(message))
        if message == "ping":
            self.out.append(Send(sender, "pong"))

    def receive_bytes(self, now: float, sender: Any, data: bytes) -> None:
        self.receive(now, sender, "bytes:" + data.hex())

    def tick(self, now: float) -> None:
        self.ticks.append(now)
        self.wake = None
        self.out.append(Woke(now))

    def next_deadline(self) -> float | None:
        return self.wake

    def drain(self) -> list[Any]:
        out, self.out = self.out, []
        return out


def toys(count: int, **options: Any) -> tuple[SansIOHarness, list[Toy]]:
    net = SansIOHarness(**options)
    cores = [Toy() for _ in range(count)]
    for index, core in enumerate(cores):
        net.add(index, core, message_type=str)
    return net, cores


def test_same_time_actions_then_deliveries_then_timers_each_in_order() -> None:
    net, (_a, b, c) = toys(3, latency=1.0)
    order: list[str] = []
    net.on_event = lambda node, event: order.append(f"{type(event).__name__} at {node}")
    c.wake = b.wake = 1.0  # equal deadlines: the node added first fires first
    net.send(0, 1, "first")
    net.send(0, 2, "second")
    net.schedule(1.0, lambda: order.append("action"))
    net.run_until(1.0)
    assert order == ["action", "Heard at 1", "Heard at 2", "Woke at 1", "Woke at 2"]
    assert net.now == 1.0 and b.ticks == c.ticks == [1.0]


def test_nothing_after_the_end_runs_and_a_past_deadline_fires_at_once() -> None:
    net, (a,) = toys(1)
    a.wake = 5.0
    net.run_until(4.999)
    assert a.ticks == [] and net.now == 4.999
    net.run_until(5.0)
    assert a.ticks == [5.0]
    a.wake = 1.0  # set by a direct call into the core, already past
    net.run_until(6.0)
    assert a.ticks == [5.0, 5.0]


def test_messages_cross_the_wire_and_replies_flow_back() -> None:
    net, (a, b) = toys(2, latency=(0.001, 0.002))
    net.send(0, 1, "ping")
    net.run_until(1.0)
    assert [m for _, _, m in b.heard] == ["ping"] and [m for _, _, m in a.heard] == ["pong"]
    assert net.sent == 2 and net.delivered == 2 and net.sent_bytes == [5, 5]
    lines = [(line.kind, line.node, line.item) for line in net.trace or []]
    assert lines[:3] == [("in", 1, "ping"), ("out", 1, Heard("ping")), ("out", 1, Send(0, "pong"))]


def test_a_core_without_a_message_type_decodes_its_own_bytes_and_without_wire_objects_travel() -> None:
    net = SansIOHarness()
    core = net.add("x", Toy())
    net.send("y", "x", "hi")
    net.settle()
    assert core.heard == [(0.0, "y", "bytes:a26869")]
    objects = SansIOHarness(wire=False)
    plain = objects.add("x", Toy())
    message = object()
    objects.send("y", "x", message)
    objects.settle()
    assert plain.heard[0][2] is message


def test_the_same_seed_gives_the_same_run_another_seed_does_not() -> None:
    def run(seed: int) -> list[tuple[float, str, Any, Any]]:
        net, _cores = toys(4, seed=seed, loss=0.3, latency=(0.01, 0.05))
        for _ in range(20):
            for sender in range(4):
                net.send(sender, (sender + 1) % 4, "ping")
            net.run_for(0.1)
        return [(line.at, line.kind, line.node, line.item) for line in net.trace or []]

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_loss_draws_once_per_send_even_at_zero() -> None:
    net, _ = toys(2, seed=9, latency=(0.0, 1.0))
    for _ in range(5):
        net.send(0, 1, "x")
    reference = random.Random(9)
    for _ in range(5):
        reference.random()
        reference.uniform(0.0, 1.0)
    assert net.rng.random() == reference.random()


def test_loss_drop_rules_and_arrival_rules_are_counted() -> None:
    net, (a, b) = toys(2, loss=lambda sender, to: 1.0 if to == 1 else 0.0)
    net.send(0, 1, "lost")
    net.send(1, 0, "kept")
    net.drop_rules.append(lambda at, sender, to, message: message == "refused")
    net.send(1, 0, "refused")
    net.arrival_rules.append(lambda at, sender, to, message: message == "late")
    net.send(1, 0, "late")
    net.settle()
    assert [m for _, _, m in a.heard] == ["kept"] and b.heard == []
    assert (net.sent, net.lost, net.dropped, net.delivered) == (4, 1, 2, 1)


def test_a_partition_drops_what_arrives_across_it_even_if_sent_before() -> None:
    net, (_a, b, c) = toys(3, latency=1.0)
    net.send(0, 1, "in flight")
    net.partition([0])
    net.send(1, 2, "same side")
    net.run_until(2.0)
    assert b.heard == [] and [m for _, _, m in c.heard] == ["same side"]
    net.heal()
    net.send(0, 1, "healed")
    net.run_until(4.0)
    assert [m for _, _, m in b.heard] == ["healed"]


def test_a_crashed_node_neither_ticks_nor_receives_nor_sends_until_it_recovers() -> None:
    net, (a, b) = toys(2, latency=0.5)
    a.wake = 1.0
    net.crash(0)
    net.send(1, 0, "ping")
    net.send(0, 1, "from the dead")
    net.run_until(2.0)
    assert a.ticks == [] and a.heard == [] and b.heard == []
    net.recover(0)
    net.run_until(2.0)
    assert a.ticks == [2.0]  # its deadline was past: it fires at once


def test_cores_see_their_own_clock() -> None:
    net = SansIOHarness(latency=1.0)
    slow = net.add("slow", Toy(), message_type=str, rate=0.5, offset=100.0)
    net.add("other", Toy(), message_type=str)
    slow.wake = 101.0  # local time: real time 2.0
    net.send("other", "slow", "hello")
    net.run_until(3.0)
    assert slow.heard == [(100.5, "other", "hello")]
    assert slow.ticks == [101.0] and net.local("slow") == 101.5


def test_events_go_to_typed_handlers_then_on_event_and_may_call_into_cores() -> None:
    seen: list[str] = []
    net, (a, b) = toys(2)
    net.on(Woke, lambda node, event: seen.append(f"woke {node}"))
    net.on(Event, lambda node, event: seen.append(f"any {type(event).__name__}"))
    net.on_event = lambda node, event: seen.append("on_event")

    def answer(node: Any, event: Heard) -> None:  # feeds the core again within the same flush
        if event.message == "hi":
            net.core(node).out.append(Send(0, "re: hi"))

    net.on(Heard, answer)
    b.wake = 0.5
    net.send(0, 1, "hi")
    net.run_until(1.0)
    assert seen == ["any Heard", "on_event", "any Heard", "on_event", "woke 1", "any Woke", "on_event"]
    assert [m for _, _, m in a.heard] == ["re: hi"]


def test_settle_fires_no_timer_and_stops_a_network_that_never_quiets() -> None:
    net, (a, _b) = toys(2)
    a.wake = 0.0
    net.send(0, 1, "ping")
    net.settle()
    assert [m for _, _, m in a.heard] == ["pong"] and a.ticks == []
    net.on(Heard, lambda node, event: net.core(node).out.append(Send(1 - node, "echo")))
    net.send(0, 1, "echo")
    with pytest.raises(AssertionError, match="still busy"):
        net.settle(max_steps=50)
