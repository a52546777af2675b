// `pimgatectl reconcile`: ask the PIM for the changes its webhooks missed, and show the run.
#include <cstdio>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
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

struct ReconcileArgs {
  std::optional<std::string> since;
  bool full = false;
  v1::ReconcileRequest request;  // made by the check
};

absl::Status CheckReconcile(ReconcileArgs& args) {
  if (args.since.has_value()) {
    absl::StatusOr<google::protobuf::Timestamp> since = ParseTime(*args.since);
    if (!since.ok()) return since.status();
    *args.request.mutable_since() = *since;
  }
  args.request.set_full(args.full);
  return absl::OkStatus();
}

int RunReconcile(const Invocation& in, const ReconcileArgs& args) {
  const v1::ReconcileRequest& request = args.request;
  v1::ReconcileResponse response;
  if (grpc::Status s = in.client.Call(&v1::Admin::Stub::Reconcile, request, response); !s.ok()) {
    // pimgate answered, but the run failed: UNAVAILABLE here is the PIM's, not pimgate's.
    if (absl::StartsWith(s.error_message(), "reconciliation of ")) {
      std::fprintf(stderr, "pimgatectl: reconcile: %s: %s\n", CodeName(s.error_code()),
                   s.error_message().c_str());
      return kExitError;
    }
    return ReportFailure(in.client, "reconcile", s);
  }
  if (in.json) return PrintJson(response);
  const double seconds = static_cast<double>(TimeUtil::DurationToMilliseconds(
                             response.finished_at() - response.started_at())) /
                         1000.0;
  std::printf("reconciliation of %s (run %lu%s) added %lu event(s) in %.3fs\n",
              request.source().c_str(), static_cast<unsigned long>(response.run()),
              response.full() ? ", full" : "", static_cast<unsigned long>(response.events_added()),
              seconds);
  Table table({"FIGURE", "VALUE"});
  table.Add({"scanned", absl::StrCat(response.scanned())});
  table.Add({"emitted (updated)", absl::StrCat(response.emitted())});
  table.Add({"deleted", absl::StrCat(response.deleted())});
  table.Add({"in sync", absl::StrCat(response.in_sync())});
  table.Add({"invalid (skipped)", absl::StrCat(response.invalid())});
  if (response.full()) table.Add({"unchecked (not UUIDs)", absl::StrCat(response.unchecked())});
  table.Add({"api calls", absl::StrCat(response.api_calls())});
  table.Add({"window", response.has_window_start()
                           ? absl::StrCat("updated after ", FormatTime(response.window_start()),
                                          " (PIM time ", response.updated_filter(), " ",
                                          response.filter_time_zone(), ")")
                           : std::string("everything")});
  if (!response.products_path().empty()) table.Add({"products from", response.products_path()});
  table.Add({"watermark",
             (response.has_watermark() ? FormatTime(response.watermark()) : std::string("none")) +
                 (response.watermark_advanced() ? " (advanced)" : " (unchanged)")});
  // The catalogue structure kinds, reference entity records and assets, each with its own window
  // and watermark.
  for (const v1::ReconcileKindRun& kind : response.kinds()) {
    if (!kind.unavailable().empty()) {
      table.Add({kind.kind(), absl::StrCat("not reconciled: ", kind.unavailable())});
      continue;
    }
    table.Add(
        {kind.kind(),
         absl::StrCat(
             "scanned ", kind.scanned(),
             kind.kind() == "reference_entity_record"
                 ? absl::StrCat(" in ", kind.parents(), " reference entities")
             : kind.kind() == "asset" ? absl::StrCat(" in ", kind.parents(), " asset families")
                                      : std::string(),
             ", emitted ", kind.emitted(), ", ",
             kind.updated_filter().empty() ? std::string("everything")
                                           : absl::StrCat("updated after ", kind.updated_filter()),
             ", watermark ", kind.has_watermark() ? FormatTime(kind.watermark()) : "none",
             kind.watermark_advanced() ? " (advanced)" : " (unchanged)")});
  }
  table.Print();
  return kExitOk;
}

}  // namespace

void AddReconcileCommands(CommandLine& cli) {
  auto reconcile = std::make_shared<ReconcileArgs>();
  cli.Add("reconcile",
          {.synopsis = "reconcile SOURCE [--since T] [--full]",
           .summary = "ask the PIM for changes its webhooks missed",
           .description =
               "Asks the PIM behind SOURCE (its `rest` API) for products and product models "
               "updated\nsince the watermark (minus reconcile.overlap), or since T, and adds to "
               "the log an event\nfor each one newer than what the log has; likewise for the "
               "families, categories,\nattributes, attribute groups, reference entity records and "
               "assets turned on in\n`reconcile`, each since its own watermark.\n--full lists "
               "everything and also adds a deletion "
               "for each product (model) the log\nknows but the PIM no longer has. Waits for the "
               "run to finish (raise --timeout for a\nlarge catalogue) and prints its figures."})
      .Argument("SOURCE", "the source to reconcile (sources[].name, with `rest`)",
                reconcile->request.mutable_source(), "SOURCE")
      .Flag("--since", "T", "changes since T rather than since the watermark", &reconcile->since)
      .Switch("--full", "list everything, and find deletions", &reconcile->full)
      .Check([reconcile] { return CheckReconcile(*reconcile); })
      .Run([reconcile](const Invocation& in) { return RunReconcile(in, *reconcile); });
}

}  // namespace pimgate::ctl
