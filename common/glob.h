// GlobMatch: the `*` wildcard of event type patterns (plugin filters, pimgatectl events --type).
#ifndef PIMGATE_COMMON_GLOB_H_
#define PIMGATE_COMMON_GLOB_H_

#include <optional>
#include <string>
#include <string_view>

#include "absl/strings/string_view.h"

namespace pimgate {

// `*` matches any run of characters (dots included); everything else matches itself.
// "product.*" matches "product.updated" and "product.updated.delta", not "product_model.updated".
// Linear in practice (one backtrack point), no recursion: safe on any pattern. Thread-safe.
bool GlobMatch(std::string_view pattern, std::string_view text);

// What is wrong with `glob` as a pattern over canonical event types (lower-case words joined by
// dots, "product.created"): only a-z, 0-9, _, . and * may appear, so a pattern that could never
// match ("Product.*", "product updated") is refused rather than silently matching nothing.
// nullopt when it is fine (the empty pattern included); else "must use only a-z, 0-9, _, . and *,
// got \"Product.*\"".
std::optional<std::string> EventTypeGlobProblem(absl::string_view glob);

}  // namespace pimgate

#endif  // PIMGATE_COMMON_GLOB_H_
