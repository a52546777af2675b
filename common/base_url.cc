// BaseUrl::Parse and the forms of a base URL.
#include "common/base_url.h"

#include <arpa/inet.h>

#include <algorithm>
#include <array>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "common/quote.h"

namespace pimgate {
namespace {

absl::Status Problem(absl::string_view problem, absl::string_view text) {
  return absl::InvalidArgumentError(absl::StrCat(problem, ", got ", QuoteForMessage(text)));
}

bool IsHostNameChar(char c) { return absl::ascii_isalnum(c) || c == '-' || c == '.' || c == '_'; }

}  // namespace

absl::StatusOr<BaseUrl> BaseUrl::Parse(absl::string_view text, ParseOptions options) {
  BaseUrl url;
  absl::string_view rest = text;
  if (absl::StartsWithIgnoreCase(rest, "https://")) {
    rest.remove_prefix(8);
  } else if (absl::StartsWithIgnoreCase(rest, "http://")) {
    rest.remove_prefix(7);
    url.https_ = false;
    url.port_ = 80;
  } else {
    return Problem(absl::StrCat("must start with https://", options.scheme_hint), text);
  }
  absl::string_view path;
  if (options.allow_path) {
    if (rest.find_first_of("?#") != absl::string_view::npos) {
      return Problem("must not have a query or fragment", text);
    }
    const size_t slash = rest.find('/');
    if (slash != absl::string_view::npos) {
      path = rest.substr(slash);
      rest = rest.substr(0, slash);
    }
  } else {
    absl::ConsumeSuffix(&rest, "/");
    if (rest.find_first_of("/?#") != absl::string_view::npos) {
      return Problem(
          "must be scheme, host and optional port only, e.g. \"https://pim.example.com\" (no path)",
          text);
    }
  }
  const absl::string_view authority = rest;
  if (absl::StrContains(authority, "@")) {
    // Not quoted: user info may hold a password.
    return absl::InvalidArgumentError(
        absl::StrCat("must not contain user info", options.user_info_hint));
  }
  absl::string_view host = authority;
  absl::string_view port;
  bool has_port = false;
  if (absl::StartsWith(authority, "[")) {
    const size_t close = authority.find(']');
    if (close == absl::string_view::npos || close == 1) {
      return Problem("has an unterminated or empty [ipv6] host", text);
    }
    host = authority.substr(1, close - 1);
    absl::string_view after = authority.substr(close + 1);
    if (!after.empty() && !absl::ConsumePrefix(&after, ":")) {
      return Problem(absl::StrCat("must be ", url.scheme(), "://[ipv6]:port"), text);
    }
    has_port = close + 1 < authority.size();
    port = after;
    std::array<unsigned char, 16> bytes;
    if (inet_pton(AF_INET6, std::string(host).c_str(), bytes.data()) != 1) {
      return Problem("has an invalid IPv6 host", text);
    }
    url.ipv6_ = true;
  } else {
    if (const size_t colon = authority.find(':'); colon != absl::string_view::npos) {
      host = authority.substr(0, colon);
      port = authority.substr(colon + 1);
      has_port = true;
    }
    if (host.empty()) return Problem("has no host", text);
    if (!std::all_of(host.begin(), host.end(), IsHostNameChar)) {
      return Problem("has an invalid host name (IPv6 hosts go in brackets)", text);
    }
  }
  if (has_port) {
    int number = 0;
    if (port.empty() || port.size() > 5 ||
        !std::all_of(port.begin(), port.end(), absl::ascii_isdigit) ||
        !absl::SimpleAtoi(port, &number) || number < 1 || number > 65535) {
      return Problem("port must be a number from 1 to 65535", text);
    }
    url.port_ = static_cast<uint16_t>(number);
    url.explicit_port_ = true;
  }
  if (!std::all_of(path.begin(), path.end(),
                   [](char c) { return c > 0x20 && c < 0x7f && c != '\\'; })) {
    return absl::InvalidArgumentError("must not contain spaces, control characters or backslashes");
  }
  while (absl::ConsumeSuffix(&path, "/")) {
  }
  url.host_ = absl::AsciiStrToLower(host);
  url.path_ = std::string(path);
  url.spec_ = absl::StrCat(url.Origin(), url.path_);
  return url;
}

std::string BaseUrl::Origin() const {
  const std::string host = ipv6_ ? absl::StrCat("[", host_, "]") : host_;
  if (!explicit_port_) return absl::StrCat(scheme(), "://", host);
  return absl::StrCat(scheme(), "://", host, ":", port_);
}

std::string BaseUrl::HostPort() const {
  return ipv6_ ? absl::StrCat("[", host_, "]:", port_) : absl::StrCat(host_, ":", port_);
}

std::string BaseUrl::HostHeader() const {
  const std::string host = ipv6_ ? absl::StrCat("[", host_, "]") : host_;
  if (port_ == (https_ ? 443 : 80)) return host;
  return absl::StrCat(host, ":", port_);
}

std::string BaseUrl::Resolve(absl::string_view path_and_query) const {
  return absl::StrCat(spec_, path_and_query);
}

bool BaseUrl::SameOrigin(const BaseUrl& other) const {
  return https_ == other.https_ && host_ == other.host_ && port_ == other.port_;
}

}  // namespace pimgate
