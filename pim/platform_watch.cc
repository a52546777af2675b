// PlatformWatch: one thread, one round per source every watch_interval (sooner while a replay is
// followed); the state goes to PlatformSubscriptions, auto_resume acts through PlatformClient.
#include "pim/platform_watch.h"

#include <algorithm>
#include <optional>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "spdlog/spdlog.h"

namespace pimgate {
namespace {

using Clock = std::chrono::steady_clock;

constexpr char kReadReason[] = "read from the Event Platform management API";

std::optional<SubscriptionState> StateOf(const std::string& status) {
  if (status == "active") return SubscriptionState::kActive;
  if (status == "suspended") return SubscriptionState::kSuspended;
  if (status == "revoked") return SubscriptionState::kRevoked;
  return std::nullopt;  // "deleted" or a status Akeneo adds later: not tracked
}

bool SuspendedByUser(const std::optional<SubscriptionStatus>& status) {
  return status.has_value() && status->state == SubscriptionState::kSuspended &&
         status->notification_type == "subscription.suspended.user";
}

}  // namespace

PlatformWatch::PlatformWatch(Options options) : options_(std::move(options)) {}

PlatformWatch::~PlatformWatch() { Stop(); }

void PlatformWatch::Start() {
  absl::MutexLock lock(&mu_);
  if (started_ || stop_) return;
  started_ = true;
  for (PlatformSource* source : options_.sources) {
    if (source->platform().watch_interval.count() <= 0) continue;
    watched_.push_back(Watched{source, Clock::now(), "", {}});
    spdlog::info("source {}: watching its Event Platform subscriptions every {}{}", source->name(),
                 absl::FormatDuration(absl::FromChrono(source->platform().watch_interval)),
                 source->platform().auto_resume ? " (auto_resume)" : "");
  }
  if (watched_.empty()) return;
  thread_ = std::thread([this] { Loop(); });
}

void PlatformWatch::RequestStop() {
  absl::MutexLock lock(&mu_);
  stop_ = true;
}

void PlatformWatch::Stop() {
  RequestStop();
  if (thread_.joinable()) thread_.join();
}

PlatformWatchStats PlatformWatch::stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

bool PlatformWatch::stopping() const {
  absl::MutexLock lock(&mu_);
  return stop_;
}

void PlatformWatch::Loop() {
  for (;;) {
    Clock::time_point due = Clock::time_point::max();
    for (const Watched& watched : watched_) due = std::min(due, watched.next_round);
    {
      absl::MutexLock lock(&mu_);
      mu_.AwaitWithDeadline(absl::Condition(&stop_),
                            absl::Now() + absl::FromChrono(due - Clock::now()));
      if (stop_) return;
    }
    for (Watched& watched : watched_) {
      if (stopping()) return;
      if (watched.next_round <= Clock::now()) watched.next_round = Round(watched);
    }
  }
}

Clock::time_point PlatformWatch::Round(Watched& watched) {
  PlatformSource& source = *watched.source;
  const Clock::time_point next = Clock::now() + source.platform().watch_interval;
  const auto failed = [&](const absl::Status& status) {
    const std::string message(status.message());
    if (stopping()) return next;  // the client was shut down under the call
    if (message != watched.last_error) {
      spdlog::warn(
          "source {}: cannot read its Event Platform subscriptions (read again every "
          "{}): {}",
          source.name(), absl::FormatDuration(absl::FromChrono(source.platform().watch_interval)),
          message);
      watched.last_error = message;
    }
    absl::MutexLock lock(&mu_);
    ++stats_.rounds;
    ++stats_.failed_rounds;
    return next;
  };

  absl::StatusOr<std::optional<PlatformSubscriber>> subscriber = source.FindSubscriber();
  if (!subscriber.ok()) return failed(subscriber.status());
  std::vector<PlatformSubscription> subscriptions;
  if (subscriber->has_value()) {
    absl::StatusOr<std::vector<PlatformSubscription>> listed =
        source.SubscriptionsOf((*subscriber)->id);
    if (!listed.ok()) return failed(listed.status());
    subscriptions = *std::move(listed);
  }
  if (!watched.last_error.empty()) {
    spdlog::info("source {}: the Event Platform management API answers again", source.name());
    watched.last_error.clear();
  }

  bool following = false;
  std::set<std::string> seen;
  for (const PlatformSubscription& subscription : subscriptions) {
    if (stopping()) break;
    const std::optional<SubscriptionState> state = StateOf(subscription.status);
    if (!state.has_value()) continue;
    seen.insert(subscription.id);
    Tracked& tracked = watched.tracked[subscription.id];
    PlatformSubscriptions::Observation observation;
    observation.source = source.name();
    observation.subscription_id = subscription.id;
    observation.subscriber_id = (*subscriber)->id;
    observation.state = *state;
    observation.at = absl::Now();
    observation.reason = kReadReason;
    if (*state == SubscriptionState::kSuspended) {
      // Who suspended it decides whether auto_resume may resume it: a notification or a
      // pimgatectl suspend recorded it; else the platform's action logs say.
      const std::optional<SubscriptionStatus> recorded =
          options_.subscriptions->Get(source.name(), subscription.id);
      observation.by_user = SuspendedByUser(recorded);
      if (!recorded.has_value() || recorded->state != SubscriptionState::kSuspended) {
        absl::StatusOr<std::optional<bool>> by_user =
            source.SuspendedByUser((*subscriber)->id, subscription.id, subscription.updated_at);
        if (by_user.ok()) {
          observation.by_user = by_user->value_or(false);
        } else {
          spdlog::info(
              "source {}: cannot tell who suspended subscription {} (the platform's "
              "logs: {}); taken as the platform",
              source.name(), subscription.id, std::string(by_user.status().message()));
        }
      }
    }
    options_.subscriptions->Observe(observation);
    if (*state == SubscriptionState::kSuspended) {
      HandleSuspended(watched, **subscriber, subscription, tracked);
    } else {
      tracked.said_waiting = tracked.said_user = false;
    }
    if (!tracked.replay_id.empty()) {
      FollowReplay(watched, **subscriber, subscription, tracked);
      following = following || !tracked.replay_id.empty();
    }
    tracked.last_status = subscription.status;
  }
  // Gone from the list (deleted): no longer tracked, nor exported.
  for (auto it = watched.tracked.begin(); it != watched.tracked.end();) {
    if (seen.contains(it->first) || stopping()) {
      ++it;
      continue;
    }
    if (options_.subscriptions->Forget(source.name(), it->first)) {
      spdlog::info(
          "source {}: Event Platform subscription {} is gone (deleted): no longer "
          "watched",
          source.name(), it->first);
    }
    it = watched.tracked.erase(it);
  }
  {
    absl::MutexLock lock(&mu_);
    ++stats_.rounds;
  }
  return following ? std::min(next, Clock::now() + kReplayPollInterval) : next;
}

void PlatformWatch::HandleSuspended(Watched& watched, const PlatformSubscriber& subscriber,
                                    const PlatformSubscription& subscription, Tracked& tracked) {
  PlatformSource& source = *watched.source;
  if (!source.platform().auto_resume) return;
  if (SuspendedByUser(options_.subscriptions->Get(source.name(), subscription.id))) {
    if (!tracked.said_user) {
      spdlog::warn(
          "source {}: subscription {} was suspended by a user: auto_resume leaves it "
          "so; `pimgatectl platform resume {} --subscription {}` resumes it",
          source.name(), subscription.id, source.name(), subscription.id);
      tracked.said_user = true;
    }
    return;
  }
  if (options_.ready && !options_.ready()) {
    if (!tracked.said_waiting) {
      spdlog::info(
          "source {}: subscription {} is suspended; auto_resume waits for pimgate to "
          "be ready (/readyz)",
          source.name(), subscription.id);
      tracked.said_waiting = true;
    }
    return;
  }
  absl::StatusOr<PlatformSubscription> resumed =
      source.client().ResumeSubscription(subscriber.id, subscription.id);
  if (!resumed.ok()) {
    const std::string message(resumed.status().message());
    if (!stopping() && message != tracked.resume_error) {
      spdlog::warn(
          "source {}: auto_resume could not resume subscription {} (tried again every "
          "{}; logged again when the error changes): {}",
          source.name(), subscription.id,
          absl::FormatDuration(absl::FromChrono(source.platform().watch_interval)), message);
    }
    tracked.resume_error = message;
    return;
  }
  tracked.resume_error.clear();
  {
    absl::MutexLock lock(&mu_);
    ++stats_.auto_resumes;
  }
  tracked.said_waiting = tracked.said_user = false;
  PlatformSubscriptions::Observation observation;
  observation.source = source.name();
  observation.subscription_id = subscription.id;
  observation.subscriber_id = subscriber.id;
  observation.state = SubscriptionState::kActive;
  observation.at = absl::Now();
  observation.reason = "resumed by pimgate (platform.auto_resume)";
  // Queues the reconciliation of the source (PlatformSubscriptions' on_resumed).
  options_.subscriptions->Observe(observation);

  absl::StatusOr<PlatformReplay> replay =
      source.client().StartReplay(subscriber.id, subscription.id);
  if (!replay.ok()) {
    spdlog::warn(
        "source {}: subscription {} resumed, but the replay of its captured events did "
        "not start: {}. The reconciliation that follows the resume recovers the "
        "changes; `pimgatectl platform replay {}` tries again",
        source.name(), subscription.id, std::string(replay.status().message()), source.name());
    return;
  }
  {
    absl::MutexLock lock(&mu_);
    ++stats_.replays_started;
  }
  spdlog::info("source {}: replay {} of subscription {} started: {} captured event(s)",
               source.name(), replay->id, subscription.id, replay->total);
  tracked.replay_id = replay->id;
  tracked.replay_reported = -1;
}

void PlatformWatch::FollowReplay(Watched& watched, const PlatformSubscriber& subscriber,
                                 const PlatformSubscription& subscription, Tracked& tracked) {
  PlatformSource& source = *watched.source;
  absl::StatusOr<PlatformReplay> replay = source.client().GetReplay(subscriber.id, subscription.id);
  if (!replay.ok()) {
    if (replay.status().code() == absl::StatusCode::kNotFound) tracked.replay_id.clear();
    spdlog::info("source {}: cannot read the progress of replay {}: {}", source.name(),
                 tracked.replay_id, std::string(replay.status().message()));
    return;
  }
  if (replay->id != tracked.replay_id && !replay->id.empty()) {
    tracked.replay_id = replay->id;  // another replay started since (pimgatectl)
  }
  const int64_t done = replay->delivered + replay->failed;
  if (replay->status != "in_progress") {
    spdlog::info(
        "source {}: replay {} of subscription {} {}: {} of {} captured event(s) "
        "delivered, {} failed",
        source.name(), replay->id, subscription.id, replay->status, replay->delivered,
        replay->total, replay->failed);
    tracked.replay_id.clear();
    return;
  }
  if (done != tracked.replay_reported) {
    spdlog::info("source {}: replay {} of subscription {}: {} of {} delivered, {} failed",
                 source.name(), replay->id, subscription.id, replay->delivered, replay->total,
                 replay->failed);
    tracked.replay_reported = done;
  }
}

}  // namespace pimgate
