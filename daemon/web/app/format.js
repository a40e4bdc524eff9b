// Pure formatting helpers (no DOM, no state).

const UNITS = ["B", "KB", "MB", "GB", "TB", "PB"];

/** 1536 -> "1.5 KB" (decimal-free below 10 of a unit only for bytes). */
export function bytes(n) {
  if (n == null || !isFinite(n)) return "?";
  let i = 0;
  let v = Math.max(0, n);
  while (v >= 1000 && i < UNITS.length - 1) {
    v /= 1024;
    i += 1;
  }
  const digits = i === 0 || v >= 100 ? 0 : v >= 10 ? 1 : 2;
  return `${v.toFixed(digits)} ${UNITS[i]}`;
}

export function rate(bytesPerSecond) {
  return `${bytes(bytesPerSecond)}/s`;
}

/** Seconds -> "45 s", "3 min 05 s", "1 h 02 min". */
export function duration(seconds) {
  if (seconds == null || !isFinite(seconds) || seconds < 0) return "";
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${String(s % 60).padStart(2, "0")} s`;
  const h = Math.floor(m / 60);
  return `${h} h ${String(m % 60).padStart(2, "0")} min`;
}

/** A call's running time: "0:07", "12:34", "1:02:03". */
export function clock(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = String(s % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${sec}` : `${m}:${sec}`;
}

function sameDay(a, b) {
  return (
    a.getFullYear() === b.getFullYear() &&
    a.getMonth() === b.getMonth() &&
    a.getDate() === b.getDate()
  );
}

// Formatters are made once: toLocaleTimeString() builds a new one per call, which costs more
// than the rest of a message's render (a conversation formats every message it shows).
const TIME = new Intl.DateTimeFormat([], { hour: "2-digit", minute: "2-digit" });
const DAY = { weekday: "short", day: "numeric", month: "short" };
const DAY_THIS_YEAR = new Intl.DateTimeFormat([], DAY);
const DAY_OTHER_YEAR = new Intl.DateTimeFormat([], { ...DAY, year: "numeric" });

export function time(ms) {
  return TIME.format(new Date(ms));
}

export function day(ms) {
  const d = new Date(ms);
  const now = new Date();
  if (sameDay(d, now)) return "Today";
  const y = new Date(now);
  y.setDate(now.getDate() - 1);
  if (sameDay(d, y)) return "Yesterday";
  return (d.getFullYear() === now.getFullYear() ? DAY_THIS_YEAR : DAY_OTHER_YEAR).format(d);
}

export function dayKey(ms) {
  const d = new Date(ms);
  return `${d.getFullYear()}-${d.getMonth()}-${d.getDate()}`;
}

/** The CLI's short form of an ID: its first 16 characters. */
export function shortId(id) {
  return id && id.length > 20 ? `${id.slice(0, 16)}…` : id || "";
}

/** A stable colour class (hue-0 … hue-7) for an ID. */
export function hue(id) {
  let h = 0;
  for (let i = 0; i < (id || "").length; i += 1) h = (h * 31 + id.charCodeAt(i)) >>> 0;
  return `hue-${h % 8}`;
}

export function initial(name) {
  const c = (name || "?").trim()[0] || "?";
  return c.toUpperCase();
}

/** 32 random hex characters (a message id chosen by the client: safe to retry). */
export function randomHex(bytesCount = 16) {
  const a = new Uint8Array(bytesCount);
  crypto.getRandomValues(a);
  return Array.from(a, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** plural(1, "peer") -> "1 peer", plural(3, "peer") -> "3 peers". */
export function plural(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}
