// Durations and byte sizes as configuration and the command line write them.
#include "common/units.h"

#include <algorithm>
#include <iterator>
#include <limits>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace pimgate {
namespace {

// Quotes a (non-secret) value for an error message.
std::string Quote(absl::string_view text) {
  constexpr size_t kMaxShown = 64;
  if (text.size() > kMaxShown) {
    return absl::StrCat("\"", absl::CHexEscape(text.substr(0, kMaxShown)), "...\"");
  }
  return absl::StrCat("\"", absl::CHexEscape(text), "\"");
}

struct DurationUnit {
  absl::string_view name;
  int64_t millis;
};

// Largest first: a duration lists each unit at most once in this order, like "1d12h" or "1h30m",
// so "30m1h" and "1h1h" are rejected as likely typos.
constexpr DurationUnit kDurationUnits[] = {
    {"d", int64_t{86'400'000}}, {"h", int64_t{3'600'000}}, {"m", int64_t{60'000}},
    {"s", int64_t{1000}},       {"ms", int64_t{1}},
};

}  // namespace

std::string FormatDuration(std::chrono::milliseconds duration) {
  int64_t left = duration.count();
  if (left <= 0) return absl::StrCat(left, "ms");
  std::string text;
  for (const DurationUnit& unit : kDurationUnits) {
    if (left >= unit.millis) {
      absl::StrAppend(&text, left / unit.millis, unit.name);
      left %= unit.millis;
    }
  }
  return text;
}

absl::StatusOr<std::chrono::milliseconds> ParseDuration(const std::string& text) {
  const auto invalid = [&text](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("invalid duration ", Quote(text), ": ", why));
  };
  if (text.empty()) return invalid("empty");
  if (std::any_of(text.begin(), text.end(), absl::ascii_isspace)) {
    return invalid("must not contain spaces");
  }
  const absl::string_view view = text;
  int64_t total = 0;
  size_t next_unit = 0;  // index into kDurationUnits of the largest unit still allowed
  size_t i = 0;
  while (i < view.size()) {
    const size_t number_start = i;
    while (i < view.size() && absl::ascii_isdigit(view[i])) ++i;
    if (i == number_start) {
      return invalid("expected a whole number followed by a unit (ms, s, m, h or d), e.g. \"30s\"");
    }
    const absl::string_view number = view.substr(number_start, i - number_start);
    if (i < view.size() && view[i] == '.') {
      return invalid("use whole numbers with a smaller unit, e.g. 1500ms rather than 1.5s");
    }
    const size_t unit_start = i;
    while (i < view.size() && absl::ascii_isalpha(view[i])) ++i;
    const absl::string_view unit = view.substr(unit_start, i - unit_start);
    if (unit.empty()) {
      if (number_start == 0 && i == view.size()) {
        return invalid(
            absl::StrCat("missing unit; write e.g. \"", number, "s\" or \"", number, "ms\""));
      }
      return invalid(absl::StrCat("missing unit after ", number, " (ms, s, m, h or d)"));
    }
    size_t u = 0;
    while (u < std::size(kDurationUnits) && kDurationUnits[u].name != unit) ++u;
    if (u == std::size(kDurationUnits)) {
      return invalid(
          absl::StrCat("unknown unit \"", absl::CHexEscape(unit), "\" (use ms, s, m, h or d)"));
    }
    if (u < next_unit) return invalid("each unit may appear once, largest first (e.g. \"1h30m\")");
    next_unit = u + 1;
    int64_t value = 0;
    if (!absl::SimpleAtoi(number, &value) ||
        __builtin_mul_overflow(value, kDurationUnits[u].millis, &value) ||
        __builtin_add_overflow(total, value, &total) || total > kMaxDuration.count()) {
      return invalid(
          absl::StrCat("too large (at most ", FormatDuration(kMaxDuration), ", 100 years)"));
    }
  }
  return std::chrono::milliseconds(total);
}

absl::StatusOr<std::size_t> ParseByteSize(const std::string& text) {
  struct Unit {
    absl::string_view name;
    uint64_t bytes;
  };
  static constexpr Unit kUnits[] = {
      {"", 1},
      {"B", 1},
      {"KB", 1000},
      {"MB", uint64_t{1000} * 1000},
      {"GB", uint64_t{1000} * 1000 * 1000},
      {"KiB", uint64_t{1} << 10},
      {"MiB", uint64_t{1} << 20},
      {"GiB", uint64_t{1} << 30},
  };
  const auto invalid = [&text](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("invalid size ", Quote(text), ": ", why));
  };
  const absl::string_view view = text;
  size_t i = 0;
  while (i < view.size() && absl::ascii_isdigit(view[i])) ++i;
  if (i == 0) {
    return invalid(
        "expected a whole number of bytes, optionally followed by B, KB, MB, GB, KiB, MiB or GiB");
  }
  const absl::string_view unit = view.substr(i);
  const Unit* found = nullptr;
  for (const Unit& candidate : kUnits) {
    if (candidate.name == unit) found = &candidate;
  }
  if (found == nullptr) {
    return invalid(absl::StrCat("unknown unit \"", absl::CHexEscape(unit),
                                "\" (use B, KB, MB, GB, KiB, MiB or GiB)"));
  }
  uint64_t value = 0;
  if (!absl::SimpleAtoi(view.substr(0, i), &value) ||
      __builtin_mul_overflow(value, found->bytes, &value) ||
      value > std::numeric_limits<std::size_t>::max()) {
    return invalid("too large");
  }
  return static_cast<std::size_t>(value);
}

}  // namespace pimgate
