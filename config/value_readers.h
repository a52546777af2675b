// Readers of the values several sections share: files the server opens later, secrets, listen
// addresses, host:port targets, unix socket paths and base URLs, each parsed by the type that
// holds it (common/net_address.h, common/base_url.h). Internal to config/.
#ifndef PIMGATE_CONFIG_VALUE_READERS_H_
#define PIMGATE_CONFIG_VALUE_READERS_H_

#include <cstddef>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "common/base_url.h"
#include "common/net_address.h"
#include "config/config.h"
#include "config/yaml_reader.h"

namespace pimgate::config_internal {

// host:port, with IPv6 hosts in brackets ("[::1]:8443"), and a port of at least `min_port`; the
// host may be a name (a gRPC target: gRPC resolves it). Kept as written.
ValueReader HostPort(std::string& out, int min_port);

// A listen address (ListenAddress::Parse's rules); `unix:PATH` only with `allow_unix_socket`.
ValueReader Listen(ListenAddress& out, bool allow_unix_socket = false);

// A base URL (BaseUrl::Parse's rules). Whether http:// is allowed is the section's check, which
// may depend on a key written later in the mapping.
ValueReader Url(BaseUrl& out, const BaseUrl::ParseOptions& options);

// A proxy for calls to Akeneo (the REST API, the Event Platform's management API): "none", or an
// http(s):// or socks5(h):// URL (which may carry credentials, so it is never echoed in an error).
ValueReader Proxy(std::string& out);

// Checks up front that a file the server opens later exists and is readable, so a bad path fails
// at config load with the key that named it rather than at the first TLS handshake.
absl::Status CheckReadableFile(const std::string& path);
ValueReader ReadableFile(std::string& out);

// Resolves a secret reference: "${NAME}" (environment), "file:/path" (trailing whitespace
// trimmed) or the secret itself. Error messages name the key, the variable or the file, and never
// the value: they end up in logs.
ValueReader SecretValue(std::optional<Secret>& out);

}  // namespace pimgate::config_internal

#endif  // PIMGATE_CONFIG_VALUE_READERS_H_
