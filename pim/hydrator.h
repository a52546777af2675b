// Hydrator: fetches the full resource behind a lightweight Event Platform event (a product,
// product model, family, category, attribute, attribute group, attribute option, reference entity
// record or asset) from the PIM's REST API, for plugins with `hydrate: true`. Products are fetched
// by uuid in batches (one products-uuid search per 100 uuids); every other kind, and products
// known by identifier (or from a PIM that answers products-uuid with its own 404: before 7.0),
// one GET each (/product-models/{code}, /families/{code}, /products/{identifier}, ...); results
// are kept in an LRU cache keyed by (source, kind, resource id, version) and shared by every
// hydrating plugin, and concurrent requests for the same key share one fetch. Only Akeneo's own
// JSON 404 means "not found".
#ifndef PIMGATE_PIM_HYDRATOR_H_
#define PIMGATE_PIM_HYDRATOR_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "core/dispatch/hydration.h"
#include "google/protobuf/struct.pb.h"
#include "pimgate/v1/event.pb.h"

namespace pimgate {

class AkeneoClient;

// One REST client per source name, for the sources with `rest` configured. The same clients
// serve reconciliation and hydration (they share each PIM connection's concurrency limit).
using AkeneoClientMap = std::map<std::string, std::shared_ptr<AkeneoClient>>;

// Default bounds of the hydration cache: whichever is reached first evicts the least recently
// used entries. An entry is one product or product model (or the fact that the PIM has none).
inline constexpr std::size_t kHydrationCacheEntries = 10'000;
inline constexpr std::size_t kHydrationCacheBytes = 64 * 1024 * 1024;

struct HydratorOptions {
  std::size_t cache_entries = kHydrationCacheEntries;
  std::size_t cache_bytes = kHydrationCacheBytes;
};

// Totals since the hydrator was created.
struct HydratorStats {
  uint64_t calls = 0;          // REST calls made (searches and single GETs)
  uint64_t fetched = 0;        // resources received from the PIM
  uint64_t not_found = 0;      // resources the PIM did not have (cached as such)
  uint64_t cache_hits = 0;     // requests answered without a call (cached or joined)
  uint64_t failures = 0;       // requests answered with a failure
  uint64_t cache_entries = 0;  // current
  uint64_t cache_bytes = 0;    // current (protobuf encoded size of the cached items)
};

// Thread-safe. Outlives nothing: callbacks still pending when it is destroyed run against
// internal state they keep alive, so destroying it while fetches are in flight is safe.
class Hydrator : public HydrationService {
 public:
  explicit Hydrator(AkeneoClientMap clients, HydratorOptions options = {});
  ~Hydrator();
  Hydrator(const Hydrator&) = delete;
  Hydrator& operator=(const Hydrator&) = delete;

  // HydrationService: served sources are those with a client; answers come from a REST client
  // thread.
  std::vector<std::string> ServedSources() const override;
  bool ShouldHydrate(const v1::Event& event) const override;
  void Hydrate(std::vector<HydrationRequest> requests, DoneFn done) override;

  HydratorStats stats() const;

  class State;

 private:
  std::shared_ptr<State> state_;
};

}  // namespace pimgate

#endif  // PIMGATE_PIM_HYDRATOR_H_
