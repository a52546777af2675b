// pimgate server entry point: loads the configuration, opens the event log, serves webhooks.
#include <unistd.h>

#include <cctype>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "admin/admin_server.h"
#include "app/command_line.h"
#include "app/event_platform.h"
#include "common/json.h"
#include "common/logging.h"
#include "config/config.h"
#include "console/assets.h"
#include "console/console_server.h"
#include "core/dispatch/dispatcher.h"
#include "core/dispatch/plugin_supervisor.h"
#include "core/log/event_log.h"
#include "core/log/jetstream_backend.h"
#include "core/log/migrate_store.h"
#include "core/log/retention.h"
#include "gateway/server.h"
#include "metrics/console_metrics.h"
#include "metrics/gateway_metrics.h"
#include "metrics/metrics.h"
#include "metrics/metrics_collectors.h"
#include "metrics/metrics_server.h"
#include "pim/akeneo_client.h"
#include "pim/hydrator.h"
#include "pim/platform_subscriptions.h"
#include "pim/reconciler.h"
#include "spdlog/spdlog.h"

namespace {

// Starts the admin API. Like metrics, it is not worth refusing webhooks over: when it cannot
// listen, pimgate says so loudly and serves on without it.
std::unique_ptr<pimgate::AdminServer> StartAdminServer(const pimgate::AdminConfig& config,
                                                       pimgate::AdminDependencies deps) {
  if (!config.enabled) {
    spdlog::info("admin.enabled is false: no admin API (pimgatectl cannot reach this pimgate)");
    return nullptr;
  }
  auto server = pimgate::AdminServer::Start(config, deps);
  if (!server.ok()) {
    spdlog::error("{}: serving webhooks WITHOUT the admin API",
                  std::string(server.status().message()));
    return nullptr;
  }
  spdlog::info("admin API on {} ({}, {})", (*server)->target(),
               (*server)->tls() ? "TLS" : "plaintext",
               config.token ? "token from " + config.token->Describe() : std::string("no token"));
  if (config.allow_insecure_remote && (!config.token || !config.tls)) {
    spdlog::warn(
        "admin.allow_insecure_remote: the admin API on {} may be reachable from other "
        "machines {}",
        config.listen.text(), !config.token ? "WITHOUT a token" : "WITHOUT TLS");
  }
  return *std::move(server);
}

// Serves the web console (the admin API as HTTP/JSON, and the console's files), or returns null
// when it is disabled, when the admin API it forwards to is not running, or when the address
// cannot be bound. Not fatal, like the admin API itself.
std::unique_ptr<pimgate::ConsoleServer> StartConsoleServer(const pimgate::Config& config,
                                                           pimgate::AdminServer* admin) {
  if (!config.console.enabled) {
    spdlog::info("console.enabled is false: no web console");
    return nullptr;
  }
  if (admin == nullptr) {
    spdlog::error("console: the admin API is not running: serving webhooks WITHOUT the console");
    return nullptr;
  }
  pimgate::ConsoleServerOptions options;
  options.listen = config.console.listen;
  // Without a token, the Host check is what keeps other web pages (DNS rebinding) out.
  options.require_loopback_host = !config.admin.token.has_value();
  auto server =
      pimgate::ConsoleServer::Start(options, admin->InProcessChannel(), pimgate::ConsoleAssets());
  if (!server.ok()) {
    spdlog::error("{}: serving webhooks WITHOUT the console",
                  std::string(server.status().message()));
    return nullptr;
  }
  spdlog::info("console on {} port {} (plain HTTP, {}): GET /, POST /api/v1/<Method>",
               config.console.listen.text(), (*server)->port(),
               config.admin.token ? "admin token required" : "no token: loopback Host only");
  return *std::move(server);
}

// What a resumed Event Platform subscription triggers: a reconciliation run of its source, on
// the PlatformSubscriptions thread (Reconciler::Run blocks until the run ends). The gateway only
// reports the notification; this is the one place that ties it to the reconciler.
pimgate::PlatformSubscriptions::ResumedAction ReconcileOnResume(
    const std::vector<pimgate::SourceConfig>& sources, pimgate::Reconciler* reconciler) {
  std::map<std::string, bool> has_rest;
  for (const pimgate::SourceConfig& source : sources)
    has_rest[source.name] = source.rest.has_value();
  return [has_rest = std::move(has_rest), reconciler](const std::string& source,
                                                      const std::string& subscription) {
    if (auto it = has_rest.find(source); it == has_rest.end() || !it->second) {
      spdlog::warn(
          "source {}: subscription {} resumed, but no reconciliation can run: the source has no "
          "`rest` (the PIM's REST API). Changes made while it was suspended are not recovered; "
          "configure sources[].rest to have them reconciled",
          source, subscription);
      return;
    }
    spdlog::info("source {}: reconciling now, subscription {} resumed", source, subscription);
    absl::StatusOr<pimgate::ReconcileRunStats> run = reconciler->Run(source);
    if (run.ok()) {
      spdlog::info(
          "source {}: reconciliation after the resume of {} done: {} item(s) scanned, {} "
          "event(s) added",
          source, subscription, run->scanned, run->emitted);
    } else if (run.status().code() != absl::StatusCode::kCancelled) {
      spdlog::error("source {}: reconciliation after the resume of {} failed: {}", source,
                    subscription, std::string(run.status().message()));
    }
  };
}

// Everything Serve would refuse, plus what would only fail later at run time: each launched
// plugin's program and script must exist (a plugin that cannot start would be retried forever).
int CheckConfig(const std::string& path) {
  pimgate::LoadOptions options;
  options.check_plugin_commands = true;
  absl::StatusOr<pimgate::Config> config = pimgate::LoadConfigFile(path, options);
  if (!config.ok()) {
    std::fprintf(stderr, "%s: %s\n", path.c_str(), std::string(config.status().message()).c_str());
    return 2;
  }
  std::string store = config->store.path;
  if (config->store.backend == pimgate::StoreBackend::kJetStream) {
    // The cluster must answer with the configured credentials and TLS, and the stream and
    // buckets must exist as configured or be creatable.
    const pimgate::JetStreamConfig& jetstream = *config->store.jetstream;
    if (absl::Status status = pimgate::CheckJetStreamCluster(jetstream); !status.ok()) {
      std::fprintf(stderr, "%s: store.jetstream: %s\n", path.c_str(),
                   std::string(status.message()).c_str());
      return 2;
    }
    store = "JetStream stream " + jetstream.stream + " (replicas " +
            std::to_string(jetstream.replicas) + "), replica " + config->store.path;
  }
  std::printf("%s: OK (%zu source(s), %zu plugin(s), store %s, %s)\n", path.c_str(),
              config->sources.size(), config->plugins.size(), store.c_str(),
              config->gateway.tls ? "TLS" : "plain HTTP");
  return 0;
}

// pimgate migrate-store: copies the embedded store at `source_path` into the JetStream stream
// the configuration at `path` names. Progress and the final counts on stdout.
int MigrateStore(const std::string& source_path, const std::string& path, bool resume,
                 std::size_t batch_events) {
  absl::StatusOr<pimgate::Config> config = pimgate::LoadConfigFile(path, pimgate::LoadOptions());
  if (!config.ok()) {
    std::fprintf(stderr, "%s: %s\n", path.c_str(), std::string(config.status().message()).c_str());
    return 2;
  }
  if (config->store.backend != pimgate::StoreBackend::kJetStream) {
    std::fprintf(stderr,
                 "%s: store.backend is not jetstream: migrate-store copies into the JetStream "
                 "stream this configuration names\n",
                 path.c_str());
    return 2;
  }
  spdlog::set_level(spdlog::level::warn);  // the copy's own lines are its progress
  pimgate::MigrateStoreOptions options;
  options.rocksdb_path = source_path;
  options.target = config->store;
  options.resume = resume;
  options.batch_events = batch_events;
  options.progress = [](const std::string& line) {
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
  };
  absl::StatusOr<pimgate::MigrateStoreCounts> counts = pimgate::MigrateRocksDbToJetStream(options);
  if (!counts.ok()) {
    std::fprintf(stderr, "pimgate migrate-store: %s\n",
                 std::string(counts.status().message()).c_str());
    return 1;
  }
  return 0;
}

// Serves /metrics, /healthz and /readyz, or returns null when metrics are disabled or the address
// cannot be bound. Not fatal: ingest must not stop because a monitoring port is taken.
std::unique_ptr<pimgate::MetricsServer> StartMetricsServer(
    const pimgate::MetricsConfig& config, const pimgate::MetricsRegistry* registry) {
  if (!config.enabled) {
    spdlog::info("metrics.enabled is false: no /metrics, /healthz or /readyz");
    return nullptr;
  }
  pimgate::MetricsServerOptions options;
  options.listen = config.listen;
  auto server = pimgate::MetricsServer::Start(options, registry);
  if (!server.ok()) {
    spdlog::error("{}: serving webhooks WITHOUT metrics and health endpoints",
                  std::string(server.status().message()));
    return nullptr;
  }
  spdlog::info("metrics on {} port {}: GET /metrics, /healthz, /readyz", config.listen.text(),
               (*server)->port());
  return *std::move(server);
}

// <hostname>-<pid>, in the characters a lease key takes: unique among running nodes.
std::string DefaultNodeId() {
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) != 0) std::strcpy(host, "node");
  std::string id;
  for (const char* c = host; *c != '\0'; ++c) {
    id += std::isalnum(static_cast<unsigned char>(*c)) || *c == '-' || *c == '_' ? *c : '_';
  }
  return id + "-" + std::to_string(getpid());
}

int Serve(const std::string& path, const std::string& ready_file) {
  absl::StatusOr<pimgate::Config> config = pimgate::LoadConfigFile(path);
  if (!config.ok()) {
    std::fprintf(stderr, "%s: %s\n", path.c_str(), std::string(config.status().message()).c_str());
    return 2;
  }
  pimgate::ConfigureLogging(config->log.level, config->log.format);

  // Block the stop signals in every thread; the main thread waits for them with sigwait.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  // Up first, so /healthz answers while the log recovers; /readyz names what is not up yet.
  // Components register once all of them started: an early return destroys them while the
  // server still runs, so it must not know them yet.
  pimgate::MetricsRegistry metrics;
  pimgate::DeclareStartupReadiness(metrics);
  std::unique_ptr<pimgate::MetricsServer> metrics_server =
      StartMetricsServer(config->metrics, &metrics);

  auto log = pimgate::EventLog::Open(config->store);
  if (!log.ok()) {
    spdlog::critical("{}", std::string(log.status().message()));  // names the path
    return 1;
  }
  if (config->store.backend == pimgate::StoreBackend::kJetStream) {
    // store.sync does not apply: a 200 means the record is committed by the stream's replicas.
    spdlog::info(
        "event log on JetStream stream {} ({} replica(s)), local replica {}: head "
        "sequence {}",
        config->store.jetstream->stream, config->store.jetstream->replicas, config->store.path,
        (*log)->head());
  } else {
    spdlog::info("event log {} opened: head sequence {}, sync={}", config->store.path,
                 (*log)->head(), config->store.sync);
  }
  if (config->store.backend == pimgate::StoreBackend::kRocksDb && !config->store.sync) {
    spdlog::warn(
        "store.sync is false: a 200 means the events survive a pimgate crash, "
        "not a power loss");
  }

  // One REST client per source with `rest`, shared by reconciliation and the dispatcher's
  // hydration (pass this same map to the dispatcher: one token and one set of connections per
  // PIM, within Akeneo's 4 concurrent calls per connection). Create() checks the configuration
  // only: a PIM that is down at start does not stop pimgate, its calls fail and are retried.
  std::map<std::string, std::shared_ptr<pimgate::AkeneoClient>> rest_clients;
  for (const pimgate::SourceConfig& source : config->sources) {
    if (!source.rest) continue;
    auto client = pimgate::AkeneoClient::Create(*source.rest);
    if (!client.ok()) {
      spdlog::critical("sources {}: rest: {}", source.name, std::string(client.status().message()));
      return 2;
    }
    rest_clients.emplace(source.name, std::shared_ptr<pimgate::AkeneoClient>(std::move(*client)));
  }

  // Event Platform management (sources with `platform`): clients now, the watch once all is up.
  auto event_platform = pimgate::EventPlatform::Create(*config, rest_clients, log->get());
  if (!event_platform.ok()) {
    spdlog::critical("{}", std::string(event_platform.status().message()));
    return 2;
  }

  // Plugins: launched and supervised, then fed by the dispatcher from the log. A plugin whose
  // command cannot run is not a reason to refuse webhooks: it is reported here and by the
  // supervisor (pimgatectl plugins), and --check-config refuses it.
  for (const pimgate::PluginConfig& plugin : config->plugins) {
    if (absl::Status status = pimgate::CheckPluginCommand(plugin); !status.ok()) {
      spdlog::error("{} (the plugin cannot start until this is fixed)",
                    std::string(status.message()));
    }
  }
  auto supervisor = pimgate::PluginSupervisor::Create(config->plugins, config->runtime.runtime_dir);
  if (!supervisor.ok()) {
    spdlog::critical("{}", std::string(supervisor.status().message()));
    return 2;
  }
  if (absl::Status status = (*supervisor)->Start(); !status.ok()) {
    spdlog::critical("starting plugins: {}", std::string(status.message()));
    return 1;
  }
  pimgate::PluginSupervisor* plugins = supervisor->get();
  pimgate::DispatcherOptions dispatch_options;
  // Hydration (plugins with hydrate: true) on the same REST clients as reconciliation.
  dispatch_options.hydration = std::make_shared<pimgate::Hydrator>(rest_clients);
  if (config->store.backend == pimgate::StoreBackend::kJetStream) {
    // Several nodes may share the stream: each (plugin, partition) is delivered by the node
    // holding its lease (docs/architecture.md, "Dispatch in a cluster").
    const pimgate::JetStreamConfig& js = *config->store.jetstream;
    auto leases = pimgate::OpenJetStreamLeaseStore(js);
    if (!leases.ok()) {
      spdlog::critical("cluster dispatch: {}", std::string(leases.status().message()));
      return 1;
    }
    dispatch_options.cluster = pimgate::ClusterDispatchOptions::FromConfig(
        js.cluster, std::shared_ptr<pimgate::LeaseStore>(std::move(*leases)));
    if (dispatch_options.cluster->node_id.empty()) {
      dispatch_options.cluster->node_id = DefaultNodeId();
    }
  }
  auto dispatcher = pimgate::Dispatcher::Create(
      config->plugins, log->get(),
      [plugins](const std::string& name) { return plugins->AddressOf(name); }, dispatch_options);
  if (!dispatcher.ok()) {
    spdlog::critical("{}", std::string(dispatcher.status().message()));
    return 2;
  }
  if (absl::Status status = (*dispatcher)->Start(); !status.ok()) {
    spdlog::critical("starting the dispatcher: {}", std::string(status.message()));
    return 1;
  }

  std::vector<std::string> plugin_names;
  for (const pimgate::PluginConfig& plugin : config->plugins) plugin_names.push_back(plugin.name);
  auto retention = std::make_unique<pimgate::RetentionTask>(
      log->get(), pimgate::PluginsMinCursor(std::move(plugin_names), log->get(), dispatcher->get()),
      pimgate::RetentionOptions::FromConfig(config->store));
  // Passes follow ingest as well as the clock: one starts whenever a batch of events was
  // appended since the last one, so trimming keeps pace with any append rate.
  (*log)->AddAppendListener(retention->AppendListener());
  retention->Start();

  // Reconciliation: its own threads; a failing PIM only fails (and retries) its runs.
  // Cluster dispatch: scheduled runs on the one node holding the "reconcile" job.
  pimgate::ReconcilerOptions reconciler_options;
  pimgate::Dispatcher* dispatch = dispatcher->get();
  if (dispatch->NodeId().has_value()) {
    reconciler_options.may_run_scheduled = [dispatch] { return dispatch->HoldsJob("reconcile"); };
  }
  auto reconciler =
      pimgate::Reconciler::Create(config->sources, rest_clients, log->get(), reconciler_options);
  if (!reconciler.ok()) {
    spdlog::critical("{}", std::string(reconciler.status().message()));
    return 2;
  }
  (*reconciler)->Start();
  for (const pimgate::SourceConfig& source : config->sources) {
    if (!source.rest) continue;
    const pimgate::ReconcileConfig reconcile =
        source.reconcile.value_or(pimgate::ReconcileConfig{});
    spdlog::info("source {}: REST API {} as client {}; reconciliation {}", source.name,
                 source.rest->base_url.Describe(), source.rest->client_id,
                 reconcile.interval.count() > 0
                     ? "every " + absl::FormatDuration(absl::FromChrono(reconcile.interval))
                     : std::string("on demand only (reconcile.interval 0)"));
  }

  // Event Platform notification webhooks (subscription suspended, revoked, resumed): their
  // states are kept and exported; a resumed subscription gets a reconciliation of its source at
  // once, as a safety net for the events the platform did not send while it was suspended.
  pimgate::PlatformSubscriptions::Options subscription_options;
  subscription_options.log = log->get();
  subscription_options.on_resumed = ReconcileOnResume(config->sources, reconciler->get());
  auto subscriptions = pimgate::PlatformSubscriptions::Open(std::move(subscription_options));
  if (!subscriptions.ok()) {
    spdlog::critical("cannot read the Event Platform subscription states from {}: {}",
                     config->store.path, std::string(subscriptions.status().message()));
    return 1;
  }
  (*subscriptions)->Start();
  pimgate::GatewayHooks hooks;
  hooks.on_subscription_notice =
      [tracker = subscriptions->get()](const pimgate::SubscriptionNotice& notice) {
        tracker->Record(notice);
      };

  auto gateway = pimgate::Gateway::Create(*config, log->get(), std::move(hooks));
  if (!gateway.ok()) {
    spdlog::critical("{}", std::string(gateway.status().message()));
    return 2;
  }
  if (absl::Status status = (*gateway)->Start(); !status.ok()) {
    spdlog::critical("{}", std::string(status.message()));
    return 1;
  }
  if (!config->gateway.tls) {
    spdlog::warn("**********************************************************************");
    spdlog::warn("gateway.tls is not set: serving PLAIN HTTP. Webhook bodies and signatures");
    spdlog::warn("travel unencrypted. Use this only behind a TLS-terminating proxy or locally.");
    spdlog::warn("**********************************************************************");
  }
  for (const pimgate::SourceConfig& source : config->sources) {
    spdlog::info("source {} ({}) at POST {} (secret from {}{})", source.name,
                 pimgate::SourceKindName(source.kind), source.path, source.secret.origin,
                 source.secondary_secret ? ", secondary from " + source.secondary_secret->origin
                                         : std::string());
    if (!source.notification_path.empty()) {
      spdlog::info("source {}: Event Platform notification webhooks at POST {}", source.name,
                   source.notification_path);
    }
  }
  spdlog::info("pimgate listening on {} ({}) port {}", config->gateway.listen.text(),
               (*gateway)->tls() ? "HTTPS" : "HTTP", (*gateway)->port());
  // Everything is up: from here on, metrics may read every component.
  pimgate::RegisterLogMetrics(metrics, log->get());
  pimgate::RegisterPluginMetrics(metrics, supervisor->get(), dispatcher->get());
  pimgate::RegisterGatewayMetrics(metrics, gateway->get());
  pimgate::RegisterRetentionMetrics(metrics, retention.get());
  pimgate::RegisterReconciliationMetrics(metrics, reconciler->get());
  pimgate::RegisterPlatformSubscriptionMetrics(metrics, subscriptions->get());
  std::unique_ptr<pimgate::AdminServer> admin_server = StartAdminServer(
      config->admin, {log->get(), dispatcher->get(), supervisor->get(), gateway->get(),
                      reconciler->get(), (*event_platform)->Admin(subscriptions->get())});
  std::unique_ptr<pimgate::ConsoleServer> console_server =
      StartConsoleServer(*config, admin_server.get());
  if (console_server) pimgate::RegisterConsoleMetrics(metrics, console_server.get());
  // Cluster dispatch: one node at a time acts on what the watch finds (auto_resume).
  (*event_platform)->StartWatch(subscriptions->get(), [&metrics, dispatch] {
    return metrics.CheckReadiness().empty() && dispatch->HoldsJob("platform");
  });
  if (!ready_file.empty()) {
    std::string tmp = ready_file + ".tmp";
    pimgate::Json ports;
    ports["gateway_port"] = (*gateway)->port();
    ports["metrics_port"] = metrics_server ? metrics_server->port() : 0;
    ports["admin_port"] = admin_server ? admin_server->port() : 0;
    ports["console_port"] = console_server ? console_server->port() : 0;
    std::ofstream(tmp) << pimgate::JsonDump(ports) << "\n";
    std::rename(tmp.c_str(), ready_file.c_str());
  }

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  spdlog::info("received {}, stopping: finishing requests in flight", strsignal(signal_number));
  if (console_server) console_server->Stop();  // its calls go through the admin API
  if (admin_server) admin_server->Stop();      // before the parts its calls use
  if (metrics_server) metrics_server->Stop();  // /readyz goes away first: no new traffic
  (*event_platform)->Stop();                   // the watch, then the management clients
  // Cancels reconciliation runs in progress, which append to the log.
  (*reconciler)->Stop();
  retention->Stop();
  (*gateway)->Stop();
  gateway->reset();
  (*subscriptions)->Stop();  // saves the last states; its resumed action used the reconciler
  (*dispatcher)->Stop();     // persists every plugin's cursor
  dispatcher->reset();
  (*supervisor)->Stop();  // SIGTERM, grace period, SIGKILL
  supervisor->reset();
  reconciler->reset();
  // The REST clients, once their last users (reconciler, dispatcher) are gone.
  for (auto& [name, client] : rest_clients) client->Shutdown();
  log->reset();  // drains and closes the log
  spdlog::info("pimgate stopped");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const pimgate::CommandLine command_line = pimgate::ParseCommandLine(argc, argv);
  switch (command_line.action) {
    case pimgate::CommandLine::Action::kCheckConfig:
      return CheckConfig(command_line.check_path);
    case pimgate::CommandLine::Action::kServe:
      return Serve(command_line.config_path, command_line.ready_file);
    case pimgate::CommandLine::Action::kMigrateStore:
      return MigrateStore(command_line.source_path, command_line.config_path, command_line.resume,
                          command_line.batch_events);
    case pimgate::CommandLine::Action::kExit:
      break;
  }
  return command_line.exit_code;
}
