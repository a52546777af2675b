// pimgatectl's command line on CLI11: parsing, dispatch, generated help and usage errors.
//
// CLI11 parses; what it does not know how to word is worded here, as pimgatectl always has
// (tests/ctl and the docs pin these messages): every app allows extras, so an unknown flag or a
// stray argument is left in `remaining()` and reported with a hint ("did you mean", "a global
// flag: put it before the command") instead of CLI11's generic "arguments were not expected".
#include "ctl/command_line.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <utility>

#include "CLI/CLI.hpp"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/did_you_mean.h"
#include "common/units.h"
#include "ctl/exit_codes.h"

namespace pimgate::ctl {
namespace {

constexpr char kVersion[] = "pimgatectl 0.1.0";
constexpr char kProgramSummary[] = "pimgatectl: operate a running pimgate through its admin API";
constexpr char kProgramFooter[] =
    R"(Every command takes --json: the response as JSON (protobuf JSON mapping with the .proto field
names; 64-bit integers are strings, timestamps RFC 3339).
Times (T) are RFC 3339 (2026-11-20T10:00:00Z, 2026-11-20T12:00:00+02:00) or an age (90s, 15m,
2h, 7d, 1h30m: that long before now).

Exit codes: 0 ok, 1 failed, 2 usage, 3 unauthenticated (token missing or wrong), 4 not found,
5 pimgate unreachable, 6 `platform check` found a problem.
)";
constexpr char kJsonHelp[] = "the response as JSON (the same as --json before the command)";
// The help's columns: a name column at most this wide before its description moves to its own
// line, and the width descriptions are written for.
constexpr std::size_t kMaxNameColumn = 48;

// "; did you mean X?" when `typed` is close to one of `candidates`, else "".
std::string Suggestion(absl::string_view typed, const std::vector<std::string>& candidates) {
  std::optional<std::string> near = pimgate::DidYouMean(typed, candidates);
  return near.has_value() ? absl::StrCat("; did you mean ", *near, "?") : "";
}

// "--limit" of "--limit=5"; "-x" of "-x".
std::string FlagName(const std::string& arg) { return arg.substr(0, arg.find('=')); }

// An argument the parser took for a flag. A lone "-" or "--" is an argument (as before CLI11).
bool LooksLikeFlag(const std::string& arg) {
  return arg.size() > 1 && arg.front() == '-' && arg != "--";
}

// What `app` did not take, in order, without the "--" markers CLI11 keeps there (everything
// after "--" is an argument, as expected).
std::vector<std::string> Remaining(const CLI::App* app) {
  std::vector<std::string> out = app->remaining();
  out.erase(std::remove(out.begin(), out.end(), "--"), out.end());
  return out;
}

std::string Env(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr ? value : "";
}

absl::StatusOr<std::string> ReadFile(const std::string& path, absl::string_view flag) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat(flag, ": cannot read \"", path, "\""));
  std::stringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

// "-h, --help", "--limit" as the help lists an option (its value name is added by the caller).
std::string OptionNames(const CLI::Option* option) {
  std::vector<std::string> names;
  for (const std::string& name : option->get_snames()) names.push_back("-" + name);
  for (const std::string& name : option->get_lnames()) names.push_back("--" + name);
  return absl::StrJoin(names, ", ");
}

bool OptionTakesValue(const CLI::Option* option) { return option->get_expected_max() > 0; }

// Rows of a help section: `name` in a column as wide as the widest (up to kMaxNameColumn), then
// the description, its further lines indented to the column.
std::string Rows(const std::vector<std::pair<std::string, std::string>>& rows) {
  std::size_t column = 0;
  for (const auto& [name, description] : rows) {
    const std::size_t last_line = name.size() - std::min(name.size(), name.rfind('\n') + 1);
    if (last_line <= kMaxNameColumn) column = std::max(column, last_line);
  }
  column += 2 + 2;  // indent and gap
  std::string out;
  for (const auto& [name, description] : rows) {
    const std::vector<std::string> name_lines = absl::StrSplit(name, '\n');
    for (std::size_t i = 0; i + 1 < name_lines.size(); ++i) {
      absl::StrAppend(&out, "  ", name_lines[i], "\n");
    }
    std::string line = absl::StrCat("  ", name_lines.back());
    if (line.size() + 2 > column) {
      absl::StrAppend(&out, line, "\n");
      line.clear();
    }
    const std::vector<std::string> description_lines = absl::StrSplit(description, '\n');
    for (const std::string& text : description_lines) {
      line.resize(column, ' ');
      absl::StrAppend(&out, absl::StripTrailingAsciiWhitespace(line + text), "\n");
      line.clear();
    }
  }
  return out;
}

}  // namespace

// The help of the program, a group or a command, made from what the commands declare: their
// synopses and summaries, their arguments and flags with their descriptions.
class HelpFormatter : public CLI::Formatter {
 public:
  explicit HelpFormatter(const CommandLine* cli) : cli_(cli) {}

  std::string make_help(const CLI::App* app, std::string, CLI::AppFormatMode) const override {
    if (auto it = cli_->command_of_.find(app); it != cli_->command_of_.end()) {
      return CommandHelpText(*it->second);
    }
    if (auto it = cli_->group_of_.find(app); it != cli_->group_of_.end()) {
      return GroupHelpText(*it->second);
    }
    return ProgramHelpText();
  }

 private:
  std::string ProgramHelpText() const {
    std::vector<std::pair<std::string, std::string>> flags, last;
    for (const CLI::Option* option : cli_->root_->get_options()) {
      std::string name = OptionNames(option);
      if (OptionTakesValue(option)) absl::StrAppend(&name, " ", option->get_type_name());
      // --help and --version, which reach no pimgate, come last.
      const bool other = option == cli_->root_->get_help_ptr() || name == "--version";
      (other ? last : flags).emplace_back(std::move(name), option->get_description());
    }
    flags.insert(flags.end(), last.begin(), last.end());
    std::vector<std::pair<std::string, std::string>> commands;
    for (const auto& command : cli_->commands_) {
      commands.emplace_back(command->help().synopsis, command->help().summary);
    }
    return absl::StrCat(kProgramSummary,
                        "\n\nUsage:\n  pimgatectl [GLOBAL FLAGS] COMMAND [ARGS] [--json]\n\n",
                        "Global flags (before the command; --json also goes after it):\n",
                        Rows(flags), "\nCommands:\n", Rows(commands),
                        "\n`pimgatectl COMMAND --help` explains one command.\n\n", kProgramFooter);
  }

  std::string GroupHelpText(const CommandLine::Group& group) const {
    std::vector<std::pair<std::string, std::string>> commands;
    for (const Command* command : group.commands) {
      commands.emplace_back(command->help().synopsis, command->help().summary);
    }
    return absl::StrCat("usage: pimgatectl [GLOBAL FLAGS] ", group.help.synopsis, " [--json]\n\n",
                        group.help.description, "\n\nCommands:\n", Rows(commands), "\n`pimgatectl ",
                        group.name, " COMMAND --help` explains one command.\n");
  }

  std::string CommandHelpText(const Command& command) const {
    std::vector<std::pair<std::string, std::string>> arguments, flags, last;
    for (const CLI::Option* option : command.app_->get_options()) {
      if (option->get_positional()) {
        std::string name = option->get_name(/*positional=*/true);
        if (option->get_expected_max() > 1) name += "...";
        arguments.emplace_back(std::move(name), option->get_description());
        continue;
      }
      std::string name = OptionNames(option);
      if (OptionTakesValue(option)) absl::StrAppend(&name, " ", option->get_type_name());
      // --json and --help, which every command has, come last, in that order.
      if (option == command.app_->get_help_ptr()) {
        last.emplace_back(std::move(name), option->get_description());
      } else if (name == "--json") {
        last.emplace(last.begin(), std::move(name), option->get_description());
      } else {
        flags.emplace_back(std::move(name), option->get_description());
      }
    }
    flags.insert(flags.end(), last.begin(), last.end());
    std::string out = absl::StrCat(command.UsageLine(), "\n\n", command.help().description, "\n");
    if (!arguments.empty()) absl::StrAppend(&out, "\nArguments:\n", Rows(arguments));
    absl::StrAppend(&out, "\nFlags:\n", Rows(flags));
    return out;
  }

  const CommandLine* cli_;
};

// ---- Command -----------------------------------------------------------------------------------

Command::Command(CLI::App* app, std::string path, CommandHelp help)
    : app_(app), path_(std::move(path)), help_(std::move(help)) {}

Command& Command::Argument(const std::string& name, const std::string& description,
                           std::string* value, const std::string& missing) {
  required_.emplace_back(app_->add_option(name, *value, description), missing);
  return *this;
}

Command& Command::OptionalArgument(const std::string& name, const std::string& description,
                                   std::optional<std::string>* value) {
  app_->add_option(name, *value, description);
  return *this;
}

Command& Command::Arguments(const std::string& name, const std::string& description,
                            std::vector<std::string>* values) {
  app_->add_option(name, *values, description);
  return *this;
}

Command& Command::Flag(const std::string& flag, const std::string& value_name,
                       const std::string& description, std::optional<std::string>* value) {
  app_->add_option(flag, *value, description)->type_name(value_name);
  return *this;
}

Command& Command::Flags(const std::string& flag, const std::string& value_name,
                        const std::string& description, std::vector<std::string>* values) {
  app_->add_option(flag, *values, description)->type_name(value_name + "...")->delimiter(',');
  return *this;
}

Command& Command::Switch(const std::string& flag, const std::string& description, bool* value) {
  app_->add_flag(flag, *value, description);
  return *this;
}

Command& Command::Check(std::function<absl::Status()> check) {
  check_ = std::move(check);
  return *this;
}

Command& Command::Run(std::function<int(const Invocation&)> run) {
  run_ = std::move(run);
  return *this;
}

std::string Command::UsageLine() const {
  return absl::StrCat("usage: pimgatectl [GLOBAL FLAGS] ", help_.synopsis, " [--json]");
}

// ---- CommandLine -------------------------------------------------------------------------------

CommandLine::CommandLine()
    : root_(std::make_unique<CLI::App>(kProgramSummary, "pimgatectl")),
      formatter_(std::make_shared<HelpFormatter>(this)) {
  // Set before any subcommand is added: subcommands inherit them.
  root_->formatter(formatter_);
  root_->allow_extras();            // reported by Dispatch, with hints
  root_->require_subcommand(0, 1);  // one command; later words are its arguments
  root_->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  root_->set_help_flag("-h,--help", "this help; COMMAND --help explains one command");

  // The global flags take effect in the order given (--token then --token-file: the file's).
  const auto global = [this](const std::string& flag, const std::string& value_name,
                             const std::string& description) {
    root_
        ->add_option_function<std::string>(
            flag, [this, flag](const std::string& value) { SetGlobal(flag, value); }, description)
        ->type_name(value_name)
        ->trigger_on_parse();
  };
  global("--admin", "ADDR",
         "admin API: host:port or unix:/path\n(default: $PIMGATE_ADMIN, else 127.0.0.1:7070)");
  global("--token", "T",
         "admin token (default: $PIMGATE_ADMIN_TOKEN). Arguments show in `ps`:\n"
         "prefer the environment variable or --token-file");
  global("--token-file", "FILE", "read the admin token from FILE");
  root_->add_flag("--tls", connection_.tls, "connect with TLS, trusting the system's CAs");
  global("--tls-ca", "FILE", "connect with TLS, trusting the CA certificate(s) in FILE");
  global("--tls-server-name", "N",
         "name to expect in the server certificate (default: host of --admin)");
  global("--timeout", "DUR", "deadline of each call (default 30s; restart: 5m)");
  root_->add_flag("--json", json_, "the response as JSON (same as --json after the command)");
  root_->add_flag("--version", version_, "print pimgatectl's version");

  help_command_ = root_->add_subcommand("help", "this help, or a command's");
  help_command_->group("");  // not listed: `COMMAND --help` is
  help_command_->add_option("COMMAND", help_topic_, "the command to explain");
}

CommandLine::~CommandLine() = default;

void CommandLine::AddGroup(const std::string& name, CommandHelp help) {
  auto group = std::make_unique<Group>();
  group->name = name;
  group->help = std::move(help);
  CLI::App* app = root_->add_subcommand(name, group->help.summary);
  app->set_help_flag("-h,--help", "this help; COMMAND --help explains one command");
  group->app = app;
  group_of_[app] = group.get();
  groups_.push_back(std::move(group));
}

Command& CommandLine::Add(const std::string& path, CommandHelp help) {
  const std::vector<std::string> words = absl::StrSplit(path, ' ');
  CLI::App* parent = root_.get();
  Group* group = nullptr;
  if (words.size() == 2) {
    for (const auto& candidate : groups_) {
      if (candidate->name == words[0]) group = candidate.get();
    }
    if (group == nullptr) {  // a mistake in the command table, not the operator's
      std::fprintf(stderr, "pimgatectl: command %s added before its group\n", path.c_str());
      std::abort();
    }
    parent = group->app;
  }
  CLI::App* app = parent->add_subcommand(words.back(), help.summary);
  app->set_help_flag("-h,--help", "this help");
  auto command = std::unique_ptr<Command>(new Command(app, path, std::move(help)));
  app->add_flag("--json", command->json_, kJsonHelp);
  command_of_[app] = command.get();
  if (group != nullptr) group->commands.push_back(command.get());
  commands_.push_back(std::move(command));
  return *commands_.back();
}

void CommandLine::SetGlobal(const std::string& flag, const std::string& value) {
  if (global_error_.has_value()) return;  // the first error is the one reported
  if (value.empty()) {
    global_error_ = flag + " needs a value";
  } else if (flag == "--admin") {
    connection_.address = value;
  } else if (flag == "--token") {
    connection_.token = value;
  } else if (flag == "--token-file") {
    absl::StatusOr<std::string> token = ReadFile(value, flag);
    if (!token.ok()) {
      global_error_ = std::string(token.status().message());
    } else {
      connection_.token = std::string(absl::StripTrailingAsciiWhitespace(*token));
    }
  } else if (flag == "--tls-ca") {
    absl::StatusOr<std::string> ca = ReadFile(value, flag);
    if (!ca.ok()) {
      global_error_ = std::string(ca.status().message());
    } else {
      connection_.tls_ca_pem = *std::move(ca);
      connection_.tls = true;
    }
  } else if (flag == "--tls-server-name") {
    connection_.tls_server_name = value;
  } else if (flag == "--timeout") {
    absl::StatusOr<std::chrono::milliseconds> timeout = pimgate::ParseDuration(value);
    if (!timeout.ok() || timeout->count() <= 0) {
      global_error_ = "--timeout must be a duration such as 10s or 2m";
    } else {
      connection_.timeout = absl::Milliseconds(timeout->count());
      connection_.timeout_set = true;
    }
  }
}

int CommandLine::Run(int argc, const char* const* argv) {
  connection_.address = Env("PIMGATE_ADMIN");
  if (connection_.address.empty()) connection_.address = kDefaultAdmin;
  connection_.token = Env("PIMGATE_ADMIN_TOKEN");

  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--") {
      args.insert(args.end(), argv + i, argv + argc);
      break;
    }
    const std::size_t eq = arg.find('=');
    const std::optional<bool> takes_value = absl::StartsWith(arg, "--") && eq != std::string::npos
                                                ? FlagTakesValue(arg.substr(0, eq))
                                                : std::nullopt;
    if (takes_value == false) {
      // `--json=1`: CLI11 would read it as true or false, but a switch takes no value.
      if (!switch_with_value_.has_value()) switch_with_value_ = arg.substr(0, eq);
      args.push_back(arg.substr(0, eq));
    } else if (takes_value == true && eq + 1 == arg.size()) {
      // `--flag=` is an empty value, as `--flag ""` is; CLI11 would take the next argument
      // instead (`--admin="$UNSET" stats` must not make "stats" the address).
      args.push_back(arg.substr(0, eq));
      args.emplace_back();
    } else {
      args.push_back(arg);
    }
  }
  std::reverse(args.begin(), args.end());  // CLI11 takes them last first

  try {
    root_->parse(args);
  } catch (const CLI::CallForHelp&) {
    const CLI::App* app = root_.get();
    while (!app->get_subcommands().empty()) app = app->get_subcommands().front();
    if (root_->get_help_ptr()->count() > 0 || app == help_command_) app = root_.get();
    return PrintHelp(app);
  } catch (const CLI::ArgumentMismatch&) {
    // The parser ran out of arguments: the flag missing its value is the last one.
    return UsageError(absl::StrCat(FlagName(argv[argc - 1]), " needs a value"), SelectedCommand());
  } catch (const CLI::ParseError& error) {
    return UsageError(error.what(), SelectedCommand());
  }
  return Dispatch();
}

int CommandLine::Dispatch() {
  if (version_) {
    std::puts(kVersion);
    return kExitOk;
  }
  if (global_error_.has_value()) return UsageError(*global_error_, nullptr);
  if (switch_with_value_.has_value()) {
    const std::vector<std::string> globals = GlobalFlags();
    const bool global =
        *switch_with_value_ == "--json" ||
        std::find(globals.begin(), globals.end(), *switch_with_value_) != globals.end();
    return UsageError(*switch_with_value_ + " takes no value",
                      global ? nullptr : SelectedCommand());
  }
  for (const std::string& extra : Remaining(root_.get())) {
    if (!LooksLikeFlag(extra)) return UnknownCommand(extra);
    const std::string flag = FlagName(extra);
    if (IsCommandFlag(flag)) {
      return UsageError(absl::StrCat(flag, " is a flag of a command: put it after the command"),
                        nullptr);
    }
    std::vector<std::string> known = GlobalFlags();
    known.insert(known.end(), {"--json", "--help", "--version"});
    return UsageError(absl::StrCat("unknown global flag ", flag, Suggestion(flag, known)), nullptr);
  }
  if (root_->get_subcommands().empty()) return UsageError("missing command", nullptr);
  const CLI::App* app = root_->get_subcommands().front();

  if (app == help_command_) {
    if (help_topic_.empty()) return PrintHelp(root_.get());
    const std::string topic = absl::StrJoin(help_topic_, " ");
    const CLI::App* found = Find(help_topic_);
    return found != nullptr ? PrintHelp(found) : UnknownCommand(topic);
  }
  if (auto it = group_of_.find(app); it != group_of_.end()) {
    const Group& group = *it->second;
    const std::vector<std::string> extras = Remaining(app);
    if (!extras.empty() && !LooksLikeFlag(extras.front())) {
      return UnknownCommand(absl::StrCat(group.name, " ", extras.front()));
    }
    if (!extras.empty() || app->get_subcommands().empty()) {
      std::vector<std::string> names;
      for (const Command* command : group.commands) {
        names.push_back(command->app_->get_name());
      }
      const std::string last = names.back();
      names.pop_back();
      return UsageError(
          absl::StrCat(group.name, " needs ", absl::StrJoin(names, ", "), " or ", last), nullptr);
    }
    app = app->get_subcommands().front();
  }

  const Command& command = *command_of_.at(app);
  if (int code = CheckExtras(app, &command); code != kExitOk) return code;
  for (const auto& [option, missing] : command.required_) {
    if (option->count() == 0) return UsageError("missing " + missing, &command);
  }
  if (const std::vector<std::string> extras = Remaining(app); !extras.empty()) {
    return UsageError(absl::StrCat("unexpected argument \"", extras.front(), "\""), &command);
  }
  if (command.check_) {
    if (absl::Status status = command.check_(); !status.ok()) {
      return UsageError(std::string(status.message()), &command);
    }
  }
  AdminClient client(connection_);
  return command.run_(Invocation{client, json_ || command.json_});
}

// Flags a command does not know, after it: the first one is the error.
int CommandLine::CheckExtras(const CLI::App* app, const Command* command) const {
  const std::vector<std::string> globals = GlobalFlags();
  for (const std::string& extra : Remaining(app)) {
    if (!LooksLikeFlag(extra)) continue;
    const std::string flag = FlagName(extra);
    if (std::find(globals.begin(), globals.end(), flag) != globals.end()) {
      return UsageError(absl::StrCat(flag, " is a global flag: put it before the command"),
                        command);
    }
    std::vector<std::string> known;
    for (const CLI::Option* option : app->get_options()) {
      if (option == app->get_help_ptr()) continue;
      for (const std::string& name : option->get_lnames()) known.push_back("--" + name);
    }
    return UsageError(absl::StrCat("unknown flag ", flag, Suggestion(flag, known)), command);
  }
  return kExitOk;
}

int CommandLine::PrintHelp(const CLI::App* app) const {
  std::fputs(formatter_->make_help(app, app->get_name(), CLI::AppFormatMode::Normal).c_str(),
             stdout);
  return kExitOk;
}

int CommandLine::UsageError(const std::string& message, const Command* command) const {
  std::fprintf(stderr, "pimgatectl: %s\n", message.c_str());
  if (command != nullptr) {
    std::fprintf(stderr, "%s\n", command->UsageLine().c_str());
  } else {
    std::fprintf(stderr, "run `pimgatectl --help` for usage\n");
  }
  return kExitUsage;
}

int CommandLine::UnknownCommand(const std::string& name) const {
  std::vector<std::string> names = {"help"};
  for (const auto& group : groups_) names.push_back(group->name);
  for (const auto& command : commands_) names.push_back(command->path());
  return UsageError(absl::StrCat("unknown command \"", name, "\"", Suggestion(name, names)),
                    nullptr);
}

const CLI::App* CommandLine::Find(const std::vector<std::string>& path) const {
  const std::string joined = absl::StrJoin(path, " ");
  for (const auto& command : commands_) {
    if (command->path() == joined) return command->app_;
  }
  for (const auto& group : groups_) {
    if (group->name == joined) return group->app;
  }
  // `help stats more words`: the words after a command (not a group) do not matter.
  for (const auto& command : commands_) {
    if (path.size() > 1 && command->path() == path.front()) return command->app_;
  }
  return nullptr;
}

bool CommandLine::IsCommandFlag(const std::string& flag) const {
  for (const auto& command : commands_) {
    for (const CLI::Option* option : command->app_->get_options()) {
      if (option == command->app_->get_help_ptr()) continue;
      for (const std::string& name : option->get_lnames()) {
        if ("--" + name == flag && name != "json") return true;
      }
    }
  }
  return false;
}

std::vector<std::string> CommandLine::GlobalFlags() const {
  std::vector<std::string> flags;
  for (const CLI::Option* option : root_->get_options()) {
    for (const std::string& name : option->get_lnames()) {
      if (name != "json" && name != "help" && name != "version") flags.push_back("--" + name);
    }
  }
  return flags;
}

std::optional<bool> CommandLine::FlagTakesValue(const std::string& flag) const {
  const auto find = [&flag](const CLI::App* app) -> std::optional<bool> {
    for (const CLI::Option* option : app->get_options()) {
      for (const std::string& name : option->get_lnames()) {
        if ("--" + name == flag) return OptionTakesValue(option);
      }
    }
    return std::nullopt;
  };
  if (std::optional<bool> global = find(root_.get()); global.has_value()) return global;
  for (const auto& command : commands_) {
    if (std::optional<bool> takes_value = find(command->app_); takes_value.has_value()) {
      return takes_value;
    }
  }
  return std::nullopt;
}

const Command* CommandLine::SelectedCommand() const {
  const CLI::App* app = root_.get();
  while (!app->get_subcommands().empty()) app = app->get_subcommands().front();
  auto it = command_of_.find(app);
  return it == command_of_.end() ? nullptr : it->second;
}

}  // namespace pimgate::ctl
