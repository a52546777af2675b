// HttpConnection: one blocking HTTP(S) exchange at a time over libcurl, for pimgate's calls back
// to Akeneo (the PIM REST API, the Event Platform management API). Proxies, TLS verification,
// keep-alive and timeouts are libcurl's; retries, tokens and paging belong to the callers.
#ifndef PIMGATE_PIM_HTTP_CLIENT_H_
#define PIMGATE_PIM_HTTP_CLIENT_H_

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace pimgate {

// Largest response body accepted by default; a larger one fails the exchange
// (ResourceExhausted) rather than growing memory without bound.
inline constexpr std::size_t kDefaultMaxResponseBytes = 64 * 1024 * 1024;

struct HttpClientOptions {
  // The whole exchange (DNS, connect, proxy tunnel, TLS handshake, request and answer) must
  // finish within this.
  std::chrono::milliseconds timeout{30'000};
  // PEM bundle to verify the server's certificate with; empty: the system store.
  std::string ca_file;
  // Skip certificate verification (tests against a self-signed server; never in production).
  bool insecure_skip_verify = false;
  // Proxy: "" takes it from the environment as curl does (HTTPS_PROXY / https_proxy for https://,
  // http_proxy for http://, ALL_PROXY, and NO_PROXY); "none" connects directly whatever the
  // environment says; anything else is the proxy URL ("http://proxy.corp:3128", credentials in
  // the URL allowed: they are never logged).
  std::string proxy;
  std::size_t max_response_bytes = kDefaultMaxResponseBytes;
  std::string user_agent = "pimgate";
};

struct HttpRequest {
  std::string method = "GET";
  // Absolute http:// or https:// URL.
  std::string url;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;  // sent when non-empty, or always for POST/PUT/PATCH
};

struct HttpResponse {
  int status = 0;
  std::string body;
  // The final answer's headers (interim 1xx and proxy CONNECT answers are not here), names as
  // received.
  std::vector<std::pair<std::string, std::string>> headers;

  // The first header with this name (case-insensitive), or "".
  std::string_view Header(std::string_view name) const;
};

// Owns one libcurl easy handle, which keeps its connections open between exchanges. Not
// thread-safe: use one per thread (the clients above run one per worker).
//
// Any HTTP status is a response. Failures below HTTP are statuses:
// - DeadlineExceeded: `timeout` passed;
// - FailedPrecondition: the server's certificate is not trusted, or a CA file is unreadable
//   (retrying will not help);
// - ResourceExhausted: the answer exceeds `max_response_bytes` (retrying will not help);
// - Cancelled: `cancelled` returned true;
// - InvalidArgument: the URL or a header is malformed;
// - Unavailable: everything else (DNS, refused, reset, proxy refused the tunnel, TLS
//   handshake failure): worth retrying.
// Messages name the host and the step, never a credential.
class HttpConnection {
 public:
  explicit HttpConnection(HttpClientOptions options);
  ~HttpConnection();
  HttpConnection(const HttpConnection&) = delete;
  HttpConnection& operator=(const HttpConnection&) = delete;

  // Performs one exchange. `cancelled`, when set, is polled while the exchange runs (at least
  // once a second) and aborts it when it returns true.
  absl::StatusOr<HttpResponse> Exchange(const HttpRequest& request,
                                        const std::function<bool()>& cancelled = {});

  // TCP connections opened so far (keep-alive reuse shows as fewer connections than exchanges).
  std::size_t connections_opened() const { return connections_opened_; }

 private:
  struct Handle;
  HttpClientOptions options_;
  std::unique_ptr<Handle> handle_;
  std::size_t connections_opened_ = 0;
};

// The URL with any user info (credentials) removed, for messages.
std::string RedactUrl(std::string_view url);

}  // namespace pimgate

#endif  // PIMGATE_PIM_HTTP_CLIENT_H_
