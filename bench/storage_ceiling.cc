// pimgate_storage_ceiling: what the disk under pimgate's store can do, as benchmark baselines
// measured in the same run and the same directory as pimgate's own store:
//   fsync    append one commit's bytes to a file and fdatasync it, one writer: the raw latency
//            distribution of a durable write on this disk;
//   rocksdb  a plain RocksDB WriteBatch with the same puts as pimgate's commit of one request
//            (events, dedup ids, resource versions, meta), WriteOptions::sync = true:
//              1 writer, closed loop (one fsync per request, what a naive receiver gets);
//              W writers, closed loop (RocksDB joins concurrent writers into one WAL write and
//              one fsync: the durable ceiling pimgate's group commit competes with);
//              W writers, open loop at R batches/s (latency from each batch's due time).
// Figures are printed, never asserted.
//
//   pimgate_storage_ceiling --dir DIR [--sample-from STORE] [--events 10] [--writers 8]
//       [--rate 1000] [--duration 5s] [--recycle-log-files N] [--manual-wal-flush] [--json]
//
// --sample-from reads up to 1000 events from a stopped pimgate store and writes those exact bytes
// (and their ids and resources) in each batch, so a batch is the size of pimgate's commit of one
// request of --events events. Without it, events of --event-bytes random bytes are written.
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "bench/akeneo_payloads.h"
#include "bench/latency_histogram.h"
#include "config/config.h"
#include "core/log/rocksdb_backend.h"
#include "rocksdb/db.h"
#include "rocksdb/options.h"
#include "rocksdb/write_batch.h"

namespace {

using Clock = std::chrono::steady_clock;
using pimgate::bench::LatencyHistogram;

struct Options {
  std::string dir;
  std::string sample_from;
  int events = 10;
  int event_bytes = 700;
  int writers = 8;
  double rate = 1000;
  std::chrono::milliseconds duration{5'000};
  int recycle_log_files = 0;
  bool manual_wal_flush = false;
  bool json = false;
};

[[noreturn]] void Usage(const std::string& error) {
  std::fprintf(stderr,
               "pimgate_storage_ceiling: %s\n\nUsage: pimgate_storage_ceiling --dir DIR "
               "[--sample-from STORE] [--events N]\n  [--event-bytes B] [--writers W] [--rate R] "
               "[--duration 5s] [--recycle-log-files N]\n  [--manual-wal-flush] [--json]\n",
               error.c_str());
  std::exit(2);
}

Options ParseArgs(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) Usage(arg + " needs a value");
      return argv[++i];
    };
    if (arg == "--dir") {
      o.dir = next();
    } else if (arg == "--sample-from") {
      o.sample_from = next();
    } else if (arg == "--events") {
      o.events = std::max(1, std::stoi(next()));
    } else if (arg == "--event-bytes") {
      o.event_bytes = std::max(1, std::stoi(next()));
    } else if (arg == "--writers") {
      o.writers = std::max(1, std::stoi(next()));
    } else if (arg == "--rate") {
      o.rate = std::stod(next());
    } else if (arg == "--duration") {
      auto d = pimgate::ParseDuration(next());
      if (!d.ok()) Usage("--duration: " + std::string(d.status().message()));
      o.duration = std::chrono::duration_cast<std::chrono::milliseconds>(*d);
    } else if (arg == "--recycle-log-files") {
      o.recycle_log_files = std::max(0, std::stoi(next()));
    } else if (arg == "--manual-wal-flush") {
      o.manual_wal_flush = true;
    } else if (arg == "--json") {
      o.json = true;
    } else {
      Usage("unknown argument " + arg);
    }
  }
  if (o.dir.empty()) Usage("--dir is required");
  return o;
}

[[noreturn]] void Fail(const std::string& what) {
  std::fprintf(stderr, "pimgate_storage_ceiling: %s\n", what.c_str());
  std::exit(1);
}

// The key material and value bytes of the events written in each batch.
struct SampleEvent {
  std::string dedup_key;     // source '\0' event id
  std::string resource_key;  // source '\0' kind '\0' resource id
  std::string bytes;         // the serialized event
};

std::vector<SampleEvent> LoadSample(const Options& o) {
  std::vector<SampleEvent> sample;
  if (!o.sample_from.empty()) {
    auto backend = pimgate::OpenRocksDbBackend(o.sample_from);
    if (!backend.ok()) Fail(absl::StrCat("--sample-from: ", backend.status().message()));
    auto events = (*backend)->ReadEvents(1, 1000);
    if (!events.ok()) Fail(absl::StrCat("--sample-from: ", events.status().message()));
    for (const pimgate::v1::Event& e : *events) {
      sample.push_back({absl::StrCat(e.source(), std::string(1, '\0'), e.id()),
                        absl::StrCat(e.source(), std::string(1, '\0'), e.kind(),
                                     std::string(1, '\0'), e.resource_id()),
                        e.SerializeAsString()});
    }
    if (sample.empty()) Fail("--sample-from: the store holds no event");
    return sample;
  }
  std::mt19937_64 rng(42);
  for (int i = 0; i < 1000; ++i) {
    std::string bytes(o.event_bytes, '\0');
    for (char& c : bytes) c = static_cast<char>(rng());
    sample.push_back({absl::StrCat("legacy", std::string(1, '\0'), pimgate::bench::Uuid(rng)),
                      absl::StrCat("legacy", std::string(1, '\0'), "product", std::string(1, '\0'),
                                   pimgate::bench::Uuid(rng)),
                      std::move(bytes)});
  }
  return sample;
}

std::string U64Key(uint64_t v) {
  std::string out(8, '\0');
  for (int i = 7; i >= 0; --i, v >>= 8) out[i] = static_cast<char>(v & 0xff);
  return out;
}

struct Figures {
  double ops_per_s = 0;
  LatencyHistogram histogram;
  uint64_t ops = 0;
};

std::string FiguresJson(const Figures& f, int events_per_op) {
  const double ms = 1e-6;
  char buf[256];
  std::snprintf(buf, sizeof(buf),
                "{\"ops_per_s\":%.1f,\"events_per_s\":%.1f,\"ops\":%llu,\"p50_ms\":%.3f,"
                "\"p99_ms\":%.3f,\"p999_ms\":%.3f,\"max_ms\":%.3f}",
                f.ops_per_s, f.ops_per_s * events_per_op, static_cast<unsigned long long>(f.ops),
                f.histogram.Percentile(0.50) * ms, f.histogram.Percentile(0.99) * ms,
                f.histogram.Percentile(0.999) * ms, f.histogram.max() * ms);
  return buf;
}

void Report(const char* name, const Figures& f, int events_per_op) {
  const double ms = 1e-6;
  std::fprintf(stderr,
               "  %-34s %9.0f ops/s %10.0f events/s  p50 %.2f ms  p99 %.2f ms  p99.9 %.2f ms  "
               "max %.2f ms\n",
               name, f.ops_per_s, f.ops_per_s * events_per_op, f.histogram.Percentile(0.50) * ms,
               f.histogram.Percentile(0.99) * ms, f.histogram.Percentile(0.999) * ms,
               f.histogram.max() * ms);
}

// Appends `bytes` and fdatasyncs, one writer, for `duration`: the disk's durable write latency.
Figures MeasureFsync(const std::string& dir, std::size_t bytes,
                     std::chrono::milliseconds duration) {
  const std::string path = dir + "/fsync-probe";
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) Fail("cannot create " + path);
  const std::string block(bytes, 'x');
  Figures f;
  const auto start = Clock::now();
  const auto end = start + duration;
  for (auto now = start; now < end;) {
    if (::write(fd, block.data(), block.size()) != static_cast<ssize_t>(block.size()) ||
        ::fdatasync(fd) != 0) {
      Fail("write/fdatasync failed on " + path);
    }
    const auto done = Clock::now();
    f.histogram.Record(std::chrono::duration_cast<std::chrono::nanoseconds>(done - now).count());
    ++f.ops;
    now = done;
  }
  f.ops_per_s = f.ops / std::chrono::duration<double>(Clock::now() - start).count();
  ::close(fd);
  std::filesystem::remove(path);
  return f;
}

class Store {
 public:
  explicit Store(const Options& o) : o_(o) {
    rocksdb::DBOptions db_options;
    db_options.create_if_missing = true;
    db_options.create_missing_column_families = true;
    db_options.recycle_log_file_num = o.recycle_log_files;
    db_options.manual_wal_flush = o.manual_wal_flush;
    std::vector<rocksdb::ColumnFamilyDescriptor> families = {
        {rocksdb::kDefaultColumnFamilyName, {}},
        {"events", {}},
        {"dedup", {}},
        {"versions", {}},
        {"meta", {}}};
    rocksdb::DB* raw = nullptr;
    rocksdb::Status s =
        rocksdb::DB::Open(db_options, o.dir + "/rocksdb", families, &handles_, &raw);
    if (!s.ok()) Fail("cannot open RocksDB: " + s.ToString());
    db_.reset(raw);
  }
  ~Store() {
    for (auto* h : handles_) db_->DestroyColumnFamilyHandle(h);
    db_->Close().PermitUncheckedError();
  }

  // One durable batch: the puts of pimgate's commit of one request. Thread-safe.
  void Write(const std::vector<SampleEvent>& sample) {
    const uint64_t first = next_.fetch_add(o_.events) + 1;
    rocksdb::WriteBatch wb;
    for (int i = 0; i < o_.events; ++i) {
      const uint64_t sequence = first + i;
      const SampleEvent& e = sample[sequence % sample.size()];
      // Unique dedup keys (a suffix), as every new event id is.
      wb.Put(handles_[1], U64Key(sequence), e.bytes).PermitUncheckedError();
      wb.Put(handles_[2], absl::StrCat(e.dedup_key, sequence), U64Key(sequence))
          .PermitUncheckedError();
      wb.Put(handles_[3], e.resource_key, U64Key(sequence) + U64Key(sequence))
          .PermitUncheckedError();
    }
    wb.Put(handles_[4], "last_sequence", U64Key(first + o_.events - 1)).PermitUncheckedError();
    wb.Put(handles_[4], "last_quarantine_id", U64Key(0)).PermitUncheckedError();
    rocksdb::WriteOptions wo;
    rocksdb::Status s;
    if (o_.manual_wal_flush) {
      s = db_->Write(wo, &wb);
      if (s.ok()) s = db_->FlushWAL(/*sync=*/true);
    } else {
      wo.sync = true;
      s = db_->Write(wo, &wb);
    }
    if (!s.ok()) Fail("RocksDB write: " + s.ToString());
  }

  std::size_t BatchBytes(const std::vector<SampleEvent>& sample) const {
    std::size_t bytes = 0;
    for (int i = 0; i < o_.events; ++i) {
      const SampleEvent& e = sample[i % sample.size()];
      bytes += 8 + e.bytes.size() + e.dedup_key.size() + 8 + 8 + e.resource_key.size() + 16;
    }
    return bytes + 2 * (16 + 8);
  }

 private:
  const Options& o_;
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
  std::atomic<uint64_t> next_{0};
};

// `writers` threads writing batches for `duration`: closed loop (rate 0: each writes as soon as
// its last write returned) or open loop (batch i due at start + i/rate; latency from that due
// time, so stalls are not hidden by writers that stop sending while they wait).
Figures MeasureRocksDb(Store& store, const std::vector<SampleEvent>& sample, int writers,
                       double rate, std::chrono::milliseconds duration) {
  std::vector<Figures> per(writers);
  std::atomic<uint64_t> ticket{0};
  const auto start = Clock::now();
  const auto end = start + duration;
  std::vector<std::thread> threads;
  for (int w = 0; w < writers; ++w) {
    threads.emplace_back([&, w] {
      Figures& f = per[w];
      while (true) {
        Clock::time_point due = Clock::now();
        if (rate > 0) {
          due = start +
                std::chrono::nanoseconds(static_cast<int64_t>(ticket.fetch_add(1) * 1e9 / rate));
          if (due >= end) break;
          std::this_thread::sleep_until(due);
        } else if (due >= end) {
          break;
        }
        store.Write(sample);
        f.histogram.Record(
            std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - due).count());
        ++f.ops;
      }
    });
  }
  for (auto& t : threads) t.join();
  Figures total;
  for (const Figures& f : per) {
    total.histogram.Merge(f.histogram);
    total.ops += f.ops;
  }
  total.ops_per_s = total.ops / std::chrono::duration<double>(Clock::now() - start).count();
  return total;
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = ParseArgs(argc, argv);
  std::filesystem::create_directories(o.dir);
  const std::vector<SampleEvent> sample = LoadSample(o);
  Store store(o);
  const std::size_t batch_bytes = store.BatchBytes(sample);
  std::fprintf(stderr,
               "storage ceiling in %s: batches of %d events, %zu bytes of keys and values "
               "(events of %zu bytes%s)%s%s\n",
               o.dir.c_str(), o.events, batch_bytes, sample.front().bytes.size(),
               o.sample_from.empty() ? ", random" : ", sampled from pimgate's store",
               o.recycle_log_files > 0 ? ", recycled WAL files" : "",
               o.manual_wal_flush ? ", FlushWAL(sync) per batch" : "");

  const Figures fsync = MeasureFsync(o.dir, batch_bytes, o.duration);
  Report("write+fdatasync, 1 writer", fsync, o.events);
  const Figures single = MeasureRocksDb(store, sample, 1, 0, o.duration);
  Report("rocksdb sync batch, 1 writer", single, o.events);
  const Figures group = MeasureRocksDb(store, sample, o.writers, 0, o.duration);
  Report(absl::StrCat("rocksdb sync batch, ", o.writers, " writers").c_str(), group, o.events);
  Figures open;
  if (o.rate > 0) {
    open = MeasureRocksDb(store, sample, o.writers, o.rate, o.duration);
    Report(absl::StrCat("rocksdb sync batch, open ", o.rate, "/s").c_str(), open, o.events);
  }
  if (o.json) {
    std::printf(
        "{\"events_per_batch\":%d,\"batch_bytes\":%zu,\"writers\":%d,\"rate\":%.1f,"
        "\"fsync\":%s,\"single\":%s,\"group\":%s,\"open\":%s}\n",
        o.events, batch_bytes, o.writers, o.rate, FiguresJson(fsync, o.events).c_str(),
        FiguresJson(single, o.events).c_str(), FiguresJson(group, o.events).c_str(),
        o.rate > 0 ? FiguresJson(open, o.events).c_str() : "null");
  }
  return 0;
}
