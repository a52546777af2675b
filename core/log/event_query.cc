// Event queries: a bounded scan in sequence order (either direction) with filters, started by a
// binary search on received_at when the query has a time window. The scan filters on each
// event's header (core/log/event_header.h) and decodes in full only the events it returns: a
// filter that matches rarely reads max_scan events without decoding their data.
#include "core/log/event_query.h"

#include <algorithm>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/glob.h"
#include "core/log/event_header.h"
#include "google/protobuf/timestamp.pb.h"

namespace pimgate {
namespace {

// Events read from the log per read while scanning.
constexpr std::size_t kScanChunk = 512;

absl::Time ToTime(const google::protobuf::Timestamp& ts) {
  return absl::FromUnixSeconds(ts.seconds()) + absl::Nanoseconds(ts.nanos());
}

}  // namespace

absl::StatusOr<EventPage> QueryEvents(const EventLog& log, const EventQuery& query,
                                      const EventQueryLimits& limits) {
  const std::optional<absl::Time>& since = query.since;
  const std::optional<absl::Time>& until = query.until;
  if (since && until && *since >= *until) {
    return absl::InvalidArgumentError("since must be before until");
  }
  EventPage page;
  const uint64_t head = log.head();
  absl::StatusOr<std::optional<v1::Event>> oldest = log.OldestEvent();
  if (!oldest.ok()) return oldest.status();
  if (!oldest->has_value()) return page;  // empty log
  const uint64_t first = (*oldest)->sequence();

  const auto matches = [&](const v1::Event& event) {
    if (!query.source.empty() && event.source() != query.source) return false;
    if (!query.resource_id.empty() && event.resource_id() != query.resource_id) return false;
    if (!query.type.empty() && !GlobMatch(query.type, event.type())) return false;
    const absl::Time received = ToTime(event.received_at());
    if (since && received < *since) return false;
    if (until && received >= *until) return false;
    return true;
  };
  // Past this, the scan cannot meet another match (received_at grows with the sequence, give
  // or take the slack).
  const auto beyond_window = [&](const v1::Event& event) {
    const absl::Time received = ToTime(event.received_at());
    if (query.newest_first) return since && received < *since - limits.received_at_slack;
    return until && received >= *until + limits.received_at_slack;
  };

  // The next sequence to look at, in scan direction.
  uint64_t next = 0;
  if (query.resume_at) {
    next = *query.resume_at;
  } else if (query.newest_first) {
    next = head;
    if (until) {
      absl::StatusOr<uint64_t> after =
          FirstSequenceReceivedAtOrAfter(log, *until + limits.received_at_slack);
      if (!after.ok()) return after.status();
      next = std::min(head, *after - 1);
    }
  } else {
    next = first;
    if (since) {
      absl::StatusOr<uint64_t> start =
          FirstSequenceReceivedAtOrAfter(log, *since - limits.received_at_slack);
      if (!start.ok()) return start.status();
      next = std::max(next, *start);
    }
  }

  std::size_t scanned = 0;
  std::size_t bytes = 0;
  bool done = false;   // nothing more to find
  absl::Status error;  // a stored event that does not decode: the call fails with it
  // Takes one event in scan order; false stops the scan (page full or big enough; `next` then
  // points at where the following page starts; or `error` set).
  const auto take = [&](const StoredEvent& stored) -> bool {
    ++scanned;
    absl::StatusOr<v1::Event> header = ParseEventHeader(stored.bytes);
    if (!header.ok()) {
      error = absl::DataLossError(
          absl::StrCat("event ", stored.sequence, ": ", header.status().message()));
      return false;
    }
    if (beyond_window(*header)) {
      done = true;
      return false;
    }
    const uint64_t sequence = stored.sequence;
    if (matches(*header)) {
      const std::size_t size = stored.bytes.size();  // the serialized event: its ByteSizeLong
      if (!page.events.empty() && bytes + size > limits.max_bytes) {
        next = sequence;  // the next page starts with it
        return false;
      }
      bytes += size;
      if (!page.events.emplace_back().ParseFromString(stored.bytes)) {
        error = absl::DataLossError(absl::StrCat("event ", sequence, " does not decode"));
        return false;
      }
    }
    next = query.newest_first ? sequence - 1 : sequence + 1;
    return page.events.size() < limits.page_size;
  };

  while (!done && scanned < limits.max_scan) {
    const std::size_t budget = std::min(kScanChunk, limits.max_scan - scanned);
    if (query.newest_first) {
      if (next < first || next == 0) {
        done = true;
        break;
      }
      const uint64_t low = next >= first + budget - 1 ? next - budget + 1 : first;
      absl::StatusOr<std::vector<StoredEvent>> chunk = log.ReadStoredEvents(low, next - low + 1);
      if (!chunk.ok()) return chunk.status();
      bool stopped = false;
      const uint64_t high = next;
      for (auto it = chunk->rbegin(); it != chunk->rend(); ++it) {
        if (it->sequence > high) continue;  // past a hole: not in this range
        if (!take(*it)) {
          stopped = true;
          break;
        }
      }
      if (stopped) break;
      next = low - 1;
    } else {
      if (next > head) {
        done = true;
        break;
      }
      const std::size_t count =
          static_cast<std::size_t>(std::min<uint64_t>(budget, head - next + 1));
      absl::StatusOr<std::vector<StoredEvent>> chunk = log.ReadStoredEvents(next, count);
      if (!chunk.ok()) return chunk.status();
      if (chunk->empty()) {
        done = true;
        break;
      }
      bool stopped = false;
      for (const StoredEvent& stored : *chunk) {
        if (stored.sequence > head) {
          done = true;
          break;
        }
        if (!take(stored)) {
          stopped = true;
          break;
        }
      }
      if (stopped) break;
    }
  }
  if (!error.ok()) return error;
  page.scanned = scanned;
  const bool exhausted = done || (query.newest_first ? next < first || next == 0 : next > head);
  if (!exhausted) page.next = next;
  return page;
}

absl::StatusOr<uint64_t> FirstSequenceReceivedAtOrAfter(const EventLog& log, absl::Time time) {
  const uint64_t head = log.head();
  // Invariant: every stored sequence below `low` was received before `time`; every stored
  // sequence from `high` on (up to head) was received at or after it.
  uint64_t low = 1;
  uint64_t high = head + 1;
  while (low < high) {
    const uint64_t mid = low + (high - low) / 2;
    // The first stored event at or after mid (retention may have left a hole at mid).
    absl::StatusOr<std::vector<v1::Event>> probe = log.ReadEvents(mid, 1);
    if (!probe.ok()) return probe.status();
    // Nothing stored in [mid, high), or the first event at or after mid came at or after `time`
    // (and [mid, that event) is a hole): either way the answer is at most mid.
    if (probe->empty() || probe->front().sequence() >= high ||
        ToTime(probe->front().received_at()) >= time) {
      high = mid;
    } else {
      low = probe->front().sequence() + 1;
    }
  }
  if (low > head) return head + 1;
  // Land on a stored event (`low` may fall in a hole).
  absl::StatusOr<std::vector<v1::Event>> at = log.ReadEvents(low, 1);
  if (!at.ok()) return at.status();
  if (at->empty() || at->front().sequence() > head) return head + 1;
  return at->front().sequence();
}

}  // namespace pimgate
