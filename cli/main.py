"""``p2pchat``: the command-line client of the p2pchat daemon.

Everything goes through the control API (docs/API.md) with :class:`p2pchat.api.Client`; this
package never imports the daemon, libp2p or trio, so commands start in a few tens of ms. Only
``init`` touches the key file (and imports the crypto code lazily).

Exit codes: 0 success, 1 failure (including errors from the daemon), 2 daemon not running or
bad usage, 3 ``daemon status`` when not running, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from p2pchat import paths
from p2pchat.api import ApiError, Client, DaemonNotRunning

from . import calls, daemonctl, files, groups, live, service
from .output import (
    contact_label,
    contact_name,
    err,
    fmt_duration,
    fmt_message,
    out,
    print_json,
    setup_stdio,
    short_id,
    table,
)

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_NO_DAEMON = 2
EXIT_INTERRUPTED = 130

Handler = Callable[[Path, argparse.Namespace], int]


# --- init and id (work without a daemon) ---------------------------------------------------


def _recorded_peer_id(key_file: Path) -> tuple[str | None, bool]:
    """(ID recorded in the key file, whether the key is encrypted), without any crypto.

    The key file stores the public ID in clear even when the seed is sealed.
    """
    try:
        doc = json.loads(key_file.read_text())
    except (OSError, ValueError):
        return None, False
    if not isinstance(doc, dict):
        return None, False
    pid = doc.get("peer_id")
    return (pid if isinstance(pid, str) else None), "sealed_seed" in doc


def cmd_init(home: Path, args: argparse.Namespace) -> int:
    """Create the private home directory and a fresh identity; never overwrite one."""
    from p2pchat import identity as ident  # lazy: pulls in the crypto libraries

    passphrase = paths.read_passphrase(args.passphrase_file)
    paths.ensure_home(home)
    key_file = home / paths.KEY_FILE
    if key_file.exists():
        if passphrase or not ident.key_file_is_encrypted(key_file):
            try:
                peer_id = ident.load_identity(key_file, passphrase).peer_id
            except ident.IdentityError as exc:
                err(f"error: an identity already exists at {key_file} but cannot be read: {exc}")
                return EXIT_FAIL
            out(peer_id)
            err(f"note: an identity already exists at {key_file}; it was not changed")
        else:
            recorded, _ = _recorded_peer_id(key_file)
            if recorded:
                out(recorded)
            err(
                f"note: an identity already exists at {key_file} (passphrase-protected); "
                "it was not changed"
            )
        return EXIT_OK
    identity = ident.Identity.generate()
    ident.save_identity(identity, key_file, passphrase)
    out(identity.peer_id)
    protected = "passphrase-protected" if passphrase else "not passphrase-protected"
    err(f"created a new identity in {key_file} ({protected})")
    err(f"start the daemon with: p2pchat --home {home} daemon start")
    return EXIT_OK


def cmd_id(home: Path, args: argparse.Namespace) -> int:
    """Show the ID and friend code; fall back to the key file when the daemon is down."""
    try:
        with Client(home) as client:
            result = client.call("invite.rotate" if args.new_invite else "identity.get")
    except DaemonNotRunning:
        peer_id, _ = _recorded_peer_id(home / paths.KEY_FILE)
        if peer_id is None or args.new_invite:
            raise
        if args.json:
            print_json({"peer_id": peer_id, "friend_code": None, "addrs": [], "running": False})
        else:
            out(f"ID: {peer_id}")
        err(
            "note: the daemon is not running, so no friend code with addresses is available "
            f"(start it with: p2pchat --home {home} daemon start)"
        )
        return EXIT_OK
    if args.json:
        print_json(result)
        return EXIT_OK
    out(f"ID:          {result.get('peer_id', '?')}")
    out(f"friend code: {result.get('friend_code', '?')}")
    if args.new_invite:
        err("note: new invite made; friend codes given out before now take the slower path")
    addrs = result.get("addrs") or []
    out("addresses:" + ("" if addrs else "   (none)"))
    for addr in addrs:
        out(f"  {addr}")
    return EXIT_OK


# --- simple API commands -------------------------------------------------------------------


def _call(home: Path, method: str, **params: Any) -> Any:
    with Client(home) as client:
        return client.call(method, **params)


def cmd_status(home: Path, args: argparse.Namespace) -> int:
    st = _call(home, "status")
    if args.json:
        print_json(st)
        return EXIT_OK
    out(f"ID:               {st.get('peer_id', '?')}")
    out(f"version:          {st.get('version', '?')}")
    out(f"uptime:           {fmt_duration(st.get('uptime_s'))}")
    out(f"friends online:   {st.get('friends_online', 0)} of {st.get('friends', 0)}")
    out(f"pending requests: {st.get('pending_requests', 0)}")
    out(f"outbox:           {st.get('outbox', 0)} message(s) waiting for delivery")
    out(f"transfers:        {st.get('transfers_active', 0)} open (see: p2pchat transfers)")
    quotas = st.get("quotas") or {}
    for q in quotas.get("refusing") or []:
        parts = [f"{n} {kind}" for kind, n in (q.get("refused") or {}).items() if n]
        if q.get("paced_messages"):
            parts.append(f"{q['paced_messages']} messages paced")
        if q.get("cooldown_s"):
            closed = q.get("connections_closed") or 0
            tail = f", {closed} reconnections closed" if closed else ""
            parts.append(f"disconnected for {fmt_duration(q['cooldown_s'])} more (cool-down{tail})")
        counts = ", ".join(parts)
        out(
            f"refusing:         {q.get('peer_id', '?')}: {counts or q.get('code', '?')}"
            f" ({q.get('reason', '')})"
        )
    for q in quotas.get("refused_by") or []:
        out(f"refused by:       {q.get('peer_id', '?')}: {q.get('code')} ({q.get('reason', '')})")
    out(f"home:             {st.get('home') or home}")
    at_rest = st.get("at_rest", "?")
    why = {
        "encrypted": " (SQLCipher, keyed by the passphrase-protected identity)",
        "plain": " (no passphrase: only file permissions protect history)",
    }
    out(f"history at rest:  {at_rest}{why.get(at_rest, '')}")
    out(f"connections:      {st.get('connections', 0)} peer(s) (see: p2pchat peers)")
    groups_st = st.get("groups") or {}
    if groups_st.get("groups"):
        out(
            f"groups:           {groups_st.get('joined', 0)} joined of {groups_st['groups']}, "
            f"{groups_st.get('streams', 0)} member stream(s) open (see: p2pchat groups)"
        )
    call = st.get("call")
    if call:
        from .calls import describe

        out(f"call:             {describe(call)}")
    reach = st.get("reachability", "?")
    how = "reachable from outside" if reach == "public" else "behind a NAT"
    out(f"reachability:     {reach} ({how})")
    ready = st.get("dht_ready_s")
    out(
        f"DHT:              {st.get('dht_mode', '?')} on {st.get('dht_protocol', '?')}, "
        f"{st.get('dht_peers', 0)} peer(s) in the routing table"
        + ("" if ready is not None else " (not joined yet)")
    )
    out(
        "address record:   "
        + (f"published (#{st['record_seq']})" if st.get("record_seq") else "not published yet")
    )
    relays = st.get("relays") or []
    serving = "relaying for others; " if st.get("relay_service") else ""
    out(f"relays:           {serving}" + (", ".join(relays) if relays else "no reservations"))
    out(f"LAN discovery:    {'on (mDNS)' if st.get('mdns') else 'off'}")
    web_url = st.get("web_url")
    out(f"web:              {web_url + '  (log in with: p2pchat web)' if web_url else 'off'}")
    addrs = st.get("listen_addrs") or []
    out("listening on:" + ("     (nothing)" if not addrs else ""))
    for addr in addrs:
        out(f"  {addr}")
    return EXIT_OK


def cmd_web(home: Path, args: argparse.Namespace) -> int:
    """Print the web app's login link (a new token first with ``--new-token``)."""
    result = _call(home, "web.new_token" if args.new_token else "web.info")
    if args.json:
        print_json(result)
        return EXIT_OK
    if not result.get("enabled"):
        if args.new_token:
            err("the token was renewed")
        err(
            f"error: {result.get('error') or 'the web app is off'} (turn it on with "
            f'"web": true in {home / paths.CONFIG_FILE}, then restart the daemon)'
        )
        return EXIT_FAIL
    login_url = str(result.get("login_url"))
    out(login_url)
    if args.new_token:
        err("note: a new token: links printed before, and pages opened with them, stop working")
    err("note: this link opens your p2pchat: keep it to yourself")
    if args.open:
        import webbrowser

        if not webbrowser.open(login_url):
            err("note: no browser could be started here; open the link above by hand")
    return EXIT_OK


def cmd_peers(home: Path, args: argparse.Namespace) -> int:
    result = _call(home, "peers.list")
    if args.json:
        print_json(result)
        return EXIT_OK
    peers = result.get("peers") or []
    if not peers:
        out("no connections")
    for peer in peers:
        for conn in peer.get("connections") or []:
            out(f"{peer.get('peer_id', '?')}  {conn.get('kind', '?'):8}  {conn.get('addr', '')}")
    return EXIT_OK


def cmd_lookup(home: Path, args: argparse.Namespace) -> int:
    result = _call(home, "dht.find", peer_id=args.id)
    if args.json:
        print_json(result)
        return EXIT_OK
    how = "signed address record" if result.get("source") == "record" else "DHT peer routing"
    out(f"{result.get('peer_id')}: found by {how} in {result.get('lookup_ms', 0):.0f} ms")
    for addr in result.get("addrs") or []:
        out(f"  {addr}")
    return EXIT_OK


def _print_contact_result(args: argparse.Namespace, result: Any, what: str) -> int:
    if args.json:
        print_json(result)
    else:
        contact = result.get("contact") if isinstance(result, dict) else None
        if isinstance(contact, dict):
            out(f"{what}: {contact_label(contact)} [{contact.get('state', '?')}]")
        else:
            pid = result.get("peer_id", "") if isinstance(result, dict) else ""
            out(f"{what}: {pid}")
    return EXIT_OK


def cmd_friends_add(home: Path, args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"id": args.id}
    if args.name is not None:
        params["name"] = args.name
    if args.message is not None:
        params["message"] = args.message
    result = _call(home, "friends.add", **params)
    if args.json:
        print_json(result)
        return EXIT_OK
    contact = result.get("contact") or {}
    label = contact_label(contact)
    state = contact.get("state")
    if state == "friend":
        out(f"{label} is your friend")
    elif state == "outgoing":
        out(f"friend request sent to {label}")
        err("note: it is delivered when they are reachable, and retried until then")
    else:
        out(f"{label}: {state}")
    return EXIT_OK


def _print_contacts(
    args: argparse.Namespace,
    result: dict[str, Any],
    key: str,
    empty: str,
    columns: list[str],
    cells: Callable[[dict[str, Any]], list[str]],
) -> bool:
    """Print a list of contacts as a table (or JSON); False if there were none."""
    if args.json:
        print_json(result)
        return True
    contacts = result.get(key) or []
    if not contacts:
        out(empty)
        return False
    rows = [[contact_name(c), short_id(str(c.get("peer_id", ""))), *cells(c)] for c in contacts]
    for line in table(["NAME", "ID", *columns], rows):
        out(line)
    return True


def cmd_friends_list(home: Path, args: argparse.Namespace) -> int:
    from .output import fmt_unread

    _print_contacts(
        args,
        _call(home, "friends.list"),
        "contacts",
        "no friends yet (add one with: p2pchat friends add ID_OR_CODE)",
        ["STATE", "ONLINE", "OUTBOX", "", ""],  # "verified", "3 unread": blank when not
        lambda c: [
            str(c.get("state", "?")),
            "online" if c.get("online") else "offline",
            str(c.get("outbox", 0)),
            "verified" if c.get("verified") else "",
            fmt_unread(c),
        ],
    )
    return EXIT_OK


def cmd_verify(home: Path, args: argparse.Namespace) -> int:
    """Show the safety number with a friend; ``--confirm`` / ``--revoke`` set the mark."""
    if args.confirm or args.revoke:
        result = _call(home, "friends.verify", friend=args.friend, verified=bool(args.confirm))
    else:
        result = _call(home, "friends.verification", friend=args.friend)
    if args.json:
        print_json(result)
        return EXIT_OK
    v = result.get("verification") or {}
    contact = result.get("contact")
    who = contact_label(contact) if isinstance(contact, dict) else args.friend
    groups = str(v.get("safety_number", "")).split()
    out(f"Safety number with {who}:")
    out("")
    for i in range(0, len(groups), 4):
        out("    " + " ".join(groups[i : i + 4]))
    out("")
    if v.get("verified"):
        out("Status: verified (you confirmed that your friend's p2pchat shows the same number)")
    elif v.get("changed"):
        out(
            "Status: CHANGED since you verified it: your friend's end-to-end keys are not the"
            " ones you verified (a reinstall, or someone else using their identity)."
        )
        out("Compare the number again, in person or on a call you trust, before trusting it.")
        out(f"If it is the same: p2pchat verify {args.friend} --confirm")
    else:
        out("Status: not verified")
        out(
            "Compare it with the number your friend's p2pchat shows for you, in person or on"
            " a call you trust."
        )
        out(f"If it is the same: p2pchat verify {args.friend} --confirm")
    return EXIT_OK


def cmd_friends_remove(home: Path, args: argparse.Namespace) -> int:
    return _print_contact_result(args, _call(home, "friends.remove", friend=args.friend), "removed")


def cmd_friends_block(home: Path, args: argparse.Namespace) -> int:
    """Block a contact by name/ID, or (``id`` param) a peer that is not a contact."""
    try:
        result = _call(home, "friends.block", friend=args.friend)
    except ApiError as exc:
        if exc.name != "not_found" or not _looks_like_id(args.friend):
            raise
        result = _call(home, "friends.block", id=args.friend)
    return _print_contact_result(args, result, "blocked")


def _looks_like_id(text: str) -> bool:
    t = text.strip()
    return t.startswith("12D3KooW") or t.lower().startswith("p2pchat:")


def cmd_friends_unblock(home: Path, args: argparse.Namespace) -> int:
    return _print_contact_result(
        args, _call(home, "friends.unblock", friend=args.friend), "unblocked"
    )


def cmd_friends_rename(home: Path, args: argparse.Namespace) -> int:
    result = _call(home, "friends.rename", friend=args.friend, name=args.name)
    return _print_contact_result(args, result, "renamed")


def cmd_requests(home: Path, args: argparse.Namespace) -> int:
    shown = _print_contacts(
        args,
        _call(home, "requests.list"),
        "requests",
        "no pending friend requests",
        ["MESSAGE"],
        lambda c: [str(c.get("request_text") or "")],
    )
    if shown and not args.json:
        err("accept with: p2pchat accept NAME_OR_ID   decline with: p2pchat decline NAME_OR_ID")
    return EXIT_OK


def cmd_accept(home: Path, args: argparse.Namespace) -> int:
    result = _call(home, "requests.accept", friend=args.friend)
    return _print_contact_result(args, result, "accepted")


def cmd_decline(home: Path, args: argparse.Namespace) -> int:
    result = _call(home, "requests.decline", friend=args.friend)
    return _print_contact_result(args, result, "declined")


def _message_text(words: list[str]) -> str:
    """The message from the arguments, or from stdin when it is a single ``-``."""
    if words == ["-"]:
        return sys.stdin.read().rstrip("\r\n")
    return " ".join(words)


def cmd_send(home: Path, args: argparse.Namespace) -> int:
    text = _message_text(args.text)
    if not text.strip():
        err("error: nothing to send (the message is empty)")
        return EXIT_FAIL
    if args.wait:
        return live.send_and_wait(home, args.friend, text, args.timeout, args.json)
    result = _call(home, "messages.send", friend=args.friend, text=text)
    if args.json:
        print_json(result)
    else:
        out(str(result["message"]["id"]))
    return EXIT_OK


def cmd_history(home: Path, args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"friend": args.friend}
    if args.limit is not None:
        params["limit"] = args.limit
    if args.before is not None:
        params["before"] = args.before
    with Client(home) as client:
        if args.before is None:
            # Showing the newest messages opens the conversation: it is read. Marked first,
            # so a message arriving meanwhile is never marked read without being shown.
            live.mark_read(client, args.friend)
        result = client.call("messages.history", **params)
        if args.json:
            print_json(result)
            return EXIT_OK
        contacts = client.call("friends.list").get("contacts") or []
    names = {str(c.get("peer_id")): contact_name(c) for c in contacts}
    for message in result.get("messages") or []:
        out(fmt_message(message, names))
    return EXIT_OK


def cmd_chat(home: Path, args: argparse.Namespace) -> int:
    with Client(home) as client:
        group = groups.is_group(client, args.friend)
        if group:
            try:  # a name that is a friend's too is ambiguous, never a guess
                client.call("messages.history", friend=args.friend, limit=1)
                err(f"error: {args.friend!r} names a friend and a group; use an ID instead")
                return EXIT_FAIL
            except ApiError as exc:
                if exc.name != "not_found":
                    raise
    if group:
        return groups.run_group_chat(home, args.friend, args.history)
    return live.run_chat(home, args.friend, args.history, args.receipts)


def cmd_events(home: Path, args: argparse.Namespace) -> int:
    return live.run_events(home, args.json)


def cmd_daemon_start(home: Path, args: argparse.Namespace) -> int:
    return daemonctl.cmd_start(
        home, args.listen or [], args.passphrase_file, args.foreground, args.bootstrap or []
    )


def cmd_daemon_stop(home: Path, args: argparse.Namespace) -> int:
    return daemonctl.cmd_stop(home)


def cmd_daemon_status(home: Path, args: argparse.Namespace) -> int:
    return daemonctl.cmd_status(home, args.json)


def cmd_daemon_install_service(home: Path, args: argparse.Namespace) -> int:
    return service.cmd_install_service(
        home, force=args.force, print_only=args.print_only, passphrase_file=args.passphrase_file
    )


def cmd_daemon_uninstall_service(home: Path, args: argparse.Namespace) -> int:
    return service.cmd_uninstall_service(force=args.force)


# --- argument parsing ----------------------------------------------------------------------


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree; ``--home`` is accepted before or after the subcommand."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--home", metavar="DIR", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print the raw result as JSON")

    parser = argparse.ArgumentParser(
        prog="p2pchat",
        description="Command-line client of the p2pchat daemon (p2pchatd).",
    )
    parser.add_argument(
        "--home",
        metavar="DIR",
        default=None,
        help=f"data directory (default: ${paths.HOME_ENV}, else the platform's user data dir)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(
        container: Any, name: str, func: Handler, help_text: str, *, json_flag: bool = True
    ) -> argparse.ArgumentParser:
        parents = [common, as_json] if json_flag else [common]
        p: argparse.ArgumentParser = container.add_parser(
            name, parents=parents, help=help_text, description=help_text
        )
        p.set_defaults(func=func)
        return p

    p = add(sub, "init", cmd_init, "create the data directory and an identity", json_flag=False)
    p.add_argument("--passphrase-file", metavar="FILE", help="encrypt the key with this passphrase")

    p = add(sub, "id", cmd_id, "show your ID, friend code and addresses")
    p.add_argument(
        "--new-invite",
        action="store_true",
        help="make a new friend code: requests through codes given out so far (and bare IDs) "
        "take the slower path for strangers",
    )

    p = sub.add_parser("daemon", parents=[common], help="start, stop or check p2pchatd")
    dsub = p.add_subparsers(dest="daemon_command", metavar="ACTION")
    p.set_defaults(func=None, subparser=p)
    p = add(dsub, "start", cmd_daemon_start, "start p2pchatd in the background", json_flag=False)
    p.add_argument(
        "--listen",
        metavar="MULTIADDR",
        action="append",
        help="listen address (repeatable), e.g. /ip4/0.0.0.0/tcp/4001",
    )
    p.add_argument(
        "--bootstrap",
        metavar="MULTIADDR",
        action="append",
        help="a daemon to join the network through, /ip4/.../tcp/.../p2p/ID (repeatable)",
    )
    p.add_argument("--passphrase-file", metavar="FILE", help="file holding the key passphrase")
    p.add_argument("--foreground", action="store_true", help="run in the foreground instead")
    add(dsub, "stop", cmd_daemon_stop, "stop p2pchatd cleanly", json_flag=False)
    add(dsub, "status", cmd_daemon_status, "is p2pchatd running? (exit 3 if not)")
    p = add(
        dsub,
        "install-service",
        cmd_daemon_install_service,
        "write a sandboxed systemd user unit that runs p2pchatd for this --home",
        json_flag=False,
    )
    p.add_argument("--force", action="store_true", help="replace an existing unit file")
    p.add_argument(
        "--print", dest="print_only", action="store_true", help="print the unit, write nothing"
    )
    p.add_argument(
        "--passphrase-file",
        metavar="FILE",
        help="file holding the key passphrase (needed if the key has one: a service cannot ask)",
    )
    p = add(
        dsub,
        "uninstall-service",
        cmd_daemon_uninstall_service,
        "remove the unit file install-service wrote",
        json_flag=False,
    )
    p.add_argument("--force", action="store_true", help="even if enabled or not written by us")

    add(sub, "status", cmd_status, "summary of the daemon's state")
    p = add(sub, "web", cmd_web, "print the link that opens the web app in a browser")
    p.add_argument("--open", action="store_true", help="open it in the default browser too")
    p.add_argument(
        "--new-token",
        action="store_true",
        help="make a new token first: every earlier link and open page stops working",
    )
    add(sub, "peers", cmd_peers, "open connections, direct or relayed")
    p = add(sub, "lookup", cmd_lookup, "find an ID's current addresses in the DHT")
    p.add_argument("id", metavar="ID", help="the ID to look up")

    p = sub.add_parser("friends", parents=[common], help="manage friends")
    fsub = p.add_subparsers(dest="friends_command", metavar="ACTION")
    p.set_defaults(func=None, subparser=p)
    p = add(fsub, "add", cmd_friends_add, "send a friend request (or accept theirs)")
    p.add_argument("id", metavar="ID_OR_CODE", help="their ID or friend code")
    p.add_argument("--name", help="your name for them")
    p.add_argument("--message", metavar="TEXT", help="text sent with the request")
    add(fsub, "list", cmd_friends_list, "list friends, outgoing requests and blocked peers")
    for name, func, help_text in (
        ("remove", cmd_friends_remove, "forget a friend (history is kept)"),
        ("block", cmd_friends_block, "block a contact or ID"),
        ("unblock", cmd_friends_unblock, "unblock a peer"),
    ):
        p = add(fsub, name, func, help_text)
        p.add_argument("friend", metavar="FRIEND", help="name, ID or ID prefix")
    p = add(fsub, "rename", cmd_friends_rename, "set your name for a friend")
    p.add_argument("friend", metavar="FRIEND", help="name, ID or ID prefix")
    p.add_argument("name", metavar="NAME", help="the new name")

    p = add(sub, "verify", cmd_verify, "show (and confirm) the safety number with a friend")
    p.add_argument("friend", metavar="FRIEND", help="name, ID or ID prefix")
    mark = p.add_mutually_exclusive_group()
    mark.add_argument(
        "--confirm", action="store_true", help="the numbers match: mark the friend verified"
    )
    mark.add_argument("--revoke", action="store_true", help="mark the friend not verified")

    add(sub, "requests", cmd_requests, "list incoming friend requests")
    for name, func, help_text in (
        ("accept", cmd_accept, "accept a friend request"),
        ("decline", cmd_decline, "decline a friend request (they are not told)"),
    ):
        p = add(sub, name, func, help_text)
        p.add_argument("friend", metavar="FRIEND", help="name, ID or ID prefix")

    p = add(sub, "send", cmd_send, "send a message (queued until delivered)")
    p.add_argument("friend", metavar="FRIEND", help="name, ID or ID prefix")
    p.add_argument("text", metavar="TEXT", nargs="+", help="the message; '-' reads stdin")
    p.add_argument("--wait", action="store_true", help="wait until the friend has it")
    p.add_argument(
        "--timeout",
        type=_positive_float,
        default=30.0,
        metavar="S",
        help="seconds --wait waits (default 30)",
    )

    p = add(sub, "history", cmd_history, "show the conversation with a friend")
    p.add_argument("friend", metavar="FRIEND", help="name, ID or ID prefix")
    p.add_argument("--limit", type=_positive_int, metavar="N", help="newest N messages")
    p.add_argument("--before", type=int, metavar="ROW", help="page back from this row")

    groups.add_parsers(sub, add, common)

    p = add(
        sub,
        "chat",
        cmd_chat,
        "interactive conversation (with a friend or a group)",
        json_flag=False,
    )
    p.add_argument("friend", metavar="FRIEND_OR_GROUP", help="name, ID or ID prefix")
    p.add_argument(
        "--history", type=int, default=20, metavar="N", help="messages shown first (default 20)"
    )
    p.add_argument("--receipts", action="store_true", help="show delivery confirmations")

    add(sub, "events", cmd_events, "print events as they happen (until Ctrl-C)")

    p = add(sub, "call", calls.cmd_call, "call a friend or a group (video, or --audio-only)")
    p.add_argument(
        "friend", metavar="FRIEND|GROUP", help="a friend's name, ID or ID prefix, or a group"
    )
    p.add_argument("--audio-only", action="store_true", help="no video")
    media_help = "test (a test pattern and tone, the default), camera, or a media file"
    p.add_argument("--source", metavar="SPEC", help=media_help)
    p.add_argument("--record", metavar="FILE", help="record what the friend sends (.mp4, .mkv)")
    p = add(sub, "answer", calls.cmd_answer, "answer the ringing call (or join a group call)")
    p.add_argument(
        "friend", metavar="FRIEND|GROUP", nargs="?", help="whose call (default: the one)"
    )
    p.add_argument("--source", metavar="SPEC", help=media_help)
    p.add_argument("--record", metavar="FILE", help="record what the friend sends (.mp4, .mkv)")
    p = add(sub, "hangup", calls.cmd_hangup, "end or leave the call (or decline a ringing one)")
    p.add_argument(
        "friend", metavar="FRIEND|GROUP", nargs="?", help="whose call (default: the one)"
    )
    p = add(sub, "calls", calls.cmd_calls, "the current call with live stats, and the last one")
    p.add_argument("--watch", action="store_true", help="refresh every second (until Ctrl-C)")

    p = add(sub, "send-file", files.cmd_send_file, "offer a file to a friend")
    p.add_argument("friend", metavar="FRIEND", help="name, ID or ID prefix")
    p.add_argument("path", metavar="PATH", help="the file to send")
    p.add_argument("--wait", action="store_true", help="show progress until the transfer finishes")
    p.add_argument(
        "--timeout",
        type=_positive_float,
        metavar="S",
        help="seconds --wait waits (default: no limit)",
    )
    p = add(sub, "transfers", files.cmd_transfers, "list file transfers")
    p.add_argument("--watch", action="store_true", help="follow transfers live (until Ctrl-C)")
    for name, method, verb, help_text in (
        ("accept-file", "files.accept", "accepted", "accept an offered file"),
        ("decline-file", "files.decline", "declined", "decline an offered file"),
        ("cancel-file", "files.cancel", "cancelled", "cancel a transfer (either side)"),
    ):
        p = add(sub, name, files.cmd_file_action(method, verb), help_text)
        p.add_argument("id", metavar="ID", help="transfer ID or a unique beginning of it")
    return parser


def _exit_status(code: object) -> int:
    if code is None:
        return EXIT_OK
    if isinstance(code, int):
        return code
    return EXIT_FAIL


def _report(exc: ApiError) -> None:
    err(f"error: {exc.message}")
    candidates = exc.data.get("candidates") if exc.data else None
    if isinstance(candidates, list) and candidates:
        err("candidates:")
        for cand in candidates:
            err(f"  {contact_label(cand) if isinstance(cand, dict) else cand}")


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the process exit status."""
    setup_stdio()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help or a usage error: argparse already printed why
        return _exit_status(exc.code)
    func: Handler | None = getattr(args, "func", None)
    if func is None:
        sub: argparse.ArgumentParser = getattr(args, "subparser", parser)
        sub.print_usage(sys.stderr)
        err(f"{sub.prog}: error: a command is required (see --help)")
        return EXIT_NO_DAEMON
    home = paths.resolve_home(args.home)
    try:
        return func(home, args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except DaemonNotRunning as exc:
        err(f"error: {exc.message}")
        return EXIT_NO_DAEMON
    except ApiError as exc:
        _report(exc)
        return EXIT_FAIL
    except BrokenPipeError:
        # stdout went away (e.g. `p2pchat events | head`): say nothing, and keep the
        # interpreter's final flush from printing a traceback.
        _silence_stdout()
        return EXIT_FAIL
    except (OSError, ValueError) as exc:
        err(f"error: {exc}")
        return EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())
