"""Signed records and the replicated store: the record, the delta-CRDT store, admission,
fencing, manifests and seq allocation."""
