// PlatformClient against the FakeEventPlatform over real TLS, with PIM tokens from a real
// AkeneoClient and FakePim: every call, Akeneo's limits and validation errors reaching the caller
// verbatim, retries of 408/429/5xx, token renewal, a wrong token refused, ambiguous creations
// not repeated, logs, capture and replay, and no secret in any message.
#include "pim/platform_client.h"

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "pim/akeneo_client.h"
#include "pim/http_client.h"
#include "tests/testing/fake_event_platform.h"
#include "tests/testing/fake_pim.h"
#include "tests/testing/test_env.h"
#include "tests/testing/test_http_server.h"
#include "tests/testing/typed_values.h"

namespace pimgate::testing {
namespace {

using json = nlohmann::json;
using std::chrono::milliseconds;

constexpr char kPrimary[] = "primary-secret-0123456789";
constexpr char kSecondary[] = "secondary-secret-0123456789";
constexpr char kProductUpdated[] = "com.akeneo.pim.v1.product.updated";
constexpr char kProductDeleted[] = "com.akeneo.pim.v1.product.deleted";

RestConfig RestFor(const FakePim& pim) {
  RestConfig rest;
  rest.base_url = testing::UrlOf(pim.base_url());
  rest.client_id = pim.options().client_id;
  rest.secret = Secret{pim.options().secret, "inline"};
  rest.username = pim.options().username;
  rest.password = Secret{pim.options().password, "inline"};
  rest.ca_file = pim.cert_file();
  rest.initial_backoff = milliseconds(10);
  rest.max_backoff = milliseconds(50);
  return rest;
}

PlatformConfig ConfigFor(const FakeEventPlatform& platform) {
  PlatformConfig config;
  config.api_url = testing::UrlOf(platform.api_url(), /*allow_path=*/true);
  config.ca_file = platform.cert_file();
  config.max_attempts = 4;
  config.initial_backoff = milliseconds(10);
  config.max_backoff = milliseconds(50);
  return config;
}

// The platform's error body, as Akeneo's OpenAPI defines it.
std::string ErrorBody(const std::string& message) {
  return json{{"errors", json::array({json{{"message", message}}})}}.dump();
}

class PlatformClientTest : public ::testing::Test {
 protected:
  PlatformClientTest() {
    rest_ = RestFor(pim_);
    absl::StatusOr<std::unique_ptr<AkeneoClient>> akeneo = AkeneoClient::Create(rest_);
    EXPECT_TRUE(akeneo.ok()) << akeneo.status();
    akeneo_ = *std::move(akeneo);
    client_ = NewClient(ConfigFor(platform_));
  }

  std::unique_ptr<PlatformClient> NewClient(const PlatformConfig& config) {
    absl::StatusOr<std::unique_ptr<PlatformClient>> client =
        PlatformClient::Create(config, rest_, *akeneo_);
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? *std::move(client) : nullptr;
  }

  static FakeEventPlatform::Options PlatformOptions(const FakePim* pim) {
    FakeEventPlatform::Options options;
    options.pim = pim;
    return options;
  }

  PlatformSubscriber NewSubscriber(const std::string& name = "pimgate test") {
    PlatformSubscriberRequest request;
    request.name = name;
    request.contact.technical_email = "ops@example.com";
    absl::StatusOr<PlatformSubscriber> subscriber = client_->CreateSubscriber(request);
    EXPECT_TRUE(subscriber.ok()) << subscriber.status();
    return subscriber.ok() ? *subscriber : PlatformSubscriber{};
  }

  PlatformSubscriptionRequest HttpsSubscription(const std::string& url) {
    PlatformSubscriptionRequest request;
    request.events = {kProductUpdated, kProductDeleted};
    request.url = url;
    request.primary_secret = kPrimary;
    return request;
  }

  FakePim pim_;
  FakeEventPlatform platform_{PlatformOptions(&pim_)};
  RestConfig rest_;
  std::unique_ptr<AkeneoClient> akeneo_;
  std::unique_ptr<PlatformClient> client_;
};

TEST_F(PlatformClientTest, SubscriberLifecycle) {
  PlatformSubscriberRequest request;
  request.name = "pimgate production";
  request.contact.technical_email = "ops@example.com";
  absl::StatusOr<PlatformSubscriber> created = client_->CreateSubscriber(request);
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_FALSE(created->id.empty());
  EXPECT_EQ(created->name, "pimgate production");
  EXPECT_EQ(created->status, "active");
  EXPECT_EQ(created->subject, pim_.base_url());  // from X-PIM-URL
  EXPECT_EQ(created->client_id, pim_.options().client_id);
  EXPECT_EQ(created->contact.technical_email, "ops@example.com");
  EXPECT_EQ(created->contact.notification_channels, std::vector<std::string>{"email"});
  EXPECT_FALSE(created->created_at.empty());

  absl::StatusOr<std::vector<PlatformSubscriber>> list = client_->ListSubscribers();
  ASSERT_TRUE(list.ok()) << list.status();
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].id, created->id);

  absl::StatusOr<PlatformSubscriber> got = client_->GetSubscriber(created->id);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->name, "pimgate production");

  // Webhook notifications need a URL and a secret; the secret never comes back.
  PlatformSubscriberUpdate update;
  update.name = "pimgate renamed";
  update.notification_channels = std::vector<std::string>{"email", "webhook"};
  update.notification_webhook_url = "https://pimgate.example.com/hooks/notifications";
  update.notification_webhook_secret = "notification-secret-0123456789";
  absl::StatusOr<PlatformSubscriber> updated = client_->UpdateSubscriber(created->id, update);
  ASSERT_TRUE(updated.ok()) << updated.status();
  EXPECT_EQ(updated->name, "pimgate renamed");
  EXPECT_EQ(updated->contact.notification_channels, (std::vector<std::string>{"email", "webhook"}));
  EXPECT_EQ(updated->contact.notification_webhook_url,
            "https://pimgate.example.com/hooks/notifications");
  EXPECT_FALSE(absl::StrContains(updated->json, "notification-secret-0123456789"));

  absl::StatusOr<PlatformSubscriber> deleted = client_->DeleteSubscriber(created->id);
  ASSERT_TRUE(deleted.ok()) << deleted.status();
  EXPECT_EQ(deleted->status, "deleted");
  list = client_->ListSubscribers();
  ASSERT_TRUE(list.ok()) << list.status();
  EXPECT_TRUE(list->empty());
  absl::StatusOr<PlatformSubscriber> gone = client_->GetSubscriber(created->id);
  EXPECT_EQ(gone.status().code(), absl::StatusCode::kNotFound) << gone.status();
  EXPECT_EQ(PlatformHttpStatus(gone.status()), 404);
  EXPECT_TRUE(absl::StrContains(
      gone.status().message(),
      absl::StrCat("GET /subscribers/", created->id, " answered HTTP 404: ",
                   ErrorBody(absl::StrCat("Subscriber ", created->id, " not found")))))
      << gone.status();
}

TEST_F(PlatformClientTest, SubscriptionLifecycle) {
  const PlatformSubscriber subscriber = NewSubscriber();
  PlatformSubscriptionRequest request = HttpsSubscription("https://pimgate.example.com/hooks/ep");
  request.secondary_secret = kSecondary;
  request.headers = {{"X-Api-Key", "api-key-value-1"}};
  request.filter = "user_type in [\"user\", \"api\"]";
  request.send_product_identifier = true;
  absl::StatusOr<PlatformSubscription> created =
      client_->CreateSubscription(subscriber.id, request);
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_FALSE(created->id.empty());
  EXPECT_EQ(created->subscriber_id, subscriber.id);
  EXPECT_EQ(created->source, "pim");
  EXPECT_EQ(created->subject, pim_.base_url());
  EXPECT_EQ(created->type, "https");
  EXPECT_EQ(created->status, "active");
  EXPECT_EQ(created->events, (std::vector<std::string>{kProductUpdated, kProductDeleted}));
  EXPECT_EQ(created->url, "https://pimgate.example.com/hooks/ep");
  EXPECT_TRUE(created->has_secondary_secret);
  EXPECT_EQ(created->header_names, std::vector<std::string>{"X-Api-Key"});
  EXPECT_EQ(created->filter, "user_type in [\"user\", \"api\"]");
  EXPECT_TRUE(created->send_product_identifier);
  // Secrets and header values come back redacted.
  for (const char* secret : {kPrimary, kSecondary, "api-key-value-1"}) {
    EXPECT_FALSE(absl::StrContains(created->json, secret)) << created->json;
  }

  absl::StatusOr<std::vector<PlatformSubscription>> list =
      client_->ListSubscriptions(subscriber.id);
  ASSERT_TRUE(list.ok()) << list.status();
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].id, created->id);
  absl::StatusOr<PlatformSubscription> got = client_->GetSubscription(subscriber.id, created->id);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->url, created->url);

  PlatformSubscriptionUpdate update;
  update.events = std::vector<std::string>{kProductUpdated};
  update.primary_secret = "rotated-primary-secret-0123";
  update.secondary_secret = kPrimary;
  absl::StatusOr<PlatformSubscription> updated =
      client_->UpdateSubscription(subscriber.id, created->id, update);
  ASSERT_TRUE(updated.ok()) << updated.status();
  EXPECT_EQ(updated->events, std::vector<std::string>{kProductUpdated});
  EXPECT_EQ(updated->url, created->url);  // config merged, not replaced
  EXPECT_EQ(updated->header_names, std::vector<std::string>{"X-Api-Key"});

  absl::StatusOr<PlatformSubscription> suspended =
      client_->SuspendSubscription(subscriber.id, created->id);
  ASSERT_TRUE(suspended.ok()) << suspended.status();
  EXPECT_EQ(suspended->status, "suspended");
  EXPECT_EQ(platform_.SubscriptionStatus(created->id), "suspended");
  // Suspending again changes nothing.
  suspended = client_->SuspendSubscription(subscriber.id, created->id);
  ASSERT_TRUE(suspended.ok()) << suspended.status();
  EXPECT_EQ(suspended->status, "suspended");
  absl::StatusOr<PlatformSubscription> resumed =
      client_->ResumeSubscription(subscriber.id, created->id);
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_EQ(resumed->status, "active");

  absl::StatusOr<PlatformSubscription> deleted =
      client_->DeleteSubscription(subscriber.id, created->id);
  ASSERT_TRUE(deleted.ok()) << deleted.status();
  EXPECT_EQ(deleted->status, "deleted");
  list = client_->ListSubscriptions(subscriber.id);
  ASSERT_TRUE(list.ok()) << list.status();
  EXPECT_TRUE(list->empty());
  // A deleted subscription cannot change any more: Akeneo's 409, verbatim.
  absl::StatusOr<PlatformSubscription> after =
      client_->ResumeSubscription(subscriber.id, created->id);
  EXPECT_EQ(after.status().code(), absl::StatusCode::kFailedPrecondition) << after.status();
  EXPECT_EQ(PlatformHttpStatus(after.status()), 409);
  EXPECT_TRUE(
      absl::StrContains(after.status().message(),
                        absl::StrCat("answered HTTP 409: ", ErrorBody("Subscription is deleted"))))
      << after.status();
}

TEST_F(PlatformClientTest, EveryRequestCarriesThePimHeaders) {
  // The fake refuses any call without X-PIM-URL, X-PIM-CLIENT-ID and a token the PIM issued, so
  // a call that succeeds carried them; a PIM URL it does not know is refused.
  NewSubscriber();
  absl::StatusOr<std::unique_ptr<PlatformClient>> other = PlatformClient::Create(
      ConfigFor(platform_), testing::UrlOf("https://other-pim.example.com"), rest_.client_id,
      [this](std::string_view rejected) { return akeneo_->AccessToken(rejected); });
  ASSERT_TRUE(other.ok()) << other.status();
  absl::StatusOr<std::vector<PlatformSubscriber>> list = (*other)->ListSubscribers();
  EXPECT_EQ(list.status().code(), absl::StatusCode::kUnauthenticated) << list.status();
  EXPECT_TRUE(absl::StrContains(
      list.status().message(),
      ErrorBody("Tenant context not found for X-PIM-URL https://other-pim.example.com")))
      << list.status();
}

TEST_F(PlatformClientTest, WrongTokenIsRefused) {
  int token_calls = 0;
  absl::StatusOr<std::unique_ptr<PlatformClient>> client =
      PlatformClient::Create(ConfigFor(platform_), rest_.base_url, rest_.client_id,
                             [&token_calls](std::string_view) -> absl::StatusOr<std::string> {
                               ++token_calls;
                               return std::string("not-a-token-the-pim-issued");
                             });
  ASSERT_TRUE(client.ok()) << client.status();
  absl::StatusOr<std::vector<PlatformSubscriber>> list = (*client)->ListSubscribers();
  EXPECT_EQ(list.status().code(), absl::StatusCode::kUnauthenticated) << list.status();
  EXPECT_EQ(PlatformHttpStatus(list.status()), 401);
  EXPECT_TRUE(absl::StrContains(
      list.status().message(),
      absl::StrCat("GET /subscribers answered HTTP 401: ",
                   ErrorBody("Invalid credentials: the PIM access token is not valid for this "
                             "client id and PIM"))))
      << list.status();
  // One renewal was tried (the second token was refused too), then the error was given.
  EXPECT_EQ(token_calls, 2);
  EXPECT_EQ(platform_.api_calls().size(), 2u);
  EXPECT_FALSE(absl::StrContains(list.status().message(), "not-a-token-the-pim-issued"));
}

TEST_F(PlatformClientTest, ExpiredTokenIsRenewedThroughThePimClient) {
  const PlatformSubscriber subscriber = NewSubscriber();
  const int before = pim_.token_requests();
  pim_.ExpireTokens();  // the PIM no longer accepts the token the client holds
  absl::StatusOr<PlatformSubscriber> got = client_->GetSubscriber(subscriber.id);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_GT(pim_.token_requests(), before);
  std::vector<FakeEventPlatform::ApiCall> calls = platform_.api_calls();
  ASSERT_GE(calls.size(), 2u);
  EXPECT_EQ(calls[calls.size() - 2].status, 401);
  EXPECT_EQ(calls.back().status, 200);
}

TEST_F(PlatformClientTest, SubscriberLimitIsRefusedWithThePlatformsError) {
  for (int i = 0; i < kPlatformMaxSubscribersPerPim; ++i) NewSubscriber(absl::StrCat("s", i));
  PlatformSubscriberRequest request;
  request.name = "one too many";
  absl::StatusOr<PlatformSubscriber> refused = client_->CreateSubscriber(request);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition) << refused.status();
  EXPECT_EQ(PlatformHttpStatus(refused.status()), 409);
  EXPECT_TRUE(absl::StrContains(
      refused.status().message(),
      absl::StrCat("POST /subscribers answered HTTP 409: ",
                   ErrorBody("Maximum number of subscribers reached (20 per PIM)"))))
      << refused.status();
  EXPECT_EQ(platform_.subscriber_count(), kPlatformMaxSubscribersPerPim);
}

TEST_F(PlatformClientTest, SubscriptionLimitIsRefusedWithThePlatformsError) {
  const PlatformSubscriber subscriber = NewSubscriber();
  for (int i = 0; i < kPlatformMaxSubscriptionsPerSubscriber; ++i) {
    absl::StatusOr<PlatformSubscription> created = client_->CreateSubscription(
        subscriber.id, HttpsSubscription(absl::StrCat("https://pimgate.example.com/hooks/", i)));
    ASSERT_TRUE(created.ok()) << created.status();
  }
  absl::StatusOr<PlatformSubscription> refused = client_->CreateSubscription(
      subscriber.id, HttpsSubscription("https://pimgate.example.com/hooks/extra"));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition) << refused.status();
  EXPECT_EQ(PlatformHttpStatus(refused.status()), 409);
  EXPECT_TRUE(
      absl::StrContains(refused.status().message(),
                        ErrorBody("Maximum number of subscriptions reached (20 per subscriber)")))
      << refused.status();
  absl::StatusOr<std::vector<PlatformSubscription>> list =
      client_->ListSubscriptions(subscriber.id);
  ASSERT_TRUE(list.ok()) << list.status();
  EXPECT_EQ(list->size(), 20u);
}

TEST_F(PlatformClientTest, ValidationErrorsReachTheCallerVerbatim) {
  const PlatformSubscriber subscriber = NewSubscriber();
  struct Case {
    std::function<void(PlatformSubscriptionRequest&)> change;
    std::string message;
  };
  const std::vector<Case> cases = {
      {[](auto& r) { r.primary_secret = "too-short"; },
       "config.secret.primary must be a string of 16 to 256 characters"},
      {[](auto& r) { r.secondary_secret = std::string(257, 's'); },
       "config.secret.secondary must be a string of 16 to 256 characters"},
      {[](auto& r) {
         for (int i = 0; i < 6; ++i) r.headers.emplace_back(absl::StrCat("X-H", i), "v");
       },
       "config.headers: at most 5 custom headers are allowed, got 6"},
      {[](auto& r) {
         r.headers = {{"X-AKENEO-SIGNATURE-PRIMARY", "x"}};
       },
       "config.headers: \"X-AKENEO-SIGNATURE-PRIMARY\" is a reserved header"},
      {[](auto& r) {
         r.headers = {{"X Bad", "x"}};
       },
       "config.headers: invalid header name \"X Bad\" (a-zA-Z0-9- only, at most 128 "
       "characters)"},
      {[](auto& r) { r.url = "http://pimgate.example.com/hooks"; },
       "config.url must be an HTTPS URL"},
      {[](auto& r) { r.events = {"com.akeneo.pim.v1.produt.updated"}; },
       "Unknown event type \"com.akeneo.pim.v1.produt.updated\""},
      {[](auto& r) { r.events = {}; }, "events must list at least one event type"},
      {[](auto& r) { r.filter = std::string(501, 'x'); },
       "filter is 501 characters long; at most 500 are allowed"},
      {[](auto& r) { r.filter = "user=system"; },
       "The filter is invalid: expected a value in double quotes at character 6"},
  };
  for (const Case& c : cases) {
    PlatformSubscriptionRequest request = HttpsSubscription("https://pimgate.example.com/hooks");
    c.change(request);
    absl::StatusOr<PlatformSubscription> refused =
        client_->CreateSubscription(subscriber.id, request);
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument) << refused.status();
    EXPECT_EQ(PlatformHttpStatus(refused.status()), 400);
    EXPECT_TRUE(absl::StrContains(refused.status().message(),
                                  absl::StrCat("answered HTTP 400: ", ErrorBody(c.message))))
        << refused.status();
  }
  absl::StatusOr<std::vector<PlatformSubscription>> list =
      client_->ListSubscriptions(subscriber.id);
  ASSERT_TRUE(list.ok()) << list.status();
  EXPECT_TRUE(list->empty());
  // Ids are checked before anything is sent.
  absl::StatusOr<PlatformSubscriber> bad_id = client_->GetSubscriber("../logs");
  EXPECT_EQ(bad_id.status().code(), absl::StatusCode::kInvalidArgument) << bad_id.status();
}

TEST_F(PlatformClientTest, TransientErrorsAreRetried) {
  NewSubscriber();
  // 429 (twice), then 503, 502 and 408: each retried, the call succeeds.
  platform_.FailNextCalls(2, 429);
  absl::StatusOr<std::vector<PlatformSubscriber>> list = client_->ListSubscribers();
  ASSERT_TRUE(list.ok()) << list.status();
  EXPECT_EQ(list->size(), 1u);
  EXPECT_EQ(client_->stats().throttled, 2u);
  for (int status : {503, 502, 408}) {
    platform_.FailNextCalls(1, status);
    list = client_->ListSubscribers();
    ASSERT_TRUE(list.ok()) << status << ": " << list.status();
  }
  EXPECT_EQ(client_->stats().retries, 5u);

  // Past max_attempts (4): Unavailable with the last answer and the count.
  platform_.FailNextCalls(10, 500);
  list = client_->ListSubscribers();
  EXPECT_EQ(list.status().code(), absl::StatusCode::kUnavailable) << list.status();
  EXPECT_EQ(PlatformHttpStatus(list.status()), 500);
  EXPECT_TRUE(absl::StrContains(
      list.status().message(),
      absl::StrCat("GET /subscribers answered HTTP 500: ", ErrorBody("Injected error 500"),
                   " (after 4 attempts)")))
      << list.status();
  platform_.FailNextCalls(0, 0);

  // A Retry-After longer than the backoff is waited for.
  platform_.FailNextCalls(1, 429, /*retry_after_seconds=*/1);
  const auto start = std::chrono::steady_clock::now();
  list = client_->ListSubscribers();
  ASSERT_TRUE(list.ok()) << list.status();
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::seconds(1));

  // Other 4xx are not retried.
  const size_t calls = platform_.api_calls().size();
  absl::StatusOr<PlatformSubscriber> missing = client_->GetSubscriber("no-such-subscriber");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(platform_.api_calls().size(), calls + 1);
}

TEST_F(PlatformClientTest, AmbiguousCreationIsNotRepeated) {
  const PlatformSubscriber subscriber = NewSubscriber();
  // The platform creates the subscription, then answers 500: repeating the POST would create a
  // second one.
  platform_.FailNextCalls(1, 500, -1, /*then_process=*/true);
  absl::StatusOr<PlatformSubscription> created = client_->CreateSubscription(
      subscriber.id, HttpsSubscription("https://pimgate.example.com/hooks/ep"));
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_EQ(created->url, "https://pimgate.example.com/hooks/ep");
  EXPECT_EQ(client_->stats().recovered, 1u);
  absl::StatusOr<std::vector<PlatformSubscription>> list =
      client_->ListSubscriptions(subscriber.id);
  ASSERT_TRUE(list.ok()) << list.status();
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].id, created->id);

  // Same for a subscriber.
  platform_.FailNextCalls(1, 502, -1, /*then_process=*/true);
  PlatformSubscriberRequest request;
  request.name = "created once";
  absl::StatusOr<PlatformSubscriber> once = client_->CreateSubscriber(request);
  ASSERT_TRUE(once.ok()) << once.status();
  EXPECT_EQ(once->name, "created once");
  EXPECT_EQ(platform_.subscriber_count(), 2);

  // A 500 before anything was created: the creation is repeated and succeeds.
  platform_.FailNextCalls(1, 500);
  absl::StatusOr<PlatformSubscription> second = client_->CreateSubscription(
      subscriber.id, HttpsSubscription("https://pimgate.example.com/hooks/second"));
  ASSERT_TRUE(second.ok()) << second.status();
  list = client_->ListSubscriptions(subscriber.id);
  ASSERT_TRUE(list.ok()) << list.status();
  EXPECT_EQ(list->size(), 2u);
}

TEST_F(PlatformClientTest, PermissionRemoved) {
  const PlatformSubscriber subscriber = NewSubscriber();
  absl::StatusOr<PlatformSubscription> created = client_->CreateSubscription(
      subscriber.id, HttpsSubscription("https://pimgate.example.com/hooks/ep"));
  ASSERT_TRUE(created.ok()) << created.status();
  platform_.SetPermission(false);
  EXPECT_EQ(platform_.SubscriptionStatus(created->id), "suspended");
  absl::StatusOr<PlatformSubscription> refused = client_->CreateSubscription(
      subscriber.id, HttpsSubscription("https://pimgate.example.com/hooks/other"));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kPermissionDenied) << refused.status();
  EXPECT_EQ(PlatformHttpStatus(refused.status()), 403);
  absl::StatusOr<PlatformSubscription> resume =
      client_->ResumeSubscription(subscriber.id, created->id);
  EXPECT_EQ(resume.status().code(), absl::StatusCode::kPermissionDenied) << resume.status();
  platform_.SetPermission(true);
  resume = client_->ResumeSubscription(subscriber.id, created->id);
  ASSERT_TRUE(resume.ok()) << resume.status();
  EXPECT_EQ(resume->status, "active");
}

TEST_F(PlatformClientTest, RevokedConnectionIsRefused) {
  const PlatformSubscriber subscriber = NewSubscriber();
  absl::StatusOr<PlatformSubscription> created = client_->CreateSubscription(
      subscriber.id, HttpsSubscription("https://pimgate.example.com/hooks/ep"));
  ASSERT_TRUE(created.ok()) << created.status();
  platform_.RevokeConnection();
  EXPECT_EQ(platform_.SubscriptionStatus(created->id), "revoked");
  absl::StatusOr<std::vector<PlatformSubscriber>> list = client_->ListSubscribers();
  EXPECT_EQ(list.status().code(), absl::StatusCode::kUnauthenticated) << list.status();
}

TEST_F(PlatformClientTest, Logs) {
  const PlatformSubscriber subscriber = NewSubscriber();
  absl::StatusOr<PlatformSubscription> created = client_->CreateSubscription(
      subscriber.id, HttpsSubscription("https://pimgate.example.com/hooks/ep"));
  ASSERT_TRUE(created.ok()) << created.status();
  ASSERT_TRUE(client_->SuspendSubscription(subscriber.id, created->id).ok());
  ASSERT_TRUE(client_->ResumeSubscription(subscriber.id, created->id).ok());

  PlatformLogQuery query;
  query.subscription_id = created->id;
  absl::StatusOr<PlatformLogPage> page = client_->Logs(query);
  ASSERT_TRUE(page.ok()) << page.status();
  std::vector<std::string> operations;
  for (const PlatformLog& log : page->logs) {
    EXPECT_EQ(log.subscription_id, created->id);
    EXPECT_EQ(log.subscriber_id, subscriber.id);
    EXPECT_EQ(log.log_type, "action");
    EXPECT_FALSE(log.log_id.empty());
    EXPECT_FALSE(log.timestamp.empty());
    operations.push_back(log.operation);
  }
  EXPECT_EQ(operations,
            (std::vector<std::string>{"subscription_created", "subscription_suspended_by_the_user",
                                      "subscription_resumed_by_the_user"}));
  EXPECT_TRUE(page->next_page_token.empty());

  // Page by page.
  query.limit = 2;
  page = client_->Logs(query);
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_EQ(page->logs.size(), 2u);
  ASSERT_FALSE(page->next_page_token.empty());
  query.page_token = page->next_page_token;
  page = client_->Logs(query);
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->logs.size(), 1u);
  EXPECT_EQ(page->logs[0].operation, "subscription_resumed_by_the_user");
  EXPECT_TRUE(page->next_page_token.empty());

  PlatformLogQuery errors;
  errors.log_type = "error";
  page = client_->Logs(errors);
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_TRUE(page->logs.empty());
  errors.log_type = "warning";
  page = client_->Logs(errors);
  EXPECT_EQ(page.status().code(), absl::StatusCode::kInvalidArgument) << page.status();
  EXPECT_TRUE(absl::StrContains(page.status().message(),
                                ErrorBody("log_type must be \"action\" or \"error\"")));
}

TEST_F(PlatformClientTest, CaptureAndReplay) {
  std::atomic<int> received{0};
  TestHttpServer destination([&received](const TestHttpServer::Request&) {
    ++received;
    return TestHttpServer::Response{};
  });
  FakeEventPlatform::Options options = PlatformOptions(&pim_);
  options.destination_ca_file = destination.cert_file();
  FakeEventPlatform platform(options);
  std::unique_ptr<PlatformClient> client = NewClient(ConfigFor(platform));
  PlatformSubscriberRequest subscriber_request;
  subscriber_request.name = "replay";
  absl::StatusOr<PlatformSubscriber> subscriber = client->CreateSubscriber(subscriber_request);
  ASSERT_TRUE(subscriber.ok()) << subscriber.status();
  absl::StatusOr<PlatformSubscription> subscription = client->CreateSubscription(
      subscriber->id, HttpsSubscription(destination.base_url() + "/hooks/ep"));
  ASSERT_TRUE(subscription.ok()) << subscription.status();

  ASSERT_TRUE(client->SuspendSubscription(subscriber->id, subscription->id).ok());
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    ids.push_back(
        platform.Publish({kProductUpdated, json{{"product", {{"uuid", NewUuid()}}}}.dump()}));
  }
  EXPECT_EQ(platform.CapturedCount(subscription->id), 3);
  EXPECT_EQ(received.load(), 0);

  // Replay needs the subscription resumed.
  absl::StatusOr<PlatformReplay> early = client->StartReplay(subscriber->id, subscription->id);
  EXPECT_EQ(early.status().code(), absl::StatusCode::kFailedPrecondition) << early.status();
  EXPECT_EQ(PlatformHttpStatus(early.status()), 409);
  ASSERT_TRUE(client->ResumeSubscription(subscriber->id, subscription->id).ok());
  absl::StatusOr<PlatformReplay> replay = client->StartReplay(subscriber->id, subscription->id);
  ASSERT_TRUE(replay.ok()) << replay.status();
  EXPECT_EQ(replay->subscription_id, subscription->id);
  EXPECT_EQ(replay->total, 3);
  ASSERT_TRUE(FakeEventPlatform::WaitUntil([&] {
    absl::StatusOr<PlatformReplay> progress = client->GetReplay(subscriber->id, subscription->id);
    return progress.ok() && progress->status == "completed";
  }));
  absl::StatusOr<PlatformReplay> done = client->GetReplay(subscriber->id, subscription->id);
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->delivered, 3);
  EXPECT_EQ(done->failed, 0);
  EXPECT_FALSE(done->completed_at.empty());
  std::vector<std::string> replayed;
  for (const FakeEventPlatform::Delivery& delivery : platform.deliveries()) {
    EXPECT_TRUE(delivery.replay);
    EXPECT_EQ(delivery.status, 200);
    replayed.push_back(delivery.event_id);
  }
  EXPECT_EQ(replayed, ids);  // the captured events themselves, in order, same ids
  EXPECT_EQ(received.load(), 3);
}

TEST_F(PlatformClientTest, NoTokenOrSecretInMessages) {
  // A platform (or a proxy) that echoes the request back in its error.
  TestHttpServer echo([](const TestHttpServer::Request& request) {
    TestHttpServer::Response response;
    response.status = 400;
    response.body = absl::StrCat("token=", request.Header("X-PIM-TOKEN"), " body=", request.body);
    return response;
  });
  PlatformConfig config = ConfigFor(platform_);
  config.api_url = testing::UrlOf(echo.base_url() + "/api/v1", /*allow_path=*/true);
  config.ca_file = echo.cert_file();
  std::unique_ptr<PlatformClient> client = NewClient(config);
  PlatformSubscriptionRequest request = HttpsSubscription("https://pimgate.example.com/hooks");
  request.secondary_secret = kSecondary;
  absl::StatusOr<PlatformSubscription> refused =
      client->CreateSubscription("a-subscriber", request);
  ASSERT_FALSE(refused.ok());
  const std::string message(refused.status().message());
  EXPECT_TRUE(absl::StrContains(message, "token=<redacted>")) << message;
  EXPECT_FALSE(absl::StrContains(message, kPrimary)) << message;
  EXPECT_FALSE(absl::StrContains(message, kSecondary)) << message;
  absl::StatusOr<std::string> token = akeneo_->AccessToken();
  ASSERT_TRUE(token.ok());
  EXPECT_FALSE(absl::StrContains(message, *token)) << message;
}

TEST_F(PlatformClientTest, ShutdownCancelsCalls) {
  client_->Shutdown();
  absl::StatusOr<std::vector<PlatformSubscriber>> list = client_->ListSubscribers();
  EXPECT_EQ(list.status().code(), absl::StatusCode::kCancelled) << list.status();
}

// The last reference dropped on one of the client's own workers (a callback whose captures own
// the client): the client is destroyed there, and that worker goes on running after the
// destructor has returned. The other worker's call in flight is aborted and the call queued
// behind both is cancelled, not dropped uncalled; under ASan, any use of freed client state shows
// (it did before the client's state was shared with its workers: a worker went on reading the
// destroyed client's queue).
TEST_F(PlatformClientTest, LastReferenceDroppedOnItsOwnWorkerCancelsTheOtherCalls) {
  // Answers the first call at once and never the others (until the test ends).
  std::atomic<int> requests{0};
  absl::Notification second_sent;
  TestHttpServer platform([&](const TestHttpServer::Request&) {
    TestHttpServer::Response response;
    response.body = "[]";
    if (requests.fetch_add(1) > 0) {
      response.delay = std::chrono::minutes(10);
      second_sent.Notify();
    }
    return response;
  });
  PlatformConfig config = ConfigFor(platform_);
  config.api_url = testing::UrlOf(platform.base_url() + "/api/v1", /*allow_path=*/true);
  config.ca_file = platform.cert_file();
  config.timeout = std::chrono::minutes(10);  // only the shutdown ends the second call
  config.max_attempts = 1;
  std::shared_ptr<PlatformClient> client = NewClient(config);
  ASSERT_NE(client, nullptr);

  absl::Notification first_running;
  absl::Notification released;  // the test no longer holds the client
  absl::Notification first_done;
  absl::Status first;
  bool was_last = false;
  client->ListSubscribersAsync(
      [keep = client, &first_running, &released, &first, &was_last,
       &first_done](absl::StatusOr<std::vector<PlatformSubscriber>> list) mutable {
        first = list.status();
        first_running.Notify();
        released.WaitForNotification();
        was_last = keep.use_count() == 1;
        keep.reset();  // ~PlatformClient, on this worker
        first_done.Notify();
      });
  first_running.WaitForNotification();
  absl::Notification second_done;
  absl::Status second;
  client->ListSubscribersAsync(
      [&second, &second_done](absl::StatusOr<std::vector<PlatformSubscriber>> list) {
        second = list.status();
        second_done.Notify();
      });
  second_sent.WaitForNotification();  // both workers are busy: the third call waits
  // Tells when the third callback is destroyed: after it ran, or unrun with the client's queue.
  struct Sentinel {
    explicit Sentinel(absl::Notification* gone) : gone(gone) {}
    ~Sentinel() { gone->Notify(); }
    absl::Notification* const gone;
  };
  absl::Notification third_gone;
  auto sentinel = std::make_shared<Sentinel>(&third_gone);
  bool third_called = false;
  absl::Status third;
  client->ListSubscribersAsync([sentinel = std::move(sentinel), &third_called,
                                &third](absl::StatusOr<std::vector<PlatformSubscriber>> list) {
    third_called = true;
    third = list.status();
  });
  client.reset();
  released.Notify();
  first_done.WaitForNotification();
  second_done.WaitForNotification();
  third_gone.WaitForNotification();

  EXPECT_TRUE(first.ok()) << first;
  EXPECT_TRUE(was_last);
  EXPECT_EQ(second.code(), absl::StatusCode::kCancelled) << second;
  ASSERT_TRUE(third_called);
  EXPECT_EQ(third.code(), absl::StatusCode::kCancelled) << third;
  EXPECT_EQ(requests.load(), 2);
}

TEST_F(PlatformClientTest, CreateRefusesPlainHttpWithoutOptIn) {
  PlatformConfig config = ConfigFor(platform_);
  config.api_url = testing::UrlOf("http://127.0.0.1:9/api/v1", /*allow_path=*/true);
  absl::StatusOr<std::unique_ptr<PlatformClient>> client =
      PlatformClient::Create(config, rest_, *akeneo_);
  EXPECT_EQ(client.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(client.status().message(), "in clear")) << client.status();
}

// The fake itself, asked directly: what Akeneo refuses and pimgate's client never sends.
TEST_F(PlatformClientTest, FakeRefusesWhatAkeneoRefuses) {
  const PlatformSubscriber subscriber = NewSubscriber();
  absl::StatusOr<std::string> token = akeneo_->AccessToken();
  ASSERT_TRUE(token.ok()) << token.status();
  HttpClientOptions options;
  options.ca_file = platform_.cert_file();
  HttpConnection connection(options);
  const auto call = [&](const std::string& method, const std::string& path, const std::string& body,
                        std::vector<std::pair<std::string, std::string>> headers) {
    HttpRequest request;
    request.method = method;
    request.url = platform_.api_url() + path;
    request.body = body;
    request.headers = std::move(headers);
    absl::StatusOr<::pimgate::HttpResponse> response = connection.Exchange(request);
    EXPECT_TRUE(response.ok()) << response.status();
    return response.ok() ? *response : ::pimgate::HttpResponse{};
  };
  const std::vector<std::pair<std::string, std::string>> headers = {
      {"X-PIM-URL", pim_.base_url()},
      {"X-PIM-CLIENT-ID", pim_.options().client_id},
      {"X-PIM-TOKEN", *token},
      {"Content-Type", "application/json"}};
  const auto without = [&](const std::string& name) {
    std::vector<std::pair<std::string, std::string>> out;
    for (const auto& header : headers) {
      if (header.first != name) out.push_back(header);
    }
    return out;
  };
  const auto expect = [](const ::pimgate::HttpResponse& response, int status,
                         const std::string& message) {
    EXPECT_EQ(response.status, status) << response.body;
    EXPECT_EQ(response.body, ErrorBody(message));
  };
  expect(call("GET", "/subscribers", "", without("X-PIM-URL")), 401,
         "Tenant context not found: the X-PIM-URL header is missing");
  expect(call("GET", "/subscribers", "", without("X-PIM-CLIENT-ID")), 401,
         "Tenant context not found: the X-PIM-CLIENT-ID header is missing");
  expect(call("GET", "/subscribers", "", without("X-PIM-TOKEN")), 401,
         "Invalid credentials: the X-PIM-TOKEN header is missing");
  std::vector<std::pair<std::string, std::string>> other_client = without("X-PIM-CLIENT-ID");
  other_client.emplace_back("X-PIM-CLIENT-ID", "another-client");
  expect(call("GET", "/subscribers", "", other_client), 401,
         "Invalid credentials: the PIM access token is not valid for this client id and PIM");
  expect(call("POST", "/subscribers", "{not json", headers), 400,
         "The request body is not valid JSON");
  expect(call("POST", "/subscribers", R"({"name":"x","colour":"blue"})", headers), 400,
         "Unknown property \"colour\"");
  expect(call("POST", "/subscribers",
              R"({"name":"x","contact":{"notification_channels":["webhook"]}})", headers),
         400,
         "contact.notification_webhook_url and contact.notification_webhook_secret are required "
         "when \"webhook\" is a notification channel");
  expect(call("POST", "/subscribers", R"({"name":"x","contact":{"notification_channels":["sms"]}})",
              headers),
         400, "contact.notification_channels accepts \"email\" and \"webhook\"");
  expect(call("POST", "/subscribers",
              R"({"name":"x","contact":{"notification_webhook_secret":"short"}})", headers),
         400, "contact.notification_webhook_secret must be 16 to 256 characters");
  expect(call("POST", "/subscribers", R"({"name":"x","contact":{"technical_email":"nobody"}})",
              headers),
         400, "contact.technical_email must be a valid email address");
  const std::string subscriptions = absl::StrCat("/subscribers/", subscriber.id, "/subscriptions");
  const std::string pim = pim_.base_url();
  expect(call("POST", subscriptions,
              absl::StrCat(R"({"source":"erp","subject":")", pim,
                           R"(","events":["com.akeneo.pim.v1.product.updated"],"type":"https",)"
                           R"("config":{"url":"https://x.example.com","secret":{"primary":")",
                           kPrimary, R"("}}})"),
              headers),
         400, "source must be \"pim\" (the only source available)");
  expect(call("POST", subscriptions,
              absl::StrCat(R"({"subject":"https://other.example.com",)"
                           R"("events":["com.akeneo.pim.v1.product.updated"],"type":"https",)"
                           R"("config":{"url":"https://x.example.com","secret":{"primary":")",
                           kPrimary, R"("}}})"),
              headers),
         400, absl::StrCat("subject must be the PIM's URL (X-PIM-URL), ", pim));
  expect(call("POST", subscriptions,
              R"({"events":["com.akeneo.pim.v1.product.updated"],"type":"pubsub",)"
              R"("config":{"project_id":"p"}})",
              headers),
         400, "config.topic_id is required and must be a non-empty string");
  expect(call("POST", subscriptions,
              R"({"events":["com.akeneo.pim.v1.product.updated"],"type":"kafka",)"
              R"("config":{"broker":"b:9092","topic":"t","sasl_auth":{"mechanism":"scram",)"
              R"("username":"u","password":"p"}}})",
              headers),
         400, "config.sasl_auth.scram_variant must be \"sha-256\" or \"sha-512\"");
  expect(call("POST", subscriptions,
              R"({"events":["com.akeneo.pim.v1.product.updated"],"type":"webhook","config":{}})",
              headers),
         400, "type must be \"https\", \"pubsub\" or \"kafka\"");
  expect(call("POST", subscriptions,
              absl::StrCat(R"({"events":["com.akeneo.pim.v1.product.updated"],"type":"https",)"
                           R"("config":{"url":"https://x.example.com","secret":{"primary":")",
                           kPrimary, R"("}},"filter":"user=\"a\" and user=\"b\" and user=\"c\")",
                           R"( and user=\"d\" and user=\"e\" and user=\"f\" and user=\"g\" and)",
                           R"( user=\"h\" and user=\"i\" and user=\"j\" and user=\"k\" and)",
                           R"( user=\"l\""})"),
              headers),
         400, "The filter uses 11 operators; at most 10 are allowed");
  // A pubsub subscription is accepted (the fake does not deliver to Pub/Sub).
  ::pimgate::HttpResponse pubsub =
      call("POST", subscriptions,
           R"({"events":["com.akeneo.pim.v1.product.updated"],"type":"pubsub",)"
           R"("config":{"project_id":"p","topic_id":"t"}})",
           headers);
  EXPECT_EQ(pubsub.status, 201) << pubsub.body;
  expect(call("PUT", "/subscribers", "", headers), 405, "Method PUT is not allowed here");
  expect(call("GET", "/subscribers/unknown-id", "", headers), 404,
         "Subscriber unknown-id not found");
}

}  // namespace
}  // namespace pimgate::testing
