// WorkerPool: the threads of a client of a remote HTTP API (AkeneoClient, PlatformClient). A fixed
// number of workers take queued jobs in order, each worker with state of its own (its HTTP
// connection). Shutdown() stops them and may run on one of them: from a job's callback, or when a
// callback's captures own the client and are destroyed there.
//
// The owner's part of the bargain: the pool lives in the client's shared state, and Start() is
// given a reference to that state (`keep_alive`), which each worker holds until its loop has
// returned. The last reference may then be dropped on a worker, and whatever the loop still reads
// (the pool, the client's configuration) stays alive until it is done. A worker cannot join
// itself: Shutdown() on a worker hands that thread to a process-wide joiner, which joins it once
// it has ended (when another one comes in) or at exit.
#ifndef PIMGATE_PIM_WORKER_POOL_H_
#define PIMGATE_PIM_WORKER_POOL_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace pimgate {

// The threads of a pool, without its queue (not a template: see worker_pool.cc).
class WorkerThreads {
 public:
  WorkerThreads() = default;
  WorkerThreads(const WorkerThreads&) = delete;
  WorkerThreads& operator=(const WorkerThreads&) = delete;
  // Every thread must be joined or adopted (JoinAll) before this runs.
  ~WorkerThreads() = default;

  // Starts `count` threads; thread i runs loop(i) holding `keep_alive`, which it drops once the
  // loop has returned.
  void Start(uint32_t count, std::shared_ptr<const void> keep_alive,
             const std::function<void(uint32_t)>& loop);

  // Joins every thread, except the calling one (a worker shutting its own pool down), which the
  // process-wide joiner adopts. The loops must be on their way out. A worker that calls this
  // while another thread is joining them all returns at once (that thread joins it).
  void JoinAll();

 private:
  struct Thread {
    std::thread thread;
    // Set once the thread no longer uses its pool's state: from then on it only has its exit
    // left (thread-local destructors, OpenSSL's per-thread cleanup).
    std::shared_ptr<std::atomic<bool>> ended = std::make_shared<std::atomic<bool>>(false);
  };
  absl::Mutex mu_;
  std::vector<std::unique_ptr<Thread>> threads_ ABSL_GUARDED_BY(mu_);
};

template <typename Job>
class WorkerPool {
 public:
  // Starts `count` workers, each running `loop(index)` while holding `keep_alive`. A loop takes
  // jobs with Next() until it returns nothing, then cancels what TakeUnstarted() gives it.
  void Start(uint32_t count, std::shared_ptr<const void> keep_alive,
             const std::function<void(uint32_t)>& loop) {
    threads_.Start(count, std::move(keep_alive), loop);
  }

  // Queues `job` unless the pool is shut down: false then, and `job` is left untouched.
  bool Post(Job& job) {
    absl::MutexLock lock(&mu_);
    if (shutdown_) return false;
    queue_.push_back(std::move(job));
    return true;
  }

  // For a worker's loop: the next job, once there is one; nothing once the pool is shut down.
  std::optional<Job> Next() {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](WorkerPool* self) ABSL_EXCLUSIVE_LOCKS_REQUIRED(self->mu_) {
          return self->shutdown_ || !self->queue_.empty();
        },
        this));
    if (shutdown_) return std::nullopt;
    std::optional<Job> job(std::move(queue_.front()));
    queue_.pop_front();
    return job;
  }

  // Once shut down: the jobs queued and never taken, each handed out once (to whichever worker
  // asks first), for the caller to cancel.
  std::deque<Job> TakeUnstarted() {
    std::deque<Job> unstarted;
    absl::MutexLock lock(&mu_);
    if (shutdown_) unstarted.swap(queue_);
    return unstarted;
  }

  // Stops taking jobs, tells exchanges in flight to give up (stopping()), and joins the workers
  // (see WorkerThreads::JoinAll). Idempotent.
  void Shutdown() {
    {
      absl::MutexLock lock(&mu_);
      shutdown_ = true;
    }
    stopping_.store(true, std::memory_order_relaxed);
    threads_.JoinAll();
  }

  // Whether Shutdown() has begun; lock-free, for an exchange in flight to poll.
  bool stopping() const { return stopping_.load(std::memory_order_relaxed); }

  // Waits `delay` unless the pool is shut down first: false then.
  bool SleepUnlessShutdown(std::chrono::milliseconds delay) {
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(&shutdown_), absl::FromChrono(delay));
    return !shutdown_;
  }

 private:
  absl::Mutex mu_;
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<Job> queue_ ABSL_GUARDED_BY(mu_);
  std::atomic<bool> stopping_{false};
  WorkerThreads threads_;
};

}  // namespace pimgate

#endif  // PIMGATE_PIM_WORKER_POOL_H_
