// The console endpoint of a real pimgate process with a real plugin process (the C++ recorder),
// called with the real curl command line: every Admin method it is asked for answers with the
// protobuf JSON mapping, refusals answer with the documented HTTP codes and JSON errors, the
// console's files carry the security headers, and --check-config refuses a console other machines
// could reach without an admin token.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"
#include "tests/testing/test_env.h"

namespace pimgate {
namespace {

using nlohmann::json;
using testing::PimgateProcess;
using testing::TempDir;

constexpr char kSecret[] = "console-e2e-secret";
constexpr char kToken[] = "console-token-0123456789";

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Runs `command` with sh, returns (exit status, stdout).
std::pair<int, std::string> Shell(const std::string& command) {
  std::string out;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return {-1, ""};
  char buffer[4096];
  while (std::size_t n = std::fread(buffer, 1, sizeof buffer, pipe)) out.append(buffer, n);
  const int status = ::pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

std::string ShellQuote(const std::string& text) {
  std::string out = "'";
  for (char c : text) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

struct CurlAnswer {
  int status = 0;
  std::string body;
  std::map<std::string, std::string> headers;  // lower-case names, last value
  std::string Header(const std::string& name) const {
    const auto it = headers.find(name);
    return it == headers.end() ? std::string() : it->second;
  }
  json Json() const { return json::parse(body, nullptr, /*allow_exceptions=*/false); }
};

class ConsoleEndToEnd : public ::testing::Test {
 protected:
  // `admin_token`: whether admin.token is set (the console then needs it too).
  void Start(bool admin_token = true) {
    ok_uuid_ = testing::NewUuid();
    bad_uuid_ = testing::NewUuid();
    std::ostringstream yaml;
    yaml << "gateway:\n  listen: 127.0.0.1:0\n  threads: 2\n"
         << "store:\n  path: " << dir_.File("store") << "\n"
         << "metrics:\n  listen: 127.0.0.1:0\n"
         << "admin:\n  listen: 127.0.0.1:0\n"
         << (admin_token ? absl::StrCat("  token: ", kToken, "\n") : "")
         << "console:\n  enabled: true\n  listen: 127.0.0.1:0\n"
         << "log:\n  level: warn\n"
         << "sources:\n  - name: pim\n    kind: events_api\n    path: /hooks/pim\n    secret: "
         << kSecret << "\n"
         << "plugins:\n  - name: rec\n    command: [" << PIMGATE_E2E_RECORDER << "]\n"
         << "    start_timeout: 10s\n"
         << "    env:\n      RECORDER_OUT: " << dir_.File("rec.jsonl") << "\n"
         << "      RECORDER_REJECT_RESOURCE: " << bad_uuid_ << "\n";
    std::ofstream(dir_.File("pimgate.yaml")) << yaml.str();
    process_.emplace(dir_.File("pimgate.yaml"), dir_.File("ready.json"));
    gateway_port_ = process_->WaitReady();
    ASSERT_GT(gateway_port_, 0) << "pimgate did not start";
    const json ready = json::parse(ReadAll(dir_.File("ready.json")));
    console_port_ = ready.value("console_port", 0);
    metrics_port_ = ready.value("metrics_port", 0);
    ASSERT_GT(console_port_, 0) << ready.dump();
  }

  std::string Url(const std::string& path) const {
    return absl::StrCat("http://127.0.0.1:", console_port_, path);
  }

  // curl with `args` (already quoted) against `path`.
  CurlAnswer Curl(const std::string& path, const std::string& args) {
    const std::string body_file = dir_.File("curl.body");
    const std::string header_file = dir_.File("curl.headers");
    std::remove(body_file.c_str());
    std::remove(header_file.c_str());
    const auto [exit_code, out] =
        Shell(absl::StrCat("curl -sS --max-time 120 -o ", body_file, " -D ", header_file,
                           " -w '%{http_code}' ", args, " ", ShellQuote(Url(path))));
    CurlAnswer answer;
    EXPECT_EQ(exit_code, 0) << "curl failed: " << out;
    answer.status = std::atoi(out.c_str());
    answer.body = ReadAll(body_file);
    for (absl::string_view line : absl::StrSplit(ReadAll(header_file), "\r\n")) {
      const std::size_t colon = line.find(':');
      if (colon == absl::string_view::npos) continue;
      answer.headers[absl::AsciiStrToLower(line.substr(0, colon))] =
          std::string(absl::StripAsciiWhitespace(line.substr(colon + 1)));
    }
    return answer;
  }

  // POST /api/v1/<method> with `body` as JSON and the token (or `authorization` when given).
  CurlAnswer Api(const std::string& method, const std::string& body = "{}",
                 std::optional<std::string> authorization = std::nullopt) {
    const std::string auth = authorization.value_or(absl::StrCat("Bearer ", kToken));
    return Curl(
        absl::StrCat("/api/v1/", method),
        absl::StrCat("-X POST -H 'Content-Type: application/json' ",
                     auth.empty() ? "" : absl::StrCat("-H ", ShellQuote("Authorization: " + auth)),
                     " --data-binary ", ShellQuote(body)));
  }

  // Calls until `done` holds on the JSON answer (up to 60 s); returns the last answer.
  json PollApi(const std::string& method, const std::string& body,
               const std::function<bool(const json&)>& done) {
    json last;
    for (int i = 0; i < 600; ++i) {
      const CurlAnswer answer = Api(method, body);
      last = answer.Json();
      if (answer.status == 200 && done(last)) return last;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ADD_FAILURE() << method << " never reached the expected state; last answer: " << last.dump();
    return last;
  }

  // Two events: one the plugin takes, one it rejects (a dead letter).
  void Ingest() {
    testing::HttpClient gateway(gateway_port_, /*tls=*/false);
    const std::string body = testing::LegacyBatch(
        {testing::LegacyProductEvent("product.updated", testing::NewUuid(), ok_uuid_),
         testing::LegacyProductEvent("product.updated", testing::NewUuid(), bad_uuid_)});
    ASSERT_EQ(
        gateway.Send("POST", "/hooks/pim", body, testing::LegacyHeaders(kSecret, body)).status,
        200);
  }

  TempDir dir_;
  std::optional<PimgateProcess> process_;
  std::string ok_uuid_;
  std::string bad_uuid_;
  uint16_t gateway_port_ = 0;
  int console_port_ = 0;
  int metrics_port_ = 0;
};

TEST_F(ConsoleEndToEnd, EveryAskedMethodAnswersWithTheJsonMapping) {
  Start();
  Ingest();
  // The rejected event becomes a dead letter once the plugin has answered it.
  const json letters = PollApi("ListDeadLetters", R"({"plugin":"rec"})", [](const json& j) {
    return j.contains("deadLetters") && j["deadLetters"].size() == 1;
  });
  ASSERT_EQ(letters["deadLetters"].size(), 1u) << letters.dump();
  const json& letter = letters["deadLetters"][0];
  ASSERT_EQ(letter["event"]["resourceId"], bad_uuid_) << letter.dump();
  const std::string dead_sequence = letter["event"]["sequence"].get<std::string>();  // uint64
  // The filters, as the console sends them (enum by name), applied by the admin API.
  const CurlAnswer rejected = Api(
      "ListDeadLetters", absl::StrCat(R"({"plugin":"rec","kind":"DEAD_LETTER_KIND_REJECTED",)",
                                      R"("type":"product.*","resource_id":")", bad_uuid_, R"("})"));
  ASSERT_EQ(rejected.status, 200) << rejected.body;
  ASSERT_EQ(rejected.Json()["deadLetters"].size(), 1u) << rejected.body;
  EXPECT_EQ(rejected.Json()["scanned"], "1") << rejected.body;
  const CurlAnswer exhausted =
      Api("ListDeadLetters", R"({"plugin":"rec","kind":"DEAD_LETTER_KIND_EXHAUSTED"})");
  ASSERT_EQ(exhausted.status, 200) << exhausted.body;
  EXPECT_EQ(exhausted.Json().value("deadLetters", json::array()).size(), 0u) << exhausted.body;
  EXPECT_EQ(exhausted.Json()["scanned"], "1") << exhausted.body;

  // GetStats: lowerCamel names, 64-bit integers as strings, defaults printed.
  const CurlAnswer stats = Api("GetStats");
  ASSERT_EQ(stats.status, 200) << stats.body;
  EXPECT_EQ(stats.Header("content-type"), "application/json");
  EXPECT_EQ(stats.Header("cache-control"), "no-store");
  EXPECT_EQ(stats.Json()["log"]["headSequence"], "2") << stats.body;
  EXPECT_TRUE(stats.Json()["log"].contains("pendingRequests")) << stats.body;  // 0 is printed
  EXPECT_TRUE(stats.Json().contains("takenAt")) << stats.body;

  const CurlAnswer plugins = Api("ListPlugins");
  ASSERT_EQ(plugins.status, 200) << plugins.body;
  ASSERT_EQ(plugins.Json()["plugins"].size(), 1u) << plugins.body;
  EXPECT_EQ(plugins.Json()["plugins"][0]["name"], "rec");

  // Pause, seen by ListPlugins; resume, seen too.
  ASSERT_EQ(Api("PausePlugin", R"({"plugin":"rec"})").status, 200);
  PollApi("ListPlugins", "{}",
          [](const json& j) { return j["plugins"][0]["deliveryState"] == "paused"; });
  const CurlAnswer resumed = Api("ResumePlugin", R"({"plugin":"rec"})");
  ASSERT_EQ(resumed.status, 200) << resumed.body;
  EXPECT_EQ(resumed.body, "{}");
  PollApi("ListPlugins", "{}",
          [](const json& j) { return j["plugins"][0]["deliveryState"] != "paused"; });
  // An unknown plugin is the admin API's NOT_FOUND, as 404.
  const CurlAnswer unknown_plugin = Api("PausePlugin", R"({"plugin":"nobody"})");
  EXPECT_EQ(unknown_plugin.status, 404) << unknown_plugin.body;
  EXPECT_EQ(unknown_plugin.Json()["code"], "NOT_FOUND") << unknown_plugin.body;

  // ListEvents, with the request's fields in lowerCamel or as in the .proto.
  const CurlAnswer events = Api("ListEvents", "{}");
  ASSERT_EQ(events.status, 200) << events.body;
  EXPECT_EQ(events.Json()["events"].size(), 2u) << events.body;
  const CurlAnswer by_camel =
      Api("ListEvents", absl::StrCat(R"({"resourceId":")", ok_uuid_, "\"}"));
  const CurlAnswer by_proto =
      Api("ListEvents", absl::StrCat(R"({"resource_id":")", ok_uuid_, "\"}"));
  ASSERT_EQ(by_camel.status, 200) << by_camel.body;
  ASSERT_EQ(by_camel.Json()["events"].size(), 1u) << by_camel.body;
  EXPECT_EQ(by_camel.Json()["events"][0]["resourceId"], ok_uuid_);
  EXPECT_EQ(by_proto.Json(), by_camel.Json());  // data (a Struct) has no fixed key order

  // GetEvent by sequence (a uint64: a JSON string or number).
  const CurlAnswer event = Api("GetEvent", absl::StrCat(R"({"sequence":")", dead_sequence, "\"}"));
  ASSERT_EQ(event.status, 200) << event.body;
  EXPECT_EQ(event.Json()["resourceId"], bad_uuid_) << event.body;
  EXPECT_EQ(Api("GetEvent", R"({"sequence":"999"})").status, 404);

  // Retry the dead letter: handed back (and rejected again by the same plugin).
  const CurlAnswer retried = Api(
      "RetryDeadLetters", absl::StrCat(R"({"plugin":"rec","sequences":[)", dead_sequence, "]}"));
  ASSERT_EQ(retried.status, 200) << retried.body;
  EXPECT_EQ(retried.Json()["sequences"], json::array({dead_sequence})) << retried.body;
  EXPECT_EQ(retried.Json()["more"], false) << retried.body;  // a default, printed

  // The console's counters are on /metrics.
  testing::HttpClient metrics(static_cast<uint16_t>(metrics_port_), /*tls=*/false);
  const std::string exposition = metrics.Send("GET", "/metrics", "").body;
  EXPECT_NE(exposition.find("pimgate_console_api_calls_total "), std::string::npos);
}

TEST_F(ConsoleEndToEnd, RefusalsAnswerWithTheirHttpCodeAndAJsonError) {
  Start();
  const CurlAnswer no_token = Api("GetStats", "{}", "");
  EXPECT_EQ(no_token.status, 401) << no_token.body;
  EXPECT_EQ(no_token.Json()["code"], "UNAUTHENTICATED") << no_token.body;
  const CurlAnswer wrong = Api("GetStats", "{}", "Bearer not-the-token");
  EXPECT_EQ(wrong.status, 401) << wrong.body;
  EXPECT_EQ(wrong.Json()["message"], "wrong admin token") << wrong.body;

  const CurlAnswer unknown = Api("GetStat");
  EXPECT_EQ(unknown.status, 404) << unknown.body;
  EXPECT_EQ(unknown.Json()["code"], "NOT_FOUND");
  EXPECT_NE(unknown.body.find("did you mean /api/v1/GetStats?"), std::string::npos) << unknown.body;
  EXPECT_EQ(Curl("/api/v2/GetStats", "-X POST -H 'Content-Type: application/json' -d '{}'").status,
            404);

  for (const std::string path : {"/api", "/api/v1/GetStats"}) {
    const CurlAnswer get = Curl(path, "");
    EXPECT_EQ(get.status, 405) << path;
    EXPECT_EQ(get.Header("allow"), "POST") << path;
    EXPECT_EQ(get.Json()["code"], "METHOD_NOT_ALLOWED") << path << ": " << get.body;
  }
  // No CORS: a preflight is refused like any other method.
  EXPECT_EQ(Curl("/api/v1/GetStats", "-X OPTIONS").status, 405);

  const CurlAnswer malformed = Api("ListEvents", R"({"type": )");
  EXPECT_EQ(malformed.status, 400) << malformed.body;
  EXPECT_EQ(malformed.Json()["code"], "INVALID_ARGUMENT");
  EXPECT_NE(malformed.body.find("pimgate.v1.ListEventsRequest"), std::string::npos)
      << malformed.body;
  const CurlAnswer unknown_field = Api("ListEvents", R"({"typo_field": "x"})");
  EXPECT_EQ(unknown_field.status, 400) << unknown_field.body;
  EXPECT_NE(unknown_field.body.find("typo_field"), std::string::npos) << unknown_field.body;
  // The admin API's own validation comes through as it is.
  const CurlAnswer invalid = Api("ListDeadLetters", R"({"plugin":"rec","pageToken":"x"})");
  EXPECT_EQ(invalid.status, 400) << invalid.body;
  EXPECT_NE(invalid.body.find("page_token"), std::string::npos) << invalid.body;
  const CurlAnswer bad_glob = Api("ListDeadLetters", R"({"plugin":"rec","type":"Product.*"})");
  EXPECT_EQ(bad_glob.status, 400) << bad_glob.body;
  EXPECT_NE(bad_glob.body.find("type: the glob must use only a-z, 0-9, _, . and *"),
            std::string::npos)
      << bad_glob.body;
  const CurlAnswer bad_kind = Api("ListDeadLetters", R"({"plugin":"rec","kind":"DEAD"})");
  EXPECT_EQ(bad_kind.status, 400) << bad_kind.body;
  EXPECT_EQ(bad_kind.Json()["code"], "INVALID_ARGUMENT") << bad_kind.body;
  EXPECT_NE(bad_kind.body.find("DEAD"), std::string::npos) << bad_kind.body;

  // A body over the 1 MiB limit: 413, before the body is read (curl waits for that answer
  // instead of sending the body: Expect: 100-continue, with a timeout no slow machine reaches).
  const std::string big_file = dir_.File("big.json");
  std::ofstream(big_file) << "{\"type\":\"" << std::string(2 * 1024 * 1024, 'x') << "\"}";
  const CurlAnswer big =
      Curl("/api/v1/ListEvents", absl::StrCat("-X POST -H 'Content-Type: application/json' ",
                                              "-H 'Authorization: Bearer ", kToken,
                                              "' -H 'Expect: 100-continue' --expect100-timeout 120",
                                              " --data-binary @", big_file));
  EXPECT_EQ(big.status, 413) << big.body;
  EXPECT_EQ(big.Json()["code"], "PAYLOAD_TOO_LARGE") << big.body;

  // Only JSON: a form (what another site can make a browser send) is refused.
  const CurlAnswer form = Curl("/api/v1/GetStats", "-d 'a=b'");
  EXPECT_EQ(form.status, 415) << form.body;
  EXPECT_EQ(form.Json()["code"], "UNSUPPORTED_MEDIA_TYPE");
}

TEST_F(ConsoleEndToEnd, FilesCarryTheSecurityHeaders) {
  Start();
  const CurlAnswer index = Curl("/", "");
  ASSERT_EQ(index.status, 200) << index.body;
  EXPECT_EQ(index.Header("content-type"), "text/html; charset=utf-8");
  const std::string csp = index.Header("content-security-policy");
  EXPECT_NE(csp.find("default-src 'self'"), std::string::npos) << csp;
  EXPECT_NE(csp.find("script-src 'self'"), std::string::npos) << csp;
  EXPECT_NE(csp.find("frame-ancestors 'none'"), std::string::npos) << csp;
  EXPECT_EQ(csp.find("unsafe-inline"), std::string::npos) << csp;
  EXPECT_EQ(index.Header("x-content-type-options"), "nosniff");
  EXPECT_EQ(index.Header("referrer-policy"), "no-referrer");
  EXPECT_EQ(index.Header("cache-control"), "no-cache");
  EXPECT_EQ(index.headers.count("set-cookie"), 0u);
  EXPECT_EQ(Curl("/index.html", "").body, index.body);
  // Revalidation by ETag.
  ASSERT_FALSE(index.Header("etag").empty());
  EXPECT_EQ(
      Curl("/", absl::StrCat("-H ", ShellQuote("If-None-Match: " + index.Header("etag")))).status,
      304);
  const CurlAnswer missing = Curl("/no/such/file.js", "");
  EXPECT_EQ(missing.status, 404);
  EXPECT_FALSE(missing.Header("content-security-policy").empty());
  const CurlAnswer post = Curl("/", "-X POST -d x");
  EXPECT_EQ(post.status, 405);
  EXPECT_EQ(post.Header("allow"), "GET, HEAD");
  // API answers carry the headers too.
  EXPECT_EQ(Api("GetStats").Header("content-security-policy"), csp);
}

// Without admin.token, only requests for a loopback name are answered (DNS rebinding).
TEST_F(ConsoleEndToEnd, WithoutATokenOnlyLoopbackHostsAreAnswered) {
  Start(/*admin_token=*/false);
  EXPECT_EQ(Api("GetStats", "{}", "").status, 200);
  EXPECT_EQ(Curl("/api/v1/GetStats",
                 "-X POST -H 'Content-Type: application/json' -H 'Host: localhost' -d '{}'")
                .status,
            200);
  const CurlAnswer rebound =
      Curl("/api/v1/GetStats",
           "-X POST -H 'Content-Type: application/json' -H 'Host: evil.example' -d '{}'");
  EXPECT_EQ(rebound.status, 403) << rebound.body;
  EXPECT_EQ(rebound.Json()["code"], "PERMISSION_DENIED") << rebound.body;
  EXPECT_EQ(Curl("/", "-H 'Host: evil.example:7080'").status, 403);
}

// pimgate --check-config: exit status 2 and the loader's message.
std::pair<int, std::string> CheckConfig(const TempDir& dir, const std::string& extra) {
  const std::string path = dir.File("check.yaml");
  std::ofstream(path) << "store:\n  path: " << dir.File("store") << "\n"
                      << "sources:\n  - name: pim\n    kind: events_api\n    path: /hooks/pim\n"
                      << "    secret: s3cret\n"
                      << extra;
  return Shell(absl::StrCat(PIMGATE_BINARY, " --check-config ", path, " 2>&1"));
}

TEST(ConsoleCheckConfig, ARemoteConsoleNeedsTheAdminToken) {
  TempDir dir;
  const auto [refused, message] =
      CheckConfig(dir, "console:\n  enabled: true\n  listen: 0.0.0.0:7080\n");
  EXPECT_EQ(refused, 2) << message;
  EXPECT_NE(message.find("console.listen: \"0.0.0.0:7080\" is reachable from other machines: set "
                         "admin.token"),
            std::string::npos)
      << message;
  const auto [accepted, ok_message] =
      CheckConfig(dir,
                  "console:\n  enabled: true\n  listen: 0.0.0.0:7080\nadmin:\n  token: t0ken\n"
                  "  listen: 127.0.0.1:7070\n");
  EXPECT_EQ(accepted, 0) << ok_message;
  const auto [no_admin, no_admin_message] =
      CheckConfig(dir, "console:\n  enabled: true\nadmin:\n  enabled: false\n");
  EXPECT_EQ(no_admin, 2) << no_admin_message;
  EXPECT_NE(no_admin_message.find("console.enabled:"), std::string::npos) << no_admin_message;
}

}  // namespace
}  // namespace pimgate
