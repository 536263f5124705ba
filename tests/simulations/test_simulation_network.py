"""The network model: latency distribution, loss, bandwidth queueing and partitions."""

from __future__ import annotations

import random
import statistics

import pytest

from simulations.network_model import NetworkConfig, NetworkModel, Region

A, B, C = b"a" * 32, b"b" * 32, b"c" * 32


def test_latency_median_and_inter_region_extra() -> None:
    model = NetworkModel(
        NetworkConfig(
            latency_median_s=0.05,
            latency_sigma=0.5,
            regions=(Region("eu"), Region("us")),
            inter_region_s={("eu", "us"): 0.1},
        ),
        random.Random(1),
    )
    model.place(A, "eu")
    model.place(B, "eu")
    model.place(C, "us")
    same = [model.arrival(0.0, A, B, 100) for _ in range(4000)]
    cross = [model.arrival(0.0, A, C, 100) for _ in range(4000)]
    assert statistics.median(t for t in same if t is not None) == pytest.approx(0.05, rel=0.05)
    assert statistics.median(t for t in cross if t is not None) == pytest.approx(0.15, rel=0.05)


def test_loss_rate() -> None:
    model = NetworkModel(NetworkConfig(loss=0.2), random.Random(2))
    lost = sum(model.arrival(0.0, A, B, 10) is None for _ in range(10_000))
    assert 1800 < lost < 2200 and model.dropped_loss == lost


def test_bandwidth_queues_a_nodes_messages_behind_each_other() -> None:
    model = NetworkModel(
        NetworkConfig(latency_median_s=0.01, latency_sigma=0.0, bandwidth_bytes_per_s=1000.0),
        random.Random(3),
    )
    first = model.arrival(0.0, A, B, 500)
    second = model.arrival(0.0, A, C, 500)
    other_sender = model.arrival(0.0, B, A, 500)
    assert first == pytest.approx(0.51) and second == pytest.approx(1.01)
    assert other_sender == pytest.approx(0.51)


def test_partition_blocks_between_groups_only_while_in_force_and_heals() -> None:
    model = NetworkModel(NetworkConfig(), random.Random(4))
    model.partition([frozenset({A}), frozenset({B})], start=1.0, end=5.0)
    assert model.arrival(0.5, A, B, 10) is not None
    assert model.arrival(2.0, A, B, 10) is None
    assert model.arrival(2.0, A, C, 10) is not None  # C is in no group
    model.heal(3.0)
    assert model.arrival(3.5, A, B, 10) is not None
    assert model.dropped_partition == 1


def test_bad_configs_are_refused() -> None:
    with pytest.raises(ValueError, match="loss"):
        NetworkConfig(loss=1.5)
    with pytest.raises(ValueError, match="unknown region"):
        NetworkConfig(inter_region_s={("eu", "mars"): 0.1})
