"""What a node remembers of who was live, so that its next start contacts them.

A restarted node knows every member the ledger ever admitted, including the many that
left or died long ago. Adding them all to membership, as a fresh start must, makes the
node probe each departed member, suspect it and bury it again. Serf keeps a snapshot of
its member list for the same reason; this is ours: the live set, saved with the records,
read once at the next start.
"""

from __future__ import annotations

import random

from protocols.common.identity import NodeId
from protocols.membership.core import NODE_ID_SIZE

LIVE_VIEW_META = "live_members"
"""The `meta` row of the record database that holds the saved view."""
LIVE_VIEW_SAVE_S = 5.0
"""How often a running node saves its live set, when it changed."""
RESTART_SEEDS = 3
"""Members a restarted node asks for their whole member table (a membership join)."""
RESTART_ANSWER_WAIT_S = 20.0
"""How long a restarted node waits for any member to answer before it contacts every
admitted member: one away for long may find all it last saw live gone, and others up."""


def encode_live_view(live: list[NodeId]) -> bytes:
    """The view as stored: the ids concatenated, in a stable order."""
    return b"".join(sorted(live))


def restart_contacts(
    members: list[NodeId], saved: bytes | None, rng: random.Random
) -> tuple[list[NodeId], list[NodeId]]:
    """(members to add to membership, seeds to join through) for a node that restarts.

    The members are those of `members` (the ledger's, self excluded) that were live when
    the view was saved; with no usable view, or none of those still admitted, all of
    `members`, as on a first start. The seeds are a few of them, whose replies bring
    the current member table, members that joined while this node was away included.
    """
    contacts = members
    if saved and len(saved) % NODE_ID_SIZE == 0:
        seen = {saved[i : i + NODE_ID_SIZE] for i in range(0, len(saved), NODE_ID_SIZE)}
        contacts = [member for member in members if member in seen] or members
    seeds = rng.sample(contacts, min(RESTART_SEEDS, len(contacts)))
    return contacts, seeds
