"""Fixtures that more than one test module uses (helpers that are not fixtures live in tests/support)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real 4 MiB filesystem (tmpfs) a test may fill up; skipped where none can be mounted."""
    mountpoint = tmp_path / "small-fs"
    mountpoint.mkdir()
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs Linux and root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Undo what the test does to logging: the handlers, level, propagation and `disabled` of the
    root logger and of every named logger; loggers first made during the test are reset to defaults."""
    manager = logging.Logger.manager
    root = logging.getLogger()
    saved_root = (root.handlers[:], root.level)
    saved = {
        name: (logger.handlers[:], logger.level, logger.propagate, logger.disabled)
        for name, logger in manager.loggerDict.items()
        if isinstance(logger, logging.Logger)
    }
    try:
        yield
    finally:
        root.handlers[:] = saved_root[0]
        root.setLevel(saved_root[1])
        for name, logger in list(manager.loggerDict.items()):
            if isinstance(logger, logging.Logger):
                handlers, level, propagate, disabled = saved.get(name, ([], logging.NOTSET, True, False))
                logger.handlers[:] = handlers
                logger.setLevel(level)
                logger.propagate = propagate
                logger.disabled = disabled
