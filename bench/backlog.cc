// pimgate_backlog: prepares a pimgate store that already holds a large backlog of events, for the
// "ingest with a backlog" benchmark.
//
//   pimgate_backlog build --store DIR --events N [--resources R] [--source legacy]
//   pimgate_backlog checkpoint --from DIR --to DIR
//
// build: appends N events to the store at DIR through the real EventLog and RocksDB backend
// (dedup and staleness lookups, group commit), with store.sync false and requests of 100 events,
// each a legacy Events API body exactly as pimgate_loadgen sends it, parsed by the gateway's own
// parser. R resources (default 100000), events stamped with the current time. Prints progress and
// a JSON summary on stdout.
//
// checkpoint: a RocksDB checkpoint of the store at --from in --to (a new directory): table files
// are hard links, so it takes a second whatever the size, and the copy can be written to without
// touching the original. Used to start each benchmark run from the same cached backlog.
#include <sys/resource.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "bench/akeneo_payloads.h"
#include "core/event_log.h"
#include "core/rocksdb_backend.h"
#include "gateway/payload_parser.h"
#include "google/protobuf/util/time_util.h"
#include "rocksdb/db.h"
#include "rocksdb/utilities/checkpoint.h"

namespace {

using Clock = std::chrono::steady_clock;

// Events per AppendRequest: the gateway's default gateway.max_events_per_request.
constexpr int kEventsPerRequest = 100;
// Requests queued in the log at once: enough for full group commits, bounded so the builder does
// not hold millions of events in memory.
constexpr uint64_t kQueueDepth = 512;

[[noreturn]] void Usage(const std::string& error) {
  std::fprintf(stderr,
               "pimgate_backlog: %s\n\nUsage:\n  pimgate_backlog build --store DIR --events N "
               "[--resources R] [--source NAME]\n  pimgate_backlog checkpoint --from DIR --to "
               "DIR\n",
               error.c_str());
  std::exit(2);
}

[[noreturn]] void Fail(const std::string& what) {
  std::fprintf(stderr, "pimgate_backlog: %s\n", what.c_str());
  std::exit(1);
}

uint64_t DirectoryBytes(const std::string& dir) {
  uint64_t bytes = 0;
  std::error_code ec;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir, ec)) {
    if (entry.is_regular_file(ec)) bytes += entry.file_size(ec);
  }
  return bytes;
}

int Build(const std::string& store, uint64_t events, int resources, const std::string& source) {
  std::error_code ec;
  std::filesystem::create_directories(store, ec);
  if (ec) Fail(absl::StrCat("cannot create ", store, ": ", ec.message()));
  auto backend = pimgate::OpenRocksDbBackend(store);
  if (!backend.ok()) Fail(absl::StrCat("opening ", store, ": ", backend.status().message()));
  pimgate::EventLogOptions log_options;
  log_options.sync = false;  // the backlog is built, not measured
  auto log = pimgate::EventLog::Open(std::move(*backend), log_options);
  if (!log.ok()) Fail(absl::StrCat("opening the event log: ", log.status().message()));
  const uint64_t start_head = (*log)->head();

  struct Progress {
    absl::Mutex mu;
    uint64_t outstanding ABSL_GUARDED_BY(mu) = 0;
    uint64_t accepted ABSL_GUARDED_BY(mu) = 0;
    std::string failure ABSL_GUARDED_BY(mu);
  };
  auto progress = std::make_shared<Progress>();
  std::mt19937_64 rng(20261126);
  const std::vector<std::string> pool = pimgate::bench::ResourcePool(rng, resources);
  pimgate::ParseLimits limits;
  limits.max_events = kEventsPerRequest;
  const auto start = Clock::now();
  auto last_report = start;
  uint64_t made = 0, request_number = 0;
  while (made < events) {
    const int n = static_cast<int>(std::min<uint64_t>(kEventsPerRequest, events - made));
    const auto now = std::chrono::system_clock::now();
    const std::string body = pimgate::bench::LegacyBody(rng, pool, n, pimgate::bench::Iso8601(now));
    absl::StatusOr<pimgate::ParsedPayload> parsed = pimgate::ParseLegacyBatch(body, limits);
    if (!parsed.ok() || !parsed->rejected.empty()) Fail("the generated body does not parse");
    pimgate::AppendRequest request;
    request.events = std::move(parsed->events);
    const auto received_at = google::protobuf::util::TimeUtil::MicrosecondsToTimestamp(
        std::chrono::duration_cast<std::chrono::microseconds>(now.time_since_epoch()).count());
    const std::string request_id = absl::StrCat("backlog-", ++request_number);
    for (pimgate::v1::Event& event : request.events) {
      event.set_source(source);  // as the gateway does
      event.set_request_id(request_id);
      *event.mutable_received_at() = received_at;
    }
    made += n;
    {
      absl::MutexLock lock(&progress->mu);
      progress->mu.Await(absl::Condition(
          +[](Progress* p)
               ABSL_EXCLUSIVE_LOCKS_REQUIRED(p->mu) { return p->outstanding < kQueueDepth; },
          progress.get()));
      if (!progress->failure.empty()) Fail("append: " + progress->failure);
      ++progress->outstanding;
    }
    (*log)->Append(std::move(request), [progress](absl::StatusOr<pimgate::AppendResult> result) {
      absl::MutexLock lock(&progress->mu);
      --progress->outstanding;
      if (!result.ok()) {
        progress->failure = std::string(result.status().message());
      } else {
        progress->accepted += result->accepted;
      }
    });
    if (Clock::now() - last_report > std::chrono::seconds(10)) {
      last_report = Clock::now();
      const double s = std::chrono::duration<double>(last_report - start).count();
      std::fprintf(stderr, "  %llu of %llu events queued in %.0f s (%.0f events/s)\n",
                   static_cast<unsigned long long>(made), static_cast<unsigned long long>(events),
                   s, made / s);
    }
  }
  {
    absl::MutexLock lock(&progress->mu);
    progress->mu.Await(absl::Condition(
        +[](Progress* p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(p->mu) { return p->outstanding == 0; },
        progress.get()));
    if (!progress->failure.empty()) Fail("append: " + progress->failure);
  }
  const uint64_t head = (*log)->head();
  log->reset();  // drains and closes RocksDB
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  std::fprintf(stderr, "  %llu events appended in %.0f s (%.0f events/s); log head %llu\n",
               static_cast<unsigned long long>(head - start_head), seconds,
               (head - start_head) / seconds, static_cast<unsigned long long>(head));
  std::printf("{\"events\":%llu,\"head\":%llu,\"seconds\":%.1f,\"disk_bytes\":%llu}\n",
              static_cast<unsigned long long>(head - start_head),
              static_cast<unsigned long long>(head), seconds,
              static_cast<unsigned long long>(DirectoryBytes(store)));
  return 0;
}

int Checkpoint(const std::string& from, const std::string& to) {
  std::vector<std::string> names;
  rocksdb::Status s = rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), from, &names);
  if (!s.ok()) Fail(absl::StrCat("listing the column families of ", from, ": ", s.ToString()));
  std::vector<rocksdb::ColumnFamilyDescriptor> families;
  for (const std::string& name : names) families.emplace_back(name, rocksdb::ColumnFamilyOptions());
  // Recovery replays the WAL into memory without writing table files, and the checkpoint copies
  // the WAL: the original store is left as it was.
  rocksdb::DBOptions db_options;
  db_options.avoid_flush_during_recovery = true;
  db_options.avoid_flush_during_shutdown = true;
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  s = rocksdb::DB::Open(db_options, from, families, &handles, &raw);
  if (!s.ok()) Fail(absl::StrCat("opening ", from, ": ", s.ToString()));
  std::unique_ptr<rocksdb::DB> db(raw);
  rocksdb::Checkpoint* checkpoint = nullptr;
  s = rocksdb::Checkpoint::Create(db.get(), &checkpoint);
  if (s.ok()) {
    s = checkpoint->CreateCheckpoint(to);
    delete checkpoint;
  }
  for (auto* h : handles) db->DestroyColumnFamilyHandle(h);
  db->Close().PermitUncheckedError();
  if (!s.ok()) Fail(absl::StrCat("checkpoint of ", from, " in ", to, ": ", s.ToString()));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) Usage("a command is required (build or checkpoint)");
  const std::string command = argv[1];
  std::string store, from, to, source = "legacy";
  uint64_t events = 0;
  int resources = 100'000;
  for (int i = 2; i < argc; ++i) {
    const std::string arg = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) Usage(arg + " needs a value");
      return argv[++i];
    };
    if (arg == "--store") {
      store = next();
    } else if (arg == "--events") {
      events = std::strtoull(next().c_str(), nullptr, 10);
    } else if (arg == "--resources") {
      resources = std::max(1, std::atoi(next().c_str()));
    } else if (arg == "--source") {
      source = next();
    } else if (arg == "--from") {
      from = next();
    } else if (arg == "--to") {
      to = next();
    } else {
      Usage("unknown argument " + arg);
    }
  }
  if (command == "build") {
    if (store.empty() || events == 0) Usage("build needs --store and --events");
    return Build(store, events, resources, source);
  }
  if (command == "checkpoint") {
    if (from.empty() || to.empty()) Usage("checkpoint needs --from and --to");
    return Checkpoint(from, to);
  }
  Usage("unknown command " + command);
}
