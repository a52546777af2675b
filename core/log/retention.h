// RetentionTask: keeps the store bounded. Every interval, and whenever enough events were appended
// since the last pass, it removes the events that every plugin is done with and that are older
// than store.retention (their dedup entries go with them), the dead letters older than
// store.dead_letter_retention and the quarantine entries older than store.quarantine_retention.
#ifndef PIMGATE_CORE_LOG_RETENTION_H_
#define PIMGATE_CORE_LOG_RETENTION_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "config/config.h"
#include "core/log/event_log.h"

namespace pimgate {

// The lowest dispatch cursor over all plugins (every event <= it is done for every plugin), or
// nullopt when no plugin is configured, in which case age alone decides. An error skips the
// event trim of that pass: retention never removes what it cannot prove is done.
using MinCursorProvider = std::function<absl::StatusOr<std::optional<uint64_t>>()>;

struct RetentionOptions {
  absl::Duration event_retention = absl::Hours(7 * 24);
  absl::Duration dead_letter_retention = absl::Hours(30 * 24);
  absl::Duration quarantine_retention = absl::Hours(30 * 24);
  absl::Duration interval = absl::Minutes(1);
  // A pass also starts as soon as this many events were appended since the previous pass began
  // (NotifyAppended), so trimming keeps pace with ingest whatever the interval: each pass trims
  // at most max_per_pass events, and passes come at least as often as ingest fills a batch.
  uint64_t trigger_events = 10'000;
  // Records removed per backend call (one atomic write): bounds the memory and the latency of
  // one write, so a large backlog is trimmed in many small steps that ingest can interleave with.
  std::size_t batch = 10'000;
  // Most records of one kind removed per pass; the rest waits for the next pass.
  std::size_t max_per_pass = 1'000'000;
  // The clock ages are measured against (tests inject their own).
  std::function<absl::Time()> now = [] { return absl::Now(); };

  // store.retention, store.dead_letter_retention, store.quarantine_retention and
  // store.retention_interval.
  static RetentionOptions FromConfig(const StoreConfig& store);
};

// What one pass removed.
struct RetentionPass {
  uint64_t events = 0;
  uint64_t dead_letters = 0;
  uint64_t quarantine = 0;
};

// Totals since start, for metrics.
struct RetentionStats {
  uint64_t runs = 0;
  uint64_t failures = 0;  // passes in which some trim failed (logged)
  uint64_t events_trimmed = 0;
  uint64_t dead_letters_trimmed = 0;
  uint64_t quarantine_trimmed = 0;
  absl::Time last_run = absl::InfinitePast();
};

// Thread-safe. Owns one thread between Start() and Stop(). The log must outlive the task, and so
// must whatever `min_cursor` reads (stop the task before the dispatcher and the log).
class RetentionTask {
 public:
  // Trims `log`'s store (through its backend: retention is part of core/log).
  RetentionTask(EventLog* log, MinCursorProvider min_cursor, RetentionOptions options);
  ~RetentionTask();  // Stop()

  RetentionTask(const RetentionTask&) = delete;
  RetentionTask& operator=(const RetentionTask&) = delete;

  // Runs a pass every options.interval (the first one interval after Start), and early once
  // options.trigger_events were appended since the last pass began.
  void Start();
  // Waits for a pass in progress (it stops between batches) and joins the thread. Idempotent.
  void Stop();

  // A listener for EventLog::AddAppendListener: told the log's new head after each commit, it
  // wakes the task's thread once trigger_events were appended since the last pass began. Quick
  // and non-blocking, as the log requires; safe to call after the task is destroyed (it then
  // does nothing), so the log may outlive the task.
  std::function<void(uint64_t head)> AppendListener() const;

  // One pass on the caller's thread: what Start() runs periodically. An error is returned after
  // the other kinds were still trimmed (dead letters do not wait for a broken cursor).
  absl::StatusOr<RetentionPass> RunOnce();

  RetentionStats stats() const;

 private:
  void Loop();
  bool stopping() const;

  LogBackend* const backend_;  // the log's
  const MinCursorProvider min_cursor_;
  const RetentionOptions options_;

  // What wakes the task's thread (stop, appends), shared with the append listeners.
  struct Wake {
    absl::Mutex mu;
    absl::CondVar cv;  // signalled on stop and when appends trigger a pass
    bool stopping ABSL_GUARDED_BY(mu) = false;
    uint64_t head ABSL_GUARDED_BY(mu) = 0;          // the last head a listener was told
    uint64_t head_at_pass ABSL_GUARDED_BY(mu) = 0;  // `head` when the last pass began
    bool triggered ABSL_GUARDED_BY(mu) = false;     // trigger_events reached: pass now
  };

  absl::Mutex run_mu_;  // one pass at a time (the thread's and RunOnce callers')
  const std::shared_ptr<Wake> wake_ = std::make_shared<Wake>();
  mutable absl::Mutex mu_;
  RetentionStats stats_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace pimgate

#endif  // PIMGATE_CORE_LOG_RETENTION_H_
