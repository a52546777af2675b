// CanonicalizeType: every type named in docs/REFERENCE.md and in Akeneo's catalogue (legacy
// actions and Event Platform types) maps to the expected canonical type and kind; the catalogue
// of DocumentedEventPlatformTypes agrees with it and with the documentation; ResourceLocationOf
// says where each kind names its resource.
#include "events/event_type.h"

#include <fstream>
#include <ostream>
#include <set>
#include <sstream>
#include <string>
#include <string_view>

#include "gtest/gtest.h"

namespace pimgate {
namespace {

struct Case {
  const char* original;
  const char* type;
  const char* kind;
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.original; }

class CanonicalizeTypeTest : public testing::TestWithParam<Case> {};

TEST_P(CanonicalizeTypeTest, MapsToCanonicalTypeAndKind) {
  const Case& c = GetParam();
  const CanonicalType canonical = CanonicalizeType(c.original);
  EXPECT_EQ(canonical.type, c.type);
  EXPECT_EQ(canonical.kind, c.kind);
}

// Legacy Events API actions.
INSTANTIATE_TEST_SUITE_P(
    LegacyActions, CanonicalizeTypeTest,
    testing::Values(Case{"product.created", "product.created", "product"},
                    Case{"product.updated", "product.updated", "product"},
                    Case{"product.removed", "product.deleted", "product"},
                    Case{"product_model.created", "product_model.created", "product_model"},
                    Case{"product_model.updated", "product_model.updated", "product_model"},
                    Case{"product_model.removed", "product_model.deleted", "product_model"}));

#define PIM_V1 "com.akeneo.pim.v1."

// Every Event Platform type listed in REFERENCE.md section 3 and in Akeneo's catalogue
// (available-events.md of akeneo/pim-api-docs at e4b968cc).
INSTANTIATE_TEST_SUITE_P(
    EventPlatformTypes, CanonicalizeTypeTest,
    testing::Values(
        Case{PIM_V1 "product.created", "product.created", "product"},
        Case{PIM_V1 "product.updated", "product.updated", "product"},
        Case{PIM_V1 "product.deleted", "product.deleted", "product"},
        Case{PIM_V1 "product.updated.delta", "product.updated.delta", "product"},
        Case{PIM_V1 "product.became-complete", "product.became_complete", "product"},
        Case{PIM_V1 "product.became-incomplete", "product.became_incomplete", "product"},
        Case{PIM_V1 "product-model.created", "product_model.created", "product_model"},
        Case{PIM_V1 "product-model.updated", "product_model.updated", "product_model"},
        Case{PIM_V1 "product-model.deleted", "product_model.deleted", "product_model"},
        Case{PIM_V1 "product-model.updated.delta", "product_model.updated.delta", "product_model"},
        Case{PIM_V1 "asset.created", "asset.created", "asset"},
        Case{PIM_V1 "asset.updated", "asset.updated", "asset"},
        Case{PIM_V1 "asset.deleted", "asset.deleted", "asset"},
        Case{PIM_V1 "attribute.created", "attribute.created", "attribute"},
        Case{PIM_V1 "attribute.updated", "attribute.updated", "attribute"},
        Case{PIM_V1 "attribute.deleted", "attribute.deleted", "attribute"},
        Case{PIM_V1 "attribute-group.created", "attribute_group.created", "attribute_group"},
        Case{PIM_V1 "attribute-group.updated", "attribute_group.updated", "attribute_group"},
        Case{PIM_V1 "attribute-group.deleted", "attribute_group.deleted", "attribute_group"},
        Case{PIM_V1 "attribute-option.created", "attribute_option.created", "attribute_option"},
        Case{PIM_V1 "attribute-option.updated", "attribute_option.updated", "attribute_option"},
        Case{PIM_V1 "attribute-option.deleted", "attribute_option.deleted", "attribute_option"},
        Case{PIM_V1 "category.created", "category.created", "category"},
        Case{PIM_V1 "category.updated", "category.updated", "category"},
        Case{PIM_V1 "category.deleted", "category.deleted", "category"},
        Case{PIM_V1 "family.created", "family.created", "family"},
        Case{PIM_V1 "family.updated", "family.updated", "family"},
        Case{PIM_V1 "family.deleted", "family.deleted", "family"},
        Case{PIM_V1 "reference-entity-record.created", "reference_entity_record.created",
             "reference_entity_record"},
        Case{PIM_V1 "reference-entity-record.updated", "reference_entity_record.updated",
             "reference_entity_record"},
        Case{PIM_V1 "reference-entity-record.deleted", "reference_entity_record.deleted",
             "reference_entity_record"},
        Case{PIM_V1 "job.export.status-changed", "job.export.status_changed", "job"},
        Case{PIM_V1 "job.import.status-changed", "job.import.status_changed", "job"},
        Case{PIM_V1 "job.mass-edit.status-changed", "job.mass_edit.status_changed", "job"},
        Case{PIM_V1 "workflow.task.created", "workflow.task.created", "workflow"},
        Case{PIM_V1 "workflow.task.completed", "workflow.task.completed", "workflow"},
        Case{PIM_V1 "app.deleted", "app.deleted", "app"},
        Case{PIM_V1 "connection.deleted", "connection.deleted", "connection"}));

// New Akeneo types must be accepted: the same rules apply to types pimgate has never seen.
INSTANTIATE_TEST_SUITE_P(
    UnknownTypes, CanonicalizeTypeTest,
    testing::Values(Case{PIM_V1 "data-quality-insights.score-changed.delta",
                         "data_quality_insights.score_changed.delta", "data_quality_insights"},
                    Case{PIM_V1 "channel.removed", "channel.deleted", "channel"},
                    // Only the exact prefix is stripped; another vendor prefix is kept as is.
                    Case{"com.akeneo.pim.v2.product.created", "com.akeneo.pim.v2.product.created",
                         "com"},
                    // `removed` is rewritten only as the last segment.
                    Case{"product.removed.delta", "product.removed.delta", "product"},
                    Case{"removed", "removed", "removed"}, Case{"single", "single", "single"},
                    Case{"", "", ""}, Case{PIM_V1, "", ""}));

// ---------------------------------------------------------------------------------------------
// The catalogue

TEST(DocumentedEventPlatformTypesTest, AgreeWithCanonicalizeType) {
  std::set<std::string_view> seen;
  for (const EventPlatformType& type : DocumentedEventPlatformTypes()) {
    SCOPED_TRACE(type.upstream);
    EXPECT_TRUE(type.upstream.starts_with("com.akeneo.pim.v1."));
    EXPECT_TRUE(seen.insert(type.upstream).second) << "listed twice";
    const CanonicalType canonical = CanonicalizeType(type.upstream);
    EXPECT_EQ(canonical.type, type.canonical);
    EXPECT_EQ(canonical.kind, type.kind);
    EXPECT_EQ(FindDocumentedEventPlatformType(type.upstream), &type);
  }
  // available-events.md at e4b968cc lists 38 types.
  EXPECT_EQ(seen.size(), 38u);
}

TEST(DocumentedEventPlatformTypesTest, FindsOnlyTheCatalogue) {
  EXPECT_EQ(FindDocumentedEventPlatformType("com.akeneo.pim.v1.channel.created"), nullptr);
  // Canonical and legacy spellings are not upstream Event Platform types.
  EXPECT_EQ(FindDocumentedEventPlatformType("product_model.updated"), nullptr);
  EXPECT_EQ(FindDocumentedEventPlatformType("product.removed"), nullptr);
  EXPECT_EQ(FindDocumentedEventPlatformType(""), nullptr);
  const EventPlatformType* found =
      FindDocumentedEventPlatformType("com.akeneo.pim.v1.product-model.updated.delta");
  ASSERT_NE(found, nullptr);
  EXPECT_EQ(found->canonical, "product_model.updated.delta");
  EXPECT_EQ(found->kind, "product_model");
}

std::string ReadDoc(const std::string& relative) {
  std::ifstream in(std::string(PIMGATE_SOURCE_DIR) + "/" + relative);
  EXPECT_TRUE(in.good()) << "cannot read " << relative;
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// The pages that list the types for users name every one, in both spellings.
TEST(DocumentedEventPlatformTypesTest, ListedInTheDocumentation) {
  for (const std::string page : {"docs/configuration.md", "docs/event-platform-api.md"}) {
    SCOPED_TRACE(page);
    const std::string doc = ReadDoc(page);
    for (const EventPlatformType& type : DocumentedEventPlatformTypes()) {
      const std::string_view short_upstream =
          type.upstream.substr(std::string_view("com.akeneo.pim.v1.").size());
      EXPECT_NE(doc.find("`" + std::string(type.canonical) + "`"), std::string::npos)
          << type.canonical;
      EXPECT_NE(doc.find("`" + std::string(short_upstream) + "`"), std::string::npos)
          << short_upstream;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Where each kind names its resource

struct LocationCase {
  const char* canonical_type;
  std::string_view object;
  std::string_view alternate_object;
  std::string_view first_key;
  std::string_view second_key;
  std::string_view parent;
  bool numeric_id;
};

void PrintTo(const LocationCase& c, std::ostream* os) { *os << c.canonical_type; }

class ResourceLocationTest : public testing::TestWithParam<LocationCase> {};

TEST_P(ResourceLocationTest, FollowsTheCatalogue) {
  const LocationCase& c = GetParam();
  const ResourceLocation location = ResourceLocationOf(c.canonical_type);
  EXPECT_EQ(location.object, c.object);
  EXPECT_EQ(location.alternate_object, c.alternate_object);
  EXPECT_EQ(location.id_keys[0], c.first_key);
  EXPECT_EQ(location.id_keys[1], c.second_key);
  EXPECT_EQ(location.parent, c.parent);
  EXPECT_EQ(location.numeric_id, c.numeric_id);
}

INSTANTIATE_TEST_SUITE_P(
    EventPlatformKinds, ResourceLocationTest,
    testing::Values(
        LocationCase{"product.updated", "product", "", "uuid", "identifier", "", false},
        LocationCase{"product.became_complete", "product", "", "uuid", "identifier", "", false},
        LocationCase{"product_model.updated.delta", "product_model", "product", "code", "", "",
                     false},
        LocationCase{"asset.created", "asset", "", "code", "", "asset_family", false},
        LocationCase{"attribute.updated", "attribute", "", "code", "", "", false},
        LocationCase{"attribute_group.deleted", "attribute_group", "", "code", "", "", false},
        LocationCase{"attribute_option.created", "attribute_option", "", "code", "", "attribute",
                     false},
        LocationCase{"category.updated", "category", "", "code", "", "", false},
        LocationCase{"family.deleted", "family", "", "code", "", "", false},
        LocationCase{"reference_entity_record.updated", "reference_entity_record", "", "code", "",
                     "reference_entity", false},
        LocationCase{"app.deleted", "app", "", "client_id", "", "", false},
        LocationCase{"connection.deleted", "connection", "", "client_id", "", "", false},
        LocationCase{"job.import.status_changed", "job", "", "execution_id", "", "", true},
        // Workflow objects are named by the type's second segment.
        LocationCase{"workflow.task.completed", "task", "", "code", "uuid", "", false},
        LocationCase{"workflow.step.created", "step", "", "code", "uuid", "", false},
        LocationCase{"workflow", "", "", "code", "uuid", "", false},
        // Kinds outside the catalogue: data.<kind>, the generic keys (pimgate's rule before the
        // catalogue, kept for types Akeneo adds).
        LocationCase{"channel.created", "channel", "", "code", "uuid", "", false},
        LocationCase{"org", "org", "", "code", "uuid", "", false}));

}  // namespace
}  // namespace pimgate
