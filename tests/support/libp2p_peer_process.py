"""A libp2p transport in its own OS process, for tests that SIGKILL a peer.

Prints one JSON line `{"node_id": hex, "addrs": [...]}` once listening, then serves
`/ileices/echo/1` (reply = payload) until killed.
"""

from __future__ import annotations

import json
import sys

import trio

from mesh.libp2p_transport import Libp2pTransport
from protocols.common.identity import NodeId, NodeIdentity


async def echo(peer: NodeId, payload: bytes) -> bytes:
    return payload


async def main() -> None:
    identity = NodeIdentity.generate()
    async with Libp2pTransport.open(identity) as transport:
        transport.set_handler("/ileices/echo/1", echo)
        print(json.dumps({"node_id": identity.node_id.hex(), "addrs": transport.listen_addrs()}))
        sys.stdout.flush()
        await trio.sleep_forever()


if __name__ == "__main__":
    trio.run(main)
