// Dead letters: selection, retry (mark, hand over, unmark on failure; the dispatcher deletes or
// replaces the letter once the redelivery is over) and purge over the log's dead-letter records
// (EventLog::ReadDeadLetters and friends).
#include "core/dispatch/dead_letters.h"

#include <algorithm>
#include <functional>
#include <set>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/glob.h"
#include "google/protobuf/util/time_util.h"
#include "spdlog/spdlog.h"

namespace pimgate {
namespace {

// Dead letters read per log call while collecting them.
constexpr std::size_t kReadChunk = 1000;
// Dead letters read per log call while searching (bounded by the search's remaining budget).
constexpr std::size_t kSearchChunk = 256;

std::string SequenceList(const std::vector<uint64_t>& sequences) {
  return absl::StrJoin(sequences, ", ");
}

// Hands `take` every dead letter of `plugin` in sequence order, read kReadChunk at a time, until
// `take` returns false or none is left.
absl::Status ForEachDeadLetter(const EventLog& log, const std::string& plugin,
                               const std::function<bool(v1::DeadLetter&)>& take) {
  uint64_t from = 0;
  while (true) {
    absl::StatusOr<std::vector<v1::DeadLetter>> chunk =
        log.ReadDeadLetters(plugin, from, kReadChunk);
    if (!chunk.ok()) return chunk.status();
    for (v1::DeadLetter& letter : *chunk) {
      from = letter.event().sequence() + 1;
      if (!take(letter)) return absl::OkStatus();
    }
    if (chunk->size() < kReadChunk) return absl::OkStatus();
  }
}

std::vector<uint64_t> SequencesOf(const std::vector<v1::DeadLetter>& letters) {
  std::vector<uint64_t> sequences;
  sequences.reserve(letters.size());
  for (const v1::DeadLetter& letter : letters) sequences.push_back(letter.event().sequence());
  return sequences;
}

}  // namespace

DeadLetters::DeadLetters(EventLog& log, Redeliver redeliver)
    : log_(log), redeliver_(std::move(redeliver)) {}

absl::StatusOr<std::vector<v1::DeadLetter>> DeadLetters::List(const std::string& plugin,
                                                              uint64_t from,
                                                              std::size_t max) const {
  return log_.ReadDeadLetters(plugin, from, max);
}

absl::StatusOr<DeadLetterPage> DeadLetters::Search(const std::string& plugin,
                                                   const DeadLetterQuery& query,
                                                   const DeadLetterSearchLimits& limits) const {
  const std::string reason = absl::AsciiStrToLower(query.reason_contains);
  const auto matches = [&](const v1::DeadLetter& letter) {
    if (!query.type.empty() && !GlobMatch(query.type, letter.event().type())) return false;
    if (!query.resource_id.empty() && letter.event().resource_id() != query.resource_id) {
      return false;
    }
    if (query.kind == DeadLetterQuery::Kind::kRejected && !letter.rejected()) return false;
    if (query.kind == DeadLetterQuery::Kind::kExhausted && letter.rejected()) return false;
    if (!reason.empty() && !absl::StrContains(absl::AsciiStrToLower(letter.reason()), reason)) {
      return false;
    }
    return true;
  };

  DeadLetterPage page;
  std::size_t bytes = 0;
  uint64_t from = query.resume_at;
  // A full page ends at the next matching letter (`next` is its sequence), so that a search
  // whose last page is full needs no empty page after it, unless the budget runs out first.
  // Without a filter every letter read matches: read no more than the page and the one after.
  const bool any_filter = !query.type.empty() || !query.resource_id.empty() ||
                          query.kind != DeadLetterQuery::Kind::kAny || !reason.empty();
  while (page.scanned < limits.max_scan) {
    const std::size_t wanted = limits.page_size + 1 - page.letters.size();
    const std::size_t budget = std::min(any_filter ? std::max(wanted, kSearchChunk) : wanted,
                                        limits.max_scan - page.scanned);
    absl::StatusOr<std::vector<v1::DeadLetter>> chunk = log_.ReadDeadLetters(plugin, from, budget);
    if (!chunk.ok()) return chunk.status();
    for (v1::DeadLetter& letter : *chunk) {
      ++page.scanned;
      const uint64_t sequence = letter.event().sequence();
      from = sequence + 1;
      if (!matches(letter)) continue;
      const std::size_t size = letter.ByteSizeLong();
      const bool full = page.letters.size() == limits.page_size ||
                        (!page.letters.empty() && bytes + size > limits.max_bytes);
      if (full) {
        --page.scanned;  // the next page examines it again
        page.next = sequence;
        return page;
      }
      bytes += size;
      page.letters.push_back(std::move(letter));
    }
    if (chunk->size() < budget || from == 0) return page;  // every letter examined
  }
  page.next = from;  // the budget ran out: the next call goes on from here
  return page;
}

absl::StatusOr<uint64_t> DeadLetters::Count(const std::string& plugin) const {
  return log_.CountDeadLetters(plugin);
}

absl::StatusOr<std::vector<v1::DeadLetter>> DeadLetters::Select(
    const std::string& plugin, const DeadLetterSelection& selection, std::size_t max,
    bool skip_retrying, bool& more) const {
  more = false;
  if (selection.all == !selection.sequences.empty()) {
    return absl::InvalidArgumentError("set either all or a list of sequences");
  }
  std::vector<v1::DeadLetter> selected;
  if (selection.all) {
    const uint64_t head = log_.head();
    absl::Status read = ForEachDeadLetter(log_, plugin, [&](v1::DeadLetter& letter) {
      if (letter.event().sequence() > head) return false;
      if (skip_retrying && letter.has_retry_requested_at()) return true;
      if (selected.size() == max) {
        more = true;
        return false;
      }
      selected.push_back(std::move(letter));
      return true;
    });
    if (!read.ok()) return read;
    return selected;
  }
  const std::set<uint64_t> sequences(selection.sequences.begin(), selection.sequences.end());
  if (sequences.size() > max) {
    return absl::InvalidArgumentError(
        absl::StrCat("at most ", max, " sequences per call, got ", sequences.size()));
  }
  std::vector<uint64_t> missing;
  for (const uint64_t sequence : sequences) {
    absl::StatusOr<std::vector<v1::DeadLetter>> found = log_.ReadDeadLetters(plugin, sequence, 1);
    if (!found.ok()) return found.status();
    if (found->empty() || found->front().event().sequence() != sequence) {
      missing.push_back(sequence);
    } else {
      selected.push_back(std::move(found->front()));
    }
  }
  if (!missing.empty()) {
    return absl::NotFoundError(absl::StrCat("plugin ", plugin, " has no dead letter for sequence",
                                            missing.size() > 1 ? "s " : " ", SequenceList(missing),
                                            "; nothing was changed"));
  }
  return selected;
}

absl::StatusOr<RetriedDeadLetters> DeadLetters::Retry(const std::string& plugin,
                                                      const DeadLetterSelection& selection,
                                                      std::size_t max) {
  if (redeliver_ == nullptr) {
    return absl::FailedPreconditionError("the dispatcher is not running in this pimgate");
  }
  absl::MutexLock lock(&change_mu_);
  RetriedDeadLetters retried;
  absl::StatusOr<std::vector<v1::DeadLetter>> letters =
      Select(plugin, selection, max, /*skip_retrying=*/true, retried.more);
  if (!letters.ok()) return letters.status();
  if (letters->empty()) return retried;
  retried.sequences = SequencesOf(*letters);
  std::vector<v1::Event> events;
  events.reserve(letters->size());
  // Marked before the hand-over (see Retry in the header), without a cursor: the plugin's
  // cursor is not this call's. A letter already marked is left as stored: its retry is in
  // progress, and writing it again could bring it back just after its redelivery succeeded.
  PluginProgress marked;
  const google::protobuf::Timestamp now =
      google::protobuf::util::TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(absl::Now()));
  for (v1::DeadLetter& letter : *letters) {
    events.push_back(letter.event());
    if (letter.has_retry_requested_at()) continue;
    *letter.mutable_retry_requested_at() = now;
    marked.dead_letters.push_back(std::move(letter));
  }
  if (!marked.dead_letters.empty()) {
    if (absl::Status status = log_.WriteProgress(plugin, marked); !status.ok()) return status;
  }
  if (absl::Status status = redeliver_(plugin, std::move(events)); !status.ok()) {
    // Nothing is being retried after all: the marks go.
    for (v1::DeadLetter& letter : marked.dead_letters) letter.clear_retry_requested_at();
    if (absl::Status restored = log_.WriteProgress(plugin, marked); !restored.ok()) {
      spdlog::error("[dispatch {}] dead letters {} not retried, and still marked as retried: {}",
                    plugin, SequenceList(retried.sequences), std::string(restored.message()));
    }
    return status;
  }
  return retried;
}

absl::StatusOr<uint64_t> DeadLetters::Purge(const std::string& plugin,
                                            const DeadLetterSelection& selection,
                                            std::size_t max_per_round) {
  absl::MutexLock lock(&change_mu_);
  uint64_t purged = 0;
  bool more = true;
  while (more) {
    absl::StatusOr<std::vector<v1::DeadLetter>> letters =
        Select(plugin, selection, max_per_round, /*skip_retrying=*/false, more);
    if (!letters.ok()) return letters.status();
    if (letters->empty()) break;
    const std::vector<uint64_t> sequences = SequencesOf(*letters);
    if (absl::Status status = log_.DeleteDeadLetters(plugin, sequences); !status.ok()) {
      return status;
    }
    purged += sequences.size();
  }
  return purged;
}

absl::StatusOr<std::vector<v1::Event>> DeadLetters::Retrying(const std::string& plugin) const {
  std::vector<v1::Event> events;
  absl::Status read = ForEachDeadLetter(log_, plugin, [&](v1::DeadLetter& letter) {
    if (letter.has_retry_requested_at()) events.push_back(std::move(*letter.mutable_event()));
    return true;
  });
  if (!read.ok()) return read;
  return events;
}

absl::Status DeadLetters::Resolve(const std::string& plugin,
                                  const std::vector<uint64_t>& sequences) {
  return log_.DeleteDeadLetters(plugin, sequences);
}

}  // namespace pimgate
