// pimgate_dispatch_bench: how fast the dispatcher drains a RocksDB event log into one plugin
// process over gRPC, next to baselines measured in the same run: the raw log read rate, protobuf
// encode+decode of the same Delivery messages, and a bare gRPC stream into the same plugin
// without the dispatcher. Figures are printed, never asserted.
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "config/config.h"
#include "core/dispatch/delivery_stream.h"
#include "core/dispatch/dispatcher.h"
#include "core/dispatch/event_wire.h"
#include "core/dispatch/plugin_supervisor.h"
#include "core/log/event_log.h"
#include "google/protobuf/arena.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/time_util.h"
#include "grpcpp/grpcpp.h"
#include "pimgate/v1/plugin.grpc.pb.h"
#include "spdlog/spdlog.h"

#ifndef PIMGATE_BENCH_SINK
#define PIMGATE_BENCH_SINK "pimgate_bench_sink"
#endif

namespace {

using Clock = std::chrono::steady_clock;
using google::protobuf::util::TimeUtil;

// Events per AppendRequest during the preload: a legacy Events API batch.
constexpr int kEventsPerRequest = 10;
// Append requests queued at once during the preload: enough to fill group commits, bounded so
// the preload does not hold the whole data set in memory.
constexpr int kPreloadQueueDepth = 256;
// Events per ReadEvents call of the raw read baseline: the dispatcher's default read_batch.
constexpr std::size_t kReadBatch = 512;
// Distinct events cycled through by the encode/decode and bare-stream baselines (read back from
// the log, so they are the same messages the dispatcher sends).
constexpr std::size_t kMessagePool = 4096;
// How long a plugin may take to report SERVING, and a dispatch run to finish.
constexpr absl::Duration kServingTimeout = absl::Seconds(30);
constexpr absl::Duration kRunTimeout = absl::Minutes(10);

struct Options {
  uint64_t events = 200'000;
  uint32_t max_in_flight = 64;
  int resources = 1000;
  int repeat = 1;  // bare-stream and dispatch runs, interleaved; medians are reported
  std::vector<std::string> plugin_cmd;  // empty: pimgate_bench_sink
  std::vector<std::pair<std::string, std::string>> plugin_env;
  bool small = false;  // Event Platform-sized events (the resource's uuid only) instead of products
  bool skip_stream_baseline = false;
  bool keep = false;
  bool json = false;
};

constexpr char kUsage[] =
    R"(Usage: pimgate_dispatch_bench [--events N] [--max-in-flight K] [--resources N]
  [--repeat R] [--plugin-cmd "ARGV..."] [--plugin-env NAME=VALUE]...
  [--small-events] [--no-stream-baseline] [--keep] [--json]

Preloads N events (default 200000; ~1.2 KB each, ~1 KB of it data; in requests of 10,
store.sync false) into a RocksDB log in a temp dir, then measures how fast a Dispatcher with one
plugin (max_in_flight K, default 64) moves its cursor to the log head. Baselines from the same
run: the raw log read, protobuf copy+serialize+parse per CPU second, and a bare gRPC stream
into a fresh process of the same plugin (same messages and window, no dispatcher).

--plugin-cmd  the plugin's argv, split on spaces (default: pimgate_bench_sink). It inherits this
              environment plus --plugin-env and BENCH_SINK_OUT, e.g. for Python:
                PYTHONPATH=build/python pimgate_dispatch_bench --events 20000 \
                  --plugin-cmd "/usr/bin/python3 bench/bench_sink.py"
--repeat R    runs the bare stream and the dispatch R times, interleaved, each with a fresh
              plugin process (and cursor), and reports medians
--small-events  events as the Event Platform sends them (data: the product's uuid and the
              author, ~100 bytes) instead of whole products (~1 KB of data, legacy Events API)
--keep        keeps the temp dir
--json        prints one JSON object on stdout, the report on stderr
)";

[[noreturn]] void Usage(const std::string& error) {
  std::fprintf(stderr, "pimgate_dispatch_bench: %s\n\n%s", error.c_str(), kUsage);
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
    auto positive = [&](const std::string& text) -> uint64_t {
      char* end = nullptr;
      const unsigned long long v = std::strtoull(text.c_str(), &end, 10);
      if (text.empty() || *end != '\0' || v == 0) Usage(arg + ": a positive integer, got " + text);
      return v;
    };
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    } else if (arg == "--events") {
      o.events = positive(next());
    } else if (arg == "--max-in-flight") {
      o.max_in_flight = static_cast<uint32_t>(std::min<uint64_t>(positive(next()), 10'000));
    } else if (arg == "--resources") {
      o.resources = static_cast<int>(std::min<uint64_t>(positive(next()), 1'000'000));
    } else if (arg == "--repeat") {
      o.repeat = static_cast<int>(std::min<uint64_t>(positive(next()), 100));
    } else if (arg == "--plugin-cmd") {
      o.plugin_cmd = absl::StrSplit(next(), ' ', absl::SkipWhitespace());
    } else if (arg == "--plugin-env") {
      const std::string kv = next();
      const std::size_t eq = kv.find('=');
      if (eq == std::string::npos || eq == 0) Usage("--plugin-env wants NAME=VALUE");
      o.plugin_env.emplace_back(kv.substr(0, eq), kv.substr(eq + 1));
    } else if (arg == "--small-events") {
      o.small = true;
    } else if (arg == "--no-stream-baseline") {
      o.skip_stream_baseline = true;
    } else if (arg == "--keep") {
      o.keep = true;
    } else if (arg == "--json") {
      o.json = true;
    } else {
      Usage("unknown argument " + arg);
    }
  }
  if (o.plugin_cmd.empty()) o.plugin_cmd = {PIMGATE_BENCH_SINK};
  return o;
}

// The human-readable report: stdout, or stderr when stdout carries --json.
FILE* report = stdout;

__attribute__((format(printf, 1, 2))) void Say(const char* format, ...) {
  va_list args;
  va_start(args, format);
  std::vfprintf(report, format, args);
  va_end(args);
  std::fflush(report);
}

[[noreturn]] void Fail(const std::string& what, const absl::Status& status) {
  std::fprintf(stderr, "pimgate_dispatch_bench: %s: %s\n", what.c_str(),
               std::string(status.message()).c_str());
  std::exit(1);
}

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// CPU seconds (user + system) of this process, every thread included (RocksDB's too).
double SelfCpuSeconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  auto secs = [](const timeval& tv) { return tv.tv_sec + tv.tv_usec * 1e-6; };
  return secs(usage.ru_utime) + secs(usage.ru_stime);
}

// Peak resident set size of this process so far, in MiB.
double PeakRssMib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss / 1024.0;  // ru_maxrss is in KiB on Linux
}

// CPU seconds (user + system) of another process, from /proc/<pid>/stat; 0 when unknown.
double ProcessCpuSeconds(pid_t pid) {
  if (pid <= 0) return 0;
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // Fields after the parenthesised command name (which may contain spaces): state is field 3,
  // utime and stime are fields 14 and 15.
  const std::size_t close = stat.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream fields(stat.substr(close + 2));
  std::string field;
  unsigned long long utime = 0, stime = 0;
  for (int n = 3; fields >> field; ++n) {
    if (n == 14) utime = std::strtoull(field.c_str(), nullptr, 10);
    if (n == 15) {
      stime = std::strtoull(field.c_str(), nullptr, 10);
      break;
    }
  }
  return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// CPU used by this process and by the plugin over one phase. CPU seconds per event are what
// this machine's other load disturbs least: a busy neighbour stretches the wall clock, not them.
class CpuMeter {
 public:
  explicit CpuMeter(pid_t plugin = 0)
      : plugin_(plugin), self_(SelfCpuSeconds()), child_(ProcessCpuSeconds(plugin)) {}
  // CPU seconds since construction: this process, the plugin.
  double self() const { return SelfCpuSeconds() - self_; }
  double plugin() const { return plugin_ > 0 ? ProcessCpuSeconds(plugin_) - child_ : 0; }
  std::string Describe(double wall_seconds, uint64_t events) const {
    const double self_s = self(), plugin_s = plugin();
    char buf[160];
    if (plugin_ <= 0) {
      std::snprintf(buf, sizeof(buf), "cpu %.2f cores, %.1f us/event", self_s / wall_seconds,
                    self_s * 1e6 / events);
    } else {
      std::snprintf(buf, sizeof(buf), "cpu %.2f cores here + %.2f in the plugin, %.1f us/event",
                    self_s / wall_seconds, plugin_s / wall_seconds,
                    (self_s + plugin_s) * 1e6 / events);
    }
    return buf;
  }

 private:
  pid_t plugin_;
  double self_;
  double child_;
};

// The `data.resource` of a product event as Akeneo's Events API sends it: ~1 KB of JSON with
// the usual mix of scalars, lists, localized/scoped values, prices and associations.
// The `data` of an Event Platform product event: the product's uuid and the author.
google::protobuf::Struct SmallTemplate() {
  static constexpr char kJson[] = R"json({
    "product": {"uuid": "00000000-0000-4000-8000-000000000000"},
    "author": {"identifier": "dispatch-bench", "type": "api"}
  })json";
  google::protobuf::Struct data;
  if (auto status = google::protobuf::util::JsonStringToMessage(kJson, &data); !status.ok()) {
    std::fprintf(stderr, "bad small template: %s\n", status.ToString().c_str());
    std::exit(1);
  }
  return data;
}

google::protobuf::Struct ProductTemplate() {
  static constexpr char kJson[] = R"json({
    "uuid": "00000000-0000-4000-8000-000000000000",
    "identifier": "sku-000000",
    "enabled": true,
    "family": "shoes",
    "categories": ["summer_collection", "men", "running"],
    "groups": [],
    "parent": null,
    "values": {
      "name": [{"locale": "en_US", "scope": null, "data": "Trail runner 42"}],
      "description": [{"locale": "en_US", "scope": "ecommerce",
        "data": "A light trail running shoe with a grippy outsole and a cushioned midsole."}],
      "price": [{"locale": null, "scope": null,
                 "data": [{"amount": "89.90", "currency": "EUR"}]}],
      "weight": [{"locale": null, "scope": null, "data": {"amount": "320", "unit": "GRAM"}}],
      "color": [{"locale": null, "scope": null, "data": "blue"}],
      "size": [{"locale": null, "scope": null, "data": "42"}]
    },
    "created": "2026-01-15T09:30:00+00:00",
    "updated": "2026-11-20T10:15:00+00:00",
    "associations": {"X_SELL": {"products": ["sku-000001"], "product_models": [], "groups": []}},
    "quantified_associations": {}
  })json";
  google::protobuf::Struct data;
  if (auto status = google::protobuf::util::JsonStringToMessage(kJson, &data); !status.ok()) {
    std::fprintf(stderr, "bad product template: %s\n", status.ToString().c_str());
    std::exit(1);
  }
  return data;
}

std::string Uuid(std::mt19937_64& rng) {
  const uint64_t a = rng(), b = rng();
  char buf[40];
  std::snprintf(buf, sizeof(buf), "%08x-%04x-4%03x-%04x-%012llx", static_cast<unsigned>(a >> 32),
                static_cast<unsigned>((a >> 16) & 0xffff), static_cast<unsigned>(a & 0xfff),
                static_cast<unsigned>((b >> 48) & 0x3fff) | 0x8000,
                static_cast<unsigned long long>(b & 0xffffffffffffULL));
  return buf;
}

// Builds the preload's events: unique ids, resources drawn from a fixed pool, versions strictly
// increasing so that none is stale (every event is delivered).
class EventFactory {
 public:
  EventFactory(int resources, bool small)
      : rng_(42), small_(small), template_(small ? SmallTemplate() : ProductTemplate()) {
    for (int i = 0; i < resources; ++i) pool_.push_back(Uuid(rng_));
    base_us_ = absl::ToUnixMicros(absl::Now()) - 3'600'000'000LL;  // an hour ago
  }

  pimgate::v1::Event Next(uint64_t n, const google::protobuf::Timestamp& received_at) {
    pimgate::v1::Event event;
    const std::string& uuid = pool_[rng_() % pool_.size()];
    event.set_id(Uuid(rng_));
    event.set_source("akeneo");
    event.set_type("product.updated");
    event.set_kind("product");
    event.set_original_type("product.updated");
    event.set_resource_id(uuid);
    const auto when = TimeUtil::MicrosecondsToTimestamp(base_us_ + static_cast<int64_t>(n));
    *event.mutable_occurred_at() = when;
    *event.mutable_version_at() = when;
    *event.mutable_received_at() = received_at;
    event.set_author("dispatch-bench");
    event.set_author_type("api");
    event.set_pim_source("https://pim.example.com");
    event.set_origin(small_ ? pimgate::v1::ORIGIN_EVENT_PLATFORM : pimgate::v1::ORIGIN_EVENTS_API);
    event.set_request_id(absl::StrCat("bench-", n / kEventsPerRequest));
    google::protobuf::Struct* data = event.mutable_data();
    *data = template_;
    if (small_) {
      (*(*data->mutable_fields())["product"].mutable_struct_value()->mutable_fields())["uuid"]
          .set_string_value(uuid);
    } else {
      (*data->mutable_fields())["uuid"].set_string_value(uuid);
      (*data->mutable_fields())["identifier"].set_string_value(
          absl::StrCat("sku-", uuid.substr(0, 8)));
    }
    return event;
  }

 private:
  std::mt19937_64 rng_;
  bool small_;
  google::protobuf::Struct template_;
  std::vector<std::string> pool_;
  int64_t base_us_ = 0;
};

// Appends `count` events in requests of kEventsPerRequest, at most kPreloadQueueDepth requests
// queued at once, and waits until all are stored.
void Preload(pimgate::EventLog& log, uint64_t count, int resources, bool small) {
  // Shared with the append callbacks, which run on the log's committer thread: a callback may
  // still be unlocking `mu` when the last wait below returns.
  struct Progress {
    absl::Mutex mu;
    uint64_t outstanding ABSL_GUARDED_BY(mu) = 0;
    uint64_t accepted ABSL_GUARDED_BY(mu) = 0;
    uint64_t stale ABSL_GUARDED_BY(mu) = 0;
    absl::Status failure ABSL_GUARDED_BY(mu);
  };
  auto progress = std::make_shared<Progress>();
  EventFactory factory(resources, small);
  uint64_t made = 0;
  while (made < count) {
    pimgate::AppendRequest request;
    const auto received_at = TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(absl::Now()));
    for (int i = 0; i < kEventsPerRequest && made < count; ++i) {
      request.events.push_back(factory.Next(made++, received_at));
    }
    {
      absl::MutexLock lock(&progress->mu);
      progress->mu.Await(absl::Condition(
          +[](Progress* p)
               ABSL_EXCLUSIVE_LOCKS_REQUIRED(p->mu) { return p->outstanding < kPreloadQueueDepth; },
          progress.get()));
      ++progress->outstanding;
    }
    log.Append(std::move(request), [progress](absl::StatusOr<pimgate::AppendResult> result) {
      absl::MutexLock lock(&progress->mu);
      --progress->outstanding;
      if (!result.ok()) {
        progress->failure = result.status();
        return;
      }
      progress->accepted += result->accepted;
      progress->stale += result->stale;
    });
  }
  absl::MutexLock lock(&progress->mu);
  progress->mu.Await(absl::Condition(
      +[](Progress* p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(p->mu) { return p->outstanding == 0; },
      progress.get()));
  if (!progress->failure.ok()) Fail("preload", progress->failure);
  if (progress->accepted != count || progress->stale != 0) {
    Fail("preload", absl::InternalError(absl::StrCat("stored ", progress->accepted, " of ", count,
                                                     " events, ", progress->stale, " stale")));
  }
}

struct ReadResult {
  double events_per_s = 0;
  double bytes_per_event = 0;
  double data_bytes_per_event = 0;  // of which event.data (the Struct)
  std::vector<std::string> sample;  // the first kMessagePool events, serialized as stored
};

// Baseline 1: every event read back from the log in batches, serialized as stored, the way the
// dispatcher reads them (ReadStoredEvents: no decoding).
ReadResult MeasureRawRead(pimgate::EventLog& log) {
  ReadResult result;
  const uint64_t head = log.head();
  uint64_t next = 1, read = 0, sample_bytes = 0, data_bytes = 0;
  CpuMeter cpu;
  const auto start = Clock::now();
  while (next <= head) {
    auto batch = log.ReadStoredEvents(next, kReadBatch);
    if (!batch.ok()) Fail("ReadStoredEvents", batch.status());
    if (batch->empty()) break;
    next = batch->back().sequence + 1;
    read += batch->size();
    for (pimgate::StoredEvent& event : *batch) {
      if (result.sample.size() == kMessagePool) break;
      sample_bytes += event.bytes.size();
      result.sample.push_back(std::move(event.bytes));
    }
  }
  const double wall = Seconds(Clock::now() - start);
  for (const std::string& bytes : result.sample) {
    pimgate::v1::Event event;
    event.ParseFromString(bytes);
    data_bytes += event.data().ByteSizeLong();
  }
  result.events_per_s = read / wall;
  result.bytes_per_event =
      result.sample.empty() ? 0 : static_cast<double>(sample_bytes) / result.sample.size();
  result.data_bytes_per_event =
      result.sample.empty() ? 0 : static_cast<double>(data_bytes) / result.sample.size();
  Say("  raw log read:      %10.0f events/s  (%llu events in %.2f s, ReadStoredEvents x%zu; %s)\n",
      result.events_per_s, static_cast<unsigned long long>(read), wall, kReadBatch,
      cpu.Describe(wall, read).c_str());
  return result;
}

double ThreadCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

// Baseline 2: the protobuf work each event needs at the least, on one core: the plugin decodes
// the whole event (its SDK must hand the handler a pimgate.v1.Event; on an arena, as the C++ SDK
// does), and pimgate decodes its header and wraps the stored bytes in a Delivery. Rated per CPU
// second of the thread, so that other load on the machine does not lower it.
double MeasureCodec(const std::vector<std::string>& sample, uint64_t count) {
  uint64_t bytes = 0;
  const double cpu_start = ThreadCpuSeconds();
  const auto start = Clock::now();
  for (uint64_t i = 0; i < count; ++i) {
    const std::string& stored = sample[i % sample.size()];
    absl::StatusOr<pimgate::v1::Event> header = pimgate::ParseEventHeader(stored);
    if (!header.ok()) Fail("ParseEventHeader", header.status());
    const std::string wire = pimgate::EncodeDelivery(stored, 1);
    bytes += wire.size();
    google::protobuf::Arena arena;
    auto* parsed = google::protobuf::Arena::CreateMessage<pimgate::v1::Delivery>(&arena);
    parsed->ParseFromString(wire);
  }
  const double cpu = ThreadCpuSeconds() - cpu_start;
  const double wall = Seconds(Clock::now() - start);
  const double rate = count / cpu;
  Say("  protobuf codec:    %10.0f events/s  per CPU second (%.1f us/event; wall-clock rate "
      "%.0f/s): header decode + Delivery encode (pimgate) and full decode (plugin) of a "
      "%.0f-byte Delivery, 1 thread\n",
      rate, cpu * 1e6 / count, count / wall, static_cast<double>(bytes) / count);
  return rate;
}

// One plugin process launched and supervised exactly as pimgate does it.
class PluginProcess {
 public:
  PluginProcess(const Options& o, const std::string& dir, const std::string& name) {
    config_.name = name;
    config_.command = o.plugin_cmd;
    config_.env = o.plugin_env;
    // As documented for --plugin-cmd: the plugin inherits this environment (PYTHONPATH for the
    // Python sink), unlike pimgate's default clean plugin environment.
    config_.inherit_env_all = true;
    summary_file_ = absl::StrCat(dir, "/", name, "-summary.json");
    config_.env.emplace_back("BENCH_SINK_OUT", summary_file_);
    config_.max_in_flight = o.max_in_flight;
    config_.start_timeout = std::chrono::seconds(30);
    auto supervisor = pimgate::PluginSupervisor::Create({config_}, dir + "/run");
    if (!supervisor.ok()) Fail("plugin supervisor", supervisor.status());
    supervisor_ = std::move(*supervisor);
    if (auto status = supervisor_->Start(); !status.ok()) Fail("starting the plugin", status);
    const absl::Time deadline = absl::Now() + kServingTimeout;
    while (true) {
      const pimgate::PluginStatus status = supervisor_->Status().front();
      if (status.state == pimgate::PluginState::kServing) {
        pid_ = status.pid;
        break;
      }
      if (absl::Now() > deadline) {
        Fail("starting the plugin",
             absl::DeadlineExceededError(absl::StrCat(name, " not SERVING within ",
                                                      absl::FormatDuration(kServingTimeout), ": ",
                                                      status.last_error)));
      }
      absl::SleepFor(absl::Milliseconds(10));
    }
  }

  const pimgate::PluginConfig& config() const { return config_; }
  std::string address() const { return supervisor_->AddressOf(config_.name); }
  pid_t pid() const { return pid_; }
  pimgate::PluginSupervisor* supervisor() { return supervisor_.get(); }

  // SIGTERM (the plugin drains and exits); returns the bench sink's summary, or "" when the
  // plugin wrote none (another --plugin-cmd).
  std::string Stop() {
    supervisor_->Stop();
    std::ifstream in(summary_file_);
    std::string summary((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    while (!summary.empty() && summary.back() == '\n') summary.pop_back();
    return summary;
  }

 private:
  pimgate::PluginConfig config_;
  std::string summary_file_;
  std::unique_ptr<pimgate::PluginSupervisor> supervisor_;
  pid_t pid_ = 0;
};

// Events per second and CPU microseconds per event (this process + the plugin) of one run.
struct RunFigures {
  double events_per_s = 0;
  double cpu_us_per_event = 0;
};

// Baseline 3: the dispatcher's transport alone into a fresh plugin process: a DeliveryStream
// (DeliverBatch when the plugin serves it) carrying the same stored events, with the same
// in-flight window, and no log, scheduler or cursor.
RunFigures MeasureBareStream(const Options& o, const std::string& dir, const std::string& name,
                             const std::vector<std::string>& sample) {
  PluginProcess plugin(o, dir, name);
  grpc::ChannelArguments args;
  args.SetMaxSendMessageSize(-1);
  args.SetMaxReceiveMessageSize(16 << 20);
  auto channel =
      grpc::CreateCustomChannel(plugin.address(), grpc::InsecureChannelCredentials(), args);
  if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(5))) {
    Fail("bare stream", absl::UnavailableError("cannot connect to " + plugin.address()));
  }
  struct AckWindow {
    absl::Mutex mu;
    uint64_t acked ABSL_GUARDED_BY(mu) = 0;
    uint64_t not_ok ABSL_GUARDED_BY(mu) = 0;
    bool ended ABSL_GUARDED_BY(mu) = false;  // the stream ended
    std::string reason ABSL_GUARDED_BY(mu);
  };
  auto window = std::make_shared<AckWindow>();
  auto on_acks = [window](uint64_t, std::vector<pimgate::v1::Ack> acks) {
    absl::MutexLock lock(&window->mu);
    window->acked += acks.size();
    for (const auto& ack : acks) window->not_ok += ack.outcome() != pimgate::v1::OUTCOME_OK;
  };
  auto on_closed = [window](uint64_t, std::string reason) {
    absl::MutexLock lock(&window->mu);
    window->ended = true;
    window->reason = std::move(reason);
  };
  auto stream = pimgate::DeliveryStream::Open(channel, pimgate::DeliveryStream::Protocol::kBatch, 1,
                                              absl::Seconds(5), on_acks, on_closed);
  if (!stream.ok() && absl::IsUnimplemented(stream.status())) {
    stream = pimgate::DeliveryStream::Open(channel, pimgate::DeliveryStream::Protocol::kSingle, 1,
                                           absl::Seconds(5), on_acks, on_closed);
  }
  if (!stream.ok()) Fail("bare stream", stream.status());
  CpuMeter cpu(plugin.pid());
  const auto start = Clock::now();
  // Framed as the dispatcher frames them (DeliveryStream::Send): runs of DeliveryBatch elements,
  // or one Delivery per message for plugins without DeliverBatch.
  const bool batched = (*stream)->protocol() == pimgate::DeliveryStream::Protocol::kBatch;
  uint64_t sent = 0;
  while (sent < o.events) {
    std::vector<std::string> messages;
    uint64_t count = 0;
    {
      absl::MutexLock lock(&window->mu);
      auto room = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(window->mu) {
        return window->ended || sent - window->acked < o.max_in_flight;
      };
      window->mu.Await(absl::Condition(&room));
      if (window->ended) break;
      while (sent + count < o.events && sent - window->acked + count < o.max_in_flight) {
        // A unique sequence per delivery, as the plugin acks by sequence.
        pimgate::v1::Event header;
        header.set_sequence(sent + count + 1);
        const std::string event =
            sample[(sent + count) % sample.size()] + header.SerializeAsString();
        if (!batched) {
          messages.push_back(pimgate::EncodeDelivery(event, 1));
        } else {
          // A new batch before an event that would take this one past the limit (as the
          // dispatcher's FrameDeliveries does); an event larger than the limit goes alone.
          const std::size_t element = pimgate::DeliveryBatchElementSize(event.size(), 1);
          if (messages.empty() ||
              (!messages.back().empty() &&
               messages.back().size() + element > pimgate::kMaxDeliveryBatchBytes)) {
            messages.emplace_back();
          }
          pimgate::AppendDeliveryToBatch(messages.back(), event, 1);
        }
        ++count;
      }
    }
    sent += count;
    (*stream)->Send(std::move(messages));
  }
  {
    absl::MutexLock lock(&window->mu);
    auto all = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(window->mu) {
      return window->ended || window->acked >= sent;
    };
    window->mu.Await(absl::Condition(&all));
  }
  const double wall = Seconds(Clock::now() - start);
  uint64_t done, not_ok;
  std::string reason;
  {
    absl::MutexLock lock(&window->mu);
    done = window->acked;
    not_ok = window->not_ok;
    reason = window->reason;
  }
  const std::string cpu_text = cpu.Describe(wall, std::max<uint64_t>(done, 1));
  const double cpu_us = (cpu.self() + cpu.plugin()) * 1e6 / std::max<uint64_t>(done, 1);
  const bool batch = (*stream)->protocol() == pimgate::DeliveryStream::Protocol::kBatch;
  stream->reset();
  const double rate = done / wall;
  Say("  bare gRPC stream:  %10.0f events/s  (%llu acks in %.2f s, %s, max_in_flight %u; %s)\n",
      rate, static_cast<unsigned long long>(done), wall, batch ? "DeliverBatch" : "Deliver",
      o.max_in_flight, cpu_text.c_str());
  if (done != o.events || not_ok != 0) {
    Say("  WARNING: bare stream got %llu of %llu acks (%llu not OK): %s\n",
        static_cast<unsigned long long>(done), static_cast<unsigned long long>(o.events),
        static_cast<unsigned long long>(not_ok), reason.c_str());
  }
  plugin.Stop();
  return {rate, cpu_us};
}

struct DispatchResult {
  double events_per_s = 0;
  double cpu_us_per_event = 0;
  double seconds = 0;
  pimgate::PluginDispatchStats stats;
  std::string sink_summary;
};

// The measurement: a Dispatcher delivering the whole log to a fresh plugin process, from
// Start() until its cursor reaches the log head.
DispatchResult MeasureDispatch(const Options& o, const std::string& dir, const std::string& name,
                               pimgate::EventLog& log) {
  PluginProcess plugin(o, dir, name);
  auto dispatcher = pimgate::Dispatcher::Create(
      {plugin.config()}, &log, [supervisor = plugin.supervisor()](const std::string& name) {
        return supervisor->AddressOf(name);
      });
  if (!dispatcher.ok()) Fail("Dispatcher::Create", dispatcher.status());
  const uint64_t head = log.head();
  DispatchResult result;
  CpuMeter cpu(plugin.pid());
  const auto start = Clock::now();
  if (auto status = (*dispatcher)->Start(); !status.ok()) Fail("Dispatcher::Start", status);
  const auto give_up = start + absl::ToChronoSeconds(kRunTimeout);
  while (true) {
    result.stats = (*dispatcher)->Stats().front();
    if (result.stats.cursor >= head) break;
    if (Clock::now() > give_up) {
      Say("  WARNING: dispatch did not finish in %s: cursor %llu of %llu (%s)\n",
          absl::FormatDuration(kRunTimeout).c_str(),
          static_cast<unsigned long long>(result.stats.cursor),
          static_cast<unsigned long long>(head), result.stats.last_error.c_str());
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  result.seconds = Seconds(Clock::now() - start);
  const uint64_t done = std::max<uint64_t>(result.stats.cursor, 1);
  const std::string cpu_text = cpu.Describe(result.seconds, done);
  result.cpu_us_per_event = (cpu.self() + cpu.plugin()) * 1e6 / done;
  result.events_per_s = result.stats.cursor / result.seconds;
  (*dispatcher)->Stop();
  result.sink_summary = plugin.Stop();
  Say("  dispatch:          %10.0f events/s  (cursor %llu in %.2f s; delivered %llu, retried "
      "%llu, reconnects %llu; %s)\n",
      result.events_per_s, static_cast<unsigned long long>(result.stats.cursor), result.seconds,
      static_cast<unsigned long long>(result.stats.delivered),
      static_cast<unsigned long long>(result.stats.retried),
      static_cast<unsigned long long>(result.stats.connects > 0 ? result.stats.connects - 1 : 0),
      cpu_text.c_str());
  if (!result.sink_summary.empty()) Say("  plugin summary:    %s\n", result.sink_summary.c_str());
  return result;
}

struct Spread {
  double median = 0;
  double min = 0;
  double max = 0;
};

Spread Summarize(std::vector<double> values) {
  if (values.empty()) return {};
  std::sort(values.begin(), values.end());
  const std::size_t n = values.size();
  const double median = n % 2 == 1 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
  return {median, values.front(), values.back()};
}

std::string MakeTempDir() {
  const char* tmpdir = std::getenv("TMPDIR");
  std::string pattern = absl::StrCat(tmpdir != nullptr && *tmpdir ? tmpdir : "/tmp",
                                     "/pimgate-dispatch-bench-XXXXXX");
  if (mkdtemp(pattern.data()) == nullptr) {
    Fail("mkdtemp", absl::InternalError(absl::StrCat("cannot create ", pattern)));
  }
  return pattern;
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = ParseArgs(argc, argv);
  if (o.json) report = stderr;
  spdlog::set_level(spdlog::level::warn);  // plugin output and dispatcher chatter stay quiet
  std::signal(SIGPIPE, SIG_IGN);
  const std::string dir = MakeTempDir();

  Say("dispatch bench: %llu %s events (%d per request, %d resources), max_in_flight %u, plugin "
      "\"%s\"\n",
      static_cast<unsigned long long>(o.events), o.small ? "Event Platform" : "product",
      kEventsPerRequest, o.resources, o.max_in_flight, absl::StrJoin(o.plugin_cmd, " ").c_str());
  pimgate::StoreConfig store;
  store.path = dir + "/store";
  store.sync = false;  // the preload is not what is measured
  auto log = pimgate::EventLog::Open(store);
  if (!log.ok()) Fail("opening the event log", log.status());

  CpuMeter preload_cpu;
  const auto preload_start = Clock::now();
  Preload(**log, o.events, o.resources, o.small);
  const double preload_s = Seconds(Clock::now() - preload_start);
  Say("  preload (append):  %10.0f events/s  (store.sync false, group commit; %s)\n",
      o.events / preload_s, preload_cpu.Describe(preload_s, o.events).c_str());

  ReadResult read = MeasureRawRead(**log);
  Say("  event size:        %10.0f bytes serialized, %.0f of them data (mean of the first %zu)\n",
      read.bytes_per_event, read.data_bytes_per_event, read.sample.size());
  const double codec = MeasureCodec(read.sample, std::min<uint64_t>(o.events, 100'000));
  std::vector<double> streams, dispatches, stream_cpu, dispatch_cpu;
  DispatchResult dispatch;
  bool complete = true;
  for (int run = 1; run <= o.repeat; ++run) {
    if (o.repeat > 1) Say("  run %d of %d\n", run, o.repeat);
    if (!o.skip_stream_baseline) {
      const RunFigures bare = MeasureBareStream(o, dir, absl::StrCat("stream-", run), read.sample);
      streams.push_back(bare.events_per_s);
      stream_cpu.push_back(bare.cpu_us_per_event);
    }
    dispatch = MeasureDispatch(o, dir, absl::StrCat("dispatch-", run), **log);
    dispatches.push_back(dispatch.events_per_s);
    dispatch_cpu.push_back(dispatch.cpu_us_per_event);
    complete = complete && dispatch.stats.cursor >= o.events;
  }
  const Spread stream = Summarize(streams);
  const Spread dispatched = Summarize(dispatches);
  const double stream_us = Summarize(stream_cpu).median;
  const double dispatch_us = Summarize(dispatch_cpu).median;
  if (o.repeat > 1) {
    Say("  medians of %d runs: dispatch %.0f events/s (%.0f..%.0f)", o.repeat, dispatched.median,
        dispatched.min, dispatched.max);
    if (stream.median > 0) {
      Say(", bare stream %.0f events/s (%.0f..%.0f)", stream.median, stream.min, stream.max);
    }
    Say("\n");
  }
  Say("  ratios: dispatch/raw read %.3f, dispatch/codec %.3f",
      dispatched.median / read.events_per_s, dispatched.median / codec);
  if (stream.median > 0) Say(", dispatch/bare stream %.3f", dispatched.median / stream.median);
  if (stream_us > 0) Say(", dispatch/bare stream CPU per event %.2f", dispatch_us / stream_us);
  Say("\n  peak RSS of this process (log, dispatcher, baselines): %.0f MiB\n", PeakRssMib());

  if (o.json) {
    std::printf(
        "{\"small\":%s,\"events\":%llu,\"max_in_flight\":%u,\"runs\":%d,\"event_bytes\":%.0f,"
        "\"read_events_per_s\":%.1f,\"codec_events_per_s\":%.1f,"
        "\"stream_events_per_s\":%.1f,\"stream_min\":%.1f,\"stream_max\":%.1f,"
        "\"dispatch_events_per_s\":%.1f,\"dispatch_min\":%.1f,\"dispatch_max\":%.1f,"
        "\"stream_cpu_us_per_event\":%.1f,\"dispatch_cpu_us_per_event\":%.1f,"
        "\"complete\":%s,\"delivered\":%llu,\"retried\":%llu,\"peak_rss_mib\":%.0f,"
        "\"sink\":%s}\n",
        o.small ? "true" : "false", static_cast<unsigned long long>(o.events), o.max_in_flight,
        o.repeat, read.bytes_per_event, read.events_per_s, codec, stream.median, stream.min,
        stream.max, dispatched.median, dispatched.min, dispatched.max, stream_us, dispatch_us,
        complete ? "true" : "false", static_cast<unsigned long long>(dispatch.stats.delivered),
        static_cast<unsigned long long>(dispatch.stats.retried), PeakRssMib(),
        dispatch.sink_summary.empty() ? "null" : dispatch.sink_summary.c_str());
  }

  log->reset();
  if (!o.keep) {
    std::error_code ignored;
    std::filesystem::remove_all(dir, ignored);
  } else {
    Say("  kept %s\n", dir.c_str());
  }
  return complete ? 0 : 1;
}
