"""The hub election core (sans-IO): one Paxos decision per term among the previous council, plus leases.

Design, and why it is not plain Raft. The brief is Raft-shaped: terms, one signed vote
per voter per term, a majority of the council of term T elects the hub of T+1. Raft's
one-vote-per-term rule is safe only for a fixed electorate, and here the electorate (the
council) changes with every hub: two candidates that believe in different councils can
each win a majority of "their" council in the same term. So each term is a single-decree
Paxos instance whose acceptors are the council named by the hub of the term before,
and whose value is the next hub *with its council*. That keeps every property asked for:

- the founder is hub of term 1 (its hub record needs no proof);
- terms are consecutive and each has exactly one decided value, whatever the rounds,
  losses and crashes (Paxos), so there are never two hubs in one term and the chain of
  councils is linear: the proof of term T+1 refers to the one believed term T;
- votes are signed records, one current vote per voter per term (the `vote` slot keyed
  by term); a voter re-signs it when it promises a higher ballot, which Paxos allows and
  which cannot change a decided value; a voter never accepts two values in one ballot;
- the winner's hub record carries a majority of those votes as proof; every node checks
  it against the believed previous term before it believes it (`HubChain`);
- "at least as up to date" is exact: a voter answers only for the term right after the
  newest term it believes; a voter that knows more answers with the newer hub records,
  one that knows less catches up from the record the candidate sends with its request;
- replacing dead council members is the hub electing itself into the next term with a
  new council (its lease-bound council lets only the lease holder do that).

Leases, and the timing argument for "the hub only acts within its lease, and a lease
expires before another hub can be elected". The hub of term T sends a renewal at its
local time `s`; a council member that gets it at `r >= s` acknowledges and, until
`r + lease_s` on its own clock, refuses every prepare or proposal for term T+1 from
anyone but the hub. The hub counts a renewal as a lease until `s + lease_s * (1 - m)`
(`m` = `drift_margin`) once a majority of the council of T acknowledged it. With clock
rates within `1 ± rho`, the hub's lease ends in real time at most at
`s + lease_s (1 - m) / (1 - rho)` and each promise lasts at least until
`r + lease_s / (1 + rho)`; `m >= 2 rho / (1 + rho)` makes the first no later than the
second. A rival needs promises from a majority of the same council, which shares a
member with every majority that acknowledged a renewal; that member refuses until its
promise ends, and after promising a rival (or accepting any value for T+1) it stops
acknowledging renewals. Hence every lease the old hub holds ends before any rival even
finishes phase 1, and the new hub acts only after its own council acknowledges it.
Only durations on one clock enter: no clock is compared with another. Lease promises are
kept in memory; a restarted council member refuses rivals for `lease_s` after it starts,
so a promise made before a crash still binds. Promises and accepted values (Paxos
state) are in the voter's `vote` record, which the driver must make durable before it
delivers the messages drained with it (the order the actor shell already keeps).

Failover overlaps the old lease instead of following it. A council member that has heard
no renewal for `silence_s` deems the hub silent: it stands, and promises or accepts for
others, even while its promise to the hub still runs, and reports in `Accepted` how long
that promise has left. The winner does not act until the longest report from its accept
quorum has passed (drift-adjusted, `_act_after`): every majority that acknowledged the
old hub's last lease shares a member with that quorum, and the old lease ends before
that member's promise does. A hub named by someone else's campaign, or restarted, has no
such measurement and waits a whole previous lease. A member that still hears the hub
refuses, with the time left (leader stickiness: one member's lost renewals depose no one).
So a hub is replaced about one lease after its last renewal, the election itself hidden
inside that lease.

No duelling proposers. Candidates that stand close together would otherwise outbid each
other's ballots for ever when rounds are slow (a starved machine, a far council): a
candidate whose own acceptor binds to a rival's higher ballot withdraws and leaves the
rival two rounds; the phase deadline follows the measured prepare round trip (up to
`MAX_ROUND_STRETCH` x `round_timeout`) and doubles after a timeout; lost campaigns back
off for U(0.5, 1) x `election_jitter` x 2^n (n lost in a row, capped).

Liveness needs a live, connected majority of the newest council; a hub replaces a dead
member within `reconfigure_interval` of hearing of the death, so that majority is lost
only when most of the council dies at once.
"""

from __future__ import annotations

import random
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from protocols.common.effects import Send
from protocols.common.identity import NodeId, NodeIdentity
from protocols.common.wire import WireError
from protocols.election.config import ElectionConfig
from protocols.election.events import (
    BecameHub,
    ElectionEvent,
    HubChanged,
    PublishRecord,
    RecordsPurged,
    Standing,
    SteppedDown,
)
from protocols.election.hub_chain import HubChain, HubTerm
from protocols.election.messages import (
    MAX_DECIDED_RECORDS,
    Accepted,
    Decided,
    LeaseAck,
    LeaseRequest,
    Prepare,
    Promise,
    Propose,
    Reject,
)
from protocols.election.records import (
    HUB,
    VOTE,
    Ballot,
    CouncilBody,
    HubBody,
    HubValue,
    LeaseBody,
    VoteBody,
    lease_body,
    majority,
    make_council,
    make_hub_record,
    make_lease,
    make_vote,
    term_key,
    vote_body,
)
from protocols.records.fencing import LEASE
from protocols.records.record import Record, verify_record
from protocols.records.store import RecordStore

Effect = Send | ElectionEvent
NEVER = float("-inf")
MAX_ROUND_STRETCH = 8
"""A phase deadline grows to at most this many times `round_timeout` on slow round trips."""
MAX_BACKOFF_DOUBLINGS = 3
"""The back-off after lost campaigns doubles at most this many times (8 x `election_jitter`)."""


@dataclass(frozen=True, slots=True)
class HubView:
    """What this node believes about the hub: for status and the `hub` event."""

    term: int
    hub: NodeId
    council: tuple[NodeId, ...]
    lease_expires: float | None
    """Local time the hub's lease runs out as last heard (an estimate off by the delivery delay)."""


@dataclass
class _Campaign:
    """This node proposing in one ballot of one term (Paxos proposer)."""

    term: int
    ballot: Ballot
    electorate: tuple[NodeId, ...]
    own_value: HubValue
    deadline: float
    started: float = 0.0
    phase: str = "prepare"
    value: HubValue | None = None
    promises: dict[NodeId, VoteBody] = field(default_factory=dict)
    accepts: dict[NodeId, Record] = field(default_factory=dict)
    rejects: set[NodeId] = field(default_factory=set)
    lease_left: float = 0.0
    wait: float = 0.0
    """The longest promise to the previous hub an acceptor reported running when it accepted."""

    @property
    def needed(self) -> int:
        return majority(len(self.electorate))


@dataclass
class _Acceptor:
    """This node's Paxos acceptor state for one term (mirrors its latest `vote` record)."""

    term: int
    promised: Ballot | None = None
    accepted: Ballot | None = None
    value: HubValue | None = None
    record: Record | None = None


class ElectionCore:
    """Sans-IO hub election for one node: feed messages, time, membership and records; drain effects.

    Inputs: `receive`, `tick`, `set_live_members(now, ids)` (from membership) and
    `on_record(now, record)` for every record the store accepted (hub and lease kinds
    matter). Outputs: `Send`s of `protocols.election.messages`, and the events of
    `protocols.election.events`: `PublishRecord` (for the driver to publish through
    dissemination), `RecordsPurged` (fenced records to delete from disk), `HubChanged`,
    `BecameHub`, `SteppedDown` and `Standing`.
    Acting as hub is only allowed while `acting_term(now)` returns the term.
    """

    def __init__(
        self,
        identity: NodeIdentity,
        store: RecordStore,
        rng: random.Random,
        config: ElectionConfig | None = None,
        next_seq: Callable[[], int] | None = None,
    ) -> None:
        self.identity = identity
        self.self_id: NodeId = identity.node_id
        self.store = store
        self.config = config or ElectionConfig()
        self._rng = rng
        self._next_seq_source = next_seq
        self._last_seq = 0
        self.chain = HubChain(store.mesh_id, store.ledger)
        self.counters: Counter[str] = Counter()
        self._effects: list[Effect] = []
        self._local: deque[tuple[NodeId, object]] = deque()
        self._started_at: float | None = None
        self._now = 0.0
        self._membership_known = False
        self._live_since: dict[NodeId, float] = {}
        """The live members (self included), each with when it was first seen live: one map,
        not a set plus a map, as every node of a simulated mesh holds one of n entries."""
        # acceptor
        self._acceptor = _Acceptor(term=0)
        self._own_votes: dict[int, Record] = {}
        self._lease_promise_until = NEVER
        self._last_renewal_at = NEVER
        """When this council member last acknowledged the hub's renewal (its silence is measured from it)."""
        # proposer
        self._campaign: _Campaign | None = None
        self._stand_at: float | None = None
        self._highest_ballot: dict[int, int] = {}
        self._round_timeout = self.config.round_timeout
        """The phase deadline now: grows when rounds time out or are slow, shrinks after wins."""
        self._failed_campaigns = 0
        """Campaigns of this node lost in a row (reset by a new term): the back-off exponent."""
        # hub
        self._renewal = 0
        self._renewals: dict[int, tuple[float, set[NodeId]]] = {}
        self._lease_until = NEVER
        self._acting_term: int | None = None
        self._act_after = NEVER
        """A new hub acts only from this local time: the previous hub's lease may run until then."""
        self._won: tuple[int, float] | None = None
        """(term, act after) of the campaign this node just won for itself."""
        self._next_renew_at: float | None = None
        self._renewing_since = NEVER
        self._lease_ok_at = NEVER
        self._last_lease_record = NEVER
        self._council_announced = 0
        self._last_reconfigure = NEVER
        # observer
        self._seen_lease_until: float | None = None
        self._ahead_lease: tuple[NodeId, LeaseRequest] | None = None
        self.chain.load(store)
        if self.chain.latest is not None:
            store.raise_fence(self.chain.latest.term)
            self._acceptor = self._load_acceptor(self.chain.latest.term + 1)

    # ---- driver interface ------------------------------------------------------------------

    def receive(self, now: float, sender: NodeId, message: object) -> None:
        self._enter(now)
        self._dispatch(now, sender, message)
        self._pump(now)

    def tick(self, now: float) -> None:
        self._enter(now)
        latest = self.chain.latest
        if latest is None:
            if self.store.ledger.founder == self.self_id:
                self._found_term_one(now)
            self._pump(now)
            return
        if self._acting_term is not None and now >= self._lease_until:
            self._step_down(self._acting_term, "lease_lost")
        if latest.hub == self.self_id:
            self._maybe_start_acting(now)
            if self._next_renew_at is not None and now >= self._next_renew_at:
                if self._renewals_futile(now):
                    self._give_up_renewing()
                else:
                    self._renew(now)
            self._maybe_reconfigure(now)
        campaign = self._campaign
        if campaign is not None and now >= campaign.deadline:
            self.counters["campaign_timeouts"] += 1
            # No majority answered in time: on a slow network or a starved machine the round
            # trip may be longer than the timeout, so the next round waits longer.
            self._round_timeout = min(self._round_timeout * 2, self._max_round_timeout)
            self._abandon(now, backoff=self._backoff())
        if self._stand_at is not None and now >= self._stand_at and self._campaign is None:
            self._stand(now)
        self._pump(now)

    def next_deadline(self) -> float | None:
        if self.chain.latest is None:
            return self._now if self.store.ledger.founder == self.self_id else None
        deadlines = [self._stand_at, self._next_renew_at]
        if self._campaign is not None:
            deadlines.append(self._campaign.deadline)
        if self._acting_term is not None:
            deadlines.append(self._lease_until)
        elif self.chain.latest.hub == self.self_id and self._lease_until > self._act_after > self._now:
            deadlines.append(self._act_after)
        present = [deadline for deadline in deadlines if deadline is not None]
        return min(present) if present else None

    def drain(self) -> list[Effect]:
        effects, self._effects = self._effects, []
        return effects

    def set_live_members(self, now: float, ids: Iterable[NodeId]) -> None:
        """The members membership believes alive (self is always counted live)."""
        self._enter(now)
        since = self._live_since
        live = dict.fromkeys(ids)
        live[self.self_id] = None
        self._live_since = {node: since.get(node, now) for node in live}
        self._membership_known = True
        self._pump(now)

    def member_changed(self, now: float, node: NodeId, live: bool) -> None:
        """One member entered (`live`) or left the live set: O(1) where `set_live_members` is O(n).

        For shells that see membership changes one at a time; a big mesh changes its live
        set every second or so, and copying a thousand-member set into every node's core
        on each change is what this avoids. Counts only after a first `set_live_members`.
        """
        self._enter(now)
        if node == self.self_id or not self._membership_known:
            return
        if live:
            self._live_since.setdefault(node, now)
        else:
            self._live_since.pop(node, None)
        self._pump(now)

    def on_record(self, now: float, record: Record) -> None:
        """A record the store accepted (from anyone, this node included)."""
        self._enter(now)
        if record.kind == HUB:
            self._offer_hub_records(now, [record])
        elif record.kind == LEASE:
            self._on_lease_record(now, record)
        self._pump(now)

    # ---- queries ---------------------------------------------------------------------------

    @property
    def latest_term(self) -> int:
        return 0 if self.chain.latest is None else self.chain.latest.term

    def hub_view(self) -> HubView | None:
        latest = self.chain.latest
        if latest is None:
            return None
        expires = self._lease_until if latest.hub == self.self_id else self._seen_lease_until
        return HubView(latest.term, latest.hub, latest.council, None if expires == NEVER else expires)

    def acting_term(self, now: float) -> int | None:
        """The term this node may act as hub in right now, or None: the hub role is lease-bound."""
        if self._acting_term is not None and self._act_after <= now < self._lease_until:
            return self._acting_term
        return None

    # ---- dispatch --------------------------------------------------------------------------

    def _enter(self, now: float) -> None:
        self._now = now
        if self._started_at is None:
            self._started_at = now
            latest = self.chain.latest
            if latest is not None:  # restarted with a believed term: resume its duties
                if latest.hub == self.self_id:
                    self._next_renew_at = now
                    self._renewing_since = now
                    self._act_after = now + self._previous_lease_wait(latest)
                if self.self_id in latest.council:
                    jitter = self._rng.uniform(0.0, self.config.election_jitter)
                    self._stand_at = now + self.config.lease_s + jitter

    def _dispatch(self, now: float, sender: NodeId, message: object) -> None:
        match message:
            case LeaseRequest():
                self._on_lease_request(now, sender, message)
            case LeaseAck():
                self._on_lease_ack(now, sender, message)
            case Prepare():
                self._on_prepare(now, sender, message)
            case Promise():
                self._on_promise(now, sender, message)
            case Propose():
                self._on_propose(now, sender, message)
            case Accepted():
                self._on_accepted(now, sender, message)
            case Reject():
                self._on_reject(now, sender, message)
            case Decided():
                self._offer_hub_records(now, message.records)
            case _:
                self.counters["dropped_unknown_message"] += 1

    def _pump(self, now: float) -> None:
        """Deliver messages this node sent itself (it is often on its own council)."""
        while self._local:
            sender, message = self._local.popleft()
            self._dispatch(now, sender, message)

    def _send(self, to: NodeId, message: object) -> None:
        if to == self.self_id:
            self._local.append((self.self_id, message))
        else:
            self.counters["messages_out"] += 1
            self._effects.append(Send(to, message))

    def _publish(self, record: Record) -> None:
        self._effects.append(PublishRecord(record))

    def _seq(self) -> int:
        if self._next_seq_source is not None:
            return self._next_seq_source()
        self._last_seq = max(self._last_seq, self.store.highest_seq(self.self_id)) + 1
        return self._last_seq

    # ---- believing hub records -------------------------------------------------------------

    def _offer_hub_records(self, now: float, records: Iterable[Record]) -> None:
        added: list[HubTerm] = []
        for record in records:
            added.extend(self.chain.offer(record))
        if added:
            self._on_new_terms(now, added)

    def _on_new_terms(self, now: float, added: list[HubTerm]) -> None:
        latest = added[-1]
        purged = self.store.raise_fence(latest.term).purged
        if purged:
            self._effects.append(RecordsPurged(purged))
        if self._acting_term is not None and latest.hub != self.self_id:
            self._step_down(self._acting_term, "newer_term")
        self._acting_term = None
        self._lease_until = NEVER
        self._renewals.clear()
        won, self._won = self._won, None
        if latest.hub == self.self_id:
            if won is not None and won[0] == latest.term:
                self._act_after = won[1]
            else:
                self._act_after = now + self._previous_lease_wait(latest)
        else:
            self._act_after = NEVER
        self._acceptor = self._load_acceptor(latest.term + 1)
        self._lease_promise_until = NEVER
        self._last_renewal_at = now  # a new hub: silence is counted from its term's start
        self._seen_lease_until = None
        if self._campaign is not None and self._campaign.term <= latest.term:
            self._campaign = None
        self._failed_campaigns = 0
        self._next_renew_at = now if latest.hub == self.self_id else None
        self._renewing_since = now
        if self.self_id in latest.council:
            self._stand_at = now + self.config.silence_s + self._rng.uniform(0.0, self.config.election_jitter)
        else:
            self._stand_at = None
        self.counters["terms_learned"] += len(added)
        self._effects.append(self._hub_changed())
        ahead, self._ahead_lease = self._ahead_lease, None
        if ahead is not None and ahead[1].term == latest.term and ahead[0] == latest.hub:
            # The new hub's first renewal overtook its hub record (they travel separately):
            # answer it now instead of making the hub wait a renew interval. The promise
            # runs from now, later than the hub's send time, so the lease argument holds.
            self.counters["lease_request_replayed"] += 1
            self._on_lease_request(now, ahead[0], ahead[1])

    def _hub_changed(self) -> HubChanged:
        view = self.hub_view()
        assert view is not None
        return HubChanged(view.term, view.hub, list(view.council), view.lease_expires)

    def _on_lease_record(self, now: float, record: Record) -> None:
        latest = self.chain.latest
        if latest is None or record.author != latest.hub or record.author == self.self_id:
            return
        try:
            body = lease_body(record)
        except WireError:
            self.counters["lease_record_malformed"] += 1
            return
        if body.term != latest.term or not 0 <= body.remaining_s <= latest.lease_s:
            return
        first = self._seen_lease_until is None
        self._seen_lease_until = now + body.remaining_s
        if first:
            self._effects.append(self._hub_changed())

    # ---- founding --------------------------------------------------------------------------

    def _found_term_one(self, now: float) -> None:
        """The founder is hub of term 1; its council is whoever it sees live now (often only itself)."""
        value = HubValue(self.self_id, self._choose_council(None), self.config.lease_s)
        body = HubBody(1, value, Ballot(0, self.self_id), [])
        record = make_hub_record(self.identity, self.store.mesh_id, self._seq(), body)
        self._publish(record)
        self._offer_hub_records(now, [record])

    # ---- acceptor (council member) ---------------------------------------------------------

    def _load_acceptor(self, term: int) -> _Acceptor:
        """Recover Paxos state for `term` from this node's own vote record (it survives restarts)."""
        held = self.store.get(self.self_id, VOTE, term_key(term))
        candidates = [r for r in (self._own_votes.get(term), held) if r is not None]
        if not candidates:
            return _Acceptor(term)
        record = max(candidates, key=lambda r: r.seq)
        try:
            body = vote_body(record)
        except WireError:  # pragma: no cover - this node signed it
            return _Acceptor(term)
        return _Acceptor(term, body.promised, body.accepted, body.value, record)

    def _electorate_member(self, term: int) -> HubTerm | None:
        """The believed term before `term` when this node votes in `term`; None when it does not."""
        latest = self.chain.latest
        if latest is None or term != latest.term + 1 or self.self_id not in latest.council:
            return None
        return latest

    def _hub_silent(self, now: float) -> bool:
        """No renewal heard for `silence_s`: the hub is probably gone, so this member votes again.

        Its promise may still be running; it reports what is left (`Accepted.lease_left_s`)
        and the winner waits that out before acting, so voting early is safe and the
        election overlaps the old lease instead of following it.
        """
        return now >= self._last_renewal_at + self.config.silence_s

    def _previous_lease_wait(self, latest: HubTerm) -> float:
        """How long a hub that did not measure the wait itself holds back: a whole previous lease.

        Zero when the previous term was this node's own (a reconfiguration) or there is none.
        """
        previous = self.chain.terms.get(latest.term - 1)
        if latest.term == 1 or (previous is not None and previous.hub == self.self_id):
            return 0.0
        lease = previous.lease_s if previous is not None else self.config.lease_s
        return lease / (1 - self.config.drift_margin)

    def _binding_lease_left(self, now: float, sender: NodeId, previous: HubTerm) -> float:
        """Seconds this voter still refuses `sender` because of a lease promise or a recent restart."""
        if sender == previous.hub:
            return 0.0
        assert self._started_at is not None
        until = max(self._lease_promise_until, self._started_at + self.config.lease_s)
        return max(0.0, until - now)

    def _answer_behind(self, sender: NodeId, term: int) -> None:
        """The asker's term is decided already: send it the hub records it lacks."""
        terms = self.chain.terms
        records = [terms[t].record for t in range(term, self.latest_term + 1) if t in terms]
        if records:
            self._send(sender, Decided(records[:MAX_DECIDED_RECORDS]))

    def _on_prepare(self, now: float, sender: NodeId, message: Prepare) -> None:
        if message.ballot.proposer != sender:
            self.counters["prepare_bad_ballot"] += 1
            return
        if message.term <= self.latest_term:
            self._answer_behind(sender, message.term)
            return
        if message.term > self.latest_term + 1 and message.base is not None:
            self._offer_hub_records(now, [message.base])
        previous = self._electorate_member(message.term)
        if previous is None:
            self.counters["prepare_not_voter"] += 1
            return
        acceptor = self._acceptor
        lease_left = self._binding_lease_left(now, sender, previous)
        if (lease_left > 0 and not self._hub_silent(now)) or (
            acceptor.promised is not None and message.ballot.rank < acceptor.promised.rank
        ):
            self.counters["prepare_rejected"] += 1
            self._send(sender, Reject(message.term, message.ballot, acceptor.promised, lease_left))
            return
        if acceptor.promised != message.ballot:
            acceptor.promised = message.ballot
            self._sign_vote(acceptor)
        assert acceptor.record is not None
        self._yield_to(now, sender, message.term)
        self._defer_standing(now)
        self._send(sender, Promise(acceptor.record))

    def _on_propose(self, now: float, sender: NodeId, message: Propose) -> None:
        if message.ballot.proposer != sender:
            self.counters["propose_bad_ballot"] += 1
            return
        if message.term <= self.latest_term:
            self._answer_behind(sender, message.term)
            return
        previous = self._electorate_member(message.term)
        if previous is None:
            self.counters["propose_not_voter"] += 1
            return
        if not self._valid_value(message.value):
            self.counters["propose_bad_value"] += 1
            return
        acceptor = self._acceptor
        if acceptor.accepted == message.ballot:
            if acceptor.value != message.value:
                self.counters["propose_equivocation"] += 1
                return
            assert acceptor.record is not None
            self._send(sender, Accepted(acceptor.record, self._binding_lease_left(now, sender, previous)))
            return
        lease_left = self._binding_lease_left(now, sender, previous)
        if (lease_left > 0 and not self._hub_silent(now)) or (
            acceptor.promised is not None and message.ballot.rank < acceptor.promised.rank
        ):
            self.counters["propose_rejected"] += 1
            self._send(sender, Reject(message.term, message.ballot, acceptor.promised, lease_left))
            return
        acceptor.promised = acceptor.accepted = message.ballot
        acceptor.value = message.value
        self._sign_vote(acceptor)
        assert acceptor.record is not None
        self._yield_to(now, sender, message.term)
        self._defer_standing(now)
        if lease_left > 0:
            self.counters["accepted_during_silent_lease"] += 1
        self._send(sender, Accepted(acceptor.record, lease_left))

    def _valid_value(self, value: HubValue) -> bool:
        ledger = self.store.ledger
        return (
            len(set(value.council)) == len(value.council)
            and ledger.is_member(value.hub)
            and all(ledger.is_member(member) for member in value.council)
        )

    def _sign_vote(self, acceptor: _Acceptor) -> None:
        assert acceptor.promised is not None
        body = VoteBody(acceptor.term, acceptor.promised, acceptor.accepted, acceptor.value)
        record = make_vote(self.identity, self.store.mesh_id, self._seq(), body)
        acceptor.record = record
        self._own_votes = {acceptor.term: record}
        self._publish(record)

    def _defer_standing(self, now: float) -> None:
        """Someone is campaigning: give them a round or two before standing too (Raft's timer reset)."""
        if self._stand_at is not None:
            self._stand_at = max(self._stand_at, now + self._rival_pause())

    def _rival_pause(self) -> float:
        """How long to leave a rival's campaign alone: its two phases, plus jitter."""
        return 2 * self._round_timeout + self._rng.uniform(0.0, self.config.election_jitter)

    def _yield_to(self, now: float, rival: NodeId, term: int) -> None:
        """This node's acceptor just bound itself to a rival's higher ballot: stop competing.

        Without this, two candidates that stand close together keep pre-empting each
        other (Paxos's duelling proposers): each new ballot outbids the other's accept
        phase. The one with the lower ballot withdraws and waits out the rival's rounds.
        """
        campaign = self._campaign
        if rival == self.self_id or campaign is None or campaign.term != term:
            return
        self.counters["campaigns_yielded"] += 1
        self._campaign = None
        self._stand_at = now + self._rival_pause()

    def _on_lease_request(self, now: float, sender: NodeId, message: LeaseRequest) -> None:
        if message.term < self.latest_term:
            self._answer_behind(sender, message.term + 1)
            return
        latest = self.chain.latest
        if latest is None or message.term != latest.term:
            self.counters["lease_request_ahead"] += 1
            self._ahead_lease = (sender, message)  # answered if its hub record arrives next
            return
        if sender != latest.hub or self.self_id not in latest.council:
            self.counters["lease_request_refused"] += 1
            return
        acceptor = self._acceptor
        promised = acceptor.promised
        # A promise to this node's own ballot binds nobody once its campaign is abandoned (only
        # this node proposes under that ballot, and a new campaign prepares afresh); without
        # this, a member that stood once while the hub was alive refuses renewals for good.
        own_abandoned = promised is not None and promised.proposer == self.self_id and self._campaign is None
        promised_elsewhere = promised is not None and promised.proposer != sender and not own_abandoned
        if acceptor.accepted is not None or promised_elsewhere:
            # Bound to a candidate for the next term: a lease now could overlap that candidate's.
            self.counters["lease_request_refused"] += 1
            return
        until = now + min(message.lease_s, latest.lease_s)
        self._lease_promise_until = max(self._lease_promise_until, until)
        self._last_renewal_at = now
        if sender != self.self_id:
            self._seen_lease_until = until
        if self._stand_at is not None:
            jitter = self._rng.uniform(0.0, self.config.election_jitter)
            self._stand_at = max(self._stand_at, now + self.config.silence_s + jitter)
        self._send(sender, LeaseAck(message.term, message.renewal))

    # ---- proposer (candidate) --------------------------------------------------------------

    def _stand(self, now: float, reconfigure: bool = False) -> None:
        previous = self.chain.latest
        if previous is None or self.self_id not in previous.council:
            self._stand_at = None
            return
        if not reconfigure and not self._hub_silent(now) and previous.hub != self.self_id:
            jitter = self._rng.uniform(0.0, self.config.election_jitter)
            self._stand_at = self._last_renewal_at + self.config.silence_s + jitter
            return
        term = previous.term + 1
        promised = self._acceptor.promised
        number = max(self._highest_ballot.get(term, 0), promised.number if promised is not None else 0)
        ballot = Ballot(number + 1, self.self_id)
        self._highest_ballot[term] = ballot.number
        value = HubValue(self.self_id, self._choose_council(previous), self.config.lease_s)
        self._campaign = _Campaign(term, ballot, previous.council, value, now + self._round_timeout, now)
        self._stand_at = None
        self.counters["campaigns"] += 1
        self._effects.append(Standing(term, ballot.number, reconfigure))
        for member in previous.council:
            self._send(member, Prepare(term, ballot, previous.record))

    def _abandon(self, now: float, backoff: float) -> None:
        self._campaign = None
        self._failed_campaigns += 1
        latest = self.chain.latest
        if latest is not None and self.self_id in latest.council:
            self._stand_at = now + backoff
        self.counters["campaigns_abandoned"] += 1

    @property
    def _max_round_timeout(self) -> float:
        return self.config.round_timeout * MAX_ROUND_STRETCH

    def _backoff(self) -> float:
        """Randomized, growing: the n-th lost campaign in a row waits U(0.5, 1) x jitter x 2^n
        (n capped), so candidates that keep colliding spread apart instead of duelling."""
        grow = float(2 ** min(self._failed_campaigns, MAX_BACKOFF_DOUBLINGS))
        return self._rng.uniform(0.5, 1.0) * self.config.election_jitter * grow

    def _current_campaign(
        self, sender: NodeId, vote: Record, phase: str
    ) -> tuple[_Campaign, VoteBody] | None:
        campaign = self._campaign
        if campaign is None or campaign.phase != phase or sender not in campaign.electorate:
            return None
        if vote.author != sender or vote.kind != VOTE or vote.mesh != self.store.mesh_id:
            self.counters["vote_bad"] += 1
            return None
        try:
            body = vote_body(vote)
        except WireError:
            self.counters["vote_bad"] += 1
            return None
        if body.term != campaign.term or not verify_record(vote):
            self.counters["vote_bad"] += 1
            return None
        return campaign, body

    def _on_promise(self, now: float, sender: NodeId, message: Promise) -> None:
        found = self._current_campaign(sender, message.vote, "prepare")
        if found is None:
            return
        campaign, body = found
        if body.promised != campaign.ballot:
            return
        campaign.promises[sender] = body
        if len(campaign.promises) < campaign.needed:
            return
        earlier = [b for b in campaign.promises.values() if b.accepted is not None and b.value is not None]
        if earlier:
            chosen = max(earlier, key=lambda b: b.accepted.rank if b.accepted else (0, b""))
            assert chosen.value is not None
            campaign.value = chosen.value
        else:
            campaign.value = campaign.own_value
        # The prepare round trip just measured sets the pace: a phase may take a few of them.
        self._round_timeout = min(
            max(self.config.round_timeout, 3 * (now - campaign.started)), self._max_round_timeout
        )
        campaign.phase = "accept"
        campaign.deadline = now + self._round_timeout
        campaign.rejects.clear()
        for member in campaign.electorate:
            self._send(member, Propose(campaign.term, campaign.ballot, campaign.value))

    def _on_accepted(self, now: float, sender: NodeId, message: Accepted) -> None:
        found = self._current_campaign(sender, message.vote, "accept")
        if found is None:
            return
        campaign, body = found
        if body.accepted != campaign.ballot or body.value != campaign.value:
            return
        campaign.accepts[sender] = message.vote
        previous = self.chain.latest
        bound = previous.lease_s if previous is not None else self.config.lease_s
        campaign.wait = max(campaign.wait, min(message.lease_left_s, bound))
        if len(campaign.accepts) < campaign.needed:
            return
        assert campaign.value is not None
        proof = sorted(campaign.accepts.values(), key=lambda r: r.author)
        record = make_hub_record(
            self.identity,
            self.store.mesh_id,
            self._seq(),
            HubBody(campaign.term, campaign.value, campaign.ballot, proof),
        )
        self._campaign = None
        self._failed_campaigns = 0
        self._round_timeout = max(self.config.round_timeout, self._round_timeout / 2)
        self.counters["campaigns_won"] += 1
        if campaign.value.hub == self.self_id:
            # Every majority that acknowledged the previous hub's lease shares a member with
            # this accept quorum, and that member reported how long its promise still ran:
            # the previous lease ends before the longest report has passed (drift-adjusted).
            self._won = (campaign.term, now + campaign.wait / (1 - self.config.drift_margin))
        self._publish(record)
        for member in dict.fromkeys([*campaign.electorate, campaign.value.hub]):
            if member != self.self_id:
                self._send(member, Decided([record]))
        self._offer_hub_records(now, [record])

    def _on_reject(self, now: float, sender: NodeId, message: Reject) -> None:
        campaign = self._campaign
        if campaign is None or message.term != campaign.term or message.ballot != campaign.ballot:
            return
        if sender not in campaign.electorate:
            return
        if message.promised is not None:
            self._highest_ballot[campaign.term] = max(
                self._highest_ballot.get(campaign.term, 0), message.promised.number
            )
        campaign.rejects.add(sender)
        campaign.lease_left = max(campaign.lease_left, min(message.lease_left_s, self.config.lease_s))
        if len(campaign.electorate) - len(campaign.rejects) < campaign.needed:
            if campaign.lease_left:
                # the hub's lease still binds a majority: stand once it has run out
                backoff = campaign.lease_left + self._rng.uniform(0.0, self.config.election_jitter)
            else:
                # a rival's higher ballot holds a majority: leave it its rounds
                backoff = self._rival_pause() + self._backoff()
            self._abandon(now, backoff=backoff)

    def _choose_council(self, previous: HubTerm | None) -> list[NodeId]:
        """Self first, then live sitting members, then the longest-known live members (stable first)."""
        sitting = set(previous.council) if previous is not None else set()
        ledger = self.store.ledger
        since = self._live_since
        others = [node for node in since if node != self.self_id and ledger.is_member(node)]
        others.sort(key=lambda node: (node not in sitting, since[node], node))
        return [self.self_id, *others[: self.config.council_size - 1]]

    # ---- hub -------------------------------------------------------------------------------

    def _renew(self, now: float) -> None:
        latest = self.chain.latest
        assert latest is not None
        self._renewal += 1
        self._renewals[self._renewal] = (now, set())
        for old in [r for r, (sent, _) in self._renewals.items() if sent < now - latest.lease_s]:
            del self._renewals[old]
        self._next_renew_at = now + self.config.renew_interval
        for member in latest.council:
            self._send(member, LeaseRequest(latest.term, self._renewal, latest.lease_s))

    def _on_lease_ack(self, now: float, sender: NodeId, message: LeaseAck) -> None:
        latest = self.chain.latest
        if latest is None or message.term != latest.term or latest.hub != self.self_id:
            return
        pending = self._renewals.get(message.renewal)
        if pending is None or sender not in latest.council:
            return
        sent_at, acks = pending
        acks.add(sender)
        if len(acks) < majority(len(latest.council)):
            return
        del self._renewals[message.renewal]
        self._lease_ok_at = now
        until = sent_at + latest.lease_s * (1 - self.config.drift_margin)
        if until <= now:
            return
        self._lease_until = max(self._lease_until, until)
        if not self._maybe_start_acting(now):
            return
        if self._council_announced < latest.term:
            self._council_announced = latest.term
            body = CouncilBody(latest.term, self.self_id, list(latest.council))
            self._publish(make_council(self.identity, self.store.mesh_id, self._seq(), body))
            self._effects.append(self._hub_changed())
        if now - self._last_lease_record >= self.config.lease_record_interval:
            self._last_lease_record = now
            body_lease = LeaseBody(latest.term, message.renewal, self._lease_until - now)
            self._publish(make_lease(self.identity, self.store.mesh_id, self._seq(), body_lease))

    def _maybe_start_acting(self, now: float) -> bool:
        """Act as hub once the council granted a lease and the previous hub's lease is surely over."""
        latest = self.chain.latest
        if latest is None or latest.hub != self.self_id or now >= self._lease_until or now < self._act_after:
            return False
        if self._acting_term != latest.term:
            self._acting_term = latest.term
            self._last_reconfigure = now
            self.counters["became_hub"] += 1
            self._effects.append(BecameHub(latest.term, list(latest.council)))
        return True

    def _renewals_futile(self, now: float) -> bool:
        """Not acting, and no majority acknowledged a renewal for two leases: stop renewing.

        Council members bound to a candidate refuse renewals, and the members that do
        acknowledge them refuse that candidate while their promise runs: with a council
        split 2 / 2 (one member dead) each side blocks the other for ever. Giving up lets
        the promises to this hub lapse, so an election (which this node may win again, as
        a council member) can finish.
        """
        since = max(self._lease_ok_at, self._renewing_since)
        return self._acting_term is None and now - since > 2 * self.config.lease_s

    def _give_up_renewing(self) -> None:
        self._next_renew_at = None
        self.counters["renewals_given_up"] += 1

    def _maybe_reconfigure(self, now: float) -> None:
        """Replace council members that died or left, by electing this hub into the next term."""
        latest = self.chain.latest
        if (
            latest is None
            or not self._membership_known
            or self.acting_term(now) != latest.term
            or self._campaign is not None
            or now < self._last_reconfigure + self.config.reconfigure_interval
        ):
            return
        desired = self._choose_council(latest)
        current = set(latest.council)
        missing = current - self._live_since.keys() - {self.self_id}
        grows = len(latest.council) < self.config.council_size and len(desired) > len(latest.council)
        if (missing or grows) and set(desired) != current:
            self._last_reconfigure = now
            self.counters["reconfigurations"] += 1
            self._stand(now, reconfigure=True)

    def _step_down(self, term: int, reason: str) -> None:
        self._acting_term = None
        self.counters[f"stepped_down_{reason}"] += 1
        self._effects.append(SteppedDown(term, reason))
