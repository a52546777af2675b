"""Test helpers for plugin authors: start a plugin process the way pimgate does (unix socket,
PIMGATE_PLUGIN_* environment) and act as pimgate's gRPC client.

    with PluginProcess(["/usr/bin/python3", "plugin.py"], workdir=tmp) as plugin:
        session = plugin.deliver()
        session.send(make_event(1, "product.updated", "uuid-1", {"identifier": "sku"}))
        ack = session.next_ack()
        assert ack.outcome == plugin_pb2.OUTCOME_OK
        assert plugin.terminate() == 0
"""

import datetime
import os
import queue
import signal
import subprocess
import threading
import time

import grpc

from pimgate.v1 import event_pb2, plugin_pb2, plugin_pb2_grpc
from pimgate_sdk._health import health_pb2, health_pb2_grpc

_ENDED = "ended"


def make_event(sequence, type_, resource_id="resource-1", data=None, version_at=None,
               **fields) -> event_pb2.Event:
    """An Event with `kind` taken from `type_`; `version_at` is a datetime or an RFC 3339 text
    (default: now); other Event fields by keyword."""
    event = event_pb2.Event(sequence=sequence, id=f"event-{sequence}", source="test", type=type_,
                            kind=type_.split(".")[0], resource_id=resource_id, **fields)
    if data is not None:
        event.data.update(data)
    if version_at is None:
        version_at = datetime.datetime.now(datetime.timezone.utc)
    if isinstance(version_at, str):
        event.version_at.FromJsonString(version_at)
    else:
        event.version_at.FromDatetime(version_at.astimezone(datetime.timezone.utc)
                                      .replace(tzinfo=None))
    event.received_at.GetCurrentTime()
    return event


class DeliverSession:
    """One Deliver stream. Requests go through a queue; acks arrive on a reader thread."""

    def __init__(self, channel):
        self._requests = queue.Queue()
        self._acks = queue.Queue()
        self.end_code = None  # grpc.StatusCode once the stream has ended
        self._call = plugin_pb2_grpc.EventHandlerStub(channel).Deliver(self._outgoing())
        threading.Thread(target=self._read, daemon=True).start()

    def send(self, event, attempt=1) -> None:
        self._requests.put(plugin_pb2.Delivery(event=event, attempt=attempt))

    def close(self) -> None:
        """Half-closes the stream: the plugin answers what it took, then ends the stream."""
        self._requests.put(None)

    def cancel(self) -> None:
        self._call.cancel()

    def next_ack(self, timeout=10.0) -> plugin_pb2.Ack:
        item = self._acks.get(timeout=timeout)
        if item is _ENDED:
            self._acks.put(_ENDED)
            raise AssertionError(f"stream ended ({self.end_code}) before an ack came")
        return item

    def acks(self, count, timeout=10.0) -> dict:
        """The next `count` acks, by sequence."""
        deadline = time.monotonic() + timeout
        result = {}
        while len(result) < count:
            ack = self.next_ack(max(0.01, deadline - time.monotonic()))
            result[ack.sequence] = ack
        return result

    def wait_end(self, timeout=10.0):
        """Waits for the end of the stream (no ack may come first) and returns its status."""
        item = self._acks.get(timeout=timeout)
        if item is not _ENDED:
            raise AssertionError(f"expected the end of the stream, got an ack: {item}")
        self._acks.put(_ENDED)
        return self.end_code

    def _outgoing(self):
        while True:
            item = self._requests.get()
            if item is None:
                return
            yield item

    def _read(self):
        try:
            for ack in self._call:
                self._acks.put(ack)
            self.end_code = self._call.code()
        except grpc.RpcError as e:
            self.end_code = e.code()
        self._acks.put(_ENDED)


class PluginProcess:
    """A plugin process serving on `<workdir>/<name>.sock`; its stderr goes to
    `<workdir>/<name>.log`. start() returns once it reports SERVING."""

    def __init__(self, argv, workdir, name="test-plugin", env=None, ready_timeout=15.0):
        self.argv = list(argv)
        self.name = name
        self.socket_path = os.path.join(workdir, name + ".sock")
        self.log_path = os.path.join(workdir, name + ".log")
        self.address = "unix:" + self.socket_path
        self._env = dict(os.environ)
        self._env.update(env or {})
        self._env.update(PIMGATE_PLUGIN_ADDRESS=self.address, PIMGATE_PLUGIN_NAME=name)
        self._ready_timeout = ready_timeout
        self.process = None
        self.channel = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.argv, env=self._env, stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=log)
        deadline = time.monotonic() + self._ready_timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"plugin exited with {self.process.returncode}:\n{self.log()}")
            # A fresh channel per attempt: a channel whose first connect failed waits out
            # gRPC's reconnect backoff (seconds) before it tries again.
            if os.path.exists(self.socket_path):
                self.channel = grpc.insecure_channel(
                    self.address, options=[("grpc.use_local_subchannel_pool", 1)])
                try:
                    if self.health() == health_pb2.HealthCheckResponse.SERVING:
                        return self
                except grpc.RpcError:
                    pass
                self.channel.close()
                self.channel = None
            if time.monotonic() > deadline:
                raise RuntimeError(f"plugin not SERVING after {self._ready_timeout}s:\n"
                                   f"{self.log()}")
            time.sleep(0.05)

    def health(self, service="", timeout=2.0) -> int:
        stub = health_pb2_grpc.HealthStub(self.channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout).status

    def deliver(self) -> DeliverSession:
        return DeliverSession(self.channel)

    def terminate(self, timeout=10.0) -> int:
        """SIGTERM, then the exit code (raises subprocess.TimeoutExpired if it hangs)."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def log(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""
