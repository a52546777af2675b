// Header decoding: protobuf wire format, field by field, so that the event's data is skipped as
// one length-delimited run.
#include "core/log/event_header.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/stubs/common.h"  // IsStructurallyValidUTF8
#include "google/protobuf/timestamp.pb.h"
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

namespace {

// Reads a length as protobuf's parser reads one (ParseEventHeader): at most 5 bytes, below 2^31.
bool ReadLength(google::protobuf::io::CodedInputStream& in, uint32_t* size) {
  const int before = in.CurrentPosition();
  uint64_t value = 0;
  if (!in.ReadVarint64(&value)) return false;
  if (in.CurrentPosition() - before > 5 || value > 0x7fffffff) return false;
  *size = static_cast<uint32_t>(value);
  return true;
}

}  // namespace

absl::StatusOr<EventRoute> ScanEventRoute(absl::string_view bytes) {
  EventRoute route;
  google::protobuf::io::CodedInputStream in(reinterpret_cast<const uint8_t*>(bytes.data()),
                                            static_cast<int>(bytes.size()));
  const auto malformed = [&bytes](int at) {
    return absl::DataLossError(
        absl::StrCat("stored event: malformed field at byte ", at, " of ", bytes.size()));
  };
  bool unusual = false;  // a field the scan does not check as protobuf would
  while (true) {
    const int start = in.CurrentPosition();
    const uint32_t tag = in.ReadTag();
    if (tag == 0) break;
    // A tag written longer than needed: protobuf decides whether it reads as a tag (below).
    if (in.CurrentPosition() - start !=
        static_cast<int>(google::protobuf::io::CodedOutputStream::VarintSize32(tag))) {
      unusual = true;
    }
    const int number = WireFormatLite::GetTagFieldNumber(tag);
    const WireFormatLite::WireType wire_type = WireFormatLite::GetTagWireType(tag);
    std::string_view* text = nullptr;
    std::string_view other;  // a string field the route does not keep: checked all the same
    if (wire_type == WireFormatLite::WIRETYPE_LENGTH_DELIMITED) {
      switch (number) {
        case v1::Event::kIdFieldNumber:
        case v1::Event::kOriginalTypeFieldNumber:
        case v1::Event::kPimSourceFieldNumber:
        case v1::Event::kRequestIdFieldNumber:
        case v1::Event::kSubjectFieldNumber:
          text = &other;
          break;
        case v1::Event::kSourceFieldNumber:
          text = &route.source;
          break;
        case v1::Event::kTypeFieldNumber:
          text = &route.type;
          break;
        case v1::Event::kKindFieldNumber:
          text = &route.kind;
          break;
        case v1::Event::kResourceIdFieldNumber:
          text = &route.resource_id;
          break;
        case v1::Event::kAuthorFieldNumber:
          text = &route.author;
          break;
        case v1::Event::kAuthorTypeFieldNumber:
          text = &route.author_type;
          break;
        default:
          break;
      }
    }
    if (text != nullptr) {
      uint32_t size = 0;
      if (!ReadLength(in, &size)) return malformed(start);
      const int at = in.CurrentPosition();
      if (!in.Skip(static_cast<int>(size))) return malformed(start);
      *text = std::string_view(bytes.data() + at, size);
      // As protobuf's parser (ParseEventHeader) rejects a proto3 string that is not UTF-8.
      if (!google::protobuf::internal::IsStructurallyValidUTF8(text->data(),
                                                               static_cast<int>(text->size()))) {
        return absl::DataLossError(absl::StrCat("stored event: field ", number,
                                                " is not valid UTF-8 (at byte ", start, ")"));
      }
    } else if (wire_type == WireFormatLite::WIRETYPE_VARINT &&
               (number == v1::Event::kSequenceFieldNumber ||
                number == v1::Event::kStaleFieldNumber)) {
      uint64_t value = 0;
      if (!in.ReadVarint64(&value)) return malformed(start);
      if (number == v1::Event::kSequenceFieldNumber) {
        route.sequence = value;
      } else {
        route.stale = value != 0;
      }
    } else if (wire_type == WireFormatLite::WIRETYPE_LENGTH_DELIMITED &&
               (number == v1::Event::kOccurredAtFieldNumber ||
                number == v1::Event::kVersionAtFieldNumber ||
                number == v1::Event::kReceivedAtFieldNumber)) {
      // A Timestamp: protobuf parses its contents, so damage inside it fails ParseEventHeader.
      uint32_t size = 0;
      if (!ReadLength(in, &size)) return malformed(start);
      const int at = in.CurrentPosition();
      if (!in.Skip(static_cast<int>(size))) return malformed(start);
      google::protobuf::Timestamp timestamp;
      if (!timestamp.ParseFromArray(bytes.data() + at, static_cast<int>(size))) {
        return absl::DataLossError(absl::StrCat("stored event: field ", number,
                                                " is not a valid Timestamp (at byte ", start, ")"));
      }
    } else {
      // Any other field: the event's data (skipped whole, as ParseEventHeader skips it), its
      // origin, or something pimgate never writes (field number 0, a group, an unknown field, a
      // known field with another wire type). For the latter, what protobuf accepts is settled
      // below by ParseEventHeader itself; a stored event pimgate wrote never gets there.
      const bool expected =
          (number == v1::Event::kDataFieldNumber &&
           wire_type == WireFormatLite::WIRETYPE_LENGTH_DELIMITED) ||
          (number == v1::Event::kOriginFieldNumber && wire_type == WireFormatLite::WIRETYPE_VARINT);
      if (!expected) unusual = true;
      if (!WireFormatLite::SkipField(&in, tag)) return malformed(start);
    }
  }
  if (in.CurrentPosition() != static_cast<int>(bytes.size())) {
    return absl::DataLossError(absl::StrCat("stored event: malformed tag at byte ",
                                            in.CurrentPosition(), " of ", bytes.size()));
  }
  if (unusual) {
    // Rare (never for an event pimgate stored): protobuf's parse decides, with its error.
    if (absl::StatusOr<v1::Event> header = ParseEventHeader(bytes); !header.ok()) {
      return header.status();
    }
  }
  return route;
}

}  // namespace pimgate
