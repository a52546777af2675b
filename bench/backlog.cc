// pimgate_backlog: prepares a pimgate store that already holds a large backlog of events, for the
// "ingest with a backlog" benchmark.
//
//   pimgate_backlog build --store DIR --events N [--resources R] [--source legacy]
//   pimgate_backlog checkpoint --from DIR --to DIR
//   pimgate_backlog append --config FILE --events N [--resources R] [--source legacy]
//                          [--per-request K] [--pause PLUGIN]...
//
// build: a new store at DIR holding N product.updated events (sequences 1..N) with their dedup
// index and the newest version of each of R resources (default 100000), written with
// pimgate::RocksDbBulkLoader: sorted table files ingested at the bottom level, so 10M events take
// a minute or two rather than the half hour the write path needs, and the store is left fully
// compacted, as an old store would be. Each event is a legacy Events API event exactly as
// pimgate_loadgen sends it, parsed by the gateway's own parser, under its own id, resource,
// sequence and times. Prints progress and a JSON summary on stdout.
//
// checkpoint: pimgate::CheckpointRocksDbStore of the store at --from in --to (a new directory):
// table files are hard links, so it takes a second whatever the size, and the copy can be
// written to without touching the original. Used to start each benchmark run from the same
// cached backlog.
//
// append: N product.updated events appended through pimgate::EventLog to the log that FILE's
// `store:` configures (RocksDB or a JetStream stream: whatever pimgate would open), in requests
// of K events (default 100) with up to 64 requests queued at once, so group commits fill. Each
// --pause PLUGIN first stores that plugin as paused (what `pimgatectl pause` stores), so a pimgate
// started on the log later holds the backlog until `pimgatectl resume`: a dispatch benchmark then
// measures the drain from the moment it resumes. Events as in build (loadgen's legacy body parsed
// by the gateway's parser), with new random ids and increasing versions (none stale). Prints a
// JSON summary {"events","seconds","events_per_s","head"} on stdout.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "bench/akeneo_payloads.h"
#include "config/config.h"
#include "core/log/event_log.h"
#include "core/log/log_backend.h"
#include "core/log/rocksdb_backend.h"
#include "gateway/payload_parser.h"
#include "google/protobuf/util/time_util.h"

namespace {

using Clock = std::chrono::steady_clock;

// Events per request (one request_id), and templates parsed from one body: the gateway's default
// gateway.max_events_per_request.
constexpr int kEventsPerRequest = 100;
// The backlog's events were received evenly over this much time, ending now (10M events: about
// 19 a second), so that time-bounded searches (the console's events page) find realistic windows.
// Under store.retention's default (7 days), so that a pimgate opening the store trims nothing.
constexpr int64_t kReceivedSpanUs = int64_t{6} * 24 * 3600 * 1'000'000;

[[noreturn]] void Usage(const std::string& error) {
  std::fprintf(
      stderr,
      "pimgate_backlog: %s\n\nUsage:\n  pimgate_backlog build --store DIR --events N "
      "[--resources R] [--source NAME]\n  pimgate_backlog checkpoint --from DIR --to "
      "DIR\n  pimgate_backlog append --config FILE --events N [--resources R] [--source NAME]\n"
      "    [--per-request K] [--pause PLUGIN]...\n",
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

google::protobuf::Timestamp Micros(int64_t us) {
  return google::protobuf::util::TimeUtil::MicrosecondsToTimestamp(us);
}

int Build(const std::string& store, uint64_t events, int resources, const std::string& source) {
  auto loader = pimgate::RocksDbBulkLoader::Create(store);
  if (!loader.ok()) Fail(absl::StrCat("bulk load into ", store, ": ", loader.status().message()));

  // Templates: the events of one legacy body exactly as pimgate_loadgen sends it, parsed by the
  // gateway's own parser and stamped as the gateway stamps them. Each backlog event is one
  // template's payload (type, author, data...) under its own id, resource, sequence and times:
  // the fields that vary are serialized per event and the rest once per template (protobuf
  // reads concatenated encodings as one message).
  std::mt19937_64 rng(20261126);
  const std::vector<std::string> pool = pimgate::bench::ResourcePool(rng, resources);
  const auto now = std::chrono::system_clock::now();
  const int64_t now_us =
      std::chrono::duration_cast<std::chrono::microseconds>(now.time_since_epoch()).count();
  pimgate::ParseLimits limits;
  limits.max_events = kEventsPerRequest;
  absl::StatusOr<pimgate::ParsedPayload> parsed = pimgate::ParseLegacyBatch(
      pimgate::bench::LegacyBody(rng, pool, kEventsPerRequest, pimgate::bench::Iso8601(now)),
      limits);
  if (!parsed.ok() || !parsed->rejected.empty()) Fail("the generated body does not parse");
  std::vector<std::string> rest;
  for (pimgate::v1::Event& event : parsed->events) {
    event.set_source(source);
    event.clear_id();
    event.clear_resource_id();
    event.clear_sequence();
    event.clear_occurred_at();
    event.clear_version_at();
    event.clear_received_at();
    event.clear_request_id();
    rest.push_back(event.SerializeAsString());
  }

  // Ids spread evenly over the UUID space in increasing order (so the dedup index is written
  // without a sort, yet new random ids land all over it, as with real traffic). Each event
  // occurred (its version) when it was received: times that grow with the sequence, all in the
  // past, so every backlog event is the newest of its resource when stored and none is stale.
  const uint64_t id_step = std::max<uint64_t>(1, UINT64_MAX / events);
  const int64_t first_received_us = now_us - kReceivedSpanUs - 1'000'000;
  const int64_t step_us = std::max<int64_t>(1, kReceivedSpanUs / static_cast<int64_t>(events));
  const auto start = Clock::now();
  auto last_report = start;
  std::string bytes;
  pimgate::v1::Event head;
  for (uint64_t i = 0; i < events; ++i) {
    const uint64_t sequence = i + 1;
    const std::string& resource = pool[rng() % pool.size()];
    const int64_t version_us = first_received_us + static_cast<int64_t>(i) * step_us;
    head.Clear();
    head.set_sequence(sequence);
    head.set_id(pimgate::bench::UuidFrom(i * id_step + rng() % (id_step / 2 + 1), rng()));
    head.set_resource_id(resource);
    *head.mutable_occurred_at() = Micros(version_us);
    *head.mutable_version_at() = Micros(version_us);
    *head.mutable_received_at() = Micros(version_us);
    head.set_request_id(absl::StrCat("backlog-", i / kEventsPerRequest + 1));
    bytes.clear();
    head.AppendToString(&bytes);
    const pimgate::v1::Event& tmpl = parsed->events[i % parsed->events.size()];
    bytes += rest[i % rest.size()];
    if (absl::Status s = (*loader)->AddEvent(sequence, bytes); !s.ok())
      Fail(std::string(s.message()));
    (*loader)->AddEventId(pimgate::DedupKey{source, head.id()}, sequence);
    (*loader)->SetVersion(pimgate::ResourceKey{source, tmpl.kind(), resource},
                          pimgate::ResourceVersion{version_us, sequence, false});
    if (Clock::now() - last_report > std::chrono::seconds(10)) {
      last_report = Clock::now();
      const double s = std::chrono::duration<double>(last_report - start).count();
      std::fprintf(stderr, "  %llu of %llu events written in %.0f s (%.0f events/s)\n",
                   static_cast<unsigned long long>(sequence),
                   static_cast<unsigned long long>(events), s, sequence / s);
    }
  }
  if (absl::Status s = (*loader)->Finish(); !s.ok()) Fail(std::string(s.message()));
  loader->reset();
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  std::fprintf(stderr, "  %llu events loaded in %.0f s (%.0f events/s)\n",
               static_cast<unsigned long long>(events), seconds, events / seconds);
  std::printf("{\"events\":%llu,\"head\":%llu,\"seconds\":%.1f,\"disk_bytes\":%llu}\n",
              static_cast<unsigned long long>(events), static_cast<unsigned long long>(events),
              seconds, static_cast<unsigned long long>(DirectoryBytes(store)));
  return 0;
}

// The store's record of a paused plugin, as the dispatcher keeps it (core/dispatch/dispatcher.cc,
// PausedKey). scripts/bench checks that no event reached the plugin before it resumed it, so a
// change of this key shows there as an error rather than as a wrong figure.
std::string PausedKey(const std::string& plugin) {
  return absl::StrCat("dispatch/", plugin, "/paused");
}

int Append(const std::string& config_path, uint64_t events, int resources,
           const std::string& source, int per_request, const std::vector<std::string>& pause) {
  absl::StatusOr<pimgate::Config> config = pimgate::LoadConfigFile(config_path);
  if (!config.ok()) Fail(absl::StrCat(config_path, ": ", config.status().message()));
  absl::StatusOr<std::unique_ptr<pimgate::EventLog>> log = pimgate::EventLog::Open(config->store);
  if (!log.ok()) Fail(std::string(log.status().message()));
  for (const std::string& plugin : pause) {
    if (absl::Status s = (*log)->PutMeta(PausedKey(plugin), "true"); !s.ok()) {
      Fail(absl::StrCat("pause ", plugin, ": ", s.message()));
    }
  }

  // Templates: one legacy body as pimgate_loadgen sends it, parsed by the gateway's parser.
  std::mt19937_64 rng{std::random_device{}()};
  const std::vector<std::string> pool = pimgate::bench::ResourcePool(rng, resources);
  pimgate::ParseLimits limits;
  limits.max_events = kEventsPerRequest;
  absl::StatusOr<pimgate::ParsedPayload> parsed = pimgate::ParseLegacyBatch(
      pimgate::bench::LegacyBody(rng, pool, kEventsPerRequest,
                                 pimgate::bench::Iso8601(std::chrono::system_clock::now())),
      limits);
  if (!parsed.ok() || !parsed->rejected.empty()) Fail("the generated body does not parse");

  constexpr int kInFlight = 64;
  absl::Mutex mu;
  int in_flight = 0;
  std::string failure;
  const int64_t first_us = std::chrono::duration_cast<std::chrono::microseconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count();
  const auto start = Clock::now();
  uint64_t i = 0;
  for (uint64_t request = 0; i < events; ++request) {
    pimgate::AppendRequest append;
    for (int k = 0; k < per_request && i < events; ++k, ++i) {
      pimgate::v1::Event event = parsed->events[i % parsed->events.size()];
      event.set_source(source);
      event.set_id(pimgate::bench::Uuid(rng));
      event.set_resource_id(pool[rng() % pool.size()]);
      // Versions grow with i: every event is the newest of its resource, none is stale.
      const int64_t us = first_us + static_cast<int64_t>(i);
      *event.mutable_occurred_at() = Micros(us);
      *event.mutable_version_at() = Micros(us);
      *event.mutable_received_at() = Micros(us);
      event.set_request_id(absl::StrCat("bench-append-", request));
      append.events.push_back(std::move(event));
    }
    {
      absl::MutexLock lock(&mu);
      mu.Await(absl::Condition(
          +[](int* n) { return *n < kInFlight; }, &in_flight));
      if (!failure.empty()) break;
      ++in_flight;
    }
    (*log)->Append(std::move(append),
                   [&mu, &in_flight, &failure](absl::StatusOr<pimgate::AppendResult> result) {
                     absl::MutexLock lock(&mu);
                     --in_flight;
                     if (!result.ok() && failure.empty())
                       failure = std::string(result.status().message());
                   });
  }
  {
    absl::MutexLock lock(&mu);
    mu.Await(absl::Condition(
        +[](int* n) { return *n == 0; }, &in_flight));
    if (!failure.empty()) Fail(absl::StrCat("append: ", failure));
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  const uint64_t head = (*log)->head();
  log->reset();
  std::printf("{\"events\":%llu,\"seconds\":%.2f,\"events_per_s\":%.0f,\"head\":%llu}\n",
              static_cast<unsigned long long>(events), seconds, events / seconds,
              static_cast<unsigned long long>(head));
  return 0;
}

int Checkpoint(const std::string& from, const std::string& to) {
  if (absl::Status s = pimgate::CheckpointRocksDbStore(from, to); !s.ok()) {
    Fail(std::string(s.message()));
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) Usage("a command is required (build, checkpoint or append)");
  const std::string command = argv[1];
  std::string store, from, to, config, source = "legacy";
  std::vector<std::string> pause;
  int per_request = 100;
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
    } else if (arg == "--config") {
      config = next();
    } else if (arg == "--pause") {
      pause.push_back(next());
    } else if (arg == "--per-request") {
      per_request = std::max(1, std::atoi(next().c_str()));
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
  if (command == "append") {
    if (config.empty() || events == 0) Usage("append needs --config and --events");
    return Append(config, events, resources, source, per_request, pause);
  }
  Usage("unknown command " + command);
}
