// Tests for the config loader: defaults, every key, every error's line and key path, secret
// resolution from the environment and files, and the duration and size parsers.
#include "config/config.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "common/did_you_mean.h"
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

TEST_F(ConfigTest, EventPlatformNotificationKeys) {
  absl::StatusOr<Config> config = LoadConfigString(
      "store: {path: /x}\n"
      "sources:\n"
      "  - name: platform\n"
      "    kind: event_platform\n"
      "    path: /hooks/platform\n"
      "    secret: s3cr3t-inline\n"
      "    notification_path: /hooks/platform/notifications\n"
      "    notification_secret: notification-secret-0123\n"
      "  - name: other\n"
      "    kind: event_platform\n"
      "    path: /hooks/other\n"
      "    secret: s3cr3t-inline\n");
  ASSERT_TRUE(config.ok()) << config.status();
  const SourceConfig& platform = config->sources[0];
  EXPECT_EQ(platform.notification_path, "/hooks/platform/notifications");
  ASSERT_TRUE(platform.notification_secret.has_value());
  EXPECT_EQ(platform.notification_secret->value, "notification-secret-0123");
  EXPECT_EQ(platform.notification_secret->origin, "inline");
  // Both optional.
  EXPECT_TRUE(config->sources[1].notification_path.empty());
  EXPECT_FALSE(config->sources[1].notification_secret.has_value());
}

TEST_F(ConfigTest, MinimalConfigGetsDefaults) {
  absl::StatusOr<Config> config = LoadConfigString(kMinimal);
  ASSERT_TRUE(config.ok()) << config.status();

  const GatewayConfig& gateway = config->gateway;
  EXPECT_EQ(gateway.listen.text(), "0.0.0.0:8443");
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
  EXPECT_EQ(gateway.max_buffered_bytes, 0u);  // the machine's default, chosen by the gateway
  EXPECT_EQ(gateway.max_connections_per_client, 128u);
  EXPECT_EQ(gateway.buffer_wait, milliseconds(250));
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

  EXPECT_EQ(config->log.level, LogLevel::kInfo);
  EXPECT_EQ(config->log.format, LogFormat::kText);

  EXPECT_TRUE(config->plugins.empty());
  EXPECT_EQ(config->runtime.runtime_dir, "/var/lib/pimgate/run");
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
  max_buffered_bytes: 32MiB
  max_connections_per_client: 10
  buffer_wait: 400ms
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
  EXPECT_EQ(gateway.listen.text(), "127.0.0.1:9443");
  ASSERT_TRUE(gateway.tls.has_value());
  EXPECT_EQ(gateway.tls->cert_file, cert);
  EXPECT_EQ(gateway.tls->key_file, key);
  EXPECT_EQ(gateway.tls->min_version, TlsVersion::kTls1_3);
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
  EXPECT_EQ(gateway.max_buffered_bytes, 32u << 20);
  EXPECT_EQ(gateway.max_connections_per_client, 10u);
  EXPECT_EQ(gateway.buffer_wait, milliseconds(400));

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

  EXPECT_EQ(config->log.level, LogLevel::kDebug);
  EXPECT_EQ(config->log.format, LogFormat::kJson);
}

TEST_F(ConfigTest, TlsMinVersionDefaultsTo12) {
  const std::string cert = WriteFile("cert.pem", "cert");
  const std::string key = WriteFile("key.pem", "key");
  absl::StatusOr<Config> config = LoadConfigString(absl::StrCat(
      "gateway:\n  tls:\n    cert_file: ", cert, "\n    key_file: ", key, "\n", kMinimal));
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_TRUE(config->gateway.tls.has_value());
  EXPECT_EQ(config->gateway.tls->min_version, TlsVersion::kTls1_2);
}

TEST_F(ConfigTest, EmptySectionsKeepDefaults) {
  absl::StatusOr<Config> config = LoadConfigString(absl::StrCat("gateway:\nlog: {}\n", kMinimal));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->gateway.listen.text(), "0.0.0.0:8443");
  EXPECT_EQ(config->log.level, LogLevel::kInfo);
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
  EXPECT_EQ(config->log.level, LogLevel::kWarn);

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
  for (const char* listen :
       {"0.0.0.0:8443", "localhost:0", "127.0.0.1:65535", "[::1]:8443", "[::]:443"}) {
    absl::StatusOr<Config> config =
        LoadConfigString(absl::StrCat("gateway:\n  listen: \"", listen, "\"\n", kMinimal));
    ASSERT_TRUE(config.ok()) << listen << ": " << config.status();
    EXPECT_EQ(config->gateway.listen.text(), listen);
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
        {"UnknownTopLevelKey", "store:\n  path: /x\nplugin:\n  - name: a\n",
         "line 3: plugin: unknown key; did you mean plugins?"},
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
         "line 5: gateway.listn: unknown key; did you mean listen?"},
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
        {"BufferedBelowTwoBodies", "gateway:\n  body_limit: 4MiB\n  max_buffered_bytes: 6MiB\n",
         "line 3: gateway.max_buffered_bytes: must be at least twice gateway.body_limit "
         "(8388608 bytes), got 6291456"},
        {"BufferedCheckedWhateverTheOrder",
         "gateway:\n  max_buffered_bytes: 6MiB\n  body_limit: 4MiB\n",
         "line 2: gateway.max_buffered_bytes: must be at least twice gateway.body_limit "
         "(8388608 bytes), got 6291456"},
        {"BufferedAgainstTheDefaultBodyLimit", "gateway:\n  max_buffered_bytes: 1MiB\n",
         "line 2: gateway.max_buffered_bytes: must be at least twice gateway.body_limit "
         "(8388608 bytes), got 1048576"},
        {"ConnectionsPerClientZero", "gateway:\n  max_connections_per_client: 0\n",
         "line 2: gateway.max_connections_per_client: must be at least 1, got 0"},
        {"BufferWaitZero", "gateway:\n  buffer_wait: 0ms\n",
         "line 2: gateway.buffer_wait: must be greater than zero"},
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
         "line 3: gateway.tls.cert: unknown key; did you mean cert_file?"},
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
         "line 3: store.fsync: unknown key; did you mean sync?"},
        {"StoreSyncNotBool", "store:\n  path: /x\n  sync: yes\n",
         "line 3: store.sync: must be true or false, got \"yes\""},
        {"StoreRetentionBareNumber", "store:\n  path: /x\n  retention: 3600\n",
         "line 3: store.retention: invalid duration \"3600\": missing unit; write e.g. \"3600s\" "
         "or \"3600ms\""},
        {"StoreRetentionOverflow", "store:\n  path: /x\n  retention: 99999999999999999d\n",
         "line 3: store.retention: invalid duration \"99999999999999999d\": too large (at most "
         "36500d, 100 years)"},
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
         "line 7: sources[0].secrte: unknown key; did you mean secret?"},
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
        {"NotificationPathOnEventsApi",
         "store: {path: /x}\nsources:\n  - name: a\n    kind: events_api\n    path: /a\n"
         "    secret: s3cr3t-inline\n    notification_path: /a/notifications\n",
         "line 7: sources[0].notification_path: only applies to event_platform sources (the "
         "Event Platform's notification webhooks)"},
        {"NotificationSecretOnEventsApi",
         "store: {path: /x}\nsources:\n  - name: a\n    kind: events_api\n    path: /a\n"
         "    secret: s3cr3t-inline\n    notification_secret: 0123456789abcdef\n",
         "line 7: sources[0].notification_secret: only applies to event_platform sources (the "
         "Event Platform's notification webhooks)"},
        {"NotificationPathRelative",
         "store: {path: /x}\nsources:\n  - name: a\n    kind: event_platform\n    path: /a\n"
         "    secret: s3cr3t-inline\n    notification_path: notifications\n",
         "line 7: sources[0].notification_path: must start with /, got \"notifications\""},
        {"NotificationPathSameAsPath",
         "store: {path: /x}\nsources:\n  - name: a\n    kind: event_platform\n    path: /a\n"
         "    secret: s3cr3t-inline\n    notification_path: /a\n",
         "line 7: sources[0].notification_path: must differ from path (notifications sent to "
         "path are recognised anyway)"},
        {"NotificationSecretTooShort",
         "store: {path: /x}\nsources:\n  - name: a\n    kind: event_platform\n    path: /a\n"
         "    secret: s3cr3t-inline\n    notification_secret: short-secret\n",
         "line 7: sources[0].notification_secret: must be 16 to 256 characters (Akeneo's limit "
         "for notification_webhook_secret), got 12"},
        {"NotificationPathDuplicatesAnotherSourcesPath",
         "store: {path: /x}\n"
         "sources:\n"
         "  - name: one\n"
         "    kind: events_api\n"
         "    path: /hooks\n"
         "    secret: s3cr3t-inline\n"
         "  - name: two\n"
         "    kind: event_platform\n"
         "    path: /hooks/two\n"
         "    secret: s3cr3t-inline\n"
         "    notification_path: /hooks\n",
         "line 11: sources[1].notification_path: duplicate of sources[0].path (line 5)"},
        {"PathDuplicatesAnotherSourcesNotificationPath",
         "store: {path: /x}\n"
         "sources:\n"
         "  - name: one\n"
         "    kind: event_platform\n"
         "    path: /hooks/one\n"
         "    secret: s3cr3t-inline\n"
         "    notification_path: /hooks/notifications\n"
         "  - name: two\n"
         "    kind: event_platform\n"
         "    path: /hooks/notifications\n"
         "    secret: s3cr3t-inline\n",
         "line 10: sources[1].path: duplicate of sources[0].notification_path (line 7)"},

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

// Found by fuzz/config_fuzzer: without the space after ':', "secret:value" is one key, and the
// unknown-key error used to print it, value included.
TEST_F(ConfigTest, MistypedSecretLineIsNotEchoedAsAnUnknownKey) {
  const std::string block =
      absl::StrReplaceAll(kMinimal, {{"secret: s3cr3t-inline", "secret:s3cr3t-inline"}});
  absl::Status status = ErrorOf(block);
  ASSERT_FALSE(status.ok());
  EXPECT_THAT(std::string(status.message()), Not(HasSubstr(kSecretValue)));
  const std::string flow =
      "store: {path: /x}\nsources:\n  - {name: a, kind: events_api, path: /a, "
      "secret:s3cr3t-inline}\n";
  status = ErrorOf(flow);
  ASSERT_FALSE(status.ok());
  EXPECT_THAT(std::string(status.message()), Not(HasSubstr(kSecretValue)));
  EXPECT_THAT(std::string(status.message()),
              StartsWith("line 3: sources[0].<key>: unknown key, not shown"));
  EXPECT_THAT(std::string(status.message()), HasSubstr("missing space after ':'"));
  // Ordinary misspelt keys are still named.
  EXPECT_THAT(std::string(ErrorOf(absl::StrCat(kMinimal, "    secrte: x\n")).message()),
              HasSubstr("sources[0].secrte: unknown key"));
}

// Found by fuzz/config_fuzzer: YAML::LoadAll never returned on a document whose root starts with
// ',' (with or without a tag), growing memory; the loader must answer.
TEST_F(ConfigTest, DocumentWhoseRootStartsWithCommaIsAnErrorNotAHang) {
  for (const std::string yaml :
       {",", ", /", "  , x", ",\n", "!,", "&a ,\n", "# c\n,s\nstore: {}\n"}) {
    absl::Status status = ErrorOf(yaml);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << yaml;
    EXPECT_THAT(std::string(status.message()), StartsWith("line ")) << yaml;
  }
  // A second document is still named by its line.
  EXPECT_THAT(std::string(ErrorOf(absl::StrCat(kMinimal, "---\n,\n")).message()),
              HasSubstr("the config must be a single YAML document"));
}

// ---- Plugins and runtime ----------------------------------------------------------------------

// Every plugin key, as the documentation shows it. Sources come after plugins on purpose: source
// names are checked once the whole document is read.
constexpr char kEveryPluginKey[] = R"(store:
  path: /var/lib/pimgate
runtime:
  dir: /run/pimgate
plugins:
  - name: erp-sync
    command: ["/usr/bin/python3", "plugins/sqlite-mirror/plugin.py", ""]
    env: {SQLITE_MIRROR_PATH: /var/lib/mirror.db, A_FIRST: "1", EMPTY: "", REF: "${HOME}"}
    events: ["product.*", "product_model.*"]
    sources: [platform, akeneo]
    skip_stale: false
    max_in_flight: 10000
    ack_timeout: 45s
    start_timeout: 1m
    stop_timeout: 500ms
    hydrate: true
    retry: {max_attempts: 3, initial_backoff: 2s, max_backoff: 1h, multiplier: 1.5, jitter: 0}
    restart:
      initial_backoff: 250ms
      max_backoff: 2m
      reset_after: 10m
    authors: {include: [alice, bob], exclude: [erp-connection]}
    author_types: {include: [ui, user], exclude: [api]}
    data:
      - {path: family, in: [shoes, boots]}
      - path: product.values.enabled
        not_in: [true, True, "True", 12, 1.5, null, ~, "", archive]
  - name: remote_1
    address: "unix:/run/erp.sock"
sources:
  - {name: akeneo, kind: events_api, path: /hooks/akeneo, secret: s3cr3t-inline}
  - {name: platform, kind: event_platform, path: /hooks/platform, secret: s3cr3t-inline,
     rest: {base_url: "https://pim.example.com", client_id: c, secret: s, username: u,
            password: p}}
)";

TEST_F(ConfigTest, EveryPluginKeySet) {
  absl::StatusOr<Config> config = LoadConfigString(kEveryPluginKey);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->runtime.runtime_dir, "/run/pimgate");
  ASSERT_EQ(config->plugins.size(), 2u);

  const PluginConfig& erp = config->plugins[0];
  EXPECT_EQ(erp.name, "erp-sync");
  EXPECT_EQ(erp.command,
            (std::vector<std::string>{"/usr/bin/python3", "plugins/sqlite-mirror/plugin.py", ""}));
  EXPECT_EQ(erp.address, "");
  // Document order, values as written (no ${} resolution).
  EXPECT_EQ(erp.env, (std::vector<std::pair<std::string, std::string>>{
                         {"SQLITE_MIRROR_PATH", "/var/lib/mirror.db"},
                         {"A_FIRST", "1"},
                         {"EMPTY", ""},
                         {"REF", "${HOME}"}}));
  EXPECT_EQ(erp.events, (std::vector<std::string>{"product.*", "product_model.*"}));
  EXPECT_EQ(erp.sources, (std::vector<std::string>{"platform", "akeneo"}));
  EXPECT_FALSE(erp.skip_stale);
  EXPECT_EQ(erp.max_in_flight, 10000u);
  EXPECT_EQ(erp.ack_timeout, seconds(45));
  EXPECT_EQ(erp.start_timeout, seconds(60));
  EXPECT_EQ(erp.stop_timeout, milliseconds(500));
  EXPECT_TRUE(erp.hydrate);
  EXPECT_EQ(erp.retry.max_attempts, 3u);
  EXPECT_EQ(erp.retry.initial_backoff, seconds(2));
  EXPECT_EQ(erp.retry.max_backoff, seconds(3600));
  EXPECT_DOUBLE_EQ(erp.retry.multiplier, 1.5);
  EXPECT_DOUBLE_EQ(erp.retry.jitter, 0.0);
  EXPECT_EQ(erp.restart.initial_backoff, milliseconds(250));
  EXPECT_EQ(erp.restart.max_backoff, seconds(120));
  EXPECT_EQ(erp.restart.reset_after, seconds(600));
  EXPECT_EQ(erp.authors.include, (std::vector<std::string>{"alice", "bob"}));
  EXPECT_EQ(erp.authors.exclude, (std::vector<std::string>{"erp-connection"}));
  EXPECT_EQ(erp.author_types.include, (std::vector<std::string>{"ui", "user"}));
  EXPECT_EQ(erp.author_types.exclude, (std::vector<std::string>{"api"}));
  ASSERT_EQ(erp.data.size(), 2u);
  EXPECT_EQ(erp.data[0].path, "family");
  EXPECT_EQ(erp.data[0].values, (std::vector<std::string>{"shoes", "boots"}));
  EXPECT_FALSE(erp.data[0].negate);
  EXPECT_EQ(erp.data[1].path, "product.values.enabled");
  // Booleans and nulls as JSON prints them; a quoted "True" is a string and stays as written.
  EXPECT_EQ(erp.data[1].values, (std::vector<std::string>{"true", "true", "True", "12", "1.5",
                                                          "null", "null", "", "archive"}));
  EXPECT_TRUE(erp.data[1].negate);

  const PluginConfig& remote = config->plugins[1];
  EXPECT_EQ(remote.name, "remote_1");
  EXPECT_TRUE(remote.command.empty());
  EXPECT_EQ(remote.address, "unix:/run/erp.sock");
}

TEST_F(ConfigTest, PluginDefaults) {
  absl::StatusOr<Config> config = LoadConfigString(
      absl::StrCat(kMinimal, "plugins:\n  - name: sink\n    command: [jsonl-sink]\n"));
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_EQ(config->plugins.size(), 1u);
  const PluginConfig& plugin = config->plugins[0];
  EXPECT_EQ(plugin.name, "sink");
  // A relative program is resolved at launch, not at load.
  EXPECT_EQ(plugin.command, std::vector<std::string>{"jsonl-sink"});
  EXPECT_EQ(plugin.address, "");
  EXPECT_TRUE(plugin.env.empty());
  EXPECT_EQ(plugin.events, std::vector<std::string>{"*"});
  EXPECT_TRUE(plugin.sources.empty());
  EXPECT_TRUE(plugin.skip_stale);
  EXPECT_EQ(plugin.max_in_flight, 16u);
  EXPECT_EQ(plugin.ack_timeout, seconds(30));
  EXPECT_EQ(plugin.start_timeout, seconds(30));
  EXPECT_EQ(plugin.stop_timeout, seconds(10));
  EXPECT_FALSE(plugin.hydrate);
  EXPECT_EQ(plugin.retry.max_attempts, 10u);
  EXPECT_EQ(plugin.retry.initial_backoff, seconds(1));
  EXPECT_EQ(plugin.retry.max_backoff, seconds(300));
  EXPECT_DOUBLE_EQ(plugin.retry.multiplier, 2.0);
  EXPECT_DOUBLE_EQ(plugin.retry.jitter, 0.2);
  EXPECT_EQ(plugin.restart.initial_backoff, seconds(1));
  EXPECT_EQ(plugin.restart.max_backoff, seconds(60));
  EXPECT_EQ(plugin.restart.reset_after, seconds(60));
  EXPECT_TRUE(plugin.authors.include.empty());
  EXPECT_TRUE(plugin.authors.exclude.empty());
  EXPECT_TRUE(plugin.author_types.include.empty());
  EXPECT_TRUE(plugin.author_types.exclude.empty());
  EXPECT_TRUE(plugin.data.empty());
  EXPECT_EQ(config->runtime.runtime_dir, "/var/lib/pimgate/run");
}

TEST_F(ConfigTest, PartialRetryAndRestartKeepOtherDefaults) {
  absl::StatusOr<Config> config = LoadConfigString(
      absl::StrCat(kMinimal,
                   "plugins:\n  - name: a\n    command: [a]\n    retry: {jitter: 1}\n"
                   "    restart: {reset_after: 5s}\n    authors: {exclude: [bot]}\n"));
  ASSERT_TRUE(config.ok()) << config.status();
  const PluginConfig& plugin = config->plugins[0];
  EXPECT_DOUBLE_EQ(plugin.retry.jitter, 1.0);
  EXPECT_EQ(plugin.retry.max_attempts, 10u);
  EXPECT_EQ(plugin.retry.max_backoff, seconds(300));
  EXPECT_EQ(plugin.restart.reset_after, seconds(5));
  EXPECT_EQ(plugin.restart.initial_backoff, seconds(1));
  EXPECT_TRUE(plugin.authors.include.empty());
  EXPECT_EQ(plugin.authors.exclude, std::vector<std::string>{"bot"});
}

TEST_F(ConfigTest, EmptyPluginsAndRuntimeSections) {
  for (const char* tail :
       {"plugins:\n", "plugins: []\n", "runtime:\nplugins:\n", "runtime: {}\n"}) {
    absl::StatusOr<Config> config = LoadConfigString(absl::StrCat(kMinimal, tail));
    ASSERT_TRUE(config.ok()) << tail << config.status();
    EXPECT_TRUE(config->plugins.empty()) << tail;
    EXPECT_EQ(config->runtime.runtime_dir, "/var/lib/pimgate/run") << tail;
  }
}

TEST_F(ConfigTest, RuntimeDirDefaultsUnderStorePath) {
  struct Case {
    const char* store_path;
    const char* runtime_dir;
  };
  for (const Case& c : std::vector<Case>{
           {"/data/pimgate", "/data/pimgate/run"},
           {"/data/pimgate/", "/data/pimgate/run"},
           {"/data//", "/data/run"},
           {"/", "/run"},
           {"./pimgate-data", "./pimgate-data/run"},
           {"relative", "relative/run"},
       }) {
    absl::StatusOr<Config> config = LoadConfigString(
        absl::StrCat("store: {path: \"", c.store_path, "\"}\n",
                     "sources: [{name: a, kind: events_api, path: /a, secret: s}]\n"));
    ASSERT_TRUE(config.ok()) << c.store_path << ": " << config.status();
    EXPECT_EQ(config->runtime.runtime_dir, c.runtime_dir) << c.store_path;
  }
}

TEST_F(ConfigTest, RuntimeDirExplicit) {
  absl::StatusOr<Config> config = LoadConfigString(absl::StrCat(
      kMinimal, "runtime:\n  dir: run/here\nplugins:\n  - {name: a, command: [./a]}\n"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->runtime.runtime_dir, "run/here");
}

TEST_F(ConfigTest, PluginAddressesAccepted) {
  for (const char* address :
       {"unix:/run/erp.sock", "unix:///run/erp.sock", "unix:erp.sock", "127.0.0.1:50051",
        "localhost:1", "[::1]:50051", "erp.internal:443"}) {
    absl::StatusOr<Config> config = LoadConfigString(
        absl::StrCat(kMinimal, "plugins:\n  - name: a\n    address: \"", address, "\"\n"));
    ASSERT_TRUE(config.ok()) << address << ": " << config.status();
    EXPECT_EQ(config->plugins[0].address, address);
    EXPECT_TRUE(config->plugins[0].command.empty());
  }
}

TEST_F(ConfigTest, PluginSourcesMayPrecedeSources) {
  absl::StatusOr<Config> config = LoadConfigString(
      "plugins:\n  - {name: a, command: [a], sources: [late]}\n"
      "store: {path: /x}\n"
      "sources: [{name: late, kind: events_api, path: /a, secret: s}]\n");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->plugins[0].sources, std::vector<std::string>{"late"});
}

TEST_F(ConfigTest, UnknownSourceListsConfiguredOnes) {
  absl::Status status = ErrorOf(
      "plugins:\n"
      "  - name: a\n"
      "    command: [a]\n"
      "    sources:\n"
      "      - akeneo\n"
      "      - pim\n"
      "store: {path: /x}\n"
      "sources:\n"
      "  - {name: akeneo, kind: events_api, path: /a, secret: s3cr3t-inline}\n"
      "  - {name: platform, kind: event_platform, path: /b, secret: s3cr3t-inline}\n");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(),
            "line 6: plugins[0].sources[1]: unknown source \"pim\"; configured sources are "
            "akeneo, platform");
}

TEST_F(ConfigTest, CrossReferenceErrorsReportEarliestLine) {
  // Both errors are found after the document is read; the one on the earlier line is reported.
  // "/" + 40 + "/" + 64 + ".sock" = 111 bytes, too long for a socket address.
  const std::string runtime = absl::StrCat("runtime: {dir: /", std::string(40, 'd'), "}\n");
  const std::string long_socket =
      absl::StrCat("  - {name: ", std::string(64, 'n'), ", command: [a]}\n");
  const std::string unknown_source = "  - {name: b, command: [b], sources: [x]}\n";

  // runtime on line 1, kMinimal on 2-8, plugins on 9: the socket (line 10) comes first.
  absl::Status status =
      ErrorOf(absl::StrCat(runtime, kMinimal, "plugins:\n", long_socket, unknown_source));
  EXPECT_THAT(std::string(status.message()), StartsWith("line 10: plugins[0].name: socket path"));

  // kMinimal on 1-7, plugins on 8: the unknown source (line 9) comes first.
  status = ErrorOf(absl::StrCat(kMinimal, "plugins:\n", unknown_source, long_socket, runtime));
  EXPECT_EQ(status.message(),
            "line 9: plugins[0].sources[0]: unknown source \"x\"; configured sources are akeneo");
}

TEST_F(ConfigTest, PluginNameLength) {
  const std::string yaml = absl::StrCat(kMinimal, "plugins:\n  - name: ");
  EXPECT_TRUE(
      LoadConfigString(absl::StrCat(yaml, std::string(64, 'a'), "\n    address: h:1\n")).ok());
  absl::Status status = ErrorOf(absl::StrCat(yaml, std::string(65, 'a'), "\n    address: h:1\n"));
  EXPECT_EQ(status.message(), "line 9: plugins[0].name: must be at most 64 characters, got 65");
}

// The socket of a launched plugin is "<runtime.dir>/<name>.sock" and must fit in sun_path.
TEST_F(ConfigTest, SocketPathFitsExactly) {
  // "/" + 95 + "/" + "abcdef" + ".sock" = 1 + 95 + 1 + 6 + 5 = 108 bytes: one too many.
  const std::string dir = "/" + std::string(95, 'd');
  const std::string at_limit = absl::StrCat(kMinimal, "runtime:\n  dir: ", dir,
                                            "\nplugins:\n  - name: abcde\n    command: [a]\n");
  absl::StatusOr<Config> config = LoadConfigString(at_limit);
  ASSERT_TRUE(config.ok()) << config.status();  // 107 bytes

  absl::Status status = ErrorOf(absl::StrCat(kMinimal, "runtime:\n  dir: ", dir,
                                             "\nplugins:\n  - name: abcdef\n    command: [a]\n"));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()),
              StartsWith("line 11: plugins[0].name: socket path \""));
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("would be 108 bytes, more than the 107 a unix socket address holds; use a "
                        "shorter name or runtime.dir"));
}

TEST_F(ConfigTest, SocketPathTooLongUnderDefaultRuntimeDir) {
  const std::string store = "/" + std::string(90, 's');
  absl::Status status =
      ErrorOf(absl::StrCat("store:\n  path: ", store, "\n",
                           "sources: [{name: a, kind: events_api, path: /a, secret: s}]\n",
                           "plugins:\n  - name: long-plugin-name\n    command: [a]\n"));
  EXPECT_THAT(std::string(status.message()), StartsWith("line 5: plugins[0].name: socket path"));
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("use a shorter name or runtime.dir (default <store.path>/run)"));
}

TEST_F(ConfigTest, RuntimeDirTooLongForAnySocket) {
  const std::string dir = "/" + std::string(101, 'd');  // + "/x.sock" = 109 bytes
  absl::Status status = ErrorOf(absl::StrCat(kMinimal, "runtime:\n  dir: ", dir,
                                             "\nplugins:\n  - name: a\n    command: [a]\n"));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()),
              StartsWith("line 9: runtime.dir: too long for plugin sockets: \""));
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("leaves no room for \"/<name>.sock\" within the 107 bytes"));
}

TEST_F(ConfigTest, LongRuntimeDirIsFineWithoutLaunchedPlugins) {
  const std::string dir = "/" + std::string(200, 'd');
  EXPECT_TRUE(LoadConfigString(absl::StrCat(kMinimal, "runtime:\n  dir: ", dir, "\n")).ok());
  absl::StatusOr<Config> config =
      LoadConfigString(absl::StrCat(kMinimal, "runtime:\n  dir: ", dir,
                                    "\nplugins:\n  - {name: a, address: \"unix:/r.sock\"}\n"));
  ASSERT_TRUE(config.ok()) << config.status();
}

TEST_F(ConfigTest, UnixAddressTooLong) {
  const std::string path = "/" + std::string(107, 'p');  // 108 bytes
  absl::Status status =
      ErrorOf(absl::StrCat(kMinimal, "plugins:\n  - name: a\n    address: unix:", path, "\n"));
  EXPECT_EQ(status.message(),
            "line 10: plugins[0].address: socket path is 108 bytes, more than the 107 a unix "
            "socket address holds");
  EXPECT_TRUE(LoadConfigString(absl::StrCat(kMinimal, "plugins:\n  - name: a\n    address: unix:",
                                            path.substr(1), "\n"))
                  .ok());
}

// Plugin errors, each appended to kMinimal (7 lines), so `plugins:` is on line 8.
class PluginErrorTest : public ::testing::TestWithParam<ErrorCase> {};

TEST_P(PluginErrorTest, ReportsLineAndKey) {
  absl::Status status = ErrorOf(absl::StrCat(kMinimal, GetParam().yaml));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), GetParam().message);
  EXPECT_THAT(std::string(status.message()), Not(HasSubstr(kSecretValue)));
}

// A valid plugin on lines 8-10 (after kMinimal); keys a case adds to it start on line 11. A macro
// so that cases can extend it by string-literal concatenation.
#define PIMGATE_PLUGIN "plugins:\n  - name: erp\n    command: [/bin/true]\n"

INSTANTIATE_TEST_SUITE_P(
    Errors, PluginErrorTest,
    ::testing::ValuesIn(std::vector<ErrorCase>{
        // plugins and the entry itself.
        {"PluginsMapping", "plugins:\n  erp: {}\n",
         "line 8: plugins: must be a sequence, got a mapping"},
        {"PluginsScalar", "plugins: erp\n", "line 8: plugins: must be a sequence, got \"erp\""},
        {"PluginNotMapping", "plugins:\n  - erp\n",
         "line 9: plugins[0]: must be a mapping, got \"erp\""},
        {"PluginUnknownKey", PIMGATE_PLUGIN "    comand: [x]\n",
         "line 11: plugins[0].comand: unknown key; did you mean command?"},
        {"PluginDuplicateKey", PIMGATE_PLUGIN "    name: other\n",
         "line 11: plugins[0].name: duplicate key (first at line 9)"},
        {"PluginMissingName", "plugins:\n  - command: [/bin/true]\n",
         "line 9: plugins[0].name: required"},
        {"PluginBadName", "plugins:\n  - name: ERP\n    command: [a]\n",
         "line 9: plugins[0].name: must use only a-z, 0-9, _ and -, got \"ERP\""},
        {"PluginNameWithDot", "plugins:\n  - name: erp.sync\n    command: [a]\n",
         "line 9: plugins[0].name: must use only a-z, 0-9, _ and -, got \"erp.sync\""},
        {"PluginEmptyName", "plugins:\n  - {name: \"\", command: [a]}\n",
         "line 9: plugins[0].name: must not be empty"},
        {"DuplicatePluginName",
         PIMGATE_PLUGIN "  - name: other\n    command: [a]\n"
                        "  - name: erp\n    address: h:1\n",
         "line 13: plugins[2].name: duplicate of plugins[0].name (line 9)"},

        // command / address.
        {"NeitherCommandNorAddress", "plugins:\n  - name: erp\n    events: [\"*\"]\n",
         "line 9: plugins[0]: needs a command (to launch the plugin) or an address (to connect to "
         "a running one)"},
        {"BothCommandAndAddress", PIMGATE_PLUGIN "    address: localhost:50051\n",
         "line 11: plugins[0].address: set only one of command (line 10) and address"},
        {"BothAddressAndCommand", "plugins:\n  - name: erp\n    address: h:1\n    command: [a]\n",
         "line 11: plugins[0].command: set only one of address (line 10) and command"},
        {"CommandScalar", "plugins:\n  - name: erp\n    command: /usr/bin/erp --fast\n",
         "line 10: plugins[0].command: must be a sequence of the program and its arguments, e.g. "
         "[\"/usr/bin/python3\", \"plugin.py\"], got \"/usr/bin/erp --fast\""},
        {"CommandEmpty", "plugins:\n  - name: erp\n    command: []\n",
         "line 10: plugins[0].command: must list the program and its arguments"},
        {"CommandNull", "plugins:\n  - name: erp\n    command:\n",
         "line 10: plugins[0].command: must list the program and its arguments"},
        {"CommandMapping", "plugins:\n  - name: erp\n    command: {argv: a}\n",
         "line 10: plugins[0].command: must be a sequence, got a mapping"},
        {"CommandEmptyProgram", "plugins:\n  - name: erp\n    command: [\"\", x]\n",
         "line 10: plugins[0].command[0]: the program must not be empty"},
        {"CommandNestedArgument",
         "plugins:\n  - name: erp\n    command:\n      - /bin/erp\n      - [a, b]\n",
         "line 12: plugins[0].command[1]: must be a single value, got a sequence"},
        {"CommandNullArgument", "plugins:\n  - name: erp\n    command: [/bin/erp, ~]\n",
         "line 10: plugins[0].command[1]: missing value"},
        {"AddressWithoutPort", "plugins:\n  - name: erp\n    address: erp\n",
         "line 10: plugins[0].address: must be \"unix:/path\" or host:port, got \"erp\""},
        {"AddressPortZero", "plugins:\n  - name: erp\n    address: localhost:0\n",
         "line 10: plugins[0].address: port must be a number from 1 to 65535, got "
         "\"localhost:0\""},
        {"AddressNoHost", "plugins:\n  - name: erp\n    address: \":50051\"\n",
         "line 10: plugins[0].address: host must not be empty (use 0.0.0.0 for all), got "
         "\":50051\""},
        {"AddressUnixWithoutPath", "plugins:\n  - name: erp\n    address: \"unix:\"\n",
         "line 10: plugins[0].address: \"unix:\" must be followed by a socket path"},
        {"AddressEmpty", "plugins:\n  - name: erp\n    address: \"\"\n",
         "line 10: plugins[0].address: must be \"unix:/path\" or host:port, got \"\""},
        {"AddressList", "plugins:\n  - name: erp\n    address: [h:1]\n",
         "line 10: plugins[0].address: must be a single value, got a sequence"},

        // env, and keys that only apply to launched plugins.
        {"EnvSequence", PIMGATE_PLUGIN "    env: [A=1]\n",
         "line 11: plugins[0].env: must be a mapping of NAME: value, got a sequence"},
        {"EnvBadName", PIMGATE_PLUGIN "    env:\n      OK: 1\n      1BAD: 2\n",
         "line 13: plugins[0].env.1BAD: variable names must be letters, digits and _, not "
         "starting with a digit"},
        {"EnvNameWithEquals", PIMGATE_PLUGIN "    env: {\"A=B\": c}\n",
         "line 11: plugins[0].env.A=B: variable names must be letters, digits and _, not "
         "starting with a digit"},
        {"EnvDuplicate", PIMGATE_PLUGIN "    env:\n      A: 1\n      A: 2\n",
         "line 13: plugins[0].env.A: duplicate key (first at line 12)"},
        {"EnvNullValue", PIMGATE_PLUGIN "    env:\n      A:\n",
         "line 12: plugins[0].env.A: missing value"},
        {"EnvNestedValue", PIMGATE_PLUGIN "    env: {A: [1, 2]}\n",
         "line 11: plugins[0].env.A: must be a single value, got a sequence"},
        {"EnvNul", PIMGATE_PLUGIN "    env: {A: \"a\\0b\"}\n",
         "line 11: plugins[0].env.A: must not contain NUL"},
        {"EnvOnAddressPlugin", "plugins:\n  - name: erp\n    address: h:1\n    env: {A: b}\n",
         "line 11: plugins[0].env: only applies to plugins pimgate launches (with a command), "
         "not to an address"},
        {"LaunchKeysBeforeAddress",
         "plugins:\n  - name: erp\n    restart: {}\n    stop_timeout: 1s\n    address: h:1\n",
         "line 10: plugins[0].restart: only applies to plugins pimgate launches (with a command), "
         "not to an address"},
        {"StartTimeoutOnAddressPlugin",
         "plugins:\n  - name: erp\n    address: h:1\n    start_timeout: 5s\n",
         "line 11: plugins[0].start_timeout: only applies to plugins pimgate launches (with a "
         "command), not to an address"},

        // events and sources.
        {"EventsEmpty", PIMGATE_PLUGIN "    events: []\n",
         "line 11: plugins[0].events: must list at least one event type (leave the key out for "
         "all)"},
        {"EventsNull", PIMGATE_PLUGIN "    events:\n",
         "line 11: plugins[0].events: must list at least one event type (leave the key out for "
         "all)"},
        {"EventsScalar", PIMGATE_PLUGIN "    events: product.*\n",
         "line 11: plugins[0].events: must be a sequence, got \"product.*\""},
        {"EventsUpperCase", PIMGATE_PLUGIN "    events: [\"product.*\", \"Product.*\"]\n",
         "line 11: plugins[0].events[1]: must use only a-z, 0-9, _, . and *, got \"Product.*\""},
        {"EventsBadCharacters", PIMGATE_PLUGIN "    events:\n      - product.*\n      - product?\n",
         "line 13: plugins[0].events[1]: must use only a-z, 0-9, _, . and *, got \"product?\""},
        {"EventsSpace", PIMGATE_PLUGIN "    events: [\"product created\"]\n",
         "line 11: plugins[0].events[0]: must use only a-z, 0-9, _, . and *, got \"product "
         "created\""},
        {"EventsEmptyGlob", PIMGATE_PLUGIN "    events: [\"\"]\n",
         "line 11: plugins[0].events[0]: must not be empty"},
        {"SourcesEmpty", PIMGATE_PLUGIN "    sources: []\n",
         "line 11: plugins[0].sources: must list at least one source (leave the key out for all)"},
        {"SourcesBadElement", PIMGATE_PLUGIN "    sources: [{name: akeneo}]\n",
         "line 11: plugins[0].sources[0]: must be a single value, got a mapping"},
        {"UnknownSource", PIMGATE_PLUGIN "    sources: [akeneo, pim]\n",
         "line 11: plugins[0].sources[1]: unknown source \"pim\"; configured sources are akeneo"},
        {"UnknownSourceInSecondPlugin",
         PIMGATE_PLUGIN "    sources: [akeneo]\n  - name: b\n    command: [b]\n"
                        "    sources:\n      - nope\n",
         "line 15: plugins[1].sources[0]: unknown source \"nope\"; configured sources are akeneo"},

        // Scalars.
        {"SkipStaleNotBool", PIMGATE_PLUGIN "    skip_stale: yes\n",
         "line 11: plugins[0].skip_stale: must be true or false, got \"yes\""},
        {"HydrateNotBool", PIMGATE_PLUGIN "    hydrate: 1\n",
         "line 11: plugins[0].hydrate: must be true or false, got \"1\""},
        {"MaxInFlightZero", PIMGATE_PLUGIN "    max_in_flight: 0\n",
         "line 11: plugins[0].max_in_flight: must be at least 1, got 0"},
        {"MaxInFlightTooLarge", PIMGATE_PLUGIN "    max_in_flight: 10001\n",
         "line 11: plugins[0].max_in_flight: must be at most 10000, got 10001"},
        {"MaxInFlightNotInteger", PIMGATE_PLUGIN "    max_in_flight: many\n",
         "line 11: plugins[0].max_in_flight: must be an integer, got \"many\""},
        {"AckTimeoutZero", PIMGATE_PLUGIN "    ack_timeout: 0s\n",
         "line 11: plugins[0].ack_timeout: must be greater than zero"},
        {"StartTimeoutBareNumber", PIMGATE_PLUGIN "    start_timeout: 30\n",
         "line 11: plugins[0].start_timeout: invalid duration \"30\": missing unit; write e.g. "
         "\"30s\" or \"30ms\""},
        {"StopTimeoutBadUnit", PIMGATE_PLUGIN "    stop_timeout: 10sec\n",
         "line 11: plugins[0].stop_timeout: invalid duration \"10sec\": unknown unit \"sec\" (use "
         "ms, s, m, h or d)"},

        // retry.
        {"RetryNotMapping", PIMGATE_PLUGIN "    retry: 3\n",
         "line 11: plugins[0].retry: must be a mapping, got \"3\""},
        {"RetryUnknownKey", PIMGATE_PLUGIN "    retry:\n      max_attempts: 3\n      backoff: 1s\n",
         "line 13: plugins[0].retry.backoff: unknown key"},
        {"RetryMaxAttemptsZero", PIMGATE_PLUGIN "    retry: {max_attempts: 0}\n",
         "line 11: plugins[0].retry.max_attempts: must be at least 1, got 0"},
        {"RetryMaxAttemptsTooLarge", PIMGATE_PLUGIN "    retry: {max_attempts: 4294967296}\n",
         "line 11: plugins[0].retry.max_attempts: must be at most 4294967295"},
        {"RetryInitialBackoffZero", PIMGATE_PLUGIN "    retry: {initial_backoff: 0ms}\n",
         "line 11: plugins[0].retry.initial_backoff: must be greater than zero"},
        {"RetryMultiplierBelowOne", PIMGATE_PLUGIN "    retry: {multiplier: 0.5}\n",
         "line 11: plugins[0].retry.multiplier: must be at least 1, got 0.5"},
        {"RetryMultiplierNotNumber", PIMGATE_PLUGIN "    retry: {multiplier: double}\n",
         "line 11: plugins[0].retry.multiplier: must be a number, got \"double\""},
        {"RetryMultiplierInfinite", PIMGATE_PLUGIN "    retry: {multiplier: inf}\n",
         "line 11: plugins[0].retry.multiplier: must be a number, got \"inf\""},
        {"RetryMultiplierNan", PIMGATE_PLUGIN "    retry: {multiplier: nan}\n",
         "line 11: plugins[0].retry.multiplier: must be a number, got \"nan\""},
        {"RetryJitterAboveOne", PIMGATE_PLUGIN "    retry: {jitter: 1.5}\n",
         "line 11: plugins[0].retry.jitter: must be from 0 to 1, got 1.5"},
        {"RetryJitterNegative", PIMGATE_PLUGIN "    retry: {jitter: -0.1}\n",
         "line 11: plugins[0].retry.jitter: must be from 0 to 1, got -0.1"},
        {"RetryJitterPercent", PIMGATE_PLUGIN "    retry: {jitter: 20%}\n",
         "line 11: plugins[0].retry.jitter: must be a number, got \"20%\""},
        {"RetryMaxBelowInitial",
         PIMGATE_PLUGIN "    retry:\n      initial_backoff: 10s\n      max_backoff: 5s\n",
         "line 13: plugins[0].retry.max_backoff: must be at least initial_backoff (10s), got 5s"},
        {"RetryInitialAboveMax",
         PIMGATE_PLUGIN "    retry:\n      max_backoff: 1m\n      initial_backoff: 1m30s\n",
         "line 13: plugins[0].retry.initial_backoff: must be at most max_backoff (1m), got "
         "1m30s"},
        {"RetryInitialAboveDefaultMax", PIMGATE_PLUGIN "    retry: {initial_backoff: 10m}\n",
         "line 11: plugins[0].retry.initial_backoff: must be at most max_backoff (5m), got 10m"},
        {"RetryMaxBelowDefaultInitial", PIMGATE_PLUGIN "    retry: {max_backoff: 500ms}\n",
         "line 11: plugins[0].retry.max_backoff: must be at least initial_backoff (1s), got "
         "500ms"},

        // restart.
        {"RestartUnknownKey", PIMGATE_PLUGIN "    restart: {max_attempts: 3}\n",
         "line 11: plugins[0].restart.max_attempts: unknown key"},
        {"RestartResetAfterZero", PIMGATE_PLUGIN "    restart: {reset_after: 0s}\n",
         "line 11: plugins[0].restart.reset_after: must be greater than zero"},
        {"RetryBothOnOneLine", PIMGATE_PLUGIN "    retry: {max_backoff: 1s, initial_backoff: 2s}\n",
         "line 11: plugins[0].retry.initial_backoff: must be at most max_backoff (1s), got 2s"},
        {"RestartMaxBelowInitial",
         PIMGATE_PLUGIN "    restart: {initial_backoff: 1d1h1m1s1ms, max_backoff: 1h}\n",
         "line 11: plugins[0].restart.max_backoff: must be at least initial_backoff (1d1h1m1s1ms), "
         "got 1h"},

        // authors and author_types.
        {"AuthorsSequence", PIMGATE_PLUGIN "    authors: [alice]\n",
         "line 11: plugins[0].authors: must be a mapping, got a sequence"},
        {"AuthorsUnknownKey", PIMGATE_PLUGIN "    authors:\n      includes: [alice]\n",
         "line 12: plugins[0].authors.includes: unknown key; did you mean include?"},
        {"AuthorsIncludeScalar", PIMGATE_PLUGIN "    authors: {include: alice}\n",
         "line 11: plugins[0].authors.include: must be a sequence, got \"alice\""},
        {"AuthorsEmptyName", PIMGATE_PLUGIN "    authors: {exclude: [a, \"\"]}\n",
         "line 11: plugins[0].authors.exclude[1]: must not be empty"},
        {"AuthorTypesNested",
         PIMGATE_PLUGIN "    author_types:\n      include:\n        - ui\n        - {a: b}\n",
         "line 14: plugins[0].author_types.include[1]: must be a single value, got a mapping"},

        // data.
        {"DataMapping", PIMGATE_PLUGIN "    data: {path: family, in: [shoes]}\n",
         "line 11: plugins[0].data: must be a sequence, got a mapping"},
        {"DataElementScalar", PIMGATE_PLUGIN "    data: [family]\n",
         "line 11: plugins[0].data[0]: must be a mapping, got \"family\""},
        {"DataMissingPath", PIMGATE_PLUGIN "    data:\n      - in: [shoes]\n",
         "line 12: plugins[0].data[0].path: required"},
        {"DataNeitherInNorNotIn", PIMGATE_PLUGIN "    data:\n      - path: family\n",
         "line 12: plugins[0].data[0]: needs one of in or not_in"},
        {"DataBothInAndNotIn",
         PIMGATE_PLUGIN "    data:\n      - path: family\n        in: [shoes]\n"
                        "        not_in: [boots]\n",
         "line 14: plugins[0].data[0].not_in: set only one of in (line 13) and not_in"},
        {"DataBothNotInAndIn",
         PIMGATE_PLUGIN "    data:\n      - {path: a, in: [x]}\n      - {not_in: [y], in: [z], "
                        "path: b}\n",
         "line 13: plugins[0].data[1].in: set only one of not_in (line 13) and in"},
        {"DataUnknownKey", PIMGATE_PLUGIN "    data:\n      - {path: family, values: [shoes]}\n",
         "line 12: plugins[0].data[0].values: unknown key"},
        {"DataEmptyValues", PIMGATE_PLUGIN "    data:\n      - {path: family, in: []}\n",
         "line 12: plugins[0].data[0].in: must list at least one value"},
        {"DataValuesScalar", PIMGATE_PLUGIN "    data:\n      - {path: family, not_in: shoes}\n",
         "line 12: plugins[0].data[0].not_in: must be a sequence, got \"shoes\""},
        {"DataNestedValue",
         PIMGATE_PLUGIN "    data:\n      - path: family\n        in:\n          - shoes\n"
                        "          - [boots]\n",
         "line 15: plugins[0].data[0].in[1]: must be a single value, got a sequence"},
        {"DataEmptyPath", PIMGATE_PLUGIN "    data:\n      - {path: \"\", in: [x]}\n",
         "line 12: plugins[0].data[0].path: must not be empty"},
        {"DataPathDoubleDot",
         PIMGATE_PLUGIN "    data:\n      - {path: product..family, in: [x]}\n",
         "line 12: plugins[0].data[0].path: must be keys joined by single dots, e.g. "
         "\"product.family\", got \"product..family\""},
        {"DataPathLeadingDot", PIMGATE_PLUGIN "    data:\n      - {path: .family, in: [x]}\n",
         "line 12: plugins[0].data[0].path: must be keys joined by single dots, e.g. "
         "\"product.family\", got \".family\""},

        // runtime.
        {"RuntimeSequence", "runtime: [/run]\n",
         "line 8: runtime: must be a mapping, got a sequence"},
        {"RuntimeUnknownKey", "runtime:\n  runtime_dir: /run/pimgate\n",
         "line 9: runtime.runtime_dir: unknown key"},
        {"RuntimeDirEmpty", "runtime:\n  dir: \"\"\n", "line 9: runtime.dir: must not be empty"},
        {"RuntimeDirNull", "runtime:\n  dir:\n", "line 9: runtime.dir: missing value"},
    }),
    [](const ::testing::TestParamInfo<ErrorCase>& info) { return std::string(info.param.name); });

#undef PIMGATE_PLUGIN

// ---- admin ------------------------------------------------------------------------------------

TEST_F(ConfigTest, AdminDefaults) {
  absl::StatusOr<Config> config = LoadConfigString(kMinimal);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_TRUE(config->admin.enabled);
  EXPECT_EQ(config->admin.listen.text(), "127.0.0.1:7070");
  EXPECT_FALSE(config->admin.token.has_value());
  EXPECT_FALSE(config->admin.tls.has_value());
  EXPECT_FALSE(config->admin.allow_insecure_remote);
}

TEST_F(ConfigTest, EveryAdminKeySet) {
  const std::string cert = WriteFile("admin-cert.pem", "cert");
  const std::string key = WriteFile("admin-key.pem", "key");
  ScopedEnv env("PIMGATE_TEST_ADMIN_TOKEN", "t0ken-from-env");
  absl::StatusOr<Config> config = LoadConfigString(
      absl::StrCat(kMinimal, "admin:\n  enabled: false\n  listen: \"0.0.0.0:7443\"\n",
                   "  token: ${PIMGATE_TEST_ADMIN_TOKEN}\n  tls:\n    cert_file: ", cert,
                   "\n    key_file: ", key, "\n  allow_insecure_remote: true\n"));
  ASSERT_TRUE(config.ok()) << config.status();
  const AdminConfig& admin = config->admin;
  EXPECT_FALSE(admin.enabled);
  EXPECT_EQ(admin.listen.text(), "0.0.0.0:7443");
  ASSERT_TRUE(admin.token.has_value());
  EXPECT_EQ(admin.token->value, "t0ken-from-env");
  EXPECT_EQ(admin.token->Describe(), "env:PIMGATE_TEST_ADMIN_TOKEN");
  ASSERT_TRUE(admin.tls.has_value());
  EXPECT_EQ(admin.tls->cert_file, cert);
  EXPECT_EQ(admin.tls->key_file, key);
  EXPECT_TRUE(admin.allow_insecure_remote);
}

TEST_F(ConfigTest, AdminTokenFromFileOrInline) {
  const std::string file = WriteFile("admin.token", "t0ken-from-file\n");
  absl::StatusOr<Config> config =
      LoadConfigString(absl::StrCat(kMinimal, "admin:\n  token: file:", file, "\n"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->admin.token->value, "t0ken-from-file");
  EXPECT_EQ(config->admin.token->Describe(), "file:" + file);
  config = LoadConfigString(absl::StrCat(kMinimal, "admin:\n  token: inline-t0ken\n"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->admin.token->value, "inline-t0ken");
  EXPECT_EQ(
      ErrorOf(absl::StrCat(kMinimal, "admin:\n  token: ${PIMGATE_TEST_UNSET_TOKEN}\n")).message(),
      "line 9: admin.token: environment variable PIMGATE_TEST_UNSET_TOKEN is not set");
}

TEST_F(ConfigTest, AdminLocalListenersNeedNoTokenNorTls) {
  for (const char* listen : {"127.0.0.1:0", "127.0.0.2:7070", "localhost:7070", "[::1]:7070",
                             "unix:/run/pimgate/admin.sock", "unix:///run/pimgate/admin.sock"}) {
    absl::StatusOr<Config> config =
        LoadConfigString(absl::StrCat(kMinimal, "admin:\n  listen: \"", listen, "\"\n"));
    ASSERT_TRUE(config.ok()) << listen << ": " << config.status();
    EXPECT_EQ(config->admin.listen.text(), listen);
  }
}

TEST_F(ConfigTest, ConsoleIsOffByDefaultOnLoopback) {
  absl::StatusOr<Config> config = LoadConfigString(kMinimal);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_FALSE(config->console.enabled);
  EXPECT_EQ(config->console.listen.ToString(), "127.0.0.1:7080");
  config = LoadConfigString(
      absl::StrCat(kMinimal, "console:\n  enabled: true\n  listen: \"[::1]:0\"\n"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_TRUE(config->console.enabled);
  EXPECT_EQ(config->console.listen.text(), "[::1]:0");
  // A unix socket is for the admin API only: the console is HTTP over TCP.
  EXPECT_FALSE(
      LoadConfigString(absl::StrCat(kMinimal, "console:\n  listen: unix:/tmp/c.sock\n")).ok());
}

// As for admin.listen, with the admin token the console checks: no opt-out, and the console
// needs the admin API it forwards to. admin: may come before or after console:.
TEST_F(ConfigTest, ConsoleRemoteListenerNeedsTheAdminToken) {
  for (const char* listen : {"0.0.0.0:7080", "10.1.2.3:7080", "[::]:7080"}) {
    EXPECT_EQ(
        ErrorOf(absl::StrCat(kMinimal, "console:\n  enabled: true\n  listen: \"", listen, "\"\n"))
            .message(),
        absl::StrCat("line 10: console.listen: \"", listen,
                     "\" is reachable from other machines: set admin.token (the console "
                     "checks the admin API's token)"));
  }
  // Disabled, it is not checked.
  EXPECT_TRUE(LoadConfigString(absl::StrCat(kMinimal, "console:\n  listen: 0.0.0.0:7080\n")).ok());
  EXPECT_TRUE(LoadConfigString(absl::StrCat(kMinimal,
                                            "console:\n  enabled: true\n  listen: 0.0.0.0:7080\n"
                                            "admin:\n  token: t0ken\n"))
                  .ok());
  EXPECT_EQ(ErrorOf(absl::StrCat(kMinimal, "admin:\n  enabled: false\nconsole:\n  enabled: true\n"))
                .message(),
            "line 10: console.enabled: the console serves the admin API, which admin.enabled: "
            "false turns off: set admin.enabled: true, or console.enabled: false");
}

TEST_F(ConfigTest, AdminRemoteListenerNeedsTokenAndTls) {
  const std::string cert = WriteFile("admin-cert.pem", "cert");
  const std::string key = WriteFile("admin-key.pem", "key");
  const std::string tls = absl::StrCat("  tls: {cert_file: ", cert, ", key_file: ", key, "}\n");
  for (const char* listen : {"0.0.0.0:7070", "10.1.2.3:7070", "[::]:7070"}) {
    EXPECT_EQ(ErrorOf(absl::StrCat(kMinimal, "admin:\n  listen: \"", listen, "\"\n")).message(),
              absl::StrCat("line 9: admin.listen: \"", listen,
                           "\" is reachable from other machines: set admin.token and admin.tls, "
                           "or admin.allow_insecure_remote: true"));
  }
  // A name that starts like a loopback address is not one: listeners take IP addresses only.
  EXPECT_EQ(ErrorOf(absl::StrCat(kMinimal, "admin:\n  listen: \"127.evil.example:1\"\n")).message(),
            "line 9: admin.listen: host must be an IP address, localhost or * (a listener binds an "
            "address of this machine: host names are not looked up), got \"127.evil.example:1\"");
  EXPECT_EQ(
      ErrorOf(absl::StrCat(kMinimal, "admin:\n  token: t\n  listen: 0.0.0.0:7070\n")).message(),
      "line 10: admin.listen: \"0.0.0.0:7070\" is reachable from other machines: set "
      "admin.tls, or admin.allow_insecure_remote: true");
  EXPECT_EQ(ErrorOf(absl::StrCat(kMinimal, "admin:\n  listen: 0.0.0.0:7070\n", tls)).message(),
            "line 9: admin.listen: \"0.0.0.0:7070\" is reachable from other machines: set "
            "admin.token, or admin.allow_insecure_remote: true");
  EXPECT_TRUE(
      LoadConfigString(absl::StrCat(kMinimal, "admin:\n  listen: 0.0.0.0:7070\n  token: t\n", tls))
          .ok());
  EXPECT_TRUE(LoadConfigString(absl::StrCat(kMinimal,
                                            "admin:\n  listen: 0.0.0.0:7070\n"
                                            "  allow_insecure_remote: true\n"))
                  .ok());
  // A disabled admin API listens nowhere.
  EXPECT_TRUE(
      LoadConfigString(absl::StrCat(kMinimal, "admin:\n  listen: 0.0.0.0:7070\n  enabled: false\n"))
          .ok());
}

TEST_F(ConfigTest, AdminListenRejectsMalformedAddresses) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"7070", "must be host:port, got \"7070\""},
      {"unix:", "\"unix:\" must be followed by a socket path"},
      {absl::StrCat("unix:/", std::string(120, 'x')),
       "socket path is 121 bytes, more than the 107 a unix socket address holds"},
      {"127.0.0.1:70000", "port must be a number from 0 to 65535, got \"127.0.0.1:70000\""},
  };
  for (const auto& [listen, problem] : cases) {
    EXPECT_EQ(ErrorOf(absl::StrCat(kMinimal, "admin:\n  listen: \"", listen, "\"\n")).message(),
              absl::StrCat("line 9: admin.listen: ", problem));
  }
  EXPECT_EQ(ErrorOf(absl::StrCat(kMinimal, "admin:\n  listne: 127.0.0.1:1\n")).message(),
            "line 9: admin.listne: unknown key; did you mean listen?");
  EXPECT_EQ(ErrorOf(absl::StrCat(kMinimal, "admin:\n  enabled: yes\n")).message(),
            "line 9: admin.enabled: must be true or false, got \"yes\"");
}

TEST_F(ConfigTest, AdminTlsFilesMustExist) {
  const std::string cert = WriteFile("admin-cert.pem", "cert");
  const std::string missing = dir_ + "/missing-admin-key.pem";
  EXPECT_EQ(ErrorOf(absl::StrCat(kMinimal, "admin:\n  tls:\n    cert_file: ", cert,
                                 "\n    key_file: ", missing, "\n"))
                .message(),
            absl::StrCat("line 11: admin.tls.key_file: cannot read \"", missing,
                         "\": No such file or directory"));
  EXPECT_EQ(
      ErrorOf(absl::StrCat(kMinimal, "admin:\n  tls:\n    cert_file: ", cert, "\n")).message(),
      "line 9: admin.tls.key_file: required");
}

TEST_F(ConfigTest, AdminTokenNeverAppearsInErrors) {
  for (const std::string& yaml :
       {absl::StrCat(kMinimal, "admin:\n  token: ", kSecretValue, "\n  listen: 0.0.0.0:1\n"),
        absl::StrCat(kMinimal, "admin:\n  token: [", kSecretValue, "]\n"),
        absl::StrCat(kMinimal, "admin:\n  token: ", kSecretValue, "\n  bogus: 1\n")}) {
    absl::Status status = ErrorOf(yaml);
    ASSERT_FALSE(status.ok());
    EXPECT_THAT(std::string(status.message()), Not(HasSubstr(kSecretValue)));
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
  EXPECT_EQ(config.status().message(), "line 9: log.lvl: unknown key; did you mean level?");
}

// ---- Retention and metrics ------------------------------------------------------------------

TEST_F(ConfigTest, RetentionAndMetricsDefaults) {
  absl::StatusOr<Config> config = LoadConfigString(kMinimal);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->store.retention, seconds(7 * 24 * 3600));
  EXPECT_EQ(config->store.dead_letter_retention, seconds(30 * 24 * 3600));
  EXPECT_EQ(config->store.quarantine_retention, seconds(30 * 24 * 3600));
  EXPECT_EQ(config->store.retention_interval, milliseconds(60'000));
  EXPECT_TRUE(config->metrics.enabled);
  EXPECT_EQ(config->metrics.listen.text(), "127.0.0.1:9464");
}

TEST_F(ConfigTest, RetentionAndMetricsKeysSet) {
  absl::StatusOr<Config> config = LoadConfigString(R"(store:
  path: /var/lib/pimgate
  retention: 1d
  dead_letter_retention: 14d
  quarantine_retention: 2d12h
  retention_interval: 250ms
metrics:
  enabled: false
  listen: "[::1]:0"
sources:
  - name: akeneo
    kind: events_api
    path: /hooks/akeneo
    secret: s3cr3t-inline
)");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->store.retention, seconds(24 * 3600));
  EXPECT_EQ(config->store.dead_letter_retention, seconds(14 * 24 * 3600));
  EXPECT_EQ(config->store.quarantine_retention, seconds(60 * 3600));
  EXPECT_EQ(config->store.retention_interval, milliseconds(250));
  EXPECT_FALSE(config->metrics.enabled);
  EXPECT_EQ(config->metrics.listen.text(), "[::1]:0");
}

TEST_F(ConfigTest, RetentionAndMetricsErrorsNameTheKey) {
  const std::string store = "store:\n  path: /x\n";
  EXPECT_EQ(ErrorOf(store + "  dead_letter_retention: 0s\n").message(),
            "line 3: store.dead_letter_retention: must be greater than zero");
  EXPECT_EQ(ErrorOf(store + "  quarantine_retention: 1500ms\n").message(),
            "line 3: store.quarantine_retention: must be a whole number of seconds, got "
            "\"1500ms\"");
  EXPECT_THAT(std::string(ErrorOf(store + "  retention_interval: 10\n").message()),
              StartsWith("line 3: store.retention_interval: invalid duration \"10\""));
  EXPECT_THAT(std::string(ErrorOf(absl::StrCat(kMinimal, "metrics:\n  listen: 9464\n")).message()),
              StartsWith("line 9: metrics.listen: must be host:port"));
  EXPECT_THAT(std::string(ErrorOf(absl::StrCat(kMinimal, "metrics:\n  enabled: yes\n")).message()),
              StartsWith("line 9: metrics.enabled: must be true or false"));
  EXPECT_EQ(ErrorOf(absl::StrCat(kMinimal, "metrics:\n  path: /metrics\n")).message(),
            "line 9: metrics.path: unknown key");
}

// ---- sources[].rest and sources[].reconcile ---------------------------------------------------

// kMinimal's source with a `rest` section (lines 8-13) followed by `extra` (line 14 on).
std::string WithRest(const std::string& extra = "",
                     const std::string& base_url = "https://pim.example.com") {
  return absl::StrCat(kMinimal, "    rest:\n      base_url: ", base_url,
                      "\n      client_id: client-1\n      secret: rest-secret-value\n"
                      "      username: api-user\n      password: rest-password-value\n",
                      extra);
}

TEST_F(ConfigTest, RestDefaultsAndReconcileDefaults) {
  absl::StatusOr<Config> config = LoadConfigString(WithRest());
  ASSERT_TRUE(config.ok()) << config.status();
  const SourceConfig& source = config->sources[0];
  ASSERT_TRUE(source.rest.has_value());
  const RestConfig& rest = *source.rest;
  EXPECT_EQ(rest.base_url.spec(), "https://pim.example.com");
  EXPECT_EQ(rest.client_id, "client-1");
  EXPECT_EQ(rest.secret.value, "rest-secret-value");
  EXPECT_EQ(rest.secret.origin, "inline");
  EXPECT_EQ(rest.username, "api-user");
  EXPECT_EQ(rest.password.value, "rest-password-value");
  EXPECT_EQ(rest.max_concurrency, 4u);
  EXPECT_EQ(rest.timeout, seconds(30));
  EXPECT_EQ(rest.max_attempts, 6u);
  EXPECT_EQ(rest.initial_backoff, milliseconds(500));
  EXPECT_EQ(rest.max_backoff, seconds(30));
  EXPECT_TRUE(rest.ca_file.empty());
  EXPECT_FALSE(rest.insecure_skip_verify);
  EXPECT_FALSE(rest.allow_insecure_http);
  EXPECT_FALSE(rest.timezone.has_value());  // learned from the PIM's `updated` values
  // `rest` without `reconcile`: reconciliation runs with the defaults.
  ASSERT_TRUE(source.reconcile.has_value());
  EXPECT_EQ(source.reconcile->interval, std::chrono::minutes(15));
  EXPECT_EQ(source.reconcile->overlap, std::chrono::minutes(5));
  EXPECT_FALSE(source.reconcile->since_us.has_value());
  EXPECT_EQ(source.reconcile->retry_after, seconds(60));
  EXPECT_TRUE(source.reconcile->products);
  EXPECT_TRUE(source.reconcile->product_models);
  // The catalogue structure kinds are opt-in (backward compatible: no new events by default).
  EXPECT_FALSE(source.reconcile->families);
  EXPECT_FALSE(source.reconcile->categories);
  EXPECT_FALSE(source.reconcile->attributes);
  EXPECT_FALSE(source.reconcile->attribute_groups);
  EXPECT_FALSE(source.reconcile->reference_entity_records);
  EXPECT_FALSE(source.reconcile->assets);
}

TEST_F(ConfigTest, NoRestMeansNoReconcile) {
  absl::StatusOr<Config> config = LoadConfigString(kMinimal);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_FALSE(config->sources[0].rest.has_value());
  EXPECT_FALSE(config->sources[0].reconcile.has_value());
}

TEST_F(ConfigTest, EveryRestAndReconcileKeySet) {
  const std::string ca = WriteFile("pim-ca.pem", "ca");
  const std::string password_file = WriteFile("pim-password", "from-file\n");
  ScopedEnv env("PIMGATE_TEST_REST_SECRET", "from-env");
  absl::StatusOr<Config> config = LoadConfigString(absl::StrCat(kMinimal, R"(    rest:
      base_url: HTTPS://PIM.Example.com:8443/
      client_id: client-1
      secret: ${PIMGATE_TEST_REST_SECRET}
      username: api-user
      password: file:)",
                                                                password_file, R"(
      max_concurrency: 2
      timeout: 10s
      max_attempts: 3
      initial_backoff: 100ms
      max_backoff: 2s
      ca_file: )",
                                                                ca, R"(
    reconcile:
      interval: 0s
      overlap: 0s
      since: "2026-01-02T03:04:05+01:00"
      retry_after: 30s
      products: true
      product_models: false
      families: true
      categories: true
      attributes: false
      attribute_groups: true
      reference_entity_records: true
      assets: false
)"));
  ASSERT_TRUE(config.ok()) << config.status();
  const RestConfig& rest = *config->sources[0].rest;
  EXPECT_EQ(rest.base_url.spec(), "https://pim.example.com:8443");
  EXPECT_EQ(rest.secret.value, "from-env");
  EXPECT_EQ(rest.secret.origin, "env:PIMGATE_TEST_REST_SECRET");
  EXPECT_EQ(rest.password.value, "from-file");
  EXPECT_EQ(rest.password.origin, "file:" + password_file);
  EXPECT_EQ(rest.max_concurrency, 2u);
  EXPECT_EQ(rest.timeout, seconds(10));
  EXPECT_EQ(rest.max_attempts, 3u);
  EXPECT_EQ(rest.initial_backoff, milliseconds(100));
  EXPECT_EQ(rest.max_backoff, seconds(2));
  EXPECT_EQ(rest.ca_file, ca);
  const ReconcileConfig& reconcile = *config->sources[0].reconcile;
  EXPECT_EQ(reconcile.interval, milliseconds(0));
  EXPECT_EQ(reconcile.overlap, milliseconds(0));
  // 2026-01-02T02:04:05Z.
  EXPECT_EQ(reconcile.since_us, int64_t{1767319445} * 1'000'000);
  EXPECT_EQ(reconcile.retry_after, seconds(30));
  EXPECT_TRUE(reconcile.products);
  EXPECT_FALSE(reconcile.product_models);
  EXPECT_TRUE(reconcile.families);
  EXPECT_TRUE(reconcile.categories);
  EXPECT_FALSE(reconcile.attributes);
  EXPECT_TRUE(reconcile.attribute_groups);
  EXPECT_TRUE(reconcile.reference_entity_records);
  EXPECT_FALSE(reconcile.assets);
}

TEST_F(ConfigTest, RestOverPlainHttpNeedsOptIn) {
  EXPECT_EQ(ErrorOf(WithRest("", "http://127.0.0.1:8080")).message(),
            "line 9: sources[0].rest.base_url: http:// would send the PIM credentials in clear; "
            "use https://, or set allow_insecure_http: true (tests, a PIM on this host)");
  absl::StatusOr<Config> config =
      LoadConfigString(WithRest("      allow_insecure_http: true\n", "http://127.0.0.1:8080"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->sources[0].rest->base_url.spec(), "http://127.0.0.1:8080");
  EXPECT_TRUE(config->sources[0].rest->allow_insecure_http);
  for (const char* zone : {"-05:00", "+05:30", "America/New_York", "UTC"}) {
    config = LoadConfigString(WithRest(absl::StrCat("      timezone: \"", zone, "\"\n")));
    ASSERT_TRUE(config.ok()) << zone << ": " << config.status();
    ASSERT_TRUE(config->sources[0].rest->timezone.has_value());
    EXPECT_EQ(config->sources[0].rest->timezone->name, zone);
  }
  config = LoadConfigString(WithRest("      timezone: -05:00\n"));  // unquoted works too
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->sources[0].rest->timezone->name, "-05:00");
  config = LoadConfigString(WithRest("      insecure_skip_verify: true\n", "https://[::1]:8443"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->sources[0].rest->base_url.spec(), "https://[::1]:8443");
  EXPECT_TRUE(config->sources[0].rest->insecure_skip_verify);
}

TEST_F(ConfigTest, RestBaseUrlErrors) {
  const std::string prefix = "line 9: sources[0].rest.base_url: ";
  EXPECT_EQ(ErrorOf(WithRest("", "pim.example.com")).message(),
            prefix +
                "must start with https:// (http:// only with allow_insecure_http: true), "
                "got \"pim.example.com\"");
  EXPECT_EQ(ErrorOf(WithRest("", "ftp://pim.example.com")).message(),
            prefix +
                "must start with https:// (http:// only with allow_insecure_http: true), "
                "got \"ftp://pim.example.com\"");
  EXPECT_EQ(ErrorOf(WithRest("", "https://pim.example.com/api")).message(),
            prefix +
                "must be scheme, host and optional port only, e.g. "
                "\"https://pim.example.com\" (no path), got \"https://pim.example.com/api\"");
  EXPECT_EQ(ErrorOf(WithRest("", "https://pim.example.com?x=1")).message(),
            prefix +
                "must be scheme, host and optional port only, e.g. "
                "\"https://pim.example.com\" (no path), got \"https://pim.example.com?x=1\"");
  EXPECT_EQ(ErrorOf(WithRest("", "https://user:pw@pim.example.com")).message(),
            prefix +
                "must not contain user info; credentials go in client_id, secret, username "
                "and password");
  EXPECT_EQ(ErrorOf(WithRest("", "https://pim.example.com:0")).message(),
            prefix + "port must be a number from 1 to 65535, got \"https://pim.example.com:0\"");
  EXPECT_EQ(
      ErrorOf(WithRest("", "https://pim.example.com:99999")).message(),
      prefix + "port must be a number from 1 to 65535, got \"https://pim.example.com:99999\"");
  EXPECT_EQ(ErrorOf(WithRest("", "https://:443")).message(),
            prefix + "has no host, got \"https://:443\"");
  EXPECT_EQ(ErrorOf(WithRest("", "https://pim example.com")).message(),
            prefix +
                "has an invalid host name (IPv6 hosts go in brackets), got "
                "\"https://pim example.com\"");
  EXPECT_EQ(ErrorOf(WithRest("", "https://[::1")).message(),
            prefix + "has an unterminated or empty [ipv6] host, got \"https://[::1\"");
}

TEST_F(ConfigTest, RestKeyErrors) {
  const std::string prefix = "sources[0].rest.";
  EXPECT_EQ(ErrorOf(WithRest("      max_concurrency: 5\n")).message(),
            "line 14: " + prefix + "max_concurrency: must be at most 4, got 5");
  EXPECT_EQ(ErrorOf(WithRest("      max_concurrency: 0\n")).message(),
            "line 14: " + prefix + "max_concurrency: must be at least 1, got 0");
  EXPECT_EQ(ErrorOf(WithRest("      max_attempts: 0\n")).message(),
            "line 14: " + prefix + "max_attempts: must be at least 1, got 0");
  EXPECT_EQ(ErrorOf(WithRest("      timeout: 0s\n")).message(),
            "line 14: " + prefix + "timeout: must be greater than zero");
  EXPECT_EQ(ErrorOf(WithRest("      initial_backoff: 1m\n")).message(),
            "line 14: " + prefix + "initial_backoff: must be at most max_backoff (30s), got 1m");
  EXPECT_EQ(ErrorOf(WithRest("      initial_backoff: 2s\n      max_backoff: 1s\n")).message(),
            "line 15: " + prefix + "max_backoff: must be at least initial_backoff (2s), got 1s");
  EXPECT_EQ(ErrorOf(WithRest("      insecure_skip_verify: maybe\n")).message(),
            "line 14: " + prefix + "insecure_skip_verify: must be true or false, got \"maybe\"");
  EXPECT_EQ(ErrorOf(WithRest("      base: x\n")).message(),
            "line 14: " + prefix + "base: unknown key; did you mean base_url?");
  EXPECT_EQ(ErrorOf(WithRest("      timezone: -5\n")).message(),
            "line 14: " + prefix +
                "timezone: \"-5\" is not a UTC offset: write it as +HH:MM or -HH:MM, from -14:00 "
                "to +14:00 (e.g. \"-05:00\"), or use an IANA time zone name");
  EXPECT_THAT(std::string(ErrorOf(WithRest("      timezone: Europe/Atlantis\n")).message()),
              StartsWith("line 14: " + prefix +
                         "timezone: time zone \"Europe/Atlantis\" is not in the system's tz "
                         "database"));
  const std::string missing = dir_ + "/missing-ca.pem";
  EXPECT_EQ(ErrorOf(WithRest("      ca_file: " + missing + "\n")).message(),
            absl::StrCat("line 14: ", prefix, "ca_file: cannot read \"", missing,
                         "\": No such file or directory"));
  const std::string ca = WriteFile("ca.pem", "ca");
  EXPECT_EQ(
      ErrorOf(WithRest("      ca_file: " + ca + "\n      insecure_skip_verify: true\n")).message(),
      "line 14: " + prefix +
          "ca_file: has no effect with insecure_skip_verify: true; remove one of the two");
  // Required keys are reported at the `rest` mapping.
  EXPECT_EQ(ErrorOf(absl::StrCat(kMinimal, "    rest:\n      base_url: https://pim\n")).message(),
            "line 8: sources[0].rest.client_id: required");
  EXPECT_EQ(ErrorOf(absl::StrCat(kMinimal, "    rest: https://pim\n")).message(),
            "line 8: sources[0].rest: must be a mapping, got \"https://pim\"");
}

TEST_F(ConfigTest, RestSecretsNeverAppearInErrors) {
  ScopedEnv env("PIMGATE_TEST_EMPTY_REST", "");
  for (const std::string& yaml : {
           WithRest("      bogus: 1\n"),
           WithRest("      max_concurrency: 9\n"),
           WithRest("", "http://127.0.0.1"),
           absl::StrCat(kMinimal,
                        "    rest:\n      base_url: https://pim\n      client_id: c\n      "
                        "secret: [rest-secret-value]\n"),
           absl::StrCat(kMinimal,
                        "    rest:\n      base_url: https://pim\n      client_id: c\n      "
                        "secret: rest-secret-value\n      username: u\n      password: "
                        "${PIMGATE_TEST_EMPTY_REST}\n"),
       }) {
    absl::Status status = ErrorOf(yaml);
    ASSERT_FALSE(status.ok()) << yaml;
    EXPECT_THAT(std::string(status.message()), Not(HasSubstr("rest-secret-value")));
    EXPECT_THAT(std::string(status.message()), Not(HasSubstr("rest-password-value")));
  }
  EXPECT_EQ(ErrorOf(absl::StrCat(kMinimal,
                                 "    rest:\n      base_url: https://pim\n      client_id: c\n"
                                 "      secret: s\n      username: u\n      password: "
                                 "${PIMGATE_TEST_EMPTY_REST}\n"))
                .message(),
            "line 13: sources[0].rest.password: environment variable PIMGATE_TEST_EMPTY_REST is "
            "empty");
}

TEST_F(ConfigTest, ReconcileErrors) {
  EXPECT_EQ(ErrorOf(absl::StrCat(kMinimal, "    reconcile:\n      interval: 1h\n")).message(),
            "line 8: sources[0].reconcile: needs rest (the PIM's REST API) in the same source");
  const std::string prefix = "sources[0].reconcile.";
  EXPECT_EQ(ErrorOf(WithRest("    reconcile:\n      since: yesterday\n")).message(),
            "line 15: " + prefix +
                "since: must be an RFC 3339 time such as \"2026-01-01T00:00:00Z\", got "
                "\"yesterday\"");
  EXPECT_EQ(ErrorOf(WithRest("    reconcile:\n      since: 2026-01-01\n")).message(),
            "line 15: " + prefix +
                "since: must be an RFC 3339 time such as \"2026-01-01T00:00:00Z\", got "
                "\"2026-01-01\"");
  EXPECT_EQ(ErrorOf(WithRest("    reconcile:\n      retry_after: 0s\n")).message(),
            "line 15: " + prefix + "retry_after: must be greater than zero");
  EXPECT_THAT(std::string(ErrorOf(WithRest("    reconcile:\n      interval: 15\n")).message()),
              StartsWith("line 15: " + prefix + "interval: invalid duration \"15\""));
  EXPECT_EQ(ErrorOf(WithRest("    reconcile:\n      every: 1h\n")).message(),
            "line 15: " + prefix + "every: unknown key");
  EXPECT_EQ(
      ErrorOf(WithRest("    reconcile:\n      products: false\n      product_models: false\n"))
          .message(),
      "line 14: sources[0].reconcile: products, product_models, families, categories, attributes, "
      "attribute_groups, reference_entity_records and assets are all false: nothing to reconcile "
      "(set interval: 0 to reconcile only on demand)");
  EXPECT_EQ(ErrorOf(WithRest("    reconcile:\n      families: yes please\n")).code(),
            absl::StatusCode::kInvalidArgument);
  // Only the catalogue structure: products and product models may both be off then.
  {
    absl::StatusOr<Config> only_families = LoadConfigString(WithRest(
        "    reconcile:\n      products: false\n      product_models: false\n      families: "
        "true\n"));
    ASSERT_TRUE(only_families.ok()) << only_families.status();
    EXPECT_TRUE(only_families->sources[0].reconcile->families);
    EXPECT_FALSE(only_families->sources[0].reconcile->categories);
  }
  // Only assets (an Enterprise Edition kind) is enough too.
  {
    absl::StatusOr<Config> only_assets = LoadConfigString(WithRest(
        "    reconcile:\n      products: false\n      product_models: false\n      assets: "
        "true\n"));
    ASSERT_TRUE(only_assets.ok()) << only_assets.status();
    EXPECT_TRUE(only_assets->sources[0].reconcile->assets);
    EXPECT_FALSE(only_assets->sources[0].reconcile->reference_entity_records);
  }
  // `reconcile` written empty keeps the defaults.
  absl::StatusOr<Config> config = LoadConfigString(WithRest("    reconcile:\n"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->sources[0].reconcile->interval, std::chrono::minutes(15));
}

// ---- sources[].platform -----------------------------------------------------------------------

// An event_platform source with `rest` (lines 3-14) and then `platform_lines` (line 15 on).
std::string PlatformSource(const std::string& platform_lines, bool with_rest = true) {
  std::string yaml = R"(store:
  path: /var/lib/pimgate
sources:
  - name: akeneo-platform
    kind: event_platform
    path: /hooks/platform
    secret: platform-secret-value
)";
  if (with_rest) {
    absl::StrAppend(&yaml,
                    "    rest:\n      base_url: https://pim.example.com\n      client_id: "
                    "client-1\n      secret: rest-secret-value\n      username: api-user\n      "
                    "password: rest-password-value\n");
  }
  absl::StrAppend(&yaml, platform_lines);
  return yaml;
}

TEST_F(ConfigTest, PlatformDefaults) {
  absl::StatusOr<Config> config = LoadConfigString(PlatformSource("    platform: {}\n"));
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_TRUE(config->sources[0].platform.has_value());
  const PlatformConfig& platform = *config->sources[0].platform;
  EXPECT_EQ(platform.api_url.spec(), "https://event.prd.sdk.akeneo.cloud/api/v1");
  EXPECT_EQ(platform.subscriber_name, "pimgate akeneo-platform");
  EXPECT_TRUE(platform.technical_email.empty());
  EXPECT_FALSE(platform.auto_resume);
  EXPECT_EQ(platform.watch_interval, seconds(60));
  EXPECT_EQ(platform.timeout, seconds(30));
  EXPECT_EQ(platform.max_attempts, 6u);
  EXPECT_EQ(platform.initial_backoff, milliseconds(500));
  EXPECT_EQ(platform.max_backoff, seconds(30));
  EXPECT_TRUE(platform.proxy.empty());
  EXPECT_TRUE(platform.ca_file.empty());
  EXPECT_FALSE(platform.insecure_skip_verify);
  EXPECT_FALSE(platform.allow_insecure_http);
  // Without the key there is no management at all.
  config = LoadConfigString(PlatformSource(""));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_FALSE(config->sources[0].platform.has_value());
}

TEST_F(ConfigTest, EveryPlatformKeySet) {
  const std::string ca = WriteFile("platform-ca.pem", "ca");
  absl::StatusOr<Config> config = LoadConfigString(PlatformSource(absl::StrCat(R"(    platform:
      api_url: HTTPS://event.example.com:8443/api/v1/
      subscriber_name: pimgate production
      technical_email: ops@example.com
      auto_resume: true
      watch_interval: 15s
      timeout: 5s
      max_attempts: 3
      initial_backoff: 100ms
      max_backoff: 2s
      proxy: http://user:pw@proxy.example.com:3128
      ca_file: )",
                                                                               ca, "\n")));
  ASSERT_TRUE(config.ok()) << config.status();
  const PlatformConfig& platform = *config->sources[0].platform;
  EXPECT_EQ(platform.api_url.spec(), "https://event.example.com:8443/api/v1");
  EXPECT_EQ(platform.subscriber_name, "pimgate production");
  EXPECT_EQ(platform.technical_email, "ops@example.com");
  EXPECT_TRUE(platform.auto_resume);
  EXPECT_EQ(platform.watch_interval, seconds(15));
  EXPECT_EQ(platform.timeout, seconds(5));
  EXPECT_EQ(platform.max_attempts, 3u);
  EXPECT_EQ(platform.initial_backoff, milliseconds(100));
  EXPECT_EQ(platform.max_backoff, seconds(2));
  EXPECT_EQ(platform.proxy, "http://user:pw@proxy.example.com:3128");
  EXPECT_EQ(platform.ca_file, ca);
}

TEST_F(ConfigTest, PlatformNeedsRestAndAnEventPlatformSource) {
  EXPECT_EQ(ErrorOf(PlatformSource("    platform: {}\n", /*with_rest=*/false)).message(),
            "line 8: sources[0].platform: needs rest (the PIM's REST API) in the same source: "
            "the Event Platform management API is called with a PIM access token, the PIM's URL "
            "and the Connection's client id, all taken from rest");
  EXPECT_EQ(ErrorOf(absl::StrCat(kMinimal, "    platform: {}\n")).message(),
            "line 8: sources[0].platform: only applies to event_platform sources");
}

TEST_F(ConfigTest, PlatformKeyErrors) {
  const std::string prefix = "line 15: sources[0].platform.";
  const auto error = [](const std::string& line) -> std::string {
    return std::string(ErrorOf(PlatformSource(absl::StrCat("    platform:\n", line))).message());
  };
  EXPECT_EQ(error("      api_url: http://127.0.0.1:9/api/v1\n"),
            prefix +
                "api_url: http:// would send the PIM access token in clear; use https://, or set "
                "allow_insecure_http: true (tests)");
  absl::StatusOr<Config> config =
      LoadConfigString(PlatformSource("    platform:\n      api_url: http://127.0.0.1:9/api/v1\n   "
                                      "   allow_insecure_http: true\n"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->sources[0].platform->api_url.spec(), "http://127.0.0.1:9/api/v1");
  EXPECT_EQ(error("      api_url: event.prd.sdk.akeneo.cloud\n"),
            prefix +
                "api_url: must start with https:// (http:// only with allow_insecure_http: "
                "true), got \"event.prd.sdk.akeneo.cloud\"");
  EXPECT_EQ(error("      api_url: https://event.example.com/api?x=1\n"),
            prefix +
                "api_url: must not have a query or fragment, got "
                "\"https://event.example.com/api?x=1\"");
  EXPECT_EQ(error("      api_url: https://token@event.example.com/api\n"),
            prefix + "api_url: must not contain user info");
  EXPECT_EQ(error("      api_url: https:///api/v1\n"),
            prefix + "api_url: has no host, got \"https:///api/v1\"");
  EXPECT_EQ(error("      technical_email: ops.example.com\n"),
            prefix + "technical_email: must be an e-mail address, got \"ops.example.com\"");
  EXPECT_EQ(error("      technical_email: ops@localhost\n"),
            prefix + "technical_email: must be an e-mail address, got \"ops@localhost\"");
  EXPECT_EQ(error("      max_attempts: 0\n"), prefix + "max_attempts: must be at least 1, got 0");
  EXPECT_EQ(error("      watch_interval: 0s\n"),
            prefix + "watch_interval: must be greater than zero");
  EXPECT_EQ(error("      initial_backoff: 1m\n"),
            prefix + "initial_backoff: must be at most max_backoff (30s), got 1m");
  EXPECT_EQ(error("      proxy: proxy.example.com:3128\n"),
            prefix +
                "proxy: must be \"none\" or a proxy URL starting with http://, https://, "
                "socks5:// or socks5h://");
  EXPECT_EQ(error("      auto_resume: yes\n"),
            prefix + "auto_resume: must be true or false, got \"yes\"");
  EXPECT_EQ(error("      url: https://x\n"), prefix + "url: unknown key");
  const std::string ca = WriteFile("platform-ca.pem", "ca");
  EXPECT_EQ(error(absl::StrCat("      ca_file: ", ca, "\n      insecure_skip_verify: true\n")),
            prefix +
                "ca_file: has no effect with insecure_skip_verify: true; remove one of the "
                "two");
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

// At most 100 years: every accepted duration converts to nanoseconds and adds to any clock's now
// without overflowing (a deadline computed from "1000000d" used to overflow).
TEST(ParseDurationTest, LargestAccepted) {
  absl::StatusOr<milliseconds> parsed = ParseDuration("36500d");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(*parsed, kMaxDuration);
  EXPECT_LT(std::chrono::duration_cast<std::chrono::nanoseconds>(kMaxDuration).count(),
            std::numeric_limits<int64_t>::max() / 2);
  for (const char* text : {"36500d1ms", "36501d", "1000000d", "9223372036854775807ms"}) {
    parsed = ParseDuration(text);
    ASSERT_FALSE(parsed.ok()) << text;
    EXPECT_EQ(parsed.status().message(), absl::StrCat("invalid duration \"", text,
                                                      "\": too large (at most 36500d, 100 years)"));
  }
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

// ---- "Did you mean" -----------------------------------------------------------------------------

TEST(DidYouMeanTest, EditDistanceCountsSwapsAsOneEdit) {
  EXPECT_EQ(EditDistance("listen", "listen"), 0u);
  EXPECT_EQ(EditDistance("listne", "listen"), 1u);  // swap
  EXPECT_EQ(EditDistance("lisen", "listen"), 1u);   // insertion
  EXPECT_EQ(EditDistance("fsync", "sync"), 1u);     // deletion
  EXPECT_EQ(EditDistance("lvl", "level"), 2u);
  EXPECT_EQ(EditDistance("", "abc"), 3u);
}

TEST(DidYouMeanTest, SuggestsOnlyWhatIsClose) {
  const std::vector<std::string> keys = {"level", "format"};
  EXPECT_EQ(DidYouMean("lvl", keys), "level");
  EXPECT_EQ(DidYouMean("fromat", keys), "format");
  EXPECT_EQ(DidYouMean("colour", keys), std::nullopt);
  EXPECT_EQ(DidYouMean("x", keys), std::nullopt);  // too short to guess
  EXPECT_EQ(DidYouMean("level", keys), std::nullopt);
  // A truncated name points at the only candidate it starts.
  EXPECT_EQ(DidYouMean("recon", {"reconcile", "resume"}), "reconcile");
  // Nearest wins; ties go to the first candidate.
  EXPECT_EQ(DidYouMean("stat", {"stats", "start"}), "stats");
}

TEST_F(ConfigTest, UnknownKeysSuggestTheNearestKeyOfTheirMapping) {
  EXPECT_EQ(ErrorOf(absl::StrCat(kMinimal,
                                 "plugins:\n  - name: a\n    command: [a]\n"
                                 "    inherit_evn: true\n"))
                .message(),
            "line 11: plugins[0].inherit_evn: unknown key; did you mean inherit_env?");
  // Only keys of the same mapping are offered: `listen` is a gateway key, not a store key.
  EXPECT_EQ(ErrorOf(absl::StrCat(kMinimal, "log:\n  colour: red\n")).message(),
            "line 9: log.colour: unknown key");
  EXPECT_EQ(ErrorOf("store:\n  path: /x\n  listen: 1\nsources: []\n").message(),
            "line 3: store.listen: unknown key");
}

// ---- "$NAME" secrets ----------------------------------------------------------------------------

TEST_F(ConfigTest, SecretWithoutBracesIsAnErrorShowingTheBracedForm) {
  ::unsetenv("AKENEO_SECRET");
  EXPECT_EQ(ErrorOf(WithSecret("secret: $AKENEO_SECRET")).message(),
            "line 7: sources[0].secret: looks like an environment variable without braces: write "
            "${AKENEO_SECRET} to read the variable (a secret that really starts with $ goes in a "
            "file: file:/path)");
  // Quoted, set in the environment, lower case: the same mistake, the same answer.
  ScopedEnv env("pimgate_lower_secret", "from-the-env");
  EXPECT_THAT(std::string(ErrorOf(WithSecret("secret: \"$pimgate_lower_secret\"")).message()),
              HasSubstr("write ${pimgate_lower_secret} to read the variable"));
  // A lower-case word that is no variable could be an inline secret: not echoed.
  ::unsetenv("hunter2x");
  const std::string hidden(ErrorOf(WithSecret("secret: $hunter2x")).message());
  EXPECT_THAT(hidden, HasSubstr("write ${NAME} to read the variable"));
  EXPECT_THAT(hidden, Not(HasSubstr("hunter2x")));
  // Every secret key reads the same way: admin.token, sources[].rest.password.
  EXPECT_THAT(
      std::string(ErrorOf(absl::StrCat(kMinimal, "admin:\n  token: $ADMIN_TOKEN\n")).message()),
      StartsWith("line 9: admin.token: looks like an environment variable without braces: "
                 "write ${ADMIN_TOKEN}"));
  // Still fine: "${NAME}", and secrets that merely contain or start with '$' and more.
  ScopedEnv braced("AKENEO_SECRET", "from-the-env");
  EXPECT_TRUE(LoadConfigString(WithSecret("secret: ${AKENEO_SECRET}")).ok());
  EXPECT_TRUE(LoadConfigString(WithSecret("secret: \"$ecr3t-with-dash\"")).ok());
  EXPECT_TRUE(LoadConfigString(WithSecret("secret: \"ab$CD\"")).ok());
}

// ---- inherit_env --------------------------------------------------------------------------------

TEST_F(ConfigTest, InheritEnvIsFalseTrueOrAListOfNames) {
  absl::StatusOr<Config> config = LoadConfigString(absl::StrCat(
      kMinimal,
      "plugins:\n  - {name: a, command: [a]}\n  - {name: b, command: [b], inherit_env: true}\n"
      "  - {name: c, command: [c], inherit_env: [PYTHONPATH, NODE_PATH]}\n"
      "  - {name: d, command: [d], inherit_env: false}\n"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_FALSE(config->plugins[0].inherit_env_all);
  EXPECT_TRUE(config->plugins[0].inherit_env.empty());
  EXPECT_TRUE(config->plugins[1].inherit_env_all);
  EXPECT_FALSE(config->plugins[2].inherit_env_all);
  EXPECT_EQ(config->plugins[2].inherit_env, (std::vector<std::string>{"PYTHONPATH", "NODE_PATH"}));
  EXPECT_FALSE(config->plugins[3].inherit_env_all);

  const std::string plugin = "plugins:\n  - name: a\n    command: [a]\n";
  EXPECT_EQ(ErrorOf(absl::StrCat(kMinimal, plugin, "    inherit_env: yes\n")).message(),
            "line 11: plugins[0].inherit_env: must be true or false, got \"yes\"");
  EXPECT_EQ(ErrorOf(absl::StrCat(kMinimal, plugin, "    inherit_env: []\n")).message(),
            "line 11: plugins[0].inherit_env: must be true, false or a list of variable names "
            "(write false for none)");
  EXPECT_EQ(ErrorOf(absl::StrCat(kMinimal, plugin, "    inherit_env: [OK, 2BAD]\n")).message(),
            "line 11: plugins[0].inherit_env[1]: variable names must be letters, digits and _, "
            "not starting with a digit, got \"2BAD\"");
  EXPECT_EQ(ErrorOf(absl::StrCat(kMinimal,
                                 "plugins:\n  - name: a\n    address: h:1\n"
                                 "    inherit_env: true\n"))
                .message(),
            "line 11: plugins[0].inherit_env: only applies to plugins pimgate launches (with a "
            "command), not to an address");
}

// ---- Plugin commands (--check-config) -----------------------------------------------------------

class PluginCommandTest : public ConfigTest {
 protected:
  // kMinimal plus one plugin whose command is `command` (a YAML flow sequence) on line 10.
  absl::Status Check(const std::string& command, const std::string& more = "") {
    LoadOptions options;
    options.check_plugin_commands = true;
    return LoadConfigString(absl::StrCat(kMinimal, "plugins:\n  - name: erp\n    command: ",
                                         command, "\n", more),
                            options)
        .status();
  }

  std::string Executable(const std::string& name) {
    const std::string path = WriteFile(name, "#!/bin/sh\nexit 0\n");
    ::chmod(path.c_str(), 0755);
    return path;
  }
};

TEST_F(PluginCommandTest, AProgramThatExistsAndRunsPasses) {
  EXPECT_TRUE(Check(absl::StrCat("[", Executable("handler"), ", --flag]")).ok());
  EXPECT_TRUE(Check("[sh, -c, \"exit 0\"]").ok()) << "found through PATH";
  // Without the option (pimgate --config), commands are the supervisor's business.
  EXPECT_TRUE(
      LoadConfigString(absl::StrCat(kMinimal, "plugins:\n  - {name: a, command: [/no/x]}\n")).ok());
  // Plugins pimgate does not launch have no command to check.
  EXPECT_TRUE(LoadConfigString(absl::StrCat(kMinimal,
                                            "plugins:\n  - {name: a, address: "
                                            "\"unix:/run/a.sock\"}\n"),
                               {.check_plugin_commands = true})
                  .ok());
}

TEST_F(PluginCommandTest, AMissingOrUnrunnableProgramIsNamedWithItsLine) {
  EXPECT_EQ(Check("[/nonexistent/pimgate-plugin]").message(),
            "line 10: plugins[0].command[0]: program \"/nonexistent/pimgate-plugin\": No such file "
            "or directory");
  const std::string script = WriteFile("handler.py", "print('hi')\n");
  ::chmod(script.c_str(), 0644);
  EXPECT_EQ(Check(absl::StrCat("[", script, "]")).message(),
            absl::StrCat("line 10: plugins[0].command[0]: program \"", script,
                         "\" is not executable (chmod +x it, or start it through its interpreter, "
                         "e.g. [/usr/bin/python3, ",
                         script, "])"));
  EXPECT_THAT(std::string(Check(absl::StrCat("[", dir_, "]")).message()),
              HasSubstr("is not a regular file"));
  // Multi-line commands point at the element's own line.
  EXPECT_THAT(std::string(Check("\n      - /nonexistent/x\n      - arg").message()),
              StartsWith("line 11: plugins[0].command[0]: program \"/nonexistent/x\""));
}

TEST_F(PluginCommandTest, BareNamesAreLookedUpInThePathThePluginGets) {
  EXPECT_THAT(std::string(Check("[pimgate-no-such-plugin-xyz]").message()),
              StartsWith("line 10: plugins[0].command[0]: program \"pimgate-no-such-plugin-xyz\" "
                         "is not found in PATH ("));
  // The manifest's env.PATH is the one that counts.
  Executable("my-handler");
  EXPECT_TRUE(
      Check("[my-handler]", absl::StrCat("    env: {PATH: \"/usr/bin:", dir_, "\"}\n")).ok());
  EXPECT_EQ(Check("[sh]", "    env: {PATH: /nowhere}\n").message(),
            "line 10: plugins[0].command[0]: program \"sh\" is not found in PATH (/nowhere): "
            "install it, write its absolute path, or set PATH in env");
}

TEST_F(PluginCommandTest, AnInterpretersScriptMustExist) {
  EXPECT_EQ(Check("[/bin/sh, /nonexistent/handler.sh]").message(),
            "line 10: plugins[0].command[1]: script \"/nonexistent/handler.sh\": No such file or "
            "directory");
  EXPECT_THAT(std::string(Check("[sh, missing-relative.sh]").message()),
              HasSubstr("script \"missing-relative.sh\" (relative to pimgate's working directory"));
  const std::string script = WriteFile("handler.sh", "exit 0\n");
  EXPECT_TRUE(Check(absl::StrCat("[/bin/sh, ", script, "]")).ok());
  // Options first (python3 -m module, sh -c "..."): there is no script to look for.
  EXPECT_TRUE(Check("[/bin/sh, -c, \"exit 0\"]").ok());
}

TEST_F(PluginCommandTest, ANodeScriptNeedsItsNodeModules) {
  const std::string node = Executable("node");  // stands in for the interpreter
  std::filesystem::create_directories(dir_ + "/app/lib");
  const std::string script = WriteFile("app/lib/handler.js", "require('@pimgate/sdk');\n");
  WriteFile("app/package.json", R"({"name": "h", "dependencies": {"@pimgate/sdk": "file:x"}})");
  const std::string app = std::filesystem::path(dir_ + "/app").lexically_normal().string();
  EXPECT_EQ(Check(absl::StrCat("[", node, ", ", script, "]")).message(),
            absl::StrCat("line 10: plugins[0].command[1]: \"", app,
                         "/package.json\" lists dependencies but \"", app,
                         "/node_modules\" is missing: run `npm install` in \"", app, "\""));
  std::filesystem::create_directories(dir_ + "/app/node_modules");
  EXPECT_TRUE(Check(absl::StrCat("[", node, ", ", script, "]")).ok());
}

TEST_F(PluginCommandTest, CheckPluginCommandReportsWithoutLines) {
  PluginConfig plugin;
  plugin.name = "erp";
  plugin.command = {"/nonexistent/x"};
  EXPECT_EQ(CheckPluginCommand(plugin).message(),
            "plugins.erp.command[0]: program \"/nonexistent/x\": No such file or directory");
  plugin.command = {"sh"};
  EXPECT_TRUE(CheckPluginCommand(plugin).ok());
  plugin.command.clear();
  plugin.address = "127.0.0.1:1";
  EXPECT_TRUE(CheckPluginCommand(plugin).ok());
}

// The binary: `pimgate --check-config` refuses what `pimgate --config` would retry forever.
TEST_F(PluginCommandTest, CheckConfigRefusesAMissingPluginCommand) {
  const std::string config =
      WriteFile("pimgate.yaml", absl::StrCat(kMinimal, "plugins:\n  - name: erp\n    command: [",
                                             "/usr/bin/python3, ", dir_, "/missing_handler.py]\n"));
  const std::string out = dir_ + "/out.txt";
  const int status = std::system(
      absl::StrCat(PIMGATE_BINARY, " --check-config ", config, " >", out, " 2>&1").c_str());
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 2);
  std::ifstream in(out);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text, absl::StrCat(config, ": line 10: plugins[0].command[1]: script \"", dir_,
                               "/missing_handler.py\": No such file or directory\n"));
  // Address plugins: the address must parse.
  const std::string bad_address = WriteFile(
      "address.yaml", absl::StrCat(kMinimal, "plugins:\n  - {name: erp, address: \"nohost\"}\n"));
  EXPECT_EQ(WEXITSTATUS(std::system(
                absl::StrCat(PIMGATE_BINARY, " --check-config ", bad_address, " >/dev/null 2>&1")
                    .c_str())),
            2);
}

TEST(SourceKindNameTest, NamesMatchConfigSpelling) {
  EXPECT_STREQ(SourceKindName(SourceKind::kEventsApi), "events_api");
  EXPECT_STREQ(SourceKindName(SourceKind::kEventPlatform), "event_platform");
}

}  // namespace
}  // namespace pimgate

namespace pimgate {
namespace {

// store.backend and store.jetstream.
constexpr char kSourcesTail[] = "sources: [{name: a, kind: events_api, path: /a, secret: s}]\n";

TEST_F(ConfigTest, StoreBackendDefaultsToRocksDb) {
  absl::StatusOr<Config> config = LoadConfigString(kMinimal);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->store.backend, StoreBackend::kRocksDb);
  EXPECT_FALSE(config->store.jetstream.has_value());
}

TEST_F(ConfigTest, StoreJetStreamEveryKey) {
  const std::string ca = WriteFile("ca.pem", "ca");
  const std::string cert = WriteFile("cert.pem", "cert");
  const std::string key = WriteFile("key.pem", "key");
  ScopedEnv password("PIMGATE_TEST_NATS_PASSWORD", "nats-password-do-not-print");
  absl::StatusOr<Config> config = LoadConfigString(absl::StrCat(
      "store:\n  backend: jetstream\n  path: /data/replica\n  jetstream:\n",
      "    servers: [nats://n1:4222, tls://n2:4222]\n",
      "    credentials: {user: pimgate, password: \"${PIMGATE_TEST_NATS_PASSWORD}\"}\n",
      "    tls: {ca_file: ", ca, ", cert_file: ", cert, ", key_file: ", key, "}\n",
      "    replicas: 3\n    stream: LOG_A\n    subject: acme.log\n",
      "    cursor_bucket: cur_a\n    dead_letter_bucket: dl-a\n    write_timeout: 30s\n",
      "    cluster: {node_id: gw-1, partitions: 16, lease_ttl: 5s, lease_bucket: leases_a}\n",
      kSourcesTail));
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_EQ(config->store.backend, StoreBackend::kJetStream);
  ASSERT_TRUE(config->store.jetstream.has_value());
  const JetStreamConfig& js = *config->store.jetstream;
  EXPECT_EQ(js.servers, (std::vector<std::string>{"nats://n1:4222", "tls://n2:4222"}));
  ASSERT_TRUE(js.credentials.has_value());
  EXPECT_EQ(js.credentials->user, "pimgate");
  ASSERT_TRUE(js.credentials->password.has_value());
  EXPECT_EQ(js.credentials->password->value, "nats-password-do-not-print");
  EXPECT_EQ(js.credentials->password->Describe(), "env:PIMGATE_TEST_NATS_PASSWORD");
  ASSERT_TRUE(js.tls.has_value());
  EXPECT_EQ(js.tls->ca_file, ca);
  EXPECT_EQ(js.tls->cert_file, cert);
  EXPECT_EQ(js.tls->key_file, key);
  EXPECT_EQ(js.replicas, 3);
  EXPECT_EQ(js.stream, "LOG_A");
  EXPECT_EQ(js.subject, "acme.log");
  EXPECT_EQ(js.cursor_bucket, "cur_a");
  EXPECT_EQ(js.dead_letter_bucket, "dl-a");
  EXPECT_EQ(js.write_timeout, milliseconds(30'000));
  EXPECT_EQ(js.cluster.node_id, "gw-1");
  EXPECT_EQ(js.cluster.partitions, 16);
  EXPECT_EQ(js.cluster.lease_ttl, milliseconds(5'000));
  EXPECT_EQ(js.cluster.lease_bucket, "leases_a");
}

TEST_F(ConfigTest, StoreJetStreamDefaults) {
  absl::StatusOr<Config> config =
      LoadConfigString(absl::StrCat("store:\n  path: /r\n  backend: jetstream\n  jetstream:\n    "
                                    "servers: [nats://127.0.0.1:4222]\n",
                                    kSourcesTail));
  ASSERT_TRUE(config.ok()) << config.status();
  const JetStreamConfig& js = *config->store.jetstream;
  EXPECT_FALSE(js.credentials.has_value());
  EXPECT_FALSE(js.tls.has_value());
  EXPECT_EQ(js.replicas, 1);
  EXPECT_EQ(js.stream, "PIMGATE_LOG");
  EXPECT_EQ(js.subject, "pimgate.log");
  EXPECT_EQ(js.cursor_bucket, "pimgate_cursors");
  EXPECT_EQ(js.dead_letter_bucket, "pimgate_dead_letters");
  EXPECT_EQ(js.write_timeout, milliseconds(10'000));
  EXPECT_EQ(js.cluster.node_id, "");  // pimgate uses <hostname>-<pid>
  EXPECT_EQ(js.cluster.partitions, 8);
  EXPECT_EQ(js.cluster.lease_ttl, milliseconds(10'000));
  EXPECT_EQ(js.cluster.lease_bucket, "pimgate_leases");
}

TEST_F(ConfigTest, StoreJetStreamErrors) {
  const std::string creds = WriteFile("user.creds", "creds");
  ScopedEnv password("PIMGATE_TEST_NATS_PASSWORD", "nats-password-do-not-print");
  struct Case {
    std::string store;  // the lines under `store:`
    std::string error;
  };
  const std::string js = "  backend: jetstream\n  jetstream:\n    servers: [nats://h:4222]\n";
  for (const Case& c : std::vector<Case>{
           {"  backend: jetsream\n",
            "line 3: store.backend: must be \"rocksdb\" or \"jetstream\", got \"jetsream\""},
           {"  backend: jetstream\n", "line 3: store.backend: jetstream needs store.jetstream"},
           {"  jetstream:\n    servers: [nats://h:4222]\n",
            "line 3: store.jetstream: is only read with store.backend: jetstream"},
           {"  backend: jetstream\n  jetstream:\n    replicas: 3\n",
            "store.jetstream.servers: required"},
           {"  backend: jetstream\n  jetstream:\n    servers: []\n",
            "line 5: store.jetstream.servers: must list at least one server"},
           {"  backend: jetstream\n  jetstream:\n    servers: [http://h:4222]\n",
            "line 5: store.jetstream.servers[0]: \"http://h:4222\" is not a NATS server URL"},
           {"  backend: jetstream\n  jetstream:\n    servers: [\"nats://:4222\"]\n",
            "names no host"},
           {js + "    replicas: 2\n",
            "line 6: store.jetstream.replicas: must be \"1\" or \"3\", got \"2\""},
           {js + "    stream: my.log\n",
            "line 6: store.jetstream.stream: \"my.log\" may hold only letters"},
           {js + "    subject: log.>\n", "line 6: store.jetstream.subject: \"log.>\" is not a"},
           {js + "    subject: log..a\n", "an empty token"},
           {js + "    cursor_bucket: \"a b\"\n", "line 6: store.jetstream.cursor_bucket:"},
           {js + "    write_timout: 5s\n",
            "line 6: store.jetstream.write_timout: unknown key; did you mean write_timeout?"},
           {js + "    credentials: {user: u}\n",
            "store.jetstream.credentials.user: needs a password beside it"},
           {js + "    credentials: {password: \"${PIMGATE_TEST_NATS_PASSWORD}\"}\n",
            "store.jetstream.credentials.password: needs a user beside it"},
           {js + "    credentials: {user: u, password: p, creds_file: " + creds + "}\n",
            "store.jetstream.credentials.creds_file: set either creds_file or user and password"},
           {js + "    credentials: {}\n", "set creds_file, or user and password"},
           {js + "    credentials: {creds_file: /nonexistent/u.creds}\n",
            "store.jetstream.credentials.creds_file:"},
           {js + "    credentials: {user: u, password: \"${PIMGATE_NATS_UNSET_VAR}\"}\n",
            "PIMGATE_NATS_UNSET_VAR"},
           {js + "    tls: {cert_file: " + creds + "}\n",
            "store.jetstream.tls.cert_file: needs key_file beside it"},
           {js + "    cluster: {partitions: 0}\n", "store.jetstream.cluster.partitions:"},
           {js + "    cluster: {partitions: 65}\n",
            "store.jetstream.cluster.partitions: must be at most 64, got 65"},
           {js + "    cluster: {lease_ttl: 500ms}\n",
            "store.jetstream.cluster: lease_ttl must be at least 1s"},
           {js + "    cluster: {node_id: \"a.b\"}\n",
            "store.jetstream.cluster.node_id: \"a.b\" may hold only letters"},
           {js + "    cluster: {lease_bucket: \"x y\"}\n", "store.jetstream.cluster.lease_bucket:"},
           {js + "    cluster: {partition: 4}\n",
            "store.jetstream.cluster.partition: unknown key; did you mean partitions?"},
       }) {
    absl::StatusOr<Config> config =
        LoadConfigString(absl::StrCat("store:\n  path: /r\n", c.store, kSourcesTail));
    ASSERT_FALSE(config.ok()) << c.store;
    EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument) << c.store;
    const std::string message(config.status().message());
    EXPECT_THAT(message, HasSubstr(c.error)) << c.store;
    EXPECT_THAT(message, Not(HasSubstr("nats-password-do-not-print"))) << c.store;
  }
}

TEST_F(ConfigTest, StoreJetStreamCredsFile) {
  const std::string creds = WriteFile("user.creds", "creds");
  absl::StatusOr<Config> config = LoadConfigString(absl::StrCat(
      "store:\n  path: /r\n  backend: jetstream\n  jetstream:\n",
      "    servers: [nats://h:4222]\n    credentials: {creds_file: ", creds, "}\n", kSourcesTail));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->store.jetstream->credentials->creds_file, creds);
  EXPECT_TRUE(config->store.jetstream->credentials->user.empty());
}

}  // namespace
}  // namespace pimgate
