// Reconciler against a FakePim over real sockets (HTTPS with a test certificate), a real RocksDB
// log, and, where delivery matters, the real gateway and dispatcher with an in-process plugin.
#include "pim/reconciler.h"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <fstream>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/civil_time.h"
#include "absl/time/time.h"
#include "core/dispatch/dispatcher.h"
#include "gateway/payload_parser.h"
#include "google/protobuf/util/time_util.h"
#include "pim/akeneo_client.h"
#include "pimgate/v1/plugin.grpc.pb.h"
#include "spdlog/sinks/ringbuffer_sink.h"
#include "spdlog/spdlog.h"
#include "tests/testing/fake_pim.h"
#include "tests/testing/recording_plugin.h"
#include "tests/testing/test_env.h"
#include "tests/testing/typed_values.h"

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

// `updated` as a PIM in UTC writes it (a legacy webhook's payload).
std::string AkeneoTime(int64_t us) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%S+00:00", absl::FromUnixMicros(us), absl::UTCTimeZone());
}

// The fake PIM's default zone (FakePim::Options::time_zone).
const absl::TimeZone kMinus5 = absl::FixedTimeZone(-5 * 3600);
// Until the PIM's -05:00 is confirmed at a window start, the window is written 2 h further west.
const absl::TimeZone kMinus7 = absl::FixedTimeZone(-7 * 3600);

int64_t Micros(const google::protobuf::Timestamp& ts) {
  return TimeUtil::TimestampToMicroseconds(ts);
}

// The search parameter of a first page asking for items updated after `after_us`, written as
// wall-clock time in `zone`.
std::string EncodedUpdatedSearch(int64_t after_us, const absl::TimeZone& zone) {
  return UrlEncode(absl::StrCat(R"({"updated":[{"operator":">","value":")",
                                AkeneoSearchTime(after_us, zone), R"("}]})"));
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
    auto log = EventLog::Open(testing::StoreAt(dir_.File("store")));
    ASSERT_TRUE(log.ok()) << log.status();
    log_ = std::move(*log);
  }

  // Quick retries: the tests exercise the behaviour, not Akeneo's pace.
  static RestConfig Rest(const FakePim& pim) {
    RestConfig rest;
    rest.base_url = testing::UrlOf(pim.base_url());
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
    auto reconciler = Reconciler::Create({source, plain}, {{name, shared}}, log ? log : log_.get(),
                                         reconciler_options_);
    EXPECT_TRUE(reconciler.ok()) << reconciler.status();
    return std::move(*reconciler);
  }

  std::vector<v1::Event> Events() {
    auto events = log_->ReadEvents(1, 100'000);
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
  ReconcilerOptions reconciler_options_;  // what Make() creates reconcilers with
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
  EXPECT_EQ(product.data().fields().at("updated").string_value(), pim.AkeneoTime(t0 + kSecondUs));
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
  // The PIM wrote -05:00, but no value at or before the window start confirms it there (all four
  // are later): the window start is written 2 h further west, which can only widen it.
  EXPECT_EQ(run->filter_time_zone, "-07:00");
  EXPECT_EQ(run->updated_filter, AkeneoSearchTime(*run->window_start_us, kMinus7));
  std::vector<FakePim::Request> lists = ListRequests(pim, "/api/rest/v1/products-uuid");
  ASSERT_EQ(lists.size(), 1u);
  EXPECT_TRUE(absl::StrContains(lists[0].target,
                                "search=" + EncodedUpdatedSearch(*run->window_start_us, kMinus7)))
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
  // It asked from the persisted watermark minus the overlap, written with the offset persisted
  // beside it (-05:00 not yet confirmed at that instant: -07:00).
  std::vector<FakePim::Request> pages = ListRequests(pim, "/api/rest/v1/products-uuid");
  ASSERT_FALSE(pages.empty());
  EXPECT_TRUE(absl::StrContains(pages[0].target,
                                EncodedUpdatedSearch(watermark - 5 * 60 * kSecondUs, kMinus7)))
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
  // The PIM's zone is configured: the window is exact (no widening while the offset is learned).
  reconciler_ = Make(pim, OnDemand(), "pim", nullptr,
                     [](RestConfig& rest) { rest.timezone = testing::ZoneOf("-05:00"); });
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
  auto version = log_->FindVersion(ResourceKey{"pim", "product", gone});
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
  version = log_->FindVersion(ResourceKey{"pim", "product", gone});
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
  // Waiting for the PIM to have the run's connection (not a fixed sleep, which a slow machine may
  // outlast before the run starts) makes sure Stop interrupts a call in progress.
  ASSERT_TRUE(WaitFor([&] { return pim.connections_accepted() >= 1; }));
  reconciler_->Stop();
  absl::StatusOr<ReconcileRunStats> result = run.get();
  EXPECT_EQ(result.status().code(), absl::StatusCode::kCancelled) << result.status();
  EXPECT_EQ(reconciler_->Run("pim").status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(log_->head(), 0u);
  EXPECT_FALSE(StatsOf(*reconciler_).watermark_us.has_value());
  pim.SetDelay(std::chrono::milliseconds(0));
}

TEST_F(ReconcilerTest, LogListsVersionsPerSourceAndKindAndKeepsMetadata) {
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

  EventLog& log = *log_;
  auto first = log.ListVersions("pim", "product", "", 2);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_EQ(first->size(), 2u);
  EXPECT_EQ((*first)[0].resource_id, "a");
  EXPECT_EQ((*first)[1].resource_id, "b");
  auto rest = log.ListVersions("pim", "product", "b", 100);
  ASSERT_TRUE(rest.ok()) << rest.status();
  ASSERT_EQ(rest->size(), 3u);  // c, d, e: nothing of product_model or of pim2
  EXPECT_EQ((*rest)[0].resource_id, "c");
  EXPECT_EQ((*rest)[1].resource_id, "d");
  EXPECT_TRUE((*rest)[1].version.deleted);
  EXPECT_EQ((*rest)[1].version.version_at_us, (1'800'000'000 + 2) * kSecondUs);
  EXPECT_FALSE((*rest)[2].version.deleted);
  EXPECT_TRUE(log.ListVersions("pim", "product", "e", 100)->empty());
  EXPECT_EQ(log.ListVersions("pim", "product_model", "", 100)->size(), 1u);
  EXPECT_TRUE(log.ListVersions("pim", "prod", "", 100)->empty());  // no prefix matches

  EXPECT_FALSE(log.GetMeta("reconcile/pim/watermark")->has_value());
  ASSERT_TRUE(log.PutMeta("reconcile/pim/watermark", "123").ok());
  // The backend's own bookkeeping keys are apart from PutMeta's.
  ASSERT_TRUE(log.PutMeta("last_sequence", "not a number").ok());
  OpenLog();
  EXPECT_EQ(log_->head(), 8u);
  EXPECT_EQ(log_->GetMeta("reconcile/pim/watermark")->value_or(""), "123");
  EXPECT_EQ(log_->GetMeta("last_sequence")->value_or(""), "not a number");
}

// ---- The PIM server's time zone ----------------------------------------------------------------

// The PIM runs at UTC-05:00 (the fake's default): its `updated` values carry -05:00 and it reads
// the filter as its own wall-clock time. A change inside the 5 hours after the window start is
// skipped by a filter written in UTC; pimgate writes it at -05:00 and recovers it.
TEST_F(ReconcilerTest, FilterIsWrittenInThePimsTimeZoneAndRecoversWhatUtcWouldSkip) {
  FakePim pim;
  ASSERT_EQ(pim.time_zone(), kMinus5);
  const int64_t t0 = DayAgoUs();
  const std::string old_product = testing::NewUuid();
  const std::string product = testing::NewUuid();
  pim.PutProduct(old_product, t0 - 2 * 3600 * kSecondUs);
  pim.PutProduct(product, t0);
  reconciler_ = Make(pim);

  // First run: everything. The older product's -05:00, before the next window start, confirms the
  // offset there.
  absl::StatusOr<ReconcileRunStats> run = reconciler_->Run("pim");
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->emitted, 2u);
  EXPECT_TRUE(run->updated_filter.empty());
  ASSERT_EQ(run->watermark_us, t0);
  ReconcileSourceStats stats = StatsOf(*reconciler_);
  EXPECT_EQ(stats.pim_time_zone, "-05:00");
  EXPECT_EQ(stats.pim_time_zone_origin, "learned");
  EXPECT_EQ(stats.filter_utc_offset, "-05:00");

  // Changes the webhooks missed, 1 h and 2 h after the watermark: both inside the 5 h that a
  // filter written in UTC would skip.
  const std::string added = testing::NewUuid();
  pim.PutProduct(added, t0 + 3600 * kSecondUs, R"({"family":"boots"})");
  pim.PutProduct(product, t0 + 2 * 3600 * kSecondUs, R"({"family":"sandals"})");
  const int64_t window = t0 - 5 * 60 * kSecondUs;
  {
    // The control: asked in UTC, this PIM returns neither change.
    absl::StatusOr<AkeneoPage> utc = clients_.back()->GetPage(
        SearchAfterTarget("/api/rest/v1/products-uuid",
                          absl::StrCat(R"({"updated":[{"operator":">","value":")",
                                       AkeneoSearchTime(window, absl::UTCTimeZone()), R"("}]})")));
    ASSERT_TRUE(utc.ok()) << utc.status();
    EXPECT_TRUE(utc->items.empty()) << utc->items.size();
  }
  pim.ClearRequests();
  run = reconciler_->Run("pim");
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->window_start_us, window);
  EXPECT_EQ(run->filter_time_zone, "-05:00");
  EXPECT_EQ(run->updated_filter, AkeneoSearchTime(window, kMinus5));
  EXPECT_EQ(run->updated_filter,
            absl::FormatTime("%Y-%m-%d %H:%M:%S", absl::FromUnixMicros(window), kMinus5));
  EXPECT_EQ(run->emitted, 2u);
  std::vector<FakePim::Request> lists = ListRequests(pim, "/api/rest/v1/products-uuid");
  ASSERT_EQ(lists.size(), 1u);
  EXPECT_TRUE(absl::StrContains(lists[0].target, "search=" + EncodedUpdatedSearch(window, kMinus5)))
      << lists[0].target;
  std::map<std::string, v1::Event> recovered;
  for (const v1::Event& e : Events()) {
    if (e.request_id() == "reconcile-pim-2") recovered[e.resource_id()] = e;
  }
  ASSERT_EQ(recovered.size(), 2u);
  EXPECT_EQ(recovered.at(added).data().fields().at("family").string_value(), "boots");
  EXPECT_EQ(Micros(recovered.at(added).version_at()), t0 + 3600 * kSecondUs);
  EXPECT_EQ(recovered.at(product).data().fields().at("family").string_value(), "sandals");
  EXPECT_EQ(recovered.at(product).data().fields().at("updated").string_value(),
            pim.AkeneoTime(t0 + 2 * 3600 * kSecondUs));
  EXPECT_TRUE(absl::EndsWith(pim.AkeneoTime(t0), "-05:00"));

  // A restart keeps the learned offset with the watermark: no relearning, no widening.
  OpenLog();
  reconciler_ = Make(pim);
  stats = StatsOf(*reconciler_);
  EXPECT_EQ(stats.pim_time_zone, "-05:00");
  EXPECT_EQ(stats.filter_utc_offset, "-05:00");
  const int64_t watermark = t0 + 2 * 3600 * kSecondUs;
  EXPECT_EQ(stats.watermark_us, watermark);
  run = reconciler_->Run("pim");
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->updated_filter, AkeneoSearchTime(watermark - 5 * 60 * kSecondUs, kMinus5));
  EXPECT_EQ(run->emitted, 0u);
}

// Before any offset is known, a window start is written at -14:00, west of every zone: the PIM
// reads it as an earlier instant (here 9 h earlier), never a later one.
TEST_F(ReconcilerTest, FirstWindowBeforeTheOffsetIsKnownIsWidenedNeverNarrowed) {
  FakePim pim;
  const int64_t since = DayAgoUs();
  const std::string inside = testing::NewUuid();   // skipped by a filter written in UTC
  const std::string earlier = testing::NewUuid();  // before `since`, inside the widening
  const std::string outside = testing::NewUuid();  // before the widened window
  pim.PutProduct(inside, since + 3600 * kSecondUs);
  pim.PutProduct(earlier, since - 3 * 3600 * kSecondUs);
  pim.PutProduct(outside, since - 10 * 3600 * kSecondUs);
  ReconcileConfig config = OnDemand();
  config.since_us = since;
  reconciler_ = Make(pim, config);
  EXPECT_EQ(StatsOf(*reconciler_).filter_utc_offset, "-14:00");
  EXPECT_TRUE(StatsOf(*reconciler_).pim_time_zone.empty());

  absl::StatusOr<ReconcileRunStats> run = reconciler_->Run("pim");
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->window_start_us, since);
  EXPECT_EQ(run->filter_time_zone, "-14:00");
  EXPECT_EQ(run->updated_filter, AkeneoSearchTime(since, absl::FixedTimeZone(-14 * 3600)));
  std::set<std::string> recovered;
  for (const v1::Event& e : Events()) recovered.insert(e.resource_id());
  EXPECT_EQ(recovered, (std::set<std::string>{inside, earlier}));
  // Learned now.
  EXPECT_EQ(StatsOf(*reconciler_).pim_time_zone, "-05:00");
}

// rest.timezone with an IANA name: the window start is written with the zone's offset at that
// instant, not today's. The zone is one whose offset today is its summer one, and the window
// start is in its winter: written with today's offset, the PIM would read it an hour late.
TEST_F(ReconcilerTest, ConfiguredIanaZoneUsesTheOffsetAtTheWindowStartNotTodays) {
  absl::TimeZone new_york;
  absl::TimeZone sydney;
  ASSERT_TRUE(absl::LoadTimeZone("America/New_York", &new_york));
  ASSERT_TRUE(absl::LoadTimeZone("Australia/Sydney", &sydney));
  const absl::Time now = absl::Now();
  const int year = static_cast<int>(absl::ToCivilYear(now, absl::UTCTimeZone()).year()) - 1;
  // One of the two is in summer time at any date.
  const bool new_york_summer =
      new_york.At(now).offset >
      new_york.At(absl::FromCivil(absl::CivilDay(year, 1, 15), new_york)).offset;
  const std::string name = new_york_summer ? "America/New_York" : "Australia/Sydney";
  const absl::TimeZone zone = new_york_summer ? new_york : sydney;
  const absl::CivilSecond winter_noon(year, new_york_summer ? 1 : 7, 15, 12, 0, 0);
  const int64_t since = absl::ToUnixMicros(absl::FromCivil(winter_noon, zone));
  ASSERT_LT(zone.At(absl::FromUnixMicros(since)).offset, zone.At(now).offset) << name;

  FakePim::Options options;
  options.time_zone = zone;
  FakePim pim(options);
  const std::string inside = testing::NewUuid();
  const std::string before = testing::NewUuid();
  pim.PutProduct(inside, since + 30 * 60 * kSecondUs);
  pim.PutProduct(before, since - 30 * 60 * kSecondUs);
  reconciler_ = Make(pim, OnDemand(), "pim", nullptr,
                     [&name](RestConfig& rest) { rest.timezone = testing::ZoneOf(name); });
  absl::StatusOr<ReconcileRunStats> run = reconciler_->Run("pim", ReconcileOptions{since, false});
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->filter_time_zone, name);
  EXPECT_EQ(run->updated_filter, absl::FormatCivilTime(winter_noon).replace(10, 1, " "));
  // Exact: the change after the start is recovered, the one before is not asked for.
  std::vector<v1::Event> events = Events();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].resource_id(), inside);
  const ReconcileSourceStats stats = StatsOf(*reconciler_);
  EXPECT_EQ(stats.pim_time_zone, name);
  EXPECT_EQ(stats.pim_time_zone_origin, "configured");
}

// ---- Next-page links behind a TLS-terminating proxy
// ----------------------------------------------

// Captures pimgate's log lines while alive.
class LogCapture {
 public:
  LogCapture()
      : sink_(std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(10'000)),
        previous_(spdlog::default_logger()) {
    auto logger = std::make_shared<spdlog::logger>("capture", sink_);
    logger->set_level(spdlog::level::debug);
    spdlog::set_default_logger(logger);
  }
  ~LogCapture() { spdlog::set_default_logger(previous_); }
  int Count(const std::string& needle) const {
    int n = 0;
    for (const std::string& line : sink_->last_formatted()) n += absl::StrContains(line, needle);
    return n;
  }

 private:
  std::shared_ptr<spdlog::sinks::ringbuffer_sink_mt> sink_;
  std::shared_ptr<spdlog::logger> previous_;
};

TEST_F(ReconcilerTest, HttpNextLinksOnTheSameHostAreFollowedOnTheConfiguredOrigin) {
  LogCapture logs;
  FakePim pim;  // https
  // Behind a TLS-terminating proxy the PIM sees http on port 80 and writes that in its links.
  pim.SetLinkOrigin("http://127.0.0.1");
  const int64_t t0 = DayAgoUs();
  std::set<std::string> expected;
  for (int i = 0; i < 250; ++i) {
    const std::string uuid = testing::NewUuid();
    expected.insert(uuid);
    pim.PutProduct(uuid, t0);
  }
  reconciler_ = Make(pim);
  for (int round = 0; round < 2; ++round) {
    absl::StatusOr<ReconcileRunStats> run =
        reconciler_->Run("pim", ReconcileOptions{std::nullopt, /*full=*/true});
    ASSERT_TRUE(run.ok()) << run.status();
    EXPECT_EQ(run->scanned, 250u);
  }
  std::set<std::string> stored;
  for (const v1::Event& e : Events()) stored.insert(e.resource_id());
  EXPECT_EQ(stored, expected);
  const std::vector<FakePim::Request> pages = ListRequests(pim, "/api/rest/v1/products-uuid");
  ASSERT_EQ(pages.size(), 6u);  // 3 pages, twice: every next link was followed, over https
  EXPECT_TRUE(absl::StrContains(pages[1].target, "search_after=")) << pages[1].target;
  // Said once for the source, not once per page or per run.
  EXPECT_EQ(logs.Count("next-page links on another scheme or port"), 1);
}

TEST_F(ReconcilerTest, NextLinkToAnotherHostIsRefused) {
  FakePim pim;
  const int64_t t0 = DayAgoUs();
  for (int i = 0; i < 150; ++i) pim.PutProduct(testing::NewUuid(), t0);
  pim.SetLinkOrigin(absl::StrCat("https://pim-internal.example:", pim.port()));
  reconciler_ = Make(pim);
  absl::StatusOr<ReconcileRunStats> run = reconciler_->Run("pim");
  ASSERT_EQ(run.status().code(), absl::StatusCode::kInvalidArgument) << run.status();
  EXPECT_TRUE(absl::StrContains(run.status().message(), "refusing to follow"))
      << run.status().message();
  EXPECT_TRUE(absl::StrContains(run.status().message(), "pim-internal.example"))
      << run.status().message();
  EXPECT_EQ(ListRequests(pim, "/api/rest/v1/products-uuid").size(), 1u);  // the first page only
  EXPECT_FALSE(StatsOf(*reconciler_).watermark_us.has_value());
}

// ---- PIM 5 and 6: no products-uuid
// -----------------------------------------------------------------

TEST_F(ReconcilerTest, PimWithoutProductsUuidIsReconciledByIdentifier) {
  FakePim::Options options;
  options.products_uuid = false;
  FakePim pim(options);
  const int64_t t0 = DayAgoUs();
  pim.PutProduct(testing::NewUuid(), t0, R"({"family":"shoes"})", "sku-1");
  pim.PutProduct(testing::NewUuid(), t0 + kSecondUs, "{}", "sku-2");
  const std::string gone_key = testing::NewUuid();
  pim.PutProduct(gone_key, t0 + 2 * kSecondUs, "{}", "sku-3");
  pim.PutProductModel("model-a", t0);
  // sku-2 already reached pimgate by a PIM 6 webhook, which names products by identifier only.
  v1::Event webhook;
  webhook.set_id(testing::NewUuid());
  webhook.set_source("pim");
  webhook.set_type("product.updated");
  webhook.set_kind("product");
  webhook.set_resource_id("sku-2");
  *webhook.mutable_version_at() = TimeUtil::MicrosecondsToTimestamp(t0 + kSecondUs);
  AppendRequest request;
  request.events.push_back(webhook);
  ASSERT_TRUE(log_->AppendSync(std::move(request)).ok());

  reconciler_ = Make(pim);
  absl::StatusOr<ReconcileRunStats> run = reconciler_->Run("pim");
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->products_path, "/api/rest/v1/products");
  EXPECT_EQ(run->scanned, 4u);
  EXPECT_EQ(run->emitted, 3u);    // sku-1, sku-3, model-a
  EXPECT_EQ(run->in_sync, 1u);    // sku-2: same key, same version as the webhook
  EXPECT_EQ(run->api_calls, 3u);  // products-uuid (404), products, product-models
  const std::vector<FakePim::Request> uuid_calls = ListRequests(pim, "/api/rest/v1/products-uuid");
  ASSERT_EQ(uuid_calls.size(), 1u);
  EXPECT_EQ(uuid_calls[0].status, 404);
  std::map<std::string, v1::Event> by_id;
  for (const v1::Event& e : Events()) by_id[e.resource_id()] = e;
  ASSERT_TRUE(by_id.contains("sku-1"));
  EXPECT_EQ(by_id["sku-1"].kind(), "product");
  EXPECT_EQ(by_id["sku-1"].origin(), v1::ORIGIN_RECONCILIATION);
  EXPECT_EQ(by_id["sku-1"].id(), absl::StrCat("reconcile:product:sku-1:", t0));
  EXPECT_EQ(by_id["sku-1"].data().fields().at("identifier").string_value(), "sku-1");
  EXPECT_EQ(by_id["sku-1"].data().fields().at("family").string_value(), "shoes");
  EXPECT_FALSE(by_id["sku-1"].data().fields().contains("uuid"));
  EXPECT_EQ(StatsOf(*reconciler_).products_path, "/api/rest/v1/products");

  // A change is found on the next run, paged by identifier.
  for (int i = 0; i < 150; ++i) {
    pim.PutProduct(testing::NewUuid(), t0 + 60 * kSecondUs, "{}", absl::StrCat("bulk-", i));
  }
  run = reconciler_->Run("pim");
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->emitted, 150u);

  // Deletions compare identifiers: none is "unchecked".
  pim.DeleteProduct(gone_key);
  run = reconciler_->Run("pim", ReconcileOptions{std::nullopt, /*full=*/true});
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->deleted, 1u);
  EXPECT_EQ(run->unchecked, 0u);
  const v1::Event deletion = Events().back();
  EXPECT_EQ(deletion.type(), "product.deleted");
  EXPECT_EQ(deletion.resource_id(), "sku-3");
  EXPECT_EQ(deletion.data().fields().at("identifier").string_value(), "sku-3");
}

TEST_F(ReconcilerTest, AkeneoTimeZoneRulesForTheNextWindow) {
  constexpr int64_t kHourUs = 3600 * kSecondUs;
  const int64_t t = int64_t{1'800'000'000} * kSecondUs;
  const int minus5 = -5 * 3600;
  const int minus4 = -4 * 3600;
  bool proven = false;
  {
    // A value at -05:00 before the next window start and the newest one at -05:00: proven.
    PimOffsetEvidence evidence;
    evidence.Add(t - 2 * kHourUs, minus5);
    evidence.Add(t, minus5);
    EXPECT_EQ(evidence.NextFilterOffset(t - kHourUs, std::nullopt, std::nullopt, &proven), minus5);
    EXPECT_TRUE(proven);
  }
  {
    // Only later values: the offset may have changed in between (a DST start): 2 h further west.
    PimOffsetEvidence evidence;
    evidence.Add(t, minus4);
    EXPECT_EQ(evidence.NextFilterOffset(t - kHourUs, std::nullopt, std::nullopt, &proven),
              minus4 - 2 * 3600);
    EXPECT_FALSE(proven);
    // ... unless it is the offset already proven for this run's window start (steady state).
    EXPECT_EQ(evidence.NextFilterOffset(t - kHourUs, minus4, t - 2 * kHourUs, &proven), minus4);
    EXPECT_TRUE(proven);
    // ... within a week.
    EXPECT_EQ(evidence.NextFilterOffset(t - kHourUs, minus4, t - 8 * 24 * kHourUs, &proven),
              minus4 - 2 * 3600);
    EXPECT_FALSE(proven);
  }
  {
    // The offset changed around the next window start (-05:00 before it, -04:00 after): the
    // lower one is safe whichever side the change fell.
    PimOffsetEvidence evidence;
    evidence.Add(t - 2 * kHourUs, minus5);
    evidence.Add(t, minus4);
    EXPECT_EQ(evidence.NextFilterOffset(t - kHourUs, minus5, t - 3 * kHourUs, &proven), minus5);
    EXPECT_FALSE(proven);
  }
  {
    // A value before the window start older than the proof span does not prove anything.
    PimOffsetEvidence evidence;
    evidence.Add(t - 8 * 24 * kHourUs, minus5);
    evidence.Add(t, minus5);
    EXPECT_EQ(evidence.NextFilterOffset(t - kHourUs, std::nullopt, std::nullopt, &proven),
              minus5 - 2 * 3600);
    EXPECT_FALSE(proven);
  }
  {
    // Values in the window start's own minute do not count (they may be after it).
    PimOffsetEvidence evidence;
    evidence.Add(t, minus5);
    evidence.Add(t + kHourUs, minus5);
    EXPECT_EQ(evidence.NextFilterOffset(t + 30 * kSecondUs, std::nullopt, std::nullopt, &proven),
              minus5 - 2 * 3600);
    EXPECT_EQ(evidence.NextFilterOffset(t + 60 * kSecondUs, std::nullopt, std::nullopt, &proven),
              minus5);
  }
}

// A full reconciliation whose listing fails on page N > 1: the PIM answers 5xx until the client's
// retries are spent, sends a page that is not JSON, or cuts the connection in the middle of the
// page. The products (or product models) the listing had not reached yet are still in the PIM;
// only the early return after a failed listing (Reconciler::Execute) keeps the deletion check
// from taking them for deleted. So: no `<kind>.deleted` at all, the watermark stays, and the
// next run, without faults, stores exactly the missed updates and the true deletions.
struct PageFailure {
  const char* name;
  const char* path;  // the list that fails
  int page;          // 1-based, > 1
  FakePim::Fault::Kind kind;
  int status;  // kStatus
  int calls;   // calls the fault answers: every attempt (rest.max_attempts) when the client retries
};

void PrintTo(const PageFailure& failure, std::ostream* os) { *os << failure.name; }

class FullRunFailingOnPageN : public ReconcilerTest,
                              public ::testing::WithParamInterface<PageFailure> {};

TEST_P(FullRunFailingOnPageN, EmitsNoDeletionAndKeepsTheWatermarkThenTheNextRunIsExact) {
  const PageFailure& failure = GetParam();
  const bool products_fail = std::string(failure.path) == "/api/rest/v1/products-uuid";
  const std::string failing_kind = products_fail ? "product" : "product_model";
  reconciler_options_.page_size = 2;  // 7 products: 4 pages; 5 product models: 3 pages
  FakePim pim;
  const int64_t t0 = DayAgoUs();
  std::vector<std::string> uuids;
  for (int i = 0; i < 7; ++i) uuids.push_back(testing::NewUuid());
  std::sort(uuids.begin(), uuids.end());  // the order products-uuid lists them in
  for (std::size_t i = 0; i < uuids.size(); ++i) {
    pim.PutProduct(uuids[i], t0 + static_cast<int64_t>(i) * kSecondUs);
  }
  for (int i = 1; i <= 5; ++i) pim.PutProductModel(absl::StrCat("model-", i), t0 + i * kSecondUs);
  reconciler_ = Make(pim);
  const ReconcileOptions full{std::nullopt, /*full=*/true};
  absl::StatusOr<ReconcileRunStats> run = reconciler_->Run("pim", full);
  ASSERT_TRUE(run.ok()) << run.status();
  ASSERT_EQ(run->emitted, 12u);
  ASSERT_EQ(run->deleted, 0u);
  ASSERT_EQ(log_->head(), 12u);
  const int64_t watermark = t0 + 6 * kSecondUs;
  ASSERT_EQ(run->watermark_us, watermark);

  // The PIM changes: the first product and model (page 1 of their lists) are updated, the last
  // ones (the last page) deleted.
  const std::string gone_product = uuids.back();
  const std::string gone_model = "model-5";
  pim.PutProduct(uuids.front(), t0 + 100 * kSecondUs);
  pim.PutProductModel("model-1", t0 + 101 * kSecondUs);
  pim.DeleteProduct(gone_product);
  pim.DeleteProductModel(gone_model);

  FakePim::Fault fault;
  fault.kind = failure.kind;
  fault.status = failure.status;
  fault.path = failure.path;
  fault.skip = failure.page - 1;
  fault.count = failure.calls;
  pim.InjectFault(fault);
  pim.ClearRequests();
  run = reconciler_->Run("pim", full);
  // EXPECT, not ASSERT: should the run not report its failure, what it did is checked below too.
  EXPECT_FALSE(run.ok()) << "the run should have failed on page " << failure.page;
  EXPECT_TRUE(absl::StrContains(run.status().message(), "reconciliation of pim failed"))
      << run.status();
  EXPECT_EQ(pim.pending_faults(), 0) << "the fault was not reached";
  // It did stop at page N: page N was asked for (once per attempt), nothing after it.
  std::vector<FakePim::Request> pages = ListRequests(pim, failure.path);
  EXPECT_EQ(pages.size(), static_cast<std::size_t>(failure.page - 1 + failure.calls));

  std::vector<v1::Event> events = Events();
  for (const v1::Event& event : events) {
    EXPECT_NE(event.type(), failing_kind + ".deleted")
        << "a failed listing emitted a deletion of " << event.resource_id();
    if (products_fail) {
      // The product models were never listed: nothing of theirs either.
      EXPECT_FALSE(absl::EndsWith(event.type(), ".deleted")) << event.resource_id();
    }
  }
  const ReconcileSourceStats after_failure = StatsOf(*reconciler_);
  EXPECT_EQ(after_failure.runs_failed, 1u);
  EXPECT_EQ(after_failure.watermark_us, watermark);
  ASSERT_TRUE(after_failure.last_run.has_value());
  EXPECT_FALSE(after_failure.last_run->watermark_advanced);
  // What is persisted, as the next pimgate would read it.
  OpenLog();
  reconciler_ = Make(pim);
  EXPECT_EQ(StatsOf(*reconciler_).watermark_us, watermark);

  // The PIM recovers: the next full run stores what the failed one missed, and deletes exactly
  // what the PIM no longer has.
  run = reconciler_->Run("pim", full);
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->watermark_us, t0 + 101 * kSecondUs);
  EXPECT_TRUE(run->watermark_advanced);
  events = Events();
  std::map<std::string, int> deletions;
  std::map<std::string, std::vector<int64_t>> updates;
  for (const v1::Event& event : events) {
    if (absl::EndsWith(event.type(), ".deleted")) {
      ++deletions[event.resource_id()];
    } else {
      updates[event.resource_id()].push_back(Micros(event.version_at()));
    }
  }
  EXPECT_EQ(deletions, (std::map<std::string, int>{{gone_product, 1}, {gone_model, 1}}));
  EXPECT_EQ(updates[uuids.front()], (std::vector<int64_t>{t0, t0 + 100 * kSecondUs}));
  EXPECT_EQ(updates["model-1"], (std::vector<int64_t>{t0 + kSecondUs, t0 + 101 * kSecondUs}));
  // 12 from the first run, two updates and two deletions since: nothing else, nothing twice.
  EXPECT_EQ(events.size(), 16u);
}

INSTANTIATE_TEST_SUITE_P(
    Faults, FullRunFailingOnPageN,
    ::testing::Values(PageFailure{"ProductsPage2Http500", "/api/rest/v1/products-uuid", 2,
                                  FakePim::Fault::Kind::kStatus, 500, 3},
                      PageFailure{"ProductsPage3MalformedJson", "/api/rest/v1/products-uuid", 3,
                                  FakePim::Fault::Kind::kMalformedJson, 0, 1},
                      PageFailure{"ProductsPage2ConnectionCut", "/api/rest/v1/products-uuid", 2,
                                  FakePim::Fault::Kind::kCutConnection, 0, 3},
                      PageFailure{"ProductModelsPage2Http503", "/api/rest/v1/product-models", 2,
                                  FakePim::Fault::Kind::kStatus, 503, 3}),
    [](const ::testing::TestParamInfo<PageFailure>& info) { return info.param.name; });

// ---- Catalogue structure kinds: families, categories, attributes, attribute groups ----

ReconcileConfig WithStructureKinds() {
  ReconcileConfig config = OnDemand();
  config.families = true;
  config.categories = true;
  config.attributes = true;
  config.attribute_groups = true;
  return config;
}

struct StructureList {
  const char* kind;
  const char* path;
};
constexpr StructureList kStructureLists[] = {
    {"family", "/api/rest/v1/families"},
    {"category", "/api/rest/v1/categories"},
    {"attribute", "/api/rest/v1/attributes"},
    {"attribute_group", "/api/rest/v1/attribute-groups"},
};

std::optional<int64_t> MetaInt(EventLog& log, const std::string& key) {
  absl::StatusOr<std::optional<std::string>> value = log.GetMeta(key);
  EXPECT_TRUE(value.ok()) << value.status();
  if (!value.ok() || !value->has_value()) return std::nullopt;
  int64_t number = 0;
  EXPECT_TRUE(absl::SimpleAtoi(**value, &number)) << **value;
  return number;
}

// The `updated` value of a first page's search parameter, decoded.
std::string FilterValueOf(const std::string& target) {
  const std::string marker = UrlEncode(R"({"updated":[{"operator":">","value":")");
  const std::size_t at = target.find(marker);
  if (at == std::string::npos) return "";
  const std::size_t start = at + marker.size();
  const std::size_t end = target.find(UrlEncode("\"}]}"), start);
  return end == std::string::npos ? "" : target.substr(start, end - start);
}

TEST_F(ReconcilerTest, StructureKindsChangedItemsAreEmittedUnchangedOnesAreNot) {
  FakePim pim;
  const int64_t t0 = DayAgoUs();
  pim.PutProduct(testing::NewUuid(), t0);
  pim.PutListedResource("family", "shoes", t0 + 1 * kSecondUs, R"({"attribute_as_label":"name"})");
  pim.PutListedResource("category", "master", t0 + 2 * kSecondUs, R"({"parent":null})");
  pim.PutListedResource("category", "summer sale", t0 + 3 * kSecondUs, R"({"parent":"master"})");
  pim.PutListedResource("attribute", "name", t0 + 4 * kSecondUs, R"({"type":"pim_catalog_text"})");
  pim.PutListedResource("attribute_group", "marketing", t0 + 5 * kSecondUs);
  reconciler_ = Make(pim, WithStructureKinds());

  absl::StatusOr<ReconcileRunStats> run = reconciler_->Run("pim");
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->scanned, 6u);
  EXPECT_EQ(run->emitted, 6u);
  ASSERT_EQ(run->kinds.size(), 4u);
  for (std::size_t i = 0; i < 4; ++i) {
    const ReconcileKindRunStats& kind = run->kinds[i];
    EXPECT_EQ(kind.kind, kStructureLists[i].kind);
    EXPECT_TRUE(kind.status.ok()) << kind.status;
    EXPECT_TRUE(kind.updated_filter.empty());  // no watermark, no `since`: everything
    EXPECT_TRUE(kind.watermark_advanced) << kind.kind;
    // Each list once, offset paging (no search_after), 100 items, no filter.
    std::vector<FakePim::Request> lists = ListRequests(pim, kStructureLists[i].path);
    ASSERT_EQ(lists.size(), 1u) << kStructureLists[i].path;
    EXPECT_EQ(lists[0].target, absl::StrCat(kStructureLists[i].path, "?limit=100"));
    EXPECT_EQ(lists[0].status, 200);
  }
  EXPECT_EQ(run->kinds[1].scanned, 2u);
  EXPECT_EQ(run->kinds[1].emitted, 2u);
  // Each kind's own watermark: the largest `updated` it listed.
  EXPECT_EQ(run->kinds[0].watermark_us, t0 + 1 * kSecondUs);
  EXPECT_EQ(run->kinds[1].watermark_us, t0 + 3 * kSecondUs);
  EXPECT_EQ(MetaInt(*log_, "reconcile/pim/watermark/family"), t0 + 1 * kSecondUs);
  EXPECT_EQ(MetaInt(*log_, "reconcile/pim/watermark/category"), t0 + 3 * kSecondUs);
  EXPECT_EQ(MetaInt(*log_, "reconcile/pim/watermark/attribute"), t0 + 4 * kSecondUs);
  EXPECT_EQ(MetaInt(*log_, "reconcile/pim/watermark/attribute_group"), t0 + 5 * kSecondUs);
  // The products' watermark is theirs alone.
  EXPECT_EQ(run->watermark_us, t0);

  std::map<std::string, v1::Event> by_resource;
  for (const v1::Event& e : Events()) by_resource[absl::StrCat(e.kind(), ":", e.resource_id())] = e;
  ASSERT_EQ(by_resource.size(), 6u);
  const v1::Event& category = by_resource.at("category:summer sale");
  // What a plugin gets from the Event Platform for a category, with the resource as data.
  EXPECT_EQ(category.type(), "category.updated");
  EXPECT_EQ(category.original_type(), "category.updated");
  EXPECT_EQ(category.origin(), v1::ORIGIN_RECONCILIATION);
  EXPECT_EQ(category.source(), "pim");
  EXPECT_EQ(category.id(), absl::StrCat("reconcile:category:summer sale:", t0 + 3 * kSecondUs));
  EXPECT_EQ(Micros(category.version_at()), t0 + 3 * kSecondUs);
  EXPECT_EQ(category.data().fields().at("code").string_value(), "summer sale");
  EXPECT_EQ(category.data().fields().at("parent").string_value(), "master");
  EXPECT_EQ(category.data().fields().at("updated").string_value(),
            pim.AkeneoTime(t0 + 3 * kSecondUs));
  EXPECT_FALSE(category.data().fields().contains("_links"));
  EXPECT_EQ(by_resource.at("family:shoes").type(), "family.updated");
  EXPECT_EQ(by_resource.at("attribute:name").type(), "attribute.updated");
  EXPECT_EQ(by_resource.at("attribute_group:marketing").type(), "attribute_group.updated");
  EXPECT_EQ(by_resource.at("attribute_group:marketing").kind(), "attribute_group");

  // Nothing changed: each list is asked for what changed after its watermark - overlap, as an
  // ISO 8601 time the PIM accepts; nothing is emitted.
  pim.ClearRequests();
  run = reconciler_->Run("pim");
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->emitted, 0u);
  ASSERT_EQ(run->kinds.size(), 4u);
  for (std::size_t i = 0; i < 4; ++i) {
    std::vector<FakePim::Request> lists = ListRequests(pim, kStructureLists[i].path);
    ASSERT_EQ(lists.size(), 1u);
    EXPECT_EQ(lists[0].status, 200) << lists[0].target;
    const std::string filter = run->kinds[i].updated_filter;
    EXPECT_EQ(UrlEncode(filter), FilterValueOf(lists[0].target)) << lists[0].target;
    // Written in the zone the run knows for the PIM, never later than the window start.
    std::string error;
    absl::Time read_as_wall_clock;
    ASSERT_TRUE(absl::ParseTime("%Y-%m-%dT%H:%M:%S", filter.substr(0, 19), kMinus5,
                                &read_as_wall_clock, &error))
        << filter << ": " << error;
    absl::Time read_with_offset;
    ASSERT_TRUE(absl::ParseTime(absl::RFC3339_sec, filter, &read_with_offset, &error))
        << filter << ": " << error;
    const int64_t window =
        *MetaInt(*log_, absl::StrCat("reconcile/pim/watermark/", kStructureLists[i].kind)) -
        absl::ToInt64Microseconds(absl::Minutes(5));
    EXPECT_LE(absl::ToUnixMicros(read_as_wall_clock), window) << filter;
    EXPECT_LE(absl::ToUnixMicros(read_with_offset), window) << filter;
    EXPECT_FALSE(run->kinds[i].watermark_advanced);
  }
  EXPECT_EQ(log_->head(), 6u);

  // A family and a category change, an attribute is added: exactly those are emitted.
  pim.PutListedResource("family", "shoes", t0 + 100 * kSecondUs, R"({"attribute_as_label":"sku"})");
  pim.PutListedResource("category", "master", t0 + 101 * kSecondUs);
  pim.PutListedResource("attribute", "color", t0 + 102 * kSecondUs);
  run = reconciler_->Run("pim");
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->emitted, 3u);
  std::vector<v1::Event> events = Events();
  ASSERT_EQ(events.size(), 9u);
  std::set<std::string> emitted;
  for (std::size_t i = 6; i < events.size(); ++i) {
    emitted.insert(absl::StrCat(events[i].type(), " ", events[i].resource_id()));
  }
  EXPECT_EQ(emitted, (std::set<std::string>{"family.updated shoes", "category.updated master",
                                            "attribute.updated color"}));
  EXPECT_EQ(MetaInt(*log_, "reconcile/pim/watermark/family"), t0 + 100 * kSecondUs);
  EXPECT_EQ(MetaInt(*log_, "reconcile/pim/watermark/attribute_group"), t0 + 5 * kSecondUs);
}

TEST_F(ReconcilerTest, StructureKindsAreOptInAndAloneNeedNoProductList) {
  FakePim pim;
  const int64_t t0 = DayAgoUs();
  pim.PutProduct(testing::NewUuid(), t0);
  pim.PutListedResource("category", "master", t0);
  // Default configuration: products and product models only, as before.
  reconciler_ = Make(pim);
  absl::StatusOr<ReconcileRunStats> run = reconciler_->Run("pim");
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->emitted, 1u);
  EXPECT_TRUE(run->kinds.empty());
  EXPECT_TRUE(ListRequests(pim, "/api/rest/v1/categories").empty());

  ReconcileConfig only_categories = OnDemand();
  only_categories.products = false;
  only_categories.product_models = false;
  only_categories.categories = true;
  reconciler_ = Make(pim, only_categories);
  pim.ClearRequests();
  // The PIM throttles the first call: retried after its Retry-After, through the same client.
  FakePim::Fault throttled;
  throttled.status = 429;
  throttled.retry_after_seconds = 0;
  throttled.path = "/api/rest/v1/categories";
  pim.InjectFault(throttled);
  run = reconciler_->Run("pim");
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->emitted, 1u);
  ASSERT_EQ(run->kinds.size(), 1u);
  EXPECT_EQ(run->kinds[0].kind, "category");
  EXPECT_TRUE(ListRequests(pim, "/api/rest/v1/products-uuid").empty());
  std::vector<FakePim::Request> lists = ListRequests(pim, "/api/rest/v1/categories");
  ASSERT_EQ(lists.size(), 2u);
  EXPECT_EQ(lists[0].status, 429);
  EXPECT_EQ(lists[1].status, 200);
}

TEST_F(ReconcilerTest, StructureKindInSyncWithANewerEventIsNotEmitted) {
  FakePim pim;
  const int64_t t0 = DayAgoUs();
  pim.PutListedResource("family", "shoes", t0);
  pim.PutListedResource("family", "boots", t0);
  // An Event Platform family.updated for shoes came in already, versioned by its CloudEvent
  // `time` (after the save's `updated`).
  AppendRequest request;
  v1::Event& webhook = request.events.emplace_back();
  webhook.set_id("ep-1");
  webhook.set_source("pim");
  webhook.set_type("family.updated");
  webhook.set_kind("family");
  webhook.set_resource_id("shoes");
  *webhook.mutable_version_at() = TimeUtil::MicrosecondsToTimestamp(t0 + 2 * kSecondUs);
  std::promise<absl::StatusOr<AppendResult>> appended;
  log_->Append(std::move(request),
               [&appended](absl::StatusOr<AppendResult> r) { appended.set_value(std::move(r)); });
  absl::StatusOr<AppendResult> result = appended.get_future().get();
  ASSERT_TRUE(result.ok()) << result.status();

  ReconcileConfig config = OnDemand();
  config.families = true;
  reconciler_ = Make(pim, config);
  absl::StatusOr<ReconcileRunStats> run = reconciler_->Run("pim");
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->kinds.at(0).scanned, 2u);
  EXPECT_EQ(run->kinds.at(0).emitted, 1u);
  EXPECT_EQ(run->in_sync, 1u);
  std::vector<v1::Event> events = Events();
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[1].resource_id(), "boots");
}

TEST_F(ReconcilerTest, StructureKindFailingOnPage2KeepsItsWatermarkAndTheOthersMove) {
  reconciler_options_.page_size = 2;
  FakePim pim;  // https
  // Behind a TLS-terminating proxy: the next links say http://, and are followed over https.
  pim.SetLinkOrigin("http://127.0.0.1");
  const int64_t t0 = DayAgoUs();
  for (int i = 1; i <= 5; ++i) {
    pim.PutListedResource("category", absl::StrCat("cat-", i), t0 + i * kSecondUs);
  }
  pim.PutListedResource("family", "shoes", t0);
  pim.PutListedResource("attribute", "name", t0);
  ReconcileConfig config = OnDemand();
  config.families = true;
  config.categories = true;
  config.attributes = true;
  reconciler_ = Make(pim, config);
  absl::StatusOr<ReconcileRunStats> run = reconciler_->Run("pim");
  ASSERT_TRUE(run.ok()) << run.status();
  ASSERT_EQ(run->emitted, 7u);
  {
    // 5 items, 2 a page: the PIM's next links, page by page.
    std::vector<FakePim::Request> pages = ListRequests(pim, "/api/rest/v1/categories");
    ASSERT_EQ(pages.size(), 3u);
    EXPECT_EQ(pages[0].target, "/api/rest/v1/categories?limit=2");
    EXPECT_EQ(pages[1].target, "/api/rest/v1/categories?limit=2&page=2");
    EXPECT_EQ(pages[2].target, "/api/rest/v1/categories?limit=2&page=3");
  }
  const std::optional<int64_t> category_watermark =
      MetaInt(*log_, "reconcile/pim/watermark/category");
  ASSERT_EQ(category_watermark, t0 + 5 * kSecondUs);

  // Everything changes; page 2 of the categories fails every attempt (rest.max_attempts: 3).
  for (int i = 1; i <= 5; ++i) {
    pim.PutListedResource("category", absl::StrCat("cat-", i), t0 + (100 + i) * kSecondUs);
  }
  pim.PutListedResource("family", "shoes", t0 + 200 * kSecondUs);
  pim.PutListedResource("attribute", "name", t0 + 201 * kSecondUs);
  FakePim::Fault fault;
  fault.status = 500;
  fault.path = "/api/rest/v1/categories";
  fault.skip = 1;
  fault.count = 3;
  pim.InjectFault(fault);
  pim.ClearRequests();
  run = reconciler_->Run("pim");
  EXPECT_FALSE(run.ok());
  EXPECT_TRUE(absl::StrContains(run.status().message(), "/api/rest/v1/categories")) << run.status();
  EXPECT_EQ(pim.pending_faults(), 0);
  // Page 1, then page 2 three times, nothing after.
  std::vector<FakePim::Request> pages = ListRequests(pim, "/api/rest/v1/categories");
  ASSERT_EQ(pages.size(), 4u);
  EXPECT_TRUE(absl::StrContains(pages[1].target, "page=2")) << pages[1].target;
  // The categories' watermark stays; the families and attributes after them were listed and
  // moved theirs.
  EXPECT_EQ(MetaInt(*log_, "reconcile/pim/watermark/category"), category_watermark);
  EXPECT_EQ(MetaInt(*log_, "reconcile/pim/watermark/family"), t0 + 200 * kSecondUs);
  EXPECT_EQ(MetaInt(*log_, "reconcile/pim/watermark/attribute"), t0 + 201 * kSecondUs);
  ReconcileSourceStats stats = StatsOf(*reconciler_);
  EXPECT_EQ(stats.runs_failed, 1u);
  ASSERT_TRUE(stats.last_run.has_value());
  ASSERT_EQ(stats.last_run->kinds.size(), 3u);
  EXPECT_FALSE(stats.last_run->kinds[1].status.ok());
  EXPECT_EQ(stats.last_run->kinds[1].emitted, 2u);  // page 1's two categories
  EXPECT_EQ(log_->head(), 7u + 2u + 2u);

  // The next run lists the categories' window again: the three it missed are emitted, the two
  // already delivered are in sync; then the watermark moves.
  pim.ClearRequests();
  run = reconciler_->Run("pim");
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->kinds.at(1).kind, "category");
  EXPECT_EQ(run->kinds.at(1).emitted, 3u);
  EXPECT_EQ(run->emitted, 3u);
  EXPECT_EQ(MetaInt(*log_, "reconcile/pim/watermark/category"), t0 + 105 * kSecondUs);
  std::set<std::string> categories;
  for (const v1::Event& e : Events()) {
    if (e.kind() == "category" && Micros(e.version_at()) > t0 + 100 * kSecondUs) {
      EXPECT_TRUE(categories.insert(e.resource_id()).second) << "twice: " << e.resource_id();
    }
  }
  EXPECT_EQ(categories.size(), 5u);
}

TEST_F(ReconcilerTest, StructureKindFilterIsTheWallClockTimeInTheConfiguredZone) {
  FakePim pim;  // -05:00; its lists read the filter's date and time there, whatever the offset
  const int64_t t0 = DayAgoUs();
  pim.PutListedResource("attribute_group", "marketing", t0);
  ReconcileConfig config = OnDemand();
  config.products = false;
  config.product_models = false;
  config.attribute_groups = true;
  config.overlap = std::chrono::milliseconds(0);
  reconciler_ = Make(pim, config, "pim", nullptr,
                     [](RestConfig& rest) { rest.timezone = testing::ZoneOf("-05:00"); });
  ASSERT_TRUE(reconciler_->Run("pim").ok());
  // Updated one second after the watermark: a filter written in UTC ("...Z", read as -05:00
  // wall-clock time, 5 h later) would miss it.
  pim.PutListedResource("attribute_group", "technical", t0 + kSecondUs);
  pim.ClearRequests();
  absl::StatusOr<ReconcileRunStats> run = reconciler_->Run("pim");
  ASSERT_TRUE(run.ok()) << run.status();
  ASSERT_EQ(run->kinds.size(), 1u);
  EXPECT_EQ(run->kinds[0].updated_filter,
            absl::FormatTime("%Y-%m-%dT%H:%M:%S-05:00", absl::FromUnixMicros(t0), kMinus5));
  EXPECT_EQ(run->kinds[0].emitted, 1u);
}

TEST_F(ReconcilerTest, FakePimStructureListsAreStrict) {
  FakePim pim;
  pim.PutListedResource("family", "shoes", DayAgoUs());
  auto client = AkeneoClient::Create(Rest(pim));
  ASSERT_TRUE(client.ok()) << client.status();
  const auto status_of = [&](const std::string& target) { return (*client)->Get(target).status(); };
  EXPECT_TRUE(status_of("/api/rest/v1/families?limit=100").ok());
  const absl::Status over = status_of("/api/rest/v1/families?limit=101");
  EXPECT_TRUE(absl::StrContains(over.message(), "422")) << over;
  const absl::Status search_after =
      status_of("/api/rest/v1/families?pagination_type=search_after&limit=10");
  EXPECT_TRUE(absl::StrContains(search_after.message(), "422")) << search_after;
  // The products' "YYYY-MM-DD hh:mm:ss" is not the ISO 8601 these lists take.
  const absl::Status space_format = status_of(
      absl::StrCat("/api/rest/v1/categories?search=",
                   UrlEncode(R"({"updated":[{"operator":">","value":"2026-01-01 00:00:00"}]})")));
  EXPECT_TRUE(absl::StrContains(space_format.message(), "422")) << space_format;
  const absl::Status other_operator = status_of(
      absl::StrCat("/api/rest/v1/attributes?search=",
                   UrlEncode(R"({"updated":[{"operator":"<","value":"2026-01-01T00:00:00Z"}]})")));
  EXPECT_TRUE(absl::StrContains(other_operator.message(), "422")) << other_operator;
  EXPECT_TRUE(status_of(absl::StrCat("/api/rest/v1/attribute-groups?search=",
                                     UrlEncode(R"({"updated":[{"operator":">","value":)"
                                               R"("2026-01-01T00:00:00+00:00"}]})")))
                  .ok());
  (*client)->Shutdown();
}

// ---- Enterprise Edition kinds: reference entity records and assets ----

ReconcileConfig WithNestedKinds() {
  ReconcileConfig config = OnDemand();
  config.products = false;
  config.product_models = false;
  config.reference_entity_records = true;
  config.assets = true;
  return config;
}

// The targets the fake saw whose path is exactly `path` (query aside), in order.
std::vector<std::string> TargetsAt(const FakePim& pim, const std::string& path) {
  std::vector<std::string> out;
  for (const FakePim::Request& r : pim.requests()) {
    if (r.target.substr(0, r.target.find('?')) == path) out.push_back(r.target);
  }
  return out;
}

// An Event Platform event from Akeneo's documented example (tests/data/event_platform/), parsed
// as the gateway parses it, for source "pim", versioned at `version_us`.
v1::Event DocumentedEvent(const std::string& type, int64_t version_us) {
  const std::string file = absl::StrCat(
      PIMGATE_SOURCE_DIR, "/tests/data/event_platform/com.akeneo.pim.v1.", type, ".json");
  std::ifstream in(file);
  std::stringstream body;
  body << in.rdbuf();
  absl::StatusOr<v1::Event> event = ParseCloudEvent(body.str());
  EXPECT_TRUE(event.ok()) << file << ": " << event.status();
  if (!event.ok()) return {};
  event->set_source("pim");
  *event->mutable_version_at() = TimeUtil::MicrosecondsToTimestamp(version_us);
  return *event;
}

TEST_F(ReconcilerTest, NestedKindsChangesAcrossParentsAndPagesAreEmittedAndNewParentsListed) {
  FakePim::Options options;
  options.entity_page_size = 2;  // every list below spans pages
  FakePim pim(options);
  const int64_t t0 = DayAgoUs();
  pim.PutListedResource(
      "reference_entity_record", "brands/kartell", t0 + 1 * kSecondUs,
      R"({"values":{"label":[{"locale":"en_US","channel":null,"data":"Kartell"}]}})");
  pim.PutListedResource("reference_entity_record", "brands/usm", t0 + 2 * kSecondUs);
  pim.PutListedResource("reference_entity_record", "brands/ligneroset", t0 + 3 * kSecondUs);
  pim.PutListedResource("reference_entity_record", "designers/starck", t0 + 4 * kSecondUs);
  pim.PutReferenceEntity("colors", R"({"labels":{"en_US":"Colors"}})");  // no records
  pim.PutListedResource("asset", "packshots/shoe_1", t0 + 5 * kSecondUs);
  pim.PutListedResource("asset", "packshots/shoe_2", t0 + 6 * kSecondUs);
  pim.PutListedResource("asset", "packshots/shoe_3", t0 + 7 * kSecondUs);
  pim.PutListedResource("asset", "notices/manual", t0 + 8 * kSecondUs);
  reconciler_ = Make(pim, WithNestedKinds());

  absl::StatusOr<ReconcileRunStats> run = reconciler_->Run("pim");
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->scanned, 8u);
  EXPECT_EQ(run->emitted, 8u);
  ASSERT_EQ(run->kinds.size(), 2u);
  const ReconcileKindRunStats& records = run->kinds[0];
  EXPECT_EQ(records.kind, "reference_entity_record");
  EXPECT_TRUE(records.status.ok()) << records.status;
  EXPECT_FALSE(records.unavailable);
  EXPECT_EQ(records.parents, 3u);
  EXPECT_EQ(records.scanned, 4u);
  EXPECT_EQ(records.emitted, 4u);
  EXPECT_TRUE(records.updated_filter.empty());
  EXPECT_EQ(records.watermark_us, t0 + 4 * kSecondUs);
  const ReconcileKindRunStats& assets = run->kinds[1];
  EXPECT_EQ(assets.kind, "asset");
  EXPECT_EQ(assets.parents, 2u);
  EXPECT_EQ(assets.emitted, 4u);
  EXPECT_EQ(assets.watermark_us, t0 + 8 * kSecondUs);
  EXPECT_EQ(MetaInt(*log_, "reconcile/pim/watermark/reference_entity_record"), t0 + 4 * kSecondUs);
  EXPECT_EQ(MetaInt(*log_, "reconcile/pim/watermark/asset"), t0 + 8 * kSecondUs);
  EXPECT_EQ(StatsOf(*reconciler_).kind_watermarks_us,
            (std::map<std::string, int64_t>{{"reference_entity_record", t0 + 4 * kSecondUs},
                                            {"asset", t0 + 8 * kSecondUs}}));
  EXPECT_TRUE(ListRequests(pim, "/api/rest/v1/products-uuid").empty());

  // Three reference entities, two a page: the first page, then the PIM's next link (its opaque
  // search_after cursor); no `limit`, no `pagination_type` (these lists have neither).
  std::vector<std::string> entities = TargetsAt(pim, "/api/rest/v1/reference-entities");
  ASSERT_EQ(entities.size(), 2u);
  EXPECT_EQ(entities[0], "/api/rest/v1/reference-entities");
  EXPECT_TRUE(absl::StartsWith(entities[1], "/api/rest/v1/reference-entities?search_after="))
      << entities[1];
  std::vector<std::string> brands =
      TargetsAt(pim, "/api/rest/v1/reference-entities/brands/records");
  ASSERT_EQ(brands.size(), 2u);
  EXPECT_EQ(brands[0], "/api/rest/v1/reference-entities/brands/records");
  EXPECT_TRUE(absl::StrContains(brands[1], "search_after=")) << brands[1];
  EXPECT_EQ(TargetsAt(pim, "/api/rest/v1/reference-entities/colors/records").size(), 1u);
  EXPECT_EQ(TargetsAt(pim, "/api/rest/v1/asset-families/packshots/assets").size(), 2u);
  for (const FakePim::Request& r : pim.requests()) EXPECT_EQ(r.status, 200) << r.target;

  std::map<std::string, v1::Event> by_resource;
  for (const v1::Event& e : Events()) by_resource[absl::StrCat(e.kind(), ":", e.resource_id())] = e;
  ASSERT_EQ(by_resource.size(), 8u);
  const v1::Event& kartell = by_resource.at("reference_entity_record:brands/kartell");
  EXPECT_EQ(kartell.type(), "reference_entity_record.updated");
  EXPECT_EQ(kartell.original_type(), "reference_entity_record.updated");
  EXPECT_EQ(kartell.origin(), v1::ORIGIN_RECONCILIATION);
  EXPECT_EQ(kartell.id(),
            absl::StrCat("reconcile:reference_entity_record:brands/kartell:", t0 + kSecondUs));
  EXPECT_EQ(Micros(kartell.version_at()), t0 + kSecondUs);
  EXPECT_EQ(kartell.data().fields().at("code").string_value(), "kartell");
  EXPECT_TRUE(kartell.data().fields().contains("values"));
  EXPECT_FALSE(kartell.data().fields().contains("_links"));
  const v1::Event& manual = by_resource.at("asset:notices/manual");
  EXPECT_EQ(manual.type(), "asset.updated");
  EXPECT_EQ(manual.kind(), "asset");
  EXPECT_EQ(manual.data().fields().at("updated").string_value(),
            pim.AkeneoTime(t0 + 8 * kSecondUs));

  // Nothing changed: each parent's list is asked for what changed after the kind's watermark
  // minus overlap, as ISO 8601; nothing is emitted.
  pim.ClearRequests();
  run = reconciler_->Run("pim");
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->emitted, 0u);
  ASSERT_EQ(run->kinds.size(), 2u);
  EXPECT_FALSE(run->kinds[0].updated_filter.empty());
  // (The PIM's offset is learned from products, not listed here: the window is widened, and
  // the brands' three records come back in sync, on two pages.)
  brands = TargetsAt(pim, "/api/rest/v1/reference-entities/brands/records");
  ASSERT_FALSE(brands.empty());
  EXPECT_EQ(FilterValueOf(brands[0]), UrlEncode(run->kinds[0].updated_filter)) << brands[0];
  EXPECT_TRUE(absl::StartsWith(brands[0], "/api/rest/v1/reference-entities/brands/records?search="))
      << brands[0];
  EXPECT_EQ(log_->head(), 8u);

  // A reference entity appears with a record, a record and an asset change: exactly those.
  pim.PutListedResource("reference_entity_record", "materials/oak", t0 + 50 * kSecondUs);
  pim.PutListedResource("reference_entity_record", "brands/usm", t0 + 60 * kSecondUs);
  pim.PutListedResource("asset", "packshots/shoe_3", t0 + 70 * kSecondUs);
  run = reconciler_->Run("pim");
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->kinds[0].parents, 4u);
  std::set<std::string> emitted;
  std::vector<v1::Event> events = Events();
  for (std::size_t i = 8; i < events.size(); ++i) {
    emitted.insert(absl::StrCat(events[i].type(), " ", events[i].resource_id()));
  }
  EXPECT_EQ(emitted, (std::set<std::string>{"reference_entity_record.updated materials/oak",
                                            "reference_entity_record.updated brands/usm",
                                            "asset.updated packshots/shoe_3"}));
  EXPECT_EQ(MetaInt(*log_, "reconcile/pim/watermark/reference_entity_record"), t0 + 60 * kSecondUs);
  EXPECT_EQ(MetaInt(*log_, "reconcile/pim/watermark/asset"), t0 + 70 * kSecondUs);
}

TEST_F(ReconcilerTest, NestedKindsUseTheEventPlatformsResourceIds) {
  FakePim pim;
  const int64_t t0 = DayAgoUs();
  // The records and assets of Akeneo's documented Event Platform examples, and one more each.
  pim.PutListedResource("reference_entity_record", "brands/Addadas", t0);
  pim.PutListedResource("reference_entity_record", "brands/other", t0);
  pim.PutListedResource("asset", "family1/asset1", t0);
  pim.PutListedResource("asset", "family1/asset2", t0);
  // Their Event Platform events came in already, newer than what the PIM lists.
  AppendRequest request;
  request.events.push_back(DocumentedEvent("reference-entity-record.updated", t0 + kSecondUs));
  request.events.push_back(DocumentedEvent("asset.updated", t0 + kSecondUs));
  EXPECT_EQ(request.events[0].resource_id(), "brands/Addadas");
  EXPECT_EQ(request.events[1].resource_id(), "family1/asset1");
  std::promise<absl::StatusOr<AppendResult>> appended;
  log_->Append(std::move(request),
               [&appended](absl::StatusOr<AppendResult> r) { appended.set_value(std::move(r)); });
  absl::StatusOr<AppendResult> result = appended.get_future().get();
  ASSERT_TRUE(result.ok()) << result.status();

  reconciler_ = Make(pim, WithNestedKinds());
  absl::StatusOr<ReconcileRunStats> run = reconciler_->Run("pim");
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->scanned, 4u);
  EXPECT_EQ(run->in_sync, 2u);
  EXPECT_EQ(run->emitted, 2u);
  std::vector<v1::Event> events = Events();
  ASSERT_EQ(events.size(), 4u);
  EXPECT_EQ(events[2].resource_id(), "brands/other");
  EXPECT_EQ(events[3].resource_id(), "family1/asset2");
}

TEST_F(ReconcilerTest, NestedKindFailingPartWayThroughAParentKeepsItsWatermarkThenRecovers) {
  FakePim::Options options;
  options.entity_page_size = 2;
  FakePim pim(options);
  const int64_t t0 = DayAgoUs();
  for (int i = 1; i <= 3; ++i) {
    pim.PutListedResource("reference_entity_record", absl::StrCat("brands/b", i),
                          t0 + i * kSecondUs);
    pim.PutListedResource("reference_entity_record", absl::StrCat("designers/d", i),
                          t0 + i * kSecondUs);
  }
  pim.PutListedResource("asset", "packshots/shoe", t0);
  reconciler_ = Make(pim, WithNestedKinds());
  absl::StatusOr<ReconcileRunStats> run = reconciler_->Run("pim");
  ASSERT_TRUE(run.ok()) << run.status();
  ASSERT_EQ(run->emitted, 7u);
  const std::optional<int64_t> watermark =
      MetaInt(*log_, "reconcile/pim/watermark/reference_entity_record");
  ASSERT_EQ(watermark, t0 + 3 * kSecondUs);

  // Everything changes; page 2 of the brands' records fails every attempt (rest.max_attempts:
  // 3): page 1 (two records) was appended, the designers are not reached.
  for (int i = 1; i <= 3; ++i) {
    pim.PutListedResource("reference_entity_record", absl::StrCat("brands/b", i),
                          t0 + (100 + i) * kSecondUs);
    pim.PutListedResource("reference_entity_record", absl::StrCat("designers/d", i),
                          t0 + (100 + i) * kSecondUs);
  }
  pim.PutListedResource("asset", "packshots/shoe", t0 + 200 * kSecondUs);
  FakePim::Fault fault;
  fault.status = 500;
  fault.path = "/api/rest/v1/reference-entities/brands/records";
  fault.skip = 1;
  fault.count = 3;
  pim.InjectFault(fault);
  pim.ClearRequests();
  run = reconciler_->Run("pim");
  ASSERT_FALSE(run.ok());
  EXPECT_TRUE(
      absl::StrContains(run.status().message(), "/api/rest/v1/reference-entities/brands/records"))
      << run.status();
  EXPECT_EQ(pim.pending_faults(), 0);
  EXPECT_TRUE(TargetsAt(pim, "/api/rest/v1/reference-entities/designers/records").empty());
  // The records' watermark stays where the last complete listing left it; the assets, listed
  // after, moved theirs.
  EXPECT_EQ(MetaInt(*log_, "reconcile/pim/watermark/reference_entity_record"), watermark);
  EXPECT_EQ(MetaInt(*log_, "reconcile/pim/watermark/asset"), t0 + 200 * kSecondUs);
  ReconcileSourceStats stats = StatsOf(*reconciler_);
  EXPECT_EQ(stats.runs_failed, 1u);
  ASSERT_TRUE(stats.last_run.has_value());
  ASSERT_EQ(stats.last_run->kinds.size(), 2u);
  EXPECT_FALSE(stats.last_run->kinds[0].status.ok());
  EXPECT_FALSE(stats.last_run->kinds[0].unavailable);
  EXPECT_FALSE(stats.last_run->kinds[0].watermark_advanced);
  EXPECT_EQ(stats.last_run->kinds[0].emitted, 2u);
  EXPECT_TRUE(stats.last_run->kinds[1].status.ok());
  EXPECT_EQ(log_->head(), 7u + 2u + 1u);

  // The next run lists the window again: the four records it missed are emitted, the two already
  // delivered are in sync; then the watermark moves.
  run = reconciler_->Run("pim");
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->kinds.at(0).emitted, 4u);
  EXPECT_EQ(MetaInt(*log_, "reconcile/pim/watermark/reference_entity_record"),
            t0 + 103 * kSecondUs);
  std::set<std::string> records;
  for (const v1::Event& e : Events()) {
    if (e.kind() == "reference_entity_record" && Micros(e.version_at()) > t0 + 100 * kSecondUs) {
      EXPECT_TRUE(records.insert(e.resource_id()).second) << "twice: " << e.resource_id();
    }
  }
  EXPECT_EQ(records.size(), 6u);
  // A new Reconciler (a restart) shows the persisted watermarks before any run.
  reconciler_ = Make(pim, WithNestedKinds());
  EXPECT_EQ(StatsOf(*reconciler_).kind_watermarks_us,
            (std::map<std::string, int64_t>{{"reference_entity_record", t0 + 103 * kSecondUs},
                                            {"asset", t0 + 200 * kSecondUs}}));
}

TEST_F(ReconcilerTest, NestedKindParentDeletedWhileListedIsSkipped) {
  FakePim pim;
  const int64_t t0 = DayAgoUs();
  pim.PutListedResource("asset", "packshots/shoe", t0);
  pim.PutListedResource("asset", "retired/old", t0);
  ReconcileConfig config = OnDemand();
  config.products = false;
  config.product_models = false;
  config.assets = true;
  reconciler_ = Make(pim, config);
  // The PIM answers the retired family's assets with its own 404: deleted since it was listed.
  FakePim::Fault gone;
  gone.status = 404;
  gone.message = "Asset family \"retired\" does not exist.";
  gone.path = "/api/rest/v1/asset-families/retired/assets";
  pim.InjectFault(gone);
  absl::StatusOr<ReconcileRunStats> run = reconciler_->Run("pim");
  ASSERT_TRUE(run.ok()) << run.status();
  ASSERT_EQ(run->kinds.size(), 1u);
  EXPECT_EQ(run->kinds[0].parents, 2u);
  EXPECT_EQ(run->kinds[0].parents_gone, 1u);
  EXPECT_EQ(run->kinds[0].emitted, 1u);
  EXPECT_TRUE(run->kinds[0].watermark_advanced);
}

TEST_F(ReconcilerTest, CommunityEditionWithoutNestedKindsReconcilesTheOthersAndSaysSoOnce) {
  LogCapture logs;
  FakePim::Options options;
  options.enterprise = false;
  FakePim pim(options);
  const int64_t t0 = DayAgoUs();
  pim.PutProduct(testing::NewUuid(), t0);
  pim.PutListedResource("family", "shoes", t0);
  ReconcileConfig config = OnDemand();
  config.families = true;
  config.reference_entity_records = true;
  config.assets = true;
  reconciler_ = Make(pim, config);
  for (int i = 0; i < 2; ++i) {
    absl::StatusOr<ReconcileRunStats> run = reconciler_->Run("pim");
    ASSERT_TRUE(run.ok()) << run.status();
    ASSERT_EQ(run->kinds.size(), 3u);
    EXPECT_EQ(run->kinds[0].kind, "family");
    EXPECT_TRUE(run->kinds[0].status.ok());
    for (int k = 1; k < 3; ++k) {
      const ReconcileKindRunStats& kind = run->kinds[k];
      EXPECT_TRUE(kind.unavailable) << kind.kind;
      EXPECT_EQ(kind.status.code(), absl::StatusCode::kUnimplemented) << kind.status;
      EXPECT_TRUE(absl::StrContains(kind.status.message(), "Community Edition")) << kind.status;
      EXPECT_FALSE(kind.watermark_us.has_value());
    }
    EXPECT_TRUE(
        absl::StrContains(run->kinds[1].status.message(), "reconcile.reference_entity_records"));
    EXPECT_TRUE(absl::StrContains(run->kinds[2].status.message(), "reconcile.assets"));
    // The product and the family are reconciled (the first run; the second finds them in sync).
    EXPECT_EQ(run->emitted, i == 0 ? 2u : 0u);
  }
  // Each list asked once a run (a 404 is not retried), logged once, no failed run.
  EXPECT_EQ(TargetsAt(pim, "/api/rest/v1/reference-entities").size(), 2u);
  EXPECT_EQ(TargetsAt(pim, "/api/rest/v1/asset-families").size(), 2u);
  EXPECT_EQ(logs.Count("reference entity records not reconciled"), 1);
  EXPECT_EQ(logs.Count("assets not reconciled"), 1);
  ReconcileSourceStats stats = StatsOf(*reconciler_);
  EXPECT_EQ(stats.runs_succeeded, 2u);
  EXPECT_EQ(stats.runs_failed, 0u);
}

TEST_F(ReconcilerTest, NestedKindForbiddenIsSkippedUntilThePimAllowsIt) {
  LogCapture logs;
  FakePim pim;
  const int64_t t0 = DayAgoUs();
  pim.PutListedResource("reference_entity_record", "brands/kartell", t0);
  pim.PutListedResource("asset", "packshots/shoe", t0);
  // The connection's role may not list asset families, for two runs.
  FakePim::Fault forbidden;
  forbidden.status = 403;
  forbidden.message = "You are not allowed to access the asset families.";
  forbidden.path = "/api/rest/v1/asset-families";
  forbidden.count = 2;
  pim.InjectFault(forbidden);
  reconciler_ = Make(pim, WithNestedKinds());
  for (int i = 0; i < 2; ++i) {
    absl::StatusOr<ReconcileRunStats> run = reconciler_->Run("pim");
    ASSERT_TRUE(run.ok()) << run.status();
    ASSERT_EQ(run->kinds.size(), 2u);
    EXPECT_TRUE(run->kinds[0].status.ok());
    EXPECT_TRUE(run->kinds[1].unavailable);
    EXPECT_EQ(run->kinds[1].status.code(), absl::StatusCode::kPermissionDenied);
    EXPECT_TRUE(absl::StrContains(run->kinds[1].status.message(),
                                  "You are not allowed to access the asset families."))
        << run->kinds[1].status;
  }
  EXPECT_EQ(logs.Count("assets not reconciled"), 1);
  EXPECT_FALSE(MetaInt(*log_, "reconcile/pim/watermark/asset").has_value());
  // Allowed now: listed, emitted, its watermark set, and said once.
  absl::StatusOr<ReconcileRunStats> run = reconciler_->Run("pim");
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_FALSE(run->kinds[1].unavailable);
  EXPECT_EQ(run->kinds[1].emitted, 1u);
  EXPECT_EQ(MetaInt(*log_, "reconcile/pim/watermark/asset"), t0);
  EXPECT_EQ(logs.Count("the PIM lists asset families now"), 1);
}

TEST_F(ReconcilerTest, FakePimEntityListsAreStrict) {
  FakePim pim;
  pim.PutListedResource("reference_entity_record", "brands/kartell", DayAgoUs());
  auto client = AkeneoClient::Create(Rest(pim));
  ASSERT_TRUE(client.ok()) << client.status();
  const auto status_of = [&](const std::string& target) { return (*client)->Get(target).status(); };
  const auto records = [](const std::string& search) {
    return absl::StrCat("/api/rest/v1/reference-entities/brands/records?search=",
                        UrlEncode(search));
  };
  EXPECT_TRUE(status_of("/api/rest/v1/reference-entities").ok());
  EXPECT_TRUE(
      status_of(records(R"({"updated":[{"operator":">","value":"2026-01-01T00:00:00Z"}]})")).ok());
  EXPECT_TRUE(
      status_of(records(R"({"updated":[{"operator":">","value":"2026-01-01T00:00:00+00:00"}]})"))
          .ok());
  const absl::Status unknown = status_of("/api/rest/v1/reference-entities/designers/records");
  EXPECT_TRUE(IsAkeneoNotFound(unknown)) << unknown;
  EXPECT_TRUE(absl::StrContains(unknown.message(), "Reference entity \"designers\" does not exist"))
      << unknown;
  const absl::Status unknown_family = status_of("/api/rest/v1/asset-families/none/assets");
  EXPECT_TRUE(IsAkeneoNotFound(unknown_family)) << unknown_family;
  // The products' "YYYY-MM-DD hh:mm:ss" is not the ISO 8601 these lists take.
  const absl::Status space_format =
      status_of(records(R"({"updated":[{"operator":">","value":"2026-01-01 00:00:00"}]})"));
  EXPECT_TRUE(absl::StrContains(space_format.message(), "422")) << space_format;
  const absl::Status other_operator =
      status_of(records(R"({"updated":[{"operator":"=","value":"2026-01-01T00:00:00Z"}]})"));
  EXPECT_TRUE(absl::StrContains(other_operator.message(), "422")) << other_operator;
  const absl::Status not_a_list = status_of(records(R"({"updated":{"operator":">"}})"));
  EXPECT_TRUE(absl::StrContains(not_a_list.message(), "422")) << not_a_list;
  const absl::Status not_json = status_of(records("{updated"));
  EXPECT_TRUE(absl::StrContains(not_json.message(), "400")) << not_json;
  const absl::Status bad_cursor =
      status_of("/api/rest/v1/reference-entities/brands/records?search_after=%25%25");
  EXPECT_TRUE(absl::StrContains(bad_cursor.message(), "422")) << bad_cursor;
  (*client)->Shutdown();
}

TEST(ParseAkeneoTimeTest, OffsetsAndFractions) {
  EXPECT_EQ(*ParseAkeneoTime("2026-11-20T10:14:59+00:00"), 1'795'169'699'000'000);
  EXPECT_EQ(*ParseAkeneoTime("2026-11-20T12:14:59+02:00"), 1'795'169'699'000'000);
  EXPECT_EQ(*ParseAkeneoTime("2026-11-20T10:14:59Z"), 1'795'169'699'000'000);
  EXPECT_EQ(*ParseAkeneoTime("2026-11-20T10:14:59.25Z"), 1'795'169'699'250'000);
  EXPECT_EQ(ParseAkeneoTime("2026-11-20 10:14:59").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseAkeneoTime("yesterday").status().code(), absl::StatusCode::kInvalidArgument);
  absl::StatusOr<AkeneoTimestamp> stamp = ParseAkeneoTimestamp("2026-12-04T15:00:00-05:00");
  ASSERT_TRUE(stamp.ok()) << stamp.status();
  EXPECT_EQ(stamp->offset_seconds, -5 * 3600);
  EXPECT_EQ(stamp->time_us, int64_t{1'796'414'400} * 1'000'000);
  EXPECT_EQ(ParseAkeneoTimestamp("2026-12-04T20:00:00Z")->offset_seconds, 0);
  EXPECT_EQ(ParseAkeneoTimestamp("2026-12-04T20:00:00.5+05:30")->offset_seconds, 19'800);
  // Years RFC 3339 can write, and no others (absl::ParseTime takes any 64-bit year; the
  // reconciler's window arithmetic on a saturated instant could overflow).
  EXPECT_TRUE(ParseAkeneoTimestamp("0001-01-01T00:00:00Z").ok());
  EXPECT_TRUE(ParseAkeneoTimestamp("9999-12-31T23:59:59Z").ok());
  for (const char* text : {"99999999999-01-01T00:00:00Z", "10000-01-01T00:00:00Z",
                           "0000-12-31T23:59:59Z", "-5-01-01T00:00:00Z"}) {
    absl::StatusOr<AkeneoTimestamp> far = ParseAkeneoTimestamp(text);
    EXPECT_EQ(far.status().code(), absl::StatusCode::kInvalidArgument) << text;
  }
  EXPECT_EQ(ParseAkeneoTimestamp("10000-01-01T00:00:00Z").status().message(),
            "\"10000-01-01T00:00:00Z\" is outside the years 0001 to 9999 (UTC)");
}

}  // namespace
}  // namespace pimgate
