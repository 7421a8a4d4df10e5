// One headless Chromium for a test, driven over stdin/stdout (tests/common/browser.rs): a JSON
// command per line in, a JSON answer per line out (`{"ok": true, "value": …}` or
// `{"ok": false, "error": "…"}`). Usage: node driver.mjs <user-data-dir>; prints `{"ready":true}`
// once the browser runs.
import readline from 'node:readline';
import { chromium } from 'playwright-core';

const [userDataDir] = process.argv.slice(2);
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: process.env.PGWARDEN_CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
  timeout: 60000,
});
const page = context.pages()[0] ?? (await context.newPage());
page.setDefaultTimeout(20000);
// What the page logged, for a failing test's message.
const console_ = [];
page.on('console', (m) => console_.push(`${m.type()}: ${m.text()}`));
page.on('pageerror', (e) => console_.push(`pageerror: ${e.message}`));

const textOf = async (selector) => (await page.locator(selector).first().textContent()) ?? '';

async function run(c) {
  switch (c.op) {
    case 'goto': {
      const r = await page.goto(c.url, { waitUntil: 'load' });
      return { status: r ? r.status() : 0, url: page.url() };
    }
    case 'fill':
      await page.locator(c.selector).fill(c.value);
      return null;
    case 'click': {
      // A click that submits a form: wait for the page it loads.
      const [r] = await Promise.all([
        c.navigates ? page.waitForNavigation({ waitUntil: 'load' }) : Promise.resolve(null),
        page.locator(c.selector).click(),
      ]);
      return { status: r ? r.status() : 0, url: page.url() };
    }
    case 'text':
      return await textOf(c.selector);
    case 'wait_text':
      await page.waitForFunction(
        ([selector, text]) => (document.querySelector(selector)?.textContent ?? '').includes(text),
        [c.selector, c.text],
        { timeout: c.timeout ?? 20000 },
      );
      return await textOf(c.selector);
    case 'count':
      return await page.locator(c.selector).count();
    case 'visible':
      return await page.locator(c.selector).first().isVisible();
    case 'url':
      return page.url();
    case 'eval':
      return await page.evaluate(c.expression);
    case 'submit': {
      // Navigates with the page's own form submission, whatever the script built.
      const [r] = await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.evaluate(c.expression)]);
      return { status: r ? r.status() : 0, url: page.url() };
    }
    case 'console':
      return console_;
    case 'screenshot':
      await page.screenshot({ path: c.path, fullPage: true });
      return null;
    default:
      throw new Error(`unknown op ${c.op}`);
  }
}

const out = (v) => process.stdout.write(`${JSON.stringify(v)}\n`);
out({ ready: true });
for await (const line of readline.createInterface({ input: process.stdin })) {
  let c;
  try {
    c = JSON.parse(line);
    out({ ok: true, value: await run(c) });
  } catch (e) {
    out({ ok: false, error: String(e && e.message ? e.message : e), url: page.url() });
  }
}
await context.close();
process.exit(0);
