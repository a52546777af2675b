// ConnectProxy over POSIX sockets: one thread accepts, each client gets a thread that reads its
// CONNECT request and then copies bytes one way while a second thread copies the other way.
// Stopping shuts every socket down (waking the blocked reads) and joins the threads.
#include "tests/testing/connect_proxy.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace pimgate::testing {
namespace {

constexpr std::size_t kMaxRequestHeader = 16 * 1024;

bool SendAll(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n <= 0) return false;
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

}  // namespace

class ConnectProxy::Impl {
 public:
  explicit Impl(Options options) : options_(std::move(options)) {
    listener_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (listener_ < 0) throw std::runtime_error("ConnectProxy: socket() failed");
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = 0;
    socklen_t length = sizeof(address);
    if (::bind(listener_, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
        ::listen(listener_, 64) != 0 ||
        ::getsockname(listener_, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
      ::close(listener_);
      throw std::runtime_error("ConnectProxy: cannot listen on 127.0.0.1");
    }
    port_ = ntohs(address.sin_port);
    acceptor_ = std::thread([this] { AcceptLoop(); });
  }

  ~Impl() {
    stopping_ = true;
    ::shutdown(listener_, SHUT_RDWR);
    acceptor_.join();
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (int fd : open_) ::shutdown(fd, SHUT_RDWR);
    }
    std::vector<std::thread> threads;
    {
      std::lock_guard<std::mutex> lock(mu_);
      threads.swap(threads_);
    }
    for (std::thread& thread : threads) thread.join();
    ::close(listener_);
  }

  uint16_t port() const { return port_; }
  const Options& options() const { return options_; }

  std::vector<Tunnel> tunnels() const {
    std::lock_guard<std::mutex> lock(mu_);
    return tunnels_;
  }

 private:
  void AcceptLoop() {
    for (;;) {
      const int client = ::accept(listener_, nullptr, nullptr);
      if (client < 0) {
        if (stopping_) return;
        continue;
      }
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) {
        ::close(client);
        return;
      }
      open_.insert(client);
      threads_.emplace_back([this, client] { Serve(client); });
    }
  }

  void Record(const std::string& authority, int status) {
    std::lock_guard<std::mutex> lock(mu_);
    tunnels_.push_back(Tunnel{authority, status});
  }

  void Close(int fd) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      open_.erase(fd);
    }
    ::close(fd);
  }

  // Reads the request header; what follows it (the first tunnelled bytes) goes to `rest`.
  static bool ReadHeader(int fd, std::string& header, std::string& rest) {
    std::string data;
    char buffer[4096];
    for (;;) {
      const size_t end = data.find("\r\n\r\n");
      if (end != std::string::npos) {
        header = data.substr(0, end);
        rest = data.substr(end + 4);
        return true;
      }
      if (data.size() > kMaxRequestHeader) return false;
      const ssize_t n = ::recv(fd, buffer, sizeof(buffer), 0);
      if (n <= 0) return false;
      data.append(buffer, static_cast<std::size_t>(n));
    }
  }

  bool Authorized(const std::vector<absl::string_view>& lines) const {
    if (options_.user.empty()) return true;
    const std::string expected =
        absl::StrCat("Basic ", absl::Base64Escape(options_.user + ":" + options_.password));
    for (size_t i = 1; i < lines.size(); ++i) {
      absl::string_view line = lines[i];
      const size_t colon = line.find(':');
      if (colon == absl::string_view::npos) continue;
      if (absl::EqualsIgnoreCase(absl::StripAsciiWhitespace(line.substr(0, colon)),
                                 "Proxy-Authorization") &&
          absl::StripAsciiWhitespace(line.substr(colon + 1)) == expected) {
        return true;
      }
    }
    return false;
  }

  // Connects to a loopback target only: this proxy must never reach past the machine.
  static int ConnectLoopback(const std::string& host, int port) {
    if (host != "127.0.0.1" && host != "localhost") return -1;
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = htons(static_cast<uint16_t>(port));
    if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
      ::close(fd);
      return -1;
    }
    return fd;
  }

  void Serve(int client) {
    std::string header;
    std::string rest;
    if (!ReadHeader(client, header, rest)) return Close(client);
    std::vector<absl::string_view> lines = absl::StrSplit(header, "\r\n");
    std::vector<absl::string_view> words = absl::StrSplit(lines[0], ' ', absl::SkipEmpty());
    if (words.size() != 3 || words[0] != "CONNECT") {
      Record(words.size() > 1 ? std::string(words[1]) : "", 405);
      SendAll(client, "HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n");
      return Close(client);
    }
    const std::string authority(words[1]);
    if (!Authorized(lines)) {
      Record(authority, 407);
      SendAll(client,
              "HTTP/1.1 407 Proxy Authentication Required\r\n"
              "Proxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\n\r\n");
      return Close(client);
    }
    const size_t colon = authority.rfind(':');
    int port = 0;
    if (colon == std::string::npos || !absl::SimpleAtoi(authority.substr(colon + 1), &port)) {
      Record(authority, 400);
      SendAll(client, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
      return Close(client);
    }
    const int upstream = ConnectLoopback(authority.substr(0, colon), port);
    if (upstream < 0) {
      Record(authority, 502);
      SendAll(client, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
      return Close(client);
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      open_.insert(upstream);
    }
    Record(authority, 200);
    if (!SendAll(client, "HTTP/1.1 200 Connection established\r\n\r\n") ||
        !SendAll(upstream, rest)) {
      Close(upstream);
      return Close(client);
    }
    std::thread back([this, client, upstream] { Copy(upstream, client); });
    Copy(client, upstream);
    back.join();
    Close(upstream);
    Close(client);
  }

  // Copies until either side ends, then ends the other direction too.
  static void Copy(int from, int to) {
    char buffer[16 * 1024];
    for (;;) {
      const ssize_t n = ::recv(from, buffer, sizeof(buffer), 0);
      if (n <= 0 || !SendAll(to, std::string_view(buffer, static_cast<std::size_t>(n)))) break;
    }
    ::shutdown(to, SHUT_WR);
    ::shutdown(from, SHUT_RD);
  }

  const Options options_;
  int listener_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stopping_{false};
  std::thread acceptor_;
  mutable std::mutex mu_;
  std::set<int> open_;
  std::vector<std::thread> threads_;
  std::vector<Tunnel> tunnels_;
};

ConnectProxy::ConnectProxy() : ConnectProxy(Options{}) {}
ConnectProxy::ConnectProxy(Options options) : impl_(std::make_unique<Impl>(std::move(options))) {}
ConnectProxy::~ConnectProxy() = default;

uint16_t ConnectProxy::port() const { return impl_->port(); }

std::string ConnectProxy::url() const {
  const Options& options = impl_->options();
  if (options.user.empty()) return absl::StrCat("http://127.0.0.1:", impl_->port());
  return absl::StrCat("http://", options.user, ":", options.password, "@127.0.0.1:", impl_->port());
}

std::vector<ConnectProxy::Tunnel> ConnectProxy::tunnels() const { return impl_->tunnels(); }

}  // namespace pimgate::testing
