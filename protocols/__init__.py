"""Sans-IO protocol cores and wire schemas: no IO, no clock, no threads.

Everything here takes inputs (messages, `now`, a seeded `random.Random`) and returns
outputs, so the trio actors and the discrete-event simulator drive the same code.
May import only from `kernels` (and the standard library / third-party packages).
"""
