// PluginSupervisor: launches plugin processes from the manifest, waits until they report SERVING
// on grpc.health.v1, forwards their output to pimgate's log, restarts them when they crash, and
// stops them (SIGTERM, grace period, SIGKILL) when pimgate stops. No child outlives pimgate.
#ifndef PIMGATE_CORE_DISPATCH_PLUGIN_SUPERVISOR_H_
#define PIMGATE_CORE_DISPATCH_PLUGIN_SUPERVISOR_H_

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "config/config.h"

namespace pimgate {

enum class PluginState {
  kStarting,  // launched, not yet SERVING
  kServing,   // health check says SERVING
  kBackoff,   // crashed or failed to start; waiting to restart
  kStopped,   // stopped by pimgate
  kExternal,  // `address` plugin: not launched by pimgate
};

const char* PluginStateName(PluginState state);

struct PluginStatus {
  std::string name;
  PluginState state = PluginState::kStopped;
  pid_t pid = 0;  // 0 when not running
  uint32_t restarts = 0;
  std::string last_error;  // "exited with status 3", "killed by signal 9", "not SERVING in 30s"
  std::string address;     // gRPC target the dispatcher connects to
};

// Thread-safe. Owns one monitoring thread per launched plugin.
class PluginSupervisor {
 public:
  // `runtime_dir` holds the unix sockets of launched plugins; created if missing.
  static absl::StatusOr<std::unique_ptr<PluginSupervisor>> Create(
      const std::vector<PluginConfig>& plugins, const std::string& runtime_dir);
  ~PluginSupervisor();  // Stop()

  // Launches every `command` plugin (does not wait for SERVING).
  absl::Status Start();
  // SIGTERM to every child, waits up to each plugin's stop_timeout, then SIGKILL. Idempotent.
  void Stop();

  // gRPC target of a plugin: "unix:<runtime_dir>/<name>.sock" for launched plugins, the
  // configured address otherwise. Empty for an unknown name.
  std::string AddressOf(const std::string& name) const;
  std::vector<PluginStatus> Status() const;

  class Impl;

 private:
  explicit PluginSupervisor(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace pimgate

#endif  // PIMGATE_CORE_DISPATCH_PLUGIN_SUPERVISOR_H_
