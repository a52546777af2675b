// pimgate's command line, on CLI11: what to do (serve, or check a configuration) with which
// files. Prints the generated --help, the version and usage errors itself.
#ifndef PIMGATE_APP_COMMAND_LINE_H_
#define PIMGATE_APP_COMMAND_LINE_H_

#include <cstddef>
#include <string>

namespace pimgate {

// What `pimgate ARGS` asks for.
struct CommandLine {
  enum class Action {
    kServe,        // --config FILE [--ready-file FILE]
    kCheckConfig,  // --check-config FILE
    // migrate-store --from rocksdb --to jetstream --source-path DIR --config FILE [--resume]
    kMigrateStore,
    kExit,  // nothing more to do: exit with `exit_code`
  };
  Action action = Action::kExit;
  // With kExit: 0 once --help or --version was printed, 2 once a usage error was.
  int exit_code = 0;
  std::string config_path;  // --config, with kServe
  std::string check_path;   // --check-config, with kCheckConfig (it wins over --config)
  std::string ready_file;   // --ready-file; empty: none
  // kMigrateStore: the embedded store to copy (--source-path) into the store --config names,
  // and whether to continue an interrupted copy (--resume).
  std::string source_path;
  bool resume = false;
  std::size_t batch_events = 500;  // --batch-events: events per stream record
};

// Parses argv (argv[0] is the program). --help and --version go to stdout, a usage error
// ("pimgate: MESSAGE", then the help) to stderr.
CommandLine ParseCommandLine(int argc, const char* const* argv);

}  // namespace pimgate

#endif  // PIMGATE_APP_COMMAND_LINE_H_
