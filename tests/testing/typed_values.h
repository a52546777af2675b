// Typed configuration values (common/net_address.h, common/base_url.h, common/time_zone.h) made
// from text in tests, as the configuration loader makes them. A text that does not parse is a bug
// in the test: it aborts with the parser's message.
#ifndef PIMGATE_TESTS_TESTING_TYPED_VALUES_H_
#define PIMGATE_TESTS_TESTING_TYPED_VALUES_H_

#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/base_url.h"
#include "common/net_address.h"
#include "common/time_zone.h"

namespace pimgate::testing {

template <typename T>
T ParsedOrDie(absl::StatusOr<T> parsed, std::string_view text) {
  if (!parsed.ok()) {
    std::fprintf(stderr, "test value \"%.*s\" does not parse: %s\n", static_cast<int>(text.size()),
                 text.data(), std::string(parsed.status().message()).c_str());
    std::abort();
  }
  return *std::move(parsed);
}

// "127.0.0.1:0", "[::1]:0", "unix:/tmp/x.sock".
inline ListenAddress ListenAt(std::string_view text) {
  ListenAddress::ParseOptions options;
  options.allow_unix_socket = true;
  return ParsedOrDie(ListenAddress::Parse(absl::string_view(text.data(), text.size()), options),
                     text);
}

// "https://127.0.0.1:8443"; with `allow_path`, "http://127.0.0.1:9/api/v1".
inline BaseUrl UrlOf(std::string_view text, bool allow_path = false) {
  BaseUrl::ParseOptions options;
  options.allow_path = allow_path;
  return ParsedOrDie(BaseUrl::Parse(absl::string_view(text.data(), text.size()), options), text);
}

// "-05:00", "America/New_York".
inline PimTimeZone ZoneOf(std::string_view text) {
  return ParsedOrDie(PimTimeZone::Parse(text), text);
}

}  // namespace pimgate::testing

#endif  // PIMGATE_TESTS_TESTING_TYPED_VALUES_H_
