"""The Node: one identity's whole engine (store, network, chat, events) under one nursery.

The daemon is a thin process around a Node; tests may run a Node in-process too. Everything
the Node starts lives in the nursery of :meth:`Node.run` and stops when it is cancelled.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

import p2pchat
from p2pchat.calls.conferences import Conferences
from p2pchat.calls.manager import CallManager, CallsConfig
from p2pchat.chat.friendship import ContactState
from p2pchat.chat.invites import load_or_create_invite, rotate_invite
from p2pchat.chat.service import Chat
from p2pchat.chat.store import ChatStore
from p2pchat.config import Config, ice_server_tuples, pin_ports, save_config
from p2pchat.events import EventBus
from p2pchat.files.manager import FilesConfig, TransferManager
from p2pchat.files.store import TransferStore
from p2pchat.groups.service import Groups
from p2pchat.groups.store import GroupStore
from p2pchat.identity import FriendCode, Identity, key_file_is_encrypted
from p2pchat.mailbox.service import Mailbox
from p2pchat.mailbox.store import Limits, MailboxStore
from p2pchat.net.discovery import Discovery, DiscoveryConfig
from p2pchat.net.host import Network
from p2pchat.net.relay import RelayLimitsConfig
from p2pchat.paths import DB_FILE, KEY_FILE
from p2pchat.ratchet.pair import pickle_key
from p2pchat.storage.encryption import database_key
from p2pchat.storage.schema import open_database
from p2pchat.storage.settings import Settings

log = logging.getLogger(__name__)


def _tcp_port_free(addr: str) -> bool:
    """Whether ``/ip4|ip6/HOST/tcp/PORT`` can be bound now (port 0 always can)."""
    parts = addr.strip("/").split("/")
    if len(parts) != 4 or parts[0] not in ("ip4", "ip6") or parts[2] != "tcp":
        return True
    host, port = parts[1], int(parts[3])
    if port == 0:
        return True
    family = socket.AF_INET6 if parts[0] == "ip6" else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError:
        return False  # in use, or the address family is unavailable: listen elsewhere
    return True


def _direct_host(listen: Sequence[str]) -> str:
    """The IPv4 address a receiver's direct data port binds to: where the daemon listens."""
    for addr in listen:
        parts = addr.strip("/").split("/")
        if len(parts) >= 2 and parts[0] == "ip4":
            return parts[1]
    return "0.0.0.0"


class ListenError(Exception):
    """The daemon could not listen on any of its addresses."""


class Node:
    def __init__(
        self,
        identity: Identity,
        home: Path,
        config: Config,
        *,
        listen_override: Sequence[str] | None = None,
        extra_bootstrap: Sequence[str] = (),
    ) -> None:
        self.identity = identity
        self.home = home
        self.config = config
        self.listen_override = list(listen_override) if listen_override else None
        self.bootstrap = tuple(dict.fromkeys([*config.bootstrap, *extra_bootstrap]))
        self.events = EventBus()
        self.started_at = time.monotonic()
        self.network: Network | None = None
        self.chat: Chat | None = None
        self.files: TransferManager | None = None
        self.mailbox: Mailbox | None = None
        self.groups: Groups | None = None
        self.discovery: Discovery | None = None
        self.calls: CallManager | None = None
        self.conferences: Conferences | None = None
        self.at_rest = "plain"

    @property
    def peer_id(self) -> str:
        return self.identity.peer_id

    async def before_stop(self) -> None:
        """What must reach friends while the network is still up, before the daemon's tasks
        are cancelled: the hang-up of a live call."""
        if self.calls is not None:
            await self.calls.end_before_stop()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        # History and transfer metadata are encrypted at rest when the key file is sealed
        # with a passphrase (p2pchat/storage/encryption.py says why not otherwise).
        sealed = await trio.to_thread.run_sync(key_file_is_encrypted, self.home / KEY_FILE)
        db_key = database_key(self.identity.seed) if sealed else None
        async with open_database(self.home / DB_FILE, key=db_key) as db:
            self.at_rest = "encrypted" if db.encrypted else "plain"
            network = Network(self.identity)
            self.network = network
            self.chat = Chat(
                network=network,
                store=ChatStore(db),
                events=self.events,
                name=self.config.name,
                quotas=self.config.quotas,
            )
            self.mailbox = Mailbox(
                self.chat,
                MailboxStore(
                    db,
                    Limits(
                        max_bytes=self.config.mailbox_max_bytes,
                        max_seconds=int(self.config.mailbox_max_days * 86400),
                    ),
                ),
                self.events,
                hold=self.config.mailbox,
            )
            self.groups = Groups(self.chat, GroupStore(db, pickle_key(self.identity)), self.events)
            listen = self._listen_addrs()
            self.files = TransferManager(
                chat=self.chat,
                store=TransferStore(db),
                events=self.events,
                config=FilesConfig(
                    incoming_dir=self.config.incoming_path(self.home),
                    auto_accept_max_bytes=self.config.auto_accept_max_bytes,
                    direct_host=_direct_host(listen),
                    max_send_rate=self.config.max_send_rate,
                    direct=self.config.direct_transfers,
                    stall_timeout=self.config.transfer_stall_timeout,
                ),
            )
            self.calls = CallManager(
                self.chat,
                self.events,
                CallsConfig(
                    auto_answer=self.config.call_auto_answer,
                    ring_timeout=self.config.call_ring_timeout,
                    ice_servers=ice_server_tuples(self.config.ice_servers),
                    record_dir=self.config.call_record_dir,
                ),
                public_ips=self._public_ips,
            )
            calls = self.calls
            conferences = Conferences(
                self.groups,
                self.events,
                in_other_call=lambda: calls.current is not None and calls.current.call.live,
                public_ips=self._public_ips,
                ice_servers=ice_server_tuples(self.config.ice_servers),
                auto_answer=self.config.call_auto_answer,
                ring_timeout=self.config.call_ring_timeout,
                encode_once=self.config.conference_encode_once,
            )
            self.conferences = conferences
            calls.in_other_call = lambda: conferences.live
            # Handlers in place before anyone can connect.
            self.chat.friends.gate.secret = await trio.to_thread.run_sync(
                load_or_create_invite, self.home
            )
            await self.chat.load()
            await self.mailbox.load()
            await self.groups.load()
            await self.files.load()
            self.calls.load()
            conferences.load()
            async with network.run(listen):
                # py-libp2p 0.8.1 logs a failed bind and carries on with no listener, so
                # success is judged by the ports actually bound.
                if len(network.bound_ports()) != len(listen):
                    raise ListenError(
                        f"cannot listen on {', '.join(listen)} (address in use or unavailable)"
                    )
                await self._pin_ports(network, listen)
                discovery = self._discovery(network, Settings(db), self.chat)
                self.mailbox.closest = discovery.closest_servers  # DHT holders
                async with trio.open_nursery() as nursery:
                    await nursery.start(self.chat.run)
                    await nursery.start(self.mailbox.run)
                    await nursery.start(self.groups.run)
                    await nursery.start(self.files.run)
                    await nursery.start(discovery.run)
                    await nursery.start(self.calls.run)
                    await nursery.start(conferences.run)
                    log.info(
                        "p2pchat %s ready as %s, listening on %s",
                        p2pchat.__version__,
                        self.peer_id,
                        ", ".join(network.listen_addrs()),
                    )
                    task_status.started()
                    await trio.sleep_forever()

    def _discovery(self, network: Network, settings: Settings, chat: Chat) -> Discovery:
        """The DHT, relays and mDNS, wired to chat: links resolve friends through the DHT,
        friends are told our advertised addresses, and every connection is a DHT
        candidate."""
        cfg = self.config
        discovery = Discovery(
            network,
            settings,
            self.identity,
            DiscoveryConfig(
                protocol=cfg.dht_protocol,
                mode=cfg.dht_mode,
                bootstrap=self.bootstrap,
                mdns=cfg.mdns,
                relay_service=cfg.relay_service,
                relay_limits=RelayLimitsConfig(
                    max_reservations=cfg.relay_max_reservations,
                    max_circuit_bytes=cfg.relay_max_circuit_bytes,
                    max_circuit_seconds=cfg.relay_max_circuit_seconds,
                    max_reservations_per_ip=cfg.relay_max_reservations_per_ip,
                ),
            ),
        )
        self.discovery = discovery
        chat.reach.resolver = discovery.find_addrs
        chat.friends.addr_source = discovery.advertised
        chat.roster.add_connection_listener(
            lambda peer, up: discovery.peer_connected(peer) if up else None
        )
        return discovery

    def _public_ips(self) -> list[str]:
        return self.discovery.public_ips() if self.discovery else []

    def _listen_addrs(self) -> list[str]:
        """The addresses to listen on. A configured (pinned) TCP port that is taken now falls
        back to an OS-chosen one, which is then pinned instead; ``--listen`` is used as given."""
        if self.listen_override:
            return list(self.listen_override)
        chosen: list[str] = []
        for addr in self.config.listen:
            if not _tcp_port_free(addr):
                fallback = addr.rsplit("/", 1)[0] + "/0"
                log.warning("listen address %s is in use; using %s instead", addr, fallback)
                addr = fallback
            chosen.append(addr)
        return chosen

    async def _pin_ports(self, network: Network, listen: list[str]) -> None:
        if self.listen_override is not None:
            return
        pinned = pin_ports(listen, network.bound_ports())
        if pinned != self.config.listen:
            self.config.listen = pinned
            await trio.to_thread.run_sync(save_config, self.home, self.config)
            log.info("pinned listen addresses in config: %s", pinned)

    # --- read-only views for the API -------------------------------------------------------

    def _require_chat(self) -> Chat:
        if self.chat is None:
            raise RuntimeError("node not started")
        return self.chat

    def addrs(self) -> list[str]:
        return self.network.listen_addrs() if self.network else []

    def friend_code(self) -> str:
        advertised = self.discovery.advertised() if self.discovery else tuple(self.addrs())
        invite = self.chat.friends.gate.secret if self.chat else None
        return FriendCode(self.peer_id, tuple(advertised[:8]), invite).encode()

    async def rotate_invite(self) -> str:
        """A new invite secret: codes given out so far stop admitting requests through the
        invited path (they and bare IDs still work, through the stranger path)."""
        chat = self._require_chat()
        chat.friends.gate.secret = await trio.to_thread.run_sync(rotate_invite, self.home)
        return self.friend_code()

    def _closed_connections(self, peer: str) -> int:
        """Connections from ``peer`` closed as they opened while it was kept away."""
        return self.network.kept.closed(peer) if self.network else 0

    async def status(self) -> dict[str, Any]:
        chat = self._require_chat()
        contacts = chat.roster.contacts()
        friends = [c for c in contacts if c.state is ContactState.FRIEND]
        outbox = await chat.messages.store.outbox_sizes()
        return {
            "peer_id": self.peer_id,
            "pid": os.getpid(),
            "version": p2pchat.__version__,
            "uptime_s": round(time.monotonic() - self.started_at, 3),
            "home": str(self.home),
            "listen_addrs": self.addrs(),
            "friends": len(friends),
            "friends_online": sum(1 for c in friends if chat.roster.is_online(c.peer_id)),
            "pending_requests": sum(1 for c in contacts if c.state is ContactState.INCOMING),
            "outbox": sum(outbox.values()),
            "connections": len(self.network.connected_peers()) if self.network else 0,
            "transfers_active": self.files.active_count() if self.files else 0,
            **(self.discovery.status() if self.discovery else {}),
            "call": (self.calls.status() if self.calls else None)
            or (self.conferences.status() if self.conferences else None),
            "at_rest": self.at_rest,
            "mailbox": await self.mailbox.status() if self.mailbox else None,
            "groups": self.groups.status() if self.groups else None,
            "quotas": {
                "refusing": [
                    {**entry, "connections_closed": self._closed_connections(entry["peer_id"])}
                    for entry in chat.quotas.status()
                ],
                "connections_throttled": self.network.kept.throttled if self.network else 0,
                "refused_by": [
                    {"peer_id": peer, "code": r.code, "reason": r.reason}
                    for peer, r in chat.messages.refused_by.items()
                ],
            },
        }
