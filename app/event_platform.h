// EventPlatform: what pimgate runs for the sources with `platform:` (M9): one PlatformSource per
// source (its management client), the PlatformWatch, and the PlatformAdmin the admin API
// forwards to. Built and stopped by pimgate_main.cc in its order.
#ifndef PIMGATE_APP_EVENT_PLATFORM_H_
#define PIMGATE_APP_EVENT_PLATFORM_H_

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "admin/platform_admin.h"
#include "config/config.h"
#include "core/log/event_log.h"
#include "pim/akeneo_client.h"
#include "pim/platform_source.h"
#include "pim/platform_subscriptions.h"
#include "pim/platform_watch.h"

namespace pimgate {

class EventPlatform {
 public:
  // One PlatformSource per source with `platform` (its `rest` client in `rest_clients`, which
  // must outlive Stop()). Checks the configuration; calls nothing.
  static absl::StatusOr<std::unique_ptr<EventPlatform>> Create(
      const Config& config,
      const std::map<std::string, std::shared_ptr<AkeneoClient>>& rest_clients, EventLog* log);
  ~EventPlatform();  // Stop()

  // What the admin API forwards its Event Platform calls to; null when no source has
  // `platform`. `subscriptions` must outlive the EventPlatform.
  PlatformAdmin* Admin(PlatformSubscriptions* subscriptions);
  // Starts watching (no thread when no source has `platform`); `ready` is /readyz.
  void StartWatch(PlatformSubscriptions* subscriptions, std::function<bool()> ready);
  // Stops the watch and shuts the management clients down (calls in flight are cancelled).
  // Idempotent.
  void Stop();

 private:
  EventPlatform() = default;

  std::vector<std::string> source_names_;
  std::vector<PluginConfig> plugins_;
  std::vector<std::unique_ptr<PlatformSource>> sources_;
  std::unique_ptr<PlatformAdmin> admin_;
  std::unique_ptr<PlatformWatch> watch_;
};

}  // namespace pimgate

#endif  // PIMGATE_APP_EVENT_PLATFORM_H_
