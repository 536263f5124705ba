"""How a protocol's timings grow with the size of the mesh, shared by every protocol that scales."""

from __future__ import annotations

import math


def stretch(scale_from: int | None, live_count: int) -> float:
    """`log2(n) / log2(scale_from)` above `scale_from` members, else 1: how timings grow with a mesh."""
    if scale_from is None or live_count <= scale_from:
        return 1.0
    return math.log2(live_count) / math.log2(scale_from)
