// The runtime library in Node.js against a real node (started by tests/it/js_runtime.rs, which
// passes its base URL): two runtimes download and verify the stub, open sessions through it,
// allocate addresses and exchange messages and responses; one runtime's WebSocket is closed
// under it and it resumes without losing a message either way (count and order checked);
// a tampered descriptor, a tampered component and an unknown WIT version are refused.
//
// Run: node --experimental-websocket test/node_runtime.mjs http://127.0.0.1:PORT

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { connect, VerifyError } from '../src/runtime.js';
import { witVersions, ComponentLoadError } from '../src/component.js';
import { canonicalJson } from '../src/verify.js';
import { collect, deadline, nodeUrl, waitForMetric } from './support.mjs';

if (typeof globalThis.WebSocket !== 'function') {
  console.error('FAIL: this Node.js has no global WebSocket: run it with --experimental-websocket (Node.js 20) or use Node.js 22+');
  process.exit(1);
}
const node = nodeUrl();
deadline(90_000, 'the Node.js runtime test');
const step = (s) => console.log(`- ${s}`);

// Canonical JSON as Matrix defines it (the spec's examples).
assert.equal(canonicalJson({ b: '2', a: 1, c: { z: [1, { y: null }], 'ä': true } }), '{"a":1,"b":"2","c":{"z":[1,{"y":null}],"ä":true}}');
assert.equal(canonicalJson({ '\u{1F600}': 1, '\uFFFD': 2 }), '{"\uFFFD":2,"\u{1F600}":1}');
assert.equal(canonicalJson({ a: 'line\nbreak "q" \u0001' }), '{"a":"line\\nbreak \\"q\\" \\u0001"}');
assert.throws(() => canonicalJson({ a: 1.5 }));
step('canonical JSON');

// Two runtimes download, verify and start the stub.
const a = await connect({ node });
const b = await connect({ node });
assert.equal(a.state, 'running');
assert.match(a.url, /^hyperty-runtime:\/\//);
assert.equal(a.descriptor.sha256.length, 64);
step(`stub ${a.descriptor.objectName ?? 'default'} verified and running in two runtimes`);

// The component's WIT version is read and checked (the bytes the node served).
const served = new Uint8Array(await (await fetch(new URL(a.descriptor.sourcePackageURL, node))).arrayBuffer());
assert.equal(witVersions(served).get('bus'), '0.1.0');
const future = new TextDecoder('latin1').decode(served).replaceAll('rethink:stub/bus@0.1.0', 'rethink:stub/bus@0.9.0');
assert.throws(() => witVersions(Uint8Array.from(future, (c) => c.charCodeAt(0))), ComponentLoadError);
step('WIT version check');

const [fa] = await a.allocate(1);
const [fb] = await b.allocate(1);
assert.match(fa, /^hyperty:\/\//);
assert.notEqual(fa, fb);
step(`allocated ${fa} and ${fb}`);

// Every update is answered by its recipient; replies carry the request's id.
const answer = (rt, me) =>
  rt.onMessage((m) => {
    if (m.type === 'update') rt.send({ id: m.id, type: 'response', from: me, to: m.from, body: { code: 200 } });
  });
answer(a, fa);
answer(b, fb);
// Every update each runtime receives, to check that nothing arrives twice.
const updatesAt = new Map([[a, 0], [b, 0]]);
for (const rt of [a, b]) rt.onMessage((m) => m.type === 'update' && updatesAt.set(rt, updatesAt.get(rt) + 1));
const isUpdate = (m) => m.type === 'update';
const texts = (ms) => ms.map((m) => m.body.value.text);

const bGot = collect(b, 20, isUpdate);
const replies = await Promise.all(
  Array.from({ length: 20 }, (_, i) => a.request({ type: 'update', from: fa, to: fb, body: { value: { text: `a${i}` } } })),
);
assert.deepEqual(texts(await bGot), Array.from({ length: 20 }, (_, i) => `a${i}`));
assert.ok(replies.every((r) => r.body.code === 200 && r.from === fb));
step('20 messages a -> b in order, 20 responses');

// A refusal of the node reaches the page as a response with the node's code.
await assert.rejects(
  a.request({ type: 'update', from: fa, to: `hyperty://${a.domain}/no-such-hyperty`, body: {} }),
  (e) => e.code === 404,
);
await assert.rejects(
  a.request({ type: 'update', from: `hyperty://${a.domain}/not-mine`, to: fb, body: {} }),
  (e) => e.code === 403,
);
step('404 for an unknown address, 403 for a spoofed from');

// The network cut: a's WebSocket is closed under it. While it is away, b sends 15 messages to
// a (they wait in a's session outbox at the node) and a sends 5 (they wait in the stub).
const sockets = a.sockets();
assert.equal(sockets.length, 1, 'the stub has one socket open');
const aGot = collect(a, 15, isUpdate);
sockets[0].close(4000, 'network cut by the test');
const fromB = Array.from({ length: 15 }, (_, i) => b.request({ type: 'update', from: fb, to: fa, body: { value: { text: `b${i}` } } }));
const bGot2 = collect(b, 5, isUpdate);
const fromA = Array.from({ length: 5 }, (_, i) => a.request({ type: 'update', from: fa, to: fb, body: { value: { text: `cut${i}` } } }));
assert.deepEqual(texts(await aGot), Array.from({ length: 15 }, (_, i) => `b${i}`), 'a got every message of b, in order');
assert.deepEqual(texts(await bGot2), Array.from({ length: 5 }, (_, i) => `cut${i}`), 'b got every message a sent while cut, in order');
assert.ok((await Promise.all([...fromB, ...fromA])).every((r) => r.body.code === 200));
assert.equal(a.sockets().length, 1, 'a is on a new socket');
assert.notEqual(a.sockets()[0], sockets[0]);
// A last message after the cut: everything before it has arrived, so the counts are final.
const marker = collect(a, 1, (m) => m.type === 'update' && m.body.value?.text === 'end');
await b.request({ type: 'update', from: fb, to: fa, body: { value: { text: 'end' } } });
await marker;
await a.request({ type: 'update', from: fa, to: fb, body: { value: { text: 'end' } } });
assert.deepEqual([updatesAt.get(a), updatesAt.get(b)], [16, 26], 'no message delivered twice');
step('network cut: a resumed; 15 messages b -> a and 5 a -> b, none lost, in order');

// Tampering in transit is refused before anything runs.
const tamper = (edit) => async (url, init) => {
  const res = await fetch(url, init);
  return edit(String(url), res);
};
await assert.rejects(
  connect({
    node,
    fetch: tamper(async (url, res) => {
      if (!url.includes('/.well-known/protocolstub/')) return res;
      const d = await res.json();
      d.configuration = { ...d.configuration, url: 'ws://evil.example:80/ws' };
      return new Response(JSON.stringify(d));
    }),
  }),
  (e) => e instanceof VerifyError && /does not verify/.test(e.message),
);
await assert.rejects(
  connect({
    node,
    fetch: tamper(async (url, res) => {
      if (!url.endsWith('.wasm') && res.headers.get('content-type') !== 'application/wasm') return res;
      const bytes = new Uint8Array(await res.arrayBuffer());
      bytes[bytes.length - 1] ^= 1;
      return new Response(bytes);
    }),
  }),
  (e) => e instanceof VerifyError && /sha256/.test(e.message),
);
await assert.rejects(connect({ node, serverKey: { 'ed25519:other': btoa('x'.repeat(32)) } }), VerifyError);
step('tampered descriptor, tampered component and an unpublished pinned key refused');

// close ends the session at the node: b's next message to a is refused.
await a.close();
assert.equal(a.state, 'closed');
await waitForMetric(node, 'rethink_sessions', 1);
await assert.rejects(b.request({ type: 'update', from: fb, to: fa, body: {} }), (e) => e.code === 404);
await b.close();
step('close: the session ended at the node (404 for its address)');

// The node serves the committed default stub.
const committed = readFileSync(new URL('../../guests/default/default.wasm', import.meta.url));
assert.deepEqual(new Uint8Array(committed), served, 'the node serves the committed default.wasm');
console.log('PASS node runtime');
