// HttpListener on real sockets (127.0.0.1 and ::1, port 0): the connection limit and its
// refusals, per-client admission and its release, TCP_NODELAY on what it hands over, bind errors,
// Stop. Descriptor exhaustion is tried on the gateway and the metrics endpoint that use it
// (tests/gateway/hostile_client_test.cc).
#include "http/listener.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <condition_variable>
#include <iterator>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/testing/typed_values.h"

namespace pimgate {
namespace {

namespace net = boost::asio;
using tcp = net::ip::tcp;

// A TCP client connection from this process.
class Client {
 public:
  Client(const tcp::endpoint& server) {
    fd_ = socket(server.protocol().family(), SOCK_STREAM, 0);
    if (fd_ < 0) return;
    if (connect(fd_, server.data(), static_cast<socklen_t>(server.size())) != 0) {
      close(fd_);
      fd_ = -1;
    }
  }
  ~Client() {
    if (fd_ >= 0) close(fd_);
  }
  Client(Client&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  bool ok() const { return fd_ >= 0; }
  // True when the server closed the connection within `timeout` (without sending anything).
  bool ClosedByServerWithin(std::chrono::milliseconds timeout) const {
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return false;
    char c;
    return recv(fd_, &c, 1, 0) <= 0;
  }

 private:
  int fd_ = -1;
};

// Counts per client and refuses past `per_client`, recording every call.
class CountingAdmission : public ClientAdmission {
 public:
  explicit CountingAdmission(int per_client) : per_client_(per_client) {}
  bool Admit(const std::string& client) override {
    std::lock_guard<std::mutex> lock(mu_);
    admitted_clients_.push_back(client);
    if (open_ >= per_client_) return false;
    ++open_;
    return true;
  }
  void Release(const std::string& client) override {
    std::lock_guard<std::mutex> lock(mu_);
    released_clients_.push_back(client);
    --open_;
  }
  void RefusedOverLimit(const std::string& client) override {
    std::lock_guard<std::mutex> lock(mu_);
    over_limit_clients_.push_back(client);
  }
  int open() const {
    std::lock_guard<std::mutex> lock(mu_);
    return open_;
  }
  std::vector<std::string> admitted() const {
    std::lock_guard<std::mutex> lock(mu_);
    return admitted_clients_;
  }
  std::vector<std::string> released() const {
    std::lock_guard<std::mutex> lock(mu_);
    return released_clients_;
  }
  std::vector<std::string> over_limit() const {
    std::lock_guard<std::mutex> lock(mu_);
    return over_limit_clients_;
  }

 private:
  const int per_client_;
  mutable std::mutex mu_;
  int open_ = 0;
  std::vector<std::string> admitted_clients_, released_clients_, over_limit_clients_;
};

// A listener on one I/O thread whose sessions do nothing but hold their socket and slot until
// the test drops them.
class ListenerFixture {
 public:
  explicit ListenerFixture(ListenerOptions options, const std::string& address = "127.0.0.1") {
    listener_.emplace(
        ioc_, std::move(options), [this](tcp::socket socket, HttpListener::Slot slot) {
          int nodelay = 0;
          socklen_t size = sizeof(nodelay);
          getsockopt(socket.native_handle(), IPPROTO_TCP, TCP_NODELAY, &nodelay, &size);
          std::lock_guard<std::mutex> lock(mu_);
          held_.push_back({std::move(socket), std::move(slot), nodelay != 0});
          cv_.notify_all();
        });
    status_ = listener_->Listen(testing::ListenAt(absl::StrCat(
        address.find(':') != std::string::npos ? "[" + address + "]" : address, ":0")));
    if (status_.ok()) {
      endpoint_ = tcp::endpoint(net::ip::make_address(address), listener_->port());
      thread_ = std::thread([this] { ioc_.run(); });
    }
  }
  ~ListenerFixture() {
    listener_->Stop();
    ioc_.stop();
    if (thread_.joinable()) thread_.join();
    listener_.reset();
  }

  const absl::Status& status() const { return status_; }
  HttpListener& listener() { return *listener_; }
  const tcp::endpoint& endpoint() const { return endpoint_; }

  // Waits until the sessions hold `n` connections.
  bool WaitHeld(std::size_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(10), [&] { return held_.size() >= n; });
  }
  std::size_t held() {
    std::lock_guard<std::mutex> lock(mu_);
    return held_.size();
  }
  bool all_nodelay() {
    std::lock_guard<std::mutex> lock(mu_);
    for (const Held& h : held_) {
      if (!h.nodelay) return false;
    }
    return true;
  }
  std::string client_of(std::size_t i) {
    std::lock_guard<std::mutex> lock(mu_);
    return std::next(held_.begin(), static_cast<long>(i))->slot.client();
  }
  // Ends the oldest session: its socket closes and its slot is given up.
  void DropOne() {
    std::lock_guard<std::mutex> lock(mu_);
    held_.erase(held_.begin());
  }

 private:
  struct Held {
    tcp::socket socket;
    HttpListener::Slot slot;
    bool nodelay;
  };
  net::io_context ioc_{1};
  std::optional<HttpListener> listener_;
  absl::Status status_;
  tcp::endpoint endpoint_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::list<Held> held_;  // a list: Slots cannot be move-assigned
};

ListenerOptions Options(std::size_t max_connections, ClientAdmission* admission = nullptr) {
  ListenerOptions options;
  options.name = "test";
  options.listen_key = "test.listen";
  options.max_connections = max_connections;
  options.max_connections_name = "test.max_connections";
  options.admission = admission;
  return options;
}

TEST(HttpListener, HandsOverConnectionsWithNoDelayUpToTheLimitThenRefusesThem) {
  ListenerFixture fixture(Options(2));
  ASSERT_TRUE(fixture.status().ok()) << fixture.status();
  std::vector<Client> clients;
  clients.emplace_back(fixture.endpoint());
  clients.emplace_back(fixture.endpoint());
  ASSERT_TRUE(fixture.WaitHeld(2));
  EXPECT_TRUE(fixture.all_nodelay());
  EXPECT_EQ(fixture.listener().open_connections(), 2u);
  EXPECT_EQ(fixture.client_of(0), "");  // no admission: no client key is worked out

  // The third is closed at accept and counted; the two held stay open.
  Client third(fixture.endpoint());
  ASSERT_TRUE(third.ok());
  EXPECT_TRUE(third.ClosedByServerWithin(std::chrono::seconds(10)));
  EXPECT_EQ(fixture.listener().refused_connections(), 1u);
  EXPECT_EQ(fixture.held(), 2u);

  // A session that ends gives its place back: the next connection is handed over.
  fixture.DropOne();
  EXPECT_EQ(fixture.listener().open_connections(), 1u);
  Client fourth(fixture.endpoint());
  ASSERT_TRUE(fixture.WaitHeld(2));
  EXPECT_EQ(fixture.listener().open_connections(), 2u);
  EXPECT_EQ(fixture.listener().refused_connections(), 1u);
}

TEST(HttpListener, ClientAdmissionDecidesPerAddressAndIsReleasedWithTheSlot) {
  CountingAdmission admission(/*per_client=*/2);
  ListenerFixture fixture(Options(3, &admission));
  ASSERT_TRUE(fixture.status().ok()) << fixture.status();
  std::vector<Client> clients;
  clients.emplace_back(fixture.endpoint());
  clients.emplace_back(fixture.endpoint());
  ASSERT_TRUE(fixture.WaitHeld(2));
  EXPECT_EQ(fixture.client_of(0), "127.0.0.1");
  // Refused by the admission: closed at accept, not a max_connections refusal.
  Client third(fixture.endpoint());
  EXPECT_TRUE(third.ClosedByServerWithin(std::chrono::seconds(10)));
  EXPECT_EQ(fixture.listener().refused_connections(), 0u);
  EXPECT_EQ(admission.admitted().size(), 3u);
  EXPECT_EQ(admission.open(), 2);
  EXPECT_TRUE(admission.released().empty());  // a refused admission is not released

  // A session that ends releases its client's count.
  fixture.DropOne();
  EXPECT_EQ(admission.released(), std::vector<std::string>{"127.0.0.1"});
  EXPECT_EQ(admission.open(), 1);
  EXPECT_TRUE(admission.over_limit().empty());
}

TEST(HttpListener, ConnectionsOverTheLimitAreReportedToTheAdmissionWithTheirAddress) {
  CountingAdmission admission(/*per_client=*/10);
  ListenerFixture fixture(Options(1, &admission));
  ASSERT_TRUE(fixture.status().ok()) << fixture.status();
  Client first(fixture.endpoint());
  ASSERT_TRUE(fixture.WaitHeld(1));
  Client second(fixture.endpoint());
  EXPECT_TRUE(second.ClosedByServerWithin(std::chrono::seconds(10)));
  EXPECT_EQ(fixture.listener().refused_connections(), 1u);
  EXPECT_EQ(admission.over_limit(), std::vector<std::string>{"127.0.0.1"});
  EXPECT_EQ(admission.admitted().size(), 1u);  // the refused one was never offered
}

TEST(HttpListener, IPv6ClientsAreCountedByTheirSlash64) {
  CountingAdmission admission(/*per_client=*/10);
  ListenerFixture fixture(Options(4, &admission), "::1");
  if (!fixture.status().ok()) GTEST_SKIP() << "no IPv6 loopback: " << fixture.status();
  Client client(fixture.endpoint());
  ASSERT_TRUE(fixture.WaitHeld(1));
  EXPECT_EQ(fixture.client_of(0), "::/64");
}

TEST(HttpListener, AnAddressInUseIsAnErrorNamingTheKey) {
  ListenerFixture first(Options(4));
  ASSERT_TRUE(first.status().ok()) << first.status();
  net::io_context ioc;
  HttpListener second(ioc, Options(4), [](tcp::socket, HttpListener::Slot) {});
  const std::string busy = absl::StrCat("localhost:", first.endpoint().port());
  const absl::Status status = second.Listen(testing::ListenAt(busy));
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(status.message(),
            absl::StrCat("test.listen: cannot listen on ", busy, ": Address already in use"));
}

TEST(HttpListener, StopClosesTheListeningSocketAndLeavesConnectionsToTheirSessions) {
  ListenerFixture fixture(Options(4));
  ASSERT_TRUE(fixture.status().ok()) << fixture.status();
  Client held(fixture.endpoint());
  ASSERT_TRUE(fixture.WaitHeld(1));
  fixture.listener().Stop();
  fixture.listener().Stop();  // idempotent
  // The listening socket closes on the listener's strand: new connections are soon refused by
  // the kernel (ECONNREFUSED).
  bool refused = false;
  for (int i = 0; i < 500 && !refused; ++i) {
    refused = !Client(fixture.endpoint()).ok();
    if (!refused) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(refused);
  EXPECT_EQ(fixture.held(), 1u);
  EXPECT_FALSE(held.ClosedByServerWithin(std::chrono::milliseconds(0)));
  EXPECT_EQ(fixture.listener().open_connections(), 1u);
}

}  // namespace
}  // namespace pimgate
