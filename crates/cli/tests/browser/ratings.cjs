// Rating a sampled memory retrieval in a real browser (Playwright driving Debian's Chromium):
// executions of the demo's memory strategy retrieve governed memory until the projections have
// sampled one retrieval for a human rating; the rater reads it on /ui/retrievals (query, memory
// version, the facts shown with their text), grades it with a note, sees it move to "Rated", and
// finds it counted on the SLO page. Prints the rated sample as JSON for the Rust side, which
// checks that a projection rebuild keeps the rating (it is a spine event).
// Run by crates/cli/tests/browser.rs.
'use strict';
const { base, token, out, check, api, eventually, launch } = require('./common.cjs');

(async () => {
  // One retrieval in ten is sampled (by a hash of the event id): run executions until one is.
  let sample = null;
  for (let n = 0; n < 120 && !sample; n++) {
    const e = await api('POST', '/v1/executions', {
      goal: 'Where is my order A-1007? Please always send me updates by e-mail.',
      strategy: 'support-memory',
    });
    await eventually(async () => (await api('GET', `/v1/executions/${e.exec_id}`)).status !== 'running',
      `execution ${e.exec_id} to end`);
    const q = await api('GET', '/v1/retrieval-samples?unrated=true');
    sample = q.samples[0] || null;
  }
  check(sample, 'a retrieval was sampled within 120 executions');
  check(sample.tenant === 'acme' && sample.rating === null, 'an unrated acme sample: ' + JSON.stringify(sample));

  const browser = await launch();
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
    await page.goto(base + '/ui/login');
    await page.fill('#token', token);
    await page.click('#login');
    await page.waitForURL('**/ui/gates');
    await page.click('text=Retrieval ratings');
    await page.waitForURL('**/ui/retrievals');
    const card = page.locator(`#sample-${sample.exec_id}-${sample.seq}`);
    const text = await card.textContent();
    check(text.includes('Where is my order A-1007'), 'the card shows the query: ' + text);
    check(text.includes(sample.memory_version), 'the card shows the memory version');
    if (sample.chunks.length > 0) {
      // The facts the model was shown, with their text from governed memory.
      check(text.includes(sample.chunks[0].id) && text.includes('score'), 'the card lists the facts: ' + text);
      check(!text.includes('memory not configured'), 'fact text is looked up: ' + text);
    } else {
      check(text.includes('nothing retrieved'), 'an empty retrieval says so: ' + text);
    }
    await page.screenshot({ path: `${out}/retrieval-ratings.png`, fullPage: true });

    // A form without a grade is refused with a message.
    await card.locator('button[type=submit]').click();
    check((await page.locator('#flash').textContent()).includes('grade'), 'a grade is required');

    const card2 = page.locator(`#sample-${sample.exec_id}-${sample.seq}`);
    await card2.locator('input[name=rating][value="2"]').check();
    await card2.locator('input[name=note]').fill('right customer, right preference');
    await card2.locator('button[type=submit]').click();
    await page.waitForURL('**/ui/retrievals');
    check((await page.locator(`#sample-${sample.exec_id}-${sample.seq}`).count()) === 0, 'the sample left the queue');
    const rated = await page.locator('#rated').textContent();
    check(rated.includes('Ada (approver)') && rated.includes('2'), 'the rated table lists it: ' + rated);

    await page.goto(base + '/ui/slo');
    const slo = await page.locator('#retrieval').textContent();
    check(slo.includes('support-memory'), 'the SLO page has the strategy\'s retrieval relevance: ' + slo);
    await page.screenshot({ path: `${out}/slo-retrieval.png`, fullPage: true });

    const all = await api('GET', '/v1/retrieval-samples');
    const back = all.samples.find((s) => s.exec_id === sample.exec_id && s.seq === sample.seq);
    check(back && back.rating === 2 && back.rated_by === 'Ada (approver)', 'the API shows the rating: ' + JSON.stringify(back));
    console.log(JSON.stringify({ exec_id: sample.exec_id, seq: sample.seq }));
  } finally {
    await browser.close();
  }
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
