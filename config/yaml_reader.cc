// The YAML reader toolkit (yaml_reader.h): Field, Invalid, the one-value readers, mappings and
// sequences.
#include "config/yaml_reader.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <map>
#include <system_error>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "common/did_you_mean.h"
#include "common/quote.h"
#include "common/units.h"

namespace pimgate::config_internal {
namespace {

// Every key pimgate reads is a short snake_case name. Anything else is not echoed in messages:
// a mistyped line can put its value (perhaps a secret) into the key.
bool LooksLikeKeyName(absl::string_view key) {
  constexpr size_t kMaxKeyName = 40;
  return !key.empty() && key.size() <= kMaxKeyName &&
         std::all_of(key.begin(), key.end(), [](char c) {
           return absl::ascii_islower(c) || absl::ascii_isdigit(c) || c == '_';
         });
}

// Errors from the OS carry its reason ("No such file or directory") as their message.
absl::Status ErrnoStatus(int err) {
  const std::string reason = ErrnoText(err);
  if (err == ENOENT) return absl::NotFoundError(reason);
  if (err == EACCES) return absl::PermissionDeniedError(reason);
  return absl::FailedPreconditionError(reason);
}

// "unknown key", with the closest key of the mapping when one is near enough to be a typo.
std::string UnknownKey(absl::string_view key, std::initializer_list<KeySpec> keys) {
  std::vector<std::string> names;
  for (const KeySpec& spec : keys) names.emplace_back(spec.key);
  std::optional<std::string> near = DidYouMean(key, names);
  if (!near.has_value()) return "unknown key";
  return absl::StrCat("unknown key; did you mean ", *near, "?");
}

}  // namespace

// yaml-cpp marks lines from 0, and gives -1 for nodes it made up (an empty document).
int LineOf(const YAML::Node& node) { return node.Mark().line < 0 ? 1 : node.Mark().line + 1; }

absl::Status Invalid(const Field& field, absl::string_view problem) {
  return absl::InvalidArgumentError(
      absl::StrCat("line ", field.line, ": ", field.path, ": ", problem));
}

std::string Quote(absl::string_view text) { return QuoteForMessage(text); }

std::string Got(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Map:
      return "got a mapping";
    case YAML::NodeType::Sequence:
      return "got a sequence";
    case YAML::NodeType::Scalar:
      return absl::StrCat("got ", Quote(node.Scalar()));
    default:
      return "got nothing";
  }
}

std::string ErrnoText(int err) { return std::generic_category().message(err); }

absl::StatusOr<std::string> ReadWholeFile(const std::string& path) {
  std::FILE* file = std::fopen(path.c_str(), "rbe");
  if (file == nullptr) return ErrnoStatus(errno);
  std::string contents;
  char buffer[16384];
  size_t n = 0;
  while ((n = std::fread(buffer, 1, sizeof(buffer), file)) > 0) contents.append(buffer, n);
  const int err = std::ferror(file) ? errno : 0;
  std::fclose(file);
  if (err != 0) return ErrnoStatus(err);
  return contents;
}

absl::StatusOr<std::string> ScalarOf(const Field& field) {
  if (field.node.IsScalar()) return field.node.Scalar();
  if (field.node.IsNull()) return Invalid(field, "missing value");
  return Invalid(field, absl::StrCat("must be a single value, ", Got(field.node)));
}

ValueReader String(std::string& out) {
  return [&out](const Field& field) -> absl::Status {
    absl::StatusOr<std::string> text = ScalarOf(field);
    if (!text.ok()) return text.status();
    if (text->empty()) return Invalid(field, "must not be empty");
    out = *std::move(text);
    return absl::OkStatus();
  };
}

absl::StatusOr<size_t> ReadChoice(const Field& field, const std::vector<absl::string_view>& words) {
  absl::StatusOr<std::string> text = ScalarOf(field);
  if (!text.ok()) return text.status();
  for (size_t i = 0; i < words.size(); ++i) {
    if (*text == words[i]) return i;
  }
  // "must be "a" or "b"", "must be one of "a", "b" or "c"".
  std::vector<std::string> quoted;
  for (absl::string_view word : words) quoted.push_back(absl::StrCat("\"", word, "\""));
  const std::string last = quoted.back();
  quoted.pop_back();
  return Invalid(field,
                 absl::StrCat("must be ", quoted.size() > 1 ? "one of " : "",
                              absl::StrJoin(quoted, ", "), " or ", last, ", ", Got(field.node)));
}

ValueReader Bool(bool& out) {
  return [&out](const Field& field) -> absl::Status {
    absl::StatusOr<std::string> text = ScalarOf(field);
    if (!text.ok()) return text.status();
    if (*text == "true" || *text == "True" || *text == "TRUE") {
      out = true;
    } else if (*text == "false" || *text == "False" || *text == "FALSE") {
      out = false;
    } else {
      return Invalid(field, absl::StrCat("must be true or false, ", Got(field.node)));
    }
    return absl::OkStatus();
  };
}

absl::StatusOr<int64_t> ReadInteger(const Field& field, int64_t min) {
  absl::StatusOr<std::string> text = ScalarOf(field);
  if (!text.ok()) return text.status();
  // A leading minus parses, so that "-1" gets the range message rather than "not an integer".
  absl::string_view digits = *text;
  absl::ConsumePrefix(&digits, "-");
  if (digits.empty() || !std::all_of(digits.begin(), digits.end(), absl::ascii_isdigit)) {
    return Invalid(field, absl::StrCat("must be an integer, ", Got(field.node)));
  }
  int64_t value = 0;
  if (!absl::SimpleAtoi(*text, &value)) return Invalid(field, "is too large");
  if (value < min) return Invalid(field, absl::StrCat("must be at least ", min, ", got ", value));
  return value;
}

ValueReader Number(double& out, double min, double max) {
  return [&out, min, max](const Field& field) -> absl::Status {
    absl::StatusOr<std::string> text = ScalarOf(field);
    if (!text.ok()) return text.status();
    double value = 0;
    if (!absl::SimpleAtod(*text, &value) || !std::isfinite(value)) {
      return Invalid(field, absl::StrCat("must be a number, ", Got(field.node)));
    }
    if (value < min || value > max) {
      return Invalid(field, max == std::numeric_limits<double>::max()
                                ? absl::StrCat("must be at least ", min, ", got ", *text)
                                : absl::StrCat("must be from ", min, " to ", max, ", got ", *text));
    }
    out = value;
    return absl::OkStatus();
  };
}

ValueReader ByteSize(std::size_t& out) {
  return [&out](const Field& field) -> absl::Status {
    absl::StatusOr<std::string> text = ScalarOf(field);
    if (!text.ok()) return text.status();
    absl::StatusOr<std::size_t> bytes = ParseByteSize(*text);
    if (!bytes.ok()) return Invalid(field, bytes.status().message());
    if (*bytes == 0) return Invalid(field, "must be greater than zero");
    out = *bytes;
    return absl::OkStatus();
  };
}

absl::StatusOr<std::chrono::milliseconds> ReadDuration(const Field& field) {
  absl::StatusOr<std::string> text = ScalarOf(field);
  if (!text.ok()) return text.status();
  absl::StatusOr<std::chrono::milliseconds> duration = ParseDuration(*text);
  if (!duration.ok()) return Invalid(field, duration.status().message());
  if (duration->count() == 0) return Invalid(field, "must be greater than zero");
  return *duration;
}

ValueReader Millis(std::chrono::milliseconds& out) {
  return [&out](const Field& field) -> absl::Status {
    absl::StatusOr<std::chrono::milliseconds> duration = ReadDuration(field);
    if (!duration.ok()) return duration.status();
    out = *duration;
    return absl::OkStatus();
  };
}

ValueReader MillisOrZero(std::chrono::milliseconds& out) {
  return [&out](const Field& field) -> absl::Status {
    absl::StatusOr<std::string> text = ScalarOf(field);
    if (!text.ok()) return text.status();
    absl::StatusOr<std::chrono::milliseconds> duration = ParseDuration(*text);
    if (!duration.ok()) return Invalid(field, duration.status().message());
    out = *duration;
    return absl::OkStatus();
  };
}

ValueReader CheckedString(std::string& out,
                          std::function<std::optional<std::string>(absl::string_view)> check) {
  return [&out, check = std::move(check)](const Field& field) -> absl::Status {
    if (absl::Status status = String(out)(field); !status.ok()) return status;
    if (check) {
      if (std::optional<std::string> problem = check(out); problem.has_value()) {
        return Invalid(field, *problem);
      }
    }
    return absl::OkStatus();
  };
}

ValueReader StringList(std::vector<std::string>& out,
                       std::function<std::optional<std::string>(absl::string_view)> check,
                       std::vector<int>* lines) {
  return [&out, check = std::move(check), lines](const Field& field) -> absl::Status {
    out.clear();
    if (lines != nullptr) lines->clear();
    return ReadSequence(field, [&](const Field& item) -> absl::Status {
      std::string text;
      if (absl::Status status = CheckedString(text, check)(item); !status.ok()) return status;
      out.push_back(std::move(text));
      if (lines != nullptr) lines->push_back(item.line);
      return absl::OkStatus();
    });
  };
}

ValueReader NonEmptyList(ValueReader read, absl::string_view what) {
  return [read = std::move(read), what = std::string(what)](const Field& field) -> absl::Status {
    if (field.node.IsNull() || (field.node.IsSequence() && field.node.size() == 0)) {
      return Invalid(field,
                     absl::StrCat("must list at least one ", what, " (leave the key out for all)"));
    }
    return read(field);
  };
}

absl::Status ReadMapping(const Field& field, std::initializer_list<KeySpec> keys) {
  if (!field.node.IsMap() && !field.node.IsNull()) {
    return Invalid(field, absl::StrCat("must be a mapping, ", Got(field.node)));
  }
  const std::string prefix = field.path.empty() ? "" : absl::StrCat(field.path, ".");
  std::map<std::string, int, std::less<>> seen;  // key -> line, for duplicates
  if (field.node.IsMap()) {
    for (const auto& entry : field.node) {
      // Copies: yaml-cpp's iterators hand out temporaries, and Nodes are cheap handles.
      const YAML::Node key = entry.first;
      const int line = LineOf(key);
      if (!key.IsScalar()) {
        return Invalid({key, field.path.empty() ? "<document>" : field.path, line},
                       "keys must be plain names");
      }
      Field value{entry.second,
                  absl::StrCat(prefix, LooksLikeKeyName(key.Scalar()) ? key.Scalar() : "<key>"),
                  line};
      auto [previous, inserted] = seen.emplace(key.Scalar(), line);
      if (!inserted) {
        return Invalid(value, absl::StrCat("duplicate key (first at line ", previous->second, ")"));
      }
      const KeySpec* spec = nullptr;
      for (const KeySpec& candidate : keys) {
        if (candidate.key == key.Scalar()) spec = &candidate;
      }
      if (spec == nullptr) {
        if (!LooksLikeKeyName(key.Scalar())) {
          // Not shown: a key written without the space after ':' ("secret:abc") or in a flow
          // mapping without its ':' ("{secret abc}") carries its value, which may be a secret.
          return Invalid({key, absl::StrCat(prefix, "<key>"), line},
                         "unknown key, not shown because it does not look like a key name (a "
                         "missing space after ':'?); it may hold a value such as a secret");
        }
        return Invalid(value, UnknownKey(key.Scalar(), keys));
      }
      if (absl::Status status = spec->read(value); !status.ok()) return status;
    }
  }
  for (const KeySpec& spec : keys) {
    if (spec.required && !seen.contains(spec.key)) {
      return Invalid({field.node, absl::StrCat(prefix, spec.key), field.line}, "required");
    }
  }
  return absl::OkStatus();
}

absl::Status ReadSequence(const Field& field, const ValueReader& read) {
  if (!field.node.IsSequence()) {
    return Invalid(field, absl::StrCat("must be a sequence, ", Got(field.node)));
  }
  for (size_t i = 0; i < field.node.size(); ++i) {
    const YAML::Node item = field.node[i];
    if (absl::Status status = read({item, absl::StrCat(field.path, "[", i, "]"), LineOf(item)});
        !status.ok()) {
      return status;
    }
  }
  return absl::OkStatus();
}

ValueReader Tracked(ValueReader read, std::optional<int>& line) {
  return [read = std::move(read), &line](const Field& field) {
    line = field.line;
    return read(field);
  };
}

ValueReader ExclusiveWith(ValueReader read, const std::optional<int>& earlier_line,
                          absl::string_view earlier, absl::string_view later) {
  return [read = std::move(read), &earlier_line, earlier = std::string(earlier),
          later = std::string(later)](const Field& field) -> absl::Status {
    if (earlier_line.has_value()) {
      return Invalid(field, absl::StrCat("set only one of ", earlier, " (line ", *earlier_line,
                                         ") and ", later));
    }
    return read(field);
  };
}

ValueReader BackoffRange::Initial() {
  return [this](const Field& field) -> absl::Status {
    if (absl::Status status = Millis(initial_)(field); !status.ok()) return status;
    initial_field_ = field;
    return max_field_.has_value() ? CheckInitial(field) : absl::OkStatus();
  };
}

ValueReader BackoffRange::Max() {
  return [this](const Field& field) -> absl::Status {
    if (absl::Status status = Millis(max_)(field); !status.ok()) return status;
    max_field_ = field;
    return initial_field_.has_value() ? CheckMax(field) : absl::OkStatus();
  };
}

absl::Status BackoffRange::CheckAgainstDefaults() const {
  if (initial_field_.has_value() && !max_field_.has_value()) return CheckInitial(*initial_field_);
  if (max_field_.has_value() && !initial_field_.has_value()) return CheckMax(*max_field_);
  return absl::OkStatus();
}

absl::Status BackoffRange::CheckInitial(const Field& field) const {
  if (initial_ <= max_) return absl::OkStatus();
  return Invalid(field, absl::StrCat("must be at most max_backoff (", FormatDuration(max_),
                                     "), got ", FormatDuration(initial_)));
}

absl::Status BackoffRange::CheckMax(const Field& field) const {
  if (initial_ <= max_) return absl::OkStatus();
  return Invalid(field, absl::StrCat("must be at least initial_backoff (", FormatDuration(initial_),
                                     "), got ", FormatDuration(max_)));
}

}  // namespace pimgate::config_internal
