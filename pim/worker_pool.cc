#include "pim/worker_pool.h"

#include <openssl/ssl.h>

#include <algorithm>
#include <cstdlib>
#include <iterator>
#include <thread>

namespace pimgate {

namespace {

// Threads whose pool was shut down on them: a thread cannot join itself. Such a thread ends on its
// own soon after (its loop only cancels what was still queued), but detached it could still be
// running when the process exits, racing with the exit-time cleanup of OpenSSL (which then loses
// that thread's per-thread state) and of the C++ runtime. They are joined here instead: those
// that have ended whenever another one comes in, the others at exit.
class OrphanedThreads {
 public:
  // Never destroyed (a client may be destroyed during static destruction). The exit handler is
  // registered after OpenSSL's (WorkerThreads::Start initializes OpenSSL first), so it runs first.
  static OrphanedThreads& Get() {
    static OrphanedThreads* const orphans = [] {
      auto* created = new OrphanedThreads;
      std::atexit([] { Get().JoinAll(); });
      return created;
    }();
    return *orphans;
  }

  void Adopt(std::thread thread, std::shared_ptr<std::atomic<bool>> ended) {
    std::vector<Orphan> finished;
    {
      absl::MutexLock lock(&mu_);
      auto first_finished = std::partition(orphans_.begin(), orphans_.end(), [](const Orphan& o) {
        return !o.ended->load(std::memory_order_acquire);
      });
      std::move(first_finished, orphans_.end(), std::back_inserter(finished));
      orphans_.erase(first_finished, orphans_.end());
      orphans_.push_back(Orphan{std::move(thread), std::move(ended)});
    }
    for (Orphan& orphan : finished) orphan.thread.join();  // brief: only their exit was left
  }

 private:
  struct Orphan {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> ended;
  };

  void JoinAll() {
    std::vector<Orphan> all;
    {
      absl::MutexLock lock(&mu_);
      all.swap(orphans_);
    }
    for (Orphan& orphan : all) {
      // exit() called from an orphan's own callback: that thread ends with the process.
      if (orphan.thread.get_id() == std::this_thread::get_id()) {
        orphan.thread.detach();
      } else {
        orphan.thread.join();
      }
    }
  }

  absl::Mutex mu_;
  std::vector<Orphan> orphans_ ABSL_GUARDED_BY(mu_);
};

// The pool whose worker this thread is, if any.
thread_local const WorkerThreads* current_pool = nullptr;

}  // namespace

void WorkerThreads::Start(uint32_t count, std::shared_ptr<const void> keep_alive,
                          const std::function<void(uint32_t)>& loop) {
  // OpenSSL registers its exit-time cleanup when first initialized: before the orphans' handler.
  OPENSSL_init_ssl(0, nullptr);
  OrphanedThreads::Get();
  absl::MutexLock lock(&mu_);
  for (uint32_t i = 0; i < count; ++i) {
    auto& started = threads_.emplace_back(std::make_unique<Thread>());
    started->thread = std::thread([this, keep_alive, loop = std::function<void(uint32_t)>(loop), i,
                                   ended = started->ended]() mutable {
      current_pool = this;
      loop(i);
      current_pool = nullptr;
      loop = nullptr;
      keep_alive.reset();  // may destroy the pool's owner, and this pool, here
      ended->store(true, std::memory_order_release);
    });
  }
}

void WorkerThreads::JoinAll() ABSL_NO_THREAD_SAFETY_ANALYSIS {
  if (current_pool == this) {
    // A worker shutting its own pool down. If another thread is already joining every worker
    // (it holds mu_ until done), this one is among them: it must not wait for that thread, which
    // waits for it.
    if (!mu_.TryLock()) return;
  } else {
    mu_.Lock();
  }
  for (std::unique_ptr<Thread>& worker : threads_) {
    if (!worker->thread.joinable()) continue;
    if (worker->thread.get_id() == std::this_thread::get_id()) {
      // Shutdown from a callback, or from a callback's captures being destroyed: this thread
      // ends by itself once back in its loop, on the state its own reference keeps alive.
      OrphanedThreads::Get().Adopt(std::move(worker->thread), worker->ended);
    } else {
      worker->thread.join();
    }
  }
  mu_.Unlock();
}

}  // namespace pimgate
