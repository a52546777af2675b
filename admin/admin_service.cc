// The Admin service's calls: each one authorizes the caller, then reads or drives the log, the
// dispatcher, the supervisor or the gateway. absl::Status becomes grpc::Status in one place
// (Guarded); list calls are bounded by AdminLimits.
#include "admin/admin_service.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "common/glob.h"
#include "core/dispatch/dead_letters.h"
#include "core/log/event_query.h"
#include "google/protobuf/util/time_util.h"
#include "spdlog/spdlog.h"

namespace pimgate {
namespace {

using google::protobuf::util::TimeUtil;

using TokenDigest = std::array<unsigned char, 32>;

TokenDigest Sha256(absl::string_view text) {
  TokenDigest digest{};
  unsigned int length = 0;
  EVP_Digest(text.data(), text.size(), digest.data(), &length, EVP_sha256(), nullptr);
  return digest;
}

absl::Time ToTime(const google::protobuf::Timestamp& ts) {
  return absl::FromUnixSeconds(ts.seconds()) + absl::Nanoseconds(ts.nanos());
}

bool ValidTimestamp(const google::protobuf::Timestamp& ts) {
  return ts.seconds() >= TimeUtil::kTimestampMinSeconds &&
         ts.seconds() <= TimeUtil::kTimestampMaxSeconds && ts.nanos() >= 0 &&
         ts.nanos() < 1'000'000'000;
}

google::protobuf::Timestamp ToProto(absl::Time time) {
  return TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(time));
}

// The one conversion of this module's errors to gRPC's: the canonical codes are the same numbers.
grpc::Status ToGrpc(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

absl::Status Unavailable(absl::string_view what) {
  return absl::FailedPreconditionError(absl::StrCat(what, " is not running in this pimgate"));
}

// page_size as the request gives it: 0 = default, above the maximum = the maximum.
absl::StatusOr<std::size_t> PageSize(int32_t requested, const AdminLimits& limits) {
  if (requested < 0) return absl::InvalidArgumentError("page_size must not be negative");
  if (requested == 0) return static_cast<std::size_t>(limits.default_page_size);
  return static_cast<std::size_t>(std::min(requested, limits.max_page_size));
}

// Page tokens are the next sequence (or id) to read, in decimal. `fallback` when empty.
absl::StatusOr<uint64_t> ParsePageToken(const std::string& token, uint64_t fallback) {
  if (token.empty()) return fallback;
  uint64_t value = 0;
  if (!absl::SimpleAtoi(token, &value)) {
    return absl::InvalidArgumentError("invalid page_token (pass back a next_page_token)");
  }
  return value;
}

// The lowest sequence still in the log, 0 when it is empty.
absl::StatusOr<uint64_t> FirstSequence(const EventLog& log) {
  absl::StatusOr<std::optional<v1::Event>> oldest = log.OldestEvent();
  if (!oldest.ok()) return oldest.status();
  return oldest->has_value() ? (*oldest)->sequence() : 0;
}

// What a retry or purge request selects, as the dispatch module takes it.
DeadLetterSelection SelectionOf(bool all, const google::protobuf::RepeatedField<uint64_t>& listed) {
  return DeadLetterSelection{all, std::vector<uint64_t>(listed.begin(), listed.end())};
}

// A ListDeadLetters request's filters and page token, checked.
absl::StatusOr<DeadLetterQuery> DeadLetterQueryOf(const v1::ListDeadLettersRequest& request) {
  DeadLetterQuery query;
  if (std::optional<std::string> problem = EventTypeGlobProblem(request.type())) {
    return absl::InvalidArgumentError(absl::StrCat("type: the glob ", *problem));
  }
  query.type = request.type();
  query.resource_id = request.resource_id();
  switch (request.kind()) {
    case v1::DEAD_LETTER_KIND_ANY:
      query.kind = DeadLetterQuery::Kind::kAny;
      break;
    case v1::DEAD_LETTER_KIND_REJECTED:
      query.kind = DeadLetterQuery::Kind::kRejected;
      break;
    case v1::DEAD_LETTER_KIND_EXHAUSTED:
      query.kind = DeadLetterQuery::Kind::kExhausted;
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          "kind: unknown value ", static_cast<int>(request.kind()),
          " (DEAD_LETTER_KIND_ANY, DEAD_LETTER_KIND_REJECTED or DEAD_LETTER_KIND_EXHAUSTED)"));
  }
  query.reason_contains = request.reason_contains();
  absl::StatusOr<uint64_t> from = ParsePageToken(request.page_token(), 0);
  if (!from.ok()) return from.status();
  query.resume_at = *from;
  return query;
}

class AdminServiceImpl final : public v1::Admin::Service {
 public:
  AdminServiceImpl(AdminDependencies deps, const std::string& token, AdminLimits limits)
      : deps_(deps), limits_(limits) {
    if (!token.empty()) token_digest_ = Sha256(token);
    // Without a dispatcher (tests, a part that is not running) dead letters can still be listed
    // and purged, through the dispatch module's own access to them; only a retry needs it.
    if (deps_.dispatcher == nullptr && deps_.log != nullptr) {
      own_letters_ = std::make_unique<DeadLetters>(*deps_.log);
    }
  }

  grpc::Status GetStats(grpc::ServerContext* ctx, const v1::GetStatsRequest*,
                        v1::GetStatsResponse* response) override {
    return Guarded(ctx, [&] { return DoGetStats(*response); });
  }
  grpc::Status ListOwners(grpc::ServerContext* ctx, const v1::ListOwnersRequest*,
                          v1::ListOwnersResponse* response) override {
    return Guarded(ctx, [&] { return DoListOwners(*response); });
  }

  grpc::Status ListPlugins(grpc::ServerContext* ctx, const v1::ListPluginsRequest*,
                           v1::ListPluginsResponse* response) override {
    return Guarded(ctx, [&] { return DoListPlugins(*response); });
  }
  grpc::Status PausePlugin(grpc::ServerContext* ctx, const v1::PausePluginRequest* request,
                           v1::PausePluginResponse*) override {
    return Guarded(ctx, [&] { return DoPause(ctx, request->plugin(), /*pause=*/true); });
  }
  grpc::Status ResumePlugin(grpc::ServerContext* ctx, const v1::ResumePluginRequest* request,
                            v1::ResumePluginResponse*) override {
    return Guarded(ctx, [&] { return DoPause(ctx, request->plugin(), /*pause=*/false); });
  }
  grpc::Status RestartPlugin(grpc::ServerContext* ctx, const v1::RestartPluginRequest* request,
                             v1::RestartPluginResponse* response) override {
    return Guarded(ctx, [&] { return DoRestart(ctx, *request, *response); });
  }
  grpc::Status SeekPlugin(grpc::ServerContext* ctx, const v1::SeekPluginRequest* request,
                          v1::SeekPluginResponse* response) override {
    return Guarded(ctx, [&] { return DoSeek(ctx, *request, *response); });
  }
  grpc::Status ListDeadLetters(grpc::ServerContext* ctx, const v1::ListDeadLettersRequest* request,
                               v1::ListDeadLettersResponse* response) override {
    return Guarded(ctx, [&] { return DoListDeadLetters(*request, *response); });
  }
  grpc::Status RetryDeadLetters(grpc::ServerContext* ctx,
                                const v1::RetryDeadLettersRequest* request,
                                v1::RetryDeadLettersResponse* response) override {
    return Guarded(ctx, [&] { return DoRetryDeadLetters(ctx, *request, *response); });
  }
  grpc::Status PurgeDeadLetters(grpc::ServerContext* ctx,
                                const v1::PurgeDeadLettersRequest* request,
                                v1::PurgeDeadLettersResponse* response) override {
    return Guarded(ctx, [&] { return DoPurgeDeadLetters(ctx, *request, *response); });
  }
  grpc::Status GetEvent(grpc::ServerContext* ctx, const v1::GetEventRequest* request,
                        v1::Event* response) override {
    return Guarded(ctx, [&] { return DoGetEvent(*request, *response); });
  }
  grpc::Status ListEvents(grpc::ServerContext* ctx, const v1::ListEventsRequest* request,
                          v1::ListEventsResponse* response) override {
    return Guarded(ctx, [&] { return DoListEvents(*request, *response); });
  }
  grpc::Status ListQuarantine(grpc::ServerContext* ctx, const v1::ListQuarantineRequest* request,
                              v1::ListQuarantineResponse* response) override {
    return Guarded(ctx, [&] { return DoListQuarantine(*request, *response); });
  }
  grpc::Status Reconcile(grpc::ServerContext* ctx, const v1::ReconcileRequest* request,
                         v1::ReconcileResponse* response) override {
    return Guarded(ctx, [&] { return DoReconcile(ctx, *request, *response); });
  }

  // ---- Event Platform: admin/platform_admin.cc does the work ----
  grpc::Status ListPlatformSubscribers(grpc::ServerContext* ctx,
                                       const v1::ListPlatformSubscribersRequest* request,
                                       v1::ListPlatformSubscribersResponse* response) override {
    return Platform(ctx, &PlatformAdmin::ListSubscribers, *request, *response);
  }
  grpc::Status ListPlatformSubscriptions(grpc::ServerContext* ctx,
                                         const v1::ListPlatformSubscriptionsRequest* request,
                                         v1::ListPlatformSubscriptionsResponse* response) override {
    return Platform(ctx, &PlatformAdmin::ListSubscriptions, *request, *response);
  }
  grpc::Status PlatformSubscribe(grpc::ServerContext* ctx,
                                 const v1::PlatformSubscribeRequest* request,
                                 v1::PlatformSubscribeResponse* response) override {
    return Platform(ctx, &PlatformAdmin::Subscribe, *request, *response);
  }
  grpc::Status SuspendPlatformSubscription(
      grpc::ServerContext* ctx, const v1::SuspendPlatformSubscriptionRequest* request,
      v1::SuspendPlatformSubscriptionResponse* response) override {
    return Platform(ctx, &PlatformAdmin::Suspend, *request, *response);
  }
  grpc::Status ResumePlatformSubscription(
      grpc::ServerContext* ctx, const v1::ResumePlatformSubscriptionRequest* request,
      v1::ResumePlatformSubscriptionResponse* response) override {
    return Platform(ctx, &PlatformAdmin::Resume, *request, *response);
  }
  grpc::Status DeletePlatformSubscription(
      grpc::ServerContext* ctx, const v1::DeletePlatformSubscriptionRequest* request,
      v1::DeletePlatformSubscriptionResponse* response) override {
    return Platform(ctx, &PlatformAdmin::Delete, *request, *response);
  }
  grpc::Status ReplayPlatformSubscription(
      grpc::ServerContext* ctx, const v1::ReplayPlatformSubscriptionRequest* request,
      v1::ReplayPlatformSubscriptionResponse* response) override {
    return Platform(ctx, &PlatformAdmin::Replay, *request, *response);
  }
  grpc::Status PlatformLogs(grpc::ServerContext* ctx, const v1::PlatformLogsRequest* request,
                            v1::PlatformLogsResponse* response) override {
    return Platform(ctx, &PlatformAdmin::Logs, *request, *response);
  }
  grpc::Status CheckPlatformSubscription(grpc::ServerContext* ctx,
                                         const v1::CheckPlatformSubscriptionRequest* request,
                                         v1::CheckPlatformSubscriptionResponse* response) override {
    return Platform(ctx, &PlatformAdmin::Check, *request, *response);
  }

 private:
  // Every call goes through here: the token check first, then the call, then the one conversion
  // of its status to gRPC's.
  grpc::Status Guarded(grpc::ServerContext* ctx, const std::function<absl::Status()>& call) {
    if (absl::Status status = Authorize(*ctx); !status.ok()) return ToGrpc(status);
    return ToGrpc(call());
  }

  // An Event Platform call: guarded like every call, done by deps_.platform.
  template <typename Request, typename Response>
  grpc::Status Platform(grpc::ServerContext* ctx,
                        absl::Status (PlatformAdmin::*method)(const std::string&, const Request&,
                                                              Response&),
                        const Request& request, Response& response) {
    return Guarded(ctx, [&] {
      return PlatformAdmin::Call(deps_.platform, method, ctx->peer(), request, response);
    });
  }

  absl::Status Authorize(const grpc::ServerContext& ctx) const {
    if (!token_digest_.has_value()) return absl::OkStatus();
    const auto& metadata = ctx.client_metadata();
    const auto header = metadata.find("authorization");
    if (header == metadata.end()) {
      spdlog::warn("[admin] refused a call from {}: no authorization metadata", ctx.peer());
      return absl::UnauthenticatedError(
          "this pimgate requires an admin token: send \"authorization: Bearer <token>\"");
    }
    absl::string_view value(header->second.data(), header->second.size());
    constexpr absl::string_view kScheme = "bearer ";
    if (value.size() < kScheme.size() ||
        !absl::EqualsIgnoreCase(value.substr(0, kScheme.size()), kScheme)) {
      spdlog::warn("[admin] refused a call from {}: authorization is not a bearer token",
                   ctx.peer());
      return absl::UnauthenticatedError("authorization must be \"Bearer <token>\"");
    }
    value.remove_prefix(kScheme.size());
    // Digests of equal length compared in constant time: neither the token's length nor its
    // matching prefix shows in the timing.
    const TokenDigest presented = Sha256(value);
    if (CRYPTO_memcmp(presented.data(), token_digest_->data(), presented.size()) != 0) {
      spdlog::warn("[admin] refused a call from {}: wrong admin token", ctx.peer());
      return absl::UnauthenticatedError("wrong admin token");
    }
    return absl::OkStatus();
  }

  absl::StatusOr<EventLog*> Log() const {
    if (deps_.log == nullptr) return Unavailable("the event log");
    return deps_.log;
  }

  absl::StatusOr<Dispatcher*> Dispatch() const {
    if (deps_.dispatcher == nullptr) return Unavailable("the dispatcher");
    return deps_.dispatcher;
  }

  // The dispatch module's dead letters (they are stored in the log, hence its check).
  absl::StatusOr<DeadLetters*> Letters() const {
    if (deps_.log == nullptr) return Unavailable("the event log");
    if (deps_.dispatcher != nullptr) return &deps_.dispatcher->dead_letters();
    return own_letters_.get();
  }

  // A plugin name the dispatcher knows (NOT_FOUND lists the known ones). Checked before reading
  // its dead letters, so a typo does not read as "no dead letters".
  absl::Status CheckPlugin(const std::string& plugin) const {
    if (plugin.empty()) return absl::InvalidArgumentError("plugin is required");
    if (deps_.dispatcher == nullptr) return absl::OkStatus();
    const std::vector<std::string> names = deps_.dispatcher->PluginNames();
    if (std::find(names.begin(), names.end(), plugin) != names.end()) return absl::OkStatus();
    return absl::NotFoundError(
        absl::StrCat("no plugin named \"", plugin, "\"",
                     names.empty() ? " (none configured)"
                                   : absl::StrCat("; plugins: ", absl::StrJoin(names, ", "))));
  }

  // ---- Stats and plugins ----------------------------------------------------------------------

  // The dispatcher's stats, named: a plugin whose delivery thread has not yet published any
  // stats (still connecting) reports an empty name, and Stats() keeps PluginNames() order.
  std::vector<PluginDispatchStats> DeliveryStats() const {
    std::vector<PluginDispatchStats> stats = deps_.dispatcher->Stats();
    const std::vector<std::string> names = deps_.dispatcher->PluginNames();
    for (std::size_t i = 0; i < stats.size() && i < names.size(); ++i) {
      if (stats[i].name.empty()) stats[i].name = names[i];
    }
    return stats;
  }

  absl::Status DoGetStats(v1::GetStatsResponse& response) {
    *response.mutable_taken_at() = ToProto(absl::Now());
    if (deps_.log != nullptr) {
      EventLog& log = *deps_.log;
      v1::LogStats& stats = *response.mutable_log();
      const uint64_t head = log.head();
      absl::StatusOr<uint64_t> first = FirstSequence(log);
      if (!first.ok()) return first.status();
      stats.set_head_sequence(head);
      stats.set_first_sequence(*first);
      stats.set_event_count(*first > 0 && head >= *first ? head - *first + 1 : 0);
      stats.set_disk_bytes(log.DiskBytes());
      stats.set_pending_requests(log.pending());
    }
    if (deps_.gateway != nullptr) {
      const GatewayStats stats = deps_.gateway->stats();
      for (const GatewayStats::Source& source : stats.sources) {
        v1::SourceStats& out = *response.add_sources();
        out.set_name(source.name);
        for (const auto& [code, count] : source.requests_by_code) {
          (*out.mutable_requests_by_code())[static_cast<uint32_t>(code)] = count;
        }
        out.set_events_accepted(source.events_accepted);
        out.set_duplicates(source.duplicates);
        out.set_stale(source.stale);
        out.set_quarantined(source.quarantined);
      }
      v1::GatewayTotals& totals = *response.mutable_gateway();
      for (const auto& [code, count] : stats.unrouted_by_code) {
        (*totals.mutable_unrouted_by_code())[static_cast<uint32_t>(code)] = count;
      }
      totals.set_connections_open(stats.connections_open);
      totals.set_connections_refused(stats.connections_refused);
    }
    if (deps_.dispatcher != nullptr) {
      for (const PluginDispatchStats& plugin : DeliveryStats()) {
        v1::PluginStats& out = *response.add_plugins();
        out.set_name(plugin.name);
        out.set_state(plugin.state);
        out.set_cursor(plugin.cursor);
        out.set_lag(plugin.lag);
        out.set_in_flight(plugin.in_flight);
        out.set_delivered(plugin.delivered);
        out.set_retried(plugin.retried);
        out.set_dead_lettered(plugin.dead_lettered);
        out.set_skipped_filter(plugin.skipped_filter);
        out.set_skipped_stale(plugin.skipped_stale);
        out.set_connects(plugin.connects);
        out.set_last_error(plugin.last_error);
        if (deps_.log != nullptr) {
          absl::StatusOr<uint64_t> stored = deps_.dispatcher->dead_letters().Count(plugin.name);
          if (!stored.ok()) return stored.status();
          out.set_dead_letters_stored(*stored);
        }
      }
    }
    if (deps_.reconciler != nullptr) {
      for (const ReconcileSourceStats& source : deps_.reconciler->Stats()) {
        if (source.configured) FillReconciliation(source, *response.add_reconciliations());
      }
    }
    return absl::OkStatus();
  }

  static void FillReconciliation(const ReconcileSourceStats& source, v1::ReconciliationStats& out) {
    out.set_source(source.source);
    out.set_running(source.running);
    out.set_runs_succeeded(source.runs_succeeded);
    out.set_runs_failed(source.runs_failed);
    out.set_items_scanned(source.items_scanned);
    out.set_events_emitted(source.events_emitted);
    out.set_deletions_emitted(source.deletions_emitted);
    if (source.last_run) {
      const ReconcileRunStats& run = *source.last_run;
      *out.mutable_last_started_at() = ToProto(run.started_at);
      *out.mutable_last_finished_at() = ToProto(run.finished_at);
      out.set_last_ok(run.status.ok());
      out.set_last_error(std::string(run.status.message()));
      out.set_last_scanned(run.scanned);
      out.set_last_emitted(run.emitted);
      out.set_last_deleted(run.deleted);
      out.set_last_in_sync(run.in_sync);
      out.set_last_api_calls(run.api_calls);
      out.set_last_duration_seconds(absl::ToDoubleSeconds(run.duration()));
      out.set_last_full(run.full);
    }
    if (source.last_success) *out.mutable_last_success_at() = ToProto(*source.last_success);
    if (source.watermark_us) {
      *out.mutable_watermark() = TimeUtil::MicrosecondsToTimestamp(*source.watermark_us);
    }
    for (const auto& [kind, watermark_us] : source.kind_watermarks_us) {
      (*out.mutable_kind_watermarks())[kind] = TimeUtil::MicrosecondsToTimestamp(watermark_us);
    }
    if (source.next_run) *out.mutable_next_run_at() = ToProto(*source.next_run);
    out.set_pim_time_zone(source.pim_time_zone);
    out.set_pim_time_zone_origin(source.pim_time_zone_origin);
    out.set_filter_utc_offset(source.filter_utc_offset);
    out.set_products_path(source.products_path);
  }

  // ---- Reconciliation -------------------------------------------------------------------------

  absl::Status DoReconcile(grpc::ServerContext* ctx, const v1::ReconcileRequest& request,
                           v1::ReconcileResponse& response) {
    if (request.source().empty()) return absl::InvalidArgumentError("source is required");
    if (deps_.reconciler == nullptr) return Unavailable("reconciliation");
    ReconcileOptions options;
    options.full = request.full();
    if (request.has_since()) {
      if (!ValidTimestamp(request.since())) {
        return absl::InvalidArgumentError("since is not a valid timestamp");
      }
      options.since_us = absl::ToUnixMicros(ToTime(request.since()));
    }
    spdlog::info("[admin] reconciling source {}{}{} (asked by {})", request.source(),
                 options.full ? " (full)" : "",
                 options.since_us ? " since " + TimeUtil::ToString(request.since()) : std::string(),
                 ctx->peer());
    absl::StatusOr<ReconcileRunStats> run = deps_.reconciler->Run(request.source(), options);
    if (!run.ok()) return run.status();
    response.set_events_added(run->emitted + run->deleted);
    response.set_scanned(run->scanned);
    response.set_emitted(run->emitted);
    response.set_deleted(run->deleted);
    response.set_in_sync(run->in_sync);
    response.set_invalid(run->invalid);
    response.set_unchecked(run->unchecked);
    response.set_api_calls(run->api_calls);
    if (run->window_start_us) {
      *response.mutable_window_start() = TimeUtil::MicrosecondsToTimestamp(*run->window_start_us);
    }
    if (run->watermark_us) {
      *response.mutable_watermark() = TimeUtil::MicrosecondsToTimestamp(*run->watermark_us);
    }
    response.set_watermark_advanced(run->watermark_advanced);
    *response.mutable_started_at() = ToProto(run->started_at);
    *response.mutable_finished_at() = ToProto(run->finished_at);
    response.set_run(run->run);
    response.set_full(run->full);
    response.set_updated_filter(run->updated_filter);
    response.set_filter_time_zone(run->filter_time_zone);
    response.set_products_path(run->products_path);
    for (const ReconcileKindRunStats& kind : run->kinds) {
      v1::ReconcileKindRun& out = *response.add_kinds();
      out.set_kind(kind.kind);
      out.set_updated_filter(kind.updated_filter);
      out.set_scanned(kind.scanned);
      out.set_emitted(kind.emitted);
      if (kind.watermark_us) {
        *out.mutable_watermark() = TimeUtil::MicrosecondsToTimestamp(*kind.watermark_us);
      }
      out.set_watermark_advanced(kind.watermark_advanced);
      if (kind.unavailable) out.set_unavailable(std::string(kind.status.message()));
      out.set_parents(kind.parents);
    }
    return absl::OkStatus();
  }

  absl::Status DoListOwners(v1::ListOwnersResponse& response) {
    if (deps_.dispatcher == nullptr) return absl::UnavailableError("no dispatcher");
    const std::optional<std::string> node = deps_.dispatcher->NodeId();
    response.set_cluster(node.has_value());
    if (!node.has_value()) return absl::OkStatus();
    response.set_node_id(*node);
    response.set_partitions(static_cast<uint32_t>(deps_.dispatcher->partitions()));
    absl::StatusOr<std::vector<PartitionOwner>> owners = deps_.dispatcher->Owners();
    if (!owners.ok()) return owners.status();
    for (const PartitionOwner& owner : *owners) {
      v1::PartitionOwnerInfo& out = *response.add_owners();
      out.set_plugin(owner.plugin);
      out.set_partition(static_cast<uint32_t>(owner.partition));
      out.set_node(owner.node);
    }
    const LeaseStats leases = deps_.dispatcher->Leases();
    response.set_leases_held(leases.held);
    response.set_leases_acquired(leases.acquired);
    response.set_leases_lost(leases.lost);
    response.set_leases_released(leases.released);
    return absl::OkStatus();
  }

  absl::Status DoListPlugins(v1::ListPluginsResponse& response) {
    // Manifest order (the dispatcher's); the supervisor fills in the process side by name.
    std::vector<PluginStatus> processes;
    if (deps_.supervisor != nullptr) processes = deps_.supervisor->Status();
    const auto process_of = [&processes](const std::string& name) -> const PluginStatus* {
      for (const PluginStatus& status : processes) {
        if (status.name == name) return &status;
      }
      return nullptr;
    };
    const auto fill_process = [](const PluginStatus& status, v1::PluginInfo& out) {
      out.set_address(status.address);
      out.set_process_state(PluginStateName(status.state));
      out.set_pid(static_cast<uint32_t>(status.pid));
      out.set_restarts(status.restarts);
      out.set_process_error(status.last_error);
      for (const std::string& line : status.last_stderr) out.add_process_stderr(line);
    };
    if (deps_.dispatcher != nullptr) {
      for (const PluginDispatchStats& delivery : DeliveryStats()) {
        v1::PluginInfo& out = *response.add_plugins();
        out.set_name(delivery.name);
        if (const PluginStatus* process = process_of(delivery.name); process != nullptr) {
          fill_process(*process, out);
        }
        out.set_delivery_state(delivery.state);
        out.set_cursor(delivery.cursor);
        out.set_lag(delivery.lag);
        out.set_in_flight(delivery.in_flight);
        out.set_delivery_error(delivery.last_error);
        out.set_hydrating(delivery.hydrating);
        out.set_hydration_fetches(delivery.hydration_fetches);
        out.set_hydration_cache_hits(delivery.hydration_cache_hits);
        out.set_hydration_not_found(delivery.hydration_not_found);
        out.set_hydration_failures(delivery.hydration_failures);
      }
      return absl::OkStatus();
    }
    for (const PluginStatus& process : processes) {
      v1::PluginInfo& out = *response.add_plugins();
      out.set_name(process.name);
      fill_process(process, out);
    }
    return absl::OkStatus();
  }

  absl::Status DoPause(grpc::ServerContext* ctx, const std::string& plugin, bool pause) {
    absl::StatusOr<Dispatcher*> dispatcher = Dispatch();
    if (!dispatcher.ok()) return dispatcher.status();
    if (absl::Status status = CheckPlugin(plugin); !status.ok()) return status;
    absl::Status status = pause ? (*dispatcher)->Pause(plugin) : (*dispatcher)->Resume(plugin);
    if (status.ok()) {
      spdlog::info("[admin] {} plugin {} (asked by {})", pause ? "pausing" : "resuming", plugin,
                   ctx->peer());
    }
    return status;
  }

  // Drain, stop, start, redeliver: the dispatcher holds the plugin's events around the
  // supervisor's restart of its process, so that nothing is sent to a process on its way out
  // and what it left unanswered goes to the new one.
  absl::Status DoRestart(grpc::ServerContext* ctx, const v1::RestartPluginRequest& request,
                         v1::RestartPluginResponse& response) {
    absl::StatusOr<Dispatcher*> dispatcher = Dispatch();
    if (!dispatcher.ok()) return dispatcher.status();
    if (deps_.supervisor == nullptr) return Unavailable("the plugin supervisor");
    const std::string& plugin = request.plugin();
    if (absl::Status status = CheckPlugin(plugin); !status.ok()) return status;
    std::optional<absl::Duration> drain_timeout;
    if (request.has_drain_timeout()) {
      const google::protobuf::Duration& d = request.drain_timeout();
      if (d.seconds() < 0 || d.nanos() < 0 || d.nanos() >= 1'000'000'000) {
        return absl::InvalidArgumentError("drain_timeout must be a non-negative duration");
      }
      drain_timeout = absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
    }
    // One restart at a time: two interleaved holds of one plugin would release each other.
    absl::MutexLock lock(&restart_mu_);
    std::optional<PluginStatus> process;
    for (PluginStatus& status : deps_.supervisor->Status()) {
      if (status.name == plugin) process = std::move(status);
    }
    if (!process.has_value()) return absl::NotFoundError(absl::StrCat("no plugin named ", plugin));
    if (process->state == PluginState::kExternal) {
      return absl::FailedPreconditionError(absl::StrCat(
          "plugin ", plugin, " runs outside pimgate (address ", process->address,
          "): restart it with the process manager that runs it; pimgate reconnects by itself"));
    }
    spdlog::info("[admin] restarting plugin {} (asked by {})", plugin, ctx->peer());
    absl::StatusOr<Dispatcher::DrainResult> drained =
        (*dispatcher)->HoldAndDrain(plugin, drain_timeout);
    if (!drained.ok()) {
      (void)(*dispatcher)->EndHold(plugin);
      return drained.status();
    }
    absl::StatusOr<pid_t> pid = deps_.supervisor->Restart(plugin);
    (void)(*dispatcher)->EndHold(plugin);
    if (!pid.ok()) return pid.status();
    spdlog::info(
        "[admin] plugin {} restarted: pid {} -> {}; {} delivery(ies) in flight, {} sent "
        "again",
        plugin, process->pid, *pid, drained->in_flight, drained->unanswered);
    response.set_old_pid(static_cast<uint32_t>(process->pid));
    response.set_new_pid(static_cast<uint32_t>(*pid));
    response.set_in_flight(drained->in_flight);
    response.set_redelivered(drained->unanswered);
    return absl::OkStatus();
  }

  absl::Status DoSeek(grpc::ServerContext* ctx, const v1::SeekPluginRequest& request,
                      v1::SeekPluginResponse& response) {
    absl::StatusOr<Dispatcher*> dispatcher = Dispatch();
    if (!dispatcher.ok()) return dispatcher.status();
    absl::StatusOr<EventLog*> log = Log();
    if (!log.ok()) return log.status();
    if (absl::Status status = CheckPlugin(request.plugin()); !status.ok()) return status;
    const uint64_t head = (*log)->head();
    uint64_t sequence = 0;
    switch (request.target_case()) {
      case v1::SeekPluginRequest::kSequence:
        sequence = request.sequence();
        if (sequence < 1 || sequence > head + 1) {
          return absl::OutOfRangeError(absl::StrCat("sequence ", sequence, " is outside 1..",
                                                    head + 1, " (the log's head is ", head, ")"));
        }
        break;
      case v1::SeekPluginRequest::kTime: {
        if (!ValidTimestamp(request.time())) {
          return absl::InvalidArgumentError("time is not a valid timestamp");
        }
        absl::StatusOr<uint64_t> found =
            FirstSequenceReceivedAtOrAfter(**log, ToTime(request.time()));
        if (!found.ok()) return found.status();
        sequence = std::min(*found, head + 1);
        break;
      }
      default:
        return absl::InvalidArgumentError("set sequence or time");
    }
    if (absl::Status status = (*dispatcher)->Seek(request.plugin(), sequence); !status.ok()) {
      return status;
    }
    spdlog::info("[admin] seeking plugin {} to sequence {} (head {}, asked by {})",
                 request.plugin(), sequence, head, ctx->peer());
    response.set_sequence(sequence);
    response.set_head_sequence(head);
    response.set_events_to_replay(head + 1 - sequence);
    return absl::OkStatus();
  }

  // ---- Dead letters ---------------------------------------------------------------------------

  absl::Status DoListDeadLetters(const v1::ListDeadLettersRequest& request,
                                 v1::ListDeadLettersResponse& response) {
    absl::StatusOr<DeadLetters*> letters = Letters();
    if (!letters.ok()) return letters.status();
    if (absl::Status status = CheckPlugin(request.plugin()); !status.ok()) return status;
    absl::StatusOr<std::size_t> page_size = PageSize(request.page_size(), limits_);
    if (!page_size.ok()) return page_size.status();
    absl::StatusOr<DeadLetterQuery> query = DeadLetterQueryOf(request);
    if (!query.ok()) return query.status();
    DeadLetterSearchLimits limits;
    limits.page_size = *page_size;
    limits.max_scan = limits_.max_scan;
    limits.max_bytes = limits_.max_response_bytes;
    absl::StatusOr<DeadLetterPage> page = (*letters)->Search(request.plugin(), *query, limits);
    if (!page.ok()) return page.status();
    for (v1::DeadLetter& letter : page->letters) *response.add_dead_letters() = std::move(letter);
    response.set_scanned(page->scanned);
    if (page->next) response.set_next_page_token(absl::StrCat(*page->next));
    return absl::OkStatus();
  }

  absl::Status DoRetryDeadLetters(grpc::ServerContext* ctx,
                                  const v1::RetryDeadLettersRequest& request,
                                  v1::RetryDeadLettersResponse& response) {
    absl::StatusOr<EventLog*> log = Log();
    if (!log.ok()) return log.status();
    absl::StatusOr<Dispatcher*> dispatcher = Dispatch();
    if (!dispatcher.ok()) return dispatcher.status();
    if (absl::Status status = CheckPlugin(request.plugin()); !status.ok()) return status;
    absl::StatusOr<RetriedDeadLetters> retried =
        (*dispatcher)
            ->dead_letters()
            .Retry(request.plugin(), SelectionOf(request.all(), request.sequences()),
                   limits_.max_retry);
    if (!retried.ok()) return retried.status();
    if (retried->sequences.empty()) return absl::OkStatus();
    spdlog::info("[admin] retrying {} dead letter(s) of plugin {} (asked by {})",
                 retried->sequences.size(), request.plugin(), ctx->peer());
    response.mutable_sequences()->Add(retried->sequences.begin(), retried->sequences.end());
    response.set_more(retried->more);
    return absl::OkStatus();
  }

  absl::Status DoPurgeDeadLetters(grpc::ServerContext* ctx,
                                  const v1::PurgeDeadLettersRequest& request,
                                  v1::PurgeDeadLettersResponse& response) {
    absl::StatusOr<DeadLetters*> letters = Letters();
    if (!letters.ok()) return letters.status();
    if (absl::Status status = CheckPlugin(request.plugin()); !status.ok()) return status;
    // `all` purges in rounds of max_retry (each round's letters are held in memory).
    absl::StatusOr<uint64_t> purged = (*letters)->Purge(
        request.plugin(), SelectionOf(request.all(), request.sequences()), limits_.max_retry);
    if (!purged.ok()) return purged.status();
    if (*purged > 0) {
      spdlog::info("[admin] purged {} dead letter(s) of plugin {} (asked by {})", *purged,
                   request.plugin(), ctx->peer());
    }
    response.set_purged(*purged);
    return absl::OkStatus();
  }

  // ---- Events and quarantine ------------------------------------------------------------------

  absl::Status DoGetEvent(const v1::GetEventRequest& request, v1::Event& response) {
    absl::StatusOr<EventLog*> log = Log();
    if (!log.ok()) return log.status();
    uint64_t sequence = 0;
    std::string described;
    switch (request.key_case()) {
      case v1::GetEventRequest::kSequence:
        if (request.sequence() == 0) return absl::InvalidArgumentError("sequences start at 1");
        sequence = request.sequence();
        described = absl::StrCat("sequence ", sequence);
        break;
      case v1::GetEventRequest::kRef: {
        const v1::EventRef& ref = request.ref();
        if (ref.source().empty() || ref.id().empty()) {
          return absl::InvalidArgumentError("ref needs both source and id");
        }
        absl::StatusOr<std::optional<uint64_t>> found = (*log)->FindEventId(ref.source(), ref.id());
        if (!found.ok()) return found.status();
        if (!found->has_value()) {
          return absl::NotFoundError(
              absl::StrCat("no event with id \"", ref.id(), "\" from source ", ref.source()));
        }
        sequence = **found;
        described = absl::StrCat("event \"", ref.id(), "\" of source ", ref.source(), " (sequence ",
                                 sequence, ")");
        break;
      }
      default:
        return absl::InvalidArgumentError("set sequence or ref {source, id}");
    }
    absl::StatusOr<std::optional<v1::Event>> event = (*log)->GetEvent(sequence);
    if (!event.ok()) return event.status();
    if (!event->has_value()) {
      return absl::NotFoundError(absl::StrCat(
          described, sequence > (*log)->head() ? " is beyond the log's head" : " is not stored",
          " (head ", (*log)->head(), ")"));
    }
    response = **std::move(event);
    return absl::OkStatus();
  }

  absl::Status DoListEvents(const v1::ListEventsRequest& request,
                            v1::ListEventsResponse& response) {
    absl::StatusOr<EventLog*> log = Log();
    if (!log.ok()) return log.status();
    absl::StatusOr<std::size_t> page_size = PageSize(request.page_size(), limits_);
    if (!page_size.ok()) return page_size.status();
    if ((request.has_since() && !ValidTimestamp(request.since())) ||
        (request.has_until() && !ValidTimestamp(request.until()))) {
      return absl::InvalidArgumentError("since and until must be valid timestamps");
    }
    // A glob no canonical type can match ("Product.*") is a mistake, not an empty answer.
    if (std::optional<std::string> problem = EventTypeGlobProblem(request.type())) {
      return absl::InvalidArgumentError(absl::StrCat("type: the glob ", *problem));
    }
    EventQuery query;
    query.source = request.source();
    query.resource_id = request.resource_id();
    query.type = request.type();
    if (request.has_since()) query.since = ToTime(request.since());
    if (request.has_until()) query.until = ToTime(request.until());
    query.newest_first = request.newest_first();
    if (!request.page_token().empty()) {
      absl::StatusOr<uint64_t> token = ParsePageToken(request.page_token(), 0);
      if (!token.ok()) return token.status();
      query.resume_at = *token;
    }
    EventQueryLimits limits;
    limits.page_size = *page_size;
    limits.max_scan = limits_.max_scan;
    limits.max_bytes = limits_.max_response_bytes;
    limits.received_at_slack = limits_.received_at_slack;
    absl::StatusOr<EventPage> page = QueryEvents(**log, query, limits);
    if (!page.ok()) return page.status();
    for (v1::Event& event : page->events) *response.add_events() = std::move(event);
    response.set_scanned(page->scanned);
    if (page->next) response.set_next_page_token(absl::StrCat(*page->next));
    return absl::OkStatus();
  }

  absl::Status DoListQuarantine(const v1::ListQuarantineRequest& request,
                                v1::ListQuarantineResponse& response) {
    absl::StatusOr<EventLog*> log = Log();
    if (!log.ok()) return log.status();
    absl::StatusOr<std::size_t> page_size = PageSize(request.page_size(), limits_);
    if (!page_size.ok()) return page_size.status();
    absl::StatusOr<uint64_t> from = ParsePageToken(request.page_token(), 0);
    if (!from.ok()) return from.status();
    absl::StatusOr<std::vector<v1::QuarantineEntry>> entries =
        (*log)->ReadQuarantine(*from, *page_size + 1);
    if (!entries.ok()) return entries.status();
    std::size_t bytes = 0;
    for (v1::QuarantineEntry& entry : *entries) {
      bytes += entry.ByteSizeLong();
      const bool full = static_cast<std::size_t>(response.entries_size()) == *page_size ||
                        (response.entries_size() > 0 && bytes > limits_.max_response_bytes);
      if (full) {
        response.set_next_page_token(absl::StrCat(entry.id()));
        break;
      }
      *response.add_entries() = std::move(entry);
    }
    return absl::OkStatus();
  }

  const AdminDependencies deps_;
  const AdminLimits limits_;
  std::optional<TokenDigest> token_digest_;
  // The dead letters when no dispatcher runs (Letters()); null when one does.
  std::unique_ptr<DeadLetters> own_letters_;
  // Serializes RestartPlugin.
  absl::Mutex restart_mu_;
};

}  // namespace

std::unique_ptr<v1::Admin::Service> NewAdminService(AdminDependencies deps,
                                                    const std::string& token, AdminLimits limits) {
  return std::make_unique<AdminServiceImpl>(deps, token, limits);
}

}  // namespace pimgate
