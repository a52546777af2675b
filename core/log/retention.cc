// RetentionTask: the periodic pass over the backend's Trim* calls.
#include "core/log/retention.h"

#include <algorithm>
#include <limits>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/log/log_backend.h"
#include "spdlog/spdlog.h"

namespace pimgate {
namespace {

absl::Duration FromChrono(std::chrono::milliseconds d) { return absl::Milliseconds(d.count()); }

}  // namespace

RetentionOptions RetentionOptions::FromConfig(const StoreConfig& store) {
  RetentionOptions options;
  options.event_retention = absl::Seconds(store.retention.count());
  options.dead_letter_retention = absl::Seconds(store.dead_letter_retention.count());
  options.quarantine_retention = absl::Seconds(store.quarantine_retention.count());
  options.interval = FromChrono(store.retention_interval);
  return options;
}

RetentionTask::RetentionTask(EventLog* log, MinCursorProvider min_cursor, RetentionOptions options)
    : backend_(log->backend_.get()),
      min_cursor_(std::move(min_cursor)),
      options_(std::move(options)) {}

RetentionTask::~RetentionTask() { Stop(); }

void RetentionTask::Start() {
  {
    absl::MutexLock lock(&wake_->mu);
    if (wake_->stopping) return;
  }
  absl::MutexLock lock(&mu_);
  if (thread_.joinable()) return;
  thread_ = std::thread([this] { Loop(); });
}

void RetentionTask::Stop() {
  {
    absl::MutexLock lock(&wake_->mu);
    wake_->stopping = true;
    wake_->cv.SignalAll();
  }
  if (thread_.joinable()) thread_.join();
}

bool RetentionTask::stopping() const {
  absl::MutexLock lock(&wake_->mu);
  return wake_->stopping;
}

std::function<void(uint64_t)> RetentionTask::AppendListener() const {
  return [wake = wake_, trigger = options_.trigger_events](uint64_t head) {
    absl::MutexLock lock(&wake->mu);
    wake->head = std::max(wake->head, head);
    if (trigger > 0 && !wake->triggered && wake->head - wake->head_at_pass >= trigger) {
      wake->triggered = true;
      wake->cv.Signal();
    }
  };
}

void RetentionTask::Loop() {
  Wake& wake = *wake_;
  for (;;) {
    {
      absl::MutexLock lock(&wake.mu);
      const absl::Time deadline = absl::Now() + options_.interval;
      while (!wake.stopping && !wake.triggered && absl::Now() < deadline) {
        wake.cv.WaitWithDeadline(&wake.mu, deadline);
      }
      if (wake.stopping) return;
      // The events appended from here on count toward the next trigger.
      wake.head_at_pass = wake.head;
      wake.triggered = false;
    }
    absl::StatusOr<RetentionPass> pass = RunOnce();
    if (!pass.ok()) {
      spdlog::error("retention: {}", std::string(pass.status().message()));
    }
  }
}

absl::StatusOr<RetentionPass> RetentionTask::RunOnce() {
  absl::MutexLock run_lock(&run_mu_);
  const absl::Time now = options_.now();
  RetentionPass pass;
  absl::Status status;

  // Calls `trim` in batches until it removes less than a batch, the pass limit is reached, the
  // task stops or a call fails.
  const auto drain = [this](const std::function<absl::StatusOr<uint64_t>(std::size_t)>& trim,
                            uint64_t& removed) -> absl::Status {
    while (removed < options_.max_per_pass && !stopping()) {
      absl::StatusOr<uint64_t> n = trim(options_.batch);
      if (!n.ok()) return n.status();
      removed += *n;
      if (*n < options_.batch) break;
    }
    return absl::OkStatus();
  };

  // Events: only those every plugin is done with, and older than the retention.
  absl::StatusOr<std::optional<uint64_t>> cursor = min_cursor_();
  if (!cursor.ok()) {
    status = absl::Status(cursor.status().code(),
                          absl::StrCat("events not trimmed: cannot read the plugins' cursors: ",
                                       cursor.status().message()));
  } else {
    const uint64_t max_sequence = cursor->value_or(std::numeric_limits<uint64_t>::max());
    const int64_t before_us = absl::ToUnixMicros(now - options_.event_retention);
    if (absl::Status s = drain(
            [&](std::size_t batch) { return backend_->TrimEvents(max_sequence, before_us, batch); },
            pass.events);
        !s.ok()) {
      status = s;
    }
  }

  const int64_t dead_before_us = absl::ToUnixMicros(now - options_.dead_letter_retention);
  if (absl::Status s =
          drain([&](std::size_t batch) { return backend_->TrimDeadLetters(dead_before_us, batch); },
                pass.dead_letters);
      !s.ok() && status.ok()) {
    status = s;
  }
  const int64_t quarantine_before_us = absl::ToUnixMicros(now - options_.quarantine_retention);
  if (absl::Status s = drain(
          [&](std::size_t batch) { return backend_->TrimQuarantine(quarantine_before_us, batch); },
          pass.quarantine);
      !s.ok() && status.ok()) {
    status = s;
  }

  if (pass.events + pass.dead_letters + pass.quarantine > 0) {
    spdlog::info(
        "retention: removed {} event(s) (cursor {}), {} dead letter(s), {} quarantine entr{}",
        pass.events,
        cursor.ok() && cursor->has_value() ? absl::StrCat(**cursor) : std::string("none"),
        pass.dead_letters, pass.quarantine, pass.quarantine == 1 ? "y" : "ies");
  } else {
    spdlog::debug("retention: nothing to remove");
  }
  {
    absl::MutexLock lock(&mu_);
    ++stats_.runs;
    if (!status.ok()) ++stats_.failures;
    stats_.events_trimmed += pass.events;
    stats_.dead_letters_trimmed += pass.dead_letters;
    stats_.quarantine_trimmed += pass.quarantine;
    stats_.last_run = now;
  }
  if (!status.ok()) return status;
  return pass;
}

RetentionStats RetentionTask::stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

}  // namespace pimgate
