"""Which addresses a peer announces may be dialed, and how often (sans-IO).

Peers tell us where they are: hello frames, friend requests and accepts, signed DHT records,
DHT replies about other peers, identify, mDNS. Dialing that blindly lets any friend, or any DHT
node, make this daemon open TCP connections to services that trust this machine or its LAN (a
database on 127.0.0.1, a router's admin page on 192.168.1.1) or knock on a thousand doors.

:func:`classify` names an address's target; :class:`AddrPolicy` admits an announced address
only when its target is no closer to us than the announcing peer itself was:

- public (and documentation / test-net ranges, which the internet does not route, and which
  test labs use as their "internet"): always;
- loopback: only if the peer was reached over loopback (two daemons on one machine, as every
  daemon test runs);
- one of this machine's own non-loopback IPs (it reaches local services bound to a wildcard):
  only if the peer was reached on this machine or on the LAN;
- private, CGNAT, ULA or link-local: only if the peer was reached from such an address, or
  heard by mDNS on the LAN (for that dial only: anyone there can multicast any peer ID);
- unspecified (``0.0.0.0`` dials localhost on Linux), multicast, broadcast, other reserved
  ranges, and DNS names (we cannot tell where a name points without resolving it, and
  p2pchat never announces names): never.

A relay circuit is judged by its relay's address (that is what we dial). "Reached" means a
direct connection, in either direction, whose remote address had that class; for a peer we
have never been directly connected to, the classes of our open direct connections stand in
(the DHT on a one-machine test network is all loopback). At most :data:`MAX_DIRECT` direct and
:data:`MAX_CIRCUITS` relayed addresses are kept per peer, those in the class the peer was
reached on first. A (peer, address) whose dial failed waits an exponential backoff
(:class:`DialBackoff`) before it is dialed again.

User-given addresses (friend codes, bootstrap configuration) are trusted as typed: they do
not pass through :meth:`AddrPolicy.admit`.
"""

from __future__ import annotations

import enum
import ipaddress
from collections import Counter, OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

MAX_DIRECT: Final = 6
"""Direct addresses kept and dialed per peer (a host rarely has more interfaces worth it)."""
MAX_CIRCUITS: Final = 2
"""Relay circuit addresses kept and dialed per peer."""
MAX_PEERS: Final = 4096
"""Peers whose reach (and dial failures) we remember; the oldest are forgotten first."""
BACKOFF_MIN: Final = 1.0
BACKOFF_MAX: Final = 60.0

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class Target(enum.Enum):
    """What an address points at."""

    LOOPBACK = "loopback"
    SELF = "self"  # one of this machine's own non-loopback IPs
    LAN = "lan"  # RFC 1918, CGNAT 100.64/10, ULA fc00::/7, site-local, link-local
    PUBLIC = "public"
    DOCUMENTATION = "documentation"  # TEST-NET-1/2/3, 198.18/15, 2001:db8::/32
    UNSPECIFIED = "unspecified"
    MULTICAST = "multicast"
    RESERVED = "reserved"  # broadcast, 240/4 and anything else neither public nor above
    NAME = "name"  # /dns, /dns4, /dns6, /dnsaddr
    INVALID = "invalid"


class Scope(enum.Enum):
    """Where a peer was reached: the class of a direct connection's remote address."""

    LOOPBACK = "loopback"
    SELF = "self"
    LAN = "lan"
    PUBLIC = "public"


LAN_NETS: Final = tuple(
    ipaddress.ip_network(n)
    for n in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "169.254.0.0/16",
        "fc00::/7",
        "fec0::/10",
        "fe80::/10",
    )
)
"""Private, shared (CGNAT), link-local and site-local ranges: what counts as a LAN (also
for :mod:`p2pchat.net.reachability`)."""
_DOCUMENTATION_NETS: Final = tuple(
    ipaddress.ip_network(n)
    for n in (
        "192.0.2.0/24",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "198.18.0.0/15",
        "2001:db8::/32",
        "3fff::/20",
    )
)
_RESERVED_NETS: Final = tuple(
    ipaddress.ip_network(n)
    for n in ("192.0.0.0/24", "240.0.0.0/4", "100::/64", "2001::/23", "2001:2::/48")
)
"""Neither public nor private: IETF protocol assignments, the old class E and broadcast,
IPv6 discard-only and IETF protocol assignments (Python's ``is_global`` varies by version)."""
_NAT64: Final = ipaddress.ip_network("64:ff9b::/96")
_V4_COMPATIBLE: Final = ipaddress.ip_network("::/96")
_NAME_PROTOCOLS: Final = frozenset({"dns", "dns4", "dns6", "dnsaddr"})


def is_circuit(addr: str) -> bool:
    return "/p2p-circuit" in addr


def target_ip(addr: str) -> str | None:
    """The IP a dial of ``addr`` connects to first (a circuit's relay), or None."""
    parts = addr.split("/p2p-circuit", 1)[0].strip("/").split("/")
    if len(parts) >= 4 and parts[0] == "ip6zone":
        parts = parts[2:]
    if len(parts) >= 2 and parts[0] in ("ip4", "ip6"):
        return parts[1]
    return None


def _unwrap(ip: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 one stands for (mapped, NAT64, 6to4, v4-compatible)."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip.sixtofour is not None:
            return ip.sixtofour
        if ip.teredo is not None:
            return ip.teredo[1]
        if ip in _NAT64 or (ip in _V4_COMPATIBLE and int(ip) > 1):
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def classify_ip(text: str, local_ips: Iterable[str] = ()) -> Target:
    """The class of an IP (``local_ips``: this machine's own addresses)."""
    try:
        ip = _unwrap(ipaddress.ip_address(text.split("%", 1)[0]))
    except ValueError:
        return Target.INVALID
    if ip.is_unspecified or (ip.version == 4 and ip in ipaddress.ip_network("0.0.0.0/8")):
        return Target.UNSPECIFIED
    if ip.is_loopback:
        return Target.LOOPBACK
    if ip.is_multicast:
        return Target.MULTICAST
    if ip in {_unwrap(ipaddress.ip_address(o.split("%", 1)[0])) for o in _valid(local_ips)}:
        return Target.SELF
    if any(ip in net for net in LAN_NETS):
        return Target.LAN
    if any(ip in net for net in _DOCUMENTATION_NETS):
        return Target.DOCUMENTATION
    if any(ip in net for net in _RESERVED_NETS):
        return Target.RESERVED
    return Target.PUBLIC if ip.is_global else Target.RESERVED


def _valid(ips: Iterable[str]) -> list[str]:
    out = []
    for ip in ips:
        try:
            ipaddress.ip_address(ip.split("%", 1)[0])
        except ValueError:
            continue
        out.append(ip)
    return out


def classify(addr: str, local_ips: Iterable[str] = ()) -> Target:
    """The class of what dialing multiaddr ``addr`` connects to (a circuit: its relay)."""
    first = addr.split("/p2p-circuit", 1)[0].strip("/").split("/")[0]
    if first in _NAME_PROTOCOLS:
        return Target.NAME
    ip = target_ip(addr)
    return Target.INVALID if ip is None else classify_ip(ip, local_ips)


def scope_of(target: Target) -> Scope | None:
    """The scope a connection from/to an address of class ``target`` puts its peer in."""
    return {
        Target.LOOPBACK: Scope.LOOPBACK,
        Target.SELF: Scope.SELF,
        Target.LAN: Scope.LAN,
        Target.PUBLIC: Scope.PUBLIC,
        Target.DOCUMENTATION: Scope.PUBLIC,
    }.get(target)


_NEEDS: Final[dict[Target, frozenset[Scope]]] = {
    Target.LOOPBACK: frozenset({Scope.LOOPBACK}),
    Target.SELF: frozenset({Scope.LOOPBACK, Scope.SELF, Scope.LAN}),
    Target.LAN: frozenset({Scope.LAN}),
}
"""For each class that is not public, the scopes a peer must have been reached in to have it
dialed (classes missing here: never)."""


def may_dial(target: Target, scopes: Iterable[Scope]) -> bool:
    """Whether an announced address of class ``target`` may be dialed for a peer reached in
    ``scopes`` (an empty set: a peer never reached, so only public addresses)."""
    if target in (Target.PUBLIC, Target.DOCUMENTATION):
        return True
    return not _NEEDS.get(target, frozenset()).isdisjoint(scopes)


def admit(
    addrs: Sequence[str], scopes: Iterable[Scope], local_ips: Iterable[str] = ()
) -> list[str]:
    """The announced ``addrs`` that may be dialed for a peer reached in ``scopes``: no
    duplicates, at most :data:`MAX_DIRECT` direct ones (those in a reached scope first) and
    then at most :data:`MAX_CIRCUITS` circuits, otherwise in the order given."""
    reached = frozenset(scopes)
    local = _valid(local_ips)
    direct: list[tuple[bool, str]] = []
    circuits: list[str] = []
    for addr in dict.fromkeys(addrs):
        target = classify(addr, local)
        if not may_dial(target, reached):
            continue
        if is_circuit(addr):
            circuits.append(addr)
        else:
            direct.append((scope_of(target) not in reached, addr))
    direct.sort(key=lambda item: item[0])  # stable: reached scope first, else as given
    return [a for _, a in direct[:MAX_DIRECT]] + circuits[:MAX_CIRCUITS]


@dataclass
class _Failures:
    count: int
    until: float


class DialBackoff:
    """Per-(peer, address) dial failure backoff: after ``n`` failures in a row the address
    waits ``BACKOFF_MIN * 2**(n-1)`` s (at most ``BACKOFF_MAX``) before it is dialed again,
    so a peer listing dead or hostile addresses does not make us dial them on every try."""

    def __init__(self, max_entries: int = 4 * MAX_PEERS) -> None:
        self._entries: OrderedDict[tuple[str, str], _Failures] = OrderedDict()
        self._max = max_entries

    def ready(self, peer: str, addrs: Sequence[str], now: float) -> list[str]:
        """The addresses of ``addrs`` not waiting out a backoff."""
        out = []
        for addr in addrs:
            entry = self._entries.get((peer, addr))
            if entry is None or now >= entry.until:
                out.append(addr)
        return out

    def next_try(self, peer: str, addrs: Sequence[str]) -> float | None:
        """When the first of ``addrs`` in backoff may be dialed again (None: none waits)."""
        untils = [e.until for a in addrs if (e := self._entries.get((peer, a))) is not None]
        return min(untils) if untils else None

    def failed(self, peer: str, addr: str, now: float) -> float:
        """Record a failed dial; returns the seconds the address now waits."""
        key = (peer, addr)
        entry = self._entries.pop(key, None)
        count = 1 if entry is None else entry.count + 1
        wait = min(BACKOFF_MIN * float(2 ** min(count - 1, 32)), BACKOFF_MAX)
        self._entries[key] = _Failures(count, now + wait)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
        return wait

    def succeeded(self, peer: str, addr: str) -> None:
        self._entries.pop((peer, addr), None)

    def clear(self, peer: str) -> None:
        """The peer is reachable again (it connected): its addresses start afresh."""
        for key in [k for k in self._entries if k[0] == peer]:
            del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)


class AddrPolicy:
    """Remembers how each peer was reached and decides which of its announced addresses may
    be dialed (:meth:`admit`); :attr:`backoff` holds the dial failures."""

    def __init__(self, max_peers: int = MAX_PEERS) -> None:
        self.local_ips: frozenset[str] = frozenset()
        """This machine's own IPs (the network sets them from its interfaces)."""
        self.backoff = DialBackoff(4 * max_peers)
        self._reached: OrderedDict[str, set[Scope]] = OrderedDict()
        self._open: Counter[Scope] = Counter()
        self._max_peers = max_peers

    def _note(self, peer: str, scope: Scope) -> None:
        scopes = self._reached.pop(peer, set())
        scopes.add(scope)
        self._reached[peer] = scopes
        while len(self._reached) > self._max_peers:
            self._reached.popitem(last=False)

    def connection_opened(self, peer: str, remote_addr: str) -> None:
        """A direct connection to ``peer`` opened (either direction) with that remote
        address. Relayed connections say nothing about where the peer is: skip them."""
        if is_circuit(remote_addr):
            return
        scope = scope_of(classify(remote_addr, self.local_ips))
        if scope is not None:
            self._note(peer, scope)
            self._open[scope] += 1
        self.backoff.clear(peer)

    def connection_closed(self, peer: str, remote_addr: str) -> None:
        if is_circuit(remote_addr):
            return
        scope = scope_of(classify(remote_addr, self.local_ips))
        if scope is not None and self._open[scope] > 0:
            self._open[scope] -= 1

    def scopes(self, peer: str) -> frozenset[Scope]:
        """Where ``peer`` was reached; for a peer never reached directly, where our open
        direct connections are (the network we are evidently on)."""
        known = self._reached.get(peer)
        if known:
            return frozenset(known)
        return frozenset(s for s, n in self._open.items() if n > 0)

    def admit(self, peer: str, addrs: Sequence[str], *, on_lan: bool = False) -> list[str]:
        """The announced ``addrs`` of ``peer`` that may be dialed (module docstring).
        ``on_lan``: heard by mDNS on our segment, so its LAN addresses may be dialed now.
        That is not remembered (anyone on the segment can multicast any peer ID); a
        connection over the LAN that follows is."""
        scopes = self.scopes(peer) | ({Scope.LAN} if on_lan else set())
        return admit(addrs, scopes, self.local_ips)
