//! reTHINK messages (`{id, type, from, to, body, ...}`) to and from the WIT `envelope` record
//! (`id` and `body` as JSON text, `to` a list, every other top-level field in `extra`).

const HEADER = new Set(['id', 'type', 'from', 'to', 'body']);

/** A message of the page as an envelope; throws a TypeError on a malformed message. */
export function messageToEnvelope(msg) {
  if (msg === null || typeof msg !== 'object' || Array.isArray(msg)) throw new TypeError('a message is an object');
  if (typeof msg.type !== 'string' || !msg.type) throw new TypeError('`type` must be a non-empty string');
  if (typeof msg.from !== 'string' || !msg.from) throw new TypeError('`from` must be a non-empty string');
  const to = Array.isArray(msg.to) ? msg.to : [msg.to];
  if (to.length === 0 || !to.every((t) => typeof t === 'string' && t)) {
    throw new TypeError('`to` must be an address or a non-empty list of addresses');
  }
  if (typeof msg.id !== 'number' && typeof msg.id !== 'string') throw new TypeError('`id` must be a number or a string');
  if (msg.body !== undefined && (msg.body === null || typeof msg.body !== 'object' || Array.isArray(msg.body))) {
    throw new TypeError('`body` must be an object');
  }
  const extra = {};
  for (const [k, v] of Object.entries(msg)) if (!HEADER.has(k)) extra[k] = v;
  return {
    id: JSON.stringify(msg.id),
    type: msg.type,
    from: msg.from,
    to,
    body: msg.body === undefined ? undefined : JSON.stringify(msg.body),
    extra: Object.keys(extra).length ? JSON.stringify(extra) : undefined,
  };
}

/** An envelope the stub sent as a message for the page; throws on JSON that does not parse. */
export function envelopeToMessage(env) {
  const msg = {};
  const extra = env.extra === undefined ? {} : JSON.parse(env.extra);
  if (extra === null || typeof extra !== 'object' || Array.isArray(extra)) throw new TypeError('`extra` is not an object');
  Object.assign(msg, extra);
  msg.id = JSON.parse(env.id);
  msg.type = env.type;
  msg.from = env.from;
  msg.to = env.to.length === 1 ? env.to[0] : [...env.to];
  if (env.body !== undefined) {
    const body = JSON.parse(env.body);
    if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new TypeError('`body` is not an object');
    msg.body = body;
  }
  return msg;
}
