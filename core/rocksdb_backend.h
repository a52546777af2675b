// RocksDB implementation of LogBackend: the embedded default, right for a single machine.
#ifndef PIMGATE_CORE_ROCKSDB_BACKEND_H_
#define PIMGATE_CORE_ROCKSDB_BACKEND_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "core/log_backend.h"

namespace pimgate {

struct RocksDbBackendOptions {
  // Block cache shared by all column families.
  std::size_t block_cache_bytes = 64 << 20;
  // Memtable size per column family before a flush.
  std::size_t write_buffer_bytes = 32 << 20;
};

// Opens (creating if missing) a RocksDB database at `path` with pimgate's column families:
// events (sequence → Event), dedup ((source, id) → sequence), versions (resource → newest
// version), quarantine and meta. Recovery after a crash is RocksDB's WAL replay: every batch
// written with sync=true before the crash is there.
absl::StatusOr<std::unique_ptr<LogBackend>> OpenRocksDbBackend(
    const std::string& path, const RocksDbBackendOptions& options = {});

}  // namespace pimgate

#endif  // PIMGATE_CORE_ROCKSDB_BACKEND_H_
