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
// Wire format of deliveries and acks
//
// Deliveries are decoded straight from the protobuf wire format into the event handlers see
// (toPlainEvent's shape), and acks encoded straight to it: proto-loader's generic path (decode
// into messages, toObject, then Struct to JSON) built each product three times and was most of a
// plugin's CPU in profiles of `pimgate_dispatch_bench` (docs/performance.md, round 2). The result
// is the same as that path's, field for field (sdk.test.js compares them). A stream message whose
// framing does not decode throws, as protobufjs did, and gRPC ends the stream with INTERNAL; an
// event that does not decode is answered RETRY (see WireDelivery).

const WIRE_VARINT = 0;
const WIRE_I64 = 1;
const WIRE_LEN = 2;
const WIRE_START_GROUP = 3;
const WIRE_END_GROUP = 4;
const WIRE_I32 = 5;

const ORIGIN_NAMES = [
  'ORIGIN_UNSPECIFIED',
  'ORIGIN_EVENTS_API',
  'ORIGIN_EVENT_PLATFORM',
  'ORIGIN_RECONCILIATION',
];
const OUTCOME_NUMBERS = {
  OUTCOME_UNSPECIFIED: 0,
  OUTCOME_OK: 1,
  OUTCOME_RETRY: 2,
  OUTCOME_REJECT: 3,
};
const TWO_32 = 4294967296;
// Strings up to this many bytes are decoded here when they are ASCII (most keys and values of a
// product): cheaper than a call into Buffer's native UTF-8 decoder.
const SHORT_STRING_BYTES = 32;
const utf8Slice = Buffer.prototype.utf8Slice; // Buffer#toString('utf8') without its checks

function utf8Text(buf, start, end) {
  if (end - start <= SHORT_STRING_BYTES) {
    let text = '';
    for (let i = start; i < end; ++i) {
      const c = buf[i];
      if (c >= 0x80) return utf8Slice.call(buf, start, end);
      text += String.fromCharCode(c);
    }
    return text;
  }
  return utf8Slice.call(buf, start, end);
}

// A position in a Buffer; every read checks against `end` (the enclosing message's end).
class WireReader {
  constructor(buf, pos, end) {
    this.buf = buf;
    this.pos = pos;
    this.end = end;
    this.lo = 0; // the last varint64: low and high 32 bits (unsigned)
    this.hi = 0;
  }

  byte() {
    if (this.pos >= this.end) throw new RangeError('protobuf: truncated message');
    return this.buf[this.pos++];
  }

  // A varint's low 32 bits (tags, lengths, uint32, enums, bools); longer varints are consumed.
  uint32() {
    let b = this.byte();
    if (b < 0x80) return b;
    let value = b & 0x7f;
    b = this.byte();
    value |= (b & 0x7f) << 7;
    if (b < 0x80) return value;
    b = this.byte();
    value |= (b & 0x7f) << 14;
    if (b < 0x80) return value;
    b = this.byte();
    value |= (b & 0x7f) << 21;
    if (b < 0x80) return value;
    b = this.byte();
    value = (value | ((b & 0x0f) << 28)) >>> 0;
    for (let i = 0; b >= 0x80; ++i) {
      if (i === 5) throw new RangeError('protobuf: varint longer than 10 bytes');
      b = this.byte();
    }
    return value;
  }

  // A varint64 into this.lo / this.hi.
  varint64() {
    let lo = 0;
    let hi = 0;
    let b = 0;
    for (let shift = 0; shift < 28; shift += 7) {
      b = this.byte();
      lo |= (b & 0x7f) << shift;
      if (b < 0x80) {
        this.lo = lo >>> 0;
        this.hi = 0;
        return;
      }
    }
    b = this.byte();
    lo |= (b & 0x0f) << 28;
    hi = (b & 0x7f) >> 4;
    for (let shift = 3; b >= 0x80; shift += 7) {
      if (shift > 31) throw new RangeError('protobuf: varint longer than 10 bytes');
      b = this.byte();
      hi |= (b & 0x7f) << shift;
    }
    this.lo = lo >>> 0;
    this.hi = hi >>> 0;
  }

  // uint64 as a decimal string (proto-loader's `longs: String`).
  uint64String() {
    this.varint64();
    if (this.hi === 0) return String(this.lo);
    if (this.hi < 0x200000) return String(this.hi * TWO_32 + this.lo);
    return ((BigInt(this.hi) << 32n) | BigInt(this.lo)).toString();
  }

  // int64 as a Number (Timestamp.seconds).
  int64Number() {
    this.varint64();
    if (this.hi & 0x80000000) {
      return Number(BigInt.asIntN(64, (BigInt(this.hi) << 32n) | BigInt(this.lo)));
    }
    return this.hi * TWO_32 + this.lo;
  }

  // The end of a length-delimited field whose length is next.
  lengthEnd() {
    const length = this.uint32();
    const end = this.pos + length;
    if (end > this.end) throw new RangeError('protobuf: truncated message');
    return end;
  }

  string() {
    const end = this.lengthEnd();
    const text = utf8Text(this.buf, this.pos, end);
    this.pos = end;
    return text;
  }

  double() {
    if (this.pos + 8 > this.end) throw new RangeError('protobuf: truncated message');
    const value = this.buf.readDoubleLE(this.pos);
    this.pos += 8;
    return value;
  }

  skip(wireType, fieldNumber) {
    switch (wireType) {
      case WIRE_VARINT:
        this.varint64();
        return;
      case WIRE_I64:
        this.advance(8);
        return;
      case WIRE_LEN:
        this.pos = this.lengthEnd();
        return;
      case WIRE_START_GROUP:
        for (;;) {
          const tag = this.uint32();
          if ((tag & 7) === WIRE_END_GROUP) {
            if (tag >>> 3 !== fieldNumber) throw new RangeError('protobuf: mismatched end group');
            return;
          }
          this.skip(tag & 7, tag >>> 3);
        }
      case WIRE_I32:
        this.advance(4);
        return;
      default:
        throw new RangeError(`protobuf: invalid wire type ${wireType}`);
    }
  }

  advance(count) {
    if (this.pos + count > this.end) throw new RangeError('protobuf: truncated message');
    this.pos += count;
  }

  // Runs `field(number, wireType)` for each field up to `end`; `field` returns false for a
  // field it did not read (skipped here).
  fields(end, field) {
    const outer = this.end;
    this.end = end;
    while (this.pos < end) {
      const tag = this.uint32();
      const number = tag >>> 3;
      const wireType = tag & 7;
      if (number === 0) throw new RangeError('protobuf: field number 0');
      if (!field(number, wireType)) this.skip(wireType, number);
    }
    this.end = outer;
  }
}

// google.protobuf.Value to JSON: null for null_value and for a Value with no kind set.
function decodeValue(r, end) {
  let value = null;
  const outer = r.end;
  r.end = end;
  while (r.pos < end) {
    const tag = r.uint32();
    switch (tag) {
      case (1 << 3) | WIRE_VARINT: // null_value
        r.uint32();
        value = null;
        break;
      case (2 << 3) | WIRE_I64: // number_value
        value = r.double();
        break;
      case (3 << 3) | WIRE_LEN: // string_value
        value = r.string();
        break;
      case (4 << 3) | WIRE_VARINT: // bool_value
        r.varint64();
        value = r.lo !== 0 || r.hi !== 0;
        break;
      case (5 << 3) | WIRE_LEN: // struct_value
        value = decodeStruct(r, r.lengthEnd());
        break;
      case (6 << 3) | WIRE_LEN: // list_value
        value = decodeList(r, r.lengthEnd());
        break;
      default:
        if (tag >>> 3 === 0) throw new RangeError('protobuf: field number 0');
        r.skip(tag & 7, tag >>> 3);
    }
  }
  r.end = outer;
  return value;
}

// google.protobuf.Struct to a plain object (a key given twice: the last wins, as in protobuf).
function decodeStruct(r, end) {
  const result = {};
  const outer = r.end;
  r.end = end;
  while (r.pos < end) {
    const tag = r.uint32();
    if (tag !== ((1 << 3) | WIRE_LEN)) {
      if (tag >>> 3 === 0) throw new RangeError('protobuf: field number 0');
      r.skip(tag & 7, tag >>> 3);
      continue;
    }
    // A map entry: key = 1, value = 2.
    const entryEnd = r.lengthEnd();
    const entryOuter = r.end;
    r.end = entryEnd;
    let key = '';
    let value = null;
    while (r.pos < entryEnd) {
      const entryTag = r.uint32();
      if (entryTag === ((1 << 3) | WIRE_LEN)) key = r.string();
      else if (entryTag === ((2 << 3) | WIRE_LEN)) value = decodeValue(r, r.lengthEnd());
      else {
        if (entryTag >>> 3 === 0) throw new RangeError('protobuf: field number 0');
        r.skip(entryTag & 7, entryTag >>> 3);
      }
    }
    r.end = entryOuter;
    if (key === '__proto__') {
      // An own property, as JSON.parse makes it (an assignment would set the prototype).
      Object.defineProperty(result, key, {
        value,
        enumerable: true,
        writable: true,
        configurable: true,
      });
    } else {
      result[key] = value;
    }
  }
  r.end = outer;
  return result;
}

// google.protobuf.ListValue to an array.
function decodeList(r, end) {
  const result = [];
  const outer = r.end;
  r.end = end;
  while (r.pos < end) {
    const tag = r.uint32();
    if (tag === ((1 << 3) | WIRE_LEN)) result.push(decodeValue(r, r.lengthEnd()));
    else {
      if (tag >>> 3 === 0) throw new RangeError('protobuf: field number 0');
      r.skip(tag & 7, tag >>> 3);
    }
  }
  r.end = outer;
  return result;
}

// google.protobuf.Timestamp as {seconds, nanos} (made RFC 3339 text by finishEvent).
function decodeTimestamp(r, end) {
  const ts = { seconds: 0, nanos: 0 };
  r.fields(end, (number, wireType) => {
    if (number === 1 && wireType === WIRE_VARINT) ts.seconds = r.int64Number();
    else if (number === 2 && wireType === WIRE_VARINT) ts.nanos = r.uint32() | 0;
    else return false;
    return true;
  });
  return ts;
}

// A pimgate.v1.Event in toPlainEvent's shape, except that the timestamps are still
// {seconds, nanos} (finishEvent converts them: a timestamp out of Date's range then fails that
// one delivery, not the whole batch).
function decodeEvent(r, end) {
  const event = {
    sequence: '0',
    id: '',
    source: '',
    type: '',
    kind: '',
    resource_id: '',
    original_type: '',
    occurred_at: null,
    version_at: null,
    received_at: null,
    author: '',
    author_type: '',
    pim_source: '',
    origin: ORIGIN_NAMES[0],
    data: {},
    stale: false,
    request_id: '',
    subject: '',
  };
  const outer = r.end;
  r.end = end;
  while (r.pos < end) {
    const tag = r.uint32();
    switch (tag) {
      case (1 << 3) | WIRE_VARINT:
        event.sequence = r.uint64String();
        break;
      case (2 << 3) | WIRE_LEN:
        event.id = r.string();
        break;
      case (3 << 3) | WIRE_LEN:
        event.source = r.string();
        break;
      case (4 << 3) | WIRE_LEN:
        event.type = r.string();
        break;
      case (5 << 3) | WIRE_LEN:
        event.kind = r.string();
        break;
      case (6 << 3) | WIRE_LEN:
        event.resource_id = r.string();
        break;
      case (7 << 3) | WIRE_LEN:
        event.original_type = r.string();
        break;
      case (8 << 3) | WIRE_LEN:
        event.occurred_at = decodeTimestamp(r, r.lengthEnd());
        break;
      case (9 << 3) | WIRE_LEN:
        event.version_at = decodeTimestamp(r, r.lengthEnd());
        break;
      case (10 << 3) | WIRE_LEN:
        event.received_at = decodeTimestamp(r, r.lengthEnd());
        break;
      case (11 << 3) | WIRE_LEN:
        event.author = r.string();
        break;
      case (12 << 3) | WIRE_LEN:
        event.author_type = r.string();
        break;
      case (13 << 3) | WIRE_LEN:
        event.pim_source = r.string();
        break;
      case (14 << 3) | WIRE_VARINT: {
        const origin = r.uint32() | 0; // an enum is an int32
        event.origin = ORIGIN_NAMES[origin] ?? origin; // unknown values stay numbers
        break;
      }
      case (15 << 3) | WIRE_LEN:
        event.data = decodeStruct(r, r.lengthEnd());
        break;
      case (16 << 3) | WIRE_VARINT:
        r.varint64();
        event.stale = r.lo !== 0 || r.hi !== 0;
        break;
      case (17 << 3) | WIRE_LEN:
        event.request_id = r.string();
        break;
      case (18 << 3) | WIRE_LEN:
        event.subject = r.string();
        break;
      default:
        if (tag >>> 3 === 0) throw new RangeError('protobuf: field number 0');
        r.skip(tag & 7, tag >>> 3);
    }
  }
  r.end = outer;
  return event;
}

// A delivery as the SDK holds it until its handler is called: the attempt, the event's sequence
// (what the ack names) and where the serialized event lies in the stream message. The event is
// decoded just before its handler runs (deliveryEvent), so that the acks of a large batch's first
// events go out while the rest are still waiting, and a delivery whose event does not decode is
// answered RETRY on its own instead of failing the stream.
class WireDelivery {
  constructor(buf, start, end, attempt, sequence) {
    this.buf = buf;
    this.start = start;
    this.end = end;
    this.attempt = attempt;
    this.sequence = sequence;
  }
}

// Reads a serialized pimgate.v1.Delivery up to `end` into a WireDelivery (its event not decoded;
// only the sequence is looked for).
function readDeliveryAt(r, end) {
  let eventStart = r.pos;
  let eventEnd = r.pos; // no event field: an empty event (all defaults)
  let attempt = 0;
  r.fields(end, (number, wireType) => {
    if (number === 1 && wireType === WIRE_LEN) {
      eventEnd = r.lengthEnd();
      eventStart = r.pos;
      r.pos = eventEnd;
    } else if (number === 2 && wireType === WIRE_VARINT) {
      attempt = r.uint32();
    } else {
      return false;
    }
    return true;
  });
  const after = r.pos;
  let sequence = '0';
  r.pos = eventStart;
  r.fields(eventEnd, (number, wireType) => {
    if (number !== 1 || wireType !== WIRE_VARINT) return false;
    sequence = r.uint64String();
    return true;
  });
  r.pos = after;
  return new WireDelivery(r.buf, eventStart, eventEnd, attempt, sequence);
}

// A serialized pimgate.v1.Delivery (Buffer) as a WireDelivery (the Deliver stream's messages).
function readDelivery(buf) {
  return readDeliveryAt(new WireReader(buf, 0, buf.length), buf.length);
}

// A serialized pimgate.v1.DeliveryBatch (Buffer) as {deliveries: [WireDelivery, ...]}.
function readDeliveryBatch(buf) {
  const r = new WireReader(buf, 0, buf.length);
  const deliveries = [];
  r.fields(buf.length, (number, wireType) => {
    if (number !== 1 || wireType !== WIRE_LEN) return false;
    deliveries.push(readDeliveryAt(r, r.lengthEnd()));
    return true;
  });
  return { deliveries };
}

/**
 * The event of a WireDelivery as handlers see it (toPlainEvent's shape: sequence as a decimal
 * string, timestamps as RFC 3339 text or null, origin by name, data as plain JSON). Throws when
 * the event does not decode.
 */
function deliveryEvent(delivery) {
  const r = new WireReader(delivery.buf, delivery.start, delivery.end);
  return finishEvent(decodeEvent(r, delivery.end));
}

/** A serialized pimgate.v1.Delivery (Buffer) to {event, attempt}, event as handlers see it. */
function decodeDelivery(buf) {
  const delivery = readDelivery(buf);
  return { event: deliveryEvent(delivery), attempt: delivery.attempt };
}

/** A serialized pimgate.v1.DeliveryBatch (Buffer) to {deliveries: [{event, attempt}, ...]}. */
function decodeDeliveryBatch(buf) {
  return {
    deliveries: readDeliveryBatch(buf).deliveries.map((delivery) => ({
      event: deliveryEvent(delivery),
      attempt: delivery.attempt,
    })),
  };
}

/** The event handlers see, from one decodeEvent made: timestamps as RFC 3339 text. */
function finishEvent(event) {
  event.occurred_at = timestampToIso(event.occurred_at);
  event.version_at = timestampToIso(event.version_at);
  event.received_at = timestampToIso(event.received_at);
  return event;
}

// Bytes of a varint.
function varintSize(value) {
  let size = 1;
  while (value >= 0x80) {
    value = Math.floor(value / 128);
    size += 1;
  }
  return size;
}

function writeVarint(buf, pos, value) {
  while (value >= 0x80) {
    buf[pos++] = (value % 128) | 0x80;
    value = Math.floor(value / 128);
  }
  buf[pos++] = value;
  return pos;
}

// An ack's sequence (a decimal uint64 string) as the bytes of its varint.
function sequenceVarint(sequence) {
  let value = BigInt.asUintN(64, BigInt(sequence));
  const bytes = [];
  while (value >= 0x80n) {
    bytes.push(Number(value & 0x7fn) | 0x80);
    value >>= 7n;
  }
  bytes.push(Number(value));
  return bytes;
}

// The serialized fields of one Ack, as {size, write(buf, pos) -> pos}.
function ackParts(ack) {
  const text = String(ack.sequence ?? '0');
  const small = /^\d{1,15}$/.test(text);
  const sequence = small ? Number(text) : 0;
  const big = small ? null : sequenceVarint(text);
  const outcome = OUTCOME_NUMBERS[ack.outcome] ?? 0;
  const detail = ack.detail ? String(ack.detail) : '';
  const detailBytes = detail ? Buffer.byteLength(detail) : 0;
  let size = 0;
  if (small ? sequence !== 0 : true) size += 1 + (small ? varintSize(sequence) : big.length);
  if (outcome !== 0) size += 2;
  if (detailBytes) size += 1 + varintSize(detailBytes) + detailBytes;
  return {
    size,
    write(buf, pos) {
      if (small ? sequence !== 0 : true) {
        buf[pos++] = (1 << 3) | WIRE_VARINT;
        if (small) pos = writeVarint(buf, pos, sequence);
        else for (const b of big) buf[pos++] = b;
      }
      if (outcome !== 0) {
        buf[pos++] = (2 << 3) | WIRE_VARINT;
        buf[pos++] = outcome;
      }
      if (detailBytes) {
        buf[pos++] = (3 << 3) | WIRE_LEN;
        pos = writeVarint(buf, pos, detailBytes);
        pos += buf.write(detail, pos, 'utf8');
      }
      return pos;
    },
  };
}

/** {sequence, outcome, detail} (outcome by name) to a serialized pimgate.v1.Ack. */
function encodeAck(ack) {
  const parts = ackParts(ack);
  const buf = Buffer.allocUnsafe(parts.size);
  parts.write(buf, 0);
  return buf;
}

/** {acks: [...]} to a serialized pimgate.v1.AckBatch. */
function encodeAckBatch(batch) {
  const parts = (batch.acks || []).map(ackParts);
  let size = 0;
  for (const part of parts) size += 1 + varintSize(part.size) + part.size;
  const buf = Buffer.allocUnsafe(size);
  let pos = 0;
  for (const part of parts) {
    buf[pos++] = (1 << 3) | WIRE_LEN;
    pos = writeVarint(buf, pos, part.size);
    pos = part.write(buf, pos);
  }
  return buf;
}

// The EventHandler service as proto-loader defines it, with the wire codecs above for the
// messages the SDK receives and sends.
function fastEventHandlerService(service) {
  return {
    ...service,
    Deliver: {
      ...service.Deliver,
      requestDeserialize: readDelivery,
      responseSerialize: encodeAck,
    },
    DeliverBatch: {
      ...service.DeliverBatch,
      requestDeserialize: readDeliveryBatch,
      responseSerialize: encodeAckBatch,
    },
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

// Handler calls started before the event loop is let turn (acks written, deliveries read). The
// acks of those finished go out in one AckBatch per turn, so pimgate refills its window while the
// rest of a large batch is handled.
const HANDLERS_PER_TURN = 32;

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
    this.startedInTurn = 0; // handlers started since the event loop last turned here
    this.turnScheduled = false;
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
    while (this.running < this.concurrency && this.queue.length > 0 && !this.turnScheduled) {
      if (this.startedInTurn >= HANDLERS_PER_TURN) {
        // Handlers that finish at once chain through microtasks: without a turn of the event
        // loop, no ack of a whole DeliveryBatch would be written before its last handler ran.
        this.turnScheduled = true;
        setImmediate(() => {
          this.turnScheduled = false;
          this.startedInTurn = 0;
          this.pump();
        });
        break;
      }
      const { stream, delivery } = this.queue.shift();
      if (stream.closed) continue;
      this.running += 1;
      this.startedInTurn += 1;
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

  // `delivery`: a WireDelivery.
  async call(delivery) {
    const { sequence } = delivery;
    let event = { type: '(not decoded)' };
    try {
      event = deliveryEvent(delivery);
      const value = await this.handler(event, delivery.attempt);
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
 * detail is the error text; so is a delivery whose event does not decode (its handler is not
 * called). At most `concurrency` handler calls are in progress at once, for
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
  server.addService(fastEventHandlerService(protos.pimgate.v1.EventHandler.service), {
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
  decodeDelivery,
  decodeDeliveryBatch,
  encodeAck,
  encodeAckBatch,
  DEFAULT_ADDRESS,
  MAX_MESSAGE_BYTES,
};
