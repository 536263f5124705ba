"""Where shares go, and how many: rendezvous hashing over the nodes that offer room.

Rendezvous (highest random weight) hashing, Thaler & Ravishankar 1996: share i of
artifact a goes to the node with the highest `blake3(a || i || node)`. Why: every node
computes the same answer from the same candidates with no coordinator and nothing
stored; a node leaving moves only the shares it was first choice for (each moves to
the next node of its own ranking), and a node joining takes only the shares it now
ranks first for: about n/c shares per artifact among c candidates, the minimum any
placement can move. Ranking c candidates costs c BLAKE3 hashes of 68 bytes and a
sort, O(c log c): about 1 ms per share index at c = 1000.

`choose_holders` adds the constraints HRW alone does not give: a distinct node per
share, nodes with room for it, and, where possible, a different machine (address
group) per share, so one host going down takes at most one share. Each index takes
the first node of its own ranking that fits; a node removed from the candidates
therefore moves only its own shares, except in the rare case that its replacement was
also another share's first choice (probability about n/c).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import blake3

from protocols.common.identity import NodeId
from protocols.storage.records import MAX_SHARES

_MULTIADDR_HOSTS = frozenset({"ip4", "ip6", "dns", "dns4", "dns6", "dnsaddr"})


@dataclass(frozen=True, slots=True)
class Candidate:
    """A node that could hold a share: its free room, and the machine it runs on."""

    free_bytes: int
    address_group: str
    """The host part of the node's first address; nodes on one machine share it."""


def address_group(address: str) -> str:
    """The host part of an address: `/ip4/10.0.0.5/udp/4001/quic-v1` and `10.0.0.5:4001` give `10.0.0.5`."""
    if address.startswith("/"):
        parts = address.split("/")
        if len(parts) > 2 and parts[1] in _MULTIADDR_HOSTS:
            return parts[2]
        return address
    host, colon, _port = address.rpartition(":")
    if colon and host:
        return host.strip("[]")
    return address


def hrw_score(artifact_id: bytes, index: int, node: NodeId) -> bytes:
    """The rendezvous weight of `node` for share `index`: BLAKE3 of id, 4-byte big-endian index and node."""
    return blake3.blake3(artifact_id + index.to_bytes(4, "big") + node).digest()


def hrw_rank(artifact_id: bytes, index: int, candidates: Iterable[NodeId]) -> list[NodeId]:
    """`candidates` ordered by rendezvous weight for share `index` of `artifact_id`, highest first."""
    prefix = artifact_id + index.to_bytes(4, "big")
    scored = [(blake3.blake3(prefix + node).digest(), node) for node in candidates]
    scored.sort(reverse=True)
    return [node for _score, node in scored]


def choose_holders(
    artifact_id: bytes,
    wanted: Sequence[int],
    candidates: Mapping[NodeId, Candidate],
    *,
    exclude: set[NodeId],
    share_size: int,
) -> dict[int, NodeId]:
    """A node for each share index in `wanted` (as many as possible; fewer when candidates run out).

    Each share goes to a distinct node not in `exclude` with at least `share_size` free
    bytes, the first of its HRW ranking whose address group this artifact does not use
    yet (the groups of excluded candidates, its current holders, count as used), else
    the first that fits at all. Cost: O(len(wanted) * c log c).
    """
    used_groups = {candidates[node].address_group for node in exclude if node in candidates}
    taken: set[NodeId] = set()
    chosen: dict[int, NodeId] = {}
    fitting = [
        node for node, info in candidates.items() if node not in exclude and info.free_bytes >= share_size
    ]
    for index in wanted:
        fallback: NodeId | None = None
        pick: NodeId | None = None
        for node in hrw_rank(artifact_id, index, fitting):
            if node in taken:
                continue
            if candidates[node].address_group not in used_groups:
                pick = node
                break
            if fallback is None:
                fallback = node
        pick = pick if pick is not None else fallback
        if pick is None:
            continue
        chosen[index] = pick
        taken.add(pick)
        used_groups.add(candidates[pick].address_group)
    return chosen


def adapt_parameters(k: int, n: int, nodes: int) -> tuple[int, int]:
    """The (k, n) an upload uses in a mesh of `nodes` storage nodes.

    One share per node, so n cannot exceed the nodes: with fewer nodes than asked, n
    becomes the node count and k keeps its proportion of n (rounded, at least 1), at most
    n - 1 so that some holder may still be lost. What was asked is kept when the mesh is
    big enough: a user who asks for 8-of-10 wants cheap storage, not more safety. The
    artifact survives n - k holder losses either way (the `put` output says so). In a
    mesh of one node this is a single copy, all the redundancy there can be.
    """
    if not 1 <= k <= n <= MAX_SHARES:
        raise ValueError(f"need 1 <= k <= n <= {MAX_SHARES}, got k={k}, n={n}")
    if nodes >= n:
        return k, n
    fewer = max(1, nodes)
    scaled = max(1, min(k, round(k * fewer / n)))
    return (min(scaled, fewer - 1) if fewer > 1 else 1), fewer


def repair_threshold(k: int, n: int, margin: float = 0.5) -> int:
    """Healthy shares at or below which a repair is due: `k + ceil((n - k) * margin)`, within [k, n - 1].

    Margin 0 repairs at the last moment (exactly k left: one more loss is fatal), 1 at
    the first loss; 0.5 repairs once half the redundancy is gone, which leaves the
    repair as many further losses to survive as were lost already. With n == k there is
    no redundancy: the threshold is n - 1 (below k), so the artifact is lost, not repaired.
    """
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
    if not 0.0 <= margin <= 1.0:
        raise ValueError("margin must be within [0, 1]")
    return min(k + math.ceil((n - k) * margin), n - 1)
