// AkeneoClient over libcurl (pim/http_client.h): a pool of `max_concurrency` worker threads, each
// owning one HttpConnection (its kept-alive connections, through the configured or environment's
// proxy), fed by one queue. Calls never run on a caller's thread, so gateway I/O threads never
// block on the PIM. OAuth, retries and paging are here; the transport is libcurl's.
#include "pim/akeneo_client.h"

#include <openssl/ssl.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <deque>
#include <future>
#include <iterator>
#include <memory>
#include <optional>
#include <random>
#include <thread>
#include <utility>
#include <variant>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/ascii.h"
#include "absl/strings/cord.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/logging.h"
#include "google/protobuf/util/json_util.h"
#include "nlohmann/json.hpp"
#include "pim/http_client.h"
#include "pim/worker_pool.h"
#include "spdlog/spdlog.h"

namespace pimgate {
namespace {

using Clock = std::chrono::steady_clock;

// Largest response body accepted; a larger one fails the call (ResourceExhausted) rather than
// growing memory without bound. A page of 100 products with many values stays far below it.
constexpr std::size_t kMaxResponseBytes = 64 * 1024 * 1024;
// A Retry-After longer than this is capped (a broken proxy must not park a call for a day).
constexpr std::chrono::seconds kMaxRetryAfter{300};
// Backoff jitter: each wait is randomized by +-20%.
constexpr double kBackoffJitter = 0.2;
// A token is renewed when less than this much of its life is left: a tenth of `expires_in`,
// at most 60 s (Akeneo's tokens live 3600 s, so they are renewed a minute early).
constexpr int kRenewFractionDivisor = 10;
constexpr std::chrono::seconds kMaxRenewMargin{60};
// Longest PIM error text kept in a status message.
constexpr std::size_t kMaxErrorText = 300;
// Most pages ForEachPage follows before concluding the PIM loops (2 million items at 100/page).
constexpr int kMaxPages = 20'000;

constexpr char kTokenPath[] = "/api/oauth/v1/token";

std::string Str(absl::string_view text) { return std::string(text); }

// A URL or target quoted for a message: escaped, and cut after 200 characters.
std::string CHexEscapeShort(absl::string_view text) {
  constexpr size_t kShown = 200;
  if (text.size() > kShown) {
    return absl::StrCat("\"", absl::CHexEscape(text.substr(0, kShown)), "...\"");
  }
  return absl::StrCat("\"", absl::CHexEscape(text), "\"");
}

// ---- URLs -------------------------------------------------------------------------------------

// scheme://host:port of the PIM. Hosts are lower-case, IPv6 without brackets.
struct Origin {
  bool tls = true;
  std::string host;
  uint16_t port = 443;

  bool ipv6() const { return host.find(':') != std::string::npos; }
  std::string HostPort() const {
    return ipv6() ? absl::StrCat("[", host, "]:", port) : absl::StrCat(host, ":", port);
  }
  std::string Describe() const { return absl::StrCat(tls ? "https://" : "http://", HostPort()); }
  bool operator==(const Origin& other) const {
    return tls == other.tls && host == other.host && port == other.port;
  }
};

// Splits an absolute URL into its origin and its path with query (fragment dropped; "/" when
// the URL has no path). Refuses user info, which the client never sends.
absl::StatusOr<std::pair<Origin, std::string>> SplitUrl(absl::string_view url) {
  Origin origin;
  if (absl::StartsWithIgnoreCase(url, "https://")) {
    url.remove_prefix(8);
  } else if (absl::StartsWithIgnoreCase(url, "http://")) {
    url.remove_prefix(7);
    origin.tls = false;
    origin.port = 80;
  } else {
    return absl::InvalidArgumentError("must start with https:// or http://");
  }
  const size_t authority_end = url.find_first_of("/?#");
  absl::string_view authority = url.substr(0, authority_end);
  std::string rest = authority_end == absl::string_view::npos ? "" : Str(url.substr(authority_end));
  if (const size_t hash = rest.find('#'); hash != std::string::npos) rest.resize(hash);
  if (rest.empty() || rest.front() == '?') rest.insert(0, "/");
  if (absl::StrContains(authority, "@")) return absl::InvalidArgumentError("has user info");
  absl::string_view host = authority;
  absl::string_view port;
  bool has_port = false;
  if (absl::StartsWith(authority, "[")) {
    const size_t close = authority.find(']');
    if (close == absl::string_view::npos) return absl::InvalidArgumentError("has a bad IPv6 host");
    host = authority.substr(1, close - 1);
    absl::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (!absl::ConsumePrefix(&after, ":")) return absl::InvalidArgumentError("has a bad port");
      port = after;
      has_port = true;
    }
  } else if (const size_t colon = authority.find(':'); colon != absl::string_view::npos) {
    host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
    has_port = true;
  }
  if (host.empty()) return absl::InvalidArgumentError("has no host");
  if (has_port) {
    int number = 0;
    if (port.empty() || !std::all_of(port.begin(), port.end(), absl::ascii_isdigit) ||
        !absl::SimpleAtoi(port, &number) || number < 1 || number > 65535) {
      return absl::InvalidArgumentError("has a bad port");
    }
    origin.port = static_cast<uint16_t>(number);
  }
  origin.host = absl::AsciiStrToLower(host);
  return std::make_pair(std::move(origin), std::move(rest));
}

// A request target must be sent as is: no spaces or control characters (header injection).
bool IsSafeTarget(absl::string_view target) {
  return !target.empty() && target.front() == '/' &&
         std::all_of(target.begin(), target.end(), [](char c) {
           const auto byte = static_cast<unsigned char>(c);
           return byte > 0x20 && byte < 0x7f;
         });
}

// ---- Answers ----------------------------------------------------------------------------------

struct HttpAnswer {
  int status = 0;
  std::string body;
  std::string retry_after;  // header value, empty when absent
};

// Why an exchange failed below HTTP: connection refused, reset, timeout, TLS failure.
struct TransportFailure {
  std::string message;
  bool timeout = false;
  // A certificate that fails verification will fail the same way on every attempt.
  bool permanent = false;
  // ResourceExhausted (response above kMaxResponseBytes): permanent too.
  bool too_large = false;
  // Aborted by the client's own shutdown (Cancelled): not the PIM's failure, never retried.
  bool cancelled = false;
};

// A failed HttpConnection exchange as the retry logic sees it (pim/http_client.h maps libcurl's
// errors to these codes).
TransportFailure TransportFailureOf(const absl::Status& status) {
  TransportFailure failure;
  failure.message = std::string(status.message());
  switch (status.code()) {
    case absl::StatusCode::kDeadlineExceeded:
      failure.timeout = true;
      break;
    case absl::StatusCode::kFailedPrecondition:  // the PIM's certificate is not trusted
      failure.permanent = true;
      failure.message =
          absl::StrCat("certificate verification failed: ", failure.message,
                       " (set rest.ca_file to the CA that signed the PIM's certificate)");
      break;
    case absl::StatusCode::kResourceExhausted:
      failure.permanent = true;
      failure.too_large = true;
      break;
    case absl::StatusCode::kCancelled:
      failure.cancelled = true;
      failure.permanent = true;
      break;
    case absl::StatusCode::kInvalidArgument:
      failure.permanent = true;
      break;
    default:  // Unavailable: DNS, refused, reset, proxy, TLS handshake: worth another attempt
      break;
  }
  return failure;
}

// The PIM's explanation in an error answer: Akeneo sends {"code":..,"message":".."}; anything
// else (a proxy's HTML page) is quoted, shortened and stripped of control characters.
std::string PimMessage(const std::string& body) {
  google::protobuf::Struct parsed;
  if (google::protobuf::util::JsonStringToMessage(body, &parsed).ok()) {
    const auto& fields = parsed.fields();
    if (auto it = fields.find("message"); it != fields.end() && it->second.has_string_value()) {
      std::string message = it->second.string_value();
      if (message.size() > kMaxErrorText) message = message.substr(0, kMaxErrorText) + "...";
      return message;
    }
  }
  std::string text = body.substr(0, kMaxErrorText);
  for (char& c : text) {
    if (static_cast<unsigned char>(c) < 0x20) c = ' ';
  }
  if (body.size() > kMaxErrorText) text += "...";
  return text.empty() ? "(empty body)" : absl::StrCat("\"", text, "\"");
}

// Marks a status made from an answer whose body is Akeneo's JSON error (IsAkeneoNotFound).
constexpr char kAkeneoErrorPayload[] = "pimgate/akeneo-error-status";
// Marks a status made from a 403 answer (IsForbidden).
constexpr char kForbiddenPayload[] = "pimgate/http-403";

// Akeneo answers errors with {"code": <HTTP status>, "message": "..."}.
bool IsAkeneoErrorBody(const std::string& body) {
  google::protobuf::Struct parsed;
  if (!google::protobuf::util::JsonStringToMessage(body, &parsed).ok()) return false;
  const auto& fields = parsed.fields();
  const auto code = fields.find("code");
  const auto message = fields.find("message");
  return code != fields.end() && code->second.has_number_value() && message != fields.end() &&
         message->second.has_string_value();
}

// Parses Retry-After: delay-seconds or an HTTP-date. nullopt when absent or unreadable.
std::optional<std::chrono::milliseconds> ParseRetryAfter(absl::string_view value) {
  value = absl::StripAsciiWhitespace(value);
  if (value.empty()) return std::nullopt;
  int64_t seconds = 0;
  if (absl::SimpleAtoi(value, &seconds)) {
    if (seconds < 0) return std::nullopt;
    return std::chrono::milliseconds(std::min<int64_t>(seconds, kMaxRetryAfter.count()) * 1000);
  }
  absl::Time when;
  std::string error;
  if (absl::ParseTime("%a, %d %b %Y %H:%M:%S GMT", Str(value), absl::UTCTimeZone(), &when,
                      &error)) {
    const absl::Duration delay = std::max(when - absl::Now(), absl::ZeroDuration());
    return std::chrono::milliseconds(
        std::min<int64_t>(absl::ToInt64Milliseconds(delay), kMaxRetryAfter.count() * 1000));
  }
  return std::nullopt;
}

// ---- The client ---------------------------------------------------------------------------------

// How one attempt of a call ended.
struct AttemptOutcome {
  absl::Status status;  // OK: `body` is the answer
  std::string body;
  bool retryable = false;
  bool timeout = false;
  std::optional<std::chrono::milliseconds> retry_after;
};

// The client's state and its workers. Owned jointly by the AkeneoClient handed out
// (AkeneoClientFront) and by every worker thread, so that it outlives the last worker: the last
// reference to an AkeneoClient may be dropped on one of its own workers (a callback's captures
// holding it, as a Hydrator's do, are destroyed there once the callback has returned). That
// worker goes on running WorkerLoop (re-reading the pool, cancelling what is queued) after the
// AkeneoClient is gone; its own reference keeps all of that alive until it is done (WorkerPool).
class AkeneoClientImpl final : public std::enable_shared_from_this<AkeneoClientImpl> {
 public:
  using BodyCallback = AkeneoClient::BodyCallback;

  AkeneoClientImpl(RestConfig config, Origin origin)
      : config_(std::move(config)), origin_(std::move(origin)) {
    http_options_.timeout = config_.timeout;
    http_options_.ca_file = config_.ca_file;
    http_options_.insecure_skip_verify = config_.insecure_skip_verify;
    http_options_.proxy = config_.proxy;
    http_options_.max_response_bytes = kMaxResponseBytes;
  }

  // Starts the workers, each holding a reference to this state. Called once, right after
  // construction (shared_from_this() needs the shared_ptr to exist).
  void Start() {
    pool_.Start(config_.max_concurrency, shared_from_this(),
                [this](uint32_t index) { WorkerLoop(index); });
  }

  // Runs once every worker is done with it (each holds a reference) and AkeneoClientFront has
  // shut it down: every worker is joined or adopted by then.
  ~AkeneoClientImpl() = default;

  void GetAsync(std::string target, BodyCallback done) {
    Call call{ResolveTarget(target), std::move(done), false, ""};
    if (pool_.Post(call)) return;
    call.done(absl::CancelledError(
        absl::StrCat("Akeneo client for ", origin_.Describe(), " is shut down")));
  }

  const std::string& base_url() const { return config_.base_url.spec(); }

  absl::StatusOr<std::string> AccessToken(std::string_view rejected) {
    std::promise<absl::StatusOr<std::string>> promise;
    std::future<absl::StatusOr<std::string>> future = promise.get_future();
    Call call;
    call.token_only = true;
    call.rejected = std::string(rejected);
    call.done = [&promise](absl::StatusOr<std::string> result) {
      promise.set_value(std::move(result));
    };
    if (!pool_.Post(call)) {
      return absl::CancelledError(
          absl::StrCat("Akeneo client for ", origin_.Describe(), " is shut down"));
    }
    return future.get();
  }

  AkeneoClientStats stats() const {
    AkeneoClientStats stats;
    stats.calls = calls_.load(std::memory_order_relaxed);
    stats.token_requests = token_requests_.load(std::memory_order_relaxed);
    stats.throttled = throttled_.load(std::memory_order_relaxed);
    stats.retries = retries_.load(std::memory_order_relaxed);
    stats.failures = failures_.load(std::memory_order_relaxed);
    return stats;
  }

  // Also from a callback, or from a callback's captures being destroyed (see WorkerPool).
  void Shutdown() { pool_.Shutdown(); }

 private:
  struct Call {
    absl::StatusOr<std::string> target;  // path and query, or why it was refused
    BodyCallback done;
    // AccessToken(): no request to the REST API, `done` gets the token itself.
    bool token_only = false;
    std::string rejected;  // a token to discard first (AccessToken's argument)
  };

  // A path with its query, or an absolute URL on the configured origin, as the request target.
  absl::StatusOr<std::string> ResolveTarget(const std::string& target) const {
    if (absl::StartsWith(target, "/")) {
      if (!IsSafeTarget(target)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "request target contains spaces or control characters: ", CHexEscapeShort(target)));
      }
      return target;
    }
    absl::StatusOr<std::pair<Origin, std::string>> split = SplitUrl(target);
    if (!split.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("request target must be a path or an absolute URL on ", origin_.Describe(),
                       "; ", CHexEscapeShort(target), " ", split.status().message()));
    }
    if (!(split->first == origin_)) {
      return absl::InvalidArgumentError(
          absl::StrCat("refusing to follow ", CHexEscapeShort(target), ": it is on ",
                       split->first.Describe(), ", not on the configured PIM ", origin_.Describe(),
                       " (the access token is only ever sent to the configured origin)"));
    }
    if (!IsSafeTarget(split->second)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "request target contains spaces or control characters: ", CHexEscapeShort(target)));
    }
    return std::move(split->second);
  }

  bool ShuttingDown() const { return pool_.stopping(); }

  // Waits `delay` unless the client shuts down first; false then.
  bool SleepUnlessShutdown(std::chrono::milliseconds delay) {
    return pool_.SleepUnlessShutdown(delay);
  }

  void WorkerLoop(uint32_t index) {
    HttpConnection connection(http_options_);
    std::mt19937_64 random(std::random_device{}() ^ (uint64_t{index} << 32));
    while (std::optional<Call> next = pool_.Next()) {
      Call& call = *next;
      absl::StatusOr<std::string> result;
      if (call.token_only) {
        if (!call.rejected.empty()) DiscardToken(call.rejected);
        result = Perform("the access token request", random, [&] {
          absl::StatusOr<std::string> token;
          AttemptOutcome outcome = AccessToken(connection, token);
          if (outcome.status.ok()) outcome.body = *std::move(token);
          return outcome;
        });
      } else if (!call.target.ok()) {
        call.done(call.target.status());
        continue;
      } else {
        const std::string& target = *call.target;
        result = Perform(absl::StrCat("GET ", target), random,
                         [&] { return AttemptGet(connection, target); });
      }
      if (!result.ok() && result.status().code() != absl::StatusCode::kCancelled) {
        failures_.fetch_add(1, std::memory_order_relaxed);
      }
      call.done(std::move(result));
    }
    // Shut down: what is still queued is cancelled here, on a client thread.
    for (Call& call : pool_.TakeUnstarted()) {
      call.done(absl::CancelledError(absl::StrCat("Akeneo client for ", origin_.Describe(),
                                                  " shut down before the call was sent")));
    }
  }

  std::chrono::milliseconds Backoff(uint32_t failed_attempts, std::mt19937_64& random) const {
    double delay = static_cast<double>(config_.initial_backoff.count());
    for (uint32_t i = 1; i < failed_attempts && delay < config_.max_backoff.count(); ++i) {
      delay *= 2;
    }
    delay = std::min(delay, static_cast<double>(config_.max_backoff.count()));
    std::uniform_real_distribution<double> jitter(1 - kBackoffJitter, 1 + kBackoffJitter);
    return std::chrono::milliseconds(static_cast<int64_t>(delay * jitter(random)));
  }

  // One call (`what`: "GET <target>") with its retries. Runs on a worker thread.
  absl::StatusOr<std::string> Perform(absl::string_view what, std::mt19937_64& random,
                                      const std::function<AttemptOutcome()>& attempt_once) {
    for (uint32_t attempt = 1;; ++attempt) {
      if (ShuttingDown()) {
        return absl::CancelledError(
            absl::StrCat("Akeneo client shut down before ", what, " could be (re)sent"));
      }
      AttemptOutcome outcome = attempt_once();
      if (outcome.status.ok()) return std::move(outcome.body);
      if (!outcome.retryable) return outcome.status;
      if (attempt >= config_.max_attempts) {
        const std::string message =
            absl::StrCat(what, " failed after ", attempt,
                         attempt == 1 ? " attempt: " : " attempts: ", outcome.status.message());
        spdlog::debug("akeneo: {}", message);
        if (outcome.timeout) return absl::DeadlineExceededError(message);
        return absl::UnavailableError(message);
      }
      std::chrono::milliseconds delay = Backoff(attempt, random);
      if (outcome.retry_after.has_value() && *outcome.retry_after > delay) {
        delay = *outcome.retry_after;
      }
      retries_.fetch_add(1, std::memory_order_relaxed);
      // 429s mean pimgate is using more of the PIM than it allows: worth a warning. Other
      // failures are retried quietly; the caller reports the call if it finally fails.
      if (outcome.retry_after.has_value()) {
        spdlog::warn("akeneo: throttled by {}: {}; retrying in {} ms (attempt {}/{})",
                     origin_.Describe(), std::string(outcome.status.message()), delay.count(),
                     attempt + 1, config_.max_attempts);
      } else {
        spdlog::debug("akeneo: {}; retrying in {} ms (attempt {}/{})",
                      std::string(outcome.status.message()), delay.count(), attempt + 1,
                      config_.max_attempts);
      }
      if (!SleepUnlessShutdown(delay)) {
        return absl::CancelledError(
            absl::StrCat("Akeneo client shut down while ", what, " waited to be retried"));
      }
    }
  }

  // Classifies a transport failure or an HTTP answer that is not a success.
  AttemptOutcome FailureOutcome(absl::string_view what, const TransportFailure& failure) {
    AttemptOutcome outcome;
    if (failure.cancelled) {
      // The caller sees a shutdown as such (Cancelled, not counted as a failure), whether it
      // came while the call waited to be retried or, as here, while its request was in flight.
      outcome.status = absl::CancelledError(
          absl::StrCat("Akeneo client shut down while ", what, " was in flight"));
    } else if (failure.too_large) {
      outcome.status = absl::ResourceExhaustedError(absl::StrCat(what, ": ", failure.message));
    } else {
      outcome.status = absl::UnavailableError(absl::StrCat(what, ": ", failure.message));
    }
    outcome.retryable = !failure.permanent;
    outcome.timeout = failure.timeout;
    return outcome;
  }

  AttemptOutcome HttpFailureOutcome(absl::string_view what, const HttpAnswer& answer) {
    AttemptOutcome outcome;
    const std::string detail =
        absl::StrCat(what, ": HTTP ", answer.status, " ", PimMessage(answer.body));
    if (answer.status == 429) {
      throttled_.fetch_add(1, std::memory_order_relaxed);
      outcome.status = absl::UnavailableError(detail);
      outcome.retryable = true;
      outcome.retry_after = ParseRetryAfter(answer.retry_after);
      if (!outcome.retry_after.has_value()) outcome.retry_after = std::chrono::milliseconds(0);
    } else if (answer.status >= 500 || answer.status == 408) {
      // Akeneo's good practices list 408, 429 and 5xx as the transient errors to retry.
      outcome.status = absl::UnavailableError(detail);
      outcome.retryable = true;
      // A 503 may carry Retry-After too.
      outcome.retry_after = ParseRetryAfter(answer.retry_after);
    } else if (answer.status == 404) {
      outcome.status = absl::NotFoundError(detail);
      if (IsAkeneoErrorBody(answer.body)) {
        outcome.status.SetPayload(kAkeneoErrorPayload, absl::Cord(absl::StrCat(answer.status)));
      }
    } else if (answer.status == 401) {
      outcome.status = absl::UnauthenticatedError(detail);
    } else {
      outcome.status = absl::FailedPreconditionError(detail);
      if (answer.status == 403) outcome.status.SetPayload(kForbiddenPayload, absl::Cord("403"));
    }
    return outcome;
  }

  HttpRequest NewRequest(const char* method, const std::string& target) const {
    HttpRequest request;
    request.method = method;
    request.url = absl::StrCat(origin_.Describe(), target);
    request.headers.emplace_back("Accept", "application/json");
    return request;
  }

  // One exchange on `connection`; a shutdown aborts it at once.
  std::variant<HttpAnswer, TransportFailure> Exchange(HttpConnection& connection,
                                                      const HttpRequest& request) {
    absl::StatusOr<HttpResponse> response =
        connection.Exchange(request, [this] { return pool_.stopping(); });
    if (!response.ok()) {
      // HttpConnection's messages start with the method and URL, which `what` already names.
      absl::Status status = response.status();
      absl::string_view message = status.message();
      absl::ConsumePrefix(&message, absl::StrCat(request.method, " ", request.url, ": "));
      return TransportFailureOf(absl::Status(status.code(), message));
    }
    HttpAnswer answer;
    answer.status = response->status;
    answer.retry_after = std::string(response->Header("Retry-After"));
    answer.body = std::move(response->body);
    return answer;
  }

  AttemptOutcome AttemptGet(HttpConnection& connection, const std::string& target) {
    const std::string what = absl::StrCat("GET ", target);
    bool renewed = false;
    for (;;) {
      absl::StatusOr<std::string> token;
      if (AttemptOutcome failed = AccessToken(connection, token); !failed.status.ok()) {
        return failed;
      }
      HttpRequest request = NewRequest("GET", target);
      request.headers.emplace_back("Authorization", absl::StrCat("Bearer ", *token));
      calls_.fetch_add(1, std::memory_order_relaxed);
      std::variant<HttpAnswer, TransportFailure> result = Exchange(connection, request);
      if (auto* failure = std::get_if<TransportFailure>(&result)) {
        return FailureOutcome(what, *failure);
      }
      HttpAnswer& answer = std::get<HttpAnswer>(result);
      if (answer.status >= 200 && answer.status < 300) {
        AttemptOutcome outcome;
        outcome.body = std::move(answer.body);
        return outcome;
      }
      if (answer.status == 401 && !renewed) {
        // The token expired early or was revoked: renew it once and repeat the call.
        renewed = true;
        retries_.fetch_add(1, std::memory_order_relaxed);
        spdlog::debug("akeneo: {} answered 401 to GET {}; renewing the access token",
                      origin_.Describe(), target);
        DiscardToken(*token);
        continue;
      }
      return HttpFailureOutcome(what, answer);
    }
  }

  // ---- OAuth ----

  struct TokenState {
    std::string access_token;
    std::string refresh_token;
    Clock::time_point renew_at;    // renew from this point on
    Clock::time_point expires_at;  // the PIM refuses it after this
  };

  // Sets `token` to a usable access token, renewing it first when needed. Only one worker renews
  // at a time; the others wait for its result.
  AttemptOutcome AccessToken(HttpConnection& connection, absl::StatusOr<std::string>& token) {
    std::string refresh_token;
    {
      absl::MutexLock lock(&token_mu_);
      for (;;) {
        const Clock::time_point now = Clock::now();
        if (!token_.access_token.empty() && now < token_.renew_at) {
          token = token_.access_token;
          return AttemptOutcome{};
        }
        if (!renewing_) break;
        token_mu_.Await(absl::Condition(
            +[](bool* renewing) { return !*renewing; }, &renewing_));
      }
      renewing_ = true;
      refresh_token = token_.refresh_token;
    }
    AttemptOutcome outcome = RenewToken(connection, refresh_token);
    absl::MutexLock lock(&token_mu_);
    renewing_ = false;
    if (outcome.status.ok()) {
      token = token_.access_token;
      return outcome;
    }
    // The renewal failed, but a token renewed early may still be good for a while.
    if (!token_.access_token.empty() && Clock::now() < token_.expires_at) {
      spdlog::debug(
          "akeneo: early token renewal failed ({}); using the current token until it "
          "expires",
          std::string(outcome.status.message()));
      token = token_.access_token;
      return AttemptOutcome{};
    }
    return outcome;
  }

  void DiscardToken(const std::string& rejected) {
    absl::MutexLock lock(&token_mu_);
    if (token_.access_token == rejected) token_.access_token.clear();
  }

  // A refresh_token grant when there is a refresh token, then (or else) a password grant.
  AttemptOutcome RenewToken(HttpConnection& connection, const std::string& refresh_token) {
    if (!refresh_token.empty()) {
      AttemptOutcome refreshed = RequestToken(
          connection,
          nlohmann::ordered_json{{"grant_type", "refresh_token"}, {"refresh_token", refresh_token}}
              .dump(),
          "refresh_token");
      // A refused refresh (expired, already used) falls back to the password grant; a PIM that
      // is down or throttling does not.
      if (refreshed.status.ok() || refreshed.retryable) return refreshed;
      spdlog::debug("akeneo: {} refused the refresh token ({}); using the password grant",
                    origin_.Describe(), std::string(refreshed.status.message()));
    }
    return RequestToken(connection,
                        nlohmann::ordered_json{{"grant_type", "password"},
                                               {"username", config_.username},
                                               {"password", config_.password.value}}
                            .dump(),
                        "password");
  }

  // Never lets a credential through in a message (a PIM or proxy could echo one back): the
  // password, the client secret, and the HTTP Basic credential made of it.
  std::string Scrub(std::string text) const {
    const std::string basic =
        absl::Base64Escape(absl::StrCat(config_.client_id, ":", config_.secret.value));
    for (const std::string* secret : {&config_.password.value, &config_.secret.value, &basic}) {
      if (!secret->empty()) absl::StrReplaceAll({{*secret, "<redacted>"}}, &text);
    }
    return text;
  }

  AttemptOutcome RequestToken(HttpConnection& connection, std::string body,
                              absl::string_view grant) {
    const std::string what =
        absl::StrCat("token request (", grant, " grant) to ", origin_.Describe(), kTokenPath);
    HttpRequest request = NewRequest("POST", kTokenPath);
    request.headers.emplace_back(
        "Authorization",
        absl::StrCat("Basic ", absl::Base64Escape(
                                   absl::StrCat(config_.client_id, ":", config_.secret.value))));
    request.headers.emplace_back("Content-Type", "application/json");
    request.body = std::move(body);
    token_requests_.fetch_add(1, std::memory_order_relaxed);
    const Clock::time_point sent = Clock::now();
    std::variant<HttpAnswer, TransportFailure> result = Exchange(connection, request);
    if (auto* failure = std::get_if<TransportFailure>(&result)) {
      return FailureOutcome(what, *failure);
    }
    const HttpAnswer& answer = std::get<HttpAnswer>(result);
    if (answer.status < 200 || answer.status >= 300) {
      AttemptOutcome outcome = HttpFailureOutcome(what, answer);
      // A 5xx, 408 or 429 is retried, logged and may end a call: its message (the PIM's words,
      // which an error page may fill with the request it got) is scrubbed too.
      outcome.status =
          absl::Status(outcome.status.code(), Scrub(std::string(outcome.status.message())));
      if (!outcome.retryable) {
        // Wrong client id, secret, user or password: the PIM's own words, never the credentials.
        outcome.status = absl::UnauthenticatedError(Scrub(absl::StrCat(
            "the PIM refused the ", what, " for client_id ", config_.client_id, " and username ",
            config_.username, ": HTTP ", answer.status, " ", PimMessage(answer.body))));
      }
      return outcome;
    }
    google::protobuf::Struct parsed;
    const auto parse_status = google::protobuf::util::JsonStringToMessage(answer.body, &parsed);
    const auto& fields = parsed.fields();
    const auto access = fields.find("access_token");
    if (!parse_status.ok() || access == fields.end() || !access->second.has_string_value() ||
        access->second.string_value().empty()) {
      AttemptOutcome outcome;
      outcome.status =
          absl::UnauthenticatedError(absl::StrCat(what, ": the answer has no access_token"));
      return outcome;
    }
    std::chrono::seconds lifetime{3600};
    if (auto it = fields.find("expires_in");
        it != fields.end() && it->second.has_number_value() && it->second.number_value() > 0) {
      // A PIM set to issue tokens that "never" expire may say so with a huge number: a year is
      // as good as forever here, and keeps the deadline arithmetic (nanoseconds) in range.
      constexpr double kLongestLifetimeSeconds = 365.0 * 86'400;
      lifetime = std::chrono::seconds(
          static_cast<int64_t>(std::min(it->second.number_value(), kLongestLifetimeSeconds)));
    }
    const Clock::duration margin = std::min<Clock::duration>(
        std::chrono::duration_cast<Clock::duration>(lifetime) / kRenewFractionDivisor,
        kMaxRenewMargin);
    absl::MutexLock lock(&token_mu_);
    token_.access_token = access->second.string_value();
    if (auto it = fields.find("refresh_token");
        it != fields.end() && it->second.has_string_value()) {
      token_.refresh_token = it->second.string_value();
    }
    // Measured from when the request was sent: the token's life started no earlier.
    token_.expires_at = sent + lifetime;
    token_.renew_at = token_.expires_at - margin;
    spdlog::debug("akeneo: new access token from {} ({} grant), valid {} s", origin_.Describe(),
                  std::string(grant), lifetime.count());
    return AttemptOutcome{};
  }

  const RestConfig config_;
  const Origin origin_;
  HttpClientOptions http_options_;  // set by the constructor, read by the workers
  WorkerPool<Call> pool_;

  absl::Mutex token_mu_;
  TokenState token_ ABSL_GUARDED_BY(token_mu_);
  bool renewing_ ABSL_GUARDED_BY(token_mu_) = false;

  std::atomic<uint64_t> calls_{0};
  std::atomic<uint64_t> token_requests_{0};
  std::atomic<uint64_t> throttled_{0};
  std::atomic<uint64_t> retries_{0};
  std::atomic<uint64_t> failures_{0};
};

// The AkeneoClient handed out: shuts the shared state down when it goes (see AkeneoClientImpl).
class AkeneoClientFront final : public AkeneoClient {
 public:
  explicit AkeneoClientFront(std::shared_ptr<AkeneoClientImpl> impl) : impl_(std::move(impl)) {}
  ~AkeneoClientFront() override { impl_->Shutdown(); }

  void GetAsync(std::string target, BodyCallback done) override {
    impl_->GetAsync(std::move(target), std::move(done));
  }
  const std::string& base_url() const override { return impl_->base_url(); }
  absl::StatusOr<std::string> AccessToken(std::string_view rejected) override {
    return impl_->AccessToken(rejected);
  }
  AkeneoClientStats stats() const override { return impl_->stats(); }
  void Shutdown() override { impl_->Shutdown(); }

 private:
  const std::shared_ptr<AkeneoClientImpl> impl_;
};

// Parses one list page: `_embedded.items` and `_links.next.href`.
absl::StatusOr<AkeneoPage> ParsePage(const std::string& body, const std::string& target) {
  google::protobuf::Struct root;
  const auto status = google::protobuf::util::JsonStringToMessage(body, &root);
  if (!status.ok()) {
    return absl::DataLossError(absl::StrCat(
        "GET ", target, ": the answer is not a JSON object: ", status.message().ToString()));
  }
  auto& fields = *root.mutable_fields();
  auto embedded = fields.find("_embedded");
  if (embedded == fields.end() || !embedded->second.has_struct_value()) {
    return absl::DataLossError(
        absl::StrCat("GET ", target, ": the answer has no _embedded.items (not a list page)"));
  }
  auto& embedded_fields = *embedded->second.mutable_struct_value()->mutable_fields();
  auto items = embedded_fields.find("items");
  if (items == embedded_fields.end() || !items->second.has_list_value()) {
    return absl::DataLossError(
        absl::StrCat("GET ", target, ": the answer has no _embedded.items list"));
  }
  AkeneoPage page;
  auto* values = items->second.mutable_list_value()->mutable_values();
  page.items.reserve(values->size());
  for (int i = 0; i < values->size(); ++i) {
    google::protobuf::Value& value = (*values)[i];
    if (!value.has_struct_value()) {
      return absl::DataLossError(
          absl::StrCat("GET ", target, ": _embedded.items[", i, "] is not an object"));
    }
    page.items.push_back(std::move(*value.mutable_struct_value()));
  }
  if (auto links = fields.find("_links");
      links != fields.end() && links->second.has_struct_value()) {
    const auto& link_fields = links->second.struct_value().fields();
    if (auto next = link_fields.find("next");
        next != link_fields.end() && next->second.has_struct_value()) {
      const auto& next_fields = next->second.struct_value().fields();
      if (auto href = next_fields.find("href");
          href != next_fields.end() && href->second.has_string_value()) {
        page.next = href->second.string_value();
      }
    }
  }
  return page;
}

}  // namespace

absl::StatusOr<std::unique_ptr<AkeneoClient>> AkeneoClient::Create(const RestConfig& config) {
  absl::StatusOr<std::pair<Origin, std::string>> split = SplitUrl(config.base_url.spec());
  if (!split.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("rest.base_url \"",
                                                   absl::CHexEscape(config.base_url.spec()), "\" ",
                                                   split.status().message()));
  }
  if (split->second != "/") {
    return absl::InvalidArgumentError(absl::StrCat(
        "rest.base_url \"", absl::CHexEscape(config.base_url.spec()), "\" must not have a path"));
  }
  Origin origin = std::move(split->first);
  if (!origin.tls && !config.allow_insecure_http) {
    return absl::InvalidArgumentError(
        absl::StrCat("rest.base_url ", origin.Describe(),
                     " is plain http, which would send the PIM credentials in clear; use https:// "
                     "or set allow_insecure_http"));
  }
  if (config.client_id.empty() || config.secret.value.empty() || config.username.empty() ||
      config.password.value.empty()) {
    return absl::InvalidArgumentError(
        "rest.client_id, rest.secret, rest.username and rest.password must all be set");
  }
  if (config.max_concurrency < 1 || config.max_concurrency > 4) {
    return absl::InvalidArgumentError(
        absl::StrCat("rest.max_concurrency must be from 1 to 4, got ", config.max_concurrency));
  }
  if (config.max_attempts < 1) return absl::InvalidArgumentError("rest.max_attempts must be >= 1");
  if (config.timeout.count() <= 0) return absl::InvalidArgumentError("rest.timeout must be > 0");
  if (config.initial_backoff.count() < 0 || config.max_backoff < config.initial_backoff) {
    return absl::InvalidArgumentError(
        "rest.initial_backoff must be >= 0 and at most rest.max_backoff");
  }

  if (origin.tls && config.insecure_skip_verify) {
    spdlog::warn("akeneo: certificate verification is OFF for {} (rest.insecure_skip_verify)",
                 origin.Describe());
  } else if (origin.tls && !config.ca_file.empty()) {
    // Read now, so that a wrong path or a file without certificates fails at start, not at the
    // first reconciliation.
    std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> probe(SSL_CTX_new(TLS_client_method()),
                                                            &SSL_CTX_free);
    if (probe == nullptr ||
        SSL_CTX_load_verify_locations(probe.get(), config.ca_file.c_str(), nullptr) != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("rest.ca_file \"", absl::CHexEscape(config.ca_file),
                       "\": cannot load certificates from it (a PEM bundle is expected)"));
    }
  }
  auto impl = std::make_shared<AkeneoClientImpl>(config, std::move(origin));
  impl->Start();
  return std::make_unique<AkeneoClientFront>(std::move(impl));
}

absl::StatusOr<std::string> AkeneoClient::Get(std::string target) {
  std::promise<absl::StatusOr<std::string>> promise;
  std::future<absl::StatusOr<std::string>> future = promise.get_future();
  GetAsync(std::move(target), [&promise](absl::StatusOr<std::string> result) {
    promise.set_value(std::move(result));
  });
  return future.get();
}

absl::StatusOr<AkeneoPage> AkeneoClient::GetPage(std::string target) {
  absl::StatusOr<std::string> body = Get(target);
  if (!body.ok()) return body.status();
  return ParsePage(*body, target);
}

absl::Status AkeneoClient::ForEachPage(
    std::string first_target, const std::function<absl::Status(AkeneoPage& page)>& on_page) {
  std::string target = std::move(first_target);
  bool logged_other_origin = false;
  for (int pages = 0;; ++pages) {
    if (pages >= kMaxPages) {
      return absl::FailedPreconditionError(absl::StrCat(
          "stopped after ", kMaxPages, " pages: the PIM keeps answering with a next link"));
    }
    absl::StatusOr<AkeneoPage> page = GetPage(target);
    if (!page.ok()) return page.status();
    if (absl::Status status = on_page(*page); !status.ok()) return status;
    if (page->next.empty()) return absl::OkStatus();
    bool other_origin = false;
    absl::StatusOr<std::string> next = NextPageTarget(base_url(), page->next, &other_origin);
    if (!next.ok()) return next.status();
    if (other_origin && !logged_other_origin) {
      logged_other_origin = true;
      spdlog::info(
          "akeneo: {} writes its next-page links on another origin ({}); following them on {}",
          base_url(), CHexEscapeShort(page->next), base_url());
    }
    if (*next == target) {
      return absl::FailedPreconditionError(
          absl::StrCat("the PIM's next link repeats the page just read: ", target));
    }
    target = *std::move(next);
  }
}

std::string UrlEncode(std::string_view text) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(text.size() * 3);
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (absl::ascii_isalnum(byte) || c == '-' || c == '.' || c == '_' || c == '~') {
      out.push_back(c);
    } else {
      out.push_back('%');
      out.push_back(kHex[byte >> 4]);
      out.push_back(kHex[byte & 0x0f]);
    }
  }
  return out;
}

std::string SearchAfterTarget(std::string_view path, std::string_view search_json, int limit) {
  std::string target(path);
  target += '?';
  if (!search_json.empty()) absl::StrAppend(&target, "search=", UrlEncode(search_json), "&");
  absl::StrAppend(&target, "limit=", limit, "&pagination_type=search_after");
  return target;
}

absl::StatusOr<std::string> NextPageTarget(std::string_view base_url_in, std::string_view href_in,
                                           bool* other_origin) {
  const absl::string_view base_url(base_url_in.data(), base_url_in.size());
  const absl::string_view href(href_in.data(), href_in.size());
  if (other_origin != nullptr) *other_origin = false;
  absl::StatusOr<std::pair<Origin, std::string>> configured = SplitUrl(base_url);
  if (!configured.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("rest.base_url ", CHexEscapeShort(base_url), " ",
                                                   configured.status().message()));
  }
  // Akeneo writes absolute links; a relative one ("/api/...") is on the configured origin anyway.
  if (absl::StartsWith(href, "/")) return std::string(href);
  absl::StatusOr<std::pair<Origin, std::string>> link = SplitUrl(href);
  if (!link.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the PIM's next-page link ", CHexEscapeShort(href), " ", link.status().message()));
  }
  const Origin& expected = configured->first;
  if (link->first.host != expected.host) {
    return absl::InvalidArgumentError(absl::StrCat(
        "refusing to follow the PIM's next-page link ", CHexEscapeShort(href), ": its host ",
        link->first.host, " is not the configured PIM's (", expected.Describe(),
        "); the access token is only ever sent to rest.base_url. If the PIM is reached under "
        "another name, set rest.base_url to the name it writes in its links, or make it trust "
        "its proxy's X-Forwarded-Host"));
  }
  if (!(link->first == expected) && other_origin != nullptr) *other_origin = true;
  return std::move(link->second);
}

std::string AkeneoSearchTime(int64_t time_us, const absl::TimeZone& server_zone) {
  const absl::Time instant = absl::FromUnixMicros(time_us);
  absl::Time written = instant;
  // An unambiguous wall-clock time reads back as its own second. One in the hour repeated when
  // DST ends has two readings, the later one an hour (the transition) after the earlier: if the
  // server could take the later one, write an earlier time until no reading is after `instant`.
  for (;;) {
    const absl::CivilSecond wall = absl::ToCivilSecond(written, server_zone);
    const absl::TimeZone::TimeInfo readings = server_zone.At(wall);
    const absl::Time latest = std::max(readings.pre, readings.post);
    if (latest <= instant) {
      return absl::FormatCivilTime(wall).replace(10, 1, " ");  // "YYYY-MM-DDThh:mm:ss"
    }
    written -= latest - instant;
  }
}

absl::StatusOr<AkeneoTimestamp> ParseAkeneoTimestamp(std::string_view text_in) {
  const absl::string_view text(text_in.data(), text_in.size());
  absl::Time time;
  std::string error;
  if (!absl::ParseTime(absl::RFC3339_full, std::string(text), &time, &error)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "\"", absl::CHexEscape(text), "\" is not an RFC 3339 time with an offset (", error, ")"));
  }
  // ParseTime takes any year that fits in 64 bits; the reconciler does arithmetic on these
  // instants (windows, watermarks), so only the years RFC 3339 can write are accepted.
  static const absl::Time kEarliest =
      absl::FromCivil(absl::CivilSecond(1, 1, 1, 0, 0, 0), absl::UTCTimeZone());
  static const absl::Time kEnd =
      absl::FromCivil(absl::CivilSecond(10'000, 1, 1, 0, 0, 0), absl::UTCTimeZone());
  if (time < kEarliest || time >= kEnd) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", absl::CHexEscape(text), "\" is outside the years 0001 to 9999 (UTC)"));
  }
  AkeneoTimestamp out;
  out.time_us = absl::ToUnixMicros(time);
  // ParseTime checked the shape: the text ends with Z or with +HH:MM / -HH:MM.
  if (text.back() != 'Z' && text.back() != 'z') {
    const absl::string_view offset = text.substr(text.size() - 6);
    int hours = 0;
    int minutes = 0;
    if (!absl::SimpleAtoi(offset.substr(1, 2), &hours) ||
        !absl::SimpleAtoi(offset.substr(4, 2), &minutes)) {
      return absl::InvalidArgumentError(
          absl::StrCat("\"", absl::CHexEscape(text), "\" has an unreadable UTC offset"));
    }
    out.offset_seconds = (hours * 3600 + minutes * 60) * (offset.front() == '-' ? -1 : 1);
  }
  return out;
}

bool IsAkeneoNotFound(const absl::Status& status) {
  return absl::IsNotFound(status) && status.GetPayload(kAkeneoErrorPayload).has_value();
}

bool IsForbidden(const absl::Status& status) {
  return absl::IsFailedPrecondition(status) && status.GetPayload(kForbiddenPayload).has_value();
}

}  // namespace pimgate
