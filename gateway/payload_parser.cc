// Turns verified Akeneo webhook bodies into pimgate Events with simdjson's DOM API: the legacy
// Events API batch ({"events":[...]}), the Event Platform's structured-mode CloudEvent and its
// notification webhooks.
#include "gateway/payload_parser.h"

#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "events/event_type.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/timestamp.pb.h"
#include "google/protobuf/util/time_util.h"
#include "google/protobuf/wire_format_lite.h"
#include "pimgate/v1/event.pb.h"
#include "simdjson.h"

namespace pimgate {
namespace {

using google::protobuf::ListValue;
using google::protobuf::Struct;
using google::protobuf::Timestamp;
using google::protobuf::Value;

// Deepest nesting of JSON containers accepted inside an event's `data` (its root object counts
// as 1). simdjson already refuses bodies nested deeper than simdjson::DEFAULT_MAX_DEPTH (1024);
// this tighter bound exists for the stored protobuf: every JSON object level costs three message
// levels in a google.protobuf.Struct (Struct, map entry, Value), and protobuf's parser refuses
// messages nested deeper than 100 by default. At 30 levels an Event still parses back with room
// for a few wrapping messages (log record, gRPC stream). Real Akeneo payloads stay below 10.
constexpr int kMaxDataDepth = 30;

// Longest input quoted back in an error message.
constexpr std::size_t kMaxQuotedInput = 64;

// Range of google.protobuf.Timestamp: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z.
constexpr std::int64_t kMinTimestampSeconds = -62135596800;
constexpr std::int64_t kMaxTimestampSeconds = 253402300799;

// Debian's Abseil 20220623 is built with its own absl::string_view instead of an alias of
// std::string_view (ABSL_OPTION_USE_STD_STRING_VIEW 0); this bridges the two for StrCat.
absl::string_view AsAbsl(std::string_view text) { return {text.data(), text.size()}; }

// ---------------------------------------------------------------------------------------------
// Timestamps

// Reads exactly `n` ASCII digits at `*pos`.
bool ReadDigits(std::string_view text, std::size_t* pos, int n, int* out) {
  if (text.size() - *pos < static_cast<std::size_t>(n)) return false;
  int value = 0;
  for (int i = 0; i < n; ++i) {
    const char c = text[*pos + i];
    if (c < '0' || c > '9') return false;
    value = value * 10 + (c - '0');
  }
  *pos += n;
  *out = value;
  return true;
}

bool ReadChar(std::string_view text, std::size_t* pos, char c) {
  if (*pos >= text.size() || text[*pos] != c) return false;
  ++*pos;
  return true;
}

bool IsLeapYear(int y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

int DaysInMonth(int y, int m) {
  static constexpr int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return m == 2 && IsLeapYear(y) ? 29 : kDays[m - 1];
}

// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
std::int64_t DaysFromCivil(std::int64_t y, int m, int d) {
  y -= m <= 2;
  const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
  const std::int64_t yoe = y - era * 400;
  const std::int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const std::int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

// Parses `YYYY-MM-DD(T|t| )hh:mm:ss[.f{1,9}]` followed by `Z`, `z` or `±hh:mm`; when
// `offset_required` is false the zone may also be absent, meaning UTC. Every field is
// range-checked; the leap second `:60` is refused (Akeneo's producers never emit it and
// Timestamp cannot represent it). Returns false on anything else, including trailing bytes.
bool ParseDateTime(std::string_view text, bool offset_required, Timestamp* out) {
  std::size_t pos = 0;
  int year, month, day, hour, minute, second;
  if (!ReadDigits(text, &pos, 4, &year) || !ReadChar(text, &pos, '-') ||
      !ReadDigits(text, &pos, 2, &month) || !ReadChar(text, &pos, '-') ||
      !ReadDigits(text, &pos, 2, &day)) {
    return false;
  }
  if (pos >= text.size() || (text[pos] != 'T' && text[pos] != 't' && text[pos] != ' ')) {
    return false;
  }
  ++pos;
  if (!ReadDigits(text, &pos, 2, &hour) || !ReadChar(text, &pos, ':') ||
      !ReadDigits(text, &pos, 2, &minute) || !ReadChar(text, &pos, ':') ||
      !ReadDigits(text, &pos, 2, &second)) {
    return false;
  }
  if (month < 1 || month > 12 || day < 1 || day > DaysInMonth(year, month) || hour > 23 ||
      minute > 59 || second > 59) {
    return false;
  }
  int nanos = 0;
  if (pos < text.size() && text[pos] == '.') {
    ++pos;
    int digits = 0;
    while (pos < text.size() && text[pos] >= '0' && text[pos] <= '9') {
      if (++digits > 9) return false;
      nanos = nanos * 10 + (text[pos] - '0');
      ++pos;
    }
    if (digits == 0) return false;
    for (int i = digits; i < 9; ++i) nanos *= 10;
  }
  int offset_seconds = 0;
  if (pos == text.size()) {
    if (offset_required) return false;
  } else if (text[pos] == 'Z' || text[pos] == 'z') {
    ++pos;
  } else if (text[pos] == '+' || text[pos] == '-') {
    const int sign = text[pos] == '-' ? -1 : 1;
    ++pos;
    int offset_hours, offset_minutes;
    if (!ReadDigits(text, &pos, 2, &offset_hours) || !ReadChar(text, &pos, ':') ||
        !ReadDigits(text, &pos, 2, &offset_minutes) || offset_hours > 23 || offset_minutes > 59) {
      return false;
    }
    offset_seconds = sign * (offset_hours * 3600 + offset_minutes * 60);
  } else {
    return false;
  }
  if (pos != text.size()) return false;

  const std::int64_t seconds =
      DaysFromCivil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second - offset_seconds;
  if (seconds < kMinTimestampSeconds || seconds > kMaxTimestampSeconds) return false;
  out->set_seconds(seconds);
  out->set_nanos(nanos);
  return true;
}

// ---------------------------------------------------------------------------------------------
// JSON access

// The member `key` of `element` when `element` is an object that has it (first one wins on
// duplicate keys, like everywhere in this file).
std::optional<simdjson::dom::element> Member(simdjson::dom::element element, std::string_view key) {
  simdjson::dom::object object;
  if (element.get(object) != simdjson::SUCCESS) return std::nullopt;
  simdjson::dom::element value;
  if (object.at_key(key).get(value) != simdjson::SUCCESS) return std::nullopt;
  return value;
}

// Member `key` as a string; empty when absent or not a string.
std::string_view StringMember(simdjson::dom::element element, std::string_view key) {
  const std::optional<simdjson::dom::element> value = Member(element, key);
  std::string_view text;
  if (!value || value->get(text) != simdjson::SUCCESS) return {};
  return text;
}

bool IsAbsentOrNull(const std::optional<simdjson::dom::element>& value) {
  return !value || value->is_null();
}

// A JSON number as decimal text: integers exactly, other numbers in shortest round-trip form.
std::string NumberText(simdjson::dom::element number) {
  std::int64_t i;
  if (number.get(i) == simdjson::SUCCESS) return absl::StrCat(i);
  std::uint64_t u;
  if (number.get(u) == simdjson::SUCCESS) return absl::StrCat(u);
  double d;
  if (number.get(d) == simdjson::SUCCESS) {
    if (std::trunc(d) == d && std::fabs(d) < 9007199254740992.0) {
      return absl::StrCat(static_cast<std::int64_t>(d));
    }
    return absl::StrCat(d);
  }
  return {};
}

absl::Status TooDeep(std::string_view path) {
  return absl::InvalidArgumentError(
      absl::StrCat(AsAbsl(path), ": nested deeper than ", kMaxDataDepth, " levels"));
}

absl::Status ToStruct(simdjson::dom::object object, int depth, std::string_view path, Struct* out);

// JSON → google.protobuf.Value. Numbers become doubles, as Struct has no integer type: integers
// beyond ±2^53 (and uint64 beyond) lose precision; Akeneo sends ids as strings, so only numeric
// attribute values that large are affected. `depth` is the nesting level of `element` when it
// is a container; the recursion is bounded by kMaxDataDepth.
absl::Status ToValue(simdjson::dom::element element, int depth, std::string_view path, Value* out) {
  switch (element.type()) {
    case simdjson::dom::element_type::OBJECT: {
      if (depth > kMaxDataDepth) return TooDeep(path);
      // value_unsafe() below: the element's type was checked by the switch.
      return ToStruct(element.get_object().value_unsafe(), depth, path,
                      out->mutable_struct_value());
    }
    case simdjson::dom::element_type::ARRAY: {
      if (depth > kMaxDataDepth) return TooDeep(path);
      // A copy: value_unsafe() returns a reference into the temporary simdjson_result.
      const simdjson::dom::array array = element.get_array().value_unsafe();
      ListValue* list = out->mutable_list_value();
      for (simdjson::dom::element item : array) {
        if (absl::Status s = ToValue(item, depth + 1, path, list->add_values()); !s.ok()) return s;
      }
      return absl::OkStatus();
    }
    case simdjson::dom::element_type::INT64: {
      const std::int64_t i = element.get_int64().value_unsafe();
      out->set_number_value(static_cast<double>(i));
      return absl::OkStatus();
    }
    case simdjson::dom::element_type::UINT64: {
      const std::uint64_t u = element.get_uint64().value_unsafe();
      out->set_number_value(static_cast<double>(u));
      return absl::OkStatus();
    }
    case simdjson::dom::element_type::DOUBLE: {
      const double d = element.get_double().value_unsafe();
      out->set_number_value(d);
      return absl::OkStatus();
    }
    case simdjson::dom::element_type::STRING: {
      const std::string_view text = element.get_string().value_unsafe();
      out->set_string_value(std::string(text));  // simdjson guarantees valid UTF-8.
      return absl::OkStatus();
    }
    case simdjson::dom::element_type::BOOL: {
      const bool b = element.get_bool().value_unsafe();
      out->set_bool_value(b);
      return absl::OkStatus();
    }
    case simdjson::dom::element_type::NULL_VALUE:
      out->set_null_value(google::protobuf::NULL_VALUE);
      return absl::OkStatus();
  }
  return absl::InternalError(absl::StrCat(AsAbsl(path), ": unknown JSON element type"));
}

// JSON object → google.protobuf.Struct; `depth` is the object's own nesting level (1 for the
// root). On duplicate keys the first occurrence wins, matching simdjson's at_key lookups.
absl::Status ToStruct(simdjson::dom::object object, int depth, std::string_view path, Struct* out) {
  if (depth > kMaxDataDepth) return TooDeep(path);
  auto* fields = out->mutable_fields();
  for (simdjson::dom::key_value_pair member : object) {
    const std::string key(member.key);
    if (fields->count(key) != 0) continue;
    if (absl::Status s = ToValue(member.value, depth + 1, path, &(*fields)[key]); !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// JSON → serialized google.protobuf.Struct, without building one

// Field numbers of google/protobuf/struct.proto: Struct.fields (map<string, Value>: repeated
// entries of key = 1, value = 2), Value's oneof kind, ListValue.values. All below 16, so every
// tag is one byte.
constexpr int kStructFields = 1;
constexpr int kEntryKey = 1;
constexpr int kEntryValue = 2;
constexpr int kValueNull = 1;
constexpr int kValueNumber = 2;
constexpr int kValueString = 3;
constexpr int kValueBool = 4;
constexpr int kValueStruct = 5;
constexpr int kValueList = 6;
constexpr int kListValues = 1;

// Members of an object up to which a duplicate key is found by comparing it with each earlier
// key; larger objects use a hash set.
constexpr std::size_t kLinearKeySearch = 16;

// Size of a length-delimited field with a one-byte tag and `length` bytes of content.
std::size_t LengthDelimitedSize(std::size_t length) {
  return 1 + google::protobuf::io::CodedOutputStream::VarintSize64(length) + length;
}

// The keys of one JSON object seen so far.
class KeySet {
 public:
  explicit KeySet(std::size_t members) : hashed_(members > kLinearKeySearch) {
    if (hashed_) set_.reserve(members);
  }
  // False when `key` was inserted before.
  bool Insert(std::string_view key) {
    if (hashed_) return set_.insert(key).second;
    for (std::size_t i = 0; i < count_; ++i) {
      if (small_[i] == key) return false;
    }
    small_[count_++] = key;
    return true;
  }

 private:
  const bool hashed_;
  std::array<std::string_view, kLinearKeySearch> small_;
  std::size_t count_ = 0;
  absl::flat_hash_set<std::string_view> set_;
};

// Writes the wire bytes of the google.protobuf.Struct that ToStruct builds from the same JSON
// object, without building it (issue 16: the Struct's maps and their allocations took a fifth
// of the gateway's CPU). Same limits and errors as ToStruct, checked in the same order, and the
// same members kept (the first of duplicate keys). The bytes differ from the Struct's own
// serialization only in the order of its map entries (the JSON's member order here), which
// parsers do not see; numbers are doubles, strings valid UTF-8 (simdjson validated them).
//
// Two passes over the DOM: the first checks the limits, picks the members kept and records the
// length of every nested message in pre-order (a message's length is written before it); the
// second writes into a buffer of the exact size, taking the lengths in the same order.
class StructSerializer {
 public:
  // `object` is the data's root (nesting level 1); errors name `path`.
  static absl::Status Serialize(simdjson::dom::object object, std::string_view path,
                                std::string* out) {
    // The lengths' buffer is kept by the thread, as the simdjson parser is: no allocation per
    // event once it has grown to the largest data seen.
    thread_local std::vector<std::size_t> lengths;
    lengths.clear();
    StructSerializer serializer(path, lengths);
    std::size_t size = 0;
    if (!serializer.MeasureStruct(object, 1, &size)) return serializer.status_;
    out->resize(size);
    auto* begin = reinterpret_cast<std::uint8_t*>(out->data());
    const std::uint8_t* end = serializer.WriteStruct(object, begin);
    if (end != begin + size || serializer.next_ != lengths.size()) {
      // The passes disagree: a bug in this class, and the buffer may already have been written
      // past its end. Not a bad payload: stop rather than store or answer anything.
      std::fprintf(stderr, "pimgate: StructSerializer wrote %td bytes of %zu measured at %.*s\n",
                   end - begin, size, static_cast<int>(path.size()), path.data());
      std::abort();
    }
    // One huge body (e.g. megabytes of empty lists) must not leave its lengths held by the thread
    // for good.
    constexpr std::size_t kKeptLengths = 1 << 16;
    if (lengths.capacity() > kKeptLengths) std::vector<std::size_t>().swap(lengths);
    return absl::OkStatus();
  }

 private:
  // Recorded for a member left out (a duplicate key) instead of its entry's length.
  static constexpr std::size_t kSkipped = std::numeric_limits<std::size_t>::max();

  StructSerializer(std::string_view path, std::vector<std::size_t>& lengths)
      : path_(path), lengths_(lengths) {}

  bool Fail(absl::Status status) {
    status_ = std::move(status);
    return false;
  }

  // Pass 1. `*size`: the content length of the Struct (or Value) `object` (`element`) becomes.
  bool MeasureStruct(simdjson::dom::object object, int depth, std::size_t* size) {
    if (depth > kMaxDataDepth) return Fail(TooDeep(path_));
    KeySet keys(object.size());
    std::size_t total = 0;
    for (simdjson::dom::key_value_pair member : object) {
      if (!keys.Insert(member.key)) {
        lengths_.push_back(kSkipped);
        continue;
      }
      const std::size_t slot = lengths_.size();
      lengths_.push_back(0);
      std::size_t value = 0;
      if (!MeasureValue(member.value, depth + 1, &value)) return false;
      const std::size_t entry = LengthDelimitedSize(member.key.size()) + LengthDelimitedSize(value);
      lengths_[slot] = entry;
      total += LengthDelimitedSize(entry);
    }
    *size = total;
    return true;
  }

  bool MeasureValue(simdjson::dom::element element, int depth, std::size_t* size) {
    switch (element.type()) {
      case simdjson::dom::element_type::OBJECT: {
        if (depth > kMaxDataDepth) return Fail(TooDeep(path_));
        const std::size_t slot = lengths_.size();
        lengths_.push_back(0);
        std::size_t content = 0;
        if (!MeasureStruct(element.get_object().value_unsafe(), depth, &content)) return false;
        lengths_[slot] = content;
        *size = LengthDelimitedSize(content);
        return true;
      }
      case simdjson::dom::element_type::ARRAY: {
        if (depth > kMaxDataDepth) return Fail(TooDeep(path_));
        const std::size_t slot = lengths_.size();
        lengths_.push_back(0);
        std::size_t content = 0;
        const simdjson::dom::array array = element.get_array().value_unsafe();
        for (simdjson::dom::element item : array) {
          std::size_t value = 0;
          if (!MeasureValue(item, depth + 1, &value)) return false;
          content += LengthDelimitedSize(value);
        }
        lengths_[slot] = content;
        *size = LengthDelimitedSize(content);
        return true;
      }
      case simdjson::dom::element_type::INT64:
      case simdjson::dom::element_type::UINT64:
      case simdjson::dom::element_type::DOUBLE:
        *size = 1 + sizeof(double);
        return true;
      case simdjson::dom::element_type::STRING:
        *size = LengthDelimitedSize(element.get_string().value_unsafe().size());
        return true;
      case simdjson::dom::element_type::BOOL:
      case simdjson::dom::element_type::NULL_VALUE:
        *size = 2;  // tag, one-byte varint
        return true;
    }
    return Fail(absl::InternalError(absl::StrCat(AsAbsl(path_), ": unknown JSON element type")));
  }

  // Pass 2: the same walk, writing at `p`; returns where the bytes end.
  std::uint8_t* WriteStruct(simdjson::dom::object object, std::uint8_t* p) {
    for (simdjson::dom::key_value_pair member : object) {
      const std::size_t entry = lengths_[next_++];
      if (entry == kSkipped) continue;
      p = WriteLengthDelimited(kStructFields, entry, p);
      p = WriteLengthDelimited(kEntryKey, member.key.size(), p);
      p = WriteBytes(member.key, p);
      p = WriteLengthDelimited(kEntryValue, ValueSize(member.value), p);
      p = WriteValue(member.value, p);
    }
    return p;
  }

  // The content length of the Value `element` becomes; for a container, the length pass 1
  // recorded next.
  std::size_t ValueSize(simdjson::dom::element element) const {
    switch (element.type()) {
      case simdjson::dom::element_type::OBJECT:
      case simdjson::dom::element_type::ARRAY:
        return LengthDelimitedSize(lengths_[next_]);
      case simdjson::dom::element_type::STRING:
        return LengthDelimitedSize(element.get_string().value_unsafe().size());
      case simdjson::dom::element_type::BOOL:
      case simdjson::dom::element_type::NULL_VALUE:
        return 2;
      default:
        return 1 + sizeof(double);
    }
  }

  std::uint8_t* WriteValue(simdjson::dom::element element, std::uint8_t* p) {
    using google::protobuf::internal::WireFormatLite;
    switch (element.type()) {
      case simdjson::dom::element_type::OBJECT: {
        p = WriteLengthDelimited(kValueStruct, lengths_[next_++], p);
        return WriteStruct(element.get_object().value_unsafe(), p);
      }
      case simdjson::dom::element_type::ARRAY: {
        p = WriteLengthDelimited(kValueList, lengths_[next_++], p);
        const simdjson::dom::array array = element.get_array().value_unsafe();
        for (simdjson::dom::element item : array) {
          p = WriteLengthDelimited(kListValues, ValueSize(item), p);
          p = WriteValue(item, p);
        }
        return p;
      }
      case simdjson::dom::element_type::INT64:
        return WireFormatLite::WriteDoubleToArray(
            kValueNumber, static_cast<double>(element.get_int64().value_unsafe()), p);
      case simdjson::dom::element_type::UINT64:
        return WireFormatLite::WriteDoubleToArray(
            kValueNumber, static_cast<double>(element.get_uint64().value_unsafe()), p);
      case simdjson::dom::element_type::DOUBLE:
        return WireFormatLite::WriteDoubleToArray(kValueNumber, element.get_double().value_unsafe(),
                                                  p);
      case simdjson::dom::element_type::STRING: {
        const std::string_view text = element.get_string().value_unsafe();
        p = WriteLengthDelimited(kValueString, text.size(), p);
        return WriteBytes(text, p);
      }
      case simdjson::dom::element_type::BOOL:
        return WireFormatLite::WriteBoolToArray(kValueBool, element.get_bool().value_unsafe(), p);
      case simdjson::dom::element_type::NULL_VALUE:
        return WireFormatLite::WriteEnumToArray(kValueNull, google::protobuf::NULL_VALUE, p);
    }
    return p;  // unreachable: pass 1 refused unknown types
  }

  static std::uint8_t* WriteLengthDelimited(int field, std::size_t length, std::uint8_t* p) {
    using google::protobuf::internal::WireFormatLite;
    p = WireFormatLite::WriteTagToArray(field, WireFormatLite::WIRETYPE_LENGTH_DELIMITED, p);
    return google::protobuf::io::CodedOutputStream::WriteVarint64ToArray(length, p);
  }

  static std::uint8_t* WriteBytes(std::string_view bytes, std::uint8_t* p) {
    if (!bytes.empty()) std::memcpy(p, bytes.data(), bytes.size());
    return p + bytes.size();
  }

  const std::string_view path_;
  std::vector<std::size_t>& lengths_;  // pass 1 appends, pass 2 reads from next_
  std::size_t next_ = 0;
  absl::Status status_;
};

// An event's data: into `event`'s Struct, or, when `serialized` is not null, serialized there
// (the event's own `data` then stays empty).
absl::Status ConvertData(simdjson::dom::object object, std::string_view path, v1::Event* event,
                         std::string* serialized) {
  if (serialized != nullptr) return StructSerializer::Serialize(object, path, serialized);
  return ToStruct(object, 1, path, event->mutable_data());
}

// Parses `body` with this thread's parser. The parser copies the body into its own padded
// buffer (simdjson reads up to SIMDJSON_PADDING bytes past the end), validates UTF-8 and refuses
// nesting deeper than simdjson::DEFAULT_MAX_DEPTH without recursing. The thread-local parser
// keeps its buffers (sized by the largest body seen, itself bounded by the gateway's body limit)
// so steady-state parsing does not allocate; the returned element is valid until the next call
// on the same thread.
absl::StatusOr<simdjson::dom::element> ParseJson(std::string_view body) {
  thread_local simdjson::dom::parser parser;
  simdjson::dom::element root;
  const simdjson::error_code error =
      parser.parse(body.data(), body.size(), /*realloc_if_needed=*/true).get(root);
  switch (error) {
    case simdjson::SUCCESS:
      return root;
    case simdjson::EMPTY:
      return absl::InvalidArgumentError("body is empty");
    case simdjson::UTF8_ERROR:
      return absl::InvalidArgumentError("body is not valid UTF-8");
    case simdjson::DEPTH_ERROR:
      return absl::InvalidArgumentError(
          absl::StrCat("body is nested deeper than ", simdjson::DEFAULT_MAX_DEPTH, " levels"));
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("body is not valid JSON: ", simdjson::error_message(error)));
  }
}

// ---------------------------------------------------------------------------------------------
// Raw element text

// Minimal scanner over JSON that simdjson has already accepted: it only finds value
// boundaries, iteratively (no recursion), and reports failure instead of trusting the input.
class RawScanner {
 public:
  explicit RawScanner(std::string_view text) : text_(text) {}

  std::size_t pos() const { return pos_; }

  void SkipSpace() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\t' ||
                                   text_[pos_] == '\n' || text_[pos_] == '\r')) {
      ++pos_;
    }
  }

  bool Consume(char c) {
    if (pos_ >= text_.size() || text_[pos_] != c) return false;
    ++pos_;
    return true;
  }

  bool SkipString() {
    if (!Consume('"')) return false;
    while (pos_ < text_.size()) {
      const char c = text_[pos_++];
      if (c == '\\') {
        ++pos_;
      } else if (c == '"') {
        return true;
      }
    }
    return false;
  }

  bool SkipValue() {
    if (pos_ >= text_.size()) return false;
    const char first = text_[pos_];
    if (first == '"') return SkipString();
    if (first != '{' && first != '[') {
      while (pos_ < text_.size() && text_[pos_] != ',' && text_[pos_] != '}' &&
             text_[pos_] != ']' && text_[pos_] != ' ' && text_[pos_] != '\t' &&
             text_[pos_] != '\n' && text_[pos_] != '\r') {
        ++pos_;
      }
      return true;
    }
    std::size_t depth = 0;
    while (pos_ < text_.size()) {
      const char c = text_[pos_];
      if (c == '"') {
        if (!SkipString()) return false;
        continue;
      }
      ++pos_;
      if (c == '{' || c == '[') {
        ++depth;
      } else if (c == '}' || c == ']') {
        if (--depth == 0) return true;
      }
    }
    return false;
  }

 private:
  std::string_view text_;
  std::size_t pos_ = 0;
};

// The exact bytes of each element of the array held by the `member_index`-th member of the
// top-level object in `body`. Empty when the layout is not the expected one (the caller then
// falls back to re-serialising).
std::vector<std::string_view> RawArrayElements(std::string_view body, std::size_t member_index) {
  RawScanner scanner(body);
  scanner.SkipSpace();
  if (!scanner.Consume('{')) return {};
  for (std::size_t member = 0;; ++member) {
    scanner.SkipSpace();
    if (!scanner.SkipString()) return {};
    scanner.SkipSpace();
    if (!scanner.Consume(':')) return {};
    scanner.SkipSpace();
    if (member == member_index) break;
    if (!scanner.SkipValue()) return {};
    scanner.SkipSpace();
    if (!scanner.Consume(',')) return {};
  }
  if (!scanner.Consume('[')) return {};
  std::vector<std::string_view> elements;
  scanner.SkipSpace();
  if (scanner.Consume(']')) return elements;
  while (true) {
    scanner.SkipSpace();
    const std::size_t start = scanner.pos();
    if (!scanner.SkipValue()) return {};
    elements.push_back(body.substr(start, scanner.pos() - start));
    scanner.SkipSpace();
    if (scanner.Consume(',')) continue;
    if (scanner.Consume(']')) return elements;
    return {};
  }
}

// ---------------------------------------------------------------------------------------------
// Legacy Events API

// Copies optional string member `key` of `object` into `*out`; null counts as absent.
absl::Status OptionalString(simdjson::dom::element object, std::string_view key,
                            std::string_view path, std::string* out) {
  const std::optional<simdjson::dom::element> value = Member(object, key);
  if (IsAbsentOrNull(value)) return absl::OkStatus();
  std::string_view text;
  if (value->get(text) != simdjson::SUCCESS) {
    return absl::InvalidArgumentError(
        absl::StrCat(AsAbsl(path), path.empty() ? "" : ".", AsAbsl(key), ": not a string"));
  }
  out->assign(text);
  return absl::OkStatus();
}

// Required non-empty string member.
absl::StatusOr<std::string_view> RequiredString(simdjson::dom::element object, std::string_view key,
                                                std::string_view path) {
  const std::optional<simdjson::dom::element> value = Member(object, key);
  std::string_view text;
  if (!value || value->get(text) != simdjson::SUCCESS) {
    return absl::InvalidArgumentError(absl::StrCat(AsAbsl(path), path.empty() ? "" : ".",
                                                   AsAbsl(key), ": missing or not a string"));
  }
  if (text.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(AsAbsl(path), path.empty() ? "" : ".", AsAbsl(key), ": empty"));
  }
  return text;
}

// Legacy resource id: product uuid (else identifier), model code, else code/uuid/identifier.
std::string LegacyResourceId(simdjson::dom::element resource, std::string_view kind) {
  if (kind == "product") {
    if (std::string_view uuid = StringMember(resource, "uuid"); !uuid.empty()) {
      return std::string(uuid);
    }
    return std::string(StringMember(resource, "identifier"));
  }
  if (kind == "product_model") return std::string(StringMember(resource, "code"));
  for (std::string_view key : {"code", "uuid", "identifier"}) {
    if (std::string_view id = StringMember(resource, key); !id.empty()) return std::string(id);
  }
  return {};
}

// One element of a legacy batch; the error message is the RejectedElement reason. `serialized`:
// see ConvertData.
absl::Status ParseLegacyEvent(simdjson::dom::element element, std::size_t index, v1::Event* event,
                              std::string* serialized) {
  const std::string path = absl::StrCat("events[", index, "]");
  if (!element.is_object()) return absl::InvalidArgumentError(path + ": not an object");

  absl::StatusOr<std::string_view> action = RequiredString(element, "action", path);
  if (!action.ok()) return action.status();
  absl::StatusOr<std::string_view> event_id = RequiredString(element, "event_id", path);
  if (!event_id.ok()) return event_id.status();
  absl::StatusOr<std::string_view> datetime = RequiredString(element, "event_datetime", path);
  if (!datetime.ok()) return datetime.status();
  if (!ParseDateTime(*datetime, /*offset_required=*/true, event->mutable_occurred_at())) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ".event_datetime: not an RFC 3339 timestamp"));
  }
  const std::optional<simdjson::dom::element> data = Member(element, "data");
  if (!data || !data->is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ".data: missing or not an object"));
  }
  const std::optional<simdjson::dom::element> resource = Member(*data, "resource");
  simdjson::dom::object resource_object;
  if (!resource || resource->get(resource_object) != simdjson::SUCCESS) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ".data.resource: missing or not an object"));
  }
  if (absl::Status s = OptionalString(element, "author", path, event->mutable_author()); !s.ok()) {
    return s;
  }
  if (absl::Status s = OptionalString(element, "author_type", path, event->mutable_author_type());
      !s.ok()) {
    return s;
  }
  if (absl::Status s = OptionalString(element, "pim_source", path, event->mutable_pim_source());
      !s.ok()) {
    return s;
  }
  if (absl::Status s =
          ConvertData(resource_object, absl::StrCat(path, ".data.resource"), event, serialized);
      !s.ok()) {
    return s;
  }

  CanonicalType canonical = CanonicalizeType(*action);
  event->set_id(std::string(*event_id));
  event->set_original_type(std::string(*action));
  event->set_resource_id(LegacyResourceId(*resource, canonical.kind));
  event->set_type(std::move(canonical.type));
  event->set_kind(std::move(canonical.kind));
  event->set_origin(v1::ORIGIN_EVENTS_API);
  if (!ParseDateTime(StringMember(*resource, "updated"), /*offset_required=*/true,
                     event->mutable_version_at())) {
    *event->mutable_version_at() = event->occurred_at();
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// Event Platform

// The id of the resource an Event Platform event is about, found where ResourceLocationOf says
// for its canonical type; empty when the payload does not name one.
std::string CloudEventResourceId(simdjson::dom::element data, const CanonicalType& canonical) {
  const ResourceLocation location = ResourceLocationOf(canonical.type);
  if (location.object.empty()) return {};
  std::optional<simdjson::dom::element> object = Member(data, location.object);
  if (!object && !location.alternate_object.empty()) {
    object = Member(data, location.alternate_object);
  }
  if (!object || !object->is_object()) return {};

  std::string id;
  for (std::string_view key : location.id_keys) {
    if (key.empty()) break;
    const std::optional<simdjson::dom::element> value = Member(*object, key);
    if (!value) continue;
    std::string_view text;
    if (value->get(text) == simdjson::SUCCESS) {
      id = std::string(text);
    } else if (location.numeric_id && value->is_number()) {
      id = NumberText(*value);
    }
    if (!id.empty()) break;
  }
  if (location.parent.empty() || id.empty()) return id;
  // Without the parent the code is ambiguous; an empty id (no staleness check) is safer than
  // one that could collide with another parent's resource.
  const std::optional<simdjson::dom::element> parent = Member(*object, location.parent);
  const std::string_view parent_code = parent ? StringMember(*parent, "code") : "";
  if (parent_code.empty()) return {};
  return absl::StrCat(AsAbsl(parent_code), "/", id);
}

std::string Quoted(std::string_view text) {
  const bool cut = text.size() > kMaxQuotedInput;
  return absl::StrCat("\"", absl::CHexEscape(AsAbsl(text.substr(0, kMaxQuotedInput))),
                      cut ? "..." : "", "\"");
}

// One CloudEvent from its parsed body. `serialized`: see ConvertData.
absl::StatusOr<v1::Event> CloudEventFrom(simdjson::dom::element root, std::string* serialized) {
  if (!root.is_object()) return absl::InvalidArgumentError("body is not a JSON object");

  absl::StatusOr<std::string_view> id = RequiredString(root, "id", "");
  if (!id.ok()) return id.status();
  absl::StatusOr<std::string_view> type = RequiredString(root, "type", "");
  if (!type.ok()) return type.status();
  // specversion is "1.0" today; any string is accepted so a minor revision does not lose events.
  if (std::optional<simdjson::dom::element> version = Member(root, "specversion");
      version && !version->is_string()) {
    return absl::InvalidArgumentError("specversion: not a string");
  }
  const std::optional<simdjson::dom::element> data = Member(root, "data");
  simdjson::dom::object data_object;
  if (!data || data->get(data_object) != simdjson::SUCCESS) {
    return absl::InvalidArgumentError("data: missing or not an object");
  }

  v1::Event event;
  if (std::optional<simdjson::dom::element> time = Member(root, "time"); !IsAbsentOrNull(time)) {
    std::string_view text;
    if (time->get(text) != simdjson::SUCCESS) {
      return absl::InvalidArgumentError("time: not a string");
    }
    if (!ParseDateTime(text, /*offset_required=*/true, event.mutable_occurred_at())) {
      return absl::InvalidArgumentError(
          absl::StrCat("time: not an RFC 3339 timestamp: ", Quoted(text)));
    }
  }
  // `data` is kept whole: a delta's `updated_at` (the save time, RFC 3339 or PHP's
  // {"date", "timezone"}) and `changes` reach plugins exactly as sent.
  if (absl::Status s = ConvertData(data_object, "data", &event, serialized); !s.ok()) return s;
  if (absl::Status s = OptionalString(root, "subject", "", event.mutable_subject()); !s.ok()) {
    return s;
  }

  CanonicalType canonical = CanonicalizeType(*type);
  event.set_id(std::string(*id));
  event.set_original_type(std::string(*type));
  event.set_origin(v1::ORIGIN_EVENT_PLATFORM);
  // `source` changed over time ("pim", "akeneo-event-platform"): stored, never validated.
  event.set_pim_source(std::string(StringMember(root, "source")));
  if (std::optional<simdjson::dom::element> author = Member(*data, "author")) {
    event.set_author(std::string(StringMember(*author, "identifier")));
    event.set_author_type(std::string(StringMember(*author, "type")));
  }
  event.set_resource_id(CloudEventResourceId(*data, canonical));
  // Every type is versioned by `time`, deltas included. Akeneo orders a resource's events by
  // `time`, then `id`; a delta's `updated_at` (the save time) precedes the `time` of the plain
  // event of the same save, so versioning deltas by it made a subscriber to both streams see
  // every delta as stale. Equal times are not stale either way (see EventLog): the plain and the
  // delta event of one save may share a `time`, and their ids' order is arbitrary.
  if (event.has_occurred_at()) *event.mutable_version_at() = event.occurred_at();

  event.set_type(std::move(canonical.type));
  event.set_kind(std::move(canonical.kind));
  return event;
}

// One notification webhook from its parsed body (see PlatformNotification). `serialized`: see
// ConvertData.
absl::StatusOr<PlatformNotification> NotificationFrom(simdjson::dom::element root,
                                                      std::string* serialized) {
  if (!root.is_object()) return absl::InvalidArgumentError("body is not a JSON object");
  absl::StatusOr<std::string_view> type = RequiredString(root, "notification_type", "");
  if (!type.ok()) return type.status();
  absl::StatusOr<std::string_view> subscription = RequiredString(root, "subscription_id", "");
  if (!subscription.ok()) return subscription.status();
  absl::StatusOr<std::string_view> timestamp = RequiredString(root, "timestamp", "");
  if (!timestamp.ok()) return timestamp.status();

  PlatformNotification notification;
  if (!ParseDateTime(*timestamp, /*offset_required=*/true, &notification.timestamp)) {
    return absl::InvalidArgumentError(
        absl::StrCat("timestamp: not an RFC 3339 timestamp: ", Quoted(*timestamp)));
  }
  notification.notification_type = std::string(*type);
  notification.subscription_id = std::string(*subscription);
  v1::Event& event = notification.event;
  for (const auto& [key, out] : {std::pair{"subscriber_id", &notification.subscriber_id},
                                 std::pair{"destination", &notification.destination},
                                 std::pair{"reason", &notification.reason},
                                 std::pair{"subject", event.mutable_pim_source()}}) {
    if (absl::Status s = OptionalString(root, key, "", out); !s.ok()) return s;
  }
  if (std::optional<simdjson::dom::element> events = Member(root, "events");
      !IsAbsentOrNull(events) && !events->is_array()) {
    return absl::InvalidArgumentError("events: not an array");
  }
  // value_unsafe(): the root was checked to be an object above.
  if (absl::Status s = ConvertData(root.get_object().value_unsafe(), "body", &event, serialized);
      !s.ok()) {
    return s;
  }

  *event.mutable_occurred_at() = notification.timestamp;
  *event.mutable_version_at() = notification.timestamp;
  // No id is sent: this one is derived from what identifies the notification, so the platform's
  // retries of one notification (same payload) are duplicates, and two notifications differ.
  event.set_id(absl::StrCat("notification:", notification.subscription_id, ":",
                            notification.notification_type, ":",
                            google::protobuf::util::TimeUtil::ToString(notification.timestamp)));
  event.set_type(notification.notification_type);
  event.set_original_type(notification.notification_type);
  event.set_kind(std::string(kSubscriptionKind));
  event.set_resource_id(notification.subscription_id);
  event.set_subject(notification.subscription_id);
  event.set_origin(v1::ORIGIN_EVENT_PLATFORM);
  return notification;
}

}  // namespace

absl::StatusOr<ParsedPayload> ParseLegacyBatch(std::string_view body, const ParseLimits& limits,
                                               std::vector<std::string>* serialized_data) {
  absl::StatusOr<simdjson::dom::element> root = ParseJson(body);
  if (!root.ok()) return root.status();
  simdjson::dom::object object;
  if (root->get(object) != simdjson::SUCCESS) {
    return absl::InvalidArgumentError("body is not a JSON object");
  }
  // Find the first `events` member and remember its position, to locate its raw bytes later.
  std::size_t events_member_index = 0;
  std::optional<simdjson::dom::element> events_value;
  for (simdjson::dom::key_value_pair member : object) {
    if (member.key == "events") {
      events_value = member.value;
      break;
    }
    ++events_member_index;
  }
  simdjson::dom::array events;
  if (!events_value || events_value->get(events) != simdjson::SUCCESS) {
    return absl::InvalidArgumentError("\"events\" is missing or not an array");
  }
  const std::size_t count = events.size();
  if (count == 0) return absl::InvalidArgumentError("\"events\" is empty");
  if (count > limits.max_events) {
    return absl::InvalidArgumentError(
        absl::StrCat("too many events: ", count, " > ", limits.max_events));
  }

  ParsedPayload payload;
  payload.events.reserve(count);
  if (serialized_data != nullptr) {
    serialized_data->clear();
    serialized_data->reserve(count);
  }
  std::string serialized;
  std::vector<std::string_view> raw_elements;  // Scanned on the first rejection only.
  bool raw_scanned = false;
  std::size_t index = 0;
  for (simdjson::dom::element element : events) {
    v1::Event event;
    if (absl::Status s = ParseLegacyEvent(element, index, &event,
                                          serialized_data != nullptr ? &serialized : nullptr);
        s.ok()) {
      payload.events.push_back(std::move(event));
      if (serialized_data != nullptr) serialized_data->push_back(std::move(serialized));
    } else {
      if (!raw_scanned) {
        raw_elements = RawArrayElements(body, events_member_index);
        raw_scanned = true;
      }
      RejectedElement rejected;
      rejected.index = index;
      rejected.reason = std::string(s.message());
      // The bytes as received; should the scan disagree with simdjson (it cannot on input
      // simdjson accepted, but it is not worth trusting blindly), simdjson's minified
      // re-serialisation is the fallback.
      rejected.raw = raw_elements.size() == count ? std::string(raw_elements[index])
                                                  : simdjson::to_string(element);
      payload.rejected.push_back(std::move(rejected));
    }
    ++index;
  }
  return payload;
}

absl::StatusOr<v1::Event> ParseCloudEvent(std::string_view body) {
  absl::StatusOr<simdjson::dom::element> root = ParseJson(body);
  if (!root.ok()) return root.status();
  return CloudEventFrom(*root, nullptr);
}

absl::StatusOr<EventPlatformPayload> ParseEventPlatformBody(std::string_view body,
                                                            std::string* serialized_data) {
  absl::StatusOr<simdjson::dom::element> root = ParseJson(body);
  if (!root.ok()) return root.status();
  if (Member(*root, "notification_type") && !Member(*root, "specversion")) {
    absl::StatusOr<PlatformNotification> notification = NotificationFrom(*root, serialized_data);
    if (!notification.ok()) return notification.status();
    return EventPlatformPayload(std::move(*notification));
  }
  absl::StatusOr<v1::Event> event = CloudEventFrom(*root, serialized_data);
  if (!event.ok()) return event.status();
  return EventPlatformPayload(std::move(*event));
}

absl::StatusOr<Timestamp> ParseTimestamp(std::string_view text) {
  Timestamp timestamp;
  if (!ParseDateTime(text, /*offset_required=*/true, &timestamp)) {
    return absl::InvalidArgumentError(absl::StrCat("not an RFC 3339 timestamp: ", Quoted(text)));
  }
  return timestamp;
}

}  // namespace pimgate
