// EventLog: group commit over a LogBackend. One committer thread makes every sequencing, dedup
// and staleness decision, so those need no locks; the request queue is the only shared state.
#include "core/event_log.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <future>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "google/protobuf/timestamp.pb.h"

namespace pimgate {
namespace {

// Range of google.protobuf.Timestamp (0001-01-01 .. 9999-12-31). Clamping to it keeps the
// conversion to microseconds free of overflow even for a malformed timestamp.
constexpr int64_t kMinTimestampSeconds = -62135596800;
constexpr int64_t kMaxTimestampSeconds = 253402300799;
constexpr int64_t kMicrosPerSecond = 1'000'000;
constexpr int32_t kNanosPerMicro = 1'000;

int64_t ToMicros(const google::protobuf::Timestamp& ts) {
  const int64_t seconds = std::clamp(ts.seconds(), kMinTimestampSeconds, kMaxTimestampSeconds);
  return seconds * kMicrosPerSecond + ts.nanos() / kNanosPerMicro;
}

// The version that orders `event` against other events for the same resource: version_at, else
// occurred_at. An event with neither cannot be ordered and takes no part in staleness.
std::optional<int64_t> VersionOf(const v1::Event& event) {
  if (event.has_version_at()) return ToMicros(event.version_at());
  if (event.has_occurred_at()) return ToMicros(event.occurred_at());
  return std::nullopt;
}

// Map keys for the in-group caches: the parts joined by '\0', which cannot occur in source
// names, ids or kinds.
std::string JoinKey(std::initializer_list<std::string_view> parts) {
  std::string key;
  bool first = true;
  for (std::string_view part : parts) {
    if (!first) key.push_back('\0');
    key.append(part);
    first = false;
  }
  return key;
}

std::string IdKey(const v1::Event& event) { return JoinKey({event.source(), event.id()}); }

std::string ResourceMapKey(const v1::Event& event) {
  return JoinKey({event.source(), event.kind(), event.resource_id()});
}

// Turns the requests of one group, in queue order, into one CommitBatch. Dedup and staleness
// consult what this group has already decided before the backend, because the backend does not
// see the group until it is written. Nothing here touches EventLog state: the caller publishes
// the new counters only if the batch is written.
class GroupBuilder {
 public:
  GroupBuilder(LogBackend& backend, uint64_t last_sequence, uint64_t last_quarantine_id)
      : backend_(backend) {
    batch_.last_sequence = last_sequence;
    batch_.last_quarantine_id = last_quarantine_id;
  }

  // Adds `request` to the batch. An error means a backend lookup failed; the batch is then
  // incomplete and must not be written.
  absl::StatusOr<AppendResult> Add(AppendRequest request) {
    AppendResult result;
    for (v1::Event& event : request.events) {
      absl::StatusOr<bool> duplicate = IsDuplicate(event);
      if (!duplicate.ok()) return duplicate.status();
      if (*duplicate) {
        ++result.duplicates;
        continue;
      }
      const uint64_t sequence = ++batch_.last_sequence;
      event.set_sequence(sequence);
      absl::StatusOr<bool> stale = MarkVersion(event, sequence);
      if (!stale.ok()) return stale.status();
      event.set_stale(*stale);
      if (*stale) ++result.stale;
      if (!event.id().empty()) {
        batch_.dedup.emplace_back(DedupKey{event.source(), event.id()}, sequence);
      }
      ++result.accepted;
      if (result.first_sequence == 0) result.first_sequence = sequence;
      result.last_sequence = sequence;
      batch_.events.push_back(std::move(event));
    }
    for (v1::QuarantineEntry& entry : request.quarantine) {
      entry.set_id(++batch_.last_quarantine_id);
      batch_.quarantine.push_back(std::move(entry));
    }
    return result;
  }

  // True when the group stores anything; a group of duplicates and empty requests needs no
  // Write (the originals were made durable by an earlier, acknowledged Write).
  bool has_writes() const { return !batch_.events.empty() || !batch_.quarantine.empty(); }

  // Completes the batch with the versions this group raised. Call once, after the last Add.
  const CommitBatch& Finish() {
    for (auto& [map_key, tracked] : versions_) {
      if (tracked.changed) batch_.versions.emplace_back(tracked.key, *tracked.newest);
    }
    versions_.clear();
    return batch_;
  }

 private:
  struct TrackedVersion {
    ResourceKey key;
    std::optional<ResourceVersion> newest;  // max of the backend's and this group's versions
    bool changed = false;                   // this group raised it: write it with the batch
  };

  absl::StatusOr<bool> IsDuplicate(const v1::Event& event) {
    // An event without an id cannot be recognised when re-sent; it is always stored.
    if (event.id().empty()) return false;
    auto [it, inserted] = seen_ids_.insert(IdKey(event));
    if (!inserted) return true;  // twice in this group (same request or an earlier one)
    absl::StatusOr<std::optional<uint64_t>> stored =
        backend_.FindEventId(DedupKey{event.source(), event.id()});
    if (!stored.ok()) return stored.status();
    // Either way the id is now known to the group: stored before, or stored by this event.
    return stored->has_value();
  }

  // Returns whether `event` is stale, and records its version as the resource's newest if not.
  // Deletions are versions like any other: an update older than a deletion is stale.
  absl::StatusOr<bool> MarkVersion(const v1::Event& event, uint64_t sequence) {
    if (event.resource_id().empty()) return false;  // nothing to order against
    const std::optional<int64_t> version = VersionOf(event);
    if (!version.has_value()) return false;

    auto [it, inserted] = versions_.try_emplace(ResourceMapKey(event));
    TrackedVersion& tracked = it->second;
    if (inserted) {
      tracked.key = ResourceKey{event.source(), event.kind(), event.resource_id()};
      absl::StatusOr<std::optional<ResourceVersion>> stored = backend_.FindVersion(tracked.key);
      if (!stored.ok()) {
        versions_.erase(it);
        return stored.status();
      }
      tracked.newest = *stored;
    }
    // Strictly older is stale. The same version again (a re-sent change under a new id) is not:
    // delivering it cannot overwrite newer state.
    if (tracked.newest.has_value() && *version < tracked.newest->version_at_us) return true;
    // A deletion is remembered with the version (see ResourceVersion::deleted): canonical
    // deletions are `<kind>.deleted` (legacy `removed` is canonicalised to it).
    tracked.newest = ResourceVersion{*version, sequence, absl::EndsWith(event.type(), ".deleted")};
    tracked.changed = true;
    return false;
  }

  LogBackend& backend_;
  CommitBatch batch_;
  std::unordered_set<std::string> seen_ids_;
  std::unordered_map<std::string, TrackedVersion> versions_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<EventLog>> EventLog::Open(std::unique_ptr<LogBackend> backend,
                                                         EventLogOptions options) {
  if (backend == nullptr) return absl::InvalidArgumentError("EventLog needs a backend");
  if (options.max_commit_requests == 0) {
    return absl::InvalidArgumentError("max_commit_requests must be at least 1");
  }
  absl::StatusOr<RecoveredState> state = backend->Recover();
  if (!state.ok()) return state.status();
  return std::unique_ptr<EventLog>(new EventLog(std::move(backend), options, *state));
}

EventLog::EventLog(std::unique_ptr<LogBackend> backend, EventLogOptions options,
                   RecoveredState state)
    : backend_(std::move(backend)),
      options_(options),
      head_(state.last_sequence),
      last_quarantine_id_(state.last_quarantine_id),
      committer_([this] { CommitLoop(); }) {}

EventLog::~EventLog() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    queue_cv_.Signal();
  }
  // The committer exits only once the queue is empty, so every accepted Append gets its
  // callback (and, on success, is in the backend) before the backend is destroyed.
  committer_.join();
}

void EventLog::Append(AppendRequest request, AppendCallback callback) {
  {
    absl::MutexLock lock(&mu_);
    if (!stopping_) {
      // Counted under the lock so the committer can never subtract it before it is added.
      pending_.fetch_add(1, std::memory_order_relaxed);
      queue_.push_back(Pending{std::move(request), std::move(callback)});
      queue_cv_.Signal();
      return;
    }
  }
  callback(absl::UnavailableError("event log is shutting down"));
}

absl::StatusOr<AppendResult> EventLog::AppendSync(AppendRequest request) {
  // The callback co-owns the promise: the committer may still be inside set_value() when get()
  // returns here, so the promise must not live on this stack frame.
  auto promise = std::make_shared<std::promise<absl::StatusOr<AppendResult>>>();
  std::future<absl::StatusOr<AppendResult>> result = promise->get_future();
  Append(std::move(request),
         [promise](absl::StatusOr<AppendResult> r) { promise->set_value(std::move(r)); });
  return result.get();
}

void EventLog::CommitLoop() {
  std::vector<Pending> group;
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      while (queue_.empty() && !stopping_) queue_cv_.Wait(&mu_);
      if (queue_.empty()) return;  // stopping, and everything queued has been committed
      const std::size_t n = std::min(queue_.size(), options_.max_commit_requests);
      group.reserve(n);
      for (std::size_t i = 0; i < n; ++i) {
        group.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
    }
    CommitGroup(group);
    group.clear();
  }
}

void EventLog::CommitGroup(std::vector<Pending>& group) {
  // The group is computed in locals and published only after the backend Write succeeds: a
  // failed group leaves head_, last_quarantine_id_ and the backend exactly as they were, so the
  // next group reuses the same sequences and ids and the log has no gap.
  GroupBuilder builder(*backend_, head_.load(std::memory_order_relaxed), last_quarantine_id_);
  std::vector<AppendResult> results;
  results.reserve(group.size());
  absl::Status status;
  for (Pending& pending : group) {
    absl::StatusOr<AppendResult> result = builder.Add(std::move(pending.request));
    if (!result.ok()) {
      status = result.status();
      break;
    }
    results.push_back(*result);
  }

  const CommitBatch& batch = builder.Finish();
  if (status.ok() && builder.has_writes()) {
    // Durability point: with options_.sync the whole group is fsynced when this returns OK.
    status = backend_->Write(batch, options_.sync);
  }

  if (status.ok()) {
    last_quarantine_id_ = batch.last_quarantine_id;
    head_.store(batch.last_sequence, std::memory_order_release);
    if (builder.has_writes()) {
      absl::MutexLock lock(&head_mu_);
      head_cv_.SignalAll();
      for (const auto& listener : listeners_) listener(batch.last_sequence);
    }
  } else {
    status = absl::Status(status.code(),
                          absl::StrCat("event log commit of ", group.size(),
                                       " request(s) failed, nothing stored: ", status.message()));
  }
  pending_.fetch_sub(group.size(), std::memory_order_relaxed);

  for (std::size_t i = 0; i < group.size(); ++i) {
    if (status.ok()) {
      group[i].callback(results[i]);
    } else {
      group[i].callback(status);
    }
  }
}

}  // namespace pimgate

namespace pimgate {

void EventLog::AddAppendListener(std::function<void(uint64_t head)> listener) {
  absl::MutexLock lock(&head_mu_);
  listeners_.push_back(std::move(listener));
}

uint64_t EventLog::WaitForHead(uint64_t after, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  absl::MutexLock lock(&head_mu_);
  while (head_.load(std::memory_order_acquire) <= after) {
    if (head_cv_.WaitWithDeadline(&head_mu_, deadline)) break;  // true: deadline passed
  }
  return head_.load(std::memory_order_acquire);
}

}  // namespace pimgate
