// AdminJsonApi: every RPC of pimgate.v1.Admin as JSON in, JSON out, driven by the service's
// descriptor (no RPC is written here). A call is forwarded to the real admin gRPC server over a
// channel (in pimgate, the server's in-process channel) with the caller's `authorization` as the
// metadata the admin API checks, so authentication, validation and errors are the admin API's own.
//
// The JSON is the protobuf JSON mapping (https://protobuf.dev/programming-guides/proto3/#json):
//  - answers name fields in lowerCamelCase ("nextPageToken") and print every field, defaults
//    included (0, false, "", []), so a client never has to know proto3's defaults; enums print as
//    their names, 64-bit integers as strings, Timestamps as RFC 3339 strings;
//  - requests may name fields either way ("pageToken" or "page_token"); an unknown field is an
//    error (INVALID_ARGUMENT naming it), as a mistyped filter must not silently match everything.
#ifndef PIMGATE_CONSOLE_ADMIN_JSON_API_H_
#define PIMGATE_CONSOLE_ADMIN_JSON_API_H_

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace pimgate {

// What an API call answers: an HTTP status and a JSON body (the response message, or
// {"code": "<gRPC code name>", "message": "..."}).
struct JsonAnswer {
  int http_status = 200;
  std::string body;
};

// The HTTP status a gRPC status code is answered with (docs/console.md has the table):
// INVALID_ARGUMENT and OUT_OF_RANGE 400, UNAUTHENTICATED 401, PERMISSION_DENIED 403, NOT_FOUND 404,
// ALREADY_EXISTS, ABORTED and FAILED_PRECONDITION 409 (the request is well-formed; the state of
// pimgate refuses it), RESOURCE_EXHAUSTED 429, UNIMPLEMENTED 501, UNAVAILABLE 503,
// DEADLINE_EXCEEDED 504, anything else 500.
int HttpStatusFor(grpc::StatusCode code);
// "NOT_FOUND" for grpc::StatusCode::NOT_FOUND.
std::string StatusCodeName(grpc::StatusCode code);
// {"code": code, "message": message} as JSON.
std::string ErrorBody(absl::string_view code, absl::string_view message);

// Thread-safe. Destroy it only after Shutdown() returned.
class AdminJsonApi {
 public:
  // `admin` reaches the admin gRPC server; every call gets `call_timeout` (then 504
  // DEADLINE_EXCEEDED; a Reconcile run goes on, as the admin API documents).
  AdminJsonApi(std::shared_ptr<grpc::Channel> admin, std::chrono::milliseconds call_timeout);
  ~AdminJsonApi();

  // The names of the service's methods ("GetStats", ...), in the order of admin.proto.
  const std::vector<std::string>& methods() const { return methods_; }
  bool HasMethod(absl::string_view method) const;

  // Calls `method` of pimgate.v1.Admin with `json` (an empty body is the empty request, {}),
  // sending `authorization` (when not empty) as the `authorization` metadata. `done` runs exactly
  // once: on this thread when the call cannot start (unknown method, bad JSON), otherwise on a
  // gRPC thread; it must not block. After Shutdown() began, calls answer UNAVAILABLE at once.
  void Call(absl::string_view method, absl::string_view authorization, absl::string_view json,
            std::function<void(JsonAnswer)> done);

  // Cancels the calls in flight (their `done` runs with CANCELLED, answered 500) and waits until
  // every `done` has returned. Idempotent.
  void Shutdown();

  // Calls started since construction.
  uint64_t calls() const;

 private:
  struct InFlight;
  void Finish(InFlight* call, const grpc::Status& status);

  grpc::GenericStub stub_;
  const std::chrono::milliseconds call_timeout_;
  std::vector<std::string> methods_;
  mutable absl::Mutex mu_;
  std::map<InFlight*, std::shared_ptr<InFlight>> in_flight_ ABSL_GUARDED_BY(mu_);
  // Calls taken out of in_flight_ whose InFlight is still being destroyed by Finish: Shutdown
  // waits for these too, so nothing of a call outlives it.
  int finishing_ ABSL_GUARDED_BY(mu_) = 0;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t calls_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace pimgate

#endif  // PIMGATE_CONSOLE_ADMIN_JSON_API_H_
