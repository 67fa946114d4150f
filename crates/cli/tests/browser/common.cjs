// What every browser script shares: the server's address, token and artifacts directory from the
// environment crates/cli/tests/browser.rs sets, a check that names what failed, the API with the
// bearer token, waiting on a condition, and launching Debian's Chromium headless.
'use strict';
const { chromium } = require('playwright-core');

const base = process.env.KEEL_BASE;
const token = process.env.KEEL_TOKEN;
const out = process.env.KEEL_ARTIFACTS;

function check(cond, what) {
  if (!cond) throw new Error('check failed: ' + what);
}

async function api(method, path, body) {
  const r = await fetch(base + path, {
    method,
    headers: { authorization: 'Bearer ' + token, 'content-type': 'application/json' },
    body: body && JSON.stringify(body),
  });
  const j = await r.json();
  if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${JSON.stringify(j)}`);
  return j;
}

/** Polls `fn` every 100 ms until it returns something truthy (at most a minute). */
async function eventually(fn, what) {
  for (let i = 0; i < 600; i++) {
    const v = await fn();
    if (v) return v;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('timed out waiting for ' + what);
}

function launch() {
  return chromium.launch({
    executablePath: process.env.KEEL_CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking',
      '--disable-component-update', '--no-first-run', '--disable-default-apps', '--disable-sync'],
  });
}

module.exports = { base, token, out, check, api, eventually, launch };
