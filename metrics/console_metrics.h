// The web console's metric families (API calls, files served, connections), rendered from
// ConsoleServer::stats(). Here rather than in console/, like the gateway's, so that the console
// never depends on the metrics endpoint.
#ifndef PIMGATE_METRICS_CONSOLE_METRICS_H_
#define PIMGATE_METRICS_CONSOLE_METRICS_H_

#include "console/console_server.h"
#include "metrics/metrics.h"

namespace pimgate {

inline constexpr char kConsoleComponent[] = "console";

// pimgate_console_*.
void WriteConsoleMetrics(const ConsoleServer::Stats& stats, MetricsWriter& out);

// Registers `console` (started) under kConsoleComponent. No readiness check: the console is not
// what makes pimgate ready. The server must stay alive until registry.Remove(kConsoleComponent)
// or until nothing renders the registry any more.
void RegisterConsoleMetrics(MetricsRegistry& registry, const ConsoleServer* console);

}  // namespace pimgate

#endif  // PIMGATE_METRICS_CONSOLE_METRICS_H_
