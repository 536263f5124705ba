"""Where log lines go: the node's own to `DATA_DIR/logs/node.log` (and the terminal), networking
libraries' only to the file, at WARNING and above.

py-libp2p configures its loggers when imported (no handlers, no propagation), so its
multi-line stream errors ("Failed to open stream ... Registry Stats") reached the
terminal raw through logging's last resort whenever a peer left. They are expected
events in a mesh; a user's terminal shows only what this node itself has to say.
"""

from __future__ import annotations

import logging
import sys
from logging.handlers import RotatingFileHandler
from pathlib import Path

LIBRARY_LOGGERS = ("libp2p", "aioquic", "quic", "multiaddr", "async_service")
"""Networking libraries whose logs go to the log file at WARNING and above, never the terminal."""
LOG_FILE_BYTES = 10 * 1024 * 1024
LOG_FILE_BACKUPS = 3
_FORMAT = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")


def parse_log_level(name: str) -> int | None:
    """The numeric level for `debug`, `info`, `warning` or `error`; None for anything else."""
    level = logging.getLevelName(name.upper())
    return level if isinstance(level, int) else None


def _file_handler(path: Path, level: int = logging.NOTSET) -> logging.Handler:
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = RotatingFileHandler(path, maxBytes=LOG_FILE_BYTES, backupCount=LOG_FILE_BACKUPS)
    handler.setFormatter(_FORMAT)
    handler.setLevel(level)
    return handler


def setup_node_logging(log_file: Path, level: int, *, terminal: bool = True) -> None:
    """The node's lines to `log_file` (rotated) and, with `terminal`, to stderr; libraries to the file."""
    root = logging.getLogger()
    handlers = [_file_handler(log_file)]
    if terminal:
        stderr_handler = logging.StreamHandler(sys.stderr)
        stderr_handler.setFormatter(_FORMAT)
        handlers.append(stderr_handler)
    root.handlers[:] = handlers
    root.setLevel(level)
    quiet_libraries(log_file, level)


def quiet_libraries(log_file: Path, level: int = logging.INFO) -> None:
    """Send the networking libraries' logs to `log_file` only, at WARNING or `level` if higher.

    The level goes on the handler as well as on the loggers: libp2p sets levels on its own
    child loggers (`libp2p.transport.quic...`), and a child's INFO record propagates to the
    parent's handlers whatever the parent's level, which put INFO lines in node.log.
    """
    import libp2p  # noqa: F401  (it configures its loggers on import: override after)

    library_level = max(level, logging.WARNING)
    handler = _file_handler(log_file, library_level)
    for name in LIBRARY_LOGGERS:
        library = logging.getLogger(name)
        library.handlers[:] = [handler]
        library.propagate = False
        library.setLevel(library_level)
