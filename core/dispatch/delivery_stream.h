// DeliveryStream: one open gRPC stream from the dispatcher to a plugin's EventHandler, carrying
// pre-serialized Deliveries out and Acks back. It speaks DeliverBatch (many deliveries per stream
// message) to plugins that serve it and Deliver (one per message) to the others.
#ifndef PIMGATE_CORE_DISPATCH_DELIVERY_STREAM_H_
#define PIMGATE_CORE_DISPATCH_DELIVERY_STREAM_H_

#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/channel.h"
#include "grpcpp/client_context.h"
#include "grpcpp/support/status.h"
#include "pimgate/v1/plugin.pb.h"

namespace pimgate {

// Most bytes of deliveries written in one DeliveryBatch message. Deliveries queued beyond it go
// in the next message; a single larger delivery goes alone.
inline constexpr std::size_t kMaxDeliveryBatchBytes = 1 << 20;

class DeliveryStream {
 public:
  enum class Protocol {
    kBatch,   // EventHandler.DeliverBatch
    kSingle,  // EventHandler.Deliver: plugins built before DeliverBatch existed
  };
  // Called from gRPC threads with the acks of one stream message, in the order received. Must not
  // block (queue them for your own thread).
  using AcksFn = std::function<void(uint64_t generation, std::vector<v1::Ack> acks)>;
  // Called once, from a gRPC thread, when a stream that Open returned ends (the plugin finished
  // it, it broke, or it was cancelled); `reason` says which. Must not block.
  using ClosedFn = std::function<void(uint64_t generation, std::string reason)>;

  // Opens a stream on `channel` (which must outlive it). For kBatch, waits up to
  // `handshake_timeout` for the plugin's answer to the opening empty DeliveryBatch: Unimplemented
  // when the plugin does not serve DeliverBatch (open a kSingle stream instead), Unavailable or
  // DeadlineExceeded when it could not be reached. `generation` is passed back in the callbacks.
  static absl::StatusOr<std::unique_ptr<DeliveryStream>> Open(
      std::shared_ptr<grpc::Channel> channel, Protocol protocol, uint64_t generation,
      absl::Duration handshake_timeout, AcksFn on_acks, ClosedFn on_closed);

  // Cancels the call (deliveries not yet acked are abandoned: the caller redelivers them) and
  // waits until gRPC is done with it. Callbacks may run until it returns, never after.
  ~DeliveryStream();

  DeliveryStream(const DeliveryStream&) = delete;
  DeliveryStream& operator=(const DeliveryStream&) = delete;

  // Queues deliveries, already serialized for protocol(). kBatch: each string is a run of
  // DeliveryBatch elements (AppendDeliveryToBatch) of at most kMaxDeliveryBatchBytes unless it
  // holds a single delivery; kSingle: each string is one v1::Delivery (EncodeDelivery). They are
  // written in order, as soon as the previous stream message is written: with kBatch, the runs
  // queued by then go in one DeliveryBatch (up to kMaxDeliveryBatchBytes), without being copied.
  // Dropped once the stream has ended (ClosedFn has been or will be called). Thread-safe.
  void Send(std::vector<std::string> messages);

  Protocol protocol() const { return protocol_; }

  class Reactor;
  struct State;

 private:
  DeliveryStream(Protocol protocol, Reactor* reactor, std::shared_ptr<State> state,
                 std::unique_ptr<grpc::ClientContext> context, std::future<grpc::Status> done);
  // Lets the call end (once): from then on the reactor may delete itself at any time.
  void ReleaseHold();

  const Protocol protocol_;
  Reactor* const reactor_;  // deletes itself once the call is done (after the hold is released)
  std::shared_ptr<State> state_;
  std::unique_ptr<grpc::ClientContext> context_;  // outlives the call
  std::future<grpc::Status> done_;                // ready once the reactor is gone
};

}  // namespace pimgate

#endif  // PIMGATE_CORE_DISPATCH_DELIVERY_STREAM_H_
