// What `pimgate --check-config` checks of a launched plugin's command: the program exists and is
// executable, a known interpreter's script exists, a Node script's dependencies are installed.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>
#include <system_error>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "config/sections.h"
#include "config/yaml_reader.h"

namespace pimgate::config_internal {
namespace {

// Interpreters whose first argument is a script file (when it is not an option): a plugin
// written in Python or Node is launched as [python3, handler.py].
bool IsScriptInterpreter(absl::string_view program) {
  const size_t slash = program.rfind('/');
  absl::string_view name = slash == absl::string_view::npos ? program : program.substr(slash + 1);
  for (absl::string_view prefix : {"python", "php"}) {
    if (absl::ConsumePrefix(&name, prefix)) {
      return std::all_of(name.begin(), name.end(),
                         [](char c) { return absl::ascii_isdigit(c) || c == '.'; });
    }
  }
  for (absl::string_view interpreter : {"node", "nodejs", "bash", "sh", "dash", "perl", "ruby"}) {
    if (name == interpreter) return true;
  }
  return false;
}

bool IsNodeInterpreter(absl::string_view program) {
  const size_t slash = program.rfind('/');
  const absl::string_view name =
      slash == absl::string_view::npos ? program : program.substr(slash + 1);
  return name == "node" || name == "nodejs";
}

// The PATH a launched plugin searches: its env's PATH, else pimgate's own (which the
// supervisor always passes on), else the default of execvp.
std::string PluginSearchPath(const PluginConfig& plugin) {
  std::optional<std::string> path;
  for (const auto& [name, value] : plugin.env) {
    if (name == "PATH") path = value;
  }
  if (!path.has_value()) {
    const char* own = std::getenv("PATH");
    path = own != nullptr ? own : "";
  }
  return path->empty() ? "/usr/local/bin:/usr/bin:/bin" : *path;
}

std::string CurrentDirectory() {
  char buffer[4096];
  return ::getcwd(buffer, sizeof(buffer)) != nullptr ? buffer : "?";
}

// What is wrong with a file a plugin's command names, or nothing. `what` says what it is.
std::optional<std::string> FileProblem(const std::string& path, absl::string_view what,
                                       bool executable) {
  const std::string relative =
      path.front() == '/'
          ? ""
          : absl::StrCat(" (relative to pimgate's working directory ", CurrentDirectory(), ")");
  struct stat info;
  if (::stat(path.c_str(), &info) != 0) {
    return absl::StrCat(what, " ", Quote(path), relative, ": ", ErrnoText(errno));
  }
  if (!S_ISREG(info.st_mode)) {
    return absl::StrCat(what, " ", Quote(path), relative, " is not a regular file");
  }
  if (executable && ::access(path.c_str(), X_OK) != 0) {
    return absl::StrCat(what, " ", Quote(path), relative,
                        " is not executable (chmod +x it, or start it through its interpreter, "
                        "e.g. [/usr/bin/python3, ",
                        path, "])");
  }
  return std::nullopt;
}

}  // namespace

// The first problem with a launched plugin's command: (index in the command, what is wrong).
std::optional<std::pair<size_t, std::string>> FindCommandProblem(const PluginConfig& plugin) {
  if (plugin.command.empty()) return std::nullopt;
  const std::string& program = plugin.command.front();
  if (program.find('/') != std::string::npos) {
    if (std::optional<std::string> problem = FileProblem(program, "program", true)) {
      return std::make_pair(size_t{0}, *problem);
    }
  } else {
    const std::string search = PluginSearchPath(plugin);
    bool found = false;
    for (absl::string_view dir : absl::StrSplit(search, ':')) {
      const std::string candidate = absl::StrCat(dir.empty() ? "." : dir, "/", program);
      struct stat info;
      if (::stat(candidate.c_str(), &info) == 0 && S_ISREG(info.st_mode) &&
          ::access(candidate.c_str(), X_OK) == 0) {
        found = true;
        break;
      }
    }
    if (!found) {
      return std::make_pair(
          size_t{0}, absl::StrCat("program ", Quote(program), " is not found in PATH (", search,
                                  "): install it, write its absolute path, or set PATH in env"));
    }
  }
  if (!IsScriptInterpreter(program) || plugin.command.size() < 2 ||
      absl::StartsWith(plugin.command[1], "-") || plugin.command[1].empty()) {
    return std::nullopt;
  }
  const std::string& script = plugin.command[1];
  if (std::optional<std::string> problem = FileProblem(script, "script", false)) {
    return std::make_pair(size_t{1}, *problem);
  }
  if (IsNodeInterpreter(program)) {
    // The package.json that governs the script: the nearest one up from its folder.
    std::error_code ec;
    std::filesystem::path dir = std::filesystem::absolute(std::filesystem::path(script), ec)
                                    .lexically_normal()
                                    .parent_path();
    while (!ec && !dir.empty()) {
      const std::filesystem::path manifest = dir / "package.json";
      std::error_code ignored;
      if (std::filesystem::is_regular_file(manifest, ignored)) {
        absl::StatusOr<std::string> text = ReadWholeFile(manifest.string());
        if (text.ok() && absl::StrContains(*text, "\"dependencies\"") &&
            !std::filesystem::is_directory(dir / "node_modules", ignored)) {
          return std::make_pair(
              size_t{1}, absl::StrCat(Quote(manifest.string()), " lists dependencies but ",
                                      Quote((dir / "node_modules").string()),
                                      " is missing: run `npm install` in ", Quote(dir.string())));
        }
        break;
      }
      if (dir == dir.root_path()) break;
      dir = dir.parent_path();
    }
  }
  return std::nullopt;
}

}  // namespace pimgate::config_internal

namespace pimgate {

absl::Status CheckPluginCommand(const PluginConfig& plugin) {
  std::optional<std::pair<size_t, std::string>> problem =
      config_internal::FindCommandProblem(plugin);
  if (!problem.has_value()) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat("plugins.", plugin.name, ".command[", problem->first, "]: ", problem->second));
}

}  // namespace pimgate
