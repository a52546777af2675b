// pimgate-jsonl-sink: appends every delivered event to a file as one JSON line (proto field
// names, e.g. "resource_id"), for archiving, grepping and replaying.
//
//   plugins:
//     - name: archive
//       command: [/usr/libexec/pimgate/pimgate-jsonl-sink]   # where the Debian package puts it
//       env: {JSONL_SINK_PATH: /var/lib/pimgate/events.jsonl}
//
// Environment:
//   JSONL_SINK_PATH       file to append to (default ./events.jsonl).
//   JSONL_SINK_FSYNC      always (default): an event is acked OK only after its line is on disk
//                         (fdatasync; rotations also fsync the directory). never: acked once the
//                         kernel has the line, so a power loss can lose acked events.
//   JSONL_SINK_MAX_BYTES  a line that would take the file past this size first rotates it
//                         (bytes, or with a KiB/MiB/GiB suffix; default 100MiB).
//   JSONL_SINK_KEEP       rotated files kept: <path>.1 (newest) ... <path>.N (default 5; 0 keeps
//                         none and starts the file afresh).
// An I/O error answers RETRY with the errno text; the torn line, if any, is cut off first.
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "google/protobuf/util/json_util.h"
#include "sdk/cpp/pimgate_sdk.h"
#include "spdlog/spdlog.h"

namespace pimgate::jsonl_sink {
namespace {

constexpr char kDefaultPath[] = "./events.jsonl";
constexpr uint64_t kDefaultMaxBytes = 100ull * 1024 * 1024;
constexpr int kDefaultKeep = 5;
// Exit code for a configuration error: restarting will not help, so say so distinctly.
constexpr int kExitBadConfig = 2;

struct SinkOptions {
  std::string path = kDefaultPath;
  bool fsync = true;
  uint64_t max_bytes = kDefaultMaxBytes;
  int keep = kDefaultKeep;
};

std::string ErrnoText(const std::string& what, int error) {
  return absl::StrCat(what, ": ", std::strerror(error));
}

// "1048576", "512KiB", "100MiB", "1GiB".
std::optional<uint64_t> ParseBytes(const std::string& text) {
  struct Unit {
    const char* suffix;
    uint64_t factor;
  };
  static constexpr Unit kUnits[] = {{"KiB", 1ull << 10}, {"MiB", 1ull << 20}, {"GiB", 1ull << 30}};
  std::string digits = text;
  uint64_t factor = 1;
  for (const Unit& unit : kUnits) {
    const size_t len = std::strlen(unit.suffix);
    if (digits.size() > len && digits.compare(digits.size() - len, len, unit.suffix) == 0) {
      digits.resize(digits.size() - len);
      factor = unit.factor;
      break;
    }
  }
  uint64_t value = 0;
  if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos ||
      !absl::SimpleAtoi(digits, &value) || value == 0 ||
      value > std::numeric_limits<uint64_t>::max() / factor) {
    return std::nullopt;
  }
  return value * factor;
}

absl::StatusOr<SinkOptions> OptionsFromEnv() {
  SinkOptions options;
  if (const char* path = std::getenv("JSONL_SINK_PATH"); path != nullptr && *path != '\0') {
    options.path = path;
  }
  if (const char* fsync = std::getenv("JSONL_SINK_FSYNC"); fsync != nullptr && *fsync != '\0') {
    const std::string value = fsync;
    if (value != "always" && value != "never") {
      return absl::InvalidArgumentError(
          absl::StrCat("JSONL_SINK_FSYNC must be always or never, got \"", value, "\""));
    }
    options.fsync = value == "always";
  }
  if (const char* max = std::getenv("JSONL_SINK_MAX_BYTES"); max != nullptr && *max != '\0') {
    std::optional<uint64_t> bytes = ParseBytes(max);
    if (!bytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "JSONL_SINK_MAX_BYTES must be a positive size like 104857600 or 100MiB, got \"", max,
          "\""));
    }
    options.max_bytes = *bytes;
  }
  if (const char* keep = std::getenv("JSONL_SINK_KEEP"); keep != nullptr && *keep != '\0') {
    int value = 0;
    if (!absl::SimpleAtoi(keep, &value) || value < 0 || value > 1000) {
      return absl::InvalidArgumentError(
          absl::StrCat("JSONL_SINK_KEEP must be 0..1000, got \"", keep, "\""));
    }
    options.keep = value;
  }
  return options;
}

// An append-only JSON-lines file with size-based rotation. Thread-safe: appends are serialized,
// so lines never interleave.
class JsonlFile {
 public:
  explicit JsonlFile(SinkOptions options) : options_(std::move(options)) {}
  ~JsonlFile() {
    if (fd_ >= 0) close(fd_);
  }

  absl::Status Open() {
    absl::MutexLock lock(&mu_);
    return OpenLocked();
  }

  // Appends `line` (which ends in '\n'). When OK is returned the line is on disk if fsync is
  // on, else handed to the kernel. On error nothing of the line remains in the file.
  absl::Status Append(const std::string& line) {
    absl::MutexLock lock(&mu_);
    if (fd_ < 0) {
      // A previous rotation failed half-way; try again to get a file.
      if (absl::Status status = OpenLocked(); !status.ok()) return status;
    }
    if (size_ > 0 && size_ + line.size() > options_.max_bytes) {
      if (absl::Status status = RotateLocked(); !status.ok()) return status;
    }
    size_t written = 0;
    while (written < line.size()) {
      ssize_t n = write(fd_, line.data() + written, line.size() - written);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        const int error = errno;
        // Cut the torn line so that the retry does not leave half a line before the full one.
        if (written > 0 && ftruncate(fd_, static_cast<off_t>(size_)) != 0) {
          spdlog::error("{}", ErrnoText("truncate " + options_.path, errno));
        }
        return absl::UnavailableError(ErrnoText("write " + options_.path, error));
      }
      written += static_cast<size_t>(n);
    }
    if (options_.fsync && fdatasync(fd_) != 0) {
      // After a failed fdatasync the kernel may have dropped the dirty pages: the line's fate
      // is unknown, so it is retried (a duplicate line is possible, a lost one is not).
      const int error = errno;
      size_ += line.size();
      return absl::UnavailableError(ErrnoText("fdatasync " + options_.path, error));
    }
    size_ += line.size();
    return absl::OkStatus();
  }

 private:
  absl::Status OpenLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    fd_ = open(options_.path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) return absl::UnavailableError(ErrnoText("open " + options_.path, errno));
    struct stat st;
    if (fstat(fd_, &st) != 0) {
      const int error = errno;
      close(fd_);
      fd_ = -1;
      return absl::UnavailableError(ErrnoText("stat " + options_.path, error));
    }
    size_ = static_cast<uint64_t>(st.st_size);
    return absl::OkStatus();
  }

  // <path>.N-1 → <path>.N ... <path> → <path>.1, then a fresh <path>.
  absl::Status RotateLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    close(fd_);
    fd_ = -1;
    const std::string& path = options_.path;
    if (options_.keep == 0) {
      if (unlink(path.c_str()) != 0 && errno != ENOENT) {
        return absl::UnavailableError(ErrnoText("unlink " + path, errno));
      }
    } else {
      for (int i = options_.keep - 1; i >= 1; --i) {
        const std::string from = absl::StrCat(path, ".", i);
        const std::string to = absl::StrCat(path, ".", i + 1);
        if (rename(from.c_str(), to.c_str()) != 0 && errno != ENOENT) {
          return absl::UnavailableError(ErrnoText("rename " + from, errno));
        }
      }
      const std::string first = path + ".1";
      if (rename(path.c_str(), first.c_str()) != 0) {
        return absl::UnavailableError(ErrnoText("rename " + path, errno));
      }
    }
    if (absl::Status status = OpenLocked(); !status.ok()) return status;
    if (options_.fsync) {
      // The renames and the new file live in the directory: without this a crash could bring
      // back a directory where acked lines' file is missing.
      std::string dir_buffer = path;
      const int dir = open(dirname(dir_buffer.data()), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      if (dir < 0) return absl::UnavailableError(ErrnoText("open directory of " + path, errno));
      const int rc = fsync(dir);
      const int error = errno;
      close(dir);
      if (rc != 0) return absl::UnavailableError(ErrnoText("fsync directory of " + path, error));
    }
    spdlog::info("rotated {} (keeping {})", path, options_.keep);
    return absl::OkStatus();
  }

  const SinkOptions options_;
  absl::Mutex mu_;
  int fd_ ABSL_GUARDED_BY(mu_) = -1;
  uint64_t size_ ABSL_GUARDED_BY(mu_) = 0;
};

int Main() {
  absl::StatusOr<SinkOptions> options = OptionsFromEnv();
  if (!options.ok()) {
    spdlog::error("{}", std::string(options.status().message()));
    return kExitBadConfig;
  }
  JsonlFile file(*options);
  if (absl::Status status = file.Open(); !status.ok()) {
    spdlog::error("{}", std::string(status.message()));
    return 1;
  }
  spdlog::info("appending events to {} (fsync {}, rotate at {} bytes, keep {})", options->path,
               options->fsync ? "always" : "never", options->max_bytes, options->keep);

  google::protobuf::util::JsonPrintOptions print_options;
  print_options.preserve_proto_field_names = true;
  return sdk::Run([&](const v1::Event& event, uint32_t attempt) {
    std::string line;
    auto converted = google::protobuf::util::MessageToJsonString(event, &line, print_options);
    if (!converted.ok()) {
      // The same event will never convert: retrying cannot help.
      return sdk::Result::Reject("cannot convert to JSON: " + converted.ToString());
    }
    line.push_back('\n');
    if (absl::Status status = file.Append(line); !status.ok()) {
      spdlog::warn("sequence {}: {}", event.sequence(), std::string(status.message()));
      return sdk::Result::Retry(std::string(status.message()));
    }
    return sdk::Result::Ok();
  });
}

}  // namespace
}  // namespace pimgate::jsonl_sink

int main() { return pimgate::jsonl_sink::Main(); }
