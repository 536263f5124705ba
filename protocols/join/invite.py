"""Invite tokens: a signed, copy-pasteable ticket into a mesh that survives typing mistakes.

A token carries the mesh id, the inviter, an invite id, expiry, allowed uses, and the
inviter's bootstrap addresses, signed by the inviter. It is written as `ileices1` plus
lowercase base32 of the payload followed by Reed-Solomon parity, so a few mistyped or
mangled characters are corrected, and anything worse is detected by a BLAKE2b checksum
and reported as such rather than sent to a peer.

What "uses" guarantees. Admissions for one invite are counted over every admission
record carrying its invite id in the admitting node's store, and each admitting node
signs them one at a time, persisting each before answering. Two nodes may admit: the
inviter, always, and the acting hub (lease held), only while its membership says the
inviter is dead or left; the token lists the hub of the time it was issued (`hubs`,
unsigned hints: the joiner authenticates whoever answers, and only an admission record
the ledger accepts lets it in), and the joiner tries the inviter first.

- While one node admits for an invite (the common case: the inviter is up, or it is
  down and one hub admits), at most `uses` nodes are ever admitted with it, also across
  restarts (the count comes from records).
- Each admitting node counts only the admissions it has seen, so when admitters miss
  each other's admissions (a partition in which the hub's side believes the inviter
  dead while the inviter keeps admitting on its side, or a hub killed before its
  admissions spread), each can admit up to `uses`: the bound is `uses` times the number
  of admitting nodes that did not see each other's admissions, i.e. `2 * uses` for the
  inviter and one hub in one partition, plus `uses` for each later hub that was elected
  before the earlier admissions reached it. Leases keep hubs from overlapping in time,
  but not from missing records.

Terms are checked when a token is made, not only when it is used: the wire schema caps
`uses` at `MAX_USES`, so a token promising more would be refused as malformed by every
joiner, and one whose time to live is not positive would be expired when issued. Both
are refused at issue time with the reason, instead of handing out a dead token.

Telling damage apart. Base32 without padding cannot end on every length, and the
Reed-Solomon parity can rebuild characters known to be missing (erasures) twice as
readily as wrong ones, so a token that does not decode is tried as "some characters
missing at its end" and as "some characters too many at its end" before it is called
damaged: a truncated paste is then reported as truncated, with the count, rather than as
foreign characters or too many typos.
"""

from __future__ import annotations

import base64
import binascii
import enum
import math
from typing import Annotated

import msgspec
import reedsolo

from protocols.common.hashing import digest
from protocols.common.identity import NodeIdentity
from protocols.common.identity import verify as ed25519_verify
from protocols.common.wire import WireError, WireStruct, decode, encode
from protocols.records.record import Key32, Signature

TOKEN_PREFIX = "ileices1"
PARITY_BYTES = 16  # corrects up to 8 damaged bytes per 255-byte block
CHECKSUM_BYTES = 4
SIGNING_DOMAIN = "ileices/invite/v1"
MAX_ADDRESSES = 8
MAX_HUB_CONTACTS = 2
MAX_USES = 1_000_000
"""The most uses a token can carry: the wire schema's bound on `InviteBody.uses`."""
BASE32_ALPHABET = frozenset("abcdefghijklmnopqrstuvwxyz234567")
_VALID_REMAINDERS = frozenset({0, 2, 4, 5, 7})
"""Unpadded base32 lengths modulo 8 that some byte string encodes to (1, 3 and 6 do not)."""
MAX_MISSING_DIAGNOSED = PARITY_BYTES * 8 // 5
"""Characters lost at the end that the parity can still rebuild (16 erased bytes), so
that a truncation can be recognised and counted."""
MAX_EXTRA_DIAGNOSED = 16

_codec = reedsolo.RSCodec(PARITY_BYTES)


class InviteProblem(enum.StrEnum):
    NOT_A_TOKEN = "not a token"
    DAMAGED = "damaged"
    TRUNCATED = "truncated"
    TOO_LONG = "too long"
    TAMPERED = "tampered"
    EXPIRED = "expired"
    WRONG_MESH = "wrong mesh"
    USED_UP = "used up"
    INVITER_NOT_MEMBER = "inviter not a member"


class InviteError(ValueError):
    """Why a token cannot be used, in one line a user can act on."""

    def __init__(self, problem: InviteProblem, detail: str) -> None:
        super().__init__(f"invite token {problem.value}: {detail}")
        self.problem = problem


Address = Annotated[str, msgspec.Meta(max_length=256)]


class InviteBody(WireStruct, frozen=True):
    mesh: Key32
    inviter: Key32
    invite_id: Annotated[bytes, msgspec.Meta(min_length=16, max_length=16)]
    expires_at: float
    uses: Annotated[int, msgspec.Meta(ge=1, le=MAX_USES)]
    addresses: Annotated[list[Address], msgspec.Meta(max_length=MAX_ADDRESSES)]


class HubContact(WireStruct, frozen=True):
    """Where the hub of the time the invite was made listens: a second door when the inviter is away."""

    node: Key32
    addresses: Annotated[list[Address], msgspec.Meta(max_length=MAX_ADDRESSES)]


class Invite(WireStruct, frozen=True):
    body: InviteBody
    signature: Signature
    hubs: Annotated[list[HubContact], msgspec.Meta(max_length=MAX_HUB_CONTACTS)] = msgspec.field(
        default_factory=list
    )
    """Outside the signed body on purpose: tokens made before hubs existed stay valid, and
    a forged hint can only send the joiner to a node that cannot admit it."""

    def signed_bytes(self) -> bytes:
        return _signed_bytes(self.body)


def _signed_bytes(body: InviteBody) -> bytes:
    return encode((SIGNING_DOMAIN, body))


class InviteTermsError(ValueError):
    """The terms asked for cannot make a usable token (no uses, too many, or already expired)."""


def check_terms(ttl_s: float, uses: int) -> None:
    """Refuse terms whose token no joiner could use; the message names the bound."""
    _check_uses(uses)
    if not math.isfinite(ttl_s) or ttl_s <= 0:
        raise InviteTermsError(
            f"the time to live must be more than 0 seconds, got {ttl_s:g}: "
            "the token would be expired when issued"
        )


def _check_uses(uses: int) -> None:
    if not 1 <= uses <= MAX_USES:
        raise InviteTermsError(
            f"uses must be between 1 and {MAX_USES} (the most a token can carry), got {uses}"
        )


def create_invite(
    inviter: NodeIdentity,
    mesh: bytes,
    invite_id: bytes,
    expires_at: float,
    uses: int,
    addresses: list[str],
    hubs: list[HubContact] | None = None,
) -> Invite:
    """A signed invite; raises `InviteTermsError` for a number of uses no token can carry."""
    _check_uses(uses)
    body = InviteBody(mesh, inviter.node_id, invite_id, expires_at, uses, addresses[:MAX_ADDRESSES])
    return Invite(body, inviter.sign(_signed_bytes(body)), list(hubs or [])[:MAX_HUB_CONTACTS])


def encode_token(invite: Invite) -> str:
    payload = encode(invite)
    checked = payload + digest(payload)[:CHECKSUM_BYTES]
    protected = bytes(_codec.encode(checked))
    return TOKEN_PREFIX + base64.b32encode(protected).decode("ascii").rstrip("=").lower()


def decode_token(text: str) -> Invite:
    """Parse a token, repairing small typing damage; raises `InviteError` saying what is wrong."""
    cleaned = "".join(text.split()).lower()
    if not cleaned.startswith(TOKEN_PREFIX) or len(cleaned) < len(TOKEN_PREFIX) + 16:
        raise InviteError(InviteProblem.NOT_A_TOKEN, f"expected text starting with {TOKEN_PREFIX!r}")
    body = cleaned[len(TOKEN_PREFIX) :]
    foreign = sorted(set(body) - BASE32_ALPHABET)
    if foreign:
        raise _extra_at_end(body) or InviteError(
            InviteProblem.NOT_A_TOKEN,
            f"contains characters outside base32 ({' '.join(repr(c) for c in foreign[:5])}); "
            "a token has only the letters a-z and the digits 2-7",
        )
    try:
        payload = _unprotect(body)
    except InviteError as exc:
        raise _truncated(body) or _extra_at_end(body) or _impossible_length(body) or exc from None
    try:
        return decode(payload, Invite)
    except WireError as exc:
        raise InviteError(InviteProblem.NOT_A_TOKEN, str(exc)) from None


def _unprotect(body: str, erased_from: int | None = None) -> bytes:
    """The checked payload inside base32 `body`, its bytes from `erased_from` on treated as lost."""
    if len(body) % 8 not in _VALID_REMAINDERS:
        raise InviteError(InviteProblem.DAMAGED, "its length is not one a token can have")
    try:
        raw = base64.b32decode(body.upper() + "=" * (-len(body) % 8))
    except (binascii.Error, ValueError):
        raise InviteError(InviteProblem.NOT_A_TOKEN, "contains characters outside base32") from None
    erasures = None if erased_from is None else list(range(erased_from, len(raw)))
    try:
        checked = bytes(_codec.decode(raw, erase_pos=erasures)[0])
    except reedsolo.ReedSolomonError:
        raise InviteError(InviteProblem.DAMAGED, "too many characters are wrong to repair it") from None
    payload, checksum = checked[:-CHECKSUM_BYTES], checked[-CHECKSUM_BYTES:]
    if digest(payload)[:CHECKSUM_BYTES] != checksum:
        raise InviteError(InviteProblem.DAMAGED, "checksum mismatch; copy the token again")
    return payload


def _truncated(body: str) -> InviteError | None:
    """If `body` is a token cut short by a few characters, say how many are missing.

    The missing characters are appended as filler characters whose bytes are marked as
    erasures; only the true count lets the parity rebuild them and the checksum agree.
    """
    first_lost = len(body) * 5 // 8
    for missing in range(1, MAX_MISSING_DIAGNOSED + 1):
        padded = body + "a" * missing
        if len(padded) % 8 not in _VALID_REMAINDERS:
            continue
        if len(padded) * 5 // 8 - first_lost > PARITY_BYTES:
            break
        try:
            _unprotect(padded, erased_from=first_lost)
        except InviteError:
            continue
        return InviteError(
            InviteProblem.TRUNCATED,
            f"{_characters(missing)} missing at its end; copy the whole token again",
        )
    return None


def _extra_at_end(body: str) -> InviteError | None:
    """If `body` is a whole token followed by a few stray characters, say how many."""
    for extra in range(1, min(MAX_EXTRA_DIAGNOSED, len(body) - 1) + 1):
        candidate = body[:-extra]
        if set(candidate) - BASE32_ALPHABET:
            continue
        try:
            _unprotect(candidate)
        except InviteError:
            continue
        return InviteError(
            InviteProblem.TOO_LONG,
            f"{_characters(extra)} too many at its end ({body[-extra:]!r}); copy only the token",
        )
    return None


def _impossible_length(body: str) -> InviteError | None:
    """Whatever else is wrong, a length no token can have means characters were lost or added."""
    if len(body) % 8 in _VALID_REMAINDERS:
        return None
    return InviteError(
        InviteProblem.DAMAGED,
        f"no token is {len(TOKEN_PREFIX) + len(body)} characters long: some are missing or extra "
        "(a truncated copy?); copy the whole token again",
    )


def _characters(count: int) -> str:
    return f"{count} character is" if count == 1 else f"{count} characters are"


def check_invite(invite: Invite, *, mesh: bytes | None, now: float) -> None:
    """Checks a token holder can make without the mesh's records: signature, expiry, mesh."""
    if not ed25519_verify(invite.body.inviter, invite.signed_bytes(), invite.signature):
        raise InviteError(InviteProblem.TAMPERED, "its signature does not match its contents")
    if mesh is not None and invite.body.mesh != mesh:
        raise InviteError(
            InviteProblem.WRONG_MESH,
            f"it is for mesh {invite.body.mesh.hex()[:16]}, this node is in {mesh.hex()[:16]}",
        )
    if now >= invite.body.expires_at:
        raise InviteError(InviteProblem.EXPIRED, f"it expired {now - invite.body.expires_at:.0f}s ago")


def check_uses(invite: Invite, used: int) -> None:
    if used >= invite.body.uses:
        raise InviteError(InviteProblem.USED_UP, f"all {invite.body.uses} use(s) have been taken")
