// The `gateway:` section: where webhooks arrive, TLS, and the limits of every connection.
#include <optional>

#include "absl/strings/str_cat.h"
#include "config/sections.h"
#include "config/value_readers.h"
#include "config/yaml_reader.h"

namespace pimgate::config_internal {
namespace {

ValueReader Tls(std::optional<TlsConfig>& out) {
  return [&out](const Field& field) -> absl::Status {
    TlsConfig& tls = out.emplace();
    return ReadMapping(field, {
                                  {"cert_file", ReadableFile(tls.cert_file), true},
                                  {"key_file", ReadableFile(tls.key_file), true},
                                  {"min_version", OneOf<TlsVersion>({{"1.2", TlsVersion::kTls1_2},
                                                                     {"1.3", TlsVersion::kTls1_3}},
                                                                    tls.min_version)},
                              });
  };
}

}  // namespace

ValueReader Gateway(GatewayConfig& gateway) {
  return [&gateway](const Field& field) -> absl::Status {
    // Where max_buffered_bytes was written, for the check against body_limit below.
    std::optional<Field> budget_field;
    auto budget = [&gateway, &budget_field](const Field& value) {
      budget_field = value;
      return ByteSize(gateway.max_buffered_bytes)(value);
    };
    absl::Status status = ReadMapping(
        field, {
                   {"listen", Listen(gateway.listen)},
                   {"tls", Tls(gateway.tls)},
                   {"threads", Integer(gateway.threads, 0)},
                   {"body_limit", ByteSize(gateway.body_limit)},
                   {"header_limit", ByteSize(gateway.header_limit)},
                   {"max_events_per_request", Integer(gateway.max_events_per_request, 1)},
                   {"header_timeout", Millis(gateway.header_timeout)},
                   {"body_timeout", Millis(gateway.body_timeout)},
                   {"idle_timeout", Millis(gateway.idle_timeout)},
                   {"handshake_timeout", Millis(gateway.handshake_timeout)},
                   {"max_connections", Integer(gateway.max_connections, 1)},
                   {"max_buffered_bytes", budget},
                   {"max_connections_per_client", Integer(gateway.max_connections_per_client, 1)},
                   {"buffer_wait", Millis(gateway.buffer_wait)},
                   {"timestamp_tolerance", Seconds(gateway.timestamp_tolerance)},
               });
    if (!status.ok()) return status;
    // Half the budget is every connection's small share; a body of body_limit bytes must fit in
    // the other half, or it could never be read.
    if (budget_field.has_value() && gateway.max_buffered_bytes < 2 * gateway.body_limit) {
      return Invalid(*budget_field, absl::StrCat("must be at least twice gateway.body_limit (",
                                                 2 * gateway.body_limit, " bytes), got ",
                                                 gateway.max_buffered_bytes));
    }
    return absl::OkStatus();
  };
}

}  // namespace pimgate::config_internal
