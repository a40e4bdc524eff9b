"""Where this daemon can be reached, decided from addresses alone (sans-IO).

Reachability ``auto``: a daemon whose every non-loopback listen address is private
(RFC 1918, CGNAT, link-local) starts as a DHT client that reserves relay slots; others start
as servers that offer relaying. A server that peers observe under an IP it does not listen
on is behind a NAT after all (:func:`behind_nat`). :func:`foreign_ips` also gives calls their
reflexive candidates, and :func:`advertised_addrs` what our address record lists.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from libp2p.kad_dht.kad_dht import DHTMode

from p2pchat.net import records
from p2pchat.net.addrpolicy import LAN_NETS
from p2pchat.wire import MAX_ADDR_BYTES, text_problem


def ip_of(addr: str) -> str | None:
    parts = addr.strip("/").split("/")
    if len(parts) >= 2 and parts[0] in ("ip4", "ip6"):
        return parts[1]
    return None


def is_private_ip(ip: str) -> bool:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(address in net for net in LAN_NETS)


def is_loopback_ip(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


def initial_mode(listen_addrs: Sequence[str]) -> DHTMode:
    """Server unless every non-loopback listen address is private (then surely behind NAT)."""
    ips = [ip for ip in map(ip_of, listen_addrs) if ip is not None and not is_loopback_ip(ip)]
    if ips and all(is_private_ip(ip) for ip in ips):
        return DHTMode.CLIENT
    return DHTMode.SERVER


def foreign_ips(listen_addrs: Sequence[str], observed_addrs: Sequence[str]) -> list[str]:
    """IPs peers see us at that we do not listen on (loopback aside): a NAT's public side."""
    ours = {ip_of(a) for a in listen_addrs}
    seen = (ip_of(a) for a in observed_addrs)
    return list(
        dict.fromkeys(
            ip for ip in seen if ip is not None and ip not in ours and not is_loopback_ip(ip)
        )
    )


def behind_nat(listen_addrs: Sequence[str], observed_addrs: Sequence[str]) -> bool:
    """Whether peers see us under an IP we do not listen on (a NAT rewrote it)."""
    return bool(foreign_ips(listen_addrs, observed_addrs))


def advertised_addrs(
    listen_addrs: Sequence[str], circuit_addrs: Sequence[str], *, public: bool
) -> tuple[str, ...]:
    """What our record lists: behind a NAT, relay circuits first (direct ones only help on
    our own LAN); otherwise our listen addresses. Loopback addresses only when there is
    nothing else (a test network on one machine): elsewhere they would lead a peer to itself."""
    direct = [a for a in listen_addrs if ip_of(a) is not None and "/ip4/0.0.0.0/" not in a]
    if any(not is_loopback_ip(ip_of(a) or "") for a in direct):
        direct = [a for a in direct if not is_loopback_ip(ip_of(a) or "")]
    ordered = list(direct) + list(circuit_addrs) if public else [*circuit_addrs, *direct]
    usable = [a for a in ordered if text_problem(a, MAX_ADDR_BYTES) is None]
    return tuple(dict.fromkeys(usable))[: records.MAX_ADDRS_PER_DEVICE]
