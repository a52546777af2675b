// Dispatcher against a real gRPC plugin server on a real unix socket, over a real RocksDB log.
// The plugin here is in-process so each test can script its answers; the end-to-end tests run
// real plugin processes in C++, Python and Node.
#include "core/dispatch/dispatcher.h"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <functional>
#include <initializer_list>
#include <iostream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/dispatch/event_wire.h"
#include "core/dispatch/lease_fence.h"
#include "core/log/event_header.h"
#include "core/log/jetstream_backend.h"
#include "core/log/log_backend.h"
#include "core/log/rocksdb_backend.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/util/message_differencer.h"
#include "google/protobuf/util/time_util.h"
#include "pimgate/v1/plugin.grpc.pb.h"
#include "tests/testing/nats_cluster.h"
#include "tests/testing/test_env.h"

namespace pimgate {
namespace {

using google::protobuf::util::TimeUtil;
using testing::TempDir;

struct Call {
  uint64_t sequence;
  uint32_t attempt;
  std::string resource;
};

// Decides each answer: outcome and delay before acking. nullopt = never ack.
using Policy = std::function<std::optional<std::pair<v1::Outcome, int>>(const v1::Delivery&)>;

// A scripted EventHandler served over a unix socket; records every delivery and checks that no
// two deliveries of one resource are outstanding at once.
class ScriptedPlugin final : public v1::EventHandler::Service {
 public:
  ScriptedPlugin(const std::string& socket, Policy policy) : policy_(std::move(policy)) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("unix:" + socket, grpc::InsecureServerCredentials());
    builder.RegisterService(this);
    server_ = builder.BuildAndStart();
  }
  ~ScriptedPlugin() { Shutdown(); }

  void Shutdown() {
    if (server_) {
      server_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(200));
      server_.reset();
    }
  }

  grpc::Status Deliver(grpc::ServerContext* ctx,
                       grpc::ServerReaderWriter<v1::Ack, v1::Delivery>* stream) override {
    std::vector<std::thread> acks;
    std::mutex write_mu;
    v1::Delivery delivery;
    while (stream->Read(&delivery)) {
      {
        std::lock_guard lock(mu_);
        const std::string& resource = delivery.event().resource_id();
        if (!in_flight_.insert(resource).second) {
          overlaps_++;
        }
        calls_.push_back({delivery.event().sequence(), delivery.attempt(), resource});
      }
      auto answer = policy_(delivery);
      if (!answer) continue;  // never acked: stays "in flight" here
      acks.emplace_back([&, delivery, answer] {
        if (answer->second > 0)
          std::this_thread::sleep_for(std::chrono::milliseconds(answer->second));
        {
          std::lock_guard lock(mu_);
          in_flight_.erase(delivery.event().resource_id());
        }
        v1::Ack ack;
        ack.set_sequence(delivery.event().sequence());
        ack.set_outcome(answer->first);
        ack.set_detail("scripted");
        std::lock_guard lock(write_mu);
        stream->Write(ack);
      });
    }
    for (auto& t : acks) t.join();
    return grpc::Status::OK;
  }

  std::vector<Call> calls() {
    std::lock_guard lock(mu_);
    return calls_;
  }
  int overlaps() {
    std::lock_guard lock(mu_);
    return overlaps_;
  }

 private:
  Policy policy_;
  std::unique_ptr<grpc::Server> server_;
  std::mutex mu_;
  std::vector<Call> calls_;
  std::set<std::string> in_flight_;
  int overlaps_ = 0;
};

Policy AlwaysOk(int delay_ms = 0) {
  return [delay_ms](const v1::Delivery&) {
    return std::optional<std::pair<v1::Outcome, int>>({v1::OUTCOME_OK, delay_ms});
  };
}

enum class Backend { kRocksDb, kJetStream };

std::string BackendName(const ::testing::TestParamInfo<Backend>& info) {
  return info.param == Backend::kRocksDb ? "RocksDb" : "JetStream";
}

// Runs on the embedded store and on a JetStream stream of a real nats-server (one per test).
class DispatcherTest : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    StoreConfig store = testing::StoreAt(dir_.File("store"));
    if (GetParam() == Backend::kJetStream) {
      if (nats_ == nullptr) {
        nats_ = std::make_unique<testing::NatsCluster>(testing::NatsCluster::Options{});
      }
      ASSERT_TRUE(nats_->started());
      std::string stream = ::testing::UnitTest::GetInstance()->current_test_info()->name();
      for (char& c : stream) {
        if (c == '/') c = '_';
      }
      store.backend = StoreBackend::kJetStream;
      store.jetstream = nats_->Config(stream);
      stream_ = stream;
    }
    auto log = EventLog::Open(store);
    ASSERT_TRUE(log.ok()) << log.status();
    log_ = std::move(*log);
  }
  static void TearDownTestSuite() { nats_.reset(); }

  static std::unique_ptr<testing::NatsCluster> nats_;

  // Reopens the test's store with its backend wrapped in `wrap` (a decorator that counts).
  void ReopenWrapped(
      const std::function<std::unique_ptr<LogBackend>(std::unique_ptr<LogBackend>)>& wrap) {
    log_.reset();
    absl::StatusOr<std::unique_ptr<LogBackend>> backend =
        GetParam() == Backend::kJetStream
            ? OpenJetStreamBackend(dir_.File("store"), nats_->Config(stream_))
            : OpenRocksDbBackend(dir_.File("store"));
    ASSERT_TRUE(backend.ok()) << backend.status();
    auto log = EventLog::Open(wrap(std::move(*backend)), EventLogOptions{});
    ASSERT_TRUE(log.ok()) << log.status();
    log_ = std::move(*log);
  }

  std::string Socket(const std::string& name) { return dir_.File(name + ".sock"); }

  PluginConfig Plugin(const std::string& name) {
    PluginConfig plugin;
    plugin.name = name;
    plugin.address = "unix:" + Socket(name);
    plugin.ack_timeout = std::chrono::milliseconds(2000);
    plugin.retry.initial_backoff = std::chrono::milliseconds(20);
    plugin.retry.max_backoff = std::chrono::milliseconds(100);
    plugin.retry.max_attempts = 4;
    return plugin;
  }

  std::unique_ptr<Dispatcher> StartDispatcher(const std::vector<PluginConfig>& plugins) {
    auto dispatcher = Dispatcher::Create(
        plugins, log_.get(), [this](const std::string& name) { return "unix:" + Socket(name); });
    EXPECT_TRUE(dispatcher.ok());
    EXPECT_TRUE((*dispatcher)->Start().ok());
    return std::move(*dispatcher);
  }

  v1::Event Event(const std::string& type, const std::string& resource, int64_t version_s,
                  const std::string& author = "julia") {
    v1::Event event;
    event.set_id(testing::NewUuid());
    event.set_source("pim");
    event.set_type(type);
    event.set_kind(type.substr(0, type.find('.')));
    event.set_resource_id(resource);
    event.set_author(author);
    *event.mutable_version_at() = TimeUtil::SecondsToTimestamp(1'800'000'000 + version_s);
    *event.mutable_occurred_at() = event.version_at();
    (*event.mutable_data()->mutable_fields())["family"].set_string_value("shoes");
    return event;
  }

  void Append(std::vector<v1::Event> events) {
    AppendRequest request;
    request.events = std::move(events);
    ASSERT_TRUE(log_->AppendSync(std::move(request)).ok());
  }

  // Waits until `done` holds; 60 s is a hang guard only (generous: a slow, busy machine).
  bool WaitFor(const std::function<bool()>& done) {
    for (int i = 0; i < 6000; ++i) {
      if (done()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return done();
  }

  // Appends an event every plugin here skips as stale (an older version of `resource`, appended
  // before) and waits until `plugin`'s dispatcher has counted it. Its scheduler reads the log in
  // order, decides what to send, then publishes its stats: once the count shows, every event
  // appended before the marker has been read and decided on, and the stats read next account
  // for anything sent. The positive control of the "nothing was delivered" checks below: held
  // events stay held over a window that demonstrably passed in the dispatcher, not over a sleep.
  bool AppendStaleMarkerAndWait(Dispatcher& d, const std::string& plugin,
                                const std::string& resource) {
    const uint64_t before = StatsOf(d, plugin).skipped_stale;
    Append({Event("product.updated", resource, -1000)});
    return WaitFor([&] { return StatsOf(d, plugin).skipped_stale > before; });
  }

  PluginDispatchStats StatsOf(Dispatcher& d, const std::string& name) {
    for (const auto& s : d.Stats()) {
      if (s.name == name) {
        last_seen_ = absl::StrCat(s.name, " state=", s.state, " cursor=", s.cursor,
                                  " in_flight=", s.in_flight, " delivered=", s.delivered,
                                  " error=", s.last_error);
        return s;
      }
    }
    return {};
  }
  void TearDown() override {
    if (HasFailure()) std::cerr << "last stats: " << last_seen_ << "\n";
  }
  std::string last_seen_;

  TempDir dir_;
  std::string stream_;  // the JetStream stream of the test (JetStream only)
  std::unique_ptr<EventLog> log_;
};

std::unique_ptr<testing::NatsCluster> DispatcherTest::nats_;

INSTANTIATE_TEST_SUITE_P(Backends, DispatcherTest,
                         ::testing::Values(Backend::kRocksDb, Backend::kJetStream), BackendName);

TEST_P(DispatcherTest, PerResourceOrderWithConcurrencyAcrossResources) {
  std::mt19937 rng(42);
  ScriptedPlugin plugin(Socket("p"), [&](const v1::Delivery&) {
    static std::mutex mu;
    std::lock_guard lock(mu);
    return std::optional<std::pair<v1::Outcome, int>>(
        {v1::OUTCOME_OK, static_cast<int>(rng() % 3)});
  });
  PluginConfig config = Plugin("p");
  config.max_in_flight = 8;
  auto dispatcher = StartDispatcher({config});
  constexpr int kResources = 20, kVersions = 15;
  std::vector<v1::Event> events;
  for (int v = 0; v < kVersions; ++v) {
    for (int r = 0; r < kResources; ++r) {
      events.push_back(Event("product.updated", absl::StrCat("res-", r), v));
    }
    if (v % 3 == 2) {  // several requests, interleaved resources
      Append(std::move(events));
      events.clear();
    }
  }
  ASSERT_TRUE(WaitFor([&] { return plugin.calls().size() >= kResources * kVersions; }));
  std::map<std::string, uint64_t> last;
  for (const Call& call : plugin.calls()) {
    EXPECT_GT(call.sequence, last[call.resource]) << call.resource;
    last[call.resource] = call.sequence;
    EXPECT_EQ(call.attempt, 1u);
  }
  EXPECT_EQ(plugin.overlaps(), 0);
  ASSERT_TRUE(WaitFor([&] { return StatsOf(*dispatcher, "p").cursor == log_->head(); }));
  EXPECT_EQ(StatsOf(*dispatcher, "p").delivered, kResources * kVersions);
}

// The scheduler reads the log in batches (read_batch) while enough events are ready to refill
// the plugin's window, and reads whatever fits when too few are: one resource stuck in flight
// never holds up the others beyond a full window. Here the window holds exactly read_batch
// events, so with the stuck event in it a whole batch would never fit again.
TEST_P(DispatcherTest, ResourceStuckInFlightDoesNotStopReadsOfAFullWindow) {
  ScriptedPlugin plugin(Socket("p"), [](const v1::Delivery& delivery) {
    using Answer = std::optional<std::pair<v1::Outcome, int>>;
    return delivery.event().resource_id() == "stuck" ? Answer() : Answer({v1::OUTCOME_OK, 0});
  });
  PluginConfig config = Plugin("p");
  config.max_in_flight = 2;
  config.ack_timeout = std::chrono::minutes(10);  // the stuck event stays in flight throughout
  DispatcherOptions options;
  options.window = 8;
  options.read_batch = 8;
  auto dispatcher = Dispatcher::Create(
      {config}, log_.get(), [this](const std::string& name) { return "unix:" + Socket(name); },
      options);
  ASSERT_TRUE(dispatcher.ok()) << dispatcher.status();
  ASSERT_TRUE((*dispatcher)->Start().ok());
  constexpr int kOthers = 40;  // 5 windows
  std::vector<v1::Event> events = {Event("product.updated", "stuck", 0)};
  for (int r = 0; r < kOthers; ++r) {
    events.push_back(Event("product.updated", absl::StrCat("res-", r), 0));
  }
  Append(std::move(events));
  ASSERT_TRUE(WaitFor([&] { return StatsOf(**dispatcher, "p").delivered == kOthers; }));
  const PluginDispatchStats stats = StatsOf(**dispatcher, "p");
  EXPECT_EQ(stats.cursor, 0u);  // held below the stuck event
  EXPECT_EQ(stats.in_flight, 1u);
  EXPECT_EQ(plugin.overlaps(), 0);
}

TEST_P(DispatcherTest, FiltersAndStaleAreSkippedAndCounted) {
  ScriptedPlugin plugin(Socket("p"), AlwaysOk());
  PluginConfig config = Plugin("p");
  config.events = {"product.*"};
  config.authors.exclude = {"erp-connection"};
  config.data = {DataFilter{"family", {"shoes"}, false}};
  auto dispatcher = StartDispatcher({config});
  v1::Event other_family = Event("product.updated", "r3", 1);
  (*other_family.mutable_data()->mutable_fields())["family"].set_string_value("hats");
  Append({Event("product.updated", "r1", 10), Event("product_model.updated", "m1", 1),
          Event("product.updated", "r2", 1, "erp-connection"), other_family,
          Event("product.updated", "r1", 5),  // older than version 10: stale
          Event("product.updated.delta", "r1", 11)});
  ASSERT_TRUE(WaitFor([&] { return StatsOf(*dispatcher, "p").cursor == 6; }));
  std::vector<Call> calls = plugin.calls();
  ASSERT_EQ(calls.size(), 2u);
  EXPECT_EQ(calls[0].sequence, 1u);
  EXPECT_EQ(calls[1].sequence, 6u);
  PluginDispatchStats stats = StatsOf(*dispatcher, "p");
  EXPECT_EQ(stats.skipped_filter, 3u);
  EXPECT_EQ(stats.skipped_stale, 1u);
}

TEST_P(DispatcherTest, RetryThenOkIncrementsAttempt) {
  ScriptedPlugin plugin(Socket("p"), [](const v1::Delivery& d) {
    return std::optional<std::pair<v1::Outcome, int>>(
        {d.attempt() < 3 ? v1::OUTCOME_RETRY : v1::OUTCOME_OK, 0});
  });
  auto dispatcher = StartDispatcher({Plugin("p")});
  Append({Event("product.updated", "r1", 1), Event("product.updated", "r1", 2)});
  ASSERT_TRUE(WaitFor([&] { return StatsOf(*dispatcher, "p").cursor == 2; }));
  std::vector<Call> calls = plugin.calls();
  ASSERT_EQ(calls.size(), 6u);
  EXPECT_EQ(calls[0].attempt, 1u);
  EXPECT_EQ(calls[2].attempt, 3u);
  EXPECT_EQ(calls[2].sequence, 1u);
  EXPECT_EQ(calls[3].sequence, 2u);  // the next event of r1 waited for the first one's OK
  EXPECT_EQ(StatsOf(*dispatcher, "p").retried, 4u);
}

TEST_P(DispatcherTest, RejectAndExhaustedRetriesGoToDeadLettersLaterEventsGoOn) {
  ScriptedPlugin plugin(Socket("p"), [](const v1::Delivery& d) {
    v1::Outcome outcome = v1::OUTCOME_OK;
    if (d.event().sequence() == 1) outcome = v1::OUTCOME_REJECT;
    if (d.event().sequence() == 3) outcome = v1::OUTCOME_UNSPECIFIED;  // a failure, never OK
    return std::optional<std::pair<v1::Outcome, int>>({outcome, 0});
  });
  auto dispatcher = StartDispatcher({Plugin("p")});
  Append({Event("product.updated", "r1", 1), Event("product.updated", "r1", 2),
          Event("product.updated", "r2", 1), Event("product.updated", "r2", 2)});
  ASSERT_TRUE(WaitFor([&] { return StatsOf(*dispatcher, "p").cursor == 4; }));
  auto letters = dispatcher->dead_letters().List("p", 0, 100);
  ASSERT_TRUE(WaitFor([&] {
    letters = dispatcher->dead_letters().List("p", 0, 100);
    return letters.ok() && letters->size() == 2;
  }));
  EXPECT_EQ((*letters)[0].event().sequence(), 1u);
  EXPECT_TRUE((*letters)[0].rejected());
  EXPECT_EQ((*letters)[0].attempts(), 1u);
  EXPECT_EQ((*letters)[1].event().sequence(), 3u);
  EXPECT_FALSE((*letters)[1].rejected());
  EXPECT_EQ((*letters)[1].attempts(), 4u);  // retry.max_attempts
  EXPECT_EQ(StatsOf(*dispatcher, "p").dead_lettered, 2u);
  EXPECT_EQ(StatsOf(*dispatcher, "p").delivered, 2u);
}

TEST_P(DispatcherTest, AckTimeoutRedelivers) {
  std::atomic<int> seen{0};
  ScriptedPlugin plugin(Socket("p"), [&](const v1::Delivery&) {
    if (seen++ == 0) return std::optional<std::pair<v1::Outcome, int>>();  // hang once
    return std::optional<std::pair<v1::Outcome, int>>({v1::OUTCOME_OK, 0});
  });
  PluginConfig config = Plugin("p");
  config.ack_timeout = std::chrono::milliseconds(200);
  auto dispatcher = StartDispatcher({config});
  Append({Event("product.updated", "r1", 1)});
  ASSERT_TRUE(WaitFor([&] { return StatsOf(*dispatcher, "p").cursor == 1; }));
  std::vector<Call> calls = plugin.calls();
  ASSERT_GE(calls.size(), 2u);
  EXPECT_EQ(calls.back().attempt, 2u);
}

TEST_P(DispatcherTest, CursorPersistsAcrossRestartUnackedRedelivered) {
  {
    ScriptedPlugin plugin(Socket("p"), AlwaysOk());
    auto dispatcher = StartDispatcher({Plugin("p")});
    Append({Event("product.updated", "r1", 1), Event("product.updated", "r2", 1)});
    ASSERT_TRUE(WaitFor([&] { return StatsOf(*dispatcher, "p").cursor == 2; }));
    dispatcher->Stop();
  }
  Append({Event("product.updated", "r3", 1)});
  ScriptedPlugin plugin(Socket("p"), AlwaysOk());
  auto dispatcher = StartDispatcher({Plugin("p")});
  ASSERT_TRUE(WaitFor([&] { return StatsOf(*dispatcher, "p").cursor == 3; }));
  std::vector<Call> calls = plugin.calls();
  ASSERT_EQ(calls.size(), 1u);
  EXPECT_EQ(calls[0].sequence, 3u);
}

// Events handed to the plugin and not acknowledged when the dispatcher stopped (pimgate stopped
// or crashed) go again after the restart with attempt 2, and on from there; an event appended
// meanwhile, never handed out, with attempt 1. The handed-out mark was written before the sends.
TEST_P(DispatcherTest, RestartRedeliversHandedOutEventsWithAttemptTwo) {
  {
    ScriptedPlugin silent(Socket("p"), [](const v1::Delivery&) {
      return std::optional<std::pair<v1::Outcome, int>>();  // never answers
    });
    auto dispatcher = StartDispatcher({Plugin("p")});
    Append({Event("product.updated", "r1", 1), Event("product.updated", "r2", 1),
            Event("product.updated", "r3", 1)});
    ASSERT_TRUE(WaitFor([&] { return silent.calls().size() == 3; }));
    for (const Call& call : silent.calls()) EXPECT_EQ(call.attempt, 1u);
    dispatcher->Stop();
  }
  EXPECT_EQ(log_->LoadCursor("p").value_or(99), 0u);  // nothing acknowledged
  EXPECT_EQ(log_->LoadHandedOut("p").value_or(0), 3u);
  Append({Event("product.updated", "r4", 1)});
  // r2 fails once after the restart: its next delivery counts on from there.
  ScriptedPlugin plugin(Socket("p"), [](const v1::Delivery& d) {
    const bool retry = d.event().resource_id() == "r2" && d.attempt() == 2;
    return std::optional<std::pair<v1::Outcome, int>>(
        {retry ? v1::OUTCOME_RETRY : v1::OUTCOME_OK, 0});
  });
  auto dispatcher = StartDispatcher({Plugin("p")});
  ASSERT_TRUE(WaitFor([&] { return StatsOf(*dispatcher, "p").cursor == 4; }));
  std::map<uint64_t, std::vector<uint32_t>> attempts;
  for (const Call& call : plugin.calls()) attempts[call.sequence].push_back(call.attempt);
  EXPECT_EQ(attempts[1], std::vector<uint32_t>{2});
  EXPECT_EQ(attempts[2], (std::vector<uint32_t>{2, 3}));
  EXPECT_EQ(attempts[3], std::vector<uint32_t>{2});
  EXPECT_EQ(attempts[4], std::vector<uint32_t>{1});
}

// Counts the handed-out mark writes of a backend.
class MarkCountingBackend final : public ForwardingLogBackend {
 public:
  MarkCountingBackend(std::unique_ptr<LogBackend> inner, std::atomic<int>* writes)
      : ForwardingLogBackend(std::move(inner)), writes_(writes) {}
  absl::Status WriteHandedOut(const std::string& plugin, uint64_t mark) override {
    ++*writes_;
    return ForwardingLogBackend::WriteHandedOut(plugin, mark);
  }

 private:
  std::atomic<int>* writes_;
};

// The mark is reserved ahead, up to the last event read: one write per read of the log, never
// one per event. 1000 events appended at once are read in two batches (read_batch 512), and
// sent in many rounds of max_in_flight.
TEST_P(DispatcherTest, HandedOutMarkIsWrittenPerReadNotPerEvent) {
  std::atomic<int> writes{0};
  ReopenWrapped([&](std::unique_ptr<LogBackend> inner) -> std::unique_ptr<LogBackend> {
    return std::make_unique<MarkCountingBackend>(std::move(inner), &writes);
  });
  ScriptedPlugin plugin(Socket("p"), AlwaysOk());
  auto dispatcher = StartDispatcher({Plugin("p")});
  constexpr int kEvents = 1000;
  std::vector<v1::Event> events;
  for (int i = 0; i < kEvents; ++i) {
    events.push_back(Event("product.updated", absl::StrCat("r", i), 1));
  }
  Append(std::move(events));
  ASSERT_TRUE(WaitFor([&] { return StatsOf(*dispatcher, "p").cursor == kEvents; }));
  std::cout << kEvents << " events delivered with " << writes.load()
            << " write(s) of the handed-out mark\n";
  EXPECT_GE(writes.load(), 1);
  EXPECT_LE(writes.load(), 10);
  EXPECT_EQ(log_->LoadHandedOut("p").value_or(0), static_cast<uint64_t>(kEvents));
}

// Damages the stored bytes of some events as read back (`damage` rewrites them by sequence), as
// damaged records on disk would read.
class DamagingBackend final : public ForwardingLogBackend {
 public:
  using Damage = std::function<std::string(const std::string&)>;
  // `damaged_reads`, when given, counts the reads that returned a damaged event (or several).
  DamagingBackend(std::unique_ptr<LogBackend> inner, std::map<uint64_t, Damage> damage,
                  std::shared_ptr<std::atomic<int>> damaged_reads = nullptr)
      : ForwardingLogBackend(std::move(inner)),
        damage_(std::move(damage)),
        damaged_reads_(std::move(damaged_reads)) {}
  absl::StatusOr<std::vector<StoredEvent>> ReadStoredEvents(uint64_t from,
                                                            std::size_t max) override {
    absl::StatusOr<std::vector<StoredEvent>> events =
        ForwardingLogBackend::ReadStoredEvents(from, max);
    if (events.ok()) {
      bool damaged = false;
      for (StoredEvent& stored : *events) {
        if (auto it = damage_.find(stored.sequence); it != damage_.end()) {
          stored.bytes = it->second(stored.bytes);
          damaged = true;
        }
      }
      if (damaged && damaged_reads_ != nullptr) ++*damaged_reads_;
    }
    return events;
  }

 private:
  std::map<uint64_t, Damage> damage_;
  std::shared_ptr<std::atomic<int>> damaged_reads_;
};

// A stored event that does not read back as its header (here: damage inside a Timestamp), or
// whose `sequence` field is not its key (lost: a record cut at its trailing sequence reads as
// sequence 0; or another number) is neither delivered nor skipped: the cursor stops below it with
// a read error naming it until an operator seeks past it. Meanwhile it is read again once a
// second, not in a loop (which spun a core and wrote an error line per read).
TEST_P(DispatcherTest, DamagedStoredEventStopsTheCursor) {
  const auto resequenced = [](int64_t delta) {
    return [delta](const std::string& bytes) {
      v1::Event event;
      EXPECT_TRUE(event.ParseFromString(bytes));
      event.set_sequence(delta == 0 ? 0 : event.sequence() + delta);
      return event.SerializeAsString();
    };
  };
  auto damaged_reads = std::make_shared<std::atomic<int>>(0);
  ReopenWrapped([&](std::unique_ptr<LogBackend> inner) -> std::unique_ptr<LogBackend> {
    std::map<uint64_t, DamagingBackend::Damage> damage;
    // received_at (field 10) holding a field number 0.
    damage[3] = [](const std::string& bytes) { return bytes + std::string("\x52\x02\x02\x00", 4); };
    damage[5] = resequenced(0);
    damage[7] = resequenced(1000);
    return std::make_unique<DamagingBackend>(std::move(inner), std::move(damage), damaged_reads);
  });
  ScriptedPlugin plugin(Socket("p"), AlwaysOk());
  auto dispatcher = StartDispatcher({Plugin("p")});
  std::vector<v1::Event> events;
  for (int i = 1; i <= 8; ++i) events.push_back(Event("product.updated", absl::StrCat("r", i), 1));
  Append(std::move(events));
  const auto stopped_at = [&](uint64_t cursor, const std::string& error) {
    return WaitFor([&] {
      const PluginDispatchStats stats = StatsOf(*dispatcher, "p");
      return stats.cursor == cursor && absl::StrContains(stats.last_error, error);
    });
  };
  EXPECT_TRUE(stopped_at(2, "event 3: stored event: field 10 is not a valid Timestamp"));
  // Read again once a second: at most 3 reads in 2 s (a loop made thousands).
  const int reads_before = damaged_reads->load();
  absl::SleepFor(absl::Seconds(2));
  EXPECT_LE(damaged_reads->load() - reads_before, 3);
  EXPECT_EQ(StatsOf(*dispatcher, "p").cursor, 2u);
  ASSERT_TRUE(dispatcher->Seek("p", 4).ok());
  EXPECT_TRUE(stopped_at(4, "event 5: stored event: its sequence field reads 0, its key 5"));
  ASSERT_TRUE(dispatcher->Seek("p", 6).ok());
  EXPECT_TRUE(stopped_at(6, "event 7: stored event: its sequence field reads 1007, its key 7"));
  ASSERT_TRUE(dispatcher->Seek("p", 8).ok());
  ASSERT_TRUE(WaitFor([&] { return StatsOf(*dispatcher, "p").cursor == 8; }));
  std::set<uint64_t> delivered;
  for (const auto& call : plugin.calls()) delivered.insert(call.sequence);
  EXPECT_EQ(delivered, (std::set<uint64_t>{1, 2, 4, 6, 8}));
  EXPECT_EQ(StatsOf(*dispatcher, "p").skipped_filter, 0u);
}

TEST_P(DispatcherTest, PluginThatNeverAcksDoesNotBlockAnother) {
  ScriptedPlugin stuck(Socket("stuck"), [](const v1::Delivery&) {
    return std::optional<std::pair<v1::Outcome, int>>();
  });
  ScriptedPlugin healthy(Socket("healthy"), AlwaysOk());
  PluginConfig stuck_config = Plugin("stuck");
  stuck_config.ack_timeout = std::chrono::seconds(60);
  auto dispatcher = StartDispatcher({stuck_config, Plugin("healthy")});
  std::vector<v1::Event> events;
  for (int i = 0; i < 50; ++i) events.push_back(Event("product.updated", absl::StrCat("r", i), 1));
  Append(std::move(events));
  ASSERT_TRUE(WaitFor([&] { return StatsOf(*dispatcher, "healthy").cursor == 50; }));
  // The stuck plugin did receive its share, a full window it never answers (max_in_flight
  // default): a wait, since its dispatcher runs at its own pace.
  ASSERT_TRUE(WaitFor([&] { return StatsOf(*dispatcher, "stuck").in_flight == 16; }));
  ASSERT_TRUE(WaitFor([&] { return stuck.calls().size() == 16; }));
  EXPECT_EQ(StatsOf(*dispatcher, "stuck").cursor, 0u);
}

TEST_P(DispatcherTest, PluginDownThenUpReceivesEverything) {
  auto dispatcher = StartDispatcher({Plugin("p")});
  Append({Event("product.updated", "r1", 1), Event("product.updated", "r2", 1)});
  // The dispatcher tried to reach the plugin and failed (not merely "not yet tried"): the events
  // are held, not skipped. The stats carrying the error come from the pass that failed.
  ASSERT_TRUE(WaitFor([&] {
    return StatsOf(*dispatcher, "p").last_error == "plugin unreachable at unix:" + Socket("p");
  }));
  EXPECT_EQ(StatsOf(*dispatcher, "p").cursor, 0u);
  EXPECT_EQ(StatsOf(*dispatcher, "p").delivered, 0u);
  ScriptedPlugin plugin(Socket("p"), AlwaysOk());
  ASSERT_TRUE(WaitFor([&] { return StatsOf(*dispatcher, "p").cursor == 2; }));
  EXPECT_EQ(plugin.calls().size(), 2u);
}

TEST_P(DispatcherTest, PauseHoldsSeekReplays) {
  ScriptedPlugin plugin(Socket("p"), AlwaysOk());
  auto dispatcher = StartDispatcher({Plugin("p")});
  Append({Event("product.updated", "r1", 1), Event("product.updated", "r2", 1)});
  ASSERT_TRUE(WaitFor([&] { return StatsOf(*dispatcher, "p").cursor == 2; }));
  ASSERT_TRUE(dispatcher->Pause("p").ok());
  ASSERT_TRUE(WaitFor([&] { return StatsOf(*dispatcher, "p").state == "paused"; }));
  Append({Event("product.updated", "r3", 1)});
  // Sequence 4, a stale marker: once counted, the paused dispatcher has read r3 and held it.
  ASSERT_TRUE(AppendStaleMarkerAndWait(*dispatcher, "p", "r3"));
  const PluginDispatchStats paused = StatsOf(*dispatcher, "p");
  EXPECT_EQ(paused.in_flight, 0u);
  EXPECT_EQ(paused.delivered, 2u);
  EXPECT_EQ(paused.cursor, 2u);
  EXPECT_EQ(paused.lag, 2u);
  EXPECT_EQ(plugin.calls().size(), 2u);
  ASSERT_TRUE(dispatcher->Resume("p").ok());
  ASSERT_TRUE(WaitFor([&] { return StatsOf(*dispatcher, "p").cursor == 4; }));
  EXPECT_EQ(plugin.calls().size(), 3u);
  ASSERT_TRUE(dispatcher->Seek("p", 1).ok());
  ASSERT_TRUE(WaitFor([&] { return plugin.calls().size() == 6; }));  // 1, 2, 3 (4 is stale)
  EXPECT_EQ(plugin.calls()[3].sequence, 1u);
  // An operator's replay starts a new round: attempt 1 again.
  for (int i = 3; i < 6; ++i) EXPECT_EQ(plugin.calls()[i].attempt, 1u) << i;
  EXPECT_EQ(dispatcher->Pause("nope").code(), absl::StatusCode::kNotFound);
}

TEST_P(DispatcherTest, RedeliveredDeadLetterIsRemovedOnceDelivered) {
  std::atomic<bool> accept{false};
  ScriptedPlugin plugin(Socket("p"), [&](const v1::Delivery&) {
    return std::optional<std::pair<v1::Outcome, int>>(
        {accept ? v1::OUTCOME_OK : v1::OUTCOME_REJECT, 0});
  });
  auto dispatcher = StartDispatcher({Plugin("p")});
  Append({Event("product.updated", "r1", 1), Event("product.updated", "r2", 1)});
  absl::StatusOr<std::vector<v1::DeadLetter>> letters;
  ASSERT_TRUE(WaitFor([&] {
    letters = dispatcher->dead_letters().List("p", 0, 100);
    return letters.ok() && letters->size() == 2;
  }));
  accept = true;  // the operator fixed the cause, then retries
  ASSERT_TRUE(dispatcher->Redeliver("p", {(*letters)[0].event()}).ok());
  ASSERT_TRUE(WaitFor([&] {
    letters = dispatcher->dead_letters().List("p", 0, 100);
    return letters.ok() && letters->size() == 1;
  }));
  EXPECT_EQ((*letters)[0].event().sequence(), 2u);
  std::vector<Call> calls = plugin.calls();
  ASSERT_EQ(calls.size(), 3u);
  EXPECT_EQ(calls[2].sequence, 1u);
  EXPECT_EQ(calls[2].attempt, 1u);  // an operator's retry starts a new round
  EXPECT_EQ(StatsOf(*dispatcher, "p").cursor, 2u);
  EXPECT_EQ(dispatcher->PluginNames(), std::vector<std::string>{"p"});
}

// An operator's retry never loses a letter: it stays listed (marked as being retried) while the
// plugin holds the redelivered event, across a restart of the dispatcher (which resumes the
// retry), and goes only once the plugin acknowledges it OK. A retry asked again meanwhile
// sends nothing more.
TEST_P(DispatcherTest, RetriedDeadLetterStaysUntilAckedAndResumesAfterARestart) {
  enum Mode { kReject, kHold, kAccept };
  std::atomic<int> mode{kReject};
  ScriptedPlugin plugin(Socket("p"), [&](const v1::Delivery&) {
    switch (mode.load()) {
      case kReject:
        return std::optional<std::pair<v1::Outcome, int>>({v1::OUTCOME_REJECT, 0});
      case kHold:
        return std::optional<std::pair<v1::Outcome, int>>();  // never acked
      default:
        return std::optional<std::pair<v1::Outcome, int>>({v1::OUTCOME_OK, 0});
    }
  });
  auto listed = [&](Dispatcher& d) {
    absl::StatusOr<std::vector<v1::DeadLetter>> letters = d.dead_letters().List("p", 0, 100);
    EXPECT_TRUE(letters.ok()) << letters.status();
    return letters.ok() ? *letters : std::vector<v1::DeadLetter>{};
  };
  {
    auto dispatcher = StartDispatcher({Plugin("p")});
    Append({Event("product.updated", "r1", 1)});
    ASSERT_TRUE(WaitFor([&] { return listed(*dispatcher).size() == 1; }));
    EXPECT_FALSE(listed(*dispatcher)[0].has_retry_requested_at());

    mode = kHold;
    absl::StatusOr<RetriedDeadLetters> retried =
        dispatcher->dead_letters().Retry("p", {.all = true, .sequences = {}}, 100);
    ASSERT_TRUE(retried.ok()) << retried.status();
    EXPECT_EQ(retried->sequences, std::vector<uint64_t>{1});
    // The plugin holds the redelivery; the letter is still there, marked.
    ASSERT_TRUE(WaitFor([&] { return plugin.calls().size() == 2; }));
    std::vector<v1::DeadLetter> letters = listed(*dispatcher);
    ASSERT_EQ(letters.size(), 1u);
    EXPECT_EQ(letters[0].event().sequence(), 1u);
    EXPECT_TRUE(letters[0].has_retry_requested_at());
    EXPECT_EQ(letters[0].reason(), "rejected: scripted");

    // Asked again: `all` leaves out the letter being retried, a listed one is handed over again
    // but not sent while its redelivery is in flight.
    retried = dispatcher->dead_letters().Retry("p", {.all = true, .sequences = {}}, 100);
    ASSERT_TRUE(retried.ok()) << retried.status();
    EXPECT_TRUE(retried->sequences.empty());
    EXPECT_FALSE(retried->more);
    retried = dispatcher->dead_letters().Retry("p", {.all = false, .sequences = {1}}, 100);
    ASSERT_TRUE(retried.ok()) << retried.status();
    EXPECT_EQ(retried->sequences, std::vector<uint64_t>{1});
    ASSERT_TRUE(AppendStaleMarkerAndWait(*dispatcher, "p", "r1"));
    EXPECT_EQ(StatsOf(*dispatcher, "p").in_flight, 1u);
    EXPECT_EQ(plugin.calls().size(), 2u);
    EXPECT_EQ(plugin.overlaps(), 0);
    dispatcher->Stop();  // pimgate stops (or crashes) while the plugin holds the event
  }
  // Restarted: the letter is still listed and its retry resumes; once acknowledged, it goes.
  mode = kAccept;
  auto dispatcher = StartDispatcher({Plugin("p")});
  ASSERT_TRUE(WaitFor([&] { return listed(*dispatcher).empty(); }));
  std::vector<Call> calls = plugin.calls();
  ASSERT_EQ(calls.size(), 3u);
  EXPECT_EQ(calls[2].sequence, 1u);
  EXPECT_EQ(calls[1].attempt, 1u);  // an operator's retry starts a new round at attempt 1
  // Resumed after the restart: the retry may have reached the plugin before (it did, held).
  EXPECT_EQ(calls[2].attempt, 2u);
  // The letter is removed when the progress is saved, before the counters are published.
  EXPECT_TRUE(WaitFor([&] { return StatsOf(*dispatcher, "p").delivered == 1u; }))
      << StatsOf(*dispatcher, "p").delivered;
}

// A retried letter whose event fails again is replaced: new reason and attempts, no mark.
TEST_P(DispatcherTest, RetriedDeadLetterThatFailsAgainIsReplaced) {
  std::atomic<v1::Outcome> outcome{v1::OUTCOME_REJECT};
  ScriptedPlugin plugin(Socket("p"), [&](const v1::Delivery&) {
    return std::optional<std::pair<v1::Outcome, int>>({outcome.load(), 0});
  });
  auto dispatcher = StartDispatcher({Plugin("p")});
  Append({Event("product.updated", "r1", 1)});
  absl::StatusOr<std::vector<v1::DeadLetter>> letters;
  ASSERT_TRUE(WaitFor([&] {
    letters = dispatcher->dead_letters().List("p", 0, 100);
    return letters.ok() && letters->size() == 1;
  }));
  EXPECT_TRUE((*letters)[0].rejected());
  outcome = v1::OUTCOME_RETRY;  // now it fails until attempts run out
  ASSERT_TRUE(dispatcher->dead_letters().Retry("p", {.all = false, .sequences = {1}}, 100).ok());
  ASSERT_TRUE(WaitFor([&] {
    letters = dispatcher->dead_letters().List("p", 0, 100);
    return letters.ok() && letters->size() == 1 && !(*letters)[0].rejected();
  }));
  EXPECT_FALSE((*letters)[0].has_retry_requested_at());
  EXPECT_EQ((*letters)[0].attempts(), 4u);
  EXPECT_EQ((*letters)[0].reason(), "gave up after 4 attempt(s); last: retry: scripted");
  EXPECT_EQ(plugin.calls().size(), 5u);
}

TEST_P(DispatcherTest, PauseIsSavedAndSurvivesARestart) {
  ScriptedPlugin held(Socket("held"), AlwaysOk());
  ScriptedPlugin other(Socket("other"), AlwaysOk());
  {
    auto dispatcher = StartDispatcher({Plugin("held"), Plugin("other")});
    ASSERT_TRUE(dispatcher->Pause("held").ok());
    dispatcher->Stop();
  }
  // A new dispatcher over the same store (pimgate restarted): still paused.
  auto dispatcher = StartDispatcher({Plugin("held"), Plugin("other")});
  ASSERT_TRUE(WaitFor([&] { return StatsOf(*dispatcher, "held").state == "paused"; }));
  Append({Event("product.updated", "r1", 1)});
  // The paused one read it (it counted the stale marker after it) and holds it.
  ASSERT_TRUE(AppendStaleMarkerAndWait(*dispatcher, "held", "r1"));
  EXPECT_EQ(StatsOf(*dispatcher, "held").in_flight, 0u);
  EXPECT_EQ(StatsOf(*dispatcher, "held").delivered, 0u);
  EXPECT_TRUE(held.calls().empty());
  EXPECT_EQ(StatsOf(*dispatcher, "held").lag, 2u);
  // Nothing was handed out, so nothing is marked: a plugin without deliveries costs no write.
  EXPECT_EQ(log_->LoadHandedOut("held").value_or(99), 0u);
  ASSERT_TRUE(dispatcher->Resume("held").ok());
  ASSERT_TRUE(WaitFor([&] { return StatsOf(*dispatcher, "held").cursor == 2; }));
  EXPECT_EQ(held.calls().size(), 1u);
  dispatcher->Stop();
  // Resumed is saved too.
  auto again = StartDispatcher({Plugin("held"), Plugin("other")});
  Append({Event("product.updated", "r2", 1)});
  ASSERT_TRUE(WaitFor([&] { return StatsOf(*again, "held").cursor == 3; }));
  EXPECT_EQ(StatsOf(*again, "held").state, "idle");
}

TEST_P(DispatcherTest, NothingToDeliverReadsIdleAndStreamErrorsClear) {
  auto plugin = std::make_unique<ScriptedPlugin>(Socket("p"), AlwaysOk());
  auto dispatcher = StartDispatcher({Plugin("p")});
  EXPECT_TRUE(WaitFor([&] { return StatsOf(*dispatcher, "p").state == "idle"; }));
  Append({Event("product.updated", "r1", 1)});
  ASSERT_TRUE(WaitFor([&] { return StatsOf(*dispatcher, "p").cursor == 1; }));
  // Caught up with a stream open: idle, not "streaming".
  ASSERT_TRUE(WaitFor([&] { return StatsOf(*dispatcher, "p").state == "idle"; }));

  // The plugin goes away (a restart, a crash): its stream breaks while nothing is pending. That
  // is no delivery problem: idle, no error (it used to read "connecting" until the next event).
  plugin->Shutdown();
  plugin.reset();
  ASSERT_TRUE(WaitFor([&] { return StatsOf(*dispatcher, "p").connects == 1; }));
  EXPECT_TRUE(WaitFor([&] {
    PluginDispatchStats stats = StatsOf(*dispatcher, "p");
    return stats.state == "idle" && stats.last_error.empty();
  }));

  // An event while the plugin is down: connecting, with the reason. If the dispatcher had not yet
  // seen the old stream end when the event came, the first error is that stream's end ("stream
  // ended: ..."); the reconnection that follows fails and names the real reason.
  Append({Event("product.updated", "r2", 1)});
  const std::string unreachable = "plugin unreachable at unix:" + Socket("p");
  EXPECT_TRUE(WaitFor([&] {
    PluginDispatchStats stats = StatsOf(*dispatcher, "p");
    return stats.state == "connecting" && stats.last_error == unreachable;
  })) << "last error: "
      << StatsOf(*dispatcher, "p").last_error;
  // ...which goes once the plugin is back and the event delivered.
  ScriptedPlugin back(Socket("p"), AlwaysOk());
  ASSERT_TRUE(WaitFor([&] { return StatsOf(*dispatcher, "p").cursor == 2; }));
  ASSERT_TRUE(WaitFor([&] { return StatsOf(*dispatcher, "p").state == "idle"; }));
  EXPECT_EQ(StatsOf(*dispatcher, "p").last_error, "");
}

TEST_P(DispatcherTest, HoldDrainsInFlightDeliveriesAndHoldsNewOnes) {
  ScriptedPlugin plugin(Socket("p"), AlwaysOk(/*delay_ms=*/300));
  ScriptedPlugin other(Socket("other"), AlwaysOk());
  auto dispatcher = StartDispatcher({Plugin("p"), Plugin("other")});
  Append({Event("product.updated", "r1", 1), Event("product.updated", "r2", 1),
          Event("product.updated", "r3", 1)});
  ASSERT_TRUE(WaitFor([&] { return plugin.calls().size() == 3; }));
  absl::StatusOr<Dispatcher::DrainResult> drained =
      dispatcher->HoldAndDrain("p", absl::Seconds(10));
  ASSERT_TRUE(drained.ok()) << drained.status();
  // Every delivery in flight was answered before the hold let the stream go.
  EXPECT_EQ(drained->unanswered, 0u);
  EXPECT_LE(drained->in_flight, 3u);
  EXPECT_EQ(StatsOf(*dispatcher, "p").cursor, 3u);
  EXPECT_EQ(StatsOf(*dispatcher, "p").state, "restarting");
  // Held: a new event waits (the stale marker after it shows it was read).
  Append({Event("product.updated", "r4", 1)});
  ASSERT_TRUE(AppendStaleMarkerAndWait(*dispatcher, "p", "r4"));
  EXPECT_EQ(StatsOf(*dispatcher, "p").in_flight, 0u);
  EXPECT_EQ(StatsOf(*dispatcher, "p").delivered, 3u);
  EXPECT_EQ(plugin.calls().size(), 3u);
  ASSERT_TRUE(dispatcher->EndHold("p").ok());
  ASSERT_TRUE(WaitFor([&] { return StatsOf(*dispatcher, "p").cursor == 5; }));
  EXPECT_EQ(plugin.calls().size(), 4u);
  EXPECT_EQ(StatsOf(*dispatcher, "p").retried, 0u);
  EXPECT_EQ(dispatcher->HoldAndDrain("nope").status().code(), absl::StatusCode::kNotFound);
}

TEST_P(DispatcherTest, HoldRedeliversWhatTheDrainLeftUnansweredWithoutCountingAFailure) {
  // Attempt 1 is never answered (a plugin on its way out); attempt 2 is.
  ScriptedPlugin plugin(Socket("p"), [](const v1::Delivery& d) {
    if (d.attempt() == 1) return std::optional<std::pair<v1::Outcome, int>>();
    return std::optional<std::pair<v1::Outcome, int>>({v1::OUTCOME_OK, 0});
  });
  PluginConfig config = Plugin("p");
  config.retry.max_attempts = 1;  // a counted failure would dead-letter at once
  config.ack_timeout = std::chrono::seconds(60);
  auto dispatcher = StartDispatcher({config});
  Append({Event("product.updated", "r1", 1), Event("product.updated", "r2", 1)});
  ASSERT_TRUE(WaitFor([&] { return plugin.calls().size() == 2; }));
  absl::StatusOr<Dispatcher::DrainResult> drained =
      dispatcher->HoldAndDrain("p", absl::Milliseconds(100));
  ASSERT_TRUE(drained.ok()) << drained.status();
  EXPECT_EQ(drained->in_flight, 2u);
  EXPECT_EQ(drained->unanswered, 2u);
  EXPECT_EQ(StatsOf(*dispatcher, "p").in_flight, 0u);
  ASSERT_TRUE(dispatcher->EndHold("p").ok());
  ASSERT_TRUE(WaitFor([&] { return StatsOf(*dispatcher, "p").cursor == 2; }));
  const std::vector<Call> calls = plugin.calls();
  ASSERT_EQ(calls.size(), 4u);
  EXPECT_EQ(calls[2].attempt, 2u);
  EXPECT_EQ(calls[3].attempt, 2u);
  const PluginDispatchStats stats = StatsOf(*dispatcher, "p");
  EXPECT_EQ(stats.delivered, 2u);
  EXPECT_EQ(stats.dead_lettered, 0u);
  EXPECT_EQ(stats.retried, 0u);
  auto letters = dispatcher->dead_letters().Count("p");
  ASSERT_TRUE(letters.ok());
  EXPECT_EQ(*letters, 0u);
}

TEST_P(DispatcherTest, CountDeadLettersCountsWhatTheStoreHolds) {
  ScriptedPlugin plugin(Socket("p"), [](const v1::Delivery&) {
    return std::optional<std::pair<v1::Outcome, int>>({v1::OUTCOME_REJECT, 0});
  });
  ScriptedPlugin other(Socket("px"), AlwaysOk());
  auto dispatcher = StartDispatcher({Plugin("p"), Plugin("px")});
  Append({Event("product.updated", "r1", 1), Event("product.updated", "r2", 1),
          Event("product.updated", "r3", 1)});
  ASSERT_TRUE(WaitFor([&] {
    auto count = dispatcher->dead_letters().Count("p");
    return count.ok() && *count == 3;
  }));
  // Another plugin's letters are not counted, even one whose name starts the same.
  EXPECT_EQ(*dispatcher->dead_letters().Count("px"), 0u);
  ASSERT_EQ(*dispatcher->dead_letters().Purge("p", {.sequences = {2}}, 10), 1u);
  EXPECT_EQ(*dispatcher->dead_letters().Count("p"), 2u);
  EXPECT_EQ(StatsOf(*dispatcher, "p").dead_lettered, 3u);
}

// ---- Cluster dispatch: several nodes on one 3-server R3 JetStream cluster ----------------------

// Every delivery any node's plugin received, in the order they arrived (one lock for all).
struct ClusterRecorder {
  struct Delivery {
    int node;
    uint64_t sequence;
    uint32_t attempt;
    std::string resource;
    std::chrono::steady_clock::time_point at;
  };
  std::mutex mu;
  std::vector<Delivery> deliveries;

  void Record(int node, const v1::Delivery& d) {
    std::lock_guard lock(mu);
    deliveries.push_back({node, d.event().sequence(), d.attempt(), d.event().resource_id(),
                          std::chrono::steady_clock::now()});
  }
  std::vector<Delivery> Snapshot() {
    std::lock_guard lock(mu);
    return deliveries;
  }
};

// A lease store that can be cut off, as if the node lost contact with NATS: every call fails.
class CuttableLeases final : public LeaseStore {
 public:
  explicit CuttableLeases(std::unique_ptr<LeaseStore> inner) : inner_(std::move(inner)) {}
  void Cut(bool cut) { cut_.store(cut); }

  absl::StatusOr<uint64_t> Create(const std::string& key, const std::string& value) override {
    if (cut_) return Down();
    return inner_->Create(key, value);
  }
  absl::StatusOr<uint64_t> Update(const std::string& key, const std::string& value,
                                  uint64_t revision) override {
    if (cut_) return Down();
    return inner_->Update(key, value, revision);
  }
  absl::StatusOr<std::optional<LeaseRecord>> Get(const std::string& key) override {
    if (cut_) return Down();
    return inner_->Get(key);
  }
  absl::StatusOr<std::vector<LeaseRecord>> List(const std::string& prefix) override {
    if (cut_) return Down();
    return inner_->List(prefix);
  }
  absl::Status Health() override { return cut_ ? Down() : inner_->Health(); }

 private:
  static absl::Status Down() { return absl::UnavailableError("cut off from NATS (test)"); }
  std::unique_ptr<LeaseStore> inner_;
  std::atomic<bool> cut_{false};
};

class ClusterDispatchTest : public ::testing::Test {
 protected:
  static constexpr int kPartitions = 8;
  // Short, for a quick takeover, and long enough for a round of lease calls on a busy machine.
  static constexpr absl::Duration kTtl = absl::Seconds(4);

  struct Node {
    std::unique_ptr<EventLog> log;
    std::shared_ptr<CuttableLeases> leases;
    std::unique_ptr<ScriptedPlugin> plugin;
    std::unique_ptr<Dispatcher> dispatcher;
  };

  static void SetUpTestSuite() {
    nats_ = std::make_unique<testing::NatsCluster>(testing::NatsCluster::Options{.servers = 3});
  }
  static void TearDownTestSuite() { nats_.reset(); }

  void SetUp() override {
    ASSERT_TRUE(nats_->started());
    name_ = ::testing::UnitTest::GetInstance()->current_test_info()->name();
  }
  void TearDown() override {
    for (auto& node : nodes_) StopNode(node);
  }

  JetStreamConfig Js() const {
    JetStreamConfig js = nats_->Config(name_);
    js.cursor_bucket = name_ + "_cursors";
    js.dead_letter_bucket = name_ + "_letters";
    js.cluster.lease_bucket = name_ + "_leases";
    js.cluster.lease_ttl = absl::ToChronoMilliseconds(kTtl);
    js.cluster.partitions = kPartitions;
    return js;
  }

  // Starts node `index` (its own replica, plugin and lease connection).
  void StartNode(int index) {
    if (static_cast<int>(nodes_.size()) <= index) nodes_.resize(index + 1);
    Node& node = nodes_[index];
    StoreConfig store = testing::StoreAt(dir_.File(absl::StrCat("node", index)));
    store.backend = StoreBackend::kJetStream;
    store.jetstream = Js();
    auto log = EventLog::Open(store);
    ASSERT_TRUE(log.ok()) << log.status();
    node.log = std::move(*log);
    auto leases = OpenJetStreamLeaseStore(*store.jetstream);
    ASSERT_TRUE(leases.ok()) << leases.status();
    node.leases = std::make_shared<CuttableLeases>(std::move(*leases));
    const std::string socket = dir_.File(absl::StrCat("plugin", index, ".sock"));
    node.plugin = std::make_unique<ScriptedPlugin>(socket, [this, index](const v1::Delivery& d) {
      recorder_.Record(index, d);
      if (silent_node_.load() == index) return std::optional<std::pair<v1::Outcome, int>>();
      const bool reject = d.event().resource_id() == reject_resource_.load();
      return std::optional<std::pair<v1::Outcome, int>>(
          {reject ? v1::OUTCOME_REJECT : v1::OUTCOME_OK, 2});
    });
    PluginConfig plugin;
    plugin.name = "erp";
    plugin.address = "unix:" + socket;
    plugin.ack_timeout = std::chrono::milliseconds(5000);
    plugin.max_in_flight = 16;
    DispatcherOptions options;
    options.cluster = ClusterDispatchOptions::FromConfig(store.jetstream->cluster, node.leases);
    options.cluster->node_id = absl::StrCat("n", index);
    auto dispatcher = Dispatcher::Create(
        {plugin}, node.log.get(), [socket](const std::string&) { return "unix:" + socket; },
        options);
    ASSERT_TRUE(dispatcher.ok()) << dispatcher.status();
    node.dispatcher = std::move(*dispatcher);
    ASSERT_TRUE(node.dispatcher->Start().ok());
  }

  void StopNode(Node& node) {
    if (node.dispatcher) node.dispatcher->Stop();
    node.dispatcher.reset();
    node.plugin.reset();
    node.log.reset();
  }

  // Appends `count` events of `resources` resources round-robin, through the nodes' logs in
  // turn (every node ingests; the others catch up with the stream).
  void Append(int count, int resources, const std::vector<int>& through) {
    for (int i = 0; i < count; ++i) {
      v1::Event event;
      event.set_id(testing::NewUuid());
      event.set_source("pim");
      event.set_type("product.updated");
      event.set_kind("product");
      event.set_resource_id(absl::StrCat("sku-", i % resources));
      *event.mutable_version_at() = TimeUtil::SecondsToTimestamp(1'800'000'000 + next_version_++);
      AppendRequest request;
      request.events.push_back(event);
      EventLog& log = *nodes_[through[i % through.size()]].log;
      absl::StatusOr<AppendResult> result = log.AppendSync(std::move(request));
      ASSERT_TRUE(result.ok()) << result.status();
      appended_[event.resource_id()].push_back(result->first_sequence);
    }
  }

  // Waits until `done` holds; the guard only catches a hang.
  static bool WaitFor(const std::function<bool()>& done, absl::Duration guard) {
    const absl::Time end = absl::Now() + guard;
    while (absl::Now() < end) {
      if (done()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return done();
  }

  bool AllDelivered() {
    std::map<std::string, std::set<uint64_t>> seen;
    for (const auto& d : recorder_.Snapshot()) seen[d.resource].insert(d.sequence);
    for (const auto& [resource, sequences] : appended_) {
      for (uint64_t sequence : sequences) {
        if (!seen[resource].contains(sequence)) return false;
      }
    }
    return true;
  }

  // Per resource, in arrival order: each delivery is the same event again, the resource's next
  // one, or an earlier one (a prefix delivered again after a takeover); never a skip ahead.
  void ExpectPerResourceOrder() {
    std::map<std::string, std::vector<uint64_t>> arrived;
    for (const auto& d : recorder_.Snapshot()) arrived[d.resource].push_back(d.sequence);
    for (const auto& [resource, expected] : appended_) {
      const std::vector<uint64_t>& got = arrived[resource];
      ASSERT_FALSE(got.empty()) << resource;
      EXPECT_EQ(got.front(), expected.front()) << resource;
      for (std::size_t i = 1; i < got.size(); ++i) {
        auto at = std::find(expected.begin(), expected.end(), got[i - 1]);
        ASSERT_NE(at, expected.end());
        const uint64_t next = std::next(at) == expected.end() ? 0 : *std::next(at);
        EXPECT_TRUE(got[i] <= got[i - 1] || got[i] == next)
            << resource << ": " << got[i] << " arrived after " << got[i - 1];
      }
    }
  }

  // Partitions held, per node, as the nodes see them.
  uint64_t Held(int index) { return nodes_[index].dispatcher->Leases().held; }

  // Whether the lease bucket names exactly one live holder, among `nodes`, for every partition,
  // and the nodes' own counts add up to the partitions.
  bool OwnedOnceBy(const std::vector<int>& nodes) {
    auto owners = nodes_[nodes.front()].dispatcher->Owners();
    if (!owners.ok() || static_cast<int>(owners->size()) != kPartitions) return false;
    std::set<std::string> names;
    for (int n : nodes) names.insert(absl::StrCat("n", n));
    for (const PartitionOwner& owner : *owners) {
      if (!names.contains(owner.node)) return false;
    }
    uint64_t held = 0;
    for (int n : nodes) held += Held(n);
    return held == static_cast<uint64_t>(kPartitions);
  }

  static std::unique_ptr<testing::NatsCluster> nats_;
  std::string name_;
  TempDir dir_;
  std::vector<Node> nodes_;
  ClusterRecorder recorder_;
  std::map<std::string, std::vector<uint64_t>> appended_;
  int64_t next_version_ = 0;
  // Deliveries of this resource are answered REJECT (dead-lettered); "": none.
  std::atomic<const char*> reject_resource_{""};
  // The plugin of this node never answers (-1: none).
  std::atomic<int> silent_node_{-1};
};

std::unique_ptr<testing::NatsCluster> ClusterDispatchTest::nats_;

// A serialization that does not depend on map iteration order (Struct fields), so that two
// serializations of equal messages can be compared byte for byte.
template <class Message>
std::string Deterministic(const Message& message) {
  std::string out;
  google::protobuf::io::StringOutputStream stream(&out);
  google::protobuf::io::CodedOutputStream coded(&stream);
  coded.SetSerializationDeterministic(true);
  message.SerializeToCodedStream(&coded);
  coded.Trim();
  return out;
}

// The fields the dispatcher routes on, read by ScanEventRoute, equal ParseEventHeader's.
void ExpectRouteIsHeader(const EventRoute& route, const v1::Event& header) {
  EXPECT_EQ(route.sequence, header.sequence());
  EXPECT_EQ(route.source, header.source());
  EXPECT_EQ(route.type, header.type());
  EXPECT_EQ(route.kind, header.kind());
  EXPECT_EQ(route.resource_id, header.resource_id());
  EXPECT_EQ(route.author, header.author());
  EXPECT_EQ(route.author_type, header.author_type());
  EXPECT_EQ(route.stale, header.stale());
}

// Deliveries framed straight into a DeliveryBatch (AppendDeliveryToBatch) are the bytes protobuf
// writes for the same batch, and parse back to it: sizes around the varint boundaries (127,
// 16383 bytes), attempts 0 (not written), 1 and multi-byte.
TEST(DispatcherWire, BatchFramingIsProtobufsOwn) {
  v1::DeliveryBatch expected;
  std::string framed;
  std::size_t sizes_total = 0;
  int n = 0;
  for (const std::size_t data_size : {0, 1, 90, 120, 126, 127, 128, 200, 16'300, 16'400, 70'000}) {
    for (const uint32_t attempt : {0u, 1u, 2u, 127u, 128u, 300'000u}) {
      v1::Event event;
      event.set_sequence(1000 + n++);
      event.set_id(absl::StrCat("id-", n));
      event.set_source("pim");
      event.set_type("product.updated");
      event.set_kind("product");
      event.set_resource_id(absl::StrCat("r", n % 7));
      (*event.mutable_data()->mutable_fields())["blob"].set_string_value(
          std::string(data_size, 'x'));
      (*event.mutable_data()->mutable_fields())["family"].set_string_value("shoes");
      const std::string bytes = Deterministic(event);
      v1::Delivery& delivery = *expected.add_deliveries();
      *delivery.mutable_event() = event;
      delivery.set_attempt(attempt);
      const std::size_t appended = AppendDeliveryToBatch(framed, bytes, attempt);
      EXPECT_EQ(appended, DeliveryBatchElementSize(bytes.size(), attempt));
      sizes_total += appended;
      // One delivery alone, as Deliver (kSingle) sends it, is protobuf's Delivery too.
      EXPECT_EQ(EncodeDelivery(bytes, attempt), Deterministic(delivery));
    }
  }
  EXPECT_EQ(sizes_total, framed.size());
  EXPECT_EQ(framed, Deterministic(expected));
  v1::DeliveryBatch parsed;
  ASSERT_TRUE(parsed.ParseFromString(framed));
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(parsed, expected));
}

// ScanEventRoute reads the fields ParseEventHeader decodes, as views, and rejects what it rejects.
TEST(DispatcherWire, EventRouteIsTheHeadersFields) {
  v1::Event event;
  event.set_sequence(1ULL << 40);
  event.set_id("id-1");
  event.set_source("pim");
  event.set_type("product.updated");
  event.set_kind("product");
  event.set_resource_id("uuid-1");
  event.set_author("julia");
  event.set_author_type("ui");
  event.set_stale(true);
  *event.mutable_received_at() = TimeUtil::MillisecondsToTimestamp(1234);
  (*event.mutable_data()->mutable_fields())["sku"].set_string_value("not a field of the route");
  const std::string bytes = event.SerializeAsString();
  absl::StatusOr<EventRoute> route = ScanEventRoute(bytes);
  ASSERT_TRUE(route.ok()) << route.status();
  absl::StatusOr<v1::Event> header = ParseEventHeader(bytes);
  ASSERT_TRUE(header.ok()) << header.status();
  ExpectRouteIsHeader(*route, *header);
  // Views into the bytes, not copies.
  EXPECT_GE(route->resource_id.data(), bytes.data());
  EXPECT_LE(route->resource_id.data() + route->resource_id.size(), bytes.data() + bytes.size());

  absl::StatusOr<EventRoute> empty = ScanEventRoute("");
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->sequence, 0u);
  EXPECT_TRUE(empty->resource_id.empty());
  EXPECT_FALSE(empty->stale);

  // Cut anywhere inside a field: a clear DataLoss from both, never a partial route.
  for (const std::size_t cut : {bytes.size() - 1, std::size_t{3}, std::size_t{12}}) {
    const std::string damaged = bytes.substr(0, cut);
    absl::StatusOr<EventRoute> scanned = ScanEventRoute(damaged);
    ASSERT_FALSE(scanned.ok()) << cut;
    EXPECT_EQ(scanned.status().code(), absl::StatusCode::kDataLoss);
    EXPECT_FALSE(ParseEventHeader(damaged).ok()) << cut;
  }
  const std::string bad_tag = bytes + std::string("\x00\x01", 2);
  EXPECT_EQ(ScanEventRoute(bad_tag).status().code(), absl::StatusCode::kDataLoss);
  // A string field that is not UTF-8, kept by the route or not: rejected by both, as protobuf's
  // parser rejects it.
  for (const bool routed : {true, false}) {
    v1::Event bad = event;
    (routed ? *bad.mutable_resource_id() : *bad.mutable_id()) = std::string("a\xff\xfe", 3);
    std::string bad_bytes;
    ASSERT_TRUE(bad.SerializePartialToString(&bad_bytes));
    EXPECT_EQ(ScanEventRoute(bad_bytes).status().code(), absl::StatusCode::kDataLoss) << routed;
    EXPECT_FALSE(ParseEventHeader(bad_bytes).ok()) << routed;
  }
}

// ScanEventRoute fails exactly when ParseEventHeader fails, and otherwise reads its fields, for
// damage the framing alone does not show: field number 0, damaged Timestamp contents, groups.
TEST(DispatcherWire, EventRouteFailsWhenTheHeaderFails) {
  v1::Event event;
  event.set_sequence(77);
  event.set_source("pim");
  event.set_kind("product");
  event.set_resource_id("uuid-7");
  event.set_author("julia");
  *event.mutable_occurred_at() = TimeUtil::MillisecondsToTimestamp(1000);
  (*event.mutable_data()->mutable_fields())["sku"].set_string_value("s");
  const std::string bytes = event.SerializeAsString();
  // Whether both accept `damaged` (they must agree), and that they read the same fields.
  const auto agreed_ok = [](const std::string& damaged) {
    absl::StatusOr<EventRoute> route = ScanEventRoute(damaged);
    absl::StatusOr<v1::Event> header = ParseEventHeader(damaged);
    EXPECT_EQ(route.ok(), header.ok())
        << absl::CEscape(damaged) << " scan: " << route.status() << " header: " << header.status();
    if (!route.ok()) {
      EXPECT_EQ(route.status().code(), absl::StatusCode::kDataLoss);
      return false;
    }
    if (!header.ok()) return false;
    ExpectRouteIsHeader(*route, *header);
    return true;
  };
  const auto raw = [](std::initializer_list<uint8_t> b) { return std::string(b.begin(), b.end()); };
  EXPECT_TRUE(agreed_ok(bytes));

  // (a) Field number 0, whatever its wire type: protobuf rejects it.
  EXPECT_FALSE(agreed_ok(bytes + raw({0x02, 0x00})));                    // length-delimited, empty
  EXPECT_FALSE(agreed_ok(raw({0x02, 0x01, 'x'}) + bytes));               // before the other fields
  EXPECT_FALSE(agreed_ok(bytes + raw({0x05, 1, 2, 3, 4})));              // fixed32
  EXPECT_FALSE(agreed_ok(bytes + raw({0x01, 1, 2, 3, 4, 5, 6, 7, 8})));  // fixed64

  // (b) The Timestamps' contents: occurred_at (8), version_at (9), received_at (10).
  for (const uint8_t field : {8, 9, 10}) {
    const uint8_t tag = static_cast<uint8_t>(field << 3 | 2);
    const auto timestamp = [&](std::string contents) {
      return bytes + raw({tag, static_cast<uint8_t>(contents.size())}) + contents;
    };
    EXPECT_TRUE(agreed_ok(timestamp(raw({0x08, 0x05, 0x10, 0x07})))) << field;  // 5 s 7 ns
    EXPECT_TRUE(agreed_ok(timestamp(""))) << field;
    EXPECT_TRUE(agreed_ok(timestamp(raw({0x18, 0x01})))) << field;        // an unknown field
    EXPECT_FALSE(agreed_ok(timestamp(raw({0x02, 0x00})))) << field;       // field number 0
    EXPECT_FALSE(agreed_ok(timestamp(raw({0x08})))) << field;             // seconds without a value
    EXPECT_FALSE(agreed_ok(timestamp(raw({0x08, 0x80})))) << field;       // truncated varint
    EXPECT_FALSE(agreed_ok(timestamp(raw({0x0f, 0x00})))) << field;       // wire type 7
    EXPECT_FALSE(agreed_ok(timestamp(raw({0x0c})))) << field;             // a stray end of group
    EXPECT_FALSE(agreed_ok(timestamp(raw({0x12, 0x05, 'a'})))) << field;  // runs past its end
  }

  // (c) Groups (pimgate never writes one): as protobuf walks them, as unknown fields.
  // Field 20: start 0xa3 0x01, end 0xa4 0x01. Field 3 (source): start 0x1b, end 0x1c.
  EXPECT_TRUE(agreed_ok(bytes + raw({0xa3, 0x01, 0x08, 0x01, 0xa4, 0x01})));
  EXPECT_TRUE(agreed_ok(bytes + raw({0xa3, 0x01, 0xa4, 0x01})));
  EXPECT_TRUE(agreed_ok(bytes + raw({0x1b, 0x08, 0x01, 0x1c})));   // on a known field number
  EXPECT_FALSE(agreed_ok(bytes + raw({0xa3, 0x01, 0x08, 0x01})));  // never ended
  EXPECT_FALSE(agreed_ok(bytes + raw({0xa3, 0x01, 0xac, 0x01})));  // ended as field 21
  EXPECT_FALSE(agreed_ok(bytes + raw({0xa4, 0x01})));              // an end without a start
  EXPECT_FALSE(agreed_ok(raw({0x1c}) + bytes));                    // the same, first
  // Damage inside a group: whatever protobuf decides, both decide the same.
  agreed_ok(bytes + raw({0xa3, 0x01, 0x02, 0x00, 0xa4, 0x01}));              // field 0 inside
  agreed_ok(bytes + raw({0xa3, 0x01, 0x0f, 0xa4, 0x01}));                    // wire type 7 inside
  agreed_ok(bytes + raw({0xa3, 0x01, 0xa3, 0x01, 0xa4, 0x01, 0xa4, 0x01}));  // nested

  // Found by fuzz/event_header_fuzzer: a length or a tag written in more bytes than protobuf
  // reads (a length: at most 5 bytes, below 2^31).
  EXPECT_FALSE(agreed_ok(raw({0x6a, 0x80, 0x80, 0x80, 0x80, 0x80, 0x20}) + bytes));
  agreed_ok(raw({0x88, 0x80, 0x80, 0x80, 0x80, 0x80, 0x20, 0x52}) + bytes);
  EXPECT_TRUE(agreed_ok(raw({0x88, 0x00, 0x05}) + bytes));  // sequence, a 2-byte tag

  // A known field with another wire type is an unknown field to protobuf: accepted by both,
  // and the route reads the field as the header does (absent).
  EXPECT_TRUE(agreed_ok(bytes + raw({0x19, 1, 0, 0, 0, 0, 0, 0, 0})));  // sequence as fixed64
  EXPECT_TRUE(agreed_ok(bytes + raw({0x30, 0x01})));                    // resource_id as varint
  EXPECT_TRUE(agreed_ok(bytes + raw({0x40, 0x01})));                    // occurred_at as varint
}

// The scheduler sleeps until the fence's deadline while it streams. A revoked fence (the lease
// lost) or a passed deadline means now: the revoked value is the lowest int64_t, and computing
// the time left from it once overflowed (UBSan stopped a cluster node on it; in a release build
// the scheduler slept up to a second past the loss before stopping its stream).
TEST(LeaseFence, DeadlineIsNowOnceRevokedOrPassed) {
  // absl::Now() is not strictly monotonic from call to call, and wall time and the monotonic
  // clock may disagree a little: 100 ms either way (the overflow gave ~292 years).
  constexpr absl::Duration kClocks = absl::Milliseconds(100);
  LeaseFence fence;  // never extended: revoked
  EXPECT_FALSE(fence.Valid());
  EXPECT_LE(fence.Deadline(), absl::Now() + kClocks);

  // Wall time and the monotonic clock advance together: the deadline is the moment of ExtendTo
  // plus 30 s, however long the calls take.
  const absl::Time before = absl::Now();
  fence.ExtendTo(LeaseFence::Clock::now() + std::chrono::seconds(30));
  const absl::Time after = absl::Now();
  const absl::Time deadline = fence.Deadline();
  EXPECT_GE(deadline, before + absl::Seconds(30) - kClocks);
  EXPECT_LE(deadline, after + absl::Seconds(30) + kClocks);
  EXPECT_TRUE(fence.Valid());

  fence.Revoke();
  EXPECT_FALSE(fence.Valid());
  EXPECT_LE(fence.Deadline(), absl::Now() + kClocks);

  fence.ExtendTo(LeaseFence::Clock::now() - std::chrono::seconds(1));
  EXPECT_FALSE(fence.Valid());
  EXPECT_LE(fence.Deadline(), absl::Now() + kClocks);
}

TEST(PartitionOf, StableAndByResource) {
  v1::Event a;
  a.set_source("pim");
  a.set_kind("product");
  a.set_resource_id("sku-1");
  a.set_sequence(1);
  v1::Event b = a;
  b.set_sequence(99);
  EXPECT_EQ(PartitionOf(a, 8), PartitionOf(b, 8));  // one resource, one partition
  EXPECT_EQ(PartitionOf(a, 1), 0);
  std::set<int> used;
  for (int i = 0; i < 200; ++i) {
    a.set_resource_id(absl::StrCat("sku-", i));
    const int p = PartitionOf(a, 8);
    ASSERT_GE(p, 0);
    ASSERT_LT(p, 8);
    used.insert(p);
  }
  EXPECT_EQ(used.size(), 8u);  // 200 resources spread over every partition
  v1::Event job;
  job.set_sequence(13);
  EXPECT_EQ(PartitionOf(job, 8), 13 % 8);  // no resource: by sequence
  // The hash is part of the stored layout (cursors per partition): it must never change.
  a.set_resource_id("sku-1");
  EXPECT_EQ(PartitionOf(a, 1000), 481);
}

TEST_F(ClusterDispatchTest, NodesShareFailOverAndKeepPerResourceOrder) {
  const absl::Duration guard = kTtl * 20 + absl::Seconds(60);
  StartNode(0);
  Append(60, 12, {0});
  // One node alone takes every partition and delivers everything.
  ASSERT_TRUE(WaitFor([&] { return OwnedOnceBy({0}) && AllDelivered(); }, guard));
  // A node's counters count what it delivered since it started, also in partitions it no
  // longer holds: they never go down (Prometheus counters), whatever moves.
  const auto delivered = [&](int n) { return nodes_[n].dispatcher->Stats().front().delivered; };
  ASSERT_TRUE(WaitFor([&] { return delivered(0) >= 60; }, guard)) << delivered(0);
  const uint64_t delivered_alone = delivered(0);

  // Two more nodes join: they get a share, the first gives partitions up (released, not expired).
  StartNode(1);
  StartNode(2);
  ASSERT_TRUE(WaitFor(
      [&] {
        return OwnedOnceBy({0, 1, 2}) && Held(0) >= 2 && Held(1) >= 2 && Held(2) >= 2;
      },
      guard))
      << "held: " << Held(0) << " " << Held(1) << " " << Held(2);
  EXPECT_GT(nodes_[0].dispatcher->Leases().released, 0u);
  EXPECT_GE(delivered(0), delivered_alone) << "node 0 gave partitions up";
  // Each cluster-wide job runs on one node.
  const auto job_holders = [&](const std::string& job, const std::vector<int>& among) {
    int holders = 0;
    for (int n : among) holders += nodes_[n].dispatcher->HoldsJob(job) ? 1 : 0;
    return holders;
  };
  for (const char* job : {"retention", "reconcile", "platform"}) {
    ASSERT_TRUE(WaitFor([&] { return job_holders(job, {0, 1, 2}) == 1; }, guard)) << job;
  }
  Append(120, 12, {0, 1, 2});  // ingest on every node
  ASSERT_TRUE(WaitFor([&] { return AllDelivered(); }, guard));

  // Node 2 loses contact with NATS: it stops delivering once its leases' local deadline passes,
  // and the two others take its partitions over once the leases expire.
  const uint64_t held_by_2 = Held(2);
  const uint64_t delivered_by_2 = delivered(2);
  const auto cut_at = std::chrono::steady_clock::now();
  nodes_[2].leases->Cut(true);
  ASSERT_TRUE(WaitFor([&] { return Held(2) == 0; }, guard));
  const auto stopped_at = std::chrono::steady_clock::now();
  ASSERT_TRUE(WaitFor([&] { return OwnedOnceBy({0, 1}); }, guard));
  const auto taken_at = std::chrono::steady_clock::now();
  const auto ms = [](auto d) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
  };
  std::cout << "lease TTL " << absl::FormatDuration(kTtl) << ": node n2 (" << held_by_2
            << " partitions) stopped delivering " << ms(stopped_at - cut_at)
            << " ms after losing NATS; its partitions were taken over " << ms(taken_at - cut_at)
            << " ms after\n";
  EXPECT_GE(nodes_[2].dispatcher->Leases().lost, held_by_2);
  EXPECT_GE(delivered(2), delivered_by_2) << "node 2 lost its leases";
  for (const char* job : {"retention", "reconcile", "platform"}) {
    ASSERT_TRUE(WaitFor(
        [&] {
          return !nodes_[2].dispatcher->HoldsJob(job) && job_holders(job, {0, 1}) == 1;
        },
        guard))
        << job;
  }
  // Appended after the takeover, so after node 2's deadline: never handed to node 2's plugin
  // while it is cut off.
  uint64_t head_before = 0;
  for (const auto& [resource, sequences] : appended_) {
    head_before = std::max(head_before, sequences.back());
  }
  Append(120, 12, {0, 1});
  ASSERT_TRUE(WaitFor([&] { return AllDelivered(); }, guard));
  for (const auto& d : recorder_.Snapshot()) {
    if (d.node == 2) EXPECT_LE(d.sequence, head_before) << "delivered by the cut-off node";
  }

  // Node 0 stops (a graceful stop releases its leases); node 2 is back: they converge again.
  nodes_[2].leases->Cut(false);
  StopNode(nodes_[0]);
  ASSERT_TRUE(WaitFor([&] { return OwnedOnceBy({1, 2}) && Held(2) >= 2; }, guard));
  Append(60, 12, {1, 2});
  ASSERT_TRUE(WaitFor([&] { return AllDelivered(); }, guard));
  ExpectPerResourceOrder();
}

// A node dies with deliveries unanswered: the node that takes its partitions over sends them
// again with attempt >= 2, since the dead node wrote its partitions' handed-out marks before it
// sent them; events appended after the takeover go with attempt 1.
TEST_F(ClusterDispatchTest, TakeoverRedeliversWhatTheDeadNodeHandedOutWithAttemptTwo) {
  const absl::Duration guard = kTtl * 20 + absl::Seconds(60);
  StartNode(0);
  StartNode(1);
  ASSERT_TRUE(WaitFor([&] { return OwnedOnceBy({0, 1}) && Held(0) == 4 && Held(1) == 4; }, guard));
  silent_node_ = 1;  // node 1's plugin takes deliveries and never answers
  Append(40, 8, {0, 1});
  // Node 1 handed out the first event of each resource of its partitions (the next ones wait
  // for an answer that never comes).
  // The lease bucket as node 0 reads it (direct gets, any replica: waited for, a replica may
  // lag behind the node-local Held() counts).
  std::set<int> of_node_1;
  ASSERT_TRUE(WaitFor(
      [&] {
        auto owners = nodes_[0].dispatcher->Owners();
        if (!owners.ok()) return false;
        of_node_1.clear();
        for (const PartitionOwner& owner : *owners) {
          if (owner.node == "n1") of_node_1.insert(owner.partition);
        }
        return of_node_1.size() == 4u;
      },
      guard))
      << of_node_1.size() << " partitions listed as node 1's";
  std::set<uint64_t> firsts;  // the first event of each resource of node 1's partitions
  for (const auto& [resource, sequences] : appended_) {
    v1::Event header;
    header.set_source("pim");
    header.set_kind("product");
    header.set_resource_id(resource);
    if (of_node_1.contains(PartitionOf(header, kPartitions))) firsts.insert(sequences.front());
  }
  ASSERT_FALSE(firsts.empty());
  const auto received_by_1 = [&] {
    std::set<uint64_t> got;
    for (const auto& d : recorder_.Snapshot()) {
      if (d.node == 1) got.insert(d.sequence);
    }
    return got;
  };
  ASSERT_TRUE(WaitFor(
      [&] {
        const std::set<uint64_t> got = received_by_1();
        return std::includes(got.begin(), got.end(), firsts.begin(), firsts.end());
      },
      guard));

  // Node 1 loses NATS (as good as dead for the cluster): node 0 takes its partitions over.
  nodes_[1].leases->Cut(true);
  ASSERT_TRUE(WaitFor([&] { return Held(1) == 0 && OwnedOnceBy({0}); }, guard));
  const std::set<uint64_t> handed_out = received_by_1();
  ASSERT_TRUE(WaitFor([&] { return AllDelivered(); }, guard));
  int redelivered = 0;
  for (const auto& d : recorder_.Snapshot()) {
    if (d.node == 0 && handed_out.contains(d.sequence)) {
      EXPECT_GE(d.attempt, 2u) << "sequence " << d.sequence << " was handed out by node 1";
      ++redelivered;
    }
  }
  EXPECT_GE(redelivered, static_cast<int>(firsts.size()));

  // Appended after the takeover: never handed out before, attempt 1.
  uint64_t head_before = 0;
  for (const auto& [resource, sequences] : appended_) {
    head_before = std::max(head_before, sequences.back());
  }
  Append(16, 8, {0});
  ASSERT_TRUE(WaitFor([&] { return AllDelivered(); }, guard));
  for (const auto& d : recorder_.Snapshot()) {
    if (d.sequence > head_before) {
      EXPECT_EQ(d.node, 0);
      EXPECT_EQ(d.attempt, 1u) << "sequence " << d.sequence;
    }
  }
  ExpectPerResourceOrder();
}

TEST_F(ClusterDispatchTest, PauseSeekAndDeadLetterRetriesApplyOnEveryNode) {
  const absl::Duration guard = kTtl * 20 + absl::Seconds(60);
  StartNode(0);
  StartNode(1);
  // The fair share of two nodes: 4 each (stable from then on: nobody is above it).
  ASSERT_TRUE(WaitFor([&] { return OwnedOnceBy({0, 1}) && Held(0) == 4 && Held(1) == 4; }, guard));
  Append(40, 8, {0, 1});
  ASSERT_TRUE(WaitFor([&] { return AllDelivered(); }, guard));

  // A pause asked on node 0 holds node 1's partitions too; a resume on node 1 frees both.
  ASSERT_TRUE(nodes_[0].dispatcher->Pause("erp").ok());
  const auto state = [&](int n) { return nodes_[n].dispatcher->Stats().front().state; };
  ASSERT_TRUE(WaitFor([&] { return state(0) == "paused" && state(1) == "paused"; }, guard))
      << state(0) << " " << state(1);
  ASSERT_TRUE(nodes_[1].dispatcher->Resume("erp").ok());
  ASSERT_TRUE(WaitFor([&] { return state(0) != "paused" && state(1) != "paused"; }, guard));

  // A seek asked on node 1 replays every partition, whichever node holds it.
  ASSERT_TRUE(nodes_[1].dispatcher->Seek("erp", 1).ok());
  ASSERT_TRUE(WaitFor(
      [&] {
        std::map<uint64_t, int> count;
        for (const auto& d : recorder_.Snapshot()) ++count[d.sequence];
        for (const auto& [resource, sequences] : appended_) {
          for (uint64_t sequence : sequences) {
            if (count[sequence] < 2) return false;
          }
        }
        return true;
      },
      guard));

  // A letter of a partition node 0 holds, retried through node 1: node 0 redelivers it.
  reject_resource_ = "sku-rejected";
  v1::Event header;
  header.set_source("pim");
  header.set_kind("product");
  header.set_resource_id("sku-rejected");
  const int partition = PartitionOf(header, kPartitions);
  auto owners = nodes_[0].dispatcher->Owners();
  ASSERT_TRUE(owners.ok());
  std::string holder;
  for (const PartitionOwner& owner : *owners) {
    if (owner.partition == partition) holder = owner.node;
  }
  const int other = holder == "n0" ? 1 : 0;
  v1::Event event = header;
  event.set_id(testing::NewUuid());
  event.set_type("product.updated");
  *event.mutable_version_at() = TimeUtil::SecondsToTimestamp(1'900'000'000);
  AppendRequest request;
  request.events.push_back(event);
  absl::StatusOr<AppendResult> appended = nodes_[0].log->AppendSync(std::move(request));
  ASSERT_TRUE(appended.ok());
  const uint64_t sequence = appended->first_sequence;
  DeadLetters& letters = nodes_[other].dispatcher->dead_letters();
  ASSERT_TRUE(WaitFor([&] { return letters.Count("erp").value_or(0) == 1; }, guard));
  reject_resource_ = "";
  const auto deliveries = [&] {
    int n = 0;
    for (const auto& d : recorder_.Snapshot()) n += d.sequence == sequence ? 1 : 0;
    return n;
  };
  const int before = deliveries();
  // By sequence: `all` takes the letters of events up to this node's head, which follows the
  // appends of node 0 only within a moment.
  absl::StatusOr<RetriedDeadLetters> retried =
      letters.Retry("erp", {.all = false, .sequences = {sequence}}, 10);
  ASSERT_TRUE(retried.ok()) << retried.status();
  ASSERT_EQ(retried->sequences, std::vector<uint64_t>{sequence});
  ASSERT_TRUE(WaitFor([&] { return letters.Count("erp").value_or(1) == 0; }, guard))
      << "leases lost: n0 " << nodes_[0].dispatcher->Leases().lost << ", n1 "
      << nodes_[1].dispatcher->Leases().lost << "; deliveries of the letter " << deliveries();
  EXPECT_GT(deliveries(), before);
  for (const auto& d : recorder_.Snapshot()) {
    if (d.sequence == sequence) EXPECT_EQ(absl::StrCat("n", d.node), holder);
  }
}

TEST(RetryDelay, GrowsExponentiallyCappedWithJitter) {
  RetryConfig retry;
  retry.initial_backoff = std::chrono::milliseconds(100);
  retry.max_backoff = std::chrono::milliseconds(1000);
  retry.multiplier = 2;
  retry.jitter = 0;
  EXPECT_EQ(RetryDelay(retry, 1, 0.5), absl::Milliseconds(100));
  EXPECT_EQ(RetryDelay(retry, 3, 0.5), absl::Milliseconds(400));
  EXPECT_EQ(RetryDelay(retry, 10, 0.5), absl::Milliseconds(1000));
  retry.jitter = 0.5;
  EXPECT_EQ(RetryDelay(retry, 1, 0.0), absl::Milliseconds(50));
  EXPECT_GT(RetryDelay(retry, 1, 0.999999), absl::Milliseconds(149));
  EXPECT_LE(RetryDelay(retry, 1, 0.999999), absl::Milliseconds(150));
}

}  // namespace
}  // namespace pimgate
