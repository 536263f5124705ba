"""A restarted node contacts the members live at its last look, not every member ever admitted."""

from __future__ import annotations

import random

from mesh.live_view import RESTART_SEEDS, encode_live_view, restart_contacts
from protocols.common.hashing import digest

MEMBERS = [digest(bytes([i])) for i in range(10)]


def test_a_saved_view_leaves_out_members_that_were_gone() -> None:
    live_then = MEMBERS[:4]
    contacts, seeds = restart_contacts(MEMBERS, encode_live_view(live_then), random.Random(1))
    assert contacts == live_then  # in the ledger's order
    assert len(seeds) == RESTART_SEEDS and set(seeds) <= set(live_then)


def test_a_member_revoked_since_the_save_is_not_contacted() -> None:
    still_admitted = MEMBERS[1:]
    contacts, _ = restart_contacts(still_admitted, encode_live_view(MEMBERS[:3]), random.Random(1))
    assert contacts == MEMBERS[1:3]


def test_without_a_usable_view_every_member_is_contacted() -> None:
    for saved in (None, b"", b"\x01" * 33, encode_live_view([digest(b"stranger")])):
        contacts, seeds = restart_contacts(MEMBERS, saved, random.Random(2))
        assert contacts == MEMBERS
        assert len(seeds) == RESTART_SEEDS


def test_a_lone_member_has_no_seeds() -> None:
    assert restart_contacts([], encode_live_view(MEMBERS[:2]), random.Random(3)) == ([], [])
    contacts, seeds = restart_contacts(MEMBERS[:1], None, random.Random(3))
    assert contacts == seeds == MEMBERS[:1]


def test_the_encoding_does_not_depend_on_the_order_of_the_live_set() -> None:
    assert encode_live_view(MEMBERS[:5]) == encode_live_view(list(reversed(MEMBERS[:5])))
