// An in-process pimgate.v1.EventHandler on a unix socket for dispatcher-level tests: it
// acknowledges every delivery OK, one at a time, and records it. (Tests that need scripted
// outcomes, delays or overlap checks keep their own plugin.)
#ifndef PIMGATE_TESTS_TESTING_RECORDING_PLUGIN_H_
#define PIMGATE_TESTS_TESTING_RECORDING_PLUGIN_H_

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "pimgate/v1/plugin.grpc.pb.h"

namespace pimgate::testing {

class RecordingPlugin final : public v1::EventHandler::Service {
 public:
  // Serves on unix:`socket`.
  explicit RecordingPlugin(const std::string& socket) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("unix:" + socket, grpc::InsecureServerCredentials());
    builder.RegisterService(this);
    server_ = builder.BuildAndStart();
  }
  ~RecordingPlugin() override {
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(200));
  }

  grpc::Status Deliver(grpc::ServerContext*,
                       grpc::ServerReaderWriter<v1::Ack, v1::Delivery>* stream) override {
    v1::Delivery delivery;
    while (stream->Read(&delivery)) {
      {
        std::lock_guard lock(mu_);
        deliveries_.push_back(delivery);
      }
      v1::Ack ack;
      ack.set_sequence(delivery.event().sequence());
      ack.set_outcome(v1::OUTCOME_OK);
      if (!stream->Write(ack)) break;
    }
    return grpc::Status::OK;
  }

  // Every delivery so far, in arrival order.
  std::vector<v1::Delivery> deliveries() {
    std::lock_guard lock(mu_);
    return deliveries_;
  }
  // The events of every delivery so far, in arrival order.
  std::vector<v1::Event> events() {
    std::vector<v1::Event> out;
    for (const v1::Delivery& d : deliveries()) out.push_back(d.event());
    return out;
  }
  // (sequence, attempt) of every delivery so far, in arrival order.
  std::vector<std::pair<uint64_t, uint32_t>> attempts() {
    std::vector<std::pair<uint64_t, uint32_t>> out;
    for (const v1::Delivery& d : deliveries()) out.emplace_back(d.event().sequence(), d.attempt());
    return out;
  }
  // How many deliveries carried the event with this sequence.
  int Count(uint64_t sequence) {
    int n = 0;
    for (const v1::Delivery& d : deliveries()) n += d.event().sequence() == sequence ? 1 : 0;
    return n;
  }

 private:
  std::unique_ptr<grpc::Server> server_;
  std::mutex mu_;
  std::vector<v1::Delivery> deliveries_;
};

}  // namespace pimgate::testing

#endif  // PIMGATE_TESTS_TESTING_RECORDING_PLUGIN_H_
