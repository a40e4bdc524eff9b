"""``p2pchat groups ...`` and ``p2pchat chat GROUP``: group chats through the control API
(``groups.*``, docs/API.md)."""

from __future__ import annotations

import argparse
import contextlib
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from p2pchat.api import ApiError, Client

from .live import CHAT_HELP, EventClient, send_typed_lines
from .output import err, fmt_time, out, print_json, short_id, table

EXIT_OK = 0
EXIT_FAIL = 1


def _call(home: Path, method: str, **params: Any) -> Any:
    with Client(home) as client:
        return client.call(method, **params)


def _names(group: Mapping[str, Any]) -> dict[str, str]:
    return {
        str(m["peer_id"]): ("me" if m.get("me") else str(m.get("name") or short_id(m["peer_id"])))
        for m in group.get("members", [])
    }


def fmt_group_message(m: Mapping[str, Any], names: Mapping[str, str]) -> str:
    """``<time>  alice: text`` or ``<time>  me -> text  (held by 2/3)``."""
    when = fmt_time(m.get("sent_at"))
    sender = str(m.get("sender", ""))
    if m.get("direction") == "out":
        held = f"  (held by {m.get('held_by')}/{m.get('members')})"
        return f"{when}  me -> {m.get('text', '')}{held}"
    return f"{when}  {names.get(sender) or short_id(sender)}: {m.get('text', '')}"


def _print_group(result: Mapping[str, Any], args: argparse.Namespace, done: str) -> int:
    group = result["group"]
    if args.json:
        print_json(result)
    else:
        out(f"{done}: {group['name']} ({group['id']}), {len(group['members'])} member(s)")
    return EXIT_OK


def cmd_list(home: Path, args: argparse.Namespace) -> int:
    result = _call(home, "groups.list")
    if args.json:
        print_json(result)
        return EXIT_OK
    groups = result.get("groups") or []
    if not groups:
        out("no groups yet (make one with: p2pchat groups create NAME)")
        return EXIT_OK
    rows = []
    for g in groups:
        members = g.get("members", [])
        online = sum(1 for m in members if m.get("online") and not m.get("me"))
        role = (
            "owner"
            if any(m.get("owner") and m.get("me") for m in members)
            else ("admin" if g.get("admin") else "")
        )
        rows.append(
            [
                str(g["name"]),
                str(g["id"])[:8],
                str(g["status"]),
                f"{len(members)} members",
                f"{online} online",
                role,
            ]
        )
    for line in table(["NAME", "ID", "STATUS", "MEMBERS", "ONLINE", "YOU"], rows):
        out(line)
    return EXIT_OK


def cmd_show(home: Path, args: argparse.Namespace) -> int:
    result = _call(home, "groups.show", group=args.group)
    if args.json:
        print_json(result)
        return EXIT_OK
    g = result["group"]
    out(f"{g['name']} ({g['id']}): {g['status']}, version {g['version']}")
    rows = []
    for m in g["members"]:
        role = "owner" if m.get("owner") else ("admin" if m.get("admin") else "")
        name = "me" if m.get("me") else (m.get("name") or "(not a friend)")
        rows.append(
            [str(name), str(m["peer_id"]), role, "online" if m.get("online") else "offline"]
        )
    for line in table(["MEMBER", "ID", "ROLE", "ONLINE"], rows):
        out(line)
    return EXIT_OK


def cmd_create(home: Path, args: argparse.Namespace) -> int:
    return _print_group(_call(home, "groups.create", name=args.name), args, "created")


def cmd_invite(home: Path, args: argparse.Namespace) -> int:
    result = _call(home, "groups.invite", group=args.group, friend=args.friend)
    return _print_group(result, args, "invited")


def cmd_join(home: Path, args: argparse.Namespace) -> int:
    return _print_group(_call(home, "groups.join", group=args.group), args, "joined")


def cmd_decline(home: Path, args: argparse.Namespace) -> int:
    return _print_group(_call(home, "groups.decline", group=args.group), args, "declined")


def cmd_leave(home: Path, args: argparse.Namespace) -> int:
    return _print_group(_call(home, "groups.leave", group=args.group), args, "left")


def cmd_remove(home: Path, args: argparse.Namespace) -> int:
    result = _call(home, "groups.remove", group=args.group, member=args.member)
    return _print_group(result, args, "removed")


def cmd_rename(home: Path, args: argparse.Namespace) -> int:
    result = _call(home, "groups.rename", group=args.group, name=args.name)
    return _print_group(result, args, "renamed")


def cmd_admin(home: Path, args: argparse.Namespace) -> int:
    result = _call(
        home, "groups.admin", group=args.group, member=args.member, admin=not args.revoke
    )
    return _print_group(result, args, "admins changed")


def cmd_send(home: Path, args: argparse.Namespace) -> int:
    text = " ".join(args.text)
    if not text.strip():
        err("error: nothing to send (the message is empty)")
        return EXIT_FAIL
    params: dict[str, Any] = {"group": args.group, "text": text}
    if args.wait:
        params["wait"] = max(1, round(args.timeout))
    with Client(home, timeout=(args.timeout + 30) if args.wait else 30.0) as client:
        result = client.call("groups.send", **params)
    m = result["message"]
    if args.json:
        print_json(result)
    elif args.wait:
        out(f"{m['id']}  held by {m['held_by']}/{m['members']}")
    else:
        out(str(m["id"]))
    if args.wait and m["held_by"] < m["members"]:
        err(f"error: after {args.timeout:g} s, {m['held_by']} of {m['members']} members hold it")
        return EXIT_FAIL
    return EXIT_OK


def cmd_history(home: Path, args: argparse.Namespace) -> int:
    with Client(home) as client:
        group = client.call("groups.show", group=args.group)["group"]
        result = client.call("groups.history", group=group["id"], limit=args.limit or 50)
    if args.json:
        print_json(result)
        return EXIT_OK
    names = _names(group)
    for m in result.get("messages") or []:
        out(fmt_group_message(m, names))
    return EXIT_OK


def is_group(client: Client, text: str) -> bool:
    """Whether ``text`` names a group (and not a friend too: then it is ambiguous)."""
    try:
        client.call("groups.show", group=text)
    except ApiError as exc:
        if exc.name in ("not_found", "method_not_found"):
            return False
        raise
    return True


def run_group_chat(home: Path, group_text: str, history: int) -> int:
    """Interactive group conversation: live messages, one sent message per input line."""
    with Client(home) as client, EventClient(home) as ev:
        group = client.call("groups.show", group=group_text)["group"]
        gid = str(group["id"])
        ev.subscribe()  # before reading history, so nothing falls between the two
        shown: set[str] = set()
        names = _names(group)
        err(f"chatting in {group['name']} ({len(group['members'])} members); {CHAT_HELP}")
        if history > 0:
            for m in client.call("groups.history", group=gid, limit=history)["messages"]:
                shown.add(str(m["id"]))
                out(fmt_group_message(m, names))
        lost = threading.Event()
        stopping = threading.Event()
        wake_r, wake_w = os.pipe()

        def follow() -> None:
            try:
                while True:
                    event = ev.next_event()
                    kind = event.get("type")
                    if kind == "group.message":
                        m = event.get("message") or {}
                        if (
                            m.get("group") == gid
                            and m.get("direction") == "in"
                            and str(m.get("id")) not in shown
                        ):
                            out(fmt_group_message(m, names))
                    elif kind == "group.updated":
                        g = event.get("group") or {}
                        if g.get("id") == gid:
                            names.update(_names(g))
                            out(
                                f"* {g.get('name')}: {len(g.get('members', []))} members, "
                                f"{g.get('status')}"
                            )
            except (ApiError, OSError, ValueError):
                if not stopping.is_set():
                    lost.set()
                    with contextlib.suppress(OSError):
                        os.write(wake_w, b"x")

        follower = threading.Thread(target=follow, name="p2pchat-events", daemon=True)
        follower.start()
        try:
            failures = send_typed_lines(
                wake_r, lambda line: client.call("groups.send", group=gid, text=line)
            )
        finally:
            stopping.set()
            ev.interrupt()
            follower.join(timeout=2)
            os.close(wake_r)
            os.close(wake_w)
        if lost.is_set():
            err("error: lost the connection to the daemon")
            return 1
        return 1 if failures else 0


def add_parsers(sub: Any, add: Any, common: argparse.ArgumentParser) -> None:
    """``p2pchat groups [ACTION]`` (no action: the list)."""
    p = sub.add_parser("groups", parents=[common], help="group chats")
    p.add_argument("--json", action="store_true", help="print the raw result as JSON")
    p.set_defaults(func=cmd_list)
    gsub = p.add_subparsers(dest="groups_command", metavar="ACTION")
    group_help = "the group's name or ID (a unique beginning of it)"
    add(gsub, "list", cmd_list, "list your groups and invitations")
    p = add(gsub, "show", cmd_show, "a group's members")
    p.add_argument("group", metavar="GROUP", help=group_help)
    p = add(gsub, "create", cmd_create, "make a group (you are its owner)")
    p.add_argument("name", metavar="NAME", help="the group's name")
    p = add(gsub, "invite", cmd_invite, "add a friend to a group (admins)")
    p.add_argument("group", metavar="GROUP", help=group_help)
    p.add_argument("friend", metavar="FRIEND", help="name, ID or ID prefix")
    for name, func, help_text in (
        ("join", cmd_join, "accept an invitation"),
        ("decline", cmd_decline, "refuse an invitation"),
        ("leave", cmd_leave, "leave a group"),
    ):
        p = add(gsub, name, func, help_text)
        p.add_argument("group", metavar="GROUP", help=group_help)
    p = add(gsub, "remove", cmd_remove, "remove a member (admins)")
    p.add_argument("group", metavar="GROUP", help=group_help)
    p.add_argument("member", metavar="MEMBER", help="ID, ID prefix or a friend's name")
    p = add(gsub, "rename", cmd_rename, "rename a group (admins)")
    p.add_argument("group", metavar="GROUP", help=group_help)
    p.add_argument("name", metavar="NAME", help="the new name")
    p = add(gsub, "admin", cmd_admin, "make a member an admin, or --revoke (the owner)")
    p.add_argument("group", metavar="GROUP", help=group_help)
    p.add_argument("member", metavar="MEMBER", help="ID, ID prefix or a friend's name")
    p.add_argument("--revoke", action="store_true", help="no longer an admin")
    p = add(gsub, "send", cmd_send, "send a message to a group")
    p.add_argument("group", metavar="GROUP", help=group_help)
    p.add_argument("text", metavar="TEXT", nargs="+", help="the message")
    p.add_argument("--wait", action="store_true", help="wait until every member has it")
    p.add_argument("--timeout", type=float, default=30.0, metavar="S", help="for --wait")
    p = add(gsub, "history", cmd_history, "show a group's messages")
    p.add_argument("group", metavar="GROUP", help=group_help)
    p.add_argument("--limit", type=int, metavar="N", help="newest N messages (default 50)")
