// ConsoleServer: the web console's HTTP endpoint (M12), plain HTTP behind the shared
// HttpListener. Routes:
//  - POST /api/v1/<Method>: the Admin RPC <Method> with the protobuf JSON mapping of its request
//    and response (AdminJsonApi), `Authorization: Bearer <token>` passed on as the admin API's
//    token. Requests need `Content-Type: application/json` (which no cross-site form can send, and
//    which a browser preflights cross-origin: there is no CORS, so other sites cannot call it).
//    Errors are JSON {"code": "...", "message": "..."}; another method on /api gets 405.
//  - GET or HEAD of any other path: a file of the asset table ("/" is "/index.html"), 404
//    otherwise.
// Every answer carries a strict Content-Security-Policy (no inline script or style, no framing),
// X-Content-Type-Options: nosniff and Referrer-Policy: no-referrer. No cookie is ever set.
#ifndef PIMGATE_CONSOLE_CONSOLE_SERVER_H_
#define PIMGATE_CONSOLE_CONSOLE_SERVER_H_

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "absl/status/statusor.h"
#include "common/net_address.h"
#include "console/assets.h"

namespace pimgate {

// The Content-Security-Policy of every answer.
inline constexpr char kConsoleContentSecurityPolicy[] =
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'";

// Every limit of the endpoint.
struct ConsoleServerOptions {
  // console.listen (host:port; port 0 picks a free port).
  ListenAddress listen = ListenAddress::Ipv4({127, 0, 0, 1}, 7080);
  // Request body bytes (an API request is a small JSON object); larger gets 413.
  std::size_t body_limit = 1024 * 1024;
  std::size_t header_limit = 16 * 1024;
  // Time to receive a request once the connection is open or idle, and to write an answer.
  std::chrono::milliseconds read_timeout{30'000};
  std::chrono::milliseconds write_timeout{30'000};
  // Open connections beyond this are closed at accept.
  std::size_t max_connections = 64;
  // Deadline of one admin call (then 504; a Reconcile run goes on).
  std::chrono::milliseconds call_timeout{60'000};
  // Answer only requests whose Host is a loopback name or address (localhost, 127.0.0.1,
  // [::1]): with no admin token, this is what keeps a web page whose name was re-pointed at
  // 127.0.0.1 (DNS rebinding) from calling the API. pimgate sets it when admin.token is unset.
  bool require_loopback_host = false;
};

// Owns one I/O thread (HTTP parsing, JSON conversion of requests, static files); admin calls
// run in the admin server and answer through gRPC's threads. Thread-safe.
class ConsoleServer {
 public:
  struct Stats {
    uint64_t api_calls = 0;        // calls forwarded to the admin API
    uint64_t api_refused = 0;      // API requests answered 4xx before any call (405, 415, ...)
    uint64_t static_requests = 0;  // GET/HEAD of files
    std::size_t connections_open = 0;
    uint64_t connections_refused = 0;  // closed at accept: max_connections were open
  };

  // Binds and starts serving. `admin` is a channel to the admin gRPC server (its in-process
  // channel in pimgate); the assets must outlive the server. Unavailable when the address cannot
  // be bound.
  static absl::StatusOr<std::unique_ptr<ConsoleServer>> Start(ConsoleServerOptions options,
                                                              std::shared_ptr<grpc::Channel> admin,
                                                              std::span<const ConsoleAsset> assets);
  ~ConsoleServer();  // Stop()

  // Stops accepting, cancels admin calls in flight, closes every connection and joins the
  // thread. Idempotent.
  void Stop();
  uint16_t port() const;
  Stats stats() const;

  class Impl;

 private:
  explicit ConsoleServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace pimgate

#endif  // PIMGATE_CONSOLE_CONSOLE_SERVER_H_
