// The webhook server: one session class for TLS and plain streams (CRTP, as in Beast's
// advanced_server_flex example); every limit named in GatewayConfig; errors answered in one place.
#include "gateway/server.h"

#include <openssl/ssl.h>

#include <array>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <optional>
#include <random>
#include <thread>
#include <unordered_map>
#include <utility>
#include <variant>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/json.h"
#include "common/logging.h"
#include "common/net_address.h"
#include "gateway/body_budget.h"
#include "gateway/payload_parser.h"
#include "gateway/signature.h"
#include "google/protobuf/util/time_util.h"
#include "http/listener.h"
#include "spdlog/spdlog.h"

namespace pimgate {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;

// Bytes read from the socket at a time; with header_limit it bounds the read buffer of one
// connection, which may hold body bytes read with the header before the body budget is asked
// (so it is part of the per-connection cost docs/security.md states). One TLS record: a TLS read
// returns no more anyway. The body itself is bounded by body_limit and the body budget.
constexpr std::size_t kReadChunk = 16 * 1024;
// Time allowed to send a response (a client that does not read cannot hold a session forever).
constexpr std::chrono::seconds kWriteTimeout{30};
// Time allowed for the TLS close_notify exchange before the socket is simply closed.
constexpr std::chrono::seconds kShutdownTimeout{5};
// How long Stop() waits for requests whose events are being written.
constexpr std::chrono::seconds kStopDrainTimeout{30};
// How long each producer waits for an answer before it gives up (docs/best-practices.md): a body
// in progress that is behind the pace to arrive within it may be evicted to make room for others.
constexpr std::chrono::milliseconds kLegacySenderTimeout{500};
constexpr std::chrono::milliseconds kEventPlatformSenderTimeout{5000};
// While requests wait for room in the body budget, it re-examines them this often (evictions of
// bodies that fell behind, deadlines); otherwise only refusal logs are due.
constexpr std::chrono::milliseconds kBudgetTickWaiting{5};
constexpr std::chrono::milliseconds kBudgetTickIdle{500};
// Refusals are logged once per client address per interval, not per request: a flood must not
// become a log flood, and the address is what an operator acts on.
constexpr std::chrono::seconds kRefusalLogInterval{10};
constexpr std::size_t kRefusalLogMaxClients = 10;
// Retry-After of an Event Platform request refused for lack of room.
constexpr int kOverBudgetRetryAfterSeconds = 1;

std::chrono::milliseconds SenderTimeout(SourceKind kind) {
  return kind == SourceKind::kEventsApi ? kLegacySenderTimeout : kEventPlatformSenderTimeout;
}

// Answer codes counted per source; anything else lands in the last slot.
constexpr std::array<int, 13> kCountedCodes = {200, 400, 401, 404, 405, 408, 413,
                                               417, 429, 431, 500, 503, 0};
int CodeSlot(int code) {
  for (std::size_t i = 0; i + 1 < kCountedCodes.size(); ++i) {
    if (kCountedCodes[i] == code) return static_cast<int>(i);
  }
  return static_cast<int>(kCountedCodes.size() - 1);
}

struct CodeCounters {
  std::array<std::atomic<uint64_t>, kCountedCodes.size()> counts{};
  void Add(int code) { counts[CodeSlot(code)].fetch_add(1, std::memory_order_relaxed); }
  std::map<int, uint64_t> Snapshot() const {
    std::map<int, uint64_t> out;
    for (std::size_t i = 0; i < counts.size(); ++i) {
      uint64_t n = counts[i].load(std::memory_order_relaxed);
      if (n != 0) out[kCountedCodes[i]] = n;
    }
    return out;
  }
};

std::vector<std::string> SecretsOf(const SourceConfig& source) {
  std::vector<std::string> secrets{source.secret.value};
  if (source.secondary_secret) secrets.push_back(source.secondary_secret->value);
  return secrets;
}

// One configured source, as the router sees it.
struct Route {
  Route(const SourceConfig& source, std::chrono::seconds tolerance)
      : source(source), verifier(SecretsOf(source)), tolerance(tolerance) {
    if (source.notification_secret) {
      notification_verifier.emplace(std::vector<std::string>{source.notification_secret->value});
    }
  }

  // Whether `target` (path and query) is this source's notification_path.
  bool IsNotificationPath(std::string_view target) const {
    return !source.notification_path.empty() &&
           target.substr(0, target.find('?')) == source.notification_path;
  }

  SourceConfig source;
  SignatureVerifier verifier;
  // The subscriber's notification_webhook_secret: verifies notification webhooks only.
  std::optional<SignatureVerifier> notification_verifier;
  std::chrono::seconds tolerance;
  SourceCounters counters;
  CodeCounters codes;
  LatencyHistogram latency;
};

// An HTTP answer before it is written: status, JSON body and whether the connection must close
// (always when the request body was not read).
struct Answer {
  http::status status = http::status::ok;
  std::string body;
  bool close = false;
  std::optional<int> retry_after_s;
};

Answer ErrorAnswer(http::status status, const std::string& error, const std::string& message,
                   bool close = false) {
  Answer answer;
  answer.status = status;
  answer.close = close;
  Json body;
  body["error"] = error;
  body["message"] = message;
  answer.body = JsonDump(body);
  return answer;
}

// The counts of a stored request: {"accepted":N,"duplicates":D}, the members every 200 (and the
// partial 400) starts with.
Json StoredCounts(uint64_t accepted, uint64_t duplicates) {
  Json body;
  body["accepted"] = accepted;
  body["duplicates"] = duplicates;
  return body;
}

std::string NewRequestId() {
  static const uint32_t prefix = std::random_device{}();
  static std::atomic<uint64_t> counter{0};
  char buf[32];
  int n = std::snprintf(buf, sizeof(buf), "%08x-%010llx", prefix,
                        static_cast<unsigned long long>(counter.fetch_add(1) + 1));
  return std::string(buf, n);
}

google::protobuf::Timestamp ToTimestamp(std::chrono::system_clock::time_point t) {
  return google::protobuf::util::TimeUtil::MicrosecondsToTimestamp(
      std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count());
}

}  // namespace

// The listener's per-client admission is the body budget's connection count
// (gateway.max_connections_per_client).
class Gateway::Impl : public ClientAdmission {
 public:
  Impl(const Config& config, EventLog* log, GatewayHooks hooks)
      : config_(config),
        log_(log),
        hooks_(std::move(hooks)),
        ioc_(std::make_unique<net::io_context>(ThreadCount(config.gateway))),
        ssl_ctx_(ssl::context::tls_server) {
    ListenerOptions listener;
    listener.name = "gateway";
    listener.listen_key = "gateway.listen";
    listener.max_connections = config_.gateway.max_connections;
    listener.max_connections_name = "gateway.max_connections";
    listener.admission = this;
    listener_.emplace(*ioc_, std::move(listener),
                      [this](tcp::socket socket, HttpListener::Slot slot) {
                        OnConnection(std::move(socket), std::move(slot));
                      });
    budget_timer_.emplace(net::make_strand(*ioc_));
  }

  // Sessions hold references to the routes, the TLS context and the body budget (their Slots
  // call Release): destroy them (they live in the io_context's queued handlers) while all of
  // those still exist.
  ~Impl() override {
    Stop();
    budget_timer_.reset();
    listener_.reset();
    ioc_.reset();
  }

  static int ThreadCount(const GatewayConfig& gateway) {
    if (gateway.threads > 0) return gateway.threads;
    return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  }

  absl::Status Init();
  absl::Status Start();
  void Stop();
  GatewayStats Stats() const;

  // ClientAdmission, on the listener's strand (Release on any thread): this address may have
  // gateway.max_connections_per_client open; one client cannot take every connection (nor,
  // through them, the body budget). Refusals are counted and logged per interval by the budget.
  bool Admit(const std::string& client) override { return budget_->OpenConnection(client); }
  void Release(const std::string& client) override { budget_->CloseConnection(client); }
  void RefusedOverLimit(const std::string& client) override {
    budget_->CountRefusal(client, BudgetRefusal::kMaxConnections);
  }

  // An admitted connection: TLS detection on a TLS port, else a plain session.
  void OnConnection(tcp::socket socket, HttpListener::Slot slot);
  // The body budget's clock: re-examines waiting requests and logs refusals per interval.
  void ScheduleBudgetTick();
  void LogRefusals();

  // Routing and the request pipeline, shared by TLS and plain sessions.
  Route* FindRoute(std::string_view target) const;
  // The Event Platform source a notification webhook is about: the one whose `path` its
  // `destination` URL names (one subscriber's notification URL serves all its subscriptions),
  // else `received_by`.
  Route* NotificationOwner(const PlatformNotification& notification, Route* received_by) const;
  void CountAnswer(Route* route, int code) {
    if (route != nullptr) {
      route->codes.Add(code);
    } else {
      unrouted_.Add(code);
    }
  }

  Config config_;
  EventLog* log_;
  const GatewayHooks hooks_;
  std::unique_ptr<net::io_context> ioc_;
  ssl::context ssl_ctx_;
  bool tls_ = false;
  // The accept loop: gateway.max_connections, per-client admission (this), TCP_NODELAY, the
  // pause after a failed accept.
  std::optional<HttpListener> listener_;
  std::vector<std::unique_ptr<Route>> routes_;
  std::unordered_map<std::string, Route*> by_path_;
  CodeCounters unrouted_;
  std::atomic<std::size_t> appends_in_flight_{0};
  std::atomic<bool> stopping_{false};
  std::vector<std::thread> threads_;
  // Request bodies held before authentication (gateway.max_buffered_bytes and friends). Outlives
  // every session: they release their room as they are destroyed.
  std::unique_ptr<BodyBudget> budget_;
  std::optional<net::steady_timer> budget_timer_;           // on its own strand
  std::chrono::steady_clock::time_point last_refusal_log_;  // on budget_timer_'s strand
};

namespace {

using Impl = Gateway::Impl;

// The per-connection HTTP state machine. `Derived` provides stream() and DoEof().
template <class Derived>
class HttpSession {
 public:
  HttpSession(Impl& gw, HttpListener::Slot slot, beast::flat_buffer buffer)
      : gw_(gw), slot_(std::move(slot)), buffer_(std::move(buffer)) {}

 protected:
  Derived& derived() { return static_cast<Derived&>(*this); }
  auto& lowest() { return beast::get_lowest_layer(derived().stream()); }

  // Waits for the first byte of the next request with the idle timeout (header timeout for the
  // first request), then reads the header with the header timeout: a client dripping header bytes
  // (slowloris) gets header_timeout in total, an idle keep-alive connection gets idle_timeout.
  void DoRead() {
    expect_continue_ = false;
    body_complete_ = false;
    evict_pending_ = false;
    reserved_ = 0;
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(gw_.config_.gateway.header_limit));
    parser_->body_limit(gw_.config_.gateway.body_limit);
    if (buffer_.size() > 0) {
      ReadHeader();
      return;
    }
    lowest().expires_after(first_request_ ? gw_.config_.gateway.header_timeout
                                          : gw_.config_.gateway.idle_timeout);
    const std::size_t room = buffer_.max_size() - buffer_.size();
    derived().stream().async_read_some(
        buffer_.prepare(std::min(room, kReadChunk)),
        [self = derived().shared_from_this()](beast::error_code ec, std::size_t n) {
          if (ec) return;  // idle timeout, client closed: nothing to answer
          self->buffer_.commit(n);
          self->ReadHeader();
        });
  }

  void ReadHeader() {
    first_request_ = false;
    lowest().expires_after(gw_.config_.gateway.header_timeout);
    http::async_read_header(derived().stream(), buffer_, *parser_,
                            [self = derived().shared_from_this()](
                                beast::error_code ec, std::size_t) { self->OnHeader(ec); });
  }

  void OnHeader(beast::error_code ec) {
    header_received_at_ = std::chrono::steady_clock::now();
    request_id_ = NewRequestId();
    if (ec == http::error::end_of_stream) return derived().DoEof();
    if (ec == beast::error::timeout) {
      // tcp_stream has already closed the socket: count the 408, nothing can be sent.
      spdlog::debug("req={} header timeout: connection closed", request_id_);
      return gw_.CountAnswer(nullptr, 408);
    }
    if (ec == http::error::body_limit) {
      // Beast checks Content-Length against body_limit as soon as the header is parsed: the body
      // is refused before a byte of it is read.
      const auto& req = parser_->get();
      return Send(gw_.FindRoute(std::string_view(req.target().data(), req.target().size())),
                  BodyTooLarge());
    }
    if (ec == http::error::header_limit) {
      return Send(nullptr,
                  ErrorAnswer(http::status::request_header_fields_too_large, "header_too_large",
                              absl::StrCat("request headers exceed ",
                                           gw_.config_.gateway.header_limit, " bytes"),
                              true));
    }
    if (ec) {
      return Send(nullptr,
                  ErrorAnswer(http::status::bad_request, "bad_http",
                              absl::StrCat("malformed HTTP request: ", ec.message()), true));
    }
    const auto& req = parser_->get();
    if (derived().RejectPlainOnTlsPort()) {
      return Send(nullptr, ErrorAnswer(http::status::bad_request, "tls_required",
                                       "this port speaks HTTPS: plain HTTP request refused", true));
    }
    route_ = gw_.FindRoute(std::string_view(req.target().data(), req.target().size()));
    if (route_ == nullptr) {
      return Send(nullptr, ErrorAnswer(http::status::not_found, "unknown_path",
                                       absl::StrCat("no source is configured for path ",
                                                    std::string(req.target())),
                                       true));
    }
    if (req.method() != http::verb::post) {
      Answer answer = ErrorAnswer(http::status::method_not_allowed, "method_not_allowed",
                                  "webhooks must be sent with POST", true);
      return Send(route_, std::move(answer));
    }
    if (auto length = parser_->content_length();
        length && *length > gw_.config_.gateway.body_limit) {
      return Send(route_, BodyTooLarge());
    }
    // Expect: 100-continue (RFC 9110 section 10.1.1). libcurl, and so Guzzle and the PIM, send it
    // with bodies of 1 MiB or more and hold the body back until the server answers; without an
    // interim 100 curl waits a second, past the PIM's 0.5 s timeout. Every check above needed no
    // body; the signature headers are checked too, then the sender is told to go on. A request
    // that cannot pass gets its final answer now and the connection closes: the body is never
    // sent. HTTP/1.0 has no 100 (the server must ignore the expectation), and a client that
    // sends its body without waiting is simply read on.
    if (req.version() >= 11) {
      if (auto expect = req.find(http::field::expect); expect != req.end()) {
        const absl::string_view value = absl::StripAsciiWhitespace(
            absl::string_view(expect->value().data(), expect->value().size()));
        if (!absl::EqualsIgnoreCase(value, "100-continue")) {
          return Send(route_, ErrorAnswer(http::status::expectation_failed, "expectation_failed",
                                          absl::StrCat("unsupported Expect: \"", value,
                                                       "\" (only 100-continue is supported)"),
                                          true));
        }
        if (absl::Status headers = CheckSignatureHeaders(); !headers.ok()) {
          return Unauthorized(headers, /*close=*/true);
        }
        expect_continue_ = true;
      }
    }
    ReserveBody();
  }

  // Room in the body budget before a byte of the body is read (and before a 100 Continue): the
  // whole Content-Length, or the first steps of a chunked body. A body that does not fit waits
  // for room without being read; when none comes it is refused, unread.
  void ReserveBody() {
    const auto length = parser_->content_length();  // boost::optional
    reserved_ = length ? static_cast<std::size_t>(*length) : parser_->chunked() ? GrowStep() : 0;
    auto executor = derived().stream().get_executor();
    BodyBudget::Request request;
    request.client = slot_.client();
    request.bytes = reserved_;
    request.sender_timeout = SenderTimeout(route_->source.kind);
    // Called by the budget when this body is chosen to make room, posted to this session's strand
    // (OnEvicted). The eviction and the decision granting the room are posted from whichever
    // threads made them, so they may arrive in either order; the request's number tells a late
    // eviction of an earlier request's room from this one's.
    request.on_evict = [weak = derived().weak_from_this(), executor, seq = ++request_seq_] {
      net::post(executor, [weak, seq] {
        if (auto self = weak.lock()) self->OnEvicted(seq);
      });
    };
    hold_ = gw_.budget_->Reserve(
        std::move(request), [self = derived().shared_from_this(), executor](
                                BodyBudget::Hold hold, std::optional<BudgetRefusal> refused) {
          net::post(executor, [self, hold = std::move(hold), refused]() mutable {
            self->OnBudgetDecision(std::move(hold), refused);
          });
        });
    if (hold_) StartBody();
    // Otherwise OnBudgetDecision comes within gateway.buffer_wait; nothing is read meanwhile.
  }

  void OnBudgetDecision(BodyBudget::Hold hold, std::optional<BudgetRefusal> refused) {
    if (refused) return OverBudget(*refused);
    hold_ = std::move(hold);
    if (evict_pending_) return OnEvicted(request_seq_);  // evicted before the grant arrived
    StartBody();
  }

  // Chunked bodies reserve room in steps of what one read can add to the body: the read buffer.
  std::size_t GrowStep() const { return buffer_.max_size(); }

  void StartBody() {
    if (expect_continue_) return SendContinue();
    ReadBody();
  }

  // No room for this body: 503 (the Events API knows no 429), or 429 with Retry-After for the
  // Event Platform, which slows down and retries. The body was not read: the connection closes.
  void OverBudget(BudgetRefusal reason) {
    const bool client_share = reason == BudgetRefusal::kClientBufferBudget;
    std::string message =
        client_share ? absl::StrCat(
                           "this client address already has its share of request bodies in "
                           "flight (gateway.max_connections_per_client); retry later")
                     : absl::StrCat(
                           "too many request bodies are being received at once "
                           "(gateway.max_buffered_bytes); retry later");
    if (route_->source.kind == SourceKind::kEventsApi) {
      return Send(route_,
                  ErrorAnswer(http::status::service_unavailable, "over_budget", message, true));
    }
    Answer answer = ErrorAnswer(http::status::too_many_requests, "over_budget", message, true);
    answer.retry_after_s = kOverBudgetRetryAfterSeconds;
    Send(route_, std::move(answer));
  }

  // This body fell behind its sender's timeout and its room went to another: close the
  // connection (the sender has given up on it; nothing is answered). Counted as a 408, like a
  // body that missed gateway.body_timeout.
  void OnEvicted(uint64_t seq) {
    // An eviction of an earlier request's room, or of a body that completed since (it is being
    // stored, and its room comes back with the answer), is moot.
    if (seq != request_seq_ || body_complete_ || evicted_) return;
    if (!hold_) {
      evict_pending_ = true;  // the grant is on its way: OnBudgetDecision comes back here
      return;
    }
    // The room goes back at once (the body's bytes are freed with the session, as soon as the
    // aborted read returns), and the connection closes, whatever it was doing.
    evicted_ = true;
    hold_.Release();
    beast::error_code ignored;
    lowest().socket().shutdown(tcp::socket::shutdown_both, ignored);
    lowest().socket().close(ignored);
  }

  // The signature checks that need no body (presence and shape of the headers, the legacy
  // timestamp's tolerance), as Handle() will run them again with the body.
  absl::Status CheckSignatureHeaders() const {
    const auto& req = parser_->get();
    auto named = [&req](std::string_view name) {
      auto it = req.find(beast::string_view(name.data(), name.size()));
      return it == req.end() ? std::string_view()
                             : std::string_view(it->value().data(), it->value().size());
    };
    switch (route_->source.kind) {
      case SourceKind::kEventsApi:
        return SignatureVerifier::CheckLegacyHeaders(
            named("X-Akeneo-Request-Signature"), named("X-Akeneo-Request-Timestamp"),
            std::chrono::system_clock::now(), route_->tolerance);
      case SourceKind::kEventPlatform:
        return SignatureVerifier::CheckEventPlatformHeaders(named("X-AKENEO-SIGNATURE-PRIMARY"),
                                                            named("X-AKENEO-SIGNATURE-SECONDARY"));
    }
    return absl::OkStatus();
  }

  // Writes the interim "100 Continue", then reads the body.
  void SendContinue() {
    continue_ = {};
    continue_.version(11);
    continue_.result(http::status::continue_);
    continue_.set(http::field::server, "pimgate");
    lowest().expires_after(kWriteTimeout);
    http::async_write(derived().stream(), continue_,
                      [self = derived().shared_from_this()](beast::error_code ec, std::size_t) {
                        if (ec) return;  // the client went away
                        self->ReadBody();
                      });
  }

  // Reads the body piece by piece (gateway.body_timeout for all of it), telling the budget how
  // far it got (the pace that decides eviction) and growing a chunked body's room as it grows.
  void ReadBody() {
    lowest().expires_after(gw_.config_.gateway.body_timeout);
    ReadBodyPart();
  }

  void ReadBodyPart() {
    if (parser_->is_done()) return OnBodyPart({});
    if (!parser_->content_length() && parser_->get().body().size() + GrowStep() > reserved_) {
      auto executor = derived().stream().get_executor();
      const bool grown = gw_.budget_->Grow(
          hold_, GrowStep(),
          [self = derived().shared_from_this(), executor](std::optional<BudgetRefusal> refused) {
            net::post(executor, [self, refused] {
              if (refused) return self->OverBudget(*refused);
              self->reserved_ += self->GrowStep();
              self->ReadBodyPart();
            });
          });
      if (!grown) return;  // reading resumes once the budget decides
      reserved_ += GrowStep();
    }
    http::async_read_some(derived().stream(), buffer_, *parser_,
                          [self = derived().shared_from_this()](beast::error_code ec, std::size_t) {
                            self->OnBodyPart(ec);
                          });
  }

  void OnBodyPart(beast::error_code ec) {
    if (!ec && !parser_->is_done()) {
      hold_.Received(parser_->get().body().size());
      return ReadBodyPart();
    }
    if (!ec) {
      body_complete_ = true;
      hold_.Complete();
    }
    OnBody(ec);
  }

  Answer BodyTooLarge() {
    return ErrorAnswer(http::status::payload_too_large, "body_too_large",
                       absl::StrCat("request body exceeds ", gw_.config_.gateway.body_limit,
                                    " bytes (gateway.body_limit)"),
                       true);
  }

  void OnBody(beast::error_code ec) {
    if (evicted_) {
      spdlog::debug("req={} body behind its sender's timeout, evicted: connection closed",
                    request_id_);
      return gw_.CountAnswer(route_, 408);
    }
    if (ec == http::error::body_limit) return Send(route_, BodyTooLarge());
    if (ec == beast::error::timeout) {
      spdlog::debug("req={} body timeout: connection closed", request_id_);
      return gw_.CountAnswer(route_, 408);
    }
    if (ec == http::error::end_of_stream || ec == net::error::eof) return;  // client went away
    if (ec) {
      return Send(route_, ErrorAnswer(http::status::bad_request, "bad_http",
                                      absl::StrCat("malformed HTTP body: ", ec.message()), true));
    }
    lowest().expires_never();  // the log answers; the write gets its own timeout
    Handle();
  }

  // Verifies, parses and stores one request; answers from here or from OnStored.
  void Handle() {
    const Route& route = *route_;
    const auto& req = parser_->get();
    const std::string& body = req.body();
    const auto now = std::chrono::system_clock::now();
    auto header = [&req](std::string_view name) {
      auto it = req.find(beast::string_view(name.data(), name.size()));
      return it == req.end() ? std::string_view()
                             : std::string_view(it->value().data(), it->value().size());
    };

    AppendRequest append;
    if (route.source.kind == SourceKind::kEventsApi) {
      absl::Status verified = route.verifier.VerifyLegacy(header("X-Akeneo-Request-Signature"),
                                                          header("X-Akeneo-Request-Timestamp"),
                                                          body, now, route.tolerance);
      if (!verified.ok()) return Unauthorized(verified);
      if (body.empty()) {
        // The PIM's "Test" button: a signed empty body. Nothing to store.
        Json body = StoredCounts(0, 0);
        body["test"] = true;
        Answer answer;
        answer.body = JsonDump(body);
        return Send(route_, std::move(answer));
      }
      ParseLimits limits;
      limits.max_events = gw_.config_.gateway.max_events_per_request;
      // Each event's data is serialized straight from the JSON, never built as a Struct.
      absl::StatusOr<ParsedPayload> parsed =
          ParseLegacyBatch(body, limits, &append.serialized_data);
      if (!parsed.ok()) return BadPayload(parsed.status());
      append.events = std::move(parsed->events);
      for (RejectedElement& rejected : parsed->rejected) {
        v1::QuarantineEntry& entry = append.quarantine.emplace_back();
        entry.set_source(route.source.name);
        entry.set_index(static_cast<uint32_t>(rejected.index));
        entry.set_reason(rejected.reason);
        entry.set_raw(std::move(rejected.raw));
        entry.set_request_id(request_id_);
        *entry.mutable_received_at() = ToTimestamp(now);
        rejected_.push_back({rejected.index, std::move(rejected.reason)});
      }
    } else if (!ParseEventPlatform(header, body, req.target(), append)) {
      return;  // answered
    }
    for (v1::Event& event : append.events) {
      if (event.source().empty()) event.set_source(route.source.name);
      event.set_request_id(request_id_);
      *event.mutable_received_at() = ToTimestamp(now);
    }
    gw_.appends_in_flight_.fetch_add(1, std::memory_order_acq_rel);
    gw_.log_->Append(std::move(append), [self = derived().shared_from_this()](
                                            absl::StatusOr<AppendResult> result) {
      Impl& gw = self->gw_;
      net::post(self->derived().stream().get_executor(),
                [self, result = std::move(result)]() mutable { self->OnStored(result); });
      gw.appends_in_flight_.fetch_sub(1, std::memory_order_acq_rel);
    });
  }

  // The Event Platform part of Handle: verifies the request and parses it into `append` (a
  // CloudEvent, or a notification webhook, then remembered in notice_ for OnStored). Returns
  // false once it has answered (401, 400, 429).
  template <class Header>
  bool ParseEventPlatform(const Header& header, const std::string& body,
                          beast::string_view target_view, AppendRequest& append) {
    const Route& route = *route_;
    notice_.reset();
    const std::string_view target(target_view.data(), target_view.size());
    std::string algorithm(header("X-AKENEO-SIGNATURE-ALGORITHM"));
    if (!algorithm.empty() && absl::AsciiStrToLower(algorithm) != "hmacsha256") {
      Unauthorized(absl::UnauthenticatedError(absl::StrCat(
          "unsupported X-AKENEO-SIGNATURE-ALGORITHM \"", algorithm, "\" (only HmacSHA256)")));
      return false;
    }
    const std::string_view primary = header("X-AKENEO-SIGNATURE-PRIMARY");
    const std::string_view secondary = header("X-AKENEO-SIGNATURE-SECONDARY");
    absl::Status verified = route.verifier.VerifyEventPlatform(primary, secondary, body);
    // notification_secret signs notification webhooks only; which one this is, the body says,
    // and the body is parsed only once a signature matched.
    bool by_notification_secret = false;
    if (!verified.ok() && route.notification_verifier &&
        route.notification_verifier->VerifyEventPlatform(primary, secondary, body).ok()) {
      verified = absl::OkStatus();
      by_notification_secret = true;
    }
    if (!verified.ok()) {
      Unauthorized(verified);
      return false;
    }
    std::string serialized_data;  // the event's data, never built as a Struct
    absl::StatusOr<EventPlatformPayload> payload = ParseEventPlatformBody(body, &serialized_data);
    if (!payload.ok()) {
      BadPayload(payload.status());
      return false;
    }
    if (auto* notification = std::get_if<PlatformNotification>(&*payload)) {
      // Never refused with 429: notifications are rare, and the platform retries them only
      // twice within 3 s before falling back to e-mail.
      const Route* owner = gw_.NotificationOwner(*notification, route_);
      notification->event.set_source(owner->source.name);
      notice_.emplace();
      notice_->source = owner->source.name;
      notice_->subscription_id = notification->subscription_id;
      notice_->notification_type = notification->notification_type;
      notice_->changed_at = absl::FromUnixSeconds(notification->timestamp.seconds()) +
                            absl::Nanoseconds(notification->timestamp.nanos());
      notice_->reason = notification->reason;
      notice_->subscriber_id = notification->subscriber_id;
      spdlog::info("req={} source={} notification {} for subscription {} (source {})", request_id_,
                   route.source.name, notification->notification_type,
                   notification->subscription_id, owner->source.name);
      append.events.push_back(std::move(notification->event));
      append.serialized_data.push_back(std::move(serialized_data));
      return true;
    }
    if (route.IsNotificationPath(target)) {
      BadPayload(absl::InvalidArgumentError(absl::StrCat(
          "this path is sources[", route.source.name,
          "].notification_path: it takes only Event Platform notification webhooks (a JSON "
          "object with notification_type); send events to ",
          route.source.path)));
      return false;
    }
    if (by_notification_secret) {
      Unauthorized(absl::UnauthenticatedError(
          "signed with notification_secret, which signs only notification webhooks: events "
          "must be signed with the source's secret"));
      return false;
    }
    // The Event Platform honours 429 (it slows down and retries): shed load before the
    // writer's queue grows without bound. Legacy requests are never refused this way.
    if (gw_.log_->pending() >= gw_.log_->max_pending()) {
      Answer answer = ErrorAnswer(http::status::too_many_requests, "backlog_full",
                                  "the event log's write queue is full; retry later");
      answer.retry_after_s = 1;
      Send(route_, std::move(answer));
      return false;
    }
    append.events.push_back(std::move(std::get<v1::Event>(*payload)));
    append.serialized_data.push_back(std::move(serialized_data));
    return true;
  }

  // Runs on the session's strand once the log has answered. With store.sync the events are
  // fsynced at this point; without it they are in the OS page cache.
  void OnStored(const absl::StatusOr<AppendResult>& result) {
    Route& route = *route_;
    if (!result.ok()) {
      spdlog::error("req={} source={} event log write failed: {}", request_id_, route.source.name,
                    std::string(result.status().message()));
      rejected_.clear();
      notice_.reset();
      return Send(route_, ErrorAnswer(http::status::service_unavailable, "store_unavailable",
                                      absl::StrCat("events could not be stored, nothing was "
                                                   "written: ",
                                                   result.status().message())));
    }
    route.counters.events_accepted.fetch_add(result->accepted, std::memory_order_relaxed);
    route.counters.duplicates.fetch_add(result->duplicates, std::memory_order_relaxed);
    route.counters.stale.fetch_add(result->stale, std::memory_order_relaxed);
    route.counters.quarantined.fetch_add(rejected_.size(), std::memory_order_relaxed);
    Answer answer;
    if (rejected_.empty()) {
      answer.body = JsonDump(StoredCounts(result->accepted, result->duplicates));
    } else {
      std::string indexes = absl::StrJoin(
          rejected_, ",", [](std::string* out, const auto& r) { absl::StrAppend(out, r.first); });
      Json body;
      body["error"] = "invalid_events";
      body["message"] = absl::StrCat("events [", indexes,
                                     "] are invalid and were quarantined; the others were stored");
      body.update(StoredCounts(result->accepted, result->duplicates));
      Json& rejected = body["rejected"] = Json::array();
      for (const auto& [index, reason] : rejected_) {
        Json element;
        element["index"] = index;
        element["reason"] = reason;
        rejected.push_back(std::move(element));
      }
      answer.status = http::status::bad_request;
      answer.body = JsonDump(body);
      rejected_.clear();
    }
    spdlog::debug("req={} source={} accepted={} duplicates={} stale={}", request_id_,
                  route.source.name, result->accepted, result->duplicates, result->stale);
    // A notification the platform re-sent (a duplicate) was reported when first stored.
    if (std::optional<SubscriptionNotice> notice = std::exchange(notice_, std::nullopt);
        notice && result->accepted > 0 && gw_.hooks_.on_subscription_notice) {
      gw_.hooks_.on_subscription_notice(*notice);
    }
    Send(route_, std::move(answer));
  }

  // `close`: the body was not read (refused from the headers of an Expect: 100-continue request).
  void Unauthorized(const absl::Status& status, bool close = false) {
    const std::string message(status.message());
    spdlog::info("req={} source={} 401: {}", request_id_, route_->source.name, message);
    Send(route_, ErrorAnswer(http::status::unauthorized, "bad_signature", message, close));
  }

  void BadPayload(const absl::Status& status) {
    const std::string message(status.message());
    spdlog::info("req={} source={} 400: {}", request_id_, route_->source.name, message);
    Send(route_, ErrorAnswer(http::status::bad_request, "bad_payload", message));
  }

  void Send(Route* route, Answer answer) {
    gw_.CountAnswer(route, static_cast<int>(answer.status));
    // The request's body is no longer needed (its events, if any, are stored): free it and its
    // room in the budget before the answer is written.
    if (parser_) std::string().swap(parser_->get().body());
    hold_.Release();
    // A 200 is only ever sent to a request whose signature verified: its address is the PIM's,
    // and gets priority for room in the body budget (BodyBudget::Trust).
    if (route != nullptr && answer.status == http::status::ok) gw_.budget_->Trust(slot_.client());
    const bool keep_alive = !answer.close && parser_ && parser_->is_header_done() &&
                            parser_->get().keep_alive() && !gw_.stopping_.load();
    res_ = {};
    res_.version(11);
    res_.result(answer.status);
    res_.set(http::field::server, "pimgate");
    res_.set(http::field::content_type, "application/json");
    res_.set("X-Request-Id", request_id_);
    if (answer.status == http::status::method_not_allowed) res_.set(http::field::allow, "POST");
    if (answer.retry_after_s)
      res_.set(http::field::retry_after, std::to_string(*answer.retry_after_s));
    res_.keep_alive(keep_alive);
    res_.body() = std::move(answer.body);
    res_.prepare_payload();
    lowest().expires_after(kWriteTimeout);
    http::async_write(
        derived().stream(), res_,
        [self = derived().shared_from_this(), keep_alive, route](beast::error_code ec,
                                                                 std::size_t) {
          if (ec) return;
          if (route != nullptr) {
            route->latency.Observe(std::chrono::steady_clock::now() - self->header_received_at_);
          }
          if (!keep_alive) return self->derived().DoEof();
          self->DoRead();
        });
  }

  Impl& gw_;
  HttpListener::Slot slot_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  http::response<http::string_body> res_;
  http::response<http::empty_body> continue_;  // the interim 100 Continue
  Route* route_ = nullptr;
  std::string request_id_;
  // When the current request's header was parsed: the start of its ingest latency.
  std::chrono::steady_clock::time_point header_received_at_;
  std::vector<std::pair<std::size_t, std::string>> rejected_;
  // The notification webhook being stored, reported to GatewayHooks once it is.
  std::optional<SubscriptionNotice> notice_;
  bool first_request_ = true;
  // The current request's room in the body budget (released by Send, or with the session).
  BodyBudget::Hold hold_;
  std::size_t reserved_ = 0;      // bytes of room hold_ stands for
  bool expect_continue_ = false;  // a 100 Continue is due before the body is read
  bool body_complete_ = false;    // the body is read: no eviction any more
  bool evicted_ = false;
  bool evict_pending_ = false;  // evicted before the room was granted: evict on the grant
  uint64_t request_seq_ = 0;    // numbers this session's reservations, for OnEvicted
};

class PlainSession : public HttpSession<PlainSession>,
                     public std::enable_shared_from_this<PlainSession> {
 public:
  PlainSession(Impl& gw, HttpListener::Slot slot, beast::tcp_stream stream,
               beast::flat_buffer buffer, bool tls_port)
      : HttpSession(gw, std::move(slot), std::move(buffer)),
        stream_(std::move(stream)),
        tls_port_(tls_port) {}

  void Run() { DoRead(); }
  beast::tcp_stream& stream() { return stream_; }
  bool RejectPlainOnTlsPort() const { return tls_port_; }
  void DoEof() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
  }

 private:
  beast::tcp_stream stream_;
  bool tls_port_;
};

class SslSession : public HttpSession<SslSession>, public std::enable_shared_from_this<SslSession> {
 public:
  SslSession(Impl& gw, HttpListener::Slot slot, beast::tcp_stream stream, ssl::context& ctx,
             beast::flat_buffer buffer)
      : HttpSession(gw, std::move(slot), std::move(buffer)), stream_(std::move(stream), ctx) {}

  void Run() {
    beast::get_lowest_layer(stream_).expires_after(gw_.config_.gateway.handshake_timeout);
    stream_.async_handshake(ssl::stream_base::server, buffer_.data(),
                            [self = shared_from_this()](beast::error_code ec, std::size_t used) {
                              if (ec) {
                                spdlog::debug("TLS handshake failed: {}", ec.message());
                                return;
                              }
                              self->buffer_.consume(used);
                              self->DoRead();
                            });
  }
  beast::ssl_stream<beast::tcp_stream>& stream() { return stream_; }
  bool RejectPlainOnTlsPort() const { return false; }
  void DoEof() {
    beast::get_lowest_layer(stream_).expires_after(kShutdownTimeout);
    stream_.async_shutdown([self = shared_from_this()](beast::error_code) {});
  }

 private:
  beast::ssl_stream<beast::tcp_stream> stream_;
};

// Looks at the first bytes of a connection on a TLS port: a TLS ClientHello goes to an
// SslSession; anything else (plain HTTP) gets a specific 400 instead of a handshake error.
class DetectSession : public std::enable_shared_from_this<DetectSession> {
 public:
  DetectSession(Impl& gw, HttpListener::Slot slot, tcp::socket socket)
      : gw_(gw), slot_(std::move(slot)), stream_(std::move(socket)), buffer_(BufferLimit(gw)) {}

  static std::size_t BufferLimit(const Impl& gw) {
    return gw.config_.gateway.header_limit + kReadChunk;
  }

  void Run() {
    stream_.expires_after(gw_.config_.gateway.handshake_timeout);
    beast::async_detect_ssl(
        stream_, buffer_, [self = shared_from_this()](beast::error_code ec, bool is_tls) {
          if (ec) return;
          if (is_tls) {
            std::make_shared<SslSession>(self->gw_, std::move(self->slot_),
                                         std::move(self->stream_), self->gw_.ssl_ctx_,
                                         std::move(self->buffer_))
                ->Run();
          } else {
            std::make_shared<PlainSession>(self->gw_, std::move(self->slot_),
                                           std::move(self->stream_), std::move(self->buffer_),
                                           /*tls_port=*/true)
                ->Run();
          }
        });
  }

 private:
  Impl& gw_;
  HttpListener::Slot slot_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
};

}  // namespace

absl::Status Gateway::Impl::Init() {
  BodyBudgetOptions budget;
  budget.max_buffered_bytes = config_.gateway.max_buffered_bytes != 0
                                  ? config_.gateway.max_buffered_bytes
                                  : DefaultMaxBufferedBytes(config_.gateway.body_limit);
  budget.max_connections = config_.gateway.max_connections;
  budget.max_connections_per_client = config_.gateway.max_connections_per_client;
  budget.body_limit = config_.gateway.body_limit;
  budget.max_wait = config_.gateway.buffer_wait;
  budget_ = std::make_unique<BodyBudget>(budget);
  for (const SourceConfig& source : config_.sources) {
    auto route = std::make_unique<Route>(
        source, source.timestamp_tolerance.value_or(config_.gateway.timestamp_tolerance));
    by_path_[source.path] = route.get();
    if (!source.notification_path.empty()) by_path_[source.notification_path] = route.get();
    routes_.push_back(std::move(route));
  }
  if (!config_.gateway.tls) return absl::OkStatus();
  tls_ = true;
  const TlsConfig& tls = *config_.gateway.tls;
  ssl_ctx_.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                       ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 |
                       ssl::context::single_dh_use);
  // OpenSSL keeps a 16 KiB read and write buffer per connection, idle or not; released while
  // idle, a thousand silent connections cost a thousand times less of them.
  SSL_CTX_set_mode(ssl_ctx_.native_handle(), SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_min_proto_version(ssl_ctx_.native_handle(), tls.min_version == TlsVersion::kTls1_3
                                                              ? TLS1_3_VERSION
                                                              : TLS1_2_VERSION);
  beast::error_code ec;
  ssl_ctx_.use_certificate_chain_file(tls.cert_file, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("gateway.tls.cert_file: cannot load ", tls.cert_file, ": ", ec.message()));
  }
  ssl_ctx_.use_private_key_file(tls.key_file, ssl::context::pem, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("gateway.tls.key_file: cannot load ", tls.key_file, ": ", ec.message()));
  }
  if (SSL_CTX_check_private_key(ssl_ctx_.native_handle()) != 1) {
    return absl::InvalidArgumentError(
        "gateway.tls: the private key does not match the certificate");
  }
  return absl::OkStatus();
}

Route* Gateway::Impl::FindRoute(std::string_view target) const {
  std::string_view path = target.substr(0, target.find('?'));
  auto it = by_path_.find(std::string(path));
  return it == by_path_.end() ? nullptr : it->second;
}

Route* Gateway::Impl::NotificationOwner(const PlatformNotification& notification,
                                        Route* received_by) const {
  // "https://host[:port]/path[?query]" -> "/path[?query]"; FindRoute drops the query.
  std::string_view destination = notification.destination;
  const std::size_t scheme = destination.find("://");
  if (scheme == std::string_view::npos) return received_by;
  const std::size_t path = destination.find('/', scheme + 3);
  if (path == std::string_view::npos) return received_by;
  Route* owner = FindRoute(destination.substr(path));
  if (owner == nullptr || owner->source.kind != SourceKind::kEventPlatform) return received_by;
  return owner;
}

absl::Status Gateway::Impl::Start() {
  if (absl::Status listening = listener_->Listen(config_.gateway.listen); !listening.ok()) {
    return listening;
  }
  spdlog::info(
      "gateway: request bodies before authentication limited to {} MiB in total "
      "(gateway.max_buffered_bytes{}); up to {} KiB each without waiting, {} MiB per client "
      "address beyond that",
      budget_->options().max_buffered_bytes >> 20,
      config_.gateway.max_buffered_bytes == 0 ? ", default for this machine" : "",
      budget_->free_share() >> 10, budget_->client_pool() >> 20);
  last_refusal_log_ = std::chrono::steady_clock::now();
  ScheduleBudgetTick();
  const int n = ThreadCount(config_.gateway);
  for (int i = 0; i < n; ++i) threads_.emplace_back([this] { ioc_->run(); });
  return absl::OkStatus();
}

void Gateway::Impl::OnConnection(tcp::socket socket, HttpListener::Slot slot) {
  if (stopping_.load()) return;  // the socket and the slot close here
  if (tls_) {
    std::make_shared<DetectSession>(*this, std::move(slot), std::move(socket))->Run();
    return;
  }
  beast::flat_buffer buffer(DetectSession::BufferLimit(*this));
  std::make_shared<PlainSession>(*this, std::move(slot), beast::tcp_stream(std::move(socket)),
                                 std::move(buffer), /*tls_port=*/false)
      ->Run();
}

void Gateway::Impl::ScheduleBudgetTick() {
  budget_timer_->expires_after(budget_->Waiting() > 0 ? kBudgetTickWaiting : kBudgetTickIdle);
  budget_timer_->async_wait([this](beast::error_code ec) {
    if (ec || stopping_.load()) return;
    budget_->Tick();
    if (std::chrono::steady_clock::now() - last_refusal_log_ >= kRefusalLogInterval) {
      last_refusal_log_ = std::chrono::steady_clock::now();
      LogRefusals();
    }
    ScheduleBudgetTick();
  });
}

// One line per client address refused anything in the last interval (the busiest first), so an
// operator sees who without a line per request. An address that authenticated recently (the
// PIM's) is always named, at error level: its refusals are lost events.
void Gateway::Impl::LogRefusals() {
  auto by_client = budget_->TakeRefusalsByClient();
  if (by_client.empty()) return;
  std::vector<std::pair<uint64_t, std::string>> order;
  for (const auto& [client, reasons] : by_client) {
    uint64_t total = 0;
    for (const auto& [reason, count] : reasons) total += count;
    order.emplace_back(total, client);
  }
  std::sort(order.begin(), order.end(), std::greater<>());
  uint64_t rest = 0;
  std::size_t logged = 0, rest_clients = 0;
  for (const auto& [total, client] : order) {
    const bool trusted = budget_->Trusted(client);
    if (!trusted && logged >= kRefusalLogMaxClients) {
      rest += total;
      ++rest_clients;
      continue;
    }
    std::string reasons =
        absl::StrJoin(by_client[client], ", ", [](std::string* out, const auto& entry) {
          absl::StrAppend(out, BudgetRefusalName(entry.first), "=", entry.second);
        });
    if (trusted) {
      spdlog::error(
          "gateway: refused {} connection(s) or request body(ies) from {} in the last {} s ({}), "
          "an address that sent authenticated requests: raise gateway.max_buffered_bytes or "
          "gateway.max_connections_per_client if it is the PIM",
          total, client, kRefusalLogInterval.count(), reasons);
    } else {
      ++logged;
      spdlog::warn(
          "gateway: refused {} connection(s) or request body(ies) from {} in the last {} s ({})",
          total, client, kRefusalLogInterval.count(), reasons);
    }
  }
  if (rest > 0) {
    spdlog::warn("gateway: and {} more from {} other address(es) in the last {} s", rest,
                 rest_clients, kRefusalLogInterval.count());
  }
}

void Gateway::Impl::Stop() {
  if (stopping_.exchange(true)) return;
  listener_->Stop();
  // Requests whose events are being written must get their answer: the log will store them
  // anyway, and an unanswered sender would retry (or, for the legacy API, count a failure).
  const auto deadline = std::chrono::steady_clock::now() + kStopDrainTimeout;
  while (appends_in_flight_.load() > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // let the last answers flush
  ioc_->stop();
  for (std::thread& t : threads_) t.join();
  threads_.clear();
  // Requests waiting for room go away with the server, without an answer.
  if (budget_) {
    budget_->Shutdown();
    LogRefusals();
  }
}

GatewayStats Gateway::Impl::Stats() const {
  GatewayStats stats;
  for (const auto& route : routes_) {
    GatewayStats::Source& s = stats.sources.emplace_back();
    s.name = route->source.name;
    s.requests_by_code = route->codes.Snapshot();
    s.events_accepted = route->counters.events_accepted.load(std::memory_order_relaxed);
    s.duplicates = route->counters.duplicates.load(std::memory_order_relaxed);
    s.stale = route->counters.stale.load(std::memory_order_relaxed);
    s.quarantined = route->counters.quarantined.load(std::memory_order_relaxed);
    s.latency = route->latency.Snapshot();
  }
  stats.unrouted_by_code = unrouted_.Snapshot();
  stats.connections_open = listener_->open_connections();
  stats.connections_refused = listener_->refused_connections();
  const BodyBudget::Stats budget = budget_->stats();
  stats.buffered_bytes = budget.buffered_bytes;
  stats.max_buffered_bytes = budget_->options().max_buffered_bytes;
  stats.body_waits = budget.waiting;
  stats.refusals = budget.refusals;
  return stats;
}

absl::StatusOr<std::unique_ptr<Gateway>> Gateway::Create(const Config& config, EventLog* log,
                                                         GatewayHooks hooks) {
  auto impl = std::make_unique<Impl>(config, log, std::move(hooks));
  if (absl::Status status = impl->Init(); !status.ok()) return status;
  return std::unique_ptr<Gateway>(new Gateway(std::move(impl)));
}

Gateway::Gateway(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Gateway::~Gateway() { Stop(); }
absl::Status Gateway::Start() { return impl_->Start(); }
void Gateway::Stop() { impl_->Stop(); }
uint16_t Gateway::port() const { return impl_->listener_->port(); }
bool Gateway::tls() const { return impl_->tls_; }
GatewayStats Gateway::stats() const { return impl_->Stats(); }

}  // namespace pimgate
