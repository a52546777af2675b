// Fuzzes the legacy Events API parser (ParseLegacyBatch) with arbitrary bodies and checks what
// the gateway relies on: accepted events are complete and survive the trip through their stored
// protobuf form, rejected elements are reported in order with their exact bytes, and every
// element of the batch is either an event or a rejection.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "events/event_type.h"
#include "fuzz/fuzz_check.h"
#include "fuzz/serialized_data_check.h"
#include "gateway/payload_parser.h"
#include "google/protobuf/util/message_differencer.h"
#include "simdjson.h"

namespace {

// An independent count of the batch's elements, for the "nothing lost" invariant. -1 when the
// body is not a legacy batch simdjson accepts.
long long ElementCount(std::string_view body) {
  static simdjson::dom::parser parser;
  simdjson::dom::element root;
  if (parser.parse(body.data(), body.size(), true).get(root) != simdjson::SUCCESS) return -1;
  simdjson::dom::object object;
  if (root.get(object) != simdjson::SUCCESS) return -1;
  for (simdjson::dom::key_value_pair member : object) {
    if (member.key != "events") continue;
    simdjson::dom::array events;
    if (member.value.get(events) != simdjson::SUCCESS) return -1;
    return static_cast<long long>(events.size());
  }
  return -1;
}

bool IsValidJson(std::string_view text) {
  static simdjson::dom::parser parser;
  simdjson::dom::element root;
  return parser.parse(text.data(), text.size(), true).get(root) == simdjson::SUCCESS;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  pimgate::ParseLimits limits;
  limits.max_events = 16;
  absl::StatusOr<pimgate::ParsedPayload> parsed = pimgate::ParseLegacyBatch(body, limits);
  // The gateway's form (data serialized, never built as a Struct) gives the same answer.
  std::vector<std::string> serialized_data;
  absl::StatusOr<pimgate::ParsedPayload> serialized =
      pimgate::ParseLegacyBatch(body, limits, &serialized_data);
  FUZZ_CHECK(serialized.status() == parsed.status(), serialized.status().ToString());
  const long long count = ElementCount(body);
  if (!parsed.ok()) {
    FUZZ_CHECK(parsed.status().code() == absl::StatusCode::kInvalidArgument,
               parsed.status().ToString());
    FUZZ_CHECK(!parsed.status().message().empty());
    return 0;
  }
  // Accepted: the body was a batch of 1..max_events elements, each one accounted for.
  FUZZ_CHECK(count >= 1 && count <= static_cast<long long>(limits.max_events));
  FUZZ_CHECK(static_cast<long long>(parsed->events.size() + parsed->rejected.size()) == count);
  FUZZ_CHECK(serialized->events.size() == parsed->events.size());
  FUZZ_CHECK(serialized_data.size() == parsed->events.size());
  for (std::size_t i = 0; i < parsed->events.size(); ++i) {
    pimgate::fuzz::CheckSerializedData(serialized->events[i], serialized_data[i],
                                       parsed->events[i]);
  }
  FUZZ_CHECK(serialized->rejected.size() == parsed->rejected.size());
  for (std::size_t i = 0; i < parsed->rejected.size(); ++i) {
    FUZZ_CHECK(serialized->rejected[i].index == parsed->rejected[i].index);
    FUZZ_CHECK(serialized->rejected[i].reason == parsed->rejected[i].reason);
    FUZZ_CHECK(serialized->rejected[i].raw == parsed->rejected[i].raw);
  }

  for (const pimgate::v1::Event& event : parsed->events) {
    FUZZ_CHECK(!event.id().empty());
    FUZZ_CHECK(!event.type().empty());
    FUZZ_CHECK(!event.original_type().empty());
    FUZZ_CHECK(event.origin() == pimgate::v1::ORIGIN_EVENTS_API);
    const pimgate::CanonicalType canonical = pimgate::CanonicalizeType(event.original_type());
    FUZZ_CHECK(event.type() == canonical.type && event.kind() == canonical.kind);
    FUZZ_CHECK(event.has_occurred_at() && event.has_version_at());
    FUZZ_CHECK(event.occurred_at().nanos() >= 0 && event.occurred_at().nanos() < 1'000'000'000);
    // The log stores the serialized Event and the dispatcher parses it back: an event that
    // serializes but does not parse would be acknowledged to the PIM and never delivered.
    std::string bytes;
    FUZZ_CHECK(event.SerializeToString(&bytes));
    pimgate::v1::Event back;
    FUZZ_CHECK(back.ParseFromString(bytes), "stored event does not parse back: " + event.id());
    FUZZ_CHECK(google::protobuf::util::MessageDifferencer::Equals(back, event));
  }
  std::size_t previous_index = 0;
  bool first = true;
  for (const pimgate::RejectedElement& rejected : parsed->rejected) {
    FUZZ_CHECK(first || rejected.index > previous_index);
    FUZZ_CHECK(rejected.index < static_cast<std::size_t>(count));
    previous_index = rejected.index;
    first = false;
    FUZZ_CHECK(rejected.reason.rfind("events[" + std::to_string(rejected.index) + "]", 0) == 0,
               rejected.reason);
    // Quarantine keeps the element verbatim: it must be one JSON value, present in the body.
    FUZZ_CHECK(IsValidJson(rejected.raw), rejected.raw);
    FUZZ_CHECK(body.find(rejected.raw) != std::string_view::npos, rejected.raw);
  }
  return 0;
}
