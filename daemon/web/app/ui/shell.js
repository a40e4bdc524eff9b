// The page's frame: log-in page, connection banner, the two panes, call overlays, toasts.
import { useState, useEffect } from "../vendor/hooks.module.js";
import { html } from "../html.js";
import { state } from "../store.js";
import { rpc } from "../app.js";
import { Sidebar } from "./sidebar.js";
import { Home, Status } from "./panels.js";
import { Chat } from "./chat.js";
import { GroupChat } from "./group.js";
import { Ring, CallPanel } from "./call.js";

function Login() {
  const reason = {
    wrong_token: "That link's token is wrong or old (it was renewed).",
    rotated: "The access token was renewed, so this page was logged out.",
  }[state.loginReason];
  return html`<main class="login" data-testid="login">
    <div class="login-card">
      <span class="logo big" aria-hidden="true">p2p</span>
      <h1>Open the link that <code>p2pchat web</code> prints</h1>
      ${reason && html`<p class="field-error" role="alert" data-testid="login-reason">${reason}</p>`}
      <p>This page talks to the p2pchat daemon on this computer. To let it in, run this in a terminal
        and open the link it prints (or let it open the browser for you):</p>
      <pre class="mono">p2pchat web --open</pre>
      <p class="hint">The link holds a secret token. It is swapped for a cookie and removed from the
        address bar at once; do not share it. <code>p2pchat web --new-token</code> makes a new one and logs out every page.</p>
    </div>
  </main>`;
}

function ConnBanner() {
  const [, tick] = useState(0);
  useEffect(() => {
    if (state.conn !== "down") return undefined;
    const t = setInterval(() => tick((n) => n + 1), 500);
    return () => clearInterval(t);
  }, [state.conn]);
  if (state.conn === "open") return null;
  if (state.conn === "connecting") {
    return html`<div class="banner connecting" role="status" data-testid="conn-banner">Connecting to your daemon…</div>`;
  }
  const secs = Math.max(0, Math.ceil((state.retryAt - Date.now()) / 1000));
  return html`<div class="banner down" role="alert" data-testid="conn-banner">
    <strong>Daemon not reachable.</strong>
    <span>Is <code>p2pchatd</code> running? Retrying${secs ? ` in ${secs} s` : "…"}</span>
    <button class="btn small" onClick=${() => rpc.retryNow()}>Retry now</button>
  </div>`;
}

function Toasts() {
  return html`<div class="toasts" aria-live="polite">
    ${state.toasts.map((t) => html`<div key=${t.id} class=${`toast ${t.kind}`} data-testid="toast">${t.text}</div>`)}
  </div>`;
}

function Main() {
  if (state.view === "chat" && state.selected) return html`<${Chat} />`;
  if (state.view === "group" && state.selectedGroup) return html`<${GroupChat} />`;
  if (state.view === "status") return html`<${Status} />`;
  return html`<${Home} />`;
}

export function App() {
  if (state.phase === "boot") return html`<div class="boot">Loading…</div>`;
  if (state.phase === "login") return html`<${Login} />`;
  const inCall = !!(state.media || (state.call && state.call.state !== "ringing_in"));
  return html`<div class=${`app pane-${state.pane} ${inCall ? "in-call" : ""}`} data-testid="app">
    <${ConnBanner} />
    <div class="columns">
      <${Sidebar} />
      <${Main} />
    </div>
    <${CallPanel} />
    <${Ring} />
    <${Toasts} />
  </div>`;
}
