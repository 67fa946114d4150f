// The execution page's waterfall in a real browser (Playwright driving Debian's Chromium): a
// refund by the demo's memory strategy (a retrieval, model calls, tool calls, a gate approved by
// API) is drawn with one bar per span of each kind; following a tool's bar opens its output,
// fetched from the blob endpoint, as JSON; a replay (made by `keel replay`) carries a badge that
// links to its original; an erased subject's stored output reads "erased"; the page never
// scrolls sideways at 1280 and 800 px with every input and output open. Screenshots go to $KEEL_ARTIFACTS. Run by crates/cli/tests/browser.rs.
'use strict';
const { base, token, out, check, api, eventually, launch } = require('./common.cjs');
const { execFileSync } = require('child_process');

/** How many spans of each kind an execution's events make (what the waterfall must draw). */
function expectedSpans(events) {
  const n = { model: 0, tool: 0, retrieval: 0, gate: 0 };
  const called = new Set();
  for (const e of events) {
    if (e.type === 'model.called') { n.model++; called.add(e.data.call_id); }
    if (e.type === 'model.responded' && !called.has(e.data.call_id)) n.model++;
    if (e.type === 'tool.called') n.tool++;
    if (e.type === 'memory.retrieved') n.retrieval++;
    if (e.type === 'gate.requested') n.gate++;
  }
  return n;
}

/** No sideways scrolling: the document is no wider than the window. */
async function fits(page, what) {
  const [sw, iw] = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
  check(sw <= iw, `${what}: document.scrollWidth ${sw} <= window.innerWidth ${iw}`);
}

(async () => {
  const a = await api('POST', '/v1/executions', {
    goal: 'Please refund order 1001, it arrived damaged. Please always send me updates by e-mail.',
    strategy: 'support-memory',
  });
  const gate = await eventually(async () => (await api('GET', '/v1/gates?status=pending')).gates
    .find((g) => g.exec_id === a.exec_id), 'the refund to wait at its gate');
  await api('POST', `/v1/gates/${gate.gate_id}/decision`, { verdict: 'approve', reason: 'damage photo checked' });
  await eventually(async () => (await api('GET', `/v1/executions/${a.exec_id}`)).status === 'success',
    'the refund to finish');
  const events = (await api('GET', `/v1/executions/${a.exec_id}/events`)).events;
  const want = expectedSpans(events);
  for (const k of ['model', 'tool', 'retrieval', 'gate']) check(want[k] > 0, `the execution has a ${k} span`);

  // A replay of it, by the CLI beside the server (same store).
  const replay = JSON.parse(execFileSync(process.env.KEEL_BIN,
    ['--data', process.env.KEEL_DATA, 'replay', a.exec_id, '--strategy', 'support-memory', '--json'],
    { cwd: process.env.KEEL_DIR, encoding: 'utf8' })).replay;
  check(replay && replay !== a.exec_id, 'a replay id: ' + replay);

  const browser = await launch();
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
    await page.goto(base + '/ui/login');
    await page.fill('#token', token);
    await page.click('#login');
    await page.waitForURL('**/ui/gates');

    await page.goto(`${base}/ui/executions/${a.exec_id}`);
    check(await page.locator('svg#waterfall').isVisible(), 'the waterfall is drawn');
    for (const [k, n] of Object.entries(want)) {
      const bars = await page.locator(`svg#waterfall rect.bar[data-kind="${k}"]`).count();
      check(bars === n, `${n} ${k} bar(s), found ${bars}`);
    }
    const legend = await page.locator('svg#waterfall g.legend').allTextContents();
    check(legend.join(' ').includes('tool call') && legend.join(' ').includes('approval gate'), 'a legend: ' + legend);
    const figures = await page.locator('svg#waterfall text.figures').allTextContents();
    check(figures.some((f) => /tokens/.test(f) && /\$\d/.test(f)), 'model bars show tokens and cost: ' + figures);

    // Follow the lookup's bar: its output opens in place, as the JSON the tool returned.
    const lookup = events.find((e) => e.type === 'tool.called' && e.data.tool === 'lookup_order');
    await page.locator(`svg#waterfall rect.bar[data-seq="${lookup.seq}"]`).click();
    await page.waitForURL(`**/ui/executions/${a.exec_id}#span-${lookup.seq}`);
    const output = page.locator(`li#span-${lookup.seq} details[data-part="output"]`);
    await eventually(async () => (await output.getAttribute('data-state')) === 'loaded', 'the tool output to load');
    const text = await output.locator('pre').textContent();
    const shown = JSON.parse(text);
    check(shown.order_id === 'A-1001' && Number.isInteger(shown.amount_cents), 'the tool output as JSON: ' + text);
    check(text.includes('\n  "order_id"'), 'pretty-printed: ' + text);
    await page.screenshot({ path: `${out}/execution-waterfall.png`, fullPage: true });

    // Everything open (model requests hold the whole prompt: long lines), at both widths.
    for (const width of [1280, 800]) {
      await page.setViewportSize({ width, height: 900 });
      await page.goto(`${base}/ui/executions/${a.exec_id}`);
      await page.evaluate(() => document.querySelectorAll('details.io').forEach((d) => { d.open = true; }));
      await eventually(async () => page.evaluate(() => [...document.querySelectorAll('details.io[data-blob]')]
        .every((d) => d.dataset.state === 'loaded')), 'every blob to load');
      await fits(page, `the execution at ${width} px`);
      await page.screenshot({ path: `${out}/execution-waterfall-${width}.png`, fullPage: true });
    }

    // An execution about a data subject, erased by `keel memory erase` beside the server: its
    // stored tool output reads "erased", its sealed tool input "[erased]".
    const b = await api('POST', '/v1/executions', {
      goal: 'Where is my order A-1003?', strategy: 'support-memory', subject: 'cust-9',
    });
    await eventually(async () => (await api('GET', `/v1/executions/${b.exec_id}`)).status !== 'running',
      'the subject\'s execution to end');
    const bLookup = (await api('GET', `/v1/executions/${b.exec_id}/events`)).events
      .find((e) => e.type === 'tool.called' && e.data.tool === 'lookup_order');
    execFileSync(process.env.KEEL_BIN,
      ['--data', process.env.KEEL_DATA, 'memory', 'erase', '--tenant', 'acme', 'cust-9'],
      { cwd: process.env.KEEL_DIR, encoding: 'utf8' });
    await page.goto(`${base}/ui/executions/${b.exec_id}`);
    const erased = page.locator(`li#span-${bLookup.seq} details[data-part="output"]`);
    await erased.locator('summary').click();
    await eventually(async () => (await erased.getAttribute('data-state')) === 'erased', 'the output to read erased');
    check((await erased.locator('pre').textContent()).startsWith('erased'), 'the output reads erased');
    const input = page.locator(`li#span-${bLookup.seq} details[data-part="input"]`);
    await input.locator('summary').click();
    check((await input.locator('pre').textContent()).includes('[erased]'), 'the input reads [erased]');
    const html = await page.content();
    const at = html.indexOf('A-1003');
    check(at < 0, 'nothing of the order shows: ' + html.slice(Math.max(0, at - 300), at + 100));
    await page.screenshot({ path: `${out}/execution-erased.png`, fullPage: true });

    // The replay: a badge that leads to the original.
    await page.setViewportSize({ width: 1280, height: 900 });
    await page.goto(`${base}/ui/executions/${replay}`);
    const badge = page.locator('#replay-of');
    check((await badge.getAttribute('href')) === `/ui/executions/${a.exec_id}`, 'the badge links to the original');
    await fits(page, 'the replay at 1280 px');
    await badge.click();
    await page.waitForURL(`**/ui/executions/${a.exec_id}`);
    console.log(JSON.stringify({ exec: a.exec_id, replay }));
  } finally {
    await browser.close();
  }
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
