// PlatformSubscriptions: notification webhooks in, subscription states out (metric, metadata,
// the resumed action).
#include "pim/platform_subscriptions.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "pimgate/v1/store.pb.h"
#include "spdlog/spdlog.h"

namespace pimgate {
namespace {

absl::Time FromTimestamp(const google::protobuf::Timestamp& timestamp) {
  return absl::FromUnixSeconds(timestamp.seconds()) + absl::Nanoseconds(timestamp.nanos());
}

google::protobuf::Timestamp ToTimestamp(absl::Time time) {
  const int64_t seconds = absl::ToUnixSeconds(time);
  google::protobuf::Timestamp timestamp;
  timestamp.set_seconds(seconds);
  timestamp.set_nanos(
      static_cast<int32_t>(absl::ToInt64Nanoseconds(time - absl::FromUnixSeconds(seconds))));
  return timestamp;
}

std::string Describe(const SubscriptionNotice& notice) {
  return absl::StrCat(
      "source ", notice.source, ": Event Platform subscription ", notice.subscription_id,
      notice.subscriber_id.empty() ? "" : " (subscriber " + notice.subscriber_id + ")");
}

}  // namespace

std::string_view SubscriptionStateName(SubscriptionState state) {
  switch (state) {
    case SubscriptionState::kActive:
      return "active";
    case SubscriptionState::kSuspended:
      return "suspended";
    case SubscriptionState::kRevoked:
      return "revoked";
  }
  return "unknown";
}

std::optional<SubscriptionState> StateAfter(std::string_view notification_type) {
  if (notification_type == "subscription.suspended.system" ||
      notification_type == "subscription.suspended.user") {
    return SubscriptionState::kSuspended;
  }
  if (notification_type == "subscription.revoked") return SubscriptionState::kRevoked;
  if (notification_type == "subscription.resumed") return SubscriptionState::kActive;
  return std::nullopt;
}

absl::StatusOr<std::unique_ptr<PlatformSubscriptions>> PlatformSubscriptions::Open(
    Options options) {
  std::unique_ptr<PlatformSubscriptions> subscriptions(
      new PlatformSubscriptions(std::move(options)));
  const EventLog* log = subscriptions->options_.log;
  if (log == nullptr) return subscriptions;
  absl::StatusOr<std::optional<std::string>> saved = log->GetMeta(kMetaKey);
  if (!saved.ok()) return saved.status();
  if (!saved->has_value()) return subscriptions;
  v1::PlatformSubscriptionRecords records;
  if (!records.ParseFromString(**saved)) {
    // Not worth refusing webhooks over: the next notification of each subscription sets it again.
    spdlog::error(
        "cannot parse the saved Event Platform subscription states ({}): starting without them",
        kMetaKey);
    return subscriptions;
  }
  absl::MutexLock lock(&subscriptions->mu_);
  for (const v1::PlatformSubscriptionRecord& record : records.records()) {
    const std::optional<SubscriptionState> state = StateAfter(record.notification_type());
    if (!state) continue;  // only documented types are ever saved
    SubscriptionStatus status;
    status.source = record.source();
    status.subscription_id = record.subscription_id();
    status.state = *state;
    status.notification_type = record.notification_type();
    status.changed_at = FromTimestamp(record.changed_at());
    status.reason = record.reason();
    status.subscriber_id = record.subscriber_id();
    if (status.state != SubscriptionState::kActive) {
      spdlog::warn("source {}: Event Platform subscription {} is still {} ({} at {}{}{})",
                   status.source, status.subscription_id, SubscriptionStateName(status.state),
                   status.notification_type, absl::FormatTime(status.changed_at),
                   status.reason.empty() ? "" : ": ", status.reason);
    }
    subscriptions->states_.emplace(std::pair{status.source, status.subscription_id},
                                   std::move(status));
  }
  return subscriptions;
}

PlatformSubscriptions::PlatformSubscriptions(Options options) : options_(std::move(options)) {}

PlatformSubscriptions::~PlatformSubscriptions() { Stop(); }

void PlatformSubscriptions::Start() {
  absl::MutexLock lock(&mu_);
  if (started_ || stopping_) return;
  started_ = true;
  thread_ = std::thread([this] { Loop(); });
}

void PlatformSubscriptions::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    stopping_ = true;
    resumed_.clear();
    wake_.SignalAll();
  }
  if (thread_.joinable()) thread_.join();
  // States recorded without a thread to save them (never started, or after the last save).
  bool dirty;
  {
    absl::MutexLock lock(&mu_);
    dirty = dirty_ || save_failed_;
  }
  if (dirty) Save();
}

bool PlatformSubscriptions::Record(const SubscriptionNotice& notice) {
  const std::optional<SubscriptionState> state = StateAfter(notice.notification_type);
  if (!state) {
    spdlog::warn("{}: notification {} is not one pimgate knows; stored, state unchanged",
                 Describe(notice), notice.notification_type);
    return false;
  }
  absl::MutexLock lock(&mu_);
  const std::pair key{notice.source, notice.subscription_id};
  auto it = states_.find(key);
  if (it == states_.end()) {
    if (states_.size() >= options_.max_subscriptions) {
      spdlog::error("{}: {} not tracked: {} subscriptions are tracked already", Describe(notice),
                    notice.notification_type, states_.size());
      return false;
    }
  } else if (notice.changed_at < it->second.changed_at) {
    spdlog::info("{}: {} at {} is older than the {} already recorded (at {}): not applied",
                 Describe(notice), notice.notification_type, absl::FormatTime(notice.changed_at),
                 it->second.notification_type, absl::FormatTime(it->second.changed_at));
    return false;
  }
  const bool was_suspended =
      it != states_.end() && it->second.state == SubscriptionState::kSuspended;
  const bool was_active = it != states_.end() && it->second.state == SubscriptionState::kActive;
  SubscriptionStatus& status = states_[key];
  status.source = notice.source;
  status.subscription_id = notice.subscription_id;
  status.state = *state;
  status.notification_type = notice.notification_type;
  status.changed_at = notice.changed_at;
  status.reason = notice.reason;
  if (!notice.subscriber_id.empty()) status.subscriber_id = notice.subscriber_id;
  dirty_ = true;

  const std::string reason = notice.reason.empty() ? "" : absl::StrCat(" (", notice.reason, ")");
  switch (*state) {
    case SubscriptionState::kSuspended:
      spdlog::warn(
          "{}: SUSPENDED {}{}{}: Akeneo sends no event until it is resumed (see "
          "docs/operations.md)",
          Describe(notice),
          notice.notification_type == "subscription.suspended.user" ? "by a user"
                                                                    : "by the platform",
          reason, was_suspended ? " again" : "");
      break;
    case SubscriptionState::kRevoked:
      spdlog::warn(
          "{}: REVOKED{}: Akeneo will not send its events again; create a new subscription",
          Describe(notice), reason);
      break;
    case SubscriptionState::kActive:
      spdlog::warn("{}: resumed{}: events flow again", Describe(notice), reason);
      // Known to be active already (the watch saw the resume first): reconciled then.
      if (options_.on_resumed && !stopping_ && !was_active) {
        resumed_[notice.source] = notice.subscription_id;
      }
      break;
  }
  wake_.Signal();
  return true;
}

std::optional<SubscriptionStatus> PlatformSubscriptions::Observe(const Observation& o) {
  absl::MutexLock lock(&mu_);
  const std::pair key{o.source, o.subscription_id};
  auto it = states_.find(key);
  std::optional<SubscriptionStatus> before;
  if (it != states_.end()) {
    before = it->second;
    const bool same_suspender = o.state != SubscriptionState::kSuspended || !o.by_user ||
                                it->second.notification_type == "subscription.suspended.user";
    if (it->second.state == o.state && same_suspender) return before;
  } else if (states_.size() >= options_.max_subscriptions) {
    spdlog::error(
        "source {}: Event Platform subscription {} not tracked: {} subscriptions are "
        "tracked already",
        o.source, o.subscription_id, states_.size());
    return before;
  }
  SubscriptionStatus& status = states_[key];
  status.source = o.source;
  status.subscription_id = o.subscription_id;
  status.state = o.state;
  switch (o.state) {
    case SubscriptionState::kActive:
      status.notification_type = "subscription.resumed";
      break;
    case SubscriptionState::kSuspended:
      status.notification_type =
          o.by_user ? "subscription.suspended.user" : "subscription.suspended.system";
      break;
    case SubscriptionState::kRevoked:
      status.notification_type = "subscription.revoked";
      break;
  }
  // Whole seconds: Akeneo's notifications carry whole seconds ("2026-04-29T12:34:56Z"), and one
  // about a change in the same second as this observation must still apply.
  status.changed_at = absl::FromUnixSeconds(absl::ToUnixSeconds(o.at));
  status.reason = o.reason;
  if (!o.subscriber_id.empty()) status.subscriber_id = o.subscriber_id;
  dirty_ = true;
  wake_.Signal();
  if (!before.has_value() && o.state == SubscriptionState::kActive) return before;

  const std::string what = absl::StrCat(
      "source ", o.source, ": Event Platform subscription ", o.subscription_id,
      before.has_value()
          ? absl::StrCat(" was ", std::string(SubscriptionStateName(before->state)), ", now")
          : std::string(" is"));
  const std::string why = o.reason.empty() ? "" : absl::StrCat(" (", o.reason, ")");
  switch (o.state) {
    case SubscriptionState::kSuspended:
      spdlog::warn(
          "{} SUSPENDED {}{}: Akeneo captures its events (for up to 10 days) until it "
          "is resumed (`pimgatectl platform resume {}`, or platform.auto_resume)",
          what, o.by_user ? "by a user" : "by the platform", why, o.source);
      break;
    case SubscriptionState::kRevoked:
      spdlog::warn(
          "{} REVOKED{}: Akeneo will not send its events again; check the Connection "
          "and subscribe again (`pimgatectl platform check {}`)",
          what, why, o.source);
      break;
    case SubscriptionState::kActive:
      spdlog::warn("{} active{}: events flow again", what, why);
      if (options_.on_resumed && !stopping_) resumed_[o.source] = o.subscription_id;
      break;
  }
  return before;
}

bool PlatformSubscriptions::Forget(const std::string& source, const std::string& subscription_id) {
  absl::MutexLock lock(&mu_);
  if (states_.erase(std::pair{source, subscription_id}) == 0) return false;
  dirty_ = true;
  wake_.Signal();
  return true;
}

std::optional<SubscriptionStatus> PlatformSubscriptions::Get(
    const std::string& source, const std::string& subscription_id) const {
  absl::MutexLock lock(&mu_);
  auto it = states_.find(std::pair{source, subscription_id});
  if (it == states_.end()) return std::nullopt;
  return it->second;
}

std::vector<SubscriptionStatus> PlatformSubscriptions::Snapshot() const {
  absl::MutexLock lock(&mu_);
  std::vector<SubscriptionStatus> out;
  out.reserve(states_.size());
  for (const auto& [key, status] : states_) out.push_back(status);
  return out;
}

void PlatformSubscriptions::Save() {
  if (options_.log == nullptr) {
    absl::MutexLock lock(&mu_);
    dirty_ = false;
    return;
  }
  v1::PlatformSubscriptionRecords records;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [key, status] : states_) {
      v1::PlatformSubscriptionRecord& record = *records.add_records();
      record.set_source(status.source);
      record.set_subscription_id(status.subscription_id);
      record.set_notification_type(status.notification_type);
      *record.mutable_changed_at() = ToTimestamp(status.changed_at);
      record.set_reason(status.reason);
      record.set_subscriber_id(status.subscriber_id);
    }
    dirty_ = false;
  }
  // PutMeta fsyncs: never on a gateway I/O thread, hence this thread.
  if (absl::Status status = options_.log->PutMeta(kMetaKey, records.SerializeAsString());
      !status.ok()) {
    spdlog::error(
        "cannot save the Event Platform subscription states ({}); they are kept in memory and "
        "saved again with the next change or at stop: {}",
        kMetaKey, std::string(status.message()));
    // Not retried at once: a failing disk would make this thread spin.
    absl::MutexLock lock(&mu_);
    save_failed_ = true;
  } else {
    absl::MutexLock lock(&mu_);
    save_failed_ = false;
  }
}

void PlatformSubscriptions::Loop() {
  for (;;) {
    std::optional<std::pair<std::string, std::string>> resumed;
    bool save = false;
    {
      absl::MutexLock lock(&mu_);
      while (!stopping_ && !dirty_ && resumed_.empty()) wake_.Wait(&mu_);
      // Saving first: the state must survive a crash during a long on_resumed action.
      if (dirty_) {
        save = true;
      } else if (!resumed_.empty()) {
        resumed = *resumed_.begin();
        resumed_.erase(resumed_.begin());
      } else if (stopping_) {
        return;
      }
    }
    if (save) {
      Save();
    } else if (resumed) {
      options_.on_resumed(resumed->first, resumed->second);
    }
  }
}

}  // namespace pimgate
