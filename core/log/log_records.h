// The records pimgate's event log keeps, as plain values: what EventLog's API returns and what
// the LogBackend interface under it stores. No behaviour here; see event_log.h and log_backend.h.
#ifndef PIMGATE_CORE_LOG_LOG_RECORDS_H_
#define PIMGATE_CORE_LOG_LOG_RECORDS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "pimgate/v1/event.pb.h"
#include "pimgate/v1/store.pb.h"

namespace pimgate {

// Identifies one resource for staleness tracking: (source, kind, resource_id).
struct ResourceKey {
  std::string source;
  std::string kind;
  std::string resource_id;
  bool operator==(const ResourceKey&) const = default;
};

// The newest version the log has seen for a resource, in microseconds since the epoch.
struct ResourceVersion {
  int64_t version_at_us = 0;
  uint64_t sequence = 0;
  // The event that set this version is a deletion (canonical type `<kind>.deleted`). Kept in the
  // version record, not read from the event, because retention may have removed the event:
  // reconciliation must still know the resource is already gone.
  bool deleted = false;
};

// One entry of EventLog::ListVersions (and LogBackend::ListVersions).
struct ResourceVersionEntry {
  std::string resource_id;
  ResourceVersion version;
};

// An event exactly as the backend stores it: its sequence and its serialized v1::Event.
struct StoredEvent {
  uint64_t sequence = 0;
  std::string bytes;
};

// Identifies one event for deduplication: (source, event id).
struct DedupKey {
  std::string source;
  std::string event_id;
  bool operator==(const DedupKey&) const = default;
};

// Everything one group commit writes. A backend must apply it atomically: after a crash either
// all of it is visible or none of it.
struct CommitBatch {
  // Serialized v1::Events (sequence and stale set), sequences increasing. The log serializes
  // each event on the thread that appended it, so a backend only moves bytes.
  std::vector<StoredEvent> events;
  std::vector<std::pair<DedupKey, uint64_t>> dedup;  // event id -> sequence
  std::vector<std::pair<ResourceKey, ResourceVersion>> versions;
  std::vector<v1::QuarantineEntry> quarantine;  // ids already assigned
  // Metadata values (LogBackend::PutMeta's keys) stored in the same atomic write. EventLog sets
  // none; a replicated backend records with them how far its local copy has applied the log.
  std::vector<std::pair<std::string, std::string>> meta;
  uint64_t last_sequence = 0;
  uint64_t last_quarantine_id = 0;
};

// One plugin's dispatch progress, written atomically: the new cursor (every event with a
// sequence <= cursor is done for this plugin: acknowledged, skipped or dead-lettered) and the
// dead letters that became final since the last write.
struct PluginProgress {
  std::optional<uint64_t> cursor;
  std::vector<v1::DeadLetter> dead_letters;
};

// What a backend recovers when it opens.
struct RecoveredState {
  uint64_t last_sequence = 0;
  uint64_t last_quarantine_id = 0;
  uint64_t event_count = 0;  // approximate for large logs
};

}  // namespace pimgate

#endif  // PIMGATE_CORE_LOG_LOG_RECORDS_H_
