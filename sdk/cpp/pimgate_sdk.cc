// pimgate C++ plugin SDK: serves pimgate.v1.EventHandler (gRPC callback API, one reactor per
// stream; both Deliver and DeliverBatch) and grpc.health.v1.Health, runs handlers on a fixed
// worker pool, drains on SIGTERM.
#include "sdk/cpp/pimgate_sdk.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/match.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "google/protobuf/arena.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "pimgate/v1/plugin.grpc.pb.h"
#include "spdlog/spdlog.h"

namespace pimgate::sdk {
namespace {

using ::grpc::health::v1::HealthCheckRequest;
using ::grpc::health::v1::HealthCheckResponse;

constexpr char kEventHandlerService[] = "pimgate.v1.EventHandler";
// After SIGTERM, handlers already running get this long to return. Past it the process exits
// at once (see Serve): a handler cannot be interrupted, and returning from Run while it still
// runs would leave it using destroyed state.
constexpr absl::Duration kDrainTimeout = absl::Seconds(10);
// Once handlers are done: time for the streams to send their last acks and end.
constexpr absl::Duration kStreamEndTimeout = absl::Seconds(2);
// Then the server says GOAWAY and waits this long for clients to hang up before it closes the
// connections itself. Not zero: an ended stream's last bytes may still sit in the transport.
constexpr absl::Duration kConnectionCloseGrace = absl::Milliseconds(500);
// Detail of the RETRY acks given to deliveries that arrive (or still wait for a worker) while
// the plugin stops.
constexpr char kShuttingDownDetail[] = "plugin is shutting down";

// A fixed set of threads running delivery tasks. Every task is called exactly once: with
// run=true on a worker, or with run=false when the pool is shutting down, so that each delivery
// is always answered. Thread-safe.
class WorkerPool {
 public:
  using Task = std::function<void(bool run)>;

  explicit WorkerPool(int threads) {
    for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { Loop(); });
  }
  ~WorkerPool() {
    Shutdown(absl::InfiniteFuture());
    for (std::thread& thread : threads_) thread.join();
  }

  void Submit(Task task) {
    {
      absl::MutexLock lock(&mu_);
      if (!stopping_) {
        queue_.push_back(std::move(task));
        return;
      }
    }
    task(false);
  }

  // Submit for several tasks at once: one lock and one wake-up round for the whole batch.
  void SubmitAll(std::vector<Task> tasks) {
    {
      absl::MutexLock lock(&mu_);
      if (!stopping_) {
        for (Task& task : tasks) queue_.push_back(std::move(task));
        return;
      }
    }
    for (Task& task : tasks) task(false);
  }

  // Drops the queued tasks (calling them with run=false), then waits until the running ones
  // return or `deadline` passes. True when no task runs any more.
  bool Shutdown(absl::Time deadline) {
    std::deque<Task> dropped;
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
      dropped.swap(queue_);
    }
    for (Task& task : dropped) task(false);
    absl::MutexLock lock(&mu_);
    auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return running_ == 0; };
    return mu_.AwaitWithDeadline(absl::Condition(&idle), deadline);
  }

 private:
  void Loop() {
    for (;;) {
      Task task;
      {
        absl::MutexLock lock(&mu_);
        auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return stopping_ || !queue_.empty();
        };
        mu_.Await(absl::Condition(&ready));
        if (queue_.empty()) return;  // stopping
        task = std::move(queue_.front());
        queue_.pop_front();
        ++running_;
      }
      task(true);
      absl::MutexLock lock(&mu_);
      --running_;
    }
  }

  absl::Mutex mu_;
  // Unbounded here; pimgate bounds it per stream with the plugin's max_in_flight.
  std::deque<Task> queue_ ABSL_GUARDED_BY(mu_);
  int running_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

// Runs the user's handler for one delivery and turns its answer (or exception) into an ack.
v1::Ack HandleDelivery(const Handler& handler, const v1::Delivery& delivery) {
  v1::Ack ack;
  ack.set_sequence(delivery.event().sequence());
  try {
    Result result = handler(delivery.event(), delivery.attempt());
    ack.set_outcome(result.outcome);
    ack.set_detail(std::move(result.detail));
  } catch (const std::exception& e) {
    spdlog::warn("handler threw on sequence {}: {}", delivery.event().sequence(), e.what());
    ack.set_outcome(v1::OUTCOME_RETRY);
    ack.set_detail(e.what());
  } catch (...) {
    spdlog::warn("handler threw a non-standard exception on sequence {}",
                 delivery.event().sequence());
    ack.set_outcome(v1::OUTCOME_RETRY);
    ack.set_detail("handler threw a non-standard exception");
  }
  return ack;
}

v1::Ack ShuttingDownAck(const v1::Delivery& delivery) {
  v1::Ack ack;
  ack.set_sequence(delivery.event().sequence());
  ack.set_outcome(v1::OUTCOME_RETRY);
  ack.set_detail(kShuttingDownDetail);
  return ack;
}

// What EventHandlerService::Drain reaches in every open stream, of either method.
class DrainableStream {
 public:
  virtual ~DrainableStream() = default;
  // Stops reading; the stream finishes (OK) once every outstanding delivery is acked.
  virtual void Drain() = 0;
};

// pimgate.v1.EventHandler. Keeps the set of open streams so that Drain() can reach them.
class EventHandlerService final : public v1::EventHandler::CallbackService {
 public:
  EventHandlerService(const Handler* handler, WorkerPool* pool) : handler_(handler), pool_(pool) {}

  grpc::ServerBidiReactor<v1::Delivery, v1::Ack>* Deliver(
      grpc::CallbackServerContext* context) override;
  grpc::ServerBidiReactor<v1::DeliveryBatch, v1::AckBatch>* DeliverBatch(
      grpc::CallbackServerContext* context) override;

  // Every stream stops reading deliveries and finishes once its outstanding ones are acked;
  // new streams are refused.
  void Drain();

  // After Drain(): waits until every stream has ended. False at the deadline.
  bool AwaitStreamsEnded(absl::Time deadline) {
    absl::MutexLock lock(&mu_);
    auto ended = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return reactors_.empty(); };
    return mu_.AwaitWithDeadline(absl::Condition(&ended), deadline);
  }

  // False once draining: the stream must finish at once.
  bool Register(DrainableStream* reactor);
  void Unregister(DrainableStream* reactor);

  const Handler& handler() const { return *handler_; }
  WorkerPool& pool() { return *pool_; }

 private:
  const Handler* const handler_;
  WorkerPool* const pool_;
  absl::Mutex mu_;  // taken before any DeliverReactor::mu_, never after
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  std::set<DrainableStream*> reactors_ ABSL_GUARDED_BY(mu_);
};

// What both delivery streams share: the life cycle of a reactor whose deliveries are handled on
// the worker pool while gRPC reads and writes. It owns itself and is deleted once gRPC is done
// with the stream (OnDone) and no worker still holds a delivery of it, whichever comes last. It
// finishes with CANCELLED when the stream breaks, and with OK once reading has ended (the client
// closed its side, or Drain) and every delivery is acked and written. `Request` and `Response` are
// the stream's messages; a subclass reads, queues acks and writes them.
template <typename Request, typename Response>
class DeliveryReactor : public grpc::ServerBidiReactor<Request, Response>, public DrainableStream {
 public:
  void OnCancel() override {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
    MaybeFinishLocked();
  }

  void OnDone() override {
    service_->Unregister(this);
    bool last;
    {
      absl::MutexLock lock(&mu_);
      done_ = true;
      last = outstanding_ == 0;
    }
    if (last) delete this;
  }

  void Drain() override {
    absl::MutexLock lock(&mu_);
    draining_ = true;
    MaybeFinishLocked();
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    write_in_flight_ = false;
    WrittenLocked();
    if (!ok) cancelled_ = true;  // the stream is broken: nothing more can be written
    if (!cancelled_) WriteNextLocked();
    MaybeFinishLocked();
  }

 protected:
  explicit DeliveryReactor(EventHandlerService* service) : service_(service) {}

  // Acks not written yet (an owed handshake answer counts), and dropping them on cancel.
  virtual bool HasUnwrittenLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) = 0;
  virtual void DropUnwrittenLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) = 0;
  // Queues `ack` for writing.
  virtual void QueueAckLocked(v1::Ack ack) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) = 0;
  // Starts the next write if there is something to write and no write is in flight.
  virtual void WriteNextLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) = 0;
  // The write in flight is done (successfully or not): release what it held.
  virtual void WrittenLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {}

  // Hands `tasks` (one per delivery, each ending in CompleteDelivery) to the pool. Call without
  // mu_: a stopping pool runs the tasks inline, and they take mu_.
  void Submit(std::vector<WorkerPool::Task> tasks) { service_->pool().SubmitAll(std::move(tasks)); }

  // Called once per delivery handed to the pool, from a worker (or inline when dropped).
  void CompleteDelivery(v1::Ack ack) {
    bool last;
    {
      absl::MutexLock lock(&mu_);
      --outstanding_;
      if (!finish_called_ && !cancelled_) {
        QueueAckLocked(std::move(ack));
        WriteNextLocked();
      }
      MaybeFinishLocked();
      last = done_ && outstanding_ == 0;
    }
    if (last) delete this;
  }

  void MaybeFinishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finish_called_ || write_in_flight_) return;
    if (cancelled_) {
      DropUnwrittenLocked();
      finish_called_ = true;
      this->Finish(grpc::Status::CANCELLED);
      return;
    }
    if ((reads_done_ || draining_) && outstanding_ == 0 && !HasUnwrittenLocked()) {
      finish_called_ = true;
      this->Finish(grpc::Status::OK);
    }
  }

  // Whether another read may start (after a read's deliveries went to the pool).
  bool MayReadLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !finish_called_ && !draining_ && !cancelled_;
  }

  EventHandlerService* const service_;
  absl::Mutex mu_;
  int outstanding_ ABSL_GUARDED_BY(mu_) = 0;  // deliveries in the pool
  bool write_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool finish_called_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
};

// One Deliver stream: one delivery per read, one ack per write. Acks come back in any order and
// are queued so that at most one write is in flight.
class DeliverReactor final : public DeliveryReactor<v1::Delivery, v1::Ack> {
 public:
  explicit DeliverReactor(EventHandlerService* service) : DeliveryReactor(service) {
    StartRead(&delivery_);
    if (!service_->Register(this)) Drain();
  }

  void OnReadDone(bool ok) override {
    v1::Delivery delivery;
    {
      absl::MutexLock lock(&mu_);
      if (!ok) {  // the client closed its side, or the stream broke
        reads_done_ = true;
        MaybeFinishLocked();
        return;
      }
      delivery.Swap(&delivery_);
      if (draining_ || cancelled_) {
        // No further read: the stream finishes after this answer.
        acks_.push_back(ShuttingDownAck(delivery));
        WriteNextLocked();
        MaybeFinishLocked();
        return;
      }
      ++outstanding_;
    }
    std::vector<WorkerPool::Task> tasks;
    tasks.push_back([this, delivery = std::move(delivery)](bool run) {
      CompleteDelivery(run ? HandleDelivery(service_->handler(), delivery)
                           : ShuttingDownAck(delivery));
    });
    Submit(std::move(tasks));
    // Only now the next read: handlers then start in the order deliveries arrived.
    absl::MutexLock lock(&mu_);
    if (MayReadLocked()) StartRead(&delivery_);
  }

 private:
  bool HasUnwrittenLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) override {
    return !acks_.empty();
  }
  void DropUnwrittenLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) override { acks_.clear(); }
  void QueueAckLocked(v1::Ack ack) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) override {
    acks_.push_back(std::move(ack));
  }
  void WriteNextLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) override {
    if (write_in_flight_ || acks_.empty() || finish_called_) return;
    write_in_flight_ = true;
    // deque::push_back keeps references valid, so front() stays put until OnWriteDone.
    StartWrite(&acks_.front());
  }
  void WrittenLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) override { acks_.pop_front(); }

  v1::Delivery delivery_ ABSL_GUARDED_BY(mu_);     // target of the pending read
  std::deque<v1::Ack> acks_ ABSL_GUARDED_BY(mu_);  // front() is being written when in flight
};

// One DeliverBatch stream: each DeliveryBatch read is parsed into its own arena (the events'
// data Structs are many small messages: an arena makes their allocation and release cheap) and
// its deliveries go to the worker pool together; acks finished meanwhile are written together in
// one AckBatch, at most one write in flight. The opening empty batch is answered with an empty
// AckBatch (the handshake pimgate waits for).
class DeliverBatchReactor final : public DeliveryReactor<v1::DeliveryBatch, v1::AckBatch> {
 public:
  explicit DeliverBatchReactor(EventHandlerService* service) : DeliveryReactor(service) {
    {
      absl::MutexLock lock(&mu_);
      NextReadLocked();
    }
    if (!service_->Register(this)) Drain();  // service mu_ first, never under ours
  }

  void OnReadDone(bool ok) override {
    std::shared_ptr<Batch> batch;
    {
      absl::MutexLock lock(&mu_);
      if (!ok) {  // the client closed its side, or the stream broke
        reads_done_ = true;
        MaybeFinishLocked();
        return;
      }
      batch = std::move(reading_);
      const int n = batch->message->deliveries_size();
      if (n == 0) {
        handshake_answer_ = true;  // pimgate's opening (empty) batch
        WriteNextLocked();
      } else if (draining_ || cancelled_) {
        for (const v1::Delivery& delivery : batch->message->deliveries()) {
          acks_.push_back(ShuttingDownAck(delivery));
        }
        WriteNextLocked();
        MaybeFinishLocked();
        return;
      }
      outstanding_ += n;
    }
    const int n = batch->message->deliveries_size();
    if (n > 0) {
      std::vector<WorkerPool::Task> tasks;
      tasks.reserve(n);
      for (int i = 0; i < n; ++i) {
        tasks.push_back([this, batch, i](bool run) {
          const v1::Delivery& delivery = batch->message->deliveries(i);
          CompleteDelivery(run ? HandleDelivery(service_->handler(), delivery)
                               : ShuttingDownAck(delivery));
        });
      }
      Submit(std::move(tasks));
    }
    // Only now the next read: handlers then start in the order deliveries arrived.
    absl::MutexLock lock(&mu_);
    if (MayReadLocked()) NextReadLocked();
  }

 private:
  // One DeliveryBatch and the arena its events live in, shared by the batch's handler tasks.
  struct Batch {
    Batch()
        : arena(ArenaOptions()),
          message(google::protobuf::Arena::CreateMessage<v1::DeliveryBatch>(&arena)) {}
    static google::protobuf::ArenaOptions ArenaOptions() {
      google::protobuf::ArenaOptions options;
      options.start_block_size = 64 * 1024;  // a batch of product events is tens of KiB
      options.max_block_size = 1024 * 1024;
      return options;
    }
    google::protobuf::Arena arena;
    v1::DeliveryBatch* message;  // owned by the arena
  };

  void NextReadLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    reading_ = std::make_shared<Batch>();
    StartRead(reading_->message);
  }

  bool HasUnwrittenLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) override {
    return !acks_.empty() || handshake_answer_;
  }
  void DropUnwrittenLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) override { acks_.clear(); }
  void QueueAckLocked(v1::Ack ack) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) override {
    acks_.push_back(std::move(ack));
  }
  void WriteNextLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) override {
    if (write_in_flight_ || finish_called_ || (acks_.empty() && !handshake_answer_)) return;
    handshake_answer_ = false;
    writing_.Clear();
    for (v1::Ack& ack : acks_) *writing_.add_acks() = std::move(ack);
    acks_.clear();
    write_in_flight_ = true;
    StartWrite(&writing_);
  }

  std::shared_ptr<Batch> reading_ ABSL_GUARDED_BY(mu_);  // target of the pending read
  std::vector<v1::Ack> acks_ ABSL_GUARDED_BY(mu_);       // finished, not yet written
  v1::AckBatch writing_ ABSL_GUARDED_BY(mu_);            // being written when in flight
  bool handshake_answer_ ABSL_GUARDED_BY(mu_) = false;   // an empty AckBatch is owed
};

grpc::ServerBidiReactor<v1::Delivery, v1::Ack>* EventHandlerService::Deliver(
    grpc::CallbackServerContext* context) {
  return new DeliverReactor(this);
}

grpc::ServerBidiReactor<v1::DeliveryBatch, v1::AckBatch>* EventHandlerService::DeliverBatch(
    grpc::CallbackServerContext* context) {
  return new DeliverBatchReactor(this);
}

void EventHandlerService::Drain() {
  absl::MutexLock lock(&mu_);
  draining_ = true;
  for (DrainableStream* reactor : reactors_) reactor->Drain();
}

bool EventHandlerService::Register(DrainableStream* reactor) {
  absl::MutexLock lock(&mu_);
  if (draining_) return false;
  reactors_.insert(reactor);
  return true;
}

void EventHandlerService::Unregister(DrainableStream* reactor) {
  absl::MutexLock lock(&mu_);
  reactors_.erase(reactor);
}

// grpc.health.v1.Health for "" (the whole server) and pimgate.v1.EventHandler. Implemented here
// rather than with grpc::EnableDefaultHealthCheckService so that Watch streams end when the
// plugin stops instead of holding up the server shutdown.
class HealthService final : public grpc::health::v1::Health::CallbackService {
 public:
  class Watcher;

  void SetServing(bool serving);
  // Ends every Watch stream (after its last status update is written); refuses new ones.
  void Shutdown();

  grpc::ServerUnaryReactor* Check(grpc::CallbackServerContext* context,
                                  const HealthCheckRequest* request,
                                  HealthCheckResponse* response) override;
  grpc::ServerWriteReactor<HealthCheckResponse>* Watch(grpc::CallbackServerContext* context,
                                                       const HealthCheckRequest* request) override;

  // After Shutdown(): waits until every Watch stream has ended. False at the deadline.
  bool AwaitWatchesEnded(absl::Time deadline) {
    absl::MutexLock lock(&mu_);
    auto ended = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return watchers_.empty(); };
    return mu_.AwaitWithDeadline(absl::Condition(&ended), deadline);
  }

  void Unregister(Watcher* watcher) {
    absl::MutexLock lock(&mu_);
    watchers_.erase(watcher);
  }

 private:
  HealthCheckResponse::ServingStatus StatusOfLocked(const std::string& service) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!service.empty() && service != kEventHandlerService) {
      return HealthCheckResponse::SERVICE_UNKNOWN;
    }
    return serving_ ? HealthCheckResponse::SERVING : HealthCheckResponse::NOT_SERVING;
  }

  mutable absl::Mutex mu_;  // taken before any Watcher::mu_, never after
  bool serving_ ABSL_GUARDED_BY(mu_) = false;
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
  std::set<Watcher*> watchers_ ABSL_GUARDED_BY(mu_);
};

// One Watch stream: writes the current status, then each change, until the server stops. At
// most one write in flight; a change during a write is written after it (latest status wins).
// Owns itself (deleted in OnDone).
class HealthService::Watcher final : public grpc::ServerWriteReactor<HealthCheckResponse> {
 public:
  Watcher(HealthService* service, std::string watched)
      : service_(service), watched_(std::move(watched)) {}

  // The service name the client watches ("" = the whole server).
  const std::string& watched() const { return watched_; }

  void Update(HealthCheckResponse::ServingStatus status) {
    absl::MutexLock lock(&mu_);
    wanted_ = status;
    WriteNextLocked();
  }

  void End() {
    absl::MutexLock lock(&mu_);
    ending_ = true;
    MaybeFinishLocked();
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    write_in_flight_ = false;
    if (!ok) cancelled_ = true;
    WriteNextLocked();
    MaybeFinishLocked();
  }

  void OnCancel() override {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
    MaybeFinishLocked();
  }

  void OnDone() override {
    service_->Unregister(this);
    delete this;
  }

 private:
  void WriteNextLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (write_in_flight_ || finish_called_ || cancelled_ || wanted_ == sent_) return;
    response_.set_status(static_cast<HealthCheckResponse::ServingStatus>(wanted_));
    sent_ = wanted_;
    write_in_flight_ = true;
    StartWrite(&response_);
  }

  void MaybeFinishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finish_called_ || write_in_flight_) return;
    if (cancelled_) {
      finish_called_ = true;
      Finish(grpc::Status::CANCELLED);
    } else if (ending_ && wanted_ == sent_) {
      finish_called_ = true;
      Finish(grpc::Status::OK);
    }
  }

  HealthService* const service_;
  const std::string watched_;
  absl::Mutex mu_;
  HealthCheckResponse response_ ABSL_GUARDED_BY(mu_);
  // -1: nothing sent yet, so the first Update always writes.
  int sent_ ABSL_GUARDED_BY(mu_) = -1;
  int wanted_ ABSL_GUARDED_BY(mu_) = -1;
  bool write_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  bool ending_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool finish_called_ ABSL_GUARDED_BY(mu_) = false;
};

void HealthService::SetServing(bool serving) {
  absl::MutexLock lock(&mu_);
  serving_ = serving;
  for (Watcher* watcher : watchers_) watcher->Update(StatusOfLocked(watcher->watched()));
}

void HealthService::Shutdown() {
  absl::MutexLock lock(&mu_);
  shutdown_ = true;
  for (Watcher* watcher : watchers_) watcher->End();
}

grpc::ServerUnaryReactor* HealthService::Check(grpc::CallbackServerContext* context,
                                               const HealthCheckRequest* request,
                                               HealthCheckResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::MutexLock lock(&mu_);
  HealthCheckResponse::ServingStatus status = StatusOfLocked(request->service());
  if (status == HealthCheckResponse::SERVICE_UNKNOWN) {
    // What the standard health service answers for a name it does not know.
    reactor->Finish(grpc::Status(grpc::StatusCode::NOT_FOUND, "unknown service"));
  } else {
    response->set_status(status);
    reactor->Finish(grpc::Status::OK);
  }
  return reactor;
}

grpc::ServerWriteReactor<HealthCheckResponse>* HealthService::Watch(
    grpc::CallbackServerContext* context, const HealthCheckRequest* request) {
  auto* watcher = new Watcher(this, request->service());
  absl::MutexLock lock(&mu_);
  if (shutdown_) {
    watcher->End();
  } else {
    watchers_.insert(watcher);
    watcher->Update(StatusOfLocked(request->service()));
  }
  return watcher;
}

// The filesystem path of a "unix:" target ("unix:/abs", "unix:rel", "unix:///abs"); empty for
// other targets.
std::string UnixSocketPath(const std::string& address) {
  if (!absl::StartsWith(address, "unix:")) return "";
  std::string path = address.substr(5);
  if (absl::StartsWith(path, "//")) path.erase(0, 2);
  return path;
}

// Removes a socket file left behind by a previous instance that died without cleaning up, so
// that bind() succeeds. Refuses (false) when a live server still accepts connections there:
// unlinking its socket would silently steal its address. Non-socket files are left alone for
// bind() to report.
bool RemoveStaleSocket(const std::string& path) {
  struct stat st;
  if (lstat(path.c_str(), &st) != 0 || !S_ISSOCK(st.st_mode)) return true;
  sockaddr_un addr{};
  if (path.size() >= sizeof(addr.sun_path)) return true;  // bind() reports it
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return true;
  const bool connected = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  const int error = errno;
  close(fd);
  // EAGAIN: a live listener with a full backlog.
  if (connected || error == EAGAIN) return false;
  // Anything else but "refused" (EACCES, ...) is left for bind() to report.
  if (error == ECONNREFUSED && unlink(path.c_str()) == 0) {
    spdlog::info("removed stale socket {}", path);
  }
  return true;
}

// Consumes stop signals that are still pending (a second SIGTERM during the drain) so that
// restoring the caller's signal mask does not kill the process after Run decided to return 0.
void DiscardPendingSignals(const sigset_t& signals) {
  const timespec zero{0, 0};
  while (sigtimedwait(&signals, nullptr, &zero) > 0) {
  }
}

// Serves until a signal in `stop_signals` (already blocked in this thread) arrives.
int Serve(const Handler& handler, const RunOptions& options, const std::string& address,
          const sigset_t& stop_signals) {
  const std::string socket_path = UnixSocketPath(address);
  if (!socket_path.empty() && !RemoveStaleSocket(socket_path)) {
    spdlog::error("cannot serve on {}: another process is serving there", address);
    return 1;
  }

  const int concurrency = std::max(1, options.concurrency);
  // Declared before the server so that they outlive it: reactors use both until OnDone.
  WorkerPool pool(concurrency);
  EventHandlerService event_handler(&handler, &pool);
  HealthService health;

  grpc::ServerBuilder builder;
  // Without this a second server could bind the same TCP port (SO_REUSEPORT) and the two would
  // split pimgate's connections between them.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.AddListeningPort(address, grpc::InsecureServerCredentials());
  builder.RegisterService(&event_handler);
  builder.RegisterService(&health);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr) {
    spdlog::error("cannot serve on {}: bind failed (see the gRPC error above)", address);
    return 1;
  }
  health.SetServing(true);
  spdlog::info("{} serving {} on {} with {} worker(s)", PluginName(), kEventHandlerService, address,
               concurrency);

  int signal_number = 0;
  while (sigwait(&stop_signals, &signal_number) != 0) {
  }
  spdlog::info("{} received signal {}; draining", PluginName(), signal_number);

  health.SetServing(false);
  event_handler.Drain();
  if (!pool.Shutdown(absl::Now() + kDrainTimeout)) {
    spdlog::error("handlers still running {} after the stop signal; exiting without them",
                  absl::FormatDuration(kDrainTimeout));
    spdlog::default_logger()->flush();
    std::_Exit(1);
  }
  health.Shutdown();
  const absl::Time streams_deadline = absl::Now() + kStreamEndTimeout;
  if (!event_handler.AwaitStreamsEnded(streams_deadline) ||
      !health.AwaitWatchesEnded(streams_deadline)) {
    spdlog::warn("streams still open {} after draining; cancelling them",
                 absl::FormatDuration(kStreamEndTimeout));
  }
  server->Shutdown(absl::ToChronoTime(absl::Now() + kConnectionCloseGrace));
  server->Wait();
  server.reset();
  if (!socket_path.empty()) unlink(socket_path.c_str());
  spdlog::info("{} stopped", PluginName());
  return 0;
}

}  // namespace

std::string PluginName() {
  const char* name = std::getenv("PIMGATE_PLUGIN_NAME");
  return name != nullptr && *name != '\0' ? name : "plugin";
}

int Run(Handler handler, RunOptions options) {
  const char* env_address = std::getenv("PIMGATE_PLUGIN_ADDRESS");
  if (std::getenv("PIMGATE_PLUGIN_NAME") != nullptr) {
    // Launched by pimgate, which timestamps and tags every line it forwards: keep ours short.
    spdlog::set_pattern("%l %v");
  }
  const std::string address =
      env_address != nullptr && *env_address != '\0' ? env_address : options.default_address;

  // Blocked before gRPC creates its threads, which inherit the mask: the stop signals then reach
  // only sigwait() in Serve, never a default action on some gRPC thread. (Threads created before
  // Run are not covered, which is why main() should call Run early.)
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  sigset_t previous;
  pthread_sigmask(SIG_BLOCK, &stop_signals, &previous);
  const int code = Serve(handler, options, address, stop_signals);
  DiscardPendingSignals(stop_signals);
  pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  return code;
}

}  // namespace pimgate::sdk
