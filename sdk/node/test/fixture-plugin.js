'use strict';
// Plugin driven by sdk.test.js: event.type picks the behaviour, data.sleep_ms delays it.

const sdk = require('../index.js');

if (!process.env.PIMGATE_PLUGIN_ADDRESS) {
  // Not started by sdk.test.js (`node --test test/` would run every file here): do nothing.
  process.exit(0);
}

let running = 0;
let peak = 0;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function handleAsync(event, attempt) {
  const data = event.data;
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
