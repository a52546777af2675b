// Readers of the values several sections share: readable files, secrets, addresses, URLs.
#include "config/value_readers.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace pimgate::config_internal {
namespace {

// "$NAME": a variable reference written shell-style, without the braces pimgate needs.
bool LooksLikeBareEnvReference(absl::string_view text) {
  if (text.size() < 2 || text[0] != '$') return false;
  const absl::string_view name = text.substr(1);
  return !absl::ascii_isdigit(name.front()) && std::all_of(name.begin(), name.end(), [](char c) {
    return absl::ascii_isalnum(c) || c == '_';
  });
}

}  // namespace

ValueReader HostPort(std::string& out, int min_port) {
  return [&out, min_port](const Field& field) -> absl::Status {
    absl::StatusOr<std::string> text = ScalarOf(field);
    if (!text.ok()) return text.status();
    if (absl::StatusOr<HostAndPort> split = SplitHostPort(*text, min_port); !split.ok()) {
      return Invalid(field, split.status().message());
    }
    out = *std::move(text);
    return absl::OkStatus();
  };
}

ValueReader Listen(ListenAddress& out, bool allow_unix_socket) {
  return [&out, allow_unix_socket](const Field& field) -> absl::Status {
    absl::StatusOr<std::string> text = ScalarOf(field);
    if (!text.ok()) return text.status();
    absl::StatusOr<ListenAddress> address =
        ListenAddress::Parse(*text, {.allow_unix_socket = allow_unix_socket});
    if (!address.ok()) return Invalid(field, address.status().message());
    out = *std::move(address);
    return absl::OkStatus();
  };
}

ValueReader Url(BaseUrl& out, const BaseUrl::ParseOptions& options) {
  return [&out, options](const Field& field) -> absl::Status {
    absl::StatusOr<std::string> text = ScalarOf(field);
    if (!text.ok()) return text.status();
    absl::StatusOr<BaseUrl> url = BaseUrl::Parse(*text, options);
    if (!url.ok()) return Invalid(field, url.status().message());
    out = *std::move(url);
    return absl::OkStatus();
  };
}

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

}  // namespace pimgate::config_internal
