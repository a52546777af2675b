// pimgate_ingest_ceiling: the real gateway (TLS, HTTP, signature check, parsing, the log's group
// commit queue, dedup lookups in RocksDB) over a log whose writes are discarded, so that a
// benchmark can tell what storing costs: pimgate's ingest rate divided by this one. NOT a server
// to deploy: every 200 it answers is a lie about durability.
//
//   pimgate_ingest_ceiling --config pimgate.yaml [--ready-file R]
//
// Same configuration and ready file as pimgate (store.path is opened but never written to;
// plugins are ignored).
#include <pthread.h>

#include <csignal>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>

#include "common/logging.h"
#include "config/config.h"
#include "core/log/event_log.h"
#include "core/log/log_backend.h"
#include "core/log/rocksdb_backend.h"
#include "gateway/server.h"
#include "spdlog/spdlog.h"

namespace {

// The real RocksDB backend with every commit discarded: lookups (dedup, versions) still hit
// RocksDB, but Write returns OK at once, without writing or fsyncing anything. Deriving from
// ForwardingLogBackend keeps this in step with the LogBackend interface. Thread-safe as the
// backend it wraps.
class DiscardingWritesBackend final : public pimgate::ForwardingLogBackend {
 public:
  using ForwardingLogBackend::ForwardingLogBackend;
  absl::Status Write(const pimgate::CommitBatch&, bool) override { return absl::OkStatus(); }
};

int Usage(const char* error) {
  std::fprintf(stderr,
               "pimgate_ingest_ceiling: %s\n\nUsage: pimgate_ingest_ceiling --config FILE "
               "[--ready-file FILE]\n",
               error);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string config_path, ready_file;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if ((arg == "--config" || arg == "--ready-file") && i + 1 < argc) {
      (arg == "--config" ? config_path : ready_file) = argv[++i];
    } else {
      return Usage(("unknown argument " + arg).c_str());
    }
  }
  if (config_path.empty()) return Usage("--config is required");
  absl::StatusOr<pimgate::Config> config = pimgate::LoadConfigFile(config_path);
  if (!config.ok()) {
    std::fprintf(stderr, "%s: %s\n", config_path.c_str(),
                 std::string(config.status().message()).c_str());
    return 2;
  }
  pimgate::ConfigureLogging(config->log.level, config->log.format);
  // As in pimgate: the stop signals are blocked in every thread and taken by sigwait below.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  const pimgate::EventLogOptions log_options = pimgate::EventLogOptionsFrom(config->store);
  auto backend = pimgate::OpenRocksDbBackend(config->store.path);
  if (!backend.ok()) {
    spdlog::critical("cannot open {}: {}", config->store.path,
                     std::string(backend.status().message()));
    return 1;
  }
  auto log = pimgate::EventLog::Open(std::make_unique<DiscardingWritesBackend>(std::move(*backend)),
                                     log_options);
  if (!log.ok()) {
    spdlog::critical("{}", std::string(log.status().message()));
    return 1;
  }
  auto gateway = pimgate::Gateway::Create(*config, log->get());
  if (!gateway.ok()) {
    spdlog::critical("{}", std::string(gateway.status().message()));
    return 2;
  }
  if (absl::Status status = (*gateway)->Start(); !status.ok()) {
    spdlog::critical("{}", std::string(status.message()));
    return 1;
  }
  spdlog::warn("ingest ceiling: gateway on port {} over a log that discards every write",
               (*gateway)->port());
  if (!ready_file.empty()) {
    const std::string tmp = ready_file + ".tmp";
    std::ofstream(tmp) << "{\"gateway_port\":" << (*gateway)->port() << "}\n";
    std::rename(tmp.c_str(), ready_file.c_str());
  }
  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  (*gateway)->Stop();
  gateway->reset();
  log->reset();
  return 0;
}
