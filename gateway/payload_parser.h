// Turns verified webhook bodies into pimgate Events: the legacy Events API batch
// ({"events":[...]}), the Event Platform's structured-mode CloudEvent and its notification
// webhooks (subscription suspended, revoked, resumed).
#ifndef PIMGATE_GATEWAY_PAYLOAD_PARSER_H_
#define PIMGATE_GATEWAY_PAYLOAD_PARSER_H_

#include <cstddef>
#include <string>
#include <string_view>
#include <variant>
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
//
// Each event's `data` is a google.protobuf.Struct built from the JSON, unless `serialized_data`
// is given: it then gets, one per entry of `events`, the wire bytes of that Struct (what
// `Struct::SerializeAsString` gives, its map entries in the JSON's member order), and the
// events' own `data` stay empty. No Struct is built: this is the gateway's path to the log
// (AppendRequest::serialized_data). Both forms are checked against the same limits and give the
// same errors.
absl::StatusOr<ParsedPayload> ParseLegacyBatch(std::string_view body, const ParseLimits& limits,
                                               std::vector<std::string>* serialized_data = nullptr);

// Parses one Event Platform CloudEvent (structured mode JSON). InvalidArgument when the body is
// not a JSON object or lacks `id`, `type` or `data`. Unknown types are accepted. Every type, the
// `*.updated.delta` ones included, is versioned by the CloudEvent `time` (Akeneo orders a
// resource's events by `time`, then `id`); `subject` (the subscription id) is kept.
absl::StatusOr<v1::Event> ParseCloudEvent(std::string_view body);

// An Event Platform notification webhook, sent to the subscriber's `notification_webhook_url`
// when one of its subscriptions is suspended, revoked or resumed. Shape, from Akeneo's
// content/event-platform/notification-webhooks.md (akeneo/pim-api-docs, 2026):
//
//   {"notification_type": "subscription.suspended.system",   // .suspended.user, .revoked,
//                                                            // .resumed
//    "timestamp": "2026-04-29T12:34:56Z",                    // when the platform built it (UTC)
//    "subscription_id": "018e1ec5-29da-78ad-aae6-92065b9ca2a6",
//    "subscriber_id": "018e1ec5-29da-78ad-aae6-92065b9ca2a5",
//    "destination": "https://my-app.example.com/webhook",    // the subscription's destination
//    "events": ["com.akeneo.pim.v1.product.created", ...],   // its event types
//    "reason": "Success rate dropped below 90%",             // optional
//    "subject": "https://example.cloud.akeneo.com/"}         // the PIM's URL
//
// Signed like events (X-AKENEO-SIGNATURE-PRIMARY, HMAC-SHA256 hex of the raw body,
// X-AKENEO-SIGNATURE-ALGORITHM: HmacSHA256) but with the subscriber's
// `notification_webhook_secret` and never a secondary signature. No CloudEvent envelope, no
// `id`. A 2xx within 5 s acknowledges it; 5xx and 429 are retried twice (after 1 s and 2 s),
// other answers are not, and the platform then falls back to e-mail.
struct PlatformNotification {
  std::string notification_type;
  std::string subscription_id;
  std::string subscriber_id;  // empty when absent
  std::string destination;    // empty when absent
  std::string reason;         // empty when absent
  google::protobuf::Timestamp timestamp;
  // The notification as the log stores it: kind `subscription`, type = `notification_type`,
  // resource_id and subject = `subscription_id`, pim_source = `subject`, occurred_at and
  // version_at = `timestamp`, data = the whole body, and an id derived from what identifies the
  // notification (`notification:<subscription_id>:<notification_type>:<timestamp>`), so a
  // re-sent notification is a duplicate. source, received_at and request_id left to the caller.
  v1::Event event;
};

// Kind of the Events that notification webhooks become.
inline constexpr std::string_view kSubscriptionKind = "subscription";

// What an Event Platform request carries: a CloudEvent or a notification webhook. A JSON object
// with a `notification_type` member and no `specversion` is a notification; anything else is
// parsed as a CloudEvent. InvalidArgument, naming the field, for a malformed body of either
// shape: a notification needs non-empty string `notification_type` and `subscription_id` and an
// RFC 3339 `timestamp`; its other documented members, when present, must be strings (`events`
// an array). Unknown notification types are accepted (stored; they change no state).
// With `serialized_data`, the event's `data` (the CloudEvent's `data`, the notification's body)
// is written there serialized, as ParseLegacyBatch does, and left empty in the event.
using EventPlatformPayload = std::variant<v1::Event, PlatformNotification>;
absl::StatusOr<EventPlatformPayload> ParseEventPlatformBody(std::string_view body,
                                                            std::string* serialized_data = nullptr);

// RFC 3339 / DATE_ATOM ("2021-03-12T09:46:08+00:00", "2024-03-07T15:16:37.123Z") → Timestamp.
absl::StatusOr<google::protobuf::Timestamp> ParseTimestamp(std::string_view text);

}  // namespace pimgate

#endif  // PIMGATE_GATEWAY_PAYLOAD_PARSER_H_
