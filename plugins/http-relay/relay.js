#!/usr/bin/env node
'use strict';
// http-relay: a pimgate plugin that POSTs every event, as signed JSON, to one HTTP endpoint
// (an integration platform, a serverless function, a service of your own).
//
// Request, one per event:
//   POST $RELAY_URL
//   Content-Type: application/json
//   X-Pimgate-Signature: sha256=<hex HMAC-SHA256 of the raw body, keyed with $RELAY_SECRET>
//   X-Pimgate-Timestamp: <unix seconds when this attempt was sent>
//   X-Pimgate-Event-Id: <event.id, the sender's id: deduplicate on it with the source>
//   X-Pimgate-Sequence: <event.sequence, pimgate's log position>
//   X-Pimgate-Event-Type: <event.type, e.g. product.updated>
//   X-Pimgate-Attempt: <1 for the first delivery, then 2, 3, ...>
//   body: the event as the Node SDK hands it over: pimgate.v1.Event fields by their .proto
//         names, `sequence` as a string, timestamps RFC 3339, `data` as plain JSON.
//
// Answer → outcome: 2xx → OK (pimgate moves on); 408, 429, 5xx, a network error or no answer
// within $RELAY_TIMEOUT_MS → RETRY (redelivered with backoff); any other status (other 4xx,
// 3xx: redirects are not followed) → REJECT (dead-lettered), with the status and the start of
// the response body as detail. The event is acknowledged only after the endpoint answered 2xx.
//
// Verifying on the receiving side (Node):
//   const expected = 'sha256=' + crypto.createHmac('sha256', secret).update(rawBody).digest('hex');
//   const valid = expected.length === header.length &&
//                 crypto.timingSafeEqual(Buffer.from(expected), Buffer.from(header));
//
// Environment:
//   RELAY_URL          endpoint, http:// or https:// (required)
//   RELAY_SECRET       HMAC key (required)
//   RELAY_TIMEOUT_MS   whole-request timeout, default 10000
//   RELAY_CONCURRENCY  requests in flight at once, default 8
//   PIMGATE_PLUGIN_ADDRESS, PIMGATE_PLUGIN_NAME  set by pimgate

const crypto = require('node:crypto');
const sdk = require('@pimgate/sdk');

const DEFAULT_TIMEOUT_MS = 10000;
const DEFAULT_CONCURRENCY = 8;
// How much of an error response's body goes into the ack's detail.
const EXCERPT_BYTES = 512;
// Exit status for a configuration error (pimgate's supervisor logs it and does not spin).
const EXIT_CONFIG = 2;

const log = sdk.makeLogger('http_relay');

function positiveInteger(name, text, fallback) {
  if (text === undefined || text === '') return fallback;
  const value = Number(text);
  if (!Number.isInteger(value) || value < 1)
    throw new Error(`${name} must be a positive integer, got '${text}'`);
  return value;
}

/** Reads and checks the configuration from `env`; throws with a message naming the variable. */
function configFromEnv(env) {
  if (!env.RELAY_URL) throw new Error('RELAY_URL is required');
  let url;
  try {
    url = new URL(env.RELAY_URL);
  } catch {
    throw new Error(`RELAY_URL is not a URL: '${env.RELAY_URL}'`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new Error(`RELAY_URL must be http:// or https://, got '${url.protocol}'`);
  }
  if (!env.RELAY_SECRET)
    throw new Error('RELAY_SECRET is required (the HMAC key receivers verify)');
  return {
    url: url.href,
    secret: env.RELAY_SECRET,
    timeoutMs: positiveInteger('RELAY_TIMEOUT_MS', env.RELAY_TIMEOUT_MS, DEFAULT_TIMEOUT_MS),
    concurrency: positiveInteger('RELAY_CONCURRENCY', env.RELAY_CONCURRENCY, DEFAULT_CONCURRENCY),
  };
}

function sign(secret, body) {
  return `sha256=${crypto.createHmac('sha256', secret).update(body).digest('hex')}`;
}

// The start of a response body, whitespace collapsed; never throws.
async function bodyExcerpt(response) {
  if (!response.body) return '';
  const reader = response.body.getReader();
  const chunks = [];
  let total = 0;
  try {
    while (total < EXCERPT_BYTES) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      total += value.length;
    }
  } catch {
    // a body cut short still gives what arrived
  } finally {
    reader.cancel().catch(() => {});
  }
  const text = Buffer.concat(chunks).subarray(0, EXCERPT_BYTES).toString('utf8');
  return text.replace(/\s+/g, ' ').trim() + (total > EXCERPT_BYTES ? '...' : '');
}

function networkError(err) {
  const cause = err && err.cause;
  if (cause && (cause.code || cause.message))
    return `${cause.code || ''} ${cause.message || ''}`.trim();
  return err && err.message ? err.message : String(err);
}

/** The handler: one POST per event, its answer mapped onto OK / RETRY / REJECT. */
function makeRelay(config) {
  return async function relay(event, attempt) {
    const body = JSON.stringify(event);
    let response;
    try {
      response = await fetch(config.url, {
        method: 'POST',
        headers: {
          'Content-Type': 'application/json',
          'User-Agent': 'pimgate-http-relay/0.1',
          'X-Pimgate-Signature': sign(config.secret, body),
          'X-Pimgate-Timestamp': String(Math.floor(Date.now() / 1000)),
          'X-Pimgate-Event-Id': event.id,
          'X-Pimgate-Sequence': event.sequence,
          'X-Pimgate-Event-Type': event.type,
          'X-Pimgate-Attempt': String(attempt),
        },
        body,
        redirect: 'manual',
        signal: AbortSignal.timeout(config.timeoutMs),
      });
    } catch (err) {
      if (err && (err.name === 'TimeoutError' || err.name === 'AbortError')) {
        return sdk.retry(`no answer within ${config.timeoutMs} ms`);
      }
      return sdk.retry(`network error: ${networkError(err)}`);
    }
    const status = response.status;
    if (status >= 200 && status < 300) {
      if (response.body) await response.body.cancel().catch(() => {});
      return sdk.ok();
    }
    const excerpt = await bodyExcerpt(response);
    const location = response.headers.get('location');
    let detail = `HTTP ${status}`;
    if (location) detail += ` (Location: ${location})`;
    if (excerpt) detail += `: ${excerpt}`;
    if (status === 408 || status === 429 || status >= 500) return sdk.retry(detail);
    return sdk.reject(detail);
  };
}

function main() {
  let config;
  try {
    config = configFromEnv(process.env);
  } catch (err) {
    log.error(err.message);
    process.exit(EXIT_CONFIG);
  }
  log.info(`relaying to ${new URL(config.url).origin} (timeout ${config.timeoutMs} ms)`);
  sdk.run(makeRelay(config), { concurrency: config.concurrency }).catch((err) => {
    log.error(err.message);
    process.exit(1);
  });
}

if (require.main === module) main();

module.exports = { configFromEnv, makeRelay, sign };
