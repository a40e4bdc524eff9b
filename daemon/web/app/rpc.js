// The control API over the WebSocket /api/ws: JSON-RPC 2.0, one JSON object per message
// (docs/API.md). Requests are answered in order; events arrive as {"method": "event"}
// notifications after events.subscribe. The socket reconnects by itself with a backoff.

export class RpcError extends Error {
  constructor(error) {
    super((error && error.message) || "request failed");
    this.code = error && error.code;
    this.name_ = (error && error.data && error.data.name) || "error";
    this.data = (error && error.data) || {};
  }
}

/** Why a request could not even be answered (the socket is not open or it closed). */
export const NOT_CONNECTED = { code: 0, message: "the daemon is not reachable", data: { name: "not_connected" } };

const BACKOFF_MS = [250, 500, 1000, 2000, 4000, 8000];

export class Rpc {
  /**
   * @param {object} handlers onOpen(), onEvent(params), onDown({code, retryAt}), onRotated()
   */
  constructor(handlers) {
    this.h = handlers;
    this.ws = null;
    this.nextId = 1;
    this.pending = new Map();
    this.failures = 0;
    this.timer = null;
    this.stopped = false;
    this.openWaiters = [];
  }

  /** Resolves when the socket is next open (at once if it is), or after timeoutMs anyway. */
  whenOpen(timeoutMs) {
    if (this.open) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.openWaiters = this.openWaiters.filter((w) => w !== done);
        resolve();
      }, Math.max(0, timeoutMs));
      const done = () => {
        clearTimeout(timer);
        resolve();
      };
      this.openWaiters.push(done);
    });
  }

  url() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}/api/ws`;
  }

  connect() {
    clearTimeout(this.timer);
    this.timer = null;
    if (this.stopped) return;
    let ws;
    try {
      ws = new WebSocket(this.url());
    } catch (err) {
      this.scheduleReconnect(1006);
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      this.failures = 0;
      this.h.onOpen();
      const waiters = this.openWaiters;
      this.openWaiters = [];
      for (const w of waiters) w();
    };
    ws.onmessage = (e) => this.receive(e.data);
    ws.onclose = (e) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.failAll();
      if (e.code === 4401) {
        this.stopped = true;
        this.h.onRotated();
        return;
      }
      this.scheduleReconnect(e.code);
    };
    ws.onerror = () => {}; // onclose follows and handles it
  }

  scheduleReconnect(code) {
    if (this.stopped) return;
    const delay = BACKOFF_MS[Math.min(this.failures, BACKOFF_MS.length - 1)];
    this.failures += 1;
    const retryAt = Date.now() + delay;
    this.timer = setTimeout(() => this.connect(), delay);
    this.h.onDown({ code, retryAt });
  }

  /** Reconnect at once (the "retry now" button). */
  retryNow() {
    if (this.ws || this.stopped) return;
    this.failures = 0;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close(1000);
    this.ws = null;
    this.failAll();
  }

  get open() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  receive(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch (err) {
      return;
    }
    if (msg.method === "event" && msg.params) {
      try {
        this.h.onEvent(msg.params);
      } catch (err) {
        console.error("event handler failed", msg.params, err);
      }
      return;
    }
    const waiter = this.pending.get(msg.id);
    if (!waiter) return;
    this.pending.delete(msg.id);
    if (msg.error) waiter.reject(new RpcError(msg.error));
    else waiter.resolve(msg.result);
  }

  failAll() {
    const waiters = [...this.pending.values()];
    this.pending.clear();
    for (const w of waiters) w.reject(new RpcError(NOT_CONNECTED));
  }

  /** One request; resolves with its result or rejects with an RpcError. */
  call(method, params = {}) {
    if (!this.open) return Promise.reject(new RpcError(NOT_CONNECTED));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.ws.send(JSON.stringify({ jsonrpc: "2.0", id, method, params }));
    });
  }
}
