// Process-wide logging setup: spdlog is pimgate's one logging library.
#ifndef PIMGATE_COMMON_LOGGING_H_
#define PIMGATE_COMMON_LOGGING_H_

#include <string>

#include "absl/status/status.h"

namespace pimgate {

// The lowest level logged (`log.level`).
enum class LogLevel { kTrace, kDebug, kInfo, kWarn, kError };
// `log.format`: human-readable lines, or one JSON object per line (time, level, thread, msg).
enum class LogFormat { kText, kJson };

// Configures the default spdlog logger, which writes to stderr so that stdout stays free for
// command output (--check-config). Thread-safe logger; call once at startup before other threads
// log.
void ConfigureLogging(LogLevel level, LogFormat format);

}  // namespace pimgate

#endif  // PIMGATE_COMMON_LOGGING_H_
