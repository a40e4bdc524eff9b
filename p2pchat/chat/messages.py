"""The message protocol ``/p2pchat/msg/1.0.0``: a long-lived stream from sender to receiver
carrying chat messages; the receiver answers with acks, each sent only after the messages it
names are committed to disk (PROTOCOL.md §5). Friends only.

The sending side is driven by the friend's link (:mod:`.links`): while connected it drains
the outbox (the pending outgoing messages, in sequence order) through :meth:`Messages.drain`.
An :class:`Outbox` hands freshly committed messages to that loop so a live stream need not
query the database for each one. Received messages are counted unread until the user reads
the conversation (:mod:`.unread`, :meth:`Messages.mark_read`).
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final

import trio
from libp2p.abc import INetStream

from p2pchat import wire
from p2pchat.api import ApiError
from p2pchat.chat.friends import check_text, storage_error
from p2pchat.chat.quotas import FriendQuotas
from p2pchat.chat.roster import Roster
from p2pchat.chat.sealing import SealFailed, Sealing
from p2pchat.chat.store import IncomingMessage, MessageRecord, Opener
from p2pchat.clock import now_ms
from p2pchat.identity import short
from p2pchat.net.host import Network
from p2pchat.net.link import Wakeup
from p2pchat.net.streams import log_stream_failure, read_some, refuse, reset
from p2pchat.storage.database import DatabaseError

log = logging.getLogger(__name__)

SEND_WINDOW: Final = 512
"""Messages in flight (sent, not yet acked) per friend."""
OUTBOX_BATCH: Final = 128
KEYS_TIMEOUT: Final = 10.0
"""Seconds a sender waits for the receiver's keys before it gives up this round."""


def message_json(m: MessageRecord) -> dict[str, Any]:
    return {
        "id": m.msg_id.hex(),
        "row": m.row,
        "peer_id": m.peer_id,
        "direction": "out" if m.outgoing else "in",
        "seq": m.seq,
        "text": m.text,
        "state": m.state.value,
        "sent_at": m.sent_at,
        "stored_at": m.stored_at,
        "delivered_at": m.delivered_at,
        "holders": m.holders,
    }


class Outbox:
    """One friend's sending side in memory: a wake-up for the drain loop, and the messages
    committed since the outbox was last read from disk. Only a hint: the database stays the
    truth, and whenever the hint cannot tell what comes next, the database is read."""

    def __init__(self) -> None:
        self.work = Wakeup()  # new outbox messages, acks
        self._fresh: deque[MessageRecord] = deque()
        self._fresh_dropped = False

    def queue(self, record: MessageRecord) -> None:
        """A message was just committed to the outbox: hand it over and wake up."""
        self._fresh.append(record)
        if len(self._fresh) > 4 * SEND_WINDOW:
            # Nobody is draining: drop the hints; the database has them all.
            self._fresh.clear()
            self._fresh_dropped = True
        self.work.set()

    def take_fresh(self, last_seq: int, limit: int) -> list[MessageRecord] | None:
        """The next messages after ``last_seq`` from the hand-over queue, or None if it cannot
        tell (a gap: then read the database)."""
        if self._fresh_dropped:
            self._fresh_dropped = False
            return None
        fresh = self._fresh
        while fresh and fresh[0].seq <= last_seq:
            fresh.popleft()
        if not fresh:
            return []
        if fresh[0].seq != last_seq + 1:
            return None
        batch: list[MessageRecord] = []
        while fresh and len(batch) < limit and fresh[0].seq == last_seq + 1 + len(batch):
            batch.append(fresh.popleft())
        return batch


class Messages:
    """Sending and receiving 1:1 messages."""

    def __init__(
        self,
        *,
        network: Network,
        roster: Roster,
        my_addrs: Callable[[], tuple[str, ...]],
        quotas: FriendQuotas | None = None,
        sealing: Sealing | None = None,
    ) -> None:
        self.net = network
        self.sealing = sealing
        """Olm sessions: with it, msg/2.0.0 (sealed) is proposed first and served."""
        self.roster = roster
        self.store = roster.store
        self.events = roster.events
        self._my_addrs = my_addrs
        self.quotas = quotas or FriendQuotas(time.monotonic)
        self.refused_by: dict[str, wire.Refused] = {}
        self._inbound: dict[str, int] = {}
        """Message streams each friend has open to us now."""
        """Friends whose daemon refused our messages since their last ack (for ``status``:
        the messages stay pending and are resent after a backoff)."""
        self.on_queued: Callable[[MessageRecord], None] = lambda record: None
        """Called with each newly committed outgoing message (the links hand it over)."""

    async def send(self, friend: str, text: str, msg_id: bytes | None = None) -> MessageRecord:
        """Queue ``text`` for ``friend``. A client-chosen ``msg_id`` makes the call safe to
        retry: the same ID is stored (and delivered) once."""
        contact = self.roster.resolve_friend(friend, "messages can only go to accepted friends")
        if not text:
            raise ApiError("invalid_params", "the message is empty")
        check_text(text, wire.MAX_TEXT_BYTES, "message", multiline=True)
        try:
            record, created = await self.store.add_outgoing(
                contact.peer_id, msg_id or os.urandom(wire.MSG_ID_BYTES), text, now_ms()
            )
        except ValueError as exc:
            raise ApiError("invalid_params", str(exc)) from None
        except DatabaseError as exc:
            raise storage_error(exc) from None
        if created:
            self.on_queued(record)
        return record

    async def mark_read(self, friend: str) -> dict[str, Any]:
        """The user read the conversation with ``friend`` (any contact: a blocked one's
        old messages can be read too): its read mark moves to the newest message, so its
        unread count is 0. Publishes ``contact.updated``; returns that Contact JSON."""
        contact = self.roster.resolve(friend)
        peer = contact.peer_id
        try:
            await self.roster.unread.mark_read(peer)
            outbox = await self.store.outbox_size(peer)
        except DatabaseError as exc:
            raise storage_error(exc) from None
        shown = self.roster.contact_json(self.roster.get(peer) or contact, outbox)
        self.events.publish("contact.updated", contact=shown)
        return shown

    # --- receiver side -----------------------------------------------------------------------

    async def serve(self, stream: INetStream, peer: str) -> None:
        if not self.roster.is_friend(peer):
            log.info("refused a message stream from %s: not a friend", short(peer))
            await refuse(stream, wire.REFUSED_NOT_FRIEND, "you are not a friend of this peer")
            return
        too_many = self.quotas.admit_stream(peer, self._inbound.get(peer, 0))
        if too_many is not None:
            log.info("refused a message stream from %s: %s", short(peer), too_many.reason)
            await refuse(stream, too_many.code, too_many.reason)
            return
        self._inbound[peer] = self._inbound.get(peer, 0) + 1
        try:
            await self._serve(stream, peer)
        finally:
            self._inbound[peer] -= 1
            if not self._inbound[peer]:
                del self._inbound[peer]

    async def _serve(self, stream: INetStream, peer: str) -> None:
        decoder = wire.FrameDecoder()
        sealing = (
            self.sealing
            if self.sealing is not None and stream.get_protocol() == wire.MSG2_PROTOCOL
            else None
        )
        opener: Opener | None = None
        try:
            while True:
                data = await read_some(stream)
                if not data:
                    break
                frames = decoder.feed(data)
                batch: list[IncomingMessage] = []
                for frame in frames:
                    if isinstance(frame, wire.ChatMessage):
                        if sealing is not None:
                            raise wire.FrameError("a plain message on msg/2.0.0")
                        batch.append(
                            IncomingMessage(frame.msg_id, frame.seq, frame.sent_at_ms, frame.text)
                        )
                    elif isinstance(frame, wire.SealedMessage):
                        if sealing is None:
                            raise wire.FrameError("a sealed message on msg/1.0.0")
                        if opener is None:
                            raise wire.FrameError("a sealed message before the hello")
                        batch.append(
                            IncomingMessage(
                                frame.msg_id,
                                frame.seq,
                                frame.sent_at_ms,
                                "",
                                sealed=(frame.kind, frame.body),
                            )
                        )
                    elif isinstance(frame, wire.Hello):
                        hello_refused = self.quotas.admit_hello(peer)
                        if hello_refused is not None:
                            log.info(
                                "refused a hello from %s: %s", short(peer), hello_refused.reason
                            )
                            await refuse(stream, hello_refused.code, hello_refused.reason)
                            return
                        if frame.addrs:  # announced: only what the address policy admits
                            admitted = self.net.admit(peer, frame.addrs)
                            await self.roster.learn_addrs(peer, tuple(admitted))
                        if sealing is not None:
                            try:
                                keys = sealing.check_hello_keys(peer, frame.keys)
                            except SealFailed as exc:
                                raise wire.FrameError(str(exc)) from None
                            await self.note_keys(peer, keys.identity_key)
                            opener = sealing.opener(peer, keys.identity_key)
                            if frame.want_key:
                                bundle = await sealing.fresh_bundle()
                                await stream.write(wire.encode(wire.Keys(bundle)))
                    else:
                        raise wire.FrameError(f"unexpected {type(frame).__name__} on msg stream")
                if batch:
                    if not self.roster.is_friend(peer):
                        log.info("closing message stream from %s: no longer a friend", short(peer))
                        await refuse(stream, wire.REFUSED_NOT_FRIEND, "not a friend")
                        return
                    refused = await self._admit_store_and_ack(stream, peer, batch, opener)
                    if refused is not None:
                        await refuse(stream, refused.code, refused.reason)
                        return
            await stream.close()
        except wire.FrameError as exc:
            log.warning("closing message stream from %s: %s", short(peer), exc)
            await refuse(stream, wire.REFUSED_BAD_FRAME, str(exc))
        except SealFailed as exc:
            # Neither stored nor acked: the sender starts a new session and seals again.
            log.warning("a sealed message from %s did not open: %s", short(peer), exc)
            await refuse(stream, wire.REFUSED_UNDECRYPTABLE, str(exc)[: wire.MAX_REASON_BYTES])
        except DatabaseError as exc:
            # Not acked, so the sender keeps the messages and retries later.
            log.error("could not store messages from %s (not acked): %s", short(peer), exc)
            await reset(stream)
        except Exception as exc:
            log_stream_failure(exc, "message stream from %s ended", peer)
            await reset(stream)

    async def _admit_store_and_ack(
        self,
        stream: INetStream,
        peer: str,
        batch: list[IncomingMessage],
        opener: Opener | None = None,
    ) -> wire.Refused | None:
        """Store and ack ``batch`` as the friend's quotas allow: over the rate, paced (this
        stream is read no further until the rest fits); over the unread cap, the refusal for
        the rest, which is neither stored nor acked (the sender resends it later)."""
        retry = False
        while batch:
            admission = self.quotas.admit_messages(
                peer, len(batch), self.roster.unread.count(peer), retry=retry
            )
            if admission.taken:
                await self._store_and_ack(stream, peer, batch[: admission.taken], opener)
                batch = batch[admission.taken :]
            if admission.refused is not None:
                log.info(
                    "refused %d messages from %s: %s",
                    len(batch),
                    short(peer),
                    admission.refused.reason,
                )
                return admission.refused
            if batch:
                if not retry:
                    log.debug("pacing %s: over its message rate", short(peer))
                retry = True
                await trio.sleep(admission.wait_s)
        return None

    async def _store_and_ack(
        self,
        stream: INetStream,
        peer: str,
        batch: list[IncomingMessage],
        opener: Opener | None = None,
    ) -> None:
        # Announce before acking: if the ack is lost, the resend is a no-op insert and would
        # never produce the event.
        await self.roster.unread.add_incoming(peer, batch, now_ms(), self.announcer(peer), opener)
        ids = [m.msg_id for m in batch]
        for start in range(0, len(ids), wire.MAX_ACK_IDS):
            await stream.write(wire.encode(wire.Ack(tuple(ids[start : start + wire.MAX_ACK_IDS]))))

    def announcer(self, peer: str) -> Callable[[MessageRecord], None]:
        """What publishes ``message.received`` for each new message from ``peer`` as it is
        counted (so the event's contact carries the unread count with it counted)."""

        def announce(record: MessageRecord) -> None:
            contact = self.roster.get(peer)
            self.events.publish(
                "message.received",
                message=message_json(record),
                contact=self.roster.contact_json(contact) if contact else None,
            )

        return announce

    # --- sender side (the friend's link calls this) -----------------------------------------

    async def drain(self, peer: str, outbox: Outbox) -> None:
        """Run one message stream to ``peer`` until the connection or stream fails.

        Sends every pending message in sequence order with up to ``SEND_WINDOW`` unacked,
        then waits for more. After any failure, the next stream resends everything still
        pending from the start; the receiver's idempotent store drops the duplicates.
        """
        protocols = [wire.MSG2_PROTOCOL, wire.MSG_PROTOCOL] if self.sealing else [wire.MSG_PROTOCOL]
        stream = await self.net.open_stream(peer, *protocols)
        sealing = self.sealing if stream.get_protocol() == wire.MSG2_PROTOCOL else None
        in_flight: set[bytes] = set()  # sent, not yet acked
        try:
            if sealing is not None:
                want_key = not await sealing.has_session(peer)
                hello = wire.Hello(self._my_addrs(), keys=sealing.hello_keys, want_key=want_key)
                await stream.write(wire.encode(hello))
                if want_key:
                    bundle = await self._read_keys(peer, stream)
                    if bundle is None:
                        return
                    started = await sealing.start(peer, bundle)
                    await self.note_keys(peer, started.identity_key)
            else:
                await stream.write(wire.encode(wire.Hello(self._my_addrs())))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    self._read_acks, peer, stream, outbox, in_flight, nursery.cancel_scope
                )
                last_seq = 0
                caught_up = False  # read the database until it has nothing newer
                while self.roster.is_friend(peer) and self.net.is_connected(peer):
                    room = min(SEND_WINDOW - len(in_flight), OUTBOX_BATCH)
                    if room <= 0:
                        await outbox.work.wait(30.0)
                        continue
                    batch = outbox.take_fresh(last_seq, room) if caught_up else None
                    if batch is None:
                        batch = await self.store.outbox(peer, last_seq, room)
                        caught_up = len(batch) < room
                    if not batch:
                        await outbox.work.wait(30.0)
                        continue
                    if sealing is not None:
                        sealed = await sealing.seal(peer, batch)
                        payload = b"".join(wire.encode(f) for f in sealed)
                    else:
                        payload = b"".join(
                            wire.encode(wire.ChatMessage(m.msg_id, m.seq, m.sent_at, m.text))
                            for m in batch
                        )
                    in_flight.update(m.msg_id for m in batch)
                    await stream.write(payload)
                    last_seq = batch[-1].seq
                nursery.cancel_scope.cancel()
        except SealFailed as exc:
            log.warning("cannot seal messages for %s: %s", short(peer), exc)
        finally:
            await reset(stream)

    async def note_keys(self, peer: str, olm_key: bytes) -> None:
        """Note the end-to-end identity key ``peer`` presents (in a hello, a bundle, or held
        messages): a change is logged, and a verified friend shows as no longer verified
        until the user compares again."""
        verified = self.roster.verified
        was_verified = verified.is_verified(peer)
        if not await verified.saw_keys(peer, olm_key, now_ms()):
            return
        log.warning(
            "the end-to-end keys of %s changed%s",
            short(peer),
            ": it was verified, compare safety numbers again" if was_verified else "",
        )
        contact = self.roster.get(peer)
        if contact is not None:
            self.events.publish("contact.updated", contact=self.roster.contact_json(contact))

    async def _read_keys(self, peer: str, stream: INetStream) -> bytes | None:
        """The receiver's answer to a hello that wants a key: its bundle, or None if it
        refused us (recorded like any refusal)."""
        decoder = wire.FrameDecoder()
        with trio.fail_after(KEYS_TIMEOUT):
            while True:
                data = await read_some(stream)
                if not data:
                    raise SealFailed("the stream ended before the friend sent its keys")
                frames = decoder.feed(data)
                if not frames:
                    continue
                first = frames[0]
                if len(frames) > 1:
                    raise SealFailed("unexpected frames after the friend's keys")
                if isinstance(first, wire.Keys):
                    return first.bundle
                if isinstance(first, wire.Refused):
                    log.warning(
                        "%s refused our messages (%s): %s", short(peer), first.code, first.reason
                    )
                    self.refused_by[peer] = first
                    return None
                raise SealFailed(f"expected the friend's keys, got {type(first).__name__}")

    async def _read_acks(
        self,
        peer: str,
        stream: INetStream,
        outbox: Outbox,
        in_flight: set[bytes],
        scope: trio.CancelScope,
    ) -> None:
        decoder = wire.FrameDecoder()
        try:
            while True:
                data = await read_some(stream)
                if not data:
                    return
                for frame in decoder.feed(data):
                    if isinstance(frame, wire.Ack):
                        self.refused_by.pop(peer, None)
                        changed = await self.store.mark_delivered(peer, frame.msg_ids, now_ms())
                        in_flight.difference_update(frame.msg_ids)
                        for record in changed:
                            self.events.publish("message.delivered", message=message_json(record))
                        outbox.work.set()
                    elif isinstance(frame, wire.Refused):
                        log.warning(
                            "%s refused our messages (%s): %s",
                            short(peer),
                            frame.code,
                            frame.reason,
                        )
                        self.refused_by[peer] = frame
                        if frame.code == wire.REFUSED_UNDECRYPTABLE and self.sealing:
                            await self.sealing.forget(peer)
                        return
                    else:
                        raise wire.FrameError(f"unexpected {type(frame).__name__} on msg stream")
        except wire.FrameError as exc:
            log.warning("closing message stream to %s: %s", short(peer), exc)
        except Exception as exc:
            log_stream_failure(exc, "message stream to %s ended", peer)
        finally:
            scope.cancel()
