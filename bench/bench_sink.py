#!/usr/bin/python3
"""Python twin of pimgate_bench_sink (bench/bench_sink.cc): acknowledges every delivery at once
and records its end-to-end latency (handler call time - event.received_at). Same environment and
summary: BENCH_SINK_OUT (required), BENCH_SINK_EXPECT, BENCH_SINK_CONCURRENCY. Run with
PYTHONPATH=build/python /usr/bin/python3 bench/bench_sink.py (pimgate sets the address)."""
import json
import os
import sys
import threading
import time

import pimgate_sdk

OUT = os.environ["BENCH_SINK_OUT"]
EXPECT = int(os.environ.get("BENCH_SINK_EXPECT", "0") or 0)
CONCURRENCY = int(os.environ.get("BENCH_SINK_CONCURRENCY", "8") or 8)

_lock = threading.Lock()
_latencies_us = []  # guarded by _lock
_redeliveries = 0
_first_us = 0
_last_us = 0


def _summary():
    with _lock:
        latencies = sorted(_latencies_us)
        first, last, redeliveries = _first_us, _last_us, _redeliveries

    def pct(q):
        if not latencies:
            return 0.0
        rank = max(1, int(q * len(latencies) + 0.5))
        return latencies[min(rank, len(latencies)) - 1] / 1000.0

    return {"events": len(latencies), "redeliveries": redeliveries, "p50_ms": pct(0.50),
            "p99_ms": pct(0.99), "p999_ms": pct(0.999),
            "max_ms": latencies[-1] / 1000.0 if latencies else 0.0,
            "first_us": first, "last_us": last}


def _write_summary():
    tmp = OUT + ".tmp"
    with open(tmp, "w") as out:
        out.write(json.dumps(_summary()) + "\n")
    os.replace(tmp, OUT)


def handle(event, attempt):
    global _first_us, _last_us, _redeliveries
    now_us = time.time_ns() // 1000
    received_us = event.received_at.seconds * 1_000_000 + event.received_at.nanos // 1000
    with _lock:
        _latencies_us.append(max(0, now_us - received_us) if received_us else 0)
        if len(_latencies_us) == 1:
            _first_us = now_us
        _last_us = now_us
        if attempt > 1:
            _redeliveries += 1
        reached = EXPECT > 0 and len(_latencies_us) == EXPECT
    if reached:
        _write_summary()
    return pimgate_sdk.ok()


if __name__ == "__main__":
    code = pimgate_sdk.run(handle, concurrency=CONCURRENCY)
    _write_summary()
    sys.exit(code)
