"""Placement: rendezvous hashing is stable under churn, spreads shares over nodes and machines, and
skips nodes without room; the parameter and threshold formulas."""

from __future__ import annotations

import random

import pytest

from protocols.common.hashing import digest
from protocols.common.identity import NodeId
from protocols.storage.placement import (
    Candidate,
    adapt_parameters,
    address_group,
    choose_holders,
    hrw_rank,
    repair_threshold,
)

NODES = [digest(f"node-{i}".encode()) for i in range(300)]
ARTIFACTS = [digest(f"artifact-{i}".encode()) for i in range(40)]
SHARE = 1000


def room(nodes: list[NodeId], free: int = 10**6, groups: int | None = None) -> dict[NodeId, Candidate]:
    """Candidates with `free` bytes each, on their own machine or spread over `groups` machines."""
    return {node: Candidate(free, f"10.0.0.{i % groups if groups else i}") for i, node in enumerate(nodes)}


def test_hrw_rank_is_a_deterministic_order_independent_of_the_input_order() -> None:
    shuffled = NODES[:50]
    random.Random(3).shuffle(shuffled)
    rank = hrw_rank(ARTIFACTS[0], 2, NODES[:50])
    assert rank == hrw_rank(ARTIFACTS[0], 2, shuffled)
    assert sorted(rank) == sorted(NODES[:50])
    assert rank != hrw_rank(ARTIFACTS[0], 3, NODES[:50])  # each share index has its own ranking
    assert rank != hrw_rank(ARTIFACTS[1], 2, NODES[:50])


def test_hrw_removing_a_node_keeps_the_others_order() -> None:
    rank = hrw_rank(ARTIFACTS[0], 0, NODES[:50])
    gone = rank[3]
    assert hrw_rank(ARTIFACTS[0], 0, [n for n in NODES[:50] if n != gone]) == [n for n in rank if n != gone]


def test_choose_holders_puts_each_share_on_a_distinct_node() -> None:
    for artifact in ARTIFACTS:
        chosen = choose_holders(artifact, range(10), room(NODES), exclude=set(), share_size=SHARE)
        assert sorted(chosen) == list(range(10))
        assert len(set(chosen.values())) == 10


def test_removing_a_node_moves_only_its_own_shares() -> None:
    candidates = room(NODES)
    moved_elsewhere = 0
    for artifact in ARTIFACTS:
        before = choose_holders(artifact, range(10), candidates, exclude=set(), share_size=SHARE)
        for gone in list(before.values())[:3]:
            after = choose_holders(
                artifact,
                range(10),
                {n: c for n, c in candidates.items() if n != gone},
                exclude=set(),
                share_size=SHARE,
            )
            moved = {i for i in before if before[i] != after[i]}
            assert {i for i in before if before[i] == gone} <= moved
            moved_elsewhere += len(moved) - 1
    # A replacement that was another share's first choice moves that one too: rare (about n / c per
    # removal, 10 / 300 here: about 4 of these 120 removals).
    assert moved_elsewhere <= 10


def test_adding_a_node_takes_only_shares_it_ranks_first_for() -> None:
    candidates = room(NODES[:200])
    newcomer = NODES[250]
    for artifact in ARTIFACTS:
        before = choose_holders(artifact, range(10), candidates, exclude=set(), share_size=SHARE)
        after = choose_holders(
            artifact,
            range(10),
            {**candidates, newcomer: Candidate(10**6, "10.9.9.9")},
            exclude=set(),
            share_size=SHARE,
        )
        assert all(after[i] in (before[i], newcomer) for i in before)


def test_shares_prefer_machines_the_artifact_does_not_use_yet() -> None:
    candidates = room(NODES[:60], groups=4)  # 60 nodes on 4 machines
    for artifact in ARTIFACTS:
        chosen = choose_holders(artifact, range(6), candidates, exclude=set(), share_size=SHARE)
        groups = [candidates[node].address_group for node in chosen.values()]
        assert len(set(groups[:4])) == 4  # the first four shares take the four machines
        assert len(set(chosen.values())) == 6  # then machines are shared, never nodes


def test_current_holders_machines_count_as_used() -> None:
    candidates = room(NODES[:60], groups=4)
    for artifact in ARTIFACTS[:10]:
        holders = [n for n in NODES[:60] if candidates[n].address_group in ("10.0.0.0", "10.0.0.1")][:2]
        chosen = choose_holders(artifact, [7, 8], candidates, exclude=set(holders), share_size=SHARE)
        assert {candidates[n].address_group for n in chosen.values()} == {"10.0.0.2", "10.0.0.3"}
        assert not set(chosen.values()) & set(holders)


def test_nodes_without_room_are_skipped() -> None:
    candidates = room(NODES[:30], free=SHARE - 1) | room(NODES[30:33], free=SHARE)
    chosen = choose_holders(ARTIFACTS[0], range(10), candidates, exclude=set(), share_size=SHARE)
    assert set(chosen.values()) == set(NODES[30:33])  # as many shares as fit: 3 of 10
    assert choose_holders(ARTIFACTS[0], range(3), candidates, exclude=set(), share_size=SHARE + 1) == {}


def test_fewer_candidates_than_shares_places_as_many_as_possible() -> None:
    chosen = choose_holders(ARTIFACTS[0], range(10), room(NODES[:4]), exclude={NODES[0]}, share_size=SHARE)
    assert len(chosen) == 3 and set(chosen.values()) == set(NODES[1:4])


@pytest.mark.parametrize(
    ("k", "n", "nodes", "expected"),
    [
        (3, 10, 1000, (3, 10)),
        (3, 10, 10, (3, 10)),
        (3, 10, 5, (2, 5)),
        (3, 10, 2, (1, 2)),
        (3, 10, 1, (1, 1)),
        (3, 10, 0, (1, 1)),
        (8, 10, 100, (8, 10)),  # what was asked, when the mesh is big enough
        (3, 10, 6, (2, 6)),  # k keeps its proportion of n
        (2, 3, 4, (2, 3)),
        (2, 2, 1, (1, 1)),
        (5, 6, 3, (2, 3)),  # at most n - 1: some holder may be lost
        (1, 1, 50, (1, 1)),
    ],
)
def test_adapt_parameters(k: int, n: int, nodes: int, expected: tuple[int, int]) -> None:
    assert adapt_parameters(k, n, nodes) == expected


def test_adapt_parameters_refuses_impossible_requests() -> None:
    for k, n in ((0, 3), (4, 3), (1, 256)):
        with pytest.raises(ValueError):
            adapt_parameters(k, n, 10)


@pytest.mark.parametrize(
    ("k", "n", "margin", "expected"),
    [
        (3, 10, 0.5, 7),
        (3, 10, 0.0, 3),
        (3, 10, 1.0, 9),  # clamped to n - 1: repair at the first loss
        (1, 2, 0.5, 1),
        (3, 3, 0.5, 2),  # no redundancy: below k, nothing to repair
        (5, 10, 0.5, 8),
    ],
)
def test_repair_threshold(k: int, n: int, margin: float, expected: int) -> None:
    assert repair_threshold(k, n, margin) == expected


@pytest.mark.parametrize(
    ("address", "group"),
    [
        ("/ip4/10.0.0.5/udp/4001/quic-v1/p2p/12D3KooW", "10.0.0.5"),
        ("/ip6/::1/tcp/4001", "::1"),
        ("/dns4/node.example/tcp/4001", "node.example"),
        ("10.0.0.5:4001", "10.0.0.5"),
        ("[::1]:4001", "::1"),
        ("/unix/tmp/socket", "/unix/tmp/socket"),
        ("hostname", "hostname"),
    ],
)
def test_address_group_is_the_host_part(address: str, group: str) -> None:
    assert address_group(address) == group
