// NATS JetStream implementation of LogBackend; see jetstream_backend.h and design/jetstream.md.
// Every NATS type stays in this file.
//
// Stream messages (subject store.jetstream.subject): a serialized v1::LogRecord, with headers
//   Pimgate-Head                  the record's head (the last event sequence once applied)
//   Nats-Msg-Id                   <writer id>-<chunk>: the same id on every retry of one append
//   Nats-Expected-Last-Sequence   the last stream sequence the writer applied
//   Pimgate-Chunk                 i/n, only on records sent as n > 1 chunks
// The local replica is a RocksDB store in the embedded backend's layout (rocksdb_backend.h); it
// remembers, as metadata written in the same batch as each record, the stream it follows and the
// last stream sequence it applied.
#include "core/log/jetstream_backend.h"

#include <nats/nats.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/log/rocksdb_backend.h"
#include "google/protobuf/timestamp.pb.h"
#include "spdlog/spdlog.h"

namespace pimgate {
namespace {

constexpr char kHeadHeader[] = "Pimgate-Head";
constexpr char kChunkHeader[] = "Pimgate-Chunk";
constexpr char kExpectedLastSequenceHeader[] = "Nats-Expected-Last-Sequence";
constexpr char kMsgIdHeader[] = "Nats-Msg-Id";

// Replica metadata (LogBackend::PutMeta keys of the local RocksDB store).
constexpr char kStreamKey[] = "pimgate.jetstream/stream";
constexpr char kAppliedKey[] = "pimgate.jetstream/applied";

// Nats-Msg-Id window of the stream: a retry of an in-doubt append within it is recognised.
constexpr int64_t kDuplicateWindowNanos = int64_t{120} * 1'000'000'000;
// Bytes of a message left for its headers when a record is cut into chunks.
constexpr int64_t kHeaderRoom = 1024;
// A metadata write or a trim is appended again after a conflict at most this many times.
constexpr int kMaxAppendAttempts = 100;
// Pause between two attempts of an in-doubt append, and between two looks at an unfinished
// chunked record of another writer.
constexpr absl::Duration kRetryPause = absl::Milliseconds(50);
// Longest a single JetStream API request waits for its answer.
constexpr int64_t kRequestWaitMs = 5000;
// The follower catches up at least this often, even when no notification came.
constexpr absl::Duration kFollowEvery = absl::Seconds(1);
// How long closing the connection may take before the backend stops waiting for it.
constexpr absl::Duration kCloseWait = absl::Seconds(5);

// How long opening the log keeps trying while the cluster answers Unavailable (a leader
// election, a server that just restarted and is catching up) before it gives up.
constexpr absl::Duration kOpenPatience = absl::Seconds(30);

// Range of google.protobuf.Timestamp; clamping keeps the conversion to microseconds exact.
constexpr int64_t kMinTimestampSeconds = -62135596800;
constexpr int64_t kMaxTimestampSeconds = 253402300799;

int64_t ToMicros(const google::protobuf::Timestamp& ts) {
  const int64_t seconds = std::clamp(ts.seconds(), kMinTimestampSeconds, kMaxTimestampSeconds);
  return seconds * 1'000'000 + ts.nanos() / 1'000;
}

// The text of a failed NATS call: the library's own message for it when it has one.
std::string NatsText(natsStatus s) {
  natsStatus last = NATS_OK;
  const char* text = nats_GetLastError(&last);
  if (last == s && text != nullptr && text[0] != '\0') return text;
  return natsStatus_GetText(s);
}

absl::Status NatsError(natsStatus s, int jerr, absl::string_view what) {
  std::string message = absl::StrCat(what, ": ", NatsText(s));
  if (jerr != 0) absl::StrAppend(&message, " (JetStream error ", jerr, ")");
  switch (s) {
    case NATS_NOT_FOUND:
      return absl::NotFoundError(message);
    case NATS_INVALID_ARG:
    case NATS_NOT_PERMITTED:
      return absl::FailedPreconditionError(message);
    default:
      return absl::UnavailableError(message);
  }
}

// A server URL as it may be shown: without user:password@.
std::string RedactUrl(absl::string_view url) {
  const std::size_t scheme = url.find("://");
  const std::size_t at = url.find('@');
  if (scheme == absl::string_view::npos || at == absl::string_view::npos || at < scheme) {
    return std::string(url);
  }
  return absl::StrCat(url.substr(0, scheme + 3), "***@", url.substr(at + 1));
}

std::string ServersText(const JetStreamConfig& config) {
  std::vector<std::string> servers;
  for (const std::string& url : config.servers) servers.push_back(RedactUrl(url));
  return absl::StrJoin(servers, ", ");
}

struct MsgDeleter {
  void operator()(natsMsg* m) const { natsMsg_Destroy(m); }
};
using MsgPtr = std::unique_ptr<natsMsg, MsgDeleter>;
struct StreamInfoDeleter {
  void operator()(jsStreamInfo* si) const { jsStreamInfo_Destroy(si); }
};
using StreamInfoPtr = std::unique_ptr<jsStreamInfo, StreamInfoDeleter>;
struct KvDeleter {
  void operator()(kvStore* kv) const { kvStore_Destroy(kv); }
};
using KvPtr = std::unique_ptr<kvStore, KvDeleter>;
struct EntryDeleter {
  void operator()(kvEntry* e) const { kvEntry_Destroy(e); }
};
using EntryPtr = std::unique_ptr<kvEntry, EntryDeleter>;
struct OptionsDeleter {
  void operator()(natsOptions* o) const { natsOptions_Destroy(o); }
};
using OptionsPtr = std::unique_ptr<natsOptions, OptionsDeleter>;

// What the client's callbacks report about the connection. Outlives the connection.
struct ConnectionState {
  std::atomic<bool> connected{true};
  std::atomic<bool> closing{false};  // pimgate closes it: no warning
  absl::Mutex mu;
  bool closed ABSL_GUARDED_BY(mu) = false;
};

void OnDisconnected(natsConnection*, void* closure) {
  auto* state = static_cast<ConnectionState*>(closure);
  if (state->connected.exchange(false) && !state->closing.load()) {
    spdlog::warn("event log: JetStream connection lost; reconnecting");
  }
}

void OnReconnected(natsConnection*, void* closure) {
  static_cast<ConnectionState*>(closure)->connected.store(true);
  spdlog::info("event log: JetStream connection restored");
}

void OnClosed(natsConnection*, void* closure) {
  auto* state = static_cast<ConnectionState*>(closure);
  state->connected.store(false);
  absl::MutexLock lock(&state->mu);
  state->closed = true;
}

// A connection to the cluster and its JetStream context.
class NatsConnection {
 public:
  static absl::StatusOr<std::unique_ptr<NatsConnection>> Connect(const JetStreamConfig& config) {
    auto conn = std::unique_ptr<NatsConnection>(new NatsConnection());
    natsOptions* raw = nullptr;
    if (natsStatus s = natsOptions_Create(&raw); s != NATS_OK) {
      return NatsError(s, 0, "cannot create NATS options");
    }
    OptionsPtr opts(raw);
    std::vector<const char*> servers;
    for (const std::string& url : config.servers) servers.push_back(url.c_str());
    const std::string where = absl::StrCat("the NATS servers ", ServersText(config));
    natsStatus s =
        natsOptions_SetServers(opts.get(), servers.data(), static_cast<int>(servers.size()));
    if (s == NATS_OK) s = natsOptions_SetName(opts.get(), "pimgate");
    if (s == NATS_OK) s = natsOptions_SetMaxReconnect(opts.get(), -1);  // forever
    if (s == NATS_OK) s = natsOptions_SetReconnectWait(opts.get(), 250);
    if (s == NATS_OK) s = natsOptions_SetTimeout(opts.get(), kRequestWaitMs);
    if (s == NATS_OK) {
      s = natsOptions_SetDisconnectedCB(opts.get(), OnDisconnected, conn->state_.get());
    }
    if (s == NATS_OK) {
      s = natsOptions_SetReconnectedCB(opts.get(), OnReconnected, conn->state_.get());
    }
    if (s == NATS_OK) s = natsOptions_SetClosedCB(opts.get(), OnClosed, conn->state_.get());
    if (s != NATS_OK) return NatsError(s, 0, absl::StrCat("bad options for ", where));
    if (config.credentials.has_value()) {
      const NatsCredentialsConfig& credentials = *config.credentials;
      if (!credentials.creds_file.empty()) {
        s = natsOptions_SetUserCredentialsFromFiles(opts.get(), credentials.creds_file.c_str(),
                                                    nullptr);
        if (s != NATS_OK) {
          return NatsError(
              s, 0, absl::StrCat("cannot use the credentials file ", credentials.creds_file));
        }
      } else {
        // The password is never part of a message.
        s = natsOptions_SetUserInfo(opts.get(), credentials.user.c_str(),
                                    credentials.password->value.c_str());
        if (s != NATS_OK) return NatsError(s, 0, "cannot set the NATS user and password");
      }
    }
    if (config.tls.has_value()) {
      const NatsTlsConfig& tls = *config.tls;
      s = natsOptions_SetSecure(opts.get(), true);
      if (s == NATS_OK && !tls.ca_file.empty()) {
        s = natsOptions_LoadCATrustedCertificates(opts.get(), tls.ca_file.c_str());
        if (s != NATS_OK) {
          return NatsError(s, 0, absl::StrCat("cannot load the CA file ", tls.ca_file));
        }
      }
      if (s == NATS_OK && !tls.cert_file.empty()) {
        s = natsOptions_LoadCertificatesChain(opts.get(), tls.cert_file.c_str(),
                                              tls.key_file.c_str());
        if (s != NATS_OK) {
          return NatsError(s, 0,
                           absl::StrCat("cannot load the client certificate ", tls.cert_file,
                                        " and key ", tls.key_file));
        }
      }
      if (s != NATS_OK) return NatsError(s, 0, "cannot enable TLS");
    }
    s = natsConnection_Connect(&conn->nc_, opts.get());
    if (s != NATS_OK) {
      conn->nc_ = nullptr;
      {
        absl::MutexLock lock(&conn->state_->mu);
        conn->state_->closed = true;  // nothing to wait for
      }
      return NatsError(s, 0, absl::StrCat("cannot connect to ", where));
    }
    jsOptions js_opts;
    jsOptions_Init(&js_opts);
    js_opts.Wait = kRequestWaitMs;
    if (s = natsConnection_JetStream(&conn->js_, conn->nc_, &js_opts); s != NATS_OK) {
      return NatsError(s, 0, absl::StrCat("cannot use JetStream on ", where));
    }
    return conn;
  }

  // A second JetStream context on this connection whose requests wait at most `wait_ms` for
  // their answer (the lease store's: a renewal answered later is of no use). Owned here.
  absl::StatusOr<jsCtx*> JetStreamWithWait(int64_t wait_ms) {
    jsOptions js_opts;
    jsOptions_Init(&js_opts);
    js_opts.Wait = wait_ms;
    if (natsStatus s = natsConnection_JetStream(&short_js_, nc_, &js_opts); s != NATS_OK) {
      short_js_ = nullptr;
      return NatsError(s, 0, "cannot create a JetStream context");
    }
    return short_js_;
  }

  ~NatsConnection() {
    if (short_js_ != nullptr) jsCtx_Destroy(short_js_);
    if (js_ != nullptr) jsCtx_Destroy(js_);
    if (nc_ == nullptr) return;
    state_->closing.store(true);
    natsConnection_Close(nc_);
    bool closed = false;
    {
      absl::MutexLock lock(&state_->mu);
      auto is_closed = [this]() ABSL_SHARED_LOCKS_REQUIRED(state_->mu) { return state_->closed; };
      closed = state_->mu.AwaitWithTimeout(absl::Condition(&is_closed), kCloseWait);
    }
    natsConnection_Destroy(nc_);
    // The closed callback may still come: leave it a state to write to.
    if (!closed) state_.release();
  }

  natsConnection* nc() const { return nc_; }
  jsCtx* js() const { return js_; }
  bool connected() const {
    return state_->connected.load() && natsConnection_Status(nc_) == NATS_CONN_STATUS_CONNECTED;
  }

 private:
  NatsConnection() : state_(std::make_unique<ConnectionState>()) {}

  std::unique_ptr<ConnectionState> state_;
  natsConnection* nc_ = nullptr;
  jsCtx* js_ = nullptr;
  jsCtx* short_js_ = nullptr;  // JetStreamWithWait
};

// The stream's information, or NotFound.
absl::StatusOr<StreamInfoPtr> GetStreamInfo(jsCtx* js, const std::string& stream) {
  jsStreamInfo* si = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  natsStatus s = js_GetStreamInfo(&si, js, stream.c_str(), nullptr, &jerr);
  if (s == NATS_NOT_FOUND || jerr == JSStreamNotFoundErr) {
    return absl::NotFoundError(absl::StrCat("stream ", stream, " does not exist"));
  }
  if (s == NATS_NO_RESPONDERS) {
    return absl::UnavailableError(
        "JetStream does not answer: is it enabled on the NATS servers (jetstream {} in their "
        "configuration), and does the cluster have a meta leader?");
  }
  if (s != NATS_OK) return NatsError(s, jerr, absl::StrCat("cannot read stream ", stream));
  return StreamInfoPtr(si);
}

// Checks an existing stream against the configuration: replicas and subject.
absl::Status CheckStream(const jsStreamInfo& si, const std::string& what, int replicas,
                         const std::string* subject) {
  if (si.Config == nullptr) return absl::InternalError(absl::StrCat(what, ": no configuration"));
  if (si.Config->Replicas != replicas) {
    return absl::FailedPreconditionError(absl::StrCat(
        what, " has ", si.Config->Replicas, " replica(s), but store.jetstream.replicas is ",
        replicas, ": change one of them (nats stream edit, or the configuration)"));
  }
  if (subject != nullptr) {
    std::vector<std::string> subjects;
    for (int i = 0; i < si.Config->SubjectsLen; ++i) subjects.push_back(si.Config->Subjects[i]);
    if (std::find(subjects.begin(), subjects.end(), *subject) == subjects.end()) {
      return absl::FailedPreconditionError(absl::StrCat(
          what, " takes the subjects [", absl::StrJoin(subjects, ", "), "], not ", *subject,
          " (store.jetstream.subject): is it another application's stream?"));
    }
  }
  return absl::OkStatus();
}

// The stream, created when missing (`create`), checked otherwise.
absl::StatusOr<StreamInfoPtr> EnsureStream(jsCtx* js, const JetStreamConfig& config) {
  absl::StatusOr<StreamInfoPtr> info = GetStreamInfo(js, config.stream);
  if (info.ok()) {
    if (absl::Status s = CheckStream(**info, absl::StrCat("stream ", config.stream),
                                     config.replicas, &config.subject);
        !s.ok()) {
      return s;
    }
    return info;
  }
  if (!absl::IsNotFound(info.status())) return info.status();
  jsStreamConfig cfg;
  jsStreamConfig_Init(&cfg);
  cfg.Name = config.stream.c_str();
  const char* subjects[] = {config.subject.c_str()};
  cfg.Subjects = subjects;
  cfg.SubjectsLen = 1;
  cfg.Storage = js_FileStorage;
  cfg.Replicas = config.replicas;
  cfg.Duplicates = kDuplicateWindowNanos;
  cfg.Description = "pimgate event log (records of group commits; pimgate trims it)";
  jsStreamInfo* si = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  natsStatus s = js_AddStream(&si, js, &cfg, nullptr, &jerr);
  if (s != NATS_OK) {
    return NatsError(s, jerr,
                     absl::StrCat("cannot create stream ", config.stream, " with ", config.replicas,
                                  " replica(s)"));
  }
  spdlog::info("event log: created JetStream stream {} (subject {}, {} replica(s))", config.stream,
               config.subject, config.replicas);
  return StreamInfoPtr(si);
}

// Buckets are read with direct gets (ScanBucket, kvStore_Get): their streams must allow them.
// libnats 3.4 creates buckets that do; one made otherwise (an older client) is refused by name.
absl::Status CheckDirectGets(const jsStreamInfo& si, const std::string& bucket) {
  if (si.Config != nullptr && si.Config->AllowDirect) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "key-value bucket ", bucket, " does not allow direct gets (its stream KV_", bucket,
      " was created without allow_direct, by an older client): enable them (nats stream edit KV_",
      bucket, " --allow-direct) or delete the bucket while no node runs"));
}

// A key-value bucket, created when missing, with its replicas checked.
absl::StatusOr<KvPtr> EnsureBucket(jsCtx* js, const std::string& bucket, int replicas) {
  kvStore* kv = nullptr;
  natsStatus s = js_KeyValue(&kv, js, bucket.c_str());
  if (s == NATS_OK) {
    KvPtr owned(kv);
    absl::StatusOr<StreamInfoPtr> info = GetStreamInfo(js, absl::StrCat("KV_", bucket));
    if (!info.ok()) return info.status();
    if (absl::Status st =
            CheckStream(**info, absl::StrCat("key-value bucket ", bucket), replicas, nullptr);
        !st.ok()) {
      return st;
    }
    if (absl::Status st = CheckDirectGets(**info, bucket); !st.ok()) return st;
    return owned;
  }
  if (s != NATS_NOT_FOUND) {
    return NatsError(s, 0, absl::StrCat("cannot open key-value bucket ", bucket));
  }
  kvConfig cfg;
  kvConfig_Init(&cfg);
  cfg.Bucket = bucket.c_str();
  cfg.History = 1;
  cfg.Replicas = replicas;
  cfg.StorageType = js_FileStorage;
  s = js_CreateKeyValue(&kv, js, &cfg);
  if (s != NATS_OK) {
    return NatsError(
        s, 0,
        absl::StrCat("cannot create key-value bucket ", bucket, " with ", replicas, " replica(s)"));
  }
  return KvPtr(kv);
}

std::string RandomWriterId() {
  std::random_device device;
  std::mt19937_64 random((static_cast<uint64_t>(device()) << 32) ^ device());
  return absl::StrFormat("%016x", random());
}

std::optional<std::string> Header(natsMsg* msg, const char* key) {
  const char* value = nullptr;
  if (natsMsgHeader_Get(msg, key, &value) != NATS_OK || value == nullptr) return std::nullopt;
  return std::string(value);
}

// "i/n" of a Pimgate-Chunk header.
std::optional<std::pair<int, int>> ParseChunk(const std::string& text) {
  std::vector<absl::string_view> parts = absl::StrSplit(text, '/');
  int i = 0;
  int n = 0;
  if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &i) || !absl::SimpleAtoi(parts[1], &n) ||
      i < 1 || n < 2 || i > n) {
    return std::nullopt;
  }
  return std::pair{i, n};
}

// One key's live value, as ScanBucket found it.
struct BucketEntry {
  std::string key;
  std::string value;
  uint64_t revision = 0;  // its stream sequence
};

// The live values of the keys of `bucket` that match `pattern` (a subject pattern relative to
// the bucket: "lease.>", "<plugin>.*"), by key. Read message after message with direct gets (the
// next message on the filter from a sequence): any current replica of the bucket's stream
// answers, so a read needs neither the stream's leader nor the cluster's meta leader, and it
// creates no consumer. (A watch, or kvStore_Keys, creates an ephemeral consumer; nats-server 2.9
// places it on a replica of the stream chosen at random, a dead one included, and then the call
// times out: one time in three with one server of three down, for as long as it is down.) A
// replica that lags answers with what it has: the result can be a little old, as any read from
// a follower; a key rewritten during the scan is found again at its new revision, and the newer
// one is kept. Each request waits at most the JetStream context's wait.
absl::StatusOr<std::vector<BucketEntry>> ScanBucket(jsCtx* js, const std::string& bucket,
                                                    const std::string& pattern) {
  const std::string stream = absl::StrCat("KV_", bucket);
  const std::string prefix = absl::StrCat("$KV.", bucket, ".");
  const std::string filter = absl::StrCat(prefix, pattern);
  std::map<std::string, BucketEntry> latest;
  uint64_t next = 1;
  for (;;) {
    jsDirectGetMsgOptions opts;
    jsDirectGetMsgOptions_Init(&opts);
    opts.Sequence = next;
    opts.NextBySubject = filter.c_str();
    natsMsg* raw = nullptr;
    natsStatus s = js_DirectGetMsg(&raw, js, stream.c_str(), nullptr, &opts);
    if (s == NATS_NOT_FOUND) break;  // nothing on the filter past `next`
    if (s != NATS_OK) return NatsError(s, 0, absl::StrCat("cannot read bucket ", bucket));
    MsgPtr msg(raw);
    const uint64_t sequence = natsMsg_GetSequence(msg.get());
    const absl::string_view subject = natsMsg_GetSubject(msg.get());
    if (sequence < next || !absl::StartsWith(subject, prefix)) {
      return absl::InternalError(absl::StrCat("bucket ", bucket, ": a direct get from sequence ",
                                              next, " answered sequence ", sequence, " (", subject,
                                              ")"));
    }
    next = sequence + 1;
    // Sequences only grow: this message is the newest of its key the scan has seen.
    std::string key(subject.substr(prefix.size()));
    const std::optional<std::string> op = Header(msg.get(), "KV-Operation");
    if (op.has_value() && (*op == "DEL" || *op == "PURGE")) {
      latest.erase(key);
      continue;
    }
    BucketEntry& entry = latest[key];
    entry.key = std::move(key);
    entry.value.assign(natsMsg_GetData(msg.get()), natsMsg_GetDataLength(msg.get()));
    entry.revision = sequence;
  }
  std::vector<BucketEntry> entries;
  entries.reserve(latest.size());
  for (auto& [key, entry] : latest) entries.push_back(std::move(entry));
  return entries;
}

std::string DeadLetterKey(const std::string& plugin, uint64_t sequence) {
  return absl::StrFormat("%s.%020d", plugin, sequence);
}

// Calls `step` again while it fails with Unavailable, until kOpenPatience has passed.
template <typename Step>
auto WithPatience(absl::string_view what, Step step) -> decltype(step()) {
  const absl::Time deadline = absl::Now() + kOpenPatience;
  for (;;) {
    auto result = step();
    if (result.ok() || !absl::IsUnavailable(result.status()) || absl::Now() >= deadline) {
      return result;
    }
    spdlog::warn("event log: {}: {}; trying again", std::string(what),
                 std::string(result.status().message()));
    absl::SleepFor(absl::Milliseconds(500));
  }
}

class JetStreamBackend final : public LogBackend {
 public:
  JetStreamBackend(std::string path, JetStreamConfig config, std::unique_ptr<NatsConnection> conn,
                   KvPtr cursors, KvPtr dead_letters, std::unique_ptr<LogBackend> replica,
                   int64_t stream_created)
      : path_(std::move(path)),
        config_(std::move(config)),
        conn_(std::move(conn)),
        cursors_(std::move(cursors)),
        dead_letters_(std::move(dead_letters)),
        replica_(std::move(replica)),
        identity_(absl::StrCat(config_.stream, " created ", stream_created)),
        writer_prefix_(RandomWriterId()) {}

  ~JetStreamBackend() override {
    Follow(nullptr);
    cursors_.reset();
    dead_letters_.reset();
    conn_.reset();
  }

  absl::StatusOr<RecoveredState> Recover() override {
    absl::MutexLock lock(&mu_);
    absl::StatusOr<RecoveredState> state = replica_->Recover();
    if (!state.ok()) return state.status();
    head_ = state->last_sequence;
    last_quarantine_id_ = state->last_quarantine_id;
    absl::StatusOr<std::optional<std::string>> followed = replica_->GetMeta(kStreamKey);
    if (!followed.ok()) return followed.status();
    absl::StatusOr<std::optional<std::string>> applied = replica_->GetMeta(kAppliedKey);
    if (!applied.ok()) return applied.status();
    if (followed->has_value()) {
      if (**followed != identity_) {
        return absl::FailedPreconditionError(absl::StrCat(
            "the replica at ", path_, " follows JetStream stream ", **followed, ", not stream ",
            identity_,
            ": pimgate does not forget what a replica holds; move the directory away to "
            "rebuild it from the cluster"));
      }
    } else if (head_ > 0 || last_quarantine_id_ > 0) {
      return absl::FailedPreconditionError(
          absl::StrCat(path_, " holds an event log that is no replica of JetStream stream ",
                       identity_, " (an embedded store?): point store.path at a new directory"));
    } else if (absl::Status s = replica_->PutMeta(kStreamKey, identity_); !s.ok()) {
      return s;
    }
    applied_sequence_ = 0;
    if (applied->has_value() && !absl::SimpleAtoi(**applied, &applied_sequence_)) {
      return absl::DataLossError(
          absl::StrCat("the replica at ", path_, " has an unreadable applied stream sequence"));
    }
    absl::StatusOr<StreamInfoPtr> info = WithPatience(
        "reading the stream", [&] { return GetStreamInfo(conn_->js(), config_.stream); });
    if (!info.ok()) return info.status();
    if (applied_sequence_ > (*info)->State.LastSeq) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the replica at ", path_, " has applied stream ", config_.stream, " up to sequence ",
          applied_sequence_, ", but the stream ends at ", (*info)->State.LastSeq,
          ": the cluster lost acknowledged records; move the directory away to rebuild it "
          "from the cluster (what it holds beyond the stream would be lost)"));
    }
    absl::StatusOr<bool> caught_up = WithPatience("catching up with the stream", [&] {
      mu_.AssertHeld();
      absl::Status s = CatchUpLocked();
      return s.ok() ? absl::StatusOr<bool>(true) : absl::StatusOr<bool>(s);
    });
    if (!caught_up.ok()) return caught_up.status();
    RecoveredState recovered;
    recovered.last_sequence = head_;
    recovered.last_quarantine_id = last_quarantine_id_;
    recovered.event_count = state->event_count;
    spdlog::info("event log: replica at {} follows JetStream stream {} at sequence {} (head {})",
                 path_, config_.stream, applied_sequence_, head_);
    return recovered;
  }

  absl::StatusOr<RecoveredState> Resync() override {
    absl::MutexLock lock(&mu_);
    if (absl::Status s = CatchUpLocked(); !s.ok()) return s;
    RecoveredState state;
    state.last_sequence = head_;
    state.last_quarantine_id = last_quarantine_id_;
    return state;
  }

  absl::Status Write(const CommitBatch& batch, bool /*sync*/) override {
    absl::MutexLock lock(&mu_);
    if (absl::Status s = WaitForUnfinishedRecordLocked(); !s.ok()) return s;
    // A log without events yet may start above 1, and likewise its quarantine: a store copied
    // by `pimgate migrate-store` keeps its sequences, and retention may have trimmed its first
    // events (or all of them: a batch without events then sets the head). EventLog itself
    // always continues at head + 1.
    uint64_t base = head_;
    if (head_ == 0) {
      base = batch.events.empty() ? batch.last_sequence
                                  : std::max<uint64_t>(batch.events.front().sequence, 1) - 1;
    }
    uint64_t quarantine_base = last_quarantine_id_;
    if (last_quarantine_id_ == 0) {
      quarantine_base = batch.quarantine.empty()
                            ? batch.last_quarantine_id
                            : std::max<uint64_t>(batch.quarantine.front().id(), 1) - 1;
    }
    // A batch decided on an older state than the replica's (a conflict the log has not seen
    // yet) is not sent: it would be refused anyway.
    if (batch.last_sequence != base + batch.events.size() ||
        (!batch.events.empty() && batch.events.front().sequence != base + 1) ||
        batch.last_quarantine_id != quarantine_base + batch.quarantine.size() ||
        (!batch.quarantine.empty() && batch.quarantine.front().id() != quarantine_base + 1)) {
      return absl::AbortedError(absl::StrCat("the batch was decided on the log at ",
                                             batch.last_sequence - batch.events.size(),
                                             ", the replica is at ", head_));
    }
    v1::LogRecord record;
    v1::LogRecord::Batch* out = record.mutable_batch();
    for (const StoredEvent& event : batch.events) {
      out->add_events(event.bytes);
      out->add_sequences(event.sequence);
    }
    for (const auto& [key, sequence] : batch.dedup) {
      v1::LogRecord::EventId* id = out->add_event_ids();
      id->set_source(key.source);
      id->set_event_id(key.event_id);
      id->set_sequence(sequence);
    }
    for (const auto& [key, version] : batch.versions) {
      v1::LogRecord::Version* v = out->add_versions();
      v->set_source(key.source);
      v->set_kind(key.kind);
      v->set_resource_id(key.resource_id);
      v->set_version_at_us(version.version_at_us);
      v->set_sequence(version.sequence);
      v->set_deleted(version.deleted);
    }
    for (const v1::QuarantineEntry& entry : batch.quarantine) *out->add_quarantine() = entry;
    record.set_head(batch.last_sequence);
    record.set_last_quarantine_id(batch.last_quarantine_id);
    return AppendLocked(record);
  }

  // The follower: a subscription to the stream's subject wakes a thread that catches the
  // replica up whenever another node appended (and at least every kFollowEvery, in case a
  // notification was missed while the connection was down).
  void Follow(std::function<void(uint64_t, uint64_t)> on_advance) override {
    {
      absl::MutexLock lock(&follow_mu_);
      follow_stop_ = true;
    }
    if (follow_sub_ != nullptr) {
      natsSubscription_Unsubscribe(follow_sub_);
      {
        // The message callback may be running: wait until the library says it returned.
        absl::MutexLock lock(&follow_mu_);
        auto done = [this]() ABSL_SHARED_LOCKS_REQUIRED(follow_mu_) { return follow_done_; };
        follow_mu_.AwaitWithTimeout(absl::Condition(&done), kCloseWait);
      }
      natsSubscription_Destroy(follow_sub_);
      follow_sub_ = nullptr;
    }
    if (follower_.joinable()) follower_.join();
    if (!on_advance) return;
    {
      absl::MutexLock lock(&follow_mu_);
      follow_stop_ = false;
      follow_wake_ = false;
      follow_done_ = false;
    }
    natsStatus s = natsConnection_Subscribe(&follow_sub_, conn_->nc(), config_.subject.c_str(),
                                            &JetStreamBackend::OnAppended, this);
    if (s == NATS_OK) {
      s = natsSubscription_SetOnCompleteCB(follow_sub_, &JetStreamBackend::OnFollowDone, this);
      if (s != NATS_OK) {
        natsSubscription_Unsubscribe(follow_sub_);
        natsSubscription_Destroy(follow_sub_);
      }
    }
    if (s != NATS_OK) {
      // Not fatal: the follower still catches up every kFollowEvery.
      follow_sub_ = nullptr;
      spdlog::warn("event log: cannot subscribe to {} ({}): other nodes' events are seen every {}",
                   config_.subject, NatsText(s), absl::FormatDuration(kFollowEvery));
    }
    follower_ = std::thread([this, on_advance = std::move(on_advance)] { FollowLoop(on_advance); });
  }

  absl::StatusOr<std::optional<uint64_t>> FindEventId(const DedupKey& key) override {
    return replica_->FindEventId(key);
  }
  absl::StatusOr<std::optional<ResourceVersion>> FindVersion(const ResourceKey& key) override {
    return replica_->FindVersion(key);
  }
  absl::StatusOr<std::vector<ResourceVersionEntry>> ListVersions(
      const std::string& source, const std::string& kind, const std::string& after_resource_id,
      std::size_t max) override {
    {
      absl::MutexLock lock(&mu_);
      if (absl::Status s = CatchUpLocked(); !s.ok()) return s;
    }
    return replica_->ListVersions(source, kind, after_resource_id, max);
  }

  absl::StatusOr<std::optional<std::string>> GetMeta(const std::string& key) override {
    {
      absl::MutexLock lock(&mu_);
      if (absl::Status s = CatchUpLocked(); !s.ok()) return s;
    }
    return replica_->GetMeta(key);
  }

  // The replica as applied so far (the follower applies other nodes' records as they arrive):
  // no STREAM.INFO, which only the stream's leader answers.
  absl::StatusOr<std::optional<std::string>> GetAppliedMeta(const std::string& key) override {
    return replica_->GetMeta(key);
  }

  absl::Status PutMeta(const std::string& key, const std::string& value) override {
    absl::MutexLock lock(&mu_);
    for (int attempt = 0; attempt < kMaxAppendAttempts; ++attempt) {
      if (absl::Status s = WaitForUnfinishedRecordLocked(); !s.ok()) return s;
      v1::LogRecord record;
      record.mutable_meta()->set_key(key);
      record.mutable_meta()->set_value(value);
      record.set_head(head_);
      record.set_last_quarantine_id(last_quarantine_id_);
      absl::Status s = AppendLocked(record);
      if (!absl::IsAborted(s)) return s;  // a conflict: append again after the others
    }
    return absl::UnavailableError(absl::StrCat("metadata ", key, ": other nodes appended first ",
                                               kMaxAppendAttempts, " times"));
  }

  absl::StatusOr<std::optional<v1::Event>> GetEvent(uint64_t sequence) override {
    return replica_->GetEvent(sequence);
  }
  absl::StatusOr<std::vector<v1::Event>> ReadEvents(uint64_t from, std::size_t max) override {
    return replica_->ReadEvents(from, max);
  }
  absl::StatusOr<std::vector<StoredEvent>> ReadStoredEvents(uint64_t from,
                                                            std::size_t max) override {
    return replica_->ReadStoredEvents(from, max);
  }
  absl::StatusOr<std::vector<v1::QuarantineEntry>> ReadQuarantine(uint64_t from,
                                                                  std::size_t max) override {
    return replica_->ReadQuarantine(from, max);
  }

  uint64_t DiskBytes() override {
    uint64_t bytes = replica_->DiskBytes();
    absl::StatusOr<StreamInfoPtr> info = GetStreamInfo(conn_->js(), config_.stream);
    if (info.ok()) bytes += (*info)->State.Bytes;
    return bytes;
  }

  absl::Status Health() override {
    if (conn_->connected()) return absl::OkStatus();
    return absl::UnavailableError(
        absl::StrCat("JetStream connection lost (reconnecting to ", ServersText(config_), ")"));
  }

  absl::StatusOr<uint64_t> LoadCursor(const std::string& plugin) override {
    kvEntry* raw = nullptr;
    natsStatus s = kvStore_Get(&raw, cursors_.get(), plugin.c_str());
    if (s == NATS_NOT_FOUND) return 0;
    if (s != NATS_OK) return NatsError(s, 0, absl::StrCat("cannot read the cursor of ", plugin));
    EntryPtr entry(raw);
    uint64_t cursor = 0;
    const absl::string_view value(static_cast<const char*>(kvEntry_Value(entry.get())),
                                  kvEntry_ValueLen(entry.get()));
    if (!absl::SimpleAtoi(value, &cursor)) {
      return absl::DataLossError(absl::StrCat("the cursor of ", plugin, " in bucket ",
                                              config_.cursor_bucket, " is not a number"));
    }
    return cursor;
  }

  // Beside the cursor, in the cursor bucket: "<cursor key>.handed_out" (a cursor key has no
  // such token: plugin names have no dots, partition keys end in "p<N>of<P>").
  absl::StatusOr<uint64_t> LoadHandedOut(const std::string& plugin) override {
    const std::string key = HandedOutKey(plugin);
    kvEntry* raw = nullptr;
    natsStatus s = kvStore_Get(&raw, cursors_.get(), key.c_str());
    if (s == NATS_NOT_FOUND) return 0;
    if (s != NATS_OK) {
      return NatsError(s, 0, absl::StrCat("cannot read the handed-out mark of ", plugin));
    }
    EntryPtr entry(raw);
    uint64_t mark = 0;
    const absl::string_view value(static_cast<const char*>(kvEntry_Value(entry.get())),
                                  kvEntry_ValueLen(entry.get()));
    if (!absl::SimpleAtoi(value, &mark)) {
      return absl::DataLossError(absl::StrCat("the handed-out mark of ", plugin, " in bucket ",
                                              config_.cursor_bucket, " is not a number"));
    }
    return mark;
  }

  // Committed by the bucket's replicas when it returns OK (a put is acknowledged after the
  // stream stored it), so a node taking the partition over reads it.
  absl::Status WriteHandedOut(const std::string& plugin, uint64_t mark) override {
    const std::string key = HandedOutKey(plugin);
    const std::string value = absl::StrCat(mark);
    natsStatus s = kvStore_PutString(nullptr, cursors_.get(), key.c_str(), value.c_str());
    if (s != NATS_OK) {
      return NatsError(s, 0, absl::StrCat("cannot store the handed-out mark of ", plugin));
    }
    return absl::OkStatus();
  }

  static std::string HandedOutKey(const std::string& plugin) {
    return absl::StrCat(plugin, ".handed_out");
  }

  absl::Status WriteProgress(const std::string& plugin, const PluginProgress& progress) override {
    // Letters first, then the cursor past them: a crash between the two delivers the events
    // again (at-least-once) rather than moving the cursor past a lost letter.
    std::string value;
    for (const v1::DeadLetter& letter : progress.dead_letters) {
      if (!letter.SerializeToString(&value)) {
        return absl::InternalError("cannot serialize a dead letter");
      }
      const std::string key = DeadLetterKey(plugin, letter.event().sequence());
      natsStatus s = kvStore_Put(nullptr, dead_letters_.get(), key.c_str(), value.data(),
                                 static_cast<int>(value.size()));
      if (s != NATS_OK) {
        return NatsError(s, 0, absl::StrCat("cannot store the dead letter ", key));
      }
    }
    if (progress.cursor.has_value()) {
      const std::string cursor = absl::StrCat(*progress.cursor);
      natsStatus s = kvStore_PutString(nullptr, cursors_.get(), plugin.c_str(), cursor.c_str());
      if (s != NATS_OK) {
        return NatsError(s, 0, absl::StrCat("cannot store the cursor of ", plugin));
      }
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<v1::DeadLetter>> ReadDeadLetters(const std::string& plugin,
                                                              uint64_t from,
                                                              std::size_t max) override {
    absl::StatusOr<std::vector<v1::DeadLetter>> letters = CollectDeadLetters(plugin + ".*");
    if (!letters.ok()) return letters.status();
    std::vector<v1::DeadLetter> out;
    for (v1::DeadLetter& letter : *letters) {
      if (out.size() >= max) break;
      if (letter.event().sequence() >= from) out.push_back(std::move(letter));
    }
    return out;
  }

  absl::Status DeleteDeadLetters(const std::string& plugin,
                                 const std::vector<uint64_t>& sequences) override {
    for (uint64_t sequence : sequences) {
      const std::string key = DeadLetterKey(plugin, sequence);
      natsStatus s = kvStore_Delete(dead_letters_.get(), key.c_str());
      if (s != NATS_OK && s != NATS_NOT_FOUND) {
        return NatsError(s, 0, absl::StrCat("cannot delete the dead letter ", key));
      }
    }
    return absl::OkStatus();
  }

  absl::StatusOr<uint64_t> CountDeadLetters(const std::string& plugin) override {
    absl::StatusOr<std::vector<v1::DeadLetter>> letters = CollectDeadLetters(plugin + ".*");
    if (!letters.ok()) return letters.status();
    return letters->size();
  }

  absl::StatusOr<uint64_t> TrimEvents(uint64_t max_sequence, int64_t received_before_us,
                                      std::size_t max_events) override {
    uint64_t through = 0;
    uint64_t count = 0;
    uint64_t trim_sequence = 0;
    {
      absl::MutexLock lock(&mu_);
      if (absl::Status s = CatchUpLocked(); !s.ok()) return s;
      // Decided on the replica, applied by every replica at the same point of the log.
      absl::StatusOr<std::vector<v1::Event>> events = replica_->ReadEvents(1, max_events);
      if (!events.ok()) return events.status();
      for (const v1::Event& event : *events) {
        if (event.sequence() > max_sequence) break;
        if (ToMicros(event.received_at()) >= received_before_us) break;
        through = event.sequence();
        ++count;
      }
      if (count == 0) return 0;
      v1::LogRecord record;
      record.mutable_trim()->set_events_through(through);
      record.set_head(head_);
      record.set_last_quarantine_id(last_quarantine_id_);
      absl::Status s = AppendLocked(record);
      if (absl::IsAborted(s)) return 0;  // others appended first: the next pass decides again
      if (!s.ok()) return s;
      trim_sequence = applied_sequence_;
    }
    // The events are gone from every replica; the stream messages that held only them go too.
    // A failure leaves them for the next pass: nothing is lost, the stream is only longer.
    if (absl::Status s = PurgeThrough(through, trim_sequence); !s.ok()) {
      spdlog::warn("event log: stream {} not purged after the trim through event {}: {}",
                   config_.stream, through, std::string(s.message()));
    }
    return count;
  }

  absl::StatusOr<uint64_t> TrimDeadLetters(int64_t before_us, std::size_t max) override {
    absl::StatusOr<std::vector<v1::DeadLetter>> letters = CollectDeadLetters(">");
    if (!letters.ok()) return letters.status();
    uint64_t count = 0;
    for (const v1::DeadLetter& letter : *letters) {
      if (count >= max) break;
      if (ToMicros(letter.dead_at()) >= before_us) continue;
      const std::string key = DeadLetterKey(letter.plugin(), letter.event().sequence());
      natsStatus s = kvStore_Delete(dead_letters_.get(), key.c_str());
      if (s != NATS_OK && s != NATS_NOT_FOUND) {
        return NatsError(s, 0, absl::StrCat("cannot delete the dead letter ", key));
      }
      ++count;
    }
    return count;
  }

  absl::StatusOr<uint64_t> TrimQuarantine(int64_t before_us, std::size_t max) override {
    absl::MutexLock lock(&mu_);
    if (absl::Status s = CatchUpLocked(); !s.ok()) return s;
    absl::StatusOr<std::vector<v1::QuarantineEntry>> entries = replica_->ReadQuarantine(1, max);
    if (!entries.ok()) return entries.status();
    uint64_t through = 0;
    uint64_t count = 0;
    for (const v1::QuarantineEntry& entry : *entries) {
      if (ToMicros(entry.received_at()) >= before_us) break;
      through = entry.id();
      ++count;
    }
    if (count == 0) return 0;
    v1::LogRecord record;
    record.mutable_trim()->set_quarantine_through(through);
    record.set_head(head_);
    record.set_last_quarantine_id(last_quarantine_id_);
    absl::Status s = AppendLocked(record);
    if (absl::IsAborted(s)) return 0;
    if (!s.ok()) return s;
    return count;
  }

 private:
  // Where an append stands after one publish.
  struct Published {
    bool conflict = false;  // refused: another writer appended first
    uint64_t sequence = 0;  // stored at this stream sequence
  };
  // A chunked record of which the first chunks were read, waiting for the rest.
  struct UnfinishedRecord {
    std::string writer;  // Nats-Msg-Id without the chunk number
    int next = 0;
    int total = 0;
    std::string data;
    absl::Time seen;
  };

  // A message on the stream's subject (any node's append, this one's included): wakes the
  // follower, unless it is one of this node's own.
  static void OnAppended(natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
    auto* self = static_cast<JetStreamBackend*>(closure);
    const std::optional<std::string> id = Header(msg, kMsgIdHeader);
    natsMsg_Destroy(msg);
    if (id.has_value() && absl::StartsWith(*id, self->writer_prefix_)) return;
    absl::MutexLock lock(&self->follow_mu_);
    self->follow_wake_ = true;
  }

  // The library's word that the subscription is closed and its callback will not run again.
  static void OnFollowDone(void* closure) {
    auto* self = static_cast<JetStreamBackend*>(closure);
    absl::MutexLock lock(&self->follow_mu_);
    self->follow_done_ = true;
  }

  void FollowLoop(const std::function<void(uint64_t, uint64_t)>& on_advance) {
    uint64_t reported_head = 0;
    uint64_t reported_quarantine = 0;
    {
      absl::MutexLock lock(&mu_);
      reported_head = head_;
      reported_quarantine = last_quarantine_id_;
    }
    for (;;) {
      {
        absl::MutexLock lock(&follow_mu_);
        auto woken = [this]() ABSL_SHARED_LOCKS_REQUIRED(follow_mu_) {
          return follow_wake_ || follow_stop_;
        };
        follow_mu_.AwaitWithTimeout(absl::Condition(&woken), kFollowEvery);
        if (follow_stop_) return;
        follow_wake_ = false;
      }
      uint64_t head = 0;
      uint64_t quarantine = 0;
      {
        absl::MutexLock lock(&mu_);
        if (absl::Status s = CatchUpLocked(); !s.ok()) {
          spdlog::debug("event log: following stream {}: {}", config_.stream,
                        std::string(s.message()));
          continue;
        }
        head = head_;
        quarantine = last_quarantine_id_;
      }
      if (head > reported_head || quarantine > reported_quarantine) {
        reported_head = std::max(reported_head, head);
        reported_quarantine = std::max(reported_quarantine, quarantine);
        on_advance(head, quarantine);
      }
    }
  }

  // Appends `record` after the last record this node applied, then applies it. Aborted after a
  // conflict (the replica has caught up); Unavailable when the cluster gave no answer before
  // write_timeout (the record may have been stored: the next catch-up applies it).
  absl::Status AppendLocked(const v1::LogRecord& record) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    std::string data;
    if (!record.SerializeToString(&data)) {
      return absl::InternalError("cannot serialize a log record");
    }
    const int64_t max_payload = natsConnection_GetMaxPayload(conn_->nc());
    const std::size_t chunk_bytes =
        static_cast<std::size_t>(std::max<int64_t>(max_payload - kHeaderRoom, 1024));
    const int chunks =
        static_cast<int>(std::max<std::size_t>(1, (data.size() + chunk_bytes - 1) / chunk_bytes));
    const std::string writer = absl::StrCat(writer_prefix_, "-", ++appends_);
    uint64_t expected = applied_sequence_;
    for (int i = 1; i <= chunks; ++i) {
      const std::size_t offset = static_cast<std::size_t>(i - 1) * chunk_bytes;
      const absl::string_view piece =
          absl::string_view(data).substr(offset, std::min(chunk_bytes, data.size() - offset));
      absl::StatusOr<Published> published =
          Publish(piece, record.head(), writer, i, chunks, expected);
      if (!published.ok()) return published.status();
      if (published->conflict) {
        if (absl::Status s = CatchUpLocked(); !s.ok()) return s;
        return absl::AbortedError("another pimgate node appended to the log first");
      }
      expected = published->sequence;
    }
    unfinished_.reset();
    return ApplyLocked(expected, data);
  }

  // Publishes one message, again with the same Nats-Msg-Id while the outcome is in doubt.
  absl::StatusOr<Published> Publish(absl::string_view piece, uint64_t head,
                                    const std::string& writer, int chunk, int chunks,
                                    uint64_t expected) {
    const std::string msg_id = absl::StrCat(writer, "-", chunk);
    const std::string head_text = absl::StrCat(head);
    const std::string expected_text = absl::StrCat(expected);
    const std::string chunk_text = absl::StrCat(chunk, "/", chunks);
    const absl::Time deadline = absl::Now() + absl::FromChrono(config_.write_timeout);
    std::string last_error;
    for (;;) {
      natsMsg* raw = nullptr;
      natsStatus s = natsMsg_Create(&raw, config_.subject.c_str(), nullptr, piece.data(),
                                    static_cast<int>(piece.size()));
      if (s != NATS_OK) return NatsError(s, 0, "cannot create a message");
      MsgPtr msg(raw);
      s = natsMsgHeader_Set(msg.get(), kHeadHeader, head_text.c_str());
      // Set by hand: jsPubOptions.ExpectLastSeq takes 0 for "unset", and an empty stream's
      // last sequence is 0.
      if (s == NATS_OK) {
        s = natsMsgHeader_Set(msg.get(), kExpectedLastSequenceHeader, expected_text.c_str());
      }
      if (s == NATS_OK && chunks > 1) {
        s = natsMsgHeader_Set(msg.get(), kChunkHeader, chunk_text.c_str());
      }
      if (s != NATS_OK) return NatsError(s, 0, "cannot set message headers");
      jsPubOptions opts;
      jsPubOptions_Init(&opts);
      opts.MsgId = msg_id.c_str();
      const int64_t left = absl::ToInt64Milliseconds(deadline - absl::Now());
      opts.MaxWait = std::clamp<int64_t>(left, 1, kRequestWaitMs);
      jsPubAck* ack = nullptr;
      jsErrCode jerr = static_cast<jsErrCode>(0);
      s = js_PublishMsg(&ack, conn_->js(), msg.get(), &opts, &jerr);
      if (s == NATS_OK && ack != nullptr) {
        Published published;
        published.sequence = ack->Sequence;
        jsPubAck_Destroy(ack);
        return published;
      }
      if (ack != nullptr) jsPubAck_Destroy(ack);
      if (jerr == JSStreamWrongLastSequenceErr) return Published{.conflict = true};
      // No answer, no leader, connection lost: the outcome is in doubt. The same message again
      // is stored once (Nats-Msg-Id), or answered as the duplicate of the stored one.
      last_error = std::string(NatsError(s, jerr, "append").message());
      if (absl::Now() + kRetryPause >= deadline) break;
      absl::SleepFor(kRetryPause);
    }
    return absl::UnavailableError(
        absl::StrCat("JetStream stream ", config_.stream, " did not take the record within ",
                     absl::FormatDuration(absl::FromChrono(config_.write_timeout)),
                     " (it may still be stored; a retry is then a duplicate): ", last_error));
  }

  // Reads and applies every stream message after the last one applied.
  absl::Status CatchUpLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    absl::StatusOr<StreamInfoPtr> info = GetStreamInfo(conn_->js(), config_.stream);
    if (!info.ok()) return info.status();
    const uint64_t first = (*info)->State.FirstSeq;
    const uint64_t last = (*info)->State.LastSeq;
    if (first > 0 && applied_sequence_ + 1 < first) {
      // Retention purged records this replica never read: their live state is carried by
      // records after them, and their events were trimmed. The next batch starts the events.
      unfinished_.reset();
      applied_sequence_ = first - 1;
      jumped_ = true;
    }
    for (uint64_t sequence = applied_sequence_ + 1; sequence <= last; ++sequence) {
      natsMsg* raw = nullptr;
      jsErrCode jerr = static_cast<jsErrCode>(0);
      natsStatus s = js_GetMsg(&raw, conn_->js(), config_.stream.c_str(), sequence, nullptr, &jerr);
      if (s == NATS_NOT_FOUND || jerr == JSNoMessageFoundErr) {
        applied_sequence_ = sequence;  // deleted
        unfinished_.reset();
        continue;
      }
      if (s != NATS_OK) {
        return NatsError(s, jerr,
                         absl::StrCat("cannot read stream ", config_.stream, " at ", sequence));
      }
      MsgPtr msg(raw);
      if (absl::Status st = ProcessLocked(sequence, msg.get()); !st.ok()) return st;
    }
    return absl::OkStatus();
  }

  // One stream message read while catching up: a whole record, or one chunk of one.
  absl::Status ProcessLocked(uint64_t sequence, natsMsg* msg) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const absl::string_view data(natsMsg_GetData(msg), natsMsg_GetDataLength(msg));
    std::optional<std::string> chunk_header = Header(msg, kChunkHeader);
    if (!chunk_header.has_value()) {
      unfinished_.reset();  // chunks followed by anything else were abandoned
      return ApplyLocked(sequence, data);
    }
    std::optional<std::pair<int, int>> chunk = ParseChunk(*chunk_header);
    std::string writer = Header(msg, kMsgIdHeader).value_or("");
    if (std::size_t dash = writer.rfind('-'); dash != std::string::npos) writer.resize(dash);
    applied_sequence_ = sequence;
    if (!chunk.has_value()) {
      unfinished_.reset();
      return absl::OkStatus();
    }
    const auto [index, total] = *chunk;
    if (index == 1) {
      unfinished_ = UnfinishedRecord{writer, 2, total, std::string(data), absl::Now()};
    } else if (unfinished_.has_value() && unfinished_->writer == writer &&
               unfinished_->next == index && unfinished_->total == total) {
      unfinished_->data.append(data.data(), data.size());
      ++unfinished_->next;
      unfinished_->seen = absl::Now();
    } else {
      unfinished_.reset();  // a stray chunk of an abandoned record
      return absl::OkStatus();
    }
    if (unfinished_->next <= unfinished_->total) return absl::OkStatus();
    const std::string whole = std::move(unfinished_->data);
    unfinished_.reset();
    return ApplyLocked(sequence, whole);
  }

  // A writer whose chunked record is still coming gets up to write_timeout to finish it before
  // this node appends after its chunks (which abandons the record: its writer decides again).
  absl::Status WaitForUnfinishedRecordLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    while (unfinished_.has_value() &&
           absl::Now() < unfinished_->seen + absl::FromChrono(config_.write_timeout)) {
      mu_.Unlock();
      absl::SleepFor(kRetryPause);
      mu_.Lock();
      if (absl::Status s = CatchUpLocked(); !s.ok()) return s;
    }
    return absl::OkStatus();
  }

  // Applies the record stored at stream `sequence` to the replica, with the applied sequence in
  // the same write.
  absl::Status ApplyLocked(uint64_t sequence, absl::string_view data)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    v1::LogRecord record;
    if (!record.ParseFromArray(data.data(), static_cast<int>(data.size()))) {
      return absl::DataLossError(absl::StrCat("stream ", config_.stream, " message ", sequence,
                                              " is not a pimgate log record"));
    }
    CommitBatch batch;
    batch.last_sequence = head_;
    batch.last_quarantine_id = last_quarantine_id_;
    switch (record.record_case()) {
      case v1::LogRecord::kBatch: {
        const v1::LogRecord::Batch& in = record.batch();
        if (in.events_size() != in.sequences_size()) {
          return absl::DataLossError(
              absl::StrCat("stream message ", sequence, ": events and sequences differ"));
        }
        if ((jumped_ || head_ == 0) && in.sequences_size() > 0 && in.sequences(0) > head_ + 1) {
          // The events before were purged (and trimmed), or the log starts there (a copied
          // store whose first events retention had trimmed: see Write).
          head_ = in.sequences(0) - 1;
        }
        if (in.sequences_size() > 0) jumped_ = false;
        if (in.sequences_size() > 0 && in.sequences(0) != head_ + 1) {
          return absl::DataLossError(absl::StrCat("stream message ", sequence, " starts at event ",
                                                  in.sequences(0), " but the replica's head is ",
                                                  head_, ": the replica diverged from the stream"));
        }
        for (int i = 0; i < in.events_size(); ++i) {
          batch.events.push_back(StoredEvent{in.sequences(i), in.events(i)});
        }
        for (const v1::LogRecord::EventId& id : in.event_ids()) {
          batch.dedup.emplace_back(DedupKey{id.source(), id.event_id()}, id.sequence());
        }
        for (const v1::LogRecord::Version& v : in.versions()) {
          batch.versions.emplace_back(
              ResourceKey{v.source(), v.kind(), v.resource_id()},
              ResourceVersion{v.version_at_us(), v.sequence(), v.deleted()});
        }
        batch.quarantine.assign(in.quarantine().begin(), in.quarantine().end());
        batch.last_sequence = std::max(head_, record.head());
        batch.last_quarantine_id = std::max(last_quarantine_id_, record.last_quarantine_id());
        break;
      }
      case v1::LogRecord::kMeta:
        batch.meta.emplace_back(record.meta().key(), record.meta().value());
        break;
      case v1::LogRecord::kTrim: {
        const v1::LogRecord::Trim& trim = record.trim();
        if (trim.events_through() > 0) {
          absl::StatusOr<uint64_t> trimmed =
              replica_->TrimEvents(trim.events_through(), std::numeric_limits<int64_t>::max(),
                                   std::numeric_limits<std::size_t>::max());
          if (!trimmed.ok()) return trimmed.status();
        }
        if (trim.quarantine_through() > 0) {
          absl::StatusOr<std::vector<v1::QuarantineEntry>> entries =
              replica_->ReadQuarantine(1, trim.quarantine_through());
          if (!entries.ok()) return entries.status();
          std::size_t count = 0;
          for (const v1::QuarantineEntry& entry : *entries) {
            if (entry.id() <= trim.quarantine_through()) ++count;
          }
          if (count > 0) {
            absl::StatusOr<uint64_t> trimmed =
                replica_->TrimQuarantine(std::numeric_limits<int64_t>::max(), count);
            if (!trimmed.ok()) return trimmed.status();
          }
        }
        break;
      }
      default:
        break;  // a record kind of a later version: nothing this one applies
    }
    batch.meta.emplace_back(kAppliedKey, absl::StrCat(sequence));
    // Not fsynced: the cluster holds the record, and a replica that lost it in a crash applies
    // it again from the stream.
    if (absl::Status s = replica_->Write(batch, /*sync=*/false); !s.ok()) return s;
    head_ = batch.last_sequence;
    last_quarantine_id_ = batch.last_quarantine_id;
    applied_sequence_ = sequence;
    return absl::OkStatus();
  }

  // What the stream messages before `keep_from` hold that may outlive them.
  struct PurgePlan {
    uint64_t keep_from = 0;                                                   // 0: nothing to purge
    std::map<std::string, std::pair<ResourceKey, ResourceVersion>> versions;  // last per key
    std::set<uint64_t> quarantine;
    std::set<std::string> meta;
  };

  // Purges the stream's messages whose records hold only events up to `through` (all of them
  // trimmed), from the first one up to the trim record at `trim_sequence` at most. What those
  // records hold that is still current on the replica (the newest version of a resource,
  // quarantine entries not yet trimmed, metadata values) is first carried: appended again at the
  // end of the stream, so a replica rebuilt from the stream's first message has it too.
  absl::Status PurgeThrough(uint64_t through, uint64_t trim_sequence) {
    for (int attempt = 0; attempt < kMaxAppendAttempts; ++attempt) {
      // Reading the messages needs no lock: appends go on meanwhile.
      absl::StatusOr<PurgePlan> plan = PlanPurge(through, trim_sequence);
      if (!plan.ok()) return plan.status();
      if (plan->keep_from == 0) return absl::OkStatus();
      absl::MutexLock lock(&mu_);
      absl::Status carried = CarryLocked(*plan);
      if (absl::IsAborted(carried)) continue;  // decided again on the caught-up replica
      if (!carried.ok()) return carried;
      jsOptions opts;
      jsOptions_Init(&opts);
      opts.Stream.Purge.Sequence = plan->keep_from;  // up to, not including
      jsErrCode jerr = static_cast<jsErrCode>(0);
      natsStatus s = js_PurgeStream(conn_->js(), config_.stream.c_str(), &opts, &jerr);
      if (s != NATS_OK) return NatsError(s, jerr, "purge");
      return absl::OkStatus();
    }
    return absl::UnavailableError("other nodes appended first too often");
  }

  absl::StatusOr<PurgePlan> PlanPurge(uint64_t through, uint64_t trim_sequence) {
    PurgePlan plan;
    absl::StatusOr<StreamInfoPtr> info = GetStreamInfo(conn_->js(), config_.stream);
    if (!info.ok()) return info.status();
    const uint64_t first = (*info)->State.FirstSeq;
    std::optional<UnfinishedRecord> chunks;
    uint64_t keep_from = first;
    for (uint64_t sequence = first; sequence < trim_sequence; ++sequence) {
      natsMsg* raw = nullptr;
      jsErrCode jerr = static_cast<jsErrCode>(0);
      natsStatus s = js_GetMsg(&raw, conn_->js(), config_.stream.c_str(), sequence, nullptr, &jerr);
      if (s == NATS_NOT_FOUND || jerr == JSNoMessageFoundErr) {
        keep_from = sequence + 1;
        continue;
      }
      if (s != NATS_OK) {
        return NatsError(s, jerr,
                         absl::StrCat("cannot read stream ", config_.stream, " at ", sequence));
      }
      MsgPtr msg(raw);
      uint64_t head = 0;
      std::optional<std::string> head_text = Header(msg.get(), kHeadHeader);
      if (!head_text.has_value() || !absl::SimpleAtoi(*head_text, &head) || head > through) break;
      keep_from = sequence + 1;
      const absl::string_view data(natsMsg_GetData(msg.get()), natsMsg_GetDataLength(msg.get()));
      std::string whole;
      if (std::optional<std::string> chunk_text = Header(msg.get(), kChunkHeader)) {
        std::optional<std::pair<int, int>> chunk = ParseChunk(*chunk_text);
        if (!chunk.has_value()) continue;
        if (chunk->first == 1) {
          chunks = UnfinishedRecord{"", 2, chunk->second, std::string(data), absl::Now()};
          continue;
        }
        if (!chunks.has_value() || chunks->next != chunk->first) continue;
        chunks->data.append(data.data(), data.size());
        if (++chunks->next <= chunks->total) continue;
        whole = std::move(chunks->data);
        chunks.reset();
      } else {
        whole = std::string(data);
      }
      v1::LogRecord record;
      if (!record.ParseFromString(whole)) continue;
      if (record.has_batch()) {
        for (const v1::LogRecord::Version& v : record.batch().versions()) {
          ResourceKey key{v.source(), v.kind(), v.resource_id()};
          std::string joined = absl::StrCat(v.source(), std::string(1, '\0'), v.kind(),
                                            std::string(1, '\0'), v.resource_id());
          plan.versions[std::move(joined)] = {
              std::move(key), ResourceVersion{v.version_at_us(), v.sequence(), v.deleted()}};
        }
        for (const v1::QuarantineEntry& entry : record.batch().quarantine()) {
          plan.quarantine.insert(entry.id());
        }
      } else if (record.has_meta()) {
        plan.meta.insert(record.meta().key());
      }
    }
    if (keep_from > first) plan.keep_from = keep_from;
    return plan;
  }

  // Appends what the plan's records hold that is still current on the replica.
  absl::Status CarryLocked(const PurgePlan& plan) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (absl::Status s = CatchUpLocked(); !s.ok()) return s;
    v1::LogRecord carry;
    v1::LogRecord::Batch* batch = carry.mutable_batch();
    for (const auto& [joined, item] : plan.versions) {
      const auto& [key, recorded] = item;
      absl::StatusOr<std::optional<ResourceVersion>> current = replica_->FindVersion(key);
      if (!current.ok()) return current.status();
      // A newer version is held by a record after the purged ones.
      if (!current->has_value() || (*current)->version_at_us != recorded.version_at_us ||
          (*current)->sequence != recorded.sequence || (*current)->deleted != recorded.deleted) {
        continue;
      }
      v1::LogRecord::Version* v = batch->add_versions();
      v->set_source(key.source);
      v->set_kind(key.kind);
      v->set_resource_id(key.resource_id);
      v->set_version_at_us(recorded.version_at_us);
      v->set_sequence(recorded.sequence);
      v->set_deleted(recorded.deleted);
    }
    for (uint64_t id : plan.quarantine) {
      absl::StatusOr<std::vector<v1::QuarantineEntry>> entry = replica_->ReadQuarantine(id, 1);
      if (!entry.ok()) return entry.status();
      if (!entry->empty() && entry->front().id() == id) *batch->add_quarantine() = entry->front();
    }
    if (batch->versions_size() > 0 || batch->quarantine_size() > 0) {
      carry.set_head(head_);
      carry.set_last_quarantine_id(last_quarantine_id_);
      if (absl::Status s = AppendLocked(carry); !s.ok()) return s;
    }
    for (const std::string& key : plan.meta) {
      absl::StatusOr<std::optional<std::string>> value = replica_->GetMeta(key);
      if (!value.ok()) return value.status();
      if (!value->has_value()) continue;
      v1::LogRecord record;
      record.mutable_meta()->set_key(key);
      record.mutable_meta()->set_value(**value);
      record.set_head(head_);
      record.set_last_quarantine_id(last_quarantine_id_);
      if (absl::Status s = AppendLocked(record); !s.ok()) return s;
    }
    return absl::OkStatus();
  }

  // Every dead letter whose key matches `pattern` ("<plugin>.*" or ">"), in key order (plugin,
  // then sequence). Direct gets (ScanBucket): no consumer, any current replica answers.
  absl::StatusOr<std::vector<v1::DeadLetter>> CollectDeadLetters(const std::string& pattern) {
    absl::StatusOr<std::vector<BucketEntry>> entries =
        ScanBucket(conn_->js(), config_.dead_letter_bucket, pattern);
    if (!entries.ok()) return entries.status();
    std::vector<v1::DeadLetter> letters;
    letters.reserve(entries->size());
    for (const BucketEntry& entry : *entries) {
      v1::DeadLetter& letter = letters.emplace_back();
      if (!letter.ParseFromString(entry.value)) {
        return absl::DataLossError(absl::StrCat("dead letter ", entry.key, " in bucket ",
                                                config_.dead_letter_bucket, " is unreadable"));
      }
    }
    return letters;
  }

  const std::string path_;
  const JetStreamConfig config_;
  std::unique_ptr<NatsConnection> conn_;
  KvPtr cursors_;
  KvPtr dead_letters_;
  std::unique_ptr<LogBackend> replica_;
  const std::string identity_;       // "<stream> created <nanoseconds>"
  const std::string writer_prefix_;  // random, per process: Nats-Msg-Ids are unique

  // Catching up, appending and the replica's applied state: one at a time.
  absl::Mutex mu_;
  // Last stream message read (a record applied, or a chunk, or a deleted message skipped).
  uint64_t applied_sequence_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t head_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t last_quarantine_id_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t appends_ ABSL_GUARDED_BY(mu_) = 0;
  std::optional<UnfinishedRecord> unfinished_ ABSL_GUARDED_BY(mu_);
  // The replica skipped purged messages and has not applied a batch with events since.
  bool jumped_ ABSL_GUARDED_BY(mu_) = false;

  // The follower (Follow).
  absl::Mutex follow_mu_;
  bool follow_wake_ ABSL_GUARDED_BY(follow_mu_) = false;
  bool follow_stop_ ABSL_GUARDED_BY(follow_mu_) = false;
  bool follow_done_ ABSL_GUARDED_BY(follow_mu_) = false;  // OnFollowDone came
  natsSubscription* follow_sub_ = nullptr;
  std::thread follower_;
};

// The lease bucket's records must expire after store.jetstream.cluster.lease_ttl: every node
// renews and fences its leases by that value.
absl::Status CheckLeaseTtl(const jsStreamInfo& info, const JetStreamConfig& config) {
  const int64_t max_age_ms = info.Config->MaxAge / 1'000'000;
  const int64_t ttl_ms = config.cluster.lease_ttl.count();
  if (max_age_ms == ttl_ms) return absl::OkStatus();
  const std::string& bucket = config.cluster.lease_bucket;
  return absl::FailedPreconditionError(
      absl::StrCat("key-value bucket ", bucket, " expires records after ", max_age_ms,
                   " ms, but store.jetstream.cluster.lease_ttl is ", ttl_ms,
                   " ms: use the bucket's value, or delete the bucket (nats kv del ", bucket,
                   ") while no node runs"));
}

// Leases in a key-value bucket whose MaxAge is the lease TTL: a record nobody rewrote for the TTL
// is removed by the servers. Create and Update are JetStream's compare-and-set writes
// (Nats-Expected-Last-Subject-Sequence), so they are decided by the stream's leader, once.
class JetStreamLeaseStore final : public LeaseStore {
 public:
  // `js`: conn's context for every call (its wait bounds each request), `kv` opened on it.
  JetStreamLeaseStore(std::unique_ptr<NatsConnection> conn, jsCtx* js, KvPtr kv, std::string bucket)
      : conn_(std::move(conn)), js_(js), kv_(std::move(kv)), bucket_(std::move(bucket)) {}
  ~JetStreamLeaseStore() override {
    kv_.reset();
    conn_.reset();
  }

  absl::StatusOr<uint64_t> Create(const std::string& key, const std::string& value) override {
    uint64_t revision = 0;
    natsStatus s = kvStore_Create(&revision, kv_.get(), key.c_str(), value.data(),
                                  static_cast<int>(value.size()));
    if (s == NATS_OK) return revision;
    if (Refused(s)) return absl::AlreadyExistsError(absl::StrCat(key, " is taken"));
    return NatsError(s, 0, absl::StrCat("cannot write ", key, " in bucket ", bucket_));
  }

  absl::StatusOr<uint64_t> Update(const std::string& key, const std::string& value,
                                  uint64_t revision) override {
    uint64_t next = 0;
    natsStatus s = kvStore_Update(&next, kv_.get(), key.c_str(), value.data(),
                                  static_cast<int>(value.size()), revision);
    if (s == NATS_OK) return next;
    if (Refused(s)) {
      return absl::FailedPreconditionError(
          absl::StrCat(key, " changed or expired since revision ", revision));
    }
    return NatsError(s, 0, absl::StrCat("cannot write ", key, " in bucket ", bucket_));
  }

  absl::StatusOr<std::optional<LeaseRecord>> Get(const std::string& key) override {
    kvEntry* raw = nullptr;
    natsStatus s = kvStore_Get(&raw, kv_.get(), key.c_str());
    if (s == NATS_NOT_FOUND) return std::nullopt;
    if (s != NATS_OK) {
      return NatsError(s, 0, absl::StrCat("cannot read ", key, " in bucket ", bucket_));
    }
    EntryPtr entry(raw);
    return Record(entry.get());
  }

  // Direct gets (ScanBucket): no consumer, so no meta leader and no replica chosen at random;
  // answered while the bucket's stream elects a leader. Possibly a little old (a follower's
  // view), which only makes a later compare-and-set fail.
  absl::StatusOr<std::vector<LeaseRecord>> List(const std::string& prefix) override {
    absl::StatusOr<std::vector<BucketEntry>> entries =
        ScanBucket(js_, bucket_, absl::StrCat(prefix, ">"));
    if (!entries.ok()) return entries.status();
    std::vector<LeaseRecord> records;
    records.reserve(entries->size());
    for (BucketEntry& entry : *entries) {
      records.push_back({std::move(entry.key), std::move(entry.value), entry.revision});
    }
    return records;
  }

  absl::Status Health() override {
    if (conn_->connected()) return absl::OkStatus();
    return absl::UnavailableError(
        absl::StrCat("lease bucket ", bucket_, ": JetStream connection lost"));
  }

 private:
  // A compare-and-set the stream refused (the key exists, or has another revision): the server
  // answered, unlike a timeout or a lost connection.
  static bool Refused(natsStatus s) {
    if (s != NATS_ERR) return false;
    natsStatus last = NATS_OK;
    const char* text = nats_GetLastError(&last);
    return text != nullptr &&
           (absl::StrContains(text, "wrong last sequence") || absl::StrContains(text, "10071"));
  }

  static LeaseRecord Record(kvEntry* entry) {
    LeaseRecord record;
    record.key = kvEntry_Key(entry);
    record.value.assign(static_cast<const char*>(kvEntry_Value(entry)), kvEntry_ValueLen(entry));
    record.revision = kvEntry_Revision(entry);
    return record;
  }

  std::unique_ptr<NatsConnection> conn_;
  jsCtx* const js_;
  KvPtr kv_;
  const std::string bucket_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<LeaseStore>> OpenJetStreamLeaseStore(const JetStreamConfig& config) {
  const std::string& bucket = config.cluster.lease_bucket;
  absl::StatusOr<std::unique_ptr<NatsConnection>> conn = NatsConnection::Connect(config);
  if (!conn.ok()) return conn.status();
  jsCtx* js = (*conn)->js();
  const int64_t ttl_ms = config.cluster.lease_ttl.count();
  absl::StatusOr<KvPtr> kv =
      WithPatience("opening the lease bucket", [&]() -> absl::StatusOr<KvPtr> {
        kvStore* raw = nullptr;
        natsStatus s = js_KeyValue(&raw, js, bucket.c_str());
        if (s != NATS_OK && s != NATS_NOT_FOUND) {
          return NatsError(s, 0, absl::StrCat("cannot open key-value bucket ", bucket));
        }
        if (s == NATS_NOT_FOUND) {
          kvConfig cfg;
          kvConfig_Init(&cfg);
          cfg.Bucket = bucket.c_str();
          cfg.History = 1;
          cfg.Replicas = config.replicas;
          cfg.StorageType = js_FileStorage;
          cfg.TTL = ttl_ms * 1'000'000;  // nanoseconds: the stream's MaxAge
          s = js_CreateKeyValue(&raw, js, &cfg);
          if (s != NATS_OK) {
            absl::Status created =
                NatsError(s, 0,
                          absl::StrCat("cannot create key-value bucket ", bucket, " with ",
                                       config.replicas, " replica(s)"));
            // Another node may have created it meanwhile.
            if (js_KeyValue(&raw, js, bucket.c_str()) != NATS_OK) return created;
          }
        }
        KvPtr owned(raw);
        absl::StatusOr<StreamInfoPtr> info = GetStreamInfo(js, absl::StrCat("KV_", bucket));
        if (!info.ok()) return info.status();
        if (absl::Status st = CheckStream(**info, absl::StrCat("key-value bucket ", bucket),
                                          config.replicas, nullptr);
            !st.ok()) {
          return st;
        }
        if (absl::Status st = CheckLeaseTtl(**info, config); !st.ok()) return st;
        if (absl::Status st = CheckDirectGets(**info, bucket); !st.ok()) return st;
        return owned;
      });
  if (!kv.ok()) return kv.status();
  kv->reset();
  // Every call of the store waits at most a quarter of the TTL for its answer (5 s at most):
  // an answer that comes later is of no use to a renewal (a lease's local deadline is 3/4 TTL
  // after the renewal was sent; see LeaseFence in core/dispatch/dispatcher.cc), and a round of
  // the lease manager must not wait behind it while the bucket's stream elects a leader.
  const int64_t wait_ms = std::clamp<int64_t>(ttl_ms / 4, 1, kRequestWaitMs);
  absl::StatusOr<jsCtx*> short_js = (*conn)->JetStreamWithWait(wait_ms);
  if (!short_js.ok()) return short_js.status();
  kv = WithPatience("opening the lease bucket", [&]() -> absl::StatusOr<KvPtr> {
    kvStore* raw = nullptr;
    if (natsStatus s = js_KeyValue(&raw, *short_js, bucket.c_str()); s != NATS_OK) {
      return NatsError(s, 0, absl::StrCat("cannot open key-value bucket ", bucket));
    }
    return KvPtr(raw);
  });
  if (!kv.ok()) return kv.status();
  return std::make_unique<JetStreamLeaseStore>(std::move(*conn), *short_js, std::move(*kv), bucket);
}

absl::StatusOr<std::unique_ptr<LogBackend>> OpenJetStreamBackend(const std::string& replica_path,
                                                                 const JetStreamConfig& config) {
  absl::StatusOr<std::unique_ptr<NatsConnection>> conn = NatsConnection::Connect(config);
  if (!conn.ok()) return conn.status();
  jsCtx* js = (*conn)->js();
  absl::StatusOr<StreamInfoPtr> stream =
      WithPatience("opening the stream", [&] { return EnsureStream(js, config); });
  if (!stream.ok()) return stream.status();
  const int64_t created = (*stream)->Created;
  absl::StatusOr<KvPtr> cursors = WithPatience("opening the cursor bucket", [&] {
    return EnsureBucket(js, config.cursor_bucket, config.replicas);
  });
  if (!cursors.ok()) return cursors.status();
  absl::StatusOr<KvPtr> dead_letters = WithPatience("opening the dead letter bucket", [&] {
    return EnsureBucket(js, config.dead_letter_bucket, config.replicas);
  });
  if (!dead_letters.ok()) return dead_letters.status();
  absl::StatusOr<std::unique_ptr<LogBackend>> replica = OpenRocksDbBackend(replica_path);
  if (!replica.ok()) {
    return absl::Status(replica.status().code(), absl::StrCat("cannot open the local replica: ",
                                                              replica.status().message()));
  }
  return std::make_unique<JetStreamBackend>(replica_path, config, std::move(*conn),
                                            std::move(*cursors), std::move(*dead_letters),
                                            std::move(*replica), created);
}

absl::Status CheckJetStreamCluster(const JetStreamConfig& config) {
  absl::StatusOr<std::unique_ptr<NatsConnection>> conn = NatsConnection::Connect(config);
  if (!conn.ok()) return conn.status();
  jsCtx* js = (*conn)->js();
  absl::StatusOr<StreamInfoPtr> stream = GetStreamInfo(js, config.stream);
  if (stream.ok()) {
    if (absl::Status s = CheckStream(**stream, absl::StrCat("stream ", config.stream),
                                     config.replicas, &config.subject);
        !s.ok()) {
      return s;
    }
  } else if (!absl::IsNotFound(stream.status())) {
    return stream.status();
  }
  for (const std::string& bucket : {config.cursor_bucket, config.dead_letter_bucket}) {
    absl::StatusOr<StreamInfoPtr> info = GetStreamInfo(js, absl::StrCat("KV_", bucket));
    if (info.ok()) {
      if (absl::Status s = CheckStream(**info, absl::StrCat("key-value bucket ", bucket),
                                       config.replicas, nullptr);
          !s.ok()) {
        return s;
      }
      if (absl::Status s = CheckDirectGets(**info, bucket); !s.ok()) return s;
    } else if (!absl::IsNotFound(info.status())) {
      return info.status();
    }
  }
  // The lease bucket of cluster dispatch: its records must expire after lease_ttl.
  const std::string& leases = config.cluster.lease_bucket;
  if (absl::StatusOr<StreamInfoPtr> info = GetStreamInfo(js, absl::StrCat("KV_", leases));
      info.ok()) {
    if (absl::Status s = CheckStream(**info, absl::StrCat("key-value bucket ", leases),
                                     config.replicas, nullptr);
        !s.ok()) {
      return s;
    }
    if (absl::Status s = CheckLeaseTtl(**info, config); !s.ok()) return s;
    if (absl::Status s = CheckDirectGets(**info, leases); !s.ok()) return s;
  } else if (!absl::IsNotFound(info.status())) {
    return info.status();
  }
  if (!stream.ok() && config.replicas > 1) {
    // The stream will be created with `replicas` peers: the cluster must have that many
    // servers (the client learns them all from the one it connected to).
    char** servers = nullptr;
    int count = 0;
    if (natsStatus s = natsConnection_GetServers((*conn)->nc(), &servers, &count); s != NATS_OK) {
      return NatsError(s, 0, "cannot list the cluster's servers");
    }
    for (int i = 0; i < count; ++i) free(servers[i]);
    free(servers);
    if (count < config.replicas) {
      return absl::FailedPreconditionError(
          absl::StrCat("store.jetstream.replicas is ", config.replicas, " but the cluster of ",
                       ServersText(config), " has ", count, " server(s): stream ", config.stream,
                       " cannot be created"));
    }
  }
  return absl::OkStatus();
}

}  // namespace pimgate
