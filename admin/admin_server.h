// AdminServer: serves the Admin service, grpc.health.v1.Health and gRPC server reflection on
// `admin.listen`, over TLS when `admin.tls` is set.
#ifndef PIMGATE_ADMIN_ADMIN_SERVER_H_
#define PIMGATE_ADMIN_ADMIN_SERVER_H_

#include <grpcpp/channel.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "admin/admin_service.h"
#include "config/config.h"

namespace pimgate {

// Owns the gRPC server and its threads. Thread-safe: port(), target() and Stop() may be called
// from any thread.
class AdminServer {
 public:
  // Calls still running when Stop() is called get this long to finish, then are cancelled.
  static constexpr absl::Duration kShutdownGrace = absl::Seconds(2);
  // Largest answer a call on InProcessChannel() accepts.
  static constexpr int kInProcessMaxReceiveBytes = 64 << 20;

  // Binds `config.listen` and starts serving. Fails (and serves nothing) when the address cannot
  // be bound, including when another process holds it: SO_REUSEPORT is off, so two pimgates
  // never share an admin port. A unix socket is made readable by the owner only (0600).
  static absl::StatusOr<std::unique_ptr<AdminServer>> Start(const AdminConfig& config,
                                                            AdminDependencies deps,
                                                            AdminLimits limits = {});
  ~AdminServer();  // Stop()

  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;

  // Stops accepting calls, lets running ones finish (up to kShutdownGrace). Idempotent.
  void Stop();

  // The bound TCP port (the one picked when listen asked for port 0); 0 on a unix socket.
  int port() const { return port_; }
  // A gRPC target a client on this machine can dial: "127.0.0.1:7070", "[::1]:7070",
  // "unix:/var/lib/pimgate/admin.sock".
  const std::string& target() const { return target_; }
  bool tls() const { return tls_; }

  // A channel to this server that never leaves the process: the console forwards its HTTP calls
  // through it, and they pass the same token check as calls from the network. Calls on it fail
  // (UNAVAILABLE) once Stop() ran. Call it before Stop().
  std::shared_ptr<grpc::Channel> InProcessChannel();

  class Impl;

 private:
  AdminServer() = default;
  std::unique_ptr<Impl> impl_;
  int port_ = 0;
  std::string target_;
  bool tls_ = false;
};

}  // namespace pimgate

#endif  // PIMGATE_ADMIN_ADMIN_SERVER_H_
