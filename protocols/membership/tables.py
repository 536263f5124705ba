"""The per-node data structures that keep SWIM's work per message O(1) instead of O(n).

A simulator drives thousands of membership cores in one process, each knowing every
member, so both the time per message and the bytes per known member count: these
structures avoid per-message scans, per-member index dicts and per-member objects.
Iteration order is always list or insertion order, never hash order, so results are
deterministic for a given random generator.
"""

from __future__ import annotations

import random

from protocols.common.identity import NodeId
from protocols.membership.messages import MemberUpdate


class BroadcastQueue:
    """Pending gossip, one update per member, bucketed by how often each was already sent.

    Taking the fewest-sent updates first (newest first among equals, as memberlist does)
    costs O(taken) plus a glance at each of at most `limit` buckets, instead of sorting
    the queue for every message. When the whole queue fits in one message (the common
    case) every bucket moves up one step at once, with no per-update bookkeeping.
    """

    __slots__ = ("_buckets", "pending")

    def __init__(self) -> None:
        self._buckets: list[dict[NodeId, MemberUpdate]] = [{}]  # index = times sent
        self.pending: dict[NodeId, dict[NodeId, MemberUpdate]] = {}
        """Member -> the bucket holding its pending update; read it only to test emptiness."""

    def __len__(self) -> int:
        return len(self.pending)

    def push(self, update: MemberUpdate) -> None:
        """Queue `update`, replacing whatever was pending about the same member."""
        node = update.node
        bucket_of = self.pending
        previous = bucket_of.get(node)
        if previous is not None:
            del previous[node]
        first = self._buckets[0]
        first[node] = update
        bucket_of[node] = first

    def take(self, count: int, limit: int) -> list[MemberUpdate]:
        """Up to `count` updates for one message; each is dropped after `limit` sends."""
        bucket_of = self.pending
        if not bucket_of:
            return []
        buckets = self._buckets
        if len(buckets) > limit:
            self._forget_beyond(limit)
        if len(bucket_of) <= count:
            return self._take_all(limit)
        chosen: list[tuple[int, NodeId]] = []
        for index, bucket in enumerate(buckets):
            if bucket:
                for node in reversed(bucket):
                    chosen.append((index, node))
                    if len(chosen) == count:
                        break
                if len(chosen) == count:
                    break
        taken: list[MemberUpdate] = []
        for index, node in chosen:  # moved only now, so no update is taken twice
            update = buckets[index].pop(node)
            taken.append(update)
            following = index + 1
            if following < limit:
                if following == len(buckets):
                    buckets.append({})
                buckets[following][node] = update
                bucket_of[node] = buckets[following]
            else:
                del bucket_of[node]
        return taken

    def _take_all(self, limit: int) -> list[MemberUpdate]:
        buckets = self._buckets
        taken: list[MemberUpdate] = []
        for bucket in buckets:
            if bucket:
                taken.extend(reversed(bucket.values()))
        buckets.insert(0, {})
        if len(buckets) > limit:
            for node in buckets.pop():
                del self.pending[node]
        return taken

    def _forget_beyond(self, limit: int) -> None:
        """The mesh shrank, so did the retransmit limit: updates sent that often are done."""
        for bucket in self._buckets[limit:]:
            for node in bucket:
                del self.pending[node]
        del self._buckets[max(1, limit) :]


class LiveSet:
    """The live peers as an array for O(1) random picks, with lazy removal.

    Removing a member only marks it stale (no per-member index to maintain); stale
    entries are dropped when a random pick lands on one, and the array is compacted
    once more than half of it is stale, so removal is O(1) amortized and the memory per
    member is one array slot. A member that comes back while its stale entry is still
    there reuses that entry, so the array never holds a member twice.
    """

    __slots__ = ("_count", "_items", "_stale")

    def __init__(self) -> None:
        self._items: list[NodeId] = []
        self._stale: dict[NodeId, None] = {}  # in `_items` but not live (or forgotten)
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, node: NodeId) -> None:
        """Mark a member live; the caller guarantees it was not live."""
        self._count += 1
        if node in self._stale:
            del self._stale[node]
        else:
            self._items.append(node)

    def discard(self, node: NodeId) -> None:
        """Mark a live member not live; the caller guarantees it was live."""
        self._count -= 1
        self._stale[node] = None
        if len(self._stale) > self._count + 16:
            self._compact()

    def snapshot(self) -> list[NodeId]:
        """The live members in array order: O(n), for a new probe round."""
        if self._stale:
            self._compact()
        return list(self._items)

    def sample(
        self, count: int, rng: random.Random, exclude: NodeId | None = None
    ) -> list[NodeId]:
        """Up to `count` distinct live members other than `exclude`, chosen with `rng`."""
        eligible = self._count - (1 if exclude is not None else 0)
        if count <= 0 or eligible <= 0:
            return []
        if count >= eligible:
            stale = self._stale
            return [node for node in self._items if node not in stale and node != exclude]
        items = self._items
        if not self._stale and exclude is None:
            return [items[i] for i in rng.sample(range(len(items)), count)]
        chosen: list[NodeId] = []
        while len(chosen) < count:
            index = rng.randrange(len(items))
            node = items[index]
            if node in self._stale:
                del self._stale[node]
                last = items.pop()
                if index < len(items):
                    items[index] = last
                continue
            if node != exclude and node not in chosen:
                chosen.append(node)
        return chosen

    def _compact(self) -> None:
        stale = self._stale
        self._items = [node for node in self._items if node not in stale]
        stale.clear()
