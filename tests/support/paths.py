"""Where things are, for tests that run scripts or tools by path (wherever the test file sits)."""

from __future__ import annotations

from pathlib import Path

SUPPORT_DIR = Path(__file__).resolve().parent
"""tests/support: helper modules, and the scripts tests start as subprocesses."""
REPO_ROOT = SUPPORT_DIR.parents[1]
"""The repository root (the directory holding pyproject.toml)."""
