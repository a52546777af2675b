// Dispatcher: streams the log's events to each plugin over gRPC, per-resource ordered, filtered,
// with acks, retries, dead letters and a persisted cursor. One PluginDispatcher per plugin, each
// on its own threads: a slow or dead plugin never slows ingest or the other plugins.
#ifndef PIMGATE_CORE_DISPATCH_DISPATCHER_H_
#define PIMGATE_CORE_DISPATCH_DISPATCHER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "config/config.h"
#include "core/dispatch/dead_letters.h"
#include "core/dispatch/hydration.h"
#include "core/log/event_log.h"
#include "core/log/lease_store.h"
#include "core/log/retention.h"

namespace pimgate {

// A point-in-time view of one plugin's delivery.
struct PluginDispatchStats {
  std::string name;
  // "idle" (nothing to deliver), "streaming" (events to deliver, stream open), "connecting"
  // (events to deliver, no stream yet: the plugin is starting or unreachable), "paused",
  // "restarting" (held for pimgatectl restart), "stopped" (pimgate is stopping), "standby"
  // (cluster dispatch: this node holds none of the plugin's partitions now).
  std::string state;
  uint64_t cursor = 0;  // every event <= cursor is done for this plugin
  uint64_t lag = 0;     // log head - cursor
  uint64_t in_flight = 0;
  uint64_t delivered = 0;  // acknowledged OK
  uint64_t retried = 0;    // redeliveries scheduled (RETRY, timeout, broken stream)
  uint64_t dead_lettered = 0;
  uint64_t skipped_filter = 0;
  uint64_t skipped_stale = 0;
  uint64_t connects = 0;     // streams opened
  bool stream_open = false;  // a delivery stream is open now (an external plugin is up then)
  // The latest delivery problem that is not over: cleared once what caused it is resolved (a
  // stream opens or the plugin answers again, nothing is left to deliver, the next hydration,
  // log read or progress write succeeds).
  std::string last_error;
  // Hydration (plugins with `hydrate: true`; zero for the others).
  uint64_t hydrating = 0;             // events whose resource is being fetched now
  uint64_t hydration_fetches = 0;     // resources fetched from the PIM for this plugin
  uint64_t hydration_cache_hits = 0;  // resources served without a call (cache, shared fetch)
  uint64_t hydration_not_found = 0;   // delivered with data.hydration = "not_found"
  uint64_t hydration_failures = 0;    // failed fetches (each retried like a failed delivery)
};

// Dispatch shared by several pimgate nodes on one JetStream stream (store.jetstream.cluster;
// docs/architecture.md, "Dispatch in a cluster"). Events are cut into `partitions` by resource;
// each (plugin, partition) is delivered by the node holding its lease in `leases`.
struct ClusterDispatchOptions {
  std::shared_ptr<LeaseStore> leases;  // required
  std::string node_id;                 // unique among the running nodes
  int partitions = 8;
  absl::Duration lease_ttl = absl::Seconds(10);  // the lease bucket's MaxAge

  static ClusterDispatchOptions FromConfig(const ClusterConfig& config,
                                           std::shared_ptr<LeaseStore> leases);
};

// The partition of an event: a stable hash (FNV-1a) of its resource key (source, kind,
// resource id), so every event of one resource is in one partition; events without a resource
// id spread by sequence. The same on every node and every version of pimgate.
int PartitionOf(const v1::Event& header, int partitions);
// The cursor key of one (plugin, partition): "<plugin>.p<index>of<partitions>".
std::string PartitionCursorKey(const std::string& plugin, int partition, int partitions);

// Who delivers one (plugin, partition) now (the lease bucket's view).
struct PartitionOwner {
  std::string plugin;
  int partition = 0;
  std::string node;  // empty: released, not taken yet
};

// This node's leases (cluster dispatch only).
struct LeaseStats {
  uint64_t held = 0;      // now
  uint64_t acquired = 0;  // since start
  uint64_t lost = 0;      // expired or taken without this node releasing them
  uint64_t released = 0;  // given back (balance, shutdown)
};

// Tuning shared by all plugins. Every limit is named; defaults suit a single machine.
struct DispatcherOptions {
  // Events held in memory per plugin (fetched, not yet done). Bounds memory when one resource
  // is stuck in backoff: reading stops once the window is full.
  std::size_t window = 10'000;
  // Events read from the log per read.
  std::size_t read_batch = 512;
  // Cursor and dead-letter writes are batched at most this often.
  absl::Duration progress_interval = absl::Milliseconds(50);
  // Reconnect schedule when a plugin is unreachable.
  absl::Duration reconnect_initial = absl::Milliseconds(100);
  absl::Duration reconnect_max = absl::Seconds(5);
  absl::Duration connect_timeout = absl::Seconds(2);
  // Fetches resources for plugins with `hydrate: true` (pim/hydrator.h, on the REST clients
  // reconciliation uses). A hydrating plugin needs it to serve at least one of its sources.
  std::shared_ptr<HydrationService> hydration;
  // Per hydrating plugin: events being fetched plus fetched events not yet sent stay below
  // max(hydration_prefetch, max_in_flight), and at most hydration_batches fetch batches (each
  // one search per 100 products of a source, one GET per model) run at once. Events arriving
  // meanwhile queue up and go in the next batch, so batches grow with the load.
  std::size_t hydration_prefetch = 2 * 100;
  std::size_t hydration_batches = 2;
  // Set: this node shares dispatch with other nodes (store.jetstream.cluster). Unset: it
  // delivers every event itself, as always.
  std::optional<ClusterDispatchOptions> cluster;
};

// A function that tells a plugin's gRPC target (from the supervisor or the manifest).
using AddressResolver = std::function<std::string(const std::string& plugin)>;

// Thread-safe.
class Dispatcher {
 public:
  static absl::StatusOr<std::unique_ptr<Dispatcher>> Create(
      const std::vector<PluginConfig>& plugins, EventLog* log, AddressResolver resolve,
      DispatcherOptions options = {});
  ~Dispatcher();  // Stop()

  // Loads each plugin's cursor and handed-out mark and starts delivering: events past the cursor
  // up to the mark (handed out before a restart, a crash or a takeover) go with attempt >= 2.
  absl::Status Start();
  // Stops delivering; in-flight deliveries are abandoned (redelivered after restart) and the
  // cursor is persisted. Idempotent.
  void Stop();

  std::vector<PluginDispatchStats> Stats() const;

  // Paused plugins hold their events (nothing is skipped); in-flight deliveries complete. The
  // state is saved in the store (fsynced, beside the plugin's cursor) before these return, and
  // restored by Start(): a paused plugin stays paused across restarts of pimgate until Resume().
  absl::Status Pause(const std::string& plugin);
  absl::Status Resume(const std::string& plugin);

  struct DrainResult {
    uint64_t in_flight = 0;   // deliveries outstanding when the hold began
    uint64_t unanswered = 0;  // of those, not answered within the drain timeout
  };
  // Before the plugin's process is restarted: holds its events (nothing new is sent, nothing is
  // skipped), waits up to `timeout` (default: the plugin's ack_timeout, past which they would
  // count as failed anyway) for the deliveries in flight to be answered, then releases
  // the delivery stream. Deliveries still unanswered are sent again once the hold ends, without
  // counting as failed attempts. EndHold() must follow, whatever happens in between.
  absl::StatusOr<DrainResult> HoldAndDrain(const std::string& plugin,
                                           std::optional<absl::Duration> timeout = std::nullopt);
  absl::Status EndHold(const std::string& plugin);
  // Replays from `sequence`: the plugin's cursor becomes sequence - 1 and in-flight deliveries
  // are abandoned. A new round: the replayed events go from attempt 1 again.
  absl::Status Seek(const std::string& plugin, uint64_t sequence);
  // Delivers `events` (dead letters an operator retries) to `plugin` again, from attempt 1,
  // behind any pending event of the same resource. Filters are not applied again and the cursor
  // does not move back. A letter stays stored until its redelivery is acknowledged OK (then the
  // dispatcher deletes it) or fails again (then it is replaced by the new dead letter), so a
  // crash in between loses nothing: DeadLetters::Retry marks the letters before calling this,
  // and Start() resumes the retries of marked letters. An event already pending is not sent a
  // second time.
  absl::Status Redeliver(const std::string& plugin, std::vector<v1::Event> events);
  // Cluster dispatch: every (plugin, partition) lease in the bucket, by plugin and partition
  // (partitions nobody holds are absent). Empty without cluster dispatch.
  absl::StatusOr<std::vector<PartitionOwner>> Owners() const;
  // Cluster dispatch: this node's id and lease counters; nullopt without cluster dispatch.
  std::optional<std::string> NodeId() const;
  LeaseStats Leases() const;
  // Partitions of cluster dispatch, 0 without it.
  int partitions() const;
  // Whether this node may run the cluster-wide job `job` now: "retention", "reconcile" or
  // "platform" (the Event Platform watch's actions). Under cluster dispatch one node at a time
  // holds each job's lease (fenced like a partition's); without it, always true.
  bool HoldsJob(const std::string& job) const;
  // Names of the configured plugins, in manifest order.
  std::vector<std::string> PluginNames() const;
  // The plugins' dead letters: the dispatcher writes them as it gives up on events; operators
  // list, retry (through Redeliver) and purge them here. Lives as long as the dispatcher.
  DeadLetters& dead_letters() const { return *dead_letters_; }

  class PluginDispatcher;
  class Cluster;

 private:
  Dispatcher() = default;
  EventLog* log_ = nullptr;
  std::unique_ptr<Cluster> cluster_;  // cluster dispatch; null: plugins_ deliver everything
  std::vector<std::string> names_;    // the plugins, in manifest order
  bool Knows(const std::string& plugin) const;
  std::shared_ptr<HydrationService> hydrator_;  // shared by hydrating plugins; null: none hydrates
  std::unique_ptr<DeadLetters> dead_letters_;
  std::vector<std::unique_ptr<PluginDispatcher>> plugins_;
  PluginDispatcher* Find(const std::string& name) const;
};

// The delay before redelivery number `attempt` (1 = first retry): initial * multiplier^(attempt-1)
// capped at max_backoff, then spread by +-jitter using `unit_random` in [0, 1).
absl::Duration RetryDelay(const RetryConfig& retry, uint32_t attempt, double unit_random);

// The provider pimgate runs with: for each of `plugins`, the lower of its persisted cursor
// (where delivery resumes after a restart, so what must still be in the log) and its live cursor
// in `dispatcher` (lower just after a seek back that is not persisted yet). nullopt when
// `plugins` is empty. `log` and `dispatcher` (may be null) must outlive the provider's calls.
MinCursorProvider PluginsMinCursor(std::vector<std::string> plugins, const EventLog* log,
                                   const Dispatcher* dispatcher);

}  // namespace pimgate

#endif  // PIMGATE_CORE_DISPATCH_DISPATCHER_H_
