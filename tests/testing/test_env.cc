// Test support implementation: real sockets, real TLS, real RocksDB.
#include "tests/testing/test_env.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/log/rocksdb_backend.h"
#include "tests/testing/typed_values.h"

namespace pimgate::testing {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string pattern = std::string(base != nullptr ? base : "/tmp") + "/pimgate-test-XXXXXX";
  std::vector<char> buf(pattern.begin(), pattern.end());
  buf.push_back('\0');
  if (mkdtemp(buf.data()) == nullptr) {
    ADD_FAILURE() << "mkdtemp failed";
  }
  path_ = buf.data();
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::string RunCommand(const std::string& command) {
  std::string output;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) {
    ADD_FAILURE() << "popen failed: " << command;
    return output;
  }
  std::array<char, 4096> buf;
  std::size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0) output.append(buf.data(), n);
  int rc = pclose(pipe);
  EXPECT_EQ(rc, 0) << "command failed: " << command << "\n" << output;
  return output;
}

CertFiles MakeSelfSignedCert(const std::string& dir) {
  CertFiles files{dir + "/cert.pem", dir + "/key.pem"};
  RunCommand(
      "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 "
      "-subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout " +
      files.key_file + " -out " + files.cert_file + " 2>&1");
  return files;
}

class HttpClient::Impl {
 public:
  Impl(uint16_t port, Options options)
      : port_(port), options_(options), ssl_ctx_(ssl::context::tls_client) {
    ssl_ctx_.set_verify_mode(ssl::verify_none);
    if (options_.min_tls_version != 0) {
      SSL_CTX_set_min_proto_version(ssl_ctx_.native_handle(), options_.min_tls_version);
      // Old protocol versions are disabled by OpenSSL 3's default security level.
      SSL_CTX_set_security_level(ssl_ctx_.native_handle(), 0);
      SSL_CTX_set_cipher_list(ssl_ctx_.native_handle(), "ALL:@SECLEVEL=0");
    }
    if (options_.max_tls_version != 0) {
      SSL_CTX_set_max_proto_version(ssl_ctx_.native_handle(), options_.max_tls_version);
    }
  }

  std::optional<std::string> Connect() {
    Close();
    beast::error_code ec;
    tcp_.emplace(ioc_);
    tcp_->connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port_), ec);
    if (ec) return "connect: " + ec.message();
    tcp_->set_option(tcp::no_delay(true));
    if (options_.tls) {
      tls_.emplace(*tcp_, ssl_ctx_);
      SSL_set_tlsext_host_name(tls_->native_handle(), "localhost");
      tls_->handshake(ssl::stream_base::client, ec);
      if (ec) {
        Close();
        return "handshake: " + ec.message();
      }
    }
    return std::nullopt;
  }

  bool connected() const { return tcp_.has_value() && tcp_->is_open(); }

  void Close() {
    tls_.reset();
    if (tcp_) {
      beast::error_code ignored;
      tcp_->close(ignored);
    }
    tcp_.reset();
    buffer_.clear();
  }

  template <class Fn>
  auto WithStream(Fn&& fn) {
    if (tls_) return fn(*tls_);
    return fn(*tcp_);
  }

  HttpResponse Send(const std::string& method, const std::string& target, const std::string& body,
                    const std::map<std::string, std::string>& headers) {
    HttpResponse out;
    if (!connected()) {
      if (auto error = Connect()) {
        out.body = *error;
        return out;
      }
    }
    http::request<http::string_body> req;
    req.method_string(method);
    req.target(target);
    req.version(11);
    req.set(http::field::host, "localhost");
    req.set(http::field::content_type, "application/json");
    for (const auto& [name, value] : headers) req.set(name, value);
    req.body() = body;
    req.prepare_payload();
    beast::error_code ec;
    WithStream([&](auto& stream) { http::write(stream, req, ec); });
    if (ec) {
      out.body = "write: " + ec.message();
      Close();
      return out;
    }
    return Read();
  }

  HttpResponse SendRaw(const std::string& bytes) {
    HttpResponse out;
    if (!connected()) {
      if (auto error = Connect()) {
        out.body = *error;
        return out;
      }
    }
    beast::error_code ec;
    WithStream([&](auto& stream) { net::write(stream, net::buffer(bytes), ec); });
    if (ec) {
      out.body = "write: " + ec.message();
      Close();
      return out;
    }
    return Read();
  }

  bool WriteRaw(const std::string& bytes) {
    if (!connected()) return false;
    beast::error_code ec;
    WithStream([&](auto& stream) { net::write(stream, net::buffer(bytes), ec); });
    if (ec) Close();
    return !ec;
  }

  HttpResponse Read() {
    HttpResponse out;
    http::response_parser<http::string_body> parser;
    parser.body_limit(64 * 1024 * 1024);
    beast::error_code ec;
    WithStream([&](auto& stream) { http::read(stream, buffer_, parser, ec); });
    if (ec) {
      out.body = "read: " + ec.message();
      Close();
      return out;
    }
    auto res = parser.release();
    out.status = res.result_int();
    out.body = res.body();
    for (const auto& field : res) {
      std::string name(field.name_string());
      for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      out.headers[name] = std::string(field.value());
    }
    if (!res.keep_alive()) Close();
    return out;
  }

 private:
  uint16_t port_;
  Options options_;
  net::io_context ioc_;
  ssl::context ssl_ctx_;
  std::optional<tcp::socket> tcp_;
  std::optional<ssl::stream<tcp::socket&>> tls_;
  beast::flat_buffer buffer_;
};

HttpClient::HttpClient(uint16_t port, Options options)
    : impl_(std::make_unique<Impl>(port, options)) {}
HttpClient::~HttpClient() = default;
HttpClient::HttpClient(HttpClient&&) noexcept = default;
HttpClient& HttpClient::operator=(HttpClient&&) noexcept = default;
std::optional<std::string> HttpClient::Connect() { return impl_->Connect(); }
HttpResponse HttpClient::Send(const std::string& method, const std::string& target,
                              const std::string& body,
                              const std::map<std::string, std::string>& headers) {
  return impl_->Send(method, target, body, headers);
}
HttpResponse HttpClient::SendRaw(const std::string& bytes) { return impl_->SendRaw(bytes); }
bool HttpClient::WriteRaw(const std::string& bytes) { return impl_->WriteRaw(bytes); }
bool HttpClient::connected() const { return impl_->connected(); }
void HttpClient::Close() { impl_->Close(); }

std::string TestHmacHex(const std::string& key, const std::string& message) {
  EVP_MAC* mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
  EVP_MAC_CTX* ctx = EVP_MAC_CTX_new(mac);
  char digest[] = "SHA256";
  OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                         OSSL_PARAM_construct_end()};
  EVP_MAC_init(ctx, reinterpret_cast<const unsigned char*>(key.data()), key.size(), params);
  EVP_MAC_update(ctx, reinterpret_cast<const unsigned char*>(message.data()), message.size());
  unsigned char out[EVP_MAX_MD_SIZE];
  std::size_t len = 0;
  EVP_MAC_final(ctx, out, &len, sizeof(out));
  EVP_MAC_CTX_free(ctx);
  EVP_MAC_free(mac);
  std::string hex;
  for (std::size_t i = 0; i < len; ++i) absl::StrAppend(&hex, absl::Hex(out[i], absl::kZeroPad2));
  return hex;
}

int64_t NowUnixSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::map<std::string, std::string> LegacyHeaders(const std::string& secret, const std::string& body,
                                                 int64_t timestamp) {
  std::string ts = std::to_string(timestamp);
  return {{"X-Akeneo-Request-Timestamp", ts},
          {"X-Akeneo-Request-Signature", TestHmacHex(secret, ts + "." + body)}};
}

std::map<std::string, std::string> EventPlatformHeaders(const std::string& secret,
                                                        const std::string& body) {
  return {{"X-AKENEO-SIGNATURE-PRIMARY", TestHmacHex(secret, body)},
          {"X-AKENEO-SIGNATURE-ALGORITHM", "HmacSHA256"}};
}

std::string LegacyProductEvent(const std::string& action, const std::string& event_id,
                               const std::string& uuid, const std::string& updated,
                               const std::string& event_datetime) {
  std::string resource = absl::StrCat(R"({"uuid":")", uuid, R"(","identifier":"sku-)",
                                      uuid.substr(0, 8), R"(","family":"shoes","enabled":true,)",
                                      R"("categories":["summer"],"values":{})");
  if (!updated.empty()) absl::StrAppend(&resource, R"(,"updated":")", updated, "\"");
  absl::StrAppend(&resource, "}");
  return absl::StrCat(
      R"({"action":")", action, R"(","event_id":")", event_id, R"(","event_datetime":")",
      event_datetime, R"(","author":"julia","author_type":"ui",)",
      R"("pim_source":"https:\/\/pim.example.com","data":{"resource":)", resource, "}}");
}

std::string LegacyBatch(const std::vector<std::string>& events) {
  return absl::StrCat(R"({"events":[)", absl::StrJoin(events, ","), "]}");
}

std::string CloudEvent(const std::string& type, const std::string& id, const std::string& uuid,
                       const std::string& time) {
  return absl::StrCat(
      R"({"specversion":"1.0","id":")", id, R"(","source":"akeneo-event-platform","type":")", type,
      R"(","subject":"0190fe8a-6213-76ce-8a9f-ba36a5ef555a",)",
      R"("datacontenttype":"application/json","time":")", time, R"(","data":{"product":{"uuid":")",
      uuid, R"("},"author":{"identifier":"b238e9f7","type":"api"}}})");
}

std::string NewUuid() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  uint64_t a = rng(), b = rng();
  a = (a & 0xffffffffffff0fffULL) | 0x0000000000004000ULL;
  b = (b & 0x3fffffffffffffffULL) | 0x8000000000000000ULL;
  char buf[40];
  std::snprintf(buf, sizeof(buf), "%08x-%04x-%04x-%04x-%012llx", static_cast<unsigned>(a >> 32),
                static_cast<unsigned>((a >> 16) & 0xffff), static_cast<unsigned>(a & 0xffff),
                static_cast<unsigned>(b >> 48),
                static_cast<unsigned long long>(b & 0xffffffffffffULL));
  return buf;
}

GatewayHarness::GatewayHarness(Options options) : options_(std::move(options)) {
  config_.gateway.listen = testing::ListenAt("127.0.0.1:0");
  config_.gateway.threads = 2;
  if (options_.tls) {
    CertFiles cert = MakeSelfSignedCert(dir_.path());
    config_.gateway.tls = TlsConfig{cert.cert_file, cert.key_file, TlsVersion::kTls1_2};
  }
  config_.store.path = dir_.File("store");
  SourceConfig legacy;
  legacy.name = "legacy";
  legacy.kind = SourceKind::kEventsApi;
  legacy.path = "/hooks/legacy";
  legacy.secret = Secret{kLegacySecret, "inline"};
  SourceConfig platform;
  platform.name = "platform";
  platform.kind = SourceKind::kEventPlatform;
  platform.path = "/hooks/platform";
  platform.secret = Secret{kPlatformSecret, "inline"};
  platform.secondary_secret = Secret{kPlatformSecondary, "inline"};
  config_.sources = {legacy, platform};
  if (options_.tweak) options_.tweak(config_);
  Start();
}

void GatewayHarness::Start() {
  auto backend = OpenRocksDbBackend(config_.store.path);
  ASSERT_TRUE(backend.ok()) << backend.status();
  std::unique_ptr<LogBackend> store = std::move(*backend);
  if (options_.wrap_backend) store = options_.wrap_backend(std::move(store));
  const EventLogOptions log_options = EventLogOptionsFrom(config_.store);
  auto log = EventLog::Open(std::move(store), log_options);
  ASSERT_TRUE(log.ok()) << log.status();
  log_ = std::move(*log);
  auto gateway = Gateway::Create(config_, log_.get(), options_.hooks);
  ASSERT_TRUE(gateway.ok()) << gateway.status();
  gateway_ = std::move(*gateway);
  ASSERT_TRUE(gateway_->Start().ok());
}

void GatewayHarness::Restart() {
  gateway_.reset();
  log_.reset();
  Start();
}

GatewayHarness::~GatewayHarness() {
  gateway_.reset();
  log_.reset();
}

std::vector<v1::Event> GatewayHarness::AllEvents() {
  auto events = log_->ReadEvents(1, 1'000'000);
  EXPECT_TRUE(events.ok()) << events.status();
  return events.ok() ? *events : std::vector<v1::Event>{};
}

PimgateProcess::PimgateProcess(const std::string& config_path, const std::string& ready_file,
                               const std::vector<std::pair<std::string, std::string>>& env,
                               const std::string& log_file)
    : ready_file_(ready_file) {
  std::filesystem::remove(ready_file_);
  pid_ = fork();
  if (pid_ == 0) {
    for (const auto& [name, value] : env) setenv(name.c_str(), value.c_str(), 1);
    if (!log_file.empty()) {
      const int fd = open(log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
      if (fd < 0 || dup2(fd, STDERR_FILENO) < 0) _exit(126);
    }
    execl(PIMGATE_BINARY, PIMGATE_BINARY, "--config", config_path.c_str(), "--ready-file",
          ready_file.c_str(), nullptr);
    _exit(127);
  }
}

PimgateProcess::~PimgateProcess() {
  if (pid_ > 0) Kill();
}

uint16_t PimgateProcess::WaitReady() {
  for (int i = 0; i < 3000; ++i) {
    std::ifstream in(ready_file_);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    auto pos = text.find("\"gateway_port\":");
    if (pos != std::string::npos) return static_cast<uint16_t>(std::stoi(text.substr(pos + 15)));
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return 0;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return 0;
}

void PimgateProcess::Kill() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
}

std::string PimgateProcess::Exited() {
  if (pid_ <= 0) return exited_;
  int status = 0;
  if (waitpid(pid_, &status, WNOHANG) != pid_) return "";
  pid_ = -1;
  exited_ = WIFEXITED(status) ? absl::StrCat("exit code ", WEXITSTATUS(status))
                              : absl::StrCat("signal ", WTERMSIG(status));
  return exited_;
}

int PimgateProcess::Terminate() {
  if (pid_ <= 0) return -1;
  kill(pid_, SIGTERM);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace pimgate::testing
