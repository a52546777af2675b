// The YAML reader toolkit of config/: a value with the key path and line its errors name (Field),
// readers for one value (strings, words, booleans, integers, numbers, sizes, durations), mappings
// whose keys are all known, sequences, and the few combinators the sections share. Internal to
// config/: the sections (config/*_section.cc) are written with it, nothing else includes it.
#ifndef PIMGATE_CONFIG_YAML_READER_H_
#define PIMGATE_CONFIG_YAML_READER_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "yaml-cpp/yaml.h"

namespace pimgate::config_internal {

// A value in the document together with what error messages say about it: its key path
// ("sources[1].kind") and its 1-based line.
struct Field {
  YAML::Node node;
  std::string path;
  int line;
};

// The 1-based line of `node`.
int LineOf(const YAML::Node& node);

// InvalidArgument "line N: <path>: <problem>", the form of every configuration error.
absl::Status Invalid(const Field& field, absl::string_view problem);

// Quotes a configured (non-secret) value for an error message.
std::string Quote(absl::string_view text);

// How a node that has the wrong shape is described: "got a mapping", "got \"foo\"". Never used on
// secrets, since it prints scalars.
std::string Got(const YAML::Node& node);

// The OS's reason for errno `err` ("No such file or directory").
std::string ErrnoText(int err);

// The whole file; NotFound, PermissionDenied or FailedPrecondition with the OS's reason.
absl::StatusOr<std::string> ReadWholeFile(const std::string& path);

// ---- Readers for one value --------------------------------------------------------------------

// Reads one value into what the reader was made with; InvalidArgument (Invalid()) otherwise.
using ValueReader = std::function<absl::Status(const Field&)>;

// The text of a scalar value. Nulls (`key:` with nothing after it) are errors rather than empty
// strings: an operator who left a value out meant to write one.
absl::StatusOr<std::string> ScalarOf(const Field& field);

// A non-empty string.
ValueReader String(std::string& out);

// The index in `words` of the word `field` holds; the message lists them all.
absl::StatusOr<size_t> ReadChoice(const Field& field, const std::vector<absl::string_view>& words);

// One of a fixed set of words, stored as the value it stands for:
// OneOf<LogFormat>({{"text", LogFormat::kText}, {"json", LogFormat::kJson}}, log.format).
template <typename T>
ValueReader OneOf(std::initializer_list<std::pair<absl::string_view, T>> choices, T& out) {
  std::vector<absl::string_view> words;
  std::vector<T> values;
  for (const auto& [word, value] : choices) {
    words.push_back(word);
    values.push_back(value);
  }
  return [words = std::move(words), values = std::move(values), &out](const Field& field) {
    absl::StatusOr<size_t> index = ReadChoice(field, words);
    if (!index.ok()) return index.status();
    out = values[*index];
    return absl::OkStatus();
  };
}

// YAML 1.2 booleans only: yaml-cpp would also take yes/no/on/off, which YAML 1.2 reads as strings.
ValueReader Bool(bool& out);

// An integer of at least `min`.
absl::StatusOr<int64_t> ReadInteger(const Field& field, int64_t min);

// An integer of at least `min` (which is never negative) that fits in T.
template <typename T>
ValueReader Integer(T& out, int64_t min) {
  return [&out, min](const Field& field) -> absl::Status {
    absl::StatusOr<int64_t> value = ReadInteger(field, min);
    if (!value.ok()) return value.status();
    if (static_cast<uint64_t>(*value) > static_cast<uint64_t>(std::numeric_limits<T>::max())) {
      return Invalid(field, absl::StrCat("must be at most ", std::numeric_limits<T>::max()));
    }
    out = static_cast<T>(*value);
    return absl::OkStatus();
  };
}

// An integer from `min` to `max` (both within T).
template <typename T>
ValueReader IntegerInRange(T& out, int64_t min, int64_t max) {
  return [&out, min, max](const Field& field) -> absl::Status {
    absl::StatusOr<int64_t> value = ReadInteger(field, min);
    if (!value.ok()) return value.status();
    if (*value > max) {
      return Invalid(field, absl::StrCat("must be at most ", max, ", got ", *value));
    }
    out = static_cast<T>(*value);
    return absl::OkStatus();
  };
}

// A finite number from `min` to `max`.
ValueReader Number(double& out, double min, double max);

// A byte size that must be positive: every size limit in the config bounds something that cannot
// be zero (a body, a header block).
ValueReader ByteSize(std::size_t& out);

// A positive duration. Every duration in the config is a timeout, tolerance or retention, none of
// which means anything at zero.
absl::StatusOr<std::chrono::milliseconds> ReadDuration(const Field& field);
ValueReader Millis(std::chrono::milliseconds& out);

// A duration that may be zero (reconcile.interval: 0 = on demand only; overlap: 0 = none).
ValueReader MillisOrZero(std::chrono::milliseconds& out);

// For fields stored in seconds: a value such as 1500ms would otherwise be silently truncated.
template <typename Out>  // std::chrono::seconds or std::optional of it
ValueReader Seconds(Out& out) {
  return [&out](const Field& field) -> absl::Status {
    absl::StatusOr<std::chrono::milliseconds> duration = ReadDuration(field);
    if (!duration.ok()) return duration.status();
    if (duration->count() % 1000 != 0) {
      return Invalid(field, absl::StrCat("must be a whole number of seconds, got ",
                                         Quote(field.node.Scalar())));
    }
    out = std::chrono::duration_cast<std::chrono::seconds>(*duration);
    return absl::OkStatus();
  };
}

// A non-empty string passing `check`, which returns a problem or nothing.
ValueReader CheckedString(std::string& out,
                          std::function<std::optional<std::string>(absl::string_view)> check);

// A sequence of non-empty strings, each passing `check` (which returns a problem, or nothing).
// Replaces any default in `out`. With `lines`, also records the line of each element.
ValueReader StringList(std::vector<std::string>& out,
                       std::function<std::optional<std::string>(absl::string_view)> check = {},
                       std::vector<int>* lines = nullptr);

// A list that, if present, must not be empty: the key's absence already means "all".
ValueReader NonEmptyList(ValueReader read, absl::string_view what);

// ---- Mappings and sequences -------------------------------------------------------------------

// One key a mapping may hold, and how its value is read.
struct KeySpec {
  absl::string_view key;
  ValueReader read;
  bool required = false;
};

// Reads `field` as a mapping whose keys must all appear in `keys`. Values are read in document
// order, so the first error reported is the first one in the file. Unknown, duplicate and missing
// required keys are errors. A null mapping (`log:` with nothing under it) is read as empty, so a
// section can be written to show it exists while keeping every default.
//
// Adding a section or a key is one more KeySpec line at the caller.
absl::Status ReadMapping(const Field& field, std::initializer_list<KeySpec> keys);

// Reads `field` as a sequence, calling `read` on each element with its path ("key[i]") and line.
absl::Status ReadSequence(const Field& field, const ValueReader& read);

// Wraps `read` to remember the line of the key it reads, for checks across keys.
ValueReader Tracked(ValueReader read, std::optional<int>& line);

// Reports `later` when `earlier` (another key of the same mapping) was already read: the two
// keys exclude each other.
ValueReader ExclusiveWith(ValueReader read, const std::optional<int>& earlier_line,
                          absl::string_view earlier, absl::string_view later);

// Reads the initial_backoff and max_backoff of one schedule, which must satisfy initial <= max.
// The check runs at whichever of the two keys is read second, or, when only one is written, after
// the mapping against the other's default: either way at a key the operator wrote.
class BackoffRange {
 public:
  BackoffRange(std::chrono::milliseconds& initial, std::chrono::milliseconds& max)
      : initial_(initial), max_(max) {}

  ValueReader Initial();
  ValueReader Max();
  // Call after the mapping was read without error.
  absl::Status CheckAgainstDefaults() const;

 private:
  absl::Status CheckInitial(const Field& field) const;
  absl::Status CheckMax(const Field& field) const;

  std::chrono::milliseconds& initial_;
  std::chrono::milliseconds& max_;
  std::optional<Field> initial_field_;
  std::optional<Field> max_field_;
};

}  // namespace pimgate::config_internal

#endif  // PIMGATE_CONFIG_YAML_READER_H_
