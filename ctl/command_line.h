// pimgatectl's command line, on CLI11: the global flags (how to reach pimgate), the commands and
// their groups (`dlq list`), the generated help, and the usage errors scripts and tests rely on
// (exit 2, "did you mean", the hint for a flag on the wrong side of the command).
//
// The commands themselves are added by the ctl/commands_*.cc files listed in ctl/commands.h: a
// command declares its arguments and flags (bound to its own storage), a check run before
// anything is sent, and its run function.
#ifndef PIMGATE_CTL_COMMAND_LINE_H_
#define PIMGATE_CTL_COMMAND_LINE_H_

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "ctl/client.h"

namespace CLI {
class App;
class Option;
}  // namespace CLI

namespace pimgate::ctl {

class HelpFormatter;

// What a command's run function gets.
struct Invocation {
  AdminClient& client;
  bool json = false;  // --json, before or after the command
};

// What the help says about a command or a group.
struct CommandHelp {
  // The command as the operator types it after `pimgatectl [GLOBAL FLAGS]`, e.g.
  // "seek NAME (--sequence N | --time T)": the usage line (followed by " [--json]") and the
  // program's command list show it. A long one continues on lines indented with spaces.
  std::string synopsis;
  // One line for the command list of `pimgatectl --help`.
  std::string summary;
  // The text of `pimgatectl COMMAND --help`, lines of at most 100 columns.
  std::string description;
};

// One command: made by CommandLine::Add; the setters return *this to chain. Values are bound to
// storage the caller keeps alive as long as the CommandLine (a shared_ptr captured by the check
// and run functions does).
class Command {
 public:
  Command(const Command&) = delete;
  Command& operator=(const Command&) = delete;

  // A positional argument that must be given; `missing` names it in the error when it is not
  // ("missing plugin NAME").
  Command& Argument(const std::string& name, const std::string& description, std::string* value,
                    const std::string& missing);
  // A positional argument that may be left out.
  Command& OptionalArgument(const std::string& name, const std::string& description,
                            std::optional<std::string>* value);
  // Any number of positional arguments, after the others.
  Command& Arguments(const std::string& name, const std::string& description,
                     std::vector<std::string>* values);
  // `--flag VALUE` or `--flag=VALUE`; given twice, the last one counts.
  Command& Flag(const std::string& flag, const std::string& value_name,
                const std::string& description, std::optional<std::string>* value);
  // `--flag VALUE...`: one or more values, up to the next flag, comma-separated values split;
  // given twice, the values add up.
  Command& Flags(const std::string& flag, const std::string& value_name,
                 const std::string& description, std::vector<std::string>* values);
  // `--flag`, no value.
  Command& Switch(const std::string& flag, const std::string& description, bool* value);
  // Checks the values once parsed, before anything is sent: an error is a usage error (exit 2)
  // printed with the command's usage line.
  Command& Check(std::function<absl::Status()> check);
  // What the command does; returns the exit code (ctl/exit_codes.h).
  Command& Run(std::function<int(const Invocation&)> run);

  const std::string& path() const { return path_; }  // "stats", "dlq list"
  const CommandHelp& help() const { return help_; }
  // "usage: pimgatectl [GLOBAL FLAGS] <synopsis> [--json]"
  std::string UsageLine() const;

 private:
  friend class CommandLine;
  friend class HelpFormatter;
  Command(CLI::App* app, std::string path, CommandHelp help);

  CLI::App* app_;
  std::string path_;
  CommandHelp help_;
  std::vector<std::pair<const CLI::Option*, std::string>> required_;  // with "missing" texts
  bool json_ = false;                                                 // --json after the command
  std::function<absl::Status()> check_;
  std::function<int(const Invocation&)> run_;
};

// The whole command line: global flags, the `help` command, the commands and groups added.
// Run once; not thread-safe.
class CommandLine {
 public:
  CommandLine();
  ~CommandLine();
  CommandLine(const CommandLine&) = delete;
  CommandLine& operator=(const CommandLine&) = delete;

  // A group of commands, `NAME COMMAND ...` ("dlq"); help.synopsis is its usage line's
  // ("dlq COMMAND [ARGS]").
  void AddGroup(const std::string& name, CommandHelp help);
  // The command `path`: "stats", or "dlq list" in the group "dlq" (added before). The program's
  // help lists commands in the order they are added.
  Command& Add(const std::string& path, CommandHelp help);

  // Parses `argv`, then runs the command it names, or prints help or a usage error. Returns the
  // exit code.
  int Run(int argc, const char* const* argv);

 private:
  friend class HelpFormatter;

  struct Group {
    CLI::App* app = nullptr;
    std::string name;
    CommandHelp help;
    std::vector<Command*> commands;
  };

  // The global flag `flag` was given `value` (in the order given, as the parser meets them).
  void SetGlobal(const std::string& flag, const std::string& value);
  // After parsing: what to do with the selected command, or the usage error.
  int Dispatch();
  int PrintHelp(const CLI::App* app) const;
  // Prints "pimgatectl: MESSAGE" and how to get help (the command's usage line, when known) on
  // stderr; returns kExitUsage.
  int UsageError(const std::string& message, const Command* command) const;
  int UnknownCommand(const std::string& name) const;
  int CheckExtras(const CLI::App* app, const Command* command) const;
  // The command or group the words `path` name, or null.
  const CLI::App* Find(const std::vector<std::string>& path) const;
  // Every long flag of a command ("--limit"), for the hint when one comes before the command.
  bool IsCommandFlag(const std::string& flag) const;
  // The flags that go before the command (but --json, --help and --version, which a command
  // takes too or which need none).
  std::vector<std::string> GlobalFlags() const;
  // Whether `flag` ("--admin") takes a value, as a global flag or a command's; nothing for a
  // flag nobody has.
  std::optional<bool> FlagTakesValue(const std::string& flag) const;
  // The command the parser selected so far, if any.
  const Command* SelectedCommand() const;

  std::unique_ptr<CLI::App> root_;
  std::shared_ptr<HelpFormatter> formatter_;
  std::vector<std::unique_ptr<Command>> commands_;  // in the order added
  std::vector<std::unique_ptr<Group>> groups_;
  std::map<const CLI::App*, Command*> command_of_;
  std::map<const CLI::App*, Group*> group_of_;
  CLI::App* help_command_ = nullptr;  // `pimgatectl help [COMMAND]`
  std::vector<std::string> help_topic_;

  AdminConnection connection_;
  bool json_ = false;                             // --json before the command
  bool version_ = false;                          // --version
  std::optional<std::string> global_error_;       // the first bad global flag value
  std::optional<std::string> switch_with_value_;  // the first switch given a value: --json=1
};

}  // namespace pimgate::ctl

#endif  // PIMGATE_CTL_COMMAND_LINE_H_
