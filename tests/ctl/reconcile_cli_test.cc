// Reconciliation end to end: a real pimgate process whose source has `rest` pointing at a
// FakePim (plain HTTP on 127.0.0.1:0), a real recorder plugin, and pimgatectl as a subprocess
// (`reconcile`, `stats`), plus the Reconcile figures in /metrics.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/time_util.h"
#include "pim/akeneo_client.h"
#include "pimgate/v1/admin.pb.h"
#include "tests/testing/cli.h"
#include "tests/testing/fake_pim.h"
#include "tests/testing/test_env.h"

namespace pimgate {
namespace {

using google::protobuf::util::TimeUtil;
using testing::FakePim;
using testing::HttpClient;
using testing::PimgateProcess;
using testing::TempDir;

constexpr char kToken[] = "reconcile-cli-token";
constexpr char kSecret[] = "reconcile-legacy-secret";
constexpr int64_t kSecondUs = 1'000'000;

using Result = testing::CommandResult;
using testing::ParseJson;
using testing::WaitFor;

std::string ReadAll(const std::string& path) { return testing::ReadWholeFile(path); }

// The value of the row named `name` in pimgatectl's FIGURE/VALUE table ("" when absent).
std::string Row(const std::string& out, const std::string& name) {
  for (absl::string_view line : absl::StrSplit(out, '\n')) {
    if (!absl::StartsWith(line, name + "  ")) continue;
    line.remove_prefix(name.size());
    while (!line.empty() && line.front() == ' ') line.remove_prefix(1);
    return std::string(line);
  }
  return "";
}

int64_t DayAgoUs() { return (absl::ToUnixSeconds(absl::Now()) - 24 * 3600) * kSecondUs; }

std::string AkeneoTime(int64_t us) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%S+00:00", absl::FromUnixMicros(us), absl::UTCTimeZone());
}

// A recorded delivery: "type resource_id".
struct Delivery {
  std::string type;
  std::string resource_id;
};

class ReconcileCliTest : public ::testing::Test {
 protected:
  // More `reconcile` keys (indented six spaces), set by a subclass before SetUp.
  std::string reconcile_extra_;

  void SetUp() override {
    FakePim::Options options;
    options.tls = false;
    pim_ = std::make_unique<FakePim>(options);
    t0_ = DayAgoUs();
    for (int i = 0; i < 3; ++i) {
      uuids_.push_back(testing::NewUuid());
      pim_->PutProduct(uuids_[i], t0_ + i * kSecondUs, R"({"family":"shoes"})");
    }
    pim_->PutProductModel("model-a", t0_ + 5 * kSecondUs);

    std::ofstream(dir_.File("token")) << kToken << "\n";
    std::ofstream(dir_.File("pim-password")) << "pim-password\n";
    std::ostringstream yaml;
    yaml << "gateway:\n  listen: 127.0.0.1:0\n  threads: 2\n"
         << "store:\n  path: " << dir_.File("store") << "\n"
         << "sources:\n"
         << "  - name: legacy\n    kind: events_api\n    path: /hooks/legacy\n    secret: "
         << kSecret << "\n"
         << "    rest:\n      base_url: " << pim_->base_url() << "\n"
         << "      client_id: pim-client\n      secret: ${RECONCILE_TEST_PIM_SECRET}\n"
         << "      username: pim-user\n      password: file:" << dir_.File("pim-password") << "\n"
         << "      allow_insecure_http: true\n      max_attempts: 1\n      timeout: 2s\n"
         << "    reconcile:\n      interval: 0s\n      overlap: 5m\n"
         << reconcile_extra_
         << "  - {name: plain, kind: events_api, path: /hooks/plain, secret: other-secret}\n"
         << "plugins:\n  - name: rec\n    command: [\"" << PIMGATE_E2E_RECORDER << "\"]\n"
         << "    env:\n      RECORDER_OUT: " << dir_.File("rec.jsonl") << "\n"
         << "    ack_timeout: 5s\n    start_timeout: 20s\n    stop_timeout: 3s\n"
         << "admin:\n  listen: 127.0.0.1:0\n  token: file:" << dir_.File("token") << "\n"
         << "metrics:\n  listen: 127.0.0.1:0\n";
    std::ofstream(dir_.File("pimgate.yaml")) << yaml.str();
    Start();
  }

  void TearDown() override {
    if (pimgate_) {
      EXPECT_EQ(pimgate_->Terminate(), 0);
    }
  }

  void Start() {
    std::remove(dir_.File("ready.json").c_str());
    pimgate_ = std::make_unique<PimgateProcess>(dir_.File("pimgate.yaml"), dir_.File("ready.json"),
                                                std::vector<std::pair<std::string, std::string>>{
                                                    {"RECONCILE_TEST_PIM_SECRET", "pim-secret"}});
    gateway_port_ = pimgate_->WaitReady();
    ASSERT_NE(gateway_port_, 0) << "pimgate did not start";
    const std::string ready = ReadAll(dir_.File("ready.json"));
    admin_port_ = Port(ready, "admin_port");
    metrics_port_ = Port(ready, "metrics_port");
    ASSERT_GT(admin_port_, 0) << ready;
    ASSERT_GT(metrics_port_, 0) << ready;
  }

  static int Port(const std::string& ready, const std::string& name) {
    const std::size_t pos = ready.find("\"" + name + "\":");
    return pos == std::string::npos ? 0 : std::stoi(ready.substr(pos + name.size() + 3));
  }

  Result Ctl(const std::vector<std::string>& args) {
    return testing::RunPimgatectl(PIMGATECTL_BINARY, admin_port_, kToken, args, dir_.path());
  }

  std::string Ok(const std::vector<std::string>& args) {
    Result result = Ctl(args);
    EXPECT_EQ(result.exit_code, 0) << absl::StrJoin(args, " ") << "\n" << result.err;
    return result.out;
  }

  v1::ReconciliationStats Reconciliation() {
    auto stats = ParseJson<v1::GetStatsResponse>(Ok({"stats", "--json"}));
    EXPECT_EQ(stats.reconciliations_size(), 1);  // `plain` has no `rest`
    return stats.reconciliations_size() > 0 ? stats.reconciliations(0) : v1::ReconciliationStats();
  }

  std::vector<Delivery> Deliveries() {
    std::vector<Delivery> out;
    const std::vector<std::string> lines =
        absl::StrSplit(ReadAll(dir_.File("rec.jsonl")), '\n', absl::SkipEmpty());
    for (const std::string& line : lines) {
      if (line.back() != '}') continue;
      const auto field = [&line](const std::string& name) {
        std::size_t pos = line.find("\"" + name + "\":\"");
        if (pos == std::string::npos) return std::string();
        pos += name.size() + 4;
        return line.substr(pos, line.find('"', pos) - pos);
      };
      out.push_back({field("type"), field("resource_id")});
    }
    return out;
  }

  int PostLegacy(const std::string& uuid, int64_t updated_us) {
    const std::string body = testing::LegacyBatch({testing::LegacyProductEvent(
        "product.updated", testing::NewUuid(), uuid, AkeneoTime(updated_us))});
    HttpClient client(gateway_port_, /*tls=*/false);
    return client.Send("POST", "/hooks/legacy", body, testing::LegacyHeaders(kSecret, body)).status;
  }

  std::string Metrics() {
    HttpClient client(static_cast<uint16_t>(metrics_port_), /*tls=*/false);
    return client.Send("GET", "/metrics", "").body;
  }

  TempDir dir_;
  std::unique_ptr<FakePim> pim_;
  int64_t t0_ = 0;
  std::vector<std::string> uuids_;
  std::unique_ptr<PimgateProcess> pimgate_;
  uint16_t gateway_port_ = 0;
  int admin_port_ = 0;
  int metrics_port_ = 0;
};

TEST_F(ReconcileCliTest, ReconcileRecoversMissedChangesStatsShowThemAndFullFindsDeletions) {
  // Nothing reconciled yet (interval 0: on demand only).
  v1::ReconciliationStats before = Reconciliation();
  EXPECT_EQ(before.source(), "legacy");
  EXPECT_FALSE(before.has_last_finished_at());
  EXPECT_FALSE(before.has_next_run_at());
  EXPECT_TRUE(absl::StrContains(Ok({"stats"}), "on demand"));

  // The first product reached pimgate by webhook, with the PIM's `updated`.
  ASSERT_EQ(PostLegacy(uuids_[0], t0_), 200);
  ASSERT_TRUE(WaitFor([&] { return Deliveries().size() == 1; }));

  // The others were missed: reconciliation adds them, and only them.
  Result first = Ctl({"reconcile", "legacy"});
  ASSERT_EQ(first.exit_code, 0) << first.err;
  EXPECT_TRUE(absl::StrContains(first.out, "reconciliation of legacy (run 1) added 3 event(s)"))
      << first.out;
  EXPECT_EQ(Row(first.out, "scanned"), "4") << first.out;
  EXPECT_EQ(Row(first.out, "emitted (updated)"), "3") << first.out;
  EXPECT_EQ(Row(first.out, "in sync"), "1") << first.out;
  EXPECT_EQ(Row(first.out, "api calls"), "2") << first.out;
  EXPECT_EQ(Row(first.out, "window"), "everything") << first.out;
  EXPECT_EQ(
      Row(first.out, "watermark"),
      absl::StrCat(absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ",
                                    absl::FromUnixMicros(t0_ + 5 * kSecondUs), absl::UTCTimeZone()),
                   " (advanced)"))
      << first.out;
  ASSERT_TRUE(WaitFor([&] { return Deliveries().size() == 4; }));
  std::vector<Delivery> delivered = Deliveries();
  std::vector<std::string> recovered;
  for (std::size_t i = 1; i < delivered.size(); ++i) {
    recovered.push_back(delivered[i].type + " " + delivered[i].resource_id);
  }
  std::sort(recovered.begin(), recovered.end());
  std::vector<std::string> expected = {"product.updated " + uuids_[1],
                                       "product.updated " + uuids_[2],
                                       "product_model.updated model-a"};
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(recovered, expected);

  // In sync now: nothing added, nothing delivered.
  auto again = ParseJson<v1::ReconcileResponse>(Ok({"reconcile", "legacy", "--json"}));
  EXPECT_EQ(again.run(), 2u);
  EXPECT_EQ(again.events_added(), 0u);
  EXPECT_EQ(again.emitted(), 0u);
  EXPECT_EQ(again.in_sync(), again.scanned());
  EXPECT_EQ(again.api_calls(), 2u);
  EXPECT_EQ(TimeUtil::TimestampToMicroseconds(again.window_start()),
            t0_ + 5 * kSecondUs - 5 * 60 * kSecondUs);
  EXPECT_FALSE(again.watermark_advanced());
  // The fake PIM runs at UTC-05:00. Its values (all later than the window start) do not yet
  // confirm that offset at the window start: written 2 h further west, the window only widens.
  EXPECT_EQ(again.filter_time_zone(), "-07:00");
  EXPECT_EQ(again.updated_filter(), AkeneoSearchTime(t0_ + 5 * kSecondUs - 5 * 60 * kSecondUs,
                                                     absl::FixedTimeZone(-7 * 3600)));
  EXPECT_EQ(again.products_path(), "/api/rest/v1/products-uuid");
  const std::string text = Ok({"reconcile", "legacy"});
  EXPECT_TRUE(absl::StrContains(Row(text, "window"),
                                absl::StrCat("(PIM time ", again.updated_filter(), " -07:00)")))
      << text;

  v1::ReconciliationStats stats = Reconciliation();
  EXPECT_EQ(stats.runs_succeeded(), 3u);
  EXPECT_EQ(stats.runs_failed(), 0u);
  EXPECT_TRUE(stats.last_ok());
  EXPECT_TRUE(stats.has_last_finished_at());
  EXPECT_EQ(stats.last_emitted(), 0u);
  EXPECT_EQ(stats.events_emitted(), 3u);
  EXPECT_EQ(TimeUtil::TimestampToMicroseconds(stats.watermark()), t0_ + 5 * kSecondUs);
  EXPECT_EQ(stats.pim_time_zone(), "-05:00");
  EXPECT_EQ(stats.pim_time_zone_origin(), "learned");
  EXPECT_EQ(stats.filter_utc_offset(), "-07:00");
  EXPECT_EQ(stats.products_path(), "/api/rest/v1/products-uuid");
  const std::string table = Ok({"stats"});
  EXPECT_TRUE(absl::StrContains(table, "RECONCILE")) << table;
  EXPECT_TRUE(absl::StrContains(table, "3/0")) << table;
  EXPECT_TRUE(absl::StrContains(table, "PIM TIME ZONE")) << table;
  EXPECT_TRUE(absl::StrContains(table, "-05:00 (learned; window widened: filter -07:00)")) << table;
  EXPECT_TRUE(absl::StrContains(table, "products-uuid")) << table;

  // A product deleted in the PIM: only --full sees it.
  pim_->DeleteProduct(uuids_[2]);
  EXPECT_EQ(ParseJson<v1::ReconcileResponse>(Ok({"reconcile", "legacy", "--json"})).deleted(), 0u);
  auto full = ParseJson<v1::ReconcileResponse>(Ok({"reconcile", "legacy", "--full", "--json"}));
  EXPECT_TRUE(full.full());
  EXPECT_EQ(full.deleted(), 1u);
  EXPECT_EQ(full.events_added(), 1u);
  EXPECT_EQ(full.scanned(), 3u);
  ASSERT_TRUE(WaitFor([&] { return Deliveries().size() == 5; }));
  EXPECT_EQ(Deliveries().back().type, "product.deleted");
  EXPECT_EQ(Deliveries().back().resource_id, uuids_[2]);

  // Refusals: unknown source (4), a source without `rest` (1), --full with --since (1).
  Result unknown = Ctl({"reconcile", "erp"});
  EXPECT_EQ(unknown.exit_code, 4);
  EXPECT_TRUE(absl::StrContains(unknown.err, "NOT_FOUND: no source named \"erp\"")) << unknown.err;
  Result plain = Ctl({"reconcile", "plain"});
  EXPECT_EQ(plain.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(plain.err, "FAILED_PRECONDITION: source plain has no `rest`"))
      << plain.err;
  Result both = Ctl({"reconcile", "legacy", "--full", "--since", "1h"});
  EXPECT_EQ(both.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(both.err, "INVALID_ARGUMENT")) << both.err;

  // The PIM goes down: the run fails (exit 1, not "pimgate unreachable"), is recorded, and
  // webhooks are still taken and delivered.
  pim_->Stop();
  Result down = Ctl({"reconcile", "legacy"});
  EXPECT_EQ(down.exit_code, 1) << down.err;
  // UNAVAILABLE (refused) or DEADLINE_EXCEEDED (a kept-alive connection that no longer answers).
  EXPECT_TRUE(absl::StrContains(down.err, ": reconciliation of legacy failed (scanned 0"))
      << down.err;
  EXPECT_FALSE(absl::StrContains(down.err, "is pimgate running")) << down.err;
  stats = Reconciliation();
  EXPECT_FALSE(stats.last_ok());
  EXPECT_FALSE(stats.last_error().empty());
  EXPECT_EQ(stats.runs_failed(), 1u);
  EXPECT_TRUE(absl::StrContains(Ok({"stats"}), "failed")) << Ok({"stats"});
  const std::string during = testing::NewUuid();
  ASSERT_EQ(PostLegacy(during, t0_), 200);
  ASSERT_TRUE(WaitFor([&] { return Deliveries().size() == 6; }));

  const std::string metrics = Metrics();
  EXPECT_TRUE(absl::StrContains(
      metrics, "pimgate_reconciliation_runs_total{source=\"legacy\",result=\"success\"} 5"))
      << metrics;
  EXPECT_TRUE(absl::StrContains(
      metrics, "pimgate_reconciliation_runs_total{source=\"legacy\",result=\"failure\"} 1"));
  EXPECT_TRUE(absl::StrContains(
      metrics,
      "pimgate_reconciliation_events_emitted_total{source=\"legacy\",change=\"deleted\"} 1"));
  EXPECT_TRUE(
      absl::StrContains(metrics, "pimgate_reconciliation_last_run_succeeded{source=\"legacy\"} 0"));

  // Restart with the PIM still down: pimgate starts and ingests; the watermark was persisted.
  EXPECT_EQ(pimgate_->Terminate(), 0);
  pimgate_.reset();
  Start();
  ASSERT_EQ(PostLegacy(testing::NewUuid(), t0_), 200);
  stats = Reconciliation();
  EXPECT_EQ(TimeUtil::TimestampToMicroseconds(stats.watermark()), t0_ + 5 * kSecondUs);
  EXPECT_EQ(stats.runs_succeeded(), 0u);  // counters are per process
  pim_->Resume();
  auto resumed = ParseJson<v1::ReconcileResponse>(Ok({"reconcile", "legacy", "--json"}));
  EXPECT_EQ(resumed.run(), 7u);  // run numbers continue across restarts
  EXPECT_EQ(resumed.emitted(), 0u);
}

}  // namespace
// The catalogue structure kinds, through pimgatectl: each kind's figures and watermark, the
// events delivered to the plugin like any other.
class ReconcileCliStructureTest : public ReconcileCliTest {
 protected:
  void SetUp() override {
    reconcile_extra_ = "      categories: true\n      families: true\n";
    ReconcileCliTest::SetUp();
  }
};

TEST_F(ReconcileCliStructureTest, ReconcileListsCategoriesAndFamiliesWithTheirOwnWatermarks) {
  pim_->PutListedResource("category", "master", t0_ + 7 * kSecondUs);
  pim_->PutListedResource("family", "shoes", t0_ + 8 * kSecondUs);
  Result first = Ctl({"reconcile", "legacy"});
  ASSERT_EQ(first.exit_code, 0) << first.err;
  EXPECT_TRUE(absl::StrContains(first.out, "added 6 event(s)")) << first.out;
  const auto watermark_of = [](int64_t us) {
    return absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::FromUnixMicros(us), absl::UTCTimeZone());
  };
  EXPECT_EQ(Row(first.out, "category"),
            absl::StrCat("scanned 1, emitted 1, everything, watermark ",
                         watermark_of(t0_ + 7 * kSecondUs), " (advanced)"))
      << first.out;
  EXPECT_EQ(Row(first.out, "family"),
            absl::StrCat("scanned 1, emitted 1, everything, watermark ",
                         watermark_of(t0_ + 8 * kSecondUs), " (advanced)"))
      << first.out;
  ASSERT_TRUE(WaitFor([&] { return Deliveries().size() == 6; }));
  std::set<std::string> delivered;
  for (const Delivery& d : Deliveries()) delivered.insert(d.type + " " + d.resource_id);
  EXPECT_TRUE(delivered.contains("category.updated master"));
  EXPECT_TRUE(delivered.contains("family.updated shoes"));

  // A category changes: the next run asks each list for what changed after its own watermark
  // and adds only that category.
  pim_->PutListedResource("category", "master", t0_ + 20 * kSecondUs);
  auto again = ParseJson<v1::ReconcileResponse>(Ok({"reconcile", "legacy", "--json"}));
  EXPECT_EQ(again.events_added(), 1u);
  ASSERT_EQ(again.kinds_size(), 2);
  EXPECT_EQ(again.kinds(0).kind(), "family");
  EXPECT_EQ(again.kinds(0).emitted(), 0u);
  EXPECT_FALSE(again.kinds(0).watermark_advanced());
  EXPECT_FALSE(again.kinds(0).updated_filter().empty());
  EXPECT_EQ(again.kinds(1).kind(), "category");
  EXPECT_EQ(again.kinds(1).emitted(), 1u);
  EXPECT_TRUE(again.kinds(1).watermark_advanced());
  EXPECT_EQ(TimeUtil::TimestampToMicroseconds(again.kinds(1).watermark()), t0_ + 20 * kSecondUs);
  ASSERT_TRUE(WaitFor([&] { return Deliveries().size() == 7; }));
  EXPECT_EQ(Deliveries().back().type, "category.updated");
  // stats still work.
  v1::ReconciliationStats stats = Reconciliation();
  EXPECT_EQ(stats.runs_succeeded(), 2u);
  EXPECT_EQ(stats.events_emitted(), 7u);
  EXPECT_TRUE(absl::StrContains(Ok({"stats"}), "RECONCILE"));
}

}  // namespace pimgate

namespace pimgate {
namespace {

// Reference entity records and assets (Enterprise Edition), through pimgatectl: their rows, the
// events delivered, and a kind the PIM refuses told as such without failing the run.
class ReconcileCliEnterpriseTest : public ReconcileCliTest {
 protected:
  void SetUp() override {
    reconcile_extra_ = "      reference_entity_records: true\n      assets: true\n";
    ReconcileCliTest::SetUp();
  }
};

TEST_F(ReconcileCliEnterpriseTest, ReconcileListsRecordsAndAssetsPerParent) {
  pim_->PutListedResource("reference_entity_record", "brands/kartell", t0_ + 7 * kSecondUs);
  pim_->PutListedResource("reference_entity_record", "designers/starck", t0_ + 8 * kSecondUs);
  pim_->PutListedResource("asset", "packshots/shoe_1", t0_ + 9 * kSecondUs);
  Result first = Ctl({"reconcile", "legacy"});
  ASSERT_EQ(first.exit_code, 0) << first.err;
  const auto watermark_of = [](int64_t us) {
    return absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::FromUnixMicros(us), absl::UTCTimeZone());
  };
  EXPECT_EQ(Row(first.out, "reference_entity_record"),
            absl::StrCat("scanned 2 in 2 reference entities, emitted 2, everything, watermark ",
                         watermark_of(t0_ + 8 * kSecondUs), " (advanced)"))
      << first.out;
  EXPECT_EQ(Row(first.out, "asset"),
            absl::StrCat("scanned 1 in 1 asset families, emitted 1, everything, watermark ",
                         watermark_of(t0_ + 9 * kSecondUs), " (advanced)"))
      << first.out;
  ASSERT_TRUE(WaitFor([&] {
    std::set<std::string> delivered;
    for (const Delivery& d : Deliveries()) delivered.insert(d.type + " " + d.resource_id);
    return delivered.contains("reference_entity_record.updated brands/kartell") &&
           delivered.contains("reference_entity_record.updated designers/starck") &&
           delivered.contains("asset.updated packshots/shoe_1");
  }));

  // The connection may no longer list asset families: that row says why; the run succeeds.
  testing::FakePim::Fault forbidden;
  forbidden.status = 403;
  forbidden.message = "Access forbidden.";
  forbidden.path = "/api/rest/v1/asset-families";
  pim_->InjectFault(forbidden);
  Result second = Ctl({"reconcile", "legacy"});
  ASSERT_EQ(second.exit_code, 0) << second.err;
  EXPECT_TRUE(absl::StartsWith(Row(second.out, "asset"),
                               "not reconciled: the PIM refuses "
                               "/api/rest/v1/asset-families"))
      << second.out;
}

}  // namespace
}  // namespace pimgate
