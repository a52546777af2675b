#!/usr/bin/python3
"""End-to-end test plugin (Python SDK): records every delivery as a JSON line and answers as
scripted by the environment:
  RECORDER_OUT              file to append {"plugin","sequence","attempt","type","resource_id","pid"}
  RECORDER_RETRY_RESOURCE   answer RETRY to the first attempt of events of this resource
  RECORDER_REJECT_RESOURCE  answer REJECT to events of this resource
  RECORDER_DELAY_MS         sleep this long in each handler call
  RECORDER_HANG             "1": record the delivery, then never answer (a stuck handler that
                            did receive its events)
"""
import json
import os
import sys
import threading
import time

import pimgate_sdk

OUT = os.environ["RECORDER_OUT"]
RETRY = os.environ.get("RECORDER_RETRY_RESOURCE", "")
REJECT = os.environ.get("RECORDER_REJECT_RESOURCE", "")
DELAY = int(os.environ.get("RECORDER_DELAY_MS", "0")) / 1000.0
HANG = os.environ.get("RECORDER_HANG") == "1"
_lock = threading.Lock()


def record(event, attempt):
    line = json.dumps({"plugin": pimgate_sdk.plugin_name(), "sequence": event.sequence, "id": event.id,
                       "attempt": attempt, "type": event.type, "resource_id": event.resource_id,
                       "pid": os.getpid()})
    with _lock, open(OUT, "a") as out:
        out.write(line + "\n")


def handle(event, attempt):
    if HANG:
        record(event, attempt)
        threading.Event().wait()
    if DELAY:
        time.sleep(DELAY)
    record(event, attempt)
    if REJECT and event.resource_id == REJECT:
        return pimgate_sdk.reject("scripted reject")
    if RETRY and event.resource_id == RETRY and attempt == 1:
        return pimgate_sdk.retry("scripted retry")
    return pimgate_sdk.ok()


if __name__ == "__main__":
    sys.exit(pimgate_sdk.run(handle, concurrency=4))
