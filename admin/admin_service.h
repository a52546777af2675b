// AdminService: the pimgate.v1.Admin gRPC service (admin.proto) over pimgate's running parts:
// the event log, the dispatcher, the plugin supervisor and the gateway.
#ifndef PIMGATE_ADMIN_ADMIN_SERVICE_H_
#define PIMGATE_ADMIN_ADMIN_SERVICE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "admin/platform_admin.h"
#include "core/dispatch/dispatcher.h"
#include "core/dispatch/plugin_supervisor.h"
#include "core/log/event_log.h"
#include "gateway/server.h"
#include "pim/reconciler.h"
#include "pimgate/v1/admin.grpc.pb.h"

namespace pimgate {

// What the admin service reads and drives. Not owned: each must outlive the service. Any may be
// null (a test, or a part that is not running): GetStats and ListPlugins leave out what they
// cannot see, and calls that need a missing part fail with FAILED_PRECONDITION.
struct AdminDependencies {
  EventLog* log = nullptr;
  Dispatcher* dispatcher = nullptr;
  PluginSupervisor* supervisor = nullptr;
  Gateway* gateway = nullptr;
  Reconciler* reconciler = nullptr;
  // The Event Platform calls (admin/platform_admin.h); null: they fail with FAILED_PRECONDITION.
  PlatformAdmin* platform = nullptr;
};

// Bounds of one admin call: a query never reads the whole log at once nor builds a response the
// client cannot take. Defaults suit an operator at a terminal and scripts alike.
struct AdminLimits {
  // Items per page when a request leaves page_size at 0, and the most a request gets.
  int32_t default_page_size = 100;
  int32_t max_page_size = 1000;
  // Events one ListEvents call reads, and dead letters one ListDeadLetters call examines
  // (matching or not), before it returns a page.
  std::size_t max_scan = 10'000;
  // A list response stops growing past this many bytes of items (an item larger than this on
  // its own is still answered, alone). Below gRPC's default 4 MiB receive limit.
  std::size_t max_response_bytes = 3 << 20;
  // Dead letters one RetryDeadLetters call hands back (each is held in memory until delivered).
  std::size_t max_retry = 10'000;
  // How far received_at may run backwards from one sequence to the next (concurrent requests
  // overtaking one another in the write queue). Time-bounded scans widen their window by this.
  absl::Duration received_at_slack = absl::Seconds(5);
};

// Creates the Admin service. `token` non-empty: every call must carry the metadata
// `authorization: Bearer <token>` (compared in constant time), else UNAUTHENTICATED. Empty: no
// check (the config loader allows that only on a local listener). Thread-safe: gRPC runs its
// methods concurrently. Mutating calls are logged with the caller's peer address.
std::unique_ptr<v1::Admin::Service> NewAdminService(AdminDependencies deps,
                                                    const std::string& token,
                                                    AdminLimits limits = {});

}  // namespace pimgate

#endif  // PIMGATE_ADMIN_ADMIN_SERVICE_H_
