// The `log:` section: level and format of pimgate's own log.
#include "config/sections.h"
#include "config/yaml_reader.h"

namespace pimgate::config_internal {

ValueReader Log(LogConfig& log) {
  return [&log](const Field& field) {
    return ReadMapping(
        field,
        {
            {"level", OneOf<LogLevel>({{"trace", LogLevel::kTrace},
                                       {"debug", LogLevel::kDebug},
                                       {"info", LogLevel::kInfo},
                                       {"warn", LogLevel::kWarn},
                                       {"error", LogLevel::kError}},
                                      log.level)},
            {"format", OneOf<LogFormat>({{"text", LogFormat::kText}, {"json", LogFormat::kJson}},
                                        log.format)},
        });
  };
}

}  // namespace pimgate::config_internal
