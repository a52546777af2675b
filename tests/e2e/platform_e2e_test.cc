// The Event Platform end to end: a pimgate process with two Event Platform sources (one with
// `rest` pointing at a FakePim, one without), Python plugin processes recording every delivery,
// signed CloudEvents and notification webhooks in, /metrics scraped.
//
// - A product's plain and delta events (Akeneo's example payloads) both reach a plugin, in either
//   arrival order: both are versioned by `time`, and equal times are not stale.
// - An event older (by `time`) than one already delivered is stale: a default plugin skips it,
//   one with skip_stale: false gets it flagged.
// - A notification webhook sets pimgate_platform_subscription_state; a `resumed` one starts a
//   reconciliation of its source at once (the FakePim sees it, and the product changed while
//   the subscription was suspended reaches the plugin); on a source without `rest` pimgate logs
//   that no reconciliation can run. The states survive a restart.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "tests/testing/fake_pim.h"
#include "tests/testing/test_env.h"

namespace pimgate {
namespace {

using google::protobuf::Struct;
using testing::EventPlatformHeaders;
using testing::FakePim;
using testing::HttpClient;
using testing::HttpResponse;
using testing::NewUuid;
using testing::PimgateProcess;
using testing::TempDir;

constexpr char kPlatformSecret[] = "e2e-platform-secret";
constexpr char kNoRestSecret[] = "e2e-norest-secret";
constexpr char kNotificationSecret[] = "e2e-notification-secret-0123";
constexpr char kSubject[] = "019256aa-7f77-7f58-bc8c-770f7e369c5b";

// Appends one JSON line per delivery to RECORDER_OUT.
constexpr char kRecorder[] = R"(import json, os, sys
import pimgate_sdk

OUT = os.environ["RECORDER_OUT"]

def handle(event, attempt):
    line = json.dumps({"plugin": pimgate_sdk.plugin_name(), "sequence": event.sequence,
                       "id": event.id, "type": event.type, "kind": event.kind,
                       "resource_id": event.resource_id, "subject": event.subject,
                       "pim_source": event.pim_source, "stale": event.stale,
                       "origin": event.origin, "version_at": event.version_at.ToJsonString(),
                       "data": pimgate_sdk.data(event)})
    with open(OUT, "a") as out:
        out.write(line + "\n")
    return pimgate_sdk.ok()

if __name__ == "__main__":
    sys.exit(pimgate_sdk.run(handle, concurrency=1))
)";

std::string ProductUpdated(const std::string& id, const std::string& uuid,
                           const std::string& time) {
  return absl::StrCat(R"({"specversion":"1.0","id":")", id,
                      R"(","type":"com.akeneo.pim.v1.product.updated","source":"pim","subject":")",
                      kSubject, R"(","time":")", time,
                      R"(","datacontenttype":"application/json",)"
                      R"("dataschema":"https://event.prd.sdk.akeneo.cloud/spec/)"
                      R"(com.akeneo.pim.v1.product.updated.schema.json",)"
                      R"("data":{"product":{"uuid":")",
                      uuid, R"("},"author":{"identifier":"admin","type":"user"}}})");
}

std::string ProductUpdatedDelta(const std::string& id, const std::string& uuid,
                                const std::string& time) {
  return absl::StrCat(
      R"({"specversion":"1.0","id":")", id,
      R"(","type":"com.akeneo.pim.v1.product.updated.delta","source":"pim","subject":")", kSubject,
      R"(","time":")", time,
      R"(","datacontenttype":"application/json",)"
      R"("dataschema":"https://event.prd.sdk.akeneo.cloud/spec/)"
      R"(com.akeneo.pim.v1.product.updated.delta.schema.json",)"
      R"("data":{"product":{"uuid":")",
      uuid,
      R"(","updated_at":{"date":"2024-10-14 13:01:21.000000","timezone":"UTC"},)"
      R"("changes":{"enabled":{"previous":true,"new":false},)"
      R"("categories":{"added":["added_category_code_1"],"removed":["removed_category_code_1"]},)"
      R"("values":{"an_updated_attribute":[{"previous":"previous_data","new":"new_data",)"
      R"("type":"an_attribute_type","locale":"a_locale","scope":"a_scope"}]}}},)"
      R"("author":{"identifier":"admin","type":"user"}}})");
}

std::string Notification(const std::string& type, const std::string& subscription,
                         const std::string& timestamp, const std::string& destination) {
  return absl::StrCat(R"({"notification_type":")", type, R"(","timestamp":")", timestamp,
                      R"(","subscription_id":")", subscription,
                      R"(","subscriber_id":"018e1ec5-29da-78ad-aae6-92065b9ca2a5",)"
                      R"("destination":")",
                      destination,
                      R"(","events":["com.akeneo.pim.v1.product.updated",)"
                      R"("com.akeneo.pim.v1.product.updated.delta"],)"
                      R"("reason":"Success rate dropped below 90%",)"
                      R"("subject":"https://example.cloud.akeneo.com/"})");
}

struct Line {
  Struct json;
  std::string Str(const std::string& key) const {
    auto it = json.fields().find(key);
    return it == json.fields().end() ? "" : it->second.string_value();
  }
  bool Bool(const std::string& key) const {
    auto it = json.fields().find(key);
    return it != json.fields().end() && it->second.bool_value();
  }
  const Struct& Data() const { return json.fields().at("data").struct_value(); }
};

std::vector<Line> ReadLines(const std::string& path, const std::string& plugin) {
  std::vector<Line> lines;
  std::ifstream in(path);
  std::string text;
  while (std::getline(in, text)) {
    Line line;
    if (text.empty() || !google::protobuf::util::JsonStringToMessage(text, &line.json).ok()) {
      continue;  // a line being written
    }
    if (line.Str("plugin") == plugin) lines.push_back(std::move(line));
  }
  return lines;
}

bool WaitFor(const std::function<bool()>& done) {
  for (int i = 0; i < 1200; ++i) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return done();
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

int Count(const std::string& text, const std::string& part) {
  int n = 0;
  for (std::size_t pos = text.find(part); pos != std::string::npos;
       pos = text.find(part, pos + part.size())) {
    ++n;
  }
  return n;
}

// The first line of `text` containing `part`, or "".
std::string LineWith(const std::string& text, const std::string& part) {
  const std::size_t pos = text.find(part);
  if (pos == std::string::npos) return "";
  const std::size_t start = text.rfind('\n', pos);
  const std::size_t end = text.find('\n', pos);
  return text.substr(start == std::string::npos ? 0 : start + 1,
                     end == std::string::npos ? std::string::npos
                                              : end - (start == std::string::npos ? 0 : start + 1));
}

uint16_t PortFromReadyFile(const std::string& path, const std::string& key) {
  const std::string ready = ReadFile(path);
  const std::size_t pos = ready.find("\"" + key + "\":");
  if (pos == std::string::npos) return 0;
  return static_cast<uint16_t>(std::stoi(ready.substr(pos + key.size() + 3)));
}

class PlatformEndToEnd : public ::testing::Test {
 protected:
  void SetUp() override {
    const FakePim::Options pim_options;
    cert_ = testing::MakeSelfSignedCert(dir_.path());
    std::ofstream(dir_.File("recorder.py")) << kRecorder;
    std::ostringstream yaml;
    yaml << "gateway:\n  listen: 127.0.0.1:0\n  threads: 2\n  tls:\n    cert_file: "
         << cert_.cert_file << "\n    key_file: " << cert_.key_file << "\n"
         << "store:\n  path: " << dir_.File("store") << "\n"
         << "admin: {enabled: false}\n"
         << "metrics: {listen: \"127.0.0.1:0\"}\n"
         << "sources:\n"
         << "  - name: platform\n    kind: event_platform\n    path: /hooks/platform\n"
         << "    secret: " << kPlatformSecret << "\n"
         << "    notification_path: /hooks/platform/notifications\n"
         << "    notification_secret: " << kNotificationSecret << "\n"
         << "    rest:\n      base_url: " << pim_.base_url() << "\n"
         << "      client_id: " << pim_options.client_id << "\n"
         << "      secret: " << pim_options.secret << "\n"
         << "      username: " << pim_options.username << "\n"
         << "      password: " << pim_options.password << "\n"
         << "      insecure_skip_verify: true\n"
         << "    reconcile: {interval: 0s}\n"  // on demand only: runs come from resumes alone
         << "  - name: norest\n    kind: event_platform\n    path: /hooks/norest\n"
         << "    secret: " << kNoRestSecret << "\n"
         << "plugins:\n";
    for (const auto& [name, extra] :
         {std::pair<std::string, std::string>{"fresh", "    events: [\"product.*\"]\n"},
          std::pair<std::string, std::string>{"everything", "    skip_stale: false\n"}}) {
      yaml << "  - name: " << name << "\n"
           << "    command: [\"/usr/bin/python3\", \"" << dir_.File("recorder.py") << "\"]\n"
           << "    env: {RECORDER_OUT: \"" << out() << "\", PYTHONPATH: \"" << PIMGATE_PYTHON_ROOT
           << "\"}\n"
           << "    start_timeout: 20s\n"
           << extra;
    }
    std::ofstream(dir_.File("pimgate.yaml")) << yaml.str();
  }

  void Start() {
    pimgate_ =
        std::make_unique<PimgateProcess>(dir_.File("pimgate.yaml"), dir_.File("ready.json"),
                                         std::vector<std::pair<std::string, std::string>>{}, log());
    const uint16_t port = pimgate_->WaitReady();
    ASSERT_NE(port, 0) << ReadFile(log());
    client_ = std::make_unique<HttpClient>(port);
    const uint16_t metrics_port = PortFromReadyFile(dir_.File("ready.json"), "metrics_port");
    ASSERT_NE(metrics_port, 0);
    metrics_ = std::make_unique<HttpClient>(metrics_port, /*tls=*/false);
  }

  void Stop() {
    EXPECT_EQ(pimgate_->Terminate(), 0);
    client_.reset();
    metrics_.reset();
  }

  HttpResponse Post(const std::string& path, const std::string& body, const std::string& secret) {
    return client_->Send("POST", path, body, EventPlatformHeaders(secret, body));
  }

  std::string Metrics() { return metrics_->Send("GET", "/metrics", "").body; }

  // The value of the state-set sample, or "" when absent.
  std::string State(const std::string& text, const std::string& source,
                    const std::string& subscription, const std::string& state) {
    const std::string prefix =
        absl::StrCat(R"(pimgate_platform_subscription_state{source=")", source,
                     R"(",subscription=")", subscription, R"(",state=")", state, R"("} )");
    const std::size_t pos = text.find(prefix);
    if (pos == std::string::npos) return "";
    return text.substr(pos + prefix.size(), text.find('\n', pos) - pos - prefix.size());
  }

  std::string out() const { return dir_.File("deliveries.jsonl"); }
  std::string log() const { return dir_.File("pimgate.log"); }

  int ProductSearches() {
    int n = 0;
    for (const FakePim::Request& r : pim_.requests()) {
      n += r.target.rfind("/api/rest/v1/products-uuid?", 0) == 0;
    }
    return n;
  }

  TempDir dir_;
  FakePim pim_;
  testing::CertFiles cert_;
  std::unique_ptr<PimgateProcess> pimgate_;
  std::unique_ptr<HttpClient> client_;
  std::unique_ptr<HttpClient> metrics_;
};

TEST_F(PlatformEndToEnd, PlainAndDeltaEventsOfAProductBothReachThePlugin) {
  ASSERT_NO_FATAL_FAILURE(Start());
  // In order: the plain event, then the delta of the same save (same `time`, Akeneo's example).
  const std::string first = NewUuid();
  const std::string plain_id = NewUuid(), delta_id = NewUuid();
  ASSERT_EQ(Post("/hooks/platform", ProductUpdated(plain_id, first, "2024-02-22T17:31:00Z"),
                 kPlatformSecret)
                .status,
            200);
  ASSERT_EQ(Post("/hooks/platform", ProductUpdatedDelta(delta_id, first, "2024-02-22T17:31:00Z"),
                 kPlatformSecret)
                .status,
            200);
  // Reverse arrival: the delta first. Same `time` again: neither is stale.
  const std::string second = NewUuid();
  const std::string rdelta_id = NewUuid(), rplain_id = NewUuid();
  ASSERT_EQ(Post("/hooks/platform", ProductUpdatedDelta(rdelta_id, second, "2024-02-22T17:35:00Z"),
                 kPlatformSecret)
                .status,
            200);
  ASSERT_EQ(Post("/hooks/platform", ProductUpdated(rplain_id, second, "2024-02-22T17:35:00Z"),
                 kPlatformSecret)
                .status,
            200);

  ASSERT_TRUE(WaitFor([&] { return ReadLines(out(), "fresh").size() >= 4; }))
      << "the default plugin (skip_stale) did not receive all four events:\n"
      << ReadFile(out());
  const std::vector<Line> lines = ReadLines(out(), "fresh");
  ASSERT_EQ(lines.size(), 4u);
  // Per resource, in arrival order; the two resources may interleave.
  std::vector<std::string> first_ids, second_ids;
  for (const Line& line : lines) {
    EXPECT_FALSE(line.Bool("stale")) << line.Str("id");
    EXPECT_EQ(line.Str("subject"), kSubject);
    EXPECT_EQ(line.Str("pim_source"), "pim");
    (line.Str("resource_id") == first ? first_ids : second_ids).push_back(line.Str("id"));
  }
  EXPECT_EQ(first_ids, (std::vector<std::string>{plain_id, delta_id}));
  EXPECT_EQ(second_ids, (std::vector<std::string>{rdelta_id, rplain_id}));
  // The delta arrives whole: its save time and changes are in its data, as sent.
  for (const Line& line : lines) {
    if (line.Str("id") != delta_id) continue;
    EXPECT_EQ(line.Str("type"), "product.updated.delta");
    EXPECT_EQ(line.Str("version_at"), "2024-02-22T17:31:00Z");
    const Struct& product = line.Data().fields().at("product").struct_value();
    EXPECT_EQ(product.fields().at("updated_at").struct_value().fields().at("date").string_value(),
              "2024-10-14 13:01:21.000000");
    EXPECT_FALSE(product.fields()
                     .at("changes")
                     .struct_value()
                     .fields()
                     .at("enabled")
                     .struct_value()
                     .fields()
                     .at("new")
                     .bool_value());
  }

  // Akeneo's order decides when times differ: a delta published before the plain event that
  // was delivered already is older. The default plugin skips it; proof that it had the time to
  // receive it: it receives the event sent after it.
  const std::string third = NewUuid();
  const std::string newer_id = NewUuid(), older_id = NewUuid(), later_id = NewUuid();
  ASSERT_EQ(Post("/hooks/platform", ProductUpdated(newer_id, third, "2024-02-22T18:00:00.002Z"),
                 kPlatformSecret)
                .status,
            200);
  ASSERT_EQ(Post("/hooks/platform",
                 ProductUpdatedDelta(older_id, third, "2024-02-22T18:00:00.001Z"), kPlatformSecret)
                .status,
            200);
  ASSERT_EQ(Post("/hooks/platform", ProductUpdated(later_id, third, "2024-02-22T18:00:01Z"),
                 kPlatformSecret)
                .status,
            200);
  ASSERT_TRUE(WaitFor([&] {
    for (const Line& line : ReadLines(out(), "fresh")) {
      if (line.Str("id") == later_id) return true;
    }
    return false;
  }));
  for (const Line& line : ReadLines(out(), "fresh")) EXPECT_NE(line.Str("id"), older_id);
  // A plugin with skip_stale: false gets it, flagged.
  ASSERT_TRUE(WaitFor([&] {
    for (const Line& line : ReadLines(out(), "everything")) {
      if (line.Str("id") == later_id) return true;
    }
    return false;
  }));
  bool flagged = false;
  for (const Line& line : ReadLines(out(), "everything")) {
    if (line.Str("id") == older_id) flagged = line.Bool("stale");
  }
  EXPECT_TRUE(flagged) << ReadFile(out());
  Stop();
}

TEST_F(PlatformEndToEnd, NotificationsSetTheMetricAndAResumeReconcilesTheSource) {
  ASSERT_NO_FATAL_FAILURE(Start());
  EXPECT_NE(Metrics().find("# TYPE pimgate_platform_subscription_state gauge"), std::string::npos);

  // The platform suspends the subscription of the `platform` source; it tells the subscriber's
  // notification URL, here the source's notification_path.
  const std::string suspended =
      Notification("subscription.suspended.system", "sub-p", "2026-04-29T12:00:00Z",
                   "https://pimgate.example.com/hooks/platform");
  HttpResponse response = Post("/hooks/platform/notifications", suspended, kNotificationSecret);
  ASSERT_EQ(response.status, 200) << response.body;
  std::string text = Metrics();
  EXPECT_EQ(State(text, "platform", "sub-p", "suspended"), "1") << text;
  EXPECT_EQ(State(text, "platform", "sub-p", "active"), "0");
  EXPECT_EQ(State(text, "platform", "sub-p", "revoked"), "0");
  EXPECT_EQ(ProductSearches(), 0) << "a suspension must not reconcile";

  // While it is suspended, a product changes in the PIM: no event will come for it.
  const std::string missed = NewUuid();
  pim_.PutProduct(missed, absl::ToUnixMicros(absl::Now()) - 60'000'000);
  // The subscription resumes: a reconciliation of the source starts at once.
  const std::string resumed = Notification("subscription.resumed", "sub-p", "2026-04-29T13:00:00Z",
                                           "https://pimgate.example.com/hooks/platform");
  response = Post("/hooks/platform/notifications", resumed, kNotificationSecret);
  ASSERT_EQ(response.status, 200) << response.body;
  text = Metrics();
  EXPECT_EQ(State(text, "platform", "sub-p", "active"), "1") << text;
  EXPECT_EQ(State(text, "platform", "sub-p", "suspended"), "0");
  ASSERT_TRUE(WaitFor([&] { return ProductSearches() >= 1; }))
      << "no reconciliation reached the PIM after the resume\n"
      << ReadFile(log());
  ASSERT_TRUE(WaitFor([&] {
    for (const Line& line : ReadLines(out(), "fresh")) {
      if (line.Str("resource_id") == missed) return true;
    }
    return false;
  })) << "the product changed while suspended was not reconciled";
  // The notifications are in the log as their own kind: a plugin whose `events` take
  // everything sees them.
  ASSERT_TRUE(WaitFor([&] {
    int n = 0;
    for (const Line& line : ReadLines(out(), "everything")) n += line.Str("kind") == "subscription";
    return n == 2;
  }));
  for (const Line& line : ReadLines(out(), "fresh")) EXPECT_NE(line.Str("kind"), "subscription");

  // The platform re-sends the resume (no 2xx seen, say): a duplicate, no second run. Positive
  // control for "no second run": a resume of another subscription of the source runs one
  // (below), and by then the re-sent one would have too.
  response = Post("/hooks/platform/notifications", resumed, kNotificationSecret);
  ASSERT_EQ(response.status, 200);
  EXPECT_EQ(response.body, R"({"accepted":0,"duplicates":1})");

  // A source without `rest`: the resume is recorded, and pimgate says no reconciliation can
  // run. Its notification arrives at the source's own path, signed with its own secret.
  const std::string norest_suspended = Notification(
      "subscription.suspended.user", "sub-n", "2026-04-29T12:00:00Z", "https://x/hooks/norest");
  ASSERT_EQ(Post("/hooks/norest", norest_suspended, kNoRestSecret).status, 200);
  const std::string norest_resumed = Notification("subscription.resumed", "sub-n",
                                                  "2026-04-29T12:30:00Z", "https://x/hooks/norest");
  ASSERT_EQ(Post("/hooks/norest", norest_resumed, kNoRestSecret).status, 200);
  ASSERT_TRUE(WaitFor([&] {
    return ReadFile(log()).find("subscription sub-n resumed, but no reconciliation can run") !=
           std::string::npos;
  })) << ReadFile(log());
  EXPECT_EQ(State(Metrics(), "norest", "sub-n", "active"), "1");

  const std::string other = Notification("subscription.resumed", "sub-q", "2026-04-29T13:00:00Z",
                                         "https://pimgate.example.com/hooks/platform");
  ASSERT_EQ(Post("/hooks/platform/notifications", other, kNotificationSecret).status, 200);
  ASSERT_TRUE(WaitFor([&] {
    return ReadFile(log()).find("reconciliation after the resume of sub-q done") !=
           std::string::npos;
  })) << ReadFile(log());
  std::string logged = ReadFile(log());
  EXPECT_EQ(Count(logged, "reconciliation after the resume of sub-p done"), 1) << logged;

  // Logged at warning level.
  const std::string suspended_line = LineWith(logged, "SUSPENDED by the platform");
  EXPECT_NE(suspended_line.find(" warning "), std::string::npos) << suspended_line;
  EXPECT_NE(suspended_line.find("subscription sub-p"), std::string::npos) << suspended_line;
  EXPECT_NE(suspended_line.find("(Success rate dropped below 90%)"), std::string::npos)
      << suspended_line;
  EXPECT_NE(LineWith(logged, "sub-p (subscriber 018e1ec5-29da-78ad-aae6-92065b9ca2a5): resumed")
                .find(" warning "),
            std::string::npos)
      << logged;

  // Revoked, then a restart: the states come back from the store.
  const std::string revoked = Notification("subscription.revoked", "sub-r", "2026-04-29T14:00:00Z",
                                           "https://pimgate.example.com/hooks/platform");
  ASSERT_EQ(Post("/hooks/platform/notifications", revoked, kNotificationSecret).status, 200);
  Stop();
  ASSERT_NO_FATAL_FAILURE(Start());
  text = Metrics();
  EXPECT_EQ(State(text, "platform", "sub-r", "revoked"), "1") << text;
  EXPECT_EQ(State(text, "platform", "sub-p", "active"), "1") << text;
  EXPECT_EQ(State(text, "norest", "sub-n", "active"), "1") << text;
  Stop();
}

}  // namespace
}  // namespace pimgate
