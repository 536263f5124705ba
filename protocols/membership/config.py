"""The membership protocol's timing knobs, their defaults, and the formulas they enter.

Defaults target a LAN mesh of a few to a few dozen nodes: a killed node is marked dead
by every member in about 3 s (p95 about 4 s, measured in the in-test router of
tests/protocols/membership/test_membership.py at 5 and 10 nodes), under the 5 s goal, while 10 % message loss
gives no false deaths over long runs. Formulas, with `n` the live member count (self
included) and `p` the protocol period:

- Suspicion timeout (Lifeguard, as HashiCorp memberlist computes it):
  `min = suspicion_mult * max(1, log10(n)) * p`, `max = suspicion_max_mult * min`,
  `K = suspicion_mult - 2` expected confirmations (0, i.e. `min` at once, when
  `n - 2 < K`); after `C` independent confirmations the timeout, counted from the
  suspicion's start, is `max(min, max - (max - min) * log(C + 1) / log(K + 1))`.
  Defaults: n <= 10: min 2 s, max 12 s; n = 1000: min 12 s, max 72 s (6 s and 36 s
  before the stretch below).
- Retransmissions of one update by one node: `retransmit_mult * ceil(log10(n + 1))`
  (SWIM's lambda log n): 8 at n = 10, 16 at n = 1000.
- Full-state push-pull every `push_pull_interval * (ceil(log2(n) - 5) + 1)` for n > 32
  (memberlist's scaling), so its O(n) messages stay rare in big meshes: 180 s at 1000.
- Probe period and probe timeout are both multiplied by Lifeguard's local health
  multiplier + 1 (0..`max_health`), so an overloaded node slows down instead of
  accusing healthy peers. A timer that fires more than `late_timer_slack * (LHM + 1)`
  late, or event-loop lag the driver reports, raises the multiplier too.
- Above `scale_from` live members, every timing above (probe period, probe timeout,
  suspicion timeouts) is stretched by `log2(n) / log2(scale_from)`: x1.99 at 1000
  members (memberlist's LAN figures, 1 s probes and 0.4 s timeouts), x2.46 at 5000.
  SWIM's probe load per node is constant, but the piggybacked news each node must
  absorb grows with the mesh (mesh-wide churn x retransmissions per update), and a
  probe every 0.5 s buys little in a mesh whose suspicion timeout is already 6 s or
  more: small meshes keep fast detection, big ones halve their background traffic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from protocols.common.timing import stretch


@dataclass(frozen=True, slots=True)
class MembershipConfig:
    """Knobs of one membership core; `None` turns a background activity off.

    A simulator may switch off `push_pull_interval` and `reconnect_interval` to save
    work; a real node should not: they heal missed gossip and partitions.
    """

    protocol_period: float = 0.5
    """Seconds between probes (SWIM's T')."""
    probe_timeout: float = 0.2
    """Wait for a direct ack before asking others; the rest of the period is for them."""
    indirect_checks: int = 3
    """Members asked to probe an unresponsive target for us (SWIM's k)."""
    suspicion_mult: float = 4.0
    suspicion_max_mult: float = 6.0
    retransmit_mult: int = 4
    max_piggyback: int = 32
    """Updates piggybacked per message (38 bytes each, 71 for a suspicion): at most ~1.2 KB
    in the common case. Bigger batches cost nothing extra in total (sends per update are
    capped by the retransmit limit) and drain a backlog (a flash crowd of joins) faster:
    300 nodes joining within 5 s are all known to all in 30 s with 32, 50 s with 16."""
    max_health: int = 8
    late_timer_slack: float = 0.1
    """Seconds a timer may fire late (or the driver's event loop lag) before this node counts
    itself starved: Lifeguard's local health rises and the probe under way is excused
    rather than turned into a suspicion. Scaled by the health multiplier + 1, like the
    timeouts it protects."""
    reclaim_time: float = 60.0
    """Seconds a dead or left member is remembered (and its news kept) before it is forgotten."""
    reconnect_interval: float | None = 10.0
    """Seconds between pings to one random dead member, which heal partitions."""
    push_pull_interval: float | None = 30.0
    join_retry_interval: float = 2.0
    leave_fanout: int = 4
    """Peers a leaving node tells directly, since it will not be around to gossip."""
    suspect_reprobe_fanout: int = 3
    """Expected number of members that re-probe a member they hear is suspected.

    Each member that hears of a new suspicion probes the suspect next with probability
    `fanout / live peers` (the suspecter itself always does): an O(1) extra load on
    the suspect whatever the mesh size, which brings Lifeguard's confirmations within
    a period or two for a dead node and the buddy-system notice for a live one.
    """

    scale_from: int | None = 32
    """Live members above which timings stretch by log2(n) / log2(scale_from); None: never."""

    def __post_init__(self) -> None:
        if self.scale_from is not None and self.scale_from < 2:
            raise ValueError("scale_from must be at least 2, or None")
        if not 0 < self.probe_timeout < self.protocol_period:
            raise ValueError("probe_timeout must be positive and shorter than protocol_period")
        if min(self.indirect_checks, self.leave_fanout, self.suspect_reprobe_fanout) < 0:
            raise ValueError(
                "indirect_checks, leave_fanout and suspect_reprobe_fanout must not be negative"
            )
        if self.suspicion_mult < 1 or self.suspicion_max_mult < 1:
            raise ValueError("suspicion_mult and suspicion_max_mult must be at least 1")
        if self.retransmit_mult < 1 or not 1 <= self.max_piggyback <= 256:
            raise ValueError("retransmit_mult must be >= 1 and max_piggyback within 1..256")
        if self.max_health < 0:
            raise ValueError("max_health must not be negative")
        if self.late_timer_slack <= 0:
            raise ValueError("late_timer_slack must be positive")
        if self.reclaim_time <= 0 or self.join_retry_interval <= 0:
            raise ValueError("reclaim_time and join_retry_interval must be positive")
        for name in ("reconnect_interval", "push_pull_interval"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive or None")

    def time_scale(self, live_count: int) -> float:
        """The factor timings are stretched by in a mesh of `live_count` members (1 up to `scale_from`)."""
        return stretch(self.scale_from, live_count)

    def suspicion_bounds(self, live_count: int) -> tuple[float, float, int]:
        """(min timeout, max timeout, expected confirmations K) for `live_count` members."""
        period = self.protocol_period * self.time_scale(live_count)
        low = self.suspicion_mult * max(1.0, math.log10(max(1, live_count))) * period
        high = self.suspicion_max_mult * low
        expected = max(0, int(self.suspicion_mult) - 2)
        if live_count - 2 < expected:
            expected = 0
        return low, high, expected

    def retransmit_limit(self, live_count: int) -> int:
        """How many times one node piggybacks one update (lambda * log n)."""
        return self.retransmit_mult * max(1, math.ceil(math.log10(live_count + 1)))

    def push_pull_period(self, live_count: int) -> float | None:
        """Full-state sync interval, stretched for big meshes as memberlist does."""
        if self.push_pull_interval is None:
            return None
        if live_count <= 32:
            return self.push_pull_interval
        return self.push_pull_interval * (math.ceil(math.log2(live_count) - 5.0) + 1)
