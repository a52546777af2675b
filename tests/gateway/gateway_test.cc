// Every answer code of the gateway, over real HTTP on a real socket (TLS unless stated), with a
// real RocksDB log behind it.
#include <gtest/gtest.h>
#include <openssl/ssl.h>

#include <condition_variable>
#include <future>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "core/log/log_backend.h"
#include "gateway/server.h"
#include "tests/testing/test_env.h"

namespace pimgate {
namespace {

using testing::CloudEvent;
using testing::EventPlatformHeaders;
using testing::GatewayHarness;
using testing::HttpClient;
using testing::HttpResponse;
using testing::LegacyBatch;
using testing::LegacyHeaders;
using testing::LegacyProductEvent;
using testing::NewUuid;

constexpr char kLegacyPath[] = "/hooks/legacy";
constexpr char kPlatformPath[] = "/hooks/platform";
const std::string kLegacySecret = GatewayHarness::kLegacySecret;
const std::string kPlatformSecret = GatewayHarness::kPlatformSecret;

// Controls a LogBackend decorator from the test: fail writes, or hold them at a gate.
struct BackendControl {
  std::atomic<bool> fail_writes{false};
  std::mutex mu;
  std::condition_variable cv;
  bool gate_closed = false;
  int writes_waiting = 0;
  void Close() {
    std::lock_guard lock(mu);
    gate_closed = true;
  }
  void Open() {
    {
      std::lock_guard lock(mu);
      gate_closed = false;
    }
    cv.notify_all();
  }
  void WaitForWriter() {
    std::unique_lock lock(mu);
    cv.wait(lock, [this] { return writes_waiting > 0; });
  }
};

class ControlledBackend : public ForwardingLogBackend {
 public:
  ControlledBackend(std::unique_ptr<LogBackend> inner, std::shared_ptr<BackendControl> control)
      : ForwardingLogBackend(std::move(inner)), control_(std::move(control)) {}
  absl::Status Write(const CommitBatch& batch, bool sync) override {
    {
      std::unique_lock lock(control_->mu);
      ++control_->writes_waiting;
      control_->cv.notify_all();
      control_->cv.wait(lock, [this] { return !control_->gate_closed; });
      --control_->writes_waiting;
    }
    if (control_->fail_writes.load()) {
      return absl::UnavailableError("injected: No space left on device");
    }
    return inner().Write(batch, sync);
  }

 private:
  std::shared_ptr<BackendControl> control_;
};

GatewayHarness::Options Controlled(std::shared_ptr<BackendControl> control,
                                   std::function<void(Config&)> tweak = {}) {
  GatewayHarness::Options options;
  options.tweak = std::move(tweak);
  options.wrap_backend = [control](std::unique_ptr<LogBackend> inner) {
    return std::make_unique<ControlledBackend>(std::move(inner), control);
  };
  return options;
}

HttpResponse PostLegacy(HttpClient& client, const std::string& body,
                        const std::string& secret = kLegacySecret) {
  return client.Send("POST", kLegacyPath, body, LegacyHeaders(secret, body));
}

HttpResponse PostPlatform(HttpClient& client, const std::string& body,
                          const std::string& secret = kPlatformSecret) {
  return client.Send("POST", kPlatformPath, body, EventPlatformHeaders(secret, body));
}

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

TEST(Gateway, Legacy200StoresEventsWithCanonicalFields) {
  GatewayHarness gw;
  HttpClient client = gw.Client();
  const std::string uuid = NewUuid();
  const std::string body = LegacyBatch({
      LegacyProductEvent("product.created", NewUuid(), uuid, "2026-11-20T10:00:00+00:00"),
      LegacyProductEvent("product.updated", NewUuid(), uuid, "2026-11-20T10:05:00+00:00"),
      LegacyProductEvent("product.removed", NewUuid(), uuid),
  });
  HttpResponse res = PostLegacy(client, body);
  ASSERT_EQ(res.status, 200) << res.body;
  EXPECT_EQ(res.body, R"({"accepted":3,"duplicates":0})");
  EXPECT_EQ(res.headers["content-type"], "application/json");
  EXPECT_FALSE(res.headers["x-request-id"].empty());

  std::vector<v1::Event> events = gw.AllEvents();
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0].type(), "product.created");
  EXPECT_EQ(events[2].type(), "product.deleted");
  EXPECT_EQ(events[2].original_type(), "product.removed");
  for (std::size_t i = 0; i < events.size(); ++i) {
    EXPECT_EQ(events[i].sequence(), i + 1);
    EXPECT_EQ(events[i].source(), "legacy");
    EXPECT_EQ(events[i].kind(), "product");
    EXPECT_EQ(events[i].resource_id(), uuid);
    EXPECT_EQ(events[i].origin(), v1::ORIGIN_EVENTS_API);
    EXPECT_EQ(events[i].pim_source(), "https://pim.example.com");
    EXPECT_EQ(events[i].author(), "julia");
    EXPECT_GT(events[i].received_at().seconds(), 0);
    EXPECT_EQ(events[i].request_id(), res.headers["x-request-id"]);
  }
  EXPECT_EQ(events[1].data().fields().at("family").string_value(), "shoes");
}

TEST(Gateway, KeepAliveServesManyRequestsOnOneConnection) {
  GatewayHarness gw;
  HttpClient client = gw.Client();
  for (int i = 0; i < 20; ++i) {
    HttpResponse res = PostLegacy(
        client, LegacyBatch({LegacyProductEvent("product.updated", NewUuid(), NewUuid())}));
    ASSERT_EQ(res.status, 200) << res.body;
    EXPECT_TRUE(client.connected());
  }
  EXPECT_EQ(gw.log().head(), 20u);
}

TEST(Gateway, LegacyTestPing200StoresNothing) {
  GatewayHarness gw;
  HttpClient client = gw.Client();
  HttpResponse res = PostLegacy(client, "");
  ASSERT_EQ(res.status, 200) << res.body;
  EXPECT_TRUE(Contains(res.body, R"("test":true)"));
  EXPECT_EQ(gw.log().head(), 0u);
  // An unsigned ping is still refused.
  EXPECT_EQ(client.Send("POST", kLegacyPath, "").status, 401);
}

TEST(Gateway, DuplicatesAre200AndCountedNotStored) {
  GatewayHarness gw;
  HttpClient client = gw.Client();
  const std::string body =
      LegacyBatch({LegacyProductEvent("product.updated", NewUuid(), NewUuid()),
                   LegacyProductEvent("product.updated", NewUuid(), NewUuid())});
  ASSERT_EQ(PostLegacy(client, body).body, R"({"accepted":2,"duplicates":0})");
  HttpResponse again = PostLegacy(client, body);  // the PIM re-sent the same events
  EXPECT_EQ(again.status, 200);
  EXPECT_EQ(again.body, R"({"accepted":0,"duplicates":2})");
  EXPECT_EQ(gw.log().head(), 2u);
  GatewayStats stats = gw.gateway().stats();
  EXPECT_EQ(stats.sources[0].duplicates, 2u);
  EXPECT_EQ(stats.sources[0].events_accepted, 2u);
  EXPECT_EQ(stats.sources[0].requests_by_code[200], 2u);
}

TEST(Gateway, OlderVersionIsStoredStale) {
  GatewayHarness gw;
  HttpClient client = gw.Client();
  const std::string uuid = NewUuid();
  ASSERT_EQ(PostLegacy(client, LegacyBatch({LegacyProductEvent("product.updated", NewUuid(), uuid,
                                                               "2026-11-20T10:05:00+00:00")}))
                .status,
            200);
  ASSERT_EQ(PostLegacy(client, LegacyBatch({LegacyProductEvent("product.updated", NewUuid(), uuid,
                                                               "2026-11-20T10:01:00+00:00")}))
                .status,
            200);
  std::vector<v1::Event> events = gw.AllEvents();
  ASSERT_EQ(events.size(), 2u);
  EXPECT_FALSE(events[0].stale());
  EXPECT_TRUE(events[1].stale());
  EXPECT_EQ(gw.gateway().stats().sources[0].stale, 1u);
}

TEST(Gateway, EventPlatform200WithPrimarySecondaryHeaderAndRotatedSecret) {
  GatewayHarness gw;
  HttpClient client = gw.Client();
  const std::string uuid = NewUuid();
  std::string body = CloudEvent("com.akeneo.pim.v1.product.updated", NewUuid(), uuid);
  HttpResponse res = PostPlatform(client, body);
  ASSERT_EQ(res.status, 200) << res.body;
  EXPECT_EQ(res.body, R"({"accepted":1,"duplicates":0})");

  body = CloudEvent("com.akeneo.pim.v1.product-model.updated", NewUuid(), uuid);
  auto headers = EventPlatformHeaders(kPlatformSecret, body);
  headers["X-AKENEO-SIGNATURE-SECONDARY"] = headers["X-AKENEO-SIGNATURE-PRIMARY"];
  headers["X-AKENEO-SIGNATURE-PRIMARY"] = std::string(64, 'a');
  EXPECT_EQ(client.Send("POST", kPlatformPath, body, headers).status, 200);

  body = CloudEvent("com.akeneo.pim.v1.product.deleted", NewUuid(), uuid);
  EXPECT_EQ(PostPlatform(client, body, GatewayHarness::kPlatformSecondary).status, 200);

  std::vector<v1::Event> events = gw.AllEvents();
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0].type(), "product.updated");
  EXPECT_EQ(events[0].origin(), v1::ORIGIN_EVENT_PLATFORM);
  EXPECT_EQ(events[0].resource_id(), uuid);
  EXPECT_EQ(events[0].source(), "platform");
  EXPECT_EQ(events[2].type(), "product.deleted");
}

TEST(Gateway, Unauthorized401StoresNothing) {
  GatewayHarness gw;
  HttpClient client = gw.Client();
  const std::string body =
      LegacyBatch({LegacyProductEvent("product.updated", NewUuid(), NewUuid())});
  struct Case {
    std::map<std::string, std::string> headers;
    std::string message;
  };
  std::vector<Case> cases = {
      {LegacyHeaders("wrong-secret", body), "does not match"},
      {{}, "missing X-Akeneo-Request-Signature"},
      {LegacyHeaders(kLegacySecret, body, testing::NowUnixSeconds() - 301), "tolerance 300 s"},
      {LegacyHeaders(kLegacySecret, body, testing::NowUnixSeconds() + 3600), "tolerance 300 s"},
      {{{"X-Akeneo-Request-Timestamp", "1"}, {"X-Akeneo-Request-Signature", "abc"}},
       "away from the server clock"},
  };
  for (const Case& c : cases) {
    HttpResponse res = client.Send("POST", kLegacyPath, body, c.headers);
    EXPECT_EQ(res.status, 401) << res.body;
    EXPECT_TRUE(Contains(res.body, c.message)) << res.body;
    EXPECT_TRUE(Contains(res.body, R"("error":"bad_signature")")) << res.body;
  }
  // Tampered body: the signature was made over other bytes.
  auto headers = LegacyHeaders(kLegacySecret, body);
  EXPECT_EQ(client.Send("POST", kLegacyPath, body + " ", headers).status, 401);
  // Event Platform: wrong secret, no header, unsupported algorithm, signature of wrong length.
  const std::string ce = CloudEvent("com.akeneo.pim.v1.product.updated", NewUuid(), NewUuid());
  EXPECT_EQ(PostPlatform(client, ce, "wrong").status, 401);
  EXPECT_EQ(client.Send("POST", kPlatformPath, ce).status, 401);
  auto ep = EventPlatformHeaders(kPlatformSecret, ce);
  ep["X-AKENEO-SIGNATURE-ALGORITHM"] = "HmacSHA1";
  HttpResponse res = client.Send("POST", kPlatformPath, ce, ep);
  EXPECT_EQ(res.status, 401);
  EXPECT_TRUE(Contains(res.body, "unsupported")) << res.body;
  ep = EventPlatformHeaders(kPlatformSecret, ce);
  ep["X-AKENEO-SIGNATURE-PRIMARY"] += "00";
  EXPECT_EQ(client.Send("POST", kPlatformPath, ce, ep).status, 401);
  EXPECT_EQ(gw.log().head(), 0u);
  EXPECT_EQ(gw.gateway().stats().sources[0].requests_by_code[401], 6u);
}

TEST(Gateway, MalformedPayload400StoresNothing) {
  GatewayHarness gw;
  HttpClient client = gw.Client();
  for (const std::string& body :
       {std::string("{not json"), std::string("[1,2]"), std::string(R"({"event":[]})"),
        std::string(R"({"events":{}})"), std::string("\"\xff\xfe\"")}) {
    HttpResponse res = PostLegacy(client, body);
    EXPECT_EQ(res.status, 400) << body << " -> " << res.body;
    EXPECT_TRUE(Contains(res.body, R"("error":"bad_payload")")) << res.body;
  }
  for (const std::string& body :
       {std::string("{not json"), std::string("[]"), std::string(R"({"type":"x","data":{}})"),
        std::string(R"({"id":"1","type":"com.akeneo.pim.v1.product.updated"})")}) {
    HttpResponse res = PostPlatform(client, body);
    EXPECT_EQ(res.status, 400) << body << " -> " << res.body;
  }
  EXPECT_EQ(gw.log().head(), 0u);
  auto quarantine = gw.log().ReadQuarantine(1, 100);
  ASSERT_TRUE(quarantine.ok());
  EXPECT_TRUE(quarantine->empty());
}

TEST(Gateway, PartialLegacyBatchStoresValidQuarantinesInvalidAnswers400) {
  GatewayHarness gw;
  HttpClient client = gw.Client();
  const std::string bad =
      R"({"action":"product.updated","event_datetime":"2026-11-20T10:15:00+00:00","data":{"resource":{}}})";
  const std::string body =
      LegacyBatch({LegacyProductEvent("product.updated", NewUuid(), NewUuid()), bad,
                   LegacyProductEvent("product.updated", NewUuid(), NewUuid())});
  HttpResponse res = PostLegacy(client, body);
  EXPECT_EQ(res.status, 400);
  EXPECT_TRUE(Contains(res.body, R"("error":"invalid_events")")) << res.body;
  EXPECT_TRUE(Contains(res.body, "events [1]")) << res.body;
  EXPECT_TRUE(Contains(res.body, R"("accepted":2)")) << res.body;
  EXPECT_TRUE(Contains(res.body, "event_id")) << res.body;
  EXPECT_EQ(gw.log().head(), 2u);
  auto quarantine = gw.log().ReadQuarantine(1, 100);
  ASSERT_TRUE(quarantine.ok());
  ASSERT_EQ(quarantine->size(), 1u);
  EXPECT_EQ((*quarantine)[0].index(), 1u);
  EXPECT_EQ((*quarantine)[0].source(), "legacy");
  EXPECT_TRUE(Contains((*quarantine)[0].raw(), "product.updated"));
  EXPECT_TRUE(Contains((*quarantine)[0].reason(), "event_id"));
  EXPECT_EQ(gw.gateway().stats().sources[0].quarantined, 1u);
}

TEST(Gateway, UnknownPath404WrongMethod405) {
  GatewayHarness gw;
  HttpClient client = gw.Client();
  HttpResponse res = client.Send("POST", "/nope", "{}");
  EXPECT_EQ(res.status, 404);
  EXPECT_TRUE(Contains(res.body, R"("error":"unknown_path")")) << res.body;
  res = client.Send("GET", kLegacyPath, "");
  EXPECT_EQ(res.status, 405);
  EXPECT_EQ(res.headers["allow"], "POST");
  res = client.Send("PUT", kPlatformPath, "{}");
  EXPECT_EQ(res.status, 405);
  // Never a redirect, even for a trailing slash.
  EXPECT_EQ(client.Send("POST", std::string(kLegacyPath) + "/", "{}").status, 404);
}

TEST(Gateway, BodyOverLimit413FromContentLengthBeforeReading) {
  GatewayHarness::Options options;
  options.tweak = [](Config& config) { config.gateway.body_limit = 1024; };
  GatewayHarness gw(options);
  HttpClient client = gw.Client();
  // Only the headers are sent: the answer must come without the body being read.
  HttpResponse res = client.SendRaw(
      "POST /hooks/legacy HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
      "Content-Length: 10000000\r\n\r\n");
  EXPECT_EQ(res.status, 413);
  EXPECT_TRUE(Contains(res.body, "gateway.body_limit")) << res.body;

  // Chunked (no Content-Length): refused once the limit is crossed.
  HttpClient chunked = gw.Client();
  std::string chunk(2000, 'x');
  std::string raw = "POST /hooks/legacy HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
  absl::StrAppend(&raw, absl::Hex(chunk.size()), "\r\n", chunk, "\r\n0\r\n\r\n");
  res = chunked.SendRaw(raw);
  EXPECT_EQ(res.status, 413);
  EXPECT_EQ(gw.log().head(), 0u);
}

TEST(Gateway, ChunkedBodyWithinLimitIsAccepted) {
  GatewayHarness gw;
  HttpClient client = gw.Client();
  const std::string body =
      LegacyBatch({LegacyProductEvent("product.updated", NewUuid(), NewUuid())});
  auto headers = LegacyHeaders(kLegacySecret, body);
  std::string raw = "POST /hooks/legacy HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n";
  for (const auto& [k, v] : headers) absl::StrAppend(&raw, k, ": ", v, "\r\n");
  absl::StrAppend(&raw, "\r\n");
  const std::size_t half = body.size() / 2;
  absl::StrAppend(&raw, absl::Hex(half), "\r\n", body.substr(0, half), "\r\n");
  absl::StrAppend(&raw, absl::Hex(body.size() - half), "\r\n", body.substr(half), "\r\n0\r\n\r\n");
  HttpResponse res = client.SendRaw(raw);
  EXPECT_EQ(res.status, 200) << res.body;
  EXPECT_EQ(gw.log().head(), 1u);
}

TEST(Gateway, HeadersOverLimit431) {
  GatewayHarness gw;
  HttpClient client = gw.Client();
  HttpResponse res = client.Send("POST", kLegacyPath, "{}", {{"X-Junk", std::string(20000, 'j')}});
  EXPECT_EQ(res.status, 431) << res.body;
}

TEST(Gateway, StoreFailure503NothingHalfWrittenThenRecovers) {
  auto control = std::make_shared<BackendControl>();
  GatewayHarness gw(Controlled(control));
  HttpClient client = gw.Client();
  control->fail_writes = true;
  const std::string body =
      LegacyBatch({LegacyProductEvent("product.updated", NewUuid(), NewUuid()),
                   LegacyProductEvent("product.updated", NewUuid(), NewUuid())});
  HttpResponse res = PostLegacy(client, body);
  EXPECT_EQ(res.status, 503);
  EXPECT_TRUE(Contains(res.body, R"("error":"store_unavailable")")) << res.body;
  EXPECT_TRUE(Contains(res.body, "No space left")) << res.body;
  EXPECT_EQ(gw.log().head(), 0u);
  EXPECT_TRUE(gw.AllEvents().empty());
  control->fail_writes = false;
  // The sender retries the same events: they are stored now, not taken for duplicates.
  res = PostLegacy(client, body);
  EXPECT_EQ(res.status, 200) << res.body;
  EXPECT_EQ(res.body, R"({"accepted":2,"duplicates":0})");
  EXPECT_EQ(gw.AllEvents().size(), 2u);
  EXPECT_EQ(gw.AllEvents()[0].sequence(), 1u);
}

TEST(Gateway, EventPlatform429WhenWriteQueueFullLegacyNever) {
  auto control = std::make_shared<BackendControl>();
  GatewayHarness gw(Controlled(control, [](Config& config) {
    config.store.max_pending_requests = 1;
    config.gateway.threads = 4;
  }));
  control->Close();
  // Two legacy requests: one held in the writer, one queued behind it.
  auto send_legacy = [&gw] {
    HttpClient client = gw.Client();
    return PostLegacy(client,
                      LegacyBatch({LegacyProductEvent("product.updated", NewUuid(), NewUuid())}))
        .status;
  };
  // pending() counts every request not yet committed, the one held in the writer too: each
  // legacy request is seen queued before the next step (was: a wait for pending() >= 1, which
  // the first request alone met, and a 100 ms sleep for the third).
  auto wait_pending = [&gw](std::size_t n) {
    for (int i = 0; i < 3000 && gw.log().pending() < n; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return gw.log().pending();
  };
  auto first = std::async(std::launch::async, send_legacy);
  control->WaitForWriter();
  auto second = std::async(std::launch::async, send_legacy);
  ASSERT_EQ(wait_pending(2), 2u);
  HttpClient client = gw.Client();
  HttpResponse res =
      PostPlatform(client, CloudEvent("com.akeneo.pim.v1.product.updated", NewUuid(), NewUuid()));
  EXPECT_EQ(res.status, 429) << res.body;
  EXPECT_EQ(res.headers["retry-after"], "1");
  // A third legacy request is queued too, never refused: it meets the full queue, and waits.
  auto third = std::async(std::launch::async, send_legacy);
  EXPECT_EQ(wait_pending(3), 3u);
  control->Open();
  EXPECT_EQ(first.get(), 200);
  EXPECT_EQ(second.get(), 200);
  EXPECT_EQ(third.get(), 200);
  EXPECT_EQ(gw.log().head(), 3u);
}

TEST(Gateway, PlainHttpOnTlsPortGetsSpecific400) {
  GatewayHarness gw;
  HttpClient plain(gw.port(), /*tls=*/false);
  HttpResponse res = plain.Send("POST", kLegacyPath, "{}");
  EXPECT_EQ(res.status, 400);
  EXPECT_TRUE(Contains(res.body, "tls_required")) << res.body;
}

TEST(Gateway, OldTlsVersionsRefused) {
  GatewayHarness gw;
  for (int version : {TLS1_VERSION, TLS1_1_VERSION}) {
    HttpClient::Options options{true, version, version};
    HttpClient client(gw.port(), options);
    auto error = client.Connect();
    ASSERT_TRUE(error.has_value()) << "TLS version " << version << " was accepted";
  }
  HttpClient::Options tls12{true, TLS1_2_VERSION, TLS1_2_VERSION};
  HttpClient client(gw.port(), tls12);
  EXPECT_FALSE(client.Connect().has_value());
  // The server is still healthy for everyone else.
  HttpClient other = gw.Client();
  EXPECT_EQ(PostLegacy(other, "").status, 200);
}

// What `openssl s_client` (a TLS implementation other than the test's asio client) reports for
// a handshake limited to one version ("-tls1_2", "-tls1_3"): its exit status and output.
struct SClientResult {
  int exit_status = -1;
  std::string output;
};
SClientResult OpensslSClient(uint16_t port, const std::string& version_flag) {
  // `timeout` only guards against a hang; s_client ends at stdin's end.
  const std::string command =
      absl::StrCat("timeout 120 openssl s_client -connect 127.0.0.1:", port,
                   " -servername localhost ", version_flag, " </dev/null 2>&1; echo \"exit=$?\"");
  SClientResult result;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return result;
  char buf[4096];
  std::size_t n;
  while ((n = fread(buf, 1, sizeof(buf), pipe)) > 0) result.output.append(buf, n);
  pclose(pipe);
  const std::size_t at = result.output.rfind("exit=");
  if (at != std::string::npos) result.exit_status = std::atoi(result.output.c_str() + at + 5);
  return result;
}

// gateway.tls.min_version "1.3": a client that offers TLS 1.2 at most is refused at the
// handshake (by the test's client and by openssl s_client); a TLS 1.3 client is served.
TEST(Gateway, MinVersion13RefusesTls12ClientsAtTheHandshake) {
  GatewayHarness::Options options;
  options.tweak = [](Config& config) { config.gateway.tls->min_version = TlsVersion::kTls1_3; };
  GatewayHarness gw(options);

  HttpClient tls12(gw.port(), HttpClient::Options{true, TLS1_2_VERSION, TLS1_2_VERSION});
  const std::optional<std::string> refused = tls12.Connect();
  ASSERT_TRUE(refused.has_value()) << "a TLS 1.2 client was accepted";
  EXPECT_TRUE(Contains(*refused, "handshake")) << *refused;
  const SClientResult s_client12 = OpensslSClient(gw.port(), "-tls1_2");
  EXPECT_NE(s_client12.exit_status, 0) << s_client12.output;
  EXPECT_FALSE(Contains(s_client12.output, "New, TLSv1.2,")) << s_client12.output;
  EXPECT_TRUE(Contains(s_client12.output, "alert protocol version")) << s_client12.output;

  HttpClient tls13(gw.port(), HttpClient::Options{true, TLS1_3_VERSION, TLS1_3_VERSION});
  ASSERT_FALSE(tls13.Connect().has_value());
  const HttpResponse res =
      PostLegacy(tls13, LegacyBatch({LegacyProductEvent("product.updated", NewUuid(), NewUuid())}));
  EXPECT_EQ(res.status, 200) << res.body;
  const SClientResult s_client13 = OpensslSClient(gw.port(), "-tls1_3");
  EXPECT_EQ(s_client13.exit_status, 0) << s_client13.output;
  EXPECT_TRUE(Contains(s_client13.output, "New, TLSv1.3,")) << s_client13.output;
  // A client that lets the server choose gets TLS 1.3.
  HttpClient any = gw.Client();
  EXPECT_EQ(PostLegacy(any, "").status, 200);
  EXPECT_EQ(gw.log().head(), 1u);
}

// The default, min_version "1.2": TLS 1.2 and TLS 1.3 clients are both served.
TEST(Gateway, MinVersion12ServesTls12AndTls13Clients) {
  GatewayHarness gw;  // TlsVersion::kTls1_2
  ASSERT_EQ(gw.config().gateway.tls->min_version, TlsVersion::kTls1_2);
  for (const int version : {TLS1_2_VERSION, TLS1_3_VERSION}) {
    HttpClient client(gw.port(), HttpClient::Options{true, version, version});
    ASSERT_FALSE(client.Connect().has_value()) << "TLS version " << version;
    const HttpResponse res = PostLegacy(
        client, LegacyBatch({LegacyProductEvent("product.updated", NewUuid(), NewUuid())}));
    EXPECT_EQ(res.status, 200) << "TLS version " << version << ": " << res.body;
  }
  EXPECT_EQ(gw.log().head(), 2u);
  for (const auto& [flag, seen] :
       {std::pair{"-tls1_2", "New, TLSv1.2,"}, std::pair{"-tls1_3", "New, TLSv1.3,"}}) {
    const SClientResult result = OpensslSClient(gw.port(), flag);
    EXPECT_EQ(result.exit_status, 0) << flag << "\n" << result.output;
    EXPECT_TRUE(Contains(result.output, seen)) << flag << "\n" << result.output;
  }
}

TEST(Gateway, PlainHttpGatewayWhenTlsNotConfigured) {
  GatewayHarness::Options options;
  options.tls = false;
  GatewayHarness gw(options);
  HttpClient client = gw.Client();
  HttpResponse res = PostLegacy(
      client, LegacyBatch({LegacyProductEvent("product.updated", NewUuid(), NewUuid())}));
  EXPECT_EQ(res.status, 200) << res.body;
}

TEST(Gateway, EventsSurviveRestart) {
  GatewayHarness gw;
  {
    HttpClient client = gw.Client();
    for (int i = 0; i < 5; ++i) {
      ASSERT_EQ(
          PostLegacy(client,
                     LegacyBatch({LegacyProductEvent("product.updated", NewUuid(), NewUuid())}))
              .status,
          200);
    }
  }
  gw.Restart();
  EXPECT_EQ(gw.log().head(), 5u);
  HttpClient client = gw.Client();
  ASSERT_EQ(
      PostLegacy(client, LegacyBatch({LegacyProductEvent("product.updated", NewUuid(), NewUuid())}))
          .status,
      200);
  EXPECT_EQ(gw.AllEvents().back().sequence(), 6u);
}

TEST(Gateway, ConnectionLimitRefusesExtraConnectionsOthersStillServed) {
  GatewayHarness::Options options;
  options.tweak = [](Config& config) { config.gateway.max_connections = 2; };
  GatewayHarness gw(options);
  HttpClient a = gw.Client(), b = gw.Client();
  ASSERT_FALSE(a.Connect().has_value());
  ASSERT_FALSE(b.Connect().has_value());
  HttpClient c = gw.Client();
  HttpResponse refused = PostLegacy(c, "");
  EXPECT_EQ(refused.status, 0) << refused.body;  // closed at accept
  EXPECT_EQ(PostLegacy(a, "").status, 200);
  a.Close();
  for (int i = 0; i < 3000 && gw.gateway().stats().connections_open >= 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  HttpClient d = gw.Client();
  EXPECT_EQ(PostLegacy(d, "").status, 200);
  EXPECT_GE(gw.gateway().stats().connections_refused, 1u);
}

TEST(Gateway, SlowHeadersAreCutOffAtHeaderTimeoutOthersStillServed) {
  GatewayHarness::Options options;
  options.tweak = [](Config& config) {
    config.gateway.header_timeout = std::chrono::milliseconds(400);
  };
  GatewayHarness gw(options);
  HttpClient slow = gw.Client();
  ASSERT_FALSE(slow.Connect().has_value());
  // Slowloris: one header byte every 100 ms never completes the header in time.
  const std::string header = "POST /hooks/legacy HTTP/1.1\r\nHost: x\r\nX-Slow: ";
  // Cut off before the header is complete: by the byte count, not a clock. The drip takes
  // header.size() x 100 ms (4.7 s), over ten times the header timeout; a writer notices a closed
  // connection within a write or two.
  std::size_t written = 0;
  std::thread drip([&] {
    for (char c : header) {
      if (!slow.WriteRaw(std::string(1, c))) break;
      ++written;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });
  // Meanwhile a well-behaved client is served.
  HttpClient other = gw.Client();
  EXPECT_EQ(PostLegacy(other, "").status, 200);
  drip.join();
  EXPECT_FALSE(slow.connected());
  EXPECT_LT(written, header.size()) << "the whole slow header went through";
  for (int i = 0; i < 3000 && gw.gateway().stats().unrouted_by_code[408] == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(gw.gateway().stats().unrouted_by_code[408], 1u);
}

}  // namespace
}  // namespace pimgate
