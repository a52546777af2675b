// The admin API as pimgatectl reaches it: where (--admin), with which token and TLS settings,
// one deadline per call, and how a failed call is reported.
#ifndef PIMGATE_CTL_CLIENT_H_
#define PIMGATE_CTL_CLIENT_H_

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "pimgate/v1/admin.grpc.pb.h"

namespace pimgate::ctl {

// --admin when neither the flag nor $PIMGATE_ADMIN is given.
inline constexpr char kDefaultAdmin[] = "127.0.0.1:7070";
// --timeout when not given: the deadline of each call.
inline constexpr absl::Duration kDefaultTimeout = absl::Seconds(30);
// The most items one list call asks for; a list command pages until its --limit.
inline constexpr int32_t kMaxPageSize = 1000;
// How long the first call waits for the channel's first connection (see AwaitFirstConnection):
// past gRPC's first reconnect backoff (1 s), so one failed attempt is tried again.
inline constexpr absl::Duration kFirstConnectWait = absl::Milliseconds(2500);

// How to reach the admin API: the global flags, with their environment defaults applied.
struct AdminConnection {
  std::string address = kDefaultAdmin;  // host:port or unix:/path
  std::string token;                    // empty: no authorization header
  bool tls = false;
  std::string tls_ca_pem;       // with tls: the CAs to trust; empty: the system's
  std::string tls_server_name;  // empty: the host of `address`
  absl::Duration timeout = kDefaultTimeout;
  bool timeout_set = false;  // --timeout given: it also bounds the long calls (restart)
};

// A channel to the admin API. Calls are blocking, one at a time; not thread-safe.
class AdminClient {
 public:
  explicit AdminClient(const AdminConnection& connection);

  // Calls `method` with the token and a deadline: --timeout, or `long_timeout` for a call that
  // may take long when --timeout was not given.
  template <typename Request, typename Response>
  grpc::Status Call(grpc::Status (pimgate::v1::Admin::Stub::*method)(grpc::ClientContext*,
                                                                     const Request&, Response*),
                    const Request& request, Response& response,
                    std::optional<absl::Duration> long_timeout = std::nullopt) {
    AwaitFirstConnection();
    grpc::ClientContext context;
    Prepare(context, long_timeout);
    return (stub_.get()->*method)(&context, request, &response);
  }

  const std::string& address() const { return connection_.address; }

 private:
  void Prepare(grpc::ClientContext& context, std::optional<absl::Duration> long_timeout) const;
  // Before the first call: gives the channel's first connection up to kFirstConnectWait (or
  // --timeout when shorter) to be made, so that a first connection attempt that fails once (a
  // server still accepting, a listen backlog full) is retried by gRPC's backoff before the
  // call, which stays fail-fast: an unreachable pimgate is still reported within that wait,
  // not after the call's whole deadline. No request is sent before the transport is up, so
  // nothing can run twice.
  void AwaitFirstConnection();

  AdminConnection connection_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<pimgate::v1::Admin::Stub> stub_;
  bool first_call_made_ = false;
};

// "NOT_FOUND", "UNAVAILABLE", ...: the names grpcurl and the docs use.
const char* CodeName(grpc::StatusCode code);

// Reports a failed call on stderr ("pimgatectl: COMMAND: CODE: message", with a hint for a
// missing token or an unreachable pimgate) and returns its exit code.
int ReportFailure(const AdminClient& client, absl::string_view command, const grpc::Status& status);

}  // namespace pimgate::ctl

#endif  // PIMGATE_CTL_CLIENT_H_
