// Reconciler: scheduling, the run (list → compare with the log's versions → append), the
// deletion check of full runs, the watermark and the PIM's learned UTC offset kept in the log's
// metadata, and the PIM version's products endpoint.
#include "pim/reconciler.h"

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/numeric/int128.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/civil_time.h"
#include "absl/time/time.h"
#include "common/json.h"
#include "common/time_zone.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/time_util.h"
#include "spdlog/spdlog.h"

namespace pimgate {
namespace {

using google::protobuf::Struct;
using google::protobuf::Value;
using google::protobuf::util::TimeUtil;

constexpr char kProductsPath[] = "/api/rest/v1/products-uuid";
// PIM 5 and 6 (no products-uuid): products by identifier.
constexpr char kProductsByIdentifierPath[] = "/api/rest/v1/products";
constexpr char kProductModelsPath[] = "/api/rest/v1/product-models";
constexpr char kProductKind[] = "product";
constexpr char kProductModelKind[] = "product_model";

// The catalogue structure kinds whose lists have an `updated` filter (akeneo/pim-api-docs
// content/rest-api/filter.md: attributes, attribute groups and families from PIM 4.0, categories
// from 6.0; operator `>`, an ISO 8601 value read in the PIM server's time zone). Their lists are
// paged by offset only (content/rest-api/pagination.md: search_after is for products, product
// models, published products, assets and reference entities), and keyed by `code`.
struct StructureKind {
  const char* kind;
  const char* path;
  bool ReconcileConfig::*enabled;
};
constexpr StructureKind kStructureKinds[] = {
    {"family", "/api/rest/v1/families", &ReconcileConfig::families},
    {"category", "/api/rest/v1/categories", &ReconcileConfig::categories},
    {"attribute", "/api/rest/v1/attributes", &ReconcileConfig::attributes},
    {"attribute_group", "/api/rest/v1/attribute-groups", &ReconcileConfig::attribute_groups},
};
const StructureKind* StructureKindOf(std::string_view kind) {
  for (const StructureKind& structure : kStructureKinds) {
    if (structure.kind == kind) return &structure;
  }
  return nullptr;
}

// The Enterprise Edition (and Serenity) kinds whose codes are unique within a parent: reference
// entity records within their reference entity, assets within their asset family. Their lists
// are per parent, GET <parents>/{parent}/<nested>, with an `updated` filter (filter.md: operator
// `>`, ISO 8601, read in the PIM server's time zone; records from 3.x, assets from 3.2), paged by
// search_after only and with no `limit` (the PIM's own page size; pagination.md, the API
// reference). The parents' list (GET <parents>) has neither filter nor `limit`. Resource ids are
// "<parent code>/<code>", as the Event Platform's events name them (events/event_type.h).
struct NestedKind {
  const char* kind;
  const char* parents_path;  // "/api/rest/v1/reference-entities"
  const char* nested;        // "records"
  const char* parents;       // "reference entities", for messages
  const char* items;         // "reference entity records", for messages
  const char* config_key;    // "reference_entity_records" (sources[].reconcile.<key>)
  bool ReconcileConfig::*enabled;
};
constexpr NestedKind kNestedKinds[] = {
    {"reference_entity_record", "/api/rest/v1/reference-entities", "records", "reference entities",
     "reference entity records", "reference_entity_records",
     &ReconcileConfig::reference_entity_records},
    {"asset", "/api/rest/v1/asset-families", "assets", "asset families", "assets", "assets",
     &ReconcileConfig::assets},
};
const NestedKind* NestedKindOf(std::string_view kind) {
  for (const NestedKind& nested : kNestedKinds) {
    if (nested.kind == kind) return &nested;
  }
  return nullptr;
}

// Metadata keys (EventLog::PutMeta), per source.
std::string WatermarkKey(const std::string& source) {
  return absl::StrCat("reconcile/", source, "/watermark");
}
std::string RunCounterKey(const std::string& source) {
  return absl::StrCat("reconcile/", source, "/runs");
}
// A structure kind's own watermark (products and product models share the one above).
std::string KindWatermarkKey(const std::string& source, std::string_view kind) {
  return absl::StrCat("reconcile/", source, "/watermark/", std::string(kind));
}
std::string UtcOffsetKey(const std::string& source) {
  return absl::StrCat("reconcile/", source, "/pim_utc_offset");
}

// The PIM's UTC offset as learned by the last successful run that covered the default window:
// the offset to write `window_start_us` with (never above the PIM's real offset there), the
// window start it was established for (the next scheduled run's), and the offset of the newest
// `updated` seen. Stored as "<filter> <window start> <observed>" after the watermark, so a crash
// between the two writes leaves a record for another window start, which is then widened.
struct LearnedOffset {
  int filter_offset = 0;
  int64_t window_start_us = 0;
  int observed_offset = 0;

  std::string Encode() const {
    return absl::StrCat(filter_offset, " ", window_start_us, " ", observed_offset);
  }
  bool operator==(const LearnedOffset& other) const {
    return filter_offset == other.filter_offset && window_start_us == other.window_start_us &&
           observed_offset == other.observed_offset;
  }
};

absl::StatusOr<std::optional<LearnedOffset>> ReadLearnedOffset(const EventLog& log,
                                                               const std::string& key) {
  absl::StatusOr<std::optional<std::string>> value = log.GetMeta(key);
  if (!value.ok()) return value.status();
  if (!value->has_value()) return std::nullopt;
  std::vector<std::string> parts = absl::StrSplit(**value, ' ');
  LearnedOffset learned;
  if (parts.size() != 3 || !absl::SimpleAtoi(parts[0], &learned.filter_offset) ||
      !absl::SimpleAtoi(parts[1], &learned.window_start_us) ||
      !absl::SimpleAtoi(parts[2], &learned.observed_offset)) {
    return absl::DataLossError(absl::StrCat(
        "log metadata ", key, " is not \"<offset> <window start> <offset>\": \"", **value, "\""));
  }
  return learned;
}

int64_t FloorDiv(int64_t a, int64_t b) { return a / b - (a % b != 0 && (a < 0) != (b < 0)); }

constexpr int64_t kMinuteUs = 60'000'000;

absl::StatusOr<std::optional<int64_t>> ReadInt(const EventLog& log, const std::string& key) {
  absl::StatusOr<std::optional<std::string>> value = log.GetMeta(key);
  if (!value.ok()) return value.status();
  if (!value->has_value()) return std::nullopt;
  int64_t number = 0;
  if (!absl::SimpleAtoi(**value, &number)) {
    return absl::DataLossError(
        absl::StrCat("log metadata ", key, " is not a number: \"", **value, "\""));
  }
  return number;
}

// Now, to the microsecond (protobuf's TimeUtil::GetCurrentTime has whole seconds only).
google::protobuf::Timestamp NowTimestamp() {
  return TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(absl::Now()));
}

std::string FormatMicros(int64_t us) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E6SZ", absl::FromUnixMicros(us), absl::UTCTimeZone());
}

// "a3f2c1d4-0b5e-4f6a-9c7d-8e9f0a1b2c3d" (lowercase only) → 128 bits; anything else → nullopt.
std::optional<absl::uint128> PackUuid(std::string_view id) {
  if (id.size() != 36) return std::nullopt;
  uint64_t high = 0;
  uint64_t low = 0;
  int nibbles = 0;
  for (std::size_t i = 0; i < id.size(); ++i) {
    const char c = id[i];
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (c != '-') return std::nullopt;
      continue;
    }
    uint64_t v = 0;
    if (c >= '0' && c <= '9') {
      v = static_cast<uint64_t>(c - '0');
    } else if (c >= 'a' && c <= 'f') {
      v = static_cast<uint64_t>(c - 'a' + 10);
    } else {
      return std::nullopt;
    }
    uint64_t& half = nibbles < 16 ? high : low;
    half = (half << 4) | v;
    ++nibbles;
  }
  return absl::MakeUint128(high, low);
}

// The ids a full run saw in the PIM. UUIDs take 16 bytes each (a catalogue of a million products
// costs tens of MB, not hundreds); other ids (model codes) are kept as strings.
class ResourceIdSet {
 public:
  void Insert(std::string_view id) {
    if (std::optional<absl::uint128> packed = PackUuid(id)) {
      uuids_.insert(*packed);
    } else {
      others_.emplace(std::string(id));
    }
  }
  bool Contains(std::string_view id) const {
    if (std::optional<absl::uint128> packed = PackUuid(id)) return uuids_.contains(*packed);
    return others_.contains(absl::string_view(id.data(), id.size()));
  }
  void Clear() {
    uuids_ = {};
    others_ = {};
  }

 private:
  absl::flat_hash_set<absl::uint128> uuids_;
  absl::flat_hash_set<std::string> others_;
};

// The string member `name` of `object`; empty when absent or not a string.
const std::string& StringField(const Struct& object, const std::string& name) {
  static const std::string* const kEmpty = new std::string();
  auto it = object.fields().find(name);
  if (it == object.fields().end() || it->second.kind_case() != Value::kStringValue) return *kEmpty;
  return it->second.string_value();
}

// One parsed list page: its items (moved out of the body) and the next page's URL.
struct Page {
  std::vector<Struct> items;
  std::string next;
};

absl::StatusOr<Page> ParsePage(const std::string& body, const std::string& target) {
  Struct root;
  google::protobuf::util::JsonParseOptions parse_options;
  if (auto status = google::protobuf::util::JsonStringToMessage(body, &root, parse_options);
      !status.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the PIM answered ", target,
                     " with a body that is not a JSON object: ", status.ToString()));
  }
  Page page;
  auto& fields = *root.mutable_fields();
  if (auto embedded = fields.find("_embedded"); embedded != fields.end()) {
    if (embedded->second.kind_case() != Value::kStructValue) {
      return absl::InvalidArgumentError(
          absl::StrCat("the PIM's answer to ", target, ": _embedded is not an object"));
    }
    auto& embedded_fields = *embedded->second.mutable_struct_value()->mutable_fields();
    auto items = embedded_fields.find("items");
    // Akeneo's API reference shows the asset and asset family lists' items under `_items`
    // (content/swagger/resources/assets/routes/assets.yaml); every other list, and Akeneo's own
    // PHP client, use `items`. Either is read, so that neither spelling empties a page silently.
    if (items == embedded_fields.end()) items = embedded_fields.find("_items");
    if (items != embedded_fields.end()) {
      if (items->second.kind_case() != Value::kListValue) {
        return absl::InvalidArgumentError(
            absl::StrCat("the PIM's answer to ", target, ": _embedded.items is not a list"));
      }
      for (Value& item : *items->second.mutable_list_value()->mutable_values()) {
        if (item.kind_case() != Value::kStructValue) {
          return absl::InvalidArgumentError(
              absl::StrCat("the PIM's answer to ", target, ": an item is not an object"));
        }
        page.items.push_back(std::move(*item.mutable_struct_value()));
      }
    }
  }
  if (auto links = fields.find("_links");
      links != fields.end() && links->second.kind_case() == Value::kStructValue) {
    const auto& link_fields = links->second.struct_value().fields();
    if (auto next = link_fields.find("next");
        next != link_fields.end() && next->second.kind_case() == Value::kStructValue) {
      page.next = StringField(next->second.struct_value(), "href");
    }
  }
  return page;
}

// The search for items updated after `server_time` (the PIM server's wall-clock time).
// {"updated":[{"operator":">","value":"<server_time>"}]}
std::string UpdatedSearch(const std::string& server_time) {
  Json after;
  after["operator"] = ">";
  after["value"] = server_time;
  Json filter;
  filter["updated"] = Json::array({std::move(after)});
  return JsonDump(filter);
}

// The ISO 8601 value the structure kinds' `updated` filter takes: AkeneoSearchTime's wall-clock
// time in `zone` with the zone's offset there ("2026-12-04T10:00:00-05:00"). Akeneo documents that
// it reads these dates in the server's time zone: whether it honours the offset written or reads
// the wall-clock time in its own zone, the instant is the same (or earlier, when `zone`'s offset
// is lower than the PIM's: the window widens, it never narrows). An ambiguous wall-clock time is
// written with the offset of its earlier reading.
std::string IsoFilterTime(int64_t time_us, const absl::TimeZone& zone) {
  std::string wall = AkeneoSearchTime(time_us, zone);
  if (wall.size() > 10) wall[10] = 'T';
  absl::CivilSecond civil;
  if (!absl::ParseCivilTime(wall, &civil)) return wall;
  const absl::TimeZone::TimeInfo info = zone.At(civil);
  return absl::StrCat(wall, FormatUtcOffset(zone.At(info.pre).offset));
}

// The zone a run writes its window start in, and its name for the run's figures.
struct FilterZone {
  absl::TimeZone zone;
  std::string name;
};

FilterZone ZoneForWindow(const std::optional<absl::TimeZone>& configured,
                         const std::string& configured_name,
                         const std::optional<LearnedOffset>& learned, int64_t window_us) {
  if (configured.has_value()) return {*configured, configured_name};
  int offset = PimOffsetEvidence::kWidestWestOffsetSeconds;
  if (learned.has_value()) {
    offset = learned->filter_offset;
    // Established for another instant: the PIM's offset may differ by a DST shift there.
    if (learned->window_start_us != window_us) offset -= PimOffsetEvidence::kMaxDstShiftSeconds;
  }
  return {absl::FixedTimeZone(offset), FormatUtcOffset(offset)};
}

// The time zone fields of a source's stats. `next_window_us`: the next scheduled run's window
// start (unset: it asks for everything).
void DescribeTimeZone(const std::optional<absl::TimeZone>& configured,
                      const std::string& configured_name,
                      const std::optional<LearnedOffset>& learned,
                      std::optional<int64_t> next_window_us, ReconcileSourceStats& out) {
  out.pim_time_zone.clear();
  out.pim_time_zone_origin.clear();
  out.filter_utc_offset.clear();
  if (configured.has_value()) {
    out.pim_time_zone = configured_name;
    out.pim_time_zone_origin = "configured";
  } else if (learned.has_value()) {
    out.pim_time_zone = FormatUtcOffset(learned->observed_offset);
    out.pim_time_zone_origin = "learned";
  }
  if (!next_window_us.has_value()) return;
  if (configured.has_value()) {
    out.filter_utc_offset =
        FormatUtcOffset(configured->At(absl::FromUnixMicros(*next_window_us)).offset);
  } else {
    out.filter_utc_offset = ZoneForWindow(std::nullopt, "", learned, *next_window_us).name;
  }
}

// The figures so far, for the message of a failed run.
std::string Progress(const ReconcileRunStats& stats) {
  return absl::StrCat("scanned ", stats.scanned, ", emitted ", stats.emitted, ", deleted ",
                      stats.deleted, ", in sync ", stats.in_sync, ", ", stats.api_calls,
                      " API call(s)");
}

// The structure kinds of a run, for its log line: "; family: scanned 3, emitted 1, updated >
// \"...\", watermark ...".
std::string KindsSummary(const ReconcileRunStats& stats) {
  std::string out;
  for (const ReconcileKindRunStats& kind : stats.kinds) {
    absl::StrAppend(
        &out, "; ", kind.kind, ": scanned ", kind.scanned, ", emitted ", kind.emitted, ", ",
        kind.updated_filter.empty() ? std::string("everything")
                                    : absl::StrCat("updated > \"", kind.updated_filter, "\""),
        ", watermark ", kind.watermark_us ? FormatMicros(*kind.watermark_us) : std::string("none"),
        kind.unavailable   ? " (not on this PIM)"
        : kind.status.ok() ? ""
                           : " (failed)");
  }
  return out;
}

}  // namespace

absl::StatusOr<int64_t> ParseAkeneoTime(std::string_view text) {
  absl::StatusOr<AkeneoTimestamp> parsed = ParseAkeneoTimestamp(text);
  if (!parsed.ok()) return parsed.status();
  return parsed->time_us;
}

void PimOffsetEvidence::Add(int64_t time_us, int offset_seconds) {
  offsets_.insert(offset_seconds);
  if (!newest_us_.has_value() || time_us > *newest_us_) {
    newest_us_ = time_us;
    newest_offset_ = offset_seconds;
  }
  // Minutes strictly within the span of the newest value's minute.
  const int64_t oldest_kept =
      FloorDiv(*newest_us_, kMinuteUs) - absl::ToInt64Minutes(kOffsetProofSpan) + 1;
  while (!recent_.empty() && recent_.begin()->first < oldest_kept) recent_.erase(recent_.begin());
  const int64_t minute = FloorDiv(time_us, kMinuteUs);
  if (minute >= oldest_kept) recent_.emplace(minute, offset_seconds);
}

bool PimOffsetEvidence::NewestOffsetHeldAt(int64_t instant_us) const {
  // Values in a minute before the instant's own are all before the instant.
  const int64_t before = FloorDiv(instant_us, kMinuteUs);
  for (auto it = recent_.rbegin(); it != recent_.rend(); ++it) {
    if (it->second != newest_offset_) return false;  // the offset changed since
    if (it->first < before) return true;
  }
  return false;
}

int PimOffsetEvidence::NextFilterOffset(int64_t next_window_us, std::optional<int> proven_at_window,
                                        std::optional<int64_t> window_us, bool* proven) const {
  *proven = false;
  if (empty()) return proven_at_window.value_or(kWidestWestOffsetSeconds);
  if (NewestOffsetHeldAt(next_window_us)) {
    *proven = true;
    return newest_offset_;
  }
  // The steady state: the offset already used for this run's window start (at most the PIM's
  // offset there), and the only one the PIM wrote since.
  if (proven_at_window == newest_offset_ && offsets_.size() == 1 && window_us.has_value() &&
      *newest_us_ - *window_us <= absl::ToInt64Microseconds(kOffsetProofSpan)) {
    *proven = true;
    return newest_offset_;
  }
  // Both of the zone's offsets were seen: the lower one (standard time) is never too high.
  if (offsets_.size() >= 2) return *offsets_.begin();
  return newest_offset_ - kMaxDstShiftSeconds;
}

struct Reconciler::Shared {
  absl::Mutex mu;
  bool stopping ABSL_GUARDED_BY(mu) = false;
  // On-demand and scheduled runs in progress; Stop waits for zero.
  int active_runs ABSL_GUARDED_BY(mu) = 0;
};

struct Reconciler::Source {
  std::string name;
  bool configured = false;
  std::string base_url;
  ReconcileConfig config;
  std::shared_ptr<AkeneoClient> client;
  // rest.timezone, when set.
  std::optional<absl::TimeZone> configured_zone;
  std::string configured_zone_name;
  // Touched by runs only (under run_mu): what has been logged once already.
  bool logged_other_origin = false;
  std::string logged_products_path;
  // Nested kinds this PIM did not list at the last run (logged once, until it lists them).
  std::set<std::string> logged_unavailable;
  // Held for the whole of a run: runs of one source never overlap.
  absl::Mutex run_mu;
  mutable absl::Mutex mu;
  ReconcileSourceStats stats ABSL_GUARDED_BY(mu);
  std::thread scheduler;
};

struct Reconciler::RunContext {
  explicit RunContext(ReconcileRunStats& s) : stats(s) {}
  ReconcileRunStats& stats;
  std::string request_id;
  int64_t started_us = 0;
  std::optional<int64_t> max_updated_us;  // largest valid `updated` seen
  int invalid_logged = 0;
  // Full runs: the ids the PIM returned for the kind being scanned, and when its listing began.
  bool collect_ids = false;
  ResourceIdSet seen;
  // The PIM's offsets, from the `updated` values read.
  PimOffsetEvidence offsets;
  // rest.timezone set: `updated` values whose offset is not the configured zone's at that time.
  uint64_t zone_mismatches = 0;
  std::string zone_mismatch_example;
  // The PIM has no products-uuid (PIM 5/6): products are keyed by identifier.
  bool products_by_identifier = false;
  int64_t listing_started_us = 0;
};

absl::StatusOr<std::unique_ptr<Reconciler>> Reconciler::Create(
    const std::vector<SourceConfig>& sources, ClientMap clients, EventLog* log,
    ReconcilerOptions options) {
  if (log == nullptr) return absl::InvalidArgumentError("the reconciler needs the event log");
  if (options.page_size < 1 || options.page_size > kAkeneoMaxPageSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("reconciler page size must be 1 to ", kAkeneoMaxPageSize));
  }
  if (options.deletion_check_chunk == 0 || options.deletions_per_append == 0) {
    return absl::InvalidArgumentError("reconciler deletion chunks must be at least 1");
  }
  std::unique_ptr<Reconciler> reconciler(new Reconciler(log, options));
  for (const SourceConfig& config : sources) {
    auto source = std::make_unique<Source>();
    source->name = config.name;
    source->configured = config.rest.has_value();
    if (config.rest) {
      auto client = clients.find(config.name);
      if (client == clients.end() || client->second == nullptr) {
        return absl::InvalidArgumentError(
            absl::StrCat("source ", config.name, " has `rest` but no REST client was given"));
      }
      source->client = client->second;
      clients.erase(client);
      source->base_url = config.rest->base_url.spec();
      source->config = config.reconcile.value_or(ReconcileConfig{});
      if (config.rest->timezone.has_value()) {
        source->configured_zone = config.rest->timezone->zone;
        source->configured_zone_name = config.rest->timezone->name;
      }
    }
    absl::StatusOr<std::optional<int64_t>> watermark = ReadInt(*log, WatermarkKey(config.name));
    if (!watermark.ok()) return watermark.status();
    absl::StatusOr<std::optional<LearnedOffset>> learned =
        ReadLearnedOffset(*log, UtcOffsetKey(config.name));
    if (!learned.ok()) return learned.status();
    std::map<std::string, int64_t> kind_watermarks;
    if (source->configured) {
      std::vector<std::string> kinds;
      for (const StructureKind& structure : kStructureKinds) {
        if (source->config.*structure.enabled) kinds.push_back(structure.kind);
      }
      for (const NestedKind& nested : kNestedKinds) {
        if (source->config.*nested.enabled) kinds.push_back(nested.kind);
      }
      for (const std::string& kind : kinds) {
        absl::StatusOr<std::optional<int64_t>> kind_watermark =
            ReadInt(*log, KindWatermarkKey(config.name, kind));
        if (!kind_watermark.ok()) return kind_watermark.status();
        if (kind_watermark->has_value()) kind_watermarks[kind] = **kind_watermark;
      }
    }
    {
      absl::MutexLock lock(&source->mu);
      source->stats.source = config.name;
      source->stats.configured = source->configured;
      source->stats.watermark_us = *watermark;
      source->stats.kind_watermarks_us = std::move(kind_watermarks);
      if (source->configured) {
        std::optional<int64_t> next_window = source->config.since_us;
        if (watermark->has_value()) {
          next_window =
              **watermark - absl::ToInt64Microseconds(absl::FromChrono(source->config.overlap));
        }
        DescribeTimeZone(source->configured_zone, source->configured_zone_name, *learned,
                         next_window, source->stats);
      }
    }
    reconciler->sources_.push_back(std::move(source));
  }
  if (!clients.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("a REST client was given for ",
                                                   clients.begin()->first,
                                                   ", which is not a source with `rest`"));
  }
  return reconciler;
}

Reconciler::Reconciler(EventLog* log, ReconcilerOptions options)
    : log_(log), options_(options), shared_(std::make_shared<Shared>()) {}

Reconciler::~Reconciler() { Stop(); }

void Reconciler::Start() {
  {
    absl::MutexLock lock(&stats_mu_);
    if (started_) return;
    started_ = true;
  }
  {
    absl::MutexLock lock(&shared_->mu);
    if (shared_->stopping) return;
  }
  for (auto& source : sources_) {
    if (!source->configured || source->config.interval.count() <= 0) continue;
    {
      absl::MutexLock lock(&source->mu);
      source->stats.next_run = absl::Now();
    }
    source->scheduler = std::thread([this, s = source.get()] { ScheduleLoop(*s); });
  }
}

void Reconciler::Stop() {
  {
    absl::MutexLock lock(&shared_->mu);
    // Every wait of a run is an Await on this mutex with a condition that includes `stopping`:
    // setting it wakes them all.
    shared_->stopping = true;
  }
  for (auto& source : sources_) {
    if (source->scheduler.joinable()) source->scheduler.join();
  }
  absl::MutexLock lock(&shared_->mu);
  shared_->mu.Await(absl::Condition(
      +[](Shared* shared) { return shared->active_runs == 0; }, shared_.get()));
}

void Reconciler::ScheduleLoop(Source& source) {
  for (;;) {
    absl::Time next;
    {
      absl::MutexLock lock(&source.mu);
      next = source.stats.next_run.value_or(absl::Now());
    }
    {
      absl::MutexLock lock(&shared_->mu);
      const bool* stopping = &shared_->stopping;
      shared_->mu.AwaitWithDeadline(absl::Condition(stopping), next);
      if (shared_->stopping) return;
    }
    {
      // An on-demand run may have moved the schedule while this thread slept.
      absl::MutexLock lock(&source.mu);
      if (source.stats.next_run.has_value() && *source.stats.next_run > absl::Now()) continue;
    }
    if (options_.may_run_scheduled && !options_.may_run_scheduled()) {
      // Another node of the cluster runs the schedule; this one looks again one interval on.
      absl::MutexLock lock(&source.mu);
      source.stats.next_run = absl::Now() + absl::FromChrono(source.config.interval);
      continue;
    }
    absl::StatusOr<ReconcileRunStats> run = RunLocked(source, ReconcileOptions{}, true);
    if (!run.ok() && absl::IsCancelled(run.status())) return;
  }
}

absl::Status Reconciler::Cancelled() const {
  return absl::CancelledError("reconciliation stopped: pimgate is shutting down");
}

absl::StatusOr<ReconcileRunStats> Reconciler::Run(const std::string& name,
                                                  ReconcileOptions options) {
  Source* source = nullptr;
  for (auto& candidate : sources_) {
    if (candidate->name == name) source = candidate.get();
  }
  if (source == nullptr) {
    std::string known;
    for (auto& candidate : sources_) {
      absl::StrAppend(&known, known.empty() ? "" : ", ", candidate->name);
    }
    return absl::NotFoundError(absl::StrCat(
        "no source named \"", name, "\"", known.empty() ? "" : absl::StrCat("; sources: ", known)));
  }
  if (!source->configured) {
    return absl::FailedPreconditionError(absl::StrCat(
        "source ", name, " has no `rest` section: reconciliation needs the PIM's REST API"));
  }
  if (options.full && options.since_us.has_value()) {
    return absl::InvalidArgumentError(
        "a full reconciliation lists everything: it takes no `since`");
  }
  return RunLocked(*source, options, /*scheduled=*/false);
}

absl::StatusOr<ReconcileRunStats> Reconciler::RunLocked(Source& source,
                                                        const ReconcileOptions& options,
                                                        bool scheduled) {
  {
    absl::MutexLock lock(&shared_->mu);
    if (shared_->stopping) return Cancelled();
    ++shared_->active_runs;
  }
  ReconcileRunStats stats;
  {
    absl::MutexLock run_lock(&source.run_mu);
    {
      absl::MutexLock lock(&source.mu);
      source.stats.running = true;
    }
    stats.source = source.name;
    stats.full = options.full;
    stats.scheduled = scheduled;
    stats.started_at = absl::Now();
    stats.status = Execute(source, options, stats);
    stats.finished_at = absl::Now();

    const ReconcileConfig& config = source.config;
    absl::MutexLock lock(&source.mu);
    ReconcileSourceStats& totals = source.stats;
    totals.running = false;
    totals.items_scanned += stats.scanned;
    totals.events_emitted += stats.emitted;
    totals.deletions_emitted += stats.deleted;
    totals.in_sync += stats.in_sync;
    totals.api_calls += stats.api_calls;
    if (stats.watermark_us.has_value()) totals.watermark_us = stats.watermark_us;
    for (const ReconcileKindRunStats& kind : stats.kinds) {
      if (kind.watermark_us.has_value()) totals.kind_watermarks_us[kind.kind] = *kind.watermark_us;
    }
    if (stats.status.ok()) {
      ++totals.runs_succeeded;
      totals.last_success = stats.finished_at;
      // A successful on-demand run of the default window (or a full one) is as good as a
      // scheduled run: the next scheduled one comes `interval` after it.
      if (totals.next_run.has_value() && (scheduled || !options.since_us)) {
        totals.next_run = stats.finished_at + absl::FromChrono(config.interval);
      }
    } else if (!absl::IsCancelled(stats.status)) {
      ++totals.runs_failed;
      if (scheduled) totals.next_run = stats.finished_at + absl::FromChrono(config.retry_after);
    }
    // A run cancelled by Stop is not a result: the last finished run stays on record.
    if (!absl::IsCancelled(stats.status)) totals.last_run = stats;
  }
  if (stats.status.ok()) {
    spdlog::info(
        "[reconcile] {} run {}{}: scanned {}, emitted {}, deleted {}, in sync {}, invalid {}, "
        "{} API call(s), {:.3f}s, window {}, watermark {}{}{}",
        source.name, stats.run, stats.full ? " (full)" : "", stats.scanned, stats.emitted,
        stats.deleted, stats.in_sync, stats.invalid, stats.api_calls,
        absl::ToDoubleSeconds(stats.duration()),
        stats.window_start_us ? absl::StrCat("updated > \"", stats.updated_filter, "\" (",
                                             stats.filter_time_zone, ")")
                              : std::string("everything"),
        stats.watermark_us ? FormatMicros(*stats.watermark_us) : std::string("none"),
        stats.watermark_advanced ? "" : " (unchanged)", KindsSummary(stats));
  } else if (absl::IsCancelled(stats.status)) {
    spdlog::info("[reconcile] {} run {} cancelled ({})", source.name, stats.run, Progress(stats));
  } else {
    spdlog::warn(
        "[reconcile] {} run {} failed after {:.3f}s ({}): {}{}", source.name, stats.run,
        absl::ToDoubleSeconds(stats.duration()), Progress(stats),
        std::string(stats.status.message()),
        scheduled ? absl::StrCat("; retrying in ",
                                 absl::FormatDuration(absl::FromChrono(source.config.retry_after)))
                  : std::string());
  }
  {
    absl::MutexLock lock(&shared_->mu);
    --shared_->active_runs;
  }
  if (!stats.status.ok()) {
    return absl::Status(stats.status.code(),
                        absl::StrCat("reconciliation of ", source.name, " failed (",
                                     Progress(stats), "): ", stats.status.message()));
  }
  return stats;
}

absl::Status Reconciler::Execute(Source& source, const ReconcileOptions& options,
                                 ReconcileRunStats& stats) {
  EventLog& log = *log_;
  RunContext run(stats);
  run.started_us = absl::ToUnixMicros(stats.started_at);

  absl::StatusOr<std::optional<int64_t>> runs = ReadInt(log, RunCounterKey(source.name));
  if (!runs.ok()) return runs.status();
  stats.run = static_cast<uint64_t>(runs->value_or(0)) + 1;
  if (absl::Status s = log.PutMeta(RunCounterKey(source.name), absl::StrCat(stats.run)); !s.ok()) {
    return s;
  }
  run.request_id = absl::StrCat("reconcile-", source.name, "-", stats.run);

  absl::StatusOr<std::optional<int64_t>> watermark = ReadInt(log, WatermarkKey(source.name));
  if (!watermark.ok()) return watermark.status();
  stats.watermark_us = *watermark;
  absl::StatusOr<std::optional<LearnedOffset>> learned =
      ReadLearnedOffset(log, UtcOffsetKey(source.name));
  if (!learned.ok()) return learned.status();

  // The window a scheduled run uses, and the one this run uses.
  const int64_t overlap_us = absl::ToInt64Microseconds(absl::FromChrono(source.config.overlap));
  std::optional<int64_t> default_start = source.config.since_us;
  if (watermark->has_value()) default_start = **watermark - overlap_us;
  std::optional<int64_t> start = default_start;
  if (options.since_us) start = options.since_us;
  if (options.full) start.reset();
  stats.window_start_us = start;
  if (start.has_value()) {
    const FilterZone zone =
        ZoneForWindow(source.configured_zone, source.configured_zone_name, *learned, *start);
    stats.updated_filter = AkeneoSearchTime(*start, zone.zone);
    stats.filter_time_zone = zone.name;
  }
  // Whether this run looked at least as far back as a scheduled run would: only then may the
  // watermark move.
  const bool covers_default = !start.has_value() || (default_start && *start <= *default_start);

  struct KindScan {
    bool enabled;
    const char* kind;
  };
  const KindScan kinds[] = {{source.config.products, kProductKind},
                            {source.config.product_models, kProductModelKind}};
  for (const KindScan& scan : kinds) {
    if (!scan.enabled) continue;
    run.collect_ids = options.full;
    run.seen.Clear();
    run.listing_started_us = absl::ToUnixMicros(absl::Now());
    const std::string search = start.has_value() ? UpdatedSearch(stats.updated_filter) : "";
    if (absl::Status s = ScanKind(source, run, scan.kind, search); !s.ok()) return s;
    if (options.full) {
      if (absl::Status s = CheckDeletions(source, run, scan.kind); !s.ok()) return s;
      run.seen.Clear();
    }
  }

  if (covers_default && run.max_updated_us.has_value()) {
    // See the class comment: PIM clock, capped at the run's start, never backwards.
    int64_t candidate = std::min(*run.max_updated_us, run.started_us);
    if (watermark->has_value()) candidate = std::max(candidate, **watermark);
    if (!watermark->has_value() || candidate != **watermark) {
      if (absl::Status s = log.PutMeta(WatermarkKey(source.name), absl::StrCat(candidate));
          !s.ok()) {
        return s;
      }
      stats.watermark_advanced = true;
    }
    stats.watermark_us = candidate;
  }

  if (run.zone_mismatches > 0) {
    spdlog::warn(
        "[reconcile] {}: rest.timezone {} disagrees with {} `updated` value(s) the PIM wrote, e.g. "
        "{}: the `updated` filter may skip changes; correct rest.timezone, or remove it to learn "
        "the PIM's offset",
        source.name, source.configured_zone_name, run.zone_mismatches, run.zone_mismatch_example);
  }
  // What the PIM's `updated` values tell of its offset at the next scheduled window start,
  // persisted after the watermark it goes with.
  std::optional<LearnedOffset> next_learned = *learned;
  if (covers_default && stats.watermark_us.has_value() && !run.offsets.empty()) {
    const int64_t next_window = *stats.watermark_us - overlap_us;
    std::optional<int> proven_at_window;
    if (learned->has_value() && start.has_value() && (*learned)->window_start_us == *start) {
      proven_at_window = (*learned)->filter_offset;
    }
    bool proven = false;
    LearnedOffset offset;
    offset.filter_offset =
        run.offsets.NextFilterOffset(next_window, proven_at_window, start, &proven);
    offset.window_start_us = next_window;
    offset.observed_offset = run.offsets.newest_offset();
    if (!learned->has_value() || !(**learned == offset)) {
      if (absl::Status s = log.PutMeta(UtcOffsetKey(source.name), offset.Encode()); !s.ok()) {
        return s;
      }
      if (!source.configured_zone.has_value() &&
          (!learned->has_value() || (*learned)->observed_offset != offset.observed_offset ||
           (*learned)->filter_offset != offset.filter_offset)) {
        spdlog::info(
            "[reconcile] {}: the PIM writes its times with UTC offset {}; the next window starts "
            "{} and is written with {}{}",
            source.name, FormatUtcOffset(offset.observed_offset), FormatMicros(next_window),
            FormatUtcOffset(offset.filter_offset),
            proven ? "" : " (not yet confirmed at that instant: the window is widened)");
      }
    }
    next_learned = offset;
  }
  std::optional<int64_t> next_window = source.config.since_us;
  if (stats.watermark_us.has_value()) next_window = *stats.watermark_us - overlap_us;
  {
    absl::MutexLock lock(&source.mu);
    DescribeTimeZone(source.configured_zone, source.configured_zone_name, next_learned, next_window,
                     source.stats);
    if (!stats.products_path.empty()) source.stats.products_path = stats.products_path;
  }
  std::optional<int64_t> learned_window;
  std::optional<int> learned_offset;
  if (next_learned.has_value()) {
    learned_window = next_learned->window_start_us;
    learned_offset = next_learned->filter_offset;
  }
  return ScanStructureKinds(source, run, options, learned_window, learned_offset);
}

absl::Status Reconciler::ScanStructureKinds(Source& source, RunContext& run,
                                            const ReconcileOptions& options,
                                            const std::optional<int64_t>& learned_filter_window,
                                            std::optional<int> learned_filter_offset) {
  EventLog& log = *log_;
  ReconcileRunStats& stats = run.stats;
  std::optional<LearnedOffset> learned;
  if (learned_filter_window.has_value() && learned_filter_offset.has_value()) {
    learned = LearnedOffset{*learned_filter_offset, *learned_filter_window, 0};
  }
  const int64_t overlap_us = absl::ToInt64Microseconds(absl::FromChrono(source.config.overlap));
  absl::Status first_error;
  // No deletion check for these kinds (docs/reconciliation.md): their ids are not collected.
  run.collect_ids = false;
  run.seen.Clear();
  // The structure kinds, then the nested (Enterprise Edition) ones, as configured.
  struct Listed {
    const char* kind;
    const char* path;  // for messages
    const NestedKind* nested;
  };
  std::vector<Listed> listed;
  for (const StructureKind& structure : kStructureKinds) {
    if (source.config.*structure.enabled)
      listed.push_back({structure.kind, structure.path, nullptr});
  }
  for (const NestedKind& nested : kNestedKinds) {
    if (source.config.*nested.enabled)
      listed.push_back({nested.kind, nested.parents_path, &nested});
  }
  for (const Listed& structure : listed) {
    ReconcileKindRunStats& kind_stats = stats.kinds.emplace_back();
    kind_stats.kind = structure.kind;
    const std::string key = KindWatermarkKey(source.name, structure.kind);
    absl::StatusOr<std::optional<int64_t>> watermark = ReadInt(log, key);
    if (!watermark.ok()) return watermark.status();
    kind_stats.watermark_us = *watermark;
    // The same rules as the products' window, on this kind's own watermark.
    std::optional<int64_t> default_start = source.config.since_us;
    if (watermark->has_value()) default_start = **watermark - overlap_us;
    std::optional<int64_t> start = default_start;
    if (options.since_us) start = options.since_us;
    if (options.full) start.reset();
    const bool covers_default = !start.has_value() || (default_start && *start <= *default_start);
    std::string search;
    if (start.has_value()) {
      const FilterZone zone =
          ZoneForWindow(source.configured_zone, source.configured_zone_name, learned, *start);
      kind_stats.updated_filter = IsoFilterTime(*start, zone.zone);
      search = UpdatedSearch(kind_stats.updated_filter);
    }
    const uint64_t scanned_before = stats.scanned;
    const uint64_t emitted_before = stats.emitted;
    // This kind's largest `updated`, apart from the products' (already persisted above).
    std::optional<int64_t> products_max = std::exchange(run.max_updated_us, std::nullopt);
    absl::Status status = structure.nested == nullptr
                              ? ScanKind(source, run, structure.kind, search)
                              : ScanNestedKind(source, run, structure.kind, search, kind_stats);
    const std::optional<int64_t> max_updated = std::exchange(run.max_updated_us, products_max);
    kind_stats.scanned = stats.scanned - scanned_before;
    kind_stats.emitted = stats.emitted - emitted_before;
    // A kind this PIM does not have keeps its watermark and fails nothing (kind_stats.status
    // says why it was not listed).
    if (kind_stats.unavailable) continue;
    kind_stats.status = status;
    if (!status.ok()) {
      if (absl::IsCancelled(status)) return status;
      // What was appended before the failing page stays (each page is one append); the watermark
      // does not move, so the next run lists this window again.
      spdlog::warn("[reconcile] {}: listing {} failed (its watermark stays): {}", source.name,
                   structure.path, std::string(status.message()));
      if (first_error.ok()) {
        first_error =
            absl::Status(status.code(), absl::StrCat(structure.path, ": ", status.message()));
      }
      continue;
    }
    if (covers_default && max_updated.has_value()) {
      int64_t candidate = std::min(*max_updated, run.started_us);
      if (watermark->has_value()) candidate = std::max(candidate, **watermark);
      if (!watermark->has_value() || candidate != **watermark) {
        if (absl::Status s = log.PutMeta(key, absl::StrCat(candidate)); !s.ok()) return s;
        kind_stats.watermark_advanced = true;
      }
      kind_stats.watermark_us = candidate;
    }
  }
  return first_error;
}

absl::Status Reconciler::ScanKind(Source& source, RunContext& run, const std::string& kind,
                                  const std::string& search, const std::string& parent) {
  EventLog& log = *log_;
  ReconcileRunStats& stats = run.stats;
  const bool products = kind == kProductKind;
  const StructureKind* structure = StructureKindOf(kind);
  const NestedKind* nested = NestedKindOf(kind);
  std::string path = products ? kProductsPath : kProductModelsPath;
  std::string id_field = products ? "uuid" : "code";
  // Nested kinds: "<parent>/<code>", the id their Event Platform events carry.
  const std::string id_prefix = nested != nullptr ? absl::StrCat(parent, "/") : std::string();
  const std::string updated_type = absl::StrCat(kind, ".updated");
  std::string target;
  if (nested != nullptr) {
    // search_after paging without `limit` (the only kind these lists have): the first page, then
    // the PIM's links.
    path = absl::StrCat(nested->parents_path, "/", UrlEncode(parent), "/", nested->nested);
    target = search.empty() ? path : absl::StrCat(path, "?search=", UrlEncode(search));
  } else if (structure != nullptr) {
    // Offset paging (the only kind these lists have): the first page, then the PIM's links.
    path = structure->path;
    target = absl::StrCat(path, "?",
                          search.empty() ? "" : "search=", search.empty() ? "" : UrlEncode(search),
                          search.empty() ? "" : "&", "limit=", options_.page_size);
  } else {
    target = SearchAfterTarget(path, search, options_.page_size);
  }
  bool first_page = true;
  while (!target.empty()) {
    absl::StatusOr<std::string> body = Fetch(source, target);
    ++stats.api_calls;
    if (first_page && absl::IsNotFound(body.status())) {
      // A list answers 200, even when empty: a 404 means the route does not exist.
      if (!IsAkeneoNotFound(body.status())) {
        return absl::FailedPreconditionError(absl::StrCat(
            body.status().message(), " (not Akeneo's JSON error: is rest.base_url ",
            source.base_url, " the PIM's own address, without a proxy path in front?)"));
      }
      if (products && path == kProductsPath) {
        // PIM 5 and 6: products by identifier, the key their events use too.
        path = kProductsByIdentifierPath;
        id_field = "identifier";
        run.products_by_identifier = true;
        target = SearchAfterTarget(path, search, options_.page_size);
        if (source.logged_products_path != path) {
          source.logged_products_path = path;
          spdlog::warn(
              "[reconcile] {}: {} has no {} (a PIM before 7.0: {}); reconciling products through "
              "{}, keyed by identifier like that PIM's events",
              source.name, source.base_url, kProductsPath, std::string(body.status().message()),
              path);
        }
        continue;
      }
    }
    if (!body.ok()) return body.status();
    if (first_page && products && path == kProductsPath &&
        source.logged_products_path == kProductsByIdentifierPath) {
      source.logged_products_path = path;
      spdlog::warn(
          "[reconcile] {}: {} now has {} (upgraded to 7.0 or later); products are keyed "
          "by uuid from now on",
          source.name, source.base_url, kProductsPath);
    }
    first_page = false;
    absl::StatusOr<Page> page = ParsePage(*body, target);
    if (!page.ok()) return page.status();
    body->clear();

    const google::protobuf::Timestamp received_at = NowTimestamp();
    AppendRequest request;
    for (Struct& item : page->items) {
      ++stats.scanned;
      const std::string& code = StringField(item, id_field);
      const std::string id = code.empty() ? std::string() : absl::StrCat(id_prefix, code);
      if (!id.empty() && run.collect_ids) run.seen.Insert(id);
      const std::string& updated = StringField(item, "updated");
      absl::StatusOr<AkeneoTimestamp> stamp = updated.empty()
                                                  ? absl::InvalidArgumentError("no `updated`")
                                                  : ParseAkeneoTimestamp(updated);
      absl::StatusOr<int64_t> version_us =
          stamp.ok() ? absl::StatusOr<int64_t>(stamp->time_us) : stamp.status();
      if (stamp.ok()) {
        run.offsets.Add(stamp->time_us, stamp->offset_seconds);
        if (source.configured_zone.has_value() &&
            source.configured_zone->At(absl::FromUnixMicros(stamp->time_us)).offset !=
                stamp->offset_seconds &&
            run.zone_mismatches++ == 0) {
          run.zone_mismatch_example = absl::StrCat(
              updated, " where the zone's offset is ",
              FormatUtcOffset(
                  source.configured_zone->At(absl::FromUnixMicros(stamp->time_us)).offset));
        }
      }
      if (id.empty() || !version_us.ok()) {
        ++stats.invalid;
        if (run.invalid_logged++ < options_.max_invalid_logged) {
          spdlog::warn("[reconcile] {}: skipped a {} from {}: {}", source.name, kind, path,
                       id.empty() ? absl::StrCat("it has no `", id_field, "`")
                                  : absl::StrCat(kind, " ", id, ": `updated` ",
                                                 version_us.status().message()));
        }
        continue;
      }
      run.max_updated_us = std::max(run.max_updated_us.value_or(*version_us), *version_us);

      absl::StatusOr<std::optional<ResourceVersion>> known =
          log.FindVersion(ResourceKey{source.name, kind, id});
      if (!known.ok()) return known.status();
      // Not newer than what the log has (same version included): nothing to deliver.
      if (known->has_value() && *version_us <= (*known)->version_at_us) {
        ++stats.in_sync;
        continue;
      }

      v1::Event& event = request.events.emplace_back();
      event.set_id(absl::StrCat("reconcile:", kind, ":", id, ":", *version_us));
      event.set_source(source.name);
      event.set_type(updated_type);
      event.set_original_type(updated_type);
      event.set_kind(kind);
      event.set_resource_id(id);
      *event.mutable_version_at() = TimeUtil::MicrosecondsToTimestamp(*version_us);
      *event.mutable_occurred_at() = event.version_at();
      *event.mutable_received_at() = received_at;
      event.set_pim_source(source.base_url);
      event.set_origin(v1::ORIGIN_RECONCILIATION);
      event.set_request_id(run.request_id);
      item.mutable_fields()->erase("_links");  // the API's navigation, not the resource
      *event.mutable_data() = std::move(item);
    }
    absl::StatusOr<std::string> next = FollowNext(source, page->next, target);
    if (!next.ok()) return next.status();
    const std::size_t candidates = request.events.size();
    if (candidates > 0) {
      absl::StatusOr<AppendResult> result = AppendAndWait(std::move(request));
      if (!result.ok()) return result.status();
      // Duplicates (an id stored by an earlier run) and stale ones (a webhook with a newer version
      // won the race since the lookup above) deliver nothing: they count as in sync.
      const uint64_t deliverable = result->accepted - result->stale;
      stats.emitted += deliverable;
      stats.in_sync += candidates - deliverable;
    }
    target = *std::move(next);
  }
  if (products) stats.products_path = path;
  return absl::OkStatus();
}

absl::StatusOr<std::string> Reconciler::FollowNext(Source& source, const std::string& href,
                                                   const std::string& current) {
  if (href.empty()) return std::string();
  bool other_origin = false;
  absl::StatusOr<std::string> mapped = NextPageTarget(source.base_url, href, &other_origin);
  if (!mapped.ok()) return mapped.status();
  if (other_origin && !source.logged_other_origin) {
    source.logged_other_origin = true;
    spdlog::warn(
        "[reconcile] {}: the PIM writes its next-page links on another scheme or port than "
        "rest.base_url ({}, e.g. behind a TLS-terminating proxy that it does not trust); "
        "following them on {}",
        source.name, href.substr(0, href.find('/', href.find("//") + 2)), source.base_url);
  }
  if (*mapped == current) {
    return absl::FailedPreconditionError(
        absl::StrCat("the PIM's next-page link repeats the page just read: ", current));
  }
  return mapped;
}

absl::Status Reconciler::ScanNestedKind(Source& source, RunContext& run, const std::string& kind,
                                        const std::string& search,
                                        ReconcileKindRunStats& kind_stats) {
  ReconcileRunStats& stats = run.stats;
  const NestedKind& nested = *NestedKindOf(kind);
  // The parents, all of them (their list has no filter): a parent created since the last run is
  // listed like the others, with the same window. That window is enough: the kind's watermark is
  // capped at the run's start, before this list was read, so whatever a parent created later
  // holds was updated after the watermark.
  std::vector<std::string> parents;
  std::string target = nested.parents_path;
  bool first_page = true;
  while (!target.empty()) {
    absl::StatusOr<std::string> body = Fetch(source, target);
    ++stats.api_calls;
    if (first_page && !body.ok() &&
        (IsAkeneoNotFound(body.status()) || IsForbidden(body.status()))) {
      // The PIM itself answers that it has no such list (Community Edition: no route) or that
      // the connection may not read it: nothing to reconcile for this kind, and nothing a retry
      // would change. Told in the run's figures; logged once until the PIM lists it.
      const bool missing = absl::IsNotFound(body.status());
      const std::string reason =
          missing ? absl::StrCat("the PIM has no ", nested.parents_path, " (",
                                 body.status().message(), "): ", nested.items,
                                 " exist on Enterprise Edition and Serenity PIMs only, not on "
                                 "Community Edition; turn reconcile.",
                                 nested.config_key, " off for this source")
                  : absl::StrCat("the PIM refuses ", nested.parents_path,
                                 " to the connection's user (", body.status().message(),
                                 "): give its role the permission to list ", nested.parents,
                                 ", or, on a PIM without them (Community Edition), turn reconcile.",
                                 nested.config_key, " off for this source");
      kind_stats.unavailable = true;
      kind_stats.status =
          missing ? absl::UnimplementedError(reason) : absl::PermissionDeniedError(reason);
      if (source.logged_unavailable.insert(nested.kind).second) {
        spdlog::warn("[reconcile] {}: {} not reconciled: {}", source.name, nested.items, reason);
      }
      return absl::OkStatus();
    }
    if (first_page && absl::IsNotFound(body.status())) {
      return absl::FailedPreconditionError(
          absl::StrCat(body.status().message(), " (not Akeneo's JSON error: is rest.base_url ",
                       source.base_url, " the PIM's own address, without a proxy path in front?)"));
    }
    if (!body.ok()) return body.status();
    first_page = false;
    absl::StatusOr<Page> page = ParsePage(*body, target);
    if (!page.ok()) return page.status();
    for (const Struct& item : page->items) {
      const std::string& code = StringField(item, "code");
      if (code.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat("the PIM's answer to ", target, ": an item has no `code`"));
      }
      parents.push_back(code);
    }
    absl::StatusOr<std::string> next = FollowNext(source, page->next, target);
    if (!next.ok()) return next.status();
    target = *std::move(next);
  }
  if (source.logged_unavailable.erase(nested.kind) > 0) {
    spdlog::info("[reconcile] {}: the PIM lists {} now: {} are reconciled", source.name,
                 nested.parents, nested.items);
  }
  kind_stats.parents = parents.size();
  for (const std::string& parent : parents) {
    absl::Status status = ScanKind(source, run, nested.kind, search, parent);
    if (IsAkeneoNotFound(status)) {
      // Deleted since its listing: so are its items (their deletion is not reconciled).
      ++kind_stats.parents_gone;
      spdlog::info("[reconcile] {}: {}/{} is gone (deleted since it was listed): skipped",
                   source.name, nested.parents_path, parent);
      continue;
    }
    if (!status.ok()) {
      // Items already appended stay; the kind's watermark does not move (the caller), so the
      // next run lists every parent's window again.
      return absl::Status(status.code(), absl::StrCat(nested.parents_path, "/", parent, "/",
                                                      nested.nested, ": ", status.message()));
    }
  }
  return absl::OkStatus();
}

absl::Status Reconciler::CheckDeletions(Source& source, RunContext& run, const std::string& kind) {
  EventLog& log = *log_;
  ReconcileRunStats& stats = run.stats;
  // A resource whose newest version is this recent may have been created after the listing
  // passed its page: the overlap also absorbs the PIM's clock running ahead of pimgate's.
  const int64_t recent_us =
      run.listing_started_us - absl::ToInt64Microseconds(absl::FromChrono(source.config.overlap));
  const std::string deleted_type = absl::StrCat(kind, ".deleted");
  const bool by_identifier = kind == kProductKind && run.products_by_identifier;
  const std::string id_field =
      kind == kProductKind ? (by_identifier ? "identifier" : "uuid") : "code";
  std::string after;
  AppendRequest request;
  const auto flush = [&]() -> absl::Status {
    if (request.events.empty()) return absl::OkStatus();
    const std::size_t candidates = request.events.size();
    absl::StatusOr<AppendResult> result = AppendAndWait(std::move(request));
    request = AppendRequest{};
    if (!result.ok()) return result.status();
    stats.deleted += result->accepted - result->stale;
    stats.in_sync += candidates - (result->accepted - result->stale);
    return absl::OkStatus();
  };
  for (;;) {
    {
      absl::MutexLock lock(&shared_->mu);
      if (shared_->stopping) return Cancelled();
    }
    absl::StatusOr<std::vector<ResourceVersionEntry>> chunk =
        log.ListVersions(source.name, kind, after, options_.deletion_check_chunk);
    if (!chunk.ok()) return chunk.status();
    if (chunk->empty()) break;
    after = chunk->back().resource_id;
    const google::protobuf::Timestamp now = NowTimestamp();
    for (const ResourceVersionEntry& entry : *chunk) {
      if (entry.version.deleted) continue;  // its deletion is already in the log
      if (run.seen.Contains(entry.resource_id)) continue;
      // products-uuid answers with UUIDs; a product the log knows by identifier only (PIM 5/6
      // legacy events) cannot be compared. A PIM without products-uuid was listed by identifier,
      // the key of every product its events name.
      if (kind == kProductKind && !by_identifier && !PackUuid(entry.resource_id).has_value()) {
        ++stats.unchecked;
        continue;
      }
      if (entry.version.version_at_us >= recent_us) continue;
      v1::Event& event = request.events.emplace_back();
      // Deterministic: the same deletion found twice (the same last known version) is a dedup
      // duplicate.
      event.set_id(absl::StrCat("reconcile-deleted:", kind, ":", entry.resource_id, ":",
                                entry.version.version_at_us));
      event.set_source(source.name);
      event.set_type(deleted_type);
      event.set_original_type(deleted_type);
      event.set_kind(kind);
      event.set_resource_id(entry.resource_id);
      *event.mutable_version_at() = now;
      *event.mutable_occurred_at() = now;
      *event.mutable_received_at() = now;
      event.set_pim_source(source.base_url);
      event.set_origin(v1::ORIGIN_RECONCILIATION);
      event.set_request_id(run.request_id);
      (*event.mutable_data()->mutable_fields())[id_field].set_string_value(entry.resource_id);
      if (request.events.size() >= options_.deletions_per_append) {
        if (absl::Status s = flush(); !s.ok()) return s;
      }
    }
  }
  return flush();
}

absl::StatusOr<std::string> Reconciler::Fetch(Source& source, const std::string& target) {
  // The result lives in a shared block guarded by shared_->mu: if this run gives up waiting
  // (Stop), the client completes the call later into a block nobody reads.
  struct Pending {
    bool done = false;
    absl::StatusOr<std::string> body;
  };
  auto pending = std::make_shared<Pending>();
  std::shared_ptr<Shared> shared = shared_;
  {
    absl::MutexLock lock(&shared->mu);
    if (shared->stopping) return Cancelled();
  }
  source.client->GetAsync(target, [shared, pending](absl::StatusOr<std::string> body) {
    absl::MutexLock lock(&shared->mu);
    pending->body = std::move(body);
    pending->done = true;
  });
  absl::MutexLock lock(&shared->mu);
  const auto ready = [&]() { return pending->done || shared->stopping; };
  shared->mu.Await(absl::Condition(&ready));
  if (!pending->done) return Cancelled();
  return std::move(pending->body);
}

absl::StatusOr<AppendResult> Reconciler::AppendAndWait(AppendRequest request) {
  struct Pending {
    bool done = false;
    absl::StatusOr<AppendResult> result;
  };
  auto pending = std::make_shared<Pending>();
  std::shared_ptr<Shared> shared = shared_;
  log_->Append(std::move(request), [shared, pending](absl::StatusOr<AppendResult> result) {
    absl::MutexLock lock(&shared->mu);
    pending->result = std::move(result);
    pending->done = true;
  });
  absl::MutexLock lock(&shared->mu);
  const auto ready = [&]() { return pending->done || shared->stopping; };
  shared->mu.Await(absl::Condition(&ready));
  // Stopping: the append may still commit (the log drains its queue); the run reports Cancelled
  // and the watermark does not move, so the next run looks at these items again.
  if (!pending->done) return Cancelled();
  return std::move(pending->result);
}

std::vector<ReconcileSourceStats> Reconciler::Stats() const {
  std::vector<ReconcileSourceStats> out;
  out.reserve(sources_.size());
  for (const auto& source : sources_) {
    absl::MutexLock lock(&source->mu);
    out.push_back(source->stats);
  }
  return out;
}

}  // namespace pimgate
