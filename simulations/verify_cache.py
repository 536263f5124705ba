"""Signature verification shared by all simulated nodes, cached on the exact bytes checked.

This is the one shortcut the simulator takes: a thousand simulated nodes verifying the
same record would run the same Ed25519 check on the same bytes a thousand times. The
cache key is the full `(author, message, signature)` triple, so any changed byte is a
cache miss and is verified for real; forged records are therefore still refused.
"""

from __future__ import annotations

from protocols.common.identity import NodeId, verify


class CachedVerifier:
    """A `verify(author, message, signature) -> bool` that remembers each answer."""

    def __init__(self) -> None:
        self._answers: dict[tuple[bytes, bytes, bytes], bool] = {}
        self.hits = 0
        self.misses = 0

    def __call__(self, author: NodeId, message: bytes, signature: bytes) -> bool:
        key = (author, message, signature)
        answer = self._answers.get(key)
        if answer is None:
            self.misses += 1
            answer = verify(author, message, signature)
            self._answers[key] = answer
        else:
            self.hits += 1
        return answer
