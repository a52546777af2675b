// Wire-level handling of stored events: protobuf wire format, field by field, so that the event's
// data is copied as opaque bytes (EncodeDelivery).
#include "core/dispatch/event_wire.h"

#include <string>

#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/wire_format_lite.h"
#include "pimgate/v1/plugin.pb.h"

namespace pimgate {
namespace {

using google::protobuf::internal::WireFormatLite;

void AppendVarint(std::string& out, uint64_t value) {
  uint8_t buf[10];  // the longest varint64
  uint8_t* end = google::protobuf::io::CodedOutputStream::WriteVarint64ToArray(value, buf);
  out.append(reinterpret_cast<const char*>(buf), end - buf);
}

// Appends field `number` of wire type length-delimited holding `bytes`.
void AppendLengthDelimited(std::string& out, int number, absl::string_view bytes) {
  AppendVarint(out, WireFormatLite::MakeTag(number, WireFormatLite::WIRETYPE_LENGTH_DELIMITED));
  AppendVarint(out, bytes.size());
  out.append(bytes.data(), bytes.size());
}

}  // namespace

std::string EncodeDelivery(absl::string_view event_bytes, uint32_t attempt) {
  std::string out;
  out.reserve(event_bytes.size() + 16);
  AppendLengthDelimited(out, v1::Delivery::kEventFieldNumber, event_bytes);
  if (attempt != 0) {  // proto3: a zero scalar is not written
    AppendVarint(out, WireFormatLite::MakeTag(v1::Delivery::kAttemptFieldNumber,
                                              WireFormatLite::WIRETYPE_VARINT));
    AppendVarint(out, attempt);
  }
  return out;
}

namespace {

// The size of a v1::Delivery { event of `event_size` bytes, attempt }.
std::size_t DeliverySize(std::size_t event_size, uint32_t attempt) {
  using google::protobuf::io::CodedOutputStream;
  std::size_t size = 1 + CodedOutputStream::VarintSize64(event_size) + event_size;  // field 1
  if (attempt != 0) size += 1 + CodedOutputStream::VarintSize32(attempt);           // field 2
  return size;
}

}  // namespace

std::size_t DeliveryBatchElementSize(std::size_t event_size, uint32_t attempt) {
  const std::size_t delivery = DeliverySize(event_size, attempt);
  return 1 + google::protobuf::io::CodedOutputStream::VarintSize64(delivery) + delivery;
}

std::size_t AppendDeliveryToBatch(std::string& batch, absl::string_view event_bytes,
                                  uint32_t attempt) {
  static_assert(v1::DeliveryBatch::kDeliveriesFieldNumber < 16 &&
                    v1::Delivery::kEventFieldNumber < 16 && v1::Delivery::kAttemptFieldNumber < 16,
                "one-byte tags");
  const std::size_t before = batch.size();
  AppendVarint(batch, WireFormatLite::MakeTag(v1::DeliveryBatch::kDeliveriesFieldNumber,
                                              WireFormatLite::WIRETYPE_LENGTH_DELIMITED));
  AppendVarint(batch, DeliverySize(event_bytes.size(), attempt));
  AppendLengthDelimited(batch, v1::Delivery::kEventFieldNumber, event_bytes);
  if (attempt != 0) {  // proto3: a zero scalar is not written
    AppendVarint(batch, WireFormatLite::MakeTag(v1::Delivery::kAttemptFieldNumber,
                                                WireFormatLite::WIRETYPE_VARINT));
    AppendVarint(batch, attempt);
  }
  return batch.size() - before;
}

}  // namespace pimgate
