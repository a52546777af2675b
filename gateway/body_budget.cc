// BodyBudget: room for unauthenticated request bodies, per client and in total.
#include "gateway/body_budget.h"

#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <limits>
#include <tuple>
#include <utility>

namespace pimgate {
namespace {

// A body's first 1/kPaceStartShare of its sender's timeout is its start, before a pace applies.
constexpr int kPaceStartShare = 4;
// A waiter whose room is promised by evictions in flight may wait this much past its deadline
// for the evicted connections to let go (they do as soon as their I/O thread runs).
constexpr std::chrono::milliseconds kEvictionWait{100};
// The default budget: a quarter of the memory available, at most this.
constexpr std::size_t kDefaultMaxBufferedBytes = 256u << 20;
// How long an authenticated request makes its client address trusted: long enough to cover a
// PIM that is quiet for days (the legacy Events API sends only when products change).
constexpr std::chrono::hours kTrustWindow{7 * 24};
// Trusted addresses remembered; the least recently authenticated is forgotten beyond it. Only
// requests with a valid signature add one, so this bounds memory, not an attacker.
constexpr std::size_t kMaxTrustedClients = 4096;

// A cgroup memory limit in bytes, 0 when there is none (or no cgroup file).
std::size_t CgroupMemoryLimit() {
  for (const char* path : {"/sys/fs/cgroup/memory.max",                       // cgroup v2
                           "/sys/fs/cgroup/memory/memory.limit_in_bytes"}) {  // cgroup v1
    std::ifstream in(path);
    std::string text;
    if (!(in >> text) || text == "max") continue;
    try {
      const unsigned long long limit = std::stoull(text);
      // cgroup v1 reports "no limit" as a huge number rounded to the page size.
      if (limit > 0 && limit < (1ull << 60)) return static_cast<std::size_t>(limit);
    } catch (const std::exception&) {
    }
  }
  return 0;
}

}  // namespace

const char* BudgetRefusalName(BudgetRefusal reason) {
  switch (reason) {
    case BudgetRefusal::kMaxConnections:
      return "max_connections";
    case BudgetRefusal::kClientConnections:
      return "client_connections";
    case BudgetRefusal::kBufferBudget:
      return "buffer_budget";
    case BudgetRefusal::kClientBufferBudget:
      return "client_buffer_budget";
    case BudgetRefusal::kEvicted:
      return "evicted";
  }
  return "unknown";
}

std::size_t DefaultMaxBufferedBytes(std::size_t body_limit) {
  std::size_t memory = 0;
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page_size = sysconf(_SC_PAGESIZE);
  if (pages > 0 && page_size > 0) {
    memory = static_cast<std::size_t>(pages) * static_cast<std::size_t>(page_size);
  }
  if (const std::size_t cgroup = CgroupMemoryLimit(); cgroup != 0) {
    memory = memory == 0 ? cgroup : std::min(memory, cgroup);
  }
  std::size_t budget =
      memory == 0 ? kDefaultMaxBufferedBytes : std::min(kDefaultMaxBufferedBytes, memory / 4);
  return std::max(budget, 2 * body_limit);
}

BodyBudget::BodyBudget(BodyBudgetOptions options, std::function<Clock::time_point()> now)
    : options_(options),
      now_(now ? std::move(now) : [] { return Clock::now(); }),
      free_share_(options.max_buffered_bytes /
                  (2 * std::max<std::size_t>(1, options.max_connections))),
      pool_(options.max_buffered_bytes -
            free_share_ * std::max<std::size_t>(1, options.max_connections)),
      // A client's share of the pool is in proportion to the connections it may open, and always
      // room for one body of the largest size (when the pool has it).
      client_pool_(std::min(
          pool_, std::max(static_cast<std::size_t>(
                              static_cast<long double>(pool_) *
                              std::min(options.max_connections_per_client,
                                       std::max<std::size_t>(1, options.max_connections)) /
                              std::max<std::size_t>(1, options.max_connections)),
                          options.body_limit > free_share_ ? options.body_limit - free_share_
                                                           : std::size_t{0}))) {}

BodyBudget::~BodyBudget() { Shutdown(); }

// ---- Hold -------------------------------------------------------------------------------------

BodyBudget::Hold::Hold(Hold&& other) noexcept
    : budget_(std::exchange(other.budget_, nullptr)), id_(other.id_) {}

BodyBudget::Hold& BodyBudget::Hold::operator=(Hold&& other) noexcept {
  if (this != &other) {
    Release();
    budget_ = std::exchange(other.budget_, nullptr);
    id_ = other.id_;
  }
  return *this;
}

BodyBudget::Hold::~Hold() { Release(); }

void BodyBudget::Hold::Received(std::size_t total) {
  if (budget_ != nullptr) budget_->SetReceived(id_, total);
}

void BodyBudget::Hold::Complete() {
  if (budget_ != nullptr) budget_->SetComplete(id_);
}

void BodyBudget::Hold::Release() {
  if (BodyBudget* budget = std::exchange(budget_, nullptr); budget != nullptr) {
    budget->ReleaseHold(id_);
  }
}

// ---- connections ------------------------------------------------------------------------------

bool BodyBudget::OpenConnection(const std::string& client) {
  absl::MutexLock lock(&mu_);
  ClientState& state = clients_[client];
  if (state.connections >= options_.max_connections_per_client) {
    Count(client, BudgetRefusal::kClientConnections);
    if (state.connections == 0 && state.shared == 0) clients_.erase(client);
    return false;
  }
  ++state.connections;
  return true;
}

void BodyBudget::CloseConnection(const std::string& client) {
  absl::MutexLock lock(&mu_);
  auto it = clients_.find(client);
  if (it == clients_.end()) return;
  if (it->second.connections > 0) --it->second.connections;
  if (it->second.connections == 0 && it->second.shared == 0) clients_.erase(it);
}

// ---- room -------------------------------------------------------------------------------------

void BodyBudget::Actions::Run() {
  // Evictions first: they free the room that the grants below may be waiting on.
  for (std::function<void()>& evict : evictions) {
    if (evict) evict();
  }
  for (auto& [decide, hold] : grants) decide(std::move(hold), std::nullopt);
  for (auto& done : grown) done(std::nullopt);
  for (auto& [waiter, reason] : refusals) {
    if (waiter.decide) waiter.decide(Hold(), reason);
    if (waiter.grown) waiter.grown(reason);
  }
  // `dropped` (waiters whose hold went away) and the callbacks above are destroyed with this
  // object, outside the lock.
}

std::size_t BodyBudget::Need(const Waiter& waiter) const {
  if (!waiter.grow_id) return SharedPart(waiter.bytes);
  auto it = holds_.find(*waiter.grow_id);
  if (it == holds_.end()) return 0;
  return SharedPart(it->second.bytes + waiter.bytes) - it->second.shared;
}

bool BodyBudget::Fits(const std::string& client, std::size_t shared) {
  if (shared == 0) return true;
  if (pool_used_ + shared > pool_) return false;
  auto it = clients_.find(client);
  const std::size_t used = it == clients_.end() ? 0 : it->second.shared;
  return used + shared <= client_pool_;
}

BodyBudget::Hold BodyBudget::Admit(const Request& request) {
  const uint64_t id = next_id_++;
  HoldEntry& entry = holds_[id];
  entry.client = request.client;
  entry.bytes = request.bytes;
  entry.shared = SharedPart(request.bytes);
  entry.started = now_();
  entry.sender_timeout = request.sender_timeout;
  entry.trusted = TrustedLocked(request.client, entry.started);
  entry.on_evict = request.on_evict;
  buffered_ += entry.bytes;
  pool_used_ += entry.shared;
  clients_[request.client].shared += entry.shared;
  return Hold(this, id);
}

void BodyBudget::GrowLocked(uint64_t id, std::size_t more) {
  HoldEntry& entry = holds_.at(id);
  const std::size_t shared = SharedPart(entry.bytes + more);
  const std::size_t added = shared - entry.shared;
  entry.bytes += more;
  entry.shared = shared;
  buffered_ += more;
  pool_used_ += added;
  clients_[entry.client].shared += added;
}

BodyBudget::Hold BodyBudget::Reserve(Request request, Decision decide) {
  Actions actions;
  {
    absl::MutexLock lock(&mu_);
    if (shut_down_) return Hold();
    const std::size_t shared = SharedPart(request.bytes);
    // Small bodies never wait; others go straight in when they fit. (Those already waiting did
    // not fit: room that frees goes to them first, in Pass, as soon as it is released.)
    if (shared == 0 || Fits(request.client, shared)) {
      return Admit(request);
    }
    Waiter& waiter = waiters_.emplace_back();
    waiter.client = request.client;
    waiter.bytes = request.bytes;
    waiter.request = std::move(request);
    waiter.deadline = now_() + options_.max_wait;
    waiter.trusted = TrustedLocked(waiter.client, now_());
    waiter.decide = std::move(decide);
    Pass(actions);
  }
  actions.Run();
  return Hold();
}

bool BodyBudget::Grow(Hold& hold, std::size_t more,
                      std::function<void(std::optional<BudgetRefusal>)> decided) {
  Actions actions;
  {
    absl::MutexLock lock(&mu_);
    if (shut_down_ || !hold) return false;
    auto it = holds_.find(hold.id_);
    if (it == holds_.end()) return false;
    const std::size_t shared = SharedPart(it->second.bytes + more) - it->second.shared;
    if (shared == 0 || Fits(it->second.client, shared)) {
      GrowLocked(hold.id_, more);
      return true;
    }
    Waiter& waiter = waiters_.emplace_back();
    waiter.client = it->second.client;
    waiter.bytes = more;
    waiter.grow_id = hold.id_;
    waiter.deadline = now_() + options_.max_wait;
    waiter.trusted = TrustedLocked(waiter.client, now_());
    waiter.grown = std::move(decided);
    Pass(actions);
  }
  actions.Run();
  return false;
}

bool BodyBudget::TrustedLocked(const std::string& client, Clock::time_point now) const {
  auto it = trusted_.find(client);
  return it != trusted_.end() && now - it->second < kTrustWindow;
}

bool BodyBudget::Trusted(const std::string& client) const {
  absl::MutexLock lock(&mu_);
  return TrustedLocked(client, now_());
}

void BodyBudget::Trust(const std::string& client) {
  absl::MutexLock lock(&mu_);
  const Clock::time_point now = now_();
  auto [it, inserted] = trusted_.insert_or_assign(client, now);
  if (inserted && trusted_.size() > kMaxTrustedClients) {
    auto oldest =
        std::min_element(trusted_.begin(), trusted_.end(),
                         [](const auto& a, const auto& b) { return a.second < b.second; });
    trusted_.erase(oldest);
  }
}

bool BodyBudget::Stale(const HoldEntry& hold, Clock::time_point now) const {
  // Past its sender's timeout, the sender has given up whatever it sent.
  const auto age = now - hold.started;
  if (age >= hold.sender_timeout) return true;
  // A trusted client's body is only ever given up then: it is the PIM's.
  if (hold.trusted) return false;
  // Otherwise it must keep the pace of a sender that finishes within its timeout: after a start
  // (the first quarter of the timeout: the session starting to read, the sender's first
  // segments, a 100 Continue's round trip), the rest of the body at an even rate.
  const auto start = hold.sender_timeout / kPaceStartShare;
  if (age <= start) return false;
  const long double due = static_cast<long double>(hold.bytes) *
                          std::chrono::duration<long double>(age - start).count() /
                          std::chrono::duration<long double>(hold.sender_timeout - start).count();
  return static_cast<long double>(hold.received) < due;
}

void BodyBudget::Pass(Actions& actions) {
  const Clock::time_point now = now_();
  // Room once the evictions in flight have landed, minus what earlier waiters were promised.
  std::size_t future_global = pool_ - pool_used_ + evicting_;
  std::unordered_map<std::string, std::size_t> future_client;
  auto client_future = [&](const std::string& client) -> std::size_t& {
    auto [it, inserted] = future_client.try_emplace(client, 0);
    if (inserted) {
      const ClientState& state = clients_[client];
      it->second = client_pool_ - std::min(client_pool_, state.shared - state.evicting);
    }
    return it->second;
  };
  // Bodies that may make room, in this order (oldest first within each): untrusted ones behind
  // their pace (for anyone); then, for trusted waiters only, untrusted ones on pace, and last the
  // trusted ones past their sender's timeout. A trusted body on pace never goes, and an untrusted
  // waiter can never close a trusted body. Built when first needed.
  struct Candidate {
    int rank;
    Clock::time_point started;
    uint64_t id;
    bool operator<(const Candidate& o) const {
      return std::tie(rank, started, id) < std::tie(o.rank, o.started, o.id);
    }
  };
  std::vector<Candidate> candidates;
  bool candidates_built = false;
  auto evict_one = [&](const std::string* only_client, std::optional<uint64_t> except,
                       bool trusted_waiter) {
    if (!candidates_built) {
      for (const auto& [id, hold] : holds_) {
        if (hold.complete || hold.evicting || hold.shared == 0) continue;
        const bool stale = Stale(hold, now);
        if (!hold.trusted) {
          candidates.push_back({stale ? 0 : 1, hold.started, id});
        } else if (stale) {
          candidates.push_back({2, hold.started, id});
        }
      }
      std::sort(candidates.begin(), candidates.end());
      candidates_built = true;
    }
    for (Candidate& candidate : candidates) {
      const uint64_t id = candidate.id;
      if (id == 0 || id == except) continue;             // taken, or the waiter's own (to grow)
      if (candidate.rank > 0 && !trusted_waiter) break;  // the rest are not for it
      HoldEntry& hold = holds_.at(id);
      if (only_client != nullptr && hold.client != *only_client) continue;
      candidate.id = 0;
      hold.evicting = true;
      evicting_ += hold.shared;
      clients_[hold.client].evicting += hold.shared;
      future_global += hold.shared;
      if (auto it = future_client.find(hold.client); it != future_client.end()) {
        it->second += hold.shared;
      }
      Count(hold.client, BudgetRefusal::kEvicted);
      actions.evictions.push_back(std::move(hold.on_evict));
      return true;
    }
    return false;
  };

  // Trusted waiters first, then the others, each in arrival order.
  for (const bool trusted_turn : {true, false}) {
    for (auto it = waiters_.begin(); it != waiters_.end();) {
      Waiter& waiter = *it;
      if (waiter.trusted != trusted_turn) {
        ++it;
        continue;
      }
      const std::size_t need = Need(waiter);
      // Room that is free now and not promised to a waiter ahead (whose evictions are landing).
      if (Fits(waiter.client, need) && need <= future_global &&
          need <= client_future(waiter.client)) {
        if (waiter.grow_id) {
          GrowLocked(*waiter.grow_id, waiter.bytes);
          actions.grown.push_back(std::move(waiter.grown));
        } else {
          waiter.request.bytes = waiter.bytes;
          actions.grants.emplace_back(std::move(waiter.decide), Admit(waiter.request));
        }
        future_global -= std::min(future_global, need);
        std::size_t& client = client_future(waiter.client);
        client -= std::min(client, need);
        it = waiters_.erase(it);
        continue;
      }
      // Make room: the client's own stale bodies for its share, anyone's for the pool.
      std::size_t& client = client_future(waiter.client);
      while (need > client && evict_one(&waiter.client, waiter.grow_id, waiter.trusted)) {
      }
      while (need > future_global && evict_one(nullptr, waiter.grow_id, waiter.trusted)) {
      }
      const bool promised = need <= client && need <= future_global;
      if (promised) {
        client -= need;
        future_global -= need;
      }
      if (now >= waiter.deadline + (promised ? kEvictionWait : std::chrono::milliseconds(0))) {
        const BudgetRefusal reason =
            need > client_pool_ - std::min(client_pool_, clients_[waiter.client].shared)
                ? BudgetRefusal::kClientBufferBudget
                : BudgetRefusal::kBufferBudget;
        Count(waiter.client, reason);
        actions.refusals.emplace_back(std::move(waiter), reason);
        it = waiters_.erase(it);
        continue;
      }
      ++it;
    }
  }
}

void BodyBudget::Tick() {
  Actions actions;
  {
    absl::MutexLock lock(&mu_);
    if (shut_down_ || waiters_.empty()) return;
    Pass(actions);
  }
  actions.Run();
}

void BodyBudget::ReleaseHold(uint64_t id) {
  Actions actions;
  std::function<void()> unused_evict;  // destroyed after the lock is released
  {
    absl::MutexLock lock(&mu_);
    auto it = holds_.find(id);
    if (it == holds_.end()) return;
    HoldEntry& hold = it->second;
    ClientState& client = clients_[hold.client];
    buffered_ -= hold.bytes;
    pool_used_ -= hold.shared;
    client.shared -= hold.shared;
    if (hold.evicting) {
      evicting_ -= hold.shared;
      client.evicting -= hold.shared;
    }
    if (client.connections == 0 && client.shared == 0) clients_.erase(hold.client);
    unused_evict = std::move(hold.on_evict);
    holds_.erase(it);
    // A wait to grow this hold goes with it.
    for (auto w = waiters_.begin(); w != waiters_.end();) {
      if (w->grow_id == id) {
        actions.dropped.push_back(std::move(*w));
        w = waiters_.erase(w);
      } else {
        ++w;
      }
    }
    if (!shut_down_ && !waiters_.empty()) Pass(actions);
  }
  actions.Run();
}

void BodyBudget::SetReceived(uint64_t id, std::size_t total) {
  absl::MutexLock lock(&mu_);
  if (auto it = holds_.find(id); it != holds_.end()) it->second.received = total;
}

void BodyBudget::SetComplete(uint64_t id) {
  absl::MutexLock lock(&mu_);
  if (auto it = holds_.find(id); it != holds_.end()) it->second.complete = true;
}

void BodyBudget::Shutdown() {
  std::list<Waiter> dropped;
  {
    absl::MutexLock lock(&mu_);
    shut_down_ = true;
    dropped.swap(waiters_);
  }
  // Destroyed here, outside the lock: their owners may release holds as they go.
}

std::size_t BodyBudget::Waiting() const {
  absl::MutexLock lock(&mu_);
  return waiters_.size();
}

BodyBudget::Stats BodyBudget::stats() const {
  absl::MutexLock lock(&mu_);
  Stats stats;
  stats.buffered_bytes = buffered_;
  stats.waiting = waiters_.size();
  for (const auto& [reason, count] : refusals_) stats.refusals[BudgetRefusalName(reason)] = count;
  return stats;
}

void BodyBudget::Count(const std::string& client, BudgetRefusal reason) {
  ++refusals_[reason];
  ++refusals_by_client_[client][reason];
}

void BodyBudget::CountRefusal(const std::string& client, BudgetRefusal reason) {
  absl::MutexLock lock(&mu_);
  Count(client, reason);
}

std::map<std::string, std::map<BudgetRefusal, uint64_t>> BodyBudget::TakeRefusalsByClient() {
  absl::MutexLock lock(&mu_);
  return std::exchange(refusals_by_client_, {});
}

}  // namespace pimgate
