// The metrics endpoint: a small Boost.Beast HTTP/1.1 server on one thread, with keep-alive for
// scrapers, every limit from MetricsServerOptions and every error answered in Answer().
#include "metrics/metrics_server.h"

#include <atomic>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <optional>
#include <string_view>
#include <thread>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "spdlog/spdlog.h"

namespace pimgate {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

constexpr char kExpositionContentType[] = "text/plain; version=0.0.4; charset=utf-8";

// metrics.listen as the loader parsed it (common/net_address.h): an IP address and a port.
absl::StatusOr<tcp::endpoint> EndpointOf(const ListenAddress& listen) {
  switch (listen.kind()) {
    case ListenAddress::Kind::kIpv4:
      return tcp::endpoint(net::ip::address_v4(listen.ipv4_bytes()), listen.port());
    case ListenAddress::Kind::kIpv6:
      return tcp::endpoint(net::ip::address_v6(listen.ipv6_bytes(), listen.scope_id()),
                           listen.port());
    case ListenAddress::Kind::kUnix:
      break;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("metrics.listen: ", listen.text(),
                   " is a unix socket; the metrics endpoint needs host:port"));
}

}  // namespace

class MetricsServer::Impl {
 public:
  Impl(MetricsServerOptions options, const MetricsRegistry* registry)
      : options_(std::move(options)),
        registry_(registry),
        ioc_(std::make_unique<net::io_context>(1)) {
    acceptor_.emplace(net::make_strand(*ioc_));
    refresh_.emplace(acceptor_->get_executor());
  }

  ~Impl() { Stop(); }

  absl::Status Start() {
    absl::StatusOr<tcp::endpoint> endpoint = EndpointOf(options_.listen);
    if (!endpoint.ok()) return endpoint.status();
    beast::error_code ec;
    acceptor_->open(endpoint->protocol(), ec);
    if (!ec) acceptor_->set_option(net::socket_base::reuse_address(true), ec);
    if (!ec) acceptor_->bind(*endpoint, ec);
    if (!ec) acceptor_->listen(net::socket_base::max_listen_connections, ec);
    if (ec) {
      return absl::UnavailableError(absl::StrCat("metrics.listen: cannot listen on ",
                                                 options_.listen.text(), ": ", ec.message()));
    }
    port_ = acceptor_->local_endpoint().port();
    DoAccept();
    ScheduleRefresh();
    thread_ = std::thread([this] { ioc_->run(); });
    return absl::OkStatus();
  }

  // Once the thread is gone nothing runs handlers: destroy the I/O objects before their
  // io_context, then the io_context, whose queued handlers own the sessions (closing their
  // sockets) and reference this Impl, which is still whole.
  void Stop() {
    if (stopped_.exchange(true)) return;
    if (thread_.joinable()) {
      ioc_->stop();
      thread_.join();
    }
    refresh_.reset();
    acceptor_.reset();
    ioc_.reset();
  }

  // The whole routing table.
  http::response<http::string_body> Answer(const http::request<http::empty_body>& req) {
    const std::string_view target(req.target().data(), req.target().size());
    const std::string_view path = target.substr(0, target.find('?'));
    http::response<http::string_body> res;
    res.version(11);
    res.set(http::field::server, "pimgate");
    res.set(http::field::cache_control, "no-store");
    const bool known = path == "/metrics" || path == "/healthz" || path == "/readyz";
    if (!known) {
      return Text(std::move(res), http::status::not_found, "not found\n");
    }
    if (req.method() != http::verb::get) {
      res.set(http::field::allow, "GET");
      return Text(std::move(res), http::status::method_not_allowed, "use GET\n");
    }
    if (path == "/metrics") {
      res.result(http::status::ok);
      res.set(http::field::content_type, kExpositionContentType);
      res.body() = registry_->Render();
      return res;
    }
    if (path == "/healthz") return Text(std::move(res), http::status::ok, "ok\n");
    const std::vector<MetricsRegistry::NotReady> not_ready = registry_->CheckReadiness();
    res.set(http::field::content_type, "application/json");
    if (not_ready.empty()) {
      res.result(http::status::ok);
      res.body() = R"({"ready":true})";
      return res;
    }
    std::string reasons;
    for (const MetricsRegistry::NotReady& n : not_ready) {
      absl::StrAppend(&reasons, reasons.empty() ? "" : ",", "\"", JsonEscape(n.component), "\":\"",
                      JsonEscape(n.reason), "\"");
    }
    res.result(http::status::service_unavailable);
    res.body() = absl::StrCat(R"({"ready":false,"reasons":{)", reasons, "}}");
    return res;
  }

  static http::response<http::string_body> Text(http::response<http::string_body> res,
                                                http::status status, std::string body) {
    res.result(status);
    res.set(http::field::content_type, "text/plain; charset=utf-8");
    res.body() = std::move(body);
    return res;
  }

  // Releases a connection slot when the session that holds it goes.
  class ConnectionSlot {
   public:
    explicit ConnectionSlot(Impl* server) : server_(server) {}
    ConnectionSlot(ConnectionSlot&& other) noexcept
        : server_(std::exchange(other.server_, nullptr)) {}
    ConnectionSlot& operator=(ConnectionSlot&&) = delete;
    ~ConnectionSlot() {
      if (server_ != nullptr) server_->connections_.fetch_sub(1, std::memory_order_relaxed);
    }

   private:
    Impl* server_;
  };

  void DoAccept();
  void ScheduleRefresh() {
    refresh_->expires_after(options_.readiness_refresh);
    refresh_->async_wait([this](beast::error_code ec) {
      if (ec) return;
      registry_->CheckReadiness();  // for the latching checks; the answer is not needed
      ScheduleRefresh();
    });
  }

  const MetricsServerOptions options_;
  const MetricsRegistry* const registry_;
  std::unique_ptr<net::io_context> ioc_;
  std::optional<tcp::acceptor> acceptor_;
  std::optional<net::steady_timer> refresh_;
  uint16_t port_ = 0;
  std::atomic<std::size_t> connections_{0};
  std::atomic<bool> stopped_{false};
  std::thread thread_;
};

namespace {

// One connection: read a request, answer it, repeat while the client keeps the connection.
class MetricsSession : public std::enable_shared_from_this<MetricsSession> {
 public:
  MetricsSession(MetricsServer::Impl& server, MetricsServer::Impl::ConnectionSlot slot,
                 tcp::socket socket)
      : server_(server), slot_(std::move(slot)), stream_(std::move(socket)) {}

  void DoRead() {
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(server_.options_.header_limit));
    parser_->body_limit(0);
    stream_.expires_after(server_.options_.read_timeout);
    http::async_read(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, std::size_t) { self->OnRead(ec); });
  }

 private:
  void OnRead(beast::error_code ec) {
    if (ec == http::error::end_of_stream || ec == beast::error::timeout || ec == net::error::eof ||
        ec == net::error::connection_reset) {
      return Close();
    }
    if (ec == http::error::header_limit) {
      return Refuse(http::status::request_header_fields_too_large, "headers too large\n");
    }
    if (ec == http::error::body_limit || ec == http::error::unexpected_body) {
      return Refuse(http::status::payload_too_large, "requests take no body\n");
    }
    if (ec) return Refuse(http::status::bad_request, "malformed request\n");
    auto res = std::make_shared<http::response<http::string_body>>(server_.Answer(parser_->get()));
    res->keep_alive(parser_->get().keep_alive());
    res->prepare_payload();
    Write(std::move(res));
  }

  void Refuse(http::status status, std::string body) {
    auto res = std::make_shared<http::response<http::string_body>>();
    *res = MetricsServer::Impl::Text({}, status, std::move(body));
    res->version(11);
    res->keep_alive(false);
    res->prepare_payload();
    Write(std::move(res));
  }

  void Write(std::shared_ptr<http::response<http::string_body>> res) {
    stream_.expires_after(server_.options_.write_timeout);
    http::async_write(stream_, *res,
                      [self = shared_from_this(), res](beast::error_code ec, std::size_t) {
                        if (ec || !res->keep_alive()) return self->Close();
                        self->DoRead();
                      });
  }

  void Close() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
  }

  MetricsServer::Impl& server_;
  MetricsServer::Impl::ConnectionSlot slot_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::empty_body>> parser_;
};

}  // namespace

void MetricsServer::Impl::DoAccept() {
  acceptor_->async_accept(
      net::make_strand(*ioc_), [this](beast::error_code ec, tcp::socket socket) {
        if (ec == net::error::operation_aborted || stopped_.load()) return;
        if (!ec) {
          const std::size_t open = connections_.fetch_add(1, std::memory_order_relaxed) + 1;
          ConnectionSlot slot(this);
          if (open > options_.max_connections) {
            beast::error_code ignored;
            socket.close(ignored);
          } else {
            // A probe's answer must not wait for the prober's delayed ACK (Nagle's algorithm).
            beast::error_code nodelay_ec;
            socket.set_option(tcp::no_delay(true), nodelay_ec);
            std::make_shared<MetricsSession>(*this, std::move(slot), std::move(socket))->DoRead();
          }
        } else {
          spdlog::warn("metrics: accept failed: {}", ec.message());
        }
        DoAccept();
      });
}

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(
    MetricsServerOptions options, const MetricsRegistry* registry) {
  auto impl = std::make_unique<Impl>(std::move(options), registry);
  if (absl::Status status = impl->Start(); !status.ok()) return status;
  return std::unique_ptr<MetricsServer>(new MetricsServer(std::move(impl)));
}

MetricsServer::MetricsServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
MetricsServer::~MetricsServer() { Stop(); }
void MetricsServer::Stop() { impl_->Stop(); }
uint16_t MetricsServer::port() const { return impl_->port_; }

}  // namespace pimgate
