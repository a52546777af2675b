// PlatformWatch: reads the status of every subscription pimgate manages (those of each source's
// subscriber) every platform.watch_interval, records it in PlatformSubscriptions (the
// pimgate_platform_subscription_state metric, warnings on changes), and with
// platform.auto_resume resumes a subscription the platform suspended once pimgate is ready, asks
// the platform to replay what it captured and follows the replay's progress. The reconciliation
// that follows a resume is PlatformSubscriptions' on_resumed.
#ifndef PIMGATE_PIM_PLATFORM_WATCH_H_
#define PIMGATE_PIM_PLATFORM_WATCH_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "pim/platform_source.h"
#include "pim/platform_subscriptions.h"

namespace pimgate {

// Counters since the watch started (thread-safe copies).
struct PlatformWatchStats {
  uint64_t rounds = 0;         // source rounds completed (successful or not)
  uint64_t failed_rounds = 0;  // rounds whose management calls failed
  uint64_t auto_resumes = 0;   // subscriptions resumed by auto_resume
  uint64_t replays_started = 0;
};

// One thread for every source. A round of a source lists its subscriber's subscriptions (one
// or two management calls), so it never holds the thread for long; a replay is followed on the
// next rounds, which come every kReplayPollInterval while one is in progress.
//
//   PlatformWatch::Options options;
//   options.sources = {source.get()};
//   options.subscriptions = subscriptions.get();
//   options.ready = [&metrics] { return metrics.CheckReadiness().empty(); };
//   auto watch = std::make_unique<PlatformWatch>(std::move(options));
//   watch->Start();
//   ...
//   watch->Stop();  // before the sources and subscriptions go
class PlatformWatch {
 public:
  // How often a replay in progress is read (and its progress logged), when that is sooner than
  // the source's watch_interval.
  static constexpr std::chrono::milliseconds kReplayPollInterval{2'000};

  struct Options {
    // Not owned; each must outlive the watch. Sources with a zero watch_interval are not watched.
    std::vector<PlatformSource*> sources;
    PlatformSubscriptions* subscriptions = nullptr;
    // Whether pimgate is ready (/readyz): auto_resume waits for it. Unset: always ready.
    std::function<bool()> ready;
  };

  explicit PlatformWatch(Options options);
  ~PlatformWatch();  // Stop()
  PlatformWatch(const PlatformWatch&) = delete;
  PlatformWatch& operator=(const PlatformWatch&) = delete;

  // Starts the thread; its first round of every source runs at once. Call once.
  void Start();
  // Asks the thread to stop after the management call in progress, without waiting: shutting
  // the sources' clients down next cancels that call (EventPlatform::Stop does both).
  void RequestStop();
  // RequestStop(), then waits for the thread (a call in progress is bounded by platform.timeout
  // and its retries unless the client is shut down). Idempotent.
  void Stop();

  PlatformWatchStats stats() const;

 private:
  // What the watch remembers of one subscription between rounds.
  struct Tracked {
    std::string last_status;       // as last read ("active", "suspended", ...)
    std::string replay_id;         // a replay being followed; empty: none
    int64_t replay_reported = -1;  // delivered + failed when its progress was last logged
    bool said_waiting = false;     // "waiting for readiness" logged for this suspension
    bool said_user = false;        // "suspended by a user, not resumed" logged
    std::string resume_error;      // the last failed auto-resume's error, logged once
  };
  struct Watched {
    PlatformSource* source = nullptr;
    std::chrono::steady_clock::time_point next_round;
    std::string last_error;  // the last failed round's error, logged once until it changes
    std::map<std::string, Tracked> tracked;  // by subscription id
  };

  void Loop();
  // One round of `watched`; returns when its next one is due.
  std::chrono::steady_clock::time_point Round(Watched& watched);
  void HandleSuspended(Watched& watched, const PlatformSubscriber& subscriber,
                       const PlatformSubscription& subscription, Tracked& tracked);
  void FollowReplay(Watched& watched, const PlatformSubscriber& subscriber,
                    const PlatformSubscription& subscription, Tracked& tracked);
  bool stopping() const;

  const Options options_;
  std::vector<Watched> watched_;  // confined to the thread once started

  mutable absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  PlatformWatchStats stats_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace pimgate

#endif  // PIMGATE_PIM_PLATFORM_WATCH_H_
