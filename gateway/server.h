// Gateway: the HTTPS server Akeneo posts webhooks to. Verifies each request's signature before
// parsing it, turns it into Events, and answers 200 only once the EventLog has stored them.
#ifndef PIMGATE_GATEWAY_SERVER_H_
#define PIMGATE_GATEWAY_SERVER_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/histogram.h"
#include "config/config.h"
#include "core/log/event_log.h"
#include "events/subscription_notice.h"

namespace pimgate {

// Counters for one source, updated by the gateway's I/O threads (relaxed atomics).
struct SourceCounters {
  std::atomic<uint64_t> events_accepted{0};
  std::atomic<uint64_t> duplicates{0};
  std::atomic<uint64_t> stale{0};
  std::atomic<uint64_t> quarantined{0};
};

// A point-in-time copy of the gateway's counters.
struct GatewayStats {
  struct Source {
    std::string name;
    std::map<int, uint64_t> requests_by_code;
    uint64_t events_accepted = 0;
    uint64_t duplicates = 0;
    uint64_t stale = 0;
    uint64_t quarantined = 0;
    // From the request's header being received to its answer being written (requests that
    // matched this source's path and were answered; timeouts have no answer and are not here).
    HistogramSnapshot latency;
  };
  std::vector<Source> sources;
  // Requests that matched no source (404) or came before routing (bad HTTP, 413, 431, ...).
  std::map<int, uint64_t> unrouted_by_code;
  uint64_t connections_open = 0;
  uint64_t connections_refused = 0;
  // The body budget (gateway/body_budget.h): room held now by request bodies not yet
  // authenticated, its limit, requests waiting for room, and refusals by reason
  // (max_connections, client_connections, buffer_budget, client_buffer_budget, evicted).
  uint64_t buffered_bytes = 0;
  uint64_t max_buffered_bytes = 0;
  uint64_t body_waits = 0;
  std::map<std::string, uint64_t> refusals;
};

// What the gateway tells the rest of pimgate, without depending on it. Every callback runs on a
// gateway I/O thread: it must be quick and must not block (queue the work elsewhere).
struct GatewayHooks {
  // An Event Platform notification webhook was verified and newly stored (not a duplicate).
  // `notice.source` is the source whose `path` the notification's `destination` names, else the
  // source that received it.
  std::function<void(const SubscriptionNotice& notice)> on_subscription_notice;
};

// Owns its I/O threads. Start() binds and serves; Stop() (or the destructor) stops accepting,
// waits for requests whose events are being written, then closes everything. The EventLog must
// outlive the Gateway. Thread-safe: stats() may be called from any thread.
class Gateway {
 public:
  // Validates the TLS material and builds the routing table. Does not bind.
  static absl::StatusOr<std::unique_ptr<Gateway>> Create(const Config& config, EventLog* log,
                                                         GatewayHooks hooks = {});
  ~Gateway();

  // Binds gateway.listen (port 0 picks a free port) and starts serving.
  absl::Status Start();
  void Stop();

  // The bound port, valid after Start().
  uint16_t port() const;
  bool tls() const;
  GatewayStats stats() const;

  class Impl;

 private:
  explicit Gateway(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace pimgate

#endif  // PIMGATE_GATEWAY_SERVER_H_
