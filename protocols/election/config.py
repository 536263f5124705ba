"""The election's timing knobs, their defaults, and the inequalities that keep them safe.

Defaults match the membership defaults (a dead node is declared in about 3 s, p95 about
4 s): a hub that dies is replaced about one lease (3 s) plus a randomized stand-off
(up to 1 s) plus two round trips later, inside twice the failure-detection p95.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocols.election.records import MAX_COUNCIL, MAX_LEASE_S


@dataclass(frozen=True, slots=True)
class ElectionConfig:
    """Knobs of one election core. Every node of a mesh should use the same values."""

    council_size: int = 5
    """Members the hub names to its council (itself included) when that many are live."""
    lease_s: float = 3.0
    """How long one renewal binds the council: no other hub can be elected within it."""
    renew_interval: float = 1.0
    """Seconds between the hub's lease renewals; several renewals fit in one lease, so one lost
    round of acknowledgements does not cost the lease."""
    drift_margin: float = 0.05
    """Fraction of the lease the hub gives up to clock-rate drift (covers rates off by 2.5 %)."""
    election_jitter: float = 1.0
    """Council members wait a random 0..this many seconds past the lease before standing, so
    one usually stands alone."""
    round_timeout: float = 0.4
    """A Paxos phase that gathers no majority within this is abandoned and retried later."""
    lease_record_interval: float = 1.0
    """Seconds between `lease` records the hub publishes for observers (status), at most."""
    silent_after_renewals: float = 2.5
    """A council member that has heard no renewal for this many renew intervals deems the hub
    silent: it stands, and votes for others, while its promise to the hub still runs (the
    winner waits that promise out before acting), so the election overlaps the old lease."""
    reconfigure_interval: float = 2.0
    """The hub replaces dead council members (by electing itself into the next term) at most this often."""

    def __post_init__(self) -> None:
        if not 1 <= self.council_size <= MAX_COUNCIL:
            raise ValueError(f"council_size must be within 1..{MAX_COUNCIL}")
        if not 0 < self.lease_s <= MAX_LEASE_S:
            raise ValueError(f"lease_s must be within (0, {MAX_LEASE_S}]")
        if not 0 <= self.drift_margin < 0.5:
            raise ValueError("drift_margin must be within [0, 0.5)")
        if not 0 < self.renew_interval < self.lease_s * (1 - self.drift_margin) / 2:
            raise ValueError("renew_interval must be positive and under half the (drift-reduced) lease")
        if self.election_jitter <= 0 or self.round_timeout <= 0:
            raise ValueError("election_jitter and round_timeout must be positive")
        if self.silent_after_renewals <= 1:
            raise ValueError("silent_after_renewals must be above 1 (one renewal late is not silence)")
        if self.lease_record_interval <= 0 or self.reconfigure_interval <= 0:
            raise ValueError("lease_record_interval and reconfigure_interval must be positive")

    @property
    def silence_s(self) -> float:
        """Seconds without a renewal after which a council member deems the hub silent."""
        return self.renew_interval * self.silent_after_renewals

    @property
    def hub_lease_s(self) -> float:
        """The part of a renewal the hub itself counts on (the council counts the whole `lease_s`)."""
        return self.lease_s * (1 - self.drift_margin)
