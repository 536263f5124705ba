"""Real nodes on loopback: a joiner of a mesh with a long hub chain believes the latest hub as soon as
it is admitted (the inviter's checkpoint), keeps believing it across a restart that finds none of
the early terms in its database, and without the checkpoint still gets there from term 1."""

from __future__ import annotations

import os
import time
from functools import partial
from pathlib import Path

import pytest
import trio

from actors.hardware_daemon import HardwareDaemonConfig
from mesh.data_dir import DATABASE_FILE, DataDir, prepare_joiner
from mesh.joining import HUB_CHECKPOINT_META, Joining
from mesh.node import Node, NodeConfig
from mesh.record_database import RecordDatabase
from protocols.join.invite import Invite, create_invite
from tests.protocols.election.long_chain import LongChain, build_long_chain, write_data_dir

TERMS = 200
LOOPBACK = "/ip4/127.0.0.1/udp/0/quic-v1"


def config() -> NodeConfig:
    return NodeConfig(listen=[LOOPBACK], hardware=HardwareDaemonConfig(benchmark_delay=None))


@pytest.fixture(scope="module")
def long_chain() -> LongChain:
    # A founder that re-elected itself term after term, alone: no other member exists that
    # could be down, so the joiner's anti-entropy always reaches someone who answers.
    return build_long_chain(TERMS, members=0, council_size=1)


async def hub_term(node: Node) -> int:
    view, _, _ = await node.api.hub()
    return 0 if view is None else view.term


async def start_founder(nursery: trio.Nursery, chain: LongChain, path: Path) -> tuple[Node, Invite]:
    founder = Node(DataDir(path), config())
    await nursery.start(founder.run)
    addresses = (await founder.status())["listen"]
    invite = create_invite(
        chain.mesh.founder, chain.mesh.mesh_id, os.urandom(16), time.time() + 300, 1, addresses
    )
    return founder, invite


async def stop(*nodes: Node) -> None:
    for node in nodes:
        node.stop()
        await node.finished.wait()


def test_a_joiner_believes_the_latest_hub_at_once_and_again_after_a_restart_without_history(
    tmp_path: Path, long_chain: LongChain
) -> None:
    founder_dir, joiner_dir = tmp_path / "founder", tmp_path / "joiner"
    write_data_dir(long_chain, founder_dir)

    async def join_then_stop() -> None:
        async with trio.open_nursery() as nursery:
            founder, invite = await start_founder(nursery, long_chain, founder_dir)
            prepare_joiner(joiner_dir, long_chain.mesh.mesh_id)
            joiner = Node(DataDir(joiner_dir), config())
            await nursery.start(partial(joiner.run, join=invite))
            # Believed during the join, before anti-entropy brought any hub record.
            assert await hub_term(joiner) >= TERMS
            assert (await joiner.status())["counters"]["node"]["hub_checkpoint_adopted"] == 1
            await stop(joiner, founder)

    trio.run(join_then_stop)
    database = RecordDatabase(joiner_dir / DATABASE_FILE)
    try:
        assert database.get_meta(HUB_CHECKPOINT_META)
        # None of the terms before the checkpoint's is left (as if they had never arrived).
        database.save_records(
            [], [r for r in long_chain.records() if r.kind in ("hub", "vote") and int(r.key) < TERMS]
        )
    finally:
        database.close()

    async def restart_alone() -> None:
        joiner = Node(DataDir(joiner_dir), config())
        async with trio.open_nursery() as nursery:
            await nursery.start(joiner.run)
            # Re-anchored while starting: its store holds no term before the checkpoint's.
            assert await hub_term(joiner) >= TERMS
            assert (await joiner.status())["counters"]["node"]["hub_checkpoint_adopted"] == 1
            await stop(joiner)

    trio.run(restart_alone)


def test_without_the_checkpoint_a_joiner_verifies_from_term_one(
    tmp_path: Path, long_chain: LongChain, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Joining, "trust_checkpoint", False)
    founder_dir, joiner_dir = tmp_path / "founder", tmp_path / "joiner"
    write_data_dir(long_chain, founder_dir)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            founder, invite = await start_founder(nursery, long_chain, founder_dir)
            prepare_joiner(joiner_dir, long_chain.mesh.mesh_id)
            joiner = Node(DataDir(joiner_dir), config())
            await nursery.start(partial(joiner.run, join=invite))
            with trio.fail_after(60):
                while await hub_term(joiner) < TERMS:
                    await trio.sleep(0.05)
            status = await joiner.status()
            assert not any(name.startswith("hub_checkpoint") for name in status["counters"]["node"])
            await stop(joiner, founder)

    trio.run(main)
