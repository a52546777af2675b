// EventPlatform: the Event Platform parts of pimgate, built from the configuration.
#include "app/event_platform.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace pimgate {

absl::StatusOr<std::unique_ptr<EventPlatform>> EventPlatform::Create(
    const Config& config, const std::map<std::string, std::shared_ptr<AkeneoClient>>& rest_clients,
    EventLog* log) {
  std::unique_ptr<EventPlatform> platform(new EventPlatform());
  platform->plugins_ = config.plugins;
  for (const SourceConfig& source : config.sources) {
    platform->source_names_.push_back(source.name);
    if (!source.platform.has_value()) continue;
    auto rest = rest_clients.find(source.name);
    if (rest == rest_clients.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("sources ", source.name, ": platform needs the source's rest client"));
    }
    absl::StatusOr<std::unique_ptr<PlatformSource>> created =
        PlatformSource::Create(source, *rest->second, log);
    if (!created.ok()) return created.status();
    spdlog::info("source {}: Event Platform management API {} (subscriber \"{}\"{})", source.name,
                 source.platform->api_url.Describe(), source.platform->subscriber_name,
                 source.platform->auto_resume ? ", auto_resume" : "");
    platform->sources_.push_back(*std::move(created));
  }
  return platform;
}

EventPlatform::~EventPlatform() { Stop(); }

PlatformAdmin* EventPlatform::Admin(PlatformSubscriptions* subscriptions) {
  if (sources_.empty()) return nullptr;
  if (admin_ == nullptr) {
    PlatformAdminDependencies deps;
    deps.source_names = source_names_;
    for (const auto& source : sources_) deps.sources.push_back(source.get());
    deps.plugins = plugins_;
    deps.subscriptions = subscriptions;
    admin_ = std::make_unique<PlatformAdmin>(std::move(deps));
  }
  return admin_.get();
}

void EventPlatform::StartWatch(PlatformSubscriptions* subscriptions, std::function<bool()> ready) {
  if (sources_.empty() || watch_ != nullptr) return;
  PlatformWatch::Options options;
  for (const auto& source : sources_) options.sources.push_back(source.get());
  options.subscriptions = subscriptions;
  options.ready = std::move(ready);
  watch_ = std::make_unique<PlatformWatch>(std::move(options));
  watch_->Start();
}

void EventPlatform::Stop() {
  // The watch stops at its next check; shutting the clients down cancels the call it may be in.
  if (watch_ != nullptr) watch_->RequestStop();
  for (const auto& source : sources_) source->client().Shutdown();
  if (watch_ != nullptr) watch_->Stop();
}

}  // namespace pimgate
