// pimgate C++ plugin SDK: serves pimgate.v1.EventHandler (gRPC callback API, one reactor per
// stream; both Deliver and DeliverBatch, read raw: the SDK reads the deliveries from the wire and
// each event is decoded by the worker that handles it, as far as its handler needs) and
// grpc.health.v1.Health, runs handlers on a fixed worker pool, drains on SIGTERM.
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
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/inlined_vector.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "google/protobuf/arena.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/wire_format_lite.h"
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

// The handlers Run serves: exactly one of the two is set.
struct Handlers {
  Handler event;
  DeliveryHandler delivery;
};

// pimgate.v1 field numbers the SDK reads from the wire (proto/pimgate/v1/{plugin,event}.proto).
constexpr int kBatchDeliveriesField = 1;  // DeliveryBatch.deliveries
constexpr int kDeliveryEventField = 1;    // Delivery.event
constexpr int kDeliveryAttemptField = 2;  // Delivery.attempt
constexpr int kEventSequenceField = 1;    // Event.sequence
constexpr int kEventDataField = 15;       // Event.data
static_assert(kBatchDeliveriesField == v1::DeliveryBatch::kDeliveriesFieldNumber);
static_assert(kDeliveryEventField == v1::Delivery::kEventFieldNumber);
static_assert(kDeliveryAttemptField == v1::Delivery::kAttemptFieldNumber);
static_assert(kEventSequenceField == v1::Event::kSequenceFieldNumber);
static_assert(kEventDataField == v1::Event::kDataFieldNumber);

using ::google::protobuf::internal::WireFormatLite;

bool IsField(uint32_t tag, int number, WireFormatLite::WireType type) {
  return tag == WireFormatLite::MakeTag(number, type);
}

// Field number 0 is not a valid field (protobuf's parser rejects it too).
bool IsFieldZero(uint32_t tag) { return WireFormatLite::GetTagFieldNumber(tag) == 0; }

// A CodedInputStream over `bytes`.
google::protobuf::io::CodedInputStream Input(std::string_view bytes) {
  return google::protobuf::io::CodedInputStream(reinterpret_cast<const uint8_t*>(bytes.data()),
                                                static_cast<int>(bytes.size()));
}

// Reads a length-delimited field's payload (its tag already read) as a view into `bytes`.
bool ReadPayload(google::protobuf::io::CodedInputStream& input, std::string_view bytes,
                 std::string_view* payload) {
  uint32_t length = 0;
  if (!input.ReadVarint32(&length)) return false;
  const size_t position = static_cast<size_t>(input.CurrentPosition());
  if (length > bytes.size() - position) return false;
  *payload = bytes.substr(position, length);
  return input.Skip(static_cast<int>(length));
}

// One delivery as read from a stream message: its event still serialized.
struct RawDelivery {
  std::string_view event;  // into the stream message, or RawMessage::joined
  uint32_t attempt = 0;
  uint64_t sequence = 0;  // the event's (last) sequence field: what acks not from a handler name
};

// One Deliver or DeliverBatch stream message, kept whole while its deliveries are handled (their
// events point into it), with the arena their decoded events and data live in. Shared by the
// message's handler tasks.
struct RawMessage {
  explicit RawMessage(size_t start_block_size) : arena(ArenaOptions(start_block_size)) {}
  static google::protobuf::ArenaOptions ArenaOptions(size_t start_block_size) {
    google::protobuf::ArenaOptions options;
    options.start_block_size = start_block_size;
    options.max_block_size = 1024 * 1024;
    return options;
  }
  grpc::ByteBuffer buffer;         // target of the read; emptied into `bytes`
  grpc::Slice bytes;               // the whole message, contiguous
  std::deque<std::string> joined;  // events a sender split into several fields (the wire allows it)
  std::vector<RawDelivery> deliveries;
  google::protobuf::Arena arena;  // thread-safe
};

// Finds Event.sequence in serialized Event bytes: its last occurrence, as a parse keeps (0 when
// there is none). pimgate appends it after every other field, data included, so the whole event is
// scanned. False when the fields' framing does not decode: then the sequence cannot be known.
bool FindSequence(std::string_view event, uint64_t* sequence) {
  google::protobuf::io::CodedInputStream input = Input(event);
  *sequence = 0;
  for (;;) {
    const int field_start = input.CurrentPosition();
    const uint32_t tag = input.ReadTag();
    if (tag == 0) return field_start == static_cast<int>(event.size());
    if (IsFieldZero(tag)) return false;
    if (IsField(tag, kEventSequenceField, WireFormatLite::WIRETYPE_VARINT)) {
      if (!input.ReadVarint64(sequence)) return false;
    } else if (!WireFormatLite::SkipField(&input, tag)) {
      return false;
    }
  }
}

// Reads a serialized pimgate.v1.Delivery into `message`->deliveries. Fields it does not know are
// skipped; an event sent as several fields is joined (a message field's occurrences merge).
bool ReadDelivery(std::string_view bytes, RawMessage* message) {
  google::protobuf::io::CodedInputStream input = Input(bytes);
  RawDelivery delivery;
  int events = 0;
  for (;;) {
    const int field_start = input.CurrentPosition();
    const uint32_t tag = input.ReadTag();
    if (tag == 0) {
      if (field_start != static_cast<int>(bytes.size())) return false;
      break;
    }
    if (IsFieldZero(tag)) return false;
    if (IsField(tag, kDeliveryEventField, WireFormatLite::WIRETYPE_LENGTH_DELIMITED)) {
      std::string_view event;
      if (!ReadPayload(input, bytes, &event)) return false;
      if (++events == 1) {
        delivery.event = event;
      } else {
        if (events == 2) message->joined.emplace_back(delivery.event);
        message->joined.back().append(event);
        delivery.event = message->joined.back();
      }
    } else if (IsField(tag, kDeliveryAttemptField, WireFormatLite::WIRETYPE_VARINT)) {
      if (!input.ReadVarint32(&delivery.attempt)) return false;
    } else if (!WireFormatLite::SkipField(&input, tag)) {
      return false;
    }
  }
  // An event whose framing is broken cannot be answered (its sequence is unknown): the whole
  // stream message does not decode. One with a bad value is answered RETRY by its worker.
  if (!FindSequence(delivery.event, &delivery.sequence)) return false;
  message->deliveries.push_back(delivery);
  return true;
}

// Reads a serialized pimgate.v1.DeliveryBatch into `message`->deliveries.
bool ReadDeliveryBatch(std::string_view bytes, RawMessage* message) {
  google::protobuf::io::CodedInputStream input = Input(bytes);
  for (;;) {
    const int field_start = input.CurrentPosition();
    const uint32_t tag = input.ReadTag();
    if (tag == 0) return field_start == static_cast<int>(bytes.size());
    if (IsFieldZero(tag)) return false;
    if (IsField(tag, kBatchDeliveriesField, WireFormatLite::WIRETYPE_LENGTH_DELIMITED)) {
      std::string_view delivery;
      if (!ReadPayload(input, bytes, &delivery) || !ReadDelivery(delivery, message)) return false;
    } else if (!WireFormatLite::SkipField(&input, tag)) {
      return false;
    }
  }
}

// Takes the message just read out of `message`->buffer into one contiguous slice and reads its
// deliveries. False (with the reason) when it is not a `Message` (DeliveryBatch or Delivery).
template <typename Message>
bool ReadMessage(RawMessage* message, std::string* error) {
  if (message->buffer.Length() > 0 && !message->buffer.DumpToSingleSlice(&message->bytes).ok()) {
    *error = "cannot read the stream message";
    return false;
  }
  message->buffer.Clear();
  const std::string_view bytes(reinterpret_cast<const char*>(message->bytes.begin()),
                               message->bytes.size());
  const bool ok = std::is_same_v<Message, v1::DeliveryBatch> ? ReadDeliveryBatch(bytes, message)
                                                             : ReadDelivery(bytes, message);
  if (!ok) {
    *error = absl::StrCat("a ", Message::descriptor()->full_name(), " of ", bytes.size(),
                          " bytes does not decode");
  }
  return ok;
}

// Serialized Event bytes split into the payloads of their `data` field and everything else.
struct EventParts {
  // The other fields, as runs of whole fields in their order.
  absl::InlinedVector<std::string_view, 2> header;
  absl::InlinedVector<std::string_view, 1> data;
};

// Splits `event` at its top-level fields. False when the fields' framing does not decode.
bool SplitEvent(std::string_view event, EventParts* parts) {
  google::protobuf::io::CodedInputStream input = Input(event);
  size_t run_start = 0;
  for (;;) {
    const size_t field_start = static_cast<size_t>(input.CurrentPosition());
    const uint32_t tag = input.ReadTag();
    if (tag == 0) {
      if (field_start != event.size()) return false;
      break;
    }
    if (IsFieldZero(tag)) return false;
    if (IsField(tag, kEventDataField, WireFormatLite::WIRETYPE_LENGTH_DELIMITED)) {
      std::string_view data;
      if (!ReadPayload(input, event, &data)) return false;
      if (field_start > run_start) {
        parts->header.push_back(event.substr(run_start, field_start - run_start));
      }
      parts->data.push_back(data);
      run_start = static_cast<size_t>(input.CurrentPosition());
    } else if (!WireFormatLite::SkipField(&input, tag)) {
      return false;
    }
  }
  if (event.size() > run_start) parts->header.push_back(event.substr(run_start));
  return true;
}

// Merges the serialized `parts` into `message` (parsing their concatenation).
bool MergeParts(absl::Span<const std::string_view> parts, google::protobuf::MessageLite* message) {
  for (std::string_view part : parts) {
    google::protobuf::io::CodedInputStream input = Input(part);
    if (!message->MergeFromCodedStream(&input) || !input.ConsumedEntireMessage()) return false;
  }
  return true;
}

// Runs a handler call and turns its answer (or exception) into `ack`.
template <typename Call>
v1::Ack RunHandler(v1::Ack ack, const Call& call) {
  try {
    Result result = call();
    ack.set_outcome(result.outcome);
    ack.set_detail(std::move(result.detail));
  } catch (const std::exception& e) {
    spdlog::warn("handler threw on sequence {}: {}", ack.sequence(), e.what());
    ack.set_outcome(v1::OUTCOME_RETRY);
    ack.set_detail(e.what());
  } catch (...) {
    spdlog::warn("handler threw a non-standard exception on sequence {}", ack.sequence());
    ack.set_outcome(v1::OUTCOME_RETRY);
    ack.set_detail("handler threw a non-standard exception");
  }
  return ack;
}

// The RETRY answer to a delivery whose event does not decode (its handler is not called).
v1::Ack UndecodableAck(const RawDelivery& delivery, const char* what) {
  v1::Ack ack;
  ack.set_sequence(delivery.sequence);
  ack.set_outcome(v1::OUTCOME_RETRY);
  ack.set_detail(absl::StrCat("event does not decode as pimgate.v1.Event (", delivery.event.size(),
                              " bytes): ", what));
  spdlog::warn("sequence {}: {}", delivery.sequence, ack.detail());
  return ack;
}

constexpr char kBadFraming[] = "its fields' framing is malformed";
constexpr char kBadField[] = "a field's value is malformed (e.g. a string that is not UTF-8)";

}  // namespace

// Builds the Delivery a DeliveryHandler gets and calls the handler (a friend of Delivery).
struct DeliveryAccess {
  static Result Call(const DeliveryHandler& handler, const v1::Event* event, uint32_t attempt,
                     absl::Span<const std::string_view> data, google::protobuf::Arena* arena) {
    Delivery delivery;
    delivery.event_ = event;
    delivery.attempt_ = attempt;
    delivery.data_parts_ = data.data();
    delivery.data_part_count_ = data.size();
    delivery.arena_ = arena;
    return handler(delivery);
  }
};

const google::protobuf::Struct& Delivery::data() const {
  std::lock_guard<std::mutex> lock(data_mu_);
  if (data_ == nullptr && !data_failed_) {
    if (data_part_count_ == 0) {
      data_ = &google::protobuf::Struct::default_instance();
    } else {
      auto* data = google::protobuf::Arena::CreateMessage<google::protobuf::Struct>(arena_);
      if (MergeParts(absl::MakeConstSpan(data_parts_, data_part_count_), data)) {
        data_ = data;
      } else {
        data_failed_ = true;
      }
    }
  }
  if (data_failed_) {
    throw std::runtime_error(
        absl::StrCat("the data of event ", event_->sequence(),
                     " does not decode as google.protobuf.Struct (a malformed value)"));
  }
  return *data_;
}

namespace {

// Decodes one delivery's event (all of it for a Handler; all but `data` for a DeliveryHandler)
// into `arena`, runs the handler and gives its ack.
v1::Ack HandleDelivery(const Handlers& handlers, const RawDelivery& raw,
                       google::protobuf::Arena* arena) {
  v1::Event* event = google::protobuf::Arena::CreateMessage<v1::Event>(arena);
  if (handlers.event) {
    if (!event->ParseFromArray(raw.event.data(), static_cast<int>(raw.event.size()))) {
      EventParts parts;
      return UndecodableAck(raw, SplitEvent(raw.event, &parts) ? kBadField : kBadFraming);
    }
    v1::Ack ack;
    ack.set_sequence(event->sequence());
    return RunHandler(std::move(ack), [&] { return handlers.event(*event, raw.attempt); });
  }
  EventParts parts;
  if (!SplitEvent(raw.event, &parts)) return UndecodableAck(raw, kBadFraming);
  if (!MergeParts(parts.header, event)) return UndecodableAck(raw, kBadField);
  v1::Ack ack;
  ack.set_sequence(event->sequence());
  return RunHandler(std::move(ack), [&] {
    return DeliveryAccess::Call(handlers.delivery, event, raw.attempt, parts.data, arena);
  });
}

v1::Ack ShuttingDownAck(const RawDelivery& delivery) {
  v1::Ack ack;
  ack.set_sequence(delivery.sequence);
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

// pimgate.v1.EventHandler, both methods served raw: the SDK reads the stream messages itself
// (ReadMessage) so that an event is decoded only by the worker that handles it, only as far as its
// handler needs, and on its own (an event that does not decode is answered RETRY). Keeps the set of
// open streams so that Drain() can reach them.
class EventHandlerService final
    : public v1::EventHandler::WithRawCallbackMethod_Deliver<
          v1::EventHandler::WithRawCallbackMethod_DeliverBatch<v1::EventHandler::Service>> {
 public:
  EventHandlerService(const Handlers* handlers, WorkerPool* pool)
      : handlers_(handlers), pool_(pool) {}

  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* Deliver(
      grpc::CallbackServerContext* context) override;
  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* DeliverBatch(
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

  const Handlers& handlers() const { return *handlers_; }
  WorkerPool& pool() { return *pool_; }

 private:
  const Handlers* const handlers_;
  WorkerPool* const pool_;
  absl::Mutex mu_;  // taken before any DeliverReactor::mu_, never after
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  std::set<DrainableStream*> reactors_ ABSL_GUARDED_BY(mu_);
};

// Serializes `message` into `buffer` (emptied first) for a raw write.
grpc::Status Serialize(const google::protobuf::MessageLite& message, grpc::ByteBuffer* buffer) {
  buffer->Clear();
  bool own_buffer = false;
  return grpc::GenericSerialize<grpc::ProtoBufferWriter, google::protobuf::MessageLite>(
      message, buffer, &own_buffer);
}

// What both delivery streams share: the life cycle of a reactor whose deliveries are handled on
// the worker pool while gRPC reads and writes. It owns itself and is deleted once gRPC is done
// with the stream (OnDone) and no worker still holds a delivery of it, whichever comes last. It
// finishes with CANCELLED when the stream breaks, with OK once reading has ended (the client closed
// its side, or Drain) and every delivery is acked and written, and with INTERNAL when a stream
// message does not decode (reading stops there; earlier deliveries' acks are written first).
// `Message` is the stream's request (Delivery or DeliveryBatch); each one read is a RawMessage
// whose deliveries go to the pool together. A subclass queues acks and writes them.
template <typename Message>
class DeliveryReactor : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>,
                        public DrainableStream {
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

  void OnReadDone(bool ok) override {
    std::shared_ptr<RawMessage> message;
    {
      absl::MutexLock lock(&mu_);
      if (!ok) {  // the client closed its side, or the stream broke
        reads_done_ = true;
        MaybeFinishLocked();
        return;
      }
      message = std::move(reading_);
    }
    std::string error;
    const bool decoded = ReadMessage<Message>(message.get(), &error);  // outside the lock
    {
      absl::MutexLock lock(&mu_);
      if (!decoded) {
        // Nothing in it can be answered: no further read; the acks of earlier deliveries are still
        // written, then the stream ends and pimgate redelivers the rest on a new one.
        spdlog::error("{}; ending the stream", error);
        FailLocked(grpc::Status(grpc::StatusCode::INTERNAL, error));
        return;
      }
      if (message->deliveries.empty()) {
        EmptyMessageLocked();
      } else if (draining_ || cancelled_ || failed_) {
        // No further read: the stream finishes after these answers.
        for (const RawDelivery& delivery : message->deliveries) {
          QueueAckLocked(ShuttingDownAck(delivery));
        }
        WriteNextLocked();
        MaybeFinishLocked();
        return;
      }
      outstanding_ += static_cast<int>(message->deliveries.size());
    }
    const size_t n = message->deliveries.size();
    if (n > 0) {
      std::vector<WorkerPool::Task> tasks;
      tasks.reserve(n);
      for (size_t i = 0; i < n; ++i) {
        tasks.push_back([this, message, i](bool run) {
          const RawDelivery& delivery = message->deliveries[i];
          CompleteDelivery(run ? HandleDelivery(service_->handlers(), delivery, &message->arena)
                               : ShuttingDownAck(delivery));
        });
      }
      service_->pool().SubmitAll(std::move(tasks));
    }
    // Only now the next read: handlers then start in the order deliveries arrived.
    absl::MutexLock lock(&mu_);
    if (MayReadLocked()) NextReadLocked();
  }

 protected:
  explicit DeliveryReactor(EventHandlerService* service) : service_(service) {}

  // Starts the first read and registers the stream; called by the subclass's constructor (the
  // reactor must be whole before any of its methods runs).
  void Start() {
    {
      absl::MutexLock lock(&mu_);
      NextReadLocked();
    }
    if (!service_->Register(this)) Drain();  // service mu_ first, never under ours
  }

  // Acks not written yet (an owed handshake answer counts), and dropping them on cancel.
  virtual bool HasUnwrittenLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) = 0;
  virtual void DropUnwrittenLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) = 0;
  // Queues `ack` for writing.
  virtual void QueueAckLocked(v1::Ack ack) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) = 0;
  // Starts the next write if there is something to write and no write is in flight.
  virtual void WriteNextLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) = 0;
  // The write in flight is done (successfully or not): release what it held.
  virtual void WrittenLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {}
  // A stream message without deliveries was read.
  virtual void EmptyMessageLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {}

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
      this->Finish(failure_);
      return;
    }
    if ((reads_done_ || draining_ || failed_) && outstanding_ == 0 && !HasUnwrittenLocked()) {
      finish_called_ = true;
      this->Finish(failed_ ? failure_ : grpc::Status::OK);
    }
  }

  // Ends the stream with `status` once the acks still due are written; reads no more.
  void FailLocked(grpc::Status status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!failed_) failure_ = std::move(status);
    failed_ = true;
    MaybeFinishLocked();
  }

  // Serializes `message` into `buffer` and starts its write; a message that does not serialize
  // ends the stream (INTERNAL).
  void StartWriteLocked(const google::protobuf::MessageLite& message, grpc::ByteBuffer* buffer)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    grpc::Status status = Serialize(message, buffer);
    if (!status.ok()) {
      spdlog::error("an answer does not serialize ({}); ending the stream", status.error_message());
      failure_ = grpc::Status(grpc::StatusCode::INTERNAL, "an answer does not serialize");
      cancelled_ = true;
      MaybeFinishLocked();
      return;
    }
    write_in_flight_ = true;
    StartWrite(buffer);
  }

  // Whether another read may start (after a read's deliveries went to the pool).
  bool MayReadLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !finish_called_ && !draining_ && !cancelled_ && !failed_;
  }

  void NextReadLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    // A batch of decoded product events takes hundreds of KiB; one event a few.
    constexpr size_t kStartBlock =
        std::is_same_v<Message, v1::DeliveryBatch> ? 64 * 1024 : 4 * 1024;
    reading_ = std::make_shared<RawMessage>(kStartBlock);
    StartRead(&reading_->buffer);
  }

  EventHandlerService* const service_;
  absl::Mutex mu_;
  std::shared_ptr<RawMessage> reading_ ABSL_GUARDED_BY(mu_);  // target of the pending read
  int outstanding_ ABSL_GUARDED_BY(mu_) = 0;                  // deliveries in the pool
  bool write_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool failed_ ABSL_GUARDED_BY(mu_) = false;  // a stream message did not decode
  // The status when cancelled, or when failed_ (once the acks still due are written).
  grpc::Status failure_ ABSL_GUARDED_BY(mu_) = grpc::Status::CANCELLED;
  bool finish_called_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
};

// One Deliver stream: one delivery per read, one ack per write. Acks come back in any order and
// are queued so that at most one write is in flight.
class DeliverReactor final : public DeliveryReactor<v1::Delivery> {
 public:
  explicit DeliverReactor(EventHandlerService* service) : DeliveryReactor(service) { Start(); }

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
    v1::Ack ack = std::move(acks_.front());
    acks_.pop_front();
    StartWriteLocked(ack, &writing_);
  }

  std::deque<v1::Ack> acks_ ABSL_GUARDED_BY(mu_);  // finished, not yet written
  grpc::ByteBuffer writing_ ABSL_GUARDED_BY(mu_);  // being written when in flight
};

// One DeliverBatch stream: each DeliveryBatch read goes to the worker pool whole (its events are
// decoded into one arena: a product's data Struct is many small messages, which an arena makes
// cheap to allocate and release); acks finished meanwhile are written together in one AckBatch,
// at most one write in flight. The opening empty batch is answered with an empty AckBatch (the
// handshake pimgate waits for).
class DeliverBatchReactor final : public DeliveryReactor<v1::DeliveryBatch> {
 public:
  explicit DeliverBatchReactor(EventHandlerService* service) : DeliveryReactor(service) { Start(); }

 private:
  bool HasUnwrittenLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) override {
    return !acks_.empty() || handshake_answer_;
  }
  void DropUnwrittenLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) override { acks_.clear(); }
  void QueueAckLocked(v1::Ack ack) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) override {
    acks_.push_back(std::move(ack));
  }
  void EmptyMessageLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) override {
    handshake_answer_ = true;  // pimgate's opening (empty) batch
    WriteNextLocked();
  }
  void WriteNextLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) override {
    if (write_in_flight_ || finish_called_ || (acks_.empty() && !handshake_answer_)) return;
    handshake_answer_ = false;
    v1::AckBatch batch;
    for (v1::Ack& ack : acks_) *batch.add_acks() = std::move(ack);
    acks_.clear();
    StartWriteLocked(batch, &writing_);
  }

  std::vector<v1::Ack> acks_ ABSL_GUARDED_BY(mu_);      // finished, not yet written
  grpc::ByteBuffer writing_ ABSL_GUARDED_BY(mu_);       // being written when in flight
  bool handshake_answer_ ABSL_GUARDED_BY(mu_) = false;  // an empty AckBatch is owed
};

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* EventHandlerService::Deliver(
    grpc::CallbackServerContext* context) {
  return new DeliverReactor(this);
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* EventHandlerService::DeliverBatch(
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
int Serve(const Handlers& handlers, const RunOptions& options, const std::string& address,
          const sigset_t& stop_signals) {
  const std::string socket_path = UnixSocketPath(address);
  if (!socket_path.empty() && !RemoveStaleSocket(socket_path)) {
    spdlog::error("cannot serve on {}: another process is serving there", address);
    return 1;
  }

  const int concurrency = std::max(1, options.concurrency);
  // Declared before the server so that they outlive it: reactors use both until OnDone.
  WorkerPool pool(concurrency);
  EventHandlerService event_handler(&handlers, &pool);
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

namespace {

int RunHandlers(const Handlers& handlers, const RunOptions& options) {
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
  const int code = Serve(handlers, options, address, stop_signals);
  DiscardPendingSignals(stop_signals);
  pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  return code;
}

}  // namespace

Result CallHandler(const DeliveryHandler& handler, const v1::Event& event, uint32_t attempt) {
  const std::string bytes = event.SerializeAsString();
  RawDelivery raw;
  raw.event = bytes;
  raw.attempt = attempt;
  raw.sequence = event.sequence();
  google::protobuf::Arena arena;
  Handlers handlers;
  handlers.delivery = handler;
  v1::Ack ack = HandleDelivery(handlers, raw, &arena);
  return {ack.outcome(), std::move(*ack.mutable_detail())};
}

int Run(Handler handler, RunOptions options) {
  Handlers handlers;
  handlers.event = std::move(handler);
  return RunHandlers(handlers, options);
}

int Run(DeliveryHandler handler, RunOptions options) {
  Handlers handlers;
  handlers.delivery = std::move(handler);
  return RunHandlers(handlers, options);
}

}  // namespace pimgate::sdk
