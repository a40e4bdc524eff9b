"""Store and forward between friends (PROTOCOL.md §14): messages reach a friend who is offline
through other friends that are online, and receipts come back the same way.

Three jobs, one task each under :meth:`Mailbox.run`:

- **holding** (:meth:`Mailbox.serve`): a friend deposits an envelope for another of our
  friends; we keep it durably within our limits and hand it over when its recipient fetches
  (the libp2p connection proves who the recipient is), deleting what it took;
- **depositing**: a message pending for a friend who is not connected is sealed (the same
  Olm message a direct delivery sends: :mod:`p2pchat.chat.sealing`) into an envelope and
  handed to up to ``HOLDERS`` connected friends; a receipt we owe goes the same way;
- **fetching**: whenever a friend connects (and every ``FETCH_INTERVAL_S`` while connected),
  we ask it for what it holds for us, store what opens in the same transaction as its Olm
  state, and tell it what to delete. A copy that was altered is dropped and counted; the
  other holders' copies, or the sender itself later, still bring the message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import trio
from libp2p.abc import INetStream

from p2pchat import wire
from p2pchat.chat.messages import message_json
from p2pchat.chat.ratelimit import RequestLimiter
from p2pchat.chat.sealing import SealFailed
from p2pchat.chat.service import Chat
from p2pchat.chat.store import IncomingMessage, MessageRecord
from p2pchat.clock import now_ms
from p2pchat.events import EventBus
from p2pchat.identity import short
from p2pchat.mailbox import frames
from p2pchat.mailbox.envelope import (
    Envelope,
    EnvelopeError,
    HeldMessage,
    HeldReceipt,
    Opened,
    box_key,
    open_envelope,
    parse_envelope,
    seal_envelope,
)
from p2pchat.mailbox.frames import MAILBOX_PROTOCOL, MailboxDecoder
from p2pchat.mailbox.store import MailboxStore, QuotaFull
from p2pchat.net.link import Wakeup
from p2pchat.net.streams import log_stream_failure, read_some, refuse, reset
from p2pchat.storage.database import DatabaseError

log = logging.getLogger(__name__)

HOLDERS: Final = 3
"""Friends each waiting message is handed to."""
DEPOSIT_AFTER_S: Final = 2.0
"""A message waits this long for a direct delivery before it is handed to holders."""
ENVELOPE_TTL_S: Final = 7 * 24 * 3600
FETCH_INTERVAL_S: Final = 60.0
REFUSED_BACKOFF_S: Final = 300.0
"""A holder that refused to hold for a recipient is not asked again for that long."""
PASS_BATCH: Final = 64
MAX_PER_PASS: Final = 2048
ANSWER_TIMEOUT_S: Final = 30.0
DHT_FETCH_INTERVAL_S: Final = 300.0
"""How often we ask the DHT nodes nearest our ID for what they hold for us."""
DHT_HOLDERS_TTL_S: Final = 600.0
"""How long a lookup of the nodes nearest a friend's ID is reused."""
DHT_FETCH_FROM: Final = 6
"""Nodes nearest our ID we fetch from (a sender hands to the ``HOLDERS`` nearest it finds)."""

ClosestPeers = Callable[[str, int], Awaitable[list[str]]]
"""The DHT servers nearest an ID (:meth:`p2pchat.net.discovery.Discovery.closest_servers`)."""


class Mailbox:
    """Holding for friends, and depositing and fetching our own. ``await load()`` before the
    host listens, then ``nursery.start(run)``."""

    def __init__(
        self, chat: Chat, store: MailboxStore, events: EventBus, *, hold: bool = True
    ) -> None:
        self.chat = chat
        self.net = chat.net
        self.roster = chat.roster
        self.sealing = chat.sealing
        self.chat_store = chat.roster.store
        self.store = store
        self.events = events
        self.hold = hold
        """Whether we hold envelopes for others (config ``mailbox``); fetching is always on."""
        self._wake = Wakeup()
        self._fetch_from: set[str] = set()
        self._refused: dict[tuple[str, str], float] = {}
        """(holder, recipient) -> monotonic time until which that holder is not asked."""
        self.counts = {"deposited": 0, "fetched": 0, "altered": 0, "unopened": 0, "refused": 0}
        self.closest: ClosestPeers | None = None
        """The DHT, once discovery runs: holders when no friend can hold (PROTOCOL.md §14.3)."""
        self._dht_holders: dict[str, tuple[float, list[str]]] = {}
        # Deposits under the DHT rules, from peers that need not be friends: per depositor,
        # over all, and per recipient.
        self._dht_depositors = RequestLimiter(
            time.monotonic,
            per_peer_burst=100,
            per_peer_per_s=2.0,
            global_burst=1000,
            global_per_s=50.0,
        )
        self._dht_recipients = RequestLimiter(
            time.monotonic,
            per_peer_burst=200,
            per_peer_per_s=2.0,
            global_burst=10**9,
            global_per_s=10.0**9,
        )

    async def load(self) -> None:
        self.net.set_handler(MAILBOX_PROTOCOL, self.chat.inbound.handler("mailbox", self.serve))
        self.roster.add_connection_listener(self._connection_changed)
        queued = self.chat.messages.on_queued

        def on_queued(record: MessageRecord) -> None:
            queued(record)
            if not self.net.is_connected(record.peer_id):
                self._wake.set()

        self.chat.messages.on_queued = on_queued
        purged = await self.store.purge_expired(int(time.time()))
        if purged:
            log.info("dropped %d expired envelopes held for others", purged)

    def _connection_changed(self, peer: str, up: bool) -> None:
        if up and self.roster.is_friend(peer):
            self._fetch_from.add(peer)
            self._wake.set()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._courier)
            nursery.start_soon(self._purge)
            nursery.start_soon(self._dht_fetch_loop)
            task_status.started()

    async def status(self) -> dict[str, Any]:
        holding = await self.store.holding()
        return {
            "holding": self.hold,
            "held_envelopes": holding.envelopes,
            "held_bytes": holding.bytes,
            "held_for": holding.recipients,
            "max_bytes": self.store.limits.max_bytes,
            **self.counts,
        }

    # --- holding ------------------------------------------------------------------------------

    async def serve(self, stream: INetStream, peer: str) -> None:
        # Strangers too: a DHT node near a recipient's ID holds for anyone (within the DHT
        # limits), and a recipient fetches from such nodes; each sees only its own envelopes.
        decoder = MailboxDecoder()
        try:
            while True:
                data = await read_some(stream)
                if not data:
                    break
                for frame in decoder.feed(data):
                    if isinstance(frame, frames.Deposit):
                        await self._answer(stream, await self._take(peer, frame.envelope))
                    elif isinstance(frame, frames.Fetch):
                        await self._hand_over(stream, peer)
                    elif isinstance(frame, frames.Taken):
                        n = await self.store.delete_taken(peer, frame.envelope_ids)
                        await self._answer(stream, frames.Deleted(n))
                    else:
                        raise wire.FrameError(f"unexpected {type(frame).__name__} from a friend")
            await stream.close()
        except wire.FrameError as exc:
            log.warning("closing mailbox stream from %s: %s", short(peer), exc)
            await refuse(stream, wire.REFUSED_BAD_FRAME, str(exc)[: wire.MAX_REASON_BYTES])
        except DatabaseError as exc:
            log.error("mailbox stream from %s: cannot use the database: %s", short(peer), exc)
            await reset(stream)
        except Exception as exc:
            log_stream_failure(exc, "mailbox stream from %s ended", peer)
            await reset(stream)

    async def _answer(self, stream: INetStream, frame: frames.MailboxFrame) -> None:
        try:
            await stream.write(frames.encode(frame))
        except Exception as exc:
            log_stream_failure(exc, "mailbox answer to %s failed", str(stream.muxed_conn.peer_id))

    async def _take(self, depositor: str, raw: bytes) -> frames.MailboxFrame:
        """Hold one envelope from ``depositor``, or say why not."""

        def refused(code: str, reason: str) -> wire.Refused:
            log.info("refused to hold an envelope from %s: %s", short(depositor), reason)
            return wire.Refused(code, reason)

        if not self.hold:
            return refused(frames.REFUSED_DISABLED, "this daemon does not hold messages for others")
        now = time.time()
        try:
            envelope = parse_envelope(raw, now)
        except EnvelopeError as exc:
            return refused(wire.REFUSED_BAD_FRAME, str(exc)[:200])
        if envelope.to in (depositor, self.net.identity.peer_id):
            return refused(
                frames.REFUSED_NOT_HELD_FOR, "deliver it directly: the recipient is here"
            )
        # Friends' friends: the generous limits. Anyone else: as a DHT node near the
        # recipient's ID, rate-limited by depositor and recipient, in a smaller space.
        via_dht = not (self.roster.is_friend(depositor) and self.roster.is_friend(envelope.to))
        if via_dht:
            if self.closest is None:
                return refused(
                    frames.REFUSED_NOT_HELD_FOR, "the recipient is not a friend of this holder"
                )
            if not self._dht_depositors.allow(depositor):
                return refused(wire.REFUSED_RATE_LIMITED, "too many deposits from you; slow down")
            if not self._dht_recipients.allow(envelope.to):
                return refused(wire.REFUSED_RATE_LIMITED, "too many deposits for that recipient")
        # Held at most as long as we allow, whatever the envelope asks (its expiry is signed).
        capped = Envelope(
            envelope.to,
            envelope.envelope_id,
            min(envelope.expires, int(now) + self.store.limits.max_seconds),
            envelope.box,
        )
        try:
            await self.store.hold(capped, raw, depositor, int(now), via_dht=via_dht)
        except QuotaFull as exc:
            return refused(frames.REFUSED_QUOTA, str(exc))
        except DatabaseError as exc:
            log.error("cannot hold an envelope from %s: %s", short(depositor), exc)
            return wire.Refused(wire.REFUSED_FULL, "the holder cannot store it now; try later")
        log.debug(
            "holding an envelope from %s for %s%s",
            short(depositor),
            short(envelope.to),
            " (as a DHT node)" if via_dht else "",
        )
        return frames.Stored(envelope.envelope_id)

    async def _hand_over(self, stream: INetStream, recipient: str) -> None:
        held = await self.store.held_for(recipient, int(time.time()), frames.MAX_TAKEN_IDS)
        for h in held:  # one at a time: up to 256 x 40 KiB are never in one buffer
            await stream.write(frames.encode(frames.Held(h.raw)))
        await stream.write(frames.encode(frames.End(len(held) == frames.MAX_TAKEN_IDS)))
        if held:
            log.info("handed %d envelopes to %s", len(held), short(recipient))

    async def _purge(self) -> None:
        while True:
            await trio.sleep(600)
            try:
                n = await self.store.purge_expired(int(time.time()))
            except DatabaseError as exc:
                log.error("cannot drop expired envelopes: %s", exc)
                continue
            if n:
                log.info("dropped %d expired envelopes held for others", n)

    # --- the courier: depositing and fetching --------------------------------------------------

    async def _courier(self) -> None:
        next_fetch_all = time.monotonic() + FETCH_INTERVAL_S
        wait: float = FETCH_INTERVAL_S
        while True:
            await self._wake.wait(wait)
            if time.monotonic() >= next_fetch_all:
                next_fetch_all = time.monotonic() + FETCH_INTERVAL_S
                self._fetch_from.update(p for p in self._connected_friends())
            wait = FETCH_INTERVAL_S
            try:
                while self._fetch_from:
                    holder = self._fetch_from.pop()
                    if self.net.is_connected(holder):
                        await self._fetch(holder)
                if await self._deposit_pending():
                    wait = DEPOSIT_AFTER_S  # messages too fresh to deposit yet
                await self._send_receipts()
            except DatabaseError as exc:
                log.error("mailbox: cannot use the database: %s", exc)
                wait = 5.0

    def _connected_friends(self) -> list[str]:
        return sorted(p for p in self.net.connected_peers() if self.roster.is_friend(p))

    def _holders_for(self, recipient: str) -> list[str]:
        now = time.monotonic()
        return [
            h
            for h in self._connected_friends()
            if h != recipient and self._refused.get((h, recipient), 0.0) <= now
        ]

    async def _candidates(self, recipient: str) -> list[str]:
        """Who to hand what waits for ``recipient`` to: connected friends that have not
        refused to hold for it lately, else the DHT nodes nearest its ID."""
        friends = self._holders_for(recipient)
        if friends or self.closest is None:
            return friends
        now = time.monotonic()
        cached = self._dht_holders.get(recipient)
        if cached is None or cached[0] <= now:
            found = await self.closest(recipient, HOLDERS)
            self._dht_holders[recipient] = (now + (DHT_HOLDERS_TTL_S if found else 30.0), found)
            cached = self._dht_holders[recipient]
        return [h for h in cached[1] if self._refused.get((h, recipient), 0.0) <= now]

    async def _deposit_pending(self) -> bool:
        """Hand what waits for offline friends to connected ones; True if some messages were
        too fresh to hand over yet."""
        fresh_left = False
        sizes = await self.chat_store.outbox_sizes()
        for peer in sorted(sizes):
            if self.net.is_connected(peer) or not self.roster.is_friend(peer):
                continue
            if not await self.sealing.has_session(peer):
                log.debug("no end-to-end session with %s yet: its messages wait", short(peer))
                continue
            holders = await self._candidates(peer)
            if not holders:
                continue
            last_seq, done = 0, 0
            while done < MAX_PER_PASS:
                batch = await self.chat_store.outbox(peer, last_seq, PASS_BATCH)
                if not batch:
                    break
                last_seq, done = batch[-1].seq, done + len(batch)
                due = [m for m in batch if now_ms() - m.stored_at >= DEPOSIT_AFTER_S * 1000]
                fresh_left = fresh_left or len(due) < len(batch)
                if due:
                    await self._deposit_messages(peer, due, holders)
        return fresh_left

    async def _deposit_messages(
        self, peer: str, records: Sequence[MessageRecord], holders: Sequence[str]
    ) -> None:
        held = await self.store.holders_of(peer, [m.msg_id for m in records])
        need = [m for m in records if len(held[m.msg_id]) < HOLDERS]
        if not need:
            return
        try:
            sealed = await self.sealing.seal(peer, need)
        except SealFailed as exc:
            log.info("cannot seal messages for %s to hold: %s", short(peer), exc)
            return
        keys = self.sealing.hello_keys
        for holder in holders:
            todo = [
                (m, HeldMessage(f.msg_id, f.seq, f.sent_at_ms, f.kind, f.body, keys))
                for m, f in zip(need, sealed, strict=True)
                if holder not in held[m.msg_id] and len(held[m.msg_id]) < HOLDERS
            ]
            if not todo:
                continue
            envelopes = await trio.to_thread.run_sync(self._seal_all, peer, [c for _, c in todo])
            stored = await self._deposit_at(holder, peer, envelopes)
            taken = [
                (m, envelope)
                for (m, _), envelope in zip(todo, envelopes, strict=True)
                if envelope.envelope_id in stored
            ]
            counts = await self.store.record_deposits(
                peer, holder, [(m.msg_id, e.envelope_id) for m, e in taken], now_ms()
            )
            for m, _ in taken:
                held[m.msg_id].add(holder)
                self.counts["deposited"] += 1
                shown = {**message_json(m), "holders": counts[m.msg_id]}
                self.events.publish("message.stored", message=shown)
            if len(stored) < len(envelopes):
                break  # refused (or failed): the next holder, at the next pass

    def _seal_all(self, to: str, contents: Sequence[HeldMessage | HeldReceipt]) -> list[Envelope]:
        expires = int(time.time()) + ENVELOPE_TTL_S
        return [seal_envelope(self.net.identity, to, c, expires) for c in contents]

    async def _deposit_at(
        self, holder: str, recipient: str, envelopes: Sequence[Envelope]
    ) -> set[bytes]:
        """Deposit ``envelopes`` at ``holder``; returns the IDs it stored. A refusal makes us
        leave that holder alone for the recipient a while."""
        stored: set[bytes] = set()
        stream: INetStream | None = None
        try:
            stream = await self.net.open_stream(holder, MAILBOX_PROTOCOL)
            decoder = MailboxDecoder()
            for start in range(0, len(envelopes), 16):
                chunk = envelopes[start : start + 16]
                await stream.write(
                    b"".join(frames.encode(frames.Deposit(e.encode())) for e in chunk)
                )
                wanted = len(chunk)
                # (used up before the loop moves on)
                answers = await _read_until(stream, decoder, lambda got: len(got) >= wanted)  # noqa: B023
                for answer in answers:
                    if isinstance(answer, frames.Stored):
                        stored.add(answer.envelope_id)
                    elif isinstance(answer, wire.Refused):
                        self.counts["refused"] += 1
                        self._refused[(holder, recipient)] = time.monotonic() + REFUSED_BACKOFF_S
                        log.info(
                            "%s will not hold for %s (%s): %s",
                            short(holder),
                            short(recipient),
                            answer.code,
                            answer.reason,
                        )
                        return stored
                    else:
                        raise wire.FrameError(f"unexpected {type(answer).__name__} from a holder")
            await stream.close()
        except wire.FrameError as exc:
            log.warning("depositing at %s: %s", short(holder), exc)
        except Exception as exc:
            log_stream_failure(exc, "depositing at %s failed", holder)
        finally:
            if stream is not None:
                await reset(stream)
        return stored

    async def _send_receipts(self) -> None:
        owed = await self.store.receipts_owed(limit=8192)
        for peer, ids in owed.items():
            if self.net.is_connected(peer):
                # Connected, it resends what it has pending and our direct ack says it.
                await self.store.receipts_sent(peer, ids)
                continue
            holders = (await self._candidates(peer))[:HOLDERS]
            if not holders:
                continue
            contents = [HeldReceipt(tuple(ids[i : i + 512])) for i in range(0, len(ids), 512)]
            delivered = False
            # The same envelopes at each holder: a receipt that arrives twice changes nothing.
            envelopes = await trio.to_thread.run_sync(self._seal_all, peer, contents)
            for holder in holders:
                stored = await self._deposit_at(holder, peer, envelopes)
                delivered = delivered or len(stored) == len(envelopes)
            if delivered:
                await self.store.receipts_sent(peer, ids)

    async def _dht_fetch_loop(self) -> None:
        """Ask the DHT nodes nearest our ID for what they hold for us: soon after start
        (once the DHT has peers), then every ``DHT_FETCH_INTERVAL_S``."""
        while True:
            wait = DHT_FETCH_INTERVAL_S
            if self.closest is not None:
                nearest = await self.closest(self.net.identity.peer_id, DHT_FETCH_FROM)
                for holder in nearest:
                    if not self.roster.is_friend(holder):  # friends are fetched from anyway
                        try:
                            await self._fetch(holder)
                        except DatabaseError as exc:
                            log.error("mailbox: cannot use the database: %s", exc)
                if not nearest:
                    wait = 2.0  # the DHT is not up yet (a lookup itself waits for peers)
            else:
                wait = 1.0
            await trio.sleep(wait)

    async def _fetch(self, holder: str) -> None:
        """Take what ``holder`` holds for us."""
        stream: INetStream | None = None
        try:
            stream = await self.net.open_stream(holder, MAILBOX_PROTOCOL)
            decoder = MailboxDecoder()
            for _ in range(64):
                await stream.write(frames.encode(frames.Fetch()))
                got = await _read_until(
                    stream, decoder, lambda got: any(isinstance(f, frames.End) for f in got)
                )
                end = got[-1]
                held = [f.envelope for f in got[:-1] if isinstance(f, frames.Held)]
                if not isinstance(end, frames.End) or len(held) < len(got) - 1:
                    raise wire.FrameError("the holder answered a fetch with other frames")
                if len(held) > frames.MAX_TAKEN_IDS:
                    raise wire.FrameError("the holder handed over more than it may at once")
                if not held:
                    break
                taken = await self._receive(holder, held)
                if taken:
                    await stream.write(frames.encode(frames.Taken(tuple(taken))))
                    answers = await _read_until(stream, decoder, bool)
                    if len(answers) != 1 or not isinstance(answers[0], frames.Deleted):
                        raise wire.FrameError("the holder did not answer what we took")
                if not end.more or len(taken) < len(held):
                    break
            await stream.close()
        except wire.FrameError as exc:
            log.warning("fetching from %s: %s", short(holder), exc)
        except Exception as exc:
            log_stream_failure(exc, "fetching from %s failed", holder)
        finally:
            if stream is not None:
                await reset(stream)

    async def _receive(self, holder: str, held: Sequence[bytes]) -> list[bytes]:
        """Open and store what a holder handed over; returns the envelope IDs it may delete
        (stored, or never going to be: altered, or not from a friend). What the database
        could not take is kept by the holder for the next fetch."""
        opened, altered = await trio.to_thread.run_sync(self._open_all, holder, held)
        self.counts["altered"] += altered
        taken: list[bytes] = []
        messages: dict[str, list[tuple[bytes, HeldMessage]]] = {}
        for envelope_id, item in opened:
            if item is None:
                taken.append(envelope_id)
            elif not self.roster.is_friend(item.sender):
                log.info(
                    "dropped an envelope held by %s: its sender is not a friend", short(holder)
                )
                taken.append(envelope_id)
            elif isinstance(item.content, HeldMessage):
                messages.setdefault(item.sender, []).append((envelope_id, item.content))
            else:
                try:
                    await self._receipt(holder, item.sender, item.content)
                except DatabaseError as exc:
                    log.error("cannot store what %s held for us: %s", short(holder), exc)
                    continue
                taken.append(envelope_id)
        for sender, items in messages.items():
            try:
                taken += await self._store_held(holder, sender, items)
            except DatabaseError as exc:
                log.error("cannot store what %s held for us: %s", short(holder), exc)
        return taken

    async def _receipt(self, holder: str, sender: str, receipt: HeldReceipt) -> None:
        changed = await self.chat_store.mark_delivered(sender, receipt.msg_ids, now_ms())
        for record in changed:
            self.events.publish("message.delivered", message=message_json(record))
        if changed:
            log.info(
                "%d messages to %s reported delivered via %s",
                len(changed),
                short(sender),
                short(holder),
            )

    async def _store_held(
        self, holder: str, sender: str, items: list[tuple[bytes, HeldMessage]]
    ) -> list[bytes]:
        """Store one sender's held messages in one transaction with its Olm state; if one
        does not open, each alone (the others still go in). Returns the envelope IDs dealt
        with."""
        if len(items) > 1:
            try:
                await self._store_messages(holder, sender, [m for _, m in items])
                return [envelope_id for envelope_id, _ in items]
            except SealFailed:
                pass  # nothing was stored: find the one that does not open
        taken: list[bytes] = []
        for envelope_id, message in items:
            try:
                await self._store_messages(holder, sender, [message])
            except SealFailed as exc:
                # Its sender still has it pending and delivers it directly when it can.
                log.warning(
                    "a message from %s held by %s did not open: %s",
                    short(sender),
                    short(holder),
                    exc,
                )
                self.counts["unopened"] += 1
            taken.append(envelope_id)
        return taken

    async def _store_messages(
        self, holder: str, sender: str, messages: Sequence[HeldMessage]
    ) -> None:
        keys = self.sealing.check_hello_keys(sender, messages[0].keys)  # SealFailed if bad
        if any(m.keys != messages[0].keys for m in messages[1:]):
            raise SealFailed("held messages from one sender carry different keys")
        incoming = [
            IncomingMessage(m.msg_id, m.seq, m.sent_at_ms, "", sealed=(m.kind, m.body))
            for m in messages
        ]

        await self.chat.messages.note_keys(sender, keys.identity_key)
        opener = self.sealing.opener(sender, keys.identity_key)
        announce = self.chat.messages.announcer(sender)
        stored = await self.roster.unread.add_incoming(sender, incoming, now_ms(), announce, opener)
        if stored:
            self.counts["fetched"] += len(stored)
            log.info(
                "received %d messages from %s held by %s", len(stored), short(sender), short(holder)
            )
        await self.store.owe_receipts(sender, [m.msg_id for m in messages])
        self._wake.set()  # the courier sends the receipt

    def _open_all(
        self, holder: str, held: Sequence[bytes]
    ) -> tuple[list[tuple[bytes, Opened | None]], int]:
        """(In a worker thread.) Each envelope's ID and what it opened to (None: altered),
        and how many were altered or broken; a broken one has no ID we can trust, so it is
        left out (the holder drops it at expiry)."""
        me = self.net.identity
        key = box_key(me)
        results: list[tuple[bytes, Opened | None]] = []
        altered = 0
        for raw in held:
            try:
                envelope = parse_envelope(raw, 0)
            except EnvelopeError as exc:
                log.warning("%s handed over a broken envelope: %s", short(holder), exc)
                altered += 1
                continue
            try:
                results.append((envelope.envelope_id, open_envelope(me, envelope, key)))
            except EnvelopeError as exc:
                log.warning(
                    "an envelope held by %s was altered or forged and is dropped: %s",
                    short(holder),
                    exc,
                )
                altered += 1
                results.append((envelope.envelope_id, None))
        return results, altered


async def _read_until(
    stream: INetStream,
    decoder: MailboxDecoder,
    done: Callable[[list[frames.MailboxFrame]], bool],
) -> list[frames.MailboxFrame]:
    """The frames a peer answers with, read until ``done`` says they are all there (within
    ``ANSWER_TIMEOUT_S``); :class:`~p2pchat.wire.FrameError` if it ends the stream first."""
    got: list[frames.MailboxFrame] = []
    with trio.fail_after(ANSWER_TIMEOUT_S):
        while not done(got):
            data = await read_some(stream)
            if not data:
                raise wire.FrameError("the peer closed the stream before it answered")
            got.extend(decoder.feed(data))
    return got
