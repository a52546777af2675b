// The `store:` section: the event log's directory, durability and retention.
#include "config/sections.h"
#include "config/yaml_reader.h"

namespace pimgate::config_internal {

ValueReader Store(StoreConfig& store) {
  return [&store](const Field& field) {
    return ReadMapping(field, {
                                  {"path", String(store.path), true},
                                  {"sync", Bool(store.sync)},
                                  {"retention", Seconds(store.retention)},
                                  {"dead_letter_retention", Seconds(store.dead_letter_retention)},
                                  {"quarantine_retention", Seconds(store.quarantine_retention)},
                                  {"retention_interval", Millis(store.retention_interval)},
                                  {"max_commit_requests", Integer(store.max_commit_requests, 1)},
                                  {"max_pending_requests", Integer(store.max_pending_requests, 1)},
                              });
  };
}

}  // namespace pimgate::config_internal
