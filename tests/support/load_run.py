"""Five real `ileices` processes under CPU load for minutes: the measurements behind issue 13.

Why this exists: on a volunteer's machine the mesh competes with games and builds for the
cores. A starved node's timers fire late and its acks sit unread, so a plain SWIM node
would accuse healthy peers and an elected hub would miss its lease renewals. This
harness runs the scenario of issue 13 ("5 real processes run for 5 minutes while busy
processes occupy twice the machine's cores") and measures what the issue asks about:

- false deaths: a member shown `dead` or `left` (or, once everyone has seen everyone,
  missing) in any node's view while every node process is alive;
- hub availability: the share of samples, from the first one in which a hub acts, in
  which some node reports `acting_here` (it holds its lease);
- convergence: from all five answering until every node shows the same alive set and
  the same records (digest, count and clock), and again after each note published
  mid-run;
- cost: the CPU the busy processes and the nodes got, load averages, and every node's
  counters at the end (node: loop lag; election: campaigns, step-downs; membership's
  when the status document carries them), with the membership lines of each node log.

The same function without busy processes is the baseline the loaded run is compared
with (`busy=0`).

Deaths are caught twice: in the samples, and in every node's log (`member X is dead`),
because a verdict that the member refutes within the second never shows in a 1 s sample.
Expect a burst about 120 s after the nodes start, in every run: each node's hardware
daemon runs its micro-benchmark then (in a thread of the node process), all five at
nearly the same time, and `status` waits for it (it asks the hardware actor).

Busy processes are pure-Python spin loops at the nodes' priority (nice 0, the default),
each in a session of its own like each node (under autogroup scheduling a session is
the unit the kernel shares CPU between, so this is what "the same priority" means there),
each bounded three ways so none outlives the run: a wall-clock deadline inside its
loop, an RLIMIT_CPU the kernel enforces, and an exit as soon as its parent (this
process) is gone; `BusyLoad.stop` also kills them in a `finally`. Their command line
carries `BUSY_MARKER`, so `pgrep -f ileices-load-run-busy` finds any leftover.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

from tests.support.mesh_processes import NodeProcess, ProcessMesh, all_alive, same_state

BUSY_MARKER = "ileices-load-run-busy"
"""In every busy process's command line, so leftovers can be found with `pgrep -f`."""
NAMES = ("a", "b", "c", "d", "e")
"""The founder `a` and four joiners, as in the five-process tests."""
SETUP_ALLOWANCE_S = 240.0
"""How long starting the five nodes may take (under load the CLI's start-up is slow);
also the slack a busy process's deadline gets beyond the measured window."""
MEMBER_LINE = re.compile(r"^(\S+ \S+) .*member (\w+) is (suspect|dead|left)\b")
ELECTION_LINE = re.compile(r"standing for hub|hub of term|hub role (started|stopped)|this node is the hub")
SLOW_STATUS_S = 1.0
"""A status answer slower than this is listed (a node, or this harness, was not scheduled)."""


@dataclass
class FalseDeath:
    """`observer` showed `subject` as `state` (`dead`, `left` or `missing`) while all nodes ran."""

    at_s: float
    """Seconds from the window's start (negative: during setup)."""
    observer: str
    subject: str
    state: str
    seen_in: str = "status"
    """`status`: in a sample of the observer's status; `log`: a verdict its node.log recorded."""


@dataclass
class NoteSpread:
    """One note published mid-run and how long the mesh took to agree on it again."""

    key: str
    author: str
    author_id: str
    seq: int
    published_wall: float
    """time.time() just before the `note` request (nodes stamp arrivals with the same clock)."""
    published_at_s: float
    publish_call_s: float
    """How long the `note` request itself took (the author's control socket under load)."""
    reached_all_s: float | None = None
    """Publish -> the last node had it durable, from each node's `accepted_at` (wall clock, no
    polling error: all processes share one clock)."""
    agreed_s: float | None = None
    """Publish -> the first sample in which every node showed the same records and alive set."""


@dataclass
class NodeReport:
    """One node at the end of the window."""

    node_id: str
    cpu_s: float
    cpu_percent: float
    """CPU seconds over the window's wall seconds, x100 (100 = one whole core)."""
    node_counters: dict[str, int]
    election_counters: dict[str, int]
    membership_counters: dict[str, int]
    """Empty when the status document does not carry membership's counters."""
    mailbox_dropped: dict[str, int]
    log_states: dict[str, int]
    """How many `member X is suspect/dead/left` lines its node.log has from the window."""
    log_states_setup: dict[str, int]
    """The same, from before the window (joins, first elections)."""
    log_lines: list[str]
    """The window's member lines and election lines (standing, hub of term, hub role), the last 60."""


@dataclass
class LoadRunResult:
    """Everything one run measured; `summary()` is the JSON-ready digest."""

    busy: int
    cpu_count: int
    duration_s: float
    root: str
    window_started_wall: float = 0.0
    """time.time() when the measured window began (log lines after it belong to the window)."""
    setup_s: float = 0.0
    """Founder started -> all five answer on their control sockets."""
    initial_convergence_s: float | None = None
    """All five answering -> the first sample in which all show the same records and alive set."""
    samples: int = 0
    status_failures: int = 0
    """Status requests that got no answer (within 10 s) during the window."""
    status_latency: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Per node: (median, max) seconds its control socket took to answer `status`."""
    slow_samples: list[tuple[float, str, float]] = field(default_factory=list)
    """(at, node, seconds) of every status answer slower than `SLOW_STATUS_S`."""
    lag_reports: list[tuple[float, str, int, int]] = field(default_factory=list)
    """(at, node, new reports, worst ms so far) whenever a node's `loop_lag_reports` grew between
    samples: when its event loop ran late (the node's counters, read each sample)."""
    mean_sample_gap_s: float = 0.0
    max_sample_gap_s: float = 0.0
    agreed_samples: int = 0
    exited: list[str] = field(default_factory=list)
    """Nodes whose process ended during the window (a crash: nothing here stops one)."""
    false_deaths: list[FalseDeath] = field(default_factory=list)
    suspect_sightings: int = 0
    """(sample, observer, subject) triples with `suspect`: not a death, but a near miss."""
    hub_samples: int = 0
    """Samples from the first one in which some node acts as hub."""
    hub_acting_samples: int = 0
    hub_unknown_samples: int = 0
    """Samples with no node acting in which some node did not answer (it might have acted)."""
    hub_acting_time_fraction: float | None = None
    """The same share weighted by the time to the next sample."""
    double_acting_samples: int = 0
    """Samples in which two nodes said they act (snapshots are not simultaneous, so a hand-over
    between two requests shows up here too)."""
    first_acting_at_s: float | None = None
    hub_gaps: list[tuple[float, float]] = field(default_factory=list)
    """(start, length) in seconds of each run of samples with no acting hub."""
    hub_terms: list[tuple[int, str]] = field(default_factory=list)
    """(term, hub node name) in the order first seen in any node's view."""
    notes: list[NoteSpread] = field(default_factory=list)
    loadavg_start: float = 0.0
    loadavg_mean: float = 0.0
    loadavg_max: float = 0.0
    machine_busy_percent: float = 0.0
    """All cores' non-idle time over the window, x100 per core (200 = both cores of 2 busy)."""
    busy_cpu_s: float = 0.0
    busy_core_share: float | None = None
    """The busy processes' CPU seconds / (their number x the window): 0.5 = half a core each."""
    harness_cpu_s: float = 0.0
    nodes: dict[str, NodeReport] = field(default_factory=dict)

    @property
    def hub_acting_fraction(self) -> float | None:
        """Acting samples / samples from the first acting one; unknown samples count as not acting."""
        return None if self.hub_samples == 0 else self.hub_acting_samples / self.hub_samples

    @property
    def note_agreed_max_s(self) -> float | None:
        """The slowest note's publish -> agreement (None if some note never reached agreement)."""
        values = [note.agreed_s for note in self.notes]
        if not values or any(value is None for value in values):
            return None
        return max(value for value in values if value is not None)

    @property
    def note_reached_all_max_s(self) -> float | None:
        values = [note.reached_all_s for note in self.notes]
        if not values or any(value is None for value in values):
            return None
        return max(value for value in values if value is not None)

    @property
    def convergence_max_s(self) -> float | None:
        """The longest of initial and per-note convergence: what the issue's bound applies to."""
        note = self.note_agreed_max_s
        if self.initial_convergence_s is None or (self.notes and note is None):
            return None
        return max(self.initial_convergence_s, note or 0.0)

    def summary(self) -> dict[str, Any]:
        """Every field plus the derived figures, for JSON."""
        document = asdict(self)
        document["hub_acting_fraction"] = self.hub_acting_fraction
        document["note_agreed_max_s"] = self.note_agreed_max_s
        document["note_reached_all_max_s"] = self.note_reached_all_max_s
        document["convergence_max_s"] = self.convergence_max_s
        return document

    def describe(self) -> str:
        """A few lines for an assertion message or a log."""
        fraction = self.hub_acting_fraction
        hub = "n/a" if fraction is None else f"{100 * fraction:.2f} %"
        lines = [
            f"busy={self.busy} on {self.cpu_count} cores, "
            f"{self.samples} samples over {self.duration_s:.0f} s",
            f"false deaths: {len(self.false_deaths)} {self.false_deaths[:5]}; suspect sightings "
            f"{self.suspect_sightings}; exited: {self.exited}",
            f"hub acting {hub} ({self.hub_acting_samples}/{self.hub_samples}, unknown "
            f"{self.hub_unknown_samples}); gaps {self.hub_gaps[:10]}; terms {self.hub_terms}",
            f"status answers (median, max) {self.status_latency}; slow {self.slow_samples[:10]}",
            f"loop lag reports (at, node, new, worst ms) {self.lag_reports[:20]}",
            f"convergence: initial {self.initial_convergence_s}, notes agreed max {self.note_agreed_max_s}, "
            f"reached all max {self.note_reached_all_max_s}",
        ]
        for name, node in self.nodes.items():
            lines.append(
                f"{name}: cpu {node.cpu_percent:.1f} %, log {node.log_states} "
                f"(setup {node.log_states_setup}), node {node.node_counters}, "
                f"election {node.election_counters}, membership {node.membership_counters}"
            )
        return "\n".join(lines)


# ---- busy processes ---------------------------------------------------------------------------


def _busy_code(limit_s: float) -> str:
    """A spin loop that stops at its deadline, at its CPU limit, or when its parent is gone."""
    limit = int(limit_s) + 1
    return (
        f"# {BUSY_MARKER}\n"
        "import os, resource, time\n"
        f"resource.setrlimit(resource.RLIMIT_CPU, ({limit}, {limit + 5}))\n"
        f"deadline = time.monotonic() + {limit}\n"
        "parent = os.getppid()\n"
        "while time.monotonic() < deadline and os.getppid() == parent:\n"
        "    for _ in range(200_000):\n"
        "        pass\n"
    )


class BusyLoad:
    """`count` CPU-bound processes at the default priority, each bounded to `limit_s` seconds."""

    def __init__(self, count: int, limit_s: float) -> None:
        self.count = count
        self.limit_s = limit_s
        self.processes: list[subprocess.Popen[bytes]] = []
        self._handles: list[psutil.Process] = []

    def start(self) -> None:
        code = _busy_code(self.limit_s)
        for _ in range(self.count):
            process = subprocess.Popen(
                [sys.executable, "-c", code],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                # Each in a session of its own, as every node is: with the kernel's autogroup
                # scheduling (sched_autogroup_enabled), CPU is shared between sessions first, so
                # spin loops sharing one session would weigh as much as one node, not as four.
                start_new_session=True,
            )
            self.processes.append(process)
            with contextlib.suppress(psutil.Error):
                self._handles.append(psutil.Process(process.pid))

    def cpu_seconds(self) -> float:
        """CPU the busy processes have had so far (user + system)."""
        total = 0.0
        for handle in self._handles:
            with contextlib.suppress(psutil.Error):
                times = handle.cpu_times()
                total += times.user + times.system
        return total

    def stop(self) -> None:
        """Kill every busy process and reap it; safe to call twice."""
        for process in self.processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)


@contextlib.contextmanager
def busy_load(count: int, limit_s: float) -> Iterator[BusyLoad]:
    load = BusyLoad(count, limit_s)
    try:
        load.start()
        yield load
    finally:
        load.stop()


# ---- measuring ----------------------------------------------------------------------------------


def _process_cpu(node: NodeProcess) -> float:
    """CPU seconds of a node's process and its children so far (0 if it is gone)."""
    if node.process is None:
        return 0.0
    try:
        root = psutil.Process(node.process.pid)
        total = 0.0
        for process in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                total += times.user + times.system
        return total
    except psutil.Error:
        return 0.0


def _machine_busy_seconds() -> tuple[float, float]:
    """(non-idle, total) CPU seconds of the whole machine since boot, summed over cores."""
    times = psutil.cpu_times()
    idle = times.idle + getattr(times, "iowait", 0.0)
    total = sum(times)
    return total - idle, total


def _log_time(stamp: str) -> float | None:
    """A log line's `asctime` (local time, as logging writes it) as a Unix time."""
    try:
        return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
    except ValueError:
        return None


@dataclass
class _LogReport:
    window: dict[str, int]
    setup: dict[str, int]
    lines: list[str]
    verdicts: list[tuple[float, str, str]]
    """(seconds from the window's start, negative before it; subject name; `dead` or `left`)."""


def _log_report(node: NodeProcess, names: dict[str, str], window_wall: float) -> _LogReport:
    """Membership state lines of the node's log, counted before and during the window, every
    dead/left verdict it logged, and the window's member and election lines (members named
    a..e), the last 60."""
    path = node.data_dir / "logs" / "node.log"
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return _LogReport({}, {}, [], [])
    setup: Counter[str] = Counter()
    window: Counter[str] = Counter()
    lines: list[str] = []
    verdicts: list[tuple[float, str, str]] = []
    for line in text.splitlines():
        stamp = " ".join(line.split(" ", 2)[:2])
        at = _log_time(stamp)
        in_window = at is not None and at >= window_wall
        match = MEMBER_LINE.search(line)
        if match is not None:
            state = match.group(3)
            (window if in_window else setup)[state] += 1
            subject = next((n for prefix, n in names.items() if prefix.startswith(match.group(2))), "?")
            if state in ("dead", "left") and at is not None:
                verdicts.append((round(at - window_wall, 1), subject, state))
            if in_window:
                lines.append(f"{stamp} {match.group(2)}({subject}) is {state}")
        elif in_window and ELECTION_LINE.search(line):
            lines.append(line[:200])
    return _LogReport(dict(window), dict(setup), lines[-60:], verdicts)


class _Sampler:
    """Polls every node's status at once (threads: a slow node must not delay the others), and
    remembers how long each node took to answer."""

    def __init__(self, mesh: ProcessMesh, nodes: Sequence[NodeProcess]) -> None:
        self.mesh = mesh
        self.nodes = list(nodes)
        self.pool = ThreadPoolExecutor(max_workers=len(self.nodes))
        self.latencies: dict[str, list[float]] = {node.name: [] for node in self.nodes}

    def _timed(self, node: NodeProcess) -> tuple[dict[str, Any] | None, float]:
        started = time.monotonic()
        document = self.mesh.try_status(node)
        return document, time.monotonic() - started

    def poll(self) -> dict[str, dict[str, Any] | None]:
        futures = {node.name: self.pool.submit(self._timed, node) for node in self.nodes}
        documents: dict[str, dict[str, Any] | None] = {}
        for name, future in futures.items():
            documents[name], took = future.result()
            self.latencies[name].append(took)
        return documents

    def close(self) -> None:
        self.pool.shutdown(wait=True)


def _start_mesh(mesh: ProcessMesh, nodes: Sequence[NodeProcess], timeout: float) -> None:
    """Founder `init` + `up`, one invite for four, four `join`s: as the five-process tests do."""
    founder, *joiners = nodes
    mesh.init(founder)
    mesh.up(founder)
    mesh.wait_running([founder], timeout=timeout)
    token = mesh.invite(founder, "--uses", str(len(joiners)), "--ttl", "30m")
    for node in joiners:
        mesh.join(node, token)
    mesh.wait_running(list(nodes), timeout=timeout)


def run_under_load(
    root: Path,
    *,
    busy: int | None = None,
    duration: float = 300.0,
    interval: float = 1.0,
    note_every: float = 20.0,
    load_during_setup: bool = True,
) -> LoadRunResult:
    """Run five nodes for `duration` seconds with `busy` spin loops (default 2 x cores; 0 for the
    baseline) and return what was measured. Node data directories stay under `root` (their
    logs are `root/<name>/logs/node.log`, their output `root/<name>.out`).

    With `load_during_setup` the busy processes start before the founder, so the joins and
    the first elections happen under load too, as on a machine that was already busy.
    """
    cpu_count = os.cpu_count() or 1
    count = 2 * cpu_count if busy is None else busy
    result = LoadRunResult(busy=count, cpu_count=cpu_count, duration_s=duration, root=str(root))
    mesh = ProcessMesh(root)
    nodes = [mesh.node(name) for name in NAMES]
    load = BusyLoad(count, SETUP_ALLOWANCE_S + duration + 60.0)
    harness_start = time.process_time()
    try:
        result.loadavg_start = os.getloadavg()[0]
        if load_during_setup:
            load.start()
        setup_started = time.monotonic()
        _start_mesh(mesh, nodes, timeout=SETUP_ALLOWANCE_S / 2 if count else 60.0)
        result.setup_s = time.monotonic() - setup_started
        if not load_during_setup:
            load.start()
        _watch(mesh, nodes, load, result, duration, interval, note_every)
        _note_arrivals(mesh, nodes, result)
    finally:
        load.stop()
        mesh.close()
        result.harness_cpu_s = time.process_time() - harness_start
    return result


def _watch(
    mesh: ProcessMesh,
    nodes: Sequence[NodeProcess],
    load: BusyLoad,
    result: LoadRunResult,
    duration: float,
    interval: float,
    note_every: float,
) -> None:
    """The measured window: one sample of all five nodes every `interval`, a note every `note_every`."""
    names = {node.node_id: node.name for node in nodes}
    cpu_before = {node.name: _process_cpu(node) for node in nodes}
    busy_before = load.cpu_seconds()
    machine_before = _machine_busy_seconds()
    sampler = _Sampler(mesh, nodes)
    started = time.monotonic()
    result.window_started_wall = time.time()
    loads: list[float] = []
    gaps: list[float] = []
    converged_once = False
    hub_gap_start: float | None = None
    previous_at: float | None = None
    previous_acting: bool | None = None
    acting_time = 0.0
    timed = 0.0
    seen_terms: set[tuple[int, str]] = set()
    pending_notes: list[NoteSpread] = []
    next_note = min(note_every, duration / 2)
    note_index = 0
    last_documents: dict[str, dict[str, Any] | None] = {}
    lag_seen: dict[str, int] = {}
    try:
        while True:
            now = time.monotonic() - started
            if now >= duration:
                break
            if converged_once and now >= next_note:
                author = nodes[note_index % len(nodes)]
                key = f"load-{note_index}"
                call_started, wall = time.monotonic(), time.time()
                reply = mesh.request(author, {"op": "note", "key": key, "value": "x" * 64})
                published = NoteSpread(
                    key=key,
                    author=author.name,
                    author_id=str(reply["author"]),
                    seq=int(reply["seq"]),
                    published_wall=wall,
                    published_at_s=round(now, 1),
                    publish_call_s=round(time.monotonic() - call_started, 3),
                )
                result.notes.append(published)
                pending_notes.append(published)
                note_index += 1
                next_note = now + note_every
            polled_at = time.monotonic() - started
            documents = sampler.poll()
            at = time.monotonic() - started
            for name, latencies in sampler.latencies.items():
                if latencies[-1] > SLOW_STATUS_S:
                    result.slow_samples.append((round(polled_at, 1), name, round(latencies[-1], 2)))
            last_documents = documents
            loads.append(os.getloadavg()[0])
            if previous_at is not None:
                gaps.append(at - previous_at)
            result.samples += 1
            answered = [d for d in documents.values() if d is not None]
            result.status_failures += len(documents) - len(answered)
            for node in nodes:
                if not node.running and node.name not in result.exited:
                    result.exited.append(node.name)
            all_running = all(node.running for node in nodes)
            agreed = len(answered) == len(nodes) and same_state(answered) and all_alive(answered)
            if agreed:
                result.agreed_samples += 1
                if not converged_once:
                    result.initial_convergence_s = at
                    converged_once = True
                for note in pending_notes:
                    note.agreed_s = round(at - note.published_at_s, 2)
                pending_notes.clear()
            for name, document in documents.items():
                if document is not None:
                    counters = document.get("counters", {}).get("node", {})
                    reports = int(counters.get("loop_lag_reports", 0))
                    if reports > lag_seen.get(name, 0):
                        worst = int(counters.get("loop_lag_worst_ms", 0))
                        result.lag_reports.append(
                            (round(at, 1), name, reports - lag_seen.get(name, 0), worst)
                        )
                        lag_seen[name] = reports
            # ---- false deaths ----
            for observer, document in documents.items():
                if document is None or not all_running:
                    continue
                states = {m["node_id"]: m["state"] for m in document["members"]}
                for node in nodes:
                    state = states.get(node.node_id)
                    if state in ("dead", "left") or (state is None and converged_once):
                        result.false_deaths.append(
                            FalseDeath(round(at, 1), observer, node.name, state or "missing")
                        )
                    elif state == "suspect":
                        result.suspect_sightings += 1
            # ---- the hub ----
            acting = [
                name
                for name, d in documents.items()
                if d is not None and (d.get("hub") or {}).get("acting_here")
            ]
            for document in answered:
                hub = document.get("hub")
                if hub is not None:
                    term = (int(hub["term"]), names.get(hub["node_id"], hub["node_id"][:8]))
                    if term not in seen_terms:
                        seen_terms.add(term)
                        result.hub_terms.append(term)
            if acting and result.first_acting_at_s is None:
                result.first_acting_at_s = at
            if result.first_acting_at_s is not None:
                result.hub_samples += 1
                if acting:
                    result.hub_acting_samples += 1
                    if hub_gap_start is not None:
                        result.hub_gaps.append((round(hub_gap_start, 1), round(at - hub_gap_start, 1)))
                        hub_gap_start = None
                else:
                    if len(answered) < len(nodes):
                        result.hub_unknown_samples += 1
                    if hub_gap_start is None:
                        hub_gap_start = at
                if len(acting) > 1:
                    result.double_acting_samples += 1
                if previous_acting is not None and previous_at is not None:
                    timed += at - previous_at
                    acting_time += (at - previous_at) if previous_acting else 0.0
                previous_acting = bool(acting)
            previous_at = at
            time.sleep(max(0.0, interval - (time.monotonic() - started - at)))
    finally:
        sampler.close()
    elapsed = time.monotonic() - started
    if hub_gap_start is not None:
        result.hub_gaps.append((round(hub_gap_start, 1), round(elapsed - hub_gap_start, 1)))
    result.hub_acting_time_fraction = None if timed == 0 else acting_time / timed
    for name, latencies in sampler.latencies.items():
        ordered = sorted(latencies) or [0.0]
        result.status_latency[name] = (round(ordered[len(ordered) // 2], 3), round(ordered[-1], 3))
    result.mean_sample_gap_s = sum(gaps) / len(gaps) if gaps else 0.0
    result.max_sample_gap_s = max(gaps, default=0.0)
    result.loadavg_mean = sum(loads) / len(loads) if loads else 0.0
    result.loadavg_max = max(loads, default=0.0)
    busy_after = load.cpu_seconds()
    result.busy_cpu_s = busy_after - busy_before
    result.busy_core_share = None if load.count == 0 else result.busy_cpu_s / (load.count * elapsed)
    machine_after = _machine_busy_seconds()
    result.machine_busy_percent = 100 * (machine_after[0] - machine_before[0]) / elapsed
    for node in nodes:
        cpu = _process_cpu(node) - cpu_before[node.name]
        document = last_documents.get(node.name) or mesh.try_status(node) or {}
        counters = document.get("counters", {})
        logged = _log_report(node, names, result.window_started_wall)
        if not result.exited:
            # Every node ran from its start to here, so every dead/left verdict is false; the
            # 1 s samples miss verdicts a refutation undoes within the second, the log does not.
            for at, subject, state in logged.verdicts:
                result.false_deaths.append(FalseDeath(at, node.name, subject, state, "log"))
        result.nodes[node.name] = NodeReport(
            node_id=node.node_id,
            cpu_s=round(cpu, 2),
            cpu_percent=round(100 * cpu / elapsed, 1),
            node_counters=dict(counters.get("node", {})),
            election_counters=dict((document.get("hub") or {}).get("counters", {})),
            membership_counters=dict(counters.get("membership", {})),
            mailbox_dropped=dict(counters.get("mailbox_dropped", {})),
            log_states=logged.window,
            log_states_setup=logged.setup,
            log_lines=logged.lines,
        )


def _note_arrivals(mesh: ProcessMesh, nodes: Sequence[NodeProcess], result: LoadRunResult) -> None:
    """Each note's publish -> durable on the last node, from the nodes' own `accepted_at`."""
    for note in result.notes:
        arrivals: list[float] = []
        for node in nodes:
            with contextlib.suppress(AssertionError, OSError, ValueError):
                request = {"op": "lookup", "author": note.author_id, "kind": "note", "key": note.key}
                record = mesh.request(node, request).get("record")
                if record is not None and record["seq"] >= note.seq and record["accepted_at"] is not None:
                    arrivals.append(float(record["accepted_at"]))
        if len(arrivals) == len(nodes):
            note.reached_all_s = round(max(arrivals) - note.published_wall, 3)


def leftover_busy_processes() -> list[int]:
    """Pids of busy processes still running anywhere on the machine (should be none)."""
    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            cmdline = process.info["cmdline"] or []
            if any(BUSY_MARKER in part for part in cmdline):
                found.append(int(process.info["pid"]))
    return found
