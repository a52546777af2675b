// Time zones as configuration writes them (`sources[].rest.timezone`) and as the PIM writes its
// UTC offsets.
#ifndef PIMGATE_COMMON_TIME_ZONE_H_
#define PIMGATE_COMMON_TIME_ZONE_H_

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace pimgate {

// A PIM server's time zone: a fixed offset ("-05:00", "+05:30", "+00:00", "Z") or an IANA name of
// the system's tz database ("America/New_York", "UTC"). InvalidArgument saying which form is
// expected otherwise; NotFound for a name the tz database does not have.
absl::StatusOr<absl::TimeZone> ParsePimTimeZone(std::string_view text);

// A PIM server's time zone together with the name it was configured by, for messages and figures
// (absl::TimeZone names a fixed offset "Fixed/UTC-05:00:00", not as the operator wrote it).
struct PimTimeZone {
  absl::TimeZone zone;
  std::string name;  // "America/New_York", "-05:00"

  // ParsePimTimeZone, keeping `text` as the name.
  static absl::StatusOr<PimTimeZone> Parse(std::string_view text);
};

// "+HH:MM" / "-HH:MM" for an offset in seconds east of UTC.
std::string FormatUtcOffset(int offset_seconds);

}  // namespace pimgate

#endif  // PIMGATE_COMMON_TIME_ZONE_H_
