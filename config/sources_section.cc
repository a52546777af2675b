// The `sources:` section: each source's name, kind, paths and secrets, its notification keys,
// and what must be unique across sources. Its rest, reconcile and platform keys are read by
// rest_section.cc and platform_section.cc.
#include <algorithm>
#include <map>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "config/sections.h"
#include "config/value_readers.h"
#include "config/yaml_reader.h"

namespace pimgate::config_internal {
namespace {

ValueReader SourcePath(std::string& out) {
  return [&out](const Field& field) -> absl::Status {
    if (absl::Status status = String(out)(field); !status.ok()) return status;
    if (out.front() != '/') {
      return Invalid(field, absl::StrCat("must start with /, ", Got(field.node)));
    }
    // The router matches the request path exactly; a query or fragment here could never match.
    if (out.find_first_of("?# \t") != std::string::npos) {
      return Invalid(field, absl::StrCat("must not contain ?, # or spaces, ", Got(field.node)));
    }
    return absl::OkStatus();
  };
}

// Length bounds of the Event Platform's notification_webhook_secret.
constexpr std::size_t kMinNotificationSecret = 16;
constexpr std::size_t kMaxNotificationSecret = 256;

// Reads one source. Uniqueness across sources is checked by the caller.
absl::Status ReadSource(const Field& field, SourceConfig& source) {
  std::optional<Secret> secret;
  std::optional<int> tolerance_line;
  std::optional<int> reconcile_line;
  std::optional<int> notification_path_line;
  std::optional<int> notification_secret_line;
  std::optional<int> platform_line;
  absl::Status status = ReadMapping(
      field, {
                 {"name", SourceName(source.name), true},
                 {"kind",
                  OneOf<SourceKind>({{"events_api", SourceKind::kEventsApi},
                                     {"event_platform", SourceKind::kEventPlatform}},
                                    source.kind),
                  true},
                 {"path", SourcePath(source.path), true},
                 {"secret", SecretValue(secret), true},
                 {"secondary_secret", SecretValue(source.secondary_secret)},
                 {"timestamp_tolerance",
                  [&source, &tolerance_line](const Field& value) {
                    tolerance_line = value.line;
                    return Seconds(source.timestamp_tolerance)(value);
                  }},
                 {"rest", Rest(source.rest)},
                 {"reconcile", Tracked(Reconcile(source.reconcile), reconcile_line)},
                 {"notification_path",
                  Tracked(SourcePath(source.notification_path), notification_path_line)},
                 {"notification_secret",
                  Tracked(SecretValue(source.notification_secret), notification_secret_line)},
                 {"platform", Tracked(Platform(source.platform), platform_line)},
             });
  if (!status.ok()) return status;
  // Reconciliation reads the PIM through `rest`; without it the section could never run.
  if (reconcile_line.has_value() && !source.rest.has_value()) {
    return Invalid({field.node, absl::StrCat(field.path, ".reconcile"), *reconcile_line},
                   "needs rest (the PIM's REST API) in the same source");
  }
  if (source.rest.has_value() && !source.reconcile.has_value()) source.reconcile.emplace();
  source.secret = *std::move(secret);
  // Only legacy Events API requests carry the timestamp this bounds; on other sources the key
  // would be silently ignored.
  if (tolerance_line.has_value() && source.kind != SourceKind::kEventsApi) {
    return Invalid({field.node, absl::StrCat(field.path, ".timestamp_tolerance"), *tolerance_line},
                   "only applies to events_api sources");
  }
  // Only the Event Platform sends notification webhooks.
  for (const auto& [key, line] : {std::pair{"notification_path", notification_path_line},
                                  std::pair{"notification_secret", notification_secret_line}}) {
    if (line.has_value() && source.kind != SourceKind::kEventPlatform) {
      return Invalid({field.node, absl::StrCat(field.path, ".", key), *line},
                     "only applies to event_platform sources (the Event Platform's notification "
                     "webhooks)");
    }
  }
  if (notification_path_line.has_value() && source.notification_path == source.path) {
    return Invalid(
        {field.node, absl::StrCat(field.path, ".notification_path"), *notification_path_line},
        "must differ from path (notifications sent to path are recognised anyway)");
  }
  // Akeneo refuses a notification_webhook_secret outside 16..256 characters: another one could
  // never match what the platform signs with.
  if (source.notification_secret.has_value()) {
    const std::size_t length = source.notification_secret->value.size();
    if (length < kMinNotificationSecret || length > kMaxNotificationSecret) {
      return Invalid(
          {field.node, absl::StrCat(field.path, ".notification_secret"), *notification_secret_line},
          absl::StrCat("must be ", kMinNotificationSecret, " to ", kMaxNotificationSecret,
                       " characters (Akeneo's limit for notification_webhook_secret), "
                       "got ",
                       length));
    }
  }
  if (platform_line.has_value()) {
    const Field platform_field{field.node, absl::StrCat(field.path, ".platform"), *platform_line};
    // The management API manages Event Platform subscriptions; a legacy source has none.
    if (source.kind != SourceKind::kEventPlatform) {
      return Invalid(platform_field, "only applies to event_platform sources");
    }
    // Every management call carries a PIM access token, X-PIM-URL and X-PIM-CLIENT-ID, all of
    // which come from the source's REST credentials.
    if (!source.rest.has_value()) {
      return Invalid(platform_field,
                     "needs rest (the PIM's REST API) in the same source: the Event Platform "
                     "management API is called with a PIM access token, the PIM's URL and the "
                     "Connection's client id, all taken from rest");
    }
    if (source.platform->subscriber_name.empty()) {
      source.platform->subscriber_name = absl::StrCat("pimgate ", source.name);
    }
  }
  return absl::OkStatus();
}

}  // namespace

bool IsSourceName(absl::string_view name) {
  return !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
    return absl::ascii_islower(c) || absl::ascii_isdigit(c) || c == '_' || c == '-';
  });
}

ValueReader SourceName(std::string& out) {
  return [&out](const Field& field) -> absl::Status {
    if (absl::Status status = String(out)(field); !status.ok()) return status;
    if (!IsSourceName(out)) {
      return Invalid(field, absl::StrCat("must use only a-z, 0-9, _ and -, ", Got(field.node)));
    }
    return absl::OkStatus();
  };
}

ValueReader Sources(std::vector<SourceConfig>& sources) {
  return [&sources](const Field& field) -> absl::Status {
    if (field.node.IsNull() || (field.node.IsSequence() && field.node.size() == 0)) {
      return Invalid(field, "must list at least one source");
    }
    if (!field.node.IsSequence()) {
      return Invalid(field, absl::StrCat("must be a sequence, ", Got(field.node)));
    }
    // name or path -> (index, line) of the source that first used it.
    std::map<std::string, std::pair<size_t, int>> names;
    // path -> (index, line, key) of the source that first used it (key: path or
    // notification_path).
    std::map<std::string, std::tuple<size_t, int, std::string>> paths;
    for (size_t i = 0; i < field.node.size(); ++i) {
      const YAML::Node item = field.node[i];
      const std::string item_path = absl::StrCat(field.path, "[", i, "]");
      SourceConfig source;
      if (absl::Status status = ReadSource({item, item_path, LineOf(item)}, source); !status.ok()) {
        return status;
      }
      // Duplicates are reported at the second source's key, pointing back at the first.
      const int name_line = LineOf(item["name"]);
      if (auto [first, inserted] = names.emplace(source.name, std::make_pair(i, name_line));
          !inserted) {
        return Invalid({item, item_path + ".name", name_line},
                       absl::StrCat("duplicate of sources[", first->second.first, "].name (line ",
                                    first->second.second, ")"));
      }
      // A path routes to one source only: path and notification_path share one namespace.
      std::vector<std::pair<std::string, std::string>> own_paths = {{"path", source.path}};
      if (!source.notification_path.empty()) {
        own_paths.emplace_back("notification_path", source.notification_path);
      }
      for (const auto& [key, path] : own_paths) {
        const int line = LineOf(item[key]);
        if (auto [first, inserted] = paths.emplace(path, std::make_tuple(i, line, key));
            !inserted) {
          return Invalid(
              {item, absl::StrCat(item_path, ".", key), line},
              absl::StrCat("duplicate of sources[", std::get<0>(first->second), "].",
                           std::get<2>(first->second), " (line ", std::get<1>(first->second), ")"));
        }
      }
      sources.push_back(std::move(source));
    }
    return absl::OkStatus();
  };
}

}  // namespace pimgate::config_internal
