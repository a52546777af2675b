// Fuzzes the Event Platform parser (ParseEventPlatformBody: CloudEvents and notification
// webhooks) with arbitrary bodies. An accepted body must give a complete Event that survives the
// trip through its stored protobuf form; a refused one must be an InvalidArgument with a message
// (the gateway's specific 400).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>

#include "events/event_type.h"
#include "fuzz/fuzz_check.h"
#include "fuzz/serialized_data_check.h"
#include "gateway/payload_parser.h"
#include "google/protobuf/util/message_differencer.h"

namespace {

void CheckStoredForm(const pimgate::v1::Event& event) {
  std::string bytes;
  FUZZ_CHECK(event.SerializeToString(&bytes));
  pimgate::v1::Event back;
  FUZZ_CHECK(back.ParseFromString(bytes), "stored event does not parse back: " + event.id());
  FUZZ_CHECK(google::protobuf::util::MessageDifferencer::Equals(back, event));
}

bool SameTime(const google::protobuf::Timestamp& a, const google::protobuf::Timestamp& b) {
  return a.seconds() == b.seconds() && a.nanos() == b.nanos();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<pimgate::EventPlatformPayload> payload = pimgate::ParseEventPlatformBody(body);
  // The gateway's form (data serialized, never built as a Struct) gives the same answer.
  std::string serialized_data;
  absl::StatusOr<pimgate::EventPlatformPayload> serialized =
      pimgate::ParseEventPlatformBody(body, &serialized_data);
  FUZZ_CHECK(serialized.status() == payload.status(), serialized.status().ToString());
  if (!payload.ok()) {
    FUZZ_CHECK(payload.status().code() == absl::StatusCode::kInvalidArgument,
               payload.status().ToString());
    FUZZ_CHECK(!payload.status().message().empty());
    return 0;
  }
  if (const auto* notification = std::get_if<pimgate::PlatformNotification>(&*payload)) {
    const pimgate::v1::Event& event = notification->event;
    FUZZ_CHECK(!notification->notification_type.empty());
    FUZZ_CHECK(!notification->subscription_id.empty());
    FUZZ_CHECK(event.kind() == pimgate::kSubscriptionKind);
    FUZZ_CHECK(event.type() == notification->notification_type);
    FUZZ_CHECK(event.resource_id() == notification->subscription_id);
    FUZZ_CHECK(event.id().rfind("notification:", 0) == 0, event.id());
    FUZZ_CHECK(event.has_version_at() && SameTime(event.version_at(), notification->timestamp));
    FUZZ_CHECK(event.origin() == pimgate::v1::ORIGIN_EVENT_PLATFORM);
    CheckStoredForm(event);
    const auto* header = std::get_if<pimgate::PlatformNotification>(&*serialized);
    FUZZ_CHECK(header != nullptr);
    pimgate::fuzz::CheckSerializedData(header->event, serialized_data, event);
    return 0;
  }
  const pimgate::v1::Event& event = std::get<pimgate::v1::Event>(*payload);
  const auto* header = std::get_if<pimgate::v1::Event>(&*serialized);
  FUZZ_CHECK(header != nullptr);
  pimgate::fuzz::CheckSerializedData(*header, serialized_data, event);
  FUZZ_CHECK(!event.id().empty());
  FUZZ_CHECK(!event.type().empty() || event.original_type() == "com.akeneo.pim.v1.",
             event.original_type());
  FUZZ_CHECK(!event.original_type().empty());
  FUZZ_CHECK(event.origin() == pimgate::v1::ORIGIN_EVENT_PLATFORM);
  const pimgate::CanonicalType canonical = pimgate::CanonicalizeType(event.original_type());
  FUZZ_CHECK(event.type() == canonical.type && event.kind() == canonical.kind);
  // A type of Akeneo's catalogue maps as the catalogue says.
  if (const pimgate::EventPlatformType* documented =
          pimgate::FindDocumentedEventPlatformType(event.original_type())) {
    FUZZ_CHECK(event.type() == documented->canonical && event.kind() == documented->kind);
  }
  // A code unique only within its parent is never an id on its own.
  if (!pimgate::ResourceLocationOf(event.type()).parent.empty() && !event.resource_id().empty()) {
    FUZZ_CHECK(event.resource_id().find('/') != std::string::npos, event.resource_id());
  }
  // Every type is versioned by `time`; nothing is invented when `time` is absent.
  FUZZ_CHECK(event.has_occurred_at() == event.has_version_at());
  FUZZ_CHECK(!event.has_occurred_at() || SameTime(event.occurred_at(), event.version_at()));
  CheckStoredForm(event);
  return 0;
}
