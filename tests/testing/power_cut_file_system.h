// A RocksDB file system for tests that can lose power: it passes every call to the OS file system
// and keeps apart, for the files of one directory, what has reached stable storage (synced) from
// what is only in the page cache. After CutPower() and LeaveOnlyWhatSurvives(), the directory
// holds what a disk would hold after a power cut at that instant, and the store can be reopened
// from it with any file system, the OS one included. (The idea of RocksDB's own fault-injection
// file system; this is the tests' own, smaller model.)
//
// What it models, for the regular files directly in `root`:
// - File data: Append makes bytes written, Sync/Fsync of that file makes every byte written
//   before the call durable. Flush (RocksDB's buffer to the OS) and RangeSync (Linux
//   sync_file_range: writeback started, not awaited) make nothing durable.
// - Names: a file created, renamed or deleted in `root` is on disk under its new name (or gone)
//   only once `root` itself has been fsynced (FSDirectory::Fsync) afterwards. Until then a cut
//   undoes it: a new file vanishes, a renamed one is back under its old name, a deleted or
//   replaced one is back with its synced content. (Linux file systems often persist a new name
//   with the file's own fsync; POSIX does not promise it, and this model does not grant it.)
// - What a cut leaves of a file's unsynced bytes: all lost, half kept (a record torn in the
//   middle) or as many zeros (the size reached the disk, the data did not); see UnsyncedTail.
// - From CutPower() on, every call that would change a file or a name fails with an IOError
//   and changes nothing, so nothing the process does after the cut reaches the "disk".
//
// What it does not model: reordering or partial persistence of unsynced writes other than the
// three tails above (a page in the middle of the unsynced range reaching the disk, a torn
// sector among synced ones); a disk that lies about a flush; data written to a file that is
// then opened again with truncation (O_TRUNC) keeps nothing, even if the truncation itself was
// never synced (pessimistic); files in subdirectories of `root` and outside it (passed through,
// untouched by a cut), and the entry of `root` in its parent (assumed durable). Calls it cannot
// follow in files of `root` are refused with NotSupported rather than passed through silently:
// random-access writes (NewRandomRWFile, PositionedAppend, memory-mapped writes), recycled WAL
// files (ReuseWritableFile), hard links, renames into or out of `root`, subdirectories of
// `root`, and a RocksDB LOG file in `root` (pimgate sends RocksDB's log to spdlog instead).
#ifndef PIMGATE_TESTS_TESTING_POWER_CUT_FILE_SYSTEM_H_
#define PIMGATE_TESTS_TESTING_POWER_CUT_FILE_SYSTEM_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "rocksdb/file_system.h"

namespace pimgate::testing {

// What a power cut leaves of the bytes written to a file after its last sync.
enum class UnsyncedTail {
  kLost,    // none: the file ends where its last sync left it
  kTorn,    // the first half of them (rounded down): the last record is cut in the middle
  kZeroed,  // as many zero bytes: the file's size reached the disk, its data did not
};

// What LeaveOnlyWhatSurvives changed in `root`.
struct PowerCutReport {
  uint64_t unsynced_bytes = 0;   // written but not synced, in every file of `root` at the cut
  uint64_t files_cut = 0;        // files whose name survived and whose content was cut
  uint64_t names_removed = 0;    // files created (or renamed to) since the last directory fsync
  uint64_t names_restored = 0;   // durable names brought back (deleted, renamed or replaced)
  std::string ToString() const;  // one line, for test logs
};

// Counts of the durability calls the file system has seen (in `root`), so a test can check
// that RocksDB made them at all.
struct SyncActivity {
  uint64_t file_syncs = 0;       // Sync and Fsync of files that succeeded
  uint64_t directory_syncs = 0;  // fsyncs of `root` that succeeded
};

// Thread-safe: RocksDB calls it from its writer and background threads, the test from its own.
// One instance per "boot": create it over the store directory, open the store on it, cut the
// power, close the store, LeaveOnlyWhatSurvives, then reopen the store on a new instance (or on
// the OS file system). The instance must outlive every store opened on it (RocksDbBackend keeps
// it alive through RocksDbBackendOptions::file_system).
class PowerCutFileSystem : public rocksdb::FileSystemWrapper {
 public:
  // Tracks the files directly in `root`, creating it if missing. Whatever `root` holds now
  // counts as durable: the files with their whole content, the names as they are.
  explicit PowerCutFileSystem(const std::string& root);
  ~PowerCutFileSystem() override;

  const char* Name() const override { return "PowerCutFileSystem"; }

  // The power goes out now. Every later call that would write, sync, create, rename or delete
  // fails with an IOError ("power cut") and changes nothing; reads still work. A sync that was
  // in progress and had not yet returned counts as not done. Quick and non-blocking (safe from
  // an EventLog callback); idempotent.
  void CutPower();

  // Rewrites `root` to what survives the cut: unsynced bytes dropped (or torn or zeroed, per
  // `tail`), names since the last directory fsync undone. Call once, after CutPower() and after
  // every store opened on this file system has been closed (no file of `root` may be open).
  absl::StatusOr<PowerCutReport> LeaveOnlyWhatSurvives(UnsyncedTail tail);

  // While held, a Sync or Fsync of a file of `root` whose name ends with `name_suffix` and that
  // has unsynced bytes waits before reaching the disk until ReleaseSyncs() or CutPower(); its
  // bytes are written, not yet durable. `on_held` runs (on the syncing thread, with nothing
  // locked) as each such sync starts waiting: a test cuts the power at exactly that point
  // ("a write is being fsynced") without relying on timing.
  void HoldSyncs(const std::string& name_suffix, std::function<void()> on_held);
  void ReleaseSyncs();

  SyncActivity activity() const;

  // rocksdb::FileSystem. Calls on paths outside `root` pass straight through.
  rocksdb::IOStatus NewWritableFile(const std::string& fname, const rocksdb::FileOptions& options,
                                    std::unique_ptr<rocksdb::FSWritableFile>* result,
                                    rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus ReopenWritableFile(const std::string& fname,
                                       const rocksdb::FileOptions& options,
                                       std::unique_ptr<rocksdb::FSWritableFile>* result,
                                       rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus ReuseWritableFile(const std::string& fname, const std::string& old_fname,
                                      const rocksdb::FileOptions& options,
                                      std::unique_ptr<rocksdb::FSWritableFile>* result,
                                      rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus NewRandomRWFile(const std::string& fname, const rocksdb::FileOptions& options,
                                    std::unique_ptr<rocksdb::FSRandomRWFile>* result,
                                    rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus NewMemoryMappedFileBuffer(
      const std::string& fname, std::unique_ptr<rocksdb::MemoryMappedFileBuffer>* result) override;
  rocksdb::IOStatus NewDirectory(const std::string& name, const rocksdb::IOOptions& options,
                                 std::unique_ptr<rocksdb::FSDirectory>* result,
                                 rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus DeleteFile(const std::string& fname, const rocksdb::IOOptions& options,
                               rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus Truncate(const std::string& fname, size_t size,
                             const rocksdb::IOOptions& options,
                             rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus CreateDir(const std::string& dirname, const rocksdb::IOOptions& options,
                              rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus CreateDirIfMissing(const std::string& dirname,
                                       const rocksdb::IOOptions& options,
                                       rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus DeleteDir(const std::string& dirname, const rocksdb::IOOptions& options,
                              rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus RenameFile(const std::string& src, const std::string& target,
                               const rocksdb::IOOptions& options,
                               rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus LinkFile(const std::string& src, const std::string& target,
                             const rocksdb::IOOptions& options,
                             rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus LockFile(const std::string& fname, const rocksdb::IOOptions& options,
                             rocksdb::FileLock** lock, rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus NewLogger(const std::string& fname, const rocksdb::IOOptions& options,
                              std::shared_ptr<rocksdb::Logger>* result,
                              rocksdb::IODebugContext* dbg) override;

 private:
  class TrackedFile;
  class TrackedDirectory;

  // A file's content as the model sees it; names refer to inodes, as on a real disk.
  struct Inode {
    uint64_t written = 0;  // bytes the file holds (in the page cache)
    uint64_t synced = 0;   // of which on stable storage: a prefix, files being append-only
  };
  enum class Place { kOutside, kRoot, kInRoot };  // kInRoot: a name directly in `root`
  struct Path {
    Place place = Place::kOutside;
    std::string name;  // kInRoot: the file name
  };

  Path Locate(const std::string& path) const;
  std::string InRoot(const std::string& name) const;
  std::string Stashed(uint64_t inode) const;
  static rocksdb::IOStatus PowerIsOff();
  static rocksdb::IOStatus Unmodeled(const std::string& what, const std::string& path);

  // Hooks for TrackedFile and TrackedDirectory. Each runs `op` (the OS call) under mu_, so that
  // the model and the disk change together and never after a cut.
  rocksdb::IOStatus Append(uint64_t inode, uint64_t bytes,
                           const std::function<rocksdb::IOStatus()>& op);
  rocksdb::IOStatus SyncFile(uint64_t inode, const std::string& name,
                             const std::function<rocksdb::IOStatus()>& op);
  rocksdb::IOStatus TruncateFile(uint64_t inode, uint64_t size,
                                 const std::function<rocksdb::IOStatus()>& op);
  rocksdb::IOStatus UnlessCut(const std::function<rocksdb::IOStatus()>& op);
  rocksdb::IOStatus SyncRoot(const std::function<rocksdb::IOStatus()>& op);

  // Keeps the content of `inode` (now named `name`) reachable after its name goes, if a cut
  // would bring it back (a durable name refers to it).
  rocksdb::IOStatus StashIfDurable(uint64_t inode, const std::string& name)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool IsDurable(uint64_t inode) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  uint64_t NewInode(uint64_t written, uint64_t synced) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string root_;
  const std::string stash_;  // beside `root_` (same file system: hard links)

  mutable absl::Mutex mu_;
  bool power_cut_ ABSL_GUARDED_BY(mu_) = false;
  bool left_only_survivors_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t next_inode_ ABSL_GUARDED_BY(mu_) = 1;
  std::map<uint64_t, Inode> inodes_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, uint64_t> names_ ABSL_GUARDED_BY(mu_);          // `root` now
  std::map<std::string, uint64_t> durable_names_ ABSL_GUARDED_BY(mu_);  // at its last fsync
  std::set<uint64_t> stashed_ ABSL_GUARDED_BY(mu_);  // inodes with a hard link in stash_
  SyncActivity activity_ ABSL_GUARDED_BY(mu_);
  std::string hold_suffix_ ABSL_GUARDED_BY(mu_);  // empty: syncs are not held
  std::function<void()> on_held_ ABSL_GUARDED_BY(mu_);
};

}  // namespace pimgate::testing

#endif  // PIMGATE_TESTS_TESTING_POWER_CUT_FILE_SYSTEM_H_
