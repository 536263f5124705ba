"""Analytic yardsticks the measured dissemination and convergence times are compared with.

Push gossip (Demers et al. 1987; Pittel 1987; Karp et al. 2000): every informed node
pushes to `f` uniformly random peers once per round of length `T`. In the mean-field
limit the informed fraction follows

    x[r+1] = x[r] + (1 - x[r]) * (1 - exp(-f * x[r])),   x[0] = 1/n

which needs about log_{1+f}(n) + ln(n)/f rounds to reach everyone (f = 1 gives Pittel's
log2 n + ln n). The bound used here is the number of rounds until x >= 0.99, times T,
plus one network latency for the last hop.

The dissemination core does better than round-based push: a node forwards a record the
moment it first accepts it (infect-and-forward-once), so the push phase costs one
network latency per hop, not one interval per round. Forwarding once to `f` peers
reaches the fraction `s` solving `1 - s = exp(-f s)` (0.94 for f = 3) in about
`log_f(s n)` hops; anti-entropy then finds the rest: an uninformed node meets an
informed partner about `2 s` times per interval (its own round plus being chosen), so
the uninformed fraction decays as `exp(-2 s t / T)`, from `1 - s` to 1 % in
`T / (2 s) * ln((1 - s) / 0.01)`. That estimate (`eager_push_t99_s`) is what the
measured time is expected to track; the round-based bound is the yardstick the issue
asks for, and a correct implementation must stay below it.
"""

from __future__ import annotations

import math

from protocols.dissemination.config import DisseminationConfig
from simulations.scenario import Scenario

MAX_ROUNDS = 10_000


def push_gossip_rounds(nodes: int, fanout: int, target: float = 0.99) -> int:
    """Rounds of push gossip (fanout `fanout`) until the mean-field informed fraction >= target."""
    if nodes <= 1:
        return 0
    informed = 1.0 / nodes
    rounds = 0
    while informed < target and rounds < MAX_ROUNDS:
        informed += (1.0 - informed) * (1.0 - math.exp(-fanout * informed))
        rounds += 1
    return rounds


def push_gossip_closed_form_rounds(nodes: int, fanout: int) -> float:
    """The textbook approximation log_{1+f}(n) + ln(n)/f (rounds to reach all n)."""
    return math.log(nodes, 1 + fanout) + math.log(nodes) / fanout


def eager_push_coverage(fanout: int) -> float:
    """Fraction reached by forward-once push with fanout f: the root of 1 - s = exp(-f s)."""
    if fanout <= 1:
        return 0.0
    reached = 1.0
    for _ in range(200):
        reached = 1.0 - math.exp(-fanout * reached)
    return reached


def eager_push_t99_s(nodes: int, config: DisseminationConfig, scenario: Scenario) -> float:
    """Estimated time to 99 % for forward-once eager push plus push-pull anti-entropy."""
    network = scenario.network
    hop = network.latency_median_s * math.exp(network.latency_sigma**2 / 2) + max(
        [network.inter_region_default_s, *network.inter_region_s.values()]
    )
    reached = eager_push_coverage(config.fanout)
    if reached <= 0.0:
        return push_gossip_bound_s(nodes, config, scenario)
    hops = math.log(max(2.0, reached * nodes)) / math.log(config.fanout)
    if reached >= 0.99:
        return hops * hop
    fill = config.interval_for(nodes) / (2 * reached) * math.log((1 - reached) / 0.01)
    return hops * hop + fill


def push_gossip_bound_s(nodes: int, config: DisseminationConfig, scenario: Scenario) -> float:
    """Time for push gossip with this fanout and interval to reach 99 % of `nodes`.

    The interval is the one the dissemination core uses in a mesh of `nodes` (the
    anti-entropy interval, stretched above `scale_from` members).
    """
    rounds = push_gossip_rounds(nodes, config.fanout)
    latency = scenario.network.latency_median_s + max(
        [scenario.network.inter_region_default_s, *scenario.network.inter_region_s.values()]
    )
    return rounds * config.interval_for(nodes) + latency
