// The `admin:` section: the gRPC admin API's listener, token and TLS.
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "config/sections.h"
#include "config/value_readers.h"
#include "config/yaml_reader.h"

namespace pimgate::config_internal {
namespace {

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
    absl::Status status = ReadMapping(
        field,
        {
            {"enabled", Bool(admin.enabled)},
            {"listen", Tracked(Listen(admin.listen, /*allow_unix_socket=*/true), listen_line)},
            {"token", SecretValue(admin.token)},
            {"tls", AdminTls(admin.tls)},
            {"allow_insecure_remote", Bool(admin.allow_insecure_remote)},
        });
    if (!status.ok()) return status;
    if (!admin.enabled || admin.allow_insecure_remote || !listen_line.has_value() ||
        admin.listen.local_only()) {
      return absl::OkStatus();
    }
    std::vector<std::string> missing;
    if (!admin.token.has_value()) missing.push_back("admin.token");
    if (!admin.tls.has_value()) missing.push_back("admin.tls");
    if (missing.empty()) return absl::OkStatus();
    return Invalid(
        {field.node, "admin.listen", *listen_line},
        absl::StrCat(Quote(admin.listen.text()), " is reachable from other machines: set ",
                     absl::StrJoin(missing, " and "), ", or admin.allow_insecure_remote: true"));
  };
}

}  // namespace pimgate::config_internal
