#!/usr/bin/python3
# Tests of my_handler.py with the SDK's helpers (pimgate_sdk.testing): the handler runs as its
# own process, the way pimgate runs it, and each test delivers events to it as pimgate does.
#   PYTHONPATH=build/python /usr/bin/python3 plugins/samples/python/test_my_handler.py
import os
import tempfile
import unittest

from pimgate.v1 import event_pb2, plugin_pb2
from pimgate_sdk.testing import PluginProcess, make_event

HANDLER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "my_handler.py")
UUID = "0b5e9b1e-2a1c-4a4e-9d55-2f2b3c4d5e6f"
PRODUCT = {"uuid": UUID, "family": "shoes", "updated": "2026-11-20T10:14:59+00:00"}


class MyHandlerTest(unittest.TestCase):
    def setUp(self):
        workdir = tempfile.TemporaryDirectory()
        self.addCleanup(workdir.cleanup)
        self.plugin = PluginProcess(["/usr/bin/python3", HANDLER], workdir=workdir.name).start()
        self.addCleanup(self.plugin.stop)

    def deliver(self, event):
        """Delivers one event and returns the line the handler printed for it."""
        session = self.plugin.deliver()
        session.send(event)
        ack = session.next_ack()
        self.assertEqual(ack.outcome, plugin_pb2.OUTCOME_OK, ack.detail)
        self.assertEqual(self.plugin.terminate(), 0)  # a clean stop flushes everything
        # The log also has the SDK's own lines (on stderr); the handler's starts with the type.
        lines = [line for line in self.plugin.log().splitlines()
                 if line.startswith(event.type + " ")]
        self.assertEqual(len(lines), 1, self.plugin.log())
        return lines[0]

    def test_a_legacy_event_carries_the_product(self):
        line = self.deliver(make_event(1, "product.updated", UUID, PRODUCT,
                                       origin=event_pb2.ORIGIN_EVENTS_API))
        self.assertEqual(line, f"product.updated {UUID} attempt 1: family shoes, "
                               "updated 2026-11-20T10:14:59+00:00")

    def test_an_event_platform_event_carries_ids_only(self):
        line = self.deliver(make_event(2, "product.updated", UUID, {"product": {"uuid": UUID}},
                                       origin=event_pb2.ORIGIN_EVENT_PLATFORM))
        self.assertIn("ids only", line)

    def test_a_hydrated_event_platform_event_carries_the_product(self):
        data = {"product": {"uuid": UUID}, "hydration": "ok", "resource": PRODUCT}
        line = self.deliver(make_event(3, "product.updated", UUID, data,
                                       origin=event_pb2.ORIGIN_EVENT_PLATFORM))
        self.assertIn("family shoes", line)

    def test_a_deletion(self):
        line = self.deliver(make_event(4, "product.deleted", UUID, {"uuid": UUID},
                                       origin=event_pb2.ORIGIN_EVENTS_API))
        self.assertEqual(line, f"product.deleted {UUID} attempt 1: deleted")


if __name__ == "__main__":
    unittest.main()
