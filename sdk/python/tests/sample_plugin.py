#!/usr/bin/python3
"""Plugin driven by test_sdk.py: event.type picks the behaviour. In event.data, optionally:
  started     a file created as the handler starts (the test waits for it instead of sleeping)
  await_peak  wait until that many handlers have run at once
  gate        wait until this file exists (the test decides when the handler may finish)
  sleep_ms    then sleep this long
Waits give up after HANG_GUARD_S and answer RETRY, so a test fails instead of hanging."""

import json
import os
import sys
import threading
import time

import pimgate_sdk
from pimgate.v1 import plugin_pb2

HANG_GUARD_S = 120
_lock = threading.Condition()
_running = 0
_peak = 0


def _wait_for_file(path):
    deadline = time.monotonic() + HANG_GUARD_S
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def handle(event, attempt):
    global _running, _peak
    with _lock:
        _running += 1
        _peak = max(_peak, _running)
        _lock.notify_all()
    try:
        data = pimgate_sdk.data(event)
        if "started" in data:
            open(data["started"], "w").close()
        if "await_peak" in data:
            with _lock:
                if not _lock.wait_for(lambda: _peak >= data["await_peak"], HANG_GUARD_S):
                    return pimgate_sdk.retry(f"never {data['await_peak']} handlers at once")
        if "gate" in data and not _wait_for_file(data["gate"]):
            return pimgate_sdk.retry("the gate never opened")
        time.sleep(data.get("sleep_ms", 0) / 1000.0)
        if event.type == "test.ok":
            return None
        if event.type == "test.retry":
            return pimgate_sdk.retry(data.get("detail", ""))
        if event.type == "test.reject":
            return pimgate_sdk.reject(data.get("detail", ""))
        if event.type == "test.raise":
            raise ValueError("boom " + event.resource_id)
        if event.type == "test.bad_return":
            return 42
        if event.type == "test.echo":
            with _lock:
                peak = _peak
            return pimgate_sdk.Result(plugin_pb2.OUTCOME_OK, json.dumps({
                "attempt": attempt, "name": pimgate_sdk.plugin_name(), "data": data,
                "peak": peak, "resource_id": event.resource_id}))
        return pimgate_sdk.reject("unknown test type " + event.type)
    finally:
        with _lock:
            _running -= 1


if __name__ == "__main__":
    sys.exit(pimgate_sdk.run(handle, concurrency=int(os.environ.get("TEST_CONCURRENCY", "3")),
                             grace_seconds=float(os.environ.get("TEST_GRACE_SECONDS", "8"))))
