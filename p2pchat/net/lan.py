"""Finding daemons on the local network segment with mDNS, with no configuration.

py-libp2p's own mDNS (``new_host(enable_mDNS=True)``) registers with zeroconf on the trio
thread, uses the generic ``_p2p._udp`` name and deletes every address of a peer minutes
later (docs/ARCHITECTURE.md §8); :class:`LanDiscovery` builds it itself under our service
name, registers and stops it in worker threads, and hands what zeroconf hears (on its own
threads) to trio.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

import multiaddr
import trio
from libp2p.discovery.events.peerDiscovery import peerDiscovery
from libp2p.peer.peerinfo import PeerInfo

from p2pchat.net import compat
from p2pchat.net.host import Network
from p2pchat.net.reachability import ip_of, is_loopback_ip

log = logging.getLogger(__name__)

MDNS_SERVICE: Final = "_p2pchat._udp.local."


class LanDiscovery:
    """Announces us on the LAN and hands each daemon heard there to ``found`` (peer ID,
    addresses), after adding its addresses to the peerstore."""

    def __init__(
        self, network: Network, me: str, found: Callable[[str, list[str]], Awaitable[None]]
    ) -> None:
        self.network = network
        self.me = me
        self._found = found

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Announce ourselves and hear others on the LAN (zeroconf runs its own threads)."""
        from libp2p.discovery.mdns.mdns import MDNSDiscovery

        token = trio.lowlevel.current_trio_token()
        send, recv = trio.open_memory_channel[PeerInfo](64)

        def heard(info: PeerInfo) -> None:  # called on a zeroconf thread
            def deliver() -> None:
                with contextlib.suppress(trio.WouldBlock, trio.ClosedResourceError):
                    send.send_nowait(info)

            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(deliver)

        lan = [
            a
            for a in self.network.listen_addrs()
            if (ip := ip_of(a)) is not None and not is_loopback_ip(ip)
        ]
        ports = self.network.bound_ports()
        if not lan or not ports:
            log.info("mDNS off: no non-loopback listen address to announce")
            task_status.started()
            return
        peerDiscovery.register_peer_discovered_handler(heard)
        try:
            mdns = await trio.to_thread.run_sync(
                lambda: MDNSDiscovery(
                    self.network.host.get_network(),
                    port=ports[0],
                    service_type=MDNS_SERVICE,
                    listen_addrs=lan,
                    host=None,
                )
            )
        except Exception as exc:
            peerDiscovery.unregister_peer_discovered_handler(heard)
            log.warning("mDNS unavailable: %s", exc)
            task_status.started()
            return
        try:
            # Not mdns.start(): that would also start its cleanup task (compat.register_mdns).
            await trio.to_thread.run_sync(compat.register_mdns, mdns)
            log.info("mDNS: announcing %s", ", ".join(lan))
            task_status.started()
            async for info in recv:
                await self._heard(info)
        finally:
            peerDiscovery.unregister_peer_discovered_handler(heard)
            with trio.CancelScope(shield=True), trio.move_on_after(3):
                await trio.to_thread.run_sync(mdns.stop, abandon_on_cancel=True)  # type: ignore[call-arg]

    async def _heard(self, info: PeerInfo) -> None:
        peer = str(info.peer_id)
        if peer == self.me:
            return
        # Heard on our segment: its LAN addresses may be dialed, never loopback ones (anyone
        # on the segment can multicast any announcement).
        addrs = self.network.admit(peer, [str(a) for a in info.addrs], on_lan=True)
        if not addrs:
            return
        log.info("mDNS: found %s at %s", peer, ", ".join(addrs))
        self.network.host.get_peerstore().add_addrs(
            info.peer_id, [multiaddr.Multiaddr(a) for a in addrs], 3600
        )
        await self._found(peer, addrs)
