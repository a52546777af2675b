// Reconciler against a FakePim over real sockets (HTTPS with a test certificate), a real RocksDB
// log, and, where delivery matters, the real gateway and dispatcher with an in-process plugin.
#include "pim/reconciler.h"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "pim/akeneo_client.h"
#include "core/dispatch/dispatcher.h"
#include "core/log/rocksdb_backend.h"
#include "google/protobuf/util/time_util.h"
#include "pimgate/v1/plugin.grpc.pb.h"
#include "tests/testing/fake_pim.h"
#include "tests/testing/recording_plugin.h"
#include "tests/testing/test_env.h"

namespace pimgate {
namespace {

using google::protobuf::util::TimeUtil;
using testing::FakePim;
using testing::GatewayHarness;
using testing::TempDir;

constexpr int64_t kSecondUs = 1'000'000;

// Waits until `done` holds, up to 30 s.
bool WaitFor(const std::function<bool()>& done) {
  for (int i = 0; i < 3000; ++i) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return done();
}

// Whole seconds (Akeneo's `updated` has no fraction), a day ago: every test's items are older
// than the run that reads them.
int64_t DayAgoUs() { return (absl::ToUnixSeconds(absl::Now()) - 24 * 3600) * kSecondUs; }

// `updated` as Akeneo (and the fake) writes it.
std::string AkeneoTime(int64_t us) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%S+00:00", absl::FromUnixMicros(us), absl::UTCTimeZone());
}

int64_t Micros(const google::protobuf::Timestamp& ts) {
  return TimeUtil::TimestampToMicroseconds(ts);
}

// The search parameter of a first page asking for items updated after `after_us`.
std::string EncodedUpdatedSearch(int64_t after_us) {
  return UrlEncode(absl::StrCat(R"({"updated":[{"operator":">","value":")",
                                AkeneoSearchTime(after_us), R"("}]})"));
}

using testing::RecordingPlugin;

// A plain-HTTP gateway whose log a Dispatcher delivers to a RecordingPlugin named "rec" on
// unix:`socket`: webhooks in, deliveries out, beside the reconciler under test.
struct DispatchedGateway {
  explicit DispatchedGateway(const std::string& socket)
      : gateway(PlainHttp()), plugin(socket), address("unix:" + socket) {}

  absl::Status StartDispatch() {
    PluginConfig rec;
    rec.name = "rec";
    rec.address = address;
    auto created =
        Dispatcher::Create({rec}, &gateway.log(), [this](const std::string&) { return address; });
    if (!created.ok()) return created.status();
    dispatcher = std::move(*created);
    return dispatcher->Start();
  }

  static GatewayHarness::Options PlainHttp() {
    GatewayHarness::Options options;
    options.tls = false;
    return options;
  }

  GatewayHarness gateway;
  RecordingPlugin plugin;
  const std::string address;
  std::unique_ptr<Dispatcher> dispatcher;
};

ReconcileConfig OnDemand() {
  ReconcileConfig config;
  config.interval = std::chrono::milliseconds(0);
  return config;
}

class ReconcilerTest : public ::testing::Test {
 protected:
  void SetUp() override { OpenLog(); }

  void TearDown() override {
    reconciler_.reset();
    for (auto& client : clients_) client->Shutdown();
  }

  void OpenLog() {
    reconciler_.reset();
    log_.reset();
    auto backend = OpenRocksDbBackend(dir_.File("store"));
    ASSERT_TRUE(backend.ok()) << backend.status();
    auto log = EventLog::Open(std::move(*backend), {});
    ASSERT_TRUE(log.ok()) << log.status();
    log_ = std::move(*log);
  }

  // Quick retries: the tests exercise the behaviour, not Akeneo's pace.
  static RestConfig Rest(const FakePim& pim) {
    RestConfig rest;
    rest.base_url = pim.base_url();
    rest.client_id = "pim-client";
    rest.secret = Secret{"pim-secret", "inline"};
    rest.username = "pim-user";
    rest.password = Secret{"pim-password", "inline"};
    rest.insecure_skip_verify = true;
    rest.allow_insecure_http = true;
    rest.timeout = std::chrono::milliseconds(5'000);
    rest.max_attempts = 3;
    rest.initial_backoff = std::chrono::milliseconds(10);
    rest.max_backoff = std::chrono::milliseconds(50);
    return rest;
  }

  // A reconciler for source `name` of `pim` over `log` (default: this fixture's log).
  std::unique_ptr<Reconciler> Make(const FakePim& pim, ReconcileConfig config = OnDemand(),
                                   const std::string& name = "pim", EventLog* log = nullptr,
                                   std::function<void(RestConfig&)> tweak = nullptr) {
    SourceConfig source;
    source.name = name;
    source.path = "/hooks/" + name;
    source.rest = Rest(pim);
    if (tweak) tweak(*source.rest);
    source.reconcile = config;
    SourceConfig plain;  // a source without `rest`
    plain.name = "plain";
    plain.path = "/hooks/plain";
    auto client = AkeneoClient::Create(*source.rest);
    EXPECT_TRUE(client.ok()) << client.status();
    std::shared_ptr<AkeneoClient> shared(std::move(*client));
    clients_.push_back(shared);
    auto reconciler = Reconciler::Create({source, plain}, {{name, shared}}, log ? log : log_.get());
    EXPECT_TRUE(reconciler.ok()) << reconciler.status();
    return std::move(*reconciler);
  }

  std::vector<v1::Event> Events() {
    auto events = log_->backend().ReadEvents(1, 100'000);
    EXPECT_TRUE(events.ok()) << events.status();
    return events.ok() ? *events : std::vector<v1::Event>{};
  }

  static ReconcileSourceStats StatsOf(const Reconciler& r, const std::string& name = "pim") {
    for (const ReconcileSourceStats& s : r.Stats()) {
      if (s.source == name) return s;
    }
    ADD_FAILURE() << "no stats for " << name;
    return {};
  }

  // List requests to `path` the fake saw.
  static std::vector<FakePim::Request> ListRequests(const FakePim& pim, const std::string& path) {
    std::vector<FakePim::Request> out;
    for (const FakePim::Request& r : pim.requests()) {
      if (absl::StartsWith(r.target, path)) out.push_back(r);
    }
    return out;
  }

  TempDir dir_;
  std::unique_ptr<EventLog> log_;
  std::vector<std::shared_ptr<AkeneoClient>> clients_;
  std::unique_ptr<Reconciler> reconciler_;
};

TEST_F(ReconcilerTest, FirstRunRecoversEveryProductAndModelThenOnlyWhatChanged) {
  FakePim pim;
  const int64_t t0 = DayAgoUs();
  const std::vector<std::string> uuids = {testing::NewUuid(), testing::NewUuid(),
                                          testing::NewUuid()};
  for (std::size_t i = 0; i < uuids.size(); ++i) {
    pim.PutProduct(uuids[i], t0 + static_cast<int64_t>(i) * kSecondUs, R"({"family":"shoes"})");
  }
  pim.PutProductModel("model-a", t0 + 10 * kSecondUs, R"({"family_variant":"shoes_size"})");
  reconciler_ = Make(pim);

  const absl::Time before = absl::Now();
  absl::StatusOr<ReconcileRunStats> run = reconciler_->Run("pim");
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->run, 1u);
  EXPECT_EQ(run->scanned, 4u);
  EXPECT_EQ(run->emitted, 4u);
  EXPECT_EQ(run->in_sync, 0u);
  EXPECT_EQ(run->deleted, 0u);
  EXPECT_EQ(run->api_calls, 2u);                   // one page of products, one of models
  EXPECT_FALSE(run->window_start_us.has_value());  // first run: everything
  ASSERT_TRUE(run->watermark_us.has_value());
  EXPECT_EQ(*run->watermark_us, t0 + 10 * kSecondUs);  // the largest `updated` seen
  EXPECT_TRUE(run->watermark_advanced);
  // The first page of each list asks for no `updated` filter, 100 items, search_after.
  for (const char* path : {"/api/rest/v1/products-uuid", "/api/rest/v1/product-models"}) {
    std::vector<FakePim::Request> lists = ListRequests(pim, path);
    ASSERT_EQ(lists.size(), 1u) << path;
    EXPECT_TRUE(absl::StrContains(lists[0].target, "limit=100")) << lists[0].target;
    EXPECT_TRUE(absl::StrContains(lists[0].target, "pagination_type=search_after"));
    EXPECT_FALSE(absl::StrContains(lists[0].target, "search=")) << lists[0].target;
  }

  std::vector<v1::Event> events = Events();
  ASSERT_EQ(events.size(), 4u);
  std::map<std::string, v1::Event> by_resource;
  for (const v1::Event& e : events) by_resource[e.resource_id()] = e;
  const v1::Event& product = by_resource.at(uuids[1]);
  EXPECT_EQ(product.origin(), v1::ORIGIN_RECONCILIATION);
  EXPECT_EQ(product.type(), "product.updated");
  EXPECT_EQ(product.original_type(), "product.updated");
  EXPECT_EQ(product.kind(), "product");
  EXPECT_EQ(product.source(), "pim");
  EXPECT_EQ(product.pim_source(), pim.base_url());
  EXPECT_EQ(product.request_id(), "reconcile-pim-1");
  EXPECT_EQ(product.id(), absl::StrCat("reconcile:product:", uuids[1], ":", t0 + kSecondUs));
  EXPECT_EQ(Micros(product.version_at()), t0 + kSecondUs);
  EXPECT_EQ(Micros(product.occurred_at()), t0 + kSecondUs);
  EXPECT_GE(Micros(product.received_at()), absl::ToUnixMicros(before));
  EXPECT_TRUE(product.author().empty());
  EXPECT_TRUE(product.author_type().empty());
  EXPECT_FALSE(product.stale());
  EXPECT_EQ(product.data().fields().at("uuid").string_value(), uuids[1]);
  EXPECT_EQ(product.data().fields().at("family").string_value(), "shoes");
  EXPECT_EQ(product.data().fields().at("updated").string_value(), AkeneoTime(t0 + kSecondUs));
  EXPECT_FALSE(product.data().fields().contains("_links"));
  const v1::Event& model = by_resource.at("model-a");
  EXPECT_EQ(model.type(), "product_model.updated");
  EXPECT_EQ(model.kind(), "product_model");
  EXPECT_EQ(model.id(), absl::StrCat("reconcile:product_model:model-a:", t0 + 10 * kSecondUs));
  EXPECT_EQ(model.data().fields().at("code").string_value(), "model-a");

  // Nothing changed: the window is watermark - overlap and nothing is added.
  pim.ClearRequests();
  run = reconciler_->Run("pim");
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->run, 2u);
  EXPECT_EQ(run->emitted, 0u);
  EXPECT_EQ(run->in_sync, run->scanned);
  EXPECT_EQ(run->window_start_us, t0 + 10 * kSecondUs - 5 * 60 * kSecondUs);
  EXPECT_FALSE(run->watermark_advanced);
  EXPECT_EQ(log_->head(), 4u);
  std::vector<FakePim::Request> lists = ListRequests(pim, "/api/rest/v1/products-uuid");
  ASSERT_EQ(lists.size(), 1u);
  EXPECT_TRUE(
      absl::StrContains(lists[0].target, "search=" + EncodedUpdatedSearch(*run->window_start_us)))
      << lists[0].target;

  // One product changes: exactly one event.
  pim.PutProduct(uuids[0], t0 + 60 * kSecondUs, R"({"family":"boots"})");
  run = reconciler_->Run("pim");
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->emitted, 1u);
  EXPECT_EQ(*run->watermark_us, t0 + 60 * kSecondUs);
  events = Events();
  ASSERT_EQ(events.size(), 5u);
  EXPECT_EQ(events.back().resource_id(), uuids[0]);
  EXPECT_EQ(events.back().data().fields().at("family").string_value(), "boots");
  EXPECT_EQ(events.back().request_id(), "reconcile-pim-3");

  const ReconcileSourceStats stats = StatsOf(*reconciler_);
  EXPECT_TRUE(stats.configured);
  EXPECT_EQ(stats.runs_succeeded, 3u);
  EXPECT_EQ(stats.runs_failed, 0u);
  EXPECT_EQ(stats.events_emitted, 5u);
  ASSERT_TRUE(stats.last_run.has_value());
  EXPECT_TRUE(stats.last_run->status.ok());
  EXPECT_EQ(stats.last_run->emitted, 1u);
  EXPECT_TRUE(stats.last_success.has_value());
  EXPECT_FALSE(stats.next_run.has_value());  // interval 0: on demand only
  EXPECT_FALSE(StatsOf(*reconciler_, "plain").configured);
}

TEST_F(ReconcilerTest, UnknownSourceSourceWithoutRestAndBadOptionsAreRefused) {
  FakePim pim;
  reconciler_ = Make(pim);
  absl::StatusOr<ReconcileRunStats> run = reconciler_->Run("erp");
  EXPECT_EQ(run.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(run.status().message(), "no source named \"erp\"; sources: pim, plain");
  run = reconciler_->Run("plain");
  EXPECT_EQ(run.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(run.status().message(), "source plain has no `rest` section"));
  run = reconciler_->Run("pim", ReconcileOptions{DayAgoUs(), /*full=*/true});
  EXPECT_EQ(run.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(pim.requests().empty());

  // A source with `rest` needs its client.
  SourceConfig source;
  source.name = "pim";
  source.rest = Rest(pim);
  auto missing = Reconciler::Create({source}, {}, log_.get());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(missing.status().message(), "source pim has `rest` but no REST client was given");
}

TEST_F(ReconcilerTest, MoreThan250ItemsArePagedWithSearchAfter) {
  FakePim pim;
  const int64_t t0 = DayAgoUs();
  std::set<std::string> expected;
  for (int i = 0; i < 260; ++i) {
    const std::string uuid = testing::NewUuid();
    pim.PutProduct(uuid, t0 + i * kSecondUs);
    expected.insert(uuid);
  }
  for (int i = 0; i < 3; ++i) {
    pim.PutProductModel(absl::StrCat("model-", i), t0 + i * kSecondUs);
    expected.insert(absl::StrCat("model-", i));
  }
  reconciler_ = Make(pim);
  absl::StatusOr<ReconcileRunStats> run = reconciler_->Run("pim");
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->scanned, 263u);
  EXPECT_EQ(run->emitted, 263u);
  EXPECT_EQ(run->api_calls, 4u);  // 100 + 100 + 60 products, 3 models
  std::vector<FakePim::Request> pages = ListRequests(pim, "/api/rest/v1/products-uuid");
  ASSERT_EQ(pages.size(), 3u);
  for (const FakePim::Request& page : pages) {
    EXPECT_EQ(page.status, 200);
    EXPECT_TRUE(absl::StrContains(page.target, "limit=100")) << page.target;
  }
  // Pages after the first follow `_links.next.href`, which carries the search_after key.
  EXPECT_TRUE(absl::StrContains(pages[1].target, "search_after=")) << pages[1].target;
  std::set<std::string> stored;
  for (const v1::Event& e : Events()) stored.insert(e.resource_id());
  EXPECT_EQ(stored, expected);
  EXPECT_EQ(log_->head(), 263u);  // one event per item, none twice
}

TEST_F(ReconcilerTest, TokenExpiringMidRunIsRenewed) {
  FakePim pim;
  const int64_t t0 = DayAgoUs();
  for (int i = 0; i < 250; ++i) pim.PutProduct(testing::NewUuid(), t0 + i * kSecondUs);
  reconciler_ = Make(pim);
  pim.SetDelay(std::chrono::milliseconds(100));
  // Invalidate every token once the first page has been answered.
  std::atomic<bool> expired{false};
  std::thread expirer([&] {
    WaitFor([&] {
      for (const FakePim::Request& r : ListRequests(pim, "/api/rest/v1/products-uuid")) {
        if (r.status == 200) return true;
      }
      return false;
    });
    pim.ExpireTokens();
    expired = true;
  });
  absl::StatusOr<ReconcileRunStats> run = reconciler_->Run("pim");
  expirer.join();
  pim.SetDelay(std::chrono::milliseconds(0));
  ASSERT_TRUE(expired);
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->emitted, 250u);
  EXPECT_GE(pim.token_requests(), 2);
  const std::vector<FakePim::Request> requests = pim.requests();
  EXPECT_TRUE(std::any_of(requests.begin(), requests.end(), [](const FakePim::Request& r) {
    return r.status == 401;
  })) << "the expired token was never refused: the test did not expire it mid-run";
}

TEST_F(ReconcilerTest, TooManyRequestsIsRetriedAfterRetryAfter) {
  FakePim pim;
  const int64_t t0 = DayAgoUs();
  for (int i = 0; i < 3; ++i) pim.PutProduct(testing::NewUuid(), t0 + i * kSecondUs);
  reconciler_ = Make(pim);
  pim.FailNextCalls(1, 429, /*retry_after_seconds=*/1);
  const absl::Time start = absl::Now();
  absl::StatusOr<ReconcileRunStats> run = reconciler_->Run("pim");
  const absl::Duration elapsed = absl::Now() - start;
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->emitted, 3u);
  std::vector<FakePim::Request> pages = ListRequests(pim, "/api/rest/v1/products-uuid");
  ASSERT_EQ(pages.size(), 2u);
  EXPECT_EQ(pages[0].status, 429);
  EXPECT_EQ(pages[1].status, 200);
  // The client's own backoff is 10 ms: only the Retry-After explains a wait of a second.
  EXPECT_GE(elapsed, absl::Milliseconds(950));
}

TEST_F(ReconcilerTest, UnreachablePimFailsIsRetriedAndIngestAndDispatchGoOn) {
  DispatchedGateway env(dir_.File("rec.sock"));
  ASSERT_EQ(env.StartDispatch(), absl::OkStatus());
  GatewayHarness& gateway = env.gateway;
  RecordingPlugin& plugin = env.plugin;

  FakePim pim;
  const int64_t t0 = DayAgoUs();
  const std::string missed = testing::NewUuid();
  pim.PutProduct(missed, t0);
  pim.Stop();  // the PIM is down from the start
  ReconcileConfig config;
  config.interval = std::chrono::hours(1);
  config.retry_after = std::chrono::milliseconds(200);
  reconciler_ = Make(pim, config, "legacy", &gateway.log(), [](RestConfig& rest) {
    rest.max_attempts = 1;
    rest.timeout = std::chrono::milliseconds(1'000);
  });
  reconciler_->Start();
  ASSERT_TRUE(WaitFor([&] { return StatsOf(*reconciler_, "legacy").runs_failed >= 2; }))
      << "a failed run was not retried after retry_after";
  ReconcileSourceStats stats = StatsOf(*reconciler_, "legacy");
  ASSERT_TRUE(stats.last_run.has_value());
  EXPECT_FALSE(stats.last_run->status.ok());
  EXPECT_FALSE(stats.last_run->status.message().empty());
  EXPECT_EQ(stats.runs_succeeded, 0u);
  EXPECT_FALSE(stats.watermark_us.has_value());
  EXPECT_FALSE(stats.last_success.has_value());
  EXPECT_TRUE(stats.next_run.has_value());

  // Meanwhile webhooks are taken and delivered.
  const std::string sent = testing::NewUuid();
  const std::string body = testing::LegacyBatch(
      {testing::LegacyProductEvent("product.updated", testing::NewUuid(), sent)});
  testing::HttpClient client = gateway.Client();
  ASSERT_EQ(client
                .Send("POST", "/hooks/legacy", body,
                      testing::LegacyHeaders(GatewayHarness::kLegacySecret, body))
                .status,
            200);
  ASSERT_TRUE(WaitFor([&] { return plugin.events().size() == 1; }));
  EXPECT_EQ(plugin.events()[0].resource_id(), sent);

  // The PIM is back: the next retry succeeds and the missed product is delivered.
  pim.Resume();
  ASSERT_TRUE(WaitFor([&] { return StatsOf(*reconciler_, "legacy").runs_succeeded >= 1; }));
  stats = StatsOf(*reconciler_, "legacy");
  EXPECT_TRUE(stats.last_run->status.ok());
  EXPECT_EQ(stats.watermark_us, t0);
  ASSERT_TRUE(stats.next_run.has_value());
  EXPECT_GT(*stats.next_run, absl::Now() + absl::Minutes(50));  // back to `interval`
  ASSERT_TRUE(WaitFor([&] { return plugin.events().size() == 2; }));
  const v1::Event recovered = plugin.events()[1];
  EXPECT_EQ(recovered.resource_id(), missed);
  EXPECT_EQ(recovered.origin(), v1::ORIGIN_RECONCILIATION);
  reconciler_->Stop();
  env.dispatcher->Stop();
}

TEST_F(ReconcilerTest, InSyncPimDeliversNothingAndMissedChangesAreDelivered) {
  DispatchedGateway env(dir_.File("rec.sock"));
  ASSERT_EQ(env.StartDispatch(), absl::OkStatus());
  GatewayHarness& gateway = env.gateway;
  RecordingPlugin& plugin = env.plugin;

  // The PIM's products, each also sent as a signed legacy webhook carrying the same `updated`.
  FakePim pim;
  const int64_t t0 = DayAgoUs();
  std::vector<std::string> uuids;
  std::vector<std::string> elements;
  for (int i = 0; i < 3; ++i) {
    const std::string uuid = testing::NewUuid();
    uuids.push_back(uuid);
    const int64_t updated = t0 + i * kSecondUs;
    pim.PutProduct(uuid, updated, R"({"family":"shoes"})");
    elements.push_back(testing::LegacyProductEvent("product.updated", testing::NewUuid(), uuid,
                                                   AkeneoTime(updated)));
  }
  const std::string body = testing::LegacyBatch(elements);
  testing::HttpClient client = gateway.Client();
  ASSERT_EQ(client
                .Send("POST", "/hooks/legacy", body,
                      testing::LegacyHeaders(GatewayHarness::kLegacySecret, body))
                .status,
            200);
  ASSERT_TRUE(WaitFor([&] { return plugin.events().size() == 3; }));

  reconciler_ = Make(pim, OnDemand(), "legacy", &gateway.log());
  absl::StatusOr<ReconcileRunStats> run = reconciler_->Run("legacy");
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->scanned, 3u);
  EXPECT_EQ(run->in_sync, 3u);
  EXPECT_EQ(run->emitted, 0u);
  // Nothing was added to the log, so nothing can be delivered.
  EXPECT_EQ(gateway.log().head(), 3u);

  // Changes the webhooks missed: a new product and a newer version of one already sent.
  const std::string missed = testing::NewUuid();
  pim.PutProduct(missed, t0 + 100 * kSecondUs, R"({"family":"boots"})");
  pim.PutProduct(uuids[1], t0 + 101 * kSecondUs, R"({"family":"sandals"})");
  run = reconciler_->Run("legacy");
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->emitted, 2u);
  ASSERT_TRUE(WaitFor([&] { return plugin.events().size() == 5; }));
  std::map<std::string, v1::Event> recovered;
  for (std::size_t i = 3; i < 5; ++i) {
    const v1::Event event = plugin.events()[i];
    EXPECT_EQ(event.origin(), v1::ORIGIN_RECONCILIATION);
    EXPECT_EQ(event.type(), "product.updated");
    recovered[event.resource_id()] = event;
  }
  ASSERT_TRUE(recovered.contains(missed));
  ASSERT_TRUE(recovered.contains(uuids[1]));
  EXPECT_EQ(recovered[missed].data().fields().at("family").string_value(), "boots");
  EXPECT_EQ(recovered[uuids[1]].data().fields().at("family").string_value(), "sandals");
  EXPECT_EQ(Micros(recovered[uuids[1]].version_at()), t0 + 101 * kSecondUs);
  reconciler_->Stop();
  env.dispatcher->Stop();
}

TEST_F(ReconcilerTest, WatermarkSurvivesRestartAndMovesOnlyAfterSuccess) {
  FakePim pim;
  const int64_t t0 = DayAgoUs();
  pim.PutProduct(testing::NewUuid(), t0);
  pim.PutProduct(testing::NewUuid(), t0 + 5 * kSecondUs);
  reconciler_ = Make(pim);
  absl::StatusOr<ReconcileRunStats> run = reconciler_->Run("pim");
  ASSERT_TRUE(run.ok()) << run.status();
  const int64_t watermark = t0 + 5 * kSecondUs;
  EXPECT_EQ(run->watermark_us, watermark);

  // Restart: a new log over the same store, a new reconciler.
  OpenLog();
  reconciler_ = Make(pim);
  EXPECT_EQ(StatsOf(*reconciler_).watermark_us, watermark);

  // A failing run leaves the watermark where it was.
  const std::string later = testing::NewUuid();
  pim.PutProduct(later, t0 + 60 * kSecondUs);
  pim.ClearRequests();
  pim.FailNextCalls(3, 500);  // every attempt of the first page
  run = reconciler_->Run("pim");
  ASSERT_FALSE(run.ok());
  EXPECT_EQ(run.status().code(), absl::StatusCode::kUnavailable) << run.status();
  EXPECT_TRUE(absl::StrContains(run.status().message(), "reconciliation of pim failed"))
      << run.status();
  ReconcileSourceStats stats = StatsOf(*reconciler_);
  EXPECT_EQ(stats.watermark_us, watermark);
  EXPECT_EQ(stats.runs_failed, 1u);
  ASSERT_TRUE(stats.last_run.has_value());
  EXPECT_FALSE(stats.last_run->status.ok());
  EXPECT_EQ(stats.last_run->run, 2u);  // the run counter survived the restart
  // It asked from the persisted watermark minus the overlap.
  std::vector<FakePim::Request> pages = ListRequests(pim, "/api/rest/v1/products-uuid");
  ASSERT_FALSE(pages.empty());
  EXPECT_TRUE(
      absl::StrContains(pages[0].target, EncodedUpdatedSearch(watermark - 5 * 60 * kSecondUs)))
      << pages[0].target;

  OpenLog();
  reconciler_ = Make(pim);
  EXPECT_EQ(StatsOf(*reconciler_).watermark_us, watermark);
  run = reconciler_->Run("pim");
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->emitted, 1u);
  EXPECT_EQ(run->watermark_us, t0 + 60 * kSecondUs);
  EXPECT_EQ(Events().back().resource_id(), later);
}

TEST_F(ReconcilerTest, SinceLaterThanTheWatermarkWindowDoesNotMoveTheWatermark) {
  FakePim pim;
  const int64_t t0 = DayAgoUs();
  pim.PutProduct(testing::NewUuid(), t0);
  pim.PutProduct(testing::NewUuid(), t0 + 3600 * kSecondUs);
  reconciler_ = Make(pim);
  // No watermark yet: the default window is everything, so a run from t0 + 30 min leaves a gap.
  absl::StatusOr<ReconcileRunStats> run =
      reconciler_->Run("pim", ReconcileOptions{t0 + 1800 * kSecondUs, false});
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->window_start_us, t0 + 1800 * kSecondUs);
  EXPECT_EQ(run->emitted, 1u);
  EXPECT_FALSE(run->watermark_advanced);
  EXPECT_FALSE(run->watermark_us.has_value());
  run = reconciler_->Run("pim");
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_FALSE(run->window_start_us.has_value());
  EXPECT_EQ(run->emitted, 1u);  // the older product, outside the `since` window
  EXPECT_EQ(run->in_sync, 1u);
  EXPECT_EQ(run->watermark_us, t0 + 3600 * kSecondUs);
}

TEST_F(ReconcilerTest, FullRunEmitsEachDeletionOnce) {
  FakePim pim;
  const int64_t t0 = DayAgoUs();
  const std::string kept = testing::NewUuid();
  const std::string gone = testing::NewUuid();
  pim.PutProduct(kept, t0);
  pim.PutProduct(gone, t0 + kSecondUs);
  pim.PutProductModel("model-kept", t0);
  pim.PutProductModel("model-gone", t0 + kSecondUs);
  reconciler_ = Make(pim);
  ASSERT_TRUE(reconciler_->Run("pim").ok());
  ASSERT_EQ(log_->head(), 4u);

  // Known to the log but not to the PIM, and not to be deleted: a product the log knows by
  // identifier only (not comparable with products-uuid) and one created moments ago (the listing
  // may have passed its page before it existed).
  const auto known = [&](const std::string& id, int64_t version_us) {
    v1::Event event;
    event.set_id(testing::NewUuid());
    event.set_source("pim");
    event.set_type("product.updated");
    event.set_kind("product");
    event.set_resource_id(id);
    *event.mutable_version_at() = TimeUtil::MicrosecondsToTimestamp(version_us);
    AppendRequest request;
    request.events.push_back(event);
    ASSERT_TRUE(log_->AppendSync(std::move(request)).ok());
  };
  known("sku-legacy-only", t0);
  const std::string fresh = testing::NewUuid();
  known(fresh, absl::ToUnixMicros(absl::Now()));

  pim.DeleteProduct(gone);
  pim.DeleteProductModel("model-gone");
  // An ordinary run does not look for deletions.
  absl::StatusOr<ReconcileRunStats> run = reconciler_->Run("pim");
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->deleted, 0u);

  pim.ClearRequests();
  run = reconciler_->Run("pim", ReconcileOptions{std::nullopt, /*full=*/true});
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_TRUE(run->full);
  EXPECT_FALSE(run->window_start_us.has_value());
  EXPECT_EQ(run->scanned, 2u);
  EXPECT_EQ(run->emitted, 0u);
  EXPECT_EQ(run->in_sync, 2u);
  EXPECT_EQ(run->deleted, 2u);
  EXPECT_EQ(run->unchecked, 1u);
  for (const FakePim::Request& r : ListRequests(pim, "/api/rest/v1/")) {
    EXPECT_FALSE(absl::StrContains(r.target, "search=")) << "a full run lists everything";
  }
  std::map<std::string, v1::Event> deletions;
  for (const v1::Event& e : Events()) {
    if (absl::EndsWith(e.type(), ".deleted")) deletions[e.resource_id()] = e;
  }
  ASSERT_EQ(deletions.size(), 2u);
  const v1::Event& product = deletions.at(gone);
  EXPECT_EQ(product.type(), "product.deleted");
  EXPECT_EQ(product.kind(), "product");
  EXPECT_EQ(product.origin(), v1::ORIGIN_RECONCILIATION);
  EXPECT_EQ(product.data().fields().at("uuid").string_value(), gone);
  EXPECT_EQ(product.id(), absl::StrCat("reconcile-deleted:product:", gone, ":", t0 + kSecondUs));
  EXPECT_FALSE(product.stale());
  const v1::Event& model = deletions.at("model-gone");
  EXPECT_EQ(model.type(), "product_model.deleted");
  EXPECT_EQ(model.data().fields().at("code").string_value(), "model-gone");
  auto version = log_->backend().FindVersion(ResourceKey{"pim", "product", gone});
  ASSERT_TRUE(version.ok() && version->has_value());
  EXPECT_TRUE((*version)->deleted);

  // Already deleted: a second full run adds nothing.
  run = reconciler_->Run("pim", ReconcileOptions{std::nullopt, /*full=*/true});
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->deleted, 0u);
  EXPECT_EQ(run->emitted, 0u);

  // The product comes back, newer than its deletion: an update again, and no longer deleted.
  pim.PutProduct(gone, absl::ToUnixSeconds(absl::Now() + absl::Seconds(2)) * kSecondUs);
  run = reconciler_->Run("pim", ReconcileOptions{std::nullopt, /*full=*/true});
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->emitted, 1u);
  EXPECT_EQ(run->deleted, 0u);
  version = log_->backend().FindVersion(ResourceKey{"pim", "product", gone});
  ASSERT_TRUE(version.ok() && version->has_value());
  EXPECT_FALSE((*version)->deleted);
}

TEST_F(ReconcilerTest, RunsOfOneSourceNeverOverlap) {
  FakePim pim;
  const int64_t t0 = DayAgoUs();
  for (int i = 0; i < 150; ++i) pim.PutProduct(testing::NewUuid(), t0 + i * kSecondUs);
  reconciler_ = Make(pim);
  pim.SetDelay(std::chrono::milliseconds(50));
  auto first = std::async(std::launch::async, [&] { return reconciler_->Run("pim"); });
  auto second = std::async(std::launch::async, [&] { return reconciler_->Run("pim"); });
  absl::StatusOr<ReconcileRunStats> a = first.get();
  absl::StatusOr<ReconcileRunStats> b = second.get();
  pim.SetDelay(std::chrono::milliseconds(0));
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(a->emitted + b->emitted, 150u);  // the later run found everything in sync
  EXPECT_NE(a->run, b->run);
  EXPECT_TRUE(a->finished_at <= b->started_at || b->finished_at <= a->started_at);
  EXPECT_EQ(pim.max_concurrent_seen(), 1);
}

TEST_F(ReconcilerTest, StopCancelsARunWaitingForASlowPim) {
  FakePim pim;
  pim.PutProduct(testing::NewUuid(), DayAgoUs());
  reconciler_ = Make(pim);
  pim.SetDelay(std::chrono::seconds(20));
  auto run = std::async(std::launch::async, [&] { return reconciler_->Run("pim"); });
  // Every answer takes 20 s: the run is soon waiting for the PIM, and Stop must not wait with it.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  reconciler_->Stop();
  absl::StatusOr<ReconcileRunStats> result = run.get();
  EXPECT_EQ(result.status().code(), absl::StatusCode::kCancelled) << result.status();
  EXPECT_EQ(reconciler_->Run("pim").status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(log_->head(), 0u);
  EXPECT_FALSE(StatsOf(*reconciler_).watermark_us.has_value());
  pim.SetDelay(std::chrono::milliseconds(0));
}

TEST_F(ReconcilerTest, BackendListsVersionsPerSourceAndKindAndKeepsMetadata) {
  // Versions of two sources and two kinds; a legacy removal marks its product deleted.
  const auto event = [](const std::string& source, const std::string& type, const std::string& id,
                        int64_t version_s) {
    v1::Event e;
    e.set_id(testing::NewUuid());
    e.set_source(source);
    e.set_type(type);
    e.set_kind(type.substr(0, type.find('.')));
    e.set_resource_id(id);
    *e.mutable_version_at() = TimeUtil::SecondsToTimestamp(1'800'000'000 + version_s);
    return e;
  };
  AppendRequest request;
  for (const char* id : {"c", "a", "e", "b", "d"}) {
    request.events.push_back(event("pim", "product.updated", id, 1));
  }
  request.events.push_back(event("pim", "product_model.updated", "m", 1));
  request.events.push_back(event("pim2", "product.updated", "z", 1));
  request.events.push_back(event("pim", "product.deleted", "d", 2));
  ASSERT_TRUE(log_->AppendSync(std::move(request)).ok());

  LogBackend& backend = log_->backend();
  auto first = backend.ListVersions("pim", "product", "", 2);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_EQ(first->size(), 2u);
  EXPECT_EQ((*first)[0].resource_id, "a");
  EXPECT_EQ((*first)[1].resource_id, "b");
  auto rest = backend.ListVersions("pim", "product", "b", 100);
  ASSERT_TRUE(rest.ok()) << rest.status();
  ASSERT_EQ(rest->size(), 3u);  // c, d, e: nothing of product_model or of pim2
  EXPECT_EQ((*rest)[0].resource_id, "c");
  EXPECT_EQ((*rest)[1].resource_id, "d");
  EXPECT_TRUE((*rest)[1].version.deleted);
  EXPECT_EQ((*rest)[1].version.version_at_us, (1'800'000'000 + 2) * kSecondUs);
  EXPECT_FALSE((*rest)[2].version.deleted);
  EXPECT_TRUE(backend.ListVersions("pim", "product", "e", 100)->empty());
  EXPECT_EQ(backend.ListVersions("pim", "product_model", "", 100)->size(), 1u);
  EXPECT_TRUE(backend.ListVersions("pim", "prod", "", 100)->empty());  // no prefix matches

  EXPECT_FALSE(backend.GetMeta("reconcile/pim/watermark")->has_value());
  ASSERT_TRUE(backend.PutMeta("reconcile/pim/watermark", "123").ok());
  // The backend's own bookkeeping keys are apart from PutMeta's.
  ASSERT_TRUE(backend.PutMeta("last_sequence", "not a number").ok());
  OpenLog();
  EXPECT_EQ(log_->head(), 8u);
  EXPECT_EQ(log_->backend().GetMeta("reconcile/pim/watermark")->value_or(""), "123");
  EXPECT_EQ(log_->backend().GetMeta("last_sequence")->value_or(""), "not a number");
}

TEST(ParseAkeneoTimeTest, OffsetsAndFractions) {
  EXPECT_EQ(*ParseAkeneoTime("2026-11-20T10:14:59+00:00"), 1'795'169'699'000'000);
  EXPECT_EQ(*ParseAkeneoTime("2026-11-20T12:14:59+02:00"), 1'795'169'699'000'000);
  EXPECT_EQ(*ParseAkeneoTime("2026-11-20T10:14:59Z"), 1'795'169'699'000'000);
  EXPECT_EQ(*ParseAkeneoTime("2026-11-20T10:14:59.25Z"), 1'795'169'699'250'000);
  EXPECT_EQ(ParseAkeneoTime("2026-11-20 10:14:59").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseAkeneoTime("yesterday").status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace pimgate
