// `pimgatectl event`, `events` and `quarantine`: what the log holds, and what it refused.
#include <algorithm>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
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

constexpr char kPageToken[] = "continue after a previous list (it prints the token)";
// A quarantined element's RAW cell: longer ones are cut (`--json` shows them whole).
constexpr std::size_t kMaxRawCell = 80;

const char* OriginName(v1::Origin origin) {
  switch (origin) {
    case v1::ORIGIN_EVENTS_API:
      return "events_api";
    case v1::ORIGIN_EVENT_PLATFORM:
      return "event_platform";
    case v1::ORIGIN_RECONCILIATION:
      return "reconciliation";
    default:
      return "unspecified";
  }
}

struct EventArgs {
  std::optional<std::string> sequence_text, source, id;
  v1::GetEventRequest request;  // made by the check
};

absl::Status CheckEvent(EventArgs& args) {
  if (args.source.has_value() || args.id.has_value()) {
    if (args.sequence_text.has_value()) {
      return absl::InvalidArgumentError("give either SEQ or --source S --id ID");
    }
    if (!args.source.has_value() || !args.id.has_value()) {
      return absl::InvalidArgumentError("--source and --id go together");
    }
    args.request.mutable_ref()->set_source(*args.source);
    args.request.mutable_ref()->set_id(*args.id);
    return absl::OkStatus();
  }
  if (!args.sequence_text.has_value()) {
    return absl::InvalidArgumentError("missing SEQ (or --source S --id ID)");
  }
  absl::StatusOr<uint64_t> sequence = ParseSequence(*args.sequence_text, "SEQ");
  if (!sequence.ok()) return sequence.status();
  args.request.set_sequence(*sequence);
  return absl::OkStatus();
}

int RunEvent(const Invocation& in, const EventArgs& args) {
  v1::Event event;
  if (grpc::Status s = in.client.Call(&v1::Admin::Stub::GetEvent, args.request, event); !s.ok()) {
    return ReportFailure(in.client, "event", s);
  }
  if (in.json) return PrintJson(event);
  Table table({"FIELD", "VALUE"});
  table.Add({"sequence", absl::StrCat(event.sequence())});
  table.Add({"id", event.id()});
  table.Add({"source", event.source()});
  table.Add({"type", event.type() == event.original_type()
                         ? event.type()
                         : absl::StrCat(event.type(), " (sent as ", event.original_type(), ")")});
  table.Add({"resource_id", event.resource_id()});
  table.Add({"occurred_at", FormatTime(event.occurred_at())});
  table.Add({"version_at", FormatTime(event.version_at())});
  table.Add({"received_at", FormatTime(event.received_at())});
  table.Add({"author", event.author_type().empty()
                           ? event.author()
                           : absl::StrCat(event.author(), " (", event.author_type(), ")")});
  table.Add({"pim_source", event.pim_source()});
  if (!event.subject().empty()) table.Add({"subject", event.subject()});
  table.Add({"origin", OriginName(event.origin())});
  table.Add({"stale", event.stale() ? "yes (a newer version was already stored)" : "no"});
  table.Add({"request_id", event.request_id()});
  table.Print();
  std::printf("data:\n%s", Json(event.data()).c_str());
  return kExitOk;
}

struct EventsArgs {
  std::optional<std::string> type, resource, source, since, until, limit_text, page_token;
  bool newest = false;
  int64_t limit = kDefaultLimit;
  v1::ListEventsRequest request;  // made by the check, but for the page size
};

absl::Status CheckEvents(EventsArgs& args) {
  args.request.set_type(args.type.value_or(""));
  args.request.set_resource_id(args.resource.value_or(""));
  args.request.set_source(args.source.value_or(""));
  if (args.since.has_value()) {
    absl::StatusOr<google::protobuf::Timestamp> since = ParseTime(*args.since);
    if (!since.ok()) return since.status();
    *args.request.mutable_since() = *since;
  }
  if (args.until.has_value()) {
    absl::StatusOr<google::protobuf::Timestamp> until = ParseTime(*args.until);
    if (!until.ok()) return until.status();
    *args.request.mutable_until() = *until;
  }
  absl::StatusOr<int64_t> limit = ParseLimit(args.limit_text);
  if (!limit.ok()) return limit.status();
  args.limit = *limit;
  args.request.set_newest_first(args.newest);
  args.request.set_page_token(args.page_token.value_or(""));
  return absl::OkStatus();
}

int RunEvents(const Invocation& in, const EventsArgs& args) {
  v1::ListEventsRequest request = args.request;
  v1::ListEventsResponse all;
  while (true) {
    request.set_page_size(
        static_cast<int32_t>(std::min<int64_t>(args.limit - all.events_size(), kMaxPageSize)));
    v1::ListEventsResponse page;
    if (grpc::Status s = in.client.Call(&v1::Admin::Stub::ListEvents, request, page); !s.ok()) {
      return ReportFailure(in.client, "events", s);
    }
    for (v1::Event& event : *page.mutable_events()) *all.add_events() = std::move(event);
    all.set_scanned(all.scanned() + page.scanned());
    all.set_next_page_token(page.next_page_token());
    if (page.next_page_token().empty() || all.events_size() >= args.limit) break;
    request.set_page_token(page.next_page_token());
  }
  if (in.json) return PrintJson(all);
  if (all.events().empty()) {
    std::printf("no matching events (%lu looked at)\n", static_cast<unsigned long>(all.scanned()));
    return kExitOk;
  }
  Table table({"SEQ", "RECEIVED", "SOURCE", "TYPE", "RESOURCE", "AUTHOR", "STALE"});
  for (const v1::Event& event : all.events()) {
    table.Add({absl::StrCat(event.sequence()), FormatTime(event.received_at()), event.source(),
               event.type(), event.resource_id(), event.author().empty() ? "-" : event.author(),
               event.stale() ? "stale" : ""});
  }
  table.Print();
  if (!all.next_page_token().empty()) {
    std::printf("(more: --limit, or --page-token %s)\n", all.next_page_token().c_str());
  }
  return kExitOk;
}

struct QuarantineArgs {
  std::optional<std::string> limit_text, page_token;
  int64_t limit = kDefaultLimit;
};

int RunQuarantine(const Invocation& in, const QuarantineArgs& args) {
  v1::ListQuarantineRequest request;
  request.set_page_token(args.page_token.value_or(""));
  v1::ListQuarantineResponse all;
  while (true) {
    request.set_page_size(
        static_cast<int32_t>(std::min<int64_t>(args.limit - all.entries_size(), kMaxPageSize)));
    v1::ListQuarantineResponse page;
    if (grpc::Status s = in.client.Call(&v1::Admin::Stub::ListQuarantine, request, page); !s.ok()) {
      return ReportFailure(in.client, "quarantine", s);
    }
    for (v1::QuarantineEntry& entry : *page.mutable_entries()) {
      *all.add_entries() = std::move(entry);
    }
    all.set_next_page_token(page.next_page_token());
    if (page.next_page_token().empty() || all.entries_size() >= args.limit) break;
    request.set_page_token(page.next_page_token());
  }
  if (in.json) return PrintJson(all);
  if (all.entries().empty()) {
    std::printf("quarantine is empty\n");
    return kExitOk;
  }
  Table table({"ID", "RECEIVED", "SOURCE", "INDEX", "REQUEST", "REASON", "RAW"});
  for (const v1::QuarantineEntry& entry : all.entries()) {
    const std::string raw = entry.raw().size() > kMaxRawCell
                                ? entry.raw().substr(0, kMaxRawCell - 3) + "..."
                                : entry.raw();
    table.Add({absl::StrCat(entry.id()), FormatTime(entry.received_at()), entry.source(),
               absl::StrCat(entry.index()), entry.request_id(), entry.reason(), raw});
  }
  table.Print();
  if (!all.next_page_token().empty()) {
    std::printf("(more: --limit, or --page-token %s)\n", all.next_page_token().c_str());
  }
  return kExitOk;
}

}  // namespace

void AddEventCommands(CommandLine& cli) {
  auto event = std::make_shared<EventArgs>();
  cli.Add("event", {.synopsis = "event SEQ | event --source S --id ID",
                    .summary = "one event, with its data",
                    .description = "One event with all its fields and its data, by sequence or "
                                   "by the sender's event id."})
      .OptionalArgument("SEQ", "the event's sequence in the log", &event->sequence_text)
      .Flag("--source", "S", "the source it came from (sources[].name), with --id", &event->source)
      .Flag("--id", "ID", "the event id its sender gave it", &event->id)
      .Check([event] { return CheckEvent(*event); })
      .Run([event](const Invocation& in) { return RunEvent(in, *event); });

  auto events = std::make_shared<EventsArgs>();
  cli.Add("events",
          {.synopsis = "events [--type GLOB] [--resource ID] [--source S] [--since T] [--until T] "
                       "[--limit N]\n       [--newest] [--page-token T]",
           .summary = "events, filtered",
           .description =
               "Events, oldest first (--newest: newest first), filtered by canonical type glob\n"
               "(\"product.*\"), resource id, source and received time (--since inclusive, "
               "--until\nexclusive). Shows up to --limit (default 100); the server scans the log "
               "in bounded steps."})
      .Flag("--type", "GLOB", "canonical event types matching GLOB (\"product.*\")", &events->type)
      .Flag("--resource", "ID", "events of this resource (product uuid, model code, ...)",
            &events->resource)
      .Flag("--source", "S", "events from this source (sources[].name)", &events->source)
      .Flag("--since", "T", "received at or after T", &events->since)
      .Flag("--until", "T", "received before T", &events->until)
      .Flag("--limit", "N", "show at most N (default 100)", &events->limit_text)
      .Switch("--newest", "newest first", &events->newest)
      .Flag("--page-token", "T", kPageToken, &events->page_token)
      .Check([events] { return CheckEvents(*events); })
      .Run([events](const Invocation& in) { return RunEvents(in, *events); });

  auto quarantine = std::make_shared<QuarantineArgs>();
  cli.Add("quarantine", {.synopsis = "quarantine [--limit N] [--page-token T]",
                         .summary = "legacy batch elements the parser refused",
                         .description = "Legacy batch elements the parser refused, kept verbatim, "
                                        "oldest first."})
      .Flag("--limit", "N", "show at most N (default 100)", &quarantine->limit_text)
      .Flag("--page-token", "T", kPageToken, &quarantine->page_token)
      .Check([quarantine]() -> absl::Status {
        absl::StatusOr<int64_t> limit = ParseLimit(quarantine->limit_text);
        if (!limit.ok()) return limit.status();
        quarantine->limit = *limit;
        return absl::OkStatus();
      })
      .Run([quarantine](const Invocation& in) { return RunQuarantine(in, *quarantine); });
}

}  // namespace pimgate::ctl
