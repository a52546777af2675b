// The `plugins:` and `runtime:` sections: each plugin's command or address, environment, filters,
// delivery and restart schedules, and the checks across sections made once the document is read.
#include <algorithm>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "common/glob.h"
#include "config/sections.h"
#include "config/value_readers.h"
#include "config/yaml_reader.h"

namespace pimgate::config_internal {
namespace {

// Plugin names become socket file names and label metrics, so they are kept short.
constexpr size_t kMaxPluginNameLength = 64;
// Upper bound of plugins[].max_in_flight: each outstanding delivery holds an event in memory.
constexpr int64_t kMaxInFlightLimit = 10'000;

ValueReader PluginName(std::string& out) {
  return [&out](const Field& field) -> absl::Status {
    if (absl::Status status = SourceName(out)(field); !status.ok()) return status;
    if (out.size() > kMaxPluginNameLength) {
      return Invalid(field, absl::StrCat("must be at most ", kMaxPluginNameLength,
                                         " characters, got ", out.size()));
    }
    return absl::OkStatus();
  };
}

// argv of a launched plugin. Only argv[0] must be non-empty: an empty argument can be meaningful.
// A relative argv[0] is resolved when the plugin is launched, not here.
ValueReader Command(std::vector<std::string>& out, std::vector<int>& lines) {
  return [&out, &lines](const Field& field) -> absl::Status {
    if (field.node.IsScalar()) {
      return Invalid(field, absl::StrCat("must be a sequence of the program and its arguments, "
                                         "e.g. [\"/usr/bin/python3\", \"plugin.py\"], ",
                                         Got(field.node)));
    }
    if (field.node.IsNull() || (field.node.IsSequence() && field.node.size() == 0)) {
      return Invalid(field, "must list the program and its arguments");
    }
    out.clear();
    lines.clear();
    return ReadSequence(field, [&out, &lines](const Field& item) -> absl::Status {
      absl::StatusOr<std::string> arg = ScalarOf(item);
      if (!arg.ok()) return arg.status();
      if (out.empty() && arg->empty()) return Invalid(item, "the program must not be empty");
      if (arg->find('\0') != std::string::npos) return Invalid(item, "must not contain NUL");
      out.push_back(*std::move(arg));
      lines.push_back(item.line);
      return absl::OkStatus();
    });
  };
}

// The path of a "unix:" gRPC target ("unix:/run/x.sock", "unix:///run/x.sock", "unix:x.sock").
absl::string_view UnixSocketPath(absl::string_view address) {
  absl::ConsumePrefix(&address, "unix:");
  if (absl::StartsWith(address, "///")) address.remove_prefix(2);
  return address;
}

// gRPC target of a plugin pimgate does not launch: "unix:<path>" or host:port.
ValueReader Address(std::string& out) {
  return [&out](const Field& field) -> absl::Status {
    absl::StatusOr<std::string> text = ScalarOf(field);
    if (!text.ok()) return text.status();
    if (absl::StartsWith(*text, "unix:")) {
      const absl::string_view path = UnixSocketPath(*text);
      if (path.empty()) return Invalid(field, "\"unix:\" must be followed by a socket path");
      if (path.size() > kMaxUnixSocketPath) {
        return Invalid(field, absl::StrCat("socket path is ", path.size(), " bytes, more than the ",
                                           kMaxUnixSocketPath, " a unix socket address holds"));
      }
      out = *std::move(text);
      return absl::OkStatus();
    }
    if (text->find(':') == std::string::npos) {
      return Invalid(field, absl::StrCat("must be \"unix:/path\" or host:port, ", Got(field.node)));
    }
    return HostPort(out, 1)(field);
  };
}

bool IsEnvName(absl::string_view name) {
  return !name.empty() && !absl::ascii_isdigit(name.front()) &&
         std::all_of(name.begin(), name.end(),
                     [](char c) { return absl::ascii_isalnum(c) || c == '_'; });
}

// NAME: value pairs, kept in document order. Values are taken as written (no ${} or file:
// resolution); an empty value must be spelled "".
ValueReader Env(std::vector<std::pair<std::string, std::string>>& out) {
  return [&out](const Field& field) -> absl::Status {
    if (!field.node.IsMap() && !field.node.IsNull()) {
      return Invalid(field, absl::StrCat("must be a mapping of NAME: value, ", Got(field.node)));
    }
    out.clear();
    std::map<std::string, int, std::less<>> seen;  // name -> line
    for (const auto& entry : field.node) {
      const YAML::Node key = entry.first;
      const int line = LineOf(key);
      if (!key.IsScalar()) return Invalid({key, field.path, line}, "keys must be plain names");
      Field value{entry.second, absl::StrCat(field.path, ".", key.Scalar()), line};
      if (!IsEnvName(key.Scalar())) {
        return Invalid(value,
                       "variable names must be letters, digits and _, not starting with a "
                       "digit");
      }
      if (auto [previous, inserted] = seen.emplace(key.Scalar(), line); !inserted) {
        return Invalid(value, absl::StrCat("duplicate key (first at line ", previous->second, ")"));
      }
      absl::StatusOr<std::string> text = ScalarOf(value);
      if (!text.ok()) return text.status();
      if (text->find('\0') != std::string::npos) return Invalid(value, "must not contain NUL");
      out.emplace_back(key.Scalar(), *std::move(text));
    }
    return absl::OkStatus();
  };
}

// inherit_env: true (all of pimgate's environment), false (none beyond the base set, the
// default), or a list of variable names.
ValueReader InheritEnv(bool& all, std::vector<std::string>& names) {
  return [&all, &names](const Field& field) -> absl::Status {
    names.clear();
    all = false;
    if (field.node.IsScalar()) return Bool(all)(field);
    if (field.node.IsNull() || (field.node.IsSequence() && field.node.size() == 0)) {
      return Invalid(field,
                     "must be true, false or a list of variable names (write false for none)");
    }
    if (!field.node.IsSequence()) {
      return Invalid(field, absl::StrCat("must be true, false or a list of variable names, ",
                                         Got(field.node)));
    }
    return ReadSequence(field, [&names](const Field& item) -> absl::Status {
      absl::StatusOr<std::string> name = ScalarOf(item);
      if (!name.ok()) return name.status();
      if (!IsEnvName(*name)) {
        return Invalid(item, absl::StrCat("variable names must be letters, digits and _, not "
                                          "starting with a digit, ",
                                          Got(item.node)));
      }
      names.push_back(*std::move(name));
      return absl::OkStatus();
    });
  };
}

// Event type globs: canonical types are lower-case words joined by dots ("product.created").
std::optional<std::string> EventGlobProblem(absl::string_view glob) {
  return EventTypeGlobProblem(glob);
}

ValueReader Retry(RetryConfig& retry) {
  return [&retry](const Field& field) -> absl::Status {
    BackoffRange backoff(retry.initial_backoff, retry.max_backoff);
    absl::Status status = ReadMapping(
        field, {
                   {"max_attempts", Integer(retry.max_attempts, 1)},
                   {"initial_backoff", backoff.Initial()},
                   {"max_backoff", backoff.Max()},
                   {"multiplier", Number(retry.multiplier, 1, std::numeric_limits<double>::max())},
                   {"jitter", Number(retry.jitter, 0, 1)},
               });
    if (!status.ok()) return status;
    return backoff.CheckAgainstDefaults();
  };
}

ValueReader Restart(RestartConfig& restart) {
  return [&restart](const Field& field) -> absl::Status {
    BackoffRange backoff(restart.initial_backoff, restart.max_backoff);
    absl::Status status = ReadMapping(field, {
                                                 {"initial_backoff", backoff.Initial()},
                                                 {"max_backoff", backoff.Max()},
                                                 {"reset_after", Millis(restart.reset_after)},
                                             });
    if (!status.ok()) return status;
    return backoff.CheckAgainstDefaults();
  };
}

ValueReader Filter(StringFilter& filter) {
  return [&filter](const Field& field) {
    return ReadMapping(field, {
                                  {"include", StringList(filter.include)},
                                  {"exclude", StringList(filter.exclude)},
                              });
  };
}

// A dot-separated path into the event's data: "family", "product.uuid".
std::optional<std::string> DataPathProblem(absl::string_view path) {
  if (absl::StartsWith(path, ".") || absl::EndsWith(path, ".") || absl::StrContains(path, "..")) {
    return absl::StrCat("must be keys joined by single dots, e.g. \"product.family\", got ",
                        Quote(path));
  }
  return std::nullopt;
}

// The values a data filter compares against, as text. YAML booleans and nulls are spelled the
// way the event's JSON would print them (true, false, null); anything else stays as written.
ValueReader FilterValues(std::vector<std::string>& out) {
  return [&out](const Field& field) -> absl::Status {
    if (field.node.IsNull() || (field.node.IsSequence() && field.node.size() == 0)) {
      return Invalid(field, "must list at least one value");
    }
    out.clear();
    return ReadSequence(field, [&out](const Field& item) -> absl::Status {
      if (item.node.IsNull()) {
        out.push_back("null");
        return absl::OkStatus();
      }
      if (!item.node.IsScalar()) {
        return Invalid(item, absl::StrCat("must be a single value, ", Got(item.node)));
      }
      const std::string& text = item.node.Scalar();
      // Only plain (unquoted) scalars can be YAML booleans; yaml-cpp tags those "?".
      const bool plain = item.node.Tag() == "?";
      if (plain && (text == "True" || text == "TRUE")) {
        out.push_back("true");
      } else if (plain && (text == "False" || text == "FALSE")) {
        out.push_back("false");
      } else {
        out.push_back(text);
      }
      return absl::OkStatus();
    });
  };
}

absl::Status ReadDataFilter(const Field& field, DataFilter& filter) {
  std::optional<int> in_line;
  std::optional<int> not_in_line;
  absl::Status status = ReadMapping(
      field, {
                 {"path", CheckedString(filter.path, DataPathProblem), true},
                 {"in", ExclusiveWith(Tracked(FilterValues(filter.values), in_line), not_in_line,
                                      "not_in", "in")},
                 {"not_in", ExclusiveWith(Tracked(FilterValues(filter.values), not_in_line),
                                          in_line, "in", "not_in")},
             });
  if (!status.ok()) return status;
  if (!in_line.has_value() && !not_in_line.has_value()) {
    return Invalid(field, "needs one of in or not_in");
  }
  filter.negate = not_in_line.has_value();
  return absl::OkStatus();
}

ValueReader DataFilters(std::vector<DataFilter>& out) {
  return [&out](const Field& field) -> absl::Status {
    out.clear();
    return ReadSequence(field, [&out](const Field& item) -> absl::Status {
      DataFilter filter;
      if (absl::Status status = ReadDataFilter(item, filter); !status.ok()) return status;
      out.push_back(std::move(filter));
      return absl::OkStatus();
    });
  };
}

// Reads one plugin. Name uniqueness, source names and socket paths are checked by the caller.
absl::Status ReadPlugin(const Field& field, PluginConfig& plugin, PluginLines& lines) {
  std::optional<int> name_line;
  std::optional<int> command_line;
  std::optional<int> address_line;
  // Keys that only mean something for a plugin pimgate launches.
  std::optional<int> env_line;
  std::optional<int> inherit_env_line;
  std::optional<int> start_timeout_line;
  std::optional<int> stop_timeout_line;
  std::optional<int> restart_line;
  absl::Status status = ReadMapping(
      field,
      {
          {"name", Tracked(PluginName(plugin.name), name_line), true},
          {"command", ExclusiveWith(Tracked(Command(plugin.command, lines.command), command_line),
                                    address_line, "address", "command")},
          {"address", ExclusiveWith(Tracked(Address(plugin.address), address_line), command_line,
                                    "command", "address")},
          {"env", Tracked(Env(plugin.env), env_line)},
          {"inherit_env",
           Tracked(InheritEnv(plugin.inherit_env_all, plugin.inherit_env), inherit_env_line)},
          {"events", NonEmptyList(StringList(plugin.events, EventGlobProblem), "event type")},
          {"sources", NonEmptyList(StringList(plugin.sources, {}, &lines.sources), "source")},
          {"skip_stale", Bool(plugin.skip_stale)},
          {"max_in_flight", IntegerInRange(plugin.max_in_flight, 1, kMaxInFlightLimit)},
          {"ack_timeout", Millis(plugin.ack_timeout)},
          {"start_timeout", Tracked(Millis(plugin.start_timeout), start_timeout_line)},
          {"stop_timeout", Tracked(Millis(plugin.stop_timeout), stop_timeout_line)},
          {"hydrate", Tracked(Bool(plugin.hydrate), lines.hydrate)},
          {"retry", Retry(plugin.retry)},
          {"restart", Tracked(Restart(plugin.restart), restart_line)},
          {"authors", Filter(plugin.authors)},
          {"author_types", Filter(plugin.author_types)},
          {"data", DataFilters(plugin.data)},
      });
  if (!status.ok()) return status;
  lines.name = *name_line;
  if (!command_line.has_value() && !address_line.has_value()) {
    return Invalid(field,
                   "needs a command (to launch the plugin) or an address (to connect to "
                   "a running one)");
  }
  if (address_line.has_value()) {
    // Reported at the first such key in the document, like every other error.
    std::optional<std::pair<int, absl::string_view>> first;
    for (const auto& [line, key] :
         {std::make_pair(env_line, absl::string_view("env")),
          std::make_pair(inherit_env_line, absl::string_view("inherit_env")),
          std::make_pair(start_timeout_line, absl::string_view("start_timeout")),
          std::make_pair(stop_timeout_line, absl::string_view("stop_timeout")),
          std::make_pair(restart_line, absl::string_view("restart"))}) {
      if (line.has_value() && (!first.has_value() || *line < first->first)) {
        first.emplace(*line, key);
      }
    }
    if (first.has_value()) {
      return Invalid({field.node, absl::StrCat(field.path, ".", first->second), first->first},
                     "only applies to plugins pimgate launches (with a command), not to an "
                     "address");
    }
  }
  return absl::OkStatus();
}

}  // namespace

// plugins: optional; `plugins:` with nothing under it (all commented out) is an empty list.
ValueReader Plugins(std::vector<PluginConfig>& plugins, std::vector<PluginLines>& lines) {
  return [&plugins, &lines](const Field& field) -> absl::Status {
    if (field.node.IsNull()) return absl::OkStatus();
    std::map<std::string, std::pair<size_t, int>> names;  // name -> (index, line) of first use
    return ReadSequence(field, [&](const Field& item) -> absl::Status {
      PluginConfig plugin;
      PluginLines plugin_lines;
      if (absl::Status status = ReadPlugin(item, plugin, plugin_lines); !status.ok()) {
        return status;
      }
      const size_t index = plugins.size();
      if (auto [first, inserted] =
              names.emplace(plugin.name, std::make_pair(index, plugin_lines.name));
          !inserted) {
        return Invalid({item.node, item.path + ".name", plugin_lines.name},
                       absl::StrCat("duplicate of plugins[", first->second.first, "].name (line ",
                                    first->second.second, ")"));
      }
      plugins.push_back(std::move(plugin));
      lines.push_back(std::move(plugin_lines));
      return absl::OkStatus();
    });
  };
}

ValueReader Runtime(PluginsRuntimeConfig& runtime, std::optional<int>& dir_line) {
  return [&runtime, &dir_line](const Field& field) {
    return ReadMapping(field, {
                                  {"dir", Tracked(String(runtime.runtime_dir), dir_line)},
                              });
  };
}

// runtime.dir when it is not configured: "<store.path>/run".
std::string DefaultRuntimeDir(absl::string_view store_path) {
  while (store_path.size() > 1 && absl::EndsWith(store_path, "/")) store_path.remove_suffix(1);
  return absl::StrCat(store_path, store_path == "/" ? "" : "/", "run");
}

// Checks what plugins refer to outside their own entry, once the whole document is read (with
// runtime.dir filled in): their sources must exist, and the unix socket of each launched plugin
// must fit in a socket address.
absl::Status CheckPlugins(const Config& config, const std::vector<PluginLines>& lines,
                          std::optional<int> runtime_dir_line, const LoadOptions& options) {
  const std::string& dir = config.runtime.runtime_dir;
  const absl::string_view separator = absl::EndsWith(dir, "/") ? "" : "/";
  const std::string dir_origin =
      runtime_dir_line.has_value() ? "runtime.dir" : "runtime.dir (default <store.path>/run)";
  std::vector<std::string> source_names;
  for (const SourceConfig& source : config.sources) source_names.push_back(source.name);

  // Errors here are not met in document order, so the first by line wins.
  std::optional<std::pair<int, absl::Status>> first;
  const auto report = [&first](int line, absl::Status status) {
    if (!first.has_value() || line < first->first) first.emplace(line, std::move(status));
  };
  // A directory too long for any name is runtime.dir's problem, not each plugin's.
  const size_t shortest_socket = dir.size() + separator.size() + absl::string_view("x.sock").size();
  for (size_t i = 0; i < config.plugins.size(); ++i) {
    const PluginConfig& plugin = config.plugins[i];
    const std::string path = absl::StrCat("plugins[", i, "]");
    for (size_t j = 0; j < plugin.sources.size(); ++j) {
      if (std::find(source_names.begin(), source_names.end(), plugin.sources[j]) ==
          source_names.end()) {
        const int line = lines[i].sources[j];
        report(line, Invalid({{}, absl::StrCat(path, ".sources[", j, "]"), line},
                             absl::StrCat("unknown source ", Quote(plugin.sources[j]),
                                          "; configured sources are ",
                                          absl::StrJoin(source_names, ", "))));
      }
    }
    if (plugin.hydrate && lines[i].hydrate.has_value()) {
      // Only Event Platform events are lightweight, and fetching needs the source's REST API.
      // Sources of the plugin without rest (or legacy ones) are fine alongside one that
      // qualifies: their events are delivered as stored (the dispatcher logs which at start).
      std::vector<std::string> considered;
      bool any = false;
      for (const SourceConfig& source : config.sources) {
        if (!plugin.sources.empty() && std::find(plugin.sources.begin(), plugin.sources.end(),
                                                 source.name) == plugin.sources.end()) {
          continue;
        }
        considered.push_back(source.name);
        any |= source.kind == SourceKind::kEventPlatform && source.rest.has_value();
      }
      if (!any && !considered.empty()) {
        const int line = *lines[i].hydrate;
        report(line, Invalid({{}, path + ".hydrate", line},
                             absl::StrCat("needs a source of kind event_platform with rest (the "
                                          "PIM's REST API to fetch from); none of ",
                                          plugin.sources.empty() ? "the sources" : "its sources",
                                          " (", absl::StrJoin(considered, ", "), ") has both")));
      }
    }
    if (plugin.command.empty()) continue;  // connects to `address`; pimgate makes no socket
    if (options.check_plugin_commands) {
      if (std::optional<std::pair<size_t, std::string>> problem = FindCommandProblem(plugin)) {
        const int line = lines[i].command[problem->first];
        report(line, Invalid({{}, absl::StrCat(path, ".command[", problem->first, "]"), line},
                             problem->second));
      }
    }
    const std::string socket = absl::StrCat(dir, separator, plugin.name, ".sock");
    if (socket.size() <= kMaxUnixSocketPath) continue;
    if (runtime_dir_line.has_value() && shortest_socket > kMaxUnixSocketPath) {
      report(*runtime_dir_line,
             Invalid({{}, "runtime.dir", *runtime_dir_line},
                     absl::StrCat("too long for plugin sockets: ", Quote(dir),
                                  " leaves no room for \"/<name>.sock\" within the ",
                                  kMaxUnixSocketPath, " bytes a unix socket address holds")));
      continue;
    }
    report(
        lines[i].name,
        Invalid({{}, path + ".name", lines[i].name},
                absl::StrCat("socket path ", Quote(socket), " would be ", socket.size(),
                             " bytes, more than the ", kMaxUnixSocketPath,
                             " a unix socket address holds; use a shorter name or ", dir_origin)));
  }
  if (first.has_value()) return std::move(first->second);
  return absl::OkStatus();
}

}  // namespace pimgate::config_internal
