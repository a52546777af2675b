// TestHttpServer: Beast HTTP(S) on its own io thread, one coroutine per connection, keep-alive,
// answers from the test's handler (optionally after a delay).
#include "tests/testing/test_http_server.h"

// Boost.Asio 1.74's awaitable.hpp uses std::exchange without including <utility>.
// clang-format off
#include <utility>
// clang-format on

#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <future>
#include <map>
#include <set>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/testing/test_env.h"

namespace pimgate::testing {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;

}  // namespace

std::string TestHttpServer::Request::Header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (absl::EqualsIgnoreCase(key, absl::string_view(name.data(), name.size()))) return value;
  }
  return "";
}

class TestHttpServer::Impl {
 public:
  Impl(Options options, Handler handler)
      : options_(std::move(options)), handler_(std::move(handler)) {
    if (options_.tls) {
      cert_ = MakeSelfSignedCert(dir_.path());
      ssl_context_.use_certificate_chain_file(cert_.cert_file);
      ssl_context_.use_private_key_file(cert_.key_file, ssl::context::pem);
    }
    thread_ = std::thread([this] { ioc_.run(); });
    std::promise<void> opened;
    net::post(ioc_, [this, &opened] {
      Listen();
      opened.set_value();
    });
    opened.get_future().wait();
  }

  ~Impl() {
    std::promise<void> closed;
    net::post(ioc_, [this, &closed] {
      beast::error_code ignored;
      if (acceptor_ != nullptr) acceptor_->close(ignored);
      for (auto& [id, close] : sessions_) close();
      for (net::steady_timer* timer : timers_) timer->cancel();
      closed.set_value();
    });
    closed.get_future().wait();
    work_.reset();
    thread_.join();
  }

  uint16_t port() const { return port_; }
  std::string base_url() const {
    return absl::StrCat(options_.tls ? "https" : "http", "://127.0.0.1:", port_.load());
  }
  const std::string& cert_file() const { return cert_.cert_file; }
  int connections_accepted() const { return connections_.load(); }

 private:
  void Listen() {
    acceptor_ = std::make_shared<tcp::acceptor>(ioc_);
    beast::error_code ec;
    const tcp::endpoint endpoint(net::ip::make_address("127.0.0.1"), 0);
    acceptor_->open(endpoint.protocol(), ec);
    if (!ec) acceptor_->bind(endpoint, ec);
    if (!ec) acceptor_->listen(net::socket_base::max_listen_connections, ec);
    if (ec) {
      ADD_FAILURE() << "TestHttpServer: cannot listen on 127.0.0.1:0: " << ec.message();
      return;
    }
    port_ = acceptor_->local_endpoint().port();
    net::co_spawn(ioc_, Accept(acceptor_), net::detached);
  }

  net::awaitable<void> Accept(std::shared_ptr<tcp::acceptor> acceptor) {
    for (;;) {
      beast::error_code ec;
      tcp::socket socket =
          co_await acceptor->async_accept(net::redirect_error(net::use_awaitable, ec));
      if (ec) co_return;
      ++connections_;
      net::co_spawn(ioc_, Session(std::move(socket)), net::detached);
    }
  }

  net::awaitable<void> Session(tcp::socket socket) {
    const uint64_t id = next_session_++;
    struct Unregister {
      Impl* impl;
      uint64_t id;
      ~Unregister() { impl->sessions_.erase(id); }
    } unregister{this, id};
    beast::error_code ec;
    if (options_.tls) {
      beast::ssl_stream<beast::tcp_stream> stream(std::move(socket), ssl_context_);
      sessions_[id] = [&stream] {
        beast::error_code ignored;
        beast::get_lowest_layer(stream).socket().close(ignored);
      };
      co_await stream.async_handshake(ssl::stream_base::server,
                                      net::redirect_error(net::use_awaitable, ec));
      if (ec) co_return;
      co_await Serve(stream);
    } else {
      beast::tcp_stream stream(std::move(socket));
      sessions_[id] = [&stream] {
        beast::error_code ignored;
        stream.socket().close(ignored);
      };
      co_await Serve(stream);
    }
  }

  template <typename Stream>
  net::awaitable<void> Serve(Stream& stream) {
    beast::flat_buffer buffer;
    for (;;) {
      beast::error_code ec;
      http::request_parser<http::string_body> parser;
      parser.body_limit(options_.max_body);
      co_await http::async_read(stream, buffer, parser,
                                net::redirect_error(net::use_awaitable, ec));
      http::response<http::string_body> response;
      bool keep_alive = true;
      if (ec == http::error::body_limit) {
        response = http::response<http::string_body>{http::status::payload_too_large, 11};
        keep_alive = false;
      } else if (ec) {
        co_return;
      } else {
        http::request<http::string_body> raw = parser.release();
        keep_alive = raw.keep_alive();
        Request request;
        request.method = std::string(raw.method_string());
        request.target = std::string(raw.target());
        for (const auto& field : raw) {
          request.headers.emplace_back(std::string(field.name_string()),
                                       std::string(field.value()));
        }
        request.body = std::move(raw.body());
        Response answer = handler_(request);
        if (answer.delay.count() > 0) {
          net::steady_timer timer(ioc_, answer.delay);
          timers_.insert(&timer);
          beast::error_code ignored;
          co_await timer.async_wait(net::redirect_error(net::use_awaitable, ignored));
          timers_.erase(&timer);
        }
        response = http::response<http::string_body>{static_cast<http::status>(answer.status), 11};
        for (const auto& [name, value] : answer.headers) response.set(name, value);
        response.body() = std::move(answer.body);
      }
      response.keep_alive(keep_alive);
      response.prepare_payload();
      co_await http::async_write(stream, response, net::redirect_error(net::use_awaitable, ec));
      if (ec || !keep_alive) co_return;
    }
  }

  const Options options_;
  const Handler handler_;
  TempDir dir_;
  CertFiles cert_;
  ssl::context ssl_context_{ssl::context::tls_server};
  net::io_context ioc_{1};
  net::executor_work_guard<net::io_context::executor_type> work_ = net::make_work_guard(ioc_);
  std::thread thread_;
  std::atomic<uint16_t> port_{0};
  std::atomic<int> connections_{0};
  // io thread only.
  std::shared_ptr<tcp::acceptor> acceptor_;
  std::map<uint64_t, std::function<void()>> sessions_;
  uint64_t next_session_ = 0;
  std::set<net::steady_timer*> timers_;
};

TestHttpServer::TestHttpServer(Options options, Handler handler)
    : impl_(std::make_unique<Impl>(std::move(options), std::move(handler))) {}
TestHttpServer::~TestHttpServer() = default;
uint16_t TestHttpServer::port() const { return impl_->port(); }
std::string TestHttpServer::base_url() const { return impl_->base_url(); }
const std::string& TestHttpServer::cert_file() const { return impl_->cert_file(); }
int TestHttpServer::connections_accepted() const { return impl_->connections_accepted(); }

}  // namespace pimgate::testing
