"""Which of a friend's ICE candidates the daemon (or the web page running a call) may probe.

Every candidate a friend names becomes STUN connectivity checks from this machine, so one
rule covers all of them, whether trickled (``call-candidate``) or written into an offer or
answer SDP (up to 32 KiB, room for hundreds of ``a=candidate`` lines):

- at most :data:`MAX_REMOTE_CANDIDATES` usable candidates per call, SDP and trickled
  together (:class:`CandidateBudget`); the rest are dropped;
- no mDNS (``.local``) names: resolving one sends multicast queries on the LAN;
- a literal IP address only (a host name would need a DNS lookup), and none of the classes
  that name this machine or no single host: loopback, unspecified / "this network",
  link-local (which includes cloud metadata services at 169.254.169.254), multicast,
  broadcast, reserved, deprecated site-local, and IPv4-mapped or -compatible forms of those;
- a well-formed line (RFC 8839 grammar, space-separated, at most 512 bytes, port 1-65535;
  foundations up to 64 characters, as our own reflexive ones have 33), so what we check is
  what aiortc or the browser parses.

Private addresses (RFC 1918, CGNAT, IPv6 ULA) stay allowed: they are how friends on the
same LAN reach each other. Pure functions, no I/O.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from typing import Final

from p2pchat.calls.frames import MAX_CANDIDATE_BYTES

MAX_REMOTE_CANDIDATES: Final = 32
"""Usable candidates a friend may name per call (SDP and trickled together)."""

TRANSPORTS: Final = frozenset({"udp", "tcp"})
TYPES: Final = frozenset({"host", "srflx", "prflx", "relay"})

_FOUNDATION = re.compile(r"[A-Za-z0-9+/]{1,64}")
_DIGITS = re.compile(r"[0-9]{1,10}")
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`{|}~-]{1,32}")
_EXT_VALUE = re.compile(r"[A-Za-z0-9!#$%&'*+./:^_`{|}~-]{1,256}")
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_BROADCAST = ipaddress.ip_address("255.255.255.255")


def address_problem(address: str) -> str | None:
    """Why a candidate address must not be probed (``None``: it may be)."""
    if address.lower().rstrip(".").endswith(".local"):
        return "an mDNS (.local) name"
    if "%" in address:
        return "an address with a zone index"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return "not an IP address (a host name would need a DNS lookup)"
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped
        if embedded is None and ip.packed[:12] == bytes(12) and int(ip) > 1:
            embedded = ipaddress.IPv4Address(ip.packed[12:])  # ::a.b.c.d (IPv4-compatible)
        if embedded is not None:
            return address_problem(str(embedded))
        if ip.is_site_local:
            return "a site-local address"
    if ip.is_unspecified or (isinstance(ip, ipaddress.IPv4Address) and ip in _THIS_NETWORK):
        return "an unspecified address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip == _BROADCAST:
        return "the broadcast address"
    if ip.is_reserved:
        return "a reserved address"
    return None


def candidate_problem(value: str) -> str | None:
    """Why the friend's candidate (the SDP ``candidate:`` attribute value, without ``a=``)
    must not be used (``None``: it may be, within the per-call cap)."""
    if len(value.encode("utf-8", "surrogatepass")) > MAX_CANDIDATE_BYTES:
        return f"over {MAX_CANDIDATE_BYTES} bytes"
    if not value.startswith("candidate:"):
        return "malformed (not 'candidate:…')"
    if not value.isascii() or not value.isprintable():
        return "malformed (not printable ASCII)"
    fields = value.removeprefix("candidate:").split(" ")
    if len(fields) < 8 or len(fields) % 2 or "" in fields:
        return "malformed (wrong number of fields)"
    foundation, component, transport, priority, address, port, typ, kind, *extensions = fields
    if not _FOUNDATION.fullmatch(foundation):
        return "malformed foundation"
    if not _DIGITS.fullmatch(component) or not 1 <= int(component) <= 256:
        return "malformed component"
    if transport.lower() not in TRANSPORTS:
        return f"transport {transport!r} is not udp or tcp"
    if not _DIGITS.fullmatch(priority) or int(priority) >= 1 << 32:
        return "malformed priority"
    if not _DIGITS.fullmatch(port) or not 1 <= int(port) <= 65535:
        return "malformed port"
    if typ != "typ" or kind not in TYPES:
        return "malformed candidate type"
    for name, ext in zip(extensions[::2], extensions[1::2], strict=True):
        if not _TOKEN.fullmatch(name) or not _EXT_VALUE.fullmatch(ext):
            return "malformed extension"
        if name in ("rport", "generation") and not _DIGITS.fullmatch(ext):
            return f"malformed {name}"
    problem = address_problem(address)
    return None if problem is None else f"the address is {problem}"


class CandidateBudget:
    """One call's remote candidates: admits at most ``limit`` usable ones, counting SDP and
    trickled candidates together, and counts what it dropped and why (for the log)."""

    def __init__(self, limit: int = MAX_REMOTE_CANDIDATES) -> None:
        self.limit = limit
        self.taken = 0
        self.dropped: Counter[str] = Counter()

    def admit(self, value: str) -> bool:
        """Whether candidate ``value`` may be used; a yes uses up one of the call's slots."""
        problem = candidate_problem(value)
        if problem is None and self.taken >= self.limit:
            problem = f"over the cap of {self.limit} per call"
        if problem is not None:
            self.dropped[problem] += 1
            return False
        self.taken += 1
        return True

    def filter_sdp(self, sdp: str) -> str:
        """``sdp`` without the candidate lines :meth:`admit` refuses; every other line, and
        every line ending, unchanged. Lines are split as aiortc splits them
        (``str.splitlines``, a superset of browsers' CRLF/LF), so no candidate hides from
        this filter behind a separator the parser downstream honours."""
        out: list[str] = []
        for piece in sdp.splitlines(keepends=True):
            line = piece.rstrip("\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
            if _is_candidate_line(line) and not (
                line.startswith("a=") and self.admit(line.removeprefix("a="))
            ):
                if not line.startswith("a="):
                    self.dropped["malformed (not 'a=candidate:…')"] += 1
                continue
            out.append(piece)
        return "".join(out)

    def summary(self) -> str:
        """What was dropped, e.g. ``"3 × a loopback address; 1 × over the cap"``."""
        return "; ".join(f"{n} × {why}" for why, n in self.dropped.most_common())


def _is_candidate_line(line: str) -> bool:
    """Anything a lenient parser could take for a candidate attribute."""
    return line.strip().lower().startswith("a=candidate")
