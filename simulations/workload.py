"""What the simulated users do to the records: publish new ones, and inject forgeries.

Publishing is a Poisson process over random live authors; forgeries alternate between
records with a corrupted signature (claiming a real member as author) and correctly
signed records from a key that was never admitted, so both halves of the acceptance
rule are exercised on every run.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Protocol

from protocols.common.identity import NodeIdentity
from protocols.records.record import Record, sign_record

SIM_KIND = "sim"
SIM_KEYS = 32
"""Records go to a small key space, so later records supersede earlier ones (LWW is exercised)."""


class Publisher(Protocol):
    """What the workload needs from the world."""

    @property
    def now(self) -> float: ...

    @property
    def mesh_id(self) -> bytes: ...

    def schedule(self, at: float, action: Callable[[], None]) -> None: ...

    def publish_random(self, kind: str, key: str, body: bytes) -> None: ...

    def inject_forged(self, record: Record) -> None: ...

    def forge_identity(self) -> NodeIdentity: ...

    def random_member_identity_id(self) -> bytes | None: ...


class Workload:
    """Poisson publishing and forging until the mesh is meant to go quiet."""

    def __init__(self, world: Publisher, rng: random.Random) -> None:
        self._world = world
        self._rng = rng
        self.published = 0
        self.forged = 0
        self._forger: NodeIdentity | None = None

    def start(self, publish_rate: float, forge_rate: float, stop_s: float) -> None:
        if publish_rate > 0:
            self._next(publish_rate, stop_s, self._world.now, forged=False)
        if forge_rate > 0:
            self._next(forge_rate, stop_s, self._world.now, forged=True)

    def _next(self, rate: float, stop_s: float, after: float, *, forged: bool) -> None:
        at = after + self._rng.expovariate(rate)
        if at >= stop_s:
            return

        def fire() -> None:
            self.one(forged=forged)
            self._next(rate, stop_s, at, forged=forged)

        self._world.schedule(at, fire)

    def burst(self, count: int, over_s: float, *, forged: bool) -> None:
        now = self._world.now
        for _ in range(count):
            offset = self._rng.uniform(0.0, over_s) if over_s > 0 else 0.0
            self._world.schedule(now + offset, lambda: self.one(forged=forged))

    def one(self, *, forged: bool) -> None:
        body = self._rng.randbytes(48)
        key = f"k{self._rng.randrange(SIM_KEYS)}"
        if not forged:
            self.published += 1
            self._world.publish_random(SIM_KIND, key, body)
            return
        self.forged += 1
        record: Record | None
        if self.forged % 2:
            record = self._unadmitted(key, body)
        else:
            record = self._bad_signature(key, body)
            if record is None:
                return
        self._world.inject_forged(record)

    def _unadmitted(self, key: str, body: bytes) -> Record:
        if self._forger is None:
            self._forger = self._world.forge_identity()
        return sign_record(self._forger, self._world.mesh_id, SIM_KIND, key, self.forged, body)

    def _bad_signature(self, key: str, body: bytes) -> Record | None:
        author = self._world.random_member_identity_id()
        if author is None:
            return None
        signature = self._rng.randbytes(64)
        # a high seq so that, were it accepted, it would win its slot and stay visible
        return Record(self._world.mesh_id, author, SIM_KIND, key, 2**40 + self.forged, body, signature)
