"""When (and whether) a simulated message arrives: latency, regions, loss, bandwidth, partitions.

The model is the only place the simulator decides about the network, so every scenario
knob (lossy links, slow uplinks, split regions) changes exactly one function's answer.
It draws from its own seeded `random.Random`, never the protocol cores' generators, so
adding loss to a scenario does not shift the cores' random choices.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from protocols.common.identity import NodeId


@dataclass(frozen=True)
class Region:
    """A group of nodes that share a location; `weight` is its share of new nodes."""

    name: str
    weight: float = 1.0


@dataclass(frozen=True)
class NetworkConfig:
    """Link behaviour; latencies in seconds, bandwidth in bytes per second per node.

    One-way latency of a link is lognormal with the given median and log-space sigma
    (heavy right tail, as measured Internet RTTs are), plus the inter-region extra when
    the two ends sit in different regions. Bandwidth limits each node's egress: a message
    waits behind the node's earlier messages for its serialization time.
    """

    latency_median_s: float = 0.03
    latency_sigma: float = 0.4
    loss: float = 0.0
    bandwidth_bytes_per_s: float | None = None
    regions: tuple[Region, ...] = (Region("default"),)
    inter_region_s: dict[tuple[str, str], float] = field(default_factory=dict)
    inter_region_default_s: float = 0.0

    def __post_init__(self) -> None:
        if self.latency_median_s <= 0:
            raise ValueError("latency median must be positive")
        if self.latency_sigma < 0:
            raise ValueError("latency sigma must not be negative")
        if not 0.0 <= self.loss < 1.0:
            raise ValueError("loss must be in [0, 1)")
        if self.bandwidth_bytes_per_s is not None and self.bandwidth_bytes_per_s <= 0:
            raise ValueError("bandwidth must be positive")
        if not self.regions or any(r.weight <= 0 for r in self.regions):
            raise ValueError("need at least one region, each with a positive weight")
        names = [r.name for r in self.regions]
        if len(set(names)) != len(names):
            raise ValueError("region names must be unique")
        for a, b in self.inter_region_s:
            if a not in names or b not in names:
                raise ValueError(f"inter-region latency names an unknown region: {a}-{b}")


@dataclass
class Partition:
    """Nodes in different groups cannot reach each other between `start` and `end`.

    Nodes in no group (e.g. joined after the split) stay reachable from every side,
    which is the conservative choice: it can only make convergence easier to reach
    through them, never make a violation appear that the protocol did not cause.
    """

    groups: list[frozenset[NodeId]]
    start: float
    end: float = math.inf
    _group_of: dict[NodeId, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for index, group in enumerate(self.groups):
            for node in group:
                self._group_of[node] = index

    def blocks(self, now: float, src: NodeId, dst: NodeId) -> bool:
        if not self.start <= now < self.end:
            return False
        a = self._group_of.get(src)
        b = self._group_of.get(dst)
        return a is not None and b is not None and a != b


class NetworkModel:
    """Decides each message's arrival time, or that it is lost."""

    def __init__(self, config: NetworkConfig, rng: random.Random) -> None:
        self.config = config
        self._rng = rng
        self._mu = math.log(config.latency_median_s)
        self._region_of: dict[NodeId, str] = {}
        self._egress_free_at: dict[NodeId, float] = {}
        self._extra: dict[tuple[str, str], float] = {}
        for (a, b), extra in config.inter_region_s.items():
            self._extra[(a, b)] = extra
            self._extra[(b, a)] = extra
        self._region_names = [r.name for r in config.regions]
        self._region_weights = [r.weight for r in config.regions]
        self.partitions: list[Partition] = []
        self.dropped_loss = 0
        self.dropped_partition = 0

    def place(self, node: NodeId, region: str | None = None) -> str:
        """Put a node in a region (drawn by weight unless given) and return its name."""
        if region is None:
            if len(self._region_names) == 1:
                region = self._region_names[0]
            else:
                region = self._rng.choices(self._region_names, self._region_weights)[0]
        elif region not in self._region_names:
            raise ValueError(f"unknown region {region!r}")
        self._region_of[node] = region
        return region

    def region_of(self, node: NodeId) -> str:
        return self._region_of.get(node, self._region_names[0])

    def forget(self, node: NodeId) -> None:
        """Drop per-node queue state of a node that is gone (its region is kept for restarts)."""
        self._egress_free_at.pop(node, None)

    def partition(self, groups: list[frozenset[NodeId]], start: float, end: float = math.inf) -> Partition:
        split = Partition(groups, start, end)
        self.partitions.append(split)
        return split

    def heal(self, now: float) -> int:
        """End every partition still in force at `now`; returns how many were ended."""
        ended = 0
        for split in self.partitions:
            if split.start <= now < split.end:
                split.end = now
                ended += 1
        self.partitions = [p for p in self.partitions if p.end > now]
        return ended

    def partitioned(self, now: float) -> bool:
        return any(p.start <= now < p.end for p in self.partitions)

    def arrival(self, now: float, src: NodeId, dst: NodeId, size: int) -> float | None:
        """Arrival time of a `size`-byte message sent at `now`, or None when it is lost."""
        config = self.config
        for split in self.partitions:
            if split.blocks(now, src, dst):
                self.dropped_partition += 1
                return None
        rng = self._rng
        if config.loss and rng.random() < config.loss:
            self.dropped_loss += 1
            return None
        departure = now
        bandwidth = config.bandwidth_bytes_per_s
        if bandwidth is not None:
            free_at = self._egress_free_at.get(src, now)
            departure = (free_at if free_at > now else now) + size / bandwidth
            self._egress_free_at[src] = departure
        latency = (
            math.exp(self._mu + config.latency_sigma * rng.gauss())
            if config.latency_sigma
            else config.latency_median_s
        )
        if self._extra or config.inter_region_default_s:
            a = self._region_of.get(src)
            b = self._region_of.get(dst)
            if a != b and a is not None and b is not None:
                latency += self._extra.get((a, b), config.inter_region_default_s)
        return departure + latency
