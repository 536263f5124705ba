"""Dissemination cores on the sans-IO harness: push spreads, anti-entropy repairs, steady state is cheap."""

from __future__ import annotations

import random

from protocols.common.effects import Send
from protocols.common.wire import decode, encode
from protocols.dissemination.config import DisseminationConfig
from protocols.dissemination.core import DisseminationCore
from protocols.dissemination.messages import DisseminationMessage, SyncDelta, SyncHello, SyncRequest
from protocols.records.store import RecordStore, bucket_of
from tests.support.mesh_fixtures import MeshFixture, make_mesh
from tests.support.sans_io_harness import SansIOHarness


def gossip_mesh(mesh: MeshFixture, seed: int, loss: float = 0.0) -> SansIOHarness:
    """A dissemination core (fanout 2) for every node of `mesh` on the sans-IO harness: messages
    cross the wire encoding with a fixed 10 ms latency and optional loss; `net.crash` takes a
    node offline, `net.recover` brings it back."""
    net = SansIOHarness(seed=seed, latency=0.01, loss=loss)
    for i, identity in enumerate(mesh.everyone):
        store = RecordStore(mesh.mesh_id)
        store.merge(mesh.membership_records())
        core = DisseminationCore(
            identity.node_id, store, random.Random(seed * 1000 + i), DisseminationConfig(fanout=2)
        )
        net.add(identity.node_id, core, message_type=DisseminationMessage)
    for node, core in net.cores().items():
        core.set_peers(net.nodes)
        net.tick(node)  # a driver ticks every core once when it starts
    return net


def digests(net: SansIOHarness) -> set[bytes]:
    return {core.store.state_digest() for node, core in net.cores().items() if node not in net.down}


def test_push_and_anti_entropy_converge_under_loss() -> None:
    mesh = make_mesh(members=19, seed=3)
    net = gossip_mesh(mesh, seed=3, loss=0.1)
    for i, author in enumerate(mesh.everyone[:5]):
        core = net.core(author.node_id)
        core.publish(0.0, mesh.next_record(author, "note", f"k{i}", b"x"))
        net.flush(author.node_id)
    net.run_until(15.0)
    assert len(digests(net)) == 1
    assert len(next(iter(net.cores().values())).store) == 20 + 5


def test_a_node_that_was_away_catches_up_by_anti_entropy() -> None:
    mesh = make_mesh(members=9, seed=4)
    net = gossip_mesh(mesh, seed=4)
    away = mesh.members[0].node_id
    net.crash(away)
    author = mesh.members[1]
    for i in range(20):
        net.core(author.node_id).publish(net.now, mesh.next_record(author, "note", f"k{i % 3}"))
        net.flush(author.node_id)
    net.run_until(5.0)
    assert net.core(away).store.clock().get(author.node_id, 0) == 0
    net.recover(away)
    net.run_until(15.0)
    assert len(digests(net)) == 1
    assert net.core(away).store.clock() == net.core(author.node_id).store.clock()


def test_steady_state_anti_entropy_costs_one_small_message_per_round() -> None:
    mesh = make_mesh(members=4, seed=5)
    net = gossip_mesh(mesh, seed=5)
    net.run_until(10.0)
    rounds = sum(core.counters["sync_rounds"] for core in net.cores().values())
    assert rounds >= 40
    assert net.sent == rounds  # a hello each, never a request: the states already match
    store = next(iter(net.cores().values())).store
    hello = SyncHello(store.state_digest(), store.clock_total(), store.summary())
    assert len(encode(hello)) < 320  # digest, total and 8 bytes per author bucket, whatever the mesh size


def test_unknown_messages_are_dropped_and_counted() -> None:
    mesh = make_mesh(members=1, seed=6)
    net = gossip_mesh(mesh, seed=6)
    core = net.core(mesh.founder.node_id)
    core.receive(0.0, mesh.members[0].node_id, object())
    assert core.counters["dropped_unknown_message"] == 1
    assert not [e for e in core.drain() if isinstance(e, Send)]


def test_same_seed_same_trace() -> None:
    def trace(seed: int) -> tuple[int, set[bytes]]:
        mesh = make_mesh(members=7, seed=8)
        net = gossip_mesh(mesh, seed=seed, loss=0.2)
        author = mesh.members[2]
        net.core(author.node_id).publish(0.0, mesh.next_record(author, "note", "k"))
        net.flush(author.node_id)
        net.run_until(5.0)
        return net.sent, digests(net)

    assert trace(1) == trace(1)


def test_a_sync_exchanges_only_the_clock_entries_of_the_buckets_that_differ() -> None:
    mesh = make_mesh(members=80, seed=9)
    notes = [mesh.next_record(author, "note", "k") for author in mesh.everyone]
    cores = []
    for i, identity in enumerate(mesh.everyone[:2]):
        store = RecordStore(mesh.mesh_id)
        store.merge([*mesh.membership_records(), *notes])
        cores.append(DisseminationCore(identity.node_id, store, random.Random(i)))
    ahead, behind = cores
    author = mesh.members[7]
    ahead.store.add(mesh.next_record(author, "note", "k2"))
    assert len(ahead.store.clock()) == 81  # every member is an author
    ahead.set_peers([behind.self_id])
    ahead.tick(0.0)  # schedules the first round
    ahead.tick(ahead.next_deadline() or 0.0)
    (hello,) = [e.message for e in ahead.drain() if isinstance(e, Send)]
    behind.receive(100.0, ahead.self_id, decode(encode(hello), DisseminationMessage))  # type: ignore[arg-type]
    (request,) = [e.message for e in behind.drain() if isinstance(e, Send)]
    assert isinstance(request, SyncRequest) and request.buckets == [bucket_of(author.node_id)]
    assert author.node_id in request.clock and len(request.clock) < 10  # not all 81 authors
    ahead.receive(100.0, behind.self_id, decode(encode(request), DisseminationMessage))  # type: ignore[arg-type]
    (delta,) = [e.message for e in ahead.drain() if isinstance(e, Send)]
    assert isinstance(delta, SyncDelta) and [len(entry.records) for entry in delta.entries] == [1]
    behind.receive(100.0, ahead.self_id, decode(encode(delta), DisseminationMessage))  # type: ignore[arg-type]
    assert behind.store.state_digest() == ahead.store.state_digest()
    assert behind.store.summary() == ahead.store.summary()
    assert behind.store.clock() == ahead.store.clock()
    assert not [e for e in behind.drain() if isinstance(e, Send)]  # nothing to send back


def test_a_hello_without_a_summary_falls_back_to_the_whole_clock() -> None:
    mesh = make_mesh(members=5, seed=10)
    store = RecordStore(mesh.mesh_id)
    store.merge(mesh.membership_records())
    core = DisseminationCore(mesh.founder.node_id, store, random.Random(1))
    core.receive(0.0, mesh.members[0].node_id, SyncHello(bytes(32), 0))
    (request,) = [e.message for e in core.drain() if isinstance(e, Send)]
    assert isinstance(request, SyncRequest) and request.buckets is None
    assert request.clock == store.clock()
