//! Checking what the node serves before anything of it runs: Matrix canonical JSON, the
//! descriptor's ed25519 signature with the key the node publishes at
//! `/_matrix/key/v2/server`, and the component's sha256.
//!
//! WebCrypto everywhere (Chromium has Ed25519 since 137, Node.js 20 has it in `crypto.subtle`);
//! in a Node.js without WebCrypto Ed25519, `node:crypto` is used instead.

/** A check that failed: the descriptor, the key or the bytes are not what they must be. */
export class VerifyError extends Error {
  constructor(message) {
    super(message);
    this.name = 'VerifyError';
  }
}

/**
 * Matrix canonical JSON (spec appendix "Canonical JSON"): object keys sorted by Unicode code
 * point, no insignificant whitespace, integers only, strings with the shortest escapes
 * (JSON.stringify's escapes are those: `\"`, `\\`, `\b \f \n \r \t`, `\u00XX` lowercase).
 */
export function canonicalJson(value) {
  if (value === null || typeof value === 'boolean' || typeof value === 'string') {
    return JSON.stringify(value);
  }
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value)) {
      throw new VerifyError(`canonical JSON allows integers in [-(2^53)+1, 2^53-1] only, not ${value}`);
    }
    return String(value);
  }
  if (Array.isArray(value)) {
    return `[${value.map(canonicalJson).join(',')}]`;
  }
  if (typeof value === 'object') {
    const keys = Object.keys(value).sort(byCodePoint);
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(value[k])}`).join(',')}}`;
  }
  throw new VerifyError(`a ${typeof value} has no JSON form`);
}

/** Orders strings by Unicode code point (UTF-16 code unit order differs above U+FFFF). */
function byCodePoint(a, b) {
  const ca = Array.from(a, (c) => c.codePointAt(0));
  const cb = Array.from(b, (c) => c.codePointAt(0));
  for (let i = 0; i < Math.min(ca.length, cb.length); i++) {
    if (ca[i] !== cb[i]) return ca[i] - cb[i];
  }
  return ca.length - cb.length;
}

/** Unpadded (or padded) standard base64, as Matrix writes keys and signatures. */
export function base64Decode(text) {
  if (typeof text !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(text)) {
    throw new VerifyError('not base64');
  }
  const bare = text.replace(/=+$/, '');
  let bin;
  try {
    bin = atob(bare + '='.repeat((4 - (bare.length % 4)) % 4));
  } catch {
    throw new VerifyError('not base64');
  }
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}

/** Lowercase hex of the SHA-256 of `bytes`. */
export async function sha256Hex(bytes) {
  const digest = new Uint8Array(await globalThis.crypto.subtle.digest('SHA-256', bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** Verifies an ed25519 signature; false when it does not verify. */
export async function ed25519Verify(publicKey, signature, message) {
  if (publicKey.length !== 32 || signature.length !== 64) return false;
  try {
    const key = await globalThis.crypto.subtle.importKey('raw', publicKey, { name: 'Ed25519' }, false, ['verify']);
    return await globalThis.crypto.subtle.verify({ name: 'Ed25519' }, key, signature, message);
  } catch (e) {
    if (typeof process === 'undefined' || !process.versions?.node || e?.name !== 'NotSupportedError') throw e;
    const { createPublicKey, verify } = await import('node:crypto');
    // SubjectPublicKeyInfo of an Ed25519 key: a fixed 12-byte prefix, then the raw key.
    const spki = new Uint8Array([0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00, ...publicKey]);
    return verify(null, message, createPublicKey({ key: spki, format: 'der', type: 'spki' }), signature);
  }
}

/**
 * Checks the signatures of `object` made by `serverName` (Matrix "Checking for a signature"):
 * the canonical JSON of the object without `signatures` and `unsigned` must verify with one of
 * `keys` (key id -> raw public key). Returns the key id that verified; throws otherwise.
 */
export async function verifySigned(object, serverName, keys) {
  const sigs = object?.signatures?.[serverName];
  if (!sigs || typeof sigs !== 'object') {
    throw new VerifyError(`no signature of ${serverName}`);
  }
  const { signatures: _s, unsigned: _u, ...rest } = object;
  const message = new TextEncoder().encode(canonicalJson(rest));
  for (const [keyId, sig] of Object.entries(sigs)) {
    const key = keys.get(keyId);
    if (!key || !keyId.startsWith('ed25519:')) continue;
    if (await ed25519Verify(key, base64Decode(sig), message)) return keyId;
    throw new VerifyError(`the signature of ${serverName} with ${keyId} does not verify`);
  }
  throw new VerifyError(`no signature of ${serverName} with a known ed25519 key`);
}

/**
 * Reads a Matrix server-key response (`GET /_matrix/key/v2/server`): checks that it is signed
 * by its own key (self-signed, as the spec requires) and still valid, and returns
 * `{serverName, keys}` with the current verify keys (key id -> raw public key).
 */
export async function readServerKeys(response, now = Date.now()) {
  const serverName = response?.server_name;
  if (typeof serverName !== 'string' || !serverName) {
    throw new VerifyError('the server key response has no server_name');
  }
  const keys = new Map();
  for (const [keyId, entry] of Object.entries(response.verify_keys ?? {})) {
    if (keyId.startsWith('ed25519:')) keys.set(keyId, base64Decode(entry?.key));
  }
  if (keys.size === 0) throw new VerifyError('the server publishes no ed25519 key');
  if (typeof response.valid_until_ts === 'number' && response.valid_until_ts < now) {
    throw new VerifyError('the server key response has expired (valid_until_ts is past)');
  }
  await verifySigned(response, serverName, keys);
  return { serverName, keys };
}
