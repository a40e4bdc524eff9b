// A group: its messages in the group's order, who holds yours, the members (invite, remove,
// admins, rename, leave) and the composer; an invitation to join or decline.
import { useRef, useLayoutEffect, useState } from "../vendor/hooks.module.js";
import { html } from "../html.js";
import { state, toast } from "../store.js";
import { back, groupAction, sendGroupMessage, loadGroupHistory } from "../app.js";
import * as fmt from "../format.js";
import { Icon } from "./icons.js";

function memberName(g, peer) {
  const m = g.members.find((x) => x.peer_id === peer);
  if (m && m.me) return "you";
  if (m && m.name) return m.name;
  const c = state.contacts[peer];
  return c ? c.display_name : fmt.shortId(peer);
}

function GroupMessage({ g, m }) {
  const all = m.held_by >= m.members;
  return html`<li class=${`msg ${m.direction}`} data-testid="group-message" data-direction=${m.direction} data-sender=${m.sender}>
    <div class="bubble">
      ${m.direction === "in" && html`<span class="msg-sender" data-testid="msg-sender">${memberName(g, m.sender)}</span>`}
      <p class="msg-text" data-testid="msg-text">${m.text}</p>
      <span class="msg-meta">${fmt.time(m.sent_at)}
        ${m.direction === "out" &&
        html`<span class=${`msg-state ${all ? "delivered" : "pending"}`} data-testid="held" data-held=${m.held_by} data-members=${m.members}
          title=${`held by ${m.held_by} of ${m.members} members`}>
          <${Icon} name=${all ? "checks" : "clock"} /><span class="held-label">${m.held_by}/${m.members}</span></span>`}
      </span>
    </div>
  </li>`;
}

function Members({ g }) {
  const [friend, setFriend] = useState("");
  const [name, setName] = useState("");
  const me = g.members.find((m) => m.me) || {};
  const inGroup = new Set(g.members.map((m) => m.peer_id));
  const invitable = Object.values(state.contacts).filter((c) => c.state === "friend" && !inGroup.has(c.peer_id));
  const joined = g.status === "joined";
  return html`<details class="members" data-testid="group-members">
    <summary>${fmt.plural(g.members.length, "member")} · ${g.members.filter((m) => m.online && !m.me).length} online</summary>
    <ul class="plain">
      ${g.members.map(
        (m) => html`<li key=${m.peer_id} class="member" data-testid="member" data-peer=${m.peer_id}>
          <span class=${`presence ${m.online ? "on" : "off"}`}></span>
          <span class="member-name">${m.me ? "you" : m.name || fmt.shortId(m.peer_id)}</span>
          ${!m.friend && !m.me && html`<span class="member-tag" title="a member who is not your friend">not a friend</span>`}
          ${m.owner ? html`<span class="member-tag">owner</span>` : m.admin && html`<span class="member-tag">admin</span>`}
          ${joined && me.admin && !m.me && !m.owner &&
          html`<button class="btn small" data-testid="member-remove"
            onClick=${() => groupAction("groups.remove", { group: g.id, member: m.peer_id })}>Remove</button>`}
          ${joined && me.owner && !m.me &&
          html`<button class="btn small" data-testid="member-admin"
            onClick=${() => groupAction("groups.admin", { group: g.id, member: m.peer_id, admin: !m.admin })}>${m.admin ? "Not admin" : "Make admin"}</button>`}
        </li>`,
      )}
    </ul>
    ${joined && me.admin && invitable.length > 0 &&
    html`<form class="row-actions" onSubmit=${async (e) => {
      e.preventDefault();
      if (friend && (await groupAction("groups.invite", { group: g.id, friend }))) setFriend("");
    }}>
      <select class="input" data-testid="invite-friend" value=${friend} onChange=${(e) => setFriend(e.currentTarget.value)}>
        <option value="">Invite a friend…</option>
        ${invitable.map((c) => html`<option key=${c.peer_id} value=${c.peer_id}>${c.display_name}</option>`)}
      </select>
      <button class="btn small primary" data-testid="invite-submit" disabled=${!friend}>Invite</button>
    </form>`}
    ${joined && me.admin &&
    html`<form class="row-actions" onSubmit=${async (e) => {
      e.preventDefault();
      if (name.trim() && (await groupAction("groups.rename", { group: g.id, name: name.trim() }))) setName("");
    }}>
      <input class="input" data-testid="rename-group" placeholder="New name" value=${name} onInput=${(e) => setName(e.currentTarget.value)} maxlength="128" />
      <button class="btn small" disabled=${!name.trim()}>Rename</button>
    </form>`}
    ${joined &&
    html`<div class="row-actions"><button class="btn small danger" data-testid="group-leave"
      onClick=${() => groupAction("groups.leave", { group: g.id })}>Leave the group</button></div>`}
  </details>`;
}

function Timeline({ g }) {
  const ref = useRef(null);
  const conv = state.gconvs[g.id] || { messages: [], loaded: false, loading: false, error: "" };
  const last = conv.messages.length ? conv.messages[conv.messages.length - 1] : null;
  const lastKey = last ? `${last.sender}/${last.seq}` : "";
  useLayoutEffect(() => {
    const box = ref.current;
    if (box) box.scrollTop = box.scrollHeight;
  }, [g.id, lastKey]);
  return html`<div class="timeline scroll" ref=${ref} data-testid="group-timeline" aria-live="polite">
    ${conv.loading && !conv.loaded && html`<p class="loading-older">Loading…</p>`}
    ${conv.error && html`<p class="field-error">${conv.error} <button class="btn small" onClick=${() => loadGroupHistory(g.id)}>Retry</button></p>`}
    ${conv.loaded && conv.messages.length === 0 && html`<p class="history-start">No messages yet. You read what is sent from when you joined.</p>`}
    <ul class="plain msgs">
      ${conv.messages.map((m) => html`<${GroupMessage} key=${`${m.sender}/${m.seq}`} g=${g} m=${m} />`)}
    </ul>
  </div>`;
}

function Composer({ g }) {
  const [text, setText] = useState("");
  const area = useRef(null);
  const joined = g.status === "joined";
  const send = async () => {
    // As the 1:1 composer: what it holds now, cleared at once, put back if the send fails.
    const t = area.current ? area.current.value : text;
    if (!t.trim()) return;
    setText("");
    try {
      await sendGroupMessage(g.id, t);
    } catch (err) {
      setText((cur) => (cur.trim() ? `${t}\n${cur}` : t));
      // A group message has no client id, so one whose answer the connection lost may have
      // been sent all the same: say so rather than invite a double.
      const lost = err.name_ === "not_connected";
      toast(lost ? "The connection dropped: check the conversation before sending this again" : `Not sent: ${err.message}`, "error");
    }
  };
  return html`<form class="composer" onSubmit=${(e) => { e.preventDefault(); send(); }}>
    <textarea ref=${area} class="input compose-text" rows="1" data-testid="group-composer" disabled=${!joined}
      placeholder=${joined ? `Message ${g.name}` : `You are not in this group (${g.status})`}
      value=${text} onInput=${(e) => setText(e.currentTarget.value)} maxlength="16384" aria-label="Message"
      onKeyDown=${(e) => {
        if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
          e.preventDefault();
          send();
        }
      }}></textarea>
    <button class="icon-btn send" type="submit" data-testid="group-send" aria-label="Send" disabled=${!joined || !text.trim()}>
      <${Icon} name="send" />
    </button>
  </form>`;
}

const STATUS_TEXT = {
  invited: "you are invited",
  declined: "you declined",
  left: "you left",
  removed: "you were removed",
};

export function GroupChat() {
  const g = state.groups[state.selectedGroup];
  if (!g) return html`<main class="pane chat"><div class="pane-body"><p class="empty">No such group.</p></div></main>`;
  const invited = g.status === "invited";
  return html`<main class="pane chat" data-testid="group-chat" data-group=${g.id}>
    <header class="pane-head chat-head">
      <button class="icon-btn back" aria-label="Back to the list" onClick=${back}><${Icon} name="back" /></button>
      <span class=${`avatar ${fmt.hue(g.id)}`}>${fmt.initial(g.name)}</span>
      <div class="chat-title">
        <h1 class="pane-title" data-testid="group-name">${g.name}</h1>
        <span class="contact-sub">${STATUS_TEXT[g.status] || fmt.plural(g.members.length, "member")}</span>
      </div>
    </header>
    ${invited
      ? html`<div class="pane-body invitation" data-testid="invitation">
          <p>${memberName(g, g.inviter)} invited you to <strong>${g.name}</strong> (${fmt.plural(g.members.length, "member")}).
            Until you join, your daemon takes part in nothing.</p>
          <div class="row-actions">
            <button class="btn primary" data-testid="group-join" onClick=${() => groupAction("groups.join", { group: g.id })}>Join</button>
            <button class="btn" data-testid="group-decline" onClick=${() => groupAction("groups.decline", { group: g.id })}>Decline</button>
          </div>
        </div>`
      : html`<${Members} g=${g} /><${Timeline} g=${g} /><${Composer} key=${g.id} g=${g} />`}
  </main>`;
}
