// "Did you mean ...?" for a mistyped name: the configuration loader's unknown keys and
// pimgatectl's unknown commands.
#ifndef PIMGATE_COMMON_DID_YOU_MEAN_H_
#define PIMGATE_COMMON_DID_YOU_MEAN_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace pimgate {

// Edits (insertions, deletions, substitutions and swaps of two adjacent characters) that turn
// `a` into `b` (optimal string alignment distance).
std::size_t EditDistance(absl::string_view a, absl::string_view b);

// The candidate closest to `typed`, when it is close enough to be what was meant: at most one
// edit for names up to 4 characters, two up to 8, three beyond; or `typed` is a prefix of it of
// at least 3 characters ("stat" -> "stats"). Ties go to the earliest candidate. Nothing when no
// candidate is that close. Thread-safe.
std::optional<std::string> DidYouMean(absl::string_view typed,
                                      const std::vector<std::string>& candidates);

}  // namespace pimgate

#endif  // PIMGATE_COMMON_DID_YOU_MEAN_H_
