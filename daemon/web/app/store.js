// The page's state: one plain object, changed in place by app.js and call.js, then
// `changed()` schedules one render of the whole tree (the page is small; Preact diffs it).

export const state = {
  phase: "boot", // boot | login | app
  loginReason: "", // why the log-in page shows: "", "wrong_token", "rotated"
  conn: "connecting", // connecting | open | down
  retryAt: 0,
  loaded: false, // the first lists have arrived (the page is interactive)
  me: null, // identity.get
  status: null, // status
  contacts: {}, // peer_id -> Contact (every state)
  convs: {}, // peer_id -> {messages, loaded, loading, done, error}
  transfers: {}, // id -> Transfer
  progress: {}, // id -> {bytes, size, rate, at}
  uploads: {}, // key -> {key, friend, name, loaded, total, error}
  call: null, // the daemon's current Call (null when none)
  media: null, // this page's media for a call it owns (see call.js)
  groups: {}, // id -> Group
  gconvs: {}, // group id -> {messages, loaded, loading, error}
  view: "home", // home | chat | group | status
  selected: null, // peer_id of the open conversation
  selectedGroup: null, // id of the open group
  newGroup: { name: "", error: "", busy: false },
  pane: "list", // phones: list | main
  add: { id: "", name: "", message: "", error: "", busy: false },
  toasts: [],
  copied: "", // which copy button just copied
};

const listeners = new Set();
let queued = false;

export function subscribe(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

export function changed() {
  if (queued) return;
  queued = true;
  // A microtask: after the current event's handler (so its changes render once), without
  // the delay a timer adds before a message or a state change reaches the screen.
  queueMicrotask(() => {
    queued = false;
    for (const fn of listeners) fn();
  });
}

let toastId = 0;

/** A short notice at the bottom of the page; `kind` is "info" or "error". */
export function toast(text, kind = "info", ms = 4000) {
  const id = ++toastId;
  state.toasts = [...state.toasts, { id, text, kind }];
  changed();
  setTimeout(() => {
    state.toasts = state.toasts.filter((t) => t.id !== id);
    changed();
  }, ms);
}
