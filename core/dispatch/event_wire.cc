// Wire-level handling of stored events: protobuf wire format, field by field, so that the event's
// data is skipped (ParseEventHeader) or copied as opaque bytes (EncodeDelivery).
#include "core/dispatch/event_wire.h"

#include <string>

#include "absl/strings/str_cat.h"
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

absl::StatusOr<v1::Event> ParseEventHeader(absl::string_view bytes) {
  // Copies every field but `data` to `header`, then parses that: the data Struct is skipped as
  // one length-delimited run, never decoded.
  std::string header;
  header.reserve(256);
  google::protobuf::io::CodedInputStream in(reinterpret_cast<const uint8_t*>(bytes.data()),
                                            static_cast<int>(bytes.size()));
  while (true) {
    const int start = in.CurrentPosition();
    const uint32_t tag = in.ReadTag();
    if (tag == 0) break;
    if (!WireFormatLite::SkipField(&in, tag)) {
      return absl::DataLossError(
          absl::StrCat("stored event: malformed field at byte ", start, " of ", bytes.size()));
    }
    if (WireFormatLite::GetTagFieldNumber(tag) != v1::Event::kDataFieldNumber) {
      header.append(bytes.data() + start, in.CurrentPosition() - start);
    }
  }
  if (in.CurrentPosition() != static_cast<int>(bytes.size())) {
    return absl::DataLossError(absl::StrCat("stored event: malformed tag at byte ",
                                            in.CurrentPosition(), " of ", bytes.size()));
  }
  v1::Event event;
  if (!event.ParseFromString(header)) {
    return absl::DataLossError("stored event: header fields do not parse as pimgate.v1.Event");
  }
  return event;
}

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

void AppendToDeliveryBatch(std::string& batch, absl::string_view encoded_delivery) {
  AppendLengthDelimited(batch, v1::DeliveryBatch::kDeliveriesFieldNumber, encoded_delivery);
}

}  // namespace pimgate
