// Entry point: render the app and start (log in, connect).
import { render } from "./vendor/preact.module.js";
import { html } from "./html.js";
import { subscribe, state } from "./store.js";
import { boot } from "./app.js";
import { App } from "./ui/shell.js";

const root = document.getElementById("app");

let ready = false;

function draw() {
  render(html`<${App} />`, root);
  if (!ready && state.phase === "app" && state.me && state.loaded) {
    // The first real data is on screen (bench/bench_web.py measures up to here).
    ready = true;
    performance.mark("p2pchat-ready");
    document.documentElement.dataset.ready = "true";
  }
  const unread = Object.values(state.contacts).reduce((n, c) => n + (c.unread || 0), 0);
  const ringing = state.call && state.call.state === "ringing_in";
  const title = `${ringing ? "📞 " : ""}${unread ? `(${unread}) ` : ""}p2pchat`;
  if (document.title !== title) document.title = title;
}

// A file dropped outside the conversation must not make the browser navigate to it.
window.addEventListener("dragover", (e) => e.preventDefault());
window.addEventListener("drop", (e) => e.preventDefault());

subscribe(draw);
draw();
boot();
