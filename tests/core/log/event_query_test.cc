// QueryEvents and FirstSequenceReceivedAtOrAfter over a real RocksDB log: filters, both scan
// directions, contiguous pages, the per-call scan and byte bounds, the received_at slack, and
// the holes retention leaves at the front of the log.
#include "core/log/event_query.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "core/log/event_log.h"
#include "core/log/log_backend.h"
#include "core/log/rocksdb_backend.h"
#include "google/protobuf/util/time_util.h"
#include "tests/testing/test_env.h"

namespace pimgate {
namespace {

using google::protobuf::util::TimeUtil;
using Seqs = std::vector<uint64_t>;

// Events appended by these tests were received from this time on.
constexpr int64_t kT0 = 1'800'000'000;

absl::Time At(int64_t seconds) { return absl::FromUnixSeconds(seconds); }

class EventQueryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto backend = OpenRocksDbBackend(dir_.File("store"));
    ASSERT_TRUE(backend.ok()) << backend.status();
    store_ = backend->get();
    auto log = EventLog::Open(std::move(*backend), {});
    ASSERT_TRUE(log.ok()) << log.status();
    log_ = std::move(*log);
  }

  // Appends one event per entry: (source, type, resource, received_at in seconds).
  void Append(const std::vector<std::tuple<std::string, std::string, std::string, int64_t>>& rows) {
    AppendRequest request;
    for (const auto& [source, type, resource, received_s] : rows) {
      v1::Event event;
      event.set_id(absl::StrCat("e", next_id_++));
      event.set_source(source);
      event.set_type(type);
      event.set_original_type(type);
      event.set_kind(type.substr(0, type.find('.')));
      event.set_resource_id(resource);
      *event.mutable_received_at() = TimeUtil::SecondsToTimestamp(received_s);
      (*event.mutable_data()->mutable_fields())["family"].set_string_value("shoes");
      request.events.push_back(std::move(event));
    }
    absl::StatusOr<AppendResult> result = log_->AppendSync(std::move(request));
    ASSERT_TRUE(result.ok()) << result.status();
    ASSERT_EQ(result->accepted, rows.size());
  }

  // 1..8, sources, types and resources mixed, received a minute apart from kT0.
  void AppendMixed() {
    Append({{"legacy", "product.created", "a", kT0},
            {"legacy", "product.updated", "a", kT0 + 60},
            {"platform", "product_model.updated", "m", kT0 + 120},
            {"legacy", "product.updated", "b", kT0 + 180},
            {"platform", "product.updated.delta", "a", kT0 + 240},
            {"legacy", "category.created", "c", kT0 + 300},
            {"platform", "product.deleted", "b", kT0 + 360},
            {"legacy", "product.updated", "a", kT0 + 420}});
  }

  // Follows `next` until it is unset; the sequences of every page, in order.
  Seqs AllPages(EventQuery query, const EventQueryLimits& limits = {}, int* calls = nullptr) {
    Seqs out;
    for (int call = 1; call <= 100; ++call) {
      absl::StatusOr<EventPage> page = QueryEvents(*log_, query, limits);
      EXPECT_TRUE(page.ok()) << page.status();
      if (!page.ok()) break;
      for (const v1::Event& event : page->events) out.push_back(event.sequence());
      if (calls != nullptr) *calls = call;
      if (!page->next) break;
      query.resume_at = page->next;
    }
    return out;
  }

  Seqs List(const std::function<void(EventQuery&)>& set) {
    EventQuery query;
    set(query);
    return AllPages(query);
  }

  testing::TempDir dir_;
  std::unique_ptr<EventLog> log_;
  LogBackend* store_ = nullptr;  // the log's backend, for the retention trims of these tests
  int next_id_ = 0;
};

TEST_F(EventQueryTest, FiltersBySourceResourceTypeGlobAndTime) {
  AppendMixed();
  EXPECT_EQ(List([](EventQuery&) {}), (Seqs{1, 2, 3, 4, 5, 6, 7, 8}));
  EXPECT_EQ(List([](EventQuery& q) { q.type = "product.*"; }), (Seqs{1, 2, 4, 5, 7, 8}));
  EXPECT_EQ(List([](EventQuery& q) { q.type = "*.updated"; }), (Seqs{2, 3, 4, 8}));
  EXPECT_EQ(List([](EventQuery& q) { q.resource_id = "a"; }), (Seqs{1, 2, 5, 8}));
  EXPECT_EQ(List([](EventQuery& q) { q.source = "platform"; }), (Seqs{3, 5, 7}));
  EXPECT_EQ(List([](EventQuery& q) {
              q.source = "legacy";
              q.type = "product.updated";
              q.resource_id = "a";
            }),
            (Seqs{2, 8}));
  // since inclusive, until exclusive.
  EXPECT_EQ(List([](EventQuery& q) {
              q.since = At(kT0 + 120);
              q.until = At(kT0 + 300);
            }),
            (Seqs{3, 4, 5}));
  EXPECT_EQ(List([](EventQuery& q) { q.since = At(kT0 + 1); }), (Seqs{2, 3, 4, 5, 6, 7, 8}));
  EXPECT_EQ(List([](EventQuery& q) { q.since = At(kT0 + 3600); }), (Seqs{}));
  EXPECT_EQ(List([](EventQuery& q) { q.until = At(kT0); }), (Seqs{}));
  EXPECT_EQ(List([](EventQuery& q) { q.resource_id = "nothing"; }), (Seqs{}));
}

TEST_F(EventQueryTest, NewestFirst) {
  AppendMixed();
  EXPECT_EQ(List([](EventQuery& q) { q.newest_first = true; }), (Seqs{8, 7, 6, 5, 4, 3, 2, 1}));
  EXPECT_EQ(List([](EventQuery& q) {
              q.newest_first = true;
              q.resource_id = "b";
            }),
            (Seqs{7, 4}));
  EXPECT_EQ(List([](EventQuery& q) {
              q.newest_first = true;
              q.until = At(kT0 + 180);
            }),
            (Seqs{3, 2, 1}));
  EXPECT_EQ(List([](EventQuery& q) {
              q.newest_first = true;
              q.since = At(kT0 + 300);
            }),
            (Seqs{8, 7, 6}));
}

TEST_F(EventQueryTest, PagesAreContiguous) {
  AppendMixed();
  EventQueryLimits limits;
  limits.page_size = 3;
  absl::StatusOr<EventPage> page = QueryEvents(*log_, EventQuery{}, limits);
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->events.size(), 3u);
  EXPECT_EQ(page->events.back().sequence(), 3u);
  EXPECT_EQ(page->next, std::optional<uint64_t>(4));
  EXPECT_EQ(page->scanned, 3u);
  int calls = 0;
  EXPECT_EQ(AllPages(EventQuery{}, limits, &calls), (Seqs{1, 2, 3, 4, 5, 6, 7, 8}));
  EXPECT_EQ(calls, 3);
  EventQuery newest;
  newest.newest_first = true;
  EXPECT_EQ(AllPages(newest, limits, &calls), (Seqs{8, 7, 6, 5, 4, 3, 2, 1}));
  EXPECT_EQ(calls, 3);
  // The last page ends the answer: no `next` once the scan reached the end of the log.
  EventQuery last;
  last.resume_at = 7;
  page = QueryEvents(*log_, last, limits);
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_EQ(page->events.size(), 2u);
  EXPECT_FALSE(page->next.has_value());
}

TEST_F(EventQueryTest, ScanIsBoundedPerCall) {
  AppendMixed();
  EventQueryLimits limits;
  limits.max_scan = 3;
  EventQuery query;
  query.resource_id = "c";  // only sequence 6
  absl::StatusOr<EventPage> page = QueryEvents(*log_, query, limits);
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_TRUE(page->events.empty());
  EXPECT_EQ(page->scanned, 3u);
  EXPECT_EQ(page->next, std::optional<uint64_t>(4));
  int calls = 0;
  EXPECT_EQ(AllPages(query, limits, &calls), (Seqs{6}));
  EXPECT_EQ(calls, 3);
}

// The scan filters on each event's header without decoding its data; what it returns is the
// whole event, data included, as GetEvent reads it.
TEST_F(EventQueryTest, MatchesComeWholeWithTheirData) {
  AppendMixed();
  EventQuery query;
  query.type = "product.*";
  query.source = "legacy";
  absl::StatusOr<EventPage> page = QueryEvents(*log_, query, {});
  ASSERT_TRUE(page.ok()) << page.status();
  Seqs sequences;
  for (const v1::Event& event : page->events) {
    sequences.push_back(event.sequence());
    EXPECT_EQ(event.data().fields().at("family").string_value(), "shoes");
    absl::StatusOr<std::optional<v1::Event>> stored = log_->GetEvent(event.sequence());
    ASSERT_TRUE(stored.ok() && stored->has_value()) << event.sequence();
    EXPECT_EQ(event.SerializeAsString(), (*stored)->SerializeAsString()) << event.sequence();
  }
  EXPECT_EQ(sequences, (Seqs{1, 2, 4, 8}));
  EXPECT_EQ(page->scanned, 8u);
}

TEST_F(EventQueryTest, PageBytesAreBounded) {
  AppendMixed();
  EventQueryLimits limits;
  limits.max_bytes = 1;  // every event is larger: one per page
  int calls = 0;
  EXPECT_EQ(AllPages(EventQuery{}, limits, &calls), (Seqs{1, 2, 3, 4, 5, 6, 7, 8}));
  EXPECT_EQ(calls, 8);
}

TEST_F(EventQueryTest, SinceMustBeBeforeUntil) {
  AppendMixed();
  EventQuery query;
  query.since = At(kT0 + 60);
  query.until = At(kT0 + 60);
  absl::StatusOr<EventPage> page = QueryEvents(*log_, query, {});
  EXPECT_EQ(page.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(page.status().message(), "since must be before until");
}

TEST_F(EventQueryTest, EmptyLogAnswersAnEmptyLastPage) {
  for (const bool newest_first : {false, true}) {
    EventQuery query;
    query.newest_first = newest_first;
    absl::StatusOr<EventPage> page = QueryEvents(*log_, query, {});
    ASSERT_TRUE(page.ok()) << page.status();
    EXPECT_TRUE(page->events.empty());
    EXPECT_EQ(page->scanned, 0u);
    EXPECT_FALSE(page->next.has_value());
  }
}

// received_at may run backwards a little from one sequence to the next (requests overtaking one
// another in the write queue): the scan looks that far past the window's edge. Without the
// slack, sequence 3 (received before `until`, stored after an event received after it) is lost.
TEST_F(EventQueryTest, ReceivedAtSlackFindsEventsThatOvertookEachOther) {
  Append({{"pim", "product.updated", "a", kT0},
          {"pim", "product.updated", "b", kT0 + 10},
          {"pim", "product.updated", "c", kT0 + 8},
          {"pim", "product.updated", "d", kT0 + 20}});
  EventQuery query;
  query.until = At(kT0 + 9);
  EventQueryLimits limits;
  limits.received_at_slack = absl::Seconds(5);
  EXPECT_EQ(AllPages(query, limits), (Seqs{1, 3}));
  limits.received_at_slack = absl::ZeroDuration();
  EXPECT_EQ(AllPages(query, limits), (Seqs{1}));

  // Newest first, the scan starts past `until` by the slack, and stops past `since` by it.
  query = EventQuery{};
  query.newest_first = true;
  query.since = At(kT0 + 9);
  limits.received_at_slack = absl::Seconds(5);
  EXPECT_EQ(AllPages(query, limits), (Seqs{4, 2}));
}

TEST_F(EventQueryTest, FirstSequenceReceivedAtOrAfter) {
  // Sequence s received at kT0 + 60 * (s - 1).
  std::vector<std::tuple<std::string, std::string, std::string, int64_t>> rows;
  for (int64_t s = 1; s <= 10; ++s) {
    rows.emplace_back("pim", "product.updated", absl::StrCat("r", s), kT0 + 60 * (s - 1));
  }
  Append(rows);
  const std::vector<std::pair<int64_t, uint64_t>> cases = {
      {kT0 - 3600, 1},   {kT0, 1},           {kT0 + 1, 2},          {kT0 + 4 * 60 + 30, 6},
      {kT0 + 5 * 60, 6}, {kT0 + 9 * 60, 10}, {kT0 + 9 * 60 + 1, 11}};
  for (const auto& [time, expected] : cases) {
    absl::StatusOr<uint64_t> found = FirstSequenceReceivedAtOrAfter(*log_, At(time));
    ASSERT_TRUE(found.ok()) << found.status();
    EXPECT_EQ(*found, expected) << "time kT0 + " << time - kT0;
  }
}

TEST_F(EventQueryTest, FirstSequenceReceivedAtOrAfterOnEmptyLog) {
  auto found = FirstSequenceReceivedAtOrAfter(*log_, At(kT0));
  ASSERT_TRUE(found.ok());
  EXPECT_EQ(*found, 1u);  // head + 1 of an empty log
}

// Retention removes events from the front: queries and the time search start at the oldest
// event left, and a page token that points into the trimmed range resumes at it.
TEST_F(EventQueryTest, EventsTrimmedByRetentionAreSkipped) {
  AppendMixed();
  absl::StatusOr<uint64_t> trimmed = store_->TrimEvents(3, absl::ToUnixMicros(At(kT0 + 3600)), 100);
  ASSERT_TRUE(trimmed.ok()) << trimmed.status();
  ASSERT_EQ(*trimmed, 3u);
  EXPECT_EQ(List([](EventQuery&) {}), (Seqs{4, 5, 6, 7, 8}));
  EXPECT_EQ(List([](EventQuery& q) { q.newest_first = true; }), (Seqs{8, 7, 6, 5, 4}));
  EXPECT_EQ(List([](EventQuery& q) { q.resource_id = "a"; }), (Seqs{5, 8}));
  EXPECT_EQ(List([](EventQuery& q) { q.since = At(kT0 - 3600); }), (Seqs{4, 5, 6, 7, 8}));
  EXPECT_EQ(List([](EventQuery& q) { q.until = At(kT0 + 240); }), (Seqs{4}));
  EXPECT_EQ(List([](EventQuery& q) { q.resume_at = 2; }), (Seqs{4, 5, 6, 7, 8}));
  EXPECT_EQ(List([](EventQuery& q) {
              q.newest_first = true;
              q.resume_at = 5;
            }),
            (Seqs{5, 4}));
  absl::StatusOr<uint64_t> found = FirstSequenceReceivedAtOrAfter(*log_, At(kT0 - 3600));
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ(*found, 4u);
  found = FirstSequenceReceivedAtOrAfter(*log_, At(kT0 + 200));
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ(*found, 5u);
}

}  // namespace
}  // namespace pimgate
