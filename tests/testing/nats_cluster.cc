#include "tests/testing/nats_cluster.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <nats/nats.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "tests/testing/test_env.h"

namespace pimgate::testing {
namespace {

// A loopback port nothing listens on now (the kernel's choice for an ephemeral bind).
int FreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    socklen_t len = sizeof(addr);
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
      port = ntohs(addr.sin_port);
    }
  }
  ::close(fd);
  return port;
}

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
  servers_.resize(options.servers);
  for (int i = 0; i < options.servers; ++i) {
    Server& server = servers_[i];
    server.name = absl::StrCat("n", i + 1);
    server.client_port = FreePort();
    server.cluster_port = options.servers > 1 ? FreePort() : 0;
    server.config_file = dir_->File(server.name + ".conf");
    server.log_file = dir_->File(server.name + ".log");
  }
  for (Server& server : servers_) {
    std::string conf = absl::StrCat(
        "server_name: \"", server.name, "\"\n", "listen: \"127.0.0.1:", server.client_port, "\"\n",
        "jetstream {\n  store_dir: \"", dir_->File(server.name), "\"\n}\n");
    if (options.max_payload > 0) absl::StrAppend(&conf, "max_payload: ", options.max_payload, "\n");
    if (!options.tls_cert_file.empty()) {
      absl::StrAppend(&conf, "tls {\n  cert_file: \"", options.tls_cert_file, "\"\n  key_file: \"",
                      options.tls_key_file, "\"\n}\n");
    }
    if (!options.user.empty()) {
      absl::StrAppend(&conf, "authorization {\n  user: \"", options.user, "\"\n  password: \"",
                      options.password, "\"\n}\n");
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
  started_ = true;
  for (int i = 0; i < options.servers; ++i) {
    if (!WaitForJetStream(i)) {
      started_ = false;
      ADD_FAILURE() << "nats-server " << servers_[i].name << " did not answer JetStream requests:\n"
                    << Log(i);
      break;
    }
  }
}

NatsCluster::~NatsCluster() {
  for (int i = 0; i < static_cast<int>(servers_.size()); ++i) Kill(i);
}

void NatsCluster::Start(Server& server) {
  const pid_t pid = ::fork();
  if (pid == 0) {
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

std::string NatsCluster::Log(int server) const { return ReadFile(servers_.at(server).log_file); }

}  // namespace pimgate::testing
