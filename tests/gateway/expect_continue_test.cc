// Expect: 100-continue against a real gateway: driven by the real `curl` command line over TLS
// (libcurl is what the PIM's Guzzle sends with), and by raw sockets for what curl will not do
// (a body sent without waiting, HTTP/1.0, an unknown expectation).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "tests/testing/test_env.h"
#include "tests/testing/typed_values.h"

namespace pimgate {
namespace {

using testing::GatewayHarness;
using testing::LegacyBatch;
using testing::LegacyHeaders;
using testing::LegacyProductEvent;
using testing::NewUuid;
using testing::TempDir;

constexpr char kCurl[] = "/usr/bin/curl";
// curl waits this long for the 100 before sending the body anyway; far beyond --max-time, so a
// server that never sends the 100 makes curl fail rather than merely slow.
constexpr char kExpectTimeout[] = "30";
constexpr char kMaxTime[] = "20";

struct CurlResult {
  int exit_code = -1;
  std::string out;      // stdout: the body, then the -w line
  std::string verbose;  // stderr: -v trace
  int http_code = 0;
  long size_upload = -1;  // NOLINT(runtime/int): curl's own type
};

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Runs /usr/bin/curl with `args` (no shell), stdout and stderr to files in `dir`. The last line
// of stdout is "-w" output: "<http_code> <size_upload>".
CurlResult RunCurl(const TempDir& dir, std::vector<std::string> args) {
  std::vector<std::string> argv = {
      kCurl, "-sS", "-v", "--max-time", kMaxTime, "-w", "\n%{http_code} %{size_upload}"};
  argv.insert(argv.end(), args.begin(), args.end());
  const std::string out_path = dir.File("curl.out"), err_path = dir.File("curl.err");
  const pid_t pid = fork();
  if (pid == 0) {
    const int out = open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    const int err = open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(out, 1);
    dup2(err, 2);
    std::vector<char*> c_argv;
    for (std::string& a : argv) c_argv.push_back(a.data());
    c_argv.push_back(nullptr);
    execv(kCurl, c_argv.data());
    _exit(127);
  }
  CurlResult result;
  int status = 0;
  waitpid(pid, &status, 0);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  result.out = ReadFile(out_path);
  result.verbose = ReadFile(err_path);
  const std::size_t last = result.out.rfind('\n');
  const std::string tail = last == std::string::npos ? result.out : result.out.substr(last + 1);
  std::vector<std::string> parts = absl::StrSplit(tail, ' ');
  if (parts.size() == 2) {
    result.http_code = std::atoi(parts[0].c_str());
    result.size_upload = std::atol(parts[1].c_str());
  }
  return result;
}

// A product as the PIM normalises it, with a description of `description_bytes` in each of
// four locales (long marketing texts in several languages are what make real bodies big).
std::string LargeProductEvent(const std::string& event_id, const std::string& uuid,
                              std::size_t description_bytes) {
  std::string values = R"("description":[)";
  const char* locales[] = {"en_US", "fr_FR", "de_DE", "it_IT"};
  for (int i = 0; i < 4; ++i) {
    std::string text;
    while (text.size() < description_bytes / 4) {
      absl::StrAppend(&text, "<p>Leichter Laufschuh, atmungsaktives Obermaterial \\u00e9 ", i,
                      "<\\/p>");
    }
    absl::StrAppend(&values, i == 0 ? "" : ",", R"({"locale":")", locales[i],
                    R"(","scope":"ecommerce","data":")", text, R"("})");
  }
  values += "]";
  return absl::StrCat(
      R"({"action":"product.updated","event_id":")", event_id,
      R"(","event_datetime":"2026-11-20T10:15:00+00:00","author":"julia","author_type":"ui",)",
      R"("pim_source":"https:\/\/pim.example.com","data":{"resource":{"uuid":")", uuid,
      R"(","identifier":"sku-)", uuid.substr(0, 8),
      R"(","family":"shoes","enabled":true,"categories":["summer"],"values":{)", values,
      R"(},"updated":"2026-11-20T10:14:59+00:00"}}})");
}

class ExpectContinueTest : public ::testing::Test {
 protected:
  ExpectContinueTest() {
    cert_ = testing::MakeSelfSignedCert(dir_.path());
    GatewayHarness::Options options;
    options.tweak = [this](Config& config) {
      config.gateway.tls = TlsConfig{cert_.cert_file, cert_.key_file, TlsVersion::kTls1_2};
    };
    gw_.emplace(options);
  }

  std::string Url(const std::string& path) const {
    return absl::StrCat("https://127.0.0.1:", gw_->port(), path);
  }

  // curl arguments posting `body` (from a file, as the PIM's bytes) with legacy signature
  // headers to `path`, verifying the gateway's certificate.
  std::vector<std::string> LegacyPost(const std::string& path, const std::string& body,
                                      std::vector<std::string> extra = {}) {
    const std::string file = dir_.File(absl::StrCat("body-", ++bodies_, ".json"));
    std::ofstream(file, std::ios::binary) << body;
    std::vector<std::string> args = {"--cacert",
                                     cert_.cert_file,
                                     "--expect100-timeout",
                                     kExpectTimeout,
                                     "-H",
                                     "Content-Type: application/json"};
    for (const auto& [name, value] : LegacyHeaders(GatewayHarness::kLegacySecret, body)) {
      args.push_back("-H");
      args.push_back(absl::StrCat(name, ": ", value));
    }
    args.insert(args.end(), extra.begin(), extra.end());
    args.push_back("--data-binary");
    args.push_back("@" + file);
    args.push_back(Url(path));
    return args;
  }

  TempDir dir_;
  testing::CertFiles cert_;
  std::optional<GatewayHarness> gw_;
  int bodies_ = 0;
};

TEST_F(ExpectContinueTest, CurlSendsA2MiBLegacyBodyAfter100ContinueAndGets200) {
  std::vector<std::string> events;
  for (int i = 0; i < 10; ++i) events.push_back(LargeProductEvent(NewUuid(), NewUuid(), 210'000));
  const std::string body = LegacyBatch(events);
  ASSERT_GE(body.size(), 2u << 20);
  ASSERT_LT(body.size(), 4u << 20);  // under gateway.body_limit
  // curl adds "Expect: 100-continue" to a body this large by itself.
  CurlResult res = RunCurl(dir_, LegacyPost("/hooks/legacy", body));
  EXPECT_EQ(res.exit_code, 0) << res.verbose;
  EXPECT_EQ(res.http_code, 200) << res.out;
  EXPECT_TRUE(absl::StrContains(res.verbose, "> Expect: 100-continue")) << res.verbose;
  // The interim answer came: without it curl would have waited 30 s (past --max-time 20).
  EXPECT_TRUE(absl::StrContains(res.verbose, "< HTTP/1.1 100 Continue")) << res.verbose;
  EXPECT_EQ(res.size_upload, static_cast<long>(body.size()));
  EXPECT_TRUE(absl::StrContains(res.out, R"({"accepted":10,"duplicates":0})")) << res.out;
  EXPECT_EQ(gw_->AllEvents().size(), 10u);
}

TEST_F(ExpectContinueTest, ForcedExpectOnASmallBodyAnyCaseIsAnswered100Then200) {
  // Guzzle writes the header as "100-Continue"; the token is case-insensitive.
  for (const char* expect : {"Expect: 100-continue", "Expect: 100-Continue"}) {
    const std::string body =
        LegacyBatch({LegacyProductEvent("product.updated", NewUuid(), NewUuid())});
    CurlResult res = RunCurl(dir_, LegacyPost("/hooks/legacy", body, {"-H", expect}));
    EXPECT_EQ(res.exit_code, 0) << res.verbose;
    EXPECT_EQ(res.http_code, 200) << res.out;
    EXPECT_TRUE(absl::StrContains(res.verbose, std::string("> ") + expect)) << res.verbose;
    EXPECT_TRUE(absl::StrContains(res.verbose, "< HTTP/1.1 100 Continue")) << res.verbose;
  }
  EXPECT_EQ(gw_->AllEvents().size(), 2u);
}

TEST_F(ExpectContinueTest, BadPathIs404BeforeTheBodyIsSent) {
  std::vector<std::string> events;
  for (int i = 0; i < 10; ++i) events.push_back(LargeProductEvent(NewUuid(), NewUuid(), 210'000));
  const std::string body = LegacyBatch(events);
  CurlResult res = RunCurl(dir_, LegacyPost("/hooks/nowhere", body));
  EXPECT_EQ(res.exit_code, 0) << res.verbose;
  EXPECT_EQ(res.http_code, 404) << res.out;
  EXPECT_TRUE(absl::StrContains(res.out, R"("error":"unknown_path")")) << res.out;
  EXPECT_TRUE(absl::StrContains(res.verbose, "> Expect: 100-continue")) << res.verbose;
  EXPECT_FALSE(absl::StrContains(res.verbose, "100 Continue")) << res.verbose;
  EXPECT_EQ(res.size_upload, 0) << "curl uploaded body bytes the server never asked for";
  // The same with a forced Expect on a small body.
  const std::string small = LegacyBatch({LegacyProductEvent("product.updated", "e", NewUuid())});
  res = RunCurl(dir_, LegacyPost("/hooks/nowhere", small, {"-H", "Expect: 100-continue"}));
  EXPECT_EQ(res.http_code, 404) << res.out;
  EXPECT_EQ(res.size_upload, 0);
  EXPECT_EQ(gw_->log().head(), 0u);
}

TEST_F(ExpectContinueTest, HeaderOnlyRefusalsComeBeforeTheBody) {
  const std::string body = LegacyBatch({LegacyProductEvent("product.updated", "e1", NewUuid())});
  const std::string file = dir_.File("small.json");
  std::ofstream(file, std::ios::binary) << body;
  const std::vector<std::string> common = {
      "--cacert", cert_.cert_file,        "--expect100-timeout", kExpectTimeout,
      "-H",       "Expect: 100-continue", "--data-binary",       "@" + file};
  auto run = [&](std::vector<std::string> args) {
    args.insert(args.begin(), common.begin(), common.end());
    return RunCurl(dir_, args);
  };
  // No signature headers: 401 naming the missing header.
  CurlResult res = run({Url("/hooks/legacy")});
  EXPECT_EQ(res.http_code, 401) << res.out;
  EXPECT_TRUE(absl::StrContains(res.out, "missing X-Akeneo-Request-Signature header")) << res.out;
  EXPECT_EQ(res.size_upload, 0);
  // A timestamp outside the tolerance: 401 before the body.
  res = run({"-H", "X-Akeneo-Request-Signature: " + std::string(64, 'a'), "-H",
             "X-Akeneo-Request-Timestamp: 1000", Url("/hooks/legacy")});
  EXPECT_EQ(res.http_code, 401) << res.out;
  EXPECT_TRUE(absl::StrContains(res.out, "s away from the server clock")) << res.out;
  EXPECT_EQ(res.size_upload, 0);
  // Event Platform path without its signature header.
  res = run({Url("/hooks/platform")});
  EXPECT_EQ(res.http_code, 401) << res.out;
  EXPECT_TRUE(absl::StrContains(res.out, "missing X-AKENEO-SIGNATURE-PRIMARY header")) << res.out;
  EXPECT_EQ(res.size_upload, 0);
  // Wrong method (curl sends PUT with the same body).
  res = run({"-X", "PUT", Url("/hooks/legacy")});
  EXPECT_EQ(res.http_code, 405) << res.out;
  EXPECT_EQ(res.size_upload, 0);
  // A Content-Length over gateway.body_limit: 413 from the header.
  const std::string big_file = dir_.File("big.json");
  std::ofstream(big_file, std::ios::binary) << std::string((4u << 20) + 1, ' ');
  res = RunCurl(dir_, {"--cacert", cert_.cert_file, "--expect100-timeout", kExpectTimeout,
                       "--data-binary", "@" + big_file, Url("/hooks/legacy")});
  EXPECT_EQ(res.http_code, 413) << res.out;
  EXPECT_EQ(res.size_upload, 0);
  EXPECT_FALSE(absl::StrContains(res.verbose, "100 Continue")) << res.verbose;
  EXPECT_EQ(gw_->log().head(), 0u);
  // A genuine request on the same gateway afterwards.
  res = RunCurl(dir_, LegacyPost("/hooks/legacy", body, {"-H", "Expect: 100-continue"}));
  EXPECT_EQ(res.http_code, 200) << res.out;
}

// A plain-HTTP connection that writes raw bytes and reads everything until the server closes.
std::string Exchange(uint16_t port, const std::string& bytes) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return "connect failed";
  }
  timeval timeout{20, 0};  // a test failure, not a hang, if the server never closes
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  std::size_t sent = 0;
  while (sent < bytes.size()) {
    const ssize_t n = send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;
    sent += static_cast<std::size_t>(n);
  }
  std::string received;
  char buf[4096];
  while (true) {
    const ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    received.append(buf, static_cast<std::size_t>(n));
  }
  close(fd);
  return received;
}

std::string RawLegacyRequest(const std::string& version, const std::string& expect,
                             const std::string& body) {
  std::string head =
      absl::StrCat("POST /hooks/legacy ", version,
                   "\r\nHost: x\r\nConnection: close\r\nContent-Length: ", body.size(), "\r\n");
  if (!expect.empty()) absl::StrAppend(&head, "Expect: ", expect, "\r\n");
  for (const auto& [name, value] : LegacyHeaders(GatewayHarness::kLegacySecret, body)) {
    absl::StrAppend(&head, name, ": ", value, "\r\n");
  }
  return head + "\r\n" + body;
}

TEST(ExpectContinueRaw, BodySentWithoutWaitingIsReadAndAnswered) {
  GatewayHarness::Options options;
  options.tls = false;
  GatewayHarness gw(options);
  // Headers and body in one write, then " 100-CONTINUE " with odd case and spaces.
  for (const char* expect : {"100-continue", " 100-CONTINUE "}) {
    const std::string body =
        LegacyBatch({LegacyProductEvent("product.updated", NewUuid(), NewUuid())});
    const std::string answer = Exchange(gw.port(), RawLegacyRequest("HTTP/1.1", expect, body));
    EXPECT_TRUE(absl::StartsWith(answer, "HTTP/1.1 100 Continue\r\n")) << answer;
    EXPECT_TRUE(absl::StrContains(answer, "\r\n\r\nHTTP/1.1 200 OK\r\n")) << answer;
    EXPECT_TRUE(absl::StrContains(answer, R"({"accepted":1,"duplicates":0})")) << answer;
  }
  EXPECT_EQ(gw.log().head(), 2u);
}

TEST(ExpectContinueRaw, Http10GetsNo100AndUnknownExpectationsGet417) {
  GatewayHarness::Options options;
  options.tls = false;
  GatewayHarness gw(options);
  const std::string body =
      LegacyBatch({LegacyProductEvent("product.updated", NewUuid(), NewUuid())});
  // HTTP/1.0 has no interim answers: the expectation is ignored (RFC 9110 section 10.1.1).
  std::string answer = Exchange(gw.port(), RawLegacyRequest("HTTP/1.0", "100-continue", body));
  EXPECT_FALSE(absl::StrContains(answer, "100 Continue")) << answer;
  EXPECT_TRUE(absl::StartsWith(answer, "HTTP/1.1 200 OK\r\n")) << answer;
  // Any other expectation cannot be met: 417 with a specific error, before the body.
  answer = Exchange(gw.port(), RawLegacyRequest("HTTP/1.1", "something-else", body));
  EXPECT_TRUE(absl::StartsWith(answer, "HTTP/1.1 417 Expectation Failed\r\n")) << answer;
  EXPECT_TRUE(absl::StrContains(answer, R"("error":"expectation_failed")")) << answer;
  EXPECT_TRUE(absl::StrContains(answer, R"(unsupported Expect: \"something-else\")")) << answer;
  EXPECT_EQ(gw.log().head(), 1u);
  EXPECT_EQ(gw.gateway().stats().sources[0].requests_by_code[417], 1u);
}

}  // namespace
}  // namespace pimgate
