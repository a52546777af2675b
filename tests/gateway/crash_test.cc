// kill -9 durability: a real pimgate process is SIGKILLed while requests are in flight; every
// event of every request it answered 200 must be in the log when it is reopened. The last test
// does the same to one of three pimgate nodes sharing a JetStream cluster behind haproxy, and to
// one of the cluster's servers.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "core/dispatch/dispatcher.h"
#include "pimgate/v1/admin.pb.h"
#include "tests/testing/cli.h"
#include "tests/testing/nats_cluster.h"
#include "tests/testing/test_env.h"

namespace pimgate {
namespace {

using testing::HttpClient;
using testing::HttpResponse;
using testing::PimgateProcess;
using testing::StoreAt;
using testing::TempDir;

constexpr char kSecret[] = "crash-test-secret";
constexpr char kPlatformSecret[] = "crash-test-platform-secret";

std::string WriteConfig(const TempDir& dir) {
  testing::CertFiles cert = testing::MakeSelfSignedCert(dir.path());
  std::ostringstream yaml;
  yaml << "gateway:\n"
       << "  listen: 127.0.0.1:0\n"
       << "  threads: 2\n"
       << "  tls:\n"
       << "    cert_file: " << cert.cert_file << "\n"
       << "    key_file: " << cert.key_file << "\n"
       << "store:\n"
       << "  path: " << dir.File("store") << "\n"
       << "  sync: true\n"
       << "log:\n"
       << "  level: warn\n"
       << "sources:\n"
       << "  - name: pim\n"
       << "    kind: events_api\n"
       << "    path: /hooks/pim\n"
       << "    secret: ${PIMGATE_CRASH_SECRET}\n";
  std::string path = dir.File("pimgate.yaml");
  std::ofstream(path) << yaml.str();
  return path;
}

TEST(CrashTest, EveryEventAnswered200SurvivesKill9) {
  TempDir dir;
  const std::string config = WriteConfig(dir);
  std::set<std::string> acknowledged;  // event ids of 200-answered requests
  std::mutex mu;
  constexpr int kRounds = 3;
  constexpr int kClients = 4;
  constexpr int kAcksBeforeKill = 60;  // requests answered 200 per round before the kill

  for (int round = 0; round < kRounds; ++round) {
    PimgateProcess process(config, dir.File("ready.json"), {{"PIMGATE_CRASH_SECRET", kSecret}});
    const uint16_t port = process.WaitReady();
    ASSERT_NE(port, 0) << "pimgate did not start";
    std::atomic<int> acks{0};
    std::atomic<bool> killed{false};
    std::vector<std::thread> clients;
    for (int c = 0; c < kClients; ++c) {
      clients.emplace_back([&] {
        HttpClient client(port, /*tls=*/true);
        while (!killed.load()) {
          std::vector<std::string> events, ids;
          for (int i = 0; i < 10; ++i) {
            ids.push_back(testing::NewUuid());
            events.push_back(
                testing::LegacyProductEvent("product.updated", ids.back(), testing::NewUuid()));
          }
          const std::string body = testing::LegacyBatch(events);
          HttpResponse res =
              client.Send("POST", "/hooks/pim", body, testing::LegacyHeaders(kSecret, body));
          if (res.status == 200) {
            {
              std::lock_guard lock(mu);
              acknowledged.insert(ids.begin(), ids.end());
            }
            acks.fetch_add(1);
          } else if (res.status != 0) {
            ADD_FAILURE() << "unexpected answer " << res.status << ": " << res.body;
            return;
          } else {
            return;  // connection died with the process
          }
        }
      });
    }
    while (acks.load() < kAcksBeforeKill) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    // SIGKILL while the other clients still have requests in flight.
    process.Kill();
    killed = true;
    for (std::thread& t : clients) t.join();
  }

  auto log = EventLog::Open(StoreAt(dir.File("store")));
  ASSERT_TRUE(log.ok()) << log.status();
  auto events = (*log)->ReadEvents(1, 10'000'000);
  ASSERT_TRUE(events.ok()) << events.status();
  std::set<std::string> stored;
  uint64_t previous = 0;
  for (const v1::Event& event : *events) {
    EXPECT_GT(event.sequence(), previous);
    previous = event.sequence();
    stored.insert(event.id());
  }
  std::size_t missing = 0;
  for (const std::string& id : acknowledged) missing += stored.count(id) == 0;
  EXPECT_EQ(missing, 0u) << "of " << acknowledged.size() << " acknowledged events";
  EXPECT_GE(acknowledged.size(), static_cast<std::size_t>(kRounds * kAcksBeforeKill * 10));
  // Requests are atomic: a stored request has all of its 10 events.
  EXPECT_EQ(stored.size() % 10, 0u);
}

// Both producers' sources and the C++ recorder plugin, which appends {"id":...} lines to `out`
// before it acknowledges each event.
std::string WriteMixedConfig(const TempDir& dir, const std::string& out) {
  testing::CertFiles cert = testing::MakeSelfSignedCert(dir.path());
  std::ostringstream yaml;
  yaml << "gateway:\n  listen: 127.0.0.1:0\n  threads: 2\n  tls:\n"
       << "    cert_file: " << cert.cert_file << "\n    key_file: " << cert.key_file << "\n"
       << "store:\n  path: " << dir.File("store") << "\n  sync: true\n"
       << "log:\n  level: warn\n"
       << "admin:\n  enabled: false\n"
       << "metrics:\n  enabled: false\n"
       << "sources:\n"
       << "  - {name: legacy, kind: events_api, path: /hooks/legacy, secret: " << kSecret << "}\n"
       << "  - {name: platform, kind: event_platform, path: /hooks/platform, secret: "
       << kPlatformSecret << "}\n"
       << "plugins:\n"
       << "  - name: recorder\n"
       << "    command: [\"" << PIMGATE_E2E_RECORDER << "\"]\n"
       << "    env: {RECORDER_OUT: \"" << out << "\"}\n"
       << "    ack_timeout: 5s\n    start_timeout: 20s\n    stop_timeout: 3s\n"
       << "    restart: {initial_backoff: 100ms, max_backoff: 1s}\n";
  std::string path = dir.File("mixed.yaml");
  std::ofstream(path) << yaml.str();
  return path;
}

// Event ids in the recorder's output, with how often each was delivered.
std::map<std::string, int> Delivered(const std::string& path) {
  std::map<std::string, int> delivered;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line.back() != '}') continue;  // a line being written when killed
    const std::size_t key = line.find("\"id\":\"");
    if (key == std::string::npos) continue;
    const std::size_t start = key + 6;
    ++delivered[line.substr(start, line.find('"', start) - start)];
  }
  return delivered;
}

// Repeated kill -9 at random moments while legacy and Event Platform clients send and the
// plugin is being delivered to. Every event answered 200 must be in the log and reach the
// plugin at least once after the last restart.
TEST(CrashTest, RandomKillsUnderMixedLoadLoseNoAcknowledgedEvent) {
  TempDir dir;
  const std::string out = dir.File("delivered.jsonl");
  const std::string config = WriteMixedConfig(dir, out);
  const unsigned seed = std::random_device{}();
  std::mt19937 rng(seed);
  SCOPED_TRACE(::testing::Message() << "kill schedule seed " << seed);
  std::set<std::string> acknowledged;
  std::mutex mu;
  constexpr int kRounds = 5;
  int answered_before_kill = 0;

  for (int round = 0; round < kRounds; ++round) {
    PimgateProcess process(config, dir.File("ready.json"));
    const uint16_t port = process.WaitReady();
    ASSERT_NE(port, 0) << "pimgate did not start in round " << round;
    std::atomic<bool> killed{false};
    std::atomic<int> answered{0};
    std::vector<std::thread> clients;
    for (int c = 0; c < 3; ++c) {
      clients.emplace_back([&, c] {
        HttpClient client(port, /*tls=*/true);
        while (!killed.load()) {
          std::vector<std::string> ids;
          HttpResponse res;
          if (c < 2) {  // legacy: 10 events per request
            std::vector<std::string> events;
            for (int i = 0; i < 10; ++i) {
              ids.push_back(testing::NewUuid());
              events.push_back(
                  testing::LegacyProductEvent("product.updated", ids.back(), testing::NewUuid()));
            }
            const std::string body = testing::LegacyBatch(events);
            res = client.Send("POST", "/hooks/legacy", body, testing::LegacyHeaders(kSecret, body));
          } else {  // Event Platform: one event per request
            ids.push_back(testing::NewUuid());
            const std::string body = testing::CloudEvent("com.akeneo.pim.v1.product.updated",
                                                         ids.back(), testing::NewUuid());
            res = client.Send("POST", "/hooks/platform", body,
                              testing::EventPlatformHeaders(kPlatformSecret, body));
          }
          if (res.status == 200) {
            std::lock_guard lock(mu);
            acknowledged.insert(ids.begin(), ids.end());
            answered.fetch_add(1);
          } else if (res.status != 0) {
            ADD_FAILURE() << "unexpected answer " << res.status << ": " << res.body;
            return;
          } else if (!killed.load()) {
            std::this_thread::sleep_for(std::chrono::milliseconds(5));  // reconnect and go on
          }
        }
      });
    }
    // A random point: during start-up delivery, mid-load, or between group commits.
    std::this_thread::sleep_for(
        std::chrono::milliseconds(std::uniform_int_distribution<int>(50, 1200)(rng)));
    // The positive control below needs one answer before a kill: on a slow machine (a sanitizer
    // build under load) every random moment may come before the first answer, so the last round
    // waits for one if none came yet (60 s: a hang guard).
    if (round == kRounds - 1 && answered_before_kill == 0) {
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
      while (answered.load() == 0 && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    }
    process.Kill();
    killed = true;
    for (std::thread& t : clients) t.join();
    answered_before_kill += answered.load();
  }
  ASSERT_GT(answered_before_kill, 0);

  // One more start: the dispatcher resumes from its cursors and delivers what is missing.
  PimgateProcess process(config, dir.File("ready.json"));
  ASSERT_NE(process.WaitReady(), 0);
  std::size_t undelivered = acknowledged.size();
  for (int i = 0; i < 1200 && undelivered > 0; ++i) {
    const std::map<std::string, int> delivered = Delivered(out);
    undelivered = 0;
    for (const std::string& id : acknowledged) undelivered += delivered.count(id) == 0;
    if (undelivered > 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(process.Terminate(), 0);
  EXPECT_EQ(undelivered, 0u) << "of " << acknowledged.size() << " acknowledged events";

  auto log = EventLog::Open(StoreAt(dir.File("store")));
  ASSERT_TRUE(log.ok()) << log.status();
  auto events = (*log)->ReadEvents(1, 10'000'000);
  ASSERT_TRUE(events.ok()) << events.status();
  std::set<std::string> stored;
  for (const v1::Event& event : *events) stored.insert(event.id());
  std::size_t missing = 0;
  for (const std::string& id : acknowledged) missing += stored.count(id) == 0;
  EXPECT_EQ(missing, 0u) << "of " << acknowledged.size() << " acknowledged events";
  // At-least-once: redeliveries after a kill are expected and only counted.
  int redelivered = 0;
  for (const auto& [id, n] : Delivered(out)) redelivered += n - 1;
  ::testing::Test::RecordProperty("acknowledged", static_cast<int>(acknowledged.size()));
  ::testing::Test::RecordProperty("redelivered", redelivered);
}

// ---- Three pimgate nodes on one JetStream cluster, behind haproxy ------------------------------

std::string ReadText(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// A loopback port nothing listens on now. Another process may take it before haproxy binds it:
// Haproxy starts again with a new one then.
uint16_t FreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  uint16_t port = 0;
  if (fd >= 0 && ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    socklen_t len = sizeof(addr);
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
      port = ntohs(addr.sin_port);
    }
  }
  if (fd >= 0) ::close(fd);
  return port;
}

bool Accepts(uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  ::close(fd);
  return ok;
}

// Waits (hang guard: `seconds`) until `condition` holds; returns whether it did.
template <typename Condition>
bool WaitFor(Condition condition, int seconds = 300) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  while (!condition()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

// A real haproxy (Debian's) in front of pimgate nodes: round-robin over every node whose
// /readyz (on its metrics port) answers 200, one request per server connection. Its runtime
// API (a unix socket) moves a restarted node to its new ports.
class Haproxy {
 public:
  struct Server {
    std::string name;
    uint16_t port = 0;        // the node's gateway
    uint16_t check_port = 0;  // the node's metrics listener: GET /readyz
  };

  Haproxy(const TempDir& dir, const std::vector<Server>& servers)
      : socket_(dir.File("haproxy.sock")), log_(dir.File("haproxy.log")) {
    for (int attempt = 1; attempt <= 3 && port_ == 0; ++attempt) {
      const uint16_t port = FreePort();
      std::ostringstream cfg;
      cfg << "global\n"
          << "  stats socket " << socket_ << " mode 600 level admin\n"
          << "  maxconn 2000\n"
          << "defaults\n"
          << "  mode http\n"
          << "  timeout connect 2s\n"
          << "  timeout client 120s\n"
          << "  timeout server 120s\n"
          << "  timeout queue 30s\n"
          << "  retries 3\n"
          << "  option redispatch 1\n"
          << "  option http-server-close\n"
          << "frontend webhooks\n"
          << "  bind 127.0.0.1:" << port << "\n"
          << "  default_backend pimgate\n"
          << "backend pimgate\n"
          << "  balance roundrobin\n"
          << "  option httpchk GET /readyz\n"
          << "  http-check expect status 200\n"
          << "  default-server inter 200ms fall 2 rise 1\n";
      for (const Server& server : servers) {
        cfg << "  server " << server.name << " 127.0.0.1:" << server.port << " check port "
            << server.check_port << "\n";
      }
      const std::string path = dir.File("haproxy.cfg");
      std::ofstream(path) << cfg.str();
      const pid_t parent = ::getpid();
      pid_ = ::fork();
      if (pid_ == 0) {
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (::getppid() != parent) ::_exit(1);
        const int fd = ::open(log_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
          ::dup2(fd, STDOUT_FILENO);
          ::dup2(fd, STDERR_FILENO);
        }
        ::execlp("haproxy", "haproxy", "-db", "-f", path.c_str(), static_cast<char*>(nullptr));
        ::_exit(127);
      }
      const bool up = WaitFor(
          [&] {
            int status = 0;
            if (::waitpid(pid_, &status, WNOHANG) == pid_) {
              pid_ = -1;
              return true;
            }
            return Accepts(port) && std::filesystem::exists(socket_);
          },
          60);
      if (up && pid_ > 0) port_ = port;
    }
  }
  ~Haproxy() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
  }

  uint16_t port() const { return port_; }  // 0: haproxy did not start (see Log())
  std::string Log() const { return ReadText(log_); }

  // One runtime API command; its answer.
  std::string Command(const std::string& command) const {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", socket_.c_str());
    std::string answer;
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
      const std::string line = command + "\n";
      if (::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size())) {
        char buf[4096];
        ssize_t n = 0;
        while ((n = ::read(fd, buf, sizeof(buf))) > 0) answer.append(buf, n);
      }
    }
    ::close(fd);
    return answer;
  }

  // Points server `name` at a restarted node's new ports.
  std::string Move(const Server& server) const {
    return Command(absl::StrCat("set server pimgate/", server.name, " addr 127.0.0.1 port ",
                                server.port)) +
           Command(
               absl::StrCat("set server pimgate/", server.name, " check-port ", server.check_port));
  }

  // Whether the health check has server `name` up now.
  bool Up(const std::string& name) const {
    for (absl::string_view line : absl::StrSplit(Command("show stat"), '\n')) {
      std::vector<absl::string_view> fields = absl::StrSplit(line, ',');
      if (fields.size() > 17 && fields[0] == "pimgate" && fields[1] == name) {
        return absl::StartsWith(fields[17], "UP");
      }
    }
    return false;
  }

 private:
  const std::string socket_;
  const std::string log_;
  pid_t pid_ = -1;
  uint16_t port_ = 0;
};

constexpr char kClusterStream[] = "PIMGATE_CLUSTER";

// With plugins: each node runs the C++ recorder plugin, writing to its own file, with cluster
// dispatch's leases and an admin API (token file) for `pimgatectl owners`.
struct ClusterPlugins {
  int partitions = 6;
  std::string lease_ttl = "3s";
  std::string token_file;
};

// One pimgate node of the cluster tests: plain HTTP behind the balancer, its own replica
// directory, metrics for /readyz; without `plugins` ingest only.
class ClusterNode {
 public:
  ClusterNode(const TempDir& dir, int index, const JetStreamConfig& js,
              const std::optional<ClusterPlugins>& plugins = std::nullopt) {
    const std::string name = absl::StrCat("node", index + 1);
    name_ = absl::StrCat("n", index + 1);
    ready_file_ = dir.File(name + ".ready.json");
    log_file_ = dir.File(name + ".log");
    records_ = dir.File(name + ".delivered.jsonl");
    std::ostringstream yaml;
    yaml << "gateway:\n  listen: 127.0.0.1:0\n  threads: 2\n"
         << "store:\n  backend: jetstream\n  path: " << dir.File(name + "-replica") << "\n"
         << "  jetstream:\n    servers: [";
    for (std::size_t i = 0; i < js.servers.size(); ++i) {
      yaml << (i > 0 ? ", " : "") << "\"" << js.servers[i] << "\"";
    }
    yaml << "]\n    replicas: " << js.replicas << "\n    stream: " << js.stream
         << "\n    subject: " << js.subject << "\n    cursor_bucket: " << js.cursor_bucket
         << "\n    dead_letter_bucket: " << js.dead_letter_bucket << "\n    write_timeout: 20s\n";
    if (plugins.has_value()) {
      yaml << "    cluster: {node_id: " << name_ << ", partitions: " << plugins->partitions
           << ", lease_ttl: " << plugins->lease_ttl << "}\n"
           << "admin:\n  listen: 127.0.0.1:0\n  token: file:" << plugins->token_file << "\n"
           << "plugins:\n"
           << "  - name: recorder\n"
           << "    command: [\"" << PIMGATE_E2E_RECORDER << "\"]\n"
           << "    env: {RECORDER_OUT: \"" << records_ << "\"}\n"
           << "    ack_timeout: 5s\n    start_timeout: 20s\n    stop_timeout: 3s\n"
           << "    restart: {initial_backoff: 100ms, max_backoff: 1s}\n";
    } else {
      yaml << "admin:\n  enabled: false\n";
    }
    yaml << "log:\n  level: warn\n"
         << "metrics:\n  listen: 127.0.0.1:0\n"
         << "sources:\n"
         << "  - {name: legacy, kind: events_api, path: /hooks/legacy, secret: " << kSecret << "}\n"
         << "  - {name: platform, kind: event_platform, path: /hooks/platform, secret: "
         << kPlatformSecret << "}\n";
    config_ = dir.File(name + ".yaml");
    std::ofstream(config_) << yaml.str();
  }

  // Starts the process and waits for its ready file; false when it exited instead.
  bool Start() {
    process_ = std::make_unique<PimgateProcess>(
        config_, ready_file_, std::vector<std::pair<std::string, std::string>>{}, log_file_);
    server_.name = name_;
    server_.port = process_->WaitReady();
    const std::string ready = ReadText(ready_file_);
    const auto port_of = [&](const std::string& key) {
      const std::size_t at = ready.find("\"" + key + "\":");
      return at == std::string::npos
                 ? uint16_t{0}
                 : static_cast<uint16_t>(std::stoi(ready.substr(at + key.size() + 3)));
    };
    server_.check_port = port_of("metrics_port");
    admin_port_ = port_of("admin_port");
    return server_.port != 0 && server_.check_port != 0;
  }
  void Kill() { process_->Kill(); }
  int Terminate() { return process_->Terminate(); }
  // "" while the process runs; how it exited when it did on its own (not killed by the test).
  std::string Exited() { return process_ != nullptr ? process_->Exited() : "never started"; }
  const Haproxy::Server& server() const { return server_; }
  const std::string& name() const { return name_; }
  uint16_t port() const { return server_.port; }
  uint16_t admin_port() const { return admin_port_; }
  // The recorder plugin's output (with plugins).
  const std::string& records() const { return records_; }
  std::string Log() const { return ReadText(log_file_); }

 private:
  std::string name_, config_, ready_file_, log_file_, records_;
  std::unique_ptr<PimgateProcess> process_;
  Haproxy::Server server_;
  uint16_t admin_port_ = 0;
};

// Three pimgate nodes on one JetStream cluster behind haproxy, all up (haproxy's checks say
// so). `error` says what did not start.
struct ThreeNodes {
  std::vector<std::unique_ptr<ClusterNode>> nodes;
  std::unique_ptr<Haproxy> haproxy;
  std::string error;

  ThreeNodes(const TempDir& dir, const JetStreamConfig& js,
             const std::optional<ClusterPlugins>& plugins = std::nullopt) {
    for (int i = 0; i < 3; ++i) {
      nodes.push_back(std::make_unique<ClusterNode>(dir, i, js, plugins));
      if (!nodes.back()->Start()) {
        error = absl::StrCat("node ", i + 1, " did not start:\n", nodes.back()->Log());
        return;
      }
    }
    std::vector<Haproxy::Server> servers;
    for (const auto& node : nodes) servers.push_back(node->server());
    haproxy = std::make_unique<Haproxy>(dir, servers);
    if (haproxy->port() == 0) {
      error = "haproxy did not start:\n" + haproxy->Log();
      return;
    }
    if (!WaitFor([&] { return haproxy->Up("n1") && haproxy->Up("n2") && haproxy->Up("n3"); })) {
      error = "haproxy does not see the nodes up:\n" + haproxy->Command("show stat");
    }
  }
  bool ok() const { return error.empty(); }

  // Every node's log.
  std::string Logs() const {
    std::string text;
    for (std::size_t i = 0; i < nodes.size(); ++i) {
      absl::StrAppend(&text, "---- node ", i + 1, "\n", nodes[i]->Log());
    }
    return text;
  }

  // The nodes that exited on their own (a crash, a sanitizer's report), with how: "" when none.
  std::string Exited() const {
    std::string text;
    for (std::size_t i = 0; i < nodes.size(); ++i) {
      const std::string how = nodes[i]->Exited();
      if (!how.empty()) absl::StrAppend(&text, "node ", i + 1, " exited (", how, ") ");
    }
    return text;
  }

  // Kills node `i` (SIGKILL); Restart(i) starts it again and points haproxy at it, waiting for
  // haproxy's check to see it up. Restart's answer: what went wrong ("" when nothing).
  void Kill(int i) { nodes[i]->Kill(); }
  std::string Restart(int i) {
    if (!nodes[i]->Start()) return "node did not restart:\n" + nodes[i]->Log();
    const std::string moved = haproxy->Move(nodes[i]->server());
    if (!WaitFor([&] { return haproxy->Up(nodes[i]->name()); })) {
      return moved + "\n" + haproxy->Command("show stat");
    }
    return "";
  }
};

// The stream as a new node reads it.
absl::StatusOr<std::vector<v1::Event>> ReadStream(const JetStreamConfig& js) {
  TempDir reader_dir;
  StoreConfig store;
  store.backend = StoreBackend::kJetStream;
  store.path = reader_dir.File("replica");
  store.jetstream = js;
  auto log = EventLog::Open(store);
  if (!log.ok()) return log.status();
  return (*log)->ReadEvents(1, 10'000'000);
}

// What the senders saw.
struct Tally {
  std::mutex mu;
  std::map<int, int> answers;  // HTTP status (0: connection error) -> count
  std::set<std::pair<std::string, std::string>> acknowledged;  // (source, event id) of 200s
  uint64_t duplicates_answered = 0;                            // "duplicates" of the 200 bodies
  std::vector<std::string> unexpected;

  // Records one answer to a request with these event ids; true on 200.
  bool Record(const HttpResponse& res, const std::string& source,
              const std::vector<std::string>& ids) {
    std::lock_guard lock(mu);
    ++answers[res.status];
    if (res.status == 200) {
      for (const std::string& id : ids) acknowledged.emplace(source, id);
      const std::size_t at = res.body.find("\"duplicates\":");
      if (at != std::string::npos) duplicates_answered += std::stoull(res.body.substr(at + 13));
      return true;
    }
    // Retryable: a connection error, 429, or a 5xx (haproxy's 502/503/504, pimgate's 503).
    if (res.status != 0 && res.status != 429 && res.status < 500 && unexpected.size() < 10) {
      unexpected.push_back(absl::StrCat(res.status, ": ", res.body));
    }
    return false;
  }
};

// One request's body with its route: a legacy batch or one CloudEvent.
struct Webhook {
  std::string source;  // "legacy" or "platform"
  std::vector<std::string> ids;
  std::string body;
};

Webhook LegacyWebhook(const std::vector<std::pair<std::string, std::string>>& id_and_updated,
                      const std::string& uuid = "") {
  Webhook hook{"legacy", {}, ""};
  std::vector<std::string> events;
  for (const auto& [id, updated] : id_and_updated) {
    hook.ids.push_back(id);
    events.push_back(testing::LegacyProductEvent(
        "product.updated", id, uuid.empty() ? testing::NewUuid() : uuid, updated));
  }
  hook.body = testing::LegacyBatch(events);
  return hook;
}

Webhook PlatformWebhook(const std::string& id, const std::string& uuid,
                        const std::string& time = "2026-11-20T10:15:00Z") {
  return Webhook{
      "platform", {id}, testing::CloudEvent("com.akeneo.pim.v1.product.updated", id, uuid, time)};
}

HttpResponse Send(HttpClient& client, const Webhook& hook) {
  if (hook.source == "legacy") {
    return client.Send("POST", "/hooks/legacy", hook.body,
                       testing::LegacyHeaders(kSecret, hook.body));
  }
  return client.Send("POST", "/hooks/platform", hook.body,
                     testing::EventPlatformHeaders(kPlatformSecret, hook.body));
}

// The version that orders an event against others of its resource, as the log defines it:
// version_at, else occurred_at (microseconds); none: not ordered.
std::optional<int64_t> OrderingVersion(const v1::Event& event) {
  const auto micros = [](const google::protobuf::Timestamp& ts) {
    return ts.seconds() * 1'000'000 + ts.nanos() / 1'000;
  };
  if (event.has_version_at()) return micros(event.version_at());
  if (event.has_occurred_at()) return micros(event.occurred_at());
  return std::nullopt;
}

// Three pimgate nodes share a three-server JetStream cluster (R3) behind haproxy. Mixed legacy
// (10 events per request) and Event Platform load goes through haproxy, with bodies sent again
// (to whichever node haproxy picks next); pairs of requests go straight to two different nodes
// at once: the same event ids, or two versions of one resource. Mid-load one pimgate node and the
// stream's leader are killed with SIGKILL, then restarted. Every event answered 200 must be in
// the stream exactly once, no event twice, and every stale mark must be what the stream's order
// implies (an event is stale exactly when an event of its resource before it has a newer
// version: never the newer of two racing events).
TEST(CrashTest, ThreeNodesOnJetStreamBehindHaproxyKeepEveryAcknowledgedEventOnce) {
  testing::NatsCluster cluster({.servers = 3});
  ASSERT_TRUE(cluster.started());
  const JetStreamConfig js = cluster.Config(kClusterStream);
  TempDir dir;
  ThreeNodes three(dir, js);
  ASSERT_TRUE(three.ok()) << three.error;
  auto& nodes = three.nodes;
  Haproxy& haproxy = *three.haproxy;
  auto logs = [&] { return three.Logs(); };

  Tally balanced;  // requests through haproxy
  Tally direct;    // racing pairs, straight to nodes 1 and 3
  std::atomic<bool> stop{false};
  std::atomic<int> balanced_acks{0};
  std::atomic<int> resent{0};
  // Racing pairs: both sides of a pair are sent at once, one to node 1 and one to node 3 (the
  // nodes that stay up), each again until it is answered 200.
  struct Pair {
    Webhook side[2];
  };
  std::mutex pairs_mu;
  std::vector<Pair> pairs;  // pairs[k] is raced in round k
  std::atomic<int> rounds{0};
  std::mt19937 rng(std::random_device{}());
  auto make_pair = [&](int k) {
    Pair pair;
    const std::string uuid = testing::NewUuid();
    const bool newer_first = rng() % 2 == 0;
    const std::string older = "2026-11-20T10:15:01+00:00", newer = "2026-11-20T10:15:02+00:00";
    switch (k % 3) {
      case 0: {  // the same event id, to two nodes at once
        pair.side[0] = LegacyWebhook({{testing::NewUuid(), older}}, uuid);
        pair.side[1] = pair.side[0];
        break;
      }
      case 1:  // two versions of one product (legacy: data.resource.updated)
        pair.side[0] = LegacyWebhook({{testing::NewUuid(), newer_first ? newer : older}}, uuid);
        pair.side[1] = LegacyWebhook({{testing::NewUuid(), newer_first ? older : newer}}, uuid);
        break;
      default:  // two versions of one product (Event Platform: time)
        pair.side[0] =
            PlatformWebhook(testing::NewUuid(), uuid,
                            newer_first ? "2026-11-20T10:15:02Z" : "2026-11-20T10:15:01Z");
        pair.side[1] =
            PlatformWebhook(testing::NewUuid(), uuid,
                            newer_first ? "2026-11-20T10:15:01Z" : "2026-11-20T10:15:02Z");
        break;
    }
    return pair;
  };
  bool racing_done = false;
  {
    std::lock_guard lock(pairs_mu);
    pairs.push_back(make_pair(0));
  }
  // Runs once per round, after both sides were answered 200: decides whether there is another.
  auto next_round = [&]() noexcept {
    std::lock_guard lock(pairs_mu);
    racing_done = stop.load();
    const int k = rounds.fetch_add(1) + 1;
    if (!racing_done) pairs.push_back(make_pair(k));
  };
  std::barrier round_end(2, next_round);
  std::atomic<bool> racer_gave_up{false};
  std::vector<std::thread> senders;
  // Every sender stops and is joined however the test ends (a failed ASSERT returns early).
  struct JoinSenders {
    std::atomic<bool>& stop;
    std::vector<std::thread>& senders;
    ~JoinSenders() {
      stop = true;
      for (std::thread& t : senders) {
        if (t.joinable()) t.join();
      }
    }
  } join_senders{stop, senders};
  for (int c = 0; c < 4; ++c) {
    senders.emplace_back([&, c] {
      HttpClient client(haproxy.port(), /*tls=*/false);
      std::optional<Webhook> previous;
      int n = 0;
      while (!stop.load()) {
        Webhook hook;
        if (previous.has_value() && ++n % 5 == 0) {
          hook = *previous;  // the same event ids again: another node, by round robin
          resent.fetch_add(1);
        } else if (c < 2) {
          std::vector<std::pair<std::string, std::string>> events;
          for (int i = 0; i < 10; ++i) events.emplace_back(testing::NewUuid(), "");
          hook = LegacyWebhook(events);
        } else {
          hook = PlatformWebhook(testing::NewUuid(), testing::NewUuid());
        }
        // A request answered with an error is sent again until it is answered 200, as the
        // Event Platform retries (the ids may be stored already: then they are duplicates).
        for (;;) {
          HttpResponse res = Send(client, hook);
          if (balanced.Record(res, hook.source, hook.ids)) {
            balanced_acks.fetch_add(1);
            break;
          }
          if (stop.load()) break;
          if (res.status == 0) client.Close();
          std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
        previous = hook;
      }
    });
  }

  for (int side = 0; side < 2; ++side) {
    senders.emplace_back([&, side] {
      HttpClient client(nodes[side == 0 ? 0 : 2]->port(), /*tls=*/false);
      for (int k = 0;; ++k) {
        Webhook hook;
        {
          std::lock_guard lock(pairs_mu);
          if (racing_done) return;
          hook = pairs[k].side[side];
        }
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(300);
        while (!direct.Record(Send(client, hook), hook.source, hook.ids)) {
          if (std::chrono::steady_clock::now() >= deadline) {  // hang guard
            racer_gave_up = true;
            break;
          }
          client.Close();
          std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
        round_end.arrive_and_wait();
      }
    });
  }

  auto wait_for_more = [&](int requests, int pair_rounds) {
    const int target = balanced_acks.load() + requests;
    const int target_rounds = rounds.load() + pair_rounds;
    return WaitFor(
        [&] { return balanced_acks.load() >= target && rounds.load() >= target_rounds; });
  };
  ASSERT_TRUE(wait_for_more(100, 20)) << "no load went through before the kills\n" << logs();

  // kill -9: pimgate node 2 and the server that leads the stream (an election follows).
  const int leader = cluster.StreamLeader(kClusterStream);
  const int victim = leader >= 0 ? leader : 0;
  nodes[1]->Kill();
  cluster.Kill(victim);
  const int acks_at_kill = balanced_acks.load();
  const int rounds_at_kill = rounds.load();
  ASSERT_TRUE(wait_for_more(100, 20)) << "the cluster stopped taking load after the kills\n"
                                      << logs();
  const int acks_while_down = balanced_acks.load() - acks_at_kill;
  const int rounds_while_down = rounds.load() - rounds_at_kill;

  cluster.Restart(victim);
  ASSERT_TRUE(cluster.WaitForJetStream(victim));
  const std::string restarted = three.Restart(1);
  ASSERT_EQ(restarted, "");
  // The restarted node itself answers 200 again.
  {
    HttpClient client(nodes[1]->port(), /*tls=*/false);
    const Webhook hook = PlatformWebhook(testing::NewUuid(), testing::NewUuid());
    ASSERT_TRUE(WaitFor([&] {
      HttpResponse res = Send(client, hook);
      if (res.status == 0) client.Close();
      return direct.Record(res, hook.source, hook.ids);
    })) << nodes[1]->Log();
  }
  ASSERT_TRUE(wait_for_more(100, 20)) << "no load went through after the restarts\n" << logs();
  stop = true;
  for (std::thread& t : senders) t.join();
  EXPECT_FALSE(racer_gave_up) << "a racing request was refused for 300 s\n" << logs();
  for (auto& node : nodes) EXPECT_EQ(node->Terminate(), 0);

  auto events = ReadStream(js);
  ASSERT_TRUE(events.ok()) << events.status();

  std::map<std::pair<std::string, std::string>, int> stored;  // (source, id) -> copies
  std::map<std::string, int64_t> newest;  // resource -> newest version so far, in log order
  uint64_t expected_sequence = 0;
  int stale = 0, wrong_stale = 0, twice = 0;
  std::vector<std::string> examples;
  for (const v1::Event& event : *events) {
    EXPECT_EQ(event.sequence(), ++expected_sequence) << "a hole or a disorder in the log";
    expected_sequence = event.sequence();
    if (++stored[{event.source(), event.id()}] == 2) ++twice;
    bool should_be_stale = false;
    if (std::optional<int64_t> version = OrderingVersion(event);
        version.has_value() && !event.resource_id().empty()) {
      const std::string key =
          absl::StrCat(event.source(), "/", event.kind(), "/", event.resource_id());
      auto [it, inserted] = newest.try_emplace(key, *version);
      if (!inserted) {
        should_be_stale = *version < it->second;
        it->second = std::max(it->second, *version);
      }
    }
    stale += event.stale();
    if (event.stale() != should_be_stale) {
      ++wrong_stale;
      if (examples.size() < 5) {
        examples.push_back(absl::StrCat("event ", event.id(), " at ", event.sequence(),
                                        should_be_stale ? " not marked stale" : " marked stale"));
      }
    }
  }
  std::size_t missing = 0, acknowledged = 0;
  for (Tally* tally : {&balanced, &direct}) {
    acknowledged += tally->acknowledged.size();
    for (const auto& key : tally->acknowledged) missing += stored.count(key) == 0;
    EXPECT_TRUE(tally->unexpected.empty()) << tally->unexpected.front();
  }
  EXPECT_EQ(missing, 0u) << "events answered 200 that are not in the stream, of " << acknowledged;
  EXPECT_EQ(twice, 0) << "event ids stored more than once";
  EXPECT_EQ(wrong_stale, 0) << absl::StrJoin(examples, "; ");

  auto answers = [](Tally& tally) {
    std::string text;
    for (const auto& [status, count] : tally.answers) {
      absl::StrAppend(&text, text.empty() ? "" : ", ",
                      status == 0 ? std::string("connection error") : absl::StrCat(status), " x",
                      count);
    }
    return text;
  };
  std::cout << "cluster test: nats-server " << victim + 1
            << " (stream leader: " << (leader >= 0 ? "yes" : "unknown")
            << ") and pimgate node 2 killed with SIGKILL\n"
            << "  through haproxy: " << answers(balanced) << " (" << balanced_acks.load()
            << " requests answered 200, " << acks_while_down << " of them while both were down; "
            << resent.load() << " bodies sent again, " << balanced.duplicates_answered
            << " events answered as duplicates)\n"
            << "  racing pairs straight to nodes 1 and 3: " << rounds.load() << " rounds ("
            << rounds_while_down << " while down), " << answers(direct) << ", "
            << direct.duplicates_answered << " events answered as duplicates\n"
            << "  stream: " << events->size() << " events, " << stored.size() << " distinct ids, "
            << stale << " stale; " << acknowledged << " events answered 200, " << missing
            << " of them missing, " << twice << " stored twice, " << wrong_stale
            << " wrong stale marks\n";
  ::testing::Test::RecordProperty("acknowledged", static_cast<int>(acknowledged));
  ::testing::Test::RecordProperty("stored", static_cast<int>(events->size()));
}

// ---- Three nodes delivering to their plugins -------------------------------------------------

// One line of a recorder plugin's output.
struct Record {
  uint64_t sequence = 0;
  std::string id, source, kind, resource_id;
  int64_t at_us = 0;  // wall clock when the plugin received it
  int node = 0;       // whose plugin
};

// The recorder output at `path` (node `node`), complete lines only (the last one may be cut by
// a kill).
std::vector<Record> ReadRecords(const std::string& path, int node) {
  const auto field = [](const std::string& line, const std::string& key) {
    const std::string pattern = "\"" + key + "\":";
    const std::size_t at = line.find(pattern);
    if (at == std::string::npos) return std::string();
    std::size_t start = at + pattern.size();
    if (line[start] == '"') {
      ++start;
      return line.substr(start, line.find('"', start) - start);
    }
    return line.substr(start, line.find_first_of(",}", start) - start);
  };
  std::vector<Record> records;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line.back() != '}') continue;
    Record r;
    r.sequence = std::stoull(field(line, "sequence"));
    r.id = field(line, "id");
    r.source = field(line, "source");
    r.kind = field(line, "kind");
    r.resource_id = field(line, "resource_id");
    r.at_us = std::stoll(field(line, "at_us"));
    r.node = node;
    records.push_back(std::move(r));
  }
  return records;
}

int PartitionOfRecord(const Record& r, int partitions) {
  v1::Event header;
  header.set_sequence(r.sequence);
  header.set_source(r.source);
  header.set_kind(r.kind);
  header.set_resource_id(r.resource_id);
  return PartitionOf(header, partitions);
}

int64_t NowMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// The time of version `k` of a resource, as a legacy `updated` or a CloudEvent `time`.
std::string VersionTime(int k, bool cloud_event) {
  const int seconds = 10 * 3600 + k;
  return absl::StrFormat("2026-11-20T%02d:%02d:%02d%s", seconds / 3600, seconds / 60 % 60,
                         seconds % 60, cloud_event ? "Z" : "+00:00");
}

// The same three nodes, each running the same recorder plugin with cluster dispatch (6
// partitions, 3 s leases). Mixed load through haproxy: legacy batches and Event Platform events,
// several versions of each resource, each version sent once the one before it was answered 200.
// Mid-load pimgate node 2 (its plugin dies with it) and the stream's leader are killed with
// SIGKILL; node 2's partitions must be delivered by the other nodes before both are restarted.
// Then:
// - every event answered 200 is in the stream and in the union of the three plugins' records;
// - per-resource order: all records of the three nodes are merged by the time each plugin
//   received them (one machine, one clock; a partition's old holder stops sending before its
//   new holder starts, so for one resource this is the order of delivery). For each resource,
//   the delivered sequences, with every delivery of a sequence already delivered before dropped
//   (at-least-once: a takeover or a restart sends again what the cursor had not passed), must
//   be strictly increasing: no event is first delivered after a later event of its resource;
// - `pimgatectl owners` on every node shows each partition held by exactly one node, a live one.
// The takeover time (kill to the first delivery of node 2's partitions elsewhere) and the lease
// TTL are printed and checked against a bound derived below from the TTL and nats-server's
// election timeout.
TEST(CrashTest, ThreeNodesWithPluginsTakeOverAKilledNodesPartitionsInOrder) {
  testing::NatsCluster cluster({.servers = 3});
  ASSERT_TRUE(cluster.started());
  const JetStreamConfig js = cluster.Config(kClusterStream);
  TempDir dir;
  constexpr char kToken[] = "cluster-owners-token";
  ClusterPlugins plugins;
  plugins.token_file = dir.File("admin.token");
  std::ofstream(plugins.token_file) << kToken << "\n";
  constexpr int kLeaseTtlSeconds = 3;
  plugins.lease_ttl = absl::StrCat(kLeaseTtlSeconds, "s");
  const int kPartitions = plugins.partitions;
  // Hang guard for anything leases decide: many TTLs, plus a slow machine's start-up.
  const int lease_guard_seconds = 20 * kLeaseTtlSeconds + 120;
  // The takeover's bound, by design. Node 2's lease records expire at most lease_ttl after the
  // kill. The killed nats-server may lead the lease bucket's stream (or the event stream): no
  // lease is written (no event appended) until the two others elect a leader, nats-server 2.9's
  // election timeout being 4 to 9 s after the last heartbeat, once more after a split vote
  // (2 x 9 s). A free partition is taken within two rounds (lease_ttl / 4 each: seen free, then
  // taken whatever the share) and starts from its cursor at once: reading the buckets (direct
  // gets from any live replica) and the controls (the local replica) waits for no leader. The
  // sum of these, not their maximum (they overlap), plus time for a busy 2-core machine (a
  // round's calls, the plugin's first answers, a sender's next request).
  constexpr double kElectionTimeoutSeconds = 9;  // nats-server 2.9: 4-9 s
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  // A sanitizer build runs every pimgate node and plugin several times slower (10 s measured
  // once where a release build takes 3-5 s).
  constexpr double kBusyMachineSeconds = 30;
#else
  constexpr double kBusyMachineSeconds = 10;
#endif
  const double takeover_bound_seconds = kLeaseTtlSeconds + 2 * kElectionTimeoutSeconds +
                                        2 * kLeaseTtlSeconds / 4.0 + kBusyMachineSeconds;
  ThreeNodes three(dir, js, plugins);
  ASSERT_TRUE(three.ok()) << three.error;
  auto& nodes = three.nodes;

  // `pimgatectl owners --json` on node `i`.
  const auto owners = [&](int i) {
    testing::CommandResult result = testing::RunPimgatectl(
        PIMGATECTL_BINARY, nodes[i]->admin_port(), kToken, {"owners", "--json"}, dir.path());
    std::optional<v1::ListOwnersResponse> response;
    if (result.exit_code == 0) {
      response = testing::ParseJson<v1::ListOwnersResponse>(result.out);
    }
    return response;
  };
  // The holder of each partition of the recorder on node i's view; "" for nobody or released;
  // nullopt when a partition is listed twice or the call failed.
  const auto holders = [&](int i) {
    std::optional<std::vector<std::string>> by_partition;
    std::optional<v1::ListOwnersResponse> response = owners(i);
    if (!response.has_value()) return by_partition;
    std::vector<std::string> holder(kPartitions);
    std::vector<int> listed(kPartitions, 0);
    for (const v1::PartitionOwnerInfo& owner : response->owners()) {
      if (owner.plugin() != "recorder" || owner.partition() >= static_cast<uint32_t>(kPartitions))
        continue;
      ++listed[owner.partition()];
      holder[owner.partition()] = owner.node();
    }
    for (int n : listed) {
      if (n > 1) return by_partition;
    }
    by_partition = holder;
    return by_partition;
  };
  // Whether node i's view has every partition held by exactly one of the nodes in `live`, and
  // each of them holding at least one.
  const auto balanced_over = [&](int i, const std::set<std::string>& live) {
    const auto holder = holders(i);
    if (!holder.has_value()) return false;
    std::map<std::string, int> held;
    for (const std::string& node : *holder) {
      if (live.count(node) == 0) return false;
      ++held[node];
    }
    return held.size() == live.size();
  };
  const std::set<std::string> all = {"n1", "n2", "n3"};
  ASSERT_TRUE(WaitFor([&] { return balanced_over(0, all); }, lease_guard_seconds))
      << "the partitions were not spread over the three nodes\n"
      << three.Logs();

  // What was answered 200: (source, id) -> (resource, version).
  Tally balanced;
  std::atomic<bool> stop{false};
  std::atomic<int> acks{0};
  std::vector<std::thread> senders;
  struct JoinSenders {
    std::atomic<bool>& stop;
    std::vector<std::thread>& senders;
    ~JoinSenders() {
      stop = true;
      for (std::thread& t : senders) {
        if (t.joinable()) t.join();
      }
    }
  } join_senders{stop, senders};
  constexpr int kResourcesPerSender = 8;
  for (int c = 0; c < 4; ++c) {
    senders.emplace_back([&, c] {
      HttpClient client(three.haproxy->port(), /*tls=*/false);
      const bool legacy = c < 2;
      std::vector<std::string> resources;
      for (int r = 0; r < kResourcesPerSender; ++r) resources.push_back(testing::NewUuid());
      for (int version = 1; !stop.load(); ++version) {
        // Legacy: one version of each of this sender's resources per batch; Event Platform:
        // one event per request, resource after resource.
        std::vector<Webhook> hooks;
        if (legacy) {
          std::vector<std::string> events;
          Webhook hook{"legacy", {}, ""};
          for (const std::string& uuid : resources) {
            hook.ids.push_back(testing::NewUuid());
            events.push_back(testing::LegacyProductEvent("product.updated", hook.ids.back(), uuid,
                                                         VersionTime(version, false)));
          }
          hook.body = testing::LegacyBatch(events);
          hooks.push_back(std::move(hook));
        } else {
          for (const std::string& uuid : resources) {
            hooks.push_back(PlatformWebhook(testing::NewUuid(), uuid, VersionTime(version, true)));
          }
        }
        for (const Webhook& hook : hooks) {
          // A steady load, not a flood: the plugins' records stay small and a busy machine
          // keeps up (what is measured here is delivery, not ingest).
          std::this_thread::sleep_for(std::chrono::milliseconds(50));
          // Sent again until answered 200 (the next version waits for it).
          for (;;) {
            HttpResponse res = Send(client, hook);
            if (balanced.Record(res, hook.source, hook.ids)) {
              acks.fetch_add(1);
              break;
            }
            if (stop.load()) return;
            if (res.status == 0) client.Close();
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
          }
        }
      }
    });
  }
  const auto records_of = [&](int i) { return ReadRecords(nodes[i]->records(), i); };
  // Load answered and delivered by every node's plugin before the kills.
  ASSERT_TRUE(WaitFor(
      [&] {
        return acks.load() >= 100 && !records_of(0).empty() && !records_of(1).empty() &&
               !records_of(2).empty();
      },
      lease_guard_seconds))
      << "no load delivered on every node before the kills\n"
      << three.Logs();

  // Node 2's partitions just before the kill.
  std::set<int> victim_partitions;
  {
    std::optional<std::vector<std::string>> holder;
    ASSERT_TRUE(WaitFor([&] { return (holder = holders(1)).has_value(); }, 60));
    for (int p = 0; p < kPartitions; ++p) {
      if ((*holder)[p] == "n2") victim_partitions.insert(p);
    }
  }
  ASSERT_FALSE(victim_partitions.empty()) << "node 2 holds no partition";
  const int leader = cluster.StreamLeader(kClusterStream);
  const int victim = leader >= 0 ? leader : 0;
  const int64_t kill_us = NowMicros();
  three.Kill(1);
  cluster.Kill(victim);
  const int acks_at_kill = acks.load();

  // Takeover: each of node 2's partitions delivered by node 1 or 3 after the kill (load goes
  // on, so every partition gets events).
  std::map<int, int64_t> first_after_kill;  // partition -> first delivery elsewhere
  const bool taken_over = WaitFor(
      [&] {
        for (int i : {0, 2}) {
          for (const Record& r : records_of(i)) {
            const int p = PartitionOfRecord(r, kPartitions);
            if (r.at_us < kill_us || victim_partitions.count(p) == 0) continue;
            auto [it, inserted] = first_after_kill.try_emplace(p, r.at_us);
            if (!inserted) it->second = std::min(it->second, r.at_us);
          }
        }
        return first_after_kill.size() == victim_partitions.size();
      },
      static_cast<int>(std::ceil(takeover_bound_seconds)));
  ASSERT_TRUE(taken_over) << "node 2's partitions were not all delivered by another node within "
                          << takeover_bound_seconds << " s (" << first_after_kill.size() << " of "
                          << victim_partitions.size() << ")\n"
                          << three.Logs();
  int64_t takeover_us = 0;
  for (const auto& [p, at] : first_after_kill) takeover_us = std::max(takeover_us, at - kill_us);
  EXPECT_LE(takeover_us, static_cast<int64_t>(takeover_bound_seconds * 1e6))
      << "takeover of node 2's partitions\n"
      << three.Logs();
  const int acks_while_down = acks.load() - acks_at_kill;

  cluster.Restart(victim);
  ASSERT_TRUE(cluster.WaitForJetStream(victim));
  ASSERT_EQ(three.Restart(1), "");
  // Load through all three again, then the senders stop.
  {
    const int target = acks.load() + 100;
    ASSERT_TRUE(WaitFor([&] { return acks.load() >= target; }, lease_guard_seconds))
        << "no load went through after the restarts\n"
        << three.Logs();
  }
  stop = true;
  for (std::thread& t : senders) t.join();
  EXPECT_TRUE(balanced.unexpected.empty()) << balanced.unexpected.front();
  // No node stopped on its own (the test killed only node 2, and restarted it).
  ASSERT_EQ(three.Exited(), "") << three.Logs();

  // Every event answered 200 delivered at least once, to some node's plugin.
  std::vector<Record> merged;
  const auto undelivered = [&] {
    merged.clear();
    std::set<std::pair<std::string, std::string>> delivered;
    for (int i = 0; i < 3; ++i) {
      for (Record& r : records_of(i)) {
        delivered.emplace(r.source, r.id);
        merged.push_back(std::move(r));
      }
    }
    std::size_t missing = 0;
    for (const auto& key : balanced.acknowledged) missing += delivered.count(key) == 0;
    return missing;
  };
  std::size_t missing_deliveries = 0;
  WaitFor([&] { return (missing_deliveries = undelivered()) == 0; }, lease_guard_seconds);
  EXPECT_EQ(missing_deliveries, 0u)
      << "events answered 200 delivered to no plugin, of " << balanced.acknowledged.size() << "\n"
      << three.Logs();

  // Every partition held by exactly one live node, on every node's view.
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(WaitFor(
        [&] {
          const auto holder = holders(i);
          return holder.has_value() && std::all_of(holder->begin(), holder->end(),
                                                   [&](const auto& n) { return all.count(n); });
        },
        lease_guard_seconds))
        << [&] {
             const testing::CommandResult listed = testing::RunPimgatectl(
                 PIMGATECTL_BINARY, nodes[i]->admin_port(), kToken, {"owners"}, dir.path());
             return absl::StrCat("node ", i + 1, "'s owners (pimgatectl exit ", listed.exit_code,
                                 "): ", listed.out, listed.err, "\n", three.Logs());
           }();
  }

  // In the stream.
  auto events = ReadStream(js);
  ASSERT_TRUE(events.ok()) << events.status();
  std::set<std::pair<std::string, std::string>> stored;
  for (const v1::Event& event : *events) stored.emplace(event.source(), event.id());
  std::size_t missing_in_stream = 0;
  for (const auto& key : balanced.acknowledged) missing_in_stream += stored.count(key) == 0;
  EXPECT_EQ(missing_in_stream, 0u) << "events answered 200 not in the stream";

  // Per-resource order over the union, merged by the time of receipt.
  std::stable_sort(merged.begin(), merged.end(),
                   [](const Record& a, const Record& b) { return a.at_us < b.at_us; });
  std::map<std::string, std::set<uint64_t>> seen;  // resource -> sequences delivered so far
  std::map<std::string, uint64_t> highest;
  int redelivered = 0, out_of_order = 0;
  std::vector<std::string> examples;
  for (const Record& r : merged) {
    const std::string key = absl::StrCat(r.source, "/", r.kind, "/", r.resource_id);
    if (!seen[key].insert(r.sequence).second) {
      ++redelivered;  // a redelivery: dropped
      continue;
    }
    uint64_t& top = highest[key];
    if (r.sequence < top) {
      ++out_of_order;
      if (examples.size() < 5) {
        examples.push_back(absl::StrCat(key, ": ", r.sequence, " (node ", r.node + 1,
                                        ") first delivered after ", top));
      }
    }
    top = std::max(top, r.sequence);
  }
  EXPECT_EQ(out_of_order, 0) << absl::StrJoin(examples, "; ");

  std::string answers;
  for (const auto& [status, count] : balanced.answers) {
    absl::StrAppend(&answers, answers.empty() ? "" : ", ",
                    status == 0 ? std::string("connection error") : absl::StrCat(status), " x",
                    count);
  }
  std::vector<std::string> per_node;
  for (int i = 0; i < 3; ++i) {
    per_node.push_back(absl::StrCat("node ", i + 1, " ", records_of(i).size()));
  }
  std::cout << "cluster dispatch test: pimgate node 2 (partitions "
            << absl::StrJoin(victim_partitions, ",") << " of " << kPartitions
            << ") and nats-server " << victim + 1
            << " (stream leader: " << (leader >= 0 ? "yes" : "unknown") << ") killed with SIGKILL\n"
            << "  lease_ttl " << kLeaseTtlSeconds << " s; takeover (kill to first delivery of "
            << "every one of node 2's partitions by node 1 or 3): "
            << absl::StrFormat("%.2f", takeover_us / 1e6) << " s (bound " << takeover_bound_seconds
            << " s: lease_ttl + 2 x 9 s of leader election + 2 rounds + " << kBusyMachineSeconds
            << " s)\n"
            << "  through haproxy: " << answers << " (" << acks.load() << " requests answered 200, "
            << acks_while_down << " of them while node 2 was down)\n"
            << "  stream: " << events->size() << " events; " << balanced.acknowledged.size()
            << " answered 200, " << missing_in_stream << " missing in the stream, "
            << missing_deliveries << " delivered to no plugin\n"
            << "  plugin records: " << absl::StrJoin(per_node, ", ") << "; " << redelivered
            << " redeliveries, " << out_of_order << " first deliveries out of order\n";
  ::testing::Test::RecordProperty("takeover_ms", static_cast<int>(takeover_us / 1000));
  ::testing::Test::RecordProperty("redelivered", redelivered);
}

}  // namespace
}  // namespace pimgate
