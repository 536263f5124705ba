"""Watches the node's own event loop for lag, so that a starved node blames itself, not its peers.

A task sleeps `interval` and measures how late it wakes. On a machine whose cores are
taken by a game or a build, the process is not scheduled for a while and every timer
in it fires late: acks sit unread, probe deadlines pass, and a plain SWIM node would
suspect healthy peers. Reporting the lag to the membership core (Lifeguard's local
health, `MembershipCore.note_local_lag`) makes it probe more gently and excuse the
probe under way instead.

Cost: one wake-up per `interval` (0.5 s), a few microseconds of CPU each.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import trio


async def watch_loop_lag(
    report: Callable[[float], None],
    counters: Counter[str],
    interval: float = 0.5,
    threshold: float = 0.05,
) -> None:
    """Call `report(lag)` whenever a sleep of `interval` ends more than `threshold` late; runs
    until cancelled. Counts `loop_lag_reports` and the worst lag seen (`loop_lag_worst_ms`)."""
    while True:
        start = trio.current_time()
        await trio.sleep(interval)
        lag = trio.current_time() - start - interval
        if lag > threshold:
            counters["loop_lag_reports"] += 1
            counters["loop_lag_worst_ms"] = max(counters["loop_lag_worst_ms"], round(lag * 1000))
            report(lag)
