// LeaseStore: small records with a lifetime in a shared key-value bucket, the building block of
// cluster dispatch's leases (core/dispatch/cluster_dispatch.h). Every record expires once nobody
// wrote it for the bucket's TTL; writes are compare-and-set on the record's revision, so of two
// nodes racing for one record exactly one wins. The JetStream implementation is a key-value
// bucket whose MaxAge is the TTL (OpenJetStreamLeaseStore, core/log/jetstream_backend.h).
#ifndef PIMGATE_CORE_LOG_LEASE_STORE_H_
#define PIMGATE_CORE_LOG_LEASE_STORE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace pimgate {

struct LeaseRecord {
  std::string key;
  std::string value;
  uint64_t revision = 0;
};

// Thread-safe. Keys are dot-separated tokens of letters, digits, '_' and '-'.
class LeaseStore {
 public:
  virtual ~LeaseStore() = default;
  // Writes `value` under `key` if no live record has that key; its revision. AlreadyExists when
  // one does; Unavailable (or another error) when the store could not be asked: the record may
  // or may not have been written then.
  virtual absl::StatusOr<uint64_t> Create(const std::string& key, const std::string& value) = 0;
  // Writes `value` under `key` if the key's live record has revision `revision`; the new
  // revision. FailedPrecondition when the record changed or expired; other errors as Create.
  virtual absl::StatusOr<uint64_t> Update(const std::string& key, const std::string& value,
                                          uint64_t revision) = 0;
  // The key's live record, nullopt when it has none.
  virtual absl::StatusOr<std::optional<LeaseRecord>> Get(const std::string& key) = 0;
  // Every live record whose key starts with `prefix` (a whole token followed by '.'), by key.
  virtual absl::StatusOr<std::vector<LeaseRecord>> List(const std::string& prefix) = 0;
  // OK while the store can be reached.
  virtual absl::Status Health() = 0;
};

}  // namespace pimgate

#endif  // PIMGATE_CORE_LOG_LEASE_STORE_H_
