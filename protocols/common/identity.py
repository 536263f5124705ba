"""Ed25519 node identity: a node id is its 32-byte public verify key.

Pure crypto with no IO; reading and writing key files lives in `mesh.keyfile`.
"""

from __future__ import annotations

from dataclasses import dataclass

import nacl.exceptions
import nacl.signing

NodeId = bytes
"""A node's 32-byte Ed25519 public key; also its libp2p identity."""

SIGNATURE_SIZE = 64
KEY_SIZE = 32


@dataclass(frozen=True)
class NodeIdentity:
    """A node's signing key, with its public id alongside for convenience."""

    signing_key: nacl.signing.SigningKey

    @classmethod
    def generate(cls) -> NodeIdentity:
        return cls(nacl.signing.SigningKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> NodeIdentity:
        """Deterministic identity from a 32-byte seed (simulations, tests, key files)."""
        if len(seed) != KEY_SIZE:
            raise ValueError(f"an Ed25519 seed is {KEY_SIZE} bytes, got {len(seed)}")
        return cls(nacl.signing.SigningKey(seed))

    @property
    def node_id(self) -> NodeId:
        return bytes(self.signing_key.verify_key)

    @property
    def seed(self) -> bytes:
        return bytes(self.signing_key)

    def sign(self, message: bytes) -> bytes:
        return self.signing_key.sign(message).signature


def verify(node_id: NodeId, message: bytes, signature: bytes) -> bool:
    """True when `signature` is `node_id`'s signature of `message`; never raises."""
    if len(node_id) != KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        return False
    try:
        nacl.signing.VerifyKey(node_id).verify(message, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError):
        return False
    return True
