// GlobMatch: the `*` wildcard of event type patterns (plugin filters, pimgatectl events --type).
#ifndef PIMGATE_COMMON_GLOB_H_
#define PIMGATE_COMMON_GLOB_H_

#include <string_view>

namespace pimgate {

// `*` matches any run of characters (dots included); everything else matches itself.
// "product.*" matches "product.updated" and "product.updated.delta", not "product_model.updated".
// Linear in practice (one backtrack point), no recursion: safe on any pattern. Thread-safe.
bool GlobMatch(std::string_view pattern, std::string_view text);

}  // namespace pimgate

#endif  // PIMGATE_COMMON_GLOB_H_
