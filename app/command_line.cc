// pimgate's command line on CLI11, with the usage errors it always had: "pimgate: MESSAGE", the
// help, exit 2.
#include "app/command_line.h"

#include <cstdio>
#include <optional>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/did_you_mean.h"

namespace pimgate {
namespace {

constexpr char kVersion[] = "pimgate 0.1.0";
constexpr int kExitUsage = 2;

// The modes are written out; the flags below them are listed from their definitions.
class HelpFormatter : public CLI::Formatter {
 public:
  HelpFormatter() {
    column_width(23);
    label("Options", "Flags");
  }
  std::string make_usage(const CLI::App*, std::string) const override {
    return R"(
Usage:
  pimgate --config FILE [--ready-file FILE]   run the server
  pimgate --check-config FILE                 validate a configuration and exit
  pimgate migrate-store --from rocksdb --to jetstream --source-path DIR --config FILE [--resume]
                                              copy an embedded store into an empty JetStream
                                              stream (the one FILE configures), then verify it
  pimgate --version | --help
)";
  }
  std::string make_option_name(const CLI::Option* option, bool positional) const override {
    // "-h, --help" rather than "-h,--help".
    std::string names;
    for (const std::string& name : option->get_snames()) absl::StrAppend(&names, "-", name, ", ");
    for (const std::string& name : option->get_lnames()) absl::StrAppend(&names, "--", name, ", ");
    return names.substr(0, names.size() - 2);
  }
  std::string make_option_opts(const CLI::Option* option) const override {
    return option->get_expected_max() > 0 ? " " + option->get_type_name() : "";
  }
};

struct Flags {
  std::optional<std::string> config, check, ready_file;
  bool version = false;
};

struct MigrateFlags {
  std::string from, to, source_path, config;
  bool resume = false;
  std::size_t batch_events = 500;
};

CommandLine Exit(int code) {
  CommandLine command_line;
  command_line.action = CommandLine::Action::kExit;
  command_line.exit_code = code;
  return command_line;
}

}  // namespace

CommandLine ParseCommandLine(int argc, const char* const* argv) {
  CLI::App app("pimgate: Akeneo PIM webhook gateway and durable event log", "pimgate");
  app.formatter(std::make_shared<HelpFormatter>());
  app.allow_extras();  // reported below, as "unknown argument"
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  app.footer("Exit codes: 0 ok, 1 runtime failure, 2 invalid configuration or usage.");
  Flags flags;
  app.add_option("--config", flags.config, "serve with the configuration in FILE")
      ->type_name("FILE");
  app.add_option("--check-config", flags.check,
                 "validate the configuration in FILE (and that each plugin's command\n"
                 "exists) and exit, without starting anything")
      ->type_name("FILE");
  app.add_option("--ready-file", flags.ready_file,
                 "once serving, write {\"gateway_port\":N,\"metrics_port\":M,\"admin_port\":A} "
                 "to\nFILE (useful with port 0; metrics_port is 0 when metrics are off or could\n"
                 "not listen, admin_port likewise, and on a unix socket)")
      ->type_name("FILE");
  app.set_help_flag("-h,--help", "this help");
  app.add_flag("--version", flags.version, "print pimgate's version");
  MigrateFlags migrate_flags;
  CLI::App* migrate = app.add_subcommand(
      "migrate-store",
      "copy an embedded (RocksDB) store into an empty JetStream stream, then verify the copy");
  migrate->allow_extras(false);
  migrate->add_option("--from", migrate_flags.from, "the backend of the store to copy: rocksdb")
      ->type_name("BACKEND")
      ->required();
  migrate->add_option("--to", migrate_flags.to, "the backend to copy into: jetstream")
      ->type_name("BACKEND")
      ->required();
  migrate
      ->add_option("--source-path", migrate_flags.source_path,
                   "the RocksDB store to copy (the old store.path; pimgate stopped)")
      ->type_name("DIR")
      ->required();
  migrate
      ->add_option("--config", migrate_flags.config,
                   "the new configuration: store.backend jetstream, its cluster and names,\n"
                   "and store.path, the node's new replica directory")
      ->type_name("FILE")
      ->required();
  migrate->add_flag("--resume", migrate_flags.resume,
                    "continue (and verify) an interrupted copy into the same stream");
  migrate
      ->add_option("--batch-events", migrate_flags.batch_events,
                   "events per stream record (default 500; keep records under the\n"
                   "servers' max_payload, or they are sent in chunks)")
      ->type_name("N");

  const auto usage_error = [&app](const std::string& message) {
    std::fprintf(stderr, "pimgate: %s\n\n%s", message.c_str(), app.help().c_str());
    return Exit(kExitUsage);
  };
  // `--config=` is an empty value, as `--config ""` is; CLI11 would take the next argument.
  std::vector<std::string> args;
  for (int i = argc - 1; i >= 1; --i) {  // CLI11 takes them last first
    const std::string arg = argv[i];
    if (absl::StartsWith(arg, "--") && absl::EndsWith(arg, "=") &&
        arg.find('=') + 1 == arg.size()) {
      args.emplace_back();
      args.push_back(arg.substr(0, arg.size() - 1));
    } else {
      args.push_back(arg);
    }
  }
  try {
    app.parse(args);
  } catch (const CLI::CallForHelp&) {
    std::fputs((migrate->parsed() ? migrate->help() : app.help()).c_str(), stdout);
    return Exit(0);
  } catch (const CLI::ArgumentMismatch&) {
    // The parser ran out of arguments: the flag missing its value is the last one.
    return usage_error(absl::StrCat(argv[argc - 1], " needs a file"));
  } catch (const CLI::ParseError& error) {
    return usage_error(error.what());
  }
  if (flags.version) {
    std::puts(kVersion);
    return Exit(0);
  }
  if (const std::vector<std::string> extras = app.remaining(); !extras.empty()) {
    const std::string arg = extras.front();
    std::vector<std::string> known;
    for (const CLI::Option* option : app.get_options()) {
      for (const std::string& name : option->get_lnames()) known.push_back("--" + name);
    }
    const std::optional<std::string> near =
        absl::StartsWith(arg, "-") ? DidYouMean(arg.substr(0, arg.find('=')), known) : std::nullopt;
    return usage_error(absl::StrCat("unknown argument ", arg,
                                    near ? absl::StrCat("; did you mean ", *near, "?") : ""));
  }
  for (const auto& [flag, value] :
       {std::pair{"--config", &flags.config}, std::pair{"--check-config", &flags.check},
        std::pair{"--ready-file", &flags.ready_file}}) {
    if (value->has_value() && (*value)->empty()) {
      return usage_error(absl::StrCat(flag, " needs a file"));
    }
  }
  CommandLine command_line;
  command_line.ready_file = flags.ready_file.value_or("");
  if (migrate->parsed()) {
    if (migrate_flags.from != "rocksdb" || migrate_flags.to != "jetstream") {
      return usage_error(
          absl::StrCat("migrate-store copies --from rocksdb --to jetstream, not --from ",
                       migrate_flags.from, " --to ", migrate_flags.to));
    }
    if (migrate_flags.batch_events < 1 || migrate_flags.batch_events > 100000) {
      return usage_error("--batch-events must be between 1 and 100000");
    }
    if (migrate_flags.source_path.empty() || migrate_flags.config.empty()) {
      return usage_error("migrate-store needs --source-path DIR and --config FILE");
    }
    command_line.action = CommandLine::Action::kMigrateStore;
    command_line.source_path = migrate_flags.source_path;
    command_line.config_path = migrate_flags.config;
    command_line.resume = migrate_flags.resume;
    command_line.batch_events = migrate_flags.batch_events;
    return command_line;
  }
  if (flags.check.has_value()) {
    command_line.action = CommandLine::Action::kCheckConfig;
    command_line.check_path = *flags.check;
  } else if (flags.config.has_value()) {
    command_line.action = CommandLine::Action::kServe;
    command_line.config_path = *flags.config;
  } else {
    return usage_error("--config is required");
  }
  return command_line;
}

}  // namespace pimgate
