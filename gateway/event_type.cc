// Canonical event types: maps the type strings of both Akeneo producers to one naming scheme.
#include "gateway/event_type.h"

#include <algorithm>
#include <string>
#include <string_view>

namespace pimgate {
namespace {

// Every Event Platform type starts with this; legacy actions have no prefix.
constexpr std::string_view kEventPlatformPrefix = "com.akeneo.pim.v1.";
// The legacy Events API says `removed` where the Event Platform says `deleted`.
constexpr std::string_view kLegacyRemoved = "removed";
constexpr std::string_view kDeleted = "deleted";

}  // namespace

CanonicalType CanonicalizeType(std::string_view original_type) {
  std::string_view rest = original_type;
  if (rest.starts_with(kEventPlatformPrefix)) rest.remove_prefix(kEventPlatformPrefix.size());

  CanonicalType result;
  // The last segment is the only one that can be `removed`; rewriting it before copying keeps
  // the result to one allocation.
  const std::size_t last_dot = rest.rfind('.');
  const std::string_view last =
      last_dot == std::string_view::npos ? rest : rest.substr(last_dot + 1);
  if (last_dot != std::string_view::npos && last == kLegacyRemoved) {
    result.type.reserve(last_dot + 1 + kDeleted.size());
    result.type.append(rest.substr(0, last_dot + 1));
    result.type.append(kDeleted);
  } else {
    result.type.assign(rest);
  }
  std::replace(result.type.begin(), result.type.end(), '-', '_');

  result.kind = result.type.substr(0, result.type.find('.'));
  return result;
}

}  // namespace pimgate
