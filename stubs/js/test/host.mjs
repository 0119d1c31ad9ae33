// The runtime's host (the stub's imports, supervision) with a real component, the probe guest
// (stubs/guests/probe: it runs host imports on command), in Node.js and without a node: config,
// kv, timers, the origin allow-list of net, a malformed envelope refused 400, and a trap that
// ends the instance (the message is answered 502, a fresh instance serves the next ones).
//
// Run: node --experimental-websocket test/host.mjs

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { Runtime } from '../src/runtime.js';
import { prepare } from '../src/component.js';
import { deadline } from './support.mjs';

deadline(60_000, 'the host test');
const step = (s) => console.log(`- ${s}`);

const bytes = readFileSync(new URL('../../guests/probe/probe.wasm', import.meta.url));
const component = await prepare(new Uint8Array(bytes));
const logs = [];
const rt = new Runtime({
  options: { runtimeId: 'probe', log: (level, text) => logs.push([level, text]) },
  base: new URL('http://127.0.0.1:9'),
  serverName: 'example.com',
  descriptor: { configuration: { url: 'ws://127.0.0.1:9/ws', domain: 'example.com', listen: 'hyperty://example.com/probe', retries: 5 } },
  component,
});
await rt.start();
assert.equal(rt.state, 'running');

const probe = 'hyperty://example.com/probe';
const me = `${rt.url}/test`;
const op = (body) => rt.request({ type: 'execute', from: me, to: probe, body }).then((r) => r.body.value);
const code = (body) => rt.request({ type: 'execute', from: me, to: probe, body }).then(() => 200, (e) => e.code);

assert.equal(await op({ op: 'config', key: 'runtime' }), 'hyperty-runtime://example.com/probe');
assert.equal(await op({ op: 'config', key: 'retries' }), '5');
assert.equal(await op({ op: 'config', key: 'nope' }), null);
const all = await op({ op: 'config-all' });
assert.equal(all.url, 'ws://127.0.0.1:9/ws');
assert.equal(all.domain, 'example.com');
step('config and config-all: the descriptor configuration plus runtime');

await op({ op: 'kv-set', key: 'a/1', value: 'one' });
await op({ op: 'kv-set', key: 'a/2', value: 'two' });
await op({ op: 'kv-set', key: 'b', value: 'three' });
assert.equal(await op({ op: 'kv-get', key: 'a/2' }), 'two');
assert.deepEqual(await op({ op: 'kv-keys', prefix: 'a/', limit: 10 }), ['a/1', 'a/2']);
assert.deepEqual(await op({ op: 'kv-keys', prefix: '', limit: 2 }), ['a/1', 'a/2']);
await op({ op: 'kv-delete', key: 'a/1' });
assert.equal(await op({ op: 'kv-get', key: 'a/1' }), null);
assert.equal(await code({ op: 'kv-set', key: 'k'.repeat(600), value: 'x' }), 413);
step('kv: set, get, keys in order with a limit, delete, 413 for an oversized key');

const fired = new Promise((resolve) => rt.onMessage((m) => m.body?.timer === 7 && resolve(m)));
await op({ op: 'timer', id: 7, delay_ms: 5, report: me });
assert.equal((await fired).from, probe);
step('timer fires on-timer, the stub reports it');

assert.equal(await code({ op: 'ws-open', url: 'ws://elsewhere.example:80/ws', protocols: [], report: me }), 403);
assert.equal(await code({ op: 'http-fetch', method: 'GET', url: 'https://elsewhere.example/', headers: {}, timeout_ms: 100, report: me }), 403);
assert.equal(await code({ op: 'ws-open', url: 'ftp://127.0.0.1:9/', protocols: [], report: me }), 400);
assert.equal(await code({ op: 'ws-send', socket: 99, text: 'x' }), 404);
step('net: 403 for an origin that is not the node, 400 for a scheme, 404 for an unknown socket');

assert.equal(await code({ op: 'send', message: { id: 1, type: 'update', from: probe, to: [me], body: 5 } }), 400);
step('bus.send of a message whose body is not an object: 400');

// A trap ends the instance: its message is answered 502, a new instance (init again) serves the next.
assert.equal(await code({ op: 'trap' }), 502);
assert.equal(rt.state, 'restarting');
assert.ok(logs.some(([level, text]) => level === 'error' && /trapped/.test(text)), 'the trap is logged');
assert.equal(await op({ op: 'kv-get', key: 'b' }), 'three', 'the kv store outlives the instance');
assert.equal(rt.state, 'running');
step('trap: 502 for its message, a fresh instance after it, kv kept');

await rt.close();
console.log('PASS host');
