// The exposition format, the latency histogram, the registry and every pimgate metric family,
// rendered from fake snapshots: checked line by line, then by promtool.
#include "metrics/metrics.h"

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "metrics/gateway_metrics.h"
#include "metrics/metrics_collectors.h"
#include "tests/metrics/exposition_check.h"

namespace pimgate {
namespace {

using testing::ParsedExposition;
using testing::ParseExposition;

std::string ErrorsOf(const ParsedExposition& parsed) {
  std::string out;
  for (const std::string& e : parsed.errors) out += e + "\n";
  return out;
}

TEST(MetricsWriter, EscapesLabelValuesAndHelp) {
  MetricsWriter w;
  w.Family("pimgate_test_total", "Help with a \\ backslash\nand a newline.", MetricType::kCounter);
  w.Sample({{"source", "we\"ird\\na\nme"}}, uint64_t{3});
  const std::string text = w.Take();
  EXPECT_EQ(text,
            "# HELP pimgate_test_total Help with a \\\\ backslash\\nand a newline.\n"
            "# TYPE pimgate_test_total counter\n"
            "pimgate_test_total{source=\"we\\\"ird\\\\na\\nme\"} 3\n");
  const ParsedExposition parsed = ParseExposition(text);
  ASSERT_TRUE(parsed.errors.empty()) << ErrorsOf(parsed);
  ASSERT_EQ(parsed.samples.size(), 1u);
  EXPECT_EQ(parsed.samples[0].labels.at("source"), "we\"ird\\na\nme");
}

TEST(MetricsWriter, FormatsValuesAsTheTextFormatSpellsThem) {
  EXPECT_EQ(MetricsWriter::FormatValue(0), "0");
  EXPECT_EQ(MetricsWriter::FormatValue(604800), "604800");
  EXPECT_EQ(MetricsWriter::FormatValue(-3), "-3");
  EXPECT_EQ(MetricsWriter::FormatValue(0.0005), "0.0005");
  EXPECT_EQ(MetricsWriter::FormatValue(2.5), "2.5");
  EXPECT_EQ(MetricsWriter::FormatValue(1.0 / 3), "0.3333333333333333");
  EXPECT_EQ(MetricsWriter::FormatValue(1e300), "1e+300");
  EXPECT_EQ(MetricsWriter::FormatValue(HUGE_VAL), "+Inf");
  EXPECT_EQ(MetricsWriter::FormatValue(-HUGE_VAL), "-Inf");
  EXPECT_EQ(MetricsWriter::FormatValue(std::nan("")), "NaN");
}

TEST(LatencyHistogram, BucketsAreUpperInclusiveAndRenderCumulative) {
  LatencyHistogram h;
  h.Observe(std::chrono::microseconds(500));  // exactly the first bound: in le="0.0005"
  h.Observe(std::chrono::milliseconds(3));    // (0.0025, 0.005]
  h.Observe(std::chrono::milliseconds(3));
  h.Observe(std::chrono::milliseconds(499));  // under the Events API budget
  h.Observe(std::chrono::seconds(20));        // above every bound
  const HistogramSnapshot snapshot = h.Snapshot();
  EXPECT_EQ(snapshot.count(), 5u);
  EXPECT_NEAR(snapshot.sum, 0.0005 + 0.003 + 0.003 + 0.499 + 20, 1e-9);
  ASSERT_EQ(snapshot.counts.size(), LatencyHistogram::kBoundsSeconds.size() + 1);
  EXPECT_EQ(snapshot.counts.front(), 1u);
  EXPECT_EQ(snapshot.counts.back(), 1u);

  MetricsWriter w;
  w.Family("pimgate_x_seconds", "x", MetricType::kHistogram);
  w.Histogram({{"source", "s"}}, snapshot);
  const ParsedExposition parsed = ParseExposition(w.Take());
  ASSERT_TRUE(parsed.errors.empty()) << ErrorsOf(parsed);
  EXPECT_EQ(parsed.Value("pimgate_x_seconds_bucket", {{"source", "s"}, {"le", "0.0005"}}), 1);
  EXPECT_EQ(parsed.Value("pimgate_x_seconds_bucket", {{"source", "s"}, {"le", "0.005"}}), 3);
  EXPECT_EQ(parsed.Value("pimgate_x_seconds_bucket", {{"source", "s"}, {"le", "0.5"}}), 4);
  EXPECT_EQ(parsed.Value("pimgate_x_seconds_bucket", {{"source", "s"}, {"le", "10"}}), 4);
  EXPECT_EQ(parsed.Value("pimgate_x_seconds_bucket", {{"source", "s"}, {"le", "+Inf"}}), 5);
  EXPECT_EQ(parsed.Value("pimgate_x_seconds_count", {{"source", "s"}}), 5);
}

TEST(LatencyHistogram, ConcurrentObserversLoseNothing) {
  LatencyHistogram h;
  constexpr int kThreads = 4;
  constexpr int kEach = 20'000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&h, t] {
      for (int i = 0; i < kEach; ++i) h.Observe(std::chrono::microseconds(100 * (t + 1)));
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(h.Snapshot().count(), static_cast<uint64_t>(kThreads * kEach));
  EXPECT_NEAR(h.Snapshot().sum, kEach * (0.0001 + 0.0002 + 0.0003 + 0.0004), 1e-6);
}

// Fake snapshots covering every family and the corner cases (quotes in names, an external
// plugin, a plugin known to only one of supervisor and dispatcher, an unknown dispatch state).
GatewayStats FakeGateway() {
  GatewayStats stats;
  GatewayStats::Source& legacy = stats.sources.emplace_back();
  legacy.name = "akeneo";
  legacy.requests_by_code = {{200, 7}, {401, 2}, {0, 1}};
  legacy.events_accepted = 42;
  legacy.duplicates = 3;
  legacy.stale = 1;
  legacy.quarantined = 2;
  LatencyHistogram h;
  h.Observe(std::chrono::milliseconds(2));
  h.Observe(std::chrono::milliseconds(700));
  legacy.latency = h.Snapshot();
  GatewayStats::Source& odd = stats.sources.emplace_back();
  odd.name = "quo\"ted\\name";
  odd.latency = LatencyHistogram().Snapshot();
  stats.unrouted_by_code = {{404, 5}, {408, 1}};
  stats.connections_open = 3;
  stats.connections_refused = 9;
  stats.buffered_bytes = 5 << 20;
  stats.max_buffered_bytes = 256 << 20;
  stats.body_waits = 4;
  stats.refusals = {{"max_connections", 9}, {"evicted", 6}, {"buffer_budget", 1}};
  return stats;
}

std::vector<PluginStatus> FakeProcesses() {
  std::vector<PluginStatus> p(3);
  p[0].name = "erp";
  p[0].state = PluginState::kServing;
  p[0].restarts = 2;
  p[1].name = "relay";
  p[1].state = PluginState::kExternal;
  p[2].name = "crashy";
  p[2].state = PluginState::kBackoff;
  p[2].last_error = "exited with status 3";
  return p;
}

std::vector<PluginDispatchStats> FakeDispatch() {
  std::vector<PluginDispatchStats> d(3);
  d[0].name = "erp";
  d[0].state = "streaming";
  d[0].cursor = 90;
  d[0].lag = 10;
  d[0].in_flight = 4;
  d[0].delivered = 80;
  d[0].retried = 6;
  d[0].dead_lettered = 1;
  d[0].skipped_filter = 5;
  d[0].skipped_stale = 4;
  d[0].connects = 2;
  d[1].name = "relay";
  d[1].state = "idle";  // caught up, its stream open: up
  d[1].stream_open = true;
  d[2].name = "crashy";
  d[2].state = "reconnecting-later";  // a state this code does not know yet
  return d;
}

MetricsRegistry& FakeRegistry(MetricsRegistry& registry) {
  registry.SetCollector("log", [](MetricsWriter& out) {
    LogMetricsSnapshot log;
    log.head = 100;
    log.oldest_sequence = 11;
    log.events = 90;
    log.oldest_received_at_us = 1'800'000'000'123'456;
    log.disk_bytes = 123456789;
    log.pending_requests = 2;
    WriteLogMetrics(log, out);
  });
  registry.SetCollector("plugins", [](MetricsWriter& out) {
    WritePluginMetrics(FakeProcesses(), FakeDispatch(), out);
  });
  registry.SetCollector("gateway",
                        [](MetricsWriter& out) { WriteGatewayMetrics(FakeGateway(), out); });
  registry.SetCollector("retention", [](MetricsWriter& out) {
    RetentionStats stats;
    stats.runs = 12;
    stats.events_trimmed = 1000;
    stats.dead_letters_trimmed = 3;
    stats.last_run = absl::FromUnixSeconds(1'800'000'000);
    WriteRetentionMetrics(stats, out);
  });
  registry.SetCollector("reconciliation", [](MetricsWriter& out) {
    std::vector<ReconcileSourceStats> sources(3);
    sources[0].source = "akeneo";
    sources[1].source = "quo\"ted\\name";
    ReconcileSourceStats& pim = sources[2];
    pim.source = "pim";
    pim.configured = true;
    pim.runs_succeeded = 4;
    pim.runs_failed = 1;
    pim.items_scanned = 250;
    pim.events_emitted = 7;
    pim.deletions_emitted = 2;
    pim.in_sync = 243;
    pim.api_calls = 9;
    pim.last_success = absl::FromUnixSeconds(1'800'000'100);
    pim.watermark_us = int64_t{1'800'000'050'000'000};
    pim.kind_watermarks_us["asset"] = int64_t{1'800'000'040'000'000};
    ReconcileRunStats last;
    last.started_at = absl::FromUnixSeconds(1'800'000'000);
    last.finished_at = last.started_at + absl::Milliseconds(1500);
    last.status = absl::UnavailableError("PIM unreachable");
    pim.last_run = last;
    WriteReconciliationMetrics(sources, out);
  });
  return registry;
}

TEST(PimgateMetrics, EveryFamilyRendersWellFormedWithTheExpectedSeries) {
  MetricsRegistry registry;
  const std::string text = FakeRegistry(registry).Render();
  const ParsedExposition m = ParseExposition(text);
  ASSERT_TRUE(m.errors.empty()) << ErrorsOf(m) << "\n" << text;

  // Ingest.
  EXPECT_EQ(m.Value("pimgate_ingest_requests_total", {{"source", "akeneo"}, {"code", "200"}}), 7);
  EXPECT_EQ(m.Value("pimgate_ingest_requests_total", {{"source", "akeneo"}, {"code", "401"}}), 2);
  EXPECT_EQ(m.Value("pimgate_ingest_unrouted_requests_total", {{"code", "404"}}), 5);
  EXPECT_EQ(m.Value("pimgate_ingest_request_duration_seconds_bucket",
                    {{"source", "akeneo"}, {"le", "0.0025"}}),
            1);
  EXPECT_EQ(m.Value("pimgate_ingest_request_duration_seconds_bucket",
                    {{"source", "akeneo"}, {"le", "0.5"}}),
            1);
  EXPECT_EQ(m.Value("pimgate_ingest_request_duration_seconds_count", {{"source", "akeneo"}}), 2);
  EXPECT_EQ(
      m.Value("pimgate_ingest_request_duration_seconds_count", {{"source", "quo\"ted\\name"}}), 0);
  EXPECT_EQ(m.Value("pimgate_events_accepted_total", {{"source", "akeneo"}}), 42);
  EXPECT_EQ(m.Value("pimgate_events_duplicate_total", {{"source", "akeneo"}}), 3);
  EXPECT_EQ(m.Value("pimgate_events_stale_total", {{"source", "akeneo"}}), 1);
  EXPECT_EQ(m.Value("pimgate_events_quarantined_total", {{"source", "akeneo"}}), 2);
  EXPECT_EQ(m.Value("pimgate_gateway_connections_open"), 3);
  EXPECT_EQ(m.Value("pimgate_gateway_connections_refused_total"), 9);
  EXPECT_EQ(m.Value("pimgate_gateway_buffered_bytes"), 5 << 20);
  EXPECT_EQ(m.Value("pimgate_gateway_max_buffered_bytes"), 256 << 20);
  EXPECT_EQ(m.Value("pimgate_gateway_body_waits"), 4);
  EXPECT_EQ(m.Value("pimgate_gateway_refusals_total", {{"reason", "max_connections"}}), 9);
  EXPECT_EQ(m.Value("pimgate_gateway_refusals_total", {{"reason", "evicted"}}), 6);
  EXPECT_EQ(m.Value("pimgate_gateway_refusals_total", {{"reason", "buffer_budget"}}), 1);
  // Every reason is exported from the start, at 0, so a rate() over it never starts missing.
  EXPECT_EQ(m.Value("pimgate_gateway_refusals_total", {{"reason", "client_connections"}}), 0);
  EXPECT_EQ(m.Value("pimgate_gateway_refusals_total", {{"reason", "client_buffer_budget"}}), 0);

  // Log.
  EXPECT_EQ(m.Value("pimgate_log_head_sequence"), 100);
  EXPECT_EQ(m.Value("pimgate_log_oldest_sequence"), 11);
  EXPECT_EQ(m.Value("pimgate_log_events"), 90);
  EXPECT_EQ(m.Value("pimgate_log_disk_bytes"), 123456789);
  EXPECT_NEAR(m.Value("pimgate_log_oldest_event_received_timestamp_seconds").value_or(0),
              1'800'000'000.123456, 1e-3);
  EXPECT_EQ(m.Value("pimgate_log_pending_requests"), 2);

  // Plugins.
  EXPECT_EQ(m.Value("pimgate_plugin_cursor", {{"plugin", "erp"}}), 90);
  EXPECT_EQ(m.Value("pimgate_plugin_lag_events", {{"plugin", "erp"}}), 10);
  EXPECT_EQ(m.Value("pimgate_plugin_in_flight", {{"plugin", "erp"}}), 4);
  EXPECT_EQ(m.Value("pimgate_plugin_delivered_total", {{"plugin", "erp"}}), 80);
  EXPECT_EQ(m.Value("pimgate_plugin_retried_total", {{"plugin", "erp"}}), 6);
  EXPECT_EQ(m.Value("pimgate_plugin_dead_lettered_total", {{"plugin", "erp"}}), 1);
  EXPECT_EQ(m.Value("pimgate_plugin_skipped_total", {{"plugin", "erp"}, {"reason", "filter"}}), 5);
  EXPECT_EQ(m.Value("pimgate_plugin_skipped_total", {{"plugin", "erp"}, {"reason", "stale"}}), 4);
  EXPECT_EQ(m.Value("pimgate_plugin_restarts_total", {{"plugin", "erp"}}), 2);
  EXPECT_EQ(m.Value("pimgate_plugin_stream_connects_total", {{"plugin", "erp"}}), 2);
  EXPECT_EQ(m.Value("pimgate_plugin_up", {{"plugin", "erp"}}), 1);
  EXPECT_EQ(m.Value("pimgate_plugin_up", {{"plugin", "relay"}}), 1);  // external, stream open
  EXPECT_EQ(m.Value("pimgate_plugin_up", {{"plugin", "crashy"}}), 0);
  EXPECT_EQ(m.Value("pimgate_plugin_state", {{"plugin", "erp"}, {"state", "serving"}}), 1);
  EXPECT_EQ(m.Value("pimgate_plugin_state", {{"plugin", "erp"}, {"state", "backoff"}}), 0);
  EXPECT_EQ(m.Value("pimgate_plugin_state", {{"plugin", "crashy"}, {"state", "backoff"}}), 1);
  EXPECT_EQ(m.Value("pimgate_plugin_dispatch_state", {{"plugin", "erp"}, {"state", "streaming"}}),
            1);
  EXPECT_EQ(m.Value("pimgate_plugin_dispatch_state",
                    {{"plugin", "crashy"}, {"state", "reconnecting-later"}}),
            1);
  EXPECT_EQ(m.Value("pimgate_plugin_dispatch_state", {{"plugin", "crashy"}, {"state", "idle"}}), 0);

  // Retention and reconciliation.
  EXPECT_EQ(m.Value("pimgate_retention_runs_total"), 12);
  EXPECT_EQ(m.Value("pimgate_retention_removed_total", {{"kind", "event"}}), 1000);
  EXPECT_EQ(m.Value("pimgate_retention_removed_total", {{"kind", "dead_letter"}}), 3);
  EXPECT_EQ(m.Value("pimgate_retention_removed_total", {{"kind", "quarantine"}}), 0);
  EXPECT_EQ(m.Value("pimgate_retention_last_run_timestamp_seconds"), 1'800'000'000);
  EXPECT_EQ(
      m.Value("pimgate_reconciliation_runs_total", {{"source", "akeneo"}, {"result", "success"}}),
      0);
  EXPECT_EQ(m.Value("pimgate_reconciliation_runs_total",
                    {{"source", "quo\"ted\\name"}, {"result", "failure"}}),
            0);
  EXPECT_EQ(
      m.Value("pimgate_reconciliation_runs_total", {{"source", "pim"}, {"result", "success"}}), 4);
  EXPECT_EQ(
      m.Value("pimgate_reconciliation_runs_total", {{"source", "pim"}, {"result", "failure"}}), 1);
  EXPECT_EQ(m.Value("pimgate_reconciliation_items_scanned_total", {{"source", "pim"}}), 250);
  EXPECT_EQ(m.Value("pimgate_reconciliation_events_emitted_total",
                    {{"source", "pim"}, {"change", "updated"}}),
            7);
  EXPECT_EQ(m.Value("pimgate_reconciliation_events_emitted_total",
                    {{"source", "pim"}, {"change", "deleted"}}),
            2);
  EXPECT_EQ(m.Value("pimgate_reconciliation_in_sync_total", {{"source", "pim"}}), 243);
  EXPECT_EQ(m.Value("pimgate_reconciliation_api_calls_total", {{"source", "pim"}}), 9);
  EXPECT_EQ(m.Value("pimgate_reconciliation_last_run_succeeded", {{"source", "pim"}}), 0);
  EXPECT_EQ(m.Value("pimgate_reconciliation_last_success_timestamp_seconds", {{"source", "pim"}}),
            1'800'000'100);
  EXPECT_EQ(m.Value("pimgate_reconciliation_last_run_duration_seconds", {{"source", "pim"}}), 1.5);
  EXPECT_EQ(m.Value("pimgate_reconciliation_watermark_timestamp_seconds", {{"source", "pim"}}),
            1'800'000'050);
  EXPECT_EQ(m.Value("pimgate_reconciliation_kind_watermark_timestamp_seconds",
                    {{"source", "pim"}, {"kind", "asset"}}),
            1'800'000'040);
  EXPECT_EQ(m.Value("pimgate_reconciliation_running", {{"source", "pim"}}), 0);
  // A source without `rest` has counters (zero) but no gauges.
  EXPECT_FALSE(
      m.Value("pimgate_reconciliation_last_success_timestamp_seconds", {{"source", "akeneo"}})
          .has_value());
}

TEST(PimgateMetrics, FamiliesWithoutSamplesAreStillDeclared) {
  MetricsWriter w;
  WriteLogMetrics(LogMetricsSnapshot{}, w);
  WritePluginMetrics({}, {}, w);
  WriteGatewayMetrics(GatewayStats{}, w);
  WriteRetentionMetrics(RetentionStats{}, w);
  WriteReconciliationMetrics({}, w);
  const ParsedExposition m = ParseExposition(w.Take());
  ASSERT_TRUE(m.errors.empty()) << ErrorsOf(m);
  for (const char* family : {"pimgate_plugin_lag_events", "pimgate_plugin_dead_lettered_total",
                             "pimgate_ingest_request_duration_seconds",
                             "pimgate_reconciliation_runs_total", "pimgate_log_oldest_sequence"}) {
    EXPECT_TRUE(m.types.count(family)) << family;
  }
  EXPECT_FALSE(m.Value("pimgate_log_oldest_sequence").has_value());
}

TEST(PimgateMetrics, PromtoolAcceptsTheRenderedExposition) {
  const std::string promtool = testing::FindPromtool();
  if (promtool.empty()) {
    GTEST_SKIP() << "promtool not found (Debian package prometheus; scripts/lib.sh installs it)";
  }
  MetricsRegistry registry;
  const testing::PromtoolResult result =
      testing::PromtoolCheckMetrics(promtool, FakeRegistry(registry).Render());
  EXPECT_EQ(result.exit_code, 0) << result.output;
  EXPECT_EQ(result.output, "") << "promtool lint findings";
}

TEST(PluginReadiness, WaitsForEveryLaunchedPluginToServeOnce) {
  PluginReadiness readiness;
  std::vector<PluginStatus> p(3);
  p[0].name = "a";
  p[0].state = PluginState::kStarting;
  p[1].name = "b";
  p[1].state = PluginState::kBackoff;
  p[1].last_error = "not SERVING in 30s";
  p[2].name = "ext";
  p[2].state = PluginState::kExternal;  // not launched: never waited for
  std::string reason = readiness.Check(p);
  EXPECT_NE(reason.find("a (starting)"), std::string::npos) << reason;
  EXPECT_NE(reason.find("b (backoff: not SERVING in 30s)"), std::string::npos) << reason;
  EXPECT_EQ(reason.find("ext"), std::string::npos) << reason;

  p[0].state = PluginState::kServing;
  reason = readiness.Check(p);
  EXPECT_EQ(reason.find("a ("), std::string::npos) << reason;
  p[1].state = PluginState::kServing;
  EXPECT_EQ(readiness.Check(p), "");
  // Having served once is enough: a later crash does not make pimgate unready.
  p[0].state = PluginState::kBackoff;
  p[1].state = PluginState::kStarting;
  EXPECT_EQ(readiness.Check(p), "");
  EXPECT_EQ(readiness.Check({}), "");
}

TEST(MetricsRegistry, StartupPlaceholdersUntilComponentsRegister) {
  MetricsRegistry registry;
  DeclareStartupReadiness(registry);
  std::vector<MetricsRegistry::NotReady> not_ready = registry.CheckReadiness();
  ASSERT_EQ(not_ready.size(), 3u);
  EXPECT_EQ(not_ready[0].component, "log");
  EXPECT_EQ(not_ready[1].component, "plugins");
  EXPECT_EQ(not_ready[2].component, "gateway");
  registry.SetReadinessCheck("log", [] { return std::string(); });
  registry.SetReadinessCheck("plugins", [] { return std::string(); });
  not_ready = registry.CheckReadiness();
  ASSERT_EQ(not_ready.size(), 1u);
  EXPECT_EQ(not_ready[0].reason, "gateway not listening yet");
}

TEST(MetricsRegistry, ReplaceKeepsOrderAndRemoveStopsCallbacks) {
  MetricsRegistry registry;
  registry.SetCollector("a", [](MetricsWriter& w) {
    w.Family("pimgate_a", "a", MetricType::kGauge);
    w.Sample({}, uint64_t{1});
  });
  registry.SetCollector("b", [](MetricsWriter& w) {
    w.Family("pimgate_b", "b", MetricType::kGauge);
    w.Sample({}, uint64_t{2});
  });
  registry.SetCollector("a", [](MetricsWriter& w) {
    w.Family("pimgate_a", "a", MetricType::kGauge);
    w.Sample({}, uint64_t{3});
  });
  std::string text = registry.Render();
  EXPECT_LT(text.find("pimgate_a 3"), text.find("pimgate_b 2")) << text;
  registry.SetReadinessCheck("a", [] { return std::string("no"); });
  registry.Remove("a");
  text = registry.Render();
  EXPECT_EQ(text.find("pimgate_a"), std::string::npos) << text;
  EXPECT_TRUE(registry.CheckReadiness().empty());
}

}  // namespace
}  // namespace pimgate
