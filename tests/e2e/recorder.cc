// End-to-end test plugin (C++ SDK): records every delivery as a JSON line (with the wall-clock
// time it was received, at_us, to merge several nodes' records) and answers as
// scripted by the environment (same variables as recorder.py, plus RECORDER_GATE and
// RECORDER_REJECT_WHILE).
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>

#include "sdk/cpp/pimgate_sdk.h"

namespace {

std::string Env(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr ? value : "";
}

}  // namespace

int main() {
  const std::string out = Env("RECORDER_OUT");
  const std::string retry = Env("RECORDER_RETRY_RESOURCE");
  const std::string reject = Env("RECORDER_REJECT_RESOURCE");
  const int delay_ms = std::atoi(Env("RECORDER_DELAY_MS").c_str());
  const bool hang = Env("RECORDER_HANG") == "1";
  // A file whose existence lets handler calls go on: until it exists, they wait (deliveries stay
  // in flight for as long as a test needs).
  const std::string gate = Env("RECORDER_GATE");
  // A file whose existence makes every delivery rejected (once past the gate).
  const std::string reject_while = Env("RECORDER_REJECT_WHILE");
  std::mutex mu;
  pimgate::sdk::RunOptions options;
  options.concurrency = 4;
  return pimgate::sdk::Run(
      [&](const pimgate::v1::Event& event, uint32_t attempt) {
        const auto record = [&] {
          std::lock_guard lock(mu);
          std::ofstream(out, std::ios::app)
              << "{\"plugin\":\"" << pimgate::sdk::PluginName()
              << "\",\"sequence\":" << event.sequence() << ",\"id\":\"" << event.id()
              << "\",\"attempt\":" << attempt << ",\"type\":\"" << event.type()
              << "\",\"resource_id\":\"" << event.resource_id() << "\",\"pid\":" << getpid()
              << ",\"source\":\"" << event.source() << "\",\"kind\":\"" << event.kind()
              << "\",\"at_us\":"
              << std::chrono::duration_cast<std::chrono::microseconds>(
                     std::chrono::system_clock::now().time_since_epoch())
                     .count()
              << "}\n";
        };
        if (hang) {
          record();  // received, and never answered
          while (true) std::this_thread::sleep_for(std::chrono::hours(1));
        }
        while (!gate.empty() && access(gate.c_str(), F_OK) != 0) {
          std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
        if (delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
        record();
        if (!reject.empty() && event.resource_id() == reject)
          return pimgate::sdk::Result::Reject("scripted reject");
        if (!reject_while.empty() && access(reject_while.c_str(), F_OK) == 0) {
          return pimgate::sdk::Result::Reject("rejected while " + reject_while + " exists");
        }
        if (!retry.empty() && event.resource_id() == retry && attempt == 1) {
          return pimgate::sdk::Result::Retry("scripted retry");
        }
        return pimgate::sdk::Result::Ok();
      },
      options);
}
