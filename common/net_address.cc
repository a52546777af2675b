// SplitHostPort and ListenAddress: one parser for every host:port and listen address.
#include "common/net_address.h"

#include <arpa/inet.h>
#include <net/if.h>

#include <algorithm>
#include <utility>

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

bool AllDigits(absl::string_view text) {
  return !text.empty() && std::all_of(text.begin(), text.end(), absl::ascii_isdigit);
}

}  // namespace

absl::StatusOr<HostAndPort> SplitHostPort(absl::string_view text, int min_port) {
  const size_t colon = text.rfind(':');
  if (colon == absl::string_view::npos) return Problem("must be host:port", text);
  HostAndPort out;
  absl::string_view host = text.substr(0, colon);
  const absl::string_view port = text.substr(colon + 1);
  if (absl::ConsumePrefix(&host, "[")) {
    if (!absl::ConsumeSuffix(&host, "]") || host.empty()) {
      return Problem("must be host:port or [ipv6]:port", text);
    }
    out.bracketed = true;
  } else if (host.empty()) {
    return Problem("host must not be empty (use 0.0.0.0 for all)", text);
  } else if (absl::StrContains(host, ":")) {
    return Problem("IPv6 hosts go in brackets, e.g. \"[::1]:8443\"", text);
  }
  int number = -1;
  if (port.size() > 5 || !AllDigits(port) || !absl::SimpleAtoi(port, &number) ||
      number < min_port || number > 65535) {
    return Problem(absl::StrCat("port must be a number from ", min_port, " to 65535"), text);
  }
  out.host = std::string(host);
  out.port = static_cast<uint16_t>(number);
  return out;
}

absl::StatusOr<ListenAddress> ListenAddress::Parse(absl::string_view text, ParseOptions options) {
  if (absl::StartsWith(text, "unix:")) {
    if (!options.allow_unix_socket) {
      return Problem("must be host:port (a unix socket is not supported here)", text);
    }
    absl::string_view path = text.substr(5);
    // gRPC writes an absolute path as a URI, "unix:///run/x.sock": the same path.
    if (absl::StartsWith(path, "///")) path.remove_prefix(2);
    if (path.empty()) {
      return absl::InvalidArgumentError("\"unix:\" must be followed by a socket path");
    }
    if (path.size() > kMaxUnixSocketPath) {
      return absl::InvalidArgumentError(absl::StrCat("socket path is ", path.size(),
                                                     " bytes, more than the ", kMaxUnixSocketPath,
                                                     " a unix socket address holds"));
    }
    ListenAddress address = UnixSocket(std::string(path));
    address.text_ = std::string(text);
    return address;
  }
  absl::StatusOr<HostAndPort> split = SplitHostPort(text, 0);
  if (!split.ok()) return split.status();
  ListenAddress address;
  address.port_ = split->port;
  address.text_ = std::string(text);
  if (split->bracketed) {
    absl::string_view ip = split->host;
    absl::string_view scope;
    if (const size_t percent = ip.find('%'); percent != absl::string_view::npos) {
      scope = ip.substr(percent + 1);
      ip = ip.substr(0, percent);
    }
    if (inet_pton(AF_INET6, std::string(ip).c_str(), address.ip_.data()) != 1) {
      return Problem("must be host:port or [ipv6]:port, with an IPv6 address in the brackets",
                     text);
    }
    address.kind_ = Kind::kIpv6;
    if (!scope.empty()) {
      if (AllDigits(scope)) {
        if (!absl::SimpleAtoi(scope, &address.scope_id_)) {
          return Problem("has an interface number that is too large", text);
        }
      } else {
        // Looked up now, so that a mistyped interface fails at load, with the key.
        address.scope_id_ = if_nametoindex(std::string(scope).c_str());
        if (address.scope_id_ == 0) {
          return Problem(absl::StrCat("names an interface this machine does not have (",
                                      QuoteForMessage(scope), ")"),
                         text);
        }
      }
      address.scope_ = std::string(scope);
    }
    return address;
  }
  address.kind_ = Kind::kIpv4;
  if (split->host == "*") return address;  // 0.0.0.0
  if (split->host == "localhost") {
    address.ip_[0] = 127;
    address.ip_[3] = 1;
    return address;
  }
  if (inet_pton(AF_INET, split->host.c_str(), address.ip_.data()) != 1) {
    return Problem(
        "host must be an IP address, localhost or * (a listener binds an address of this "
        "machine: host names are not looked up)",
        text);
  }
  return address;
}

ListenAddress ListenAddress::Ipv4(std::array<uint8_t, 4> ip, uint16_t port) {
  ListenAddress address;
  address.kind_ = Kind::kIpv4;
  std::copy(ip.begin(), ip.end(), address.ip_.begin());
  address.port_ = port;
  address.text_ = address.ToString();
  return address;
}

ListenAddress ListenAddress::Ipv6(std::array<uint8_t, 16> ip, uint16_t port) {
  ListenAddress address;
  address.kind_ = Kind::kIpv6;
  address.ip_ = ip;
  address.port_ = port;
  address.text_ = address.ToString();
  return address;
}

ListenAddress ListenAddress::UnixSocket(std::string path) {
  ListenAddress address;
  address.kind_ = Kind::kUnix;
  address.unix_path_ = std::move(path);
  address.text_ = address.ToString();
  return address;
}

std::array<uint8_t, 4> ListenAddress::ipv4_bytes() const {
  return {ip_[0], ip_[1], ip_[2], ip_[3]};
}

bool ListenAddress::wildcard() const {
  switch (kind_) {
    case Kind::kIpv4:
      return ip_[0] == 0 && ip_[1] == 0 && ip_[2] == 0 && ip_[3] == 0;
    case Kind::kIpv6:
      return std::all_of(ip_.begin(), ip_.end(), [](uint8_t byte) { return byte == 0; });
    case Kind::kUnix:
      return false;
  }
  return false;
}

bool ListenAddress::loopback() const {
  switch (kind_) {
    case Kind::kIpv4:
      return ip_[0] == 127;
    case Kind::kIpv6: {
      const bool zeros_to_10 =
          std::all_of(ip_.begin(), ip_.begin() + 10, [](uint8_t byte) { return byte == 0; });
      if (zeros_to_10 && ip_[10] == 0 && ip_[11] == 0 && ip_[12] == 0 && ip_[13] == 0 &&
          ip_[14] == 0 && ip_[15] == 1) {
        return true;  // ::1
      }
      return zeros_to_10 && ip_[10] == 0xff && ip_[11] == 0xff && ip_[12] == 127;  // ::ffff:127.x
    }
    case Kind::kUnix:
      return false;
  }
  return false;
}

std::string ListenAddress::ip() const {
  char buffer[INET6_ADDRSTRLEN] = {};
  switch (kind_) {
    case Kind::kIpv4:
      inet_ntop(AF_INET, ip_.data(), buffer, sizeof(buffer));
      return buffer;
    case Kind::kIpv6:
      inet_ntop(AF_INET6, ip_.data(), buffer, sizeof(buffer));
      if (scope_id_ != 0) {
        return absl::StrCat(buffer, "%", scope_.empty() ? absl::StrCat(scope_id_) : scope_);
      }
      return buffer;
    case Kind::kUnix:
      return "";
  }
  return "";
}

std::string ListenAddress::ToString() const {
  switch (kind_) {
    case Kind::kIpv4:
      return absl::StrCat(ip(), ":", port_);
    case Kind::kIpv6:
      return absl::StrCat("[", ip(), "]:", port_);
    case Kind::kUnix:
      return absl::StrCat("unix:", unix_path_);
  }
  return "";
}

std::string ListenAddress::LocalTarget(uint16_t bound_port) const {
  if (kind_ == Kind::kUnix) return ToString();
  if (!wildcard()) {
    return kind_ == Kind::kIpv6 ? absl::StrCat("[", ip(), "]:", bound_port)
                                : absl::StrCat(ip(), ":", bound_port);
  }
  return kind_ == Kind::kIpv6 ? absl::StrCat("[::1]:", bound_port)
                              : absl::StrCat("127.0.0.1:", bound_port);
}

bool operator==(const ListenAddress& a, const ListenAddress& b) {
  return a.kind_ == b.kind_ && a.ip_ == b.ip_ && a.scope_id_ == b.scope_id_ && a.port_ == b.port_ &&
         a.unix_path_ == b.unix_path_;
}

}  // namespace pimgate
