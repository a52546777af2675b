// Tests for the C++ plugin SDK (sdk::Run), spoken to with the generated gRPC stubs over unix
// sockets: Run served from a thread of this process (stopped by a SIGTERM aimed at that thread),
// and real plugin processes (pimgate_test_plugin, and the pimgate-jsonl-sink example plugin).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "google/protobuf/util/message_differencer.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "pimgate/v1/plugin.grpc.pb.h"
#include "sdk/cpp/pimgate_sdk.h"
#include "spdlog/sinks/ringbuffer_sink.h"
#include "spdlog/spdlog.h"
#include "tests/testing/test_env.h"

extern char** environ;

namespace pimgate::sdk {
namespace {

using namespace std::chrono_literals;
using ::grpc::health::v1::HealthCheckRequest;
using ::grpc::health::v1::HealthCheckResponse;

// In-process tests pass their address through RunOptions::default_address; an address
// inherited from the environment would override it. Done before main, while single-threaded.
const bool kAddressUnset = (unsetenv("PIMGATE_PLUGIN_ADDRESS"), true);

void BlockStopSignals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
}

// sdk::Run on its own thread. Stop() sends SIGTERM to that thread only; the thread blocks the
// stop signals before calling Run, so the signal can never take its default action (killing
// the test) even if it arrived before Run blocked it.
class InProcessPlugin {
 public:
  // `handler`: a Handler or a DeliveryHandler.
  template <typename AnyHandler>
  InProcessPlugin(AnyHandler handler, std::string address, int concurrency = 4)
      : address_(std::move(address)) {
    thread_ = std::thread([this, handler = std::move(handler), concurrency] {
      BlockStopSignals();
      RunOptions options;
      options.concurrency = concurrency;
      options.default_address = address_;
      exit_code_ = Run(handler, options);
    });
  }
  ~InProcessPlugin() {
    if (thread_.joinable()) Stop();
  }

  const std::string& address() const { return address_; }

  // SIGTERM; waits for Run to return and gives its result.
  int Stop() {
    // Not to kill the thread: Run waits for exactly this signal in sigwait().
    pthread_kill(thread_.native_handle(), SIGTERM);  // NOLINT(bugprone-bad-signal-to-kill-thread)
    return Join();
  }
  // Whether Run has returned (a plugin that could not bind returns at once).
  bool Done() const { return exit_code_ != -1; }
  // Waits for Run to return by itself.
  int Join() {
    thread_.join();
    return exit_code_;
  }

 private:
  const std::string address_;
  std::atomic<int> exit_code_{-1};
  std::thread thread_;
};

HealthCheckResponse::ServingStatus CheckHealth(const std::string& address,
                                               const std::string& service,
                                               grpc::StatusCode* code = nullptr) {
  auto stub = grpc::health::v1::Health::NewStub(
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + 1s);
  // A fresh channel: the call waits for its first connection instead of failing fast.
  context.set_wait_for_ready(true);
  HealthCheckRequest request;
  request.set_service(service);
  HealthCheckResponse response;
  grpc::Status status = stub->Check(&context, request, &response);
  if (code != nullptr) *code = status.error_code();
  return status.ok() ? response.status() : HealthCheckResponse::UNKNOWN;
}

// Hang guard of the waits below (generous: these tests must pass on a slow, busy machine); waits
// end when their event comes, never measure speed.
constexpr absl::Duration kHangGuard = absl::Seconds(60);

bool WaitServing(const std::string& address) {
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (std::chrono::steady_clock::now() < deadline) {
    if (CheckHealth(address, "") == HealthCheckResponse::SERVING) return true;
    std::this_thread::sleep_for(20ms);
  }
  return false;
}

// One Deliver stream, as pimgate's dispatcher opens it.
class DeliverStream {
 public:
  explicit DeliverStream(const std::string& address)
      : stub_(v1::EventHandler::NewStub(
            grpc::CreateChannel(address, grpc::InsecureChannelCredentials()))) {
    context_.set_deadline(std::chrono::system_clock::now() + 20s);
    // A fresh channel: the stream waits for its first connection instead of failing fast.
    context_.set_wait_for_ready(true);
    stream_ = stub_->Deliver(&context_);
  }

  bool Send(uint64_t sequence, const std::string& type, const std::string& resource_id = "r1",
            uint32_t attempt = 1) {
    v1::Delivery delivery;
    delivery.mutable_event()->set_sequence(sequence);
    delivery.mutable_event()->set_type(type);
    delivery.mutable_event()->set_resource_id(resource_id);
    delivery.set_attempt(attempt);
    return stream_->Write(delivery);
  }
  bool Send(const v1::Delivery& delivery) { return stream_->Write(delivery); }

  std::optional<v1::Ack> Read() {
    v1::Ack ack;
    if (!stream_->Read(&ack)) return std::nullopt;
    return ack;
  }

  // Reads `count` acks, keyed by sequence.
  std::map<uint64_t, v1::Ack> ReadAcks(size_t count, std::vector<uint64_t>* order = nullptr) {
    std::map<uint64_t, v1::Ack> acks;
    while (acks.size() < count) {
      std::optional<v1::Ack> ack = Read();
      if (!ack) break;
      if (order != nullptr) order->push_back(ack->sequence());
      acks[ack->sequence()] = *ack;
    }
    return acks;
  }

  void CloseSend() { stream_->WritesDone(); }
  grpc::Status Finish() { return stream_->Finish(); }

 private:
  std::unique_ptr<v1::EventHandler::Stub> stub_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::Delivery, v1::Ack>> stream_;
};

// The handler the process tests' plugin uses too (see tests/testing/test_plugin.cc).
Result TestHandler(const v1::Event& event, uint32_t attempt) {
  if (event.type() == "test.retry") return Result::Retry("asked to retry");
  if (event.type() == "test.reject") return Result::Reject("asked to reject");
  if (event.type() == "test.throw") throw std::runtime_error("handler exploded");
  if (event.type() == "test.attempt") return Result::Retry(absl::StrCat("attempt ", attempt));
  return Result::Ok();
}

std::string SocketAddress(const testing::TempDir& dir) { return "unix:" + dir.File("p.sock"); }

// Notifies `release` when it goes out of scope, unless the test did: a test that fails before it
// lets its held handler go must not leave the plugin's drain waiting for it. Declare it after the
// plugin, so it is destroyed (and the handler released) before the plugin stops.
class ReleaseOnExit {
 public:
  explicit ReleaseOnExit(absl::Notification& release) : release_(release) {}
  ~ReleaseOnExit() {
    if (!release_.HasBeenNotified()) release_.Notify();
  }

 private:
  absl::Notification& release_;
};

// A handler that acks every event OK; on "test.slow" events it first notifies `started`, then
// waits for `release`: the test decides when that delivery may finish, not a sleep.
auto GatedOnTestSlow(absl::Notification& started, absl::Notification& release) {
  return [&started, &release](const v1::Event& event, uint32_t) {
    if (event.type() == "test.slow") {
      started.Notify();
      release.WaitForNotificationWithTimeout(kHangGuard);
    }
    return Result::Ok();
  };
}

TEST(CppSdkTest, HealthServesTheServerAndEventHandler) {
  testing::TempDir dir;
  InProcessPlugin plugin(TestHandler, SocketAddress(dir));
  ASSERT_TRUE(WaitServing(plugin.address()));
  EXPECT_EQ(CheckHealth(plugin.address(), "pimgate.v1.EventHandler"), HealthCheckResponse::SERVING);
  grpc::StatusCode code = grpc::StatusCode::OK;
  CheckHealth(plugin.address(), "some.other.Service", &code);
  EXPECT_EQ(code, grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(plugin.Stop(), 0);
  struct stat st;
  EXPECT_NE(lstat(dir.File("p.sock").c_str(), &st), 0) << "socket file left behind";
}

TEST(CppSdkTest, AcksEveryOutcomeAndTurnsExceptionsIntoRetry) {
  testing::TempDir dir;
  InProcessPlugin plugin(TestHandler, SocketAddress(dir));
  ASSERT_TRUE(WaitServing(plugin.address()));
  DeliverStream stream(plugin.address());
  ASSERT_TRUE(stream.Send(1, "test.ok"));
  ASSERT_TRUE(stream.Send(2, "test.retry"));
  ASSERT_TRUE(stream.Send(3, "test.reject"));
  ASSERT_TRUE(stream.Send(4, "test.throw"));
  ASSERT_TRUE(stream.Send(5, "test.attempt", "r5", 7));
  // Half-closing does not cut off acks of deliveries still being handled.
  stream.CloseSend();
  std::map<uint64_t, v1::Ack> acks = stream.ReadAcks(5);
  ASSERT_EQ(acks.size(), 5u);
  EXPECT_EQ(acks[1].outcome(), v1::OUTCOME_OK);
  EXPECT_EQ(acks[2].outcome(), v1::OUTCOME_RETRY);
  EXPECT_EQ(acks[2].detail(), "asked to retry");
  EXPECT_EQ(acks[3].outcome(), v1::OUTCOME_REJECT);
  EXPECT_EQ(acks[3].detail(), "asked to reject");
  EXPECT_EQ(acks[4].outcome(), v1::OUTCOME_RETRY);
  EXPECT_EQ(acks[4].detail(), "handler exploded");
  EXPECT_EQ(acks[5].detail(), "attempt 7");
  EXPECT_TRUE(stream.Finish().ok());
  EXPECT_EQ(plugin.Stop(), 0);
}

TEST(CppSdkTest, RunsHandlersConcurrentlyAndAcksInCompletionOrder) {
  testing::TempDir dir;
  constexpr int kConcurrency = 4;
  absl::Mutex mu;
  int arrived = 0;
  int inside = 0;
  int max_inside = 0;
  absl::Notification release_first;
  auto handler = [&](const v1::Event& event, uint32_t) {
    {
      absl::MutexLock lock(&mu);
      ++arrived;
      max_inside = std::max(max_inside, ++inside);
      // All four must be in here at once to pass: proof of kConcurrency workers.
      auto all = [&] { return arrived >= kConcurrency; };
      mu.AwaitWithTimeout(absl::Condition(&all), kHangGuard);
    }
    // The first delivery finishes last: only once the test has read the other three acks. A
    // plugin that held acks back in delivery order would never send them (the hang guard ends
    // the wait, and the order shows it).
    if (event.sequence() == 1) release_first.WaitForNotificationWithTimeout(kHangGuard);
    absl::MutexLock lock(&mu);
    --inside;
    return Result::Ok();
  };
  InProcessPlugin plugin(handler, SocketAddress(dir), kConcurrency);
  ReleaseOnExit release_on_exit(release_first);
  ASSERT_TRUE(WaitServing(plugin.address()));
  DeliverStream stream(plugin.address());
  for (uint64_t sequence = 1; sequence <= kConcurrency; ++sequence) {
    ASSERT_TRUE(stream.Send(sequence, "test.ok", absl::StrCat("r", sequence)));
  }
  std::vector<uint64_t> order;
  std::map<uint64_t, v1::Ack> acks = stream.ReadAcks(kConcurrency - 1, &order);
  release_first.Notify();
  for (const auto& [sequence, ack] : stream.ReadAcks(1, &order)) acks[sequence] = ack;
  ASSERT_EQ(acks.size(), static_cast<size_t>(kConcurrency));
  for (const auto& [sequence, ack] : acks) EXPECT_EQ(ack.outcome(), v1::OUTCOME_OK) << sequence;
  EXPECT_EQ(order.back(), 1u);
  {
    absl::MutexLock lock(&mu);
    EXPECT_EQ(max_inside, kConcurrency);
  }
  EXPECT_EQ(plugin.Stop(), 0);
}

TEST(CppSdkTest, SigtermDrainsRunningHandlersThenReturnsZero) {
  testing::TempDir dir;
  absl::Notification started, release;
  auto handler = GatedOnTestSlow(started, release);
  // One worker: delivery 2 waits in the queue behind the slow delivery 1.
  InProcessPlugin plugin(handler, SocketAddress(dir), /*concurrency=*/1);
  ReleaseOnExit release_on_exit(release);
  ASSERT_TRUE(WaitServing(plugin.address()));

  auto health = grpc::health::v1::Health::NewStub(
      grpc::CreateChannel(plugin.address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext watch_context;
  watch_context.set_wait_for_ready(true);  // a fresh channel: wait for its first connection
  HealthCheckRequest watch_request;
  std::unique_ptr<grpc::ClientReader<HealthCheckResponse>> watch =
      health->Watch(&watch_context, watch_request);
  HealthCheckResponse update;
  ASSERT_TRUE(watch->Read(&update));
  EXPECT_EQ(update.status(), HealthCheckResponse::SERVING);

  DeliverStream stream(plugin.address());
  ASSERT_TRUE(stream.Send(1, "test.slow", "a"));
  ASSERT_TRUE(stream.Send(2, "test.ok", "b"));
  ASSERT_TRUE(started.WaitForNotificationWithTimeout(kHangGuard));
  // Most likely delivery 2 reaches the queue now; one that arrives once the plugin stops is
  // answered the same way.
  std::this_thread::sleep_for(50ms);
  int exit_code = -1;
  std::thread stopper([&] { exit_code = plugin.Stop(); });

  ASSERT_TRUE(watch->Read(&update));
  EXPECT_EQ(update.status(), HealthCheckResponse::NOT_SERVING);
  // Delivery 1 still runs and cannot finish before `release`: delivery 2 is answered RETRY
  // without waiting for it. Only then may delivery 1 finish, and the plugin waits for it. By
  // design, not by a sleep in the handler outlasting the signal.
  std::map<uint64_t, v1::Ack> acks = stream.ReadAcks(1);
  ASSERT_EQ(acks.count(2), 1u) << "delivery 2 was not answered while delivery 1 ran";
  release.Notify();
  acks.merge(stream.ReadAcks(1));
  ASSERT_EQ(acks.size(), 2u);
  EXPECT_EQ(acks[1].outcome(), v1::OUTCOME_OK) << "running handler was not let finish";
  EXPECT_EQ(acks[2].outcome(), v1::OUTCOME_RETRY);
  EXPECT_EQ(acks[2].detail(), "plugin is shutting down");
  EXPECT_FALSE(stream.Read().has_value());
  EXPECT_TRUE(stream.Finish().ok());
  EXPECT_FALSE(watch->Read(&update));
  EXPECT_TRUE(watch->Finish().ok());
  stopper.join();
  EXPECT_EQ(exit_code, 0);
}

// One DeliverBatch stream, as pimgate's dispatcher opens it (the handshake is left to the test).
class DeliverBatchStream {
 public:
  explicit DeliverBatchStream(const std::string& address)
      : stub_(v1::EventHandler::NewStub(
            grpc::CreateChannel(address, grpc::InsecureChannelCredentials()))) {
    context_.set_deadline(std::chrono::system_clock::now() + 20s);
    // A fresh channel: the stream waits for its first connection instead of failing fast.
    context_.set_wait_for_ready(true);
    stream_ = stub_->DeliverBatch(&context_);
  }

  bool SendBatch(const v1::DeliveryBatch& batch) { return stream_->Write(batch); }

  // Writes one DeliveryBatch of (sequence, type) deliveries, each of its own resource.
  bool Send(const std::vector<std::pair<uint64_t, std::string>>& deliveries) {
    v1::DeliveryBatch batch;
    for (const auto& [sequence, type] : deliveries) {
      v1::Delivery* delivery = batch.add_deliveries();
      delivery->mutable_event()->set_sequence(sequence);
      delivery->mutable_event()->set_type(type);
      delivery->mutable_event()->set_resource_id(absl::StrCat("r", sequence));
      delivery->set_attempt(1);
    }
    return stream_->Write(batch);
  }

  std::optional<v1::AckBatch> Read() {
    v1::AckBatch batch;
    if (!stream_->Read(&batch)) return std::nullopt;
    return batch;
  }

  // Reads AckBatches until `count` acks have come, keyed by sequence.
  std::map<uint64_t, v1::Ack> ReadAcks(size_t count) {
    std::map<uint64_t, v1::Ack> acks;
    while (acks.size() < count) {
      std::optional<v1::AckBatch> batch = Read();
      if (!batch) break;
      for (const v1::Ack& ack : batch->acks()) acks[ack.sequence()] = ack;
    }
    return acks;
  }

  void CloseSend() { stream_->WritesDone(); }
  grpc::Status Finish() { return stream_->Finish(); }

 private:
  std::unique_ptr<v1::EventHandler::Stub> stub_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::DeliveryBatch, v1::AckBatch>> stream_;
};

TEST(CppSdkTest, DeliverBatchAnswersTheHandshakeThenAcksEveryDelivery) {
  testing::TempDir dir;
  InProcessPlugin plugin(TestHandler, SocketAddress(dir));
  ASSERT_TRUE(WaitServing(plugin.address()));
  DeliverBatchStream stream(plugin.address());
  ASSERT_TRUE(stream.Send({}));  // pimgate's opening batch
  std::optional<v1::AckBatch> handshake = stream.Read();
  ASSERT_TRUE(handshake.has_value());
  EXPECT_EQ(handshake->acks_size(), 0);

  ASSERT_TRUE(stream.Send({{1, "test.ok"}, {2, "test.retry"}, {3, "test.reject"}}));
  ASSERT_TRUE(stream.Send({{4, "test.throw"}, {5, "test.ok"}}));
  stream.CloseSend();  // half-closing does not cut off the acks still due
  std::map<uint64_t, v1::Ack> acks = stream.ReadAcks(5);
  ASSERT_EQ(acks.size(), 5u);
  EXPECT_EQ(acks[1].outcome(), v1::OUTCOME_OK);
  EXPECT_EQ(acks[2].outcome(), v1::OUTCOME_RETRY);
  EXPECT_EQ(acks[2].detail(), "asked to retry");
  EXPECT_EQ(acks[3].outcome(), v1::OUTCOME_REJECT);
  EXPECT_EQ(acks[4].outcome(), v1::OUTCOME_RETRY);
  EXPECT_EQ(acks[4].detail(), "handler exploded");
  EXPECT_EQ(acks[5].outcome(), v1::OUTCOME_OK);
  EXPECT_FALSE(stream.Read().has_value());
  EXPECT_TRUE(stream.Finish().ok());
  EXPECT_EQ(plugin.Stop(), 0);
}

TEST(CppSdkTest, DeliverBatchSigtermLetsRunningHandlersFinishAndRetriesTheRest) {
  testing::TempDir dir;
  absl::Notification started, release;
  auto handler = GatedOnTestSlow(started, release);
  // One worker: delivery 2 of the batch waits in the queue behind the slow delivery 1.
  InProcessPlugin plugin(handler, SocketAddress(dir), /*concurrency=*/1);
  ReleaseOnExit release_on_exit(release);
  ASSERT_TRUE(WaitServing(plugin.address()));
  DeliverBatchStream stream(plugin.address());
  ASSERT_TRUE(stream.Send({}));
  ASSERT_TRUE(stream.Read().has_value());
  ASSERT_TRUE(stream.Send({{1, "test.slow"}, {2, "test.ok"}}));
  ASSERT_TRUE(started.WaitForNotificationWithTimeout(kHangGuard));
  int exit_code = -1;
  std::thread stopper([&] { exit_code = plugin.Stop(); });
  // As above: delivery 2 is answered while delivery 1 still runs, then delivery 1 may finish.
  std::map<uint64_t, v1::Ack> acks = stream.ReadAcks(1);
  ASSERT_EQ(acks.count(2), 1u) << "delivery 2 was not answered while delivery 1 ran";
  release.Notify();
  acks.merge(stream.ReadAcks(1));
  ASSERT_EQ(acks.size(), 2u);
  EXPECT_EQ(acks[1].outcome(), v1::OUTCOME_OK) << "running handler was not let finish";
  EXPECT_EQ(acks[2].outcome(), v1::OUTCOME_RETRY);
  EXPECT_EQ(acks[2].detail(), "plugin is shutting down");
  EXPECT_FALSE(stream.Read().has_value());
  EXPECT_TRUE(stream.Finish().ok());
  stopper.join();
  EXPECT_EQ(exit_code, 0);
}

google::protobuf::Timestamp Time(int64_t seconds, int32_t nanos) {
  google::protobuf::Timestamp time;
  time.set_seconds(seconds);
  time.set_nanos(nanos);
  return time;
}

// An event with every field set, as pimgate stores them for `type` (data: a product, a product
// model, an asset or an Event Platform event's data, with every kind of Struct value).
v1::Event FullEvent(uint64_t sequence, const std::string& type, v1::Origin origin) {
  v1::Event event;
  event.set_sequence(sequence);
  event.set_id(absl::StrCat("id-", sequence));
  event.set_source("akeneo");
  event.set_type(type);
  event.set_kind(std::string(type.substr(0, type.find('.'))));
  event.set_resource_id(absl::StrCat("resource-", sequence, "-é"));
  event.set_original_type(absl::StrCat("com.akeneo.pim.v1.", type));
  *event.mutable_occurred_at() = Time(1'796'000'000 + sequence, 123'000'000);
  *event.mutable_version_at() = Time(1'796'000'001 + sequence, 456'000'000);
  *event.mutable_received_at() = Time(1'796'000'002 + sequence, 789'000'000);
  event.set_author("julia");
  event.set_author_type(origin == v1::ORIGIN_EVENT_PLATFORM ? "user" : "ui");
  event.set_pim_source("https://pim.example.com");
  event.set_origin(origin);
  event.set_stale(true);  // fields after `data` (16 to 18) are header fields too
  event.set_request_id(absl::StrCat("request-", sequence));
  event.set_subject(origin == v1::ORIGIN_EVENT_PLATFORM ? "0190fe8a-6213-76ce-8a9f-ba36a5ef555a"
                                                        : "");
  auto& fields = *event.mutable_data()->mutable_fields();
  fields["identifier"].set_string_value(absl::StrCat("sku-", sequence));
  fields["enabled"].set_bool_value(sequence % 2 == 0);
  fields["parent"].set_null_value(google::protobuf::NULL_VALUE);
  fields["quantity"].set_number_value(12.5);
  auto& categories = *fields["categories"].mutable_list_value();
  categories.add_values()->set_string_value("shoes");
  categories.add_values()->set_string_value("summer_2026");
  auto& values = *fields["values"].mutable_struct_value()->mutable_fields();
  auto& name = *values["name"].mutable_list_value()->add_values()->mutable_struct_value();
  (*name.mutable_fields())["locale"].set_string_value("fr_FR");
  (*name.mutable_fields())["data"].set_string_value("Chaussure d'été");
  return event;
}

// What a DeliveryHandler saw of each event, by sequence. Thread-safe.
class SeenDeliveries {
 public:
  struct Seen {
    v1::Event event;
    google::protobuf::Struct data;
    uint32_t attempt = 0;
  };

  // A handler recording event() and, unless the event's type is "test.header", data(); data()
  // is asked twice (the second call gives the same message). The event's type decides its
  // answer as TestHandler's does.
  DeliveryHandler Handler() {
    return [this](const Delivery& delivery) {
      Seen seen;
      seen.event = delivery.event();
      seen.attempt = delivery.attempt();
      if (delivery.event().type() != "test.header") {
        const google::protobuf::Struct& data = delivery.data();
        if (&data != &delivery.data()) throw std::logic_error("data() decoded twice");
        seen.data = data;
      }
      {
        absl::MutexLock lock(&mu_);
        seen_[delivery.event().sequence()] = std::move(seen);
      }
      return TestHandler(delivery.event(), delivery.attempt());
    };
  }

  std::map<uint64_t, Seen> Get() {
    absl::MutexLock lock(&mu_);
    return seen_;
  }

 private:
  absl::Mutex mu_;
  std::map<uint64_t, Seen> seen_ ABSL_GUARDED_BY(mu_);
};

using ::google::protobuf::util::MessageDifferencer;

TEST(CppSdkTest, DeliveryHandlerGetsTheHeaderAndDataOfAFullDecode) {
  std::vector<v1::Event> events = {
      FullEvent(1, "product.updated", v1::ORIGIN_EVENTS_API),
      FullEvent(2, "product_model.created", v1::ORIGIN_EVENTS_API),
      FullEvent(3, "asset.updated", v1::ORIGIN_RECONCILIATION),
      FullEvent(4, "product.updated.delta", v1::ORIGIN_EVENT_PLATFORM),
      FullEvent(5, "test.header", v1::ORIGIN_EVENT_PLATFORM),  // its handler never asks for data
  };
  events[4].clear_data();
  // A field this SDK does not know (a newer pimgate's): kept in the header's unknown fields, as
  // a full decode keeps it.
  events[0].GetReflection()->MutableUnknownFields(&events[0])->AddVarint(99, 42);
  SeenDeliveries seen;
  testing::TempDir dir;
  InProcessPlugin plugin(seen.Handler(), SocketAddress(dir));
  ASSERT_TRUE(WaitServing(plugin.address()));
  DeliverBatchStream stream(plugin.address());
  ASSERT_TRUE(stream.Send({}));
  ASSERT_TRUE(stream.Read().has_value());
  v1::DeliveryBatch batch;
  for (const v1::Event& event : events) {
    v1::Delivery* delivery = batch.add_deliveries();
    *delivery->mutable_event() = event;
    delivery->set_attempt(static_cast<uint32_t>(event.sequence()));
  }
  ASSERT_TRUE(stream.SendBatch(batch));
  std::map<uint64_t, v1::Ack> acks = stream.ReadAcks(events.size());
  // One event through Deliver (the one-delivery-per-message stream) too.
  DeliverStream single(plugin.address());
  v1::Delivery delivery;
  *delivery.mutable_event() = FullEvent(6, "product.deleted", v1::ORIGIN_EVENTS_API);
  delivery.set_attempt(6);
  events.push_back(delivery.event());
  ASSERT_TRUE(single.Send(delivery));
  acks.merge(single.ReadAcks(1));
  ASSERT_EQ(acks.size(), events.size());

  std::map<uint64_t, SeenDeliveries::Seen> got = seen.Get();
  for (const v1::Event& full : events) {
    SCOPED_TRACE(full.type());
    EXPECT_EQ(acks[full.sequence()].outcome(), v1::OUTCOME_OK) << acks[full.sequence()].detail();
    ASSERT_EQ(got.count(full.sequence()), 1u);
    const SeenDeliveries::Seen& lazy = got[full.sequence()];
    v1::Event header = full;
    header.clear_data();
    std::string difference;
    MessageDifferencer differencer;
    differencer.ReportDifferencesToString(&difference);
    EXPECT_TRUE(differencer.Compare(header, lazy.event)) << difference;
    EXPECT_FALSE(lazy.event.has_data());
    EXPECT_TRUE(MessageDifferencer::Equals(lazy.data, full.data()));
    EXPECT_EQ(lazy.attempt, full.sequence());
  }
  EXPECT_EQ(got[1].event.GetReflection()->GetUnknownFields(got[1].event).field_count(), 1);
  EXPECT_EQ(got[4].data.fields_size(), 6);  // really decoded, not two empty messages compared
  single.CloseSend();
  stream.CloseSend();
  EXPECT_TRUE(single.Finish().ok());
  EXPECT_FALSE(stream.Read().has_value());
  EXPECT_TRUE(stream.Finish().ok());
  EXPECT_EQ(plugin.Stop(), 0);
}

TEST(CppSdkTest, CallHandlerRunsADeliveryHandlerAsADeliveryWould) {
  const v1::Event full = FullEvent(3, "product.updated", v1::ORIGIN_EVENTS_API);
  v1::Event header = full;
  header.clear_data();
  Result result = CallHandler(
      [&](const Delivery& delivery) {
        EXPECT_TRUE(MessageDifferencer::Equals(delivery.event(), header));
        EXPECT_TRUE(MessageDifferencer::Equals(delivery.data(), full.data()));
        EXPECT_EQ(delivery.attempt(), 2u);
        return Result::Reject("seen");
      },
      full, 2);
  EXPECT_EQ(result.outcome, v1::OUTCOME_REJECT);
  EXPECT_EQ(result.detail, "seen");
  result = CallHandler(
      [](const Delivery&) -> Result { throw std::runtime_error("handler exploded"); }, full);
  EXPECT_EQ(result.outcome, v1::OUTCOME_RETRY);
  EXPECT_EQ(result.detail, "handler exploded");
}

// A delivery whose event's serialized bytes are those of `sequence` followed by `garbage`: the
// event field's occurrences merge on the wire, so the plugin reads them as one event.
// A delivery of an event serialized as pimgate stores it: its other fields (`type`, and a stale
// `sequence` when `stale_sequence` is set, which the last occurrence overrides), then `garbage`,
// then `sequence` last, after data (core/log/event_log.cc appends it).
v1::Delivery Malformed(uint64_t sequence, const std::string& type, const std::string& garbage,
                       uint64_t stale_sequence = 0) {
  v1::Event head;
  head.set_type(type);
  head.set_sequence(stale_sequence);
  v1::Event tail;
  tail.set_sequence(sequence);
  v1::Delivery delivery;
  delivery.set_attempt(1);
  delivery.GetReflection()->MutableUnknownFields(&delivery)->AddLengthDelimited(
      1, head.SerializeAsString() + garbage + tail.SerializeAsString());
  return delivery;
}

// The acks of a plugin with `handler` (a Handler or a DeliveryHandler) for two events whose
// framing is fine but a value does not decode and a good one, sent in one DeliverBatch.
template <typename AnyHandler>
std::map<uint64_t, v1::Ack> AcksForMalformedEvents(AnyHandler handler) {
  testing::TempDir dir;
  InProcessPlugin plugin(handler, SocketAddress(dir));
  EXPECT_TRUE(WaitServing(plugin.address()));
  DeliverBatchStream stream(plugin.address());
  EXPECT_TRUE(stream.Send({}));
  EXPECT_TRUE(stream.Read().has_value());
  v1::DeliveryBatch batch;
  // Field 4 (type) is not UTF-8; an earlier sequence field (99) is overridden by the last one.
  *batch.add_deliveries() =
      Malformed(8, "test.ok", std::string("\x22\x02\xff\xfe", 4), /*stale_sequence=*/99);
  // Field 15 (data): its first map entry's key field says 9 bytes, 3 follow.
  *batch.add_deliveries() = Malformed(9, "test.ok", std::string("\x7a\x05\x0a\x03\x0a\x09x", 7));
  v1::Delivery* good = batch.add_deliveries();
  *good->mutable_event() = FullEvent(10, "test.ok", v1::ORIGIN_EVENTS_API);
  EXPECT_TRUE(stream.SendBatch(batch));
  std::map<uint64_t, v1::Ack> acks = stream.ReadAcks(3);
  stream.CloseSend();
  EXPECT_FALSE(stream.Read().has_value());
  EXPECT_TRUE(stream.Finish().ok());
  EXPECT_EQ(plugin.Stop(), 0);
  return acks;
}

TEST(CppSdkTest, EventThatDoesNotDecodeIsAnsweredRetry) {
  SeenDeliveries seen;
  for (bool lazy : {true, false}) {
    SCOPED_TRACE(lazy ? "DeliveryHandler" : "Handler");
    std::map<uint64_t, v1::Ack> acks =
        lazy ? AcksForMalformedEvents(seen.Handler()) : AcksForMalformedEvents(TestHandler);
    ASSERT_EQ(acks.size(), 3u);
    EXPECT_EQ(acks.count(99), 0u) << "the ack names the first sequence field, not the last";
    EXPECT_EQ(acks[8].outcome(), v1::OUTCOME_RETRY);
    EXPECT_TRUE(absl::StartsWith(acks[8].detail(), "event does not decode as pimgate.v1.Event"))
        << acks[8].detail();
    EXPECT_TRUE(absl::StrContains(acks[8].detail(), "UTF-8")) << acks[8].detail();
    EXPECT_EQ(acks[9].outcome(), v1::OUTCOME_RETRY);
    // A DeliveryHandler's event decodes without its data; data() throws when asked.
    if (lazy) {
      EXPECT_EQ(acks[9].detail(),
                "the data of event 9 does not decode as google.protobuf.Struct (a malformed "
                "value)");
    } else {
      EXPECT_EQ(acks[9].detail(),
                "event does not decode as pimgate.v1.Event (18 bytes): a field's value is "
                "malformed (e.g. a string that is not UTF-8)");
    }
    EXPECT_EQ(acks[10].outcome(), v1::OUTCOME_OK);
  }
  std::map<uint64_t, SeenDeliveries::Seen> got = seen.Get();
  EXPECT_EQ(got.count(8), 0u) << "a handler got an event that does not decode";
  EXPECT_EQ(got.count(10), 1u);
}

// Captures the default logger's lines while it lives (set before the plugin starts, restored
// after it stopped: never swapped while the plugin logs).
class CapturedLog {
 public:
  CapturedLog()
      : sink_(std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(1000)),
        previous_(spdlog::default_logger()) {
    spdlog::set_default_logger(std::make_shared<spdlog::logger>("capture", sink_));
  }
  ~CapturedLog() { spdlog::set_default_logger(previous_); }

  // Waits (hang-guarded) until a line containing `text` was logged.
  bool Await(const std::string& text) {
    const absl::Time deadline = absl::Now() + kHangGuard;
    while (absl::Now() < deadline) {
      for (const std::string& line : sink_->last_formatted()) {
        if (absl::StrContains(line, text)) return true;
      }
      std::this_thread::sleep_for(10ms);
    }
    return false;
  }

 private:
  std::shared_ptr<spdlog::sinks::ringbuffer_sink_mt> sink_;
  std::shared_ptr<spdlog::logger> previous_;
};

// An event whose framing is broken cannot be answered: its sequence (last, after data, as pimgate
// writes it) cannot be found. The stream message does not decode and the stream ends with
// INTERNAL, but only after the acks of the deliveries handled before it are written.
TEST(CppSdkTest, StreamMessageThatDoesNotDecodeEndsTheStreamAfterEarlierAcks) {
  CapturedLog log;
  testing::TempDir dir;
  absl::Notification started, release;
  InProcessPlugin plugin(GatedOnTestSlow(started, release), SocketAddress(dir));
  {
    ReleaseOnExit release_on_exit(release);
    ASSERT_TRUE(WaitServing(plugin.address()));
    DeliverBatchStream stream(plugin.address());
    ASSERT_TRUE(stream.Send({}));
    ASSERT_TRUE(stream.Read().has_value());
    ASSERT_TRUE(stream.Send({{1, "test.slow"}, {2, "test.ok"}}));
    ASSERT_TRUE(started.WaitForNotificationWithTimeout(kHangGuard));
    v1::DeliveryBatch bad;
    // Field 2 (id) says 5 bytes, 2 follow: it swallows the sequence field and runs past the end.
    *bad.add_deliveries() = Malformed(7, "test.ok",
                                      std::string("\x12\x05"
                                                  "ab",
                                                  4));
    ASSERT_TRUE(stream.SendBatch(bad));
    // The plugin has read the bad message while delivery 1 still runs.
    ASSERT_TRUE(log.Await("does not decode; ending the stream"));
    release.Notify();
    std::map<uint64_t, v1::Ack> acks = stream.ReadAcks(2);
    ASSERT_EQ(acks.size(), 2u) << "acks of deliveries handled before were dropped";
    EXPECT_EQ(acks[1].outcome(), v1::OUTCOME_OK);
    EXPECT_EQ(acks[2].outcome(), v1::OUTCOME_OK);
    EXPECT_EQ(acks.count(0), 0u) << "an ack for sequence 0";
    EXPECT_FALSE(stream.Read().has_value());
    grpc::Status status = stream.Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INTERNAL);
    EXPECT_TRUE(absl::StrContains(status.error_message(), "pimgate.v1.DeliveryBatch"))
        << status.error_message();
  }
  EXPECT_EQ(plugin.Stop(), 0);
}

// Field number 0 is not a field, at any level the SDK reads (protobuf rejects it): the stream
// message does not decode, on either stream method.
TEST(CppSdkTest, FieldNumberZeroDoesNotDecode) {
  testing::TempDir dir;
  InProcessPlugin plugin(TestHandler, SocketAddress(dir));
  ASSERT_TRUE(WaitServing(plugin.address()));
  // Field 0, length-delimited (a tag of 0 itself would read as the end of the message).
  const std::string field_zero("\x02\x01x", 3);
  // In the event, in the Delivery, in the DeliveryBatch.
  v1::DeliveryBatch in_event;
  *in_event.add_deliveries() = Malformed(7, "test.ok", field_zero);
  v1::DeliveryBatch in_delivery;
  v1::Delivery* delivery = in_delivery.add_deliveries();
  delivery->mutable_event()->set_sequence(7);
  delivery->GetReflection()->MutableUnknownFields(delivery)->AddLengthDelimited(0, "x");
  v1::DeliveryBatch in_batch;
  in_batch.add_deliveries()->mutable_event()->set_sequence(7);
  in_batch.GetReflection()->MutableUnknownFields(&in_batch)->AddLengthDelimited(0, "x");
  for (const v1::DeliveryBatch* batch : {&in_event, &in_delivery, &in_batch}) {
    SCOPED_TRACE(batch->ShortDebugString());
    DeliverBatchStream stream(plugin.address());
    ASSERT_TRUE(stream.Send({}));
    ASSERT_TRUE(stream.Read().has_value());
    ASSERT_TRUE(stream.SendBatch(*batch));
    EXPECT_FALSE(stream.Read().has_value()) << "an ack for a message that does not decode";
    EXPECT_EQ(stream.Finish().error_code(), grpc::StatusCode::INTERNAL);
  }
  DeliverStream stream(plugin.address());
  ASSERT_TRUE(stream.Send(in_event.deliveries(0)));
  EXPECT_FALSE(stream.Read().has_value());
  EXPECT_EQ(stream.Finish().error_code(), grpc::StatusCode::INTERNAL);
  EXPECT_EQ(plugin.Stop(), 0);
}

TEST(CppSdkTest, ReplacesAStaleSocketButNotALiveOne) {
  testing::TempDir dir;
  const std::string path = dir.File("p.sock");
  // A socket file nobody listens on, as a killed plugin leaves behind.
  {
    const int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
    ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    close(fd);
  }
  InProcessPlugin first(TestHandler, "unix:" + path);
  ASSERT_TRUE(WaitServing(first.address()));
  InProcessPlugin second(TestHandler, "unix:" + path);
  EXPECT_EQ(second.Join(), 1);
  EXPECT_EQ(CheckHealth(first.address(), ""), HealthCheckResponse::SERVING);
  EXPECT_EQ(first.Stop(), 0);
}

TEST(CppSdkTest, BindFailureReturnsOne) {
  InProcessPlugin plugin(TestHandler, "unix:/nonexistent-pimgate-dir/p.sock");
  EXPECT_EQ(plugin.Join(), 1);
}

// A TCP port that was free a moment ago.
int PickPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(addr);
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &length) == 0) {
    port = ntohs(addr.sin_port);
  }
  close(fd);
  return port;
}

TEST(CppSdkTest, TcpPortOfALivePluginIsNotShared) {
  // gRPC binds with SO_REUSEPORT by default: two plugins would then split pimgate's connections.
  // The port is free when picked, but another process (tests run in parallel) may take it before
  // the first plugin binds it: that plugin then returns 1 at once, and a new port is tried.
  std::unique_ptr<InProcessPlugin> first;
  for (int attempt = 0; attempt < 5 && first == nullptr; ++attempt) {
    const int port = PickPort();
    ASSERT_GT(port, 0);
    auto plugin = std::make_unique<InProcessPlugin>(TestHandler, absl::StrCat("127.0.0.1:", port));
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    while (!plugin->Done() && std::chrono::steady_clock::now() < deadline &&
           CheckHealth(plugin->address(), "") != HealthCheckResponse::SERVING) {
      std::this_thread::sleep_for(20ms);
    }
    if (plugin->Done()) {
      EXPECT_EQ(plugin->Join(), 1);  // the port was taken meanwhile
      continue;
    }
    ASSERT_EQ(CheckHealth(plugin->address(), ""), HealthCheckResponse::SERVING);
    first = std::move(plugin);
  }
  ASSERT_NE(first, nullptr) << "no picked port stayed free until the plugin bound it";
  InProcessPlugin second(TestHandler, first->address());
  EXPECT_EQ(second.Join(), 1);
  EXPECT_EQ(first->Stop(), 0);
}

// A child process started with posix_spawn (safe in this multithreaded process); SIGKILLed by
// the destructor if still running.
class ChildProcess {
 public:
  ChildProcess(const std::string& binary, const std::vector<std::string>& env) {
    std::vector<std::string> env_strings;
    for (char** entry = environ; *entry != nullptr; ++entry) env_strings.emplace_back(*entry);
    env_strings.insert(env_strings.end(), env.begin(), env.end());
    std::vector<char*> envp;
    envp.reserve(env_strings.size() + 1);
    for (std::string& entry : env_strings) envp.push_back(entry.data());
    envp.push_back(nullptr);
    std::string arg0 = binary;
    char* argv[] = {arg0.data(), nullptr};
    if (posix_spawn(&pid_, binary.c_str(), nullptr, nullptr, argv, envp.data()) != 0) pid_ = -1;
  }
  ~ChildProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  pid_t pid() const { return pid_; }

  // The wait status once the process has ended.
  int Wait() {
    int status = -1;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    return status;
  }
  void SendSigterm() { kill(pid_, SIGTERM); }
  int Terminate() {
    SendSigterm();
    return Wait();
  }

 private:
  pid_t pid_ = -1;
};

TEST(CppSdkTest, PluginProcessServesAtEnvAddressAndExitsZeroOnSigterm) {
  testing::TempDir dir;
  const std::string address = "unix:" + dir.File("p.sock");
  ChildProcess plugin(PIMGATE_TEST_PLUGIN,
                      {"PIMGATE_PLUGIN_ADDRESS=" + address, "PIMGATE_PLUGIN_NAME=proc"});
  ASSERT_GT(plugin.pid(), 0);
  ASSERT_TRUE(WaitServing(address));
  DeliverStream stream(address);
  ASSERT_TRUE(stream.Send(10, "test.ok"));
  ASSERT_TRUE(stream.Send(11, "test.throw", "r2"));
  std::map<uint64_t, v1::Ack> acks = stream.ReadAcks(2);
  EXPECT_EQ(acks[10].outcome(), v1::OUTCOME_OK);
  EXPECT_EQ(acks[11].outcome(), v1::OUTCOME_RETRY);
  EXPECT_EQ(acks[11].detail(), "handler exploded");
  plugin.SendSigterm();
  // Like pimgate, keep reading: the plugin ends the stream once its acks are out.
  EXPECT_FALSE(stream.Read().has_value());
  EXPECT_TRUE(stream.Finish().ok());
  const int status = plugin.Wait();
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

std::vector<std::string> ReadLines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

TEST(CppSdkTest, PluginProcessWithDeliveryHandlerGetsEventsInOrder) {
  testing::TempDir dir;
  const std::string address = "unix:" + dir.File("p.sock");
  const std::string record = dir.File("record.txt");
  // One worker: handlers run in the order the deliveries arrived.
  ChildProcess plugin(
      PIMGATE_TEST_PLUGIN,
      {"PIMGATE_PLUGIN_ADDRESS=" + address, "PIMGATE_PLUGIN_NAME=lazy", "TEST_PLUGIN_LAZY=1",
       "TEST_PLUGIN_CONCURRENCY=1", "TEST_PLUGIN_RECORD=" + record});
  ASSERT_GT(plugin.pid(), 0);
  ASSERT_TRUE(WaitServing(address));
  DeliverBatchStream stream(address);
  ASSERT_TRUE(stream.Send({}));
  ASSERT_TRUE(stream.Read().has_value());
  std::vector<std::string> expected;
  uint64_t sequence = 0;
  for (int batch_number = 0; batch_number < 3; ++batch_number) {
    v1::DeliveryBatch batch;
    for (int i = 0; i < 10; ++i) {
      ++sequence;
      const std::string type = sequence % 3 == 0 ? "test.header" : "product.updated";
      v1::Delivery* delivery = batch.add_deliveries();
      *delivery->mutable_event() = FullEvent(sequence, type, v1::ORIGIN_EVENTS_API);
      delivery->set_attempt(1);
      expected.push_back(absl::StrCat(sequence, " ", type, " ", type == "test.header" ? "-" : "6"));
    }
    ASSERT_TRUE(stream.SendBatch(batch));
  }
  std::map<uint64_t, v1::Ack> acks = stream.ReadAcks(expected.size());
  ASSERT_EQ(acks.size(), expected.size());
  for (const auto& [acked, ack] : acks) EXPECT_EQ(ack.outcome(), v1::OUTCOME_OK) << acked;
  // Every handler call appended its line before it returned, and so before its ack.
  EXPECT_EQ(ReadLines(record), expected);
  plugin.SendSigterm();
  EXPECT_FALSE(stream.Read().has_value());
  EXPECT_TRUE(stream.Finish().ok());
  const int status = plugin.Wait();
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST(JsonlSinkTest, AppendsOneJsonLinePerEventAndRotates) {
  testing::TempDir dir;
  const std::string file = dir.File("events.jsonl");
  const std::string address = "unix:" + dir.File("p.sock");
  ChildProcess sink(PIMGATE_JSONL_SINK,
                    {"PIMGATE_PLUGIN_ADDRESS=" + address, "JSONL_SINK_PATH=" + file,
                     "JSONL_SINK_MAX_BYTES=1KiB", "JSONL_SINK_KEEP=2", "JSONL_SINK_FSYNC=always"});
  ASSERT_TRUE(WaitServing(address));
  DeliverStream stream(address);
  constexpr int kEvents = 20;
  for (int i = 1; i <= kEvents; ++i) {
    v1::Delivery delivery;
    v1::Event* event = delivery.mutable_event();
    event->set_sequence(i);
    event->set_type("product.updated");
    event->set_resource_id(absl::StrCat("uuid-", i));
    (*event->mutable_data()->mutable_fields())["family"].set_string_value(std::string(150, 'f'));
    delivery.set_attempt(1);
    ASSERT_TRUE(stream.Send(delivery));
    std::optional<v1::Ack> ack = stream.Read();  // one at a time: file order = sequence order
    ASSERT_TRUE(ack.has_value());
    EXPECT_EQ(ack->sequence(), static_cast<uint64_t>(i));
    EXPECT_EQ(ack->outcome(), v1::OUTCOME_OK) << ack->detail();
  }
  EXPECT_FALSE(std::filesystem::exists(file + ".3")) << "JSONL_SINK_KEEP=2 not honoured";
  std::vector<std::string> lines;
  for (const std::string& part : {file + ".2", file + ".1", file}) {
    ASSERT_TRUE(std::filesystem::exists(part)) << part;
    EXPECT_LE(std::filesystem::file_size(part), 1024u) << part;
    for (const std::string& line : ReadLines(part)) lines.push_back(line);
  }
  ASSERT_FALSE(lines.empty());
  int previous = 0;
  for (const std::string& line : lines) {
    EXPECT_TRUE(absl::StartsWith(line, "{") && absl::EndsWith(line, "}")) << line;
    EXPECT_TRUE(absl::StrContains(line, "\"resource_id\":\"uuid-")) << "proto names: " << line;
    const size_t at = line.find("\"sequence\":\"");
    ASSERT_NE(at, std::string::npos) << line;
    const int sequence = std::atoi(line.c_str() + at + 12);
    EXPECT_GT(sequence, previous) << "out of order or duplicated";
    previous = sequence;
  }
  EXPECT_EQ(previous, kEvents);
  sink.SendSigterm();
  EXPECT_FALSE(stream.Read().has_value());
  EXPECT_TRUE(stream.Finish().ok());
  const int status = sink.Wait();
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST(JsonlSinkTest, KeepZeroStartsAfreshAndFsyncNeverStillAppends) {
  testing::TempDir dir;
  const std::string file = dir.File("events.jsonl");
  const std::string address = "unix:" + dir.File("p.sock");
  ChildProcess sink(PIMGATE_JSONL_SINK,
                    {"PIMGATE_PLUGIN_ADDRESS=" + address, "JSONL_SINK_PATH=" + file,
                     "JSONL_SINK_MAX_BYTES=300", "JSONL_SINK_KEEP=0", "JSONL_SINK_FSYNC=never"});
  ASSERT_TRUE(WaitServing(address));
  DeliverStream stream(address);
  for (int i = 1; i <= 5; ++i) {
    ASSERT_TRUE(stream.Send(i, "product.updated", absl::StrCat("uuid-", i, std::string(100, 'u'))));
    std::optional<v1::Ack> ack = stream.Read();
    ASSERT_TRUE(ack.has_value());
    EXPECT_EQ(ack->outcome(), v1::OUTCOME_OK) << ack->detail();
  }
  EXPECT_FALSE(std::filesystem::exists(file + ".1"));
  const std::vector<std::string> lines = ReadLines(file);
  ASSERT_FALSE(lines.empty());
  EXPECT_LT(lines.size(), 5u) << "never rotated";
  EXPECT_TRUE(absl::StrContains(lines.back(), "\"sequence\":\"5\""));
  sink.SendSigterm();
  EXPECT_FALSE(stream.Read().has_value());
  EXPECT_TRUE(stream.Finish().ok());
  const int status = sink.Wait();
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST(JsonlSinkTest, InvalidSettingExitsWithConfigError) {
  testing::TempDir dir;
  ChildProcess sink(PIMGATE_JSONL_SINK,
                    {"PIMGATE_PLUGIN_ADDRESS=unix:" + dir.File("p.sock"),
                     "JSONL_SINK_PATH=" + dir.File("e.jsonl"), "JSONL_SINK_FSYNC=sometimes"});
  const int status = sink.Wait();
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 2);
}

}  // namespace
}  // namespace pimgate::sdk
