// Payload parsing: legacy Events API batches, Event Platform CloudEvents and RFC 3339 timestamps,
// on the payload shapes documented by Akeneo (see docs/REFERENCE.md); every type of the Event
// Platform's catalogue with its documented example (tests/data/event_platform/).
#include "gateway/payload_parser.h"

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <ostream>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "bench/akeneo_payloads.h"
#include "events/event_type.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/timestamp.pb.h"
#include "google/protobuf/util/message_differencer.h"
#include "google/protobuf/wire_format_lite.h"
#include "gtest/gtest.h"
#include "pimgate/v1/event.pb.h"

namespace pimgate {
namespace {

using google::protobuf::Struct;
using google::protobuf::Timestamp;
using google::protobuf::Value;

// Mirrors kMaxDataDepth in gateway/payload_parser.cc.
constexpr int kMaxDataDepth = 30;

constexpr std::int64_t kSeconds2021_03_12T09_46_08 = 1615542368;
constexpr std::int64_t kSeconds2026_11_20T10_15_00 = 1795169700;
constexpr std::int64_t kSeconds2026_11_20T10_14_59 = 1795169699;
constexpr std::int64_t kSeconds2024_03_07T15_16_37 = 1709824597;
constexpr std::int64_t kSeconds2024_02_22T17_31_00 = 1708623060;
constexpr std::int64_t kSeconds2026_04_29T12_34_56 = 1777466096;

const ParseLimits kDefaultLimits;

// Concatenates string pieces. (Debian's Abseil has its own absl::string_view, so absl::StrCat
// does not take std::string_view.)
template <typename... Parts>
std::string Cat(const Parts&... parts) {
  std::string out;
  (out.append(std::string_view(parts)), ...);
  return out;
}

// The REFERENCE.md legacy example, as PHP's json_encode writes it (escaped slashes).
constexpr std::string_view kLegacyExample =
    R"({"events":[{"action":"product.updated","event_id":"6c4c3b4e-0a6f-4d1a-9a0b-3f5f1c1b2a10",)"
    R"("event_datetime":"2026-11-20T10:15:00+00:00","author":"julia","author_type":"ui",)"
    R"("pim_source":"https:\/\/pim.example.com",)"
    R"("data":{"resource":{"uuid":"a3f2c0de-1111-4222-8333-444455556666","identifier":"sku-1",)"
    R"("family":"shoes","enabled":true,"categories":["summer"],"values":{},)"
    R"("created":"2026-01-02T08:00:00+00:00","updated":"2026-11-20T10:14:59+00:00"}}}]})";

// A legacy batch holding one event with the given action and resource.
std::string LegacyBatch(std::string_view action, std::string_view resource) {
  return Cat(R"({"events":[{"action":")", action,
             R"(","event_id":"e-1","event_datetime":"2021-03-12T09:46:08+00:00",)",
             R"("author":"julia","author_type":"api","pim_source":"https:\/\/pim",)",
             R"("data":{"resource":)", resource, "}}]}");
}

// A CloudEvent with the given type and data.
std::string CloudEvent(std::string_view type, std::string_view data) {
  return Cat(R"({"specversion":"1.0","id":"018e32f9-dfe4-760e-a273-5da1c089dfdb","type":")", type,
             R"(","source":"pim","subject":"srnt-whatever","time":"2024-02-22T17:31:00Z",)",
             R"("datacontenttype":"application/json",)",
             R"("dataschema":"https://event.prd.sdk.akeneo.cloud/spec/x.schema.json","data":)",
             data, "}");
}

v1::Event ParseOneLegacy(std::string_view body) {
  absl::StatusOr<ParsedPayload> parsed = ParseLegacyBatch(body, kDefaultLimits);
  EXPECT_TRUE(parsed.ok()) << parsed.status();
  if (!parsed.ok()) return {};
  EXPECT_TRUE(parsed->rejected.empty()) << parsed->rejected.front().reason;
  EXPECT_EQ(parsed->events.size(), 1u);
  return parsed->events.empty() ? v1::Event() : parsed->events.front();
}

v1::Event ParseCloud(std::string_view body) {
  absl::StatusOr<v1::Event> event = ParseCloudEvent(body);
  EXPECT_TRUE(event.ok()) << event.status();
  return event.ok() ? *event : v1::Event();
}

void ExpectInvalid(const absl::Status& status, std::string_view message_part) {
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_NE(std::string(status.message()).find(message_part), std::string::npos)
      << "message: " << status.message() << "\nexpected to contain: " << message_part;
}

const Value& Field(const Struct& s, const std::string& key) {
  static const Value kMissing;
  auto it = s.fields().find(key);
  EXPECT_NE(it, s.fields().end()) << "missing field " << key;
  return it == s.fields().end() ? kMissing : it->second;
}

// `{"a":{"a":...{"a":1}...}}` with `levels` nested objects.
std::string NestedObjects(int levels) {
  std::string json;
  for (int i = 0; i < levels; ++i) json += i + 1 < levels ? R"({"a":)" : R"({"a":1)";
  json.append(levels, '}');
  return json;
}

// ---------------------------------------------------------------------------------------------
// Legacy Events API

TEST(ParseLegacyBatchTest, ReferenceExample) {
  const v1::Event event = ParseOneLegacy(kLegacyExample);
  EXPECT_EQ(event.id(), "6c4c3b4e-0a6f-4d1a-9a0b-3f5f1c1b2a10");
  EXPECT_EQ(event.original_type(), "product.updated");
  EXPECT_EQ(event.type(), "product.updated");
  EXPECT_EQ(event.kind(), "product");
  EXPECT_EQ(event.origin(), v1::ORIGIN_EVENTS_API);
  EXPECT_EQ(event.resource_id(), "a3f2c0de-1111-4222-8333-444455556666");
  EXPECT_EQ(event.occurred_at().seconds(), kSeconds2026_11_20T10_15_00);
  EXPECT_EQ(event.occurred_at().nanos(), 0);
  EXPECT_EQ(event.version_at().seconds(), kSeconds2026_11_20T10_14_59);
  EXPECT_EQ(event.author(), "julia");
  EXPECT_EQ(event.author_type(), "ui");
  EXPECT_EQ(event.pim_source(), "https://pim.example.com");
  // Left to the caller.
  EXPECT_EQ(event.sequence(), 0u);
  EXPECT_TRUE(event.source().empty());
  EXPECT_FALSE(event.has_received_at());
  EXPECT_TRUE(event.request_id().empty());

  const Struct& data = event.data();
  EXPECT_EQ(Field(data, "identifier").string_value(), "sku-1");
  EXPECT_EQ(Field(data, "family").string_value(), "shoes");
  EXPECT_TRUE(Field(data, "enabled").bool_value());
  ASSERT_EQ(Field(data, "categories").list_value().values_size(), 1);
  EXPECT_EQ(Field(data, "categories").list_value().values(0).string_value(), "summer");
  EXPECT_TRUE(Field(data, "values").has_struct_value());
  EXPECT_EQ(Field(data, "values").struct_value().fields_size(), 0);
  EXPECT_EQ(Field(data, "updated").string_value(), "2026-11-20T10:14:59+00:00");
}

TEST(ParseLegacyBatchTest, ProductWithIdentifierOnly) {
  // PIM 5.0/6.0 and subscriptions without the "uuid" option.
  const v1::Event event =
      ParseOneLegacy(LegacyBatch("product.created", R"({"identifier":"sku-9","enabled":false})"));
  EXPECT_EQ(event.type(), "product.created");
  EXPECT_EQ(event.resource_id(), "sku-9");
}

TEST(ParseLegacyBatchTest, ProductUuidPreferredOverIdentifier) {
  const v1::Event event =
      ParseOneLegacy(LegacyBatch("product.updated", R"({"identifier":"sku-9","uuid":"u-9"})"));
  EXPECT_EQ(event.resource_id(), "u-9");
}

TEST(ParseLegacyBatchTest, ProductEmptyUuidFallsBackToIdentifier) {
  const v1::Event event =
      ParseOneLegacy(LegacyBatch("product.updated", R"({"uuid":"","identifier":"sku-9"})"));
  EXPECT_EQ(event.resource_id(), "sku-9");
}

TEST(ParseLegacyBatchTest, ProductRemovedWithNullIdentifier) {
  const v1::Event event = ParseOneLegacy(
      LegacyBatch("product.removed", R"({"identifier":null,"uuid":"0b7e2c1a-uuid"})"));
  EXPECT_EQ(event.original_type(), "product.removed");
  EXPECT_EQ(event.type(), "product.deleted");
  EXPECT_EQ(event.kind(), "product");
  EXPECT_EQ(event.resource_id(), "0b7e2c1a-uuid");
  EXPECT_EQ(Field(event.data(), "identifier").kind_case(), Value::kNullValue);
}

TEST(ParseLegacyBatchTest, ProductRemovedWithNothingUsableIsStillAnEvent) {
  const v1::Event event = ParseOneLegacy(LegacyBatch("product.removed", R"({"identifier":null})"));
  EXPECT_EQ(event.type(), "product.deleted");
  EXPECT_TRUE(event.resource_id().empty());
}

TEST(ParseLegacyBatchTest, ProductModelEvents) {
  const v1::Event updated = ParseOneLegacy(LegacyBatch(
      "product_model.updated", R"({"code":"tshirt-model","family_variant":"by_size"})"));
  EXPECT_EQ(updated.type(), "product_model.updated");
  EXPECT_EQ(updated.kind(), "product_model");
  EXPECT_EQ(updated.resource_id(), "tshirt-model");

  const v1::Event removed =
      ParseOneLegacy(LegacyBatch("product_model.removed", R"({"code":"tshirt-model"})"));
  EXPECT_EQ(removed.original_type(), "product_model.removed");
  EXPECT_EQ(removed.type(), "product_model.deleted");
  EXPECT_EQ(removed.resource_id(), "tshirt-model");
}

TEST(ParseLegacyBatchTest, NullOptionalFieldsAreAbsent) {
  const v1::Event event = ParseOneLegacy(
      R"({"events":[{"action":"product.updated","event_id":"e","author":null,)"
      R"("event_datetime":"2021-03-12T09:46:08+00:00","data":{"resource":{"uuid":"u"}}}]})");
  EXPECT_TRUE(event.author().empty());
  EXPECT_TRUE(event.author_type().empty());
  EXPECT_TRUE(event.pim_source().empty());
}

TEST(ParseLegacyBatchTest, VersionAtIsResourceUpdated) {
  const v1::Event event = ParseOneLegacy(
      LegacyBatch("product.updated", R"({"uuid":"u","updated":"2024-03-07T16:16:37+01:00"})"));
  EXPECT_EQ(event.occurred_at().seconds(), kSeconds2021_03_12T09_46_08);
  EXPECT_EQ(event.version_at().seconds(), kSeconds2024_03_07T15_16_37);
}

TEST(ParseLegacyBatchTest, VersionAtFallsBackToOccurredAt) {
  for (std::string_view resource :
       {R"({"uuid":"u"})", R"({"uuid":"u","updated":"yesterday"})", R"({"uuid":"u","updated":3})",
        R"({"uuid":"u","updated":null})"}) {
    SCOPED_TRACE(resource);
    const v1::Event event = ParseOneLegacy(LegacyBatch("product.updated", resource));
    EXPECT_EQ(event.version_at().seconds(), kSeconds2021_03_12T09_46_08);
    EXPECT_EQ(event.version_at().nanos(), 0);
  }
}

TEST(ParseLegacyBatchTest, NumbersBecomeDoubles) {
  const v1::Event event = ParseOneLegacy(LegacyBatch(
      "product.updated",
      R"({"uuid":"u","n":-3,"big":9007199254740993,"f":1.5e3,"u":18446744073709551615})"));
  EXPECT_EQ(Field(event.data(), "n").number_value(), -3.0);
  // Beyond 2^53 a double cannot hold every integer: documented precision loss.
  EXPECT_EQ(Field(event.data(), "big").number_value(), 9007199254740992.0);
  EXPECT_EQ(Field(event.data(), "f").number_value(), 1500.0);
  EXPECT_EQ(Field(event.data(), "u").number_value(), 18446744073709551615.0);
}

TEST(ParseLegacyBatchTest, DuplicateKeysFirstWinsEverywhere) {
  const v1::Event event =
      ParseOneLegacy(LegacyBatch("product.updated", R"({"uuid":"first","uuid":"second"})"));
  EXPECT_EQ(event.resource_id(), "first");
  EXPECT_EQ(Field(event.data(), "uuid").string_value(), "first");
}

TEST(ParseLegacyBatchTest, UnicodeEscapesAreDecoded) {
  const v1::Event event = ParseOneLegacy(
      LegacyBatch("product.updated", R"({"uuid":"u","name":"Caf\u00e9 \ud83d\ude00 \"q\""})"));
  EXPECT_EQ(Field(event.data(), "name").string_value(), "Caf\xc3\xa9 \xf0\x9f\x98\x80 \"q\"");
}

TEST(ParseLegacyBatchTest, PartialBatchRejectsBadElementsWithRawText) {
  const std::string good0 =
      R"({"action":"product.created","event_id":"e0","event_datetime":"2021-03-12T09:46:08+00:00","data":{"resource":{"uuid":"u0"}}})";
  const std::string not_object = R"("just a string, with ] and } inside")";
  const std::string no_id =
      R"({ "action" : "product.updated", "event_datetime":"2021-03-12T09:46:08+00:00",
           "note":"tricky \" ] } [ {", "data":{"resource":{"uuid":"u2"}} })";
  const std::string bad_time =
      R"({"action":"product.updated","event_id":"e3","event_datetime":"12/03/2021","data":{"resource":{}}})";
  const std::string good4 =
      R"({"action":"product_model.removed","event_id":"e4","event_datetime":"2021-03-12T09:46:08Z","data":{"resource":{"code":"m4"}}})";
  const std::string no_resource =
      R"({"action":"product.updated","event_id":"e5","event_datetime":"2021-03-12T09:46:08Z","data":{"resource":[]}})";
  const std::string number = "42";
  const std::string empty_id =
      R"({"action":"product.updated","event_id":"","event_datetime":"2021-03-12T09:46:08Z","data":{"resource":{}}})";
  const std::string no_data =
      R"({"action":"product.updated","event_id":"e8","event_datetime":"2021-03-12T09:46:08Z"})";
  const std::string bad_author =
      R"({"action":"product.updated","event_id":"e9","author":7,"event_datetime":"2021-03-12T09:46:08Z","data":{"resource":{}}})";
  const std::string no_action =
      R"({"action":null,"event_id":"e10","event_datetime":"2021-03-12T09:46:08Z","data":{"resource":{}}})";
  // `events` is not the first member, and whitespace surrounds the elements.
  const std::string body =
      Cat(R"({ "meta": {"events": [1, 2], "s": "]"}, "events" : [ )", good0, " ,\n  ", not_object,
          ",", no_id, ",\t", bad_time, ",", good4, ",", no_resource, ",", number, ",", empty_id,
          ",", no_data, ",", bad_author, ",", no_action, " ] }");

  absl::StatusOr<ParsedPayload> parsed = ParseLegacyBatch(body, kDefaultLimits);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_EQ(parsed->events.size(), 2u);
  EXPECT_EQ(parsed->events[0].id(), "e0");
  EXPECT_EQ(parsed->events[0].resource_id(), "u0");
  EXPECT_EQ(parsed->events[1].id(), "e4");
  EXPECT_EQ(parsed->events[1].type(), "product_model.deleted");
  EXPECT_EQ(parsed->events[1].resource_id(), "m4");

  struct Expected {
    std::size_t index;
    std::string reason;
    const std::string& raw;
  };
  const Expected expected[] = {
      {1, "events[1]: not an object", not_object},
      {2, "events[2].event_id: missing or not a string", no_id},
      {3, "events[3].event_datetime: not an RFC 3339 timestamp", bad_time},
      {5, "events[5].data.resource: missing or not an object", no_resource},
      {6, "events[6]: not an object", number},
      {7, "events[7].event_id: empty", empty_id},
      {8, "events[8].data: missing or not an object", no_data},
      {9, "events[9].author: not a string", bad_author},
      {10, "events[10].action: missing or not a string", no_action},
  };
  ASSERT_EQ(parsed->rejected.size(), std::size(expected));
  for (std::size_t i = 0; i < std::size(expected); ++i) {
    SCOPED_TRACE(expected[i].reason);
    EXPECT_EQ(parsed->rejected[i].index, expected[i].index);
    EXPECT_EQ(parsed->rejected[i].reason, expected[i].reason);
    EXPECT_EQ(parsed->rejected[i].raw, expected[i].raw);
  }
}

TEST(ParseLegacyBatchTest, AllElementsRejectedIsStillOk) {
  absl::StatusOr<ParsedPayload> parsed = ParseLegacyBatch(R"({"events":[{},[]]})", kDefaultLimits);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_TRUE(parsed->events.empty());
  ASSERT_EQ(parsed->rejected.size(), 2u);
  EXPECT_EQ(parsed->rejected[0].raw, "{}");
  EXPECT_EQ(parsed->rejected[0].reason, "events[0].action: missing or not a string");
  EXPECT_EQ(parsed->rejected[1].raw, "[]");
}

TEST(ParseLegacyBatchTest, BodyErrors) {
  ExpectInvalid(ParseLegacyBatch("", kDefaultLimits).status(), "body is empty");
  ExpectInvalid(ParseLegacyBatch("not json", kDefaultLimits).status(), "body is not valid JSON");
  ExpectInvalid(ParseLegacyBatch(R"({"events":[)", kDefaultLimits).status(),
                "body is not valid JSON");
  ExpectInvalid(ParseLegacyBatch(R"({"events":[]} trailing)", kDefaultLimits).status(),
                "body is not valid JSON");
  ExpectInvalid(ParseLegacyBatch(R"([{"events":[]}])", kDefaultLimits).status(),
                "body is not a JSON object");
  ExpectInvalid(ParseLegacyBatch(R"("events")", kDefaultLimits).status(),
                "body is not a JSON object");
  ExpectInvalid(ParseLegacyBatch(R"({"event":[{}]})", kDefaultLimits).status(),
                R"("events" is missing or not an array)");
  ExpectInvalid(ParseLegacyBatch(R"({"events":{"0":{}}})", kDefaultLimits).status(),
                R"("events" is missing or not an array)");
  ExpectInvalid(ParseLegacyBatch(R"({"events":null})", kDefaultLimits).status(),
                R"("events" is missing or not an array)");
  ExpectInvalid(ParseLegacyBatch(R"({"events":[]})", kDefaultLimits).status(),
                R"("events" is empty)");
}

TEST(ParseLegacyBatchTest, TooManyEvents) {
  ParseLimits limits;
  limits.max_events = 2;
  const std::string three = R"({"events":[{},{},{}]})";
  ExpectInvalid(ParseLegacyBatch(three, limits).status(), "too many events: 3 > 2");
  limits.max_events = 3;
  absl::StatusOr<ParsedPayload> parsed = ParseLegacyBatch(three, limits);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->rejected.size(), 3u);
}

TEST(ParseLegacyBatchTest, InvalidUtf8FailsCleanly) {
  const std::string body =
      Cat(R"({"events":[{"action":"product.updated","event_id":"e",)",
          R"("event_datetime":"2021-03-12T09:46:08Z","data":{"resource":{"n":"caf)", "\xe9",
          R"("}}}]})");  // Latin-1 é: not UTF-8.
  ExpectInvalid(ParseLegacyBatch(body, kDefaultLimits).status(), "not valid UTF-8");
  // Overlong encoding and a truncated sequence, outside strings too.
  ExpectInvalid(ParseLegacyBatch("{\"events\":[\"\xc0\xaf\"]}", kDefaultLimits).status(),
                "not valid UTF-8");
  ExpectInvalid(ParseLegacyBatch("{\"events\":[\"\xf0\x9f\x98\"]}", kDefaultLimits).status(),
                "not valid UTF-8");
  // A lone surrogate escape would decode to invalid UTF-8: refused as well.
  ExpectInvalid(ParseLegacyBatch(R"({"events":["\ud800"]})", kDefaultLimits).status(),
                "body is not valid JSON");
}

TEST(ParseLegacyBatchTest, DeepNestingFailsCleanly) {
  constexpr int kLevels = 100000;
  std::string body = R"({"events":[)";
  body.append(kLevels, '[');
  body.append(kLevels, ']');
  body += "]}";
  ExpectInvalid(ParseLegacyBatch(body, kDefaultLimits).status(), "nested deeper than");

  std::string objects = R"({"events":[)";
  for (int i = 0; i < kLevels; ++i) objects += R"({"a":)";
  objects += "1";
  objects.append(kLevels, '}');
  objects += "]}";
  ExpectInvalid(ParseLegacyBatch(objects, kDefaultLimits).status(), "nested deeper than");
}

TEST(ParseLegacyBatchTest, DataDepthLimitKeepsEventsParseableAsProtobuf) {
  // Deepest accepted resource: it must survive a protobuf round trip (default recursion limit).
  const v1::Event event =
      ParseOneLegacy(LegacyBatch("product.updated", NestedObjects(kMaxDataDepth)));
  v1::Event reparsed;
  ASSERT_TRUE(reparsed.ParseFromString(event.SerializeAsString()));
  EXPECT_EQ(reparsed.data().DebugString(), event.data().DebugString());

  // One level more, and far more (still under simdjson's own limit): the element is rejected.
  for (int levels : {kMaxDataDepth + 1, 900}) {
    SCOPED_TRACE(levels);
    absl::StatusOr<ParsedPayload> parsed =
        ParseLegacyBatch(LegacyBatch("product.updated", NestedObjects(levels)), kDefaultLimits);
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_TRUE(parsed->events.empty());
    ASSERT_EQ(parsed->rejected.size(), 1u);
    EXPECT_EQ(
        parsed->rejected[0].reason,
        absl::StrCat("events[0].data.resource: nested deeper than ", kMaxDataDepth, " levels"));
  }
  // Arrays count as levels too.
  std::string arrays(kMaxDataDepth, '[');
  arrays.append(kMaxDataDepth, ']');
  absl::StatusOr<ParsedPayload> parsed = ParseLegacyBatch(
      LegacyBatch("product.updated", Cat(R"({"a":)", arrays, "}")), kDefaultLimits);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->rejected.size(), 1u);
}

// ---------------------------------------------------------------------------------------------
// Event Platform

TEST(ParseCloudEventTest, ReferenceProductDeleted) {
  const v1::Event event = ParseCloud(
      R"({"specversion":"1.0","id":"018e197c-dfe2-70f8-9346-1a8e016f5fbb","source":"akeneo-event-platform",
 "type":"com.akeneo.pim.v1.product.deleted","subject":"0190fe8a-6213-76ce-8a9f-ba36a5ef555a",
 "datacontenttype":"application/json","time":"2024-03-07T15:16:37Z",
 "data":{"product":{"uuid":"3444ec1b-0000","identifier":"my-product-identifier"},
         "author":{"identifier":"b238e9f7-0000","type":"api"}}})");
  EXPECT_EQ(event.id(), "018e197c-dfe2-70f8-9346-1a8e016f5fbb");
  EXPECT_EQ(event.original_type(), "com.akeneo.pim.v1.product.deleted");
  EXPECT_EQ(event.type(), "product.deleted");
  EXPECT_EQ(event.kind(), "product");
  EXPECT_EQ(event.origin(), v1::ORIGIN_EVENT_PLATFORM);
  EXPECT_EQ(event.resource_id(), "3444ec1b-0000");
  EXPECT_EQ(event.occurred_at().seconds(), kSeconds2024_03_07T15_16_37);
  EXPECT_EQ(event.version_at().seconds(), kSeconds2024_03_07T15_16_37);
  EXPECT_EQ(event.author(), "b238e9f7-0000");
  EXPECT_EQ(event.author_type(), "api");
  EXPECT_EQ(event.pim_source(), "akeneo-event-platform");
  EXPECT_EQ(event.subject(), "0190fe8a-6213-76ce-8a9f-ba36a5ef555a");
  const Struct& product = Field(event.data(), "product").struct_value();
  EXPECT_EQ(Field(product, "identifier").string_value(), "my-product-identifier");
  EXPECT_TRUE(Field(event.data(), "author").has_struct_value());
}

TEST(ParseCloudEventTest, ProductUpdated) {
  const v1::Event event = ParseCloud(CloudEvent(
      "com.akeneo.pim.v1.product.updated",
      R"({"product":{"uuid":"6a9f8486-2c36-4680-b87f-6f5f8f01b6cf"},"author":{"identifier":"julia","type":"user"}})"));
  EXPECT_EQ(event.type(), "product.updated");
  EXPECT_EQ(event.resource_id(), "6a9f8486-2c36-4680-b87f-6f5f8f01b6cf");
  EXPECT_EQ(event.author(), "julia");
  EXPECT_EQ(event.author_type(), "user");
  EXPECT_EQ(event.pim_source(), "pim");
  EXPECT_EQ(event.occurred_at().seconds(), kSeconds2024_02_22T17_31_00);
  EXPECT_EQ(event.version_at().seconds(), kSeconds2024_02_22T17_31_00);
}

TEST(ParseCloudEventTest, ProductIdentifierOnly) {
  const v1::Event event = ParseCloud(
      CloudEvent("com.akeneo.pim.v1.product.created", R"({"product":{"identifier":"sku"}})"));
  EXPECT_EQ(event.resource_id(), "sku");
}

std::string DeltaData(std::string_view updated_at) {
  return Cat(
      R"({"product":{"uuid":"p-1","updated_at":)", updated_at,
      R"(,"changes":{"enabled":{"previous":true,"new":false},"categories":{"added":["a"],"removed":[]},)"
      R"("values":{"name":[{"previous":"x","new":"y","type":"pim_catalog_text","locale":null,"scope":null}]}}},)"
      R"("author":{"identifier":"julia","type":"user"}})");
}

// Akeneo's product.updated.delta example (available-events.md), trimmed to the changes kinds
// pimgate reads nothing from: its `updated_at` is PHP's DateTime serialisation, and lies after
// the example's `time` (Akeneo copied the envelope between examples).
constexpr std::string_view kDeltaExample = R"({
  "specversion": "1.0",
  "id": "018e32f9-dfe4-760e-a273-5da1c089dfdb",
  "type": "com.akeneo.pim.v1.product.updated.delta",
  "source": "pim",
  "subject": "019256aa-7f77-7f58-bc8c-770f7e369c5b",
  "time": "2024-02-22T17:31:00Z",
  "datacontenttype": "application/json",
  "dataschema": "https://event.prd.sdk.akeneo.cloud/spec/com.akeneo.pim.v1.product.updated.delta.schema.json",
  "data": {
    "product": {
      "uuid": "6a9f8486-2c36-4680-b87f-6f5f8f01b6cf",
      "updated_at": {"date": "2024-10-14 13:01:21.000000", "timezone": "UTC"},
      "changes": {
        "enabled": {"previous": true, "new": false},
        "categories": {"added": ["added_category_code_1"], "removed": ["removed_category_code_1"]},
        "family": {"previous": "the_previous_family_code", "new": "the_new_family_code"},
        "values": {
          "an_updated_attribute": [{"previous": "previous_data", "new": "new_data",
                                    "type": "an_attribute_type", "locale": "a_locale",
                                    "scope": "a_scope"}]
        }
      }
    },
    "author": {"identifier": "admin", "type": "user"}
  }
})";

// Every Event Platform type is versioned by `time`, deltas too: Akeneo orders a resource's
// events by `time` (then `id`). The delta's `updated_at` stays in `data`, exactly as sent.
TEST(ParseCloudEventTest, DeltaIsVersionedByTimeAndKeepsUpdatedAtInData) {
  const v1::Event event = ParseCloud(kDeltaExample);
  EXPECT_EQ(event.type(), "product.updated.delta");
  EXPECT_EQ(event.kind(), "product");
  EXPECT_EQ(event.resource_id(), "6a9f8486-2c36-4680-b87f-6f5f8f01b6cf");
  EXPECT_EQ(event.subject(), "019256aa-7f77-7f58-bc8c-770f7e369c5b");
  EXPECT_EQ(event.occurred_at().seconds(), kSeconds2024_02_22T17_31_00);
  EXPECT_EQ(event.version_at().seconds(), kSeconds2024_02_22T17_31_00);
  EXPECT_EQ(event.version_at().nanos(), 0);
  const Struct& product = Field(event.data(), "product").struct_value();
  const Struct& updated_at = Field(product, "updated_at").struct_value();
  EXPECT_EQ(Field(updated_at, "date").string_value(), "2024-10-14 13:01:21.000000");
  EXPECT_EQ(Field(updated_at, "timezone").string_value(), "UTC");
  const Struct& changes = Field(product, "changes").struct_value();
  EXPECT_FALSE(Field(Field(changes, "enabled").struct_value(), "new").bool_value());
  EXPECT_EQ(Field(Field(changes, "family").struct_value(), "new").string_value(),
            "the_new_family_code");
  const Value& value =
      Field(Field(changes, "values").struct_value(), "an_updated_attribute").list_value().values(0);
  EXPECT_EQ(Field(value.struct_value(), "previous").string_value(), "previous_data");
  EXPECT_EQ(Field(value.struct_value(), "scope").string_value(), "a_scope");
}

TEST(ParseCloudEventTest, DeltaVersionIgnoresEveryUpdatedAtForm) {
  for (std::string_view updated_at :
       {R"("2024-10-14T15:01:21.5+02:00")",
        R"({"date":"2024-10-14 13:01:21.250000","timezone":"UTC"})",
        R"({"date":"2024-10-14 15:01:21.000000","timezone":"Europe/Paris"})",
        R"("2024-10-14 13:01:21")", "1728910881", "null"}) {
    SCOPED_TRACE(updated_at);
    const v1::Event event =
        ParseCloud(CloudEvent("com.akeneo.pim.v1.product.updated.delta", DeltaData(updated_at)));
    EXPECT_EQ(event.version_at().seconds(), kSeconds2024_02_22T17_31_00);
    EXPECT_EQ(event.version_at().nanos(), 0);
    // Kept verbatim whatever its form (the JSON null included).
    EXPECT_NE(Field(event.data(), "product").struct_value().fields().count("updated_at"), 0u);
  }
}

TEST(ParseCloudEventTest, PlainAndDeltaOfOneSaveShareTheirVersion) {
  const v1::Event plain = ParseCloud(
      CloudEvent("com.akeneo.pim.v1.product.updated",
                 R"({"product":{"uuid":"p-1"},"author":{"identifier":"julia","type":"user"}})"));
  const v1::Event delta = ParseCloud(CloudEvent("com.akeneo.pim.v1.product.updated.delta",
                                                DeltaData(R"("2024-02-22T17:30:59Z")")));
  EXPECT_EQ(plain.resource_id(), delta.resource_id());
  EXPECT_EQ(plain.kind(), delta.kind());
  EXPECT_EQ(plain.version_at().seconds(), delta.version_at().seconds());
  EXPECT_EQ(plain.version_at().nanos(), delta.version_at().nanos());
}

TEST(ParseCloudEventTest, UpdatedAtIgnoredOutsideDeltaEvents) {
  const v1::Event event = ParseCloud(
      CloudEvent("com.akeneo.pim.v1.product.updated", DeltaData(R"("2024-10-14T13:01:21Z")")));
  EXPECT_EQ(event.version_at().seconds(), kSeconds2024_02_22T17_31_00);
}

TEST(ParseCloudEventTest, ProductModelDelta) {
  const v1::Event event = ParseCloud(CloudEvent(
      "com.akeneo.pim.v1.product-model.updated.delta",
      R"({"product_model":{"code":"pm","updated_at":{"date":"2024-10-14 13:01:21.000000","timezone":"UTC"},"changes":{}}})"));
  EXPECT_EQ(event.type(), "product_model.updated.delta");
  EXPECT_EQ(event.resource_id(), "pm");
  EXPECT_EQ(event.version_at().seconds(), kSeconds2024_02_22T17_31_00);
}

TEST(ParseCloudEventTest, SubjectIsTheSubscriptionAndSourceIsNotAUrl) {
  const v1::Event event =
      ParseCloud(CloudEvent("com.akeneo.pim.v1.product.updated", R"({"product":{"uuid":"p-1"}})"));
  EXPECT_EQ(event.subject(), "srnt-whatever");
  EXPECT_EQ(event.pim_source(), "pim");
  const v1::Event without =
      ParseCloud(R"({"id":"i","type":"com.akeneo.pim.v1.product.created","data":{}})");
  EXPECT_TRUE(without.subject().empty());
  ExpectInvalid(ParseCloudEvent(R"({"id":"i","type":"t","subject":7,"data":{}})").status(),
                "subject: not a string");
}

TEST(ParseCloudEventTest, ProductModel) {
  const v1::Event event =
      ParseCloud(CloudEvent("com.akeneo.pim.v1.product-model.updated",
                            R"({"product_model":{"code":"a-product-model-code"}})"));
  EXPECT_EQ(event.original_type(), "com.akeneo.pim.v1.product-model.updated");
  EXPECT_EQ(event.type(), "product_model.updated");
  EXPECT_EQ(event.kind(), "product_model");
  EXPECT_EQ(event.resource_id(), "a-product-model-code");
  EXPECT_TRUE(event.author().empty());

  // The docs' field table names `data.product.code` for model events: accepted too.
  const v1::Event per_table = ParseCloud(
      CloudEvent("com.akeneo.pim.v1.product-model.created", R"({"product":{"code":"m2"}})"));
  EXPECT_EQ(per_table.resource_id(), "m2");
}

TEST(ParseCloudEventTest, CompositeCodes) {
  struct Case {
    std::string_view type;
    std::string_view data;
    std::string_view resource_id;
  };
  const Case cases[] = {
      {"com.akeneo.pim.v1.asset.created",
       R"({"asset":{"asset_family":{"code":"family1"},"code":"asset1"}})", "family1/asset1"},
      {"com.akeneo.pim.v1.attribute-option.deleted",
       R"({"attribute_option":{"code":"red","attribute":{"code":"color"}}})", "color/red"},
      {"com.akeneo.pim.v1.reference-entity-record.updated",
       R"({"reference_entity_record":{"code":"Addadas","reference_entity":{"code":"brands"}}})",
       "brands/Addadas"},
      // Without its parent a code is ambiguous: no id rather than a colliding one.
      {"com.akeneo.pim.v1.asset.deleted", R"({"asset":{"code":"asset1"}})", ""},
      {"com.akeneo.pim.v1.attribute-option.updated",
       R"({"attribute_option":{"code":"red","attribute":"color"}})", ""},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.type);
    EXPECT_EQ(ParseCloud(CloudEvent(c.type, c.data)).resource_id(), c.resource_id);
  }
}

TEST(ParseCloudEventTest, CodeResources) {
  struct Case {
    std::string_view type;
    std::string_view data;
    std::string_view kind;
    std::string_view resource_id;
  };
  const Case cases[] = {
      {"com.akeneo.pim.v1.attribute.created", R"({"attribute":{"code":"an-attribute-code"}})",
       "attribute", "an-attribute-code"},
      {"com.akeneo.pim.v1.attribute-group.deleted",
       R"({"attribute_group":{"code":"an_attribute_group_code"}})", "attribute_group",
       "an_attribute_group_code"},
      {"com.akeneo.pim.v1.category.updated", R"({"category":{"code":"category-1"}})", "category",
       "category-1"},
      {"com.akeneo.pim.v1.family.deleted", R"({"family":{"code":"a_family_code"}})", "family",
       "a_family_code"},
      {"com.akeneo.pim.v1.app.deleted", R"({"app":{"client_id":"test_client_id"}})", "app",
       "test_client_id"},
      {"com.akeneo.pim.v1.connection.deleted",
       R"({"connection":{"client_id":"connection-client-id"}})", "connection",
       "connection-client-id"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.type);
    const v1::Event event = ParseCloud(CloudEvent(c.type, c.data));
    EXPECT_EQ(event.kind(), c.kind);
    EXPECT_EQ(event.resource_id(), c.resource_id);
  }
}

TEST(ParseCloudEventTest, JobExecutionId) {
  const v1::Event event = ParseCloud(CloudEvent(
      "com.akeneo.pim.v1.job.mass-edit.status-changed",
      R"({"job":{"execution_id":1234,"code":"update_product_value","status":"COMPLETED","type":"mass_edit"},)"
      R"("author":{"identifier":"julia","type":"user"}})"));
  EXPECT_EQ(event.type(), "job.mass_edit.status_changed");
  EXPECT_EQ(event.kind(), "job");
  EXPECT_EQ(event.resource_id(), "1234");
  EXPECT_EQ(Field(Field(event.data(), "job").struct_value(), "execution_id").number_value(),
            1234.0);

  EXPECT_EQ(ParseCloud(CloudEvent("com.akeneo.pim.v1.job.export.status-changed",
                                  R"({"job":{"execution_id":"77","code":"csv_export"}})"))
                .resource_id(),
            "77");
  // Without an execution id the event names no resource: the job's `code` is its profile,
  // shared by every execution, whose events must not be ordered (or found stale) against each
  // other.
  EXPECT_EQ(ParseCloud(CloudEvent("com.akeneo.pim.v1.job.import.status-changed",
                                  R"({"job":{"code":"csv_import"}})"))
                .resource_id(),
            "");
}

TEST(ParseCloudEventTest, WorkflowTask) {
  const v1::Event event = ParseCloud(CloudEvent(
      "com.akeneo.pim.v1.workflow.task.created",
      R"({"task":{"uuid":"task-uuid"},"workflow":{"uuid":"wf-uuid"},"step":{"uuid":"step-uuid"},)"
      R"("product":{"uuid":"p-uuid"}})"));
  EXPECT_EQ(event.type(), "workflow.task.created");
  EXPECT_EQ(event.kind(), "workflow");
  EXPECT_EQ(event.resource_id(), "task-uuid");
}

TEST(ParseCloudEventTest, BecameCompleteWithoutAuthor) {
  const v1::Event event = ParseCloud(CloudEvent(
      "com.akeneo.pim.v1.product.became-complete",
      R"({"product":{"uuid":"p-2","complete_on":[{"channel":"ecommerce","locale":"en_US"}]}})"));
  EXPECT_EQ(event.type(), "product.became_complete");
  EXPECT_EQ(event.kind(), "product");
  EXPECT_EQ(event.resource_id(), "p-2");
  EXPECT_TRUE(event.author().empty());
  EXPECT_TRUE(event.author_type().empty());
}

// ---------------------------------------------------------------------------------------------
// Every event type of Akeneo's catalogue, with the catalogue's own example payload
// (tests/data/event_platform/README.md says where each comes from). The expected values are read
// off the documentation by hand, not computed from the payload.

constexpr std::string_view kPayloadDir = PIMGATE_SOURCE_DIR "/tests/data/event_platform/";

constexpr std::string_view kId2024_02 = "018e32f9-dfe4-760e-a273-5da1c089dfdb";
constexpr std::string_view kId2024_06_10 = "b6f4add4-f3d1-4502-8cf0-0f228e054ce5";
constexpr std::string_view kId2024_06_13 = "6e523497-8231-4892-8f9f-895378b4d045";
constexpr std::string_view kSubscription = "019256aa-7f77-7f58-bc8c-770f7e369c5b";
constexpr std::int64_t kSeconds2024_06_10T17_31_00 = 1718040660;
constexpr std::int64_t kSeconds2024_06_13T10_17_00 = 1718273820;
constexpr std::string_view kUser1 = "b238e9f7-fcec-45bd-9431-d43cd624b244";
constexpr std::string_view kUser2 = "401ad939-cd20-4343-8b61-3348a53feb4f";
constexpr std::string_view kProductUuid = "6a9f8486-2c36-4680-b87f-6f5f8f01b6cf";

struct DocumentedPayload {
  std::string_view upstream;  // the type, and the file's name without `.json`
  std::string_view type;      // canonical
  std::string_view kind;
  std::string_view resource_id;
  std::string_view id;
  std::string_view subject;
  std::int64_t time;  // seconds of the CloudEvent `time`, which is also the version
  std::string_view author;
  std::string_view author_type;
  // One more value the payload carries in `data`, by dotted path (list elements by index), as
  // text: what reaches a plugin is the payload itself.
  std::string_view data_path;
  std::string_view data_value;
};

void PrintTo(const DocumentedPayload& c, std::ostream* os) { *os << c.upstream; }

#define PIM_V1 "com.akeneo.pim.v1."

constexpr DocumentedPayload kDocumentedPayloads[] = {
    {PIM_V1 "app.deleted", "app.deleted", "app", "test_client_id", kId2024_02, kSubscription,
     kSeconds2024_02_22T17_31_00, kUser1, "user", "app.client_id", "test_client_id"},
    {PIM_V1 "asset.created", "asset.created", "asset", "family1/asset1", kId2024_02, kSubscription,
     kSeconds2024_02_22T17_31_00, kUser2, "user", "asset.asset_family.code", "family1"},
    {PIM_V1 "asset.updated", "asset.updated", "asset", "family1/asset1", kId2024_02, kSubscription,
     kSeconds2024_02_22T17_31_00, kUser1, "user", "asset.code", "asset1"},
    {PIM_V1 "asset.deleted", "asset.deleted", "asset", "family1/asset1", kId2024_02, kSubscription,
     kSeconds2024_02_22T17_31_00, kUser2, "user", "asset.code", "asset1"},
    {PIM_V1 "attribute.created", "attribute.created", "attribute", "an-attribute-code",
     kId2024_06_10, kSubscription, kSeconds2024_06_10T17_31_00, kUser1, "user", "attribute.code",
     "an-attribute-code"},
    {PIM_V1 "attribute.updated", "attribute.updated", "attribute", "an-attribute-code",
     kId2024_06_10, kSubscription, kSeconds2024_06_10T17_31_00, kUser2, "user", "attribute.code",
     "an-attribute-code"},
    {PIM_V1 "attribute.deleted", "attribute.deleted", "attribute", "an-attribute-code",
     kId2024_06_10, kSubscription, kSeconds2024_06_10T17_31_00, kUser1, "user", "attribute.code",
     "an-attribute-code"},
    {PIM_V1 "attribute-group.created", "attribute_group.created", "attribute_group",
     "an-attribute-group-code", kId2024_06_10, kSubscription, kSeconds2024_06_10T17_31_00, "admin",
     "user", "attribute_group.code", "an-attribute-group-code"},
    {PIM_V1 "attribute-group.updated", "attribute_group.updated", "attribute_group",
     "an-attribute-group-code", kId2024_06_10, kSubscription, kSeconds2024_06_10T17_31_00, kUser1,
     "user", "attribute_group.code", "an-attribute-group-code"},
    {PIM_V1 "attribute-group.deleted", "attribute_group.deleted", "attribute_group",
     "an_attribute_group_code", kId2024_06_10, kSubscription, kSeconds2024_06_10T17_31_00,
     "the-connection-code", "api", "attribute_group.code", "an_attribute_group_code"},
    {PIM_V1 "attribute-option.created", "attribute_option.created", "attribute_option",
     "an_attribute_code/an_attribute_option_code", kId2024_06_13, kSubscription,
     kSeconds2024_06_13T10_17_00, "5_xxxk00ufn688cc0gok0wwwxxxccc0g84cwwgkg4s00ow4oxxx", "api",
     "attribute_option.attribute.code", "an_attribute_code"},
    {PIM_V1 "attribute-option.updated", "attribute_option.updated", "attribute_option",
     "an_attribute_code/an_attribute_option_code", kId2024_06_13, kSubscription,
     kSeconds2024_06_13T10_17_00, kUser1, "user", "attribute_option.code",
     "an_attribute_option_code"},
    {PIM_V1 "attribute-option.deleted", "attribute_option.deleted", "attribute_option",
     "an_attribute_code/an_attribute_option_code", kId2024_06_13, kSubscription,
     kSeconds2024_06_13T10_17_00, "system", "system", "attribute_option.code",
     "an_attribute_option_code"},
    {PIM_V1 "category.created", "category.created", "category", "category-1", kId2024_02,
     kSubscription, kSeconds2024_02_22T17_31_00, "the-app-client-id", "api", "category.code",
     "category-1"},
    {PIM_V1 "category.updated", "category.updated", "category", "category-1", kId2024_02,
     kSubscription, kSeconds2024_02_22T17_31_00, kUser1, "user", "category.code", "category-1"},
    {PIM_V1 "category.deleted", "category.deleted", "category", "category-1", kId2024_02,
     kSubscription, kSeconds2024_02_22T17_31_00, "the-app-client-id", "api", "category.code",
     "category-1"},
    {PIM_V1 "connection.deleted", "connection.deleted", "connection", "connection-client-id",
     kId2024_02, kSubscription, kSeconds2024_02_22T17_31_00, "the-connection-code", "api",
     "connection.client_id", "connection-client-id"},
    {PIM_V1 "product.created", "product.created", "product", kProductUuid, kId2024_02,
     kSubscription, kSeconds2024_02_22T17_31_00, kUser1, "user", "product.uuid", kProductUuid},
    {PIM_V1 "product.updated", "product.updated", "product", kProductUuid, kId2024_02,
     kSubscription, kSeconds2024_02_22T17_31_00, "admin", "user", "product.uuid", kProductUuid},
    // Versioned by `time`, not by its `updated_at` (2024-10-14, PHP's DateTime form), which
    // stays in `data` with the changes.
    {PIM_V1 "product.updated.delta", "product.updated.delta", "product", kProductUuid, kId2024_02,
     kSubscription, kSeconds2024_02_22T17_31_00, "julia", "user", "product.changes.family.new",
     "the_new_family_code"},
    {PIM_V1 "product.deleted", "product.deleted", "product", kProductUuid, kId2024_02,
     kSubscription, kSeconds2024_02_22T17_31_00, kUser1, "user", "product.uuid", kProductUuid},
    // The completeness examples carry no author, and an older subject.
    {PIM_V1 "product.became-complete", "product.became_complete", "product", kProductUuid,
     kId2024_02, "srnt-whatever", kSeconds2024_02_22T17_31_00, "", "",
     "product.complete_on.1.locale", "fr_FR"},
    {PIM_V1 "product.became-incomplete", "product.became_incomplete", "product", kProductUuid,
     kId2024_02, "srnt-whatever", kSeconds2024_02_22T17_31_00, "", "",
     "product.incomplete_on.0.scope", "ecommerce"},
    {PIM_V1 "product-model.created", "product_model.created", "product_model",
     "a-product-model-code", kId2024_06_10, kSubscription, kSeconds2024_06_10T17_31_00, kUser1,
     "user", "product_model.code", "a-product-model-code"},
    {PIM_V1 "product-model.updated", "product_model.updated", "product_model",
     "a-product-model-code", kId2024_06_10, kSubscription, kSeconds2024_06_10T17_31_00, kUser1,
     "user", "product_model.code", "a-product-model-code"},
    {PIM_V1 "product-model.updated.delta", "product_model.updated.delta", "product_model",
     "a_product_model_code", kId2024_02, kSubscription, kSeconds2024_02_22T17_31_00, "julia",
     "user", "product_model.changes.categories.added.1", "added_category_code_2"},
    {PIM_V1 "product-model.deleted", "product_model.deleted", "product_model",
     "a-product-model-code", kId2024_06_10, kSubscription, kSeconds2024_06_10T17_31_00, kUser1,
     "user", "product_model.code", "a-product-model-code"},
    {PIM_V1 "family.created", "family.created", "family", "a_family_code", kId2024_02,
     kSubscription, kSeconds2024_02_22T17_31_00, kUser1, "user", "family.code", "a_family_code"},
    {PIM_V1 "family.updated", "family.updated", "family", "a_family_code", kId2024_02,
     kSubscription, kSeconds2024_02_22T17_31_00, kUser1, "user", "family.code", "a_family_code"},
    {PIM_V1 "family.deleted", "family.deleted", "family", "a_family_code", kId2024_02,
     kSubscription, kSeconds2024_02_22T17_31_00, "2e7b105e-3528-4bf7-8e83-678ec2cde0f0", "api",
     "family.code", "a_family_code"},
    {PIM_V1 "reference-entity-record.created", "reference_entity_record.created",
     "reference_entity_record", "brands/Addadas", kId2024_06_13, kSubscription,
     kSeconds2024_06_13T10_17_00, "4546f4b1-3e3c-4494-bbd4-aae185115a6a", "user",
     "reference_entity_record.reference_entity.code", "brands"},
    {PIM_V1 "reference-entity-record.updated", "reference_entity_record.updated",
     "reference_entity_record", "brands/Addadas", kId2024_06_13, kSubscription,
     kSeconds2024_06_13T10_17_00, "system", "system", "reference_entity_record.code", "Addadas"},
    {PIM_V1 "reference-entity-record.deleted", "reference_entity_record.deleted",
     "reference_entity_record", "brands/Addadas", kId2024_06_13, kSubscription,
     kSeconds2024_06_13T10_17_00, kUser1, "user", "reference_entity_record.code", "Addadas"},
    // A job's resource is its execution (a JSON number in the catalogue).
    {PIM_V1 "job.export.status-changed", "job.export.status_changed", "job", "233", kId2024_06_13,
     kSubscription, kSeconds2024_06_13T10_17_00, "julia", "user", "job.status", "starting"},
    {PIM_V1 "job.mass-edit.status-changed", "job.mass_edit.status_changed", "job", "233",
     kId2024_06_13, kSubscription, kSeconds2024_06_13T10_17_00, "julia", "user", "job.read", "10"},
    {PIM_V1 "job.import.status-changed", "job.import.status_changed", "job", "11", kId2024_06_13,
     kSubscription, kSeconds2024_06_13T10_17_00, "julia", "user", "job.total_rows_processed", "10"},
    // A workflow event's resource is its task; the product it is about stays in `data`.
    {PIM_V1 "workflow.task.created", "workflow.task.created", "workflow",
     "0077faa5-7f20-4b47-9f46-f05f4140e816", kId2024_02, kSubscription, kSeconds2024_02_22T17_31_00,
     "system", "system", "product.uuid", "7108ee60-a1ea-4fe1-baca-b39909e23d24"},
    {PIM_V1 "workflow.task.completed", "workflow.task.completed", "workflow",
     "0077faa5-7f20-4b47-9f46-f05f4140e816", kId2024_02, kSubscription, kSeconds2024_02_22T17_31_00,
     kUser1, "user", "workflow.uuid", "6f37476a-04c2-46c0-b6d0-e18316959068"},
};

#undef PIM_V1

std::string ReadPayload(std::string_view upstream) {
  const std::string path = Cat(kPayloadDir, upstream, ".json");
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot read " << path;
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// The value at a dotted path of `data`, as text (strings as they are, numbers in decimal,
// booleans as true/false); "<absent>" when the path leads nowhere.
std::string DataText(const Struct& data, std::string_view path) {
  const Value* value = nullptr;
  const Struct* object = &data;
  const google::protobuf::ListValue* list = nullptr;
  for (std::string_view rest = path; !rest.empty();) {
    const std::size_t dot = rest.find('.');
    const std::string segment(rest.substr(0, dot));
    rest = dot == std::string_view::npos ? std::string_view() : rest.substr(dot + 1);
    if (object != nullptr) {
      auto it = object->fields().find(segment);
      if (it == object->fields().end()) return "<absent>";
      value = &it->second;
    } else if (list != nullptr) {
      const int index = std::stoi(segment);
      if (index < 0 || index >= list->values_size()) return "<absent>";
      value = &list->values(index);
    } else {
      return "<absent>";
    }
    object = value->has_struct_value() ? &value->struct_value() : nullptr;
    list = value->has_list_value() ? &value->list_value() : nullptr;
  }
  if (value == nullptr) return "<absent>";
  if (value->has_string_value()) return value->string_value();
  if (value->has_number_value()) return absl::StrCat(value->number_value());
  if (value->has_bool_value()) return value->bool_value() ? "true" : "false";
  return "<not a scalar>";
}

class EventPlatformPayloadTest : public testing::TestWithParam<DocumentedPayload> {};

// Through ParseEventPlatformBody, the gateway's entry point for Event Platform requests.
TEST_P(EventPlatformPayloadTest, ParsesTheDocumentedExample) {
  const DocumentedPayload& c = GetParam();
  const std::string body = ReadPayload(c.upstream);
  ASSERT_FALSE(body.empty());
  absl::StatusOr<EventPlatformPayload> payload = ParseEventPlatformBody(body);
  ASSERT_TRUE(payload.ok()) << payload.status();
  const v1::Event* event = std::get_if<v1::Event>(&*payload);
  ASSERT_NE(event, nullptr) << "parsed as a notification webhook";
  EXPECT_EQ(event->original_type(), c.upstream);
  EXPECT_EQ(event->type(), c.type);
  EXPECT_EQ(event->kind(), c.kind);
  EXPECT_EQ(event->resource_id(), c.resource_id);
  EXPECT_EQ(event->id(), c.id);
  EXPECT_EQ(event->subject(), c.subject);
  EXPECT_EQ(event->pim_source(), "pim");
  EXPECT_EQ(event->origin(), v1::ORIGIN_EVENT_PLATFORM);
  EXPECT_EQ(event->occurred_at().seconds(), c.time);
  EXPECT_EQ(event->occurred_at().nanos(), 0);
  EXPECT_EQ(event->version_at().seconds(), c.time);
  EXPECT_EQ(event->version_at().nanos(), 0);
  EXPECT_EQ(event->author(), c.author);
  EXPECT_EQ(event->author_type(), c.author_type);
  EXPECT_EQ(DataText(event->data(), c.data_path), c.data_value) << c.data_path;
  // ParseCloudEvent, the CloudEvent-only entry point, agrees.
  absl::StatusOr<v1::Event> direct = ParseCloudEvent(body);
  ASSERT_TRUE(direct.ok()) << direct.status();
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(*direct, *event))
      << direct->DebugString() << "\nvs\n"
      << event->DebugString();
}

INSTANTIATE_TEST_SUITE_P(AvailableEvents, EventPlatformPayloadTest,
                         testing::ValuesIn(kDocumentedPayloads),
                         [](const testing::TestParamInfo<DocumentedPayload>& info) {
                           std::string name(info.param.upstream.substr(
                               std::string_view("com.akeneo.pim.v1.").size()));
                           for (char& ch : name) {
                             if (!absl::ascii_isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           }
                           return name;
                         });

// The cases above, the payload files and the catalogue of events/event_type.h name the same
// types: a type added to one of them without the others fails here.
TEST(EventPlatformPayloadTest, EveryCatalogueTypeAndEveryPayloadFileHasACase) {
  std::set<std::string> cases;
  for (const DocumentedPayload& c : kDocumentedPayloads) {
    EXPECT_TRUE(cases.insert(std::string(c.upstream)).second) << "two cases for " << c.upstream;
  }
  std::set<std::string> catalogue;
  for (const EventPlatformType& type : DocumentedEventPlatformTypes()) {
    catalogue.insert(std::string(type.upstream));
  }
  std::set<std::string> files;
  for (const auto& entry : std::filesystem::directory_iterator(std::string(kPayloadDir))) {
    const std::string name = entry.path().filename().string();
    if (name.ends_with(".json")) files.insert(name.substr(0, name.size() - 5));
  }
  EXPECT_EQ(cases, catalogue);
  EXPECT_EQ(files, catalogue);
}

TEST(ParseCloudEventTest, UnknownTypeAccepted) {
  const v1::Event event = ParseCloud(
      CloudEvent("com.akeneo.pim.v1.channel.created", R"({"channel":{"code":"ecommerce"}})"));
  EXPECT_EQ(event.type(), "channel.created");
  EXPECT_EQ(event.kind(), "channel");
  EXPECT_EQ(event.resource_id(), "ecommerce");

  const v1::Event opaque = ParseCloud(CloudEvent("org.example.something-else", R"({"x":[1]})"));
  EXPECT_EQ(opaque.type(), "org.example.something_else");
  EXPECT_EQ(opaque.kind(), "org");
  EXPECT_TRUE(opaque.resource_id().empty());
}

TEST(ParseCloudEventTest, MinimalEnvelope) {
  const v1::Event event =
      ParseCloud(R"({"id":"i","type":"com.akeneo.pim.v1.product.created","data":{}})");
  EXPECT_EQ(event.id(), "i");
  EXPECT_FALSE(event.has_occurred_at());
  EXPECT_FALSE(event.has_version_at());
  EXPECT_TRUE(event.pim_source().empty());
  EXPECT_TRUE(event.resource_id().empty());

  const v1::Event null_time =
      ParseCloud(R"({"id":"i","type":"t.x","time":null,"specversion":"1.1","data":{}})");
  EXPECT_FALSE(null_time.has_occurred_at());
  EXPECT_FALSE(null_time.has_version_at());
}

TEST(ParseCloudEventTest, EnvelopeErrors) {
  ExpectInvalid(ParseCloudEvent("").status(), "body is empty");
  ExpectInvalid(ParseCloudEvent("{").status(), "body is not valid JSON");
  ExpectInvalid(ParseCloudEvent("[]").status(), "body is not a JSON object");
  ExpectInvalid(ParseCloudEvent("null").status(), "body is not a JSON object");
  ExpectInvalid(ParseCloudEvent(R"({"type":"t","data":{}})").status(),
                "id: missing or not a string");
  ExpectInvalid(ParseCloudEvent(R"({"id":5,"type":"t","data":{}})").status(),
                "id: missing or not a string");
  ExpectInvalid(ParseCloudEvent(R"({"id":"","type":"t","data":{}})").status(), "id: empty");
  ExpectInvalid(ParseCloudEvent(R"({"id":"i","data":{}})").status(),
                "type: missing or not a string");
  ExpectInvalid(ParseCloudEvent(R"({"id":"i","type":"","data":{}})").status(), "type: empty");
  ExpectInvalid(ParseCloudEvent(R"({"id":"i","type":"t"})").status(),
                "data: missing or not an object");
  ExpectInvalid(ParseCloudEvent(R"({"id":"i","type":"t","data":"x"})").status(),
                "data: missing or not an object");
  ExpectInvalid(ParseCloudEvent(R"({"id":"i","type":"t","specversion":1.0,"data":{}})").status(),
                "specversion: not a string");
  ExpectInvalid(ParseCloudEvent(R"({"id":"i","type":"t","time":17,"data":{}})").status(),
                "time: not a string");
}

TEST(ParseCloudEventTest, InvalidTime) {
  for (std::string_view time : {"yesterday", "2024-02-22T17:31:00", "2024-02-30T17:31:00Z",
                                "2024-02-22T17:31:00+0100", ""}) {
    SCOPED_TRACE(time);
    const std::string body = Cat(R"({"id":"i","type":"t","time":")", time, R"(","data":{}})");
    ExpectInvalid(ParseCloudEvent(body).status(), "time: not an RFC 3339 timestamp");
  }
}

TEST(ParseCloudEventTest, InvalidUtf8AndDeepNestingFailCleanly) {
  ExpectInvalid(ParseCloudEvent("{\"id\":\"\xff\",\"type\":\"t\",\"data\":{}}").status(),
                "not valid UTF-8");
  constexpr int kLevels = 100000;
  std::string body = R"({"id":"i","type":"t","data":{"x":)";
  body.append(kLevels, '[');
  body.append(kLevels, ']');
  body += "}}";
  ExpectInvalid(ParseCloudEvent(body).status(), "nested deeper than");

  const std::string too_deep = CloudEvent("com.akeneo.pim.v1.product.updated",
                                          Cat(R"({"product":)", NestedObjects(kMaxDataDepth), "}"));
  ExpectInvalid(ParseCloudEvent(too_deep).status(),
                absl::StrCat("data: nested deeper than ", kMaxDataDepth, " levels"));
}

// ---------------------------------------------------------------------------------------------
// Event Platform notification webhooks

// Akeneo's example (content/event-platform/notification-webhooks.md in akeneo/pim-api-docs), with
// the notification type left open. Sent to the subscriber's notification_webhook_url, signed
// like events (X-AKENEO-SIGNATURE-PRIMARY over the raw body, with notification_webhook_secret),
// without a CloudEvent envelope or an id.
std::string Notification(std::string_view type,
                         std::string_view timestamp = "2026-04-29T12:34:56Z") {
  return Cat(R"({
  "notification_type": ")",
             type, R"(",
  "timestamp": ")",
             timestamp, R"(",
  "subscription_id": "018e1ec5-29da-78ad-aae6-92065b9ca2a6",
  "subscriber_id": "018e1ec5-29da-78ad-aae6-92065b9ca2a5",
  "destination": "https://my-app.example.com/webhook",
  "events": [
    "com.akeneo.pim.v1.product.created",
    "com.akeneo.pim.v1.product.updated"
  ],
  "reason": "Success rate dropped below 90%",
  "subject": "https://example.cloud.akeneo.com/"
})");
}

PlatformNotification ParseNotificationOk(std::string_view body) {
  absl::StatusOr<EventPlatformPayload> payload = ParseEventPlatformBody(body);
  EXPECT_TRUE(payload.ok()) << payload.status();
  if (!payload.ok()) return {};
  EXPECT_TRUE(std::holds_alternative<PlatformNotification>(*payload));
  if (!std::holds_alternative<PlatformNotification>(*payload)) return {};
  return std::get<PlatformNotification>(*payload);
}

absl::Status ParsePlatformError(std::string_view body) {
  return ParseEventPlatformBody(body).status();
}

TEST(ParseNotificationTest, ReferenceExample) {
  const PlatformNotification n = ParseNotificationOk(Notification("subscription.suspended.system"));
  EXPECT_EQ(n.notification_type, "subscription.suspended.system");
  EXPECT_EQ(n.subscription_id, "018e1ec5-29da-78ad-aae6-92065b9ca2a6");
  EXPECT_EQ(n.subscriber_id, "018e1ec5-29da-78ad-aae6-92065b9ca2a5");
  EXPECT_EQ(n.destination, "https://my-app.example.com/webhook");
  EXPECT_EQ(n.reason, "Success rate dropped below 90%");
  EXPECT_EQ(n.timestamp.seconds(), kSeconds2026_04_29T12_34_56);

  // Stored as its own kind, ordered per subscription by its timestamp.
  const v1::Event& event = n.event;
  EXPECT_EQ(event.kind(), "subscription");
  EXPECT_EQ(event.type(), "subscription.suspended.system");
  EXPECT_EQ(event.original_type(), "subscription.suspended.system");
  EXPECT_EQ(event.resource_id(), "018e1ec5-29da-78ad-aae6-92065b9ca2a6");
  EXPECT_EQ(event.subject(), "018e1ec5-29da-78ad-aae6-92065b9ca2a6");
  EXPECT_EQ(event.pim_source(), "https://example.cloud.akeneo.com/");
  EXPECT_EQ(event.origin(), v1::ORIGIN_EVENT_PLATFORM);
  EXPECT_EQ(event.occurred_at().seconds(), kSeconds2026_04_29T12_34_56);
  EXPECT_EQ(event.version_at().seconds(), kSeconds2026_04_29T12_34_56);
  EXPECT_EQ(event.id(),
            "notification:018e1ec5-29da-78ad-aae6-92065b9ca2a6:subscription.suspended.system:"
            "2026-04-29T12:34:56Z");
  EXPECT_TRUE(event.source().empty());  // the gateway's to set
  // The whole body is the event's data.
  EXPECT_EQ(Field(event.data(), "reason").string_value(), "Success rate dropped below 90%");
  EXPECT_EQ(Field(event.data(), "events").list_value().values_size(), 2);
  EXPECT_EQ(Field(event.data(), "destination").string_value(),
            "https://my-app.example.com/webhook");
}

TEST(ParseNotificationTest, EveryDocumentedTypeAndUnknownOnes) {
  for (std::string_view type :
       {"subscription.suspended.system", "subscription.suspended.user", "subscription.revoked",
        "subscription.resumed", "subscription.something-new"}) {
    SCOPED_TRACE(type);
    const PlatformNotification n = ParseNotificationOk(Notification(type));
    EXPECT_EQ(n.event.type(), type);
    EXPECT_EQ(n.event.kind(), "subscription");
  }
}

TEST(ParseNotificationTest, DerivedIdIsDeterministic) {
  const std::string body = Notification("subscription.resumed");
  EXPECT_EQ(ParseNotificationOk(body).event.id(), ParseNotificationOk(body).event.id());
  // The same instant written another way is the same notification.
  EXPECT_EQ(ParseNotificationOk(Notification("subscription.resumed", "2026-04-29T14:34:56+02:00"))
                .event.id(),
            ParseNotificationOk(body).event.id());
  // Another time or another transition is another notification.
  EXPECT_NE(
      ParseNotificationOk(Notification("subscription.resumed", "2026-04-29T12:34:57Z")).event.id(),
      ParseNotificationOk(body).event.id());
  EXPECT_NE(ParseNotificationOk(Notification("subscription.revoked")).event.id(),
            ParseNotificationOk(body).event.id());
}

TEST(ParseNotificationTest, OptionalMembersMayBeAbsentOrNull) {
  const PlatformNotification n = ParseNotificationOk(
      R"({"notification_type":"subscription.resumed","timestamp":"2026-04-29T12:34:56.5Z",)"
      R"("subscription_id":"s-1","reason":null})");
  EXPECT_EQ(n.subscription_id, "s-1");
  EXPECT_TRUE(n.reason.empty());
  EXPECT_TRUE(n.destination.empty());
  EXPECT_TRUE(n.subscriber_id.empty());
  EXPECT_TRUE(n.event.pim_source().empty());
  EXPECT_EQ(n.timestamp.nanos(), 500000000);
}

TEST(ParseNotificationTest, CloudEventsAreStillCloudEvents) {
  absl::StatusOr<EventPlatformPayload> event = ParseEventPlatformBody(
      CloudEvent("com.akeneo.pim.v1.product.updated", R"({"product":{"uuid":"p-1"}})"));
  ASSERT_TRUE(event.ok()) << event.status();
  ASSERT_TRUE(std::holds_alternative<v1::Event>(*event));
  EXPECT_EQ(std::get<v1::Event>(*event).resource_id(), "p-1");
  // A member named notification_type inside a CloudEvent does not make it a notification.
  absl::StatusOr<EventPlatformPayload> enveloped = ParseEventPlatformBody(
      R"({"specversion":"1.0","id":"i","type":"t","notification_type":"x","data":{}})");
  ASSERT_TRUE(enveloped.ok()) << enveloped.status();
  EXPECT_TRUE(std::holds_alternative<v1::Event>(*enveloped));
  // Neither shape: the CloudEvent errors name what is missing.
  ExpectInvalid(ParsePlatformError(R"({"hello":"world"})"), "id: missing or not a string");
}

TEST(ParseNotificationTest, MalformedNotificationsNameTheField) {
  const std::string ts = R"("timestamp":"2026-04-29T12:34:56Z")";
  const std::string sub = R"("subscription_id":"s-1")";
  struct Case {
    std::string body;
    std::string_view message;
  };
  const Case cases[] = {
      {Cat(R"({"notification_type":null,)", ts, ",", sub, "}"),
       "notification_type: missing or not a string"},
      {Cat(R"({"notification_type":3,)", ts, ",", sub, "}"),
       "notification_type: missing or not a string"},
      {Cat(R"({"notification_type":"",)", ts, ",", sub, "}"), "notification_type: empty"},
      {Cat(R"({"notification_type":"subscription.resumed",)", ts, "}"),
       "subscription_id: missing or not a string"},
      {Cat(R"({"notification_type":"subscription.resumed",)", ts, R"(,"subscription_id":""})"),
       "subscription_id: empty"},
      {Cat(R"({"notification_type":"subscription.resumed",)", sub, "}"),
       "timestamp: missing or not a string"},
      {Cat(R"({"notification_type":"subscription.resumed","timestamp":"2026-04-29 12:34",)", sub,
           "}"),
       "timestamp: not an RFC 3339 timestamp: \"2026-04-29 12:34\""},
      {Cat(R"({"notification_type":"subscription.resumed",)", ts, ",", sub,
           R"(,"reason":{"x":1}})"),
       "reason: not a string"},
      {Cat(R"({"notification_type":"subscription.resumed",)", ts, ",", sub, R"(,"destination":5})"),
       "destination: not a string"},
      {Cat(R"({"notification_type":"subscription.resumed",)", ts, ",", sub,
           R"(,"events":"com.akeneo.pim.v1.product.updated"})"),
       "events: not an array"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.body);
    ExpectInvalid(ParsePlatformError(c.body), c.message);
  }
  ExpectInvalid(ParsePlatformError("[]"), "body is not a JSON object");
  ExpectInvalid(ParsePlatformError("{\"notification_type\":"), "body is not valid JSON");
}

// ---------------------------------------------------------------------------------------------
// Timestamps

TEST(ParseTimestampTest, Accepts) {
  struct Case {
    std::string_view text;
    std::int64_t seconds;
    int nanos;
  };
  const Case cases[] = {
      {"2021-03-12T09:46:08+00:00", kSeconds2021_03_12T09_46_08, 0},
      {"2021-03-12T09:46:08Z", kSeconds2021_03_12T09_46_08, 0},
      {"2021-03-12t09:46:08z", kSeconds2021_03_12T09_46_08, 0},
      {"2021-03-12 09:46:08Z", kSeconds2021_03_12T09_46_08, 0},
      {"2021-03-12T10:46:08+01:00", kSeconds2021_03_12T09_46_08, 0},
      {"2021-03-12T04:16:08-05:30", kSeconds2021_03_12T09_46_08, 0},
      {"2021-03-12T09:46:08-00:00", kSeconds2021_03_12T09_46_08, 0},
      {"2024-03-07T15:16:37.123Z", kSeconds2024_03_07T15_16_37, 123000000},
      {"2024-03-07T15:16:37.1Z", kSeconds2024_03_07T15_16_37, 100000000},
      {"2024-03-07T15:16:37.000000001Z", kSeconds2024_03_07T15_16_37, 1},
      {"2024-03-07T15:16:37.999999999+00:00", kSeconds2024_03_07T15_16_37, 999999999},
      {"1970-01-01T00:00:00Z", 0, 0},
      {"1969-12-31T23:59:59.5Z", -1, 500000000},
      {"2024-02-29T00:00:00Z", 1709164800, 0},
      {"2000-02-29T12:00:00Z", 951825600, 0},
      {"0001-01-01T00:00:00Z", -62135596800, 0},
      {"9999-12-31T23:59:59.999999999Z", 253402300799, 999999999},
      {"2021-03-13T09:45:08+23:59", kSeconds2021_03_12T09_46_08, 0},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.text);
    absl::StatusOr<Timestamp> ts = ParseTimestamp(c.text);
    ASSERT_TRUE(ts.ok()) << ts.status();
    EXPECT_EQ(ts->seconds(), c.seconds);
    EXPECT_EQ(ts->nanos(), c.nanos);
  }
}

TEST(ParseTimestampTest, Rejects) {
  for (std::string_view text : {
           "",
           "garbage",
           "2021-03-12",
           "2021-03-12T09:46Z",
           "2021-03-12T09:46:08",              // no zone
           "2021-03-12T09:46:08 +00:00",       // space before zone
           "2021-03-12T09:46:08+0000",         // offset without colon
           "2021-03-12T09:46:08+00",           // offset without minutes
           "2021-03-12T09:46:08+1:00",         //
           "2021-03-12T09:46:08+24:00",        // offset hours out of range
           "2021-03-12T09:46:08+00:60",        // offset minutes out of range
           "2021-03-12T09:46:08.Z",            // empty fraction
           "2021-03-12T09:46:08.1234567890Z",  // 10 fraction digits
           "2021-03-12T09:46:08,5Z",           // comma fraction
           "2021-03-12T09:46:08Z ",            // trailing space
           " 2021-03-12T09:46:08Z",            // leading space
           "2021-03-12T09:46:08ZZ",            //
           "2021-03-12X09:46:08Z",             // bad separator
           "2021-3-12T09:46:08Z",              // short month
           "21-03-12T09:46:08Z",               // short year
           "+2021-03-12T09:46:08Z",            //
           "2021-00-12T09:46:08Z",             // month 0
           "2021-13-12T09:46:08Z",             // month 13
           "2021-03-00T09:46:08Z",             // day 0
           "2021-04-31T09:46:08Z",             // April 31
           "2023-02-29T09:46:08Z",             // not a leap year
           "1900-02-29T09:46:08Z",             // not a leap year (century)
           "2021-03-12T24:00:00Z",             // hour 24
           "2021-03-12T09:60:08Z",             // minute 60
           "2016-12-31T23:59:60Z",             // leap second
           "2021-03-12T09:46:0aZ",             //
           "0001-01-01T00:00:00+00:01",        // before 0001-01-01T00:00:00Z
           "9999-12-31T23:59:59-00:01",        // after 9999-12-31T23:59:59Z
           "0000-06-01T00:00:00Z",             // year 0
       }) {
    SCOPED_TRACE(text);
    ExpectInvalid(ParseTimestamp(text).status(), "not an RFC 3339 timestamp");
  }
  // Embedded NUL.
  ExpectInvalid(ParseTimestamp(std::string_view("2021-03-12T09:46:08Z\0", 21)).status(),
                "not an RFC 3339 timestamp");
}

// ---------------------------------------------------------------------------------------------
// Data serialized without a Struct (the gateway's path to the log)

// The event the log stores from an event parsed with serialized data: its other fields, then the
// data as field `data` (EventLog::Prepare), read back as a reader of the log does.
v1::Event AsStored(const v1::Event& header, const std::string& data) {
  std::string bytes = header.SerializeAsString();
  {
    google::protobuf::io::StringOutputStream stream(&bytes);
    google::protobuf::io::CodedOutputStream out(&stream);
    google::protobuf::internal::WireFormatLite::WriteString(v1::Event::kDataFieldNumber, data,
                                                            &out);
  }
  v1::Event stored;
  EXPECT_TRUE(stored.ParseFromString(bytes)) << "serialized data does not parse";
  return stored;
}

// Parses `body` into Structs and serialized, and checks that both give the same answer: the same
// error, or the same rejected elements and events equal field by field once the serialized data
// is read back, of the same size. Returns how many events were compared.
std::size_t ExpectLegacyFormsAgree(std::string_view body) {
  const absl::StatusOr<ParsedPayload> built = ParseLegacyBatch(body, kDefaultLimits);
  std::vector<std::string> data;
  const absl::StatusOr<ParsedPayload> serialized = ParseLegacyBatch(body, kDefaultLimits, &data);
  EXPECT_EQ(built.status(), serialized.status());
  if (!built.ok() || !serialized.ok()) return 0;
  EXPECT_EQ(serialized->events.size(), built->events.size());
  EXPECT_EQ(data.size(), serialized->events.size());
  EXPECT_EQ(serialized->rejected.size(), built->rejected.size());
  for (std::size_t i = 0; i < built->rejected.size() && i < serialized->rejected.size(); ++i) {
    EXPECT_EQ(serialized->rejected[i].index, built->rejected[i].index);
    EXPECT_EQ(serialized->rejected[i].reason, built->rejected[i].reason);
    EXPECT_EQ(serialized->rejected[i].raw, built->rejected[i].raw);
  }
  std::size_t compared = 0;
  for (std::size_t i = 0; i < built->events.size() && i < data.size(); ++i) {
    EXPECT_FALSE(serialized->events[i].has_data());
    const v1::Event stored = AsStored(serialized->events[i], data[i]);
    EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(stored, built->events[i]))
        << "serialized:\n"
        << stored.DebugString() << "\nbuilt:\n"
        << built->events[i].DebugString();
    EXPECT_EQ(data[i].size(), built->events[i].data().ByteSizeLong());
    ++compared;
  }
  return compared;
}

// The same for an Event Platform body (a CloudEvent or a notification webhook).
std::size_t ExpectPlatformFormsAgree(std::string_view body) {
  const absl::StatusOr<EventPlatformPayload> built = ParseEventPlatformBody(body);
  std::string data;
  const absl::StatusOr<EventPlatformPayload> serialized = ParseEventPlatformBody(body, &data);
  EXPECT_EQ(built.status(), serialized.status());
  if (!built.ok() || !serialized.ok()) return 0;
  EXPECT_EQ(built->index(), serialized->index());
  if (built->index() != serialized->index()) return 0;
  const auto event_of = [](const EventPlatformPayload& payload) -> const v1::Event& {
    if (const auto* notification = std::get_if<PlatformNotification>(&payload)) {
      return notification->event;
    }
    return std::get<v1::Event>(payload);
  };
  EXPECT_FALSE(event_of(*serialized).has_data());
  const v1::Event stored = AsStored(event_of(*serialized), data);
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(stored, event_of(*built)))
      << "serialized:\n"
      << stored.DebugString() << "\nbuilt:\n"
      << event_of(*built).DebugString();
  EXPECT_EQ(data.size(), event_of(*built).data().ByteSizeLong());
  return 1;
}

// JSON values whose Struct form has a corner: numbers at the limits of int64, uint64 and double,
// unicode and escapes (in keys too), empty containers, nesting, duplicate keys at every level
// (also in objects large enough for the hashed key set), strings whose length takes a one-, two-
// and three-byte varint, and the depth limit (the last three: one level within, two beyond).
std::vector<std::string> CornerResources() {
  std::string many_keys = R"({"uuid":"many")";
  for (int i = 0; i < 40; ++i) absl::StrAppend(&many_keys, R"(,"k)", i, R"(":)", i);
  many_keys += R"(,"k7":"duplicate","k39":{"ignored":[1,2]},"k0":null})";
  return {
      R"({"uuid":"u","n":-3,"big":9007199254740993,"f":1.5e3,"u":18446744073709551615,)"
      R"("min":-9223372036854775808,"max":9223372036854775807,"tiny":5e-324,)"
      R"("huge":1.7976931348623157e308,"negative_zero":-0.0,"zero":0,"tenth":0.1,"e":-1E-7})",
      R"({"uuid":"u","name":"Caf\u00e9 \ud83d\ude00 \"q\" \\ \/ \b\f\n\r\t","k\u00e9y":"\u65e5\u672c",)"
      R"("nul":"a\u0000b","\u0000":1,"":"empty key","emoji\ud83d\ude00":"\u2603"})",
      R"({})",
      R"({"uuid":"u","object":{},"list":[],"lists":[[],[[]]],"objects":[{},{"a":{}}],"s":"",)"
      R"("t":true,"f":false,"n":null,"nulls":[null,null]})",
      R"({"uuid":"u","a":[1,[2,[3,{"b":[true,false,null,"x",1.5,{"c":[]}]}]]],)"
      R"("o":{"p":{"q":{"r":"s","list":[{"x":1},{"x":2,"x":3}]}}}})",
      Cat(R"({"uuid":"first","uuid":"second","x":{"k":1,"k":{"deep":2}},"y":[{"d":1,"d":2}],)",
          R"("z":"first","z":)", std::string(40, '['), std::string(40, ']'), "}"),
      many_keys,
      Cat(R"({"uuid":"u","s127":")", std::string(127, 'a'), R"(","s128":")", std::string(128, 'b'),
          R"(","s16384":")", std::string(16384, 'c'), R"("})"),
      NestedObjects(kMaxDataDepth - 1),
      NestedObjects(kMaxDataDepth),
      NestedObjects(kMaxDataDepth + 1),
  };
}

TEST(SerializedDataTest, LegacyEventsMatchTheirStructs) {
  std::size_t compared = ExpectLegacyFormsAgree(kLegacyExample);
  const std::string product_model =
      R"({"code":"m1","family_variant":"shoes_size","parent":null,"categories":["summer","men"],)"
      R"("values":{"name":[{"locale":"en_US","scope":null,"data":"Model"}],)"
      R"("price":[{"locale":null,"scope":null,"data":[{"amount":"12.50","currency":"EUR"}]}],)"
      R"("weight":[{"locale":null,"scope":null,"data":{"amount":1.25,"unit":"KILOGRAM"}}]},)"
      R"("associations":{"X_SELL":{"products":[],"product_models":["m2"],"groups":[]}},)"
      R"("created":"2021-03-12T09:00:00+00:00","updated":"2021-03-12T09:46:00+00:00"})";
  for (const auto& [action, resource] : std::vector<std::pair<std::string, std::string>>{
           {"product.created", R"({"uuid":"u1","identifier":"sku-1","enabled":true})"},
           {"product.removed", R"({"identifier":null})"},
           {"product.removed", R"({"uuid":"u1"})"},
           {"product_model.updated", product_model},
           {"product_model.removed", R"({"code":"m1"})"},
       }) {
    SCOPED_TRACE(action);
    compared += ExpectLegacyFormsAgree(LegacyBatch(action, resource));
  }
  for (const std::string& resource : CornerResources()) {
    SCOPED_TRACE(resource.substr(0, 120));
    compared += ExpectLegacyFormsAgree(LegacyBatch("product.updated", resource));
  }
  // Every corner but the one nested too deep (rejected alike).
  EXPECT_EQ(compared, 1u + 5u + CornerResources().size() - 1);
}

TEST(SerializedDataTest, LegacyBatchesOfTheBenchmarks) {
  // bench/akeneo_payloads.h: what pimgate_loadgen sends (legacy x10) and the backlog stores.
  std::mt19937_64 rng(16);
  const std::vector<std::string> pool = bench::ResourcePool(rng, 100);
  EXPECT_EQ(ExpectLegacyFormsAgree(bench::LegacyBody(rng, pool, 10, "2026-11-20T10:15:00.123456Z")),
            10u);
  EXPECT_EQ(
      ExpectLegacyFormsAgree(bench::LegacyBody(rng, pool, 100, "2026-11-20T10:15:00Z", 20000)),
      100u);
}

TEST(SerializedDataTest, PartialBatchesRejectTheSameElements) {
  // Bad elements among good ones, the last with data nested too deep: the same elements are
  // rejected with the same reasons and raw text, the same ones stored.
  const std::string body = Cat(
      R"({"events":[)",
      R"({"action":"product.created","event_id":"e0","event_datetime":"2021-03-12T09:46:08+00:00","data":{"resource":{"uuid":"u0","values":{}}}},)",
      R"("not an event",)",
      R"({"action":"product.updated","event_datetime":"2021-03-12T09:46:08+00:00","data":{"resource":{"uuid":"u2"}}},)",
      R"({"action":"product.updated","event_id":"e3","event_datetime":"2021-03-12T09:46:08+00:00","data":{"resource":[]}},)",
      R"({"action":"product.updated","event_id":"e4","event_datetime":"2021-03-12T09:46:08+00:00","data":{"resource":{"uuid":"u4","n":[1,2]}}},)",
      R"({"action":"product.updated","event_id":"e5","event_datetime":"2021-03-12T09:46:08+00:00","data":{"resource":)",
      NestedObjects(kMaxDataDepth + 1), "}}]}");
  EXPECT_EQ(ExpectLegacyFormsAgree(body), 2u);
  // Errors of the whole body: the same.
  for (const std::string& bad :
       {std::string(""), std::string("[]"), std::string(R"({"events":[]})"),
        std::string(R"({"events":{}})"), std::string("{\"events\":[\"\xc0\xaf\"]}"),
        Cat(R"({"events":[)", std::string(2000, '['), std::string(2000, ']'), "]}")}) {
    EXPECT_EQ(ExpectLegacyFormsAgree(bad), 0u);
  }
}

TEST(SerializedDataTest, EventPlatformEventsMatchTheirStructs) {
  std::size_t compared = 0;
  for (const DocumentedPayload& c : kDocumentedPayloads) {
    SCOPED_TRACE(c.upstream);
    compared += ExpectPlatformFormsAgree(ReadPayload(c.upstream));
  }
  EXPECT_EQ(compared, std::size(kDocumentedPayloads));
  compared = ExpectPlatformFormsAgree(kDeltaExample);
  compared += ExpectPlatformFormsAgree(CloudEvent("com.akeneo.pim.v1.product.updated.delta",
                                                  DeltaData(R"("2024-02-22T17:30:59Z")")));
  for (const std::string& resource : CornerResources()) {
    SCOPED_TRACE(resource.substr(0, 120));
    compared += ExpectPlatformFormsAgree(
        CloudEvent("com.akeneo.pim.v1.product.updated", Cat(R"({"product":)", resource, "}")));
  }
  std::mt19937_64 rng(16);
  const std::vector<std::string> pool = bench::ResourcePool(rng, 100);
  compared += ExpectPlatformFormsAgree(bench::PlatformBody(rng, pool, "2026-11-20T10:15:00Z"));
  // Under `data.product` the corners sit one level deeper than a legacy resource: the two
  // deepest are refused alike.
  EXPECT_EQ(compared, 2u + CornerResources().size() - 2 + 1u);
}

TEST(SerializedDataTest, NotificationsMatchTheirStructs) {
  std::size_t compared = 0;
  for (std::string_view type : {"subscription.suspended.system", "subscription.suspended.user",
                                "subscription.revoked", "subscription.resumed", "unknown.kind"}) {
    compared += ExpectPlatformFormsAgree(Notification(type));
  }
  EXPECT_EQ(compared, 5u);
  // Malformed bodies fail alike.
  EXPECT_EQ(ExpectPlatformFormsAgree(R"({"notification_type":"subscription.revoked"})"), 0u);
  EXPECT_EQ(ExpectPlatformFormsAgree("{\"id\":\"\xff\",\"type\":\"t\",\"data\":{}}"), 0u);
}

}  // namespace
}  // namespace pimgate
