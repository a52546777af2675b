// The Event Platform through a real gateway and a real RocksDB log: ordering of a resource's
// events by CloudEvent `time` (plain and delta events of one product), `subject`, and the
// platform's notification webhooks (subscription suspended, revoked, resumed): verification,
// shape, storage as their own kind, dedup of re-sent notifications, attribution to a source and
// the hook that reports them.
#include <gtest/gtest.h>

#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gateway/server.h"
#include "tests/testing/test_env.h"

namespace pimgate {
namespace {

using testing::EventPlatformHeaders;
using testing::GatewayHarness;
using testing::HttpClient;
using testing::HttpResponse;
using testing::NewUuid;

constexpr char kNotificationSecret[] = "notification-secret-0123456789";
constexpr char kNotificationPath[] = "/hooks/platform/notifications";

// Akeneo's product.updated example (available-events.md): the lightweight payload.
std::string ProductUpdated(const std::string& id, const std::string& uuid,
                           const std::string& time) {
  return absl::StrCat(R"({"specversion":"1.0","id":")", id,
                      R"(","type":"com.akeneo.pim.v1.product.updated","source":"pim",)"
                      R"("subject":"019256aa-7f77-7f58-bc8c-770f7e369c5b","time":")",
                      time,
                      R"(","datacontenttype":"application/json",)"
                      R"("dataschema":"https://event.prd.sdk.akeneo.cloud/spec/)"
                      R"(com.akeneo.pim.v1.product.updated.schema.json",)"
                      R"("data":{"product":{"uuid":")",
                      uuid, R"("},"author":{"identifier":"admin","type":"user"}}})");
}

// Akeneo's product.updated.delta example: the save time in `updated_at` (PHP's DateTime form),
// the changes with their previous and new values.
std::string ProductUpdatedDelta(const std::string& id, const std::string& uuid,
                                const std::string& time) {
  return absl::StrCat(
      R"({"specversion":"1.0","id":")", id,
      R"(","type":"com.akeneo.pim.v1.product.updated.delta","source":"pim",)"
      R"("subject":"019256aa-7f77-7f58-bc8c-770f7e369c5b","time":")",
      time,
      R"(","datacontenttype":"application/json",)"
      R"("dataschema":"https://event.prd.sdk.akeneo.cloud/spec/)"
      R"(com.akeneo.pim.v1.product.updated.delta.schema.json",)"
      R"("data":{"product":{"uuid":")",
      uuid,
      R"(","updated_at":{"date":"2024-10-14 13:01:21.000000","timezone":"UTC"},)"
      R"("changes":{"enabled":{"previous":true,"new":false},)"
      R"("values":{"an_updated_attribute":[{"previous":"previous_data","new":"new_data",)"
      R"("type":"an_attribute_type","locale":"a_locale","scope":"a_scope"}]}}},)"
      R"("author":{"identifier":"admin","type":"user"}}})");
}

// Akeneo's notification example (notification-webhooks.md).
std::string Notification(const std::string& type, const std::string& subscription,
                         const std::string& timestamp = "2026-04-29T12:34:56Z",
                         const std::string& destination = "https://my-app.example.com/webhook") {
  return absl::StrCat(R"({"notification_type":")", type, R"(","timestamp":")", timestamp,
                      R"(","subscription_id":")", subscription,
                      R"(","subscriber_id":"018e1ec5-29da-78ad-aae6-92065b9ca2a5",)"
                      R"("destination":")",
                      destination,
                      R"(","events":["com.akeneo.pim.v1.product.created",)"
                      R"("com.akeneo.pim.v1.product.updated"],)"
                      R"("reason":"Success rate dropped below 90%",)"
                      R"("subject":"https://example.cloud.akeneo.com/"})");
}

// Records what the gateway reports through GatewayHooks (called on its I/O threads).
struct NoticeRecorder {
  std::mutex mu;
  std::vector<SubscriptionNotice> notices;

  GatewayHooks Hooks() {
    GatewayHooks hooks;
    hooks.on_subscription_notice = [this](const SubscriptionNotice& notice) {
      std::lock_guard lock(mu);
      notices.push_back(notice);
    };
    return hooks;
  }
  std::vector<SubscriptionNotice> Take() {
    std::lock_guard lock(mu);
    return notices;
  }
};

GatewayHarness::Options WithNotifications(NoticeRecorder& recorder) {
  GatewayHarness::Options options;
  options.hooks = recorder.Hooks();
  options.tweak = [](Config& config) {
    SourceConfig& platform = config.sources[1];
    platform.notification_path = kNotificationPath;
    platform.notification_secret = Secret{kNotificationSecret, "inline"};
    SourceConfig catalog;
    catalog.name = "catalog";
    catalog.kind = SourceKind::kEventPlatform;
    catalog.path = "/hooks/catalog";
    catalog.secret = Secret{"catalog-secret-0123456789", "inline"};
    config.sources.push_back(catalog);
  };
  return options;
}

HttpResponse Post(HttpClient& client, const std::string& path, const std::string& body,
                  const std::string& secret) {
  return client.Send("POST", path, body, EventPlatformHeaders(secret, body));
}

// ---------------------------------------------------------------------------------------------
// Ordering of plain and delta events

struct Arrival {
  std::string type;
  std::string time;
};

// Sends `arrivals` for one product, in that order; returns the stored events in log order.
std::vector<v1::Event> SendInOrder(const std::vector<Arrival>& arrivals) {
  GatewayHarness gateway;
  HttpClient client = gateway.Client();
  const std::string uuid = NewUuid();
  for (const Arrival& a : arrivals) {
    const std::string body = a.type == "delta" ? ProductUpdatedDelta(NewUuid(), uuid, a.time)
                                               : ProductUpdated(NewUuid(), uuid, a.time);
    const HttpResponse response =
        Post(client, "/hooks/platform", body, GatewayHarness::kPlatformSecret);
    EXPECT_EQ(response.status, 200) << response.body;
  }
  return gateway.AllEvents();
}

TEST(EventPlatformOrdering, PlainThenDeltaOfOneSaveAreBothFresh) {
  // Akeneo's examples: both events of the save share `time`; the delta's `updated_at` (the save
  // time, 2024-10-14 in the example) must not version it apart from the plain event.
  const std::vector<v1::Event> events =
      SendInOrder({{"plain", "2024-02-22T17:31:00Z"}, {"delta", "2024-02-22T17:31:00Z"}});
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].type(), "product.updated");
  EXPECT_EQ(events[1].type(), "product.updated.delta");
  EXPECT_FALSE(events[0].stale());
  EXPECT_FALSE(events[1].stale());
  EXPECT_EQ(events[1].subject(), "019256aa-7f77-7f58-bc8c-770f7e369c5b");
  EXPECT_EQ(events[1].pim_source(), "pim");
}

TEST(EventPlatformOrdering, DeltaThenPlainOfOneSaveAreBothFresh) {
  // Equal `time`: Akeneo breaks the tie by `id`, and the two ids of one save are in no
  // meaningful order, so neither is stale whichever arrives first.
  const std::vector<v1::Event> events =
      SendInOrder({{"delta", "2024-02-22T17:31:00Z"}, {"plain", "2024-02-22T17:31:00Z"}});
  ASSERT_EQ(events.size(), 2u);
  EXPECT_FALSE(events[0].stale());
  EXPECT_FALSE(events[1].stale());
}

TEST(EventPlatformOrdering, EarlierTimeArrivingLaterIsStaleWhateverItsType) {
  // A delta published before the plain event that arrived first is older by Akeneo's order.
  std::vector<v1::Event> events =
      SendInOrder({{"plain", "2024-02-22T17:31:00.002Z"}, {"delta", "2024-02-22T17:31:00.001Z"}});
  ASSERT_EQ(events.size(), 2u);
  EXPECT_FALSE(events[0].stale());
  EXPECT_TRUE(events[1].stale());
  // And the other way round: a plain event older than a delta already stored.
  events = SendInOrder({{"delta", "2024-02-22T17:32:00Z"}, {"plain", "2024-02-22T17:31:59Z"}});
  ASSERT_EQ(events.size(), 2u);
  EXPECT_FALSE(events[0].stale());
  EXPECT_TRUE(events[1].stale());
  // In order, with increasing times, nothing is stale.
  events = SendInOrder({{"plain", "2024-02-22T17:31:00Z"},
                        {"delta", "2024-02-22T17:31:01Z"},
                        {"plain", "2024-02-22T17:31:02Z"},
                        {"delta", "2024-02-22T17:31:02Z"}});
  ASSERT_EQ(events.size(), 4u);
  for (const v1::Event& event : events) EXPECT_FALSE(event.stale()) << event.type();
}

// ---------------------------------------------------------------------------------------------
// Notification webhooks

TEST(EventPlatformNotifications, StoredAsSubscriptionKindAndReported) {
  NoticeRecorder recorder;
  GatewayHarness gateway(WithNotifications(recorder));
  HttpClient client = gateway.Client();
  const std::string body = Notification("subscription.suspended.system", "sub-1");
  // Sent to the source's own path, signed with the source's secret: recognised by its shape.
  HttpResponse response = Post(client, "/hooks/platform", body, GatewayHarness::kPlatformSecret);
  ASSERT_EQ(response.status, 200) << response.body;
  EXPECT_EQ(response.body, R"({"accepted":1,"duplicates":0})");

  const std::vector<v1::Event> events = gateway.AllEvents();
  ASSERT_EQ(events.size(), 1u);
  const v1::Event& event = events[0];
  EXPECT_EQ(event.source(), "platform");
  EXPECT_EQ(event.kind(), "subscription");
  EXPECT_EQ(event.type(), "subscription.suspended.system");
  EXPECT_EQ(event.resource_id(), "sub-1");
  EXPECT_EQ(event.subject(), "sub-1");
  EXPECT_EQ(event.id(), "notification:sub-1:subscription.suspended.system:2026-04-29T12:34:56Z");
  EXPECT_EQ(event.pim_source(), "https://example.cloud.akeneo.com/");
  EXPECT_EQ(event.origin(), v1::ORIGIN_EVENT_PLATFORM);
  EXPECT_FALSE(event.request_id().empty());
  EXPECT_TRUE(event.has_received_at());

  const std::vector<SubscriptionNotice> notices = recorder.Take();
  ASSERT_EQ(notices.size(), 1u);
  EXPECT_EQ(notices[0].source, "platform");
  EXPECT_EQ(notices[0].subscription_id, "sub-1");
  EXPECT_EQ(notices[0].notification_type, "subscription.suspended.system");
  EXPECT_EQ(notices[0].reason, "Success rate dropped below 90%");
  EXPECT_EQ(notices[0].subscriber_id, "018e1ec5-29da-78ad-aae6-92065b9ca2a5");
  EXPECT_EQ(notices[0].changed_at, absl::FromUnixSeconds(1777466096));
}

TEST(EventPlatformNotifications, ResentNotificationIsADuplicateReportedOnce) {
  NoticeRecorder recorder;
  GatewayHarness gateway(WithNotifications(recorder));
  HttpClient client = gateway.Client();
  const std::string body = Notification("subscription.resumed", "sub-1");
  ASSERT_EQ(Post(client, "/hooks/platform", body, GatewayHarness::kPlatformSecret).status, 200);
  // The platform retries a notification it got no 2xx for: same payload.
  const HttpResponse again = Post(client, kNotificationPath, body, kNotificationSecret);
  ASSERT_EQ(again.status, 200) << again.body;
  EXPECT_EQ(again.body, R"({"accepted":0,"duplicates":1})");
  EXPECT_EQ(gateway.AllEvents().size(), 1u);
  EXPECT_EQ(recorder.Take().size(), 1u);
}

TEST(EventPlatformNotifications, NotificationPathAndNotificationSecret) {
  NoticeRecorder recorder;
  GatewayHarness gateway(WithNotifications(recorder));
  HttpClient client = gateway.Client();
  // The subscriber's own secret, at the dedicated path and at the source's path.
  const std::string suspended = Notification("subscription.suspended.user", "sub-1");
  HttpResponse response = Post(client, kNotificationPath, suspended, kNotificationSecret);
  EXPECT_EQ(response.status, 200) << response.body;
  const std::string revoked = Notification("subscription.revoked", "sub-2");
  response = Post(client, "/hooks/platform", revoked, kNotificationSecret);
  EXPECT_EQ(response.status, 200) << response.body;
  // The source's secrets verify notifications at the dedicated path too.
  const std::string resumed = Notification("subscription.resumed", "sub-1", "2026-04-29T13:00:00Z");
  response = Post(client, kNotificationPath, resumed, GatewayHarness::kPlatformSecondary);
  EXPECT_EQ(response.status, 200) << response.body;
  EXPECT_EQ(recorder.Take().size(), 3u);

  // notification_secret signs notifications only: an event signed with it is refused.
  const std::string event = ProductUpdated(NewUuid(), NewUuid(), "2024-02-22T17:31:00Z");
  response = Post(client, "/hooks/platform", event, kNotificationSecret);
  EXPECT_EQ(response.status, 401);
  EXPECT_NE(response.body.find("signs only notification webhooks"), std::string::npos)
      << response.body;
  // The dedicated path takes notifications only, however well signed an event is.
  response = Post(client, kNotificationPath, event, GatewayHarness::kPlatformSecret);
  EXPECT_EQ(response.status, 400);
  EXPECT_NE(response.body.find("takes only Event Platform notification webhooks"),
            std::string::npos)
      << response.body;
  EXPECT_NE(response.body.find("/hooks/platform"), std::string::npos) << response.body;
  EXPECT_EQ(gateway.AllEvents().size(), 3u);
}

TEST(EventPlatformNotifications, UnsignedOrBadlySigned401StoresNothing) {
  NoticeRecorder recorder;
  GatewayHarness gateway(WithNotifications(recorder));
  HttpClient client = gateway.Client();
  const std::string body = Notification("subscription.suspended.system", "sub-1");
  for (const std::string& path : {std::string("/hooks/platform"), std::string(kNotificationPath)}) {
    SCOPED_TRACE(path);
    HttpResponse response = client.Send("POST", path, body, {{"Content-Type", "application/json"}});
    EXPECT_EQ(response.status, 401) << response.body;
    EXPECT_NE(response.body.find("bad_signature"), std::string::npos) << response.body;
    response = Post(client, path, body, "not-the-secret-at-all");
    EXPECT_EQ(response.status, 401) << response.body;
    // Another source's secret is not this one's.
    response = Post(client, path, body, "catalog-secret-0123456789");
    EXPECT_EQ(response.status, 401) << response.body;
  }
  EXPECT_TRUE(gateway.AllEvents().empty());
  EXPECT_TRUE(recorder.Take().empty());
}

TEST(EventPlatformNotifications, MalformedNotification400NamesTheFieldStoresNothing) {
  NoticeRecorder recorder;
  GatewayHarness gateway(WithNotifications(recorder));
  HttpClient client = gateway.Client();
  const std::pair<std::string, std::string> cases[] = {
      {R"({"notification_type":"subscription.suspended.system","timestamp":"2026-04-29T12:34:56Z"})",
       "subscription_id: missing or not a string"},
      {R"({"notification_type":"subscription.resumed","subscription_id":"s","timestamp":"soon"})",
       "timestamp: not an RFC 3339 timestamp"},
      {R"({"notification_type":7,"subscription_id":"s","timestamp":"2026-04-29T12:34:56Z"})",
       "notification_type: missing or not a string"},
  };
  for (const auto& [body, message] : cases) {
    SCOPED_TRACE(body);
    for (const std::string& path :
         {std::string("/hooks/platform"), std::string(kNotificationPath)}) {
      const HttpResponse response = Post(client, path, body, kNotificationSecret);
      EXPECT_EQ(response.status, 400) << response.body;
      EXPECT_NE(response.body.find("bad_payload"), std::string::npos) << response.body;
      EXPECT_NE(response.body.find(message), std::string::npos) << response.body;
    }
  }
  EXPECT_TRUE(gateway.AllEvents().empty());
  EXPECT_TRUE(recorder.Take().empty());
}

TEST(EventPlatformNotifications, AttributedToTheSourceItsDestinationNames) {
  NoticeRecorder recorder;
  GatewayHarness gateway(WithNotifications(recorder));
  HttpClient client = gateway.Client();
  // One subscriber's notification URL serves all its subscriptions: this one delivers to the
  // catalog source (its destination is that source's path, behind whatever host and port).
  const std::string about_catalog =
      Notification("subscription.suspended.system", "sub-c", "2026-04-29T12:34:56Z",
                   "https://pimgate.example.com:8443/hooks/catalog");
  ASSERT_EQ(Post(client, kNotificationPath, about_catalog, kNotificationSecret).status, 200);
  // A destination that names no source (or a legacy one) stays with the receiving source.
  const std::string elsewhere =
      Notification("subscription.suspended.system", "sub-x", "2026-04-29T12:34:56Z",
                   "https://pimgate.example.com/hooks/legacy");
  ASSERT_EQ(Post(client, kNotificationPath, elsewhere, kNotificationSecret).status, 200);

  const std::vector<SubscriptionNotice> notices = recorder.Take();
  ASSERT_EQ(notices.size(), 2u);
  EXPECT_EQ(notices[0].source, "catalog");
  EXPECT_EQ(notices[1].source, "platform");
  const std::vector<v1::Event> events = gateway.AllEvents();
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].source(), "catalog");
  EXPECT_EQ(events[1].source(), "platform");
}

TEST(EventPlatformNotifications, OlderNotificationIsStoredStale) {
  NoticeRecorder recorder;
  GatewayHarness gateway(WithNotifications(recorder));
  HttpClient client = gateway.Client();
  ASSERT_EQ(Post(client, kNotificationPath,
                 Notification("subscription.resumed", "sub-1", "2026-04-29T13:00:00Z"),
                 kNotificationSecret)
                .status,
            200);
  // The suspension it ended arrives late (a retry): older, so stale.
  ASSERT_EQ(Post(client, kNotificationPath,
                 Notification("subscription.suspended.system", "sub-1", "2026-04-29T12:00:00Z"),
                 kNotificationSecret)
                .status,
            200);
  const std::vector<v1::Event> events = gateway.AllEvents();
  ASSERT_EQ(events.size(), 2u);
  EXPECT_FALSE(events[0].stale());
  EXPECT_TRUE(events[1].stale());
}

}  // namespace
}  // namespace pimgate
