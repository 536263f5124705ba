"""A peer with a valid libp2p key but no admission, trying every way in; for the mesh tests.

Usage: python rogue_peer.py MESH_ID_HEX MEMBER_ID_HEX MEMBER_ADDR...

It opens a `Libp2pTransport` with a fresh identity, connects to the member, and sends
what an admitted peer would: self-signed records by eager push and by anti-entropy,
anti-entropy openers, SWIM probes and a forged member table, plus join requests with
invites it forged. It prints one JSON line mapping each attempt to what happened
(`refused`, `admitted`, `join refused: ...`, or the error), so the test can check that
every attempt failed and compare the member's counters before and after.
"""

from __future__ import annotations

import json
import sys
import time

import trio

from mesh.libp2p_transport import Libp2pTransport
from mesh.transport import JOIN_PROTOCOL, Refused, TransportError
from protocols.common.identity import NodeIdentity
from protocols.common.wire import WireError, decode, encode
from protocols.dissemination.messages import Push, SyncDelta, SyncHello, SyncRequest
from protocols.join.invite import Invite, InviteBody, create_invite
from protocols.join.messages import JoinReply, JoinRequest
from protocols.membership.messages import MemberUpdate, Ping, PushPull, WireState
from protocols.records.record import sign_record
from protocols.records.store import AuthorDelta

MEMBERSHIP = "/ileices/membership/1"
RECORDS = "/ileices/records/1"
ROGUE_NOTE_KEY = "rogue"


async def main(mesh: bytes, member: bytes, addrs: list[str]) -> None:
    rogue = NodeIdentity.generate()
    other = NodeIdentity.generate()
    note = sign_record(rogue, mesh, "note", ROGUE_NOTE_KEY, 1, b"let me in")
    manifest_like = sign_record(rogue, mesh, "manifest", "", 2, b"\x80")
    protocol_attempts: dict[str, tuple[str, object]] = {
        "push_records": (RECORDS, Push([note, manifest_like])),
        "sync_hello": (RECORDS, SyncHello(bytes(32), 1)),
        "sync_request": (RECORDS, SyncRequest({})),
        "sync_delta": (RECORDS, SyncDelta([AuthorDelta(rogue.node_id, 0, 2, [note, manifest_like])])),
        "ping": (MEMBERSHIP, Ping(1, (MemberUpdate(rogue.node_id, 0, WireState.ALIVE),))),
        "member_table": (
            MEMBERSHIP,
            PushPull((MemberUpdate(rogue.node_id, 0, WireState.ALIVE),), True),
        ),
    }
    forged_by_rogue = create_invite(rogue, mesh, b"r" * 16, time.time() + 3600, 1, [])
    signed_by_other = create_invite(other, mesh, b"i" * 16, time.time() + 3600, 5, [])
    # The member's name on an invite body it never signed.
    impersonated = Invite(
        InviteBody(mesh, member, b"i" * 16, signed_by_other.body.expires_at, 5, []), signed_by_other.signature
    )
    outcomes: dict[str, str] = {}
    async with Libp2pTransport.open(rogue) as transport:
        await transport.connect(member, addrs)
        for name, (protocol, message) in protocol_attempts.items():
            try:
                await transport.request(member, protocol, encode(message), timeout=10)
                outcomes[name] = "accepted for processing"
            except Refused:
                outcomes[name] = "refused"
            except TransportError as exc:
                outcomes[name] = f"error: {exc}"
        for name, invite in (
            ("join_self_signed_invite", forged_by_rogue),
            ("join_forged_invite", impersonated),
        ):
            try:
                reply = decode(
                    await transport.request(member, JOIN_PROTOCOL, encode(JoinRequest(invite, []))), JoinReply
                )
                outcomes[name] = "admitted" if reply.admitted else f"join refused: {reply.problem}"
            except (TransportError, WireError) as exc:
                outcomes[name] = f"error: {exc}"
    print(json.dumps({"rogue": rogue.node_id.hex(), "outcomes": outcomes}))


if __name__ == "__main__":
    trio.run(main, bytes.fromhex(sys.argv[1]), bytes.fromhex(sys.argv[2]), sys.argv[3:])
