// The `sources[].platform` section: Akeneo's Event Platform management API.
#include <algorithm>
#include <optional>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "config/sections.h"
#include "config/value_readers.h"
#include "config/yaml_reader.h"

namespace pimgate::config_internal {
namespace {

// The management API's base URL keeps its path (Akeneo's is /api/v1): the client appends every
// path to it. No query, fragment or user info: the PIM token goes in a header only.
constexpr BaseUrl::ParseOptions kApiUrlRules = {
    .allow_path = true,
    .scheme_hint = " (http:// only with allow_insecure_http: true)",
    .user_info_hint = "",
};

// contact.technical_email: an address Akeneo can mail (local@domain.tld, no spaces).
ValueReader Email(std::string& out) {
  return [&out](const Field& field) -> absl::Status {
    if (absl::Status status = String(out)(field); !status.ok()) return status;
    const size_t at = out.find('@');
    const bool valid = at != std::string::npos && at > 0 && out.find('@', at + 1) == out.npos &&
                       out.find('.', at + 2) != out.npos && out.back() != '.' &&
                       std::none_of(out.begin(), out.end(), [](char c) {
                         return absl::ascii_isspace(static_cast<unsigned char>(c)) ||
                                absl::ascii_iscntrl(static_cast<unsigned char>(c));
                       });
    if (!valid) return Invalid(field, absl::StrCat("must be an e-mail address, ", Got(field.node)));
    return absl::OkStatus();
  };
}

}  // namespace

ValueReader Platform(std::optional<PlatformConfig>& out) {
  return [&out](const Field& field) -> absl::Status {
    PlatformConfig& platform = out.emplace();
    std::optional<int> api_url_line;
    std::optional<int> ca_file_line;
    BackoffRange backoff(platform.initial_backoff, platform.max_backoff);
    absl::Status status = ReadMapping(
        field, {
                   {"api_url", Tracked(Url(platform.api_url, kApiUrlRules), api_url_line)},
                   {"subscriber_name", String(platform.subscriber_name)},
                   {"technical_email", Email(platform.technical_email)},
                   {"auto_resume", Bool(platform.auto_resume)},
                   {"watch_interval", Millis(platform.watch_interval)},
                   {"timeout", Millis(platform.timeout)},
                   {"max_attempts", IntegerInRange(platform.max_attempts, 1, kMaxRestAttempts)},
                   {"initial_backoff", backoff.Initial()},
                   {"max_backoff", backoff.Max()},
                   {"proxy", Proxy(platform.proxy)},
                   {"ca_file", Tracked(ReadableFile(platform.ca_file), ca_file_line)},
                   {"insecure_skip_verify", Bool(platform.insecure_skip_verify)},
                   {"allow_insecure_http", Bool(platform.allow_insecure_http)},
               });
    if (!status.ok()) return status;
    if (absl::Status range = backoff.CheckAgainstDefaults(); !range.ok()) return range;
    const std::string prefix = absl::StrCat(field.path, ".");
    // The PIM access token travels in X-PIM-TOKEN: never in clear unless asked for.
    if (api_url_line.has_value() && !platform.api_url.https() && !platform.allow_insecure_http) {
      return Invalid({field.node, prefix + "api_url", *api_url_line},
                     "http:// would send the PIM access token in clear; use https://, or set "
                     "allow_insecure_http: true (tests)");
    }
    if (ca_file_line.has_value() && platform.insecure_skip_verify) {
      return Invalid({field.node, prefix + "ca_file", *ca_file_line},
                     "has no effect with insecure_skip_verify: true; remove one of the two");
    }
    return absl::OkStatus();
  };
}

}  // namespace pimgate::config_internal

namespace pimgate {

BaseUrl DefaultPlatformApiUrl() {
  // Checked by tests/config/config_test.cc (PlatformDefaults).
  static const BaseUrl* const kDefault = new BaseUrl(
      *BaseUrl::Parse("https://event.prd.sdk.akeneo.cloud/api/v1", config_internal::kApiUrlRules));
  return *kDefault;
}

}  // namespace pimgate
