"""The canonical, size-capped wire encoding (msgspec MessagePack).

Every message and record crosses the wire through `encode` / `decode`. Decoding raises
exactly one error type, `WireError`, for garbage, oversized or wrong-typed input, so
callers can drop-and-count with a single `except` clause.

Versions are not carried in each message. They are negotiated once per stream by the
libp2p protocol id (`/ileices/membership/1`, ...): a node that changes a protocol's
messages in an incompatible way serves it under `/2`, keeps `/1` for as long as old
peers matter, and multistream-select picks the newest both speak. A per-message
envelope would only repeat that (and went unused on the real wire, so it was removed).

Canonical: structs are encoded as MessagePack arrays in field order and msgspec always
chooses the shortest integer encoding, so equal values always encode to equal bytes;
signatures are computed over these bytes.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

MAX_MESSAGE_BYTES = 4 * 1024 * 1024

T = TypeVar("T")

_encoder = msgspec.msgpack.Encoder()


class WireError(ValueError):
    """Input that is not a valid message of the expected type and version."""


class WireStruct(msgspec.Struct, frozen=True, array_like=True, forbid_unknown_fields=True, gc=False):
    """Base of every wire schema: immutable, encoded as an array (compact and canonical).

    `gc=False`: wire values hold bytes, numbers, strings and other wire values, never a
    reference back, so they cannot form cycles and the cyclic garbage collector need
    not track them; a simulated mesh holds millions of them and would otherwise spend
    a sixth of its time in collections that can never free one.

    Subclasses repeat `frozen=True` (`class Ping(WireStruct, frozen=True): ...`): mypy's
    dataclass-transform support does not inherit it and reports a frozen/non-frozen mix.
    """


def encode(value: Any) -> bytes:
    """Encode a wire struct (or plain msgpack-able value) to canonical bytes."""
    data = _encoder.encode(value)
    if len(data) > MAX_MESSAGE_BYTES:
        raise WireError(f"message of {len(data)} bytes exceeds the {MAX_MESSAGE_BYTES}-byte cap")
    return data


_decoders: dict[Any, msgspec.msgpack.Decoder[Any]] = {}


def decode(data: bytes | bytearray | memoryview, type_: type[T], *, max_bytes: int = MAX_MESSAGE_BYTES) -> T:
    """Decode `data` as `type_`, raising `WireError` for anything that is not exactly that."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise WireError(f"expected bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise WireError(f"message of {len(data)} bytes exceeds the {max_bytes}-byte cap")
    decoder = _decoders.get(type_)
    if decoder is None:
        decoder = msgspec.msgpack.Decoder(type_)
        _decoders[type_] = decoder
    try:
        return decoder.decode(data)  # type: ignore[no-any-return]
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise WireError(f"malformed {getattr(type_, '__name__', type_)}: {exc}") from None
    except (RecursionError, MemoryError, ValueError, TypeError) as exc:
        raise WireError(f"malformed {getattr(type_, '__name__', type_)}: {exc}") from None
