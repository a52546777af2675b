// Every listener of a real pimgate process (webhook gateway, metrics endpoint, admin gRPC API)
// sets TCP_NODELAY on the sockets it accepts: without it, an answer written in two segments waits
// for the client's delayed ACK (about 40 ms on Linux) before its second segment leaves.
//
// The test connects to each port, then reads the option on the server's end of that very
// connection: pidfd_getfd(2) copies pimgate's accepted descriptor into this process.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "tests/testing/test_env.h"

namespace pimgate {
namespace {

using testing::PimgateProcess;
using testing::TempDir;

// A port from pimgate's ready file ("gateway_port", "metrics_port", "admin_port",
// "console_port").
uint16_t PortFromReadyFile(const std::string& ready_file, const std::string& name) {
  std::ifstream in(ready_file);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string key = "\"" + name + "\":";
  const std::size_t pos = text.find(key);
  if (pos == std::string::npos) return 0;
  return static_cast<uint16_t>(std::stoi(text.substr(pos + key.size())));
}

// A TCP connection from this process to 127.0.0.1:port; the kernel completes it from the
// listener's backlog whether or not the server has accepted it yet.
class Client {
 public:
  explicit Client(uint16_t port) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      close(fd_);
      fd_ = -1;
    }
  }
  ~Client() {
    if (fd_ >= 0) close(fd_);
  }
  bool ok() const { return fd_ >= 0; }
  uint16_t local_port() const {
    sockaddr_in addr{};
    socklen_t len = sizeof(addr);
    getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    return ntohs(addr.sin_port);
  }

 private:
  int fd_ = -1;
};

uint16_t PortOf(int fd, bool peer) {
  sockaddr_storage addr{};
  socklen_t len = sizeof(addr);
  const int rc = peer ? getpeername(fd, reinterpret_cast<sockaddr*>(&addr), &len)
                      : getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  if (rc != 0) return 0;
  // gRPC listens on a dual-stack IPv6 socket even for 127.0.0.1: its peers are ::ffff:127.0.0.1.
  if (addr.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
  if (addr.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port);
  return 0;
}

// TCP_NODELAY of the socket in process `pid` whose peer is 127.0.0.1:`client_port`; nullopt
// while pimgate has not accepted the connection yet.
std::optional<int> ServerSideNoDelay(pid_t pid, uint16_t client_port) {
  const int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) {
    ADD_FAILURE() << "pidfd_open: " << std::strerror(errno);
    return std::nullopt;
  }
  std::optional<int> found;
  std::error_code ec;
  for (const auto& entry :
       std::filesystem::directory_iterator(absl::StrCat("/proc/", pid, "/fd"), ec)) {
    std::error_code link_ec;
    const std::string target = std::filesystem::read_symlink(entry.path(), link_ec).string();
    if (link_ec || target.rfind("socket:", 0) != 0) continue;
    const int remote_fd = std::stoi(entry.path().filename().string());
    const int fd = static_cast<int>(syscall(SYS_pidfd_getfd, pidfd, remote_fd, 0));
    if (fd < 0) {
      ADD_FAILURE() << "pidfd_getfd: " << std::strerror(errno);
      break;
    }
    if (PortOf(fd, /*peer=*/true) == client_port) {
      int nodelay = -1;
      socklen_t len = sizeof(nodelay);
      if (getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &nodelay, &len) == 0) found = nodelay;
    }
    close(fd);
    if (found) break;
  }
  close(pidfd);
  return found;
}

TEST(ListenerSockets, EveryListenerSetsTcpNoDelayOnAcceptedSockets) {
  TempDir dir;
  const testing::CertFiles cert = testing::MakeSelfSignedCert(dir.path());
  std::ostringstream yaml;
  yaml << "gateway:\n  listen: 127.0.0.1:0\n  threads: 2\n"
       << "  tls: {cert_file: " << cert.cert_file << ", key_file: " << cert.key_file << "}\n"
       << "store:\n  path: " << dir.File("store") << "\n"
       << "metrics:\n  listen: 127.0.0.1:0\n"
       << "admin:\n  listen: 127.0.0.1:0\n"
       << "console:\n  enabled: true\n  listen: 127.0.0.1:0\n"
       << "log:\n  level: warn\n"
       << "sources:\n  - {name: pim, kind: events_api, path: /hooks/pim, secret: s3cr3t-value}\n";
  std::ofstream(dir.File("pimgate.yaml")) << yaml.str();
  PimgateProcess process(dir.File("pimgate.yaml"), dir.File("ready.json"));
  ASSERT_NE(process.WaitReady(), 0) << "pimgate did not start";
  for (const char* listener : {"gateway_port", "metrics_port", "admin_port", "console_port"}) {
    const uint16_t port = PortFromReadyFile(dir.File("ready.json"), listener);
    ASSERT_NE(port, 0) << listener;
    Client client(port);
    ASSERT_TRUE(client.ok()) << listener;
    // The descriptor shows in /proc as soon as accept(2) returns, which may be just before the
    // server sets the option (gRPC sets it right after accepting): wait until it is set, or give
    // up after a hang guard. A server that never sets it fails at the guard; no speed is assumed.
    std::optional<int> nodelay;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!((nodelay = ServerSideNoDelay(process.pid(), client.local_port())) && *nodelay != 0) &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ASSERT_TRUE(nodelay.has_value()) << listener << ": pimgate never accepted the connection";
    EXPECT_NE(*nodelay, 0) << listener << ": accepted socket still without TCP_NODELAY after 20 s";
  }
}

}  // namespace
}  // namespace pimgate
