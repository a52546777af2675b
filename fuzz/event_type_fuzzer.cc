// Fuzzes the canonical type mapping (CanonicalizeType) and checks its documented rules: the Event
// Platform prefix is stripped, '-' becomes '_', a trailing `removed` segment becomes `deleted`,
// `kind` is the first segment, and both producers' spellings of a type map to the same result.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "events/event_type.h"
#include "fuzz/fuzz_check.h"

namespace {

constexpr std::string_view kPrefix = "com.akeneo.pim.v1.";

// The mapping written out independently, for differential checking.
std::string Model(std::string_view type) {
  if (type.starts_with(kPrefix)) type.remove_prefix(kPrefix.size());
  std::string out(type);
  const std::size_t dot = out.rfind('.');
  if (dot != std::string::npos && out.substr(dot + 1) == "removed") {
    out.replace(dot + 1, std::string::npos, "deleted");
  }
  std::replace(out.begin(), out.end(), '-', '_');
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view type(reinterpret_cast<const char*>(data), size);
  const pimgate::CanonicalType canonical = pimgate::CanonicalizeType(type);
  FUZZ_CHECK(canonical.type == Model(type), canonical.type);
  FUZZ_CHECK(canonical.type.find('-') == std::string::npos);
  FUZZ_CHECK(canonical.kind == canonical.type.substr(0, canonical.type.find('.')));
  FUZZ_CHECK(canonical.type.size() <= type.size());
  // The legacy name and the Event Platform name of one type agree.
  if (!type.starts_with(kPrefix)) {
    const pimgate::CanonicalType platform =
        pimgate::CanonicalizeType(std::string(kPrefix) + std::string(type));
    FUZZ_CHECK(platform.type == canonical.type && platform.kind == canonical.kind);
  }
  // Every canonical type has a resource location: one member of `data`, at least one key.
  const pimgate::ResourceLocation location = pimgate::ResourceLocationOf(canonical.type);
  FUZZ_CHECK(location.object.find('.') == std::string_view::npos, std::string(location.object));
  FUZZ_CHECK(!location.id_keys[0].empty());
  // Canonical types are fixed points unless they still carry the prefix (a doubled prefix).
  if (!std::string_view(canonical.type).starts_with(kPrefix)) {
    FUZZ_CHECK(pimgate::CanonicalizeType(canonical.type).type == canonical.type, canonical.type);
  }
  return 0;
}
