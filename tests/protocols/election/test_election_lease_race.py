"""A new hub's first lease request that overtakes its hub record is answered once the record arrives."""

from __future__ import annotations

import random

from protocols.common.effects import Send
from protocols.election.core import ElectionCore
from protocols.election.events import PublishRecord
from protocols.election.messages import LeaseAck, LeaseRequest
from protocols.election.records import HUB
from protocols.records.record import Record
from protocols.records.store import RecordStore
from tests.support.mesh_fixtures import make_mesh


def _core(mesh_members: int, index: int) -> ElectionCore:
    mesh = make_mesh(members=mesh_members, seed=4)
    identity = mesh.everyone[index]
    store = RecordStore(mesh.mesh_id)
    store.merge(mesh.membership_records())
    core = ElectionCore(identity, store, random.Random(index))
    ids = [member.node_id for member in mesh.everyone]
    core.set_live_members(0.0, ids)
    return core


def test_lease_request_before_its_hub_record_is_acknowledged_when_the_record_arrives() -> None:
    founder = _core(4, 0)
    founder.tick(0.0)
    effects = founder.drain()
    hub_records: list[Record] = [e.record for e in effects if isinstance(e, PublishRecord)]
    assert [r.kind for r in hub_records] == [HUB]
    founder.tick(0.0)  # the first renewal goes out to the council
    requests = [e for e in founder.drain() if isinstance(e, Send) and isinstance(e.message, LeaseRequest)]
    assert requests
    member = _core(4, 1)
    request = next(e for e in requests if e.to == member.self_id)
    assert isinstance(request.message, LeaseRequest)
    member.receive(0.01, founder.self_id, request.message)  # overtook the hub record
    assert not [e for e in member.drain() if isinstance(e, Send)]
    assert member.counters["lease_request_ahead"] == 1
    member.store.merge(hub_records)
    member.on_record(0.02, hub_records[0])
    acks = [e for e in member.drain() if isinstance(e, Send) and isinstance(e.message, LeaseAck)]
    assert [(ack.to, ack.message.renewal) for ack in acks] == [(founder.self_id, request.message.renewal)]
    assert member.counters["lease_request_replayed"] == 1


def test_a_stale_overtaking_request_is_not_replayed_for_another_hub() -> None:
    founder = _core(4, 0)
    founder.tick(0.0)
    hub_records = [e.record for e in founder.drain() if isinstance(e, PublishRecord)]
    member = _core(4, 1)
    impostor = _core(4, 2)
    member.receive(0.01, impostor.self_id, LeaseRequest(1, 1, 3.0))  # not the hub of term 1
    member.store.merge(hub_records)
    member.on_record(0.02, hub_records[0])
    assert not [e for e in member.drain() if isinstance(e, Send) and isinstance(e.message, LeaseAck)]
    assert member.counters["lease_request_replayed"] == 0
