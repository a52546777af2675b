#!/usr/bin/python3
"""Python SDK tests: a real plugin process (sample_plugin.py) on a unix socket, driven the way
pimgate drives it. Run with PYTHONPATH=<build>/python /usr/bin/python3 test_sdk.py."""

import json
import os
import signal
import socket
import sys
import tempfile
import time
import unittest

import grpc

from pimgate.v1 import plugin_pb2
from pimgate_sdk._health import health_pb2, health_pb2_grpc
from pimgate_sdk.testing import PluginProcess, make_event

SAMPLE_PLUGIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sample_plugin.py")
OK, RETRY, REJECT = plugin_pb2.OUTCOME_OK, plugin_pb2.OUTCOME_RETRY, plugin_pb2.OUTCOME_REJECT
# Hang guards only (generous: these tests must pass on a slow, busy machine), never a measure of
# speed: every wait below ends when its event comes.
HANG_GUARD_S = 60.0
# A grace no test waits out: a plugin that exits within HANG_GUARD_S of SIGTERM did so because
# its handlers were done, not because the grace ran out.
LONG_GRACE_S = 600.0


def wait_for_file(path, timeout=HANG_GUARD_S):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear within {timeout} s")
        time.sleep(0.01)


class SdkTest(unittest.TestCase):
    def start_plugin(self, concurrency=3, grace_seconds=8.0):
        tmp = tempfile.TemporaryDirectory(prefix="pimgate-sdk-")
        self.addCleanup(tmp.cleanup)
        self.tmp = tmp.name
        plugin = PluginProcess([sys.executable, SAMPLE_PLUGIN], tmp.name, name="sdk-test",
                               ready_timeout=HANG_GUARD_S,
                               env={"TEST_CONCURRENCY": str(concurrency),
                                    "TEST_GRACE_SECONDS": str(grace_seconds)})
        self.addCleanup(self._stop_and_report, plugin)
        return plugin.start()

    def _stop_and_report(self, plugin):
        plugin.stop()
        if os.environ.get("PIMGATE_TEST_VERBOSE"):
            sys.stderr.write(f"--- plugin log ---\n{plugin.log()}\n")

    def test_health_reports_serving(self):
        plugin = self.start_plugin()
        self.assertEqual(plugin.health("", timeout=HANG_GUARD_S),
                         health_pb2.HealthCheckResponse.SERVING)
        self.assertEqual(plugin.health("pimgate.v1.EventHandler", timeout=HANG_GUARD_S),
                         health_pb2.HealthCheckResponse.SERVING)
        with self.assertRaises(grpc.RpcError) as caught:
            plugin.health("no.such.Service", timeout=HANG_GUARD_S)
        self.assertEqual(caught.exception.code(), grpc.StatusCode.NOT_FOUND)

    def test_health_watch_follows_shutdown(self):
        plugin = self.start_plugin()
        stub = health_pb2_grpc.HealthStub(plugin.channel)
        watch = stub.Watch(health_pb2.HealthCheckRequest(service="pimgate.v1.EventHandler"))
        self.assertEqual(next(watch).status, health_pb2.HealthCheckResponse.SERVING)
        plugin.process.send_signal(signal.SIGTERM)
        self.assertEqual(next(watch).status, health_pb2.HealthCheckResponse.NOT_SERVING)
        self.assertEqual(plugin.process.wait(timeout=HANG_GUARD_S), 0)

    def test_outcomes(self):
        plugin = self.start_plugin()
        session = plugin.deliver()
        session.send(make_event(1, "test.ok"))
        session.send(make_event(2, "test.retry", data={"detail": "ERP down"}))
        session.send(make_event(3, "test.reject", data={"detail": "unknown family"}))
        session.send(make_event(4, "test.raise", resource_id="r4"))
        session.send(make_event(5, "test.bad_return"))
        acks = session.acks(5, HANG_GUARD_S)
        self.assertEqual(acks[1].outcome, OK)
        self.assertEqual((acks[2].outcome, acks[2].detail), (RETRY, "ERP down"))
        self.assertEqual((acks[3].outcome, acks[3].detail), (REJECT, "unknown family"))
        self.assertEqual((acks[4].outcome, acks[4].detail), (RETRY, "ValueError: boom r4"))
        self.assertEqual(acks[5].outcome, RETRY)
        self.assertIn("handler returned int", acks[5].detail)

    def test_handler_sees_event_attempt_and_name(self):
        plugin = self.start_plugin()
        session = plugin.deliver()
        data = {"identifier": "sku-1", "values": {"name": [{"data": "Shirt", "locale": None}]},
                "count": 3}
        session.send(make_event(42, "test.echo", resource_id="uuid-42", data=data), attempt=3)
        ack = session.next_ack(HANG_GUARD_S)
        self.assertEqual((ack.sequence, ack.outcome), (42, OK))
        echo = json.loads(ack.detail)
        self.assertEqual(echo["attempt"], 3)
        self.assertEqual(echo["name"], "sdk-test")
        self.assertEqual(echo["resource_id"], "uuid-42")
        self.assertEqual(echo["data"], data)

    def test_acks_come_in_completion_order(self):
        # Event 1 cannot finish before the test opens its gate, which it does once event 2's ack
        # has come: the order holds by design, not by a sleep outlasting event 2.
        plugin = self.start_plugin(concurrency=3)
        gate = os.path.join(self.tmp, "gate")
        session = plugin.deliver()
        session.send(make_event(1, "test.ok", data={"gate": gate}))
        session.send(make_event(2, "test.ok"))
        self.assertEqual(session.next_ack(HANG_GUARD_S).sequence, 2)
        open(gate, "w").close()
        self.assertEqual(session.next_ack(HANG_GUARD_S).sequence, 1)

    def test_concurrency_limit_is_honoured(self):
        plugin = self.start_plugin(concurrency=2)
        session = plugin.deliver()
        started = time.monotonic()
        # Each handler first waits until 2 have run at once (so they do, however slowly the
        # plugin is scheduled), then sleeps 200 ms.
        for seq in range(1, 7):
            session.send(make_event(seq, "test.echo", resource_id=f"r{seq}",
                                    data={"await_peak": 2, "sleep_ms": 200}))
        acks = session.acks(6, HANG_GUARD_S)
        elapsed = time.monotonic() - started
        self.assertEqual({ack.outcome for ack in acks.values()}, {OK}, acks)
        peaks = [json.loads(ack.detail)["peak"] for ack in acks.values()]
        self.assertEqual(max(peaks), 2)  # ran in parallel, never more than 2 at once
        # A lower bound, which holds by design: 6 x 200 ms on at most 2 slots.
        self.assertGreaterEqual(elapsed, 0.55)

    def test_stream_ends_when_client_closes(self):
        plugin = self.start_plugin()
        session = plugin.deliver()
        session.send(make_event(1, "test.ok", data={"sleep_ms": 300}))
        session.send(make_event(2, "test.ok"))
        session.close()
        self.assertEqual(set(session.acks(2, HANG_GUARD_S)), {1, 2})
        self.assertEqual(session.wait_end(HANG_GUARD_S), grpc.StatusCode.OK)
        # The plugin keeps serving new streams.
        again = plugin.deliver()
        again.send(make_event(3, "test.ok"))
        self.assertEqual(again.next_ack(HANG_GUARD_S).outcome, OK)

    def test_sigterm_finishes_running_handlers_and_exits_zero(self):
        plugin = self.start_plugin(grace_seconds=LONG_GRACE_S)
        started, gate = os.path.join(self.tmp, "started"), os.path.join(self.tmp, "gate")
        watch = health_pb2_grpc.HealthStub(plugin.channel).Watch(
            health_pb2.HealthCheckRequest(service="pimgate.v1.EventHandler"))
        self.assertEqual(next(watch).status, health_pb2.HealthCheckResponse.SERVING)
        session = plugin.deliver()
        session.send(make_event(1, "test.ok", data={"started": started, "gate": gate}))
        session.send(make_event(2, "test.ok"))
        self.assertEqual(session.next_ack(HANG_GUARD_S).sequence, 2)
        wait_for_file(started)  # handler 1 runs, and cannot finish before the gate opens
        plugin.process.send_signal(signal.SIGTERM)
        # The plugin took the signal (it no longer serves) while handler 1 still ran; only then
        # may handler 1 finish. Its ack still comes, and the exit follows it, long before the
        # grace: the plugin left because its handlers were done.
        self.assertEqual(next(watch).status, health_pb2.HealthCheckResponse.NOT_SERVING)
        self.assertIsNone(plugin.process.poll())
        open(gate, "w").close()
        ack = session.next_ack(HANG_GUARD_S)
        self.assertEqual((ack.sequence, ack.outcome), (1, OK))
        self.assertEqual(plugin.process.wait(timeout=HANG_GUARD_S), 0)
        self.assertEqual(session.wait_end(HANG_GUARD_S), grpc.StatusCode.OK)

    def test_sigterm_gives_up_on_a_stuck_handler_after_the_grace(self):
        plugin = self.start_plugin(grace_seconds=0.5)
        started = os.path.join(self.tmp, "started")
        session = plugin.deliver()
        # Stuck for good: its gate never opens (the plugin's own guard, 120 s, outlasts the
        # test's, so only giving up after the grace lets the plugin exit in time).
        session.send(make_event(1, "test.ok",
                                data={"started": started, "gate": os.path.join(self.tmp, "never")}))
        session.send(make_event(2, "test.ok"))
        self.assertEqual(session.next_ack(HANG_GUARD_S).sequence, 2)
        wait_for_file(started)
        began = time.monotonic()
        self.assertEqual(plugin.terminate(timeout=HANG_GUARD_S), 0)
        self.assertGreaterEqual(time.monotonic() - began, 0.5)  # it did wait for the grace
        self.assertIsNotNone(session.wait_end(HANG_GUARD_S))  # no ack: pimgate will redeliver

    def test_cancelled_stream_does_not_disturb_the_next_one(self):
        plugin = self.start_plugin(concurrency=1)
        started = os.path.join(self.tmp, "started")
        first = plugin.deliver()
        first.send(make_event(1, "test.ok", data={"started": started, "sleep_ms": 300}))
        wait_for_file(started)  # cancelled while its handler runs, not before it was taken
        first.cancel()
        self.assertEqual(first.wait_end(HANG_GUARD_S), grpc.StatusCode.CANCELLED)
        second = plugin.deliver()
        second.send(make_event(2, "test.ok"))
        self.assertEqual(second.next_ack(HANG_GUARD_S).sequence, 2)

    def test_sigterm_when_idle_exits_promptly(self):
        # Promptly: without waiting for a grace it could not outlast the hang guard.
        plugin = self.start_plugin(grace_seconds=LONG_GRACE_S)
        session = plugin.deliver()
        session.send(make_event(1, "test.ok"))
        self.assertEqual(session.next_ack(HANG_GUARD_S).outcome, OK)  # idle from here on
        self.assertEqual(plugin.terminate(timeout=HANG_GUARD_S), 0)

    def test_stale_socket_file_is_replaced(self):
        tmp = tempfile.TemporaryDirectory(prefix="pimgate-sdk-")
        self.addCleanup(tmp.cleanup)
        path = os.path.join(tmp.name, "sdk-test.sock")
        stale = socket.socket(socket.AF_UNIX)
        stale.bind(path)  # closed without unlink: what a killed plugin leaves behind
        stale.close()
        plugin = PluginProcess([sys.executable, SAMPLE_PLUGIN], tmp.name, name="sdk-test",
                               ready_timeout=HANG_GUARD_S)
        self.addCleanup(plugin.stop)
        plugin.start()
        self.assertEqual(plugin.health(timeout=HANG_GUARD_S),
                         health_pb2.HealthCheckResponse.SERVING)


if __name__ == "__main__":
    unittest.main()
