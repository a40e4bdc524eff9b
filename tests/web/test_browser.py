"""The web app in a real browser (Debian's chromium through Playwright), against real daemons:
two people befriend each other, chat both ways live, send a file with its progress shown and
download it, and hold video calls browser↔browser and browser↔CLI (aiortc), each side
hanging up once. Screenshots of every step land in the test's tmp dir."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from p2pchat.api import ApiError
from tests.harness import Daemon, befriend, start_all, wait_for
from tests.web.browser import ARGS, CHROMIUM, DESKTOP, PHONE, WebPage, skip_reason

if TYPE_CHECKING:
    from playwright.sync_api import Browser

try:
    from playwright.sync_api import expect
except ImportError:  # the module is skipped below
    expect = None  # type: ignore[assignment]

_REASON = skip_reason()
pytestmark = [pytest.mark.daemons, pytest.mark.skipif(bool(_REASON), reason=_REASON)]

XSS = "<script>alert(1)</script><b>x</b>"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def pages(browser: Browser, tmp_path: Path) -> Iterator[Any]:
    """``open(daemon, phone=False)`` -> a logged-in :class:`WebPage`; all closed at the end.
    Screenshots go to the test's ``tmp_path``; ``P2PCHAT_SHOTS=DIR`` copies them there."""
    made: list[WebPage] = []

    def open_page(daemon: Daemon, phone: bool = False) -> WebPage:
        page = WebPage(browser, daemon, tmp_path, PHONE if phone else DESKTOP)
        made.append(page)
        return page

    yield open_page
    for page in made:
        page.close()
    keep = os.environ.get("P2PCHAT_SHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        for png in tmp_path.glob("*.png"):
            shutil.copy(png, Path(keep) / png.name)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def contact_row(web: WebPage, peer_id: str) -> Any:
    return web.page.locator(f"[data-testid=contact][data-peer='{peer_id}']")


def last_text(web: WebPage) -> Any:
    return web.page.locator("[data-testid=message] [data-testid=msg-text]").last


def open_chat(web: WebPage, peer_id: str) -> None:
    contact_row(web, peer_id).click()
    expect(web.page.locator(f"[data-testid=chat][data-peer='{peer_id}']")).to_be_visible()


def transfer_of(d: Daemon, name: str) -> dict[str, Any] | None:
    for t in d.call("files.list")["transfers"]:
        if t["name"] == name:
            return dict(t)
    return None


@pytest.mark.timeout(90)
def test_befriend_chat_and_files(
    make_daemon: Callable[..., Daemon], pages: Callable[..., WebPage], tmp_path: Path
) -> None:
    a = make_daemon("alice", start=False)
    b = make_daemon("bob", start=False)
    # A cap on Alice's sending rate keeps the transfer running long enough to watch it.
    a.configure(max_send_rate=1_048_576)
    start_all([a, b])
    pa = pages(a)  # desktop
    pb = pages(b, phone=True)  # 390×844: the list and the open view are separate screens
    page_a, page_b = pa.page, pb.page

    # Bob's friend code, from his page (on a phone: open "my code" from the list).
    page_b.get_by_test_id("nav-home").click()
    code = page_b.get_by_test_id("my-code").inner_text().strip()
    assert code == b.code()
    expect(page_b.get_by_test_id("qr")).to_be_visible()
    assert page_b.evaluate("document.querySelector('[data-testid=qr]').naturalWidth") > 0
    pb.shot("b-phone-my-code")
    page_b.locator("[data-testid=home] .back").click()

    # A typo in the code: the daemon's own invalid_id message, under the field.
    typo = code[:-3] + ("aaa" if not code.endswith("aaa") else "bbb")
    with pytest.raises(ApiError) as refused:
        a.call("friends.add", id=typo)
    assert refused.value.name == "invalid_id"
    page_a.get_by_test_id("add-id").fill(typo)
    page_a.get_by_test_id("add-submit").click()
    expect(page_a.get_by_test_id("add-error")).to_have_text(refused.value.message)
    pa.shot("a-add-typo", clean=True)

    # The right code: a request; Bob accepts it in his page, live.
    page_a.get_by_test_id("add-id").fill(code)
    page_a.get_by_test_id("add-name").fill("bob")
    page_a.get_by_test_id("add-message").fill("hi, it's Alice")
    page_a.get_by_test_id("add-submit").click()
    expect(page_a.get_by_test_id("add-error")).to_have_count(0)
    expect(contact_row(pa, b.peer_id)).to_contain_text("request sent")
    request = page_b.locator(f"[data-testid=request][data-peer='{a.peer_id}']")
    expect(request).to_contain_text("hi, it's Alice")
    pb.shot("b-phone-request")
    request.get_by_test_id("accept-request").click()
    expect(contact_row(pb, a.peer_id)).to_be_visible()
    expect(contact_row(pa, b.peer_id)).to_contain_text("online")
    assert (a.contact(b.peer_id) or {}).get("state") == "friend"

    # Alice writes; Bob's list shows it unread, live; opening the conversation reads it.
    open_chat(pa, b.peer_id)
    page_a.get_by_test_id("composer").fill("hello Bob")
    page_a.get_by_test_id("composer").press("Enter")
    expect(last_text(pa)).to_have_text("hello Bob")
    mine = page_a.locator("[data-testid=message][data-direction=out]").last
    expect(mine.get_by_test_id("msg-state")).to_have_attribute("data-state", "delivered")
    expect(contact_row(pb, a.peer_id).get_by_test_id("unread")).to_have_text("1")
    assert (b.contact(a.peer_id) or {})["unread"] == 1
    pb.shot("b-phone-list-unread", clean=True)
    open_chat(pb, a.peer_id)
    expect(last_text(pb)).to_have_text("hello Bob")
    wait_for(lambda: (b.contact(a.peer_id) or {})["unread"] == 0, what="Bob's page to read it")

    # Bob answers; Alice sees it live (her conversation is open: read at once).
    page_b.get_by_test_id("composer").fill("hi Alice, ça va?\nsecond line")
    page_b.get_by_test_id("send").click()
    expect(last_text(pa)).to_have_text("hi Alice, ça va?\nsecond line")
    wait_for(lambda: (a.contact(b.peer_id) or {})["unread"] == 0, what="Alice's page to read it")

    page_a.get_by_test_id("composer").fill("Très bien! Here are the photos from the trip.")
    page_a.get_by_test_id("composer").press("Enter")
    expect(last_text(pb)).to_have_text("Très bien! Here are the photos from the trip.")

    # Typing on while a message is on its way: each Enter sends what the composer holds,
    # none is lost or cleared by an earlier send finishing, and they arrive in order.
    quick = [f"quick {i}" for i in range(6)]
    for text in quick:
        page_a.get_by_test_id("composer").fill(text)
        page_a.get_by_test_id("composer").press("Enter")
    expect(last_text(pb)).to_have_text(quick[-1])
    expect(page_a.get_by_test_id("composer")).to_have_value("")
    texts = [m["text"] for m in b.call("messages.history", friend=a.peer_id, limit=6)["messages"]]
    assert texts == quick, texts

    # A burst while Bob's conversation is open: marked read once shown, none left unread
    # (one read mark for the burst; those arriving while it is on its way get another).
    for i in range(5):
        a.call("messages.send", friend=b.peer_id, text=f"and {i}")
    expect(last_text(pb)).to_have_text("and 4")
    wait_for(lambda: (b.contact(a.peer_id) or {})["unread"] == 0, what="Bob's page to read all")

    # A file by the file input: Bob accepts it in his page; progress, speed and ETA show.
    payload = os.urandom(3 * 1024 * 1024 + 123)
    src = tmp_path / "holiday photos.bin"
    src.write_bytes(payload)
    page_a.get_by_test_id("file-input").set_input_files(str(src))
    offer = page_b.locator("[data-testid=transfer]").filter(has_text="holiday photos.bin")
    offer.get_by_test_id("transfer-accept").click()
    sending = page_a.locator("[data-testid=transfer][data-state=active]")
    expect(sending.get_by_test_id("progress")).to_be_visible()
    expect(sending.get_by_test_id("transfer-rate")).to_contain_text("/s", timeout=10_000)
    expect(offer.get_by_test_id("transfer-rate")).to_contain_text("left")
    bar = "[data-testid=transfer][data-state=active] [data-testid=progress]"
    page_a.wait_for_function(
        f"() => Number(document.querySelector('{bar}')?.getAttribute('aria-valuenow')) >= 30"
    )
    pa.shot("a-desktop-transfer", clean=True)
    pb.shot("b-phone-transfer", clean=True)
    expect(offer).to_have_attribute("data-state", "completed", timeout=20_000)
    expect(page_a.locator("[data-testid=transfer]").last).to_have_attribute(
        "data-state", "completed"
    )
    received = transfer_of(b, "holiday photos.bin")
    assert received and received["state"] == "completed"
    assert sha256(Path(received["path"])) == hashlib.sha256(payload).hexdigest()

    # Bob downloads it from his page.
    with page_b.expect_download() as info:
        offer.get_by_test_id("transfer-download").click()
    download = info.value
    assert download.suggested_filename == "holiday photos.bin"
    saved = tmp_path / "downloaded.bin"
    download.save_as(str(saved))
    assert sha256(saved) == hashlib.sha256(payload).hexdigest()

    # Markup in a message is text, never HTML.
    page_a.get_by_test_id("composer").fill(XSS)
    page_a.get_by_test_id("composer").press("Enter")
    expect(last_text(pb)).to_have_text(XSS)
    for web in (pa, pb):
        text = last_text(web)
        expect(text).to_have_text(XSS)
        assert text.text_content() == XSS
        assert text.evaluate("e => e.children.length") == 0
        markup = web.page.locator("[data-testid=timeline] b, [data-testid=timeline] script")
        assert markup.count() == 0
        assert web.dialogs == []
    pa.shot("a-desktop-chat")
    pb.shot("b-phone-chat")

    # Drag & drop onto the conversation; Bob declines this one.
    page_a.evaluate(
        """() => {
          const dt = new DataTransfer();
          dt.items.add(new File(["dropped bytes"], "dropped.txt", { type: "text/plain" }));
          const target = document.querySelector("[data-testid=timeline]");
          for (const type of ["dragenter", "dragover", "drop"]) {
            const init = { bubbles: true, cancelable: true, dataTransfer: dt };
            target.dispatchEvent(new DragEvent(type, init));
          }
        }"""
    )
    dropped = page_b.locator("[data-testid=transfer]").filter(has_text="dropped.txt")
    dropped.get_by_test_id("transfer-decline").click()
    expect(
        page_a.locator("[data-testid=transfer]").filter(has_text="dropped.txt")
    ).to_have_attribute("data-state", "declined")

    # Bob's daemon stops: his page says so; Alice's message waits in her outbox, shown as
    # queued. Bob's daemon comes back: his page reconnects by itself and gets it live.
    b.stop()
    expect(page_b.get_by_test_id("conn-banner")).to_contain_text("Daemon not reachable")
    pb.shot("b-phone-daemon-down")
    expect(contact_row(pa, b.peer_id)).to_contain_text("offline")
    page_a.get_by_test_id("composer").fill("still there?")
    page_a.get_by_test_id("composer").press("Enter")
    queued = page_a.locator("[data-testid=message][data-direction=out]").last
    expect(queued).to_have_attribute("data-state", "pending")
    expect(contact_row(pa, b.peer_id).get_by_test_id("outbox")).to_have_text("1 queued")
    b.start()
    expect(page_b.get_by_test_id("conn-banner")).to_have_count(0, timeout=20_000)
    expect(last_text(pb)).to_have_text("still there?", timeout=20_000)
    expect(queued).to_have_attribute("data-state", "delivered")
    expect(contact_row(pa, b.peer_id).get_by_test_id("outbox")).to_have_count(0)

    # Scrolling back loads older messages page by page (messages.history with before).
    before = len(b.history(a.peer_id))
    for i in range(70):
        a.call("messages.send", friend=b.peer_id, text=f"old {i}")
    wait_for(lambda: len(b.history(a.peer_id)) == before + 70, what="Bob to store them")
    page_b.reload()  # the session cookie survives; the conversation loads its newest 50
    open_chat(pb, a.peer_id)
    expect(last_text(pb)).to_have_text("old 69")
    texts = page_b.locator("[data-testid=msg-text]")
    assert texts.count() == 50
    for _ in range(10):
        if page_b.get_by_text("Start of your conversation").count():
            break
        page_b.get_by_test_id("timeline").evaluate("e => { e.scrollTop = 0; }")
        page_b.wait_for_timeout(200)
    expect(page_b.get_by_text("Start of your conversation")).to_be_visible()
    expect(texts.first).to_have_text("hello Bob")
    assert texts.count() == len(b.history(a.peer_id))

    # The status panel.
    page_a.get_by_test_id("nav-status").click()
    expect(page_a.get_by_test_id("st-web")).to_contain_text(pa.url)
    expect(page_a.get_by_test_id("st-dht")).to_contain_text("server mode")
    expect(page_a.get_by_test_id("st-connections")).to_contain_text("1")
    pa.shot("a-desktop-status")

    # Nothing went wrong in either page.
    assert pa.errors == [], pa.errors
    assert pb.errors == [], pb.errors


@pytest.mark.timeout(60)
def test_login_page(make_daemon: Callable[..., Daemon], browser: Any) -> None:
    """Without a session the page says which link to open; a wrong token says so too; the
    right one logs in and leaves no token in the address bar."""
    a = make_daemon("alice")
    info = wait_for(lambda: a.call("web.info")["login_url"] and a.call("web.info"), what="web")
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(info["url"])
        login = page.get_by_test_id("login")
        expect(login).to_contain_text("Open the link that p2pchat web prints")
        # A link pasted into the tab that shows the log-in page: only the fragment changes.
        page.goto(info["url"] + "#token=" + "A" * 43)
        expect(page.get_by_test_id("login-reason")).to_contain_text("wrong or old")
        assert "token" not in page.url
        page.goto(info["login_url"])
        expect(page.get_by_test_id("my-id")).to_have_text(a.peer_id)
        assert "token" not in page.url
        assert page.evaluate("document.documentElement.dataset.ready") == "true"
        # A new token (p2pchat web --new-token) logs the page out at once; the new link works.
        fresh = a.call("web.new_token")
        expect(page.get_by_test_id("login-reason")).to_contain_text("renewed")
        page.goto(fresh["login_url"])
        expect(page.get_by_test_id("my-id")).to_have_text(a.peer_id)
    finally:
        context.close()


def decoded_frames(web: WebPage) -> int:
    """Video frames the page's remote <video> has decoded (the browser's own count)."""
    return int(
        web.page.evaluate(
            """() => {
              const v = document.querySelector("[data-testid=remote-video]");
              return v ? v.getVideoPlaybackQuality().totalVideoFrames : 0;
            }"""
        )
    )


def current_call(d: Daemon) -> dict[str, Any] | None:
    for c in d.call("calls.list")["calls"]:
        if c["state"] != "ended":
            return dict(c)
    return None


def last_call(d: Daemon) -> dict[str, Any]:
    return dict(d.call("calls.list")["calls"][-1])


def stat(d: Daemon, key: str) -> int:
    call = current_call(d)
    return int(((call or {}).get("stats") or {}).get(key) or 0)


@pytest.mark.timeout(120)
def test_video_calls_browser_to_browser_and_to_cli(
    make_daemon: Callable[..., Daemon], pages: Callable[..., WebPage]
) -> None:
    a, b = start_all([make_daemon("alice", start=False), make_daemon("bob", start=False)])
    try:
        a.call("calls.ice_servers")
    except ApiError as exc:
        if exc.name == "method_not_found":
            pytest.skip("this daemon has no browser call media yet (calls.ice_servers)")
        raise
    befriend(a, b)
    pa = pages(a)
    pb = pages(b, phone=True)
    page_a, page_b = pa.page, pb.page
    open_chat(pa, b.peer_id)

    # Browser ↔ browser: Alice's page calls, Bob's page rings and answers.
    page_a.get_by_test_id("call-video").click()
    ring = page_b.get_by_test_id("ring")
    expect(ring).to_contain_text("video call")
    pb.shot("b-phone-ringing")
    ring.get_by_test_id("ring-accept").click()
    for web in (pa, pb):
        call = web.page.get_by_test_id("call")
        expect(call).to_have_attribute("data-state", "active", timeout=20_000)
    wait_for(lambda: decoded_frames(pa) > 0, timeout=20, what="Alice's page to decode video")
    wait_for(lambda: decoded_frames(pb) > 0, timeout=20, what="Bob's page to decode video")
    # The pages report their getStats() to their daemons (calls.report -> calls.list).
    wait_for(lambda: stat(a, "frames_decoded") > 0, timeout=10, what="Alice's calls.report")
    wait_for(lambda: stat(b, "frames_decoded") > 0, timeout=10, what="Bob's calls.report")
    assert (current_call(a) or {}).get("media") == "browser"
    expect(page_a.get_by_test_id("call-stats")).to_contain_text("kbps in")
    page_a.get_by_test_id("call-mute").click()
    expect(page_a.get_by_test_id("call-mute")).to_have_attribute("aria-pressed", "true")
    pa.shot("a-desktop-call", clean=True)
    pb.shot("b-phone-call", clean=True)
    page_b.get_by_test_id("call-camera").click()
    expect(page_b.get_by_test_id("call-camera")).to_have_attribute("aria-pressed", "true")
    expect(page_b.locator(".self-label")).to_have_text("Camera off")
    page_b.get_by_test_id("call-camera").click()

    # Alice hangs up in her page; both pages close the call.
    page_a.get_by_test_id("call-hangup").click()
    for web in (pa, pb):
        expect(web.page.get_by_test_id("call")).to_have_count(0, timeout=15_000)
    wait_for(lambda: last_call(b)["state"] == "ended", what="Bob's call to end")
    assert (last_call(b)["reason"], last_call(b)["ended_by"]) == ("hangup", "friend")

    # Browser ↔ CLI: Alice's page calls again; Bob's daemon answers with aiortc.
    wait_for(lambda: current_call(a) is None and current_call(b) is None, what="calls released")
    page_a.get_by_test_id("call-video").click()
    wait_for(
        lambda: (current_call(b) or {}).get("state") == "ringing_in", what="Bob's daemon to ring"
    )
    b.call("calls.answer")
    expect(page_a.get_by_test_id("call")).to_have_attribute("data-state", "active", timeout=20_000)
    wait_for(lambda: decoded_frames(pa) > 0, timeout=20, what="Alice's page to decode aiortc video")
    wait_for(lambda: stat(b, "video_frames_in") > 0, timeout=20, what="aiortc to decode the page")
    assert (current_call(b) or {}).get("media", "aiortc") == "aiortc"
    expect(page_a.get_by_test_id("call-stats")).to_contain_text("fps")
    pa.shot("a-desktop-call-cli")
    pb.shot("b-phone-call-in-daemon")

    # Bob hangs up from the CLI side; Alice's page closes the call.
    b.call("calls.hangup")
    expect(page_a.get_by_test_id("call")).to_have_count(0, timeout=15_000)
    wait_for(lambda: last_call(a)["state"] == "ended", what="Alice's call to end")
    assert (last_call(a)["reason"], last_call(a)["ended_by"]) == ("hangup", "friend")
    assert pa.errors == [], pa.errors
    assert pb.errors == [], pb.errors


@pytest.mark.timeout(90)
def test_a_send_whose_answer_the_connection_lost_is_sent_again_once(
    make_daemon: Callable[..., Daemon], browser: Browser, tmp_path: Path
) -> None:
    """The WebSocket drops after the daemon took a message and before its answer reached the
    page. The page cannot know whether it was stored: it sends it again, with the same id,
    once the socket is back, and the friend gets it exactly once (not lost, not doubled)."""
    import json

    a, b = make_daemon("alice", start=False), make_daemon("bob", start=False)
    start_all([a, b])
    befriend(a, b)
    cut: dict[str, Any] = {"id": None, "done": False, "sockets": 0}

    def route(ws: Any) -> None:
        cut["sockets"] += 1
        server = ws.connect_to_server()

        def to_server(message: str | bytes) -> None:
            text = message if isinstance(message, str) else message.decode()
            request = json.loads(text)
            if not cut["done"] and request.get("method") == "messages.send":
                cut["id"] = request["id"]  # forwarded: the daemon stores it
            server.send(message)

        def to_page(message: str | bytes) -> None:
            text = message if isinstance(message, str) else message.decode()
            if (
                cut["id"] is not None
                and not cut["done"]
                and json.loads(text).get("id") == cut["id"]
            ):
                cut["done"] = True
                ws.close(code=4000, reason="cut")  # the answer is lost
                server.close()
                return
            ws.send(message)

        ws.on_message(to_server)
        server.on_message(to_page)

    def with_route(context: Any) -> None:
        context.route_web_socket("**/api/ws", route)

    pa = WebPage(browser, a, tmp_path, DESKTOP, before_open=with_route)
    try:
        open_chat(pa, b.peer_id)
        pa.page.get_by_test_id("composer").fill("sent across a dropped connection")
        pa.page.get_by_test_id("composer").press("Enter")
        # (Playwright's sync API runs the route's handlers only while we are in one of its
        # calls: wait in the page, not in time.sleep.)
        waited = 0
        while not cut["done"] and waited < 20_000:
            pa.page.wait_for_timeout(100)
            waited += 100
        assert cut["done"], "the answer was never cut off"
        expect(last_text(pa)).to_have_text("sent across a dropped connection", timeout=20_000)
        assert cut["sockets"] >= 2  # the page reconnected
        waited = 0
        while waited < 20_000 and not any(
            m["text"] == "sent across a dropped connection" for m in b.history(a.peer_id)
        ):
            pa.page.wait_for_timeout(100)
            waited += 100
        pa.page.wait_for_timeout(2000)  # a second copy would be on its way by then
        texts = [m["text"] for m in b.history(a.peer_id)]
        assert texts.count("sent across a dropped connection") == 1, texts
        mine = [m["text"] for m in a.history(b.peer_id)]
        assert mine.count("sent across a dropped connection") == 1, mine
        expect(pa.page.get_by_test_id("composer")).to_have_value("")
        assert (
            pa.page.locator("[data-testid=message] [data-testid=msg-text]")
            .filter(has_text="sent across a dropped connection")
            .count()
            == 1
        )
        pa.shot("a-resent-after-drop", clean=True)
    finally:
        pa.close()


@pytest.mark.timeout(180)
def test_a_message_held_for_an_offline_friend_shows_as_stored_then_delivered(
    make_daemon: Callable[..., Daemon], pages: Callable[..., WebPage], tmp_path: Path
) -> None:
    """Bob is offline; carol, a friend of both, holds alice's message: alice's page shows it
    stored for delivery (live, from ``message.stored``), then delivered once bob is back."""
    a, b, c = (make_daemon(n, start=False) for n in ("alice", "bob", "carol"))
    start_all([a, b, c])
    for x, y in ((a, b), (a, c), (b, c)):
        befriend(x, y)
    a.call("messages.send", friend=b.peer_id, text="while we are both here")
    wait_for(
        lambda: any(m["state"] == "delivered" for m in a.history(b.peer_id)),
        what="the first message (the pair's Olm session)",
    )
    b.stop()
    wait_for(lambda: not (a.contact(b.peer_id) or {}).get("online"), what="bob offline")
    pa = pages(a)
    open_chat(pa, b.peer_id)
    pa.page.get_by_test_id("composer").fill("for when you are back")
    pa.page.get_by_test_id("composer").press("Enter")
    mine = pa.page.locator("[data-testid=message][data-direction=out]").last
    state = mine.get_by_test_id("msg-state")
    expect(state).to_have_attribute("data-state", "stored", timeout=20_000)
    expect(state).to_have_text("stored for delivery · 1 holder")
    pa.shot("a-stored-for-delivery", clean=True)
    pa.page.reload()  # from history too, not only from the event
    open_chat(pa, b.peer_id)
    mine = pa.page.locator("[data-testid=message][data-direction=out]").last
    expect(mine.get_by_test_id("msg-state")).to_have_attribute("data-state", "stored")
    b.start()
    expect(mine.get_by_test_id("msg-state")).to_have_attribute(
        "data-state", "delivered", timeout=30_000
    )
    assert sum(m["text"] == "for when you are back" for m in b.history(a.peer_id)) == 1
    assert pa.errors == [], pa.errors


@pytest.mark.timeout(120)
def test_a_group_in_the_browser(
    make_daemon: Callable[..., Daemon], pages: Callable[..., WebPage]
) -> None:
    """Alice makes a group and invites Bob and Carol in her page; Bob joins in his, Carol
    through the API; they chat, each page shows who wrote what and how many hold Alice's
    messages; Alice removes Carol in her page."""
    a, b, c = make_daemon("alice"), make_daemon("bob"), make_daemon("carol")
    befriend(a, b)
    befriend(a, c)
    pa, pb = pages(a), pages(b)
    page_a, page_b = pa.page, pb.page

    page_a.get_by_test_id("new-group-submit").click()
    expect(page_a.get_by_test_id("new-group-error")).to_have_text("Give the group a name.")
    page_a.get_by_test_id("new-group-name").fill("Trip to the coast")
    page_a.get_by_test_id("new-group-submit").click()
    expect(page_a.get_by_test_id("group-name")).to_have_text("Trip to the coast")
    gid = page_a.get_by_test_id("group-chat").get_attribute("data-group")
    assert gid and a.call("groups.show", group=gid)["group"]["name"] == "Trip to the coast"

    page_a.locator("[data-testid=group-members] summary").click()
    for friend in (b, c):
        page_a.get_by_test_id("invite-friend").select_option(friend.peer_id)
        page_a.get_by_test_id("invite-submit").click()
        expect(
            page_a.locator(f"[data-testid=member][data-peer='{friend.peer_id}']")
        ).to_be_visible()
    pa.shot("group-a-members")

    # Bob's page shows the invitation live; he joins there. Carol joins through the API.
    row = page_b.locator(f"[data-testid=group-row][data-group='{gid}']")
    expect(row.get_by_test_id("group-invited")).to_be_visible()
    row.click()
    expect(page_b.get_by_test_id("invitation")).to_contain_text("invited you to")
    pb.shot("group-b-invitation")
    page_b.get_by_test_id("group-join").click()
    expect(page_b.get_by_test_id("group-composer")).to_be_enabled()
    wait_for(lambda: any(g["id"] == gid for g in c.call("groups.list")["groups"]), 30)
    c.call("groups.join", group=gid)

    page_a.get_by_test_id("group-composer").fill("Who brings the tent?")
    page_a.get_by_test_id("group-composer").press("Enter")
    theirs = page_b.locator("[data-testid=group-message][data-direction=in]").last
    expect(theirs.get_by_test_id("msg-text")).to_have_text("Who brings the tent?")
    expect(theirs.get_by_test_id("msg-sender")).to_have_text("alice")
    wait_for(
        lambda: any(
            m["text"] == "Who brings the tent?"
            for m in c.call("groups.history", group=gid)["messages"]
        ),
        30,
        what="carol to have it",
    )
    mine = page_a.locator("[data-testid=group-message][data-direction=out]").last
    expect(mine.get_by_test_id("held")).to_have_attribute("data-held", "3", timeout=20_000)

    page_b.get_by_test_id("group-composer").fill(f"I do {XSS}")
    page_b.get_by_test_id("group-send").click()
    c.call("groups.send", group=gid, text="and I bring the food")
    got = page_a.locator("[data-testid=group-message][data-direction=in]")
    expect(got.filter(has_text="I do")).to_have_count(1)
    expect(got.filter(has_text="I do").get_by_test_id("msg-text")).to_have_text(f"I do {XSS}")
    expect(got.filter(has_text="the food").get_by_test_id("msg-sender")).to_have_text("carol")
    # Presence is live: both members' streams are open.
    expect(page_a.locator("[data-testid=group-members] summary")).to_contain_text("2 online")
    pa.shot("group-a-chat")
    pb.shot("group-b-chat")

    # Alice removes Carol in her page; Carol's daemon learns it.
    page_a.locator(f"[data-testid=member][data-peer='{c.peer_id}']").get_by_test_id(
        "member-remove"
    ).click()
    expect(page_a.locator(f"[data-testid=member][data-peer='{c.peer_id}']")).to_have_count(0)
    wait_for(
        lambda: c.call("groups.show", group=gid)["group"]["status"] == "removed",
        30,
        what="carol to learn she was removed",
    )
    assert not pa.errors and not pb.errors, (pa.errors, pb.errors)
