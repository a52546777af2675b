// The values pimgatectl's commands take (times, sequences, limits), parsed the same way by each:
// an error is a usage error whose message names what was wrong.
#ifndef PIMGATE_CTL_VALUES_H_
#define PIMGATE_CTL_VALUES_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/timestamp.pb.h"

namespace pimgate::ctl {

// Items a list command shows when --limit is not given.
inline constexpr int64_t kDefaultLimit = 100;

// RFC 3339 ("2026-11-20T10:00:00Z", "2026-11-20T12:00:00+02:00") or an age before now ("15m",
// "2h", "7d", "1h30m").
absl::StatusOr<google::protobuf::Timestamp> ParseTime(const std::string& text);

// A positive event sequence; `what` names it in the error ("SEQ", "--sequence").
absl::StatusOr<uint64_t> ParseSequence(const std::string& text, absl::string_view what);

// --limit: a positive integer, kDefaultLimit when not given.
absl::StatusOr<int64_t> ParseLimit(const std::optional<std::string>& limit);

}  // namespace pimgate::ctl

#endif  // PIMGATE_CTL_VALUES_H_
