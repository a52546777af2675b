// `pimgatectl stats` and `pimgatectl plugins`: the log, the sources and the plugins at a glance.
// docs/operations.md explains every column.
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "ctl/client.h"
#include "ctl/command_line.h"
#include "ctl/commands.h"
#include "ctl/exit_codes.h"
#include "ctl/output.h"
#include "pimgate/v1/admin.grpc.pb.h"

namespace pimgate::ctl {
namespace {

namespace v1 = pimgate::v1;

// What is wrong with a plugin now, worded the same in `stats` and `plugins`.
std::string PluginErrors(const std::string& process_error, const std::string& delivery_error) {
  std::vector<std::string> errors;
  if (!process_error.empty()) errors.push_back("process: " + process_error);
  if (!delivery_error.empty()) errors.push_back("delivery: " + delivery_error);
  return errors.empty() ? "-" : absl::StrJoin(errors, "; ");
}

// The PIM's time zone as reconciliation knows it: "-05:00 (learned)", "America/New_York
// (configured)", "-05:00 (learned; window widened: filter -07:00)", "unknown (filter -14:00)".
std::string PimTimeZoneCell(const v1::ReconciliationStats& r) {
  const std::string zone = r.pim_time_zone().empty()
                               ? std::string("unknown")
                               : absl::StrCat(r.pim_time_zone(), " (", r.pim_time_zone_origin());
  if (r.pim_time_zone().empty()) {
    return r.filter_utc_offset().empty()
               ? zone
               : absl::StrCat(zone, " (filter ", r.filter_utc_offset(), ")");
  }
  if (r.pim_time_zone_origin() == "learned" && !r.filter_utc_offset().empty() &&
      r.filter_utc_offset() != r.pim_time_zone()) {
    return absl::StrCat(zone, "; window widened: filter ", r.filter_utc_offset(), ")");
  }
  return zone + ")";
}

// Where products are listed: "products-uuid" (PIM 7, SaaS) or "products (by identifier)".
std::string ProductsCell(const v1::ReconciliationStats& r) {
  if (r.products_path().empty()) return "-";
  if (absl::EndsWith(r.products_path(), "/products")) return "products (by identifier)";
  return std::string(r.products_path().substr(r.products_path().rfind('/') + 1));
}

int RunStats(const Invocation& in) {
  v1::GetStatsResponse response;
  if (grpc::Status s = in.client.Call(&v1::Admin::Stub::GetStats, v1::GetStatsRequest(), response);
      !s.ok()) {
    return ReportFailure(in.client, "stats", s);
  }
  if (in.json) return PrintJson(response);
  const v1::LogStats& log = response.log();
  std::printf("LOG  head %lu  first %lu  events %lu  disk %s  pending requests %lu\n",
              static_cast<unsigned long>(log.head_sequence()),
              static_cast<unsigned long>(log.first_sequence()),
              static_cast<unsigned long>(log.event_count()), FormatBytes(log.disk_bytes()).c_str(),
              static_cast<unsigned long>(log.pending_requests()));
  std::printf("\n");
  Table sources({"SOURCE", "ACCEPTED", "DUPLICATES", "STALE", "QUARANTINED", "REQUESTS BY CODE"});
  for (const v1::SourceStats& source : response.sources()) {
    sources.Add({source.name(), absl::StrCat(source.events_accepted()),
                 absl::StrCat(source.duplicates()), absl::StrCat(source.stale()),
                 absl::StrCat(source.quarantined()), FormatCodes(source.requests_by_code())});
  }
  sources.Add(
      {"(unrouted)", "-", "-", "-", "-", FormatCodes(response.gateway().unrouted_by_code())});
  sources.Print();
  std::printf("connections: %lu open, %lu refused\n\n",
              static_cast<unsigned long>(response.gateway().connections_open()),
              static_cast<unsigned long>(response.gateway().connections_refused()));
  if (!response.reconciliations().empty()) {
    Table reconciliations({"RECONCILE", "LAST RUN", "RESULT", "SCANNED", "EMITTED", "DELETED",
                           "IN SYNC", "API CALLS", "OK/FAILED", "WATERMARK", "NEXT RUN",
                           "PIM TIME ZONE", "PRODUCTS", "LAST ERROR"});
    for (const v1::ReconciliationStats& r : response.reconciliations()) {
      const bool ran = r.has_last_finished_at();
      std::string result = !ran ? "never" : r.last_ok() ? "ok" : "failed";
      if (r.last_full() && ran) result += " (full)";
      if (r.running()) result = ran ? result + ", running" : "running";
      const auto figure = [ran](uint64_t value) { return ran ? absl::StrCat(value) : "-"; };
      reconciliations.Add(
          {r.source(), ran ? FormatTime(r.last_finished_at()) : "-", result,
           figure(r.last_scanned()), figure(r.last_emitted()), figure(r.last_deleted()),
           figure(r.last_in_sync()), figure(r.last_api_calls()),
           absl::StrCat(r.runs_succeeded(), "/", r.runs_failed()),
           r.has_watermark() ? FormatTime(r.watermark()) : "-",
           r.has_next_run_at() ? FormatTime(r.next_run_at()) : "on demand", PimTimeZoneCell(r),
           ProductsCell(r), r.last_error().empty() ? "-" : r.last_error()});
    }
    reconciliations.Print();
    std::printf("\n");
  }
  if (response.plugins().empty()) {
    std::printf("no plugins configured\n");
    return kExitOk;
  }
  // The process side of LAST ERROR, as `plugins` shows it (best effort: the delivery side is
  // in the stats themselves).
  std::map<std::string, std::string> process_errors;
  v1::ListPluginsResponse processes;
  if (in.client.Call(&v1::Admin::Stub::ListPlugins, v1::ListPluginsRequest(), processes).ok()) {
    for (const v1::PluginInfo& p : processes.plugins()) {
      process_errors[p.name()] = p.process_error();
    }
  }
  Table plugins({"PLUGIN", "DELIVERY", "CURSOR", "LAG", "IN FLIGHT", "DELIVERED", "RETRIED",
                 "DEAD NOW", "DEAD TOTAL", "FILTERED", "STALE", "LAST ERROR"});
  for (const v1::PluginStats& p : response.plugins()) {
    plugins.Add({p.name(), p.state(), absl::StrCat(p.cursor()), absl::StrCat(p.lag()),
                 absl::StrCat(p.in_flight()), absl::StrCat(p.delivered()),
                 absl::StrCat(p.retried()), absl::StrCat(p.dead_letters_stored()),
                 absl::StrCat(p.dead_lettered()), absl::StrCat(p.skipped_filter()),
                 absl::StrCat(p.skipped_stale()),
                 PluginErrors(process_errors[p.name()], p.last_error())});
  }
  plugins.Print();
  return kExitOk;
}

int RunPlugins(const Invocation& in) {
  v1::ListPluginsResponse response;
  if (grpc::Status s =
          in.client.Call(&v1::Admin::Stub::ListPlugins, v1::ListPluginsRequest(), response);
      !s.ok()) {
    return ReportFailure(in.client, "plugins", s);
  }
  if (in.json) return PrintJson(response);
  if (response.plugins().empty()) {
    std::printf("no plugins configured\n");
    return kExitOk;
  }
  Table table({"NAME", "PROCESS", "PID", "RESTARTS", "DELIVERY", "CURSOR", "LAG", "IN FLIGHT",
               "LAST ERROR"});
  for (const v1::PluginInfo& p : response.plugins()) {
    table.Add({p.name(), p.process_state().empty() ? "-" : p.process_state(),
               p.pid() == 0 ? "-" : absl::StrCat(p.pid()), absl::StrCat(p.restarts()),
               p.delivery_state().empty() ? "-" : p.delivery_state(), absl::StrCat(p.cursor()),
               absl::StrCat(p.lag()), absl::StrCat(p.in_flight()),
               PluginErrors(p.process_error(), p.delivery_error())});
  }
  table.Print();
  // Why a plugin fails to run is usually in what it wrote to stderr (a traceback, a missing
  // module): shown in full, since the table cuts long cells.
  for (const v1::PluginInfo& p : response.plugins()) {
    if (p.process_stderr().empty()) continue;
    std::printf("\n%s %s; its last stderr lines:\n", p.name().c_str(),
                p.process_error().empty() ? "failed" : p.process_error().c_str());
    for (const std::string& line : p.process_stderr()) {
      std::printf("  | %s\n", OneLine(line).c_str());
    }
  }
  return kExitOk;
}

int RunOwners(const Invocation& in) {
  v1::ListOwnersResponse response;
  if (grpc::Status s =
          in.client.Call(&v1::Admin::Stub::ListOwners, v1::ListOwnersRequest(), response);
      !s.ok()) {
    return ReportFailure(in.client, "owners", s);
  }
  if (in.json) return PrintJson(response);
  if (!response.cluster()) {
    std::printf("no cluster dispatch (store.backend: rocksdb): this node delivers everything\n");
    return kExitOk;
  }
  std::printf(
      "node %s: %u partition(s) per plugin; leases held %llu, acquired %llu, lost %llu, "
      "released %llu\n\n",
      response.node_id().c_str(), response.partitions(),
      static_cast<unsigned long long>(response.leases_held()),
      static_cast<unsigned long long>(response.leases_acquired()),
      static_cast<unsigned long long>(response.leases_lost()),
      static_cast<unsigned long long>(response.leases_released()));
  // One row per (plugin, node): the partitions that node delivers.
  std::map<std::pair<std::string, std::string>, std::vector<std::string>> rows;
  std::map<std::string, uint32_t> held;
  for (const v1::PartitionOwnerInfo& owner : response.owners()) {
    rows[{owner.plugin(), owner.node().empty() ? "(released)" : owner.node()}].push_back(
        absl::StrCat(owner.partition()));
    ++held[owner.plugin()];
  }
  Table table({"PLUGIN", "NODE", "PARTITIONS"});
  for (const auto& [key, partitions] : rows) {
    table.Add({key.first, key.second, absl::StrJoin(partitions, " ")});
  }
  for (const auto& [plugin, count] : held) {
    if (count < response.partitions()) {
      table.Add({plugin, "(nobody)",
                 absl::StrCat(response.partitions() - count, " partition(s) without a lease")});
    }
  }
  table.Print();
  return kExitOk;
}

}  // namespace

void AddStatsCommands(CommandLine& cli) {
  cli.Add("stats",
          {.synopsis = "stats",
           .summary = "log, sources and plugins at a glance",
           .description =
               "The log (head and first sequence, event count, disk use), each source's answers "
               "and\nevents, and each plugin's delivery: state, cursor, lag, in flight, "
               "delivered, retried,\ndead letters stored now (DEAD NOW) and made since start "
               "(DEAD TOTAL), skipped by filter or\nas stale, the current problem; each "
               "source's last reconciliation. Counters start when\npimgate starts. "
               "docs/operations.md explains every state and column."})
      .Run(RunStats);
  cli.Add("plugins",
          {.synopsis = "plugins",
           .summary = "plugin processes and delivery",
           .description =
               "Each plugin's process (state, pid, restarts) and delivery (state, cursor, lag, "
               "in\nflight), and what is wrong now (LAST ERROR, cleared once resolved). A plugin "
               "that failed\nto run also shows the last lines it wrote to stderr."})
      .Run(RunPlugins);
  cli.Add("owners",
          {.synopsis = "owners",
           .summary = "which node delivers which partitions (cluster)",
           .description =
               "With store.backend: jetstream, each plugin's events are cut into partitions and "
               "each\n(plugin, partition) is delivered by the one node holding its lease. Lists "
               "the holders\nas the lease bucket says now, and this node's lease counters."})
      .Run(RunOwners);
}

}  // namespace pimgate::ctl
