"""The storage rule of the wiring (`protocols.wiring`, rule 7): storage records go to the storage core
only, manifests to both it and the election, every liveness change reaches it, and it acts only
while this node is the acting hub."""

from __future__ import annotations

from protocols.common.identity import NodeIdentity
from protocols.dissemination.events import RecordAccepted
from protocols.election.events import BecameHub, SteppedDown
from protocols.membership.events import MemberChanged, MemberRemoved, MemberState
from protocols.records.manifest import NodeManifest, make_manifest
from protocols.storage.records import StorageBody, make_storage
from protocols.wiring import (
    CoreWiring,
    RecordToElection,
    RecordToStorage,
    StorageActing,
    StorageLiveness,
)

SELF = b"s" * 32
C = b"c" * 32
MESH = b"m" * 32


def wiring() -> CoreWiring:
    return CoreWiring(SELF, lambda: [C], election_has_live_set=True)


def test_storage_records_reach_only_the_storage_core_and_manifests_both_cores() -> None:
    author = NodeIdentity.from_seed(b"a" * 32)
    storage = make_storage(author, MESH, 1, StorageBody(10, 0, True, "", []))
    assert wiring().on_event(0.0, RecordAccepted(storage, "push", None), 0.0) == (RecordToStorage(storage),)
    manifest = make_manifest(author, MESH, 2, NodeManifest(["/ip4/10.0.0.1/udp/1/quic-v1"], "1", 0.0))
    feeds = wiring().on_event(0.0, RecordAccepted(manifest, "push", None), 0.0)
    assert RecordToStorage(manifest) in feeds and RecordToElection(manifest, False) in feeds


def test_deaths_leaves_and_removals_reach_the_storage_core() -> None:
    rules = wiring()
    assert StorageLiveness(C, False) in rules.on_event(1.0, MemberChanged(C, MemberState.DEAD, 1), 1.0)
    assert StorageLiveness(C, False) in rules.on_event(1.0, MemberChanged(C, MemberState.LEFT, 2), 1.0)
    assert StorageLiveness(C, True) in rules.on_event(1.0, MemberChanged(C, MemberState.ALIVE, 3), 1.0)
    assert StorageLiveness(C, False) in rules.on_event(1.0, MemberRemoved(C), 1.0)


def test_only_the_acting_hub_runs_the_checker() -> None:
    rules = wiring()
    assert StorageActing(True, 4) in rules.on_event(0.0, BecameHub(4, [SELF]), 0.0)
    assert rules.on_event(0.0, SteppedDown(4, "lease lost"), 0.0) == (StorageActing(False, 0),)
