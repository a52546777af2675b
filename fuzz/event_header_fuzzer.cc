// Fuzzes the two readers of a stored event's header against each other: ScanEventRoute (what
// the dispatcher reads per event, as views) accepts exactly what ParseEventHeader (protobuf's own
// parse of every field but `data`) accepts, and then reads the same fields. A damaged stored event
// must stop the dispatcher's cursor, never reach a plugin or a filter.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "core/log/event_header.h"
#include "fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view bytes(reinterpret_cast<const char*>(data), size);
  const absl::StatusOr<pimgate::EventRoute> route = pimgate::ScanEventRoute(bytes);
  const absl::StatusOr<pimgate::v1::Event> header = pimgate::ParseEventHeader(bytes);
  FUZZ_CHECK(route.ok() == header.ok(), absl::StrCat("scan: ", route.status().ToString(),
                                                     " header: ", header.status().ToString()));
  if (!route.ok()) {
    FUZZ_CHECK(route.status().code() == absl::StatusCode::kDataLoss, route.status().ToString());
    return 0;
  }
  FUZZ_CHECK(route->sequence == header->sequence());
  FUZZ_CHECK(route->source == header->source());
  FUZZ_CHECK(route->type == header->type());
  FUZZ_CHECK(route->kind == header->kind());
  FUZZ_CHECK(route->resource_id == header->resource_id());
  FUZZ_CHECK(route->author == header->author());
  FUZZ_CHECK(route->author_type == header->author_type());
  FUZZ_CHECK(route->stale == header->stale());
  // Views into the input, never copies.
  for (const std::string_view field : {route->source, route->type, route->kind, route->resource_id,
                                       route->author, route->author_type}) {
    if (!field.empty()) {
      FUZZ_CHECK(field.data() >= bytes.data() &&
                 field.data() + field.size() <= bytes.data() + bytes.size());
    }
  }
  return 0;
}
