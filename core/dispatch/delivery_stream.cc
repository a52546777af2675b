// DeliveryStream over gRPC's callback API with the generic (ByteBuffer) stub: deliveries go out as
// the bytes the dispatcher encoded, without a protobuf round trip. At most one write is in flight;
// deliveries queued meanwhile go together in the next DeliveryBatch.
//
// Lifetime: the Reactor deletes itself in OnDone. A gRPC "hold" keeps the call (and the reactor)
// alive while the DeliveryStream may still write: it is released once, either by the reactor when
// the plugin ends the stream or by ~DeliveryStream. Until then Send may touch the reactor.
#include "core/dispatch/delivery_stream.h"

#include <deque>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/client_callback.h"
#include "grpcpp/support/proto_buffer_reader.h"

namespace pimgate {
namespace {

constexpr char kDeliverMethod[] = "/pimgate.v1.EventHandler/Deliver";
constexpr char kDeliverBatchMethod[] = "/pimgate.v1.EventHandler/DeliverBatch";

// A slice that owns `bytes` without copying them.
grpc::Slice ToSlice(std::string bytes) {
  auto* owned = new std::string(std::move(bytes));
  return grpc::Slice(
      owned->data(), owned->size(), [](void* p) { delete static_cast<std::string*>(p); }, owned);
}

// A ByteBuffer that owns `bytes` without copying them.
grpc::ByteBuffer ToByteBuffer(std::string bytes) {
  grpc::Slice slice = ToSlice(std::move(bytes));
  return grpc::ByteBuffer(&slice, 1);
}

template <class Message>
bool ParseByteBuffer(grpc::ByteBuffer& buffer, Message& message) {
  grpc::ProtoBufferReader reader(&buffer);
  return message.ParseFromZeroCopyStream(&reader);
}

}  // namespace

// State shared by the DeliveryStream and its Reactor, which may outlive each other.
struct DeliveryStream::State {
  absl::Mutex mu;
  // Set once, by whoever removes the gRPC hold. While false the reactor is alive and may be
  // written to from outside its reactions.
  bool hold_released ABSL_GUARDED_BY(mu) = false;
  bool first_read ABSL_GUARDED_BY(mu) = false;  // the handshake answer (kBatch) arrived
  bool read_ended ABSL_GUARDED_BY(mu) = false;
  bool opened ABSL_GUARDED_BY(mu) = false;  // Open succeeded: OnDone reports the end
  std::deque<std::string> queue ABSL_GUARDED_BY(mu);
  bool write_in_flight ABSL_GUARDED_BY(mu) = false;
  bool write_failed ABSL_GUARDED_BY(mu) = false;
  std::string protocol_error ABSL_GUARDED_BY(mu);
};

class DeliveryStream::Reactor final
    : public grpc::ClientBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  Reactor(Protocol protocol, uint64_t generation, AcksFn on_acks, ClosedFn on_closed,
          std::shared_ptr<State> state, grpc::ClientContext* context)
      : protocol_(protocol),
        generation_(generation),
        on_acks_(std::move(on_acks)),
        on_closed_(std::move(on_closed)),
        state_(std::move(state)),
        context_(context) {}

  std::future<grpc::Status> done() { return done_.get_future(); }

  void Begin(std::shared_ptr<grpc::Channel> channel) {
    channel_ = std::move(channel);
    grpc::GenericStub stub(channel_);
    stub.PrepareBidiStreamingCall(
        context_, protocol_ == Protocol::kBatch ? kDeliverBatchMethod : kDeliverMethod,
        grpc::StubOptions(), this);
    AddHold();
    StartRead(&read_buffer_);
    {
      absl::MutexLock lock(&state_->mu);
      if (protocol_ == Protocol::kBatch) {
        // The handshake: an empty DeliveryBatch, answered by an empty AckBatch.
        state_->write_in_flight = true;
        write_buffer_ = ToByteBuffer("");
        StartWrite(&write_buffer_);
      } else {
        state_->opened = true;
      }
    }
    StartCall();
  }

  // Send's half; the caller holds state_->mu and has checked that the hold is not released.
  void EnqueueLocked(std::vector<std::string> messages) ABSL_NO_THREAD_SAFETY_ANALYSIS {
    if (state_->write_failed) return;
    for (std::string& m : messages) state_->queue.push_back(std::move(m));
    if (!state_->write_in_flight) WriteNextLocked();
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      bool release;
      {
        absl::MutexLock lock(&state_->mu);
        state_->read_ended = true;
        release = !std::exchange(state_->hold_released, true);
      }
      if (release) RemoveHold();
      return;
    }
    std::vector<v1::Ack> acks;
    bool parsed;
    if (protocol_ == Protocol::kBatch) {
      v1::AckBatch batch;
      parsed = ParseByteBuffer(read_buffer_, batch);
      acks.reserve(batch.acks_size());
      for (v1::Ack& ack : *batch.mutable_acks()) acks.push_back(std::move(ack));
    } else {
      parsed = ParseByteBuffer(read_buffer_, acks.emplace_back());
    }
    read_buffer_.Clear();
    {
      absl::MutexLock lock(&state_->mu);
      if (!state_->first_read) {
        state_->first_read = true;
        state_->opened = true;  // before Open sees first_read: a later end is always reported
      }
      if (!parsed) state_->protocol_error = "the plugin sent an ack message that does not parse";
    }
    if (!parsed) {
      context_->TryCancel();
      return;
    }
    if (!acks.empty()) on_acks_(generation_, std::move(acks));
    StartRead(&read_buffer_);
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&state_->mu);
    state_->write_in_flight = false;
    if (!ok) {
      // The call is over for writes; the read side ends too and OnDone says why.
      state_->write_failed = true;
      state_->queue.clear();
      return;
    }
    if (!state_->hold_released) WriteNextLocked();
  }

  void OnDone(const grpc::Status& status) override {
    bool report;
    std::string reason;
    {
      absl::MutexLock lock(&state_->mu);
      report = state_->opened;
      if (!state_->protocol_error.empty()) {
        reason = state_->protocol_error;
      } else if (status.ok()) {
        reason = "plugin closed the stream";
      } else {
        reason = absl::StrCat("stream ended: ", status.error_message(), " (gRPC code ",
                              static_cast<int>(status.error_code()), ")");
      }
    }
    if (report) on_closed_(generation_, std::move(reason));
    std::promise<grpc::Status> done = std::move(done_);
    delete this;
    done.set_value(status);  // the DeliveryStream may be destroyed from here on
  }

 private:
  void WriteNextLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(state_->mu) {
    std::deque<std::string>& queue = state_->queue;
    if (queue.empty()) return;
    if (protocol_ == Protocol::kBatch) {
      // A DeliveryBatch is the concatenation of its elements: the queued runs of elements go
      // out as the slices of one message, not copied.
      std::vector<grpc::Slice> slices;
      std::size_t size = 0;
      while (!queue.empty() &&
             (slices.empty() || size + queue.front().size() <= kMaxDeliveryBatchBytes)) {
        size += queue.front().size();
        slices.push_back(ToSlice(std::move(queue.front())));
        queue.pop_front();
      }
      write_buffer_ = grpc::ByteBuffer(slices.data(), slices.size());
    } else {
      write_buffer_ = ToByteBuffer(std::move(queue.front()));
      queue.pop_front();
    }
    state_->write_in_flight = true;
    StartWrite(&write_buffer_);
  }

  const Protocol protocol_;
  const uint64_t generation_;
  AcksFn on_acks_;
  ClosedFn on_closed_;
  std::shared_ptr<State> state_;
  grpc::ClientContext* const context_;
  std::shared_ptr<grpc::Channel> channel_;
  grpc::ByteBuffer read_buffer_;   // reactions only
  grpc::ByteBuffer write_buffer_;  // under state_->mu; one write in flight
  std::promise<grpc::Status> done_;
};

DeliveryStream::DeliveryStream(Protocol protocol, Reactor* reactor, std::shared_ptr<State> state,
                               std::unique_ptr<grpc::ClientContext> context,
                               std::future<grpc::Status> done)
    : protocol_(protocol),
      reactor_(reactor),
      state_(std::move(state)),
      context_(std::move(context)),
      done_(std::move(done)) {}

DeliveryStream::~DeliveryStream() {
  if (!done_.valid()) return;  // Open already waited for the end of a failed handshake
  context_->TryCancel();
  ReleaseHold();
  done_.wait();
}

void DeliveryStream::ReleaseHold() {
  {
    absl::MutexLock lock(&state_->mu);
    if (state_->hold_released) return;  // the reactor let go (and may be gone)
    state_->hold_released = true;
  }
  reactor_->RemoveHold();  // alive: OnDone cannot run before this
}

void DeliveryStream::Send(std::vector<std::string> messages) {
  absl::MutexLock lock(&state_->mu);
  if (state_->hold_released) return;  // the stream has ended; ClosedFn tells the owner
  reactor_->EnqueueLocked(std::move(messages));
}

absl::StatusOr<std::unique_ptr<DeliveryStream>> DeliveryStream::Open(
    std::shared_ptr<grpc::Channel> channel, Protocol protocol, uint64_t generation,
    absl::Duration handshake_timeout, AcksFn on_acks, ClosedFn on_closed) {
  auto context = std::make_unique<grpc::ClientContext>();
  auto state = std::make_shared<State>();
  auto* reactor = new Reactor(protocol, generation, std::move(on_acks), std::move(on_closed), state,
                              context.get());
  std::future<grpc::Status> done = reactor->done();
  reactor->Begin(std::move(channel));
  std::unique_ptr<DeliveryStream> stream(
      new DeliveryStream(protocol, reactor, state, std::move(context), std::move(done)));
  if (protocol == Protocol::kSingle) return stream;

  bool answered;
  {
    absl::MutexLock lock(&state->mu);
    answered = state->mu.AwaitWithTimeout(absl::Condition(
                                              +[](State* s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->mu) {
                                                return s->first_read || s->read_ended;
                                              },
                                              state.get()),
                                          handshake_timeout);
    if (answered && state->first_read) return stream;
  }
  // No answer in time, or the plugin ended the call at once: its status says why.
  stream->context_->TryCancel();
  stream->ReleaseHold();
  const grpc::Status status = stream->done_.get();
  if (!answered) {
    return absl::DeadlineExceededError(
        absl::StrCat("no answer to the DeliverBatch handshake within ",
                     absl::FormatDuration(handshake_timeout)));
  }
  if (status.error_code() == grpc::StatusCode::UNIMPLEMENTED) {
    return absl::UnimplementedError("the plugin does not serve EventHandler.DeliverBatch");
  }
  return absl::UnavailableError(
      absl::StrCat("DeliverBatch handshake failed: ", status.error_message(), " (gRPC code ",
                   static_cast<int>(status.error_code()), ")"));
}

}  // namespace pimgate
