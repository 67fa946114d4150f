// The approval queue in a real browser (Playwright driving Debian's Chromium): log in with a
// token, read a refund's evidence pack, approve it and watch the execution finish; reject
// another and see the agent's next step. Screenshots go to $KEEL_ARTIFACTS.
// Run by crates/cli/tests/browser.rs, which starts `keel serve` and checks the shop afterwards.
'use strict';
const { base, token, out, check, api, eventually, launch } = require('./common.cjs');

/** Reloads an execution's page until its status is `want`; returns the page's answer. */
async function settle(page, exec, want) {
  await eventually(async () => {
    await page.goto(`${base}/ui/executions/${exec}`);
    return (await page.locator('#status').textContent()).trim() === want;
  }, `execution ${exec} to reach ${want}`);
  return (await page.locator('#answer').textContent()).trim();
}

(async () => {
  const a = await api('POST', '/v1/executions', { goal: 'Please refund order 1001, it arrived damaged' });
  const b = await api('POST', '/v1/executions', { goal: 'Please refund order 1002, I changed my mind' });
  await eventually(async () => (await api('GET', '/v1/gates?status=pending')).gates.length === 2, 'two pending gates');

  const browser = await launch();
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
    await page.goto(base + '/ui/gates');
    check(page.url().endsWith('/ui/login'), 'an anonymous visitor is sent to log in, at ' + page.url());
    await page.fill('#token', 'keel_not_a_token');
    await page.click('#login');
    check((await page.locator('#flash').textContent()).includes('not valid'), 'a bad token is refused');
    await page.fill('#token', token);
    await page.click('#login');
    await page.waitForURL('**/ui/gates');
    check((await page.locator('#pending-count').textContent()).includes('2 pending'), 'two gates pending');

    // The evidence pack, readable at a glance.
    const cardA = page.locator(`section.gate[data-exec="${a.exec_id}"]`);
    const text = await cardA.textContent();
    for (const want of ['tier 3', 'issue_customer_refund', 'Please refund order 1001', '"order_id": "A-1001"',
      'always pass a gate', 'irreversible', 'step 0: plan', 'Cost so far', 'lookup_order']) {
      check(text.includes(want), `evidence pack shows ${JSON.stringify(want)}`);
    }
    await page.screenshot({ path: `${out}/approval-queue.png`, fullPage: true });

    // Approve: the refund runs and the execution finishes.
    await cardA.locator('textarea[name=reason]').fill('Photo of the damage checked');
    await cardA.locator('button.approve').click();
    await page.waitForURL(`**/ui/executions/${a.exec_id}`);
    const answerA = await settle(page, a.exec_id, 'success');
    check(/Refund rf_\d+ is issued/.test(answerA), 'the refund was issued: ' + answerA);
    const timeline = await page.locator('#timeline').textContent();
    check(timeline.includes('gate.decided') && timeline.includes('approve by'), 'the timeline shows the decision');
    check(timeline.includes('tokens') || /\d+\/\d+/.test(timeline), 'the timeline shows tokens per step');
    await page.screenshot({ path: `${out}/execution-approved.png`, fullPage: true });

    // Reject: the agent is told why and answers the customer.
    await page.goto(base + '/ui/gates');
    const cardB = page.locator(`section.gate[data-exec="${b.exec_id}"]`);
    await cardB.locator('button.reject').click();
    check((await page.locator('#flash').textContent()).includes('reason'), 'a rejection needs a reason');
    await cardB.locator('textarea[name=reason]').fill('Outside the 14-day refund window');
    await cardB.locator('button.reject').click();
    await page.waitForURL(`**/ui/executions/${b.exec_id}`);
    const answerB = await settle(page, b.exec_id, 'failure');
    check(answerB.includes('Outside the 14-day refund window'), "the agent's next step carries the reason: " + answerB);
    await page.screenshot({ path: `${out}/execution-rejected.png`, fullPage: true });

    await page.goto(base + '/ui/gates');
    check((await page.locator('#empty').textContent()).includes('Nothing waits'), 'the queue is empty');
    check((await page.locator('#decided').textContent()).includes('Outside the 14-day refund window'), 'decisions are listed');
    await page.goto(base + '/ui/executions');
    check((await page.locator('tr.exec').count()) === 2, 'both executions are listed');
    await page.goto(base + '/ui/kill-switches');
    await page.selectOption('select[name=scope]', 'tool');
    await page.fill('input[name=name]', 'notify_team');
    await page.fill('input[name=reason]', 'channel flooded');
    await page.click('button.reject');
    check((await page.locator('#switches').textContent()).includes('channel flooded'), 'the switch is listed');
    await page.screenshot({ path: `${out}/kill-switches.png`, fullPage: true });
    console.log(JSON.stringify({ approved: a.exec_id, rejected: b.exec_id }));
  } finally {
    await browser.close();
  }
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
