// Network addresses as pimgate's configuration writes them, parsed once by one set of rules:
// `host:port` targets, and the listen addresses of the gateway, metrics and admin listeners.
// Boost-free, so that common stays light: a listener turns a ListenAddress into its own endpoint
// type from the address bytes, without parsing text again.
#ifndef PIMGATE_COMMON_NET_ADDRESS_H_
#define PIMGATE_COMMON_NET_ADDRESS_H_

#include <sys/un.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace pimgate {

// Longest path a unix socket address holds (sun_path less its terminating NUL): 107 on Linux.
inline constexpr std::size_t kMaxUnixSocketPath = sizeof(sockaddr_un::sun_path) - 1;

// "host:port" or "[ipv6]:port", split but not resolved: the host may be any name.
struct HostAndPort {
  std::string host;  // without the brackets of an IPv6 host
  uint16_t port = 0;
  bool bracketed = false;
};

// Splits `text` at its last ':'. A host with ':' must be in brackets; the host must not be
// empty; the port is a decimal number from `min_port` to 65535. InvalidArgument otherwise, with a
// message that reads after a key name and ends with the value (`port must be a number from 0 to
// 65535, got "x:http"`). Thread-safe.
absl::StatusOr<HostAndPort> SplitHostPort(absl::string_view text, int min_port);

// Where a listener binds. The rules, the same for every listener (docs/configuration.md):
//  - `host:port`, with an IPv6 host in brackets: "0.0.0.0:8443", "127.0.0.1:0", "[::]:8443",
//    "[::1]:0", "[fe80::1%eth0]:8443" (a link-local address with its interface).
//  - The host is an IP address, or `localhost` (127.0.0.1), or `*` (0.0.0.0, every IPv4
//    interface; "[::]" listens on IPv6 and, unless the system says otherwise, IPv4 too). Host
//    names are refused: a listener binds an address of this machine, and what a name resolves to
//    can change.
//  - The port is 0 to 65535; 0 lets the system pick a free port (tests).
//  - Where the caller allows it (admin.listen), `unix:PATH` is a unix socket: "unix:/run/x.sock",
//    "unix:///run/x.sock" (gRPC's spelling of the same path) or a relative "unix:x.sock", at most
//    107 bytes of path.
// A value type: copyable, thread-compatible.
class ListenAddress {
 public:
  enum class Kind { kIpv4, kIpv6, kUnix };
  struct ParseOptions {
    bool allow_unix_socket = false;
  };

  // InvalidArgument with a message that reads after the key name ("admin.listen: ...").
  static absl::StatusOr<ListenAddress> Parse(absl::string_view text, ParseOptions options);
  static absl::StatusOr<ListenAddress> Parse(absl::string_view text) { return Parse(text, {}); }
  // Addresses made in code (defaults, tests); text() is their ToString().
  static ListenAddress Ipv4(std::array<uint8_t, 4> ip, uint16_t port);
  static ListenAddress Ipv6(std::array<uint8_t, 16> ip, uint16_t port);
  static ListenAddress UnixSocket(std::string path);

  Kind kind() const { return kind_; }
  bool is_unix_socket() const { return kind_ == Kind::kUnix; }
  // The address in network order: ipv4_bytes() for kIpv4, ipv6_bytes() and scope_id() for kIpv6.
  std::array<uint8_t, 4> ipv4_bytes() const;
  const std::array<uint8_t, 16>& ipv6_bytes() const { return ip_; }
  // The interface of a link-local IPv6 address ("%eth0" or "%2"); 0 for none.
  uint32_t scope_id() const { return scope_id_; }
  // 0: any free port. Unused for a unix socket.
  uint16_t port() const { return port_; }
  // The socket's path, for kUnix.
  const std::string& unix_path() const { return unix_path_; }

  // Every interface: 0.0.0.0 or ::.
  bool wildcard() const;
  // A loopback address (127.0.0.0/8, ::1, ::ffff:127.0.0.0/104).
  bool loopback() const;
  // Only this machine can connect: a loopback address or a unix socket.
  bool local_only() const { return is_unix_socket() || loopback(); }

  // The address as an IP literal, without brackets: "127.0.0.1", "::1", "fe80::1%eth0".
  std::string ip() const;
  // The canonical form, which gRPC's AddListeningPort takes: "127.0.0.1:8443", "[::1]:0",
  // "unix:/run/x.sock". "localhost:7070" becomes "127.0.0.1:7070", "*:80" "0.0.0.0:80".
  std::string ToString() const;
  // As configured ("localhost:7070"), for messages and logs.
  const std::string& text() const { return text_; }
  // What a client on this machine dials to reach this listener once it is bound to `bound_port`:
  // the wildcard becomes the loopback address of its family ("127.0.0.1:7070", "[::1]:7070",
  // "unix:/run/x.sock").
  std::string LocalTarget(uint16_t bound_port) const;

  // Same address, port and socket path (text() aside).
  friend bool operator==(const ListenAddress& a, const ListenAddress& b);

 private:
  ListenAddress() = default;

  Kind kind_ = Kind::kIpv4;
  std::array<uint8_t, 16> ip_{};  // IPv4 in the first 4 bytes
  uint32_t scope_id_ = 0;
  std::string scope_;  // as written after '%'
  uint16_t port_ = 0;
  std::string unix_path_;
  std::string text_;
};

}  // namespace pimgate

#endif  // PIMGATE_COMMON_NET_ADDRESS_H_
