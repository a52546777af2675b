// The console's families, from ConsoleServer::Stats.
#include "metrics/console_metrics.h"

namespace pimgate {

void WriteConsoleMetrics(const ConsoleServer::Stats& stats, MetricsWriter& out) {
  out.Family("pimgate_console_api_calls_total",
             "Console API requests forwarded to the admin API (answered with its status).",
             MetricType::kCounter);
  out.Sample({}, stats.api_calls);
  out.Family("pimgate_console_api_refused_total",
             "Console API requests refused before any admin call (wrong method, unknown method, "
             "wrong Content-Type, Host).",
             MetricType::kCounter);
  out.Sample({}, stats.api_refused);
  out.Family("pimgate_console_file_requests_total", "GET and HEAD requests of console files.",
             MetricType::kCounter);
  out.Sample({}, stats.static_requests);
  out.Family("pimgate_console_connections_open", "Console connections currently open.",
             MetricType::kGauge);
  out.Sample({}, uint64_t{stats.connections_open});
  out.Family("pimgate_console_connections_refused_total",
             "Console connections closed at accept because its connection limit was reached.",
             MetricType::kCounter);
  out.Sample({}, stats.connections_refused);
}

void RegisterConsoleMetrics(MetricsRegistry& registry, const ConsoleServer* console) {
  registry.SetCollector(kConsoleComponent, [console](MetricsWriter& out) {
    WriteConsoleMetrics(console->stats(), out);
  });
}

}  // namespace pimgate
