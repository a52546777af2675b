// Hydration through the dispatcher: a FakePim over real sockets (TLS), a real AkeneoClient, a
// real RocksDB log, and plugins served over real gRPC unix sockets that record every delivery in
// full. The end-to-end check through a pimgate process is in tests/e2e/hydration_e2e_test.cc.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <atomic>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <thread>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "config/config.h"
#include "core/dispatch/dispatcher.h"
#include "google/protobuf/util/time_util.h"
#include "metrics/metrics.h"
#include "metrics/metrics_collectors.h"
#include "pim/akeneo_client.h"
#include "pim/hydrator.h"
#include "pimgate/v1/plugin.grpc.pb.h"
#include "tests/testing/fake_pim.h"
#include "tests/testing/test_env.h"
#include "tests/testing/typed_values.h"

namespace pimgate {
namespace {

using google::protobuf::Struct;
using google::protobuf::util::TimeUtil;
using testing::FakePim;
using testing::NewUuid;
using testing::TempDir;

constexpr char kPlatform[] = "platform";  // event_platform source with rest
constexpr char kLegacy[] = "legacy";      // events_api source without rest
constexpr int64_t kBaseSeconds = 1'800'000'000;

// What a handler answers: outcome and delay. nullopt = OK at once.
using Answer = std::function<v1::Outcome(const v1::Delivery&)>;

// An EventHandler on a unix socket that records every delivery (the whole event) and checks that
// no two deliveries of one resource are outstanding at once.
class RecordingPlugin final : public v1::EventHandler::Service {
 public:
  RecordingPlugin(const std::string& socket, Answer answer = {}, int delay_ms = 0)
      : answer_(std::move(answer)), delay_ms_(delay_ms) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("unix:" + socket, grpc::InsecureServerCredentials());
    builder.RegisterService(this);
    server_ = builder.BuildAndStart();
  }
  ~RecordingPlugin() {
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(200));
  }

  grpc::Status Deliver(grpc::ServerContext*,
                       grpc::ServerReaderWriter<v1::Ack, v1::Delivery>* stream) override {
    std::vector<std::thread> acks;
    std::mutex write_mu;
    v1::Delivery delivery;
    std::mt19937 rng(7);
    while (stream->Read(&delivery)) {
      // The dispatcher's resource key (source, kind, id): one source's product and another's
      // with the same id are different resources and may be in flight together.
      const std::string key = delivery.event().source() + "/" + delivery.event().kind() + "/" +
                              delivery.event().resource_id();
      {
        std::lock_guard lock(mu_);
        if (!in_flight_.insert(key).second) ++overlaps_;
        deliveries_.push_back(delivery);
      }
      const int delay = delay_ms_ > 0 ? static_cast<int>(rng() % (delay_ms_ + 1)) : 0;
      acks.emplace_back([&, delivery, key, delay] {
        if (delay > 0) std::this_thread::sleep_for(std::chrono::milliseconds(delay));
        v1::Ack ack;
        ack.set_sequence(delivery.event().sequence());
        ack.set_outcome(answer_ ? answer_(delivery) : v1::OUTCOME_OK);
        {
          std::lock_guard lock(mu_);
          in_flight_.erase(key);
        }
        std::lock_guard lock(write_mu);
        stream->Write(ack);
      });
    }
    for (auto& t : acks) t.join();
    return grpc::Status::OK;
  }

  std::vector<v1::Delivery> deliveries() {
    std::lock_guard lock(mu_);
    return deliveries_;
  }
  // Deliveries of the event with this sequence.
  std::vector<v1::Delivery> Of(uint64_t sequence) {
    std::vector<v1::Delivery> out;
    for (const v1::Delivery& d : deliveries()) {
      if (d.event().sequence() == sequence) out.push_back(d);
    }
    return out;
  }
  int overlaps() {
    std::lock_guard lock(mu_);
    return overlaps_;
  }

 private:
  Answer answer_;
  const int delay_ms_;
  std::unique_ptr<grpc::Server> server_;
  std::mutex mu_;
  std::vector<v1::Delivery> deliveries_;
  std::set<std::string> in_flight_;
  int overlaps_ = 0;
};

const google::protobuf::Value* Path(const Struct& data, std::initializer_list<const char*> keys) {
  const Struct* object = &data;
  const google::protobuf::Value* value = nullptr;
  for (const char* key : keys) {
    if (object == nullptr) return nullptr;
    auto it = object->fields().find(key);
    if (it == object->fields().end()) return nullptr;
    value = &it->second;
    object = value->has_struct_value() ? &value->struct_value() : nullptr;
  }
  return value;
}

std::string StringAt(const Struct& data, std::initializer_list<const char*> keys) {
  const google::protobuf::Value* value = Path(data, keys);
  return value != nullptr ? value->string_value() : "";
}

class HydrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto log = EventLog::Open(testing::StoreAt(dir_.File("store")));
    ASSERT_TRUE(log.ok()) << log.status();
    log_ = std::move(*log);
    client_ = MakeClient();
  }

  std::shared_ptr<AkeneoClient> MakeClient() {
    RestConfig rest;
    rest.base_url = testing::UrlOf(pim_.base_url());
    FakePim::Options defaults;
    rest.client_id = defaults.client_id;
    rest.secret.value = defaults.secret;
    rest.username = defaults.username;
    rest.password.value = defaults.password;
    rest.insecure_skip_verify = true;  // the fake's self-signed certificate
    rest.timeout = std::chrono::milliseconds(3000);
    rest.max_attempts = 2;  // a down PIM fails fast; the dispatcher's retries take over
    rest.initial_backoff = std::chrono::milliseconds(10);
    rest.max_backoff = std::chrono::milliseconds(50);
    auto client = AkeneoClient::Create(rest);
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? std::shared_ptr<AkeneoClient>(std::move(*client)) : nullptr;
  }

  std::string Socket(const std::string& name) { return dir_.File(name + ".sock"); }

  PluginConfig Plugin(const std::string& name, bool hydrate = true) {
    PluginConfig plugin;
    plugin.name = name;
    plugin.address = "unix:" + Socket(name);
    plugin.hydrate = hydrate;
    plugin.ack_timeout = std::chrono::milliseconds(5000);
    plugin.retry.initial_backoff = std::chrono::milliseconds(30);
    plugin.retry.max_backoff = std::chrono::milliseconds(150);
    plugin.retry.max_attempts = 50;
    return plugin;
  }

  std::unique_ptr<Dispatcher> StartDispatcher(const std::vector<PluginConfig>& plugins) {
    DispatcherOptions options;
    options.hydration = std::make_shared<Hydrator>(AkeneoClientMap{{kPlatform, client_}});
    auto dispatcher = Dispatcher::Create(
        plugins, log_.get(), [this](const std::string& name) { return "unix:" + Socket(name); },
        options);
    EXPECT_TRUE(dispatcher.ok()) << dispatcher.status();
    if (!dispatcher.ok()) return nullptr;
    EXPECT_TRUE((*dispatcher)->Start().ok());
    return std::move(*dispatcher);
  }

  // A lightweight Event Platform event: only ids in data, as the PIM sends them.
  v1::Event Platform(const std::string& type, const std::string& id, int64_t version_s) {
    v1::Event event;
    event.set_id(NewUuid());
    event.set_source(kPlatform);
    event.set_origin(v1::ORIGIN_EVENT_PLATFORM);
    event.set_type(type);
    event.set_kind(type.substr(0, type.find('.')));
    event.set_original_type("com.akeneo.pim.v1." + type);
    event.set_resource_id(id);
    event.set_author("b238e9f7");
    event.set_author_type("api");
    *event.mutable_version_at() = TimeUtil::SecondsToTimestamp(kBaseSeconds + version_s);
    *event.mutable_occurred_at() = event.version_at();
    auto& fields = *event.mutable_data()->mutable_fields();
    auto& object = *fields[event.kind()].mutable_struct_value()->mutable_fields();
    object[event.kind() == "product" ? "uuid" : "code"].set_string_value(id);
    auto& author = *fields["author"].mutable_struct_value()->mutable_fields();
    author["identifier"].set_string_value("b238e9f7");
    author["type"].set_string_value("api");
    return event;
  }

  // A legacy Events API event: data is the full resource already.
  v1::Event Legacy(const std::string& type, const std::string& uuid, int64_t version_s) {
    v1::Event event;
    event.set_id(NewUuid());
    event.set_source(kLegacy);
    event.set_origin(v1::ORIGIN_EVENTS_API);
    event.set_type(type);
    event.set_kind(type.substr(0, type.find('.')));
    event.set_resource_id(uuid);
    *event.mutable_version_at() = TimeUtil::SecondsToTimestamp(kBaseSeconds + version_s);
    *event.mutable_occurred_at() = event.version_at();
    auto& fields = *event.mutable_data()->mutable_fields();
    fields["uuid"].set_string_value(uuid);
    fields["family"].set_string_value("legacy-family");
    return event;
  }

  // Puts a product in the PIM with a family and one value.
  void PutProduct(const std::string& uuid, const std::string& family = "shoes") {
    pim_.PutProduct(
        uuid, (kBaseSeconds + 100) * 1'000'000LL,
        absl::StrCat(
            R"({"family":")", family,
            R"(","enabled":true,"values":{"name":[{"locale":null,"scope":null,"data":"Name of )",
            uuid, R"("}]}})"));
  }

  void Append(std::vector<v1::Event> events) {
    AppendRequest request;
    request.events = std::move(events);
    ASSERT_TRUE(log_->AppendSync(std::move(request)).ok());
  }

  bool WaitFor(const std::function<bool()>& done, int seconds = 60) {  // a hang guard only
    for (int i = 0; i < seconds * 100; ++i) {
      if (done()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return done();
  }

  PluginDispatchStats StatsOf(Dispatcher& d, const std::string& name) {
    for (const auto& s : d.Stats()) {
      if (s.name == name) return s;
    }
    return {};
  }

  // REST calls the PIM received (token requests excluded), by kind.
  int Searches() { return CountCalls("/api/rest/v1/products-uuid?"); }
  int CountCalls(const std::string& prefix) {
    int n = 0;
    for (const FakePim::Request& r : pim_.requests()) n += absl::StartsWith(r.target, prefix);
    return n;
  }
  int ApiCalls() {
    int n = 0;
    for (const FakePim::Request& r : pim_.requests()) {
      n += absl::StartsWith(r.target, "/api/rest/");
    }
    return n;
  }

  TempDir dir_;
  FakePim pim_;
  std::shared_ptr<AkeneoClient> client_;
  std::unique_ptr<EventLog> log_;
};

TEST_F(HydrationTest, ProductUpdatedIsDeliveredWithTheFullProduct) {
  const std::string uuid = NewUuid();
  PutProduct(uuid);
  // The first delivery is answered RETRY: the second one carries the same product without a
  // second fetch.
  std::atomic<int> seen{0};
  RecordingPlugin plugin(Socket("p"), [&](const v1::Delivery&) {
    return seen++ == 0 ? v1::OUTCOME_RETRY : v1::OUTCOME_OK;
  });
  auto dispatcher = StartDispatcher({Plugin("p")});
  ASSERT_NE(dispatcher, nullptr);
  Append({Platform("product.updated", uuid, 1)});
  ASSERT_TRUE(WaitFor([&] { return StatsOf(*dispatcher, "p").cursor == 1; }));

  std::vector<v1::Delivery> deliveries = plugin.deliveries();
  ASSERT_EQ(deliveries.size(), 2u);
  for (const v1::Delivery& delivery : deliveries) {
    const Struct& data = delivery.event().data();
    EXPECT_EQ(StringAt(data, {"hydration"}), "ok");
    EXPECT_EQ(StringAt(data, {"resource", "uuid"}), uuid);
    EXPECT_EQ(StringAt(data, {"resource", "family"}), "shoes");
    EXPECT_EQ(StringAt(data, {"resource", "updated"}).substr(0, 4), "2027");
    const google::protobuf::Value* name = Path(data, {"resource", "values", "name"});
    ASSERT_NE(name, nullptr);
    ASSERT_EQ(name->list_value().values_size(), 1);
    EXPECT_EQ(name->list_value().values(0).struct_value().fields().at("data").string_value(),
              "Name of " + uuid);
    // The Event Platform's own data is kept.
    EXPECT_EQ(StringAt(data, {"product", "uuid"}), uuid);
    EXPECT_EQ(StringAt(data, {"author", "type"}), "api");
  }
  EXPECT_EQ(deliveries[1].attempt(), 2u);
  EXPECT_EQ(Searches(), 1);
  const PluginDispatchStats stats = StatsOf(*dispatcher, "p");
  EXPECT_EQ(stats.hydration_fetches, 1u);
  EXPECT_EQ(stats.hydration_cache_hits, 0u);
  EXPECT_EQ(stats.hydration_failures, 0u);
  EXPECT_EQ(stats.delivered, 1u);
  // The stored event stays lightweight.
  auto stored = log_->ReadEvents(1, 1);
  ASSERT_TRUE(stored.ok());
  EXPECT_EQ(Path((*stored)[0].data(), {"resource"}), nullptr);
}

TEST_F(HydrationTest, BatchOf150ProductsTakesTwoSearches) {
  std::vector<std::string> uuids;
  std::vector<v1::Event> events;
  for (int i = 0; i < 150; ++i) {
    uuids.push_back(NewUuid());
    PutProduct(uuids.back(), absl::StrCat("family-", i));
    events.push_back(Platform(i % 2 ? "product.updated" : "product.created", uuids.back(), i));
  }
  RecordingPlugin plugin(Socket("p"));
  PluginConfig config = Plugin("p");
  config.max_in_flight = 16;
  // The events are in the log before the dispatcher starts: it reads them in one batch.
  Append(std::move(events));
  auto dispatcher = StartDispatcher({config});
  ASSERT_NE(dispatcher, nullptr);
  ASSERT_TRUE(WaitFor([&] { return StatsOf(*dispatcher, "p").cursor == 150; }));
  std::vector<v1::Delivery> deliveries = plugin.deliveries();
  ASSERT_EQ(deliveries.size(), 150u);
  for (const v1::Delivery& d : deliveries) {
    const int i = static_cast<int>(d.event().sequence()) - 1;
    EXPECT_EQ(StringAt(d.event().data(), {"resource", "uuid"}), uuids[i]);
    EXPECT_EQ(StringAt(d.event().data(), {"resource", "family"}), absl::StrCat("family-", i));
  }
  std::cout << "searches for 150 products: " << Searches() << "\n";
  EXPECT_LE(Searches(), 4);  // 2 when all 150 are read at once (100 + 50)
  EXPECT_EQ(CountCalls("/api/rest/v1/products-uuid/"), 0);  // no single GETs
  EXPECT_EQ(StatsOf(*dispatcher, "p").hydration_fetches, 150u);
}

TEST_F(HydrationTest, TwoHydratingPluginsShareOneFetch) {
  const std::string uuid = NewUuid();
  PutProduct(uuid);
  RecordingPlugin a(Socket("a"));
  RecordingPlugin b(Socket("b"));
  auto dispatcher = StartDispatcher({Plugin("a"), Plugin("b")});
  ASSERT_NE(dispatcher, nullptr);
  Append({Platform("product.updated", uuid, 1)});
  ASSERT_TRUE(WaitFor([&] {
    return StatsOf(*dispatcher, "a").cursor == 1 && StatsOf(*dispatcher, "b").cursor == 1;
  }));
  for (RecordingPlugin* plugin : {&a, &b}) {
    ASSERT_EQ(plugin->deliveries().size(), 1u);
    EXPECT_EQ(StringAt(plugin->deliveries()[0].event().data(), {"resource", "family"}), "shoes");
  }
  EXPECT_EQ(Searches(), 1);
  const PluginDispatchStats sa = StatsOf(*dispatcher, "a"), sb = StatsOf(*dispatcher, "b");
  EXPECT_EQ(sa.hydration_fetches + sb.hydration_fetches, 1u);
  EXPECT_EQ(sa.hydration_cache_hits + sb.hydration_cache_hits, 1u);
}

TEST_F(HydrationTest, PimDownRetriesTheEventWhileOtherPluginsAndResourcesFlow) {
  const std::string uuid = NewUuid();
  PutProduct(uuid);
  pim_.Stop();
  RecordingPlugin hydrating(Socket("hydrating"));
  RecordingPlugin plain(Socket("plain"));
  auto dispatcher = StartDispatcher({Plugin("hydrating"), Plugin("plain", /*hydrate=*/false)});
  ASSERT_NE(dispatcher, nullptr);
  Append({Platform("product.updated", uuid, 1), Legacy("product.updated", NewUuid(), 1)});

  // Meanwhile: the plain plugin gets both events (the platform one as stored), the hydrating
  // plugin gets the legacy one, and the platform event is retried.
  ASSERT_TRUE(WaitFor([&] { return StatsOf(*dispatcher, "plain").cursor == 2; }));
  ASSERT_EQ(plain.Of(1).size(), 1u);
  EXPECT_EQ(Path(plain.Of(1)[0].event().data(), {"resource"}), nullptr);
  EXPECT_EQ(Path(plain.Of(1)[0].event().data(), {"hydration"}), nullptr);
  ASSERT_TRUE(WaitFor([&] { return hydrating.Of(2).size() == 1; }));
  ASSERT_TRUE(WaitFor([&] { return StatsOf(*dispatcher, "hydrating").hydration_failures >= 3; }));
  EXPECT_TRUE(hydrating.Of(1).empty());
  PluginDispatchStats stats = StatsOf(*dispatcher, "hydrating");
  EXPECT_GE(stats.retried, 3u);
  EXPECT_TRUE(absl::StrContains(stats.last_error, "hydration failed: ")) << stats.last_error;
  EXPECT_EQ(stats.cursor, 0u);

  pim_.Resume();
  ASSERT_TRUE(WaitFor([&] { return StatsOf(*dispatcher, "hydrating").cursor == 2; }));
  std::vector<v1::Delivery> deliveries = hydrating.Of(1);
  ASSERT_EQ(deliveries.size(), 1u);
  EXPECT_GE(deliveries[0].attempt(), 4u);  // three failed fetches counted as attempts
  EXPECT_EQ(StringAt(deliveries[0].event().data(), {"resource", "family"}), "shoes");
}

TEST_F(HydrationTest, FetchFailingEveryAttemptIsDeadLettered) {
  pim_.Stop();
  RecordingPlugin plugin(Socket("p"));
  PluginConfig config = Plugin("p");
  config.retry.max_attempts = 3;
  auto dispatcher = StartDispatcher({config});
  ASSERT_NE(dispatcher, nullptr);
  const std::string uuid = NewUuid();
  Append({Platform("product.updated", uuid, 1), Platform("product.updated", uuid, 2)});
  absl::StatusOr<std::vector<v1::DeadLetter>> letters;
  ASSERT_TRUE(WaitFor([&] {
    letters = dispatcher->dead_letters().List("p", 0, 100);
    return letters.ok() && letters->size() == 2;
  }));
  for (const v1::DeadLetter& letter : *letters) {
    EXPECT_EQ(letter.attempts(), 3u);
    EXPECT_FALSE(letter.rejected());
    EXPECT_TRUE(absl::StrContains(letter.reason(), "hydration failed: fetching product " + uuid))
        << letter.reason();
    EXPECT_EQ(Path(letter.event().data(), {"resource"}), nullptr);  // stored lightweight
  }
  EXPECT_TRUE(plugin.deliveries().empty());
}

TEST_F(HydrationTest, ProductDeletedInThePimIsDeliveredWithNotFound) {
  const std::string kept = NewUuid(), gone = NewUuid();
  PutProduct(kept);
  PutProduct(gone);
  pim_.DeleteProduct(gone);
  RecordingPlugin plugin(Socket("p"));
  auto dispatcher = StartDispatcher({Plugin("p")});
  ASSERT_NE(dispatcher, nullptr);
  Append({Platform("product.updated", gone, 1), Platform("product.updated", kept, 1)});
  ASSERT_TRUE(WaitFor([&] { return StatsOf(*dispatcher, "p").cursor == 2; }));
  const std::vector<v1::Delivery> first = plugin.Of(1);
  ASSERT_EQ(first.size(), 1u);
  const Struct& data = first[0].event().data();
  EXPECT_EQ(StringAt(data, {"hydration"}), "not_found");
  EXPECT_EQ(Path(data, {"resource"}), nullptr);
  EXPECT_EQ(StringAt(data, {"product", "uuid"}), gone);
  EXPECT_EQ(StringAt(plugin.Of(2)[0].event().data(), {"hydration"}), "ok");
  EXPECT_EQ(Searches(), 1);  // both in one search
  EXPECT_EQ(StatsOf(*dispatcher, "p").hydration_not_found, 1u);
}

TEST_F(HydrationTest, ProductModelsAreFetchedOneByOne) {
  pim_.PutProductModel("model-1", (kBaseSeconds + 5) * 1'000'000LL,
                       R"({"family":"shoes","family_variant":"by_size","values":{}})");
  RecordingPlugin plugin(Socket("p"));
  auto dispatcher = StartDispatcher({Plugin("p")});
  ASSERT_NE(dispatcher, nullptr);
  Append({Platform("product_model.updated", "model-1", 1),
          Platform("product_model.created", "model-gone", 1)});
  ASSERT_TRUE(WaitFor([&] { return StatsOf(*dispatcher, "p").cursor == 2; }));
  const std::vector<v1::Delivery> first = plugin.Of(1);
  ASSERT_EQ(first.size(), 1u);
  const Struct& found = first[0].event().data();
  EXPECT_EQ(StringAt(found, {"hydration"}), "ok");
  EXPECT_EQ(StringAt(found, {"resource", "code"}), "model-1");
  EXPECT_EQ(StringAt(found, {"resource", "family_variant"}), "by_size");
  EXPECT_EQ(StringAt(plugin.Of(2).at(0).event().data(), {"hydration"}), "not_found");
  EXPECT_EQ(CountCalls("/api/rest/v1/product-models/model-1"), 1);
  EXPECT_EQ(CountCalls("/api/rest/v1/product-models/model-gone"), 1);
  EXPECT_EQ(CountCalls("/api/rest/v1/product-models?"), 0);  // never a `code` search
  EXPECT_EQ(Searches(), 0);
}

// Every other kind the REST API serves by code is fetched one GET each, at the route Akeneo
// documents for it; a parent's code comes first in the resource id ("parent/code").
TEST_F(HydrationTest, OtherKindsAreFetchedByCodeAtTheirRoutes) {
  pim_.PutCodedResource("family", "shoes", R"({"attributes":["sku","name"],"labels":{}})");
  pim_.PutCodedResource("attribute", "name", R"({"type":"pim_catalog_text"})");
  pim_.PutCodedResource("attribute_group", "marketing", R"({"sort_order":1})");
  pim_.PutCodedResource("attribute_option", "color/red", R"({"sort_order":2})");
  pim_.PutCodedResource("reference_entity_record", "brands/acme", R"({"values":{}})");
  pim_.PutCodedResource("asset", "packshots/img 1", R"({"values":{}})");
  RecordingPlugin plugin(Socket("p"));
  auto dispatcher = StartDispatcher({Plugin("p")});
  ASSERT_NE(dispatcher, nullptr);
  const std::vector<std::pair<std::string, std::string>> events = {
      {"family.updated", "shoes"},
      {"attribute.created", "name"},
      {"attribute_group.updated", "marketing"},
      {"attribute_option.created", "color/red"},
      {"reference_entity_record.updated", "brands/acme"},
      {"asset.updated", "packshots/img 1"},
      {"category.updated", "gone"},  // the PIM no longer has it
  };
  std::vector<v1::Event> appended;
  for (const auto& [type, id] : events) appended.push_back(Platform(type, id, 1));
  Append(appended);
  ASSERT_TRUE(WaitFor([&] { return StatsOf(*dispatcher, "p").cursor == events.size(); }));
  const auto data_of = [&](uint64_t sequence) -> Struct {
    const std::vector<v1::Delivery> delivered = plugin.Of(sequence);
    return delivered.empty() ? Struct() : delivered[0].event().data();
  };
  EXPECT_EQ(StringAt(data_of(1), {"resource", "code"}), "shoes");
  EXPECT_EQ(StringAt(data_of(1), {"hydration"}), "ok");
  EXPECT_EQ(StringAt(data_of(2), {"resource", "type"}), "pim_catalog_text");
  EXPECT_EQ(StringAt(data_of(3), {"resource", "code"}), "marketing");
  EXPECT_EQ(StringAt(data_of(4), {"resource", "code"}), "red");
  EXPECT_EQ(StringAt(data_of(4), {"resource", "attribute"}), "color");
  EXPECT_EQ(StringAt(data_of(5), {"resource", "code"}), "acme");
  EXPECT_EQ(StringAt(data_of(6), {"resource", "code"}), "img 1");
  EXPECT_EQ(StringAt(data_of(7), {"hydration"}), "not_found");
  EXPECT_EQ(Path(data_of(7), {"resource"}), nullptr);
  for (const char* target :
       {"/api/rest/v1/families/shoes", "/api/rest/v1/attributes/name",
        "/api/rest/v1/attribute-groups/marketing", "/api/rest/v1/attributes/color/options/red",
        "/api/rest/v1/reference-entities/brands/records/acme",
        "/api/rest/v1/asset-families/packshots/assets/img%201", "/api/rest/v1/categories/gone"}) {
    EXPECT_EQ(CountCalls(target), 1) << target;
  }
  EXPECT_EQ(ApiCalls(), static_cast<int>(events.size()));
  EXPECT_EQ(StatsOf(*dispatcher, "p").hydration_not_found, 1u);
}

TEST_F(HydrationTest, ProductKnownByIdentifierIsFetchedByIdentifier) {
  pim_.PutProduct(NewUuid(), (kBaseSeconds + 5) * 1'000'000LL, R"({"family":"boots"})",
                  "sku-legacy");
  RecordingPlugin plugin(Socket("p"));
  auto dispatcher = StartDispatcher({Plugin("p")});
  ASSERT_NE(dispatcher, nullptr);
  Append({Platform("product.updated", "sku-legacy", 1)});
  ASSERT_TRUE(WaitFor([&] { return StatsOf(*dispatcher, "p").cursor == 1; }));
  const std::vector<v1::Delivery> delivered = plugin.Of(1);
  ASSERT_EQ(delivered.size(), 1u);
  const Struct& data = delivered[0].event().data();
  EXPECT_EQ(StringAt(data, {"hydration"}), "ok");
  EXPECT_EQ(StringAt(data, {"resource", "identifier"}), "sku-legacy");
  EXPECT_EQ(StringAt(data, {"resource", "family"}), "boots");
  EXPECT_EQ(CountCalls("/api/rest/v1/products/sku-legacy"), 1);
  EXPECT_EQ(Searches(), 0);
}

// ---- Failure paths: refused credentials, throttling, 5xx, cut connections, malformed JSON ----
// docs/plugins.md: a failed fetch ("PIM unreachable, 5xx or 429 after the client's own retries,
// refused credentials") counts a failed attempt of the event, retried on the plugin's `retry`
// schedule; after retry.max_attempts it is dead-lettered with "gave up after N attempt(s); last:
// hydration failed: fetching product <uuid> from source ...". 408, 429 and 5xx are first
// retried by the REST client itself (rest.max_attempts, 2 here).

constexpr char kTokenPath[] = "/api/oauth/v1/token";

// The statuses the fake answered to calls whose target starts with `prefix`, in order.
std::vector<int> StatusesOf(const FakePim& pim, const std::string& prefix) {
  std::vector<int> statuses;
  for (const FakePim::Request& r : pim.requests()) {
    if (absl::StartsWith(r.target, prefix)) statuses.push_back(r.status);
  }
  return statuses;
}

struct TokenRefusal {
  const char* name;
  FakePim::Fault::Kind kind;
  int status;
  const char* reason;  // what the dead letter's reason says about it
};

void PrintTo(const TokenRefusal& refusal, std::ostream* os) { *os << refusal.name; }

class HydrationTokenRefused : public HydrationTest,
                              public ::testing::WithParamInterface<TokenRefusal> {
 protected:
  FakePim::Fault TokenFault(int count) const {
    FakePim::Fault fault;
    fault.kind = GetParam().kind;
    fault.status = GetParam().status;
    fault.message = "Invalid client credentials";
    fault.path = kTokenPath;
    fault.count = count;
    return fault;
  }
};

// The token endpoint refuses twice: each refusal fails one attempt of the event (no delivery
// without its product), and the third attempt, with a token, delivers it hydrated.
TEST_P(HydrationTokenRefused, EachRefusalFailsAnAttemptThenTheEventIsDeliveredHydrated) {
  const std::string uuid = NewUuid();
  PutProduct(uuid);
  pim_.InjectFault(TokenFault(2));
  RecordingPlugin plugin(Socket("p"));
  auto dispatcher = StartDispatcher({Plugin("p")});
  ASSERT_NE(dispatcher, nullptr);
  Append({Platform("product.updated", uuid, 1)});
  ASSERT_TRUE(WaitFor([&] { return StatsOf(*dispatcher, "p").cursor == 1; }));

  const std::vector<v1::Delivery> deliveries = plugin.deliveries();
  ASSERT_EQ(deliveries.size(), 1u);  // never delivered without its product
  EXPECT_EQ(deliveries[0].attempt(), 3u);
  EXPECT_EQ(StringAt(deliveries[0].event().data(), {"hydration"}), "ok");
  EXPECT_EQ(StringAt(deliveries[0].event().data(), {"resource", "family"}), "shoes");
  const PluginDispatchStats stats = StatsOf(*dispatcher, "p");
  EXPECT_EQ(stats.hydration_failures, 2u);
  EXPECT_EQ(stats.hydration_fetches, 1u);
  EXPECT_EQ(stats.delivered, 1u);
  // One token request per failed attempt (a refusal is not retried by the client), then one
  // that succeeds; the search is made once, with the token.
  const std::vector<int> tokens = StatusesOf(pim_, kTokenPath);
  ASSERT_EQ(tokens.size(), 3u);
  EXPECT_EQ(tokens[2], 200);
  EXPECT_EQ(StatusesOf(pim_, "/api/rest/v1/products-uuid?"), std::vector<int>{200});
}

// Refused every time: after retry.max_attempts the event is dead-lettered with the documented
// reason, which names the refusal and no credential.
TEST_P(HydrationTokenRefused, RefusedEveryTimeIsDeadLetteredWithTheReason) {
  const std::string uuid = NewUuid();
  pim_.InjectFault(TokenFault(1000));
  RecordingPlugin plugin(Socket("p"));
  PluginConfig config = Plugin("p");
  config.retry.max_attempts = 3;
  auto dispatcher = StartDispatcher({config});
  ASSERT_NE(dispatcher, nullptr);
  Append({Platform("product.updated", uuid, 1)});
  absl::StatusOr<std::vector<v1::DeadLetter>> letters;
  ASSERT_TRUE(WaitFor([&] {
    letters = dispatcher->dead_letters().List("p", 0, 100);
    return letters.ok() && letters->size() == 1;
  }));
  const v1::DeadLetter& letter = (*letters)[0];
  EXPECT_EQ(letter.attempts(), 3u);
  EXPECT_FALSE(letter.rejected());
  EXPECT_TRUE(absl::StrContains(letter.reason(),
                                "gave up after 3 attempt(s); last: hydration "
                                "failed: fetching product " +
                                    uuid + " from source platform"))
      << letter.reason();
  EXPECT_TRUE(absl::StrContains(letter.reason(), GetParam().reason)) << letter.reason();
  const FakePim::Options credentials;
  EXPECT_FALSE(absl::StrContains(letter.reason(), credentials.password)) << letter.reason();
  EXPECT_FALSE(absl::StrContains(letter.reason(), credentials.secret)) << letter.reason();
  EXPECT_EQ(Path(letter.event().data(), {"resource"}), nullptr);  // stored lightweight
  EXPECT_TRUE(plugin.deliveries().empty());
  EXPECT_EQ(StatusesOf(pim_, "/api/rest/v1/"), std::vector<int>{});  // no call without a token
  // The dispatcher saves the letter before it publishes its counters: wait for them.
  EXPECT_TRUE(WaitFor([&] { return StatsOf(*dispatcher, "p").hydration_failures == 3u; }))
      << StatsOf(*dispatcher, "p").hydration_failures;
}

INSTANTIATE_TEST_SUITE_P(
    Refusals, HydrationTokenRefused,
    ::testing::Values(TokenRefusal{"Http401", FakePim::Fault::Kind::kStatus, 401,
                                   "the PIM refused the token request (password grant)"},
                      TokenRefusal{"Http400", FakePim::Fault::Kind::kStatus, 400,
                                   "the PIM refused the token request (password grant)"},
                      TokenRefusal{"MalformedJson", FakePim::Fault::Kind::kMalformedJson, 0,
                                   "the answer has no access_token"}),
    [](const ::testing::TestParamInfo<TokenRefusal>& info) { return info.param.name; });

struct PimError {
  const char* name;
  const char* path;  // the call that fails once (a path: the fault matches it without the query)
  FakePim::Fault::Kind kind;
  int status;
  int retry_after_seconds;
  // What follows: the REST client retries it (the event's first attempt succeeds), or the
  // fetch fails and the event's next attempt fetches again.
  bool client_retries;
};

void PrintTo(const PimError& error, std::ostream* os) { *os << error.name; }

class HydrationPimError : public HydrationTest, public ::testing::WithParamInterface<PimError> {};

// The PIM fails one call: a 429 with Retry-After, a 5xx or a connection cut mid-answer is
// retried by the REST client; a 200 whose JSON is malformed fails the fetch, and the event's
// next attempt fetches again. Either way the event is delivered once, with its product.
TEST_P(HydrationPimError, OneFailedCallIsRetriedThenTheEventIsDeliveredHydrated) {
  const PimError& error = GetParam();
  const std::string uuid = NewUuid();
  PutProduct(uuid);
  pim_.PutProductModel("model-a", (kBaseSeconds + 100) * 1'000'000LL, R"({"family":"shoes"})");
  FakePim::Fault fault;
  fault.kind = error.kind;
  fault.status = error.status;
  fault.retry_after_seconds = error.retry_after_seconds;
  fault.path = error.path;
  pim_.InjectFault(fault);
  RecordingPlugin plugin(Socket("p"));
  auto dispatcher = StartDispatcher({Plugin("p")});
  ASSERT_NE(dispatcher, nullptr);
  const bool model = absl::StartsWith(error.path, "/api/rest/v1/product-models");
  Append({model ? Platform("product_model.updated", "model-a", 1)
                : Platform("product.updated", uuid, 1)});
  ASSERT_TRUE(WaitFor([&] { return StatsOf(*dispatcher, "p").cursor == 1; }));

  EXPECT_EQ(pim_.pending_faults(), 0);
  const std::vector<v1::Delivery> deliveries = plugin.deliveries();
  ASSERT_EQ(deliveries.size(), 1u);
  EXPECT_EQ(deliveries[0].attempt(), error.client_retries ? 1u : 2u);
  const Struct& data = deliveries[0].event().data();
  EXPECT_EQ(StringAt(data, {"hydration"}), "ok");
  EXPECT_EQ(StringAt(data, {"resource", "family"}), "shoes");
  EXPECT_EQ(StringAt(data, {"resource", model ? "code" : "uuid"}), model ? "model-a" : uuid);
  const PluginDispatchStats stats = StatsOf(*dispatcher, "p");
  EXPECT_EQ(stats.hydration_failures, error.client_retries ? 0u : 1u);
  EXPECT_EQ(stats.hydration_fetches, 1u);
  // The failed call, then the one that succeeded (a cut answer is recorded as 0).
  const std::vector<int> calls = StatusesOf(pim_, error.path);
  ASSERT_EQ(calls.size(), 2u);
  EXPECT_EQ(calls[0], error.kind == FakePim::Fault::Kind::kStatus          ? error.status
                      : error.kind == FakePim::Fault::Kind::kCutConnection ? 0
                                                                           : 200);
  EXPECT_EQ(calls[1], 200);
}

INSTANTIATE_TEST_SUITE_P(
    Errors, HydrationPimError,
    ::testing::Values(PimError{"SearchHttp429WithRetryAfter", "/api/rest/v1/products-uuid",
                               FakePim::Fault::Kind::kStatus, 429, 1, true},
                      PimError{"SearchHttp500", "/api/rest/v1/products-uuid",
                               FakePim::Fault::Kind::kStatus, 500, -1, true},
                      PimError{"SearchHttp503", "/api/rest/v1/products-uuid",
                               FakePim::Fault::Kind::kStatus, 503, -1, true},
                      PimError{"SearchConnectionCut", "/api/rest/v1/products-uuid",
                               FakePim::Fault::Kind::kCutConnection, 0, -1, true},
                      PimError{"SearchMalformedJson", "/api/rest/v1/products-uuid",
                               FakePim::Fault::Kind::kMalformedJson, 0, -1, false},
                      PimError{"ModelGetHttp502", "/api/rest/v1/product-models/",
                               FakePim::Fault::Kind::kStatus, 502, -1, true},
                      PimError{"ModelGetMalformedJson", "/api/rest/v1/product-models/",
                               FakePim::Fault::Kind::kMalformedJson, 0, -1, false}),
    [](const ::testing::TestParamInfo<PimError>& info) { return info.param.name; });

// More 5xx than the REST client retries (rest.max_attempts 2): the fetch fails, the event's
// attempt counts as failed, and its next attempt fetches again and delivers.
TEST_F(HydrationTest, ServerErrorsBeyondTheClientsRetriesFailOneAttemptOfTheEvent) {
  const std::string uuid = NewUuid();
  PutProduct(uuid);
  FakePim::Fault fault;
  fault.status = 502;
  fault.path = "/api/rest/v1/products-uuid";
  fault.count = 3;
  pim_.InjectFault(fault);
  RecordingPlugin plugin(Socket("p"));
  auto dispatcher = StartDispatcher({Plugin("p")});
  ASSERT_NE(dispatcher, nullptr);
  Append({Platform("product.updated", uuid, 1)});
  ASSERT_TRUE(WaitFor([&] { return StatsOf(*dispatcher, "p").cursor == 1; }));
  const std::vector<v1::Delivery> deliveries = plugin.deliveries();
  ASSERT_EQ(deliveries.size(), 1u);
  EXPECT_EQ(deliveries[0].attempt(), 2u);
  EXPECT_EQ(StringAt(deliveries[0].event().data(), {"resource", "uuid"}), uuid);
  EXPECT_EQ(StatsOf(*dispatcher, "p").hydration_failures, 1u);
  EXPECT_EQ(StatusesOf(pim_, "/api/rest/v1/products-uuid?"),
            (std::vector<int>{502, 502, 502, 200}));
}

// A product the PIM always answers with broken JSON: dead-lettered, the reason says why.
TEST_F(HydrationTest, MalformedJsonEveryTimeIsDeadLetteredWithTheReason) {
  pim_.PutProductModel("model-a", (kBaseSeconds + 100) * 1'000'000LL, R"({"family":"shoes"})");
  FakePim::Fault fault;
  fault.kind = FakePim::Fault::Kind::kMalformedJson;
  fault.path = "/api/rest/v1/product-models/";
  fault.count = 1000;
  pim_.InjectFault(fault);
  RecordingPlugin plugin(Socket("p"));
  PluginConfig config = Plugin("p");
  config.retry.max_attempts = 2;
  auto dispatcher = StartDispatcher({config});
  ASSERT_NE(dispatcher, nullptr);
  Append({Platform("product_model.updated", "model-a", 1)});
  absl::StatusOr<std::vector<v1::DeadLetter>> letters;
  ASSERT_TRUE(WaitFor([&] {
    letters = dispatcher->dead_letters().List("p", 0, 100);
    return letters.ok() && letters->size() == 1;
  }));
  const v1::DeadLetter& letter = (*letters)[0];
  EXPECT_EQ(letter.attempts(), 2u);
  EXPECT_TRUE(absl::StrContains(letter.reason(),
                                "hydration failed: fetching product_model model-a from source "
                                "platform (GET /api/rest/v1/product-models/{code}): the PIM's "
                                "answer is not a JSON object"))
      << letter.reason();
  EXPECT_TRUE(plugin.deliveries().empty());
  EXPECT_EQ(StatusesOf(pim_, "/api/rest/v1/product-models/"), (std::vector<int>{200, 200}));
}

// A PIM 5/6 has no products-uuid: its products are named by identifier, even when an identifier
// looks like a uuid. Hydration notices the PIM's own 404 on the search and fetches them by
// identifier; a product the PIM does not have is "not found", never a failure.
TEST(HydrationPim6, ProductsWithoutProductsUuidAreFetchedByIdentifier) {
  FakePim::Options options;
  options.products_uuid = false;
  FakePim pim(options);
  const std::string uuid_like = NewUuid();  // an identifier shaped like a uuid
  pim.PutProduct(NewUuid(), kBaseSeconds * 1'000'000LL, R"({"family":"shoes"})", uuid_like);
  pim.PutProduct(NewUuid(), kBaseSeconds * 1'000'000LL, R"({"family":"boots"})", "sku-6");
  RestConfig rest;
  rest.base_url = testing::UrlOf(pim.base_url());
  rest.client_id = options.client_id;
  rest.secret.value = options.secret;
  rest.username = options.username;
  rest.password.value = options.password;
  rest.insecure_skip_verify = true;
  auto created = AkeneoClient::Create(rest);
  ASSERT_TRUE(created.ok()) << created.status();
  // Kept and shut down at the end, as pimgate_main does with its clients: the hydrator's callbacks
  // may hold the client's last reference on one of its workers for a moment after they answered,
  // and a process that ends while that worker still runs loses its OpenSSL per-thread state
  // (LeakSanitizer reports it). Dropping the last reference there is safe (and tested in
  // akeneo_client_test: LastReferenceDroppedOnItsOwnWorkerCancelsQueuedCalls).
  std::shared_ptr<AkeneoClient> client(std::move(*created));
  // Joins its workers (also when an assertion ends the test early): no callback still runs after.
  absl::Cleanup shut_down = [&client] { client->Shutdown(); };
  Hydrator hydrator({{kPlatform, client}});

  const auto hydrate = [&](std::vector<std::string> ids) {
    std::vector<HydrationRequest> requests;
    for (std::size_t i = 0; i < ids.size(); ++i) {
      HydrationRequest& r = requests.emplace_back();
      r.sequence = i + 1;
      r.ticket = i;
      r.source = kPlatform;
      r.kind = "product";
      r.resource_id = ids[i];
      r.version = "1";
    }
    // Shared with the callbacks, which may still be unwinding when the last answer is in.
    struct Answers {
      absl::Mutex mu;
      std::map<std::string, HydrationOutcome> outcomes ABSL_GUARDED_BY(mu);
    };
    auto answers = std::make_shared<Answers>();
    hydrator.Hydrate(requests, [answers, ids](HydrationOutcome outcome) {
      absl::MutexLock lock(&answers->mu);
      answers->outcomes[ids[outcome.ticket]] = std::move(outcome);
    });
    Answers* const state = answers.get();
    const std::size_t wanted = ids.size();
    const auto all_in = [state, wanted]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
      return state->outcomes.size() == wanted;
    };
    absl::MutexLock lock(&answers->mu);
    answers->mu.Await(absl::Condition(&all_in));
    return answers->outcomes;
  };
  const std::string missing = NewUuid();
  std::map<std::string, HydrationOutcome> got = hydrate({uuid_like, "sku-6", missing});
  ASSERT_TRUE(got.at(uuid_like).status.ok()) << got.at(uuid_like).status;
  EXPECT_EQ(StringAt(*got.at(uuid_like).resource, {"identifier"}), uuid_like);
  EXPECT_EQ(StringAt(*got.at(uuid_like).resource, {"family"}), "shoes");
  ASSERT_TRUE(got.at("sku-6").status.ok()) << got.at("sku-6").status;
  EXPECT_EQ(StringAt(*got.at("sku-6").resource, {"family"}), "boots");
  EXPECT_EQ(got.at(missing).status.code(), absl::StatusCode::kNotFound) << got.at(missing).status;
  const auto calls = [&pim](const std::string& prefix) {
    int n = 0;
    for (const FakePim::Request& r : pim.requests()) n += absl::StartsWith(r.target, prefix);
    return n;
  };
  EXPECT_EQ(calls("/api/rest/v1/products-uuid"), 1);  // the search, answered 404
  EXPECT_EQ(calls("/api/rest/v1/products/" + uuid_like), 1);
  EXPECT_EQ(calls("/api/rest/v1/products/" + missing), 1);

  // Known now: uuid-shaped ids go straight to the identifier endpoint.
  got = hydrate({uuid_like});
  EXPECT_TRUE(got.at(uuid_like).from_cache || got.at(uuid_like).status.ok());
  const std::string other = NewUuid();
  pim.PutProduct(NewUuid(), kBaseSeconds * 1'000'000LL, "{}", other);
  got = hydrate({other});
  ASSERT_TRUE(got.at(other).status.ok()) << got.at(other).status;
  EXPECT_EQ(calls("/api/rest/v1/products-uuid"), 1);
  EXPECT_EQ(calls("/api/rest/v1/products/" + other), 1);
}

TEST_F(HydrationTest, EventsThatAreNotLightweightPassThroughWithoutAnyPimCall) {
  const std::string uuid = NewUuid();
  PutProduct(uuid);
  RecordingPlugin plugin(Socket("p"));
  auto dispatcher = StartDispatcher({Plugin("p")});
  ASSERT_NE(dispatcher, nullptr);
  v1::Event legacy = Legacy("product.updated", uuid, 1);
  v1::Event deleted = Platform("product.deleted", NewUuid(), 1);
  v1::Event category = Platform("category.deleted", "summer", 1);
  Append({legacy, deleted, category});
  ASSERT_TRUE(WaitFor([&] { return StatsOf(*dispatcher, "p").cursor == 3; }));
  std::vector<v1::Delivery> deliveries = plugin.deliveries();
  ASSERT_EQ(deliveries.size(), 3u);
  for (const v1::Delivery& d : deliveries) {
    v1::Event expected = d.event().sequence() == 1   ? legacy
                         : d.event().sequence() == 2 ? deleted
                                                     : category;
    expected.set_sequence(d.event().sequence());
    EXPECT_EQ(d.event().data().DebugString(), expected.data().DebugString());
  }
  EXPECT_EQ(ApiCalls(), 0);
  EXPECT_EQ(StatsOf(*dispatcher, "p").hydration_fetches, 0u);
}

TEST_F(HydrationTest, PerResourceOrderHoldsWithHydration) {
  constexpr int kResources = 12, kVersions = 6;
  std::vector<std::string> uuids;
  for (int r = 0; r < kResources; ++r) {
    uuids.push_back(NewUuid());
    PutProduct(uuids.back());
  }
  pim_.SetDelay(std::chrono::milliseconds(15));  // fetches overlap deliveries
  RecordingPlugin plugin(Socket("p"), {}, /*delay_ms=*/5);
  PluginConfig config = Plugin("p");
  config.max_in_flight = 8;
  auto dispatcher = StartDispatcher({config});
  ASSERT_NE(dispatcher, nullptr);
  for (int v = 0; v < kVersions; ++v) {
    std::vector<v1::Event> events;
    for (int r = 0; r < kResources; ++r) {
      // Half are legacy events of the same products: they pass through, in order with the
      // hydrated ones of their resource... (different source, so a different resource key).
      events.push_back(Platform("product.updated", uuids[r], v));
      if (r % 3 == 0) events.push_back(Legacy("product.updated", uuids[r], v));
    }
    Append(std::move(events));
  }
  const uint64_t total = log_->head();
  ASSERT_TRUE(WaitFor([&] { return StatsOf(*dispatcher, "p").cursor == total; }, 60));
  std::map<std::string, uint64_t> last;
  int hydrated = 0;
  for (const v1::Delivery& d : plugin.deliveries()) {
    const std::string key = d.event().source() + "/" + d.event().resource_id();
    EXPECT_GT(d.event().sequence(), last[key]) << key;
    last[key] = d.event().sequence();
    EXPECT_EQ(d.attempt(), 1u);
    if (d.event().source() == kPlatform) {
      ++hydrated;
      EXPECT_EQ(StringAt(d.event().data(), {"hydration"}), "ok");
    }
  }
  EXPECT_EQ(hydrated, kResources * kVersions);
  EXPECT_EQ(plugin.overlaps(), 0);
}

TEST(HydrationConfig, HydratingPluginNeedsAClientForOneOfItsSources) {
  TempDir dir;
  auto log = EventLog::Open(testing::StoreAt(dir.File("store")));
  ASSERT_TRUE(log.ok()) << log.status();
  PluginConfig plugin;
  plugin.name = "p";
  plugin.address = "unix:/nonexistent.sock";
  plugin.hydrate = true;
  auto dispatcher =
      Dispatcher::Create({plugin}, log->get(), [](const std::string&) { return std::string(); });
  ASSERT_FALSE(dispatcher.ok());
  EXPECT_EQ(dispatcher.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(dispatcher.status().message(), "plugins.p.hydrate"));
}

// A legacy source without rest (lines 4-7), an Event Platform one with rest (8-17), then the
// plugins (from line 19).
constexpr char kTwoSources[] = R"(store:
  path: /var/lib/pimgate
sources:
  - name: legacy
    kind: events_api
    path: /hooks/legacy
    secret: s1
  - name: platform
    kind: event_platform
    path: /hooks/platform
    secret: s2
    rest:
      base_url: https://pim.example.com
      client_id: c
      secret: s
      username: u
      password: p
plugins:
)";

TEST(HydrateConfig, NeedsAnEventPlatformSourceWithRest) {
  // All sources (none listed): platform qualifies.
  absl::StatusOr<Config> config = LoadConfigString(
      absl::StrCat(kTwoSources, "  - name: a\n    command: [a]\n    hydrate: true\n"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_TRUE(config->plugins[0].hydrate);
  // Mixed: legacy events pass through, platform ones are hydrated.
  EXPECT_TRUE(LoadConfigString(absl::StrCat(kTwoSources,
                                            "  - name: a\n    command: [a]\n    sources: [legacy, "
                                            "platform]\n    hydrate: true\n"))
                  .ok());
  // Only the legacy source: nothing could ever be hydrated.
  EXPECT_EQ(LoadConfigString(absl::StrCat(kTwoSources,
                                          "  - name: a\n    command: [a]\n    sources: [legacy]\n"
                                          "    hydrate: true\n"))
                .status()
                .message(),
            "line 22: plugins[0].hydrate: needs a source of kind event_platform with rest (the "
            "PIM's REST API to fetch from); none of its sources (legacy) has both");
  // No source has rest at all.
  EXPECT_EQ(LoadConfigString("store:\n  path: /x\nsources:\n  - {name: p, kind: event_platform, "
                             "path: /p, secret: s}\nplugins:\n  - name: a\n    command: [a]\n"
                             "    hydrate: true\n")
                .status()
                .message(),
            "line 8: plugins[0].hydrate: needs a source of kind event_platform with rest (the "
            "PIM's REST API to fetch from); none of the sources (p) has both");
  // hydrate: false is never checked.
  EXPECT_TRUE(LoadConfigString(absl::StrCat(kTwoSources,
                                            "  - name: a\n    command: [a]\n    sources: [legacy]\n"
                                            "    hydrate: false\n"))
                  .ok());
}

TEST(HydrationMetrics, PerPluginFamilies) {
  PluginDispatchStats stats;
  stats.name = "erp";
  stats.hydrating = 3;
  stats.hydration_fetches = 120;
  stats.hydration_cache_hits = 7;
  stats.hydration_not_found = 2;
  stats.hydration_failures = 4;
  MetricsWriter out;
  WritePluginMetrics({}, {stats}, out);
  const std::string text = out.Take();
  for (const char* line : {"pimgate_plugin_hydrating{plugin=\"erp\"} 3\n",
                           "pimgate_plugin_hydration_fetches_total{plugin=\"erp\"} 120\n",
                           "pimgate_plugin_hydration_cache_hits_total{plugin=\"erp\"} 7\n",
                           "pimgate_plugin_hydration_not_found_total{plugin=\"erp\"} 2\n",
                           "pimgate_plugin_hydration_failures_total{plugin=\"erp\"} 4\n"}) {
    EXPECT_TRUE(absl::StrContains(text, line)) << line << "\n" << text;
  }
}

TEST(Hydration, LightweightEvents) {
  v1::Event event;
  event.set_origin(v1::ORIGIN_EVENT_PLATFORM);
  event.set_resource_id("r");
  for (const auto& [type, lightweight] : std::vector<std::pair<std::string, bool>>{
           {"product.created", true},
           {"product.updated", true},
           {"product.updated.delta", true},
           {"product.became_complete", true},
           {"product_model.updated", true},
           {"product.deleted", false},
           {"product_model.deleted", false},
           {"category.updated", true},
           {"family.created", true},
           {"attribute.updated", true},
           {"attribute_group.updated", true},
           {"attribute_option.created", true},
           {"reference_entity_record.updated", true},
           {"asset.updated", true},
           {"family.deleted", false},
           {"asset.deleted", false},
           {"job.export.status_changed", false},
           {"workflow.task.created", false},
           {"app.deleted", false},
       }) {
    event.set_type(type);
    event.set_kind(type.substr(0, type.find('.')));
    EXPECT_EQ(IsLightweightEvent(event), lightweight) << type;
  }
  event.set_type("product.updated");
  event.set_kind("product");
  event.set_origin(v1::ORIGIN_EVENTS_API);
  EXPECT_FALSE(IsLightweightEvent(event));
  event.set_origin(v1::ORIGIN_RECONCILIATION);
  EXPECT_FALSE(IsLightweightEvent(event));
}

}  // namespace
}  // namespace pimgate
