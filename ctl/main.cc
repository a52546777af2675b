// pimgatectl: the operator's command line for a running pimgate, over its gRPC admin API
// (proto/pimgate/v1/admin.proto). Readable tables by default, --json for scripts.
#include "ctl/command_line.h"
#include "ctl/commands.h"

int main(int argc, char** argv) {
  pimgate::ctl::CommandLine cli;
  for (const auto add : pimgate::ctl::kCommandGroups) add(cli);
  return cli.Run(argc, argv);
}
