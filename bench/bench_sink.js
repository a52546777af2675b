#!/usr/bin/env node
// Node twin of pimgate_bench_sink (bench/bench_sink.cc): acknowledges every delivery at once and
// records its end-to-end latency (handler call time - event.received_at; the SDK hands
// received_at over as RFC 3339 text, parsed here to the millisecond). Same environment and
// summary: BENCH_SINK_OUT (required), BENCH_SINK_EXPECT, BENCH_SINK_CONCURRENCY.
'use strict';
const fs = require('node:fs');
const { performance } = require('node:perf_hooks');
const { run, ok } = require('../sdk/node');

const OUT = process.env.BENCH_SINK_OUT;
const EXPECT = Number(process.env.BENCH_SINK_EXPECT || 0);
const CONCURRENCY = Number(process.env.BENCH_SINK_CONCURRENCY || 8);
const latenciesUs = [];
let redeliveries = 0;
let firstUs = 0;
let lastUs = 0;

function nowUs() {
  return Math.round((performance.timeOrigin + performance.now()) * 1000);
}

function writeSummary() {
  const sorted = Float64Array.from(latenciesUs).sort();
  const pct = (q) => {
    if (!sorted.length) return 0;
    const rank = Math.max(1, Math.round(q * sorted.length));
    return sorted[Math.min(rank, sorted.length) - 1] / 1000;
  };
  const summary = {
    events: sorted.length, redeliveries, p50_ms: pct(0.5), p99_ms: pct(0.99), p999_ms: pct(0.999),
    max_ms: sorted.length ? sorted[sorted.length - 1] / 1000 : 0, first_us: firstUs,
    last_us: lastUs,
  };
  fs.writeFileSync(`${OUT}.tmp`, `${JSON.stringify(summary)}\n`);
  fs.renameSync(`${OUT}.tmp`, OUT);
}

// The SDK ends the process after draining on SIGTERM: the summary is written on the way out.
process.on('exit', writeSummary);

run((event, attempt) => {
  const now = nowUs();
  const received = event.received_at ? Date.parse(event.received_at) * 1000 : 0;
  latenciesUs.push(received ? Math.max(0, now - received) : 0);
  if (latenciesUs.length === 1) firstUs = now;
  lastUs = now;
  if (attempt > 1) redeliveries += 1;
  if (EXPECT > 0 && latenciesUs.length === EXPECT) writeSummary();
  return ok();
}, { concurrency: CONCURRENCY });
