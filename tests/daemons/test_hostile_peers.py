"""A real daemon process against hand-driven libp2p peers in the test process: a plaintext-only
peer, a stranger, a peer sending malformed, oversized or out-of-place frames. Each case says
what the daemon must do and checks that it keeps serving afterwards."""

from __future__ import annotations

import os
from collections.abc import Callable

import multiaddr
import pytest
import trio
from libp2p import new_host
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux

from p2pchat import wire
from p2pchat.identity import Identity, decode_friend_code
from p2pchat.net.host import build_host, key_pair_of
from tests.harness import Daemon
from tests.peers import call, connect, exchange, logged, raw_frame, read_frames_one, running

pytestmark = pytest.mark.daemons

MakeDaemon = Callable[..., Daemon]


def chat_message(text: str, seq: int = 1) -> wire.ChatMessage:
    return wire.ChatMessage(os.urandom(16), seq, 1, text)


async def test_plaintext_only_peer_is_refused(make_daemon: MakeDaemon) -> None:
    alice = await trio.to_thread.run_sync(make_daemon, "alice")
    identity = Identity.generate()
    key_pair = key_pair_of(identity)
    plaintext_host = new_host(
        key_pair=key_pair,
        sec_opt={TProtocol(PLAINTEXT_PROTOCOL_ID): InsecureTransport(key_pair)},
        muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
    )
    addr = multiaddr.Multiaddr((await call(alice, "status"))["listen_addrs"][0])
    async with running(plaintext_host):
        # Only the dial is inside: the daemon must refuse the security negotiation, fast.
        with trio.fail_after(15), pytest.raises(Exception):  # noqa: B017
            await plaintext_host.get_network().dial_addr(addr, ID.from_base58(alice.peer_id))
        assert not plaintext_host.get_network().get_connections(ID.from_base58(alice.peer_id))
    # The same daemon still accepts a Noise peer and keeps serving its API.
    async with running(build_host(Identity.generate())) as good:
        await connect(good, alice)
        assert good.get_network().get_connections(ID.from_base58(alice.peer_id))
    assert (await call(alice, "status"))["peer_id"] == alice.peer_id


async def test_stranger_message_is_refused_and_not_stored(make_daemon: MakeDaemon) -> None:
    alice = await trio.to_thread.run_sync(make_daemon, "alice")
    async with running(build_host(Identity.generate())) as stranger:
        await connect(stranger, alice)
        frames = await exchange(
            stranger,
            alice,
            wire.MSG_PROTOCOL,
            wire.encode(wire.Hello(())) + wire.encode(chat_message("buy now")),
        )
    assert frames == [wire.Refused(wire.REFUSED_NOT_FRIEND, "you are not a friend of this peer")]
    assert (await call(alice, "friends.list"))["contacts"] == []
    assert (await call(alice, "requests.list"))["requests"] == []
    await logged(alice, "refused a message stream from")


async def test_malformed_and_oversized_frames_close_the_stream_daemon_keeps_serving(
    make_daemon: MakeDaemon,
) -> None:
    alice = await trio.to_thread.run_sync(make_daemon, "alice")
    bad_payloads = {
        "garbage": b"\x05hello",
        "oversized": wire.encode_varint(wire.MAX_FRAME_BYTES + 1) + b"\x00" * 1024,
        "not a map": wire.encode_varint(2) + b"\x82\x01",
        "unknown type": raw_frame({"t": "x"}),
        "wrong field type": raw_frame({"t": "request", "name": 1, "text": "", "addrs": []}),
        "two frames": wire.encode(wire.FriendRemove()) + wire.encode(wire.FriendRemove()),
        "ack on friend stream": wire.encode(wire.Ack(())),
    }
    async with running(build_host(Identity.generate())) as peer:
        await connect(peer, alice)
        for what, payload in bad_payloads.items():
            frames = await exchange(peer, alice, wire.FRIEND_PROTOCOL, payload)
            assert len(frames) == 1 and isinstance(frames[0], wire.Refused), what
            assert frames[0].code == wire.REFUSED_BAD_FRAME, what
        # Still serving the very same peer: a valid request is stored.
        frames = await exchange(
            peer,
            alice,
            wire.FRIEND_PROTOCOL,
            wire.encode(wire.FriendRequest("peer", "hello", ())),
        )
        assert frames == [wire.Received()]
    requests = (await call(alice, "requests.list"))["requests"]
    assert [r["request_text"] for r in requests] == ["hello"]
    for reason in ("closing friend stream from", "exceeds", "invalid CBOR"):
        await logged(alice, reason)


async def test_friend_sending_bad_frames_on_msg_stream(make_daemon: MakeDaemon) -> None:
    alice = await trio.to_thread.run_sync(make_daemon, "alice")
    identity = Identity.generate()
    host = build_host(identity)
    accepted = trio.Event()

    async def on_friend_stream(stream: INetStream) -> None:
        frame = await read_frames_one(stream)
        if isinstance(frame, wire.FriendAccept):
            accepted.set()
        await stream.write(wire.encode(wire.Received()))
        await stream.close()

    host.set_stream_handler(TProtocol(wire.FRIEND_PROTOCOL), on_friend_stream)
    async with running(host) as peer:
        await connect(peer, alice)
        my_addrs = tuple(str(a) for a in peer.get_transport_addrs())
        assert await exchange(
            peer, alice, wire.FRIEND_PROTOCOL, wire.encode(wire.FriendRequest("bob", "", my_addrs))
        ) == [wire.Received()]
        await call(alice, "requests.accept", friend=identity.peer_id)
        with trio.fail_after(15):
            await accepted.wait()

        first = chat_message("first", 1)
        frames = await exchange_keep(peer, alice, wire.encode(wire.Hello(())) + wire.encode(first))
        assert frames == [wire.Ack((first.msg_id,))]

        too_long = raw_frame(
            {
                "t": "msg",
                "id": os.urandom(16),
                "seq": 2,
                "ts": 1,
                "text": "x" * (wire.MAX_TEXT_BYTES + 1),
            }
        )
        for payload in (b"\xff" * 8, too_long, wire.encode(wire.FriendRemove())):
            frames = await exchange(peer, alice, wire.MSG_PROTOCOL, payload)
            assert frames and isinstance(frames[-1], wire.Refused)
            assert frames[-1].code == wire.REFUSED_BAD_FRAME

        second = chat_message("second", 2)
        frames = await exchange_keep(peer, alice, wire.encode(second) + wire.encode(second))
        assert frames == [wire.Ack((second.msg_id, second.msg_id))]

    history = (await call(alice, "messages.history", friend=identity.peer_id))["messages"]
    assert [m["text"] for m in history] == ["first", "second"]  # duplicate stored once
    await logged(alice, "closing message stream from")


async def exchange_keep(peer: IHost, d: Daemon, payload: bytes) -> list[wire.Frame]:
    """Send on a msg stream and collect replies until they stop coming (the stream stays
    open: the receiver keeps long-lived message streams). The 1 s of reading is the point:
    the caller asserts the exact replies, so nothing more may come in that time."""
    stream = await peer.new_stream(ID.from_base58(d.peer_id), [TProtocol(wire.MSG_PROTOCOL)])
    await stream.write(payload)
    decoder = wire.FrameDecoder()
    frames: list[wire.Frame] = []
    with trio.move_on_after(1.0):
        while True:
            frames.extend(decoder.feed(await stream.read(65536)))
    await stream.close()
    return frames


async def test_stranger_friend_requests_are_rate_limited(make_daemon: MakeDaemon) -> None:
    alice = await trio.to_thread.run_sync(make_daemon, "alice")
    async with running(build_host(Identity.generate())) as peer:
        await connect(peer, alice)
        replies = []
        for i in range(5):
            frames = await exchange(
                peer,
                alice,
                wire.FRIEND_PROTOCOL,
                wire.encode(wire.FriendRequest("spam", f"request {i}", ())),
            )
            assert len(frames) == 1, frames  # one reply per notice, nothing else
            replies.append(frames[0])
    assert replies[:3] == [wire.Received()] * 3
    assert all(
        isinstance(r, wire.Refused) and r.code == wire.REFUSED_RATE_LIMITED for r in replies[3:]
    ), replies
    # One pending request, holding the latest accepted text.
    requests = (await call(alice, "requests.list"))["requests"]
    assert [r["request_text"] for r in requests] == ["request 2"]
    await logged(alice, "rate-limited a friend request")

    # The invite in alice's friend code is another way in (PROTOCOL.md §4.6), with its own
    # budget: a peer refused on the stranger path still gets in through it. A wrong invite is
    # a stranger's request, and so is the old one once alice rotated hers.
    invite = decode_friend_code((await call(alice, "identity.get"))["friend_code"]).invite
    assert invite is not None
    wrong = bytes(b ^ 1 for b in invite)
    async with running(build_host(Identity.generate())) as peer:
        await connect(peer, alice)

        async def ask(invite: bytes | None) -> wire.Frame:
            request = wire.FriendRequest("spam", "", (), invite=invite)
            (reply,) = await exchange(peer, alice, wire.FRIEND_PROTOCOL, wire.encode(request))
            return reply

        assert [await ask(wrong) for _ in range(3)] == [wire.Received()] * 3
        refused = await ask(wrong)
        assert isinstance(refused, wire.Refused) and refused.code == wire.REFUSED_RATE_LIMITED
        assert await ask(invite) == wire.Received()
        rotated = await call(alice, "invite.rotate")
        assert rotated["friend_code"] == (await call(alice, "identity.get"))["friend_code"]
        new_invite = decode_friend_code(rotated["friend_code"]).invite
        assert new_invite not in (None, invite)
        assert await ask(invite) == refused  # the old code: the stranger path, spent
        assert await ask(new_invite) == wire.Received()
