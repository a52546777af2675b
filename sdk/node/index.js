'use strict';
// pimgate Node.js plugin SDK: write a handler, call run(), and pimgate delivers events to it.
//
//   const sdk = require('@pimgate/sdk');
//   sdk.run(async (event, attempt) => {
//     console.error(event.type, event.resource_id, event.data.identifier);
//     return sdk.ok(); // or undefined; sdk.retry('why') / sdk.reject('why')
//   }, { concurrency: 8 });
//
// pimgate starts the plugin with $PIMGATE_PLUGIN_ADDRESS ("unix:/abs/path.sock" or "host:port")
// and $PIMGATE_PLUGIN_NAME, connects as the gRPC client and streams pimgate.v1.Delivery
// messages (in DeliveryBatch messages, or one by one over Deliver); the SDK serves
// pimgate.v1.EventHandler and grpc.health.v1.Health and answers one Ack per delivery. An OK ack is final: pimgate never sends that event to this plugin again, so a
// handler resolves OK only once its effect is durable. Delivery is at-least-once: handlers must
// be idempotent. The .proto files are loaded at run time from $PIMGATE_PROTO_PATH, else from the
// proto/ folder next to this file (installed SDKs), else the repository's (../../proto).

const fs = require('node:fs');
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

// Address served when $PIMGATE_PLUGIN_ADDRESS is unset (running a plugin by hand).
const DEFAULT_ADDRESS = '127.0.0.1:50051';
// Largest Delivery accepted (an event's `data` can hold a whole product).
const MAX_MESSAGE_BYTES = 64 * 1024 * 1024;
// How long SIGTERM waits for running handlers before the plugin exits anyway: under pimgate's
// default plugins[].stop_timeout (10 s, then SIGKILL), so the plugin ends on its own terms.
const DEFAULT_GRACE_MS = 8000;
// After the streams have ended: time for their final status and health checks in flight.
const STOP_GRACE_MS = 500;
// Longest `detail` sent back to pimgate (kept with dead letters); longer texts are cut.
const MAX_DETAIL_CHARS = 4096;

const EVENT_HANDLER_SERVICE = 'pimgate.v1.EventHandler';
const HEALTH_SERVICES = ['', EVENT_HANDLER_SERVICE];
const PROTO_FILES = ['pimgate/v1/plugin.proto', 'grpc/health/v1/health.proto'];

const Outcome = Object.freeze({
  OK: 'OUTCOME_OK',
  RETRY: 'OUTCOME_RETRY',
  REJECT: 'OUTCOME_REJECT',
});

// ---------------------------------------------------------------------------------------------
// Results

/** Handled: pimgate moves on and never sends this event to this plugin again. */
function ok() {
  return { outcome: Outcome.OK, detail: '' };
}

/** Temporary failure: pimgate redelivers later with `attempt` + 1, then dead-letters. */
function retry(detail = '') {
  return { outcome: Outcome.RETRY, detail: String(detail) };
}

/** Permanent failure: pimgate dead-letters the event at once. */
function reject(detail = '') {
  return { outcome: Outcome.REJECT, detail: String(detail) };
}

function clip(detail) {
  return detail.length <= MAX_DETAIL_CHARS ? detail : `${detail.slice(0, MAX_DETAIL_CHARS - 3)}...`;
}

function errorText(err) {
  if (err instanceof Error) return err.message ? `${err.name}: ${err.message}` : err.name;
  return String(err);
}

// The Ack for a handler's value: undefined/null means OK; anything but an ok()/retry()/reject()
// result is a RETRY, because an answer the SDK does not understand must never lose an event.
function toAck(sequence, value) {
  if (value === undefined || value === null) return { sequence, outcome: Outcome.OK, detail: '' };
  if (typeof value === 'object' && Object.values(Outcome).includes(value.outcome)) {
    return { sequence, outcome: value.outcome, detail: clip(String(value.detail ?? '')) };
  }
  return {
    sequence,
    outcome: Outcome.RETRY,
    detail: `handler returned ${typeof value}, expected undefined or sdk.ok()/retry()/reject()`,
  };
}

// ---------------------------------------------------------------------------------------------
// Protos and conversions

// Where the .proto files are looked for, in order, when $PIMGATE_PROTO_PATH is not set: next to
// this file (an installed SDK: the Debian package, `cmake --install`, build/node), then the
// repository's proto/ folder (this file in sdk/node of a checkout).
const PROTO_DIRS = [path.join(__dirname, 'proto'), path.join(__dirname, '..', '..', 'proto')];

/**
 * The directory holding pimgate/v1/*.proto and grpc/health/v1/health.proto: $PIMGATE_PROTO_PATH
 * when set, else the first of PROTO_DIRS that has them. Throws, naming every place it looked,
 * when none has them.
 */
function protoDir() {
  if (process.env.PIMGATE_PROTO_PATH) return process.env.PIMGATE_PROTO_PATH;
  for (const dir of PROTO_DIRS) {
    if (PROTO_FILES.every((file) => fs.existsSync(path.join(dir, file)))) return dir;
  }
  throw new Error(
    `@pimgate/sdk: cannot find ${PROTO_FILES.join(' and ')} in ${PROTO_DIRS.join(' or ')}: ` +
      'use the SDK as installed (the pimgate package, or build/node of a build), or set ' +
      'PIMGATE_PROTO_PATH to the proto/ folder of a pimgate checkout',
  );
}

/**
 * The gRPC package object for pimgate.v1 and grpc.health.v1, loaded with proto-loader
 * (field names as in the .proto, 64-bit integers and enums as strings). Clients use it too:
 * `new loadProtos().pimgate.v1.EventHandler(address, credentials)`.
 */
function loadProtos(dir = protoDir()) {
  const definition = protoLoader.loadSync(PROTO_FILES, {
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
    includeDirs: [dir],
  });
  return grpc.loadPackageDefinition(definition);
}

/** google.protobuf.Timestamp ({seconds, nanos}) to RFC 3339 UTC, as protobuf's JSON writes it. */
function timestampToIso(ts) {
  if (!ts) return null;
  const nanos = Number(ts.nanos || 0);
  const base = new Date(Number(ts.seconds || 0) * 1000).toISOString().slice(0, 19);
  if (!nanos) return `${base}Z`;
  let fraction = String(nanos).padStart(9, '0');
  if (fraction.endsWith('000000')) fraction = fraction.slice(0, 3);
  else if (fraction.endsWith('000')) fraction = fraction.slice(0, 6);
  return `${base}.${fraction}Z`;
}

/** RFC 3339 text or Date to google.protobuf.Timestamp ({seconds, nanos}). */
function isoToTimestamp(value) {
  const text = value instanceof Date ? value.toISOString() : String(value);
  const millis = Date.parse(text);
  if (Number.isNaN(millis)) throw new TypeError(`not an RFC 3339 timestamp: ${text}`);
  const seconds = Math.floor(millis / 1000);
  const match = /\.(\d+)/.exec(text.slice(19));
  const nanos = match ? Number(match[1].slice(0, 9).padEnd(9, '0')) : (millis % 1000) * 1e6;
  return { seconds: String(seconds), nanos };
}

// google/protobuf/struct.proto comes from protobufjs's bundled definitions, whose field names
// are camelCase whatever `keepCase` says: Value is {kind: 'numberValue', numberValue: 1}.
function valueToJson(value) {
  if (!value) return null;
  switch (value.kind) {
    case 'numberValue':
      return value.numberValue;
    case 'stringValue':
      return value.stringValue;
    case 'boolValue':
      return value.boolValue;
    case 'structValue':
      return structToJson(value.structValue);
    case 'listValue':
      return ((value.listValue && value.listValue.values) || []).map(valueToJson);
    default:
      return null;
  }
}

/** google.protobuf.Struct (proto-loader object) to a plain JSON object. */
function structToJson(struct) {
  const result = {};
  for (const [key, value] of Object.entries((struct && struct.fields) || {})) {
    result[key] = valueToJson(value);
  }
  return result;
}

function jsonToValue(value) {
  if (value === null || value === undefined) return { nullValue: 'NULL_VALUE' };
  if (typeof value === 'number') return { numberValue: value };
  if (typeof value === 'string') return { stringValue: value };
  if (typeof value === 'boolean') return { boolValue: value };
  if (Array.isArray(value)) return { listValue: { values: value.map(jsonToValue) } };
  if (typeof value === 'object') return { structValue: jsonToStruct(value) };
  throw new TypeError(`not JSON: ${typeof value}`);
}

/** A plain JSON object to google.protobuf.Struct (proto-loader object). */
function jsonToStruct(object) {
  const fields = {};
  for (const [key, value] of Object.entries(object || {})) fields[key] = jsonToValue(value);
  return { fields };
}

/**
 * The event as handlers see it: the pimgate.v1.Event fields by their .proto names, `sequence`
 * as a decimal string (uint64), timestamps as RFC 3339 strings (null when unset), `origin` as
 * the enum name and `data` as plain JSON.
 */
function toPlainEvent(event) {
  return {
    sequence: String(event.sequence),
    id: event.id,
    source: event.source,
    type: event.type,
    kind: event.kind,
    resource_id: event.resource_id,
    original_type: event.original_type,
    occurred_at: timestampToIso(event.occurred_at),
    version_at: timestampToIso(event.version_at),
    received_at: timestampToIso(event.received_at),
    author: event.author,
    author_type: event.author_type,
    pim_source: event.pim_source,
    origin: event.origin,
    data: structToJson(event.data),
    stale: Boolean(event.stale),
    request_id: event.request_id,
    subject: event.subject,
  };
}

// ---------------------------------------------------------------------------------------------
// Logging

const LEVELS = { debug: 10, info: 20, warn: 30, warning: 30, error: 40 };

/** The plugin's name ($PIMGATE_PLUGIN_NAME), or "plugin". */
function pluginName() {
  return process.env.PIMGATE_PLUGIN_NAME || 'plugin';
}

function makeLogger(name) {
  const threshold = LEVELS[(process.env.PIMGATE_LOG_LEVEL || 'info').toLowerCase()] ?? 20;
  const emit =
    (level, label) =>
    (...parts) => {
      if (level < threshold) return;
      const text = parts.map((p) => (p instanceof Error ? p.stack : String(p))).join(' ');
      // Warnings and errors to stderr, the rest to stdout: pimgate logs a plugin's stderr at
      // warning level (and keeps its last lines when it fails), its stdout at info.
      (level >= 30 ? process.stderr : process.stdout).write(
        `${new Date().toISOString()} ${label} [${pluginName()}] ${name}: ${text}\n`,
      );
    };
  return {
    debug: emit(10, 'DEBUG'),
    info: emit(20, 'INFO'),
    warn: emit(30, 'WARNING'),
    error: emit(40, 'ERROR'),
  };
}

/**
 * Leveled logging ($PIMGATE_LOG_LEVEL, default info), tagged with the plugin name: debug and info
 * to stdout, warnings and errors to stderr.
 */
const log = makeLogger('pimgate_sdk');

// ---------------------------------------------------------------------------------------------
// Serving

// Runs handler calls, at most `concurrency` at once across all streams; deliveries wait in a
// FIFO queue, and streams stop reading (gRPC flow control pushes back on pimgate) while the
// queue holds `concurrency` or more. Single-threaded: JavaScript's event loop.
class Dispatcher {
  constructor(handler, concurrency) {
    this.handler = handler;
    this.concurrency = concurrency;
    this.running = 0;
    this.queue = [];
    this.paused = new Set();
    this.idleWaiters = [];
  }

  submit(stream, delivery) {
    this.queue.push({ stream, delivery });
    if (this.queue.length >= this.concurrency && !this.paused.has(stream)) {
      this.paused.add(stream);
      stream.call.pause();
    }
    this.pump();
  }

  // Forgets deliveries not started yet: they were never answered, so pimgate sends them again.
  dropQueued() {
    for (const { stream } of this.queue) stream.forget();
    this.queue = [];
  }

  idle() {
    if (this.running === 0 && this.queue.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  pump() {
    while (this.running < this.concurrency && this.queue.length > 0) {
      const { stream, delivery } = this.queue.shift();
      if (stream.closed) continue;
      this.running += 1;
      this.execute(stream, delivery);
    }
    if (this.queue.length < this.concurrency && this.paused.size > 0) {
      for (const stream of this.paused) if (!stream.closed) stream.call.resume();
      this.paused.clear();
    }
    if (this.running === 0 && this.queue.length === 0) {
      for (const resolve of this.idleWaiters.splice(0)) resolve();
    }
  }

  async execute(stream, delivery) {
    const ack = await this.call(delivery);
    this.running -= 1;
    stream.complete(ack);
    this.pump();
  }

  async call(delivery) {
    const event = delivery.event || {};
    const sequence = String(event.sequence ?? '0');
    try {
      const value = await this.handler(toPlainEvent(event), delivery.attempt);
      const ack = toAck(sequence, value);
      if (ack.outcome !== Outcome.OK) {
        log.info(`sequence ${sequence} (${event.type}) -> ${ack.outcome} ${ack.detail}`);
      }
      return ack;
    } catch (err) {
      log.warn(
        `handler failed on sequence ${sequence} (${event.type}, attempt ${delivery.attempt}):`,
        err,
      );
      return { sequence, outcome: Outcome.RETRY, detail: clip(errorText(err)) };
    }
  }
}

// One Deliver call. Acks are written in completion order. The stream ends (status OK) once no
// more deliveries will be taken (the client half-closed, or the plugin is draining) and every
// taken delivery has been answered; it is dropped at once if the call is cancelled.
class DeliverStream {
  constructor(call, dispatcher, onClosed) {
    this.call = call;
    this.dispatcher = dispatcher;
    this.onClosed = onClosed;
    this.inFlight = 0;
    this.reading = true;
    this.draining = false;
    this.closed = false;
    call.on('data', (message) => this.onMessage(message));
    call.on('end', () => {
      this.reading = false;
      this.maybeEnd();
    });
    call.on('cancelled', () => this.close());
    call.on('error', (err) => {
      log.debug(`deliver stream error: ${err.message}`);
      this.close();
    });
  }

  onMessage(delivery) {
    this.take(delivery);
  }

  take(delivery) {
    if (this.draining || this.closed) return; // not taken: no ack, pimgate sends it again
    this.inFlight += 1;
    this.dispatcher.submit(this, delivery);
  }

  complete(ack) {
    this.inFlight -= 1;
    if (!this.closed) this.call.write(ack);
    this.maybeEnd();
  }

  forget() {
    this.inFlight -= 1;
  }

  drain() {
    this.draining = true;
    this.maybeEnd();
  }

  maybeEnd() {
    if ((!this.reading || this.draining) && this.inFlight === 0 && !this.closed) {
      this.call.end();
      this.close();
    }
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    this.onClosed(this);
  }
}

// One DeliverBatch call: as DeliverStream, with the deliveries of each DeliveryBatch taken one
// by one, and the acks finished within one turn of the event loop written together in one
// AckBatch (per-message costs are what limit a plugin's rate). pimgate opens the call with an
// empty DeliveryBatch: it is answered with an empty AckBatch.
class DeliverBatchStream extends DeliverStream {
  constructor(call, dispatcher, onClosed) {
    super(call, dispatcher, onClosed);
    this.pendingAcks = [];
    this.flushScheduled = false;
  }

  onMessage(batch) {
    const deliveries = batch.deliveries || [];
    if (deliveries.length === 0) {
      if (!this.closed) this.call.write({ acks: [] }); // the handshake answer
      return;
    }
    for (const delivery of deliveries) this.take(delivery);
  }

  complete(ack) {
    this.inFlight -= 1;
    if (!this.closed) {
      this.pendingAcks.push(ack);
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        setImmediate(() => this.flush());
      }
    }
    this.maybeEnd();
  }

  flush() {
    this.flushScheduled = false;
    if (this.pendingAcks.length === 0 || this.closed) return;
    this.call.write({ acks: this.pendingAcks });
    this.pendingAcks = [];
  }

  maybeEnd() {
    if ((!this.reading || this.draining) && this.inFlight === 0 && !this.closed) this.flush();
    super.maybeEnd();
  }
}

class HealthService {
  constructor() {
    this.status = 'NOT_SERVING';
    this.watchers = new Set();
  }

  set(status) {
    this.status = status;
    for (const watcher of this.watchers) watcher.send();
  }

  endWatches() {
    for (const watcher of this.watchers) watcher.call.end();
    this.watchers.clear();
  }

  statusOf(service) {
    return HEALTH_SERVICES.includes(service) ? this.status : 'SERVICE_UNKNOWN';
  }

  implementation() {
    return {
      Check: (call, callback) => {
        const service = call.request.service || '';
        if (!HEALTH_SERVICES.includes(service)) {
          callback({ code: grpc.status.NOT_FOUND, details: `unknown service '${service}'` });
          return;
        }
        callback(null, { status: this.status });
      },
      Watch: (call) => {
        const service = call.request.service || '';
        let last = null;
        const watcher = {
          call,
          send: () => {
            const status = this.statusOf(service);
            if (status !== last) {
              last = status;
              call.write({ status });
            }
          },
        };
        this.watchers.add(watcher);
        const forget = () => this.watchers.delete(watcher);
        call.on('cancelled', forget);
        call.on('error', forget);
        watcher.send();
      },
    };
  }
}

function unixSocketPath(address) {
  if (!address.startsWith('unix:')) return null;
  const rest = address.slice('unix:'.length);
  return rest.startsWith('//') ? rest.slice(2) : rest;
}

// A socket file left by a killed plugin would make bind fail; anything else is kept.
function removeStaleSocket(socketPath) {
  try {
    if (fs.lstatSync(socketPath).isSocket()) fs.unlinkSync(socketPath);
  } catch (err) {
    if (err.code !== 'ENOENT') throw err;
  }
}

const delay = (ms) => new Promise((resolve) => setTimeout(resolve, ms).unref());

/**
 * Serves pimgate.v1.EventHandler and grpc.health.v1.Health at $PIMGATE_PLUGIN_ADDRESS (else
 * `defaultAddress`) and reports SERVING; resolves once serving, rejects when it cannot listen.
 * On SIGTERM or SIGINT it reports NOT_SERVING, takes no further deliveries, lets running
 * handlers finish (up to `graceMs`; deliveries not answered by then are redelivered later),
 * shuts the server down and exits the process with status 0.
 *
 * `handler(event, attempt)` gets the event as a plain object (see toPlainEvent) and the attempt
 * number (1 for the first delivery); it may be async and returns/resolves undefined or ok(),
 * retry(detail) or reject(detail). A thrown error or rejected promise becomes a RETRY whose
 * detail is the error text. At most `concurrency` handler calls are in progress at once, for
 * different resources (pimgate never has two events of one resource outstanding).
 */
async function run(handler, options = {}) {
  const { concurrency = 8, graceMs = DEFAULT_GRACE_MS, defaultAddress = DEFAULT_ADDRESS } = options;
  if (typeof handler !== 'function') throw new TypeError('handler must be a function');
  if (!Number.isInteger(concurrency) || concurrency < 1) {
    throw new RangeError(`concurrency must be an integer >= 1, got ${concurrency}`);
  }
  const address = process.env.PIMGATE_PLUGIN_ADDRESS || defaultAddress;
  const protos = loadProtos();
  const dispatcher = new Dispatcher(handler, concurrency);
  const health = new HealthService();
  const streams = new Set();
  let stopping = false;

  const server = new grpc.Server({
    'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
    'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
  });
  const serve = (StreamClass) => (call) => {
    if (stopping) {
      call.emit('error', { code: grpc.status.UNAVAILABLE, details: 'plugin is stopping' });
      return;
    }
    log.info(`pimgate connected (${call.getPeer()})`);
    const stream = new StreamClass(call, dispatcher, (closed) => {
      streams.delete(closed);
      log.info(`deliver stream closed (${call.getPeer()})`);
    });
    streams.add(stream);
  };
  server.addService(protos.pimgate.v1.EventHandler.service, {
    Deliver: serve(DeliverStream),
    DeliverBatch: serve(DeliverBatchStream),
  });
  server.addService(protos.grpc.health.v1.Health.service, health.implementation());

  const socketPath = unixSocketPath(address);
  if (socketPath) removeStaleSocket(socketPath);
  await new Promise((resolve, reject_) => {
    server.bindAsync(address, grpc.ServerCredentials.createInsecure(), (err) => {
      if (err) reject_(new Error(`cannot listen on ${address}: ${err.message}`));
      else resolve();
    });
  });
  health.set('SERVING');
  log.info(`serving ${EVENT_HANDLER_SERVICE} on ${address} (concurrency ${concurrency})`);

  const stop = async () => {
    if (stopping) return;
    stopping = true;
    log.info(`stopping: finishing running handlers (grace ${graceMs} ms)`);
    health.set('NOT_SERVING');
    dispatcher.dropQueued();
    for (const stream of [...streams]) stream.drain();
    const finished = await Promise.race([dispatcher.idle().then(() => true), delay(graceMs)]);
    if (!finished) {
      log.warn(`handlers still running after ${graceMs} ms: their events will be redelivered`);
    }
    health.endWatches();
    const shutDown = new Promise((resolve) => server.tryShutdown(() => resolve(true)));
    if (!(await Promise.race([shutDown, delay(STOP_GRACE_MS)]))) server.forceShutdown();
    log.info('stopped');
    process.exit(0);
  };
  const onSignal = () =>
    stop().catch((err) => {
      log.error('stopping failed:', err);
      process.exit(1);
    });
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
}

module.exports = {
  run,
  ok,
  retry,
  reject,
  pluginName,
  log,
  makeLogger,
  Outcome,
  protoDir,
  loadProtos,
  toPlainEvent,
  structToJson,
  jsonToStruct,
  timestampToIso,
  isoToTimestamp,
  DEFAULT_ADDRESS,
  MAX_MESSAGE_BYTES,
};
