"""Store and forward through a mutual friend (PROTOCOL.md §14), with real daemons: alice
writes to bob while he is offline and goes offline herself; carol, a friend of both, holds
the envelope (through a kill -9); bob gets the message when he returns, and alice learns it
was delivered when she returns, while bob is offline again."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cbor2
import pytest

from p2pchat.mailbox.envelope import BUCKETS
from tests.harness import Daemon, befriend, cli, ok, send_and_wait, start_all, wait_for

pytestmark = pytest.mark.daemons

TEXT = "written while you were away"


def held(d: Daemon) -> dict[str, Any]:
    return dict(d.call("status")["mailbox"])


def mailbox_rows(d: Daemon) -> list[sqlite3.Row]:
    conn = sqlite3.connect(d.home / "p2pchat.db")
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute("SELECT * FROM mailbox").fetchall()
    finally:
        conn.close()


def mine(d: Daemon, friend: Daemon, text: str) -> dict[str, Any]:
    found = [m for m in d.history(friend.peer_id) if m["text"] == text]
    assert len(found) == 1, found
    return found[0]


@pytest.mark.timeout(180)
def test_a_message_reaches_an_offline_friend_through_a_mutual_friend(
    make_daemon: Callable[..., Daemon], short_tmp: Path
) -> None:
    alice, bob, carol = (make_daemon(n) for n in ("alice", "bob", "carol"))
    for a, b in ((alice, bob), (alice, carol), (bob, carol)):
        befriend(a, b)
    send_and_wait(alice, bob, "hello while we are both here")  # the pair's Olm session
    bob.stop()
    wait_for(lambda: not (alice.contact(bob.peer_id) or {}).get("online"), what="bob offline")

    sent = alice.call("messages.send", friend=bob.peer_id, text=TEXT)["message"]
    wait_for(lambda: mine(alice, bob, TEXT)["holders"] == 1, what="carol to hold the message")
    assert mine(alice, bob, TEXT)["state"] == "pending"
    shown = ok(cli(alice.home, "history", bob.peer_id))
    assert f"{TEXT}  (stored for delivery at 1 holder)" in shown
    rows = mailbox_rows(carol)
    assert [r["recipient"] for r in rows] == [bob.peer_id]
    # What carol holds tells her the recipient and a padded size, nothing else.
    assert TEXT.encode() not in rows[0]["envelope"]
    assert alice.peer_id.encode() not in rows[0]["envelope"]
    assert bytes.fromhex(sent["id"]) not in rows[0]["envelope"]
    box = cbor2.loads(rows[0]["envelope"])["box"]
    assert len(box) - 48 in BUCKETS and rows[0]["size"] == len(rows[0]["envelope"])
    # Alice fetched from carol when they connected: what carol holds for bob stays hers.
    assert held(carol)["held_envelopes"] == 1

    carol.kill9()  # acknowledged means on disk
    carol.start()
    assert held(carol)["held_envelopes"] == 1
    alice.stop()

    bob.start()
    wait_for(
        lambda: any(m["text"] == TEXT for m in bob.history(alice.peer_id)),
        timeout=60,
        what="bob to get the message from carol",
    )
    got = mine(bob, alice, TEXT)
    assert got["id"] == sent["id"] and got["direction"] == "in"
    assert bob.call("status")["mailbox"]["fetched"] == 1
    # Carol deleted what bob took, and holds bob's receipt for alice instead.
    wait_for(
        lambda: [r["recipient"] for r in mailbox_rows(carol)] == [alice.peer_id],
        what="carol to hold bob's receipt for alice",
    )
    bob.stop()

    alice.start()
    wait_for(
        lambda: mine(alice, bob, TEXT)["state"] == "delivered",
        timeout=60,
        what="alice to learn from carol that bob got it",
    )
    assert mine(alice, bob, TEXT)["holders"] == 0
    wait_for(lambda: held(carol)["held_envelopes"] == 0, what="carol to drop the receipt")
    assert "reported delivered via" in alice.log_text()

    bob.start()  # both online: the message is not delivered a second time
    wait_for(lambda: (alice.contact(bob.peer_id) or {}).get("online"), what="alice and bob")
    send_and_wait(alice, bob, "and now directly")
    mine(bob, alice, TEXT)


def tamper(d: Daemon) -> None:
    """Flip one byte inside the box of every envelope ``d`` holds (it is stopped)."""
    conn = sqlite3.connect(d.home / "p2pchat.db")
    try:
        for envelope_id, raw in conn.execute("SELECT envelope_id, envelope FROM mailbox"):
            outer = cbor2.loads(raw)
            box = bytearray(outer["box"])
            box[len(box) // 2] ^= 0x40
            changed = cbor2.dumps({**outer, "box": bytes(box)}, canonical=True)
            conn.execute(
                "UPDATE mailbox SET envelope = ? WHERE envelope_id = ?", (changed, envelope_id)
            )
        conn.commit()
    finally:
        conn.close()


@pytest.mark.timeout(240)
def test_an_altered_envelope_is_detected_and_the_message_comes_from_another_holder(
    make_daemon: Callable[..., Daemon],
) -> None:
    names = ("alice", "bob", "carol", "dave")
    alice, bob, carol, dave = (make_daemon(n) for n in names)
    everyone = [alice, bob, carol, dave]
    for i, a in enumerate(everyone):
        for b in everyone[i + 1 :]:
            befriend(a, b)
    send_and_wait(alice, bob, "a first message, directly")
    bob.stop()
    wait_for(lambda: not (alice.contact(bob.peer_id) or {}).get("online"), what="bob offline")
    alice.call("messages.send", friend=bob.peer_id, text=TEXT)
    wait_for(lambda: mine(alice, bob, TEXT)["holders"] == 2, what="carol and dave to hold it")
    alice.stop()
    carol.stop()
    tamper(carol)
    carol.start()
    dave.stop()

    bob.start()
    wait_for(lambda: bob.call("status")["mailbox"]["altered"] == 1, what="bob to find it out")
    assert "was altered or forged and is dropped" in bob.log_text()
    assert not any(m["text"] == TEXT for m in bob.history(alice.peer_id))
    wait_for(lambda: held(carol)["held_envelopes"] == 0, what="carol to drop the altered copy")

    dave.start()
    wait_for(
        lambda: any(m["text"] == TEXT for m in bob.history(alice.peer_id)),
        timeout=60,
        what="bob to get the message from dave",
    )
    mine(bob, alice, TEXT)  # once
    assert bob.call("status")["mailbox"]["fetched"] == 1


def dht_rows(daemons: list[Daemon], recipient: str) -> list[str]:
    """The daemons holding an envelope for ``recipient`` as DHT nodes."""
    return [
        d.name
        for d in daemons
        if any(r["recipient"] == recipient and r["via_dht"] for r in mailbox_rows(d))
    ]


@pytest.mark.timeout(300)
def test_with_no_mutual_friend_dht_nodes_near_the_recipient_hold_it(
    make_daemon: Callable[..., Daemon],
) -> None:
    """Ten daemons in one DHT; alice and bob have no friend in common: the nodes nearest
    bob's ID hold alice's message, and the nodes nearest alice's ID bob's receipt."""
    boot = make_daemon("boot")
    others = [make_daemon(n, start=False) for n in ("alice", "bob", *(f"n{i}" for i in range(7)))]
    start_all(others, "--bootstrap", boot.bootstrap_addr())
    alice, bob, *nodes = others
    everyone = [boot, *others]
    wait_for(
        lambda: all(d.call("status")["dht_peers"] >= 3 for d in everyone),
        timeout=60,
        what="every routing table",
    )
    befriend(alice, bob)
    send_and_wait(alice, bob, "hello while we are both here")
    bob.stop()
    wait_for(lambda: not (alice.contact(bob.peer_id) or {}).get("online"), what="bob offline")

    alice.call("messages.send", friend=bob.peer_id, text=TEXT)
    wait_for(lambda: mine(alice, bob, TEXT)["holders"] >= 1, timeout=60, what="DHT holders")
    holders = dht_rows([boot, *nodes], bob.peer_id)
    assert holders, "no DHT node holds it"
    alice.stop()

    bob.start("--bootstrap", boot.bootstrap_addr())
    wait_for(
        lambda: any(m["text"] == TEXT for m in bob.history(alice.peer_id)),
        timeout=90,
        what="bob to fetch the message from the DHT nodes near him",
    )
    mine(bob, alice, TEXT)
    wait_for(
        lambda: dht_rows([boot, *nodes], alice.peer_id),
        timeout=60,
        what="bob's receipt to be held near alice",
    )
    bob.stop()

    alice.start("--bootstrap", boot.bootstrap_addr())
    wait_for(
        lambda: mine(alice, bob, TEXT)["state"] == "delivered",
        timeout=90,
        what="alice to fetch bob's receipt",
    )
