"""The pieces of p2pchat.calls.media that need no peer connection: candidates derived from libp2p's
observed addresses, SDP rewriting, and the trio <-> asyncio bridge."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import pytest
import trio

from p2pchat.calls.media import AsyncioThread, host_candidates, reflexive_candidates, with_reflexive
from p2pchat.config import ConfigError, ice_server_problem, ice_server_tuples, load_config

SDP = "\r\n".join(
    [
        "v=0",
        "o=- 1 1 IN IP4 0.0.0.0",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0 1",
        "m=audio 40000 UDP/TLS/RTP/SAVPF 96",
        "c=IN IP4 10.0.1.2",
        "a=mid:0",
        "a=candidate:abc 1 udp 2130706431 10.0.1.2 40000 typ host",
        "a=candidate:def 1 udp 2130706431 192.168.5.5 40001 typ host",
        "a=candidate:ghi 1 udp 2130706431 fe80::1 40002 typ host",
        "a=candidate:jkl 1 tcp 2130706431 10.0.1.2 9 typ host tcptype active",
        "a=end-of-candidates",
        "m=video 40000 UDP/TLS/RTP/SAVPF 97",
        "a=mid:1",
        "a=candidate:abc 1 udp 2130706431 10.0.1.2 40000 typ host",
        "a=end-of-candidates",
        "",
    ]
)


def test_only_ipv4_udp_host_candidates_are_used() -> None:
    assert host_candidates(SDP) == [
        ("abc", "10.0.1.2", 40000, 2130706431),
        ("def", "192.168.5.5", 40001, 2130706431),
        ("abc", "10.0.1.2", 40000, 2130706431),
    ]


def test_reflexive_candidates_pair_public_ips_with_host_ports() -> None:
    candidates = reflexive_candidates(SDP, ["198.51.100.1"])
    assert candidates == [
        "candidate:abcx 1 udp 1694498815 198.51.100.1 40000 typ srflx raddr 10.0.1.2 rport 40000",
        "candidate:defx 1 udp 1694498815 198.51.100.1 40001 typ srflx raddr 192.168.5.5 "
        "rport 40001",
    ]
    # Below host priority, as ICE orders candidate types.
    assert all(int(c.split()[3]) < 2130706431 for c in candidates)
    # An IP we already have a host candidate for adds nothing; no IPs, nothing.
    assert reflexive_candidates(SDP, ["10.0.1.2"]) == []
    assert reflexive_candidates(SDP, []) == []


def test_reflexive_candidates_go_into_every_media_section_before_the_end_marker() -> None:
    rewritten = with_reflexive(SDP, ["198.51.100.1"])
    lines = rewritten.split("\r\n")
    ends = [i for i, line in enumerate(lines) if line == "a=end-of-candidates"]
    assert len(ends) == 2
    assert (
        lines[ends[0] - 2].startswith("a=candidate:abcx")
        and "198.51.100.1 40000" in lines[ends[0] - 2]
    )
    assert lines[ends[1] - 1].startswith("a=candidate:abcx")
    assert with_reflexive(SDP, []) == SDP
    # Nothing else changed.
    assert [line for line in lines if "srflx" not in line] == SDP.split("\r\n")


@pytest.mark.trio
@pytest.mark.timeout(30)
async def test_the_bridge_runs_coroutines_on_its_thread_and_stops_cleanly() -> None:
    before = threading.active_count()
    rtc = AsyncioThread()
    assert threading.active_count() == before + 1

    async def where() -> str:
        await asyncio.sleep(0.01)
        return threading.current_thread().name

    assert await rtc.call(where()) == "p2pchat-rtc"

    async def fails() -> None:
        raise ValueError("from asyncio")

    with pytest.raises(ValueError, match="from asyncio"):
        await rtc.call(fails())

    cancelled = []

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    with trio.move_on_after(0.2):
        await rtc.call(forever())
    with trio.fail_after(5):  # the asyncio side sees the cancellation on its own thread
        while not cancelled:
            await trio.sleep(0.01)
    assert cancelled == [True]  # cancelling the trio side cancelled the asyncio side
    await rtc.stop()
    assert threading.active_count() == before
    assert not any(t.name == "p2pchat-rtc" for t in threading.enumerate())


@pytest.mark.parametrize(
    ("entry", "ok"),
    [
        ("stun:stun.example.org:3478", True),
        ("stun:[2001:db8::1]:3478", True),
        (
            {
                "urls": "turn:turn.example.org:3478?transport=udp",
                "username": "u",
                "credential": "p",
            },
            True,
        ),
        ("turn:turn.example.org:3478", False),  # TURN without credentials cannot work
        ("stuns:stun.example.org", False),  # aiortc ignores it: refuse rather than surprise
        ("stun:", False),
        ("http://stun.example.org", False),
        ({"urls": "stun:x", "password": "p"}, False),
        (42, False),
    ],
)
def test_ice_server_entries_are_checked(entry: object, ok: bool) -> None:
    assert (ice_server_problem(entry) is None) is ok


def test_call_settings_load_and_default_to_no_servers(tmp_path: Path) -> None:
    cfg = load_config(tmp_path)
    assert cfg.ice_servers == [] and cfg.call_auto_answer is False
    (tmp_path / "config.json").write_text(
        json.dumps({"ice_servers": ["stun:a.example:3478"], "call_ring_timeout": 5})
    )
    cfg = load_config(tmp_path)
    assert ice_server_tuples(cfg.ice_servers) == (("stun:a.example:3478", "", ""),)
    assert cfg.call_ring_timeout == 5
    for bad in ({"ice_servers": ["turn:x"]}, {"call_ring_timeout": 0}, {"call_record_dir": "rel"}):
        (tmp_path / "config.json").write_text(json.dumps(bad))
        with pytest.raises(ConfigError):
            load_config(tmp_path)
