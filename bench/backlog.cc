// pimgate_backlog: prepares a pimgate store that already holds a large backlog of events, for the
// "ingest with a backlog" benchmark.
//
//   pimgate_backlog build --store DIR --events N [--resources R] [--source legacy]
//   pimgate_backlog checkpoint --from DIR --to DIR
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
#include "bench/akeneo_payloads.h"
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

int Checkpoint(const std::string& from, const std::string& to) {
  if (absl::Status s = pimgate::CheckpointRocksDbStore(from, to); !s.ok()) {
    Fail(std::string(s.message()));
  }
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
