// A real pimgate process with a real plugin: /metrics reflects ingest and delivery and passes
// `promtool check metrics`; /healthz, /readyz and unknown paths answer as documented.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "config/config.h"
#include "core/log/event_log.h"
#include "tests/metrics/exposition_check.h"
#include "tests/testing/nats_cluster.h"
#include "tests/testing/test_env.h"

namespace pimgate {
namespace {

using testing::HttpClient;
using testing::HttpResponse;
using testing::ParsedExposition;
using testing::ParseExposition;
using testing::PimgateProcess;
using testing::TempDir;

constexpr char kSecret[] = "metrics-e2e-secret";

struct PluginSpec {
  std::string name;
  std::string env;  // extra YAML line(s) under the plugin, or empty
};

std::string WriteConfig(const TempDir& dir, const std::vector<PluginSpec>& plugins,
                        const std::string& metrics = "  listen: 127.0.0.1:0\n",
                        const std::string& store = "") {
  std::ostringstream yaml;
  yaml << "gateway:\n  listen: 127.0.0.1:0\n  threads: 2\n"
       << "store:\n  path: " << dir.File("store") << "\n"
       << store << "metrics:\n"
       << metrics
       << "log:\n  level: warn\n"
       // Not the default 127.0.0.1:7070, which every other test running may take too.
       << "admin: {enabled: false}\n"
       << "sources:\n"
       << "  - name: pim\n    kind: events_api\n    path: /hooks/pim\n    secret: " << kSecret
       << "\n";
  if (!plugins.empty()) yaml << "plugins:\n";
  for (const PluginSpec& plugin : plugins) {
    yaml << "  - name: " << plugin.name << "\n    command: [" << PIMGATE_TEST_PLUGIN << "]\n"
         << "    start_timeout: 2s\n"
         << plugin.env;
  }
  const std::string path = dir.File("pimgate.yaml");
  std::ofstream(path) << yaml.str();
  return path;
}

// "metrics_port" from the ready file pimgate wrote.
uint16_t MetricsPort(const std::string& ready_file) {
  std::ifstream in(ready_file);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string key = "\"metrics_port\":";
  const std::size_t pos = text.find(key);
  if (pos == std::string::npos) return 0;
  return static_cast<uint16_t>(std::stoi(text.substr(pos + key.size())));
}

// Polls `get` until `done` holds or `timeout` passes; returns the last response.
template <typename Done>
HttpResponse PollUntil(HttpClient& client, const std::string& target, Done done,
                       std::chrono::seconds timeout = std::chrono::seconds(20)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  HttpResponse res;
  for (;;) {
    res = client.Send("GET", target, "");
    if (done(res) || std::chrono::steady_clock::now() > deadline) return res;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

TEST(MetricsEndToEnd, LiveMetricsPassPromtoolAndReflectIngestAndDelivery) {
  TempDir dir;
  PimgateProcess process(WriteConfig(dir, {{"rec", ""}}), dir.File("ready.json"));
  const uint16_t gateway_port = process.WaitReady();
  ASSERT_NE(gateway_port, 0) << "pimgate did not start";
  const uint16_t metrics_port = MetricsPort(dir.File("ready.json"));
  ASSERT_NE(metrics_port, 0) << "no metrics_port in the ready file";
  HttpClient metrics(metrics_port, /*tls=*/false);

  // Ready once the log is open, the gateway listens and the plugin has served.
  HttpResponse ready =
      PollUntil(metrics, "/readyz", [](const HttpResponse& r) { return r.status == 200; });
  ASSERT_EQ(ready.status, 200) << ready.body;
  EXPECT_EQ(ready.body, R"({"ready":true})");
  EXPECT_EQ(metrics.Send("GET", "/healthz", "").status, 200);
  EXPECT_EQ(metrics.Send("GET", "/nope", "").status, 404);
  EXPECT_EQ(metrics.Send("POST", "/metrics", "").status, 405);

  // Three events in, one bad signature.
  HttpClient gateway(gateway_port, /*tls=*/false);
  std::vector<std::string> events;
  for (int i = 0; i < 3; ++i) {
    events.push_back(
        testing::LegacyProductEvent("product.updated", testing::NewUuid(), testing::NewUuid()));
  }
  const std::string body = testing::LegacyBatch(events);
  ASSERT_EQ(gateway.Send("POST", "/hooks/pim", body, testing::LegacyHeaders(kSecret, body)).status,
            200);
  ASSERT_EQ(gateway.Send("POST", "/hooks/pim", body, testing::LegacyHeaders("wrong", body)).status,
            401);

  // Delivered to the plugin, as the metrics tell. A request's duration is observed once its
  // answer is written, which the client may see a moment before: wait for both counts.
  HttpResponse res = PollUntil(metrics, "/metrics", [](const HttpResponse& r) {
    const ParsedExposition parsed = ParseExposition(r.body);
    return parsed.Value("pimgate_plugin_delivered_total", {{"plugin", "rec"}}) == 3 &&
           parsed.Value("pimgate_ingest_request_duration_seconds_count", {{"source", "pim"}}) == 2;
  });
  ASSERT_EQ(res.status, 200);
  EXPECT_EQ(res.headers["content-type"], "text/plain; version=0.0.4; charset=utf-8");
  const ParsedExposition m = ParseExposition(res.body);
  ASSERT_TRUE(m.errors.empty()) << m.errors.front() << "\n" << res.body;
  EXPECT_EQ(m.Value("pimgate_plugin_delivered_total", {{"plugin", "rec"}}), 3) << res.body;
  EXPECT_EQ(m.Value("pimgate_ingest_requests_total", {{"source", "pim"}, {"code", "200"}}), 1);
  EXPECT_EQ(m.Value("pimgate_ingest_requests_total", {{"source", "pim"}, {"code", "401"}}), 1);
  EXPECT_EQ(m.Value("pimgate_ingest_request_duration_seconds_count", {{"source", "pim"}}), 2);
  EXPECT_EQ(m.Value("pimgate_events_accepted_total", {{"source", "pim"}}), 3);
  EXPECT_EQ(m.Value("pimgate_log_head_sequence"), 3);
  EXPECT_EQ(m.Value("pimgate_log_events"), 3);
  EXPECT_GT(m.Value("pimgate_log_disk_bytes").value_or(0), 0);
  EXPECT_EQ(m.Value("pimgate_plugin_cursor", {{"plugin", "rec"}}), 3);
  EXPECT_EQ(m.Value("pimgate_plugin_lag_events", {{"plugin", "rec"}}), 0);
  EXPECT_EQ(m.Value("pimgate_plugin_up", {{"plugin", "rec"}}), 1);
  EXPECT_EQ(m.Value("pimgate_plugin_state", {{"plugin", "rec"}, {"state", "serving"}}), 1);
  EXPECT_EQ(
      m.Value("pimgate_reconciliation_runs_total", {{"source", "pim"}, {"result", "success"}}), 0);
  EXPECT_TRUE(m.Value("pimgate_retention_runs_total").has_value());
  EXPECT_TRUE(m.Value("pimgate_gateway_connections_open").has_value());

  const std::string promtool = testing::FindPromtool();
  if (promtool.empty()) {
    GTEST_SKIP() << "promtool not found (Debian package prometheus; scripts/lib.sh installs it): "
                    "the live exposition was checked by the test's own parser only";
  }
  const testing::PromtoolResult check = testing::PromtoolCheckMetrics(promtool, res.body);
  EXPECT_EQ(check.exit_code, 0) << check.output << "\n" << res.body;
  EXPECT_EQ(check.output, "") << "promtool lint findings";
  EXPECT_EQ(process.Terminate(), 0);
}

TEST(MetricsEndToEnd, ReadyzIs503WhileALaunchedPluginNeverServes) {
  TempDir dir;
  PimgateProcess process(
      WriteConfig(dir, {{"mute", "    env: {TEST_PLUGIN_NEVER_SERVE: \"1\"}\n"}}),
      dir.File("ready.json"));
  ASSERT_NE(process.WaitReady(), 0) << "pimgate did not start";
  const uint16_t metrics_port = MetricsPort(dir.File("ready.json"));
  ASSERT_NE(metrics_port, 0);
  HttpClient metrics(metrics_port, /*tls=*/false);
  EXPECT_EQ(metrics.Send("GET", "/healthz", "").status, 200);
  // Past its start_timeout (2 s) too: it stays unready, and says why. "Past" as pimgate saw it,
  // not after a sleep: the supervisor gave up on the first run at the start timeout and
  // counted a restart.
  HttpResponse restarted = PollUntil(
      metrics, "/metrics",
      [](const HttpResponse& r) {
        return r.status == 200 && ParseExposition(r.body).Value("pimgate_plugin_restarts_total",
                                                                {{"plugin", "mute"}}) >= 1;
      },
      std::chrono::seconds(60));
  ASSERT_GE(
      ParseExposition(restarted.body).Value("pimgate_plugin_restarts_total", {{"plugin", "mute"}}),
      1)
      << restarted.body;
  HttpResponse res = metrics.Send("GET", "/readyz", "");
  EXPECT_EQ(res.status, 503);
  EXPECT_NE(res.body.find(R"("ready":false)"), std::string::npos) << res.body;
  EXPECT_NE(res.body.find(R"("plugins":"plugin(s) not yet SERVING since start: mute ()"),
            std::string::npos)
      << res.body;
  EXPECT_EQ(res.body.find(R"("gateway")"), std::string::npos) << res.body;
  EXPECT_EQ(ParseExposition(metrics.Send("GET", "/metrics", "").body)
                .Value("pimgate_plugin_up", {{"plugin", "mute"}}),
            0);
  EXPECT_EQ(process.Terminate(), 0);
}

TEST(MetricsEndToEnd, DisabledMetricsListenNowhere) {
  TempDir dir;
  PimgateProcess process(WriteConfig(dir, {}, "  enabled: false\n"), dir.File("ready.json"));
  ASSERT_NE(process.WaitReady(), 0) << "pimgate did not start";
  EXPECT_EQ(MetricsPort(dir.File("ready.json")), 0);
  EXPECT_EQ(process.Terminate(), 0);
}

TEST(MetricsEndToEnd, RetentionEmptiesTheLogAndEndsTheDedupWindow) {
  TempDir dir;
  PimgateProcess process(WriteConfig(dir, {}, "  listen: 127.0.0.1:0\n",
                                     "  retention: 1s\n  retention_interval: 200ms\n"),
                         dir.File("ready.json"));
  const uint16_t gateway_port = process.WaitReady();
  ASSERT_NE(gateway_port, 0) << "pimgate did not start";
  HttpClient metrics(MetricsPort(dir.File("ready.json")), /*tls=*/false);
  HttpClient gateway(gateway_port, /*tls=*/false);
  std::vector<std::string> events;
  for (int i = 0; i < 3; ++i) {
    events.push_back(
        testing::LegacyProductEvent("product.updated", testing::NewUuid(), testing::NewUuid()));
  }
  const std::string body = testing::LegacyBatch(events);
  const auto post = [&] {
    return gateway.Send("POST", "/hooks/pim", body, testing::LegacyHeaders(kSecret, body)).body;
  };
  EXPECT_EQ(post(), R"({"accepted":3,"duplicates":0})");
  EXPECT_EQ(post(), R"({"accepted":0,"duplicates":3})");

  // No plugin: age alone decides, and 1 s later the events are gone. The log counts them gone
  // as soon as they are trimmed; the retention task counts its pass (removed, last run) only
  // after the dead letters and quarantine are trimmed too: wait for both.
  HttpResponse res = PollUntil(metrics, "/metrics", [](const HttpResponse& r) {
    const ParsedExposition parsed = ParseExposition(r.body);
    return parsed.Value("pimgate_log_events") == 0 &&
           parsed.Value("pimgate_retention_removed_total", {{"kind", "event"}}) == 3;
  });
  const ParsedExposition m = ParseExposition(res.body);
  EXPECT_EQ(m.Value("pimgate_log_events"), 0) << res.body;
  EXPECT_EQ(m.Value("pimgate_log_head_sequence"), 3);
  EXPECT_EQ(m.Value("pimgate_retention_removed_total", {{"kind", "event"}}), 3);
  EXPECT_GT(m.Value("pimgate_retention_last_run_timestamp_seconds").value_or(0), 0);

  // The dedup window is the retention: the same ids are new events now, after sequence 3.
  EXPECT_EQ(post(), R"({"accepted":3,"duplicates":0})");
  res = metrics.Send("GET", "/metrics", "");
  EXPECT_EQ(ParseExposition(res.body).Value("pimgate_log_head_sequence"), 6);
  EXPECT_EQ(process.Terminate(), 0);
}

}  // namespace
}  // namespace pimgate

// ---- store.backend: jetstream ------------------------------------------------------------------

namespace pimgate {
namespace {

std::string JetStreamStore(const testing::NatsCluster& nats, const std::string& stream) {
  const JetStreamConfig config = nats.Config(stream);
  return absl::StrCat("  backend: jetstream\n  jetstream:\n    servers: [", config.servers[0],
                      "]\n    stream: ", stream, "\n    subject: ", config.subject, "\n");
}

// pimgate on a JetStream stream: webhooks are answered 200 once stored in the stream; /readyz
// says when the connection to the cluster is lost and becomes ready again when it is back.
TEST(MetricsEndToEnd, ReadyzFollowsTheJetStreamConnection) {
  testing::NatsCluster nats(testing::NatsCluster::Options{});
  ASSERT_TRUE(nats.started());
  TempDir dir;
  PimgateProcess process(
      WriteConfig(dir, {}, "  listen: 127.0.0.1:0\n", JetStreamStore(nats, "E2E")),
      dir.File("ready.json"));
  const uint16_t gateway_port = process.WaitReady();
  ASSERT_NE(gateway_port, 0) << "pimgate did not start";
  HttpClient metrics(MetricsPort(dir.File("ready.json")), /*tls=*/false);
  HttpResponse ready =
      PollUntil(metrics, "/readyz", [](const HttpResponse& r) { return r.status == 200; });
  ASSERT_EQ(ready.status, 200) << ready.body;

  HttpClient gateway(gateway_port, /*tls=*/false);
  const std::string body = testing::LegacyBatch(
      {testing::LegacyProductEvent("product.updated", testing::NewUuid(), testing::NewUuid())});
  ASSERT_EQ(gateway.Send("POST", "/hooks/pim", body, testing::LegacyHeaders(kSecret, body)).status,
            200);

  nats.Kill(0);
  HttpResponse lost = PollUntil(
      metrics, "/readyz", [](const HttpResponse& r) { return r.status == 503; },
      std::chrono::seconds(60));
  ASSERT_EQ(lost.status, 503) << lost.body;
  EXPECT_NE(lost.body.find("event log: JetStream connection lost"), std::string::npos) << lost.body;
  nats.Restart(0);
  ASSERT_TRUE(nats.WaitForJetStream(0));
  HttpResponse back = PollUntil(
      metrics, "/readyz", [](const HttpResponse& r) { return r.status == 200; },
      std::chrono::seconds(60));
  EXPECT_EQ(back.status, 200) << back.body;
  EXPECT_EQ(gateway.Send("POST", "/hooks/pim", body, testing::LegacyHeaders(kSecret, body)).status,
            200);
  EXPECT_EQ(process.Terminate(), 0);
}

// --check-config connects: OK with the cluster up and a matching stream, one specific message
// per failure otherwise.
TEST(MetricsEndToEnd, CheckConfigChecksTheJetStreamCluster) {
  testing::NatsCluster nats(testing::NatsCluster::Options{});
  ASSERT_TRUE(nats.started());
  TempDir dir;
  auto check = [&](const std::string& store, std::string* output) {
    const std::string config = WriteConfig(dir, {}, "  listen: 127.0.0.1:0\n", store);
    const std::string out = dir.File("check.out");
    const int status = std::system(
        absl::StrCat(PIMGATE_BINARY, " --check-config ", config, " >", out, " 2>&1").c_str());
    std::ifstream in(out);
    output->assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  };
  std::string output;
  EXPECT_EQ(check(JetStreamStore(nats, "CHECKED"), &output), 0) << output;
  EXPECT_NE(output.find("OK (1 source(s), 0 plugin(s), store JetStream stream CHECKED"),
            std::string::npos)
      << output;

  // A stream that exists with another subject.
  {
    TempDir replica;
    JetStreamConfig config = nats.Config("TAKEN");
    absl::StatusOr<std::unique_ptr<EventLog>> log = [&] {
      StoreConfig store;
      store.backend = StoreBackend::kJetStream;
      store.path = replica.path();
      store.jetstream = config;
      return EventLog::Open(store);
    }();
    ASSERT_TRUE(log.ok()) << log.status();
  }
  EXPECT_EQ(check(absl::StrCat(JetStreamStore(nats, "TAKEN"), "    replicas: 3\n"), &output), 2);
  EXPECT_NE(output.find("store.jetstream: stream TAKEN has 1 replica(s), but "
                        "store.jetstream.replicas is 3"),
            std::string::npos)
      << output;

  nats.Kill(0);
  EXPECT_EQ(check(JetStreamStore(nats, "CHECKED"), &output), 2);
  EXPECT_NE(output.find("store.jetstream: cannot connect to the NATS servers nats://127.0.0.1:"),
            std::string::npos)
      << output;
}

}  // namespace
}  // namespace pimgate
