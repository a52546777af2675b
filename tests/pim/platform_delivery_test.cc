// What the FakeEventPlatform sends, checked against real receivers: signed CloudEvents that a real
// pimgate gateway accepts (and refuses with a wrong secret), the adaptive rate on 429, retries and
// drops, suspension on 404 and on a low success rate, capture and replay, notification webhooks,
// send_product_identifier, filters and custom headers. Subscriptions are made with pimgate's
// PlatformClient, as pimgate makes them.
#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "pim/akeneo_client.h"
#include "pim/platform_client.h"
#include "tests/testing/fake_event_platform.h"
#include "tests/testing/fake_pim.h"
#include "tests/testing/test_env.h"
#include "tests/testing/test_http_server.h"
#include "tests/testing/typed_values.h"

namespace pimgate::testing {
namespace {

using json = nlohmann::json;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

constexpr char kProductUpdated[] = "com.akeneo.pim.v1.product.updated";
constexpr char kProductCreated[] = "com.akeneo.pim.v1.product.created";
constexpr char kProductDeleted[] = "com.akeneo.pim.v1.product.deleted";
constexpr char kSecret[] = "destination-secret-0123456789";
constexpr char kNotificationSecret[] = "notification-secret-0123456789";

// A destination whose answers the test scripts: `answer(n)` gives the status of the n-th request
// (from 0). Records every request.
class Destination {
 public:
  explicit Destination(std::function<int(int)> answer, milliseconds delay = milliseconds(0))
      : answer_(std::move(answer)), server_([this, delay](const TestHttpServer::Request& request) {
          TestHttpServer::Response response;
          {
            std::lock_guard<std::mutex> lock(mu_);
            response.status = answer_(static_cast<int>(requests_.size()));
            requests_.push_back(request);
          }
          response.delay = delay;
          // Akeneo ignores Retry-After; a long one must not stall the test.
          if (response.status == 429) response.headers = {{"Retry-After", "3600"}};
          return response;
        }) {}

  std::string url(const std::string& path = "/hooks/ep") const { return server_.base_url() + path; }
  const std::string& cert_file() const { return server_.cert_file(); }
  std::vector<TestHttpServer::Request> requests() const {
    std::lock_guard<std::mutex> lock(mu_);
    return requests_;
  }

 private:
  std::function<int(int)> answer_;
  mutable std::mutex mu_;
  std::vector<TestHttpServer::Request> requests_;
  TestHttpServer server_;  // last: stops before the rest goes away
};

class PlatformDeliveryTest : public ::testing::Test {
 protected:
  // A platform for `ca_file` destinations, with `tweak` applied to its options.
  void Start(const std::string& ca_file,
             const std::function<void(FakeEventPlatform::Options&)>& tweak = {}) {
    FakeEventPlatform::Options options;
    options.pim = &pim_;
    options.destination_ca_file = ca_file;
    if (tweak) tweak(options);
    platform_ = std::make_unique<FakeEventPlatform>(options);
    RestConfig rest;
    rest.base_url = testing::UrlOf(pim_.base_url());
    rest.client_id = pim_.options().client_id;
    rest.secret = Secret{pim_.options().secret, "inline"};
    rest.username = pim_.options().username;
    rest.password = Secret{pim_.options().password, "inline"};
    rest.ca_file = pim_.cert_file();
    akeneo_ = *AkeneoClient::Create(rest);
    PlatformConfig config;
    config.api_url = testing::UrlOf(platform_->api_url(), /*allow_path=*/true);
    config.ca_file = platform_->cert_file();
    client_ = *PlatformClient::Create(config, rest, *akeneo_);
  }

  std::string NewSubscriber(const std::string& notification_url = "") {
    PlatformSubscriberRequest request;
    request.name = "delivery test";
    request.contact.technical_email = "ops@example.com";
    if (!notification_url.empty()) {
      request.contact.notification_channels = {"email", "webhook"};
      request.contact.notification_webhook_url = notification_url;
      request.notification_webhook_secret = kNotificationSecret;
    }
    absl::StatusOr<PlatformSubscriber> subscriber = client_->CreateSubscriber(request);
    EXPECT_TRUE(subscriber.ok()) << subscriber.status();
    return subscriber.ok() ? subscriber->id : "";
  }

  PlatformSubscription Subscribe(
      const std::string& subscriber_id, const std::string& url, std::vector<std::string> events,
      const std::function<void(PlatformSubscriptionRequest&)>& tweak = {}) {
    PlatformSubscriptionRequest request;
    request.events = std::move(events);
    request.url = url;
    request.primary_secret = kSecret;
    if (tweak) tweak(request);
    absl::StatusOr<PlatformSubscription> subscription =
        client_->CreateSubscription(subscriber_id, request);
    EXPECT_TRUE(subscription.ok()) << subscription.status();
    return subscription.ok() ? *subscription : PlatformSubscription{};
  }

  std::vector<FakeEventPlatform::Delivery> DeliveriesOf(const std::string& event_id) const {
    std::vector<FakeEventPlatform::Delivery> out;
    for (const FakeEventPlatform::Delivery& d : platform_->deliveries()) {
      if (d.event_id == event_id) out.push_back(d);
    }
    return out;
  }

  static std::string ProductData(const std::string& uuid, const std::string& identifier = "") {
    json product = {{"uuid", uuid}};
    if (!identifier.empty()) product["identifier"] = identifier;
    return json{{"product", product}}.dump();
  }

  FakePim pim_;
  std::unique_ptr<FakeEventPlatform> platform_;
  std::unique_ptr<AkeneoClient> akeneo_;
  std::unique_ptr<PlatformClient> client_;
};

TEST_F(PlatformDeliveryTest, SignedCloudEventsAreAcceptedByARealGateway) {
  GatewayHarness gateway;  // source "platform" at /hooks/platform, real TLS and RocksDB
  Start(gateway.config().gateway.tls->cert_file,
        [](FakeEventPlatform::Options& o) { o.retry_delays = {std::chrono::hours(1)}; });
  const std::string url = absl::StrCat("https://127.0.0.1:", gateway.port(), "/hooks/platform");
  const std::string subscriber = NewSubscriber();
  // The source's secret; a wrong one; a wrong primary with the right secondary (a rotation).
  const PlatformSubscription good = Subscribe(
      subscriber, url, {kProductUpdated},
      [](PlatformSubscriptionRequest& r) { r.primary_secret = GatewayHarness::kPlatformSecret; });
  const PlatformSubscription wrong = Subscribe(
      subscriber, url, {kProductDeleted},
      [](PlatformSubscriptionRequest& r) { r.primary_secret = "not-the-source-secret-0123"; });
  const PlatformSubscription rotating =
      Subscribe(subscriber, url, {kProductCreated}, [](PlatformSubscriptionRequest& r) {
        r.primary_secret = "an-old-secret-0123456789";
        r.secondary_secret = GatewayHarness::kPlatformSecret;
      });

  const std::string uuid = NewUuid();
  const std::string updated = platform_->Publish({kProductUpdated, ProductData(uuid, "sku-1")});
  const std::string deleted = platform_->Publish({kProductDeleted, ProductData(NewUuid())});
  const std::string created = platform_->Publish({kProductCreated, ProductData(NewUuid())});
  ASSERT_TRUE(FakeEventPlatform::WaitUntil([&] {
    return !DeliveriesOf(updated).empty() && !DeliveriesOf(deleted).empty() &&
           !DeliveriesOf(created).empty();
  }));

  const FakeEventPlatform::Delivery accepted = DeliveriesOf(updated)[0];
  EXPECT_EQ(accepted.status, 200) << accepted.error;
  EXPECT_EQ(accepted.subscription_id, good.id);
  // The request as Akeneo documents it.
  EXPECT_EQ(accepted.headers.at("X-AKENEO-SIGNATURE-PRIMARY"),
            TestHmacHex(GatewayHarness::kPlatformSecret, accepted.body));
  EXPECT_EQ(accepted.headers.at("X-AKENEO-SIGNATURE-ALGORITHM"), "HmacSHA256");
  EXPECT_EQ(accepted.headers.count("X-AKENEO-SIGNATURE-SECONDARY"), 0u);
  EXPECT_EQ(accepted.headers.at("Content-Type"), "application/json");
  const json body = json::parse(accepted.body);
  EXPECT_EQ(body["specversion"], "1.0");
  EXPECT_EQ(body["id"], updated);
  EXPECT_EQ(body["source"], "akeneo-event-platform");
  EXPECT_EQ(body["type"], kProductUpdated);
  EXPECT_EQ(body["subject"], good.id);
  EXPECT_EQ(body["datacontenttype"], "application/json");
  EXPECT_EQ(body["dataschema"], absl::StrCat("https://event.prd.sdk.akeneo.cloud/spec/",
                                             kProductUpdated, ".schema.json"));
  EXPECT_EQ(body["data"]["product"]["uuid"], uuid);
  EXPECT_FALSE(body["data"]["product"].contains("identifier"));  // send_product_identifier off
  EXPECT_EQ(body["data"]["author"]["type"], "user");

  const FakeEventPlatform::Delivery refused = DeliveriesOf(deleted)[0];
  EXPECT_EQ(refused.status, 401);
  EXPECT_EQ(refused.subscription_id, wrong.id);
  const FakeEventPlatform::Delivery rotated = DeliveriesOf(created)[0];
  EXPECT_EQ(rotated.status, 200) << rotated.error;
  EXPECT_EQ(rotated.subscription_id, rotating.id);
  EXPECT_EQ(rotated.headers.at("X-AKENEO-SIGNATURE-SECONDARY"),
            TestHmacHex(GatewayHarness::kPlatformSecret, rotated.body));

  // The gateway stored the two events it accepted, and not the refused one.
  std::vector<v1::Event> events = gateway.AllEvents();
  ASSERT_EQ(events.size(), 2u);
  std::set<std::string> ids;
  for (const v1::Event& event : events) {
    ids.insert(event.id());
    EXPECT_EQ(event.origin(), v1::ORIGIN_EVENT_PLATFORM);
  }
  EXPECT_EQ(ids, (std::set<std::string>{updated, created}));
  for (const v1::Event& event : events) {
    if (event.id() == updated) {
      EXPECT_EQ(event.type(), "product.updated");
      EXPECT_EQ(event.resource_id(), uuid);
    }
  }

  // The 401 counts as a failed delivery on the platform's side: an error log, a retry later.
  PlatformLogQuery query;
  query.subscription_id = wrong.id;
  query.log_type = "error";
  absl::StatusOr<PlatformLogPage> logs = client_->Logs(query);
  ASSERT_TRUE(logs.ok()) << logs.status();
  ASSERT_EQ(logs->logs.size(), 1u);
  EXPECT_EQ(logs->logs[0].operation, "failed_to_deliver_event");
  EXPECT_EQ(logs->logs[0].error_code, 401);
  EXPECT_EQ(platform_->SubscriptionStatus(wrong.id), "active");
  EXPECT_EQ(platform_->PendingCount(), 1);  // waiting for its retry
}

TEST_F(PlatformDeliveryTest, ThrottlingSlowsDownAndRetriesTheSameEvent) {
  // Three 429s, then 200s.
  Destination destination([](int n) { return n < 3 ? 429 : 200; });
  Start(destination.cert_file());
  const PlatformSubscription subscription =
      Subscribe(NewSubscriber(), destination.url(), {kProductUpdated});
  const std::string id = platform_->Publish({kProductUpdated, ProductData(NewUuid())});
  ASSERT_TRUE(FakeEventPlatform::WaitUntil([&] {
    std::vector<FakeEventPlatform::Delivery> d = DeliveriesOf(id);
    return !d.empty() && d.back().status == 200;
  }));
  std::vector<FakeEventPlatform::Delivery> attempts = DeliveriesOf(id);
  ASSERT_EQ(attempts.size(), 4u);
  // The rate halves after each 429 (100/s -> 50 -> 25 -> 12.5), so the waits before the retries
  // are at least 20, 40 and 80 ms; Retry-After (an hour) is ignored.
  const milliseconds minimum_gaps[] = {milliseconds(20), milliseconds(40), milliseconds(80)};
  for (size_t i = 1; i < attempts.size(); ++i) {
    EXPECT_EQ(attempts[i - 1].status, 429);
    EXPECT_GE(attempts[i].sent_at - attempts[i - 1].sent_at, minimum_gaps[i - 1]) << i;
    EXPECT_EQ(attempts[i].attempt, 1);  // a 429 is not a failed attempt
  }
  EXPECT_EQ(platform_->SubscriptionStatus(subscription.id), "active");
}

TEST_F(PlatformDeliveryTest, ThrottledTooLongCountsAsAFailure) {
  Destination destination([](int) { return 429; });
  Start(destination.cert_file(), [](FakeEventPlatform::Options& o) {
    o.throttled_give_up = milliseconds(100);
    o.retry_delays = {milliseconds(50)};
    o.min_deliveries_for_rate = 1000;
  });
  Subscribe(NewSubscriber(), destination.url(), {kProductUpdated});
  const std::string id = platform_->Publish({kProductUpdated, ProductData(NewUuid())});
  // After throttled_give_up the event enters the retry policy: its next try is attempt 2.
  ASSERT_TRUE(FakeEventPlatform::WaitUntil([&] {
    std::vector<FakeEventPlatform::Delivery> d = DeliveriesOf(id);
    return !d.empty() && d.back().attempt == 2;
  }));
}

TEST_F(PlatformDeliveryTest, FailuresAreRetriedThenDropped) {
  Destination destination([](int) { return 500; });
  Start(destination.cert_file(), [](FakeEventPlatform::Options& o) {
    o.retry_delays = {milliseconds(20), milliseconds(40), milliseconds(80)};
    o.min_deliveries_for_rate = 1000;  // this test is about retries, not suspension
  });
  const PlatformSubscription subscription =
      Subscribe(NewSubscriber(), destination.url(), {kProductUpdated});
  const std::string first = platform_->Publish({kProductUpdated, ProductData(NewUuid())});
  ASSERT_TRUE(FakeEventPlatform::WaitUntil([&] { return DeliveriesOf(first).size() == 4u; }));
  // A second event, delivered (and dropped) after the first was dropped, proves the wait long
  // enough to see a fifth try of the first had there been one.
  const std::string second = platform_->Publish({kProductUpdated, ProductData(NewUuid())});
  ASSERT_TRUE(FakeEventPlatform::WaitUntil([&] { return DeliveriesOf(second).size() == 4u; }));
  ASSERT_TRUE(FakeEventPlatform::WaitUntil([&] { return platform_->PendingCount() == 0; }));
  std::vector<FakeEventPlatform::Delivery> attempts = DeliveriesOf(first);
  ASSERT_EQ(attempts.size(), 4u);
  for (size_t i = 0; i < attempts.size(); ++i) {
    EXPECT_EQ(attempts[i].attempt, static_cast<int>(i + 1));
    EXPECT_EQ(attempts[i].status, 500);
  }
  EXPECT_GE(attempts[1].sent_at - attempts[0].sent_at, milliseconds(20));
  EXPECT_GE(attempts[2].sent_at - attempts[1].sent_at, milliseconds(40));
  EXPECT_GE(attempts[3].sent_at - attempts[2].sent_at, milliseconds(80));
  EXPECT_EQ(platform_->SubscriptionStatus(subscription.id), "active");
  // Identical errors within 5 minutes are one log entry (logs page).
  PlatformLogQuery query;
  query.subscription_id = subscription.id;
  query.log_type = "error";
  absl::StatusOr<PlatformLogPage> logs = client_->Logs(query);
  ASSERT_TRUE(logs.ok()) << logs.status();
  ASSERT_EQ(logs->logs.size(), 1u);
  EXPECT_EQ(logs->logs[0].error_reason, "destination_status_500");
}

TEST_F(PlatformDeliveryTest, ATimeoutIsAFailedDelivery) {
  Destination destination([](int) { return 200; }, /*delay=*/milliseconds(2'000));
  Start(destination.cert_file(), [](FakeEventPlatform::Options& o) {
    o.delivery_timeout = milliseconds(200);
    o.retry_delays = {std::chrono::hours(1)};
  });
  const PlatformSubscription subscription =
      Subscribe(NewSubscriber(), destination.url(), {kProductUpdated});
  const std::string id = platform_->Publish({kProductUpdated, ProductData(NewUuid())});
  ASSERT_TRUE(FakeEventPlatform::WaitUntil([&] { return !DeliveriesOf(id).empty(); }));
  const FakeEventPlatform::Delivery delivery = DeliveriesOf(id)[0];
  EXPECT_EQ(delivery.status, 0);
  EXPECT_TRUE(absl::StrContains(delivery.error, "timed out")) << delivery.error;
  PlatformLogQuery query;
  query.subscription_id = subscription.id;
  query.log_type = "error";
  absl::StatusOr<PlatformLogPage> logs = client_->Logs(query);
  ASSERT_TRUE(logs.ok()) << logs.status();
  ASSERT_EQ(logs->logs.size(), 1u);
  EXPECT_EQ(logs->logs[0].error_reason, "destination_timeout");
  EXPECT_EQ(logs->logs[0].error_code, 500);
}

TEST_F(PlatformDeliveryTest, NotFoundSuspendsCapturesNotifiesAndReplays) {
  std::atomic<bool> found{false};
  Destination destination([&found](int) { return found ? 200 : 404; });
  // The notification receiver fails once (retried), then accepts.
  Destination notifications([](int n) { return n == 0 ? 503 : 200; });
  ASSERT_EQ(destination.cert_file().empty(), false);
  // Both test servers have their own certificate: the platform trusts neither by CA here.
  Start("", [](FakeEventPlatform::Options& o) {
    o.destination_insecure_skip_verify = true;
    o.notification_retry_delays = {milliseconds(20), milliseconds(40)};
  });
  const std::string subscriber = NewSubscriber(notifications.url("/hooks/notifications"));
  const PlatformSubscription subscription =
      Subscribe(subscriber, destination.url(), {kProductUpdated, kProductDeleted});

  const std::string first = platform_->Publish({kProductUpdated, ProductData(NewUuid())});
  ASSERT_TRUE(FakeEventPlatform::WaitUntil(
      [&] { return platform_->SubscriptionStatus(subscription.id) == "suspended"; }));
  const std::string second = platform_->Publish({kProductDeleted, ProductData(NewUuid())});
  // Both are captured: the one answered 404, and the one that happened while suspended.
  EXPECT_EQ(platform_->CapturedCount(subscription.id), 2);
  EXPECT_EQ(DeliveriesOf(first).size(), 1u);
  EXPECT_TRUE(DeliveriesOf(second).empty());

  // The notification, as notification-webhooks documents it, after one retried 503.
  ASSERT_TRUE(FakeEventPlatform::WaitUntil([&] { return notifications.requests().size() == 2u; }));
  const TestHttpServer::Request notification = notifications.requests()[1];
  EXPECT_EQ(notification.method, "POST");
  EXPECT_EQ(notification.target, "/hooks/notifications");
  EXPECT_EQ(notification.Header("Content-Type"), "application/json");
  EXPECT_EQ(notification.Header("User-Agent"), "akeneo/event-platform");
  EXPECT_EQ(notification.Header("X-AKENEO-SIGNATURE-ALGORITHM"), "HmacSHA256");
  EXPECT_EQ(notification.Header("X-AKENEO-SIGNATURE-PRIMARY"),
            TestHmacHex(kNotificationSecret, notification.body));
  EXPECT_EQ(notification.body, notifications.requests()[0].body);  // the same notification
  const json body = json::parse(notification.body);
  EXPECT_EQ(body["notification_type"], "subscription.suspended.system");
  EXPECT_EQ(body["subscription_id"], subscription.id);
  EXPECT_EQ(body["subscriber_id"], subscriber);
  EXPECT_EQ(body["destination"], destination.url());
  EXPECT_EQ(body["events"], json::array({kProductUpdated, kProductDeleted}));
  EXPECT_TRUE(absl::StrContains(body["reason"].get<std::string>(), "404"));
  EXPECT_EQ(body["subject"], pim_.base_url());
  EXPECT_FALSE(body.contains("id"));
  EXPECT_FALSE(body["timestamp"].get<std::string>().empty());

  // Resumed (notified), then replayed once the destination exists again.
  found = true;
  ASSERT_TRUE(client_->ResumeSubscription(subscriber, subscription.id).ok());
  ASSERT_TRUE(FakeEventPlatform::WaitUntil([&] { return notifications.requests().size() == 3u; }));
  EXPECT_EQ(json::parse(notifications.requests()[2].body)["notification_type"],
            "subscription.resumed");
  absl::StatusOr<PlatformReplay> replay = client_->StartReplay(subscriber, subscription.id);
  ASSERT_TRUE(replay.ok()) << replay.status();
  EXPECT_EQ(replay->total, 2);
  ASSERT_TRUE(FakeEventPlatform::WaitUntil(
      [&] { return DeliveriesOf(first).size() == 2u && DeliveriesOf(second).size() == 1u; }));
  EXPECT_TRUE(DeliveriesOf(first)[1].replay);
  EXPECT_EQ(DeliveriesOf(first)[1].status, 200);
  EXPECT_EQ(DeliveriesOf(first)[1].body, DeliveriesOf(first)[0].body);  // the same event
  EXPECT_EQ(DeliveriesOf(second)[0].status, 200);
  EXPECT_EQ(platform_->CapturedCount(subscription.id), 0);
}

TEST_F(PlatformDeliveryTest, LowSuccessRateSuspends) {
  // Successes until the 6th request, failures after: 5 of 10 is below 90 %.
  Destination destination([](int n) { return n < 5 ? 200 : 500; });
  Start(destination.cert_file(), [](FakeEventPlatform::Options& o) {
    o.min_deliveries_for_rate = 10;
    o.retry_delays = {std::chrono::hours(1)};
  });
  const PlatformSubscription subscription =
      Subscribe(NewSubscriber(), destination.url(), {kProductUpdated});
  std::vector<std::string> ids;
  for (int i = 0; i < 12; ++i) {
    ids.push_back(platform_->Publish({kProductUpdated, ProductData(NewUuid())}));
  }
  ASSERT_TRUE(FakeEventPlatform::WaitUntil(
      [&] { return platform_->SubscriptionStatus(subscription.id) == "suspended"; }));
  // Suspended at the 10th result; the two events not yet sent were captured with the failed
  // ones waiting for their retry.
  EXPECT_EQ(platform_->deliveries().size(), 10u);
  EXPECT_EQ(platform_->CapturedCount(subscription.id), 7);
}

TEST_F(PlatformDeliveryTest, ProductIdentifierFilterAndCustomHeaders) {
  Destination with_identifier([](int) { return 200; });
  Destination filtered([](int) { return 200; });
  Start("", [](FakeEventPlatform::Options& o) { o.destination_insecure_skip_verify = true; });
  const std::string subscriber = NewSubscriber();
  Subscribe(subscriber, with_identifier.url(), {kProductUpdated},
            [](PlatformSubscriptionRequest& r) {
              r.send_product_identifier = true;
              r.headers = {{"X-Api-Key", "key-123"}};
            });
  Subscribe(subscriber, filtered.url(), {kProductUpdated},
            [](PlatformSubscriptionRequest& r) { r.filter = "user_type=\"api\""; });

  FakeEventPlatform::Event by_user{kProductUpdated, ProductData(NewUuid(), "sku-user")};
  by_user.author_type = "user";
  platform_->Publish(by_user);
  FakeEventPlatform::Event by_api{kProductUpdated, ProductData(NewUuid(), "sku-api")};
  by_api.author_type = "api";
  const std::string api_id = platform_->Publish(by_api);
  ASSERT_TRUE(FakeEventPlatform::WaitUntil(
      [&] { return with_identifier.requests().size() == 2u && filtered.requests().size() == 1u; }));
  // The filtered subscription got only the API's change (the user's, published first, never).
  const json only = json::parse(filtered.requests()[0].body);
  EXPECT_EQ(only["id"], api_id);
  EXPECT_FALSE(only["data"]["product"].contains("identifier"));
  // send_product_identifier keeps the identifier; the custom header is sent and is not part of
  // the signed bytes.
  const TestHttpServer::Request request = with_identifier.requests()[0];
  EXPECT_EQ(json::parse(request.body)["data"]["product"]["identifier"], "sku-user");
  EXPECT_EQ(request.Header("X-Api-Key"), "key-123");
  EXPECT_EQ(request.Header("X-AKENEO-SIGNATURE-PRIMARY"), TestHmacHex(kSecret, request.body));
  EXPECT_FALSE(request.Header("X-Correlation-ID").empty());
}

}  // namespace
}  // namespace pimgate::testing
