// PluginSupervisor: launches plugin processes from the manifest, waits until they report SERVING
// on grpc.health.v1, forwards their output to pimgate's log, restarts them when they crash, and
// stops them (SIGTERM, grace period, SIGKILL) when pimgate stops. No child outlives pimgate.
#ifndef PIMGATE_CORE_DISPATCH_PLUGIN_SUPERVISOR_H_
#define PIMGATE_CORE_DISPATCH_PLUGIN_SUPERVISOR_H_

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
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
  // Restarts after a crash or a failed start (not those asked for with Restart()).
  uint32_t restarts = 0;
  // Why the last run ended badly: "exited with status 3", "killed by signal 9", "not SERVING in
  // 30s". Cleared once a later run has served for restart.reset_after (the problem is over).
  std::string last_error;
  // The last lines that run wrote to stderr (at most kStderrTailLines, each cut at
  // kStderrTailLineBytes), oldest first: a traceback, "Cannot find module", ... Cleared with
  // last_error.
  std::vector<std::string> last_stderr;
  std::string address;  // gRPC target the dispatcher connects to
};

// Lines of a failed run's stderr kept for PluginStatus::last_stderr, and their length limit:
// enough for a Python traceback or a Node "Cannot find module" report.
inline constexpr std::size_t kStderrTailLines = 20;
inline constexpr std::size_t kStderrTailLineBytes = 1024;
// Restart() waits this long beyond the plugin's stop_timeout + start_timeout (exit detection,
// fork and exec, health polling).
inline constexpr absl::Duration kRestartSlack = absl::Seconds(5);

// What a launched plugin finds in its environment, besides what its manifest entry's `env` sets
// and PIMGATE_PLUGIN_ADDRESS / PIMGATE_PLUGIN_NAME: these variables of pimgate's own environment
// (when set), and nothing else unless `inherit_env` asks for more. pimgate's own secrets
// (${ENV} references in its config) therefore never reach a third-party handler by default.
// PATH finds interpreters, HOME and TMPDIR are where programs keep files, LANG/LC_*/TZ set the
// locale and time zone, and the sanitizers' options make a sanitized build's plugins report the
// way pimgate does.
inline constexpr const char* kPluginBaseEnvironment[] = {
    "PATH",         "HOME",          "LANG",         "LANGUAGE",     "TZ",          "TMPDIR",
    "ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS", "TSAN_OPTIONS", "MSAN_OPTIONS"};
// Variables with this prefix are part of the base set too (LC_ALL, LC_CTYPE, ...).
inline constexpr char kPluginBaseEnvironmentPrefix[] = "LC_";

// The environment a launched plugin gets (NAME=value entries, sorted by name): the base set and
// what `inherit_env` asks for from `inherited` (entries of pimgate's environment), then the
// manifest's `env`, then PIMGATE_PLUGIN_ADDRESS=`address` and PIMGATE_PLUGIN_NAME. Later ones win.
std::vector<std::string> PluginEnvironment(const PluginConfig& config, const std::string& address,
                                           const std::vector<std::string>& inherited);

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

  // Stops a launched plugin's process (SIGTERM, stop_timeout, SIGKILL, as Stop() does) and
  // launches it again at once: no crash is counted, no backoff is waited (a plugin in backoff is
  // launched now). Returns once the new process reports SERVING, with its pid; FAILED_PRECONDITION
  // when it could not start (with its error and stderr), or for an `address` plugin, or before
  // Start() / after Stop(); NOT_FOUND for an unknown name; DEADLINE_EXCEEDED when the new process
  // is not SERVING within the plugin's stop_timeout + start_timeout + kRestartSlack (it keeps
  // starting). Deploying a new version of a plugin is installing it, then Restart().
  absl::StatusOr<pid_t> Restart(const std::string& name);

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
