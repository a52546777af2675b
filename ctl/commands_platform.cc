// `pimgatectl platform ...`: a source's Akeneo Event Platform subscriber and subscriptions,
// managed through pimgate (which holds the credentials and the secrets): list, subscribe,
// suspend, resume, delete, replay, logs, check.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
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

constexpr char kSourceName[] =
    "the source (sources[].name: kind event_platform, with platform and rest)";
constexpr char kSubscriptionFlag[] =
    "the subscription (default: the source's only one; `platform subscriptions`\nlists them)";
// Akeneo's own prefix, dropped in tables: what is left is readable and unambiguous.
constexpr char kAkeneoPrefix[] = "com.akeneo.pim.v1.";
// How often `replay --wait` reads the replay's progress.
constexpr auto kReplayPollInterval = std::chrono::seconds(1);

// A failure of the management API reaches pimgatectl as pimgate's answer: its UNAUTHENTICATED
// or UNAVAILABLE is Akeneo's, not a missing admin token or an unreachable pimgate.
int ReportPlatformFailure(const AdminClient& client, const std::string& command,
                          const grpc::Status& status) {
  if (!absl::StrContains(status.error_message(), "Event Platform")) {
    return ReportFailure(client, command, status);
  }
  std::fprintf(stderr, "pimgatectl: %s: %s: %s\n", command.c_str(), CodeName(status.error_code()),
               status.error_message().c_str());
  switch (status.error_code()) {
    case grpc::StatusCode::UNAUTHENTICATED:
    case grpc::StatusCode::PERMISSION_DENIED:
      std::fprintf(stderr,
                   "pimgatectl: the Event Platform refused the source's PIM credentials (rest): "
                   "check the Connection and its Event Platform permission in the PIM\n");
      return kExitError;
    case grpc::StatusCode::NOT_FOUND:
      return kExitNotFound;
    default:
      return kExitError;
  }
}

std::string ShortType(const std::string& type) {
  return absl::StartsWith(type, kAkeneoPrefix) ? type.substr(sizeof(kAkeneoPrefix) - 1) : type;
}

std::string Events(const v1::PlatformSubscriptionInfo& s) {
  std::vector<std::string> types;
  for (const std::string& type : s.events()) types.push_back(ShortType(type));
  return types.empty() ? "-" : absl::StrJoin(types, " ");
}

std::string Dash(const std::string& text) { return text.empty() ? "-" : text; }

std::string DescribeSubscriber(const v1::PlatformSubscriberInfo& s) {
  return absl::StrCat("subscriber \"", s.name(), "\" (", s.id(), ", ", Dash(s.status()), ")");
}

std::string DescribeReplay(const v1::PlatformReplayInfo& r) {
  return absl::StrCat("replay ", r.id(), " ", r.status(), ": ", r.delivered(), " of ", r.total(),
                      " captured event(s) delivered, ", r.failed(), " failed");
}

// ---- subscribers, subscriptions ----------------------------------------------------------------

int RunSubscribers(const Invocation& in, const std::optional<std::string>& source) {
  v1::ListPlatformSubscribersRequest request;
  request.set_source(source.value_or(""));
  v1::ListPlatformSubscribersResponse response;
  if (grpc::Status s = in.client.Call(&v1::Admin::Stub::ListPlatformSubscribers, request, response);
      !s.ok()) {
    return ReportPlatformFailure(in.client, "platform subscribers", s);
  }
  if (in.json) return PrintJson(response);
  if (response.subscribers().empty()) {
    std::printf(
        "no Event Platform subscriber yet (`pimgatectl platform subscribe SOURCE --url "
        "URL --events TYPE...` creates the source's)\n");
    return kExitOk;
  }
  Table table({"SOURCE", "ID", "STATUS", "PIMGATE'S", "EMAIL", "NOTIFIES", "NAME"});
  for (const v1::PlatformSubscriberInfo& s : response.subscribers()) {
    table.Add({s.source(), s.id(), Dash(s.status()), s.managed() ? "yes" : "no",
               Dash(s.technical_email()), Dash(s.notification_webhook_url()), s.name()});
  }
  table.Print();
  return kExitOk;
}

int RunSubscriptions(const Invocation& in, const std::string& source) {
  v1::ListPlatformSubscriptionsRequest request;
  request.set_source(source);
  v1::ListPlatformSubscriptionsResponse response;
  if (grpc::Status s =
          in.client.Call(&v1::Admin::Stub::ListPlatformSubscriptions, request, response);
      !s.ok()) {
    return ReportPlatformFailure(in.client, "platform subscriptions", s);
  }
  if (in.json) return PrintJson(response);
  if (!response.has_subscriber()) {
    std::printf(
        "source %s has no Event Platform subscriber yet: `pimgatectl platform subscribe %s "
        "--url PUBLIC_URL --events TYPE...` creates it\n",
        source.c_str(), source.c_str());
    return kExitOk;
  }
  std::printf("source %s: %s\n", source.c_str(), DescribeSubscriber(response.subscriber()).c_str());
  if (response.subscriptions().empty()) {
    std::printf(
        "no subscription: `pimgatectl platform subscribe %s --url PUBLIC_URL --events "
        "TYPE...` creates one\n",
        source.c_str());
    return kExitOk;
  }
  Table table({"ID", "STATUS", "DESTINATION", "HERE", "SECONDARY", "UPDATED", "EVENTS"});
  for (const v1::PlatformSubscriptionInfo& s : response.subscriptions()) {
    table.Add({s.id(), Dash(s.status()), s.type() == "https" ? Dash(s.url()) : s.type(),
               s.delivers_to_source() ? "yes" : "no", s.has_secondary_secret() ? "yes" : "no",
               Dash(s.updated_at()), Events(s)});
  }
  table.Print();
  return kExitOk;
}

// ---- subscribe ---------------------------------------------------------------------------------

struct SubscribeArgs {
  v1::PlatformSubscribeRequest request;
  std::optional<std::string> url, filter;
  std::vector<std::string> events;
  bool send_product_identifier = false;
};

absl::Status CheckSubscribe(SubscribeArgs& args) {
  if (!args.url.has_value()) {
    return absl::InvalidArgumentError(
        "--url is required: pimgate's base URL as Akeneo reaches it (https://pimgate.example.com)");
  }
  args.request.set_public_url(*args.url);
  args.request.clear_events();
  for (const std::string& event : args.events) {
    if (!event.empty()) args.request.add_events(event);
  }
  args.request.set_filter(args.filter.value_or(""));
  args.request.set_send_product_identifier(args.send_product_identifier);
  return absl::OkStatus();
}

int RunSubscribe(const Invocation& in, const SubscribeArgs& args) {
  v1::PlatformSubscribeResponse response;
  if (grpc::Status s = in.client.Call(&v1::Admin::Stub::PlatformSubscribe, args.request, response);
      !s.ok()) {
    return ReportPlatformFailure(in.client, "platform subscribe", s);
  }
  if (in.json) return PrintJson(response);
  const std::string& source = args.request.source();
  std::printf("%s %s\n", DescribeSubscriber(response.subscriber()).c_str(),
              response.subscriber_created()   ? "created"
              : response.subscriber_updated() ? "now sends its notifications to pimgate"
                                              : "already there");
  const v1::PlatformSubscriptionInfo& s = response.subscription();
  std::printf("subscription %s %s: %s, %d event type(s) to %s\n", s.id().c_str(),
              response.subscription_created() ? "created" : "updated (secrets sent again)",
              Dash(s.status()).c_str(), s.events_size(), response.destination().c_str());
  std::printf("  events: %s\n", Events(s).c_str());
  std::printf(
      "signed with the source's secret%s. Akeneo may take a few minutes to start "
      "delivering;\n`pimgatectl platform check %s` verifies the subscription.\n",
      s.has_secondary_secret() ? " and secondary_secret" : "", source.c_str());
  return kExitOk;
}

// ---- suspend, resume, delete, replay ----------------------------------------------------------

struct TargetArgs {
  std::string source;
  std::optional<std::string> subscription;
  bool flag = false;  // resume: --no-replay; replay: --status
  bool wait = false;  // replay: --wait
};

int RunSuspend(const Invocation& in, const TargetArgs& args) {
  v1::SuspendPlatformSubscriptionRequest request;
  request.set_source(args.source);
  request.set_subscription_id(args.subscription.value_or(""));
  v1::SuspendPlatformSubscriptionResponse response;
  if (grpc::Status s =
          in.client.Call(&v1::Admin::Stub::SuspendPlatformSubscription, request, response);
      !s.ok()) {
    return ReportPlatformFailure(in.client, "platform suspend", s);
  }
  if (in.json) return PrintJson(response);
  std::printf(
      "subscription %s of source %s is %s: Akeneo captures its events (for up to 10 "
      "days)\nuntil `pimgatectl platform resume %s`, which replays them. auto_resume "
      "leaves it suspended.\n",
      response.subscription().id().c_str(), args.source.c_str(),
      Dash(response.subscription().status()).c_str(), args.source.c_str());
  return kExitOk;
}

int RunResume(const Invocation& in, const TargetArgs& args) {
  v1::ResumePlatformSubscriptionRequest request;
  request.set_source(args.source);
  request.set_subscription_id(args.subscription.value_or(""));
  request.set_no_replay(args.flag);
  v1::ResumePlatformSubscriptionResponse response;
  if (grpc::Status s =
          in.client.Call(&v1::Admin::Stub::ResumePlatformSubscription, request, response);
      !s.ok()) {
    return ReportPlatformFailure(in.client, "platform resume", s);
  }
  if (in.json) {
    PrintJson(response);
    return response.replay_error().empty() ? kExitOk : kExitError;
  }
  std::printf(
      "subscription %s of source %s is %s; a reconciliation of the source runs as a "
      "safety net\n",
      response.subscription().id().c_str(), args.source.c_str(),
      Dash(response.subscription().status()).c_str());
  if (!response.replay_error().empty()) {
    std::fprintf(stderr,
                 "pimgatectl: platform resume: the subscription is resumed, but the replay of "
                 "its captured events did not start: %s\n(`pimgatectl platform replay %s` tries "
                 "again)\n",
                 response.replay_error().c_str(), args.source.c_str());
    return kExitError;
  }
  if (response.has_replay()) {
    std::printf("%s (`pimgatectl platform replay %s --status` follows it)\n",
                DescribeReplay(response.replay()).c_str(), args.source.c_str());
  }
  return kExitOk;
}

int RunDelete(const Invocation& in, const TargetArgs& args) {
  v1::DeletePlatformSubscriptionRequest request;
  request.set_source(args.source);
  request.set_subscription_id(args.subscription.value_or(""));
  v1::DeletePlatformSubscriptionResponse response;
  if (grpc::Status s =
          in.client.Call(&v1::Admin::Stub::DeletePlatformSubscription, request, response);
      !s.ok()) {
    return ReportPlatformFailure(in.client, "platform delete", s);
  }
  if (in.json) return PrintJson(response);
  std::printf("subscription %s of source %s (to %s) deleted: Akeneo sends it nothing more\n",
              response.subscription().id().c_str(), args.source.c_str(),
              Dash(response.subscription().url()).c_str());
  return kExitOk;
}

int RunReplay(const Invocation& in, const TargetArgs& args) {
  v1::ReplayPlatformSubscriptionRequest request;
  request.set_source(args.source);
  request.set_subscription_id(args.subscription.value_or(""));
  request.set_status_only(args.flag);
  v1::ReplayPlatformSubscriptionResponse response;
  if (grpc::Status s =
          in.client.Call(&v1::Admin::Stub::ReplayPlatformSubscription, request, response);
      !s.ok()) {
    return ReportPlatformFailure(in.client, "platform replay", s);
  }
  std::string last;
  for (;;) {
    const std::string line = DescribeReplay(response.replay());
    if (!in.json && line != last) std::printf("%s\n", line.c_str());
    last = line;
    if (!args.wait || response.replay().status() != "in_progress") break;
    std::this_thread::sleep_for(kReplayPollInterval);
    request.set_status_only(true);
    response.Clear();
    if (grpc::Status s =
            in.client.Call(&v1::Admin::Stub::ReplayPlatformSubscription, request, response);
        !s.ok()) {
      return ReportPlatformFailure(in.client, "platform replay", s);
    }
  }
  if (in.json) return PrintJson(response);
  return response.replay().failed() > 0 && response.replay().status() != "in_progress" ? kExitError
                                                                                       : kExitOk;
}

// ---- logs --------------------------------------------------------------------------------------

struct LogsArgs {
  std::string source;
  std::optional<std::string> subscription, since, until, limit_text, page_token;
  bool errors = false, actions = false;
  v1::PlatformLogsRequest request;  // made by the check
  int64_t limit = kDefaultLimit;
};

absl::Status CheckLogs(LogsArgs& args) {
  if (args.errors && args.actions) {
    return absl::InvalidArgumentError("give one of --errors and --actions");
  }
  args.request.set_source(args.source);
  args.request.set_subscription_id(args.subscription.value_or(""));
  args.request.set_log_type(args.errors ? "error" : args.actions ? "action" : "");
  // Whole seconds, UTC: the platform's logs are written to the second.
  const auto rfc3339 = [](const std::string& text) -> absl::StatusOr<std::string> {
    absl::StatusOr<google::protobuf::Timestamp> time = ParseTime(text);
    if (!time.ok()) return time.status();
    time->set_nanos(0);
    return TimeUtil::ToString(*time);
  };
  if (args.since.has_value()) {
    absl::StatusOr<std::string> from = rfc3339(*args.since);
    if (!from.ok()) return from.status();
    args.request.set_from(*from);
  }
  if (args.until.has_value()) {
    absl::StatusOr<std::string> to = rfc3339(*args.until);
    if (!to.ok()) return to.status();
    args.request.set_to(*to);
  }
  absl::StatusOr<int64_t> limit = ParseLimit(args.limit_text);
  if (!limit.ok()) return limit.status();
  args.limit = *limit;
  args.request.set_page_token(args.page_token.value_or(""));
  return absl::OkStatus();
}

int RunLogs(const Invocation& in, const LogsArgs& args) {
  v1::PlatformLogsRequest request = args.request;
  v1::PlatformLogsResponse all;
  // The platform answers at most 100 entries a page: page until the limit.
  while (true) {
    request.set_page_size(
        static_cast<int32_t>(std::min<int64_t>(args.limit - all.logs_size(), 100)));
    v1::PlatformLogsResponse page;
    if (grpc::Status s = in.client.Call(&v1::Admin::Stub::PlatformLogs, request, page); !s.ok()) {
      return ReportPlatformFailure(in.client, "platform logs", s);
    }
    for (v1::PlatformLogEntry& entry : *page.mutable_logs()) *all.add_logs() = std::move(entry);
    all.set_next_page_token(page.next_page_token());
    if (page.next_page_token().empty() || all.logs_size() >= args.limit) break;
    request.set_page_token(page.next_page_token());
  }
  if (in.json) return PrintJson(all);
  if (all.logs().empty()) {
    std::printf("no log entry\n");
    return kExitOk;
  }
  Table table({"TIME", "TYPE", "SUBSCRIPTION", "OPERATION", "CODE", "REASON", "MESSAGE"});
  for (const v1::PlatformLogEntry& log : all.logs()) {
    table.Add({log.timestamp(), log.log_type(), Dash(log.subscription_id()), Dash(log.operation()),
               log.error_code() == 0 ? "-" : absl::StrCat(log.error_code()),
               Dash(log.error_reason()), Dash(log.error_message())});
  }
  table.Print();
  if (!all.next_page_token().empty()) {
    std::printf("(more: --limit, or --page-token %s)\n", all.next_page_token().c_str());
  }
  return kExitOk;
}

// ---- check -------------------------------------------------------------------------------------

struct CheckArgs {
  std::string source;
  std::optional<std::string> url, subscription;
};

const char* OutcomeLabel(v1::PlatformCheckFinding::Outcome outcome) {
  switch (outcome) {
    case v1::PlatformCheckFinding::PASSED:
      return "ok";
    case v1::PlatformCheckFinding::PROBLEM:
      return "PROBLEM";
    case v1::PlatformCheckFinding::NOTE:
      return "note";
    default:
      return "?";
  }
}

int RunCheck(const Invocation& in, const CheckArgs& args) {
  v1::CheckPlatformSubscriptionRequest request;
  request.set_source(args.source);
  request.set_public_url(args.url.value_or(""));
  request.set_subscription_id(args.subscription.value_or(""));
  v1::CheckPlatformSubscriptionResponse response;
  if (grpc::Status s =
          in.client.Call(&v1::Admin::Stub::CheckPlatformSubscription, request, response);
      !s.ok()) {
    return ReportPlatformFailure(in.client, "platform check", s);
  }
  const int exit_code = response.problems() > 0 ? kExitProblems : kExitOk;
  if (in.json) {
    PrintJson(response);
    return exit_code;
  }
  std::printf(
      "source %s: Event Platform subscription check%s\n", args.source.c_str(),
      response.expected_destination().empty()
          ? " (no public URL known: give --url to compare the destination's host)"
          : absl::StrCat(", expected destination ", response.expected_destination()).c_str());
  std::string subscription = "-";
  for (const v1::PlatformCheckFinding& f : response.findings()) {
    if (f.subscription_id() != subscription && !f.subscription_id().empty()) {
      subscription = f.subscription_id();
      std::printf("subscription %s:\n", subscription.c_str());
    }
    std::printf("  %-8s %-12s %s\n", OutcomeLabel(f.outcome()), f.check().c_str(),
                OneLine(f.detail()).c_str());
    if (!f.fix().empty()) std::printf("  %-8s %-12s fix: %s\n", "", "", OneLine(f.fix()).c_str());
  }
  if (response.problems() > 0) {
    std::printf("%u problem(s): events are lost or refused until fixed\n", response.problems());
  } else {
    std::printf("no problem found\n");
  }
  return exit_code;
}

}  // namespace

void AddPlatformCommands(CommandLine& cli) {
  cli.AddGroup(
      "platform",
      {.synopsis = "platform COMMAND [ARGS]",
       .summary = "Akeneo Event Platform subscriptions of a source",
       .description =
           "A source's subscriber and subscriptions on Akeneo's Event Platform, managed through "
           "pimgate,\nwhich calls the management API with the source's `rest` credentials and "
           "signs subscriptions\nwith the source's secrets (they never leave pimgate). For "
           "`kind: event_platform` sources\nwith `platform:`. docs/migrate-to-event-platform.md "
           "walks through a migration."});

  auto subscribers = std::make_shared<std::optional<std::string>>();
  cli.Add("platform subscribers",
          {.synopsis = "platform subscribers [SOURCE]",
           .summary = "the subscribers the sources' PIM connections see",
           .description = "Every subscriber the PIM connection of each source with `platform` "
                          "sees (or of SOURCE);\nPIMGATE'S says which one is the source's own "
                          "(named platform.subscriber_name)."})
      .OptionalArgument("SOURCE", kSourceName, subscribers.get())
      .Run([subscribers](const Invocation& in) { return RunSubscribers(in, *subscribers); });

  auto subscriptions = std::make_shared<std::string>();
  cli.Add("platform subscriptions",
          {.synopsis = "platform subscriptions SOURCE",
           .summary = "a source's subscriptions and their status",
           .description = "The subscriptions of the source's subscriber: status, destination "
                          "(HERE: its path is the\nsource's), whether it has a secondary secret, "
                          "and its event types (Akeneo's, without\ncom.akeneo.pim.v1.)."})
      .Argument("SOURCE", kSourceName, subscriptions.get(), "SOURCE")
      .Run([subscriptions](const Invocation& in) { return RunSubscriptions(in, *subscriptions); });

  auto subscribe = std::make_shared<SubscribeArgs>();
  cli.Add("platform subscribe",
          {.synopsis = "platform subscribe SOURCE --url PUBLIC_URL --events TYPE...\n"
                       "                    [--filter EXPR] [--send-product-identifier]",
           .summary = "subscribe a source to Akeneo's events",
           .description =
               "Creates the source's subscriber if it has none (platform.subscriber_name, "
               "technical_email;\nits notifications go to the source's notification_path, or "
               "path), then a subscription\ndelivering to PUBLIC_URL followed by the source's "
               "path, signed with the source's secret\n(and secondary_secret): no secret is "
               "copied by hand. When the subscriber already has a\nsubscription to that URL, it "
               "is updated instead: its secrets are sent again, and its\nevent types replaced "
               "when --events is given. TYPE is Akeneo's type\n(com.akeneo.pim.v1.product."
               "updated), pimgate's (product.updated) or a glob over pimgate's\n(\"product.*\"), "
               "expanded over Akeneo's catalogue; several by spaces or commas."})
      .Argument("SOURCE", kSourceName, subscribe->request.mutable_source(), "SOURCE")
      .Flag("--url", "PUBLIC_URL",
            "pimgate's base URL as Akeneo reaches it (https://pimgate.example.com)",
            &subscribe->url)
      .Flags("--events", "TYPE", "the event types (required for a new subscription)",
             &subscribe->events)
      .Flag("--filter", "EXPR", "Akeneo's filter expression (user_type=\"api\", ...)",
            &subscribe->filter)
      .Switch("--send-product-identifier", "add data.product.identifier to product events",
              &subscribe->send_product_identifier)
      .Check([subscribe] { return CheckSubscribe(*subscribe); })
      .Run([subscribe](const Invocation& in) { return RunSubscribe(in, *subscribe); });

  struct Simple {
    const char* name;
    CommandHelp help;
    int (*run)(const Invocation&, const TargetArgs&);
    const char* flag = nullptr;
    const char* flag_help = nullptr;
  };
  const Simple simple[] = {
      {"suspend",
       {.synopsis = "platform suspend SOURCE [--subscription ID]",
        .summary = "suspend a subscription (Akeneo captures its events)",
        .description = "Suspends the subscription: Akeneo delivers nothing and captures its "
                       "events, for up to 10\ndays, until it is resumed. pimgate's watch never "
                       "resumes a subscription suspended this\nway, even with auto_resume."},
       RunSuspend},
      {"resume",
       {.synopsis = "platform resume SOURCE [--subscription ID] [--no-replay]",
        .summary = "resume a subscription and replay what was captured",
        .description = "Resumes the subscription, asks Akeneo to replay the events it captured "
                       "while it was\nsuspended (unless --no-replay), and reconciles the source "
                       "as a safety net (when it has\n`rest`). Exit 1 when the subscription "
                       "resumed but the replay did not start."},
       RunResume,
       "--no-replay",
       "do not ask for a replay of the captured events"},
      {"delete",
       {.synopsis = "platform delete SOURCE [--subscription ID]",
        .summary = "delete a subscription",
        .description = "Deletes the subscription: final on Akeneo's side, nothing is captured "
                       "for it any more."},
       RunDelete},
      {"replay",
       {.synopsis = "platform replay SOURCE [--subscription ID] [--status] [--wait]",
        .summary = "replay the events captured while suspended",
        .description = "Asks Akeneo to replay the events it captured while the (now active) "
                       "subscription was\nsuspended, or with --status shows the latest replay's "
                       "progress. --wait follows it until it\nends. Exit 1 when a finished "
                       "replay failed to deliver some events."},
       RunReplay,
       "--status",
       "only show the latest replay's progress"},
  };
  for (const Simple& command : simple) {
    auto args = std::make_shared<TargetArgs>();
    Command& added = cli.Add(absl::StrCat("platform ", command.name), command.help)
                         .Argument("SOURCE", kSourceName, &args->source, "SOURCE")
                         .Flag("--subscription", "ID", kSubscriptionFlag, &args->subscription);
    if (command.flag != nullptr) added.Switch(command.flag, command.flag_help, &args->flag);
    if (command.run == RunReplay) {
      added.Switch("--wait", "follow the replay until it ends", &args->wait);
    }
    added.Run([args, run = command.run](const Invocation& in) { return run(in, *args); });
  }

  auto logs = std::make_shared<LogsArgs>();
  cli.Add("platform logs",
          {.synopsis = "platform logs SOURCE [--subscription ID] [--errors | --actions]\n"
                       "                    [--since T] [--until T] [--limit N] [--page-token T]",
           .summary = "Akeneo's delivery and action logs of a source",
           .description = "The Event Platform's logs of the source's subscriber (kept 30 days by "
                          "Akeneo), oldest first:\nfailed deliveries (with the HTTP code pimgate "
                          "answered) and actions (suspended, resumed,\n...). Default --limit "
                          "100."})
      .Argument("SOURCE", kSourceName, &logs->source, "SOURCE")
      .Flag("--subscription", "ID", "only this subscription's", &logs->subscription)
      .Switch("--errors", "only errors (failed deliveries)", &logs->errors)
      .Switch("--actions", "only actions", &logs->actions)
      .Flag("--since", "T", "entries at or after T (RFC 3339, or an age: 2h, 7d)", &logs->since)
      .Flag("--until", "T", "entries before T", &logs->until)
      .Flag("--limit", "N", "show at most N (default 100)", &logs->limit_text)
      .Flag("--page-token", "T", "continue after a previous list (it prints the token)",
            &logs->page_token)
      .Check([logs] { return CheckLogs(*logs); })
      .Run([logs](const Invocation& in) { return RunLogs(in, *logs); });

  auto check = std::make_shared<CheckArgs>();
  cli.Add("platform check",
          {.synopsis = "platform check SOURCE [--url PUBLIC_URL] [--subscription ID]",
           .summary = "check a source's subscription against this pimgate",
           .description =
               "Checks that the source's subscription exists, is active, delivers to this "
               "pimgate's URL for\nthe source (PUBLIC_URL, default: the one given to the last "
               "`subscribe`, else only the\npath is compared), signs with the source's secret "
               "(Akeneo never returns secrets: the\nplatform's logs of deliveries pimgate "
               "refused with 401 are read), and sends every event\ntype the `events` globs of "
               "the plugins reading the source ask for. Each problem comes\nwith its fix. Exit 6 "
               "when a problem is found."})
      .Argument("SOURCE", kSourceName, &check->source, "SOURCE")
      .Flag("--url", "PUBLIC_URL", "pimgate's base URL as Akeneo reaches it", &check->url)
      .Flag("--subscription", "ID", "only this subscription", &check->subscription)
      .Run([check](const Invocation& in) { return RunCheck(in, *check); });
}

}  // namespace pimgate::ctl
