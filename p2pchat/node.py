"""The Node: one identity's whole engine (store, network, chat, events) under one nursery.

The daemon is a thin process around a Node; tests may run a Node in-process too. Everything
the Node starts lives in the nursery of :meth:`Node.run` and stops when it is cancelled.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

import p2pchat
from p2pchat.chat import Chat
from p2pchat.config import Config, pin_ports, save_config
from p2pchat.events import EventBus
from p2pchat.identity import FriendCode, Identity
from p2pchat.net import Network
from p2pchat.paths import DB_FILE
from p2pchat.store import ContactState, Store

log = logging.getLogger(__name__)


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
    ) -> None:
        self.identity = identity
        self.home = home
        self.config = config
        self.listen_override = list(listen_override) if listen_override else None
        self.events = EventBus()
        self.started_at = time.monotonic()
        self.network: Network | None = None
        self.chat: Chat | None = None
        self.store: Store | None = None

    @property
    def peer_id(self) -> str:
        return self.identity.peer_id

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with Store.open(self.home / DB_FILE) as db:
            self.store = Store(db)
            listen = list(self.listen_override or self.config.listen)
            async with self._listen(listen) as network:
                self.network = network
                self.chat = Chat(
                    network=network, store=self.store, events=self.events, name=self.config.name
                )
                async with trio.open_nursery() as nursery:
                    await nursery.start(self.chat.run)
                    log.info(
                        "p2pchat %s ready as %s, listening on %s",
                        p2pchat.__version__,
                        self.peer_id,
                        ", ".join(network.listen_addrs()),
                    )
                    task_status.started()
                    await trio.sleep_forever()

    @asynccontextmanager
    async def _listen(self, listen: list[str]) -> AsyncIterator[Network]:
        """Listen on ``listen``. For the configured (not overridden) addresses, fall back to
        OS-chosen ports if a pinned one is taken, and pin the chosen ports in the config.

        py-libp2p 0.8.1 logs a failed bind and carries on with no listener, so success is
        judged by the ports actually bound, not by an exception.
        """
        network = Network(self.identity)
        async with network.run(listen):
            if len(network.bound_ports()) == len(listen):
                await self._pin_ports(network, listen)
                yield network
                return
        if self.listen_override:
            raise ListenError(
                f"cannot listen on {', '.join(listen)} (address in use or not available)"
            )
        fallback = [a.rsplit("/", 1)[0] + "/0" if "/tcp/" in a else a for a in listen]
        log.warning("cannot listen on %s (in use?); falling back to %s", listen, fallback)
        network = Network(self.identity)
        async with network.run(fallback):
            if not network.bound_ports():
                raise ListenError(f"cannot listen on {', '.join(fallback)}")
            await self._pin_ports(network, fallback)
            yield network

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
        return FriendCode(self.peer_id, tuple(self.addrs()[:8])).encode()

    async def status(self) -> dict[str, Any]:
        chat = self._require_chat()
        assert self.store is not None
        contacts = chat.contacts()
        friends = [c for c in contacts if c.state is ContactState.FRIEND]
        outbox = await self.store.outbox_sizes()
        return {
            "peer_id": self.peer_id,
            "pid": os.getpid(),
            "version": p2pchat.__version__,
            "uptime_s": round(time.monotonic() - self.started_at, 3),
            "home": str(self.home),
            "listen_addrs": self.addrs(),
            "friends": len(friends),
            "friends_online": sum(1 for c in friends if chat.is_online(c.peer_id)),
            "pending_requests": sum(1 for c in contacts if c.state is ContactState.INCOMING),
            "outbox": sum(outbox.values()),
            "connections": len(self.network.connected_peers()) if self.network else 0,
        }
