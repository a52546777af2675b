// EventLog: pimgate's append-only event log. Assigns sequences, deduplicates by (source, event
// id), marks stale versions per resource, and writes each request atomically through a group
// commit over a LogBackend.
#ifndef PIMGATE_CORE_LOG_EVENT_LOG_H_
#define PIMGATE_CORE_LOG_EVENT_LOG_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "config/config.h"
#include "core/log/log_records.h"
#include "pimgate/v1/event.pb.h"
#include "pimgate/v1/store.pb.h"

namespace pimgate {

class LogBackend;     // core/log/log_backend.h: what stores the log, private to core/log
class RetentionTask;  // core/log/retention.h

// The events of one webhook request, parsed but not yet stored. `sequence` and `stale` of the
// events are ignored on input and set by the log.
struct AppendRequest {
  std::vector<v1::Event> events;
  // Empty, or one per event: that event's `data`, already serialized (the wire bytes of a
  // google.protobuf.Struct), stored as its `data` field; the event's own `data` must then be
  // unset. Lets a caller that has the data as JSON store it without building a Struct
  // (gateway/payload_parser.h). The log stores these bytes unchecked: they must parse as a
  // Struct.
  std::vector<std::string> serialized_data;
  std::vector<v1::QuarantineEntry> quarantine;
};

struct AppendResult {
  uint32_t accepted = 0;        // newly stored (stale ones included)
  uint32_t duplicates = 0;      // already in the log (or twice in this request), not stored again
  uint32_t stale = 0;           // stored with stale = true
  uint64_t first_sequence = 0;  // 0 when nothing was stored
  uint64_t last_sequence = 0;
};

struct EventLogOptions {
  // true: a callback's OK means the request is fsynced (survives power loss). false: it is in
  // the OS page cache (survives a process crash only).
  bool sync = true;
  // Most requests one group commit (one backend Write, one fsync) takes from the queue. >= 1.
  std::size_t max_commit_requests = 256;
  // Advisory queue limit: EventLog never refuses an Append; callers compare pending() with it.
  std::size_t max_pending_requests = 4096;
  // Newest stored versions of recently changed resources kept in memory, so that staleness
  // checks of popular products skip the backend (about 100 bytes each; 0: no cache).
  std::size_t version_cache_entries = 100'000;
};

// The log's options as `store:` configures them.
inline EventLogOptions EventLogOptionsFrom(const StoreConfig& store) {
  EventLogOptions options;
  options.sync = store.sync;
  options.max_commit_requests = store.max_commit_requests;
  options.max_pending_requests = store.max_pending_requests;
  return options;
}

// Thread-safe. Append may be called from any thread; callbacks run on the log's writer thread
// and must not block (post to your own executor).
//
// Two threads commit: the builder takes queued requests in groups and makes every sequencing,
// dedup and staleness decision (so those need no locks); the writer writes each group with one
// backend Write (one fsync) and answers its requests. The builder prepares the next group while
// the writer waits for the disk, so a group's CPU work and the previous group's fsync overlap.
class EventLog {
 public:
  using AppendCallback = std::function<void(absl::StatusOr<AppendResult>)>;

  // Takes ownership of `backend`, recovers its state and starts the builder and writer threads.
  // For tools and tests that choose (or wrap, for fault injection) a backend themselves.
  static absl::StatusOr<std::unique_ptr<EventLog>> Open(std::unique_ptr<LogBackend> backend,
                                                        EventLogOptions options);
  // Opens the log `store:` configures, with EventLogOptionsFrom(store): store.backend rocksdb,
  // the RocksDB store at store.path (created when missing), recovered; jetstream, the stream on
  // the store.jetstream cluster with this node's replica at store.path (design/jetstream.md).
  // The one place that picks pimgate's backend, so its callers never name one. Errors name the
  // path (or the cluster) and say whether opening or recovering the store failed.
  static absl::StatusOr<std::unique_ptr<EventLog>> Open(const StoreConfig& store);
  ~EventLog();  // drains pending appends, then stops

  EventLog(const EventLog&) = delete;
  EventLog& operator=(const EventLog&) = delete;

  // Queues `request` for the next group commit. `callback` gets the result once the whole
  // request is in the log (fsynced when options.sync) or an error when nothing of it was
  // written. The request is all-or-nothing: a failed commit stores none of its events.
  // Requests that share a group commit share its fate: one failed Write fails all of them, and
  // the group built on top of it while it was being written.
  // An Append racing with the destructor may be refused with Unavailable, on the caller's thread.
  void Append(AppendRequest request, AppendCallback callback);

  // Blocking convenience for tools and tests: Append, then wait for the callback. Must not be
  // called from an AppendCallback (it would wait for the writer thread it runs on).
  absl::StatusOr<AppendResult> AppendSync(AppendRequest request);

  // Requests queued and not yet committed (for backpressure decisions).
  std::size_t pending() const { return pending_.load(std::memory_order_relaxed); }
  std::size_t max_pending() const { return options_.max_pending_requests; }
  // Highest sequence stored so far (0 when empty).
  uint64_t head() const { return head_.load(std::memory_order_acquire); }

  // Blocks until head() > `after` or `timeout` passes, and returns head(). Readers of the log
  // (the dispatcher) use it to wait for new events without polling.
  uint64_t WaitForHead(uint64_t after, absl::Duration timeout);

  // Registers `listener`, called on the writer thread with the new head after every commit
  // that stored events. It must be quick and must not call back into the log (set a flag,
  // signal a condition variable). Thread-safe.
  void AddAppendListener(std::function<void(uint64_t head)> listener);

  // ---- Reads ----------------------------------------------------------------------------------
  // Thread-safe, and concurrent with appends and with each other. A read sees every event whose
  // Append callback has run; it may also see events of the group commit being written at that
  // moment (sequence > head()), which readers that must not run ahead of head() skip. Retention
  // removes old events, so sequences below the oldest one, and holes, read as absent.

  // The event with this sequence, nullopt when none is stored (never was, or trimmed).
  absl::StatusOr<std::optional<v1::Event>> GetEvent(uint64_t sequence) const;
  // Up to `max` stored events with sequence >= `from`, in sequence order (holes skipped).
  absl::StatusOr<std::vector<v1::Event>> ReadEvents(uint64_t from, std::size_t max) const;
  // The same events serialized, as stored, without decoding them (the dispatcher forwards them
  // as they are; cheaper than ReadEvents by the decoding of every event's data).
  absl::StatusOr<std::vector<StoredEvent>> ReadStoredEvents(uint64_t from, std::size_t max) const;
  // The oldest event still in the log, nullopt when it is empty.
  absl::StatusOr<std::optional<v1::Event>> OldestEvent() const;
  // The sequence of the stored event with this (source, event id), if any: an event id is known
  // exactly as long as its event is in the log (retention removes both together).
  absl::StatusOr<std::optional<uint64_t>> FindEventId(const std::string& source,
                                                      const std::string& event_id) const;
  // The newest version the log has stored for a resource, if any. Versions outlive the events
  // that set them (retention keeps them), so staleness and reconciliation still see them.
  absl::StatusOr<std::optional<ResourceVersion>> FindVersion(const ResourceKey& key) const;
  // Up to `max` resources of (source, kind) whose resource_id sorts after `after_resource_id`
  // (bytewise; "" = from the first), in that order, with their newest version: pages through
  // every resource the log has a version for (reconciliation's deletion check).
  absl::StatusOr<std::vector<ResourceVersionEntry>> ListVersions(
      const std::string& source, const std::string& kind, const std::string& after_resource_id,
      std::size_t max) const;
  // Up to `max` quarantine entries with id >= `from`, in id order.
  absl::StatusOr<std::vector<v1::QuarantineEntry>> ReadQuarantine(uint64_t from,
                                                                  std::size_t max) const;
  // Bytes the store occupies on disk (best effort: the backend's own estimate).
  uint64_t DiskBytes() const;
  // OK while the store can serve; otherwise why not, for /readyz ("event log: JetStream
  // connection lost"). The embedded store is always ready.
  absl::Status Health() const;

  // ---- Metadata -------------------------------------------------------------------------------
  // Small named values kept beside the log (reconciliation watermarks and run counters, paused
  // plugins, Event Platform subscription states). Keys are namespaced by their owner
  // ("reconcile/<source>/watermark"); values are opaque bytes. Thread-safe.

  // The value stored under `key`, nullopt when none is.
  absl::StatusOr<std::optional<std::string>> GetMeta(const std::string& key) const;
  // The value as this node has applied the log so far (LogBackend::GetAppliedMeta): on a shared
  // log possibly a moment old, but answered without the cluster.
  absl::StatusOr<std::optional<std::string>> GetAppliedMeta(const std::string& key) const;
  // Stores `value` under `key`, replacing any previous value. Durability: returns OK once the
  // value is fsynced, and with it everything the log acknowledged before (one write-ahead log),
  // so a value that describes stored events (a watermark) never survives a crash that lost
  // those events. Blocks for that fsync: not for I/O threads.
  absl::Status PutMeta(const std::string& key, const std::string& value);

  // ---- Dispatch records -----------------------------------------------------------------------
  // Plugin cursors and dead letters. They belong to the dispatch module (core/dispatch): the
  // dispatcher and its DeadLetters (core/dispatch/dead_letters.h) are their only writers and
  // readers; everything else goes through those (retention reads cursors through
  // PluginsMinCursor). Thread-safe, and concurrent with appends. A progress write need
  // not be fsynced: losing one only means redelivery (at-least-once), never loss.

  // The plugin's persisted cursor (every event <= it is done for the plugin); 0 when none yet.
  absl::StatusOr<uint64_t> LoadCursor(const std::string& plugin) const;
  // Writes the plugin's new cursor (when set) and the dead letters that became final, in one
  // atomic write: a crash keeps both or neither, so a cursor never moves past an event whose
  // letter was lost. A letter replaces any stored one for the same sequence.
  absl::Status WriteProgress(const std::string& plugin, const PluginProgress& progress);
  // The plugin's handed-out mark (LogBackend::LoadHandedOut): no event past it was ever sent
  // under this cursor key; 0 when none was. Written before the dispatcher sends past it, not
  // fsynced (survives a process crash, like a cursor).
  absl::StatusOr<uint64_t> LoadHandedOut(const std::string& plugin) const;
  absl::Status WriteHandedOut(const std::string& plugin, uint64_t mark);
  // Up to `max` dead letters of `plugin` with event sequence >= `from`, in sequence order.
  absl::StatusOr<std::vector<v1::DeadLetter>> ReadDeadLetters(const std::string& plugin,
                                                              uint64_t from, std::size_t max) const;
  // Deletes the plugin's dead letters of these event sequences (absent ones are ignored), in one
  // atomic write. Not fsynced either: a deletion lost in a crash brings a letter back, never
  // loses one.
  absl::Status DeleteDeadLetters(const std::string& plugin, const std::vector<uint64_t>& sequences);
  // How many dead letters `plugin` has stored now.
  absl::StatusOr<uint64_t> CountDeadLetters(const std::string& plugin) const;

 private:
  // Trims the backend (LogBackend::Trim*): the one part of core/log that needs more than the
  // API above.
  friend class RetentionTask;

  // An event as the builder needs it: what dedup and staleness look at, and the event
  // serialized (sequence and stale unset) on the thread that appended it. The builder only
  // appends the two fields it decides to the bytes (protobuf reads fields in any order).
  struct PreparedEvent {
    std::string source;
    std::string id;
    std::string kind;
    std::string resource_id;
    std::optional<int64_t> version_us;  // version_at, else occurred_at; none: not ordered
    bool deletion = false;              // canonical type `<kind>.deleted`
    std::string bytes;
    std::size_t serialized_size = 0;  // of bytes before the builder appends to them
  };
  struct Pending {
    std::vector<PreparedEvent> events;
    std::vector<v1::QuarantineEntry> quarantine;
    AppendCallback callback;
    // Times the request was decided again because another writer of a shared store appended
    // first (LogBackend::Write's Aborted); bounded by kMaxConflictRebuilds.
    int rebuilds = 0;
  };
  // What a group built for writing leaves for the next group to see while it is being written:
  // the ids it stores and the versions it raised (keys as GroupBuilder joins them).
  struct Overlay {
    std::unordered_set<std::string> ids;
    std::unordered_map<std::string, ResourceVersion> versions;
  };
  // Builder-thread cache of stored versions (keys as GroupBuilder joins them): two generations of
  // at most `generation_entries` each, the older dropped when the newer fills (cheap, roughly
  // least-recently-used). Holds only versions the backend has: looked up there, or written by
  // a group whose Write succeeded. EventLog is the only writer of versions, so it never goes
  // stale.
  class VersionCache {
   public:
    explicit VersionCache(std::size_t generation_entries)
        : generation_entries_(generation_entries) {}
    const ResourceVersion* Find(const std::string& key) const;
    void Put(const std::string& key, const ResourceVersion& version);
    void Clear() {
      current_.clear();
      previous_.clear();
    }

   private:
    const std::size_t generation_entries_;
    std::unordered_map<std::string, ResourceVersion> current_, previous_;
  };
  // A group of requests turned into one CommitBatch, on its way from the builder to the writer.
  struct BuiltGroup {
    std::vector<Pending> requests;
    std::vector<AppendResult> results;  // one per request
    // Per request, the index of each of its events in batch.events order (duplicates are not
    // in the batch): what Unbuild needs to give the events back.
    std::vector<std::vector<std::size_t>> origins;
    CommitBatch batch;
    Overlay overlay;  // what the next group must see while this one is being written
    bool has_writes = false;
  };
  class GroupBuilder;  // event_log.cc

  EventLog(std::unique_ptr<LogBackend> backend, EventLogOptions options, RecoveredState state);
  // `serialized_data`: the event's data, serialized (AppendRequest::serialized_data), or null.
  static absl::StatusOr<PreparedEvent> Prepare(v1::Event& event,
                                               const std::string* serialized_data);
  void BuildLoop();
  void WriteLoop();
  // Builds `requests` (moved into `group`) on top of the group handed to the writer last. An
  // error is a failed backend lookup.
  absl::Status Build(std::vector<Pending>& requests, BuiltGroup& group);
  // Takes a built group apart again: its requests, as they were before Build.
  static std::vector<Pending> Unbuild(BuiltGroup& group);
  // Builds the next group on what the backend holds (after a failure). After a conflict
  // (`status` Aborted: the backend caught up with other writers' batches) the cached versions
  // are dropped too: other writers may have raised them.
  void ResetToStored(const absl::Status& status);
  // The writer's answer to Aborted: gives the group's requests back to the builder (front of
  // the queue) to be decided again on the caught-up state, or fails those decided too often.
  void Requeue(BuiltGroup& group, const absl::Status& status);
  // Hands `group` to the writer once it is free, and builds the next group on it. Returns the
  // failure of the group before it instead (and leaves `group` untouched): `group` was built on
  // state that was never stored.
  absl::Status HandToWriter(BuiltGroup& group);
  // Waits until the writer holds no group; returns the status of the last group it finished
  // since the previous call (OK when none failed).
  absl::Status WaitForWriter();
  void Fail(std::vector<Pending>& requests, const absl::Status& status);
  // The backend applied records other writers of a shared store appended (LogBackend::Follow):
  // the head moves past them and readers are woken. Any thread.
  void Advance(uint64_t head, uint64_t last_quarantine_id);
  // Moves head_ to `head` unless it is already there or beyond, and wakes readers and listeners
  // when it moved. Returns whether it moved.
  bool RaiseHead(uint64_t head);

  std::unique_ptr<LogBackend> backend_;
  const EventLogOptions options_;

  absl::Mutex mu_;
  absl::CondVar queue_cv_;  // signalled on a new request and on stop
  std::deque<Pending> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<std::size_t> pending_{0};

  // Builder-thread state: the next group is built on top of the group being written (its
  // sequences, ids and versions), so building overlaps the previous group's write and fsync.
  uint64_t built_sequence_ = 0;
  uint64_t built_quarantine_id_ = 0;
  Overlay overlay_;  // of the group handed to the writer last
  VersionCache stored_versions_;
  // How often the backend applied other writers' records (Advance); the builder drops its
  // cached versions when this changed since it last looked: another node may have raised them.
  std::atomic<uint64_t> foreign_advances_{0};
  uint64_t seen_foreign_advances_ = 0;  // builder thread

  // The hand-off between builder and writer: at most one group waits or is being written.
  absl::Mutex writer_mu_;
  absl::CondVar writer_cv_;
  std::optional<BuiltGroup> handed_ ABSL_GUARDED_BY(writer_mu_);
  bool writing_ ABSL_GUARDED_BY(writer_mu_) = false;
  absl::Status last_write_ ABSL_GUARDED_BY(writer_mu_);  // see WaitForWriter
  bool builder_done_ ABSL_GUARDED_BY(writer_mu_) = false;

  // Written only by the writer, and only after a successful backend Write.
  std::atomic<uint64_t> head_{0};
  // The last quarantine id stored. Like head_, it only moves after a successful Write, so a
  // failed group leaves no gap.
  std::atomic<uint64_t> last_quarantine_id_{0};
  absl::Mutex head_mu_;
  absl::CondVar head_cv_;  // signalled after head_ advances
  std::vector<std::function<void(uint64_t)>> listeners_ ABSL_GUARDED_BY(head_mu_);
  // Last members: they start after everything they read is initialised.
  std::thread writer_;
  std::thread builder_;
};

}  // namespace pimgate

#endif  // PIMGATE_CORE_LOG_EVENT_LOG_H_
