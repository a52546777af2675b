'use strict';
// Node SDK tests: a real plugin process (fixture-plugin.js) on a unix socket, driven the way
// pimgate drives it. Needs `npm ci` in sdk/node.

const assert = require('node:assert/strict');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { test } = require('node:test');

const PACKAGE_DIR = path.join(__dirname, '..');
try {
  require.resolve('@grpc/grpc-js', { paths: [PACKAGE_DIR] });
  require.resolve('@grpc/proto-loader', { paths: [PACKAGE_DIR] });
} catch {
  test('sdk/node dependencies are installed', () => {
    assert.fail(`node_modules missing: run \`npm ci\` in ${PACKAGE_DIR}`);
  });
  return;
}

const grpc = require('@grpc/grpc-js');
const { PluginProcess, makeEvent } = require('../testing.js');

const FIXTURE = path.join(__dirname, 'fixture-plugin.js');
// Hang guards only (generous: these tests must pass on a slow, busy machine), never a measure of
// speed: every wait below ends when its event comes.
const HANG_GUARD_MS = 60000;
// A grace no test waits out: a plugin that exits within HANG_GUARD_MS of SIGTERM did so because
// its handlers were done, not because the grace ran out.
const LONG_GRACE_MS = 600000;

const workdirOf = (plugin) => path.dirname(plugin.socketPath);

async function waitForFile(file) {
  const deadline = Date.now() + HANG_GUARD_MS;
  while (!fs.existsSync(file)) {
    if (Date.now() > deadline) throw new Error(`${file} did not appear within ${HANG_GUARD_MS} ms`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

function withTimeout(promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing within ${HANG_GUARD_MS} ms`)),
      HANG_GUARD_MS);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// The plugin's health Watch stream: next() resolves to the next status sent.
function watchHealth(t, plugin) {
  const call = plugin.health_.Watch({ service: 'pimgate.v1.EventHandler' });
  const seen = [];
  const waiters = [];
  call.on('data', ({ status }) => {
    const waiter = waiters.shift();
    if (waiter) waiter(status);
    else seen.push(status);
  });
  call.on('error', () => {});
  t.after(() => call.cancel());
  return {
    next: () =>
      seen.length > 0
        ? Promise.resolve(seen.shift())
        : withTimeout(new Promise((resolve) => waiters.push(resolve)), 'health Watch'),
  };
}

async function startPlugin(t, { concurrency = 3, graceMs = 8000, workdir } = {}) {
  const dir = workdir || fs.mkdtempSync(path.join(os.tmpdir(), 'pimgate-node-sdk-'));
  const plugin = new PluginProcess([process.execPath, FIXTURE], {
    workdir: dir,
    name: 'sdk-test',
    env: { TEST_CONCURRENCY: String(concurrency), TEST_GRACE_MS: String(graceMs) },
    readyTimeoutMs: HANG_GUARD_MS,
  });
  t.after(async () => {
    await plugin.stop();
    if (process.env.PIMGATE_TEST_VERBOSE)
      process.stderr.write(`--- plugin log ---\n${plugin.log()}\n`);
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return plugin.start();
}

test('health reports SERVING', async (t) => {
  const plugin = await startPlugin(t);
  assert.equal(await plugin.health('', HANG_GUARD_MS), 'SERVING');
  assert.equal(await plugin.health('pimgate.v1.EventHandler', HANG_GUARD_MS), 'SERVING');
  await assert.rejects(
    plugin.health('no.such.Service', HANG_GUARD_MS),
    (err) => err.code === grpc.status.NOT_FOUND,
  );
});

test('health Watch follows shutdown', async (t) => {
  const plugin = await startPlugin(t);
  const call = plugin.health_.Watch({ service: 'pimgate.v1.EventHandler' });
  const statuses = [];
  call.on('error', () => {});
  const second = new Promise((resolve) => {
    call.on('data', ({ status }) => {
      statuses.push(status);
      if (statuses.length === 1) plugin.child.kill('SIGTERM');
      if (statuses.length === 2) resolve();
    });
  });
  await second;
  assert.deepEqual(statuses, ['SERVING', 'NOT_SERVING']);
  assert.equal(await plugin.exit, 0);
});

test('outcomes: ok, retry, reject, throw, sync throw, bad return', async (t) => {
  const plugin = await startPlugin(t);
  const session = plugin.deliver();
  session.send(makeEvent(1, 'test.ok'));
  session.send(makeEvent(2, 'test.retry', { data: { detail: 'ERP down' } }));
  session.send(makeEvent(3, 'test.reject', { data: { detail: 'unknown family' } }));
  session.send(makeEvent(4, 'test.throw', { resourceId: 'r4' }));
  session.send(makeEvent(5, 'test.sync_throw'));
  session.send(makeEvent(6, 'test.bad_return'));
  const acks = await session.acks(6, HANG_GUARD_MS);
  assert.equal(acks['1'].outcome, 'OUTCOME_OK');
  assert.deepEqual([acks['2'].outcome, acks['2'].detail], ['OUTCOME_RETRY', 'ERP down']);
  assert.deepEqual([acks['3'].outcome, acks['3'].detail], ['OUTCOME_REJECT', 'unknown family']);
  assert.deepEqual([acks['4'].outcome, acks['4'].detail], ['OUTCOME_RETRY', 'Error: boom r4']);
  assert.deepEqual(
    [acks['5'].outcome, acks['5'].detail],
    ['OUTCOME_RETRY', 'TypeError: sync boom'],
  );
  assert.equal(acks['6'].outcome, 'OUTCOME_RETRY');
  assert.match(acks['6'].detail, /handler returned number/);
});

test('handler sees a plain event, the attempt and the plugin name', async (t) => {
  const plugin = await startPlugin(t);
  const session = plugin.deliver();
  const data = {
    identifier: 'sku-1',
    values: { name: [{ data: 'Shirt', locale: null }] },
    count: 3,
    ok: true,
  };
  session.send(
    makeEvent('18446744073709551615', 'test.echo', {
      resourceId: 'uuid-42',
      data,
      versionAt: '2024-10-14T13:01:21.5Z',
      occurred_at: { seconds: '1728910881', nanos: 123456789 },
      origin: 'ORIGIN_EVENT_PLATFORM',
      stale: true,
      pim_source: 'akeneo-event-platform',
      subject: '019256aa-7f77-7f58-bc8c-770f7e369c5b',
    }),
    3,
  );
  const ack = await session.nextAck(HANG_GUARD_MS);
  assert.equal(ack.sequence, '18446744073709551615');
  assert.equal(ack.outcome, 'OUTCOME_OK');
  const echo = JSON.parse(ack.detail);
  assert.equal(echo.attempt, 3);
  assert.equal(echo.name, 'sdk-test');
  assert.equal(echo.event.sequence, '18446744073709551615');
  assert.equal(echo.event.type, 'test.echo');
  assert.equal(echo.event.kind, 'test');
  assert.equal(echo.event.resource_id, 'uuid-42');
  assert.equal(echo.event.version_at, '2024-10-14T13:01:21.500Z');
  assert.equal(echo.event.occurred_at, '2024-10-14T13:01:21.123456789Z');
  assert.match(echo.event.received_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/);
  assert.equal(echo.event.origin, 'ORIGIN_EVENT_PLATFORM');
  assert.equal(echo.event.stale, true);
  assert.equal(echo.event.pim_source, 'akeneo-event-platform');
  assert.equal(echo.event.subject, '019256aa-7f77-7f58-bc8c-770f7e369c5b');
  assert.deepEqual(echo.event.data, data);
});

test('acks come in completion order', async (t) => {
  // Event 1 cannot finish before the test opens its gate, which it does once event 2's ack has
  // come: the order holds by design, not by a sleep outlasting event 2.
  const plugin = await startPlugin(t, { concurrency: 3 });
  const gate = path.join(workdirOf(plugin), 'gate');
  const session = plugin.deliver();
  session.send(makeEvent(1, 'test.ok', { data: { gate } }));
  session.send(makeEvent(2, 'test.ok'));
  assert.equal((await session.nextAck(HANG_GUARD_MS)).sequence, '2');
  fs.writeFileSync(gate, '');
  assert.equal((await session.nextAck(HANG_GUARD_MS)).sequence, '1');
});

test('concurrency limit is honoured', async (t) => {
  const plugin = await startPlugin(t, { concurrency: 2 });
  const session = plugin.deliver();
  const started = Date.now();
  // Each handler first waits until 2 have run at once (so they do, however slowly the plugin is
  // scheduled), then sleeps 200 ms.
  for (let seq = 1; seq <= 6; seq += 1) {
    session.send(makeEvent(seq, 'test.echo', {
      resourceId: `r${seq}`,
      data: { await_peak: 2, sleep_ms: 200 },
    }));
  }
  const acks = await session.acks(6, HANG_GUARD_MS);
  const elapsed = Date.now() - started;
  assert.deepEqual(Object.values(acks).map((ack) => ack.outcome), Array(6).fill('OUTCOME_OK'));
  const peaks = Object.values(acks).map((ack) => JSON.parse(ack.detail).peak);
  assert.equal(Math.max(...peaks), 2); // ran in parallel, never more than 2 at once
  // A lower bound, which holds by design: 6 x 200 ms on at most 2 slots.
  assert.ok(elapsed >= 550, `6 x 200 ms on 2 slots took only ${elapsed} ms`);
});

test('the stream ends when the client closes it', async (t) => {
  const plugin = await startPlugin(t);
  const session = plugin.deliver();
  session.send(makeEvent(1, 'test.ok', { data: { sleep_ms: 300 } }));
  session.send(makeEvent(2, 'test.ok'));
  session.close();
  assert.deepEqual(Object.keys(await session.acks(2, HANG_GUARD_MS)).sort(), ['1', '2']);
  assert.equal(await session.waitEnd(HANG_GUARD_MS), grpc.status.OK);
  // The plugin keeps serving new streams.
  const again = plugin.deliver();
  again.send(makeEvent(3, 'test.ok'));
  assert.equal((await again.nextAck(HANG_GUARD_MS)).outcome, 'OUTCOME_OK');
});

test('deliveries decode and acks encode as proto-loader does', () => {
  const sdk = require('../index.js');
  const service = sdk.loadProtos().pimgate.v1.EventHandler.service;
  const data = {
    identifier: 'sku-1',
    values: { name: [{ locale: 'fr_FR', scope: null, data: 'Chemise légère 😀' }] },
    list: [1, -2.5e300, 'x', null, true, false, { nested: [] }, []],
    long: 'y'.repeat(100),
    '': 0,
  };
  const events = [
    makeEvent(1, 'product.updated', { data }),
    makeEvent('18446744073709551615', 'product.removed', {
      origin: 'ORIGIN_EVENT_PLATFORM',
      stale: true,
      subject: 's',
      occurred_at: { seconds: '1728910881', nanos: 123456789 },
    }),
    {
      sequence: '9007199254740993',
      occurred_at: { seconds: '-62135596800', nanos: 0 },
      version_at: { seconds: '253402300799', nanos: 999999999 },
      received_at: { seconds: '0', nanos: 0 },
      data: { fields: {} },
    },
    {},
  ];
  const batch = { deliveries: events.map((event, i) => ({ event, attempt: i + 1 })) };
  const bytes = service.DeliverBatch.requestSerialize(batch);
  const generic = service.DeliverBatch.requestDeserialize(bytes).deliveries.map((d) => ({
    event: sdk.toPlainEvent(d.event),
    attempt: d.attempt,
  }));
  assert.deepEqual(sdk.decodeDeliveryBatch(bytes), { deliveries: generic });
  // Fields this SDK does not know (a newer pimgate) are skipped: field 99 (varint) and 100
  // (bytes) appended to a Delivery and to its Event.
  const unknown = Buffer.from([0x98, 0x06, 0x2a, 0xa2, 0x06, 0x02, 0x01, 0x02]);
  const single = service.Deliver.requestSerialize({ event: events[0], attempt: 7 });
  const withUnknown = Buffer.concat([single, unknown]);
  assert.deepEqual(sdk.decodeDelivery(withUnknown), { ...generic[0], attempt: 7 });
  const varint = (n) => (n < 128 ? [n] : [(n % 128) | 0x80, ...varint(Math.floor(n / 128))]);
  const event = service.Deliver.requestSerialize({ event: events[1] }); // 0x0a, length, event
  const eventBytes = Buffer.concat([event.subarray(varint(event.length - 2).length + 1), unknown]);
  const wrapped = Buffer.concat([Buffer.from([0x0a, ...varint(eventBytes.length)]), eventBytes]);
  assert.deepEqual(sdk.decodeDelivery(wrapped), { event: generic[1].event, attempt: 0 });
  assert.throws(() => sdk.decodeDelivery(single.subarray(0, single.length - 10)), /truncated/);

  const acks = [
    { sequence: '1', outcome: 'OUTCOME_OK', detail: '' },
    { sequence: '18446744073709551615', outcome: 'OUTCOME_RETRY', detail: 'ERP said 503 😀' },
    { sequence: '0', outcome: 'OUTCOME_REJECT', detail: 'x'.repeat(300) },
  ];
  assert.deepEqual(service.DeliverBatch.responseDeserialize(sdk.encodeAckBatch({ acks })), {
    acks,
  });
  assert.deepEqual(service.DeliverBatch.responseDeserialize(sdk.encodeAckBatch({ acks: [] })), {
    acks: [],
  });
  for (const ack of acks) {
    assert.deepEqual(service.Deliver.responseDeserialize(sdk.encodeAck(ack)), ack);
  }
});

// A raw DeliverBatch call: DeliveryBatch bytes out, AckBatch messages (proto-loader form) back.
function deliverBatchCall(t, plugin) {
  const service = plugin.protos.pimgate.v1.EventHandler.service;
  const client = new grpc.Client(plugin.address, grpc.credentials.createInsecure());
  t.after(() => client.close());
  const call = client.makeBidiStreamRequest(
    service.DeliverBatch.path,
    (bytes) => bytes,
    service.DeliverBatch.responseDeserialize,
  );
  call.on('error', () => {});
  const acks = [];
  const waiters = [];
  call.on('data', (batch) => {
    acks.push(...batch.acks);
    for (const waiter of waiters.splice(0)) waiter();
  });
  return {
    write: (bytes) => call.write(bytes),
    // Resolves to every ack received once there are at least `count`.
    acks: (count) =>
      withTimeout(
        (async () => {
          while (acks.length < count) await new Promise((resolve) => waiters.push(resolve));
          return acks;
        })(),
        `${count} acks`,
      ),
    encode: (batch) => service.DeliverBatch.requestSerialize(batch),
    end: () => call.end(),
  };
}

test('DeliverBatch: every delivery of a large batch is answered once', async (t) => {
  const plugin = await startPlugin(t, { concurrency: 8 });
  const call = deliverBatchCall(t, plugin);
  call.write(call.encode({ deliveries: [] })); // the handshake, answered by an empty AckBatch
  const count = 300; // several times what the SDK handles before letting the event loop turn
  const deliveries = [];
  for (let seq = 1; seq <= count; seq += 1) {
    deliveries.push({ event: makeEvent(seq, 'test.ok', { resourceId: `r${seq}` }), attempt: 1 });
  }
  call.write(call.encode({ deliveries }));
  const acks = await call.acks(count);
  assert.equal(acks.length, count);
  assert.deepEqual(
    acks.map((ack) => Number(ack.sequence)).sort((a, b) => a - b),
    Array.from({ length: count }, (_, i) => i + 1),
  );
  assert.ok(acks.every((ack) => ack.outcome === 'OUTCOME_OK'));
});

test('DeliverBatch: an event that does not decode is answered RETRY, the others OK', async (t) => {
  const plugin = await startPlugin(t);
  const call = deliverBatchCall(t, plugin);
  const good = (seq) =>
    call.encode({ deliveries: [{ event: makeEvent(seq, 'test.ok'), attempt: 1 }] });
  // Event { sequence: 5, data: <a Struct entry whose length runs past the data> }.
  const broken = Buffer.from([0x08, 0x05, 0x7a, 0x02, 0x0a, 0x05]);
  const delivery = Buffer.concat([
    Buffer.from([0x0a, broken.length]),
    broken,
    Buffer.from([0x10, 0x01]), // attempt 1
  ]);
  const brokenBatch = Buffer.concat([Buffer.from([0x0a, delivery.length]), delivery]);
  call.write(call.encode({ deliveries: [] }));
  call.write(Buffer.concat([good(4), brokenBatch, good(6)])); // one DeliveryBatch of three
  const acks = await call.acks(3);
  const bySequence = Object.fromEntries(acks.map((ack) => [ack.sequence, ack]));
  assert.equal(bySequence['4'].outcome, 'OUTCOME_OK');
  assert.equal(bySequence['6'].outcome, 'OUTCOME_OK');
  assert.equal(bySequence['5'].outcome, 'OUTCOME_RETRY');
  assert.match(bySequence['5'].detail, /truncated/);
});

test('a cancelled stream does not disturb the next one', async (t) => {
  const plugin = await startPlugin(t);
  const started = path.join(workdirOf(plugin), 'started');
  const first = plugin.deliver();
  first.send(makeEvent(1, 'test.ok', { data: { started, sleep_ms: 300 } }));
  await waitForFile(started); // cancelled while its handler runs, not before it was taken
  first.cancel();
  const second = plugin.deliver();
  second.send(makeEvent(2, 'test.ok'));
  assert.equal((await second.nextAck(HANG_GUARD_MS)).sequence, '2');
});

test('SIGTERM finishes running handlers and exits 0', async (t) => {
  const plugin = await startPlugin(t, { graceMs: LONG_GRACE_MS });
  const started = path.join(workdirOf(plugin), 'started');
  const gate = path.join(workdirOf(plugin), 'gate');
  const health = watchHealth(t, plugin);
  assert.equal(await health.next(), 'SERVING');
  const session = plugin.deliver();
  session.send(makeEvent(1, 'test.ok', { data: { started, gate } }));
  session.send(makeEvent(2, 'test.ok'));
  assert.equal((await session.nextAck(HANG_GUARD_MS)).sequence, '2');
  await waitForFile(started); // handler 1 runs, and cannot finish before the gate opens
  plugin.child.kill('SIGTERM');
  // The plugin took the signal (it no longer serves) while handler 1 still ran; only then may
  // handler 1 finish. Its ack still comes, and the exit follows it, long before the grace: the
  // plugin left because its handlers were done.
  assert.equal(await health.next(), 'NOT_SERVING');
  assert.equal(plugin.child.exitCode, null);
  fs.writeFileSync(gate, '');
  const ack = await session.nextAck(HANG_GUARD_MS);
  assert.deepEqual([ack.sequence, ack.outcome], ['1', 'OUTCOME_OK']);
  assert.equal(await withTimeout(plugin.exit, 'exit after SIGTERM'), 0);
  assert.equal(await session.waitEnd(HANG_GUARD_MS), grpc.status.OK);
});

test('SIGTERM gives up on a stuck handler after the grace', async (t) => {
  const plugin = await startPlugin(t, { graceMs: 500 });
  const started = path.join(workdirOf(plugin), 'started');
  const session = plugin.deliver();
  // Stuck for good: its gate never opens (the plugin's own guard, 120 s, outlasts the test's, so
  // only giving up after the grace lets the plugin exit in time).
  const never = path.join(workdirOf(plugin), 'never');
  session.send(makeEvent(1, 'test.ok', { data: { started, gate: never } }));
  session.send(makeEvent(2, 'test.ok'));
  assert.equal((await session.nextAck(HANG_GUARD_MS)).sequence, '2');
  await waitForFile(started);
  const began = Date.now();
  assert.equal(await plugin.terminate(HANG_GUARD_MS), 0);
  const took = Date.now() - began;
  assert.ok(took >= 500, `exited after ${took} ms, before the 500 ms grace`);
  await session.waitEnd(HANG_GUARD_MS); // no ack: pimgate will redeliver
});

test('SIGTERM when idle exits promptly', async (t) => {
  // Promptly: without waiting for a grace it could not outlast the hang guard.
  const plugin = await startPlugin(t, { graceMs: LONG_GRACE_MS });
  const session = plugin.deliver();
  session.send(makeEvent(1, 'test.ok'));
  assert.equal((await session.nextAck(HANG_GUARD_MS)).outcome, 'OUTCOME_OK'); // idle from here
  assert.equal(await plugin.terminate(HANG_GUARD_MS), 0);
});

test('a stale socket file is replaced', async (t) => {
  // What a killed plugin leaves behind: a socket file nobody listens on. A closing server
  // removes its own file, so keep a hard link to it.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pimgate-node-sdk-'));
  const socketPath = path.join(dir, 'sdk-test.sock');
  const server = net.createServer();
  await new Promise((resolve) => server.listen(path.join(dir, 'original.sock'), resolve));
  fs.linkSync(path.join(dir, 'original.sock'), socketPath);
  await new Promise((resolve) => server.close(resolve));
  assert.ok(fs.lstatSync(socketPath).isSocket());
  const plugin = await startPlugin(t, { workdir: dir });
  assert.equal(await plugin.health('', HANG_GUARD_MS), 'SERVING');
});

test('a copy of the SDK finds the .proto files next to it, or says where it looked', (t) => {
  const { spawnSync } = require('node:child_process');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pimgate-node-copy-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const copy = path.join(dir, '@pimgate', 'sdk');
  fs.mkdirSync(copy, { recursive: true });
  fs.copyFileSync(path.join(PACKAGE_DIR, 'index.js'), path.join(copy, 'index.js'));
  fs.symlinkSync(path.join(PACKAGE_DIR, 'node_modules'), path.join(copy, 'node_modules'));
  const repoProto = path.join(PACKAGE_DIR, '..', '..', 'proto');
  for (const rel of ['pimgate/v1/event.proto', 'pimgate/v1/plugin.proto',
    'grpc/health/v1/health.proto']) {
    fs.mkdirSync(path.dirname(path.join(copy, 'proto', rel)), { recursive: true });
    fs.copyFileSync(path.join(repoProto, rel), path.join(copy, 'proto', rel));
  }
  const env = { ...process.env };
  delete env.PIMGATE_PROTO_PATH;
  const load = () =>
    spawnSync(process.execPath, ['-e', `require(${JSON.stringify(copy)}).loadProtos()`], {
      env,
      encoding: 'utf8',
    });
  const found = load();
  assert.equal(found.status, 0, found.stderr);
  fs.rmSync(path.join(copy, 'proto'), { recursive: true });
  const missing = load();
  assert.notEqual(missing.status, 0);
  assert.match(missing.stderr, /cannot find pimgate\/v1\/plugin\.proto and grpc\/health\/v1\/health\.proto/);
  assert.match(missing.stderr, /set PIMGATE_PROTO_PATH/);
});
