// AkeneoClient against the FakePim over real sockets, with real TLS (self-signed certificate) and
// plain HTTP: OAuth (token reuse, refresh before expiry, renewal on 401, refused credentials),
// retries (429 with Retry-After, 5xx, a PIM that is down, timeouts), search_after paging,
// concurrency limits, certificate verification, shutdown, and the URL helpers.
#include "pim/akeneo_client.h"

#include <atomic>
#include <chrono>
#include <future>
#include <latch>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/civil_time.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "spdlog/sinks/ringbuffer_sink.h"
#include "spdlog/spdlog.h"
#include "tests/testing/connect_proxy.h"
#include "tests/testing/fake_pim.h"
#include "tests/testing/test_env.h"
#include "tests/testing/typed_values.h"

namespace pimgate {
namespace {

using ::pimgate::testing::ConnectProxy;
using ::pimgate::testing::FakePim;
using ::pimgate::testing::NewUuid;
using ::std::chrono::milliseconds;
using ::std::chrono::seconds;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kProducts[] = "/api/rest/v1/products-uuid";
constexpr char kProductModels[] = "/api/rest/v1/product-models";
// 2026-11-20T10:00:00Z.
constexpr int64_t kBaseTimeUs = int64_t{1795168800} * 1'000'000;

RestConfig ConfigFor(const FakePim& pim) {
  RestConfig config;
  config.base_url = testing::UrlOf(pim.base_url());
  config.client_id = "pim-client";
  config.secret = Secret{"pim-secret", "inline"};
  config.username = "pim-user";
  config.password = Secret{"pim-password", "inline"};
  config.insecure_skip_verify = true;
  config.allow_insecure_http = true;
  config.timeout = seconds(10);
  config.max_attempts = 4;
  config.initial_backoff = milliseconds(20);
  config.max_backoff = milliseconds(200);
  return config;
}

std::unique_ptr<AkeneoClient> MakeClient(const RestConfig& config) {
  absl::StatusOr<std::unique_ptr<AkeneoClient>> client = AkeneoClient::Create(config);
  EXPECT_TRUE(client.ok()) << client.status();
  return client.ok() ? *std::move(client) : nullptr;
}

// Requests the fake answered whose target starts with `prefix`, in order.
std::vector<FakePim::Request> RequestsTo(const FakePim& pim, const std::string& prefix) {
  std::vector<FakePim::Request> out;
  for (const FakePim::Request& request : pim.requests()) {
    if (absl::StartsWith(request.target, prefix)) out.push_back(request);
  }
  return out;
}

std::string ProductTarget(const std::string& uuid) { return absl::StrCat(kProducts, "/", uuid); }

// ---- URL helpers --------------------------------------------------------------------------------

TEST(AkeneoUrlTest, UrlEncodeKeepsOnlyUnreserved) {
  EXPECT_EQ(UrlEncode("AZaz09-._~"), "AZaz09-._~");
  EXPECT_EQ(UrlEncode(""), "");
  EXPECT_EQ(UrlEncode("a b+c/d?e=f&g"), "a%20b%2Bc%2Fd%3Fe%3Df%26g");
  EXPECT_EQ(UrlEncode("{\"updated\":[]}"), "%7B%22updated%22%3A%5B%5D%7D");
  EXPECT_EQ(UrlEncode("\xc3\xa9\x01\xff"), "%C3%A9%01%FF");
}

TEST(AkeneoUrlTest, SearchAfterTarget) {
  EXPECT_EQ(SearchAfterTarget(kProducts, ""),
            "/api/rest/v1/products-uuid?limit=100&pagination_type=search_after");
  EXPECT_EQ(SearchAfterTarget(kProductModels,
                              "{\"updated\":[{\"operator\":\">\",\"value\":"
                              "\"2026-11-20 10:00:00\"}]}",
                              25),
            "/api/rest/v1/product-models?search=%7B%22updated%22%3A%5B%7B%22operator%22%3A%22%3E"
            "%22%2C%22value%22%3A%222026-11-20%2010%3A00%3A00%22%7D%5D%7D&limit=25&pagination_"
            "type=search_after");
}

TEST(AkeneoUrlTest, AkeneoSearchTimeIsServerWallClockSecondsRoundedDown) {
  const absl::TimeZone utc = absl::UTCTimeZone();
  EXPECT_EQ(AkeneoSearchTime(0, utc), "1970-01-01 00:00:00");
  EXPECT_EQ(AkeneoSearchTime(kBaseTimeUs, utc), "2026-11-20 10:00:00");
  EXPECT_EQ(AkeneoSearchTime(kBaseTimeUs + 59'999'999, utc), "2026-11-20 10:00:59");
  EXPECT_EQ(AkeneoSearchTime(-1, utc), "1969-12-31 23:59:59");
  EXPECT_EQ(AkeneoSearchTime(kBaseTimeUs, absl::FixedTimeZone(-5 * 3600)), "2026-11-20 05:00:00");
  EXPECT_EQ(AkeneoSearchTime(kBaseTimeUs, absl::FixedTimeZone(5 * 3600 + 1800)),
            "2026-11-20 15:30:00");
}

TEST(AkeneoUrlTest, AkeneoSearchTimeIsNeverReadAfterTheInstantWhenDstEnds) {
  absl::TimeZone new_york;
  ASSERT_TRUE(absl::LoadTimeZone("America/New_York", &new_york));
  // 2026-11-01: 01:00-02:00 happens twice (EDT -04:00, then EST -05:00).
  const int64_t first_0130 = absl::ToUnixMicros(
      absl::FromCivil(absl::CivilSecond(2026, 11, 1, 5, 30, 0), absl::UTCTimeZone()));  // 01:30 EDT
  const int64_t second_0130 = first_0130 + int64_t{3600} * 1'000'000;                   // 01:30 EST
  // "01:30:00" could be read as the EST one, an hour late: an earlier time is written.
  EXPECT_EQ(AkeneoSearchTime(first_0130, new_york), "2026-11-01 00:30:00");
  EXPECT_EQ(AkeneoSearchTime(second_0130, new_york), "2026-11-01 01:30:00");
  // Summer and winter offsets at their instants, not today's.
  EXPECT_EQ(AkeneoSearchTime(absl::ToUnixMicros(absl::FromCivil(
                                 absl::CivilSecond(2026, 7, 1, 12, 0, 0), absl::UTCTimeZone())),
                             new_york),
            "2026-07-01 08:00:00");
  EXPECT_EQ(AkeneoSearchTime(kBaseTimeUs, new_york), "2026-11-20 05:00:00");
}

TEST(AkeneoUrlTest, PimTimeZones) {
  absl::StatusOr<absl::TimeZone> zone = ParsePimTimeZone("-05:00");
  ASSERT_TRUE(zone.ok()) << zone.status();
  EXPECT_EQ(*zone, absl::FixedTimeZone(-5 * 3600));
  EXPECT_EQ(*ParsePimTimeZone("+05:30"), absl::FixedTimeZone(5 * 3600 + 1800));
  EXPECT_EQ(*ParsePimTimeZone("+00:00"), absl::UTCTimeZone());
  EXPECT_EQ(*ParsePimTimeZone("Z"), absl::UTCTimeZone());
  ASSERT_TRUE(ParsePimTimeZone("UTC").ok());
  ASSERT_TRUE(ParsePimTimeZone("America/New_York").ok());
  EXPECT_EQ(ParsePimTimeZone("America/Nowhere").status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(ParsePimTimeZone("America/Nowhere").status().message()),
              HasSubstr("tz database"));
  for (const char* bad : {"-5", "-05", "+15:00", "-05:60", "05:00", "", "localtime", "a b"}) {
    EXPECT_FALSE(ParsePimTimeZone(bad).ok()) << bad;
  }
  EXPECT_THAT(std::string(ParsePimTimeZone("-5").status().message()), HasSubstr("+HH:MM"));
  EXPECT_EQ(FormatUtcOffset(-5 * 3600), "-05:00");
  EXPECT_EQ(FormatUtcOffset(0), "+00:00");
  EXPECT_EQ(FormatUtcOffset(5 * 3600 + 1800), "+05:30");
  EXPECT_EQ(FormatUtcOffset(-(14 * 3600)), "-14:00");
}

TEST(AkeneoUrlTest, NextPageTargets) {
  const std::string base = "https://pim.example.com";
  bool other = true;
  EXPECT_EQ(*NextPageTarget(base, "https://pim.example.com/api/rest/v1/products?a=1", &other),
            "/api/rest/v1/products?a=1");
  EXPECT_FALSE(other);
  EXPECT_EQ(*NextPageTarget(base, "https://PIM.example.com:443/x", &other), "/x");
  EXPECT_FALSE(other);
  // Behind a TLS-terminating proxy: same host, http, another port.
  EXPECT_EQ(*NextPageTarget(base, "http://pim.example.com/api/rest/v1/products?a=1", &other),
            "/api/rest/v1/products?a=1");
  EXPECT_TRUE(other);
  EXPECT_EQ(*NextPageTarget(base, "http://pim.example.com:8080/x?y", &other), "/x?y");
  EXPECT_TRUE(other);
  EXPECT_EQ(*NextPageTarget("http://127.0.0.1:8081", "https://127.0.0.1/x", &other), "/x");
  EXPECT_TRUE(other);
  EXPECT_EQ(*NextPageTarget(base, "/api/rest/v1/products?b", &other), "/api/rest/v1/products?b");
  EXPECT_FALSE(other);
  // Any other host is refused.
  for (const char* href :
       {"https://evil.example.com/api/rest/v1/products", "https://pim.example.com.evil.io/x",
        "https://user@pim.example.com/x", "ftp://pim.example.com/x", "pim.example.com/x"}) {
    absl::StatusOr<std::string> target = NextPageTarget(base, href, &other);
    EXPECT_EQ(target.status().code(), absl::StatusCode::kInvalidArgument) << href;
  }
  EXPECT_THAT(std::string(NextPageTarget(base, "https://evil.example.com/x").status().message()),
              HasSubstr("refusing to follow"));
}

// ---- Create -------------------------------------------------------------------------------------

TEST(AkeneoClientCreateTest, RefusesBadConfigurations) {
  RestConfig config;
  config.base_url = testing::UrlOf("http://127.0.0.1:1");
  config.client_id = "c";
  config.secret = Secret{"s", "inline"};
  config.username = "u";
  config.password = Secret{"p", "inline"};
  absl::StatusOr<std::unique_ptr<AkeneoClient>> client = AkeneoClient::Create(config);
  EXPECT_EQ(client.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(client.status().message()), HasSubstr("allow_insecure_http"));

  config.base_url = testing::UrlOf("https://pim.example.com/api", /*allow_path=*/true);
  client = AkeneoClient::Create(config);
  EXPECT_EQ(client.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(client.status().message()), HasSubstr("must not have a path"));

  config.base_url = testing::UrlOf("https://pim.example.com");
  config.ca_file = "/nonexistent/ca.pem";
  client = AkeneoClient::Create(config);
  EXPECT_EQ(client.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(client.status().message()), HasSubstr("/nonexistent/ca.pem"));

  // A PIM that is down at start is not an error: Create does not connect.
  config.ca_file.clear();
  config.base_url = testing::UrlOf("https://127.0.0.1:1");
  EXPECT_TRUE(AkeneoClient::Create(config).ok());
}

// ---- OAuth --------------------------------------------------------------------------------------

TEST(AkeneoClientTest, TokenObtainedOnceAndReusedOverTls) {
  FakePim pim;
  const std::string uuid = NewUuid();
  pim.PutProduct(uuid, kBaseTimeUs, R"({"family":"shoes","categories":["summer"]})", "sku-1");
  std::unique_ptr<AkeneoClient> client = MakeClient(ConfigFor(pim));
  ASSERT_NE(client, nullptr);
  for (int i = 0; i < 5; ++i) {
    absl::StatusOr<std::string> body = client->Get(ProductTarget(uuid));
    ASSERT_TRUE(body.ok()) << body.status();
    EXPECT_THAT(*body, HasSubstr("\"identifier\":\"sku-1\""));
    EXPECT_THAT(*body, HasSubstr("\"family\":\"shoes\""));
    // The PIM writes its server time zone's offset (the fake's default, UTC-05:00).
    EXPECT_THAT(*body, HasSubstr("\"updated\":\"2026-11-20T05:00:00-05:00\""));
  }
  EXPECT_EQ(pim.token_requests(), 1);
  EXPECT_EQ(pim.refresh_requests(), 0);
  const AkeneoClientStats stats = client->stats();
  EXPECT_EQ(stats.token_requests, 1u);
  EXPECT_EQ(stats.calls, 5u);
  EXPECT_EQ(stats.retries, 0u);
  EXPECT_EQ(stats.failures, 0u);
  // Kept alive: at most one connection per worker.
  EXPECT_LE(pim.connections_accepted(), 4);
}

TEST(AkeneoClientTest, OneWorkerReusesOneConnection) {
  FakePim pim;
  const std::string uuid = NewUuid();
  pim.PutProduct(uuid, kBaseTimeUs);
  RestConfig config = ConfigFor(pim);
  config.max_concurrency = 1;
  std::unique_ptr<AkeneoClient> client = MakeClient(config);
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(client->Get(ProductTarget(uuid)).ok());
  EXPECT_EQ(pim.connections_accepted(), 1);  // the token request and 10 GETs on one connection
}

TEST(AkeneoClientTest, PlainHttpWhenAllowed) {
  FakePim::Options options;
  options.tls = false;
  FakePim pim(options);
  ASSERT_TRUE(absl::StartsWith(pim.base_url(), "http://"));
  const std::string uuid = NewUuid();
  pim.PutProduct(uuid, kBaseTimeUs);
  std::unique_ptr<AkeneoClient> client = MakeClient(ConfigFor(pim));
  absl::StatusOr<std::string> body = client->Get(ProductTarget(uuid));
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_THAT(*body, HasSubstr(uuid));
}

TEST(AkeneoClientTest, TokenRefreshedBeforeExpiry) {
  FakePim::Options options;
  options.token_ttl = seconds(2);  // renewed in its last 10%: after 1.8 s
  FakePim pim(options);
  const std::string uuid = NewUuid();
  pim.PutProduct(uuid, kBaseTimeUs);
  std::unique_ptr<AkeneoClient> client = MakeClient(ConfigFor(pim));
  ASSERT_TRUE(client->Get(ProductTarget(uuid)).ok());
  EXPECT_EQ(pim.refresh_requests(), 0);
  std::this_thread::sleep_for(milliseconds(1900));
  absl::StatusOr<std::string> body = client->Get(ProductTarget(uuid));
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_EQ(pim.refresh_requests(), 1);
  EXPECT_EQ(pim.token_requests(), 2);
  // Renewed before use: the PIM never had to refuse a token.
  for (const FakePim::Request& request : pim.requests()) {
    EXPECT_NE(request.status, 401) << request.target;
  }
}

// A PIM configured so that tokens "never" expire may say so with a huge expires_in: the token is
// kept (for a year at most), not renewed before every call, and the deadline arithmetic does
// not overflow (UBSan stopped the process on it).
TEST(AkeneoClientTest, HugeTokenLifetimeIsKept) {
  FakePim::Options options;
  options.token_ttl = seconds(int64_t{1} << 40);  // ~35 000 years
  FakePim pim(options);
  const std::string uuid = NewUuid();
  pim.PutProduct(uuid, kBaseTimeUs);
  std::unique_ptr<AkeneoClient> client = MakeClient(ConfigFor(pim));
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<std::string> body = client->Get(ProductTarget(uuid));
    ASSERT_TRUE(body.ok()) << body.status();
  }
  EXPECT_EQ(pim.token_requests(), 1);
  EXPECT_EQ(pim.refresh_requests(), 0);
}

TEST(AkeneoClientTest, RevokedTokenRenewedTransparentlyOn401) {
  FakePim pim;
  const std::string uuid = NewUuid();
  pim.PutProduct(uuid, kBaseTimeUs);
  std::unique_ptr<AkeneoClient> client = MakeClient(ConfigFor(pim));
  ASSERT_TRUE(client->Get(ProductTarget(uuid)).ok());
  pim.ExpireTokens();
  pim.ClearRequests();
  absl::StatusOr<std::string> body = client->Get(ProductTarget(uuid));
  ASSERT_TRUE(body.ok()) << body.status();
  const std::vector<FakePim::Request> requests = pim.requests();
  ASSERT_EQ(requests.size(), 3u);
  EXPECT_EQ(requests[0].status, 401);
  EXPECT_EQ(requests[1].target, "/api/oauth/v1/token");
  EXPECT_EQ(requests[1].status, 200);
  EXPECT_EQ(requests[2].status, 200);
  EXPECT_EQ(pim.refresh_requests(), 1);  // the refresh token was still good
  EXPECT_EQ(client->stats().retries, 1u);
}

TEST(AkeneoClientTest, WrongPasswordIsUnauthenticatedWithoutTheSecret) {
  FakePim pim;
  RestConfig config = ConfigFor(pim);
  config.password = Secret{"wrong-password-123", "inline"};
  std::unique_ptr<AkeneoClient> client = MakeClient(config);
  absl::StatusOr<std::string> body = client->Get(kProducts);
  ASSERT_EQ(body.status().code(), absl::StatusCode::kUnauthenticated) << body.status();
  const std::string message(body.status().message());
  EXPECT_THAT(message, HasSubstr("No user found for the given username and password"));
  EXPECT_THAT(message, HasSubstr("pim-user"));
  EXPECT_THAT(message, Not(HasSubstr("wrong-password-123")));
  EXPECT_THAT(message, Not(HasSubstr("pim-secret")));
  // A refused grant is not retried.
  EXPECT_EQ(pim.token_requests(), 1);
  EXPECT_TRUE(RequestsTo(pim, kProducts).empty());
  EXPECT_EQ(client->stats().failures, 1u);
}

TEST(AkeneoClientTest, WrongClientSecretIsUnauthenticated) {
  FakePim pim;
  RestConfig config = ConfigFor(pim);
  config.secret = Secret{"wrong-client-secret", "inline"};
  std::unique_ptr<AkeneoClient> client = MakeClient(config);
  absl::StatusOr<std::string> body = client->Get(kProducts);
  ASSERT_EQ(body.status().code(), absl::StatusCode::kUnauthenticated) << body.status();
  EXPECT_THAT(std::string(body.status().message()), HasSubstr("does not match any client"));
  EXPECT_THAT(std::string(body.status().message()), Not(HasSubstr("wrong-client-secret")));
}

// Logs at debug level through a token renewal, a 401, a 429 and a 5xx: no credential or token.
TEST(AkeneoClientTest, LogsNeverCarrySecretsOrTokens) {
  auto sink = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(1000);
  auto logger = std::make_shared<spdlog::logger>("capture", sink);
  logger->set_level(spdlog::level::trace);
  std::shared_ptr<spdlog::logger> previous = spdlog::default_logger();
  spdlog::set_default_logger(logger);

  FakePim pim;
  const std::string uuid = NewUuid();
  pim.PutProduct(uuid, kBaseTimeUs);
  {
    std::unique_ptr<AkeneoClient> client = MakeClient(ConfigFor(pim));
    ASSERT_TRUE(client->Get(ProductTarget(uuid)).ok());
    pim.ExpireTokens();
    pim.FailNextCalls(1, 503);
    ASSERT_TRUE(client->Get(ProductTarget(uuid)).ok());
    pim.FailNextCalls(1, 429, 0);
    ASSERT_TRUE(client->Get(ProductTarget(uuid)).ok());
    RestConfig wrong = ConfigFor(pim);
    wrong.password = Secret{"wrong-password-456", "inline"};
    std::unique_ptr<AkeneoClient> refused = MakeClient(wrong);
    EXPECT_FALSE(refused->Get(kProducts).ok());
  }
  spdlog::set_default_logger(previous);
  const std::vector<std::string> lines = sink->last_formatted();
  EXPECT_FALSE(lines.empty());
  for (const std::string& line : lines) {
    EXPECT_THAT(line, Not(HasSubstr("pim-password")));
    EXPECT_THAT(line, Not(HasSubstr("wrong-password-456")));
    EXPECT_THAT(line, Not(HasSubstr("pim-secret")));
    EXPECT_THAT(line, Not(HasSubstr("Bearer")));
    EXPECT_THAT(line, Not(HasSubstr("Basic")));
    EXPECT_THAT(line, Not(HasSubstr("refresh_token\":")));
  }
}

// A token endpoint whose error answers echo the request (a framework's debug page, a proxy):
// its 5xx (retried, logged at debug, then the call's error) and its refusal carry the password,
// the client secret and the Basic credential back. None of them reaches a log line or an error.
TEST(AkeneoClientTest, TokenErrorsEchoingTheRequestAreScrubbed) {
  auto sink = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(1000);
  auto logger = std::make_shared<spdlog::logger>("capture", sink);
  logger->set_level(spdlog::level::trace);
  std::shared_ptr<spdlog::logger> previous = spdlog::default_logger();
  spdlog::set_default_logger(logger);

  FakePim pim;
  const RestConfig config = ConfigFor(pim);
  const std::string basic = absl::Base64Escape("pim-client:pim-secret");
  std::vector<std::string> errors;
  {
    std::unique_ptr<AkeneoClient> client = MakeClient(config);
    FakePim::Fault echo;
    echo.path = "/api/oauth/v1/token";
    echo.message = "Error while handling {authorization} {request}";
    for (const int status : {500, 503, 429, 408}) {
      echo.status = status;
      echo.retry_after_seconds = status == 429 ? 0 : -1;
      echo.count = config.max_attempts;  // every attempt
      pim.InjectFault(echo);
      absl::StatusOr<std::string> body = client->Get(kProducts);
      EXPECT_EQ(body.status().code(), absl::StatusCode::kUnavailable) << body.status();
      errors.emplace_back(body.status().message());
    }
    echo.status = 400;
    echo.count = 1;
    pim.InjectFault(echo);
    absl::StatusOr<std::string> body = client->Get(kProducts);
    EXPECT_EQ(body.status().code(), absl::StatusCode::kUnauthenticated) << body.status();
    errors.emplace_back(body.status().message());
  }
  spdlog::set_default_logger(previous);
  EXPECT_EQ(pim.pending_faults(), 0);
  std::vector<std::string> texts = sink->last_formatted();
  EXPECT_FALSE(texts.empty());
  texts.insert(texts.end(), errors.begin(), errors.end());
  for (const std::string& text : texts) {
    EXPECT_THAT(text, Not(HasSubstr("pim-password")));
    EXPECT_THAT(text, Not(HasSubstr("pim-secret")));
    EXPECT_THAT(text, Not(HasSubstr(basic)));
  }
  // The echo did come back, redacted (positive control).
  for (const std::string& error : errors) {
    EXPECT_THAT(error, HasSubstr("\"password\":\"<redacted>\"")) << error;
    EXPECT_THAT(error, HasSubstr("Basic <redacted>")) << error;
  }
}

// ---- Retries ------------------------------------------------------------------------------------

TEST(AkeneoClientTest, RetryAfterOf429IsHonoured) {
  FakePim pim;
  const std::string uuid = NewUuid();
  pim.PutProduct(uuid, kBaseTimeUs);
  std::unique_ptr<AkeneoClient> client = MakeClient(ConfigFor(pim));  // backoff 20 ms
  ASSERT_TRUE(client->Get(ProductTarget(uuid)).ok());
  pim.FailNextCalls(1, 429, 1);
  pim.ClearRequests();
  const absl::Time start = absl::Now();
  absl::StatusOr<std::string> body = client->Get(ProductTarget(uuid));
  const absl::Duration elapsed = absl::Now() - start;
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_GE(elapsed, absl::Milliseconds(950));
  const std::vector<FakePim::Request> requests = RequestsTo(pim, kProducts);
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_EQ(requests[0].status, 429);
  EXPECT_EQ(requests[1].status, 200);
  EXPECT_EQ(client->stats().throttled, 1u);
  EXPECT_EQ(client->stats().retries, 1u);
}

TEST(AkeneoClientTest, ServerErrorsRetriedThenSucceed) {
  FakePim pim;
  const std::string uuid = NewUuid();
  pim.PutProduct(uuid, kBaseTimeUs);
  std::unique_ptr<AkeneoClient> client = MakeClient(ConfigFor(pim));
  pim.FailNextCalls(2, 500);
  absl::StatusOr<std::string> body = client->Get(ProductTarget(uuid));
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_EQ(RequestsTo(pim, kProducts).size(), 3u);
  EXPECT_EQ(client->stats().retries, 2u);
}

TEST(AkeneoClientTest, RequestTimeoutIsRetried) {
  FakePim pim;
  const std::string uuid = NewUuid();
  pim.PutProduct(uuid, kBaseTimeUs);
  std::unique_ptr<AkeneoClient> client = MakeClient(ConfigFor(pim));
  pim.FailNextCalls(2, 408);
  absl::StatusOr<std::string> body = client->Get(ProductTarget(uuid));
  ASSERT_TRUE(body.ok()) << body.status();
  const std::vector<FakePim::Request> calls = RequestsTo(pim, kProducts);
  ASSERT_EQ(calls.size(), 3u);
  EXPECT_EQ(calls[0].status, 408);
  EXPECT_EQ(calls[1].status, 408);
  EXPECT_EQ(calls[2].status, 200);
  EXPECT_EQ(client->stats().retries, 2u);

  // Every attempt answered 408: Unavailable, like 5xx.
  RestConfig config = ConfigFor(pim);
  config.max_attempts = 2;
  std::unique_ptr<AkeneoClient> impatient = MakeClient(config);
  pim.FailNextCalls(2, 408);
  body = impatient->Get(ProductTarget(uuid));
  EXPECT_EQ(body.status().code(), absl::StatusCode::kUnavailable) << body.status();
  EXPECT_THAT(std::string(body.status().message()), HasSubstr("HTTP 408"));
}

TEST(AkeneoClientTest, ServerErrorsExhaustAttemptsThenUnavailable) {
  FakePim pim;
  RestConfig config = ConfigFor(pim);
  config.max_attempts = 3;
  std::unique_ptr<AkeneoClient> client = MakeClient(config);
  pim.FailNextCalls(100, 503);
  absl::StatusOr<std::string> body = client->Get(kProducts);
  ASSERT_EQ(body.status().code(), absl::StatusCode::kUnavailable) << body.status();
  EXPECT_THAT(std::string(body.status().message()), HasSubstr("after 3 attempts"));
  EXPECT_THAT(std::string(body.status().message()), HasSubstr("HTTP 503"));
  EXPECT_EQ(RequestsTo(pim, kProducts).size(), 3u);
  const AkeneoClientStats stats = client->stats();
  EXPECT_EQ(stats.retries, 2u);
  EXPECT_EQ(stats.failures, 1u);
}

TEST(AkeneoClientTest, ClientErrorsAreNotRetried) {
  FakePim pim;
  std::unique_ptr<AkeneoClient> client = MakeClient(ConfigFor(pim));
  absl::StatusOr<std::string> missing = client->Get(ProductTarget(NewUuid()));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound) << missing.status();
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("does not exist"));
  EXPECT_TRUE(IsAkeneoNotFound(missing.status()));  // the PIM's own {"code":404,...}
  EXPECT_FALSE(IsAkeneoNotFound(absl::NotFoundError("a 404 from elsewhere")));

  absl::StatusOr<std::string> too_many = client->Get(absl::StrCat(kProducts, "?limit=101"));
  EXPECT_EQ(too_many.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(too_many.status().message()), HasSubstr("HTTP 422"));
  EXPECT_THAT(std::string(too_many.status().message()),
              HasSubstr("You cannot request more than 100 items."));

  // Akeneo cannot search product models by code.
  absl::StatusOr<AkeneoPage> by_code = client->GetPage(
      SearchAfterTarget(kProductModels, R"({"code":[{"operator":"IN","value":["a","b"]}]})"));
  EXPECT_EQ(by_code.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(by_code.status().message()),
              HasSubstr("Filter on property \"code\" is not supported"));

  absl::StatusOr<std::string> unknown = client->Get("/api/rest/v1/nothing-here");
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(IsAkeneoNotFound(unknown.status()));
  EXPECT_EQ(RequestsTo(pim, "/api/rest/v1/").size(), 4u);  // one attempt each
  EXPECT_EQ(client->stats().retries, 0u);
}

TEST(AkeneoClientTest, PimDownIsUnavailableThenRecoversAfterResume) {
  FakePim pim;
  const std::string uuid = NewUuid();
  pim.PutProduct(uuid, kBaseTimeUs);
  RestConfig config = ConfigFor(pim);
  config.max_attempts = 3;
  std::unique_ptr<AkeneoClient> client = MakeClient(config);
  ASSERT_TRUE(client->Get(ProductTarget(uuid)).ok());  // a kept-alive connection now exists

  pim.Stop();
  absl::StatusOr<std::string> down = client->Get(ProductTarget(uuid));
  ASSERT_EQ(down.status().code(), absl::StatusCode::kUnavailable) << down.status();
  EXPECT_THAT(std::string(down.status().message()), HasSubstr("after 3 attempts"));
  // libcurl words a refused connection "Failed to connect to <host> port <port> ...".
  EXPECT_THAT(std::string(down.status().message()),
              HasSubstr(absl::StrCat("connect to 127.0.0.1 port ", pim.port())));

  pim.Resume();
  absl::StatusOr<std::string> up = client->Get(ProductTarget(uuid));
  ASSERT_TRUE(up.ok()) << up.status();
}

TEST(AkeneoClientTest, KeepAliveConnectionClosedByPimIsReplacedTransparently) {
  FakePim pim;
  const std::string uuid = NewUuid();
  pim.PutProduct(uuid, kBaseTimeUs);
  RestConfig config = ConfigFor(pim);
  config.max_attempts = 1;  // no retry budget: only the stale-connection replacement can help
  config.max_concurrency = 1;
  std::unique_ptr<AkeneoClient> client = MakeClient(config);
  ASSERT_TRUE(client->Get(ProductTarget(uuid)).ok());
  pim.Stop();
  pim.Resume();
  absl::StatusOr<std::string> body = client->Get(ProductTarget(uuid));
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_EQ(client->stats().retries, 0u);
}

TEST(AkeneoClientTest, AnswerAboveSizeLimitIsRefused) {
  FakePim pim;
  const std::string uuid = NewUuid();
  // 65 MiB of values: more than the client's 64 MiB response limit.
  pim.PutProduct(uuid, kBaseTimeUs,
                 absl::StrCat(R"({"values":{"blob":")", std::string(65 << 20, 'x'), R"("}})"));
  RestConfig config = ConfigFor(pim);
  config.max_concurrency = 1;
  std::unique_ptr<AkeneoClient> client = MakeClient(config);
  absl::StatusOr<std::string> body = client->Get(ProductTarget(uuid));
  ASSERT_EQ(body.status().code(), absl::StatusCode::kResourceExhausted) << body.status();
  EXPECT_THAT(std::string(body.status().message()), HasSubstr("larger than 64 MiB"));
  EXPECT_EQ(client->stats().retries, 0u);
  // The connection is dropped and replaced; the client keeps working.
  pim.DeleteProduct(uuid);
  pim.PutProduct(uuid, kBaseTimeUs);
  EXPECT_TRUE(client->Get(ProductTarget(uuid)).ok());
}

TEST(AkeneoClientTest, SlowAnswerIsDeadlineExceeded) {
  FakePim pim;
  RestConfig config = ConfigFor(pim);
  config.timeout = milliseconds(300);
  config.max_attempts = 2;
  std::unique_ptr<AkeneoClient> client = MakeClient(config);
  pim.SetDelay(milliseconds(1500));
  absl::StatusOr<std::string> body = client->Get(kProducts);
  ASSERT_EQ(body.status().code(), absl::StatusCode::kDeadlineExceeded) << body.status();
  EXPECT_THAT(std::string(body.status().message()), HasSubstr("timed out"));
  pim.SetDelay(milliseconds(0));
}

// ---- Paging -------------------------------------------------------------------------------------

TEST(AkeneoClientTest, ForEachPageVisitsEveryItemOnceAcrossPages) {
  FakePim pim;
  std::set<std::string> expected;
  for (int i = 0; i < 257; ++i) {
    const std::string uuid = NewUuid();
    expected.insert(uuid);
    pim.PutProduct(uuid, kBaseTimeUs + int64_t{i} * 1'000'000);
  }
  std::unique_ptr<AkeneoClient> client = MakeClient(ConfigFor(pim));
  std::multiset<std::string> seen;
  std::vector<size_t> page_sizes;
  absl::Status status =
      client->ForEachPage(SearchAfterTarget(kProducts, ""), [&](AkeneoPage& page) {
        page_sizes.push_back(page.items.size());
        for (const google::protobuf::Struct& item : page.items) {
          seen.insert(item.fields().at("uuid").string_value());
          EXPECT_TRUE(item.fields().at("_links").struct_value().fields().contains("self"));
        }
        return absl::OkStatus();
      });
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_EQ(page_sizes, (std::vector<size_t>{100, 100, 57}));
  EXPECT_EQ(seen.size(), expected.size());
  EXPECT_EQ(std::set<std::string>(seen.begin(), seen.end()), expected);
  const std::vector<FakePim::Request> lists = RequestsTo(pim, kProducts);
  ASSERT_EQ(lists.size(), 3u);
  EXPECT_THAT(lists[0].target, Not(HasSubstr("search_after=")));
  EXPECT_THAT(lists[1].target, HasSubstr("search_after="));
  EXPECT_THAT(lists[2].target, HasSubstr("search_after="));
}

TEST(AkeneoClientTest, UpdatedFilterAndUuidSearch) {
  FakePim pim;
  std::vector<std::string> uuids;
  for (int i = 0; i < 30; ++i) {
    uuids.push_back(NewUuid());
    pim.PutProduct(uuids.back(), kBaseTimeUs + int64_t{i} * 60'000'000);  // one a minute
  }
  pim.PutProductModel("model-a", kBaseTimeUs);
  pim.PutProductModel("model-b", kBaseTimeUs + 3600'000'000);
  std::unique_ptr<AkeneoClient> client = MakeClient(ConfigFor(pim));

  // Updated after minute 19: minutes 20 to 29, written as the PIM's wall-clock time.
  const std::string after =
      absl::StrCat(R"({"updated":[{"operator":">","value":")",
                   AkeneoSearchTime(kBaseTimeUs + 19 * 60'000'000, pim.time_zone()), "\"}]}");
  std::set<std::string> seen;
  ASSERT_TRUE(client
                  ->ForEachPage(SearchAfterTarget(kProducts, after, 4),
                                [&](AkeneoPage& page) {
                                  for (const auto& item : page.items) {
                                    seen.insert(item.fields().at("uuid").string_value());
                                  }
                                  return absl::OkStatus();
                                })
                  .ok());
  EXPECT_EQ(seen, std::set<std::string>(uuids.begin() + 20, uuids.end()));

  // Akeneo takes only "YYYY-MM-DD hh:mm:ss" (DateTime::createFromFormat): RFC 3339 is refused.
  absl::StatusOr<AkeneoPage> rfc3339 = client->GetPage(SearchAfterTarget(
      kProductModels, R"({"updated":[{"operator":">","value":"2026-11-20T10:30:00Z"}]})"));
  EXPECT_EQ(rfc3339.status().code(), absl::StatusCode::kFailedPrecondition) << rfc3339.status();
  EXPECT_THAT(std::string(rfc3339.status().message()), HasSubstr("HTTP 422"));
  // Product models filter the same way: 10:30 UTC is 05:30 at the PIM.
  absl::StatusOr<AkeneoPage> models = client->GetPage(SearchAfterTarget(
      kProductModels, R"({"updated":[{"operator":">","value":"2026-11-20 05:30:00"}]})"));
  ASSERT_TRUE(models.ok()) << models.status();
  ASSERT_EQ(models->items.size(), 1u);
  EXPECT_EQ(models->items[0].fields().at("code").string_value(), "model-b");
  EXPECT_TRUE(models->next.empty());

  // Search by a list of uuids (hydration batches).
  const std::string by_uuid = absl::StrCat(R"({"uuid":[{"operator":"IN","value":[")", uuids[3],
                                           R"(",")", uuids[7], R"("]}]})");
  absl::StatusOr<AkeneoPage> batch = client->GetPage(SearchAfterTarget(kProducts, by_uuid));
  ASSERT_TRUE(batch.ok()) << batch.status();
  std::set<std::string> batch_uuids;
  for (const auto& item : batch->items) batch_uuids.insert(item.fields().at("uuid").string_value());
  EXPECT_EQ(batch_uuids, (std::set<std::string>{uuids[3], uuids[7]}));
}

TEST(AkeneoClientTest, ForEachPageFollowsHttpLinksOnTheConfiguredOrigin) {
  FakePim pim;  // https; its links say http on port 80, as behind a TLS-terminating proxy
  pim.SetLinkOrigin("http://127.0.0.1");
  for (int i = 0; i < 5; ++i) pim.PutProduct(NewUuid(), kBaseTimeUs);
  std::unique_ptr<AkeneoClient> client = MakeClient(ConfigFor(pim));
  int items = 0;
  ASSERT_TRUE(client
                  ->ForEachPage(SearchAfterTarget(kProducts, "", 2),
                                [&](AkeneoPage& page) {
                                  items += static_cast<int>(page.items.size());
                                  return absl::OkStatus();
                                })
                  .ok());
  EXPECT_EQ(items, 5);
  EXPECT_EQ(RequestsTo(pim, kProducts).size(), 3u);

  pim.SetLinkOrigin("https://other.example.com");
  absl::Status refused = client->ForEachPage(SearchAfterTarget(kProducts, "", 2),
                                             [](AkeneoPage&) { return absl::OkStatus(); });
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument) << refused;
  EXPECT_THAT(std::string(refused.message()), HasSubstr("other.example.com"));
}

TEST(AkeneoClientTest, OnPageErrorStopsPaging) {
  FakePim pim;
  for (int i = 0; i < 5; ++i) pim.PutProduct(NewUuid(), kBaseTimeUs);
  std::unique_ptr<AkeneoClient> client = MakeClient(ConfigFor(pim));
  int pages = 0;
  absl::Status status = client->ForEachPage(SearchAfterTarget(kProducts, "", 2), [&](AkeneoPage&) {
    ++pages;
    return absl::AbortedError("enough");
  });
  EXPECT_EQ(status.code(), absl::StatusCode::kAborted);
  EXPECT_EQ(pages, 1);
  EXPECT_EQ(RequestsTo(pim, kProducts).size(), 1u);
}

TEST(AkeneoClientTest, NextHrefOnAnotherOriginIsRefused) {
  FakePim pim;
  std::unique_ptr<AkeneoClient> client = MakeClient(ConfigFor(pim));
  // Same host and port, other scheme; other port; other host.
  for (const std::string& target :
       {absl::StrCat("http://127.0.0.1:", pim.port(), kProducts),
        absl::StrCat("https://127.0.0.1:", pim.port() + 1, kProducts),
        std::string("https://evil.example.com/api/rest/v1/products-uuid?limit=100")}) {
    absl::StatusOr<std::string> body = client->Get(target);
    EXPECT_EQ(body.status().code(), absl::StatusCode::kInvalidArgument) << target;
    EXPECT_THAT(std::string(body.status().message()), HasSubstr("refusing to follow")) << target;
  }
  EXPECT_EQ(client->Get("not a url").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(client->Get("/api/rest/v1/products-uuid?x=a b").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(pim.requests().empty());  // not even a token was asked for
  // The same origin, absolute, is followed.
  absl::StatusOr<std::string> ok = client->Get(absl::StrCat(pim.base_url(), kProducts));
  EXPECT_TRUE(ok.ok()) << ok.status();
}

// ---- Concurrency and shutdown -------------------------------------------------------------------

// Fires `count` GetAsync at once and waits for every answer.
std::vector<absl::Status> GetAll(AkeneoClient& client, const std::string& target, int count) {
  absl::Mutex mu;
  std::vector<absl::Status> results;
  std::latch answered(count);
  for (int i = 0; i < count; ++i) {
    client.GetAsync(target, [&](absl::StatusOr<std::string> body) {
      {
        absl::MutexLock lock(&mu);
        results.push_back(body.status());
      }
      answered.count_down();
    });
  }
  answered.wait();
  absl::MutexLock lock(&mu);
  return results;
}

TEST(AkeneoClientTest, AtMostMaxConcurrencyCallsInFlight) {
  FakePim pim;
  const std::string uuid = NewUuid();
  pim.PutProduct(uuid, kBaseTimeUs);
  pim.SetDelay(milliseconds(150));
  std::unique_ptr<AkeneoClient> client = MakeClient(ConfigFor(pim));  // max_concurrency 4
  for (const absl::Status& status : GetAll(*client, ProductTarget(uuid), 20)) {
    EXPECT_TRUE(status.ok()) << status;
  }
  EXPECT_LE(pim.max_concurrent_seen(), 4);
  EXPECT_GE(pim.max_concurrent_seen(), 1);
  EXPECT_EQ(RequestsTo(pim, kProducts).size(), 20u);  // none refused with 429
  EXPECT_EQ(pim.token_requests(), 1);                 // the workers shared one token

  FakePim pim2;
  pim2.PutProduct(uuid, kBaseTimeUs);
  pim2.SetDelay(milliseconds(50));
  RestConfig config = ConfigFor(pim2);
  config.max_concurrency = 2;
  std::unique_ptr<AkeneoClient> client2 = MakeClient(config);
  for (const absl::Status& status : GetAll(*client2, ProductTarget(uuid), 10)) {
    EXPECT_TRUE(status.ok()) << status;
  }
  EXPECT_LE(pim2.max_concurrent_seen(), 2);
}

TEST(AkeneoClientTest, FakePimRefusesTooManyConcurrentCalls) {
  FakePim::Options options;
  options.max_concurrent_calls = 1;
  FakePim pim(options);
  const std::string uuid = NewUuid();
  pim.PutProduct(uuid, kBaseTimeUs);
  pim.SetDelay(milliseconds(200));
  RestConfig config = ConfigFor(pim);
  config.max_concurrency = 4;
  config.max_attempts = 10;
  std::unique_ptr<AkeneoClient> client = MakeClient(config);
  // The PIM allows one call at a time: the others get 429 and are retried until they pass.
  for (const absl::Status& status : GetAll(*client, ProductTarget(uuid), 3)) {
    EXPECT_TRUE(status.ok()) << status;
  }
  EXPECT_GE(client->stats().throttled, 1u);
}

TEST(AkeneoClientTest, ShutdownCancelsQueuedCalls) {
  FakePim pim;
  const std::string uuid = NewUuid();
  pim.PutProduct(uuid, kBaseTimeUs);
  RestConfig config = ConfigFor(pim);
  config.max_concurrency = 1;
  std::unique_ptr<AkeneoClient> client = MakeClient(config);
  ASSERT_TRUE(client->Get(ProductTarget(uuid)).ok());
  pim.SetDelay(milliseconds(500));
  absl::Mutex mu;
  std::vector<absl::Status> results;
  for (int i = 0; i < 5; ++i) {
    client->GetAsync(ProductTarget(uuid), [&](absl::StatusOr<std::string> body) {
      absl::MutexLock lock(&mu);
      results.push_back(body.status());
    });
  }
  std::this_thread::sleep_for(milliseconds(100));  // the first call is in flight
  client->Shutdown();
  absl::MutexLock lock(&mu);
  ASSERT_EQ(results.size(), 5u);  // Shutdown waited for the call in flight
  int cancelled = 0;
  for (const absl::Status& status : results) {
    if (status.code() == absl::StatusCode::kCancelled) ++cancelled;
  }
  EXPECT_GE(cancelled, 4);
  EXPECT_LE(RequestsTo(pim, kProducts).size(), 2u);

  // Later calls are cancelled at once.
  absl::StatusOr<std::string> after = client->Get(ProductTarget(uuid));
  EXPECT_EQ(after.status().code(), absl::StatusCode::kCancelled);
  client->Shutdown();  // idempotent
}

TEST(AkeneoClientTest, ShutdownInterruptsBackoff) {
  FakePim pim;
  RestConfig config = ConfigFor(pim);
  config.initial_backoff = seconds(30);
  config.max_backoff = seconds(30);
  std::unique_ptr<AkeneoClient> client = MakeClient(config);
  pim.FailNextCalls(10, 503);
  std::promise<absl::Status> result;
  client->GetAsync(
      kProducts, [&result](absl::StatusOr<std::string> body) { result.set_value(body.status()); });
  while (RequestsTo(pim, kProducts).empty()) std::this_thread::sleep_for(milliseconds(10));
  client->Shutdown();
  EXPECT_EQ(result.get_future().get().code(), absl::StatusCode::kCancelled);
}

// The last reference dropped on one of the client's own workers, as a Hydrator's callbacks do when
// the Hydrator is gone before they have unwound: the client is destroyed on that worker, which
// then goes on running after the destructor has returned. The call queued behind it is still
// cancelled, not dropped uncalled (and under ASan, any use of freed client state shows).
TEST(AkeneoClientTest, LastReferenceDroppedOnItsOwnWorkerCancelsQueuedCalls) {
  FakePim pim;
  const std::string uuid = NewUuid();
  pim.PutProduct(uuid, kBaseTimeUs);
  RestConfig config = ConfigFor(pim);
  config.max_concurrency = 1;  // one worker: it runs the first callback, the second call waits
  std::shared_ptr<AkeneoClient> client = MakeClient(config);
  ASSERT_NE(client, nullptr);

  absl::Notification released;  // the test no longer holds the client
  absl::Notification first_done;
  absl::Status first;
  bool was_last = false;
  client->GetAsync(ProductTarget(uuid), [keep = client, &released, &first, &was_last,
                                         &first_done](absl::StatusOr<std::string> body) mutable {
    first = body.status();
    released.WaitForNotification();
    was_last = keep.use_count() == 1;
    keep.reset();  // ~AkeneoClient, on this worker
    first_done.Notify();
  });
  // Tells when the second callback is destroyed: after it ran, or unrun with the client's queue.
  struct Sentinel {
    explicit Sentinel(absl::Notification* gone) : gone(gone) {}
    ~Sentinel() { gone->Notify(); }
    absl::Notification* const gone;
  };
  absl::Notification second_gone;
  auto sentinel = std::make_shared<Sentinel>(&second_gone);
  bool second_called = false;
  absl::Status second;
  client->GetAsync(ProductTarget(uuid), [sentinel = std::move(sentinel), &second_called,
                                         &second](absl::StatusOr<std::string> body) {
    second_called = true;
    second = body.status();
  });
  client.reset();
  released.Notify();
  first_done.WaitForNotification();
  second_gone.WaitForNotification();

  EXPECT_TRUE(first.ok()) << first;
  EXPECT_TRUE(was_last);
  ASSERT_TRUE(second_called);
  EXPECT_EQ(second.code(), absl::StatusCode::kCancelled) << second;
  EXPECT_EQ(RequestsTo(pim, kProducts).size(), 1u);
}

// ---- Certificate verification -------------------------------------------------------------------

TEST(AkeneoClientTest, VerificationRefusesSelfSignedCertificateWithoutCaFile) {
  FakePim pim;
  RestConfig config = ConfigFor(pim);
  config.insecure_skip_verify = false;
  std::unique_ptr<AkeneoClient> client = MakeClient(config);
  absl::StatusOr<std::string> body = client->Get(kProducts);
  ASSERT_EQ(body.status().code(), absl::StatusCode::kUnavailable) << body.status();
  const std::string message(body.status().message());
  EXPECT_THAT(message, HasSubstr("certificate verification failed"));
  EXPECT_THAT(message, HasSubstr("self-signed"));
  EXPECT_THAT(message, HasSubstr("rest.ca_file"));
  // Not retried: the certificate would fail the same way again.
  EXPECT_EQ(client->stats().retries, 0u);
  EXPECT_TRUE(pim.requests().empty());
}

TEST(AkeneoClientTest, VerificationAcceptsCertificateFromCaFile) {
  FakePim pim;
  const std::string uuid = NewUuid();
  pim.PutProduct(uuid, kBaseTimeUs);
  RestConfig config = ConfigFor(pim);
  config.insecure_skip_verify = false;
  config.ca_file = pim.cert_file();
  std::unique_ptr<AkeneoClient> client = MakeClient(config);
  absl::StatusOr<std::string> body = client->Get(ProductTarget(uuid));
  ASSERT_TRUE(body.ok()) << body.status();

  // By host name too (the certificate names localhost): SNI and host name verification.
  config.base_url = testing::UrlOf(absl::StrCat("https://localhost:", pim.port()));
  std::unique_ptr<AkeneoClient> by_name = MakeClient(config);
  absl::StatusOr<std::string> named = by_name->Get(ProductTarget(uuid));
  ASSERT_TRUE(named.ok()) << named.status();
}

// Enterprises reach their PIM through a proxy: rest.proxy, or HTTPS_PROXY as curl reads it. The
// token request and the API call both go through the tunnel, with the PIM's certificate verified
// end to end.
TEST(AkeneoClientProxyTest, ReachesThePimThroughAConnectProxy) {
  for (const char* name : {"http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                           "ALL_PROXY", "no_proxy", "NO_PROXY"}) {
    unsetenv(name);
  }
  FakePim pim;
  const std::string uuid = NewUuid();
  pim.PutProduct(uuid, kBaseTimeUs);
  ConnectProxy proxy(ConnectProxy::Options{.user = "corp", .password = "proxy-secret"});
  RestConfig config = ConfigFor(pim);
  config.insecure_skip_verify = false;
  config.ca_file = pim.cert_file();
  config.proxy = proxy.url();
  {
    std::unique_ptr<AkeneoClient> client = MakeClient(config);
    absl::StatusOr<std::string> body = client->Get(ProductTarget(uuid));
    ASSERT_TRUE(body.ok()) << body.status();
    EXPECT_THAT(*body, HasSubstr(uuid));
  }
  ASSERT_FALSE(proxy.tunnels().empty());
  for (const ConnectProxy::Tunnel& tunnel : proxy.tunnels()) {
    EXPECT_EQ(tunnel.authority, absl::StrCat("127.0.0.1:", pim.port()));
    EXPECT_EQ(tunnel.status, 200);
  }

  // From the environment, as curl reads it; `proxy: none` goes direct whatever it says.
  const std::size_t before = proxy.tunnels().size();
  setenv("HTTPS_PROXY", proxy.url().c_str(), 1);
  config.proxy.clear();
  {
    std::unique_ptr<AkeneoClient> client = MakeClient(config);
    ASSERT_TRUE(client->Get(ProductTarget(uuid)).ok());
  }
  EXPECT_GT(proxy.tunnels().size(), before);
  const std::size_t with_env = proxy.tunnels().size();
  config.proxy = "none";
  {
    std::unique_ptr<AkeneoClient> client = MakeClient(config);
    ASSERT_TRUE(client->Get(ProductTarget(uuid)).ok());
  }
  EXPECT_EQ(proxy.tunnels().size(), with_env);
  unsetenv("HTTPS_PROXY");

  // A proxy that refuses the credentials: a clear, retryable failure that never shows them.
  config.proxy = absl::StrCat("http://corp:wrong@127.0.0.1:", proxy.port());
  config.max_attempts = 1;
  std::unique_ptr<AkeneoClient> refused = MakeClient(config);
  absl::StatusOr<std::string> answer = refused->Get(ProductTarget(uuid));
  ASSERT_EQ(answer.status().code(), absl::StatusCode::kUnavailable) << answer.status();
  EXPECT_THAT(std::string(answer.status().message()), HasSubstr("407"));
  EXPECT_THAT(std::string(answer.status().message()), Not(HasSubstr("wrong")));
}

}  // namespace
}  // namespace pimgate
