// FakeEventPlatform: Akeneo's Event Platform for tests. A real HTTP(S) server on 127.0.0.1 (port
// 0) serving the management API (subscribers, subscriptions, suspend/resume, logs, replay), and a
// delivery engine that sends signed CloudEvents and notification webhooks to the URLs it was
// given, over real HTTP(S), the way the platform does. Only Akeneo's services are faked in
// pimgate's tests; this fake is written from Akeneo's documentation, not from pimgate's client.
//
// What it is written from (details, sources and gaps: docs/event-platform-api.md):
// - api.akeneo.com/event-platform, repository akeneo/pim-api-docs, content/event-platform/
//   (getting-started, concepts, authentication-and-authorization, key-platform-behaviors,
//   limitations, available-filters, notification-webhooks, logs, best-practices, faq);
//   capture-and-replay (published page; its "how to replay" section was not readable).
// - The OpenAPI of the management API as last kept in that repository
//   (content/swagger/aep/public-oas.yml, 2024-09-26): paths, status codes (201 on creation, 200
//   on reads, updates and deletions, 202 on suspend and resume; 400, 401, 403, 404, 409), the
//   error body {"errors":[{"message":"..."}]}, secrets of 16 to 256 characters. Paths in the
//   plural, as the current getting-started and the Logs example spell them.
// - The event catalogue (available-events.md, 2025-08-11).
//
// Documented rules it enforces: X-PIM-URL, X-PIM-TOKEN and X-PIM-CLIENT-ID on every call (401
// "tenant context not found or invalid credentials" otherwise; with a FakePim, the token must be
// one it issued and still accepts); the Event Platform permission of the connection (403 when
// creating or resuming subscriptions without it; removing it suspends every subscription); 20
// subscribers per PIM (409 "Maximum number of subscribers reached"); 20 subscriptions per
// subscriber; source "pim"; type https/pubsub/kafka with their config; HTTPS destination URLs;
// secrets of 16 to 256 characters; at most 5 custom headers, names [a-zA-Z0-9-] of at most 128
// characters, printable values of at most 256, reserved names refused; one filter of at most 500
// characters and 10 operators; notification channels email/webhook, webhook URL (HTTPS) and
// secret (16 to 256) required together; the notification secret never returned, subscription
// secrets returned as "***redacted***", custom header values redacted; statuses active,
// suspended, revoked, deleted.
//
// Delivery as documented: one CloudEvent 1.0 per POST, structured mode, subject = subscription
// id, source "akeneo-event-platform", dataschema, data.product.identifier only with
// send_product_identifier; X-AKENEO-SIGNATURE-PRIMARY / -SECONDARY (hex HMAC-SHA256 of the raw
// body) and X-AKENEO-SIGNATURE-ALGORITHM: HmacSHA256, custom headers added after signing;
// adaptive rate between max_rate (100/s) and min_rate (1/s): a 429 lowers it, a 200 raises it,
// Retry-After ignored; a 429'd event is retried, and counts as a failure once it stayed
// undelivered for throttled_give_up (1 h); a delivery timeout (5 s), 5xx or other 4xx is retried
// after retry_delays (5, 10, 20 min), then dropped; 404 or 3xx suspends at once; a success rate
// below 90 % over success_window (1 h) suspends. While suspended (less than capture_window, 10
// days, ago) events are captured; after a resume they can be replayed (HTTPS only). Notification
// webhooks (subscription.suspended.system / .user, subscription.revoked, subscription.resumed)
// go to the subscriber's notification_webhook_url, signed with notification_webhook_secret,
// User-Agent akeneo/event-platform, retried on 5xx and 429 after 1 s and 2 s.
//
// The fake's own choices where Akeneo is silent (each says so in its error message or below):
// error message wording; unknown event types refused (400); 409 for the subscriptions limit and
// for deleted or revoked subscriptions; suspend of a suspended and resume of an active
// subscription answer 202 unchanged; PATCH merges top-level fields and, in config, url, secret
// and headers each as a whole; the replay endpoint (POST and GET .../replay) and the logs query
// (subscriber_id, subscription_id, log_type, from, to, limit <= 100, page_token; answer
// {"items":[...],"next_page_token":"..."}); action log operation names other than
// subscription_suspended_by_the_user; error_reason values other than destination_timeout and
// connection_refused; User-Agent of event deliveries (akeneo/event-platform) and X-Correlation-ID
// (a UUID per attempt); the success-rate rule waits for min_deliveries_for_rate results; the rate
// halves on a 429 and grows by 10 % on a 200; the event answered 404/3xx is captured with those
// that follow; filters: user and user_type conditions are evaluated (=, in, and, or, not,
// parentheses), attribute/scope/channel/locale conditions count as matching.
#ifndef PIMGATE_TESTS_TESTING_FAKE_EVENT_PLATFORM_H_
#define PIMGATE_TESTS_TESTING_FAKE_EVENT_PLATFORM_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace pimgate::testing {

class FakePim;

class FakeEventPlatform {
 public:
  struct Options {
    bool tls = true;  // the management API over TLS (self-signed; see cert_file())
    // Credentials accepted. With `pim`, X-PIM-URL must be its base_url(), X-PIM-CLIENT-ID its
    // client_id and X-PIM-TOKEN a token it issued and still accepts. Without, these three.
    const FakePim* pim = nullptr;
    std::string pim_url = "https://pim.example.com";
    std::string client_id = "pim-client";
    std::string token = "pim-token";
    // The connection's "Event Platform" permission checkbox (SetPermission changes it).
    bool permission = true;

    // Documented limits.
    int max_subscribers_per_pim = 20;
    int max_subscriptions_per_subscriber = 20;

    // Delivery, documented values by default; tests shorten the durations.
    std::chrono::milliseconds delivery_timeout{5'000};
    std::vector<std::chrono::milliseconds> retry_delays{
        std::chrono::minutes(5), std::chrono::minutes(10), std::chrono::minutes(20)};
    double max_rate = 100;  // events per second per subscription
    double min_rate = 1;
    std::chrono::milliseconds throttled_give_up{std::chrono::hours(1)};
    std::chrono::milliseconds success_window{std::chrono::hours(1)};
    double min_success_rate = 0.9;
    int min_deliveries_for_rate = 10;
    std::chrono::milliseconds capture_window{std::chrono::hours(24 * 10)};
    std::chrono::milliseconds notification_timeout{5'000};
    std::vector<std::chrono::milliseconds> notification_retry_delays{std::chrono::seconds(1),
                                                                     std::chrono::seconds(2)};
    // Destinations are the tests' own servers: the CA to trust (their self-signed certificate),
    // or no verification.
    std::string destination_ca_file;
    bool destination_insecure_skip_verify = false;
    // Accept http:// destination and notification URLs (Akeneo accepts HTTPS only).
    bool allow_http_destinations = false;
  };

  FakeEventPlatform();
  explicit FakeEventPlatform(Options options);
  ~FakeEventPlatform();
  FakeEventPlatform(const FakeEventPlatform&) = delete;
  FakeEventPlatform& operator=(const FakeEventPlatform&) = delete;

  uint16_t port() const;
  // The management API's base URL: "https://127.0.0.1:PORT/api/v1".
  std::string api_url() const;
  // The management API's self-signed certificate, for a client's CA file ("" without TLS).
  const std::string& cert_file() const;

  // ---- Test hooks (thread-safe) ----
  struct Event {
    std::string type;              // "com.akeneo.pim.v1.product.updated"
    std::string data_json = "{}";  // the CloudEvent's data, without "author"
    std::string author_identifier = "b238e9f7-fcec-45bd-9431-d43cd624b244";
    std::string author_type = "user";
    std::string id;       // empty: a new UUID
    std::string time;     // empty: now, RFC 3339 UTC
    std::string pim_url;  // the PIM it happened in; empty: the accepted PIM's URL
  };
  // An event happens in the PIM: it is queued for every active subscription of that PIM that
  // tracks its type and whose filter matches, and captured for every suspended one. Returns the
  // CloudEvent id.
  std::string Publish(Event event);
  // The platform suspends a subscription ("subscription.suspended.system"), as after failures.
  void Suspend(const std::string& subscription_id, const std::string& reason);
  // The App or Connection is removed from the PIM: its subscribers and subscriptions are revoked
  // and its credentials refused from then on.
  void RevokeConnection();
  // Ticks or unticks the connection's Event Platform permission; unticking suspends every
  // subscription "due to insufficient rights".
  void SetPermission(bool granted);
  // The next `count` management calls get `status` (Akeneo's error body), with Retry-After when
  // retry_after_seconds >= 0. `then_process`: the call is carried out anyway before the error is
  // answered (a 5xx after the work was done).
  void FailNextCalls(int count, int status, int retry_after_seconds = -1,
                     bool then_process = false);

  // ---- Observations (thread-safe) ----
  struct ApiCall {
    std::string method;
    std::string target;
    int status = 0;
    std::string body;  // what the fake answered
  };
  std::vector<ApiCall> api_calls() const;

  struct Delivery {
    std::string subscription_id;
    std::string event_id;
    std::string event_type;
    std::string url;
    int attempt = 0;    // 1 for the first try of this event
    int status = 0;     // HTTP status, 0 for a transport failure or timeout
    std::string error;  // the transport failure
    bool replay = false;
    std::string body;                            // the signed bytes
    std::map<std::string, std::string> headers;  // as sent
    std::chrono::steady_clock::time_point sent_at;
  };
  std::vector<Delivery> deliveries() const;

  struct Notification {
    std::string subscriber_id;
    std::string subscription_id;
    std::string notification_type;
    std::string url;
    int attempt = 0;
    int status = 0;
    std::string error;
    std::string body;
    std::map<std::string, std::string> headers;
  };
  std::vector<Notification> notifications() const;

  // "active", "suspended", "revoked", "deleted"; "" for an unknown id.
  std::string SubscriptionStatus(const std::string& subscription_id) const;
  // Events captured for a suspended subscription and not replayed yet.
  int CapturedCount(const std::string& subscription_id) const;
  // Events waiting for delivery (queued, throttled or waiting for a retry) across subscriptions.
  int PendingCount() const;
  int subscriber_count() const;  // not deleted

  // Polls `condition` until it holds; false after `timeout`.
  static bool WaitUntil(const std::function<bool()>& condition,
                        std::chrono::milliseconds timeout = std::chrono::seconds(30));

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace pimgate::testing

#endif  // PIMGATE_TESTS_TESTING_FAKE_EVENT_PLATFORM_H_
