// The `admin:` section: the gRPC admin API's listener, token and TLS.
#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "config/sections.h"
#include "config/value_readers.h"
#include "config/yaml_reader.h"

namespace pimgate::config_internal {
namespace {

// Where the admin API listens: "unix:/path" or host:port (port 0 picks a free one, for tests).
ValueReader AdminListen(std::string& out) {
  return [&out](const Field& field) -> absl::Status {
    absl::StatusOr<std::string> text = ScalarOf(field);
    if (!text.ok()) return text.status();
    if (!absl::StartsWith(*text, "unix:")) return HostPort(out, 0)(field);
    const absl::string_view path = UnixSocketPath(*text);
    if (path.empty()) return Invalid(field, "\"unix:\" must be followed by a socket path");
    if (path.size() > kMaxUnixSocketPath) {
      return Invalid(field, absl::StrCat("socket path is ", path.size(), " bytes, more than the ",
                                         kMaxUnixSocketPath, " a unix socket address holds"));
    }
    out = *std::move(text);
    return absl::OkStatus();
  };
}

// True when only this machine can reach `listen`: a unix socket, 127.0.0.0/8, [::1], localhost.
bool IsLocalAdminListen(absl::string_view listen) {
  if (absl::StartsWith(listen, "unix:")) return true;
  absl::string_view host = listen.substr(0, listen.rfind(':'));
  if (host == "localhost" || host == "[::1]") return true;
  return absl::ConsumePrefix(&host, "127.") && !host.empty() &&
         std::all_of(host.begin(), host.end(),
                     [](char c) { return absl::ascii_isdigit(c) || c == '.'; });
}

ValueReader AdminTls(std::optional<AdminTlsConfig>& out) {
  return [&out](const Field& field) -> absl::Status {
    AdminTlsConfig& tls = out.emplace();
    return ReadMapping(field, {
                                  {"cert_file", ReadableFile(tls.cert_file), true},
                                  {"key_file", ReadableFile(tls.key_file), true},
                              });
  };
}

}  // namespace

// admin: a listener other machines can reach must be protected by a token (who may call) and TLS
// (so the token is not sent in clear), unless the operator opts out explicitly.
ValueReader Admin(AdminConfig& admin) {
  return [&admin](const Field& field) -> absl::Status {
    std::optional<int> listen_line;
    absl::Status status =
        ReadMapping(field, {
                               {"enabled", Bool(admin.enabled)},
                               {"listen", Tracked(AdminListen(admin.listen), listen_line)},
                               {"token", SecretValue(admin.token)},
                               {"tls", AdminTls(admin.tls)},
                               {"allow_insecure_remote", Bool(admin.allow_insecure_remote)},
                           });
    if (!status.ok()) return status;
    if (!admin.enabled || admin.allow_insecure_remote || !listen_line.has_value() ||
        IsLocalAdminListen(admin.listen)) {
      return absl::OkStatus();
    }
    std::vector<std::string> missing;
    if (!admin.token.has_value()) missing.push_back("admin.token");
    if (!admin.tls.has_value()) missing.push_back("admin.tls");
    if (missing.empty()) return absl::OkStatus();
    return Invalid(
        {field.node, "admin.listen", *listen_line},
        absl::StrCat(Quote(admin.listen), " is reachable from other machines: set ",
                     absl::StrJoin(missing, " and "), ", or admin.allow_insecure_remote: true"));
  };
}

}  // namespace pimgate::config_internal
