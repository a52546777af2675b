// ParsePimTimeZone, PimTimeZone and FormatUtcOffset.
#include "common/time_zone.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace pimgate {

absl::StatusOr<absl::TimeZone> ParsePimTimeZone(std::string_view text_in) {
  const absl::string_view text(text_in.data(), text_in.size());
  if (text == "Z" || text == "z") return absl::FixedTimeZone(0);
  if (!text.empty() && (text.front() == '+' || text.front() == '-')) {
    int hours = 0;
    int minutes = 0;
    const bool shaped = text.size() == 6 && text[3] == ':' &&
                        absl::ascii_isdigit(static_cast<unsigned char>(text[1])) &&
                        absl::ascii_isdigit(static_cast<unsigned char>(text[2])) &&
                        absl::ascii_isdigit(static_cast<unsigned char>(text[4])) &&
                        absl::ascii_isdigit(static_cast<unsigned char>(text[5]));
    if (!shaped || !absl::SimpleAtoi(text.substr(1, 2), &hours) ||
        !absl::SimpleAtoi(text.substr(4, 2), &minutes) || hours > 14 || minutes > 59) {
      return absl::InvalidArgumentError(
          absl::StrCat("\"", absl::CHexEscape(text),
                       "\" is not a UTC offset: write it as +HH:MM or -HH:MM, from -14:00 to "
                       "+14:00 (e.g. \"-05:00\"), or use an IANA time zone name"));
    }
    const int seconds = (hours * 3600 + minutes * 60) * (text.front() == '-' ? -1 : 1);
    return absl::FixedTimeZone(seconds);
  }
  // "localtime" would be pimgate's own zone, not the PIM server's.
  const bool name_like =
      !text.empty() && text != "localtime" && std::all_of(text.begin(), text.end(), [](char c) {
        return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '/' || c == '_' ||
               c == '-' || c == '+';
      });
  if (!name_like) {
    return absl::InvalidArgumentError(absl::StrCat(
        "\"", absl::CHexEscape(text),
        "\" is not a time zone: use an IANA name such as \"America/New_York\" or \"UTC\", or a "
        "fixed offset such as \"-05:00\""));
  }
  absl::TimeZone zone;
  if (!absl::LoadTimeZone(std::string(text), &zone)) {
    return absl::NotFoundError(absl::StrCat(
        "time zone \"", text,
        "\" is not in the system's tz database (/usr/share/zoneinfo, Debian package tzdata); "
        "check the spelling, e.g. \"America/New_York\", or use a fixed offset such as \"-05:00\""));
  }
  return zone;
}

absl::StatusOr<PimTimeZone> PimTimeZone::Parse(std::string_view text) {
  absl::StatusOr<absl::TimeZone> zone = ParsePimTimeZone(text);
  if (!zone.ok()) return zone.status();
  return PimTimeZone{*zone, std::string(text)};
}

std::string FormatUtcOffset(int offset_seconds) {
  const char sign = offset_seconds < 0 ? '-' : '+';
  const int magnitude = offset_seconds < 0 ? -offset_seconds : offset_seconds;
  std::string out = absl::StrFormat("%c%02d:%02d", sign, magnitude / 3600, magnitude / 60 % 60);
  if (magnitude % 60 != 0) absl::StrAppendFormat(&out, ":%02d", magnitude % 60);
  return out;
}

}  // namespace pimgate
