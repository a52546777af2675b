// pimgate C++ plugin SDK: write a handler, call Run(), and pimgate delivers events to it.
//
//   #include "sdk/cpp/pimgate_sdk.h"
//   int main() {
//     return pimgate::sdk::Run([](const pimgate::v1::Event& event, uint32_t attempt) {
//       std::cout << event.type() << " " << event.resource_id() << "\n";
//       return pimgate::sdk::Result::Ok();
//     });
//   }
#ifndef PIMGATE_SDK_CPP_PIMGATE_SDK_H_
#define PIMGATE_SDK_CPP_PIMGATE_SDK_H_

#include <cstdint>
#include <functional>
#include <string>

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

struct RunOptions {
  // Handlers running at once. pimgate never sends two events of one resource concurrently.
  int concurrency = 8;
  // Address to serve when PIMGATE_PLUGIN_ADDRESS is not set (running the plugin by hand).
  std::string default_address = "127.0.0.1:50051";
};

// Serves pimgate.v1.EventHandler and grpc.health.v1.Health at $PIMGATE_PLUGIN_ADDRESS ("unix:/x"
// or "host:port"), reports SERVING, and blocks until SIGTERM or SIGINT; then stops taking
// deliveries, lets running handlers finish and returns 0 (non-zero when it could not serve).
int Run(Handler handler, RunOptions options = {});

// The plugin's name ($PIMGATE_PLUGIN_NAME), or "plugin".
std::string PluginName();

}  // namespace pimgate::sdk

#endif  // PIMGATE_SDK_CPP_PIMGATE_SDK_H_
