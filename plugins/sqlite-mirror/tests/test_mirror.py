#!/usr/bin/python3
"""sqlite-mirror tests: the real plugin process, fed over gRPC as pimgate feeds it, checked by
reading its database. Run with PYTHONPATH=<build>/python /usr/bin/python3 test_mirror.py."""

import json
import os
import sqlite3
import sys
import tempfile
import unittest

from pimgate.v1 import event_pb2, plugin_pb2
from pimgate_sdk.testing import PluginProcess, make_event

PLUGIN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "plugin.py")
OK, RETRY, REJECT = plugin_pb2.OUTCOME_OK, plugin_pb2.OUTCOME_RETRY, plugin_pb2.OUTCOME_REJECT
LEGACY = event_pb2.ORIGIN_EVENTS_API
PLATFORM = event_pb2.ORIGIN_EVENT_PLATFORM

T1, T2, T3 = "2024-10-14T13:00:00Z", "2024-10-14T14:00:00Z", "2024-10-14T15:00:00Z"


def product(uuid="p-1", identifier="sku-1", family="shirts", enabled=True, **extra):
    return {"uuid": uuid, "identifier": identifier, "family": family, "enabled": enabled,
            "categories": ["men"], "values": {"name": [{"locale": "en_US", "scope": None,
                                                        "data": "Shirt"}]}, **extra}


class MirrorTest(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory(prefix="sqlite-mirror-")
        self.addCleanup(tmp.cleanup)
        self.db_path = os.path.join(tmp.name, "mirror.db")
        self.plugin = PluginProcess([sys.executable, PLUGIN], tmp.name, name="sqlite-mirror",
                                    env={"SQLITE_MIRROR_PATH": self.db_path,
                                         "SQLITE_MIRROR_BUSY_TIMEOUT_MS": "100"})
        self.addCleanup(self.plugin.stop)
        self.plugin.start()
        self.session = self.plugin.deliver()
        self.sequence = 0

    def deliver(self, type_, resource_id, data, version_at, origin=LEGACY, sequence=None,
                **fields):
        if sequence is None:
            self.sequence += 1
            sequence = self.sequence
        self.session.send(make_event(sequence, type_, resource_id, data, version_at,
                                     origin=origin, **fields))
        ack = self.session.next_ack()
        self.assertEqual(ack.sequence, sequence)
        return ack

    def rows(self, table, **where):
        db = sqlite3.connect(self.db_path)
        db.row_factory = sqlite3.Row
        try:
            clause = " AND ".join(f"{k} = ?" for k in where) or "1"
            return [dict(r) for r in db.execute(f"SELECT * FROM {table} WHERE {clause}",
                                                 list(where.values()))]
        finally:
            db.close()

    def product_row(self, uuid="p-1"):
        rows = self.rows("products", resource_id=uuid)
        return rows[0] if rows else None

    def test_created_then_updated_stores_the_resource(self):
        self.assertEqual(self.deliver("product.created", "p-1", product(), T1).outcome, OK)
        row = self.product_row()
        self.assertEqual((row["source"], row["kind"], row["identifier"], row["family"],
                          row["enabled"]), ("test", "product", "sku-1", "shirts", 1))
        self.assertEqual(json.loads(row["data_json"])["values"]["name"][0]["data"], "Shirt")
        self.assertEqual(row["version_at"], "2024-10-14T13:00:00.000000000Z")
        self.assertEqual(row["data_version_at"], row["version_at"])
        self.assertEqual(row["sequence"], 1)

        self.deliver("product.updated", "p-1", product(family="pants", enabled=False), T2)
        row = self.product_row()
        self.assertEqual((row["family"], row["enabled"], row["sequence"]), ("pants", 0, 2))
        self.assertEqual(row["version_at"], "2024-10-14T14:00:00.000000000Z")

    def test_older_version_never_overwrites_newer(self):
        self.deliver("product.updated", "p-1", product(family="new"), T2)
        ack = self.deliver("product.updated", "p-1", product(family="old"), T1)
        self.assertEqual(ack.outcome, OK)
        row = self.product_row()
        self.assertEqual((row["family"], row["sequence"]), ("new", 1))

    def test_redelivery_is_harmless(self):
        self.deliver("product.updated", "p-1", product(family="a"), T1, sequence=7)
        self.deliver("product.updated", "p-1", product(family="b"), T2, sequence=8)
        ack = self.deliver("product.updated", "p-1", product(family="a"), T1, sequence=7)
        self.assertEqual(ack.outcome, OK)
        again = self.deliver("product.updated", "p-1", product(family="b"), T2, sequence=8)
        self.assertEqual(again.outcome, OK)
        self.assertEqual(self.rows("products")[0]["family"], "b")
        self.assertEqual(len(self.rows("products")), 1)

    def test_stale_flag_is_skipped(self):
        self.deliver("product.updated", "p-1", product(family="a"), T1)
        self.deliver("product.updated", "p-1", product(family="b"), T3, stale=True)
        self.assertEqual(self.product_row()["family"], "a")

    def test_deleted_removes_and_older_events_do_not_resurrect(self):
        self.deliver("product.created", "p-1", product(), T1)
        ack = self.deliver("product.deleted", "p-1", {"uuid": "p-1", "identifier": "sku-1"}, T2)
        self.assertEqual(ack.outcome, OK)
        self.assertIsNone(self.product_row())
        self.assertEqual(len(self.rows("tombstones", resource_id="p-1")), 1)
        # A late update from before the deletion.
        self.deliver("product.updated", "p-1", product(family="late"), T1)
        self.assertIsNone(self.product_row())
        # A newer creation brings it back and clears the tombstone.
        self.deliver("product.created", "p-1", product(family="again"), T3)
        self.assertEqual(self.product_row()["family"], "again")
        self.assertEqual(self.rows("tombstones"), [])

    def test_delta_merges_into_stored_resource(self):
        self.deliver("product.created", "p-1", product(), T1)
        delta = {"product": {"uuid": "p-1", "changes": {
            "enabled": {"previous": True, "new": False},
            "family": {"previous": "shirts", "new": "tops"},
            "categories": {"added": ["sale"], "removed": ["men"]},
            "values": {
                "name": [{"previous": "Shirt", "new": "Top", "locale": "en_US", "scope": None,
                          "type": "pim_catalog_text"}],
                "color": [{"previous": None, "new": "red", "locale": None, "scope": None,
                           "type": "pim_catalog_simpleselect"}]}}},
            "author": {"identifier": "julia", "type": "user"}}
        ack = self.deliver("product.updated.delta", "p-1", delta, T2, origin=PLATFORM)
        self.assertEqual(ack.outcome, OK)
        row = self.product_row()
        self.assertEqual((row["enabled"], row["family"]), (0, "tops"))
        self.assertEqual(row["data_version_at"], "2024-10-14T14:00:00.000000000Z")
        data = json.loads(row["data_json"])
        self.assertEqual(data["categories"], ["sale"])
        self.assertEqual(data["values"]["name"], [{"locale": "en_US", "scope": None,
                                                   "data": "Top"}])
        self.assertEqual(data["values"]["color"], [{"locale": None, "scope": None,
                                                    "data": "red"}])
        self.assertFalse(data["enabled"])

    def test_delta_without_stored_resource_records_what_it_knows(self):
        delta = {"product": {"uuid": "p-2", "identifier": "sku-2",
                             "changes": {"enabled": {"previous": False, "new": True}}}}
        self.deliver("product.updated.delta", "p-2", delta, T1, origin=PLATFORM)
        row = self.product_row("p-2")
        self.assertEqual((row["identifier"], row["enabled"], row["data_json"]),
                         ("sku-2", 1, None))

    def test_event_platform_notification_keeps_stored_data(self):
        self.deliver("product.created", "p-1", product(), T1)
        self.deliver("product.updated", "p-1",
                     {"product": {"uuid": "p-1", "identifier": "sku-1b"}}, T2, origin=PLATFORM)
        row = self.product_row()
        self.assertEqual(row["identifier"], "sku-1b")
        self.assertEqual(row["version_at"], "2024-10-14T14:00:00.000000000Z")
        self.assertEqual(row["data_version_at"], "2024-10-14T13:00:00.000000000Z")
        self.assertEqual(json.loads(row["data_json"])["identifier"], "sku-1")

    def test_product_models(self):
        model = {"code": "tshirt", "family": "clothing", "family_variant": "by_size",
                 "parent": None, "values": {}}
        self.deliver("product_model.created", "tshirt", model, T1,
                     origin=event_pb2.ORIGIN_RECONCILIATION)
        rows = self.rows("product_models", resource_id="tshirt")
        self.assertEqual((rows[0]["code"], rows[0]["family_variant"], rows[0]["kind"]),
                         ("tshirt", "by_size", "product_model"))
        self.deliver("product_model.deleted", "tshirt", {"code": "tshirt"}, T2)
        self.assertEqual(self.rows("product_models"), [])
        self.assertEqual(self.rows("products"), [])

    def test_other_kinds_are_acknowledged_and_ignored(self):
        self.assertEqual(self.deliver("category.created", "men", {"code": "men"}, T1).outcome,
                         OK)
        self.assertEqual(self.deliver("product.became_complete", "p-1", {}, T1).outcome, OK)
        self.assertEqual(self.rows("products"), [])

    def test_missing_resource_id_is_rejected(self):
        self.assertEqual(self.deliver("product.created", "", {"values": {}}, T1).outcome, REJECT)

    def test_database_locked_answers_retry_then_succeeds(self):
        self.deliver("product.created", "p-1", product(), T1)
        blocker = sqlite3.connect(self.db_path, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        ack = self.deliver("product.updated", "p-1", product(family="x"), T2)
        self.assertEqual(ack.outcome, RETRY)
        self.assertIn("sqlite", ack.detail)
        blocker.execute("ROLLBACK")
        blocker.close()
        again = self.deliver("product.updated", "p-1", product(family="x"), T2,
                             sequence=ack.sequence)
        self.assertEqual(again.outcome, OK)
        self.assertEqual(self.product_row()["family"], "x")

    def test_wal_mode_and_clean_stop(self):
        self.deliver("product.created", "p-1", product(), T1)
        db = sqlite3.connect(self.db_path)
        self.assertEqual(db.execute("PRAGMA journal_mode").fetchone()[0], "wal")
        db.close()
        self.assertEqual(self.plugin.terminate(), 0)


if __name__ == "__main__":
    unittest.main()
