'use strict';
// Plugin driven by sdk.test.js: event.type picks the behaviour. In event.data, optionally:
//   started     a file created as the handler starts (the test waits for it instead of sleeping)
//   await_peak  wait until that many handlers have run at once
//   gate        wait until this file exists (the test decides when the handler may finish)
//   sleep_ms    then sleep this long
// Waits give up after HANG_GUARD_MS and answer RETRY, so a test fails instead of hanging.

const fs = require('node:fs');
const sdk = require('../index.js');

if (!process.env.PIMGATE_PLUGIN_ADDRESS) {
  // Not started by sdk.test.js (`node --test test/` would run every file here): do nothing.
  process.exit(0);
}

const HANG_GUARD_MS = 120000;
let running = 0;
let peak = 0;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Resolves to true once `done()` holds, false after HANG_GUARD_MS.
async function waitUntil(done) {
  const deadline = Date.now() + HANG_GUARD_MS;
  while (!done()) {
    if (Date.now() > deadline) return false;
    await sleep(10);
  }
  return true;
}

async function handleAsync(event, attempt) {
  const data = event.data;
  if (data.started) fs.writeFileSync(data.started, '');
  if (data.await_peak && !(await waitUntil(() => peak >= data.await_peak))) {
    return sdk.retry(`never ${data.await_peak} handlers at once`);
  }
  if (data.gate && !(await waitUntil(() => fs.existsSync(data.gate)))) {
    return sdk.retry('the gate never opened');
  }
  if (data.sleep_ms) await sleep(data.sleep_ms);
  switch (event.type) {
    case 'test.ok':
      return undefined;
    case 'test.retry':
      return sdk.retry(data.detail);
    case 'test.reject':
      return sdk.reject(data.detail);
    case 'test.throw':
      throw new Error(`boom ${event.resource_id}`);
    case 'test.bad_return':
      return 42;
    case 'test.echo':
      return {
        outcome: 'OUTCOME_OK',
        detail: JSON.stringify({ event, attempt, name: sdk.pluginName(), peak }),
      };
    default:
      return sdk.reject(`unknown test type ${event.type}`);
  }
}

// Deliberately not async: a synchronous throw must become a RETRY too.
function handle(event, attempt) {
  if (event.type === 'test.sync_throw') throw new TypeError('sync boom');
  running += 1;
  peak = Math.max(peak, running);
  return handleAsync(event, attempt).finally(() => {
    running -= 1;
  });
}

sdk.run(handle, {
  concurrency: Number(process.env.TEST_CONCURRENCY || 3),
  graceMs: Number(process.env.TEST_GRACE_MS || 8000),
});
