// End to end through real processes: signed HTTPS requests into a pimgate process, delivered to
// plugin processes written with the C++, Python and Node SDKs, each recording what it received.
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "core/dispatch/dead_letters.h"
#include "tests/testing/test_env.h"

namespace pimgate {
namespace {

using testing::CloudEvent;
using testing::EventPlatformHeaders;
using testing::HttpClient;
using testing::HttpResponse;
using testing::LegacyBatch;
using testing::LegacyHeaders;
using testing::NewUuid;
using testing::PimgateProcess;
using testing::TempDir;

constexpr char kLegacySecret[] = "e2e-legacy-secret";
constexpr char kPlatformSecret[] = "e2e-platform-secret";

// One line written by a recorder plugin.
struct Record {
  std::string plugin;
  uint64_t sequence = 0;
  std::string id;
  uint32_t attempt = 0;
  std::string type;
  std::string resource_id;
  int pid = 0;
};

// Tiny extraction for the flat JSON lines the recorders write.
std::string Field(const std::string& line, const std::string& name) {
  const std::string key = "\"" + name + "\":";
  std::size_t pos = line.find(key);
  if (pos == std::string::npos) return "";
  pos += key.size();
  while (pos < line.size() && line[pos] == ' ') ++pos;
  if (line[pos] == '"') {
    const std::size_t end = line.find('"', pos + 1);
    return line.substr(pos + 1, end - pos - 1);
  }
  const std::size_t end = line.find_first_of(",}", pos);
  return line.substr(pos, end - pos);
}

std::vector<Record> ReadRecords(const std::string& path) {
  std::vector<Record> records;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line.back() != '}') continue;  // a line being written
    Record r;
    r.plugin = Field(line, "plugin");
    r.sequence = std::stoull(Field(line, "sequence"));
    r.id = Field(line, "id");
    r.attempt = static_cast<uint32_t>(std::stoul(Field(line, "attempt")));
    r.type = Field(line, "type");
    r.resource_id = Field(line, "resource_id");
    r.pid = std::stoi(Field(line, "pid"));
    records.push_back(r);
  }
  return records;
}

// The event as the test sent it.
struct Sent {
  std::string id;
  std::string type;  // canonical
  std::string resource;
  std::string source;
  std::string author;
  bool stale = false;
};

std::string LegacyEvent(const Sent& e, int version) {
  std::string updated = absl::StrCat("2026-11-20T10:", absl::Dec(version / 60, absl::kZeroPad2),
                                     ":", absl::Dec(version % 60, absl::kZeroPad2), "+00:00");
  std::string action = e.type == "product.deleted" ? "product.removed" : e.type;
  std::string resource =
      e.type.rfind("product_model", 0) == 0
          ? absl::StrCat(R"({"code":")", e.resource, R"(","updated":")", updated, R"("})")
          : absl::StrCat(R"({"uuid":")", e.resource, R"(","updated":")", updated,
                         R"(","family":"shoes"})");
  return absl::StrCat(R"({"action":")", action, R"(","event_id":")", e.id,
                      R"(","event_datetime":"2026-11-20T10:00:00+00:00","author":")", e.author,
                      R"(","author_type":"api","pim_source":"https:\/\/pim.example.com",)",
                      R"("data":{"resource":)", resource, "}}");
}

class EndToEnd : public ::testing::Test {
 protected:
  struct PluginSpec {
    std::string name;
    std::vector<std::string> command;
    std::vector<std::pair<std::string, std::string>> env;
    std::string extra;  // more YAML keys, indented by 4
  };

  PluginSpec Cpp(const std::string& name, std::vector<std::pair<std::string, std::string>> env,
                 std::string extra = "") {
    return {name, {PIMGATE_E2E_RECORDER}, std::move(env), std::move(extra)};
  }
  PluginSpec Python(const std::string& name, std::vector<std::pair<std::string, std::string>> env,
                    std::string extra = "") {
    env.emplace_back("PYTHONPATH", PIMGATE_PYTHON_ROOT);
    return {name,
            {"/usr/bin/python3", std::string(PIMGATE_SOURCE_DIR) + "/tests/e2e/recorder.py"},
            std::move(env),
            std::move(extra)};
  }
  PluginSpec Node(const std::string& name, std::vector<std::pair<std::string, std::string>> env,
                  std::string extra = "") {
    return {name,
            {"node", std::string(PIMGATE_SOURCE_DIR) + "/tests/e2e/recorder.js"},
            std::move(env),
            std::move(extra)};
  }

  std::string Out(const std::string& plugin) { return dir_.File(plugin + ".jsonl"); }

  void WriteConfig(const std::vector<PluginSpec>& plugins) {
    testing::CertFiles cert = testing::MakeSelfSignedCert(dir_.path());
    std::ostringstream yaml;
    yaml << "gateway:\n  listen: 127.0.0.1:0\n  threads: 2\n  tls:\n    cert_file: "
         << cert.cert_file << "\n    key_file: " << cert.key_file << "\n"
         << "store:\n  path: " << dir_.File("store") << "\n  sync: true\n"
         << "log:\n  level: info\n"
         // Ephemeral ports: the defaults (7070, 9464) are shared with every other test running.
         << "admin: {enabled: false}\n"
         << "metrics: {listen: \"127.0.0.1:0\"}\n"
         << "sources:\n"
         << "  - {name: legacy, kind: events_api, path: /hooks/legacy, secret: " << kLegacySecret
         << "}\n"
         << "  - {name: platform, kind: event_platform, path: /hooks/platform, secret: "
         << kPlatformSecret << "}\n"
         << "plugins:\n";
    for (const PluginSpec& p : plugins) {
      yaml << "  - name: " << p.name << "\n    command: [";
      for (std::size_t i = 0; i < p.command.size(); ++i) {
        yaml << (i ? ", " : "") << "\"" << p.command[i] << "\"";
      }
      yaml << "]\n    env:\n      RECORDER_OUT: " << Out(p.name) << "\n";
      for (const auto& [k, v] : p.env) yaml << "      " << k << ": \"" << v << "\"\n";
      yaml << "    ack_timeout: 5s\n    start_timeout: 20s\n    stop_timeout: 3s\n"
           << "    retry: {max_attempts: 3, initial_backoff: 50ms, max_backoff: 200ms}\n"
           << "    restart: {initial_backoff: 100ms, max_backoff: 1s}\n"
           << p.extra;
    }
    config_ = dir_.File("pimgate.yaml");
    std::ofstream(config_) << yaml.str();
  }

  HttpResponse PostLegacy(HttpClient& client, const std::vector<Sent>& events,
                          const std::vector<int>& versions) {
    std::vector<std::string> elements;
    for (std::size_t i = 0; i < events.size(); ++i) {
      elements.push_back(LegacyEvent(events[i], versions[i]));
    }
    const std::string body = LegacyBatch(elements);
    return client.Send("POST", "/hooks/legacy", body, LegacyHeaders(kLegacySecret, body));
  }

  // Waits until `done(records)` holds for the plugin's file, up to `seconds`.
  bool WaitRecords(const std::string& plugin,
                   const std::function<bool(const std::vector<Record>&)>& done, int seconds = 60) {
    for (int i = 0; i < seconds * 20; ++i) {
      if (done(ReadRecords(Out(plugin)))) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return done(ReadRecords(Out(plugin)));
  }

  // The value of the sample `name_and_labels` (e.g. `x_total{plugin="a"}`) in pimgate's
  // /metrics, -1 when absent or unreadable.
  double Metric(const std::string& name_and_labels) {
    std::ifstream in(dir_.File("ready.json"));
    const std::string ready((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const std::size_t pos = ready.find("\"metrics_port\":");
    if (pos == std::string::npos) return -1;
    HttpClient client(static_cast<uint16_t>(std::stoi(ready.substr(pos + 15))), /*tls=*/false);
    const std::string text = client.Send("GET", "/metrics", "").body;
    const std::string prefix = name_and_labels + " ";
    const std::size_t at = text.find("\n" + prefix);
    if (at == std::string::npos) return -1;
    return std::stod(text.substr(at + 1 + prefix.size()));
  }

  static std::set<std::string> Ids(const std::vector<Record>& records) {
    std::set<std::string> ids;
    for (const Record& r : records) ids.insert(r.id);
    return ids;
  }

  TempDir dir_;
  std::string config_;
};

TEST_F(EndToEnd, ThreeLanguagesReceiveExactlyTheirEventsInResourceOrder) {
  const std::vector<std::pair<std::string, std::string>> script = {
      {"RECORDER_RETRY_RESOURCE", "retry-me"}, {"RECORDER_REJECT_RESOURCE", "reject-me"}};
  WriteConfig({Cpp("cpp", script, "    events: [\"product.*\"]\n"),
               Python("python", script,
                      "    events: [\"product.*\", \"product_model.*\"]\n    sources: [legacy]\n"),
               Node("node", script, "    authors: {exclude: [erp]}\n")});
  PimgateProcess pimgate(config_, dir_.File("ready.json"));
  const uint16_t port = pimgate.WaitReady();
  ASSERT_NE(port, 0);

  // 4 clients, each owning its resources so versions rise in send order per resource.
  constexpr int kClients = 4, kRequestsPerClient = 10, kEventsPerRequest = 5;
  std::mutex mu;
  std::vector<Sent> sent;
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      HttpClient client(port);
      int version = 0;
      for (int r = 0; r < kRequestsPerClient; ++r) {
        std::vector<Sent> batch;
        std::vector<int> versions;
        for (int e = 0; e < kEventsPerRequest; ++e) {
          Sent s;
          s.id = NewUuid();
          s.source = "legacy";
          s.author = (r + e) % 7 == 0 ? "erp" : "julia";
          s.type = e == 4 ? "product_model.updated" : "product.updated";
          s.resource = absl::StrCat("c", c, "-r", (r + e) % 3);
          if (c == 0 && e == 0) s.resource = r % 2 ? "retry-me" : "reject-me";
          batch.push_back(s);
          versions.push_back(++version);
        }
        HttpResponse res = PostLegacy(client, batch, versions);
        ASSERT_EQ(res.status, 200) << res.body;
        std::lock_guard lock(mu);
        sent.insert(sent.end(), batch.begin(), batch.end());
      }
    });
  }
  for (auto& t : clients) t.join();
  HttpClient client(port);
  // A stale event: older than what the log has for c1-r0.
  Sent stale{NewUuid(), "product.updated", "c1-r0", "legacy", "julia", true};
  ASSERT_EQ(PostLegacy(client, {stale}, {0}).status, 200);
  sent.push_back(stale);
  // Event Platform events: product (to cpp and node), category (node only).
  for (const auto& [type, resource] : std::vector<std::pair<std::string, std::string>>{
           {"product.updated", "ep-1"}, {"product.deleted", "ep-1"}}) {
    Sent s{NewUuid(), type, resource, "platform", "b238e9f7", false};
    const std::string body = CloudEvent("com.akeneo.pim.v1." + type, s.id, resource);
    ASSERT_EQ(
        client.Send("POST", "/hooks/platform", body, EventPlatformHeaders(kPlatformSecret, body))
            .status,
        200);
    sent.push_back(s);
  }

  auto expected = [&](const std::string& plugin) {
    std::set<std::string> ids;
    for (const Sent& s : sent) {
      if (s.stale) continue;
      const bool product = s.type.rfind("product.", 0) == 0;
      const bool model = s.type.rfind("product_model.", 0) == 0;
      if (plugin == "cpp" && !product) continue;
      if (plugin == "python" && (!(product || model) || s.source != "legacy")) continue;
      if (plugin == "node" && s.author == "erp") continue;
      ids.insert(s.id);
    }
    return ids;
  };
  for (const std::string plugin : {"cpp", "python", "node"}) {
    const std::set<std::string> want = expected(plugin);
    ASSERT_TRUE(WaitRecords(plugin, [&](const auto& records) { return Ids(records) == want; }))
        << plugin << ": got " << Ids(ReadRecords(Out(plugin))).size() << " of " << want.size();
    std::vector<Record> records = ReadRecords(Out(plugin));
    // Per-resource order: first deliveries of each resource arrive in sequence order, and an
    // event is redelivered only for the scripted RETRY.
    std::map<std::string, uint64_t> last;
    std::map<std::string, int> deliveries;
    for (const Record& r : records) {
      ++deliveries[r.id];
      if (r.attempt == 1) {
        const std::string key = r.type.substr(0, r.type.find('.')) + "/" + r.resource_id;
        EXPECT_GT(r.sequence, last[key]) << plugin << " " << key;
        last[key] = r.sequence;
      } else {
        EXPECT_EQ(r.resource_id, "retry-me") << plugin;
        EXPECT_EQ(r.attempt, 2u);
      }
    }
    for (const auto& [id, n] : deliveries) {
      EXPECT_LE(n, 2) << plugin << " " << id;
    }
  }
  // REJECT → dead letters: one per reject-me event, for each plugin that received them. The
  // plugin writes its record before it answers REJECT, and pimgate dead-letters the event once
  // it reads that answer: wait until it has (a stop abandons deliveries still in flight).
  int reject_events = 0;
  for (const Sent& s : sent) reject_events += s.resource == "reject-me" && s.author != "erp";
  double dead_lettered = -1;
  EXPECT_TRUE(WaitRecords("node",
                          [&](const auto&) {
                            dead_lettered =
                                Metric(R"(pimgate_plugin_dead_lettered_total{plugin="node"})");
                            return dead_lettered == reject_events;
                          }))
      << "node: " << dead_lettered << " dead-lettered, " << reject_events << " rejected";
  EXPECT_EQ(pimgate.Terminate(), 0);

  auto log = EventLog::Open(testing::StoreAt(dir_.File("store")));
  ASSERT_TRUE(log.ok()) << log.status();
  auto letters = DeadLetters(**log).List("node", 0, 1000);
  ASSERT_TRUE(letters.ok());
  EXPECT_EQ(static_cast<int>(letters->size()), reject_events);
  for (const auto& letter : *letters) {
    EXPECT_TRUE(letter.rejected());
    EXPECT_EQ(letter.event().resource_id(), "reject-me");
  }
}

TEST_F(EndToEnd, PluginKilledMidStreamIsRestartedAndRedelivers) {
  WriteConfig({Python("python", {{"RECORDER_DELAY_MS", "100"}})});
  PimgateProcess pimgate(config_, dir_.File("ready.json"));
  const uint16_t port = pimgate.WaitReady();
  ASSERT_NE(port, 0);
  HttpClient client(port);
  std::vector<Sent> sent;
  for (int r = 0; r < 8; ++r) {
    std::vector<Sent> batch;
    for (int e = 0; e < 5; ++e) {
      batch.push_back({NewUuid(), "product.updated", absl::StrCat("r", e), "legacy", "julia"});
    }
    ASSERT_EQ(
        PostLegacy(client, batch, {r * 5 + 1, r * 5 + 2, r * 5 + 3, r * 5 + 4, r * 5 + 5}).status,
        200);
    sent.insert(sent.end(), batch.begin(), batch.end());
  }
  ASSERT_TRUE(WaitRecords("python", [](const auto& records) { return records.size() >= 5; }));
  const int first_pid = ReadRecords(Out("python")).front().pid;
  ASSERT_EQ(kill(first_pid, SIGKILL), 0);

  std::set<std::string> want;
  for (const Sent& s : sent) want.insert(s.id);
  ASSERT_TRUE(WaitRecords("python", [&](const auto& records) { return Ids(records) == want; }));
  std::vector<Record> records = ReadRecords(Out("python"));
  std::set<int> pids;
  bool redelivered = false;
  for (const Record& r : records) {
    pids.insert(r.pid);
    redelivered |= r.attempt > 1;
  }
  EXPECT_GE(pids.size(), 2u) << "the plugin was not restarted";
  EXPECT_TRUE(redelivered) << "in-flight events were not redelivered with attempt > 1";
}

TEST_F(EndToEnd, Kill9MidDeliveryEveryAcknowledgedEventIsDeliveredAfterRestart) {
  WriteConfig({Cpp("cpp", {{"RECORDER_DELAY_MS", "5"}})});
  std::set<std::string> acknowledged;
  for (int round = 0; round < 2; ++round) {
    PimgateProcess pimgate(config_, dir_.File("ready.json"));
    const uint16_t port = pimgate.WaitReady();
    ASSERT_NE(port, 0);
    HttpClient client(port);
    for (int r = 0; r < 20; ++r) {
      std::vector<Sent> batch;
      std::vector<int> versions;
      for (int e = 0; e < 10; ++e) {
        batch.push_back(
            {NewUuid(), "product.updated", absl::StrCat("r", round, "-", e), "legacy", "julia"});
        versions.push_back(r + 1);
      }
      HttpResponse res = PostLegacy(client, batch, versions);
      ASSERT_EQ(res.status, 200) << res.body;
      for (const Sent& s : batch) acknowledged.insert(s.id);
    }
    pimgate.Kill();  // mid-delivery: the plugin sleeps 5 ms per event
  }
  PimgateProcess pimgate(config_, dir_.File("ready.json"));
  ASSERT_NE(pimgate.WaitReady(), 0);
  ASSERT_TRUE(WaitRecords("cpp", [&](const auto& records) {
    std::set<std::string> ids = Ids(records);
    return std::includes(ids.begin(), ids.end(), acknowledged.begin(), acknowledged.end());
  })) << "some acknowledged events were never delivered";
}

TEST_F(EndToEnd, PluginThatNeverAcksDoesNotBlockAnother) {
  // The stuck recorder writes each delivery down as it takes it, then never answers it.
  WriteConfig({Node("stuck", {{"RECORDER_HANG", "1"}}), Cpp("healthy", {})});
  PimgateProcess pimgate(config_, dir_.File("ready.json"));
  const uint16_t port = pimgate.WaitReady();
  ASSERT_NE(port, 0);
  HttpClient client(port);
  std::set<std::string> want;
  auto post = [&](int r) {
    std::vector<Sent> batch;
    for (int e = 0; e < 10; ++e) {
      batch.push_back({NewUuid(), "product.updated", absl::StrCat("r", e), "legacy", "julia"});
      want.insert(batch.back().id);
    }
    ASSERT_EQ(PostLegacy(client, batch, std::vector<int>(10, r + 1)).status, 200);
  };
  post(0);
  // Without this the check below proves nothing: a stuck plugin that never started, or never
  // got an event, blocks nobody either.
  ASSERT_TRUE(WaitRecords("stuck", [](const auto& records) { return !records.empty(); }))
      << "the stuck plugin never received an event";
  // It now holds deliveries it will never answer. Everything after is sent while it hangs, and
  // the other plugin still receives every event.
  for (int r = 1; r < 10; ++r) post(r);
  ASSERT_TRUE(WaitRecords("healthy", [&](const auto& records) { return Ids(records) == want; }));
  for (const Record& r : ReadRecords(Out("stuck"))) EXPECT_EQ(want.count(r.id), 1u) << r.id;
  // Shutdown stays prompt: the stuck plugin is SIGKILLed after its stop_timeout.
  EXPECT_EQ(pimgate.Terminate(), 0);
}

}  // namespace
}  // namespace pimgate
