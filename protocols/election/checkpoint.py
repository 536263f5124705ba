"""Hub checkpoints: a new member starts believing the hub chain at its inviter's latest term, not term 1.

The problem. The hub record of term T is believed only with signed votes of a majority
of the council of term T-1 (`protocols.election.hub_chain`), so a node that starts from
nothing but the genesis verifies every term since the founder's term 1: in a mesh whose
chain has 1000 terms, a joiner waits for anti-entropy to bring about 3000 hub and vote
records and checks about 4000 signatures before it knows who the hub is.

Algorithm. The inviter puts a *checkpoint* in its join reply: the hub record of the
newest term it believes (term C, with its proof), and its signature over that record,
the mesh and the joiner's id (`make_checkpoint`). The joiner checks it
(`check_checkpoint`): signed by the inviter named in the signed invite, which its
admission ledger holds as a member; for this mesh and this joiner; the hub record
signed, of this mesh, by an admitted author, keyed by its term, with distinct council
members, and its proof made of valid votes (signed, of this mesh, by admitted members,
for exactly term C, its ballot and its value; for term 1 the founder's rule applies in
full). What cannot be checked without term C-1 is whether those voters were a majority
of the council of C-1: that part is the inviter's word. The joiner's `HubChain` then
*anchors* at C (`HubChain.adopt`): term C is believed, its council is the electorate
of C+1, and every later term is believed by the ordinary vote rule as its record
arrives; records of terms below C are history the chain does not need and ignores. The
joiner keeps the signed checkpoint in its database, and after a restart it anchors there
again (`mesh.joining`), so its chain needs only the records since C.

Why trust the inviter. The joiner already trusts it with more: the invite the inviter
signed names the mesh, so a dishonest inviter could bring the joiner into a mesh of
its own making. What a dishonest member that is the inviter can make its joiner believe
with a forged checkpoint is a term it fabricated from votes it can sign itself (its own
and those of members it admitted): say, term 10^6 with itself as hub. That joiner then
follows a chain of the inviter's making (and, as its store fences by term, refuses the
real hub's council and lease records) until an operator notices; the signed checkpoint
it holds is the proof of who lied. It cannot make any other node believe anything (no
node takes a checkpoint except from its own inviter, at its join), cannot get votes of
honest members forged, and cannot reuse a checkpoint for another joiner (it names its
subject). A checkpoint signed by anyone but the inviter is refused and counted
(`CheckpointOutcome`), a member's or a stranger's alike. So the acting hub, which
admits when the inviter is away, sends none: it is reached through a hint outside the
invite's signed part, so nothing ties it to the joiner's trust, and a joiner admitted
there verifies from term 1 (slow on a long chain, but sound). A stale checkpoint (an
inviter that lags, or one that hands out an old but genuine record) costs only the
catching up: the later terms are believed by the vote rule, as for a node that was away.
A checkpoint behind what the chain already believes is stale and changes nothing; one
that contradicts a believed term is refused (`CONFLICT`).

The other option, checkpoint records signed by a council majority every K terms, was
not taken: a council's signatures mean something only to a node that knows the council,
i.e. the chain before it, so either the joiner trusts someone for that council anyway
(then the extra signatures add a signing round and new record kinds, not trust) or it
walks from term 1 checkpoint by checkpoint, which is still linear in the terms. It would
also give every old council's keys authority over later history for good.

Cost. The join reply grows by one hub record (about 1 KB with three votes) and 64 bytes
of signature. The joiner checks the checkpoint's signature, the record's and its votes'
(3 to 10 Ed25519 verifications, 5 with a council of five: 0.4-0.7 ms measured) instead
of (1 + a council majority) per term for every term, and it need not wait for
anti-entropy to bring the history before it knows the hub. With a 1000-term chain a
joiner believed the newest term 0.1-0.6 s after its join started, against 1.8-18 s from
term 1 (`bench/join_long_chain_bench.py`, docs/benchmarks.md).

Not done: purging hub and vote records below the anchor. The store keeps them
(anti-entropy still brings the whole history to a joiner, after it knows the hub), and
the election needs them: members that were away catch up through them (the `Decided`
answers and anti-entropy), and a chain verified from term 1 (the founder's, a node
joined by the hub) cannot skip any. Deleting records that one replica holds and others
do not would also make state digests differ and anti-entropy send them back, unless
every replica applies the same rule at the same point, as fencing does (a function of
the newest term, inside `RecordStore`). Doing it takes: a term floor in the store for
the `hub` and `vote` kinds (below `latest - K`: refused as fenced records are, purged
and reported with `RecordsPurged`), raised by the election core as it raises the fence;
and a checkpoint for members that fall behind the floor, not only for joiners.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from protocols.common.identity import NodeId, NodeIdentity
from protocols.common.identity import verify as ed25519_verify
from protocols.common.wire import WireError, WireStruct, decode, encode
from protocols.election.records import HUB, VOTE, HubBody, hub_body, term_key, vote_body
from protocols.records.admission import AdmissionLedger
from protocols.records.record import Key32, Record, Signature, Verifier, verify_record

CHECKPOINT_DOMAIN = "ileices/hub-checkpoint/v1"
MAX_CHECKPOINT_BYTES = 64 * 1024
"""A hub record with a full proof is under 8 KB; anything much larger is not a checkpoint."""


class CheckpointBody(WireStruct, frozen=True):
    """What the signer vouches for: `hub_record` decides the newest term it believes in `mesh`."""

    mesh: Key32
    signer: Key32
    subject: Key32
    """The joiner it was issued to."""
    hub_record: Record


class Checkpoint(WireStruct, frozen=True):
    body: CheckpointBody
    signature: Signature


class CheckpointOutcome(enum.StrEnum):
    """What a chain did with a checkpoint offered to it; counted as `checkpoint_<value>`."""

    ADOPTED = "adopted"
    STALE = "stale"
    """The chain already believes the checkpoint's term or a later one (and agrees with it)."""
    CONFLICT = "conflict"
    """The chain believes the checkpoint's term with another value: the checkpoint is refused."""
    MALFORMED = "malformed"
    WRONG_MESH = "wrong_mesh"
    WRONG_SUBJECT = "wrong_subject"
    NOT_INVITER = "not_inviter"
    """Signed by someone other than the member this joiner's trust rests on."""
    SIGNER_NOT_MEMBER = "signer_not_member"
    BAD_SIGNATURE = "bad_signature"
    BAD_HUB_RECORD = "bad_hub_record"
    BAD_PROOF = "bad_proof"

    @property
    def refused(self) -> bool:
        return self not in (CheckpointOutcome.ADOPTED, CheckpointOutcome.STALE)


@dataclass(frozen=True, slots=True)
class HubAnchor:
    """A checked checkpoint: the term a chain may start from, and the record deciding it."""

    term: int
    record: Record
    body: HubBody
    checkpoint: Checkpoint


def _signed_bytes(body: CheckpointBody) -> bytes:
    return encode((CHECKPOINT_DOMAIN, body))


def make_checkpoint(identity: NodeIdentity, mesh: bytes, subject: NodeId, hub_record: Record) -> Checkpoint:
    """`identity` vouches to `subject` that `hub_record` decides the newest term it believes."""
    body = CheckpointBody(mesh, identity.node_id, subject, hub_record)
    return Checkpoint(body, identity.sign(_signed_bytes(body)))


def encode_checkpoint(checkpoint: Checkpoint) -> bytes:
    return encode(checkpoint)


def decode_checkpoint(data: bytes) -> Checkpoint:
    """Decode a checkpoint (raises `WireError` when malformed or oversized)."""
    return decode(data, Checkpoint, max_bytes=MAX_CHECKPOINT_BYTES)


def check_checkpoint(
    checkpoint: Checkpoint,
    *,
    mesh_id: bytes,
    ledger: AdmissionLedger,
    trusted_signer: NodeId,
    subject: NodeId,
    verify: Verifier = ed25519_verify,
) -> HubAnchor | CheckpointOutcome:
    """The anchor `checkpoint` gives, or why it is refused; see the module docstring for what is checked."""
    body = checkpoint.body
    if body.mesh != mesh_id:
        return CheckpointOutcome.WRONG_MESH
    if body.subject != subject:
        return CheckpointOutcome.WRONG_SUBJECT
    if body.signer != trusted_signer:
        return CheckpointOutcome.NOT_INVITER
    if not ledger.is_member(body.signer):
        return CheckpointOutcome.SIGNER_NOT_MEMBER
    if not verify(body.signer, _signed_bytes(body), checkpoint.signature):
        return CheckpointOutcome.BAD_SIGNATURE
    record = body.hub_record
    if record.kind != HUB or record.mesh != mesh_id:
        return CheckpointOutcome.BAD_HUB_RECORD
    try:
        hub = hub_body(record)
    except WireError:
        return CheckpointOutcome.MALFORMED
    council = hub.value.council
    if (
        record.key != term_key(hub.term)
        or not ledger.allows(record.author, record.seq)
        or len(set(council)) != len(council)
        or not verify_record(record, verify)
    ):
        return CheckpointOutcome.BAD_HUB_RECORD
    if not _proof_checks(record, hub, mesh_id, ledger, verify):
        return CheckpointOutcome.BAD_PROOF
    return HubAnchor(hub.term, record, hub, checkpoint)


def _proof_checks(
    record: Record, hub: HubBody, mesh_id: bytes, ledger: AdmissionLedger, verify: Verifier
) -> bool:
    """Everything about the proof that does not need the council of the term before."""
    if hub.term == 1:
        founder = ledger.founder
        return founder is not None and record.author == founder and hub.value.hub == founder and not hub.proof
    if hub.ballot.number < 1 or not hub.proof:
        return False
    voters: set[NodeId] = set()
    for vote in hub.proof:
        if vote.kind != VOTE or vote.mesh != mesh_id or vote.author in voters:
            return False
        if not ledger.allows(vote.author, vote.seq):
            return False
        try:
            cast = vote_body(vote)
        except WireError:
            return False
        if cast.term != hub.term or cast.accepted != hub.ballot or cast.value != hub.value:
            return False
        if not verify_record(vote, verify):
            return False
        voters.add(vote.author)
    return True
