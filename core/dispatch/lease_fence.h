// The local end of a cluster dispatch lease (see LeaseFence).
#ifndef PIMGATE_CORE_DISPATCH_LEASE_FENCE_H_
#define PIMGATE_CORE_DISPATCH_LEASE_FENCE_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <limits>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace pimgate {

// The local end of a cluster dispatch lease: the (monotonic) moment past which this node must
// not hand over another event of the partition, nor write its cursor. Shared by the lease
// manager (Dispatcher::Cluster), which moves it on each successful renewal, and the partition's
// PluginDispatcher, which checks it before each send and each progress write.
//
// Fencing argument. A renewal (or the acquisition) that succeeds was sent at local time t0; the
// servers stamped it on receipt, at or after t0, so the lease cannot expire, and no other node
// can take the partition, before t0 + lease_ttl. The deadline is t0 + 3/4 lease_ttl. Past it the
// scheduler sends nothing, cancels its delivery stream and writes no cursor; events are handed
// to the plugin (a local process) only before it. So a node that stops renewing (partitioned
// from NATS, paused, overloaded) stops delivering a quarter of the TTL before anyone else can
// start, and the two never deliver one partition at the same time, as long as the local clock
// and the servers' do not drift apart by a quarter of the TTL within one TTL, and a hand-over
// to the plugin does not take that long. A renewal answered with an error or not at all does
// not move the deadline. A cursor write sent before the deadline but held up in the network
// past the takeover can still land after the new owner's; it carries a cursor this node's
// plugin really acknowledged, so it only makes the cursor jump to events that were delivered
// or go back (redelivery), except that it can undo a seek an operator made in between.
class LeaseFence {
 public:
  using Clock = std::chrono::steady_clock;

  bool Valid() const { return Ticks(Clock::now()) < deadline_.load(); }
  void ExtendTo(Clock::time_point deadline) { deadline_.store(Ticks(deadline)); }
  void Revoke() { deadline_.store(kRevoked); }
  // The deadline as an absl::Time (for the scheduler's wake-up); now once it has passed or the
  // fence is revoked (never by subtracting from kRevoked, which would overflow).
  absl::Time Deadline() const {
    const int64_t deadline = deadline_.load();
    const int64_t now = Ticks(Clock::now());
    return absl::Now() + absl::Nanoseconds(deadline > now ? deadline - now : 0);
  }

 private:
  static constexpr int64_t kRevoked = std::numeric_limits<int64_t>::min();
  static int64_t Ticks(Clock::time_point at) {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(at.time_since_epoch()).count();
  }

  std::atomic<int64_t> deadline_{kRevoked};
};

}  // namespace pimgate

#endif  // PIMGATE_CORE_DISPATCH_LEASE_FENCE_H_
