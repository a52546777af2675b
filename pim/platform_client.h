// PlatformClient: pimgate's client of Akeneo's Event Platform management API (subscribers,
// subscriptions, suspension, logs, replay), over HttpConnection. docs/event-platform-api.md lists
// the API facts it relies on and their sources.
#ifndef PIMGATE_PIM_PLATFORM_CLIENT_H_
#define PIMGATE_PIM_PLATFORM_CLIENT_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/base_url.h"
#include "config/config.h"

namespace pimgate {

class AkeneoClient;

// Akeneo's documented limits (api.akeneo.com/event-platform/limitations and concepts). The client
// does not enforce them: the platform refuses what exceeds them, and its answer reaches the user.
inline constexpr int kPlatformMaxSubscribersPerPim = 20;
inline constexpr int kPlatformMaxSubscriptionsPerSubscriber = 20;
inline constexpr std::size_t kPlatformMinSecretLength = 16;
inline constexpr std::size_t kPlatformMaxSecretLength = 256;
inline constexpr int kPlatformMaxCustomHeaders = 5;

// A subscriber's contact (concepts, notification-webhooks).
struct PlatformContact {
  std::string technical_email;
  // "email", "webhook"; empty: not sent (Akeneo's default is ["email"]).
  std::vector<std::string> notification_channels;
  std::string notification_webhook_url;
};

struct PlatformSubscriber {
  std::string id;
  std::string name;
  std::string subject;  // the PIM's URL (X-PIM-URL)
  std::string status;   // "active", "deleted", "revoked"
  std::string client_id;
  PlatformContact contact;
  std::string created_at;  // as Akeneo wrote it (created_at or createdAt)
  std::string updated_at;
  std::string json;  // the object as received
};

struct PlatformSubscriberRequest {
  std::string name;
  PlatformContact contact;
  // Signs notification webhooks; Akeneo never returns it. Sent when not empty.
  std::string notification_webhook_secret;
};

// PATCH: only what is set is sent.
struct PlatformSubscriberUpdate {
  std::optional<std::string> name;
  std::optional<std::string> technical_email;
  // An empty list resets the channels to Akeneo's default (["email"]).
  std::optional<std::vector<std::string>> notification_channels;
  std::optional<std::string> notification_webhook_url;
  std::optional<std::string> notification_webhook_secret;
};

struct PlatformSubscription {
  std::string id;
  std::string subscriber_id;
  std::string source;   // "pim"
  std::string subject;  // the PIM's URL
  std::string type;     // "https", "pubsub", "kafka"
  std::string status;   // "active", "suspended", "revoked", "deleted"
  std::vector<std::string> events;
  std::string url;  // config.url of an https subscription
  // Whether config.secret has a secondary (Akeneo returns secrets redacted).
  bool has_secondary_secret = false;
  std::vector<std::string> header_names;  // config.headers (values are redacted by Akeneo)
  std::string filter;
  bool send_product_identifier = false;
  std::string created_at;
  std::string updated_at;
  std::string json;  // the object as received (secrets redacted by Akeneo)
};

// An HTTPS subscription of the source's PIM ("source": "pim", "subject": the PIM's URL, "type":
// "https"): the only kind pimgate creates.
struct PlatformSubscriptionRequest {
  std::vector<std::string> events;  // "com.akeneo.pim.v1.product.updated", ...
  std::string url;                  // https destination
  std::string primary_secret;
  std::string secondary_secret;  // sent when not empty
  std::vector<std::pair<std::string, std::string>> headers;
  std::string filter;  // sent when not empty
  std::optional<bool> send_product_identifier;
};

// PATCH: only what is set is sent. `url`, the secrets and `headers` go in `config`.
struct PlatformSubscriptionUpdate {
  std::optional<std::vector<std::string>> events;
  std::optional<std::string> url;
  std::optional<std::string> primary_secret;
  std::optional<std::string> secondary_secret;
  std::optional<std::vector<std::pair<std::string, std::string>>> headers;
  std::optional<std::string> filter;
  std::optional<bool> send_product_identifier;
};

// Filters of GET /logs. Empty fields are not sent. The parameter names are pimgate's reading of
// an API whose reference could not be read (docs/event-platform-api.md, "Logs").
struct PlatformLogQuery {
  std::string subscriber_id;
  std::string subscription_id;
  std::string log_type;  // "action" or "error"
  std::string from;      // RFC 3339
  std::string to;
  int limit = 0;           // 0: the platform's default
  std::string page_token;  // the previous page's next_page_token
};

struct PlatformLog {
  std::string log_id;
  std::string log_type;  // "action" or "error"
  std::string timestamp;
  std::string subscriber_id;
  std::string subscription_id;
  std::string operation;  // "failed_to_deliver_event", "subscription_suspended_by_the_user", ...
  std::string error_type;
  std::string error_reason;  // stable code, e.g. "destination_timeout"
  int error_code = 0;        // HTTP status (500 for transport failures), 0 when absent
  std::string error_message;
  std::string json;  // the entry as received
};

struct PlatformLogPage {
  std::vector<PlatformLog> logs;
  std::string next_page_token;  // empty on the last page
};

// A replay of the events captured while a subscription was suspended (capture-and-replay). The
// endpoint's shape is pimgate's assumption (docs/event-platform-api.md, "Capture and replay").
struct PlatformReplay {
  std::string id;
  std::string subscription_id;
  std::string status;  // "in_progress", "completed", ...
  int64_t total = 0;
  int64_t delivered = 0;
  int64_t failed = 0;
  std::string created_at;
  std::string completed_at;
  std::string json;
};

// Counters since the client was created.
struct PlatformClientStats {
  uint64_t calls = 0;      // HTTP requests sent
  uint64_t retries = 0;    // attempts repeated after 408, 429, 5xx, 401 or a network error
  uint64_t throttled = 0;  // 429 answers
  uint64_t failures = 0;   // calls that finally failed
  uint64_t recovered = 0;  // creations found done after an ambiguous failure (not repeated)
};

// The HTTP status the management API answered, when a status came from one of its answers.
std::optional<int> PlatformHttpStatus(const absl::Status& status);

// Thread-safe. Calls run on the client's own threads (each with one kept-alive connection); the
// *Async forms return at once and call `done` on such a thread, the plain forms block the caller
// until the answer, so they are for admin and watch threads, never for an I/O thread.
//
// Every request carries X-PIM-URL (rest.base_url), X-PIM-TOKEN (a PIM access token from the
// token source, renewed once when the platform answers 401) and X-PIM-CLIENT-ID (rest.client_id).
//
// Errors: an answer of the platform that is not a success becomes a status whose message holds
// the method, the path, the HTTP code and the platform's body verbatim (bounded, with the token
// and the request's secrets replaced by <redacted>), and whose code follows the HTTP one: 400
// and 422 InvalidArgument, 401 Unauthenticated, 403 PermissionDenied, 404 NotFound, 409 and
// other 4xx FailedPrecondition. 408, 429 and 5xx, timeouts and network errors are retried up to
// `max_attempts` with exponential backoff (a longer Retry-After wins), then Unavailable (or
// DeadlineExceeded). PlatformHttpStatus() gives the HTTP code back. A creation that failed
// ambiguously (5xx, timeout, connection lost) is not repeated blindly: the client first lists
// what exists and returns an identical subscriber (same name) or subscription (same url and
// events) when the first attempt did go through. Nothing here logs a token, a secret or a body.
class PlatformClient {
 public:
  template <typename T>
  using Callback = std::function<void(absl::StatusOr<T>)>;
  // Returns a PIM access token; `rejected` is a token the platform refused (renew it).
  using TokenSource = std::function<absl::StatusOr<std::string>(std::string_view rejected)>;

  // `pim_url` (X-PIM-URL, its spec()) and `client_id` (X-PIM-CLIENT-ID) identify the PIM
  // connection whose tokens `token_source` returns. Checks the configuration; does not connect.
  static absl::StatusOr<std::unique_ptr<PlatformClient>> Create(const PlatformConfig& config,
                                                                const BaseUrl& pim_url,
                                                                std::string client_id,
                                                                TokenSource token_source);
  // The usual wiring: the source's `rest` gives the PIM URL and client id, and `pim` (which must
  // outlive the client) its tokens.
  static absl::StatusOr<std::unique_ptr<PlatformClient>> Create(const PlatformConfig& config,
                                                                const RestConfig& rest,
                                                                AkeneoClient& pim);
  virtual ~PlatformClient() = default;

  // ---- Subscribers ----
  virtual void CreateSubscriberAsync(PlatformSubscriberRequest request,
                                     Callback<PlatformSubscriber> done) = 0;
  virtual void ListSubscribersAsync(Callback<std::vector<PlatformSubscriber>> done) = 0;
  virtual void GetSubscriberAsync(std::string subscriber_id, Callback<PlatformSubscriber> done) = 0;
  virtual void UpdateSubscriberAsync(std::string subscriber_id, PlatformSubscriberUpdate update,
                                     Callback<PlatformSubscriber> done) = 0;
  // Deletes the subscriber (and, on Akeneo's side, its subscriptions); gives the deleted one.
  virtual void DeleteSubscriberAsync(std::string subscriber_id,
                                     Callback<PlatformSubscriber> done) = 0;

  // ---- Subscriptions ----
  virtual void CreateSubscriptionAsync(std::string subscriber_id,
                                       PlatformSubscriptionRequest request,
                                       Callback<PlatformSubscription> done) = 0;
  virtual void ListSubscriptionsAsync(std::string subscriber_id,
                                      Callback<std::vector<PlatformSubscription>> done) = 0;
  virtual void GetSubscriptionAsync(std::string subscriber_id, std::string subscription_id,
                                    Callback<PlatformSubscription> done) = 0;
  virtual void UpdateSubscriptionAsync(std::string subscriber_id, std::string subscription_id,
                                       PlatformSubscriptionUpdate update,
                                       Callback<PlatformSubscription> done) = 0;
  virtual void DeleteSubscriptionAsync(std::string subscriber_id, std::string subscription_id,
                                       Callback<PlatformSubscription> done) = 0;
  virtual void SuspendSubscriptionAsync(std::string subscriber_id, std::string subscription_id,
                                        Callback<PlatformSubscription> done) = 0;
  virtual void ResumeSubscriptionAsync(std::string subscriber_id, std::string subscription_id,
                                       Callback<PlatformSubscription> done) = 0;

  // ---- Logs and replay ----
  virtual void LogsAsync(PlatformLogQuery query, Callback<PlatformLogPage> done) = 0;
  // Asks the platform to replay what it captured while the subscription was suspended (it must
  // be active again).
  virtual void StartReplayAsync(std::string subscriber_id, std::string subscription_id,
                                Callback<PlatformReplay> done) = 0;
  // The subscription's latest replay, with its progress.
  virtual void GetReplayAsync(std::string subscriber_id, std::string subscription_id,
                              Callback<PlatformReplay> done) = 0;

  // ---- Blocking forms ----
  absl::StatusOr<PlatformSubscriber> CreateSubscriber(PlatformSubscriberRequest request) {
    return Wait<PlatformSubscriber>(
        [&](auto done) { CreateSubscriberAsync(std::move(request), std::move(done)); });
  }
  absl::StatusOr<std::vector<PlatformSubscriber>> ListSubscribers() {
    return Wait<std::vector<PlatformSubscriber>>(
        [&](auto done) { ListSubscribersAsync(std::move(done)); });
  }
  absl::StatusOr<PlatformSubscriber> GetSubscriber(std::string subscriber_id) {
    return Wait<PlatformSubscriber>(
        [&](auto done) { GetSubscriberAsync(std::move(subscriber_id), std::move(done)); });
  }
  absl::StatusOr<PlatformSubscriber> UpdateSubscriber(std::string subscriber_id,
                                                      PlatformSubscriberUpdate update) {
    return Wait<PlatformSubscriber>([&](auto done) {
      UpdateSubscriberAsync(std::move(subscriber_id), std::move(update), std::move(done));
    });
  }
  absl::StatusOr<PlatformSubscriber> DeleteSubscriber(std::string subscriber_id) {
    return Wait<PlatformSubscriber>(
        [&](auto done) { DeleteSubscriberAsync(std::move(subscriber_id), std::move(done)); });
  }
  absl::StatusOr<PlatformSubscription> CreateSubscription(std::string subscriber_id,
                                                          PlatformSubscriptionRequest request) {
    return Wait<PlatformSubscription>([&](auto done) {
      CreateSubscriptionAsync(std::move(subscriber_id), std::move(request), std::move(done));
    });
  }
  absl::StatusOr<std::vector<PlatformSubscription>> ListSubscriptions(std::string subscriber_id) {
    return Wait<std::vector<PlatformSubscription>>(
        [&](auto done) { ListSubscriptionsAsync(std::move(subscriber_id), std::move(done)); });
  }
  absl::StatusOr<PlatformSubscription> GetSubscription(std::string subscriber_id,
                                                       std::string subscription_id) {
    return Wait<PlatformSubscription>([&](auto done) {
      GetSubscriptionAsync(std::move(subscriber_id), std::move(subscription_id), std::move(done));
    });
  }
  absl::StatusOr<PlatformSubscription> UpdateSubscription(std::string subscriber_id,
                                                          std::string subscription_id,
                                                          PlatformSubscriptionUpdate update) {
    return Wait<PlatformSubscription>([&](auto done) {
      UpdateSubscriptionAsync(std::move(subscriber_id), std::move(subscription_id),
                              std::move(update), std::move(done));
    });
  }
  absl::StatusOr<PlatformSubscription> DeleteSubscription(std::string subscriber_id,
                                                          std::string subscription_id) {
    return Wait<PlatformSubscription>([&](auto done) {
      DeleteSubscriptionAsync(std::move(subscriber_id), std::move(subscription_id),
                              std::move(done));
    });
  }
  absl::StatusOr<PlatformSubscription> SuspendSubscription(std::string subscriber_id,
                                                           std::string subscription_id) {
    return Wait<PlatformSubscription>([&](auto done) {
      SuspendSubscriptionAsync(std::move(subscriber_id), std::move(subscription_id),
                               std::move(done));
    });
  }
  absl::StatusOr<PlatformSubscription> ResumeSubscription(std::string subscriber_id,
                                                          std::string subscription_id) {
    return Wait<PlatformSubscription>([&](auto done) {
      ResumeSubscriptionAsync(std::move(subscriber_id), std::move(subscription_id),
                              std::move(done));
    });
  }
  absl::StatusOr<PlatformLogPage> Logs(PlatformLogQuery query) {
    return Wait<PlatformLogPage>([&](auto done) { LogsAsync(std::move(query), std::move(done)); });
  }
  absl::StatusOr<PlatformReplay> StartReplay(std::string subscriber_id,
                                             std::string subscription_id) {
    return Wait<PlatformReplay>([&](auto done) {
      StartReplayAsync(std::move(subscriber_id), std::move(subscription_id), std::move(done));
    });
  }
  absl::StatusOr<PlatformReplay> GetReplay(std::string subscriber_id, std::string subscription_id) {
    return Wait<PlatformReplay>([&](auto done) {
      GetReplayAsync(std::move(subscriber_id), std::move(subscription_id), std::move(done));
    });
  }

  virtual PlatformClientStats stats() const = 0;

  // Fails queued and later calls with Cancelled, aborts those in flight, and joins the threads.
  // Idempotent; the destructor calls it.
  virtual void Shutdown() = 0;

 private:
  template <typename T, typename Start>
  static absl::StatusOr<T> Wait(Start&& start) {
    std::promise<absl::StatusOr<T>> promise;
    std::future<absl::StatusOr<T>> future = promise.get_future();
    start(Callback<T>(
        [&promise](absl::StatusOr<T> result) { promise.set_value(std::move(result)); }));
    return future.get();
  }
};

}  // namespace pimgate

#endif  // PIMGATE_PIM_PLATFORM_CLIENT_H_
