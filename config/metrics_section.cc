// The `metrics:` section: the Prometheus and probe endpoint.
#include "config/sections.h"
#include "config/value_readers.h"
#include "config/yaml_reader.h"

namespace pimgate::config_internal {

ValueReader Metrics(MetricsConfig& metrics) {
  return [&metrics](const Field& field) {
    return ReadMapping(field, {
                                  {"enabled", Bool(metrics.enabled)},
                                  {"listen", Listen(metrics.listen)},
                              });
  };
}

}  // namespace pimgate::config_internal
