"""A running node: transport, record store with persistence, and its supervised protocol actors.

`Node.run` owns everything it starts: the transport, one nursery for in-flight sends,
and a one_for_one supervisor over the membership, dissemination and election actors
(plus, while this node is the elected hub, the hub role's subtree). Leaving `run`
(Ctrl-C, `stop()`) announces a graceful leave, then closes it all.

Addresses travel in manifest records; admission decides who may speak anything but the
join protocol; records are acknowledged (over the wire and to local callers) only after
they are in SQLite.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from actors.actor import ActorError
from actors.hardware_daemon import HardwareDaemon, HardwareDaemonConfig
from actors.protocol_actor import Command, Inbound, ProtocolActor
from actors.supervisor import ChildSpec, Strategy, Supervisor, SupervisorError
from mesh.data_dir import DataDir
from mesh.hub_role import ADMISSIONS_CHILD, HUB_CHILD, HubAdmit, HubContext, HubRefusal, hub_supervisor
from mesh.libp2p_transport import Libp2pTransport
from mesh.live_view import (
    LIVE_VIEW_META,
    LIVE_VIEW_SAVE_S,
    RESTART_ANSWER_WAIT_S,
    encode_live_view,
    restart_contacts,
)
from mesh.peer_sender import PeerSender
from mesh.record_database import RecordDatabase
from mesh.transport import JOIN_PROTOCOL, PeerUnreachable, RequestTimeout, Transport, TransportError
from protocols.common.effects import Event
from protocols.common.identity import NodeId, NodeIdentity
from protocols.common.wire import WireError, decode, encode
from protocols.dissemination.config import DisseminationConfig
from protocols.dissemination.core import DisseminationCore
from protocols.dissemination.messages import DisseminationMessage
from protocols.election.config import ElectionConfig
from protocols.election.core import ElectionCore
from protocols.election.messages import ElectionMessage
from protocols.join.invite import (
    HubContact,
    Invite,
    InviteError,
    InviteProblem,
    check_invite,
    check_uses,
    create_invite,
    encode_token,
)
from protocols.join.messages import JoinReply, JoinRequest
from protocols.membership.config import MembershipConfig
from protocols.membership.core import MembershipCore, MemberState
from protocols.membership.messages import MembershipMessage
from protocols.records.admission_records import (
    ADMISSION,
    ADMISSION_KINDS,
    REVOCATION,
    admission_body,
    introduces_member,
    make_admission,
    make_revocation,
)
from protocols.records.manifest import MANIFEST, NodeManifest, make_manifest, manifest_body
from protocols.records.record import MAX_KEY_CHARS, Record, sign_record
from protocols.records.seq_allocator import SeqAllocator
from protocols.records.store import RecordStore

if TYPE_CHECKING:
    from trio._core._run import TaskStatus

log = logging.getLogger(__name__)

MEMBERSHIP_PROTOCOL = "/ileices/membership/1"
RECORDS_PROTOCOL = "/ileices/records/1"
ELECTION_PROTOCOL = "/ileices/election/1"
SOFTWARE_VERSION = "0.1.0"
DEFAULT_LISTEN = "/ip4/127.0.0.1/udp/0/quic-v1"
NOTE = "note"
"""Record kind of an operator's note: a small signed key/value any member may publish."""
MAX_NOTE_BYTES = 4096
DIRECT_PUSH_BELOW = 32
LEASE_RECORD_INTERVAL = 30.0
ACCEPTANCE_LOG_SIZE = 4096
"""How many recent (author, kind, key) acceptance times `lookup` remembers."""
JOIN_STARTER_KINDS = ADMISSION_KINDS | {MANIFEST}
"""What a join reply carries: the admission chain (so the joiner can check it is admitted
and verify everyone else) and manifests (addresses). The rest comes by anti-entropy in
bounded deltas, so a join reply stays small however much state the mesh holds."""


class NodeError(Exception):
    """The node cannot do what was asked (join refused, not the founder, ...)."""


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
    call_timeout: float = 10.0
    leave_grace: float = 1.0


class Node:
    def __init__(self, data_dir: DataDir, config: NodeConfig | None = None) -> None:
        self.data_dir = data_dir
        self.config = config or NodeConfig()
        self.identity: NodeIdentity = data_dir.identity()
        self._database: RecordDatabase | None = None
        self._store: RecordStore | None = None
        self._transport: Transport | None = None
        self._sender: PeerSender | None = None
        self._supervisor: Supervisor | None = None
        self._seqs: SeqAllocator | None = None
        self._db_lock = trio.Lock()
        self._stop = trio.Event()
        self.finished = trio.Event()
        self._manifest_details: dict[str, Any] = {}
        self._accepted_at: OrderedDict[tuple[bytes, str, str], tuple[int, float, str]] = OrderedDict()
        self._hub_role_changes, self._hub_role_changes_out = trio.open_memory_channel[_HubRoleChange](
            math.inf
        )
        self._hub_logged: tuple[int, bytes] | None = None
        self._membership_starts = 0
        self._quarantined: dict[str, int] = {}
        """Damaged records set aside when the database was loaded (`mesh.database_check`)."""
        self.counters: Counter[str] = Counter()
        """Inbound input this node dropped (malformed, mailbox full), shown by `status`."""
        self.started_at = time.time()

    # ---- what other parts of the node read ------------------------------------------------

    @property
    def node_id(self) -> NodeId:
        return self.identity.node_id

    @property
    def store(self) -> RecordStore:
        if self._store is None:
            raise NodeError("the node is not running")
        return self._store

    @property
    def transport(self) -> Transport:
        if self._transport is None:
            raise NodeError("the node is not running")
        return self._transport

    def addresses_of(self, node: NodeId) -> list[str]:
        record = self.store.get(node, MANIFEST, "")
        if record is None:
            return []
        try:
            return list(manifest_body(record).addresses)
        except WireError:
            return []

    def stop(self) -> None:
        """Ask `run` to leave gracefully and return."""
        self._stop.set()

    # ---- running ----------------------------------------------------------------------------

    async def run(
        self, *, join: Invite | None = None, task_status: TaskStatus[Any] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self._database = self.data_dir.open_database()
        try:
            loaded = self.data_dir.load_checked(self._database)
            self._store = loaded.store
            self._quarantined = {"this_start": loaded.quarantined, "ever": self._database.quarantined_count()}
            problem = None if join is not None else self.data_dir.membership_problem(self._store)
        except BaseException:
            self._database.close()
            raise
        if problem is not None:
            self._database.close()
            raise NodeError(problem)
        self._seqs = SeqAllocator(self._store, self.node_id)
        try:
            async with Libp2pTransport.open(self.identity, listen=self.config.listen) as transport:
                self._transport = transport
                async with trio.open_nursery() as nursery:
                    self._sender = PeerSender(transport, nursery, self.addresses_of)
                    nursery.start_soon(self._apply_hub_role_changes)
                    self._supervisor = Supervisor(
                        [
                            ChildSpec("dissemination", self._dissemination_actor),
                            ChildSpec("membership", self._membership_actor),
                            ChildSpec("election", self._election_actor),
                            ChildSpec("hardware", self._hardware_daemon),
                        ],
                        strategy=Strategy.ONE_FOR_ONE,
                        intensity=5,
                        period=30.0,
                        name="node",
                    )
                    await nursery.start(self._supervisor.run)
                    transport.set_admission_check(self.store.ledger.is_member, [JOIN_PROTOCOL])
                    transport.set_handler(MEMBERSHIP_PROTOCOL, self._serve_membership)
                    transport.set_handler(RECORDS_PROTOCOL, self._serve_records)
                    transport.set_handler(ELECTION_PROTOCOL, self._serve_election)
                    transport.set_handler(JOIN_PROTOCOL, self._serve_join)
                    if join is not None:
                        await self._join(join)
                    # Members first: the manifest (our current addresses) is then pushed
                    # to live peers at once instead of waiting for anti-entropy.
                    if await self._meet_known_members(restarting=join is None):
                        nursery.start_soon(self._widen_if_unanswered)
                    nursery.start_soon(self._keep_live_view)
                    await self._publish_manifest()
                    task_status.started(self)
                    await self._stop.wait()
                    await self._leave()
                    self._supervisor.request_stop()
                    nursery.cancel_scope.cancel()
        finally:
            self._transport = None
            if self._database is not None:
                self._database.close()
            self.finished.set()

    def _dissemination_actor(self) -> ProtocolActor:
        core = DisseminationCore(self.node_id, self.store, random.Random(), self.config.dissemination)
        return ProtocolActor(core, self._send_records, self._on_record_events)

    def _membership_actor(self) -> ProtocolActor:
        core = MembershipCore(self.node_id, random.Random(), self.config.membership)
        self._membership_starts += 1
        if self._membership_starts > 1:
            # A restarted membership actor starts with an empty table; left so, the node
            # stops probing anyone and drops out of everyone's view. Contact every
            # admitted member again, as a first start does: SWIM's probes and push-pull
            # rebuild the states (the departed are suspected and buried again).
            now = trio.current_time()
            for member in self.store.ledger.members():
                if member != self.node_id:
                    core.add_member(now, member)
            self.counters["membership_restarted"] += 1
            log.warning("membership restarted: contacting every admitted member again")
        return ProtocolActor(core, self._send_membership, self._on_member_events)

    def _election_actor(self) -> ProtocolActor:
        core = ElectionCore(
            self.identity, self.store, random.Random(), self.config.election, next_seq=self.next_seq
        )
        # Membership reports changes only; a (re)started election needs today's view at once.
        core.set_live_members(trio.current_time(), self._live_now())
        return ProtocolActor(core, self._send_election, self._on_election_events)

    def next_seq(self) -> int:
        """The next seq for a record this node signs: the one allocator everything shares."""
        if self._seqs is None:
            raise NodeError("the node is not running")
        return self._seqs()

    def _hardware_daemon(self) -> HardwareDaemon:
        return HardwareDaemon(self.data_dir.path, self._publish_hardware_details, self.config.hardware)

    async def _publish_hardware_details(self, details: dict[str, Any]) -> None:
        self._manifest_details = details
        if self._transport is not None and self.store.ledger.is_member(self.node_id):
            await self._publish_manifest()

    async def hardware(self, message: object) -> Any:
        """Ask the hardware daemon (status, pause, resume, stop_all, SetLimits, RunTask)."""
        return await self._actor("hardware").call(message, timeout=self.config.call_timeout)

    def _send_records(self, peer: NodeId, message: object) -> None:
        if self._sender is not None:
            self._sender.send(peer, RECORDS_PROTOCOL, message)

    def _send_membership(self, peer: NodeId, message: object) -> None:
        if self._sender is not None:
            self._sender.send(peer, MEMBERSHIP_PROTOCOL, message)

    def _send_election(self, peer: NodeId, message: object) -> None:
        if self._sender is not None:
            self._sender.send(peer, ELECTION_PROTOCOL, message)

    def _actor(self, name: str) -> Any:
        if self._supervisor is None:
            raise NodeError("the node is not running")
        return self._supervisor.ref(name)

    async def call_core(self, name: str, action: Any) -> Any:
        """Run `action(core, now)` inside actor `name` ("membership" or "dissemination").

        A `NodeError` or `InviteError` the action raises is a refusal, not a crash: it is
        carried out of the actor and raised here. Raised inside, it would crash and
        restart the actor, and a handful of bad join requests would exhaust the
        supervisor's restart intensity and take the whole node down.
        """

        def guarded(core: Any, now: float) -> Any:
            try:
                return action(core, now)
            except (NodeError, InviteError) as exc:
                return _Refusal(exc)

        result = await self._actor(name).call(Command(guarded), timeout=self.config.call_timeout)
        if isinstance(result, _Refusal):
            raise result.error
        return result

    # ---- inbound ------------------------------------------------------------------------------

    async def _serve_membership(self, peer: NodeId, payload: bytes) -> bytes:
        try:
            message: object = decode(payload, MembershipMessage)  # type: ignore[arg-type]
        except WireError:
            self.counters["malformed_membership"] += 1
            return b""
        # try_send: SWIM messages are datagrams; a full mailbox means an overloaded node,
        # and Lifeguard's timeouts already absorb a lost probe.
        if not self._actor("membership").try_send(Inbound(peer, message)):
            self.counters["membership_mailbox_full"] += 1
        return b""

    async def _serve_records(self, peer: NodeId, payload: bytes) -> bytes:
        try:
            message: object = decode(payload, DisseminationMessage)  # type: ignore[arg-type]
        except WireError:
            self.counters["malformed_records"] += 1
            return b""
        # call, not send: the reply (our acknowledgement) goes out once merged records are durable
        await self._actor("dissemination").call(Inbound(peer, message), timeout=self.config.call_timeout)
        return b""

    async def _serve_election(self, peer: NodeId, payload: bytes) -> bytes:
        try:
            message: object = decode(payload, ElectionMessage)  # type: ignore[arg-type]
        except WireError:
            self.counters["malformed_election"] += 1
            return b""
        # try_send: Paxos and lease messages tolerate loss (rounds time out and retry).
        if not self._actor("election").try_send(Inbound(peer, message)):
            self.counters["election_mailbox_full"] += 1
        return b""

    async def _serve_join(self, peer: NodeId, payload: bytes) -> bytes:
        try:
            request = decode(payload, JoinRequest)
            record = await self._admit(peer, request)
        except (WireError, InviteError, NodeError) as exc:
            log.info("join from %s refused: %s", peer.hex()[:12], exc)
            return encode(JoinReply(False, str(exc)))
        except ActorError as exc:
            log.warning("join from %s failed inside this node: %s", peer.hex()[:12], exc)
            return encode(JoinReply(False, f"the inviter could not admit you just now ({exc}); try again"))
        if request.addresses:
            try:
                await self.transport.connect(peer, list(request.addresses))
            except TransportError as exc:
                log.info("cannot dial new member %s back: %s", peer.hex()[:12], exc)
        await self.call_core("membership", lambda core, now: core.add_member(now, peer))
        starter = [r for r in self.store if r.kind in JOIN_STARTER_KINDS]
        return encode(JoinReply(True, "", [*starter, record]))

    async def _admit(self, peer: NodeId, request: JoinRequest) -> Record:
        invite = request.invite
        check_invite(invite, mesh=self.store.mesh_id, now=time.time())
        self._check_inviter_standing(invite)
        if self.store.ledger.is_member(peer):
            existing = [r for r in self.store.of_kind(ADMISSION) if admission_body(r).member == peer]
            if existing:
                return existing[0]
        if invite.body.inviter == self.node_id:
            return await self._publish_admission(peer, invite)
        # Someone else's invite: only the acting hub's admissions duty may take it, and
        # only while the inviter is away (see protocols/join/invite.py on what "uses" means then).
        admissions = self._hub_admissions()
        if admissions is None:
            raise NodeError(
                "this node did not issue that invite and is not the acting hub; join through its inviter"
            )
        outcome = await admissions.call(HubAdmit(peer, invite), timeout=self.config.call_timeout)
        if isinstance(outcome, HubRefusal):
            raise NodeError(f"this node did not issue that invite; as the hub it refuses: {outcome.reason}")
        return outcome  # type: ignore[no-any-return]

    def _check_inviter_standing(self, invite: Invite) -> None:
        """An invite admits only while its inviter is a member: a revoked member's tokens die
        with it, whether the inviter itself or the hub is asked (the token's signature
        alone cannot say so: only the ledger knows)."""
        inviter = invite.body.inviter
        ledger = self.store.ledger
        if ledger.is_member(inviter):
            return
        if inviter in ledger.revoked():
            raise InviteError(
                InviteProblem.INVITER_NOT_MEMBER,
                f"inviter revoked: {inviter.hex()[:16]} was thrown out of the mesh, so its invites "
                "no longer admit anyone; ask a current member for a new invite",
            )
        raise InviteError(
            InviteProblem.INVITER_NOT_MEMBER,
            f"this node does not know {inviter.hex()[:16]} as a member (its admission may not "
            "have reached this node yet, or its inviter was revoked); try again later or ask "
            "another member for an invite",
        )

    async def _publish_admission(self, peer: NodeId, invite: Invite) -> Record:
        """Count the invite's uses and sign the admission in one step inside the dissemination actor."""

        def admit(core: DisseminationCore, now: float) -> Record:
            # Every admission carrying the invite id counts, whoever signed it: the
            # inviter's and the hub's admissions draw on the same `uses`.
            used = sum(
                1
                for r in core.store.of_kind(ADMISSION)
                if admission_body(r).invite_id == invite.body.invite_id
            )
            check_uses(invite, used)
            record = make_admission(
                self.identity, core.store.mesh_id, self.next_seq(), peer, invite.body.invite_id, time.time()
            )
            if not core.publish(now, record):
                raise NodeError("the admission record was refused by this node's own store")
            return record

        return await self.call_core("dissemination", admit)  # type: ignore[no-any-return]

    # ---- the hub role ---------------------------------------------------------------------------

    def _child(self, name: str) -> Any:
        """The running child `name` of the node's supervisor, or None (not started, or gone)."""
        if self._supervisor is None:
            return None
        try:
            return self._supervisor.child(name)
        except KeyError:
            return None

    def _election_core(self) -> ElectionCore | None:
        child = self._child("election")
        return child.core if isinstance(child, ProtocolActor) else None  # type: ignore[return-value]

    def _acting_term(self) -> int | None:
        core = self._election_core()
        return None if core is None else core.acting_term(trio.current_time())

    def _hub_admissions(self) -> Any:
        hub = self._child(HUB_CHILD)
        if not isinstance(hub, Supervisor) or self._acting_term() is None:
            return None
        return hub.ref(ADMISSIONS_CHILD)

    def _hub_context(self) -> HubContext:
        return HubContext(self._acting_term, self._inviter_away, self._hub_publish_admission)

    async def _inviter_away(self, inviter: NodeId) -> bool:
        def state(core: MembershipCore, now: float) -> str | None:
            info = core.members().get(inviter)
            return None if info is None else str(info.state.value)

        seen = await self.call_core("membership", state)
        # None: membership forgot it (reclaim time after a death or leave) or never heard
        # of it; either way it is not here to admit anyone itself.
        return seen is None or seen in (MemberState.DEAD.value, MemberState.LEFT.value)

    async def _hub_publish_admission(self, peer: NodeId, invite: Invite) -> Record | HubRefusal:
        try:
            return await self._publish_admission(peer, invite)
        except (NodeError, InviteError) as exc:
            return HubRefusal(str(exc))

    async def _start_hub_role(self, term: int) -> None:
        supervisor = self._supervisor
        if supervisor is None or self._child(HUB_CHILD) is not None:
            return
        try:
            await supervisor.start_child(
                ChildSpec(HUB_CHILD, lambda: hub_supervisor(self._hub_context()), shutdown=None)
            )
        except (SupervisorError, ValueError) as exc:
            log.warning("could not start the hub role for term %d: %s", term, exc)
            return
        self.counters["hub_role_started"] += 1
        log.info("this node is the hub of term %d: hub role started", term)

    async def _stop_hub_role(self, reason: str) -> None:
        supervisor = self._supervisor
        if supervisor is None or self._child(HUB_CHILD) is None:
            return
        try:
            await supervisor.terminate_child(HUB_CHILD)
        except (SupervisorError, KeyError, ValueError) as exc:
            log.warning("could not stop the hub role: %s", exc)
            return
        self.counters["hub_role_stopped"] += 1
        log.info("hub role stopped (%s)", reason)

    async def _on_election_events(self, events: list[Event]) -> None:
        for event in events:
            if event.name == "publish":
                await self._publish_for_election(event.data["record"])
            elif event.name == "purged":
                await self._persist_purge(list(event.data["records"]))
            elif event.name == "became_hub":
                self._hub_role_changes.send_nowait(_HubRoleChange(int(event.data["term"]), ""))
            elif event.name == "stepped_down":
                self._hub_role_changes.send_nowait(_HubRoleChange(None, str(event.data["reason"])))
            elif event.name == "hub":
                # The election reports a hub view when it learns a term and again when it
                # first hears that hub's lease; the operator needs one line per new hub.
                named = (int(event.data["term"]), bytes(event.data["hub"]))
                if named != self._hub_logged:
                    self._hub_logged = named
                    log.info(
                        "hub of term %d is %s (council %s)",
                        event.data["term"],
                        event.data["hub"].hex()[:12],
                        ", ".join(member.hex()[:8] for member in event.data["council"]),
                    )
            elif event.name == "standing":
                log.info("standing for hub of term %d (ballot %d)", event.data["term"], event.data["ballot"])
        # A hub role left over from an election actor that crashed while hub (its successor
        # starts without the lease and may never win it back) is stopped once a newer term
        # names another hub; its duties were inert meanwhile, as each checks the lease.
        core = self._election_core()
        view = None if core is None else core.hub_view()
        if view is not None and view.hub != self.node_id and self._child(HUB_CHILD) is not None:
            self._hub_role_changes.send_nowait(_HubRoleChange(None, "another node is hub"))

    async def _apply_hub_role_changes(self) -> None:
        """Start and stop the hub role's subtree, in the order the election decided, from a task
        of its own.

        Never from inside the election actor's event handler: an election that wins (or
        still holds) the lease in its `on_start` emits `became_hub` while the node's
        supervisor is starting its children under the supervisor's lock, and starting
        the hub child from there waited for that same lock forever (a lone founder's
        restart hung). OTP has the same rule: a child must not call its supervisor from
        its own init.
        """
        async for change in self._hub_role_changes_out:
            if change.term is not None:
                await self._start_hub_role(change.term)
            else:
                await self._stop_hub_role(change.reason)

    async def _publish_for_election(self, record: Record) -> None:
        """Store, persist and gossip a record the election signed; awaited, so it is durable before
        the election's messages drained with it go out (a vote must never be sent undurable)."""

        def publish(core: DisseminationCore, now: float) -> bool:
            return core.publish(now, record)

        if not await self.call_core("dissemination", publish):
            self.counters["election_record_refused"] += 1
            log.warning("this node's store refused its own %s record (seq %d)", record.kind, record.seq)

    async def _persist_purge(self, purged: list[Record]) -> None:
        if not purged:
            return
        async with self._db_lock:
            database = self._database
            assert database is not None
            await trio.to_thread.run_sync(database.save_records, [], purged, {})

    # ---- events from the cores ------------------------------------------------------------------

    async def _on_record_events(self, events: list[Event]) -> None:
        accepted = [event.data["record"] for event in events if event.name == "accepted"]
        purged = [record for event in events if event.name == "purged" for record in event.data["records"]]
        clock: dict[NodeId, int] = {}
        for event in events:
            if event.name == "clock":
                clock.update(event.data["changes"])
        async with self._db_lock:
            database = self._database
            assert database is not None
            await trio.to_thread.run_sync(database.save_records, accepted, purged, clock)
        durable_at = time.time()
        for event in events:
            if event.name == "accepted":
                self._remember_acceptance(event.data["record"], durable_at, str(event.data["via"]))
        if accepted and not self._actor("election").try_send(Command(_record_feeder(accepted))):
            # Rare (1024 batches queued); a restarted election reloads everything from the store.
            self.counters["election_mailbox_full"] += 1
        membership = self._actor("membership")
        for record in accepted:
            if record.kind == ADMISSION:
                body = admission_body(record)
                if introduces_member(body, time.time()):
                    membership.try_send(Command(_adder(body.member)))
            elif record.kind == MANIFEST and self._sender is not None:
                self._sender.forget(record.author)
            elif record.kind == REVOCATION and self._transport is not None:
                for node in list(self._transport.connected_peers()):
                    if not self.store.ledger.is_member(node):
                        await self._transport.disconnect(node)

    async def _on_member_events(self, events: list[Event]) -> None:
        for event in events:
            # Only `member` events carry a state: `member_forgotten` (reclaim time after a
            # death or leave) has just the node. Reading `state` from every event crashed
            # the membership actor a minute after any departure, and its restart came
            # back with an empty member table.
            if event.name == "member":
                log.info("member %s is %s", event.data["node"].hex()[:12], event.data["state"])
            elif event.name == "member_forgotten":
                log.info("member %s forgotten (reclaim time passed)", event.data["node"].hex()[:12])
        if events and self._supervisor is not None:
            live = await self._live_members()
            self._actor("dissemination").try_send(Command(lambda core, now: core.set_peers(live)))
            if not self._actor("election").try_send(Command(_live_setter(live))):
                self.counters["election_mailbox_full"] += 1

    async def _keep_live_view(self) -> None:
        """Save the live set with the records (`mesh.live_view`) when it changed, at most every
        few seconds: a 1000-node mesh under churn changes it every second, and each save is
        an fsync. A crash loses at most the last few seconds of changes to a hint."""
        saved: bytes | None = None
        while True:
            await trio.sleep(LIVE_VIEW_SAVE_S)
            view = encode_live_view([node for node in self._live_now() if node != self.node_id])
            if view == saved:
                continue
            async with self._db_lock:
                database = self._database
                if database is None:
                    return
                await trio.to_thread.run_sync(database.set_meta, LIVE_VIEW_META, view)
            saved = view

    def _remember_acceptance(self, record: Record, at: float, via: str) -> None:
        slot = record.slot
        self._accepted_at[slot] = (record.seq, at, via)
        self._accepted_at.move_to_end(slot)
        if len(self._accepted_at) > ACCEPTANCE_LOG_SIZE:
            self._accepted_at.popitem(last=False)

    async def _live_members(self) -> list[NodeId]:
        return self._live_now()

    def _live_now(self) -> list[NodeId]:
        child = self._child("membership")
        return list(child.core.live_members()) if isinstance(child, ProtocolActor) else []  # type: ignore[attr-defined]

    # ---- joining, leaving, publishing -------------------------------------------------------------

    async def _join(self, invite: Invite) -> None:
        """Ask the inviter to admit this node; when it cannot be reached, the hub the invite names."""
        check_invite(invite, mesh=self.store.mesh_id, now=time.time())
        doors = [(invite.body.inviter, list(invite.body.addresses))]
        doors += [(hub.node, list(hub.addresses)) for hub in invite.hubs if hub.node != invite.body.inviter]
        started = time.monotonic()
        unreachable: list[str] = []
        for index, (door, addresses) in enumerate(doors):
            who = "the inviter" if index == 0 else "the hub"
            try:
                await self.transport.connect(door, addresses)
                request = JoinRequest(invite, self._public_addresses())
                reply = decode(await self.transport.request(door, JOIN_PROTOCOL, encode(request)), JoinReply)
            except (PeerUnreachable, RequestTimeout) as exc:
                unreachable.append(f"{who} at {', '.join(addresses)}: {exc}")
                continue
            except (TransportError, WireError) as exc:
                unreachable.append(f"{who} could not answer the join request: {exc}")
                continue
            if not reply.admitted:
                raise NodeError(f"{who} refused: {reply.problem}")
            await self._take_join_reply(door, reply, started)
            return
        if len(unreachable) == 1 and unreachable[0].startswith("the inviter at"):
            raise NodeError(f"cannot reach {unreachable[0]}")
        raise NodeError("cannot reach " + "; nor ".join(unreachable))

    async def _take_join_reply(self, admitter: NodeId, reply: JoinReply, started: float) -> None:
        result = self.store.merge(reply.records)
        async with self._db_lock:
            database = self._database
            assert database is not None
            await trio.to_thread.run_sync(database.save, result)
        if not self.store.ledger.is_member(self.node_id):
            raise NodeError("the admitting node answered, but its records do not admit this node")
        log.info(
            "admitted by %s in %.0f ms (%d records)",
            admitter.hex()[:12],
            (time.monotonic() - started) * 1000,
            len(reply.records),
        )
        await self.call_core("membership", lambda core, now: core.join(now, [admitter]))

    def _public_addresses(self) -> list[str]:
        return self.transport.listen_addrs()[:8]

    async def _publish_manifest(self) -> None:
        if not self.store.ledger.is_member(self.node_id):
            return
        details = {"pid": os.getpid(), **self._manifest_details}
        manifest = NodeManifest(self._public_addresses(), SOFTWARE_VERSION, self.started_at, details)
        await self.publish(lambda seq: make_manifest(self.identity, self.store.mesh_id, seq, manifest))

    async def publish(self, make: Any) -> Record:
        """Author a record (`make(seq) -> Record`), persist it, then gossip it; returns it."""

        def author(core: DisseminationCore, now: float) -> Record:
            if not core.store.ledger.is_member(self.node_id):
                raise NodeError("this node is not a member of the mesh (never admitted, or revoked)")
            record: Record = make(self.next_seq())
            if not core.publish(now, record):
                raise NodeError(f"this node's store refused its own {record.kind} record")
            return record

        return await self.call_core("dissemination", author)  # type: ignore[no-any-return]

    async def _meet_known_members(self, restarting: bool) -> bool:
        """Tell membership whom to probe: every admitted member on a first start; after a
        restart only those live when this node last looked, and join through a few of them.

        True when that left some admitted members out (see `_widen_if_unanswered`).
        """
        everyone = [m for m in self.store.ledger.members() if m != self.node_id]
        members = everyone
        seeds: list[NodeId] = []
        if restarting:
            async with self._db_lock:
                database = self._database
                assert database is not None
                saved = await trio.to_thread.run_sync(database.get_meta, LIVE_VIEW_META)
            members, seeds = restart_contacts(members, saved, random.Random())
            if saved is not None:
                log.info("restart: contacting %d members live at the last look", len(members))

        def add_all(core: MembershipCore, now: float) -> None:
            for member in members:
                core.add_member(now, member)
            if seeds:
                core.join(now, seeds)

        await self.call_core("membership", add_all)
        return len(members) < len(everyone)

    async def _widen_if_unanswered(self) -> None:
        """A restart contacted only the members it last saw live: if none of them answered,
        contact every admitted member, as a first start does."""
        await trio.sleep(RESTART_ANSWER_WAIT_S)
        answered = await self.call_core("membership", lambda core, now: core.stats["received"] > 0)
        if answered:
            return
        log.info("restart: no member answered in %.0f s; contacting every member", RESTART_ANSWER_WAIT_S)
        await self._meet_known_members(restarting=False)

    async def _leave(self) -> None:
        with trio.move_on_after(self.config.leave_grace + 1):
            await self.call_core("membership", lambda core, now: core.leave(now))
            await trio.sleep(self.config.leave_grace)

    # ---- operator actions (control endpoint) -----------------------------------------------------

    def make_invite(self, ttl_s: float, uses: int) -> str:
        """A token naming this node and, as a second door while it is away, the current hub."""
        if not self.store.ledger.is_member(self.node_id):
            if self.node_id in self.store.ledger.revoked():
                raise NodeError("this node was revoked from the mesh: its invites would admit no one")
            raise NodeError("this node is not (yet) a member of the mesh, so it cannot invite anyone")
        hubs: list[HubContact] = []
        core = self._election_core()
        view = None if core is None else core.hub_view()
        if view is not None and view.hub != self.node_id:
            addresses = self.addresses_of(view.hub)
            if addresses:
                hubs.append(HubContact(view.hub, addresses[:8]))
        invite = create_invite(
            self.identity,
            self.store.mesh_id,
            os.urandom(16),
            time.time() + ttl_s,
            uses,
            self._public_addresses(),
            hubs,
        )
        return encode_token(invite)

    def hub_status(self) -> dict[str, Any] | None:
        """The hub this node believes in, for `status` (None before the founder's first hub record)."""
        core = self._election_core()
        view = None if core is None else core.hub_view()
        if core is None or view is None:
            return None
        now = trio.current_time()
        lease = None if view.lease_expires is None else round(view.lease_expires - now, 3)
        return {
            "node_id": view.hub.hex(),
            "term": view.term,
            "council": [member.hex() for member in view.council],
            "lease_expires_in_s": lease,
            "acting_here": core.acting_term(now) is not None,
            "counters": dict(core.counters),
        }

    async def revoke(self, member: NodeId, reason: str = "") -> Record:
        if self.store.ledger.founder != self.node_id:
            raise NodeError("only the mesh's founder may revoke members in this version")
        if not self.store.ledger.is_member(member):
            raise NodeError(f"{member.hex()[:16]} is not a member")
        last = self.store.highest_seq(member)
        return await self.publish(
            lambda seq: make_revocation(self.identity, self.store.mesh_id, seq, member, last, reason)
        )

    async def publish_note(self, key: str, value: str) -> Record:
        """Publish (or replace) this node's note `key`: a small signed fact every member gets."""
        body = value.encode()
        if not key or len(key) > MAX_KEY_CHARS:
            raise NodeError(f"a note key is 1 to {MAX_KEY_CHARS} characters")
        if len(body) > MAX_NOTE_BYTES:
            raise NodeError(f"a note is at most {MAX_NOTE_BYTES} bytes")
        mesh = self.store.mesh_id
        return await self.publish(lambda seq: sign_record(self.identity, mesh, NOTE, key, seq, body))

    def lookup(self, author: NodeId, kind: str, key: str) -> dict[str, Any] | None:
        """The current record in a slot and, if it arrived recently, when it became durable here
        and how it came (`local`, `push` or `sync`, i.e. anti-entropy).

        `accepted_at` (wall clock) is what lets a benchmark on one machine measure how long
        a record took to reach every node without polling error.
        """
        record = self.store.get(author, kind, key)
        if record is None:
            return None
        seen = self._accepted_at.get(record.slot)
        recent = seen is not None and seen[0] == record.seq
        return {
            "seq": record.seq,
            "body_bytes": len(record.body),
            "accepted_at": seen[1] if seen is not None and recent else None,
            "via": seen[2] if seen is not None and recent else None,
        }

    async def status(self) -> dict[str, Any]:
        def members(core: MembershipCore, now: float) -> dict[NodeId, Any]:
            return core.members()

        infos: dict[NodeId, Any] = await self.call_core("membership", members)
        rows = [
            {
                "node_id": self.node_id.hex(),
                "state": MemberState.ALIVE.value,
                "addrs": self._public_addresses(),
            }
        ]
        for node, info in infos.items():
            if node == self.node_id:
                continue
            rows.append(
                {"node_id": node.hex(), "state": str(info.state.value), "addrs": self.addresses_of(node)}
            )
        store = self.store
        return {
            "node_id": self.node_id.hex(),
            "mesh_id": store.mesh_id.hex(),
            "founder": (store.ledger.founder or b"").hex(),
            "members": rows,
            "records": len(store),
            "clock": {author.hex(): seq for author, seq in store.clock().items()},
            "state_digest": store.state_digest().hex(),
            "hub": self.hub_status(),
            "volunteer": await self.hardware("status"),
            "listen": self._public_addresses(),
            "counters": {
                "records": {k.value: v for k, v in store.counters.items()},
                "refused_clock_claims": {k.value: v for k, v in store.claim_refusals.items()},
                "quarantined_at_load": self._quarantined,
                "transport": self.transport.counters.snapshot(),
                "sender": dict(self._sender.counters) if self._sender else {},
                "node": dict(self.counters),
                "mailbox_dropped": {
                    name: self._actor(name).dropped for name in ("membership", "dissemination", "election")
                },
            },
        }


@dataclass(frozen=True)
class _HubRoleChange:
    """Start the hub role for `term`, or (term None) stop it for `reason`."""

    term: int | None
    reason: str


@dataclass(frozen=True)
class _Refusal:
    """An expected refusal raised inside an actor's command, carried out as a value."""

    error: NodeError | InviteError


def _record_feeder(records: list[Record]) -> Any:
    def feed(core: ElectionCore, now: float) -> None:
        for record in records:
            core.on_record(now, record)

    return feed


def _live_setter(live: list[NodeId]) -> Any:
    def set_live(core: ElectionCore, now: float) -> None:
        core.set_live_members(now, live)

    return set_live


def _adder(member: NodeId) -> Any:
    def add(core: MembershipCore, now: float) -> bool:
        return core.add_member(now, member)

    return add
