// HttpConnection over one libcurl easy handle: options set afresh for every exchange
// (curl_easy_reset keeps the handle's open connections and caches), answers collected by
// callbacks, libcurl's error codes mapped to absl statuses in one place (StatusOf).
#include "pim/http_client.h"

#include <curl/curl.h>

#include <algorithm>
#include <mutex>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace pimgate {
namespace {

void GlobalInit() {
  static std::once_flag once;
  // libcurl 7.84+ makes curl_global_init thread-safe, but the first call still has to happen
  // before any handle exists; call_once keeps it to one.
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

bool HasLineBreak(std::string_view text) {
  return text.find_first_of("\r\n") != std::string_view::npos || text.find('\0') != text.npos;
}

struct Collector {
  std::size_t max_body = 0;
  bool too_large = false;
  HttpResponse response;
};

size_t OnBody(char* data, size_t size, size_t count, void* user) {
  auto* collector = static_cast<Collector*>(user);
  const size_t n = size * count;
  if (collector->response.body.size() + n > collector->max_body) {
    collector->too_large = true;
    return 0;  // libcurl fails the transfer with CURLE_WRITE_ERROR
  }
  collector->response.body.append(data, n);
  return n;
}

size_t OnHeader(char* data, size_t size, size_t count, void* user) {
  auto* collector = static_cast<Collector*>(user);
  const size_t n = size * count;
  absl::string_view line(data, n);
  if (absl::StartsWith(line, "HTTP/")) {
    // A new answer starts (after a 1xx, or after a redirect we do not follow): only the final
    // answer's headers are kept.
    collector->response.headers.clear();
    return n;
  }
  const size_t colon = line.find(':');
  if (colon == absl::string_view::npos) return n;  // the blank line, or a malformed one
  absl::string_view name = absl::StripAsciiWhitespace(line.substr(0, colon));
  absl::string_view value = absl::StripAsciiWhitespace(line.substr(colon + 1));
  collector->response.headers.emplace_back(std::string(name), std::string(value));
  return n;
}

int OnProgress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  const auto* cancelled = static_cast<const std::function<bool()>*>(user);
  return (*cancelled)() ? 1 : 0;
}

// "larger than 64 MiB" for a limit in whole MiB, else in bytes.
std::string TooLarge(const std::string& what, std::size_t limit) {
  constexpr std::size_t kMiB = 1024 * 1024;
  if (limit >= kMiB && limit % kMiB == 0) {
    return absl::StrCat(what, ": the answer is larger than ", limit / kMiB, " MiB");
  }
  return absl::StrCat(what, ": the answer is larger than ", limit, " bytes");
}

absl::Status StatusOf(CURLcode code, const char* error_buffer, const std::string& what,
                      const Collector& collector) {
  std::string detail = error_buffer[0] != '\0' ? error_buffer : curl_easy_strerror(code);
  const std::string message = absl::StrCat(what, ": ", detail);
  switch (code) {
    case CURLE_OPERATION_TIMEDOUT:
      return absl::DeadlineExceededError(absl::StrCat(what, ": timed out (", detail, ")"));
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_CRL_BADFILE:
      return absl::FailedPreconditionError(message);
    case CURLE_FILESIZE_EXCEEDED:
      return absl::ResourceExhaustedError(TooLarge(what, collector.max_body));
    case CURLE_WRITE_ERROR:
      if (collector.too_large)
        return absl::ResourceExhaustedError(TooLarge(what, collector.max_body));
      return absl::UnavailableError(message);
    case CURLE_ABORTED_BY_CALLBACK:
      return absl::CancelledError(absl::StrCat(what, ": cancelled"));
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
      return absl::InvalidArgumentError(message);
    default:
      return absl::UnavailableError(message);
  }
}

}  // namespace

std::string_view HttpResponse::Header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (absl::EqualsIgnoreCase(key, absl::string_view(name.data(), name.size()))) return value;
  }
  return {};
}

std::string RedactUrl(std::string_view url) {
  const size_t scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) return std::string(url);
  const size_t authority_start = scheme_end + 3;
  const size_t authority_end = url.find_first_of("/?#", authority_start);
  std::string_view authority = url.substr(authority_start, authority_end == std::string_view::npos
                                                               ? std::string_view::npos
                                                               : authority_end - authority_start);
  const size_t at = authority.rfind('@');
  if (at == std::string_view::npos) return std::string(url);
  return absl::StrCat(std::string(url.substr(0, authority_start)), "<redacted>@",
                      std::string(url.substr(authority_start + at + 1)));
}

struct HttpConnection::Handle {
  CURL* easy = nullptr;
  ~Handle() {
    if (easy != nullptr) curl_easy_cleanup(easy);
  }
};

HttpConnection::HttpConnection(HttpClientOptions options)
    : options_(std::move(options)), handle_(std::make_unique<Handle>()) {
  GlobalInit();
  handle_->easy = curl_easy_init();
}

HttpConnection::~HttpConnection() = default;

absl::StatusOr<HttpResponse> HttpConnection::Exchange(const HttpRequest& request,
                                                      const std::function<bool()>& cancelled) {
  const std::string what = absl::StrCat(request.method, " ", RedactUrl(request.url));
  if (handle_->easy == nullptr) {
    return absl::ResourceExhaustedError(absl::StrCat(what, ": libcurl could not make a handle"));
  }
  if (HasLineBreak(request.url) || HasLineBreak(request.method)) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": line break in the request line"));
  }
  CURL* easy = handle_->easy;
  curl_easy_reset(easy);

  struct HeaderList {
    curl_slist* list = nullptr;
    ~HeaderList() { curl_slist_free_all(list); }
  } headers;
  for (const auto& [name, value] : request.headers) {
    if (name.empty() || HasLineBreak(name) || HasLineBreak(value) ||
        name.find(':') != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat(what,
                                                     ": malformed header name or value for \"",
                                                     absl::CHexEscape(name.substr(0, 64)), "\""));
    }
    curl_slist* grown = curl_slist_append(headers.list, absl::StrCat(name, ": ", value).c_str());
    if (grown == nullptr) return absl::ResourceExhaustedError(absl::StrCat(what, ": no memory"));
    headers.list = grown;
  }
  // libcurl waits for "100 Continue" before sending bodies over 1 MiB; pimgate's bodies are
  // small and the servers it calls answer at once, so never ask.
  headers.list = curl_slist_append(headers.list, "Expect:");

  Collector collector;
  collector.max_body = options_.max_response_bytes;
  char error_buffer[CURL_ERROR_SIZE] = {0};

  curl_easy_setopt(easy, CURLOPT_URL, request.url.c_str());
  curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, error_buffer);
  curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);  // threads: no SIGALRM for DNS timeouts
  curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);  // a redirect is an answer, not followed
  const long timeout_ms = static_cast<long>(std::max<int64_t>(1, options_.timeout.count()));
  curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, timeout_ms);
  curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms);
  curl_easy_setopt(easy, CURLOPT_USERAGENT, options_.user_agent.c_str());
  curl_easy_setopt(easy, CURLOPT_ACCEPT_ENCODING, "");  // gzip and friends, as libcurl has them
  curl_easy_setopt(easy, CURLOPT_MAXFILESIZE_LARGE,
                   static_cast<curl_off_t>(options_.max_response_bytes));
  curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers.list);
  if (!options_.ca_file.empty()) curl_easy_setopt(easy, CURLOPT_CAINFO, options_.ca_file.c_str());
  if (options_.insecure_skip_verify) {
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 0L);
  }
  if (options_.proxy == "none") {
    curl_easy_setopt(easy, CURLOPT_NOPROXY, "*");
  } else if (!options_.proxy.empty()) {
    curl_easy_setopt(easy, CURLOPT_PROXY, options_.proxy.c_str());
  }
  curl_easy_setopt(easy, CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);

  if (request.method == "GET") {
    curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L);
  } else if (request.method == "HEAD") {
    curl_easy_setopt(easy, CURLOPT_NOBODY, 1L);
  } else {
    if (request.method != "POST") {
      curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, request.method.c_str());
    }
    if (request.method == "POST" || request.method == "PUT" || request.method == "PATCH" ||
        !request.body.empty()) {
      curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE,
                       static_cast<curl_off_t>(request.body.size()));
      curl_easy_setopt(easy, CURLOPT_POSTFIELDS, request.body.data());
    }
  }

  curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, OnBody);
  curl_easy_setopt(easy, CURLOPT_WRITEDATA, &collector);
  curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, OnHeader);
  curl_easy_setopt(easy, CURLOPT_HEADERDATA, &collector);
  if (cancelled) {
    curl_easy_setopt(easy, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(easy, CURLOPT_XFERINFOFUNCTION, OnProgress);
    curl_easy_setopt(easy, CURLOPT_XFERINFODATA, &cancelled);
  }

  const CURLcode code = curl_easy_perform(easy);
  long new_connections = 0;
  if (curl_easy_getinfo(easy, CURLINFO_NUM_CONNECTS, &new_connections) == CURLE_OK &&
      new_connections > 0) {
    connections_opened_ += static_cast<std::size_t>(new_connections);
  }
  // The error buffer and the header list belong to this call: detach them from the handle,
  // which outlives both.
  curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, nullptr);
  curl_easy_setopt(easy, CURLOPT_HTTPHEADER, nullptr);
  if (code != CURLE_OK) return StatusOf(code, error_buffer, what, collector);
  long status = 0;
  curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
  collector.response.status = static_cast<int>(status);
  return std::move(collector.response);
}

}  // namespace pimgate
