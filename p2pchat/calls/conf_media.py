"""A conference's media: one source, one peer connection per other participant, all on one
asyncio thread (:class:`~p2pchat.calls.media.AsyncioThread`).

Encode once: in a mesh every participant sends its camera to each of the others. aiortc's
senders each encode the frames they are given, so N-1 peer connections would encode the same
picture N-1 times. Instead :class:`SharedVideoEncoder` encodes each frame once (VP8, on one
worker thread) and hands the same encoded packet to every peer connection's sender, which
only packetizes and encrypts it (aiortc sends an ``av.Packet`` from a track as it is). Video
is negotiated as VP8 only for that reason, and the encoder makes a keyframe every
:data:`KEYFRAME_EVERY` frames and whenever a participant joins or one's queue overflowed,
since a receiver's keyframe request (RTCP PLI) does not reach a shared encoder. Audio is
relayed (one capture, one Opus encoder per sender: Opus at 48 kHz mono costs little).

``encode_once=False`` gives each sender its own encoder (aiortc's default), which is what
``bench/bench_groups.py`` compares against.

Conference video is 320x240: on the 2 cores a participant may have, decoding three others
and encoding its own at 640x480 does not keep 30 fps.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fractions
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from p2pchat.calls.media import MediaError, connection_stats, open_source

log = logging.getLogger(__name__)

CONF_WIDTH: Final = 320
CONF_HEIGHT: Final = 240
CONF_BITRATE: Final = 400_000
"""Bits per second of the shared VP8 stream (a 320x240 test pattern needs far less)."""
KEYFRAME_EVERY: Final = 60
"""Frames between keyframes of the shared encoder (2 s at 30 fps)."""
KEYFRAME_MIN_INTERVAL: Final = 0.5
"""Seconds between keyframes asked for by receivers."""
QUEUE_FRAMES: Final = 4
"""Encoded frames a sender may lag behind before its oldest is dropped."""
VIDEO_CLOCK: Final = fractions.Fraction(1, 90_000)


@dataclass(frozen=True, slots=True)
class ConfMediaOptions:
    video: bool
    source: str
    """``test``, ``camera``, or a media file PyAV can read."""
    ice_servers: tuple[tuple[str, str, str], ...] = ()
    encode_once: bool = True


def _packet_track_class() -> Any:
    from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

    class PacketTrack(MediaStreamTrack):
        """What one sender sends: the shared encoder's packets, in order, bounded."""

        kind = "video"

        def __init__(self, encoder: SharedVideoEncoder) -> None:
            super().__init__()
            self._encoder = encoder
            self._queue: deque[Any] = deque()
            self._ready = asyncio.Event()

        def put(self, packet: Any) -> None:
            if len(self._queue) >= QUEUE_FRAMES:
                self._queue.popleft()
                if self._reading:  # it fell behind: it needs a keyframe to pick up again
                    self._encoder.request_keyframe()
                    self.dropped += 1
            self._queue.append(packet)
            self._ready.set()

        dropped = 0
        _reading = False

        async def recv(self) -> Any:
            if not self._reading:
                # The sender starts reading once DTLS is up: what queued before is stale,
                # and its receiver decodes from the next keyframe.
                self._reading = True
                self._queue.clear()
                self._encoder.request_keyframe()
            while not self._queue:
                if self.readyState != "live":
                    raise MediaStreamError
                self._ready.clear()
                await self._ready.wait()
            return self._queue.popleft()

        def stop(self) -> None:
            super().stop()
            self._ready.set()
            self._encoder.unsubscribe(self)

    return PacketTrack


class SharedVideoEncoder:
    """Encodes a video source once for every peer connection that sends it."""

    def __init__(self, source: Any) -> None:
        self._source = source
        self._tracks: set[Any] = set()
        self._task: asyncio.Task[None] | None = None
        self._codec: Any = None
        self._worker = concurrent.futures.ThreadPoolExecutor(1, "p2pchat-vp8")
        self.keyframe_wanted = True
        self._key_asked = False
        self._last_key = 0.0
        self.frames = 0
        """Frames encoded so far (once each, whoever they went to)."""
        self.encode_seconds = 0.0
        self.keyframes = 0
        """Keyframes asked for (a newcomer, a receiver that fell behind)."""
        self._track_class = _packet_track_class()

    def request_keyframe(self) -> None:
        """A receiver needs a keyframe. Requests are coalesced: at most one keyframe every
        :data:`KEYFRAME_MIN_INTERVAL`, never lost (so a participant that keeps reconnecting
        cannot make every frame a keyframe, and a newcomer still gets one soon)."""
        self._key_asked = True

    def _keyframe_now(self) -> bool:
        """Whether the frame being encoded is to be a keyframe (on the worker thread)."""
        now = time.monotonic()
        if self.keyframe_wanted or (
            self._key_asked and now - self._last_key >= KEYFRAME_MIN_INTERVAL
        ):
            self.keyframe_wanted = self._key_asked = False
            self._last_key = now
            return True
        return False

    def subscribe(self) -> Any:
        track = self._track_class(self)
        self._tracks.add(track)
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())
        return track

    def unsubscribe(self, track: Any) -> None:
        self._tracks.discard(track)

    async def _run(self) -> None:
        from aiortc.mediastreams import MediaStreamError

        loop = asyncio.get_running_loop()
        while True:
            try:
                frame = await self._source.recv()
            except MediaStreamError:
                return  # the source ended (a media file played out)
            if not self._tracks:
                continue  # nobody to send to: read on (a live source must not pile up)
            try:
                packets = await loop.run_in_executor(self._worker, self._encode, frame)
            except Exception as exc:  # one bad frame must not stop our video for everyone
                log.warning("group call: encoding a frame failed: %s", exc)
                self._codec = None
                continue
            for packet in packets:
                for track in list(self._tracks):
                    track.put(packet)

    def _encode(self, frame: Any) -> list[Any]:
        import av

        started = time.perf_counter()
        if frame.format.name != "yuv420p":
            frame = frame.reformat(format="yuv420p")
        if self._codec is not None and (
            frame.width != self._codec.width or frame.height != self._codec.height
        ):
            self._codec = None
        if self._codec is None:
            codec = av.CodecContext.create("libvpx", "w")
            codec.width, codec.height = frame.width, frame.height
            codec.pix_fmt = "yuv420p"
            codec.bit_rate = CONF_BITRATE
            codec.time_base = VIDEO_CLOCK
            codec.gop_size = KEYFRAME_EVERY
            codec.qmin, codec.qmax = 2, 56
            codec.thread_count = 1  # small pictures: threads cost more than they save
            # Constant bitrate in real time, as aiortc's own VP8 sender runs libvpx.
            codec.options = {
                "deadline": "realtime",
                "cpu-used": "-6",
                "lag-in-frames": "0",
                "bufsize": str(CONF_BITRATE),
                "minrate": str(CONF_BITRATE),
                "maxrate": str(CONF_BITRATE),
                "noise-sensitivity": "4",
                "partitions": "0",
                "static-thresh": "1",
                "undershoot-pct": "100",
                "overshoot-pct": "15",
            }
            self._codec = codec
            self.keyframe_wanted = True
        frame.pts = _in_video_clock(frame)
        frame.time_base = VIDEO_CLOCK
        if self._keyframe_now():
            frame.pict_type = av.video.frame.PictureType.I
            self.keyframes += 1
        packets = list(self._codec.encode(frame))
        for packet in packets:
            if packet.time_base is None:
                packet.time_base = VIDEO_CLOCK
        self.frames += 1
        self.encode_seconds += time.perf_counter() - started
        return packets

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        self._worker.shutdown(wait=True)


def _in_video_clock(frame: Any) -> int:
    if frame.pts is None or frame.time_base is None:
        return int(time.monotonic() * 90_000)
    return int(frame.pts * frame.time_base / VIDEO_CLOCK)


@dataclass
class PeerMedia:
    """One other participant's peer connection, and what we count of it."""

    pc: Any
    gen: int
    """Which peer connection with that participant this is (states are reported with it)."""
    video_frames_in: int = 0
    consumers: list[asyncio.Task[None]] = field(default_factory=list)
    sent: list[Any] = field(default_factory=list)
    """The tracks we send it (stopped when the link closes)."""


class ConferenceMedia:
    """Every peer connection of one conference. Create and use only on the asyncio thread."""

    def __init__(
        self, options: ConfMediaOptions, on_state: Callable[[str, int, str], None]
    ) -> None:
        from aiortc.contrib.media import MediaRelay

        self.options = options
        self._on_state = on_state
        video, audio, self._player = open_source(options.source, CONF_WIDTH, CONF_HEIGHT)
        self._video = video if options.video else None
        self._audio = audio
        self._spare: list[Any] = []
        """Source tracks we do not send, read anyway (a media file's decoder feeds both)."""
        if video is not None and not options.video and self._player is not None:
            self._spare.append(asyncio.ensure_future(_drain(video)))
        self._relay = MediaRelay()
        self._encoder = (
            SharedVideoEncoder(video) if self._video is not None and options.encode_once else None
        )
        self.peers: dict[str, PeerMedia] = {}
        self._gens = 0

    # --- links --------------------------------------------------------------------------

    def _open(self, peer: str) -> PeerMedia:
        from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection
        from aiortc.rtcconfiguration import RTCBundlePolicy

        if peer in self.peers:
            raise MediaError("a peer connection to that participant exists already")
        servers = [
            RTCIceServer(urls=url, username=user or None, credential=secret or None)
            for url, user, secret in self.options.ice_servers
        ]
        # Always an explicit list: without one aiortc uses a public STUN server.
        pc = RTCPeerConnection(
            RTCConfiguration(iceServers=servers, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        )
        self._gens += 1
        media = PeerMedia(pc, self._gens)
        self.peers[peer] = media

        @pc.on("connectionstatechange")
        def changed() -> None:
            if self.peers.get(peer) is media:
                self._on_state(peer, media.gen, str(pc.connectionState))

        @pc.on("track")
        def track(received: Any) -> None:
            media.consumers.append(asyncio.ensure_future(_consume(received, media)))

        return media

    def _add_tracks(self, media: PeerMedia) -> None:
        pc = media.pc
        if self._audio is not None:
            sent = self._relay.subscribe(self._audio)
            media.sent.append(sent)
            pc.addTrack(sent)
        else:
            pc.addTransceiver("audio", direction="recvonly")
        if not self.options.video:
            return
        if self._video is None:
            pc.addTransceiver("video", direction="recvonly")
        else:
            sent = (
                self._encoder.subscribe()
                if self._encoder is not None
                else self._relay.subscribe(self._video)
            )
            media.sent.append(sent)
            pc.addTrack(sent)
        if self._encoder is not None:
            _prefer_vp8(pc)

    async def offer(self, peer: str) -> tuple[str, int]:
        """Our offer to ``peer``, and its peer connection's generation."""
        media = self._open(peer)
        self._add_tracks(media)
        await media.pc.setLocalDescription(await media.pc.createOffer())
        return str(media.pc.localDescription.sdp), media.gen

    async def accept(self, peer: str, sdp: str) -> tuple[str, int]:
        from aiortc import RTCSessionDescription

        media = self._open(peer)
        await media.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        self._add_tracks(media)
        await media.pc.setLocalDescription(await media.pc.createAnswer())
        self._check_codecs(media)
        return str(media.pc.localDescription.sdp), media.gen

    async def apply_answer(self, peer: str, sdp: str) -> None:
        from aiortc import RTCSessionDescription

        media = self.peers.get(peer)
        if media is None:
            raise MediaError("no peer connection for that participant")
        await media.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        self._check_codecs(media)

    def _check_codecs(self, media: PeerMedia) -> None:
        """A shared encoder sends VP8: a peer that negotiated anything else cannot have it."""
        if self._encoder is None:
            return
        for transceiver in media.pc.getTransceivers():
            codecs = getattr(transceiver, "_codecs", None) or []
            if transceiver.kind == "video" and (
                not codecs or str(codecs[0].mimeType).lower() != "video/vp8"
            ):
                raise MediaError("the participant's video is not VP8")

    async def close_peer(self, peer: str) -> None:
        media = self.peers.pop(peer, None)
        if media is None:
            return
        for track in media.sent:
            track.stop()
        try:
            await media.pc.close()
        finally:
            for task in media.consumers:
                task.cancel()

    # --- facts --------------------------------------------------------------------------

    async def stats(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for peer, media in list(self.peers.items()):
            try:
                out[peer] = await connection_stats(media.pc, media.video_frames_in)
            except Exception as exc:  # a connection closing under us
                out[peer] = {"state": "closed", "error": str(exc)}
        return out

    def encoder_facts(self) -> dict[str, Any]:
        if self._encoder is None:
            return {"encode_once": False}
        return {
            "encode_once": True,
            "frames_encoded": self._encoder.frames,
            "keyframes_asked": self._encoder.keyframes,
            "encode_ms_per_frame": round(
                1000 * self._encoder.encode_seconds / max(1, self._encoder.frames), 2
            ),
        }

    async def close(self) -> None:
        """Close every peer connection, the encoder and the source."""
        try:
            for peer in list(self.peers):
                with contextlib.suppress(Exception):
                    await self.close_peer(peer)
        finally:
            if self._encoder is not None:
                await self._encoder.close()
            # Every source track, sent or not: a media player stops its decoder and closes
            # its file or camera only once all its tracks stopped.
            tracks = [self._video, self._audio]
            if self._player is not None:
                tracks += [self._player.video, self._player.audio]
            for track in tracks:
                if track is not None:
                    track.stop()
            for task in self._spare:
                task.cancel()


def _prefer_vp8(pc: Any) -> None:
    from aiortc import RTCRtpSender

    vp8 = [
        c
        for c in RTCRtpSender.getCapabilities("video").codecs
        if c.mimeType.lower() in ("video/vp8", "video/rtx")
    ]
    for transceiver in pc.getTransceivers():
        if transceiver.kind == "video":
            transceiver.setCodecPreferences(vp8)


async def _consume(track: Any, media: PeerMedia) -> None:
    """Read (so decode) what a participant sends, counting its video frames."""
    from aiortc.mediastreams import MediaStreamError

    video = track.kind == "video"
    with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
        while True:
            await track.recv()
            if video:
                media.video_frames_in += 1


async def _drain(track: Any) -> None:
    from aiortc.mediastreams import MediaStreamError

    with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
        while True:
            await track.recv()
