// QuoteForMessage.
#include "common/quote.h"

#include <cstddef>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace pimgate {

std::string QuoteForMessage(absl::string_view text) {
  // Enough to recognise a value; a longer one is most likely something else pasted by mistake.
  constexpr std::size_t kMaxShown = 64;
  if (text.size() > kMaxShown) {
    return absl::StrCat("\"", absl::CHexEscape(text.substr(0, kMaxShown)), "...\"");
  }
  return absl::StrCat("\"", absl::CHexEscape(text), "\"");
}

}  // namespace pimgate
