// EventLog: pipelined group commit over a LogBackend. The builder thread makes every sequencing,
// dedup and staleness decision, so those need no locks; the writer thread writes and answers.
// The request queue and the one-group hand-off between the two are the only shared state.
#include "core/log/event_log.h"

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstring>
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
#include "core/log/jetstream_backend.h"
#include "core/log/log_backend.h"
#include "core/log/rocksdb_backend.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/timestamp.pb.h"
#include "google/protobuf/wire_format_lite.h"

namespace pimgate {
namespace {

// Most times a request is decided again because another writer of a shared store appended
// first (LogBackend::Write's Aborted) before it fails with Unavailable. Every refusal means
// another node made progress, so a request that loses this often is under extreme contention.
constexpr int kMaxConflictRebuilds = 16;

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

using google::protobuf::internal::WireFormatLite;

// Sets `id` to `value` unless it already holds as much or more.
void RaiseQuarantineId(std::atomic<uint64_t>& id, uint64_t value) {
  uint64_t current = id.load(std::memory_order_acquire);
  while (current < value && !id.compare_exchange_weak(current, value, std::memory_order_acq_rel)) {
  }
}

}  // namespace

const ResourceVersion* EventLog::VersionCache::Find(const std::string& key) const {
  if (auto it = current_.find(key); it != current_.end()) return &it->second;
  if (auto it = previous_.find(key); it != previous_.end()) return &it->second;
  return nullptr;
}

void EventLog::VersionCache::Put(const std::string& key, const ResourceVersion& version) {
  if (generation_entries_ == 0) return;
  if (current_.size() >= generation_entries_) {
    // The older generation goes: what was looked up or stored since the last rotation stays.
    previous_ = std::move(current_);
    current_.clear();
  }
  current_.insert_or_assign(key, version);
}

// Turns the requests of one group, in queue order, into one CommitBatch. Dedup and staleness
// consult, in this order, what this group has already decided, what the group being written
// decided (the overlay: the backend may not hold it yet), then the backend. Nothing here touches
// EventLog state: the builder moves its counters only once the batch is built.
class EventLog::GroupBuilder {
 public:
  GroupBuilder(LogBackend& backend, const Overlay& previous, VersionCache& stored_versions,
               uint64_t last_sequence, uint64_t last_quarantine_id)
      : backend_(backend), previous_(previous), stored_versions_(stored_versions) {
    batch_.last_sequence = last_sequence;
    batch_.last_quarantine_id = last_quarantine_id;
  }

  // Adds `request` to the batch. An error means a backend lookup failed; the batch is then
  // incomplete and must not be written.
  // `origins` gets, for each event added to the batch, where it came from in `request`.
  absl::StatusOr<AppendResult> Add(Pending& request, std::vector<std::size_t>& origins) {
    AppendResult result;
    for (std::size_t index = 0; index < request.events.size(); ++index) {
      PreparedEvent& event = request.events[index];
      absl::StatusOr<bool> duplicate = IsDuplicate(event);
      if (!duplicate.ok()) return duplicate.status();
      if (*duplicate) {
        ++result.duplicates;
        continue;
      }
      const uint64_t sequence = ++batch_.last_sequence;
      absl::StatusOr<bool> stale = MarkVersion(event, sequence);
      if (!stale.ok()) return stale.status();
      if (*stale) ++result.stale;
      AppendDecidedFields(event.bytes, sequence, *stale);
      if (!event.id.empty()) {
        batch_.dedup.emplace_back(DedupKey{event.source, event.id}, sequence);
      }
      ++result.accepted;
      if (result.first_sequence == 0) result.first_sequence = sequence;
      result.last_sequence = sequence;
      batch_.events.push_back(StoredEvent{sequence, std::move(event.bytes)});
      origins.push_back(index);
    }
    for (const v1::QuarantineEntry& entry : request.quarantine) {  // copied: rare and small
      batch_.quarantine.push_back(entry);
      batch_.quarantine.back().set_id(++batch_.last_quarantine_id);
    }
    return result;
  }

  // Completes the batch with the versions this group raised. Call once, after the last Add.
  // `overlay` gets what the next group must see while this one is being written.
  CommitBatch Finish(Overlay& overlay) {
    overlay.versions.clear();
    for (auto& [map_key, tracked] : versions_) {
      if (!tracked.changed) continue;
      batch_.versions.emplace_back(tracked.key, *tracked.newest);
      overlay.versions.emplace(map_key, *tracked.newest);
    }
    overlay.ids = std::move(seen_ids_);
    return std::move(batch_);
  }

 private:
  struct TrackedVersion {
    ResourceKey key;
    std::optional<ResourceVersion> newest;  // max of the stored and this group's versions
    bool changed = false;                   // this group raised it: write it with the batch
  };

  // The fields only the builder knows, appended to the serialized event: sequence always,
  // stale when true (proto3 leaves false out).
  static void AppendDecidedFields(std::string& bytes, uint64_t sequence, bool stale) {
    uint8_t buf[32];  // tag (2 bytes) + varint64 (10) + tag (2) + bool (1)
    uint8_t* p = buf;
    p = WireFormatLite::WriteUInt64ToArray(v1::Event::kSequenceFieldNumber, sequence, p);
    if (stale) p = WireFormatLite::WriteBoolToArray(v1::Event::kStaleFieldNumber, true, p);
    bytes.append(reinterpret_cast<const char*>(buf), p - buf);
  }

  absl::StatusOr<bool> IsDuplicate(const PreparedEvent& event) {
    // An event without an id cannot be recognised when re-sent; it is always stored.
    if (event.id.empty()) return false;
    std::string key = JoinKey({event.source, event.id});
    if (previous_.ids.contains(key)) return true;  // stored by the group being written
    auto [it, inserted] = seen_ids_.insert(std::move(key));
    if (!inserted) return true;  // twice in this group (same request or an earlier one)
    absl::StatusOr<std::optional<uint64_t>> stored =
        backend_.FindEventId(DedupKey{event.source, event.id});
    if (!stored.ok()) return stored.status();
    // Either way the id is now known to the group: stored before, or stored by this event.
    return stored->has_value();
  }

  // Returns whether `event` is stale, and records its version as the resource's newest if not.
  // Deletions are versions like any other: an update older than a deletion is stale.
  absl::StatusOr<bool> MarkVersion(const PreparedEvent& event, uint64_t sequence) {
    if (event.resource_id.empty()) return false;  // nothing to order against
    if (!event.version_us.has_value()) return false;
    const int64_t version = *event.version_us;

    auto [it, inserted] =
        versions_.try_emplace(JoinKey({event.source, event.kind, event.resource_id}));
    TrackedVersion& tracked = it->second;
    if (inserted) {
      tracked.key = ResourceKey{event.source, event.kind, event.resource_id};
      if (auto in_flight = previous_.versions.find(it->first);
          in_flight != previous_.versions.end()) {
        tracked.newest = in_flight->second;
      } else if (const ResourceVersion* cached = stored_versions_.Find(it->first)) {
        tracked.newest = *cached;
      } else {
        absl::StatusOr<std::optional<ResourceVersion>> stored = backend_.FindVersion(tracked.key);
        if (!stored.ok()) {
          versions_.erase(it);
          return stored.status();
        }
        tracked.newest = *stored;
        if (stored->has_value()) stored_versions_.Put(it->first, **stored);
      }
    }
    // Strictly older is stale. The same version again (a re-sent change under a new id) is not:
    // delivering it cannot overwrite newer state.
    if (tracked.newest.has_value() && version < tracked.newest->version_at_us) return true;
    // A deletion is remembered with the version (see ResourceVersion::deleted).
    tracked.newest = ResourceVersion{version, sequence, event.deletion};
    tracked.changed = true;
    return false;
  }

  LogBackend& backend_;
  const Overlay& previous_;
  VersionCache& stored_versions_;
  CommitBatch batch_;
  std::unordered_set<std::string> seen_ids_;
  std::unordered_map<std::string, TrackedVersion> versions_;
};

absl::StatusOr<std::unique_ptr<EventLog>> EventLog::Open(std::unique_ptr<LogBackend> backend,
                                                         EventLogOptions options) {
  if (backend == nullptr) return absl::InvalidArgumentError("EventLog needs a backend");
  if (options.max_commit_requests == 0) {
    return absl::InvalidArgumentError("max_commit_requests must be at least 1");
  }
  absl::StatusOr<RecoveredState> state = backend->Recover();
  if (!state.ok()) return state.status();
  std::unique_ptr<EventLog> log(new EventLog(std::move(backend), options, *state));
  EventLog* raw = log.get();
  raw->backend_->Follow([raw](uint64_t head, uint64_t last_quarantine_id) {
    raw->Advance(head, last_quarantine_id);
  });
  return log;
}

absl::StatusOr<std::unique_ptr<EventLog>> EventLog::Open(const StoreConfig& store) {
  absl::StatusOr<std::unique_ptr<LogBackend>> backend =
      store.backend == StoreBackend::kJetStream && store.jetstream.has_value()
          ? OpenJetStreamBackend(store.path, *store.jetstream)
          : OpenRocksDbBackend(store.path);
  if (!backend.ok()) {
    return absl::Status(backend.status().code(),
                        absl::StrCat("cannot open the event log at ", store.path, ": ",
                                     backend.status().message()));
  }
  absl::StatusOr<std::unique_ptr<EventLog>> log =
      Open(std::move(*backend), EventLogOptionsFrom(store));
  if (!log.ok()) {
    return absl::Status(
        log.status().code(),
        absl::StrCat("cannot recover the event log at ", store.path, ": ", log.status().message()));
  }
  return log;
}

EventLog::EventLog(std::unique_ptr<LogBackend> backend, EventLogOptions options,
                   RecoveredState state)
    : backend_(std::move(backend)),
      options_(options),
      built_sequence_(state.last_sequence),
      built_quarantine_id_(state.last_quarantine_id),
      stored_versions_(options.version_cache_entries / 2),
      head_(state.last_sequence),
      last_quarantine_id_(state.last_quarantine_id),
      writer_([this] { WriteLoop(); }),
      builder_([this] { BuildLoop(); }) {}

EventLog::~EventLog() {
  backend_->Follow(nullptr);  // no Advance once this returns
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    queue_cv_.Signal();
  }
  // The builder exits only once the queue is empty and its last group is handed over, and the
  // writer only once that group is written, so every accepted Append gets its callback (and, on
  // success, is in the backend) before the backend is destroyed.
  builder_.join();
  writer_.join();
}

absl::StatusOr<EventLog::PreparedEvent> EventLog::Prepare(v1::Event& event,
                                                          const std::string* serialized_data) {
  // The log decides these two; the builder appends them to the bytes.
  event.clear_sequence();
  event.clear_stale();
  PreparedEvent prepared;
  prepared.version_us = VersionOf(event);
  // Canonical deletions are `<kind>.deleted` (legacy `removed` is canonicalised to it).
  prepared.deletion = absl::EndsWith(event.type(), ".deleted");
  if (serialized_data != nullptr && event.has_data()) {
    return absl::InvalidArgumentError(
        absl::StrCat("event ", event.id(), " has both data and serialized data"));
  }
  const std::size_t header_size = event.ByteSizeLong();
  // The serialized data follows the other fields as field `data` (a length-delimited field
  // with a one-byte tag): protobuf reads fields in any order, as it reads the two the builder
  // appends.
  const std::size_t data_size =
      serialized_data == nullptr
          ? 0
          : 1 + google::protobuf::io::CodedOutputStream::VarintSize64(serialized_data->size()) +
                serialized_data->size();
  const std::size_t size = header_size + data_size;
  if (size > static_cast<std::size_t>(INT_MAX)) {
    return absl::InvalidArgumentError(absl::StrCat("event ", event.id(), " is too large"));
  }
  // Room for the fields the builder appends, so that appending them never reallocates.
  prepared.bytes.reserve(size + 16);
  prepared.bytes.resize(size);
  prepared.serialized_size = size;
  auto* out = reinterpret_cast<uint8_t*>(prepared.bytes.data());
  out = event.SerializeWithCachedSizesToArray(out);
  if (serialized_data != nullptr) {
    out = WireFormatLite::WriteTagToArray(v1::Event::kDataFieldNumber,
                                          WireFormatLite::WIRETYPE_LENGTH_DELIMITED, out);
    out =
        google::protobuf::io::CodedOutputStream::WriteVarint64ToArray(serialized_data->size(), out);
    std::memcpy(out, serialized_data->data(), serialized_data->size());
  }
  prepared.source = std::move(*event.mutable_source());
  prepared.id = std::move(*event.mutable_id());
  prepared.kind = std::move(*event.mutable_kind());
  prepared.resource_id = std::move(*event.mutable_resource_id());
  return prepared;
}

void EventLog::Append(AppendRequest request, AppendCallback callback) {
  // Serialized here, on the caller's thread (a gateway I/O thread): the commit threads only
  // move bytes, and the parsed events are freed where they were made.
  if (!request.serialized_data.empty() && request.serialized_data.size() != request.events.size()) {
    callback(absl::InvalidArgumentError(absl::StrCat("append request: serialized data for ",
                                                     request.serialized_data.size(), " of ",
                                                     request.events.size(), " events")));
    return;
  }
  Pending pending;
  pending.events.reserve(request.events.size());
  for (std::size_t i = 0; i < request.events.size(); ++i) {
    v1::Event& event = request.events[i];
    absl::StatusOr<PreparedEvent> prepared =
        Prepare(event, request.serialized_data.empty() ? nullptr : &request.serialized_data[i]);
    if (!prepared.ok()) {
      callback(prepared.status());
      return;
    }
    pending.events.push_back(std::move(*prepared));
  }
  pending.quarantine = std::move(request.quarantine);
  pending.callback = std::move(callback);
  {
    absl::MutexLock lock(&mu_);
    if (!stopping_) {
      // Counted under the lock so the writer can never subtract it before it is added.
      pending_.fetch_add(1, std::memory_order_relaxed);
      queue_.push_back(std::move(pending));
      queue_cv_.Signal();
      return;
    }
  }
  pending.callback(absl::UnavailableError("event log is shutting down"));
}

absl::StatusOr<AppendResult> EventLog::AppendSync(AppendRequest request) {
  // The callback co-owns the promise: the writer may still be inside set_value() when get()
  // returns here, so the promise must not live on this stack frame.
  auto promise = std::make_shared<std::promise<absl::StatusOr<AppendResult>>>();
  std::future<absl::StatusOr<AppendResult>> result = promise->get_future();
  Append(std::move(request),
         [promise](absl::StatusOr<AppendResult> r) { promise->set_value(std::move(r)); });
  return result.get();
}

void EventLog::Fail(std::vector<Pending>& requests, const absl::Status& status) {
  const absl::Status failed(status.code(),
                            absl::StrCat("event log commit of ", requests.size(),
                                         " request(s) failed, nothing stored: ", status.message()));
  pending_.fetch_sub(requests.size(), std::memory_order_relaxed);
  for (Pending& request : requests) request.callback(failed);
}

absl::Status EventLog::Build(std::vector<Pending>& requests, BuiltGroup& group) {
  if (const uint64_t advances = foreign_advances_.load(std::memory_order_acquire);
      advances != seen_foreign_advances_) {
    // Other writers' records were applied since: their versions may be newer than the cached
    // ones. (Their sequences need nothing here: a batch numbered on an older head is refused
    // with Aborted and decided again.)
    stored_versions_.Clear();
    seen_foreign_advances_ = advances;
  }
  GroupBuilder builder(*backend_, overlay_, stored_versions_, built_sequence_,
                       built_quarantine_id_);
  group.results.reserve(requests.size());
  group.origins.resize(requests.size());
  for (std::size_t i = 0; i < requests.size(); ++i) {
    absl::StatusOr<AppendResult> result = builder.Add(requests[i], group.origins[i]);
    if (!result.ok()) {
      group.requests = std::move(requests);
      return result.status();
    }
    group.results.push_back(*result);
  }
  group.requests = std::move(requests);
  group.batch = builder.Finish(group.overlay);
  group.has_writes = !group.batch.events.empty() || !group.batch.quarantine.empty();
  return absl::OkStatus();
}

std::vector<EventLog::Pending> EventLog::Unbuild(BuiltGroup& group) {
  std::size_t stored = 0;
  for (std::size_t i = 0; i < group.requests.size(); ++i) {
    for (std::size_t index : group.origins[i]) {
      PreparedEvent& event = group.requests[i].events[index];
      event.bytes = std::move(group.batch.events[stored++].bytes);
      event.bytes.resize(event.serialized_size);  // drops the fields the builder appended
    }
  }
  return std::move(group.requests);
}

void EventLog::ResetToStored(const absl::Status& status) {
  built_sequence_ = head_.load(std::memory_order_acquire);
  built_quarantine_id_ = last_quarantine_id_.load(std::memory_order_acquire);
  overlay_ = Overlay();
  if (absl::IsAborted(status)) stored_versions_.Clear();
}

void EventLog::Requeue(BuiltGroup& group, const absl::Status& status) {
  // The backend caught up with the batches other writers stored first: they are part of the
  // log now (their events are readable), so the head moves past them.
  absl::StatusOr<RecoveredState> state = backend_->Resync();
  if (state.ok()) {
    last_quarantine_id_.store(
        std::max(state->last_quarantine_id, last_quarantine_id_.load(std::memory_order_acquire)),
        std::memory_order_release);
    RaiseHead(state->last_sequence);
  }
  std::vector<Pending> requests = Unbuild(group);
  std::vector<Pending> failed;
  std::vector<Pending> again;
  for (Pending& request : requests) {
    if (!state.ok() || ++request.rebuilds > kMaxConflictRebuilds) {
      failed.push_back(std::move(request));
    } else {
      again.push_back(std::move(request));
    }
  }
  if (!failed.empty()) {
    Fail(failed, state.ok() ? absl::UnavailableError(absl::StrCat(
                                  "other writers of the shared log appended first ",
                                  kMaxConflictRebuilds + 1, " times (", status.message(), ")"))
                            : state.status());
  }
  if (again.empty()) return;
  absl::MutexLock lock(&mu_);
  for (auto it = again.rbegin(); it != again.rend(); ++it) queue_.push_front(std::move(*it));
  queue_cv_.Signal();
}

void EventLog::BuildLoop() {
  for (;;) {
    std::vector<Pending> requests;
    bool drained = false;  // stopping, and everything queued has been handed over
    {
      absl::MutexLock lock(&mu_);
      while (queue_.empty() && !stopping_) queue_cv_.Wait(&mu_);
      if (queue_.empty()) {
        drained = true;
      } else {
        const std::size_t n = std::min(queue_.size(), options_.max_commit_requests);
        requests.reserve(n);
        for (std::size_t i = 0; i < n; ++i) {
          requests.push_back(std::move(queue_.front()));
          queue_.pop_front();
        }
      }
    }
    if (drained) {
      // The last group may still come back (a conflict on a shared store requeues it): stop
      // only once the writer is done and nothing came back.
      if (absl::Status last = WaitForWriter(); !last.ok()) ResetToStored(last);
      absl::MutexLock lock(&mu_);
      if (queue_.empty()) break;
      continue;
    }
    for (;;) {
      BuiltGroup group;
      if (absl::Status status = Build(requests, group); !status.ok()) {
        // A lookup failed: nothing of this group is written. Once the group ahead of it is
        // written (or not), start again from what the backend holds.
        const absl::Status previous = WaitForWriter();
        Fail(group.requests, status);
        ResetToStored(previous);
        break;
      }
      const absl::Status previous = HandToWriter(group);
      if (previous.ok()) break;
      // The group ahead of this one failed: this one was built on sequences, ids and versions
      // that were never stored. Build it again on what the backend holds (the writer is idle
      // now, so the next hand-off does not wait).
      requests = Unbuild(group);
      ResetToStored(previous);
    }
  }
  absl::MutexLock lock(&writer_mu_);
  builder_done_ = true;
  writer_cv_.Signal();
}

absl::Status EventLog::WaitForWriter() {
  absl::MutexLock lock(&writer_mu_);
  while (handed_.has_value() || writing_) writer_cv_.Wait(&writer_mu_);
  return std::exchange(last_write_, absl::OkStatus());
}

absl::Status EventLog::HandToWriter(BuiltGroup& group) {
  // The group handed last is the one this group was built on.
  if (absl::Status previous = WaitForWriter(); !previous.ok()) return previous;
  // That group is stored: its versions are stored versions now, and the next group is built on
  // this one.
  for (const auto& [key, version] : overlay_.versions) stored_versions_.Put(key, version);
  built_sequence_ = group.batch.last_sequence;
  built_quarantine_id_ = group.batch.last_quarantine_id;
  overlay_ = std::move(group.overlay);
  absl::MutexLock lock(&writer_mu_);
  handed_ = std::move(group);
  writer_cv_.Signal();
  return absl::OkStatus();
}

void EventLog::WriteLoop() {
  for (;;) {
    BuiltGroup group;
    {
      absl::MutexLock lock(&writer_mu_);
      while (!handed_.has_value() && !builder_done_) writer_cv_.Wait(&writer_mu_);
      if (!handed_.has_value()) return;  // the builder is done and everything is written
      group = std::move(*handed_);
      handed_.reset();
      writing_ = true;
    }

    absl::Status status;
    if (group.has_writes) {
      // Durability point: with options_.sync the whole group is fsynced when this returns OK.
      // A group of duplicates and empty requests needs no Write (the originals were made
      // durable by an earlier, acknowledged Write).
      status = backend_->Write(group.batch, options_.sync);
    }
    if (status.ok()) {
      // Raised, never lowered: the backend's follower may have moved them past this group
      // already (records other writers appended right after it).
      RaiseQuarantineId(last_quarantine_id_, group.batch.last_quarantine_id);
      if (group.has_writes) RaiseHead(group.batch.last_sequence);
      pending_.fetch_sub(group.requests.size(), std::memory_order_relaxed);
      for (std::size_t i = 0; i < group.requests.size(); ++i) {
        group.requests[i].callback(group.results[i]);
      }
    } else if (absl::IsAborted(status)) {
      // Another writer of a shared store appended first: decide these requests again.
      Requeue(group, status);
    } else {
      Fail(group.requests, status);
    }
    absl::MutexLock lock(&writer_mu_);
    writing_ = false;
    last_write_ = status;
    writer_cv_.Signal();
  }
}

}  // namespace pimgate

namespace pimgate {

bool EventLog::RaiseHead(uint64_t head) {
  absl::MutexLock lock(&head_mu_);
  if (head <= head_.load(std::memory_order_acquire)) return false;
  head_.store(head, std::memory_order_release);
  head_cv_.SignalAll();
  for (const auto& listener : listeners_) listener(head);
  return true;
}

void EventLog::Advance(uint64_t head, uint64_t last_quarantine_id) {
  foreign_advances_.fetch_add(1, std::memory_order_acq_rel);
  RaiseQuarantineId(last_quarantine_id_, last_quarantine_id);
  RaiseHead(head);
}

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

// The reads, metadata and dispatch records forward to the backend, whose reads are thread-safe
// and concurrent with its one writer (LogBackend's contract).

absl::StatusOr<std::optional<v1::Event>> EventLog::GetEvent(uint64_t sequence) const {
  return backend_->GetEvent(sequence);
}

absl::StatusOr<std::vector<v1::Event>> EventLog::ReadEvents(uint64_t from, std::size_t max) const {
  return backend_->ReadEvents(from, max);
}

absl::StatusOr<std::vector<StoredEvent>> EventLog::ReadStoredEvents(uint64_t from,
                                                                    std::size_t max) const {
  return backend_->ReadStoredEvents(from, max);
}

absl::StatusOr<std::optional<v1::Event>> EventLog::OldestEvent() const {
  // Sequences start at 1; the first stored one at or after it is the oldest.
  absl::StatusOr<std::vector<v1::Event>> oldest = backend_->ReadEvents(1, 1);
  if (!oldest.ok()) return oldest.status();
  if (oldest->empty()) return std::nullopt;
  return std::move(oldest->front());
}

absl::StatusOr<std::optional<uint64_t>> EventLog::FindEventId(const std::string& source,
                                                              const std::string& event_id) const {
  return backend_->FindEventId(DedupKey{source, event_id});
}

absl::StatusOr<std::optional<ResourceVersion>> EventLog::FindVersion(const ResourceKey& key) const {
  return backend_->FindVersion(key);
}

absl::StatusOr<std::vector<ResourceVersionEntry>> EventLog::ListVersions(
    const std::string& source, const std::string& kind, const std::string& after_resource_id,
    std::size_t max) const {
  return backend_->ListVersions(source, kind, after_resource_id, max);
}

absl::StatusOr<std::vector<v1::QuarantineEntry>> EventLog::ReadQuarantine(uint64_t from,
                                                                          std::size_t max) const {
  return backend_->ReadQuarantine(from, max);
}

uint64_t EventLog::DiskBytes() const { return backend_->DiskBytes(); }

absl::Status EventLog::Health() const { return backend_->Health(); }

absl::StatusOr<std::optional<std::string>> EventLog::GetMeta(const std::string& key) const {
  return backend_->GetMeta(key);
}

absl::StatusOr<std::optional<std::string>> EventLog::GetAppliedMeta(const std::string& key) const {
  return backend_->GetAppliedMeta(key);
}

absl::Status EventLog::PutMeta(const std::string& key, const std::string& value) {
  return backend_->PutMeta(key, value);
}

absl::StatusOr<uint64_t> EventLog::LoadCursor(const std::string& plugin) const {
  return backend_->LoadCursor(plugin);
}

absl::Status EventLog::WriteProgress(const std::string& plugin, const PluginProgress& progress) {
  return backend_->WriteProgress(plugin, progress);
}

absl::StatusOr<uint64_t> EventLog::LoadHandedOut(const std::string& plugin) const {
  return backend_->LoadHandedOut(plugin);
}

absl::Status EventLog::WriteHandedOut(const std::string& plugin, uint64_t mark) {
  return backend_->WriteHandedOut(plugin, mark);
}

absl::StatusOr<std::vector<v1::DeadLetter>> EventLog::ReadDeadLetters(const std::string& plugin,
                                                                      uint64_t from,
                                                                      std::size_t max) const {
  return backend_->ReadDeadLetters(plugin, from, max);
}

absl::Status EventLog::DeleteDeadLetters(const std::string& plugin,
                                         const std::vector<uint64_t>& sequences) {
  return backend_->DeleteDeadLetters(plugin, sequences);
}

absl::StatusOr<uint64_t> EventLog::CountDeadLetters(const std::string& plugin) const {
  return backend_->CountDeadLetters(plugin);
}

}  // namespace pimgate
