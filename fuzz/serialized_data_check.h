// The parser fuzzers' check of the gateway's form of the parser (each event's data serialized
// straight from the JSON, never built as a Struct) against the Struct form.
#ifndef PIMGATE_FUZZ_SERIALIZED_DATA_CHECK_H_
#define PIMGATE_FUZZ_SERIALIZED_DATA_CHECK_H_

#include <string>

#include "fuzz/fuzz_check.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/util/message_differencer.h"
#include "google/protobuf/wire_format_lite.h"
#include "pimgate/v1/event.pb.h"

namespace pimgate::fuzz {

// Checks that `serialized_data`, the data the serialized form of the parser gave for `header`
// (whose own data it left empty), stored as EventLog::Prepare stores it (appended as field
// `data`), reads back as `built`, the event with its data built as a Struct.
inline void CheckSerializedData(const v1::Event& header, const std::string& serialized_data,
                                const v1::Event& built) {
  FUZZ_CHECK(!header.has_data());
  std::string bytes = header.SerializeAsString();
  {
    google::protobuf::io::StringOutputStream stream(&bytes);
    google::protobuf::io::CodedOutputStream out(&stream);
    google::protobuf::internal::WireFormatLite::WriteString(v1::Event::kDataFieldNumber,
                                                            serialized_data, &out);
  }
  v1::Event stored;
  FUZZ_CHECK(stored.ParseFromString(bytes), "serialized data does not parse: " + built.id());
  FUZZ_CHECK(google::protobuf::util::MessageDifferencer::Equals(stored, built), built.id());
  FUZZ_CHECK(serialized_data.size() == built.data().ByteSizeLong(), built.id());
}

}  // namespace pimgate::fuzz

#endif  // PIMGATE_FUZZ_SERIALIZED_DATA_CHECK_H_
