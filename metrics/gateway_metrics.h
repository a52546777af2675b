// The gateway's metric families (ingest requests, latency, events per source, connections),
// rendered from Gateway::stats(). Lives outside gateway/ and core/ so that core's registry never
// depends on the gateway and the gateway never depends on the metrics endpoint.
#ifndef PIMGATE_METRICS_GATEWAY_METRICS_H_
#define PIMGATE_METRICS_GATEWAY_METRICS_H_

#include "gateway/server.h"
#include "metrics/metrics.h"

namespace pimgate {

// pimgate_ingest_*, pimgate_events_* and pimgate_gateway_*.
void WriteGatewayMetrics(const GatewayStats& stats, MetricsWriter& out);

// Registers `gateway` (started, listening) under kGatewayComponent and marks it ready. The
// gateway must stay alive until registry.Remove(kGatewayComponent) or until nothing renders the
// registry any more.
void RegisterGatewayMetrics(MetricsRegistry& registry, const Gateway* gateway);

}  // namespace pimgate

#endif  // PIMGATE_METRICS_GATEWAY_METRICS_H_
