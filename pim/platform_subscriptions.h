// PlatformSubscriptions: the state of the Akeneo Event Platform subscriptions that deliver to
// pimgate, as their notification webhooks report it (suspended, revoked, resumed), kept across
// restarts and exported as pimgate_platform_subscription_state.
#ifndef PIMGATE_PIM_PLATFORM_SUBSCRIPTIONS_H_
#define PIMGATE_PIM_PLATFORM_SUBSCRIPTIONS_H_

#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "core/log/event_log.h"
#include "events/subscription_notice.h"

namespace pimgate {

// Where a subscription stands. Akeneo's subscription statuses are active, suspended and revoked;
// a notification says which transition happened (notification_type).
enum class SubscriptionState { kActive, kSuspended, kRevoked };

// "active", "suspended", "revoked": the `state` label values of the metric.
std::string_view SubscriptionStateName(SubscriptionState state);
// Every state, in the order the metric lists them.
inline constexpr SubscriptionState kSubscriptionStates[] = {
    SubscriptionState::kActive, SubscriptionState::kSuspended, SubscriptionState::kRevoked};

// The state `notification_type` moves a subscription to: subscription.suspended.system and
// subscription.suspended.user → suspended, subscription.revoked → revoked,
// subscription.resumed → active. nullopt for a type Akeneo does not document (yet).
std::optional<SubscriptionState> StateAfter(std::string_view notification_type);

// A subscription's last known state.
struct SubscriptionStatus {
  std::string source;
  std::string subscription_id;
  SubscriptionState state = SubscriptionState::kActive;
  std::string notification_type;  // the notification that set `state`
  absl::Time changed_at;          // its `timestamp`
  std::string reason;
  std::string subscriber_id;
};

// Thread-safe. Record() and Snapshot() never block on I/O: they run on gateway I/O threads and
// metrics scrapes. What may block (writing the states to the log's metadata, the on_resumed
// action, typically a reconciliation run) runs on the object's own thread, between Start() and
// Stop().
//
//   PlatformSubscriptions::Options options;
//   options.log = log.get();
//   options.on_resumed = [&](const std::string& source, const std::string&) { ... };
//   auto subscriptions = PlatformSubscriptions::Open(std::move(options));  // restores the states
//   (*subscriptions)->Start();
//   ... gateway hooks call (*subscriptions)->Record(notice) ...
//   (*subscriptions)->Stop();  // after the gateway stopped
class PlatformSubscriptions {
 public:
  // Called with the source and the subscription that resumed. Resumes of one source that queue
  // up while an action runs are coalesced into one call (the last subscription named).
  using ResumedAction =
      std::function<void(const std::string& source, const std::string& subscription_id)>;

  struct Options {
    // Where the states are kept across restarts (the log's metadata, EventLog::PutMeta under
    // kMetaKey); null: in memory only (tests). Must outlive the object.
    EventLog* log = nullptr;
    // Runs on the object's thread when a subscription resumes (may block). Unset: nothing runs.
    ResumedAction on_resumed;
    // Most subscriptions tracked: a notification about another one is logged and not tracked
    // (20 subscribers of 20 subscriptions each is Akeneo's limit per PIM).
    std::size_t max_subscriptions = 1'000;
  };

  // The metadata key holding every tracked state (a v1.PlatformSubscriptionRecords).
  static constexpr char kMetaKey[] = "platform/subscriptions";

  // Restores the states saved under kMetaKey. An error is a failed metadata read; a saved value
  // that does not parse is logged and skipped (the next notification of each subscription sets
  // its state again).
  static absl::StatusOr<std::unique_ptr<PlatformSubscriptions>> Open(Options options);
  ~PlatformSubscriptions();  // Stop()

  PlatformSubscriptions(const PlatformSubscriptions&) = delete;
  PlatformSubscriptions& operator=(const PlatformSubscriptions&) = delete;

  // Starts the thread that saves states and runs on_resumed. Call once.
  void Start();
  // Saves the states not saved yet, drops the on_resumed actions that have not started (pimgate
  // is stopping: the next start's scheduled reconciliation covers them), waits for one in
  // progress and joins. Idempotent.
  void Stop();

  // Applies `notice` unless a later notification (by `changed_at`; equal ones apply, the later
  // call winning) is already recorded for the subscription, and logs it at warning level. On
  // `subscription.resumed` queues on_resumed. A notification of an undocumented type is logged
  // and changes nothing. Returns whether the state was applied.
  bool Record(const SubscriptionNotice& notice);

  // What the management API says of a subscription (the watch, or a pimgatectl action that
  // changed it).
  struct Observation {
    std::string source;
    std::string subscription_id;
    std::string subscriber_id;
    SubscriptionState state = SubscriptionState::kActive;
    // For kSuspended: a user suspended it (subscription.suspended.user), not the platform.
    bool by_user = false;
    absl::Time at;       // when it was read or done
    std::string reason;  // "read from the management API", "suspended with pimgatectl by ..."
  };
  // Applies `observation` when its state differs from the one recorded (recorded as the
  // notification of that transition would be, at `at`), logs the change at warning level and,
  // on a move to active from suspended or revoked, queues on_resumed as a `resumed` notification
  // does. The first sight of an active subscription is recorded silently. A suspended state
  // recorded as by a user stays so when the observation says only "suspended" (by_user false
  // with the same state is no change). Returns the state recorded before, nullopt when none.
  std::optional<SubscriptionStatus> Observe(const Observation& observation);

  // Stops tracking a subscription (deleted on Akeneo's side): its metric series go. Returns
  // whether it was tracked.
  bool Forget(const std::string& source, const std::string& subscription_id);

  // The recorded status of one subscription, nullopt when none.
  std::optional<SubscriptionStatus> Get(const std::string& source,
                                        const std::string& subscription_id) const;

  // Every tracked subscription, by source then subscription id.
  std::vector<SubscriptionStatus> Snapshot() const;

 private:
  explicit PlatformSubscriptions(Options options);
  void Loop();
  void Save();

  const Options options_;

  mutable absl::Mutex mu_;
  absl::CondVar wake_;  // signalled when there is something to save or run, and on stop
  // (source, subscription id) -> status.
  std::map<std::pair<std::string, std::string>, SubscriptionStatus> states_ ABSL_GUARDED_BY(mu_);
  bool dirty_ ABSL_GUARDED_BY(mu_) = false;        // states_ changed since the last save
  bool save_failed_ ABSL_GUARDED_BY(mu_) = false;  // the last save failed (retried at Stop)
  // source -> the subscription that resumed last, waiting for on_resumed.
  std::map<std::string, std::string> resumed_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace pimgate

#endif  // PIMGATE_PIM_PLATFORM_SUBSCRIPTIONS_H_
