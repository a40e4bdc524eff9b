"""msg/2.0.0 on the wire: a real daemon seals what it sends with an Olm session started from
the receiver's keys, and refuses what does not open. The friend is scripted with real Olm
(p2pchat.ratchet) and sees every byte."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

import cbor2
import pytest
import trio
from libp2p.abc import INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from p2pchat import wire
from p2pchat.ratchet.bundle import parse_bundle
from p2pchat.ratchet.pair import OlmAccount, PairSession, Sealed
from tests.harness import Daemon, wait_for
from tests.peers import FakeFriend, call, running

pytestmark = pytest.mark.daemons

SECRET = "the words only bob may read"


class SealedFriend(FakeFriend):
    """Receives msg/2.0.0 like a daemon would, with its own Olm account."""

    def __init__(self) -> None:
        super().__init__()
        self.account = OlmAccount.create()
        self.sessions: list[PairSession] = []
        self.raw = b""
        self.hellos: list[wire.Hello] = []
        self.texts: list[str] = []
        self.refuse_next = False
        self.got = trio.Event()
        self.host.set_stream_handler(TProtocol(wire.MSG2_PROTOCOL), self._msg2)

    async def _msg2(self, stream: INetStream) -> None:
        decoder = wire.FrameDecoder()
        sender_ik = b""
        try:
            while True:
                data = await stream.read(65536)
                self.raw += data
                for frame in decoder.feed(data):
                    if isinstance(frame, wire.Hello):
                        self.hellos.append(frame)
                        peer = str(stream.muxed_conn.peer_id)
                        assert frame.keys is not None
                        sender_ik = parse_bundle(peer, frame.keys, time.time()).identity_key
                        if frame.want_key:
                            bundle = self.account.bundle(self.identity, 1, int(time.time()))
                            await stream.write(wire.encode(wire.Keys(bundle)))
                    elif isinstance(frame, wire.SealedMessage):
                        if self.refuse_next:
                            self.refuse_next = False
                            self.sessions.clear()
                            await stream.write(
                                wire.encode(wire.Refused(wire.REFUSED_UNDECRYPTABLE, "lost it"))
                            )
                            return
                        sealed = Sealed(frame.kind, frame.body)
                        match = [s for s in self.sessions if s.matches(sealed)]
                        if match:
                            plaintext = match[0].open(sealed)
                        else:
                            session, plaintext = self.account.accept(sender_ik, sealed)
                            self.sessions.insert(0, session)
                        opened = cbor2.loads(plaintext)
                        assert opened["id"] == frame.msg_id
                        self.texts.append(opened["text"])
                        await stream.write(wire.encode(wire.Ack((frame.msg_id,))))
                        self.got.set()
        except Exception:
            return


def state_of(d: Daemon, peer: str, text: str) -> str | None:
    for m in d.call("messages.history", friend=peer)["messages"]:
        if m["text"] == text:
            return str(m["state"])
    return None


async def test_a_daemon_seals_what_it_sends_and_starts_over_when_asked(
    make_daemon: Callable[..., Daemon],
) -> None:
    alice = await trio.to_thread.run_sync(partial(make_daemon, "alice"))
    bob = SealedFriend()
    async with running(bob.host):
        await bob.befriend(alice)
        await call(alice, "messages.send", friend=bob.identity.peer_id, text=SECRET)
        with trio.fail_after(20):
            await bob.got.wait()
        assert bob.texts == [SECRET]
        assert SECRET.encode() not in bob.raw  # only the seal crossed the wire
        assert bob.hellos[0].want_key and bob.hellos[0].keys
        await trio.to_thread.run_sync(
            partial(
                wait_for,
                lambda: state_of(alice, bob.identity.peer_id, SECRET) == "delivered",
                what="delivered",
            )
        )
        # Bob lost his session: he says so, alice starts a new one and seals it again.
        bob.refuse_next = True
        bob.got = trio.Event()
        await call(alice, "messages.send", friend=bob.identity.peer_id, text="once more")
        with trio.fail_after(30):
            await bob.got.wait()
        assert bob.texts == [SECRET, "once more"]
        assert bob.hellos[-1].want_key  # a new session, from a new one-time key
        assert b"once more" not in bob.raw


async def test_what_does_not_open_is_refused_and_not_stored(
    make_daemon: Callable[..., Daemon],
) -> None:
    alice = await trio.to_thread.run_sync(partial(make_daemon, "alice"))
    mallory = SealedFriend()
    async with running(mallory.host):
        await mallory.befriend(alice)
        me = mallory.identity
        my_keys = mallory.account.bundle(me, 0, int(time.time()))

        async def send(*frames: wire.Frame) -> list[wire.Frame]:
            stream = await mallory.host.new_stream(
                ID.from_base58(alice.peer_id), [TProtocol(wire.MSG2_PROTOCOL)]
            )
            await stream.write(b"".join(wire.encode(f) for f in frames))
            decoder = wire.FrameDecoder()
            out: list[wire.Frame] = []
            with trio.fail_after(10):
                while not any(isinstance(f, (wire.Ack, wire.Refused, wire.Keys)) for f in out):
                    try:
                        out += decoder.feed(await stream.read(65536))
                    except Exception:
                        break
            await stream.reset()
            return out

        def sealed_msg(n: int, s: Sealed, msg_id: bytes | None = None) -> wire.SealedMessage:
            return wire.SealedMessage(msg_id or bytes([n]) * 16, n, 0, s.kind, s.body)

        # A sealed message with no hello first, a plain one on msg/2.0.0, a hello signed by
        # someone else: frame errors.
        hello = wire.Hello((), keys=my_keys, want_key=True)
        r = await send(wire.SealedMessage(bytes(16), 1, 0, 0, b"x"))
        assert isinstance(r[-1], wire.Refused) and r[-1].code == wire.REFUSED_BAD_FRAME
        r = await send(wire.Hello((), keys=my_keys), wire.ChatMessage(bytes(16), 1, 0, "plain"))
        assert isinstance(r[-1], wire.Refused) and r[-1].code == wire.REFUSED_BAD_FRAME
        other = OlmAccount.create().bundle(FakeFriend().identity, 0, int(time.time()))
        r = await send(wire.Hello((), keys=other))
        assert isinstance(r[-1], wire.Refused) and "signed by another" in r[-1].reason

        # A session from alice's key, then a tampered message: undecryptable, not stored.
        r = await send(hello)
        assert isinstance(r[0], wire.Keys)
        theirs = parse_bundle(alice.peer_id, r[0].bundle, time.time())
        session = PairSession.start(mallory.account, theirs, theirs.one_time_keys[0][0])
        good = session.seal(cbor2.dumps({"id": bytes([1]) * 16, "text": "hello alice"}))
        bad = Sealed(good.kind, good.body[:-1] + bytes([good.body[-1] ^ 1]))
        r = await send(wire.Hello((), keys=my_keys), sealed_msg(1, bad))
        assert isinstance(r[-1], wire.Refused) and r[-1].code == wire.REFUSED_UNDECRYPTABLE
        # Sealed for one ID, sent under another: refused too.
        r = await send(wire.Hello((), keys=my_keys), sealed_msg(2, good, msg_id=bytes([9]) * 16))
        assert isinstance(r[-1], wire.Refused) and r[-1].code == wire.REFUSED_UNDECRYPTABLE
        history = await call(alice, "messages.history", friend=me.peer_id)
        assert history["messages"] == []
        # The genuine message opens, once.
        r = await send(wire.Hello((), keys=my_keys), sealed_msg(1, good))
        assert r == [wire.Ack((bytes([1]) * 16,))]
        r = await send(wire.Hello((), keys=my_keys), sealed_msg(1, good))  # a resend: acked
        assert r == [wire.Ack((bytes([1]) * 16,))]
        history = await call(alice, "messages.history", friend=me.peer_id)
        assert [m["text"] for m in history["messages"]] == ["hello alice"]
