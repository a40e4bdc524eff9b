"""Network namespaces for NAT and LAN tests: an "internet" with a public host, and sites that
sit behind NAT routers (docs/ARCHITECTURE.md, "NAT lab").

Everything is created with ``ip -n NS ...`` so nothing touches the root namespace, and
everything is removed again (deleting a namespace deletes its interfaces). Routers have no
default route, so nothing can leave the lab. Root only: :func:`skip_reason` says why not.

Topology of :class:`NatLab`::

    pub 198.51.100.10 ──┐
                        br0 (in "inet")
    r1  198.51.100.1 ───┤       r1 MASQUERADE  10.0.1.1 ── h1 10.0.1.2
    r2  198.51.100.2 ───┘       r2 MASQUERADE  10.0.2.1 ── h2 10.0.2.2

Routers NAT their LAN to their WAN address and drop unsolicited inbound traffic, as home
routers do. ``symmetric=True`` maps every new flow to a random port (``--random-fully``):
then no hole can be punched and only relays help.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


def skip_reason() -> str | None:
    """Why namespace tests cannot run here, or None if they can."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces (CI and the dev machine run as root)"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            return f"needs the {tool!r} command (scripts/test.sh installs it when run as root)"
    probe = f"p2pchat-probe-{os.getpid()}"
    try:
        _run("ip", "netns", "add", probe)
    except subprocess.CalledProcessError as exc:
        return f"cannot create network namespaces here: {exc.stderr.strip()}"
    _run("ip", "netns", "del", probe)
    return None


def _run(*cmd: str) -> str:
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=30)
    return done.stdout


@dataclass
class Lab:
    """A set of namespaces, removed by :meth:`close`."""

    tag: str
    namespaces: list[str] = field(default_factory=list)

    def ns(self, name: str) -> str:
        full = f"p2pc-{self.tag}-{name}"
        _run("ip", "netns", "add", full)
        self.namespaces.append(full)
        self.sh(full, "ip link set lo up")
        return full

    def sh(self, ns: str, command: str) -> str:
        return _run("ip", "netns", "exec", ns, "sh", "-ec", command)

    def veth(self, ns_a: str, name_a: str, ns_b: str, name_b: str) -> None:
        _run(
            "ip",
            "-n",
            ns_a,
            "link",
            "add",
            name_a,
            "type",
            "veth",
            "peer",
            "name",
            name_b,
            "netns",
            ns_b,
        )

    def prefix(self, ns: str) -> list[str]:
        """Command prefix that runs a program inside ``ns``."""
        return ["ip", "netns", "exec", ns]

    def close(self) -> None:
        for ns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        self.namespaces.clear()


@dataclass
class NatLab:
    lab: Lab
    pub: str
    h1: str
    h2: str
    r1: str
    r2: str

    PUB_IP = "198.51.100.10"
    H1_IP = "10.0.1.2"
    H2_IP = "10.0.2.2"
    R1_WAN = "198.51.100.1"
    R2_WAN = "198.51.100.2"


def _router(lab: Lab, router: str, wan_if: str, symmetric: bool) -> None:
    masquerade = "MASQUERADE --random-fully" if symmetric else "MASQUERADE"
    lab.sh(
        router,
        f"""
        sysctl -qw net.ipv4.ip_forward=1
        iptables -t nat -A POSTROUTING -o {wan_if} -j {masquerade}
        iptables -A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
        iptables -A FORWARD -i {wan_if} -j DROP
        iptables -A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
        iptables -A INPUT -i {wan_if} -j DROP
        """,
    )


@contextmanager
def nat_lab(*, symmetric: bool = False) -> Iterator[NatLab]:
    lab = Lab(tag=f"{os.getpid() % 100000}{'s' if symmetric else 'e'}")
    try:
        inet, pub = lab.ns("inet"), lab.ns("pub")
        r1, h1, r2, h2 = lab.ns("r1"), lab.ns("h1"), lab.ns("r2"), lab.ns("h2")
        lab.sh(inet, "ip link add br0 type bridge && ip link set br0 up")
        for ns, wan_ip, port in (
            (pub, NatLab.PUB_IP, "p0"),
            (r1, NatLab.R1_WAN, "p1"),
            (r2, NatLab.R2_WAN, "p2"),
        ):
            lab.veth(ns, "wan", inet, port)
            lab.sh(inet, f"ip link set {port} master br0 && ip link set {port} up")
            lab.sh(ns, f"ip addr add {wan_ip}/24 dev wan && ip link set wan up")
        for router, host, site in ((r1, h1, 1), (r2, h2, 2)):
            lab.veth(router, "lan", host, "eth0")
            lab.sh(router, f"ip addr add 10.0.{site}.1/24 dev lan && ip link set lan up")
            lab.sh(
                host,
                f"ip addr add 10.0.{site}.2/24 dev eth0 && ip link set eth0 up"
                f" && ip route add default via 10.0.{site}.1",
            )
            _router(lab, router, "wan", symmetric)
        yield NatLab(lab, pub=pub, h1=h1, h2=h2, r1=r1, r2=r2)
    finally:
        lab.close()


@contextmanager
def lan_lab() -> Iterator[tuple[Lab, str, str]]:
    """Two hosts on one LAN segment (a bridge), with no router and no way out."""
    lab = Lab(tag=f"{os.getpid() % 100000}l")
    try:
        switch, a, b = lab.ns("switch"), lab.ns("a"), lab.ns("b")
        lab.sh(switch, "ip link add br0 type bridge && ip link set br0 up")
        for ns, ip, port in ((a, "10.0.9.2", "pa"), (b, "10.0.9.3", "pb")):
            lab.veth(ns, "eth0", switch, port)
            lab.sh(switch, f"ip link set {port} master br0 && ip link set {port} up")
            lab.sh(ns, f"ip addr add {ip}/24 dev eth0 && ip link set eth0 up")
            # Multicast (mDNS) leaves through eth0.
            lab.sh(ns, "ip route add 224.0.0.0/4 dev eth0")
        yield lab, a, b
    finally:
        lab.close()
