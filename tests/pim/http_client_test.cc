// HttpConnection (libcurl) against the FakePim over real TLS and plain HTTP, directly and through
// a real CONNECT proxy (configured, or taken from HTTPS_PROXY / NO_PROXY as curl does): answers,
// keep-alive, certificate verification, timeouts, size limits, cancellation, refused input.
#include "pim/http_client.h"

#include <stdlib.h>

#include <atomic>
#include <chrono>
#include <string>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/connect_proxy.h"
#include "tests/testing/fake_pim.h"

namespace pimgate {
namespace {

using ::pimgate::testing::ConnectProxy;
using ::pimgate::testing::FakePim;
using ::std::chrono::milliseconds;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

// Sets an environment variable for the scope of a test and restores it after.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    if (const char* old = getenv(name)) old_ = old;
    setenv(name, value.c_str(), 1);
  }
  ~ScopedEnv() {
    if (old_.has_value()) {
      setenv(name_, old_->c_str(), 1);
    } else {
      unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

// Clears every proxy variable curl reads, so the machine's own settings cannot leak in.
class NoProxyEnvironment : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* name : {"http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                             "ALL_PROXY", "no_proxy", "NO_PROXY"}) {
      if (const char* value = getenv(name)) saved_.emplace_back(name, value);
      unsetenv(name);
    }
  }
  void TearDown() override {
    for (const auto& [name, value] : saved_) setenv(name.c_str(), value.c_str(), 1);
  }

 private:
  std::vector<std::pair<std::string, std::string>> saved_;
};

HttpClientOptions TrustingOptions(const FakePim& pim) {
  HttpClientOptions options;
  options.ca_file = pim.cert_file();
  options.timeout = std::chrono::seconds(20);
  return options;
}

// The token request the PIM's OAuth endpoint expects (a POST with a JSON body and Basic auth).
HttpRequest TokenRequest(const FakePim& pim) {
  HttpRequest request;
  request.method = "POST";
  request.url = pim.base_url() + "/api/oauth/v1/token";
  request.headers = {{"Authorization", "Basic " + absl::Base64Escape("pim-client:pim-secret")},
                     {"Content-Type", "application/json"}};
  request.body = R"({"grant_type":"password","username":"pim-user","password":"pim-password"})";
  return request;
}

HttpRequest Get(const std::string& url) {
  HttpRequest request;
  request.url = url;
  return request;
}

using HttpConnectionTest = NoProxyEnvironment;

TEST_F(HttpConnectionTest, PostsAndGetsOverVerifiedTlsOnOneConnection) {
  FakePim pim;
  HttpConnection connection(TrustingOptions(pim));
  absl::StatusOr<HttpResponse> token = connection.Exchange(TokenRequest(pim));
  ASSERT_TRUE(token.ok()) << token.status();
  EXPECT_EQ(token->status, 200);
  EXPECT_THAT(token->body, HasSubstr("access_token"));
  EXPECT_THAT(std::string(token->Header("content-type")), HasSubstr("application/json"));

  // Without a token the API answers 401: an answer, not a failure.
  absl::StatusOr<HttpResponse> refused =
      connection.Exchange(Get(pim.base_url() + "/api/rest/v1/products-uuid"));
  ASSERT_TRUE(refused.ok()) << refused.status();
  EXPECT_EQ(refused->status, 401);
  // Both exchanges went over one kept-alive connection.
  EXPECT_EQ(connection.connections_opened(), 1u);
  EXPECT_EQ(pim.connections_accepted(), 1);
}

TEST_F(HttpConnectionTest, PlainHttpWorks) {
  FakePim pim(FakePim::Options{.tls = false});
  HttpConnection connection(HttpClientOptions{});
  absl::StatusOr<HttpResponse> token = connection.Exchange(TokenRequest(pim));
  ASSERT_TRUE(token.ok()) << token.status();
  EXPECT_EQ(token->status, 200);
}

TEST_F(HttpConnectionTest, UntrustedCertificateIsAPermanentFailure) {
  FakePim pim;
  HttpClientOptions options;  // the system store does not know the fake's self-signed certificate
  HttpConnection connection(options);
  absl::StatusOr<HttpResponse> answer = connection.Exchange(TokenRequest(pim));
  ASSERT_FALSE(answer.ok());
  EXPECT_EQ(answer.status().code(), absl::StatusCode::kFailedPrecondition) << answer.status();
  EXPECT_THAT(answer.status().message(), HasSubstr("127.0.0.1"));

  options.insecure_skip_verify = true;
  HttpConnection trusting(options);
  EXPECT_TRUE(trusting.Exchange(TokenRequest(pim)).ok());
}

TEST_F(HttpConnectionTest, SlowServerTimesOut) {
  FakePim pim;
  pim.SetDelay(std::chrono::seconds(30));
  HttpClientOptions options = TrustingOptions(pim);
  options.timeout = milliseconds(300);
  HttpConnection connection(options);
  absl::StatusOr<HttpResponse> answer = connection.Exchange(TokenRequest(pim));
  ASSERT_FALSE(answer.ok());
  EXPECT_EQ(answer.status().code(), absl::StatusCode::kDeadlineExceeded) << answer.status();
  pim.SetDelay(milliseconds(0));
}

TEST_F(HttpConnectionTest, RefusedConnectionIsRetryable) {
  uint16_t port = 0;
  {
    FakePim pim(FakePim::Options{.tls = false});
    port = pim.port();
  }  // stopped: nothing listens there any more
  HttpConnection connection(HttpClientOptions{});
  absl::StatusOr<HttpResponse> answer =
      connection.Exchange(Get(absl::StrCat("http://127.0.0.1:", port, "/")));
  ASSERT_FALSE(answer.ok());
  EXPECT_EQ(answer.status().code(), absl::StatusCode::kUnavailable) << answer.status();
}

TEST_F(HttpConnectionTest, AnswerAboveTheLimitIsRefused) {
  FakePim pim;
  HttpClientOptions options = TrustingOptions(pim);
  options.max_response_bytes = 16;  // a token answer is longer
  HttpConnection connection(options);
  absl::StatusOr<HttpResponse> answer = connection.Exchange(TokenRequest(pim));
  ASSERT_FALSE(answer.ok());
  EXPECT_EQ(answer.status().code(), absl::StatusCode::kResourceExhausted) << answer.status();
}

TEST_F(HttpConnectionTest, CancelledExchangeEnds) {
  FakePim pim;
  pim.SetDelay(std::chrono::seconds(60));
  HttpConnection connection(TrustingOptions(pim));
  std::atomic<int> polls{0};
  absl::StatusOr<HttpResponse> answer =
      connection.Exchange(TokenRequest(pim), [&polls] { return ++polls > 2; });
  ASSERT_FALSE(answer.ok());
  EXPECT_EQ(answer.status().code(), absl::StatusCode::kCancelled) << answer.status();
  pim.SetDelay(milliseconds(0));
}

TEST_F(HttpConnectionTest, HeaderInjectionIsRefused) {
  FakePim pim;
  HttpConnection connection(TrustingOptions(pim));
  HttpRequest request = TokenRequest(pim);
  request.headers.emplace_back("X-Test", "a\r\nX-Injected: 1");
  absl::StatusOr<HttpResponse> answer = connection.Exchange(request);
  ASSERT_FALSE(answer.ok());
  EXPECT_EQ(answer.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(pim.requests(), IsEmpty());
}

TEST_F(HttpConnectionTest, ConfiguredProxyTunnelsTls) {
  FakePim pim;
  ConnectProxy proxy;
  HttpClientOptions options = TrustingOptions(pim);
  options.proxy = proxy.url();
  HttpConnection connection(options);
  absl::StatusOr<HttpResponse> answer = connection.Exchange(TokenRequest(pim));
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_EQ(answer->status, 200);
  ASSERT_THAT(proxy.tunnels(), SizeIs(1));
  EXPECT_EQ(proxy.tunnels()[0].authority, absl::StrCat("127.0.0.1:", pim.port()));
  EXPECT_EQ(proxy.tunnels()[0].status, 200);
}

TEST_F(HttpConnectionTest, ProxyFromTheEnvironmentAndNoProxy) {
  FakePim pim;
  ConnectProxy proxy;
  ScopedEnv https_proxy("HTTPS_PROXY", proxy.url());
  {
    HttpConnection connection(TrustingOptions(pim));
    absl::StatusOr<HttpResponse> answer = connection.Exchange(TokenRequest(pim));
    ASSERT_TRUE(answer.ok()) << answer.status();
    EXPECT_EQ(answer->status, 200);
    EXPECT_THAT(proxy.tunnels(), SizeIs(1));
  }
  {
    // "none" goes direct whatever the environment says.
    HttpClientOptions options = TrustingOptions(pim);
    options.proxy = "none";
    HttpConnection connection(options);
    ASSERT_TRUE(connection.Exchange(TokenRequest(pim)).ok());
    EXPECT_THAT(proxy.tunnels(), SizeIs(1));
  }
  {
    ScopedEnv no_proxy("NO_PROXY", "127.0.0.1");
    HttpConnection connection(TrustingOptions(pim));
    ASSERT_TRUE(connection.Exchange(TokenRequest(pim)).ok());
    EXPECT_THAT(proxy.tunnels(), SizeIs(1));
  }
}

TEST_F(HttpConnectionTest, ProxyCredentialsAreSentAndNeverShown) {
  FakePim pim;
  ConnectProxy proxy(ConnectProxy::Options{.user = "proxy-user", .password = "proxy-pass"});
  HttpClientOptions options = TrustingOptions(pim);
  options.proxy = proxy.url();
  {
    HttpConnection connection(options);
    absl::StatusOr<HttpResponse> answer = connection.Exchange(TokenRequest(pim));
    ASSERT_TRUE(answer.ok()) << answer.status();
    EXPECT_EQ(answer->status, 200);
  }
  options.proxy = absl::StrCat("http://proxy-user:wrong-pass@127.0.0.1:", proxy.port());
  HttpConnection connection(options);
  absl::StatusOr<HttpResponse> answer = connection.Exchange(TokenRequest(pim));
  ASSERT_FALSE(answer.ok());
  EXPECT_EQ(answer.status().code(), absl::StatusCode::kUnavailable) << answer.status();
  EXPECT_THAT(answer.status().message(), HasSubstr("407"));
  EXPECT_THAT(answer.status().message(), ::testing::Not(HasSubstr("wrong-pass")));
}

TEST(RedactUrlTest, RemovesUserInfoOnly) {
  EXPECT_EQ(RedactUrl("http://user:pass@proxy:3128/x?a=b@c"),
            "http://<redacted>@proxy:3128/x?a=b@c");
  EXPECT_EQ(RedactUrl("https://pim.example.com/api?x=@"), "https://pim.example.com/api?x=@");
  EXPECT_EQ(RedactUrl("no-scheme"), "no-scheme");
}

}  // namespace
}  // namespace pimgate
