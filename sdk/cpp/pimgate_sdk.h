// pimgate C++ plugin SDK: write a handler, call Run(), and pimgate delivers events to it.
//
//   #include "sdk/cpp/pimgate_sdk.h"
//   int main() {
//     return pimgate::sdk::Run([](const pimgate::v1::Event& event, uint32_t attempt) {
//       std::cout << event.type() << " " << event.resource_id() << "\n";
//       return pimgate::sdk::Result::Ok();
//     });
//   }
//
// A handler that does not read every event's product can take a `const Delivery&` instead: its
// event() holds every field but `data`, which data() decodes only when asked (see Delivery).
#ifndef PIMGATE_SDK_CPP_PIMGATE_SDK_H_
#define PIMGATE_SDK_CPP_PIMGATE_SDK_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>

#include "pimgate/v1/event.pb.h"
#include "pimgate/v1/plugin.pb.h"

namespace pimgate::sdk {

// What a handler answers for one event.
struct Result {
  v1::Outcome outcome = v1::OUTCOME_OK;
  std::string detail;
  static Result Ok() { return {v1::OUTCOME_OK, ""}; }
  // Temporary failure: pimgate redelivers later with attempt + 1.
  static Result Retry(std::string detail) { return {v1::OUTCOME_RETRY, std::move(detail)}; }
  // Permanent failure: pimgate dead-letters the event.
  static Result Reject(std::string detail) { return {v1::OUTCOME_REJECT, std::move(detail)}; }
};

// Called once per delivery; `attempt` is 1 for the first delivery, > 1 when the event may have
// reached the plugin before (a retry, a restart of pimgate, a takeover). May be called from several
// threads at once (for different resources) when RunOptions::concurrency > 1. An exception
// becomes a Retry with the exception's message.
using Handler = std::function<Result(const v1::Event& event, uint32_t attempt)>;

// One delivery as a DeliveryHandler sees it: the event without its `data` (decoded only when the
// handler asks for it), and the attempt. Valid only during the handler call that received it.
//
// Decoding an event's `data` (a google.protobuf.Struct: for a product, its values, ~1 KB and a
// few hundred small messages) is most of what receiving an event costs the plugin. The SDK keeps
// the bytes as they came and splits them from the event's other fields, so a handler that reads
// only the event's header (type, resource id, timestamps, ...) never pays for it.
class Delivery {
 public:
  Delivery(const Delivery&) = delete;
  Delivery& operator=(const Delivery&) = delete;

  // Every field of the event but `data` (left empty), exactly as a full decode gives them
  // (unknown fields included).
  const v1::Event& event() const { return *event_; }
  // The event's `data`, decoded on the first call (later calls, from any thread during this
  // handler call, return the same message). Throws std::runtime_error when it does not decode
  // (which the SDK answers with RETRY, like any exception a handler lets out).
  const google::protobuf::Struct& data() const;
  // 1 for the first delivery, > 1 when the event may have reached the plugin before (see Handler).
  uint32_t attempt() const { return attempt_; }

 private:
  friend struct DeliveryAccess;  // the SDK builds deliveries (pimgate_sdk.cc)
  Delivery() = default;

  const v1::Event* event_ = nullptr;
  uint32_t attempt_ = 0;
  // The serialized payloads of the event's `data` field (one, unless a sender split it), in the
  // stream message the delivery came in; decoded into arena_.
  const std::string_view* data_parts_ = nullptr;
  size_t data_part_count_ = 0;
  google::protobuf::Arena* arena_ = nullptr;
  mutable std::mutex data_mu_;
  mutable const google::protobuf::Struct* data_ = nullptr;  // once decoded
  mutable bool data_failed_ = false;
};

// Like Handler, for handlers that read the product (or other `data`) of some events only, or of
// none: see Delivery. Same threading, exceptions and answers as Handler.
using DeliveryHandler = std::function<Result(const Delivery& delivery)>;

// Runs `handler` on `event` as the SDK runs it for a delivery from pimgate (the event serialized,
// then received and split as the SDK receives it; an exception becomes a Retry with its
// message): for unit tests of a DeliveryHandler, which cannot make a Delivery itself.
Result CallHandler(const DeliveryHandler& handler, const v1::Event& event, uint32_t attempt = 1);

struct RunOptions {
  // Handlers running at once. pimgate never sends two events of one resource concurrently.
  int concurrency = 8;
  // Address to serve when PIMGATE_PLUGIN_ADDRESS is not set (running the plugin by hand).
  std::string default_address = "127.0.0.1:50051";
};

// Serves pimgate.v1.EventHandler and grpc.health.v1.Health at $PIMGATE_PLUGIN_ADDRESS ("unix:/x"
// or "host:port"), reports SERVING, and blocks until SIGTERM or SIGINT; then stops taking
// deliveries, lets running handlers finish and returns 0 (non-zero when it could not serve).
// A delivery whose event does not decode as a pimgate.v1.Event is answered RETRY with a detail
// saying so, without calling the handler (with a DeliveryHandler: its fields but `data`; `data`
// is checked by Delivery::data()). A stream message that does not decode at all (an event whose
// fields' framing is broken: its sequence cannot be found) ends the stream with INTERNAL once the
// acks of the deliveries before it are written.
int Run(Handler handler, RunOptions options = {});
// The same, for a DeliveryHandler.
int Run(DeliveryHandler handler, RunOptions options = {});

// The plugin's name ($PIMGATE_PLUGIN_NAME), or "plugin".
std::string PluginName();

}  // namespace pimgate::sdk

#endif  // PIMGATE_SDK_CPP_PIMGATE_SDK_H_
