// EventLog: pimgate's append-only event log. Assigns sequences, deduplicates by (source, event
// id), marks stale versions per resource, and writes each request atomically through a group
// commit over a LogBackend.
#ifndef PIMGATE_CORE_EVENT_LOG_H_
#define PIMGATE_CORE_EVENT_LOG_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "core/config.h"
#include "core/log_backend.h"
#include "pimgate/v1/event.pb.h"
#include "pimgate/v1/store.pb.h"

namespace pimgate {

// The events of one webhook request, parsed but not yet stored. `sequence` and `stale` of the
// events are ignored on input and set by the log.
struct AppendRequest {
  std::vector<v1::Event> events;
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
};

// The log's options as `store:` configures them.
inline EventLogOptions EventLogOptionsFrom(const StoreConfig& store) {
  EventLogOptions options;
  options.sync = store.sync;
  options.max_commit_requests = store.max_commit_requests;
  options.max_pending_requests = store.max_pending_requests;
  return options;
}

// Thread-safe. Append may be called from any thread; callbacks run on the log's committer
// thread and must not block (post to your own executor).
class EventLog {
 public:
  using AppendCallback = std::function<void(absl::StatusOr<AppendResult>)>;

  // Takes ownership of `backend`, recovers its state and starts the committer thread.
  static absl::StatusOr<std::unique_ptr<EventLog>> Open(std::unique_ptr<LogBackend> backend,
                                                        EventLogOptions options);
  ~EventLog();  // drains pending appends, then stops

  EventLog(const EventLog&) = delete;
  EventLog& operator=(const EventLog&) = delete;

  // Queues `request` for the next group commit. `callback` gets the result once the whole
  // request is in the log (fsynced when options.sync) or an error when nothing of it was
  // written. The request is all-or-nothing: a failed commit stores none of its events.
  // Requests that share a group commit share its fate: one failed Write fails all of them.
  // An Append racing with the destructor may be refused with Unavailable, on the caller's thread.
  void Append(AppendRequest request, AppendCallback callback);

  // Blocking convenience for tools and tests: Append, then wait for the callback. Must not be
  // called from an AppendCallback (it would wait for the committer thread it runs on).
  absl::StatusOr<AppendResult> AppendSync(AppendRequest request);

  // Requests queued and not yet committed (for backpressure decisions).
  std::size_t pending() const { return pending_.load(std::memory_order_relaxed); }
  std::size_t max_pending() const { return options_.max_pending_requests; }
  // Highest sequence stored so far (0 when empty).
  uint64_t head() const { return head_.load(std::memory_order_acquire); }

  // Blocks until head() > `after` or `timeout` passes, and returns head(). Readers of the log
  // (the dispatcher) use it to wait for new events without polling.
  uint64_t WaitForHead(uint64_t after, absl::Duration timeout);

  // Registers `listener`, called on the committer thread with the new head after every commit
  // that stored events. It must be quick and must not call back into the log (set a flag,
  // signal a condition variable). Thread-safe.
  void AddAppendListener(std::function<void(uint64_t head)> listener);

  LogBackend& backend() { return *backend_; }

 private:
  struct Pending {
    AppendRequest request;
    AppendCallback callback;
  };

  EventLog(std::unique_ptr<LogBackend> backend, EventLogOptions options, RecoveredState state);
  void CommitLoop();
  void CommitGroup(std::vector<Pending>& group);

  std::unique_ptr<LogBackend> backend_;
  const EventLogOptions options_;

  absl::Mutex mu_;
  absl::CondVar queue_cv_;  // signalled on a new request and on stop
  std::deque<Pending> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;

  std::atomic<std::size_t> pending_{0};
  // Written only by the committer, and only after a successful backend Write.
  std::atomic<uint64_t> head_{0};
  // Committer-thread state: the last quarantine id stored. Like head_, it only moves after a
  // successful Write, so a failed group leaves no gap.
  uint64_t last_quarantine_id_ = 0;
  absl::Mutex head_mu_;
  absl::CondVar head_cv_;  // signalled after head_ advances
  std::vector<std::function<void(uint64_t)>> listeners_ ABSL_GUARDED_BY(head_mu_);
  std::thread committer_;  // last member: starts after everything it reads is initialised
};

}  // namespace pimgate

#endif  // PIMGATE_CORE_EVENT_LOG_H_
