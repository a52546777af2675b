// Per-plugin delivery: a scheduler thread owns all ordering state; a DeliveryStream (gRPC callback
// reactor, core/dispatch/delivery_stream.h) carries Deliveries and Acks over one gRPC call. Other
// threads talk to the scheduler only through its inbox (mu_), so the ordering rules live in one
// single-threaded place. Events travel as the log stores them: the scheduler decodes only their
// header (core/dispatch/event_wire.h), never their data, unless a data filter, hydration or a dead
// letter needs it.
#include "core/dispatch/dispatcher.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <deque>
#include <map>
#include <random>
#include <set>
#include <thread>
#include <unordered_map>

#include "absl/container/btree_set.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "core/dispatch/delivery_stream.h"
#include "core/dispatch/event_filter.h"
#include "core/dispatch/event_wire.h"
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

using v1::Ack;

// The store's record of a paused plugin (EventLog metadata): "true" while paused.
std::string PausedKey(const std::string& plugin) {
  return absl::StrCat("dispatch/", plugin, "/paused");
}

// How long a control call (hold, release) waits for the scheduler thread to act on it. The
// scheduler loops at least once a second; a blocking log read or connect may delay one loop.
constexpr absl::Duration kControlWait = absl::Seconds(30);

google::protobuf::Timestamp NowTimestamp() {
  return google::protobuf::util::TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(absl::Now()));
}

}  // namespace

class Dispatcher::PluginDispatcher {
 public:
  // `hydrator`: null unless the plugin has `hydrate: true`. `letters`: the dispatcher's.
  PluginDispatcher(const PluginConfig& config, EventLog* log, DeadLetters* letters,
                   AddressResolver resolve, const DispatcherOptions& options,
                   HydrationService* hydrator)
      : config_(config),
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

  absl::Status Start() {
    absl::StatusOr<uint64_t> cursor = log_->LoadCursor(config_.name);
    if (!cursor.ok()) return cursor.status();
    absl::StatusOr<std::optional<std::string>> paused = log_->GetMeta(PausedKey(config_.name));
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
    if (!retrying->empty()) {
      spdlog::info("[dispatch {}] resuming the retry of {} dead letter(s)", config_.name,
                   retrying->size());
      RequestRedelivery(*std::move(retrying));
    }
    cursor_ = *cursor;
    persisted_cursor_ = cursor_;
    next_read_ = cursor_ + 1;
    // The log outlives nothing we own: the hook is detached in Stop() before we go away.
    hook_ = std::make_shared<Hook>();
    hook_->target = this;
    log_->AddAppendListener([hook = hook_](uint64_t) {
      absl::MutexLock lock(&hook->mu);
      if (hook->target != nullptr) hook->target->Wake();
    });
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
  absl::Status SetPaused(bool paused) {
    absl::MutexLock control(&control_mu_);  // the store and memory change in the same order
    if (absl::Status status = log_->PutMeta(PausedKey(config_.name), paused ? "true" : "false");
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

  void RequestSeek(uint64_t sequence) {
    absl::MutexLock lock(&mu_);
    seek_to_ = sequence;
  }

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
  enum class ErrorKind { kNone, kConnect, kStream, kHydration, kRead, kProgress };
  // kNeeded: a lightweight event whose resource must be fetched before it is sent (it waits in
  // hydrate_queue_, not ready_); kFetching: being fetched; kFound / kNotFound: fetched, sent with
  // data.resource / data.hydration = "not_found". kNone: sent as stored.
  enum class Hydration { kNone, kNeeded, kFetching, kFound, kNotFound };
  struct Pending {
    // The event's header: every field but `data` (decoded from `bytes`, which are sent).
    v1::Event event;
    std::string bytes;  // the event as stored (serialized), data included
    std::string key;
    uint32_t attempts = 0;
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
      if (inbox.seek_to) Seek(*inbox.seek_to);
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
    if (ProgressDirty()) deadline = std::min(deadline, next_progress_at_);
    // More events may be waiting in the log once the window has room again.
    if (WorthReading() && next_read_ <= log_->head()) deadline = absl::Now();
    return deadline;
  }

  void EnsureStream(absl::Time now) {
    if (stream_ || window_.empty() || paused_view_ || hold_view_ != 0 || now < reconnect_at_) {
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

  void FillWindow() {
    const uint64_t head = log_->head();
    while (WorthReading() && next_read_ <= head) {
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
        absl::StatusOr<v1::Event> header = ParseEventHeader(stored.bytes);
        if (!header.ok()) {
          // Never skipped silently: the cursor stops below it until an operator seeks past it.
          next_read_ = stored.sequence;
          SetError(ErrorKind::kRead,
                   absl::StrCat("event ", stored.sequence, ": ", header.status().message()));
          spdlog::error("[dispatch {}] reading the log: {}", config_.name, stats_.last_error);
          break;
        }
        Admit(std::move(*header), std::move(stored.bytes));
      }
    }
    AdvanceCursor();
  }

  // Filters one event read from the log (its header and stored bytes), or queues it behind
  // earlier events of its resource.
  void Admit(v1::Event event, std::string bytes) {
    // Already pending as a retried dead letter (after a seek back below it): delivered once.
    if (window_.count(event.sequence()) > 0) return;
    EventFilter::Verdict verdict;
    if (filter_.reads_data()) {
      v1::Event full;
      if (!full.ParseFromString(bytes)) full = event;  // header parsed: data alone is damaged
      verdict = filter_.Check(full);
    } else {
      verdict = filter_.Check(event);
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
    Enqueue(std::move(event), std::move(bytes), /*redelivery=*/false);
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
    event.clear_data();
    Enqueue(std::move(event), std::move(bytes), /*redelivery=*/true);
  }

  // `event` is the header (no data) of the event serialized in `bytes`.
  void Enqueue(v1::Event event, std::string bytes, bool redelivery) {
    const uint64_t sequence = event.sequence();
    // Events without a resource id (jobs, app.deleted ...) have nothing to be ordered against.
    std::string key =
        event.resource_id().empty()
            ? absl::StrCat("#", sequence)
            : absl::StrCat(event.source(), "\x1f", event.kind(), "\x1f", event.resource_id());
    Pending& pending = window_[sequence];
    pending.event = std::move(event);
    pending.bytes = std::move(bytes);
    pending.redelivery = redelivery;
    if (hydrator_ != nullptr && hydrator_->ShouldHydrate(pending.event)) {
      pending.hydration = Hydration::kNeeded;
    }
    std::deque<uint64_t>& queue = resources_[key];
    pending.key = std::move(key);
    queue.push_back(sequence);
    if (queue.size() == 1) MakeReady(sequence);
  }

  // The whole stored event, data included (decoded only where it is changed or kept: hydration,
  // dead letters). Falls back to the header if the stored data does not decode.
  v1::Event FullEvent(const Pending& pending) const {
    v1::Event event;
    if (!event.ParseFromString(pending.bytes)) {
      spdlog::error("[dispatch {}] stored event {} does not decode; using its header", config_.name,
                    pending.event.sequence());
      return pending.event;
    }
    return event;
  }

  // A resource head that may go: to the send queue, or first to the fetch queue when its
  // resource must be hydrated.
  void MakeReady(uint64_t sequence) {
    if (window_.at(sequence).hydration == Hydration::kNeeded) {
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
      requests.push_back(MakeHydrationRequest(pending.event, batch));
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
    if (!stream_ || paused_view_ || hold_view_ != 0) return;
    std::vector<std::string> deliveries;
    while (in_flight_ < config_.max_in_flight && !ready_.empty()) {
      const uint64_t sequence = *ready_.begin();
      ready_.erase(ready_.begin());
      Pending& pending = window_.at(sequence);
      ++pending.attempts;
      pending.state = State::kInFlight;
      pending.generation = generation_;
      pending.deadline = now + absl::FromChrono(config_.ack_timeout);
      ack_deadlines_.emplace(pending.deadline, sequence);
      ++in_flight_;
      if (pending.hydration == Hydration::kFound || pending.hydration == Hydration::kNotFound) {
        v1::Event event = FullEvent(pending);
        ApplyHydration(pending.resource.get(), event);
        if (std::exchange(pending.hydrated_unsent, false)) --hydrated_unsent_;
        deliveries.push_back(EncodeDelivery(event.SerializeAsString(), pending.attempts));
      } else {
        deliveries.push_back(EncodeDelivery(pending.bytes, pending.attempts));  // as stored
      }
    }
    if (!deliveries.empty()) stream_->Send(std::move(deliveries));
    stats_.in_flight = in_flight_;
    if (hydrator_ != nullptr) StartHydrations();  // after the sends, which free prefetch room
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
                 pending.event.type(), pending.event.resource_id(), reason);
    Complete(sequence);
  }

  // The event is done for this plugin: the next event of its resource may go.
  void Complete(uint64_t sequence) {
    auto it = window_.find(sequence);
    auto queue_it = resources_.find(it->second.key);
    std::deque<uint64_t>& queue = queue_it->second;
    queue.pop_front();  // only a resource's first event is ever delivered
    if (queue.empty()) {
      resources_.erase(queue_it);
    } else if (window_.at(queue.front()).state == State::kWaiting) {
      MakeReady(queue.front());
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

  void FlushProgress(absl::Time now, bool force) {
    if (!ProgressDirty() || (!force && now < next_progress_at_)) return;
    PluginProgress progress;
    progress.cursor = cursor_;
    progress.dead_letters = dead_letters_;
    absl::Status status = log_->WriteProgress(config_.name, progress);
    next_progress_at_ = now + options_.progress_interval;
    if (!status.ok()) {
      // Kept for the next attempt: a dead letter is never dropped for want of a write.
      SetError(ErrorKind::kProgress, std::string(status.message()));
      spdlog::error("[dispatch {}] saving progress: {}", config_.name, stats_.last_error);
      return;
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

  void Seek(uint64_t sequence) {
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
    stats_.cursor = cursor_;
    FlushProgress(absl::Now(), /*force=*/true);
    for (v1::Event& event : retried) AdmitRedelivery(std::move(event));
  }

  // The plugin's process is about to be restarted: the stream goes (acks still coming on it are
  // ignored) and the deliveries not answered on it wait to be sent again once the hold ends. They
  // are not failures of the plugin: no attempt is counted against retry.max_attempts and no
  // backoff is waited (their next delivery says attempt + 1, as any redelivery).
  void ReleaseStreamForRestart(uint64_t seq) {
    uint64_t unanswered = 0;
    if (stream_) {
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
  Window window_;
  std::unordered_map<std::string, std::deque<uint64_t>> resources_;
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
  absl::Time reconnect_at_ = absl::InfinitePast();
  absl::Duration reconnect_delay_ = absl::ZeroDuration();
  uint64_t generation_ = 0;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<DeliveryStream> stream_;
  std::shared_ptr<Hook> hook_;
  std::thread thread_;
};

absl::StatusOr<std::unique_ptr<Dispatcher>> Dispatcher::Create(
    const std::vector<PluginConfig>& plugins, EventLog* log, AddressResolver resolve,
    DispatcherOptions options) {
  if (log == nullptr) return absl::InvalidArgumentError("the dispatcher needs the event log");
  std::unique_ptr<Dispatcher> dispatcher(new Dispatcher());
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
    dispatcher->plugins_.push_back(std::make_unique<PluginDispatcher>(
        plugin, log, dispatcher->dead_letters_.get(), resolve, options,
        plugin.hydrate ? dispatcher->hydrator_.get() : nullptr));
  }
  return dispatcher;
}

Dispatcher::~Dispatcher() { Stop(); }

absl::Status Dispatcher::Start() {
  for (auto& plugin : plugins_) {
    if (absl::Status status = plugin->Start(); !status.ok()) return status;
  }
  return absl::OkStatus();
}

void Dispatcher::Stop() {
  for (auto& plugin : plugins_) plugin->Stop();
}

std::vector<PluginDispatchStats> Dispatcher::Stats() const {
  std::vector<PluginDispatchStats> out;
  for (const auto& plugin : plugins_) out.push_back(plugin->Stats());
  return out;
}

Dispatcher::PluginDispatcher* Dispatcher::Find(const std::string& name) const {
  for (const auto& plugin : plugins_) {
    if (plugin->name() == name) return plugin.get();
  }
  return nullptr;
}

absl::Status Dispatcher::Pause(const std::string& plugin) {
  PluginDispatcher* p = Find(plugin);
  if (p == nullptr) return absl::NotFoundError("no plugin named " + plugin);
  return p->SetPaused(true);
}

absl::Status Dispatcher::Resume(const std::string& plugin) {
  PluginDispatcher* p = Find(plugin);
  if (p == nullptr) return absl::NotFoundError("no plugin named " + plugin);
  return p->SetPaused(false);
}

absl::StatusOr<Dispatcher::DrainResult> Dispatcher::HoldAndDrain(
    const std::string& plugin, std::optional<absl::Duration> timeout) {
  PluginDispatcher* p = Find(plugin);
  if (p == nullptr) return absl::NotFoundError("no plugin named " + plugin);
  return p->HoldAndDrain(timeout);
}

absl::Status Dispatcher::EndHold(const std::string& plugin) {
  PluginDispatcher* p = Find(plugin);
  if (p == nullptr) return absl::NotFoundError("no plugin named " + plugin);
  p->EndHold();
  return absl::OkStatus();
}

std::vector<std::string> Dispatcher::PluginNames() const {
  std::vector<std::string> names;
  for (const auto& plugin : plugins_) names.push_back(plugin->name());
  return names;
}

absl::Status Dispatcher::Redeliver(const std::string& plugin, std::vector<v1::Event> events) {
  PluginDispatcher* p = Find(plugin);
  if (p == nullptr) return absl::NotFoundError("no plugin named " + plugin);
  p->RequestRedelivery(std::move(events));
  return absl::OkStatus();
}

absl::Status Dispatcher::Seek(const std::string& plugin, uint64_t sequence) {
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
    uint64_t lowest = std::numeric_limits<uint64_t>::max();
    for (const std::string& plugin : plugins) {
      absl::StatusOr<uint64_t> cursor = event_log->LoadCursor(plugin);
      if (!cursor.ok()) return cursor.status();
      lowest = std::min(lowest, *cursor);
    }
    if (dispatcher != nullptr) {
      for (const PluginDispatchStats& stats : dispatcher->Stats()) {
        lowest = std::min(lowest, stats.cursor);
      }
    }
    return lowest;
  };
}

}  // namespace pimgate
