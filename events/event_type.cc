// Canonical event types: maps the type strings of both Akeneo producers to one naming scheme,
// lists the Event Platform's documented types and says where each kind names its resource.
#include "events/event_type.h"

#include <algorithm>
#include <array>
#include <span>
#include <string>
#include <string_view>

namespace pimgate {
namespace {

// Every Event Platform type starts with this; legacy actions have no prefix.
constexpr std::string_view kEventPlatformPrefix = "com.akeneo.pim.v1.";
// The legacy Events API says `removed` where the Event Platform says `deleted`.
constexpr std::string_view kLegacyRemoved = "removed";
constexpr std::string_view kDeleted = "deleted";

#define PIMGATE_V1 "com.akeneo.pim.v1."

// content/event-platform/available-events.md of akeneo/pim-api-docs at e4b968cc (2025-08-11),
// in the page's order. tests/data/event_platform/ holds each type's example payload from that
// page, and tests/events/event_type_test.cc checks that every entry agrees with
// CanonicalizeType and has its payload there.
constexpr EventPlatformType kDocumentedTypes[] = {
    {PIMGATE_V1 "app.deleted", "app.deleted", "app"},
    {PIMGATE_V1 "asset.created", "asset.created", "asset"},
    {PIMGATE_V1 "asset.updated", "asset.updated", "asset"},
    {PIMGATE_V1 "asset.deleted", "asset.deleted", "asset"},
    {PIMGATE_V1 "attribute.created", "attribute.created", "attribute"},
    {PIMGATE_V1 "attribute.updated", "attribute.updated", "attribute"},
    {PIMGATE_V1 "attribute.deleted", "attribute.deleted", "attribute"},
    {PIMGATE_V1 "attribute-group.created", "attribute_group.created", "attribute_group"},
    {PIMGATE_V1 "attribute-group.updated", "attribute_group.updated", "attribute_group"},
    {PIMGATE_V1 "attribute-group.deleted", "attribute_group.deleted", "attribute_group"},
    {PIMGATE_V1 "attribute-option.created", "attribute_option.created", "attribute_option"},
    {PIMGATE_V1 "attribute-option.updated", "attribute_option.updated", "attribute_option"},
    {PIMGATE_V1 "attribute-option.deleted", "attribute_option.deleted", "attribute_option"},
    {PIMGATE_V1 "category.created", "category.created", "category"},
    {PIMGATE_V1 "category.updated", "category.updated", "category"},
    {PIMGATE_V1 "category.deleted", "category.deleted", "category"},
    {PIMGATE_V1 "connection.deleted", "connection.deleted", "connection"},
    {PIMGATE_V1 "product.created", "product.created", "product"},
    {PIMGATE_V1 "product.updated", "product.updated", "product"},
    {PIMGATE_V1 "product.updated.delta", "product.updated.delta", "product"},
    {PIMGATE_V1 "product.deleted", "product.deleted", "product"},
    {PIMGATE_V1 "product.became-complete", "product.became_complete", "product"},
    {PIMGATE_V1 "product.became-incomplete", "product.became_incomplete", "product"},
    {PIMGATE_V1 "product-model.created", "product_model.created", "product_model"},
    {PIMGATE_V1 "product-model.updated", "product_model.updated", "product_model"},
    {PIMGATE_V1 "product-model.updated.delta", "product_model.updated.delta", "product_model"},
    {PIMGATE_V1 "product-model.deleted", "product_model.deleted", "product_model"},
    {PIMGATE_V1 "family.created", "family.created", "family"},
    {PIMGATE_V1 "family.updated", "family.updated", "family"},
    {PIMGATE_V1 "family.deleted", "family.deleted", "family"},
    {PIMGATE_V1 "reference-entity-record.created", "reference_entity_record.created",
     "reference_entity_record"},
    {PIMGATE_V1 "reference-entity-record.updated", "reference_entity_record.updated",
     "reference_entity_record"},
    {PIMGATE_V1 "reference-entity-record.deleted", "reference_entity_record.deleted",
     "reference_entity_record"},
    {PIMGATE_V1 "job.export.status-changed", "job.export.status_changed", "job"},
    {PIMGATE_V1 "job.mass-edit.status-changed", "job.mass_edit.status_changed", "job"},
    {PIMGATE_V1 "job.import.status-changed", "job.import.status_changed", "job"},
    {PIMGATE_V1 "workflow.task.created", "workflow.task.created", "workflow"},
    {PIMGATE_V1 "workflow.task.completed", "workflow.task.completed", "workflow"},
};

#undef PIMGATE_V1

// Keys tried, in order, for kinds whose resource object is not described by the catalogue (and
// for workflow objects, which the catalogue names by type): the rule pimgate always applied.
constexpr std::array<std::string_view, 4> kGenericIdKeys = {"code", "uuid", "identifier",
                                                            "client_id"};

struct KindLocation {
  std::string_view kind;
  ResourceLocation location;
};

// The catalogue's field tables, per kind (see ResourceLocationOf). Workflow is handled apart: its
// object is named by the type's second segment.
constexpr KindLocation kKindLocations[] = {
    {"product", {"product", "", {"uuid", "identifier"}, "", false}},
    // The field tables of the model events say `data.product.code`; their examples and the delta
    // table say `data.product_model.code`.
    {"product_model", {"product_model", "product", {"code"}, "", false}},
    {"asset", {"asset", "", {"code"}, "asset_family", false}},
    {"attribute", {"attribute", "", {"code"}, "", false}},
    {"attribute_group", {"attribute_group", "", {"code"}, "", false}},
    {"attribute_option", {"attribute_option", "", {"code"}, "attribute", false}},
    {"category", {"category", "", {"code"}, "", false}},
    {"family", {"family", "", {"code"}, "", false}},
    {"reference_entity_record",
     {"reference_entity_record", "", {"code"}, "reference_entity", false}},
    {"app", {"app", "", {"client_id"}, "", false}},
    {"connection", {"connection", "", {"client_id"}, "", false}},
    // One resource per job execution: a job's `code` names the job profile, shared by all its
    // executions, whose events must not be ordered against each other.
    {"job", {"job", "", {"execution_id"}, "", true}},
};

constexpr std::string_view kWorkflowKind = "workflow";

}  // namespace

CanonicalType CanonicalizeType(std::string_view original_type) {
  std::string_view rest = original_type;
  if (rest.starts_with(kEventPlatformPrefix)) rest.remove_prefix(kEventPlatformPrefix.size());

  CanonicalType result;
  // The last segment is the only one that can be `removed`; rewriting it before copying keeps
  // the result to one allocation.
  const std::size_t last_dot = rest.rfind('.');
  const std::string_view last =
      last_dot == std::string_view::npos ? rest : rest.substr(last_dot + 1);
  if (last_dot != std::string_view::npos && last == kLegacyRemoved) {
    result.type.reserve(last_dot + 1 + kDeleted.size());
    result.type.append(rest.substr(0, last_dot + 1));
    result.type.append(kDeleted);
  } else {
    result.type.assign(rest);
  }
  std::replace(result.type.begin(), result.type.end(), '-', '_');

  result.kind = result.type.substr(0, result.type.find('.'));
  return result;
}

std::span<const EventPlatformType> DocumentedEventPlatformTypes() { return kDocumentedTypes; }

const EventPlatformType* FindDocumentedEventPlatformType(std::string_view upstream) {
  for (const EventPlatformType& type : kDocumentedTypes) {
    if (type.upstream == upstream) return &type;
  }
  return nullptr;
}

ResourceLocation ResourceLocationOf(std::string_view canonical_type) {
  const std::string_view kind = canonical_type.substr(0, canonical_type.find('.'));
  for (const KindLocation& entry : kKindLocations) {
    if (entry.kind == kind) return entry.location;
  }
  ResourceLocation location;
  location.id_keys = kGenericIdKeys;
  if (kind == kWorkflowKind) {
    // `workflow.task.created` → data.task. A type with no second segment has no object.
    const std::size_t start = canonical_type.find('.');
    if (start == std::string_view::npos) return location;
    const std::size_t end = canonical_type.find('.', start + 1);
    location.object = canonical_type.substr(
        start + 1, end == std::string_view::npos ? std::string_view::npos : end - start - 1);
    return location;
  }
  location.object = kind;
  return location;
}

}  // namespace pimgate
