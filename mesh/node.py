"""A running node, assembled: its database, transport, supervised actors and the services over them.

`Node.run` owns everything it starts: the transport, one nursery for in-flight sends,
and a one_for_one supervisor over the membership, dissemination, election and hardware
actors (plus, while this node is the elected hub, the hub role's subtree). Leaving
`run` (Ctrl-C, `stop()`) announces a graceful leave, then closes it all.

This module only assembles; each job has its own module:

| job | module |
| --- | --- |
| which protocol carries which core's messages | `mesh.routes` |
| the database and its lock | `mesh.record_persister` |
| what the node does with its cores' events (wiring, persistence, logs) | `mesh.core_links` |
| answering join requests | `mesh.join_service` |
| joining, restarting, the manifest, leaving | `mesh.joining` |
| starting and stopping the hub role | `mesh.hub_role` |
| noticing that this process itself is starved | `mesh.loop_lag` |
| artifacts: put, get, repair, audits, the share store | `mesh.storage_service` |
| what an operator can ask | `mesh.operator_api` |

Addresses travel in manifest records; admission decides who may speak anything but the
join protocol; records are acknowledged (over the wire and to local callers) only after
they are in SQLite.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING, Any

import trio

from actors.hardware_daemon import HardwareDaemon, HardwareDaemonConfig
from actors.protocol_actor import ProtocolActor
from actors.supervisor import ChildSpec, Strategy, Supervisor
from mesh.core_links import CoreLinks
from mesh.data_dir import DataDir
from mesh.hub_role import HubContext, HubRoleManager
from mesh.join_service import JoinService
from mesh.joining import Joining
from mesh.libp2p_transport import Libp2pTransport
from mesh.loop_lag import watch_loop_lag
from mesh.node_parts import DISSEMINATION, ELECTION, HARDWARE, MEMBERSHIP, STORAGE, NodeError, NodeParts
from mesh.operator_api import AcceptanceLog, OperatorApi
from mesh.peer_sender import PeerSender
from mesh.record_persister import RecordPersister
from mesh.routes import attach_answers, route_handlers, sender_for
from mesh.share_transfer import SHARES_PROTOCOL, STORAGE_PROTOCOL
from mesh.storage_service import StorageService
from mesh.transport import JOIN_PROTOCOL, Transport
from protocols.common.identity import NodeId, NodeIdentity
from protocols.common.sans_io import SansIOCore
from protocols.dissemination.config import DisseminationConfig
from protocols.dissemination.core import DisseminationCore
from protocols.election.config import ElectionConfig
from protocols.election.core import ElectionCore
from protocols.join.invite import Invite
from protocols.membership.config import MembershipConfig
from protocols.membership.core import MembershipCore
from protocols.records.seq_allocator import SeqAllocator
from protocols.records.store import RecordStore
from protocols.storage.config import StorageConfig
from protocols.storage.core import StorageCore

if TYPE_CHECKING:
    from trio._core._run import TaskStatus

__all__ = ["Node", "NodeConfig", "NodeError"]

log = logging.getLogger(__name__)

DEFAULT_LISTEN = "/ip4/127.0.0.1/udp/0/quic-v1"
DIRECT_PUSH_BELOW = 32
LEASE_RECORD_INTERVAL = 30.0


def software_version() -> str:
    """This build's version, from the installed package's metadata."""
    try:
        return metadata.version("ileices")
    except metadata.PackageNotFoundError:
        return "0+unknown"


@dataclass
class NodeConfig:
    listen: list[str] = field(default_factory=lambda: [DEFAULT_LISTEN])
    membership: MembershipConfig = field(default_factory=MembershipConfig)
    dissemination: DisseminationConfig = field(
        # Meshes of friends and coworkers are small: there, an author's direct push to
        # every live peer is both faster (one hop) and cheaper (n - 1 messages instead of
        # about 3n) than forward-once gossip (see `DisseminationConfig.direct_push_below`).
        default_factory=lambda: DisseminationConfig(direct_push_below=DIRECT_PUSH_BELOW)
    )
    election: ElectionConfig = field(
        # Lease records only inform nodes outside the council (council members hear every
        # renewal), and each one is a record every node stores and syncs; one every 30 s
        # instead of every second keeps that stream negligible and the record set still
        # between renewals, which is what status comparisons across nodes rely on.
        default_factory=lambda: ElectionConfig(lease_record_interval=LEASE_RECORD_INTERVAL)
    )
    hardware: HardwareDaemonConfig = field(default_factory=HardwareDaemonConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    call_timeout: float = 10.0
    leave_grace: float = 1.0


def _no_sends(peer: NodeId, message: object) -> None:
    """The storage core sends nothing itself: its bytes move through `mesh.storage_service`."""


class Node:
    def __init__(self, data_dir: DataDir, config: NodeConfig | None = None) -> None:
        self.data_dir = data_dir
        self.config = config or NodeConfig()
        self.identity: NodeIdentity = data_dir.identity()
        self.started_at = time.time()
        self.finished = trio.Event()
        self._stop = trio.Event()
        self._api: OperatorApi | None = None
        self._storage: StorageService | None = None

    @property
    def node_id(self) -> NodeId:
        return self.identity.node_id

    @property
    def api(self) -> OperatorApi:
        """What an operator can ask of this node (`mesh.operator_api`), while it runs."""
        if self._api is None:
            raise NodeError("the node is not running")
        return self._api

    @property
    def storage(self) -> StorageService:
        """This node's storage shard (`mesh.storage_service`), while it runs."""
        if self._storage is None:
            raise NodeError("the node is not running")
        return self._storage

    async def status(self) -> dict[str, Any]:
        return await self.api.status()

    def stop(self) -> None:
        """Ask `run` to leave gracefully and return."""
        self._stop.set()

    async def run(
        self, *, join: Invite | None = None, task_status: TaskStatus[Any] = trio.TASK_STATUS_IGNORED
    ) -> None:
        database = self.data_dir.open_database()
        persister = RecordPersister(database)
        try:
            loaded = self.data_dir.load_checked(database)
            quarantined = {"this_start": loaded.quarantined, "ever": database.quarantined_count()}
            problem = None if join is not None else self.data_dir.membership_problem(loaded.store)
            if problem is not None:
                raise NodeError(problem)
            async with (
                Libp2pTransport.open(self.identity, listen=self.config.listen) as transport,
                trio.open_nursery() as nursery,
            ):
                await self._run_assembled(
                    transport, nursery, persister, loaded.store, quarantined, join, task_status
                )
        finally:
            self._api = None
            self._storage = None
            persister.close()
            self.finished.set()

    async def _run_assembled(
        self,
        transport: Transport,
        nursery: trio.Nursery,
        persister: RecordPersister,
        store: RecordStore,
        quarantined: dict[str, int],
        join: Invite | None,
        task_status: TaskStatus[Any],
    ) -> None:
        config = self.config
        node_id = self.node_id
        # The child specs' factories close over names bound further down (`links`, `parts`);
        # the supervisor starts its children only once everything is assembled.

        def protocol_child(name: str, make_core: Callable[[], SansIOCore]) -> ChildSpec:
            """A protocol's actor: its core, its route's outbound path, the shared event handler."""
            return ChildSpec(
                name, lambda: ProtocolActor(make_core(), sender_for(name, sender.send), links.on_events)
            )

        supervisor = Supervisor(
            [
                protocol_child(DISSEMINATION, lambda: dissemination_core()),
                protocol_child(MEMBERSHIP, lambda: membership_core()),
                protocol_child(ELECTION, lambda: election_core()),
                ChildSpec(HARDWARE, lambda: hardware_daemon()),
                ChildSpec(STORAGE, lambda: ProtocolActor(storage_core(), _no_sends, links.on_events)),
            ],
            strategy=Strategy.ONE_FOR_ONE,
            intensity=5,
            period=30.0,
            name="node",
        )
        sender = PeerSender(transport, nursery, lambda node: parts.addresses_of(node))
        parts = NodeParts(
            self.identity,
            store,
            persister,
            transport,
            sender,
            supervisor,
            SeqAllocator(store, node_id),
            config.call_timeout,
        )
        attach_answers(parts)  # answers carried in datagram replies; legacy ids for old peers
        acceptances = AcceptanceLog()
        api = OperatorApi(parts, acceptances, self.data_dir.path, quarantined, lambda: storage.status())
        join_service = JoinService(parts, lambda: hub_role.admissions(), api.acting_term)
        hub_role = HubRoleManager(
            HubContext(api.acting_term, join_service.inviter_away, join_service.hub_publish_admission),
            parts.counters,
        )
        links = CoreLinks(parts, hub_role, acceptances.remember)
        storage = StorageService(
            parts,
            self.data_dir.path,
            config.storage,
            acting_term=api.acting_term,
            current_hub=links.current_hub,
        )
        links.storage = storage
        joining = Joining(parts, links.live_peers, software_version(), self.started_at, config.leave_grace)
        membership_starts = 0

        def dissemination_core() -> DisseminationCore:
            return DisseminationCore(node_id, store, random.Random(), config.dissemination)

        def membership_core() -> MembershipCore:
            nonlocal membership_starts
            membership_starts += 1
            core = MembershipCore(node_id, random.Random(), config.membership)
            if membership_starts > 1:
                # A restarted membership actor starts with an empty table; left so, the
                # node stops probing anyone and drops out of everyone's view. Contact
                # every admitted member again, as a first start does: SWIM's probes and
                # push-pull rebuild the states (the departed are suspected and buried again).
                links.membership_restarted()
                now = trio.current_time()
                for member in store.ledger.members():
                    if member != node_id:
                        core.add_member(now, member)
                for revoked in store.ledger.removed():  # barred for good, as in the core it replaces
                    core.remove_member(now, revoked)
                parts.counters["membership_restarted"] += 1
                log.warning("membership restarted: contacting every admitted member again")
            return core

        def election_core() -> ElectionCore:
            core = ElectionCore(
                self.identity, store, random.Random(), config.election, next_seq=parts.next_seq
            )
            # Membership reports changes only; a (re)started election needs today's view at once.
            core.set_live_members(trio.current_time(), links.live_peers())
            # The ledger judges the hub's revocations by this core's chain.
            links.election_started(core)
            return core

        def storage_core() -> StorageCore:
            core = StorageCore(node_id, random.Random(), config.storage, hub_of=links.hub_of)
            now = trio.current_time()
            core.set_wall_clock(time.time())
            # Records and liveness as they are now; changes follow through the wiring.
            for record in store:
                core.on_record(now, record)
            core.set_live_members(now, links.live_peers())
            return core

        def hardware_daemon() -> HardwareDaemon:
            return HardwareDaemon(self.data_dir.path, joining.publish_hardware_details, config.hardware)

        nursery.start_soon(hub_role.run, supervisor)
        await nursery.start(supervisor.run)
        transport.set_admission_check(store.ledger.is_member, [JOIN_PROTOCOL])
        for protocol, handler in route_handlers(parts).items():
            transport.set_handler(protocol, handler)
        transport.set_handler(JOIN_PROTOCOL, join_service.serve)
        transport.set_handler(STORAGE_PROTOCOL, storage.transfer.serve)
        transport.set_bulk_handler(SHARES_PROTOCOL, storage.transfer.receive)
        await nursery.start(storage.run)
        self._storage = storage
        if join is not None:
            await joining.join(join)
        # Members first: the manifest (our current addresses) is then pushed to live peers
        # at once instead of waiting for anti-entropy.
        if await joining.meet_known_members(restarting=join is None):
            nursery.start_soon(joining.widen_if_unanswered)
        nursery.start_soon(joining.keep_live_view)
        nursery.start_soon(watch_loop_lag, links.report_loop_lag, parts.counters)
        await joining.publish_manifest()
        self._api = api
        task_status.started(self)
        await self._stop.wait()
        await joining.leave()
        supervisor.request_stop()
        nursery.cancel_scope.cancel()
