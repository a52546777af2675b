'use strict';
// Test helpers for plugin authors: start a plugin process the way pimgate does (unix socket,
// PIMGATE_PLUGIN_* environment) and act as pimgate's gRPC client.
//
//   const { PluginProcess, makeEvent } = require('@pimgate/sdk/testing');
//   const plugin = await new PluginProcess(['node', 'plugin.js'], { workdir }).start();
//   const session = plugin.deliver();
//   session.send(makeEvent(1, 'product.updated', { resourceId: 'uuid-1', data: { a: 1 } }));
//   const ack = await session.nextAck(); // { sequence: '1', outcome: 'OUTCOME_OK', detail: '' }
//   assert.equal(await plugin.terminate(), 0);

const fs = require('node:fs');
const path = require('node:path');
const { spawn } = require('node:child_process');
const grpc = require('@grpc/grpc-js');
const sdk = require('./index.js');

const ENDED = Symbol('ended');

/**
 * A Delivery's event in proto-loader form. `kind` comes from `type`; `data` is plain JSON;
 * `versionAt` an RFC 3339 text or Date (default now); other Event fields by their .proto name.
 */
function makeEvent(sequence, type, options = {}) {
  const { resourceId = 'resource-1', data = {}, versionAt = new Date(), ...fields } = options;
  return {
    sequence: String(sequence),
    id: `event-${sequence}`,
    source: 'test',
    type,
    kind: type.split('.')[0],
    resource_id: resourceId,
    data: sdk.jsonToStruct(data),
    version_at: sdk.isoToTimestamp(versionAt),
    received_at: sdk.isoToTimestamp(new Date()),
    ...fields,
  };
}

/** One Deliver stream; acks are queued as they arrive. */
class DeliverSession {
  constructor(client) {
    this.items = [];
    this.waiters = [];
    this.endCode = null; // grpc status code once the stream has ended
    this.call = client.Deliver();
    this.call.on('data', (ack) => this.push(ack));
    this.call.on('status', (status) => {
      this.endCode = status.code;
      this.push(ENDED);
    });
    this.call.on('error', () => {}); // reported through 'status'
  }

  send(event, attempt = 1) {
    this.call.write({ event, attempt });
  }

  /** Half-closes: the plugin answers what it took, then ends the stream. */
  close() {
    this.call.end();
  }

  cancel() {
    this.call.cancel();
  }

  push(item) {
    const waiter = this.waiters.shift();
    if (waiter) waiter(item);
    else this.items.push(item);
  }

  next(timeoutMs) {
    if (this.items.length > 0) {
      const item = this.items[0];
      if (item !== ENDED) this.items.shift();
      return Promise.resolve(item);
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(waiter), 1);
        reject(new Error(`nothing from the plugin within ${timeoutMs} ms`));
      }, timeoutMs);
      const waiter = (item) => {
        clearTimeout(timer);
        if (item === ENDED) this.items.unshift(ENDED);
        resolve(item);
      };
      this.waiters.push(waiter);
    });
  }

  async nextAck(timeoutMs = 10000) {
    const item = await this.next(timeoutMs);
    if (item === ENDED) throw new Error(`stream ended (code ${this.endCode}) before an ack came`);
    return item;
  }

  /** The next `count` acks, by sequence. */
  async acks(count, timeoutMs = 10000) {
    const result = {};
    const deadline = Date.now() + timeoutMs;
    while (Object.keys(result).length < count) {
      const ack = await this.nextAck(Math.max(10, deadline - Date.now()));
      result[ack.sequence] = ack;
    }
    return result;
  }

  /** Waits for the end of the stream (no ack may come first); resolves to its status code. */
  async waitEnd(timeoutMs = 10000) {
    const item = await this.next(timeoutMs);
    if (item !== ENDED)
      throw new Error(`expected the end of the stream, got ${JSON.stringify(item)}`);
    return this.endCode;
  }
}

/**
 * A plugin process serving on `<workdir>/<name>.sock`; stdout and stderr go to
 * `<workdir>/<name>.log`. start() resolves once it reports SERVING.
 */
class PluginProcess {
  constructor(argv, { workdir, name = 'test-plugin', env = {}, readyTimeoutMs = 15000 } = {}) {
    this.argv = argv;
    this.name = name;
    this.socketPath = path.join(workdir, `${name}.sock`);
    this.logPath = path.join(workdir, `${name}.log`);
    this.address = `unix:${this.socketPath}`;
    this.env = {
      ...process.env,
      ...env,
      PIMGATE_PLUGIN_ADDRESS: this.address,
      PIMGATE_PLUGIN_NAME: name,
    };
    this.readyTimeoutMs = readyTimeoutMs;
    this.protos = sdk.loadProtos();
    this.child = null;
    this.exit = null;
    this.health_ = null;
    this.events_ = null;
  }

  async start() {
    const logFd = fs.openSync(this.logPath, 'a');
    this.child = spawn(this.argv[0], this.argv.slice(1), {
      env: this.env,
      stdio: ['ignore', logFd, logFd],
    });
    fs.closeSync(logFd);
    this.exit = new Promise((resolve) =>
      this.child.on('exit', (code, signal) => resolve(code ?? signal)),
    );
    const deadline = Date.now() + this.readyTimeoutMs;
    for (;;) {
      if (this.child.exitCode !== null) {
        throw new Error(`plugin exited with ${this.child.exitCode}:\n${this.log()}`);
      }
      // Fresh clients per attempt: a channel whose first connect failed waits out gRPC's
      // reconnect backoff (seconds) before it tries again.
      if (fs.existsSync(this.socketPath)) {
        this.connect();
        try {
          if ((await this.health()) === 'SERVING') return this;
        } catch {
          // not up yet
        }
        this.close();
      }
      if (Date.now() > deadline) {
        throw new Error(`plugin not SERVING after ${this.readyTimeoutMs} ms:\n${this.log()}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  connect() {
    const options = { 'grpc.use_local_subchannel_pool': 1 };
    const credentials = grpc.credentials.createInsecure();
    this.health_ = new this.protos.grpc.health.v1.Health(this.address, credentials, options);
    this.events_ = new this.protos.pimgate.v1.EventHandler(this.address, credentials, options);
  }

  close() {
    if (this.health_) this.health_.close();
    if (this.events_) this.events_.close();
    this.health_ = null;
    this.events_ = null;
  }

  /** Resolves to the status name (SERVING, ...); rejects with the gRPC error. */
  health(service = '', timeoutMs = 2000) {
    return new Promise((resolve, reject) => {
      this.health_.Check({ service }, { deadline: Date.now() + timeoutMs }, (err, response) =>
        err ? reject(err) : resolve(response.status),
      );
    });
  }

  deliver() {
    return new DeliverSession(this.events_);
  }

  /** SIGTERM; resolves to the exit code (or the signal name), rejects if it hangs. */
  async terminate(timeoutMs = 10000) {
    this.child.kill('SIGTERM');
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`plugin still running ${timeoutMs} ms after SIGTERM`)),
        timeoutMs,
      );
    });
    try {
      return await Promise.race([this.exit, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  async stop() {
    this.close();
    if (this.child && this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill('SIGKILL');
      await this.exit;
    }
  }

  log() {
    try {
      return fs.readFileSync(this.logPath, 'utf8');
    } catch {
      return '';
    }
  }
}

module.exports = { PluginProcess, DeliverSession, makeEvent };
