// RocksDB implementation of LogBackend: the embedded default, right for a single machine.
#ifndef PIMGATE_CORE_LOG_ROCKSDB_BACKEND_H_
#define PIMGATE_CORE_LOG_ROCKSDB_BACKEND_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "core/log/log_backend.h"

namespace rocksdb {
class FileSystem;  // rocksdb/file_system.h; only tests name one (see file_system below)
}  // namespace rocksdb

namespace pimgate {

struct RocksDbBackendOptions {
  // Block cache shared by all column families.
  std::size_t block_cache_bytes = 64 << 20;
  // Memtable size per column family before a flush.
  std::size_t write_buffer_bytes = 32 << 20;
  // The file system RocksDB does all its file I/O through. nullptr (the default, and all that
  // pimgate itself uses) is the operating system's. Tests substitute a wrapper of the OS file
  // system that can simulate a power cut (tests/testing/power_cut_file_system.h); it must see
  // the same directory tree as the OS, because the store directory itself is created with
  // std::filesystem before RocksDB opens it. An open store keeps the file system alive.
  std::shared_ptr<rocksdb::FileSystem> file_system;
};

// Opens (creating if missing) a RocksDB database at `path` with pimgate's column families:
// events (sequence → Event), dedup ((source, id) → sequence), versions (resource → newest
// version), quarantine and meta. Recovery after a crash is RocksDB's WAL replay: every batch
// written with sync=true before the crash is there.
absl::StatusOr<std::unique_ptr<LogBackend>> OpenRocksDbBackend(
    const std::string& path, const RocksDbBackendOptions& options = {});

// What an embedded store holds that LogBackend reads only by key: every resource version,
// metadata value and plugin. For `pimgate migrate-store` (core/log/migrate_store.h), which
// copies a whole store.
class RocksDbStoreListing {
 public:
  virtual ~RocksDbStoreListing() = default;
  // Calls `visit` with every resource version, in key order (source, kind, resource id); stops
  // at its first error and returns it.
  virtual absl::Status ForEachVersion(
      const std::function<absl::Status(const ResourceKey&, const ResourceVersion&)>& visit) = 0;
  // Every metadata value (LogBackend::PutMeta's keys), in key order.
  virtual absl::StatusOr<std::vector<std::pair<std::string, std::string>>> AllMeta() = 0;
  // Every plugin with a cursor or dead letters, sorted.
  virtual absl::StatusOr<std::vector<std::string>> Plugins() = 0;
};

// The listing of `backend` when OpenRocksDbBackend opened it, else nullptr.
RocksDbStoreListing* RocksDbListingOf(LogBackend& backend);

// Builds a new store from events that are already sequenced, without the write path: table
// files are written sorted, straight to disk, and ingested at the bottom level. No WAL, no
// memtable, no compaction: a store of millions of events takes about as long as writing its
// bytes once, and is left fully compacted, as an old store would be. For building large stores
// (the backlog benchmark, bench/backlog.cc), never for a store pimgate has open.
//
// The caller decides dedup and staleness (it knows its events): it adds each event, the ids the
// dedup index must know, and the newest version of each resource. Nothing is visible until
// Finish returns OK; a failed or abandoned load leaves no store behind at `path`.
class RocksDbBulkLoader {
 public:
  // `path` must not exist yet, or be an empty directory.
  static absl::StatusOr<std::unique_ptr<RocksDbBulkLoader>> Create(
      const std::string& path, const RocksDbBackendOptions& options = {});
  virtual ~RocksDbBulkLoader() = default;

  // `serialized_event` is a v1::Event (with that sequence) as ReadStoredEvents returns it.
  // Sequences must increase from one call to the next.
  virtual absl::Status AddEvent(uint64_t sequence, std::string_view serialized_event) = 0;
  // The dedup index entry of an added event. Any order; a key added twice is an error.
  virtual void AddEventId(const DedupKey& key, uint64_t sequence) = 0;
  // The newest version of a resource; a later call for the same resource replaces it.
  virtual void SetVersion(const ResourceKey& key, const ResourceVersion& version) = 0;
  // Writes the dedup and version tables, ingests every table and records the last sequence.
  virtual absl::Status Finish() = 0;
};

// A consistent copy of the (closed) store at `from` in `to`, a new directory: table files are
// hard links, so it takes a second whatever the size, and `to` can be written to without
// touching `from`. The store is opened with pimgate's own options, so nothing it might write
// while open (a flush, a compaction) lacks the filters pimgate relies on.
absl::Status CheckpointRocksDbStore(const std::string& from, const std::string& to,
                                    const RocksDbBackendOptions& options = {});

}  // namespace pimgate

#endif  // PIMGATE_CORE_LOG_ROCKSDB_BACKEND_H_
