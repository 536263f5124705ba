"""How a command asks the running node something, and how it fails: one `error:` line, exit status 1.

Every command that talks to a node through its control socket (`status`, `invite`,
`volunteer`, `put`, ...) goes through `ask`, so a node that is not running, a reply lost
when the node stopped, and a refusal all read the same way to the user.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NoReturn

import typer

from bootstrap.control_client import ControlClientError, control_request


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def ask(data_dir: Path, request: dict[str, Any], timeout: float = 15.0) -> dict[str, Any]:
    """The node's reply to `request`; fails (one line) when it cannot be had or is a refusal."""
    try:
        reply = control_request(data_dir, request, timeout=timeout)
    except ControlClientError as exc:
        fail(str(exc))
    if not reply.get("ok"):
        fail(str(reply.get("error", "the node refused")))
    return reply
