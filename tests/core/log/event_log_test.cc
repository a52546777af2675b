// Tests for EventLog over each real backend in a fresh temp directory: sequencing, dedup,
// staleness, quarantine, group commit, and all-or-nothing groups when the backend fails. The
// suite runs on the embedded RocksDB store and on a JetStream stream of a real nats-server (one
// stream per test), with the local replica in the temp directory.
#include "core/log/event_log.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <future>
#include <iostream>
#include <limits>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "core/log/event_header.h"
#include "core/log/jetstream_backend.h"
#include "core/log/log_backend.h"
#include "core/log/rocksdb_backend.h"
#include "gmock/gmock.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "pimgate/v1/event.pb.h"
#include "pimgate/v1/store.pb.h"
#include "rocksdb/db.h"
#include "tests/testing/cli.h"
#include "tests/testing/nats_cluster.h"
#include "tests/testing/test_env.h"

namespace pimgate {
namespace {

using ::pimgate::testing::NatsCluster;
using ::pimgate::testing::TempDir;

// Controls for FaultyBackend, shared with the test because the EventLog owns the backend.
struct FaultControl {
  std::atomic<bool> fail_writes{false};
  std::atomic<int> fail_next_writes{0};  // fail this many Writes, then let them through
  // Answer this many Writes with Aborted (another writer of a shared store appended first),
  // then let them through.
  std::atomic<int> conflict_next_writes{0};
  std::atomic<int> resyncs{0};
  std::atomic<std::size_t> max_batch_events{0};  // most events any one Write carried
  std::atomic<bool> fail_lookups{false};
  std::atomic<int> write_delay_ms{0};
  std::atomic<int> write_calls{0};
  std::atomic<int> failed_writes{0};

  // While closed, Write blocks (after counting itself) until Open() is called.
  absl::Mutex mu;
  bool gate_open ABSL_GUARDED_BY(mu) = true;
  void CloseGate() {
    absl::MutexLock lock(&mu);
    gate_open = false;
  }
  void OpenGate() {
    absl::MutexLock lock(&mu);
    gate_open = true;
  }
};

// Test-only LogBackend decorator over the real RocksDB backend: fails or slows Write, or fails
// lookups, on demand. Reads always pass through, so the test inspects the real stored state.
class FaultyBackend final : public ForwardingLogBackend {
 public:
  FaultyBackend(std::unique_ptr<LogBackend> inner, std::shared_ptr<FaultControl> control)
      : ForwardingLogBackend(std::move(inner)), control_(std::move(control)) {}

  absl::Status Write(const CommitBatch& batch, bool sync) override {
    control_->write_calls.fetch_add(1);
    std::size_t most = control_->max_batch_events.load();
    while (batch.events.size() > most &&
           !control_->max_batch_events.compare_exchange_weak(most, batch.events.size())) {
    }
    {
      absl::MutexLock lock(&control_->mu);
      control_->mu.Await(absl::Condition(&control_->gate_open));
    }
    if (int ms = control_->write_delay_ms.load(); ms > 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    }
    if (control_->conflict_next_writes.fetch_sub(1) > 0) {
      return absl::AbortedError("injected conflict");
    }
    if (control_->fail_writes.load() || control_->fail_next_writes.fetch_sub(1) > 0) {
      control_->failed_writes.fetch_add(1);
      return absl::UnavailableError("injected write failure");
    }
    return inner().Write(batch, sync);
  }

  absl::StatusOr<RecoveredState> Resync() override {
    control_->resyncs.fetch_add(1);
    return inner().Resync();
  }

  absl::StatusOr<std::optional<uint64_t>> FindEventId(const DedupKey& key) override {
    if (control_->fail_lookups.load()) return absl::UnavailableError("injected lookup failure");
    return inner().FindEventId(key);
  }
  absl::StatusOr<std::optional<ResourceVersion>> FindVersion(const ResourceKey& key) override {
    if (control_->fail_lookups.load()) return absl::UnavailableError("injected lookup failure");
    return inner().FindVersion(key);
  }

 private:
  std::shared_ptr<FaultControl> control_;
};

constexpr int64_t kBaseSeconds = 1'700'000'000;  // 2023-11-14, an arbitrary fixed instant

// An event for (source, kind, resource) whose version_at is kBaseSeconds + version_s.
v1::Event MakeEvent(const std::string& source, const std::string& id, const std::string& kind,
                    const std::string& resource_id, int64_t version_s,
                    const std::string& action = "updated") {
  v1::Event e;
  e.set_source(source);
  e.set_id(id);
  e.set_kind(kind);
  e.set_type(absl::StrCat(kind, ".", action));
  e.set_original_type(e.type());
  e.set_resource_id(resource_id);
  e.mutable_occurred_at()->set_seconds(kBaseSeconds + version_s);
  e.mutable_version_at()->set_seconds(kBaseSeconds + version_s);
  e.set_origin(v1::ORIGIN_EVENTS_API);
  e.set_request_id("req-" + id);
  return e;
}

v1::Event Product(const std::string& id, const std::string& resource_id, int64_t version_s,
                  const std::string& action = "updated") {
  return MakeEvent("pim", id, "product", resource_id, version_s, action);
}

AppendRequest Request(std::vector<v1::Event> events) {
  AppendRequest r;
  r.events = std::move(events);
  return r;
}

v1::QuarantineEntry Quarantined(uint32_t index, const std::string& reason) {
  v1::QuarantineEntry q;
  q.set_source("pim");
  q.set_index(index);
  q.set_reason(reason);
  q.set_raw(absl::StrCat("{\"bad\":", index, "}"));
  q.set_request_id("req-q");
  return q;
}

enum class Backend { kRocksDb, kJetStream };

std::string BackendName(const ::testing::TestParamInfo<Backend>& info) {
  return info.param == Backend::kRocksDb ? "RocksDb" : "JetStream";
}

// A stream name of its own for the running test ("SequencesIncrease_JetStream").
std::string StreamForTest() {
  std::string name = ::testing::UnitTest::GetInstance()->current_test_info()->name();
  for (char& c : name) {
    if (c == '/') c = '_';
  }
  return name;
}

class EventLogTest : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty()) << "mkdtemp failed";
    if (GetParam() == Backend::kJetStream) {
      if (nats_ == nullptr) nats_ = std::make_unique<NatsCluster>(NatsCluster::Options{});
      ASSERT_TRUE(nats_->started());
    }
  }
  static void TearDownTestSuite() { nats_.reset(); }

  bool jetstream() const { return GetParam() == Backend::kJetStream; }

  // The test's backend at the test's directory (the store, or the JetStream replica).
  absl::StatusOr<std::unique_ptr<LogBackend>> OpenBackend() {
    if (!jetstream()) return OpenRocksDbBackend(dir_.path());
    return OpenJetStreamBackend(dir_.path(), nats_->Config(StreamForTest()));
  }

  // Opens (or reopens) the log at the test's directory. With `faulty`, the backend is wrapped
  // in a FaultyBackend steered through control_.
  std::unique_ptr<EventLog> Open(EventLogOptions options = {}, bool faulty = false) {
    absl::StatusOr<std::unique_ptr<LogBackend>> backend = OpenBackend();
    EXPECT_TRUE(backend.ok()) << backend.status();
    if (!backend.ok()) return nullptr;
    std::unique_ptr<LogBackend> b = std::move(*backend);
    if (faulty) b = std::make_unique<FaultyBackend>(std::move(b), control_);
    absl::StatusOr<std::unique_ptr<EventLog>> log = EventLog::Open(std::move(b), options);
    EXPECT_TRUE(log.ok()) << log.status();
    return log.ok() ? std::move(*log) : nullptr;
  }

  static std::vector<v1::Event> AllEvents(EventLog& log) {
    absl::StatusOr<std::vector<v1::Event>> events = log.ReadEvents(0, 1'000'000);
    EXPECT_TRUE(events.ok()) << events.status();
    return events.ok() ? *events : std::vector<v1::Event>{};
  }

  static v1::Event StoredEvent(EventLog& log, uint64_t sequence) {
    absl::StatusOr<std::optional<v1::Event>> e = log.GetEvent(sequence);
    EXPECT_TRUE(e.ok()) << e.status();
    EXPECT_TRUE(e.ok() && e->has_value()) << "no event " << sequence;
    return e.ok() && e->has_value() ? **e : v1::Event{};
  }

  static std::unique_ptr<NatsCluster> nats_;  // one nats-server for the suite's JetStream runs
  TempDir dir_;
  std::shared_ptr<FaultControl> control_ = std::make_shared<FaultControl>();
};

std::unique_ptr<NatsCluster> EventLogTest::nats_;

INSTANTIATE_TEST_SUITE_P(Backends, EventLogTest,
                         ::testing::Values(Backend::kRocksDb, Backend::kJetStream), BackendName);

TEST_P(EventLogTest, EmptyLogStartsAtZero) {
  auto log = Open();
  ASSERT_NE(log, nullptr);
  EXPECT_EQ(log->head(), 0u);
  EXPECT_EQ(log->pending(), 0u);
  EXPECT_TRUE(AllEvents(*log).empty());
}

TEST_P(EventLogTest, OpenRejectsNullBackendAndZeroGroupSize) {
  EXPECT_EQ(EventLog::Open(nullptr, {}).status().code(), absl::StatusCode::kInvalidArgument);
  absl::StatusOr<std::unique_ptr<LogBackend>> backend = OpenBackend();
  ASSERT_TRUE(backend.ok()) << backend.status();
  EventLogOptions options;
  options.max_commit_requests = 0;
  EXPECT_EQ(EventLog::Open(std::move(*backend), options).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_P(EventLogTest, SequencesIncreaseAcrossAppendsAndReopen) {
  {
    auto log = Open();
    ASSERT_NE(log, nullptr);
    auto r1 = log->AppendSync(Request({Product("e1", "p1", 1), Product("e2", "p2", 1)}));
    ASSERT_TRUE(r1.ok()) << r1.status();
    EXPECT_EQ(r1->accepted, 2u);
    EXPECT_EQ(r1->first_sequence, 1u);
    EXPECT_EQ(r1->last_sequence, 2u);
    auto r2 = log->AppendSync(Request({Product("e3", "p3", 1)}));
    ASSERT_TRUE(r2.ok()) << r2.status();
    EXPECT_EQ(r2->first_sequence, 3u);
    EXPECT_EQ(r2->last_sequence, 3u);
    EXPECT_EQ(log->head(), 3u);
    EXPECT_EQ(log->pending(), 0u);
  }
  auto log = Open();
  ASSERT_NE(log, nullptr);
  EXPECT_EQ(log->head(), 3u);
  auto r3 = log->AppendSync(Request({Product("e4", "p4", 1), Product("e5", "p5", 1)}));
  ASSERT_TRUE(r3.ok()) << r3.status();
  EXPECT_EQ(r3->first_sequence, 4u);
  EXPECT_EQ(r3->last_sequence, 5u);

  std::vector<v1::Event> events = AllEvents(*log);
  ASSERT_EQ(events.size(), 5u);
  for (std::size_t i = 0; i < events.size(); ++i) {
    EXPECT_EQ(events[i].sequence(), i + 1);
    EXPECT_EQ(events[i].id(), absl::StrCat("e", i + 1));
  }
}

TEST_P(EventLogTest, EmptyRequestStoresNothing) {
  auto log = Open();
  ASSERT_NE(log, nullptr);
  auto r = log->AppendSync(AppendRequest{});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->accepted, 0u);
  EXPECT_EQ(r->first_sequence, 0u);
  EXPECT_EQ(r->last_sequence, 0u);
  EXPECT_EQ(log->head(), 0u);
}

TEST_P(EventLogTest, DuplicateWithinOneRequestIsCountedNotStored) {
  auto log = Open();
  ASSERT_NE(log, nullptr);
  auto r = log->AppendSync(
      Request({Product("e1", "p1", 1), Product("e1", "p1", 1), Product("e2", "p2", 1)}));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->accepted, 2u);
  EXPECT_EQ(r->duplicates, 1u);
  EXPECT_EQ(r->first_sequence, 1u);
  EXPECT_EQ(r->last_sequence, 2u);
  std::vector<v1::Event> events = AllEvents(*log);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].id(), "e1");
  EXPECT_EQ(events[1].id(), "e2");
}

TEST_P(EventLogTest, DuplicateAcrossRequestsAndReopen) {
  {
    auto log = Open();
    ASSERT_NE(log, nullptr);
    ASSERT_TRUE(log->AppendSync(Request({Product("e1", "p1", 1)})).ok());
    auto again = log->AppendSync(Request({Product("e1", "p1", 1), Product("e2", "p2", 1)}));
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_EQ(again->accepted, 1u);
    EXPECT_EQ(again->duplicates, 1u);
    EXPECT_EQ(again->first_sequence, 2u);
  }
  auto log = Open();
  ASSERT_NE(log, nullptr);
  auto after = log->AppendSync(Request({Product("e2", "p2", 1), Product("e1", "p1", 1)}));
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->accepted, 0u);
  EXPECT_EQ(after->duplicates, 2u);
  EXPECT_EQ(after->first_sequence, 0u);
  EXPECT_EQ(log->head(), 2u);
  EXPECT_EQ(AllEvents(*log).size(), 2u);
}

TEST_P(EventLogTest, DedupIsPerSource) {
  auto log = Open();
  ASSERT_NE(log, nullptr);
  auto r = log->AppendSync(Request({MakeEvent("pim-a", "same", "product", "p1", 1),
                                    MakeEvent("pim-b", "same", "product", "p1", 1)}));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->accepted, 2u);
  EXPECT_EQ(r->duplicates, 0u);
}

TEST_P(EventLogTest, EventsWithoutIdAreNeverDuplicates) {
  auto log = Open();
  ASSERT_NE(log, nullptr);
  auto r = log->AppendSync(Request({Product("", "p1", 1), Product("", "p2", 1)}));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->accepted, 2u);
  EXPECT_EQ(r->duplicates, 0u);
}

TEST_P(EventLogTest, OlderVersionIsStoredStaleAndNewerIsNot) {
  auto log = Open();
  ASSERT_NE(log, nullptr);
  ASSERT_TRUE(log->AppendSync(Request({Product("e1", "p1", 100)})).ok());
  auto older = log->AppendSync(Request({Product("e2", "p1", 50)}));
  ASSERT_TRUE(older.ok()) << older.status();
  EXPECT_EQ(older->accepted, 1u);
  EXPECT_EQ(older->stale, 1u);
  auto same = log->AppendSync(Request({Product("e3", "p1", 100)}));
  ASSERT_TRUE(same.ok()) << same.status();
  EXPECT_EQ(same->stale, 0u);
  auto newer = log->AppendSync(Request({Product("e4", "p1", 150)}));
  ASSERT_TRUE(newer.ok()) << newer.status();
  EXPECT_EQ(newer->stale, 0u);

  EXPECT_FALSE(StoredEvent(*log, 1).stale());
  EXPECT_TRUE(StoredEvent(*log, 2).stale());
  EXPECT_FALSE(StoredEvent(*log, 3).stale());
  EXPECT_FALSE(StoredEvent(*log, 4).stale());

  // The stale event did not lower the resource's version: 120 is still older than 150.
  auto r = log->AppendSync(Request({Product("e5", "p1", 120)}));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->stale, 1u);
}

TEST_P(EventLogTest, StalenessWithinOneRequestAndAcrossReopen) {
  {
    auto log = Open();
    ASSERT_NE(log, nullptr);
    auto r = log->AppendSync(
        Request({Product("e1", "p1", 100), Product("e2", "p1", 90), Product("e3", "p1", 110)}));
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->accepted, 3u);
    EXPECT_EQ(r->stale, 1u);
    EXPECT_FALSE(StoredEvent(*log, 1).stale());
    EXPECT_TRUE(StoredEvent(*log, 2).stale());
    EXPECT_FALSE(StoredEvent(*log, 3).stale());
  }
  auto log = Open();
  ASSERT_NE(log, nullptr);
  auto r = log->AppendSync(Request({Product("e4", "p1", 105)}));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->stale, 1u);
  EXPECT_TRUE(StoredEvent(*log, 4).stale());
}

TEST_P(EventLogTest, DeletionCountsAsVersion) {
  auto log = Open();
  ASSERT_NE(log, nullptr);
  auto r = log->AppendSync(Request(
      {Product("e1", "p1", 100), Product("e2", "p1", 200, "deleted"), Product("e3", "p1", 150)}));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->stale, 1u);
  EXPECT_FALSE(StoredEvent(*log, 2).stale());
  EXPECT_TRUE(StoredEvent(*log, 3).stale());
  // A deletion older than the newest update is stale too.
  auto late_delete = log->AppendSync(Request({Product("e4", "p1", 180, "deleted")}));
  ASSERT_TRUE(late_delete.ok()) << late_delete.status();
  EXPECT_EQ(late_delete->stale, 1u);
}

TEST_P(EventLogTest, SourcesKindsAndResourcesAreIndependent) {
  auto log = Open();
  ASSERT_NE(log, nullptr);
  ASSERT_TRUE(log->AppendSync(Request({MakeEvent("pim-a", "e1", "product", "x", 100)})).ok());
  auto r = log->AppendSync(Request({
      MakeEvent("pim-a", "e2", "product_model", "x", 10),  // other kind
      MakeEvent("pim-b", "e3", "product", "x", 10),        // other source
      MakeEvent("pim-a", "e4", "product", "y", 10),        // other resource
      MakeEvent("pim-a", "e5", "product", "x", 10),        // same resource: stale
  }));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->accepted, 4u);
  EXPECT_EQ(r->stale, 1u);
  EXPECT_TRUE(StoredEvent(*log, 5).stale());
}

TEST_P(EventLogTest, EmptyResourceIdIsNeverStale) {
  auto log = Open();
  ASSERT_NE(log, nullptr);
  auto r = log->AppendSync(Request({Product("e1", "", 100), Product("e2", "", 10)}));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->accepted, 2u);
  EXPECT_EQ(r->stale, 0u);
}

TEST_P(EventLogTest, VersionFallsBackToOccurredAt) {
  auto log = Open();
  ASSERT_NE(log, nullptr);
  v1::Event newer = Product("e1", "p1", 100);
  newer.clear_version_at();
  v1::Event older = Product("e2", "p1", 50);
  older.clear_version_at();
  // version_at wins over occurred_at when both are set.
  v1::Event versioned = Product("e3", "p1", 500);
  versioned.mutable_version_at()->set_seconds(kBaseSeconds + 60);
  auto r = log->AppendSync(Request({newer, older, versioned}));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->stale, 2u);
  EXPECT_FALSE(StoredEvent(*log, 1).stale());
  EXPECT_TRUE(StoredEvent(*log, 2).stale());
  EXPECT_TRUE(StoredEvent(*log, 3).stale());
}

TEST_P(EventLogTest, SubSecondVersionsAreOrdered) {
  auto log = Open();
  ASSERT_NE(log, nullptr);
  v1::Event first = Product("e1", "p1", 100);
  first.mutable_version_at()->set_nanos(500'000);  // +500 us
  v1::Event second = Product("e2", "p1", 100);
  second.mutable_version_at()->set_nanos(400'000);  // +400 us: older
  auto r = log->AppendSync(Request({first, second}));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->stale, 1u);
}

TEST_P(EventLogTest, QuarantineEntriesGetIdsAndSurviveReopen) {
  {
    auto log = Open();
    ASSERT_NE(log, nullptr);
    AppendRequest request = Request({Product("e1", "p1", 1)});
    request.quarantine = {Quarantined(1, "missing resource"), Quarantined(3, "bad type")};
    auto r = log->AppendSync(std::move(request));
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->accepted, 1u);
  }
  auto log = Open();
  ASSERT_NE(log, nullptr);
  AppendRequest only_quarantine;
  only_quarantine.quarantine = {Quarantined(0, "not an object")};
  auto r = log->AppendSync(std::move(only_quarantine));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->accepted, 0u);
  EXPECT_EQ(log->head(), 1u);

  absl::StatusOr<std::vector<v1::QuarantineEntry>> all = log->ReadQuarantine(0, 100);
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), 3u);
  EXPECT_EQ((*all)[0].id(), 1u);
  EXPECT_EQ((*all)[0].reason(), "missing resource");
  EXPECT_EQ((*all)[0].raw(), "{\"bad\":1}");
  EXPECT_EQ((*all)[1].id(), 2u);
  EXPECT_EQ((*all)[1].index(), 3u);
  EXPECT_EQ((*all)[2].id(), 3u);
  EXPECT_EQ((*all)[2].reason(), "not an object");

  absl::StatusOr<std::vector<v1::QuarantineEntry>> tail = log->ReadQuarantine(3, 100);
  ASSERT_TRUE(tail.ok()) << tail.status();
  ASSERT_EQ(tail->size(), 1u);
  EXPECT_EQ((*tail)[0].id(), 3u);
}

TEST_P(EventLogTest, GetEventReturnsStoredFieldsOrNothing) {
  auto log = Open();
  ASSERT_NE(log, nullptr);
  v1::Event event = Product("e1", "p1", 7);
  event.set_author("julia");
  (*event.mutable_data()->mutable_fields())["sku"].set_string_value("SKU-1");
  ASSERT_TRUE(log->AppendSync(Request({event})).ok());

  v1::Event stored = StoredEvent(*log, 1);
  EXPECT_EQ(stored.sequence(), 1u);
  EXPECT_EQ(stored.id(), "e1");
  EXPECT_EQ(stored.author(), "julia");
  EXPECT_EQ(stored.version_at().seconds(), kBaseSeconds + 7);
  EXPECT_EQ(stored.data().fields().at("sku").string_value(), "SKU-1");

  absl::StatusOr<std::optional<v1::Event>> missing = log->GetEvent(2);
  ASSERT_TRUE(missing.ok()) << missing.status();
  EXPECT_FALSE(missing->has_value());
  absl::StatusOr<std::optional<v1::Event>> zero = log->GetEvent(0);
  ASSERT_TRUE(zero.ok()) << zero.status();
  EXPECT_FALSE(zero->has_value());
}

// AppendRequest::serialized_data (what the gateway hands the log: each event's data serialized
// straight from the JSON) is stored as the event's `data`, beside the fields the log decides.
TEST_P(EventLogTest, SerializedDataIsStoredAsTheEventsData) {
  auto log = Open();
  ASSERT_NE(log, nullptr);
  google::protobuf::Struct data;
  (*data.mutable_fields())["sku"].set_string_value("SKU-1");
  google::protobuf::Value& values = (*data.mutable_fields())["values"];
  (*values.mutable_struct_value()->mutable_fields())["n"].set_number_value(1.5);
  values.mutable_struct_value()
      ->mutable_fields()
      ->
      operator[]("l")
      .mutable_list_value()
      ->add_values()
      ->set_null_value(google::protobuf::NULL_VALUE);
  AppendRequest request = Request({Product("e1", "p1", 7), Product("e2", "p1", 3)});
  request.serialized_data = {data.SerializeAsString(), ""};  // "": an empty Struct
  absl::StatusOr<AppendResult> result = log->AppendSync(std::move(request));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->accepted, 2u);
  EXPECT_EQ(result->stale, 1u);  // e2 is older than e1, for the same product

  v1::Event expected = Product("e1", "p1", 7);
  expected.set_sequence(1);
  *expected.mutable_data() = data;
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(StoredEvent(*log, 1), expected))
      << StoredEvent(*log, 1).DebugString();
  expected = Product("e2", "p1", 3);
  expected.set_sequence(2);
  expected.set_stale(true);
  expected.mutable_data();  // present, and empty
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(StoredEvent(*log, 2), expected))
      << StoredEvent(*log, 2).DebugString();
  // Readers that skip the data find the header as before.
  absl::StatusOr<std::vector<pimgate::StoredEvent>> stored = log->ReadStoredEvents(1, 10);
  ASSERT_TRUE(stored.ok()) << stored.status();
  ASSERT_EQ(stored->size(), 2u);
  absl::StatusOr<v1::Event> header = ParseEventHeader((*stored)[1].bytes);
  ASSERT_TRUE(header.ok()) << header.status();
  EXPECT_EQ(header->id(), "e2");
  EXPECT_TRUE(header->stale());
  EXPECT_FALSE(header->has_data());
  // A duplicate with serialized data is recognised as one.
  request = Request({Product("e1", "p1", 7)});
  request.serialized_data = {data.SerializeAsString()};
  result = log->AppendSync(std::move(request));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->duplicates, 1u);
}

TEST_P(EventLogTest, SerializedDataMustMatchTheEvents) {
  auto log = Open();
  ASSERT_NE(log, nullptr);
  AppendRequest request = Request({Product("e1", "p1", 1), Product("e2", "p2", 1)});
  request.serialized_data = {""};
  absl::StatusOr<AppendResult> result = log->AppendSync(std::move(request));
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << result.status();
  EXPECT_EQ(result.status().message(), "append request: serialized data for 1 of 2 events");

  request = Request({Product("e3", "p3", 1)});
  (*request.events[0].mutable_data()->mutable_fields())["sku"].set_string_value("SKU-3");
  request.serialized_data = {""};
  result = log->AppendSync(std::move(request));
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << result.status();
  EXPECT_EQ(result.status().message(), "event e3 has both data and serialized data");
  EXPECT_EQ(log->head(), 0u);  // nothing of either request stored
}

TEST_P(EventLogTest, ReadEventsPaginates) {
  auto log = Open();
  ASSERT_NE(log, nullptr);
  for (int i = 1; i <= 25; ++i) {
    ASSERT_TRUE(log->AppendSync(Request({Product(absl::StrCat("e", i), "p", i)})).ok());
  }
  std::vector<uint64_t> seen;
  uint64_t from = 1;
  int pages = 0;
  for (;;) {
    absl::StatusOr<std::vector<v1::Event>> page = log->ReadEvents(from, 10);
    ASSERT_TRUE(page.ok()) << page.status();
    if (page->empty()) break;
    ++pages;
    EXPECT_LE(page->size(), 10u);
    for (const v1::Event& e : *page) seen.push_back(e.sequence());
    from = page->back().sequence() + 1;
  }
  EXPECT_EQ(pages, 3);
  ASSERT_EQ(seen.size(), 25u);
  for (std::size_t i = 0; i < seen.size(); ++i) EXPECT_EQ(seen[i], i + 1);

  absl::StatusOr<std::vector<v1::Event>> middle = log->ReadEvents(24, 10);
  ASSERT_TRUE(middle.ok()) << middle.status();
  ASSERT_EQ(middle->size(), 2u);
  EXPECT_EQ((*middle)[0].sequence(), 24u);
  absl::StatusOr<std::vector<v1::Event>> none = log->ReadEvents(1, 0);
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_TRUE(none->empty());
  absl::StatusOr<std::vector<v1::Event>> past = log->ReadEvents(26, 10);
  ASSERT_TRUE(past.ok()) << past.status();
  EXPECT_TRUE(past->empty());
}

TEST_P(EventLogTest, WithoutSyncAppendsAreStoredAndRecovered) {
  EventLogOptions options;
  options.sync = false;
  {
    auto log = Open(options);
    ASSERT_NE(log, nullptr);
    auto r = log->AppendSync(Request({Product("e1", "p1", 1), Product("e2", "p1", 0)}));
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->accepted, 2u);
    EXPECT_EQ(r->stale, 1u);
  }
  auto log = Open(options);
  ASSERT_NE(log, nullptr);
  EXPECT_EQ(log->head(), 2u);
  EXPECT_EQ(AllEvents(*log).size(), 2u);
  auto dup = log->AppendSync(Request({Product("e1", "p1", 1)}));
  ASSERT_TRUE(dup.ok()) << dup.status();
  EXPECT_EQ(dup->duplicates, 1u);
}

TEST_P(EventLogTest, ConcurrentAppendsGetUniqueDenseSequences) {
  constexpr int kThreads = 8;
  constexpr int kRequestsPerThread = 500;
  constexpr int kTotal = kThreads * kRequestsPerThread;
  auto log = Open();
  ASSERT_NE(log, nullptr);

  struct Outcome {
    absl::Status status;
    AppendResult result;
  };
  // outcomes[t][i]: request i of thread t. Each slot is written once, by its callback.
  std::vector<std::vector<Outcome>> outcomes(kThreads, std::vector<Outcome>(kRequestsPerThread));
  std::atomic<int> done{0};
  absl::Notification all_done;

  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kRequestsPerThread; ++i) {
        // Two events per request; the second of every tenth request repeats the first.
        const std::string id = absl::StrCat("t", t, "-r", i);
        v1::Event second = Product(i % 10 == 0 ? id + "-a" : id + "-b", absl::StrCat("p", t), i);
        log->Append(Request({Product(id + "-a", absl::StrCat("p", t), i), second}),
                    [&, t, i](absl::StatusOr<AppendResult> r) {
                      Outcome& o = outcomes[t][i];
                      o.status = r.status();
                      if (r.ok()) o.result = *r;
                      if (done.fetch_add(1) + 1 == kTotal) all_done.Notify();
                    });
      }
    });
  }
  for (std::thread& th : threads) th.join();
  ASSERT_TRUE(all_done.WaitForNotificationWithTimeout(absl::Seconds(120)));

  std::set<uint64_t> sequences;
  uint64_t expected_events = 0;
  for (int t = 0; t < kThreads; ++t) {
    uint64_t previous_last = 0;
    for (int i = 0; i < kRequestsPerThread; ++i) {
      const Outcome& o = outcomes[t][i];
      ASSERT_TRUE(o.status.ok()) << o.status;
      const bool has_dup = i % 10 == 0;
      EXPECT_EQ(o.result.accepted, has_dup ? 1u : 2u);
      EXPECT_EQ(o.result.duplicates, has_dup ? 1u : 0u);
      // Versions increase per thread and resource, so nothing is stale.
      EXPECT_EQ(o.result.stale, 0u);
      // A request's events are contiguous, and one thread's requests are stored in order.
      EXPECT_EQ(o.result.last_sequence - o.result.first_sequence + 1, o.result.accepted);
      EXPECT_GT(o.result.first_sequence, previous_last);
      previous_last = o.result.last_sequence;
      for (uint64_t s = o.result.first_sequence; s <= o.result.last_sequence; ++s) {
        EXPECT_TRUE(sequences.insert(s).second) << "sequence " << s << " handed out twice";
      }
      expected_events += o.result.accepted;
    }
  }
  ASSERT_EQ(sequences.size(), expected_events);
  EXPECT_EQ(*sequences.begin(), 1u);
  EXPECT_EQ(*sequences.rbegin(), expected_events);  // dense: 1..N with no gap
  EXPECT_EQ(log->head(), expected_events);
  EXPECT_EQ(log->pending(), 0u);

  std::vector<v1::Event> stored = AllEvents(*log);
  ASSERT_EQ(stored.size(), expected_events);
  for (std::size_t i = 0; i < stored.size(); ++i) {
    EXPECT_EQ(stored[i].sequence(), i + 1);
    EXPECT_FALSE(stored[i].stale());
  }
}

TEST_P(EventLogTest, FailedWriteFailsWholeGroupAndLeavesNoTrace) {
  auto log = Open({}, /*faulty=*/true);
  ASSERT_NE(log, nullptr);
  AppendRequest first = Request({Product("ok1", "p1", 100), Product("ok2", "p2", 100)});
  first.quarantine = {Quarantined(0, "before")};
  ASSERT_TRUE(log->AppendSync(std::move(first)).ok());
  ASSERT_EQ(log->head(), 2u);
  const int writes_before = control_->write_calls.load();

  // Hold the committer inside the first failing Write so that the next four requests queue up
  // and are committed together as one group.
  control_->fail_writes = true;
  control_->CloseGate();
  constexpr int kRequests = 5;
  std::vector<absl::Status> statuses(kRequests);
  std::atomic<int> done{0};
  absl::Notification all_done;
  auto append = [&](int i) {
    AppendRequest r = Request(
        {Product(absl::StrCat("f", i), "p1", 200 + i), Product(absl::StrCat("g", i), "", 1)});
    r.quarantine = {Quarantined(i, "during")};
    log->Append(std::move(r), [&, i](absl::StatusOr<AppendResult> result) {
      statuses[i] = result.status();
      if (done.fetch_add(1) + 1 == kRequests) all_done.Notify();
    });
  };
  append(0);
  while (control_->write_calls.load() == writes_before) std::this_thread::yield();
  for (int i = 1; i < kRequests; ++i) append(i);
  EXPECT_EQ(log->pending(), static_cast<std::size_t>(kRequests));
  control_->OpenGate();
  ASSERT_TRUE(all_done.WaitForNotificationWithTimeout(absl::Seconds(30)));

  // The held Write, then the other four in one or two more: the builder may have taken the
  // first of them as a group of its own, built while the held one was being written (and
  // rebuilt after it failed), while the other three queued behind it. Every callback failed.
  EXPECT_GE(control_->write_calls.load() - writes_before, 2);
  EXPECT_LE(control_->write_calls.load() - writes_before, 3);
  for (const absl::Status& s : statuses) EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_EQ(log->head(), 2u);
  EXPECT_EQ(log->pending(), 0u);
  EXPECT_EQ(AllEvents(*log).size(), 2u);
  absl::StatusOr<std::optional<uint64_t>> id = log->FindEventId("pim", "f1");
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_FALSE(id->has_value());
  absl::StatusOr<std::optional<ResourceVersion>> version =
      log->FindVersion({"pim", "product", "p1"});
  ASSERT_TRUE(version.ok()) << version.status();
  ASSERT_TRUE(version->has_value());
  EXPECT_EQ((*version)->version_at_us, (kBaseSeconds + 100) * 1'000'000);
  EXPECT_EQ((*version)->sequence, 1u);

  // Once the fault clears, the same events are stored (not duplicates: nothing of them was
  // written), with sequences and quarantine ids that continue without a gap.
  control_->fail_writes = false;
  AppendRequest retry = Request({Product("f1", "p1", 201)});
  retry.quarantine = {Quarantined(9, "after")};
  auto r = log->AppendSync(std::move(retry));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->accepted, 1u);
  EXPECT_EQ(r->duplicates, 0u);
  EXPECT_EQ(r->stale, 0u);
  EXPECT_EQ(r->first_sequence, 3u);
  EXPECT_EQ(log->head(), 3u);
  absl::StatusOr<std::vector<v1::QuarantineEntry>> quarantine = log->ReadQuarantine(0, 100);
  ASSERT_TRUE(quarantine.ok()) << quarantine.status();
  ASSERT_EQ(quarantine->size(), 2u);
  EXPECT_EQ((*quarantine)[1].id(), 2u);
  EXPECT_EQ((*quarantine)[1].reason(), "after");
  log.reset();

  // Nothing of the failed groups reached the disk either.
  auto reopened = Open();
  ASSERT_NE(reopened, nullptr);
  EXPECT_EQ(reopened->head(), 3u);
  std::vector<v1::Event> events = AllEvents(*reopened);
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[2].id(), "f1");
}

TEST_P(EventLogTest, FailedLookupFailsGroupWithoutWriting) {
  auto log = Open({}, /*faulty=*/true);
  ASSERT_NE(log, nullptr);
  ASSERT_TRUE(log->AppendSync(Request({Product("e1", "p1", 1)})).ok());
  const int writes_before = control_->write_calls.load();
  control_->fail_lookups = true;
  auto r = log->AppendSync(Request({Product("e2", "p1", 2)}));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
  EXPECT_EQ(control_->write_calls.load(), writes_before);
  EXPECT_EQ(log->head(), 1u);
  control_->fail_lookups = false;
  auto ok = log->AppendSync(Request({Product("e2", "p1", 2)}));
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->first_sequence, 2u);
}

TEST_P(EventLogTest, GroupCommitBatchesConcurrentRequests) {
  constexpr int kThreads = 8;
  constexpr int kRequestsPerThread = 25;
  constexpr int kTotal = kThreads * kRequestsPerThread;
  control_->write_delay_ms = 5;  // a slow disk: requests pile up behind each Write
  auto log = Open({}, /*faulty=*/true);
  ASSERT_NE(log, nullptr);

  std::atomic<int> ok{0};
  std::atomic<int> done{0};
  absl::Notification all_done;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kRequestsPerThread; ++i) {
        log->Append(Request({Product(absl::StrCat(t, "-", i), absl::StrCat("p", t), i)}),
                    [&](absl::StatusOr<AppendResult> r) {
                      if (r.ok()) ok.fetch_add(1);
                      if (done.fetch_add(1) + 1 == kTotal) all_done.Notify();
                    });
      }
    });
  }
  for (std::thread& th : threads) th.join();
  ASSERT_TRUE(all_done.WaitForNotificationWithTimeout(absl::Seconds(60)));
  EXPECT_EQ(ok.load(), kTotal);
  EXPECT_EQ(log->head(), static_cast<uint64_t>(kTotal));
  EXPECT_LT(control_->write_calls.load(), kTotal / 2)
      << "expected group commit to merge requests into far fewer Writes";
}

TEST_P(EventLogTest, GroupSizeIsBoundedByMaxCommitRequests) {
  EventLogOptions options;
  options.max_commit_requests = 3;
  auto log = Open(options, /*faulty=*/true);
  ASSERT_NE(log, nullptr);
  control_->CloseGate();
  constexpr int kRequests = 10;
  std::atomic<int> done{0};
  absl::Notification all_done;
  for (int i = 0; i < kRequests; ++i) {
    log->Append(Request({Product(absl::StrCat("e", i), "p", i)}),
                [&](absl::StatusOr<AppendResult> r) {
                  EXPECT_TRUE(r.ok()) << r.status();
                  if (done.fetch_add(1) + 1 == kRequests) all_done.Notify();
                });
    // Let the first request reach the (closed) Write on its own so the rest queue up behind it.
    if (i == 0) {
      while (control_->write_calls.load() == 0) std::this_thread::yield();
    }
  }
  control_->OpenGate();
  ASSERT_TRUE(all_done.WaitForNotificationWithTimeout(absl::Seconds(30)));
  // At least 1 + ceil(9 / 3) Writes, none of more than 3 requests (of one event each). More
  // Writes than that when the builder took a group before the rest was queued.
  EXPECT_GE(control_->write_calls.load(), 4);
  EXPECT_LE(control_->max_batch_events.load(), 3u);
  EXPECT_EQ(log->head(), static_cast<uint64_t>(kRequests));
}

TEST_P(EventLogTest, DestructorCommitsEverythingQueued) {
  constexpr int kRequests = 200;
  std::atomic<int> ok{0};
  {
    auto log = Open();
    ASSERT_NE(log, nullptr);
    for (int i = 0; i < kRequests; ++i) {
      log->Append(Request({Product(absl::StrCat("e", i), "p", i)}),
                  [&](absl::StatusOr<AppendResult> r) {
                    if (r.ok()) ok.fetch_add(1);
                  });
    }
  }
  EXPECT_EQ(ok.load(), kRequests);
  auto log = Open();
  ASSERT_NE(log, nullptr);
  EXPECT_EQ(log->head(), static_cast<uint64_t>(kRequests));
}

TEST_P(EventLogTest, DiskBytesGrowsWithWrites) {
  auto log = Open();
  ASSERT_NE(log, nullptr);
  const uint64_t before = log->DiskBytes();
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(log->AppendSync(Request({Product(absl::StrCat("e", i), "p", i)})).ok());
  }
  EXPECT_GT(log->DiskBytes(), before);
}

// The RocksDB backend recovers the head from the events themselves when its meta record is
// missing (a database written before meta existed, or meta lost to a bug).
// Tests that edit the embedded store's files: on the RocksDB backend only (not skipped on
// JetStream: not instantiated there).
class RocksDbEventLogTest : public EventLogTest {};
INSTANTIATE_TEST_SUITE_P(Backends, RocksDbEventLogTest, ::testing::Values(Backend::kRocksDb),
                         BackendName);

TEST_P(RocksDbEventLogTest, RecoversHeadFromEventsWithoutMeta) {
  {
    auto log = Open();
    ASSERT_NE(log, nullptr);
    AppendRequest request = Request({Product("e1", "p1", 1), Product("e2", "p2", 1)});
    request.quarantine = {Quarantined(0, "x")};
    ASSERT_TRUE(log->AppendSync(std::move(request)).ok());
  }
  {
    std::vector<rocksdb::ColumnFamilyDescriptor> families = {
        {rocksdb::kDefaultColumnFamilyName, {}},
        {"events", {}},
        {"dedup", {}},
        {"versions", {}},
        {"quarantine", {}},
        {"meta", {}},
        {"cursors", {}},
        {"dead_letters", {}}};
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    rocksdb::DB* raw = nullptr;
    ASSERT_TRUE(rocksdb::DB::Open({}, dir_.path(), families, &handles, &raw).ok());
    std::unique_ptr<rocksdb::DB> db(raw);
    rocksdb::ColumnFamilyHandle* meta = handles[5];
    EXPECT_TRUE(db->Delete({}, meta, "last_sequence").ok());
    EXPECT_TRUE(db->Delete({}, meta, "last_quarantine_id").ok());
    for (rocksdb::ColumnFamilyHandle* h : handles)
      EXPECT_TRUE(db->DestroyColumnFamilyHandle(h).ok());
    EXPECT_TRUE(db->Close().ok());
  }
  auto log = Open();
  ASSERT_NE(log, nullptr);
  EXPECT_EQ(log->head(), 2u);
  AppendRequest request = Request({Product("e3", "p3", 1)});
  request.quarantine = {Quarantined(0, "y")};
  auto r = log->AppendSync(std::move(request));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->first_sequence, 3u);
  absl::StatusOr<std::vector<v1::QuarantineEntry>> quarantine = log->ReadQuarantine(0, 10);
  ASSERT_TRUE(quarantine.ok()) << quarantine.status();
  ASSERT_EQ(quarantine->size(), 2u);
  EXPECT_EQ((*quarantine)[1].id(), 2u);
}

// Appends `request` without waiting; the returned future gets its result.
std::shared_future<absl::StatusOr<AppendResult>> AppendAsync(EventLog& log, AppendRequest request) {
  auto promise = std::make_shared<std::promise<absl::StatusOr<AppendResult>>>();
  std::shared_future<absl::StatusOr<AppendResult>> result = promise->get_future().share();
  log.Append(std::move(request),
             [promise](absl::StatusOr<AppendResult> r) { promise->set_value(std::move(r)); });
  return result;
}

// Waits until the log's builder has taken everything queued (pending() counts requests not yet
// answered, so this waits for the Write calls instead).
void WaitForWrites(FaultControl& control, int at_least) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (control.write_calls.load() < at_least && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

// The builder prepares the next group while the writer holds the previous one: ids and
// versions of the group still being written count for dedup and staleness.
TEST_P(EventLogTest, GroupBuiltDuringAWriteSeesTheGroupBeingWritten) {
  auto log = Open({}, /*faulty=*/true);
  ASSERT_NE(log, nullptr);
  control_->CloseGate();
  auto first = AppendAsync(*log, Request({Product("a", "p1", 200), Product("b", "p2", 100)}));
  WaitForWrites(*control_, 1);  // the writer is inside Write, held at the gate
  // Built while the first group is not in the backend yet.
  auto second = AppendAsync(*log, Request({Product("a", "p9", 300),     // same id: duplicate
                                           Product("c", "p1", 150),     // older than 200: stale
                                           Product("d", "p2", 100)}));  // same version: fresh
  std::this_thread::sleep_for(std::chrono::milliseconds(50));           // let the builder build it
  control_->OpenGate();
  ASSERT_EQ(first.get().status(), absl::OkStatus());
  absl::StatusOr<AppendResult> r = second.get();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->accepted, 2u);
  EXPECT_EQ(r->duplicates, 1u);
  EXPECT_EQ(r->stale, 1u);
  EXPECT_EQ(r->first_sequence, 3u);
  EXPECT_EQ(r->last_sequence, 4u);
  EXPECT_EQ(log->head(), 4u);
  EXPECT_TRUE(StoredEvent(*log, 3).stale());
  EXPECT_FALSE(StoredEvent(*log, 4).stale());
  EXPECT_EQ(StoredEvent(*log, 3).id(), "c");
}

// A group built on top of a group whose Write then fails is built again on what the backend
// holds: it is stored, with no gap in sequences, and ids and versions of the failed group do
// not count.
TEST_P(EventLogTest, GroupBuiltOnAFailedWriteIsRebuiltAndStored) {
  auto log = Open({}, /*faulty=*/true);
  ASSERT_NE(log, nullptr);
  ASSERT_TRUE(log->AppendSync(Request({Product("base", "p0", 1)})).ok());
  const int writes_before = control_->write_calls.load();
  control_->fail_next_writes = 1;
  control_->CloseGate();
  auto failing = AppendAsync(*log, Request({Product("x", "p1", 500)}));
  WaitForWrites(*control_, writes_before + 1);
  auto later = AppendAsync(*log, Request({Product("x", "p3", 50),      // the failed group's id
                                          Product("y", "p1", 100)}));  // older than 500
  std::this_thread::sleep_for(std::chrono::milliseconds(50));          // built on the held group
  control_->OpenGate();
  EXPECT_EQ(failing.get().status().code(), absl::StatusCode::kUnavailable);
  absl::StatusOr<AppendResult> r = later.get();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->accepted, 2u);
  EXPECT_EQ(r->duplicates, 0u);
  EXPECT_EQ(r->stale, 0u);
  EXPECT_EQ(r->first_sequence, 2u);  // right after "base": the failed group left no gap
  EXPECT_EQ(r->last_sequence, 3u);
  std::vector<v1::Event> events = AllEvents(*log);
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[1].id(), "x");
  EXPECT_EQ(events[1].resource_id(), "p3");
  EXPECT_EQ(events[1].sequence(), 2u);
  EXPECT_FALSE(events[2].stale());
  absl::StatusOr<std::optional<ResourceVersion>> version =
      log->FindVersion({"pim", "product", "p1"});
  ASSERT_TRUE(version.ok()) << version.status();
  ASSERT_TRUE(version->has_value());
  EXPECT_EQ((*version)->version_at_us, (kBaseSeconds + 100) * 1'000'000);
}

// A request queued after a Write failed, once the writer is idle again, is stored (it is not
// failed for having been built on the failed group).
// A conflict (Aborted: another writer of a shared store appended first) is not a failure: the
// group is decided again on the backend's new state and stored.
TEST_P(EventLogTest, ConflictingWriteIsDecidedAgainAndStored) {
  auto log = Open({}, /*faulty=*/true);
  ASSERT_NE(log, nullptr);
  control_->conflict_next_writes = 3;
  absl::StatusOr<AppendResult> r =
      log->AppendSync(Request({Product("a", "p1", 10), Product("b", "p2", 10)}));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->accepted, 2u);
  EXPECT_EQ(r->first_sequence, 1u);
  EXPECT_EQ(control_->write_calls.load(), 4);
  EXPECT_EQ(control_->resyncs.load(), 3);
  EXPECT_EQ(log->head(), 2u);
  EXPECT_EQ(AllEvents(*log).size(), 2u);
}

// Decided again a bounded number of times, then the request fails with Unavailable (a 503),
// nothing stored; the log keeps working.
TEST_P(EventLogTest, EndlessConflictsFailTheRequestAfterBoundedRebuilds) {
  auto log = Open({}, /*faulty=*/true);
  ASSERT_NE(log, nullptr);
  control_->conflict_next_writes = 1'000'000;
  absl::StatusOr<AppendResult> r = log->AppendSync(Request({Product("a", "p1", 10)}));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(r.status().message().find("appended first 17 times"), absl::string_view::npos)
      << r.status();
  EXPECT_EQ(control_->write_calls.load(), 17);
  control_->conflict_next_writes = 0;
  r = log->AppendSync(Request({Product("a", "p1", 10)}));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->first_sequence, 1u);
}

TEST_P(EventLogTest, RequestAfterAFailedWriteIsStored) {
  auto log = Open({}, /*faulty=*/true);
  ASSERT_NE(log, nullptr);
  control_->fail_next_writes = 1;
  EXPECT_EQ(log->AppendSync(Request({Product("a", "p1", 10)})).status().code(),
            absl::StatusCode::kUnavailable);
  absl::StatusOr<AppendResult> r = log->AppendSync(Request({Product("a", "p1", 10)}));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->accepted, 1u);
  EXPECT_EQ(r->first_sequence, 1u);
}

// Stored versions are cached by the builder; the cache never makes a fresh event stale or a
// stale one fresh, across many resources (more than the cache holds) and a reopen.
TEST_P(EventLogTest, VersionCacheAgreesWithTheBackend) {
  EventLogOptions options;
  options.version_cache_entries = 8;  // two generations of 4: rotates all the time
  // Round r sets every resource to version 10 r, except that in odd rounds every third
  // resource gets 10 r - 15: older than the round before, so stale.
  auto version_of = [](int round, int resource) -> int64_t {
    return round * 10 - (round % 2 == 1 && resource % 3 == 0 ? 15 : 0);
  };
  constexpr int kRounds = 6, kResources = 20;
  {
    auto log = Open(options);
    ASSERT_NE(log, nullptr);
    for (int round = 0; round < kRounds; ++round) {
      for (int resource = 0; resource < kResources; ++resource) {
        absl::StatusOr<AppendResult> r = log->AppendSync(
            Request({Product(absl::StrCat("e", round, "-", resource), absl::StrCat("r", resource),
                             version_of(round, resource))}));
        ASSERT_TRUE(r.ok()) << r.status();
      }
    }
    std::vector<v1::Event> events = AllEvents(*log);
    ASSERT_EQ(events.size(), static_cast<std::size_t>(kRounds * kResources));
    for (const v1::Event& e : events) {
      const int round = static_cast<int>((e.sequence() - 1) / kResources);
      const int resource = static_cast<int>((e.sequence() - 1) % kResources);
      EXPECT_EQ(e.stale(), round % 2 == 1 && resource % 3 == 0) << e.ShortDebugString();
    }
  }
  auto log = Open(options);
  ASSERT_NE(log, nullptr);
  // After a reopen (empty cache): r1's newest version is 50; 45 is stale, 50 is not.
  absl::StatusOr<AppendResult> r =
      log->AppendSync(Request({Product("late", "r1", 45), Product("same", "r1", 50)}));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->stale, 1u);
  EXPECT_EQ(r->accepted, 2u);
}

}  // namespace
}  // namespace pimgate

// ---- JetStream: several nodes on one stream ----------------------------------------------------

namespace pimgate {
namespace {

// Nodes (EventLogs with replicas of their own) sharing one stream of a real nats-server.
class JetStreamLogTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // A small max_payload: records of a few hundred KiB are sent as chunks.
    nats_ =
        std::make_unique<NatsCluster>(NatsCluster::Options{.servers = 1, .max_payload = 64 * 1024});
  }
  static void TearDownTestSuite() { nats_.reset(); }
  void SetUp() override { ASSERT_TRUE(nats_->started()); }

  JetStreamConfig Config() const {
    return nats_->Config(::testing::UnitTest::GetInstance()->current_test_info()->name());
  }

  // A node: a log whose replica is in `dir`, on the test's stream (or `config`).
  static std::unique_ptr<EventLog> Node(const TempDir& dir, const JetStreamConfig& config) {
    absl::StatusOr<std::unique_ptr<LogBackend>> backend = OpenJetStreamBackend(dir.path(), config);
    EXPECT_TRUE(backend.ok()) << backend.status();
    if (!backend.ok()) return nullptr;
    absl::StatusOr<std::unique_ptr<EventLog>> log = EventLog::Open(std::move(*backend), {});
    EXPECT_TRUE(log.ok()) << log.status();
    return log.ok() ? std::move(*log) : nullptr;
  }

  static std::vector<v1::Event> AllEvents(EventLog& log) {
    absl::StatusOr<std::vector<v1::Event>> events = log.ReadEvents(0, 1'000'000);
    EXPECT_TRUE(events.ok()) << events.status();
    return events.ok() ? *events : std::vector<v1::Event>{};
  }

  static std::unique_ptr<NatsCluster> nats_;
};

std::unique_ptr<NatsCluster> JetStreamLogTest::nats_;

// Two nodes race appends of one resource, with versions interleaved between them. Whatever
// order the stream took them in, sequences are dense, nothing acknowledged is lost, and an event
// is stale exactly when an event stored before it had a newer version (never the newer one).
TEST_F(JetStreamLogTest, TwoNodesRacingOnOneResourceAgreeOnStaleness) {
  constexpr int kPerNode = 60;
  const JetStreamConfig config = Config();
  TempDir dir_a, dir_b;
  auto a = Node(dir_a, config);
  auto b = Node(dir_b, config);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  std::atomic<int> failures{0};
  // A node that loses the race more than the log's rebuild bound answers UNAVAILABLE with
  // nothing stored (a 503 to the sender, who sends again): how often depends on the machine's
  // speed (each node follows the other's appends as they arrive, so a slow builder loses more),
  // so the test sends again as a sender would, and counts it.
  std::atomic<int> refused{0};
  auto run = [&](EventLog& log, int parity) {
    for (int i = 0; i < kPerNode; ++i) {
      // Node A sends versions 2i, node B 2i+1, in rising order: the nodes' events interleave.
      const int version = 2 * i + parity;
      absl::StatusOr<AppendResult> r;
      for (int attempt = 0; attempt < 100; ++attempt) {
        r = log.AppendSync(Request({Product(absl::StrCat("v", version), "p", version)}));
        if (r.ok() || !absl::IsUnavailable(r.status())) break;
        refused.fetch_add(1);
      }
      if (!r.ok() || r->accepted != 1) failures.fetch_add(1);
      EXPECT_TRUE(r.ok()) << r.status();
    }
  };
  std::thread ta(run, std::ref(*a), 0);
  std::thread tb(run, std::ref(*b), 1);
  ta.join();
  tb.join();
  std::cout << "racing appends refused after too many rebuilds and sent again: " << refused.load()
            << "\n";
  ASSERT_EQ(failures.load(), 0);

  // A third node builds its replica from the stream and sees what both wrote.
  TempDir dir_c;
  auto c = Node(dir_c, config);
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->head(), 2u * kPerNode);
  std::vector<v1::Event> events = AllEvents(*c);
  ASSERT_EQ(events.size(), 2u * kPerNode);
  int64_t newest = std::numeric_limits<int64_t>::min();
  std::set<std::string> ids;
  int stale = 0;
  for (std::size_t i = 0; i < events.size(); ++i) {
    const v1::Event& e = events[i];
    EXPECT_EQ(e.sequence(), i + 1);
    ids.insert(e.id());
    const int64_t version = e.version_at().seconds();
    EXPECT_EQ(e.stale(), version < newest) << "event " << e.id() << " at " << e.sequence();
    stale += e.stale();
    newest = std::max(newest, version);
  }
  EXPECT_EQ(ids.size(), 2u * kPerNode);
  // The nodes' own replicas agree with the stream once they catch up.
  absl::StatusOr<std::optional<ResourceVersion>> version =
      c->FindVersion(ResourceKey{"pim", "product", "p"});
  ASSERT_TRUE(version.ok() && version->has_value());
  EXPECT_EQ((*version)->version_at_us, (kBaseSeconds + 2 * kPerNode - 1) * 1'000'000);
  std::cout << "two nodes, " << 2 * kPerNode << " appends on one resource: " << stale
            << " stored stale\n";
}

// A node sees what another node appends as it arrives (its follower), not only on its own next
// append: its head moves, its listeners are called and the events read; its later decisions
// take the other node's versions into account.
TEST_F(JetStreamLogTest, NodeSeesOtherNodesAppendsAsTheyArrive) {
  const JetStreamConfig config = Config();
  TempDir dir_a, dir_b;
  auto a = Node(dir_a, config);
  auto b = Node(dir_b, config);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  ASSERT_TRUE(b->AppendSync(Request({Product("b1", "shared", 5)})).ok());
  absl::Mutex mu;
  uint64_t heard = 0;
  b->AddAppendListener([&](uint64_t head) {
    absl::MutexLock lock(&mu);
    heard = std::max(heard, head);
  });
  auto appended = a->AppendSync(Request({Product("a1", "shared", 10), Product("a2", "other", 1)}));
  ASSERT_TRUE(appended.ok()) << appended.status();
  ASSERT_EQ(appended->last_sequence, 3u);
  // Hang guard only: b does not append; its follower brings the events.
  EXPECT_EQ(b->WaitForHead(2, absl::Seconds(120)), 3u);
  {
    absl::MutexLock lock(&mu);
    auto reached = [&]() ABSL_SHARED_LOCKS_REQUIRED(mu) { return heard >= 3; };
    EXPECT_TRUE(mu.AwaitWithTimeout(absl::Condition(&reached), absl::Seconds(120)));
  }
  std::vector<v1::Event> events = AllEvents(*b);
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[1].id(), "a1");
  EXPECT_EQ(events[2].id(), "a2");
  auto older = b->AppendSync(Request({Product("b2", "shared", 7), Product("a1", "shared", 10)}));
  ASSERT_TRUE(older.ok()) << older.status();
  EXPECT_EQ(older->stale, 1u);
  EXPECT_EQ(older->duplicates, 1u);
  EXPECT_EQ(older->first_sequence, 4u);
}

// An event id sent to one node and then to another is a duplicate at the second: its append is
// refused (it had not seen the first record), it catches up and decides again.
TEST_F(JetStreamLogTest, DedupHoldsAcrossNodes) {
  const JetStreamConfig config = Config();
  TempDir dir_a, dir_b;
  auto a = Node(dir_a, config);
  auto b = Node(dir_b, config);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  absl::StatusOr<AppendResult> first = a->AppendSync(Request({Product("same", "p1", 1)}));
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->accepted, 1u);
  absl::StatusOr<AppendResult> again =
      b->AppendSync(Request({Product("same", "p1", 1), Product("other", "p2", 1)}));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->duplicates, 1u);
  EXPECT_EQ(again->accepted, 1u);
  EXPECT_EQ(again->first_sequence, 2u);
  EXPECT_EQ(b->head(), 2u);
  // And back: a knows b's event once it catches up (its next append is refused first).
  absl::StatusOr<AppendResult> back = a->AppendSync(Request({Product("other", "p2", 1)}));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->duplicates, 1u);
  EXPECT_EQ(back->accepted, 0u);
}

// A record larger than the servers' max_payload travels as chunks and is applied whole, by the
// writer and by a node that rebuilds its replica from the stream.
TEST_F(JetStreamLogTest, RecordLargerThanMaxPayloadIsChunked) {
  const JetStreamConfig config = Config();
  TempDir dir_a;
  auto a = Node(dir_a, config);
  ASSERT_NE(a, nullptr);
  std::vector<v1::Event> events;
  for (int i = 0; i < 6; ++i) {
    v1::Event e = Product(absl::StrCat("big", i), absl::StrCat("p", i), 1);
    (*e.mutable_data()->mutable_fields())["blob"].set_string_value(
        std::string(40 * 1024, static_cast<char>('a' + i)));
    events.push_back(std::move(e));
  }
  absl::StatusOr<AppendResult> r = a->AppendSync(Request(events));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->accepted, 6u);
  ASSERT_TRUE(a->AppendSync(Request({Product("small", "q", 1)})).ok());

  TempDir dir_b;
  auto b = Node(dir_b, config);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->head(), 7u);
  std::vector<v1::Event> stored = AllEvents(*b);
  ASSERT_EQ(stored.size(), 7u);
  for (int i = 0; i < 6; ++i) {
    EXPECT_EQ(stored[i].id(), absl::StrCat("big", i));
    EXPECT_EQ(stored[i].data().fields().at("blob").string_value(),
              std::string(40 * 1024, static_cast<char>('a' + i)));
  }
}

// A node rebuilds its replica from the stream: same events, ids, versions, quarantine and
// metadata as the node that wrote them; and a reopened node continues where it was.
TEST_F(JetStreamLogTest, NewNodeRebuildsItsReplicaFromTheStream) {
  const JetStreamConfig config = Config();
  TempDir dir_a;
  {
    auto a = Node(dir_a, config);
    ASSERT_NE(a, nullptr);
    AppendRequest request = Request({Product("e1", "p1", 5), Product("e2", "p1", 3)});
    request.quarantine = {Quarantined(0, "bad json")};
    ASSERT_TRUE(a->AppendSync(std::move(request)).ok());
    ASSERT_TRUE(a->PutMeta("reconcile/pim/watermark", "42").ok());
  }
  TempDir dir_b;
  auto b = Node(dir_b, config);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->head(), 2u);
  std::vector<v1::Event> events = AllEvents(*b);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_FALSE(events[0].stale());
  EXPECT_TRUE(events[1].stale());
  absl::StatusOr<std::optional<uint64_t>> id = b->FindEventId("pim", "e2");
  ASSERT_TRUE(id.ok() && id->has_value());
  EXPECT_EQ(**id, 2u);
  absl::StatusOr<std::vector<v1::QuarantineEntry>> quarantine = b->ReadQuarantine(0, 10);
  ASSERT_TRUE(quarantine.ok());
  ASSERT_EQ(quarantine->size(), 1u);
  EXPECT_EQ(quarantine->front().id(), 1u);
  absl::StatusOr<std::optional<std::string>> meta = b->GetMeta("reconcile/pim/watermark");
  ASSERT_TRUE(meta.ok() && meta->has_value());
  EXPECT_EQ(**meta, "42");
  // The first node, reopened, continues after b's appends.
  ASSERT_TRUE(b->AppendSync(Request({Product("e3", "p2", 1)})).ok());
  b.reset();
  auto a = Node(dir_a, config);
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->head(), 3u);
  absl::StatusOr<AppendResult> r = a->AppendSync(Request({Product("e4", "p2", 2)}));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->first_sequence, 4u);
}

// A replica follows one stream: opening it on another is refused, saying so.
TEST_F(JetStreamLogTest, ReplicaOfAnotherStreamIsRefused) {
  TempDir dir;
  JetStreamConfig first = Config();
  {
    auto node = Node(dir, first);
    ASSERT_NE(node, nullptr);
    ASSERT_TRUE(node->AppendSync(Request({Product("e1", "p1", 1)})).ok());
  }
  JetStreamConfig other = nats_->Config("ReplicaOfAnotherStreamIsRefused_other");
  absl::StatusOr<std::unique_ptr<LogBackend>> backend = OpenJetStreamBackend(dir.path(), other);
  ASSERT_TRUE(backend.ok()) << backend.status();
  absl::StatusOr<std::unique_ptr<EventLog>> log = EventLog::Open(std::move(*backend), {});
  ASSERT_FALSE(log.ok());
  EXPECT_EQ(log.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(log.status().message()),
              ::testing::HasSubstr("follows JetStream stream ReplicaOfAnotherStreamIsRefused"));
  EXPECT_THAT(std::string(log.status().message()), ::testing::HasSubstr("move the directory"));

  // An embedded store is no replica either.
  TempDir embedded;
  {
    absl::StatusOr<std::unique_ptr<LogBackend>> rocks = OpenRocksDbBackend(embedded.path());
    ASSERT_TRUE(rocks.ok());
    absl::StatusOr<std::unique_ptr<EventLog>> l = EventLog::Open(std::move(*rocks), {});
    ASSERT_TRUE(l.ok());
    ASSERT_TRUE((*l)->AppendSync(Request({Product("e1", "p1", 1)})).ok());
  }
  backend = OpenJetStreamBackend(embedded.path(), first);
  ASSERT_TRUE(backend.ok()) << backend.status();
  log = EventLog::Open(std::move(*backend), {});
  ASSERT_FALSE(log.ok());
  EXPECT_THAT(std::string(log.status().message()), ::testing::HasSubstr("no replica"));
}

// The stream must match the configuration: replicas and subject.
TEST_F(JetStreamLogTest, MismatchedStreamIsRefused) {
  TempDir dir;
  JetStreamConfig config = Config();
  ASSERT_NE(Node(dir, config), nullptr);
  JetStreamConfig other_subject = config;
  other_subject.subject = "somewhere.else";
  TempDir dir2;
  absl::StatusOr<std::unique_ptr<LogBackend>> backend =
      OpenJetStreamBackend(dir2.path(), other_subject);
  ASSERT_FALSE(backend.ok());
  EXPECT_THAT(std::string(backend.status().message()), ::testing::HasSubstr("somewhere.else"));
  EXPECT_TRUE(CheckJetStreamCluster(config).ok());
  EXPECT_FALSE(CheckJetStreamCluster(other_subject).ok());
  JetStreamConfig three = config;
  three.replicas = 3;
  absl::Status status = CheckJetStreamCluster(three);
  EXPECT_THAT(std::string(status.message()), ::testing::HasSubstr("has 1 replica(s)"));
}

// Cursors and dead letters live in the buckets: every node sees the same.
TEST_F(JetStreamLogTest, CursorsAndDeadLettersRoundTrip) {
  const JetStreamConfig config = Config();
  TempDir dir_a, dir_b;
  auto a = Node(dir_a, config);
  auto b = Node(dir_b, config);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  absl::StatusOr<uint64_t> cursor = a->LoadCursor("crm");
  ASSERT_TRUE(cursor.ok()) << cursor.status();
  EXPECT_EQ(*cursor, 0u);
  PluginProgress progress;
  progress.cursor = 7;
  for (uint64_t sequence : {3u, 5u, 12u}) {
    v1::DeadLetter letter;
    letter.set_plugin("crm");
    letter.mutable_event()->set_sequence(sequence);
    letter.set_reason(absl::StrCat("failed ", sequence));
    letter.mutable_dead_at()->set_seconds(kBaseSeconds + static_cast<int64_t>(sequence));
    progress.dead_letters.push_back(letter);
  }
  ASSERT_TRUE(a->WriteProgress("crm", progress).ok());
  PluginProgress other;
  other.cursor = 2;
  ASSERT_TRUE(a->WriteProgress("erp", other).ok());

  cursor = b->LoadCursor("crm");
  ASSERT_TRUE(cursor.ok());
  EXPECT_EQ(*cursor, 7u);
  absl::StatusOr<std::vector<v1::DeadLetter>> letters = b->ReadDeadLetters("crm", 0, 10);
  ASSERT_TRUE(letters.ok()) << letters.status();
  ASSERT_EQ(letters->size(), 3u);
  EXPECT_EQ((*letters)[0].event().sequence(), 3u);
  EXPECT_EQ((*letters)[2].event().sequence(), 12u);
  EXPECT_EQ((*letters)[2].reason(), "failed 12");
  letters = b->ReadDeadLetters("crm", 4, 1);
  ASSERT_TRUE(letters.ok());
  ASSERT_EQ(letters->size(), 1u);
  EXPECT_EQ(letters->front().event().sequence(), 5u);
  EXPECT_EQ(*b->CountDeadLetters("crm"), 3u);
  EXPECT_EQ(*b->CountDeadLetters("erp"), 0u);
  ASSERT_TRUE(b->DeleteDeadLetters("crm", {5, 99}).ok());
  EXPECT_EQ(*a->CountDeadLetters("crm"), 2u);
  letters = a->ReadDeadLetters("crm", 0, 10);
  ASSERT_TRUE(letters.ok());
  ASSERT_EQ(letters->size(), 2u);
  EXPECT_EQ((*letters)[1].event().sequence(), 12u);
}

// Retention on JetStream: the trim applies on every replica, and the stream's messages that
// held only trimmed events are purged once what they held that is still current (versions,
// quarantine entries, metadata) is carried to the end of the stream. A node built from the
// purged stream has the same state as the one that trimmed.
TEST_F(JetStreamLogTest, TrimPurgesTheStreamAndCarriesLiveState) {
  const JetStreamConfig config = Config();
  TempDir dir_a;
  absl::StatusOr<std::unique_ptr<LogBackend>> backend = OpenJetStreamBackend(dir_a.path(), config);
  ASSERT_TRUE(backend.ok()) << backend.status();
  LogBackend* trimmer = backend->get();  // owned by the log, which outlives its use here
  absl::StatusOr<std::unique_ptr<EventLog>> opened = EventLog::Open(std::move(*backend), {});
  ASSERT_TRUE(opened.ok()) << opened.status();
  EventLog& a = **opened;
  ASSERT_TRUE(a.PutMeta("reconcile/pim/watermark", "early").ok());
  AppendRequest first = Request({});
  for (int i = 0; i < 10; ++i) {
    first.events.push_back(Product(absl::StrCat("e", i), absl::StrCat("p", i), 1));
  }
  first.quarantine = {Quarantined(0, "kept")};
  ASSERT_TRUE(a.AppendSync(std::move(first)).ok());
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(
        a.AppendSync(Request({Product(absl::StrCat("f", i), absl::StrCat("p", i), 2)})).ok());
  }
  ASSERT_EQ(a.head(), 15u);
  const uint64_t first_before = nats_->FirstSequence(config.stream);
  ASSERT_EQ(first_before, 1u);

  absl::StatusOr<uint64_t> trimmed =
      trimmer->TrimEvents(10, std::numeric_limits<int64_t>::max(), 1000);
  ASSERT_TRUE(trimmed.ok()) << trimmed.status();
  EXPECT_EQ(*trimmed, 10u);
  EXPECT_GT(nats_->FirstSequence(config.stream), first_before) << "nothing purged";

  TempDir dir_b;
  auto b = Node(dir_b, config);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->head(), 15u);
  std::vector<v1::Event> events = AllEvents(*b);
  ASSERT_EQ(events.size(), 5u);
  EXPECT_EQ(events.front().sequence(), 11u);
  for (int i = 0; i < 10; ++i) {
    // Versions outlive their events: p5..p9 only in the purged record, carried.
    absl::StatusOr<std::optional<ResourceVersion>> version =
        b->FindVersion(ResourceKey{"pim", "product", absl::StrCat("p", i)});
    ASSERT_TRUE(version.ok() && version->has_value()) << "p" << i;
    EXPECT_EQ((*version)->version_at_us, (kBaseSeconds + (i < 5 ? 2 : 1)) * 1'000'000) << i;
    // The trimmed ids are gone with their events, on both nodes.
    EXPECT_FALSE(b->FindEventId("pim", absl::StrCat("e", i))->has_value()) << i;
    EXPECT_FALSE(a.FindEventId("pim", absl::StrCat("e", i))->has_value()) << i;
  }
  EXPECT_TRUE(b->FindEventId("pim", "f4")->has_value());
  absl::StatusOr<std::vector<v1::QuarantineEntry>> quarantine = b->ReadQuarantine(0, 10);
  ASSERT_TRUE(quarantine.ok());
  ASSERT_EQ(quarantine->size(), 1u);
  EXPECT_EQ(quarantine->front().reason(), "kept");
  absl::StatusOr<std::optional<std::string>> meta = b->GetMeta("reconcile/pim/watermark");
  ASSERT_TRUE(meta.ok() && meta->has_value());
  EXPECT_EQ(**meta, "early");
  // A stale event is still recognised on the rebuilt node (the carried version is newer), and
  // sequences continue.
  absl::StatusOr<AppendResult> r = b->AppendSync(Request({Product("g", "p7", 0)}));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->first_sequence, 16u);
  EXPECT_EQ(r->stale, 1u);
}

// EventLog::Open(StoreConfig) picks the JetStream backend from store.backend.
TEST_F(JetStreamLogTest, OpenFromStoreConfig) {
  TempDir dir;
  StoreConfig store;
  store.backend = StoreBackend::kJetStream;
  store.path = dir.path();
  store.jetstream = Config();
  absl::StatusOr<std::unique_ptr<EventLog>> log = EventLog::Open(store);
  ASSERT_TRUE(log.ok()) << log.status();
  ASSERT_TRUE((*log)->AppendSync(Request({Product("e1", "p1", 1)})).ok());
  EXPECT_TRUE((*log)->Health().ok());
  // Nothing listens here: the error names the servers.
  store.jetstream->servers = {"nats://127.0.0.1:1"};
  TempDir dir2;
  store.path = dir2.path();
  log = EventLog::Open(store);
  ASSERT_FALSE(log.ok());
  EXPECT_THAT(std::string(log.status().message()),
              ::testing::HasSubstr("cannot connect to the NATS servers nats://127.0.0.1:1"));
}
// ---- pimgate migrate-store ------------------------------------------------------------------

// `pimgate migrate-store ...` run to its end: exit code, stdout, stderr.
testing::CommandResult RunMigrate(const TempDir& scratch, const std::vector<std::string>& args) {
  std::string command = testing::ShellQuote(PIMGATE_BINARY) + " migrate-store";
  for (const std::string& arg : args) absl::StrAppend(&command, " ", testing::ShellQuote(arg));
  const std::string out = scratch.File("migrate.out"), err = scratch.File("migrate.err");
  absl::StrAppend(&command, " >", testing::ShellQuote(out), " 2>", testing::ShellQuote(err));
  const int status = std::system(command.c_str());
  testing::CommandResult result;
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  result.out = testing::ReadWholeFile(out);
  result.err = testing::ReadWholeFile(err);
  return result;
}

// The configuration a migrated node runs with: `config`'s stream, the replica in `replica`.
std::string WriteJetStreamConfig(const TempDir& dir, const JetStreamConfig& config,
                                 const std::string& replica) {
  std::string yaml = absl::StrCat("gateway:\n  listen: 127.0.0.1:0\n",
                                  "store:\n  backend: jetstream\n  path: ", replica,
                                  "\n  jetstream:\n    servers: [");
  for (std::size_t i = 0; i < config.servers.size(); ++i) {
    absl::StrAppend(&yaml, i > 0 ? ", " : "", "\"", config.servers[i], "\"");
  }
  absl::StrAppend(&yaml, "]\n    replicas: ", config.replicas, "\n    stream: ", config.stream,
                  "\n    subject: ", config.subject, "\n    cursor_bucket: ", config.cursor_bucket,
                  "\n    dead_letter_bucket: ", config.dead_letter_bucket,
                  "\nsources:\n  - {name: pim, kind: events_api, path: /hooks/pim, secret: "
                  "migrate-test-secret}\n");
  const std::string path = dir.File(config.stream + ".yaml");
  std::ofstream(path) << yaml;
  return path;
}

// A RocksDB store written by the real EventLog (events with stale ones and duplicates,
// quarantine, metadata, two plugins' cursors and dead letters; retention trimmed its first 100
// events) is copied into a JetStream stream by `pimgate migrate-store`, killed with SIGKILL
// after its first record and resumed. The copy is refused without --resume, completes with it,
// and a node on the stream then has the same events under the same sequences, dedup ids,
// versions, quarantine, metadata, cursors and dead letters, and appends after the last event.
TEST_F(JetStreamLogTest, MigrateStoreCopiesARocksDbStoreAndResumesAfterKill9) {
  constexpr int kRequests = 300;  // of 10 events
  TempDir source_dir, target_dir, scratch;
  const std::string source = source_dir.File("store");
  {
    auto log = EventLog::Open(testing::StoreAt(source));
    ASSERT_TRUE(log.ok()) << log.status();
    for (int r = 0; r < kRequests; ++r) {
      std::vector<v1::Event> events;
      for (int i = 0; i < 10; ++i) {
        // 50 products, versions going back and forth: some events are stale.
        const int n = r * 10 + i;
        events.push_back(
            Product(absl::StrCat("e", n), absl::StrCat("p", n % 50), (n * 7919) % 1000));
      }
      if (r % 50 == 0) events.push_back(Product("e1", "p1", 5));  // a duplicate
      AppendRequest request = Request(std::move(events));
      if (r % 60 == 0) request.quarantine.push_back(Quarantined(3, absl::StrCat("bad ", r)));
      ASSERT_TRUE((*log)->AppendSync(std::move(request)).ok());
    }
    ASSERT_TRUE((*log)->PutMeta("reconcile/pim/watermark", "1700000123").ok());
    ASSERT_TRUE((*log)->PutMeta("dispatch/paused/erp", "true").ok());
    PluginProgress crm;
    crm.cursor = 1500;
    for (uint64_t sequence : {120u, 700u, 1499u}) {
      v1::DeadLetter letter;
      letter.set_plugin("crm");
      letter.mutable_event()->set_sequence(sequence);
      letter.set_reason(absl::StrCat("failed ", sequence));
      letter.mutable_dead_at()->set_seconds(kBaseSeconds);
      crm.dead_letters.push_back(letter);
    }
    ASSERT_TRUE((*log)->WriteProgress("crm", crm).ok());
    PluginProgress erp;
    erp.cursor = 2990;
    ASSERT_TRUE((*log)->WriteProgress("erp", erp).ok());
  }
  {
    auto backend = OpenRocksDbBackend(source);
    ASSERT_TRUE(backend.ok()) << backend.status();
    ASSERT_TRUE((*backend)->Recover().ok());
    auto trimmed = (*backend)->TrimEvents(100, std::numeric_limits<int64_t>::max(), 1000);
    ASSERT_TRUE(trimmed.ok()) << trimmed.status();
    ASSERT_EQ(*trimmed, 100u);
  }
  const JetStreamConfig config = Config();
  const std::string replica = target_dir.File("replica");
  const std::string yaml = WriteJetStreamConfig(scratch, config, replica);
  const std::vector<std::string> args = {"--from",        "rocksdb", "--to",     "jetstream",
                                         "--source-path", source,    "--config", yaml};

  // Bad invocations leave nothing behind.
  testing::CommandResult result = RunMigrate(scratch, {"--from", "jetstream", "--to", "rocksdb",
                                                       "--source-path", source, "--config", yaml});
  EXPECT_EQ(result.exit_code, 2) << result.err;
  EXPECT_THAT(result.err, ::testing::HasSubstr("--from rocksdb --to jetstream"));
  result = RunMigrate(scratch, {"--from", "rocksdb", "--to", "jetstream", "--source-path",
                                scratch.File("nothing"), "--config", yaml});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_THAT(result.err, ::testing::HasSubstr("no RocksDB store at"));

  // The first run, killed once it has copied its first record (5 events a record: hundreds
  // more to go).
  {
    int pipe_fds[2];
    ASSERT_EQ(::pipe(pipe_fds), 0);
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::dup2(pipe_fds[1], STDOUT_FILENO);
      ::close(pipe_fds[0]);
      std::vector<std::string> all = {PIMGATE_BINARY, "migrate-store", "--batch-events", "5"};
      all.insert(all.end(), args.begin(), args.end());
      std::vector<char*> argv;
      for (std::string& arg : all) argv.push_back(arg.data());
      argv.push_back(nullptr);
      ::execv(PIMGATE_BINARY, argv.data());
      ::_exit(127);
    }
    ::close(pipe_fds[1]);
    std::string seen;
    char c = 0;
    // Up to the first progress line about events (the lines before it name the copy).
    while (seen.find("events: copied") == std::string::npos && ::read(pipe_fds[0], &c, 1) == 1) {
      seen.push_back(c);
    }
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    ::close(pipe_fds[0]);
    ASSERT_THAT(seen, ::testing::HasSubstr("events: copied")) << seen;
    EXPECT_TRUE(WIFSIGNALED(status)) << "the copy ended before the kill:\n" << seen;
  }
  result = RunMigrate(scratch, args);
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_THAT(result.err, ::testing::HasSubstr("--resume")) << result.err;

  std::vector<std::string> resume = args;
  resume.push_back("--resume");
  result = RunMigrate(scratch, resume);
  ASSERT_EQ(result.exit_code, 0) << result.out << result.err;
  std::cout << result.out;
  EXPECT_THAT(result.out, ::testing::HasSubstr("resuming the copy"));
  EXPECT_THAT(result.out, ::testing::HasSubstr("verified: 2900 events (101..3000), 50 versions, "
                                               "5 quarantined, 2 metadata values, 2 plugins, 3 "
                                               "dead letters"));
  // Again: nothing left to copy, verified again.
  result = RunMigrate(scratch, resume);
  ASSERT_EQ(result.exit_code, 0) << result.out << result.err;
  EXPECT_THAT(result.out, ::testing::HasSubstr("; 0 events copied by this run"));

  // A new node that rebuilds its replica from the stream, and the node that runs on the copy.
  auto source_log = EventLog::Open(testing::StoreAt(source));
  ASSERT_TRUE(source_log.ok()) << source_log.status();
  TempDir new_node;
  for (const std::string& path : {new_node.File("replica"), replica}) {
    SCOPED_TRACE(path);
    StoreConfig store;
    store.backend = StoreBackend::kJetStream;
    store.path = path;
    store.jetstream = config;
    auto copy = EventLog::Open(store);
    ASSERT_TRUE(copy.ok()) << copy.status();
    EXPECT_EQ((*copy)->head(), (*source_log)->head());
    auto mine = (*source_log)->ReadStoredEvents(0, 100'000);
    auto theirs = (*copy)->ReadStoredEvents(0, 100'000);
    ASSERT_TRUE(mine.ok() && theirs.ok());
    ASSERT_EQ(mine->size(), 2900u);
    ASSERT_EQ(theirs->size(), mine->size());
    for (std::size_t i = 0; i < mine->size(); ++i) {
      ASSERT_EQ((*theirs)[i].sequence, (*mine)[i].sequence);
      ASSERT_EQ((*theirs)[i].bytes, (*mine)[i].bytes);
    }
    for (const std::string& plugin : {"crm", "erp"}) {
      EXPECT_EQ(*(*copy)->LoadCursor(plugin), *(*source_log)->LoadCursor(plugin));
    }
    auto letters = (*copy)->ReadDeadLetters("crm", 0, 10);
    ASSERT_TRUE(letters.ok());
    ASSERT_EQ(letters->size(), 3u);
    EXPECT_EQ((*letters)[2].reason(), "failed 1499");
    EXPECT_EQ(*(*copy)->GetMeta("dispatch/paused/erp"), std::optional<std::string>("true"));
    EXPECT_EQ(*(*copy)->GetMeta("reconcile/pim/watermark"),
              std::optional<std::string>("1700000123"));
    auto quarantine = (*copy)->ReadQuarantine(0, 100);
    ASSERT_TRUE(quarantine.ok());
    ASSERT_EQ(quarantine->size(), 5u);
    EXPECT_EQ(quarantine->back().id(), 5u);
    EXPECT_EQ(quarantine->back().reason(), "bad 240");
    for (int p = 0; p < 50; ++p) {
      const ResourceKey key{"pim", "product", absl::StrCat("p", p)};
      auto version = (*copy)->FindVersion(key);
      auto original = (*source_log)->FindVersion(key);
      ASSERT_TRUE(version.ok() && original.ok() && version->has_value());
      EXPECT_EQ((*version)->version_at_us, (*original)->version_at_us);
      EXPECT_EQ((*version)->sequence, (*original)->sequence);
    }
    if (path != replica) continue;
    // The copy goes on where the store ended: a known id is a duplicate (one whose event
    // retention removed is not: its id went with it), an older version is stale, and the next
    // event gets the next sequence.
    auto appended = (*copy)->AppendSync(Request(
        {Product("e2000", "p0", 0), Product("e5", "p5", 5000), Product("new", "p7", 2000)}));
    ASSERT_TRUE(appended.ok()) << appended.status();
    EXPECT_EQ(appended->duplicates, 1u);
    EXPECT_EQ(appended->accepted, 2u);
    EXPECT_EQ(appended->stale, 0u);
    EXPECT_EQ(appended->first_sequence, 3001u);
    auto older = (*copy)->AppendSync(Request({Product("older", "p7", 1999)}));
    ASSERT_TRUE(older.ok());
    EXPECT_EQ(older->stale, 1u);
  }

  // A store pimgate has open is refused (RocksDB's lock).
  result = RunMigrate(scratch, resume);
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_THAT(result.err, ::testing::HasSubstr("is pimgate still running on it?")) << result.err;
  source_log->reset();

  // A stream that holds another log is refused, with or without --resume.
  const JetStreamConfig other = nats_->Config("MigrateStoreOther");
  {
    TempDir node;
    auto log = Node(node, other);
    ASSERT_NE(log, nullptr);
    ASSERT_TRUE(log->AppendSync(Request({Product("x", "p", 1)})).ok());
  }
  const std::string other_yaml = WriteJetStreamConfig(scratch, other, scratch.File("other"));
  result = RunMigrate(scratch, {"--from", "rocksdb", "--to", "jetstream", "--source-path", source,
                                "--config", other_yaml});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_THAT(result.err, ::testing::HasSubstr("is not empty")) << result.err;
}

// Credentials: the right password connects, a wrong one is refused with a message that names
// the servers and never the password.
TEST(JetStreamAuthTest, UserAndPassword) {
  NatsCluster nats(NatsCluster::Options{.user = "pimgate", .password = "right-pass-do-not-print"});
  ASSERT_TRUE(nats.started());
  JetStreamConfig config = nats.Config("AUTH");
  config.credentials.emplace();
  config.credentials->user = "pimgate";
  config.credentials->password = Secret{"right-pass-do-not-print", "env:NATS_PASSWORD"};
  TempDir dir;
  absl::StatusOr<std::unique_ptr<LogBackend>> backend = OpenJetStreamBackend(dir.path(), config);
  ASSERT_TRUE(backend.ok()) << backend.status();
  absl::StatusOr<std::unique_ptr<EventLog>> log = EventLog::Open(std::move(*backend), {});
  ASSERT_TRUE(log.ok()) << log.status();
  ASSERT_TRUE((*log)->AppendSync(Request({Product("e1", "p1", 1)})).ok());
  EXPECT_TRUE(CheckJetStreamCluster(config).ok());

  config.credentials->password = Secret{"wrong-pass-do-not-print", "env:NATS_PASSWORD"};
  TempDir dir2;
  backend = OpenJetStreamBackend(dir2.path(), config);
  ASSERT_FALSE(backend.ok());
  const std::string message(backend.status().message());
  EXPECT_THAT(message,
              ::testing::HasSubstr("cannot connect to the NATS servers nats://127.0.0.1:"));
  EXPECT_THAT(message, ::testing::HasSubstr("uthorization"));
  EXPECT_THAT(message, ::testing::Not(::testing::HasSubstr("pass-do-not-print")));
  absl::Status check = CheckJetStreamCluster(config);
  EXPECT_FALSE(check.ok());
  EXPECT_THAT(std::string(check.message()),
              ::testing::Not(::testing::HasSubstr("pass-do-not-print")));
}

// TLS: a client that trusts the servers' CA connects over TLS; one that does not is refused,
// and so is one that does not use TLS with servers that require it.
TEST(JetStreamTlsTest, ServerCertificateIsVerified) {
  TempDir certs;
  const testing::CertFiles server_cert = testing::MakeSelfSignedCert(certs.path());
  TempDir other;
  const testing::CertFiles other_cert = testing::MakeSelfSignedCert(other.path());
  NatsCluster nats(NatsCluster::Options{.tls_cert_file = server_cert.cert_file,
                                        .tls_key_file = server_cert.key_file});
  ASSERT_TRUE(nats.started());
  JetStreamConfig config = nats.Config("TLS");
  config.tls.emplace();
  config.tls->ca_file = server_cert.cert_file;
  TempDir dir;
  absl::StatusOr<std::unique_ptr<LogBackend>> backend = OpenJetStreamBackend(dir.path(), config);
  ASSERT_TRUE(backend.ok()) << backend.status();
  absl::StatusOr<std::unique_ptr<EventLog>> log = EventLog::Open(std::move(*backend), {});
  ASSERT_TRUE(log.ok()) << log.status();
  ASSERT_TRUE((*log)->AppendSync(Request({Product("e1", "p1", 1)})).ok());

  config.tls->ca_file = other_cert.cert_file;  // not the servers' CA
  TempDir dir2;
  backend = OpenJetStreamBackend(dir2.path(), config);
  ASSERT_FALSE(backend.ok());
  EXPECT_THAT(std::string(backend.status().message()),
              ::testing::HasSubstr("cannot connect to the NATS servers"));
  config.tls.reset();  // plain, to servers that require TLS
  backend = OpenJetStreamBackend(dir2.path(), config);
  ASSERT_FALSE(backend.ok());
  EXPECT_THAT(std::string(backend.status().message()),
              ::testing::HasSubstr("cannot connect to the NATS servers"));
}

// Three servers, the stream on all three (R3); one server is killed with SIGKILL while a node
// appends, then restarted. Every append that was acknowledged is in the stream.
TEST(JetStreamClusterTest, EveryAcknowledgedAppendSurvivesAServerKill) {
  NatsCluster cluster(NatsCluster::Options{.servers = 3});
  ASSERT_TRUE(cluster.started());
  JetStreamConfig config = cluster.Config("R3");
  TempDir dir;
  absl::StatusOr<std::unique_ptr<LogBackend>> backend = OpenJetStreamBackend(dir.path(), config);
  ASSERT_TRUE(backend.ok()) << backend.status();
  absl::StatusOr<std::unique_ptr<EventLog>> opened = EventLog::Open(std::move(*backend), {});
  ASSERT_TRUE(opened.ok()) << opened.status();
  std::unique_ptr<EventLog> log = std::move(*opened);

  absl::Mutex mu;
  std::vector<std::string> acknowledged;  // ids of appends answered OK
  int failed = 0;
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    for (int i = 0; !stop.load(); ++i) {
      const std::string id = absl::StrCat("e", i);
      absl::StatusOr<AppendResult> r = log->AppendSync(Request({Product(id, id, 1)}));
      absl::MutexLock lock(&mu);
      if (r.ok()) {
        acknowledged.push_back(id);
      } else {
        ++failed;
      }
    }
  });
  auto acked = [&] {
    absl::MutexLock lock(&mu);
    return acknowledged.size();
  };
  ASSERT_TRUE(::pimgate::testing::WaitFor([&] { return acked() >= 50; }, 120));
  cluster.Kill(1);
  const std::size_t at_kill = acked();
  ASSERT_TRUE(::pimgate::testing::WaitFor([&] { return acked() >= at_kill + 50; }, 120))
      << "no progress with one server of three down";
  cluster.Restart(1);
  ASSERT_TRUE(cluster.WaitForJetStream(1));
  const std::size_t at_restart = acked();
  ASSERT_TRUE(::pimgate::testing::WaitFor([&] { return acked() >= at_restart + 50; }, 120));
  stop = true;
  writer.join();
  log.reset();

  // A new node, built from the stream alone, finds every acknowledged event.
  TempDir fresh;
  backend = OpenJetStreamBackend(fresh.path(), config);
  ASSERT_TRUE(backend.ok()) << backend.status();
  opened = EventLog::Open(std::move(*backend), {});
  ASSERT_TRUE(opened.ok()) << opened.status();
  std::size_t missing = 0;
  for (const std::string& id : acknowledged) {
    absl::StatusOr<std::optional<uint64_t>> sequence = (*opened)->FindEventId("pim", id);
    ASSERT_TRUE(sequence.ok()) << sequence.status();
    if (!sequence->has_value()) ++missing;
  }
  EXPECT_EQ(missing, 0u);
  std::cout << "R3, one server killed and restarted: " << acknowledged.size()
            << " appends acknowledged, " << failed << " failed (in doubt or refused), " << missing
            << " acknowledged missing; stream head " << (*opened)->head() << "\n";
}

// The lease and dead letter buckets are listed with direct gets, answered by any replica: with
// one server of three killed (the lease bucket's stream leader), every listing answers at once.
// A listing through a watch would create an ephemeral consumer, which nats-server 2.9 places on
// a replica of the bucket chosen at random, the dead one included: one listing in three timed
// out then, for as long as the server was down (cluster dispatch could not take a dead node's
// partitions over for minutes).
TEST(JetStreamClusterTest, BucketsAreListedWhileAServerIsDown) {
  NatsCluster cluster(NatsCluster::Options{.servers = 3});
  ASSERT_TRUE(cluster.started());
  JetStreamConfig config = cluster.Config("R3LIST");
  config.cluster.lease_ttl = std::chrono::minutes(5);  // nothing expires during the test
  TempDir dir;
  absl::StatusOr<std::unique_ptr<LogBackend>> backend = OpenJetStreamBackend(dir.path(), config);
  ASSERT_TRUE(backend.ok()) << backend.status();
  absl::StatusOr<std::unique_ptr<LeaseStore>> leases = OpenJetStreamLeaseStore(config);
  ASSERT_TRUE(leases.ok()) << leases.status();
  PluginProgress progress;
  for (uint64_t sequence : {3u, 5u, 12u}) {
    v1::DeadLetter letter;
    letter.set_plugin("crm");
    letter.mutable_event()->set_sequence(sequence);
    progress.dead_letters.push_back(letter);
  }
  ASSERT_TRUE((*backend)->WriteProgress("crm", progress).ok());
  constexpr int kPartitions = 4;
  for (int p = 0; p < kPartitions; ++p) {
    ASSERT_TRUE((*leases)->Create(absl::StrCat("lease.crm.", p), "n1").ok());
  }
  ASSERT_TRUE((*leases)->Create("node.n1", "n1").ok());

  const int leader = cluster.StreamLeader(absl::StrCat("KV_", config.cluster.lease_bucket));
  cluster.Kill(leader >= 0 ? leader : 0);
  // A client that was connected to the killed server moves to another; a request it had sent
  // just before is lost with the connection (its call times out). Once each store answered one
  // listing, they are on live servers.
  ASSERT_TRUE(::pimgate::testing::WaitFor(
      [&] {
        return (*backend)->Health().ok() && (*leases)->Health().ok() &&
               (*leases)->List("lease.").ok() && (*backend)->CountDeadLetters("crm").ok();
      },
      60));
  int failures = 0;
  std::string first_failure;
  constexpr int kListings = 12;
  for (int i = 0; i < kListings; ++i) {
    absl::StatusOr<std::vector<LeaseRecord>> listed = (*leases)->List("lease.");
    absl::StatusOr<uint64_t> letters = (*backend)->CountDeadLetters("crm");
    for (const absl::Status& s : {listed.status(), letters.status()}) {
      if (s.ok()) continue;
      if (failures++ == 0) first_failure = absl::StrCat("listing ", i, ": ", s.ToString());
    }
  }
  EXPECT_EQ(failures, 0) << "of " << 2 * kListings << " listings; the first: " << first_failure;
  // What they list: every record (the two live replicas have everything written before the kill
  // once they caught up with each other).
  std::vector<LeaseRecord> records;
  EXPECT_TRUE(::pimgate::testing::WaitFor(
      [&] {
        absl::StatusOr<std::vector<LeaseRecord>> listed = (*leases)->List("lease.");
        if (listed.ok()) records = *listed;
        return records.size() == kPartitions;
      },
      60))
      << records.size() << " lease records listed";
  for (const LeaseRecord& record : records) {
    EXPECT_EQ(record.value, "n1") << record.key;
    EXPECT_GT(record.revision, 0u) << record.key;
  }
  // The dead-letter bucket may have had the killed server in its quorum too: waited for.
  absl::StatusOr<std::vector<v1::DeadLetter>> letters;
  ASSERT_TRUE(::pimgate::testing::WaitFor(
      [&] {
        letters = (*backend)->ReadDeadLetters("crm", 4, 10);
        return letters.ok() && letters->size() == 2u;
      },
      60))
      << (letters.ok() ? absl::StrCat(letters->size(), " dead letters")
                       : letters.status().ToString());
  EXPECT_EQ((*letters)[0].event().sequence(), 5u);
  EXPECT_EQ((*letters)[1].event().sequence(), 12u);
}

}  // namespace
}  // namespace pimgate
