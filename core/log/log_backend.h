// The narrow storage interface under pimgate's event log. RocksDB implements it today; a
// distributed backend (NATS JetStream) can implement it later. Dedup, staleness and sequencing
// live in EventLog, above this line, and never see a backend's own types. Private to core/log:
// the rest of pimgate goes through EventLog (core/log/event_log.h); only the code that opens a
// store (app/, bench/ tools, tests) names a backend.
#ifndef PIMGATE_CORE_LOG_LOG_BACKEND_H_
#define PIMGATE_CORE_LOG_LOG_BACKEND_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/log/log_records.h"
#include "pimgate/v1/event.pb.h"
#include "pimgate/v1/store.pb.h"

namespace pimgate {

// Storage for the event log. Thread-safety: Write() is called by one thread at a time (the
// EventLog's committer); reads and lookups may run concurrently with it and with each other.
class LogBackend {
 public:
  virtual ~LogBackend() = default;

  virtual absl::StatusOr<RecoveredState> Recover() = 0;
  // The state after the backend caught up with writes of other writers (a shared store: see
  // Write's Aborted). A backend with one writer has nothing to catch up with: its state is what
  // Recover reads.
  virtual absl::StatusOr<RecoveredState> Resync() { return Recover(); }

  // Durability contract: when Write returns OK with `sync` true, the batch is on stable storage
  // (fsynced) and survives a process or machine crash. With `sync` false it survives a process
  // crash (it is in the OS page cache) but not a power loss. A replicated backend may promise
  // its own durability instead of `sync` (JetStream: committed by a quorum of servers).
  //
  // Aborted (shared stores only): another writer stored a batch first, so this one was decided
  // on an older state; nothing of it was stored, the backend has caught up (Resync gives the new
  // state), and the log decides the same requests again on that state.
  virtual absl::Status Write(const CommitBatch& batch, bool sync) = 0;

  // A shared store (other writers append too) calls `on_advance` with its new head and last
  // quarantine id after it applied records other writers appended, as they arrive, from a
  // thread of its own; the EventLog then moves its head (its readers, the dispatcher, see those
  // events). Follow(nullptr) stops the calls and returns once none is running. A store with one
  // writer has nothing to follow and never calls it.
  virtual void Follow(std::function<void(uint64_t head, uint64_t last_quarantine_id)> on_advance) {
    (void)on_advance;
  }

  // OK while the backend can serve; otherwise why not ("JetStream connection lost"), for
  // /readyz. A local store is always ready: its failures show in the calls themselves.
  virtual absl::Status Health() { return absl::OkStatus(); }

  // Sequence of a stored event with this (source, id), if any.
  virtual absl::StatusOr<std::optional<uint64_t>> FindEventId(const DedupKey& key) = 0;
  virtual absl::StatusOr<std::optional<ResourceVersion>> FindVersion(const ResourceKey& key) = 0;
  // Up to `max` resources of (source, kind) whose resource_id sorts after `after_resource_id`
  // (bytewise; "" = from the first), in that order, with their newest version. Pages through
  // every resource the log has a version for (reconciliation's deletion check).
  virtual absl::StatusOr<std::vector<ResourceVersionEntry>> ListVersions(
      const std::string& source, const std::string& kind, const std::string& after_resource_id,
      std::size_t max) = 0;

  // Small named values kept beside the log (reconciliation watermarks, run counters). Keys are
  // namespaced by their owner ("reconcile/<source>/watermark"); values are opaque bytes.
  // Durability contract: PutMeta returns OK once the value is fsynced, and with it everything the
  // log acknowledged before (RocksDB: one write-ahead log), so a value that describes stored
  // events never survives a crash that lost those events.
  virtual absl::StatusOr<std::optional<std::string>> GetMeta(const std::string& key) = 0;
  virtual absl::Status PutMeta(const std::string& key, const std::string& value) = 0;
  // The value under `key` as this node has applied the log so far, asking no one: on a shared
  // log (JetStream) the local replica's, which follows the other nodes' records as they arrive
  // (Follow), so it can be a moment old; it answers while the cluster elects a leader, when
  // GetMeta (which catches up first) waits for its timeout. For readers that look again soon
  // (cluster dispatch's controls). Default: GetMeta.
  virtual absl::StatusOr<std::optional<std::string>> GetAppliedMeta(const std::string& key) {
    return GetMeta(key);
  }

  virtual absl::StatusOr<std::optional<v1::Event>> GetEvent(uint64_t sequence) = 0;
  // Up to `max` events with sequence >= `from`, in sequence order.
  virtual absl::StatusOr<std::vector<v1::Event>> ReadEvents(uint64_t from, std::size_t max) = 0;
  // The same events, serialized and not decoded (the dispatcher forwards them as they are). This
  // default serializes what ReadEvents returns; a backend that stores serialized events returns
  // them directly and spares the decoding of every event's data.
  virtual absl::StatusOr<std::vector<StoredEvent>> ReadStoredEvents(uint64_t from,
                                                                    std::size_t max) {
    absl::StatusOr<std::vector<v1::Event>> events = ReadEvents(from, max);
    if (!events.ok()) return events.status();
    std::vector<StoredEvent> stored;
    stored.reserve(events->size());
    for (const v1::Event& event : *events) {
      stored.push_back(StoredEvent{event.sequence(), event.SerializeAsString()});
    }
    return stored;
  }
  virtual absl::StatusOr<std::vector<v1::QuarantineEntry>> ReadQuarantine(uint64_t from,
                                                                          std::size_t max) = 0;
  // Bytes the backend occupies on disk (best effort).
  virtual uint64_t DiskBytes() = 0;

  // Dispatch cursors and dead letters. A cursor write need not be fsynced: losing it only means
  // redelivery (at-least-once), never loss; dead letters travel in the same atomic write as the
  // cursor that moves past them.
  virtual absl::StatusOr<uint64_t> LoadCursor(const std::string& plugin) = 0;  // 0: none yet
  virtual absl::Status WriteProgress(const std::string& plugin, const PluginProgress& progress) = 0;
  // The handed-out mark of a cursor key (the dispatcher's: a plugin, or "<plugin>.p<N>of<P>"):
  // no event past it was ever sent to the plugin under that key (0: none yet). The dispatcher
  // writes it before it sends an event past it, reserving ahead, so after a restart or a
  // takeover the events in (cursor, mark] may have reached the plugin and go with attempt >= 2.
  // Durability: as a cursor write (not fsynced: it survives a process crash; see each backend),
  // but the write must have been stored when it returns OK (a replicated store: committed).
  virtual absl::StatusOr<uint64_t> LoadHandedOut(const std::string& plugin) = 0;
  virtual absl::Status WriteHandedOut(const std::string& plugin, uint64_t mark) = 0;
  // Up to `max` dead letters of `plugin` with event sequence >= `from`, in sequence order.
  virtual absl::StatusOr<std::vector<v1::DeadLetter>> ReadDeadLetters(const std::string& plugin,
                                                                      uint64_t from,
                                                                      std::size_t max) = 0;
  virtual absl::Status DeleteDeadLetters(const std::string& plugin,
                                         const std::vector<uint64_t>& sequences) = 0;
  // How many dead letters `plugin` has now. This default reads them page by page; a backend that
  // can count keys without reading the letters overrides it.
  virtual absl::StatusOr<uint64_t> CountDeadLetters(const std::string& plugin) {
    constexpr std::size_t kPage = 1000;
    uint64_t count = 0;
    uint64_t from = 0;
    for (;;) {
      absl::StatusOr<std::vector<v1::DeadLetter>> page = ReadDeadLetters(plugin, from, kPage);
      if (!page.ok()) return page.status();
      count += page->size();
      if (page->size() < kPage) return count;
      from = page->back().event().sequence() + 1;
    }
  }

  // Retention (see core/log/retention.h). Each call is one atomic write that returns how many
  // records it removed; a call that removes `max` may have left more. Deletions are not fsynced:
  // one lost in a crash is simply redone by the next pass. Called by one thread at a time.
  //
  // Deletes events from the oldest forward, stopping at the first one whose sequence is above
  // `max_sequence` or whose received_at is not before `received_before_us` (an event without
  // received_at counts as received at the epoch), after at most `max_events`. The dedup entry of
  // every removed event goes in the same write, so an event id is recognised as a duplicate
  // exactly as long as its event is in the log. Resource versions are kept: staleness must still
  // see the newest version of a resource whose events are gone.
  virtual absl::StatusOr<uint64_t> TrimEvents(uint64_t max_sequence, int64_t received_before_us,
                                              std::size_t max_events) = 0;
  // Deletes up to `max` dead letters, of any plugin, whose dead_at is before `before_us`.
  virtual absl::StatusOr<uint64_t> TrimDeadLetters(int64_t before_us, std::size_t max) = 0;
  // Deletes quarantine entries from the oldest forward, stopping at the first one whose
  // received_at is not before `before_us`, after at most `max`.
  virtual absl::StatusOr<uint64_t> TrimQuarantine(int64_t before_us, std::size_t max) = 0;
};

// Forwards every call to another backend: the base for decorators (fault injection, metrics)
// that override only what they change.
class ForwardingLogBackend : public LogBackend {
 public:
  explicit ForwardingLogBackend(std::unique_ptr<LogBackend> inner) : inner_(std::move(inner)) {}

  absl::StatusOr<RecoveredState> Recover() override { return inner_->Recover(); }
  absl::StatusOr<RecoveredState> Resync() override { return inner_->Resync(); }
  absl::Status Health() override { return inner_->Health(); }
  void Follow(std::function<void(uint64_t, uint64_t)> on_advance) override {
    inner_->Follow(std::move(on_advance));
  }
  absl::Status Write(const CommitBatch& batch, bool sync) override {
    return inner_->Write(batch, sync);
  }
  absl::StatusOr<std::optional<uint64_t>> FindEventId(const DedupKey& key) override {
    return inner_->FindEventId(key);
  }
  absl::StatusOr<std::optional<ResourceVersion>> FindVersion(const ResourceKey& key) override {
    return inner_->FindVersion(key);
  }
  absl::StatusOr<std::vector<ResourceVersionEntry>> ListVersions(
      const std::string& source, const std::string& kind, const std::string& after_resource_id,
      std::size_t max) override {
    return inner_->ListVersions(source, kind, after_resource_id, max);
  }
  absl::StatusOr<std::optional<std::string>> GetMeta(const std::string& key) override {
    return inner_->GetMeta(key);
  }
  absl::StatusOr<std::optional<std::string>> GetAppliedMeta(const std::string& key) override {
    return inner_->GetAppliedMeta(key);
  }
  absl::Status PutMeta(const std::string& key, const std::string& value) override {
    return inner_->PutMeta(key, value);
  }
  absl::StatusOr<std::optional<v1::Event>> GetEvent(uint64_t sequence) override {
    return inner_->GetEvent(sequence);
  }
  absl::StatusOr<std::vector<v1::Event>> ReadEvents(uint64_t from, std::size_t max) override {
    return inner_->ReadEvents(from, max);
  }
  absl::StatusOr<std::vector<StoredEvent>> ReadStoredEvents(uint64_t from,
                                                            std::size_t max) override {
    return inner_->ReadStoredEvents(from, max);
  }
  absl::StatusOr<std::vector<v1::QuarantineEntry>> ReadQuarantine(uint64_t from,
                                                                  std::size_t max) override {
    return inner_->ReadQuarantine(from, max);
  }
  uint64_t DiskBytes() override { return inner_->DiskBytes(); }
  absl::StatusOr<uint64_t> LoadCursor(const std::string& plugin) override {
    return inner_->LoadCursor(plugin);
  }
  absl::Status WriteProgress(const std::string& plugin, const PluginProgress& progress) override {
    return inner_->WriteProgress(plugin, progress);
  }
  absl::StatusOr<uint64_t> LoadHandedOut(const std::string& plugin) override {
    return inner_->LoadHandedOut(plugin);
  }
  absl::Status WriteHandedOut(const std::string& plugin, uint64_t mark) override {
    return inner_->WriteHandedOut(plugin, mark);
  }
  absl::StatusOr<std::vector<v1::DeadLetter>> ReadDeadLetters(const std::string& plugin,
                                                              uint64_t from,
                                                              std::size_t max) override {
    return inner_->ReadDeadLetters(plugin, from, max);
  }
  absl::Status DeleteDeadLetters(const std::string& plugin,
                                 const std::vector<uint64_t>& sequences) override {
    return inner_->DeleteDeadLetters(plugin, sequences);
  }
  absl::StatusOr<uint64_t> CountDeadLetters(const std::string& plugin) override {
    return inner_->CountDeadLetters(plugin);
  }
  absl::StatusOr<uint64_t> TrimEvents(uint64_t max_sequence, int64_t received_before_us,
                                      std::size_t max_events) override {
    return inner_->TrimEvents(max_sequence, received_before_us, max_events);
  }
  absl::StatusOr<uint64_t> TrimDeadLetters(int64_t before_us, std::size_t max) override {
    return inner_->TrimDeadLetters(before_us, max);
  }
  absl::StatusOr<uint64_t> TrimQuarantine(int64_t before_us, std::size_t max) override {
    return inner_->TrimQuarantine(before_us, max);
  }

 protected:
  LogBackend& inner() { return *inner_; }

 private:
  std::unique_ptr<LogBackend> inner_;
};

}  // namespace pimgate

#endif  // PIMGATE_CORE_LOG_LOG_BACKEND_H_
