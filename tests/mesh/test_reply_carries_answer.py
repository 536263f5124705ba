"""Replies carry the answer (issue 13): a datagram's answer rides in the transport reply.

Real components: membership cores in `ProtocolActor`s under a `Supervisor`, `NodeParts`
with a real store and SQLite persister, `PeerSender`, the route handlers of
`mesh.routes`, on the in-memory transport (which keeps the transport contract, and
counts frames as libp2p does: every request and every reply is one frame). Virtual
time (`MockClock` with autojump), so seconds of SWIM run in milliseconds.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
import trio.testing

from actors.protocol_actor import Inbound, ProtocolActor
from actors.supervisor import ChildSpec, Supervisor
from mesh.memory_transport import MemoryNetwork, MemoryTransport
from mesh.node_parts import MEMBERSHIP, NodeParts
from mesh.peer_sender import PeerSender
from mesh.record_database import RecordDatabase
from mesh.record_persister import RecordPersister
from mesh.routes import (
    ANSWER_WAIT,
    attach_answers,
    pack_answers,
    receive_answers,
    route_handlers,
    route_of,
    sender_for,
    serve,
)
from protocols.common.identity import NodeId, NodeIdentity
from protocols.common.wire import encode
from protocols.membership.config import MembershipConfig
from protocols.membership.core import MembershipCore
from protocols.membership.messages import Ack, Ping
from protocols.records.seq_allocator import SeqAllocator
from protocols.records.store import RecordStore
from tests.support.mesh_fixtures import make_mesh

ROUTE = route_of(MEMBERSHIP)
assert ROUTE.legacy is not None
LEGACY = ROUTE.legacy


class GatedActor(ProtocolActor):
    """A protocol actor that handles nothing until its gate opens (a slow, stuck actor)."""

    mailbox_capacity = 1

    def __init__(self, *args: Any, gate: trio.Event) -> None:
        super().__init__(*args)
        self.gate = gate

    async def handle(self, message: Inbound | Any) -> object:
        await self.gate.wait()
        return await super().handle(message)


@dataclass
class RunningNode:
    parts: NodeParts
    transport: MemoryTransport
    cores: list[MembershipCore]

    @property
    def core(self) -> MembershipCore:
        return self.cores[-1]

    @property
    def node_id(self) -> NodeId:
        return self.parts.node_id


@asynccontextmanager
async def open_node(
    network: MemoryNetwork,
    identity: NodeIdentity,
    path: Path,
    peers: list[NodeId],
    *,
    old: bool = False,
    gate: trio.Event | None = None,
) -> AsyncIterator[RunningNode]:
    """A node running a membership actor on `network`. `old`: as the code before this
    change (only the legacy id, empty replies, answers as requests, reply bodies ignored)."""
    mesh_id = make_mesh(1).mesh_id
    store = RecordStore(mesh_id)
    persister = RecordPersister(RecordDatabase(path / f"{identity.node_id.hex()[:8]}.sqlite3"))
    cores: list[MembershipCore] = []
    async with network.open(identity.node_id) as transport, trio.open_nursery() as nursery:
        sender = PeerSender(transport, nursery, lambda node: [])

        def core() -> MembershipCore:
            made = MembershipCore(identity.node_id, random.Random(len(cores)), MembershipConfig())
            for peer in peers:
                made.add_member(trio.current_time(), peer)
            cores.append(made)
            return made

        def actor() -> ProtocolActor:
            if old:
                return ProtocolActor(core(), lambda peer, message: sender.send(peer, LEGACY, message))
            send = sender_for(MEMBERSHIP, sender.send)
            return ProtocolActor(core(), send) if gate is None else GatedActor(core(), send, gate=gate)

        supervisor = Supervisor([ChildSpec(MEMBERSHIP, actor)], name=identity.node_id.hex()[:8])
        seqs = SeqAllocator(store, identity.node_id)
        parts = NodeParts(identity, store, persister, transport, sender, supervisor, seqs, 5.0)
        if old:
            transport.set_handler(LEGACY, serve(ROUTE, parts, answers=False))
        else:
            attach_answers(parts)
            for protocol, handler in route_handlers(parts).items():
                transport.set_handler(protocol, handler)
        await nursery.start(supervisor.run)
        try:
            yield RunningNode(parts, transport, cores)
        finally:
            supervisor.request_stop()
            nursery.cancel_scope.cancel()
            persister.close()


def run(test: Callable[[], Awaitable[None]]) -> None:
    trio.run(test, clock=trio.testing.MockClock(autojump_threshold=0))


def identities(count: int) -> list[NodeIdentity]:
    rng = random.Random(13)
    return [NodeIdentity.from_seed(rng.randbytes(32)) for _ in range(count)]


def test_a_pings_ack_comes_back_in_its_reply_one_request_per_ping(tmp_path: Path) -> None:
    async def main() -> None:
        a_id, b_id = identities(2)
        network = MemoryNetwork()
        async with (
            open_node(network, a_id, tmp_path, [b_id.node_id]) as a,
            open_node(network, b_id, tmp_path, [a_id.node_id]) as b,
        ):
            await trio.sleep(10)
            probes = a.core.counters["probes"] + b.core.counters["probes"]
            requests = a.parts.sender.counters["delivered"] + b.parts.sender.counters["delivered"]
            answers_in = a.parts.counters["membership_answers_in"] + b.parts.counters["membership_answers_in"]
            frames = a.transport.counters.frames_out + b.transport.counters.frames_out
            for node in (a, b):
                assert node.core.counters["probe_failures"] == 0
                assert node.core.counters["declared_dead"] == 0
                assert node.parts.counters["membership_answer_timeout"] == 0
                assert node.parts.sender.counters["fell_back_legacy"] == 0
        # 0.5 s protocol period: ~20 probes each in 10 s. Every ack came in a reply, so
        # there is one request per ping/ack pair, and two frames (request, reply) per request.
        assert probes >= 30
        assert abs(requests - probes) <= 2
        assert answers_in >= probes - 2
        assert frames == 2 * requests

    run(main)


def test_an_old_peer_gets_its_answers_as_requests_and_its_empty_replies_work(tmp_path: Path) -> None:
    async def main() -> None:
        new_id, old_id = identities(2)
        network = MemoryNetwork()
        async with (
            open_node(network, new_id, tmp_path, [old_id.node_id]) as new,
            open_node(network, old_id, tmp_path, [new_id.node_id], old=True) as old,
        ):
            await trio.sleep(10)
            for node in (new, old):
                assert node.core.counters["probes"] >= 15
                assert node.core.counters["probe_failures"] == 0
                assert node.core.counters["declared_dead"] == 0
            # The new node tried its id, heard "no handler", and remembers (two sends may
            # already be in flight when the first one learns it).
            assert 1 <= new.parts.sender.counters["fell_back_legacy"] <= 2
            assert new.parts.counters["membership_answers_in"] == 0
            assert new.parts.counters["membership_answers_out"] == 0
            # Both directions: a request, its empty reply, the answer as a request, its reply.
            requests = new.parts.sender.counters["delivered"] + old.parts.sender.counters["delivered"]
            probes = new.core.counters["probes"] + old.core.counters["probes"]
            assert requests >= 2 * probes - 2

    run(main)


def test_malformed_answers_are_dropped_and_counted_never_raised(tmp_path: Path) -> None:
    async def main() -> None:
        a_id, b_id = identities(2)
        network = MemoryNetwork()
        async with open_node(network, a_id, tmp_path, []) as a:
            deliver = receive_answers(a.parts)
            peer = b_id.node_id
            deliver(peer, ROUTE.protocol, b"\xc1 not msgpack")  # not a list of messages
            deliver(peer, ROUTE.protocol, pack_answers([b"\x93\x01\x02"]))  # a list, a bad message
            deliver(peer, ROUTE.protocol, pack_answers([encode(Ack(7, ())), b"\xff"]))  # one good
            deliver(peer, LEGACY, b"\xc1")  # legacy replies are not read at all
            assert a.parts.counters["malformed_answer_membership"] == 3
            assert a.parts.counters["membership_answers_in"] == 1
            await trio.sleep(0.1)
            assert a.core.counters["stale_replies"] == 1  # the good one reached the core

            # The same through the wire: a peer whose replies are garbage.
            async with network.open(peer) as b:

                async def garbage(sender: NodeId, payload: bytes) -> bytes:
                    return b"\xff\xfe"

                b.set_handler(ROUTE.protocol, garbage)
                a.parts.sender.send(peer, ROUTE.protocol, Ping(1, ()))
                await trio.sleep(0.1)
            assert a.parts.sender.counters["delivered"] == 1
            assert a.parts.sender.counters["reply_handler_failed"] == 0
            assert a.parts.counters["malformed_answer_membership"] == 4

    run(main)


def test_a_stuck_actor_replies_empty_counts_and_still_answers_later(tmp_path: Path) -> None:
    async def main() -> None:
        a_id, b_id = identities(2)
        network = MemoryNetwork()
        gate = trio.Event()
        async with (
            open_node(network, a_id, tmp_path, []) as a,
            open_node(network, b_id, tmp_path, [], gate=gate) as b,
        ):
            started = trio.current_time()
            a.parts.sender.send(b.node_id, ROUTE.protocol, Ping(1, ()))
            await trio.sleep(0.01)
            # The actor took ping 1 and is stuck in it; ping 2 fills its one-slot mailbox.
            a.parts.sender.send(b.node_id, ROUTE.protocol, Ping(2, ()))
            await trio.sleep(0.01)
            a.parts.sender.send(b.node_id, ROUTE.protocol, Ping(3, ()))
            await trio.sleep(0.01)
            assert b.parts.counters["membership_mailbox_full"] == 1
            assert a.parts.sender.counters["delivered"] == 1  # ping 3, replied empty at once
            await trio.sleep(ANSWER_WAIT)
            # Pings 1 and 2 waited for their answers as long as allowed, then replied empty.
            assert b.parts.counters["membership_answer_timeout"] == 2
            assert a.parts.sender.counters["delivered"] == 3
            assert trio.current_time() - started < ANSWER_WAIT + 0.1
            assert a.core.counters["received"] == 0
            gate.set()
            await trio.sleep(0.1)
            # The late acks were not lost: they went out as requests of their own.
            assert b.parts.sender.counters["delivered"] == 2
            assert a.core.counters["received"] == 2
            assert b.parts.counters["membership_answers_out"] == 0

    run(main)
