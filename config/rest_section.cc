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

// A PIM's REST API is an origin: the client builds every path itself, and credentials go only to
// the token endpoint, never in the URL.
constexpr BaseUrl::ParseOptions kBaseUrlRules = {
    .allow_path = false,
    .scheme_hint = " (http:// only with allow_insecure_http: true)",
    .user_info_hint = "; credentials go in client_id, secret, username and password",
};

// rest.timezone: a fixed UTC offset or an IANA name the system's tz database has.
ValueReader PimTimeZoneValue(std::optional<PimTimeZone>& out) {
  return [&out](const Field& field) -> absl::Status {
    absl::StatusOr<std::string> text = ScalarOf(field);
    if (!text.ok()) return text.status();
    absl::StatusOr<PimTimeZone> zone = PimTimeZone::Parse(*text);
    if (!zone.ok()) return Invalid(field, zone.status().message());
    out = *std::move(zone);
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
    BackoffRange backoff(rest.initial_backoff, rest.max_backoff);
    absl::Status status = ReadMapping(
        field,
        {
            {"base_url", Tracked(Url(rest.base_url, kBaseUrlRules), base_url_line), true},
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
            {"proxy", Proxy(rest.proxy)},
            {"insecure_skip_verify", Bool(rest.insecure_skip_verify)},
            {"allow_insecure_http", Bool(rest.allow_insecure_http)},
            {"timezone", PimTimeZoneValue(rest.timezone)},
        });
    if (!status.ok()) return status;
    if (absl::Status range = backoff.CheckAgainstDefaults(); !range.ok()) return range;
    rest.secret = *std::move(secret);
    rest.password = *std::move(password);
    const std::string prefix = absl::StrCat(field.path, ".");
    // The password grant sends the PIM user's password: never in clear unless asked for.
    if (!rest.base_url.https() && !rest.allow_insecure_http) {
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
    absl::Status status = ReadMapping(
        field, {
                   {"interval", MillisOrZero(reconcile.interval)},
                   {"overlap", MillisOrZero(reconcile.overlap)},
                   {"since", Rfc3339Micros(reconcile.since_us)},
                   {"retry_after", Millis(reconcile.retry_after)},
                   {"products", Bool(reconcile.products)},
                   {"product_models", Bool(reconcile.product_models)},
                   {"families", Bool(reconcile.families)},
                   {"categories", Bool(reconcile.categories)},
                   {"attributes", Bool(reconcile.attributes)},
                   {"attribute_groups", Bool(reconcile.attribute_groups)},
                   {"reference_entity_records", Bool(reconcile.reference_entity_records)},
                   {"assets", Bool(reconcile.assets)},
               });
    if (!status.ok()) return status;
    if (!reconcile.products && !reconcile.product_models && !reconcile.families &&
        !reconcile.categories && !reconcile.attributes && !reconcile.attribute_groups &&
        !reconcile.reference_entity_records && !reconcile.assets) {
      return Invalid(field,
                     "products, product_models, families, categories, attributes, "
                     "attribute_groups, reference_entity_records and assets are all false: "
                     "nothing to reconcile (set interval: 0 to reconcile only on demand)");
    }
    return absl::OkStatus();
  };
}

}  // namespace pimgate::config_internal
