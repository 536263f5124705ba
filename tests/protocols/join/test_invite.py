"""Invite tokens: round trip, typo repair, and a one-line reason for every bad token.

Truncation and stray characters are told apart from typing damage, and terms no token
can carry are refused when the token is made rather than by every joiner.
"""

from __future__ import annotations

import random

import msgspec
import pytest

from protocols.common.identity import NodeIdentity
from protocols.join.invite import (
    TOKEN_PREFIX,
    Invite,
    InviteError,
    InviteProblem,
    check_invite,
    check_uses,
    create_invite,
    decode_token,
    encode_token,
)

INVITER = NodeIdentity.from_seed(b"\x01" * 32)
MESH = b"\x02" * 32
INVITE = create_invite(INVITER, MESH, b"\x03" * 16, 1000.0, 2, ["/ip4/127.0.0.1/udp/4001/quic-v1"])


def test_round_trip_and_a_pasted_token_with_whitespace() -> None:
    token = encode_token(INVITE)
    assert token.startswith(TOKEN_PREFIX) and token == token.strip()
    assert decode_token(token) == INVITE
    assert decode_token("  " + token[:40] + "\n" + token[40:].upper() + " ") == INVITE
    check_invite(decode_token(token), mesh=MESH, now=999.0)


def test_a_few_mistyped_characters_are_repaired() -> None:
    token = encode_token(INVITE)
    rng = random.Random(1)
    for _ in range(20):
        chars = list(token)
        for position in rng.sample(range(len(TOKEN_PREFIX), len(token)), 3):
            chars[position] = rng.choice(
                [c for c in "abcdefghijklmnopqrstuvwxyz234567" if c != chars[position]]
            )
        assert decode_token("".join(chars)) == INVITE


def test_heavy_damage_is_detected_not_sent() -> None:
    token = encode_token(INVITE)
    damaged = (
        token[: len(TOKEN_PREFIX)]
        + "".join("a" if c != "a" else "b" for c in token[len(TOKEN_PREFIX) : len(TOKEN_PREFIX) + 60])
        + token[len(TOKEN_PREFIX) + 60 :]
    )
    with pytest.raises(InviteError) as info:
        decode_token(damaged)
    assert info.value.problem is InviteProblem.DAMAGED


@pytest.mark.parametrize("text", ["", "hello", "ileices1", "ileices1!!!!!!!!!!!!!!!!!!!!!!!!", "x" * 300])
def test_not_a_token(text: str) -> None:
    with pytest.raises(InviteError) as info:
        decode_token(text)
    assert info.value.problem in (InviteProblem.NOT_A_TOKEN, InviteProblem.DAMAGED)
    assert str(info.value).startswith("invite token ")


def test_tampered_token_is_refused() -> None:
    forged = Invite(msgspec.structs.replace(INVITE.body, uses=1000), INVITE.signature)
    with pytest.raises(InviteError) as info:
        check_invite(decode_token(encode_token(forged)), mesh=MESH, now=0.0)
    assert info.value.problem is InviteProblem.TAMPERED


def test_expired_wrong_mesh_and_used_up() -> None:
    with pytest.raises(InviteError) as info:
        check_invite(INVITE, mesh=MESH, now=1000.0)
    assert info.value.problem is InviteProblem.EXPIRED
    with pytest.raises(InviteError) as info:
        check_invite(INVITE, mesh=b"\x09" * 32, now=0.0)
    assert info.value.problem is InviteProblem.WRONG_MESH
    check_uses(INVITE, used=1)
    with pytest.raises(InviteError) as info:
        check_uses(INVITE, used=2)
    assert info.value.problem is InviteProblem.USED_UP


@pytest.mark.parametrize("missing", [1, 2, 3, 5, 8, 13, 25])
def test_a_truncated_token_says_how_many_characters_are_missing(missing: int) -> None:
    token = encode_token(INVITE)
    with pytest.raises(InviteError) as info:
        decode_token(token[:-missing])
    assert info.value.problem.value == "truncated"
    counted = "1 character is" if missing == 1 else f"{missing} characters are"
    assert str(info.value) == (
        f"invite token truncated: {counted} missing at its end; copy the whole token again"
    )


def test_a_truncated_token_with_typos_is_still_reported_as_truncated() -> None:
    chars = list(encode_token(INVITE)[:-4])
    for position in (len(TOKEN_PREFIX) + 3, len(TOKEN_PREFIX) + 40):
        chars[position] = "a" if chars[position] != "a" else "b"
    with pytest.raises(InviteError, match="4 characters are missing") as info:
        decode_token("".join(chars))
    assert info.value.problem.value == "truncated"


@pytest.mark.parametrize("extra", ["a", "q7", "xyz", ".", "!!"])
def test_a_token_with_extra_characters_at_its_end_says_so(extra: str) -> None:
    with pytest.raises(InviteError) as info:
        decode_token(encode_token(INVITE) + extra)
    assert info.value.problem.value == "too long"
    counted = "1 character is" if len(extra) == 1 else f"{len(extra)} characters are"
    assert f"{counted} too many at its end ({extra!r})" in str(info.value)


def test_characters_lost_in_the_middle_are_damage_not_foreign_characters() -> None:
    token = encode_token(INVITE)
    with pytest.raises(InviteError) as info:
        decode_token(token[:100] + token[102:])  # a length no token can have
    assert info.value.problem is InviteProblem.DAMAGED
    assert "some are missing or extra" in str(info.value)
    with pytest.raises(InviteError) as info:
        decode_token(token[:100] + "0" + token[101:])
    assert info.value.problem is InviteProblem.NOT_A_TOKEN and "'0'" in str(info.value)


def test_terms_no_token_can_carry_are_refused_when_it_is_made() -> None:
    from protocols.join.invite import MAX_USES, InviteTermsError, check_terms

    for uses in (0, -1, MAX_USES + 1):
        with pytest.raises(InviteTermsError, match=f"between 1 and {MAX_USES}"):
            create_invite(INVITER, MESH, b"\x03" * 16, 1000.0, uses, [])
        with pytest.raises(InviteTermsError):
            check_terms(60.0, uses)
    for ttl in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(InviteTermsError, match="time to live must be more than 0"):
            check_terms(ttl, 1)
    check_terms(0.001, MAX_USES)
    most = create_invite(INVITER, MESH, b"\x03" * 16, 1000.0, MAX_USES, [])
    assert decode_token(encode_token(most)).body.uses == MAX_USES
