"""WebRTC media for calls: aiortc on its own asyncio thread, driven from trio.

aiortc is asyncio code, so it runs on an :class:`AsyncioThread` that exists only while a call
does (a daemon that never calls never imports aiortc or PyAV, and pays none of their
memory). :meth:`AsyncioThread.call` runs a coroutine there and awaits it from trio;
:class:`MediaSession` (which lives on that thread) owns one call's peer connection, tracks,
media player and recorder, and reports state changes to trio through a callback.

ICE: the server list is exactly the configured one. ``RTCConfiguration()`` with no
``iceServers`` silently uses a public Google STUN server, so the list is always passed, and
it is empty unless the user configured servers. Instead of STUN, :func:`reflexive_candidates`
turns what libp2p peers observed of our public IP into server-reflexive candidates for our
host candidates' ports (right behind the common NATs that keep source ports).
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import fractions
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import trio

log = logging.getLogger(__name__)

T = TypeVar("T")

VIDEO_WIDTH: Final = 640
VIDEO_HEIGHT: Final = 480
AUDIO_RATE: Final = 48_000
AUDIO_PTIME: Final = 0.020
TONE_HZ: Final = 440.0
MAX_PUBLIC_IPS: Final = 4
SOURCES: Final = ("test", "camera")
"""Built-in ``--source`` values; anything else is a media file path."""

_HOST_CANDIDATE = re.compile(
    r"^a=candidate:(\S+) (\d) udp (\d+) (\d{1,3}(?:\.\d{1,3}){3}) (\d+) typ host", re.I
)


class MediaError(Exception):
    """A media source, sink or the peer connection failed; the message says why."""


class AsyncioThread:
    """One asyncio event loop on a dedicated thread, started and stopped by its owner."""

    def __init__(self, name: str = "p2pchat-rtc") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()
        self.loop.close()

    async def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the asyncio thread; cancelling the trio caller cancels it."""
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)

        def finished(_: Any) -> None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(done.set)

        future.add_done_callback(finished)
        try:
            await done.wait()
        except trio.Cancelled:
            future.cancel()
            raise
        return future.result()

    async def stop(self) -> None:
        """Stop the loop and wait for the thread (cancelling whatever still runs there)."""

        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            with trio.move_on_after(5):
                await self.call(cancel_all())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            # Poll rather than join in a worker thread: that would leave one more (cached)
            # thread behind, and this one ends within milliseconds.
            with trio.move_on_after(5):
                while self._thread.is_alive():
                    await trio.sleep(0.01)


def host_candidates(sdp: str) -> list[tuple[str, str, int, int]]:
    """(foundation, ip, port, priority) of the IPv4 UDP host candidates in ``sdp``."""
    out: list[tuple[str, str, int, int]] = []
    for line in sdp.splitlines():
        m = _HOST_CANDIDATE.match(line.strip())
        if m and m.group(2) == "1":
            out.append((m.group(1), m.group(4), int(m.group(5)), int(m.group(3))))
    return out


def reflexive_candidates(sdp: str, public_ips: list[str]) -> list[str]:
    """Server-reflexive candidates (SDP ``candidate:`` values) pairing each public IP that
    peers observed for us with each host candidate's port: behind a NAT that keeps source
    ports, that is where our media socket is reachable once it has sent a packet out."""
    out: list[str] = []
    hosts = host_candidates(sdp)
    host_ips = {ip for _, ip, _, _ in hosts}
    for public_ip in [ip for ip in public_ips if ":" not in ip][:MAX_PUBLIC_IPS]:
        if public_ip in host_ips:
            continue
        for foundation, ip, port, priority in hosts:
            # Below the host candidate, as RFC 8445 §5.1.2 orders the types.
            srflx_priority = max(1, priority - (126 - 100) * (1 << 24))
            out.append(
                f"candidate:{foundation}x 1 udp {srflx_priority} {public_ip} {port} "
                f"typ srflx raddr {ip} rport {port}"
            )
    return list(dict.fromkeys(out))


def with_reflexive(sdp: str, public_ips: list[str]) -> str:
    """``sdp`` with :func:`reflexive_candidates` added to every media section, before its
    ``a=end-of-candidates``. (In the SDP rather than trickled: aiortc sends complete
    candidate lists, and its ICE agent ignores candidates that arrive after that marker.)"""
    lines = sdp.split("\r\n")
    out: list[str] = []
    section: list[str] = []
    for line in lines:
        if line.startswith("m="):
            section = []
        if line == "a=end-of-candidates":
            extra = reflexive_candidates("\r\n".join(section), public_ips)
            out.extend(f"a={candidate}" for candidate in extra)
        section.append(line)
        out.append(line)
    return "\r\n".join(out)


# --- built-in test source ------------------------------------------------------------------


def _test_tracks(width: int = VIDEO_WIDTH, height: int = VIDEO_HEIGHT) -> tuple[Any, Any]:
    """A moving-bar test pattern (640x480 unless told, 30 fps) and a 440 Hz tone (48 kHz
    mono)."""
    from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack
    from av import AudioFrame, VideoFrame

    class TestPattern(VideoStreamTrack):
        def __init__(self) -> None:
            super().__init__()
            self._n = 0

        async def recv(self) -> Any:
            pts, time_base = await self.next_timestamp()
            frame = VideoFrame(width=width, height=height, format="yuv420p")
            luma = frame.planes[0]
            bar = (self._n * 8) % width
            row = bytes(
                235 if bar <= x < bar + width // 16 else 16 + (x * 200 // width)
                for x in range(luma.line_size)
            )
            luma.update(row * height)
            for plane in frame.planes[1:]:
                plane.update(bytes([128]) * plane.buffer_size)
            frame.pts, frame.time_base = pts, time_base
            self._n += 1
            return frame

    class Tone(AudioStreamTrack):
        def __init__(self) -> None:
            super().__init__()
            samples = int(AUDIO_RATE * AUDIO_PTIME)
            period = array.array(
                "h",
                (
                    int(8000 * math.sin(2 * math.pi * TONE_HZ * i / AUDIO_RATE))
                    for i in range(AUDIO_RATE)
                ),
            )
            self._second = period.tobytes()
            self._chunk = samples * 2
            self._samples = samples
            self._offset = 0
            self._start = 0.0
            self._timestamp = -samples

        async def recv(self) -> Any:
            if self.readyState != "live":
                from aiortc.mediastreams import MediaStreamError

                raise MediaStreamError
            self._timestamp += self._samples
            if self._timestamp == 0:
                self._start = time.time()
            else:
                wait = self._start + self._timestamp / AUDIO_RATE - time.time()
                await asyncio.sleep(wait)
            frame = AudioFrame(format="s16", layout="mono", samples=self._samples)
            chunk = self._second[self._offset : self._offset + self._chunk]
            self._offset = (self._offset + self._chunk) % len(self._second)
            frame.planes[0].update(chunk.ljust(self._chunk, b"\0"))
            frame.pts = self._timestamp
            frame.sample_rate = AUDIO_RATE
            frame.time_base = fractions.Fraction(1, AUDIO_RATE)
            return frame

    return TestPattern(), Tone()


def open_source(
    source: str, width: int = VIDEO_WIDTH, height: int = VIDEO_HEIGHT
) -> tuple[Any, Any, Any]:
    """(video track, audio track, the media player feeding them or None) for ``source``:
    the test pattern and tone, the camera, or a media file."""
    if source == "test":
        video, audio = _test_tracks(width, height)
        return video, audio, None
    from aiortc.contrib.media import MediaPlayer

    try:
        if source == "camera":
            player = MediaPlayer(
                "/dev/video0", format="v4l2", options={"video_size": f"{width}x{height}"}
            )
        else:
            player = MediaPlayer(source)
    except Exception as exc:
        raise MediaError(f"cannot open media source {source!r}: {exc}") from None
    return player.video, player.audio, player


def _counted(track: Any, session: MediaSession) -> Any:
    """``track``, counting each decoded frame into ``session.video_frames_in``."""
    from aiortc.mediastreams import MediaStreamTrack

    class Counted(MediaStreamTrack):
        kind = track.kind

        async def recv(self) -> Any:
            frame = await track.recv()
            session.video_frames_in += 1
            return frame

        def stop(self) -> None:
            super().stop()
            track.stop()

    return Counted()


async def connection_stats(pc: Any, video_frames_in: int) -> dict[str, Any]:
    """What `p2pchat calls` shows of one peer connection: codecs, rates, loss, RTT, the
    selected path, DTLS."""
    out: dict[str, Any] = {
        "state": pc.connectionState,
        "video_frames_in": video_frames_in,
    }
    report = await pc.getStats()
    for stat in report.values():
        kind = getattr(stat, "kind", None)
        if stat.type == "inbound-rtp" and kind in ("audio", "video"):
            out[f"{kind}_in"] = {
                "packets": stat.packetsReceived,
                "lost": stat.packetsLost,
                "jitter": stat.jitter,
            }
        elif stat.type == "transport":
            out["bytes_in"] = stat.bytesReceived
            out["bytes_out"] = stat.bytesSent
        elif stat.type == "outbound-rtp" and kind in ("audio", "video"):
            out[f"{kind}_out"] = {"packets": stat.packetsSent, "bytes": stat.bytesSent}
        elif stat.type == "remote-inbound-rtp" and kind in ("audio", "video"):
            if stat.roundTripTime is not None:
                out[f"{kind}_rtt_ms"] = round(stat.roundTripTime * 1000, 1)
            out[f"{kind}_loss"] = stat.fractionLost
    out["codecs"] = sorted(
        {
            str(codec.mimeType)
            for transceiver in pc.getTransceivers()
            for codec in (getattr(transceiver, "_codecs", None) or [])[:1]
        }
    )
    out.update(_transport_facts(pc))
    return out


def _transport_facts(pc: Any) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    for transceiver in pc.getTransceivers():
        dtls = transceiver.receiver.transport
        if dtls is None:
            continue
        facts["dtls"] = dtls.state
        facts["srtp"] = getattr(dtls, "_rx_srtp", None) is not None
        connection = getattr(dtls.transport, "_connection", None)
        pair = getattr(connection, "_nominated", {}).get(1) if connection else None
        if pair is not None:
            local, remote = pair.local_candidate, pair.remote_candidate
            facts["path"] = {
                "local": f"{local.host}:{local.port} {local.type}",
                "remote": f"{remote.host}:{remote.port} {remote.type}",
                "relayed": local.type == "relay" or remote.type == "relay",
            }
        break
    return facts


# --- one call's media ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MediaOptions:
    video: bool
    source: str
    """``test``, ``camera``, or a media file PyAV can read."""
    record: str
    """File to record the received media to; empty discards it."""
    ice_servers: tuple[tuple[str, str, str], ...] = ()
    """(url, username, credential) of each configured STUN/TURN server."""


class MediaSession:
    """One call's aiortc objects. Create and use it only on the asyncio thread."""

    def __init__(self, options: MediaOptions, on_state: Callable[[str], None]) -> None:
        from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection
        from aiortc.rtcconfiguration import RTCBundlePolicy

        self.options = options
        servers = [
            RTCIceServer(urls=url, username=user or None, credential=secret or None)
            for url, user, secret in options.ice_servers
        ]
        # Always an explicit list: without one aiortc uses a public STUN server.
        self.pc = RTCPeerConnection(
            RTCConfiguration(iceServers=servers, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        )
        self._on_state = on_state
        self._player: Any = None
        self._drain: Any = None
        self._recorder: Any = None
        self._recording = False
        self.video_frames_in = 0
        """Decoded video frames received so far (for the frame rate `p2pchat calls` shows)."""
        self.pc.on("connectionstatechange", self._state_changed)
        self.pc.on("track", self._track)
        self._add_source()
        self._open_sink()

    def _add_source(self) -> None:
        options = self.options
        video, audio, self._player = open_source(options.source)
        from aiortc.contrib.media import MediaBlackhole

        # A media file's tracks are fed by one decoder: a track we do not send (the video of
        # an audio-only call) must still be read, or its frames pile up in memory.
        self._drain = MediaBlackhole()
        if audio is not None:
            self.pc.addTrack(audio)
        else:
            # Nothing to say (a camera without a microphone): still hear the friend.
            self.pc.addTransceiver("audio", direction="recvonly")
        if options.video and video is not None:
            self.pc.addTrack(video)
        else:
            if video is not None and self._player is not None:
                self._drain.addTrack(video)
            if options.video:
                # Still negotiate video, to receive the friend's.
                self.pc.addTransceiver("video", direction="recvonly")

    def _open_sink(self) -> None:
        from aiortc.contrib.media import MediaBlackhole, MediaRecorder

        if self.options.record:
            try:
                self._recorder = MediaRecorder(self.options.record)
            except Exception as exc:
                raise MediaError(f"cannot record to {self.options.record!r}: {exc}") from None
        else:
            self._recorder = MediaBlackhole()

    def _track(self, track: Any) -> None:
        if track.kind == "video":
            track = _counted(track, self)
        self._recorder.addTrack(track)

    async def _state_changed(self) -> None:
        state = self.pc.connectionState
        if state == "connected" and not self._recording:
            self._recording = True
            await self._recorder.start()
            await self._drain.start()
        self._on_state(state)

    async def create_offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def accept_offer(self, sdp: str) -> str:
        from aiortc import RTCSessionDescription

        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return str(self.pc.localDescription.sdp)

    async def apply_answer(self, sdp: str) -> None:
        from aiortc import RTCSessionDescription

        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))

    async def add_candidate(self, candidate: str, mid: str, index: int) -> None:
        from aiortc.sdp import candidate_from_sdp

        if not candidate or self.pc.remoteDescription is None:
            return
        parsed = candidate_from_sdp(candidate.removeprefix("candidate:"))
        parsed.sdpMid = mid or None
        parsed.sdpMLineIndex = index
        await self.pc.addIceCandidate(parsed)

    async def stats(self) -> dict[str, Any]:
        """What `p2pchat calls` shows: codecs, rates, loss, RTT, the selected path, DTLS."""
        return await connection_stats(self.pc, self.video_frames_in)

    async def close(self) -> None:
        """Release everything: peer connection (sockets), tracks, player and recorder."""
        try:
            await self.pc.close()
        finally:
            if self._player is not None:
                for track in (self._player.audio, self._player.video):
                    if track is not None:
                        track.stop()
            await self._drain.stop()
            if self._recorder is not None:
                await self._recorder.stop()
