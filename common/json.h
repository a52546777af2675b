// JSON documents pimgate writes (HTTP answers, log lines, PIM search filters, the ready file):
// built as nlohmann::ordered_json values, so members keep the order they are added in, and
// written by JsonDump, never by string concatenation.
#ifndef PIMGATE_COMMON_JSON_H_
#define PIMGATE_COMMON_JSON_H_

#include <string>

#include "nlohmann/json.hpp"

namespace pimgate {

// A JSON value whose object members keep their insertion order (answers are compared byte for
// byte by clients and tests).
using Json = nlohmann::ordered_json;

// `value` as compact JSON. Strings that are not valid UTF-8 (a request target, a header value, a
// log message quoting either) have each invalid byte replaced by U+FFFD instead of throwing
// (nlohmann's default): the output is always valid JSON, and no exception leaves an I/O thread.
inline std::string JsonDump(const Json& value) {
  return value.dump(/*indent=*/-1, /*indent_char=*/' ', /*ensure_ascii=*/false,
                    Json::error_handler_t::replace);
}

}  // namespace pimgate

#endif  // PIMGATE_COMMON_JSON_H_
