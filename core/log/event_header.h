// An event's header: every field of a stored event but its `data`, decoded from the stored bytes
// without decoding the data. The data (a google.protobuf.Struct of the whole product) costs far
// more to decode than everything else: the dispatcher routes on the header and forwards the
// stored bytes unchanged, and event queries filter on it and decode in full only what matches.
#ifndef PIMGATE_CORE_LOG_EVENT_HEADER_H_
#define PIMGATE_CORE_LOG_EVENT_HEADER_H_

#include <cstdint>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "pimgate/v1/event.pb.h"

namespace pimgate {

// The event serialized in `bytes` without its `data` field: every other field (sequence, id,
// source, type, kind, resource_id, timestamps, author, origin, stale ...) as stored. DataLoss when
// `bytes` is not a valid serialized Event. Thread-safe.
absl::StatusOr<v1::Event> ParseEventHeader(absl::string_view bytes);

// The fields of a stored event that dispatch orders, partitions and filters on, as views into
// the stored bytes (valid while those are): what the dispatcher keeps per pending event, read
// without decoding anything else and without allocating. Fields absent from `bytes` are empty
// (0, false). A field given twice counts as protobuf counts it: the last one.
struct EventRoute {
  uint64_t sequence = 0;
  std::string_view source;
  std::string_view type;
  std::string_view kind;
  std::string_view resource_id;
  std::string_view author;
  std::string_view author_type;
  bool stale = false;
};

// DataLoss when `bytes` is not a valid serialized Event header, as for ParseEventHeader (the
// framing, and every string field valid UTF-8). Thread-safe.
absl::StatusOr<EventRoute> ScanEventRoute(absl::string_view bytes);

}  // namespace pimgate

#endif  // PIMGATE_CORE_LOG_EVENT_HEADER_H_
