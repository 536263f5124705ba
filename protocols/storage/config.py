"""The storage protocol's knobs: redundancy, how often the hub checks and audits, and how long it waits.

Defaults: 3-of-10 shares (any 7 holders may be lost; 3.3x the artifact's size stored),
repair once 3 or more shares are gone (`repair_threshold`: 7 healthy of 10 with margin
0.5), a check of changed artifacts every 5 s and of every artifact once a minute, one
audit every 30 s. At 1000 nodes and 2000 artifacts a full check walks 20,000 holdings,
a few milliseconds once a minute on the hub alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocols.storage.records import MAX_SHARES

DAY_S = 86_400.0


@dataclass(frozen=True, slots=True)
class StorageConfig:
    """Knobs of one storage core. Every node of a mesh should use the same values."""

    k: int = 3
    """Shares needed to rebuild an artifact (the default an upload asks for)."""
    n: int = 10
    """Shares stored per artifact (the default an upload asks for; fewer in a small mesh)."""
    repair_margin: float = 0.5
    """Fraction of the redundancy (n - k) that may be lost before a repair is due (`repair_threshold`)."""
    check_interval_s: float = 5.0
    """Seconds between checks of the artifacts that changed (a death triggers one at once)."""
    audit_interval_s: float = 30.0
    """Seconds between two audits the acting hub asks for."""
    max_concurrent_repairs: int = 8
    """Repairs in flight at once; the most at-risk artifacts go first. Each runs on its first
    target's machine, not the hub's, so this bounds the hub's bookkeeping, not one link."""
    repair_timeout_s: float = 600.0
    """A repair not reported finished within this is deemed failed and retried."""
    audit_penalty_s: float = 600.0
    """A share whose audit failed does not count as healthy for this long (or until an audit passes)."""
    default_ttl_s: float = 30 * DAY_S
    """Lifetime an upload gives an artifact unless told otherwise (0 would be never)."""
    full_check_interval_s: float = 60.0
    """Seconds between checks of every artifact (catches penalties that ran out, settled uploads)."""
    settle_s: float = 30.0
    """An artifact younger than this (wall time since its `created_at`) is neither repaired nor declared
    lost: its holders' storage records may still be on their way."""

    def __post_init__(self) -> None:
        if not 1 <= self.k <= self.n <= MAX_SHARES:
            raise ValueError(f"need 1 <= k <= n <= {MAX_SHARES}")
        if not 0.0 <= self.repair_margin <= 1.0:
            raise ValueError("repair_margin must be within [0, 1]")
        for name in (
            "check_interval_s",
            "audit_interval_s",
            "repair_timeout_s",
            "full_check_interval_s",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        if self.max_concurrent_repairs < 1:
            raise ValueError("max_concurrent_repairs must be at least 1")
        if not all(value >= 0 for value in (self.audit_penalty_s, self.default_ttl_s, self.settle_s)):
            raise ValueError("audit_penalty_s, default_ttl_s and settle_s must not be negative")
