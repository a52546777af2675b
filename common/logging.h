// Process-wide logging setup: spdlog is pimgate's one logging library.
#ifndef PIMGATE_COMMON_LOGGING_H_
#define PIMGATE_COMMON_LOGGING_H_

#include <string>

#include "absl/status/status.h"

namespace pimgate {

// Configures the default spdlog logger: `level` trace|debug|info|warn|error, `format` text
// (human-readable lines) or json (one JSON object per line, message JSON-escaped). Thread-safe
// logger; call once at startup before other threads log.
absl::Status ConfigureLogging(const std::string& level, const std::string& format);

// Escapes `text` for embedding inside a JSON string literal (no surrounding quotes).
std::string JsonEscape(const std::string& text);

}  // namespace pimgate

#endif  // PIMGATE_COMMON_LOGGING_H_
