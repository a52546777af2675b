// The gateway's connection timeouts (docs/configuration.md), against a real gateway over real
// sockets, with and without TLS: a body that stops arriving (gateway.body_timeout), a keep-alive
// connection left idle (gateway.idle_timeout), and a client that sends requests but never reads
// the answers (the write timeout, kWriteTimeout in gateway/server.cc). Each test waits for the
// server to close the connection, with the other timeouts set to an hour so that only the one
// under test can close it; the waits have a generous upper limit only so that a broken gateway
// fails the test instead of hanging it. No test measures how long anything took.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <future>
#include <optional>
#include <string>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "gateway/server.h"
#include "tests/testing/test_env.h"

namespace pimgate {
namespace {

using testing::GatewayHarness;
using testing::LegacyBatch;
using testing::LegacyHeaders;
using testing::LegacyProductEvent;
using testing::NewUuid;

using std::chrono::milliseconds;

constexpr char kLegacyPath[] = "/hooks/legacy";
// Long enough never to fire during a test: the timeout under test is the only one that can.
constexpr milliseconds kNever = std::chrono::hours(1);
// Upper limits that only keep a broken gateway from hanging the test.
constexpr milliseconds kHangGuard = std::chrono::minutes(3);

// Waits until `done` holds; false if kHangGuard passed first.
bool WaitFor(const std::function<bool()>& done) {
  const auto deadline = std::chrono::steady_clock::now() + kHangGuard;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(milliseconds(10));
  }
  return true;
}

// A signed legacy request (headers and body) as raw HTTP/1.1 bytes.
std::string LegacyRequest(const std::string& body) {
  std::string request =
      absl::StrCat("POST ", kLegacyPath, " HTTP/1.1\r\nHost: localhost\r\n",
                   "Content-Type: application/json\r\nContent-Length: ", body.size(), "\r\n");
  for (const auto& [name, value] : LegacyHeaders(GatewayHarness::kLegacySecret, body)) {
    absl::StrAppend(&request, name, ": ", value, "\r\n");
  }
  absl::StrAppend(&request, "\r\n", body);
  return request;
}

std::string OneEventBatch(const std::string& event_id) {
  return LegacyBatch({LegacyProductEvent("product.updated", event_id, NewUuid())});
}

// One client connection driven byte by byte over a plain socket and, with TLS, OpenSSL on top
// (no verification: the gateway's certificate is the test's own). Blocking, except
// ReadUntilClosed.
class Connection {
 public:
  struct Options {
    bool tls = true;
    // Set before connecting: a small receive window and segment size, so that answers the client
    // does not read fill the connection's buffers after a few hundred of them.
    bool small_buffers = false;
  };

  Connection(uint16_t port, Options options) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    if (fd_ < 0) return;
    if (options.small_buffers) {
      const int rcvbuf = 4096;
      const int mss = 536;
      setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
      setsockopt(fd_, IPPROTO_TCP, TCP_MAXSEG, &mss, sizeof(mss));
    }
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      error_ = absl::StrCat("connect: ", strerror(errno));
      return;
    }
    if (!options.tls) return;
    ctx_ = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(ctx_, SSL_VERIFY_NONE, nullptr);
    ssl_ = SSL_new(ctx_);
    SSL_set_fd(ssl_, fd_);
    SSL_set_tlsext_host_name(ssl_, "localhost");
    // A read that only meets a non-application record (a TLS 1.3 session ticket) returns instead
    // of waiting for more.
    SSL_clear_mode(ssl_, SSL_MODE_AUTO_RETRY);
    if (SSL_connect(ssl_) != 1) error_ = absl::StrCat("TLS handshake: ", SslError());
  }
  ~Connection() {
    if (ssl_ != nullptr) SSL_free(ssl_);
    if (ctx_ != nullptr) SSL_CTX_free(ctx_);
    if (fd_ >= 0) close(fd_);
  }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Empty when connected (and handshaken).
  const std::string& error() const { return error_; }
  int fd() const { return fd_; }

  // Writes all of `bytes`; false once the connection is broken (closed or reset by the server).
  bool Write(const std::string& bytes) {
    std::size_t done = 0;
    while (done < bytes.size()) {
      ssize_t n = 0;
      if (ssl_ != nullptr) {
        n = SSL_write(ssl_, bytes.data() + done, static_cast<int>(bytes.size() - done));
      } else {
        n = send(fd_, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
      }
      if (n <= 0) return false;
      done += static_cast<std::size_t>(n);
    }
    return true;
  }

  // Reads one answer (header and Content-Length body); nullopt when the connection closes first.
  std::optional<std::string> ReadAnswer() {
    std::string answer;
    char buf[4096];
    for (;;) {
      const std::size_t end = answer.find("\r\n\r\n");
      if (end != std::string::npos) {
        std::size_t length = 0;
        const std::size_t at = answer.find("Content-Length: ");
        if (at != std::string::npos && at < end) {
          const std::size_t eol = answer.find("\r\n", at);
          if (!absl::SimpleAtoi(answer.substr(at + 16, eol - at - 16), &length)) length = 0;
        }
        if (answer.size() >= end + 4 + length) return answer;
      }
      const ssize_t n =
          ssl_ != nullptr ? SSL_read(ssl_, buf, sizeof(buf)) : recv(fd_, buf, sizeof(buf), 0);
      if (n > 0) {
        answer.append(buf, static_cast<std::size_t>(n));
      } else if (ssl_ == nullptr ||
                 SSL_get_error(ssl_, static_cast<int>(n)) != SSL_ERROR_WANT_READ) {
        return std::nullopt;
      }
    }
  }

  // Reads until the server closes the connection (end of stream, reset, TLS close_notify or a
  // cut TLS stream) and returns the bytes that came before; nullopt when kHangGuard passes first.
  std::optional<std::string> ReadUntilClosed() {
    fcntl(fd_, F_SETFL, fcntl(fd_, F_GETFL) | O_NONBLOCK);
    const auto deadline = std::chrono::steady_clock::now() + kHangGuard;
    std::string received;
    char buf[4096];
    for (;;) {
      const auto left =
          std::chrono::duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return std::nullopt;
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, static_cast<int>(left.count())) < 0 && errno != EINTR) return received;
      for (;;) {
        if (ssl_ != nullptr) {
          const int n = SSL_read(ssl_, buf, sizeof(buf));
          if (n > 0) {
            received.append(buf, static_cast<std::size_t>(n));
            continue;
          }
          const int error = SSL_get_error(ssl_, n);
          if (error == SSL_ERROR_WANT_READ) break;
          return received;  // close_notify, end of stream, reset
        }
        const ssize_t n = recv(fd_, buf, sizeof(buf), 0);
        if (n > 0) {
          received.append(buf, static_cast<std::size_t>(n));
          continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) break;
        return received;  // end of stream or reset
      }
    }
  }

 private:
  static std::string SslError() {
    const unsigned long code = ERR_get_error();
    char text[256];
    ERR_error_string_n(code, text, sizeof(text));
    return text;
  }

  int fd_ = -1;
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
  std::string error_;
};

uint64_t LegacyAnswers(Gateway& gateway, int code) {
  for (const GatewayStats::Source& source : gateway.stats().sources) {
    if (source.name == "legacy") {
      auto it = source.requests_by_code.find(code);
      return it == source.requests_by_code.end() ? 0 : it->second;
    }
  }
  return 0;
}

GatewayHarness::Options Timeouts(bool tls, milliseconds header, milliseconds body,
                                 milliseconds idle) {
  GatewayHarness::Options options;
  options.tls = tls;
  options.tweak = [=](Config& config) {
    config.gateway.header_timeout = header;
    config.gateway.body_timeout = body;
    config.gateway.idle_timeout = idle;
  };
  return options;
}

class ConnectionTimeouts : public ::testing::TestWithParam<bool> {
 protected:
  bool tls() const { return GetParam(); }
};

// Headers and half of a signed body, then silence: gateway.body_timeout closes the connection
// without an answer (counted as 408) and stores nothing. The positive control: the same request
// sent whole on a new connection is stored, so "nothing stored" is not a log that stores nothing.
TEST_P(ConnectionTimeouts, BodyThatStopsArrivingIsClosedAtBodyTimeoutAndNothingIsStored) {
  GatewayHarness gw(Timeouts(tls(), kNever, milliseconds(500), kNever));
  const std::string stalled_id = NewUuid();
  const std::string request = LegacyRequest(OneEventBatch(stalled_id));
  const std::size_t header_end = request.find("\r\n\r\n") + 4;
  const std::size_t half_body = header_end + (request.size() - header_end) / 2;

  Connection stalled(gw.port(), {tls(), false});
  ASSERT_EQ(stalled.error(), "");
  ASSERT_TRUE(stalled.Write(request.substr(0, half_body)));
  const std::optional<std::string> before_close = stalled.ReadUntilClosed();
  ASSERT_TRUE(before_close.has_value()) << "the stalled body's connection was never closed";
  EXPECT_EQ(*before_close, "") << "documented: closed without an answer";
  ASSERT_TRUE(WaitFor([&] { return LegacyAnswers(gw.gateway(), 408) == 1; }))
      << "the body timeout was not counted as a 408";
  ASSERT_TRUE(WaitFor([&] { return gw.gateway().stats().connections_open == 0; }));

  const std::string whole_id = NewUuid();
  Connection whole(gw.port(), {tls(), false});
  ASSERT_EQ(whole.error(), "");
  ASSERT_TRUE(whole.Write(LegacyRequest(OneEventBatch(whole_id))));
  const std::optional<std::string> answer = whole.ReadAnswer();
  ASSERT_TRUE(answer.has_value());
  EXPECT_TRUE(absl::StartsWith(*answer, "HTTP/1.1 200 ")) << *answer;
  const std::vector<v1::Event> events = gw.AllEvents();
  ASSERT_EQ(events.size(), 1u) << "the stalled request stored something";
  EXPECT_EQ(events[0].id(), whole_id);
  EXPECT_EQ(LegacyAnswers(gw.gateway(), 200), 1u);
}

// One request answered on a keep-alive connection, then nothing: gateway.idle_timeout closes it.
TEST_P(ConnectionTimeouts, IdleKeepAliveConnectionIsClosedAtIdleTimeout) {
  GatewayHarness gw(Timeouts(tls(), kNever, kNever, milliseconds(300)));
  Connection client(gw.port(), {tls(), false});
  ASSERT_EQ(client.error(), "");
  ASSERT_TRUE(client.Write(LegacyRequest(OneEventBatch(NewUuid()))));
  const std::optional<std::string> answer = client.ReadAnswer();
  ASSERT_TRUE(answer.has_value());
  EXPECT_TRUE(absl::StartsWith(*answer, "HTTP/1.1 200 ")) << *answer;
  // The answer keeps the connection open: what closes it next is the idle timeout.
  EXPECT_FALSE(absl::StrContains(absl::AsciiStrToLower(*answer), "connection: close")) << *answer;

  const std::optional<std::string> before_close = client.ReadUntilClosed();
  ASSERT_TRUE(before_close.has_value()) << "the idle connection was never closed";
  EXPECT_EQ(*before_close, "");
  ASSERT_TRUE(WaitFor([&] { return gw.gateway().stats().connections_open == 0; }));
  EXPECT_EQ(gw.AllEvents().size(), 1u);
}

// A client that pipelines requests and never reads an answer: the answers fill the connection's
// buffers, the gateway's write cannot finish, it stops reading (so the client's writes block
// too), and its write timeout closes the connection rather than hold it forever. Header, body and
// idle timeouts are an hour: nothing else closes it. The requests are the PIM's "Test" button (a
// signed empty body), answered 200 without storing anything.
TEST_P(ConnectionTimeouts, ClientThatNeverReadsItsAnswersIsClosedByTheWriteTimeout) {
  signal(SIGPIPE, SIG_IGN);  // SSL_write writes to the socket without MSG_NOSIGNAL
  GatewayHarness gw(Timeouts(tls(), kNever, kNever, kNever));
  Connection client(gw.port(), {tls(), /*small_buffers=*/true});
  ASSERT_EQ(client.error(), "");
  const std::string test_button = LegacyRequest("");
  std::atomic<uint64_t> sent{0};
  // Writes until the connection breaks; blocks once the gateway stops reading.
  auto writer = std::async(std::launch::async, [&] {
    while (client.Write(test_button)) sent.fetch_add(1);
  });
  const bool closed = writer.wait_for(kHangGuard) == std::future_status::ready;
  if (!closed) {
    shutdown(client.fd(), SHUT_RDWR);  // unblock the writer; the test has failed
    writer.wait();
  }
  ASSERT_TRUE(closed) << "a client that never reads held its connection (" << sent.load()
                      << " requests sent)";
  std::cout << "requests written before the gateway closed the connection: " << sent.load()
            << "; answered 200: " << LegacyAnswers(gw.gateway(), 200) << "\n";
  ASSERT_TRUE(WaitFor([&] { return gw.gateway().stats().connections_open == 0; }));
  // It did answer what it read (the answers were written, not dropped), and stored nothing.
  EXPECT_GT(LegacyAnswers(gw.gateway(), 200), 0u);
  EXPECT_EQ(gw.log().head(), 0u);
  // The gateway still serves others.
  Connection other(gw.port(), {tls(), false});
  ASSERT_EQ(other.error(), "");
  ASSERT_TRUE(other.Write(LegacyRequest(OneEventBatch(NewUuid()))));
  const std::optional<std::string> answer = other.ReadAnswer();
  ASSERT_TRUE(answer.has_value());
  EXPECT_TRUE(absl::StartsWith(*answer, "HTTP/1.1 200 ")) << *answer;
}

INSTANTIATE_TEST_SUITE_P(TlsAndPlain, ConnectionTimeouts, ::testing::Values(true, false),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "Tls" : "Plain";
                         });

}  // namespace
}  // namespace pimgate
