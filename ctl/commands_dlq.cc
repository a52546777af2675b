// `pimgatectl dlq list|retry|purge`: a plugin's dead letters.
#include <algorithm>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/glob.h"
#include "ctl/client.h"
#include "ctl/command_line.h"
#include "ctl/commands.h"
#include "ctl/exit_codes.h"
#include "ctl/output.h"
#include "ctl/values.h"
#include "pimgate/v1/admin.grpc.pb.h"

namespace pimgate::ctl {
namespace {

namespace v1 = pimgate::v1;

constexpr char kPluginName[] = "the plugin's name (plugins[].name)";
constexpr char kPageToken[] = "continue after a previous list (it prints the token)";

struct ListArgs {
  std::string plugin;
  std::optional<std::string> limit_text, page_token, type, resource, kind, reason;
  int64_t limit = kDefaultLimit;
  v1::ListDeadLettersRequest request;  // made by the check, but for the page size
};

absl::Status CheckList(ListArgs& args) {
  absl::StatusOr<int64_t> limit = ParseLimit(args.limit_text);
  if (!limit.ok()) return limit.status();
  args.limit = *limit;
  args.request.set_plugin(args.plugin);
  args.request.set_page_token(args.page_token.value_or(""));
  if (args.type.has_value()) {
    if (std::optional<std::string> problem = EventTypeGlobProblem(*args.type)) {
      return absl::InvalidArgumentError(absl::StrCat("--type ", *problem));
    }
    args.request.set_type(*args.type);
  }
  args.request.set_resource_id(args.resource.value_or(""));
  const std::string kind = args.kind.value_or("any");
  if (kind == "any") {
    args.request.set_kind(v1::DEAD_LETTER_KIND_ANY);
  } else if (kind == "rejected") {
    args.request.set_kind(v1::DEAD_LETTER_KIND_REJECTED);
  } else if (kind == "exhausted") {
    args.request.set_kind(v1::DEAD_LETTER_KIND_EXHAUSTED);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--kind must be rejected, exhausted or any, got \"", kind, "\""));
  }
  args.request.set_reason_contains(args.reason.value_or(""));
  return absl::OkStatus();
}

bool Filtered(const v1::ListDeadLettersRequest& request) {
  return !request.type().empty() || !request.resource_id().empty() ||
         request.kind() != v1::DEAD_LETTER_KIND_ANY || !request.reason_contains().empty();
}

int RunList(const Invocation& in, const ListArgs& args) {
  v1::ListDeadLettersRequest request = args.request;
  v1::ListDeadLettersResponse all;
  // Pages until the limit is reached or nothing is left. A filter that matches rarely takes
  // several calls (each one examines a bounded number of letters); they add up here.
  while (true) {
    request.set_page_size(static_cast<int32_t>(
        std::min<int64_t>(args.limit - all.dead_letters_size(), kMaxPageSize)));
    v1::ListDeadLettersResponse page;
    if (grpc::Status s = in.client.Call(&v1::Admin::Stub::ListDeadLetters, request, page);
        !s.ok()) {
      return ReportFailure(in.client, "dlq list", s);
    }
    for (v1::DeadLetter& letter : *page.mutable_dead_letters()) {
      *all.add_dead_letters() = std::move(letter);
    }
    all.set_scanned(all.scanned() + page.scanned());
    all.set_next_page_token(page.next_page_token());
    if (page.next_page_token().empty() || all.dead_letters_size() >= args.limit) break;
    request.set_page_token(page.next_page_token());
  }
  if (in.json) return PrintJson(all);
  if (all.dead_letters().empty()) {
    if (Filtered(request)) {
      std::printf("no dead letter of plugin %s matches (%lu examined)\n", request.plugin().c_str(),
                  static_cast<unsigned long>(all.scanned()));
    } else {
      std::printf("plugin %s has no dead letters\n", request.plugin().c_str());
    }
    return kExitOk;
  }
  Table table({"SEQ", "TYPE", "RESOURCE", "ATTEMPTS", "DEAD AT", "KIND", "REASON"});
  for (const v1::DeadLetter& letter : all.dead_letters()) {
    table.Add({absl::StrCat(letter.event().sequence()), letter.event().type(),
               letter.event().resource_id(), absl::StrCat(letter.attempts()),
               FormatTime(letter.dead_at()),
               absl::StrCat(letter.rejected() ? "rejected" : "retries out",
                            letter.has_retry_requested_at() ? ", retrying" : ""),
               letter.reason()});
  }
  table.Print();
  if (!all.next_page_token().empty()) {
    std::printf("(more: --limit, or --page-token %s)\n", all.next_page_token().c_str());
  }
  return kExitOk;
}

// `dlq retry` and `dlq purge`: the plugin, and --all or the sequences to act on.
struct ChangeArgs {
  std::string plugin;
  std::vector<std::string> sequence_texts;
  bool all = false;
  std::vector<uint64_t> sequences;  // parsed by the check
};

absl::Status CheckChange(ChangeArgs& args) {
  if (args.all == !args.sequence_texts.empty()) {
    return absl::InvalidArgumentError("give --all or the SEQ numbers to act on");
  }
  args.sequences.clear();
  for (const std::string& text : args.sequence_texts) {
    absl::StatusOr<uint64_t> sequence = ParseSequence(text, "SEQ");
    if (!sequence.ok()) return sequence.status();
    args.sequences.push_back(*sequence);
  }
  return absl::OkStatus();
}

int RunRetry(const Invocation& in, const ChangeArgs& args) {
  v1::RetryDeadLettersRequest request;
  request.set_plugin(args.plugin);
  request.set_all(args.all);
  for (const uint64_t sequence : args.sequences) request.add_sequences(sequence);
  v1::RetryDeadLettersResponse all;
  // With --all, the server hands back a bounded number per call: call until none remain.
  while (true) {
    v1::RetryDeadLettersResponse page;
    if (grpc::Status s = in.client.Call(&v1::Admin::Stub::RetryDeadLetters, request, page);
        !s.ok()) {
      return ReportFailure(in.client, "dlq retry", s);
    }
    all.mutable_sequences()->Add(page.sequences().begin(), page.sequences().end());
    if (!page.more()) break;
  }
  if (in.json) return PrintJson(all);
  if (all.sequences().empty()) {
    std::printf("plugin %s has no dead letters to retry\n", request.plugin().c_str());
    return kExitOk;
  }
  std::vector<uint64_t> sequences(all.sequences().begin(), all.sequences().end());
  std::printf("handed %d dead letter(s) back to plugin %s: %s\n", all.sequences_size(),
              request.plugin().c_str(),
              sequences.size() <= 20
                  ? absl::StrJoin(sequences, " ").c_str()
                  : absl::StrCat(sequences.front(), " ... ", sequences.back()).c_str());
  return kExitOk;
}

int RunPurge(const Invocation& in, const ChangeArgs& args) {
  v1::PurgeDeadLettersRequest request;
  request.set_plugin(args.plugin);
  request.set_all(args.all);
  for (const uint64_t sequence : args.sequences) request.add_sequences(sequence);
  v1::PurgeDeadLettersResponse response;
  if (grpc::Status s = in.client.Call(&v1::Admin::Stub::PurgeDeadLetters, request, response);
      !s.ok()) {
    return ReportFailure(in.client, "dlq purge", s);
  }
  if (in.json) return PrintJson(response);
  std::printf("purged %lu dead letter(s) of plugin %s\n",
              static_cast<unsigned long>(response.purged()), request.plugin().c_str());
  return kExitOk;
}

// The arguments `dlq retry` and `dlq purge` share.
Command& ChangeArguments(Command& command, ChangeArgs& args) {
  return command.Argument("NAME", kPluginName, &args.plugin, "plugin NAME")
      .Arguments("SEQ", "the sequences of the events whose dead letters to act on",
                 &args.sequence_texts)
      .Switch("--all", "every dead letter of the plugin", &args.all);
}

}  // namespace

void AddDeadLetterCommands(CommandLine& cli) {
  cli.AddGroup("dlq",
               {.synopsis = "dlq COMMAND [ARGS]",
                .summary = "a plugin's dead letters: list, retry, purge",
                .description = "A plugin's dead letters: the events it rejected, or that failed "
                               "every attempt. They stay\nuntil retried, purged or removed by "
                               "retention; docs/operations.md says when to do which."});

  auto list = std::make_shared<ListArgs>();
  cli.Add("dlq list",
          {.synopsis = "dlq list NAME [--type GLOB] [--resource ID] [--kind K] [--reason TEXT] "
                       "[--limit N] [--page-token T]",
           .summary = "a plugin's dead letters",
           .description =
               "The plugin's dead letters, oldest event first (default --limit 100). The "
               "filters combine;\npimgate applies them, examining a bounded number of letters "
               "per call (the command calls\nagain until it has --limit letters or none are "
               "left)."})
      .Argument("NAME", kPluginName, &list->plugin, "plugin NAME")
      .Flag("--type", "GLOB", "events whose type matches the glob (`*`: any characters)",
            &list->type)
      .Flag("--resource", "ID", "events of this resource id", &list->resource)
      .Flag("--kind", "K",
            "rejected (the plugin answered REJECT), exhausted (every attempt failed) or any "
            "(default)",
            &list->kind)
      .Flag("--reason", "TEXT", "letters whose last error contains TEXT (any case)", &list->reason)
      .Flag("--limit", "N", "show at most N (default 100)", &list->limit_text)
      .Flag("--page-token", "T", kPageToken, &list->page_token)
      .Check([list] { return CheckList(*list); })
      .Run([list](const Invocation& in) { return RunList(in, *list); });

  auto retry = std::make_shared<ChangeArgs>();
  ChangeArguments(
      cli.Add("dlq retry",
              {.synopsis = "dlq retry NAME (--all | SEQ...)",
               .summary = "deliver dead letters again",
               .description =
                   "Hands dead letters back to the plugin, from attempt 1, and removes them from "
                   "the dead\nletters; one that fails again is dead-lettered again. SEQ are event "
                   "sequences (see\n`dlq list`); if one of them has no dead letter, nothing is "
                   "retried (exit 4)."}),
      *retry)
      .Check([retry] { return CheckChange(*retry); })
      .Run([retry](const Invocation& in) { return RunRetry(in, *retry); });

  auto purge = std::make_shared<ChangeArgs>();
  ChangeArguments(
      cli.Add("dlq purge", {.synopsis = "dlq purge NAME (--all | SEQ...)",
                            .summary = "drop dead letters",
                            .description = "Removes dead letters without delivering them. If one "
                                           "SEQ has no dead letter, nothing is\npurged (exit 4)."}),
      *purge)
      .Check([purge] { return CheckChange(*purge); })
      .Run([purge](const Invocation& in) { return RunPurge(in, *purge); });
}

}  // namespace pimgate::ctl
