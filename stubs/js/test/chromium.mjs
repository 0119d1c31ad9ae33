// Two pages in headless Chromium (Debian's chromium, driven by playwright-core) against a real
// node (started by tests/it/js_runtime.rs, which passes its base URL). Each page is the demo's
// runtime pane (/demo/pane.html): it downloads the stub from the node, checks its sha256 and
// signature, transpiles it with jco in the page, opens a session and allocates a hyperty
// address. The pages exchange messages and responses through the node; then the test closes
// one page's WebSocket (the network cut) and checks that it resumes without losing a message
// either way (count and order).
//
// Run: node test/chromium.mjs http://127.0.0.1:PORT   (CHROMIUM, when set and not empty,
// overrides /usr/bin/chromium; scripts/test sets it to the chromium on PATH)

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { deadline, nodeUrl } from './support.mjs';

const node = nodeUrl();
deadline(120_000, 'the Chromium test');
const step = (s) => console.log(`- ${s}`);

const profile = mkdtempSync(join(tmpdir(), 'rethink-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
});
try {
  const open = async (name) => {
    const page = await context.newPage();
    page.on('console', (m) => console.log(`  [${name}] ${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => console.log(`  [${name}] page error: ${e.message}`));
    await page.goto(`${node}/demo/pane.html?name=${name}`);
    const address = await page.evaluate(() => window.demo.ready);
    return { page, address };
  };
  const a = await open('a');
  const b = await open('b');
  assert.match(a.address, /^hyperty:\/\//);
  assert.notEqual(a.address, b.address);
  step(`two pages verified and ran the stub; allocated ${a.address} and ${b.address}`);

  // Each page sends 10 messages to the other and waits for every response.
  const say = (p, to, prefix, n) =>
    p.page.evaluate(
      async ({ to, prefix, n }) => {
        const replies = await Promise.all(Array.from({ length: n }, (_, i) => window.demo.say(`${prefix}${i}`, to)));
        return replies.map((r) => [r.body.code, r.from]);
      },
      { to, prefix, n },
    );
  const received = (p, n) => p.page.evaluate((n) => window.demo.waitReceived(n), n);
  const seq = (prefix, n) => Array.from({ length: n }, (_, i) => `${prefix}${i}`);

  const [ra, rb] = await Promise.all([say(a, b.address, 'a', 10), say(b, a.address, 'b', 10)]);
  assert.deepEqual(ra, Array(10).fill([200, b.address]));
  assert.deepEqual(rb, Array(10).fill([200, a.address]));
  assert.deepEqual(await received(b, 10), seq('a', 10));
  assert.deepEqual(await received(a, 10), seq('b', 10));
  step('10 messages each way, every one answered 200 by the other page');

  // The network cut: page a's WebSocket is closed. b sends 15 while a is away, a sends 5.
  const cut = await a.page.evaluate(() => {
    const sockets = window.demo.rt.sockets();
    window.cutSocket = sockets[0];
    sockets[0].close(4000, 'network cut by the test');
    return sockets.length;
  });
  assert.equal(cut, 1, 'page a had one stub socket');
  const [rb2, ra2] = await Promise.all([say(b, a.address, 'late', 15), say(a, b.address, 'cut', 5)]);
  assert.deepEqual(rb2, Array(15).fill([200, a.address]));
  assert.deepEqual(ra2, Array(5).fill([200, b.address]));
  assert.deepEqual(await received(a, 25), [...seq('b', 10), ...seq('late', 15)], 'a lost nothing, in order');
  assert.deepEqual(await received(b, 15), [...seq('a', 10), ...seq('cut', 5)], 'b lost nothing, in order');
  const resumed = await a.page.evaluate(() => {
    const s = window.demo.rt.sockets();
    return s.length === 1 && s[0] !== window.cutSocket && s[0].readyState === WebSocket.OPEN;
  });
  assert.ok(resumed, 'page a is on a new open socket');
  const counts = await Promise.all([a, b].map((p) => p.page.evaluate(() => window.demo.received.length)));
  assert.deepEqual(counts, [25, 15], 'no message was delivered twice');
  step('network cut: page a resumed; 15 messages b -> a and 5 a -> b, none lost, none twice, in order');

  await a.page.evaluate(() => window.demo.rt.close());
  await b.page.evaluate(() => window.demo.rt.close());

  // The demo page: its two frames are told each other's address; a message typed in alice's
  // frame appears in bob's, and alice's frame shows it delivered.
  const demo = await context.newPage();
  await demo.goto(`${node}/demo/`);
  const alice = demo.frameLocator('#alice');
  const bob = demo.frameLocator('#bob');
  await alice.locator('#text:enabled').waitFor();
  await bob.locator('#text:enabled').waitFor();
  await alice.locator('#text').fill('hello bob');
  await alice.locator('button').click();
  await bob.locator('#log div.peer', { hasText: 'hello bob' }).waitFor();
  await alice.locator('#log div.sys', { hasText: 'delivered' }).waitFor();
  step('the demo page: alice typed, bob read it, alice saw it delivered');
  console.log('PASS chromium');
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
