// The experiments pages in a real browser (Playwright driving Debian's Chromium): with the
// repository's support-prompts experiment registered, customers' executions started through the
// API without a strategy are assigned arms; /ui/experiments lists the experiment, and its readout
// page shows per arm the figures of GET /v1/experiments/{name}/readout (nothing recomputed), the
// holdback, the intervals, the guardrails and the verdict, without sideways scrolling. Prints
// what it saw as JSON for the Rust side. Run by crates/cli/tests/browser.rs.
'use strict';
const { base, token, out, check, api, eventually, launch } = require('./common.cjs');

(async () => {
  for (let n = 0; n < 8; n++) {
    const e = await api('POST', '/v1/executions', { goal: 'Where is my order A-1017?', subject: `cust-${n}` });
    await eventually(async () => (await api('GET', `/v1/executions/${e.exec_id}`)).status !== 'running',
      `execution ${e.exec_id} to end`);
  }
  const r = await api('GET', '/v1/experiments/support-prompts/readout');
  check(r.arms.reduce((n, a) => n + a.executions, 0) === 8, 'eight finished executions: ' + JSON.stringify(r.arms));

  const browser = await launch();
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    await page.goto(base + '/ui/login');
    await page.fill('#token', token);
    await page.click('#login');
    await page.waitForURL('**/ui/gates');
    await page.click('header >> text=Experiments');
    await page.waitForURL('**/ui/experiments');
    const list = await page.locator('#experiments').textContent();
    check(list.includes('support-prompts') && list.includes('control (holdback)'), 'the list: ' + list);
    await page.click('#experiments >> text=support-prompts');
    await page.waitForURL('**/ui/experiments/support-prompts');

    // Per arm, the API's figures, in the registered order.
    const arms = await page.locator('#arms tr.arm').evaluateAll((rows) => rows.map((tr) => ({
      arm: tr.getAttribute('data-arm'),
      cells: [...tr.querySelectorAll('td')].map((td) => td.textContent.trim()),
    })));
    check(JSON.stringify(arms.map((a) => a.arm)) === JSON.stringify(r.arms.map((a) => a.arm)),
      'the arms: ' + JSON.stringify(arms));
    arms.forEach((a, i) => {
      const want = r.arms[i];
      check(a.cells[1] === want.strategy, `${a.arm}'s strategy: ${a.cells[1]}`);
      check(a.cells[2] === String(want.executions), `${a.arm}'s executions: ${a.cells[2]} vs ${want.executions}`);
      check(a.cells[3] === String(want.units), `${a.arm}'s units: ${a.cells[3]}`);
      const cps = want.cost_per_success === null ? '—' : want.cost_per_success.toFixed(6);
      check(a.cells[11] === cps, `${a.arm}'s cost per success: ${a.cells[11]} vs ${cps}`);
      if (want.holdback) {
        check(a.cells[0].includes('holdback') && a.cells[13] === '(holdback)', 'the holdback is marked: ' + a.cells);
      }
      if (want.primary_ci) {
        check(a.cells[12].includes(want.primary_ci[0].toFixed(6)), `${a.arm}'s interval: ${a.cells[12]}`);
      }
    });
    const guardrails = await page.locator('#guardrails tr.guardrail').count();
    check(guardrails === r.arms.reduce((n, a) => n + a.guardrails.length, 0), 'every guardrail check: ' + guardrails);
    const verdict = await page.locator('#verdict').getAttribute('data-kind');
    check(verdict === r.verdict.kind, `the verdict: ${verdict} vs ${r.verdict.kind}`);
    check((await page.locator('#verdict').textContent()).includes(r.verdict.text), 'the verdict in words');
    check((await page.locator('#method').textContent()).includes('delta method'), 'the interval method');
    const o = await page.evaluate(() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]);
    check(o[0] <= o[1], 'no horizontal overflow: ' + o);
    await page.screenshot({ path: `${out}/experiment-readout.png`, fullPage: true });

    // Another tenant's experiment or an unknown one is not found.
    const missing = await page.goto(base + '/ui/experiments/no-such-experiment');
    check(missing.status() === 404, 'an unknown experiment is a 404: ' + missing.status());
    console.log(JSON.stringify({ arms: arms.map((a) => a.arm), verdict }));
  } finally {
    await browser.close();
  }
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
