'use strict';
// http-relay tests: the real relay.js process, fed over gRPC as pimgate feeds it, posting to a
// local HTTP server on port 0. Needs `npm ci` in sdk/node and in plugins/http-relay.

const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');
const { test, before, after } = require('node:test');

const RELAY_DIR = path.join(__dirname, '..');
const SDK_DIR = path.resolve(RELAY_DIR, '../../sdk/node');
try {
  const sdkEntry = require.resolve('@pimgate/sdk', { paths: [RELAY_DIR] });
  require.resolve('@grpc/grpc-js', { paths: [path.dirname(fs.realpathSync(sdkEntry))] });
} catch {
  test('http-relay dependencies are installed', () => {
    assert.fail(
      `node_modules missing: run \`npm ci\` in ${SDK_DIR} and in ${RELAY_DIR}`,
    );
  });
  return;
}

const { PluginProcess, makeEvent } = require('@pimgate/sdk/testing');

const RELAY = path.join(RELAY_DIR, 'relay.js');
const SECRET = 'test-secret';
// For the slow-endpoint test only; the others keep the default (10 s): a loaded CI machine
// must not turn a 200 into a timeout.
const TIMEOUT_MS = 1000;
// Hang guard of the test's own waits (generous: a slow, busy machine), never a measure of speed.
const HANG_GUARD_MS = 60000;

// What the endpoint answers, by X-Pimgate-Event-Id.
const plan = {
  'event-1': { status: 200, body: '{"ok":true}' },
  'event-2': { status: 500, body: 'database down' },
  'event-3': { status: 400, body: '{"error":"unknown family"}' },
  'event-4': { status: 429, body: '' },
  'event-5': { status: 503, body: 'maintenance' },
  'event-6': { status: 302, headers: { Location: 'https://elsewhere.example/hook' } },
  'event-7': { status: 404, body: 'x'.repeat(5000) },
  'event-8': { status: 204 },
  'slow-1': { status: 200, delayMs: 30000 },
};
const received = [];
let server;
let url;

before(async () => {
  server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', () => {
      const raw = Buffer.concat(chunks);
      received.push({ method: req.method, url: req.url, headers: req.headers, raw });
      const answer = plan[req.headers['x-pimgate-event-id']] || { status: 200 };
      const timer = setTimeout(() => {
        if (res.destroyed) return;
        res.writeHead(answer.status, answer.headers || {});
        res.end(answer.body || '');
      }, answer.delayMs || 0);
      timer.unref();
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${server.address().port}/hooks/pim`;
});

after(() => {
  server.closeAllConnections();
  server.close();
});

async function startRelay(t, env) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pimgate-http-relay-'));
  const relay = new PluginProcess([process.execPath, RELAY], {
    workdir: dir,
    name: 'http-relay',
    env,
    readyTimeoutMs: HANG_GUARD_MS,
  });
  t.after(async () => {
    await relay.stop();
    if (process.env.PIMGATE_TEST_VERBOSE)
      process.stderr.write(`--- relay log ---\n${relay.log()}\n`);
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return relay.start();
}

function requestFor(eventId) {
  return received.find((r) => r.headers['x-pimgate-event-id'] === eventId);
}

test('posts signed JSON and maps answers onto outcomes', async (t) => {
  const relay = await startRelay(t, { RELAY_URL: url, RELAY_SECRET: SECRET });
  const session = relay.deliver();
  const sentFrom = Math.floor(Date.now() / 1000);
  const data = {
    uuid: 'p-1',
    identifier: 'sku-1',
    values: { name: [{ locale: 'en_US', scope: null, data: 'Shirt' }] },
  };
  session.send(
    makeEvent(1, 'product.updated', {
      resourceId: 'p-1',
      data,
      versionAt: '2024-10-14T13:01:21Z',
      origin: 'ORIGIN_EVENTS_API',
    }),
    2,
  );
  for (let seq = 2; seq <= 8; seq += 1)
    session.send(makeEvent(seq, 'product.updated', { resourceId: `p-${seq}` }));
  const acks = await session.acks(8, HANG_GUARD_MS);
  const sentBy = Math.ceil(Date.now() / 1000);

  assert.equal(acks['1'].outcome, 'OUTCOME_OK');
  assert.equal(acks['2'].outcome, 'OUTCOME_RETRY');
  assert.equal(acks['2'].detail, 'HTTP 500: database down');
  assert.equal(acks['3'].outcome, 'OUTCOME_REJECT');
  assert.equal(acks['3'].detail, 'HTTP 400: {"error":"unknown family"}');
  assert.equal(acks['4'].outcome, 'OUTCOME_RETRY');
  assert.equal(acks['4'].detail, 'HTTP 429');
  assert.equal(acks['5'].outcome, 'OUTCOME_RETRY');
  assert.equal(acks['5'].detail, 'HTTP 503: maintenance');
  assert.equal(acks['6'].outcome, 'OUTCOME_REJECT');
  assert.match(acks['6'].detail, /^HTTP 302 \(Location: https:\/\/elsewhere.example\/hook\)/);
  assert.equal(acks['7'].outcome, 'OUTCOME_REJECT');
  assert.ok(acks['7'].detail.length < 600, 'the body excerpt is bounded');
  assert.ok(acks['7'].detail.startsWith('HTTP 404: xxx'));
  assert.equal(acks['8'].outcome, 'OUTCOME_OK');

  const request = requestFor('event-1');
  assert.equal(request.method, 'POST');
  assert.equal(request.url, '/hooks/pim');
  assert.equal(request.headers['content-type'], 'application/json');
  const hmac = crypto.createHmac('sha256', SECRET).update(request.raw).digest('hex');
  const expected = `sha256=${hmac}`;
  assert.equal(request.headers['x-pimgate-signature'], expected);
  assert.equal(request.headers['x-pimgate-sequence'], '1');
  assert.equal(request.headers['x-pimgate-event-type'], 'product.updated');
  assert.equal(request.headers['x-pimgate-attempt'], '2');
  const sent = Number(request.headers['x-pimgate-timestamp']);
  // Stamped when sent: within this test's own window (same clock), whatever the machine's speed.
  assert.ok(sentFrom <= sent && sent <= sentBy, `timestamp ${sent} not in [${sentFrom}, ${sentBy}]`);
  const body = JSON.parse(request.raw.toString('utf8'));
  assert.equal(body.sequence, '1');
  assert.equal(body.id, 'event-1');
  assert.equal(body.type, 'product.updated');
  assert.equal(body.resource_id, 'p-1');
  assert.equal(body.version_at, '2024-10-14T13:01:21Z');
  assert.equal(body.origin, 'ORIGIN_EVENTS_API');
  assert.deepEqual(body.data, data);
});

test('no answer within RELAY_TIMEOUT_MS is a RETRY', async (t) => {
  const relay = await startRelay(t, {
    RELAY_URL: url,
    RELAY_SECRET: SECRET,
    RELAY_TIMEOUT_MS: String(TIMEOUT_MS),
  });
  const session = relay.deliver();
  session.send(makeEvent(1, 'product.updated', { id: 'slow-1' }));
  const ack = await session.nextAck(HANG_GUARD_MS);
  assert.equal(ack.outcome, 'OUTCOME_RETRY');
  assert.equal(ack.detail, `no answer within ${TIMEOUT_MS} ms`);
});

test('a network error is a RETRY', async (t) => {
  // A port that nobody listens on: bind one, then free it.
  const probe = http.createServer();
  await new Promise((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const deadUrl = `http://127.0.0.1:${probe.address().port}/`;
  await new Promise((resolve) => probe.close(resolve));
  const relay = await startRelay(t, { RELAY_URL: deadUrl, RELAY_SECRET: SECRET });
  const session = relay.deliver();
  session.send(makeEvent(1, 'product.updated'));
  const ack = await session.nextAck(HANG_GUARD_MS);
  assert.equal(ack.outcome, 'OUTCOME_RETRY');
  assert.match(ack.detail, /network error: .*ECONNREFUSED/);
});

test('SIGTERM exits 0', async (t) => {
  const relay = await startRelay(t, { RELAY_URL: url, RELAY_SECRET: SECRET });
  assert.equal(await relay.terminate(HANG_GUARD_MS), 0);
});

test('missing configuration exits 2 with a message', async (t) => {
  await assert.rejects(
    startRelay(t, { RELAY_URL: url, RELAY_SECRET: '' }),
    /exited with 2[\s\S]*RELAY_SECRET is required/,
  );
  await assert.rejects(
    startRelay(t, { RELAY_URL: 'ftp://x', RELAY_SECRET: SECRET }),
    /RELAY_URL must be http/,
  );
});
