// Retention over each real store (the embedded RocksDB one, and a JetStream stream of a real
// nats-server with its local replica): events leave only once every plugin is done with them and
// they are old enough, their dedup entries go with them while resource versions stay, dead
// letters and quarantine have their own ages, and disk use stays bounded under constant load.
#include "core/log/retention.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "core/dispatch/dispatcher.h"
#include "core/log/event_log.h"
#include "core/log/jetstream_backend.h"
#include "core/log/rocksdb_backend.h"
#include "google/protobuf/util/time_util.h"
#include "tests/testing/nats_cluster.h"
#include "tests/testing/test_env.h"

namespace pimgate {
namespace {

using google::protobuf::util::TimeUtil;
using testing::TempDir;

// A fixed "now" for the injected clock: ages are measured against it.
const absl::Time kNow = absl::FromUnixSeconds(1'800'000'000);

int64_t MicrosBefore(absl::Duration ago) { return absl::ToUnixMicros(kNow - ago); }

v1::Event MakeEvent(const std::string& id, const std::string& resource, absl::Duration age,
                    absl::Duration version_age = absl::ZeroDuration()) {
  v1::Event event;
  event.set_id(id);
  event.set_source("pim");
  event.set_type("product.updated");
  event.set_kind("product");
  event.set_resource_id(resource);
  *event.mutable_received_at() = TimeUtil::MicrosecondsToTimestamp(MicrosBefore(age));
  *event.mutable_version_at() = TimeUtil::MicrosecondsToTimestamp(
      MicrosBefore(version_age == absl::ZeroDuration() ? age : version_age));
  return event;
}

enum class Backend { kRocksDb, kJetStream };

std::string BackendName(const ::testing::TestParamInfo<Backend>& info) {
  return info.param == Backend::kRocksDb ? "RocksDb" : "JetStream";
}

class RetentionTest : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    if (jetstream()) {
      if (nats_ == nullptr)
        nats_ = std::make_unique<testing::NatsCluster>(testing::NatsCluster::Options{});
      ASSERT_TRUE(nats_->started());
    }
    Open();
  }
  static void TearDownTestSuite() { nats_.reset(); }

  bool jetstream() const { return GetParam() == Backend::kJetStream; }

  void Open(RocksDbBackendOptions options = {}) {
    log_.reset();
    absl::StatusOr<std::unique_ptr<LogBackend>> backend;
    if (jetstream()) {
      // One stream per test, its replica in the test's directory.
      std::string stream = ::testing::UnitTest::GetInstance()->current_test_info()->name();
      for (char& c : stream) {
        if (c == '/') c = '_';
      }
      backend = OpenJetStreamBackend(dir_.File("store"), nats_->Config(stream));
    } else {
      backend = OpenRocksDbBackend(dir_.File("store"), options);
    }
    ASSERT_TRUE(backend.ok()) << backend.status();
    store_ = backend->get();
    EventLogOptions log_options;
    log_options.sync = false;
    auto log = EventLog::Open(std::move(*backend), log_options);
    ASSERT_TRUE(log.ok()) << log.status();
    log_ = std::move(*log);
  }

  AppendResult Append(std::vector<v1::Event> events,
                      std::vector<v1::QuarantineEntry> quarantine = {}) {
    absl::StatusOr<AppendResult> result = log_->AppendSync(
        AppendRequest{.events = std::move(events), .quarantine = std::move(quarantine)});
    EXPECT_TRUE(result.ok()) << result.status();
    return result.ok() ? *result : AppendResult{};
  }

  std::vector<uint64_t> Sequences() {
    absl::StatusOr<std::vector<v1::Event>> events = log_->ReadEvents(0, 100'000);
    EXPECT_TRUE(events.ok()) << events.status();
    std::vector<uint64_t> out;
    if (events.ok()) {
      for (const v1::Event& e : *events) out.push_back(e.sequence());
    }
    return out;
  }

  RetentionOptions Options(absl::Duration retention) {
    RetentionOptions options;
    options.event_retention = retention;
    options.now = [] { return kNow; };
    return options;
  }

  static std::unique_ptr<testing::NatsCluster> nats_;  // for the JetStream runs
  TempDir dir_;
  std::unique_ptr<EventLog> log_;
  // The log's backend, kept by the test to call what only core/log and the dispatcher use: the
  // Trim* calls retention is made of, and the dispatch records (cursors, dead letters) it reads.
  LogBackend* store_ = nullptr;
};

std::unique_ptr<testing::NatsCluster> RetentionTest::nats_;

INSTANTIATE_TEST_SUITE_P(Backends, RetentionTest,
                         ::testing::Values(Backend::kRocksDb, Backend::kJetStream), BackendName);

TEST_P(RetentionTest, TrimEventsStopsAtCursorThenAtFirstEventTooNew) {
  // Ten events received 10 s .. 1 s ago: sequence i was received (11 - i) s ago.
  std::vector<v1::Event> events;
  for (int i = 1; i <= 10; ++i) {
    events.push_back(MakeEvent(absl::StrCat("e", i), absl::StrCat("r", i), absl::Seconds(11 - i)));
  }
  ASSERT_EQ(Append(std::move(events)).accepted, 10u);

  // Older than 3.5 s means sequences 1..7, but the cursor allows 1..5 only.
  absl::StatusOr<uint64_t> n = store_->TrimEvents(5, MicrosBefore(absl::Milliseconds(3500)), 100);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 5u);
  EXPECT_EQ(Sequences(), (std::vector<uint64_t>{6, 7, 8, 9, 10}));

  // With every plugin done, age decides: 6 and 7 go, 8 (received 3 s ago) stays.
  n = store_->TrimEvents(10, MicrosBefore(absl::Milliseconds(3500)), 100);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 2u);
  EXPECT_EQ(Sequences(), (std::vector<uint64_t>{8, 9, 10}));

  // max_events bounds one call.
  n = store_->TrimEvents(10, MicrosBefore(absl::ZeroDuration()) + 1, 2);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 2u);
  EXPECT_EQ(Sequences(), (std::vector<uint64_t>{10}));
}

TEST_P(RetentionTest, TrimStopsAtFirstTooNewEventEvenIfOlderOnesFollow) {
  // Sequence 2 is new, 3 is old (a slow request committed late): trimming never skips ahead,
  // so the log stays a contiguous range of sequences.
  Append({MakeEvent("a", "r1", absl::Hours(2)), MakeEvent("b", "r2", absl::Seconds(1)),
          MakeEvent("c", "r3", absl::Hours(2))});
  absl::StatusOr<uint64_t> n = store_->TrimEvents(100, MicrosBefore(absl::Hours(1)), 100);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 1u);
  EXPECT_EQ(Sequences(), (std::vector<uint64_t>{2, 3}));
}

TEST_P(RetentionTest, RetentionTaskTakesTheLowestCursorAndTheInjectedClock) {
  std::vector<v1::Event> events;
  for (int i = 1; i <= 6; ++i) {
    events.push_back(MakeEvent(absl::StrCat("e", i), absl::StrCat("r", i), absl::Hours(10)));
  }
  Append(std::move(events));
  // Two plugins: one done up to 5, one up to 3.
  ASSERT_TRUE(store_->WriteProgress("fast", PluginProgress{5, {}}).ok());
  ASSERT_TRUE(store_->WriteProgress("slow", PluginProgress{3, {}}).ok());
  RetentionTask task(log_.get(), PluginsMinCursor({"fast", "slow"}, log_.get(), nullptr),
                     Options(absl::Hours(1)));
  absl::StatusOr<RetentionPass> pass = task.RunOnce();
  ASSERT_TRUE(pass.ok()) << pass.status();
  EXPECT_EQ(pass->events, 3u);
  EXPECT_EQ(Sequences(), (std::vector<uint64_t>{4, 5, 6}));

  // A plugin without a cursor yet (a new one) holds everything back.
  RetentionTask with_new_plugin(log_.get(),
                                PluginsMinCursor({"fast", "slow", "new"}, log_.get(), nullptr),
                                Options(absl::Hours(1)));
  ASSERT_TRUE(store_->WriteProgress("slow", PluginProgress{6, {}}).ok());
  pass = with_new_plugin.RunOnce();
  ASSERT_TRUE(pass.ok()) << pass.status();
  EXPECT_EQ(pass->events, 0u);

  // Events younger than the retention stay even when every plugin is done.
  RetentionTask long_retention(log_.get(), PluginsMinCursor({"fast", "slow"}, log_.get(), nullptr),
                               Options(absl::Hours(11)));
  pass = long_retention.RunOnce();
  ASSERT_TRUE(pass.ok()) << pass.status();
  EXPECT_EQ(pass->events, 0u);
  EXPECT_EQ(Sequences(), (std::vector<uint64_t>{4, 5, 6}));
  EXPECT_EQ(long_retention.stats().runs, 1u);
  EXPECT_EQ(task.stats().events_trimmed, 3u);
}

TEST_P(RetentionTest, WithoutPluginsAgeAloneDecides) {
  Append({MakeEvent("old", "r1", absl::Hours(3)), MakeEvent("new", "r2", absl::Minutes(1))});
  ASSERT_EQ(PluginsMinCursor({}, log_.get(), nullptr)().value(), std::nullopt);
  RetentionTask task(log_.get(), PluginsMinCursor({}, log_.get(), nullptr),
                     Options(absl::Hours(1)));
  absl::StatusOr<RetentionPass> pass = task.RunOnce();
  ASSERT_TRUE(pass.ok()) << pass.status();
  EXPECT_EQ(pass->events, 1u);
  EXPECT_EQ(Sequences(), (std::vector<uint64_t>{2}));
}

TEST_P(RetentionTest, CursorErrorKeepsEventsButStillTrimsDeadLetters) {
  Append({MakeEvent("old", "r1", absl::Hours(3))});
  v1::DeadLetter letter;
  letter.set_plugin("p");
  *letter.mutable_event() = MakeEvent("old", "r1", absl::Hours(3));
  letter.mutable_event()->set_sequence(1);
  *letter.mutable_dead_at() = TimeUtil::MicrosecondsToTimestamp(MicrosBefore(absl::Hours(24 * 40)));
  ASSERT_TRUE(store_->WriteProgress("p", PluginProgress{std::nullopt, {letter}}).ok());

  RetentionTask task(
      log_.get(),
      []() -> absl::StatusOr<std::optional<uint64_t>> {
        return absl::UnavailableError("cursor store down");
      },
      Options(absl::Hours(1)));
  absl::StatusOr<RetentionPass> pass = task.RunOnce();
  EXPECT_FALSE(pass.ok());
  EXPECT_NE(pass.status().message().find("cursor store down"), absl::string_view::npos);
  EXPECT_EQ(Sequences(), (std::vector<uint64_t>{1}));
  EXPECT_TRUE(store_->ReadDeadLetters("p", 0, 10)->empty());
  EXPECT_EQ(task.stats().failures, 1u);
  EXPECT_EQ(task.stats().dead_letters_trimmed, 1u);
}

TEST_P(RetentionTest, DedupEntriesLeaveWithTheirEvents) {
  Append({MakeEvent("resent", "r1", absl::Hours(3)), MakeEvent("kept", "r2", absl::Minutes(1))});
  // Within the window both ids are duplicates.
  AppendResult again = Append(
      {MakeEvent("resent", "r1", absl::Hours(3)), MakeEvent("kept", "r2", absl::Minutes(1))});
  EXPECT_EQ(again.duplicates, 2u);
  EXPECT_TRUE(log_->FindEventId("pim", "resent")->has_value());

  absl::StatusOr<uint64_t> n = store_->TrimEvents(100, MicrosBefore(absl::Hours(1)), 100);
  ASSERT_TRUE(n.ok()) << n.status();
  ASSERT_EQ(*n, 1u);
  EXPECT_FALSE(log_->FindEventId("pim", "resent")->has_value());
  EXPECT_TRUE(log_->FindEventId("pim", "kept")->has_value());

  // After the retention, a re-sent old id is a new event; the younger one is still known.
  AppendResult after = Append(
      {MakeEvent("resent", "r1", absl::Seconds(1)), MakeEvent("kept", "r2", absl::Seconds(1))});
  EXPECT_EQ(after.accepted, 1u);
  EXPECT_EQ(after.duplicates, 1u);
  EXPECT_EQ(after.first_sequence, 3u);
  // The new entry belongs to the new event, and a later trim of it removes that one.
  EXPECT_EQ(log_->FindEventId("pim", "resent").value(), std::optional<uint64_t>(3));
}

TEST_P(RetentionTest, ResourceVersionsOutliveTheirEvents) {
  // The newest version of r1 (version 2 h ago) arrives, then leaves the log.
  Append({MakeEvent("v2", "r1", absl::Hours(3), absl::Hours(2))});
  ASSERT_EQ(store_->TrimEvents(100, MicrosBefore(absl::Hours(1)), 100).value(), 1u);
  EXPECT_TRUE(Sequences().empty());
  EXPECT_TRUE(log_->FindVersion(ResourceKey{"pim", "product", "r1"})->has_value());
  // An older version arriving late is still recognised as stale.
  AppendResult late = Append({MakeEvent("v1", "r1", absl::Minutes(1), absl::Hours(5))});
  EXPECT_EQ(late.accepted, 1u);
  EXPECT_EQ(late.stale, 1u);
}

TEST_P(RetentionTest, SequencesContinueAfterEverythingWasTrimmedAndTheStoreReopened) {
  Append({MakeEvent("a", "r1", absl::Hours(3)), MakeEvent("b", "r2", absl::Hours(3))});
  ASSERT_EQ(store_->TrimEvents(100, MicrosBefore(absl::Hours(1)), 100).value(), 2u);
  Open();
  EXPECT_EQ(log_->head(), 2u);
  EXPECT_EQ(Append({MakeEvent("c", "r3", absl::Seconds(1))}).first_sequence, 3u);
}

TEST_P(RetentionTest, DeadLettersHaveTheirOwnRetention) {
  const auto letter = [](const std::string& plugin, uint64_t sequence, absl::Duration age) {
    v1::DeadLetter l;
    l.set_plugin(plugin);
    *l.mutable_event() = MakeEvent(absl::StrCat("id", sequence), "r", absl::Hours(1));
    l.mutable_event()->set_sequence(sequence);
    *l.mutable_dead_at() = TimeUtil::MicrosecondsToTimestamp(MicrosBefore(age));
    return l;
  };
  ASSERT_TRUE(store_
                  ->WriteProgress("a", PluginProgress{std::nullopt,
                                                      {letter("a", 1, absl::Hours(24 * 31)),
                                                       letter("a", 2, absl::Hours(24 * 29)),
                                                       letter("a", 3, absl::Hours(24 * 40))}})
                  .ok());
  ASSERT_TRUE(
      store_
          ->WriteProgress("b", PluginProgress{std::nullopt, {letter("b", 1, absl::Hours(24 * 35))}})
          .ok());
  RetentionOptions options = Options(absl::Hours(1));
  options.dead_letter_retention = absl::Hours(24 * 30);
  RetentionTask task(log_.get(), PluginsMinCursor({}, log_.get(), nullptr), options);
  absl::StatusOr<RetentionPass> pass = task.RunOnce();
  ASSERT_TRUE(pass.ok()) << pass.status();
  EXPECT_EQ(pass->dead_letters, 3u);
  std::vector<v1::DeadLetter> left = store_->ReadDeadLetters("a", 0, 10).value();
  ASSERT_EQ(left.size(), 1u);
  EXPECT_EQ(left[0].event().sequence(), 2u);
  EXPECT_TRUE(store_->ReadDeadLetters("b", 0, 10)->empty());
}

// The count of a plugin's dead letters (Admin.GetStats asks it every time, for every plugin) is
// kept in memory once the store was counted: writes, rewrites, deletions and retention's trims
// all move it by what they really change, and a reopened store is counted again.
TEST_P(RetentionTest, DeadLetterCountsFollowWritesDeletionsAndTrims) {
  const auto letter = [](const std::string& plugin, uint64_t sequence, absl::Duration age) {
    v1::DeadLetter l;
    l.set_plugin(plugin);
    *l.mutable_event() = MakeEvent(absl::StrCat("id", sequence), "r", absl::Hours(1));
    l.mutable_event()->set_sequence(sequence);
    *l.mutable_dead_at() = TimeUtil::MicrosecondsToTimestamp(MicrosBefore(age));
    return l;
  };
  const auto count = [this](const std::string& plugin) {
    absl::StatusOr<uint64_t> n = log_->CountDeadLetters(plugin);
    EXPECT_TRUE(n.ok()) << n.status();
    return n.ok() ? *n : ~uint64_t{0};
  };
  const absl::Duration old_age = absl::Hours(24 * 40);
  const absl::Duration young_age = absl::Hours(24 * 2);
  // Stored before anything was counted: counted from the store.
  ASSERT_TRUE(log_->WriteProgress(
                      "a", PluginProgress{std::nullopt,
                                          {letter("a", 1, young_age), letter("a", 2, young_age)}})
                  .ok());
  EXPECT_EQ(count("a"), 2u);
  EXPECT_EQ(count("ab"), 0u);  // a plugin whose name starts like another's has its own count
  // A letter written again (the event failed again after a retry) replaces the stored one; one
  // sequence twice in a write is one letter; a cursor alone changes no count.
  ASSERT_TRUE(
      log_->WriteProgress("a", PluginProgress{std::nullopt,
                                              {letter("a", 2, young_age), letter("a", 3, old_age),
                                               letter("a", 3, old_age)}})
          .ok());
  ASSERT_TRUE(log_->WriteProgress("a", PluginProgress{7, {}}).ok());
  EXPECT_EQ(count("a"), 3u);
  ASSERT_TRUE(
      log_->WriteProgress("ab", PluginProgress{std::nullopt, {letter("ab", 1, old_age)}}).ok());
  EXPECT_EQ(count("ab"), 1u);
  EXPECT_EQ(count("a"), 3u);
  // Deleting a letter that is not there changes nothing; one listed twice goes once.
  ASSERT_TRUE(log_->DeleteDeadLetters("a", {1, 1, 9}).ok());
  EXPECT_EQ(count("a"), 2u);
  ASSERT_EQ(log_->ReadDeadLetters("a", 0, 10)->size(), 2u);
  // Retention removes the old letters of both plugins.
  RetentionOptions options = Options(absl::Hours(1));
  options.dead_letter_retention = absl::Hours(24 * 30);
  RetentionTask task(log_.get(), PluginsMinCursor({}, log_.get(), nullptr), options);
  absl::StatusOr<RetentionPass> pass = task.RunOnce();
  ASSERT_TRUE(pass.ok()) << pass.status();
  EXPECT_EQ(pass->dead_letters, 2u);
  EXPECT_EQ(count("a"), 1u);
  EXPECT_EQ(count("ab"), 0u);
  // Letters written after the trim count; the reopened store is counted afresh, alike.
  ASSERT_TRUE(
      log_->WriteProgress("ab", PluginProgress{std::nullopt, {letter("ab", 4, young_age)}}).ok());
  EXPECT_EQ(count("ab"), 1u);
  Open();
  EXPECT_EQ(count("a"), 1u);
  EXPECT_EQ(count("ab"), 1u);
  EXPECT_EQ(log_->ReadDeadLetters("a", 0, 10)->front().event().sequence(), 2u);
}

TEST_P(RetentionTest, QuarantineHasItsOwnRetention) {
  const auto entry = [](absl::Duration age) {
    v1::QuarantineEntry e;
    e.set_source("pim");
    e.set_reason("bad element");
    e.set_raw("{\"x\":1}");
    *e.mutable_received_at() = TimeUtil::MicrosecondsToTimestamp(MicrosBefore(age));
    return e;
  };
  Append({}, {entry(absl::Hours(24 * 40)), entry(absl::Hours(24 * 31))});
  Append({}, {entry(absl::Hours(24 * 2))});
  RetentionOptions options = Options(absl::Hours(1));
  options.quarantine_retention = absl::Hours(24 * 30);
  RetentionTask task(log_.get(), PluginsMinCursor({}, log_.get(), nullptr), options);
  absl::StatusOr<RetentionPass> pass = task.RunOnce();
  ASSERT_TRUE(pass.ok()) << pass.status();
  EXPECT_EQ(pass->quarantine, 2u);
  std::vector<v1::QuarantineEntry> left = log_->ReadQuarantine(0, 10).value();
  ASSERT_EQ(left.size(), 1u);
  EXPECT_EQ(left[0].id(), 3u);
}

TEST_P(RetentionTest, LargeBacklogIsTrimmedInBatchesWithinOnePass) {
  std::vector<v1::Event> events;
  for (int i = 0; i < 2'500; ++i) {
    events.push_back(MakeEvent(absl::StrCat("e", i), absl::StrCat("r", i), absl::Hours(2)));
  }
  Append(std::move(events));
  RetentionOptions options = Options(absl::Hours(1));
  options.batch = 300;
  RetentionTask task(log_.get(), PluginsMinCursor({}, log_.get(), nullptr), options);
  EXPECT_EQ(task.RunOnce().value().events, 2'500u);
  EXPECT_TRUE(Sequences().empty());
}

// Passes follow appends: with an interval far beyond the test, every pass is started by the
// append listener once trigger_events were appended since the previous pass began.
TEST_P(RetentionTest, AppendsTriggerPassesWithoutWaitingForTheInterval) {
  RetentionOptions options;
  options.event_retention = absl::Hours(1);
  options.interval = absl::Hours(24);
  options.trigger_events = 10;
  options.now = [] { return kNow; };
  RetentionTask task(
      log_.get(), []() -> absl::StatusOr<std::optional<uint64_t>> { return std::nullopt; },
      options);
  log_->AddAppendListener(task.AppendListener());
  task.Start();

  std::vector<v1::Event> old;
  for (int i = 0; i < 9; ++i)
    old.push_back(MakeEvent(absl::StrCat("old-", i), "r", absl::Hours(2)));
  Append(std::move(old));                             // 9 events: below the trigger
  Append({MakeEvent("old-9", "r", absl::Hours(2))});  // the 10th triggers a pass
  for (int i = 0; i < 2000 && task.stats().runs == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(task.stats().runs, 1u) << "10 appended events did not trigger a pass";
  EXPECT_EQ(task.stats().events_trimmed, 10u);
  EXPECT_TRUE(Sequences().empty());

  // A listener outlives the task safely (the log may be destroyed after it).
  const std::function<void(uint64_t)> listener = task.AppendListener();
  task.Stop();
  listener(1'000'000);
}

// Disk use stays bounded under constant load, by design rather than by the machine's pace. The
// clock is the load itself: each request is 1 ms after the previous one, so "older than the
// retention" means "appended more than kRetainedRequests requests ago" on a fast machine and a
// slow one alike. Passes are started by appends only (the interval is out of reach), and the
// writer, like a sender that cannot outrun retention, waits whenever the log holds more than
// kMaxInLog events. That cap cannot deadlock: a pass that began at request K leaves requests
// K - kRetainedRequests .. K plus what was appended since, and the next pass triggers before
// kTriggerEvents more were appended, so the log reaches kMaxInLog only while a pass is pending
// or running. What the disk holds is then bounded: at most kMaxInLog live events, trimmed
// events not reclaimed yet (the backend compacts every 8 MiB trimmed), the WAL (bounded at 4
// write buffers) and the dedup index. The test appends several times the bound in total, so
// the space of what retention removes must really come back.
// Tests that measure RocksDB's own space reclaim: on the RocksDB backend only (not skipped on
// JetStream: not instantiated there).
class RocksDbRetentionTest : public RetentionTest {};
INSTANTIATE_TEST_SUITE_P(Backends, RocksDbRetentionTest, ::testing::Values(Backend::kRocksDb),
                         BackendName);

TEST_P(RocksDbRetentionTest, DiskUseStaysBoundedUnderConstantLoad) {
  RocksDbBackendOptions small;
  small.write_buffer_bytes = 1 << 20;  // flushes (and so reclaimable table files) come quickly
  Open(small);

  constexpr int kEventsPerRequest = 50;
  constexpr std::size_t kPayloadBytes = 1'000;  // random hex: incompressible
  constexpr int64_t kRetainedRequests = 100;    // the retention, in requests (1 ms each)
  constexpr uint64_t kTriggerEvents = 2'000;
  constexpr uint64_t kMaxInLog =
      (kRetainedRequests + 1) * kEventsPerRequest + kTriggerEvents + kEventsPerRequest;
  constexpr uint64_t kBoundBytes = 64ull << 20;
  constexpr uint64_t kAppendBytes = 3 * kBoundBytes;  // payload appended in total
  constexpr int kSampleEveryRequests = 20;            // disk sampled every ~1 MiB appended
  // Hang guard only (one pass trims at most kMaxInLog events): a pass that never comes is a
  // bug to report, not a slow machine.
  constexpr auto kNoProgressLimit = std::chrono::seconds(120);

  std::atomic<int64_t> clock_ms{0};
  RetentionOptions options;
  options.event_retention = absl::Milliseconds(kRetainedRequests);
  options.interval = absl::Hours(24);
  options.trigger_events = kTriggerEvents;
  options.now = [&clock_ms] { return absl::UnixEpoch() + absl::Milliseconds(clock_ms.load()); };
  EventLog* log = log_.get();
  // One plugin that keeps up: its cursor is the head.
  RetentionTask task(
      log_.get(), [log]() -> absl::StatusOr<std::optional<uint64_t>> { return log->head(); },
      options);
  log->AddAppendListener(task.AppendListener());
  task.Start();

  std::mt19937_64 random(42);
  const auto payload = [&random] {
    std::string hex;
    hex.reserve(kPayloadBytes);
    static constexpr char kDigits[] = "0123456789abcdef";
    while (hex.size() < kPayloadBytes) hex.push_back(kDigits[random() & 15]);
    return hex;
  };
  const auto in_log = [&]() -> uint64_t {
    const std::optional<v1::Event> oldest = log_->OldestEvent().value();
    return oldest ? log->head() - oldest->sequence() + 1 : 0;
  };

  uint64_t appended = 0;
  uint64_t max_disk = 0;
  uint64_t max_events = 0;
  uint64_t waits = 0;
  int requests = 0;
  int id = 0;
  while (appended * kPayloadBytes < kAppendBytes) {
    const int64_t now_ms = clock_ms.fetch_add(1) + 1;
    std::vector<v1::Event> events;
    for (int i = 0; i < kEventsPerRequest; ++i, ++id) {
      v1::Event event;
      event.set_id(absl::StrCat("load-", id));
      event.set_source("pim");
      event.set_type("product.updated");
      event.set_kind("product");
      event.set_resource_id(absl::StrCat("r", id % 1000));
      *event.mutable_received_at() = TimeUtil::MillisecondsToTimestamp(now_ms);
      (*event.mutable_data()->mutable_fields())["blob"].set_string_value(payload());
      events.push_back(std::move(event));
    }
    ASSERT_EQ(Append(std::move(events)).accepted, static_cast<uint32_t>(kEventsPerRequest));
    appended += kEventsPerRequest;
    ++requests;
    max_events = std::max(max_events, in_log());
    const auto wait_start = std::chrono::steady_clock::now();
    while (in_log() > kMaxInLog) {
      ++waits;
      ASSERT_LT(std::chrono::steady_clock::now() - wait_start, kNoProgressLimit)
          << "retention made no progress: " << in_log() << " events in the log, "
          << task.stats().runs << " passes";
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    if (requests % kSampleEveryRequests == 0) {
      const uint64_t disk = log_->DiskBytes();
      max_disk = std::max(max_disk, disk);
      if (requests % (kSampleEveryRequests * 32) == 0) {
        std::printf("[ retention ] appended=%8llu (%6.1f MiB) in_log=%6llu disk=%6.1f MiB\n",
                    static_cast<unsigned long long>(appended), appended * kPayloadBytes / 1048576.0,
                    static_cast<unsigned long long>(in_log()), disk / 1048576.0);
      }
    }
  }
  max_disk = std::max(max_disk, log_->DiskBytes());
  task.Stop();
  const RetentionStats stats = task.stats();
  std::printf(
      "[ retention ] passes=%llu trimmed=%llu of %llu; max disk %.1f MiB (bound %.0f), max %llu "
      "events in the log (cap %llu), writer waited %llu ms\n",
      static_cast<unsigned long long>(stats.runs),
      static_cast<unsigned long long>(stats.events_trimmed),
      static_cast<unsigned long long>(appended), max_disk / 1048576.0, kBoundBytes / 1048576.0,
      static_cast<unsigned long long>(max_events), static_cast<unsigned long long>(kMaxInLog),
      static_cast<unsigned long long>(waits));

  // Every pass was started by appends (the interval is a day), and together they removed all
  // but what the cap lets the log hold.
  EXPECT_GE(stats.runs, (appended - kMaxInLog) / (kMaxInLog + kEventsPerRequest));
  EXPECT_GE(stats.events_trimmed, appended - kMaxInLog);
  EXPECT_LT(max_disk, kBoundBytes) << "disk use grew beyond the bound";
}

}  // namespace
}  // namespace pimgate
