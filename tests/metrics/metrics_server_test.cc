// The metrics endpoint served in-process on 127.0.0.1:0 over a registry the test controls:
// routes, readiness answers, keep-alive and limits, through a real HTTP client.
#include "metrics/metrics_server.h"

#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <string>

#include "tests/testing/test_env.h"
#include "tests/testing/typed_values.h"

namespace pimgate {
namespace {

using testing::HttpClient;
using testing::HttpResponse;

class MetricsServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    registry_.SetCollector("fake", [this](MetricsWriter& w) {
      w.Family("pimgate_fake_total", "A fake counter.", MetricType::kCounter);
      w.Sample({}, scrapes_.fetch_add(1) + 1);
    });
    registry_.SetReadinessCheck("gateway", [this] {
      return gateway_ready_.load() ? std::string() : std::string("gateway not \"listening\" yet");
    });
    MetricsServerOptions options;
    options.listen = testing::ListenAt("127.0.0.1:0");
    options.header_limit = 1024;
    auto server = MetricsServer::Start(options, &registry_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
  }

  HttpClient Client() { return HttpClient(server_->port(), /*tls=*/false); }

  MetricsRegistry registry_;
  std::atomic<uint64_t> scrapes_{0};
  std::atomic<bool> gateway_ready_{false};
  std::unique_ptr<MetricsServer> server_;
};

TEST_F(MetricsServerTest, MetricsAnswersTheExpositionWithItsContentType) {
  HttpClient client = Client();
  HttpResponse res = client.Send("GET", "/metrics", "");
  ASSERT_EQ(res.status, 200) << res.body;
  EXPECT_EQ(res.headers["content-type"], "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_NE(res.body.find("# TYPE pimgate_fake_total counter\npimgate_fake_total 1\n"),
            std::string::npos)
      << res.body;
  // Keep-alive: the scraper's next request reuses the connection and sees fresh values; a query
  // string does not change the route.
  res = client.Send("GET", "/metrics?name[]=x", "");
  ASSERT_EQ(res.status, 200);
  EXPECT_TRUE(client.connected());
  EXPECT_NE(res.body.find("pimgate_fake_total 2\n"), std::string::npos) << res.body;
}

TEST_F(MetricsServerTest, HealthzIsAliveEvenWhenNotReady) {
  HttpResponse res = Client().Send("GET", "/healthz", "");
  EXPECT_EQ(res.status, 200);
  EXPECT_EQ(res.body, "ok\n");
}

TEST_F(MetricsServerTest, ReadyzNamesWhatIsNotReadyThenTurns200) {
  HttpClient client = Client();
  HttpResponse res = client.Send("GET", "/readyz", "");
  EXPECT_EQ(res.status, 503);
  EXPECT_EQ(res.headers["content-type"], "application/json");
  EXPECT_EQ(res.body, R"({"ready":false,"reasons":{"gateway":"gateway not \"listening\" yet"}})");
  gateway_ready_ = true;
  res = client.Send("GET", "/readyz", "");
  EXPECT_EQ(res.status, 200);
  EXPECT_EQ(res.body, R"({"ready":true})");
}

TEST_F(MetricsServerTest, UnknownPathsAre404AndOtherMethods405) {
  HttpClient client = Client();
  EXPECT_EQ(client.Send("GET", "/", "").status, 404);
  EXPECT_EQ(client.Send("GET", "/metrics/extra", "").status, 404);
  EXPECT_EQ(client.Send("GET", "/hooks/akeneo", "").status, 404);
  HttpResponse res = client.Send("POST", "/metrics", "");
  EXPECT_EQ(res.status, 405);
  EXPECT_EQ(res.headers["allow"], "GET");
  EXPECT_EQ(client.Send("DELETE", "/readyz", "").status, 405);
}

TEST_F(MetricsServerTest, RequestsWithABodyOrHugeHeadersAreRefused) {
  HttpResponse res = Client().Send("GET", "/metrics", "a body");
  EXPECT_EQ(res.status, 413);
  res = Client().Send("GET", "/metrics", "", {{"X-Big", std::string(4096, 'x')}});
  EXPECT_EQ(res.status, 431);
  res = Client().SendRaw("NOT HTTP AT ALL\r\n\r\n");
  EXPECT_EQ(res.status, 400);
  // The server is still fine afterwards.
  EXPECT_EQ(Client().Send("GET", "/healthz", "").status, 200);
}

TEST_F(MetricsServerTest, AnAddressInUseIsAnError) {
  MetricsServerOptions options;
  options.listen = testing::ListenAt("127.0.0.1:" + std::to_string(server_->port()));
  auto second = MetricsServer::Start(options, &registry_);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(second.status().message().find("metrics.listen"), absl::string_view::npos);
}

TEST_F(MetricsServerTest, StopClosesTheListener) {
  const uint16_t port = server_->port();
  server_->Stop();
  server_->Stop();  // idempotent
  HttpClient client(port, /*tls=*/false);
  EXPECT_TRUE(client.Connect().has_value());
}

}  // namespace
}  // namespace pimgate
