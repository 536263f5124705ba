"""Supervisor semantics under injected crashes: who restarts, in which order, when it escalates.

Everything runs on trio's MockClock, so restart-intensity windows and shutdown timeouts
are exact virtual times and the tests are deterministic.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing

from actors.actor import Actor, ActorCrashed
from actors.supervisor import (
    ChildSpec,
    ChildStartError,
    Restart,
    RestartIntensityExceeded,
    Strategy,
    Supervisor,
    SupervisorNotRunning,
)

if TYPE_CHECKING:
    from trio._core._run import TaskStatus


def run(test: Callable[[], Awaitable[None]]) -> None:
    trio.run(test, clock=trio.testing.MockClock(autojump_threshold=0))


class Boom(Exception):
    pass


@dataclass
class Script:
    """Faults to inject into one child id, shared by all its incarnations."""

    start_failures: int = 0  # the next N starts crash in on_start
    stop_error: bool = False  # on_stop raises
    stop_hang: bool = False  # on_stop never returns


@dataclass
class World:
    journal: list[tuple[str, str]] = field(default_factory=list)
    scripts: dict[str, Script] = field(default_factory=dict)

    def spec(
        self,
        cid: str,
        restart: Restart = Restart.PERMANENT,
        shutdown: float | None = 5.0,
    ) -> ChildSpec:
        self.scripts.setdefault(cid, Script())
        return ChildSpec(cid, lambda: Worker(cid, self), restart=restart, shutdown=shutdown)

    def since(self, mark: int) -> list[tuple[str, str]]:
        return self.journal[mark:]


class Worker(Actor[str, str]):
    mailbox_capacity = 8

    def __init__(self, cid: str, world: World) -> None:
        self.cid = cid
        self.world = world
        self.script = world.scripts[cid]

    async def on_start(self) -> None:
        if self.script.start_failures > 0:
            self.script.start_failures -= 1
            self.world.journal.append(("start-crash", self.cid))
            raise Boom(f"{self.cid} failed to start")
        self.world.journal.append(("start", self.cid))

    async def handle(self, message: str) -> str:
        if message == "crash":
            self.world.journal.append(("crash", self.cid))
            raise Boom(f"{self.cid} crashed on purpose")
        if message == "exit":
            self.stop()
        return f"{self.cid}:{message}"

    async def on_stop(self) -> None:
        self.world.journal.append(("stop", self.cid))
        if self.script.stop_hang:
            await trio.sleep_forever()
        if self.script.stop_error:
            raise Boom(f"{self.cid} failed to stop")


async def until(predicate: Callable[[], bool]) -> None:
    """Let virtual time pass (1 ms steps) until the supervisor has caught up."""
    for _ in range(10_000):
        if predicate():
            return
        await trio.sleep(0.001)
    raise AssertionError("condition never became true")


async def crash(sup: Supervisor, cid: str) -> None:
    """Crash a child through a call, which must fail at the caller, not hang."""
    with pytest.raises(ActorCrashed):
        await sup.ref(cid).call("crash", timeout=1)


def running(sup: Supervisor) -> list[str]:
    return [c.id for c in sup.which_children() if c.running]


def restarts(sup: Supervisor) -> dict[str, int]:
    return {c.id: c.restarts for c in sup.which_children()}


# ----------------------------------------------------------------- order


def test_children_start_in_order_and_stop_in_reverse() -> None:
    async def main() -> None:
        world = World()
        sup = Supervisor([world.spec("a"), world.spec("b"), world.spec("c")])
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            assert world.journal == [("start", "a"), ("start", "b"), ("start", "c")]
            assert await sup.ref("b").call("hi", timeout=1) == "b:hi"
            await sup.shutdown()
        assert world.journal[3:] == [("stop", "c"), ("stop", "b"), ("stop", "a")]
        assert not sup.running
        assert [c.kind for c in sup.which_children()] == ["worker"] * 3

    run(main)


# ----------------------------------------------------------------- strategies


@pytest.mark.parametrize(
    ("strategy", "expected_after_crash", "expected_restarts"),
    [
        (
            Strategy.ONE_FOR_ONE,
            [("crash", "b"), ("stop", "b"), ("start", "b")],
            {"a": 0, "b": 1, "c": 0},
        ),
        (
            Strategy.REST_FOR_ONE,
            [("crash", "b"), ("stop", "b"), ("stop", "c"), ("start", "b"), ("start", "c")],
            {"a": 0, "b": 1, "c": 1},
        ),
        (
            Strategy.ONE_FOR_ALL,
            [
                ("crash", "b"),
                ("stop", "b"),
                ("stop", "c"),
                ("stop", "a"),
                ("start", "a"),
                ("start", "b"),
                ("start", "c"),
            ],
            {"a": 1, "b": 1, "c": 1},
        ),
    ],
)
def test_strategy_decides_who_restarts_and_in_which_order(
    strategy: Strategy,
    expected_after_crash: list[tuple[str, str]],
    expected_restarts: dict[str, int],
) -> None:
    async def main() -> None:
        world = World()
        sup = Supervisor([world.spec("a"), world.spec("b"), world.spec("c")], strategy=strategy, intensity=3)
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            ref_b = sup.ref("b")
            mark = len(world.journal)
            await crash(sup, "b")
            await until(lambda: running(sup) == ["a", "b", "c"] and sup.total_restarts == 1)
            assert world.since(mark) == expected_after_crash
            assert restarts(sup) == expected_restarts
            # The ref handed out before the crash reaches the new incarnation.
            assert await ref_b.call("again", timeout=1) == "b:again"
            status = {c.id: c for c in sup.which_children()}
            assert status["b"].crashes == 1 and status["b"].last_error is not None
            assert "crashed on purpose" in status["b"].last_error
            await sup.shutdown()

    run(main)


# ----------------------------------------------------------------- restart types


def test_restart_types_on_normal_exit_and_crash() -> None:
    async def main() -> None:
        world = World()
        sup = Supervisor(
            [
                world.spec("perm", Restart.PERMANENT),
                world.spec("trans", Restart.TRANSIENT),
                world.spec("temp", Restart.TEMPORARY),
            ],
            intensity=10,
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            # Normal exits: only the permanent child comes back.
            for cid in ("perm", "trans"):
                assert await sup.ref(cid).call("exit", timeout=1) == f"{cid}:exit"
            await until(lambda: sup.total_restarts == 1 and "perm" in running(sup))
            assert running(sup) == ["perm", "temp"]
            assert restarts(sup) == {"perm": 1, "trans": 0, "temp": 0}
            await sup.shutdown()

        world2 = World()
        sup2 = Supervisor(
            [world2.spec("trans", Restart.TRANSIENT), world2.spec("temp", Restart.TEMPORARY)],
            intensity=10,
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(sup2.run)
            # Crashes: transient comes back, temporary is dropped for good.
            await crash(sup2, "trans")
            await crash(sup2, "temp")
            await until(lambda: sup2.total_restarts == 1 and running(sup2) == ["trans"])
            await trio.sleep(1)
            assert [c.id for c in sup2.which_children()] == ["trans"]
            assert restarts(sup2) == {"trans": 1}
            await sup2.shutdown()

    run(main)


def test_temporary_child_stopped_by_sibling_restart_is_not_restarted() -> None:
    async def main() -> None:
        world = World()
        sup = Supervisor(
            [world.spec("temp", Restart.TEMPORARY), world.spec("b")],
            strategy=Strategy.ONE_FOR_ALL,
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            mark = len(world.journal)
            await crash(sup, "b")
            await until(lambda: running(sup) == ["b"])
            assert world.since(mark) == [
                ("crash", "b"),
                ("stop", "b"),
                ("stop", "temp"),
                ("start", "b"),
            ]
            assert [c.id for c in sup.which_children()] == ["b"]
            await sup.shutdown()

    run(main)


def test_transient_child_that_exited_normally_stays_down_in_group_restart() -> None:
    async def main() -> None:
        world = World()
        sup = Supervisor(
            [world.spec("done", Restart.TRANSIENT), world.spec("b")],
            strategy=Strategy.ONE_FOR_ALL,
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await sup.ref("done").call("exit", timeout=1)
            await until(lambda: running(sup) == ["b"])
            await crash(sup, "b")
            await until(lambda: sup.total_restarts == 1 and running(sup) == ["b"])
            assert running(sup) == ["b"]
            await sup.shutdown()

    run(main)


# ----------------------------------------------------------------- intensity


def test_intensity_window_then_escalation_stops_all_in_reverse() -> None:
    async def main() -> None:
        world = World()
        sup = Supervisor([world.spec("a"), world.spec("b"), world.spec("c")], intensity=2, period=10)
        failure: list[BaseException] = []

        async def supervised(*, task_status: TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
            try:
                await sup.run(task_status=task_status)
            except RestartIntensityExceeded as error:
                failure.append(error)

        async with trio.open_nursery() as nursery:
            await nursery.start(supervised)
            t0 = trio.current_time()
            await crash(sup, "b")  # t=0: 1 restart in window
            await until(lambda: sup.total_restarts == 1)
            await trio.sleep(6 - (trio.current_time() - t0))
            await crash(sup, "b")  # t=6: 2 restarts in window, still allowed
            await until(lambda: sup.total_restarts == 2)
            await trio.sleep(11 - (trio.current_time() - t0))
            await crash(sup, "b")  # t=11: the t=0 restart left the window: 2 again
            await until(lambda: sup.total_restarts == 3)
            assert not failure and sup.running
            mark = len(world.journal)
            await crash(sup, "b")  # t≈11: restarts at 6, 11, 11 → 3 > 2: give up
        assert len(failure) == 1 and "intensity" in str(failure[0])
        assert world.since(mark) == [("crash", "b"), ("stop", "b"), ("stop", "c"), ("stop", "a")]
        assert not sup.running and running(sup) == []
        assert sup.total_restarts == 3

    run(main)


def test_intensity_zero_escalates_on_first_crash() -> None:
    async def main() -> None:
        world = World()
        sup = Supervisor([world.spec("a")], intensity=0)
        with pytest.raises(RestartIntensityExceeded):
            async with trio.open_nursery() as nursery:
                await nursery.start(sup.run)
                await crash(sup, "a")
                await trio.sleep_forever()

    # The supervisor raises out of its own task, so the nursery wraps it in a group.
    with pytest.raises(ExceptionGroup):
        run(main)


def test_invalid_flags_and_specs_are_refused() -> None:
    with pytest.raises(ValueError):
        Supervisor(intensity=-1)
    with pytest.raises(ValueError):
        Supervisor(period=0)
    with pytest.raises(ValueError):
        ChildSpec("", lambda: Worker("x", World()))
    with pytest.raises(ValueError):
        ChildSpec("x", lambda: Worker("x", World()), shutdown=-1)
    world = World()
    with pytest.raises(ValueError, match="duplicate"):
        Supervisor([world.spec("a"), world.spec("a")])


# ----------------------------------------------------------------- crashes at start


def test_crash_in_on_start_is_a_crash_and_is_retried() -> None:
    async def main() -> None:
        world = World()
        sup = Supervisor([world.spec("a"), world.spec("b"), world.spec("c")], intensity=3)
        world.scripts["b"].start_failures = 2
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            assert world.journal == [
                ("start", "a"),
                ("start-crash", "b"),
                ("start-crash", "b"),
                ("start", "b"),
                ("start", "c"),
            ]
            status = {c.id: c for c in sup.which_children()}
            assert status["b"].crashes == 2 and status["b"].restarts == 0
            assert sup.total_restarts == 2
            await sup.shutdown()

    run(main)


def test_crash_at_start_beyond_intensity_fails_the_supervisor_start() -> None:
    async def main() -> None:
        world = World()
        sup = Supervisor([world.spec("a"), world.spec("b"), world.spec("c")], intensity=1)
        world.scripts["b"].start_failures = 100
        with pytest.raises(RestartIntensityExceeded):
            await sup.run()
        assert world.journal == [
            ("start", "a"),
            ("start-crash", "b"),
            ("start-crash", "b"),
            ("stop", "a"),
        ]
        assert ("start", "c") not in world.journal

    run(main)


def test_one_for_all_restart_retries_when_a_sibling_fails_to_start() -> None:
    async def main() -> None:
        world = World()
        sup = Supervisor(
            [world.spec("a"), world.spec("b"), world.spec("c")],
            strategy=Strategy.ONE_FOR_ALL,
            intensity=5,
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            world.scripts["b"].start_failures = 1
            mark = len(world.journal)
            await crash(sup, "c")
            await until(lambda: running(sup) == ["a", "b", "c"] and sup.total_restarts == 2)
            assert world.since(mark) == [
                ("crash", "c"),
                ("stop", "c"),
                ("stop", "b"),
                ("stop", "a"),
                ("start", "a"),
                ("start-crash", "b"),  # counts as a crash: the group restarts again
                ("stop", "a"),
                ("start", "a"),
                ("start", "b"),
                ("start", "c"),
            ]
            assert {c.id: c.crashes for c in sup.which_children()} == {"a": 0, "b": 1, "c": 1}
            await sup.shutdown()

    run(main)


def test_factory_error_counts_as_a_start_crash() -> None:
    async def main() -> None:
        calls = 0

        def flaky_factory() -> Worker:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise Boom("cannot build")
            world.scripts.setdefault("f", Script())
            return Worker("f", world)

        world = World()
        sup = Supervisor([ChildSpec("f", flaky_factory)])
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            assert running(sup) == ["f"] and sup.total_restarts == 1
            await sup.shutdown()

    run(main)


# ----------------------------------------------------------------- crashes at shutdown


def test_crash_and_hang_during_shutdown_are_contained(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        world = World()
        sup = Supervisor(
            [world.spec("a"), world.spec("b", shutdown=2.0), world.spec("c")],
        )
        world.scripts["c"].stop_error = True
        world.scripts["b"].stop_hang = True
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            t0 = trio.current_time()
            await sup.shutdown()
            # c's failing on_stop did not stop the shutdown; b was cancelled after 2 s.
            assert trio.current_time() - t0 == pytest.approx(2.0)
        assert world.journal[3:] == [("stop", "c"), ("stop", "b"), ("stop", "a")]
        status = {c.id: c for c in sup.which_children()}
        assert status["c"].shutdown_errors == 1 and status["c"].kills == 0
        assert status["b"].kills == 1 and status["b"].shutdown_errors == 0
        assert all(c.restarts == 0 for c in status.values())

    with caplog.at_level(logging.WARNING, logger="actors.supervisor"):
        run(main)
    assert any("failed while shutting down" in r.getMessage() for r in caplog.records)
    assert any("did not stop within 2.0 s" in r.getMessage() for r in caplog.records)


def test_sibling_failing_to_stop_during_group_restart_still_restarts() -> None:
    async def main() -> None:
        world = World()
        sup = Supervisor([world.spec("a"), world.spec("b")], strategy=Strategy.ONE_FOR_ALL)
        world.scripts["a"].stop_error = True
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await crash(sup, "b")
            await until(lambda: running(sup) == ["a", "b"] and sup.total_restarts == 1)
            status = {c.id: c for c in sup.which_children()}
            assert status["a"].shutdown_errors == 1 and status["a"].restarts == 1
            world.scripts["a"].stop_error = False
            await sup.shutdown()

    run(main)


def test_crash_in_on_stop_on_normal_exit_is_a_crash() -> None:
    async def main() -> None:
        world = World()
        sup = Supervisor([world.spec("t", Restart.TRANSIENT)])
        world.scripts["t"].stop_error = True
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await sup.ref("t").call("exit", timeout=1)
            await until(lambda: sup.total_restarts == 1)
            assert running(sup) == ["t"]  # transient, but it crashed: restarted
            world.scripts["t"].stop_error = False
            await sup.shutdown()

    run(main)


# ----------------------------------------------------------------- logging


def test_crash_is_logged_with_traceback(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        world = World()
        sup = Supervisor([world.spec("a")])
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await crash(sup, "a")
            await until(lambda: sup.total_restarts == 1)
            await sup.shutdown()

    with caplog.at_level(logging.ERROR, logger="actors.supervisor"):
        run(main)
    crashes = [r for r in caplog.records if "crashed while running" in r.getMessage()]
    assert len(crashes) == 1
    assert crashes[0].exc_info is not None
    assert "crashed on purpose" in caplog.text
    assert "in handle" in caplog.text  # the traceback names the crashing frame


# ----------------------------------------------------------------- trees


def nested(world: World, name: str, intensity: int = 1) -> Callable[[], Supervisor]:
    def build() -> Supervisor:
        world.journal.append(("sup-start", name))
        return Supervisor([world.spec("w1"), world.spec("w2")], intensity=intensity, name=name)

    return build


def test_nested_supervisor_escalates_to_parent_which_applies_its_strategy() -> None:
    async def main() -> None:
        world = World()
        root = Supervisor(
            [
                world.spec("x"),
                ChildSpec("sub", nested(world, "sub"), shutdown=None),
                world.spec("y"),
            ],
            strategy=Strategy.REST_FOR_ONE,
            intensity=1,
            period=60,
            name="root",
        )
        failure: list[BaseException] = []

        async def supervised(*, task_status: TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
            try:
                await root.run(task_status=task_status)
            except RestartIntensityExceeded as error:
                failure.append(error)

        def sub() -> Supervisor:
            child = root.child("sub")
            assert isinstance(child, Supervisor)
            return child

        async with trio.open_nursery() as nursery:
            await nursery.start(supervised)
            assert [c.kind for c in root.which_children()] == ["worker", "supervisor", "worker"]
            first_sub = sub()
            await crash(first_sub, "w1")  # sub restarts w1 (1 restart, allowed)
            await until(lambda: first_sub.total_restarts == 1)
            assert root.total_restarts == 0
            mark = len(world.journal)
            await crash(first_sub, "w1")  # 2 > 1: sub gives up, root restarts sub + y
            await until(lambda: root.total_restarts == 1 and running(root) == ["x", "sub", "y"])
            assert world.since(mark) == [
                ("crash", "w1"),
                ("stop", "w1"),  # on_stop after the crash
                ("stop", "w2"),  # sub shuts its children down in reverse order
                ("stop", "y"),  # root (rest_for_one) stops the rest, in reverse
                ("sup-start", "sub"),
                ("start", "w1"),
                ("start", "w2"),
                ("start", "y"),
            ]
            assert root.restart_count("sub") == 1 and root.restart_count("x") == 0
            assert sub() is not first_sub
            # The same once more: root's own intensity (1 in 60 s) is now exceeded.
            second_sub = sub()
            await crash(second_sub, "w2")
            await until(lambda: second_sub.total_restarts == 1)
            await crash(second_sub, "w2")
        assert len(failure) == 1 and "root" in str(failure[0])
        assert running(root) == []
        assert world.journal[-3:] == [("stop", "w1"), ("stop", "y"), ("stop", "x")]

    run(main)


# ----------------------------------------------------------------- runtime children


def test_start_and_terminate_child_at_runtime() -> None:
    async def main() -> None:
        world = World()
        root = Supervisor([world.spec("base")], name="root")
        async with trio.open_nursery() as nursery:
            await nursery.start(root.run)
            # The hub role subtree comes and goes with elections.
            await root.start_child(ChildSpec("hub", nested(world, "hub")))
            assert running(root) == ["base", "hub"]
            hub = root.child("hub")
            assert isinstance(hub, Supervisor) and running(hub) == ["w1", "w2"]
            mark = len(world.journal)
            await root.terminate_child("hub")
            assert world.since(mark) == [("stop", "w2"), ("stop", "w1")]
            assert [c.id for c in root.which_children()] == ["base"]
            with pytest.raises(KeyError):
                await root.terminate_child("hub")
            with pytest.raises(ValueError, match="already has"):
                await root.start_child(world.spec("base"))
            world.scripts.setdefault("bad", Script()).start_failures = 1
            with pytest.raises(ChildStartError) as info:
                await root.start_child(world.spec("bad"))
            assert isinstance(info.value.__cause__, Boom)
            assert [c.id for c in root.which_children()] == ["base"]
            # A runtime child is supervised like any other.
            await root.start_child(world.spec("late"))
            await crash(root, "late")
            await until(lambda: root.restart_count("late") == 1)
            await root.shutdown()
            with pytest.raises(SupervisorNotRunning):
                await root.start_child(world.spec("after"))

    run(main)


def test_runtime_child_joins_group_restarts() -> None:
    async def main() -> None:
        world = World()
        sup = Supervisor([world.spec("a")], strategy=Strategy.ONE_FOR_ALL)
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await sup.start_child(world.spec("late"))
            mark = len(world.journal)
            await crash(sup, "a")
            await until(lambda: running(sup) == ["a", "late"] and sup.total_restarts == 1)
            assert world.since(mark) == [
                ("crash", "a"),
                ("stop", "a"),
                ("stop", "late"),
                ("start", "a"),
                ("start", "late"),
            ]
            await sup.shutdown()
        assert world.journal[-2:] == [("stop", "late"), ("stop", "a")]

    run(main)


def test_supervisor_runs_only_once() -> None:
    async def main() -> None:
        sup = Supervisor([])
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            with pytest.raises(Exception, match="only run once"):
                await sup.run()
            await sup.shutdown()

    run(main)


# ----------------------------------------------------------------- full matrix

GROUP_RESTART = {
    Strategy.ONE_FOR_ONE: [("start", "b")],
    Strategy.REST_FOR_ONE: [("stop", "c"), ("start", "b"), ("start", "c")],
    Strategy.ONE_FOR_ALL: [("stop", "c"), ("stop", "a"), ("start", "a"), ("start", "b"), ("start", "c")],
}


@pytest.mark.parametrize("strategy", list(Strategy))
@pytest.mark.parametrize("restart", list(Restart))
@pytest.mark.parametrize("how", ["crash", "normal exit"])
def test_every_strategy_restart_type_and_exit_kind(strategy: Strategy, restart: Restart, how: str) -> None:
    """b (of a, b, c) exits; OTP says whether it restarts and who goes with it."""
    restarted = restart is Restart.PERMANENT or (restart is Restart.TRANSIENT and how == "crash")

    async def main() -> None:
        world = World()
        sup = Supervisor([world.spec("a"), world.spec("b", restart), world.spec("c")], strategy=strategy)
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            mark = len(world.journal)
            if how == "crash":
                await crash(sup, "b")
            else:
                await sup.ref("b").call("exit", timeout=1)
            await trio.sleep(1)
            exit_entries = [("crash", "b"), ("stop", "b")] if how == "crash" else [("stop", "b")]
            expected = exit_entries + (GROUP_RESTART[strategy] if restarted else [])
            assert world.since(mark) == expected
            assert sup.total_restarts == (1 if restarted else 0)
            ids = [c.id for c in sup.which_children()]
            assert ids == (["a", "c"] if restart is Restart.TEMPORARY else ["a", "b", "c"])
            assert running(sup) == (["a", "b", "c"] if restarted else ["a", "c"])
            await sup.shutdown()

    run(main)


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        (Strategy.ONE_FOR_ONE, [("start-crash", "b"), ("start", "b")]),
        (
            Strategy.REST_FOR_ONE,
            [("stop", "c"), ("start-crash", "b"), ("start", "b"), ("start", "c")],
        ),
        (
            Strategy.ONE_FOR_ALL,
            [
                ("stop", "c"),
                ("stop", "a"),
                ("start", "a"),
                ("start-crash", "b"),
                ("stop", "a"),
                ("start", "a"),
                ("start", "b"),
                ("start", "c"),
            ],
        ),
    ],
)
def test_restart_that_crashes_at_start_is_retried_per_strategy(
    strategy: Strategy, expected: list[tuple[str, str]]
) -> None:
    async def main() -> None:
        world = World()
        sup = Supervisor([world.spec("a"), world.spec("b"), world.spec("c")], strategy=strategy, intensity=2)
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            world.scripts["b"].start_failures = 1
            mark = len(world.journal)
            await crash(sup, "b")
            await until(lambda: sup.total_restarts == 2 and running(sup) == ["a", "b", "c"])
            assert world.since(mark) == [("crash", "b"), ("stop", "b"), *expected]
            # One more failure at start would be the third restart: over intensity 2.
            world.scripts["b"].start_failures = 1
            await crash(sup, "b")
            await trio.sleep_forever()  # ended by the supervisor's failure

    with pytest.raises(ExceptionGroup) as info:
        run(main)
    assert info.group_contains(RestartIntensityExceeded)
    assert info.group_contains(RestartIntensityExceeded, match="3 restarts within 5.0 s")
