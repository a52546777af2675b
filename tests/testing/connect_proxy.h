// ConnectProxy: a forward proxy on 127.0.0.1 (port 0) that serves HTTP CONNECT tunnels, as an
// enterprise proxy does for HTTPS. It stands in for the proxy between pimgate and a PIM in tests
// of HTTPS_PROXY / `rest.proxy`; other methods are answered 405.
#ifndef PIMGATE_TESTS_TESTING_CONNECT_PROXY_H_
#define PIMGATE_TESTS_TESTING_CONNECT_PROXY_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace pimgate::testing {

class ConnectProxy {
 public:
  struct Options {
    // When set, a tunnel needs `Proxy-Authorization: Basic base64(user:password)` (else 407).
    std::string user;
    std::string password;
  };

  // Starts serving at once (own threads); stops on destruction, closing every tunnel.
  ConnectProxy();
  explicit ConnectProxy(Options options);
  ~ConnectProxy();
  ConnectProxy(const ConnectProxy&) = delete;
  ConnectProxy& operator=(const ConnectProxy&) = delete;

  uint16_t port() const;
  // "http://127.0.0.1:PORT" (with user:password@ when Options set them).
  std::string url() const;

  // The authority ("host:port") of every CONNECT request, in order, and how each was answered.
  struct Tunnel {
    std::string authority;
    int status = 0;
  };
  std::vector<Tunnel> tunnels() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace pimgate::testing

#endif  // PIMGATE_TESTS_TESTING_CONNECT_PROXY_H_
