// Parsing of the values pimgatectl's commands take.
#include "ctl/values.h"

#include <chrono>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/units.h"
#include "google/protobuf/util/time_util.h"

namespace pimgate::ctl {

using google::protobuf::util::TimeUtil;

absl::StatusOr<google::protobuf::Timestamp> ParseTime(const std::string& text) {
  google::protobuf::Timestamp ts;
  if (TimeUtil::FromString(text, &ts)) return ts;
  if (!text.empty() && absl::ascii_isdigit(text.front())) {
    absl::StatusOr<std::chrono::milliseconds> age = pimgate::ParseDuration(text);
    if (age.ok()) {
      return TimeUtil::MillisecondsToTimestamp(absl::ToUnixMillis(absl::Now()) - age->count());
    }
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "invalid time \"", text, "\": use RFC 3339 (2026-11-20T10:00:00Z) or an age (15m, 2h, 7d)"));
}

absl::StatusOr<uint64_t> ParseSequence(const std::string& text, absl::string_view what) {
  uint64_t value = 0;
  if (!absl::SimpleAtoi(text, &value) || value == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " must be a positive integer, got \"", text, "\""));
  }
  return value;
}

absl::StatusOr<int64_t> ParseLimit(const std::optional<std::string>& limit) {
  if (!limit.has_value()) return kDefaultLimit;
  int64_t value = 0;
  if (!absl::SimpleAtoi(*limit, &value) || value < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--limit must be a positive integer, got \"", *limit, "\""));
  }
  return value;
}

}  // namespace pimgate::ctl
