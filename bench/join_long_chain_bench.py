"""Join with a long hub chain (issue 13): how long a new member takes to believe the latest hub term
with its inviter's checkpoint, and without it (verifying the chain from term 1), in the same run.

Setup. A chain of `--terms` terms (default 1000) is built with real Ed25519 signatures
(`tests/protocols/election/long_chain.py`): the mesh is the founder and two members, all
three on the council, winning the terms in turn (so hub records have three authors, as
after real failovers), each hub record carrying the signed votes of a majority of the
council before it. That is 1 genesis, 2 admissions and 3 records per term (the hub
record and two votes), written into each member's data directory with a manifest per
member naming a fixed loopback port (so that the three find each other when they
start, as a mesh restarted on fixed addresses does). Each trial copies those
directories afresh and runs the three as their own processes (`ileices up`, loopback
QUIC), waits until the hub holds its lease, asks the founder for an invite (`ileices
invite`), and joins a new node that runs in this process (`mesh.node.Node` over libp2p,
with its own SQLite database), so the moment it believes a term is seen directly.
Trials alternate: with the checkpoint (the default), then without it
(`Joining.trust_checkpoint = False`: the joiner ignores the checkpoint and waits for
anti-entropy to bring the hub records, verifying every term from term 1, as a joiner
admitted by the hub does).

Figures, per trial:

- `believed_s`: `Node.run(join=...)` called (before the joiner's transport opens) ->
  the joiner's election believes a term >= `--terms` (polled every 10 ms through the
  node's API once it has started; a term believed during the join shows at the first poll);
- `started_s`: the same start -> the node reports started (admitted, members met,
  manifest published);
- `records`: records the joiner held when it first believed the term.

Also, in this process with no network (`cpu`): verifying the whole chain from term 1
(the record store's signature checks when the records merge, then `HubChain.load`) against
checking a checkpoint and believing its record.

Usage: .venv/bin/python bench/join_long_chain_bench.py [--terms 1000] [--trials 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import trio

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the repository root, for tests.support

from actors.hardware_daemon import HardwareDaemonConfig  # noqa: E402
from mesh.data_dir import DataDir, prepare_joiner  # noqa: E402
from mesh.joining import Joining  # noqa: E402
from mesh.libp2p_transport import peer_id_from_node_id  # noqa: E402
from mesh.node import Node, NodeConfig  # noqa: E402
from protocols.election.checkpoint import make_checkpoint  # noqa: E402
from protocols.election.hub_chain import HubChain  # noqa: E402
from protocols.join.invite import decode_token  # noqa: E402
from protocols.records.manifest import NodeManifest, make_manifest  # noqa: E402
from protocols.records.store import RecordStore  # noqa: E402
from tests.protocols.election.long_chain import LongChain, build_long_chain, write_data_dir  # noqa: E402
from tests.support.mesh_processes import ProcessMesh, wait_until  # noqa: E402

LOOPBACK = "/ip4/127.0.0.1/udp/0/quic-v1"
TARGET_S = 2.0
POLL_S = 0.01
GIVE_UP_S = 120.0


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def cpu_figures(chain: LongChain) -> dict[str, float]:
    """Seconds of CPU-bound work with no network: the full verification and the checkpoint's."""
    started = time.perf_counter()
    store = RecordStore(chain.mesh.mesh_id)
    store.merge(chain.records())
    merged = time.perf_counter()
    full = HubChain(store.mesh_id, store.ledger)
    full.load(store)
    loaded = time.perf_counter()
    assert full.latest is not None and full.latest.term == chain.terms

    joiner = chain.mesh.members[-1]
    fresh = RecordStore(chain.mesh.mesh_id)
    fresh.merge(chain.mesh.membership_records())
    founder = chain.mesh.founder
    checkpoint = make_checkpoint(founder, chain.mesh.mesh_id, joiner.node_id, chain.hub(chain.terms))
    before = time.perf_counter()
    anchored = HubChain(fresh.mesh_id, fresh.ledger)
    anchored.adopt_checkpoint(checkpoint, trusted_signer=founder.node_id, subject=joiner.node_id)
    assert anchored.anchor is not None
    anchored.offer(anchored.anchor.record)
    after = time.perf_counter()
    assert anchored.latest is not None and anchored.latest.term == chain.terms
    return {
        "records_merge_s": merged - started,
        "chain_from_term_one_s": loaded - merged,
        "checkpoint_s": after - before,
    }


async def join_once(joiner_dir: Path, token: str, terms: int) -> dict[str, Any]:
    invite = decode_token(token)
    prepare_joiner(joiner_dir, invite.body.mesh)
    config = NodeConfig(listen=[LOOPBACK], hardware=HardwareDaemonConfig(benchmark_delay=None))
    joiner = Node(DataDir(joiner_dir), config)
    async with trio.open_nursery() as nursery:
        begun = time.monotonic()
        await nursery.start(partial(joiner.run, join=invite))
        started = time.monotonic() - begun
        with trio.fail_after(GIVE_UP_S):
            while True:
                view, _, _ = await joiner.api.hub()
                if view is not None and view.term >= terms:
                    believed = time.monotonic() - begun
                    break
                await trio.sleep(POLL_S)
        status = await joiner.status()
        joiner.stop()
        await joiner.finished.wait()
    return {
        "believed_s": believed,
        "started_s": started,
        "records": status["records"],
        "checkpoint": status["counters"]["node"].get("hub_checkpoint_adopted", 0),
    }


def trial(pristine: Path, root: Path, terms: int, with_checkpoint: bool) -> dict[str, Any]:
    procs = ProcessMesh(root)
    try:
        names = sorted(path.name for path in pristine.iterdir() if path.is_dir())
        members = [procs.node(name, (pristine / f"{name}.listen").read_text()) for name in names]
        for member in members:
            shutil.copytree(pristine / member.name, member.data_dir)
            procs.up(member)
        procs.wait_running(members, timeout=60)
        founder = members[0]

        def hub_holds_lease() -> bool:
            return any((procs.status(member).get("hub") or {}).get("acting_here") for member in members)

        wait_until(hub_holds_lease, 30.0, "the hub to hold its lease")
        token = procs.invite(founder, "--ttl", "10m", "--uses", "1")
        Joining.trust_checkpoint = with_checkpoint
        try:
            result = trio.run(join_once, root / "joiner", token, terms)
        finally:
            Joining.trust_checkpoint = True
    finally:
        procs.close()
    return {"mode": "checkpoint" if with_checkpoint else "from_term_1", **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--terms", type=int, default=1000)
    parser.add_argument("--trials", type=int, default=3, help="trials of each mode, alternating")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)

    built = time.perf_counter()
    chain = build_long_chain(args.terms, members=2, council_size=3)
    build_s = time.perf_counter() - built
    results: dict[str, Any] = {
        "terms": args.terms,
        "chain_records": len(chain.records()),
        "build_s": build_s,
        "cpu": cpu_figures(chain),
        "trials": [],
        "nproc": os.cpu_count(),
        "load_average": os.getloadavg(),
    }
    with tempfile.TemporaryDirectory(prefix="join-long-chain-") as temporary:
        root = Path(temporary)
        pristine = root / "pristine"
        listen = {
            identity.node_id: f"/ip4/127.0.0.1/udp/{free_udp_port()}/quic-v1"
            for identity in chain.mesh.everyone
        }
        manifests = [
            make_manifest(
                identity,
                chain.mesh.mesh_id,
                chain.next_seq(identity),
                NodeManifest(
                    [f"{listen[identity.node_id]}/p2p/{peer_id_from_node_id(identity.node_id)}"], "bench", 0.0
                ),
            )
            for identity in chain.mesh.everyone
        ]
        for index, identity in enumerate(chain.mesh.everyone):  # "0-founder" first
            name = f"{index}-{'founder' if index == 0 else 'member'}"
            write_data_dir(chain, pristine / name, identity, manifests)
            (pristine / f"{name}.listen").write_text(listen[identity.node_id])
        for index in range(args.trials):
            for with_checkpoint in (True, False):
                run_root = root / f"trial{index}-{'cp' if with_checkpoint else 'full'}"
                results["trials"].append(trial(pristine, run_root, args.terms, with_checkpoint))
    results["load_average_after"] = os.getloadavg()
    summarise(results)
    report(results, args.json)


def summarise(results: dict[str, Any]) -> None:
    for mode in ("checkpoint", "from_term_1"):
        believed = [t["believed_s"] for t in results["trials"] if t["mode"] == mode]
        results[f"{mode}_median_s"] = statistics.median(believed)
        results[f"{mode}_max_s"] = max(believed)
    results["ratio"] = results["from_term_1_median_s"] / results["checkpoint_median_s"]


def report(results: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(results, indent=2))
        return
    cpu = results["cpu"]
    print(
        f"hub chain of {results['terms']} terms, {results['chain_records']} records "
        f"(built with real signatures in {results['build_s']:.2f} s)"
    )
    print(
        f"cpu, no network: merging the records {cpu['records_merge_s']:.3f} s, "
        f"verifying the chain from term 1 {cpu['chain_from_term_one_s']:.3f} s, "
        f"checking a checkpoint {cpu['checkpoint_s'] * 1000:.2f} ms"
    )
    print(f"{'mode':<12} {'believed':>9} {'started':>8} {'records':>8}")
    for t in results["trials"]:
        print(f"{t['mode']:<12} {t['believed_s']:>8.3f}s {t['started_s']:>7.3f}s {t['records']:>8}")
    print(
        f"median join -> latest term believed: with checkpoint {results['checkpoint_median_s']:.3f} s "
        f"(max {results['checkpoint_max_s']:.3f}), from term 1 {results['from_term_1_median_s']:.3f} s "
        f"(max {results['from_term_1_max_s']:.3f}); ratio {results['ratio']:.1f}x; "
        f"target < {TARGET_S:.0f} s with the checkpoint: "
        f"{'met' if results['checkpoint_max_s'] < TARGET_S else 'NOT met'}"
    )
    print(
        f"nproc {results['nproc']}, load average before {results['load_average'][0]:.2f}, "
        f"after {results['load_average_after'][0]:.2f}"
    )


if __name__ == "__main__":
    main()
