// `pimgatectl pause`, `resume`, `restart` and `seek`: act on one plugin's delivery or process.
#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/units.h"
#include "ctl/client.h"
#include "ctl/command_line.h"
#include "ctl/commands.h"
#include "ctl/exit_codes.h"
#include "ctl/output.h"
#include "ctl/values.h"
#include "google/protobuf/util/time_util.h"
#include "pimgate/v1/admin.grpc.pb.h"

namespace pimgate::ctl {
namespace {

namespace v1 = pimgate::v1;
using google::protobuf::util::TimeUtil;

// A restart waits for a drain (up to the plugin's ack_timeout), a stop (stop_timeout) and a start
// (start_timeout): 30 s + 10 s + 30 s by default, so its call gets longer unless --timeout says.
constexpr absl::Duration kRestartTimeout = absl::Minutes(5);

constexpr char kPluginName[] = "the plugin's name (plugins[].name)";

// `pause NAME` and `resume NAME`.
int RunPause(const Invocation& in, const std::string& plugin, bool pause) {
  grpc::Status status;
  if (pause) {
    v1::PausePluginRequest request;
    request.set_plugin(plugin);
    v1::PausePluginResponse response;
    status = in.client.Call(&v1::Admin::Stub::PausePlugin, request, response);
    if (status.ok() && in.json) return PrintJson(response);
  } else {
    v1::ResumePluginRequest request;
    request.set_plugin(plugin);
    v1::ResumePluginResponse response;
    status = in.client.Call(&v1::Admin::Stub::ResumePlugin, request, response);
    if (status.ok() && in.json) return PrintJson(response);
  }
  if (!status.ok()) return ReportFailure(in.client, pause ? "pause" : "resume", status);
  if (pause) {
    std::printf("plugin %s paused: its events are held until `pimgatectl resume %s`\n",
                plugin.c_str(), plugin.c_str());
  } else {
    std::printf("plugin %s resumed\n", plugin.c_str());
  }
  return kExitOk;
}

struct RestartArgs {
  std::string plugin;
  std::optional<std::string> drain_timeout;
  std::optional<std::chrono::milliseconds> drain;  // parsed by the check
};

absl::Status CheckRestart(RestartArgs& args) {
  if (!args.drain_timeout.has_value()) return absl::OkStatus();
  absl::StatusOr<std::chrono::milliseconds> drain = pimgate::ParseDuration(*args.drain_timeout);
  if (!drain.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--drain-timeout: ", drain.status().message()));
  }
  args.drain = *drain;
  return absl::OkStatus();
}

int RunRestart(const Invocation& in, const RestartArgs& args) {
  v1::RestartPluginRequest request;
  request.set_plugin(args.plugin);
  if (args.drain.has_value()) {
    *request.mutable_drain_timeout() = TimeUtil::MillisecondsToDuration(args.drain->count());
  }
  v1::RestartPluginResponse response;
  if (grpc::Status s =
          in.client.Call(&v1::Admin::Stub::RestartPlugin, request, response, kRestartTimeout);
      !s.ok()) {
    return ReportFailure(in.client, "restart", s);
  }
  if (in.json) return PrintJson(response);
  std::printf(
      "plugin %s restarted: pid %s -> %u; %lu delivery(ies) in flight, %lu of them sent "
      "again to the new process\n",
      request.plugin().c_str(),
      response.old_pid() == 0 ? "-" : absl::StrCat(response.old_pid()).c_str(), response.new_pid(),
      static_cast<unsigned long>(response.in_flight()),
      static_cast<unsigned long>(response.redelivered()));
  return kExitOk;
}

struct SeekArgs {
  std::string plugin;
  std::optional<std::string> sequence_text, time_text;
  v1::SeekPluginRequest request;  // made by the check
};

absl::Status CheckSeek(SeekArgs& args) {
  if (args.sequence_text.has_value() == args.time_text.has_value()) {
    return absl::InvalidArgumentError("give one of --sequence N or --time T");
  }
  args.request.set_plugin(args.plugin);
  if (args.sequence_text.has_value()) {
    absl::StatusOr<uint64_t> sequence = ParseSequence(*args.sequence_text, "--sequence");
    if (!sequence.ok()) return sequence.status();
    args.request.set_sequence(*sequence);
  } else {
    absl::StatusOr<google::protobuf::Timestamp> time = ParseTime(*args.time_text);
    if (!time.ok()) return time.status();
    *args.request.mutable_time() = *time;
  }
  return absl::OkStatus();
}

int RunSeek(const Invocation& in, const SeekArgs& args) {
  v1::SeekPluginResponse response;
  if (grpc::Status s = in.client.Call(&v1::Admin::Stub::SeekPlugin, args.request, response);
      !s.ok()) {
    return ReportFailure(in.client, "seek", s);
  }
  if (in.json) return PrintJson(response);
  const std::string& plugin = args.request.plugin();
  if (response.events_to_replay() == 0) {
    std::printf("plugin %s: skipped to the end of the log; it resumes with sequence %lu\n",
                plugin.c_str(), static_cast<unsigned long>(response.sequence()));
  } else {
    std::printf("plugin %s: replaying from sequence %lu (%lu event(s) up to head %lu)\n",
                plugin.c_str(), static_cast<unsigned long>(response.sequence()),
                static_cast<unsigned long>(response.events_to_replay()),
                static_cast<unsigned long>(response.head_sequence()));
  }
  return kExitOk;
}

}  // namespace

void AddPluginCommands(CommandLine& cli) {
  for (const bool pause : {true, false}) {
    auto plugin = std::make_shared<std::string>();
    CommandHelp help =
        pause ? CommandHelp{.synopsis = "pause NAME",
                            .summary = "hold a plugin's events (nothing is skipped)",
                            .description =
                                "Holds the plugin's events: nothing new is sent, nothing is "
                                "skipped; deliveries already\noutstanding complete. Saved in the "
                                "store: the plugin stays paused across restarts of\npimgate (and "
                                "of the plugin) until `resume`."}
              : CommandHelp{.synopsis = "resume NAME",
                            .summary = "deliver a paused plugin's events again",
                            .description = "Delivers a paused plugin's events again."};
    cli.Add(pause ? "pause" : "resume", std::move(help))
        .Argument("NAME", kPluginName, plugin.get(), "plugin NAME")
        .Run([plugin, pause](const Invocation& in) { return RunPause(in, *plugin, pause); });
  }

  auto restart = std::make_shared<RestartArgs>();
  cli.Add("restart",
          {.synopsis = "restart NAME [--drain-timeout DUR]",
           .summary = "restart a plugin's process gracefully (new version)",
           .description =
               "Restarts the plugin's process gracefully, e.g. once a new version of it is "
               "installed:\nholds its events, waits up to --drain-timeout (default: its "
               "ack_timeout) for the\ndeliveries in flight to be answered, stops the process "
               "(SIGTERM, then SIGKILL after its\nstop_timeout) and starts it again, then "
               "delivers again what was not answered (not a\nfailed attempt). Waits until the "
               "new process is SERVING (the call's deadline is 5m\nunless --timeout is given). "
               "No crash is counted; a plugin in backoff starts at once; a\npaused plugin stays "
               "paused. Not for `address` plugins, which pimgate does not run."})
      .Argument("NAME", kPluginName, &restart->plugin, "plugin NAME")
      .Flag("--drain-timeout", "DUR",
            "how long to wait for answers to the deliveries in flight (default: the\n"
            "plugin's ack_timeout); those not answered go again to the new process",
            &restart->drain_timeout)
      .Check([restart] { return CheckRestart(*restart); })
      .Run([restart](const Invocation& in) { return RunRestart(in, *restart); });

  auto seek = std::make_shared<SeekArgs>();
  cli.Add("seek",
          {.synopsis = "seek NAME (--sequence N | --time T)",
           .summary = "replay a plugin from a sequence or a time",
           .description =
               "Replays: the plugin's next event becomes sequence N, or the first event received "
               "at or\nafter T. Outstanding deliveries are abandoned. Seeking forward skips "
               "events.\n--sequence 1 replays the whole log; head + 1 skips everything stored so "
               "far."})
      .Argument("NAME", kPluginName, &seek->plugin, "plugin NAME")
      .Flag("--sequence", "N", "the sequence of the next event to deliver", &seek->sequence_text)
      .Flag("--time", "T", "deliver next the first event received at or after T", &seek->time_text)
      .Check([seek] { return CheckSeek(*seek); })
      .Run([seek](const Invocation& in) { return RunSeek(in, *seek); });
}

}  // namespace pimgate::ctl
