// PlatformSource and CheckPlatformSource against the FakeEventPlatform (PIM tokens from a real
// AkeneoClient and FakePim): event types as pimgatectl takes them, Subscribe creating then
// updating, a bad request making no call, who suspended a subscription from the platform's logs,
// and check findings for the destination, the event globs and a revoked subscriber.
#include "pim/platform_source.h"

#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "events/event_type.h"
#include "pim/akeneo_client.h"
#include "pim/platform_check.h"
#include "tests/testing/fake_event_platform.h"
#include "tests/testing/fake_pim.h"
#include "tests/testing/typed_values.h"

namespace pimgate {
namespace {

using std::chrono::milliseconds;
using testing::FakeEventPlatform;
using testing::FakePim;

constexpr char kSecret[] = "platform-source-secret-0123";
constexpr char kUrl[] = "https://pimgate.example.com";

TEST(ResolvePlatformEventTypesTest, AkeneoCanonicalAndGlobs) {
  auto types = ResolvePlatformEventTypes(
      {"product_model.updated", "com.akeneo.pim.v1.product.deleted", "product.became_*",
       "com.akeneo.pim.v1.product.deleted", "com.akeneo.pim.v1.product.renamed"});
  ASSERT_TRUE(types.ok()) << types.status();
  // The catalogue's order, each once; a com.akeneo type the catalogue lacks is kept, last.
  EXPECT_EQ(*types,
            (std::vector<std::string>{
                "com.akeneo.pim.v1.product.deleted", "com.akeneo.pim.v1.product.became-complete",
                "com.akeneo.pim.v1.product.became-incomplete",
                "com.akeneo.pim.v1.product-model.updated", "com.akeneo.pim.v1.product.renamed"}));
  auto all = ResolvePlatformEventTypes({"*"});
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), DocumentedEventPlatformTypes().size());

  auto bad = ResolvePlatformEventTypes({"product.updated", "produt.*"});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(bad.status().message(), "\"produt.*\"")) << bad.status();
  EXPECT_FALSE(ResolvePlatformEventTypes({""}).ok());
}

class PlatformSourceTest : public ::testing::Test {
 protected:
  PlatformSourceTest() {
    FakeEventPlatform::Options options;
    options.pim = &pim_;
    platform_ = std::make_unique<FakeEventPlatform>(options);
    source_.name = "platform";
    source_.kind = SourceKind::kEventPlatform;
    source_.path = "/hooks/platform";
    source_.secret = Secret{kSecret, "inline"};
    RestConfig& rest = source_.rest.emplace();
    rest.base_url = testing::UrlOf(pim_.base_url());
    rest.client_id = pim_.options().client_id;
    rest.secret = Secret{pim_.options().secret, "inline"};
    rest.username = pim_.options().username;
    rest.password = Secret{pim_.options().password, "inline"};
    rest.ca_file = pim_.cert_file();
    PlatformConfig& config = source_.platform.emplace();
    config.api_url = testing::UrlOf(platform_->api_url(), /*allow_path=*/true);
    config.ca_file = platform_->cert_file();
    config.subscriber_name = "pimgate platform";
    config.max_attempts = 2;
    config.initial_backoff = milliseconds(10);
    config.max_backoff = milliseconds(20);
    akeneo_ = *AkeneoClient::Create(rest);
  }

  std::unique_ptr<PlatformSource> NewSource() {
    auto source = PlatformSource::Create(source_, *akeneo_, /*log=*/nullptr);
    EXPECT_TRUE(source.ok()) << source.status();
    return source.ok() ? *std::move(source) : nullptr;
  }

  FakePim pim_;
  std::unique_ptr<FakeEventPlatform> platform_;
  SourceConfig source_;
  std::unique_ptr<AkeneoClient> akeneo_;
};

TEST_F(PlatformSourceTest, SubscribeCreatesThenUpdates) {
  std::unique_ptr<PlatformSource> source = NewSource();
  auto none = source->Select("");
  EXPECT_EQ(none.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(none.status().message(), "pimgatectl platform subscribe"));

  PlatformSource::SubscribeRequest request;
  request.public_url = std::string(kUrl) + "/";
  request.events = {"product.*"};
  auto created = source->Subscribe(request);
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_TRUE(created->subscriber_created);
  EXPECT_TRUE(created->subscription_created);
  EXPECT_EQ(created->destination, std::string(kUrl) + "/hooks/platform");
  EXPECT_EQ(created->subscription.url, created->destination);
  EXPECT_EQ(created->subscription.events.size(), 6u);
  // Notifications come to the source's path (it has no notification_path), signed with its
  // secret.
  EXPECT_EQ(created->subscriber.contact.notification_webhook_url, created->destination);

  // Again, with other types: the same subscription is updated.
  request.events = {"product.updated"};
  auto updated = source->Subscribe(request);
  ASSERT_TRUE(updated.ok()) << updated.status();
  EXPECT_FALSE(updated->subscriber_created);
  EXPECT_FALSE(updated->subscription_created);
  EXPECT_EQ(updated->subscription.id, created->subscription.id);
  EXPECT_EQ(updated->subscription.events,
            std::vector<std::string>{"com.akeneo.pim.v1.product.updated"});
  auto selected = source->Select("");
  ASSERT_TRUE(selected.ok()) << selected.status();
  EXPECT_EQ(selected->subscription.id, created->subscription.id);

  // A second destination: a second subscription, and Select needs to be told which.
  request.public_url = "https://other.example.com/prefix";
  auto second = source->Subscribe(request);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_TRUE(second->subscription_created);
  EXPECT_EQ(second->destination, "https://other.example.com/prefix/hooks/platform");
  auto ambiguous = source->Select("");
  EXPECT_EQ(ambiguous.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(ambiguous.status().message(), created->subscription.id));
  EXPECT_TRUE(source->Select(second->subscription.id).ok());
  EXPECT_EQ(source->Select("not-there").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(PlatformSourceTest, ABadRequestMakesNoCall) {
  std::unique_ptr<PlatformSource> source = NewSource();
  PlatformSource::SubscribeRequest request;
  request.events = {"product.updated"};
  for (const std::string url : {"", "pimgate.example.com", "https://user:pw@pimgate.example.com",
                                "https://pimgate.example.com/?a=1"}) {
    request.public_url = url;
    EXPECT_EQ(source->Subscribe(request).status().code(), absl::StatusCode::kInvalidArgument)
        << url;
  }
  request.public_url = kUrl;
  request.events = {"no_such.type"};
  EXPECT_EQ(source->Subscribe(request).status().code(), absl::StatusCode::kInvalidArgument);
  // A new subscription needs types: known only once the API is asked, so that one does call.
  EXPECT_TRUE(platform_->api_calls().empty());

  // A source secret Akeneo would refuse: the message names the key, never the value.
  source_.secret = Secret{"short-secret", "env:SHORT"};
  std::unique_ptr<PlatformSource> short_secret = NewSource();
  request.events = {"product.updated"};
  auto refused = short_secret->Subscribe(request);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "secret (from env:SHORT) has 12"))
      << refused.status();
  EXPECT_FALSE(absl::StrContains(refused.status().message(), "short-secret"));
  EXPECT_TRUE(platform_->api_calls().empty());
}

TEST_F(PlatformSourceTest, WhoSuspendedComesFromTheLogs) {
  std::unique_ptr<PlatformSource> source = NewSource();
  PlatformSource::SubscribeRequest request;
  request.public_url = kUrl;
  request.events = {"product.updated"};
  auto subscribed = source->Subscribe(request);
  ASSERT_TRUE(subscribed.ok()) << subscribed.status();
  const std::string subscriber = subscribed->subscriber.id;
  const std::string id = subscribed->subscription.id;
  auto who = source->SuspendedByUser(subscriber, id, "");
  ASSERT_TRUE(who.ok()) << who.status();
  EXPECT_FALSE(who->has_value());

  platform_->Suspend(id, "Success rate dropped below 90%");
  who = source->SuspendedByUser(subscriber, id, subscribed->subscription.updated_at);
  ASSERT_TRUE(who.ok()) << who.status();
  EXPECT_EQ(*who, std::optional<bool>(false));

  ASSERT_TRUE(source->client().ResumeSubscription(subscriber, id).ok());
  ASSERT_TRUE(source->client().SuspendSubscription(subscriber, id).ok());
  who = source->SuspendedByUser(subscriber, id, "");
  ASSERT_TRUE(who.ok()) << who.status();
  EXPECT_EQ(*who, std::optional<bool>(true));
}

TEST_F(PlatformSourceTest, CheckFindsTheDestinationTheEventGlobsAndARevokedSubscriber) {
  std::unique_ptr<PlatformSource> source = NewSource();
  PluginConfig reads;
  reads.name = "reads";
  reads.events = {"product.updated", "product_model.*", "foo.bar"};
  PluginConfig elsewhere;
  elsewhere.name = "elsewhere";
  elsewhere.sources = {"legacy"};
  elsewhere.events = {"category.*"};
  const std::vector<PluginConfig> plugins = {reads, elsewhere};

  PlatformSource::SubscribeRequest request;
  request.public_url = kUrl;
  request.events = {"product.updated", "product.deleted"};
  auto subscribed = source->Subscribe(request);
  ASSERT_TRUE(subscribed.ok()) << subscribed.status();

  PlatformCheckOptions options;
  options.public_url = "https://elsewhere.example.com";
  auto report = CheckPlatformSource(*source, plugins, options);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->expected_destination, "https://elsewhere.example.com/hooks/platform");
  std::map<std::string, PlatformCheckFinding> by_check;
  for (const PlatformCheckFinding& f : report->findings) {
    if (f.outcome != PlatformCheckFinding::Outcome::kNote) by_check[f.check] = f;
  }
  EXPECT_EQ(by_check["status"].outcome, PlatformCheckFinding::Outcome::kPassed);
  EXPECT_EQ(by_check["destination"].outcome, PlatformCheckFinding::Outcome::kProblem);
  EXPECT_TRUE(absl::StrContains(by_check["destination"].fix, "pimgatectl platform delete"))
      << by_check["destination"].fix;
  // product_model.* is not served (the other plugin reads another source: not asked for).
  EXPECT_EQ(by_check["events"].outcome, PlatformCheckFinding::Outcome::kProblem);
  EXPECT_TRUE(absl::StrContains(by_check["events"].detail, "reads asks for product_model.*"))
      << by_check["events"].detail;
  EXPECT_FALSE(absl::StrContains(by_check["events"].detail, "category"))
      << by_check["events"].detail;
  EXPECT_TRUE(absl::StrContains(by_check["events"].fix,
                                "--events product.updated product.deleted product_model.*"))
      << by_check["events"].fix;
  EXPECT_EQ(report->problems(), 2u);
  // Notes: foo.bar is no Event Platform type; product.deleted is read by nobody.
  std::string notes;
  for (const PlatformCheckFinding& f : report->findings) {
    if (f.outcome == PlatformCheckFinding::Outcome::kNote) notes += f.detail + "\n";
  }
  EXPECT_TRUE(absl::StrContains(notes, "reads: foo.bar")) << notes;
  EXPECT_TRUE(absl::StrContains(notes,
                                "no plugin reads (stored, delivered to nobody): "
                                "product.deleted"))
      << notes;

  // The connection is removed from the PIM: its credentials are refused from then on, and that
  // error is the check's answer.
  platform_->RevokeConnection();
  auto revoked = CheckPlatformSource(*source, plugins, options);
  EXPECT_EQ(revoked.status().code(), absl::StatusCode::kUnauthenticated) << revoked.status();
  EXPECT_TRUE(absl::StrContains(revoked.status().message(), "answered HTTP 401"))
      << revoked.status();
}

}  // namespace
}  // namespace pimgate
