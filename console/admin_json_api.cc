// The generic JSON <-> protobuf bridge to the admin API: descriptor lookup, the JSON mapping in
// both directions, the forwarded call and the one mapping of gRPC statuses to HTTP.
#include "console/admin_json_api.h"

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/support/byte_buffer.h>

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/json.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/dynamic_message.h"
#include "google/protobuf/message.h"
#include "google/protobuf/util/json_util.h"
#include "pimgate/v1/admin.grpc.pb.h"

namespace pimgate {
namespace {

namespace pb = google::protobuf;

// The Admin service's descriptor. Naming a message of admin.proto links its generated code, which
// registers the file (and the service) in the generated pool.
const pb::ServiceDescriptor& AdminService() {
  static const pb::ServiceDescriptor* const service = [] {
    const pb::FileDescriptor* file = v1::GetStatsRequest::descriptor()->file();
    return file->pool()->FindServiceByName(v1::Admin::service_full_name());
  }();
  return *service;
}

// The first line of a protobuf status's message (the JSON parser adds lines pointing at the
// offending character, which read badly in a one-line JSON error).
template <typename S>
std::string MessageOf(const S& status) {
  const std::string text(status.message().data(), status.message().size());
  return text.substr(0, text.find('\n'));
}

JsonAnswer Error(grpc::StatusCode code, absl::string_view message) {
  return {HttpStatusFor(code), ErrorBody(StatusCodeName(code), message)};
}

std::string Flatten(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  std::string out;
  if (!buffer.Dump(&slices).ok()) return out;
  for (const grpc::Slice& slice : slices) {
    out.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  return out;
}

}  // namespace

int HttpStatusFor(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return 200;
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::OUT_OF_RANGE:
      return 400;
    case grpc::StatusCode::UNAUTHENTICATED:
      return 401;
    case grpc::StatusCode::PERMISSION_DENIED:
      return 403;
    case grpc::StatusCode::NOT_FOUND:
      return 404;
    case grpc::StatusCode::ALREADY_EXISTS:
    case grpc::StatusCode::ABORTED:
    case grpc::StatusCode::FAILED_PRECONDITION:
      return 409;
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return 429;
    case grpc::StatusCode::UNIMPLEMENTED:
      return 501;
    case grpc::StatusCode::UNAVAILABLE:
      return 503;
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return 504;
    default:
      return 500;
  }
}

// The code's canonical name ("INVALID_ARGUMENT"): Abseil's status codes mirror gRPC's, value for
// value, so its table serves both.
std::string StatusCodeName(grpc::StatusCode code) {
  std::string name = absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
  return name.empty() ? "UNKNOWN" : name;
}

std::string ErrorBody(absl::string_view code, absl::string_view message) {
  Json body;
  body["code"] = std::string(code);
  body["message"] = std::string(message);
  return JsonDump(body);
}

// One call between Call() and Finish(): what the gRPC call writes into must stay put until then.
struct AdminJsonApi::InFlight {
  grpc::ClientContext context;
  grpc::ByteBuffer request;
  grpc::ByteBuffer response;
  const pb::MethodDescriptor* method = nullptr;
  std::function<void(JsonAnswer)> done;
};

AdminJsonApi::AdminJsonApi(std::shared_ptr<grpc::Channel> admin,
                           std::chrono::milliseconds call_timeout)
    : stub_(std::move(admin)), call_timeout_(call_timeout) {
  const pb::ServiceDescriptor& service = AdminService();
  for (int i = 0; i < service.method_count(); ++i) {
    const pb::MethodDescriptor* method = service.method(i);
    // Streaming calls have no single JSON answer; the Admin service has none today.
    if (method->client_streaming() || method->server_streaming()) continue;
    methods_.push_back(method->name());
  }
}

AdminJsonApi::~AdminJsonApi() { Shutdown(); }

bool AdminJsonApi::HasMethod(absl::string_view method) const {
  for (const std::string& name : methods_) {
    if (name == method) return true;
  }
  return false;
}

uint64_t AdminJsonApi::calls() const {
  absl::MutexLock lock(&mu_);
  return calls_;
}

void AdminJsonApi::Call(absl::string_view method_name, absl::string_view authorization,
                        absl::string_view json, std::function<void(JsonAnswer)> done) {
  if (!HasMethod(method_name)) {
    return done(Error(grpc::StatusCode::NOT_FOUND,
                      absl::StrCat("no method \"", method_name, "\" in pimgate.v1.Admin")));
  }
  const pb::MethodDescriptor* method = AdminService().FindMethodByName(std::string(method_name));
  const pb::Message* prototype =
      pb::MessageFactory::generated_factory()->GetPrototype(method->input_type());
  std::unique_ptr<pb::Message> request(prototype->New());
  if (!json.empty()) {
    pb::util::JsonParseOptions options;
    options.ignore_unknown_fields = false;  // a mistyped field is an error, not a no-op
    const auto parsed = pb::util::JsonStringToMessage(pb::StringPiece(json.data(), json.size()),
                                                      request.get(), options);
    if (!parsed.ok()) {
      return done(Error(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("the body is not a ", method->input_type()->full_name(),
                                     " in JSON: ", MessageOf(parsed))));
    }
  }
  // A header value gRPC would refuse as metadata (not printable ASCII) cannot be a token.
  for (const char c : authorization) {
    if (c < 0x20 || c > 0x7e) {
      return done(Error(grpc::StatusCode::UNAUTHENTICATED,
                        "authorization must be \"Bearer <token>\" in printable ASCII"));
    }
  }
  auto call = std::make_shared<InFlight>();
  call->method = method;
  call->done = std::move(done);
  std::string serialized;
  request->SerializeToString(&serialized);
  grpc::Slice slice(serialized);
  call->request = grpc::ByteBuffer(&slice, 1);
  call->context.set_deadline(std::chrono::system_clock::now() + call_timeout_);
  if (!authorization.empty()) {
    call->context.AddMetadata("authorization", std::string(authorization));
  }
  bool stopping = false;
  {
    absl::MutexLock lock(&mu_);
    stopping = shut_down_;
    if (!stopping) {
      in_flight_[call.get()] = call;
      ++calls_;
    }
  }
  if (stopping) return call->done(Error(grpc::StatusCode::UNAVAILABLE, "pimgate is stopping"));
  InFlight* raw = call.get();
  stub_.UnaryCall(&raw->context,
                  absl::StrCat("/", method->service()->full_name(), "/", method->name()),
                  grpc::StubOptions(), &raw->request, &raw->response,
                  [this, raw](grpc::Status status) { Finish(raw, status); });
}

void AdminJsonApi::Finish(InFlight* call, const grpc::Status& status) {
  JsonAnswer answer;
  if (!status.ok()) {
    answer = Error(status.error_code(), status.error_message());
  } else {
    const pb::Message* prototype =
        pb::MessageFactory::generated_factory()->GetPrototype(call->method->output_type());
    std::unique_ptr<pb::Message> response(prototype->New());
    pb::util::JsonPrintOptions options;
    options.always_print_primitive_fields = true;
    options.preserve_proto_field_names = false;
    if (!response->ParseFromString(Flatten(call->response))) {
      answer = Error(grpc::StatusCode::INTERNAL, "the admin API's answer could not be parsed");
    } else if (const auto printed = pb::util::MessageToJsonString(*response, &answer.body, options);
               !printed.ok()) {
      answer = Error(grpc::StatusCode::INTERNAL,
                     absl::StrCat("the admin API's answer has no JSON form: ", MessageOf(printed)));
    }
  }
  // The callback and what it holds (the HTTP session) are released here, on this gRPC thread,
  // while the call still counts as in flight: Shutdown (and so the console's io_context) cannot
  // end before they are gone.
  {
    std::function<void(JsonAnswer)> done = std::move(call->done);
    done(std::move(answer));
  }
  std::shared_ptr<InFlight> last;  // destroyed without the lock: Shutdown may hold a copy too
  {
    absl::MutexLock lock(&mu_);
    auto it = in_flight_.find(call);
    last = std::move(it->second);
    in_flight_.erase(it);
    ++finishing_;
  }
  last.reset();
  absl::MutexLock lock(&mu_);
  --finishing_;
}

void AdminJsonApi::Shutdown() {
  std::vector<std::shared_ptr<InFlight>> running;
  {
    absl::MutexLock lock(&mu_);
    shut_down_ = true;
    for (const auto& [raw, call] : in_flight_) running.push_back(call);
  }
  // Without the lock: a call's completion (which takes it) may run on this thread.
  for (const std::shared_ptr<InFlight>& call : running) call->context.TryCancel();
  running.clear();
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(
      +[](AdminJsonApi* api) { return api->in_flight_.empty() && api->finishing_ == 0; }, this));
}

}  // namespace pimgate
