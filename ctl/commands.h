// pimgatectl's commands, one group per file (ctl/commands_*.cc). A new group of commands is a
// new file with its Add function, listed here and in ctl/CMakeLists.txt; the program's help
// lists the groups in the order of kCommandGroups.
#ifndef PIMGATE_CTL_COMMANDS_H_
#define PIMGATE_CTL_COMMANDS_H_

#include "ctl/command_line.h"

namespace pimgate::ctl {

// `stats`, `plugins`: what pimgate and its plugins are doing (commands_stats.cc).
void AddStatsCommands(CommandLine& cli);
// `pause`, `resume`, `restart`, `seek`: one plugin's delivery and process (commands_plugin.cc).
void AddPluginCommands(CommandLine& cli);
// `dlq list`, `dlq retry`, `dlq purge`: dead letters (commands_dlq.cc).
void AddDeadLetterCommands(CommandLine& cli);
// `event`, `events`, `quarantine`: what the log holds (commands_events.cc).
void AddEventCommands(CommandLine& cli);
// `reconcile`: ask the PIM for what its webhooks missed (commands_reconcile.cc).
void AddReconcileCommands(CommandLine& cli);
// `platform ...`: Akeneo's Event Platform subscriptions of a source (commands_platform.cc).
void AddPlatformCommands(CommandLine& cli);

inline constexpr void (*kCommandGroups[])(CommandLine&) = {
    AddStatsCommands, AddPluginCommands,    AddDeadLetterCommands,
    AddEventCommands, AddReconcileCommands, AddPlatformCommands,
};

}  // namespace pimgate::ctl

#endif  // PIMGATE_CTL_COMMANDS_H_
