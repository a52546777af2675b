// PlatformAdmin: admin.proto's Event Platform messages to and from pim/'s PlatformSource,
// PlatformClient and CheckPlatformSource.
#include "admin/platform_admin.h"

#include <algorithm>
#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "pim/platform_check.h"
#include "spdlog/spdlog.h"

namespace pimgate {
namespace {

// The most log entries one PlatformLogs call asks the platform for (its page maximum, as read:
// docs/event-platform-api.md, "Logs").
constexpr int32_t kMaxLogPageSize = 100;

void ToProto(const PlatformSubscriber& in, const PlatformSource& source,
             v1::PlatformSubscriberInfo& out) {
  out.set_source(source.name());
  out.set_id(in.id);
  out.set_name(in.name);
  out.set_status(in.status);
  out.set_subject(in.subject);
  out.set_technical_email(in.contact.technical_email);
  for (const std::string& channel : in.contact.notification_channels) {
    out.add_notification_channels(channel);
  }
  out.set_notification_webhook_url(in.contact.notification_webhook_url);
  out.set_created_at(in.created_at);
  out.set_updated_at(in.updated_at);
  out.set_managed(in.name == source.platform().subscriber_name);
}

void ToProto(const PlatformSubscription& in, const PlatformSource& source,
             v1::PlatformSubscriptionInfo& out) {
  out.set_source(source.name());
  out.set_id(in.id);
  out.set_subscriber_id(in.subscriber_id);
  out.set_status(in.status);
  out.set_type(in.type);
  for (const std::string& event : in.events) out.add_events(event);
  out.set_url(in.url);
  out.set_has_secondary_secret(in.has_secondary_secret);
  out.set_filter(in.filter);
  out.set_send_product_identifier(in.send_product_identifier);
  for (const std::string& name : in.header_names) out.add_header_names(name);
  out.set_created_at(in.created_at);
  out.set_updated_at(in.updated_at);
  out.set_delivers_to_source(source.DeliversHere(in.url));
}

void ToProto(const PlatformReplay& in, v1::PlatformReplayInfo& out) {
  out.set_id(in.id);
  out.set_subscription_id(in.subscription_id);
  out.set_status(in.status);
  out.set_total(in.total);
  out.set_delivered(in.delivered);
  out.set_failed(in.failed);
  out.set_created_at(in.created_at);
  out.set_completed_at(in.completed_at);
}

v1::PlatformCheckFinding::Outcome ToProto(PlatformCheckFinding::Outcome outcome) {
  switch (outcome) {
    case PlatformCheckFinding::Outcome::kPassed:
      return v1::PlatformCheckFinding::PASSED;
    case PlatformCheckFinding::Outcome::kProblem:
      return v1::PlatformCheckFinding::PROBLEM;
    case PlatformCheckFinding::Outcome::kNote:
      return v1::PlatformCheckFinding::NOTE;
  }
  return v1::PlatformCheckFinding::OUTCOME_UNSPECIFIED;
}

}  // namespace

PlatformAdmin::PlatformAdmin(PlatformAdminDependencies deps) : deps_(std::move(deps)) {}

absl::StatusOr<PlatformSource*> PlatformAdmin::Find(const std::string& name) const {
  if (name.empty()) return absl::InvalidArgumentError("source is required");
  for (PlatformSource* source : deps_.sources) {
    if (source->name() == name) return source;
  }
  if (std::find(deps_.source_names.begin(), deps_.source_names.end(), name) !=
      deps_.source_names.end()) {
    return absl::FailedPreconditionError(
        absl::StrCat("source ", name,
                     " has no `platform`: pimgate manages the Event Platform subscriptions "
                     "of `kind: event_platform` sources with `platform:` and `rest:` only"));
  }
  return absl::NotFoundError(absl::StrCat(
      "no source named ", name, " (sources: ", absl::StrJoin(deps_.source_names, ", "), ")"));
}

void PlatformAdmin::Record(PlatformSource& source, const PlatformSubscription& subscription,
                           SubscriptionState state, bool by_user, const std::string& reason) {
  if (deps_.subscriptions == nullptr) return;
  PlatformSubscriptions::Observation observation;
  observation.source = source.name();
  observation.subscription_id = subscription.id;
  observation.subscriber_id = subscription.subscriber_id;
  observation.state = state;
  observation.by_user = by_user;
  observation.at = absl::Now();
  observation.reason = reason;
  deps_.subscriptions->Observe(observation);
}

absl::Status PlatformAdmin::ListSubscribers(const std::string&,
                                            const v1::ListPlatformSubscribersRequest& request,
                                            v1::ListPlatformSubscribersResponse& response) {
  std::vector<PlatformSource*> sources;
  if (request.source().empty()) {
    sources = deps_.sources;
  } else {
    absl::StatusOr<PlatformSource*> source = Find(request.source());
    if (!source.ok()) return source.status();
    sources.push_back(*source);
  }
  // Sources of one PIM connection see the same subscribers: each is listed once, under the
  // source it belongs to when one manages it.
  std::map<std::string, int> index;  // id -> position in the response
  for (PlatformSource* source : sources) {
    absl::StatusOr<std::vector<PlatformSubscriber>> subscribers = source->ListSubscribers();
    if (!subscribers.ok()) {
      return absl::Status(
          subscribers.status().code(),
          absl::StrCat("source ", source->name(), ": ", subscribers.status().message()));
    }
    for (const PlatformSubscriber& subscriber : *subscribers) {
      auto [it, added] = index.emplace(subscriber.id, response.subscribers_size());
      v1::PlatformSubscriberInfo* info =
          added ? response.add_subscribers() : response.mutable_subscribers(it->second);
      if (!added && info->managed()) continue;
      info->Clear();
      ToProto(subscriber, *source, *info);
    }
  }
  return absl::OkStatus();
}

absl::Status PlatformAdmin::ListSubscriptions(const std::string&,
                                              const v1::ListPlatformSubscriptionsRequest& request,
                                              v1::ListPlatformSubscriptionsResponse& response) {
  absl::StatusOr<PlatformSource*> source = Find(request.source());
  if (!source.ok()) return source.status();
  absl::StatusOr<std::optional<PlatformSubscriber>> subscriber = (*source)->FindSubscriber();
  if (!subscriber.ok()) return subscriber.status();
  if (!subscriber->has_value()) return absl::OkStatus();
  ToProto(**subscriber, **source, *response.mutable_subscriber());
  absl::StatusOr<std::vector<PlatformSubscription>> subscriptions =
      (*source)->SubscriptionsOf((*subscriber)->id);
  if (!subscriptions.ok()) return subscriptions.status();
  for (const PlatformSubscription& subscription : *subscriptions) {
    ToProto(subscription, **source, *response.add_subscriptions());
  }
  return absl::OkStatus();
}

absl::Status PlatformAdmin::Subscribe(const std::string& peer,
                                      const v1::PlatformSubscribeRequest& request,
                                      v1::PlatformSubscribeResponse& response) {
  absl::StatusOr<PlatformSource*> source = Find(request.source());
  if (!source.ok()) return source.status();
  PlatformSource::SubscribeRequest subscribe;
  subscribe.public_url = request.public_url();
  subscribe.events.assign(request.events().begin(), request.events().end());
  subscribe.filter = request.filter();
  subscribe.send_product_identifier = request.send_product_identifier();
  spdlog::info("[admin] {}: platform subscribe {} to {} ({} event type(s) asked)", peer,
               request.source(), request.public_url(), request.events_size());
  absl::StatusOr<PlatformSource::SubscribeResult> result = (*source)->Subscribe(subscribe);
  if (!result.ok()) return result.status();
  ToProto(result->subscriber, **source, *response.mutable_subscriber());
  response.set_subscriber_created(result->subscriber_created);
  response.set_subscriber_updated(result->subscriber_updated);
  ToProto(result->subscription, **source, *response.mutable_subscription());
  response.set_subscription_created(result->subscription_created);
  response.set_destination(result->destination);
  if (result->subscription.status == "active") {
    Record(**source, result->subscription, SubscriptionState::kActive, false,
           "subscribed with pimgatectl");
  }
  return absl::OkStatus();
}

absl::Status PlatformAdmin::Suspend(const std::string& peer,
                                    const v1::SuspendPlatformSubscriptionRequest& request,
                                    v1::SuspendPlatformSubscriptionResponse& response) {
  absl::StatusOr<PlatformSource*> source = Find(request.source());
  if (!source.ok()) return source.status();
  absl::StatusOr<PlatformSource::Selected> selected = (*source)->Select(request.subscription_id());
  if (!selected.ok()) return selected.status();
  spdlog::info("[admin] {}: platform suspend {} subscription {}", peer, request.source(),
               selected->subscription.id);
  absl::StatusOr<PlatformSubscription> suspended =
      (*source)->client().SuspendSubscription(selected->subscriber.id, selected->subscription.id);
  if (!suspended.ok()) return suspended.status();
  Record(**source, *suspended, SubscriptionState::kSuspended, /*by_user=*/true,
         absl::StrCat("suspended with pimgatectl by ", peer));
  ToProto(*suspended, **source, *response.mutable_subscription());
  return absl::OkStatus();
}

absl::Status PlatformAdmin::Resume(const std::string& peer,
                                   const v1::ResumePlatformSubscriptionRequest& request,
                                   v1::ResumePlatformSubscriptionResponse& response) {
  absl::StatusOr<PlatformSource*> source = Find(request.source());
  if (!source.ok()) return source.status();
  absl::StatusOr<PlatformSource::Selected> selected = (*source)->Select(request.subscription_id());
  if (!selected.ok()) return selected.status();
  spdlog::info("[admin] {}: platform resume {} subscription {}{}", peer, request.source(),
               selected->subscription.id, request.no_replay() ? " (no replay)" : "");
  absl::StatusOr<PlatformSubscription> resumed =
      (*source)->client().ResumeSubscription(selected->subscriber.id, selected->subscription.id);
  if (!resumed.ok()) return resumed.status();
  // Reconciles the source (PlatformSubscriptions' on_resumed) when it was suspended.
  Record(**source, *resumed, SubscriptionState::kActive, false,
         absl::StrCat("resumed with pimgatectl by ", peer));
  ToProto(*resumed, **source, *response.mutable_subscription());
  if (request.no_replay()) return absl::OkStatus();
  absl::StatusOr<PlatformReplay> replay =
      (*source)->client().StartReplay(selected->subscriber.id, selected->subscription.id);
  if (!replay.ok()) {
    response.set_replay_error(std::string(replay.status().message()));
    return absl::OkStatus();
  }
  ToProto(*replay, *response.mutable_replay());
  return absl::OkStatus();
}

absl::Status PlatformAdmin::Delete(const std::string& peer,
                                   const v1::DeletePlatformSubscriptionRequest& request,
                                   v1::DeletePlatformSubscriptionResponse& response) {
  absl::StatusOr<PlatformSource*> source = Find(request.source());
  if (!source.ok()) return source.status();
  absl::StatusOr<PlatformSource::Selected> selected = (*source)->Select(request.subscription_id());
  if (!selected.ok()) return selected.status();
  spdlog::warn("[admin] {}: platform delete {} subscription {} (to {})", peer, request.source(),
               selected->subscription.id, selected->subscription.url);
  absl::StatusOr<PlatformSubscription> deleted =
      (*source)->client().DeleteSubscription(selected->subscriber.id, selected->subscription.id);
  if (!deleted.ok()) return deleted.status();
  if (deps_.subscriptions != nullptr) {
    deps_.subscriptions->Forget((*source)->name(), selected->subscription.id);
  }
  ToProto(*deleted, **source, *response.mutable_subscription());
  return absl::OkStatus();
}

absl::Status PlatformAdmin::Replay(const std::string& peer,
                                   const v1::ReplayPlatformSubscriptionRequest& request,
                                   v1::ReplayPlatformSubscriptionResponse& response) {
  absl::StatusOr<PlatformSource*> source = Find(request.source());
  if (!source.ok()) return source.status();
  absl::StatusOr<PlatformSource::Selected> selected = (*source)->Select(request.subscription_id());
  if (!selected.ok()) return selected.status();
  response.set_subscription_id(selected->subscription.id);
  absl::StatusOr<PlatformReplay> replay;
  if (request.status_only()) {
    replay = (*source)->client().GetReplay(selected->subscriber.id, selected->subscription.id);
  } else {
    spdlog::info("[admin] {}: platform replay {} subscription {}", peer, request.source(),
                 selected->subscription.id);
    replay = (*source)->client().StartReplay(selected->subscriber.id, selected->subscription.id);
  }
  if (!replay.ok()) return replay.status();
  ToProto(*replay, *response.mutable_replay());
  return absl::OkStatus();
}

absl::Status PlatformAdmin::Logs(const std::string&, const v1::PlatformLogsRequest& request,
                                 v1::PlatformLogsResponse& response) {
  absl::StatusOr<PlatformSource*> source = Find(request.source());
  if (!source.ok()) return source.status();
  if (!request.log_type().empty() && request.log_type() != "action" &&
      request.log_type() != "error") {
    return absl::InvalidArgumentError(
        absl::StrCat("log_type must be \"action\" or \"error\", got \"", request.log_type(), "\""));
  }
  if (request.page_size() < 0) return absl::InvalidArgumentError("page_size must not be negative");
  PlatformLogQuery query;
  if (request.subscription_id().empty()) {
    absl::StatusOr<std::optional<PlatformSubscriber>> subscriber = (*source)->FindSubscriber();
    if (!subscriber.ok()) return subscriber.status();
    if (!subscriber->has_value()) {
      return absl::NotFoundError(absl::StrCat(
          "source ", request.source(), " has no Event Platform subscriber (none named \"",
          (*source)->platform().subscriber_name, "\"): it has no logs"));
    }
    query.subscriber_id = (*subscriber)->id;
  } else {
    absl::StatusOr<PlatformSource::Selected> selected =
        (*source)->Select(request.subscription_id());
    if (!selected.ok()) return selected.status();
    query.subscriber_id = selected->subscriber.id;
    query.subscription_id = selected->subscription.id;
  }
  query.log_type = request.log_type();
  query.from = request.from();
  query.to = request.to();
  query.limit = std::min(request.page_size(), kMaxLogPageSize);
  query.page_token = request.page_token();
  absl::StatusOr<PlatformLogPage> page = (*source)->client().Logs(std::move(query));
  if (!page.ok()) return page.status();
  for (const PlatformLog& log : page->logs) {
    v1::PlatformLogEntry& entry = *response.add_logs();
    entry.set_log_id(log.log_id);
    entry.set_log_type(log.log_type);
    entry.set_timestamp(log.timestamp);
    entry.set_subscriber_id(log.subscriber_id);
    entry.set_subscription_id(log.subscription_id);
    entry.set_operation(log.operation);
    entry.set_error_type(log.error_type);
    entry.set_error_reason(log.error_reason);
    entry.set_error_code(log.error_code);
    entry.set_error_message(log.error_message);
  }
  response.set_next_page_token(page->next_page_token);
  return absl::OkStatus();
}

absl::Status PlatformAdmin::Check(const std::string&,
                                  const v1::CheckPlatformSubscriptionRequest& request,
                                  v1::CheckPlatformSubscriptionResponse& response) {
  absl::StatusOr<PlatformSource*> source = Find(request.source());
  if (!source.ok()) return source.status();
  PlatformCheckOptions options;
  options.public_url = request.public_url();
  options.subscription_id = request.subscription_id();
  absl::StatusOr<PlatformCheckReport> report =
      CheckPlatformSource(**source, deps_.plugins, options);
  if (!report.ok()) return report.status();
  for (const PlatformCheckFinding& finding : report->findings) {
    v1::PlatformCheckFinding& out = *response.add_findings();
    out.set_outcome(ToProto(finding.outcome));
    out.set_check(finding.check);
    out.set_subscription_id(finding.subscription_id);
    out.set_detail(finding.detail);
    out.set_fix(finding.fix);
  }
  response.set_problems(static_cast<uint32_t>(report->problems()));
  response.set_expected_destination(report->expected_destination);
  return absl::OkStatus();
}

}  // namespace pimgate
