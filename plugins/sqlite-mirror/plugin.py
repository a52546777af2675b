#!/usr/bin/python3
"""sqlite-mirror: a pimgate plugin that keeps a SQLite copy of the PIM's products and product
models, for reporting, joins with other data, or a local read model.

Tables (one row per resource; `source` is the pimgate source name, so several PIMs can feed one
database):
  products(source, resource_id, kind, identifier, family, parent, enabled, data_json,
           data_version_at, version_at, sequence, event_id, updated_at)
  product_models(source, resource_id, kind, code, family, family_variant, parent, data_json,
                 data_version_at, version_at, sequence, event_id, updated_at)
  tombstones(source, kind, resource_id, version_at, sequence, deleted_at)

What each event does:
  *.created / *.updated    Upsert. From the Events API (legacy) and from pimgate's reconciler
                           the event carries the whole resource: it becomes data_json and the
                           columns. Event Platform events carry only ids: the columns they name
                           are updated, data_json is kept.
  *.updated.delta          Merged into the row: enabled, family, family_variant, parent,
                           categories (added/removed) and attribute values (by locale and scope);
                           other kinds of change only advance version_at.
  *.deleted                Deletes the row and leaves a tombstone, so that a late, older
                           created/updated cannot bring the resource back.
  anything else            Not mirrored (other kinds, became_complete, ...): acknowledged.

Ordering: a row changes only when the event's (version_at, sequence) is not older than the
row's or the tombstone's, so an older version never overwrites a newer one and a redelivered
event changes nothing. Events that pimgate flags `stale` are skipped.

Durability: each event is applied in one transaction, committed with WAL and synchronous=FULL
(on disk when COMMIT returns) before the plugin acks OK; a SQLite error rolls back and answers
RETRY, so pimgate delivers the event again later.

Timestamps (version_at, data_version_at, updated_at, deleted_at) are UTC RFC 3339 texts with
nanoseconds (2024-10-14T13:01:21.000000000Z): text order is time order. data_version_at is
the version that data_json reflects (NULL: no full resource seen yet).

Environment:
  SQLITE_MIRROR_PATH                         database file (default ./mirror.db)
  SQLITE_MIRROR_BUSY_TIMEOUT_MS              wait for a lock held elsewhere (default 5000)
  PIMGATE_PLUGIN_ADDRESS, PIMGATE_PLUGIN_NAME set by pimgate

  sqlite3 mirror.db "SELECT identifier, family, enabled FROM products WHERE source = 'prod'"
"""

import datetime
import json
import logging
import os
import sqlite3
import sys
import threading

import pimgate_sdk
from pimgate.v1 import event_pb2

_log = logging.getLogger("sqlite_mirror")

DEFAULT_PATH = "./mirror.db"
# How long a write waits for another connection's lock (an operator's sqlite3 shell, say)
# before the event is answered RETRY ($SQLITE_MIRROR_BUSY_TIMEOUT_MS).
DEFAULT_BUSY_TIMEOUT_MS = 5000
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS products (
  source TEXT NOT NULL,
  resource_id TEXT NOT NULL,
  kind TEXT NOT NULL DEFAULT 'product',
  identifier TEXT,
  family TEXT,
  parent TEXT,
  enabled INTEGER,
  data_json TEXT,
  data_version_at TEXT,
  version_at TEXT NOT NULL,
  sequence INTEGER NOT NULL,
  event_id TEXT,
  updated_at TEXT NOT NULL,
  PRIMARY KEY (source, resource_id)
);
CREATE INDEX IF NOT EXISTS products_identifier ON products(source, identifier);
CREATE TABLE IF NOT EXISTS product_models (
  source TEXT NOT NULL,
  resource_id TEXT NOT NULL,
  kind TEXT NOT NULL DEFAULT 'product_model',
  code TEXT,
  family TEXT,
  family_variant TEXT,
  parent TEXT,
  data_json TEXT,
  data_version_at TEXT,
  version_at TEXT NOT NULL,
  sequence INTEGER NOT NULL,
  event_id TEXT,
  updated_at TEXT NOT NULL,
  PRIMARY KEY (source, resource_id)
);
CREATE TABLE IF NOT EXISTS tombstones (
  source TEXT NOT NULL,
  kind TEXT NOT NULL,
  resource_id TEXT NOT NULL,
  version_at TEXT NOT NULL,
  sequence INTEGER NOT NULL,
  deleted_at TEXT NOT NULL,
  PRIMARY KEY (source, kind, resource_id)
);
"""


class _Table:
    """How one kind of resource maps onto its table."""

    def __init__(self, name, kind, columns):
        self.name = name
        self.kind = kind
        self.columns = columns  # resource field -> column, in column order

    def columns_from(self, resource: dict) -> dict:
        values = {}
        for field, column in self.columns.items():
            if field in resource:
                value = resource[field]
                if isinstance(value, bool):
                    value = int(value)
                elif isinstance(value, (dict, list)):
                    value = json.dumps(value, sort_keys=True)
                values[column] = value
        return values


_TABLES = {
    "product": _Table("products", "product", {
        "identifier": "identifier", "family": "family", "parent": "parent", "enabled": "enabled"}),
    "product_model": _Table("product_models", "product_model", {
        "code": "code", "family": "family", "family_variant": "family_variant",
        "parent": "parent"}),
}
# Changes of a delta that map onto the resource's top-level fields.
_SCALAR_CHANGES = ("enabled", "family", "family_variant", "parent")
# Origins whose `data` is the whole resource (not a notification naming it).
_FULL_RESOURCE_ORIGINS = (event_pb2.ORIGIN_EVENTS_API, event_pb2.ORIGIN_RECONCILIATION)


def _format_time(seconds: int, nanos: int) -> str:
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}Z"


def _now() -> str:
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S") + f".{now.microsecond * 1000:09d}Z"


def _version(event) -> str:
    """The event's ordering key: version_at, else when pimgate received it, else now."""
    for field in ("version_at", "received_at"):
        if event.HasField(field):
            ts = getattr(event, field)
            return _format_time(ts.seconds, ts.nanos)
    return _now()


def _notification_object(data: dict, kind: str) -> dict:
    """The resource object of an Event Platform event: data.<kind> (data.product for models,
    as Akeneo's field tables name it)."""
    obj = data.get(kind)
    if obj is None and kind == "product_model":
        obj = data.get("product")
    return obj if isinstance(obj, dict) else {}


def _merge_values(values: dict, changes: dict) -> None:
    """Applies a delta's `values` changes ({attr: [{locale, scope, new, ...}]}) to a resource's
    values ({attr: [{locale, scope, data}]}); a null `new` removes the value."""
    for attribute, attribute_changes in changes.items():
        if not isinstance(attribute_changes, list):
            continue
        entries = values.setdefault(attribute, [])
        for change in attribute_changes:
            if not isinstance(change, dict):
                continue
            locale, scope = change.get("locale"), change.get("scope")
            match = next((e for e in entries
                          if e.get("locale") == locale and e.get("scope") == scope), None)
            if change.get("new") is None:
                if match is not None:
                    entries.remove(match)
            elif match is not None:
                match["data"] = change["new"]
            else:
                entries.append({"locale": locale, "scope": scope, "data": change["new"]})
        if not entries:
            del values[attribute]


def _merge_delta(resource: dict, changes: dict) -> None:
    for field in _SCALAR_CHANGES:
        change = changes.get(field)
        if isinstance(change, dict) and "new" in change:
            resource[field] = change["new"]
    categories = changes.get("categories")
    if isinstance(categories, dict):
        current = [c for c in resource.get("categories", [])
                   if c not in set(categories.get("removed") or [])]
        current += [c for c in categories.get("added") or [] if c not in current]
        resource["categories"] = current
    if isinstance(changes.get("values"), dict):
        _merge_values(resource.setdefault("values", {}), changes["values"])


class Mirror:
    """The database and the rules above. apply() is thread-safe (one writer at a time)."""

    def __init__(self, path: str, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS):
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            _log.warning("journal_mode is %s, not wal (%s)", mode, path)
        self._db.execute("PRAGMA synchronous = FULL")
        self._db.executescript(_SCHEMA)
        self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def apply(self, event) -> str:
        """Applies one event in one committed transaction; returns what it did."""
        table = _TABLES.get(event.kind)
        if table is None:
            return "not mirrored"
        action = event.type[len(event.kind) + 1:]
        if action not in ("created", "updated", "updated.delta", "deleted"):
            return "not mirrored"
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                done = self._apply(table, action, event)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return done

    def _apply(self, table: _Table, action: str, event) -> str:
        version = _version(event)
        if self._is_older(table, event, version):
            return "older than the mirror: skipped"
        if action == "deleted":
            return self._delete(table, event, version)
        data = pimgate_sdk.data(event)
        if action == "updated.delta":
            return self._merge(table, event, version, _notification_object(data, table.kind))
        if event.origin in _FULL_RESOURCE_ORIGINS:
            return self._upsert(table, event, version, data, full=True)
        return self._upsert(table, event, version, _notification_object(data, table.kind),
                            full=False)

    def _is_older(self, table: _Table, event, version: str) -> bool:
        key = (event.source, event.resource_id)
        priors = [
            self._db.execute(f"SELECT version_at, sequence FROM {table.name} "
                             "WHERE source = ? AND resource_id = ?", key).fetchone(),
            self._db.execute("SELECT version_at, sequence FROM tombstones "
                             "WHERE source = ? AND kind = ? AND resource_id = ?",
                             (event.source, table.kind, event.resource_id)).fetchone(),
        ]
        return any(prior is not None and (version, event.sequence) < tuple(prior)
                   for prior in priors)

    def _row(self, table: _Table, event):
        cursor = self._db.execute(
            f"SELECT * FROM {table.name} WHERE source = ? AND resource_id = ?",
            (event.source, event.resource_id))
        row = cursor.fetchone()
        if row is None:
            return None
        return dict(zip((d[0] for d in cursor.description), row))

    def _write(self, table: _Table, event, version: str, columns: dict) -> None:
        """Inserts or replaces the row with `columns` on top of the event's bookkeeping."""
        columns = dict(columns)
        columns.update(source=event.source, resource_id=event.resource_id, kind=table.kind,
                       version_at=version, sequence=event.sequence, event_id=event.id,
                       updated_at=_now())
        names = list(columns)
        self._db.execute(
            f"INSERT INTO {table.name} ({', '.join(names)}) "
            f"VALUES ({', '.join('?' for _ in names)}) "
            f"ON CONFLICT (source, resource_id) DO UPDATE SET "
            + ", ".join(f"{n} = excluded.{n}" for n in names if n not in ("source", "resource_id")),
            [columns[n] for n in names])
        self._db.execute("DELETE FROM tombstones WHERE source = ? AND kind = ? AND resource_id = ?",
                         (event.source, table.kind, event.resource_id))

    def _upsert(self, table: _Table, event, version: str, resource: dict, full: bool) -> str:
        columns = table.columns_from(resource)
        if full:
            # Every mapped column comes from the resource, a missing field meaning NULL.
            columns = {column: columns.get(column) for column in table.columns.values()}
            columns.update(data_json=json.dumps(resource, sort_keys=True),
                           data_version_at=version)
        self._write(table, event, version, columns)
        return "stored" if full else "recorded"

    def _merge(self, table: _Table, event, version: str, delta: dict) -> str:
        changes = delta.get("changes") if isinstance(delta.get("changes"), dict) else {}
        row = self._row(table, event)
        known = {k: v for k, v in delta.items() if k not in ("changes", "updated_at")}
        merged = {field: change["new"] for field, change in changes.items()
                  if field in _SCALAR_CHANGES and isinstance(change, dict) and "new" in change}
        columns = table.columns_from({**known, **merged})
        if row is not None and row["data_json"] is not None:
            resource = json.loads(row["data_json"])
            _merge_delta(resource, changes)
            columns = table.columns_from(resource) | columns
            columns.update(data_json=json.dumps(resource, sort_keys=True), data_version_at=version)
            self._write(table, event, version, columns)
            return "merged"
        self._write(table, event, version, columns)
        return "recorded"

    def _delete(self, table: _Table, event, version: str) -> str:
        key = (event.source, event.resource_id)
        self._db.execute(f"DELETE FROM {table.name} WHERE source = ? AND resource_id = ?", key)
        self._db.execute(
            "INSERT INTO tombstones (source, kind, resource_id, version_at, sequence, deleted_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (source, kind, resource_id) DO UPDATE SET "
            "version_at = excluded.version_at, sequence = excluded.sequence, "
            "deleted_at = excluded.deleted_at",
            (event.source, table.kind, event.resource_id, version, event.sequence, _now()))
        return "deleted"


def make_handler(mirror: Mirror):
    def handle(event, attempt):
        if event.kind not in _TABLES:
            return pimgate_sdk.ok()
        if not event.resource_id:
            return pimgate_sdk.reject(f"{event.type} without a resource_id: no row to key")
        if event.stale:
            _log.debug("sequence %d: stale, skipped", event.sequence)
            return pimgate_sdk.ok()
        try:
            done = mirror.apply(event)
        except sqlite3.Error as e:
            _log.warning("sequence %d (%s %s): %s", event.sequence, event.type,
                         event.resource_id, e)
            return pimgate_sdk.retry(f"sqlite: {e}")
        _log.debug("sequence %d (%s %s): %s", event.sequence, event.type, event.resource_id,
                   done)
        return pimgate_sdk.ok()

    return handle


def main() -> int:
    pimgate_sdk.configure_logging()
    path = os.environ.get("SQLITE_MIRROR_PATH") or DEFAULT_PATH
    busy_timeout_ms = int(os.environ.get("SQLITE_MIRROR_BUSY_TIMEOUT_MS")
                          or DEFAULT_BUSY_TIMEOUT_MS)
    mirror = Mirror(path, busy_timeout_ms)
    _log.info("mirroring into %s", os.path.abspath(path))
    try:
        # One handler at a time: SQLite has one writer, and the lock would serialise them anyway.
        return pimgate_sdk.run(make_handler(mirror), concurrency=1)
    finally:
        mirror.close()


if __name__ == "__main__":
    sys.exit(main())
