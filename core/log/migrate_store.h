// Copies an embedded (RocksDB) event log into an empty JetStream stream: `pimgate migrate-store`.
// Everything the log keeps goes over: events with their sequences (so plugin cursors stay
// valid: no gap, no duplicate), the dedup ids of those events, resource versions, quarantine
// entries with their ids, metadata (reconciliation watermarks, paused plugins, subscription
// states), plugin cursors and dead letters. See docs/scale-out.md, "Moving an existing store".
#ifndef PIMGATE_CORE_LOG_MIGRATE_STORE_H_
#define PIMGATE_CORE_LOG_MIGRATE_STORE_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "config/config.h"

namespace pimgate {

struct MigrateStoreOptions {
  // The embedded store to copy. pimgate must not run on it (RocksDB's lock refuses a second
  // opener; the error says so).
  std::string rocksdb_path;
  // The store to copy into: store.backend jetstream, its cluster and names, and store.path, the
  // new node's replica directory (new, or the replica of an interrupted copy).
  StoreConfig target;
  // Continue an interrupted copy (the stream holds this source's marker) instead of refusing a
  // non-empty stream. A finished copy may be resumed too: it is verified again.
  bool resume = false;
  // Events per stream record while copying.
  std::size_t batch_events = 500;
  // Progress lines ("events: 5000 of 20000 ..."), at most about one a second, and the summary.
  std::function<void(const std::string&)> progress;
};

struct MigrateStoreCounts {
  uint64_t events = 0;  // in the copy (and in the source)
  uint64_t first_sequence = 0;
  uint64_t last_sequence = 0;
  uint64_t copied_events = 0;  // by this run (a resumed run copies only what was missing)
  uint64_t versions = 0;
  uint64_t quarantine = 0;
  uint64_t meta = 0;
  uint64_t plugins = 0;  // with a cursor or dead letters
  uint64_t dead_letters = 0;
};

// Meta keys the copy writes into the stream: the source it copies (written first) and, once
// verified, the counts.
inline constexpr char kMigrateSourceKey[] = "pimgate.migrate/source";
inline constexpr char kMigrateDoneKey[] = "pimgate.migrate/done";

// Copies, then verifies (every event byte for byte, every version, quarantine entry, metadata
// value, cursor and dead letter count). Resumable and idempotent: a copy killed at any point
// and run again with `resume` ends complete. Errors name what is wrong and what to do.
absl::StatusOr<MigrateStoreCounts> MigrateRocksDbToJetStream(const MigrateStoreOptions& options);

}  // namespace pimgate

#endif  // PIMGATE_CORE_LOG_MIGRATE_STORE_H_
