// M16: pimgate's own log never holds a secret. A pimgate process runs with log.level debug, its
// secrets read from the environment and from files (the webhook secrets, the Event Platform's
// secondary and notification secrets, the PIM REST API's client secret and password, the admin
// token), over a whole run: signed and wrongly signed webhooks of both producers and a
// notification, admin calls with the right token, a wrong one and none, reconciliations while
// the PIM's token endpoint fails with answers that echo the request (and so the password) back,
// a hydrated delivery to a plugin process, a token renewal, metrics, and a clean stop. Then its
// whole log (stderr: pimgate logs nowhere else), the admin API's error messages and /metrics are
// searched for every secret, their base64 and hex forms, the HTTP Basic credential pimgate sends
// the PIM, and the signatures a wrongly signed webhook should have carried.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "pimgate/v1/admin.grpc.pb.h"
#include "tests/testing/fake_pim.h"
#include "tests/testing/test_env.h"

namespace pimgate {
namespace {

using testing::CloudEvent;
using testing::EventPlatformHeaders;
using testing::FakePim;
using testing::HttpClient;
using testing::HttpResponse;
using testing::LegacyBatch;
using testing::LegacyHeaders;
using testing::LegacyProductEvent;
using testing::NewUuid;
using testing::TempDir;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// The end of a log, for failure messages (the whole of it runs to a thousand lines).
std::string Tail(const std::string& log) {
  return log.size() <= 4000 ? log : "..." + log.substr(log.size() - 4000);
}

// Waits up to 60 s for `done`.
bool WaitFor(const std::function<bool()>& done) {
  for (int i = 0; i < 6000; ++i) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return done();
}

// One secret: where pimgate reads it from, and its value (random per run, so that a match can
// only come from the secret itself).
struct SecretSpec {
  std::string name;
  std::string value;
};

std::string Secret(const std::string& label) { return absl::StrCat(label, "-", NewUuid()); }

// Every way a secret could show up in text: as is, base64 (standard and URL-safe, with and
// without padding), hex in either case, and its random part alone.
std::vector<std::string> Encodings(const std::string& secret) {
  std::vector<std::string> forms = {
      secret, absl::Base64Escape(secret), absl::WebSafeBase64Escape(secret),
      absl::BytesToHexString(secret), absl::AsciiStrToUpper(absl::BytesToHexString(secret))};
  std::string padded = absl::Base64Escape(secret);
  while (!padded.empty() && padded.back() == '=') padded.pop_back();
  forms.push_back(padded);
  if (const std::size_t dash = secret.find('-'); dash != std::string::npos) {
    forms.push_back(secret.substr(dash + 1));
  }
  return forms;
}

// Where in `text` any form of `secret` appears ("" when none), with a little context.
std::string FindSecret(const std::string& text, const std::string& secret) {
  for (const std::string& form : Encodings(secret)) {
    const std::size_t at = text.find(form);
    if (at == std::string::npos) continue;
    const std::size_t from = at < 120 ? 0 : at - 120;
    return absl::StrCat("\"", form, "\" in: ...", text.substr(from, form.size() + 240), "...");
  }
  return "";
}

TEST(SecretsLogTest, AWholeRunAtDebugLevelLogsNoSecret) {
  TempDir dir;
  // The PIM's REST credentials: client_id and username are identifiers pimgate names in its
  // messages; the client secret and the password are secrets.
  FakePim::Options pim_options;
  pim_options.client_id = "scan-client";
  pim_options.username = "scan-user";
  pim_options.secret = Secret("rest-secret");
  pim_options.password = Secret("rest-password");
  FakePim pim(pim_options);
  const std::string product = NewUuid();
  pim.PutProduct(product, 1'800'000'000'000'000LL, R"({"family":"shoes"})");

  const std::vector<SecretSpec> secrets = {
      {"legacy secret (env)", Secret("legacy-secret")},
      {"platform secret (file)", Secret("platform-secret")},
      {"platform secondary secret (env)", Secret("platform-secondary")},
      {"notification secret (file)", Secret("notification-secret")},
      {"rest secret (file)", pim_options.secret},
      {"rest password (env)", pim_options.password},
      {"admin token (file)", Secret("admin-token")},
  };
  const std::string& legacy_secret = secrets[0].value;
  const std::string& platform_secret = secrets[1].value;
  const std::string& secondary_secret = secrets[2].value;
  const std::string& notification_secret = secrets[3].value;
  const std::string& admin_token = secrets[6].value;
  const std::vector<std::pair<std::string, std::string>> env = {
      {"PIMGATE_SCAN_LEGACY_SECRET", legacy_secret},
      {"PIMGATE_SCAN_PLATFORM_SECONDARY", secondary_secret},
      {"PIMGATE_SCAN_REST_PASSWORD", pim_options.password},
  };
  std::ofstream(dir.File("platform.secret")) << platform_secret << "\n";
  std::ofstream(dir.File("notification.secret")) << notification_secret << "\n";
  std::ofstream(dir.File("rest.secret")) << pim_options.secret << "\n";
  std::ofstream(dir.File("admin.token")) << admin_token << "\n";

  const testing::CertFiles cert = testing::MakeSelfSignedCert(dir.path());
  const std::string out = dir.File("rec.jsonl");
  std::ostringstream yaml;
  yaml << "gateway:\n  listen: 127.0.0.1:0\n  threads: 2\n"
       << "  tls:\n    cert_file: " << cert.cert_file << "\n    key_file: " << cert.key_file << "\n"
       << "store:\n  path: " << dir.File("store") << "\n"
       << "log:\n  level: debug\n"
       << "sources:\n"
       << "  - name: legacy\n    kind: events_api\n    path: /hooks/legacy\n"
       << "    secret: ${PIMGATE_SCAN_LEGACY_SECRET}\n"
       << "  - name: platform\n    kind: event_platform\n    path: /hooks/platform\n"
       << "    secret: file:" << dir.File("platform.secret") << "\n"
       << "    secondary_secret: ${PIMGATE_SCAN_PLATFORM_SECONDARY}\n"
       << "    notification_path: /hooks/platform/notifications\n"
       << "    notification_secret: file:" << dir.File("notification.secret") << "\n"
       << "    rest:\n      base_url: " << pim.base_url() << "\n"
       << "      client_id: " << pim_options.client_id << "\n"
       << "      secret: file:" << dir.File("rest.secret") << "\n"
       << "      username: " << pim_options.username << "\n"
       << "      password: ${PIMGATE_SCAN_REST_PASSWORD}\n"
       << "      insecure_skip_verify: true\n"
       << "      max_attempts: 2\n      initial_backoff: 10ms\n      max_backoff: 50ms\n"
       << "    reconcile: {interval: 0s}\n"
       << "admin:\n  listen: 127.0.0.1:0\n  token: file:" << dir.File("admin.token") << "\n"
       << "metrics:\n  listen: 127.0.0.1:0\n"
       << "plugins:\n"
       << "  - name: rec\n    command: [\"" << PIMGATE_E2E_RECORDER << "\"]\n"
       << "    env: {RECORDER_OUT: \"" << out << "\"}\n"
       << "    hydrate: true\n";
  std::ofstream(dir.File("pimgate.yaml")) << yaml.str();

  const std::string log_file = dir.File("pimgate.log");
  testing::PimgateProcess pimgate(dir.File("pimgate.yaml"), dir.File("ready.json"), env, log_file);
  const uint16_t port = pimgate.WaitReady();
  ASSERT_NE(port, 0) << "pimgate did not start:\n" << ReadAll(log_file);
  const std::string ready = ReadAll(dir.File("ready.json"));
  const auto port_of = [&ready](const std::string& key) {
    const std::size_t at = ready.find("\"" + key + "\":");
    return at == std::string::npos ? 0 : std::stoi(ready.substr(at + key.size() + 3));
  };
  // Everything a client is told back (admin errors, /metrics) is searched as well as the log.
  std::string answers;

  // ---- Webhooks: signed, wrongly signed, too old; both producers and a notification ----
  HttpClient client(port);
  const std::string legacy_body =
      LegacyBatch({LegacyProductEvent("product.updated", NewUuid(), NewUuid())});
  HttpResponse res =
      client.Send("POST", "/hooks/legacy", legacy_body, LegacyHeaders(legacy_secret, legacy_body));
  EXPECT_EQ(res.status, 200) << res.body;
  // Signatures the wrongly signed requests below should have carried: a log that printed the
  // expected signature would let anyone forge requests.
  std::vector<std::string> expected_signatures;
  const int64_t now = testing::NowUnixSeconds();
  const std::string forged_body =
      LegacyBatch({LegacyProductEvent("product.updated", NewUuid(), NewUuid())});
  res = client.Send("POST", "/hooks/legacy", forged_body,
                    LegacyHeaders("not-the-secret", forged_body, now));
  EXPECT_EQ(res.status, 401) << res.body;
  answers += res.body;
  expected_signatures.push_back(
      testing::TestHmacHex(legacy_secret, absl::StrCat(now, ".", forged_body)));
  res = client.Send("POST", "/hooks/legacy", forged_body,
                    LegacyHeaders(legacy_secret, forged_body, now - 3600));  // too old
  EXPECT_EQ(res.status, 401) << res.body;
  answers += res.body;

  // ---- Reconciliation while the token endpoint fails and echoes the request back ----
  // pimgate has no token yet: its first token request is a password grant, whose body holds the
  // password. A PIM (or proxy) error page that echoes it must not carry it into the log.
  auto admin = v1::Admin::NewStub(grpc::CreateChannel(
      absl::StrCat("127.0.0.1:", port_of("admin_port")), grpc::InsecureChannelCredentials()));
  const auto call = [&](const std::string& authorization, auto method, const auto& request,
                        auto* response) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    // A fresh channel: the first call waits for its connection instead of failing fast.
    context.set_wait_for_ready(true);
    if (!authorization.empty()) context.AddMetadata("authorization", authorization);
    const grpc::Status status = ((*admin).*method)(&context, request, response);
    answers += status.error_message();
    return status;
  };
  FakePim::Fault echo;
  echo.path = "/api/oauth/v1/token";
  echo.status = 500;  // retried by the client (debug log), then the run fails (warning)
  echo.message = "Internal error while handling {authorization} {request}";
  echo.count = 2;  // every attempt (rest.max_attempts 2)
  pim.InjectFault(echo);
  v1::ReconcileRequest reconcile;
  reconcile.set_source("platform");
  reconcile.set_full(true);
  v1::ReconcileResponse reconciled;
  grpc::Status status =
      call("Bearer " + admin_token, &v1::Admin::Stub::Reconcile, reconcile, &reconciled);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
  EXPECT_EQ(pim.pending_faults(), 0);
  echo.status = 401;  // refused: not retried
  echo.message = "Bad credentials in {authorization} {request}";
  echo.count = 1;
  pim.InjectFault(echo);
  status = call("Bearer " + admin_token, &v1::Admin::Stub::Reconcile, reconcile, &reconciled);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << status.error_message();
  EXPECT_EQ(pim.pending_faults(), 0);
  // The echoing PIM did receive the password (so the test exercised what it means to).
  int password_grants = 0;
  for (const FakePim::Request& r : pim.requests()) {
    password_grants += r.target == "/api/oauth/v1/token" && (r.status == 500 || r.status == 401);
  }
  EXPECT_EQ(password_grants, 3);
  status = call("Bearer " + admin_token, &v1::Admin::Stub::Reconcile, reconcile, &reconciled);
  EXPECT_TRUE(status.ok()) << status.error_message();

  const std::string event_body =
      CloudEvent("com.akeneo.pim.v1.product.updated", NewUuid(), product);
  res = client.Send("POST", "/hooks/platform", event_body,
                    EventPlatformHeaders(platform_secret, event_body));
  EXPECT_EQ(res.status, 200) << res.body;
  const std::string rotated_body =
      CloudEvent("com.akeneo.pim.v1.product.updated", NewUuid(), NewUuid());
  res = client.Send("POST", "/hooks/platform", rotated_body,
                    EventPlatformHeaders(secondary_secret, rotated_body));
  EXPECT_EQ(res.status, 200) << res.body;
  const std::string forged_event =
      CloudEvent("com.akeneo.pim.v1.product.updated", NewUuid(), NewUuid());
  res = client.Send("POST", "/hooks/platform", forged_event,
                    EventPlatformHeaders("not-the-secret", forged_event));
  EXPECT_EQ(res.status, 401) << res.body;
  answers += res.body;
  expected_signatures.push_back(testing::TestHmacHex(platform_secret, forged_event));
  expected_signatures.push_back(testing::TestHmacHex(secondary_secret, forged_event));
  // notification_secret signs notifications only: an event signed with it is refused.
  res = client.Send("POST", "/hooks/platform", forged_event,
                    EventPlatformHeaders(notification_secret, forged_event));
  EXPECT_EQ(res.status, 401) << res.body;
  answers += res.body;
  const std::string notification = absl::StrCat(
      R"({"notification_type":"subscription.suspended.system","timestamp":"2026-04-29T12:34:56Z",)",
      R"("subscription_id":"sub-1","subscriber_id":"018e1ec5-29da-78ad-aae6-92065b9ca2a5",)",
      R"("destination":"https://pimgate.example.com/hooks/platform","events":[],)",
      R"("reason":"Success rate dropped below 90%","subject":"https://pim.example.com/"})");
  res = client.Send("POST", "/hooks/platform/notifications", notification,
                    EventPlatformHeaders(notification_secret, notification));
  EXPECT_EQ(res.status, 200) << res.body;

  // The hydrated delivery: the plugin records the platform event (and the token grant ran).
  ASSERT_TRUE(WaitFor([&] { return absl::StrContains(ReadAll(out), product); }))
      << "the hydrating plugin got nothing:\n"
      << ReadAll(log_file);

  // ---- Admin API: the right token, a wrong one, none ----
  v1::GetStatsResponse stats;
  EXPECT_TRUE(
      call("Bearer " + admin_token, &v1::Admin::Stub::GetStats, v1::GetStatsRequest{}, &stats)
          .ok());
  EXPECT_EQ(call("Bearer not-the-token", &v1::Admin::Stub::GetStats, v1::GetStatsRequest{}, &stats)
                .error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(call("", &v1::Admin::Stub::GetStats, v1::GetStatsRequest{}, &stats).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(
      call(admin_token, &v1::Admin::Stub::GetStats, v1::GetStatsRequest{}, &stats).error_code(),
      grpc::StatusCode::UNAUTHENTICATED);  // the token without "Bearer "

  // A token the PIM revoked: the next call is refused and the client renews it (refresh grant).
  pim.ExpireTokens();
  status = call("Bearer " + admin_token, &v1::Admin::Stub::Reconcile, reconcile, &reconciled);
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_GE(pim.refresh_requests(), 1);

  // ---- Metrics, then a clean stop ----
  HttpClient metrics(static_cast<uint16_t>(port_of("metrics_port")), /*tls=*/false);
  res = metrics.Send("GET", "/metrics", "");
  EXPECT_EQ(res.status, 200);
  answers += res.body;
  EXPECT_EQ(pimgate.Terminate(), 0);

  const std::string log = ReadAll(log_file);
  // Positive controls: the log was captured, at debug level, across the run, and it names where
  // each secret came from (which the scan must not confuse with the secret).
  ASSERT_FALSE(log.empty());
  EXPECT_TRUE(absl::StrContains(log, "Z debug ")) << Tail(log);
  EXPECT_TRUE(absl::StrContains(log, "env:PIMGATE_SCAN_LEGACY_SECRET")) << Tail(log);
  EXPECT_TRUE(absl::StrContains(log, "file:" + dir.File("platform.secret"))) << Tail(log);
  EXPECT_TRUE(absl::StrContains(log, "token from file:" + dir.File("admin.token"))) << Tail(log);
  EXPECT_TRUE(absl::StrContains(log, "[admin] refused a call")) << Tail(log);
  EXPECT_TRUE(absl::StrContains(log, "refused the token request")) << Tail(log);
  EXPECT_TRUE(absl::StrContains(log, "HTTP 500")) << Tail(log);
  // The echoed password did come back in the PIM's answers, and was redacted.
  EXPECT_TRUE(absl::StrContains(log, "\"password\":\"<redacted>\"")) << Tail(log);
  EXPECT_TRUE(absl::StrContains(log, "stopped") || absl::StrContains(log, "stopping")) << Tail(log);

  for (const SecretSpec& secret : secrets) {
    EXPECT_EQ(FindSecret(log, secret.value), "") << secret.name << " is in pimgate's log";
    EXPECT_EQ(FindSecret(answers, secret.value), "")
        << secret.name << " is in an answer to a client";
  }
  const std::string basic = absl::Base64Escape(
      absl::StrCat(pim_options.client_id, ":", pim_options.secret));  // what pimgate sends
  EXPECT_FALSE(absl::StrContains(log, basic)) << "the HTTP Basic credential is in pimgate's log";
  for (const std::string& signature : expected_signatures) {
    EXPECT_FALSE(absl::StrContains(log, signature))
        << "the signature a forged request lacked is in pimgate's log: " << signature;
    EXPECT_FALSE(absl::StrContains(answers, signature)) << signature;
  }
  std::cout << "scanned " << log.size() << " bytes of log ("
            << std::count(log.begin(), log.end(), '\n') << " lines) and " << answers.size()
            << " bytes of answers\n";
}

}  // namespace
}  // namespace pimgate
