// Queries over the event log beyond point reads: finding events by source, resource, type glob
// and time range (Admin.ListEvents, `pimgatectl events`), and the first event received at or
// after a time (Admin.SeekPlugin, and the start of a time-bounded scan). Every call is bounded:
// it reads at most EventQueryLimits::max_scan events and returns a page with where to resume.
#ifndef PIMGATE_CORE_LOG_EVENT_QUERY_H_
#define PIMGATE_CORE_LOG_EVENT_QUERY_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/log/event_log.h"
#include "pimgate/v1/event.pb.h"

namespace pimgate {

// What to find. Empty strings and unset times filter nothing.
struct EventQuery {
  std::string source;       // events of this source only
  std::string resource_id;  // events of this resource only
  std::string type;         // canonical types matching this glob (common/glob.h: `*` only)
  // received_at in [since, until): since inclusive, until exclusive. since < until when both set.
  std::optional<absl::Time> since;
  std::optional<absl::Time> until;
  // Scan from the newest event backwards instead of from the oldest forwards.
  bool newest_first = false;
  // The sequence to resume at, in scan direction: a previous page's `next`. Unset: the first
  // page (from the start of the time window, or the log's end with newest_first).
  std::optional<uint64_t> resume_at;
};

// Bounds of one query call.
struct EventQueryLimits {
  // Most events in one page. >= 1.
  std::size_t page_size = 100;
  // Events read (matching or not) before the call returns a page, possibly empty, with `next`:
  // a filter that matches rarely costs many short calls, never one long one.
  std::size_t max_scan = 10'000;
  // A page stops growing past this many bytes of events (ByteSizeLong); an event larger than
  // this on its own still comes, alone in its page.
  std::size_t max_bytes = 3 << 20;
  // How far received_at may run backwards from one sequence to the next (concurrent requests
  // overtaking one another in the write queue). The scan starts and stops this much outside the
  // time window, so no event inside it is missed.
  absl::Duration received_at_slack = absl::Seconds(5);
};

// One page of a query's answer.
struct EventPage {
  std::vector<v1::Event> events;  // in scan order
  uint64_t scanned = 0;           // events read for this page, matching or not
  // Where the next page resumes (EventQuery::resume_at); unset when nothing more can match.
  std::optional<uint64_t> next;
};

// Finds the events matching `query`, oldest first (or newest first), one page at a time. Reads
// only what the log has acknowledged (up to head() at the start of the call); events trimmed by
// retention are skipped. Pages are contiguous: following `next` until it is unset visits every
// matching event once. InvalidArgument when since is not before until; other errors are failed
// log reads. Thread-safe (reads only), concurrent with appends and retention.
absl::StatusOr<EventPage> QueryEvents(const EventLog& log, const EventQuery& query,
                                      const EventQueryLimits& limits);

// The first sequence whose event was received at or after `time`, or head + 1 when none was.
// Binary search over sequences (O(log n) point reads), which relies on received_at growing with
// the sequence. Holes left by retention are skipped. Thread-safe (reads only).
absl::StatusOr<uint64_t> FirstSequenceReceivedAtOrAfter(const EventLog& log, absl::Time time);

}  // namespace pimgate

#endif  // PIMGATE_CORE_LOG_EVENT_QUERY_H_
