"""The actor runtime (actor, mailbox, supervisor) on trio, and the role actors.

A role actor is a thin trio shell around a `protocols` core. Imports only downward:
`protocols` and `kernels`.
"""
