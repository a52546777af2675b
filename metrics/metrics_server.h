// MetricsServer: the plain-HTTP endpoint Prometheus and orchestrators probe. GET /metrics
// renders a MetricsRegistry (text format 0.0.4), GET /healthz answers 200 while the process
// runs, GET /readyz answers 200 when every readiness check passes and 503 with a JSON reason per
// failing component otherwise; anything else gets 404 (405 for another method on those paths).
#ifndef PIMGATE_METRICS_METRICS_SERVER_H_
#define PIMGATE_METRICS_METRICS_SERVER_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/net_address.h"
#include "metrics/metrics.h"

namespace pimgate {

// Every limit of the endpoint. It serves a scraper and a few probes, so they are tight.
struct MetricsServerOptions {
  // metrics.listen (a host:port, not a unix socket); port 0 picks a free port.
  ListenAddress listen = ListenAddress::Ipv4({127, 0, 0, 1}, 9464);
  // Request header bytes; requests carry no body (one with a body is refused).
  std::size_t header_limit = 8 * 1024;
  // Time to receive a request once the connection is open or idle, and to write an answer.
  std::chrono::milliseconds read_timeout{10'000};
  std::chrono::milliseconds write_timeout{10'000};
  // Open connections beyond this are closed at accept.
  std::size_t max_connections = 32;
  // Readiness checks also run this often between probes, so a check that latches a transient
  // state (a plugin that has served once) sees it even when nobody probes.
  std::chrono::milliseconds readiness_refresh{200};
};

// Owns one I/O thread; rendering runs on it (a scrape reads a few counters and RocksDB
// properties), so a slow scrape delays only other scrapes, never ingest. The registry must
// outlive the server. Thread-safe.
class MetricsServer {
 public:
  // Binds and starts serving; Unavailable when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(MetricsServerOptions options,
                                                              const MetricsRegistry* registry);
  ~MetricsServer();  // Stop()

  // Stops accepting, closes every connection and joins the thread. Idempotent.
  void Stop();
  uint16_t port() const;

  class Impl;

 private:
  explicit MetricsServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace pimgate

#endif  // PIMGATE_METRICS_METRICS_SERVER_H_
