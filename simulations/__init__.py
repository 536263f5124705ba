"""Discrete-event simulation of many nodes running the real protocol cores.

Imports only downward: `mesh`, `actors`, `protocols`, `kernels`.
"""
