// The `sources[].rest` and `sources[].reconcile` sections: the PIM's REST API and periodic
// reconciliation through it.
#include <algorithm>
#include <optional>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "common/time_zone.h"
#include "config/sections.h"
#include "config/value_readers.h"
#include "config/yaml_reader.h"

namespace pimgate::config_internal {
namespace {

// Upper bound of rest.max_concurrency: Akeneo allows 4 concurrent calls per connection.
constexpr int64_t kMaxRestConcurrency = 4;

// The origin of a PIM's REST API: "https://host[:port]", with IPv6 hosts in brackets. A trailing
// slash is dropped; a path, query, fragment or user info is refused (the client builds every path
// itself, and credentials go only to the token endpoint). Scheme and host are lower-cased.
// `is_http` tells the caller to check allow_insecure_http, which may come later in the mapping.
ValueReader BaseUrl(std::string& out, bool& is_http) {
  return [&out, &is_http](const Field& field) -> absl::Status {
    absl::StatusOr<std::string> text = ScalarOf(field);
    if (!text.ok()) return text.status();
    absl::string_view url = *text;
    std::string scheme;
    if (absl::StartsWithIgnoreCase(url, "https://")) {
      scheme = "https";
    } else if (absl::StartsWithIgnoreCase(url, "http://")) {
      scheme = "http";
    } else {
      return Invalid(field, absl::StrCat("must start with https:// (http:// only with "
                                         "allow_insecure_http: true), ",
                                         Got(field.node)));
    }
    url.remove_prefix(scheme.size() + 3);
    absl::ConsumeSuffix(&url, "/");
    if (url.find_first_of("/?#") != absl::string_view::npos) {
      return Invalid(field, absl::StrCat("must be scheme, host and optional port only, e.g. "
                                         "\"https://pim.example.com\" (no path), ",
                                         Got(field.node)));
    }
    if (absl::StrContains(url, "@")) {
      return Invalid(field,
                     "must not contain user info; credentials go in client_id, secret, username "
                     "and password");
    }
    absl::string_view host = url;
    absl::string_view port;
    if (absl::StartsWith(url, "[")) {
      const size_t close = url.find(']');
      if (close == absl::string_view::npos || close == 1) {
        return Invalid(field,
                       absl::StrCat("has an unterminated or empty [ipv6] host, ", Got(field.node)));
      }
      host = url.substr(1, close - 1);
      absl::string_view after = url.substr(close + 1);
      if (!after.empty() && !absl::ConsumePrefix(&after, ":")) {
        return Invalid(field, absl::StrCat("must be https://[ipv6]:port, ", Got(field.node)));
      }
      port = after;
      if (!std::all_of(host.begin(), host.end(),
                       [](char c) { return absl::ascii_isxdigit(c) || c == ':' || c == '.'; })) {
        return Invalid(field, absl::StrCat("has an invalid IPv6 host, ", Got(field.node)));
      }
    } else {
      const size_t colon = url.find(':');
      if (colon != absl::string_view::npos) {
        host = url.substr(0, colon);
        port = url.substr(colon + 1);
      }
      if (host.empty()) return Invalid(field, absl::StrCat("has no host, ", Got(field.node)));
      if (!std::all_of(host.begin(), host.end(), [](char c) {
            return absl::ascii_isalnum(c) || c == '-' || c == '.' || c == '_';
          })) {
        return Invalid(field, absl::StrCat("has an invalid host name (IPv6 hosts go in brackets), ",
                                           Got(field.node)));
      }
    }
    const bool has_port = url.size() > host.size() + (absl::StartsWith(url, "[") ? 2 : 0);
    int port_number = 0;
    if (has_port &&
        (port.empty() || port.size() > 5 ||
         !std::all_of(port.begin(), port.end(), absl::ascii_isdigit) ||
         !absl::SimpleAtoi(port, &port_number) || port_number < 1 || port_number > 65535)) {
      return Invalid(field,
                     absl::StrCat("port must be a number from 1 to 65535, ", Got(field.node)));
    }
    is_http = scheme == "http";
    out = absl::AsciiStrToLower(absl::StrCat(scheme, "://", url));
    return absl::OkStatus();
  };
}

// rest.timezone: a fixed UTC offset or an IANA name the system's tz database has.
ValueReader PimTimeZoneName(std::string& out) {
  return [&out](const Field& field) -> absl::Status {
    absl::StatusOr<std::string> text = ScalarOf(field);
    if (!text.ok()) return text.status();
    if (absl::StatusOr<absl::TimeZone> zone = ParsePimTimeZone(*text); !zone.ok()) {
      return Invalid(field, zone.status().message());
    }
    out = *std::move(text);
    return absl::OkStatus();
  };
}

// An RFC 3339 time ("2026-01-01T00:00:00Z", "2026-01-01T01:00:00+01:00") as microseconds since
// the epoch.
ValueReader Rfc3339Micros(std::optional<int64_t>& out) {
  return [&out](const Field& field) -> absl::Status {
    absl::StatusOr<std::string> text = ScalarOf(field);
    if (!text.ok()) return text.status();
    absl::Time time;
    std::string error;
    if (!absl::ParseTime(absl::RFC3339_full, *text, &time, &error)) {
      return Invalid(field, absl::StrCat("must be an RFC 3339 time such as "
                                         "\"2026-01-01T00:00:00Z\", ",
                                         Got(field.node)));
    }
    out = absl::ToUnixMicros(time);
    return absl::OkStatus();
  };
}

}  // namespace

ValueReader Rest(std::optional<RestConfig>& out) {
  return [&out](const Field& field) -> absl::Status {
    RestConfig& rest = out.emplace();
    std::optional<Secret> secret;
    std::optional<Secret> password;
    std::optional<int> base_url_line;
    std::optional<int> ca_file_line;
    bool is_http = false;
    BackoffRange backoff(rest.initial_backoff, rest.max_backoff);
    absl::Status status = ReadMapping(
        field,
        {
            {"base_url", Tracked(BaseUrl(rest.base_url, is_http), base_url_line), true},
            {"client_id", String(rest.client_id), true},
            {"secret", SecretValue(secret), true},
            {"username", String(rest.username), true},
            {"password", SecretValue(password), true},
            {"max_concurrency", IntegerInRange(rest.max_concurrency, 1, kMaxRestConcurrency)},
            {"timeout", Millis(rest.timeout)},
            {"max_attempts", IntegerInRange(rest.max_attempts, 1, kMaxRestAttempts)},
            {"initial_backoff", backoff.Initial()},
            {"max_backoff", backoff.Max()},
            {"ca_file", Tracked(ReadableFile(rest.ca_file), ca_file_line)},
            {"insecure_skip_verify", Bool(rest.insecure_skip_verify)},
            {"allow_insecure_http", Bool(rest.allow_insecure_http)},
            {"timezone", PimTimeZoneName(rest.timezone)},
        });
    if (!status.ok()) return status;
    if (absl::Status range = backoff.CheckAgainstDefaults(); !range.ok()) return range;
    rest.secret = *std::move(secret);
    rest.password = *std::move(password);
    const std::string prefix = absl::StrCat(field.path, ".");
    // The password grant sends the PIM user's password: never in clear unless asked for.
    if (is_http && !rest.allow_insecure_http) {
      return Invalid({field.node, prefix + "base_url", *base_url_line},
                     "http:// would send the PIM credentials in clear; use https://, or set "
                     "allow_insecure_http: true (tests, a PIM on this host)");
    }
    if (ca_file_line.has_value() && rest.insecure_skip_verify) {
      return Invalid({field.node, prefix + "ca_file", *ca_file_line},
                     "has no effect with insecure_skip_verify: true; remove one of the two");
    }
    return absl::OkStatus();
  };
}

ValueReader Reconcile(std::optional<ReconcileConfig>& out) {
  return [&out](const Field& field) -> absl::Status {
    ReconcileConfig& reconcile = out.emplace();
    absl::Status status = ReadMapping(field, {
                                                 {"interval", MillisOrZero(reconcile.interval)},
                                                 {"overlap", MillisOrZero(reconcile.overlap)},
                                                 {"since", Rfc3339Micros(reconcile.since_us)},
                                                 {"retry_after", Millis(reconcile.retry_after)},
                                                 {"products", Bool(reconcile.products)},
                                                 {"product_models", Bool(reconcile.product_models)},
                                             });
    if (!status.ok()) return status;
    if (!reconcile.products && !reconcile.product_models) {
      return Invalid(field,
                     "products and product_models are both false: nothing to reconcile (set "
                     "interval: 0 to reconcile only on demand)");
    }
    return absl::OkStatus();
  };
}

}  // namespace pimgate::config_internal
