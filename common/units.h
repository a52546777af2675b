// Durations ("500ms", "1h30m") and byte sizes ("4MiB") as pimgate's configuration and command
// line write them, parsed and formatted in one place.
#ifndef PIMGATE_COMMON_UNITS_H_
#define PIMGATE_COMMON_UNITS_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace pimgate {

// The longest duration ParseDuration accepts: 100 years (36500d). Any accepted duration converts
// to nanoseconds and adds to any clock's now without overflowing (a "never" written as 1000000d
// would not), so no caller has to saturate.
inline constexpr std::chrono::milliseconds kMaxDuration{int64_t{36'500} * 86'400'000};

// "500ms", "30s", "15m", "168h", "2d", "1h30m" → milliseconds. Units are ms, s, m, h and d, each
// at most once and largest first; numbers are whole and non-negative; at most kMaxDuration. "0s"
// parses (callers decide whether zero makes sense); a bare number ("10") is an error asking for a
// unit.
absl::StatusOr<std::chrono::milliseconds> ParseDuration(const std::string& text);
// "4194304", "512KiB", "4MiB", "1GiB" (also B, and KB/MB/GB as powers of 1000) → bytes. No
// fractions, signs or spaces; values beyond size_t are errors.
absl::StatusOr<std::size_t> ParseByteSize(const std::string& text);

// The inverse of ParseDuration, largest units first: 300000ms -> "5m", 5400000ms -> "1h30m".
std::string FormatDuration(std::chrono::milliseconds duration);

}  // namespace pimgate

#endif  // PIMGATE_COMMON_UNITS_H_
