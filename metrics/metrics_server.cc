// The metrics endpoint: a small Boost.Beast HTTP/1.1 server on one thread behind the shared
// HttpListener, with keep-alive for scrapers, every limit from MetricsServerOptions and every
// error answered in Answer().
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
#include "common/json.h"
#include "http/listener.h"
#include "http/plain_session.h"
#include "spdlog/spdlog.h"

namespace pimgate {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

constexpr char kExpositionContentType[] = "text/plain; version=0.0.4; charset=utf-8";

}  // namespace

class MetricsServer::Impl {
 public:
  Impl(MetricsServerOptions options, const MetricsRegistry* registry)
      : options_(std::move(options)),
        registry_(registry),
        ioc_(std::make_unique<net::io_context>(1)) {
    ListenerOptions listener;
    listener.name = "metrics";
    listener.listen_key = "metrics.listen";
    listener.max_connections = options_.max_connections;
    listener.max_connections_name = "the endpoint's connection limit";
    listener_.emplace(*ioc_, std::move(listener),
                      [this](tcp::socket socket, HttpListener::Slot slot) {
                        OnConnection(std::move(socket), std::move(slot));
                      });
    refresh_.emplace(net::make_strand(*ioc_));
  }

  ~Impl() { Stop(); }

  absl::Status Start() {
    if (absl::Status listening = listener_->Listen(options_.listen); !listening.ok()) {
      return listening;
    }
    port_ = listener_->port();
    ScheduleRefresh();
    thread_ = std::thread([this] { ioc_->run(); });
    return absl::OkStatus();
  }

  // Once the thread is gone nothing runs handlers: destroy the I/O objects before their
  // io_context, then the io_context, whose queued handlers own the sessions (closing their
  // sockets) and reference this Impl, which is still whole.
  void Stop() {
    if (stopped_.exchange(true)) return;
    listener_->Stop();
    if (thread_.joinable()) {
      ioc_->stop();
      thread_.join();
    }
    refresh_.reset();
    listener_.reset();
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
    // {"ready":true}, or {"ready":false,"reasons":{"<component>":"<reason>",...}}.
    const std::vector<MetricsRegistry::NotReady> not_ready = registry_->CheckReadiness();
    res.set(http::field::content_type, "application/json");
    Json body;
    body["ready"] = not_ready.empty();
    if (!not_ready.empty()) {
      Json& reasons = body["reasons"] = Json::object();
      for (const MetricsRegistry::NotReady& n : not_ready) reasons[n.component] = n.reason;
    }
    res.result(not_ready.empty() ? http::status::ok : http::status::service_unavailable);
    res.body() = JsonDump(body);
    return res;
  }

  static http::response<http::string_body> Text(http::response<http::string_body> res,
                                                http::status status, std::string body) {
    res.result(status);
    res.set(http::field::content_type, "text/plain; charset=utf-8");
    res.body() = std::move(body);
    return res;
  }

  // An admitted connection (the listener counts it against max_connections until it goes).
  void OnConnection(tcp::socket socket, HttpListener::Slot slot);
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
  // The accept loop: max_connections, TCP_NODELAY, the pause after a failed accept.
  std::optional<HttpListener> listener_;
  std::optional<net::steady_timer> refresh_;
  uint16_t port_ = 0;  // kept after Stop()
  std::atomic<bool> stopped_{false};
  std::thread thread_;
};

namespace {

// One connection: read a request, answer it, repeat while the client keeps the connection.
class MetricsSession : public PlainHttpSession<MetricsSession> {
 public:
  MetricsSession(MetricsServer::Impl& server, HttpListener::Slot slot, tcp::socket socket)
      : PlainHttpSession(std::move(slot), std::move(socket), server.options_.write_timeout),
        server_(server) {}

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
    switch (ClassifyRequestReadError(ec)) {
      case RequestReadError::kNone:
        break;
      case RequestReadError::kGone:
        return Close();
      case RequestReadError::kHeaderTooLarge:
        return Refuse(http::status::request_header_fields_too_large, "headers too large\n");
      case RequestReadError::kBodyTooLarge:
        return Refuse(http::status::payload_too_large, "requests take no body\n");
      case RequestReadError::kMalformed:
        return Refuse(http::status::bad_request, "malformed request\n");
    }
    auto res = std::make_shared<http::response<http::string_body>>(server_.Answer(parser_->get()));
    res->keep_alive(parser_->get().keep_alive());
    res->prepare_payload();
    Write(std::move(res));
  }

  void Refuse(http::status status, std::string body) {
    WriteAndClose(MetricsServer::Impl::Text({}, status, std::move(body)));
  }

  MetricsServer::Impl& server_;
  std::optional<http::request_parser<http::empty_body>> parser_;
};

}  // namespace

void MetricsServer::Impl::OnConnection(tcp::socket socket, HttpListener::Slot slot) {
  std::make_shared<MetricsSession>(*this, std::move(slot), std::move(socket))->DoRead();
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
