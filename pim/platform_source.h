// PlatformSource: one `kind: event_platform` source with `platform:` as the Event Platform sees
// it: its management client, its subscriber (the one named platform.subscriber_name) and that
// subscriber's subscriptions. What the admin API, `check` and the watch share.
#ifndef PIMGATE_PIM_PLATFORM_SOURCE_H_
#define PIMGATE_PIM_PLATFORM_SOURCE_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "config/config.h"
#include "core/log/event_log.h"
#include "pim/platform_client.h"

namespace pimgate {

class AkeneoClient;

// Akeneo's event types for `requested`, in the catalogue's order, without duplicates. Each entry
// is Akeneo's own type ("com.akeneo.pim.v1.product-model.updated", kept as written even when the
// catalogue does not list it yet: Akeneo adds types), pimgate's canonical type
// ("product_model.updated") or a glob over canonical types ("product.*"), which expands to every
// type of Akeneo's catalogue (events/event_type.h) it matches. InvalidArgument naming the entry
// when a canonical type or glob matches nothing in the catalogue.
absl::StatusOr<std::vector<std::string>> ResolvePlatformEventTypes(
    const std::vector<std::string>& requested);

// Thread-safe; every method but the accessors calls the management API and blocks until it
// answers (admin and watch threads only, never an I/O thread). Errors of the API come back as
// PlatformClient gives them: Akeneo's HTTP code and body in the message.
class PlatformSource {
 public:
  // What Subscribe() creates or updates.
  struct SubscribeRequest {
    // pimgate's base URL as Akeneo reaches it; the destination is it + the source's path.
    std::string public_url;
    // As ResolvePlatformEventTypes takes them. Required for a new subscription; empty keeps an
    // existing subscription's types.
    std::vector<std::string> events;
    std::string filter;  // empty: none for a new one, unchanged for an existing one
    bool send_product_identifier = false;
  };
  struct SubscribeResult {
    PlatformSubscriber subscriber;
    bool subscriber_created = false;
    bool subscriber_updated = false;  // its notification webhook was set
    PlatformSubscription subscription;
    bool subscription_created = false;  // false: the one delivering there was updated
    std::string destination;
  };
  // A subscription and its subscriber.
  struct Selected {
    PlatformSubscriber subscriber;
    PlatformSubscription subscription;
  };

  // `source` must have `platform` and `rest`; `pim` (its REST client, for PIM access tokens) and
  // `log` (for the metadata key kPublicUrlKey; may be null: not remembered) must outlive the
  // object. Checks the configuration; does not connect.
  static absl::StatusOr<std::unique_ptr<PlatformSource>> Create(const SourceConfig& source,
                                                                AkeneoClient& pim, EventLog* log);
  // With a ready client (tests).
  PlatformSource(SourceConfig source, std::unique_ptr<PlatformClient> client, EventLog* log);

  const std::string& name() const { return source_.name; }
  const SourceConfig& source() const { return source_; }
  const PlatformConfig& platform() const { return *source_.platform; }
  PlatformClient& client() const { return *client_; }
  // The event log (what pimgate stored of the source's events); null in tests without one.
  const EventLog* log() const { return log_; }

  // The source's subscriber: the active one named platform.subscriber_name, else a revoked one
  // of that name (so that its state can be reported); nullopt when there is none.
  absl::StatusOr<std::optional<PlatformSubscriber>> FindSubscriber() const;
  // Every subscriber the source's connection sees.
  absl::StatusOr<std::vector<PlatformSubscriber>> ListSubscribers() const;
  // The subscriber's subscriptions, deleted ones left out.
  absl::StatusOr<std::vector<PlatformSubscription>> SubscriptionsOf(
      const std::string& subscriber_id) const;
  // `subscription_id` among the source subscriber's subscriptions, or, when empty, its only
  // one. NotFound when there is no subscriber or no such subscription, FailedPrecondition naming
  // them when it has several; each message says what to do.
  absl::StatusOr<Selected> Select(const std::string& subscription_id) const;

  // Whether `url`'s path is the source's path (the subscription delivers to this source).
  bool DeliversHere(const std::string& url) const;
  // public_url (checked: http(s), host, optional path; no query or user info) followed by the
  // source's path.
  absl::StatusOr<std::string> DestinationFor(const std::string& public_url) const;
  // The public URL of the last Subscribe(), "" when none is remembered.
  std::string RememberedPublicUrl() const;

  // Creates the subscriber when the source has none, points its notification webhook at the
  // source's notification_path (when the source has one), then creates a subscription to
  // DestinationFor(public_url) signed with the source's secret (and secondary_secret), or
  // updates the one of the subscriber that already delivers there (its types when given, its
  // secrets always, its filter when given). One call at a time per source. Remembers public_url.
  absl::StatusOr<SubscribeResult> Subscribe(const SubscribeRequest& request);

  // Who suspended the subscription, from the platform's action logs since `since` (RFC 3339;
  // empty: all): true for a user, false for the platform, nullopt when the logs say nothing.
  absl::StatusOr<std::optional<bool>> SuspendedByUser(const std::string& subscriber_id,
                                                      const std::string& subscription_id,
                                                      const std::string& since) const;

  // Metadata key (EventLog::GetMeta) of the public URL: "platform/<source>/public_url".
  std::string PublicUrlKey() const;

 private:
  // The secrets the subscription must sign with: checked against Akeneo's limits, so that a
  // refusal names the configuration key instead of a secret the user never sees.
  absl::Status CheckSecrets() const;
  absl::StatusOr<SubscribeResult> SubscribeLocked(const SubscribeRequest& request,
                                                  const std::vector<std::string>& events,
                                                  const std::string& destination,
                                                  const std::string& public_url)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(subscribe_mu_);

  const SourceConfig source_;
  const std::unique_ptr<PlatformClient> client_;
  EventLog* const log_;
  absl::Mutex subscribe_mu_;
};

}  // namespace pimgate

#endif  // PIMGATE_PIM_PLATFORM_SOURCE_H_
