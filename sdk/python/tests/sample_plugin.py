#!/usr/bin/python3
"""Plugin driven by test_sdk.py: event.type picks the behaviour, data.sleep_ms delays it."""

import json
import os
import sys
import threading
import time

import pimgate_sdk
from pimgate.v1 import plugin_pb2

_lock = threading.Lock()
_running = 0
_peak = 0


def handle(event, attempt):
    global _running, _peak
    with _lock:
        _running += 1
        _peak = max(_peak, _running)
    try:
        data = pimgate_sdk.data(event)
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
