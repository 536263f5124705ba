"""Direct push in small meshes (`DisseminationConfig.direct_push_below`), cores driven directly.

The property that matters: below the limit a new record reaches every live peer in one
hop, with exactly n - 1 messages and no forwarding; at or above it, and with the knob
off, behaviour is the plain forward-once push with `fanout`.
"""

from __future__ import annotations

import random

from protocols.common.effects import Send
from protocols.dissemination.config import DisseminationConfig
from protocols.dissemination.core import DisseminationCore
from protocols.dissemination.messages import Push
from protocols.records.record import sign_record
from protocols.records.store import RecordStore
from tests.support.mesh_fixtures import MeshFixture, make_mesh


def _cores(members: int, config: DisseminationConfig) -> tuple[list[DisseminationCore], MeshFixture]:
    mesh = make_mesh(members=members, seed=7)
    cores = []
    for index, identity in enumerate(mesh.everyone):
        store = RecordStore(mesh.mesh_id)
        store.merge(mesh.membership_records())
        cores.append(DisseminationCore(identity.node_id, store, random.Random(index), config))
    everyone = [core.self_id for core in cores]
    for core in cores:
        core.set_peers(everyone)
    return cores, mesh


def _pushes(core: DisseminationCore) -> list[Send]:
    return [e for e in core.drain() if isinstance(e, Send) and isinstance(e.message, Push)]


def _publish_note(core: DisseminationCore, mesh: MeshFixture) -> Push:
    identity = next(i for i in mesh.everyone if i.node_id == core.self_id)
    seq = core.store.highest_seq(core.self_id) + 1
    record = sign_record(identity, mesh.mesh_id, "note", "k", seq, b"v")
    assert core.publish(0.0, record)
    return Push([record])


def test_below_the_limit_the_author_pushes_to_every_peer_and_nobody_forwards() -> None:
    cores, mesh = _cores(9, DisseminationConfig(fanout=3, direct_push_below=32))
    author, others = cores[0], cores[1:]
    message = _publish_note(author, mesh)
    sends = _pushes(author)
    assert sorted(send.to for send in sends) == sorted(core.self_id for core in others)
    for core in others:
        core.receive(0.01, author.self_id, message)
        assert core.store.get(author.self_id, "note", "k") is not None
        assert _pushes(core) == []  # straight from the author: not forwarded


def test_a_record_relayed_by_someone_else_is_still_forwarded() -> None:
    cores, mesh = _cores(9, DisseminationConfig(fanout=3, direct_push_below=32))
    author, relay, receiver = cores[0], cores[1], cores[2]
    message = _publish_note(author, mesh)
    receiver.receive(0.01, relay.self_id, message)
    assert len(_pushes(receiver)) == 3


def test_at_or_above_the_limit_and_when_off_it_is_plain_fanout_push() -> None:
    for config in (DisseminationConfig(fanout=3, direct_push_below=9), DisseminationConfig(fanout=3)):
        cores, mesh = _cores(9, config)  # 9 peers each: not below 9
        author, receiver = cores[0], cores[1]
        message = _publish_note(author, mesh)
        assert len(_pushes(author)) == 3
        receiver.receive(0.01, author.self_id, message)
        assert len(_pushes(receiver)) == 3
