// The `console:` section: the web console's listener (M12), and its checks against `admin:`.
#include <optional>

#include "absl/strings/str_cat.h"
#include "config/sections.h"
#include "config/value_readers.h"
#include "config/yaml_reader.h"

namespace pimgate::config_internal {

ValueReader Console(ConsoleConfig& console, std::optional<int>& listen_line) {
  return [&console, &listen_line](const Field& field) {
    return ReadMapping(field, {
                                  {"enabled", Bool(console.enabled)},
                                  {"listen", Tracked(Listen(console.listen), listen_line)},
                              });
  };
}

// The console answers with the admin API's data and actions, so it is protected like the admin
// API: a listener other machines can reach needs the token (admin_section.cc states the same rule
// for admin.listen). There is no opt-out: the console has no TLS of its own, so the token is the
// one protection; put a TLS proxy in front for remote use (docs/console.md).
absl::Status CheckConsole(const Config& config, const YAML::Node& root,
                          std::optional<int> listen_line, int console_line) {
  if (!config.console.enabled) return absl::OkStatus();
  if (!config.admin.enabled) {
    return Invalid({root, "console.enabled", console_line},
                   "the console serves the admin API, which admin.enabled: false turns off: "
                   "set admin.enabled: true, or console.enabled: false");
  }
  if (config.console.listen.local_only() || config.admin.token.has_value()) {
    return absl::OkStatus();
  }
  return Invalid({root, "console.listen", listen_line.value_or(console_line)},
                 absl::StrCat(Quote(config.console.listen.text()),
                              " is reachable from other machines: set admin.token (the console "
                              "checks the admin API's token)"));
}

}  // namespace pimgate::config_internal
