#!/usr/bin/env node
// The browser test's plugin (Node SDK): REJECTs the events of resource $REJECT_RESOURCE until the
// file $FIXED_FLAG exists (the operator "fixed" it), accepts every other event, and appends each
// accepted event to $ACCEPTED_OUT as a JSON line.
'use strict';
const fs = require('node:fs');
const { run, ok, reject } = require('../../../sdk/node');

const REJECT = process.env.REJECT_RESOURCE || '';
const FIXED = process.env.FIXED_FLAG || '';
const OUT = process.env.ACCEPTED_OUT;

run(async (event, attempt) => {
  if (REJECT && event.resource_id === REJECT && !fs.existsSync(FIXED)) {
    return reject(`resource ${REJECT} is refused until the plugin is fixed`);
  }
  fs.appendFileSync(OUT, JSON.stringify({
    sequence: Number(event.sequence), id: event.id, resource_id: event.resource_id, attempt,
  }) + '\n');
  return ok();
});
