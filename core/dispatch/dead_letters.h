// DeadLetters: the events a plugin rejected or never acknowledged, as the dispatch module keeps
// them, and what an operator does with them (list, count, retry, purge). The dispatch module is
// their one owner: the dispatcher stores them with its cursor, and this class is the only code
// that reads, deletes or writes them back, so the rules for changing a letter live in one place.
#ifndef PIMGATE_CORE_DISPATCH_DEAD_LETTERS_H_
#define PIMGATE_CORE_DISPATCH_DEAD_LETTERS_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "core/log/event_log.h"
#include "pimgate/v1/event.pb.h"

namespace pimgate {

// The dead letters of one plugin a retry or purge acts on: either `all`, or the listed
// `sequences` (never both, never neither).
struct DeadLetterSelection {
  // Every letter whose event was in the log when the call began (letters written during the
  // call are left for the next one). A retry's `all` leaves out the letters already being
  // retried (so that a caller repeating it while `more` is set gets through them all).
  bool all = false;
  // These letters; every one must exist, else nothing changes. Duplicates count once.
  std::vector<uint64_t> sequences;
};

// What one Retry handed back to the plugin.
struct RetriedDeadLetters {
  std::vector<uint64_t> sequences;  // in sequence order
  bool more = false;                // `all` left letters beyond the call's maximum
};

// Which letters a search returns. Empty strings and kAny filter nothing; filters combine with AND.
struct DeadLetterQuery {
  enum class Kind { kAny, kRejected, kExhausted };
  // The event's canonical type matches this glob (common/glob.h; checked by the caller with
  // EventTypeGlobProblem).
  std::string type;
  std::string resource_id;  // the event's exact resource id
  Kind kind = Kind::kAny;   // rejected (the plugin answered REJECT) or retries exhausted
  // The letter's reason contains this, ignoring ASCII case.
  std::string reason_contains;
  // The event sequence to resume at: a previous page's `next`. 0: from the first letter.
  uint64_t resume_at = 0;
};

// Bounds of one search call.
struct DeadLetterSearchLimits {
  std::size_t page_size = 100;  // most letters in one page, >= 1
  // Letters examined (matching or not) before the call returns a page, possibly empty, with
  // `next`: a filter that matches rarely costs many short calls, never one long one.
  std::size_t max_scan = 10'000;
  // A page stops growing past this many bytes of letters (ByteSizeLong); a letter larger than
  // this on its own still comes, alone in its page.
  std::size_t max_bytes = 3 << 20;
};

// One page of a search.
struct DeadLetterPage {
  std::vector<v1::DeadLetter> letters;  // in event sequence order
  uint64_t scanned = 0;                 // letters examined for this page, matching or not
  // Where the next page resumes (DeadLetterQuery::resume_at); unset when no further letter
  // matches.
  std::optional<uint64_t> next;
};

// Thread-safe. Retries and purges run one at a time (two concurrent retries of one letter would
// deliver it twice); reads run concurrently with them and with the dispatcher's writes.
//
//   DeadLetters& letters = dispatcher->dead_letters();
//   absl::StatusOr<RetriedDeadLetters> retried = letters.Retry("erp", {.all = true}, 10'000);
class DeadLetters {
 public:
  // Hands the events of retried letters to the plugin again (Dispatcher::Redeliver).
  using Redeliver =
      std::function<absl::Status(const std::string& plugin, std::vector<v1::Event> events)>;

  // `log` must outlive this object. `redeliver` null: Retry is FAILED_PRECONDITION (listing,
  // counting and purging need only the log).
  explicit DeadLetters(EventLog& log, Redeliver redeliver = nullptr);

  DeadLetters(const DeadLetters&) = delete;
  DeadLetters& operator=(const DeadLetters&) = delete;

  // Up to `max` letters of `plugin` with event sequence >= `from`, in sequence order.
  absl::StatusOr<std::vector<v1::DeadLetter>> List(const std::string& plugin, uint64_t from,
                                                   std::size_t max) const;
  // The letters of `plugin` matching `query`, one page at a time, in event sequence order.
  // Examines at most limits.max_scan letters per call. Following `next` until it is unset
  // returns every matching letter once (letters written or removed meanwhile may or may not be
  // seen, as with List).
  absl::StatusOr<DeadLetterPage> Search(const std::string& plugin, const DeadLetterQuery& query,
                                        const DeadLetterSearchLimits& limits) const;
  // How many letters `plugin` has stored now.
  absl::StatusOr<uint64_t> Count(const std::string& plugin) const;

  // Delivers the selected letters' events to `plugin` again, from attempt 1, at most `max` of
  // them (a listed selection of more is INVALID_ARGUMENT; `all` leaves the rest and sets
  // `more`). A letter is never deleted here: it is first marked in the store as being retried
  // (`retry_requested_at`, one write for the call), then its event is handed over, and it stays
  // listed until the plugin acknowledges that redelivery OK (the dispatcher then deletes it,
  // Resolve) or the event fails again (the dispatcher replaces it with a new letter, with the
  // new reason and attempts and without the mark). A crash in between loses nothing: the
  // marked letters' retries resume when the dispatcher starts again (Retrying). A letter
  // retried while its retry is in progress keeps its mark and is not delivered twice at once
  // (the dispatcher ignores an event it already holds). If the hand-over fails the marks are
  // taken back and the call fails.
  absl::StatusOr<RetriedDeadLetters> Retry(const std::string& plugin,
                                           const DeadLetterSelection& selection, std::size_t max);
  // The dispatcher's, when it starts: the events of `plugin`'s letters marked as being retried
  // (a retry that a stop or a crash interrupted), in sequence order, to hand over again. Reads
  // every letter of the plugin.
  absl::StatusOr<std::vector<v1::Event>> Retrying(const std::string& plugin) const;
  // Deletes the selected letters; returns how many. `all` works in rounds of `max_per_round`
  // (each round's letters are held in memory); a listed selection of more than that is
  // INVALID_ARGUMENT. Not fsynced: a deletion lost in a crash brings a letter back, never
  // loses one.
  absl::StatusOr<uint64_t> Purge(const std::string& plugin, const DeadLetterSelection& selection,
                                 std::size_t max_per_round);

  // The dispatcher's: deletes the letters whose redelivery `plugin` acknowledged OK. Called
  // after the progress write that follows the acknowledgement, so a crash in between leaves a
  // letter whose event was handled (retrying it again is harmless), never the reverse.
  absl::Status Resolve(const std::string& plugin, const std::vector<uint64_t>& sequences);

 private:
  // The letters `selection` names, at most `max` (`more`: `all` left some). A listed letter
  // that does not exist is NOT_FOUND, naming every missing sequence. `skip_retrying`: `all`
  // leaves out the letters marked as being retried.
  absl::StatusOr<std::vector<v1::DeadLetter>> Select(const std::string& plugin,
                                                     const DeadLetterSelection& selection,
                                                     std::size_t max, bool skip_retrying,
                                                     bool& more) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(change_mu_);

  EventLog& log_;
  const Redeliver redeliver_;
  // Serializes Retry and Purge.
  absl::Mutex change_mu_;
};

}  // namespace pimgate

#endif  // PIMGATE_CORE_DISPATCH_DEAD_LETTERS_H_
