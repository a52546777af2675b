// spdlog setup for text and JSON-lines output.
#include "common/logging.h"

#include <memory>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/json.h"
#include "spdlog/pattern_formatter.h"
#include "spdlog/sinks/stdout_color_sinks.h"
#include "spdlog/spdlog.h"

namespace pimgate {
namespace {

// One JSON object per line: {"time":"2026-11-20T10:15:00.123456Z","level":"info","thread":7,
// "msg":"..."}. The message is whatever was logged (it may quote a request's bytes): JsonDump
// keeps the line valid JSON whatever they are.
class JsonLineFormatter : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    Json line;
    line["time"] =
        absl::FormatTime("%Y-%m-%dT%H:%M:%E6SZ", absl::FromChrono(msg.time), absl::UTCTimeZone());
    const spdlog::string_view_t level = spdlog::level::to_string_view(msg.level);
    line["level"] = std::string_view(level.data(), level.size());
    line["thread"] = msg.thread_id;
    line["msg"] = std::string_view(msg.payload.data(), msg.payload.size());
    const std::string text = JsonDump(line);
    dest.append(text.data(), text.data() + text.size());
    dest.push_back('\n');
  }
  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<JsonLineFormatter>();
  }
};

spdlog::level::level_enum SpdlogLevel(LogLevel level) {
  switch (level) {
    case LogLevel::kTrace:
      return spdlog::level::trace;
    case LogLevel::kDebug:
      return spdlog::level::debug;
    case LogLevel::kInfo:
      return spdlog::level::info;
    case LogLevel::kWarn:
      return spdlog::level::warn;
    case LogLevel::kError:
      return spdlog::level::err;
  }
  return spdlog::level::info;
}

}  // namespace

void ConfigureLogging(LogLevel level, LogFormat format) {
  spdlog::drop("pimgate");
  auto logger = spdlog::stderr_color_mt("pimgate");
  spdlog::set_default_logger(logger);
  spdlog::set_level(SpdlogLevel(level));
  switch (format) {
    case LogFormat::kJson:
      spdlog::set_formatter(std::make_unique<JsonLineFormatter>());
      break;
    case LogFormat::kText:
      spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %^%-5l%$ %v", spdlog::pattern_time_type::utc);
      break;
  }
  spdlog::flush_on(spdlog::level::warn);
}

}  // namespace pimgate
