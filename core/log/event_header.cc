// Header decoding: protobuf wire format, field by field, so that the event's data is skipped as
// one length-delimited run.
#include "core/log/event_header.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/wire_format_lite.h"

namespace pimgate {

using google::protobuf::internal::WireFormatLite;

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

}  // namespace pimgate
