"""`ileices demo` shows the user its own story only: nothing from the networking libraries.

Regression test: when a demo node left, py-libp2p's multi-line stream errors
("Failed to open stream ... Registry Stats: None", "MultiselectClient handshake: read
failed") were printed on the terminal through logging's last resort.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEMO = [sys.executable, "-m", "bootstrap.cli", "demo"]
LIBRARY_NOISE = ("Registry Stats", "Multiselect", "Failed to open stream", "Traceback", "libp2p")


def run_demo(data_dir: Path, duration: str) -> tuple[int, str]:
    """`ileices demo` with a small simulation; its exit status and everything it printed."""
    result = subprocess.run(
        [*DEMO, "--data-dir", str(data_dir), "--nodes", "20", "--duration", duration],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"},
    )
    return result.returncode, result.stdout + result.stderr


def test_the_demo_prints_nothing_from_libraries(tmp_path: Path) -> None:
    code, output = run_demo(tmp_path / "demo", "60s")
    assert code == 0, output[-3000:]
    assert "a holder left" in output, output[-3000:]
    # The storage scene: the file came back identical and the mesh repaired itself.
    assert "identical" in output and "repaired without a command" in output, output[-3000:]
    for noise in LIBRARY_NOISE:
        assert noise not in output, f"{noise!r} reached the terminal:\n{output[-3000:]}"
    # ...and the lines went to the demo's log file instead.
    assert (tmp_path / "demo" / "logs" / "demo.log").is_file()


def test_a_demo_too_short_to_check_convergence_says_so_in_one_line(tmp_path: Path) -> None:
    code, output = run_demo(tmp_path / "demo", "10s")
    assert code == 2, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert "make the duration longer" in output, output[-3000:]
