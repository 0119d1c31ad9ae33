//! The imports a stub gets in a hyperty runtime (`rethink:stub/bus`, `host`, `net` of
//! stubs/wit/stub.wit), in JavaScript: timers, the key-value store (in memory, or in
//! `localStorage` under a per-runtime prefix), configuration, and the network through the
//! platform's `WebSocket` and `fetch`, allowed only towards the node's own origins.
//!
//! Every import answers at once; what takes time is reported later through `deliver`, which
//! the runtime turns into export calls made one at a time (never from inside a call).

import { envelopeToMessage } from './envelope.js';

/** Bounds of one stub instance, as the WIT asks of every host (429 / 413 beyond them). */
export const LIMITS = {
  timers: 64,
  sockets: 8,
  requests: 16,
  kvKeyBytes: 512,
  kvValueBytes: 64 * 1024,
  kvTotalBytes: 1024 * 1024,
  wsBufferedBytes: 4 * 1024 * 1024,
};

const ok = (val) => ({ tag: 'ok', val });
const fail = (code, description) => ({ tag: 'err', val: { code, description } });

/** The origin (`scheme://host:port`) of a URL, with the default port written out. */
export function originOf(url) {
  const u = new URL(url);
  const port = u.port || { 'http:': '80', 'ws:': '80', 'https:': '443', 'wss:': '443' }[u.protocol] || '';
  return `${u.protocol}//${u.hostname}:${port}`;
}

/** The origins of a node's base URL: its HTTP origin and the matching WebSocket one. */
export function nodeOrigins(base) {
  const u = new URL(base);
  const secure = u.protocol === 'https:' || u.protocol === 'wss:';
  const host = u.host;
  return [`${secure ? 'https' : 'http'}://${host}`, `${secure ? 'wss' : 'ws'}://${host}`].map(originOf);
}

/** A key-value store in memory, or in `storage` (a Web Storage) under `prefix`. */
export class KvStore {
  constructor(storage, prefix) {
    this.storage = storage;
    this.prefix = prefix;
    this.mem = new Map();
    this.total = 0;
    if (storage) {
      for (let i = 0; i < storage.length; i++) {
        const k = storage.key(i);
        if (k?.startsWith(prefix)) this.#put(k.slice(prefix.length), base64ToBytes(storage.getItem(k)), false);
      }
    }
  }

  get(key) {
    return this.mem.get(key);
  }

  set(key, value) {
    const keyBytes = new TextEncoder().encode(key).length;
    if (keyBytes > LIMITS.kvKeyBytes) return fail(413, `key over ${LIMITS.kvKeyBytes} bytes`);
    if (value.length > LIMITS.kvValueBytes) return fail(413, `value over ${LIMITS.kvValueBytes} bytes`);
    const old = this.mem.get(key);
    const next = this.total - (old ? old.length + keyBytes : 0) + value.length + keyBytes;
    if (next > LIMITS.kvTotalBytes) return fail(413, `store over ${LIMITS.kvTotalBytes} bytes`);
    this.#put(key, value, true);
    return ok(undefined);
  }

  delete(key) {
    const old = this.mem.get(key);
    if (!old) return;
    this.total -= old.length + new TextEncoder().encode(key).length;
    this.mem.delete(key);
    this.storage?.removeItem(this.prefix + key);
  }

  keys(prefix, limit) {
    return [...this.mem.keys()]
      .filter((k) => k.startsWith(prefix))
      .sort(byUtf8)
      .slice(0, limit);
  }

  #put(key, value, persist) {
    const old = this.mem.get(key);
    const keyBytes = new TextEncoder().encode(key).length;
    if (old) this.total -= old.length + keyBytes;
    this.mem.set(key, Uint8Array.from(value));
    this.total += value.length + keyBytes;
    if (persist) this.storage?.setItem(this.prefix + key, bytesToBase64(value));
  }
}

function byUtf8(a, b) {
  const x = new TextEncoder().encode(a);
  const y = new TextEncoder().encode(b);
  for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i] - y[i];
  return x.length - y.length;
}

function bytesToBase64(bytes) {
  return btoa(String.fromCharCode(...bytes));
}

function base64ToBytes(text) {
  return Uint8Array.from(atob(text ?? ''), (c) => c.charCodeAt(0));
}

/**
 * The host side of one stub instance. `opts`: `config` (Map of entries), `kv` (KvStore),
 * `origins` (allowed origins), `log(level, text)`, `deliver(kind, arg)` (schedules an export
 * call: `('network', event)`, `('timer', id)`), `fromStub(message)` (a message the stub put on
 * the bus), `listeners` (Set the stub's listeners are kept in), `WebSocket`, `fetch`.
 */
export class StubHost {
  constructor(opts) {
    this.o = opts;
    this.timers = new Map();
    this.sockets = new Map();
    this.requests = new Map();
    this.nextHandle = 1n;
    this.closed = false;
  }

  /** The import object for the transpiled component. */
  imports() {
    return {
      'rethink:stub/bus': {
        send: (env) => this.#send(env),
        addListener: (address) => this.#addListener(address),
        removeListener: (address) => {
          this.o.listeners.delete(address);
        },
      },
      'rethink:stub/host': {
        log: (level, message) => this.o.log(level, message),
        nowMs: () => BigInt(Date.now()),
        monotonicMs: () => BigInt(Math.floor(performance.now())),
        setTimer: (id, delay) => this.#setTimer(id, delay),
        cancelTimer: (id) => this.#cancelTimer(id),
        config: (key) => this.o.config.get(key),
        configAll: () => [...this.o.config.entries()],
        kvGet: (key) => this.o.kv.get(key),
        kvSet: (key, value) => this.o.kv.set(key, value),
        kvDelete: (key) => this.o.kv.delete(key),
        kvKeys: (prefix, limit) => this.o.kv.keys(prefix, limit),
      },
      'rethink:stub/net': {
        wsOpen: (url, protocols) => this.#wsOpen(url, protocols),
        wsSend: (socket, text) => this.#wsSend(socket, text),
        wsClose: (socket, code, reason) => this.#wsClose(socket, code, reason),
        httpFetch: (request) => this.#httpFetch(request),
      },
    };
  }

  /** Stops everything this instance started (timers, sockets, requests). */
  shutdown() {
    this.closed = true;
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
    for (const ws of this.sockets.values()) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      ws.close(1000, 'runtime closed');
    }
    this.sockets.clear();
    for (const abort of this.requests.values()) abort.abort();
    this.requests.clear();
  }

  /** The sockets this instance has open (for the runtime's tests and diagnostics). */
  openSockets() {
    return [...this.sockets.values()];
  }

  #send(env) {
    let message;
    try {
      message = envelopeToMessage(env);
    } catch (e) {
      return fail(400, `malformed envelope: ${e.message}`);
    }
    this.o.fromStub(message);
    return ok(undefined);
  }

  #addListener(address) {
    if (typeof address !== 'string' || !/^[a-z][a-z0-9+.-]*:/i.test(address)) {
      return fail(400, `not an address: ${address}`);
    }
    this.o.listeners.add(address);
    return ok(undefined);
  }

  #setTimer(id, delay) {
    const key = String(id);
    if (!this.timers.has(key) && this.timers.size >= LIMITS.timers) {
      return fail(429, `at most ${LIMITS.timers} timers`);
    }
    clearTimeout(this.timers.get(key));
    const ms = Number(delay > 2147483647n ? 2147483647n : delay);
    this.timers.set(
      key,
      setTimeout(() => {
        this.timers.delete(key);
        this.o.deliver('timer', id);
      }, ms),
    );
    return ok(undefined);
  }

  #cancelTimer(id) {
    const key = String(id);
    clearTimeout(this.timers.get(key));
    this.timers.delete(key);
  }

  #allowed(url, schemes) {
    let u;
    try {
      u = new URL(url);
    } catch {
      return fail(400, `not a URL: ${url}`);
    }
    if (!schemes.includes(u.protocol)) return fail(400, `${u.protocol} is not one of ${schemes.join(' ')}`);
    if (!this.o.origins.includes(originOf(url))) return fail(403, `origin ${originOf(url)} is not allowed`);
    return null;
  }

  #wsOpen(url, protocols) {
    const refused = this.#allowed(url, ['ws:', 'wss:']);
    if (refused) return refused;
    if (this.sockets.size >= LIMITS.sockets) return fail(429, `at most ${LIMITS.sockets} sockets`);
    const handle = this.nextHandle++;
    let ws;
    try {
      ws = new this.o.WebSocket(url, protocols.length ? protocols : undefined);
    } catch (e) {
      return fail(400, `cannot open ${url}: ${e.message}`);
    }
    this.sockets.set(handle, ws);
    ws.onopen = () => this.o.deliver('network', { tag: 'ws-opened', val: handle });
    ws.onmessage = (ev) => {
      if (typeof ev.data === 'string') this.o.deliver('network', { tag: 'ws-text', val: [handle, ev.data] });
      else this.o.log('warn', `socket ${handle}: a binary message was dropped (the stub takes text only)`);
    };
    ws.onclose = (ev) => {
      this.sockets.delete(handle);
      this.o.deliver('network', { tag: 'ws-closed', val: { socket: handle, code: ev.code || 1006, reason: ev.reason ?? '' } });
    };
    return ok(handle);
  }

  #wsSend(socket, text) {
    const ws = this.sockets.get(socket);
    if (!ws || ws.readyState !== 1) return fail(404, `socket ${socket} is not open`);
    if (ws.bufferedAmount > LIMITS.wsBufferedBytes) return fail(503, `socket ${socket}: send buffer full`);
    ws.send(text);
    return ok(undefined);
  }

  #wsClose(socket, code, reason) {
    const ws = this.sockets.get(socket);
    if (!ws) return;
    // Browsers let a page send 1000 or 3000-4999 only.
    const allowed = code === 1000 || (code >= 3000 && code <= 4999);
    ws.close(allowed ? code : 1000, reason.slice(0, 120));
  }

  #httpFetch(req) {
    const refused = this.#allowed(req.url, ['http:', 'https:']);
    if (refused) return refused;
    if (this.requests.size >= LIMITS.requests) return fail(429, `at most ${LIMITS.requests} requests`);
    const handle = this.nextHandle++;
    const abort = new AbortController();
    this.requests.set(handle, abort);
    const timer = setTimeout(() => abort.abort(), Math.min(req.timeoutMs || 30000, 60000));
    const done = (event) => {
      clearTimeout(timer);
      if (this.requests.delete(handle)) this.o.deliver('network', event);
    };
    this.o
      .fetch(req.url, {
        method: req.method,
        headers: req.headers,
        body: req.body,
        signal: abort.signal,
        credentials: 'omit',
        redirect: 'error',
      })
      .then(async (res) => {
        const body = new Uint8Array(await res.arrayBuffer());
        done({
          tag: 'http-response',
          val: { request: handle, status: res.status, headers: [...res.headers.entries()], body },
        });
      })
      .catch((e) => done({ tag: 'http-failed', val: { request: handle, description: String(e?.message ?? e) } }));
    return ok(handle);
  }
}
