#include "tests/testing/nats_cluster.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <nats/nats.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <iostream>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "tests/testing/test_env.h"

namespace pimgate::testing {
namespace {

// The kernel's range for ephemeral ports (the source ports of outgoing connections and of
// binds to port 0); {32768, 60999} when it cannot be read.
std::pair<int, int> EphemeralPortRange() {
  std::ifstream in("/proc/sys/net/ipv4/ip_local_port_range");
  int low = 0;
  int high = 0;
  if (in >> low >> high && low > 0 && high >= low) return {low, high};
  return {32768, 60999};
}

// Binds a loopback listener-to-be on `port` (0: the kernel chooses); returns the fd and the
// port bound, or {-1, 0}.
std::pair<int, int> HoldPort(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return {-1, 0};
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  socklen_t len = sizeof(addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ::close(fd);
    return {-1, 0};
  }
  return {fd, ntohs(addr.sin_port)};
}

// `count` distinct loopback ports nothing listens on now, all held until every one is chosen
// (one port chosen and released at a time can come back twice, and a server then fails to bind
// its second listener). They are taken below the kernel's ephemeral range: a killed server is
// restarted on its own ports (its peers' routes and the clients name them), and a port of the
// ephemeral range can meanwhile become the source port of any outgoing connection, a reconnecting
// client's included. Another process may still take one before the server binds it: NatsCluster
// starts again with new ports when that happens.
std::vector<int> FreePorts(int count) {
  const auto [ephemeral_low, ephemeral_high] = EphemeralPortRange();
  const int low = 10000;
  const int high = ephemeral_low - 1;
  std::vector<int> fds;
  std::vector<int> ports;
  std::mt19937 random(std::random_device{}());
  for (int i = 0; i < count; ++i) {
    std::pair<int, int> held{-1, 0};
    for (int attempt = 0; attempt < 200 && held.first < 0 && high - low > 1000; ++attempt) {
      held = HoldPort(std::uniform_int_distribution<int>(low, high)(random));
    }
    if (held.first < 0) held = HoldPort(0);  // no room below the range: the kernel's choice
    if (held.first >= 0) fds.push_back(held.first);
    ports.push_back(held.second);
  }
  for (int fd : fds) ::close(fd);
  return ports;
}

// Attempts at starting the servers when a port was taken by another process meanwhile.
constexpr int kStartAttempts = 3;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// A connection for the helper's own checks: with the credentials in `url`, and over TLS
// without verifying the server when `tls`.
natsConnection* ProbeConnect(const std::string& url, bool tls) {
  natsOptions* opts = nullptr;
  if (natsOptions_Create(&opts) != NATS_OK) return nullptr;
  natsConnection* nc = nullptr;
  natsStatus s = natsOptions_SetURL(opts, url.c_str());
  if (s == NATS_OK) s = natsOptions_SetAllowReconnect(opts, false);
  if (s == NATS_OK && tls) {
    s = natsOptions_SetSecure(opts, true);
    if (s == NATS_OK) s = natsOptions_SkipServerVerification(opts, true);
  }
  if (s == NATS_OK && natsConnection_Connect(&nc, opts) != NATS_OK) nc = nullptr;
  natsOptions_Destroy(opts);
  return nc;
}

}  // namespace

NatsCluster::NatsCluster(Options options) : options_(options), dir_(std::make_unique<TempDir>()) {
  for (int attempt = 1; attempt <= kStartAttempts && !started_; ++attempt) {
    const bool port_taken = StartAll(attempt);
    if (started_) break;
    if (!port_taken || attempt == kStartAttempts) {
      ADD_FAILURE() << "the nats-servers did not answer JetStream requests (attempt " << attempt
                    << ")\n"
                    << failed_log_;
      break;
    }
    for (int i = 0; i < static_cast<int>(servers_.size()); ++i) Kill(i);
  }
}

bool NatsCluster::StartAll(int attempt) {
  servers_.assign(options_.servers, Server{});
  const std::vector<int> ports = FreePorts(options_.servers > 1 ? 2 * options_.servers : 1);
  for (int i = 0; i < options_.servers; ++i) {
    Server& server = servers_[i];
    server.name = absl::StrCat("n", i + 1);
    // Each attempt its own files: a server that half-started must not leave state behind.
    const std::string stem = absl::StrCat(server.name, "-", attempt);
    server.client_port = ports[options_.servers > 1 ? 2 * i : 0];
    server.cluster_port = options_.servers > 1 ? ports[2 * i + 1] : 0;
    server.config_file = dir_->File(stem + ".conf");
    server.log_file = dir_->File(stem + ".log");
    server.store_dir = dir_->File(stem);
  }
  for (Server& server : servers_) {
    std::string conf = absl::StrCat("server_name: \"", server.name, "\"\n",
                                    "listen: \"127.0.0.1:", server.client_port, "\"\n",
                                    "jetstream {\n  store_dir: \"", server.store_dir, "\"\n}\n");
    if (options_.max_payload > 0) {
      absl::StrAppend(&conf, "max_payload: ", options_.max_payload, "\n");
    }
    if (!options_.tls_cert_file.empty()) {
      absl::StrAppend(&conf, "tls {\n  cert_file: \"", options_.tls_cert_file, "\"\n  key_file: \"",
                      options_.tls_key_file, "\"\n}\n");
    }
    if (!options_.user.empty()) {
      absl::StrAppend(&conf, "authorization {\n  user: \"", options_.user, "\"\n  password: \"",
                      options_.password, "\"\n}\n");
    }
    if (servers_.size() > 1) {
      std::vector<std::string> routes;
      for (const Server& other : servers_) {
        if (&other != &server) {
          routes.push_back(absl::StrCat("\"nats-route://127.0.0.1:", other.cluster_port, "\""));
        }
      }
      absl::StrAppend(
          &conf, "cluster {\n  name: \"pimgate-test\"\n  listen: \"127.0.0.1:", server.cluster_port,
          "\"\n  routes: [", absl::StrJoin(routes, ", "), "]\n}\n");
    }
    std::ofstream(server.config_file) << conf;
    Start(server);
  }
  for (int i = 0; i < options_.servers; ++i) {
    // Up to 60 s for JetStream to answer, unless the server exits first (a port taken).
    bool answered = false;
    for (int second = 0; second < 60 && !answered; ++second) {
      if (Exited(servers_[i])) break;
      answered = WaitForJetStream(i, 1);
    }
    if (!answered) {
      bool port_taken = false;
      for (int j = 0; j < options_.servers; ++j) {
        port_taken = port_taken || absl::StrContains(Log(j), "address already in use");
      }
      if (port_taken) {
        std::cerr << "nats-cluster: a port was taken by another process; starting again\n";
      }
      failed_log_ = absl::StrCat("nats-server ", servers_[i].name, ":\n", Log(i));
      return port_taken;
    }
  }
  started_ = true;
  return false;
}

NatsCluster::~NatsCluster() {
  for (int i = 0; i < static_cast<int>(servers_.size()); ++i) Kill(i);
}

bool NatsCluster::Exited(Server& server) {
  if (server.pid <= 0) return true;
  int status = 0;
  if (::waitpid(server.pid, &status, WNOHANG) != server.pid) return false;
  server.pid = -1;
  return true;
}

void NatsCluster::Start(Server& server) {
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid == 0) {
    // A test that crashes (or is killed by ctest's timeout) takes its servers with it.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(1);
    const int fd = ::open(server.log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      ::dup2(fd, STDOUT_FILENO);
      ::dup2(fd, STDERR_FILENO);
    }
    ::execlp("nats-server", "nats-server", "-c", server.config_file.c_str(),
             static_cast<char*>(nullptr));
    ::_exit(127);
  }
  server.pid = pid;
}

std::vector<std::string> NatsCluster::urls() const {
  std::vector<std::string> urls;
  for (const Server& server : servers_) {
    urls.push_back(absl::StrCat("nats://127.0.0.1:", server.client_port));
  }
  return urls;
}

JetStreamConfig NatsCluster::Config(const std::string& stream) const {
  JetStreamConfig config;
  config.servers = urls();
  config.replicas = static_cast<int>(servers_.size());
  config.stream = stream;
  config.subject = absl::StrCat("pimgate.test.", stream);
  config.cursor_bucket = stream + "_cursors";
  config.dead_letter_bucket = stream + "_dead_letters";
  return config;
}

void NatsCluster::Kill(int server) {
  Server& s = servers_.at(server);
  if (s.pid <= 0) return;
  ::kill(s.pid, SIGKILL);
  int status = 0;
  ::waitpid(s.pid, &status, 0);
  s.pid = -1;
}

void NatsCluster::Restart(int server) {
  Server& s = servers_.at(server);
  ASSERT_LE(s.pid, 0) << "restart of a running nats-server";
  Start(s);
}

std::string NatsCluster::ProbeUrl(int server) const {
  const std::string credentials =
      options_.user.empty() ? "" : absl::StrCat(options_.user, ":", options_.password, "@");
  return absl::StrCat("nats://", credentials, "127.0.0.1:", servers_.at(server).client_port);
}

bool NatsCluster::WaitForJetStream(int server, int seconds) const {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  while (std::chrono::steady_clock::now() < deadline) {
    natsConnection* nc = ProbeConnect(ProbeUrl(server), !options_.tls_cert_file.empty());
    if (nc != nullptr) {
      natsMsg* reply = nullptr;
      // $JS.API.INFO answers without an error once JetStream is up (in a cluster: once there
      // is a meta leader).
      const bool ok =
          natsConnection_RequestString(&reply, nc, "$JS.API.INFO", "", 2000) == NATS_OK &&
          !absl::StrContains(std::string(natsMsg_GetData(reply), natsMsg_GetDataLength(reply)),
                             "\"error\"");
      natsMsg_Destroy(reply);
      natsConnection_Destroy(nc);
      if (ok) return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

uint64_t NatsCluster::FirstSequence(const std::string& stream) const {
  for (int server = 0; server < static_cast<int>(servers_.size()); ++server) {
    natsConnection* nc = ProbeConnect(ProbeUrl(server), !options_.tls_cert_file.empty());
    if (nc == nullptr) continue;
    jsCtx* js = nullptr;
    jsStreamInfo* info = nullptr;
    uint64_t first = 0;
    if (natsConnection_JetStream(&js, nc, nullptr) == NATS_OK &&
        js_GetStreamInfo(&info, js, stream.c_str(), nullptr, nullptr) == NATS_OK) {
      first = info->State.FirstSeq;
      jsStreamInfo_Destroy(info);
    }
    if (js != nullptr) jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    if (first > 0) return first;
  }
  return 0;
}

int NatsCluster::StreamLeader(const std::string& stream) const {
  for (int server = 0; server < static_cast<int>(servers_.size()); ++server) {
    if (servers_[server].pid <= 0) continue;
    natsConnection* nc = ProbeConnect(ProbeUrl(server), !options_.tls_cert_file.empty());
    if (nc == nullptr) continue;
    jsCtx* js = nullptr;
    jsStreamInfo* info = nullptr;
    std::string leader;
    if (natsConnection_JetStream(&js, nc, nullptr) == NATS_OK &&
        js_GetStreamInfo(&info, js, stream.c_str(), nullptr, nullptr) == NATS_OK) {
      if (info->Cluster != nullptr && info->Cluster->Leader != nullptr) {
        leader = info->Cluster->Leader;
      }
      jsStreamInfo_Destroy(info);
    }
    if (js != nullptr) jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    for (int i = 0; i < static_cast<int>(servers_.size()); ++i) {
      if (!leader.empty() && servers_[i].name == leader) return i;
    }
  }
  return -1;
}

std::string NatsCluster::Log(int server) const { return ReadFile(servers_.at(server).log_file); }

}  // namespace pimgate::testing
