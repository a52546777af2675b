// pimgate_log_dump: prints every event of a stopped pimgate's store, one per line:
// "<sequence>\t<source>\t<event id>\t<stale 0|1>". scripts/soak reconciles it with what the load
// generator sent and what the plugin received. Opens the store like pimgate does, so pimgate
// must not be running on it.
//
//   pimgate_log_dump STORE_PATH > events.tsv
#include <cstdio>
#include <string>

#include "config/config.h"
#include "core/log/event_log.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: pimgate_log_dump STORE_PATH\n");
    return 2;
  }
  pimgate::StoreConfig store;
  store.path = argv[1];
  auto log = pimgate::EventLog::Open(store);
  if (!log.ok()) {
    std::fprintf(stderr, "pimgate_log_dump: %s\n", std::string(log.status().message()).c_str());
    return 1;
  }
  constexpr std::size_t kPage = 10'000;
  uint64_t from = 1;
  while (true) {
    auto events = (*log)->ReadEvents(from, kPage);
    if (!events.ok()) {
      std::fprintf(stderr, "pimgate_log_dump: %s\n",
                   std::string(events.status().message()).c_str());
      return 1;
    }
    for (const pimgate::v1::Event& event : *events) {
      std::printf("%llu\t%s\t%s\t%d\n", static_cast<unsigned long long>(event.sequence()),
                  event.source().c_str(), event.id().c_str(), event.stale() ? 1 : 0);
      from = event.sequence() + 1;
    }
    if (events->size() < kPage) return 0;
  }
}
