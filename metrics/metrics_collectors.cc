// pimgate's core metric families. Names follow Prometheus conventions: pimgate_ prefix, base
// units (seconds, bytes), _total on counters, one label set per family.
#include "metrics/metrics_collectors.h"

#include <algorithm>
#include <memory>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"

namespace pimgate {
namespace {

constexpr double kMicrosPerSecond = 1e6;

// Process states as PluginStateName spells them, and the dispatcher's delivery states: each
// plugin gets a 0/1 series for every one of them, so a state that is not current reads 0 rather
// than vanishing.
constexpr PluginState kProcessStates[] = {PluginState::kStarting, PluginState::kServing,
                                          PluginState::kBackoff, PluginState::kStopped,
                                          PluginState::kExternal};
// "standby" (cluster dispatch only) shows as an unlisted state: the RocksDB store's output stays
// as it was.
constexpr const char* kDispatchStates[] = {"connecting", "idle",       "streaming",
                                           "paused",     "restarting", "stopped"};

struct PluginView {
  std::string name;
  const PluginStatus* process = nullptr;
  const PluginDispatchStats* dispatch = nullptr;
};

std::vector<PluginView> JoinPlugins(const std::vector<PluginStatus>& processes,
                                    const std::vector<PluginDispatchStats>& dispatch) {
  std::vector<PluginView> views;
  const auto find = [&views](const std::string& name) -> PluginView& {
    for (PluginView& view : views) {
      if (view.name == name) return view;
    }
    return views.emplace_back(PluginView{name});
  };
  for (const PluginStatus& p : processes) find(p.name).process = &p;
  for (const PluginDispatchStats& d : dispatch) find(d.name).dispatch = &d;
  return views;
}

// 1 when the plugin can take deliveries: a launched plugin whose process is SERVING, or an
// external one the dispatcher has a stream to.
bool IsUp(const PluginView& view) {
  if (view.process != nullptr && view.process->state != PluginState::kExternal) {
    return view.process->state == PluginState::kServing;
  }
  return view.dispatch != nullptr && view.dispatch->stream_open;
}

void DispatchCounter(MetricsWriter& out, const std::vector<PluginView>& plugins, const char* name,
                     const char* help, MetricType type, uint64_t PluginDispatchStats::*field) {
  out.Family(name, help, type);
  for (const PluginView& view : plugins) {
    if (view.dispatch != nullptr) out.Sample({{"plugin", view.name}}, view.dispatch->*field);
  }
}

}  // namespace

LogMetricsSnapshot SnapshotLog(EventLog& log) {
  LogMetricsSnapshot snapshot;
  // The oldest event before the head: the head only grows, so oldest <= head holds even if an
  // append or a trim lands in between.
  absl::StatusOr<std::optional<v1::Event>> oldest = log.OldestEvent();
  snapshot.head = log.head();
  if (oldest.ok() && oldest->has_value()) {
    const v1::Event& event = **oldest;
    snapshot.oldest_sequence = event.sequence();
    snapshot.events = snapshot.head >= event.sequence() ? snapshot.head - event.sequence() + 1 : 0;
    if (event.has_received_at()) {
      // Through absl::Time, which saturates: a damaged (or migrated) record's seconds must not
      // overflow the multiplication on every scrape.
      snapshot.oldest_received_at_us =
          absl::ToUnixMicros(absl::FromUnixSeconds(event.received_at().seconds()) +
                             absl::Nanoseconds(event.received_at().nanos()));
    }
  }
  snapshot.disk_bytes = log.DiskBytes();
  snapshot.pending_requests = log.pending();
  return snapshot;
}

void WriteLogMetrics(const LogMetricsSnapshot& log, MetricsWriter& out) {
  out.Family("pimgate_log_head_sequence", "Highest sequence stored in the event log.",
             MetricType::kGauge);
  out.Sample({}, log.head);
  out.Family("pimgate_log_oldest_sequence",
             "Sequence of the oldest event still in the log (absent when the log is empty).",
             MetricType::kGauge);
  if (log.oldest_sequence != 0) out.Sample({}, log.oldest_sequence);
  out.Family("pimgate_log_events", "Events currently in the log (retention removes old ones).",
             MetricType::kGauge);
  out.Sample({}, log.events);
  out.Family("pimgate_log_oldest_event_received_timestamp_seconds",
             "When the oldest event in the log was received, in seconds since the epoch.",
             MetricType::kGauge);
  if (log.oldest_received_at_us.has_value()) {
    out.Sample({}, static_cast<double>(*log.oldest_received_at_us) / kMicrosPerSecond);
  }
  out.Family("pimgate_log_disk_bytes",
             "Bytes the event log occupies on disk (table files and write-ahead log).",
             MetricType::kGauge);
  out.Sample({}, log.disk_bytes);
  out.Family("pimgate_log_pending_requests",
             "Webhook requests waiting for the event log's group commit.", MetricType::kGauge);
  out.Sample({}, log.pending_requests);
}

void WritePluginMetrics(const std::vector<PluginStatus>& processes,
                        const std::vector<PluginDispatchStats>& dispatch, MetricsWriter& out) {
  const std::vector<PluginView> plugins = JoinPlugins(processes, dispatch);
  DispatchCounter(out, plugins, "pimgate_plugin_cursor",
                  "Dispatch cursor: every event with a sequence up to it is done for the plugin.",
                  MetricType::kGauge, &PluginDispatchStats::cursor);
  DispatchCounter(out, plugins, "pimgate_plugin_lag_events",
                  "Events in the log past the plugin's cursor (log head minus cursor).",
                  MetricType::kGauge, &PluginDispatchStats::lag);
  DispatchCounter(out, plugins, "pimgate_plugin_in_flight",
                  "Deliveries sent to the plugin and not yet acknowledged.", MetricType::kGauge,
                  &PluginDispatchStats::in_flight);
  DispatchCounter(out, plugins, "pimgate_plugin_delivered_total",
                  "Events the plugin acknowledged OK.", MetricType::kCounter,
                  &PluginDispatchStats::delivered);
  DispatchCounter(out, plugins, "pimgate_plugin_retried_total",
                  "Redeliveries scheduled (RETRY answers, ack timeouts, broken streams).",
                  MetricType::kCounter, &PluginDispatchStats::retried);
  DispatchCounter(out, plugins, "pimgate_plugin_dead_lettered_total",
                  "Events moved to the plugin's dead letters (rejected or out of attempts).",
                  MetricType::kCounter, &PluginDispatchStats::dead_lettered);
  DispatchCounter(out, plugins, "pimgate_plugin_stream_connects_total",
                  "Delivery streams opened to the plugin.", MetricType::kCounter,
                  &PluginDispatchStats::connects);
  // Hydration (plugins with `hydrate: true`; 0 for the others).
  DispatchCounter(out, plugins, "pimgate_plugin_hydrating",
                  "Events whose resource is being fetched from the PIM before delivery.",
                  MetricType::kGauge, &PluginDispatchStats::hydrating);
  DispatchCounter(out, plugins, "pimgate_plugin_hydration_fetches_total",
                  "Resources fetched from the PIM's REST API to hydrate the plugin's events.",
                  MetricType::kCounter, &PluginDispatchStats::hydration_fetches);
  DispatchCounter(out, plugins, "pimgate_plugin_hydration_cache_hits_total",
                  "Hydrations served without a PIM call (cached, or shared with a fetch in "
                  "progress).",
                  MetricType::kCounter, &PluginDispatchStats::hydration_cache_hits);
  DispatchCounter(out, plugins, "pimgate_plugin_hydration_not_found_total",
                  "Events delivered with data.hydration = \"not_found\" (the PIM no longer has "
                  "the resource).",
                  MetricType::kCounter, &PluginDispatchStats::hydration_not_found);
  DispatchCounter(out, plugins, "pimgate_plugin_hydration_failures_total",
                  "Failed fetches (PIM unreachable, 5xx after retries ...); each is retried like "
                  "a failed delivery.",
                  MetricType::kCounter, &PluginDispatchStats::hydration_failures);

  out.Family("pimgate_plugin_skipped_total",
             "Events not delivered to the plugin, by reason: filter (its filters exclude them) "
             "or stale (a newer version of the resource was already stored).",
             MetricType::kCounter);
  for (const PluginView& view : plugins) {
    if (view.dispatch == nullptr) continue;
    out.Sample({{"plugin", view.name}, {"reason", "filter"}}, view.dispatch->skipped_filter);
    out.Sample({{"plugin", view.name}, {"reason", "stale"}}, view.dispatch->skipped_stale);
  }

  out.Family("pimgate_plugin_restarts_total", "Restarts of the plugin process after it died.",
             MetricType::kCounter);
  for (const PluginView& view : plugins) {
    if (view.process != nullptr) {
      out.Sample({{"plugin", view.name}}, static_cast<uint64_t>(view.process->restarts));
    }
  }

  out.Family("pimgate_plugin_up",
             "1 when the plugin can take deliveries: a launched plugin reports SERVING, or an "
             "external plugin has a delivery stream open.",
             MetricType::kGauge);
  for (const PluginView& view : plugins) {
    out.Sample({{"plugin", view.name}}, uint64_t{IsUp(view) ? 1u : 0u});
  }

  out.Family("pimgate_plugin_state",
             "Plugin process state: 1 for the current state, 0 for the others.",
             MetricType::kGauge);
  for (const PluginView& view : plugins) {
    if (view.process == nullptr) continue;
    for (PluginState state : kProcessStates) {
      out.Sample({{"plugin", view.name}, {"state", PluginStateName(state)}},
                 uint64_t{view.process->state == state ? 1u : 0u});
    }
  }

  out.Family("pimgate_plugin_dispatch_state",
             "Delivery state of the plugin: 1 for the current state, 0 for the others.",
             MetricType::kGauge);
  for (const PluginView& view : plugins) {
    if (view.dispatch == nullptr) continue;
    bool known = false;
    for (const char* state : kDispatchStates) {
      const bool current = view.dispatch->state == state;
      known = known || current;
      out.Sample({{"plugin", view.name}, {"state", state}}, uint64_t{current ? 1u : 0u});
    }
    if (!known && !view.dispatch->state.empty()) {
      out.Sample({{"plugin", view.name}, {"state", view.dispatch->state}}, uint64_t{1});
    }
  }
}

void WriteRetentionMetrics(const RetentionStats& retention, MetricsWriter& out) {
  out.Family("pimgate_retention_runs_total", "Retention passes run.", MetricType::kCounter);
  out.Sample({}, retention.runs);
  out.Family("pimgate_retention_failures_total",
             "Retention passes in which a trim failed (see the log).", MetricType::kCounter);
  out.Sample({}, retention.failures);
  out.Family("pimgate_retention_removed_total",
             "Records removed by retention, by kind: event, dead_letter or quarantine.",
             MetricType::kCounter);
  out.Sample({{"kind", "event"}}, retention.events_trimmed);
  out.Sample({{"kind", "dead_letter"}}, retention.dead_letters_trimmed);
  out.Sample({{"kind", "quarantine"}}, retention.quarantine_trimmed);
  out.Family("pimgate_retention_last_run_timestamp_seconds",
             "When the last retention pass ran, in seconds since the epoch.", MetricType::kGauge);
  if (retention.last_run != absl::InfinitePast()) {
    out.Sample({}, absl::ToDoubleSeconds(retention.last_run - absl::UnixEpoch()));
  }
}

void WriteReconciliationMetrics(const std::vector<ReconcileSourceStats>& sources,
                                MetricsWriter& out) {
  const auto seconds = [](absl::Time time) {
    return absl::ToDoubleSeconds(time - absl::UnixEpoch());
  };
  out.Family("pimgate_reconciliation_runs_total",
             "Reconciliation runs against the PIM, by source and result (success or failure).",
             MetricType::kCounter);
  for (const ReconcileSourceStats& s : sources) {
    out.Sample({{"source", s.source}, {"result", "success"}}, s.runs_succeeded);
    out.Sample({{"source", s.source}, {"result", "failure"}}, s.runs_failed);
  }
  out.Family("pimgate_reconciliation_items_scanned_total",
             "Items (products, product models) the PIM returned to reconciliation runs.",
             MetricType::kCounter);
  for (const ReconcileSourceStats& s : sources) out.Sample({{"source", s.source}}, s.items_scanned);
  out.Family("pimgate_reconciliation_events_emitted_total",
             "Events reconciliation added to the log, by change: updated (an item newer than the "
             "log's version) or deleted (full runs: a resource the PIM no longer has).",
             MetricType::kCounter);
  for (const ReconcileSourceStats& s : sources) {
    out.Sample({{"source", s.source}, {"change", "updated"}}, s.events_emitted);
    out.Sample({{"source", s.source}, {"change", "deleted"}}, s.deletions_emitted);
  }
  out.Family("pimgate_reconciliation_in_sync_total",
             "Items whose version the log already had: nothing was added for them.",
             MetricType::kCounter);
  for (const ReconcileSourceStats& s : sources) out.Sample({{"source", s.source}}, s.in_sync);
  out.Family("pimgate_reconciliation_api_calls_total",
             "REST list calls made by reconciliation runs (token requests not included).",
             MetricType::kCounter);
  for (const ReconcileSourceStats& s : sources) out.Sample({{"source", s.source}}, s.api_calls);
  out.Family("pimgate_reconciliation_running",
             "1 while a reconciliation run of the source is in progress.", MetricType::kGauge);
  for (const ReconcileSourceStats& s : sources) {
    if (s.configured) out.Sample({{"source", s.source}}, uint64_t{s.running ? 1u : 0u});
  }
  out.Family("pimgate_reconciliation_last_run_succeeded",
             "1 when the source's last finished reconciliation run succeeded, 0 when it failed.",
             MetricType::kGauge);
  for (const ReconcileSourceStats& s : sources) {
    if (s.last_run) out.Sample({{"source", s.source}}, uint64_t{s.last_run->status.ok() ? 1u : 0u});
  }
  out.Family("pimgate_reconciliation_last_success_timestamp_seconds",
             "When the source's last successful reconciliation run finished, in seconds since the "
             "epoch.",
             MetricType::kGauge);
  for (const ReconcileSourceStats& s : sources) {
    if (s.last_success) out.Sample({{"source", s.source}}, seconds(*s.last_success));
  }
  out.Family("pimgate_reconciliation_last_run_duration_seconds",
             "How long the source's last finished reconciliation run took.", MetricType::kGauge);
  for (const ReconcileSourceStats& s : sources) {
    if (s.last_run) {
      out.Sample({{"source", s.source}}, absl::ToDoubleSeconds(s.last_run->duration()));
    }
  }
  out.Family("pimgate_reconciliation_watermark_timestamp_seconds",
             "The source's persisted reconciliation watermark (items updated up to it are "
             "reconciled), in seconds since the epoch.",
             MetricType::kGauge);
  for (const ReconcileSourceStats& s : sources) {
    if (s.watermark_us) {
      out.Sample({{"source", s.source}}, static_cast<double>(*s.watermark_us) / kMicrosPerSecond);
    }
  }
  out.Family("pimgate_reconciliation_kind_watermark_timestamp_seconds",
             "The persisted reconciliation watermark of each kind a source reconciles besides "
             "products and product models (families, ..., reference entity records, assets), in "
             "seconds since the epoch.",
             MetricType::kGauge);
  for (const ReconcileSourceStats& s : sources) {
    for (const auto& [kind, watermark_us] : s.kind_watermarks_us) {
      out.Sample({{"source", s.source}, {"kind", kind}},
                 static_cast<double>(watermark_us) / kMicrosPerSecond);
    }
  }
}

std::string PluginReadiness::Check(const std::vector<PluginStatus>& processes) {
  absl::MutexLock lock(&mu_);
  std::vector<std::string> waiting;
  for (const PluginStatus& p : processes) {
    if (p.state == PluginState::kExternal) continue;  // not launched: nothing to wait for
    const bool served = std::find(served_.begin(), served_.end(), p.name) != served_.end();
    if (p.state == PluginState::kServing) {
      if (!served) served_.push_back(p.name);
      continue;
    }
    if (served) continue;
    std::string what = absl::StrCat(p.name, " (", PluginStateName(p.state));
    if (!p.last_error.empty()) absl::StrAppend(&what, ": ", p.last_error);
    waiting.push_back(what + ")");
  }
  if (waiting.empty()) return "";
  return absl::StrCat("plugin(s) not yet SERVING since start: ", absl::StrJoin(waiting, ", "));
}

void DeclareStartupReadiness(MetricsRegistry& registry) {
  registry.SetReadinessCheck(kLogComponent, [] { return std::string("event log not open yet"); });
  registry.SetReadinessCheck(kPluginsComponent,
                             [] { return std::string("plugins not started yet"); });
  registry.SetReadinessCheck(kGatewayComponent,
                             [] { return std::string("gateway not listening yet"); });
}

void RegisterLogMetrics(MetricsRegistry& registry, EventLog* log) {
  registry.SetCollector(kLogComponent,
                        [log](MetricsWriter& out) { WriteLogMetrics(SnapshotLog(*log), out); });
  // A shared store (JetStream) can lose its connection; the embedded one is always ready.
  registry.SetReadinessCheck(kLogComponent, [log] {
    const absl::Status health = log->Health();
    return health.ok() ? std::string() : "event log: " + std::string(health.message());
  });
}

void WriteLeaseMetrics(const LeaseStats& leases, MetricsWriter& out) {
  out.Family("pimgate_cluster_leases_held",
             "(plugin, partition) leases this node holds now: the partitions it delivers "
             "(cluster dispatch, store.backend: jetstream).",
             MetricType::kGauge);
  out.Sample({}, leases.held);
  out.Family("pimgate_cluster_leases_acquired_total",
             "Partition leases this node took since it started.", MetricType::kCounter);
  out.Sample({}, leases.acquired);
  out.Family("pimgate_cluster_leases_lost_total",
             "Partition leases this node lost since it started: not renewed before their local "
             "deadline (NATS unreachable or too slow), so it stopped delivering them.",
             MetricType::kCounter);
  out.Sample({}, leases.lost);
  out.Family("pimgate_cluster_leases_released_total",
             "Partition leases this node gave back since it started (balance, shutdown).",
             MetricType::kCounter);
  out.Sample({}, leases.released);
}

void RegisterPluginMetrics(MetricsRegistry& registry, const PluginSupervisor* supervisor,
                           const Dispatcher* dispatcher) {
  registry.SetCollector(kPluginsComponent, [supervisor, dispatcher](MetricsWriter& out) {
    WritePluginMetrics(supervisor->Status(), dispatcher->Stats(), out);
    if (dispatcher->NodeId().has_value()) WriteLeaseMetrics(dispatcher->Leases(), out);
  });
  auto readiness = std::make_shared<PluginReadiness>();
  registry.SetReadinessCheck(kPluginsComponent, [supervisor, readiness] {
    return readiness->Check(supervisor->Status());
  });
}

void RegisterRetentionMetrics(MetricsRegistry& registry, const RetentionTask* retention) {
  registry.SetCollector(kRetentionComponent, [retention](MetricsWriter& out) {
    WriteRetentionMetrics(retention->stats(), out);
  });
}

void WritePlatformSubscriptionMetrics(const std::vector<SubscriptionStatus>& subscriptions,
                                      MetricsWriter& out) {
  out.Family("pimgate_platform_subscription_state",
             "Event Platform subscriptions as their notification webhooks last reported them: 1 "
             "for the current state (active, suspended, revoked), 0 for the others. A suspended "
             "or revoked subscription delivers no event.",
             MetricType::kGauge);
  for (const SubscriptionStatus& s : subscriptions) {
    for (SubscriptionState state : kSubscriptionStates) {
      out.Sample({{"source", s.source},
                  {"subscription", s.subscription_id},
                  {"state", SubscriptionStateName(state)}},
                 uint64_t{s.state == state ? 1u : 0u});
    }
  }
  out.Family("pimgate_platform_subscription_state_changed_timestamp_seconds",
             "When the notification that set the subscription's current state was built by the "
             "platform (its `timestamp`), in seconds since the epoch.",
             MetricType::kGauge);
  for (const SubscriptionStatus& s : subscriptions) {
    out.Sample({{"source", s.source}, {"subscription", s.subscription_id}},
               absl::ToDoubleSeconds(s.changed_at - absl::UnixEpoch()));
  }
}

void RegisterPlatformSubscriptionMetrics(MetricsRegistry& registry,
                                         const PlatformSubscriptions* subscriptions) {
  registry.SetCollector(kPlatformSubscriptionsComponent, [subscriptions](MetricsWriter& out) {
    WritePlatformSubscriptionMetrics(subscriptions->Snapshot(), out);
  });
}

void RegisterReconciliationMetrics(MetricsRegistry& registry, const Reconciler* reconciler) {
  registry.SetCollector(kReconciliationComponent, [reconciler](MetricsWriter& out) {
    WriteReconciliationMetrics(reconciler->Stats(), out);
  });
}

}  // namespace pimgate
