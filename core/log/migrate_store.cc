// pimgate migrate-store: an embedded store copied into a JetStream stream through the two
// backends (rocksdb_backend.h, jetstream_backend.h). Order of the copy, each step resumable:
//   1. the marker (kMigrateSourceKey): which store this stream is a copy of;
//   2. events, from the stream's head on, in records of batch_events (sequences kept; each
//      record holds the dedup ids of its events), then the head itself when retention had
//      trimmed every event;
//   3. quarantine entries, from the stream's last quarantine id on;
//   4. resource versions, metadata, dead letters then cursors (all overwrites: done again whole
//      on a resumed run);
//   5. verification, then kMigrateDoneKey.
// A kill at any point leaves a prefix of this sequence in the stream (each append is atomic),
// and a resumed run picks up after it.
#include "core/log/migrate_store.h"

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/log/jetstream_backend.h"
#include "core/log/log_backend.h"
#include "core/log/rocksdb_backend.h"
#include "pimgate/v1/event.pb.h"

namespace pimgate {
namespace {

// Metadata the JetStream backend keeps in its replica: a source holding it is a replica, not an
// embedded store.
constexpr char kReplicaMetaPrefix[] = "pimgate.jetstream/";
constexpr std::size_t kPage = 500;
constexpr absl::Duration kProgressEvery = absl::Seconds(1);

absl::Status Context(const absl::Status& status, absl::string_view what) {
  return absl::Status(status.code(), absl::StrCat(what, ": ", status.message()));
}

class Migration {
 public:
  explicit Migration(const MigrateStoreOptions& options) : options_(options) {}

  absl::StatusOr<MigrateStoreCounts> Run() {
    if (absl::Status s = Open(); !s.ok()) return s;
    if (absl::Status s = CheckTarget(); !s.ok()) return s;
    if (absl::Status s = CopyEvents(); !s.ok()) return Context(s, "copying events");
    if (absl::Status s = CopyQuarantine(); !s.ok()) return Context(s, "copying quarantine");
    if (absl::Status s = CopyVersions(); !s.ok()) return Context(s, "copying resource versions");
    if (absl::Status s = CopyMeta(); !s.ok()) return Context(s, "copying metadata");
    if (absl::Status s = CopyPlugins(); !s.ok()) return Context(s, "copying cursors");
    if (absl::Status s = Verify(); !s.ok()) return Context(s, "verifying the copy");
    const std::string done = absl::StrCat(
        counts_.events, " events (", counts_.first_sequence, "..", counts_.last_sequence, "), ",
        counts_.versions, " versions, ", counts_.quarantine, " quarantined, ", counts_.meta,
        " metadata values, ", counts_.plugins, " plugins, ", counts_.dead_letters, " dead letters");
    if (absl::Status s = target_->PutMeta(kMigrateDoneKey, done); !s.ok()) {
      return Context(s, "recording the finished copy");
    }
    Say(absl::StrCat("verified: ", done, "; ", counts_.copied_events,
                     " events copied by this run"));
    return counts_;
  }

 private:
  void Say(const std::string& line) {
    if (options_.progress) options_.progress(line);
  }

  absl::Status Open() {
    const StoreConfig& target = options_.target;
    if (target.backend != StoreBackend::kJetStream || !target.jetstream.has_value()) {
      return absl::InvalidArgumentError(
          "the target configuration has no store.backend: jetstream (and store.jetstream): "
          "migrate-store copies into a JetStream stream");
    }
    std::error_code ec;
    if (!std::filesystem::exists(std::filesystem::path(options_.rocksdb_path) / "CURRENT", ec)) {
      return absl::NotFoundError(
          absl::StrCat("no RocksDB store at ", options_.rocksdb_path, " (no CURRENT file)"));
    }
    const std::filesystem::path source = std::filesystem::weakly_canonical(options_.rocksdb_path);
    const std::filesystem::path replica = std::filesystem::weakly_canonical(target.path);
    if (source == replica) {
      return absl::InvalidArgumentError(absl::StrCat(
          "store.path of the target configuration is the store being copied (", source.string(),
          "): it is the new node's replica directory and must be another, new directory"));
    }
    source_identity_ = source.string();
    absl::StatusOr<std::unique_ptr<LogBackend>> rocksdb = OpenRocksDbBackend(options_.rocksdb_path);
    if (!rocksdb.ok()) {
      return absl::Status(rocksdb.status().code(),
                          absl::StrCat("cannot open the store at ", options_.rocksdb_path,
                                       " (is pimgate still running on it? stop it first): ",
                                       rocksdb.status().message()));
    }
    source_ = std::move(*rocksdb);
    listing_ = RocksDbListingOf(*source_);
    absl::StatusOr<RecoveredState> state = source_->Recover();
    if (!state.ok()) return Context(state.status(), "cannot recover the store being copied");
    source_state_ = *state;
    absl::StatusOr<std::vector<std::pair<std::string, std::string>>> meta = listing_->AllMeta();
    if (!meta.ok()) return meta.status();
    source_meta_ = std::move(*meta);
    for (const auto& [key, value] : source_meta_) {
      if (absl::StartsWith(key, kReplicaMetaPrefix)) {
        return absl::FailedPreconditionError(
            absl::StrCat(options_.rocksdb_path,
                         " is the local replica of a JetStream stream, not an embedded store: "
                         "there is nothing to migrate"));
      }
    }
    absl::StatusOr<std::vector<std::string>> plugins = listing_->Plugins();
    if (!plugins.ok()) return plugins.status();
    plugins_ = std::move(*plugins);

    absl::StatusOr<std::unique_ptr<LogBackend>> jetstream =
        OpenJetStreamBackend(target.path, *target.jetstream);
    if (!jetstream.ok()) return Context(jetstream.status(), "cannot open the JetStream store");
    target_ = std::move(*jetstream);
    absl::StatusOr<RecoveredState> target_state = target_->Recover();
    if (!target_state.ok()) {
      return Context(target_state.status(), "cannot recover the JetStream store");
    }
    head_ = target_state->last_sequence;
    quarantine_id_ = target_state->last_quarantine_id;
    return absl::OkStatus();
  }

  // Empty, or (with resume) holding a copy of this very store.
  absl::Status CheckTarget() {
    const std::string& stream = options_.target.jetstream->stream;
    absl::StatusOr<std::optional<std::string>> marker = target_->GetMeta(kMigrateSourceKey);
    if (!marker.ok()) return marker.status();
    if (marker->has_value()) {
      if (**marker != source_identity_) {
        return absl::FailedPreconditionError(absl::StrCat("stream ", stream,
                                                          " holds a copy of the store at ",
                                                          **marker, ", not of ", source_identity_));
      }
      if (!options_.resume) {
        return absl::FailedPreconditionError(
            absl::StrCat("stream ", stream, " already holds a (possibly interrupted) copy of ",
                         source_identity_, ": run again with --resume to complete and verify it"));
      }
      Say(absl::StrCat("resuming the copy of ", source_identity_, " into stream ", stream,
                       " (it holds events up to sequence ", head_, ")"));
      return absl::OkStatus();
    }
    // No marker: the stream must be empty. What pimgate would have written first: events,
    // quarantine, a metadata value or a cursor of the plugins being copied.
    bool empty = head_ == 0 && quarantine_id_ == 0;
    for (const auto& [key, value] : source_meta_) {
      if (!empty) break;
      absl::StatusOr<std::optional<std::string>> existing = target_->GetMeta(key);
      if (!existing.ok()) return existing.status();
      empty = !existing->has_value();
    }
    for (const std::string& plugin : plugins_) {
      if (!empty) break;
      absl::StatusOr<uint64_t> cursor = target_->LoadCursor(plugin);
      if (!cursor.ok()) return cursor.status();
      empty = *cursor == 0;
    }
    if (!empty) {
      return absl::FailedPreconditionError(absl::StrCat(
          "stream ", stream, " (or its buckets) is not empty and holds no copy of ",
          source_identity_,
          ": migrate-store copies only into an empty stream (choose a new "
          "store.jetstream.stream and bucket names, or delete them with the nats CLI)"));
    }
    Say(absl::StrCat("copying ", source_identity_, " (events up to sequence ",
                     source_state_.last_sequence, ") into stream ", stream));
    return target_->PutMeta(kMigrateSourceKey, source_identity_);
  }

  absl::Status Write(const CommitBatch& batch) {
    absl::Status s = target_->Write(batch, /*sync=*/true);
    if (absl::IsAborted(s)) {
      return absl::FailedPreconditionError(
          absl::StrCat("another writer appended to stream ", options_.target.jetstream->stream,
                       " during the copy: no pimgate node may use it until the copy is done"));
    }
    return s;
  }

  absl::Status CopyEvents() {
    const uint64_t last = source_state_.last_sequence;
    if (head_ > last) {
      return absl::FailedPreconditionError(absl::StrCat("the stream holds events up to sequence ",
                                                        head_, " but the store ends at ", last,
                                                        ": it is not a copy of this store"));
    }
    absl::Time said = absl::InfinitePast();
    uint64_t from = head_ + 1;
    for (;;) {
      absl::StatusOr<std::vector<StoredEvent>> page = source_->ReadStoredEvents(from, kPageOf());
      if (!page.ok()) return page.status();
      if (page->empty()) break;
      CommitBatch batch;
      batch.last_quarantine_id = quarantine_id_;
      for (StoredEvent& event : *page) {
        // Sequences are kept: contiguous after the stream's head (or from the first event
        // retention left, when the stream has none yet).
        if (head_ > 0 || !batch.events.empty()) {
          const uint64_t expected = batch.events.empty() ? head_ + 1 : batch.last_sequence + 1;
          if (event.sequence != expected) {
            return absl::DataLossError(absl::StrCat("the store has no event ", expected,
                                                    " but has ", event.sequence,
                                                    ": a hole the copy cannot keep"));
          }
        }
        v1::Event parsed;
        if (!parsed.ParseFromString(event.bytes)) {
          return absl::DataLossError(absl::StrCat("event ", event.sequence, " is unreadable"));
        }
        if (!parsed.id().empty()) {
          batch.dedup.emplace_back(DedupKey{parsed.source(), parsed.id()}, event.sequence);
        }
        batch.last_sequence = event.sequence;
        batch.events.push_back(std::move(event));
      }
      if (absl::Status s = Write(batch); !s.ok()) return s;
      head_ = batch.last_sequence;
      counts_.copied_events += batch.events.size();
      from = head_ + 1;
      if (absl::Now() - said >= kProgressEvery) {
        said = absl::Now();
        Say(absl::StrCat("events: copied up to sequence ", head_, " of ", last, " (",
                         last == 0 ? 100 : head_ * 100 / last, "%)"));
      }
    }
    if (head_ < last) {
      // Retention trimmed every event: the stream's head still starts after the last sequence,
      // so no plugin cursor points past a new event.
      CommitBatch batch;
      batch.last_sequence = last;
      batch.last_quarantine_id = quarantine_id_;
      if (head_ != 0) {
        return absl::DataLossError(
            absl::StrCat("the store's events end at ", head_, " but its head is ", last));
      }
      if (absl::Status s = Write(batch); !s.ok()) return s;
      head_ = last;
    }
    Say(absl::StrCat("events: copied up to sequence ", head_, " (", counts_.copied_events,
                     " by this run)"));
    return absl::OkStatus();
  }

  std::size_t kPageOf() const { return std::max<std::size_t>(options_.batch_events, 1); }

  absl::Status CopyQuarantine() {
    uint64_t copied = 0;
    for (;;) {
      absl::StatusOr<std::vector<v1::QuarantineEntry>> page =
          source_->ReadQuarantine(quarantine_id_ + 1, kPage);
      if (!page.ok()) return page.status();
      if (page->empty()) break;
      CommitBatch batch;
      batch.last_sequence = head_;
      batch.last_quarantine_id = quarantine_id_;
      for (v1::QuarantineEntry& entry : *page) {
        if ((quarantine_id_ > 0 || !batch.quarantine.empty()) &&
            entry.id() != batch.last_quarantine_id + 1) {
          return absl::DataLossError(absl::StrCat("the store has no quarantine entry ",
                                                  batch.last_quarantine_id + 1, " but has ",
                                                  entry.id()));
        }
        batch.last_quarantine_id = entry.id();
        batch.quarantine.push_back(std::move(entry));
      }
      if (absl::Status s = Write(batch); !s.ok()) return s;
      quarantine_id_ = batch.last_quarantine_id;
      copied += batch.quarantine.size();
    }
    if (quarantine_id_ < source_state_.last_quarantine_id) {
      if (quarantine_id_ != 0) {
        return absl::DataLossError("the store's quarantine ends before its last id");
      }
      CommitBatch batch;  // every entry trimmed: new ones still get new ids
      batch.last_sequence = head_;
      batch.last_quarantine_id = source_state_.last_quarantine_id;
      if (absl::Status s = Write(batch); !s.ok()) return s;
      quarantine_id_ = batch.last_quarantine_id;
    }
    Say(absl::StrCat("quarantine: copied up to entry ", quarantine_id_, " (", copied,
                     " by this run)"));
    return absl::OkStatus();
  }

  absl::Status CopyVersions() {
    CommitBatch batch;
    uint64_t copied = 0;
    auto flush = [&]() -> absl::Status {
      if (batch.versions.empty()) return absl::OkStatus();
      batch.last_sequence = head_;
      batch.last_quarantine_id = quarantine_id_;
      if (absl::Status s = Write(batch); !s.ok()) return s;
      copied += batch.versions.size();
      batch.versions.clear();
      return absl::OkStatus();
    };
    absl::Status s = listing_->ForEachVersion(
        [&](const ResourceKey& key, const ResourceVersion& version) -> absl::Status {
          batch.versions.emplace_back(key, version);
          return batch.versions.size() >= kPage * 4 ? flush() : absl::OkStatus();
        });
    if (s.ok()) s = flush();
    if (!s.ok()) return s;
    Say(absl::StrCat("versions: ", copied, " resources"));
    return absl::OkStatus();
  }

  absl::Status CopyMeta() {
    for (const auto& [key, value] : source_meta_) {
      if (absl::StartsWith(key, "pimgate.migrate/")) continue;
      absl::StatusOr<std::optional<std::string>> existing = target_->GetMeta(key);
      if (!existing.ok()) return existing.status();
      if (existing->has_value() && **existing == value) continue;  // a resumed run
      if (absl::Status s = target_->PutMeta(key, value); !s.ok()) return s;
    }
    Say(absl::StrCat("metadata: ", source_meta_.size(), " values"));
    return absl::OkStatus();
  }

  // Dead letters first, then the cursor past them (as the dispatcher writes them).
  absl::Status CopyPlugins() {
    uint64_t letters = 0;
    for (const std::string& plugin : plugins_) {
      uint64_t from = 0;
      for (;;) {
        absl::StatusOr<std::vector<v1::DeadLetter>> page =
            source_->ReadDeadLetters(plugin, from, kPage);
        if (!page.ok()) return page.status();
        if (page->empty()) break;
        from = page->back().event().sequence() + 1;
        PluginProgress progress;
        progress.dead_letters = std::move(*page);
        letters += progress.dead_letters.size();
        if (absl::Status s = target_->WriteProgress(plugin, progress); !s.ok()) return s;
      }
      absl::StatusOr<uint64_t> cursor = source_->LoadCursor(plugin);
      if (!cursor.ok()) return cursor.status();
      if (*cursor > 0) {
        PluginProgress progress;
        progress.cursor = *cursor;
        if (absl::Status s = target_->WriteProgress(plugin, progress); !s.ok()) return s;
      }
      // The handed-out mark: events past the cursor up to it may have reached the plugin, so
      // they go with attempt >= 2 from the copy too.
      absl::StatusOr<uint64_t> mark = source_->LoadHandedOut(plugin);
      if (!mark.ok()) return mark.status();
      if (*mark > 0) {
        if (absl::Status s = target_->WriteHandedOut(plugin, *mark); !s.ok()) return s;
      }
    }
    Say(absl::StrCat("plugins: ", plugins_.size(), " (cursors and ", letters, " dead letters)"));
    return absl::OkStatus();
  }

  absl::Status Verify() {
    if (head_ != source_state_.last_sequence ||
        quarantine_id_ != source_state_.last_quarantine_id) {
      return absl::DataLossError(absl::StrCat("the stream ends at event ", head_,
                                              " and quarantine entry ", quarantine_id_,
                                              ", the store at ", source_state_.last_sequence,
                                              " and ", source_state_.last_quarantine_id));
    }
    // Events, byte for byte, from both ends.
    uint64_t from = 1;
    for (;;) {
      absl::StatusOr<std::vector<StoredEvent>> mine = source_->ReadStoredEvents(from, kPage);
      if (!mine.ok()) return mine.status();
      absl::StatusOr<std::vector<StoredEvent>> theirs = target_->ReadStoredEvents(from, kPage);
      if (!theirs.ok()) return theirs.status();
      for (std::size_t i = 0; i < std::max(mine->size(), theirs->size()); ++i) {
        if (i >= mine->size() || i >= theirs->size() ||
            (*mine)[i].sequence != (*theirs)[i].sequence ||
            (*mine)[i].bytes != (*theirs)[i].bytes) {
          const uint64_t at = i < mine->size() ? (*mine)[i].sequence : (*theirs)[i].sequence;
          return absl::DataLossError(absl::StrCat("event ", at, " differs"));
        }
      }
      if (mine->empty()) break;
      if (counts_.events == 0) counts_.first_sequence = mine->front().sequence;
      counts_.events += mine->size();
      counts_.last_sequence = mine->back().sequence;
      from = counts_.last_sequence + 1;
    }
    // The dedup index: every event id of the copy is known to the stream.
    from = 1;
    for (;;) {
      absl::StatusOr<std::vector<v1::Event>> page = source_->ReadEvents(from, kPage);
      if (!page.ok()) return page.status();
      if (page->empty()) break;
      for (const v1::Event& event : *page) {
        if (event.id().empty()) continue;
        absl::StatusOr<std::optional<uint64_t>> known =
            target_->FindEventId(DedupKey{event.source(), event.id()});
        if (!known.ok()) return known.status();
        if (*known != std::optional<uint64_t>(event.sequence())) {
          return absl::DataLossError(absl::StrCat("event id ", event.id(), " of event ",
                                                  event.sequence(), " is not known to the copy"));
        }
      }
      from = page->back().sequence() + 1;
    }
    // Quarantine.
    uint64_t id = 1;
    for (;;) {
      absl::StatusOr<std::vector<v1::QuarantineEntry>> mine = source_->ReadQuarantine(id, kPage);
      if (!mine.ok()) return mine.status();
      absl::StatusOr<std::vector<v1::QuarantineEntry>> theirs = target_->ReadQuarantine(id, kPage);
      if (!theirs.ok()) return theirs.status();
      if (mine->size() != theirs->size()) {
        return absl::DataLossError(absl::StrCat("quarantine from entry ", id, " differs"));
      }
      for (std::size_t i = 0; i < mine->size(); ++i) {
        if ((*mine)[i].SerializeAsString() != (*theirs)[i].SerializeAsString()) {
          return absl::DataLossError(
              absl::StrCat("quarantine entry ", (*mine)[i].id(), " differs"));
        }
      }
      if (mine->empty()) break;
      counts_.quarantine += mine->size();
      id = mine->back().id() + 1;
    }
    // Versions.
    if (absl::Status s = listing_->ForEachVersion(
            [&](const ResourceKey& key, const ResourceVersion& version) -> absl::Status {
              absl::StatusOr<std::optional<ResourceVersion>> copied = target_->FindVersion(key);
              if (!copied.ok()) return copied.status();
              if (!copied->has_value() || (*copied)->version_at_us != version.version_at_us ||
                  (*copied)->sequence != version.sequence ||
                  (*copied)->deleted != version.deleted) {
                return absl::DataLossError(absl::StrCat("the version of ", key.source, "/",
                                                        key.kind, "/", key.resource_id,
                                                        " differs"));
              }
              ++counts_.versions;
              return absl::OkStatus();
            });
        !s.ok()) {
      return s;
    }
    // Metadata, cursors, dead letters.
    for (const auto& [key, value] : source_meta_) {
      absl::StatusOr<std::optional<std::string>> copied = target_->GetMeta(key);
      if (!copied.ok()) return copied.status();
      if (*copied != std::optional<std::string>(value)) {
        return absl::DataLossError(absl::StrCat("metadata value ", key, " differs"));
      }
      ++counts_.meta;
    }
    for (const std::string& plugin : plugins_) {
      absl::StatusOr<uint64_t> mine = source_->LoadCursor(plugin);
      if (!mine.ok()) return mine.status();
      absl::StatusOr<uint64_t> theirs = target_->LoadCursor(plugin);
      if (!theirs.ok()) return theirs.status();
      if (*mine != *theirs) {
        return absl::DataLossError(absl::StrCat("the cursor of plugin ", plugin, " is ", *theirs,
                                                " in the copy, ", *mine, " in the store"));
      }
      absl::StatusOr<uint64_t> letters = source_->CountDeadLetters(plugin);
      if (!letters.ok()) return letters.status();
      absl::StatusOr<uint64_t> copied_letters = target_->CountDeadLetters(plugin);
      if (!copied_letters.ok()) return copied_letters.status();
      if (*letters != *copied_letters) {
        return absl::DataLossError(absl::StrCat("plugin ", plugin, " has ", *copied_letters,
                                                " dead letters in the copy, ", *letters,
                                                " in the store"));
      }
      counts_.dead_letters += *letters;
      ++counts_.plugins;
    }
    return absl::OkStatus();
  }

  const MigrateStoreOptions& options_;
  std::string source_identity_;
  std::unique_ptr<LogBackend> source_;
  RocksDbStoreListing* listing_ = nullptr;
  RecoveredState source_state_;
  std::vector<std::pair<std::string, std::string>> source_meta_;
  std::vector<std::string> plugins_;
  std::unique_ptr<LogBackend> target_;
  uint64_t head_ = 0;           // the stream's last event sequence
  uint64_t quarantine_id_ = 0;  // the stream's last quarantine id
  MigrateStoreCounts counts_;
};

}  // namespace

absl::StatusOr<MigrateStoreCounts> MigrateRocksDbToJetStream(const MigrateStoreOptions& options) {
  return Migration(options).Run();
}

}  // namespace pimgate
