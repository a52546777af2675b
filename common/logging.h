// Process-wide logging setup: spdlog is pimgate's one logging library.
#ifndef PIMGATE_COMMON_LOGGING_H_
#define PIMGATE_COMMON_LOGGING_H_

#include <string>

#include "absl/status/status.h"

namespace pimgate {

// Configures the default spdlog logger: `level` trace|debug|info|warn|error, `format` text
// (human-readable lines) or json (one JSON object per line: time, level, thread, msg). Thread-safe
// logger; call once at startup before other threads log.
absl::Status ConfigureLogging(const std::string& level, const std::string& format);

// Escapes `text` for embedding inside a JSON string literal (no surrounding quotes). Left for
// the PIM client's OAuth body until its rewrite on libcurl; new code builds a Json and writes it
// with JsonDump (common/json.h), which also keeps invalid UTF-8 from making invalid JSON.
std::string JsonEscape(const std::string& text);

}  // namespace pimgate

#endif  // PIMGATE_COMMON_LOGGING_H_
