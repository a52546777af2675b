// The console endpoint: a Boost.Beast HTTP/1.1 server on one thread behind the shared
// HttpListener. A session reads a request's header first, so that what is refused (wrong method,
// unknown method, wrong Content-Type, too large) is refused before its body is read; an API call
// is then handed to AdminJsonApi and its answer posted back to the session's strand.
#include "console/console_server.h"

#include <atomic>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "common/did_you_mean.h"
#include "console/admin_json_api.h"
#include "http/listener.h"
#include "http/plain_session.h"
#include "spdlog/spdlog.h"

namespace pimgate {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using Response = http::response<http::string_body>;

constexpr absl::string_view kApiPrefix = "/api/v1/";
constexpr char kJsonContentType[] = "application/json";

// /api and everything under it is the API; everything else is a file.
bool IsApiPath(absl::string_view path) { return path == "/api" || absl::StartsWith(path, "/api/"); }

// Beast's string_view (boost's) as absl's.
absl::string_view View(beast::string_view text) { return {text.data(), text.size()}; }

// The media type of a Content-Type value, lower-case, parameters dropped.
std::string MediaType(absl::string_view content_type) {
  const absl::string_view type = content_type.substr(0, content_type.find(';'));
  return absl::AsciiStrToLower(absl::StripAsciiWhitespace(type));
}

// Whether a Host header names this machine's loopback: "localhost", "127.x.y.z", "[::1]", with
// or without a port.
bool IsLoopbackHost(absl::string_view host) {
  std::string name = absl::AsciiStrToLower(host);
  if (absl::StartsWith(name, "[")) {
    return name.substr(0, name.find(']') + 1) == "[::1]";
  }
  name = name.substr(0, name.find(':'));
  if (name == "localhost" || name == "localhost.") return true;
  const std::vector<std::string> parts = absl::StrSplit(name, '.');
  if (parts.size() != 4 || parts[0] != "127") return false;
  for (const std::string& part : parts) {
    int value = 0;
    if (part.empty() || !absl::SimpleAtoi(part, &value) || value < 0 || value > 255) return false;
  }
  return true;
}

// A strong validator of a file's body: FNV-1a 64 (the table is fixed for the process's life, so
// this only has to tell two builds' files apart).
std::string ETagOf(absl::string_view body) {
  uint64_t hash = 14695981039346656037ull;
  for (const unsigned char c : body) {
    hash ^= c;
    hash *= 1099511628211ull;
  }
  return absl::StrFormat("\"%016x\"", hash);
}

}  // namespace

class ConsoleServer::Impl {
 public:
  struct File {
    const ConsoleAsset* asset;
    std::string etag;
  };

  Impl(ConsoleServerOptions options, std::shared_ptr<grpc::Channel> admin,
       std::span<const ConsoleAsset> assets)
      : options_(std::move(options)),
        api_(std::move(admin), options_.call_timeout),
        ioc_(std::make_unique<net::io_context>(1)) {
    for (const ConsoleAsset& asset : assets)
      files_[asset.path] =
          File{&asset, ETagOf(absl::string_view(asset.body.data(), asset.body.size()))};
    ListenerOptions listener;
    listener.name = "console";
    listener.listen_key = "console.listen";
    listener.max_connections = options_.max_connections;
    listener.max_connections_name = "the console's connection limit";
    listener_.emplace(*ioc_, std::move(listener),
                      [this](tcp::socket socket, HttpListener::Slot slot) {
                        OnConnection(std::move(socket), std::move(slot));
                      });
  }

  ~Impl() { Stop(); }

  absl::Status Start() {
    if (absl::Status listening = listener_->Listen(options_.listen); !listening.ok()) {
      return listening;
    }
    port_ = listener_->port();
    thread_ = std::thread([this] { ioc_->run(); });
    return absl::OkStatus();
  }

  // Calls in flight are cancelled and their answers posted (to a running or stopped io_context)
  // before the io_context goes; then as MetricsServer::Impl::Stop.
  void Stop() {
    if (stopped_.exchange(true)) return;
    listener_->Stop();
    api_.Shutdown();
    if (thread_.joinable()) {
      ioc_->stop();
      thread_.join();
    }
    absl::MutexLock lock(&stats_mu_);  // stats() reads the listener
    connections_refused_at_stop_ = listener_->refused_connections();
    listener_.reset();
    ioc_.reset();
  }

  Stats stats() const {
    Stats stats;
    stats.api_calls = api_.calls();
    stats.api_refused = api_refused_.load(std::memory_order_relaxed);
    stats.static_requests = static_requests_.load(std::memory_order_relaxed);
    absl::MutexLock lock(&stats_mu_);
    if (listener_.has_value()) {
      stats.connections_open = listener_->open_connections();
      stats.connections_refused = listener_->refused_connections();
    } else {
      stats.connections_refused = connections_refused_at_stop_;
    }
    return stats;
  }

  // Headers every answer carries.
  static void Secure(Response& res) {
    res.version(11);
    res.set(http::field::server, "pimgate");
    res.set("Content-Security-Policy", kConsoleContentSecurityPolicy);
    res.set("X-Content-Type-Options", "nosniff");
    res.set("Referrer-Policy", "no-referrer");
    res.set("X-Frame-Options", "DENY");
    res.set("Cross-Origin-Opener-Policy", "same-origin");
    res.set("Cross-Origin-Resource-Policy", "same-origin");
  }

  static Response Json(int status, std::string body) {
    Response res;
    Secure(res);
    res.result(static_cast<unsigned>(status));
    res.set(http::field::content_type, kJsonContentType);
    res.set(http::field::cache_control, "no-store");
    res.body() = std::move(body);
    return res;
  }

  static Response JsonError(http::status status, absl::string_view code,
                            absl::string_view message) {
    return Json(static_cast<int>(status), ErrorBody(code, message));
  }

  static Response Text(http::status status, std::string body) {
    Response res;
    Secure(res);
    res.result(status);
    res.set(http::field::content_type, "text/plain; charset=utf-8");
    res.set(http::field::cache_control, "no-store");
    res.body() = std::move(body);
    return res;
  }

  // What a request's header alone decides: a refusal, or nothing (read the body and serve it).
  std::optional<Response> Screen(const http::request_parser<http::string_body>& parser) {
    const auto& req = parser.get();
    if (options_.require_loopback_host) {
      const auto host = req.find(http::field::host);
      const absl::string_view value = host == req.end() ? absl::string_view() : View(host->value());
      if (!IsLoopbackHost(value)) {
        Response res = Text(http::status::forbidden,
                            absl::StrCat("this console answers only requests for localhost, "
                                         "127.0.0.1 or [::1] (no admin.token is set), not for \"",
                                         value, "\"\n"));
        if (IsApiPath(Path(req))) {
          res = JsonError(http::status::forbidden, "PERMISSION_DENIED",
                          absl::StrCat("this console answers only requests for localhost, "
                                       "127.0.0.1 or [::1] (no admin.token is set), not for \"",
                                       value, "\""));
        }
        return res;
      }
    }
    const absl::string_view path = Path(req);
    if (!IsApiPath(path)) {
      if (req.method() != http::verb::get && req.method() != http::verb::head) {
        Response res = Text(http::status::method_not_allowed, "use GET\n");
        res.set(http::field::allow, "GET, HEAD");
        return res;
      }
      return std::nullopt;
    }
    if (req.method() != http::verb::post) {
      Response res = JsonError(http::status::method_not_allowed, "METHOD_NOT_ALLOWED",
                               absl::StrCat("the API takes POST /api/v1/<Method>, not ",
                                            View(req.method_string()), " ", path));
      res.set(http::field::allow, "POST");
      return res;
    }
    const absl::string_view method =
        absl::StartsWith(path, kApiPrefix) ? path.substr(kApiPrefix.size()) : absl::string_view();
    if (!api_.HasMethod(method)) {
      std::string message = absl::StrCat("no API method at ", path, ": the API is POST ",
                                         kApiPrefix, "<Method> of pimgate.v1.Admin");
      if (std::optional<std::string> near = DidYouMean(method, api_.methods())) {
        absl::StrAppend(&message, "; did you mean ", kApiPrefix, *near, "?");
      }
      return JsonError(http::status::not_found, "NOT_FOUND", message);
    }
    const auto type = req.find(http::field::content_type);
    if (type == req.end() || MediaType(View(type->value())) != kJsonContentType) {
      return JsonError(
          http::status::unsupported_media_type, "UNSUPPORTED_MEDIA_TYPE",
          absl::StrCat("send Content-Type: application/json, not ",
                       type == req.end() ? std::string("no Content-Type")
                                         : absl::StrCat("\"", View(type->value()), "\"")));
    }
    return std::nullopt;
  }

  // A GET or HEAD of a file.
  Response Serve(const http::request<http::string_body>& req) {
    static_requests_.fetch_add(1, std::memory_order_relaxed);
    absl::string_view path = Path(req);
    if (path == "/") path = "/index.html";
    const auto it = files_.find(std::string_view(path.data(), path.size()));
    if (it == files_.end()) {
      return Text(http::status::not_found, absl::StrCat("no console file at ", path, "\n"));
    }
    const File& file = it->second;
    Response res;
    Secure(res);
    // Revalidated on every use (the files change with the binary, their names do not); the ETag
    // makes that a 304 without a body.
    res.set(http::field::cache_control, "no-cache");
    res.set(http::field::etag, file.etag);
    const auto match = req.find(http::field::if_none_match);
    if (match != req.end() && View(match->value()) == file.etag) {
      res.result(http::status::not_modified);
      return res;
    }
    res.result(http::status::ok);
    res.set(http::field::content_type, std::string(file.asset->content_type));
    res.body() = std::string(file.asset->body);
    return res;
  }

  static absl::string_view Path(const http::request<http::string_body>& req) {
    const absl::string_view target(req.target().data(), req.target().size());
    return target.substr(0, target.find('?'));
  }

  void OnConnection(tcp::socket socket, HttpListener::Slot slot);

  const ConsoleServerOptions options_;
  AdminJsonApi api_;
  std::map<std::string_view, File, std::less<>> files_;
  std::unique_ptr<net::io_context> ioc_;
  std::optional<HttpListener> listener_;
  uint16_t port_ = 0;  // kept after Stop()
  std::atomic<bool> stopped_{false};
  std::atomic<uint64_t> api_refused_{0};
  std::atomic<uint64_t> static_requests_{0};
  mutable absl::Mutex stats_mu_;  // held while Stop() destroys the listener
  uint64_t connections_refused_at_stop_ ABSL_GUARDED_BY(stats_mu_) = 0;
  std::thread thread_;
};

namespace {

// One connection: read a request, answer it, repeat while the client keeps the connection. At
// most one request is in progress; its admin call holds the session until it answers.
class ConsoleSession : public PlainHttpSession<ConsoleSession> {
 public:
  ConsoleSession(ConsoleServer::Impl& server, HttpListener::Slot slot, tcp::socket socket)
      : PlainHttpSession(std::move(slot), std::move(socket), server.options_.write_timeout),
        server_(server) {}

  void DoRead() {
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(server_.options_.header_limit));
    parser_->body_limit(server_.options_.body_limit);
    stream_.expires_after(server_.options_.read_timeout);
    http::async_read_header(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, std::size_t) { self->OnHeader(ec); });
  }

 private:
  // Errors of reading a request, header or body.
  bool ReadFailed(beast::error_code ec) {
    switch (ClassifyRequestReadError(ec)) {
      case RequestReadError::kNone:
        return false;
      case RequestReadError::kGone:
        Close();
        break;
      case RequestReadError::kHeaderTooLarge:
        WriteAndClose(ConsoleServer::Impl::Text(http::status::request_header_fields_too_large,
                                                "headers too large\n"));
        break;
      case RequestReadError::kBodyTooLarge:
        WriteAndClose(ConsoleServer::Impl::JsonError(
            http::status::payload_too_large, "PAYLOAD_TOO_LARGE",
            absl::StrCat("the body is larger than the console's limit of ",
                         server_.options_.body_limit, " bytes")));
        break;
      case RequestReadError::kMalformed:
        WriteAndClose(ConsoleServer::Impl::Text(http::status::bad_request, "malformed request\n"));
        break;
    }
    return true;
  }

  void OnHeader(beast::error_code ec) {
    if (ReadFailed(ec)) return;
    if (std::optional<Response> refusal = server_.Screen(*parser_)) {
      if (IsApiPath(ConsoleServer::Impl::Path(parser_->get()))) {
        server_.api_refused_.fetch_add(1, std::memory_order_relaxed);
      }
      // The body (if any) is not read: the connection cannot carry another request.
      return WriteAndClose(*std::move(refusal));
    }
    const auto expect = parser_->get().find(http::field::expect);
    if (expect != parser_->get().end() &&
        absl::EqualsIgnoreCase(View(expect->value()), "100-continue")) {
      auto go_on = std::make_shared<http::response<http::empty_body>>(http::status::continue_, 11);
      stream_.expires_after(server_.options_.write_timeout);
      return http::async_write(
          stream_, *go_on, [self = shared_from_this(), go_on](beast::error_code ec, std::size_t) {
            if (ec) return self->Close();
            self->ReadBody();
          });
    }
    ReadBody();
  }

  void ReadBody() {
    stream_.expires_after(server_.options_.read_timeout);
    http::async_read(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, std::size_t) { self->OnBody(ec); });
  }

  void OnBody(beast::error_code ec) {
    if (ReadFailed(ec)) return;
    const http::request<http::string_body>& req = parser_->get();
    const bool keep_alive = req.keep_alive();
    const absl::string_view path = ConsoleServer::Impl::Path(req);
    if (!IsApiPath(path)) {
      auto res = std::make_shared<Response>(server_.Serve(req));
      res->keep_alive(keep_alive);
      res->prepare_payload();
      if (req.method() == http::verb::head) res->body().clear();  // Content-Length stays
      return Write(std::move(res));
    }
    // No timer runs while the admin API works: call_timeout bounds the call.
    stream_.expires_never();
    const auto authorization = req.find(http::field::authorization);
    server_.api_.Call(
        path.substr(kApiPrefix.size()),
        authorization == req.end() ? absl::string_view() : View(authorization->value()), req.body(),
        [self = shared_from_this(), keep_alive](JsonAnswer answer) mutable {
          // On a gRPC thread: back to the session's strand to write. The session goes with the
          // posted handler, so its last reference is dropped on its own thread, never here.
          auto executor = self->stream_.get_executor();
          net::post(executor,
                    [self = std::move(self), keep_alive, answer = std::move(answer)]() mutable {
                      auto res = std::make_shared<Response>(
                          ConsoleServer::Impl::Json(answer.http_status, std::move(answer.body)));
                      res->keep_alive(keep_alive);
                      res->prepare_payload();
                      self->Write(std::move(res));
                    });
        });
  }

  ConsoleServer::Impl& server_;
  std::optional<http::request_parser<http::string_body>> parser_;
};

}  // namespace

void ConsoleServer::Impl::OnConnection(tcp::socket socket, HttpListener::Slot slot) {
  std::make_shared<ConsoleSession>(*this, std::move(slot), std::move(socket))->DoRead();
}

absl::StatusOr<std::unique_ptr<ConsoleServer>> ConsoleServer::Start(
    ConsoleServerOptions options, std::shared_ptr<grpc::Channel> admin,
    std::span<const ConsoleAsset> assets) {
  auto impl = std::make_unique<Impl>(std::move(options), std::move(admin), assets);
  if (absl::Status status = impl->Start(); !status.ok()) return status;
  return std::unique_ptr<ConsoleServer>(new ConsoleServer(std::move(impl)));
}

ConsoleServer::ConsoleServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ConsoleServer::~ConsoleServer() { Stop(); }
void ConsoleServer::Stop() { impl_->Stop(); }
uint16_t ConsoleServer::port() const { return impl_->port_; }
ConsoleServer::Stats ConsoleServer::stats() const { return impl_->stats(); }

}  // namespace pimgate
