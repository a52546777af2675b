// Values quoted in error messages, the same way everywhere.
#ifndef PIMGATE_COMMON_QUOTE_H_
#define PIMGATE_COMMON_QUOTE_H_

#include <string>

#include "absl/strings/string_view.h"

namespace pimgate {

// "\"value\"", C-escaped so that control characters show, and cut after 64 characters ("...").
// Only for values that are not secrets.
std::string QuoteForMessage(absl::string_view text);

}  // namespace pimgate

#endif  // PIMGATE_COMMON_QUOTE_H_
