"""A lone founder stopped and started again, three times: each `up` comes back and answers.

Regression test: the founder of a one-node mesh is the hub, and its election actor
announced `became_hub` while the node's supervisor was still starting its children; the
node then asked that supervisor (holding its lock) to start the hub role, and waited for
the lock forever. `up` printed nothing and never opened its control socket.

It also checks that "hub of term N is ..." is logged once per start, not once per
election event about the same hub.
"""

from __future__ import annotations

import signal
from pathlib import Path

from tests.support.mesh_processes import ProcessMesh, wait_until


def test_a_lone_founder_restarts_three_times(tmp_path: Path) -> None:
    procs = ProcessMesh(tmp_path)
    founder = procs.node("founder")
    try:
        procs.init(founder)
        runs: list[str] = []
        for attempt in range(4):  # the first start, then three restarts
            before = len(founder.output())
            procs.up(founder)
            procs.wait_running([founder], timeout=30)
            # It is the hub again (the role that deadlocked the start), acting in its own term.
            wait_until(
                lambda: (procs.status(founder).get("hub") or {}).get("acting_here") is True,
                20,
                f"the founder to act as hub after start {attempt + 1}",
            )
            procs.kill(founder, signal.SIGTERM)
            assert founder.process is not None
            assert founder.process.wait(timeout=20) == 0, founder.output()[-3000:]
            runs.append(founder.output()[before:])
        assert "Traceback" not in founder.output(), founder.output()[-3000:]
        # One line per hub the operator learns of, not one per election event about it.
        for run in runs:
            hub_lines = [line.split(": ", 1)[1] for line in run.splitlines() if ": hub of term " in line]
            assert hub_lines, run[-3000:]
            assert len(hub_lines) == len(set(hub_lines)), hub_lines
    finally:
        procs.close()
