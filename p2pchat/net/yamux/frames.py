"""Yamux frame headers (hashicorp/yamux ``spec.md``, as go-, js- and py-libp2p speak it).

Every frame starts with a 12-byte header: version (0), type, flags, stream ID and length, in
network byte order. For DATA frames the length is the payload that follows; for
WINDOW_UPDATE it is the window increment, for PING an opaque value echoed back, for GO_AWAY
the error code. No payload follows a header of any other type.
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

HEADER: Final = struct.Struct(">BBHII")
HEADER_SIZE: Final = HEADER.size
VERSION: Final = 0

DATA: Final = 0
WINDOW_UPDATE: Final = 1
PING: Final = 2
GO_AWAY: Final = 3
TYPE_NAMES: Final = {DATA: "DATA", WINDOW_UPDATE: "WINDOW_UPDATE", PING: "PING", GO_AWAY: "GO_AWAY"}

SYN: Final = 0x1
ACK: Final = 0x2
FIN: Final = 0x4
RST: Final = 0x8

GO_AWAY_NORMAL: Final = 0
GO_AWAY_PROTOCOL_ERROR: Final = 1
GO_AWAY_INTERNAL_ERROR: Final = 2

INITIAL_WINDOW: Final = 256 * 1024
"""Every stream's window in each direction when it opens (the spec's fixed starting size)."""

MAX_UINT32: Final = 2**32 - 1


class Header(NamedTuple):
    """One decoded frame header."""

    version: int
    type: int
    flags: int
    stream_id: int
    length: int


def encode(frame_type: int, flags: int, stream_id: int, length: int) -> bytes:
    """The 12 header bytes of one frame."""
    return HEADER.pack(VERSION, frame_type, flags, stream_id, length)


def decode(data: bytes | bytearray | memoryview, offset: int = 0) -> Header:
    """The header at ``offset`` of ``data`` (which must hold ``HEADER_SIZE`` bytes there)."""
    return Header(*HEADER.unpack_from(data, offset))
