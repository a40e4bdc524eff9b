"""Call commands: ``call``, ``answer``, ``hangup`` and ``calls`` (with ``--watch`` for live
stats). They only speak the control API (docs/API.md, ``calls.*``)."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from p2pchat.api import Client

from .output import out, print_json


def _call(home: Path, method: str, **params: Any) -> Any:
    with Client(home) as client:
        return client.call(method, **params)


def _media_params(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if getattr(args, "source", None):
        source = args.source
        params["source"] = source if source in ("test", "camera") else os.path.abspath(source)
    if getattr(args, "record", None):
        params["record"] = os.path.abspath(args.record)
    return params


def describe(call: dict[str, Any]) -> str:
    kind = "video" if call.get("video") else "audio"
    if call.get("kind") == "group":
        text = f"group {kind} call in {call.get('group', '?')}: {call.get('state', '?')}"
        joined = [p for p in call.get("participants") or [] if p.get("state") == "active"]
        if call.get("state") != "ended":
            text += f", {len(joined)} other{'' if len(joined) == 1 else 's'} connected"
        if call.get("reason"):
            text += f" ({call['reason']}, by {call.get('ended_by') or '?'})"
        return text
    who = call.get("peer_id", "?")
    arrow = "to" if call.get("direction") == "out" else "from"
    text = f"{kind} call {arrow} {who}: {call.get('state', '?')}"
    if call.get("reason"):
        text += f" ({call['reason']}, by {call.get('ended_by') or '?'})"
    return text


def cmd_call(home: Path, args: argparse.Namespace) -> int:
    params = {"friend": args.friend, "audio_only": bool(args.audio_only), **_media_params(args)}
    result = _call(home, "calls.start", **params)
    _print_call(args, result)
    if not args.json:
        out("see it with: p2pchat calls --watch; end it with: p2pchat hangup")
    return 0


def cmd_answer(home: Path, args: argparse.Namespace) -> int:
    params: dict[str, Any] = _media_params(args)
    if args.friend:
        params["friend"] = args.friend
    _print_call(args, _call(home, "calls.answer", **params))
    return 0


def cmd_hangup(home: Path, args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"friend": args.friend} if args.friend else {}
    _print_call(args, _call(home, "calls.hangup", **params))
    return 0


def _print_call(args: argparse.Namespace, result: dict[str, Any]) -> None:
    """A call action's result: JSON with ``--json``, else one line describing the call."""
    if args.json:
        print_json(result)
    else:
        out(describe(result["call"]))


def _show(calls: list[dict[str, Any]]) -> None:
    if not calls:
        out("no calls")
    for call in calls:
        out(describe(call))
        stats = call.get("stats") or {}
        if call.get("kind") == "group":
            _show_participants(call, stats)
            continue
        if not stats:
            continue
        _show_stats(stats, "  ")


def _show_participants(call: dict[str, Any], stats: dict[str, Any]) -> None:
    """One block per participant of a group call: its link's state and stats."""
    per_peer = stats.get("participants") or {}
    for member in call.get("participants") or []:
        peer = member.get("peer_id", "?")
        out(f"  {peer}: {member.get('state', '?')}")
        if per_peer.get(peer):
            _show_stats(per_peer[peer], "    ")
    encoder = stats.get("encoder") or {}
    if encoder.get("encode_once"):
        out(
            f"  encoded once for all: {encoder.get('frames_encoded', 0)} frames, "
            f"{encoder.get('encode_ms_per_frame', '?')} ms each"
        )


def _show_stats(stats: dict[str, Any], indent: str) -> None:
    path = stats.get("path") or {}
    out(
        f"{indent}codecs {', '.join(stats.get('codecs') or []) or '?'}; "
        f"{stats.get('fps', '?')} fps; {stats.get('kbps_in', '?')} kbit/s in; "
        f"rtt {stats.get('video_rtt_ms', stats.get('audio_rtt_ms', '?'))} ms; "
        f"loss {stats.get('video_loss', stats.get('audio_loss', '?'))}"
    )
    if path:
        relayed = "relayed" if path.get("relayed") else "direct"
        out(f"{indent}path {path.get('local')} -> {path.get('remote')} ({relayed})")
    if stats.get("dtls"):
        out(f"{indent}DTLS {stats['dtls']}, SRTP {'on' if stats.get('srtp') else 'off'}")


def cmd_calls(home: Path, args: argparse.Namespace) -> int:
    while True:
        result = _call(home, "calls.list")
        if args.json:
            print_json(result)
        else:
            _show(result.get("calls") or [])
        if not args.watch:
            return 0
        time.sleep(1.0)
        if not args.json:
            out("")
