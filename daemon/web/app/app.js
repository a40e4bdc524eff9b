// The page's data layer: log-in, the WebSocket session, the daemon's events, and every
// action the views offer. Everything the page shows comes from the control API (docs/API.md).

import { Rpc, RpcError } from "./rpc.js";
import { state, changed, toast } from "./store.js";
import * as calls from "./call.js";
import { randomHex } from "./format.js";

export const rpc = new Rpc({
  onOpen: () => connected(),
  onEvent: (params) => onEvent(params),
  onDown: ({ retryAt }) => disconnected(retryAt),
  onRotated: () => {
    state.phase = "login";
    state.loginReason = "rotated";
    calls.teardown();
    changed();
  },
});

const HISTORY_PAGE = 50;

// --- log-in -------------------------------------------------------------------------------

async function post(path, body) {
  return fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
    credentials: "same-origin",
  });
}

/** The session's state: "ok", "none" (401) or "down" (the daemon does not answer). */
async function sessionState() {
  try {
    const r = await fetch("/api/session", { credentials: "same-origin" });
    if (r.ok) return "ok";
    return r.status === 401 ? "none" : "down";
  } catch (err) {
    return "down";
  }
}

/** Start: exchange a `#token=` for the session cookie, then open the WebSocket. */
export async function boot() {
  let loggedIn = false;
  const match = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (match) {
    const token = decodeURIComponent(match[1]);
    // The token must not stay in the address bar, the history or a bookmark.
    history.replaceState(null, "", location.pathname + location.search);
    try {
      const r = await post("/api/login", { token });
      if (r.status === 403) state.loginReason = "wrong_token";
      loggedIn = r.status === 204; // then the cookie is set: no need to ask again
    } catch (err) {
      // The daemon is down: the session check below says so.
    }
  }
  for (;;) {
    if (loggedIn) break;
    const s = await sessionState();
    if (s === "ok") break;
    if (s === "none") {
      state.phase = "login";
      changed();
      return;
    }
    state.conn = "down";
    state.phase = "app";
    state.retryAt = Date.now() + 2000;
    changed();
    await new Promise((r) => setTimeout(r, 2000));
  }
  // The app itself is drawn once its first lists are in (connected()): drawing the empty
  // frame first would cost a full render and layout before anything useful is on screen.
  state.conn = "connecting";
  rpc.connect();
}

// The log-in link opened in a tab that already shows the page: only the fragment changes.
window.addEventListener("hashchange", () => {
  if (/(?:^#|&)token=/.test(location.hash) && state.phase !== "app") {
    state.phase = "boot";
    state.loginReason = "";
    rpc.stopped = false;
    boot();
  }
});

async function disconnected(retryAt) {
  if (state.phase === "boot") state.phase = "app"; // the frame, with its "not reachable" banner
  state.conn = "down";
  state.retryAt = retryAt;
  changed();
  // A closed socket may mean the cookie no longer works (a new token): then log in again.
  if ((await sessionState()) === "none") {
    rpc.stop();
    state.phase = "login";
    state.loginReason = "rotated";
    calls.teardown();
    changed();
  }
}

// --- loading ------------------------------------------------------------------------------

async function connected() {
  state.conn = "open";
  changed();
  try {
    // All sent at once, subscribe first: a session answers in order, so whatever happens
    // while the lists load arrives as events too, without waiting a round trip for it.
    const [, me, friends, requests, transfers, callList, status, groupList] = await Promise.all([
      rpc.call("events.subscribe"),
      rpc.call("identity.get"),
      rpc.call("friends.list"),
      rpc.call("requests.list"),
      rpc.call("files.list"),
      rpc.call("calls.list"),
      rpc.call("status"),
      rpc.call("groups.list"),
    ]);
    state.me = me;
    state.status = status;
    const contacts = {};
    for (const c of [...friends.contacts, ...requests.requests]) contacts[c.peer_id] = c;
    state.contacts = contacts;
    const tr = {};
    for (const t of transfers.transfers) tr[t.id] = t;
    state.transfers = tr;
    const groups = {};
    for (const g of groupList.groups) groups[g.id] = g;
    state.groups = groups;
    state.gconvs = {};
    if (state.selectedGroup && groups[state.selectedGroup]) loadGroupHistory(state.selectedGroup);
    const live = callList.calls.find((c) => c.state !== "ended" && c.kind !== "group");
    setCall(live || null);
    // Conversations are reloaded (messages may have arrived while the socket was down).
    const open = state.selected;
    state.convs = {};
    if (open && contacts[open]) loadHistory(open);
    state.loaded = true;
    state.phase = "app";
    changed();
  } catch (err) {
    // A lost socket is the reconnect's to handle; any other failure shows the frame (not
    // "Loading…" for ever) with what went wrong.
    if (!(err instanceof RpcError) || err.name_ !== "not_connected") {
      state.phase = "app";
      toast(err.message, "error");
    }
  }
}

let friendsTimer = null;

/** friends.list again soon (events do not carry outbox counts). */
export function refreshFriendsSoon() {
  clearTimeout(friendsTimer);
  friendsTimer = setTimeout(async () => {
    try {
      const { contacts } = await rpc.call("friends.list");
      for (const c of contacts) state.contacts[c.peer_id] = c;
      changed();
    } catch (err) {
      // not connected: reloaded on reconnect
    }
  }, 300);
}

export async function refreshStatus() {
  try {
    state.status = await rpc.call("status");
    changed();
  } catch (err) {
    // shown as "not reachable" by the connection banner
  }
}

function conv(peer) {
  if (!state.convs[peer]) {
    state.convs[peer] = { messages: [], loaded: false, loading: false, done: false, error: "" };
  }
  return state.convs[peer];
}

function mergeMessages(list, incoming) {
  const byId = new Map(list.map((m) => [m.id + m.direction, m]));
  for (const m of incoming) byId.set(m.id + m.direction, { ...byId.get(m.id + m.direction), ...m });
  return [...byId.values()].sort((a, b) => (a.row ?? Infinity) - (b.row ?? Infinity) || a.stored_at - b.stored_at);
}

export async function loadHistory(peer) {
  const c = conv(peer);
  if (c.loading) return;
  c.loading = true;
  changed();
  try {
    const { messages } = await rpc.call("messages.history", { friend: peer, limit: HISTORY_PAGE });
    c.messages = mergeMessages(c.messages, messages);
    c.done = messages.length < HISTORY_PAGE;
    c.loaded = true;
    c.error = "";
  } catch (err) {
    c.error = err.message;
  } finally {
    c.loading = false;
    changed();
    markReadIfOpen(peer);
  }
}

/** The page before the oldest message shown (scrolling back). */
export async function loadOlder(peer) {
  const c = conv(peer);
  if (c.loading || c.done || !c.loaded || !c.messages.length) return;
  c.loading = true;
  changed();
  try {
    const before = c.messages[0].row;
    const { messages } = await rpc.call("messages.history", {
      friend: peer,
      limit: HISTORY_PAGE,
      before,
    });
    c.messages = mergeMessages(c.messages, messages);
    c.done = messages.length < HISTORY_PAGE;
  } catch (err) {
    c.error = err.message;
  } finally {
    c.loading = false;
    changed();
  }
}

const reading = new Set();
const readAgain = new Set(); // asked while a messages.read was on its way: one more after it
const readTimers = new Map();
const READ_DELAY_MS = 150;

/** A message arrived: mark it read a moment later, once for a burst of them, and after this
 * page has shown it (the daemon's write then does not compete with that render). */
function markReadSoon(peer) {
  if (readTimers.has(peer)) return;
  readTimers.set(
    peer,
    setTimeout(() => {
      readTimers.delete(peer);
      markReadIfOpen(peer);
    }, READ_DELAY_MS),
  );
}

/** messages.read for the open conversation when it has unread messages and is in view. */
export async function markReadIfOpen(peer) {
  const contact = state.contacts[peer];
  if (!contact || !contact.unread) return;
  if (reading.has(peer)) {
    readAgain.add(peer);
    return;
  }
  if (state.view !== "chat" || state.selected !== peer) return;
  if (document.visibilityState !== "visible" || !rpc.open) return;
  if (window.matchMedia("(max-width: 700px)").matches && state.pane !== "main") return;
  reading.add(peer);
  try {
    const { contact: updated } = await rpc.call("messages.read", { friend: peer });
    state.contacts[peer] = { ...state.contacts[peer], ...updated };
    changed();
  } catch (err) {
    // retried on the next message or view change
  } finally {
    reading.delete(peer);
    if (readAgain.delete(peer)) markReadSoon(peer);
  }
}

document.addEventListener("visibilitychange", () => {
  if (state.selected) markReadIfOpen(state.selected);
});

// --- events -------------------------------------------------------------------------------

/** Merge a contact from an event: events carry no outbox count (friends.list does). */
function putContact(c) {
  if (!c) return;
  const old = state.contacts[c.peer_id];
  state.contacts[c.peer_id] = old ? { ...c, outbox: old.outbox } : c;
}

function setCall(call) {
  state.call = call && call.state !== "ended" ? call : null;
  calls.onCall(call);
}

function onEvent(ev) {
  switch (ev.type) {
    case "message.received": {
      const m = ev.message;
      putContact(ev.contact);
      const c = state.convs[m.peer_id];
      if (c && c.loaded) c.messages = mergeMessages(c.messages, [m]);
      changed();
      markReadSoon(m.peer_id);
      break;
    }
    case "message.stored":
    case "message.delivered": {
      const m = ev.message;
      const c = state.convs[m.peer_id];
      if (c && c.loaded) c.messages = mergeMessages(c.messages, [m]);
      refreshFriendsSoon();
      changed();
      break;
    }
    case "friend.request":
    case "friend.accepted":
    case "contact.updated":
      putContact(ev.contact);
      changed();
      break;
    case "friend.online":
    case "friend.offline":
      putContact(ev.contact);
      refreshFriendsSoon();
      refreshStatus();
      changed();
      break;
    case "friend.removed":
      delete state.contacts[ev.peer_id];
      refreshFriendsSoon();
      changed();
      break;
    case "transfer.offered":
    case "transfer.updated":
      state.transfers[ev.transfer.id] = ev.transfer;
      if (ev.transfer.state === "completed") delete state.progress[ev.transfer.id];
      if (ev.type === "transfer.offered" && !(state.view === "chat" && state.selected === ev.transfer.peer_id)) {
        const who = state.contacts[ev.transfer.peer_id];
        toast(`${who ? who.display_name : "A friend"} offers ${ev.transfer.name}`);
      }
      changed();
      break;
    case "transfer.progress":
      state.progress[ev.id] = { bytes: ev.bytes, size: ev.size, rate: ev.rate, at: Date.now() };
      changed();
      break;
    case "call.incoming":
    case "call.updated":
    case "call.ended":
      if (ev.call.kind === "group") {
        // Group calls run on the daemon's own media: the page tells, the CLI joins.
        if (ev.type === "call.incoming") {
          toast(`A group call in ${ev.call.group} rings: join it with "p2pchat answer ${ev.call.group}"`);
        }
        break;
      }
      setCall(ev.call);
      if (ev.type === "call.ended") announceEnd(ev.call);
      refreshStatus();
      changed();
      break;
    case "call.media":
      calls.onMedia(ev);
      break;
    case "group.invited":
      state.groups[ev.group.id] = ev.group;
      toast(`You are invited to the group ${ev.group.name}`);
      changed();
      break;
    case "group.updated":
      state.groups[ev.group.id] = ev.group;
      changed();
      break;
    case "group.receipt":
      if (state.selectedGroup === ev.group) refreshReceiptsSoon(ev.group, [300]);
      break;
    case "group.message": {
      const m = ev.message;
      const c = state.gconvs[m.group];
      if (c && c.loaded) c.messages = mergeGroupMessages(c.messages, [m]);
      changed();
      break;
    }
    default:
      break;
  }
}

const REASONS = {
  hangup: "hung up",
  declined: "declined",
  busy: "busy",
  timeout: "no answer",
  failed: "the connection failed",
  glare: "you both called at once",
  unavailable: "unavailable",
};

function announceEnd(call) {
  const who = state.contacts[call.peer_id];
  const name = who ? who.display_name : "your friend";
  const reason = REASONS[call.reason] || call.reason || "ended";
  const by = call.reason === "hangup" ? (call.ended_by === "you" ? "you hung up" : `${name} hung up`) : reason;
  toast(`Call with ${name} ended: ${by}`);
}

// --- actions ------------------------------------------------------------------------------

export function openChat(peer) {
  state.selected = peer;
  state.selectedGroup = null;
  state.view = "chat";
  state.pane = "main";
  const c = conv(peer);
  if (!c.loaded && !c.loading) loadHistory(peer);
  changed();
  markReadIfOpen(peer);
}

export function openView(view) {
  state.view = view;
  state.pane = "main";
  if (view !== "chat") state.selected = null;
  if (view !== "group") state.selectedGroup = null;
  if (view === "status") refreshStatus();
  changed();
}

export function back() {
  state.pane = "list";
  changed();
}

/** How long a message whose request the connection lost is kept for sending again. */
const RESEND_FOR_MS = 60_000;

/**
 * Send one message. If the connection drops before the daemon answers, the daemon may or may
 * not have stored it: it is sent again, with the same id, once the socket is back (the daemon
 * stores an id once and answers a repeat with the stored message), so it is neither lost nor
 * doubled. Any other error, or no connection for RESEND_FOR_MS, is thrown.
 */
export async function sendMessage(peer, text) {
  const id = randomHex();
  const deadline = Date.now() + RESEND_FOR_MS;
  let message;
  for (;;) {
    try {
      message = await rpc.call("messages.send", { friend: peer, text, id });
      break;
    } catch (err) {
      if (err.name_ !== "not_connected" || Date.now() >= deadline) throw err;
      await rpc.whenOpen(deadline - Date.now());
    }
  }
  const c = conv(peer);
  if (c.loaded) c.messages = mergeMessages(c.messages, [message.message]);
  refreshFriendsSoon();
  changed();
}

export async function addFriend() {
  const a = state.add;
  const id = a.id.trim();
  if (!id) {
    a.error = "Paste your friend's ID or friend code.";
    changed();
    return;
  }
  a.busy = true;
  a.error = "";
  changed();
  try {
    const params = { id };
    if (a.name.trim()) params.name = a.name.trim();
    if (a.message.trim()) params.message = a.message.trim();
    const { contact } = await rpc.call("friends.add", params);
    state.contacts[contact.peer_id] = { ...state.contacts[contact.peer_id], ...contact };
    state.add = { id: "", name: "", message: "", error: "", busy: false };
    if (contact.state === "friend") {
      toast(`${contact.display_name} is your friend now`);
      openChat(contact.peer_id);
    } else {
      toast(`Friend request sent to ${contact.display_name}`);
    }
  } catch (err) {
    a.error = err.message;
  } finally {
    a.busy = false;
    changed();
  }
}

export async function acceptRequest(peer) {
  try {
    const { contact } = await rpc.call("requests.accept", { friend: peer });
    putContact(contact);
    refreshFriendsSoon();
    changed();
  } catch (err) {
    toast(err.message, "error");
  }
}

export async function declineRequest(peer) {
  try {
    await rpc.call("requests.decline", { friend: peer });
    delete state.contacts[peer];
    changed();
  } catch (err) {
    toast(err.message, "error");
  }
}

export async function transferAction(method, id) {
  try {
    const { transfer } = await rpc.call(method, { id });
    state.transfers[transfer.id] = transfer;
    changed();
  } catch (err) {
    toast(err.message, "error");
  }
}

// --- groups -------------------------------------------------------------------------------

function gconv(id) {
  if (!state.gconvs[id]) state.gconvs[id] = { messages: [], loaded: false, loading: false, error: "" };
  return state.gconvs[id];
}

/** Merge by sender and seq; shown in the group's order (clock, sender, seq), as every member. */
function mergeGroupMessages(list, incoming) {
  const byKey = new Map(list.map((m) => [`${m.sender}/${m.seq}`, m]));
  for (const m of incoming) byKey.set(`${m.sender}/${m.seq}`, m);
  return [...byKey.values()].sort(
    (a, b) => a.clock - b.clock || (a.sender < b.sender ? -1 : a.sender > b.sender ? 1 : 0) || a.seq - b.seq,
  );
}

export async function loadGroupHistory(id) {
  const c = gconv(id);
  if (c.loading) return;
  c.loading = true;
  changed();
  try {
    const { messages } = await rpc.call("groups.history", { group: id, limit: 200 });
    c.messages = mergeGroupMessages(c.messages, messages);
    c.loaded = true;
    c.error = "";
  } catch (err) {
    c.error = err.message;
  } finally {
    c.loading = false;
    changed();
  }
}

export function openGroup(id) {
  state.selectedGroup = id;
  state.selected = null;
  state.view = "group";
  state.pane = "main";
  const c = gconv(id);
  if (!c.loaded && !c.loading) loadGroupHistory(id);
  changed();
}

let receiptsTimer = null;

/** Receipts (held_by) are not events: the open group's newest messages again, soon. */
function refreshReceiptsSoon(id, delays = [400]) {
  clearTimeout(receiptsTimer);
  const [first, ...rest] = delays;
  if (first === undefined) return;
  receiptsTimer = setTimeout(() => {
    if (state.selectedGroup !== id) return;
    loadGroupHistory(id);
    refreshReceiptsSoon(id, rest);
  }, first);
}

export async function sendGroupMessage(id, text) {
  const { message } = await rpc.call("groups.send", { group: id, text });
  const c = gconv(id);
  if (c.loaded) c.messages = mergeGroupMessages(c.messages, [message]);
  changed();
  refreshReceiptsSoon(id);
}

export async function createGroup() {
  const g = state.newGroup;
  const name = g.name.trim();
  if (!name) {
    g.error = "Give the group a name.";
    changed();
    return;
  }
  g.busy = true;
  g.error = "";
  changed();
  try {
    const { group } = await rpc.call("groups.create", { name });
    state.groups[group.id] = group;
    state.newGroup = { name: "", error: "", busy: false };
    openGroup(group.id);
  } catch (err) {
    g.error = err.message;
  } finally {
    g.busy = false;
    changed();
  }
}

/** One of the groups.* changes (invite, join, decline, leave, remove, rename, admin). */
export async function groupAction(method, params) {
  try {
    const { group } = await rpc.call(method, params);
    state.groups[group.id] = group;
    if (method === "groups.join") openGroup(group.id);
    changed();
    return true;
  } catch (err) {
    toast(err.message, "error");
    return false;
  }
}

// --- uploads: POST /api/files, progress from XMLHttpRequest -------------------------------

let uploadSeq = 0;

export function sendFiles(peer, files) {
  for (const file of files) upload(peer, file);
}

function upload(peer, file) {
  const key = `u${++uploadSeq}`;
  const entry = { key, friend: peer, name: file.name, loaded: 0, total: file.size, error: "" };
  state.uploads[key] = entry;
  changed();
  const xhr = new XMLHttpRequest();
  const q = new URLSearchParams({ friend: peer, name: file.name });
  xhr.open("POST", `/api/files?${q}`);
  xhr.responseType = "json";
  xhr.upload.onprogress = (e) => {
    entry.loaded = e.loaded;
    if (e.lengthComputable) entry.total = e.total;
    changed();
  };
  const done = () => {
    delete state.uploads[key];
    changed();
  };
  xhr.onload = () => {
    const body = xhr.response || {};
    if (xhr.status === 200 && body.transfer) {
      state.transfers[body.transfer.id] = body.transfer;
      done();
    } else {
      const msg = (body.error && body.error.message) || `upload failed (HTTP ${xhr.status})`;
      toast(`${file.name}: ${msg}`, "error", 8000);
      done();
    }
  };
  xhr.onerror = () => {
    toast(`${file.name}: the daemon is not reachable`, "error", 8000);
    done();
  };
  xhr.send(file);
}

// --- copy to the clipboard ----------------------------------------------------------------

export async function copy(what, text) {
  try {
    await navigator.clipboard.writeText(text);
  } catch (err) {
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "offscreen";
    document.body.appendChild(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  state.copied = what;
  changed();
  setTimeout(() => {
    if (state.copied === what) {
      state.copied = "";
      changed();
    }
  }, 1500);
}
