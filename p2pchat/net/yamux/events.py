"""What a Yamux :class:`~p2pchat.net.yamux.session.Session` reports from the bytes it is given.

Small immutable records, as h11's ``_events``: the session turns received bytes into these,
and the connection adapter acts on them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StreamOpened:
    """The peer opened a stream (a SYN within the stream cap)."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class DataReceived:
    """Payload for a stream, within the window granted to the peer."""

    stream_id: int
    data: bytes


@dataclass(frozen=True, slots=True)
class StreamEnded:
    """The peer closed its side of a stream (FIN): nothing more will arrive on it."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamReset:
    """The peer reset a stream (RST): both directions are gone."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class WindowOpened:
    """The peer granted more send window on a stream (writers waiting on it may go on)."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class PongReceived:
    """The peer answered one of our pings."""

    opaque: int


@dataclass(frozen=True, slots=True)
class GoAwayReceived:
    """The peer will accept no new streams; ``code`` is 0 for a normal close."""

    code: int


Event = (
    StreamOpened
    | DataReceived
    | StreamEnded
    | StreamReset
    | WindowOpened
    | PongReceived
    | GoAwayReceived
)
