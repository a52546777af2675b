// PowerCutFileSystem: see power_cut_file_system.h for what it models and what it does not.
#include "tests/testing/power_cut_file_system.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <system_error>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "rocksdb/file_system.h"
#include "rocksdb/io_status.h"
#include "rocksdb/slice.h"

namespace pimgate::testing {
namespace {

namespace fs = std::filesystem;

// `path` absolute and lexically normal, without a trailing separator: how names are compared.
std::string Normalize(const std::string& path) {
  std::error_code ec;  // no exception may reach RocksDB
  fs::path p = fs::absolute(fs::path(path), ec);
  if (ec) p = fs::path(path);
  p = p.lexically_normal();
  if (!p.has_filename() && p.has_parent_path() && p != p.root_path()) p = p.parent_path();
  return p.string();
}

absl::Status ErrorOf(const std::error_code& ec, const std::string& what) {
  return absl::InternalError(absl::StrCat("power cut: ", what, ": ", ec.message()));
}

}  // namespace

std::string PowerCutReport::ToString() const {
  return absl::StrCat(unsynced_bytes, " unsynced bytes in ", files_cut, " files, ", names_removed,
                      " names removed, ", names_restored, " names restored");
}

// A writable file of `root`: every change goes through the file system's bookkeeping.
class PowerCutFileSystem::TrackedFile final : public rocksdb::FSWritableFileOwnerWrapper {
 public:
  TrackedFile(std::unique_ptr<rocksdb::FSWritableFile> target, PowerCutFileSystem* fs,
              uint64_t inode, std::string name)
      : FSWritableFileOwnerWrapper(std::move(target)),
        fs_(fs),
        inode_(inode),
        name_(std::move(name)) {}

  rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& options,
                           rocksdb::IODebugContext* dbg) override {
    return fs_->Append(inode_, data.size(),
                       [&] { return FSWritableFileOwnerWrapper::Append(data, options, dbg); });
  }
  rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& options,
                           const rocksdb::DataVerificationInfo& info,
                           rocksdb::IODebugContext* dbg) override {
    return fs_->Append(inode_, data.size(), [&] {
      return FSWritableFileOwnerWrapper::Append(data, options, info, dbg);
    });
  }
  rocksdb::IOStatus PositionedAppend(const rocksdb::Slice&, uint64_t, const rocksdb::IOOptions&,
                                     rocksdb::IODebugContext*) override {
    return Unmodeled("PositionedAppend (direct I/O)", name_);
  }
  rocksdb::IOStatus PositionedAppend(const rocksdb::Slice&, uint64_t, const rocksdb::IOOptions&,
                                     const rocksdb::DataVerificationInfo&,
                                     rocksdb::IODebugContext*) override {
    return Unmodeled("PositionedAppend (direct I/O)", name_);
  }
  rocksdb::IOStatus Truncate(uint64_t size, const rocksdb::IOOptions& options,
                             rocksdb::IODebugContext* dbg) override {
    return fs_->TruncateFile(
        inode_, size, [&] { return FSWritableFileOwnerWrapper::Truncate(size, options, dbg); });
  }
  rocksdb::IOStatus Sync(const rocksdb::IOOptions& options, rocksdb::IODebugContext* dbg) override {
    return fs_->SyncFile(inode_, name_,
                         [&] { return FSWritableFileOwnerWrapper::Sync(options, dbg); });
  }
  rocksdb::IOStatus Fsync(const rocksdb::IOOptions& options,
                          rocksdb::IODebugContext* dbg) override {
    return fs_->SyncFile(inode_, name_,
                         [&] { return FSWritableFileOwnerWrapper::Fsync(options, dbg); });
  }
  // Writeback started, not awaited: nothing becomes durable (see the header).
  rocksdb::IOStatus RangeSync(uint64_t offset, uint64_t nbytes, const rocksdb::IOOptions& options,
                              rocksdb::IODebugContext* dbg) override {
    return fs_->UnlessCut(
        [&] { return FSWritableFileOwnerWrapper::RangeSync(offset, nbytes, options, dbg); });
  }
  // RocksDB's buffer to the page cache; Append already counted the bytes.
  rocksdb::IOStatus Flush(const rocksdb::IOOptions& options,
                          rocksdb::IODebugContext* dbg) override {
    return fs_->UnlessCut([&] { return FSWritableFileOwnerWrapper::Flush(options, dbg); });
  }
  rocksdb::IOStatus Allocate(uint64_t offset, uint64_t len, const rocksdb::IOOptions& options,
                             rocksdb::IODebugContext* dbg) override {
    return fs_->UnlessCut(
        [&] { return FSWritableFileOwnerWrapper::Allocate(offset, len, options, dbg); });
  }
  // Close always reaches the OS (the descriptor must be released, even after a cut); it changes
  // no content the model counts.

 private:
  PowerCutFileSystem* const fs_;  // outlives the file: the store keeps its file system alive
  const uint64_t inode_;
  const std::string name_;
};

// `root` opened as a directory: its fsync makes the names it holds durable.
class PowerCutFileSystem::TrackedDirectory final : public rocksdb::FSDirectoryWrapper {
 public:
  TrackedDirectory(std::unique_ptr<rocksdb::FSDirectory> target, PowerCutFileSystem* fs)
      : FSDirectoryWrapper(std::move(target)), fs_(fs) {}

  rocksdb::IOStatus Fsync(const rocksdb::IOOptions& options,
                          rocksdb::IODebugContext* dbg) override {
    return fs_->SyncRoot([&] { return FSDirectoryWrapper::Fsync(options, dbg); });
  }
  rocksdb::IOStatus FsyncWithDirOptions(const rocksdb::IOOptions& options,
                                        rocksdb::IODebugContext* dbg,
                                        const rocksdb::DirFsyncOptions& dir_options) override {
    return fs_->SyncRoot(
        [&] { return FSDirectoryWrapper::FsyncWithDirOptions(options, dbg, dir_options); });
  }

 private:
  PowerCutFileSystem* const fs_;
};

PowerCutFileSystem::PowerCutFileSystem(const std::string& root)
    : FileSystemWrapper(rocksdb::FileSystem::Default()),
      root_(Normalize(root)),
      stash_(root_ + ".power-cut-stash") {
  std::error_code ec;
  fs::create_directories(root_, ec);
  fs::remove_all(stash_, ec);
  absl::MutexLock lock(&mu_);
  for (const fs::directory_entry& entry : fs::directory_iterator(root_, ec)) {
    if (!entry.is_regular_file(ec)) continue;
    const uint64_t size = entry.file_size(ec);
    names_[entry.path().filename().string()] = NewInode(size, size);
  }
  durable_names_ = names_;
}

PowerCutFileSystem::~PowerCutFileSystem() {
  std::error_code ec;
  fs::remove_all(stash_, ec);
}

void PowerCutFileSystem::CutPower() {
  absl::MutexLock lock(&mu_);
  power_cut_ = true;
}

void PowerCutFileSystem::HoldSyncs(const std::string& name_suffix, std::function<void()> on_held) {
  absl::MutexLock lock(&mu_);
  hold_suffix_ = name_suffix;
  on_held_ = std::move(on_held);
}

void PowerCutFileSystem::ReleaseSyncs() {
  absl::MutexLock lock(&mu_);
  hold_suffix_.clear();
}

SyncActivity PowerCutFileSystem::activity() const {
  absl::MutexLock lock(&mu_);
  return activity_;
}

PowerCutFileSystem::Path PowerCutFileSystem::Locate(const std::string& path) const {
  const std::string normal = Normalize(path);
  if (normal == root_) return {Place::kRoot, ""};
  const fs::path p(normal);
  if (p.parent_path().string() == root_) return {Place::kInRoot, p.filename().string()};
  return {Place::kOutside, ""};
}

std::string PowerCutFileSystem::InRoot(const std::string& name) const { return root_ + "/" + name; }

std::string PowerCutFileSystem::Stashed(uint64_t inode) const {
  return absl::StrCat(stash_, "/", inode);
}

rocksdb::IOStatus PowerCutFileSystem::PowerIsOff() {
  return rocksdb::IOStatus::IOError("power cut", "the simulated machine has lost power");
}

rocksdb::IOStatus PowerCutFileSystem::Unmodeled(const std::string& what, const std::string& path) {
  return rocksdb::IOStatus::NotSupported(absl::StrCat("PowerCutFileSystem does not model ", what),
                                         path);
}

uint64_t PowerCutFileSystem::NewInode(uint64_t written, uint64_t synced) {
  const uint64_t id = next_inode_++;
  inodes_[id] = Inode{written, synced};
  return id;
}

bool PowerCutFileSystem::IsDurable(uint64_t inode) const {
  return std::any_of(durable_names_.begin(), durable_names_.end(),
                     [inode](const auto& entry) { return entry.second == inode; });
}

rocksdb::IOStatus PowerCutFileSystem::StashIfDurable(uint64_t inode, const std::string& name) {
  if (!IsDurable(inode) || stashed_.count(inode) > 0) return rocksdb::IOStatus::OK();
  std::error_code ec;
  fs::create_directories(stash_, ec);
  if (!ec) fs::create_hard_link(InRoot(name), Stashed(inode), ec);
  if (ec) return rocksdb::IOStatus::IOError("power cut model: cannot stash " + name, ec.message());
  stashed_.insert(inode);
  return rocksdb::IOStatus::OK();
}

rocksdb::IOStatus PowerCutFileSystem::UnlessCut(const std::function<rocksdb::IOStatus()>& op) {
  absl::MutexLock lock(&mu_);
  if (power_cut_) return PowerIsOff();
  return op();
}

rocksdb::IOStatus PowerCutFileSystem::Append(uint64_t inode, uint64_t bytes,
                                             const std::function<rocksdb::IOStatus()>& op) {
  absl::MutexLock lock(&mu_);
  if (power_cut_) return PowerIsOff();
  rocksdb::IOStatus s = op();
  // A failed append may have written some of the bytes uncounted; RocksDB writes no more to a
  // file after a failed append, and a cut cuts at the synced length anyway.
  if (s.ok()) {
    if (auto it = inodes_.find(inode); it != inodes_.end()) it->second.written += bytes;
  }
  return s;
}

rocksdb::IOStatus PowerCutFileSystem::SyncFile(uint64_t inode, const std::string& name,
                                               const std::function<rocksdb::IOStatus()>& op) {
  mu_.Lock();
  auto unsynced = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = inodes_.find(inode);
    return it != inodes_.end() && it->second.written > it->second.synced;
  };
  if (!power_cut_ && !hold_suffix_.empty() && absl::EndsWith(name, hold_suffix_) && unsynced()) {
    const std::function<void()> on_held = on_held_;
    mu_.Unlock();
    if (on_held) on_held();
    mu_.Lock();
    auto released = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return power_cut_ || hold_suffix_.empty();
    };
    mu_.Await(absl::Condition(&released));
  }
  if (power_cut_) {
    mu_.Unlock();
    return PowerIsOff();
  }
  // Under mu_: nothing is appended while the OS syncs, so every byte counted is covered.
  rocksdb::IOStatus s = op();
  if (s.ok()) {
    if (auto it = inodes_.find(inode); it != inodes_.end()) it->second.synced = it->second.written;
    ++activity_.file_syncs;
  }
  mu_.Unlock();
  return s;
}

rocksdb::IOStatus PowerCutFileSystem::TruncateFile(uint64_t inode, uint64_t size,
                                                   const std::function<rocksdb::IOStatus()>& op) {
  absl::MutexLock lock(&mu_);
  if (power_cut_) return PowerIsOff();
  rocksdb::IOStatus s = op();
  if (s.ok()) {
    if (auto it = inodes_.find(inode); it != inodes_.end()) {
      it->second.written = size;
      it->second.synced = std::min(it->second.synced, size);
    }
  }
  return s;
}

rocksdb::IOStatus PowerCutFileSystem::SyncRoot(const std::function<rocksdb::IOStatus()>& op) {
  absl::MutexLock lock(&mu_);
  if (power_cut_) return PowerIsOff();
  rocksdb::IOStatus s = op();
  if (!s.ok()) return s;
  ++activity_.directory_syncs;
  durable_names_ = names_;
  // Inodes no name refers to any more can never come back: forget them and their stash.
  for (auto it = inodes_.begin(); it != inodes_.end();) {
    if (IsDurable(it->first)) {
      ++it;
      continue;
    }
    if (stashed_.erase(it->first) > 0) {
      std::error_code ec;
      fs::remove(Stashed(it->first), ec);
    }
    it = inodes_.erase(it);
  }
  return s;
}

rocksdb::IOStatus PowerCutFileSystem::NewWritableFile(
    const std::string& fname, const rocksdb::FileOptions& options,
    std::unique_ptr<rocksdb::FSWritableFile>* result, rocksdb::IODebugContext* dbg) {
  const Path path = Locate(fname);
  if (path.place == Place::kOutside) {
    return FileSystemWrapper::NewWritableFile(fname, options, result, dbg);
  }
  if (path.place == Place::kRoot) return Unmodeled("writing to the directory itself", fname);
  absl::MutexLock lock(&mu_);
  if (power_cut_) return PowerIsOff();
  std::unique_ptr<rocksdb::FSWritableFile> file;
  rocksdb::IOStatus s = FileSystemWrapper::NewWritableFile(fname, options, &file, dbg);
  if (!s.ok()) return s;
  uint64_t inode;
  if (auto it = names_.find(path.name); it != names_.end()) {
    // Truncated in place (O_TRUNC): the old content is gone even if a cut would keep the name.
    inode = it->second;
    inodes_[inode] = Inode{};
  } else {
    inode = NewInode(0, 0);
    names_[path.name] = inode;
  }
  *result = std::make_unique<TrackedFile>(std::move(file), this, inode, path.name);
  return s;
}

rocksdb::IOStatus PowerCutFileSystem::ReopenWritableFile(
    const std::string& fname, const rocksdb::FileOptions& options,
    std::unique_ptr<rocksdb::FSWritableFile>* result, rocksdb::IODebugContext* dbg) {
  const Path path = Locate(fname);
  if (path.place == Place::kOutside) {
    return FileSystemWrapper::ReopenWritableFile(fname, options, result, dbg);
  }
  if (path.place == Place::kRoot) return Unmodeled("writing to the directory itself", fname);
  absl::MutexLock lock(&mu_);
  if (power_cut_) return PowerIsOff();
  std::unique_ptr<rocksdb::FSWritableFile> file;
  rocksdb::IOStatus s = FileSystemWrapper::ReopenWritableFile(fname, options, &file, dbg);
  if (!s.ok()) return s;
  uint64_t inode;
  if (auto it = names_.find(path.name); it != names_.end()) {
    inode = it->second;  // appends continue after what the file holds
  } else {
    inode = NewInode(0, 0);
    names_[path.name] = inode;
  }
  *result = std::make_unique<TrackedFile>(std::move(file), this, inode, path.name);
  return s;
}

rocksdb::IOStatus PowerCutFileSystem::ReuseWritableFile(
    const std::string& fname, const std::string& old_fname, const rocksdb::FileOptions& options,
    std::unique_ptr<rocksdb::FSWritableFile>* result, rocksdb::IODebugContext* dbg) {
  if (Locate(fname).place != Place::kOutside || Locate(old_fname).place != Place::kOutside) {
    return Unmodeled("recycled files (ReuseWritableFile)", fname);
  }
  return FileSystemWrapper::ReuseWritableFile(fname, old_fname, options, result, dbg);
}

rocksdb::IOStatus PowerCutFileSystem::NewRandomRWFile(
    const std::string& fname, const rocksdb::FileOptions& options,
    std::unique_ptr<rocksdb::FSRandomRWFile>* result, rocksdb::IODebugContext* dbg) {
  if (Locate(fname).place != Place::kOutside) return Unmodeled("random-access writes", fname);
  return FileSystemWrapper::NewRandomRWFile(fname, options, result, dbg);
}

rocksdb::IOStatus PowerCutFileSystem::NewMemoryMappedFileBuffer(
    const std::string& fname, std::unique_ptr<rocksdb::MemoryMappedFileBuffer>* result) {
  if (Locate(fname).place != Place::kOutside) return Unmodeled("memory-mapped writes", fname);
  return FileSystemWrapper::NewMemoryMappedFileBuffer(fname, result);
}

rocksdb::IOStatus PowerCutFileSystem::NewDirectory(const std::string& name,
                                                   const rocksdb::IOOptions& options,
                                                   std::unique_ptr<rocksdb::FSDirectory>* result,
                                                   rocksdb::IODebugContext* dbg) {
  const Path path = Locate(name);
  if (path.place == Place::kOutside) {
    return FileSystemWrapper::NewDirectory(name, options, result, dbg);
  }
  if (path.place == Place::kInRoot) return Unmodeled("subdirectories of the store", name);
  std::unique_ptr<rocksdb::FSDirectory> dir;
  rocksdb::IOStatus s = FileSystemWrapper::NewDirectory(name, options, &dir, dbg);
  if (s.ok()) *result = std::make_unique<TrackedDirectory>(std::move(dir), this);
  return s;
}

rocksdb::IOStatus PowerCutFileSystem::DeleteFile(const std::string& fname,
                                                 const rocksdb::IOOptions& options,
                                                 rocksdb::IODebugContext* dbg) {
  const Path path = Locate(fname);
  if (path.place != Place::kInRoot) return FileSystemWrapper::DeleteFile(fname, options, dbg);
  absl::MutexLock lock(&mu_);
  if (power_cut_) return PowerIsOff();
  auto it = names_.find(path.name);
  if (it != names_.end()) {
    if (rocksdb::IOStatus s = StashIfDurable(it->second, path.name); !s.ok()) return s;
  }
  rocksdb::IOStatus s = FileSystemWrapper::DeleteFile(fname, options, dbg);
  if (s.ok() && it != names_.end()) names_.erase(it);
  return s;
}

rocksdb::IOStatus PowerCutFileSystem::Truncate(const std::string& fname, size_t size,
                                               const rocksdb::IOOptions& options,
                                               rocksdb::IODebugContext* dbg) {
  const Path path = Locate(fname);
  if (path.place != Place::kInRoot) return FileSystemWrapper::Truncate(fname, size, options, dbg);
  uint64_t inode = 0;
  {
    absl::MutexLock lock(&mu_);
    auto it = names_.find(path.name);
    if (it == names_.end()) return FileSystemWrapper::Truncate(fname, size, options, dbg);
    inode = it->second;
  }
  return TruncateFile(inode, size,
                      [&] { return FileSystemWrapper::Truncate(fname, size, options, dbg); });
}

rocksdb::IOStatus PowerCutFileSystem::CreateDir(const std::string& dirname,
                                                const rocksdb::IOOptions& options,
                                                rocksdb::IODebugContext* dbg) {
  const Path path = Locate(dirname);
  if (path.place == Place::kInRoot) return Unmodeled("subdirectories of the store", dirname);
  if (path.place == Place::kOutside) return FileSystemWrapper::CreateDir(dirname, options, dbg);
  return UnlessCut([&] { return FileSystemWrapper::CreateDir(dirname, options, dbg); });
}

rocksdb::IOStatus PowerCutFileSystem::CreateDirIfMissing(const std::string& dirname,
                                                         const rocksdb::IOOptions& options,
                                                         rocksdb::IODebugContext* dbg) {
  const Path path = Locate(dirname);
  if (path.place == Place::kInRoot) return Unmodeled("subdirectories of the store", dirname);
  if (path.place == Place::kOutside) {
    return FileSystemWrapper::CreateDirIfMissing(dirname, options, dbg);
  }
  return UnlessCut([&] { return FileSystemWrapper::CreateDirIfMissing(dirname, options, dbg); });
}

rocksdb::IOStatus PowerCutFileSystem::DeleteDir(const std::string& dirname,
                                                const rocksdb::IOOptions& options,
                                                rocksdb::IODebugContext* dbg) {
  if (Locate(dirname).place != Place::kOutside) return Unmodeled("deleting the store", dirname);
  return FileSystemWrapper::DeleteDir(dirname, options, dbg);
}

rocksdb::IOStatus PowerCutFileSystem::RenameFile(const std::string& src, const std::string& target,
                                                 const rocksdb::IOOptions& options,
                                                 rocksdb::IODebugContext* dbg) {
  const Path from = Locate(src);
  const Path to = Locate(target);
  if (from.place == Place::kOutside && to.place == Place::kOutside) {
    return FileSystemWrapper::RenameFile(src, target, options, dbg);
  }
  if (from.place != Place::kInRoot || to.place != Place::kInRoot) {
    return Unmodeled("renames into or out of the store", src + " -> " + target);
  }
  absl::MutexLock lock(&mu_);
  if (power_cut_) return PowerIsOff();
  auto source = names_.find(from.name);
  if (source == names_.end()) return Unmodeled("renaming a file it never saw", src);
  if (auto replaced = names_.find(to.name); replaced != names_.end()) {
    if (rocksdb::IOStatus s = StashIfDurable(replaced->second, to.name); !s.ok()) return s;
  }
  rocksdb::IOStatus s = FileSystemWrapper::RenameFile(src, target, options, dbg);
  if (!s.ok()) return s;
  const uint64_t inode = source->second;
  names_.erase(source);
  names_[to.name] = inode;
  return s;
}

rocksdb::IOStatus PowerCutFileSystem::LinkFile(const std::string& src, const std::string& target,
                                               const rocksdb::IOOptions& options,
                                               rocksdb::IODebugContext* dbg) {
  if (Locate(src).place != Place::kOutside || Locate(target).place != Place::kOutside) {
    return Unmodeled("hard links", src + " -> " + target);
  }
  return FileSystemWrapper::LinkFile(src, target, options, dbg);
}

rocksdb::IOStatus PowerCutFileSystem::LockFile(const std::string& fname,
                                               const rocksdb::IOOptions& options,
                                               rocksdb::FileLock** lock,
                                               rocksdb::IODebugContext* dbg) {
  const Path path = Locate(fname);
  if (path.place != Place::kInRoot) return FileSystemWrapper::LockFile(fname, options, lock, dbg);
  absl::MutexLock guard(&mu_);
  if (power_cut_) return PowerIsOff();
  rocksdb::IOStatus s = FileSystemWrapper::LockFile(fname, options, lock, dbg);
  // The lock file may have been created (empty): a new name like any other.
  if (s.ok() && names_.count(path.name) == 0) names_[path.name] = NewInode(0, 0);
  return s;
}

rocksdb::IOStatus PowerCutFileSystem::NewLogger(const std::string& fname,
                                                const rocksdb::IOOptions& options,
                                                std::shared_ptr<rocksdb::Logger>* result,
                                                rocksdb::IODebugContext* dbg) {
  if (Locate(fname).place != Place::kOutside) return Unmodeled("a LOG file in the store", fname);
  return FileSystemWrapper::NewLogger(fname, options, result, dbg);
}

absl::StatusOr<PowerCutReport> PowerCutFileSystem::LeaveOnlyWhatSurvives(UnsyncedTail tail) {
  absl::MutexLock lock(&mu_);
  if (!power_cut_) return absl::FailedPreconditionError("power cut: CutPower() first");
  if (left_only_survivors_) return absl::FailedPreconditionError("power cut: already done");
  left_only_survivors_ = true;
  std::error_code ec;
  PowerCutReport report;

  // 1. Every inode a durable name refers to gets a link in the stash, so that removing the
  //    names of today cannot lose it.
  std::map<uint64_t, std::string> name_of;  // current name of each inode
  for (const auto& [name, inode] : names_) name_of[inode] = name;
  fs::create_directories(stash_, ec);
  if (ec) return ErrorOf(ec, "create " + stash_);
  for (const auto& [name, inode] : durable_names_) {
    if (stashed_.count(inode) > 0) continue;
    auto current = name_of.find(inode);
    if (current == name_of.end()) {
      return absl::InternalError(absl::StrCat("power cut: lost track of durable file ", name));
    }
    fs::create_hard_link(InRoot(current->second), Stashed(inode), ec);
    if (ec) return ErrorOf(ec, "stash " + current->second);
    stashed_.insert(inode);
  }

  std::set<uint64_t> at_the_cut;
  for (const auto& [name, inode] : names_) at_the_cut.insert(inode);
  for (const auto& [name, inode] : durable_names_) at_the_cut.insert(inode);
  for (uint64_t inode : at_the_cut) {
    const Inode& content = inodes_.at(inode);
    report.unsynced_bytes += content.written - content.synced;
  }

  // 2. Today's names go; what a cut leaves of each durable file is made in its stash link.
  for (const auto& [name, inode] : names_) {
    auto durable = durable_names_.find(name);
    if (durable == durable_names_.end()) ++report.names_removed;
    fs::remove(InRoot(name), ec);
    if (ec) return ErrorOf(ec, "remove " + name);
  }
  std::set<uint64_t> cut;
  for (const auto& [name, inode] : durable_names_) {
    auto now = names_.find(name);
    if (now == names_.end() || now->second != inode) ++report.names_restored;
    if (!cut.insert(inode).second) continue;
    const Inode& content = inodes_.at(inode);
    const uint64_t unsynced = content.written - content.synced;
    if (unsynced == 0) continue;
    ++report.files_cut;
    const std::string file = Stashed(inode);
    switch (tail) {
      case UnsyncedTail::kLost:
        fs::resize_file(file, content.synced, ec);
        break;
      case UnsyncedTail::kTorn:
        fs::resize_file(file, content.synced + unsynced / 2, ec);
        break;
      case UnsyncedTail::kZeroed: {
        std::fstream out(file, std::ios::in | std::ios::out | std::ios::binary);
        out.seekp(static_cast<std::streamoff>(content.synced));
        const std::string zeros(unsynced, '\0');
        out.write(zeros.data(), static_cast<std::streamsize>(zeros.size()));
        out.close();
        if (!out) ec = std::make_error_code(std::errc::io_error);
        break;
      }
    }
    if (ec) return ErrorOf(ec, "cut " + name);
  }

  // 3. The durable names come back, each on what survived of its file.
  for (const auto& [name, inode] : durable_names_) {
    fs::create_hard_link(Stashed(inode), InRoot(name), ec);
    if (ec) return ErrorOf(ec, "restore " + name);
  }
  fs::remove_all(stash_, ec);
  if (ec) return ErrorOf(ec, "remove " + stash_);
  stashed_.clear();
  return report;
}

}  // namespace pimgate::testing
