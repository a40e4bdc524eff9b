"""Group chats between real daemons (PROTOCOL.md §15): invitations among friends, members
who are not friends of each other reaching each other through the group, messages to every
member in one order, catching up after being offline, removal, and refusals."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any

import pytest
import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from p2pchat.api import ApiError
from p2pchat.groups import frames, membership
from p2pchat.groups.content import message_plaintext
from p2pchat.groups.frames import GROUP_PROTOCOL
from p2pchat.groups.membership import MembershipLog, Op, parse_entry
from p2pchat.identity import Identity, load_identity, public_key_from_peer_id
from p2pchat.net.host import build_host
from p2pchat.paths import KEY_FILE
from p2pchat.ratchet.megolm import SenderKey
from p2pchat.ratchet.pair import pickle_key
from tests.harness import Daemon, OutputLines, befriend, cli, ok, spawn_cli, wait_for
from tests.peers import connect, running

pytestmark = pytest.mark.timeout(240)


def texts(d: Daemon, group: str) -> list[str]:
    return [m["text"] for m in d.call("groups.history", group=group, limit=1000)["messages"]]


def group_of(d: Daemon, gid: str) -> dict[str, Any] | None:
    return next((g for g in d.call("groups.list")["groups"] if g["id"] == gid), None)


def status_of(d: Daemon, gid: str) -> str | None:
    group = group_of(d, gid)
    return group["status"] if group else None


def invite_and_join(owner: Daemon, gid: str, *members: Daemon) -> None:
    for m in members:
        owner.call("groups.invite", group=gid, friend=m.peer_id)
    for m in members:
        wait_for(lambda m=m: status_of(m, gid) == "invited", 30, what=f"{m.name}'s invitation")
        m.call("groups.join", group=gid)


def wait_texts(d: Daemon, gid: str, wanted: list[str], timeout: float = 30) -> None:
    wait_for(
        lambda: all(t in texts(d, gid) for t in wanted),
        timeout,
        what=f"{d.name} to hold {wanted}",
    )


def three(make_daemon: Callable[..., Daemon]) -> tuple[Daemon, Daemon, Daemon, str]:
    """Alice is friends with Bob and Carol, who are not friends; all three in her group."""
    alice, bob, carol = make_daemon("alice"), make_daemon("bob"), make_daemon("carol")
    befriend(alice, bob)
    befriend(alice, carol)
    gid = alice.call("groups.create", name="trip")["group"]["id"]
    invite_and_join(alice, gid, bob, carol)
    return alice, bob, carol, gid


def test_three_members_chat_in_one_order_and_an_offline_member_catches_up(
    make_daemon: Callable[..., Daemon],
) -> None:
    alice, bob, carol, gid = three(make_daemon)
    assert not bob.contact(carol.peer_id), "bob and carol are not contacts"

    alice.call("groups.send", group=gid, text="hello group")
    for d in (bob, carol):
        wait_texts(d, gid, ["hello group"])
    # Bob and Carol are not friends: they reach each other through the group alone.
    bob.call("groups.send", group=gid, text="hi from bob")
    wait_texts(carol, gid, ["hi from bob"])
    held = bob.call("groups.send", group=gid, text="seen by all?", wait=30)["message"]
    assert (held["held_by"], held["members"]) == (3, 3)

    # Carol goes away; the others talk; she comes back and gets all of it, from either.
    carol.stop()
    missed = [f"while carol was away {i}" for i in range(20)]
    for i, text in enumerate(missed):
        (alice if i % 2 else bob).call("groups.send", group=gid, text=text)
    wait_texts(bob, gid, missed)
    # Alice is gone too when Carol comes back: Carol gets Alice's messages from Bob.
    alice.stop()
    carol.start()
    wait_texts(carol, gid, missed)
    alice.start()
    wait_texts(alice, gid, missed)
    # One order everywhere, each sender's own order kept, nothing twice.
    orders = [texts(d, gid) for d in (alice, bob, carol)]
    assert orders[0] == orders[1] == orders[2]
    assert len(orders[0]) == len(set(orders[0])) == 3 + len(missed)
    assert [t for t in orders[0] if t in missed[1::2]] == missed[1::2]

    # A group member who is not a friend gets no 1:1 access.
    with pytest.raises(ApiError) as refused:
        bob.call("messages.send", friend=carol.peer_id, text="direct?")
    assert refused.value.name == "not_found", refused.value
    assert bob.contact(carol.peer_id) is None


def test_a_removed_member_can_read_nothing_sent_after(
    make_daemon: Callable[..., Daemon],
) -> None:
    alice, bob, carol, gid = three(make_daemon)
    alice.call("groups.send", group=gid, text="before")
    wait_texts(carol, gid, ["before"])
    carol.call("groups.send", group=gid, text="carol before")
    wait_texts(alice, gid, ["carol before"])

    # Only admins remove: Bob may not, until Alice makes him one.
    with pytest.raises(ApiError, match="not an admin") as refused:
        bob.call("groups.remove", group=gid, member=carol.peer_id)
    assert refused.value.name == "not_allowed"
    alice.call("groups.admin", group=gid, member=bob.peer_id)
    wait_for(
        lambda: any(m["admin"] for m in group_of(bob, gid)["members"] if m["me"]),  # type: ignore[index]
        what="bob to be an admin",
    )
    bob.call("groups.remove", group=gid, member=carol.peer_id)
    wait_for(lambda: status_of(carol, gid) == "removed", 30, what="carol to learn she was removed")
    wait_for(
        lambda: carol.peer_id not in [m["peer_id"] for m in group_of(alice, gid)["members"]],  # type: ignore[index]
        what="alice to see the removal",
    )
    for i in range(5):
        alice.call("groups.send", group=gid, text=f"after {i}")
        bob.call("groups.send", group=gid, text=f"bob after {i}")
    wait_texts(bob, gid, [f"after {i}" for i in range(5)])
    wait_texts(alice, gid, [f"bob after {i}" for i in range(5)])

    # Carol's daemon holds nothing sent after her removal, and no key that could open it.
    db = carol.home / "p2pchat.db"
    with sqlite3.connect(db) as conn:
        stored = [r[0] for r in conn.execute("SELECT text FROM group_messages")]
        pending = conn.execute("SELECT COUNT(*) FROM group_pending").fetchone()[0]
        keys = {r[0] for r in conn.execute("SELECT session_id FROM group_received_keys")}
    assert stored == ["before", "carol before"]
    assert pending == 0
    with sqlite3.connect(alice.home / "p2pchat.db") as conn:
        after_sessions = {
            r[0]
            for r in conn.execute("SELECT session_id FROM group_messages WHERE text LIKE 'after %'")
        }
    assert after_sessions and not after_sessions & keys
    assert texts(carol, gid) == ["before", "carol before"]
    with pytest.raises(ApiError, match="removed"):
        carol.call("groups.send", group=gid, text="still here?")

    # Her daemon could be changed to keep asking: on the wire she gets the log entries that
    # removed her and a refusal, never a message or a key.
    carol.stop()
    got = trio.run(ask_as, carol, alice, bytes.fromhex(gid))
    kinds = [type(f).__name__ for f in got]
    assert kinds[-1] == "Refused" and got[-1].code == "not_member", kinds  # type: ignore[union-attr]
    assert set(kinds) == {"Log", "Refused"}, kinds
    entries = [e for f in got if isinstance(f, frames.Log) for e in f.entries]
    assert any(parse_entry(e).op is Op.REMOVE for e in entries)

    # She still has her own sender key, which the others hold: she signs a message "from
    # before" her removal and has a member (Bob's identity, his daemon stopped) relay it.
    # Alice refuses it: it is dated after the removal.
    forged = forge_message(carol, bytes.fromhex(gid), "a message slipped in after removal")
    bob.stop()
    got = trio.run(
        talk_as, bob, alice, bytes.fromhex(gid), stored_sync(bob, gid), frames.encode(forged)
    )
    assert any("no longer a member" in r for r in refusals(got)), got
    assert "a message slipped in after removal" not in texts(alice, gid)


async def ask_as(member: Daemon, other: Daemon, group_id: bytes) -> list[frames.GroupFrame]:
    """Open a group stream to ``other`` with ``member``'s identity, as of the group's start
    and holding nothing: every frame ``other`` answers with."""
    with sqlite3.connect(member.home / "p2pchat.db") as conn:
        first = conn.execute(
            "SELECT raw FROM group_log WHERE group_id = ? AND version = 0", (group_id,)
        ).fetchone()[0]
    start = MembershipLog.replay([first]).state
    return await talk_as(member, other, group_id, frames.Sync(group_id, 0, start.head, ()))


def forge_message(member: Daemon, group_id: bytes, text: str) -> frames.Message:
    """A message sealed with ``member``'s own newest sender key, numbered after its last
    one, at the version before the newest and dated now."""
    identity = load_identity(member.home / KEY_FILE)
    with sqlite3.connect(member.home / "p2pchat.db") as conn:
        pickled, created = conn.execute(
            "SELECT pickle, created_at FROM group_sender_keys WHERE group_id = ? "
            "ORDER BY created_at DESC LIMIT 1",
            (group_id,),
        ).fetchone()
        seq = conn.execute(
            "SELECT MAX(seq) FROM group_messages WHERE group_id = ? AND sender = ?",
            (group_id, member.peer_id),
        ).fetchone()[0]
        version = conn.execute(
            "SELECT MAX(version) FROM group_log WHERE group_id = ?", (group_id,)
        ).fetchone()[0]
    key = SenderKey.from_pickle(pickled, pickle_key(identity), created / 1000)
    shell = frames.Message(
        group_id,
        os.urandom(16),
        identity.public_key,
        seq + 1,
        int(time.time() * 1000),
        version - 1,
        key.session_id,
        b"-",
    )
    return replace(shell, body=key.seal(message_plaintext(shell, text, shell.clock)))


def stored_sync(member: Daemon, gid: str) -> frames.Sync:
    """A sync as ``member``'s stored log has it, holding no messages."""
    with sqlite3.connect(member.home / "p2pchat.db") as conn:
        entries = [
            bytes(r[0])
            for r in conn.execute(
                "SELECT raw FROM group_log WHERE group_id = ? ORDER BY version",
                (bytes.fromhex(gid),),
            )
        ]
    state = MembershipLog.replay(entries).state
    return frames.Sync(bytes.fromhex(gid), state.version, state.head, ())


async def talk_as(
    member: Daemon,
    other: Daemon,
    group_id: bytes,
    sync: frames.Sync,
    *sent: bytes,
    one_write: bool = False,
) -> list[frames.GroupFrame]:
    """Open a group stream to ``other`` with ``member``'s identity, send ``sync`` and then
    ``sent`` (raw bytes; ``one_write``: all in one write), and return what ``other`` answers
    within a few seconds."""
    if one_write:
        sent = (frames.encode(sync) + b"".join(sent),)
    identity = load_identity(member.home / KEY_FILE)
    host = build_host(identity)
    got: list[frames.GroupFrame] = []
    async with running(host):
        await connect(host, other)
        stream = await host.new_stream(ID.from_base58(other.peer_id), [TProtocol(GROUP_PROTOCOL)])
        if not one_write:
            await stream.write(frames.encode(sync))
        for data in sent:
            await stream.write(data)
        decoder = frames.GroupDecoder()
        with trio.move_on_after(4):
            while True:
                try:
                    data = await stream.read(65536)
                except Exception:
                    break
                if not data:
                    break
                got.extend(decoder.feed(data))
    return got


def refusals(got: list[frames.GroupFrame]) -> list[str]:
    return [f.reason for f in got if isinstance(f, frames.Refused)]


def test_forged_replayed_and_malformed_frames_are_refused_and_change_nothing(
    make_daemon: Callable[..., Daemon],
) -> None:
    alice, bob, carol, gid = three(make_daemon)
    group_id = bytes.fromhex(gid)
    alice.call("groups.send", group=gid, text="genuine")
    wait_texts(carol, gid, ["genuine"])
    carol.stop()
    with sqlite3.connect(carol.home / "p2pchat.db") as conn:
        entries = [
            bytes(r[0])
            for r in conn.execute(
                "SELECT raw FROM group_log WHERE group_id = ? ORDER BY version", (group_id,)
            )
        ]
    state = MembershipLog.replay(entries).state
    sync = frames.Sync(group_id, state.version, state.head, ())
    before = group_of(alice, gid)
    carol_id = load_identity(carol.home / KEY_FILE)
    stranger = Identity.generate().peer_id

    # Carol is a member, not an admin: her signed "add" is refused, with the reason.
    forged = membership._sign(
        carol_id, group_id, state.version + 1, state.head, Op.ADD, stranger, None, 1
    )
    got = trio.run(
        talk_as, carol, alice, group_id, sync, frames.encode(frames.Log(group_id, (forged,)))
    )
    assert any("not an admin" in r for r in refusals(got)), got
    # An entry whose signature was altered, and a replay of an old one.
    altered = bytearray(forged)
    altered[-5] ^= 1
    replayed = entries[1]
    got = trio.run(
        talk_as,
        carol,
        alice,
        group_id,
        sync,
        frames.encode(frames.Log(group_id, (bytes(altered),))),
        frames.encode(frames.Log(group_id, (replayed,))),
    )
    assert any("signature" in r or "canonical" in r for r in refusals(got)), got
    assert len(refusals(got)) == 1, "a replayed entry is a duplicate, not an error"
    # A message claiming to be Alice's, sealed by nobody's key.
    fake = frames.Message(
        group_id, b"f" * 16, public_key_from_peer_id(alice.peer_id), 99, 10**12, 1, "nokey", b"x"
    )
    got = trio.run(talk_as, carol, alice, group_id, sync, frames.encode(fake))
    # Garbage: refused as malformed, and the stream is closed.
    got = trio.run(talk_as, carol, alice, group_id, sync, b"\x05\xff\xff\xff\xff\xff")
    assert any("malformed" in f.code for f in got if isinstance(f, frames.Refused)), got

    after = group_of(alice, gid)
    assert after is not None and before is not None

    def shape(g: dict[str, Any]) -> tuple[int, list[tuple[str, bool]]]:
        return g["version"], [(m["peer_id"], m["admin"]) for m in g["members"]]

    assert shape(after) == shape(before)
    assert texts(alice, gid) == ["genuine"]
    # Alice's daemon carries on: Bob's next message arrives.
    bob.call("groups.send", group=gid, text="still fine")
    wait_texts(alice, gid, ["still fine"])


def test_a_member_who_left_can_be_invited_again_and_reads_only_from_then(
    make_daemon: Callable[..., Daemon],
) -> None:
    alice, bob = make_daemon("alice"), make_daemon("bob")
    befriend(alice, bob)
    gid = alice.call("groups.create", name="again")["group"]["id"]
    invite_and_join(alice, gid, bob)
    alice.call("groups.send", group=gid, text="first", wait=30)
    bob.call("groups.leave", group=gid)
    wait_for(
        lambda: [m["peer_id"] for m in group_of(alice, gid)["members"]] == [alice.peer_id],  # type: ignore[index]
        30,
        what="alice to see bob leave",
    )
    alice.call("groups.send", group=gid, text="while bob was out")
    alice.call("groups.invite", group=gid, friend=bob.peer_id)
    wait_for(lambda: status_of(bob, gid) == "invited", 30, what="bob's second invitation")
    assert group_of(bob, gid)["inviter"] == alice.peer_id  # type: ignore[index]
    bob.call("groups.join", group=gid)
    held = alice.call("groups.send", group=gid, text="welcome back", wait=30)["message"]
    # Bob cannot open what was sent while he was out, and his vector skips it: he is
    # counted as holding what he can hold.
    assert (held["held_by"], held["members"]) == (2, 2)
    wait_texts(bob, gid, ["welcome back"])
    assert texts(bob, gid) == ["first", "welcome back"]
    with sqlite3.connect(bob.home / "p2pchat.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM group_pending").fetchone()[0] == 0


def test_frames_sent_with_the_first_one_are_all_read(make_daemon: Callable[..., Daemon]) -> None:
    """The first read of a stream brings the sync and whatever followed it, often ending
    inside a frame: those bytes stay with the decoder that carries on reading (a new decoder
    lost them, and the rest of the stream failed as "invalid CBOR")."""
    alice, _, carol, gid = three(make_daemon)
    group_id = bytes.fromhex(gid)
    carol.stop()
    sync = stored_sync(carol, gid)
    carol_key = load_identity(carol.home / KEY_FILE).public_key
    # Messages sealed with a key nobody has: each is refused at once (none is paced), so
    # the daemon reads on past its first read, which ends inside one of them.
    junk = b"".join(
        frames.encode(
            frames.Message(
                group_id, os.urandom(16), carol_key, 2 + i, 10**12 + i, sync.head, "j", b"x" * 77
            )
        )
        for i in range(1500)
    )
    got = trio.run(partial(talk_as, carol, alice, group_id, sync, junk, one_write=True))
    assert "malformed" not in refusals(got), refusals(got)
    log = (alice.home / "p2pchatd.log").read_text()
    assert "invalid CBOR" not in log
    one_read = 65536 // (len(junk) // 1500)  # frames in the most one read brings
    assert log.count("refused a frame from") > one_read  # it did read past the first read


def test_a_flooding_member_loses_no_one_else_anything_and_can_be_removed(
    make_daemon: Callable[..., Daemon],
) -> None:
    alice, bob, carol, gid = three(make_daemon)
    group_id = bytes.fromhex(gid)
    carol.call("groups.send", group=gid, text="carol's last honest words")
    wait_texts(alice, gid, ["carol's last honest words"])
    carol.stop()
    sync = stored_sync(carol, gid)
    carol_key = load_identity(carol.home / KEY_FILE).public_key
    bob_key = public_key_from_peer_id(bob.peer_id)
    junk = []
    for i in range(3000):  # sealed with keys nobody has, some in Bob's name
        junk.append(
            frames.encode(
                frames.Message(
                    group_id,
                    os.urandom(16),
                    bob_key if i % 3 == 0 else carol_key,
                    2 + i,
                    10**12 + i,
                    sync.head,
                    f"junk{i % 7}",
                    os.urandom(200),
                )
            )
        )
    junk += [frames.encode(frames.Have(group_id, ((bob_key, 10**6),)))] * 200
    junk.append(frames.encode(frames.WantBundle(group_id)) * 50)
    got = trio.run(talk_as, carol, alice, group_id, sync, b"".join(junk))
    assert sum(isinstance(f, frames.Bundle) for f in got) <= 2, "one one-time key per stream"

    sent = [f"bob meanwhile {i}" for i in range(50)]
    for text in sent:
        bob.call("groups.send", group=gid, text=text)
    wait_texts(alice, gid, sent)
    assert texts(alice, gid) == ["carol's last honest words", *sent]
    with sqlite3.connect(alice.home / "p2pchat.db") as conn:
        held = conn.execute("SELECT COUNT(*) FROM group_pending").fetchone()[0]
    assert held <= 5000

    alice.call("groups.remove", group=gid, member=carol.peer_id)
    got = trio.run(talk_as, carol, alice, group_id, sync)
    assert [f.code for f in got if isinstance(f, frames.Refused)] == ["not_member"], got
    assert not any(isinstance(f, frames.Message | frames.Key) for f in got)
    alice.call("groups.send", group=gid, text="without carol")
    wait_texts(bob, gid, ["without carol"])


def test_a_decline_reaches_the_group_though_it_changed_since_the_invitation(
    make_daemon: Callable[..., Daemon],
) -> None:
    alice, bob, carol = make_daemon("alice"), make_daemon("bob"), make_daemon("carol")
    befriend(alice, bob)
    befriend(alice, carol)
    gid = alice.call("groups.create", name="stale")["group"]["id"]
    alice.call("groups.invite", group=gid, friend=bob.peer_id)
    wait_for(lambda: status_of(bob, gid) == "invited", 30, what="bob's invitation")
    bob.stop()
    # The group changes after Bob's copy of it: his leave builds on an old version.
    alice.call("groups.invite", group=gid, friend=carol.peer_id)
    alice.call("groups.rename", group=gid, name="fresher")
    bob.start()
    bob.call("groups.decline", group=gid)
    wait_for(
        lambda: bob.peer_id not in [m["peer_id"] for m in group_of(alice, gid)["members"]],  # type: ignore[index]
        30,
        what="alice to see bob's decline",
    )
    assert group_of(alice, gid)["name"] == "fresher"  # type: ignore[index]
    assert status_of(bob, gid) == "declined"


def test_groups_through_the_cli(make_daemon: Callable[..., Daemon]) -> None:
    alice, bob = make_daemon("alice"), make_daemon("bob")
    befriend(alice, bob)
    created = ok(cli(alice.home, "groups", "create", "book club"))
    assert created.startswith("created: book club (")
    ok(cli(alice.home, "groups", "invite", "book club", "bob"))
    wait_for(lambda: "invited" in ok(cli(bob.home, "groups")), 30, what="bob's invitation")
    ok(cli(bob.home, "groups", "join", "book club"))
    sent = ok(cli(alice.home, "groups", "send", "book club", "first", "chapter", "--wait"))
    assert sent.strip().endswith("held by 2/2")
    assert "first chapter" in ok(cli(bob.home, "groups", "history", "book club"))
    listed = json.loads(ok(cli(bob.home, "groups", "--json")))["groups"]
    assert [(g["name"], g["status"], len(g["members"])) for g in listed] == [
        ("book club", "joined", 2)
    ]
    # A member who is not an admin cannot rename; the error says why and the exit code is 1.
    refused = cli(bob.home, "groups", "rename", "book club", "mine now")
    assert refused.returncode == 1 and "not an admin" in refused.stderr

    # `chat GROUP`: typed lines go to the group, others' messages arrive live.
    chat = spawn_cli(bob.home, "chat", "book club", stdin=True)
    try:
        assert chat.stdin is not None
        lines = OutputLines(chat.stdout)
        chat.stdin.write("typed in the group chat\n")
        chat.stdin.flush()
        wait_texts(alice, listed[0]["id"], ["typed in the group chat"])
        alice.call("groups.send", group=listed[0]["id"], text="live reply")
        assert "live reply" in lines.wait_line("live reply")
        chat.stdin.write("/quit\n")
        chat.stdin.close()
        assert chat.wait(timeout=15) == 0
    finally:
        if chat.poll() is None:
            chat.kill()


def test_five_members_and_kill9_during_a_burst_loses_nothing(
    make_daemon: Callable[..., Daemon],
) -> None:
    alice = make_daemon("alice")
    others = [make_daemon(n) for n in ("bob", "carol", "dave", "erin")]
    for d in others:
        befriend(alice, d)
    bob, carol, dave, erin = others
    gid = alice.call("groups.create", name="five")["group"]["id"]
    invite_and_join(alice, gid, *others)
    everyone = [alice, *others]
    wait_for(
        lambda: all(
            sum(m["online"] for m in group_of(d, gid)["members"]) == 5  # type: ignore[index]
            for d in everyone
        ),
        60,
        what="every member to have a stream with every other",
    )

    # Dave is killed in the middle of Bob's burst; the others get all of it, Dave too on return.
    burst = [f"burst {i}" for i in range(300)]
    for i, text in enumerate(burst):
        bob.call("groups.send", group=gid, text=text)
        if i == 100:
            dave.kill9()
    for d in (alice, carol, erin):
        wait_texts(d, gid, burst, 60)
    dave.start()
    wait_texts(dave, gid, burst, 60)

    # The sender itself killed mid-burst: what its API stored reaches everyone after restart.
    stored: list[str] = []
    for i in range(200):
        text = f"from erin {i}"
        erin.call("groups.send", group=gid, text=text)
        stored.append(text)
        if i == 120:
            erin.kill9()
            break
    erin.start()
    for d in everyone:
        wait_texts(d, gid, stored, 60)
    orders = [texts(d, gid) for d in everyone]
    assert all(o == orders[0] for o in orders)
    assert len(orders[0]) == len(set(orders[0])) == len(burst) + len(stored)
