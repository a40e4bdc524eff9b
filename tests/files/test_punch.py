"""The punched data connection (p2pchat.files.punch) over real sockets, no daemon: where a
punch may be tried, retries after a refusal, the fixed time a failure takes, the challenge and
the bound hello on a punched connection, and (as root) a true TCP simultaneous open between two
stateful firewalls that drop every unsolicited SYN, as NAT routers do."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import trio
import trio.testing

from p2pchat.files import bulk, punch
from tests.netlab import Lab, skip_reason

TID = b"\x33" * 16
KEY = b"\x44" * 32
SUITE = "aes-256-gcm"
ROOT = Path(__file__).resolve().parents[2]


def sealer() -> bulk.RecordSealer:
    return bulk.RecordSealer(SUITE, KEY, TID, 0)


def opener() -> bulk.RecordOpener:
    return bulk.RecordOpener(SUITE, KEY, TID, 0, 1000)


def test_punch_only_over_a_direct_connection_to_another_host() -> None:
    assert punch.punchable("198.51.100.2", False)
    assert punch.punchable("2001:db8::7", False)
    assert not punch.punchable("198.51.100.2", True)  # relayed: the IP is the relay's
    assert not punch.punchable(None, False)
    assert not punch.punchable("127.0.0.1", False)  # loopback: no NAT to open
    assert not punch.punchable("::1", False)
    assert not punch.punchable("not an ip", False)
    # Never this machine, however it is written or reached (a proxy showing as our own IP).
    assert not punch.punchable("::ffff:127.0.0.1", False)
    assert not punch.punchable("10.0.0.5", False, own_ips=("10.0.0.5",))
    assert punch.punchable("10.0.0.6", False, own_ips=("10.0.0.5",))  # a LAN peer
    assert not punch.punchable("0.0.0.0", False)
    assert not punch.punchable("224.0.0.251", False)


async def test_a_punch_port_is_held_and_reused_for_every_attempt() -> None:
    with punch.PunchPort("127.0.0.1") as held:
        assert held.port > 0
        # Nobody can connect to it: bound, not listening.
        with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
            probe.connect(("127.0.0.1", held.port))
        first = held.take()
        assert first.getsockname()[1] == held.port
        first.close()
        again = held.take()  # a fresh socket on the same port after a failed attempt
        assert again.getsockname()[1] == held.port
        again.close()


async def test_a_refused_attempt_is_retried_from_the_same_port() -> None:
    """The other side's port refuses until it is ready (its host answers the SYN with a
    reset); the open goes on trying, from the same local port, until it gets through."""
    with socket.socket() as spot:
        spot.bind(("127.0.0.1", 0))
        target = spot.getsockname()[1]
    peers: list[int] = []
    with punch.PunchPort("127.0.0.1") as held:
        async with trio.open_nursery() as nursery:

            async def appear_later() -> None:
                await trio.sleep(0.3)
                lst = trio.socket.socket()
                lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                await lst.bind(("127.0.0.1", target))
                lst.listen(1)
                conn, addr = await lst.accept()
                peers.append(addr[1])
                conn.close()
                lst.close()

            nursery.start_soon(appear_later)
            with trio.fail_after(5):
                sock = await punch.simultaneous_open(held, ("127.0.0.1", target))
            assert sock.getsockname()[1] == held.port
            sock.close()
    assert peers == [held.port]


async def test_a_failed_punch_takes_the_full_time_whatever_the_cause(
    mock_clock: trio.testing.MockClock,
) -> None:
    """Nobody at the port, or somebody with a challenge that does not prove the session key:
    both answer None at PUNCH_TIMEOUT, so the timing says nothing about the port."""
    mock_clock.autojump_threshold = 0
    with socket.socket() as spot:
        spot.bind(("127.0.0.1", 0))
        nobody = spot.getsockname()[1]
    with punch.PunchPort("127.0.0.1") as held:
        started = trio.current_time()
        assert await punch.punch_as_sender(held, ("127.0.0.1", nobody), 30, sealer()) is None
        assert trio.current_time() - started == pytest.approx(punch.PUNCH_TIMEOUT, abs=0.01)

    mock_clock.autojump_threshold = 0.1  # the real challenge gets its time before a jump
    lst = trio.socket.socket()
    await lst.bind(("127.0.0.1", 0))
    lst.listen(1)
    port = lst.getsockname()[1]
    wrong = bulk.RecordOpener(SUITE, b"\x55" * 32, TID, 0, 1000)

    async def wrong_challenge() -> None:
        conn, _ = await lst.accept()
        challenge, _nonce = wrong.challenge()
        await conn.send(challenge)
        await trio.sleep(60)

    with punch.PunchPort("127.0.0.1") as held:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(wrong_challenge)
            started = trio.current_time()
            assert await punch.punch_as_sender(held, ("127.0.0.1", port), 30, sealer()) is None
            assert trio.current_time() - started == pytest.approx(punch.PUNCH_TIMEOUT, abs=0.01)
            nursery.cancel_scope.cancel()
    lst.close()


async def test_the_punched_connection_is_proven_like_the_direct_one() -> None:
    """Receiver and sender meet (here the sender's end listens, standing in for the open);
    the sender checks the challenge and the receiver takes only a hello bound to it. A hello
    captured from another connection is refused."""
    lst = trio.socket.socket()
    await lst.bind(("127.0.0.1", 0))
    lst.listen(2)
    port = lst.getsockname()[1]
    s = sealer()
    got: list[socket.socket] = []

    async def sender_side() -> None:
        conn, _ = await lst.accept()
        with trio.fail_after(5):
            data = b""
            while len(data) < bulk.CHALLENGE_BYTES:
                data += await conn.recv(bulk.CHALLENGE_BYTES - len(data))
        nonce = s.answer_challenge(data)
        await conn.send(s.hello(nonce))
        await trio.sleep(0.2)
        conn.close()

    with punch.PunchPort("127.0.0.1") as held:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender_side)
            with trio.fail_after(5):
                got.append(await punch.punch_as_receiver(held, ("127.0.0.1", port), opener(), 30))
    assert got[0].gettimeout() == 30
    got[0].close()

    # A replayed hello (bound to another connection's nonce) is refused.
    other = sealer()
    stale_hello = other.hello(b"\x00" * 16)

    async def replayer() -> None:
        conn, _ = await lst.accept()
        await conn.recv(bulk.CHALLENGE_BYTES)
        await conn.send(stale_hello)
        await trio.sleep(0.2)
        conn.close()

    with punch.PunchPort("127.0.0.1") as held:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(replayer)
            with trio.fail_after(5), pytest.raises(bulk.BulkError):
                await punch.punch_as_receiver(held, ("127.0.0.1", port), opener(), 30)
    lst.close()


# --- a true simultaneous open between two stateful firewalls (root) ---------------------------

_why_not = skip_reason()

_PUNCHER = textwrap.dedent(
    """
    import json, sys, trio
    from p2pchat.files import bulk, punch

    role, remote_ip = sys.argv[1], sys.argv[2]
    TID, KEY = b"\\x33" * 16, b"\\x44" * 32

    async def main():
        with punch.PunchPort(remote_ip) as held:
            print(json.dumps({"port": held.port}), flush=True)
            their_port = int(sys.stdin.readline())
            remote = (remote_ip, their_port)
            if role == "sender":
                s = bulk.RecordSealer("aes-256-gcm", KEY, TID, 0)
                got = await punch.punch_as_sender(held, remote, 30, s)
                if got is None:
                    print(json.dumps({"ok": False}), flush=True)
                    return
                sock, nonce = got
                sock.sendall(s.hello(nonce))
                peer = sock.getpeername()
                sock.close()
            else:
                o = bulk.RecordOpener("aes-256-gcm", KEY, TID, 0, 1000)
                with trio.fail_after(punch.PUNCH_TIMEOUT):
                    sock = await punch.punch_as_receiver(held, remote, o, 30)
                peer = sock.getpeername()
                sock.close()
            print(json.dumps({"ok": True, "peer": list(peer[:2])}), flush=True)

    trio.run(main)
    """
)


@pytest.mark.timeout(60)
@pytest.mark.skipif(_why_not is not None, reason=_why_not or "")
def test_two_firewalls_that_drop_unsolicited_syns_are_punched_through() -> None:
    """Hosts a and b each drop every inbound TCP packet that is not part of a connection they
    opened (a NAT router's filter). A plain connect either way fails; the two sides' punch
    opens one connection, and the challenge and hello cross it."""
    lab = Lab(tag=f"{os.getpid() % 100000}p")
    try:
        a, b = lab.ns("a"), lab.ns("b")
        lab.veth(a, "eth0", b, "eth0")
        for ns, ip in ((a, "10.0.7.2"), (b, "10.0.7.3")):
            lab.sh(
                ns,
                f"""
                ip addr add {ip}/24 dev eth0 && ip link set eth0 up
                iptables -A INPUT -i eth0 -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
                iptables -A INPUT -i eth0 -j DROP
                """,
            )
        # The firewalls do drop: a listener in b is not reachable from a.
        probe = subprocess.run(
            [*lab.prefix(a), sys.executable, "-c", _CONNECT_PROBE, "10.0.7.3", "9"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert probe.stdout.strip() == "timeout", probe.stdout + probe.stderr

        def puncher(ns: str, role: str, remote: str) -> subprocess.Popen[str]:
            return subprocess.Popen(
                [*lab.prefix(ns), sys.executable, "-c", _PUNCHER, role, remote],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )

        sender = puncher(a, "sender", "10.0.7.3")
        receiver = puncher(b, "receiver", "10.0.7.2")
        try:
            assert sender.stdout is not None and receiver.stdout is not None
            assert sender.stdin is not None and receiver.stdin is not None
            sender_port = json.loads(sender.stdout.readline())["port"]
            receiver_port = json.loads(receiver.stdout.readline())["port"]
            # As in a session: the sender names its port first and starts at once; the
            # receiver starts when that reaches it.
            sender.stdin.write(f"{receiver_port}\n")
            sender.stdin.flush()
            receiver.stdin.write(f"{sender_port}\n")
            receiver.stdin.flush()
            sent = json.loads(sender.stdout.readline() or "{}")
            received = json.loads(receiver.stdout.readline() or "{}")
            assert sent == {"ok": True, "peer": ["10.0.7.3", receiver_port]}, (
                sender.stderr.read() if sender.stderr else ""
            )
            assert received == {"ok": True, "peer": ["10.0.7.2", sender_port]}, (
                receiver.stderr.read() if receiver.stderr else ""
            )
        finally:
            for p in (sender, receiver):
                p.kill()
                p.wait(timeout=10)
    finally:
        lab.close()


_CONNECT_PROBE = textwrap.dedent(
    """
    import socket, subprocess, sys
    ip, port = sys.argv[1], int(sys.argv[2])
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect((ip, port))
        print("connected")
    except socket.timeout:
        print("timeout")
    except OSError as exc:
        print(type(exc).__name__)
    """
)
