"""A running node: transport, record store with persistence, and its supervised protocol actors.

`Node.run` owns everything it starts: the transport, one nursery for in-flight sends,
and a one_for_one supervisor over the membership and dissemination actors. Leaving
`run` (Ctrl-C, `stop()`) announces a graceful leave, then closes it all.

Addresses travel in manifest records; admission decides who may speak anything but the
join protocol; records are acknowledged (over the wire and to local callers) only after
they are in SQLite.
"""

from __future__ import annotations

import logging
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
from actors.supervisor import ChildSpec, Strategy, Supervisor
from mesh.data_dir import DataDir
from mesh.libp2p_transport import Libp2pTransport
from mesh.peer_sender import PeerSender
from mesh.record_database import RecordDatabase
from mesh.transport import JOIN_PROTOCOL, PeerUnreachable, RequestTimeout, Transport, TransportError
from protocols.admission_records import (
    ADMISSION,
    ADMISSION_KINDS,
    REVOCATION,
    admission_body,
    make_admission,
    make_revocation,
)
from protocols.dissemination import DisseminationConfig, DisseminationCore
from protocols.dissemination_messages import DisseminationMessage
from protocols.effects import Event
from protocols.identity import NodeId, NodeIdentity
from protocols.invite import Invite, InviteError, check_invite, check_uses, create_invite, encode_token
from protocols.join_messages import JoinReply, JoinRequest
from protocols.manifest import MANIFEST, NodeManifest, make_manifest, manifest_body
from protocols.membership import MembershipCore, MemberState
from protocols.membership_config import MembershipConfig
from protocols.membership_messages import MembershipMessage
from protocols.record_store import RecordStore
from protocols.records import MAX_KEY_CHARS, Record, sign_record
from protocols.wire import WireError, decode, encode

if TYPE_CHECKING:
    from trio._core._run import TaskStatus

log = logging.getLogger(__name__)

MEMBERSHIP_PROTOCOL = "/ileices/membership/1"
RECORDS_PROTOCOL = "/ileices/records/1"
SOFTWARE_VERSION = "0.1.0"
DEFAULT_LISTEN = "/ip4/127.0.0.1/udp/0/quic-v1"
NOTE = "note"
"""Record kind of an operator's note: a small signed key/value any member may publish."""
MAX_NOTE_BYTES = 4096
DIRECT_PUSH_BELOW = 32
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
        self._db_lock = trio.Lock()
        self._stop = trio.Event()
        self.finished = trio.Event()
        self._manifest_details: dict[str, Any] = {}
        self._accepted_at: OrderedDict[tuple[bytes, str, str], tuple[int, float, str]] = OrderedDict()
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
        self._store = self.data_dir.load_store(self._database)
        try:
            async with Libp2pTransport.open(self.identity, listen=self.config.listen) as transport:
                self._transport = transport
                async with trio.open_nursery() as nursery:
                    self._sender = PeerSender(transport, nursery, self.addresses_of)
                    self._supervisor = Supervisor(
                        [
                            ChildSpec("dissemination", self._dissemination_actor),
                            ChildSpec("membership", self._membership_actor),
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
                    transport.set_handler(JOIN_PROTOCOL, self._serve_join)
                    if join is not None:
                        await self._join(join)
                    # Members first: the manifest (our current addresses) is then pushed
                    # to live peers at once instead of waiting for anti-entropy.
                    await self._meet_known_members()
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
        return ProtocolActor(core, self._send_membership, self._on_member_events)

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
        if invite.body.inviter != self.node_id:
            raise NodeError("this node did not issue that invite; join through its inviter")
        if self.store.ledger.is_member(peer):
            existing = [r for r in self.store.of_kind(ADMISSION) if admission_body(r).member == peer]
            if existing:
                return existing[0]

        def admit(core: DisseminationCore, now: float) -> Record:
            used = sum(
                1
                for r in core.store.of_kind(ADMISSION)
                if r.author == self.node_id and admission_body(r).invite_id == invite.body.invite_id
            )
            check_uses(invite, used)
            seq = core.store.highest_seq(self.node_id) + 1
            record = make_admission(
                self.identity, core.store.mesh_id, seq, peer, invite.body.invite_id, time.time()
            )
            if not core.publish(now, record):
                raise NodeError("the admission record was refused by this node's own store")
            return record

        return await self.call_core("dissemination", admit)  # type: ignore[no-any-return]

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
        membership = self._actor("membership")
        for record in accepted:
            if record.kind == ADMISSION:
                member = admission_body(record).member
                membership.try_send(Command(_adder(member)))
            elif record.kind == MANIFEST and self._sender is not None:
                self._sender.forget(record.author)
            elif record.kind == REVOCATION and self._transport is not None:
                for node in list(self._transport.connected_peers()):
                    if not self.store.ledger.is_member(node):
                        await self._transport.disconnect(node)

    async def _on_member_events(self, events: list[Event]) -> None:
        for event in events:
            log.info("member %s is %s", event.data["node"].hex()[:12], event.data["state"])
        if events and self._supervisor is not None:
            live = await self._live_members()
            self._actor("dissemination").try_send(Command(lambda core, now: core.set_peers(live)))

    def _remember_acceptance(self, record: Record, at: float, via: str) -> None:
        slot = record.slot
        self._accepted_at[slot] = (record.seq, at, via)
        self._accepted_at.move_to_end(slot)
        if len(self._accepted_at) > ACCEPTANCE_LOG_SIZE:
            self._accepted_at.popitem(last=False)

    async def _live_members(self) -> list[NodeId]:
        core = self._supervisor.child("membership").core if self._supervisor else None  # type: ignore[union-attr]
        return list(core.live_members()) if core is not None else []

    # ---- joining, leaving, publishing -------------------------------------------------------------

    async def _join(self, invite: Invite) -> None:
        check_invite(invite, mesh=self.store.mesh_id, now=time.time())
        inviter = invite.body.inviter
        started = time.monotonic()
        try:
            await self.transport.connect(inviter, list(invite.body.addresses))
            request = JoinRequest(invite, self._public_addresses())
            reply = decode(await self.transport.request(inviter, JOIN_PROTOCOL, encode(request)), JoinReply)
        except (PeerUnreachable, RequestTimeout) as exc:
            raise NodeError(
                f"cannot reach the inviter at {', '.join(invite.body.addresses)}: {exc}"
            ) from None
        except (TransportError, WireError) as exc:
            raise NodeError(f"the inviter could not answer the join request: {exc}") from None
        if not reply.admitted:
            raise NodeError(f"the inviter refused: {reply.problem}")
        result = self.store.merge(reply.records)
        async with self._db_lock:
            database = self._database
            assert database is not None
            await trio.to_thread.run_sync(database.save, result)
        if not self.store.ledger.is_member(self.node_id):
            raise NodeError("the inviter answered, but its records do not admit this node")
        log.info(
            "admitted by %s in %.0f ms (%d records)",
            inviter.hex()[:12],
            (time.monotonic() - started) * 1000,
            len(reply.records),
        )
        await self.call_core("membership", lambda core, now: core.join(now, [inviter]))

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
            record: Record = make(core.store.highest_seq(self.node_id) + 1)
            if not core.publish(now, record):
                raise NodeError(f"this node's store refused its own {record.kind} record")
            return record

        return await self.call_core("dissemination", author)  # type: ignore[no-any-return]

    async def _meet_known_members(self) -> None:
        members = [m for m in self.store.ledger.members() if m != self.node_id]

        def add_all(core: MembershipCore, now: float) -> None:
            for member in members:
                core.add_member(now, member)

        await self.call_core("membership", add_all)

    async def _leave(self) -> None:
        with trio.move_on_after(self.config.leave_grace + 1):
            await self.call_core("membership", lambda core, now: core.leave(now))
            await trio.sleep(self.config.leave_grace)

    # ---- operator actions (control endpoint) -----------------------------------------------------

    def make_invite(self, ttl_s: float, uses: int) -> str:
        invite = create_invite(
            self.identity,
            self.store.mesh_id,
            os.urandom(16),
            time.time() + ttl_s,
            uses,
            self._public_addresses(),
        )
        return encode_token(invite)

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
            "volunteer": await self.hardware("status"),
            "listen": self._public_addresses(),
            "counters": {
                "records": {k.value: v for k, v in store.counters.items()},
                "transport": self.transport.counters.snapshot(),
                "sender": dict(self._sender.counters) if self._sender else {},
                "node": dict(self.counters),
                "mailbox_dropped": {
                    name: self._actor(name).dropped for name in ("membership", "dissemination")
                },
            },
        }


@dataclass(frozen=True)
class _Refusal:
    """An expected refusal raised inside an actor's command, carried out as a value."""

    error: NodeError | InviteError


def _adder(member: NodeId) -> Any:
    def add(core: MembershipCore, now: float) -> bool:
        return core.add_member(now, member)

    return add
