"""Records benchmark: merge throughput (memory and persisted), delta computation, signing.

Run: .venv/bin/python bench/records_bench.py [--json]
Each figure comes with a baseline measured in the same run, so the ratio is comparable
across machines: merge vs a bare dict update of the same records, persisted merge vs
the in-memory merge, Ed25519 sign/verify as the per-record cost a real node pays.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from mesh.record_database import RecordDatabase
from protocols.common.identity import NodeIdentity
from protocols.records.admission_records import make_admission, make_genesis
from protocols.records.record import Record, sign_record, verify_record
from protocols.records.store import RecordStore

AUTHORS = 1000
PER_AUTHOR = 10


def build_records() -> tuple[bytes, list[Record], list[Record]]:
    founder = NodeIdentity.from_seed(bytes(32))
    genesis = make_genesis(founder, "bench", 0.0, b"n")
    mesh = genesis.mesh
    members = [NodeIdentity.from_seed(i.to_bytes(32, "big")) for i in range(1, AUTHORS)]
    admissions = [make_admission(founder, mesh, i + 2, m.node_id) for i, m in enumerate(members)]
    base = [genesis, *admissions]
    notes = [
        sign_record(m, mesh, "note", f"k{seq}", seq, b"x" * 64)
        for m in members
        for seq in range(1, PER_AUTHOR + 1)
    ]
    return mesh, base, notes


def best_of(runs: int, fn: object) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="print figures as JSON")
    args = parser.parse_args()
    mesh, base, notes = build_records()
    n = len(notes)

    def bare_dict() -> None:
        table: dict[tuple[bytes, str, str], Record] = {}
        for r in notes:
            slot = (r.author, r.kind, r.key)
            old = table.get(slot)
            if old is None or old.seq < r.seq:
                table[slot] = r

    def memory_merge() -> None:
        store = RecordStore(mesh)
        store.merge(base, verified=True)
        store.merge(notes, verified=True)

    bare_s = best_of(5, bare_dict)
    merge_s = best_of(5, memory_merge)

    def persisted_merge() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            database = RecordDatabase(Path(tmp) / "r.sqlite3")
            store = RecordStore(mesh)
            database.save(store.merge(base, verified=True))
            for i in range(0, n, 1000):
                database.save(store.merge(notes[i : i + 1000], verified=True))
            database.close()

    persisted_s = best_of(3, persisted_merge)

    full = RecordStore(mesh)
    full.merge(base + notes, verified=True)
    half = RecordStore(mesh)
    half.merge(base + notes[: n // 2], verified=True)
    empty = RecordStore(mesh)
    empty.merge(base, verified=True)
    delta_times = []
    for peer in (empty, half):
        clock = peer.clock()
        for _ in range(20):
            start = time.perf_counter()
            full.delta_for(clock, max_records=100_000)
            delta_times.append(time.perf_counter() - start)
    delta_ms = statistics.median(delta_times) * 1000
    apply_start = time.perf_counter()
    empty.apply_delta(full.delta_for(empty.clock(), max_records=100_000), verified=True)
    apply_ms = (time.perf_counter() - apply_start) * 1000
    assert empty.state_digest() == full.state_digest()

    identity = NodeIdentity.from_seed(bytes(32))
    sign_s = best_of(3, lambda: [sign_record(identity, mesh, "note", "k", 1, b"x" * 64) for _ in range(1000)])
    verify_s = best_of(3, lambda: [verify_record(notes[i]) for i in range(1000)])

    figures = {
        "records": n,
        "bare_dict_records_per_s": n / bare_s,
        "memory_merge_records_per_s": n / merge_s,
        "memory_merge_vs_bare_dict": bare_s / merge_s,
        "persisted_merge_records_per_s": n / persisted_s,
        "persisted_vs_memory": merge_s / persisted_s,
        "delta_1000x10_median_ms": delta_ms,
        "apply_delta_10k_records_ms": apply_ms,
        "sign_us": sign_s / 1000 * 1e6,
        "verify_us": verify_s / 1000 * 1e6,
        "targets": {
            "memory_merge_records_per_s": 300_000,
            "persisted_merge_records_per_s": 50_000,
            "delta_1000x10_median_ms": 20,
        },
    }
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"records benchmark: {n} records from {AUTHORS - 1} authors x {PER_AUTHOR}")
    print(f"  bare dict update (baseline)     {figures['bare_dict_records_per_s']:>12,.0f} records/s")
    print(
        f"  merge, in memory                {figures['memory_merge_records_per_s']:>12,.0f} records/s"
        f"   ({figures['memory_merge_vs_bare_dict']:.2f}x of bare dict; target >= 300,000/s)"
    )
    print(
        f"  merge, persisted (1000/batch)   {figures['persisted_merge_records_per_s']:>12,.0f} records/s"
        f"   ({figures['persisted_vs_memory']:.2f}x of in-memory; target >= 50,000/s)"
    )
    print(f"  delta_for, 1000 authors x 10    {delta_ms:>12.2f} ms median   (target < 20 ms)")
    print(f"  apply_delta of 10k records      {apply_ms:>12.2f} ms")
    print(f"  Ed25519 sign / verify           {figures['sign_us']:.1f} / {figures['verify_us']:.1f} us")


if __name__ == "__main__":
    main()
