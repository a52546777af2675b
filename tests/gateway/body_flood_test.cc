// The body budget against a real pimgate process under a flood of unauthenticated bodies:
// 1 024 connections that each announce 4 MiB, send all but the last byte and stop (and, when the
// server closes one, come back), from 64 loopback addresses and then from one, while a genuine
// signed sender keeps posting on its own connections. pimgate's RSS must stay under
// max_buffered_bytes + its idle RSS + the per-connection margin docs/security.md states, and every
// genuine request must be answered 200.
//
// Why no latency is asserted: the PIM's 0.5 s is a wall-clock bound that a loaded 2-core CI box
// can break by itself. What keeps genuine senders inside it is a mechanism, and that is asserted
// instead: no genuine request is ever refused (each gets 200, none 503/429), no refusal is ever
// logged for the genuine address while the flood's addresses are refused and evicted (positive
// control that the flood did fill the budget), and small bodies (every Event Platform event, a
// typical legacy batch) never wait for room at all, by construction (tests/gateway/
// body_budget_test.cc). The genuine requests' latencies are recorded as test properties.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "tests/testing/test_env.h"

namespace pimgate {
namespace {

using Clock = std::chrono::steady_clock;
using testing::CloudEvent;
using testing::EventPlatformHeaders;
using testing::HttpClient;
using testing::HttpResponse;
using testing::LegacyBatch;
using testing::LegacyHeaders;
using testing::LegacyProductEvent;
using testing::NewUuid;
using testing::TempDir;

constexpr char kLegacySecret[] = "flood-legacy-secret-0123456789";
constexpr char kPlatformSecret[] = "flood-platform-secret-abcdef";
constexpr std::size_t kMiB = 1u << 20;
constexpr std::size_t kBodyLimit = 4 * kMiB;
constexpr std::size_t kMaxBuffered = 64 * kMiB;
constexpr int kHostileConnections = 1024;
constexpr int kMaxConnections = 1100;  // the flood and the genuine sender's connections
// What each connection may cost beyond its body, as docs/security.md states it: the read buffer
// (header_limit + 16 KiB), the session, the parser, the socket (and, over TLS, OpenSSL's state,
// whose buffers are released while idle). Stated generously: 64 KiB x max_connections.
constexpr std::size_t kPerConnectionMargin = 64 * 1024;
// The allocator's slack (jemalloc's arenas, size classes) and the genuine traffic's own memory.
constexpr std::size_t kFixedMargin = 24 * kMiB;

// pimgate started from the built binary with its log in a file.
class Server {
 public:
  Server(const std::string& config, const std::string& ready, const std::string& log)
      : ready_(ready), log_(log) {
    pid_ = fork();
    if (pid_ == 0) {
      const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      dup2(fd, 1);
      dup2(fd, 2);
      execl(PIMGATE_BINARY, PIMGATE_BINARY, "--config", config.c_str(), "--ready-file",
            ready.c_str(), nullptr);
      _exit(127);
    }
  }
  ~Server() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  // Waits for the ready file; false if pimgate exited.
  bool WaitReady() {
    for (int i = 0; i < 3000; ++i) {
      std::ifstream in(ready_);
      std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      if (absl::StrContains(text, "\"gateway_port\":")) {
        gateway_port_ = Port(text, "gateway_port");
        metrics_port_ = Port(text, "metrics_port");
        return true;
      }
      if (waitpid(pid_, nullptr, WNOHANG) == pid_) {
        pid_ = -1;
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }
  // SIGTERM (pimgate logs its last refusals as it stops), then the log.
  std::string StopAndReadLog() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
    std::ifstream in(log_);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  }
  std::size_t RssBytes(const char* field = "VmRSS:") const {
    std::ifstream in(absl::StrCat("/proc/", pid_, "/status"));
    std::string line;
    while (std::getline(in, line)) {
      if (absl::StartsWith(line, field)) return std::stoull(line.substr(std::strlen(field))) * 1024;
    }
    return 0;
  }
  uint16_t gateway_port() const { return gateway_port_; }
  uint16_t metrics_port() const { return metrics_port_; }

 private:
  static uint16_t Port(const std::string& text, const std::string& name) {
    const std::size_t pos = text.find("\"" + name + "\":");
    return static_cast<uint16_t>(std::stoi(text.substr(pos + name.size() + 3)));
  }
  std::string ready_, log_;
  pid_t pid_ = -1;
  uint16_t gateway_port_ = 0, metrics_port_ = 0;
};

// The lines of `text` that contain `needle`.
std::string LinesWith(const std::string& text, const std::string& needle) {
  std::istringstream lines(text);
  std::string line, out;
  while (std::getline(lines, line)) {
    if (absl::StrContains(line, needle)) absl::StrAppend(&out, line, "\n");
  }
  return out;
}

// A sample of pimgate's /metrics.
double Metric(uint16_t port, const std::string& name_and_labels) {
  HttpClient client(port, /*tls=*/false);
  HttpResponse res = client.Send("GET", "/metrics", "");
  std::istringstream lines(res.body);
  std::string line;
  while (std::getline(lines, line)) {
    if (absl::StartsWith(line, name_and_labels + " ")) {
      return std::stod(line.substr(name_and_labels.size() + 1));
    }
  }
  return -1;
}

// The flood: `connections` plain connections from `sources` (round robin), each sending a
// well-formed signed-looking legacy request header announcing 4 MiB, then all but the last byte of
// the body as fast as the server lets it, then nothing. A connection the server closes is opened
// again after 100 ms (the attacker persists). Socket send buffers are kept small so that the bytes
// the server does not read wait in the test's kernel memory, not in gigabytes of it.
class Flood {
 public:
  Flood(uint16_t port, std::vector<std::string> sources, int connections)
      : port_(port), sources_(std::move(sources)), slots_(connections) {
    const std::string head = absl::StrCat(
        "POST /hooks/legacy HTTP/1.1\r\nHost: pimgate\r\nContent-Type: application/json\r\n"
        "Content-Length: ",
        kBodyLimit, "\r\nX-Akeneo-Request-Signature: ", std::string(64, 'a'),
        "\r\nX-Akeneo-Request-Timestamp: ", testing::NowUnixSeconds(), "\r\n\r\n");
    request_ = head + std::string(kBodyLimit - 1, 'x');
    thread_ = std::thread([this] { Run(); });
  }
  ~Flood() {
    stop_ = true;
    thread_.join();
    for (Slot& slot : slots_) {
      if (slot.fd >= 0) close(slot.fd);
    }
  }
  uint64_t connects() const { return connects_.load(); }
  uint64_t closed_by_server() const { return closed_.load(); }
  int open_now() const { return open_.load(); }

 private:
  struct Slot {
    int fd = -1;
    bool connected = false;
    std::size_t sent = 0;
    Clock::time_point retry_at;
  };

  void Open(std::size_t i) {
    Slot& slot = slots_[i];
    slot.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    const int sndbuf = 64 * 1024;
    setsockopt(slot.fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
    sockaddr_in local{};
    local.sin_family = AF_INET;
    inet_pton(AF_INET, sources_[i % sources_.size()].c_str(), &local.sin_addr);
    bind(slot.fd, reinterpret_cast<sockaddr*>(&local), sizeof(local));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port_);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connect(slot.fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));  // EINPROGRESS
    slot.connected = false;
    slot.sent = 0;
    ++connects_;
    ++open_;
  }

  void Drop(Slot& slot) {
    close(slot.fd);
    slot.fd = -1;
    slot.retry_at = Clock::now() + std::chrono::milliseconds(100);
    ++closed_;
    --open_;
  }

  void Run() {
    std::vector<pollfd> fds;
    std::vector<std::size_t> index;
    while (!stop_) {
      const auto now = Clock::now();
      fds.clear();
      index.clear();
      for (std::size_t i = 0; i < slots_.size(); ++i) {
        Slot& slot = slots_[i];
        if (slot.fd < 0 && now >= slot.retry_at) Open(i);
        if (slot.fd < 0) continue;
        short events = POLLIN;
        if (!slot.connected || slot.sent < request_.size()) events |= POLLOUT;
        fds.push_back({slot.fd, events, 0});
        index.push_back(i);
      }
      if (poll(fds.data(), fds.size(), 10) <= 0) continue;
      for (std::size_t k = 0; k < fds.size(); ++k) {
        Slot& slot = slots_[index[k]];
        if (fds[k].revents & (POLLIN | POLLHUP | POLLERR)) {
          char buf[4096];
          const ssize_t n = recv(slot.fd, buf, sizeof(buf), 0);
          if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
            Drop(slot);
            continue;
          }
          // An answer (503): the close follows.
        }
        if (fds[k].revents & POLLOUT) {
          slot.connected = true;
          while (slot.sent < request_.size()) {
            const ssize_t n =
                send(slot.fd, request_.data() + slot.sent,
                     std::min<std::size_t>(request_.size() - slot.sent, 64 * 1024), MSG_NOSIGNAL);
            if (n <= 0) break;
            slot.sent += static_cast<std::size_t>(n);
          }
        }
      }
    }
  }

  const uint16_t port_;
  const std::vector<std::string> sources_;
  std::string request_;
  std::vector<Slot> slots_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> connects_{0}, closed_{0};
  std::atomic<int> open_{0};
  std::thread thread_;
};

// The genuine PIM: signed requests on its own keep-alive connections from 127.0.0.1, small legacy
// batches, large ones (10 products of ~120 KB) and Event Platform events (429: retry after
// Retry-After, as the platform does).
struct GenuineResult {
  int legacy_small = 0, legacy_large = 0, platform = 0;
  int platform_429 = 0;
  std::vector<std::string> failures;
  std::vector<double> latencies_ms;
};

std::string LargeLegacyBody() {
  std::vector<std::string> events;
  for (int i = 0; i < 10; ++i) {
    const std::string uuid = NewUuid();
    events.push_back(absl::StrCat(
        R"({"action":"product.updated","event_id":")", NewUuid(),
        R"(","event_datetime":"2026-11-20T10:15:00+00:00","author":"julia","author_type":"ui",)",
        R"("pim_source":"https:\/\/pim.example.com","data":{"resource":{"uuid":")", uuid,
        R"(","identifier":"sku-1","values":{"description":[{"locale":"en_US","scope":null,)",
        R"("data":")", std::string(120'000, 'd'),
        R"("}]},"updated":"2026-11-20T10:14:59+00:00"}}})"));
  }
  return LegacyBatch(events);
}

// Posts for `duration` and for at least `min_rounds` rounds: the counts asserted after a flood
// follow from "every request answered 200", however slow the machine (a sanitizer build under
// load may take seconds per request while the flood runs).
void RunGenuine(uint16_t port, std::chrono::seconds duration, GenuineResult& result,
                int min_rounds = 0) {
  HttpClient small(port, false), large(port, false), platform(port, false);
  const auto end = Clock::now() + duration;
  auto timed = [&result](HttpClient& client, const std::string& path, const std::string& body,
                         const std::map<std::string, std::string>& headers) {
    const auto start = Clock::now();
    HttpResponse res = client.Send("POST", path, body, headers);
    result.latencies_ms.push_back(
        std::chrono::duration<double, std::milli>(Clock::now() - start).count());
    return res;
  };
  for (int round = 0; round < min_rounds || Clock::now() < end; ++round) {
    const std::string body =
        LegacyBatch({LegacyProductEvent("product.updated", NewUuid(), NewUuid()),
                     LegacyProductEvent("product.updated", NewUuid(), NewUuid())});
    HttpResponse res = timed(small, "/hooks/legacy", body, LegacyHeaders(kLegacySecret, body));
    if (res.status == 200) {
      ++result.legacy_small;
    } else {
      result.failures.push_back(absl::StrCat("legacy small: ", res.status, " ", res.body));
    }
    if (round % 10 == 0) {
      const std::string big = LargeLegacyBody();
      res = timed(large, "/hooks/legacy", big, LegacyHeaders(kLegacySecret, big));
      if (res.status == 200) {
        ++result.legacy_large;
      } else {
        result.failures.push_back(absl::StrCat("legacy large: ", res.status, " ", res.body));
      }
    }
    const std::string event = CloudEvent("com.akeneo.pim.v1.product.updated", NewUuid(), NewUuid());
    for (int attempt = 0; attempt < 5; ++attempt) {
      res = timed(platform, "/hooks/platform", event, EventPlatformHeaders(kPlatformSecret, event));
      if (res.status != 429) break;
      ++result.platform_429;
      std::this_thread::sleep_for(std::chrono::seconds(std::stoi(res.headers["retry-after"])));
    }
    if (res.status == 200) {
      ++result.platform;
    } else {
      result.failures.push_back(absl::StrCat("platform: ", res.status, " ", res.body));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

void RaiseDescriptorLimit() {
  rlimit limit{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &limit), 0);
  const rlim_t want = kMaxConnections + 512;  // each process holds one end of each connection
  ASSERT_GE(limit.rlim_max, want) << "this test needs `ulimit -Hn` of at least " << want;
  if (limit.rlim_cur < want) {
    limit.rlim_cur = want;
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &limit), 0);  // inherited by pimgate
  }
}

// Rounds of the genuine sender during the flood: 21 small legacy batches, 3 large ones (rounds
// 0, 10 and 20) and 21 Event Platform events at least.
constexpr int kMinGenuineRounds = 21;

void FloodWhileTheGenuineSenderPosts(const std::vector<std::string>& flood_sources) {
  RaiseDescriptorLimit();
  TempDir dir;
  std::ofstream(dir.File("pimgate.yaml"))
      << "gateway:\n  listen: 127.0.0.1:0\n  threads: 2\n"
      << "  max_connections: " << kMaxConnections << "\n"
      << "  max_buffered_bytes: " << kMaxBuffered << "\n"
      << "store:\n  path: " << dir.File("store") << "\n"
      << "metrics:\n  listen: 127.0.0.1:0\n"
      << "admin:\n  enabled: false\n"
      << "log:\n  level: info\n"
      << "sources:\n"
      << "  - {name: legacy, kind: events_api, path: /hooks/legacy, secret: " << kLegacySecret
      << "}\n"
      << "  - {name: platform, kind: event_platform, path: /hooks/platform, secret: "
      << kPlatformSecret << "}\n";
  Server server(dir.File("pimgate.yaml"), dir.File("ready.json"), dir.File("pimgate.log"));
  ASSERT_TRUE(server.WaitReady()) << server.StopAndReadLog();

  // Warm up as the PIM would: its address authenticates, the parser's buffers grow to a large
  // body's size. Then the idle RSS.
  GenuineResult warmup;
  RunGenuine(server.gateway_port(), std::chrono::seconds(1), warmup);
  ASSERT_TRUE(warmup.failures.empty()) << warmup.failures.front();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const std::size_t idle_rss = server.RssBytes();

  std::atomic<bool> sampling{true};
  std::atomic<std::size_t> peak_rss{0};
  std::atomic<double> peak_buffered{0};
  std::thread sampler([&] {
    while (sampling) {
      peak_rss = std::max(peak_rss.load(), server.RssBytes());
      peak_buffered = std::max(peak_buffered.load(),
                               Metric(server.metrics_port(), "pimgate_gateway_buffered_bytes"));
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });

  GenuineResult genuine;
  {
    Flood flood(server.gateway_port(), flood_sources, kHostileConnections);
    // The flood takes the budget first: all its connections opened, a second to fill.
    const auto deadline = Clock::now() + std::chrono::seconds(20);
    while (flood.connects() < static_cast<uint64_t>(kHostileConnections) &&
           Clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    std::this_thread::sleep_for(std::chrono::seconds(1));
    RunGenuine(server.gateway_port(), std::chrono::seconds(6), genuine, kMinGenuineRounds);
    ::testing::Test::RecordProperty("flood_connects", static_cast<int>(flood.connects()));
    ::testing::Test::RecordProperty("flood_closed_by_server",
                                    static_cast<int>(flood.closed_by_server()));
  }
  const double evicted =
      Metric(server.metrics_port(), R"(pimgate_gateway_refusals_total{reason="evicted"})");
  const double over_budget =
      Metric(server.metrics_port(), R"(pimgate_gateway_refusals_total{reason="buffer_budget"})") +
      Metric(server.metrics_port(),
             R"(pimgate_gateway_refusals_total{reason="client_buffer_budget"})");
  const double client_connections = Metric(
      server.metrics_port(), R"(pimgate_gateway_refusals_total{reason="client_connections"})");
  sampling = false;
  sampler.join();
  const std::size_t hwm = server.RssBytes("VmHWM:");
  const std::string log = server.StopAndReadLog();

  // Every genuine request answered 200.
  EXPECT_TRUE(genuine.failures.empty())
      << genuine.failures.size() << " genuine requests failed, first: " << genuine.failures.front();
  EXPECT_GT(genuine.legacy_small, 20);
  EXPECT_GT(genuine.legacy_large, 2);
  EXPECT_GT(genuine.platform, 20);
  // Memory: the budget, the idle process, the stated margin. Under AddressSanitizer or
  // ThreadSanitizer pimgate's RSS also holds the sanitizer's shadow memory and quarantine of
  // freed blocks (hundreds of MiB): the bound is checked by the normal build only.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  constexpr bool kRssMeaningful = false;
#else
  constexpr bool kRssMeaningful = true;
#endif
  const std::size_t bound =
      idle_rss + kMaxBuffered + kMaxConnections * kPerConnectionMargin + kFixedMargin;
  if (kRssMeaningful) {
    EXPECT_LE(std::max(peak_rss.load(), hwm), bound)
        << "peak RSS " << (std::max(peak_rss.load(), hwm) >> 20) << " MiB, idle "
        << (idle_rss >> 20) << " MiB, bound " << (bound >> 20) << " MiB";
  }
  // Positive controls: the flood did take what it could and was refused, under its own
  // addresses. From many addresses it fills the shared half of the budget (4 MiB bodies do not
  // fit in the small shares); from one address it gets no more than that address's share and
  // its max_connections_per_client, and the rest of its connections are closed at accept.
  EXPECT_LE(peak_buffered.load(), static_cast<double>(kMaxBuffered));
  if (flood_sources.size() > 1) {
    EXPECT_GE(peak_buffered.load(), static_cast<double>(kMaxBuffered / 4));
    EXPECT_GT(evicted + over_budget, 0);
  } else {
    EXPECT_GT(peak_buffered.load(), static_cast<double>(kBodyLimit / 2));
    EXPECT_LE(peak_buffered.load(), static_cast<double>(kMaxBuffered / 4));
    EXPECT_GT(client_connections, 0);
  }
  // One line per address and interval names the flood's addresses (the busiest ten, then a
  // count of the others).
  const std::string refusal_lines = LinesWith(log, " in the last ");
  EXPECT_TRUE(std::any_of(flood_sources.begin(), flood_sources.end(),
                          [&](const std::string& source) {
                            return absl::StrContains(refusal_lines,
                                                     "from " + source + " in the last");
                          }))
      << refusal_lines;
  // ... and never the genuine sender's address.
  EXPECT_FALSE(absl::StrContains(log, "from 127.0.0.1 in the last"))
      << LinesWith(log, "from 127.0.0.1 in the last");

  std::sort(genuine.latencies_ms.begin(), genuine.latencies_ms.end());
  auto percentile = [&](double p) {
    return genuine.latencies_ms.empty()
               ? 0
               : genuine
                     .latencies_ms[static_cast<std::size_t>(p * (genuine.latencies_ms.size() - 1))];
  };
  ::testing::Test::RecordProperty("idle_rss_mib", static_cast<int>(idle_rss >> 20));
  ::testing::Test::RecordProperty("peak_rss_mib",
                                  static_cast<int>(std::max(peak_rss.load(), hwm) >> 20));
  ::testing::Test::RecordProperty("peak_buffered_mib",
                                  static_cast<int>(peak_buffered.load()) >> 20);
  ::testing::Test::RecordProperty("genuine_p50_ms", static_cast<int>(percentile(0.5)));
  ::testing::Test::RecordProperty("genuine_p99_ms", static_cast<int>(percentile(0.99)));
  ::testing::Test::RecordProperty("genuine_max_ms", static_cast<int>(percentile(1.0)));
  std::printf(
      "flood from %zu address(es): idle RSS %zu MiB, peak %zu MiB (bound %zu MiB), peak buffered "
      "%.1f MiB; refusals evicted=%.0f over_budget=%.0f client_connections=%.0f; genuine %d small "
      "+ %d large legacy, %d platform (%d x 429), latency p50 %.1f ms p99 %.1f ms max %.1f ms\n",
      flood_sources.size(), idle_rss >> 20, std::max(peak_rss.load(), hwm) >> 20, bound >> 20,
      peak_buffered.load() / kMiB, evicted, over_budget, client_connections, genuine.legacy_small,
      genuine.legacy_large, genuine.platform, genuine.platform_429, percentile(0.5),
      percentile(0.99), percentile(1.0));
}

TEST(BodyFlood, FromManyAddressesRssStaysBoundedAndThePimIsServed) {
  std::vector<std::string> sources;
  for (int i = 2; i < 66; ++i) sources.push_back(absl::StrCat("127.0.0.", i));  // 16 each
  FloodWhileTheGenuineSenderPosts(sources);
}

TEST(BodyFlood, FromOneAddressRssStaysBoundedAndThePimIsServed) {
  FloodWhileTheGenuineSenderPosts({"127.0.0.2"});
}

}  // namespace
}  // namespace pimgate
