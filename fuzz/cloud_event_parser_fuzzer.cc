// Fuzzes the Event Platform parser (ParseCloudEvent) with arbitrary bodies. An accepted
// CloudEvent must give a complete Event that survives the trip through its stored protobuf form;
// a refused one must be an InvalidArgument with a message (the gateway's specific 400).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "gateway/event_type.h"
#include "fuzz/fuzz_check.h"
#include "gateway/payload_parser.h"
#include "google/protobuf/util/message_differencer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<pimgate::v1::Event> event = pimgate::ParseCloudEvent(body);
  if (!event.ok()) {
    FUZZ_CHECK(event.status().code() == absl::StatusCode::kInvalidArgument,
               event.status().ToString());
    FUZZ_CHECK(!event.status().message().empty());
    return 0;
  }
  FUZZ_CHECK(!event->id().empty());
  FUZZ_CHECK(!event->type().empty() || event->original_type() == "com.akeneo.pim.v1.",
             event->original_type());
  FUZZ_CHECK(!event->original_type().empty());
  FUZZ_CHECK(event->origin() == pimgate::v1::ORIGIN_EVENT_PLATFORM);
  const pimgate::CanonicalType canonical = pimgate::CanonicalizeType(event->original_type());
  FUZZ_CHECK(event->type() == canonical.type && event->kind() == canonical.kind);
  // version_at falls back to occurred_at; neither is invented when `time` is absent.
  FUZZ_CHECK(!event->has_occurred_at() || event->has_version_at());
  std::string bytes;
  FUZZ_CHECK(event->SerializeToString(&bytes));
  pimgate::v1::Event back;
  FUZZ_CHECK(back.ParseFromString(bytes), "stored event does not parse back: " + event->id());
  FUZZ_CHECK(google::protobuf::util::MessageDifferencer::Equals(back, *event));
  return 0;
}
