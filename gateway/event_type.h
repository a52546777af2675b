// Canonical event types: one naming scheme for both Akeneo producers.
#ifndef PIMGATE_GATEWAY_EVENT_TYPE_H_
#define PIMGATE_GATEWAY_EVENT_TYPE_H_

#include <string>
#include <string_view>

namespace pimgate {

struct CanonicalType {
  std::string type;  // e.g. "product_model.updated", "product.updated.delta"
  std::string kind;  // first segment of `type`: "product_model"
};

// Maps a type exactly as Akeneo sent it to pimgate's canonical type: strips the Event Platform
// prefix `com.akeneo.pim.v1.`, turns `-` into `_`, and the legacy action suffix `removed` into
// `deleted`. Unknown types are mapped by the same rules (new Akeneo types must be accepted).
//   "product.removed"                          -> "product.deleted"
//   "com.akeneo.pim.v1.product-model.updated"  -> "product_model.updated"
//   "com.akeneo.pim.v1.product.updated.delta"  -> "product.updated.delta"
// Thread-safe, allocation only for the result.
CanonicalType CanonicalizeType(std::string_view original_type);

}  // namespace pimgate

#endif  // PIMGATE_GATEWAY_EVENT_TYPE_H_
