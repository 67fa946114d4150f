// Evidence that decides, in a real browser (Playwright driving Debian's Chromium): a refund of an
// order that another execution already refunded is decided from the queue with the keyboard
// only, using what the card shows — the order as the lookup returned it (amount, status) and the
// earlier refund of the same order — and the execution resumes; another is rejected with a
// recent reason picked by its number. Screenshots go to $KEEL_ARTIFACTS.
// Run by crates/cli/tests/browser.rs, which starts `keel serve` and checks the shop afterwards.
'use strict';
const { base, token, out, check, api, eventually, launch } = require('./common.cjs');

/** Starts a refund and waits for its gate; returns [exec, gate]. */
async function refund(order) {
  const x = await api('POST', '/v1/executions', { goal: `Please refund order ${order}, it arrived damaged` });
  const g = await eventually(async () =>
    (await api('GET', '/v1/gates?status=pending')).gates.find((g) => g.exec_id === x.exec_id), `a gate for ${order}`);
  return [x.exec_id, g.gate_id];
}

async function status(exec, want) {
  await eventually(async () => (await api('GET', `/v1/executions/${exec}`)).status === want, `${exec} to be ${want}`);
}

/** Reloads an execution's page until its status is `want`; returns the page's answer. */
async function settle(page, exec, want) {
  await eventually(async () => {
    await page.goto(`${base}/ui/executions/${exec}`);
    return (await page.locator('#status').textContent()).trim() === want;
  }, `execution ${exec} to reach ${want}`);
  return (await page.locator('#answer').textContent()).trim();
}

(async () => {
  // Before: order A-1006 refunded by one execution (approved), A-1008's refund refused.
  const [first, g1] = await refund(1006);
  await api('POST', `/v1/gates/${g1}/decision`, { verdict: 'approve', reason: 'photo of the damage checked' });
  await status(first, 'success');
  const [refused, g2] = await refund(1008);
  await api('POST', `/v1/gates/${g2}/decision`, { verdict: 'reject', reason: 'duplicate refund' });
  await status(refused, 'failure');
  // Waiting: A-1006 again, then A-1007.
  const [again] = await refund(1006);
  const [other] = await refund(1007);

  const browser = await launch();
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    // The browser's own favicon request is not the page's.
    page.on('response', (r) => r.status() >= 400 && !r.url().endsWith('/favicon.ico')
      && errors.push(`${r.status()} ${r.url()}`));
    await page.goto(base + '/ui/login');
    await page.fill('#token', token);
    await page.click('#login');
    await page.waitForURL('**/ui/gates');
    check((await page.locator('#pending-count').textContent()).includes('2 pending'), 'two gates pending');

    // The card of the repeated refund shows what decides it.
    const card = page.locator(`section.gate[data-exec="${again}"]`);
    const results = await card.locator('.tool-results').textContent();
    check(results.includes('lookup_order(order_id A-1006) → ok'), 'the lookup and its input: ' + results);
    const order = JSON.parse(await card.locator('.tool-results pre.output').first().textContent());
    check(order.order_id === 'A-1006' && Number.isInteger(order.amount_cents) && order.status,
      'the order as the lookup returned it: ' + JSON.stringify(order));
    const amount = JSON.parse(await card.locator('pre.action').textContent()).args.amount_cents;
    check(amount === order.amount_cents, `the action refunds the amount paid (${amount} of ${order.amount_cents})`);
    const earlier = await card.locator('.earlier').textContent();
    check(earlier.includes(first) && earlier.includes('issue_customer_refund(') && earlier.includes('order_id A-1006')
      && earlier.includes('→ ok') && earlier.includes('approved by') && earlier.includes('"issued"'),
      'the earlier refund of the same order: ' + earlier);
    check(!earlier.includes(refused), 'another order\'s refusal is not listed');
    const record = await card.locator('.record').textContent();
    check(record.includes('1 approved, 1 rejected (50 % approved)'), 'the strategy\'s record: ' + record);
    await page.screenshot({ path: `${out}/evidence-queue.png`, fullPage: true });

    // j / k move between the gates; the oldest is focused first.
    const focused = async () => page.locator('section.gate.focused').getAttribute('data-exec');
    check((await focused()) === again, 'the oldest gate is focused');
    await page.keyboard.press('j');
    check((await focused()) === other, 'j moves to the next gate');
    await page.keyboard.press('k');
    check((await focused()) === again, 'k moves back');

    // a approves the focused gate: the execution resumes and issues the refund.
    await page.keyboard.press('a');
    await page.waitForURL(`**/ui/executions/${again}`);
    const answer = await settle(page, again, 'success');
    check(/Refund rf_\d+ is issued/.test(answer), 'the refund was issued: ' + answer);
    await page.screenshot({ path: `${out}/evidence-approved.png`, fullPage: true });

    // r without a reason asks for one; 1 picks the most recent reason; r rejects with it.
    await page.goto(base + '/ui/gates');
    await page.keyboard.press('r');
    check(await page.evaluate(() => document.activeElement && document.activeElement.name === 'reason'),
      'r without a reason puts the cursor in the reason');
    await page.keyboard.press('Escape');
    await page.keyboard.press('1');
    const picked = await page.locator(`section.gate[data-exec="${other}"] select[name=preset]`).inputValue();
    check(picked === 'duplicate refund', 'the most recent reason is picked: ' + picked);
    await page.keyboard.press('r');
    await page.waitForURL(`**/ui/executions/${other}`);
    const rejected = await settle(page, other, 'failure');
    check(rejected.includes('duplicate refund'), "the agent's next step carries the picked reason: " + rejected);
    check(errors.length === 0, 'no script errors: ' + errors.join('; '));
    console.log(JSON.stringify({ first, again, other }));
  } finally {
    await browser.close();
  }
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
