// Shared by the Node.js and Chromium tests: argument parsing, a deadline that fails the test
// loudly (it never decides success), and waiting for messages as they arrive.

/** The node's base URL: the first argument, as the Rust test passes it. */
export function nodeUrl() {
  const url = process.argv[2];
  if (!url) {
    console.error('usage: node <test> http://127.0.0.1:PORT');
    process.exit(2);
  }
  return url;
}

/** Fails the process if the test has not finished within `ms` (a hung test, not a result). */
export function deadline(ms, what) {
  const t = setTimeout(() => {
    console.error(`FAIL: ${what} did not finish within ${ms} ms`);
    process.exit(1);
  }, ms);
  t.unref();
}

/** Resolves once `n` messages passing `filter` have arrived at `rt`, with them in order. */
export function collect(rt, n, filter = () => true) {
  const got = [];
  return new Promise((resolve) => {
    if (n === 0) return resolve(got);
    const stop = rt.onMessage((m) => {
      if (!filter(m)) return;
      got.push(m);
      if (got.length === n) {
        stop();
        resolve(got);
      }
    });
  });
}

/** Resolves once the node's metric `name` (unlabelled) reads `value` (as tests/it/support's wait_for_metric). */
export async function waitForMetric(node, name, value) {
  const line = new RegExp(`^${name} ([0-9.e+-]+)$`, 'm');
  for (;;) {
    const text = await (await fetch(new URL('/metrics', node))).text();
    if (Number(text.match(line)?.[1]) === value) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
