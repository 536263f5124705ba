"""Artifact storage: erasure-coded shares spread over the mesh, audited, and repaired as holders churn.

An artifact is encoded k-of-n (`kernels.artifact_codec`); its owner signs an `artifact`
record naming the n share roots, pushes share i to the node rendezvous hashing ranks
first for i, and signs a `placement` record. Each holder lists what it holds in its
`storage` record. The acting hub's `StorageCore` counts, from those records and
membership, how many shares of each artifact live nodes still hold, and asks for a
repair before fewer than k remain; it also asks for random audits, which is what
catches a holder that lists shares it does not have.
"""
