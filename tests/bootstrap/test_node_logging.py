"""What reaches node.log and the terminal from a running node's logging setup."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bootstrap.node_commands import _setup_logging
from mesh.data_dir import DataDir


def test_library_info_lines_stay_out_of_node_log_even_from_child_loggers(
    tmp_path: Path, restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    _setup_logging(tmp_path, "info")
    # libp2p sets levels on its own child loggers; a child at INFO used to reach node.log.
    child = logging.getLogger("libp2p.transport.quic.test_child")
    child.setLevel(logging.INFO)
    child.info("library chatter that belongs nowhere")
    child.warning("library trouble worth keeping")
    logging.getLogger("mesh.node").info("the node's own line")
    for handler in logging.getLogger().handlers + logging.getLogger("libp2p").handlers:
        handler.flush()
    text = (DataDir(tmp_path).log_dir / "node.log").read_text()
    assert "library chatter" not in text
    assert "library trouble worth keeping" in text
    assert "the node's own line" in text
    # Library lines never reach the terminal, even warnings.
    assert "library trouble" not in capsys.readouterr().err
