// Readers of the values several sections share: readable files, secrets, listen addresses.
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

// The path of a "unix:" gRPC target ("unix:/run/x.sock", "unix:///run/x.sock", "unix:x.sock").
absl::string_view UnixSocketPath(absl::string_view address) {
  absl::ConsumePrefix(&address, "unix:");
  if (absl::StartsWith(address, "///")) address.remove_prefix(2);
  return address;
}

}  // namespace pimgate::config_internal
