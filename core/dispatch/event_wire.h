// Wire-level handling of stored events for the dispatcher: the log keeps each event serialized,
// and plugins receive those same bytes. Decoding an event's `data` (a google.protobuf.Struct of
// the whole product) costs far more than everything else dispatch does, so the dispatcher decodes
// only the header it routes on and forwards the stored bytes unchanged inside each Delivery.
#ifndef PIMGATE_CORE_DISPATCH_EVENT_WIRE_H_
#define PIMGATE_CORE_DISPATCH_EVENT_WIRE_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/log/event_header.h"  // ParseEventHeader: the header the dispatcher routes on
#include "pimgate/v1/event.pb.h"

namespace pimgate {

// A serialized v1::Delivery { event = <event_bytes>, attempt = attempt }, built without decoding
// the event. `event_bytes` must be a serialized v1::Event.
std::string EncodeDelivery(absl::string_view event_bytes, uint32_t attempt);

// Appends one element of `DeliveryBatch.deliveries`, the v1::Delivery { event = <event_bytes>,
// attempt = attempt }, to `batch`, the serialized DeliveryBatch being built (batches are
// concatenations of their elements): the delivery is framed in place, `event_bytes` copied once.
// Returns the number of bytes appended (DeliveryBatchElementSize).
std::size_t AppendDeliveryToBatch(std::string& batch, absl::string_view event_bytes,
                                  uint32_t attempt);

// The bytes AppendDeliveryToBatch appends for an event of `event_size` bytes.
std::size_t DeliveryBatchElementSize(std::size_t event_size, uint32_t attempt);

}  // namespace pimgate

#endif  // PIMGATE_CORE_DISPATCH_EVENT_WIRE_H_
