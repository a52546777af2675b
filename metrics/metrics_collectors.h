// pimgate's core metric families (event log, plugins and their delivery, retention,
// reconciliation) and the helpers that register live core components with a MetricsRegistry.
// The gateway's families are in metrics/gateway_metrics.h: core does not depend on the gateway.
//
// Every family is written even when it has no sample yet, so dashboards and alert rules see the
// metric exists from the first scrape.
#ifndef PIMGATE_METRICS_METRICS_COLLECTORS_H_
#define PIMGATE_METRICS_METRICS_COLLECTORS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/dispatch/dispatcher.h"
#include "core/dispatch/plugin_supervisor.h"
#include "core/log/event_log.h"
#include "core/log/retention.h"
#include "metrics/metrics.h"
#include "pim/platform_subscriptions.h"
#include "pim/reconciler.h"

namespace pimgate {

// The event log at one instant.
struct LogMetricsSnapshot {
  uint64_t head = 0;             // highest sequence stored (0: never stored anything)
  uint64_t oldest_sequence = 0;  // 0 when the log holds no event
  uint64_t events = 0;           // events in the log: sequences are contiguous from the oldest
  std::optional<int64_t> oldest_received_at_us;
  uint64_t disk_bytes = 0;
  uint64_t pending_requests = 0;  // appends waiting for the group commit
};

// Reads the log's head, its oldest event and its disk use. A failed read of the
// oldest event leaves the oldest_* fields and `events` at their defaults.
LogMetricsSnapshot SnapshotLog(EventLog& log);

// pimgate_log_*.
void WriteLogMetrics(const LogMetricsSnapshot& log, MetricsWriter& out);
// pimgate_plugin_*: one series per plugin named in either list (supervisor first).
// Cluster dispatch: this node's partition leases (pimgate_cluster_leases_*).
void WriteLeaseMetrics(const LeaseStats& leases, MetricsWriter& out);
void WritePluginMetrics(const std::vector<PluginStatus>& processes,
                        const std::vector<PluginDispatchStats>& dispatch, MetricsWriter& out);
// pimgate_retention_*.
void WriteRetentionMetrics(const RetentionStats& retention, MetricsWriter& out);
// pimgate_reconciliation_*: counters for every source (zero for a source without `rest`), gauges
// once they have a value (last success, last duration, watermark).
void WriteReconciliationMetrics(const std::vector<ReconcileSourceStats>& sources,
                                MetricsWriter& out);
// pimgate_platform_subscription_*: one series per Event Platform subscription a notification
// webhook told about. The state is a state set (Prometheus' idiom for an enum): one sample per
// state, 1 for the current one and 0 for the others, so an alert is
// `pimgate_platform_subscription_state{state="suspended"} == 1` and a dashboard can count them.
void WritePlatformSubscriptionMetrics(const std::vector<SubscriptionStatus>& subscriptions,
                                      MetricsWriter& out);

// Remembers which launched plugins have reported SERVING at least once. Readiness waits for each
// launched plugin to serve once, not to serve now: a plugin that crashes later is restarted by
// the supervisor while its events wait in the log, so pimgate can still take webhooks.
// Thread-safe.
class PluginReadiness {
 public:
  // Latches the SERVING ones of `processes`; returns "" when every launched plugin has served
  // once, else a reason naming the others and their state.
  std::string Check(const std::vector<PluginStatus>& processes);

 private:
  absl::Mutex mu_;
  std::vector<std::string> served_ ABSL_GUARDED_BY(mu_);
};

// Component names in the registry.
inline constexpr char kLogComponent[] = "log";
inline constexpr char kPluginsComponent[] = "plugins";
inline constexpr char kGatewayComponent[] = "gateway";
inline constexpr char kRetentionComponent[] = "retention";
inline constexpr char kReconciliationComponent[] = "reconciliation";
inline constexpr char kPlatformSubscriptionsComponent[] = "platform_subscriptions";

// Readiness placeholders for the components that are not up yet at startup (log, plugins,
// gateway): /readyz answers 503 naming them until each is registered.
void DeclareStartupReadiness(MetricsRegistry& registry);
// Each registers the component's collector and, for log and plugins, marks it ready (log) or
// installs its readiness check (plugins). The component must stay alive until
// registry.Remove(<component name>) or until nothing renders the registry any more.
void RegisterLogMetrics(MetricsRegistry& registry, EventLog* log);
void RegisterPluginMetrics(MetricsRegistry& registry, const PluginSupervisor* supervisor,
                           const Dispatcher* dispatcher);
void RegisterRetentionMetrics(MetricsRegistry& registry, const RetentionTask* retention);
void RegisterReconciliationMetrics(MetricsRegistry& registry, const Reconciler* reconciler);
void RegisterPlatformSubscriptionMetrics(MetricsRegistry& registry,
                                         const PlatformSubscriptions* subscriptions);

}  // namespace pimgate

#endif  // PIMGATE_METRICS_METRICS_COLLECTORS_H_
