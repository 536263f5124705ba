"""Who is a member: the admission chain from genesis, with revocation cut-offs by the founder and
by the acting hub.

Admission. A node is admitted when a chain of admission records leads back to the
founder named in the genesis record, each signed by a member admitted (and not revoked)
at that record's seq. A revocation sets a member's `last_valid_seq`; its later records,
and any admission it signed after that seq, stop counting. The admitted set is a
breadth-first search from the founder over the records held, so it depends on which
records a replica holds and never on the order they came in: replicas with the same
records compute the same set, which is what keeps their state digests equal.

Two authorities revoke:

- **The founder** (`revocation`): counts for good, whoever is hub.
- **The acting hub** (`hub_revocation`): the record names the term its author holds. A
  node counts it only when its hub chain says the author was the hub of that term
  (`HubTerms`, below), the author has not been deposed since (no later term has another
  hub), and it spares the founder and the hubs since the newest handover (the author
  included). As a hub takes office in a term it signs a `handover` carrying over every
  hub revocation that counted up to the term before (always when it takes over from
  another hub, otherwise only when there is something to carry); from then on those
  count through the newest handover (the handovers of the highest term that has any),
  and the revocation records of earlier terms no longer do.

Why this shape. Any member can sign a record claiming any term, and a deposed hub can
go on signing under its old term; what no member can forge is the hub chain (each term
proven by the votes of the previous council, `protocols.election.hub_chain`). So the
author must be the chain's hub of the term it names, and the rule must not depend on
when a record arrived: "count what the hub issued before it learned it was deposed"
would need a clock nobody can check, and two replicas that heard of the next term at
different moments would disagree for good. The rule is a function of the records held
and the chain alone:

- a hub revocation counts while its author is the newest hub in the chain
  (pessimistic: the moment a node believes a later term with another hub, the deposed
  hub's revocations stop counting there, issued before or after the change);
- the newest hub's handover carries them on (optimistic: a handover counts until a
  newer one exists, so a new hub that dies before it signs one leaves the carried set
  in force, and the next hub carries it);
- a revocation whose term the chain has not reached yet (it came before the hub record
  that proves it, or names a term nobody won) waits and counts once the term is
  believed, if it still qualifies then (`recheck`).

The price: between a node believing a new hub and receiving its handover (one lease
round: the hub signs it as it takes office) the old hub's direct revocations lapse
there, and revocations a new hub had not received when it signed its handover are
dropped (the operator revokes again). A deposed hub that signs before its successor's
handover is signed gets in only if that successor received it first.

Cycles, and how they are cut. Revocations cut records, and records (hub records,
handovers) decide which revocations count. Three rules keep that well founded:

- the hubs since the newest handover and the founder are immune to hub revocations,
  directly and by cascade (they stay admitted with the cut-off the founder's
  revocations alone give them), so the handover and the current hub's revocations
  stay in every store;
- a hub record the chain would believe next is admitted even from a member a hub
  revoked (`exempts`): otherwise a revocation that reached a node before the record
  electing its target would hide that election from the node for good;
- the founder's revocations are computed first, without the hub's (`_base`).

Checkpoints. A node that anchored its hub chain at a checkpoint knows no term before
it, so it cannot check a revocation or handover of those terms; they wait there. Once
the hub signs a handover in a term the node knows, all replicas agree again.

What it does not undo: membership drops a revoked member for good
(`MembershipCore.remove_member`), so a hub revocation that stops counting later (it
lapsed, or a handover left it out) readmits the member to the ledger but not to the
member tables of the nodes that had counted it.

Cost: the admitted set is recomputed (O(admission records)) on a genesis, a revocation
of either kind, a handover and, when hub records are held, a change of the hub chain or
a new admission; otherwise a new admission only extends the search, and a hub record
that cannot count (its term unknown here, or not its author's) only updates the counts.
Judging the hub's records scans the terms between each one and the newest (rare
records, short spans).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from protocols.common.identity import NodeId
from protocols.common.wire import WireError
from protocols.records.admission_records import (
    ADMISSION,
    GENESIS,
    HANDOVER,
    HUB_REVOCATION,
    REVOCATION,
    CarriedRevocation,
    GenesisBody,
    admission_body,
    genesis_body,
    handover_body,
    hub_revocation_body,
    mesh_id_of,
    revocation_body,
)
from protocols.records.record import Record

UNLIMITED = 2**63 - 1


class HubTerms(Protocol):
    """Who held which hub term, as this node's hub chain says (implemented from the election's
    `HubChain` by `protocols.wiring.ChainTerms`; read-only here)."""

    @property
    def latest_term(self) -> int:
        """The newest believed term (0 before term 1)."""
        ...

    def hub_of(self, term: int) -> NodeId | None:
        """The hub of `term`, or None when the chain does not believe it (ahead, or before an anchor)."""
        ...

    def vouches(self, record: Record) -> bool:
        """True when `record` is a hub record the chain believes, or would believe as its next term."""
        ...


class Verdict:
    """What the ledger made of each hub revocation and handover it holds (`verdicts` counts them)."""

    COUNTED = "counted"
    UNPROVEN = "unproven"
    """Its term is not (yet) in this node's chain: it came before the hub record that proves it."""
    NOT_HUB = "not_hub"
    """Its author was not the hub of the term it names."""
    DEPOSED = "deposed"
    """A later term has another hub, and no handover carried it."""
    SUPERSEDED = "superseded"
    """Older than the newest handover, which carried it or left it out."""
    PROTECTED = "protected"
    """It revokes the founder or a hub since the newest handover (its author included)."""
    NOT_ADMITTED = "not_admitted"
    """Its author's seq is past the cut-off the founder gave it."""


@dataclass(frozen=True, slots=True)
class _HubAct:
    """A hub revocation held: `term`, `seq` and what it cuts."""

    seq: int
    term: int
    member: NodeId
    last_valid_seq: int
    reason: str


@dataclass(frozen=True, slots=True)
class _Handover:
    seq: int
    term: int
    revoked: tuple[CarriedRevocation, ...]


@dataclass(frozen=True, slots=True)
class HubCut:
    """A hub revocation that counts: the member's last valid seq, the term that revoked it, why."""

    last_valid_seq: int
    term: int
    reason: str


class AdmissionLedger:
    """The admitted set of one mesh, derived from its genesis, admission and revocation records."""

    def __init__(self, mesh_id: bytes) -> None:
        self.mesh_id = mesh_id
        self.genesis: GenesisBody | None = None
        # member -> highest seq of theirs that still counts (UNLIMITED unless revoked)
        self._cutoff: dict[NodeId, int] = {}
        self._admissions_by_author: dict[NodeId, list[tuple[int, NodeId]]] = {}
        self._revocations: dict[NodeId, int] = {}
        self._revocation_reasons: dict[NodeId, str] = {}
        # the hub's records, one per store slot (a newer record of the slot replaces the older)
        self._hub_acts: dict[tuple[NodeId, NodeId], _HubAct] = {}
        self._handovers: dict[tuple[NodeId, str], _Handover] = {}
        self._hub_terms: HubTerms | None = None
        self._counted: dict[NodeId, HubCut] = {}
        self._immune: frozenset[NodeId] = frozenset()
        # cut-offs from the founder's revocations alone; None while the hub's cut nothing
        self._base: dict[NodeId, int] | None = None
        self.verdicts: Counter[str] = Counter()
        """Hub revocations (plain verdicts) and handovers (`handover_` + verdict) held, by verdict."""

    def copy(self) -> AdmissionLedger:
        """An independent ledger in the same state (a store snapshot copies its ledger).

        The hub chain is not copied: the copy's owner attaches its own (`use_hub_terms`).
        """
        clone = AdmissionLedger(self.mesh_id)
        clone.genesis = self.genesis
        clone._cutoff = dict(self._cutoff)
        clone._admissions_by_author = {
            author: list(seqs) for author, seqs in self._admissions_by_author.items()
        }
        clone._revocations = dict(self._revocations)
        clone._revocation_reasons = dict(self._revocation_reasons)
        clone._hub_acts = dict(self._hub_acts)
        clone._handovers = dict(self._handovers)
        clone._counted = dict(self._counted)
        clone._immune = self._immune
        clone._base = None if self._base is None else dict(self._base)
        clone.verdicts = Counter(self.verdicts)
        return clone

    # ---- reading -------------------------------------------------------------------------

    @property
    def founder(self) -> NodeId | None:
        return self.genesis.founder if self.genesis is not None else None

    def allows(self, author: NodeId, seq: int) -> bool:
        """True when `author`'s record number `seq` comes from an admitted, unrevoked member."""
        return seq <= self._cutoff.get(author, 0)

    def is_member(self, node: NodeId) -> bool:
        return self._cutoff.get(node, 0) == UNLIMITED

    def members(self) -> list[NodeId]:
        """Currently admitted members that are not revoked."""
        return [node for node, cutoff in self._cutoff.items() if cutoff == UNLIMITED]

    def revoked(self) -> dict[NodeId, int]:
        """Members a counting revocation (the founder's or the hub's) names, with their last valid seq."""
        revoked = dict(self._revocations)
        for member, cut in self._counted.items():
            revoked[member] = min(revoked.get(member, UNLIMITED), cut.last_valid_seq)
        return revoked

    def removed(self) -> list[NodeId]:
        """Nodes to keep out of membership: those a counting revocation names (sorted, so that
        every replica removes them in the same order)."""
        return sorted({*self._revocations, *self._counted})

    def hub_revocations(self) -> dict[NodeId, HubCut]:
        """The hub revocations that count here, carried or direct."""
        return dict(self._counted)

    def spares(self, node: NodeId) -> bool:
        """True when no hub revocation can cut `node` now: the founder, or a hub since the newest
        handover (see the module doc)."""
        if node == self.founder:
            return True
        terms = self._hub_terms
        if terms is None or self.genesis is None:
            return False
        base = self._reach(self._founder_limit, ())
        return node in self._judge(base, terms.latest_term, Counter())[1]

    def refusal_for(self, node: NodeId) -> str | None:
        """Why `node` may not join this mesh again (one line), or None when nothing bars it.

        For the join path: an invite cannot bring back a node that was revoked.
        """
        name = node.hex()[:16]
        if node in self._revocations:
            reason = self._revocation_reasons.get(node, "")
            why = f" ({reason})" if reason else ""
            return f"node {name} was revoked from this mesh by its founder{why}; it cannot join again"
        cut = self._counted.get(node)
        if cut is not None:
            why = f" ({cut.reason})" if cut.reason else ""
            return (
                f"node {name} was revoked from this mesh by the hub of term {cut.term}{why}; "
                "it cannot join again"
            )
        return None

    def check_genesis(self, record: Record) -> bool:
        """True when `record` is the genesis record whose hash is this mesh's id."""
        if record.kind != GENESIS or record.seq != 1 or record.key != "":
            return False
        try:
            body = genesis_body(record)
        except WireError:
            return False
        return mesh_id_of(body) == self.mesh_id and body.founder == record.author

    def exempts(self, record: Record) -> bool:
        """True when `record` is admitted although a hub revocation cuts its author: a hub record
        the chain believes or would believe next, within the founder's own cut-off (see the
        module doc: a revocation must not hide the election of its target)."""
        base = self._base
        terms = self._hub_terms
        return (
            base is not None
            and terms is not None
            and record.seq <= base.get(record.author, 0)
            and terms.vouches(record)
        )

    # ---- taking records in -----------------------------------------------------------------

    def accept_genesis(self, record: Record) -> None:
        self.genesis = genesis_body(record)
        self._recompute()

    def accept_admission(self, record: Record) -> list[NodeId]:
        """Take in an admission already known to be by an admitted author; return newly admitted.

        Adding an admission only adds reachability, so a search from the new member alone
        gives the same result as recomputing from the founder, in time proportional to
        what it newly admits. With hub revocations held it recomputes instead: a new
        admission can make the author of one admitted, and so make it count.
        """
        member = admission_body(record).member
        self._admissions_by_author.setdefault(record.author, []).append((record.seq, member))
        if self._hub_acts or self._handovers:
            before = set(self._cutoff)
            self._recompute()
            return [node for node in self._cutoff if node not in before]
        if member in self._cutoff or not self.allows(record.author, record.seq):
            return []
        self._cutoff[member] = self._revocations.get(member, UNLIMITED)
        admitted = [member]
        queue = deque([member])
        while queue:
            author = queue.popleft()
            limit = self._cutoff[author]
            for seq, next_member in self._admissions_by_author.get(author, ()):
                if seq <= limit and next_member not in self._cutoff:
                    self._cutoff[next_member] = self._revocations.get(next_member, UNLIMITED)
                    admitted.append(next_member)
                    queue.append(next_member)
        return admitted

    def valid_revocation(self, record: Record) -> bool:
        """A `revocation` counts only from the founder (the hub's are `hub_revocation` records)."""
        return record.kind == REVOCATION and record.author == self.founder

    def accept_revocation(self, record: Record) -> dict[NodeId, int]:
        """Apply a founder's revocation; return members whose cut-off dropped, with the new one (0 = out)."""
        body = revocation_body(record)
        previous = self._revocations.get(body.member, UNLIMITED)
        self._revocations[body.member] = min(previous, body.last_valid_seq)
        if body.reason and body.last_valid_seq <= previous:
            self._revocation_reasons[body.member] = body.reason
        return self._recompute()

    def accept_hub_revocation(self, record: Record) -> dict[NodeId, int]:
        """Hold a hub revocation (it replaces the author's older one of the same member, as in the
        store) and recompute; return members whose cut-off dropped. Raises `WireError` when malformed."""
        body = hub_revocation_body(record)
        slot = (record.author, body.member)
        replaces = slot in self._hub_acts
        self._hub_acts[slot] = _HubAct(record.seq, body.term, body.member, body.last_valid_seq, body.reason)
        return self._recompute_unless_idle(record.author, body.term, replaces)

    def accept_handover(self, record: Record) -> dict[NodeId, int]:
        """Hold a handover and recompute; return members whose cut-off dropped. Raises `WireError`
        when malformed."""
        body = handover_body(record)
        self._handovers[(record.author, record.key)] = _Handover(record.seq, body.term, tuple(body.revoked))
        return self._recompute_unless_idle(record.author, body.term, False, prefix="handover_")

    def _recompute_unless_idle(
        self, author: NodeId, term: int, replaces: bool, prefix: str = ""
    ) -> dict[NodeId, int]:
        """Recompute after taking in a hub record, unless it cannot count now: its term is not
        believed here, or another node held it. Then only the verdicts change (the record is
        judged again when the chain changes), so a member signing records under terms it never
        held costs each node a dictionary update per record, not a recomputation."""
        terms = self._hub_terms
        if not replaces and terms is not None and self.genesis is not None:
            hub = terms.hub_of(term) if term <= terms.latest_term else None
            if hub != author:
                self.verdicts[prefix + (Verdict.UNPROVEN if hub is None else Verdict.NOT_HUB)] += 1
                return {}
        return self._recompute()

    def forget(self, purged: Iterable[Record]) -> dict[NodeId, int]:
        """The store purged these records (their author was cut): stop holding the hub's among them,
        as a replica that never accepted them does not; return members whose cut-off dropped.

        A purged hub record never counted (its author is neither the founder nor a hub since
        the newest handover, who are immune), so this changes the verdicts and nothing else;
        it recomputes all the same, which keeps that a fact rather than an assumption.
        """
        forgotten = False
        for record in purged:
            if record.kind == HUB_REVOCATION:
                try:
                    act_slot = (record.author, bytes.fromhex(record.key))
                except ValueError:  # pragma: no cover - held records' keys were checked
                    continue
                act = self._hub_acts.get(act_slot)
                if act is not None and act.seq == record.seq:
                    del self._hub_acts[act_slot]
                    forgotten = True
            elif record.kind == HANDOVER:
                slot = (record.author, record.key)
                handover = self._handovers.get(slot)
                if handover is not None and handover.seq == record.seq:
                    del self._handovers[slot]
                    forgotten = True
        return self._recompute() if forgotten else {}

    def use_hub_terms(self, terms: HubTerms | None) -> dict[NodeId, int]:
        """Judge hub revocations by `terms` from now on; return members whose cut-off dropped."""
        self._hub_terms = terms
        return self._recompute()

    def recheck(self) -> dict[NodeId, int]:
        """The hub chain changed: judge the hub's records again; return members whose cut-off dropped.

        Free when no hub revocation or handover is held.
        """
        if not self._hub_acts and not self._handovers:
            return {}
        return self._recompute()

    # ---- the hub's side ----------------------------------------------------------------------

    def carry_over(self, upto: int) -> list[CarriedRevocation]:
        """The hub revocations that counted up to term `upto`, for the next hub's handover."""
        terms = self._hub_terms
        if terms is None or self.genesis is None:
            return []
        base = self._reach(self._founder_limit, ())
        counted, _, _ = self._judge(base, min(upto, terms.latest_term), Counter())
        return [
            CarriedRevocation(member, cut.last_valid_seq, cut.reason)
            for member, cut in sorted(counted.items())
        ]

    def handover_due(self, term: int, hub: NodeId) -> list[CarriedRevocation] | None:
        """What `hub`, taking office in `term`, must carry over in a handover, or None when it need
        not sign one: nothing to carry, and the term before was its own (or there was none).

        A new hub signs one even when empty, so that its predecessor is no longer spared
        (only the hubs since the newest handover are immune to revocation).
        """
        terms = self._hub_terms
        if terms is None:
            return None
        carried = self.carry_over(term - 1)
        if carried or (term > 1 and terms.hub_of(term - 1) != hub):
            return carried
        return None

    # ---- computing -------------------------------------------------------------------------

    def _founder_limit(self, node: NodeId) -> int:
        return self._revocations.get(node, UNLIMITED)

    def _reach(self, limit: Callable[[NodeId], int], also: Iterable[tuple[NodeId, int]]) -> dict[NodeId, int]:
        """Breadth-first search from the founder (and `also`, with given cut-offs) over admissions."""
        cutoff: dict[NodeId, int] = {}
        if self.genesis is None:
            return cutoff
        founder = self.genesis.founder
        cutoff[founder] = limit(founder)
        queue = deque([founder])
        for node, seq in also:
            if node not in cutoff:
                cutoff[node] = seq
                queue.append(node)
        while queue:
            author = queue.popleft()
            author_limit = cutoff[author]
            for seq, member in self._admissions_by_author.get(author, ()):
                if seq <= author_limit and member not in cutoff:
                    cutoff[member] = limit(member)
                    queue.append(member)
        return cutoff

    def _recompute(self) -> dict[NodeId, int]:
        """Recompute every cut-off; return the members whose cut-off dropped, with the new one."""
        before = dict(self._cutoff)
        base = self._reach(self._founder_limit, ())
        verdicts: Counter[str] = Counter()
        counted: dict[NodeId, HubCut] = {}
        immune: frozenset[NodeId] = frozenset()
        terms = self._hub_terms
        if terms is not None and self.genesis is not None:
            counted, immune, verdicts = self._judge(base, terms.latest_term, verdicts)
        else:
            verdicts[Verdict.UNPROVEN] += len(self._hub_acts)
            verdicts["handover_" + Verdict.UNPROVEN] += len(self._handovers)
            verdicts = +verdicts  # no zero entries
        self.verdicts = verdicts
        self._counted = counted
        self._immune = immune
        if counted:

            def limit(node: NodeId) -> int:
                own = self._revocations.get(node, UNLIMITED)
                cut = counted.get(node)
                return own if cut is None or node in immune else min(own, cut.last_valid_seq)

            # The immune keep the cut-off the founder's revocations give them, even when a
            # hub revocation cut the member who admitted them.
            full = self._reach(limit, [(node, base[node]) for node in sorted(immune) if node in base])
            self._base = base
        else:
            full = base
            self._base = None
        self._replace_cutoffs(full)
        return {node: full.get(node, 0) for node, old in before.items() if full.get(node, 0) < old}

    def _judge(
        self, base: dict[NodeId, int], latest: int, verdicts: Counter[str]
    ) -> tuple[dict[NodeId, HubCut], frozenset[NodeId], Counter[str]]:
        """The hub revocations that count with the chain up to term `latest`, the nodes immune to
        them, and the verdict on every hub record held."""
        terms = self._hub_terms
        assert terms is not None and self.genesis is not None
        founder = self.genesis.founder
        hub_of = terms.hub_of

        # The newest handover: the highest term whose hub signed one (it may have signed several).
        valid: list[_Handover] = []
        for (author, _), handover in self._handovers.items():
            verdict = self._proven(author, handover.seq, handover.term, base, latest)
            if verdict is None:
                valid.append(handover)
            else:
                verdicts["handover_" + verdict] += 1
        newest = max((handover.term for handover in valid), default=0)
        for handover in valid:
            verdicts["handover_" + (Verdict.COUNTED if handover.term == newest else Verdict.SUPERSEDED)] += 1

        # Immune: the founder and every hub since the newest handover (the current hub included).
        immune = {founder}
        for term in range(max(newest, 1), latest + 1):
            hub = hub_of(term)
            if hub is not None:
                immune.add(hub)

        counted: dict[NodeId, HubCut] = {}

        def count(member: NodeId, last_valid_seq: int, term: int, reason: str) -> None:
            cut = counted.get(member)
            if cut is None or last_valid_seq < cut.last_valid_seq:
                counted[member] = HubCut(last_valid_seq, term, reason)

        for handover in valid:
            if handover.term == newest:
                for carried in handover.revoked:
                    if carried.member not in immune:
                        count(carried.member, carried.last_valid_seq, newest, carried.reason)

        for (author, member), act in self._hub_acts.items():
            verdict = self._proven(author, act.seq, act.term, base, latest)
            if verdict is None:
                if act.term < newest:
                    verdict = Verdict.SUPERSEDED
                elif any(hub_of(term) != author for term in range(act.term + 1, latest + 1)):
                    verdict = Verdict.DEPOSED
                elif member in immune:
                    verdict = Verdict.PROTECTED
                else:
                    verdict = Verdict.COUNTED
                    count(member, act.last_valid_seq, act.term, act.reason)
            verdicts[verdict] += 1
        return counted, frozenset(immune), verdicts

    def _proven(
        self, author: NodeId, seq: int, term: int, base: dict[NodeId, int], latest: int
    ) -> str | None:
        """None when `author` was the hub of `term` (believed, up to `latest`) and admitted at `seq`;
        else the verdict that refuses it."""
        assert self._hub_terms is not None
        if term > latest:
            return Verdict.UNPROVEN
        hub = self._hub_terms.hub_of(term)
        if hub is None:
            return Verdict.UNPROVEN
        if hub != author:
            return Verdict.NOT_HUB
        if seq > base.get(author, 0):
            return Verdict.NOT_ADMITTED
        return None

    def _replace_cutoffs(self, cutoff: dict[NodeId, int]) -> None:
        # Mutated in place, never rebound: the record store holds a reference for its hot path.
        self._cutoff.clear()
        self._cutoff.update(cutoff)

    @property
    def cutoffs(self) -> dict[NodeId, int]:
        """member -> highest seq of theirs that counts; read-only for callers."""
        return self._cutoff


def is_admission_kind(kind: str) -> bool:
    return kind in (GENESIS, ADMISSION, REVOCATION, HUB_REVOCATION, HANDOVER)


ADMISSION_ORDER = {GENESIS: 0, ADMISSION: 1, REVOCATION: 2, HUB_REVOCATION: 2, HANDOVER: 2}
"""Apply order inside a batch: a genesis before the admissions it roots, then revocations."""

__all__ = [
    "ADMISSION",
    "ADMISSION_ORDER",
    "UNLIMITED",
    "AdmissionLedger",
    "HubCut",
    "HubTerms",
    "Verdict",
    "is_admission_kind",
]
