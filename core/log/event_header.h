// An event's header: every field of a stored event but its `data`, decoded from the stored bytes
// without decoding the data. The data (a google.protobuf.Struct of the whole product) costs far
// more to decode than everything else: the dispatcher routes on the header and forwards the
// stored bytes unchanged, and event queries filter on it and decode in full only what matches.
#ifndef PIMGATE_CORE_LOG_EVENT_HEADER_H_
#define PIMGATE_CORE_LOG_EVENT_HEADER_H_

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "pimgate/v1/event.pb.h"

namespace pimgate {

// The event serialized in `bytes` without its `data` field: every other field (sequence, id,
// source, type, kind, resource_id, timestamps, author, origin, stale ...) as stored. DataLoss when
// `bytes` is not a valid serialized Event. Thread-safe.
absl::StatusOr<v1::Event> ParseEventHeader(absl::string_view bytes);

}  // namespace pimgate

#endif  // PIMGATE_CORE_LOG_EVENT_HEADER_H_
