"""A user-space stand-in for `tc netem`: an Ethernet switch over TAP devices that delays
every frame by a fixed time and drops a fixed fraction, for kernels without sch_netem.

Why it exists: the namespace test must show convergence under 100 ms delay and 5 %
loss, and some kernels (this project's 2-core VM among them) ship without the netem
qdisc. The model is netem's on each node's egress: every frame is dropped with
probability `loss`, once, as it leaves its sender, and otherwise delivered `delay`
seconds later, in order. Each node's namespace gets a TAP device named `eth0` created
directly inside it (a thread enters the namespace with setns(2)), so nothing appears
in the host's network even briefly; the devices vanish when the switch closes them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import heapq
import os
import random
import selectors
import struct
import threading
import time
from pathlib import Path

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
CLONE_NEWNET = 0x40000000
BROADCAST_BIT = 0x01
MAX_FRAME = 65536


def tap_available() -> str | None:
    """None if TAP devices and setns(2) can be used here, else why not."""
    if not Path("/dev/net/tun").exists():
        return "/dev/net/tun does not exist"
    if not os.access("/dev/net/tun", os.R_OK | os.W_OK):
        return "/dev/net/tun is not accessible"
    if ctypes.util.find_library("c") is None:
        return "libc not found for setns(2)"
    return None


def _open_tap_in(namespace: str, name: str) -> int:
    """Create TAP `name` inside network namespace `namespace`; returns its fd."""
    result: list[int | BaseException] = []

    def create() -> None:
        # setns changes the calling thread's namespace only; this thread ends right after.
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
            with open(f"/run/netns/{namespace}") as handle:
                if libc.setns(handle.fileno(), CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns into {namespace}")
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
            fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
            result.append(fd)
        except BaseException as exc:  # handed to the caller's thread
            result.append(exc)

    thread = threading.Thread(target=create)
    thread.start()
    thread.join()
    outcome = result[0]
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


class ImpairedSwitch:
    """A learning switch between TAP ports that delays and drops frames like netem."""

    def __init__(self, delay: float, loss: float, seed: int = 1) -> None:
        self.delay = delay
        self.loss = loss
        self._rng = random.Random(seed)
        self._ports: list[int] = []
        self._where: dict[bytes, int] = {}
        self._pending: list[tuple[float, int, bytes, bytes | None, int]] = []
        self._count = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.forwarded = 0
        self.dropped = 0

    def add_port(self, namespace: str, name: str = "eth0") -> None:
        if self._thread is not None:
            raise RuntimeError("add ports before start()")
        self._ports.append(_open_tap_in(namespace, name))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="tap-netem", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for fd in self._ports:
            os.close(fd)
        self._ports.clear()

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        for fd in self._ports:
            selector.register(fd, selectors.EVENT_READ)
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                while self._pending and self._pending[0][0] <= now:
                    _, _, frame, destination, ingress = heapq.heappop(self._pending)
                    self._deliver(frame, destination, ingress)
                wait = 0.05 if not self._pending else max(0.0, min(0.05, self._pending[0][0] - now))
                for key, _ in selector.select(wait):
                    self._receive(int(key.fd))
        finally:
            selector.close()

    def _receive(self, fd: int) -> None:
        while True:
            try:
                frame = os.read(fd, MAX_FRAME)
            except BlockingIOError:
                return
            if len(frame) < 14:
                continue
            self._where[frame[6:12]] = fd  # learn the sender's MAC
            if self._rng.random() < self.loss:
                self.dropped += 1
                continue
            destination = None if frame[0] & BROADCAST_BIT else frame[0:6]
            self._count += 1
            heapq.heappush(
                self._pending, (time.monotonic() + self.delay, self._count, frame, destination, fd)
            )

    def _deliver(self, frame: bytes, destination: bytes | None, ingress: int) -> None:
        port = self._where.get(destination) if destination is not None else None
        targets = [port] if port is not None else [fd for fd in self._ports if fd != ingress]
        for fd in targets:
            try:
                os.write(fd, frame)
                self.forwarded += 1
            except OSError:  # the port's interface is down or its queue full: a lost frame
                self.dropped += 1
