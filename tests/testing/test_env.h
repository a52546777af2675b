// Test support: temp dirs, a self-signed certificate, a real HTTP(S) client, signed Akeneo
// requests, and an in-process gateway over a real RocksDB log.
#ifndef PIMGATE_TESTS_TESTING_TEST_ENV_H_
#define PIMGATE_TESTS_TESTING_TEST_ENV_H_

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "config/config.h"
#include "core/log/event_log.h"
#include "core/log/log_backend.h"  // Options::wrap_backend (fault injection)
#include "gateway/server.h"

namespace pimgate::testing {

// A fresh directory under $TMPDIR, removed with its contents on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

struct CertFiles {
  std::string cert_file;
  std::string key_file;
};

// Makes a self-signed certificate for CN=localhost / 127.0.0.1 with the openssl CLI.
CertFiles MakeSelfSignedCert(const std::string& dir);

// Runs a shell command, returns its stdout; fails the test on a non-zero exit.
std::string RunCommand(const std::string& command);

struct HttpResponse {
  int status = 0;
  std::string body;
  std::map<std::string, std::string> headers;  // lower-case names
};

// A blocking HTTP/1.1 client over TCP, with or without TLS (certificate not verified: tests use
// a self-signed one). Keeps the connection open between requests.
class HttpClient {
 public:
  struct Options {
    bool tls = true;
    // OpenSSL protocol version bounds, e.g. TLS1_VERSION to force TLS 1.0; 0 = library default.
    int min_tls_version = 0;
    int max_tls_version = 0;
  };
  HttpClient(uint16_t port, Options options);
  explicit HttpClient(uint16_t port, bool tls = true) : HttpClient(port, Options{tls, 0, 0}) {}
  ~HttpClient();
  HttpClient(HttpClient&&) noexcept;
  HttpClient& operator=(HttpClient&&) noexcept;

  // Connects (and handshakes); error text on failure.
  std::optional<std::string> Connect();
  // Sends a request; (re)connects when needed. status 0 and body = error text when the
  // exchange failed (connection closed, handshake refused...).
  HttpResponse Send(const std::string& method, const std::string& target, const std::string& body,
                    const std::map<std::string, std::string>& headers = {});
  // Writes raw bytes and reads one response (for malformed requests).
  HttpResponse SendRaw(const std::string& bytes);
  // Writes raw bytes without reading; false once the server has closed the connection.
  bool WriteRaw(const std::string& bytes);
  bool connected() const;
  void Close();

  class Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// HMAC-SHA256 hex computed with OpenSSL's EVP_MAC API (a second implementation, independent
// of the gateway's).
std::string TestHmacHex(const std::string& key, const std::string& message);

int64_t NowUnixSeconds();

// Headers of a signed legacy Events API request.
std::map<std::string, std::string> LegacyHeaders(const std::string& secret, const std::string& body,
                                                 int64_t timestamp = NowUnixSeconds());
// Headers of a signed Event Platform request.
std::map<std::string, std::string> EventPlatformHeaders(const std::string& secret,
                                                        const std::string& body);

// One legacy event element as JSON. `updated` empty → no data.resource.updated.
std::string LegacyProductEvent(const std::string& action, const std::string& event_id,
                               const std::string& uuid, const std::string& updated = "",
                               const std::string& event_datetime = "2026-11-20T10:15:00+00:00");
std::string LegacyBatch(const std::vector<std::string>& events);
std::string CloudEvent(const std::string& type, const std::string& id, const std::string& uuid,
                       const std::string& time = "2026-11-20T10:15:00Z");

// A random UUID v4 string.
std::string NewUuid();

// The store `store:` would configure at `path`, with default options: EventLog::Open(StoreAt(p))
// opens a log as pimgate does (tests that inject faults open a backend and wrap it instead).
inline StoreConfig StoreAt(const std::string& path) {
  StoreConfig store;
  store.path = path;
  return store;
}

// A gateway served from this process on 127.0.0.1:0 over a real RocksDB log in a temp dir.
// Sources: "legacy" (events_api, POST /hooks/legacy, secret kLegacySecret) and "platform"
// (event_platform, POST /hooks/platform, kPlatformSecret, secondary kPlatformSecondary).
class GatewayHarness {
 public:
  static constexpr char kLegacySecret[] = "legacy-secret-0123456789";
  static constexpr char kPlatformSecret[] = "platform-secret-abcdef";
  static constexpr char kPlatformSecondary[] = "platform-secret-rotated";

  struct Options {
    bool tls = true;
    std::function<void(Config&)> tweak;  // adjust the config before start
    // Wraps the RocksDB backend (fault injection).
    std::function<std::unique_ptr<LogBackend>(std::unique_ptr<LogBackend>)> wrap_backend;
    // Given to Gateway::Create (notification webhooks).
    GatewayHooks hooks;
  };
  explicit GatewayHarness(Options options);
  GatewayHarness() : GatewayHarness(Options{}) {}
  ~GatewayHarness();

  uint16_t port() const { return gateway_->port(); }
  EventLog& log() { return *log_; }
  Gateway& gateway() { return *gateway_; }
  const Config& config() const { return config_; }
  HttpClient Client() const { return HttpClient(port(), options_.tls); }
  // Reopens the log from disk (the gateway is stopped first and restarted after).
  void Restart();
  std::vector<v1::Event> AllEvents();

 private:
  void Start();
  Options options_;
  TempDir dir_;
  Config config_;
  std::unique_ptr<EventLog> log_;
  std::unique_ptr<Gateway> gateway_;
};

// A pimgate server process started from the built binary with --config and --ready-file.
class PimgateProcess {
 public:
  // `env` entries are added to the child's environment. With `log_file`, the child's stderr (its
  // log) is appended to that file instead of the test's stderr.
  PimgateProcess(const std::string& config_path, const std::string& ready_file,
                 const std::vector<std::pair<std::string, std::string>>& env = {},
                 const std::string& log_file = "");
  ~PimgateProcess();  // SIGKILL if still running
  // Waits (up to 30 s) for the ready file; returns the gateway port, 0 if pimgate exited.
  uint16_t WaitReady();
  void Kill();  // SIGKILL and reap
  // SIGTERM and reap; returns the exit status (-1 when not running).
  int Terminate();
  // "" while the process runs; once it has exited on its own, how ("exit code 1", "signal 6"),
  // reaping it (each later call says the same).
  std::string Exited();
  pid_t pid() const { return pid_; }

 private:
  std::string ready_file_;
  pid_t pid_ = -1;
  std::string exited_;
};

}  // namespace pimgate::testing

#endif  // PIMGATE_TESTS_TESTING_TEST_ENV_H_
