"""Expected failures reach the terminal as one `error:` line and a non-zero exit, never a traceback.

Each case here used to print a Python traceback (or, for `invite` and `up`, to succeed
silently at something useless): a data directory that cannot be created, a node that
stops while answering, a busy or malformed `--listen`, a control socket path that is too
long, invite terms no token can carry, and `up` on a directory whose key is not a
member of the mesh its records describe. Bugs, on the other hand, keep their traceback.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bootstrap import cli
from bootstrap.control_client import NodeNotRunning, control_request
from mesh.data_dir import DataDir, DataDirError, found_mesh, prepare_joiner
from mesh.keyfile import create_key_file, load_key_file
from protocols.common.identity import NodeIdentity
from protocols.join.invite import create_invite, decode_token, encode_token
from protocols.records.admission_records import make_admission, make_revocation
from tests.support.cli import CLI, node_running
from tests.support.paths import REPO_ROOT

ROOT = REPO_ROOT
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
MAX_USES = 1_000_000
"""The wire schema's bound on a token's uses (`protocols.join.invite.MAX_USES`)."""


def ileices(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=ENV)


def assert_one_error_line(done: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """Exit status 1, stderr exactly one `error:` line containing every fragment; returns it."""
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 1, f"exit {done.returncode}\n{done.stderr}"
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


def a_token(expires_in: float = 3600.0) -> str:
    """A well-formed, signed token for some mesh (nobody listens at its address)."""
    inviter = NodeIdentity.generate()
    invite = create_invite(
        inviter, b"\x07" * 32, os.urandom(16), time.time() + expires_in, 1, ["/ip4/127.0.0.1/udp/9/quic-v1"]
    )
    return encode_token(invite)


def run_main(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    """`ileices ARGS` in this process through `cli.main`; returns the exit status."""
    monkeypatch.setattr(sys, "argv", ["ileices", *args])
    with pytest.raises(SystemExit) as info:
        cli.main()
    code = info.value.code
    return code if isinstance(code, int) else 1


# ---- files the user cannot write -----------------------------------------------------


def test_join_into_a_path_under_a_file_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    done = ileices("join", a_token(), "--data-dir", str(blocker / "sub"))
    assert_one_error_line(done, str(blocker / "sub"), "Not a directory", "choose another path")


def test_join_into_an_unwritable_directory_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Tests run as root, which chmod cannot stop: the PermissionError is simulated.
    target = tmp_path / "theirs" / "node"

    def refuse(path: Path, mesh_id: bytes) -> NodeIdentity:
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr("bootstrap.node_commands.prepare_joiner", refuse)
    assert run_main(monkeypatch, "join", a_token(), "--data-dir", str(target)) == 1
    err = capsys.readouterr().err
    assert err == f"error: {target}: Permission denied (use a directory you own, or fix its permissions)\n"


def test_a_bug_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def broken(path: Path, mesh_id: bytes) -> NodeIdentity:
        raise RuntimeError("a programming error")

    monkeypatch.setattr("bootstrap.node_commands.prepare_joiner", broken)
    monkeypatch.setattr(sys, "argv", ["ileices", "join", a_token(), "--data-dir", str(tmp_path / "n")])
    with pytest.raises(RuntimeError, match="a programming error"):
        cli.main()


def test_expected_errors_and_groups_of_them_are_one_line_but_bugs_are_not() -> None:
    disk_full = OSError(errno.ENOSPC, "No space left on device", "/data/records.sqlite3")
    group = ExceptionGroup("nursery", [disk_full, ExceptionGroup("inner", [DataDirError("no mesh")])])
    assert cli.expected_error_message(group) == (
        "/data/records.sqlite3: No space left on device (the disk is full: free some space); no mesh"
    )
    assert cli.expected_error_message(ExceptionGroup("nursery", [disk_full, KeyError("x")])) is None
    assert cli.expected_error_message(KeyError("x")) is None

    class WrapperError(Exception):  # what libp2p does with a busy port
        pass

    try:
        try:
            raise OSError(errno.EADDRINUSE, "Address already in use")
        except OSError as exc:
            raise WrapperError("failed to listen") from exc
    except WrapperError as wrapped:
        assert cli.expected_error_message(wrapped) == (
            "failed to listen (another program listens there: choose another --listen port)"
        )


# ---- a node that stops while answering -----------------------------------------------


class FakeNode:
    """A control socket that reads one request, sends `reply` (maybe partial) and hangs up."""

    def __init__(self, data_dir: Path, reply: bytes | None) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(data_dir / "control.sock"))
        self.listener.listen(1)
        self.reply = reply
        self.requests: list[dict[str, object]] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        connection, _ = self.listener.accept()
        with connection:
            data = b""
            while not data.endswith(b"\n"):
                chunk = connection.recv(4096)
                if not chunk:
                    break
                data += chunk
            self.requests.append(json.loads(data))
            if self.reply is None:  # hang: never answer
                time.sleep(5)
                return
            connection.sendall(self.reply)

    def close(self) -> None:
        self.thread.join(timeout=10)
        self.listener.close()


@pytest.mark.parametrize(
    ("sent", "expected"),
    [(b'{"ok": true, "se', "stopped while answering"), (b"", "stopped before answering")],
)
def test_note_when_the_node_stops_mid_request_is_one_line(tmp_path: Path, sent: bytes, expected: str) -> None:
    data_dir = tmp_path / "n"
    fake = FakeNode(data_dir, sent)
    try:
        done = ileices("note", "motd", "hello", "--data-dir", str(data_dir))
    finally:
        fake.close()
    assert fake.requests == [{"op": "note", "key": "motd", "value": "hello"}]
    assert_one_error_line(
        done, expected, "'note' took effect is unknown", f"ileices status --data-dir {data_dir}"
    )


def test_a_node_that_never_answers_is_reported_as_such(tmp_path: Path) -> None:
    from bootstrap.control_client import ControlClientError, ReplyLost

    fake = FakeNode(tmp_path / "n", None)
    try:
        with pytest.raises(ReplyLost, match=r"did not answer within 0\.3s; whether 'revoke'") as info:
            control_request(tmp_path / "n", {"op": "revoke", "node": "00"}, timeout=0.3)
    finally:
        fake.close()
    # Callers that treat "cannot talk to the node" as an OSError keep working.
    assert isinstance(info.value, OSError) and isinstance(info.value, ControlClientError)
    with pytest.raises(NodeNotRunning):
        control_request(tmp_path / "nothing-here", {"op": "status"})


# ---- --listen and the control socket, checked before a node starts -------------------


@pytest.fixture
def founded(tmp_path: Path) -> Path:
    data_dir = tmp_path / "founder"
    found_mesh(data_dir, "test mesh")
    return data_dir


def test_up_on_a_busy_port_is_one_line(founded: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        listen = f"/ip4/127.0.0.1/udp/{port}/quic-v1"
        done = ileices("up", "--data-dir", str(founded), "--listen", listen, "--log-level", "error")
    assert_one_error_line(done, "Address already in use", "choose another --listen port")


@pytest.mark.parametrize(
    ("listen", "expected"), [("garbage", "not a multiaddr"), ("/ip4/127.0.0.1/tcp/0", "not a QUIC")]
)
def test_a_bad_listen_address_is_refused_before_starting(founded: Path, listen: str, expected: str) -> None:
    done = ileices("up", "--data-dir", str(founded), "--listen", listen, timeout=30)
    assert_one_error_line(done, f"--listen {listen!r} is {expected}")
    assert not (founded / "logs").exists()  # refused before anything started


def test_a_data_dir_too_deep_for_the_control_socket_is_refused_before_starting(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * max(1, 110 - len(str(tmp_path))))
    found_mesh(deep, "deep")
    done = ileices("up", "--data-dir", str(deep), timeout=30)
    assert_one_error_line(done, "too long for the node's control socket", "use a shorter --data-dir")
    assert not (deep / "logs").exists()


# ---- invite terms no token can carry ---------------------------------------------------


@pytest.fixture(scope="module")
def running_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    data_dir = tmp_path_factory.mktemp("invite") / "node"
    found_mesh(data_dir, "invite terms")
    with node_running(data_dir, timeout=45, cwd=ROOT, env=ENV):
        yield data_dir


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--uses", str(MAX_USES + 1)], f"uses must be between 1 and {MAX_USES}"),
        (["--uses", "0"], f"uses must be between 1 and {MAX_USES}"),
        (["--uses", "-5"], f"uses must be between 1 and {MAX_USES}"),
        (["--ttl", "0s"], "time to live must be more than 0"),
    ],
)
def test_invite_refuses_terms_no_token_can_carry(
    running_node: Path, options: list[str], expected: str
) -> None:
    done = ileices("invite", "--data-dir", str(running_node), *options)
    assert_one_error_line(done, expected)
    assert done.stdout == ""


def test_the_most_uses_a_token_carries_are_accepted_and_decode(running_node: Path) -> None:
    from protocols.join import invite

    assert invite.MAX_USES == MAX_USES
    done = ileices("invite", "--data-dir", str(running_node), "--uses", str(MAX_USES), "--json")
    assert done.returncode == 0, done.stderr
    assert decode_token(json.loads(done.stdout)["token"]).body.uses == MAX_USES


def test_the_control_socket_refuses_bad_invite_terms_too(running_node: Path) -> None:
    for request in ({"ttl_s": 60, "uses": MAX_USES + 1}, {"ttl_s": 0, "uses": 1}, {"ttl_s": -5, "uses": 1}):
        reply = control_request(running_node, {"op": "invite", **request})
        assert not reply["ok"] and ("uses must be" in reply["error"] or "time to live" in reply["error"]), (
            reply
        )


# ---- `up` on a directory whose key is not a member ------------------------------------


def run_up(data_dir: Path) -> subprocess.CompletedProcess[str]:
    """`ileices up` that must stop by itself; one that keeps running is killed and fails the test."""
    process = subprocess.Popen(
        [*CLI, "up", "--data-dir", str(data_dir), "--log-level", "warning"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        cwd=ROOT,
        env=ENV,
    )
    try:
        out, err = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        pytest.fail(f"`up` ran on although this node is not a member:\n{err}")
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def member_dir(tmp_path: Path, founded: Path, *, revoked: bool) -> tuple[Path, NodeIdentity]:
    """A data directory holding the founder's records plus an admission (and a revocation) of a new key."""
    founder = load_key_file(founded / "node.key")
    data_dir = tmp_path / ("revoked" if revoked else "member")
    data_dir.mkdir(mode=0o700)
    shutil.copy(founded / "records.sqlite3", data_dir / "records.sqlite3")
    member = NodeIdentity.generate()
    create_key_file(data_dir / "node.key", member)
    directory = DataDir(data_dir)
    database = directory.open_database()
    try:
        store = directory.load_store(database)
        records = [make_admission(founder, store.mesh_id, 2, member.node_id)]
        if revoked:
            records.append(make_revocation(founder, store.mesh_id, 3, member.node_id, 0, "lost laptop"))
        database.save(store.merge(records))
    finally:
        database.close()
    return data_dir, member


def test_up_refuses_a_directory_whose_join_never_completed(tmp_path: Path) -> None:
    data_dir = tmp_path / "joiner"
    prepare_joiner(data_dir, b"\x05" * 32)
    done = run_up(data_dir)
    assert_one_error_line(done, "never completed a join", f"ileices join TOKEN --data-dir {data_dir}")


def test_up_refuses_another_meshs_key(tmp_path: Path, founded: Path) -> None:
    other = tmp_path / "other"
    found_mesh(other, "another mesh")
    (founded / "node.key").unlink()
    shutil.copy(other / "node.key", founded / "node.key")
    done = run_up(founded)
    assert_one_error_line(done, f"the key {founded / 'node.key'}", "is not a member of mesh")


def test_up_refuses_a_revoked_node(tmp_path: Path, founded: Path) -> None:
    data_dir, member = member_dir(tmp_path, founded, revoked=True)
    done = run_up(data_dir)
    assert_one_error_line(done, f"node {member.node_id.hex()[:16]} was revoked")


def test_the_membership_check_passes_the_founder_and_an_admitted_member(
    tmp_path: Path, founded: Path
) -> None:
    data_dir, _ = member_dir(tmp_path, founded, revoked=False)
    for directory in (DataDir(founded), DataDir(data_dir)):
        database = directory.open_database()
        try:
            assert directory.membership_problem(directory.load_store(database)) is None
        finally:
            database.close()
