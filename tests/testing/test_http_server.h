// TestHttpServer: a real HTTP(S) server on 127.0.0.1 (port 0) whose answers a test writes as a
// function, for the services pimgate calls or that call back to pimgate's tests (the fake Event
// Platform's management API, webhook destinations with scripted answers).
#ifndef PIMGATE_TESTS_TESTING_TEST_HTTP_SERVER_H_
#define PIMGATE_TESTS_TESTING_TEST_HTTP_SERVER_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace pimgate::testing {

class TestHttpServer {
 public:
  struct Request {
    std::string method;
    std::string target;                                        // path and query as received
    std::vector<std::pair<std::string, std::string>> headers;  // names as received
    std::string body;
    // The first header with this name (case-insensitive), or "".
    std::string Header(std::string_view name) const;
  };
  struct Response {
    int status = 200;
    std::vector<std::pair<std::string, std::string>> headers;
    std::string body;
    // Waited before the answer is written (a slow destination); the connection stays open.
    std::chrono::milliseconds delay{0};
  };
  // Runs on the server's io thread, one request at a time: it must not block (use `delay`).
  using Handler = std::function<Response(const Request&)>;

  struct Options {
    bool tls = true;  // self-signed certificate made for the test (CN=localhost, IP 127.0.0.1)
    std::size_t max_body = 4 * 1024 * 1024;  // larger requests get 413
  };

  // Starts serving at once (own thread); stops on destruction.
  TestHttpServer(Options options, Handler handler);
  explicit TestHttpServer(Handler handler) : TestHttpServer(Options{}, std::move(handler)) {}
  ~TestHttpServer();
  TestHttpServer(const TestHttpServer&) = delete;
  TestHttpServer& operator=(const TestHttpServer&) = delete;

  uint16_t port() const;
  // "https://127.0.0.1:PORT" (http:// without TLS).
  std::string base_url() const;
  // The self-signed certificate (PEM), for a client's CA file; empty without TLS.
  const std::string& cert_file() const;
  // TCP connections accepted so far.
  int connections_accepted() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace pimgate::testing

#endif  // PIMGATE_TESTS_TESTING_TEST_HTTP_SERVER_H_
