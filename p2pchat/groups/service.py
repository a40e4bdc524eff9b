"""Groups for one identity: their membership, messages and sender keys, kept in step with
the other members over ``/p2pchat/group/1.0.0`` (PROTOCOL.md §15).

Every member keeps a stream (:class:`~p2pchat.groups.channel.Channel`) with every other
member it can reach, one per group, whether or not they are friends: the membership log says
who they are, so a member who is not a friend is let in for that group's protocol only (1:1
protocols still refuse it). On a new stream each side says what it holds (``sync``) and sends
what the other lacks: membership entries, the sender keys it owes (sealed with Olm), and
messages by the vectors of §15.3, its own or anyone's. Afterwards a member sends its own new
messages at once to every member it has a stream with, and after taking messages tells its
members its new vector (``have``): that is the group's receipt, and whoever sees that a member
lacks something it holds sends it, so a member that was offline catches up from whoever it
meets first, and one that a sender cannot reach gets it through the others.

The sans-IO pieces decide everything: :mod:`.membership` (who may change what),
:mod:`.timeline` (order, what is missing), :mod:`.keys` (when to replace our key) and
:mod:`.content` (what is sealed inside). This module is the glue and the I/O.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

import trio
from libp2p.abc import INetStream

from p2pchat.api import ApiError
from p2pchat.chat.ratelimit import TokenBucket
from p2pchat.chat.sealing import SealFailed
from p2pchat.chat.service import Chat
from p2pchat.events import EventBus
from p2pchat.groups import frames
from p2pchat.groups.channel import Channel
from p2pchat.groups.content import (
    ContentError,
    key_plaintext,
    message_plaintext,
    open_content,
    open_key,
)
from p2pchat.groups.frames import (
    GROUP_PROTOCOL,
    MAX_ENTRIES_PER_FRAME,
    MAX_VECTOR_SENDERS,
    GroupFrame,
)
from p2pchat.groups.keys import plan_keys
from p2pchat.groups.membership import (
    MAX_ENTRIES,
    Entry,
    Gap,
    GroupState,
    MembershipError,
    MembershipLog,
    Op,
    Replaced,
)
from p2pchat.groups.membership import Refused as LogRefused
from p2pchat.groups.store import GroupMessage, GroupStatus, GroupStore
from p2pchat.groups.timeline import Duplicate, MessageRef, Refused, Timeline
from p2pchat.identity import (
    IdentityError,
    peer_id_from_public_key,
    public_key_from_peer_id,
    short,
)
from p2pchat.net.link import Link, Links, Wakeup
from p2pchat.net.streams import end_failed_stream, read_some, refuse, remote_peer, reset
from p2pchat.ratchet.megolm import GroupSealError, ReceivedKey
from p2pchat.ratchet.pair import Sealed
from p2pchat.wire import MAX_TEXT_BYTES, FrameError, text_problem

log = logging.getLogger(__name__)

MAX_GROUPS: Final = 256
MAX_SYNC_MESSAGES: Final = 2000
"""Messages sent in answer to one vector; the rest follow the member's next ``have``."""
HAVE_DELAY_S: Final = 0.2
"""Vectors are sent at most this often per group (receipts batch up in a burst)."""
INVITE_TIMEOUT_S: Final = 30.0
FAREWELL_TIMEOUT_S: Final = 10.0
MAX_MESSAGES_PER_S: Final = 200.0
"""Per member and group, a sustained rate; a member over it is read no further until its
messages fit (Yamux holds the rest at the sender), as for 1:1 messages."""
BURST_MESSAGES: Final = 2000.0
SYNC_QUEUE_BYTES: Final = 4 * 1024 * 1024
RESYNC_S: Final = 15.0
"""While a group lacks something, our vector goes out this often (members send it again)."""
MAX_MESSAGES_PER_MEMBER: Final = 100_000
MAX_MESSAGES_PER_GROUP: Final = 1_000_000
"""What one group may store: per member, and in all (then each member its share)."""
YOUNG_STREAM_S: Final = 10.0
"""Two streams with one member this close together are a race (the lower ID's stays); an
older one is stale (the member restarted) and gives way."""
REDIAL_RESET_S: Final = 30.0
REDIAL_MAX_S: Final = 60.0


@dataclass(frozen=True)
class _Intake:
    """What feeding entries to a log did."""

    first: int | None
    """The first version that changed (None: nothing did)."""
    need: int | None
    """Ask for the entries from this version on (some follow ones we lack)."""
    refusal: str | None


@dataclass
class Group:
    """One group as this daemon holds it."""

    group_id: bytes
    status: GroupStatus
    inviter: str
    log: MembershipLog
    timeline: Timeline = field(default_factory=Timeline)
    keys: dict[tuple[str, str], ReceivedKey] = field(default_factory=dict)
    """(sender, session ID) → the key that member gave us."""
    floors: dict[str, tuple[int, int]] = field(default_factory=dict)
    """sender → (the seq up to which its messages are not ours to hold, our join version
    that floor was set for)."""
    needs_sync: bool = False
    """We lack something a member may have (held messages, ones refused for now): our vector
    goes out again periodically, so members send it again."""
    haves: dict[str, dict[str, int]] = field(default_factory=dict)
    """Each member's vector as it last told us (our receipts)."""
    channels: dict[str, set[Channel]] = field(default_factory=dict)
    lock: trio.Lock = field(default_factory=trio.Lock)
    have_dirty: bool = False
    farewell: bool = False
    """We left or declined: our leave entry still has to reach a member."""
    held: Wakeup = field(default_factory=Wakeup)
    """Set when a member's vector grows (someone waits for a receipt)."""

    @property
    def state(self) -> GroupState:
        return self.log.state

    def channel_to(self, peer: str) -> Channel | None:
        live = [c for c in self.channels.get(peer, ()) if not c.closed]
        return live[0] if live else None

    def all_channels(self) -> list[Channel]:
        return [c for cs in self.channels.values() for c in cs if not c.closed]


class GroupLink(Link):
    """Keeps one member reachable while we share a group and have no stream with it."""

    kind = "group-link"
    what = "group link"

    def __init__(self, peer: str, groups: Groups) -> None:
        super().__init__(peer)
        self.groups = groups

    def wanted(self) -> bool:
        return bool(self.groups.groups_wanting(self.peer))

    async def step(self) -> bool:
        if not self.groups.may_redial(self.peer):
            return False  # this link's own backoff waits (a connection cuts it short)
        if not self.groups.groups_wanting(self.peer):
            return False
        if not await self.groups.reach(self.peer):
            return False
        opened = False
        for group in self.groups.groups_wanting(self.peer):
            opened = await self.groups.open_channel(group, self.peer) or opened
        return opened


class Groups:
    """Run with ``await groups.load()`` before the host listens, then
    ``nursery.start(groups.run)``."""

    def __init__(self, chat: Chat, store: GroupStore, events: EventBus) -> None:
        self.chat = chat
        self.net = chat.net
        self.store = store
        self.events = events
        self.me = chat.net.identity.peer_id
        self._my_key = chat.net.identity.public_key
        self.groups: dict[bytes, Group] = {}
        self._addrs: dict[str, tuple[str, ...]] = {}
        """Where members who are not friends were last said to be (hints, admitted)."""
        self._links: Links[GroupLink] = Links(lambda peer: GroupLink(peer, self))
        self._nursery: trio.Nursery | None = None
        self._have_wanted = Wakeup()
        self._rates: dict[tuple[bytes, str], TokenBucket] = {}
        self._redial: dict[str, tuple[float, float]] = {}
        """peer → (when a new channel may start, the backoff that led there)."""

    # --- start-up -----------------------------------------------------------------------------

    async def load(self) -> None:
        for stored in await self.store.load_all():
            try:
                # Every signature checked again: off the loop (a log holds up to 10,000).
                group_log = await trio.to_thread.run_sync(MembershipLog.replay, stored.entries)
            except MembershipError as exc:
                log.error("group %s: stored log refused (%s); skipped", stored.group_id.hex(), exc)
                continue
            group = Group(stored.group_id, stored.status, stored.inviter, group_log)
            now = _now_ms()
            for ref in sorted(stored.refs, key=lambda r: (r.clock, r.sender, r.seq)):
                group.timeline.receive(ref, max(now, ref.clock))
            group.keys = await self.store.received_keys(stored.group_id)
            group.floors = await self.store.floors(stored.group_id)
            for sender, (floor, _) in group.floors.items():
                group.timeline.set_floor(sender, floor)
            self.groups[stored.group_id] = group
        self.net.set_handler(GROUP_PROTOCOL, self.chat.inbound.handler("group", self.serve))
        self.chat.roster.add_connection_listener(self._connection_changed)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._send_haves)
            await nursery.start(self._links.run, self._start_links)
            task_status.started()

    def _start_links(self) -> None:
        for group in self.groups.values():
            for peer in group.state.members - {self.me}:
                self._links.ensure(peer)

    def _connection_changed(self, peer: str, up: bool) -> None:
        if not up:
            return
        self._redial.pop(peer, None)  # it is here: no reason to wait
        link = self._links.get(peer)
        if link is not None:
            link.network_changed()
        else:
            self._links.ensure(peer)

    def may_redial(self, peer: str) -> bool:
        """Channels with ``peer`` that end soon after they start (it refuses us, or drops
        us) are retried after a growing backoff, whatever link runs."""
        return trio.current_time() >= self._redial.get(peer, (0.0, 0.0))[0]

    def _channel_ended(self, peer: str, lived: float) -> None:
        if lived >= REDIAL_RESET_S:
            self._redial.pop(peer, None)
        else:
            backoff = min(max(self._redial.get(peer, (0.0, 0.0))[1] * 2, 1.0), REDIAL_MAX_S)
            self._redial[peer] = (trio.current_time() + backoff, backoff)
        link = self._links.ensure(peer)
        if link is not None:
            link.retry_now()

    # --- reaching members ---------------------------------------------------------------------

    def groups_wanting(self, peer: str) -> list[Group]:
        """Groups in which we want a stream with ``peer`` and have none."""
        out = []
        for group in self.groups.values():
            if peer == self.me or group.channel_to(peer) is not None:
                continue
            if (group.status is GroupStatus.JOINED and peer in group.state.members) or (
                group.farewell and peer in group.state.members
            ):
                out.append(group)
        return out

    async def reach(self, peer: str) -> bool:
        if self.net.is_connected(peer):
            return True
        if self.chat.roster.is_friend(peer):
            return await self.chat.reach.reach(peer)
        addrs = self._addrs.get(peer, ())
        if addrs and await self.net.dial(peer, addrs):
            return True
        resolver = self.chat.reach.resolver
        if resolver is None:
            return False
        found = await resolver(peer)
        if found is None:
            return False
        admitted = self.net.admit(peer, found.addrs)
        if admitted and await self.net.dial(peer, admitted):
            self._addrs[peer] = tuple(admitted)
            return True
        return False

    def _known_addrs(self, peer: str) -> tuple[str, ...]:
        contact = self.chat.roster.get(peer)
        if contact is not None and contact.addrs:
            return tuple(contact.addrs)
        return self._addrs.get(peer, ())

    async def open_channel(self, group: Group, peer: str) -> bool:
        try:
            stream = await self.net.open_stream(peer, GROUP_PROTOCOL)
        except Exception as exc:
            log.debug("group stream to %s: %s", short(peer), exc)
            return False
        if group.channel_to(peer) is not None:  # it opened one to us meanwhile
            await reset(stream)
            return True
        self._start_channel(group, Channel(group.group_id, peer, stream, outbound=True), [])
        return True

    def _start_channel(self, group: Group, channel: Channel, first: list[GroupFrame]) -> None:
        assert self._nursery is not None
        group.channels.setdefault(channel.peer, set()).add(channel)
        self._greet(group, channel)
        self._presence_changed(group)
        self._nursery.start_soon(self._run_channel, group, channel, first)

    async def _run_channel(self, group: Group, channel: Channel, first: list[GroupFrame]) -> None:
        started = trio.current_time()
        try:
            await channel.run(self, first)
        except Exception as exc:
            log.info("group stream with %s ended: %s", short(channel.peer), exc)
        finally:
            try:
                group.channels.get(channel.peer, set()).discard(channel)
                if not group.channels.get(channel.peer):
                    group.channels.pop(channel.peer, None)
                    self._presence_changed(group)
                self._channel_ended(channel.peer, trio.current_time() - started)
            except Exception:  # never into the service's nursery
                log.exception("group %s: after a stream ended", _gshort(group))

    def _presence_changed(self, group: Group) -> None:
        """A member's stream opened or the last one closed: its ``online`` changed."""
        self.events.publish("group.updated", group=self.group_json(group))

    def _greet(self, group: Group, channel: Channel) -> None:
        state = group.state
        channel.send(frames.Sync(group.group_id, state.version, state.head, self._vector(group)))
        channel.send(frames.Bundle(group.group_id, self.chat.sealing.hello_keys))
        peers = []
        for member in sorted(state.members - {self.me, channel.peer}):
            addrs = self._known_addrs(member)
            if addrs:
                peers.append((public_key_from_peer_id(member), addrs[:16]))
        if peers:
            channel.send(frames.Addrs(group.group_id, tuple(peers)))

    # --- inbound streams ----------------------------------------------------------------------

    async def serve(self, stream: INetStream, peer: str) -> None:
        """A member (or a friend inviting us) opened a group stream."""
        try:
            await self._serve(stream, peer)
        except Exception as exc:  # a peer's stream never takes the daemon down
            await end_failed_stream(stream, exc, "group", peer)

    async def _serve(self, stream: INetStream, peer: str) -> None:
        decoder = frames.GroupDecoder()
        first: list[GroupFrame] = []
        with trio.move_on_after(INVITE_TIMEOUT_S):
            while not first:
                data = await read_some(stream)
                if not data:
                    return
                try:
                    first = decoder.feed(data)
                except FrameError as exc:
                    await refuse(stream, "malformed", str(exc))
                    return
        if not first or not isinstance(first[0], frames.Sync):
            await refuse(stream, "malformed", "a group stream starts with sync")
            return
        sync = first[0]
        group = self.groups.get(sync.group_id)
        if group is None:
            await self._take_invite(stream, peer, sync, decoder, first[1:])
            return
        if group.status is not GroupStatus.JOINED:
            if (
                group.status is not GroupStatus.INVITED
                and (sync.head, sync.head_hash) != (group.state.version, group.state.head)
                and (self.chat.roster.is_friend(peer) or peer in group.log.ever_members())
            ):
                # A member's log other than ours, for a group we are out of: it may not have
                # our leave yet (we merge and tell it), or a friend may add us again.
                await self._take_invite(stream, peer, sync, decoder, first[1:], again=group)
                return
            if group.status in (GroupStatus.LEFT, GroupStatus.DECLINED):
                await self._send_log_since(stream, group, sync)  # our leave entry
            await refuse(stream, "not_joined", "this member has not joined the group")
            return
        if peer not in group.state.members:
            if peer in group.log.ever_members():
                await self._send_log_since(stream, group, sync)  # the entry that removed it
            log.info("refused a group stream from %s: not a member", short(peer))
            await refuse(stream, "not_member", "you are not a member of this group")
            return
        existing = group.channel_to(peer)
        if existing is not None:
            if existing.outbound and self.me < peer and existing.age < YOUNG_STREAM_S:
                # Both dialed at once: the stream the lower ID opened stays, at both ends.
                await refuse(stream, "duplicate", "a group stream with this member is open")
                return
            existing.abort()  # theirs wins the race, or it opened a new one (it restarted)
        channel = Channel(group.group_id, peer, stream, outbound=False)
        group.channels.setdefault(peer, set()).add(channel)
        self._greet(group, channel)
        self._presence_changed(group)
        started = trio.current_time()
        try:
            await channel.run(self, first, decoder)
        finally:
            group.channels.get(peer, set()).discard(channel)
            if not group.channels.get(peer):
                group.channels.pop(peer, None)
                self._presence_changed(group)
            self._channel_ended(peer, trio.current_time() - started)

    async def _send_log_since(self, stream: INetStream, group: Group, sync: frames.Sync) -> None:
        """A peer whose log is behind ours and who may not take part (it was removed, or we
        left): the entries it lacks, which tell it so."""
        try:
            await _write_entries(stream, group.group_id, group.log.since(sync.head))
        except Exception as exc:
            log.debug("farewell to %s: %s", short(remote_peer(stream)), exc)

    async def _take_invite(
        self,
        stream: INetStream,
        peer: str,
        sync: frames.Sync,
        decoder: frames.GroupDecoder,
        rest: list[GroupFrame],
        again: Group | None = None,
    ) -> None:
        """A group we do not know (or are out of: ``again``): a friend who added us sends its
        log; we keep it as an invitation (we take part in nothing until the user joins)."""
        if again is None and not self.chat.roster.is_friend(peer):
            log.info("refused a group stream from %s: unknown group, not a friend", short(peer))
            await refuse(stream, "not_member", "this peer is not in that group")
            return
        if again is None and len(self.groups) >= MAX_GROUPS:
            await refuse(stream, "full", f"this peer is in {MAX_GROUPS} groups already")
            return
        if sync.head >= MAX_ENTRIES:
            await refuse(stream, "malformed", f"a log has fewer than {MAX_ENTRIES} entries")
            return
        entries: list[bytes] = []
        try:
            await stream.write(frames.encode(frames.WantLog(sync.group_id, 0)))
            pending = list(rest)
            with trio.fail_after(INVITE_TIMEOUT_S):
                while len(entries) <= sync.head:
                    while not pending:
                        data = await read_some(stream)
                        if not data:
                            raise FrameError("the stream ended before the whole log")
                        pending = decoder.feed(data)
                    frame = pending.pop(0)
                    if isinstance(frame, frames.Log) and frame.group_id == sync.group_id:
                        entries.extend(frame.entries)
                    if len(entries) > sync.head + 1:
                        raise FrameError("more entries than the log has")
            group_log = await trio.to_thread.run_sync(MembershipLog.replay, entries)
        except (FrameError, MembershipError, trio.TooSlowError) as exc:
            log.info("an invitation from %s was refused: %s", short(peer), exc)
            await refuse(stream, "refused", f"invitation refused: {exc}")
            return
        except Exception as exc:
            log.info("an invitation from %s failed: %s", short(peer), exc)
            return
        if again is not None:
            await self._invited_again(stream, peer, again, group_log)
            return
        state = group_log.state
        adder = _who_added(group_log, self.me)
        if self.me not in state.members or adder != peer or peer not in state.members:
            await refuse(stream, "refused", "the log does not show that you added this peer")
            return
        if sync.group_id in self.groups:  # two streams at once
            await refuse(stream, "not_joined", "this member has not joined the group")
            return
        group = Group(sync.group_id, GroupStatus.INVITED, peer, group_log)
        await self.store.add_group(group.group_id, group.status, peer, group_log.since(-1))
        self.groups[group.group_id] = group
        log.info("%s invited us to group %r", short(peer), state.name)
        self.events.publish("group.invited", group=self.group_json(group))
        await refuse(stream, "not_joined", "invitation received; not joined yet")

    async def _invited_again(
        self, stream: INetStream, peer: str, group: Group, new_log: MembershipLog
    ) -> None:
        """A group we left (or declined, or were removed from), in a friend's log that adds us
        again after that: an invitation again. What was sent while we were out stays
        unreadable to us (new sender keys were made when we were added)."""
        ours = group.log.entries
        if new_log.entries[0].hash != ours[0].hash:
            await refuse(stream, "refused", "that log is not this group's")
            return
        if group.status is GroupStatus.JOINED or group.status is GroupStatus.INVITED:
            await refuse(stream, "not_joined", "this member has not joined the group")
            return
        departure = _departure(group.log, self.me)
        theirs = {e.hash: e.version for e in new_log.entries}
        if departure is not None and departure.hash not in theirs:
            await self._merge_and_tell(stream, group, new_log)
            return
        gone_at = theirs[departure.hash] if departure is not None else -1
        if (
            not self.chat.roster.is_friend(peer)
            or self.me not in new_log.state.members
            or _who_added(new_log, self.me) != peer
            or _join_version(new_log, self.me) <= gone_at
        ):
            await refuse(stream, "not_joined", "this member is not in the group")
            return
        group.log = new_log
        group.status = GroupStatus.INVITED
        group.inviter = peer
        group.farewell = False
        await self.store.save_log(group.group_id, 0, new_log.since(-1))
        await self.store.set_status(group.group_id, GroupStatus.INVITED, inviter=peer)
        log.info("%s invited us to group %r again", short(peer), new_log.state.name)
        self.events.publish("group.invited", group=self.group_json(group))
        await refuse(stream, "not_joined", "invitation received; not joined yet")

    async def _merge_and_tell(
        self, stream: INetStream, group: Group, their_log: MembershipLog
    ) -> None:
        """A member whose log lacks our leave (or our removal): take its entries (our leave,
        if it lost a fork to them, is made again on top), and send it what it lacks."""
        async with group.lock:
            await self._take_entries(group, their_log.since(-1), None)
        theirs = [e.hash for e in their_log.entries]
        start = _first_difference(theirs, [e.hash for e in group.log.entries])
        if start is not None:
            await _write_entries(stream, group.group_id, group.log.since(start - 1))
        await refuse(stream, "not_joined", "this member has left the group")

    # --- frames -------------------------------------------------------------------------------

    async def on_frame(self, channel: Channel, frame: GroupFrame) -> None:
        group = self.groups.get(channel.group_id)
        if group is None:
            channel.close()
            return
        if isinstance(frame, frames.Refused):
            log.info(
                "group %s: %s refused: %s (%s)",
                _gshort(group),
                short(channel.peer),
                frame.reason,
                frame.code,
            )
            if frame.code in ("not_member", "not_joined", "malformed"):
                channel.close()
                if frame.code == "not_member":
                    group.farewell = False  # it knows we are gone (it says so)
            return
        if frame.group_id != group.group_id:
            channel.send(frames.Refused("malformed", "a frame for another group"))
            channel.close()
            return
        if channel.closed:
            return
        if group.status is GroupStatus.JOINED and channel.peer not in group.state.members:
            channel.close()  # removed (or left) while the stream was open: nothing more
            return
        if group.status is not GroupStatus.JOINED:
            if not group.farewell:
                channel.close()
                return
            if not isinstance(frame, frames.Sync | frames.WantLog | frames.Log):
                return  # leaving: only getting our leave entry into the log matters now
        try:
            await self._on_frame(group, channel, frame)
        except (ContentError, GroupSealError, SealFailed, IdentityError) as exc:
            log.info(
                "group %s: refused a frame from %s: %s", _gshort(group), short(channel.peer), exc
            )
            channel.send(frames.Refused("refused", str(exc)[:200]))

    async def _on_frame(self, group: Group, channel: Channel, frame: GroupFrame) -> None:
        match frame:
            case frames.Sync():
                await channel.pace_vector()
                await self._on_sync(group, channel, frame)
            case frames.Log():
                await self._on_log(group, channel, frame.entries)
            case frames.WantLog(first=first):
                _send_entries(channel, group.log.since(first - 1))
            case frames.Bundle(bundle=raw):
                await self._on_bundle(group, channel, raw)
            case frames.WantBundle():
                if not channel.gave_bundle:  # one one-time key per stream, however often asked
                    channel.gave_bundle = True
                    bundle = await self.chat.sealing.fresh_bundle()
                    channel.send(frames.Bundle(group.group_id, bundle))
            case frames.GotKey(session_id=session):
                await self.store.key_given(group.group_id, session, channel.peer)
            case frames.Addrs(peers=peers):
                self._on_addrs(group, channel, peers)
            case frames.Key():
                await self._on_key(group, channel, frame)
            case frames.Message():
                if group.status is GroupStatus.JOINED:
                    await self._pace(group, channel.peer)
                    await self._on_message(group, channel, frame)
            case frames.Have(have=have):
                await channel.pace_vector()
                await self._on_have(group, channel, have)

    async def _on_sync(self, group: Group, channel: Channel, sync: frames.Sync) -> None:
        state = group.state
        if sync.head < state.version or (
            sync.head == state.version and sync.head_hash != state.head
        ):
            start = sync.head if sync.head_hash == _hash_at(group, sync.head) else -1
            _send_entries(channel, group.log.since(start))
        elif sync.head > state.version:
            channel.send(frames.WantLog(group.group_id, state.version + 1))
        if group.farewell:
            if sync.head_hash == state.head:
                group.farewell = False  # it has our leave entry
                channel.close()
            return  # else: its entries come, our leave is made again on top if it lost
        await self._on_have(group, channel, sync.have)
        await self._give_keys(group, channel)

    async def _on_log(self, group: Group, channel: Channel, entries: Sequence[bytes]) -> None:
        # Each entry costs a signature check on the loop: a member's entries are paced.
        await channel.pace_entries(len(entries))
        async with group.lock:
            before = group.state
            intake = await self._take_entries(group, entries, channel)
        if intake.need is not None:
            channel.send(frames.WantLog(group.group_id, intake.need))
        if intake.refusal is not None:
            log.info(
                "group %s: refused a change from %s: %s",
                _gshort(group),
                short(channel.peer),
                intake.refusal,
            )
            channel.send(frames.Refused("refused", intake.refusal[:200]))
        if intake.first is not None:
            await self._log_changed(group, before, intake.first)

    async def _take_entries(
        self, group: Group, entries: Iterable[bytes], pace: Channel | None
    ) -> _Intake:
        """Feed membership entries to the group's log (the caller holds its lock), make our
        changes that lost a fork again on top, and store what changed. ``pace``: the stream
        they came on, whose entries that do not extend the log are paced."""
        old = [e.hash for e in group.log.entries]
        need: int | None = None
        refusal: str | None = None
        ours_dropped: list[Entry] = []
        for raw in entries:
            outcome = group.log.receive(raw)
            if pace is not None and isinstance(outcome, Gap | LogRefused):
                await pace.pace_aside()
            if isinstance(outcome, Replaced):
                log.warning(
                    "group %s: a fork was resolved; %d change(s) dropped",
                    _gshort(group),
                    len(outcome.dropped),
                )
                ours_dropped += [e for e in outcome.dropped if e.author == self.me]
            elif isinstance(outcome, Gap):
                need = outcome.need_from if need is None else min(need, outcome.need_from)
            elif isinstance(outcome, LogRefused):
                refusal = refusal or outcome.reason
        for entry in ours_dropped:
            self._make_again(group, entry)
        first = _first_difference(old, [e.hash for e in group.log.entries])
        if first is not None:
            await self.store.save_log(group.group_id, first, group.log.since(first - 1))
        return _Intake(first, need, refusal)

    def _make_again(self, group: Group, entry: Entry) -> None:
        """Our change lost a fork: make it again on top, if it still may be made."""
        try:
            group.log.propose(
                self.net.identity,
                entry.op,
                _stamp(group),
                target=entry.target,
                name=entry.name,
            )
            log.info("group %s: made our %s again after a fork", _gshort(group), entry.op.value)
        except MembershipError as exc:
            log.info("group %s: our %s no longer applies: %s", _gshort(group), entry.op.value, exc)

    async def _log_changed(self, group: Group, before: GroupState, first: int) -> None:
        """The log changed from version ``first`` on (from a member or from us): tell every
        member, act on who is gone."""
        state = group.state
        new_entries = group.log.since(first - 1)
        for channel in group.all_channels():
            _send_entries(channel, new_entries)
            channel.send(
                frames.Sync(group.group_id, state.version, state.head, self._vector(group))
            )
        gone = before.members - state.members
        if gone:
            await self.store.drop_owed(group.group_id, frozenset(gone))
        if self.me not in state.members and group.status is GroupStatus.JOINED:
            departure = _departure(group.log, self.me)
            by_us = departure is not None and departure.op is Op.LEAVE
            group.status = GroupStatus.LEFT if by_us else GroupStatus.REMOVED
            await self.store.set_status(group.group_id, group.status)
            log.warning(
                "group %r: %s", state.name, "we left" if by_us else "we were removed from it"
            )
            for channel in group.all_channels():
                channel.close()
        else:
            for peer in gone:
                for channel in list(group.channels.get(peer, ())):
                    channel.close()
            for peer in state.members - before.members:
                self._links.ensure(peer)
        self.events.publish("group.updated", group=self.group_json(group))

    async def _on_bundle(self, group: Group, channel: Channel, raw: bytes) -> None:
        bundle = self.chat.sealing.check_hello_keys(channel.peer, raw)
        channel.their_identity_key = bundle.identity_key
        if bundle.one_time_keys and channel.asked_bundle:
            channel.asked_bundle = False
            await self.chat.sealing.start(channel.peer, raw)
            await self._give_keys(group, channel)

    def _on_addrs(
        self, group: Group, channel: Channel, peers: tuple[tuple[bytes, tuple[str, ...]], ...]
    ) -> None:
        for key, addrs in peers:
            try:
                member = peer_id_from_public_key(key)
            except IdentityError:
                continue
            if member == self.me or member not in group.state.members:
                continue
            if self.chat.roster.is_friend(member):
                continue  # friends' addresses come from the friends themselves
            admitted = self.net.admit(member, addrs)
            if admitted:
                self._addrs[member] = tuple(admitted)
                link = self._links.ensure(member)
                if link is not None and group.channel_to(member) is None:
                    link.network_changed()

    async def _give_keys(self, group: Group, channel: Channel) -> None:
        """Send ``channel``'s member the sender keys we owe it, sealed with Olm."""
        if group.status is not GroupStatus.JOINED:
            return
        owed = await self.store.owed_to(group.group_id, channel.peer)
        if not owed:
            return
        if not await self.chat.sealing.has_session(channel.peer):
            if not channel.asked_bundle:
                channel.asked_bundle = True
                channel.send(frames.WantBundle(group.group_id))
            return
        for session_id, shared, first_seq in owed:
            if session_id in channel.keys_sent:
                continue  # owed until the member says it has it (got-key)
            sealed = await self.chat.sealing.seal_bytes(
                channel.peer, key_plaintext(group.group_id, session_id, shared, first_seq)
            )
            channel.send(frames.Key(group.group_id, session_id, sealed.kind, sealed.body))
            channel.keys_sent.add(session_id)

    async def _on_key(self, group: Group, channel: Channel, frame: frames.Key) -> None:
        if channel.their_identity_key is None:
            raise ContentError("a key before the member's bundle")
        plaintext = await self.chat.sealing.open_bytes(
            channel.peer, channel.their_identity_key, Sealed(frame.olm_kind, frame.olm_body)
        )
        shared, first_seq = open_key(group.group_id, frame.session_id, plaintext)
        key = ReceivedKey.from_shared(shared)
        if key.session_id != frame.session_id:
            raise ContentError("the shared key is for another session")
        sender = channel.peer  # a key is the member's who gave it, whoever made it
        dropped = await self.store.add_received_key(group.group_id, sender, frame.session_id, key)
        group.keys.setdefault((sender, frame.session_id), key)
        for old in dropped:
            group.keys.pop((sender, old), None)
        channel.send(frames.GotKey(group.group_id, frame.session_id))
        await self._floor_from_key(group, sender, first_seq)
        for held in await self.store.take_pending(group.group_id, sender, frame.session_id):
            try:
                await self._on_message(group, channel, held)
            except (ContentError, GroupSealError, IdentityError) as exc:
                log.info("group %s: a held message was refused: %s", _gshort(group), exc)

    async def _floor_from_key(self, group: Group, sender: str, first_seq: int) -> None:
        """The first key a member gives us after we joined (or joined again) says from which
        of its messages on we can read: the ones before are not ours to hold."""
        joined = _join_version(group.log, self.me)
        known = group.floors.get(sender)
        if known is not None and known[1] == joined:
            return
        group.floors[sender] = (first_seq - 1, joined)
        await self.store.set_floor(group.group_id, sender, first_seq - 1, joined)
        group.timeline.set_floor(sender, first_seq - 1)
        group.have_dirty = True
        self._have_wanted.set()

    async def _pace(self, group: Group, peer: str) -> None:
        """A member's messages in one group, over all its streams, at their rate."""
        now = trio.current_time()
        rate = self._rates.setdefault(
            (group.group_id, peer),
            TokenBucket(BURST_MESSAGES, MAX_MESSAGES_PER_S, BURST_MESSAGES, now),
        )
        await trio.sleep(rate.borrow(1, now))

    async def _on_message(self, group: Group, channel: Channel, frame: frames.Message) -> None:
        sender = peer_id_from_public_key(frame.sender)
        at = group.log.state_at(frame.version)
        if at is None:
            channel.send(frames.WantLog(group.group_id, group.state.version + 1))
            group.needs_sync = True
            return  # sent by a version we lack: it comes again with the next sync
        if sender not in at.members:
            raise ContentError(f"{short(sender)} was not a member at version {frame.version}")
        gone = _departure_after(group.log, sender, frame.version)
        if gone is not None and frame.clock > gone.at_ms:
            # A member who is gone keeps its key: it could still sign messages "from before"
            # and have others relay them. What it sent after it was removed (by the clock of
            # the admin who removed it) is refused.
            raise ContentError(f"{short(sender)} is no longer a member")
        if sender == self.me:
            return  # ours come back in others' syncs
        ref = MessageRef(sender, frame.seq, frame.clock, frame.msg_id)
        async with group.lock:
            full = _storage_full(group, sender)
            if full is not None and not group.timeline.holds(sender, frame.seq):
                raise ContentError(full)
            problem = group.timeline.check(ref, _now_ms())
            if isinstance(problem, Duplicate):
                return
            if isinstance(problem, Refused):
                group.needs_sync = True  # it may be right later (a clock ahead, a hole)
                raise ContentError(problem.reason)
            key = group.keys.get((sender, frame.session_id))
            if key is None:
                await self.store.hold_pending(frame, sender)
                group.needs_sync = True
                return

            def fn(conn: Any) -> GroupMessage:
                content = open_content(frame, key.open(frame.body).plaintext)
                return self.store.insert_message(conn, frame, sender, content.text, content.sent_at)

            record = await self.store.run(fn)
            group.timeline.receive(ref, _now_ms())
            group.have_dirty = True
        self._have_wanted.set()
        self.events.publish("group.message", message=self.message_json(group, record))

    async def _on_have(
        self, group: Group, channel: Channel, have: tuple[tuple[bytes, int], ...]
    ) -> None:
        vector: dict[str, int] = {}
        for key, seq in have:
            try:
                vector[peer_id_from_public_key(key)] = seq
            except IdentityError:
                continue
        before = group.haves.get(channel.peer, {}).get(self.me, 0)
        group.haves[channel.peer] = vector
        group.held.set()
        if vector.get(self.me, 0) != before:
            self.events.publish(
                "group.receipt",
                group=group.group_id.hex(),
                member=channel.peer,
                through=vector.get(self.me, 0),
            )
        ours = group.timeline.have()
        if any(seq > ours.get(sender, 0) for sender, seq in vector.items()):
            # It holds what we lack: our vector tells it (it sends what we lack), so a member
            # that a sender cannot reach gets its messages through the others at once.
            group.have_dirty = True
            self._have_wanted.set()
        # What we sent on this stream already is on its way: a member that keeps saying it
        # lacks it gets it once per stream (a vector cannot make us send the same again).
        lacks = {s: max(seq, channel.sent.get(s, 0)) for s, seq in vector.items()}
        for sender, seq in channel.sent.items():
            lacks.setdefault(sender, seq)
        missing = group.timeline.missing_for(lacks, limit=MAX_SYNC_MESSAGES)
        if missing:
            for frame in await self.store.frames_of(
                group.group_id, missing, public_key_from_peer_id
            ):
                if channel.queued_bytes > SYNC_QUEUE_BYTES:
                    break  # the rest after its next vector: a catch-up never overfills
                channel.send(frame)
                sender = peer_id_from_public_key(frame.sender)
                channel.sent[sender] = max(channel.sent.get(sender, 0), frame.seq)

    async def _send_haves(self) -> None:
        while True:
            await self._have_wanted.wait(RESYNC_S)
            await trio.sleep(HAVE_DELAY_S)
            for group in list(self.groups.values()):
                if not (group.have_dirty or group.needs_sync):
                    continue
                group.have_dirty = group.needs_sync = False
                try:
                    have = frames.Have(group.group_id, self._vector(group))
                    for channel in group.all_channels():
                        channel.send(have)
                except Exception:  # one group's trouble never stops the others' receipts
                    log.exception("group %s: could not send our vector", _gshort(group))

    def _vector(self, group: Group) -> tuple[tuple[bytes, int], ...]:
        """Our vector, current members first, within the frame's limit of senders."""
        have = group.timeline.have()
        members = group.state.members
        senders = sorted(have, key=lambda s: (s not in members, s))[:MAX_VECTOR_SENDERS]
        return tuple(sorted((public_key_from_peer_id(s), have[s]) for s in senders))

    # --- what the user does -------------------------------------------------------------------

    def resolve(self, text: str) -> Group:
        """A group by its ID (hex), a unique beginning of it, or its unique name."""
        query = text.strip()
        if not query:
            raise ApiError("invalid_params", "no group given")
        folded = query.casefold()
        for matches in (
            [g for g in self.groups.values() if g.group_id.hex() == folded],
            [g for g in self.groups.values() if g.state.name.casefold() == folded],
            [
                g
                for g in self.groups.values()
                if len(folded) >= 4 and g.group_id.hex().startswith(folded)
            ],
        ):
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise ApiError("ambiguous", f"{len(matches)} groups match {query!r}; use its ID")
        raise ApiError("not_found", f"no group {query!r} (see groups.list)")

    def _joined(self, text: str) -> Group:
        group = self.resolve(text)
        if group.status is not GroupStatus.JOINED:
            raise ApiError("invalid_state", _why_not(group, "a group you are in"))
        return group

    async def create(self, name: str) -> dict[str, Any]:
        problem = text_problem(name, 128, allow_empty=False)
        if problem is not None:
            raise ApiError("invalid_params", f"the group name {problem}")
        if len(self.groups) >= MAX_GROUPS:
            raise ApiError("not_allowed", f"this daemon is in {MAX_GROUPS} groups already")
        group_log = MembershipLog.create(self.net.identity, name, _now_ms())
        group = Group(group_log.state.group_id, GroupStatus.JOINED, self.me, group_log)
        await self.store.add_group(group.group_id, group.status, self.me, group_log.since(-1))
        self.groups[group.group_id] = group
        log.info("created group %r (%s)", name, group.group_id.hex())
        self.events.publish("group.updated", group=self.group_json(group))
        return self.group_json(group)

    async def _change(self, group: Group, op: Op, **fields: Any) -> None:
        before = await self._propose(group, op, **fields)
        await self._log_changed(group, before, before.version + 1)

    async def _propose(self, group: Group, op: Op, **fields: Any) -> GroupState:
        """Sign our change on top of the log and store it; the state before it."""
        async with group.lock:
            before = group.state
            try:
                group.log.propose(self.net.identity, op, _stamp(group), **fields)
            except MembershipError as exc:
                raise ApiError("not_allowed", str(exc)) from None
            await self.store.save_log(
                group.group_id, before.version + 1, group.log.since(before.version)
            )
        return before

    def _member(self, group: Group, text: str) -> str:
        query = text.strip()
        members = sorted(group.state.members)
        for m in members:
            if m == query:
                return m
        contact = None
        with contextlib.suppress(ApiError):
            contact = self.chat.roster.resolve(query)
        if contact is not None and contact.peer_id in group.state.members:
            return contact.peer_id
        found = [
            m for m in members if len(query) >= 4 and (m.startswith(query) or m.endswith(query))
        ]
        if len(found) == 1:
            return found[0]
        raise ApiError("not_found", f"{query!r} is not a member of {group.state.name!r}")

    async def invite(self, group_text: str, friend_text: str) -> dict[str, Any]:
        group = self._joined(group_text)
        contact = self.chat.roster.resolve_friend(friend_text, "can be invited to a group")
        await self._change(group, Op.ADD, target=contact.peer_id)
        link = self._links.ensure(contact.peer_id)
        if link is not None:
            link.network_changed()
        return self.group_json(group)

    async def join(self, group_text: str) -> dict[str, Any]:
        group = self.resolve(group_text)
        if group.status is not GroupStatus.INVITED:
            raise ApiError("invalid_state", _why_not(group, "an invitation to answer"))
        if self.me not in group.state.members:
            raise ApiError("not_member", "you are no longer a member of that group")
        group.status = GroupStatus.JOINED
        await self.store.set_status(group.group_id, group.status)
        for peer in group.state.members - {self.me}:
            self._links.ensure(peer)
        self.events.publish("group.updated", group=self.group_json(group))
        return self.group_json(group)

    async def decline(self, group_text: str) -> dict[str, Any]:
        group = self.resolve(group_text)
        if group.status is not GroupStatus.INVITED:
            raise ApiError("invalid_state", _why_not(group, "an invitation to answer"))
        return await self._leave(group, GroupStatus.DECLINED)

    async def leave(self, group_text: str) -> dict[str, Any]:
        return await self._leave(self._joined(group_text), GroupStatus.LEFT)

    async def _leave(self, group: Group, status: GroupStatus) -> dict[str, Any]:
        before = group.state
        if self.me in before.members:
            before = await self._propose(group, Op.LEAVE)
        group.status = status
        group.farewell = True
        await self.store.set_status(group.group_id, status)
        for channel in group.all_channels():
            _send_entries(channel, group.log.since(before.version))
            channel.close()
        for peer in before.members - {self.me}:
            self._links.ensure(peer)
        self.events.publish("group.updated", group=self.group_json(group))
        return self.group_json(group)

    async def remove(self, group_text: str, member_text: str) -> dict[str, Any]:
        group = self._joined(group_text)
        member = self._member(group, member_text)
        await self._change(group, Op.REMOVE, target=member)
        return self.group_json(group)

    async def rename(self, group_text: str, name: str) -> dict[str, Any]:
        group = self._joined(group_text)
        await self._change(group, Op.RENAME, name=name)
        return self.group_json(group)

    async def set_admin(self, group_text: str, member_text: str, admin: bool) -> dict[str, Any]:
        group = self._joined(group_text)
        member = self._member(group, member_text)
        await self._change(group, Op.PROMOTE if admin else Op.DEMOTE, target=member)
        return self.group_json(group)

    async def send(self, group_text: str, text: str) -> dict[str, Any]:
        group = self._joined(group_text)
        problem = text_problem(text, MAX_TEXT_BYTES, multiline=True, allow_empty=False)
        if problem is not None:
            raise ApiError("invalid_params", f"the message text {problem}")
        async with group.lock:
            state = group.state
            if self.me not in state.members:
                raise ApiError("not_member", "you are no longer a member of this group")
            full = _storage_full(group, self.me)
            if full is not None:
                raise ApiError("not_allowed", full)
            now = _now_ms()
            seq, clock = group.timeline.next_stamp(self.me, now)
            msg_id = os.urandom(frames.MSG_ID_BYTES)
            shell = frames.Message(
                group.group_id, msg_id, self._my_key, seq, clock, state.version, "-", b"-"
            )

            def fn(conn: Any) -> tuple[frames.Message, GroupMessage, bool]:
                ours = self.store.our_key(conn, group.group_id)
                plan = plan_keys(
                    ours.key if ours else None,
                    ours.made_for if ours else frozenset(),
                    state.members,
                    self.me,
                    time.time(),
                )
                if ours is None or plan.new_key:
                    ours = self.store.new_key(conn, group.group_id, state.members, self.me, seq)
                frame = replace(shell, session_id=ours.key.session_id)
                frame = replace(frame, body=ours.key.seal(message_plaintext(frame, text, now)))
                self.store.save_key(conn, group.group_id, ours.key)
                record = self.store.insert_message(conn, frame, self.me, text, now)
                return frame, record, plan.new_key

            frame, record, new_key = await self.store.run(fn)
            group.timeline.receive(MessageRef(self.me, seq, clock, msg_id), now)
        for channel in group.all_channels():
            if new_key:
                await self._give_keys(group, channel)
            channel.send(frame)
            channel.sent[self.me] = max(channel.sent.get(self.me, 0), seq)
        self.events.publish("group.message", message=self.message_json(group, record))
        return self.message_json(group, record)

    async def wait_held(self, group_text: str, seq: int, timeout: float) -> dict[str, Any]:
        """Until every other member holds our message ``seq`` (or ``timeout``): its receipt."""
        group = self.resolve(group_text)
        with trio.move_on_after(timeout):
            while self._held_by(group, self.me, seq) < len(group.state.members):
                await group.held.wait(1.0)
        return {"held_by": self._held_by(group, self.me, seq), "members": len(group.state.members)}

    async def history(self, group_text: str, limit: int) -> list[dict[str, Any]]:
        group = self.resolve(group_text)
        records = await self.store.history(group.group_id, limit)
        return [self.message_json(group, r) for r in records]

    # --- JSON ---------------------------------------------------------------------------------

    def _held_by(self, group: Group, sender: str, seq: int) -> int:
        others = [
            have
            for peer, have in group.haves.items()
            if peer in group.state.members and peer != self.me
        ]
        mine = 1 if group.timeline.holds(sender, seq) and self.me in group.state.members else 0
        return mine + sum(1 for have in others if have.get(sender, 0) >= seq)

    def message_json(self, group: Group, m: GroupMessage) -> dict[str, Any]:
        return {
            "group": group.group_id.hex(),
            "id": m.msg_id.hex(),
            "row": m.row,
            "sender": m.sender,
            "direction": "out" if m.sender == self.me else "in",
            "seq": m.seq,
            "clock": m.clock,
            "text": m.text,
            "sent_at": m.sent_at,
            "stored_at": m.stored_at,
            "held_by": self._held_by(group, m.sender, m.seq),
            "members": len(group.state.members),
        }

    def group_json(self, group: Group) -> dict[str, Any]:
        state = group.state
        members = []
        for peer in sorted(state.members, key=lambda p: (state.seniority(p), p)):
            contact = self.chat.roster.get(peer)
            members.append(
                {
                    "peer_id": peer,
                    "name": contact.display_name if contact is not None else "",
                    "me": peer == self.me,
                    "friend": self.chat.roster.is_friend(peer),
                    "admin": peer in state.admins,
                    "owner": peer == state.owner,
                    "online": peer == self.me or group.channel_to(peer) is not None,
                }
            )
        return {
            "id": group.group_id.hex(),
            "name": state.name,
            "status": group.status.value,
            "version": state.version,
            "inviter": group.inviter,
            "admin": self.me in state.admins,
            "members": members,
        }

    def list_json(self) -> list[dict[str, Any]]:
        return [self.group_json(g) for g in self.groups.values()]

    def status(self) -> dict[str, Any]:
        return {
            "groups": len(self.groups),
            "joined": sum(1 for g in self.groups.values() if g.status is GroupStatus.JOINED),
            "streams": sum(len(g.all_channels()) for g in self.groups.values()),
        }


def _storage_full(group: Group, sender: str) -> str | None:
    """Why ``sender``'s next message is not stored (None: it is): a member may fill at
    most its share of what one group stores."""
    held = group.timeline.count(sender)
    if held >= MAX_MESSAGES_PER_MEMBER:
        return f"quota: {MAX_MESSAGES_PER_MEMBER} messages of one member per group"
    share = MAX_MESSAGES_PER_GROUP // max(1, len(group.state.members))
    if group.timeline.total >= MAX_MESSAGES_PER_GROUP and held >= share:
        return f"quota: the group holds {MAX_MESSAGES_PER_GROUP} messages"
    return None


def _stamp(group: Group) -> int:
    """A membership change's time: past every message clock we have seen in the group, so
    that a member who is removed (or leaves) can add nothing that sorts after it (its
    messages with a later clock are refused)."""
    return max(_now_ms(), group.timeline.clock + 1)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _why_not(group: Group, wanted: str) -> str:
    name = group.state.name
    because = {
        GroupStatus.INVITED: f"you are invited to {name!r} and have not joined (groups.join)",
        GroupStatus.JOINED: f"you are in {name!r} already",
        GroupStatus.DECLINED: f"you declined the invitation to {name!r}",
        GroupStatus.LEFT: f"you left {name!r}",
        GroupStatus.REMOVED: f"you were removed from {name!r}",
    }[group.status]
    return f"not {wanted}: {because}"


def _gshort(group: Group) -> str:
    return group.group_id.hex()[:8]


async def _write_entries(stream: INetStream, group_id: bytes, entries: list[bytes]) -> None:
    """Membership entries straight onto a stream we answer without a channel."""
    with trio.move_on_after(FAREWELL_TIMEOUT_S):
        for chunk in _chunks(entries, MAX_ENTRIES_PER_FRAME):
            await stream.write(frames.encode(frames.Log(group_id, tuple(chunk))))


def _first_difference(old: list[bytes], new: list[bytes]) -> int | None:
    """The first version at which two logs (as lists of entry hashes) differ; None if they
    are the same."""
    for version, (a, b) in enumerate(zip(old, new, strict=False)):
        if a != b:
            return version
    return None if len(old) == len(new) else min(len(old), len(new))


def _send_entries(channel: Channel, entries: list[bytes]) -> None:
    """Membership entries onto a member's channel, as many frames as they need."""
    for chunk in _chunks(entries, MAX_ENTRIES_PER_FRAME):
        channel.send(frames.Log(channel.group_id, tuple(chunk)))


def _chunks(items: list[bytes], size: int) -> list[list[bytes]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _hash_at(group: Group, version: int) -> bytes | None:
    state = group.log.state_at(version)
    return state.head if state is not None else None


def _departure(group_log: MembershipLog, peer: str) -> Entry | None:
    """The entry by which ``peer``, no longer a member, left or was removed (None while it
    is a member)."""
    if peer in group_log.state.members:
        return None
    for entry in reversed(group_log.entries):
        if (entry.op is Op.LEAVE and entry.author == peer) or (
            entry.op is Op.REMOVE and entry.target == peer
        ):
            return entry
    return None


def _departure_after(group_log: MembershipLog, peer: str, version: int) -> Entry | None:
    """The first entry after ``version`` by which ``peer`` left or was removed (a message
    that names ``version`` was sent before it, so its clock is bounded by that entry's)."""
    for entry in group_log.entries[version + 1 :]:
        if (entry.op is Op.LEAVE and entry.author == peer) or (
            entry.op is Op.REMOVE and entry.target == peer
        ):
            return entry
    return None


def _join_version(group_log: MembershipLog, peer: str) -> int:
    """The version at which ``peer`` last became a member (0: it made the group)."""
    for entry in reversed(group_log.entries):
        if entry.op is Op.ADD and entry.target == peer:
            return entry.version
    return 0


def _who_added(group_log: MembershipLog, peer: str) -> str | None:
    for entry in reversed(group_log.entries):
        if entry.op is Op.ADD and entry.target == peer:
            return entry.author
    return None
