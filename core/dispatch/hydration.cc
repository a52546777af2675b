// The hydration types' helpers: which events are lightweight, their requests, and how a result
// is written into an event.
#include "core/dispatch/hydration.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/util/time_util.h"

namespace pimgate {

using google::protobuf::Struct;

bool IsHydratedKind(std::string_view kind) {
  for (std::string_view hydrated :
       {"product", "product_model", "family", "category", "attribute", "attribute_group",
        "attribute_option", "reference_entity_record", "asset"}) {
    if (kind == hydrated) return true;
  }
  return false;
}

bool IsLightweightEvent(const v1::Event& event) {
  if (event.origin() != v1::ORIGIN_EVENT_PLATFORM || event.resource_id().empty()) return false;
  if (!IsHydratedKind(event.kind())) return false;
  return !absl::EndsWith(event.type(), ".deleted");
}

HydrationRequest MakeHydrationRequest(const v1::Event& event, uint64_t ticket) {
  HydrationRequest request;
  request.sequence = event.sequence();
  request.ticket = ticket;
  request.source = event.source();
  request.kind = event.kind();
  request.resource_id = event.resource_id();
  request.version = event.has_version_at()
                        ? absl::StrCat(google::protobuf::util::TimeUtil::TimestampToMicroseconds(
                              event.version_at()))
                        : absl::StrCat("id:", event.id());
  return request;
}

void ApplyHydration(const Struct* resource, v1::Event& event) {
  auto& fields = *event.mutable_data()->mutable_fields();
  if (resource != nullptr) {
    *fields[kHydratedResourceField].mutable_struct_value() = *resource;
    fields[kHydrationField].set_string_value(kHydrationOk);
  } else {
    fields.erase(kHydratedResourceField);
    fields[kHydrationField].set_string_value(kHydrationNotFound);
  }
}

}  // namespace pimgate
