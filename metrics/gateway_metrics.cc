// The gateway's metric families.
#include "metrics/gateway_metrics.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "metrics/metrics_collectors.h"

namespace pimgate {
namespace {

using CountFn = uint64_t GatewayStats::Source::*;

void PerSource(MetricsWriter& out, const GatewayStats& stats, const char* name, const char* help,
               CountFn field) {
  out.Family(name, help, MetricType::kCounter);
  for (const GatewayStats::Source& source : stats.sources) {
    out.Sample({{"source", source.name}}, source.*field);
  }
}

}  // namespace

void WriteGatewayMetrics(const GatewayStats& stats, MetricsWriter& out) {
  out.Family("pimgate_ingest_requests_total",
             "Webhook requests answered, by source and HTTP status code (408: timed out, "
             "connection closed without an answer).",
             MetricType::kCounter);
  for (const GatewayStats::Source& source : stats.sources) {
    for (const auto& [code, count] : source.requests_by_code) {
      out.Sample({{"source", source.name}, {"code", absl::StrCat(code)}}, count);
    }
  }
  out.Family("pimgate_ingest_unrouted_requests_total",
             "Requests that matched no source (unknown path) or failed before routing (bad "
             "HTTP, headers too large, header timeout), by HTTP status code.",
             MetricType::kCounter);
  for (const auto& [code, count] : stats.unrouted_by_code) {
    out.Sample({{"code", absl::StrCat(code)}}, count);
  }
  out.Family("pimgate_ingest_request_duration_seconds",
             "Time from a webhook request's header being received to its answer being written "
             "(the events are in the log, fsynced with store.sync, when a 200 is written).",
             MetricType::kHistogram);
  for (const GatewayStats::Source& source : stats.sources) {
    out.Histogram({{"source", source.name}}, source.latency);
  }
  PerSource(out, stats, "pimgate_events_accepted_total",
            "Events newly stored in the log (stale ones included).",
            &GatewayStats::Source::events_accepted);
  PerSource(out, stats, "pimgate_events_duplicate_total",
            "Events already in the log (same source and event id), answered but not stored again.",
            &GatewayStats::Source::duplicates);
  PerSource(out, stats, "pimgate_events_stale_total",
            "Events stored as stale: a newer version of the resource was already in the log.",
            &GatewayStats::Source::stale);
  PerSource(out, stats, "pimgate_events_quarantined_total",
            "Invalid elements of legacy batches, kept verbatim in quarantine.",
            &GatewayStats::Source::quarantined);
  out.Family("pimgate_gateway_connections_open", "Webhook connections currently open.",
             MetricType::kGauge);
  out.Sample({}, stats.connections_open);
  out.Family("pimgate_gateway_connections_refused_total",
             "Connections closed at accept because gateway.max_connections were open.",
             MetricType::kCounter);
  out.Sample({}, stats.connections_refused);
  out.Family("pimgate_gateway_buffered_bytes",
             "Room held now by webhook request bodies not yet authenticated (reserved from "
             "Content-Length, or as chunked bodies grow).",
             MetricType::kGauge);
  out.Sample({}, stats.buffered_bytes);
  out.Family("pimgate_gateway_max_buffered_bytes",
             "The limit of pimgate_gateway_buffered_bytes (gateway.max_buffered_bytes).",
             MetricType::kGauge);
  out.Sample({}, stats.max_buffered_bytes);
  out.Family("pimgate_gateway_body_waits",
             "Requests waiting for room in the body budget, their body not yet read.",
             MetricType::kGauge);
  out.Sample({}, stats.body_waits);
  out.Family("pimgate_gateway_refusals_total",
             "Connections and request bodies refused to bound memory, by reason: max_connections "
             "and client_connections (closed at accept), buffer_budget and client_buffer_budget "
             "(no room within gateway.buffer_wait: 503, or 429 for the Event Platform, body "
             "unread), evicted (a body behind its sender's timeout, closed to make room).",
             MetricType::kCounter);
  for (const char* reason : {"max_connections", "client_connections", "buffer_budget",
                             "client_buffer_budget", "evicted"}) {
    auto it = stats.refusals.find(reason);
    out.Sample({{"reason", reason}}, it == stats.refusals.end() ? uint64_t{0} : it->second);
  }
}

void RegisterGatewayMetrics(MetricsRegistry& registry, const Gateway* gateway) {
  registry.SetCollector(kGatewayComponent, [gateway](MetricsWriter& out) {
    WriteGatewayMetrics(gateway->stats(), out);
  });
  registry.SetReadinessCheck(kGatewayComponent, [] { return std::string(); });
}

}  // namespace pimgate
