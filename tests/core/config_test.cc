// Tests for the config loader: defaults, every key, every error's line and key path, secret
// resolution from the environment and files, and the duration and size parsers.
#include "core/config.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pimgate {
namespace {

using ::std::chrono::milliseconds;
using ::std::chrono::seconds;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

// The smallest valid config: store.path and one source.
constexpr char kMinimal[] = R"(store:
  path: /var/lib/pimgate
sources:
  - name: akeneo
    kind: events_api
    path: /hooks/akeneo
    secret: s3cr3t-inline
)";

// A value that must never show up in an error message.
constexpr char kSecretValue[] = "s3cr3t-inline";

// A fresh directory per test, removed afterwards.
class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = ::testing::TempDir() + "/pimgate_config_test_XXXXXX";
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Writes `contents` to `name` in the temp dir and returns its path.
  std::string WriteFile(const std::string& name, const std::string& contents) {
    const std::string path = dir_ + "/" + name;
    std::ofstream out(path, std::ios::binary);
    out << contents;
    out.close();
    EXPECT_TRUE(out.good()) << path;
    return path;
  }

  std::string dir_;
};

// Sets an environment variable for the lifetime of the object.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) { ::setenv(name, value, 1); }
  ~ScopedEnv() { ::unsetenv(name_); }

 private:
  const char* name_;
};

absl::Status ErrorOf(const std::string& yaml) { return LoadConfigString(yaml).status(); }

// ---- Happy paths ------------------------------------------------------------------------------

TEST_F(ConfigTest, MinimalConfigGetsDefaults) {
  absl::StatusOr<Config> config = LoadConfigString(kMinimal);
  ASSERT_TRUE(config.ok()) << config.status();

  const GatewayConfig& gateway = config->gateway;
  EXPECT_EQ(gateway.listen, "0.0.0.0:8443");
  EXPECT_FALSE(gateway.tls.has_value());
  EXPECT_EQ(gateway.threads, 0);
  EXPECT_EQ(gateway.body_limit, 4u * 1024 * 1024);
  EXPECT_EQ(gateway.header_limit, 16u * 1024);
  EXPECT_EQ(gateway.max_events_per_request, 100u);
  EXPECT_EQ(gateway.header_timeout, seconds(10));
  EXPECT_EQ(gateway.body_timeout, seconds(30));
  EXPECT_EQ(gateway.idle_timeout, seconds(60));
  EXPECT_EQ(gateway.handshake_timeout, seconds(10));
  EXPECT_EQ(gateway.max_connections, 1024u);
  EXPECT_EQ(gateway.timestamp_tolerance, seconds(300));

  const StoreConfig& store = config->store;
  EXPECT_EQ(store.path, "/var/lib/pimgate");
  EXPECT_TRUE(store.sync);
  EXPECT_EQ(store.retention, seconds(7 * 24 * 3600));
  EXPECT_EQ(store.max_commit_requests, 256u);
  EXPECT_EQ(store.max_pending_requests, 4096u);

  ASSERT_EQ(config->sources.size(), 1u);
  const SourceConfig& source = config->sources[0];
  EXPECT_EQ(source.name, "akeneo");
  EXPECT_EQ(source.kind, SourceKind::kEventsApi);
  EXPECT_EQ(source.path, "/hooks/akeneo");
  EXPECT_EQ(source.secret.value, kSecretValue);
  EXPECT_EQ(source.secret.origin, "inline");
  EXPECT_FALSE(source.secondary_secret.has_value());
  EXPECT_FALSE(source.timestamp_tolerance.has_value());

  EXPECT_EQ(config->log.level, "info");
  EXPECT_EQ(config->log.format, "text");
}

TEST_F(ConfigTest, EveryKeySet) {
  const std::string cert = WriteFile("cert.pem", "cert");
  const std::string key = WriteFile("key.pem", "key");
  const std::string yaml = absl::StrCat(R"(# pimgate test config
gateway:
  listen: "127.0.0.1:9443"
  tls:
    cert_file: )",
                                        cert, R"(
    key_file: )",
                                        key, R"(
    min_version: "1.3"
  threads: 4
  body_limit: 512KiB
  header_limit: 8192
  max_events_per_request: 10
  header_timeout: 500ms
  body_timeout: 1m30s
  idle_timeout: 2m
  handshake_timeout: 5s
  timestamp_tolerance: 1h
  max_connections: 50
store:
  path: /data/pimgate
  sync: false
  retention: 2d
  max_commit_requests: 32
  max_pending_requests: 1000
sources:
  - name: akeneo-prod_1
    kind: events_api
    path: /hooks/akeneo
    secret: one
    secondary_secret: two
    timestamp_tolerance: 90s
  - name: platform
    kind: event_platform
    path: /hooks/platform
    secret: three
log:
  level: debug
  format: json
)");
  absl::StatusOr<Config> config = LoadConfigString(yaml);
  ASSERT_TRUE(config.ok()) << config.status();

  const GatewayConfig& gateway = config->gateway;
  EXPECT_EQ(gateway.listen, "127.0.0.1:9443");
  ASSERT_TRUE(gateway.tls.has_value());
  EXPECT_EQ(gateway.tls->cert_file, cert);
  EXPECT_EQ(gateway.tls->key_file, key);
  EXPECT_EQ(gateway.tls->min_version, "1.3");
  EXPECT_EQ(gateway.threads, 4);
  EXPECT_EQ(gateway.body_limit, 512u * 1024);
  EXPECT_EQ(gateway.header_limit, 8192u);
  EXPECT_EQ(gateway.max_events_per_request, 10u);
  EXPECT_EQ(gateway.header_timeout, milliseconds(500));
  EXPECT_EQ(gateway.body_timeout, seconds(90));
  EXPECT_EQ(gateway.idle_timeout, seconds(120));
  EXPECT_EQ(gateway.handshake_timeout, seconds(5));
  EXPECT_EQ(gateway.timestamp_tolerance, seconds(3600));
  EXPECT_EQ(gateway.max_connections, 50u);

  EXPECT_EQ(config->store.path, "/data/pimgate");
  EXPECT_FALSE(config->store.sync);
  EXPECT_EQ(config->store.retention, seconds(2 * 24 * 3600));
  EXPECT_EQ(config->store.max_commit_requests, 32u);
  EXPECT_EQ(config->store.max_pending_requests, 1000u);

  ASSERT_EQ(config->sources.size(), 2u);
  EXPECT_EQ(config->sources[0].name, "akeneo-prod_1");
  EXPECT_EQ(config->sources[0].kind, SourceKind::kEventsApi);
  EXPECT_EQ(config->sources[0].secret.value, "one");
  ASSERT_TRUE(config->sources[0].secondary_secret.has_value());
  EXPECT_EQ(config->sources[0].secondary_secret->value, "two");
  EXPECT_EQ(config->sources[0].secondary_secret->origin, "inline");
  EXPECT_EQ(config->sources[0].timestamp_tolerance, seconds(90));
  EXPECT_EQ(config->sources[1].name, "platform");
  EXPECT_EQ(config->sources[1].kind, SourceKind::kEventPlatform);
  EXPECT_EQ(config->sources[1].path, "/hooks/platform");
  EXPECT_EQ(config->sources[1].secret.value, "three");

  EXPECT_EQ(config->log.level, "debug");
  EXPECT_EQ(config->log.format, "json");
}

TEST_F(ConfigTest, TlsMinVersionDefaultsTo12) {
  const std::string cert = WriteFile("cert.pem", "cert");
  const std::string key = WriteFile("key.pem", "key");
  absl::StatusOr<Config> config = LoadConfigString(absl::StrCat(
      "gateway:\n  tls:\n    cert_file: ", cert, "\n    key_file: ", key, "\n", kMinimal));
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_TRUE(config->gateway.tls.has_value());
  EXPECT_EQ(config->gateway.tls->min_version, "1.2");
}

TEST_F(ConfigTest, EmptySectionsKeepDefaults) {
  absl::StatusOr<Config> config = LoadConfigString(absl::StrCat("gateway:\nlog: {}\n", kMinimal));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->gateway.listen, "0.0.0.0:8443");
  EXPECT_EQ(config->log.level, "info");
}

TEST_F(ConfigTest, ByteSizesAndBooleanSpellings) {
  absl::StatusOr<Config> config = LoadConfigString(absl::StrCat(R"(gateway:
  body_limit: 10KB
  header_limit: 1MB
)",
                                                                kMinimal, "log:\n  level: warn\n"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->gateway.body_limit, 10'000u);
  EXPECT_EQ(config->gateway.header_limit, 1'000'000u);
  EXPECT_EQ(config->log.level, "warn");

  for (const char* spelling : {"false", "False", "FALSE"}) {
    absl::StatusOr<Config> off = LoadConfigString(
        absl::StrCat("store:\n  path: /x\n  sync: ", spelling, "\n",
                     "sources:\n  - {name: a, kind: events_api, path: /a, secret: s}\n"));
    ASSERT_TRUE(off.ok()) << spelling << ": " << off.status();
    EXPECT_FALSE(off->store.sync) << spelling;
  }
  absl::StatusOr<Config> on = LoadConfigString(
      "store: {path: /x, sync: true}\nsources: [{name: a, kind: events_api, path: /a, secret: "
      "s}]\n");
  ASSERT_TRUE(on.ok()) << on.status();
  EXPECT_TRUE(on->store.sync);
}

TEST_F(ConfigTest, ListenAcceptsHostsAndPorts) {
  for (const char* listen : {"0.0.0.0:8443", "localhost:0", "127.0.0.1:65535", "[::1]:8443",
                             "[::]:443", "example.com:80"}) {
    absl::StatusOr<Config> config =
        LoadConfigString(absl::StrCat("gateway:\n  listen: \"", listen, "\"\n", kMinimal));
    ASSERT_TRUE(config.ok()) << listen << ": " << config.status();
    EXPECT_EQ(config->gateway.listen, listen);
  }
}

TEST_F(ConfigTest, ListenRejectsMalformedAddresses) {
  struct Case {
    const char* listen;
    const char* problem;
  };
  for (const Case& c : std::vector<Case>{
           {"8443", "must be host:port"},
           {":8443", "host must not be empty"},
           {"0.0.0.0:", "port must be a number from 0 to 65535"},
           {"0.0.0.0:65536", "port must be a number from 0 to 65535"},
           {"0.0.0.0:99999999999999999999", "port must be a number from 0 to 65535"},
           {"0.0.0.0:-1", "port must be a number from 0 to 65535"},
           {"0.0.0.0:http", "port must be a number from 0 to 65535"},
           {"::1:8443", "IPv6 hosts go in brackets"},
           {"[::1:8443", "must be host:port or [ipv6]:port"},
           {"[]:8443", "must be host:port or [ipv6]:port"},
       }) {
    absl::Status status =
        ErrorOf(absl::StrCat("gateway:\n  listen: \"", c.listen, "\"\n", kMinimal));
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.listen;
    EXPECT_THAT(std::string(status.message()), StartsWith("line 2: gateway.listen: ")) << c.listen;
    EXPECT_THAT(std::string(status.message()), HasSubstr(c.problem)) << c.listen;
  }
}

// ---- Errors with their line and key path --------------------------------------------------------

struct ErrorCase {
  const char* name;
  const char* yaml;
  const char* message;  // the whole expected message
};

class ConfigErrorTest : public ::testing::TestWithParam<ErrorCase> {};

TEST_P(ConfigErrorTest, ReportsLineAndKey) {
  absl::Status status = ErrorOf(GetParam().yaml);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), GetParam().message);
  EXPECT_THAT(std::string(status.message()), Not(HasSubstr(kSecretValue)));
}

INSTANTIATE_TEST_SUITE_P(
    Errors, ConfigErrorTest,
    ::testing::ValuesIn(std::vector<ErrorCase>{
        // Document shape.
        {"EmptyDocument", "", "line 1: <document>: empty; store and sources are required"},
        {"CommentOnly", "# nothing\n", "line 1: <document>: empty; store and sources are required"},
        {"ScalarDocument", "hello\n", "line 1: <document>: must be a mapping, got \"hello\""},
        {"SequenceDocument", "- a\n- b\n", "line 1: <document>: must be a mapping, got a sequence"},
        {"TwoDocuments",
         "store: {path: /x}\nsources: [{name: a, kind: events_api, path: /a, secret: s}]\n---\n"
         "log: {}\n",
         "line 4: <document>: the config must be a single YAML document"},
        {"UnknownTopLevelKey", "store:\n  path: /x\nplugins:\n  - name: a\n",
         "line 3: plugins: unknown key"},
        {"DuplicateTopLevelKey", "store:\n  path: /x\nstore:\n  path: /y\n",
         "line 3: store: duplicate key (first at line 1)"},
        {"NonScalarKey", "? [a, b]\n: c\n", "line 1: <document>: keys must be plain names"},
        {"MissingStore",
         "sources:\n  - {name: a, kind: events_api, path: /a, secret: s3cr3t-inline}\n",
         "line 1: store: required"},
        {"MissingSources", "\nstore:\n  path: /x\n", "line 2: sources: required"},

        // gateway.
        {"UnknownGatewayKey",
         "store:\n  path: /x\ngateway:\n  listen: 0.0.0.0:1\n  listn: 0.0.0.0:2\n",
         "line 5: gateway.listn: unknown key"},
        {"GatewayNotMapping", "gateway: [1, 2]\n",
         "line 1: gateway: must be a mapping, got a sequence"},
        {"GatewayScalar", "gateway: on\n", "line 1: gateway: must be a mapping, got \"on\""},
        {"ListenMissingValue", "gateway:\n  listen:\n", "line 2: gateway.listen: missing value"},
        {"ListenMapping", "gateway:\n  listen: {host: a}\n",
         "line 2: gateway.listen: must be a single value, got a mapping"},
        {"ThreadsNegative", "gateway:\n  threads: -1\n",
         "line 2: gateway.threads: must be at least 0, got -1"},
        {"ThreadsNotInteger", "gateway:\n  threads: four\n",
         "line 2: gateway.threads: must be an integer, got \"four\""},
        {"ThreadsFraction", "gateway:\n  threads: 1.5\n",
         "line 2: gateway.threads: must be an integer, got \"1.5\""},
        {"ThreadsTooLarge", "gateway:\n  threads: 3000000000\n",
         "line 2: gateway.threads: must be at most 2147483647"},
        {"IntegerOverflow", "gateway:\n  max_connections: 99999999999999999999\n",
         "line 2: gateway.max_connections: is too large"},
        {"MaxConnectionsZero", "gateway:\n  max_connections: 0\n",
         "line 2: gateway.max_connections: must be at least 1, got 0"},
        {"MaxEventsZero", "gateway:\n  max_events_per_request: 0\n",
         "line 2: gateway.max_events_per_request: must be at least 1, got 0"},
        {"BodyLimitZero", "gateway:\n  body_limit: 0\n",
         "line 2: gateway.body_limit: must be greater than zero"},
        {"BodyLimitBadUnit", "gateway:\n  body_limit: 4mb\n",
         "line 2: gateway.body_limit: invalid size \"4mb\": unknown unit \"mb\" (use B, KB, MB, "
         "GB, "
         "KiB, MiB or GiB)"},
        {"HeaderLimitNegative", "gateway:\n  header_limit: -5\n",
         "line 2: gateway.header_limit: invalid size \"-5\": expected a whole number of bytes, "
         "optionally followed by B, KB, MB, GB, KiB, MiB or GiB"},
        {"TimeoutBareNumber", "gateway:\n  header_timeout: 10\n",
         "line 2: gateway.header_timeout: invalid duration \"10\": missing unit; write e.g. "
         "\"10s\" or \"10ms\""},
        {"TimeoutZero", "gateway:\n  body_timeout: 0s\n",
         "line 2: gateway.body_timeout: must be greater than zero"},
        {"TimeoutBadUnit", "gateway:\n  idle_timeout: 5x\n",
         "line 2: gateway.idle_timeout: invalid duration \"5x\": unknown unit \"x\" (use ms, s, m, "
         "h or d)"},
        {"HandshakeTimeoutSequence", "gateway:\n  handshake_timeout:\n    - 1s\n",
         "line 2: gateway.handshake_timeout: must be a single value, got a sequence"},
        {"ToleranceSubSecond", "gateway:\n  timestamp_tolerance: 1500ms\n",
         "line 2: gateway.timestamp_tolerance: must be a whole number of seconds, got \"1500ms\""},

        // gateway.tls (file checks have their own tests).
        {"TlsMissingCert", "gateway:\n  tls:\n    min_version: \"1.2\"\n",
         "line 2: gateway.tls.cert_file: required"},
        {"TlsEmpty", "gateway:\n  tls:\n", "line 2: gateway.tls.cert_file: required"},
        {"TlsUnknownKey", "gateway:\n  tls:\n    cert: /x\n",
         "line 3: gateway.tls.cert: unknown key"},
        {"TlsBadMinVersion", "gateway:\n  tls:\n    min_version: 1.1\n",
         "line 3: gateway.tls.min_version: must be \"1.2\" or \"1.3\", got \"1.1\""},
        {"TlsMissingCertFile", "gateway:\n  tls:\n    cert_file: /nonexistent/pimgate/cert.pem\n",
         "line 3: gateway.tls.cert_file: cannot read \"/nonexistent/pimgate/cert.pem\": No such "
         "file or directory"},

        // store.
        {"StoreMissingPath", "store:\n  sync: true\n", "line 1: store.path: required"},
        {"StoreNull", "store:\n", "line 1: store.path: required"},
        {"StoreEmptyPath", "store:\n  path: \"\"\n", "line 2: store.path: must not be empty"},
        {"StoreUnknownKey", "store:\n  path: /x\n  fsync: true\n",
         "line 3: store.fsync: unknown key"},
        {"StoreSyncNotBool", "store:\n  path: /x\n  sync: yes\n",
         "line 3: store.sync: must be true or false, got \"yes\""},
        {"StoreRetentionBareNumber", "store:\n  path: /x\n  retention: 3600\n",
         "line 3: store.retention: invalid duration \"3600\": missing unit; write e.g. \"3600s\" "
         "or \"3600ms\""},
        {"StoreRetentionOverflow", "store:\n  path: /x\n  retention: 99999999999999999d\n",
         "line 3: store.retention: invalid duration \"99999999999999999d\": too large"},
        {"StoreMaxCommitZero", "store:\n  path: /x\n  max_commit_requests: 0\n",
         "line 3: store.max_commit_requests: must be at least 1, got 0"},
        {"StoreMaxPendingZero", "store:\n  path: /x\n  max_pending_requests: 0\n",
         "line 3: store.max_pending_requests: must be at least 1, got 0"},

        // sources.
        {"SourcesEmpty", "store: {path: /x}\nsources: []\n",
         "line 2: sources: must list at least one source"},
        {"SourcesNull", "store: {path: /x}\nsources:\n",
         "line 2: sources: must list at least one source"},
        {"SourcesMapping", "store: {path: /x}\nsources:\n  akeneo: {}\n",
         "line 2: sources: must be a sequence, got a mapping"},
        {"SourceNotMapping", "store: {path: /x}\nsources:\n  - akeneo\n",
         "line 3: sources[0]: must be a mapping, got \"akeneo\""},
        {"SourceUnknownKey",
         "store: {path: /x}\n"
         "sources:\n"
         "  - name: a\n"
         "    kind: events_api\n"
         "    path: /a\n"
         "    secret: s3cr3t-inline\n"
         "    secrte: s3cr3t-inline\n",
         "line 7: sources[0].secrte: unknown key"},
        {"SourceMissingName",
         "store: {path: /x}\nsources:\n  - kind: events_api\n    path: /a\n    secret: "
         "s3cr3t-inline\n",
         "line 3: sources[0].name: required"},
        {"SourceMissingKind",
         "store: {path: /x}\nsources:\n  - name: a\n    path: /a\n    secret: s3cr3t-inline\n",
         "line 3: sources[0].kind: required"},
        {"SourceMissingPath",
         "store: {path: /x}\nsources:\n  - name: a\n    kind: events_api\n    secret: "
         "s3cr3t-inline\n",
         "line 3: sources[0].path: required"},
        {"SourceMissingSecret",
         "store: {path: /x}\nsources:\n  - name: a\n    kind: events_api\n    path: /a\n",
         "line 3: sources[0].secret: required"},
        {"SourceBadKind",
         "store: {path: /x}\n"
         "sources:\n"
         "  - name: a\n"
         "    kind: events_api\n"
         "    path: /a\n"
         "    secret: s3cr3t-inline\n"
         "  - name: b\n"
         "    kind: foo\n"
         "    path: /b\n"
         "    secret: s3cr3t-inline\n",
         "line 8: sources[1].kind: must be \"events_api\" or \"event_platform\", got \"foo\""},
        {"SourceBadName",
         "store: {path: /x}\nsources:\n  - name: Akeneo\n    kind: events_api\n    path: /a\n"
         "    secret: s3cr3t-inline\n",
         "line 3: sources[0].name: must use only a-z, 0-9, _ and -, got \"Akeneo\""},
        {"SourceNameWithSpace",
         "store: {path: /x}\nsources:\n  - {name: \"a b\", kind: events_api, path: /a, secret: "
         "s3cr3t-inline}\n",
         "line 3: sources[0].name: must use only a-z, 0-9, _ and -, got \"a b\""},
        {"SourceEmptyName",
         "store: {path: /x}\nsources:\n  - {name: \"\", kind: events_api, path: /a, secret: "
         "s3cr3t-inline}\n",
         "line 3: sources[0].name: must not be empty"},
        {"SourcePathRelative",
         "store: {path: /x}\nsources:\n  - name: a\n    kind: events_api\n    path: hooks/a\n"
         "    secret: s3cr3t-inline\n",
         "line 5: sources[0].path: must start with /, got \"hooks/a\""},
        {"SourcePathWithQuery",
         "store: {path: /x}\nsources:\n  - name: a\n    kind: events_api\n    path: /a?x=1\n"
         "    secret: s3cr3t-inline\n",
         "line 5: sources[0].path: must not contain ?, # or spaces, got \"/a?x=1\""},
        {"SourceEmptySecret",
         "store: {path: /x}\nsources:\n  - name: a\n    kind: events_api\n    path: /a\n"
         "    secret: \"\"\n",
         "line 6: sources[0].secret: must not be empty"},
        {"SourceNullSecret",
         "store: {path: /x}\nsources:\n  - name: a\n    kind: events_api\n    path: /a\n"
         "    secret:\n",
         "line 6: sources[0].secret: missing value"},
        {"SourceSecretMapping",
         "store: {path: /x}\nsources:\n  - name: a\n    kind: events_api\n    path: /a\n"
         "    secret: {s3cr3t-inline: 1}\n",
         "line 6: sources[0].secret: must be a single string (inline, \"${ENV_VAR}\" or "
         "\"file:/path\")"},
        {"SourceBadEnvReference",
         "store: {path: /x}\nsources:\n  - name: a\n    kind: events_api\n    path: /a\n"
         "    secret: ${s3cr3t-inline}\n",
         "line 6: sources[0].secret: an environment reference must be exactly ${NAME}, with NAME "
         "made of letters, digits and _"},
        {"SourceEmptyFileReference",
         "store: {path: /x}\nsources:\n  - name: a\n    kind: events_api\n    path: /a\n"
         "    secret: \"file:\"\n",
         "line 6: sources[0].secret: \"file:\" must be followed by a path"},
        {"SourceSecondarySecretEmpty",
         "store: {path: /x}\nsources:\n  - name: a\n    kind: events_api\n    path: /a\n"
         "    secret: s3cr3t-inline\n    secondary_secret: ''\n",
         "line 7: sources[0].secondary_secret: must not be empty"},
        {"SourceToleranceOnEventPlatform",
         "store: {path: /x}\nsources:\n  - name: a\n    timestamp_tolerance: 60s\n"
         "    kind: event_platform\n    path: /a\n    secret: s3cr3t-inline\n",
         "line 4: sources[0].timestamp_tolerance: only applies to events_api sources"},
        {"SourceToleranceZero",
         "store: {path: /x}\nsources:\n  - name: a\n    kind: events_api\n    path: /a\n"
         "    secret: s3cr3t-inline\n    timestamp_tolerance: 0s\n",
         "line 7: sources[0].timestamp_tolerance: must be greater than zero"},
        {"DuplicateSourceName",
         "store: {path: /x}\n"
         "sources:\n"
         "  - name: akeneo\n"
         "    kind: events_api\n"
         "    path: /a\n"
         "    secret: s3cr3t-inline\n"
         "  - name: akeneo\n"
         "    kind: events_api\n"
         "    path: /b\n"
         "    secret: s3cr3t-inline\n",
         "line 7: sources[1].name: duplicate of sources[0].name (line 3)"},
        {"DuplicateSourcePath",
         "store: {path: /x}\n"
         "sources:\n"
         "  - name: one\n"
         "    kind: events_api\n"
         "    path: /hooks\n"
         "    secret: s3cr3t-inline\n"
         "  - name: two\n"
         "    kind: event_platform\n"
         "    path: /hooks\n"
         "    secret: s3cr3t-inline\n",
         "line 9: sources[1].path: duplicate of sources[0].path (line 5)"},
        {"DuplicateKeyInSource", "store: {path: /x}\nsources:\n  - name: a\n    name: b\n",
         "line 4: sources[0].name: duplicate key (first at line 3)"},

        // log.
        {"LogBadLevel", "log:\n  level: verbose\n",
         "line 2: log.level: must be one of \"trace\", \"debug\", \"info\", \"warn\" or "
         "\"error\", got \"verbose\""},
        {"LogBadFormat", "log:\n  format: xml\n",
         "line 2: log.format: must be \"text\" or \"json\", got \"xml\""},
        {"LogUnknownKey", "log:\n  level: info\n  colour: true\n",
         "line 3: log.colour: unknown key"},
    }),
    [](const ::testing::TestParamInfo<ErrorCase>& info) { return std::string(info.param.name); });

TEST_F(ConfigTest, FirstErrorInDocumentOrderWins) {
  // Both gateway.threads (line 2) and log.level (line 4) are wrong; the earlier one is reported.
  absl::Status status = ErrorOf("gateway:\n  threads: x\nlog:\n  level: loud\n");
  EXPECT_THAT(std::string(status.message()), StartsWith("line 2: gateway.threads:"));
}

TEST_F(ConfigTest, ErrorLinesCountCommentsAndBlankLines) {
  absl::Status status = ErrorOf(
      absl::StrCat("# header comment\n\n", kMinimal, "\n# the log section\nlog:\n  level: loud\n"));
  EXPECT_EQ(status.message(),
            "line 13: log.level: must be one of \"trace\", \"debug\", \"info\", \"warn\" "
            "or \"error\", got \"loud\"");
}

TEST_F(ConfigTest, YamlSyntaxErrorGivesLine) {
  absl::Status status = ErrorOf("store:\n  path: /x\nsources: [\n  {name: a\nlog: {}\n");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), StartsWith("line "));
  EXPECT_THAT(std::string(status.message()), HasSubstr("YAML syntax error"));

  status = ErrorOf("store:\n  path: /x\n  sync: a: b\n");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), StartsWith("line 3: YAML syntax error: "));

  status = ErrorOf("store:\n  path: /x\n bad: indent\n");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), StartsWith("line 3: YAML syntax error: "));
}

// ---- TLS files --------------------------------------------------------------------------------

TEST_F(ConfigTest, TlsFilesMustExist) {
  const std::string cert = WriteFile("cert.pem", "cert");
  const std::string missing = dir_ + "/missing-key.pem";
  absl::Status status = ErrorOf(absl::StrCat("gateway:\n  tls:\n    cert_file: ", cert,
                                             "\n    key_file: ", missing, "\n", kMinimal));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), absl::StrCat("line 4: gateway.tls.key_file: cannot read \"", missing,
                                           "\": No such file or directory"));
}

TEST_F(ConfigTest, TlsFileMustBeRegularFile) {
  const std::string key = WriteFile("key.pem", "key");
  absl::Status status = ErrorOf(absl::StrCat("gateway:\n  tls:\n    cert_file: ", dir_,
                                             "\n    key_file: ", key, "\n", kMinimal));
  EXPECT_EQ(status.message(),
            absl::StrCat("line 3: gateway.tls.cert_file: \"", dir_, "\" is not a regular file"));
}

TEST_F(ConfigTest, TlsFileMustBeReadable) {
  if (::geteuid() == 0) GTEST_SKIP() << "root reads files regardless of their mode";
  const std::string cert = WriteFile("cert.pem", "cert");
  const std::string key = WriteFile("key.pem", "key");
  ASSERT_EQ(::chmod(key.c_str(), 0), 0);
  absl::Status status = ErrorOf(absl::StrCat("gateway:\n  tls:\n    cert_file: ", cert,
                                             "\n    key_file: ", key, "\n", kMinimal));
  EXPECT_EQ(status.message(), absl::StrCat("line 4: gateway.tls.key_file: cannot read \"", key,
                                           "\": Permission denied"));
}

// ---- Secrets ----------------------------------------------------------------------------------

// kMinimal with its secret line replaced.
std::string WithSecret(const std::string& secret_yaml) {
  return absl::StrReplaceAll(kMinimal, {{"secret: s3cr3t-inline", secret_yaml}});
}

TEST_F(ConfigTest, SecretFromEnvironment) {
  ScopedEnv env("PIMGATE_TEST_SECRET", "from-the-env");
  absl::StatusOr<Config> config = LoadConfigString(WithSecret("secret: ${PIMGATE_TEST_SECRET}"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->sources[0].secret.value, "from-the-env");
  EXPECT_EQ(config->sources[0].secret.origin, "env:PIMGATE_TEST_SECRET");
  EXPECT_EQ(config->sources[0].secret.Describe(), "env:PIMGATE_TEST_SECRET");
}

TEST_F(ConfigTest, SecretEnvironmentVariableUnset) {
  ::unsetenv("PIMGATE_TEST_UNSET");
  absl::Status status = ErrorOf(WithSecret("secret: ${PIMGATE_TEST_UNSET}"));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(),
            "line 7: sources[0].secret: environment variable PIMGATE_TEST_UNSET is not set");
}

TEST_F(ConfigTest, SecretEnvironmentVariableEmpty) {
  ScopedEnv env("PIMGATE_TEST_EMPTY", "");
  absl::Status status = ErrorOf(WithSecret("secret: ${PIMGATE_TEST_EMPTY}"));
  EXPECT_EQ(status.message(),
            "line 7: sources[0].secret: environment variable PIMGATE_TEST_EMPTY is empty");
}

TEST_F(ConfigTest, SecondarySecretFromEnvironment) {
  ScopedEnv env("PIMGATE_TEST_NEXT", "rotated");
  absl::StatusOr<Config> config =
      LoadConfigString(absl::StrCat(kMinimal, "    secondary_secret: \"${PIMGATE_TEST_NEXT}\"\n"));
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_TRUE(config->sources[0].secondary_secret.has_value());
  EXPECT_EQ(config->sources[0].secondary_secret->value, "rotated");
  EXPECT_EQ(config->sources[0].secondary_secret->origin, "env:PIMGATE_TEST_NEXT");
}

TEST_F(ConfigTest, SecretFromFileIsTrimmed) {
  const std::string path = WriteFile("secret", "file-secret \t\n\n");
  absl::StatusOr<Config> config = LoadConfigString(WithSecret("secret: file:" + path));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->sources[0].secret.value, "file-secret");
  EXPECT_EQ(config->sources[0].secret.origin, "file:" + path);
}

TEST_F(ConfigTest, SecretFileKeepsLeadingAndInnerCharacters) {
  const std::string path = WriteFile("secret", " a b\n");
  absl::StatusOr<Config> config = LoadConfigString(WithSecret("secret: file:" + path));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->sources[0].secret.value, " a b");
}

TEST_F(ConfigTest, SecretFileMissing) {
  const std::string path = dir_ + "/no-such-secret";
  absl::Status status = ErrorOf(WithSecret("secret: file:" + path));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), absl::StrCat("line 7: sources[0].secret: cannot read secret file \"",
                                           path, "\": No such file or directory"));
}

TEST_F(ConfigTest, SecretFileBlank) {
  const std::string path = WriteFile("blank", " \n\n");
  absl::Status status = ErrorOf(WithSecret("secret: file:" + path));
  EXPECT_EQ(status.message(),
            absl::StrCat("line 7: sources[0].secret: secret file \"", path, "\" is empty"));
}

TEST_F(ConfigTest, SecretFileIsDirectory) {
  absl::Status status = ErrorOf(WithSecret("secret: file:" + dir_));
  EXPECT_THAT(std::string(status.message()),
              StartsWith(absl::StrCat("line 7: sources[0].secret: cannot read secret file \"", dir_,
                                      "\": ")));
}

TEST_F(ConfigTest, SecretValuesNeverAppearInErrors) {
  ScopedEnv env("PIMGATE_TEST_LEAK", "env-value-do-not-print");
  const std::string file = WriteFile("secret", "file-value-do-not-print\n");
  const std::vector<std::string> leaky = {
      // A valid secret followed by an error elsewhere in the same source and in other sections.
      absl::StrCat(kMinimal, "    kind: events_api\n"),
      absl::StrCat(kMinimal, "    secondary_secret: s3cr3t-inline\n    bogus: 1\n"),
      absl::StrCat(kMinimal, "log:\n  level: s3cr3t-inline\n") /* not a secret field */,
      WithSecret("secret: ${PIMGATE_TEST_LEAK}\n    path: /again"),
      WithSecret("secret: file:" + file + "\n    oops: 1"),
      WithSecret("secret: [s3cr3t-inline]"),
      WithSecret("secret: {s3cr3t-inline: s3cr3t-inline}"),
      WithSecret("secret: ${s3cr3t-inline"),
      WithSecret("secondary_secret: s3cr3t-inline"),
      absl::StrCat(kMinimal,
                   "  - name: akeneo\n    kind: events_api\n    path: /b\n"
                   "    secret: s3cr3t-inline\n"),
  };
  for (const std::string& yaml : leaky) {
    absl::Status status = ErrorOf(yaml);
    ASSERT_FALSE(status.ok()) << yaml;
    const std::string message(status.message());
    EXPECT_THAT(message, Not(HasSubstr("env-value-do-not-print"))) << yaml;
    EXPECT_THAT(message, Not(HasSubstr("file-value-do-not-print"))) << yaml;
    if (yaml.find("level: s3cr3t-inline") == std::string::npos) {
      EXPECT_THAT(message, Not(HasSubstr(kSecretValue))) << yaml;
    }
  }
}

// ---- Files ------------------------------------------------------------------------------------

TEST_F(ConfigTest, LoadConfigFileReadsFile) {
  const std::string path = WriteFile("pimgate.yaml", kMinimal);
  absl::StatusOr<Config> config = LoadConfigFile(path);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->sources[0].name, "akeneo");
}

TEST_F(ConfigTest, LoadConfigFileMissingIsNotFound) {
  const std::string path = dir_ + "/absent.yaml";
  absl::StatusOr<Config> config = LoadConfigFile(path);
  EXPECT_EQ(config.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(config.status().message()), HasSubstr(path));
}

TEST_F(ConfigTest, LoadConfigFileOnDirectoryFails) {
  absl::StatusOr<Config> config = LoadConfigFile(dir_);
  EXPECT_EQ(config.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(config.status().message()),
              StartsWith(absl::StrCat("cannot read config file \"", dir_, "\": ")));
}

TEST_F(ConfigTest, LoadConfigFileReportsLines) {
  const std::string path = WriteFile("pimgate.yaml", absl::StrCat(kMinimal, "log:\n  lvl: x\n"));
  absl::StatusOr<Config> config = LoadConfigFile(path);
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(config.status().message(), "line 9: log.lvl: unknown key");
}

// ---- ParseDuration and ParseByteSize ----------------------------------------------------------

TEST(ParseDurationTest, Accepts) {
  struct Case {
    const char* text;
    milliseconds expected;
  };
  for (const Case& c : std::vector<Case>{
           {"0s", milliseconds(0)},
           {"0ms", milliseconds(0)},
           {"500ms", milliseconds(500)},
           {"30s", seconds(30)},
           {"15m", std::chrono::minutes(15)},
           {"168h", std::chrono::hours(168)},
           {"2d", std::chrono::hours(48)},
           {"1h30m", std::chrono::minutes(90)},
           {"1d12h", std::chrono::hours(36)},
           {"1m30s250ms", milliseconds(90'250)},
           {"1d1h1m1s1ms", milliseconds(90'061'001)},
           {"007s", seconds(7)},
       }) {
    absl::StatusOr<milliseconds> parsed = ParseDuration(c.text);
    ASSERT_TRUE(parsed.ok()) << c.text << ": " << parsed.status();
    EXPECT_EQ(*parsed, c.expected) << c.text;
  }
}

TEST(ParseDurationTest, Rejects) {
  struct Case {
    const char* text;
    const char* problem;
  };
  for (const Case& c : std::vector<Case>{
           {"", "empty"},
           {"10", "missing unit; write e.g. \"10s\" or \"10ms\""},
           {"0", "missing unit"},
           {"1h30", "missing unit after 30"},
           {"abc", "expected a whole number followed by a unit"},
           {"5x", "unknown unit \"x\""},
           {"5S", "unknown unit \"S\""},
           {"5sec", "unknown unit \"sec\""},
           {"1.5s", "use whole numbers with a smaller unit"},
           {"1h0.5m", "use whole numbers with a smaller unit"},
           {"-5s", "expected a whole number"},
           {"+5s", "expected a whole number"},
           {"1h-5m", "expected a whole number"},
           {" 5s", "must not contain spaces"},
           {"5 s", "must not contain spaces"},
           {"1h 30m", "must not contain spaces"},
           {"5s ", "must not contain spaces"},
           {"30m1h", "each unit may appear once, largest first"},
           {"1h1h", "each unit may appear once, largest first"},
           {"1s1m", "each unit may appear once, largest first"},
           {"9223372036854775807s", "too large"},
           {"99999999999999999999ms", "too large"},
           {"106751991168d", "too large"},
           {"9223372036854775s9223372036854775807ms", "too large"},
       }) {
    absl::StatusOr<milliseconds> parsed = ParseDuration(c.text);
    ASSERT_FALSE(parsed.ok()) << c.text;
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << c.text;
    EXPECT_THAT(std::string(parsed.status().message()),
                StartsWith(absl::StrCat("invalid duration \"", c.text, "\": ")));
    EXPECT_THAT(std::string(parsed.status().message()), HasSubstr(c.problem)) << c.text;
  }
}

TEST(ParseDurationTest, LargestRepresentable) {
  absl::StatusOr<milliseconds> parsed = ParseDuration("9223372036854775807ms");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->count(), INT64_MAX);
}

TEST(ParseByteSizeTest, Accepts) {
  struct Case {
    const char* text;
    std::size_t expected;
  };
  for (const Case& c : std::vector<Case>{
           {"0", 0},
           {"4194304", 4194304},
           {"100B", 100},
           {"512KiB", 512 * 1024},
           {"4MiB", 4 * 1024 * 1024},
           {"1GiB", std::size_t{1} << 30},
           {"10KB", 10'000},
           {"1MB", 1'000'000},
           {"2GB", 2'000'000'000},
           {"18446744073709551615", SIZE_MAX},
       }) {
    absl::StatusOr<std::size_t> parsed = ParseByteSize(c.text);
    ASSERT_TRUE(parsed.ok()) << c.text << ": " << parsed.status();
    EXPECT_EQ(*parsed, c.expected) << c.text;
  }
}

TEST(ParseByteSizeTest, Rejects) {
  struct Case {
    const char* text;
    const char* problem;
  };
  for (const Case& c : std::vector<Case>{
           {"", "expected a whole number of bytes"},
           {"abc", "expected a whole number of bytes"},
           {"MiB", "expected a whole number of bytes"},
           {"-1", "expected a whole number of bytes"},
           {"1.5MiB", "unknown unit \".5MiB\""},
           {"4mb", "unknown unit \"mb\""},
           {"4 MiB", "unknown unit \" MiB\""},
           {"4TiB2", "unknown unit \"TiB2\""},
           {"4KiBs", "unknown unit \"KiBs\""},
           {"18446744073709551616", "too large"},
           {"17179869184GiB", "too large"},
       }) {
    absl::StatusOr<std::size_t> parsed = ParseByteSize(c.text);
    ASSERT_FALSE(parsed.ok()) << c.text;
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << c.text;
    EXPECT_THAT(std::string(parsed.status().message()),
                StartsWith(absl::StrCat("invalid size \"", c.text, "\": ")));
    EXPECT_THAT(std::string(parsed.status().message()), HasSubstr(c.problem)) << c.text;
  }
}

TEST(SourceKindNameTest, NamesMatchConfigSpelling) {
  EXPECT_STREQ(SourceKindName(SourceKind::kEventsApi), "events_api");
  EXPECT_STREQ(SourceKindName(SourceKind::kEventPlatform), "event_platform");
}

}  // namespace
}  // namespace pimgate
