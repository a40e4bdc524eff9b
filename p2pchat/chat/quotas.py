"""What one friend may make this daemon do: per-friend quotas, sans-IO with an injected clock.

A friend is trusted with messages, hellos, friend requests and file offers, but no friend may
flood the daemon at the others' expense. Each check here answers "how much of this may be
taken" and, when not all of it, the ``refused`` frame to answer with (PROTOCOL.md §3). The
callers do the I/O: nothing refused is stored or acked, so the friend's daemon keeps it and
retries later (no data is lost). Refusals are counted per friend for ``status``
(:meth:`FriendQuotas.status`), which lists the friends refused within the last
``REPORT_WINDOW_S`` seconds.

Refusing is itself work (a stream negotiated, a frame written, the data the friend pushed
into it meanwhile decrypted and dropped), so a friend that keeps drawing refusals, past a
budget no honest daemon comes near, is *cooled down*: the callback given to
:class:`FriendQuotas` disconnects it and keeps it away for ``cooldown_s`` (doubling for a
repeat offender). Its daemon keeps what it had queued and resends it afterwards.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from p2pchat import wire
from p2pchat.chat.ratelimit import MAX_TRACKED_PEERS, TokenBucket
from p2pchat.config import QuotaConfig

REPORT_WINDOW_S: Final = 60.0
"""A friend refused within this many seconds is reported as being refused now."""

KINDS: Final = ("messages", "hellos", "requests", "offers", "streams")

MAX_MESSAGE_STREAMS: Final = 2
"""Message streams one friend may have open to this daemon at once: its daemon sends on one
(one link per peer; two while a reconnect overlaps), and each more would be another receive
window (up to 16 MiB) a paced friend could fill."""

CONTENTION_WINDOW_S: Final = 2.0
"""Another friend that sent within this many seconds makes the shared rate apply."""

PACE_CHUNK: Final = 64
"""A paced friend is read again once this many messages fit (not one at a time)."""

MAX_COOLDOWN_S: Final = 600.0
STRIKE_MEMORY_S: Final = 3600.0
"""A cool-down starting within this many seconds of the last one's end lasts twice as long."""

CoolDownCallback = Callable[[str, float], None]
"""Called with the friend and the seconds to keep it away when its cool-down starts."""


@dataclass(frozen=True)
class MessageAdmission:
    """What :meth:`FriendQuotas.admit_messages` allows: store the first ``taken``; then
    either refuse the rest with ``refused``, or wait ``wait_s`` and ask again for it."""

    taken: int
    refused: wire.Refused | None = None
    wait_s: float = 0.0


@dataclass
class _Friend:
    messages: TokenBucket
    shared: TokenBucket
    """The rate while another friend is sending too (spent only then)."""
    hellos: TokenBucket
    requests: TokenBucket
    refusals: TokenBucket
    """The refusals it may still draw before a cool-down (``refusal_burst``, refilling)."""
    refused: dict[str, int] = field(default_factory=dict)
    accepted_messages: int = 0
    paced: int = 0
    """Messages that had to wait for the rate (each counted once)."""
    last_code: str = ""
    last_reason: str = ""
    last_refused: float | None = None
    cooldown_until: float = -math.inf
    cooldowns: int = 0
    strikes: int = 0
    """Cool-downs in a row, each within ``STRIKE_MEMORY_S`` of the last one's end."""


class FriendQuotas:
    """The per-friend buckets and refusal counts. State is kept for at most
    ``MAX_TRACKED_PEERS`` friends (least recently active forgotten, which only refills
    their buckets)."""

    def __init__(
        self,
        clock: Callable[[], float],
        config: QuotaConfig | None = None,
        *,
        on_cooldown: CoolDownCallback | None = None,
    ) -> None:
        self._clock = clock
        self.config = config or QuotaConfig()
        self.on_cooldown: CoolDownCallback = on_cooldown or (lambda peer, seconds: None)
        """Set by the owner: disconnect ``peer`` and keep it away for ``seconds``."""
        self._friends: OrderedDict[str, _Friend] = OrderedDict()
        self._senders: dict[str, float] = {}
        """Friends that sent messages within ``CONTENTION_WINDOW_S``: when to share."""

    def _get(self, peer: str, now: float) -> _Friend:
        f = self._friends.pop(peer, None)
        if f is None:
            c = self.config
            f = _Friend(
                messages=TokenBucket(c.message_burst, c.messages_per_s, c.message_burst, now),
                shared=TokenBucket(
                    c.shared_message_burst, c.shared_messages_per_s, c.shared_message_burst, now
                ),
                hellos=TokenBucket(c.hello_burst, c.hellos_per_s, c.hello_burst, now),
                requests=TokenBucket(c.request_burst, c.requests_per_s, c.request_burst, now),
                refusals=TokenBucket(c.refusal_burst, c.refusals_per_s, c.refusal_burst, now),
            )
        self._friends[peer] = f
        while len(self._friends) > MAX_TRACKED_PEERS:
            self._friends.popitem(last=False)
        return f

    def _refuse(
        self, peer: str, f: _Friend, kind: str, n: int, code: str, reason: str
    ) -> wire.Refused:
        now = self._clock()
        f.refused[kind] = f.refused.get(kind, 0) + n
        if now >= f.cooldown_until and not f.refusals.take(now):
            seconds = self._start_cooldown(f, now)
            reason = f"{reason}; refused too often: disconnected for {seconds:g} s"
            self.on_cooldown(peer, seconds)
        f.last_code, f.last_reason, f.last_refused = code, reason, now
        return wire.Refused(code, reason)

    def _start_cooldown(self, f: _Friend, now: float) -> float:
        if now - f.cooldown_until > STRIKE_MEMORY_S:
            f.strikes = 0
        seconds = min(MAX_COOLDOWN_S, self.config.cooldown_s * 2.0**f.strikes)
        f.strikes += 1
        f.cooldowns += 1
        f.cooldown_until = now + seconds
        f.refusals.tokens = f.refusals.capacity / 2  # back with half the budget, refilling
        f.refusals.updated = f.cooldown_until  # from the end
        return seconds

    def cooling_down(self, peer: str) -> float:
        """Seconds left of ``peer``'s cool-down; 0 when it may connect."""
        f = self._friends.get(peer)
        if f is None:
            return 0.0
        return max(0.0, f.cooldown_until - self._clock())

    def admit_messages(
        self, peer: str, n: int, unread: int, *, retry: bool = False
    ) -> MessageAdmission:
        """Of ``n`` incoming messages from ``peer`` (who has ``unread`` messages stored and
        unread), how many may be stored now: the first ones, in order.

        Over the unread cap the rest is refused (``quota``: the sender keeps it queued). Over
        a rate it is not refused but *paced*: the caller stores what was taken, waits
        ``wait_s`` and asks again, reading nothing more from that friend meanwhile, so the
        friend's own flow control (the stream window) holds the excess at the sender, an
        honest backlog still arrives in full, and a flood costs this daemon only the rate.
        Two rates: the friend's own (``messages_per_s``, after a burst), and while another
        friend has also sent within ``CONTENTION_WINDOW_S`` the shared one
        (``shared_messages_per_s``), so one friend alone may use the daemon's full speed
        but not at the others' expense. ``retry``: asking again for messages already
        counted as paced."""
        now = self._clock()
        f = self._get(peer, now)
        c = self.config
        contended = self._note_sender(peer, now)
        room = max(0, c.max_unread_messages - unread)
        taken = f.messages.take_up_to(min(n, room), now)
        if contended:
            shared = f.shared.take_up_to(taken, now)
            f.messages.tokens += taken - shared  # not used after all
            taken = shared
        f.accepted_messages += taken
        if taken == n:
            return MessageAdmission(n)
        if taken == room:
            refusal = self._refuse(
                peer,
                f,
                "messages",
                n - taken,
                wire.REFUSED_QUOTA,
                f"{c.max_unread_messages} of your messages are unread; wait until they are read",
            )
            return MessageAdmission(taken, refused=refusal)
        if not retry:
            f.paced += n - taken
        chunk = min(n - taken, PACE_CHUNK)
        wait = f.messages.seconds_until(chunk, now)
        rate = c.messages_per_s
        if contended and f.shared.seconds_until(chunk, now) > wait:
            wait, rate = f.shared.seconds_until(chunk, now), c.shared_messages_per_s
        f.last_code, f.last_refused = "paced", now
        f.last_reason = f"sending more than {rate:g} messages/s: read at that rate"
        return MessageAdmission(taken, wait_s=wait)

    def _note_sender(self, peer: str, now: float) -> bool:
        """Record that ``peer`` sent now; whether another friend sent within the window."""
        recent = self._senders
        for other, seen in list(recent.items()):
            if now - seen > CONTENTION_WINDOW_S:
                del recent[other]
        contended = any(other != peer for other in recent)
        recent[peer] = now
        return contended

    def admit_stream(self, peer: str, open_streams: int) -> wire.Refused | None:
        """A new message stream from ``peer``, who has ``open_streams`` open to us already.
        Refused ``full`` (retried by every sender) past ``MAX_MESSAGE_STREAMS``."""
        if open_streams < MAX_MESSAGE_STREAMS:
            return None
        f = self._get(peer, self._clock())
        return self._refuse(
            peer,
            f,
            "streams",
            1,
            wire.REFUSED_FULL,
            f"at most {MAX_MESSAGE_STREAMS} message streams at once",
        )

    def admit_hello(self, peer: str) -> wire.Refused | None:
        """A ``hello`` (the start of each message stream from ``peer``)."""
        f = self._get(peer, self._clock())
        if f.hellos.take(self._clock()):
            return None
        return self._refuse(
            peer, f, "hellos", 1, wire.REFUSED_RATE_LIMITED, "too many hellos; retry later"
        )

    def admit_request(self, peer: str) -> wire.Refused | None:
        """A friend ``request`` from a peer that is already a friend (or that we asked)."""
        f = self._get(peer, self._clock())
        if f.requests.take(self._clock()):
            return None
        return self._refuse(
            peer, f, "requests", 1, wire.REFUSED_RATE_LIMITED, "too many requests; try later"
        )

    def admit_offer(self, peer: str, open_offers: int) -> wire.Refused | None:
        """A new file offer from ``peer``, who has ``open_offers`` incoming offers not ended.
        Refused ``full``, which every sender retries (an unknown code would be final)."""
        if open_offers < self.config.max_open_offers:
            return None
        f = self._get(peer, self._clock())
        return self._refuse(
            peer,
            f,
            "offers",
            1,
            wire.REFUSED_FULL,
            f"{self.config.max_open_offers} of your file offers are open; retry later",
        )

    def status(self) -> list[dict[str, Any]]:
        """The friends refused or paced within the last ``REPORT_WINDOW_S`` seconds (API.md
        ``status.quotas.refusing``), most recent first."""
        now = self._clock()
        shown = [
            (peer, f)
            for peer, f in self._friends.items()
            if (f.last_refused is not None and now - f.last_refused <= REPORT_WINDOW_S)
            or now < f.cooldown_until
        ]
        shown.sort(key=lambda item: -(item[1].last_refused or 0.0))
        return [
            {
                "peer_id": peer,
                "code": f.last_code,
                "reason": f.last_reason,
                "refused_s_ago": round(now - (f.last_refused or now), 3),
                "refused": {kind: f.refused.get(kind, 0) for kind in KINDS},
                "accepted_messages": f.accepted_messages,
                "paced_messages": f.paced,
                "cooldown_s": round(max(0.0, f.cooldown_until - now), 1),
                "cooldowns": f.cooldowns,
            }
            for peer, f in shown
        ]
