// A conversation: history with scroll-back, delivery state, files in the timeline, the
// composer (text, file picker, drag & drop), and the call buttons.
import { Component } from "../vendor/preact.module.js";
import { useRef, useLayoutEffect, useState, useEffect } from "../vendor/hooks.module.js";
import { html } from "../html.js";
import { state, toast } from "../store.js";
import { back, loadOlder, sendMessage, sendFiles, transferAction, loadHistory } from "../app.js";
import { startCall, answer } from "../call.js";
import * as fmt from "../format.js";
import { Icon } from "./icons.js";
import { Avatar } from "./sidebar.js";

const LIVE = new Set(["offering", "offered", "active"]);

function Header({ contact }) {
  const call = state.call;
  const ringingHere = call && call.state === "ringing_in" && call.peer_id === contact.peer_id;
  const busy = !!(call || state.media);
  const canCall = contact.state === "friend";
  let sub = contact.online ? "online" : "offline";
  if (contact.state === "outgoing") sub = "request sent: you can chat once they accept";
  return html`<header class="pane-head chat-head">
    <button class="icon-btn back" aria-label="Back to the list" onClick=${back}><${Icon} name="back" /></button>
    <${Avatar} contact=${contact} />
    <div class="chat-title">
      <h1 class="pane-title" data-testid="chat-name">${contact.display_name}</h1>
      <span class=${`contact-sub ${contact.online ? "is-online" : ""}`} title=${contact.peer_id}>${sub} · <span class="mono">${fmt.shortId(contact.peer_id)}</span></span>
    </div>
    <div class="head-actions">
      ${ringingHere
        ? html`<button class="btn primary small" onClick=${answer}><${Icon} name="phone" /> Answer</button>`
        : html`
          <button class="icon-btn" data-testid="call-audio" aria-label="Audio call" title="Audio call"
            disabled=${!canCall || busy} onClick=${() => startCall(contact.peer_id, false)}><${Icon} name="phone" /></button>
          <button class="icon-btn" data-testid="call-video" aria-label="Video call" title="Video call"
            disabled=${!canCall || busy} onClick=${() => startCall(contact.peer_id, true)}><${Icon} name="video" /></button>`}
    </div>
  </header>`;
}

function MessageState({ m }) {
  if (m.direction !== "out") return null;
  if (m.state === "delivered") {
    return html`<span class="msg-state delivered" data-testid="msg-state" data-state="delivered" title=${`delivered ${m.delivered_at ? fmt.time(m.delivered_at) : ""}`}>
      <${Icon} name="checks" /><span class="sr">delivered</span></span>`;
  }
  if (m.holders > 0) {
    // Held by other friends (or DHT nodes near the friend's ID) while the friend is offline.
    const where = m.holders === 1 ? "1 holder" : `${m.holders} holders`;
    return html`<span class="msg-state stored" data-testid="msg-state" data-state="stored" title=${`stored for delivery at ${where}: your friend gets it when back online, even if you are not`}>
      <${Icon} name="clock" /><span class="stored-label">stored for delivery · ${where}</span></span>`;
  }
  return html`<span class="msg-state pending" data-testid="msg-state" data-state="pending" title="not yet delivered: waits in your daemon's outbox">
    <${Icon} name="clock" /><span class="sr">pending</span></span>`;
}

/** One message, drawn again only when its record changes: a new message re-renders itself,
 * not every bubble of a long conversation (mergeMessages keeps unchanged records as they are). */
class Message extends Component {
  shouldComponentUpdate(next) {
    return next.m !== this.props.m;
  }

  render({ m }) {
    return html`<li class=${`msg ${m.direction}`} data-testid="message" data-id=${m.id} data-state=${m.state} data-direction=${m.direction}>
    <div class="bubble">
      <p class="msg-text" data-testid="msg-text">${m.text}</p>
      <span class="msg-meta">${fmt.time(m.sent_at)} <${MessageState} m=${m} /></span>
    </div>
  </li>`;
  }
}

function Progress({ done, total }) {
  const pct = total > 0 ? Math.min(100, (100 * done) / total) : 0;
  return html`<div class="progress" role="progressbar" aria-valuemin="0" aria-valuemax="100"
    aria-valuenow=${Math.round(pct)} data-testid="progress">
    <div class="progress-bar" style=${{ width: `${pct.toFixed(1)}%` }}></div>
  </div>`;
}

const STATE_TEXT = {
  offering: "reaching your friend…",
  offered: "waiting for an answer",
  active: "transferring",
  completed: "done",
  declined: "declined",
  cancelled: "cancelled",
  failed: "failed",
};

function TransferCard({ t }) {
  const p = state.progress[t.id];
  const live = LIVE.has(t.state);
  const done = p ? p.bytes : t.state === "completed" ? t.size : t.bytes;
  const ratePerSec = p ? p.rate : 0;
  const left = ratePerSec > 0 ? (t.size - done) / ratePerSec : null;
  let text = STATE_TEXT[t.state] || t.state;
  if (t.direction === "in" && t.state === "offered") text = "offered to you";
  return html`<li class=${`msg ${t.direction} file-item`} data-testid="transfer" data-id=${t.id} data-state=${t.state}>
    <div class=${`bubble file-card ${t.state}`}>
      <div class="file-head">
        <span class="file-icon"><${Icon} name="file" /></span>
        <span class="file-name break" data-testid="transfer-name" title=${t.name}>${t.name}</span>
        <span class="file-size">${fmt.bytes(t.size)}</span>
      </div>
      ${t.state === "active" && html`<${Progress} done=${done} total=${t.size} />`}
      <div class="file-status">
        <span data-testid="transfer-state">${text}</span>
        ${t.state === "active" &&
        html`<span class="file-rate" data-testid="transfer-rate">${fmt.bytes(done)} of ${fmt.bytes(t.size)}${ratePerSec > 0 ? ` · ${fmt.rate(ratePerSec)}` : ""}${left != null ? ` · ${fmt.duration(left)} left` : ""}</span>`}
        ${t.error && t.state !== "completed" && html`<span class="file-error">${t.error}</span>`}
        ${t.data_path && t.state === "completed" && html`<span class="file-path" title="how the bytes flowed">${t.data_path === "tcp" ? "direct" : "in-stream"}</span>`}
      </div>
      <div class="row-actions">
        ${t.direction === "in" && t.state === "offered" &&
        html`<button class="btn primary small" data-testid="transfer-accept" onClick=${() => transferAction("files.accept", t.id)}>Accept</button>
          <button class="btn small" data-testid="transfer-decline" onClick=${() => transferAction("files.decline", t.id)}>Decline</button>`}
        ${live && !(t.direction === "in" && t.state === "offered") &&
        html`<button class="btn small" data-testid="transfer-cancel" onClick=${() => transferAction("files.cancel", t.id)}>Cancel</button>`}
        ${t.direction === "in" && t.state === "completed" &&
        html`<a class="btn primary small" data-testid="transfer-download" href=${`/api/files/${t.id}/download`} download=${t.name}>
          <${Icon} name="download" /> Download</a>`}
      </div>
      <span class="msg-meta">${fmt.time(t.created_at)}</span>
    </div>
  </li>`;
}

function UploadCard({ u }) {
  return html`<li class="msg out file-item" data-testid="upload">
    <div class="bubble file-card">
      <div class="file-head">
        <span class="file-icon"><${Icon} name="file" /></span>
        <span class="file-name break">${u.name}</span>
        <span class="file-size">${fmt.bytes(u.total)}</span>
      </div>
      <${Progress} done=${u.loaded} total=${u.total} />
      <div class="file-status"><span>handing it to your daemon… ${u.total ? Math.floor((100 * u.loaded) / u.total) : 0}%</span></div>
    </div>
  </li>`;
}

function timeline(peer) {
  const conv = state.convs[peer] || { messages: [], done: false };
  const msgs = conv.messages;
  const oldest = msgs.length ? msgs[0].stored_at : Infinity;
  const files = Object.values(state.transfers).filter(
    (t) => t.peer_id === peer && (conv.done || t.created_at >= oldest),
  );
  const items = [
    ...msgs.map((m) => ({ key: `m${m.id}${m.direction}`, at: m.stored_at, m })),
    ...files.map((t) => ({ key: `t${t.id}`, at: t.created_at, t })),
  ].sort((a, b) => a.at - b.at);
  const out = [];
  let lastDay = "";
  for (const it of items) {
    const d = fmt.dayKey(it.at);
    if (d !== lastDay) {
      out.push({ key: `d${d}`, day: fmt.day(it.at) });
      lastDay = d;
    }
    out.push(it);
  }
  for (const u of Object.values(state.uploads)) if (u.friend === peer) out.push({ key: u.key, u });
  return out;
}

const following = new WeakSet();

/** Scroll ``box`` to its end before the next frame is drawn (once per frame). */
function followBottom(box) {
  if (following.has(box)) return;
  following.add(box);
  requestAnimationFrame(() => {
    following.delete(box);
    box.scrollTop = box.scrollHeight;
  });
}

function Timeline({ peer }) {
  const ref = useRef(null);
  const committed = useRef({ peer: null, first: "", last: "" }); // keys as last shown
  const atBottom = useRef(true); // as of the last scroll: the newest message is in view
  const conv = state.convs[peer] || { messages: [], loaded: false, loading: false, done: false };
  const items = timeline(peer);
  const first = items.length ? items[0].key : "";
  const last = items.length ? items[items.length - 1].key : "";
  const lastItem = items[items.length - 1];
  const mine = !!(lastItem && ((lastItem.m && lastItem.m.direction === "out") || lastItem.u));
  const el = ref.current;
  const k0 = committed.current;
  // The scroll box before older messages are added above, to keep the view still. Layout is
  // read only then: a read here makes the browser lay the page out before this render, and
  // once more after it.
  const pre = el && k0.peer === peer && first !== k0.first && last === k0.last
    ? { height: el.scrollHeight, top: el.scrollTop }
    : null;
  useLayoutEffect(() => {
    const box = ref.current;
    if (!box) return;
    const k = committed.current;
    if (k.peer === peer && first === k.first && last === k.last) return; // nothing moved
    if (k.peer !== peer) {
      box.scrollTop = box.scrollHeight; // a conversation opens at its newest message
      atBottom.current = true;
    } else if (pre) {
      box.scrollTop = box.scrollHeight - pre.height + pre.top; // older ones added above
    } else if (last !== k.last && (atBottom.current || mine)) {
      // Something new at the bottom, and we follow it: just before the next frame, so a
      // burst of renders lays the page out once, and not here in the middle of the render.
      followBottom(box);
    }
    committed.current = { peer, first, last };
  });
  // A short first page that does not fill the pane: load more until it does.
  useLayoutEffect(() => {
    const box = ref.current;
    if (box && conv.loaded && !conv.done && !conv.loading && box.scrollHeight <= box.clientHeight) {
      loadOlder(peer);
    }
  }, [peer, first, conv.loaded, conv.done, conv.loading]);
  const onScroll = (e) => {
    const box = e.currentTarget;
    atBottom.current = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
    if (box.scrollTop < 120) loadOlder(peer);
  };
  return html`<div class="timeline scroll" ref=${ref} onScroll=${onScroll} data-testid="timeline" aria-live="polite">
    ${conv.loading && html`<p class="loading-older">Loading…</p>`}
    ${conv.loaded && conv.done && html`<p class="history-start">Start of your conversation</p>`}
    ${conv.error && html`<p class="field-error">${conv.error} <button class="btn small" onClick=${() => loadHistory(peer)}>Retry</button></p>`}
    <ul class="plain msgs">
      ${items.map((it) => {
        if (it.day) return html`<li key=${it.key} class="day-sep"><span>${it.day}</span></li>`;
        if (it.m) return html`<${Message} key=${it.key} m=${it.m} />`;
        if (it.t) return html`<${TransferCard} key=${it.key} t=${it.t} />`;
        return html`<${UploadCard} key=${it.key} u=${it.u} />`;
      })}
    </ul>
  </div>`;
}

function Composer({ contact }) {
  const [text, setText] = useState("");
  const area = useRef(null);
  const friend = contact.state === "friend";
  useEffect(() => {
    if (area.current && window.matchMedia("(min-width: 701px)").matches) area.current.focus();
  }, [contact.peer_id]);
  useLayoutEffect(() => {
    const a = area.current;
    if (!a) return;
    // Grow with the text, up to a limit. Measuring lays the page out, so an empty composer
    // (as after each send) just goes back to its one-line height.
    a.style.height = "auto";
    if (text) a.style.height = `${Math.min(a.scrollHeight, 160)}px`;
  }, [text]);
  const send = async () => {
    // What the composer holds now (a key may come before the render of what was typed),
    // cleared at once: the next message can be typed while this one is on its way, and a
    // send that ends later never clears what was typed since.
    const t = area.current ? area.current.value : text;
    if (!t.trim()) return;
    setText("");
    try {
      await sendMessage(contact.peer_id, t);
    } catch (err) {
      // Not lost: back in the composer, before whatever was typed since.
      setText((cur) => (cur.trim() ? `${t}\n${cur}` : t));
      toast(`Not sent: ${err.message}`, "error");
    } finally {
      if (area.current) area.current.focus();
    }
  };
  const onKey = (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      send();
    }
  };
  const onFiles = (e) => {
    const files = [...e.currentTarget.files];
    e.currentTarget.value = "";
    if (files.length) sendFiles(contact.peer_id, files);
  };
  return html`<form class="composer" onSubmit=${(e) => { e.preventDefault(); send(); }}>
    <label class=${`icon-btn attach ${friend ? "" : "disabled"}`} title="Send a file" aria-label="Send a file">
      <${Icon} name="clip" />
      <input type="file" multiple class="file-input" data-testid="file-input" disabled=${!friend} onChange=${onFiles} />
    </label>
    <textarea ref=${area} class="input compose-text" rows="1" name="text" data-testid="composer"
      placeholder=${friend ? `Message ${contact.display_name}` : "You can write once they accept your request"}
      value=${text} disabled=${!friend} onInput=${(e) => setText(e.currentTarget.value)} onKeyDown=${onKey}
      maxlength="16384" aria-label="Message"></textarea>
    <button class="icon-btn send" type="submit" data-testid="send" aria-label="Send" disabled=${!friend || !text.trim()}>
      <${Icon} name="send" />
    </button>
  </form>`;
}

export function Chat() {
  const contact = state.contacts[state.selected];
  const [drag, setDrag] = useState(0);
  if (!contact) {
    return html`<main class="pane chat"><header class="pane-head">
      <button class="icon-btn back" aria-label="Back to the list" onClick=${back}><${Icon} name="back" /></button>
      <h1 class="pane-title">Not a contact any more</h1></header>
      <div class="pane-body"><p class="empty">This conversation's contact was removed.</p></div></main>`;
  }
  const hasFiles = (e) => e.dataTransfer && [...e.dataTransfer.types].includes("Files");
  const friend = contact.state === "friend";
  const onDragEnter = (e) => {
    if (!hasFiles(e) || !friend) return;
    e.preventDefault();
    setDrag((n) => n + 1);
  };
  const onDragOver = (e) => {
    if (!hasFiles(e) || !friend) return;
    e.preventDefault();
    e.dataTransfer.dropEffect = "copy";
  };
  const onDragLeave = (e) => {
    if (!hasFiles(e)) return;
    setDrag((n) => Math.max(0, n - 1));
  };
  const onDrop = (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    setDrag(0);
    if (friend) sendFiles(contact.peer_id, [...e.dataTransfer.files]);
  };
  return html`<main class="pane chat" data-testid="chat" data-peer=${contact.peer_id}
    onDragEnter=${onDragEnter} onDragOver=${onDragOver} onDragLeave=${onDragLeave} onDrop=${onDrop}>
    <${Header} contact=${contact} />
    <${Timeline} peer=${contact.peer_id} />
    <${Composer} key=${contact.peer_id} contact=${contact} />
    ${drag > 0 && html`<div class="drop-overlay" data-testid="drop-overlay"><div><${Icon} name="file" /><p>Drop to send to ${contact.display_name}</p></div></div>`}
  </main>`;
}
