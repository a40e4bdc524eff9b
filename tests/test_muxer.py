"""p2pchat.muxer: Yamux receive buffers bounded by the window, and a stream cap."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import libp2p.stream_muxer.muxer_multistream as muxer_multistream
import pytest

from p2pchat import muxer
from p2pchat.muxer import BoundedYamux, YamuxLimitError, _BoundedBuffers


def fake_muxer(window: int) -> Any:
    return SimpleNamespace(peer_id="peer", streams={1: SimpleNamespace(target_recv_window=window)})


def test_buffer_accepts_up_to_the_window_and_refuses_more() -> None:
    m = fake_muxer(window=300 * 1024)
    buffers = _BoundedBuffers(cast(Any, m))
    buffers[1] = bytearray()
    limit = 300 * 1024 + muxer.WINDOW_SLACK_BYTES
    buffers[1].extend(b"x" * limit)
    assert len(buffers[1]) == limit
    with pytest.raises(YamuxLimitError, match="overran the receive window"):
        buffers[1].extend(b"x")
    assert len(buffers[1]) == limit  # nothing of the refused data was kept
    del buffers[1][:1000]
    buffers[1].extend(b"y" * 1000)  # room again once the reader consumed data


def test_small_windows_still_allow_the_default() -> None:
    m = fake_muxer(window=1)
    buffers = _BoundedBuffers(cast(Any, m))
    buffers[1] = bytearray(b"abc")
    buffers[1].extend(b"x" * (256 * 1024))
    assert bytes(buffers[1][:3]) == b"abc"


def test_stream_cap_counts_only_streams_the_peer_opened() -> None:
    m = fake_muxer(window=0)
    m.is_initiator_value = True  # our streams are odd, the peer's even
    buffers = _BoundedBuffers(cast(Any, m))
    for n in range(muxer.MAX_STREAMS_PER_CONNECTION):
        buffers[2 * n + 2] = bytearray()  # the peer's
    buffers[2] = bytearray()  # replacing an existing stream's buffer is fine
    for n in range(10):
        buffers[2 * n + 1] = bytearray()  # ours: never refused (py-libp2p would leak them)
    with pytest.raises(YamuxLimitError, match="streams on one connection"):
        buffers[100_000] = bytearray()
    assert isinstance(YamuxLimitError("x"), OSError)  # fatal for the connection in py-libp2p


def test_install_makes_libp2p_build_bounded_yamux() -> None:
    muxer.install()
    assert muxer_multistream.Yamux is BoundedYamux
