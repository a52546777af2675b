// The readers of config.h's sections, one file each (config/*_section.cc), and the checks across
// sections that run once the whole document is read. Internal to config/: config.cc reads the
// document's top-level keys with them.
#ifndef PIMGATE_CONFIG_SECTIONS_H_
#define PIMGATE_CONFIG_SECTIONS_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "config/config.h"
#include "config/yaml_reader.h"

namespace pimgate::config_internal {

// gateway_section.cc
ValueReader Gateway(GatewayConfig& gateway);

// store_section.cc
ValueReader Store(StoreConfig& store);

// log_section.cc
ValueReader Log(LogConfig& log);

// metrics_section.cc
ValueReader Metrics(MetricsConfig& metrics);

// admin_section.cc. A listener other machines can reach must be protected by a token and TLS,
// unless the operator opts out explicitly.
ValueReader Admin(AdminConfig& admin);

// console_section.cc. `listen_line` is set when console.listen is in the document.
ValueReader Console(ConsoleConfig& console, std::optional<int>& listen_line);
// Once the whole document is read (admin: may come after console:): the console needs the admin
// API, and a console.listen other machines can reach needs admin.token.
absl::Status CheckConsole(const Config& config, const YAML::Node& root,
                          std::optional<int> listen_line, int console_line);

// sources_section.cc. Names and paths are unique across sources; each source's rest, reconcile
// and platform keys are read by the readers below.
ValueReader Sources(std::vector<SourceConfig>& sources);
// [a-z0-9_-]+: source names, and plugin names (which are also shorter).
bool IsSourceName(absl::string_view name);
ValueReader SourceName(std::string& out);

// rest_section.cc
ValueReader Rest(std::optional<RestConfig>& out);
ValueReader Reconcile(std::optional<ReconcileConfig>& out);
// Upper bound of rest.max_attempts and platform.max_attempts, so that one call cannot keep
// retrying for hours.
inline constexpr int64_t kMaxRestAttempts = 100;

// platform_section.cc
ValueReader Platform(std::optional<PlatformConfig>& out);

// plugins_section.cc

// Lines of a plugin's keys that are checked once the whole document is read: source names
// (sources may come after plugins) and the socket path (runtime.dir and store.path may, too).
struct PluginLines {
  int name = 0;
  std::vector<int> command;  // line of each element of plugins[i].command
  std::vector<int> sources;  // line of each element of plugins[i].sources
  std::optional<int> hydrate;
};

// plugins: optional; `plugins:` with nothing under it (all commented out) is an empty list.
ValueReader Plugins(std::vector<PluginConfig>& plugins, std::vector<PluginLines>& lines);
ValueReader Runtime(PluginsRuntimeConfig& runtime, std::optional<int>& dir_line);
// runtime.dir when it is not configured: "<store.path>/run".
std::string DefaultRuntimeDir(absl::string_view store_path);

// Checks what plugins refer to outside their own entry, once the whole document is read (with
// runtime.dir filled in): their sources must exist, and the unix socket of each launched plugin
// must fit in a socket address; with options.check_plugin_commands, FindCommandProblem too.
absl::Status CheckPlugins(const Config& config, const std::vector<PluginLines>& lines,
                          std::optional<int> runtime_dir_line, const LoadOptions& options);

// plugin_command_check.cc: the first problem with a launched plugin's command, as (index in the
// command, what is wrong); nothing for an `address` plugin or a command that looks runnable.
std::optional<std::pair<size_t, std::string>> FindCommandProblem(const PluginConfig& plugin);

}  // namespace pimgate::config_internal

#endif  // PIMGATE_CONFIG_SECTIONS_H_
