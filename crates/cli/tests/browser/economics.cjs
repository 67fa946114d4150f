// The economics page in a real browser (Playwright driving Debian's Chromium), over the fixed
// two-tenant ledger of tests/common/ledger.rs, logged in as tenant acme: the chart of cost per
// success is there as inline SVG with axes, ticks and a legend, one series per strategy version
// acme ran (and none of globex's), the tables agree with GET /v1/economics, the verdict names the
// cheapest version, and the page never scrolls sideways (1280 px and 800 px). Prints what it saw
// as JSON for the Rust side. Run by crates/cli/tests/browser.rs.
'use strict';
const { base, token, out, check, api, launch } = require('./common.cjs');

(async () => {
  const e = await api('GET', '/v1/economics');
  check(e.tenant === 'acme', 'the API answers for acme: ' + JSON.stringify(e));
  const browser = await launch();
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    await page.goto(base + '/ui/login');
    await page.fill('#token', token);
    await page.click('#login');
    await page.waitForURL('**/ui/gates');
    await page.click('header >> text=Economics');
    await page.waitForURL('**/ui/economics');

    // The chart: inline SVG, one series per strategy version, each with points and a legend.
    const chart = page.locator('main svg#cps-chart');
    check((await chart.count()) === 1, 'one chart');
    const seen = await chart.evaluate((svg) => {
      const series = [...svg.querySelectorAll('g.series')].map((g) => ({
        strategy: g.getAttribute('data-strategy'),
        points: g.querySelectorAll('circle.point').length,
        legend: (g.querySelector('g.legend text') || {}).textContent || '',
        colour: (g.querySelector('circle.point') || { getAttribute: () => '' }).getAttribute('fill'),
      }));
      return {
        series,
        yticks: [...svg.querySelectorAll('text.ytick')].map((t) => t.textContent),
        xticks: [...svg.querySelectorAll('text.xtick')].map((t) => t.textContent),
        title: svg.querySelector('title').textContent,
        external: [...svg.querySelectorAll('image, use, script, foreignObject')].length,
        text: svg.textContent,
        box: svg.getBoundingClientRect().width,
      };
    });
    const names = seen.series.map((s) => s.strategy).sort();
    check(JSON.stringify(names) === JSON.stringify(['support-long/v1', 'support-short/v1']),
      'one series per strategy version of acme: ' + JSON.stringify(names));
    for (const s of seen.series) {
      check(s.points >= 2, `${s.strategy} has a point per day with a success: ${s.points}`);
      check(s.legend === s.strategy, `${s.strategy} is in the legend: ${s.legend}`);
    }
    check(new Set(seen.series.map((s) => s.colour)).size === seen.series.length, 'each series its own colour');
    check(seen.yticks.length >= 2 && seen.yticks.every((t) => t.startsWith('$')), 'dollar ticks: ' + seen.yticks);
    check(seen.xticks.length >= 2, 'day ticks: ' + seen.xticks);
    check(seen.title.includes('Cost per success'), 'a title: ' + seen.title);
    check(seen.external === 0, 'no external assets or script in the chart');
    check(!seen.text.includes('globex'), 'nothing of globex in the chart');

    // The tables and the verdict agree with the API.
    const rows = await page.locator('#strategies tr.strategy td:first-child').allTextContents();
    check(JSON.stringify(rows) === JSON.stringify(e.strategies.map((s) => s.strategy_version)),
      'the table lists the API\'s versions in its order: ' + rows);
    const first = await page.locator('#strategies tr.strategy').first().locator('td').nth(1).textContent();
    check(first.trim() === '$' + e.strategies[0].cost_per_success.toFixed(6), 'cost per success beside the name: ' + first);
    const verdict = await page.locator('#verdict').textContent();
    check(verdict.includes('Cheapest per success: ' + e.strategies[0].strategy_version), 'the verdict: ' + verdict);
    const body = await page.locator('body').textContent();
    check(!body.includes('globex'), 'the page shows nothing of globex');
    const tenants = await page.locator('#tenants').textContent();
    check(tenants.includes('acme') && tenants.includes('$0.290720'), 'acme\'s spend: ' + tenants);

    // No sideways scrolling, wide or narrow.
    const widths = {};
    for (const w of [1280, 800]) {
      await page.setViewportSize({ width: w, height: 900 });
      const o = await page.evaluate(() => ({
        scroll: document.documentElement.scrollWidth,
        client: document.documentElement.clientWidth,
        chart: document.querySelector('#cps-chart').getBoundingClientRect().right,
      }));
      check(o.scroll <= o.client, `no horizontal overflow at ${w}px: ${JSON.stringify(o)}`);
      check(o.chart <= o.client, `the chart fits at ${w}px: ${JSON.stringify(o)}`);
      widths[w] = o;
      await page.screenshot({ path: `${out}/economics-${w}.png`, fullPage: true });
    }
    console.log(JSON.stringify({ series: seen.series, widths }));
  } finally {
    await browser.close();
  }
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
