// Dispatcher against a real gRPC plugin server on a real unix socket, over a real RocksDB log.
// The plugin here is in-process so each test can script its answers; the end-to-end tests run
// real plugin processes in C++, Python and Node.
#include "core/dispatch/dispatcher.h"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <atomic>
#include <functional>
#include <iostream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
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
    }
    auto log = EventLog::Open(store);
    ASSERT_TRUE(log.ok()) << log.status();
    log_ = std::move(*log);
  }
  static void TearDownTestSuite() { nats_.reset(); }

  static std::unique_ptr<testing::NatsCluster> nats_;

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
  EXPECT_EQ(calls[2].attempt, 1u);
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
  EXPECT_EQ(calls[2].attempt, 1u);
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
