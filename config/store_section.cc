// The `store:` section: the event log's backend, directory, durability and retention, and the
// NATS JetStream cluster of `store.backend: jetstream`.
#include <optional>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "config/sections.h"
#include "config/value_readers.h"
#include "config/yaml_reader.h"

namespace pimgate::config_internal {
namespace {

// Stream and bucket names: JetStream refuses dots, wildcards and spaces in them; keep to the
// characters every version accepts.
std::optional<std::string> CheckJetStreamName(absl::string_view name) {
  for (char c : name) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-') {
      return absl::StrCat(Quote(name), " may hold only letters, digits, '_' and '-'");
    }
  }
  return std::nullopt;
}

// A subject to publish on: dot-separated tokens, no wildcards.
std::optional<std::string> CheckSubject(absl::string_view subject) {
  for (absl::string_view token : absl::StrSplit(subject, '.')) {
    if (token.empty()) {
      return absl::StrCat(Quote(subject), " is not a NATS subject (an empty token between dots)");
    }
    for (char c : token) {
      if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-') {
        return absl::StrCat(Quote(subject),
                            " is not a subject pimgate publishes on: tokens of letters, digits, "
                            "'_' and '-' separated by dots (no wildcards)");
      }
    }
  }
  return std::nullopt;
}

std::optional<std::string> CheckServerUrl(absl::string_view url) {
  if (!absl::StartsWith(url, "nats://") && !absl::StartsWith(url, "tls://")) {
    return absl::StrCat(Quote(url),
                        " is not a NATS server URL: nats://host:port or tls://host:port");
  }
  const absl::string_view rest = url.substr(url.find("://") + 3);
  if (rest.empty() || rest.front() == ':' || rest.front() == '/') {
    return absl::StrCat(Quote(url), " names no host");
  }
  return std::nullopt;
}

ValueReader Credentials(std::optional<NatsCredentialsConfig>& out) {
  return [&out](const Field& field) -> absl::Status {
    NatsCredentialsConfig& credentials = out.emplace();
    std::optional<int> user_line, password_line, creds_line;
    absl::Status status = ReadMapping(
        field, {
                   {"user", Tracked(String(credentials.user), user_line)},
                   {"password", Tracked(SecretValue(credentials.password), password_line)},
                   {"creds_file", Tracked(ReadableFile(credentials.creds_file), creds_line)},
               });
    if (!status.ok()) return status;
    const std::string prefix = field.path;
    if (creds_line.has_value() && (user_line.has_value() || password_line.has_value())) {
      return Invalid({field.node, prefix + ".creds_file", *creds_line},
                     "set either creds_file or user and password, not both");
    }
    if (user_line.has_value() != password_line.has_value()) {
      const bool has_user = user_line.has_value();
      return Invalid({field.node, prefix + (has_user ? ".user" : ".password"),
                      has_user ? *user_line : *password_line},
                     has_user ? "needs a password beside it" : "needs a user beside it");
    }
    if (!creds_line.has_value() && !user_line.has_value()) {
      return Invalid(field, "set creds_file, or user and password");
    }
    return absl::OkStatus();
  };
}

ValueReader Tls(std::optional<NatsTlsConfig>& out) {
  return [&out](const Field& field) -> absl::Status {
    NatsTlsConfig& tls = out.emplace();
    std::optional<int> cert_line, key_line;
    absl::Status status =
        ReadMapping(field, {
                               {"ca_file", ReadableFile(tls.ca_file)},
                               {"cert_file", Tracked(ReadableFile(tls.cert_file), cert_line)},
                               {"key_file", Tracked(ReadableFile(tls.key_file), key_line)},
                           });
    if (!status.ok()) return status;
    if (cert_line.has_value() != key_line.has_value()) {
      const bool has_cert = cert_line.has_value();
      return Invalid({field.node, field.path + (has_cert ? ".cert_file" : ".key_file"),
                      has_cert ? *cert_line : *key_line},
                     has_cert ? "needs key_file beside it" : "needs cert_file beside it");
    }
    return absl::OkStatus();
  };
}

// A node id: a token of a key-value key (letters, digits, '_' and '-').
std::optional<std::string> CheckNodeId(absl::string_view id) {
  if (id.empty()) return "must not be empty (leave it out for <hostname>-<pid>)";
  if (id.size() > 100) return "must be at most 100 characters";
  return CheckJetStreamName(id);
}

ValueReader Cluster(ClusterConfig& cluster) {
  return [&cluster](const Field& field) -> absl::Status {
    absl::Status status = ReadMapping(
        field, {
                   {"node_id", CheckedString(cluster.node_id, CheckNodeId)},
                   {"partitions", IntegerInRange(cluster.partitions, 1, 64)},
                   {"lease_ttl", Millis(cluster.lease_ttl)},
                   {"lease_bucket", CheckedString(cluster.lease_bucket, CheckJetStreamName)},
               });
    if (!status.ok()) return status;
    if (cluster.lease_ttl < std::chrono::milliseconds(1000)) {
      return Invalid(field, "lease_ttl must be at least 1s (renewals go every lease_ttl / 4)");
    }
    return absl::OkStatus();
  };
}

ValueReader JetStream(std::optional<JetStreamConfig>& out) {
  return [&out](const Field& field) -> absl::Status {
    JetStreamConfig& js = out.emplace();
    return ReadMapping(
        field,
        {
            {"servers", NonEmptyList(StringList(js.servers, CheckServerUrl), "server"), true},
            {"credentials", Credentials(js.credentials)},
            {"tls", Tls(js.tls)},
            {"replicas", OneOf<int>({{"1", 1}, {"3", 3}}, js.replicas)},
            {"stream", CheckedString(js.stream, CheckJetStreamName)},
            {"subject", CheckedString(js.subject, CheckSubject)},
            {"cursor_bucket", CheckedString(js.cursor_bucket, CheckJetStreamName)},
            {"dead_letter_bucket", CheckedString(js.dead_letter_bucket, CheckJetStreamName)},
            {"write_timeout", Millis(js.write_timeout)},
            {"cluster", Cluster(js.cluster)},
        });
  };
}

}  // namespace

ValueReader Store(StoreConfig& store) {
  return [&store](const Field& field) -> absl::Status {
    std::optional<int> backend_line, jetstream_line;
    absl::Status status = ReadMapping(
        field,
        {
            {"backend", Tracked(OneOf<StoreBackend>({{"rocksdb", StoreBackend::kRocksDb},
                                                     {"jetstream", StoreBackend::kJetStream}},
                                                    store.backend),
                                backend_line)},
            {"path", String(store.path), true},
            {"jetstream", Tracked(JetStream(store.jetstream), jetstream_line)},
            {"sync", Bool(store.sync)},
            {"retention", Seconds(store.retention)},
            {"dead_letter_retention", Seconds(store.dead_letter_retention)},
            {"quarantine_retention", Seconds(store.quarantine_retention)},
            {"retention_interval", Millis(store.retention_interval)},
            {"max_commit_requests", Integer(store.max_commit_requests, 1)},
            {"max_pending_requests", Integer(store.max_pending_requests, 1)},
        });
    if (!status.ok()) return status;
    const std::string prefix = field.path.empty() ? "store" : field.path;
    if (store.backend == StoreBackend::kJetStream && !jetstream_line.has_value()) {
      return Invalid({field.node, prefix + ".backend", *backend_line},
                     "jetstream needs store.jetstream (at least its servers)");
    }
    if (store.backend != StoreBackend::kJetStream && jetstream_line.has_value()) {
      return Invalid({field.node, prefix + ".jetstream", *jetstream_line},
                     "is only read with store.backend: jetstream (the backend is rocksdb)");
    }
    return absl::OkStatus();
  };
}

}  // namespace pimgate::config_internal
