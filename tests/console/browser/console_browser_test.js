#!/usr/bin/env node
// The web console in a real browser (M12 acceptance): Debian's headless Chromium, driven by
// puppeteer-core, against a real pimgate process with a real plugin (flaky_plugin.js, Node SDK)
// fed by signed webhooks over real sockets. Checks: a wrong token is refused; log in; the overview
// shows the figures of the ingested load; a REJECTed event is a dead letter, retried from the
// console once the plugin is fixed, and gone; the plugin is paused (its lag grows) and resumed
// (delivered); an event whose data holds <img src=x onerror=...> renders as text and runs
// nothing; the browser console shows no error on any page (the refused login's 401 aside).
// Screenshots go to --artifacts (build/test-artifacts/console).
//
// Usage: node console_browser_test.js --pimgate <binary> --artifacts <dir>
// Environment: PIMGATE_CHROMIUM (default /usr/bin/chromium).
// Exit status: 0 passed, 1 failed, 77 skipped (no Chromium: reported, and a CI=true run of
// scripts/test fails on it, see scripts/test-summary).
//
// Every wait is for a condition, with a hang guard (WAIT_MS); nothing waits a fixed time.
'use strict';
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const WAIT_MS = 90_000;  // hang guard of every wait (a slow, busy machine or an ASan build)
const TOKEN = crypto.randomBytes(18).toString('hex');
const SECRET = 'console-test-legacy-secret';
const REJECT_RESOURCE = 'reject-me';
const XSS = '<img src=x onerror="window.__pwned=1">';
const XSS_RESOURCE = '0b5c7a43-7a4a-4a53-9f06-2f2b8d9a1c01';

function args() {
  const out = { pimgate: '', artifacts: '' };
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '');
    if (!(key in out)) throw new Error(`unknown argument ${argv[i]}`);
    out[key] = argv[i + 1];
  }
  if (!out.pimgate || !out.artifacts) {
    throw new Error('usage: --pimgate <binary> --artifacts <dir>');
  }
  return out;
}

function skip(reason) {
  // The shape of a GTEST_SKIP message, which scripts/test-summary reads from ctest's report.
  console.log(`${__filename}:1: Skipped\n${reason}\n[  SKIPPED ] console browser test`);
  process.exit(77);
}

function log(message) {
  console.log(`[console-test ${new Date().toISOString()}] ${message}`);
}

// Polls `check` (sync or async; a truthy result ends the wait) every 100 ms up to WAIT_MS.
async function waitFor(what, check) {
  const deadline = Date.now() + WAIT_MS;
  let last;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${WAIT_MS / 1000} s waiting for ${what}` +
        (last ? ` (last error: ${last.message})` : ''));
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

// ---- webhooks (the legacy Events API, signed as Akeneo signs them) ----------------------------

function legacyEvent({ id, uuid, author = 'julia', family = 'shoes' }) {
  return {
    action: 'product.updated',
    event_id: id,
    event_datetime: '2026-12-05T04:00:00+00:00',
    author,
    author_type: 'ui',
    pim_source: 'https://pim.example.com',
    data: {
      resource: {
        uuid, identifier: `sku-${uuid.slice(0, 8)}`, family, enabled: true, categories: ['summer'],
        values: {}, updated: '2026-12-05T04:00:00+00:00',
      },
    },
  };
}

async function postLegacy(port, elements, { secret = SECRET } = {}) {
  const body = JSON.stringify({ events: elements });
  const ts = String(Math.floor(Date.now() / 1000));
  const signature = crypto.createHmac('sha256', secret).update(`${ts}.${body}`).digest('hex');
  const response = await fetch(`http://127.0.0.1:${port}/hooks/legacy`, {
    method: 'POST',
    headers: {
      'Content-Type': 'application/json',
      'X-Akeneo-Request-Timestamp': ts,
      'X-Akeneo-Request-Signature': signature,
    },
    body,
  });
  await response.text();
  return response.status;
}

// ---- the admin API over HTTP/JSON (what the console calls) ----------------------------------

async function api(port, method, request = {}, token = TOKEN) {
  const response = await fetch(`http://127.0.0.1:${port}/api/v1/${method}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${token}` },
    body: JSON.stringify(request),
  });
  const body = await response.json();
  return { status: response.status, body };
}

function field(object, name) {
  const camel = name.replace(/_([a-z])/g, (_, c) => c.toUpperCase());
  return object[name] !== undefined ? object[name] : object[camel];
}

async function pluginStats(port, plugin) {
  const { status, body } = await api(port, 'GetStats');
  assert.equal(status, 200, JSON.stringify(body));
  return (body.plugins || []).find((p) => p.name === plugin);
}

// ---- pimgate --------------------------------------------------------------------------------

function writeConfig(dir) {
  const plugin = path.join(__dirname, 'flaky_plugin.js');
  const yaml = `gateway:
  listen: 127.0.0.1:0
store:
  path: ${dir}/store
log:
  level: info
sources:
  - {name: legacy, kind: events_api, path: /hooks/legacy, secret: ${SECRET}}
plugins:
  - name: shop
    command: ["${process.execPath}", "${plugin}"]
    env:
      REJECT_RESOURCE: ${REJECT_RESOURCE}
      FIXED_FLAG: ${dir}/fixed
      ACCEPTED_OUT: ${dir}/accepted.jsonl
    ack_timeout: 10s
    start_timeout: 60s
    retry: {max_attempts: 3, initial_backoff: 50ms, max_backoff: 200ms}
admin:
  listen: 127.0.0.1:0
  token: ${TOKEN}
metrics:
  enabled: false
console:
  enabled: true
  listen: 127.0.0.1:0
`;
  const file = path.join(dir, 'pimgate.yaml');
  fs.writeFileSync(file, yaml);
  return file;
}

function startPimgate(binary, dir) {
  const config = writeConfig(dir);
  const ready = path.join(dir, 'ready.json');
  const logFile = path.join(dir, 'pimgate.log');
  const out = fs.openSync(logFile, 'a');
  const child = spawn(binary, ['--config', config, '--ready-file', ready], {
    stdio: ['ignore', out, out],
  });
  fs.closeSync(out);
  let exited = null;
  const exit = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      exited = signal || code;
      resolve(exited);
    });
  });
  return {
    child,
    logFile,
    async ports() {
      return waitFor('pimgate to be ready (its --ready-file)', () => {
        if (exited !== null) throw new Error(`pimgate exited (${exited}) before it was ready`);
        if (!fs.existsSync(ready)) return null;
        const text = fs.readFileSync(ready, 'utf8');
        if (!text.trim().endsWith('}')) return null;
        const ports = JSON.parse(text);
        if (!ports.console_port) {
          throw new Error(`the ready file has no console_port: ${text}`);
        }
        return ports;
      });
    },
    // SIGTERM, as systemd stops it; its exit status (a signal name if it had to be killed).
    async stop() {
      if (exited === null) {
        child.kill('SIGTERM');
        const guard = setTimeout(() => child.kill('SIGKILL'), WAIT_MS);
        await exit;
        clearTimeout(guard);
      }
      return exited;
    },
  };
}

// ---- the browser ----------------------------------------------------------------------------

// Every console message of type error, every uncaught page error and every failed request, with
// the page (route) it happened on.
class ConsoleWatch {
  constructor(page) {
    this.errors = [];
    page.on('console', (message) => {
      if (message.type() === 'error') this.errors.push(`console: ${message.text()}`);
    });
    page.on('pageerror', (error) => this.errors.push(`page error: ${error.message}`));
    page.on('requestfailed', (request) =>
      this.errors.push(`request failed: ${request.url()} ${request.failure()?.errorText}`));
  }
  take() {
    const errors = this.errors;
    this.errors = [];
    return errors;
  }
  assertNone(where) {
    const errors = this.take();
    assert.deepEqual(errors, [], `the browser console shows errors on ${where}`);
  }
}

async function text(page, selector) {
  return page.$eval(selector, (element) => element.textContent);
}

async function waitText(page, selector, predicate, what) {
  return waitFor(what, async () => {
    const value = await page.$eval(selector, (element) => element.textContent).catch(() => null);
    return value !== null && predicate(value) ? value : null;
  });
}

async function clickConfirm(page) {
  await page.waitForSelector('[data-testid=confirm]', { timeout: WAIT_MS });
  await page.click('[data-testid=confirm]');
  await page.waitForSelector('[data-testid=confirm]', { hidden: true, timeout: WAIT_MS });
}

async function go(page, route) {
  await page.evaluate((hash) => {
    window.location.hash = hash;
  }, route);
  await waitFor(`the route ${route}`,
    () => page.evaluate((hash) => window.location.hash === hash, route));
}

async function main() {
  const options = args();
  const chromium = process.env.PIMGATE_CHROMIUM || '/usr/bin/chromium';
  let executable = false;
  try {
    fs.accessSync(chromium, fs.constants.X_OK);
    executable = fs.statSync(chromium).isFile();
  } catch {
    executable = false;
  }
  if (!executable) {
    skip(`no Chromium at ${chromium} (install Debian's chromium: scripts/lib.sh ensure_packages, ` +
      'or set PIMGATE_CHROMIUM)');
  }
  let puppeteer;
  try {
    puppeteer = require('puppeteer-core');
  } catch (e) {
    throw new Error(`puppeteer-core is missing: npm ci in tests/console (${e.message})`);
  }
  fs.mkdirSync(options.artifacts, { recursive: true });
  // Screenshots: the viewport, or its top `height` pixels (docs/console.md shows two of them).
  const shot = (page, name, height) =>
    page.screenshot({
      path: path.join(options.artifacts, `${name}.png`),
      ...(height ? { clip: { x: 0, y: 0, width: 1280, height } } : {}),
    });
  for (const old of fs.readdirSync(options.artifacts)) {
    if (old.endsWith('.png') || old === 'pimgate.log') fs.rmSync(path.join(options.artifacts, old));
  }

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pimgate-console-'));
  const pimgate = startPimgate(options.pimgate, dir);
  let browser = null;
  let passed = false;
  try {
    const ports = await pimgate.ports();
    const consolePort = ports.console_port;
    const gatewayPort = ports.gateway_port;
    const base = `http://127.0.0.1:${consolePort}/`;
    log(`pimgate ready: gateway ${gatewayPort}, console ${consolePort}`);

    // The load: 11 events and one element the parser refuses in one request (400: the element is
    // quarantined, the events stored), 2 more events in another (200), and one request with a
    // wrong signature (401).
    const events = [];
    for (let i = 0; i < 8; i++) {
      events.push(legacyEvent({ id: crypto.randomUUID(), uuid: crypto.randomUUID() }));
    }
    events.push(legacyEvent({ id: crypto.randomUUID(), uuid: REJECT_RESOURCE }));
    events.push(
      legacyEvent({ id: crypto.randomUUID(), uuid: XSS_RESOURCE, author: XSS, family: XSS }));
    events.push(legacyEvent({ id: crypto.randomUUID(), uuid: crypto.randomUUID() }));
    const invalid = { action: 'product.updated', author: 'julia', data: { resource: {} } };
    assert.equal(await postLegacy(gatewayPort, [...events, invalid]), 400);
    const more = [1, 2].map(
      () => legacyEvent({ id: crypto.randomUUID(), uuid: crypto.randomUUID() }));
    assert.equal(await postLegacy(gatewayPort, more), 200);
    assert.equal(await postLegacy(gatewayPort, more, { secret: 'not-the-secret' }), 401);
    const accepted = events.length + more.length;  // 13

    // The plugin has handled everything: the REJECTed event is a dead letter, the others acked.
    const settled = await waitFor('the plugin to handle the load', async () => {
      const stats = await pluginStats(consolePort, 'shop');
      return stats && Number(field(stats, 'cursor')) === accepted &&
        Number(field(stats, 'dead_letters_stored')) === 1 ? stats : null;
    });
    log(`plugin settled: ${JSON.stringify(settled)}`);
    const rejectSequence = await waitFor('the dead letter', async () => {
      const { body } = await api(consolePort, 'ListDeadLetters', { plugin: 'shop' });
      const letters = field(body, 'dead_letters') || [];
      return letters.length === 1 ? String(letters[0].event.sequence) : null;
    });

    // The API refuses a wrong token (the console relies on it).
    const refused = await api(consolePort, 'GetStats', {}, 'wrong-token');
    assert.equal(refused.status, 401);
    assert.equal(refused.body.code, 'UNAUTHENTICATED');

    const headless = process.env.PIMGATE_CONSOLE_HEADFUL === '1' ? false : true;
    browser = await puppeteer.launch({
      executablePath: chromium,
      headless,
      args: [
        ...(process.getuid && process.getuid() === 0 ? ['--no-sandbox'] : []),
        '--disable-dev-shm-usage', '--disable-gpu', '--no-first-run', '--no-default-browser-check',
        '--disable-extensions', '--disable-background-networking', '--disable-component-update',
      ],
      defaultViewport: { width: 1280, height: 800 },
      protocolTimeout: WAIT_MS,
    });
    const page = await browser.newPage();
    page.setDefaultTimeout(WAIT_MS);
    const watch = new ConsoleWatch(page);

    // ---- login: a wrong token is refused, the right one is kept in sessionStorage only -----
    await page.goto(base, { waitUntil: 'load' });
    await page.waitForSelector('[data-testid=login-form]');
    await page.type('#token', 'wrong-token');
    await page.click('[data-testid=login-form] button[type=submit]');
    await waitText(page, '[role=alert]', (t) => t.includes('The token was refused'),
      'the login page to refuse the wrong token');
    assert.equal(await page.evaluate(() => sessionStorage.length), 0,
      'a refused token is not kept');
    assert.equal(await page.$('[data-testid=overview]'), null);
    await shot(page, 'login-refused');
    // The refused call is the one error the browser logs here: its 401.
    for (const error of watch.take()) {
      assert.match(error, /401/, `unexpected browser error at login: ${error}`);
    }
    await page.$eval('#token', (input) => {
      input.value = '';
    });
    await page.type('#token', TOKEN);
    await page.click('[data-testid=login-form] button[type=submit]');
    await page.waitForSelector('[data-testid=overview]');
    assert.equal((await page.cookies()).length, 0, 'the console sets no cookie');
    assert.equal(await page.evaluate(() => sessionStorage.getItem('pimgate.console.token')), TOKEN);
    watch.assertNone('login');

    // ---- overview: the figures of the load --------------------------------------------------
    const row = '[data-testid=sources] tr[data-source=legacy]';
    await waitText(page, `${row} [data-field=accepted]`, (t) => t === String(accepted),
      `the overview to show ${accepted} accepted events`);
    const codes = await text(page, `${row} [data-field=codes]`);
    assert.match(codes, /200 ×1/, `answer codes: ${codes}`);
    assert.match(codes, /400 ×1/, `answer codes: ${codes}`);
    assert.match(codes, /401 ×1/, `answer codes: ${codes}`);
    assert.equal(await text(page, '[data-testid=head-sequence]'), String(accepted));
    assert.equal(await text(page, '[data-testid=event-count]'), String(accepted));
    assert.equal(await text(page, '[data-testid=first-sequence]'), '1');
    const plugin = '[data-testid=plugins] tr[data-plugin=shop]';
    await waitText(page, `${plugin} [data-field=dead_letters_stored]`, (t) => t === '1',
      'the overview to show one stored dead letter');
    assert.equal(await text(page, `${plugin} [data-field=dead_lettered]`), '1');
    assert.equal(await text(page, `${plugin} [data-field=lag]`), '0');
    assert.equal(await text(page, `${plugin} [data-field=delivered]`),
      String(Number(field(settled, 'delivered'))));
    // Two samples make a sparkline with a line.
    await waitFor('a second sample (sparklines)', () =>
      page.$eval(`${row} svg.spark polyline`,
        (p) => p.getAttribute('points').split(' ').length >= 2)
        .catch(() => false));
    await shot(page, 'overview', 540);
    watch.assertNone('the overview');

    // ---- dead letters: the REJECTed event, retried once the plugin is fixed, and gone --------
    await page.click(`${plugin} a[data-field=dead_letters_stored]`);
    const letterRow = `[data-testid=dead-letters] tr[data-sequence="${rejectSequence}"]`;
    await page.waitForSelector(letterRow);
    const letterText = await text(page, letterRow);
    assert.match(letterText, /rejected: resource reject-me is refused until the plugin is fixed/);
    await page.click(`${letterRow} button.link`);
    await page.waitForSelector('[data-testid=dead-letter-detail] [data-testid=json]');
    assert.match(await text(page, '[data-testid=dead-letter-detail]'), /"resourceId": "reject-me"/);
    await shot(page, 'dead-letters', 600);
    // The filters are pimgate's (ListDeadLetters): none of the letters is "retries exhausted";
    // the rejected one of resource reject-me is found (Enter applies at once).
    const filters = '[data-testid=dead-letter-filters]';
    await page.select(`${filters} select[name=kind]`, 'exhausted');
    await waitText(page, '[data-testid=no-dead-letters]', (t) => t.includes('match the filters'),
      'no exhausted letter');
    assert.equal(await page.$(letterRow), null);
    await waitText(page, '[data-testid=dead-letters-searched]',
      (t) => t.trim() === 'None found yet in 1 letters searched.', 'the letters searched');
    await page.select(`${filters} select[name=kind]`, 'rejected');
    await page.type(`${filters} input[name=resource]`, REJECT_RESOURCE);
    await page.keyboard.press('Enter');
    await waitText(page, '[data-testid=dead-letters-searched]',
      (t) => t.trim() === '1 found in 1 letters searched.', 'the rejected letter of reject-me');
    await page.waitForSelector(letterRow);
    await page.type(`${filters} input[name=type]`, 'product_model.*');
    await waitText(page, '[data-testid=no-dead-letters]', (t) => t.includes('match the filters'),
      'no product_model letter (the typed filter applied once typing paused)');
    // Filters cleared: every letter again.
    await page.select(`${filters} select[name=kind]`, '');
    for (const name of ['type', 'resource']) {
      await page.click(`${filters} input[name=${name}]`, { clickCount: 3 });
      await page.keyboard.press('Backspace');
    }
    await page.keyboard.press('Enter');
    await page.waitForSelector(letterRow);
    await waitFor('the filters to be gone', async () =>
      (await page.$('[data-testid=dead-letters-searched]')) === null);
    fs.writeFileSync(path.join(dir, 'fixed'), 'fixed\n');  // the plugin now accepts it
    await page.click(`${letterRow} input[type=checkbox]`);
    await page.click('[data-testid=retry-selected]');
    await clickConfirm(page);
    await waitText(page, '[data-testid=action-result]', (t) => t.includes(rejectSequence),
      'the retry to be confirmed');
    await waitFor('the plugin to accept the retried event', () => {
      const file = path.join(dir, 'accepted.jsonl');
      return fs.existsSync(file) && fs.readFileSync(file, 'utf8').split('\n')
        .some((line) => line && JSON.parse(line).resource_id === REJECT_RESOURCE);
    });
    await waitFor('the dead letter to be gone from the page', async () => {
      if (await page.$('[data-testid=no-dead-letters]')) return true;
      await page.click('[data-testid=refresh]');
      return false;
    });
    const afterRetry = await pluginStats(consolePort, 'shop');
    assert.equal(Number(field(afterRetry, 'dead_letters_stored')), 0);
    watch.assertNone('the dead letters page');

    // ---- plugin page: pause (an event waits), resume (it is delivered) ----------------------
    await go(page, '#/plugin/shop');
    await page.waitForSelector('[data-testid=plugin-page]');
    await page.click('[data-testid=pause]');
    await clickConfirm(page);
    await waitText(page, '[data-testid=delivery-state]', (t) => t === 'paused',
      'the plugin page to show the plugin paused');
    const late = legacyEvent({ id: crypto.randomUUID(), uuid: crypto.randomUUID() });
    assert.equal(await postLegacy(gatewayPort, [late]), 200);
    const whilePaused = await waitFor('the paused plugin to lag by the new event', async () => {
      const stats = await pluginStats(consolePort, 'shop');
      return Number(field(stats, 'lag')) === 1 ? stats : null;
    });
    assert.equal(field(whilePaused, 'state'), 'paused');
    await shot(page, 'plugin-paused');
    await page.click('[data-testid=resume]');
    await clickConfirm(page);
    await waitText(page, '[data-testid=delivery-state]', (t) => t !== 'paused',
      'the plugin page to show the plugin resumed');
    await waitFor('the event sent while paused to be delivered', () =>
      fs.readFileSync(path.join(dir, 'accepted.jsonl'), 'utf8').split('\n')
        .some((line) => line && JSON.parse(line).id === late.event_id));
    // Seek back to sequence 1: after confirmation the whole log is delivered again.
    const acceptedLines = () => fs.readFileSync(path.join(dir, 'accepted.jsonl'), 'utf8')
      .split('\n').filter(Boolean).map((line) => JSON.parse(line));
    await waitFor('the plugin to be resumed', async () =>
      field(await pluginStats(consolePort, 'shop'), 'state') !== 'paused');
    await page.type('#seek-sequence', '1');
    await page.click('#seek-sequence + button');
    await clickConfirm(page);
    await waitText(page, '[data-testid=action-result]',
      (t) => /Resumes from sequence\s*1 \(head \d+\)/.test(t), 'the seek to be confirmed');
    const first = events[0].event_id;
    await waitFor('the first event to be delivered again after the seek', () =>
      acceptedLines().filter((line) => line.id === first).length >= 2);
    watch.assertNone('the plugin page');

    // ---- events: attacker-controlled data renders as text and runs nothing -------------------
    await go(page, `#/events?resource_id=${XSS_RESOURCE}`);
    const eventRow = '[data-testid=events] tbody tr';
    await page.waitForSelector(eventRow);
    assert.equal((await page.$$(eventRow)).length, 1);
    assert.ok((await text(page, eventRow)).includes(XSS), 'the author shows as text in the list');
    await page.click(`${eventRow} a`);
    await page.waitForSelector('[data-testid=event-page] [data-testid=json]');
    const json = await text(page, '[data-testid=event-page] [data-testid=json]');
    assert.ok(json.includes(`"family": ${JSON.stringify(XSS)}`), 'the data shows as text');
    assert.ok(json.includes(`"author": ${JSON.stringify(XSS)}`));
    assert.equal(await page.$$eval('img', (images) => images.length), 0, 'no <img> was made');
    assert.equal(await page.evaluate(() => window.__pwned), undefined, 'nothing ran');
    await shot(page, 'event-as-text');
    watch.assertNone('the events pages');

    // ---- the other pages load without an error ----------------------------------------------
    await go(page, '#/quarantine');
    await page.waitForSelector('[data-testid=quarantine-entry]');
    assert.match(await text(page, '[data-testid=quarantine-entry] [data-field=raw]'),
      /"action":"product.updated"/);
    watch.assertNone('the quarantine page');
    await go(page, '#/reconciliation');
    await page.waitForSelector('[data-testid=no-reconciliation]');
    watch.assertNone('the reconciliation page');
    await go(page, '#/platform');
    await page.waitForSelector('[data-testid=platform-page]');
    watch.assertNone('the Event Platform page');
    await go(page, '#/overview');
    await page.waitForSelector('[data-testid=overview]');
    watch.assertNone('the overview, again');

    // A reload keeps the session (sessionStorage); logging out forgets the token.
    await page.reload({ waitUntil: 'load' });
    await page.waitForSelector('[data-testid=overview]');
    await page.click('header button.link');
    await page.waitForSelector('[data-testid=login-form]');
    assert.equal(await page.evaluate(() => sessionStorage.getItem('pimgate.console.token')), null);
    watch.assertNone('logging out');
    await browser.close();
    browser = null;
    assert.equal(await pimgate.stop(), 0, 'pimgate exits cleanly on SIGTERM');
    passed = true;
    log('passed');
  } finally {
    if (browser) await browser.close().catch(() => {});
    await pimgate.stop();
    if (!passed) {
      const tail = fs.existsSync(pimgate.logFile)
        ? fs.readFileSync(pimgate.logFile, 'utf8').split('\n').slice(-60).join('\n') : '';
      console.log(`---- pimgate log (last lines) ----\n${tail}`);
      if (fs.existsSync(pimgate.logFile)) {
        fs.copyFileSync(pimgate.logFile, path.join(options.artifacts, 'pimgate.log'));
      }
    }
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (error) => {
    console.error(`FAILED: ${error.stack || error}`);
    process.exit(1);
  },
);
