// Tests of my_handler.js with the SDK's helpers (@pimgate/sdk/testing): the handler runs as its
// own process, the way pimgate runs it, and each test delivers events to it as pimgate does.
//   node --test my_handler.test.js
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { test } = require('node:test');
const { PluginProcess, makeEvent } = require('@pimgate/sdk/testing');

const HANDLER = path.join(__dirname, 'my_handler.js');
const UUID = '0b5e9b1e-2a1c-4a4e-9d55-2f2b3c4d5e6f';
const PRODUCT = { uuid: UUID, family: 'shoes', updated: '2026-11-20T10:14:59+00:00' };

// Delivers one event to a fresh handler process; resolves to the line it printed.
async function deliver(t, event) {
  const workdir = fs.mkdtempSync(path.join(os.tmpdir(), 'my-handler-'));
  const plugin = new PluginProcess([process.execPath, HANDLER], { workdir });
  t.after(async () => {
    await plugin.stop();
    fs.rmSync(workdir, { recursive: true, force: true });
  });
  await plugin.start();
  const session = plugin.deliver();
  session.send(event);
  const ack = await session.nextAck();
  assert.equal(ack.outcome, 'OUTCOME_OK', ack.detail);
  session.close();
  assert.equal(await plugin.terminate(), 0); // a clean stop flushes everything
  // The log also has the SDK's own lines (on stderr); the handler's starts with the type.
  const lines = plugin.log().split('\n').filter((line) => line.startsWith(`${event.type} `));
  assert.equal(lines.length, 1, plugin.log());
  return lines[0];
}

test('a legacy event carries the product', async (t) => {
  const line = await deliver(
    t,
    makeEvent(1, 'product.updated', { resourceId: UUID, data: PRODUCT, origin: 'ORIGIN_EVENTS_API' }),
  );
  assert.equal(
    line,
    `product.updated ${UUID} attempt 1: family shoes, updated 2026-11-20T10:14:59+00:00`,
  );
});

test('an Event Platform event carries ids only', async (t) => {
  const data = { product: { uuid: UUID } };
  const line = await deliver(
    t,
    makeEvent(2, 'product.updated', { resourceId: UUID, data, origin: 'ORIGIN_EVENT_PLATFORM' }),
  );
  assert.match(line, /ids only/);
});

test('a hydrated Event Platform event carries the product', async (t) => {
  const data = { product: { uuid: UUID }, hydration: 'ok', resource: PRODUCT };
  const line = await deliver(
    t,
    makeEvent(3, 'product.updated', { resourceId: UUID, data, origin: 'ORIGIN_EVENT_PLATFORM' }),
  );
  assert.match(line, /family shoes/);
});

test('a deletion', async (t) => {
  const line = await deliver(
    t,
    makeEvent(4, 'product.deleted', { resourceId: UUID, data: { uuid: UUID }, origin: 'ORIGIN_EVENTS_API' }),
  );
  assert.equal(line, `product.deleted ${UUID} attempt 1: deleted`);
});
