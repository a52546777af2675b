// The `log:` section: level and format of pimgate's own log.
#include "config/sections.h"
#include "config/yaml_reader.h"

namespace pimgate::config_internal {

ValueReader Log(LogConfig& log) {
  return [&log](const Field& field) {
    return ReadMapping(field,
                       {
                           {"level", OneOf({"trace", "debug", "info", "warn", "error"}, log.level)},
                           {"format", OneOf({"text", "json"}, log.format)},
                       });
  };
}

}  // namespace pimgate::config_internal
