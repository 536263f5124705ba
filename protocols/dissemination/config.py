"""Knobs of dissemination (push fan-out, anti-entropy interval, delta size), with their reasons."""

from __future__ import annotations

from dataclasses import dataclass

from protocols.common.timing import stretch


@dataclass(frozen=True)
class DisseminationConfig:
    """Knobs of dissemination; the defaults suit a LAN mesh of tens to thousands of nodes."""

    fanout: int = 3
    """Peers each node forwards a newly accepted record to (push)."""
    anti_entropy_interval: float = 1.0
    """Seconds between anti-entropy rounds with one random peer (jittered by ±10 %)."""
    scale_from: int | None = 32
    """Live members above which the anti-entropy interval stretches by log2(n) / log2(scale_from)
    (x1.99 at 1000), as membership's timings do: eager push delivers almost everything,
    anti-entropy only repairs, and its steady cost is one message per node per interval."""
    max_delta_records: int = 2048
    """Cap on records in one delta; the rest follows in later rounds."""
    direct_push_below: int = 0
    """With fewer live peers than this, an author pushes a new record to every live peer,
    and a record that came straight from its author is not forwarded again.

    One hop instead of about log(n), and no node left for anti-entropy to repair: with
    fanout 3, forward-once push leaves 13 % of records short of at least one node of a
    10-node mesh (each such node then waits up to `anti_entropy_interval`), and costs
    about fanout x n messages per record; this costs n - 1. 0 turns it off."""

    def interval_for(self, live_count: int) -> float:
        """The anti-entropy interval in a mesh of `live_count` members."""
        return self.anti_entropy_interval * stretch(self.scale_from, live_count)
