"""Web app benchmark: two real p2pchatd processes and Debian's chromium (Playwright), against the
control API's own figures measured in the same run.

Prints (issue #11 targets):
- page load to interactive: navigation start to ``performance.mark("p2pchat-ready")`` (the page
  has logged in, subscribed and rendered identity and friends), cold (first load, login
  included) and warm (a reload), next to the daemon's bare HTTP answer time for ``/`` and a
  JSON-RPC round trip over the Unix socket. Target: first load <= 300 ms on loopback.
- send -> shown: Enter pressed in page A's composer (its keydown event) to the message's text
  in page B's DOM (one clock: both pages run in one browser on one machine), next to the
  API's send -> delivered (``messages.send`` to the ``message.delivered`` event) over the Unix
  socket in the same run, twice: between the page messages (the browser running and both
  pages showing each message: the same load) and after the browser closed (no browser: the
  daemons alone, which on a 2-core machine is ~3x faster than with a browser beside them).
  Target: p50 shown <= 2x the API's delivered p50 under the same load; both ratios printed.

The pages report through console messages, which Playwright receives as events: nothing is
polled and no Playwright helper script runs in a page while it is being measured.

Usage: python bench/bench_web.py [--messages 50] [--loads 10]
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from p2pchat.api import Client  # noqa: E402
from tests.harness import Daemon, befriend, wait_for  # noqa: E402
from tests.web.browser import ARGS, CHROMIUM, skip_reason  # noqa: E402


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def http_get_ms(url: str, runs: int = 20) -> float:
    """Median time for the daemon to answer ``GET /`` (the app shell) on a fresh connection."""
    parts = urlsplit(url)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        conn.request("GET", "/")
        conn.getresponse().read()
        conn.close()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def trivial_page(root: Path) -> tuple[str, Any]:
    """A one-module page that marks itself ready, served by Python's own http.server: what
    any page costs in this browser on this machine (the floor under the app's load time)."""
    import functools
    import http.server
    import threading

    (root / "index.html").write_text(
        '<!doctype html><html><head><script type="module" src="m.js"></script></head>'
        '<body><div id="x"></div></body></html>'
    )
    (root / "m.js").write_text(
        'document.getElementById("x").textContent = "hi"; performance.mark("p2pchat-ready");\n'
        'document.documentElement.dataset.ready = "true";\n'
    )

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(root))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/index.html", server


def rpc_ms(d: Daemon, runs: int = 50) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        d.call("identity.get")
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def api_delivered_ms(a: Daemon, b: Daemon, n: int) -> list[float]:
    """send -> delivered over the control API (the CLI's path), as bench_chat measures it."""
    with Client(a.home, timeout=30) as listener:
        stream = listener.events()
        return [api_send_delivered_ms(a, b, stream, f"api {i}") for i in range(n)]


def api_send_delivered_ms(a: Daemon, b: Daemon, stream: Any, text: str) -> float:
    t0 = time.perf_counter()
    mid = a.call("messages.send", friend=b.peer_id, text=text)["message"]["id"]
    for ev in stream:
        if ev.get("type") == "message.delivered" and ev["message"]["id"] == mid:
            break
    return (time.perf_counter() - t0) * 1000


# Each page reports its ready mark on the console: waiting for that message costs the page
# nothing, where Playwright's selector waits inject and run its ~40 ms helper script in the
# page while it loads (which is not part of the app's load time).
REPORT_READY = """
new PerformanceObserver((list) => {
  for (const e of list.getEntries())
    if (e.name === "p2pchat-ready") console.debug("p2pchat-ready " + e.startTime);
}).observe({ type: "mark" });
"""


def is_ready(message: Any) -> bool:
    return str(message.text).startswith("p2pchat-ready ")


def load_ms(page: Any, url: str | None) -> float:
    """Navigation start to the page's ready mark: ``goto(url)``, or a reload when url is None."""
    with page.expect_console_message(is_ready, timeout=15000) as ready:
        if url is None:
            page.reload(wait_until="commit")
        else:
            page.goto(url, wait_until="commit")
    return float(ready.value.text.split()[1])


PRESSED = """() => {
  window.__pressed = {};
  document.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && e.target.dataset.testid === "composer")
      window.__pressed[e.target.value] = performance.timeOrigin + performance.now();
  }, true);
}"""

WATCH = """(prefix) => {
  window.__shown = {};
  // Only the nodes just added are looked at: scanning every message on each change would
  // slow down the page being measured as its conversation grows.
  new MutationObserver((records) => {
    const at = performance.timeOrigin + performance.now();
    for (const r of records)
      for (const node of r.addedNodes) {
        if (node.nodeType !== 1) continue;
        const sel = "[data-testid=msg-text]";
        const found = node.matches(sel) ? [node] : node.querySelectorAll(sel);
        for (const el of found) {
          const t = el.textContent;
          if (t.startsWith(prefix) && !(t in window.__shown)) {
            window.__shown[t] = at;
            console.debug("shown " + t);
          }
        }
      }
  }).observe(document.body, {childList: true, subtree: true});
}"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=50)
    parser.add_argument("--loads", type=int, default=10)
    args = parser.parse_args()
    if skip_reason():
        sys.exit(f"cannot run: {skip_reason()}")
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="p2pw-") as tmp:
        a = Daemon(Path(tmp) / "a", "alice").start()
        b = Daemon(Path(tmp) / "b", "bob").start()
        try:
            befriend(a, b)
            run(a, b, args, sync_playwright, Path(tmp))
        finally:
            a.stop()
            b.stop()


def run(a: Daemon, b: Daemon, args: Any, sync_playwright: Any, tmp: Path) -> None:
    ia = wait_for(lambda: a.call("web.info")["login_url"] and a.call("web.info"), what="web A")
    ib = wait_for(lambda: b.call("web.info")["login_url"] and b.call("web.info"), what="web B")
    base_http = http_get_ms(ia["url"])
    base_rpc = rpc_ms(a)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        trivial_url, trivial_server = trivial_page(tmp)
        trivial: list[float] = []
        for _ in range(args.loads):
            ctx = browser.new_context()
            ctx.add_init_script(REPORT_READY)
            trivial.append(load_ms(ctx.new_page(), trivial_url))
            ctx.close()
        trivial_server.shutdown()
        cold: list[float] = []
        warm: list[float] = []
        for _ in range(args.loads):
            ctx = browser.new_context()  # a fresh profile: no cookie, no cache
            ctx.add_init_script(REPORT_READY)
            page = ctx.new_page()
            cold.append(load_ms(page, ia["login_url"]))
            warm.append(load_ms(page, None))
            ctx.close()

        pages = []
        for info, peer in ((ia, b.peer_id), (ib, a.peer_id)):
            ctx = browser.new_context()
            page = ctx.new_page()
            page.goto(info["login_url"])
            page.wait_for_selector("html[data-ready=true]", timeout=15000)
            page.click(f"[data-testid=contact][data-peer='{peer}']")
            page.wait_for_selector(f"[data-testid=chat][data-peer='{peer}']")
            pages.append(page)
        pa, pb = pages
        pa.evaluate(PRESSED)
        pb.evaluate(WATCH, "web ")
        shown: list[float] = []
        loaded: list[float] = []
        composer = pa.locator("[data-testid=composer]")
        listener = Client(a.home, timeout=30)
        events = listener.events()
        for i in range(args.messages):
            text = f"web {i}"
            composer.fill(text)
            # Waiting for page B's console message, not polling it: a poll every few ms would
            # take CPU from the very pages and daemons being measured.
            with pb.expect_console_message(lambda m, t=text: m.text == f"shown {t}", timeout=15000):
                composer.press("Enter")
            t1 = pb.evaluate("(t) => window.__shown[t]", text)
            t0 = pa.evaluate("(t) => window.__pressed[t]", text)
            shown.append(t1 - t0)
            # The API's send -> delivered under the same load, between two page messages:
            # the browser running, and both pages showing this message too.
            loaded.append(api_send_delivered_ms(a, b, events, f"api {i}"))
        listener.close()
        browser.close()
    api = api_delivered_ms(a, b, args.messages)

    print(f"baselines: GET / from the daemon {base_http:.1f} ms (median of 20, new connection);")
    print(f"           a JSON-RPC round trip over the Unix socket {base_rpc:.2f} ms (median of 50)")
    print(
        f"           a one-module page (python http.server) to interactive in the same browser:"
        f" p50 {statistics.median(trivial):.0f} ms"
    )
    print(
        f"page load to interactive, cold (login included): p50 {statistics.median(cold):.0f} ms,"
        f" p90 {pct(cold, 90):.0f} ms, max {max(cold):.0f} ms over {len(cold)} loads"
        "   (target <= 300 ms)"
    )
    print(
        f"page load to interactive, warm (reload):         p50 {statistics.median(warm):.0f} ms,"
        f" p90 {pct(warm, 90):.0f} ms"
    )
    s50, a50, l50 = statistics.median(shown), statistics.median(api), statistics.median(loaded)
    print(
        f"send in page A -> shown in page B: p50 {s50:.1f} ms, p99 {pct(shown, 99):.1f} ms "
        f"over {len(shown)}"
    )
    print(
        f"API send -> delivered, between the page messages (browser open, both pages showing "
        f"each message): p50 {l50:.1f} ms, p99 {pct(loaded, 99):.1f} ms"
    )
    print(
        f"API send -> delivered, after the browser closed (same daemons): p50 {a50:.1f} ms, "
        f"p99 {pct(api, 99):.1f} ms"
    )
    print(
        f"ratio shown/delivered p50: {s50 / l50:.2f}x against the API under the same load "
        f"(target <= 2x); {s50 / a50:.2f}x against the API with no browser running"
    )


if __name__ == "__main__":
    main()
