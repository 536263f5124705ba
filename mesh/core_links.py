"""What the real node does with its cores' events: persistence, logs, the hub role, and the feeds of
`protocols.wiring` carried to the actors that own the target cores.

The rules that connect one core to another live in `protocols.wiring`, shared with the
simulator; this module only carries their feeds out the actor way (a command in the
target actor's mailbox) and adds what only a real node has: a database, a transport and
an operator reading logs.

Each actor awaits its handler before its messages go out (`ProtocolActor._flush`), so:
- records are durable before dissemination acknowledges or forwards them;
- a record the election signed is stored and gossiped before the votes drained with it
  are sent (a vote must never be sent undurable).

The node's view of who is live is kept here, from `MemberChanged` events: the wiring and
the other services read it instead of reaching into the membership actor's core. A
member membership removed (`MemberRemoved`: its revocation counts) leaves that view, and
its connections are closed.

Revocation: the ledger judges the hub's revocations by the election's hub chain, which
`election_started` attaches each time an election core is built (a restarted node's
store was loaded before its chain existed); a changed chain rechecks them, and whatever
that purges is deleted from disk here, with the next batch of events.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import trio

from actors.protocol_actor import Command
from mesh.hub_role import HubRoleManager
from mesh.node_parts import DISSEMINATION, ELECTION, MEMBERSHIP, STORAGE, NodeError, NodeParts
from mesh.routes import MESH_ROUTES
from protocols.common.effects import Event
from protocols.common.identity import NodeId
from protocols.dissemination.events import ClockAdvanced, RecordAccepted, RecordsPurged
from protocols.dissemination.messages import Push
from protocols.election.events import BecameHub, HubChanged, Standing, SteppedDown
from protocols.membership.events import LIVE_STATES, MemberChanged, MemberForgotten, MemberRemoved
from protocols.records.admission_records import HANDOVER, HUB_REVOCATION, REVOCATION, make_handover
from protocols.records.manifest import MANIFEST
from protocols.records.record import Record
from protocols.records.store import MergeResult
from protocols.storage.events import ArtifactLost, AuditDue, AuditFailed, FreeShares, RepairDue
from protocols.wiring import (
    CarryRevocations,
    ChainTerms,
    CoreWiring,
    ElectionLiveSet,
    Feed,
    IntroduceMember,
    MemberLiveness,
    PublishOwn,
    RecheckRevocations,
    RecordToElection,
    RecordToStorage,
    RemoveMember,
    SetPeers,
    StorageActing,
    StorageLiveness,
    WiringConfig,
)

log = logging.getLogger("mesh.node")

REVOCATION_KINDS = (REVOCATION, HUB_REVOCATION, HANDOVER)
RECORDS_PROTOCOL = next(route.protocol for route in MESH_ROUTES if route.actor == DISSEMINATION)


class StorageEventHandler(Protocol):
    def on_event(self, event: object) -> None: ...


RecordObserver = Callable[[Record, float, str], None]
"""Told of each accepted record once it is durable: (record, wall time, how it came)."""


class CoreLinks:
    def __init__(self, parts: NodeParts, hub_role: HubRoleManager, on_durable: RecordObserver) -> None:
        self._parts = parts
        self._hub_role = hub_role
        self._on_durable = on_durable
        self._live: dict[NodeId, None] = {}
        # The node's election gets the full live set when its actor starts (see
        # `election_started`), and a small real mesh refreshes dissemination's peers at once.
        self.wiring = CoreWiring(
            parts.node_id,
            self.live_peers,
            WiringConfig(peer_refresh_s=0.0),
            election_has_live_set=True,
            revoked=lambda: parts.store.ledger.removed(),
        )
        self._hub_logged: tuple[int, bytes] | None = None
        self._unsaved: list[MergeResult] = []
        self._chain: ChainTerms | None = None
        self.storage: StorageEventHandler | None = None
        """Carries out the storage core's events (`mesh.storage_service`)."""

    # ---- the node's live view -----------------------------------------------------------------

    def live_peers(self) -> list[NodeId]:
        """Alive and suspect members other than this node, as membership last reported."""
        return list(self._live)

    def live_members(self) -> list[NodeId]:
        """`live_peers` and this node."""
        return [self._parts.node_id, *self._live]

    def report_loop_lag(self, lag: float) -> None:
        """This process ran `lag` seconds late: membership's local health should know (Lifeguard)."""
        self._send(MEMBERSHIP, _note_local_lag(lag))

    def hub_of(self, term: int) -> NodeId | None:
        """Who was hub of `term`, as the election's chain says (the storage core checks a
        repairing hub's placement records with it)."""
        return None if self._chain is None else self._chain.hub_of(term)

    def current_hub(self) -> NodeId | None:
        """The hub of the newest term the election's chain believes (None before any)."""
        return None if self._chain is None else self._chain.hub_of(self._chain.latest_term)

    def membership_restarted(self) -> None:
        """A new membership core reports everyone afresh; forget what the old one said."""
        self._live.clear()

    def election_started(self, core: Any) -> None:
        """A new election core was built: the ledger judges the hub's revocations by its chain.

        Synchronous, so that whoever reads the ledger next (the restart's `meet_known_members`)
        sees them applied; what that purged is persisted with the next events, and membership
        is told to drop the revoked at once.
        """
        parts = self._parts
        self._chain = ChainTerms(core.chain)
        result = parts.store.use_hub_terms(self._chain)
        if result.purged or result.clock_changes:
            self._unsaved.append(result)
        for feed in self.wiring.removals():
            if isinstance(feed, RemoveMember):
                self._live.pop(feed.member, None)
                self._send(MEMBERSHIP, _remove_member(feed.member))

    # ---- events in ----------------------------------------------------------------------------------

    async def on_events(self, events: list[Event]) -> None:
        """Every actor's event handler: persist, react, then carry out the wiring's feeds.

        One handler for every core: a new protocol's actor uses it as it is, and its
        events reach other cores through a rule in `protocols.wiring` only.
        """
        accepted: list[RecordAccepted] = []
        purged: list[Record] = []
        clock: dict[NodeId, int] = {}
        for event in events:
            match event:
                case RecordAccepted():
                    accepted.append(event)
                case RecordsPurged(records=records):
                    purged.extend(records)
                case ClockAdvanced(changes=changes):
                    clock.update(changes)
        unsaved, self._unsaved = self._unsaved, []
        for result in unsaved:
            purged.extend(result.purged)
            clock = {**result.clock_changes, **clock}
        if accepted or purged or clock:
            await self._parts.persister.save_records([event.record for event in accepted], purged, clock)
        now, wall_now = trio.current_time(), time.time()
        feeds: list[Feed] = []
        for event in events:
            self._react(event, wall_now)
            feeds.extend(self.wiring.on_event(now, event, wall_now))
        await self._carry_out(_last_peer_list_only(feeds))
        if accepted:
            await self._tell_transport([event.record for event in accepted])

    def _react(self, event: Event, wall_now: float) -> None:
        """What the node itself does with one event: logs, the live view, the hub role."""
        match event:
            case RecordAccepted(record=record, via=via):
                self._on_durable(record, wall_now, via)
            case MemberChanged(node=node, state=state):
                log.info("member %s is %s", node.hex()[:12], state.value)
                if node != self._parts.node_id:
                    if state in LIVE_STATES:
                        self._live[node] = None
                    else:
                        self._live.pop(node, None)
            case MemberForgotten(node=node):
                log.info("member %s forgotten (reclaim time passed)", node.hex()[:12])
            case MemberRemoved(node=node):
                log.info("member %s removed: its revocation counts", node.hex()[:12])
                self._live.pop(node, None)
            case BecameHub(term=term):
                self._hub_role.became_hub(term)
            case SteppedDown(reason=reason):
                self._hub_role.stepped_down(reason)
            case HubChanged(term=term, hub=hub, council=council):
                self._log_hub(term, hub, council)
                if hub != self._parts.node_id:
                    # A hub role left over from an election actor that crashed while hub
                    # (its successor starts without the lease and may never win it back)
                    # stops once another node is hub; its duties were inert meanwhile,
                    # as each checks the lease.
                    self._hub_role.stop_if_running("another node is hub")
            case Standing(term=term, ballot=ballot):
                log.info("standing for hub of term %d (ballot %d)", term, ballot)
            case RepairDue() | AuditDue() | AuditFailed() | ArtifactLost() | FreeShares():
                if self.storage is not None:
                    self.storage.on_event(event)

    async def _tell_transport(self, accepted: Sequence[Record]) -> None:
        """A new manifest may carry new addresses; a revocation closes the revoked's connections."""
        transport = self._parts.transport
        for record in accepted:
            if record.kind == MANIFEST:
                self._parts.sender.forget(record.author)
            elif record.kind in REVOCATION_KINDS:
                removed = set(self._parts.store.ledger.removed())
                for node in list(transport.connected_peers()):
                    # The revoked were told and closed by `_remove`: closing again here could
                    # cut that message short.
                    if not self._parts.store.ledger.is_member(node) and node not in removed:
                        await transport.disconnect(node)

    def _log_hub(self, term: int, hub: NodeId, council: list[NodeId]) -> None:
        # The election reports a hub view when it learns a term and again when it first
        # hears that hub's lease; the operator needs one line per new hub.
        if (term, hub) == self._hub_logged:
            return
        self._hub_logged = (term, hub)
        members = ", ".join(member.hex()[:8] for member in council)
        log.info("hub of term %d is %s (council %s)", term, hub.hex()[:12], members)

    # ---- carrying feeds out ------------------------------------------------------------------------

    async def _carry_out(self, feeds: Sequence[Feed]) -> None:
        """Each feed becomes a command for the actor that owns its core; records for the election
        and liveness changes go in one command per batch (mailboxes are bounded)."""
        to_election: list[Callable[[Any, float], None]] = []
        to_storage: list[Callable[[Any, float], None]] = []
        for feed in feeds:
            match feed:
                case RecordToElection(record=record):
                    to_election.append(_on_record(record))
                case MemberLiveness(member=member, live=live):
                    to_election.append(_member_changed(member, live))
                case ElectionLiveSet(peers=peers):
                    to_election.append(_set_live_members(peers))
                case IntroduceMember(member=member):
                    self._send(MEMBERSHIP, _add_member(member))
                case SetPeers(peers=peers, election=with_election):
                    self._send(DISSEMINATION, _set_peers(peers))
                    if with_election:
                        to_election.append(_set_live_members(peers))
                case PublishOwn(record=record):
                    await self._publish_own(record)
                case RemoveMember(member=member):
                    await self._remove(member)
                case RecheckRevocations():
                    result = self._parts.store.recheck_revocations()
                    if result.purged or result.clock_changes:
                        await self._parts.persister.save(result)
                    await self._carry_out(self.wiring.removals())
                case CarryRevocations(term=term):
                    await self._carry_revocations(term)
                case RecordToStorage(record=record):
                    to_storage.append(_on_record(record))
                case StorageLiveness(member=member, live=live):
                    to_storage.append(_member_changed(member, live))
                case StorageActing(acting=acting, term=term):
                    to_storage.append(_set_acting(acting, term))
        if to_election:
            self._send(ELECTION, _in_order(to_election))
        if to_storage:
            self._send(STORAGE, _in_order(to_storage))

    async def _remove(self, member: NodeId) -> None:
        """A revocation counts: membership drops the member for good, its connections close, and it is
        sent the records that revoke it (nobody gossips with it any more, so it would never learn
        otherwise, and would go on inviting and publishing in vain)."""
        log.info("removing revoked member %s", member.hex()[:12])
        parts = self._parts
        self._live.pop(member, None)
        self._send(MEMBERSHIP, _remove_member(member))
        transport = parts.transport
        if member in transport.connected_peers():
            await transport.disconnect(member)
        key = member.hex()
        verdict = [
            r for r in parts.store if r.kind in REVOCATION_KINDS and (r.kind == HANDOVER or r.key == key)
        ]
        if verdict:
            parts.sender.forget(member)  # dial afresh: the connection was just closed
            parts.sender.send(member, RECORDS_PROTOCOL, Push(verdict))

    async def _carry_revocations(self, term: int) -> None:
        """As new hub of `term`, sign the handover that carries the hub revocations over, if one is due."""
        parts = self._parts
        carried = parts.store.ledger.handover_due(term, parts.node_id)
        if carried is None:
            return
        try:
            record = await parts.publish(
                lambda seq: make_handover(parts.identity, parts.store.mesh_id, seq, term, carried)
            )
        except NodeError as exc:
            parts.counters["handover_refused"] += 1
            log.warning("could not publish the handover of term %d: %s", term, exc)
            return
        log.info("handover of term %d carries %d revocation(s) (seq %d)", term, len(carried), record.seq)

    def _send(self, actor: str, action: Callable[[Any, float], object]) -> None:
        if not self._parts.actor(actor).try_send(Command(action)):
            # Rare (a full mailbox); a restarted actor reloads its state from the store.
            self._parts.counters[f"{actor}_mailbox_full"] += 1

    async def _publish_own(self, record: Record) -> None:
        """Store, persist and gossip a record the election signed; awaited (see the module doc)."""

        def publish(core: Any, now: float) -> bool:
            return bool(core.publish(now, record))

        if not await self._parts.call_core(DISSEMINATION, publish):
            self._parts.counters["election_record_refused"] += 1
            log.warning("this node's store refused its own %s record (seq %d)", record.kind, record.seq)


def _last_peer_list_only(feeds: list[Feed]) -> list[Feed]:
    """Within one batch, only the newest peer list matters: each is a copy of the whole live set."""
    last = max((i for i, feed in enumerate(feeds) if isinstance(feed, SetPeers)), default=-1)
    return [feed for i, feed in enumerate(feeds) if not isinstance(feed, SetPeers) or i == last]


def _on_record(record: Record) -> Callable[[Any, float], None]:
    return lambda core, now: core.on_record(now, record)


def _member_changed(member: NodeId, live: bool) -> Callable[[Any, float], None]:
    return lambda core, now: core.member_changed(now, member, live)


def _set_live_members(peers: list[NodeId]) -> Callable[[Any, float], None]:
    return lambda core, now: core.set_live_members(now, peers)


def _set_acting(acting: bool, term: int) -> Callable[[Any, float], None]:
    return lambda core, now: core.set_acting(now, acting, term)


def _note_local_lag(lag: float) -> Callable[[Any, float], None]:
    return lambda core, now: core.note_local_lag(now, lag)


def _add_member(member: NodeId) -> Callable[[Any, float], object]:
    return lambda core, now: core.add_member(now, member)


def _remove_member(member: NodeId) -> Callable[[Any, float], object]:
    return lambda core, now: core.remove_member(now, member)


def _set_peers(peers: list[NodeId]) -> Callable[[Any, float], None]:
    return lambda core, now: core.set_peers(peers)


def _in_order(actions: list[Callable[[Any, float], None]]) -> Callable[[Any, float], None]:
    def run(core: Any, now: float) -> None:
        for action in actions:
            action(core, now)

    return run
