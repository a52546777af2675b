// PlatformAdmin: the Event Platform calls of the Admin service (admin.proto, "Akeneo's Event
// Platform"): each translates its request into calls of the source's PlatformSource (pim/) and
// their answers into the response. AdminServiceImpl forwards to it, behind its token check.
#ifndef PIMGATE_ADMIN_PLATFORM_ADMIN_H_
#define PIMGATE_ADMIN_PLATFORM_ADMIN_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "config/config.h"
#include "pim/platform_source.h"
#include "pim/platform_subscriptions.h"
#include "pimgate/v1/admin.pb.h"

namespace pimgate {

// Not owned: each must outlive the PlatformAdmin.
struct PlatformAdminDependencies {
  // Every configured source's name: an unknown name is NOT_FOUND, a source without `platform`
  // FAILED_PRECONDITION.
  std::vector<std::string> source_names;
  // The sources with `platform`.
  std::vector<PlatformSource*> sources;
  // The plugins (their `events` and `sources`), for CheckPlatformSubscription.
  std::vector<PluginConfig> plugins;
  // Where suspensions and resumes made through the admin API are recorded (a suspension by a
  // user is never resumed by the watch; a resume reconciles the source). May be null.
  PlatformSubscriptions* subscriptions = nullptr;
};

// Thread-safe: gRPC calls its methods concurrently; each blocks on the management API (within
// platform.timeout and its retries). `peer` is the caller, logged with every mutating call.
// Errors of the management API keep Akeneo's HTTP code and body in their message.
class PlatformAdmin {
 public:
  explicit PlatformAdmin(PlatformAdminDependencies deps);

  absl::Status ListSubscribers(const std::string& peer,
                               const v1::ListPlatformSubscribersRequest& request,
                               v1::ListPlatformSubscribersResponse& response);
  absl::Status ListSubscriptions(const std::string& peer,
                                 const v1::ListPlatformSubscriptionsRequest& request,
                                 v1::ListPlatformSubscriptionsResponse& response);
  absl::Status Subscribe(const std::string& peer, const v1::PlatformSubscribeRequest& request,
                         v1::PlatformSubscribeResponse& response);
  absl::Status Suspend(const std::string& peer,
                       const v1::SuspendPlatformSubscriptionRequest& request,
                       v1::SuspendPlatformSubscriptionResponse& response);
  absl::Status Resume(const std::string& peer, const v1::ResumePlatformSubscriptionRequest& request,
                      v1::ResumePlatformSubscriptionResponse& response);
  absl::Status Delete(const std::string& peer, const v1::DeletePlatformSubscriptionRequest& request,
                      v1::DeletePlatformSubscriptionResponse& response);
  absl::Status Replay(const std::string& peer, const v1::ReplayPlatformSubscriptionRequest& request,
                      v1::ReplayPlatformSubscriptionResponse& response);
  absl::Status Logs(const std::string& peer, const v1::PlatformLogsRequest& request,
                    v1::PlatformLogsResponse& response);
  absl::Status Check(const std::string& peer, const v1::CheckPlatformSubscriptionRequest& request,
                     v1::CheckPlatformSubscriptionResponse& response);

  // `(admin->*method)(peer, request, response)`, or FAILED_PRECONDITION when `admin` is null (no
  // source of this pimgate has `platform`): what the Admin service's one-line methods call.
  template <typename Request, typename Response>
  static absl::Status Call(PlatformAdmin* admin,
                           absl::Status (PlatformAdmin::*method)(const std::string&, const Request&,
                                                                 Response&),
                           const std::string& peer, const Request& request, Response& response) {
    if (admin == nullptr) {
      return absl::FailedPreconditionError(
          "no source of this pimgate manages Event Platform subscriptions: add `platform:` (with "
          "`rest:`) to a `kind: event_platform` source");
    }
    return (admin->*method)(peer, request, response);
  }

 private:
  // The source named `name`, with `platform`.
  absl::StatusOr<PlatformSource*> Find(const std::string& name) const;
  void Record(PlatformSource& source, const PlatformSubscription& subscription,
              SubscriptionState state, bool by_user, const std::string& reason);

  const PlatformAdminDependencies deps_;
};

}  // namespace pimgate

#endif  // PIMGATE_ADMIN_PLATFORM_ADMIN_H_
