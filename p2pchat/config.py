"""The daemon's config file (``<home>/config.json``): small, human-editable, validated.

Only settings a user may want to edit live here; state lives in the database.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Final

from p2pchat.paths import CONFIG_FILE
from p2pchat.wire import MAX_NAME_BYTES, text_problem

DEFAULT_LISTEN: Final = ("/ip4/0.0.0.0/tcp/0",)
DEFAULT_DHT_PROTOCOL: Final = "/p2pchat/kad/1.0.0"
DHT_MODES: Final = ("auto", "server", "client")
RELAY_SERVICE_MODES: Final = ("auto", "on", "off")
DEFAULT_WEB_LISTEN: Final = "127.0.0.1:0"
MIN_SEND_RATE: Final = 64 * 1024
"""Slowest send-rate cap (bytes/s): slower would let a record take longer than a receiver
waits for data."""


class ConfigError(Exception):
    pass


@dataclass(frozen=True)
class QuotaConfig:
    """Per-friend limits (the ``quotas`` section of config.json; ARCHITECTURE.md §7).

    Over a message rate a friend is paced, not refused (its stream is read at the rate):
    alone, a friend may use about all one daemon durably stores (~2,000-5,000/s on the 2-core
    machine: the burst and ``messages_per_s`` are for a long-offline friend's backlog and
    scripted bulk sends); while another friend is also sending, each is paced to
    ``shared_messages_per_s``, far above any person's typing, so a flood cannot slow the
    others (bench/bench_flood.py).
    """

    message_burst: int = 20_000
    messages_per_s: float = 5_000.0
    shared_message_burst: int = 500
    shared_messages_per_s: float = 500.0
    """While another friend has sent within 2 s (``chat.quotas.CONTENTION_WINDOW_S``)."""
    max_unread_messages: int = 100_000
    """Messages from one friend stored and not yet read: reading the conversation frees it."""
    hello_burst: int = 30
    hellos_per_s: float = 1 / 6
    request_burst: int = 3
    requests_per_s: float = 1 / 60
    """``request`` frames from a friend or a peer we asked (strangers: RequestLimiter)."""
    max_open_offers: int = 20
    """Incoming file offers from one friend not yet ended."""
    max_ended_transfers: int = 1_000
    """Ended transfer records kept per friend; older ones are pruned (files stay on disk)."""
    refusal_burst: int = 50
    refusals_per_s: float = 1.0
    """Refusals a friend may draw (after the burst, this many per second): an honest daemon
    draws a few; past this the friend is disconnected for a cool-down."""
    cooldown_s: float = 30.0
    """The first cool-down; each one within an hour of the last doubles, up to 10 minutes."""

    @classmethod
    def from_json(cls, raw: Any) -> QuotaConfig:
        """Parse the ``quotas`` object; missing keys take their defaults. ValueError if bad."""
        if not isinstance(raw, dict):
            raise ValueError("'quotas' must be an object")
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in raw.items():
            f = known.get(key)
            if f is None:
                raise ValueError(f"'quotas' has no setting {key!r} (known: {', '.join(known)})")
            integral = f.type == "int"
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or (integral and not isinstance(value, int))
                or not 0 < value <= 1e9
            ):
                kind = "a whole number" if integral else "a number"
                raise ValueError(f"'quotas.{key}' must be {kind} above 0")
            values[key] = value
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class Config:
    listen: list[str] = field(default_factory=lambda: list(DEFAULT_LISTEN))
    name: str = ""
    """The name announced to peers in friend requests and accepts (may be empty)."""
    incoming_dir: str = ""
    """Where received files land; empty means ``<home>/incoming``."""
    auto_accept_max_bytes: int = 0
    """Files from friends up to this size are accepted without asking; 0 turns it off."""
    max_send_rate: int = 0
    """Upper bound on file-sending speed in bytes per second, over all transfers; 0: none."""
    transfer_stall_timeout: float = 30.0
    """Seconds a file-data session may move nothing before it is dropped and retried."""
    direct_transfers: bool = True
    """Move file data over a direct TCP connection when one can be made (else, and when
    False, over the libp2p connection, which is slower)."""
    bootstrap: list[str] = field(default_factory=list)
    """Full multiaddrs (``.../p2p/<ID>``) of daemons to join the DHT through. Empty by default:
    p2pchat never contacts a public server unless the user configures one."""
    dht_protocol: str = DEFAULT_DHT_PROTOCOL
    """The Kademlia protocol ID: daemons configured alike form one overlay."""
    dht_mode: str = "auto"
    """``server`` answers DHT queries, ``client`` only asks; ``auto`` serves unless the
    daemon learns it is behind a NAT."""
    mdns: bool = True
    """Find other daemons on the local network segment (multicast DNS)."""
    relay_service: str = "auto"
    """Offer circuit relay v2 to others: ``auto`` while publicly reachable, or on/off."""
    relay_max_reservations: int = 128
    relay_max_reservations_per_ip: int = 2
    """Reservations the relay grants to peers connecting from one IP address (0: none)."""
    relay_max_circuit_bytes: int = 1 << 27
    """Bytes a relayed connection may carry (both directions) before the relay closes it."""
    relay_max_circuit_seconds: int = 600
    call_auto_answer: bool = False
    """Answer friends' calls without asking (for unattended use)."""
    call_ring_timeout: float = 45.0
    """Seconds a call rings before it ends as unanswered."""
    call_record_dir: str = ""
    """Where auto-answered calls are recorded; empty discards their media."""
    conference_encode_once: bool = True
    """Group calls encode each source once for all participants (false: once per
    participant, aiortc's default; for comparing the two)."""
    ice_servers: list[Any] = field(default_factory=list)
    """STUN/TURN servers for calls: ``"stun:host:port"`` strings, or ``{"urls": "turn:...",
    "username": ..., "credential": ...}`` objects. Empty by default: no third party learns
    of a call."""
    web: bool = True
    """Serve the web app (the control API for a browser page, behind a token)."""
    quotas: QuotaConfig = field(default_factory=QuotaConfig)
    """Per-friend limits (``p2pchat.chat.quotas``): an object with any of its keys."""
    mailbox: bool = True
    """Hold messages for offline friends of ours that other friends send them (envelopes we
    cannot read; :mod:`p2pchat.mailbox`). Our own messages use other friends either way."""
    mailbox_max_bytes: int = 64 * 1024 * 1024
    """What we hold for others at most, in bytes."""
    mailbox_max_days: float = 7.0
    """How long we hold an envelope at most."""
    web_listen: str = DEFAULT_WEB_LISTEN
    """``HOST:PORT`` of the web app (``[v6]:PORT`` for IPv6); loopback by default. Port 0
    picks a free port, which is then written back here."""

    def to_json(self) -> dict[str, Any]:
        return {
            "listen": self.listen,
            "name": self.name,
            "incoming_dir": self.incoming_dir,
            "auto_accept_max_bytes": self.auto_accept_max_bytes,
            "max_send_rate": self.max_send_rate,
            "direct_transfers": self.direct_transfers,
            "transfer_stall_timeout": self.transfer_stall_timeout,
            "bootstrap": self.bootstrap,
            "dht_protocol": self.dht_protocol,
            "dht_mode": self.dht_mode,
            "mdns": self.mdns,
            "relay_service": self.relay_service,
            "relay_max_reservations": self.relay_max_reservations,
            "relay_max_reservations_per_ip": self.relay_max_reservations_per_ip,
            "relay_max_circuit_bytes": self.relay_max_circuit_bytes,
            "relay_max_circuit_seconds": self.relay_max_circuit_seconds,
            "call_auto_answer": self.call_auto_answer,
            "call_ring_timeout": self.call_ring_timeout,
            "call_record_dir": self.call_record_dir,
            "conference_encode_once": self.conference_encode_once,
            "ice_servers": self.ice_servers,
            "web": self.web,
            "web_listen": self.web_listen,
            "mailbox": self.mailbox,
            "mailbox_max_bytes": self.mailbox_max_bytes,
            "mailbox_max_days": self.mailbox_max_days,
            "quotas": self.quotas.to_json(),
        }

    def incoming_path(self, home: Path) -> Path:
        return Path(self.incoming_dir).expanduser() if self.incoming_dir else home / "incoming"


def load_config(home: Path) -> Config:
    path = home / CONFIG_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return Config()
    except (OSError, ValueError, RecursionError) as exc:  # RecursionError: nested too deep
        raise ConfigError(f"cannot read {path}: {type(exc).__name__}: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a JSON object")
    cfg = Config()
    listen = raw.get("listen", cfg.listen)
    if not isinstance(listen, list) or not all(
        isinstance(a, str) and a.startswith("/") for a in listen
    ):
        raise ConfigError(f"{path}: 'listen' must be a list of multiaddr strings")
    name = raw.get("name", "")
    if not isinstance(name, str) or text_problem(name, MAX_NAME_BYTES) is not None:
        raise ConfigError(
            f"{path}: 'name' must be a string of at most {MAX_NAME_BYTES} bytes, without "
            "control characters"
        )
    incoming = raw.get("incoming_dir", "")
    if not isinstance(incoming, str) or "\x00" in incoming:
        raise ConfigError(f"{path}: 'incoming_dir' must be a directory path (or empty)")
    try:
        absolute = not incoming or Path(incoming).expanduser().is_absolute()
    except RuntimeError:  # "~name" naming no user (or no home directory to expand "~")
        absolute = False
    if not absolute:
        raise ConfigError(f"{path}: 'incoming_dir' must be an absolute path")
    auto = _count(raw, "auto_accept_max_bytes", path)
    rate = _count(raw, "max_send_rate", path)
    if 0 < rate < MIN_SEND_RATE:
        raise ConfigError(f"{path}: 'max_send_rate' must be 0 (no cap) or at least {MIN_SEND_RATE}")
    stall = raw.get("transfer_stall_timeout", 30.0)
    if isinstance(stall, bool) or not isinstance(stall, int | float) or not 2 <= stall <= 3600:
        raise ConfigError(f"{path}: 'transfer_stall_timeout' must be 2 to 3600 seconds")
    direct = raw.get("direct_transfers", True)
    if not isinstance(direct, bool):
        raise ConfigError(f"{path}: 'direct_transfers' must be true or false")
    bootstrap = raw.get("bootstrap", [])
    if not isinstance(bootstrap, list) or not all(
        isinstance(a, str) and bootstrap_problem(a) is None for a in bootstrap
    ):
        raise ConfigError(
            f"{path}: 'bootstrap' must be a list of full multiaddrs ending in /p2p/<ID>"
        )
    protocol = raw.get("dht_protocol", DEFAULT_DHT_PROTOCOL)
    if not isinstance(protocol, str) or not protocol.startswith("/") or len(protocol) > 100:
        raise ConfigError(f"{path}: 'dht_protocol' must be a protocol ID like /p2pchat/kad/1.0.0")
    mode = raw.get("dht_mode", "auto")
    if mode not in DHT_MODES:
        raise ConfigError(f"{path}: 'dht_mode' must be one of {', '.join(DHT_MODES)}")
    relay = raw.get("relay_service", "auto")
    if relay not in RELAY_SERVICE_MODES:
        raise ConfigError(
            f"{path}: 'relay_service' must be one of {', '.join(RELAY_SERVICE_MODES)}"
        )
    mdns = raw.get("mdns", True)
    if not isinstance(mdns, bool):
        raise ConfigError(f"{path}: 'mdns' must be true or false")
    cfg.bootstrap = list(bootstrap)
    cfg.dht_protocol = protocol
    cfg.dht_mode = mode
    cfg.relay_service = relay
    cfg.mdns = mdns
    for key in (
        "relay_max_reservations",
        "relay_max_reservations_per_ip",
        "relay_max_circuit_bytes",
        "relay_max_circuit_seconds",
    ):
        if key in raw:
            setattr(cfg, key, _count(raw, key, path))
    auto_answer = raw.get("call_auto_answer", False)
    if not isinstance(auto_answer, bool):
        raise ConfigError(f"{path}: 'call_auto_answer' must be true or false")
    ring = raw.get("call_ring_timeout", 45.0)
    if isinstance(ring, bool) or not isinstance(ring, int | float) or not 2 <= ring <= 600:
        raise ConfigError(f"{path}: 'call_ring_timeout' must be 2 to 600 seconds")
    record_dir = raw.get("call_record_dir", "")
    if not isinstance(record_dir, str) or (record_dir and not Path(record_dir).is_absolute()):
        raise ConfigError(f"{path}: 'call_record_dir' must be an absolute directory path")
    encode_once = raw.get("conference_encode_once", True)
    if not isinstance(encode_once, bool):
        raise ConfigError(f"{path}: 'conference_encode_once' must be true or false")
    ice = raw.get("ice_servers", [])
    if not isinstance(ice, list) or not all(ice_server_problem(e) is None for e in ice):
        bad = next((ice_server_problem(e) for e in ice), None) if isinstance(ice, list) else None
        raise ConfigError(
            f"{path}: 'ice_servers' must list stun:/turn: URLs or "
            f'{{"urls", "username", "credential"}} objects ({bad or "not a list"})'
        )
    web = raw.get("web", True)
    if not isinstance(web, bool):
        raise ConfigError(f"{path}: 'web' must be true or false")
    web_listen = raw.get("web_listen", DEFAULT_WEB_LISTEN)
    if not isinstance(web_listen, str) or parse_web_listen(web_listen) is None:
        raise ConfigError(
            f"{path}: 'web_listen' must be HOST:PORT with an IP address or localhost as HOST "
            "(IPv6 in brackets) and a port from 0 to 65535, e.g. 127.0.0.1:0"
        )
    mailbox = raw.get("mailbox", True)
    if not isinstance(mailbox, bool):
        raise ConfigError(f"{path}: 'mailbox' must be true or false")
    mailbox_bytes = _count(raw, "mailbox_max_bytes", path) if "mailbox_max_bytes" in raw else None
    days = raw.get("mailbox_max_days", 7.0)
    if isinstance(days, bool) or not isinstance(days, int | float) or not 0.01 <= days <= 365:
        raise ConfigError(f"{path}: 'mailbox_max_days' must be 0.01 to 365 days")
    cfg.mailbox = mailbox
    if mailbox_bytes is not None:
        cfg.mailbox_max_bytes = mailbox_bytes
    cfg.mailbox_max_days = float(days)
    try:
        cfg.quotas = QuotaConfig.from_json(raw.get("quotas", {}))
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    cfg.web = web
    cfg.web_listen = web_listen
    cfg.call_auto_answer = auto_answer
    cfg.call_ring_timeout = float(ring)
    cfg.call_record_dir = record_dir
    cfg.conference_encode_once = encode_once
    cfg.ice_servers = list(ice)
    cfg.listen = list(listen) or list(DEFAULT_LISTEN)
    cfg.name = name
    cfg.incoming_dir = incoming
    cfg.auto_accept_max_bytes = auto
    cfg.max_send_rate = rate
    cfg.direct_transfers = direct
    cfg.transfer_stall_timeout = float(stall)
    return cfg


def parse_web_listen(text: str) -> tuple[str, int] | None:
    """``(host, port)`` of a ``web_listen`` value, or None if it is not one. The host is an
    IP literal (IPv6 in brackets, returned without them) or ``localhost``: never a name that
    DNS could point elsewhere."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isascii() or not port_text.isdigit() or len(port_text) > 5:
        return None
    port = int(port_text)
    if port > 65535:
        return None
    if host.lower() == "localhost":
        return "localhost", port
    bracketed = host.startswith("[") and host.endswith("]")
    literal = host[1:-1] if bracketed else host
    try:
        address = ipaddress.ip_address(literal)
    except ValueError:
        return None
    if (address.version == 6) != bracketed or "%" in literal:
        return None  # IPv6 needs brackets (and no zone); IPv4 must not have them
    return str(address), port


_ICE_URL = re.compile(r"^(stun|turn):[A-Za-z0-9.\-\[\]:]+(\?transport=(udp|tcp))?$")


def ice_server_problem(entry: Any) -> str | None:
    """Why ``entry`` is not a usable ``ice_servers`` entry, or None. (aiortc supports
    ``stun:`` and ``turn:``, not ``stuns:``/``turns:``; TURN needs credentials.)"""
    if isinstance(entry, str):
        entry = {"urls": entry}
    if not isinstance(entry, dict) or not set(entry) <= {"urls", "username", "credential"}:
        return f"{entry!r} is neither a URL nor a urls/username/credential object"
    url = entry.get("urls")
    if not isinstance(url, str) or not _ICE_URL.match(url):
        return f"{url!r} is not a stun: or turn: URL"
    user, secret = entry.get("username", ""), entry.get("credential", "")
    if not isinstance(user, str) or not isinstance(secret, str):
        return "username and credential must be text"
    if url.startswith("turn:") and not (user and secret):
        return f"{url} needs a username and a credential"
    return None


def ice_server_tuples(entries: list[Any]) -> tuple[tuple[str, str, str], ...]:
    out: list[tuple[str, str, str]] = []
    for entry in entries:
        e = {"urls": entry} if isinstance(entry, str) else entry
        out.append((e["urls"], e.get("username", ""), e.get("credential", "")))
    return tuple(out)


def bootstrap_problem(addr: str) -> str | None:
    """Why ``addr`` cannot be a bootstrap address, or None if it can."""
    parts = addr.strip("/").split("/")
    if not addr.startswith("/") or len(parts) < 4 or parts[-2] != "p2p":
        return f"{addr!r} is not a multiaddr ending in /p2p/<ID>"
    import base58

    try:
        ok = len(base58.b58decode(parts[-1])) >= 34  # a multihash of a key or of its digest
    except ValueError:
        ok = False
    return None if ok else f"{addr!r} does not end in a valid peer ID"


def _count(raw: dict[str, Any], key: str, path: Path) -> int:
    value = raw.get(key, 0)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"{path}: {key!r} must be a whole number >= 0")
    return value


def save_config(home: Path, cfg: Config) -> None:
    path = home / CONFIG_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(cfg.to_json(), f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def pin_ports(listen: list[str], bound_ports: list[int]) -> list[str]:
    """Replace OS-chosen ports (``tcp/0``) by the ports actually bound, in order."""
    pinned: list[str] = []
    ports = iter(bound_ports)
    for addr in listen:
        if addr.endswith("/tcp/0"):
            port = next(ports, None)
            pinned.append(addr[: -len("0")] + str(port) if port else addr)
        else:
            next(ports, None)
            pinned.append(addr)
    return pinned
