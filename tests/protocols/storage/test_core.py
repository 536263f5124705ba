"""The storage core driven directly (no event loop): repair after deaths, most at-risk first; losses;
audits; freeing on tombstones and expiry; and a member's forged or lying records."""

from __future__ import annotations

import random
import time
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

from protocols.common.hashing import digest
from protocols.common.identity import NodeId
from protocols.common.wire import encode
from protocols.records.manifest import NodeManifest, make_manifest
from protocols.records.record import Record
from protocols.storage.config import StorageConfig
from protocols.storage.core import StorageCore
from protocols.storage.events import ArtifactLost, AuditDue, AuditFailed, FreeShares, RepairDue
from protocols.storage.records import (
    ARTIFACT,
    PLACEMENT,
    STORAGE,
    ArtifactBody,
    Holding,
    PlacementBody,
    StorageBody,
)
from tests.protocols.storage.world import MESH, WALL, World, artifact_id, body


def quiet(**fields: Any) -> StorageConfig:
    """A config whose audits (every 10^6 s) stay out of the way of a test about something else."""
    return StorageConfig(**{"audit_interval_s": 1e6, **fields})


def make_core(
    world: World,
    node: NodeId | None = None,
    config: StorageConfig | None = None,
    *,
    acting: bool = True,
    seed: int = 1,
    hub_of: dict[int, NodeId] | None = None,
) -> StorageCore:
    """A core for `node` (default: `ids[0]`, the hub) with every member live and the wall clock set."""
    hubs = hub_of if hub_of is not None else {}
    core = StorageCore(node or world.ids[0], random.Random(seed), config or quiet(), hub_of=hubs.get)
    core.set_wall_clock(WALL)
    core.set_live_members(0.0, world.ids)
    if acting:
        core.set_acting(0.0, True, 1)
    return core


def hold(world: World, core: StorageCore, node: NodeId, more: Iterable[tuple[bytes, int]]) -> None:
    """Add `more` to what `node`'s storage record lists and feed the re-published record."""
    offer = core.storage_offer(node)
    held = [(h.artifact_id, h.index) for h in offer.holdings] if offer is not None else []
    core.on_record(0.0, world.storage(node, [*held, *more]))


def upload(
    world: World,
    core: StorageCore,
    owner: NodeId,
    name: str,
    holders: Sequence[NodeId],
    *,
    k: int = 3,
    created_at: float = 0.0,
    expires_at: float = 0.0,
) -> bytes:
    """Artifact `name`, share i on `holders[i]`: its artifact and placement records, and the holdings."""
    artifact = artifact_id(name)
    core.on_record(
        0.0,
        world.artifact(owner, artifact, body(k, len(holders), created_at=created_at, expires_at=expires_at)),
    )
    core.on_record(0.0, world.placement(owner, artifact, holders))
    for index, holder in enumerate(holders):
        hold(world, core, holder, [(artifact, index)])
    return artifact


def offer_storage(world: World, core: StorageCore, nodes: Iterable[NodeId]) -> None:
    for node in nodes:
        if core.storage_offer(node) is None:
            core.on_record(0.0, world.storage(node))


def run(core: StorageCore, until: float, start: float = 0.0) -> list[Any]:
    """Tick the core at its deadlines from `start` to `until`; everything it reported."""
    effects: list[Any] = []
    now = start
    while True:
        core.tick(now)
        effects += core.drain()
        deadline = core.next_deadline()
        if deadline is None or deadline > until:
            return effects
        now = max(now, deadline)


def of(kind: type, effects: list[Any]) -> list[Any]:
    return [effect for effect in effects if isinstance(effect, kind)]


def test_a_healthy_artifact_needs_nothing() -> None:
    world = World(20)
    core = make_core(world)
    offer_storage(world, core, world.ids)
    artifact = upload(world, core, world.ids[1], "a", world.ids[2:12])
    assert of(RepairDue, run(core, 100.0)) == []
    view = core.artifact(artifact)
    assert view is not None
    assert (view.owner, view.healthy, view.survives, view.k, view.n) == (world.ids[1], 10, 7, 3, 10)
    assert view.holders == {i: (world.ids[2 + i],) for i in range(10)}
    assert view.placement_generation == 1 and view.placement == tuple(world.ids[2:12])
    assert len(core.storage_nodes()) == 20


def test_a_death_starts_a_repair_at_once_most_at_risk_first() -> None:
    world = World(40)
    config = quiet(max_concurrent_repairs=1)
    core = make_core(world, config=config)
    offer_storage(world, core, world.ids)
    a = upload(world, core, world.ids[1], "a", world.ids[2:12])  # loses 3 shares: 7 left
    b = upload(world, core, world.ids[1], "b", [*world.ids[2:5], *world.ids[20:27]])  # loses 4: 6 left
    c = upload(world, core, world.ids[1], "c", world.ids[30:40])  # untouched
    assert run(core, 100.0) == []
    for dead in world.ids[2:5]:
        core.member_changed(100.0, dead, False)
    core.member_changed(100.0, world.ids[20], False)
    assert core.next_deadline() == 100.0  # at once, not at the next periodic check
    repairs = of(RepairDue, run(core, 100.0, start=100.0))
    assert [r.artifact_id for r in repairs] == [b]  # the most at risk, and only one slot
    repair = repairs[0]
    assert (repair.healthy, repair.k, repair.n, repair.generation, repair.owner) == (
        6,
        3,
        10,
        2,
        world.ids[1],
    )
    assert repair.missing == (0, 1, 2, 3)
    assert repair.sources == tuple((i, world.ids[17 + i]) for i in range(4, 10))
    assert [index for index, _node in repair.targets] == [0, 1, 2, 3]
    holders = set(world.ids[2:5]) | set(world.ids[20:27])
    assert not {node for _i, node in repair.targets} & holders
    assert all(node not in world.ids[2:5] and node != world.ids[20] for _i, node in repair.targets)

    for index, node in repair.targets:  # the new holders publish what they now hold
        hold(world, core, node, [(b, index)])
    core.repair_finished(101.0, b, ok=True)
    later = of(RepairDue, run(core, 110.0, start=101.0))
    assert [r.artifact_id for r in later] == [a]
    assert later[0].missing == (0, 1, 2) and len({node for _i, node in later[0].targets}) == 3
    assert c not in [r.artifact_id for r in later]
    assert core.counters["repairs_due"] == 2 and core.counters["repairs_done"] == 1


def test_repairs_in_flight_are_not_repeated_and_a_timeout_frees_the_slot() -> None:
    world = World(30)
    core = make_core(world, config=quiet(repair_timeout_s=50.0))
    offer_storage(world, core, world.ids)
    a = upload(world, core, world.ids[1], "a", world.ids[2:12])
    for dead in world.ids[2:6]:
        core.member_changed(10.0, dead, False)
    assert [r.artifact_id for r in of(RepairDue, run(core, 59.0, start=10.0))] == [a]
    retried = of(RepairDue, run(core, 70.0, start=59.0))
    assert [r.artifact_id for r in retried] == [a] and core.counters["repair_timeouts"] == 1
    core.repair_finished(71.0, a, ok=False)
    assert [r.artifact_id for r in of(RepairDue, run(core, 80.0, start=71.0))] == [a]
    assert core.counters["repairs_failed"] == 1


def test_a_repair_counts_once_the_new_holders_publish() -> None:
    world = World(30)
    core = make_core(world)
    offer_storage(world, core, world.ids)
    a = upload(world, core, world.ids[1], "a", world.ids[2:12])
    for dead in world.ids[2:6]:
        core.member_changed(10.0, dead, False)
    (repair,) = of(RepairDue, run(core, 10.0, start=10.0))
    for index, node in repair.targets:
        hold(world, core, node, [(a, index)])
    core.on_record(
        11.0, world.placement(world.ids[0], a, [dict(repair.targets).get(i, b"") for i in range(10)], 2, 1)
    )
    core.repair_finished(11.0, a, ok=True)
    assert of(RepairDue, run(core, 200.0, start=11.0)) == []
    view = core.artifact(a)
    assert view is not None and view.healthy == 10
    assert view.placement_generation == 1  # hub_of does not know term 1's hub: its placement does not count


def test_an_artifact_below_k_is_lost_once() -> None:
    world = World(20)
    core = make_core(world)
    offer_storage(world, core, world.ids)
    a = upload(world, core, world.ids[1], "a", world.ids[2:12])
    for dead in world.ids[2:10]:
        core.member_changed(5.0, dead, False)
    effects = run(core, 200.0, start=5.0)
    assert of(ArtifactLost, effects) == [ArtifactLost(a, 2, 3)]
    assert of(RepairDue, effects) == []
    view = core.artifact(a)
    assert view is not None and (view.healthy, view.survives) == (2, -1)
    assert core.counters["artifacts_lost"] == 1
    core.member_changed(201.0, world.ids[2], True)  # back: 3 shares, rebuildable, and repaired
    assert [r.artifact_id for r in of(RepairDue, run(core, 300.0, start=201.0))] == [a]


def test_a_young_artifact_is_not_judged_before_its_holders_publish() -> None:
    world = World(20)
    core = make_core(world, config=quiet(settle_s=30.0))
    offer_storage(world, core, world.ids)
    a = artifact_id("young")
    core.on_record(0.0, world.artifact(world.ids[1], a, body(created_at=WALL - 5.0)))
    assert run(core, 20.0) == []  # no holder has published yet, but it is 5 s old
    core.set_wall_clock(WALL + 30.0)
    assert of(ArtifactLost, run(core, 60.0, start=20.0)) == [ArtifactLost(a, 0, 3)]


def test_audits_pick_live_holders_and_a_failure_counts_against_the_share() -> None:
    world = World(20)
    config = StorageConfig(audit_interval_s=10.0)
    core = make_core(world, config=config)
    offer_storage(world, core, world.ids)
    a = upload(world, core, world.ids[1], "a", world.ids[2:12])
    core.member_changed(0.0, world.ids[2], False)
    audits = of(AuditDue, run(core, 1000.0))
    assert len(audits) >= 90
    assert {audit.holder for audit in audits} <= set(world.ids[3:12])
    assert all(audit.artifact_id == a and 0 <= audit.chunk < 3 for audit in audits)
    assert all(audit.holder == world.ids[2 + audit.index] for audit in audits)
    assert len({audit.holder for audit in audits}) == 9  # every live holder gets audited

    core.audit_result(1000.0, world.ids[5], a, 3, ok=False)
    assert core.drain() == [AuditFailed(world.ids[5], a, 3, 1)]
    assert core.failures(world.ids[5]) == 1 and core.failures(world.ids[6]) == 0
    view = core.artifact(a)
    assert view is not None and view.healthy == 8 and 3 not in view.holders
    core.audit_result(1001.0, world.ids[5], a, 3, ok=True)  # a later audit passes: it counts again
    view = core.artifact(a)
    assert view is not None and view.healthy == 9
    assert core.failures(world.ids[5]) == 1  # the reputation keeps the failure


def test_an_audit_penalty_runs_out() -> None:
    world = World(20)
    core = make_core(world, config=quiet(audit_penalty_s=100.0))
    offer_storage(world, core, world.ids)
    a = upload(world, core, world.ids[1], "a", world.ids[2:12])
    core.audit_result(0.0, world.ids[2], a, 0, ok=False)
    core.drain()
    assert core.artifact(a).healthy == 9  # type: ignore[union-attr]
    run(core, 101.0)
    assert core.artifact(a).healthy == 10  # type: ignore[union-attr]


def test_a_storage_record_lying_about_holdings_is_caught_only_by_audits() -> None:
    world = World(30)
    core = make_core(world, config=StorageConfig(audit_interval_s=5.0))
    offer_storage(world, core, world.ids)
    a = upload(world, core, world.ids[1], "a", world.ids[2:12])
    liar = world.ids[29]
    hold(world, core, liar, [(a, i) for i in range(10)])  # claims every share, holds none
    for dead in world.ids[2:8]:  # 6 real holders die: 4 real shares left, the liar "covers" the rest
        core.member_changed(10.0, dead, False)
    effects = run(core, 400.0, start=10.0)
    assert of(RepairDue, effects) == [] and of(ArtifactLost, effects) == []
    assert core.artifact(a).healthy == 10  # type: ignore[union-attr]
    audits = [audit for audit in of(AuditDue, effects) if audit.holder == liar]
    assert audits, "the liar is audited like every holder"
    for index in range(6):  # the auditor's challenges of the shares it does not hold fail
        core.audit_result(400.0, liar, a, index, ok=False)
    failed = of(AuditFailed, core.drain())
    assert [f.failures for f in failed] == [1, 2, 3, 4, 5, 6]
    (repair,) = of(RepairDue, run(core, 410.0, start=400.0))
    assert repair.healthy == 4 and repair.missing == (0, 1, 2, 3, 4, 5)
    assert liar not in {node for _i, node in repair.targets}
    assert [index for index, node in repair.sources if node == liar] == [6, 7, 8, 9]  # not yet caught there


def test_only_the_hub_checks_and_audits() -> None:
    world = World(20)
    core = make_core(world, acting=False)
    offer_storage(world, core, world.ids)
    upload(world, core, world.ids[1], "a", world.ids[2:12])
    for dead in world.ids[2:10]:
        core.member_changed(1.0, dead, False)
    assert core.next_deadline() is None
    assert run(core, 1000.0) == []
    core.set_acting(1000.0, True, 4)
    assert of(ArtifactLost, run(core, 1000.0, start=1000.0))  # a new hub checks everything at once
    core.set_acting(1001.0, False, 4)
    assert core.next_deadline() is None


def test_a_tombstone_frees_the_shares_a_node_holds_once() -> None:
    world = World(20)
    holder = world.ids[3]
    core = make_core(world, holder, acting=False)
    a = upload(world, core, world.ids[1], "a", world.ids[2:12])  # share 1 is the holder's own
    core.drain()
    core.on_record(1.0, world.artifact(world.ids[1], a, body(deleted=True)))
    assert core.drain() == [FreeShares(a, "deleted")]
    core.on_record(2.0, world.artifact(world.ids[1], a, body(deleted=True)))
    hold(world, core, holder, [])
    assert core.drain() == []
    view = core.artifact(a)
    assert view is not None and view.deleted


def test_a_tombstone_by_another_member_deletes_nothing() -> None:
    world = World(20)
    holder, owner, thief = world.ids[3], world.ids[1], world.ids[19]
    core = make_core(world, holder, acting=False)
    core.set_local_holdings([])
    a = upload(world, core, owner, "a", world.ids[2:12])
    core.set_local_holdings([(a, 1)])
    core.on_record(1.0, world.artifact(thief, a, body(k=1, n=2)))  # the same key in the thief's slot
    core.on_record(2.0, world.artifact(thief, a, body(k=1, n=2, deleted=True)))
    assert core.drain() == []
    view = core.artifact(a)
    assert view is not None and view.owner == owner and not view.deleted and view.n == 10
    thieves = core.artifact(a, owner=thief)
    assert thieves is not None and thieves.deleted
    assert core.counters["second_owners"] == 1
    core.on_record(3.0, world.artifact(owner, a, body(deleted=True)))
    assert core.drain() == [FreeShares(a, "deleted")]  # once no owner keeps it


def test_the_hub_follows_the_first_owner_not_a_later_copy() -> None:
    world = World(30)
    core = make_core(world)
    offer_storage(world, core, world.ids)
    a = upload(world, core, world.ids[1], "a", world.ids[2:12])
    core.on_record(1.0, world.artifact(world.ids[29], a, body(k=9, n=10)))  # needs 9: would be "at risk"
    assert of(RepairDue, run(core, 100.0, start=1.0)) == []
    assert len(core.artifacts()) == 2


def test_expiry_frees_shares_on_the_wall_clock() -> None:
    world = World(20)
    holder = world.ids[3]
    core = make_core(world, holder, acting=False)
    a = upload(world, core, world.ids[1], "a", world.ids[2:12], expires_at=WALL + 100.0)
    b = upload(world, core, world.ids[1], "b", world.ids[2:12])
    core.drain()
    assert core.next_deadline() == 100.0  # wall time left, on this core's clock
    assert run(core, 99.0, start=50.0) == []
    core.set_wall_clock(WALL + 100.0)
    assert run(core, 100.0, start=100.0) == [FreeShares(a, "expired")]
    assert core.next_deadline() is None
    view = core.artifact(a)
    assert view is not None and view.expired and not view.deleted
    assert core.artifact(b).expired is False  # type: ignore[union-attr]


def test_an_artifact_that_arrives_expired_is_freed_and_never_repaired() -> None:
    world = World(20)
    holder = world.ids[3]
    core = make_core(world, holder)
    offer_storage(world, core, world.ids)
    a = upload(world, core, world.ids[1], "a", world.ids[2:12], created_at=10.0, expires_at=20.0)
    assert core.drain() == [FreeShares(a, "expired")]
    for dead in world.ids[4:12]:
        core.member_changed(1.0, dead, False)
    assert [e for e in run(core, 100.0, start=1.0) if not isinstance(e, AuditDue)] == []


def test_a_placement_by_a_non_owner_non_hub_is_ignored() -> None:
    world = World(20)
    owner, hub, other = world.ids[1], world.ids[0], world.ids[19]
    core = make_core(world, hub_of={5: hub})
    offer_storage(world, core, world.ids)
    a = upload(world, core, owner, "a", world.ids[2:12])
    forged = [other] * 10
    core.on_record(1.0, world.placement(other, a, forged, generation=99, term=0))  # owner-made? no
    core.on_record(1.0, world.placement(other, a, forged, generation=99, term=5))  # hub of term 5? no
    assert core.counters["placements_forged"] == 2
    core.on_record(1.0, world.placement(other, a, forged, generation=99, term=7))  # term 7: hub unknown yet
    assert core.artifact(a).placement_generation == 1  # type: ignore[union-attr]
    core.on_record(2.0, world.placement(hub, a, world.ids[10:20], generation=3, term=5))
    view = core.artifact(a)
    assert view is not None and view.placement_generation == 3 and view.placement == tuple(world.ids[10:20])
    for dead in world.ids[2:6]:
        core.member_changed(3.0, dead, False)
    (repair,) = of(RepairDue, run(core, 3.0, start=3.0))
    assert repair.generation == 4


def test_a_hub_placement_counts_once_its_term_is_known() -> None:
    world = World(20)
    owner, hub = world.ids[1], world.ids[0]
    hubs: dict[int, NodeId] = {}
    core = make_core(world, hub_of=hubs)
    a = upload(world, core, owner, "a", world.ids[2:12])
    core.on_record(1.0, world.placement(hub, a, world.ids[10:20], generation=2, term=3))
    assert core.artifact(a).placement_generation == 1  # type: ignore[union-attr]
    hubs[3] = hub
    assert core.artifact(a).placement_generation == 2  # type: ignore[union-attr]
    assert core.placement(a) == PlacementBody(2, 3, list(world.ids[10:20]))


def test_placements_for_another_share_count_are_ignored() -> None:
    world = World(20)
    hub = world.ids[0]
    core = make_core(world, hub_of={2: hub})
    a = upload(world, core, world.ids[1], "a", world.ids[2:12])
    core.on_record(1.0, world.placement(hub, a, world.ids[2:5], generation=5, term=2))
    assert core.artifact(a).placement_generation == 1  # type: ignore[union-attr]


def test_malformed_records_are_counted_never_raised() -> None:
    world = World(5)
    core = make_core(world)
    author = world.ids[1]
    key = artifact_id("a").hex()
    fields = [getattr(body(), f) for f in ArtifactBody.__struct_fields__]
    bad_artifact = encode([*fields[:-3], 5.0, 1.0, False])
    records = [
        world.raw(author, ARTIFACT, key, b"\xff\x00garbage"),
        world.raw(author, ARTIFACT, key, bad_artifact),  # expires before it was created
        world.raw(author, ARTIFACT, "not-hex", encode(body())),
        world.raw(author, PLACEMENT, key, encode([0, 0, []])),
        world.raw(author, STORAGE, "", encode([1, 2])),
        world.raw(author, STORAGE, "key", encode(StorageBody(1, 0, True, "", []))),
        world.raw(author, "manifest", "", b"\x01"),
    ]
    for record in records:
        core.on_record(0.0, record)
    assert core.counters["malformed_artifact"] == 3
    assert core.counters["malformed_placement"] == 1
    assert core.counters["malformed_storage"] == 2
    assert core.counters["malformed_manifest"] == 1
    assert core.artifacts() == [] and core.storage_nodes() == {}
    core.on_record(0.0, world.raw(author, "something-else", "", b"\xff"))  # another kind: not ours


def test_older_records_do_not_override_newer_ones() -> None:
    world = World(5)
    core = make_core(world)
    node = world.ids[1]
    a = artifact_id("a")
    old_storage = world.storage(node, [(a, 0)])
    new_storage = world.storage(node, [])
    old_artifact = world.artifact(node, a, body())
    new_artifact = world.artifact(node, a, body(deleted=True))
    for record in (new_storage, old_storage, new_artifact, old_artifact):
        core.on_record(0.0, record)
    assert core.storage_offer(node) == StorageBody(10**9, 0, True, "", [])
    assert core.artifact(a).deleted  # type: ignore[union-attr]
    assert core.counters["stale_records"] == 2


def test_place_uses_live_accepting_nodes_with_room_and_this_node() -> None:
    world = World(12)
    me = world.ids[0]
    core = make_core(world, me, acting=False)
    core.set_live_members(0.0, world.ids[1:])  # membership does not list this node itself
    core.on_record(0.0, world.storage(me))
    for node in world.ids[1:4]:
        core.on_record(0.0, world.storage(node))
    core.on_record(0.0, world.storage(world.ids[4], accepting=False))
    core.on_record(0.0, world.storage(world.ids[5], offered=0))
    core.on_record(0.0, world.storage(world.ids[6], offered=100, used=90))
    core.on_record(0.0, world.storage(world.ids[7]))
    core.member_changed(0.0, world.ids[7], False)
    assert set(core.storage_nodes()) == {me, *world.ids[1:4], world.ids[6]}
    assert core.storage_nodes()[world.ids[6]].free_bytes == 10
    placed = core.place(artifact_id("x"), 10, share_size=1000)
    assert set(placed.values()) == {me, *world.ids[1:4]} and len(placed) == 4
    assert set(core.place(artifact_id("x"), 3, 1000, exclude=[me]).values()) <= set(world.ids[1:4])


def test_manifests_name_each_node_s_machine() -> None:
    world = World(8)
    core = make_core(world)
    for index, person in enumerate(world.people):
        manifest = NodeManifest([f"/ip4/10.0.0.{index % 2}/udp/4001/quic-v1"], "test", 0.0)
        core.on_record(0.0, make_manifest(person, MESH, world.seq(person.node_id), manifest))
        core.on_record(0.0, world.storage(person.node_id))
    groups = {candidate.address_group for candidate in core.storage_nodes().values()}
    assert groups == {"10.0.0.0", "10.0.0.1"}
    placed = core.place(artifact_id("x"), 2, 1000)
    assert {core.storage_nodes()[node].address_group for node in placed.values()} == groups


def test_same_inputs_give_the_same_effects() -> None:
    def scenario(seed: int) -> list[Any]:
        world = World(40)
        core = make_core(world, seed=seed, config=StorageConfig(audit_interval_s=3.0))
        offer_storage(world, core, world.ids)
        for i in range(8):
            upload(world, core, world.ids[1], f"a{i}", world.ids[2 + 3 * i : 12 + 3 * i])
        for dead in world.ids[5:11]:
            core.member_changed(7.0, dead, False)
        return run(core, 200.0)

    assert scenario(3) == scenario(3)


def test_a_death_touches_only_the_dead_node_s_artifacts_at_scale() -> None:
    """1000 nodes, 2000 artifacts of 10 shares: records in, a full check, then one death."""
    nodes = [digest(f"n{i}".encode()) for i in range(1000)]
    owner = nodes[0]
    rng = random.Random(5)
    holdings: dict[NodeId, list[Holding]] = {node: [] for node in nodes}
    artifact_records = []
    for i in range(2000):
        a = digest(f"a{i}".encode())
        artifact_records.append(fake(owner, ARTIFACT, a.hex(), encode(body(name=f"a{i}"))))
        for index, node in enumerate(rng.sample(nodes, 10)):
            holdings[node].append(Holding(a, index))
    storage_records = [
        fake(node, STORAGE, "", encode(StorageBody(10**9, 0, True, "", held)))
        for node, held in holdings.items()
    ]
    started = time.perf_counter()
    core = StorageCore(nodes[1], random.Random(1))
    core.set_wall_clock(WALL)
    for node in nodes:
        core.member_changed(0.0, node, True)
    for record in [*artifact_records, *storage_records]:
        core.on_record(0.0, record)
    core.set_acting(0.0, True, 1)
    assert run(core, 0.0) == []
    dead = nodes[500]
    core.member_changed(1.0, dead, False)
    assert sorted(core._dirty) == sorted({h.artifact_id for h in holdings[dead]})
    assert of(RepairDue, run(core, 1.0, start=1.0)) == []  # 9 of 10 left: above the threshold
    idle = StorageCore(nodes[2], random.Random(1))  # a non-acting core fed the same records keeps no index
    for record in [*artifact_records, *storage_records]:
        idle.on_record(0.0, record)
    assert idle._index is None
    assert time.perf_counter() - started < 10.0


def fake(author: NodeId, kind: str, key: str, payload: bytes, seq: int = 1) -> Record:
    """An unsigned record (the core trusts the store to have checked signatures)."""
    return Record(MESH, author, kind, key, seq, payload, bytes(64))


def test_storage_bodies_share_holdings_between_cores() -> None:
    world = World(3)
    record = world.storage(world.ids[1], [(artifact_id("a"), 2)])
    first, second = make_core(world, acting=False), make_core(world, world.ids[2], acting=False)
    first.on_record(0.0, record)
    second.on_record(0.0, msgspec.msgpack.decode(encode(record), type=Record))
    assert first.storage_offer(world.ids[1]) is second.storage_offer(world.ids[1])


def test_a_live_set_without_the_holders_starts_a_repair_at_once() -> None:
    world = World(30)
    core = make_core(world)
    offer_storage(world, core, world.ids)
    a = upload(world, core, world.ids[1], "a", world.ids[2:12])
    assert run(core, 47.0) == []
    assert core.next_deadline() == 50.0  # the next periodic check
    core.receive(47.0, world.ids[5], b"anything")  # storage has no messages of its own
    assert core.drain() == []
    core.set_live_members(47.0, [node for node in world.ids if node not in world.ids[2:6]])
    assert core.next_deadline() == 47.0
    (repair,) = of(RepairDue, run(core, 47.0, start=47.0))
    assert repair.artifact_id == a and repair.missing == (0, 1, 2, 3)


def test_a_freed_slot_starts_the_next_repair_at_once_but_not_the_same_one_again() -> None:
    world = World(40)
    core = make_core(world, config=quiet(max_concurrent_repairs=1, check_interval_s=30.0))
    offer_storage(world, core, world.ids)
    a = upload(world, core, world.ids[1], "a", world.ids[2:12])
    b = upload(world, core, world.ids[1], "b", world.ids[20:30])
    for dead in [*world.ids[2:6], *world.ids[20:24]]:
        core.member_changed(100.0, dead, False)
    (first,) = of(RepairDue, run(core, 100.0, start=100.0))
    core.repair_finished(101.0, first.artifact_id, ok=True)  # its holders' records not in yet
    assert core.next_deadline() == 101.0  # not the check 30 s later
    (second,) = of(RepairDue, run(core, 101.0, start=101.0))
    assert {first.artifact_id, second.artifact_id} == {a, b}
