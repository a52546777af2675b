// Reconciler: recovers the changes a PIM's webhooks missed by asking its REST API what changed,
// and adds them to the event log as ORIGIN_RECONCILIATION events (docs/reconciliation.md).
#ifndef PIMGATE_PIM_RECONCILER_H_
#define PIMGATE_PIM_RECONCILER_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "config/config.h"
#include "core/log/event_log.h"
#include "pim/akeneo_client.h"

namespace pimgate {

// What one run is asked to do. Default: the scheduled window (watermark - overlap).
struct ReconcileOptions {
  // Ask for items updated after this instead of the default window. The persisted watermark is
  // advanced only when this window starts no later than the default one (a later start leaves a
  // gap it must not paper over).
  std::optional<int64_t> since_us;
  // List everything (no `updated` filter) and emit `<kind>.deleted` for every resource the log
  // knows that the PIM no longer returns. Excludes `since_us`.
  bool full = false;
};

// One kind of a run listed after products and product models (families, categories,
// attributes, attribute groups, reference entity records, assets): listed with its own window
// and watermark.
struct ReconcileKindRunStats {
  // "family", "category", "attribute", "attribute_group", "reference_entity_record", "asset".
  std::string kind;
  // The ISO 8601 `updated >` value sent ("2026-12-04T04:55:00-05:00"); empty: everything.
  std::string updated_filter;
  uint64_t scanned = 0;
  uint64_t emitted = 0;
  // OK, or why this kind's listing stopped; when `unavailable`, why the PIM does not list it.
  absl::Status status;
  // Reference entity records and assets: the PIM answered their parents' list with its own 404
  // (Community Edition) or a 403 (the connection's role). Not a failure of the run: the kind is
  // skipped, its watermark kept.
  bool unavailable = false;
  // Reference entity records and assets: the reference entities / asset families listed, and
  // those deleted between that listing and the listing of their items (skipped).
  uint64_t parents = 0;
  uint64_t parents_gone = 0;
  std::optional<int64_t> watermark_us;  // this kind's persisted watermark after the run
  bool watermark_advanced = false;
};

// The figures of one run.
struct ReconcileRunStats {
  std::string source;
  uint64_t run = 0;  // this source's run number, counted in the log's metadata (1, 2, ...)
  bool full = false;
  bool scheduled = false;                  // started by the scheduler, not on demand
  std::optional<int64_t> window_start_us;  // the `updated >` bound asked for; unset: everything
  absl::Time started_at = absl::InfinitePast();
  absl::Time finished_at = absl::InfinitePast();
  absl::Status status;     // OK, or why the run stopped (nothing after that point was done)
  uint64_t scanned = 0;    // items the PIM returned
  uint64_t emitted = 0;    // `<kind>.updated` events stored (newer than what the log had)
  uint64_t deleted = 0;    // `<kind>.deleted` events stored (full runs)
  uint64_t in_sync = 0;    // items whose version the log already had, or a newer one
  uint64_t invalid = 0;    // items without an id or a readable `updated`: skipped
  uint64_t unchecked = 0;  // full runs: product ids in the log that are not UUIDs (not compared)
  uint64_t api_calls = 0;  // list pages requested (token requests are the client's)
  std::optional<int64_t> watermark_us;  // the persisted watermark after the run
  bool watermark_advanced = false;
  // The `updated >` value sent ("2026-12-04 04:55:00", the PIM server's wall-clock time); empty
  // when the run asked for everything.
  std::string updated_filter;
  // The UTC offset or zone `updated_filter` was written in ("-05:00", "America/New_York").
  std::string filter_time_zone;
  // Where products were listed: "/api/rest/v1/products-uuid", or "/api/rest/v1/products" (by
  // identifier) on a PIM without products-uuid (before 7.0). Empty: products not reconciled.
  std::string products_path;
  // The catalogue structure kinds, then reference entity records and assets, that the source
  // reconciles, in the order listed (after products and product models). Their items are counted
  // in scanned/emitted/in_sync/invalid above too.
  std::vector<ReconcileKindRunStats> kinds;

  absl::Duration duration() const { return finished_at - started_at; }
};

// A source's reconciliation at one instant.
struct ReconcileSourceStats {
  std::string source;
  bool configured = false;  // the source has `rest` (sources without it are listed too)
  bool running = false;
  uint64_t runs_succeeded = 0;  // counters since the Reconciler was created
  uint64_t runs_failed = 0;
  uint64_t items_scanned = 0;
  uint64_t events_emitted = 0;
  uint64_t deletions_emitted = 0;
  uint64_t in_sync = 0;
  uint64_t api_calls = 0;
  std::optional<ReconcileRunStats> last_run;  // the last finished run, failed or not
  std::optional<absl::Time> last_success;     // when the last successful run finished
  std::optional<int64_t> watermark_us;        // persisted watermark
  // The persisted watermarks of the other kinds the source reconciles ("family", "asset", ...),
  // those that have one.
  std::map<std::string, int64_t> kind_watermarks_us;
  std::optional<absl::Time> next_run;  // next scheduled run; unset: on demand only
  // The PIM server's time zone, in which the `updated` filter is written: rest.timezone
  // ("America/New_York", "-05:00"; origin "configured"), else the UTC offset the PIM writes in
  // its newest `updated` value ("-05:00"; origin "learned"); both empty while nothing is known.
  std::string pim_time_zone;
  std::string pim_time_zone_origin;
  // Learned only: the offset the next scheduled window start is written with. It equals
  // pim_time_zone once proven for that instant; until then it is lower (the window is widened,
  // docs/reconciliation.md), and "-14:00" while nothing is known.
  std::string filter_utc_offset;
  // The products endpoint of the last run that listed products (ReconcileRunStats).
  std::string products_path;
};

// Tunables that are not configuration (tests shrink them).
struct ReconcilerOptions {
  // Items per list page (Akeneo's maximum).
  int page_size = kAkeneoMaxPageSize;
  // Versions read from the log per step of the deletion check, and deletion events per append.
  std::size_t deletion_check_chunk = 1000;
  std::size_t deletions_per_append = 100;
  // Invalid items logged per run (the rest are only counted).
  int max_invalid_logged = 5;
  // Set: a scheduled run happens only while it answers true (cluster dispatch: the node holding
  // the "reconcile" job lease); otherwise the run is skipped and the next one is `interval`
  // later. On-demand runs (Run) are not affected.
  std::function<bool()> may_run_scheduled;
};

// Runs reconciliation for every source with `rest`: a scheduler thread per source with a
// non-zero `reconcile.interval` (never a gateway I/O thread), plus on-demand runs (Run, the admin
// API's Reconcile). Thread-safe.
//
// A run: items updated after (watermark - overlap) are listed with `search_after` pagination,
// page by page; each item newer than the log's version of that resource becomes a
// `product.updated` / `product_model.updated` event; each page's events are one append, so memory
// holds one page. Runs of one source never overlap: an on-demand Run waits for a run in progress
// to finish, then runs its own (with its own options) and returns that one's figures.
//
// The `updated` filter is read by the PIM in its server's time zone (SaaS: UTC; on-premise:
// PHP's date.timezone), so the window start is written as that zone's wall-clock time:
// rest.timezone when set, else the UTC offset the PIM writes in its own `updated` values, learned
// and persisted beside the watermark with the window start it was proven for. An offset that is
// not proven for the window start is lowered (the window widened), never raised: a filter
// written with too low an offset asks for more, one too high would skip changes
// (PimOffsetEvidence; docs/reconciliation.md).
//
// Products are listed through /api/rest/v1/products-uuid (PIM 7, SaaS). When the PIM answers
// that route with its own JSON 404 (PIM 5 and 6 have no such route), the run lists
// /api/rest/v1/products instead and keys products by identifier, as those PIMs' events do. Each
// run asks products-uuid first, so an upgraded PIM is noticed.
//
// A `_links.next.href` on the configured host with another scheme or port (a PIM behind a
// TLS-terminating proxy) is followed on the configured origin (NextPageTarget); one on another
// host fails the run.
//
// Families, categories, attributes and attribute groups (reconcile.families, ... : opt-in) are
// listed after products and product models, each with its own watermark (same rule, moved once
// that kind's listing completed), an ISO 8601 `updated >` filter written as the PIM zone's
// wall-clock time with that zone's offset, and offset paging through the PIM's next links (those
// lists have no search_after). A failing kind keeps its watermark while the others still run; the
// run then fails with the first error. No deletion check for them: offset paging can skip an item
// when another is deleted between pages, which would look like a deletion.
//
// Reference entity records and assets (reconcile.reference_entity_records, reconcile.assets:
// opt-in, Enterprise Edition) come last, the same way, each kind with one watermark: every
// reference entity / asset family is listed, then each one's items (search_after paging through
// the PIM's links, no `limit`), keyed "<parent>/<code>" as their Event Platform events are. The
// watermark moves only when every parent's list completed; a parent created later needs none of
// its own (the watermark is capped at the run's start, before the parents were listed). A PIM
// that answers the parents' list with its own 404 (Community Edition) or a 403 makes the kind
// unavailable (ReconcileKindRunStats::unavailable), logged once, not a failure of the run.
//
// The watermark is persisted (EventLog::PutMeta, fsynced) only after a run succeeded, as
// min(largest `updated` seen, the run's start on pimgate's clock), and never moves back. The
// largest `updated` is on the PIM's clock, so a clock difference does not open a gap; capping it
// at the start keeps an item updated while the run was paging (on a page already passed) inside
// the next window as long as `overlap` exceeds the smaller of the clock difference and a run's
// duration. With no item seen the watermark stays where it was.
//
// Stop() (and the destructor) makes runs in progress end promptly with Cancelled: they wait for
// the PIM through GetAsync and give up waiting, so an unreachable PIM cannot hold Stop. The
// clients are shared (the dispatcher's hydration uses the same ones) and their owner shuts them
// down; the Reconciler only keeps them alive while it runs.
class Reconciler {
 public:
  using ClientMap = std::map<std::string, std::shared_ptr<AkeneoClient>>;

  // `sources`: every configured source (sources without `rest` are known, to tell "unknown"
  // from "not configured"). `clients`: one per source with `rest`, by source name; each such
  // source must have one. `log` must outlive the Reconciler.
  static absl::StatusOr<std::unique_ptr<Reconciler>> Create(
      const std::vector<SourceConfig>& sources, ClientMap clients, EventLog* log,
      ReconcilerOptions options = {});
  ~Reconciler();
  Reconciler(const Reconciler&) = delete;
  Reconciler& operator=(const Reconciler&) = delete;

  // Starts the scheduler threads; a scheduled source runs once right away, then `interval` after
  // the end of each successful run, or `retry_after` after a failed one. Call once.
  void Start();
  // Cancels runs in progress and waits for them and the schedulers to end. Idempotent.
  void Stop();

  // Runs now (after a run of the same source in progress) and returns the run's figures, or:
  // NotFound for an unknown source, FailedPrecondition for a source without `rest`,
  // InvalidArgument for `full` with `since_us`, Cancelled once stopping; a failed run returns its
  // error (Unavailable when the PIM cannot be reached, ...) with the figures so far in the
  // message, and is recorded in Stats() like any run.
  absl::StatusOr<ReconcileRunStats> Run(const std::string& source, ReconcileOptions options = {});

  // Every configured source, in configuration order.
  std::vector<ReconcileSourceStats> Stats() const;

 private:
  struct Source;
  struct Shared;
  struct RunContext;

  Reconciler(EventLog* log, ReconcilerOptions options);

  void ScheduleLoop(Source& source);
  absl::StatusOr<ReconcileRunStats> RunLocked(Source& source, const ReconcileOptions& options,
                                              bool scheduled);
  absl::Status Execute(Source& source, const ReconcileOptions& options, ReconcileRunStats& stats);
  // Lists `kind` (the `updated` search `search_json`, empty: everything) and appends what is
  // newer than the log's version, page by page. `parent`: the reference entity or asset family
  // whose records or assets are listed (nested kinds only).
  absl::Status ScanKind(Source& source, RunContext& run, const std::string& kind,
                        const std::string& search_json, const std::string& parent = {});
  // A nested kind (reference entity records, assets): lists the parents, then each parent's
  // items through ScanKind. A PIM that answers the parents' list with its own 404 or a 403 marks
  // the kind unavailable in `kind_stats` and returns OK; a parent gone since it was listed is
  // skipped; any other failure is returned at once.
  absl::Status ScanNestedKind(Source& source, RunContext& run, const std::string& kind,
                              const std::string& search_json, ReconcileKindRunStats& kind_stats);
  // The target of a list's `_links.next.href` (empty: none), through NextPageTarget; a link back
  // to `current` fails.
  absl::StatusOr<std::string> FollowNext(Source& source, const std::string& href,
                                         const std::string& current);
  // Families, categories, attributes and attribute groups, as configured: each with its own
  // window and watermark. A kind that fails keeps its watermark; the others are still listed,
  // and the first failure is returned.
  absl::Status ScanStructureKinds(Source& source, RunContext& run, const ReconcileOptions& options,
                                  const std::optional<int64_t>& learned_filter_window,
                                  std::optional<int> learned_filter_offset);
  absl::Status CheckDeletions(Source& source, RunContext& run, const std::string& kind);
  absl::StatusOr<std::string> Fetch(Source& source, const std::string& target);
  absl::StatusOr<AppendResult> AppendAndWait(AppendRequest request);
  absl::Status Cancelled() const;

  EventLog* const log_;
  const ReconcilerOptions options_;
  // Shared with client and log callbacks, which may outlive a run (an abandoned call completes
  // later): its mutex guards `stopping` and every pending call's result.
  std::shared_ptr<Shared> shared_;
  std::vector<std::unique_ptr<Source>> sources_;

  mutable absl::Mutex stats_mu_;
  bool started_ ABSL_GUARDED_BY(stats_mu_) = false;
};

// Akeneo's `updated` ("2026-11-20T10:14:59+00:00", RFC 3339 with an offset or Z, optional
// fraction) → microseconds since the epoch. InvalidArgument naming the text otherwise.
absl::StatusOr<int64_t> ParseAkeneoTime(std::string_view text);

// What a run learns of the PIM's UTC offset from the `updated` values it reads, and the offset
// the next window start may safely be written with. Exposed for tests.
//
// The model: a zone's offset takes at most two values (standard and DST time, at most
// kMaxDstShiftSeconds apart), and two changes of it are months apart. An offset seen at or
// before the next window start and again at the newest `updated`, within kOffsetProofSpan, is
// the offset at that start: proven. So is one equal to the offset proven for this run's window
// start when nothing else was seen, within kOffsetProofSpan (the steady state). Otherwise the
// lower of two offsets seen is safe (the standard time), and a single offset seen, minus
// kMaxDstShiftSeconds, is safe.
class PimOffsetEvidence {
 public:
  // The most negative offset in use is -12:00: a filter written with -14:00 can only widen.
  static constexpr int kWidestWestOffsetSeconds = -14 * 3600;
  // Largest change of a zone's offset at a DST transition (Antarctica/Troll: 2 h).
  static constexpr int kMaxDstShiftSeconds = 2 * 3600;
  // Shorter than the time between two offset changes of any zone in the tz database.
  static constexpr absl::Duration kOffsetProofSpan = absl::Hours(7 * 24);

  // One `updated` value: its instant and the offset written with it.
  void Add(int64_t time_us, int offset_seconds);
  bool empty() const { return !newest_us_.has_value(); }
  int newest_offset() const { return newest_offset_; }

  // The offset to write the next window start `next_window_us` with. `proven_at_window`: the
  // offset proven for this run's window start `window_us` (unset when unknown or not proven
  // there). `*proven` tells whether the answer is the PIM's offset at `next_window_us`, or a
  // lower one that is safe.
  int NextFilterOffset(int64_t next_window_us, std::optional<int> proven_at_window,
                       std::optional<int64_t> window_us, bool* proven) const;

 private:
  // Whether newest_offset() was seen at or before `instant_us`, within kOffsetProofSpan of the
  // newest value, with no other offset seen after that.
  bool NewestOffsetHeldAt(int64_t instant_us) const;

  std::optional<int64_t> newest_us_;
  int newest_offset_ = 0;
  std::set<int> offsets_;  // every offset seen
  // (minute since the epoch, offset) of the values within kOffsetProofSpan of the newest one:
  // at most the span's minutes per offset seen, whatever the catalogue's size.
  std::set<std::pair<int64_t, int>> recent_;
};

}  // namespace pimgate

#endif  // PIMGATE_PIM_RECONCILER_H_
