// BodyBudget: bounds the request-body bytes the gateway holds before it can authenticate them.
// A legacy request's signature covers its body, so every body is read whole before pimgate knows
// whether Akeneo sent it; without a bound, connections that each send body_limit bytes and stop
// take memory until the process is killed (and while it is down, legacy events are lost).
//
// The rules, in the order they apply (docs/security.md states them for operators):
//  - Every connection may hold a small body without asking: up to `free_share()` bytes
//    (max_buffered_bytes / (2 x max_connections), 128 KiB with the defaults). Typical legacy
//    batches and every Event Platform event fit, so they are never delayed or refused for memory,
//    whatever other clients do: at most max_connections such bodies exist, half the budget.
//  - Larger bodies share the other half (`pool()`). One client address (an IPv6 /64) may hold at
//    most `client_pool()` of it, and have at most max_connections_per_client connections.
//  - Room is reserved before a byte of the body is read: the whole Content-Length at once (a body
//    that got room is never cut off half-way), or a chunked body's next chunk as it grows.
//  - When a body does not fit, bodies in progress whose sender has given up make room: those
//    older than their sender's own timeout (0.5 s for the Events API, 5 s for the Event
//    Platform), and, from untrusted addresses (below), those behind the pace that would deliver
//    them within it (after a start of a quarter of it); oldest first. Their connection is closed.
//  - A client address that sent an authenticated request recently (Trust()) is trusted: its
//    requests wait ahead of the others, and may also evict bodies of untrusted addresses that are
//    still on pace. An attacker has no secret, so it cannot become trusted; under a flood from any
//    number of addresses, the PIM's bodies still find room as fast as others let go of theirs.
//    A trusted body is never evicted for an untrusted one, and for a trusted one only past its
//    sender's timeout and when no untrusted body can go instead.
//  - Otherwise the request waits for room, up to max_wait, then is refused (the gateway answers
//    503, or 429 with Retry-After on Event Platform sources) without its body being read.
//
// Room is released when its Hold is destroyed: on every exit path of a request. Thread-safe; its
// callbacks run outside its lock, on the caller's or on Tick()'s thread.
#ifndef PIMGATE_GATEWAY_BODY_BUDGET_H_
#define PIMGATE_GATEWAY_BODY_BUDGET_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace pimgate {

struct BodyBudgetOptions {
  std::size_t max_buffered_bytes = 256u << 20;
  std::size_t max_connections = 1024;
  std::size_t max_connections_per_client = 128;
  // The largest body (gateway.body_limit): a client may always hold at least one.
  std::size_t body_limit = 4u << 20;
  // How long a request may wait for room before it is refused.
  std::chrono::milliseconds max_wait{250};
};

// Why a connection or a body was refused (the label of pimgate_gateway_refusals_total).
enum class BudgetRefusal {
  kMaxConnections,      // over gateway.max_connections, closed at accept (counted by the gateway)
  kClientConnections,   // over max_connections_per_client, closed at accept
  kBufferBudget,        // no room in max_buffered_bytes within max_wait
  kClientBufferBudget,  // no room in the client's share within max_wait
  kEvicted,             // a body behind its sender's pace, closed to make room
};
const char* BudgetRefusalName(BudgetRefusal reason);

class BodyBudget {
 public:
  using Clock = std::chrono::steady_clock;

  // `now` is the clock (tests replace it).
  explicit BodyBudget(BodyBudgetOptions options, std::function<Clock::time_point()> now = {});
  ~BodyBudget();

  std::size_t free_share() const { return free_share_; }
  std::size_t pool() const { return pool_; }
  std::size_t client_pool() const { return client_pool_; }
  const BodyBudgetOptions& options() const { return options_; }

  // ---- connections per client ----

  // Counts a connection from `client`; false (and a kClientConnections refusal) when it already
  // has max_connections_per_client. Every true must be matched by CloseConnection.
  bool OpenConnection(const std::string& client);
  void CloseConnection(const std::string& client);

  // ---- room for bodies ----

  // Room for one body; releases it when destroyed. Move-only.
  class Hold {
   public:
    Hold() = default;
    Hold(Hold&& other) noexcept;
    Hold& operator=(Hold&& other) noexcept;
    ~Hold();
    explicit operator bool() const { return budget_ != nullptr; }
    // The body's bytes received so far (for the pace that decides eviction).
    void Received(std::size_t total);
    // The body is complete: it is being authenticated and stored, and can no longer be evicted.
    void Complete();
    void Release();

   private:
    friend class BodyBudget;
    Hold(BodyBudget* budget, uint64_t id) : budget_(budget), id_(id) {}
    BodyBudget* budget_ = nullptr;
    uint64_t id_ = 0;
  };

  struct Request {
    std::string client;
    // Bytes to reserve: the Content-Length, or the next chunk of a chunked body.
    std::size_t bytes = 0;
    // The sender's own timeout: a body not on pace to arrive within it may be evicted.
    std::chrono::milliseconds sender_timeout{500};
    // Called (at most once, outside the lock) if this body is chosen to make room for another:
    // its connection must be closed, which destroys its Hold.
    std::function<void()> on_evict;
  };
  // The outcome of a request that had to wait: a Hold, or the reason it was refused.
  using Decision = std::function<void(Hold hold, std::optional<BudgetRefusal> refused)>;

  // Reserves room for a new body. Returns the Hold at once when it fits (always for a body of at
  // most free_share() bytes). Otherwise returns an empty Hold and calls `decide` once, with a Hold
  // or a refusal, within max_wait plus the time evictions take. `decide` runs outside the lock on
  // whichever thread made the decision (possibly before Reserve returns): post to your executor.
  Hold Reserve(Request request, Decision decide);

  // Grows `hold` by `more` bytes (the next chunk of a chunked body), by the same rules. True when
  // it grew at once; otherwise `decided` is called later, as for Reserve, with nullopt once it
  // grew or with the refusal. `hold` must stay alive until then (destroying it drops the wait).
  bool Grow(Hold& hold, std::size_t more,
            std::function<void(std::optional<BudgetRefusal> refused)> decided);

  // `client` just sent a request whose signature verified: trust it for kTrustWindow.
  void Trust(const std::string& client);
  bool Trusted(const std::string& client) const;

  // Re-examines waiting requests: evictions whose senders fell behind since, deadlines past.
  // The gateway calls it every few milliseconds while Waiting() > 0.
  void Tick();

  // Drops every waiting request without calling it (their owners go away with the server).
  void Shutdown();

  struct Stats {
    std::size_t buffered_bytes = 0;            // room held by bodies now
    std::size_t waiting = 0;                   // requests waiting for room
    std::map<std::string, uint64_t> refusals;  // by BudgetRefusalName
  };
  Stats stats() const;
  std::size_t Waiting() const;

  // Refusals per client address since the last call, for one log line per client and interval.
  std::map<std::string, std::map<BudgetRefusal, uint64_t>> TakeRefusalsByClient();
  // Counts a refusal decided elsewhere (the gateway's max_connections) under `client`.
  void CountRefusal(const std::string& client, BudgetRefusal reason);

 private:
  struct HoldEntry {
    std::string client;
    std::size_t bytes = 0;   // room held
    std::size_t shared = 0;  // the part of it taken from the pool
    std::size_t received = 0;
    Clock::time_point started;
    Clock::duration sender_timeout{};
    bool complete = false;
    bool evicting = false;
    bool trusted = false;  // its client was trusted when it got the room
    std::function<void()> on_evict;
  };
  struct Waiter {
    std::string client;
    std::size_t bytes = 0;            // room asked (a new body) or added (growth)
    std::optional<uint64_t> grow_id;  // the hold to grow, when growing
    Request request;                  // for a new body
    Clock::time_point deadline;
    bool trusted = false;
    Decision decide;                                          // for a new body
    std::function<void(std::optional<BudgetRefusal>)> grown;  // for growth
  };
  struct ClientState {
    std::size_t connections = 0;
    std::size_t shared = 0;    // pool bytes its holds take, evicting ones included
    std::size_t evicting = 0;  // of which being evicted
  };
  // Work decided under the lock, done after it (callbacks may re-enter the budget, and dropping
  // one may destroy its owner, whose Hold then releases).
  struct Actions {
    std::vector<std::function<void()>> evictions;
    std::vector<std::pair<Decision, Hold>> grants;
    std::vector<std::function<void(std::optional<BudgetRefusal>)>> grown;
    std::vector<std::pair<Waiter, BudgetRefusal>> refusals;
    std::vector<Waiter> dropped;
    void Run();
  };

  std::size_t SharedPart(std::size_t bytes) const {
    return bytes > free_share_ ? bytes - free_share_ : 0;
  }
  // Pool bytes the waiter needs beyond what it holds.
  std::size_t Need(const Waiter& waiter) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  bool Fits(const std::string& client, std::size_t shared) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Hold Admit(const Request& request) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void GrowLocked(uint64_t id, std::size_t more) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Behind the pace that would deliver it within its sender's timeout.
  bool Stale(const HoldEntry& hold, Clock::time_point now) const;
  bool TrustedLocked(const std::string& client, Clock::time_point now) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  void Pass(Actions& actions) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Count(const std::string& client, BudgetRefusal reason) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReleaseHold(uint64_t id);
  void SetReceived(uint64_t id, std::size_t total);
  void SetComplete(uint64_t id);

  const BodyBudgetOptions options_;
  const std::function<Clock::time_point()> now_;
  const std::size_t free_share_;
  const std::size_t pool_;
  const std::size_t client_pool_;

  mutable absl::Mutex mu_;
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  std::unordered_map<uint64_t, HoldEntry> holds_ ABSL_GUARDED_BY(mu_);
  std::unordered_map<std::string, ClientState> clients_ ABSL_GUARDED_BY(mu_);
  std::list<Waiter> waiters_ ABSL_GUARDED_BY(mu_);
  std::size_t buffered_ ABSL_GUARDED_BY(mu_) = 0;   // sum of holds' bytes
  std::size_t pool_used_ ABSL_GUARDED_BY(mu_) = 0;  // sum of holds' shared parts
  std::size_t evicting_ ABSL_GUARDED_BY(mu_) = 0;   // of which being evicted
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  std::map<BudgetRefusal, uint64_t> refusals_ ABSL_GUARDED_BY(mu_);
  // When each trusted client last authenticated (at most kMaxTrustedClients, oldest dropped).
  std::unordered_map<std::string, Clock::time_point> trusted_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::map<BudgetRefusal, uint64_t>> refusals_by_client_ ABSL_GUARDED_BY(mu_);
};

// max_buffered_bytes when the config leaves it out: a quarter of the memory this process may use
// (the cgroup's memory.max, else physical memory), at most 256 MiB, at least 2 x body_limit.
std::size_t DefaultMaxBufferedBytes(std::size_t body_limit);

}  // namespace pimgate

#endif  // PIMGATE_GATEWAY_BODY_BUDGET_H_
