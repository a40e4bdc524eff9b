// The main pane's non-chat views: your ID/friend code/QR with "add a friend", and status.
import { useEffect } from "../vendor/hooks.module.js";
import { html } from "../html.js";
import { state, changed } from "../store.js";
import { addFriend, copy, back, refreshStatus } from "../app.js";
import { duration, plural } from "../format.js";
import { Icon } from "./icons.js";

function CopyButton({ what, text, label }) {
  const done = state.copied === what;
  return html`<button class="btn small copy" data-testid=${`copy-${what}`} onClick=${() => copy(what, text)}
    aria-label=${`Copy ${label}`}>
    <${Icon} name=${done ? "check" : "copy"} /> ${done ? "Copied" : "Copy"}
  </button>`;
}

function PaneHeader({ title }) {
  return html`<header class="pane-head">
    <button class="icon-btn back" aria-label="Back to the list" onClick=${back}><${Icon} name="back" /></button>
    <h1 class="pane-title">${title}</h1>
  </header>`;
}

function AddFriend() {
  const a = state.add;
  const set = (field) => (e) => {
    a[field] = e.currentTarget.value;
    if (field === "id") a.error = "";
    changed();
  };
  const submit = (e) => {
    e.preventDefault();
    addFriend();
  };
  return html`<section class="card" aria-labelledby="add-title">
    <h2 id="add-title" class="card-title">Add a friend</h2>
    <p class="hint">Paste the ID (<span class="mono">12D3KooW…</span>) or the friend code
      (<span class="mono">p2pchat:…</span>) your friend sent you. A typo is caught by its checksum.</p>
    <form class="form" onSubmit=${submit} novalidate>
      <label class="field">
        <span class="label">ID or friend code</span>
        <textarea class=${`input mono ${a.error ? "invalid" : ""}`} rows="2" data-testid="add-id"
          value=${a.id} onInput=${set("id")} spellcheck="false" autocomplete="off" autocapitalize="off"
          aria-invalid=${a.error ? "true" : "false"} aria-describedby="add-error"
          placeholder="p2pchat:…"></textarea>
        ${a.error && html`<span id="add-error" class="field-error" role="alert" data-testid="add-error">${a.error}</span>`}
      </label>
      <div class="field-row">
        <label class="field">
          <span class="label">Name (optional)</span>
          <input class="input" data-testid="add-name" value=${a.name} onInput=${set("name")} maxlength="64" placeholder="what you call them" />
        </label>
        <label class="field">
          <span class="label">Message (optional)</span>
          <input class="input" data-testid="add-message" value=${a.message} onInput=${set("message")} maxlength="500" placeholder="hi, it's me" />
        </label>
      </div>
      <button class="btn primary" type="submit" data-testid="add-submit" disabled=${a.busy}>
        <${Icon} name="userPlus" /> ${a.busy ? "Sending…" : "Send friend request"}
      </button>
    </form>
  </section>`;
}

function Identity() {
  const me = state.me;
  if (!me) return html`<section class="card"><p class="hint">Loading…</p></section>`;
  return html`<section class="card identity" aria-labelledby="me-title">
    <h2 id="me-title" class="card-title">You</h2>
    <div class="identity-grid">
      <div class="identity-text">
        <div class="kv">
          <div class="kv-head"><span class="label">Your ID</span><${CopyButton} what="id" text=${me.peer_id} label="your ID" /></div>
          <code class="mono break" data-testid="my-id">${me.peer_id}</code>
        </div>
        <div class="kv">
          <div class="kv-head"><span class="label">Your friend code</span><${CopyButton} what="code" text=${me.friend_code} label="your friend code" /></div>
          <code class="mono break code-box" data-testid="my-code">${me.friend_code}</code>
          <p class="hint">Send this to a friend: it is your ID plus a checksum and where to reach you.</p>
        </div>
      </div>
      <figure class="qr">
        <img src="/api/friend-code.svg" alt="QR code of your friend code" data-testid="qr" width="180" height="180" />
        <figcaption class="hint">Scan to get the friend code</figcaption>
      </figure>
    </div>
  </section>`;
}

export function Home() {
  return html`<main class="pane home" data-testid="home">
    <${PaneHeader} title="Add friend · my code" />
    <div class="pane-body scroll">
      <${Identity} />
      <${AddFriend} />
    </div>
  </main>`;
}

function Row({ k, v, testid }) {
  return html`<div class="stat-row" data-testid=${testid}><dt>${k}</dt><dd>${v}</dd></div>`;
}

export function Status() {
  useEffect(() => {
    const t = setInterval(refreshStatus, 3000);
    return () => clearInterval(t);
  }, []);
  const s = state.status;
  const list = (xs) => (xs && xs.length ? html`<ul class="plain mono small">${xs.map((x) => html`<li key=${x} class="break">${x}</li>`)}</ul>` : "none");
  return html`<main class="pane status" data-testid="status">
    <${PaneHeader} title="Status" />
    <div class="pane-body scroll">
      ${!s && html`<section class="card"><p class="hint">Loading…</p></section>`}
      ${s &&
      html`<section class="card">
        <h2 class="card-title">Network</h2>
        <dl class="stats">
          <${Row} k="Reachability" testid="st-reachability" v=${html`<span class=${`pill ${s.reachability}`}>${s.reachability}</span> ${s.reachability === "private" ? "(behind a NAT: reachable through relays)" : ""}`} />
          <${Row} k="DHT" testid="st-dht" v=${`${plural(s.dht_peers, "peer")} · ${s.dht_mode} mode`} />
          <${Row} k="Connections" testid="st-connections" v=${String(s.connections)} />
          <${Row} k="Relays" testid="st-relays" v=${list(s.relays)} />
          <${Row} k="Relay for others" v=${typeof s.relay_service === "boolean" ? (s.relay_service ? "yes" : "no") : String(s.relay_service)} />
          <${Row} k="LAN discovery" v=${s.mdns ? "on" : "off"} />
          <${Row} k="Public IPs" v=${list(s.public_ips)} />
          <${Row} k="Listening on" v=${list(s.listen_addrs)} />
        </dl>
      </section>
      <section class="card">
        <h2 class="card-title">This daemon</h2>
        <dl class="stats">
          <${Row} k="Friends" v=${`${s.friends_online} of ${s.friends} online`} />
          <${Row} k="Requests" v=${String(s.pending_requests)} />
          <${Row} k="Queued messages" v=${String(s.outbox)} />
          <${Row} k="Active transfers" v=${String(s.transfers_active)} />
          <${Row} k="Web app" testid="st-web" v=${html`<span class="mono break">${s.web_url || "off"}</span>`} />
          <${Row} k="Version" v=${`${s.version} · up ${duration(s.uptime_s)}`} />
          <${Row} k="Data directory" v=${html`<span class="mono break">${s.home}</span>`} />
        </dl>
      </section>`}
    </div>
  </main>`;
}
