// PlatformSource: the source's subscriber and subscriptions found by name and destination, and
// the one call that creates or updates them (Subscribe).
#include "pim/platform_source.h"

#include <algorithm>
#include <set>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "common/base_url.h"
#include "common/glob.h"
#include "events/event_type.h"
#include "pim/akeneo_client.h"
#include "spdlog/spdlog.h"

namespace pimgate {
namespace {

// Akeneo's Event Platform types all start with this.
constexpr char kAkeneoTypePrefix[] = "com.akeneo.pim.";
// Pages of action logs SuspendedByUser reads at most (100 entries each on the fake).
constexpr int kMaxLogPages = 20;
// SuspendedByUser looks this far before `since`: the log entry of a suspension and the
// subscription's updated_at are written by the platform at about the same time.
constexpr absl::Duration kLogSlack = absl::Minutes(5);

// A public URL: what Akeneo posts to, so http(s), a host and an optional path prefix.
constexpr BaseUrl::ParseOptions kPublicUrlRules = {
    .allow_path = true,
    .scheme_hint = " (Akeneo delivers to https:// destinations only)",
    .user_info_hint = " (Akeneo's destinations take no authentication)",
};

std::string PathOf(const std::string& url) {
  // scheme://authority/path?query: the path, without query or fragment.
  const std::size_t scheme = url.find("://");
  const std::size_t start = url.find('/', scheme == std::string::npos ? 0 : scheme + 3);
  if (start == std::string::npos) return "/";
  const std::size_t end = url.find_first_of("?#", start);
  return url.substr(start, end == std::string::npos ? std::string::npos : end - start);
}

}  // namespace

absl::StatusOr<std::vector<std::string>> ResolvePlatformEventTypes(
    const std::vector<std::string>& requested) {
  std::set<std::string> wanted;       // Akeneo types asked for
  std::vector<std::string> unlisted;  // com.akeneo.* types the catalogue does not list
  for (const std::string& entry : requested) {
    if (entry.empty()) return absl::InvalidArgumentError("an event type is empty");
    if (absl::StartsWith(entry, kAkeneoTypePrefix)) {
      if (FindDocumentedEventPlatformType(entry) != nullptr) {
        wanted.insert(entry);
      } else if (std::find(unlisted.begin(), unlisted.end(), entry) == unlisted.end()) {
        unlisted.push_back(entry);
      }
      continue;
    }
    bool matched = false;
    for (const EventPlatformType& type : DocumentedEventPlatformTypes()) {
      if (GlobMatch(entry, type.canonical)) {
        wanted.insert(std::string(type.upstream));
        matched = true;
      }
    }
    if (!matched) {
      return absl::InvalidArgumentError(absl::StrCat(
          "event type \"", entry,
          "\" matches no type of Akeneo's Event Platform catalogue: give Akeneo's type "
          "(com.akeneo.pim.v1.product.updated), pimgate's (product.updated) or a glob over "
          "pimgate's (product.*); docs/event-platform-api.md lists them"));
    }
  }
  std::vector<std::string> out;
  for (const EventPlatformType& type : DocumentedEventPlatformTypes()) {
    if (wanted.contains(std::string(type.upstream))) out.emplace_back(type.upstream);
  }
  out.insert(out.end(), unlisted.begin(), unlisted.end());
  return out;
}

absl::StatusOr<std::unique_ptr<PlatformSource>> PlatformSource::Create(const SourceConfig& source,
                                                                       AkeneoClient& pim,
                                                                       EventLog* log) {
  if (!source.platform.has_value() || !source.rest.has_value()) {
    return absl::InvalidArgumentError(
        absl::StrCat("source ", source.name,
                     " has no `platform` (with `rest`): pimgate cannot manage its Event "
                     "Platform subscriptions"));
  }
  absl::StatusOr<std::unique_ptr<PlatformClient>> client =
      PlatformClient::Create(*source.platform, *source.rest, pim);
  if (!client.ok()) {
    return absl::Status(
        client.status().code(),
        absl::StrCat("sources ", source.name, ": platform: ", client.status().message()));
  }
  return std::make_unique<PlatformSource>(source, *std::move(client), log);
}

PlatformSource::PlatformSource(SourceConfig source, std::unique_ptr<PlatformClient> client,
                               EventLog* log)
    : source_(std::move(source)), client_(std::move(client)), log_(log) {}

absl::StatusOr<std::vector<PlatformSubscriber>> PlatformSource::ListSubscribers() const {
  return client_->ListSubscribers();
}

absl::StatusOr<std::optional<PlatformSubscriber>> PlatformSource::FindSubscriber() const {
  absl::StatusOr<std::vector<PlatformSubscriber>> subscribers = client_->ListSubscribers();
  if (!subscribers.ok()) return subscribers.status();
  std::optional<PlatformSubscriber> revoked;
  for (PlatformSubscriber& subscriber : *subscribers) {
    if (subscriber.name != platform().subscriber_name || subscriber.status == "deleted") continue;
    if (subscriber.status == "active" || subscriber.status.empty()) return std::move(subscriber);
    if (!revoked.has_value()) revoked = std::move(subscriber);
  }
  return revoked;
}

absl::StatusOr<std::vector<PlatformSubscription>> PlatformSource::SubscriptionsOf(
    const std::string& subscriber_id) const {
  absl::StatusOr<std::vector<PlatformSubscription>> subscriptions =
      client_->ListSubscriptions(subscriber_id);
  if (!subscriptions.ok()) return subscriptions.status();
  std::erase_if(*subscriptions,
                [](const PlatformSubscription& s) { return s.status == "deleted"; });
  return subscriptions;
}

absl::StatusOr<PlatformSource::Selected> PlatformSource::Select(
    const std::string& subscription_id) const {
  absl::StatusOr<std::optional<PlatformSubscriber>> subscriber = FindSubscriber();
  if (!subscriber.ok()) return subscriber.status();
  if (!subscriber->has_value()) {
    return absl::NotFoundError(absl::StrCat(
        "source ", name(), " has no Event Platform subscriber (none named \"",
        platform().subscriber_name, "\"): create one with `pimgatectl platform subscribe ", name(),
        " --url PUBLIC_URL --events TYPE...`"));
  }
  absl::StatusOr<std::vector<PlatformSubscription>> subscriptions =
      SubscriptionsOf((*subscriber)->id);
  if (!subscriptions.ok()) return subscriptions.status();
  if (!subscription_id.empty()) {
    for (PlatformSubscription& s : *subscriptions) {
      if (s.id == subscription_id) return Selected{**subscriber, std::move(s)};
    }
    return absl::NotFoundError(
        absl::StrCat("subscriber \"", platform().subscriber_name, "\" of source ", name(),
                     " has no subscription ", subscription_id,
                     " (`pimgatectl platform subscriptions ", name(), "` lists them)"));
  }
  if (subscriptions->empty()) {
    return absl::NotFoundError(
        absl::StrCat("source ", name(),
                     " has no Event Platform subscription: create one with `pimgatectl "
                     "platform subscribe ",
                     name(), " --url PUBLIC_URL --events TYPE...`"));
  }
  if (subscriptions->size() > 1) {
    std::vector<std::string> ids;
    for (const PlatformSubscription& s : *subscriptions) ids.push_back(s.id);
    return absl::FailedPreconditionError(absl::StrCat(
        "source ", name(), " has ", subscriptions->size(),
        " subscriptions: name one with --subscription (", absl::StrJoin(ids, ", "), ")"));
  }
  return Selected{**subscriber, std::move(subscriptions->front())};
}

bool PlatformSource::DeliversHere(const std::string& url) const {
  return absl::EndsWith(PathOf(url), source_.path);
}

absl::StatusOr<std::string> PlatformSource::DestinationFor(const std::string& public_url) const {
  if (public_url.empty()) {
    return absl::InvalidArgumentError(
        "the public URL is empty: give pimgate's base URL as Akeneo reaches it "
        "(https://pimgate.example.com)");
  }
  absl::StatusOr<BaseUrl> base = BaseUrl::Parse(public_url, kPublicUrlRules);
  if (!base.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("public URL: ", base.status().message()));
  }
  return base->Resolve(source_.path);
}

std::string PlatformSource::PublicUrlKey() const {
  return absl::StrCat("platform/", source_.name, "/public_url");
}

std::string PlatformSource::RememberedPublicUrl() const {
  if (log_ == nullptr) return "";
  absl::StatusOr<std::optional<std::string>> saved = log_->GetMeta(PublicUrlKey());
  if (!saved.ok()) {
    spdlog::warn("source {}: cannot read the remembered public URL ({}): {}", name(),
                 PublicUrlKey(), std::string(saved.status().message()));
    return "";
  }
  return saved->value_or("");
}

absl::Status PlatformSource::CheckSecrets() const {
  const auto check = [this](const Secret& secret, const char* key) -> absl::Status {
    const std::size_t length = secret.value.size();
    if (length >= kPlatformMinSecretLength && length <= kPlatformMaxSecretLength) {
      return absl::OkStatus();
    }
    return absl::FailedPreconditionError(absl::StrCat(
        "sources ", name(), ": ", key, " (from ", secret.Describe(), ") has ", length,
        " characters; an Event Platform subscription's secret must have ", kPlatformMinSecretLength,
        " to ", kPlatformMaxSecretLength,
        " (Akeneo's limit): use a longer secret in pimgate's configuration, restart pimgate, then "
        "subscribe"));
  };
  if (absl::Status status = check(source_.secret, "secret"); !status.ok()) return status;
  if (source_.secondary_secret.has_value()) {
    return check(*source_.secondary_secret, "secondary_secret");
  }
  return absl::OkStatus();
}

absl::StatusOr<PlatformSource::SubscribeResult> PlatformSource::Subscribe(
    const SubscribeRequest& request) {
  // Everything that needs no call first: a bad request leaves nothing behind.
  absl::StatusOr<std::string> destination = DestinationFor(request.public_url);
  if (!destination.ok()) return destination.status();
  absl::StatusOr<std::vector<std::string>> events = ResolvePlatformEventTypes(request.events);
  if (!events.ok()) return events.status();
  if (absl::Status secrets = CheckSecrets(); !secrets.ok()) return secrets;
  absl::StatusOr<BaseUrl> base = BaseUrl::Parse(request.public_url, kPublicUrlRules);
  absl::MutexLock lock(&subscribe_mu_);
  return SubscribeLocked(request, *events, *destination, base->spec());
}

absl::StatusOr<PlatformSource::SubscribeResult> PlatformSource::SubscribeLocked(
    const SubscribeRequest& request, const std::vector<std::string>& events,
    const std::string& destination, const std::string& public_url) {
  SubscribeResult result;
  result.destination = destination;
  // Notifications (suspended, revoked, resumed) come to the source's notification_path, or to its
  // path, where the gateway recognises them by their shape; signed with notification_secret or
  // the source's secret, both of which the gateway verifies them with.
  const std::string notification_url = absl::StrCat(
      public_url, source_.notification_path.empty() ? source_.path : source_.notification_path);
  const Secret& notification_secret =
      source_.notification_secret.has_value() ? *source_.notification_secret : source_.secret;
  std::vector<std::string> channels = {"webhook"};
  if (!platform().technical_email.empty()) channels.insert(channels.begin(), "email");

  absl::StatusOr<std::optional<PlatformSubscriber>> found = FindSubscriber();
  if (!found.ok()) return found.status();
  if (found->has_value() && (*found)->status != "active" && !(*found)->status.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the subscriber \"", platform().subscriber_name, "\" (", (*found)->id, ") of source ",
        name(), " is ", (*found)->status,
        ": Akeneo revokes a subscriber when its Connection or App is removed from the PIM; "
        "check the Connection (and its Event Platform permission), then delete or rename the "
        "revoked subscriber (platform.subscriber_name) and subscribe again"));
  }
  if (!found->has_value()) {
    PlatformSubscriberRequest create;
    create.name = platform().subscriber_name;
    create.contact.technical_email = platform().technical_email;
    create.contact.notification_channels = channels;
    create.contact.notification_webhook_url = notification_url;
    create.notification_webhook_secret = notification_secret.value;
    absl::StatusOr<PlatformSubscriber> created = client_->CreateSubscriber(std::move(create));
    if (!created.ok()) return created.status();
    result.subscriber = *std::move(created);
    result.subscriber_created = true;
    spdlog::info("source {}: Event Platform subscriber \"{}\" created ({})", name(),
                 result.subscriber.name, result.subscriber.id);
  } else {
    result.subscriber = **std::move(found);
    if (result.subscriber.contact.notification_webhook_url != notification_url) {
      PlatformSubscriberUpdate update;
      update.notification_channels = channels;
      update.notification_webhook_url = notification_url;
      update.notification_webhook_secret = notification_secret.value;
      absl::StatusOr<PlatformSubscriber> updated =
          client_->UpdateSubscriber(result.subscriber.id, std::move(update));
      if (!updated.ok()) return updated.status();
      result.subscriber = *std::move(updated);
      result.subscriber_updated = true;
      spdlog::info("source {}: Event Platform subscriber {} now notifies {}", name(),
                   result.subscriber.id, notification_url);
    }
  }

  absl::StatusOr<std::vector<PlatformSubscription>> existing =
      SubscriptionsOf(result.subscriber.id);
  if (!existing.ok()) return existing.status();
  const std::string secondary =
      source_.secondary_secret.has_value() ? source_.secondary_secret->value : "";
  auto same = std::find_if(existing->begin(), existing->end(), [&](const PlatformSubscription& s) {
    return s.url == destination && s.status != "revoked";
  });
  if (same != existing->end()) {
    PlatformSubscriptionUpdate update;
    if (!events.empty()) update.events = events;
    // The secret object is replaced as a whole: a secondary the source no longer has goes.
    update.primary_secret = source_.secret.value;
    if (!secondary.empty()) update.secondary_secret = secondary;
    if (!request.filter.empty()) update.filter = request.filter;
    if (request.send_product_identifier) update.send_product_identifier = true;
    absl::StatusOr<PlatformSubscription> updated =
        client_->UpdateSubscription(result.subscriber.id, same->id, std::move(update));
    if (!updated.ok()) return updated.status();
    result.subscription = *std::move(updated);
    spdlog::info("source {}: Event Platform subscription {} to {} updated ({} event type(s))",
                 name(), result.subscription.id, destination, result.subscription.events.size());
  } else {
    if (events.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "a new subscription needs its event types: give --events (e.g. product.* or "
          "com.akeneo.pim.v1.product.updated); subscriber \"",
          platform().subscriber_name, "\" has no subscription to ", destination, " yet"));
    }
    PlatformSubscriptionRequest create;
    create.events = events;
    create.url = destination;
    create.primary_secret = source_.secret.value;
    create.secondary_secret = secondary;
    create.filter = request.filter;
    if (request.send_product_identifier) create.send_product_identifier = true;
    absl::StatusOr<PlatformSubscription> created =
        client_->CreateSubscription(result.subscriber.id, std::move(create));
    if (!created.ok()) return created.status();
    result.subscription = *std::move(created);
    result.subscription_created = true;
    spdlog::info("source {}: Event Platform subscription {} created: {} event type(s) to {}",
                 name(), result.subscription.id, result.subscription.events.size(), destination);
  }

  if (log_ != nullptr) {
    if (absl::Status saved = log_->PutMeta(PublicUrlKey(), public_url); !saved.ok()) {
      spdlog::warn("source {}: cannot remember the public URL {} ({}): {}", name(), public_url,
                   PublicUrlKey(), std::string(saved.message()));
    }
  }
  return result;
}

absl::StatusOr<std::optional<bool>> PlatformSource::SuspendedByUser(
    const std::string& subscriber_id, const std::string& subscription_id,
    const std::string& since) const {
  PlatformLogQuery query;
  query.subscriber_id = subscriber_id;
  query.subscription_id = subscription_id;
  query.log_type = "action";
  absl::Time from;
  std::string error;
  if (!since.empty() && absl::ParseTime(absl::RFC3339_full, since, &from, &error)) {
    query.from = absl::FormatTime(absl::RFC3339_sec, from - kLogSlack, absl::UTCTimeZone());
  }
  std::optional<bool> by_user;
  absl::Time latest = absl::InfinitePast();
  for (int page = 0; page < kMaxLogPages; ++page) {
    absl::StatusOr<PlatformLogPage> logs = client_->Logs(query);
    if (!logs.ok()) return logs.status();
    for (const PlatformLog& log : logs->logs) {
      if (!log.subscription_id.empty() && log.subscription_id != subscription_id) continue;
      if (!absl::StrContains(log.operation, "suspended")) continue;
      absl::Time at = absl::InfinitePast();
      absl::ParseTime(absl::RFC3339_full, log.timestamp, &at, &error);
      // Entries come oldest first; equal or unreadable times: the later entry wins.
      if (at < latest) continue;
      latest = at;
      by_user = absl::StrContains(log.operation, "user");
    }
    if (logs->next_page_token.empty()) break;
    query.page_token = logs->next_page_token;
  }
  return by_user;
}

}  // namespace pimgate
