// NATS JetStream implementation of LogBackend (store.backend: jetstream; design/jetstream.md).
// The stream is the replicated write-ahead log of the event log: each record is one whole
// CommitBatch (or a metadata value, or a trim), appended with Nats-Expected-Last-Sequence equal to
// the last stream sequence this node applied, so the stream accepts a record only from a writer
// that has seen every record before it. Each node keeps a local replica of the log's state (a
// RocksDB store at store.path, the embedded backend's layout) built by applying the records in
// stream order; a node whose append is refused catches up and answers Aborted, and EventLog
// decides the group again. Cursors and dead letters live in two key-value buckets. Every NATS
// type stays in jetstream_backend.cc.
#ifndef PIMGATE_CORE_LOG_JETSTREAM_BACKEND_H_
#define PIMGATE_CORE_LOG_JETSTREAM_BACKEND_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "config/config.h"
#include "core/log/lease_store.h"
#include "core/log/log_backend.h"

namespace pimgate {

// Connects to the cluster (credentials and TLS as configured), creates the stream and the
// buckets when missing (with config.replicas) or checks that the existing ones match, and opens
// the local replica at `replica_path` (created when missing). Recover() then checks that the
// replica follows this stream and catches up with it. Errors say which step failed and never
// carry a secret.
absl::StatusOr<std::unique_ptr<LogBackend>> OpenJetStreamBackend(const std::string& replica_path,
                                                                 const JetStreamConfig& config);

// The lease bucket of cluster dispatch (config.cluster.lease_bucket, created when missing with
// config.replicas and MaxAge = config.cluster.lease_ttl), on a connection of its own.
absl::StatusOr<std::unique_ptr<LeaseStore>> OpenJetStreamLeaseStore(const JetStreamConfig& config);

// pimgate --check-config: connects with the configured credentials and TLS and checks that
// JetStream answers and that the stream and buckets either exist with the configured replicas
// and subject or can be created. Creates nothing. One specific message per failure.
absl::Status CheckJetStreamCluster(const JetStreamConfig& config);

}  // namespace pimgate

#endif  // PIMGATE_CORE_LOG_JETSTREAM_BACKEND_H_
