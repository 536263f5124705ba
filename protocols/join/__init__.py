"""Joining a mesh: invite tokens and the join request/reply."""
