// Turns verified webhook bodies into pimgate Events: the legacy Events API batch
// ({"events":[...]}) and the Event Platform's structured-mode CloudEvent.
#ifndef PIMGATE_GATEWAY_PAYLOAD_PARSER_H_
#define PIMGATE_GATEWAY_PAYLOAD_PARSER_H_

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "google/protobuf/timestamp.pb.h"
#include "pimgate/v1/event.pb.h"

namespace pimgate {

// An element of a legacy batch that is not a valid event. The request's other events are still
// stored; this one goes to quarantine.
struct RejectedElement {
  std::size_t index = 0;
  std::string reason;  // specific: "events[3].event_id: missing"
  std::string raw;     // the element's JSON exactly as received
};

struct ParsedPayload {
  std::vector<v1::Event> events;  // source, received_at, request_id left to the caller
  std::vector<RejectedElement> rejected;
};

struct ParseLimits {
  // Legacy batches with more elements are refused whole (InvalidArgument).
  std::size_t max_events = 100;
};

// Parses a legacy Events API body. Returns InvalidArgument with a specific message when the body
// is not JSON, not an object, has no `events` array, or has more than `limits.max_events`
// elements; individual bad elements are reported in `rejected` instead. Fields per event:
// action, event_id, event_datetime, author, author_type, pim_source, data.resource.
absl::StatusOr<ParsedPayload> ParseLegacyBatch(std::string_view body, const ParseLimits& limits);

// Parses one Event Platform CloudEvent (structured mode JSON). InvalidArgument when the body is
// not a JSON object or lacks `id`, `type` or `data`. Unknown types are accepted.
absl::StatusOr<v1::Event> ParseCloudEvent(std::string_view body);

// RFC 3339 / DATE_ATOM ("2021-03-12T09:46:08+00:00", "2024-03-07T15:16:37.123Z") → Timestamp.
absl::StatusOr<google::protobuf::Timestamp> ParseTimestamp(std::string_view text);

}  // namespace pimgate

#endif  // PIMGATE_GATEWAY_PAYLOAD_PARSER_H_
