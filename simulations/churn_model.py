"""Who comes and goes: Poisson churn, crashes vs graceful leaves, outages, flash crowds, restarts.

Churn is expressed against a small `Population` interface (the simulator implements it),
so the model decides *when* and *whom*, and the simulator alone decides what a crash or
a join does to the protocol cores. The model has its own seeded generator, so changing
the churn rate never shifts the random choices of the cores.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import Protocol

from protocols.common.identity import NodeId
from simulations.scenario import ChurnConfig


class Population(Protocol):
    """What the churn model needs from the simulator."""

    @property
    def now(self) -> float: ...

    def live_nodes(self) -> Sequence[NodeId]:
        """Running nodes, in a deterministic order."""
        ...

    def region_of(self, node: NodeId) -> str: ...

    def schedule(self, at: float, action: Callable[[], None]) -> None: ...

    def crash(self, node: NodeId, restarts: bool = True) -> None:
        """Stop a node abruptly; `restarts=False` says it never comes back (its disk is dropped)."""
        ...

    def leave(self, node: NodeId) -> None: ...

    def spawn(self, region: str | None = None) -> NodeId | None:
        """Start a brand-new node that joins through a live member; None when none is live."""
        ...

    def restart(self, node: NodeId) -> None:
        """Start a crashed node again with its identity and persisted records."""
        ...


class ChurnModel:
    """Drives departures, arrivals and restarts on a `Population`."""

    def __init__(self, population: Population, rng: random.Random) -> None:
        self._population = population
        self._rng = rng
        self.crashes = 0
        self.leaves = 0
        self.joins = 0
        self.restarts = 0
        self.restart_deadline = math.inf
        """No restart is scheduled at or after this time (the mesh is meant to be quiet then)."""

    # ---- continuous Poisson churn ---------------------------------------------------------

    def start(self, config: ChurnConfig, stop_s: float) -> None:
        """Run Poisson departures and arrivals from `config.start_s` until `stop_s`.

        The rate is a fraction of the live population, re-evaluated at every churn event
        (a piecewise-constant intensity: exact while the population is steady, which
        balanced arrivals and departures keep it close to).
        """
        if config.rate_per_s > 0:
            self._next_departure(config, stop_s, config.start_s)
        if config.arrivals_per_s > 0:
            self._next_arrival(config, stop_s, config.start_s)

    def _gap(self, rate_per_node: float) -> float:
        live = len(self._population.live_nodes())
        intensity = rate_per_node * max(live, 1)
        return self._rng.expovariate(intensity)

    def _next_departure(self, config: ChurnConfig, stop_s: float, after: float) -> None:
        at = after + self._gap(config.rate_per_s)
        if at >= stop_s:
            return

        def depart() -> None:
            live = self._population.live_nodes()
            if len(live) > 2:
                node = live[self._rng.randrange(len(live))]
                if self._rng.random() < config.crash_fraction:
                    restart = None
                    if config.restart_after_s is not None and self._rng.random() < config.restart_fraction:
                        restart = (
                            self._rng.expovariate(1.0 / config.restart_after_s)
                            if config.restart_after_s
                            else 0.0
                        )
                    self.crash(node, restart)
                else:
                    self.leave(node)
            self._next_departure(config, stop_s, at)

        self._population.schedule(at, depart)

    def _next_arrival(self, config: ChurnConfig, stop_s: float, after: float) -> None:
        at = after + self._gap(config.arrivals_per_s)
        if at >= stop_s:
            return

        def arrive() -> None:
            self.join()
            self._next_arrival(config, stop_s, at)

        self._population.schedule(at, arrive)

    # ---- single actions and bursts (also used by scenario events) -------------------------

    def crash(self, node: NodeId, restart_after_s: float | None = None) -> None:
        at = None if restart_after_s is None else self._population.now + restart_after_s
        restarts = at is not None and at < self.restart_deadline
        self._population.crash(node, restarts)
        self.crashes += 1
        if at is not None and restarts:
            self._population.schedule(at, lambda: self._restart(node))

    def _restart(self, node: NodeId) -> None:
        self._population.restart(node)
        self.restarts += 1

    def leave(self, node: NodeId) -> None:
        self._population.leave(node)
        self.leaves += 1

    def join(self, region: str | None = None) -> NodeId | None:
        node = self._population.spawn(region)
        if node is not None:
            self.joins += 1
        return node

    def pick(self, *, fraction: float | None, count: int | None, region: str | None) -> list[NodeId]:
        """Choose distinct live nodes (of one region when given): `fraction` of them or `count`."""
        live = [
            n
            for n in self._population.live_nodes()
            if region is None or self._population.region_of(n) == region
        ]
        wanted = count if count is not None else math.floor((fraction or 0.0) * len(live) + 0.5)
        wanted = max(0, min(wanted, len(live)))
        return self._rng.sample(live, wanted)

    def outage(
        self,
        *,
        fraction: float | None = None,
        count: int | None = None,
        region: str | None = None,
        restart_after_s: float | None = None,
    ) -> list[NodeId]:
        """Crash many nodes at the same instant (a correlated outage when `region` is given)."""
        victims = self.pick(fraction=fraction, count=count, region=region)
        for node in victims:
            self.crash(node, restart_after_s)
        return victims

    def mass_leave(
        self, *, fraction: float | None = None, count: int | None = None, region: str | None = None
    ) -> list[NodeId]:
        victims = self.pick(fraction=fraction, count=count, region=region)
        for node in victims:
            self.leave(node)
        return victims

    def flash_crowd(self, count: int, over_s: float, region: str | None = None) -> None:
        """`count` new nodes join at uniformly random instants within the next `over_s` seconds."""
        now = self._population.now
        offsets = sorted(self._rng.uniform(0.0, over_s) if over_s > 0 else 0.0 for _ in range(count))
        for offset in offsets:
            self._population.schedule(now + offset, lambda: self._arrive(region))

    def _arrive(self, region: str | None) -> None:
        self.join(region)
