// Optimal string alignment distance and the "did you mean" choice built on it.
#include "common/did_you_mean.h"

#include <algorithm>
#include <vector>

#include "absl/strings/match.h"

namespace pimgate {
namespace {

// Names this short are compared whole: a suggestion for a 1-2 character typo would be a guess.
constexpr std::size_t kMinSuggestLength = 2;
// A typed prefix shorter than this matches too many names to suggest one.
constexpr std::size_t kMinPrefixLength = 3;

std::size_t MaxEdits(std::size_t length) {
  if (length <= 4) return 1;
  if (length <= 8) return 2;
  return 3;
}

}  // namespace

std::size_t EditDistance(absl::string_view a, absl::string_view b) {
  // Three rows of the dynamic programme: two back for the transposition.
  std::vector<std::size_t> before(b.size() + 1), previous(b.size() + 1), current(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) previous[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    current[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      current[j] = std::min({previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        current[j] = std::min(current[j], before[j - 2] + 1);
      }
    }
    std::swap(before, previous);
    std::swap(previous, current);
  }
  return previous[b.size()];
}

std::optional<std::string> DidYouMean(absl::string_view typed,
                                      const std::vector<std::string>& candidates) {
  if (typed.size() < kMinSuggestLength) return std::nullopt;
  std::optional<std::string> best;
  std::size_t best_distance = 0;
  for (const std::string& candidate : candidates) {
    if (candidate == typed) continue;
    std::size_t distance = EditDistance(typed, candidate);
    if (distance > MaxEdits(std::max(typed.size(), candidate.size()))) {
      // A truncated name ("stat", "recon") still points at one candidate.
      if (typed.size() < kMinPrefixLength || !absl::StartsWith(candidate, typed)) continue;
    }
    if (!best.has_value() || distance < best_distance) {
      best = candidate;
      best_distance = distance;
    }
  }
  return best;
}

}  // namespace pimgate
