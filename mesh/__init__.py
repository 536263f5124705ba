"""Node assembly, transports, identity files, persistence and invites.

Imports only downward: `actors`, `protocols`, `kernels`.
"""
