// Tests for RocksDbBulkLoader and CheckpointRocksDbStore: a bulk-loaded store opens as a normal
// store and the event log carries on from it (dedup, staleness, sequences), bad input is refused
// and leaves no store behind, and a checkpoint is an independent copy.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "core/log/event_log.h"
#include "core/log/log_backend.h"
#include "core/log/rocksdb_backend.h"
#include "gtest/gtest.h"
#include "pimgate/v1/event.pb.h"
#include "tests/testing/test_env.h"

namespace pimgate {
namespace {

using ::pimgate::testing::TempDir;

constexpr int64_t kBaseMicros = 1'700'000'000'000'000;

v1::Event MakeEvent(uint64_t sequence, const std::string& id, const std::string& resource,
                    int64_t version_us) {
  v1::Event e;
  e.set_sequence(sequence);
  e.set_id(id);
  e.set_source("pim");
  e.set_kind("product");
  e.set_type("product.updated");
  e.set_resource_id(resource);
  e.mutable_version_at()->set_seconds(version_us / 1'000'000);
  e.mutable_version_at()->set_nanos(static_cast<int32_t>(version_us % 1'000'000) * 1000);
  (*e.mutable_data()->mutable_fields())["identifier"].set_string_value("sku-" + id);
  return e;
}

// Loads `count` events e<i> for resources r<i % resources>, version kBaseMicros + i.
absl::Status Load(const std::string& path, int count, int resources) {
  absl::StatusOr<std::unique_ptr<RocksDbBulkLoader>> loader = RocksDbBulkLoader::Create(path);
  if (!loader.ok()) return loader.status();
  for (int i = 0; i < count; ++i) {
    const uint64_t sequence = i + 1;
    const std::string resource = absl::StrCat("r", i % resources);
    v1::Event e = MakeEvent(sequence, absl::StrCat("e", i), resource, kBaseMicros + i);
    if (absl::Status s = (*loader)->AddEvent(sequence, e.SerializeAsString()); !s.ok()) return s;
    (*loader)->AddEventId(DedupKey{"pim", e.id()}, sequence);
    (*loader)->SetVersion(ResourceKey{"pim", "product", resource},
                          ResourceVersion{kBaseMicros + i, sequence, false});
  }
  return (*loader)->Finish();
}

TEST(BulkLoadTest, LoadedStoreOpensAndTheLogCarriesOn) {
  TempDir dir;
  const std::string store = dir.path() + "/store";
  ASSERT_EQ(Load(store, 1000, 10), absl::OkStatus());
  EXPECT_FALSE(std::filesystem::exists(store + "/bulk-load.tmp"));

  absl::StatusOr<std::unique_ptr<LogBackend>> backend = OpenRocksDbBackend(store);
  ASSERT_TRUE(backend.ok()) << backend.status();
  absl::StatusOr<std::vector<v1::Event>> events = (*backend)->ReadEvents(1, 2000);
  ASSERT_TRUE(events.ok()) << events.status();
  ASSERT_EQ(events->size(), 1000u);
  EXPECT_EQ((*events)[0].id(), "e0");
  EXPECT_EQ((*events)[999].sequence(), 1000u);
  EXPECT_EQ((*events)[999].data().fields().at("identifier").string_value(), "sku-e999");
  absl::StatusOr<std::optional<uint64_t>> id = (*backend)->FindEventId({"pim", "e500"});
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(*id, std::optional<uint64_t>(501));

  absl::StatusOr<std::unique_ptr<EventLog>> log = EventLog::Open(std::move(*backend), {});
  ASSERT_TRUE(log.ok()) << log.status();
  EXPECT_EQ((*log)->head(), 1000u);
  AppendRequest request;
  request.events.push_back(MakeEvent(0, "e42", "r2", kBaseMicros + 5000));   // duplicate
  request.events.push_back(MakeEvent(0, "new1", "r3", kBaseMicros + 992));   // older: stale
  request.events.push_back(MakeEvent(0, "new2", "r4", kBaseMicros + 5000));  // fresh
  absl::StatusOr<AppendResult> result = (*log)->AppendSync(std::move(request));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->duplicates, 1u);
  EXPECT_EQ(result->accepted, 2u);
  EXPECT_EQ(result->stale, 1u);
  EXPECT_EQ(result->first_sequence, 1001u);
  EXPECT_EQ((*log)->head(), 1002u);
}

TEST(BulkLoadTest, RefusesBadInputAndLeavesNoStore) {
  TempDir dir;
  const std::string store = dir.path() + "/store";
  {
    absl::StatusOr<std::unique_ptr<RocksDbBulkLoader>> loader = RocksDbBulkLoader::Create(store);
    ASSERT_TRUE(loader.ok()) << loader.status();
    ASSERT_EQ((*loader)->AddEvent(5, "x"), absl::OkStatus());
    EXPECT_EQ((*loader)->AddEvent(5, "x").code(), absl::StatusCode::kInvalidArgument);
    (*loader)->AddEventId({"pim", "same"}, 1);
    (*loader)->AddEventId({"pim", "same"}, 2);
    EXPECT_EQ((*loader)->Finish().code(), absl::StatusCode::kInvalidArgument);
  }
  EXPECT_FALSE(std::filesystem::exists(store)) << "an abandoned load left a store behind";

  ASSERT_EQ(Load(store, 10, 2), absl::OkStatus());
  EXPECT_EQ(RocksDbBulkLoader::Create(store).status().code(),
            absl::StatusCode::kFailedPrecondition);  // never over an existing store
  // ... which the refused loader left as it was.
  absl::StatusOr<std::unique_ptr<LogBackend>> backend = OpenRocksDbBackend(store);
  ASSERT_TRUE(backend.ok()) << backend.status();
  absl::StatusOr<RecoveredState> state = (*backend)->Recover();
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_EQ(state->last_sequence, 10u);
}

TEST(BulkLoadTest, CheckpointIsAnIndependentCopy) {
  TempDir dir;
  const std::string store = dir.path() + "/store", copy = dir.path() + "/copy";
  ASSERT_EQ(Load(store, 100, 10), absl::OkStatus());
  ASSERT_EQ(CheckpointRocksDbStore(store, copy), absl::OkStatus());
  {
    absl::StatusOr<std::unique_ptr<LogBackend>> backend = OpenRocksDbBackend(copy);
    ASSERT_TRUE(backend.ok()) << backend.status();
    absl::StatusOr<std::unique_ptr<EventLog>> log = EventLog::Open(std::move(*backend), {});
    ASSERT_TRUE(log.ok()) << log.status();
    AppendRequest request;
    request.events.push_back(MakeEvent(0, "only-in-copy", "r1", kBaseMicros + 1000));
    ASSERT_TRUE((*log)->AppendSync(std::move(request)).ok());
    EXPECT_EQ((*log)->head(), 101u);
  }
  absl::StatusOr<std::unique_ptr<LogBackend>> original = OpenRocksDbBackend(store);
  ASSERT_TRUE(original.ok()) << original.status();
  absl::StatusOr<RecoveredState> state = (*original)->Recover();
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_EQ(state->last_sequence, 100u);
  absl::StatusOr<std::optional<uint64_t>> id = (*original)->FindEventId({"pim", "only-in-copy"});
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_FALSE(id->has_value());

  EXPECT_EQ(CheckpointRocksDbStore(dir.path() + "/none", dir.path() + "/x").code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace pimgate
