// Hydrator: fetches the full product or product model behind a lightweight Event Platform event
// from the PIM's REST API, for plugins with `hydrate: true`. Products are fetched by uuid in
// batches (one products-uuid search per 100 uuids), product models one GET each, and products
// known by identifier (or from a PIM that answers products-uuid with its own 404: before 7.0) one
// GET /products/{identifier} each; results are kept in an LRU cache keyed by (source, kind,
// resource id, version) and shared by every hydrating plugin, and concurrent requests for the same
// key share one fetch. Only Akeneo's own JSON 404 means "not found".
#ifndef PIMGATE_CORE_HYDRATOR_H_
#define PIMGATE_CORE_HYDRATOR_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
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

// Where a hydrated event carries what was fetched, inside `Event.data`:
//   data.resource  = the product / product model exactly as the REST API returns it
//   data.hydration = "ok" (data.resource is set) or "not_found" (the PIM no longer has the
//                    resource: deleted after the event was sent; data.resource is absent)
inline constexpr char kHydratedResourceField[] = "resource";
inline constexpr char kHydrationField[] = "hydration";
inline constexpr char kHydrationOk[] = "ok";
inline constexpr char kHydrationNotFound[] = "not_found";

struct HydratorOptions {
  std::size_t cache_entries = kHydrationCacheEntries;
  std::size_t cache_bytes = kHydrationCacheBytes;
};

// True for a lightweight event: Event Platform origin, kind `product` or `product_model`, a
// resource id, and a type that is not `*.deleted` (created, updated, updated.delta,
// became_complete, ...: the resource exists and the event carries only its id).
bool IsLightweightEvent(const v1::Event& event);

// One event to hydrate. `ticket` is echoed in the outcome (the caller's bookkeeping).
struct HydrationRequest {
  uint64_t sequence = 0;
  uint64_t ticket = 0;
  std::string source;
  std::string kind;         // "product" | "product_model"
  std::string resource_id;  // product uuid | model code
  std::string version;      // the cache key's version: Event.version_at, else the event id
};

// The request built from an event IsLightweightEvent() accepts.
HydrationRequest MakeHydrationRequest(const v1::Event& event, uint64_t ticket);

struct HydrationOutcome {
  uint64_t sequence = 0;
  uint64_t ticket = 0;
  // OK: `resource` is set. NotFound: the PIM has no such resource (deleted). Anything else: the
  // fetch failed (PIM unreachable, 5xx after the client's retries, refused credentials ...), and
  // the message says which resource, which source and why.
  absl::Status status;
  std::shared_ptr<const google::protobuf::Struct> resource;
  // No PIM call was made for this request: the cache had it, or it joined a fetch another
  // request (another plugin's) had already started.
  bool from_cache = false;
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
class Hydrator {
 public:
  using DoneFn = std::function<void(HydrationOutcome outcome)>;

  explicit Hydrator(AkeneoClientMap clients, HydratorOptions options = {});
  ~Hydrator();
  Hydrator(const Hydrator&) = delete;
  Hydrator& operator=(const Hydrator&) = delete;

  bool HasClient(const std::string& source) const;
  // IsLightweightEvent(event) and its source has a client.
  bool ShouldHydrate(const v1::Event& event) const;

  // Starts hydrating `requests` (each for a source with a client) and returns at once. `done`
  // is called exactly once per request: at once (from this call) for cache hits, later from a
  // REST client thread for the others. It must not block.
  void Hydrate(std::vector<HydrationRequest> requests, DoneFn done);

  HydratorStats stats() const;

  class State;

 private:
  std::shared_ptr<State> state_;
};

// Writes a hydration result into an event about to be delivered: data.resource = *resource and
// data.hydration = "ok", or (resource null) data.hydration = "not_found" and no data.resource.
void ApplyHydration(const google::protobuf::Struct* resource, v1::Event& event);

}  // namespace pimgate

#endif  // PIMGATE_CORE_HYDRATOR_H_
