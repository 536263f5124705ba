"""Command-line options every `ileices` command shares, defined once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

HOME_ENV = "ILEICES_HOME"


def default_data_dir() -> Path:
    """`~/.ileices`, used when neither `--data-dir` nor `$ILEICES_HOME` names a directory."""
    return Path.home() / ".ileices"


DataDirOption = Annotated[
    Path,
    typer.Option(
        "--data-dir",
        envvar=HOME_ENV,
        default_factory=default_data_dir,
        show_default=f"${HOME_ENV}, else ~/.ileices",
        help="The node's directory: key, database and logs live here.",
    ),
]
