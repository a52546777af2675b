// Per-plugin delivery: a scheduler thread owns all ordering state; a DeliveryStream (gRPC callback
// reactor, core/dispatch/delivery_stream.h) carries Deliveries and Acks over one gRPC call. Other
// threads talk to the scheduler only through its inbox (mu_), so the ordering rules live in one
// single-threaded place. Events travel as the log stores them: the scheduler reads only the few
// fields it orders and filters on, as views into the stored bytes (ScanEventRoute,
// core/log/event_header.h), and frames those bytes straight into the stream's DeliveryBatch
// (core/dispatch/event_wire.h); it decodes an event (never its data unless needed) only for a
// data filter, hydration or a dead letter.
#include "core/dispatch/dispatcher.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <thread>
#include <tuple>

#include "absl/container/btree_set.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/hash/hash.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "core/dispatch/delivery_stream.h"
#include "core/dispatch/event_filter.h"
#include "core/dispatch/event_wire.h"
#include "core/dispatch/lease_fence.h"
#include "core/log/event_header.h"
#include "google/protobuf/util/time_util.h"
#include "pimgate/v1/plugin.grpc.pb.h"
#include "spdlog/spdlog.h"

namespace pimgate {

absl::Duration RetryDelay(const RetryConfig& retry, uint32_t attempt, double unit_random) {
  const double initial = absl::ToDoubleSeconds(absl::FromChrono(retry.initial_backoff));
  const double max = absl::ToDoubleSeconds(absl::FromChrono(retry.max_backoff));
  double delay = initial * std::pow(retry.multiplier, std::max<int>(0, attempt - 1));
  delay = std::min(delay, max);
  delay *= 1.0 + retry.jitter * (2.0 * unit_random - 1.0);
  return absl::Seconds(std::max(0.0, delay));
}

namespace {

// Adds the counters of `s` (those that only grow: deliveries, retries, dead letters, skips,
// connects, hydration) to `total`; state, cursor, in-flight and errors are not counters.
void AddCounters(PluginDispatchStats& total, const PluginDispatchStats& s) {
  total.delivered += s.delivered;
  total.retried += s.retried;
  total.dead_lettered += s.dead_lettered;
  total.skipped_filter += s.skipped_filter;
  total.skipped_stale += s.skipped_stale;
  total.connects += s.connects;
  total.hydration_fetches += s.hydration_fetches;
  total.hydration_cache_hits += s.hydration_cache_hits;
  total.hydration_not_found += s.hydration_not_found;
  total.hydration_failures += s.hydration_failures;
}

using v1::Ack;

// The store's record of a paused plugin (EventLog metadata): "true" while paused.
std::string PausedKey(const std::string& plugin) {
  return absl::StrCat("dispatch/", plugin, "/paused");
}

// How long a control call (hold, release) waits for the scheduler thread to act on it. The
// scheduler loops at least once a second; a blocking log read or connect may delay one loop.
constexpr absl::Duration kControlWait = absl::Seconds(30);

// How often a stored event that did not read back is read again (the cursor waits below it until
// it reads back or an operator seeks past it): not in a loop, which would spin a core and the log.
constexpr absl::Duration kDamagedRereadInterval = absl::Seconds(1);

google::protobuf::Timestamp NowTimestamp() {
  return google::protobuf::util::TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(absl::Now()));
}

using SteadyClock = std::chrono::steady_clock;

int PartitionOf(uint64_t sequence, std::string_view source, std::string_view kind,
                std::string_view resource_id, int partitions) {
  if (partitions <= 1) return 0;
  if (resource_id.empty()) return static_cast<int>(sequence % partitions);
  uint64_t hash = 14695981039346656037ULL;  // FNV-1a, 64 bits
  const auto mix = [&hash](std::string_view text) {
    for (unsigned char c : text) {
      hash ^= c;
      hash *= 1099511628211ULL;
    }
  };
  mix(source);
  mix("\x1f");
  mix(kind);
  mix("\x1f");
  mix(resource_id);
  return static_cast<int>(hash % static_cast<uint64_t>(partitions));
}

int PartitionOf(const EventRoute& route, int partitions) {
  return PartitionOf(route.sequence, route.source, route.kind, route.resource_id, partitions);
}

}  // namespace

int PartitionOf(const v1::Event& header, int partitions) {
  return PartitionOf(header.sequence(), header.source(), header.kind(), header.resource_id(),
                     partitions);
}

std::string PartitionCursorKey(const std::string& plugin, int partition, int partitions) {
  return absl::StrCat(plugin, ".p", partition, "of", partitions);
}

ClusterDispatchOptions ClusterDispatchOptions::FromConfig(const ClusterConfig& config,
                                                          std::shared_ptr<LeaseStore> leases) {
  ClusterDispatchOptions options;
  options.leases = std::move(leases);
  options.node_id = config.node_id;
  options.partitions = config.partitions;
  options.lease_ttl = absl::FromChrono(config.lease_ttl);
  return options;
}

class Dispatcher::PluginDispatcher {
 public:
  // One partition of the plugin under cluster dispatch: the events it delivers (the others are
  // skipped as they are read), its cursor key, and the fence of its lease.
  struct Slot {
    int partition = 0;
    int partitions = 1;
    std::shared_ptr<LeaseFence> fence;
  };

  // `hydrator`: null unless the plugin has `hydrate: true`. `letters`: the dispatcher's.
  // `slot`: set under cluster dispatch.
  PluginDispatcher(const PluginConfig& config, EventLog* log, DeadLetters* letters,
                   AddressResolver resolve, const DispatcherOptions& options,
                   HydrationService* hydrator, std::optional<Slot> slot = std::nullopt)
      : config_(config),
        slot_(std::move(slot)),
        cursor_key_(slot_ ? PartitionCursorKey(config.name, slot_->partition, slot_->partitions)
                          : config.name),
        log_(log),
        letters_(letters),
        resolve_(std::move(resolve)),
        options_(options),
        hydrator_(hydrator),
        filter_(config),
        rng_(std::random_device{}()) {
    stats_.name = config.name;
    stats_.state = "stopped";
  }

  ~PluginDispatcher() { Stop(); }

  const std::string& name() const { return config_.name; }

  // `listen`: register a listener for new events (cluster dispatch wakes its partitions
  // itself, through Wake).
  absl::Status Start(bool listen = true) {
    absl::StatusOr<uint64_t> cursor = log_->LoadCursor(cursor_key_);
    // A partition never delivered yet starts where the plugin's single cursor is (a store that
    // one node delivered before the cluster).
    if (slot_ && cursor.ok() && *cursor == 0) cursor = log_->LoadCursor(config_.name);
    if (!cursor.ok()) return cursor.status();
    // The handed-out mark (see Reserve): events past the cursor up to it may have reached the
    // plugin before this start (a restart, a crash, a takeover), so they go with attempt >= 2.
    absl::StatusOr<uint64_t> mark = log_->LoadHandedOut(cursor_key_);
    if (!mark.ok()) return mark.status();
    handed_out_ = *mark;
    may_have_reached_ = *mark;
    if (slot_ && *mark == 0) {
      // As for the cursor: a partition never delivered yet inherits what one node delivering
      // the whole plugin handed out (its own mark stays 0 until it writes one).
      absl::StatusOr<uint64_t> single = log_->LoadHandedOut(config_.name);
      if (!single.ok()) return single.status();
      may_have_reached_ = *single;
    }
    // As applied here (no round trip to the cluster: a node taking a partition over while the
    // stream elects a leader starts at once); a pause made elsewhere a moment ago is applied by
    // the next round of cluster dispatch (FollowControls).
    absl::StatusOr<std::optional<std::string>> paused =
        log_->GetAppliedMeta(PausedKey(config_.name));
    if (!paused.ok()) return paused.status();
    if (paused->has_value() && **paused == "true") {
      spdlog::info(
          "[dispatch {}] paused (pimgatectl pause, saved in the store): its events wait "
          "for pimgatectl resume {}",
          config_.name, config_.name);
      absl::MutexLock lock(&mu_);
      paused_ = true;
    }
    // Retries of dead letters that a stop or a crash interrupted resume: their letters are still
    // stored, marked (DeadLetters::Retry), and go once the redelivery is over.
    absl::StatusOr<std::vector<v1::Event>> retrying = letters_->Retrying(config_.name);
    if (!retrying.ok()) return retrying.status();
    if (slot_) {
      std::erase_if(*retrying, [this](const v1::Event& event) {
        return PartitionOf(event, slot_->partitions) != slot_->partition;
      });
    }
    if (!retrying->empty()) {
      spdlog::info("[dispatch {}] resuming the retry of {} dead letter(s)", config_.name,
                   retrying->size());
      // They may have reached the plugin before the restart: attempt 2 on.
      for (const v1::Event& event : *retrying) resumed_retries_.insert(event.sequence());
      RequestRedelivery(*std::move(retrying));
    }
    cursor_ = *cursor;
    persisted_cursor_ = cursor_;
    next_read_ = cursor_ + 1;
    if (may_have_reached_ > cursor_) {
      spdlog::info(
          "[dispatch {}] events {}..{} may have been delivered before (handed-out mark): they go "
          "again with attempt >= 2",
          cursor_key_, cursor_ + 1, may_have_reached_);
    }
    // The log outlives nothing we own: the hook is detached in Stop() before we go away.
    hook_ = std::make_shared<Hook>();
    hook_->target = this;
    if (listen) {
      log_->AddAppendListener([hook = hook_](uint64_t) {
        absl::MutexLock lock(&hook->mu);
        if (hook->target != nullptr) hook->target->Wake();
      });
    }
    {
      absl::MutexLock lock(&mu_);
      started_ = true;
      paused_view_ = paused_;
    }
    // Readers see the loaded cursor and a true state before the first loop: the events after
    // the cursor are read now, so a plugin with work waiting reads "connecting", not "idle".
    FillWindow();
    PublishStats();
    thread_ = std::thread([this] { Run(); });
    return absl::OkStatus();
  }

  void Stop() {
    if (hook_) {
      absl::MutexLock lock(&hook_->mu);
      hook_->target = nullptr;
    }
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
    }
    if (thread_.joinable()) thread_.join();
  }

  void Wake() {
    absl::MutexLock lock(&mu_);
    new_events_ = true;
  }

  PluginDispatchStats Stats() const {
    absl::MutexLock lock(&mu_);
    PluginDispatchStats stats = shared_stats_;
    const uint64_t head = log_->head();
    stats.lag = head > stats.cursor ? head - stats.cursor : 0;
    return stats;
  }

  // Saved first (fsynced), then applied: a pause that was answered OK survives a restart.
  // `save` false: only applied (cluster dispatch saved it once for every partition).
  absl::Status SetPaused(bool paused, bool save = true) {
    absl::MutexLock control(&control_mu_);  // the store and memory change in the same order
    if (absl::Status status =
            save ? log_->PutMeta(PausedKey(config_.name), paused ? "true" : "false")
                 : absl::OkStatus();
        !status.ok()) {
      return absl::Status(status.code(), absl::StrCat("saving the pause state of plugin ",
                                                      config_.name, ": ", status.message()));
    }
    absl::MutexLock lock(&mu_);
    paused_ = paused;
    control_changed_ = true;
    return absl::OkStatus();
  }

  absl::StatusOr<Dispatcher::DrainResult> HoldAndDrain(std::optional<absl::Duration> timeout) {
    absl::MutexLock lock(&mu_);
    if (!started_ || stopping_) {
      return absl::FailedPreconditionError(
          absl::StrCat("the dispatcher of plugin ", config_.name, " is not running"));
    }
    const uint64_t seq = ++hold_seq_;
    hold_ = true;
    control_changed_ = true;
    const auto seen = [this, seq]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return stopping_ || published_hold_seq_ == seq;
    };
    if (!mu_.AwaitWithTimeout(absl::Condition(&seen), kControlWait) || stopping_) {
      return absl::DeadlineExceededError(
          absl::StrCat("the dispatcher of plugin ", config_.name, " did not take the hold"));
    }
    Dispatcher::DrainResult result;
    result.in_flight = shared_stats_.in_flight;
    const auto drained = [this, seq]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return stopping_ || (published_hold_seq_ == seq && shared_stats_.in_flight == 0);
    };
    mu_.AwaitWithTimeout(absl::Condition(&drained),
                         timeout.value_or(absl::FromChrono(config_.ack_timeout)));
    detach_seq_ = seq;
    control_changed_ = true;
    const auto detached = [this, seq]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return stopping_ || detached_seq_done_ == seq;
    };
    if (!mu_.AwaitWithTimeout(absl::Condition(&detached), kControlWait) || stopping_) {
      return absl::DeadlineExceededError(absl::StrCat("the dispatcher of plugin ", config_.name,
                                                      " did not release its delivery stream"));
    }
    result.unanswered = detached_unanswered_;
    return result;
  }

  void EndHold() {
    absl::MutexLock lock(&mu_);
    hold_ = false;
    control_changed_ = true;
  }

  // `applied_key`: under cluster dispatch, the metadata key that records `token` once the
  // seek's cursor is saved (so that a node taking the partition over knows it was applied).
  void RequestSeek(uint64_t sequence, std::string applied_key = "", std::string token = "") {
    absl::MutexLock lock(&mu_);
    seek_to_ = sequence;
    seek_applied_ = {std::move(applied_key), std::move(token)};
  }

  bool partitioned() const { return slot_.has_value(); }
  int partition() const { return slot_ ? slot_->partition : 0; }

  // Called from REST client threads (through hook_) with one fetch answer.
  void OnHydrated(HydrationOutcome outcome) {
    absl::MutexLock lock(&mu_);
    hydrated_.push_back(std::move(outcome));
  }

  void RequestRedelivery(std::vector<v1::Event> events) {
    absl::MutexLock lock(&mu_);
    for (v1::Event& event : events) redeliver_.push_back(std::move(event));
  }

 private:
  // Detachable link from the log's listener to this dispatcher.
  struct Hook {
    absl::Mutex mu;
    PluginDispatcher* target ABSL_GUARDED_BY(mu) = nullptr;
  };

  enum class State { kWaiting, kInFlight, kBackoff };
  // What stats_.last_error is about, so that it goes once that is resolved.
  enum class ErrorKind { kNone, kConnect, kStream, kHydration, kRead, kProgress, kMark };
  // kNeeded: a lightweight event whose resource must be fetched before it is sent (it waits in
  // hydrate_queue_, not ready_); kFetching: being fetched; kFound / kNotFound: fetched, sent with
  // data.resource / data.hydration = "not_found". kNone: sent as stored.
  enum class Hydration { kNone, kNeeded, kFetching, kFound, kNotFound };
  struct Pending {
    std::string bytes;  // the event as stored (serialized), data included: what is sent
    // What ordering, partitions and filters read, as views into `bytes` (ScanEventRoute).
    EventRoute route;
    // Events of one resource go one at a time, in sequence order: `resource_key` is the key of the
    // event's chain in resources_ (a hash of source, kind and resource id), `next` the event
    // after it in that chain (0: none). Events without a resource id are in no chain.
    bool chained = false;
    uint64_t resource_key = 0;
    uint64_t next = 0;
    // Deliveries made by this window, counted against retry.max_attempts.
    uint32_t attempts = 0;
    // 1 when the event may have reached the plugin before this dispatcher started (it was
    // handed out before a restart, a crash or a takeover: see Reserve), else 0. The plugin sees
    // attempt = earlier + attempts: attempt > 1 means "this event may have reached you before"
    // (since it was appended, or since an operator asked for it again: a seek, a retried dead
    // letter, each a new round from attempt 1).
    uint32_t earlier = 0;
    State state = State::kWaiting;
    absl::Time due;
    absl::Time deadline;
    uint64_t generation = 0;
    bool redelivery = false;  // a retried dead letter: its letter is removed once it succeeds
    Hydration hydration = Hydration::kNone;
    uint64_t hydration_batch = 0;  // the batch of the fetch in progress (stale answers ignored)
    bool hydrated_unsent = false;  // counted in hydrated_unsent_
    // The fetched item, added to the event's data when sent; the stored event (and a dead
    // letter made of it) stays lightweight, so a retried dead letter is hydrated afresh.
    std::shared_ptr<const google::protobuf::Struct> resource;
  };

  // The events read and not done yet: in sequence order (the lowest is the cursor's bound, and
  // a reconnect walks them in order), and found by sequence with one hash lookup. A plain
  // std::map walk (a cache miss per level over thousands of entries) was the scheduler's
  // largest cost in profiles of dispatch. The API is the subset of std::map the scheduler uses.
  class Window {
   public:
    using Map = std::map<uint64_t, Pending>;
    using iterator = Map::iterator;

    iterator begin() { return map_.begin(); }
    iterator end() { return map_.end(); }
    bool empty() const { return map_.empty(); }
    std::size_t size() const { return map_.size(); }
    std::size_t count(uint64_t sequence) const { return index_.contains(sequence) ? 1 : 0; }
    iterator find(uint64_t sequence) {
      auto it = index_.find(sequence);
      return it == index_.end() ? map_.end() : it->second;
    }
    // The entry for `sequence`, which must be in the window.
    Pending& at(uint64_t sequence) {
      auto it = index_.find(sequence);
      if (it == index_.end()) {
        spdlog::critical("dispatcher: sequence {} is not in the window", sequence);
        std::abort();
      }
      return it->second->second;
    }
    // The entry for `sequence`, created when absent (reads come in increasing order: the
    // insertion at the end is constant time).
    Pending& operator[](uint64_t sequence) {
      auto [slot, inserted] = index_.try_emplace(sequence);
      if (inserted) slot->second = map_.try_emplace(map_.end(), sequence);
      return slot->second->second;
    }
    void erase(iterator it) {
      index_.erase(it->first);
      map_.erase(it);
    }
    void clear() {
      index_.clear();
      map_.clear();
    }

   private:
    Map map_;
    absl::flat_hash_map<uint64_t, iterator> index_;
  };

  // What other threads hand the scheduler, taken in one swap per loop.
  struct Inbox {
    std::vector<std::pair<uint64_t, Ack>> acks;
    std::vector<std::pair<uint64_t, std::string>> closed;
    std::optional<uint64_t> seek_to;
    std::pair<std::string, std::string> seek_applied;
    std::vector<v1::Event> redeliver;
    std::vector<HydrationOutcome> hydrated;
    bool paused = false;
    uint64_t hold_seq = 0;    // non-zero: deliveries are held for a restart
    uint64_t detach_seq = 0;  // non-zero: release the delivery stream for that hold
    bool stopping = false;
  };

  bool HasWork() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return stopping_ || new_events_ || control_changed_ || !acks_.empty() || !closed_.empty() ||
           seek_to_.has_value() || !redeliver_.empty() || !hydrated_.empty();
  }

  void Run() {
    spdlog::info("[dispatch {}] starting at cursor {}", config_.name, cursor_);
    while (true) {
      Inbox inbox;
      {
        absl::MutexLock lock(&mu_);
        mu_.AwaitWithDeadline(absl::Condition(
                                  +[](PluginDispatcher* d) ABSL_EXCLUSIVE_LOCKS_REQUIRED(d->mu_) {
                                    return d->HasWork();
                                  },
                                  this),
                              NextDeadline());
        inbox.acks.swap(acks_);
        inbox.closed.swap(closed_);
        inbox.seek_to = std::exchange(seek_to_, std::nullopt);
        inbox.seek_applied = std::exchange(seek_applied_, {});
        inbox.redeliver.swap(redeliver_);
        inbox.hydrated.swap(hydrated_);
        inbox.paused = paused_;
        inbox.hold_seq = hold_ ? hold_seq_ : 0;
        inbox.detach_seq =
            hold_ && detach_seq_ == hold_seq_ && detached_seq_done_ != hold_seq_ ? detach_seq_ : 0;
        inbox.stopping = stopping_;
        new_events_ = false;
        control_changed_ = false;
      }
      if (inbox.stopping) break;
      paused_view_ = inbox.paused;
      hold_view_ = inbox.hold_seq;
      const absl::Time now = absl::Now();
      if (inbox.detach_seq != 0) ReleaseStreamForRestart(inbox.detach_seq);
      if (inbox.seek_to) Seek(*inbox.seek_to, inbox.seek_applied);
      if (Fenced() && stream_) {
        // The lease's local deadline passed without a renewal: nothing more goes to the plugin
        // (see LeaseFence); what is in flight is abandoned, redelivered by the next owner.
        spdlog::warn("[dispatch {}] partition {}: lease deadline passed; delivery stopped",
                     config_.name, partition());
        AbandonStream();
      }
      for (v1::Event& event : inbox.redeliver) AdmitRedelivery(std::move(event));
      for (const auto& [generation, ack] : inbox.acks) HandleAck(generation, ack, now);
      for (HydrationOutcome& outcome : inbox.hydrated) HandleHydrated(std::move(outcome), now);
      for (const auto& [generation, reason] : inbox.closed) HandleClosed(generation, reason, now);
      HandleTimers(now);
      FillWindow();
      EnsureStream(now);
      SendReady(now);
      FlushProgress(now, /*force=*/false);
      PublishStats();
    }
    stream_.reset();
    FlushProgress(absl::Now(), /*force=*/true);
    stats_.state = "stopped";
    stats_.in_flight = 0;
    PublishStats();
    spdlog::info("[dispatch {}] stopped at cursor {}", config_.name, cursor_);
  }

  absl::Time NextDeadline() const {
    absl::Time deadline = absl::Now() + absl::Seconds(1);
    if (!retry_timers_.empty()) deadline = std::min(deadline, retry_timers_.begin()->first);
    if (!ack_deadlines_.empty()) deadline = std::min(deadline, ack_deadlines_.begin()->first);
    if (!stream_ && !window_.empty()) deadline = std::min(deadline, reconnect_at_);
    if (ProgressDirty() && !Fenced()) deadline = std::min(deadline, next_progress_at_);
    if (slot_ && stream_) deadline = std::min(deadline, slot_->fence->Deadline());
    // A failed write of the handed-out mark is tried again then (see Reserve).
    if (stream_ && !ready_.empty() && next_reserve_at_ > absl::Now()) {
      deadline = std::min(deadline, next_reserve_at_);
    }
    // More events may be waiting in the log once the window has room again (a damaged one when
    // it is time to read it again).
    if (WorthReading() && next_read_ <= log_->head()) {
      const absl::Time now = absl::Now();
      deadline = DamagedWaits(now) ? std::min(deadline, damaged_reread_at_) : now;
    }
    return deadline;
  }

  void EnsureStream(absl::Time now) {
    if (stream_ || window_.empty() || paused_view_ || hold_view_ != 0 || now < reconnect_at_ ||
        Fenced()) {
      return;
    }
    if (!channel_) {
      const std::string address = resolve_(config_.name);
      grpc::ChannelArguments args;
      args.SetMaxSendMessageSize(-1);
      args.SetMaxReceiveMessageSize(16 << 20);
      channel_ = grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
    }
    stats_.state = "connecting";
    PublishStats();  // the wait below may take connect_timeout: show why nothing moves
    if (!channel_->WaitForConnected(absl::ToChronoTime(now + options_.connect_timeout))) {
      reconnect_delay_ = reconnect_delay_ == absl::ZeroDuration()
                             ? options_.reconnect_initial
                             : std::min(reconnect_delay_ * 2, options_.reconnect_max);
      reconnect_at_ = absl::Now() + reconnect_delay_;
      SetError(ErrorKind::kConnect, "plugin unreachable at " + resolve_(config_.name));
      return;
    }
    ++generation_;
    const DeliveryStream::AcksFn on_acks = [this](uint64_t generation, std::vector<Ack> acks) {
      absl::MutexLock lock(&mu_);
      for (Ack& ack : acks) acks_.emplace_back(generation, std::move(ack));
    };
    const DeliveryStream::ClosedFn on_closed = [this](uint64_t generation, std::string reason) {
      absl::MutexLock lock(&mu_);
      closed_.emplace_back(generation, std::move(reason));
    };
    // DeliverBatch first, on every new stream (the plugin may have been upgraded or replaced);
    // plugins that predate it get Deliver.
    absl::StatusOr<std::unique_ptr<DeliveryStream>> stream =
        DeliveryStream::Open(channel_, DeliveryStream::Protocol::kBatch, generation_,
                             options_.connect_timeout, on_acks, on_closed);
    if (!stream.ok() && absl::IsUnimplemented(stream.status())) {
      stream = DeliveryStream::Open(channel_, DeliveryStream::Protocol::kSingle, generation_,
                                    options_.connect_timeout, on_acks, on_closed);
    }
    if (!stream.ok()) {
      reconnect_delay_ = reconnect_delay_ == absl::ZeroDuration()
                             ? options_.reconnect_initial
                             : std::min(reconnect_delay_ * 2, options_.reconnect_max);
      reconnect_at_ = absl::Now() + reconnect_delay_;
      SetError(ErrorKind::kConnect,
               absl::StrCat("opening the delivery stream to ", resolve_(config_.name), ": ",
                            stream.status().message()));
      spdlog::warn("[dispatch {}] {}", config_.name, stats_.last_error);
      return;
    }
    reconnect_delay_ = absl::ZeroDuration();
    stream_ = std::move(*stream);
    ClearError(ErrorKind::kConnect);
    ClearError(ErrorKind::kStream);
    ++stats_.connects;
    stats_.state = "streaming";
    spdlog::info("[dispatch {}] stream {} open ({})", config_.name, generation_,
                 stream_->protocol() == DeliveryStream::Protocol::kBatch
                     ? "DeliverBatch"
                     : "Deliver: the plugin does not serve DeliverBatch");
  }

  // Whether FillWindow reads now. A log read costs nearly as much for a few events as for
  // read_batch (an iterator and a seek): while the window holds enough ready events to refill
  // the plugin's in-flight window, reading waits until read_batch events fit. Otherwise it
  // reads whatever fits, so a resource stuck in backoff never holds up the others more than a
  // full window does.
  bool WorthReading() const {
    const std::size_t room =
        window_.size() < options_.window ? options_.window - window_.size() : 0;
    if (room == 0) return false;
    return room >= std::min(options_.read_batch, options_.window) ||
           ready_.size() < config_.max_in_flight;
  }

  // Whether the next read is of a stored event that did not read back, before its time to be
  // read again.
  bool DamagedWaits(absl::Time now) const {
    return next_read_ == damaged_at_ && now < damaged_reread_at_;
  }

  void FillWindow() {
    const uint64_t head = log_->head();
    const absl::Time now = absl::Now();
    bool damaged = false;  // a stored event does not read back: the cursor stops below it
    while (WorthReading() && next_read_ <= head && !DamagedWaits(now)) {
      const std::size_t want = std::min(options_.read_batch, options_.window - window_.size());
      absl::StatusOr<std::vector<StoredEvent>> events = log_->ReadStoredEvents(next_read_, want);
      if (!events.ok()) {
        SetError(ErrorKind::kRead, std::string(events.status().message()));
        spdlog::error("[dispatch {}] reading the log: {}", config_.name, stats_.last_error);
        return;
      }
      if (events->empty()) {
        next_read_ = head + 1;  // a gap up to head (retention removed events)
        break;
      }
      next_read_ = events->back().sequence + 1;  // before the events are moved from
      ClearError(ErrorKind::kRead);
      for (StoredEvent& stored : *events) {
        absl::StatusOr<EventRoute> route = ScanEventRoute(stored.bytes);
        if (route.ok() && route->sequence != stored.sequence) {
          // Damaged all the same (a record cut inside or before its trailing `sequence` reads
          // as sequence 0): its sequence orders the window, keys its chain and moves the cursor.
          route = absl::DataLossError(absl::StrCat("stored event: its sequence field reads ",
                                                   route->sequence, ", its key ", stored.sequence));
        }
        if (!route.ok()) {
          // Never skipped silently: the cursor stops below it until an operator seeks past it.
          // Read again each kDamagedRereadInterval; logged once (the error stays in the stats).
          next_read_ = stored.sequence;
          SetError(ErrorKind::kRead,
                   absl::StrCat("event ", stored.sequence, ": ", route.status().message()));
          if (damaged_at_ != stored.sequence) {
            spdlog::error("[dispatch {}] reading the log: {}", config_.name, stats_.last_error);
          }
          damaged_at_ = stored.sequence;
          damaged_reread_at_ = now + kDamagedRereadInterval;
          damaged = true;
          break;
        }
        Admit(*route, std::move(stored.bytes));
      }
      // Not read again in this pass: the outer loop would read the same event forever.
      if (damaged) break;
    }
    AdvanceCursor();
  }

  // Filters one event read from the log (`route` is read from its stored `bytes`), or queues
  // it behind earlier events of its resource. `bytes` is moved from only by Enqueue: until
  // then `route`'s views point into it (a short string holds its characters inline).
  void Admit(const EventRoute& route, std::string&& bytes) {
    // Another partition's event: another lease's (read amplification: every partition reads
    // the whole log).
    if (slot_ && PartitionOf(route, slot_->partitions) != slot_->partition) return;
    // Already pending as a retried dead letter (after a seek back below it): delivered once.
    if (window_.count(route.sequence) > 0) return;
    EventFilter::Verdict verdict;
    if (filter_.reads_data()) {
      v1::Event full;
      if (!full.ParseFromString(bytes)) {
        // The data alone is damaged (the header's framing was read): filtered on the header.
        full = HeaderOf(bytes, route.sequence);
      }
      verdict = filter_.Check(full);
    } else {
      verdict = filter_.Check(EventAttributes{.source = route.source,
                                              .type = route.type,
                                              .author = route.author,
                                              .author_type = route.author_type,
                                              .stale = route.stale});
    }
    switch (verdict) {
      case EventFilter::Verdict::kSkipFilter:
        ++stats_.skipped_filter;
        return;
      case EventFilter::Verdict::kSkipStale:
        ++stats_.skipped_stale;
        return;
      case EventFilter::Verdict::kDeliver:
        break;
    }
    Enqueue(route, std::move(bytes), /*redelivery=*/false);
  }

  // An event an operator asked to deliver again (a retried dead letter). It is usually below
  // the cursor: while it is pending the cursor holds still (AdvanceCursor never moves back).
  // Never delivered twice at once: an event already pending (a retry asked twice, or an event
  // read again after a seek) is left there, and its OK resolves the letter too; one whose
  // redelivery has just succeeded is not sent again (its letter goes with the next progress
  // write).
  void AdmitRedelivery(v1::Event event) {
    if (auto it = window_.find(event.sequence()); it != window_.end()) {
      it->second.redelivery = true;
      return;
    }
    if (std::find(resolved_letters_.begin(), resolved_letters_.end(), event.sequence()) !=
        resolved_letters_.end()) {
      return;
    }
    spdlog::info("[dispatch {}] redelivering sequence {}", config_.name, event.sequence());
    std::string bytes = event.SerializeAsString();
    absl::StatusOr<EventRoute> route = ScanEventRoute(bytes);
    if (!route.ok()) {  // cannot happen: the bytes were serialized just above
      spdlog::error("[dispatch {}] redelivering sequence {}: {}", config_.name, event.sequence(),
                    std::string(route.status().message()));
      return;
    }
    Enqueue(*route, std::move(bytes), /*redelivery=*/true);
  }

  // `route` is read from `bytes`, the event as stored. `bytes` is taken by reference so that it
  // stays where `route`'s views point until it is moved into the window below.
  void Enqueue(const EventRoute& route, std::string&& bytes, bool redelivery) {
    const uint64_t sequence = route.sequence;
    const char* const scanned = bytes.data();
    Pending& pending = window_[sequence];
    pending.bytes = std::move(bytes);
    pending.route = route;
    // The views stay valid unless the bytes were short enough to be stored inline.
    if (pending.bytes.data() != scanned) pending.route = *ScanEventRoute(pending.bytes);
    pending.redelivery = redelivery;
    pending.earlier =
        (redelivery ? resumed_retries_.erase(sequence) > 0 : sequence <= may_have_reached_) ? 1 : 0;
    if (hydrator_ != nullptr && hydrator_->ShouldHydrate(HeaderOf(pending))) {
      pending.hydration = Hydration::kNeeded;
    }
    // Events without a resource id (jobs, app.deleted ...) have nothing to be ordered against.
    if (route.resource_id.empty()) {
      MakeReady(sequence, pending);
      return;
    }
    // Keyed by a hash: two resources whose keys collide share one chain, which only orders
    // their events more strictly than needed (never less).
    pending.chained = true;
    pending.resource_key =
        absl::Hash<std::tuple<std::string_view, std::string_view, std::string_view>>()(
            {pending.route.source, pending.route.kind, pending.route.resource_id});
    auto [chain, first] = resources_.try_emplace(pending.resource_key, sequence);
    if (first) {
      MakeReady(sequence, pending);
    } else {
      window_.at(chain->second).next = sequence;
      chain->second = sequence;
    }
  }

  // The event's header (every field but its data), decoded from the stored bytes where a whole
  // v1::Event is wanted (hydration, dead letters); just its sequence if they do not decode.
  static v1::Event HeaderOf(absl::string_view bytes, uint64_t sequence) {
    absl::StatusOr<v1::Event> header = ParseEventHeader(bytes);
    if (header.ok()) return *std::move(header);
    v1::Event event;
    event.set_sequence(sequence);
    return event;
  }
  static v1::Event HeaderOf(const Pending& pending) {
    return HeaderOf(pending.bytes, pending.route.sequence);
  }

  // The whole stored event, data included (decoded only where it is changed or kept: hydration,
  // dead letters). Falls back to the header if the stored data does not decode.
  v1::Event FullEvent(const Pending& pending) const {
    v1::Event event;
    if (!event.ParseFromString(pending.bytes)) {
      spdlog::error("[dispatch {}] stored event {} does not decode; using its header", config_.name,
                    pending.route.sequence);
      return HeaderOf(pending);
    }
    return event;
  }

  // A resource head that may go: to the send queue, or first to the fetch queue when its
  // resource must be hydrated.
  void MakeReady(uint64_t sequence) { MakeReady(sequence, window_.at(sequence)); }
  void MakeReady(uint64_t sequence, const Pending& pending) {
    if (pending.hydration == Hydration::kNeeded) {
      hydrate_queue_.insert(sequence);
    } else {
      ready_.insert(sequence);
    }
  }

  // Starts one fetch batch of the oldest events waiting for hydration, within the prefetch and
  // batch limits. Answers arrive through the inbox (HandleHydrated).
  void StartHydrations() {
    if (hydrate_queue_.empty() || hydration_batches_.size() >= options_.hydration_batches) return;
    const std::size_t limit =
        std::max<std::size_t>(options_.hydration_prefetch, config_.max_in_flight);
    std::vector<HydrationRequest> requests;
    const uint64_t batch = ++last_hydration_batch_;
    while (!hydrate_queue_.empty() && hydrating_ + hydrated_unsent_ + requests.size() < limit) {
      const uint64_t sequence = *hydrate_queue_.begin();
      hydrate_queue_.erase(hydrate_queue_.begin());
      Pending& pending = window_.at(sequence);
      pending.hydration = Hydration::kFetching;
      pending.hydration_batch = batch;
      requests.push_back(MakeHydrationRequest(HeaderOf(pending), batch));
    }
    if (requests.empty()) return;
    hydrating_ += requests.size();
    hydration_batches_[batch] = requests.size();
    stats_.hydrating = hydrating_;
    hydrator_->Hydrate(std::move(requests), [hook = hook_](HydrationOutcome outcome) {
      absl::MutexLock lock(&hook->mu);
      if (hook->target != nullptr) hook->target->OnHydrated(std::move(outcome));
    });
  }

  // A fetch answer (scheduler thread). Found or not found: the event may be sent. A failure
  // counts as a failed attempt, exactly like a RETRY: backoff, then fetched again, and
  // dead-lettered once retry.max_attempts are used up.
  void HandleHydrated(HydrationOutcome outcome, absl::Time now) {
    auto batch = hydration_batches_.find(outcome.ticket);
    if (batch == hydration_batches_.end()) return;  // abandoned by a seek
    if (--batch->second == 0) hydration_batches_.erase(batch);
    auto it = window_.find(outcome.sequence);
    if (it == window_.end() || it->second.hydration != Hydration::kFetching ||
        it->second.hydration_batch != outcome.ticket) {
      return;
    }
    Pending& pending = it->second;
    --hydrating_;
    stats_.hydrating = hydrating_;
    const bool found = outcome.status.ok();
    if (found || outcome.status.code() == absl::StatusCode::kNotFound) {
      ClearError(ErrorKind::kHydration);
      ++(outcome.from_cache ? stats_.hydration_cache_hits : stats_.hydration_fetches);
      if (!found) ++stats_.hydration_not_found;
      pending.hydration = found ? Hydration::kFound : Hydration::kNotFound;
      pending.resource = std::move(outcome.resource);
      pending.hydrated_unsent = true;
      ++hydrated_unsent_;
      MakeReady(outcome.sequence);
      return;
    }
    ++stats_.hydration_failures;
    pending.hydration = Hydration::kNeeded;
    ++pending.attempts;
    SetError(ErrorKind::kHydration, absl::StrCat("hydration failed: ", outcome.status.message()));
    Fail(outcome.sequence, stats_.last_error, now);
  }

  void SendReady(absl::Time now) {
    if (!stream_ || paused_view_ || hold_view_ != 0 || Fenced()) return;
    // What goes, in order: the stored bytes (or the hydrated event, kept in `hydrated`) and the
    // attempt. Framed below, each copied once into the stream's message.
    std::vector<std::pair<absl::string_view, uint32_t>> sends;
    std::vector<std::unique_ptr<std::string>> hydrated;  // stable addresses
    if (in_flight_ < config_.max_in_flight) {
      sends.reserve(std::min<std::size_t>(config_.max_in_flight - in_flight_, ready_.size()));
    }
    while (in_flight_ < config_.max_in_flight && !ready_.empty()) {
      const uint64_t sequence = *ready_.begin();
      if (sequence > handed_out_) {
        if (!Reserve(sequence, now)) break;
        // The write may have waited (a JetStream bucket electing its leader): the lease may
        // have passed its deadline meanwhile, and then nothing more goes (see LeaseFence).
        if (Fenced()) break;
        now = absl::Now();
      }
      ready_.erase(ready_.begin());
      Pending& pending = window_.at(sequence);
      ++pending.attempts;
      pending.state = State::kInFlight;
      pending.generation = generation_;
      pending.deadline = now + absl::FromChrono(config_.ack_timeout);
      ack_deadlines_.emplace(pending.deadline, sequence);
      ++in_flight_;
      const uint32_t attempt = pending.earlier + pending.attempts;
      if (pending.hydration == Hydration::kFound || pending.hydration == Hydration::kNotFound) {
        v1::Event event = FullEvent(pending);
        ApplyHydration(pending.resource.get(), event);
        if (std::exchange(pending.hydrated_unsent, false)) --hydrated_unsent_;
        hydrated.push_back(std::make_unique<std::string>(event.SerializeAsString()));
        sends.emplace_back(*hydrated.back(), attempt);
      } else {
        sends.emplace_back(pending.bytes, attempt);  // as stored
      }
    }
    if (!sends.empty()) stream_->Send(FrameDeliveries(sends, stream_->protocol()));
    stats_.in_flight = in_flight_;
    if (hydrator_ != nullptr) StartHydrations();  // after the sends, which free prefetch room
  }

  // The stream messages for `sends` (event bytes, attempt): for DeliverBatch, runs of batch
  // elements of at most kMaxDeliveryBatchBytes each (a larger delivery alone), each allocated
  // once at its final size; for Deliver, one Delivery each.
  static std::vector<std::string> FrameDeliveries(
      const std::vector<std::pair<absl::string_view, uint32_t>>& sends,
      DeliveryStream::Protocol protocol) {
    std::vector<std::string> messages;
    if (protocol == DeliveryStream::Protocol::kSingle) {
      for (const auto& [bytes, attempt] : sends) messages.push_back(EncodeDelivery(bytes, attempt));
      return messages;
    }
    std::size_t begin = 0;
    while (begin < sends.size()) {
      std::size_t end = begin;
      std::size_t size = 0;
      while (end < sends.size()) {
        const std::size_t element =
            DeliveryBatchElementSize(sends[end].first.size(), sends[end].second);
        if (end > begin && size + element > kMaxDeliveryBatchBytes) break;
        size += element;
        ++end;
      }
      std::string& run = messages.emplace_back();
      run.reserve(size);
      for (std::size_t i = begin; i < end; ++i) {
        AppendDeliveryToBatch(run, sends[i].first, sends[i].second);
      }
      begin = end;
    }
    return messages;
  }

  void HandleAck(uint64_t generation, const Ack& ack, absl::Time now) {
    auto it = window_.find(ack.sequence());
    // Acks of abandoned streams or of deliveries already given up on are ignored.
    if (it == window_.end() || it->second.state != State::kInFlight ||
        it->second.generation != generation) {
      return;
    }
    Pending& pending = it->second;
    LeaveFlight(pending, ack.sequence());
    ClearError(ErrorKind::kStream);  // the plugin answers again
    switch (ack.outcome()) {
      case v1::OUTCOME_OK:
        ++stats_.delivered;
        if (pending.redelivery) resolved_letters_.push_back(ack.sequence());
        Complete(ack.sequence());
        break;
      case v1::OUTCOME_REJECT:
        DeadLetter(ack.sequence(), absl::StrCat("rejected: ", ack.detail()), /*rejected=*/true);
        break;
      case v1::OUTCOME_RETRY:
        Fail(ack.sequence(), absl::StrCat("retry: ", ack.detail()), now);
        break;
      default:
        Fail(ack.sequence(), "ack without an outcome (OUTCOME_UNSPECIFIED counts as a failure)",
             now);
        break;
    }
  }

  void HandleClosed(uint64_t generation, const std::string& reason, absl::Time now) {
    if (!stream_ || generation != generation_) return;
    spdlog::warn("[dispatch {}] {}; redelivering {} in-flight event(s)", config_.name, reason,
                 in_flight_);
    SetError(ErrorKind::kStream, reason);
    stream_.reset();
    stats_.state = "connecting";
    reconnect_at_ = now + options_.reconnect_initial;
    FailAllInFlight(reason, now);
  }

  void FailAllInFlight(const std::string& reason, absl::Time now) {
    std::vector<uint64_t> in_flight;
    for (auto& [sequence, pending] : window_) {
      if (pending.state == State::kInFlight) in_flight.push_back(sequence);
    }
    for (uint64_t sequence : in_flight) {
      LeaveFlight(window_.at(sequence), sequence);
      Fail(sequence, reason, now);
    }
  }

  void HandleTimers(absl::Time now) {
    while (!retry_timers_.empty() && retry_timers_.begin()->first <= now) {
      const uint64_t sequence = retry_timers_.begin()->second;
      retry_timers_.erase(retry_timers_.begin());
      auto it = window_.find(sequence);
      if (it != window_.end() && it->second.state == State::kBackoff) {
        it->second.state = State::kWaiting;
        MakeReady(sequence);
      }
    }
    bool timed_out = false;
    while (!ack_deadlines_.empty() && ack_deadlines_.begin()->first <= now) {
      const uint64_t sequence = ack_deadlines_.begin()->second;
      ack_deadlines_.erase(ack_deadlines_.begin());
      auto it = window_.find(sequence);
      if (it == window_.end() || it->second.state != State::kInFlight) continue;
      LeaveFlight(it->second, sequence);
      Fail(sequence,
           absl::StrCat("no ack within ack_timeout (",
                        absl::FormatDuration(absl::FromChrono(config_.ack_timeout)), ")"),
           now);
      timed_out = true;
    }
    if (timed_out && stream_) {
      // A plugin that stops answering may have stopped reading too: start a fresh call so
      // queued writes cannot wedge behind it. Other in-flight deliveries are redelivered.
      SetError(ErrorKind::kStream,
               absl::StrCat("no ack within ack_timeout (",
                            absl::FormatDuration(absl::FromChrono(config_.ack_timeout)),
                            "): stream reset"));
      stream_.reset();
      stats_.state = "connecting";
      FailAllInFlight("stream reset after an ack timeout", now);
    }
  }

  void LeaveFlight(Pending& pending, uint64_t sequence) {
    ack_deadlines_.erase({pending.deadline, sequence});
    pending.state = State::kWaiting;
    --in_flight_;
  }

  // A failed attempt: back off and redeliver, or dead-letter once attempts are used up.
  void Fail(uint64_t sequence, const std::string& reason, absl::Time now) {
    Pending& pending = window_.at(sequence);
    if (pending.attempts >= config_.retry.max_attempts) {
      DeadLetter(sequence,
                 absl::StrCat("gave up after ", pending.attempts, " attempt(s); last: ", reason),
                 /*rejected=*/false);
      return;
    }
    ++stats_.retried;
    pending.state = State::kBackoff;
    pending.due = now + RetryDelay(config_.retry, pending.attempts, unit_(rng_));
    retry_timers_.emplace(pending.due, sequence);
    spdlog::debug("[dispatch {}] sequence {} attempt {} failed ({}), retry in {}", config_.name,
                  sequence, pending.attempts, reason, absl::FormatDuration(pending.due - now));
  }

  void DeadLetter(uint64_t sequence, const std::string& reason, bool rejected) {
    Pending& pending = window_.at(sequence);
    v1::DeadLetter& letter = dead_letters_.emplace_back();
    letter.set_plugin(config_.name);
    *letter.mutable_event() = FullEvent(pending);
    letter.set_attempts(pending.attempts);
    letter.set_reason(reason);
    letter.set_rejected(rejected);
    *letter.mutable_dead_at() = NowTimestamp();
    ++stats_.dead_lettered;
    spdlog::warn("[dispatch {}] dead-lettered sequence {} ({} {}): {}", config_.name, sequence,
                 pending.route.type, pending.route.resource_id, reason);
    Complete(sequence);
  }

  // The event is done for this plugin: the next event of its resource may go.
  void Complete(uint64_t sequence) {
    auto it = window_.find(sequence);
    if (it->second.chained) {
      // Only a chain's first event is ever delivered: `sequence` is its head.
      const uint64_t next = it->second.next;
      if (next == 0) {
        resources_.erase(it->second.resource_key);
      } else if (const Pending& after = window_.at(next); after.state == State::kWaiting) {
        MakeReady(next, after);
      }
    }
    if (it->second.hydrated_unsent) --hydrated_unsent_;
    window_.erase(it);
    AdvanceCursor();
  }

  void AdvanceCursor() {
    const uint64_t low_water = window_.empty() ? next_read_ - 1 : window_.begin()->first - 1;
    if (low_water > cursor_) cursor_ = low_water;
    stats_.cursor = cursor_;
  }

  bool ProgressDirty() const {
    return cursor_ != persisted_cursor_ || !dead_letters_.empty() || !resolved_letters_.empty();
  }

  // Writes the handed-out mark before `sequence` (past the mark) is sent: every event sent
  // under this cursor key stays at or below the stored mark, so the next dispatcher of the key
  // (after a restart, a crash or a takeover) knows which events may have reached the plugin.
  // Reserves ahead, up to the last event read: one small write per read batch, not per event.
  // Fenced like a cursor write (only the lease holder writes). False when the mark could not be
  // written: nothing past it goes until a later attempt succeeds.
  bool Reserve(uint64_t sequence, absl::Time now) {
    if (Fenced() || now < next_reserve_at_) return false;
    // Never below what this key (or, for a partition never delivered yet, the plugin as one
    // node) is known to have handed out.
    const uint64_t mark = std::max({sequence, next_read_ - 1, handed_out_, may_have_reached_});
    if (absl::Status status = log_->WriteHandedOut(cursor_key_, mark); !status.ok()) {
      next_reserve_at_ = now + options_.progress_interval;
      SetError(ErrorKind::kMark, absl::StrCat("saving the handed-out mark: ", status.message()));
      // Retried every progress_interval: logged as progress write errors are (see FlushProgress).
      if (stats_.last_error != logged_mark_error_ ||
          now >= mark_error_logged_at_ + kProgressErrorLogInterval) {
        spdlog::error("[dispatch {}] {}", cursor_key_, stats_.last_error);
        logged_mark_error_ = stats_.last_error;
        mark_error_logged_at_ = now;
      }
      return false;
    }
    if (!logged_mark_error_.empty()) {
      spdlog::info("[dispatch {}] saving the handed-out mark works again", cursor_key_);
      logged_mark_error_.clear();
    }
    ClearError(ErrorKind::kMark);
    handed_out_ = mark;
    return true;
  }

  // Whether the lease of this partition passed its local deadline (never without one).
  bool Fenced() const { return slot_ && !slot_->fence->Valid(); }

  void FlushProgress(absl::Time now, bool force) {
    if (!ProgressDirty() || (!force && now < next_progress_at_)) return;
    if (Fenced()) return;  // only the lease holder's writes count (see LeaseFence)
    PluginProgress progress;
    progress.cursor = cursor_;
    progress.dead_letters = dead_letters_;
    absl::Status status;
    if (slot_) {
      // The letters under the plugin's name (where operators find them), then the partition's
      // cursor past them.
      if (!dead_letters_.empty()) {
        status = log_->WriteProgress(config_.name, PluginProgress{std::nullopt, dead_letters_});
      }
      if (status.ok()) status = log_->WriteProgress(cursor_key_, PluginProgress{cursor_, {}});
    } else {
      status = log_->WriteProgress(config_.name, progress);
    }
    next_progress_at_ = now + options_.progress_interval;
    if (!status.ok()) {
      // Kept for the next attempt: a dead letter is never dropped for want of a write.
      SetError(ErrorKind::kProgress, std::string(status.message()));
      // Retried every progress_interval: logged when the error is new or changed, else at most
      // every kProgressErrorLogInterval (an unreachable store must not flood the log).
      if (stats_.last_error != logged_progress_error_ ||
          now >= progress_error_logged_at_ + kProgressErrorLogInterval) {
        spdlog::error("[dispatch {}] saving progress: {}", config_.name, stats_.last_error);
        logged_progress_error_ = stats_.last_error;
        progress_error_logged_at_ = now;
      }
      return;
    }
    if (!logged_progress_error_.empty()) {
      spdlog::info("[dispatch {}] saving progress works again", config_.name);
      logged_progress_error_.clear();
    }
    ClearError(ErrorKind::kProgress);
    persisted_cursor_ = cursor_;
    dead_letters_.clear();
    if (!resolved_letters_.empty()) {
      // Redelivered dead letters that succeeded. Deleted after the progress write, so a crash in
      // between leaves a letter whose event was handled: retrying it again is harmless.
      if (absl::Status deleted = letters_->Resolve(config_.name, resolved_letters_); deleted.ok()) {
        resolved_letters_.clear();
      } else {
        spdlog::error("[dispatch {}] removing retried dead letters: {}", config_.name,
                      std::string(deleted.message()));
      }
    }
  }

  void Seek(uint64_t sequence, const std::pair<std::string, std::string>& applied = {}) {
    spdlog::info("[dispatch {}] seek to sequence {}", config_.name, sequence);
    // Retried dead letters are not the cursor's: they stay pending (their letters are still
    // marked as being retried), sent again from attempt 1.
    std::vector<v1::Event> retried;
    for (auto& [pending_sequence, pending] : window_) {
      if (pending.redelivery) retried.push_back(FullEvent(pending));
    }
    stream_.reset();  // abandon in-flight deliveries: their acks will be ignored
    window_.clear();
    resources_.clear();
    ready_.clear();
    hydrate_queue_.clear();
    hydration_batches_.clear();  // answers still coming for them are ignored
    hydrating_ = 0;
    hydrated_unsent_ = 0;
    stats_.hydrating = 0;
    retry_timers_.clear();
    ack_deadlines_.clear();
    in_flight_ = 0;
    cursor_ = sequence > 0 ? sequence - 1 : 0;
    next_read_ = cursor_ + 1;
    damaged_at_ = 0;  // a replay reads (and reports) a damaged event again at once
    stats_.cursor = cursor_;
    // An operator's replay is a new round: attempt 1 again (the plugin is asked to handle the
    // events again, not told they may be duplicates). The stored mark stays: after a crash, what
    // this round handed out goes with attempt >= 2.
    may_have_reached_ = 0;
    FlushProgress(absl::Now(), /*force=*/true);
    if (!applied.first.empty() && persisted_cursor_ == cursor_) {
      if (absl::Status s = log_->PutMeta(applied.first, applied.second); !s.ok()) {
        spdlog::error("[dispatch {}] recording the seek of partition {}: {}", config_.name,
                      partition(), std::string(s.message()));
      }
    }
    for (v1::Event& event : retried) AdmitRedelivery(std::move(event));
  }

  // The plugin's process is about to be restarted: the stream goes (acks still coming on it are
  // ignored) and the deliveries not answered on it wait to be sent again once the hold ends. They
  // are not failures of the plugin: no attempt is counted against retry.max_attempts and no
  // backoff is waited (their next delivery says attempt + 1, as any redelivery).
  // Drops the stream; its unanswered deliveries wait to be sent again (not failures). How many.
  uint64_t AbandonStream() {
    uint64_t unanswered = 0;
    stream_.reset();
    std::vector<uint64_t> in_flight;
    for (auto& [sequence, pending] : window_) {
      if (pending.state == State::kInFlight) in_flight.push_back(sequence);
    }
    for (uint64_t sequence : in_flight) {
      LeaveFlight(window_.at(sequence), sequence);
      MakeReady(sequence);
      ++unanswered;
    }
    return unanswered;
  }

  void ReleaseStreamForRestart(uint64_t seq) {
    uint64_t unanswered = 0;
    if (stream_) {
      unanswered = AbandonStream();
      spdlog::info(
          "[dispatch {}] delivery stream released for a restart of the plugin; {} "
          "unanswered delivery(ies) will be sent again",
          config_.name, unanswered);
    }
    reconnect_at_ = absl::InfinitePast();
    reconnect_delay_ = absl::ZeroDuration();
    PublishStats();  // what the caller reads next: nothing in flight
    absl::MutexLock lock(&mu_);
    detached_seq_done_ = seq;
    detached_unanswered_ = unanswered;
  }

  void SetError(ErrorKind kind, std::string text) {
    error_kind_ = kind;
    stats_.last_error = std::move(text);
  }

  // The condition behind an error is over: the error goes (only if it is still the latest).
  void ClearError(ErrorKind kind) {
    if (error_kind_ != kind) return;
    error_kind_ = ErrorKind::kNone;
    stats_.last_error.clear();
  }

  void PublishStats() {
    stats_.in_flight = in_flight_;
    stats_.stream_open = stream_ != nullptr;
    if (hold_view_ != 0) {
      stats_.state = "restarting";
    } else if (paused_view_) {
      stats_.state = "paused";
    } else if (window_.empty()) {
      // Nothing to deliver, whether or not a stream is open: a broken or unreachable stream is
      // no delivery problem until there is something to send.
      stats_.state = "idle";
      ClearError(ErrorKind::kConnect);
      ClearError(ErrorKind::kStream);
    } else if (stream_) {
      stats_.state = "streaming";
    } else {
      stats_.state = "connecting";
    }
    absl::MutexLock lock(&mu_);
    shared_stats_ = stats_;
    published_hold_seq_ = hold_view_;
  }

  const PluginConfig config_;
  const std::optional<Slot> slot_;
  const std::string cursor_key_;  // the plugin's name, or its partition's cursor key
  EventLog* const log_;
  DeadLetters* const letters_;  // deletes the letters of acknowledged redeliveries
  AddressResolver resolve_;
  const DispatcherOptions options_;
  HydrationService* const hydrator_;  // null: the plugin does not hydrate
  const EventFilter filter_;

  // Inbox, shared with the stream threads and the API.
  mutable absl::Mutex mu_;
  std::vector<std::pair<uint64_t, Ack>> acks_ ABSL_GUARDED_BY(mu_);
  std::vector<std::pair<uint64_t, std::string>> closed_ ABSL_GUARDED_BY(mu_);
  std::optional<uint64_t> seek_to_ ABSL_GUARDED_BY(mu_);
  std::pair<std::string, std::string> seek_applied_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::Event> redeliver_ ABSL_GUARDED_BY(mu_);
  std::vector<HydrationOutcome> hydrated_ ABSL_GUARDED_BY(mu_);
  bool new_events_ ABSL_GUARDED_BY(mu_) = false;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  bool paused_ ABSL_GUARDED_BY(mu_) = false;
  // A restart's hold (HoldAndDrain .. EndHold): each hold has its own number, so that the
  // scheduler's answers (published_hold_seq_, detached_seq_done_) cannot be taken for those of
  // an earlier hold.
  bool hold_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t hold_seq_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t published_hold_seq_ ABSL_GUARDED_BY(mu_) = 0;  // stats published under this hold
  uint64_t detach_seq_ ABSL_GUARDED_BY(mu_) = 0;          // release the stream for this hold
  uint64_t detached_seq_done_ ABSL_GUARDED_BY(mu_) = 0;   // released for this hold
  uint64_t detached_unanswered_ ABSL_GUARDED_BY(mu_) = 0;
  bool control_changed_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  PluginDispatchStats shared_stats_ ABSL_GUARDED_BY(mu_);

  // Serializes SetPaused: the saved state and the applied one never disagree.
  absl::Mutex control_mu_;

  // Scheduler-thread state.
  ErrorKind error_kind_ = ErrorKind::kNone;  // what stats_.last_error is about
  uint64_t hold_view_ = 0;
  std::mt19937_64 rng_;
  std::uniform_real_distribution<double> unit_{0.0, 1.0};
  PluginDispatchStats stats_;
  bool paused_view_ = false;
  uint64_t cursor_ = 0;
  uint64_t persisted_cursor_ = 0;
  uint64_t next_read_ = 1;
  // The last stored event that did not read back (FillWindow), read again at damaged_reread_at_.
  uint64_t damaged_at_ = 0;
  absl::Time damaged_reread_at_ = absl::InfinitePast();
  // The stored handed-out mark of cursor_key_ (LogBackend::WriteHandedOut): nothing past it is
  // sent before Reserve moved it. A failed write is tried again at next_reserve_at_.
  uint64_t handed_out_ = 0;
  absl::Time next_reserve_at_ = absl::InfinitePast();
  std::string logged_mark_error_;  // the last mark write error logged ("" once it works)
  absl::Time mark_error_logged_at_ = absl::InfinitePast();
  // Events read from the log with a sequence <= this may have reached the plugin before this
  // dispatcher started (the mark found at start; 0 after an operator's seek): their deliveries
  // carry attempt >= 2.
  uint64_t may_have_reached_ = 0;
  // Retried dead letters whose retry resumed at start (may have reached the plugin before).
  absl::flat_hash_set<uint64_t> resumed_retries_;
  Window window_;
  // Per resource key (Pending::resource_key): the last pending event of its chain (the first is
  // the one in flight, ready or waiting for its retry).
  absl::flat_hash_map<uint64_t, uint64_t> resources_;
  // B-trees rather than std::set: inserted and erased for every event, kept cache-friendly.
  absl::btree_set<uint64_t> ready_;          // resource heads waiting to be sent, oldest first
  absl::btree_set<uint64_t> hydrate_queue_;  // resource heads waiting for a fetch, oldest first
  std::map<uint64_t, std::size_t> hydration_batches_;  // batch in progress -> answers awaited
  uint64_t last_hydration_batch_ = 0;
  std::size_t hydrating_ = 0;        // events in kFetching
  std::size_t hydrated_unsent_ = 0;  // fetched, not sent since
  absl::btree_set<std::pair<absl::Time, uint64_t>> retry_timers_;
  absl::btree_set<std::pair<absl::Time, uint64_t>> ack_deadlines_;
  uint32_t in_flight_ = 0;
  std::vector<v1::DeadLetter> dead_letters_;  // not yet persisted
  std::vector<uint64_t> resolved_letters_;    // retried dead letters now delivered
  absl::Time next_progress_at_ = absl::InfinitePast();
  // The last "saving progress" error logged, and when ("" once a write succeeded again).
  static constexpr absl::Duration kProgressErrorLogInterval = absl::Seconds(10);
  std::string logged_progress_error_;
  absl::Time progress_error_logged_at_ = absl::InfinitePast();
  absl::Time reconnect_at_ = absl::InfinitePast();
  absl::Duration reconnect_delay_ = absl::ZeroDuration();
  uint64_t generation_ = 0;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<DeliveryStream> stream_;
  std::shared_ptr<Hook> hook_;
  std::thread thread_;
};

// Cluster dispatch: which (plugin, partition) this node delivers, through leases in a key-value
// bucket (LeaseStore), and one PluginDispatcher per partition it holds. One thread manages the
// leases every lease_ttl / 4 (renew, give up, balance, acquire, follow pause, seek and dead
// letter retries of the other nodes); another catches up with the other nodes' events.
//
// Lease records: "lease.<plugin>.<partition>" = the holder's node id ("" once released), and
// "node.<node id>" = the node id, rewritten every round: the live nodes, for the fair share.
class Dispatcher::Cluster {
 public:
  Cluster(std::vector<PluginConfig> plugins, std::vector<HydrationService*> hydrators,
          EventLog* log, DeadLetters* letters, AddressResolver resolve, DispatcherOptions options)
      : plugins_(std::move(plugins)),
        hydrators_(std::move(hydrators)),
        log_(log),
        letters_(letters),
        resolve_(std::move(resolve)),
        options_(std::move(options)),
        cluster_(*options_.cluster),
        tick_(cluster_.lease_ttl / 4) {}

  ~Cluster() { Stop(); }

  const ClusterDispatchOptions& options() const { return cluster_; }

  absl::Status Start() {
    for (std::size_t i = 0; i < plugins_.size(); ++i) {
      absl::StatusOr<std::optional<std::string>> retry = log_->GetMeta(RetryKey(i));
      if (!retry.ok()) return retry.status();
      absl::MutexLock lock(&mu_);
      seen_retry_.push_back(retry->value_or(""));
    }
    // The log outlives nothing we own: the hook is detached in Stop() before we go away.
    hook_->target = this;
    log_->AddAppendListener([hook = hook_](uint64_t) {
      absl::MutexLock lock(&hook->mu);
      if (hook->target != nullptr) hook->target->WakeAll();
    });
    spdlog::info(
        "[cluster] node {}: {} partition(s) per plugin, lease TTL {}; leases in the bucket "
        "shared with the other nodes",
        cluster_.node_id, cluster_.partitions, absl::FormatDuration(cluster_.lease_ttl));
    manager_ = std::thread([this] { Manage(); });
    return absl::OkStatus();
  }

  // Releases every lease after its partition stopped (its cursor saved): the other nodes take
  // them over at once instead of after the TTL.
  void Stop() {
    {
      absl::MutexLock lock(&hook_->mu);
      hook_->target = nullptr;
    }
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
      stopping_ = true;
    }
    if (manager_.joinable()) manager_.join();
    std::map<Key, Held> held;
    {
      absl::MutexLock lock(&mu_);
      held.swap(held_);
      for (auto& [key, lease] : held) retiring_.push_back(lease.dispatcher);
    }
    // Every partition drains at once (each within Drain's bound), then each is released.
    std::vector<std::thread> drains;
    for (auto& [key, lease] : held) {
      drains.emplace_back([this, key = key, d = lease.dispatcher] { Drain(key, *d); });
    }
    for (std::thread& t : drains) t.join();
    for (auto& [key, lease] : held) Release(key, lease, "pimgate stops");
    std::map<std::string, Job> jobs;
    {
      absl::MutexLock lock(&mu_);
      jobs.swap(jobs_);
    }
    for (auto& [name, job] : jobs) {
      if (job.fence == nullptr || !cluster_.leases->Health().ok()) continue;
      job.fence->Revoke();
      cluster_.leases->Update(absl::StrCat("job.", name), "", job.revision).IgnoreError();
    }
  }

  // Instances of `plugin` (all when empty) this node runs now.
  std::vector<std::shared_ptr<PluginDispatcher>> Local(const std::string& plugin) const {
    absl::MutexLock lock(&mu_);
    std::vector<std::shared_ptr<PluginDispatcher>> out;
    for (const auto& [key, lease] : held_) {
      if (plugin.empty() || plugins_[key.first].name == plugin) out.push_back(lease.dispatcher);
    }
    return out;
  }

  // What a plugin's counters sum, taken in one critical section: the partitions held or still
  // stopping here, and the final counters of those stopped.
  struct CounterSources {
    std::vector<std::shared_ptr<PluginDispatcher>> held;
    std::vector<std::shared_ptr<PluginDispatcher>> retiring;
    PluginDispatchStats retired;
  };
  CounterSources Counters(const std::string& plugin) const {
    absl::MutexLock lock(&mu_);
    CounterSources out;
    for (const auto& [key, lease] : held_) {
      if (plugins_[key.first].name == plugin) out.held.push_back(lease.dispatcher);
    }
    for (const auto& d : retiring_) {
      if (d->name() == plugin) out.retiring.push_back(d);
    }
    if (auto it = retired_.find(plugin); it != retired_.end()) out.retired = it->second;
    return out;
  }

  bool HoldsJob(const std::string& job) const {
    absl::MutexLock lock(&mu_);
    auto it = jobs_.find(job);
    return it != jobs_.end() && it->second.fence != nullptr && it->second.fence->Valid();
  }

  LeaseStats Leases() const {
    absl::MutexLock lock(&mu_);
    LeaseStats stats = counters_;
    stats.held = held_.size();
    return stats;
  }

  absl::StatusOr<std::vector<PartitionOwner>> Owners() const {
    absl::StatusOr<std::vector<LeaseRecord>> records = cluster_.leases->List("lease.");
    if (!records.ok()) return records.status();
    std::vector<PartitionOwner> owners;
    for (const LeaseRecord& record : *records) {
      const std::size_t dot = record.key.rfind('.');
      int partition = 0;
      if (dot == std::string::npos || dot <= 6 ||
          !absl::SimpleAtoi(record.key.substr(dot + 1), &partition)) {
        continue;
      }
      owners.push_back({record.key.substr(6, dot - 6), partition, record.value});
    }
    std::sort(owners.begin(), owners.end(), [](const PartitionOwner& a, const PartitionOwner& b) {
      return std::tie(a.plugin, a.partition) < std::tie(b.plugin, b.partition);
    });
    return owners;
  }

  // Cluster-wide: saved once, applied here now and by the other nodes within one round.
  absl::Status SetPaused(const std::string& plugin, bool paused) {
    if (absl::Status status = log_->PutMeta(PausedKey(plugin), paused ? "true" : "false");
        !status.ok()) {
      return absl::Status(status.code(), absl::StrCat("saving the pause state of plugin ", plugin,
                                                      ": ", status.message()));
    }
    for (const auto& d : Local(plugin)) d->SetPaused(paused, /*save=*/false).IgnoreError();
    return absl::OkStatus();
  }

  // Cluster-wide: the seek is saved with a token; every holder of a partition applies it once
  // (now here, within one round elsewhere, or when a node takes a partition over) and records
  // the token beside the partition once its cursor is saved.
  absl::Status Seek(const std::string& plugin, uint64_t sequence) {
    const std::string token =
        absl::StrCat(cluster_.node_id, "-", absl::ToUnixNanos(absl::Now()), " ", sequence);
    if (absl::Status s = log_->PutMeta(SeekKey(plugin), token); !s.ok()) {
      return absl::Status(s.code(),
                          absl::StrCat("saving the seek of plugin ", plugin, ": ", s.message()));
    }
    ApplySeek(plugin, token);
    return absl::OkStatus();
  }

  // Retried dead letters go to the local holders of their partitions; the holders elsewhere
  // hear of the others through a token and read the marked letters (DeadLetters::Retrying).
  absl::Status Redeliver(const std::string& plugin, std::vector<v1::Event> events) {
    std::map<int, std::vector<v1::Event>> by_partition;
    for (v1::Event& event : events) {
      by_partition[PartitionOf(event, cluster_.partitions)].push_back(std::move(event));
    }
    bool elsewhere = false;
    std::vector<std::shared_ptr<PluginDispatcher>> local = Local(plugin);
    for (auto& [partition, list] : by_partition) {
      auto it = std::find_if(local.begin(), local.end(),
                             [p = partition](const auto& d) { return d->partition() == p; });
      if (it == local.end()) {
        elsewhere = true;
      } else {
        (*it)->RequestRedelivery(std::move(list));
      }
    }
    spdlog::info("[cluster] retry of {} dead letter(s) of {}: {}", events.size(), plugin,
                 elsewhere ? "some for partitions other nodes hold" : "all held here");
    if (!elsewhere) return absl::OkStatus();
    const std::size_t index = PluginIndex(plugin);
    const std::string token = absl::StrCat(cluster_.node_id, "-", absl::ToUnixNanos(absl::Now()));
    if (absl::Status s = log_->PutMeta(RetryKey(index), token); !s.ok()) return s;
    absl::MutexLock lock(&mu_);
    seen_retry_[index] = token;  // this node handed its own partitions' letters over already
    return absl::OkStatus();
  }

 private:
  using Key = std::pair<std::size_t, int>;  // (plugin index, partition)
  struct Held {
    uint64_t revision = 0;
    std::shared_ptr<LeaseFence> fence;
    std::shared_ptr<PluginDispatcher> dispatcher;
    std::string seek_token;  // the last cluster-wide seek this partition applied
  };
  // A cluster-wide job's lease ("job.<name>"); fence null while another node holds it.
  struct Job {
    uint64_t revision = 0;
    std::shared_ptr<LeaseFence> fence;
  };
  static constexpr const char* kJobs[] = {"retention", "reconcile", "platform"};

  static std::string SeekKey(const std::string& plugin) {
    return absl::StrCat("dispatch/", plugin, "/seek");
  }
  std::string SeekAppliedKey(const std::string& plugin, int partition) const {
    return absl::StrCat("dispatch/", PartitionCursorKey(plugin, partition, cluster_.partitions),
                        "/seek-applied");
  }
  std::string RetryKey(std::size_t plugin) const {
    return absl::StrCat("dispatch/", plugins_[plugin].name, "/retry");
  }
  std::string LeaseKey(const Key& key) const {
    return absl::StrCat("lease.", plugins_[key.first].name, ".", key.second);
  }
  std::size_t PluginIndex(const std::string& plugin) const {
    for (std::size_t i = 0; i < plugins_.size(); ++i) {
      if (plugins_[i].name == plugin) return i;
    }
    return 0;
  }
  bool stopping() const {
    absl::MutexLock lock(&mu_);
    return stopping_;
  }

  void WakeAll() {
    absl::MutexLock lock(&mu_);
    for (auto& [key, lease] : held_) lease.dispatcher->Wake();
  }

  // Sleeps up to `d`; false once stopping.
  bool Sleep(absl::Duration d) {
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(&stopping_), d);
    return !stopping_;
  }

  void Manage() {
    while (!stopping()) {
      Round();
      if (!Sleep(tick_)) break;
    }
  }

  // One round: presence, renewals, losses, balance, acquisitions, cluster-wide controls.
  void Round() {
    if (!cluster_.leases->Health().ok()) {
      // No connection: every call would wait for its timeout. The leases' deadlines pass on
      // their own (the partitions stop delivering); losses are counted once NATS is back.
      DropExpired("NATS unreachable");
      return;
    }
    // Renewals first: their deadlines are what matters. When one went unanswered (the bucket's
    // stream electing a leader, say: every write waits for its timeout then), the other writes
    // of this round would wait as long for nothing; the next round comes a tick later.
    if (!Renew()) {
      DropExpired("the lease bucket does not answer renewals");
      return;
    }
    const std::string presence = absl::StrCat("node.", cluster_.node_id);
    absl::StatusOr<uint64_t> rev =
        presence_revision_ != 0
            ? cluster_.leases->Update(presence, cluster_.node_id, presence_revision_)
            : cluster_.leases->Create(presence, cluster_.node_id);
    if (!rev.ok() &&
        (absl::IsFailedPrecondition(rev.status()) || absl::IsAlreadyExists(rev.status()))) {
      // Refused: an earlier write that seemed to fail may have been stored, or the record
      // expired. Rewritten from what the bucket holds.
      absl::StatusOr<std::optional<LeaseRecord>> record = cluster_.leases->Get(presence);
      if (record.ok()) {
        rev = record->has_value()
                  ? cluster_.leases->Update(presence, cluster_.node_id, (*record)->revision)
                  : cluster_.leases->Create(presence, cluster_.node_id);
      }
    }
    presence_revision_ = rev.ok() ? *rev : 0;

    RunJobs();

    absl::StatusOr<std::vector<LeaseRecord>> nodes = cluster_.leases->List("node.");
    absl::StatusOr<std::vector<LeaseRecord>> leases = cluster_.leases->List("lease.");
    if (!nodes.ok() || !leases.ok()) {
      const absl::Status& s = !nodes.ok() ? nodes.status() : leases.status();
      spdlog::warn("[cluster] reading the lease bucket: {}", std::string(s.message()));
      return;
    }
    // Acquisitions (each starts a partition: cursor, pause state, letters) stop for this round
    // once it took TTL / 8, so that the next renewals keep their pace on a slow machine.
    const absl::Time acquire_until = absl::Now() + cluster_.lease_ttl / 8;
    const std::size_t live = std::max<std::size_t>(1, nodes->size());
    const int fair = static_cast<int>((cluster_.partitions + live - 1) / live);
    std::map<std::string, std::string> holder;  // lease key -> node ("" released)
    for (const LeaseRecord& record : *leases) holder[record.key] = record.value;

    for (std::size_t plugin = 0; plugin < plugins_.size() && !stopping(); ++plugin) {
      std::vector<int> mine;
      {
        absl::MutexLock lock(&mu_);
        for (const auto& [key, lease] : held_) {
          if (key.first == plugin) mine.push_back(key.second);
        }
      }
      // Over the fair share: give one partition back per round (its cursor saved first), so
      // that a node that joined finds it free.
      if (static_cast<int>(mine.size()) > fair) {
        Key key{plugin, mine.back()};
        Held lease;
        {
          absl::MutexLock lock(&mu_);
          auto it = held_.find(key);
          lease = std::move(it->second);
          held_.erase(it);
          retiring_.push_back(lease.dispatcher);
        }
        Drain(key, *lease.dispatcher);
        Release(key, lease, absl::StrCat("balance: ", live, " node(s), fair share ", fair));
        continue;
      }
      int want = fair - static_cast<int>(mine.size());
      for (int partition = 0; partition < cluster_.partitions && !stopping(); ++partition) {
        if (std::find(mine.begin(), mine.end(), partition) != mine.end()) continue;
        const Key key{plugin, partition};
        const std::string lease_key = LeaseKey(key);
        auto it = holder.find(lease_key);
        const bool free = it == holder.end() || it->second.empty();
        // A partition free in two rounds in a row is taken whatever the share (a node count
        // that still includes a dead node's presence must not leave partitions undelivered).
        const bool orphan = free && free_last_round_.contains(lease_key);
        if (free) {
          free_now_.insert(lease_key);
        }
        if (!free || (want <= 0 && !orphan) || absl::Now() > acquire_until) continue;
        if (Acquire(key, it == holder.end() ? std::nullopt : std::optional<std::string>(""))) {
          --want;
        }
      }
    }
    free_last_round_.swap(free_now_);
    free_now_.clear();

    FollowControls();
  }

  // The partitions whose local deadline passed, stopped without asking the lease store.
  void DropExpired(const char* why) {
    std::vector<std::shared_ptr<PluginDispatcher>> stopped;
    {
      absl::MutexLock lock(&mu_);
      for (auto it = held_.begin(); it != held_.end();) {
        if (it->second.fence->Valid()) {
          ++it;
          continue;
        }
        it->second.fence->Revoke();
        retiring_.push_back(it->second.dispatcher);
        stopped.push_back(std::move(it->second.dispatcher));
        spdlog::warn("[cluster] lost the lease of {} ({})", LeaseKey(it->first), why);
        it = held_.erase(it);
        ++counters_.lost;
      }
      for (auto& [name, job] : jobs_) {
        if (job.fence != nullptr && !job.fence->Valid()) job = Job{};
      }
    }
    for (const auto& d : stopped) {
      d->Stop();
      Retired(d);
    }
  }

  // `d`, stopped, leaves retiring_: its final counters join the plugin's retired ones.
  void Retired(const std::shared_ptr<PluginDispatcher>& d) {
    const PluginDispatchStats s = d->Stats();
    absl::MutexLock lock(&mu_);
    auto it = std::find(retiring_.begin(), retiring_.end(), d);
    if (it == retiring_.end()) return;
    retiring_.erase(it);
    AddCounters(retired_[d->name()], s);
  }

  // Renews every lease this node holds; false when the bucket left a renewal unanswered (the
  // remaining ones are not tried this round: their deadlines pass on their own).
  bool Renew() {
    std::vector<Key> keys;
    {
      absl::MutexLock lock(&mu_);
      for (const auto& [key, lease] : held_) keys.push_back(key);
    }
    for (const Key& key : keys) {
      if (stopping()) return true;
      uint64_t revision = 0;
      std::shared_ptr<LeaseFence> fence;
      {
        absl::MutexLock lock(&mu_);
        auto it = held_.find(key);
        if (it == held_.end()) continue;
        revision = it->second.revision;
        fence = it->second.fence;
      }
      const std::string lease_key = LeaseKey(key);
      const SteadyClock::time_point sent = SteadyClock::now();
      absl::StatusOr<uint64_t> next =
          cluster_.leases->Update(lease_key, cluster_.node_id, revision);
      bool lost = false;
      const bool unanswered = !next.ok() && !absl::IsFailedPrecondition(next.status());
      if (next.ok()) {
        fence->ExtendTo(sent + absl::ToChronoNanoseconds(cluster_.lease_ttl * 3 / 4));
        revision = *next;
      } else if (absl::IsFailedPrecondition(next.status())) {
        // Refused: an earlier renewal that seemed to fail may have been stored (ours still, at
        // a newer revision: adopted, without moving the deadline), or the lease expired.
        absl::StatusOr<std::optional<LeaseRecord>> record = cluster_.leases->Get(lease_key);
        if (record.ok() && record->has_value() && (*record)->value == cluster_.node_id) {
          revision = (*record)->revision;
        } else if (record.ok()) {
          lost = true;
        }
      }
      if (!fence->Valid()) lost = true;
      if (lost) {
        fence->Revoke();
        std::shared_ptr<PluginDispatcher> dispatcher;
        {
          absl::MutexLock lock(&mu_);
          auto it = held_.find(key);
          dispatcher = std::move(it->second.dispatcher);
          held_.erase(it);
          retiring_.push_back(dispatcher);
          ++counters_.lost;
        }
        spdlog::warn(
            "[cluster] lost the lease of {} (renewals failed: {}); its events wait for "
            "the node that takes it",
            lease_key, next.ok() ? "deadline passed" : std::string(next.status().message()));
        dispatcher->Stop();
        Retired(dispatcher);
        if (unanswered) return false;
        continue;
      }
      {
        absl::MutexLock lock(&mu_);
        auto it = held_.find(key);
        if (it != held_.end()) it->second.revision = revision;
      }
      if (unanswered) {
        spdlog::warn("[cluster] renewing {}: {}; the other renewals wait for the next round",
                     lease_key, std::string(next.status().message()));
        return false;
      }
    }
    return true;
  }

  // Renews the job leases this node holds and takes the free ones (no balance: a job is light).
  void RunJobs() {
    for (const char* name : kJobs) {
      const std::string key = absl::StrCat("job.", name);
      Job job;
      {
        absl::MutexLock lock(&mu_);
        job = jobs_[name];
      }
      const SteadyClock::time_point sent = SteadyClock::now();
      const auto deadline = sent + absl::ToChronoNanoseconds(cluster_.lease_ttl * 3 / 4);
      if (job.fence != nullptr) {
        absl::StatusOr<uint64_t> next =
            cluster_.leases->Update(key, cluster_.node_id, job.revision);
        if (next.ok()) {
          job.fence->ExtendTo(deadline);
          job.revision = *next;
        } else if (absl::IsFailedPrecondition(next.status())) {
          absl::StatusOr<std::optional<LeaseRecord>> record = cluster_.leases->Get(key);
          if (record.ok() && record->has_value() && (*record)->value == cluster_.node_id) {
            job.revision = (*record)->revision;
          } else if (record.ok()) {
            job.fence->Revoke();
          }
        }
        if (!job.fence->Valid()) {
          spdlog::warn("[cluster] node {} lost the {} job", cluster_.node_id, name);
          job = Job{};
        }
      } else {
        absl::StatusOr<std::optional<LeaseRecord>> record = cluster_.leases->Get(key);
        absl::StatusOr<uint64_t> revision = absl::UnavailableError("not tried");
        if (record.ok() && !record->has_value()) {
          revision = cluster_.leases->Create(key, cluster_.node_id);
        } else if (record.ok() && (*record)->value.empty()) {
          revision = cluster_.leases->Update(key, cluster_.node_id, (*record)->revision);
        }
        if (revision.ok()) {
          job.fence = std::make_shared<LeaseFence>();
          job.fence->ExtendTo(deadline);
          job.revision = *revision;
          spdlog::info("[cluster] node {} runs the {} job", cluster_.node_id, name);
        }
      }
      absl::MutexLock lock(&mu_);
      jobs_[name] = job;
    }
  }

  // Takes a free partition: `released` nullopt when its key is absent, "" when released.
  bool Acquire(const Key& key, const std::optional<std::string>& released) {
    const std::string lease_key = LeaseKey(key);
    const SteadyClock::time_point sent = SteadyClock::now();
    absl::StatusOr<uint64_t> revision;
    if (!released.has_value()) {
      revision = cluster_.leases->Create(lease_key, cluster_.node_id);
    } else {
      absl::StatusOr<std::optional<LeaseRecord>> record = cluster_.leases->Get(lease_key);
      if (!record.ok()) return false;
      if (!record->has_value()) {
        revision = cluster_.leases->Create(lease_key, cluster_.node_id);
      } else if (!(*record)->value.empty()) {
        return false;
      } else {
        revision = cluster_.leases->Update(lease_key, cluster_.node_id, (*record)->revision);
      }
    }
    if (!revision.ok()) return false;  // another node was first (or no answer: not ours)
    auto fence = std::make_shared<LeaseFence>();
    fence->ExtendTo(sent + absl::ToChronoNanoseconds(cluster_.lease_ttl * 3 / 4));
    const PluginConfig& plugin = plugins_[key.first];
    auto dispatcher = std::make_shared<PluginDispatcher>(
        plugin, log_, letters_, resolve_, options_, hydrators_[key.first],
        PluginDispatcher::Slot{key.second, cluster_.partitions, fence});
    // A seek made while no node held the partition, or not applied by its last holder.
    // As applied here (GetAppliedMeta): answered while the stream elects a leader; a seek made
    // elsewhere a moment ago is applied by the next round (FollowControls).
    absl::StatusOr<std::optional<std::string>> seek = log_->GetAppliedMeta(SeekKey(plugin.name));
    absl::StatusOr<std::optional<std::string>> applied =
        log_->GetAppliedMeta(SeekAppliedKey(plugin.name, key.second));
    absl::Status status = dispatcher->Start(/*listen=*/false);
    if (status.ok() && (!seek.ok() || !applied.ok())) {
      status = !seek.ok() ? seek.status() : applied.status();
    }
    if (!status.ok()) {
      spdlog::error("[cluster] starting {} after taking its lease: {}; released", lease_key,
                    std::string(status.message()));
      dispatcher->Stop();
      cluster_.leases->Update(lease_key, "", *revision).IgnoreError();
      return false;
    }
    {
      absl::MutexLock lock(&mu_);
      held_[key] = Held{*revision, fence, dispatcher, applied->value_or("")};
      ++counters_.acquired;
    }
    spdlog::info("[cluster] node {} took {} (revision {})", cluster_.node_id, lease_key, *revision);
    // Not applied as far as this replica knows: ApplySeek asks the stream whether the last
    // holder applied it.
    if (seek->has_value() && **seek != applied->value_or("")) ApplySeek(plugin.name, **seek);
    return true;
  }

  // Before a partition is given back: nothing new is sent, and the deliveries in flight get up
  // to min(ack_timeout, lease_ttl / 4) to be answered (so that the plugin of the next holder
  // does not get a resource's next event while this node's plugin still works on the one
  // before). Bounded so that the renewals of the other leases keep their pace.
  void Drain(const Key& key, PluginDispatcher& dispatcher) {
    const absl::Duration timeout =
        std::min(absl::FromChrono(plugins_[key.first].ack_timeout), cluster_.lease_ttl / 4);
    absl::StatusOr<DrainResult> drained = dispatcher.HoldAndDrain(timeout);
    if (drained.ok() && drained->unanswered > 0) {
      spdlog::info(
          "[cluster] {}: {} delivery(ies) unanswered after {}; abandoned (the next "
          "holder delivers them again)",
          LeaseKey(key), drained->unanswered, absl::FormatDuration(timeout));
    }
  }

  // Stops the partition (what is still in flight abandoned, cursor saved while the lease holds)
  // and gives the lease back.
  void Release(const Key& key, Held& lease, const std::string& why) {
    lease.dispatcher->Stop();
    Retired(lease.dispatcher);
    lease.fence->Revoke();
    const std::string lease_key = LeaseKey(key);
    absl::Status s = cluster_.leases->Health();
    if (s.ok()) s = cluster_.leases->Update(lease_key, "", lease.revision).status();
    {
      absl::MutexLock lock(&mu_);
      ++counters_.released;
    }
    if (s.ok()) {
      spdlog::info("[cluster] node {} released {} ({})", cluster_.node_id, lease_key, why);
    } else {
      spdlog::warn("[cluster] node {} could not release {} ({}): it expires after the TTL",
                   cluster_.node_id, lease_key, std::string(s.message()));
    }
  }

  void RequestSeek(PluginDispatcher& dispatcher, const std::string& plugin,
                   const std::string& token) {
    uint64_t sequence = 0;
    const std::size_t space = token.rfind(' ');
    if (space == std::string::npos || !absl::SimpleAtoi(token.substr(space + 1), &sequence)) {
      spdlog::error("[cluster] unreadable seek record of plugin {}: {}", plugin, token);
      return;
    }
    dispatcher.RequestSeek(sequence, SeekAppliedKey(plugin, dispatcher.partition()), token);
  }

  // Each local partition of `plugin` that has not applied `token` yet applies it.
  // Whether a partition's last holder recorded the seek `token` as applied, asked of the stream
  // (GetMeta), not of this node's replica: after a takeover the replica may not have the last
  // holder's record yet, and applying the seek again would replay what it already replayed.
  // Claimed under mu_ first (the admin thread and the manager both call this); not answered (the
  // stream electing its leader): handed back, asked again by the next round.
  void ApplySeek(const std::string& plugin, const std::string& token) {
    struct Claim {
      Key key;
      std::shared_ptr<PluginDispatcher> dispatcher;
      std::string previous;
    };
    std::vector<Claim> claims;
    {
      absl::MutexLock lock(&mu_);
      for (auto& [key, lease] : held_) {
        if (plugins_[key.first].name != plugin || lease.seek_token == token) continue;
        claims.push_back(Claim{key, lease.dispatcher, lease.seek_token});
        lease.seek_token = token;
      }
    }
    for (const Claim& claim : claims) {
      absl::StatusOr<std::optional<std::string>> applied =
          log_->GetMeta(SeekAppliedKey(plugin, claim.key.second));
      if (!applied.ok()) {
        absl::MutexLock lock(&mu_);
        auto it = held_.find(claim.key);
        if (it != held_.end() && it->second.dispatcher == claim.dispatcher &&
            it->second.seek_token == token) {
          it->second.seek_token = claim.previous;
        }
        continue;
      }
      if (applied->value_or("") == token) continue;  // its last holder applied it
      RequestSeek(*claim.dispatcher, plugin, token);
    }
  }

  // What operators did on other nodes: pause or resume, seek, dead letter retries.
  void FollowControls() {
    for (std::size_t i = 0; i < plugins_.size(); ++i) {
      const std::string& plugin = plugins_[i].name;
      std::vector<std::shared_ptr<PluginDispatcher>> local = Local(plugin);
      if (local.empty()) continue;
      // As applied here: the round never waits for the stream's leader (GetAppliedMeta).
      absl::StatusOr<std::optional<std::string>> paused = log_->GetAppliedMeta(PausedKey(plugin));
      if (paused.ok()) {
        const bool is_paused = paused->has_value() && **paused == "true";
        for (const auto& d : local) d->SetPaused(is_paused, /*save=*/false).IgnoreError();
      }
      absl::StatusOr<std::optional<std::string>> seek = log_->GetAppliedMeta(SeekKey(plugin));
      if (seek.ok() && seek->has_value()) ApplySeek(plugin, **seek);
      absl::StatusOr<std::optional<std::string>> retry = log_->GetAppliedMeta(RetryKey(i));
      bool retried_elsewhere = false;
      if (retry.ok()) {
        absl::MutexLock lock(&mu_);
        retried_elsewhere = retry->value_or("") != seen_retry_[i];
        seen_retry_[i] = retry->value_or("");
      }
      if (retried_elsewhere) {
        absl::StatusOr<std::vector<v1::Event>> events = letters_->Retrying(plugin);
        spdlog::info("[cluster] dead letters of {} retried on another node: {}", plugin,
                     events.ok() ? absl::StrCat(events->size(), " being retried")
                                 : std::string(events.status().message()));
        if (events.ok()) {
          for (const auto& d : local) {
            std::vector<v1::Event> mine;
            for (const v1::Event& event : *events) {
              if (PartitionOf(event, cluster_.partitions) == d->partition()) mine.push_back(event);
            }
            if (!mine.empty()) d->RequestRedelivery(std::move(mine));
          }
        }
      }
    }
  }

  const std::vector<PluginConfig> plugins_;
  const std::vector<HydrationService*> hydrators_;  // per plugin, null: no hydration
  EventLog* const log_;
  DeadLetters* const letters_;
  const AddressResolver resolve_;
  const DispatcherOptions options_;
  const ClusterDispatchOptions cluster_;
  const absl::Duration tick_;

  mutable absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::map<Key, Held> held_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Job> jobs_ ABSL_GUARDED_BY(mu_);
  // Per plugin: the last dead letter retry token seen (or written) by this node.
  std::vector<std::string> seen_retry_ ABSL_GUARDED_BY(mu_);
  // Detachable link from the log's listener to this object.
  struct Hook {
    absl::Mutex mu;
    Cluster* target ABSL_GUARDED_BY(mu) = nullptr;
  };
  const std::shared_ptr<Hook> hook_ = std::make_shared<Hook>();
  LeaseStats counters_ ABSL_GUARDED_BY(mu_);
  // Partitions that left held_ and are stopping (their counters still move), and the final
  // counters of those stopped, per plugin: a plugin's counters sum all three, so that they never
  // go down when a partition moves to another node (Prometheus counters must not).
  std::vector<std::shared_ptr<PluginDispatcher>> retiring_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, PluginDispatchStats> retired_ ABSL_GUARDED_BY(mu_);

  // Manager thread only.
  uint64_t presence_revision_ = 0;
  std::set<std::string> free_last_round_;
  std::set<std::string> free_now_;

  std::thread manager_;
};

absl::StatusOr<std::unique_ptr<Dispatcher>> Dispatcher::Create(
    const std::vector<PluginConfig>& plugins, EventLog* log, AddressResolver resolve,
    DispatcherOptions options) {
  if (log == nullptr) return absl::InvalidArgumentError("the dispatcher needs the event log");
  if (options.cluster && (options.cluster->leases == nullptr || options.cluster->node_id.empty() ||
                          options.cluster->partitions < 1)) {
    return absl::InvalidArgumentError(
        "cluster dispatch needs a lease store, a node id and at least one partition");
  }
  std::unique_ptr<Dispatcher> dispatcher(new Dispatcher());
  dispatcher->log_ = log;
  std::vector<HydrationService*> hydrators;
  // Retries go through Redeliver; the dispatcher outlives its DeadLetters (it owns them).
  dispatcher->dead_letters_ = std::make_unique<DeadLetters>(
      *log, [d = dispatcher.get()](const std::string& plugin, std::vector<v1::Event> events) {
        return d->Redeliver(plugin, std::move(events));
      });
  for (const PluginConfig& plugin : plugins) {
    if (plugin.max_in_flight == 0) {
      return absl::InvalidArgumentError("plugins." + plugin.name + ".max_in_flight must be > 0");
    }
    if (plugin.hydrate) {
      // Which of the plugin's sources can be hydrated (all sources when it lists none).
      const std::vector<std::string> served =
          options.hydration ? options.hydration->ServedSources() : std::vector<std::string>{};
      std::vector<std::string> with_client, without_client;
      if (plugin.sources.empty()) {
        with_client = served;
      } else {
        for (const std::string& source : plugin.sources) {
          (std::find(served.begin(), served.end(), source) != served.end() ? with_client
                                                                           : without_client)
              .push_back(source);
        }
      }
      if (with_client.empty()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "plugins.", plugin.name,
            ".hydrate is true but none of its sources has a REST client (sources[].rest)"));
      }
      if (!without_client.empty()) {
        spdlog::warn(
            "[dispatch {}] hydrate: events of source(s) {} are delivered without hydration (no "
            "rest configured)",
            plugin.name, absl::StrJoin(without_client, ", "));
      }
      dispatcher->hydrator_ = options.hydration;
      spdlog::info("[dispatch {}] hydrates lightweight events of source(s) {}", plugin.name,
                   absl::StrJoin(with_client, ", "));
    }
    dispatcher->names_.push_back(plugin.name);
    hydrators.push_back(plugin.hydrate ? dispatcher->hydrator_.get() : nullptr);
    if (options.cluster) continue;  // partitions start as their leases are taken
    dispatcher->plugins_.push_back(std::make_unique<PluginDispatcher>(
        plugin, log, dispatcher->dead_letters_.get(), resolve, options,
        plugin.hydrate ? dispatcher->hydrator_.get() : nullptr));
  }
  if (options.cluster) {
    dispatcher->cluster_ =
        std::make_unique<Cluster>(plugins, std::move(hydrators), log,
                                  dispatcher->dead_letters_.get(), resolve, std::move(options));
  }
  return dispatcher;
}

Dispatcher::~Dispatcher() { Stop(); }

absl::Status Dispatcher::Start() {
  if (cluster_) return cluster_->Start();
  for (auto& plugin : plugins_) {
    if (absl::Status status = plugin->Start(); !status.ok()) return status;
  }
  return absl::OkStatus();
}

void Dispatcher::Stop() {
  if (cluster_) cluster_->Stop();
  for (auto& plugin : plugins_) plugin->Stop();
}

namespace {

// The rank of a state when one plugin's partitions are summed up: the busiest one shows.
int StateRank(const std::string& state) {
  static const char* const kOrder[] = {"stopped",    "standby",    "idle",     "paused",
                                       "restarting", "connecting", "streaming"};
  for (int i = 0; i < static_cast<int>(std::size(kOrder)); ++i) {
    if (state == kOrder[i]) return i;
  }
  return 0;
}

}  // namespace

std::vector<PluginDispatchStats> Dispatcher::Stats() const {
  std::vector<PluginDispatchStats> out;
  if (!cluster_) {
    for (const auto& plugin : plugins_) out.push_back(plugin->Stats());
    return out;
  }
  // Under cluster dispatch: the state, cursor, lag, in-flight and last error of the partitions
  // this node holds (the cursor is the lowest of theirs; "standby" with cursor 0 while it holds
  // none); counters since start also count the partitions this node held before, so that they
  // never go down when a partition moves to another node.
  for (const std::string& name : names_) {
    PluginDispatchStats total;
    total.name = name;
    total.state = "standby";
    bool first = true;
    const Cluster::CounterSources sources = cluster_->Counters(name);
    AddCounters(total, sources.retired);
    for (const auto& d : sources.retiring) AddCounters(total, d->Stats());
    for (const auto& d : sources.held) {
      const PluginDispatchStats s = d->Stats();
      if (StateRank(s.state) > StateRank(total.state)) total.state = s.state;
      total.cursor = first ? s.cursor : std::min(total.cursor, s.cursor);
      first = false;
      total.in_flight += s.in_flight;
      AddCounters(total, s);
      total.stream_open = total.stream_open || s.stream_open;
      if (total.last_error.empty()) total.last_error = s.last_error;
      total.hydrating += s.hydrating;
    }
    const uint64_t head = log_->head();
    total.lag = first ? 0 : (head > total.cursor ? head - total.cursor : 0);
    out.push_back(std::move(total));
  }
  return out;
}

absl::StatusOr<std::vector<PartitionOwner>> Dispatcher::Owners() const {
  if (!cluster_) return std::vector<PartitionOwner>{};
  return cluster_->Owners();
}

std::optional<std::string> Dispatcher::NodeId() const {
  if (!cluster_) return std::nullopt;
  return cluster_->options().node_id;
}

LeaseStats Dispatcher::Leases() const { return cluster_ ? cluster_->Leases() : LeaseStats{}; }

int Dispatcher::partitions() const { return cluster_ ? cluster_->options().partitions : 0; }

bool Dispatcher::HoldsJob(const std::string& job) const {
  return cluster_ == nullptr || cluster_->HoldsJob(job);
}

bool Dispatcher::Knows(const std::string& plugin) const {
  return std::find(names_.begin(), names_.end(), plugin) != names_.end();
}

Dispatcher::PluginDispatcher* Dispatcher::Find(const std::string& name) const {
  for (const auto& plugin : plugins_) {
    if (plugin->name() == name) return plugin.get();
  }
  return nullptr;
}

absl::Status Dispatcher::Pause(const std::string& plugin) {
  if (cluster_) {
    if (!Knows(plugin)) return absl::NotFoundError("no plugin named " + plugin);
    return cluster_->SetPaused(plugin, true);
  }
  PluginDispatcher* p = Find(plugin);
  if (p == nullptr) return absl::NotFoundError("no plugin named " + plugin);
  return p->SetPaused(true);
}

absl::Status Dispatcher::Resume(const std::string& plugin) {
  if (cluster_) {
    if (!Knows(plugin)) return absl::NotFoundError("no plugin named " + plugin);
    return cluster_->SetPaused(plugin, false);
  }
  PluginDispatcher* p = Find(plugin);
  if (p == nullptr) return absl::NotFoundError("no plugin named " + plugin);
  return p->SetPaused(false);
}

absl::StatusOr<Dispatcher::DrainResult> Dispatcher::HoldAndDrain(
    const std::string& plugin, std::optional<absl::Duration> timeout) {
  if (cluster_) {
    // Every partition of the plugin held here drains at once (partitions taken during the
    // hold are not held: they start delivering once the plugin answers again).
    if (!Knows(plugin)) return absl::NotFoundError("no plugin named " + plugin);
    std::vector<std::shared_ptr<PluginDispatcher>> local = cluster_->Local(plugin);
    std::vector<absl::StatusOr<DrainResult>> results(local.size());
    std::vector<std::thread> threads;
    for (std::size_t i = 0; i < local.size(); ++i) {
      threads.emplace_back([&, i] { results[i] = local[i]->HoldAndDrain(timeout); });
    }
    for (std::thread& t : threads) t.join();
    DrainResult total;
    for (const auto& result : results) {
      if (!result.ok()) return result.status();
      total.in_flight += result->in_flight;
      total.unanswered += result->unanswered;
    }
    return total;
  }
  PluginDispatcher* p = Find(plugin);
  if (p == nullptr) return absl::NotFoundError("no plugin named " + plugin);
  return p->HoldAndDrain(timeout);
}

absl::Status Dispatcher::EndHold(const std::string& plugin) {
  if (cluster_) {
    if (!Knows(plugin)) return absl::NotFoundError("no plugin named " + plugin);
    for (const auto& d : cluster_->Local(plugin)) d->EndHold();
    return absl::OkStatus();
  }
  PluginDispatcher* p = Find(plugin);
  if (p == nullptr) return absl::NotFoundError("no plugin named " + plugin);
  p->EndHold();
  return absl::OkStatus();
}

std::vector<std::string> Dispatcher::PluginNames() const { return names_; }

absl::Status Dispatcher::Redeliver(const std::string& plugin, std::vector<v1::Event> events) {
  if (cluster_) {
    if (!Knows(plugin)) return absl::NotFoundError("no plugin named " + plugin);
    return cluster_->Redeliver(plugin, std::move(events));
  }
  PluginDispatcher* p = Find(plugin);
  if (p == nullptr) return absl::NotFoundError("no plugin named " + plugin);
  p->RequestRedelivery(std::move(events));
  return absl::OkStatus();
}

absl::Status Dispatcher::Seek(const std::string& plugin, uint64_t sequence) {
  if (cluster_) {
    if (!Knows(plugin)) return absl::NotFoundError("no plugin named " + plugin);
    return cluster_->Seek(plugin, sequence);
  }
  PluginDispatcher* p = Find(plugin);
  if (p == nullptr) return absl::NotFoundError("no plugin named " + plugin);
  p->RequestSeek(sequence);
  return absl::OkStatus();
}

MinCursorProvider PluginsMinCursor(std::vector<std::string> plugins, const EventLog* log,
                                   const Dispatcher* dispatcher) {
  return [plugins = std::move(plugins), event_log = log,
          dispatcher]() -> absl::StatusOr<std::optional<uint64_t>> {
    if (plugins.empty()) return std::nullopt;
    // Cluster dispatch: one node at a time trims the shared log's events (the others' passes
    // trim nothing; dead letters and quarantine deletions are idempotent).
    if (dispatcher != nullptr && !dispatcher->HoldsJob("retention")) return uint64_t{0};
    uint64_t lowest = std::numeric_limits<uint64_t>::max();
    const int partitions = dispatcher != nullptr ? dispatcher->partitions() : 0;
    for (const std::string& plugin : plugins) {
      absl::StatusOr<uint64_t> cursor = event_log->LoadCursor(plugin);
      if (!cursor.ok()) return cursor.status();
      if (partitions == 0) {
        lowest = std::min(lowest, *cursor);
        continue;
      }
      // Cluster dispatch: every partition's cursor (one never written yet starts at the
      // plugin's own, as PluginDispatcher::Start does).
      for (int p = 0; p < partitions; ++p) {
        absl::StatusOr<uint64_t> own =
            event_log->LoadCursor(PartitionCursorKey(plugin, p, partitions));
        if (!own.ok()) return own.status();
        lowest = std::min(lowest, *own != 0 ? *own : *cursor);
      }
    }
    if (dispatcher != nullptr) {
      for (const PluginDispatchStats& stats : dispatcher->Stats()) {
        if (stats.state != "standby") lowest = std::min(lowest, stats.cursor);
      }
    }
    return lowest;
  };
}

}  // namespace pimgate
