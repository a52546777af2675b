// The accept loop shared by pimgate's HTTP endpoints: limits, admission, TCP_NODELAY, and the
// pause after a failed accept().
#include "http/listener.h"

#include <algorithm>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <utility>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace pimgate {
namespace {

namespace net = boost::asio;
using tcp = net::ip::tcp;
using error_code = boost::system::error_code;

std::string ClientKeyOf(const tcp::endpoint& endpoint) {
  const net::ip::address address = endpoint.address();
  if (!address.is_v6()) return address.to_string();
  const net::ip::address_v6 v6 = address.to_v6();
  if (v6.is_v4_mapped()) return net::ip::make_address_v4(net::ip::v4_mapped, v6).to_string();
  net::ip::address_v6::bytes_type bytes = v6.to_bytes();
  std::fill(bytes.begin() + 8, bytes.end(), 0);
  return net::ip::address_v6(bytes).to_string() + "/64";
}

// Whether `n` is 1, 2, 4, 8 ...: the occurrences worth a log line.
bool PowerOfTwo(uint64_t n) { return n != 0 && (n & (n - 1)) == 0; }

}  // namespace

struct HttpListener::Shared {
  std::atomic<std::size_t> open{0};
  std::atomic<uint64_t> refused{0};
  ClientAdmission* admission = nullptr;
};

HttpListener::Slot::Slot(Slot&& other) noexcept
    : shared_(std::move(other.shared_)),
      client_(std::move(other.client_)),
      admitted_(std::exchange(other.admitted_, false)) {}

HttpListener::Slot::~Slot() { GiveBack(); }

void HttpListener::Slot::GiveBack() {
  if (shared_ == nullptr) return;  // moved from, or given back already
  shared_->open.fetch_sub(1, std::memory_order_relaxed);
  if (std::exchange(admitted_, false)) shared_->admission->Release(client_);
  shared_.reset();
}

HttpListener::HttpListener(net::io_context& ioc, ListenerOptions options,
                           OnConnection on_connection)
    : ioc_(ioc),
      options_(std::move(options)),
      on_connection_(std::move(on_connection)),
      shared_(std::make_shared<Shared>()),
      acceptor_(net::make_strand(ioc)),
      retry_(acceptor_.get_executor()) {
  shared_->admission = options_.admission;
}

HttpListener::~HttpListener() = default;

absl::Status HttpListener::Listen(const ListenAddress& address) {
  tcp::endpoint endpoint;
  switch (address.kind()) {
    case ListenAddress::Kind::kIpv4:
      endpoint = tcp::endpoint(net::ip::address_v4(address.ipv4_bytes()), address.port());
      break;
    case ListenAddress::Kind::kIpv6:
      endpoint = tcp::endpoint(net::ip::address_v6(address.ipv6_bytes(), address.scope_id()),
                               address.port());
      break;
    case ListenAddress::Kind::kUnix:
      return absl::InvalidArgumentError(absl::StrCat(options_.listen_key, ": ", address.text(),
                                                     " is a unix socket; HTTP needs host:port"));
  }
  error_code ec;
  acceptor_.open(endpoint.protocol(), ec);
  if (!ec) acceptor_.set_option(net::socket_base::reuse_address(true), ec);
  // Set on the listening socket as well: Linux copies it to every socket it accepts, so no
  // connection exists, even for the instant between accept(2) and Admit(), without it.
  if (!ec) acceptor_.set_option(tcp::no_delay(true), ec);
  if (!ec) acceptor_.bind(endpoint, ec);
  if (!ec) acceptor_.listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    error_code ignored;
    acceptor_.close(ignored);
    return absl::UnavailableError(absl::StrCat(options_.listen_key, ": cannot listen on ",
                                               address.text(), ": ", ec.message()));
  }
  port_.store(acceptor_.local_endpoint().port(), std::memory_order_relaxed);
  DoAccept();
  return absl::OkStatus();
}

void HttpListener::Stop() {
  if (stopping_.exchange(true)) return;
  net::post(acceptor_.get_executor(), [this] {
    error_code ignored;
    acceptor_.close(ignored);
    retry_.cancel();
  });
}

std::size_t HttpListener::open_connections() const {
  return shared_->open.load(std::memory_order_relaxed);
}

uint64_t HttpListener::refused_connections() const {
  return shared_->refused.load(std::memory_order_relaxed);
}

void HttpListener::DoAccept() {
  acceptor_.async_accept(net::make_strand(ioc_), [this](error_code ec, tcp::socket socket) {
    OnAccept(ec, std::move(socket));
  });
}

void HttpListener::OnAccept(const error_code& ec, tcp::socket socket) {
  if (ec == net::error::operation_aborted || stopping_.load()) return;
  if (ec) return AcceptFailed(ec);
  Admit(std::move(socket));
  DoAccept();
}

void HttpListener::Admit(tcp::socket socket) {
  const std::size_t open = shared_->open.fetch_add(1, std::memory_order_relaxed) + 1;
  std::string client;
  if (options_.admission != nullptr) {
    error_code endpoint_ec;
    const tcp::endpoint peer = socket.remote_endpoint(endpoint_ec);
    client = endpoint_ec ? std::string("unknown") : ClientKeyOf(peer);
  }
  // A refused connection gives its place back before its socket closes: once the client sees the
  // close, the counts no longer include it.
  error_code ignored;
  if (open > options_.max_connections) {
    // Over the limit: close at once, so no client can exhaust memory or descriptors.
    shared_->open.fetch_sub(1, std::memory_order_relaxed);
    const uint64_t refused = shared_->refused.fetch_add(1, std::memory_order_relaxed) + 1;
    if (PowerOfTwo(refused)) {
      spdlog::warn("{}: {} ({}) reached: refused {} connection(s) so far", options_.name,
                   options_.max_connections_name, options_.max_connections, refused);
    }
    if (options_.admission != nullptr) options_.admission->RefusedOverLimit(client);
    socket.close(ignored);
    return;
  }
  Slot slot(shared_, std::move(client));
  if (options_.admission != nullptr) {
    slot.admitted_ = options_.admission->Admit(slot.client());
    if (!slot.admitted_) {
      slot.GiveBack();
      socket.close(ignored);
      return;
    }
  }
  // Answers are written as they are ready, often in more than one segment (a TLS record, then
  // the next): with Nagle's algorithm on, the second waits for the client's delayed ACK (about
  // 40 ms on Linux) before it leaves. Every answer is complete when written, so send at once.
  error_code nodelay_ec;
  socket.set_option(tcp::no_delay(true), nodelay_ec);
  if (nodelay_ec) {
    spdlog::debug("{}: cannot set TCP_NODELAY: {}", options_.name, nodelay_ec.message());
  }
  on_connection_(std::move(socket), std::move(slot));
}

void HttpListener::AcceptFailed(const error_code& ec) {
  const uint64_t failures = ++accept_failures_;
  if (PowerOfTwo(failures)) {
    spdlog::warn("{}: accept failed ({} time(s) so far): {}", options_.name, failures,
                 ec.message());
  }
  // Asio retries the errors that concern one connection (ECONNABORTED, EPROTO) itself: what
  // reaches here concerns the process (out of descriptors or memory) or the listening socket, and
  // accepting again at once would only fail again, in a loop. Pause, then try again.
  retry_.expires_after(kAcceptRetryDelay);
  retry_.async_wait([this](const error_code& wait_ec) {
    if (!wait_ec && !stopping_.load()) DoAccept();
  });
}

}  // namespace pimgate
