// RocksDB implementation of LogBackend. Every RocksDB type stays in this file; the rest of pimgate
// sees LogBackend and absl::Status only (the header declares rocksdb::FileSystem, which only
// tests ever supply: RocksDbBackendOptions::file_system).
//
// On-disk layout (one column family each; integers are 8-byte big-endian so that RocksDB's
// bytewise key order is numeric order):
//   events     sequence                            -> serialized v1::Event
//   dedup      source '\0' event_id                -> sequence
//   versions   source '\0' kind '\0' resource_id   -> version_at_us (8, BE) + sequence (8, BE)
//                                                     [+ flags (1): bit 0 = deleted; absent = 0]
//   quarantine id                                  -> serialized v1::QuarantineEntry
//   meta       "last_sequence" | "last_quarantine_id" -> value
//              "kv/" key                           -> value (LogBackend::PutMeta)
//              "handed_out/" plugin                -> sequence (LogBackend::WriteHandedOut)
//   cursors    plugin                              -> sequence (dispatch cursor)
//   dead_letters plugin '\0' sequence (8, BE)     -> serialized v1::DeadLetter
// Source names come from configuration and event ids, kinds and resource ids from Akeneo; none of
// them contains '\0', so the separator keeps composite keys unambiguous.
//
// Retention removes events and quarantine entries from the front of their key range with one
// DeleteRange per trim rather than a tombstone per key: readers that start at the front (the
// dispatcher catching up, Recover, the admin API) then skip one range tombstone instead of
// wading through millions of point tombstones until compaction drops them. Space comes back
// once enough has been trimmed (kReclaimAfterBytes): CompactRange from the start of the family to
// the end of the trimmed range drops the covered keys and the files that held them. Without it,
// level compaction could leave the deleted front of a log (whose new keys all land at the back)
// on disk for a long time. (DeleteFilesInRange would be cheaper but is unsafe here: dropping a
// file that holds a range tombstone would resurrect the keys it covers in files that straddle the
// range's end.) Dedup entries have random keys and get point deletes; the steady flow of new
// dedup entries compacts them away.
#include "core/log/rocksdb_backend.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "google/protobuf/timestamp.pb.h"
#include "rocksdb/cache.h"
#include "rocksdb/db.h"
#include "rocksdb/env.h"
#include "rocksdb/file_system.h"
#include "rocksdb/filter_policy.h"
#include "rocksdb/iterator.h"
#include "rocksdb/options.h"
#include "rocksdb/slice.h"
#include "rocksdb/sst_file_writer.h"
#include "rocksdb/status.h"
#include "rocksdb/table.h"
#include "rocksdb/transaction_log.h"
#include "rocksdb/utilities/checkpoint.h"
#include "rocksdb/write_batch.h"
#include "spdlog/spdlog.h"

namespace pimgate {
namespace {

// Column family names. "default" must be opened too (RocksDB requires it) but holds nothing.
constexpr char kEventsFamily[] = "events";
constexpr char kDedupFamily[] = "dedup";
constexpr char kVersionsFamily[] = "versions";
constexpr char kQuarantineFamily[] = "quarantine";
constexpr char kMetaFamily[] = "meta";
constexpr char kCursorsFamily[] = "cursors";
constexpr char kDeadLettersFamily[] = "dead_letters";

constexpr char kLastSequenceKey[] = "last_sequence";
constexpr char kLastQuarantineIdKey[] = "last_quarantine_id";
// PutMeta keys live under this prefix, apart from the backend's own keys above.
constexpr char kUserMetaPrefix[] = "kv/";
// The dispatcher's handed-out marks (LogBackend::WriteHandedOut), by cursor key.
constexpr char kHandedOutPrefix[] = "handed_out/";

// Bits per key for the bloom filters on the point-lookup families (dedup, versions): ~1% false
// positives, so a lookup for an unknown key (the common case for a new event) rarely touches
// a data block.
constexpr double kBloomBitsPerKey = 10.0;

// Share of each lookup family's write buffer given to the memtable's bloom filter (about 10 bits
// per key for dedup entries).
constexpr double kMemtableBloomRatio = 0.05;

constexpr std::size_t kU64Bytes = 8;
constexpr std::size_t kVersionValueBytes = 2 * kU64Bytes;
// A version value with a trailing flags byte (written only when a flag is set, so records from
// before the flag existed, and every non-deleted one, keep the 16-byte form).
constexpr std::size_t kVersionWithFlagsBytes = kVersionValueBytes + 1;
constexpr unsigned char kVersionDeletedFlag = 0x01;

// Event bytes trimmed since the last reclaim that trigger the next one (see the file comment).
// Small enough that a tiny store gives its space back, large enough that the boundary files
// CompactRange rewrites are a small fraction of what it frees.
constexpr uint64_t kReclaimAfterBytes = 8 << 20;

// The WAL may hold this many times write_buffer_bytes before RocksDB flushes the column families
// that pin its oldest file. meta and cursors are written with every commit but rarely fill a
// memtable; without this bound they would keep every WAL file alive up to RocksDB's default of
// 4 x the total of all memtables (2 GiB with the default options), whatever retention trims.
constexpr uint64_t kMaxWalPerWriteBuffer = 4;

// Range of google.protobuf.Timestamp; clamping keeps the conversion to microseconds exact.
constexpr int64_t kMinTimestampSeconds = -62135596800;
constexpr int64_t kMaxTimestampSeconds = 253402300799;

int64_t ToMicros(const google::protobuf::Timestamp& ts) {
  const int64_t seconds = std::clamp(ts.seconds(), kMinTimestampSeconds, kMaxTimestampSeconds);
  return seconds * 1'000'000 + ts.nanos() / 1'000;
}

// The one place where rocksdb::Status becomes absl::Status. I/O trouble (including a full disk)
// is Unavailable: the request was not stored and may be retried once the disk recovers.
absl::Status ToStatus(const rocksdb::Status& s, absl::string_view what) {
  if (s.ok()) return absl::OkStatus();
  std::string message = absl::StrCat("rocksdb ", what, ": ", s.ToString());
  switch (s.code()) {
    case rocksdb::Status::kNotFound:
      return absl::NotFoundError(message);
    case rocksdb::Status::kCorruption:
      return absl::DataLossError(message);
    case rocksdb::Status::kNotSupported:
      return absl::UnimplementedError(message);
    case rocksdb::Status::kInvalidArgument:
      return absl::InvalidArgumentError(message);
    case rocksdb::Status::kIOError:  // also covers IsNoSpace() and IsPathNotFound()
    case rocksdb::Status::kIncomplete:
    case rocksdb::Status::kShutdownInProgress:
    case rocksdb::Status::kBusy:
    case rocksdb::Status::kTryAgain:
      return absl::UnavailableError(message);
    case rocksdb::Status::kTimedOut:
      return absl::DeadlineExceededError(message);
    case rocksdb::Status::kAborted:
      return absl::AbortedError(message);
    default:
      return absl::InternalError(message);
  }
}

void AppendU64(std::string& out, uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8) out.push_back(static_cast<char>(v >> shift));
}

std::string EncodeU64(uint64_t v) {
  std::string out;
  out.reserve(kU64Bytes);
  AppendU64(out, v);
  return out;
}

uint64_t DecodeU64(const char* p) {
  uint64_t v = 0;
  for (std::size_t i = 0; i < kU64Bytes; ++i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

absl::StatusOr<uint64_t> DecodeU64Value(const rocksdb::Slice& value, absl::string_view what) {
  if (value.size() != kU64Bytes) {
    return absl::DataLossError(
        absl::StrCat("rocksdb ", what, ": expected 8 bytes, found ", value.size()));
  }
  return DecodeU64(value.data());
}

// Composite keys: the parts joined by '\0'.
std::string JoinKey(std::initializer_list<std::string_view> parts) {
  std::string key;
  bool first = true;
  for (std::string_view part : parts) {
    if (!first) key.push_back('\0');
    key.append(part);
    first = false;
  }
  return key;
}

std::string DedupKeyBytes(const DedupKey& key) { return JoinKey({key.source, key.event_id}); }

std::string ResourceKeyBytes(const ResourceKey& key) {
  return JoinKey({key.source, key.kind, key.resource_id});
}

std::string EncodeVersion(const ResourceVersion& v) {
  std::string out;
  out.reserve(kVersionWithFlagsBytes);
  AppendU64(out, static_cast<uint64_t>(v.version_at_us));
  AppendU64(out, v.sequence);
  if (v.deleted) out.push_back(static_cast<char>(kVersionDeletedFlag));
  return out;
}

absl::StatusOr<ResourceVersion> DecodeVersion(const rocksdb::Slice& value) {
  if (value.size() != kVersionValueBytes && value.size() != kVersionWithFlagsBytes) {
    return absl::DataLossError(
        absl::StrCat("rocksdb version value: expected 16 or 17 bytes, found ", value.size()));
  }
  ResourceVersion version;
  version.version_at_us = static_cast<int64_t>(DecodeU64(value.data()));
  version.sequence = DecodeU64(value.data() + kU64Bytes);
  version.deleted = value.size() == kVersionWithFlagsBytes &&
                    (static_cast<unsigned char>(value[kVersionValueBytes]) & kVersionDeletedFlag);
  return version;
}

// RocksDB's own log ("LOG" in the store directory by default) sent to pimgate's log instead: one
// place for operators, and no file write that can fail. The second matters: once a write to the
// LOG file has failed (a full disk), the next line RocksDB logs trips an assertion in its file
// writer, which Debian's librocksdb keeps, and aborts the process instead of letting the
// gateway answer 503 (found by tests/gateway/disk_full_test.cc). RocksDB's INFO lines are
// chatty; they are pimgate debug lines.
class SpdlogRocksDbLogger final : public rocksdb::Logger {
 public:
  SpdlogRocksDbLogger()
      : rocksdb::Logger(spdlog::should_log(spdlog::level::debug)
                            ? rocksdb::InfoLogLevel::INFO_LEVEL
                            : rocksdb::InfoLogLevel::WARN_LEVEL) {}

  using rocksdb::Logger::Logv;
  void Logv(const char* format, va_list ap) override {
    Logv(rocksdb::InfoLogLevel::INFO_LEVEL, format, ap);
  }
  void Logv(const rocksdb::InfoLogLevel level, const char* format, va_list ap) override {
    if (level < GetInfoLogLevel()) return;
    char buffer[1024];
    const int n = std::vsnprintf(buffer, sizeof(buffer), format, ap);
    if (n < 0) return;
    std::string_view line(buffer, std::min<std::size_t>(n, sizeof(buffer) - 1));
    while (!line.empty() && (line.back() == '\n' || line.back() == ' ')) line.remove_suffix(1);
    switch (level) {
      case rocksdb::InfoLogLevel::DEBUG_LEVEL:
      case rocksdb::InfoLogLevel::INFO_LEVEL:
        spdlog::debug("rocksdb: {}", line);
        break;
      case rocksdb::InfoLogLevel::WARN_LEVEL:
        spdlog::warn("rocksdb: {}", line);
        break;
      default:
        spdlog::error("rocksdb: {}", line);
        break;
    }
  }
};

class RocksDbBackend final : public LogBackend, public RocksDbStoreListing {
 public:
  // `handles` are in the order of the families passed to DB::Open (see OpenRocksDbBackend).
  // `env` is the Env `db` was opened on when it is not RocksDB's default (null otherwise).
  RocksDbBackend(std::shared_ptr<rocksdb::Env> env, std::unique_ptr<rocksdb::DB> db,
                 std::vector<rocksdb::ColumnFamilyHandle*> handles)
      : env_(std::move(env)), db_(std::move(db)), handles_(std::move(handles)) {}

  ~RocksDbBackend() override {
    // Handles must go before the DB. Close() waits for background work; the WAL already holds
    // every acknowledged batch, so a Close error loses nothing that was promised.
    for (rocksdb::ColumnFamilyHandle* h : handles_) db_->DestroyColumnFamilyHandle(h);
    db_->Close().PermitUncheckedError();
  }

  RocksDbBackend(const RocksDbBackend&) = delete;
  RocksDbBackend& operator=(const RocksDbBackend&) = delete;

  absl::StatusOr<RecoveredState> Recover() override {
    RecoveredState state;
    // meta is written in the same batch as the events, so it is normally exact. The last key of
    // each family is a fallback for a database whose meta is missing, and taking the maximum
    // guarantees a sequence or quarantine id is never handed out twice.
    absl::StatusOr<std::optional<uint64_t>> meta_seq = ReadMeta(kLastSequenceKey);
    if (!meta_seq.ok()) return meta_seq.status();
    absl::StatusOr<uint64_t> last_event = LastKey(events(), "events");
    if (!last_event.ok()) return last_event.status();
    state.last_sequence = std::max(meta_seq->value_or(0), *last_event);

    absl::StatusOr<std::optional<uint64_t>> meta_qid = ReadMeta(kLastQuarantineIdKey);
    if (!meta_qid.ok()) return meta_qid.status();
    absl::StatusOr<uint64_t> last_quarantine = LastKey(quarantine(), "quarantine");
    if (!last_quarantine.ok()) return last_quarantine.status();
    state.last_quarantine_id = std::max(meta_qid->value_or(0), *last_quarantine);

    uint64_t keys = 0;
    if (db_->GetIntProperty(events(), rocksdb::DB::Properties::kEstimateNumKeys, &keys)) {
      state.event_count = keys;
    }
    return state;
  }

  absl::Status Write(const CommitBatch& batch, bool sync) override {
    // One WriteBatch for everything: RocksDB applies it atomically and logs it as one WAL record,
    // so after a crash the group is either entirely there or entirely absent.
    rocksdb::WriteBatch wb;
    std::string value;
    for (const StoredEvent& event : batch.events) {
      if (absl::Status s =
              ToStatus(wb.Put(events(), EncodeU64(event.sequence), event.bytes), "put");
          !s.ok()) {
        return s;
      }
    }
    for (const auto& [key, sequence] : batch.dedup) {
      if (absl::Status s =
              ToStatus(wb.Put(dedup(), DedupKeyBytes(key), EncodeU64(sequence)), "put");
          !s.ok()) {
        return s;
      }
    }
    for (const auto& [key, version] : batch.versions) {
      if (absl::Status s =
              ToStatus(wb.Put(versions(), ResourceKeyBytes(key), EncodeVersion(version)), "put");
          !s.ok()) {
        return s;
      }
    }
    for (const v1::QuarantineEntry& entry : batch.quarantine) {
      if (!entry.SerializeToString(&value)) {
        return absl::InternalError(absl::StrCat("cannot serialize quarantine entry ", entry.id()));
      }
      if (absl::Status s = ToStatus(wb.Put(quarantine(), EncodeU64(entry.id()), value), "put");
          !s.ok()) {
        return s;
      }
    }
    for (const auto& [key, value] : batch.meta) {
      if (absl::Status s =
              ToStatus(wb.Put(meta(), absl::StrCat(kUserMetaPrefix, key), value), "put");
          !s.ok()) {
        return s;
      }
    }
    if (absl::Status s =
            ToStatus(wb.Put(meta(), kLastSequenceKey, EncodeU64(batch.last_sequence)), "put");
        !s.ok()) {
      return s;
    }
    if (absl::Status s = ToStatus(
            wb.Put(meta(), kLastQuarantineIdKey, EncodeU64(batch.last_quarantine_id)), "put");
        !s.ok()) {
      return s;
    }

    rocksdb::WriteOptions wo;
    wo.sync = sync;  // true: the WAL is fsynced before Write returns (see LogBackend::Write)
    return ToStatus(WriteResuming(wo, &wb), "write");
  }

  absl::StatusOr<std::optional<uint64_t>> FindEventId(const DedupKey& key) override {
    rocksdb::PinnableSlice value;
    rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), dedup(), DedupKeyBytes(key), &value);
    if (s.IsNotFound()) return std::nullopt;
    if (!s.ok()) return ToStatus(s, "get dedup");
    absl::StatusOr<uint64_t> sequence = DecodeU64Value(value, "dedup value");
    if (!sequence.ok()) return sequence.status();
    return *sequence;
  }

  absl::StatusOr<std::optional<ResourceVersion>> FindVersion(const ResourceKey& key) override {
    rocksdb::PinnableSlice value;
    rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), versions(), ResourceKeyBytes(key), &value);
    if (s.IsNotFound()) return std::nullopt;
    if (!s.ok()) return ToStatus(s, "get version");
    absl::StatusOr<ResourceVersion> version = DecodeVersion(value);
    if (!version.ok()) return version.status();
    return *version;
  }

  absl::StatusOr<std::vector<ResourceVersionEntry>> ListVersions(
      const std::string& source, const std::string& kind, const std::string& after_resource_id,
      std::size_t max) override {
    std::vector<ResourceVersionEntry> out;
    if (max == 0) return out;
    const std::string prefix = JoinKey({source, kind, ""});
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), versions()));
    const std::string start = prefix + after_resource_id;
    it->Seek(start);
    // Seek lands on `start` itself when that resource exists: it is not "after".
    if (!after_resource_id.empty() && it->Valid() && it->key() == rocksdb::Slice(start)) it->Next();
    for (; it->Valid() && out.size() < max; it->Next()) {
      if (!it->key().starts_with(prefix)) break;
      absl::StatusOr<ResourceVersion> version = DecodeVersion(it->value());
      if (!version.ok()) return version.status();
      rocksdb::Slice id = it->key();
      id.remove_prefix(prefix.size());
      out.push_back(ResourceVersionEntry{id.ToString(), *version});
    }
    if (absl::Status s = ToStatus(it->status(), "iterate versions"); !s.ok()) return s;
    return out;
  }

  absl::StatusOr<std::optional<std::string>> GetMeta(const std::string& key) override {
    std::string value;
    rocksdb::Status s =
        db_->Get(rocksdb::ReadOptions(), meta(), absl::StrCat(kUserMetaPrefix, key), &value);
    if (s.IsNotFound()) return std::nullopt;
    if (!s.ok()) return ToStatus(s, "get meta");
    return value;
  }

  absl::Status PutMeta(const std::string& key, const std::string& value) override {
    rocksdb::WriteOptions wo;
    wo.sync = true;  // see LogBackend::PutMeta: fsynced, with everything written before it
    return ToStatus(db_->Put(wo, meta(), absl::StrCat(kUserMetaPrefix, key), value), "put meta");
  }

  absl::Status ForEachVersion(
      const std::function<absl::Status(const ResourceKey&, const ResourceVersion&)>& visit)
      override {
    rocksdb::ReadOptions options;
    options.fill_cache = false;  // a one-off scan
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(options, versions()));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      const std::string_view key(it->key().data(), it->key().size());
      const std::size_t first = key.find('\0');
      const std::size_t second =
          first == std::string_view::npos ? first : key.find('\0', first + 1);
      if (second == std::string_view::npos) {
        return absl::DataLossError(
            absl::StrCat("unreadable version key of ", key.size(), " bytes"));
      }
      absl::StatusOr<ResourceVersion> version = DecodeVersion(it->value());
      if (!version.ok()) return version.status();
      const ResourceKey resource{std::string(key.substr(0, first)),
                                 std::string(key.substr(first + 1, second - first - 1)),
                                 std::string(key.substr(second + 1))};
      if (absl::Status s = visit(resource, *version); !s.ok()) return s;
    }
    return ToStatus(it->status(), "iterate versions");
  }

  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> AllMeta() override {
    std::vector<std::pair<std::string, std::string>> out;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), meta()));
    for (it->Seek(kUserMetaPrefix); it->Valid() && it->key().starts_with(kUserMetaPrefix);
         it->Next()) {
      rocksdb::Slice key = it->key();
      key.remove_prefix(std::string_view(kUserMetaPrefix).size());
      out.emplace_back(key.ToString(), it->value().ToString());
    }
    if (absl::Status s = ToStatus(it->status(), "iterate meta"); !s.ok()) return s;
    return out;
  }

  absl::StatusOr<std::vector<std::string>> Plugins() override {
    std::set<std::string> plugins;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), cursors()));
    for (it->SeekToFirst(); it->Valid(); it->Next()) plugins.insert(it->key().ToString());
    if (absl::Status s = ToStatus(it->status(), "iterate cursors"); !s.ok()) return s;
    // One seek per plugin: past all of a plugin's letters ('\0' + sequence) to the next one.
    it.reset(db_->NewIterator(rocksdb::ReadOptions(), dead_letters()));
    for (it->SeekToFirst(); it->Valid();) {
      std::string plugin = PluginOfDeadLetterKey(it->key());
      it->Seek(plugin + std::string(1, '\1'));
      plugins.insert(std::move(plugin));
    }
    if (absl::Status s = ToStatus(it->status(), "iterate dead letters"); !s.ok()) return s;
    return std::vector<std::string>(plugins.begin(), plugins.end());
  }

  absl::StatusOr<std::optional<v1::Event>> GetEvent(uint64_t sequence) override {
    rocksdb::PinnableSlice value;
    rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), events(), EncodeU64(sequence), &value);
    if (s.IsNotFound()) return std::nullopt;
    if (!s.ok()) return ToStatus(s, "get event");
    v1::Event event;
    if (!event.ParseFromArray(value.data(), static_cast<int>(value.size()))) {
      return absl::DataLossError(absl::StrCat("cannot parse stored event ", sequence));
    }
    return event;
  }

  absl::StatusOr<std::vector<v1::Event>> ReadEvents(uint64_t from, std::size_t max) override {
    return ReadRange<v1::Event>(events(), from, max, "event");
  }

  absl::StatusOr<std::vector<StoredEvent>> ReadStoredEvents(uint64_t from,
                                                            std::size_t max) override {
    std::vector<StoredEvent> out;
    if (max == 0) return out;
    out.reserve(std::min<std::size_t>(max, 1024));
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), events()));
    for (it->Seek(EncodeU64(from)); it->Valid() && out.size() < max; it->Next()) {
      absl::StatusOr<uint64_t> sequence = DecodeU64Value(it->key(), "events key");
      if (!sequence.ok()) return sequence.status();
      out.push_back(StoredEvent{*sequence, it->value().ToString()});
    }
    if (absl::Status s = ToStatus(it->status(), "iterate"); !s.ok()) return s;
    return out;
  }

  absl::StatusOr<std::vector<v1::QuarantineEntry>> ReadQuarantine(uint64_t from,
                                                                  std::size_t max) override {
    return ReadRange<v1::QuarantineEntry>(quarantine(), from, max, "quarantine entry");
  }

  uint64_t DiskBytes() override {
    // Table files of every family plus the WAL (which is all there is until the first flush).
    // Best effort: a property or listing failure counts as zero.
    uint64_t bytes = 0;
    uint64_t sst = 0;
    if (db_->GetAggregatedIntProperty(rocksdb::DB::Properties::kTotalSstFilesSize, &sst)) {
      bytes += sst;
    }
    rocksdb::VectorLogPtr wal_files;
    if (db_->GetSortedWalFiles(wal_files).ok()) {
      for (const auto& file : wal_files) bytes += file->SizeFileBytes();
    }
    return bytes;
  }

  absl::StatusOr<uint64_t> LoadCursor(const std::string& plugin) override {
    rocksdb::PinnableSlice value;
    rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), cursors(), plugin, &value);
    if (s.IsNotFound()) return 0;
    if (!s.ok()) return ToStatus(s, "get cursor");
    return DecodeU64Value(value, "cursor");
  }

  absl::StatusOr<uint64_t> LoadHandedOut(const std::string& plugin) override {
    rocksdb::PinnableSlice value;
    rocksdb::Status s =
        db_->Get(rocksdb::ReadOptions(), meta(), absl::StrCat(kHandedOutPrefix, plugin), &value);
    if (s.IsNotFound()) return 0;
    if (!s.ok()) return ToStatus(s, "get handed-out mark");
    return DecodeU64Value(value, "handed-out mark");
  }

  absl::Status WriteHandedOut(const std::string& plugin, uint64_t mark) override {
    rocksdb::WriteBatch wb;
    if (absl::Status s = ToStatus(
            wb.Put(meta(), absl::StrCat(kHandedOutPrefix, plugin), EncodeU64(mark)), "put");
        !s.ok()) {
      return s;
    }
    // Not fsynced, like a cursor: in the WAL (the page cache) when this returns, so it survives
    // a process crash; the next fsynced write of the log (a group commit) makes it durable.
    return ToStatus(WriteResuming(rocksdb::WriteOptions(), &wb), "write handed-out mark");
  }

  absl::Status WriteProgress(const std::string& plugin, const PluginProgress& progress) override {
    rocksdb::WriteBatch wb;
    std::string value;
    std::vector<std::string> letter_keys;
    for (const v1::DeadLetter& letter : progress.dead_letters) {
      if (!letter.SerializeToString(&value)) {
        return absl::InternalError("cannot serialize dead letter");
      }
      letter_keys.push_back(DeadLetterKey(plugin, letter.event().sequence()));
      if (absl::Status s = ToStatus(wb.Put(dead_letters(), letter_keys.back(), value), "put");
          !s.ok()) {
        return s;
      }
    }
    if (progress.cursor) {
      if (absl::Status s = ToStatus(wb.Put(cursors(), plugin, EncodeU64(*progress.cursor)), "put");
          !s.ok()) {
        return s;
      }
    }
    // Not fsynced: see LogBackend::WriteProgress. Survives a process crash (WAL in page cache).
    if (letter_keys.empty()) {
      return ToStatus(WriteResuming(rocksdb::WriteOptions(), &wb), "write progress");
    }
    // Letters change the counts: counted (new keys only) and written under the counts' lock.
    absl::MutexLock lock(&dead_letter_mu_);
    absl::StatusOr<DeadLetterTally> added = TallyDeadLetters(letter_keys, /*existing=*/false);
    if (!added.ok()) return added.status();
    if (absl::Status s = ToStatus(WriteResuming(rocksdb::WriteOptions(), &wb), "write progress");
        !s.ok()) {
      return s;
    }
    ApplyTally(*added, +1);
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<v1::DeadLetter>> ReadDeadLetters(const std::string& plugin,
                                                              uint64_t from,
                                                              std::size_t max) override {
    std::vector<v1::DeadLetter> out;
    const std::string prefix = plugin + std::string(1, '\0');
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), dead_letters()));
    for (it->Seek(DeadLetterKey(plugin, from)); it->Valid() && out.size() < max; it->Next()) {
      if (!it->key().starts_with(prefix)) break;
      const rocksdb::Slice value = it->value();
      if (!out.emplace_back().ParseFromArray(value.data(), static_cast<int>(value.size()))) {
        return absl::DataLossError("cannot parse stored dead letter of " + plugin);
      }
    }
    if (absl::Status s = ToStatus(it->status(), "iterate"); !s.ok()) return s;
    return out;
  }

  // From counts kept in memory: the store is counted once (keys only), on the first call, and
  // every later write or deletion of a letter adjusts the counts. A count is asked for every
  // plugin by each Admin.GetStats (the console's overview polls it every 2 s), and a plugin can
  // hold a million letters.
  absl::StatusOr<uint64_t> CountDeadLetters(const std::string& plugin) override {
    absl::MutexLock lock(&dead_letter_mu_);
    if (!dead_letter_counts_) {
      absl::flat_hash_map<std::string, uint64_t> counts;
      rocksdb::ReadOptions options;
      options.fill_cache = false;  // a count must not push the hot blocks out of the cache
      std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(options, dead_letters()));
      for (it->SeekToFirst(); it->Valid(); it->Next()) ++counts[PluginOfDeadLetterKey(it->key())];
      if (absl::Status s = ToStatus(it->status(), "count dead letters"); !s.ok()) return s;
      dead_letter_counts_ = std::move(counts);
    }
    auto it = dead_letter_counts_->find(plugin);
    return it == dead_letter_counts_->end() ? 0 : it->second;
  }

  absl::Status DeleteDeadLetters(const std::string& plugin,
                                 const std::vector<uint64_t>& sequences) override {
    rocksdb::WriteBatch wb;
    std::vector<std::string> keys;
    for (uint64_t sequence : sequences) {
      keys.push_back(DeadLetterKey(plugin, sequence));
      if (absl::Status s = ToStatus(wb.Delete(dead_letters(), keys.back()), "delete"); !s.ok()) {
        return s;
      }
    }
    absl::MutexLock lock(&dead_letter_mu_);
    absl::StatusOr<DeadLetterTally> removed = TallyDeadLetters(keys, /*existing=*/true);
    if (!removed.ok()) return removed.status();
    if (absl::Status s = ToStatus(db_->Write(rocksdb::WriteOptions(), &wb), "delete dead letters");
        !s.ok()) {
      return s;
    }
    ApplyTally(*removed, -1);
    return absl::OkStatus();
  }

  absl::StatusOr<uint64_t> TrimEvents(uint64_t max_sequence, int64_t received_before_us,
                                      std::size_t max_events) override {
    absl::MutexLock lock(&trim_mu_);
    rocksdb::WriteBatch wb;
    uint64_t first = 0;
    uint64_t last = 0;
    uint64_t count = 0;
    uint64_t bytes = 0;
    {
      std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), events()));
      v1::Event event;
      for (it->SeekToFirst(); it->Valid() && count < max_events; it->Next()) {
        absl::StatusOr<uint64_t> sequence = DecodeU64Value(it->key(), "events key");
        if (!sequence.ok()) return sequence.status();
        if (*sequence > max_sequence) break;
        const rocksdb::Slice value = it->value();
        if (!event.ParseFromArray(value.data(), static_cast<int>(value.size()))) {
          return absl::DataLossError(absl::StrCat("cannot parse stored event ", *sequence));
        }
        if (ToMicros(event.received_at()) >= received_before_us) break;
        if (!event.id().empty()) {
          // Only the entry that points at this event: an id accepted again after an earlier trim
          // has a new entry that belongs to its new event.
          const DedupKey key{event.source(), event.id()};
          absl::StatusOr<std::optional<uint64_t>> owner = FindEventId(key);
          if (!owner.ok()) return owner.status();
          if (*owner == *sequence) {
            if (absl::Status s = ToStatus(wb.Delete(dedup(), DedupKeyBytes(key)), "delete");
                !s.ok()) {
              return s;
            }
          }
        }
        if (first == 0) first = *sequence;
        last = *sequence;
        ++count;
        bytes += it->key().size() + value.size();
      }
      if (absl::Status s = ToStatus(it->status(), "iterate events"); !s.ok()) return s;
    }
    if (count == 0) return 0;
    if (absl::Status s = ToStatus(wb.DeleteRange(events(), EncodeU64(first), EncodeU64(last + 1)),
                                  "delete range");
        !s.ok()) {
      return s;
    }
    if (absl::Status s = ToStatus(db_->Write(rocksdb::WriteOptions(), &wb), "trim events");
        !s.ok()) {
      return s;
    }
    MaybeReclaim(events(), event_bytes_since_reclaim_, bytes, last + 1);
    return count;
  }

  absl::StatusOr<uint64_t> TrimDeadLetters(int64_t before_us, std::size_t max) override {
    absl::MutexLock lock(&trim_mu_);
    // Keyed by plugin and sequence, not by time: every letter is looked at. Dead letters are
    // few (each is an operator's problem), so a full scan per pass is cheap.
    rocksdb::WriteBatch wb;
    uint64_t count = 0;
    std::vector<std::string> keys;
    {
      std::unique_ptr<rocksdb::Iterator> it(
          db_->NewIterator(rocksdb::ReadOptions(), dead_letters()));
      v1::DeadLetter letter;
      for (it->SeekToFirst(); it->Valid() && count < max; it->Next()) {
        const rocksdb::Slice value = it->value();
        if (!letter.ParseFromArray(value.data(), static_cast<int>(value.size()))) {
          return absl::DataLossError("cannot parse stored dead letter");
        }
        if (ToMicros(letter.dead_at()) >= before_us) continue;
        if (absl::Status s = ToStatus(wb.Delete(dead_letters(), it->key()), "delete"); !s.ok()) {
          return s;
        }
        keys.push_back(it->key().ToString());
        ++count;
      }
      if (absl::Status s = ToStatus(it->status(), "iterate dead letters"); !s.ok()) return s;
    }
    if (count == 0) return 0;
    // The scan did not hold the counts' lock: a letter it saw may have been deleted since, so
    // what the write removes is tallied again under the lock.
    absl::MutexLock letters_lock(&dead_letter_mu_);
    absl::StatusOr<DeadLetterTally> removed = TallyDeadLetters(keys, /*existing=*/true);
    if (!removed.ok()) return removed.status();
    if (absl::Status s = ToStatus(db_->Write(rocksdb::WriteOptions(), &wb), "trim dead letters");
        !s.ok()) {
      return s;
    }
    ApplyTally(*removed, -1);
    return count;
  }

  absl::StatusOr<uint64_t> TrimQuarantine(int64_t before_us, std::size_t max) override {
    absl::MutexLock lock(&trim_mu_);
    uint64_t first = 0;
    uint64_t last = 0;
    uint64_t count = 0;
    uint64_t bytes = 0;
    {
      std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), quarantine()));
      v1::QuarantineEntry entry;
      for (it->SeekToFirst(); it->Valid() && count < max; it->Next()) {
        absl::StatusOr<uint64_t> id = DecodeU64Value(it->key(), "quarantine key");
        if (!id.ok()) return id.status();
        const rocksdb::Slice value = it->value();
        if (!entry.ParseFromArray(value.data(), static_cast<int>(value.size()))) {
          return absl::DataLossError(absl::StrCat("cannot parse quarantine entry ", *id));
        }
        if (ToMicros(entry.received_at()) >= before_us) break;
        if (first == 0) first = *id;
        last = *id;
        ++count;
        bytes += it->key().size() + value.size();
      }
      if (absl::Status s = ToStatus(it->status(), "iterate quarantine"); !s.ok()) return s;
    }
    if (count == 0) return 0;
    rocksdb::WriteBatch wb;
    if (absl::Status s = ToStatus(
            wb.DeleteRange(quarantine(), EncodeU64(first), EncodeU64(last + 1)), "delete range");
        !s.ok()) {
      return s;
    }
    if (absl::Status s = ToStatus(db_->Write(rocksdb::WriteOptions(), &wb), "trim quarantine");
        !s.ok()) {
      return s;
    }
    MaybeReclaim(quarantine(), quarantine_bytes_since_reclaim_, bytes, last + 1);
    return count;
  }

 private:
  // Indexes into handles_, matching the family order in OpenRocksDbBackend.
  enum Family : std::size_t {
    kDefault,
    kEvents,
    kDedup,
    kVersions,
    kQuarantine,
    kMeta,
    kCursors,
    kDeadLetters
  };

  rocksdb::ColumnFamilyHandle* events() const { return handles_[kEvents]; }
  rocksdb::ColumnFamilyHandle* dedup() const { return handles_[kDedup]; }
  rocksdb::ColumnFamilyHandle* versions() const { return handles_[kVersions]; }
  rocksdb::ColumnFamilyHandle* quarantine() const { return handles_[kQuarantine]; }
  rocksdb::ColumnFamilyHandle* meta() const { return handles_[kMeta]; }
  rocksdb::ColumnFamilyHandle* cursors() const { return handles_[kCursors]; }
  rocksdb::ColumnFamilyHandle* dead_letters() const { return handles_[kDeadLetters]; }

  static std::string DeadLetterKey(const std::string& plugin, uint64_t sequence) {
    std::string key = plugin;
    key.push_back('\0');
    AppendU64(key, sequence);
    return key;
  }

  static std::string PluginOfDeadLetterKey(const rocksdb::Slice& key) {
    const std::string_view view(key.data(), key.size());
    return std::string(view.substr(0, view.find('\0')));
  }

  // Letters per plugin that a write of `keys` adds (existing = false: keys not stored yet) or a
  // deletion of them removes (existing = true: keys stored now), each key once. Empty while the
  // counts are not kept yet (nothing to adjust).
  using DeadLetterTally = absl::flat_hash_map<std::string, uint64_t>;
  absl::StatusOr<DeadLetterTally> TallyDeadLetters(const std::vector<std::string>& keys,
                                                   bool existing)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(dead_letter_mu_) {
    DeadLetterTally tally;
    if (!dead_letter_counts_) return tally;
    absl::flat_hash_set<std::string_view> seen;
    rocksdb::PinnableSlice value;
    for (const std::string& key : keys) {
      if (!seen.insert(key).second) continue;
      value.Reset();
      const rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), dead_letters(), key, &value);
      if (!s.ok() && !s.IsNotFound()) return ToStatus(s, "get dead letter");
      if (s.ok() == existing) ++tally[PluginOfDeadLetterKey(key)];
    }
    return tally;
  }

  void ApplyTally(const DeadLetterTally& tally, int sign)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(dead_letter_mu_) {
    if (!dead_letter_counts_) return;
    for (const auto& [plugin, n] : tally) {
      uint64_t& count = (*dead_letter_counts_)[plugin];
      count = sign > 0 ? count + n : count - std::min(count, n);
    }
  }

  absl::StatusOr<std::optional<uint64_t>> ReadMeta(const char* key) {
    rocksdb::PinnableSlice value;
    rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), meta(), key, &value);
    if (s.IsNotFound()) return std::nullopt;
    if (!s.ok()) return ToStatus(s, "get meta");
    absl::StatusOr<uint64_t> v = DecodeU64Value(value, key);
    if (!v.ok()) return v.status();
    return *v;
  }

  // Largest 8-byte key in `family`, 0 when it is empty.
  absl::StatusOr<uint64_t> LastKey(rocksdb::ColumnFamilyHandle* family, absl::string_view what) {
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), family));
    it->SeekToLast();
    if (!it->Valid()) {
      if (absl::Status s = ToStatus(it->status(), "iterate"); !s.ok()) return s;
      return 0;
    }
    return DecodeU64Value(it->key(), absl::StrCat(what, " key"));
  }

  template <typename Message>
  absl::StatusOr<std::vector<Message>> ReadRange(rocksdb::ColumnFamilyHandle* family, uint64_t from,
                                                 std::size_t max, absl::string_view what) {
    std::vector<Message> out;
    if (max == 0) return out;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), family));
    for (it->Seek(EncodeU64(from)); it->Valid() && out.size() < max; it->Next()) {
      Message& message = out.emplace_back();
      const rocksdb::Slice value = it->value();
      if (!message.ParseFromArray(value.data(), static_cast<int>(value.size()))) {
        return absl::DataLossError(
            absl::StrCat("cannot parse stored ", what, " at key ", DecodeU64(it->key().data())));
      }
    }
    if (absl::Status s = ToStatus(it->status(), "iterate"); !s.ok()) return s;
    return out;
  }

  // Gives the space of the trimmed keys [start of `family`, end) back once `pending` (bytes
  // trimmed since the last reclaim, updated here) passes kReclaimAfterBytes. Best effort: a
  // failed compaction frees nothing now, and the next reclaim covers the same range again.
  void MaybeReclaim(rocksdb::ColumnFamilyHandle* family, uint64_t& pending, uint64_t trimmed,
                    uint64_t end) ABSL_EXCLUSIVE_LOCKS_REQUIRED(trim_mu_) {
    pending += trimmed;
    if (pending < kReclaimAfterBytes) return;
    pending = 0;
    const std::string end_key = EncodeU64(end);
    const rocksdb::Slice end_slice(end_key);
    rocksdb::CompactRangeOptions options;
    options.exclusive_manual_compaction = false;  // ingest's own compactions keep running
    options.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForceOptimized;
    db_->CompactRange(options, family, nullptr, &end_slice).PermitUncheckedError();
  }

  // Writes `wb`, first resuming the database if an earlier write failed. After an I/O error
  // (ENOSPC on the WAL or in a flush, EIO...) RocksDB keeps refusing every write with that error
  // until it has recovered. For ENOSPC it recovers by itself (its SstFileManager checks every
  // few seconds for free space, then flushes and starts a new WAL); for other errors it waits
  // for DB::Resume(). So the first write after a failure calls Resume(): it is a no-op once
  // RocksDB has recovered, answers Busy while RocksDB's own recovery runs, and otherwise
  // recovers now. Until then writes are refused with the error that stopped them; afterwards
  // they go through, without a restart. Recovery never drops acknowledged data.
  rocksdb::Status WriteResuming(const rocksdb::WriteOptions& wo, rocksdb::WriteBatch* wb) {
    if (needs_resume_.load(std::memory_order_acquire)) {
      rocksdb::Status resumed = db_->Resume();
      if (resumed.IsBusy()) {
        absl::MutexLock lock(&write_error_mu_);
        return rocksdb::Status::Busy("the store is recovering from a write error", write_error_);
      }
      if (!resumed.ok()) return resumed;
      needs_resume_.store(false, std::memory_order_release);
    }
    rocksdb::Status s = db_->Write(wo, wb);
    if (s.IsIOError() || s.IsCorruption()) {
      absl::MutexLock lock(&write_error_mu_);
      write_error_ = s.ToString();
      needs_resume_.store(true, std::memory_order_release);
    }
    return s;
  }

  std::shared_ptr<rocksdb::Env> env_;  // declared before db_: it must outlive the database
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
  // Set when a write failed with an error that stops RocksDB's writes (see WriteResuming).
  std::atomic<bool> needs_resume_{false};
  absl::Mutex write_error_mu_;
  std::string write_error_ ABSL_GUARDED_BY(write_error_mu_);  // the error that stopped writes
  absl::Mutex trim_mu_;  // one trim at a time; guards the reclaim bookkeeping
  // Serializes the writes and deletions of dead letters with the counts they change.
  absl::Mutex dead_letter_mu_ ABSL_ACQUIRED_AFTER(trim_mu_);
  // Dead letters stored per plugin; unset until the first CountDeadLetters counts the store.
  std::optional<absl::flat_hash_map<std::string, uint64_t>> dead_letter_counts_
      ABSL_GUARDED_BY(dead_letter_mu_);
  uint64_t event_bytes_since_reclaim_ ABSL_GUARDED_BY(trim_mu_) = 0;
  uint64_t quarantine_bytes_since_reclaim_ ABSL_GUARDED_BY(trim_mu_) = 0;
};

// The column families and database options of a pimgate store: one definition for opening it,
// bulk loading it and checkpointing it, so that every table file it ever holds is written with
// the same table options (bloom filters on the lookup families above all).
struct StoreLayout {
  std::vector<rocksdb::ColumnFamilyDescriptor> families;  // in RocksDbBackend::Family order
  rocksdb::DBOptions db_options;
  // The Env over RocksDbBackendOptions::file_system that db_options.env points to; null when
  // db_options.env is RocksDB's default. Whoever opens a database with db_options keeps it
  // alive until the database is closed.
  std::shared_ptr<rocksdb::Env> env;
};

StoreLayout MakeStoreLayout(const RocksDbBackendOptions& options) {
  std::shared_ptr<rocksdb::Cache> cache = rocksdb::NewLRUCache(options.block_cache_bytes);

  rocksdb::BlockBasedTableOptions scan_table;
  scan_table.block_cache = cache;
  rocksdb::BlockBasedTableOptions lookup_table = scan_table;
  lookup_table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(kBloomBitsPerKey));

  rocksdb::ColumnFamilyOptions scan_cf;
  scan_cf.write_buffer_size = options.write_buffer_bytes;
  scan_cf.table_factory.reset(rocksdb::NewBlockBasedTableFactory(scan_table));
  rocksdb::ColumnFamilyOptions lookup_cf = scan_cf;
  lookup_cf.table_factory.reset(rocksdb::NewBlockBasedTableFactory(lookup_table));
  // A bloom filter over each memtable's keys too: the committer looks up every new event id, and
  // a new id is in no memtable; without the filter each lookup walks the memtable's skip list
  // (the committer's largest cost in profiles of ingest).
  lookup_cf.memtable_whole_key_filtering = true;
  lookup_cf.memtable_prefix_bloom_size_ratio = kMemtableBloomRatio;

  // (memtable_insert_with_hint_prefix_extractor would make the sequential inserts of events
  // cheaper, but RocksDB 7.8 shares its hints with the range-deletion memtable, and retention's
  // DeleteRange then follows a hint into the wrong skip list and aborts.)

  // Families whose few keys are rewritten all the time (a version per resource, the last
  // sequence, cursors): the memtable updates a key's value in place instead of stacking one
  // entry per write, so it stays as small as the set of keys and every lookup and write walks a
  // short skip list. Needs allow_concurrent_memtable_write off (below).
  rocksdb::ColumnFamilyOptions overwrite_cf = scan_cf;
  overwrite_cf.inplace_update_support = true;
  rocksdb::ColumnFamilyOptions versions_cf = lookup_cf;
  versions_cf.inplace_update_support = true;

  // Order must match RocksDbBackend::Family.
  StoreLayout layout;
  layout.families = {
      {rocksdb::kDefaultColumnFamilyName, scan_cf},
      {kEventsFamily, scan_cf},
      {kDedupFamily, lookup_cf},
      {kVersionsFamily, versions_cf},
      {kQuarantineFamily, scan_cf},
      {kMetaFamily, overwrite_cf},
      {kCursorsFamily, overwrite_cf},
      {kDeadLettersFamily, scan_cf},
  };

  layout.db_options.info_log = std::make_shared<SpdlogRocksDbLogger>();
  layout.db_options.create_if_missing = true;
  layout.db_options.create_missing_column_families = true;
  // The WAL is written by Write itself, never held back for a manual FlushWAL: a batch that Write
  // acknowledged is at least in the OS page cache (sync=false) or on disk (sync=true).
  layout.db_options.manual_wal_flush = false;
  layout.db_options.max_total_wal_size = kMaxWalPerWriteBuffer * options.write_buffer_bytes;
  // In-place memtable updates (above) exclude concurrent memtable inserts. pimgate's writes come
  // from one committer, with the dispatcher's small progress writes beside it: nothing to lose.
  layout.db_options.allow_concurrent_memtable_write = false;

  if (options.file_system != nullptr) {
    // An Env that takes its files from `file_system` and everything else (threads, clock) from
    // the default Env.
    layout.env = rocksdb::NewCompositeEnv(options.file_system);
    layout.db_options.env = layout.env.get();
  }
  return layout;
}

// Opens the store at `path` with pimgate's layout; `handles` get the families in Family order.
// `env` gets the Env the database runs on (StoreLayout::env), which must outlive it.
absl::Status OpenStore(const std::string& path, const RocksDbBackendOptions& options,
                       std::unique_ptr<rocksdb::DB>* db,
                       std::vector<rocksdb::ColumnFamilyHandle*>* handles,
                       std::shared_ptr<rocksdb::Env>* env) {
  const StoreLayout layout = MakeStoreLayout(options);
  *env = layout.env;
  // Created here rather than by create_if_missing, which first logs a missing directory as an
  // error. A failure shows up as DB::Open's error below.
  std::error_code ignored;
  std::filesystem::create_directories(path, ignored);
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(layout.db_options, path, layout.families, handles, &raw);
  if (!s.ok()) return ToStatus(s, absl::StrCat("open ", path));
  db->reset(raw);
  return absl::OkStatus();
}

}  // namespace

RocksDbStoreListing* RocksDbListingOf(LogBackend& backend) {
  return dynamic_cast<RocksDbBackend*>(&backend);
}

absl::StatusOr<std::unique_ptr<LogBackend>> OpenRocksDbBackend(
    const std::string& path, const RocksDbBackendOptions& options) {
  std::shared_ptr<rocksdb::Env> env;
  std::unique_ptr<rocksdb::DB> db;
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  if (absl::Status s = OpenStore(path, options, &db, &handles, &env); !s.ok()) return s;
  return std::make_unique<RocksDbBackend>(std::move(env), std::move(db), std::move(handles));
}

namespace {

// Table files of a bulk load are cut at this size (the events family would otherwise be one
// file of many gigabytes, a single unit for every later compaction that touches it).
constexpr uint64_t kBulkFileBytes = 256ull << 20;

// Writes one family's sorted keys into table files of at most kBulkFileBytes.
class SortedTableWriter {
 public:
  SortedTableWriter(const rocksdb::DBOptions& db_options, const rocksdb::ColumnFamilyOptions& cf,
                    std::string dir, std::string name)
      : options_(db_options, cf), dir_(std::move(dir)), name_(std::move(name)) {}

  absl::Status Put(const rocksdb::Slice& key, const rocksdb::Slice& value) {
    if (writer_ != nullptr && writer_->FileSize() >= kBulkFileBytes) {
      if (absl::Status s = Close(); !s.ok()) return s;
    }
    if (writer_ == nullptr) {
      writer_ = std::make_unique<rocksdb::SstFileWriter>(rocksdb::EnvOptions(), options_);
      std::string file = absl::StrCat(dir_, "/", name_, "-", files_.size(), ".sst");
      if (absl::Status s = ToStatus(writer_->Open(file), "bulk open " + file); !s.ok()) return s;
      files_.push_back(std::move(file));
    }
    return ToStatus(writer_->Put(key, value), absl::StrCat("bulk put into ", name_));
  }

  // Finishes the open file; returns the files written.
  absl::StatusOr<std::vector<std::string>> Finish() {
    if (absl::Status s = Close(); !s.ok()) return s;
    return files_;
  }

 private:
  absl::Status Close() {
    if (writer_ == nullptr) return absl::OkStatus();
    rocksdb::Status s = writer_->Finish();
    writer_.reset();
    return ToStatus(s, absl::StrCat("bulk finish ", name_));
  }

  rocksdb::Options options_;
  std::string dir_, name_;
  std::unique_ptr<rocksdb::SstFileWriter> writer_;
  std::vector<std::string> files_;
};

class BulkLoader final : public RocksDbBulkLoader {
 public:
  BulkLoader(std::string path, RocksDbBackendOptions options)
      : path_(std::move(path)),
        tmp_(path_ + "/bulk-load.tmp"),
        options_(options),
        layout_(MakeStoreLayout(options)),
        events_(layout_.db_options, layout_.families[kEventsIndex].options, tmp_, "events") {}

  ~BulkLoader() override {
    if (!owns_path_) return;  // Init refused `path_`: it is someone else's
    std::error_code ignored;
    std::filesystem::remove_all(finished_ ? tmp_ : path_, ignored);
  }

  absl::Status Init() {
    std::error_code ec;
    if (std::filesystem::exists(path_, ec) && !std::filesystem::is_empty(path_, ec)) {
      return absl::FailedPreconditionError(
          absl::StrCat("bulk load: ", path_, " is not empty; a bulk load builds a new store"));
    }
    owns_path_ = true;
    std::filesystem::create_directories(tmp_, ec);
    if (ec) return absl::UnavailableError(absl::StrCat("cannot create ", tmp_, ": ", ec.message()));
    return absl::OkStatus();
  }

  absl::Status AddEvent(uint64_t sequence, std::string_view serialized_event) override {
    if (sequence <= last_sequence_) {
      return absl::InvalidArgumentError(
          absl::StrCat("bulk load: sequence ", sequence, " after ", last_sequence_));
    }
    last_sequence_ = sequence;
    return events_.Put(EncodeU64(sequence),
                       rocksdb::Slice(serialized_event.data(), serialized_event.size()));
  }

  void AddEventId(const DedupKey& key, uint64_t sequence) override {
    dedup_.emplace_back(DedupKeyBytes(key), sequence);
  }

  void SetVersion(const ResourceKey& key, const ResourceVersion& version) override {
    versions_[ResourceKeyBytes(key)] = EncodeVersion(version);
  }

  absl::Status Finish() override {
    // Dedup ids arrive in event order; sorted ones (as bench/backlog.cc makes) skip the sort.
    auto by_key = [](const auto& a, const auto& b) { return a.first < b.first; };
    if (!std::is_sorted(dedup_.begin(), dedup_.end(), by_key)) {
      std::sort(dedup_.begin(), dedup_.end(), by_key);
    }
    SortedTableWriter dedup(layout_.db_options, layout_.families[kDedupIndex].options, tmp_,
                            "dedup");
    for (std::size_t i = 0; i < dedup_.size(); ++i) {
      if (i > 0 && dedup_[i].first == dedup_[i - 1].first) {
        return absl::InvalidArgumentError("bulk load: an event id was added twice");
      }
      if (absl::Status s = dedup.Put(dedup_[i].first, EncodeU64(dedup_[i].second)); !s.ok()) {
        return s;
      }
    }
    dedup_.clear();
    dedup_.shrink_to_fit();
    SortedTableWriter versions(layout_.db_options, layout_.families[kVersionsIndex].options, tmp_,
                               "versions");
    for (const auto& [key, value] : versions_) {
      if (absl::Status s = versions.Put(key, value); !s.ok()) return s;
    }
    versions_.clear();

    std::vector<std::vector<std::string>> files(layout_.families.size());
    for (auto [index, writer] : {std::pair{kEventsIndex, &events_}, std::pair{kDedupIndex, &dedup},
                                 std::pair{kVersionsIndex, &versions}}) {
      absl::StatusOr<std::vector<std::string>> written = writer->Finish();
      if (!written.ok()) return written.status();
      files[index] = std::move(*written);
    }

    std::shared_ptr<rocksdb::Env> env;  // declared before db: outlives it
    std::unique_ptr<rocksdb::DB> db;
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    if (absl::Status s = OpenStore(path_, options_, &db, &handles, &env); !s.ok()) return s;
    absl::Status status;
    rocksdb::IngestExternalFileOptions ingest;
    ingest.move_files = true;  // hard links: the bytes are written once
    for (std::size_t family = 0; family < files.size() && status.ok(); ++family) {
      if (files[family].empty()) continue;
      status = ToStatus(db->IngestExternalFile(handles[family], files[family], ingest),
                        absl::StrCat("bulk ingest into ", layout_.families[family].name));
    }
    if (status.ok()) {
      rocksdb::WriteBatch wb;
      rocksdb::WriteOptions wo;
      wo.sync = true;
      status = ToStatus(wb.Put(handles[kMetaIndex], kLastSequenceKey, EncodeU64(last_sequence_)),
                        "bulk meta");
      if (status.ok()) {
        status =
            ToStatus(wb.Put(handles[kMetaIndex], kLastQuarantineIdKey, EncodeU64(0)), "bulk meta");
      }
      if (status.ok()) status = ToStatus(db->Write(wo, &wb), "bulk meta write");
    }
    for (rocksdb::ColumnFamilyHandle* h : handles) db->DestroyColumnFamilyHandle(h);
    if (absl::Status closed = ToStatus(db->Close(), "bulk close"); status.ok()) status = closed;
    if (status.ok()) finished_ = true;
    return status;
  }

 private:
  // Indexes into layout_.families (RocksDbBackend::Family order).
  static constexpr std::size_t kEventsIndex = 1;
  static constexpr std::size_t kDedupIndex = 2;
  static constexpr std::size_t kVersionsIndex = 3;
  static constexpr std::size_t kMetaIndex = 5;

  const std::string path_, tmp_;
  const RocksDbBackendOptions options_;
  const StoreLayout layout_;
  SortedTableWriter events_;
  uint64_t last_sequence_ = 0;
  std::vector<std::pair<std::string, uint64_t>> dedup_;
  std::map<std::string, std::string> versions_;
  bool owns_path_ = false;  // `path_` was absent or empty: an unfinished load removes it
  bool finished_ = false;
};

}  // namespace

absl::StatusOr<std::unique_ptr<RocksDbBulkLoader>> RocksDbBulkLoader::Create(
    const std::string& path, const RocksDbBackendOptions& options) {
  auto loader = std::make_unique<BulkLoader>(path, options);
  if (absl::Status s = loader->Init(); !s.ok()) return s;
  return loader;
}

absl::Status CheckpointRocksDbStore(const std::string& from, const std::string& to,
                                    const RocksDbBackendOptions& options) {
  std::error_code ec;
  if (!std::filesystem::exists(from + "/CURRENT", ec)) {
    return absl::NotFoundError(absl::StrCat("no pimgate store at ", from));
  }
  StoreLayout layout = MakeStoreLayout(options);
  layout.db_options.create_if_missing = false;
  // Recovery replays a WAL into memory without writing table files, and the checkpoint copies
  // the WAL: `from` is left as it was.
  layout.db_options.avoid_flush_during_recovery = true;
  layout.db_options.avoid_flush_during_shutdown = true;
  // RocksDB warns about its own file-deletion bookkeeping while it checkpoints: not news.
  layout.db_options.info_log->SetInfoLogLevel(rocksdb::InfoLogLevel::ERROR_LEVEL);
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(layout.db_options, from, layout.families, &handles, &raw);
  if (!s.ok()) return ToStatus(s, absl::StrCat("open ", from));
  std::unique_ptr<rocksdb::DB> db(raw);
  rocksdb::Checkpoint* checkpoint = nullptr;
  s = rocksdb::Checkpoint::Create(db.get(), &checkpoint);
  if (s.ok()) {
    s = checkpoint->CreateCheckpoint(to);
    delete checkpoint;
  }
  for (rocksdb::ColumnFamilyHandle* h : handles) db->DestroyColumnFamilyHandle(h);
  db->Close().PermitUncheckedError();
  return ToStatus(s, absl::StrCat("checkpoint of ", from, " in ", to));
}

}  // namespace pimgate
