//! A reTHINK hyperty runtime that downloads its node's protocol stub and runs it: the public
//! API (`connect`, and the `Runtime` it returns: `send`, `onMessage`, `request`, `allocate`,
//! `subscribe`, `close`), the local bus between the page and the stub, and the stub's
//! supervision (one export call at a time, a fresh instance after a trap).
//!
//! What `connect` does, in order: fetch the node's signing key (`/_matrix/key/v2/server`,
//! self-signed), fetch the descriptor (`/.well-known/protocolstub/<name>`) and check its
//! Matrix signature with that key, fetch the component from `sourcePackageURL` and check its
//! `sha256`, check the WIT version it was built against, transpile it with jco, instantiate it
//! with the host of `host.js` and call its `init`. Any failed check rejects with the reason;
//! nothing unchecked runs.

import { ComponentLoadError, prepare } from './component.js';
import { messageToEnvelope } from './envelope.js';
import { KvStore, StubHost, nodeOrigins, originOf } from './host.js';
import { VerifyError, readServerKeys, verifySigned, base64Decode, sha256Hex } from './verify.js';

export { VerifyError, ComponentLoadError };

/** Restart backoff after a trap: first delay, cap, and how many failures in a row open the breaker. */
const RESTART = { firstMs: 50, maxMs: 5000, breakerAfter: 5 };

/** A request that got an error response (`code` is the reTHINK code), or no response. */
export class RequestError extends Error {
  constructor(code, description, response) {
    super(`${code} ${description}`);
    this.name = 'RequestError';
    this.code = code;
    this.response = response;
  }
}

async function getJson(fetchFn, url, what) {
  const res = await fetchFn(url, { credentials: 'omit' });
  if (!res.ok) throw new VerifyError(`${what} (${url}): HTTP ${res.status}`);
  return res.json();
}

/**
 * Downloads, verifies and starts the stub of a node, and returns the running `Runtime`.
 *
 * Options: `node` (the node's base URL, `http(s)://host:port`; in a page, default
 * `location.origin`), `stub` (the catalogue name, default `default`), `token` (a bearer token
 * for the session, optional), `runtimeId` (the last segment of the runtime URL; random by
 * default), `storage` (a Web Storage, e.g. `localStorage`, for the stub's key-value store;
 * in memory by default), `serverKey` (`{keyId: base64}` to pin the node's key instead of
 * trusting the one it publishes), `log(level, text)`, `WebSocket`, `fetch`.
 */
export async function connect(options = {}) {
  const fetchFn = options.fetch ?? globalThis.fetch.bind(globalThis);
  const base = new URL(options.node ?? globalThis.location.origin);
  const stubName = options.stub ?? 'default';

  const keyResponse = await getJson(fetchFn, new URL('/_matrix/key/v2/server', base), 'server key');
  const { serverName, keys } = await readServerKeys(keyResponse);
  if (options.serverKey) {
    for (const [id, key] of Object.entries(options.serverKey)) {
      const published = keys.get(id);
      if (!published || published.join() !== base64Decode(key).join()) {
        throw new VerifyError(`the node does not publish the pinned key ${id}`);
      }
    }
  }
  const descriptorUrl = new URL(`/.well-known/protocolstub/${encodeURIComponent(stubName)}`, base);
  const descriptor = await getJson(fetchFn, descriptorUrl, 'descriptor');
  await verifySigned(descriptor, serverName, keys);

  if (typeof descriptor.sourcePackageURL !== 'string' || !/^[0-9a-f]{64}$/.test(descriptor.sha256 ?? '')) {
    throw new VerifyError('the descriptor has no sourcePackageURL or no sha256');
  }
  const sourceUrl = new URL(descriptor.sourcePackageURL, descriptorUrl);
  const res = await fetchFn(sourceUrl, { credentials: 'omit' });
  if (!res.ok) throw new VerifyError(`component (${sourceUrl}): HTTP ${res.status}`);
  const bytes = new Uint8Array(await res.arrayBuffer());
  const digest = await sha256Hex(bytes);
  if (digest !== descriptor.sha256) {
    throw new VerifyError(`the component's sha256 is ${digest}, the descriptor says ${descriptor.sha256}`);
  }

  const component = await prepare(bytes);
  const runtime = new Runtime({ options, base, serverName, descriptor, component });
  await runtime.start();
  return runtime;
}

/** A running hyperty runtime: the page's side of the local bus, with the stub on the other. */
export class Runtime {
  #o;
  #handlers = new Set();
  #pending = new Map();
  #queue = [];
  #busy = false;
  #exports = null;
  #host = null;
  #listeners = new Set();
  #nextId = 1;
  #failures = 0;
  #state = 'starting';
  #kv;

  constructor({ options, base, serverName, descriptor, component }) {
    this.#o = { options, component };
    const configuration = descriptor.configuration ?? {};
    /** The node's domain. */
    this.domain = String(configuration.domain ?? serverName);
    /** This runtime's URL: the `from` of its session. */
    this.url = `hyperty-runtime://${this.domain}/${options.runtimeId ?? randomId()}`;
    /** The verified descriptor of the stub. */
    this.descriptor = descriptor;
    /** Addresses allocated to this runtime by `allocate`. */
    this.addresses = [];
    const wsUrl = configuration.url ?? `${base.protocol === 'https:' ? 'wss' : 'ws'}://${base.host}/ws`;
    this.config = new Map(Object.entries(configuration).map(([k, v]) => [k, typeof v === 'string' ? v : JSON.stringify(v)]));
    this.config.set('url', wsUrl);
    this.config.set('domain', this.domain);
    this.config.set('runtime', this.url);
    if (options.token) this.config.set('token', options.token);
    // The node's own origins, and the (signed) WebSocket URL's origin if it names another.
    this.origins = [...new Set([...nodeOrigins(base.href), originOf(wsUrl)])];
    this.#kv = new KvStore(options.storage, `rethink-stub:${this.url}:`);
  }

  /** Instantiates the stub and calls its `init`; rejects when the first start fails. */
  async start() {
    const err = await this.#instantiate();
    if (err) throw err;
  }

  /**
   * Puts a message on the local bus. The page holds no addresses of its own on this bus, so
   * every recipient is outside the runtime and the stub is its route out: each message goes to
   * the stub's `on-message` (whatever listeners it added), and from there to the node. An `id`
   * is given when missing; returns the message as sent. Answers come through `onMessage`
   * (or `request`).
   */
  send(msg) {
    const message = { ...msg, id: msg.id ?? this.#nextId++ };
    const env = messageToEnvelope(message);
    if (this.#state === 'closed' || this.#state === 'failed') {
      this.#answer(message, 503, `the runtime is ${this.#state}`);
      return message;
    }
    this.#enqueue(['onMessage', env, message]);
    return message;
  }

  /** Sends a request and resolves with its response (rejects with `RequestError` on a code >= 300). */
  request(msg, { timeoutMs = 30000 } = {}) {
    const message = { ...msg, id: msg.id ?? this.#nextId++ };
    messageToEnvelope(message); // a malformed message throws here, before anything is pending
    const key = pendingKey(message.id, message.from);
    const answer = new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(key);
        reject(new RequestError(408, `no response within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#pending.set(key, (response) => {
        clearTimeout(timer);
        const code = response.body?.code ?? 200;
        if (code >= 300) reject(new RequestError(code, response.body?.description ?? '', response));
        else resolve(response);
      });
    });
    this.send(message);
    return answer;
  }

  /** Calls `fn(message)` for every message the node delivers; returns a function that stops it. */
  onMessage(fn) {
    this.#handlers.add(fn);
    return () => this.#handlers.delete(fn);
  }

  /** Allocates `n` addresses of `scheme` (default `hyperty`) and resolves with them. */
  async allocate(n = 1, scheme = 'hyperty') {
    const response = await this.request({
      type: 'create',
      from: `${this.url}/registry/allocation`,
      to: `domain://msg-node.${this.domain}/address-allocation`,
      body: { scheme, value: { number: n } },
    });
    const allocated = response.body?.value?.allocated;
    if (!Array.isArray(allocated)) throw new RequestError(500, 'the allocation response lists no addresses', response);
    this.addresses.push(...allocated);
    return allocated;
  }

  /** Subscribes this runtime to `object` (an address, or a list of them). */
  async subscribe(object) {
    await this.request({
      type: 'subscribe',
      from: `${this.url}/sm`,
      to: `domain://msg-node.${this.domain}/sm`,
      body: { resources: Array.isArray(object) ? object : [object] },
    });
  }

  /** Ends the session at the node (a `close` to `mn:/session`), then stops the stub. */
  async close() {
    if (this.#state === 'closed') return;
    if (this.#state === 'running') {
      await this.request({ type: 'close', from: this.url, to: 'mn:/session' }, { timeoutMs: 5000 }).catch(() => {});
    }
    this.#state = 'closed';
    this.#host?.shutdown();
    for (const [key, settle] of this.#pending) {
      this.#pending.delete(key);
      settle({ body: { code: 503, description: 'the runtime is closed' } });
    }
  }

  /** The stub's open WebSockets (a diagnostic handle: tests close one to cut the network). */
  sockets() {
    return this.#host?.openSockets() ?? [];
  }

  /** `starting`, `running`, `restarting`, `failed` (breaker open) or `closed`. */
  get state() {
    return this.#state;
  }

  #answer(message, code, description) {
    const to = Array.isArray(message.to) ? message.to[0] : message.to;
    this.#fromStub({ id: message.id, type: 'response', from: to, to: message.from, body: { code, description } });
  }

  #fromStub(message) {
    queueMicrotask(() => {
      const to = Array.isArray(message.to) ? message.to : [message.to];
      if (message.type === 'response') {
        for (const t of to) {
          const settle = this.#pending.get(pendingKey(message.id, t));
          if (settle) {
            this.#pending.delete(pendingKey(message.id, t));
            settle(message);
            return;
          }
        }
      }
      for (const fn of this.#handlers) {
        try {
          fn(message);
        } catch (e) {
          this.#log('error', `a message handler threw: ${e?.stack ?? e}`);
        }
      }
    });
  }

  #log(level, text) {
    const log = this.#o.options.log;
    if (log) log(level, text);
    else if (level === 'error' || level === 'warn') console[level](`[stub] ${text}`);
  }

  async #instantiate() {
    this.#host?.shutdown();
    this.#listeners.clear();
    const host = new StubHost({
      config: this.config,
      kv: this.#kv,
      origins: this.origins,
      listeners: this.#listeners,
      log: (level, text) => this.#log(level, text),
      deliver: (kind, arg) => {
        if (this.#host === host && !host.closed) this.#enqueue([kind === 'timer' ? 'onTimer' : 'onNetwork', arg]);
      },
      fromStub: (message) => this.#fromStub(message),
      WebSocket: this.#o.options.WebSocket ?? globalThis.WebSocket,
      fetch: this.#o.options.fetch ?? globalThis.fetch.bind(globalThis),
    });
    this.#host = host;
    try {
      this.#exports = await this.#o.component.instantiate(host.imports());
      this.#exports.init();
    } catch (e) {
      this.#exports = null;
      return this.#failed(`init failed: ${e?.payload ?? e?.message ?? e}`);
    }
    this.#state = 'running';
    this.#drain();
    return null;
  }

  /** A trap or a failed init: a fresh instance after a backoff, or the breaker after too many. */
  #failed(why) {
    this.#failures += 1;
    this.#host?.shutdown();
    if (this.#failures >= RESTART.breakerAfter) {
      this.#state = 'failed';
      this.#log('error', `${why}; ${this.#failures} failures in a row: the stub stays stopped`);
      for (const [, , message] of this.#queue.splice(0)) if (message) this.#answer(message, 502, 'the stub failed');
      return new ComponentLoadError(why);
    }
    this.#state = 'restarting';
    const delay = Math.min(RESTART.firstMs * 2 ** (this.#failures - 1), RESTART.maxMs);
    this.#log('error', `${why}; restarting the stub in ${delay} ms`);
    setTimeout(() => {
      if (this.#state === 'restarting') this.#instantiate();
    }, delay);
    return null;
  }

  #enqueue(call) {
    this.#queue.push(call);
    this.#drain();
  }

  /** Makes the queued export calls one at a time, never from inside another call. */
  #drain() {
    if (this.#busy || this.#state !== 'running') return;
    this.#busy = true;
    try {
      while (this.#queue.length && this.#state === 'running') {
        const [name, arg, message] = this.#queue.shift();
        try {
          this.#exports[name](arg);
          this.#failures = 0;
        } catch (e) {
          if (message) this.#answer(message, 502, `the stub trapped on this message: ${e?.message ?? e}`);
          this.#failed(`${name} trapped: ${e?.message ?? e}`);
        }
      }
    } finally {
      this.#busy = false;
    }
  }
}

function pendingKey(id, from) {
  return `${JSON.stringify(id)} ${from}`;
}

function randomId() {
  return globalThis.crypto.randomUUID();
}
