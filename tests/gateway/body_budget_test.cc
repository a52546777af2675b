// BodyBudget's rules on a controlled clock: small bodies never wait, large ones share a pool with
// a per-client share, bodies behind their sender's pace make room, waits end in a grant or a
// refusal, and every room comes back when its Hold goes.
#include "gateway/body_budget.h"

#include <gtest/gtest.h>

#include <optional>
#include <vector>

namespace pimgate {
namespace {

using Clock = BodyBudget::Clock;
using namespace std::chrono_literals;

constexpr std::size_t kMiB = 1u << 20;

// 8 MiB for 4 connections: 1 MiB each without asking, a 4 MiB pool, 2 MiB of it per client.
BodyBudgetOptions SmallBudget() {
  BodyBudgetOptions options;
  options.max_buffered_bytes = 8 * kMiB;
  options.max_connections = 4;
  options.max_connections_per_client = 2;
  options.body_limit = 2 * kMiB;
  options.max_wait = 250ms;
  return options;
}

class BodyBudgetTest : public ::testing::Test {
 protected:
  BodyBudgetTest() : budget_(SmallBudget(), [this] { return now_; }) {}

  // What a waiting request was told.
  struct Outcome {
    bool decided = false;
    BodyBudget::Hold hold;
    std::optional<BudgetRefusal> refused;
  };

  BodyBudget::Hold Reserve(const std::string& client, std::size_t bytes, Outcome* outcome,
                           int* evictions = nullptr) {
    BodyBudget::Request request;
    request.client = client;
    request.bytes = bytes;
    request.sender_timeout = 500ms;
    if (evictions != nullptr) request.on_evict = [evictions] { ++*evictions; };
    return budget_.Reserve(std::move(request),
                           [outcome](BodyBudget::Hold hold, std::optional<BudgetRefusal> refused) {
                             outcome->decided = true;
                             outcome->hold = std::move(hold);
                             outcome->refused = refused;
                           });
  }

  Clock::time_point now_ = Clock::time_point() + 1h;
  BodyBudget budget_;
};

TEST_F(BodyBudgetTest, DerivedSharesFollowTheDocumentedFormulas) {
  EXPECT_EQ(budget_.free_share(), 1 * kMiB);   // 8 MiB / (2 x 4)
  EXPECT_EQ(budget_.pool(), 4 * kMiB);         // the other half
  EXPECT_EQ(budget_.client_pool(), 2 * kMiB);  // 4 MiB x 2 / 4
  // A client's share always has room for one largest body.
  BodyBudgetOptions options = SmallBudget();
  options.max_connections_per_client = 1;
  options.body_limit = 3 * kMiB;
  EXPECT_EQ(BodyBudget(options).client_pool(), 2 * kMiB);  // 3 MiB - 1 MiB free share
}

TEST_F(BodyBudgetTest, SmallBodiesNeverWaitWhateverOthersHold) {
  Outcome a, b;
  BodyBudget::Hold big1 = Reserve("10.0.0.1", 3 * kMiB, &a);
  BodyBudget::Hold big2 = Reserve("10.0.0.2", 3 * kMiB, &b);
  ASSERT_TRUE(big1 && big2);  // the pool is full now
  Outcome small_outcome;
  for (int i = 0; i < 4; ++i) {
    BodyBudget::Hold small = Reserve("10.0.0.3", 1 * kMiB, &small_outcome);
    EXPECT_TRUE(small) << i;
  }
  EXPECT_FALSE(small_outcome.decided);
  EXPECT_EQ(budget_.stats().buffered_bytes, 6 * kMiB);
}

TEST_F(BodyBudgetTest, AClientBeyondItsShareWaitsThenIsRefused) {
  Outcome first, second;
  BodyBudget::Hold hold = Reserve("10.0.0.1", 3 * kMiB, &first);  // 2 MiB of the pool: its share
  ASSERT_TRUE(hold);
  hold.Received(3 * kMiB);
  hold.Complete();  // being stored: it keeps its room
  EXPECT_FALSE(Reserve("10.0.0.1", 2 * kMiB, &second));
  EXPECT_EQ(budget_.Waiting(), 1u);
  now_ += 200ms;
  budget_.Tick();
  EXPECT_FALSE(second.decided);
  now_ += 100ms;  // past max_wait
  budget_.Tick();
  ASSERT_TRUE(second.decided);
  EXPECT_FALSE(second.hold);
  EXPECT_EQ(second.refused, BudgetRefusal::kClientBufferBudget);
  EXPECT_EQ(budget_.stats().refusals["client_buffer_budget"], 1u);
  // Another client still has room in the pool.
  Outcome other;
  EXPECT_TRUE(Reserve("10.0.0.2", 3 * kMiB, &other));
  auto by_client = budget_.TakeRefusalsByClient();
  EXPECT_EQ(by_client["10.0.0.1"][BudgetRefusal::kClientBufferBudget], 1u);
  EXPECT_TRUE(budget_.TakeRefusalsByClient().empty());
}

TEST_F(BodyBudgetTest, RoomReleasedGoesToTheWaiterInOrder) {
  Outcome a, b, c, d;
  BodyBudget::Hold ha = Reserve("10.0.0.1", 3 * kMiB, &a);
  BodyBudget::Hold hb = Reserve("10.0.0.2", 3 * kMiB, &b);
  ASSERT_TRUE(ha && hb);
  EXPECT_FALSE(Reserve("10.0.0.3", 3 * kMiB, &c));
  EXPECT_FALSE(Reserve("10.0.0.4", 2 * kMiB, &d));
  EXPECT_EQ(budget_.stats().waiting, 2u);
  ha.Release();  // 2 MiB back: the first waiter gets it
  ASSERT_TRUE(c.decided);
  EXPECT_TRUE(c.hold);
  EXPECT_FALSE(d.decided);
  hb = BodyBudget::Hold();  // destroying (here: replacing) a Hold releases it too
  ASSERT_TRUE(d.decided);
  EXPECT_TRUE(d.hold);
  EXPECT_EQ(budget_.stats().buffered_bytes, 5 * kMiB);
}

TEST_F(BodyBudgetTest, BodiesBehindTheirSendersTimeoutAreEvictedOldestFirst) {
  Outcome a, b, c;
  int evicted_a = 0, evicted_b = 0;
  BodyBudget::Hold ha = Reserve("10.0.0.1", 3 * kMiB, &a, &evicted_a);
  now_ += 10ms;
  BodyBudget::Hold hb = Reserve("10.0.0.2", 3 * kMiB, &b, &evicted_b);
  // Both got all but one byte at once, then stopped (the hostile pattern).
  ha.Received(3 * kMiB - 1);
  hb.Received(3 * kMiB - 1);
  now_ += 290ms;
  // A genuine body arrives: both others are on pace for the 0.5 s timeout, nobody is evicted.
  EXPECT_FALSE(Reserve("10.0.0.3", 3 * kMiB, &c));
  EXPECT_EQ(evicted_a + evicted_b, 0);
  now_ += 205ms;  // a is 505 ms old, b 495 ms: only a's sender has certainly given up
  budget_.Tick();
  EXPECT_EQ(evicted_a, 1);
  EXPECT_EQ(evicted_b, 0);
  EXPECT_FALSE(c.decided);  // its room comes when a's connection lets go
  ha.Release();
  ASSERT_TRUE(c.decided);
  EXPECT_TRUE(c.hold);
  EXPECT_EQ(budget_.stats().refusals["evicted"], 1u);
  budget_.Tick();
  EXPECT_EQ(evicted_b, 0);  // no one waits any more: b keeps its room
}

TEST_F(BodyBudgetTest, AWaiterPromisedEvictedRoomOutlastsItsDeadlineBriefly) {
  Outcome a, b, c;
  int evicted = 0;
  BodyBudget::Hold ha = Reserve("10.0.0.1", 3 * kMiB, &a, &evicted);
  BodyBudget::Hold hb = Reserve("10.0.0.2", 3 * kMiB, &b);
  hb.Received(3 * kMiB);
  hb.Complete();  // being stored: never evicted
  now_ += 600ms;  // a never sent a byte: far behind
  EXPECT_FALSE(Reserve("10.0.0.3", 3 * kMiB, &c));
  EXPECT_EQ(evicted, 1);
  now_ += 300ms;  // past max_wait, but a's room is on its way
  budget_.Tick();
  EXPECT_FALSE(c.decided);
  now_ += 100ms;  // a never let go: the promise lapses
  budget_.Tick();
  ASSERT_TRUE(c.decided);
  EXPECT_EQ(c.refused, BudgetRefusal::kBufferBudget);
}

TEST_F(BodyBudgetTest, ABodyBehindItsPaceIsEvictedBeforeItsTimeout) {
  Outcome a, b, c;
  int evicted = 0;
  BodyBudget::Hold ha = Reserve("10.0.0.1", 3 * kMiB, &a, &evicted);
  BodyBudget::Hold hb = Reserve("10.0.0.2", 3 * kMiB, &b);
  hb.Received(3 * kMiB - 1);
  // The first quarter of the 0.5 s is the body's start: nothing is due yet, even with no byte in
  // (the session may not even be reading yet).
  now_ += 120ms;
  EXPECT_FALSE(Reserve("10.0.0.3", 3 * kMiB, &c));
  EXPECT_EQ(evicted, 0);
  // Then the rest at an even pace: at 300 ms, 175/375 of it (1.4 MiB) is due; a has a third.
  now_ += 180ms;
  ha.Received(kMiB);
  budget_.Tick();
  EXPECT_EQ(evicted, 1);
}

TEST_F(BodyBudgetTest, ATrustedClientsBodyGoesOnlyForAnotherTrustedOnePastItsTimeout) {
  budget_.Trust("10.0.0.1");
  budget_.Trust("10.0.0.9");
  Outcome a, b, c, d;
  int evicted_a = 0, evicted_b = 0;
  BodyBudget::Hold ha = Reserve("10.0.0.1", 3 * kMiB, &a, &evicted_a);  // trusted, sends nothing
  BodyBudget::Hold hb = Reserve("10.0.0.2", 3 * kMiB, &b, &evicted_b);  // untrusted, done soon
  hb.Received(3 * kMiB);
  hb.Complete();
  now_ += 600ms;  // a is past its sender's timeout
  // An untrusted waiter cannot close it ...
  EXPECT_FALSE(Reserve("10.0.0.3", 3 * kMiB, &c));
  EXPECT_EQ(evicted_a, 0);
  // ... a trusted one can, when no untrusted body can go instead.
  EXPECT_FALSE(Reserve("10.0.0.9", 3 * kMiB, &d));
  EXPECT_EQ(evicted_a, 1);
  EXPECT_EQ(evicted_b, 0);
}

TEST_F(BodyBudgetTest, TrustedClientsGoFirstAndMayEvictUntrustedBodiesOnPace) {
  budget_.Trust("10.0.0.9");  // it sent an authenticated request before
  EXPECT_TRUE(budget_.Trusted("10.0.0.9"));
  EXPECT_FALSE(budget_.Trusted("10.0.0.1"));
  Outcome a, b, c, d;
  int evicted_a = 0, evicted_b = 0;
  BodyBudget::Hold ha = Reserve("10.0.0.1", 3 * kMiB, &a, &evicted_a);
  BodyBudget::Hold hb = Reserve("10.0.0.2", 3 * kMiB, &b, &evicted_b);
  ha.Received(3 * kMiB - 1);
  hb.Received(3 * kMiB - 1);
  now_ += 10ms;
  // An untrusted body waits: both holds are on pace.
  EXPECT_FALSE(Reserve("10.0.0.3", 3 * kMiB, &c));
  EXPECT_EQ(evicted_a + evicted_b, 0);
  // The trusted client's body evicts the oldest untrusted one at once, and goes first.
  EXPECT_FALSE(Reserve("10.0.0.9", 3 * kMiB, &d));
  EXPECT_EQ(evicted_a, 1);
  EXPECT_EQ(evicted_b, 0);
  ha.Release();
  ASSERT_TRUE(d.decided);
  EXPECT_TRUE(d.hold);
  EXPECT_FALSE(c.decided);  // still waiting, behind the trusted one
  // Trusted bodies on pace are never evicted for anyone.
  d.hold.Received(3 * kMiB - 1);
  Outcome e;
  budget_.Trust("10.0.0.8");
  EXPECT_FALSE(Reserve("10.0.0.8", 3 * kMiB, &e));
  EXPECT_EQ(evicted_b, 1);  // b is untrusted: it goes
}

TEST_F(BodyBudgetTest, ChunkedBodiesGrowThenWaitAndTheWaitGoesWithTheHold) {
  Outcome a, b;
  BodyBudget::Hold grower = Reserve("10.0.0.1", 512 * 1024, &a);
  ASSERT_TRUE(grower);
  std::optional<std::optional<BudgetRefusal>> grown;
  auto on_grown = [&grown](std::optional<BudgetRefusal> refused) { grown = refused; };
  EXPECT_TRUE(budget_.Grow(grower, 1 * kMiB, on_grown));   // 1.5 MiB: 0.5 MiB from the pool
  EXPECT_TRUE(budget_.Grow(grower, 1 * kMiB, on_grown));   // 2.5 MiB: 1.5 MiB, in its share
  grower.Received(2560 * 1024);                            // filled: on pace, not evictable
  EXPECT_FALSE(budget_.Grow(grower, 1 * kMiB, on_grown));  // 3.5 MiB: over its 2 MiB share
  EXPECT_FALSE(grown.has_value());
  now_ += 300ms;
  budget_.Tick();
  ASSERT_TRUE(grown.has_value());
  EXPECT_EQ(*grown, BudgetRefusal::kClientBufferBudget);
  // A wait to grow is dropped, not answered, when its hold goes.
  grown.reset();
  BodyBudget::Hold other = Reserve("10.0.0.2", 3 * kMiB, &b);  // fills the pool
  ASSERT_TRUE(other);
  EXPECT_FALSE(budget_.Grow(grower, 1 * kMiB, on_grown));
  grower.Release();
  EXPECT_EQ(budget_.Waiting(), 0u);
  EXPECT_FALSE(grown.has_value());
  EXPECT_EQ(budget_.stats().buffered_bytes, 3 * kMiB);
}

TEST_F(BodyBudgetTest, ConnectionsPerClientAreCapped) {
  EXPECT_TRUE(budget_.OpenConnection("10.0.0.1"));
  EXPECT_TRUE(budget_.OpenConnection("10.0.0.1"));
  EXPECT_FALSE(budget_.OpenConnection("10.0.0.1"));
  EXPECT_TRUE(budget_.OpenConnection("10.0.0.2"));
  budget_.CloseConnection("10.0.0.1");
  EXPECT_TRUE(budget_.OpenConnection("10.0.0.1"));
  EXPECT_EQ(budget_.stats().refusals["client_connections"], 1u);
}

TEST_F(BodyBudgetTest, ShutdownDropsWaitersWithoutAnswering) {
  Outcome a, b, c;
  BodyBudget::Hold ha = Reserve("10.0.0.1", 3 * kMiB, &a);
  BodyBudget::Hold hb = Reserve("10.0.0.2", 3 * kMiB, &b);
  EXPECT_FALSE(Reserve("10.0.0.3", 3 * kMiB, &c));
  budget_.Shutdown();
  ha.Release();
  EXPECT_FALSE(c.decided);
  EXPECT_EQ(budget_.Waiting(), 0u);
}

TEST(DefaultMaxBufferedBytes, IsAQuarterOfMemoryAtMost256MiBAtLeastTwoBodies) {
  const std::size_t value = DefaultMaxBufferedBytes(4 * kMiB);
  EXPECT_LE(value, 256 * kMiB);
  EXPECT_GE(value, 8 * kMiB);
  EXPECT_EQ(DefaultMaxBufferedBytes(512 * kMiB), 1024 * kMiB);
}

}  // namespace
}  // namespace pimgate
