// Loads pimgate's YAML configuration into the structs of config.h, rejecting anything it does not
// understand so that a typo fails at startup instead of silently falling back to a default.
#include "config/config.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <initializer_list>
#include <limits>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <system_error>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "common/did_you_mean.h"
#include "common/time_zone.h"
#include "yaml-cpp/eventhandler.h"
#include "yaml-cpp/yaml.h"

namespace pimgate {
namespace {

// A value in the document together with what error messages say about it: its key path
// ("sources[1].kind") and its 1-based line.
struct Field {
  YAML::Node node;
  std::string path;
  int line;
};

// yaml-cpp marks lines from 0, and gives -1 for nodes it made up (an empty document).
int LineOf(const YAML::Node& node) { return node.Mark().line < 0 ? 1 : node.Mark().line + 1; }

absl::Status Invalid(const Field& field, absl::string_view problem) {
  return absl::InvalidArgumentError(
      absl::StrCat("line ", field.line, ": ", field.path, ": ", problem));
}

// Quotes a configured (non-secret) value for an error message.
std::string Quote(absl::string_view text) {
  constexpr size_t kMaxShown = 64;
  if (text.size() > kMaxShown) {
    return absl::StrCat("\"", absl::CHexEscape(text.substr(0, kMaxShown)), "...\"");
  }
  return absl::StrCat("\"", absl::CHexEscape(text), "\"");
}

// Every key pimgate reads is a short snake_case name. Anything else is not echoed in messages:
// a mistyped line can put its value (perhaps a secret) into the key.
bool LooksLikeKeyName(absl::string_view key) {
  constexpr size_t kMaxKeyName = 40;
  return !key.empty() && key.size() <= kMaxKeyName &&
         std::all_of(key.begin(), key.end(), [](char c) {
           return absl::ascii_islower(c) || absl::ascii_isdigit(c) || c == '_';
         });
}

// How a node that has the wrong shape is described: "got a mapping", "got \"foo\"". Never used on
// secrets, since it prints scalars.
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

// Errors from the OS carry its reason ("No such file or directory") as their message.
absl::Status ErrnoStatus(int err) {
  const std::string reason = ErrnoText(err);
  if (err == ENOENT) return absl::NotFoundError(reason);
  if (err == EACCES) return absl::PermissionDeniedError(reason);
  return absl::FailedPreconditionError(reason);
}

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

// ---- Readers for one value --------------------------------------------------------------------

using ValueReader = std::function<absl::Status(const Field&)>;

// The text of a scalar value. Nulls (`key:` with nothing after it) are errors rather than empty
// strings: an operator who left a value out meant to write one.
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

// One of a fixed set of words; the message lists them all.
ValueReader OneOf(std::initializer_list<absl::string_view> choices, std::string& out) {
  std::vector<std::string> allowed(choices.begin(), choices.end());
  return [allowed = std::move(allowed), &out](const Field& field) -> absl::Status {
    absl::StatusOr<std::string> text = ScalarOf(field);
    if (!text.ok()) return text.status();
    for (const std::string& choice : allowed) {
      if (*text == choice) {
        out = choice;
        return absl::OkStatus();
      }
    }
    // "must be "a" or "b"", "must be one of "a", "b" or "c"".
    std::vector<std::string> quoted;
    for (const std::string& choice : allowed) quoted.push_back(absl::StrCat("\"", choice, "\""));
    const std::string last = quoted.back();
    quoted.pop_back();
    return Invalid(field,
                   absl::StrCat("must be ", quoted.size() > 1 ? "one of " : "",
                                absl::StrJoin(quoted, ", "), " or ", last, ", ", Got(field.node)));
  };
}

// YAML 1.2 booleans only: yaml-cpp would also take yes/no/on/off, which YAML 1.2 reads as strings.
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

// A byte size that must be positive: every size limit in the config bounds something that cannot
// be zero (a body, a header block).
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

// A positive duration. Every duration in the config is a timeout, tolerance or retention, none of
// which means anything at zero.
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

// ---- Mappings ---------------------------------------------------------------------------------

// One key a mapping may hold, and how its value is read.
struct KeySpec {
  absl::string_view key;
  ValueReader read;
  bool required = false;
};

// "unknown key", with the closest key of the mapping when one is near enough to be a typo.
std::string UnknownKey(absl::string_view key, std::initializer_list<KeySpec> keys) {
  std::vector<std::string> names;
  for (const KeySpec& spec : keys) names.emplace_back(spec.key);
  std::optional<std::string> near = DidYouMean(key, names);
  if (!near.has_value()) return "unknown key";
  return absl::StrCat("unknown key; did you mean ", *near, "?");
}

// Reads `field` as a mapping whose keys must all appear in `keys`. Values are read in document
// order, so the first error reported is the first one in the file. Unknown, duplicate and missing
// required keys are errors. A null mapping (`log:` with nothing under it) is read as empty, so a
// section can be written to show it exists while keeping every default.
//
// Adding a section or a key is one more KeySpec line at the caller.
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

// ---- gateway ----------------------------------------------------------------------------------

// host:port, with IPv6 hosts in brackets ("[::1]:8443"), and a port of at least `min_port`.
ValueReader HostPort(std::string& out, int min_port) {
  return [&out, min_port](const Field& field) -> absl::Status {
    absl::StatusOr<std::string> text = ScalarOf(field);
    if (!text.ok()) return text.status();
    const absl::string_view listen = *text;
    const size_t colon = listen.rfind(':');
    if (colon == absl::string_view::npos) {
      return Invalid(field, absl::StrCat("must be host:port, ", Got(field.node)));
    }
    absl::string_view host = listen.substr(0, colon);
    const absl::string_view port = listen.substr(colon + 1);
    if (absl::ConsumePrefix(&host, "[")) {
      if (!absl::ConsumeSuffix(&host, "]") || host.empty()) {
        return Invalid(field, absl::StrCat("must be host:port or [ipv6]:port, ", Got(field.node)));
      }
    } else if (host.empty()) {
      return Invalid(
          field, absl::StrCat("host must not be empty (use 0.0.0.0 for all), ", Got(field.node)));
    } else if (absl::StrContains(host, ":")) {
      return Invalid(
          field, absl::StrCat("IPv6 hosts go in brackets, e.g. \"[::1]:8443\", ", Got(field.node)));
    }
    int port_number = -1;
    if (port.empty() || port.size() > 5 ||
        !std::all_of(port.begin(), port.end(), absl::ascii_isdigit) ||
        !absl::SimpleAtoi(port, &port_number) || port_number < min_port || port_number > 65535) {
      return Invalid(field, absl::StrCat("port must be a number from ", min_port, " to 65535, ",
                                         Got(field.node)));
    }
    out = *std::move(text);
    return absl::OkStatus();
  };
}

// Where the gateway listens. The port may be 0 (pick a free one, for tests).
ValueReader Listen(std::string& out) { return HostPort(out, 0); }

// Checks up front that a file the server opens later exists and is readable, so a bad path fails
// at config load with the key that named it rather than at the first TLS handshake.
absl::Status CheckReadableFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::NotFoundError(absl::StrCat("cannot read ", Quote(path), ": ", ErrnoText(errno)));
  }
  struct stat info;
  const bool regular = ::fstat(fd, &info) == 0 && S_ISREG(info.st_mode);
  ::close(fd);
  if (!regular) return absl::NotFoundError(absl::StrCat(Quote(path), " is not a regular file"));
  return absl::OkStatus();
}

ValueReader ReadableFile(std::string& out) {
  return [&out](const Field& field) -> absl::Status {
    if (absl::Status status = String(out)(field); !status.ok()) return status;
    if (absl::Status status = CheckReadableFile(out); !status.ok()) {
      return Invalid(field, status.message());
    }
    return absl::OkStatus();
  };
}

ValueReader Tls(std::optional<TlsConfig>& out) {
  return [&out](const Field& field) -> absl::Status {
    TlsConfig& tls = out.emplace();
    return ReadMapping(field, {
                                  {"cert_file", ReadableFile(tls.cert_file), true},
                                  {"key_file", ReadableFile(tls.key_file), true},
                                  {"min_version", OneOf({"1.2", "1.3"}, tls.min_version)},
                              });
  };
}

ValueReader Gateway(GatewayConfig& gateway) {
  return [&gateway](const Field& field) -> absl::Status {
    // Where max_buffered_bytes was written, for the check against body_limit below.
    std::optional<Field> budget_field;
    auto budget = [&gateway, &budget_field](const Field& value) {
      budget_field = value;
      return ByteSize(gateway.max_buffered_bytes)(value);
    };
    absl::Status status = ReadMapping(
        field, {
                   {"listen", Listen(gateway.listen)},
                   {"tls", Tls(gateway.tls)},
                   {"threads", Integer(gateway.threads, 0)},
                   {"body_limit", ByteSize(gateway.body_limit)},
                   {"header_limit", ByteSize(gateway.header_limit)},
                   {"max_events_per_request", Integer(gateway.max_events_per_request, 1)},
                   {"header_timeout", Millis(gateway.header_timeout)},
                   {"body_timeout", Millis(gateway.body_timeout)},
                   {"idle_timeout", Millis(gateway.idle_timeout)},
                   {"handshake_timeout", Millis(gateway.handshake_timeout)},
                   {"max_connections", Integer(gateway.max_connections, 1)},
                   {"max_buffered_bytes", budget},
                   {"max_connections_per_client", Integer(gateway.max_connections_per_client, 1)},
                   {"buffer_wait", Millis(gateway.buffer_wait)},
                   {"timestamp_tolerance", Seconds(gateway.timestamp_tolerance)},
               });
    if (!status.ok()) return status;
    // Half the budget is every connection's small share; a body of body_limit bytes must fit in
    // the other half, or it could never be read.
    if (budget_field.has_value() && gateway.max_buffered_bytes < 2 * gateway.body_limit) {
      return Invalid(*budget_field, absl::StrCat("must be at least twice gateway.body_limit (",
                                                 2 * gateway.body_limit, " bytes), got ",
                                                 gateway.max_buffered_bytes));
    }
    return absl::OkStatus();
  };
}

// ---- store and log ----------------------------------------------------------------------------

ValueReader Store(StoreConfig& store) {
  return [&store](const Field& field) {
    return ReadMapping(field, {
                                  {"path", String(store.path), true},
                                  {"sync", Bool(store.sync)},
                                  {"retention", Seconds(store.retention)},
                                  {"dead_letter_retention", Seconds(store.dead_letter_retention)},
                                  {"quarantine_retention", Seconds(store.quarantine_retention)},
                                  {"retention_interval", Millis(store.retention_interval)},
                                  {"max_commit_requests", Integer(store.max_commit_requests, 1)},
                                  {"max_pending_requests", Integer(store.max_pending_requests, 1)},
                              });
  };
}

ValueReader Metrics(MetricsConfig& metrics) {
  return [&metrics](const Field& field) {
    return ReadMapping(field, {
                                  {"enabled", Bool(metrics.enabled)},
                                  {"listen", Listen(metrics.listen)},
                              });
  };
}

ValueReader Log(LogConfig& log) {
  return [&log](const Field& field) {
    return ReadMapping(field,
                       {
                           {"level", OneOf({"trace", "debug", "info", "warn", "error"}, log.level)},
                           {"format", OneOf({"text", "json"}, log.format)},
                       });
  };
}

// ---- sources ----------------------------------------------------------------------------------

// "$NAME": a variable reference written shell-style, without the braces pimgate needs.
bool LooksLikeBareEnvReference(absl::string_view text) {
  if (text.size() < 2 || text[0] != '$') return false;
  const absl::string_view name = text.substr(1);
  return !absl::ascii_isdigit(name.front()) && std::all_of(name.begin(), name.end(), [](char c) {
    return absl::ascii_isalnum(c) || c == '_';
  });
}

// Resolves a secret reference. Error messages name the key, the variable or the file, and never
// the value: they end up in logs.
ValueReader SecretValue(std::optional<Secret>& out) {
  return [&out](const Field& field) -> absl::Status {
    if (!field.node.IsScalar()) {
      // Spelled out here rather than with Got(), which would print what may be the secret.
      if (field.node.IsNull()) return Invalid(field, "missing value");
      return Invalid(field, "must be a single string (inline, \"${ENV_VAR}\" or \"file:/path\")");
    }
    const std::string& text = field.node.Scalar();
    Secret secret;
    if (absl::StartsWith(text, "${")) {
      absl::string_view name = text;
      name.remove_prefix(2);
      const bool valid = absl::ConsumeSuffix(&name, "}") && !name.empty() &&
                         !absl::ascii_isdigit(name.front()) &&
                         std::all_of(name.begin(), name.end(),
                                     [](char c) { return absl::ascii_isalnum(c) || c == '_'; });
      if (!valid) {
        return Invalid(field,
                       "an environment reference must be exactly ${NAME}, with NAME made of "
                       "letters, digits and _");
      }
      secret.origin = absl::StrCat("env:", name);
      const char* value = std::getenv(std::string(name).c_str());
      if (value == nullptr) {
        return Invalid(field, absl::StrCat("environment variable ", name, " is not set"));
      }
      if (*value == '\0') {
        return Invalid(field, absl::StrCat("environment variable ", name, " is empty"));
      }
      secret.value = value;
    } else if (absl::StartsWith(text, "file:")) {
      const std::string path = text.substr(5);
      if (path.empty()) return Invalid(field, "\"file:\" must be followed by a path");
      secret.origin = text;
      absl::StatusOr<std::string> contents = ReadWholeFile(path);
      if (!contents.ok()) {
        return Invalid(field, absl::StrCat("cannot read secret file ", Quote(path), ": ",
                                           contents.status().message()));
      }
      secret.value = *std::move(contents);
      // Files written by `echo` or an editor end with a newline that is not part of the secret.
      absl::StripTrailingAsciiWhitespace(&secret.value);
      if (secret.value.empty()) {
        return Invalid(field, absl::StrCat("secret file ", Quote(path), " is empty"));
      }
    } else if (LooksLikeBareEnvReference(text)) {
      // "$NAME" would silently become the secret itself, and every signature check would fail.
      const absl::string_view name = absl::string_view(text).substr(1);
      // The name is shown only when it surely is one (set, or written like a variable), so that
      // an inline secret that merely starts with '$' is not echoed.
      const bool surely_a_name =
          std::getenv(std::string(name).c_str()) != nullptr ||
          std::all_of(name.begin(), name.end(), [](char c) {
            return absl::ascii_isupper(c) || absl::ascii_isdigit(c) || c == '_';
          });
      return Invalid(field,
                     absl::StrCat("looks like an environment variable without braces: write ",
                                  surely_a_name ? absl::StrCat("${", name, "}") : "${NAME}",
                                  " to read the variable (a secret that really starts with $ "
                                  "goes in a file: file:/path)"));
    } else {
      if (text.empty()) return Invalid(field, "must not be empty");
      secret.origin = "inline";
      secret.value = text;
    }
    out = std::move(secret);
    return absl::OkStatus();
  };
}

bool IsSourceName(absl::string_view name) {
  return !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
    return absl::ascii_islower(c) || absl::ascii_isdigit(c) || c == '_' || c == '-';
  });
}

ValueReader SourceName(std::string& out) {
  return [&out](const Field& field) -> absl::Status {
    if (absl::Status status = String(out)(field); !status.ok()) return status;
    if (!IsSourceName(out)) {
      return Invalid(field, absl::StrCat("must use only a-z, 0-9, _ and -, ", Got(field.node)));
    }
    return absl::OkStatus();
  };
}

ValueReader SourcePath(std::string& out) {
  return [&out](const Field& field) -> absl::Status {
    if (absl::Status status = String(out)(field); !status.ok()) return status;
    if (out.front() != '/') {
      return Invalid(field, absl::StrCat("must start with /, ", Got(field.node)));
    }
    // The router matches the request path exactly; a query or fragment here could never match.
    if (out.find_first_of("?# \t") != std::string::npos) {
      return Invalid(field, absl::StrCat("must not contain ?, # or spaces, ", Got(field.node)));
    }
    return absl::OkStatus();
  };
}

// Length bounds of the Event Platform's notification_webhook_secret.
constexpr std::size_t kMinNotificationSecret = 16;
constexpr std::size_t kMaxNotificationSecret = 256;

// A proxy for calls to Akeneo: "none", or an http(s):// or socks5(h):// URL (which may carry
// credentials, so it is never echoed in an error).
ValueReader Proxy(std::string& out) {
  return [&out](const Field& field) -> absl::Status {
    if (absl::Status status = String(out)(field); !status.ok()) return status;
    if (out == "none") return absl::OkStatus();
    if (!absl::StartsWith(out, "http://") && !absl::StartsWith(out, "https://") &&
        !absl::StartsWith(out, "socks5://") && !absl::StartsWith(out, "socks5h://")) {
      // Not Got(): a proxy URL may carry credentials.
      return Invalid(field,
                     "must be \"none\" or a proxy URL starting with http://, https://, socks5:// "
                     "or socks5h://");
    }
    return absl::OkStatus();
  };
}

// sources[].rest and sources[].reconcile, defined with the plugin readers they share.
ValueReader Tracked(ValueReader read, std::optional<int>& line);
ValueReader Rest(std::optional<RestConfig>& out);
ValueReader Reconcile(std::optional<ReconcileConfig>& out);
ValueReader Platform(std::optional<PlatformConfig>& out);

// Reads one source. Uniqueness across sources is checked by the caller.
absl::Status ReadSource(const Field& field, SourceConfig& source) {
  std::string kind;
  std::optional<Secret> secret;
  std::optional<int> tolerance_line;
  std::optional<int> reconcile_line;
  std::optional<int> notification_path_line;
  std::optional<int> notification_secret_line;
  std::optional<int> platform_line;
  absl::Status status = ReadMapping(
      field, {
                 {"name", SourceName(source.name), true},
                 {"kind", OneOf({"events_api", "event_platform"}, kind), true},
                 {"path", SourcePath(source.path), true},
                 {"secret", SecretValue(secret), true},
                 {"secondary_secret", SecretValue(source.secondary_secret)},
                 {"timestamp_tolerance",
                  [&source, &tolerance_line](const Field& value) {
                    tolerance_line = value.line;
                    return Seconds(source.timestamp_tolerance)(value);
                  }},
                 {"rest", Rest(source.rest)},
                 {"reconcile", Tracked(Reconcile(source.reconcile), reconcile_line)},
                 {"notification_path",
                  Tracked(SourcePath(source.notification_path), notification_path_line)},
                 {"notification_secret",
                  Tracked(SecretValue(source.notification_secret), notification_secret_line)},
                 {"platform", Tracked(Platform(source.platform), platform_line)},
             });
  if (!status.ok()) return status;
  // Reconciliation reads the PIM through `rest`; without it the section could never run.
  if (reconcile_line.has_value() && !source.rest.has_value()) {
    return Invalid({field.node, absl::StrCat(field.path, ".reconcile"), *reconcile_line},
                   "needs rest (the PIM's REST API) in the same source");
  }
  if (source.rest.has_value() && !source.reconcile.has_value()) source.reconcile.emplace();
  source.kind = kind == "event_platform" ? SourceKind::kEventPlatform : SourceKind::kEventsApi;
  source.secret = *std::move(secret);
  // Only legacy Events API requests carry the timestamp this bounds; on other sources the key
  // would be silently ignored.
  if (tolerance_line.has_value() && source.kind != SourceKind::kEventsApi) {
    return Invalid({field.node, absl::StrCat(field.path, ".timestamp_tolerance"), *tolerance_line},
                   "only applies to events_api sources");
  }
  // Only the Event Platform sends notification webhooks.
  for (const auto& [key, line] : {std::pair{"notification_path", notification_path_line},
                                  std::pair{"notification_secret", notification_secret_line}}) {
    if (line.has_value() && source.kind != SourceKind::kEventPlatform) {
      return Invalid({field.node, absl::StrCat(field.path, ".", key), *line},
                     "only applies to event_platform sources (the Event Platform's notification "
                     "webhooks)");
    }
  }
  if (notification_path_line.has_value() && source.notification_path == source.path) {
    return Invalid(
        {field.node, absl::StrCat(field.path, ".notification_path"), *notification_path_line},
        "must differ from path (notifications sent to path are recognised anyway)");
  }
  // Akeneo refuses a notification_webhook_secret outside 16..256 characters: another one could
  // never match what the platform signs with.
  if (source.notification_secret.has_value()) {
    const std::size_t length = source.notification_secret->value.size();
    if (length < kMinNotificationSecret || length > kMaxNotificationSecret) {
      return Invalid(
          {field.node, absl::StrCat(field.path, ".notification_secret"), *notification_secret_line},
          absl::StrCat("must be ", kMinNotificationSecret, " to ", kMaxNotificationSecret,
                       " characters (Akeneo's limit for notification_webhook_secret), "
                       "got ",
                       length));
    }
  }
  if (platform_line.has_value()) {
    const Field platform_field{field.node, absl::StrCat(field.path, ".platform"), *platform_line};
    // The management API manages Event Platform subscriptions; a legacy source has none.
    if (source.kind != SourceKind::kEventPlatform) {
      return Invalid(platform_field, "only applies to event_platform sources");
    }
    // Every management call carries a PIM access token, X-PIM-URL and X-PIM-CLIENT-ID, all of
    // which come from the source's REST credentials.
    if (!source.rest.has_value()) {
      return Invalid(platform_field,
                     "needs rest (the PIM's REST API) in the same source: the Event Platform "
                     "management API is called with a PIM access token, the PIM's URL and the "
                     "Connection's client id, all taken from rest");
    }
    if (source.platform->subscriber_name.empty()) {
      source.platform->subscriber_name = absl::StrCat("pimgate ", source.name);
    }
  }
  return absl::OkStatus();
}

ValueReader Sources(std::vector<SourceConfig>& sources) {
  return [&sources](const Field& field) -> absl::Status {
    if (field.node.IsNull() || (field.node.IsSequence() && field.node.size() == 0)) {
      return Invalid(field, "must list at least one source");
    }
    if (!field.node.IsSequence()) {
      return Invalid(field, absl::StrCat("must be a sequence, ", Got(field.node)));
    }
    // name or path -> (index, line) of the source that first used it.
    std::map<std::string, std::pair<size_t, int>> names;
    // path -> (index, line, key) of the source that first used it (key: path or
    // notification_path).
    std::map<std::string, std::tuple<size_t, int, std::string>> paths;
    for (size_t i = 0; i < field.node.size(); ++i) {
      const YAML::Node item = field.node[i];
      const std::string item_path = absl::StrCat(field.path, "[", i, "]");
      SourceConfig source;
      if (absl::Status status = ReadSource({item, item_path, LineOf(item)}, source); !status.ok()) {
        return status;
      }
      // Duplicates are reported at the second source's key, pointing back at the first.
      const int name_line = LineOf(item["name"]);
      if (auto [first, inserted] = names.emplace(source.name, std::make_pair(i, name_line));
          !inserted) {
        return Invalid({item, item_path + ".name", name_line},
                       absl::StrCat("duplicate of sources[", first->second.first, "].name (line ",
                                    first->second.second, ")"));
      }
      // A path routes to one source only: path and notification_path share one namespace.
      std::vector<std::pair<std::string, std::string>> own_paths = {{"path", source.path}};
      if (!source.notification_path.empty()) {
        own_paths.emplace_back("notification_path", source.notification_path);
      }
      for (const auto& [key, path] : own_paths) {
        const int line = LineOf(item[key]);
        if (auto [first, inserted] = paths.emplace(path, std::make_tuple(i, line, key));
            !inserted) {
          return Invalid(
              {item, absl::StrCat(item_path, ".", key), line},
              absl::StrCat("duplicate of sources[", std::get<0>(first->second), "].",
                           std::get<2>(first->second), " (line ", std::get<1>(first->second), ")"));
        }
      }
      sources.push_back(std::move(source));
    }
    return absl::OkStatus();
  };
}

// ---- plugins and runtime ----------------------------------------------------------------------

// Plugin names become socket file names and label metrics, so they are kept short.
constexpr size_t kMaxPluginNameLength = 64;
// Upper bound of plugins[].max_in_flight: each outstanding delivery holds an event in memory.
constexpr int64_t kMaxInFlightLimit = 10'000;
// Longest path a unix socket address holds (sun_path less its terminating NUL): 107 on Linux.
constexpr size_t kMaxUnixSocketPath = sizeof(sockaddr_un::sun_path) - 1;

// Wraps `read` to remember the line of the key it reads, for checks across keys.
ValueReader Tracked(ValueReader read, std::optional<int>& line) {
  return [read = std::move(read), &line](const Field& field) {
    line = field.line;
    return read(field);
  };
}

// Reads `field` as a sequence, calling `read` on each element with its path ("key[i]") and line.
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

// A non-empty string passing `check`, which returns a problem or nothing.
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

// A sequence of non-empty strings, each passing `check` (which returns a problem, or nothing).
// Replaces any default in `out`. With `lines`, also records the line of each element.
ValueReader StringList(std::vector<std::string>& out,
                       std::function<std::optional<std::string>(absl::string_view)> check = {},
                       std::vector<int>* lines = nullptr) {
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

// A list that, if present, must not be empty: the key's absence already means "all".
ValueReader NonEmptyList(ValueReader read, absl::string_view what) {
  return [read = std::move(read), what = std::string(what)](const Field& field) -> absl::Status {
    if (field.node.IsNull() || (field.node.IsSequence() && field.node.size() == 0)) {
      return Invalid(field,
                     absl::StrCat("must list at least one ", what, " (leave the key out for all)"));
    }
    return read(field);
  };
}

ValueReader PluginName(std::string& out) {
  return [&out](const Field& field) -> absl::Status {
    if (absl::Status status = SourceName(out)(field); !status.ok()) return status;
    if (out.size() > kMaxPluginNameLength) {
      return Invalid(field, absl::StrCat("must be at most ", kMaxPluginNameLength,
                                         " characters, got ", out.size()));
    }
    return absl::OkStatus();
  };
}

// argv of a launched plugin. Only argv[0] must be non-empty: an empty argument can be meaningful.
// A relative argv[0] is resolved when the plugin is launched, not here.
ValueReader Command(std::vector<std::string>& out, std::vector<int>& lines) {
  return [&out, &lines](const Field& field) -> absl::Status {
    if (field.node.IsScalar()) {
      return Invalid(field, absl::StrCat("must be a sequence of the program and its arguments, "
                                         "e.g. [\"/usr/bin/python3\", \"plugin.py\"], ",
                                         Got(field.node)));
    }
    if (field.node.IsNull() || (field.node.IsSequence() && field.node.size() == 0)) {
      return Invalid(field, "must list the program and its arguments");
    }
    out.clear();
    lines.clear();
    return ReadSequence(field, [&out, &lines](const Field& item) -> absl::Status {
      absl::StatusOr<std::string> arg = ScalarOf(item);
      if (!arg.ok()) return arg.status();
      if (out.empty() && arg->empty()) return Invalid(item, "the program must not be empty");
      if (arg->find('\0') != std::string::npos) return Invalid(item, "must not contain NUL");
      out.push_back(*std::move(arg));
      lines.push_back(item.line);
      return absl::OkStatus();
    });
  };
}

// The path of a "unix:" gRPC target ("unix:/run/x.sock", "unix:///run/x.sock", "unix:x.sock").
absl::string_view UnixSocketPath(absl::string_view address) {
  absl::ConsumePrefix(&address, "unix:");
  if (absl::StartsWith(address, "///")) address.remove_prefix(2);
  return address;
}

// gRPC target of a plugin pimgate does not launch: "unix:<path>" or host:port.
ValueReader Address(std::string& out) {
  return [&out](const Field& field) -> absl::Status {
    absl::StatusOr<std::string> text = ScalarOf(field);
    if (!text.ok()) return text.status();
    if (absl::StartsWith(*text, "unix:")) {
      const absl::string_view path = UnixSocketPath(*text);
      if (path.empty()) return Invalid(field, "\"unix:\" must be followed by a socket path");
      if (path.size() > kMaxUnixSocketPath) {
        return Invalid(field, absl::StrCat("socket path is ", path.size(), " bytes, more than the ",
                                           kMaxUnixSocketPath, " a unix socket address holds"));
      }
      out = *std::move(text);
      return absl::OkStatus();
    }
    if (text->find(':') == std::string::npos) {
      return Invalid(field, absl::StrCat("must be \"unix:/path\" or host:port, ", Got(field.node)));
    }
    return HostPort(out, 1)(field);
  };
}

bool IsEnvName(absl::string_view name) {
  return !name.empty() && !absl::ascii_isdigit(name.front()) &&
         std::all_of(name.begin(), name.end(),
                     [](char c) { return absl::ascii_isalnum(c) || c == '_'; });
}

// NAME: value pairs, kept in document order. Values are taken as written (no ${} or file:
// resolution); an empty value must be spelled "".
ValueReader Env(std::vector<std::pair<std::string, std::string>>& out) {
  return [&out](const Field& field) -> absl::Status {
    if (!field.node.IsMap() && !field.node.IsNull()) {
      return Invalid(field, absl::StrCat("must be a mapping of NAME: value, ", Got(field.node)));
    }
    out.clear();
    std::map<std::string, int, std::less<>> seen;  // name -> line
    for (const auto& entry : field.node) {
      const YAML::Node key = entry.first;
      const int line = LineOf(key);
      if (!key.IsScalar()) return Invalid({key, field.path, line}, "keys must be plain names");
      Field value{entry.second, absl::StrCat(field.path, ".", key.Scalar()), line};
      if (!IsEnvName(key.Scalar())) {
        return Invalid(value,
                       "variable names must be letters, digits and _, not starting with a "
                       "digit");
      }
      if (auto [previous, inserted] = seen.emplace(key.Scalar(), line); !inserted) {
        return Invalid(value, absl::StrCat("duplicate key (first at line ", previous->second, ")"));
      }
      absl::StatusOr<std::string> text = ScalarOf(value);
      if (!text.ok()) return text.status();
      if (text->find('\0') != std::string::npos) return Invalid(value, "must not contain NUL");
      out.emplace_back(key.Scalar(), *std::move(text));
    }
    return absl::OkStatus();
  };
}

// inherit_env: true (all of pimgate's environment), false (none beyond the base set, the
// default), or a list of variable names.
ValueReader InheritEnv(bool& all, std::vector<std::string>& names) {
  return [&all, &names](const Field& field) -> absl::Status {
    names.clear();
    all = false;
    if (field.node.IsScalar()) return Bool(all)(field);
    if (field.node.IsNull() || (field.node.IsSequence() && field.node.size() == 0)) {
      return Invalid(field,
                     "must be true, false or a list of variable names (write false for none)");
    }
    if (!field.node.IsSequence()) {
      return Invalid(field, absl::StrCat("must be true, false or a list of variable names, ",
                                         Got(field.node)));
    }
    return ReadSequence(field, [&names](const Field& item) -> absl::Status {
      absl::StatusOr<std::string> name = ScalarOf(item);
      if (!name.ok()) return name.status();
      if (!IsEnvName(*name)) {
        return Invalid(item, absl::StrCat("variable names must be letters, digits and _, not "
                                          "starting with a digit, ",
                                          Got(item.node)));
      }
      names.push_back(*std::move(name));
      return absl::OkStatus();
    });
  };
}

// Event type globs: canonical types are lower-case words joined by dots ("product.created").
std::optional<std::string> EventGlobProblem(absl::string_view glob) {
  const bool valid = std::all_of(glob.begin(), glob.end(), [](char c) {
    return absl::ascii_islower(c) || absl::ascii_isdigit(c) || c == '_' || c == '.' || c == '*';
  });
  if (valid) return std::nullopt;
  return absl::StrCat("must use only a-z, 0-9, _, . and *, got ", Quote(glob));
}

// Reports `later` when `earlier` (another key of the same mapping) was already read: the two
// keys exclude each other.
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

// Reads the initial_backoff and max_backoff of one schedule, which must satisfy initial <= max.
// The check runs at whichever of the two keys is read second, or, when only one is written, after
// the mapping against the other's default: either way at a key the operator wrote.
class BackoffRange {
 public:
  BackoffRange(std::chrono::milliseconds& initial, std::chrono::milliseconds& max)
      : initial_(initial), max_(max) {}

  ValueReader Initial() {
    return [this](const Field& field) -> absl::Status {
      if (absl::Status status = Millis(initial_)(field); !status.ok()) return status;
      initial_field_ = field;
      return max_field_.has_value() ? CheckInitial(field) : absl::OkStatus();
    };
  }
  ValueReader Max() {
    return [this](const Field& field) -> absl::Status {
      if (absl::Status status = Millis(max_)(field); !status.ok()) return status;
      max_field_ = field;
      return initial_field_.has_value() ? CheckMax(field) : absl::OkStatus();
    };
  }
  // Call after the mapping was read without error.
  absl::Status CheckAgainstDefaults() const {
    if (initial_field_.has_value() && !max_field_.has_value()) return CheckInitial(*initial_field_);
    if (max_field_.has_value() && !initial_field_.has_value()) return CheckMax(*max_field_);
    return absl::OkStatus();
  }

 private:
  absl::Status CheckInitial(const Field& field) const {
    if (initial_ <= max_) return absl::OkStatus();
    return Invalid(field, absl::StrCat("must be at most max_backoff (", FormatDuration(max_),
                                       "), got ", FormatDuration(initial_)));
  }
  absl::Status CheckMax(const Field& field) const {
    if (initial_ <= max_) return absl::OkStatus();
    return Invalid(field, absl::StrCat("must be at least initial_backoff (",
                                       FormatDuration(initial_), "), got ", FormatDuration(max_)));
  }

  std::chrono::milliseconds& initial_;
  std::chrono::milliseconds& max_;
  std::optional<Field> initial_field_;
  std::optional<Field> max_field_;
};

ValueReader Retry(RetryConfig& retry) {
  return [&retry](const Field& field) -> absl::Status {
    BackoffRange backoff(retry.initial_backoff, retry.max_backoff);
    absl::Status status = ReadMapping(
        field, {
                   {"max_attempts", Integer(retry.max_attempts, 1)},
                   {"initial_backoff", backoff.Initial()},
                   {"max_backoff", backoff.Max()},
                   {"multiplier", Number(retry.multiplier, 1, std::numeric_limits<double>::max())},
                   {"jitter", Number(retry.jitter, 0, 1)},
               });
    if (!status.ok()) return status;
    return backoff.CheckAgainstDefaults();
  };
}

ValueReader Restart(RestartConfig& restart) {
  return [&restart](const Field& field) -> absl::Status {
    BackoffRange backoff(restart.initial_backoff, restart.max_backoff);
    absl::Status status = ReadMapping(field, {
                                                 {"initial_backoff", backoff.Initial()},
                                                 {"max_backoff", backoff.Max()},
                                                 {"reset_after", Millis(restart.reset_after)},
                                             });
    if (!status.ok()) return status;
    return backoff.CheckAgainstDefaults();
  };
}

// ---- sources[].rest and sources[].reconcile ----------------------------------------------------

// Upper bound of rest.max_concurrency: Akeneo allows 4 concurrent calls per connection.
constexpr int64_t kMaxRestConcurrency = 4;
// Upper bound of rest.max_attempts, so that one call cannot keep retrying for hours.
constexpr int64_t kMaxRestAttempts = 100;

// The origin of a PIM's REST API: "https://host[:port]", with IPv6 hosts in brackets. A trailing
// slash is dropped; a path, query, fragment or user info is refused (the client builds every path
// itself, and credentials go only to the token endpoint). Scheme and host are lower-cased.
// `is_http` tells the caller to check allow_insecure_http, which may come later in the mapping.
ValueReader BaseUrl(std::string& out, bool& is_http) {
  return [&out, &is_http](const Field& field) -> absl::Status {
    absl::StatusOr<std::string> text = ScalarOf(field);
    if (!text.ok()) return text.status();
    absl::string_view url = *text;
    std::string scheme;
    if (absl::StartsWithIgnoreCase(url, "https://")) {
      scheme = "https";
    } else if (absl::StartsWithIgnoreCase(url, "http://")) {
      scheme = "http";
    } else {
      return Invalid(field, absl::StrCat("must start with https:// (http:// only with "
                                         "allow_insecure_http: true), ",
                                         Got(field.node)));
    }
    url.remove_prefix(scheme.size() + 3);
    absl::ConsumeSuffix(&url, "/");
    if (url.find_first_of("/?#") != absl::string_view::npos) {
      return Invalid(field, absl::StrCat("must be scheme, host and optional port only, e.g. "
                                         "\"https://pim.example.com\" (no path), ",
                                         Got(field.node)));
    }
    if (absl::StrContains(url, "@")) {
      return Invalid(field,
                     "must not contain user info; credentials go in client_id, secret, username "
                     "and password");
    }
    absl::string_view host = url;
    absl::string_view port;
    if (absl::StartsWith(url, "[")) {
      const size_t close = url.find(']');
      if (close == absl::string_view::npos || close == 1) {
        return Invalid(field,
                       absl::StrCat("has an unterminated or empty [ipv6] host, ", Got(field.node)));
      }
      host = url.substr(1, close - 1);
      absl::string_view after = url.substr(close + 1);
      if (!after.empty() && !absl::ConsumePrefix(&after, ":")) {
        return Invalid(field, absl::StrCat("must be https://[ipv6]:port, ", Got(field.node)));
      }
      port = after;
      if (!std::all_of(host.begin(), host.end(),
                       [](char c) { return absl::ascii_isxdigit(c) || c == ':' || c == '.'; })) {
        return Invalid(field, absl::StrCat("has an invalid IPv6 host, ", Got(field.node)));
      }
    } else {
      const size_t colon = url.find(':');
      if (colon != absl::string_view::npos) {
        host = url.substr(0, colon);
        port = url.substr(colon + 1);
      }
      if (host.empty()) return Invalid(field, absl::StrCat("has no host, ", Got(field.node)));
      if (!std::all_of(host.begin(), host.end(), [](char c) {
            return absl::ascii_isalnum(c) || c == '-' || c == '.' || c == '_';
          })) {
        return Invalid(field, absl::StrCat("has an invalid host name (IPv6 hosts go in brackets), ",
                                           Got(field.node)));
      }
    }
    const bool has_port = url.size() > host.size() + (absl::StartsWith(url, "[") ? 2 : 0);
    int port_number = 0;
    if (has_port &&
        (port.empty() || port.size() > 5 ||
         !std::all_of(port.begin(), port.end(), absl::ascii_isdigit) ||
         !absl::SimpleAtoi(port, &port_number) || port_number < 1 || port_number > 65535)) {
      return Invalid(field,
                     absl::StrCat("port must be a number from 1 to 65535, ", Got(field.node)));
    }
    is_http = scheme == "http";
    out = absl::AsciiStrToLower(absl::StrCat(scheme, "://", url));
    return absl::OkStatus();
  };
}

// rest.timezone: a fixed UTC offset or an IANA name the system's tz database has.
ValueReader PimTimeZoneName(std::string& out) {
  return [&out](const Field& field) -> absl::Status {
    absl::StatusOr<std::string> text = ScalarOf(field);
    if (!text.ok()) return text.status();
    if (absl::StatusOr<absl::TimeZone> zone = ParsePimTimeZone(*text); !zone.ok()) {
      return Invalid(field, zone.status().message());
    }
    out = *std::move(text);
    return absl::OkStatus();
  };
}

ValueReader Rest(std::optional<RestConfig>& out) {
  return [&out](const Field& field) -> absl::Status {
    RestConfig& rest = out.emplace();
    std::optional<Secret> secret;
    std::optional<Secret> password;
    std::optional<int> base_url_line;
    std::optional<int> ca_file_line;
    bool is_http = false;
    BackoffRange backoff(rest.initial_backoff, rest.max_backoff);
    absl::Status status = ReadMapping(
        field,
        {
            {"base_url", Tracked(BaseUrl(rest.base_url, is_http), base_url_line), true},
            {"client_id", String(rest.client_id), true},
            {"secret", SecretValue(secret), true},
            {"username", String(rest.username), true},
            {"password", SecretValue(password), true},
            {"max_concurrency", IntegerInRange(rest.max_concurrency, 1, kMaxRestConcurrency)},
            {"timeout", Millis(rest.timeout)},
            {"max_attempts", IntegerInRange(rest.max_attempts, 1, kMaxRestAttempts)},
            {"initial_backoff", backoff.Initial()},
            {"max_backoff", backoff.Max()},
            {"ca_file", Tracked(ReadableFile(rest.ca_file), ca_file_line)},
            {"proxy", Proxy(rest.proxy)},
            {"insecure_skip_verify", Bool(rest.insecure_skip_verify)},
            {"allow_insecure_http", Bool(rest.allow_insecure_http)},
            {"timezone", PimTimeZoneName(rest.timezone)},
        });
    if (!status.ok()) return status;
    if (absl::Status range = backoff.CheckAgainstDefaults(); !range.ok()) return range;
    rest.secret = *std::move(secret);
    rest.password = *std::move(password);
    const std::string prefix = absl::StrCat(field.path, ".");
    // The password grant sends the PIM user's password: never in clear unless asked for.
    if (is_http && !rest.allow_insecure_http) {
      return Invalid({field.node, prefix + "base_url", *base_url_line},
                     "http:// would send the PIM credentials in clear; use https://, or set "
                     "allow_insecure_http: true (tests, a PIM on this host)");
    }
    if (ca_file_line.has_value() && rest.insecure_skip_verify) {
      return Invalid({field.node, prefix + "ca_file", *ca_file_line},
                     "has no effect with insecure_skip_verify: true; remove one of the two");
    }
    return absl::OkStatus();
  };
}

// A duration that may be zero (reconcile.interval: 0 = on demand only; overlap: 0 = none).
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

// An RFC 3339 time ("2026-01-01T00:00:00Z", "2026-01-01T01:00:00+01:00") as microseconds since
// the epoch.
ValueReader Rfc3339Micros(std::optional<int64_t>& out) {
  return [&out](const Field& field) -> absl::Status {
    absl::StatusOr<std::string> text = ScalarOf(field);
    if (!text.ok()) return text.status();
    absl::Time time;
    std::string error;
    if (!absl::ParseTime(absl::RFC3339_full, *text, &time, &error)) {
      return Invalid(field, absl::StrCat("must be an RFC 3339 time such as "
                                         "\"2026-01-01T00:00:00Z\", ",
                                         Got(field.node)));
    }
    out = absl::ToUnixMicros(time);
    return absl::OkStatus();
  };
}

ValueReader Reconcile(std::optional<ReconcileConfig>& out) {
  return [&out](const Field& field) -> absl::Status {
    ReconcileConfig& reconcile = out.emplace();
    absl::Status status = ReadMapping(field, {
                                                 {"interval", MillisOrZero(reconcile.interval)},
                                                 {"overlap", MillisOrZero(reconcile.overlap)},
                                                 {"since", Rfc3339Micros(reconcile.since_us)},
                                                 {"retry_after", Millis(reconcile.retry_after)},
                                                 {"products", Bool(reconcile.products)},
                                                 {"product_models", Bool(reconcile.product_models)},
                                             });
    if (!status.ok()) return status;
    if (!reconcile.products && !reconcile.product_models) {
      return Invalid(field,
                     "products and product_models are both false: nothing to reconcile (set "
                     "interval: 0 to reconcile only on demand)");
    }
    return absl::OkStatus();
  };
}

// ---- sources[].platform -----------------------------------------------------------------------

// The management API's base URL: "https://host[:port]/path", path kept (Akeneo's is /api/v1),
// trailing slash dropped. No query, fragment or user info: the client appends every path itself
// and sends the PIM token in a header only.
ValueReader ApiUrl(std::string& out, bool& is_http) {
  return [&out, &is_http](const Field& field) -> absl::Status {
    absl::StatusOr<std::string> text = ScalarOf(field);
    if (!text.ok()) return text.status();
    absl::string_view url = *text;
    absl::string_view scheme;
    if (absl::StartsWithIgnoreCase(url, "https://")) {
      scheme = "https";
    } else if (absl::StartsWithIgnoreCase(url, "http://")) {
      scheme = "http";
    } else {
      return Invalid(field, absl::StrCat("must start with https:// (http:// only with "
                                         "allow_insecure_http: true), ",
                                         Got(field.node)));
    }
    absl::string_view rest = url.substr(scheme.size() + 3);
    if (rest.find_first_of("?#") != absl::string_view::npos) {
      return Invalid(field, absl::StrCat("must not have a query or fragment, ", Got(field.node)));
    }
    const absl::string_view authority = rest.substr(0, rest.find('/'));
    if (absl::StrContains(authority, "@")) {
      return Invalid(field, "must not contain user info");
    }
    if (authority.empty() || absl::StartsWith(authority, ":")) {
      return Invalid(field, absl::StrCat("has no host, ", Got(field.node)));
    }
    if (!std::all_of(rest.begin(), rest.end(),
                     [](char c) { return c > 0x20 && c < 0x7f && c != '\\'; })) {
      return Invalid(field, "must not contain spaces, control characters or backslashes");
    }
    while (absl::ConsumeSuffix(&rest, "/")) {
    }
    is_http = scheme == "http";
    out = absl::StrCat(scheme, "://", rest);
    return absl::OkStatus();
  };
}

// contact.technical_email: an address Akeneo can mail (local@domain.tld, no spaces).
ValueReader Email(std::string& out) {
  return [&out](const Field& field) -> absl::Status {
    if (absl::Status status = String(out)(field); !status.ok()) return status;
    const size_t at = out.find('@');
    const bool valid = at != std::string::npos && at > 0 && out.find('@', at + 1) == out.npos &&
                       out.find('.', at + 2) != out.npos && out.back() != '.' &&
                       std::none_of(out.begin(), out.end(), [](char c) {
                         return absl::ascii_isspace(static_cast<unsigned char>(c)) ||
                                absl::ascii_iscntrl(static_cast<unsigned char>(c));
                       });
    if (!valid) return Invalid(field, absl::StrCat("must be an e-mail address, ", Got(field.node)));
    return absl::OkStatus();
  };
}

// The proxy for calls to the management API: "" (the environment's), "none", or a proxy URL.
ValueReader Platform(std::optional<PlatformConfig>& out) {
  return [&out](const Field& field) -> absl::Status {
    PlatformConfig& platform = out.emplace();
    std::optional<int> api_url_line;
    std::optional<int> ca_file_line;
    bool is_http = false;
    BackoffRange backoff(platform.initial_backoff, platform.max_backoff);
    absl::Status status = ReadMapping(
        field, {
                   {"api_url", Tracked(ApiUrl(platform.api_url, is_http), api_url_line)},
                   {"subscriber_name", String(platform.subscriber_name)},
                   {"technical_email", Email(platform.technical_email)},
                   {"auto_resume", Bool(platform.auto_resume)},
                   {"watch_interval", Millis(platform.watch_interval)},
                   {"timeout", Millis(platform.timeout)},
                   {"max_attempts", IntegerInRange(platform.max_attempts, 1, kMaxRestAttempts)},
                   {"initial_backoff", backoff.Initial()},
                   {"max_backoff", backoff.Max()},
                   {"proxy", Proxy(platform.proxy)},
                   {"ca_file", Tracked(ReadableFile(platform.ca_file), ca_file_line)},
                   {"insecure_skip_verify", Bool(platform.insecure_skip_verify)},
                   {"allow_insecure_http", Bool(platform.allow_insecure_http)},
               });
    if (!status.ok()) return status;
    if (absl::Status range = backoff.CheckAgainstDefaults(); !range.ok()) return range;
    const std::string prefix = absl::StrCat(field.path, ".");
    // The PIM access token travels in X-PIM-TOKEN: never in clear unless asked for.
    if (is_http && !platform.allow_insecure_http) {
      return Invalid({field.node, prefix + "api_url", *api_url_line},
                     "http:// would send the PIM access token in clear; use https://, or set "
                     "allow_insecure_http: true (tests)");
    }
    if (ca_file_line.has_value() && platform.insecure_skip_verify) {
      return Invalid({field.node, prefix + "ca_file", *ca_file_line},
                     "has no effect with insecure_skip_verify: true; remove one of the two");
    }
    return absl::OkStatus();
  };
}

ValueReader Filter(StringFilter& filter) {
  return [&filter](const Field& field) {
    return ReadMapping(field, {
                                  {"include", StringList(filter.include)},
                                  {"exclude", StringList(filter.exclude)},
                              });
  };
}

// A dot-separated path into the event's data: "family", "product.uuid".
std::optional<std::string> DataPathProblem(absl::string_view path) {
  if (absl::StartsWith(path, ".") || absl::EndsWith(path, ".") || absl::StrContains(path, "..")) {
    return absl::StrCat("must be keys joined by single dots, e.g. \"product.family\", got ",
                        Quote(path));
  }
  return std::nullopt;
}

// The values a data filter compares against, as text. YAML booleans and nulls are spelled the
// way the event's JSON would print them (true, false, null); anything else stays as written.
ValueReader FilterValues(std::vector<std::string>& out) {
  return [&out](const Field& field) -> absl::Status {
    if (field.node.IsNull() || (field.node.IsSequence() && field.node.size() == 0)) {
      return Invalid(field, "must list at least one value");
    }
    out.clear();
    return ReadSequence(field, [&out](const Field& item) -> absl::Status {
      if (item.node.IsNull()) {
        out.push_back("null");
        return absl::OkStatus();
      }
      if (!item.node.IsScalar()) {
        return Invalid(item, absl::StrCat("must be a single value, ", Got(item.node)));
      }
      const std::string& text = item.node.Scalar();
      // Only plain (unquoted) scalars can be YAML booleans; yaml-cpp tags those "?".
      const bool plain = item.node.Tag() == "?";
      if (plain && (text == "True" || text == "TRUE")) {
        out.push_back("true");
      } else if (plain && (text == "False" || text == "FALSE")) {
        out.push_back("false");
      } else {
        out.push_back(text);
      }
      return absl::OkStatus();
    });
  };
}

absl::Status ReadDataFilter(const Field& field, DataFilter& filter) {
  std::optional<int> in_line;
  std::optional<int> not_in_line;
  absl::Status status = ReadMapping(
      field, {
                 {"path", CheckedString(filter.path, DataPathProblem), true},
                 {"in", ExclusiveWith(Tracked(FilterValues(filter.values), in_line), not_in_line,
                                      "not_in", "in")},
                 {"not_in", ExclusiveWith(Tracked(FilterValues(filter.values), not_in_line),
                                          in_line, "in", "not_in")},
             });
  if (!status.ok()) return status;
  if (!in_line.has_value() && !not_in_line.has_value()) {
    return Invalid(field, "needs one of in or not_in");
  }
  filter.negate = not_in_line.has_value();
  return absl::OkStatus();
}

ValueReader DataFilters(std::vector<DataFilter>& out) {
  return [&out](const Field& field) -> absl::Status {
    out.clear();
    return ReadSequence(field, [&out](const Field& item) -> absl::Status {
      DataFilter filter;
      if (absl::Status status = ReadDataFilter(item, filter); !status.ok()) return status;
      out.push_back(std::move(filter));
      return absl::OkStatus();
    });
  };
}

// Lines of a plugin's keys that are checked once the whole document is read: source names
// (sources may come after plugins) and the socket path (runtime.dir and store.path may, too).
struct PluginLines {
  int name = 0;
  std::vector<int> command;  // line of each element of plugins[i].command
  std::vector<int> sources;  // line of each element of plugins[i].sources
  std::optional<int> hydrate;
};

// Reads one plugin. Name uniqueness, source names and socket paths are checked by the caller.
absl::Status ReadPlugin(const Field& field, PluginConfig& plugin, PluginLines& lines) {
  std::optional<int> name_line;
  std::optional<int> command_line;
  std::optional<int> address_line;
  // Keys that only mean something for a plugin pimgate launches.
  std::optional<int> env_line;
  std::optional<int> inherit_env_line;
  std::optional<int> start_timeout_line;
  std::optional<int> stop_timeout_line;
  std::optional<int> restart_line;
  absl::Status status = ReadMapping(
      field,
      {
          {"name", Tracked(PluginName(plugin.name), name_line), true},
          {"command", ExclusiveWith(Tracked(Command(plugin.command, lines.command), command_line),
                                    address_line, "address", "command")},
          {"address", ExclusiveWith(Tracked(Address(plugin.address), address_line), command_line,
                                    "command", "address")},
          {"env", Tracked(Env(plugin.env), env_line)},
          {"inherit_env",
           Tracked(InheritEnv(plugin.inherit_env_all, plugin.inherit_env), inherit_env_line)},
          {"events", NonEmptyList(StringList(plugin.events, EventGlobProblem), "event type")},
          {"sources", NonEmptyList(StringList(plugin.sources, {}, &lines.sources), "source")},
          {"skip_stale", Bool(plugin.skip_stale)},
          {"max_in_flight", IntegerInRange(plugin.max_in_flight, 1, kMaxInFlightLimit)},
          {"ack_timeout", Millis(plugin.ack_timeout)},
          {"start_timeout", Tracked(Millis(plugin.start_timeout), start_timeout_line)},
          {"stop_timeout", Tracked(Millis(plugin.stop_timeout), stop_timeout_line)},
          {"hydrate", Tracked(Bool(plugin.hydrate), lines.hydrate)},
          {"retry", Retry(plugin.retry)},
          {"restart", Tracked(Restart(plugin.restart), restart_line)},
          {"authors", Filter(plugin.authors)},
          {"author_types", Filter(plugin.author_types)},
          {"data", DataFilters(plugin.data)},
      });
  if (!status.ok()) return status;
  lines.name = *name_line;
  if (!command_line.has_value() && !address_line.has_value()) {
    return Invalid(field,
                   "needs a command (to launch the plugin) or an address (to connect to "
                   "a running one)");
  }
  if (address_line.has_value()) {
    // Reported at the first such key in the document, like every other error.
    std::optional<std::pair<int, absl::string_view>> first;
    for (const auto& [line, key] :
         {std::make_pair(env_line, absl::string_view("env")),
          std::make_pair(inherit_env_line, absl::string_view("inherit_env")),
          std::make_pair(start_timeout_line, absl::string_view("start_timeout")),
          std::make_pair(stop_timeout_line, absl::string_view("stop_timeout")),
          std::make_pair(restart_line, absl::string_view("restart"))}) {
      if (line.has_value() && (!first.has_value() || *line < first->first)) {
        first.emplace(*line, key);
      }
    }
    if (first.has_value()) {
      return Invalid({field.node, absl::StrCat(field.path, ".", first->second), first->first},
                     "only applies to plugins pimgate launches (with a command), not to an "
                     "address");
    }
  }
  return absl::OkStatus();
}

// plugins: optional; `plugins:` with nothing under it (all commented out) is an empty list.
ValueReader Plugins(std::vector<PluginConfig>& plugins, std::vector<PluginLines>& lines) {
  return [&plugins, &lines](const Field& field) -> absl::Status {
    if (field.node.IsNull()) return absl::OkStatus();
    std::map<std::string, std::pair<size_t, int>> names;  // name -> (index, line) of first use
    return ReadSequence(field, [&](const Field& item) -> absl::Status {
      PluginConfig plugin;
      PluginLines plugin_lines;
      if (absl::Status status = ReadPlugin(item, plugin, plugin_lines); !status.ok()) {
        return status;
      }
      const size_t index = plugins.size();
      if (auto [first, inserted] =
              names.emplace(plugin.name, std::make_pair(index, plugin_lines.name));
          !inserted) {
        return Invalid({item.node, item.path + ".name", plugin_lines.name},
                       absl::StrCat("duplicate of plugins[", first->second.first, "].name (line ",
                                    first->second.second, ")"));
      }
      plugins.push_back(std::move(plugin));
      lines.push_back(std::move(plugin_lines));
      return absl::OkStatus();
    });
  };
}

ValueReader Runtime(PluginsRuntimeConfig& runtime, std::optional<int>& dir_line) {
  return [&runtime, &dir_line](const Field& field) {
    return ReadMapping(field, {
                                  {"dir", Tracked(String(runtime.runtime_dir), dir_line)},
                              });
  };
}

// runtime.dir when it is not configured: "<store.path>/run".
std::string DefaultRuntimeDir(absl::string_view store_path) {
  while (store_path.size() > 1 && absl::EndsWith(store_path, "/")) store_path.remove_suffix(1);
  return absl::StrCat(store_path, store_path == "/" ? "" : "/", "run");
}

// Interpreters whose first argument is a script file (when it is not an option): a plugin
// written in Python or Node is launched as [python3, handler.py].
bool IsScriptInterpreter(absl::string_view program) {
  const size_t slash = program.rfind('/');
  absl::string_view name = slash == absl::string_view::npos ? program : program.substr(slash + 1);
  for (absl::string_view prefix : {"python", "php"}) {
    if (absl::ConsumePrefix(&name, prefix)) {
      return std::all_of(name.begin(), name.end(),
                         [](char c) { return absl::ascii_isdigit(c) || c == '.'; });
    }
  }
  for (absl::string_view interpreter : {"node", "nodejs", "bash", "sh", "dash", "perl", "ruby"}) {
    if (name == interpreter) return true;
  }
  return false;
}

bool IsNodeInterpreter(absl::string_view program) {
  const size_t slash = program.rfind('/');
  const absl::string_view name =
      slash == absl::string_view::npos ? program : program.substr(slash + 1);
  return name == "node" || name == "nodejs";
}

// The PATH a launched plugin searches: its env's PATH, else pimgate's own (which the
// supervisor always passes on), else the default of execvp.
std::string PluginSearchPath(const PluginConfig& plugin) {
  std::optional<std::string> path;
  for (const auto& [name, value] : plugin.env) {
    if (name == "PATH") path = value;
  }
  if (!path.has_value()) {
    const char* own = std::getenv("PATH");
    path = own != nullptr ? own : "";
  }
  return path->empty() ? "/usr/local/bin:/usr/bin:/bin" : *path;
}

std::string CurrentDirectory() {
  char buffer[4096];
  return ::getcwd(buffer, sizeof(buffer)) != nullptr ? buffer : "?";
}

// What is wrong with a file a plugin's command names, or nothing. `what` says what it is.
std::optional<std::string> FileProblem(const std::string& path, absl::string_view what,
                                       bool executable) {
  const std::string relative =
      path.front() == '/'
          ? ""
          : absl::StrCat(" (relative to pimgate's working directory ", CurrentDirectory(), ")");
  struct stat info;
  if (::stat(path.c_str(), &info) != 0) {
    return absl::StrCat(what, " ", Quote(path), relative, ": ", ErrnoText(errno));
  }
  if (!S_ISREG(info.st_mode)) {
    return absl::StrCat(what, " ", Quote(path), relative, " is not a regular file");
  }
  if (executable && ::access(path.c_str(), X_OK) != 0) {
    return absl::StrCat(what, " ", Quote(path), relative,
                        " is not executable (chmod +x it, or start it through its interpreter, "
                        "e.g. [/usr/bin/python3, ",
                        path, "])");
  }
  return std::nullopt;
}

// The first problem with a launched plugin's command: (index in the command, what is wrong).
std::optional<std::pair<size_t, std::string>> FindCommandProblem(const PluginConfig& plugin) {
  if (plugin.command.empty()) return std::nullopt;
  const std::string& program = plugin.command.front();
  if (program.find('/') != std::string::npos) {
    if (std::optional<std::string> problem = FileProblem(program, "program", true)) {
      return std::make_pair(size_t{0}, *problem);
    }
  } else {
    const std::string search = PluginSearchPath(plugin);
    bool found = false;
    for (absl::string_view dir : absl::StrSplit(search, ':')) {
      const std::string candidate = absl::StrCat(dir.empty() ? "." : dir, "/", program);
      struct stat info;
      if (::stat(candidate.c_str(), &info) == 0 && S_ISREG(info.st_mode) &&
          ::access(candidate.c_str(), X_OK) == 0) {
        found = true;
        break;
      }
    }
    if (!found) {
      return std::make_pair(
          size_t{0}, absl::StrCat("program ", Quote(program), " is not found in PATH (", search,
                                  "): install it, write its absolute path, or set PATH in env"));
    }
  }
  if (!IsScriptInterpreter(program) || plugin.command.size() < 2 ||
      absl::StartsWith(plugin.command[1], "-") || plugin.command[1].empty()) {
    return std::nullopt;
  }
  const std::string& script = plugin.command[1];
  if (std::optional<std::string> problem = FileProblem(script, "script", false)) {
    return std::make_pair(size_t{1}, *problem);
  }
  if (IsNodeInterpreter(program)) {
    // The package.json that governs the script: the nearest one up from its folder.
    std::error_code ec;
    std::filesystem::path dir = std::filesystem::absolute(std::filesystem::path(script), ec)
                                    .lexically_normal()
                                    .parent_path();
    while (!ec && !dir.empty()) {
      const std::filesystem::path manifest = dir / "package.json";
      std::error_code ignored;
      if (std::filesystem::is_regular_file(manifest, ignored)) {
        absl::StatusOr<std::string> text = ReadWholeFile(manifest.string());
        if (text.ok() && absl::StrContains(*text, "\"dependencies\"") &&
            !std::filesystem::is_directory(dir / "node_modules", ignored)) {
          return std::make_pair(
              size_t{1}, absl::StrCat(Quote(manifest.string()), " lists dependencies but ",
                                      Quote((dir / "node_modules").string()),
                                      " is missing: run `npm install` in ", Quote(dir.string())));
        }
        break;
      }
      if (dir == dir.root_path()) break;
      dir = dir.parent_path();
    }
  }
  return std::nullopt;
}

// Checks what plugins refer to outside their own entry, once the whole document is read (with
// runtime.dir filled in): their sources must exist, and the unix socket of each launched plugin
// must fit in a socket address.
absl::Status CheckPlugins(const Config& config, const std::vector<PluginLines>& lines,
                          std::optional<int> runtime_dir_line, const LoadOptions& options) {
  const std::string& dir = config.runtime.runtime_dir;
  const absl::string_view separator = absl::EndsWith(dir, "/") ? "" : "/";
  const std::string dir_origin =
      runtime_dir_line.has_value() ? "runtime.dir" : "runtime.dir (default <store.path>/run)";
  std::vector<std::string> source_names;
  for (const SourceConfig& source : config.sources) source_names.push_back(source.name);

  // Errors here are not met in document order, so the first by line wins.
  std::optional<std::pair<int, absl::Status>> first;
  const auto report = [&first](int line, absl::Status status) {
    if (!first.has_value() || line < first->first) first.emplace(line, std::move(status));
  };
  // A directory too long for any name is runtime.dir's problem, not each plugin's.
  const size_t shortest_socket = dir.size() + separator.size() + absl::string_view("x.sock").size();
  for (size_t i = 0; i < config.plugins.size(); ++i) {
    const PluginConfig& plugin = config.plugins[i];
    const std::string path = absl::StrCat("plugins[", i, "]");
    for (size_t j = 0; j < plugin.sources.size(); ++j) {
      if (std::find(source_names.begin(), source_names.end(), plugin.sources[j]) ==
          source_names.end()) {
        const int line = lines[i].sources[j];
        report(line, Invalid({{}, absl::StrCat(path, ".sources[", j, "]"), line},
                             absl::StrCat("unknown source ", Quote(plugin.sources[j]),
                                          "; configured sources are ",
                                          absl::StrJoin(source_names, ", "))));
      }
    }
    if (plugin.hydrate && lines[i].hydrate.has_value()) {
      // Only Event Platform events are lightweight, and fetching needs the source's REST API.
      // Sources of the plugin without rest (or legacy ones) are fine alongside one that
      // qualifies: their events are delivered as stored (the dispatcher logs which at start).
      std::vector<std::string> considered;
      bool any = false;
      for (const SourceConfig& source : config.sources) {
        if (!plugin.sources.empty() && std::find(plugin.sources.begin(), plugin.sources.end(),
                                                 source.name) == plugin.sources.end()) {
          continue;
        }
        considered.push_back(source.name);
        any |= source.kind == SourceKind::kEventPlatform && source.rest.has_value();
      }
      if (!any && !considered.empty()) {
        const int line = *lines[i].hydrate;
        report(line, Invalid({{}, path + ".hydrate", line},
                             absl::StrCat("needs a source of kind event_platform with rest (the "
                                          "PIM's REST API to fetch from); none of ",
                                          plugin.sources.empty() ? "the sources" : "its sources",
                                          " (", absl::StrJoin(considered, ", "), ") has both")));
      }
    }
    if (plugin.command.empty()) continue;  // connects to `address`; pimgate makes no socket
    if (options.check_plugin_commands) {
      if (std::optional<std::pair<size_t, std::string>> problem = FindCommandProblem(plugin)) {
        const int line = lines[i].command[problem->first];
        report(line, Invalid({{}, absl::StrCat(path, ".command[", problem->first, "]"), line},
                             problem->second));
      }
    }
    const std::string socket = absl::StrCat(dir, separator, plugin.name, ".sock");
    if (socket.size() <= kMaxUnixSocketPath) continue;
    if (runtime_dir_line.has_value() && shortest_socket > kMaxUnixSocketPath) {
      report(*runtime_dir_line,
             Invalid({{}, "runtime.dir", *runtime_dir_line},
                     absl::StrCat("too long for plugin sockets: ", Quote(dir),
                                  " leaves no room for \"/<name>.sock\" within the ",
                                  kMaxUnixSocketPath, " bytes a unix socket address holds")));
      continue;
    }
    report(
        lines[i].name,
        Invalid({{}, path + ".name", lines[i].name},
                absl::StrCat("socket path ", Quote(socket), " would be ", socket.size(),
                             " bytes, more than the ", kMaxUnixSocketPath,
                             " a unix socket address holds; use a shorter name or ", dir_origin)));
  }
  if (first.has_value()) return std::move(first->second);
  return absl::OkStatus();
}

// ---- admin ------------------------------------------------------------------------------------

// Where the admin API listens: "unix:/path" or host:port (port 0 picks a free one, for tests).
ValueReader AdminListen(std::string& out) {
  return [&out](const Field& field) -> absl::Status {
    absl::StatusOr<std::string> text = ScalarOf(field);
    if (!text.ok()) return text.status();
    if (!absl::StartsWith(*text, "unix:")) return HostPort(out, 0)(field);
    const absl::string_view path = UnixSocketPath(*text);
    if (path.empty()) return Invalid(field, "\"unix:\" must be followed by a socket path");
    if (path.size() > kMaxUnixSocketPath) {
      return Invalid(field, absl::StrCat("socket path is ", path.size(), " bytes, more than the ",
                                         kMaxUnixSocketPath, " a unix socket address holds"));
    }
    out = *std::move(text);
    return absl::OkStatus();
  };
}

// True when only this machine can reach `listen`: a unix socket, 127.0.0.0/8, [::1], localhost.
bool IsLocalAdminListen(absl::string_view listen) {
  if (absl::StartsWith(listen, "unix:")) return true;
  absl::string_view host = listen.substr(0, listen.rfind(':'));
  if (host == "localhost" || host == "[::1]") return true;
  return absl::ConsumePrefix(&host, "127.") && !host.empty() &&
         std::all_of(host.begin(), host.end(),
                     [](char c) { return absl::ascii_isdigit(c) || c == '.'; });
}

ValueReader AdminTls(std::optional<AdminTlsConfig>& out) {
  return [&out](const Field& field) -> absl::Status {
    AdminTlsConfig& tls = out.emplace();
    return ReadMapping(field, {
                                  {"cert_file", ReadableFile(tls.cert_file), true},
                                  {"key_file", ReadableFile(tls.key_file), true},
                              });
  };
}

// admin: a listener other machines can reach must be protected by a token (who may call) and TLS
// (so the token is not sent in clear), unless the operator opts out explicitly.
ValueReader Admin(AdminConfig& admin) {
  return [&admin](const Field& field) -> absl::Status {
    std::optional<int> listen_line;
    absl::Status status =
        ReadMapping(field, {
                               {"enabled", Bool(admin.enabled)},
                               {"listen", Tracked(AdminListen(admin.listen), listen_line)},
                               {"token", SecretValue(admin.token)},
                               {"tls", AdminTls(admin.tls)},
                               {"allow_insecure_remote", Bool(admin.allow_insecure_remote)},
                           });
    if (!status.ok()) return status;
    if (!admin.enabled || admin.allow_insecure_remote || !listen_line.has_value() ||
        IsLocalAdminListen(admin.listen)) {
      return absl::OkStatus();
    }
    std::vector<std::string> missing;
    if (!admin.token.has_value()) missing.push_back("admin.token");
    if (!admin.tls.has_value()) missing.push_back("admin.tls");
    if (missing.empty()) return absl::OkStatus();
    return Invalid(
        {field.node, "admin.listen", *listen_line},
        absl::StrCat(Quote(admin.listen), " is reachable from other machines: set ",
                     absl::StrJoin(missing, " and "), ", or admin.allow_insecure_remote: true"));
  };
}

// ---- The document -----------------------------------------------------------------------------

absl::Status SyntaxError(const YAML::Exception& e) {
  return absl::InvalidArgumentError(
      absl::StrCat("line ", e.mark.line < 0 ? 1 : e.mark.line + 1, ": YAML syntax error: ", e.msg));
}

// Finds where the documents of a stream start (the mark of each document's root node) without
// building them. Used instead of YAML::LoadAll, which never returns on a document whose root
// starts with ',' (yaml-cpp 0.7 leaves that token unconsumed and hands out empty documents
// forever, growing memory; found by fuzz/config_fuzzer): the caller stops after two documents.
class DocumentRoots : public YAML::EventHandler {
 public:
  std::vector<YAML::Mark> roots;

  void OnDocumentStart(const YAML::Mark&) override { in_document_ = true; }
  void OnDocumentEnd() override { in_document_ = false; }
  void OnNull(const YAML::Mark& mark, YAML::anchor_t) override { Node(mark); }
  void OnAlias(const YAML::Mark& mark, YAML::anchor_t) override { Node(mark); }
  void OnScalar(const YAML::Mark& mark, const std::string&, YAML::anchor_t,
                const std::string&) override {
    Node(mark);
  }
  void OnSequenceStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {
    Node(mark);
  }
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {
    Node(mark);
  }
  void OnMapEnd() override {}

 private:
  void Node(const YAML::Mark& mark) {
    if (in_document_) roots.push_back(mark);
    in_document_ = false;
  }
  bool in_document_ = false;
};

absl::StatusOr<Config> ParseDocument(const std::string& yaml, const LoadOptions& options) {
  YAML::Node root;
  try {
    std::istringstream in(yaml);
    YAML::Parser parser(in);
    DocumentRoots documents;
    for (int i = 0; i < 2 && parser.HandleNextDocument(documents); ++i) {
    }
    if (documents.roots.size() > 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("line ", documents.roots[1].line < 0 ? 1 : documents.roots[1].line + 1,
                       ": <document>: the config must be a single YAML document"));
    }
    if (!documents.roots.empty()) root = YAML::Load(yaml);
  } catch (const YAML::Exception& e) {
    return SyntaxError(e);
  }
  if (!root.IsMap()) {
    return Invalid({root, "<document>", LineOf(root)},
                   root.IsNull() ? "empty; store and sources are required"
                                 : absl::StrCat("must be a mapping, ", Got(root)));
  }
  // The top-level sections. A new section is one more line here and a reader like Log().
  Config config;
  std::vector<PluginLines> plugin_lines;
  std::optional<int> runtime_dir_line;
  absl::Status status = ReadMapping({root, "", LineOf(root)},
                                    {
                                        {"gateway", Gateway(config.gateway)},
                                        {"store", Store(config.store), true},
                                        {"sources", Sources(config.sources), true},
                                        {"log", Log(config.log)},
                                        {"metrics", Metrics(config.metrics)},
                                        {"runtime", Runtime(config.runtime, runtime_dir_line)},
                                        {"plugins", Plugins(config.plugins, plugin_lines)},
                                        {"admin", Admin(config.admin)},
                                    });
  if (!status.ok()) return status;
  if (!runtime_dir_line.has_value()) {
    config.runtime.runtime_dir = DefaultRuntimeDir(config.store.path);
  }
  if (status = CheckPlugins(config, plugin_lines, runtime_dir_line, options); !status.ok()) {
    return status;
  }
  return config;
}

}  // namespace

absl::StatusOr<Config> LoadConfigString(const std::string& yaml, const LoadOptions& options) {
  // ParseDocument converts parse errors; this catches anything else yaml-cpp might throw so that
  // no exception crosses the module boundary.
  try {
    return ParseDocument(yaml, options);
  } catch (const YAML::Exception& e) {
    return SyntaxError(e);
  }
}

absl::StatusOr<Config> LoadConfigFile(const std::string& path, const LoadOptions& options) {
  absl::StatusOr<std::string> yaml = ReadWholeFile(path);
  if (!yaml.ok()) {
    return absl::Status(yaml.status().code(), absl::StrCat("cannot read config file ", Quote(path),
                                                           ": ", yaml.status().message()));
  }
  return LoadConfigString(*yaml, options);
}

absl::Status CheckPluginCommand(const PluginConfig& plugin) {
  std::optional<std::pair<size_t, std::string>> problem = FindCommandProblem(plugin);
  if (!problem.has_value()) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat("plugins.", plugin.name, ".command[", problem->first, "]: ", problem->second));
}

const char* SourceKindName(SourceKind kind) {
  switch (kind) {
    case SourceKind::kEventsApi:
      return "events_api";
    case SourceKind::kEventPlatform:
      return "event_platform";
  }
  return "unknown";
}

}  // namespace pimgate
