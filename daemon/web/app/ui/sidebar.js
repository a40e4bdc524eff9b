// The list pane: who you are, requests, friends (online, unread, queued), navigation.
import { html } from "../html.js";
import { state } from "../store.js";
import { openChat, openView, openGroup, acceptRequest, declineRequest, createGroup } from "../app.js";
import { changed } from "../store.js";
import { hue, initial, plural, shortId } from "../format.js";
import { Icon } from "./icons.js";

export function Avatar({ contact, size = "" }) {
  const online = contact.state === "friend" && contact.online;
  return html`<span class=${`avatar ${hue(contact.peer_id)} ${size}`}>
    ${initial(contact.display_name)}
    ${contact.state === "friend" &&
    html`<span class=${`presence ${online ? "on" : "off"}`} title=${online ? "online" : "offline"}></span>`}
  </span>`;
}

function offersFrom(peer) {
  return Object.values(state.transfers).filter(
    (t) => t.peer_id === peer && t.direction === "in" && t.state === "offered",
  ).length;
}

function ContactRow({ contact }) {
  const selected = state.view === "chat" && state.selected === contact.peer_id;
  const offers = offersFrom(contact.peer_id);
  let sub;
  if (contact.state === "outgoing") sub = "request sent · waiting";
  else if (contact.state === "blocked") sub = "blocked";
  else sub = contact.online ? "online" : "offline";
  return html`<li>
    <button
      class=${`contact ${selected ? "selected" : ""}`}
      data-testid="contact"
      data-peer=${contact.peer_id}
      onClick=${() => openChat(contact.peer_id)}
    >
      <${Avatar} contact=${contact} />
      <span class="contact-text">
        <span class="contact-name">${contact.display_name}</span>
        <span class=${`contact-sub ${contact.online ? "is-online" : ""}`}>${sub}</span>
      </span>
      <span class="badges">
        ${offers > 0 &&
        html`<span class="badge file" title=${`${offers} file offer(s)`}><${Icon} name="file" /></span>`}
        ${contact.outbox > 0 &&
        html`<span class="badge queued" data-testid="outbox" title="messages not yet delivered"
          >${contact.outbox} queued</span
        >`}
        ${contact.unread > 0 &&
        html`<span class="badge unread" data-testid="unread" title="unread messages"
          >${contact.unread}</span
        >`}
      </span>
    </button>
  </li>`;
}

function RequestRow({ contact }) {
  const who = contact.their_name || contact.display_name;
  return html`<li class="request" data-testid="request" data-peer=${contact.peer_id}>
    <div class="request-head">
      <${Avatar} contact=${contact} />
      <span class="contact-text">
        <span class="contact-name">${who}</span>
        <span class="contact-sub mono" title=${contact.peer_id}>${shortId(contact.peer_id)}</span>
      </span>
    </div>
    ${contact.request_text && html`<p class="request-text">“${contact.request_text}”</p>`}
    <div class="row-actions">
      <button class="btn primary small" data-testid="accept-request" onClick=${() => acceptRequest(contact.peer_id)}>
        Accept
      </button>
      <button class="btn small" data-testid="decline-request" onClick=${() => declineRequest(contact.peer_id)}>
        Decline
      </button>
    </div>
  </li>`;
}

function GroupRow({ g }) {
  const selected = state.view === "group" && state.selectedGroup === g.id;
  const online = g.members.filter((m) => m.online && !m.me).length;
  const sub = g.status === "joined" ? `${plural(g.members.length, "member")} · ${online} online` : g.status;
  return html`<li>
    <button class=${`contact ${selected ? "selected" : ""}`} data-testid="group-row" data-group=${g.id} onClick=${() => openGroup(g.id)}>
      <span class=${`avatar ${hue(g.id)}`}>${initial(g.name)}</span>
      <span class="contact-text">
        <span class="contact-name">${g.name}</span>
        <span class="contact-sub">${sub}</span>
      </span>
      ${g.status === "invited" && html`<span class="badges"><span class="badge unread" data-testid="group-invited">invited</span></span>`}
    </button>
  </li>`;
}

function NewGroup() {
  const g = state.newGroup;
  return html`<form class="new-group" onSubmit=${(e) => { e.preventDefault(); createGroup(); }}>
    <input class="input" data-testid="new-group-name" placeholder="New group name" value=${g.name} maxlength="128"
      onInput=${(e) => { g.name = e.currentTarget.value; changed(); }} />
    <button class="btn small primary" data-testid="new-group-submit" disabled=${g.busy}>Create</button>
    ${g.error && html`<p class="field-error" data-testid="new-group-error">${g.error}</p>`}
  </form>`;
}

function byName(a, b) {
  if (a.online !== b.online) return a.online ? -1 : 1;
  return a.display_name.localeCompare(b.display_name);
}

export function Sidebar() {
  const all = Object.values(state.contacts);
  const requests = all.filter((c) => c.state === "incoming").sort(byName);
  const friends = all.filter((c) => c.state === "friend").sort(byName);
  const outgoing = all.filter((c) => c.state === "outgoing").sort(byName);
  const s = state.status;
  return html`<aside class="sidebar" aria-label="Friends">
    <header class="brand">
      <span class="logo" aria-hidden="true">p2p</span>
      <span class="brand-name">p2pchat</span>
      <span class=${`conn-dot ${state.conn}`} title=${state.conn === "open" ? "connected to your daemon" : "daemon not reachable"}></span>
    </header>
    <nav class="nav">
      <button class=${`nav-btn ${state.view === "home" ? "active" : ""}`} data-testid="nav-home" onClick=${() => openView("home")}>
        <${Icon} name="userPlus" /> <span>Add friend<span class="wide-only"> · my code</span></span>
      </button>
      <button class=${`nav-btn ${state.view === "status" ? "active" : ""}`} data-testid="nav-status" onClick=${() => openView("status")}>
        <${Icon} name="activity" /> Status
      </button>
    </nav>
    <div class="lists">
      ${requests.length > 0 &&
      html`<section class="group" data-testid="requests">
        <h2 class="group-title">Friend requests <span class="count">${requests.length}</span></h2>
        <ul class="plain">${requests.map((c) => html`<${RequestRow} key=${c.peer_id} contact=${c} />`)}</ul>
      </section>`}
      <section class="group" data-testid="friends">
        <h2 class="group-title">Friends <span class="count">${friends.length}</span></h2>
        ${friends.length === 0 &&
        html`<p class="empty">No friends yet. Share your friend code, or add theirs.</p>`}
        <ul class="plain">${friends.map((c) => html`<${ContactRow} key=${c.peer_id} contact=${c} />`)}</ul>
      </section>
      <section class="group" data-testid="groups">
        <h2 class="group-title">Groups <span class="count">${Object.keys(state.groups).length}</span></h2>
        <ul class="plain">${Object.values(state.groups)
          .filter((g) => g.status === "joined" || g.status === "invited")
          .sort((a, b) => (a.status === b.status ? a.name.localeCompare(b.name) : a.status === "invited" ? -1 : 1))
          .map((g) => html`<${GroupRow} key=${g.id} g=${g} />`)}</ul>
        <${NewGroup} />
      </section>
      ${outgoing.length > 0 &&
      html`<section class="group">
        <h2 class="group-title">Waiting for them <span class="count">${outgoing.length}</span></h2>
        <ul class="plain">${outgoing.map((c) => html`<${ContactRow} key=${c.peer_id} contact=${c} />`)}</ul>
      </section>`}
    </div>
    ${s &&
    html`<footer class="side-foot" data-testid="side-status">
      ${`${s.reachability || "?"} · ${plural(s.dht_peers, "DHT peer")} · ${s.connections} connected`}
    </footer>`}
  </aside>`;
}
