"""Invite tokens: round trip, typo repair, and a one-line reason for every bad token."""

from __future__ import annotations

import random

import msgspec
import pytest

from protocols.identity import NodeIdentity
from protocols.invite import (
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
