"""A small internet in network namespaces: a server, and homes behind NAT routers.

    with NatLab() as lab:
        with lab.inside(lab.server_ns):   # this thread (and what it starts) is in there
            server.start()

Layout (all addresses exist only inside the namespaces made here; removed on exit):

    internet: server 203.0.113.1 on a bridge
       +-- router 1 (203.0.113.2, NAT) --- home 1 (192.168.178.2)
       +-- router 2 (203.0.113.6, NAT) --- home 2 (192.168.1.2)

The homes' private networks are unknown to the internet namespace: a packet sent to a
phone's private address from outside is dropped, as on the real internet; a phone reaches the
server only through its router's masquerading NAT (nftables).

Entering a namespace switches only the calling thread (setns(2)); processes it starts and
sockets it opens stay in that namespace afterwards.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def _run(*cmd: str) -> None:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {out.stderr.strip() or out.returncode}")


@dataclass(frozen=True)
class Home:
    ns: str
    router: str
    address: str  # the phone's private address
    public: str  # the router's address on the internet


class NatLab:
    SERVER = "203.0.113.1"

    def __init__(self) -> None:
        tag = f"hb{os.getpid() % 100000}"
        self.server_ns = f"{tag}-inet"
        self.homes = [
            Home(f"{tag}-h1", f"{tag}-r1", "192.168.178.2", "203.0.113.2"),
            Home(f"{tag}-h2", f"{tag}-r2", "192.168.1.2", "203.0.113.6"),
        ]
        self._made: list[str] = []

    @staticmethod
    def available() -> str | None:
        """Why this machine cannot build the lab (None: it can)."""
        if os.geteuid() != 0:
            return "network namespaces need root"
        for tool in ("ip", "nft"):
            if shutil.which(tool) is None:
                return f"{tool} is not installed (Debian: iproute2, nftables)"
        return None

    def _ns(self, name: str) -> None:
        _run("ip", "netns", "add", name)
        self._made.append(name)
        self.ip(name, "link", "set", "lo", "up")

    def ip(self, ns: str, *args: str) -> None:
        _run("ip", "-n", ns, *args)

    def _link(self, a: str, a_if: str, a_addr: str, b: str, b_if: str, b_addr: str) -> None:
        _run("ip", "link", "add", a_if, "netns", a, "type", "veth", "peer", b_if, "netns", b)
        self.ip(a, "addr", "add", a_addr, "dev", a_if)
        self.ip(b, "addr", "add", b_addr, "dev", b_if)
        self.ip(a, "link", "set", a_if, "up")
        self.ip(b, "link", "set", b_if, "up")

    def create(self) -> None:
        self._ns(self.server_ns)
        # one switch (a bridge) for the internet: the server has a single address, so its
        # answers leave from the address the routers' NAT expects
        self.ip(self.server_ns, "link", "add", "br0", "type", "bridge")
        self.ip(self.server_ns, "addr", "add", f"{self.SERVER}/24", "dev", "br0")
        self.ip(self.server_ns, "link", "set", "br0", "up")
        for n, home in enumerate(self.homes):
            self._ns(home.router)
            self._ns(home.ns)
            _run("ip", "link", "add", f"i{n}", "netns", self.server_ns, "type", "veth",
                 "peer", "up0", "netns", home.router)  # fmt: skip
            self.ip(self.server_ns, "link", "set", f"i{n}", "master", "br0", "up")
            self.ip(home.router, "addr", "add", f"{home.public}/24", "dev", "up0")
            self.ip(home.router, "link", "set", "up0", "up")
            lan = home.address.rsplit(".", 1)[0]
            self._link(home.router, "lan0", f"{lan}.1/24", home.ns, "eth0", f"{home.address}/24")
            self.ip(home.router, "route", "add", "default", "via", self.SERVER)
            self.ip(home.ns, "route", "add", "default", "via", f"{lan}.1")
            _run("ip", "netns", "exec", home.router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            _run("ip", "netns", "exec", home.router, "nft",
                 "add table ip nat; "
                 "add chain ip nat post { type nat hook postrouting priority 100 ; } ; "
                 'add rule ip nat post oifname "up0" masquerade')  # fmt: skip

    def destroy(self) -> None:
        for name in reversed(self._made):
            with contextlib.suppress(RuntimeError):
                _run("ip", "netns", "del", name)
        self._made.clear()

    def __enter__(self) -> NatLab:
        try:
            self.create()
        except BaseException:
            self.destroy()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    @contextlib.contextmanager
    def inside(self, ns: str) -> Iterator[None]:
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(f"/run/netns/{ns}", os.O_RDONLY)
        try:
            _setns(target)
            try:
                yield
            finally:
                _setns(own)
        finally:
            os.close(target)
            os.close(own)
