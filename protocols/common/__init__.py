"""What every protocol shares: wire encoding, identities, hashing, effects and events,
the sans-IO core shape, and timing helpers."""
