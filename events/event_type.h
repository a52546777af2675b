// Canonical event types: one naming scheme for both Akeneo producers, the catalogue of the Event
// Platform's documented types, and where each kind of event names its resource.
#ifndef PIMGATE_EVENTS_EVENT_TYPE_H_
#define PIMGATE_EVENTS_EVENT_TYPE_H_

#include <array>
#include <span>
#include <string>
#include <string_view>

namespace pimgate {

struct CanonicalType {
  std::string type;  // e.g. "product_model.updated", "product.updated.delta"
  std::string kind;  // first segment of `type`: "product_model"
};

// Maps a type exactly as Akeneo sent it to pimgate's canonical type: strips the Event Platform
// prefix `com.akeneo.pim.v1.`, turns `-` into `_`, and the legacy action suffix `removed` into
// `deleted`. Unknown types are mapped by the same rules (new Akeneo types must be accepted).
//   "product.removed"                          -> "product.deleted"
//   "com.akeneo.pim.v1.product-model.updated"  -> "product_model.updated"
//   "com.akeneo.pim.v1.product.updated.delta"  -> "product.updated.delta"
// Thread-safe, allocation only for the result.
CanonicalType CanonicalizeType(std::string_view original_type);

// One event type of the Event Platform's catalogue. `canonical` and `kind` are what
// CanonicalizeType gives for `upstream`; the catalogue spells them out so that they can be
// listed (documentation, subscription checks) without a payload at hand.
struct EventPlatformType {
  std::string_view upstream;   // as Akeneo sends it: "com.akeneo.pim.v1.product-model.deleted"
  std::string_view canonical;  // "product_model.deleted"
  std::string_view kind;       // "product_model"
};

// Every type of Akeneo's catalogue of Event Platform events, in the catalogue's order:
// content/event-platform/available-events.md of akeneo/pim-api-docs at commit e4b968cc
// (2025-08-11), the last version kept in that repository before the page became a document
// fetched at build time (api.akeneo.com/event-platform/available-events.html). Akeneo adds types:
// one missing here is still accepted, stored and delivered under its canonical type.
// Static storage; thread-safe.
std::span<const EventPlatformType> DocumentedEventPlatformTypes();

// The catalogue's entry for `upstream` (a type exactly as sent), or nullptr for a type it does
// not list (a newer one, or a legacy Events API action). Thread-safe.
const EventPlatformType* FindDocumentedEventPlatformType(std::string_view upstream);

// Where an Event Platform event names the resource it is about, given its canonical type:
//
// - the object `data.<object>`, or `data.<alternate_object>` when that member is absent;
// - in it, the first of `id_keys` holding a non-empty string (or, when `numeric_id` is set, a
//   number, written in decimal);
// - when `parent` is set, the resource's code is only unique within a parent (an asset within its
//   asset family, an option within its attribute, a record within its reference entity), named
//   by `<object>.<parent>.code`: the resource id is `<parent code>/<code>`, and empty when either
//   is missing, so that two parents' resources never share an id.
//
// An empty `object` (a workflow type without a second segment) names no resource. An empty
// resource id is allowed: the event is stored and delivered, it just takes part in no
// per-resource ordering or staleness check.
struct ResourceLocation {
  std::string_view object;
  std::string_view alternate_object;        // empty: none
  std::array<std::string_view, 4> id_keys;  // unused entries empty
  std::string_view parent;                  // empty: codes are unique within the kind
  bool numeric_id = false;
};

// The location for `canonical_type` (its kind is the first segment), per the catalogue's field
// tables:
//
//   product                  data.product.uuid, else data.product.identifier (which
//                            send_product_identifier adds; used only when uuid is absent)
//   product_model            data.product_model.code (data.product.code, as the catalogue's field
//                            tables spell it, when data.product_model is absent)
//   asset                    data.asset.asset_family.code "/" data.asset.code
//   attribute_option         data.attribute_option.attribute.code "/" data.attribute_option.code
//   reference_entity_record  data.reference_entity_record.reference_entity.code "/" ...code
//   attribute, attribute_group, category, family
//                            data.<kind>.code
//   app, connection          data.<kind>.client_id
//   job                      data.job.execution_id (a JSON number in the catalogue, or a string)
//   workflow                 data.<second segment>: workflow.task.created → data.task, with the
//                            keys below (the catalogue's tasks carry `uuid`)
//   any other kind           data.<kind>, first of code, uuid, identifier, client_id
//
// The returned views point into static storage or, for `object` of workflow and unknown kinds,
// into `canonical_type`, which must outlive the result. Thread-safe.
ResourceLocation ResourceLocationOf(std::string_view canonical_type);

}  // namespace pimgate

#endif  // PIMGATE_EVENTS_EVENT_TYPE_H_
