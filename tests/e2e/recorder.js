#!/usr/bin/env node
// End-to-end test plugin (Node SDK): records every delivery as a JSON line and answers as
// scripted by the environment (same variables as recorder.py). RECORDER_HANG records the
// delivery first and then never answers: a test sees that the stuck plugin did receive events.
'use strict';
const fs = require('node:fs');
const { run, ok, retry, reject, pluginName } = require('../../sdk/node');

const OUT = process.env.RECORDER_OUT;
const RETRY = process.env.RECORDER_RETRY_RESOURCE || '';
const REJECT = process.env.RECORDER_REJECT_RESOURCE || '';
const DELAY = Number(process.env.RECORDER_DELAY_MS || 0);
const HANG = process.env.RECORDER_HANG === '1';

function record(event, attempt) {
  fs.appendFileSync(OUT, JSON.stringify({
    plugin: pluginName(), sequence: Number(event.sequence), id: event.id, attempt, type: event.type,
    resource_id: event.resource_id, pid: process.pid,
  }) + '\n');
}

run(async (event, attempt) => {
  if (HANG) {
    record(event, attempt);  // received and being handled...
    await new Promise(() => {});  // ...and never answered
  }
  if (DELAY) await new Promise((resolve) => setTimeout(resolve, DELAY));
  record(event, attempt);
  if (REJECT && event.resource_id === REJECT) return reject('scripted reject');
  if (RETRY && event.resource_id === RETRY && attempt === 1) return retry('scripted retry');
  return ok();
}, { concurrency: 4 });
