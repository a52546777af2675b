// Readers of the values several sections share: files the server opens later, secrets, listen
// addresses and unix socket paths. Internal to config/.
#ifndef PIMGATE_CONFIG_VALUE_READERS_H_
#define PIMGATE_CONFIG_VALUE_READERS_H_

#include <sys/un.h>

#include <cstddef>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "config/config.h"
#include "config/yaml_reader.h"

namespace pimgate::config_internal {

// Longest path a unix socket address holds (sun_path less its terminating NUL): 107 on Linux.
inline constexpr size_t kMaxUnixSocketPath = sizeof(sockaddr_un::sun_path) - 1;

// host:port, with IPv6 hosts in brackets ("[::1]:8443"), and a port of at least `min_port`.
ValueReader HostPort(std::string& out, int min_port);

// Where the gateway listens. The port may be 0 (pick a free one, for tests).
ValueReader Listen(std::string& out);

// Checks up front that a file the server opens later exists and is readable, so a bad path fails
// at config load with the key that named it rather than at the first TLS handshake.
absl::Status CheckReadableFile(const std::string& path);
ValueReader ReadableFile(std::string& out);

// Resolves a secret reference: "${NAME}" (environment), "file:/path" (trailing whitespace
// trimmed) or the secret itself. Error messages name the key, the variable or the file, and never
// the value: they end up in logs.
ValueReader SecretValue(std::optional<Secret>& out);

// The path of a "unix:" gRPC target ("unix:/run/x.sock", "unix:///run/x.sock", "unix:x.sock").
absl::string_view UnixSocketPath(absl::string_view address);

}  // namespace pimgate::config_internal

#endif  // PIMGATE_CONFIG_VALUE_READERS_H_
