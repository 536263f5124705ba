"""The `ileices` command line as tests run it, and one node kept running with `up` for a while."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from bootstrap.control_client import NodeNotRunning, control_request

CLI = [sys.executable, "-m", "bootstrap.cli"]


@contextlib.contextmanager
def node_running(
    data_dir: Path, *, timeout: float = 45.0, cwd: Path | None = None, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """`ileices up` on `data_dir`, in a session of its own, once its control socket answers
    `status`; SIGTERM to the whole session afterwards (SIGKILL if it is not gone in 10 s)."""
    process = subprocess.Popen(
        [*CLI, "up", "--data-dir", str(data_dir), "--log-level", "warning"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        cwd=cwd,
        env=env,
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if control_request(data_dir, {"op": "status"}).get("ok"):
                    break
            except (NodeNotRunning, OSError):
                pass
            assert process.poll() is None, "node exited"
            assert time.monotonic() < deadline, "node did not come up"
            time.sleep(0.2)
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
