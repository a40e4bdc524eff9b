"""The transport-agnostic control session (daemon/control.py) over a fake link."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
import trio
import trio.testing

from daemon.control import MessageTooLong, Session, SocketLink
from p2pchat.api import MAX_LINE_BYTES

OFF = {"enabled": False, "url": None, "login_url": None}


class FakeLink:
    kind = "web"

    def __init__(self) -> None:
        self.send_in, self.incoming = trio.open_memory_channel[Any](10)
        self.sent: list[dict[str, Any]] = []
        self.closed = False

    async def receive(self) -> bytes | str | None:
        try:
            item = await self.incoming.receive()
        except trio.EndOfChannel:
            return None
        if isinstance(item, Exception):
            raise item
        return item  # type: ignore[no-any-return]

    async def send_text(self, text: str) -> None:
        self.sent.append(json.loads(text))

    async def aclose(self) -> None:
        self.closed = True


def session(link: FakeLink, web: Any = None) -> Session:
    return Session(SimpleNamespace(web=web), link)  # type: ignore[arg-type]


def request(req_id: int, method: str) -> str:
    return json.dumps({"jsonrpc": "2.0", "id": req_id, "method": method})


async def test_requests_are_answered_in_order_and_callbacks_run_once_at_the_end() -> None:
    link = FakeLink()
    s = session(link)
    assert s.transport == "web"
    calls: list[str] = []

    def failing() -> None:
        calls.append("failing")
        raise RuntimeError("a broken callback must not stop the others")

    s.add_close_callback(lambda: calls.append("first"))
    s.add_close_callback(failing)
    s.add_close_callback(lambda: calls.append("last"))
    for i in (1, 2):
        await link.send_in.send(request(i, "web.info"))
    await link.send_in.send(b"  ")  # blank: ignored
    await link.send_in.send("{bad")
    await link.send_in.aclose()
    with trio.fail_after(5):
        await s.run()
    assert [m.get("id") for m in link.sent] == [1, 2, None]
    assert link.sent[0]["result"] == OFF and link.sent[2]["error"]["code"] == -32700
    assert calls == ["first", "failing", "last"]
    s.add_close_callback(lambda: calls.append("late"))  # after the end: at once
    assert calls[-1] == "late"


async def test_a_too_long_message_is_refused_and_ends_the_session() -> None:
    link = FakeLink()
    ended: list[bool] = []
    s = session(link)
    s.add_close_callback(lambda: ended.append(True))
    await link.send_in.send(MessageTooLong("request line too long"))
    with trio.fail_after(5):
        await s.run()
    assert link.sent[0]["error"]["data"]["name"] == "invalid_request" and ended == [True]


async def test_end_and_end_after_reply() -> None:
    link = FakeLink()
    s = session(link)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(s.run)
            await trio.testing.wait_all_tasks_blocked()
            s.end()  # e.g. the token was rotated: the page must log in again
    assert link.sent == []

    class Web:
        async def new_token(self, caller: Session) -> dict[str, Any]:
            caller.end_after_reply()
            return OFF

    link = FakeLink()
    s = session(link, Web())
    await link.send_in.send(request(1, "web.new_token"))
    await link.send_in.send(request(2, "web.info"))  # never answered: the session ended
    with trio.fail_after(5):
        await s.run()
    assert [m["id"] for m in link.sent] == [1]


async def test_a_detached_session_runs_one_method_without_a_client() -> None:
    s = Session.detached(SimpleNamespace(web=None), "web")  # type: ignore[arg-type]
    assert s.transport == "web"
    assert await s.invoke("web.info", {}) == OFF


async def test_a_session_ended_before_it_runs_ends_as_it_starts() -> None:
    link = FakeLink()
    s = session(link)
    ended: list[bool] = []
    s.add_close_callback(lambda: ended.append(True))
    s.end()  # the token was rotated while the WebSocket was being accepted
    await link.send_in.send(request(1, "web.info"))
    with trio.fail_after(5):
        await s.run()
    assert link.sent == [] and ended == [True]


async def test_the_web_transport_never_gets_the_token() -> None:
    """A stolen cookie must not turn into the token: over the WebSocket, web.info and
    web.new_token give the address but no login link; the Unix socket still gets it."""
    on = {"enabled": True, "url": "http://127.0.0.1:1/", "login_url": "http://127.0.0.1:1/#token=T"}

    class Web:
        async def info(self) -> dict[str, Any]:
            return dict(on)

        async def new_token(self, caller: Session) -> dict[str, Any]:
            return dict(on)

    for kind, login_url in (("web", None), ("socket", on["login_url"])):
        s = Session.detached(SimpleNamespace(web=Web()), kind)  # type: ignore[arg-type]
        for method in ("web.info", "web.new_token"):
            got = await s.invoke(method, {})
            assert got == {**on, "login_url": login_url}, (kind, method)


@pytest.mark.parametrize("extra", [0, 1, 100])
async def test_the_socket_refuses_a_line_over_the_limit_even_with_its_newline(extra: int) -> None:
    """A line over MAX_LINE_BYTES is refused whether its newline comes in the same chunk
    or later; exactly MAX_LINE_BYTES is fine."""
    client, server = trio.testing.memory_stream_pair()
    link = SocketLink(server)  # type: ignore[arg-type]
    line = b"x" * (MAX_LINE_BYTES + extra) + b"\n"

    async def feed() -> None:
        for i in range(0, len(line), 1 << 20):
            await client.send_all(line[i : i + (1 << 20)])

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(feed)
            if extra:
                with pytest.raises(MessageTooLong):
                    await link.receive()
                nursery.cancel_scope.cancel()
            else:
                assert await link.receive() == line[:-1]
