// Hydration as dispatch sees it: the interface of a service that fetches the full resource
// behind a lightweight Event Platform event (pim/hydrator.h implements it on the PIM REST API),
// the request and outcome types, and where a hydrated event carries the result.
#ifndef PIMGATE_CORE_DISPATCH_HYDRATION_H_
#define PIMGATE_CORE_DISPATCH_HYDRATION_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "google/protobuf/struct.pb.h"
#include "pimgate/v1/event.pb.h"

namespace pimgate {

// Where a hydrated event carries what was fetched, inside `Event.data`:
//   data.resource  = the resource (product, product model, family, ...) exactly as the REST
//                    API returns it
//   data.hydration = "ok" (data.resource is set) or "not_found" (the PIM no longer has the
//                    resource: deleted after the event was sent; data.resource is absent)
inline constexpr char kHydratedResourceField[] = "resource";
inline constexpr char kHydrationField[] = "hydration";
inline constexpr char kHydrationOk[] = "ok";
inline constexpr char kHydrationNotFound[] = "not_found";

// The kinds the REST API serves one by one, hence the kinds hydrated: product, product_model,
// family, category, attribute, attribute_group, attribute_option, reference_entity_record and
// asset (an Event Platform event of these kinds carries only the resource's uuid or code).
bool IsHydratedKind(std::string_view kind);

// True for a lightweight event: Event Platform origin, a hydrated kind (IsHydratedKind), a
// resource id, and a type that is not `*.deleted` (created, updated, updated.delta,
// became_complete, ...: the resource exists and the event carries only its id).
bool IsLightweightEvent(const v1::Event& event);

// One event to hydrate. `ticket` is echoed in the outcome (the caller's bookkeeping).
struct HydrationRequest {
  uint64_t sequence = 0;
  uint64_t ticket = 0;
  std::string source;
  std::string kind;         // an IsHydratedKind kind
  std::string resource_id;  // Event.resource_id: product uuid, code, "parent/code"
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

// Fetches resources for hydrating plugins. Thread-safe; outlives nothing (a fetch in flight when
// it is destroyed completes against state it keeps alive).
class HydrationService {
 public:
  using DoneFn = std::function<void(HydrationOutcome outcome)>;
  virtual ~HydrationService() = default;

  // The sources whose resources this service can fetch (those with a REST client), sorted.
  virtual std::vector<std::string> ServedSources() const = 0;
  // IsLightweightEvent(event) and its source is served.
  virtual bool ShouldHydrate(const v1::Event& event) const = 0;
  // Starts hydrating `requests` (each for a served source) and returns at once. `done` is called
  // exactly once per request, possibly from this call (cache hits), else later from another
  // thread. It must not block.
  virtual void Hydrate(std::vector<HydrationRequest> requests, DoneFn done) = 0;
};

// Writes a hydration result into an event about to be delivered: data.resource = *resource and
// data.hydration = "ok", or (resource null) data.hydration = "not_found" and no data.resource.
void ApplyHydration(const google::protobuf::Struct* resource, v1::Event& event);

}  // namespace pimgate

#endif  // PIMGATE_CORE_DISPATCH_HYDRATION_H_
