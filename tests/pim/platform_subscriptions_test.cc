// PlatformSubscriptions over a real RocksDB store: states follow notifications in timestamp
// order, survive a reopen, drive the resumed action on the object's own thread, and render as
// the pimgate_platform_subscription_state state set.
#include "pim/platform_subscriptions.h"

#include <gtest/gtest.h>

#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/log/event_log.h"
#include "metrics/metrics.h"
#include "metrics/metrics_collectors.h"
#include "tests/testing/test_env.h"

namespace pimgate {
namespace {

using testing::TempDir;

const absl::Time kT0 = absl::FromUnixSeconds(1'777'466'096);  // 2026-04-29T12:34:56Z

SubscriptionNotice Notice(const std::string& type, const std::string& subscription, absl::Time at,
                          const std::string& source = "platform") {
  SubscriptionNotice notice;
  notice.source = source;
  notice.subscription_id = subscription;
  notice.notification_type = type;
  notice.changed_at = at;
  notice.reason = "Success rate dropped below 90%";
  notice.subscriber_id = "subscriber-1";
  return notice;
}

// The resumed actions run so far, and a way to wait for them.
struct Resumes {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::pair<std::string, std::string>> calls;
  std::vector<std::thread::id> threads;

  PlatformSubscriptions::ResumedAction Action() {
    return [this](const std::string& source, const std::string& subscription) {
      std::lock_guard lock(mu);
      calls.emplace_back(source, subscription);
      threads.push_back(std::this_thread::get_id());
      cv.notify_all();
    };
  }
  bool WaitFor(std::size_t n) {
    std::unique_lock lock(mu);
    return cv.wait_for(lock, std::chrono::seconds(30), [&] { return calls.size() >= n; });
  }
};

TEST(SubscriptionStateTest, DocumentedTypes) {
  EXPECT_EQ(StateAfter("subscription.suspended.system"), SubscriptionState::kSuspended);
  EXPECT_EQ(StateAfter("subscription.suspended.user"), SubscriptionState::kSuspended);
  EXPECT_EQ(StateAfter("subscription.revoked"), SubscriptionState::kRevoked);
  EXPECT_EQ(StateAfter("subscription.resumed"), SubscriptionState::kActive);
  EXPECT_EQ(StateAfter("subscription.renamed"), std::nullopt);
  EXPECT_EQ(SubscriptionStateName(SubscriptionState::kActive), "active");
  EXPECT_EQ(SubscriptionStateName(SubscriptionState::kSuspended), "suspended");
  EXPECT_EQ(SubscriptionStateName(SubscriptionState::kRevoked), "revoked");
}

TEST(PlatformSubscriptionsTest, StatesFollowNotificationsInTimestampOrder) {
  auto subscriptions = PlatformSubscriptions::Open({});
  ASSERT_TRUE(subscriptions.ok()) << subscriptions.status();
  PlatformSubscriptions& s = **subscriptions;
  EXPECT_TRUE(s.Record(Notice("subscription.suspended.system", "sub-1", kT0)));
  EXPECT_TRUE(s.Record(Notice("subscription.revoked", "sub-2", kT0)));
  ASSERT_EQ(s.Snapshot().size(), 2u);
  EXPECT_EQ(s.Snapshot()[0].state, SubscriptionState::kSuspended);
  EXPECT_EQ(s.Snapshot()[0].reason, "Success rate dropped below 90%");
  EXPECT_EQ(s.Snapshot()[1].state, SubscriptionState::kRevoked);

  // A notification older than the recorded one does not change it.
  EXPECT_FALSE(s.Record(Notice("subscription.resumed", "sub-1", kT0 - absl::Seconds(1))));
  EXPECT_EQ(s.Snapshot()[0].state, SubscriptionState::kSuspended);
  // A later one does; an equal one too (the later call wins).
  EXPECT_TRUE(s.Record(Notice("subscription.resumed", "sub-1", kT0 + absl::Seconds(1))));
  EXPECT_EQ(s.Snapshot()[0].state, SubscriptionState::kActive);
  EXPECT_TRUE(s.Record(Notice("subscription.suspended.user", "sub-1", kT0 + absl::Seconds(1))));
  EXPECT_EQ(s.Snapshot()[0].state, SubscriptionState::kSuspended);
  EXPECT_EQ(s.Snapshot()[0].notification_type, "subscription.suspended.user");
  // Unknown types change nothing.
  EXPECT_FALSE(s.Record(Notice("subscription.renamed", "sub-1", kT0 + absl::Hours(1))));
  EXPECT_EQ(s.Snapshot()[0].state, SubscriptionState::kSuspended);
  // The same subscription id under another source is another subscription.
  EXPECT_TRUE(s.Record(Notice("subscription.resumed", "sub-1", kT0, "catalog")));
  EXPECT_EQ(s.Snapshot().size(), 3u);
}

TEST(PlatformSubscriptionsTest, TrackedSubscriptionsAreBounded) {
  PlatformSubscriptions::Options options;
  options.max_subscriptions = 2;
  auto subscriptions = PlatformSubscriptions::Open(std::move(options));
  ASSERT_TRUE(subscriptions.ok());
  EXPECT_TRUE((*subscriptions)->Record(Notice("subscription.revoked", "a", kT0)));
  EXPECT_TRUE((*subscriptions)->Record(Notice("subscription.revoked", "b", kT0)));
  EXPECT_FALSE((*subscriptions)->Record(Notice("subscription.revoked", "c", kT0)));
  // Known ones still change.
  EXPECT_TRUE((*subscriptions)->Record(Notice("subscription.resumed", "a", kT0)));
  EXPECT_EQ((*subscriptions)->Snapshot().size(), 2u);
}

TEST(PlatformSubscriptionsTest, StatesSurviveAReopen) {
  TempDir dir;
  {
    auto log = EventLog::Open(testing::StoreAt(dir.File("store")));
    ASSERT_TRUE(log.ok()) << log.status();
    PlatformSubscriptions::Options options;
    options.log = log->get();
    auto subscriptions = PlatformSubscriptions::Open(std::move(options));
    ASSERT_TRUE(subscriptions.ok()) << subscriptions.status();
    (*subscriptions)->Start();
    (*subscriptions)->Record(Notice("subscription.suspended.system", "sub-1", kT0));
    (*subscriptions)->Record(Notice("subscription.revoked", "sub-2", kT0 + absl::Milliseconds(5)));
    (*subscriptions)->Stop();  // saves what is pending
  }
  auto log = EventLog::Open(testing::StoreAt(dir.File("store")));
  ASSERT_TRUE(log.ok()) << log.status();
  PlatformSubscriptions::Options options;
  options.log = log->get();
  auto reopened = PlatformSubscriptions::Open(std::move(options));
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  const std::vector<SubscriptionStatus> states = (*reopened)->Snapshot();
  ASSERT_EQ(states.size(), 2u);
  EXPECT_EQ(states[0].subscription_id, "sub-1");
  EXPECT_EQ(states[0].state, SubscriptionState::kSuspended);
  EXPECT_EQ(states[0].changed_at, kT0);
  EXPECT_EQ(states[0].reason, "Success rate dropped below 90%");
  EXPECT_EQ(states[0].subscriber_id, "subscriber-1");
  EXPECT_EQ(states[1].state, SubscriptionState::kRevoked);
  EXPECT_EQ(states[1].changed_at, kT0 + absl::Milliseconds(5));
  // Ordering still holds against the restored timestamps.
  EXPECT_FALSE((*reopened)->Record(Notice("subscription.resumed", "sub-1", kT0 - absl::Hours(1))));
}

TEST(PlatformSubscriptionsTest, UnreadableSavedStatesAreSkipped) {
  TempDir dir;
  auto log = EventLog::Open(testing::StoreAt(dir.File("store")));
  ASSERT_TRUE(log.ok()) << log.status();
  ASSERT_TRUE((*log)->PutMeta(PlatformSubscriptions::kMetaKey, "\xff\xff not a proto").ok());
  PlatformSubscriptions::Options options;
  options.log = log->get();
  auto subscriptions = PlatformSubscriptions::Open(std::move(options));
  ASSERT_TRUE(subscriptions.ok()) << subscriptions.status();
  EXPECT_TRUE((*subscriptions)->Snapshot().empty());
}

TEST(PlatformSubscriptionsTest, ResumedRunsTheActionOnItsOwnThread) {
  Resumes resumes;
  PlatformSubscriptions::Options options;
  options.on_resumed = resumes.Action();
  auto subscriptions = PlatformSubscriptions::Open(std::move(options));
  ASSERT_TRUE(subscriptions.ok());
  (*subscriptions)->Start();
  (*subscriptions)->Record(Notice("subscription.suspended.system", "sub-1", kT0));
  (*subscriptions)->Record(Notice("subscription.resumed", "sub-1", kT0 + absl::Seconds(1)));
  ASSERT_TRUE(resumes.WaitFor(1));
  // Then another source's subscription resumes: its own action. Suspensions run nothing: the
  // count stays at one per resume (positive control: the second resume is seen).
  (*subscriptions)->Record(Notice("subscription.revoked", "sub-9", kT0, "catalog"));
  (*subscriptions)->Record(Notice("subscription.resumed", "sub-2", kT0, "catalog"));
  ASSERT_TRUE(resumes.WaitFor(2));
  (*subscriptions)->Stop();
  std::lock_guard lock(resumes.mu);
  ASSERT_EQ(resumes.calls.size(), 2u);
  EXPECT_EQ(resumes.calls[0], (std::pair<std::string, std::string>{"platform", "sub-1"}));
  EXPECT_EQ(resumes.calls[1], (std::pair<std::string, std::string>{"catalog", "sub-2"}));
  EXPECT_NE(resumes.threads[0], std::this_thread::get_id());
}

TEST(PlatformSubscriptionsTest, ResumesOfOneSourceQueuedDuringAnActionAreCoalesced) {
  std::mutex mu;
  std::condition_variable cv;
  bool release = false;
  int started = 0;
  std::vector<std::string> subscriptions_seen;
  PlatformSubscriptions::Options options;
  options.on_resumed = [&](const std::string&, const std::string& subscription) {
    std::unique_lock lock(mu);
    ++started;
    subscriptions_seen.push_back(subscription);
    cv.notify_all();
    cv.wait(lock, [&] { return release; });
  };
  auto subscriptions = PlatformSubscriptions::Open(std::move(options));
  ASSERT_TRUE(subscriptions.ok());
  (*subscriptions)->Start();
  (*subscriptions)->Record(Notice("subscription.resumed", "sub-1", kT0));
  {
    std::unique_lock lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(30), [&] { return started == 1; }));
  }
  // While the first action runs, two more subscriptions of the source resume: one more action.
  (*subscriptions)->Record(Notice("subscription.resumed", "sub-2", kT0));
  (*subscriptions)->Record(Notice("subscription.resumed", "sub-3", kT0));
  {
    std::lock_guard lock(mu);
    release = true;
    cv.notify_all();
  }
  {
    std::unique_lock lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(30), [&] { return started == 2; }));
  }
  (*subscriptions)->Stop();
  EXPECT_EQ(started, 2);
  EXPECT_EQ(subscriptions_seen.back(), "sub-3");
}

TEST(PlatformSubscriptionsTest, MetricIsAStateSet) {
  auto subscriptions = PlatformSubscriptions::Open({});
  ASSERT_TRUE(subscriptions.ok());
  (*subscriptions)->Record(Notice("subscription.suspended.system", "sub-1", kT0));
  MetricsRegistry registry;
  RegisterPlatformSubscriptionMetrics(registry, subscriptions->get());
  const std::string text = registry.Render();
  EXPECT_NE(text.find("# TYPE pimgate_platform_subscription_state gauge"), std::string::npos);
  EXPECT_NE(text.find(R"(pimgate_platform_subscription_state{source="platform",)"
                      R"(subscription="sub-1",state="suspended"} 1)"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find(R"(pimgate_platform_subscription_state{source="platform",)"
                      R"(subscription="sub-1",state="active"} 0)"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find(R"(pimgate_platform_subscription_state{source="platform",)"
                      R"(subscription="sub-1",state="revoked"} 0)"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find(R"(pimgate_platform_subscription_state_changed_timestamp_seconds{)"
                      R"(source="platform",subscription="sub-1"} 1777466096)"),
            std::string::npos)
      << text;
}

}  // namespace
}  // namespace pimgate

namespace pimgate {
namespace {

PlatformSubscriptions::Observation Seen(const std::string& subscription, SubscriptionState state,
                                        absl::Time at, bool by_user = false,
                                        const std::string& source = "platform") {
  PlatformSubscriptions::Observation observation;
  observation.source = source;
  observation.subscription_id = subscription;
  observation.subscriber_id = "subscriber-1";
  observation.state = state;
  observation.by_user = by_user;
  observation.at = at;
  observation.reason = "read from the Event Platform management API";
  return observation;
}

// What the watch reads from the management API: the first sight of an active subscription is
// recorded silently, a suspension is recorded with who did it, a move back to active runs the
// resumed action once (a `resumed` notification arriving after it runs none).
TEST(PlatformSubscriptionsObserveTest, TransitionsAndTheResumedAction) {
  Resumes resumes;
  PlatformSubscriptions::Options options;
  options.on_resumed = resumes.Action();
  auto subscriptions = PlatformSubscriptions::Open(std::move(options));
  ASSERT_TRUE(subscriptions.ok());
  PlatformSubscriptions& s = **subscriptions;
  s.Start();

  EXPECT_FALSE(s.Observe(Seen("sub-1", SubscriptionState::kActive, kT0)).has_value());
  ASSERT_TRUE(s.Get("platform", "sub-1").has_value());
  EXPECT_EQ(s.Get("platform", "sub-1")->state, SubscriptionState::kActive);
  // Unchanged: nothing recorded anew.
  EXPECT_EQ(s.Observe(Seen("sub-1", SubscriptionState::kActive, kT0 + absl::Seconds(1)))->state,
            SubscriptionState::kActive);

  s.Observe(Seen("sub-1", SubscriptionState::kSuspended, kT0 + absl::Seconds(2)));
  EXPECT_EQ(s.Get("platform", "sub-1")->notification_type, "subscription.suspended.system");
  // A user suspension seen later (pimgatectl) is recorded as such; the watch's plain
  // "suspended" read does not undo it.
  s.Observe(Seen("sub-1", SubscriptionState::kSuspended, kT0 + absl::Seconds(3), true));
  EXPECT_EQ(s.Get("platform", "sub-1")->notification_type, "subscription.suspended.user");
  s.Observe(Seen("sub-1", SubscriptionState::kSuspended, kT0 + absl::Seconds(4)));
  EXPECT_EQ(s.Get("platform", "sub-1")->notification_type, "subscription.suspended.user");

  // Active again: the resumed action runs (a reconciliation of the source).
  const auto before = s.Observe(Seen("sub-1", SubscriptionState::kActive, kT0 + absl::Seconds(5)));
  ASSERT_TRUE(before.has_value());
  EXPECT_EQ(before->state, SubscriptionState::kSuspended);
  ASSERT_TRUE(resumes.WaitFor(1));
  // The platform's `resumed` notification comes after: applied, but no second action. Proof that
  // it had its chance: a resume of a later source ("zzz", handled after "platform") runs.
  EXPECT_TRUE(s.Record(Notice("subscription.resumed", "sub-1", kT0 + absl::Seconds(6))));
  s.Record(Notice("subscription.suspended.system", "sub-9", kT0, "zzz"));
  s.Record(Notice("subscription.resumed", "sub-9", kT0 + absl::Seconds(1), "zzz"));
  ASSERT_TRUE(resumes.WaitFor(2));
  s.Stop();
  std::lock_guard lock(resumes.mu);
  ASSERT_EQ(resumes.calls.size(), 2u);
  EXPECT_EQ(resumes.calls[0], (std::pair<std::string, std::string>{"platform", "sub-1"}));
  EXPECT_EQ(resumes.calls[1], (std::pair<std::string, std::string>{"zzz", "sub-9"}));
}

// Observed times are whole seconds: a notification of the same second (Akeneo writes whole
// seconds) still applies.
TEST(PlatformSubscriptionsObserveTest, ANotificationOfTheSameSecondApplies) {
  auto subscriptions = PlatformSubscriptions::Open({});
  ASSERT_TRUE(subscriptions.ok());
  (*subscriptions)
      ->Observe(Seen("sub-1", SubscriptionState::kActive, kT0 + absl::Milliseconds(900)));
  EXPECT_TRUE((*subscriptions)->Record(Notice("subscription.suspended.system", "sub-1", kT0)));
  EXPECT_EQ((*subscriptions)->Get("platform", "sub-1")->state, SubscriptionState::kSuspended);
}

TEST(PlatformSubscriptionsObserveTest, ForgetDropsTheSeriesAndSurvivesAReopen) {
  TempDir dir;
  auto log = EventLog::Open(testing::StoreAt(dir.File("store")));
  ASSERT_TRUE(log.ok()) << log.status();
  {
    PlatformSubscriptions::Options options;
    options.log = log->get();
    auto subscriptions = PlatformSubscriptions::Open(std::move(options));
    ASSERT_TRUE(subscriptions.ok());
    (*subscriptions)->Observe(Seen("sub-1", SubscriptionState::kSuspended, kT0));
    (*subscriptions)->Observe(Seen("sub-2", SubscriptionState::kSuspended, kT0, true));
    EXPECT_TRUE((*subscriptions)->Forget("platform", "sub-1"));
    EXPECT_FALSE((*subscriptions)->Forget("platform", "sub-1"));
    MetricsRegistry registry;
    RegisterPlatformSubscriptionMetrics(registry, subscriptions->get());
    const std::string text = registry.Render();
    EXPECT_EQ(text.find("subscription=\"sub-1\""), std::string::npos) << text;
    EXPECT_NE(text.find(R"(subscription="sub-2",state="suspended"} 1)"), std::string::npos) << text;
    (*subscriptions)->Stop();  // saves
  }
  PlatformSubscriptions::Options options;
  options.log = log->get();
  auto reopened = PlatformSubscriptions::Open(std::move(options));
  ASSERT_TRUE(reopened.ok());
  const std::vector<SubscriptionStatus> states = (*reopened)->Snapshot();
  ASSERT_EQ(states.size(), 1u);
  EXPECT_EQ(states[0].subscription_id, "sub-2");
  EXPECT_EQ(states[0].notification_type, "subscription.suspended.user");
}

}  // namespace
}  // namespace pimgate
