// The base URL of a service pimgate calls (the PIM's REST API, the Event Platform's management
// API), parsed and normalised once: scheme, host, port and, where allowed, a path that every
// request path is appended to.
#ifndef PIMGATE_COMMON_BASE_URL_H_
#define PIMGATE_COMMON_BASE_URL_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace pimgate {

// "https://pim.example.com", "http://127.0.0.1:8080", "https://[::1]:8443",
// "https://event.prd.sdk.akeneo.cloud/api/v1". The rules:
//  - the scheme is https:// or http:// (any case);
//  - no user info (credentials are sent in headers or bodies, never in a URL), no query, no
//    fragment;
//  - the host is a name of letters, digits, '-', '.' and '_', or an IPv6 address in brackets;
//  - an explicit port is 1 to 65535;
//  - a path only with ParseOptions::allow_path, of printable characters without '\'; trailing
//    slashes are dropped. Without allow_path, a single trailing slash is accepted and dropped.
// Normalised: scheme and host lower-cased, an explicit port kept as a number, the path as written.
// A value type: copyable, thread-compatible.
class BaseUrl {
 public:
  struct ParseOptions {
    bool allow_path = false;
    // Follows "must start with https://" when the URL has another scheme, to say when http:// is
    // accepted (a configuration's policy).
    absl::string_view scheme_hint = " or http://";
    // Follows "must not contain user info": where credentials go instead.
    absl::string_view user_info_hint;
  };

  // An empty URL (spec() ""), for a struct not filled in yet; Parse() never returns one.
  BaseUrl() = default;

  // InvalidArgument with a message that reads after the key name ("rest.base_url: ..."). The URL
  // is quoted in messages except when it has user info (which may hold a password).
  static absl::StatusOr<BaseUrl> Parse(absl::string_view text, ParseOptions options);
  static absl::StatusOr<BaseUrl> Parse(absl::string_view text) { return Parse(text, {}); }

  bool https() const { return https_; }
  // "https" or "http".
  absl::string_view scheme() const { return https_ ? "https" : "http"; }
  // Lower-cased; an IPv6 address without its brackets.
  const std::string& host() const { return host_; }
  bool ipv6_host() const { return ipv6_; }
  // The port connected to: the explicit one, else 443 or 80.
  uint16_t port() const { return port_; }
  bool explicit_port() const { return explicit_port_; }
  // "" or "/api/v1": no trailing slash.
  const std::string& path() const { return path_; }

  // The normalised URL: "https://pim.example.com:8443", "https://event.example.com/api/v1".
  const std::string& spec() const { return spec_; }
  // scheme://host[:port], without the path.
  std::string Origin() const;
  // "host:port" with the port always, an IPv6 host in brackets: what a client connects to.
  std::string HostPort() const;
  // The Host header: the port only when it is not the scheme's default.
  std::string HostHeader() const;
  bool empty() const { return spec_.empty(); }
  // spec(), for logs and messages: it never holds credentials (Parse refuses user info).
  const std::string& Describe() const { return spec_; }
  // spec() followed by `path_and_query` ("/api/rest/v1/products?limit=10").
  std::string Resolve(absl::string_view path_and_query) const;

  // Same scheme, host and port (paths aside).
  bool SameOrigin(const BaseUrl& other) const;
  friend bool operator==(const BaseUrl& a, const BaseUrl& b) { return a.spec_ == b.spec_; }

 private:
  bool https_ = true;
  std::string host_;
  bool ipv6_ = false;
  uint16_t port_ = 443;
  bool explicit_port_ = false;
  std::string path_;
  std::string spec_;
};

}  // namespace pimgate

#endif  // PIMGATE_COMMON_BASE_URL_H_
