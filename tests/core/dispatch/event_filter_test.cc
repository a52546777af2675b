// Plugin filters: globs over canonical types, sources, authors, data fields, staleness.
#include "core/dispatch/event_filter.h"

#include <gtest/gtest.h>

#include "common/glob.h"

namespace pimgate {
namespace {

TEST(GlobMatch, StarMatchesAnyCharactersIncludingDots) {
  EXPECT_TRUE(GlobMatch("product.*", "product.updated"));
  EXPECT_TRUE(GlobMatch("product.*", "product.updated.delta"));
  EXPECT_FALSE(GlobMatch("product.*", "product_model.updated"));
  EXPECT_TRUE(GlobMatch("*", "anything.at.all"));
  EXPECT_TRUE(GlobMatch("*.deleted", "product_model.deleted"));
  EXPECT_FALSE(GlobMatch("*.deleted", "product.updated"));
  EXPECT_TRUE(GlobMatch("product.updated", "product.updated"));
  EXPECT_FALSE(GlobMatch("product.updated", "product.updated.delta"));
  EXPECT_TRUE(GlobMatch("p*t.*d*", "product.updated.delta"));
  EXPECT_TRUE(GlobMatch("**", ""));
  EXPECT_FALSE(GlobMatch("a*b", "acd"));
}

v1::Event Product(const std::string& type = "product.updated") {
  v1::Event event;
  event.set_type(type);
  event.set_source("pim");
  event.set_author("julia");
  event.set_author_type("ui");
  auto& fields = *event.mutable_data()->mutable_fields();
  fields["family"].set_string_value("shoes");
  fields["enabled"].set_bool_value(true);
  fields["count"].set_number_value(12);
  auto* categories = fields["categories"].mutable_list_value();
  categories->add_values()->set_string_value("summer");
  categories->add_values()->set_string_value("sale");
  (*fields["product"].mutable_struct_value()->mutable_fields())["uuid"].set_string_value("u-1");
  return event;
}

TEST(ValuesAtPath, ScalarsListsAndNestedObjects) {
  const v1::Event event = Product();
  EXPECT_EQ(ValuesAtPath(event.data(), "family"), std::vector<std::string>{"shoes"});
  EXPECT_EQ(ValuesAtPath(event.data(), "enabled"), std::vector<std::string>{"true"});
  EXPECT_EQ(ValuesAtPath(event.data(), "count"), std::vector<std::string>{"12"});
  v1::Event price = event;
  (*price.mutable_data()->mutable_fields())["price"].set_number_value(0.1);
  EXPECT_EQ(ValuesAtPath(price.data(), "price"), std::vector<std::string>{"0.1"});
  EXPECT_EQ(ValuesAtPath(event.data(), "categories"), (std::vector<std::string>{"summer", "sale"}));
  EXPECT_EQ(ValuesAtPath(event.data(), "product.uuid"), std::vector<std::string>{"u-1"});
  EXPECT_TRUE(ValuesAtPath(event.data(), "missing").empty());
  EXPECT_TRUE(ValuesAtPath(event.data(), "family.x").empty());
}

TEST(EventFilter, EachRule) {
  PluginConfig plugin;
  EXPECT_EQ(EventFilter(plugin).Check(Product()), EventFilter::Verdict::kDeliver);

  plugin.events = {"product_model.*"};
  EXPECT_EQ(EventFilter(plugin).Check(Product()), EventFilter::Verdict::kSkipFilter);
  plugin.events = {"product_model.*", "product.*"};
  EXPECT_EQ(EventFilter(plugin).Check(Product()), EventFilter::Verdict::kDeliver);

  plugin.sources = {"other"};
  EXPECT_EQ(EventFilter(plugin).Check(Product()), EventFilter::Verdict::kSkipFilter);
  plugin.sources = {"other", "pim"};
  EXPECT_EQ(EventFilter(plugin).Check(Product()), EventFilter::Verdict::kDeliver);

  plugin.authors.exclude = {"julia"};  // ignore our own writes back to the PIM
  EXPECT_EQ(EventFilter(plugin).Check(Product()), EventFilter::Verdict::kSkipFilter);
  plugin.authors.exclude.clear();
  plugin.author_types.include = {"api"};
  EXPECT_EQ(EventFilter(plugin).Check(Product()), EventFilter::Verdict::kSkipFilter);
  plugin.author_types.include = {"api", "ui"};

  plugin.data = {DataFilter{"categories", {"sale"}, false}};
  EXPECT_EQ(EventFilter(plugin).Check(Product()), EventFilter::Verdict::kDeliver);
  plugin.data = {DataFilter{"categories", {"sale"}, true}};
  EXPECT_EQ(EventFilter(plugin).Check(Product()), EventFilter::Verdict::kSkipFilter);
  plugin.data = {DataFilter{"family", {"hats"}, false}};
  EXPECT_EQ(EventFilter(plugin).Check(Product()), EventFilter::Verdict::kSkipFilter);
  plugin.data = {DataFilter{"missing", {"x"}, true}};
  EXPECT_EQ(EventFilter(plugin).Check(Product()), EventFilter::Verdict::kDeliver);
  plugin.data.clear();

  v1::Event stale = Product();
  stale.set_stale(true);
  EXPECT_EQ(EventFilter(plugin).Check(stale), EventFilter::Verdict::kSkipStale);
  plugin.skip_stale = false;
  EXPECT_EQ(EventFilter(plugin).Check(stale), EventFilter::Verdict::kDeliver);
}

// The dispatcher checks events by their attributes alone (read from the stored bytes) when no
// data filter is set: the verdict must be the one the whole event gets.
TEST(EventFilter, AttributesAloneGiveTheSameVerdict) {
  const auto attributes = [](const v1::Event& event) {
    return EventAttributes{.source = event.source(),
                           .type = event.type(),
                           .author = event.author(),
                           .author_type = event.author_type(),
                           .stale = event.stale()};
  };
  std::vector<PluginConfig> plugins(7);
  plugins[1].events = {"product_model.*"};
  plugins[2].sources = {"other", "pim"};
  plugins[3].sources = {"other"};
  plugins[4].authors.exclude = {"julia"};
  plugins[5].author_types.include = {"api"};
  plugins[6].skip_stale = false;
  v1::Event stale = Product();
  stale.set_stale(true);
  v1::Event anonymous = Product("product_model.created");
  anonymous.clear_author();
  anonymous.clear_author_type();
  int skipped = 0;
  for (const PluginConfig& plugin : plugins) {
    const EventFilter filter(plugin);
    ASSERT_FALSE(filter.reads_data());
    for (const v1::Event& event : {Product(), stale, anonymous}) {
      EXPECT_EQ(filter.Check(attributes(event)), filter.Check(event)) << event.ShortDebugString();
      if (filter.Check(event) != EventFilter::Verdict::kDeliver) ++skipped;
    }
  }
  EXPECT_GT(skipped, 5);  // the rules above do skip
}

}  // namespace
}  // namespace pimgate
